/* The subcommands of subsae-llama: argv[0] is the subcommand's name; each
 * returns the exit code (0, 1 on failure, 2 on a usage error). */
#ifndef LLAMA_COMMANDS_H
#define LLAMA_COMMANDS_H

int llama_cmd_record(int argc, char **argv);
int llama_cmd_rank(int argc, char **argv);
int llama_cmd_splice(int argc, char **argv);

#endif
