/* SIGINT and SIGTERM during a long command: the first asks the command to
 * stop cleanly (it finishes the library call's current step, saves and
 * says how to go on), a second one ends the process at once (every file
 * the library writes is replaced atomically, so nothing is left half
 * written; a temporary file may stay behind and is cleaned by the next
 * save). */
#ifndef SUBSAE_CLI_INTERRUPT_H
#define SUBSAE_CLI_INTERRUPT_H

#include <stdbool.h>

/* Install the handlers (idempotent). */
void interrupt_install(void);

/* The signal received (SIGINT, SIGTERM), or 0. Async-signal-safe. */
int interrupt_signal(void);

/* "SIGINT" / "SIGTERM". */
const char *interrupt_name(int signal);

/* The exit code of a process ended by `signal` (130, 143). */
int interrupt_exit_code(int signal);

#endif
