/* The options of `subsae train`: one table of flags, parsed by one loop.
 * A flag that sets a trainer option takes its type, range, default and
 * whether a resumed run may change it from the library's option metadata
 * (subsae_option_*), so that the help, the parser and the library agree;
 * the program's own options (files, run length, output) carry theirs in
 * the table. */
#ifndef SUBSAE_TRAIN_OPTIONS_H
#define SUBSAE_TRAIN_OPTIONS_H

#include "cli.h"

enum { TRAIN_OPTION_SLOTS = 64 }; /* > the largest SUBSAE_TRAIN_* */

struct train_options {
    /* trainer options given on the command line, by SUBSAE_TRAIN_* */
    bool given[TRAIN_OPTION_SLOTS];
    int64_t int_value[TRAIN_OPTION_SLOTS];
    double double_value[TRAIN_OPTION_SLOTS];

    /* the program's own */
    char **inputs, **targets;
    int n_inputs, n_targets;
    const char *tensor, *eval_file, *eval_target, *out, *resume, *log;
    const char *hook_name, *hook_name_out, *model_name;
    const char *matryoshka; /* --matryoshka W1,W2,... (NULL: a plain model) */
    double epochs, eval_fraction;
    double checkpoint_minutes; /* given: have_checkpoint_minutes; else the default */
    int64_t tokens, checkpoint_every, threads, log_every;
    bool have_epochs, have_tokens, have_eval_fraction, have_checkpoint_minutes;
    bool json, quiet, overwrite, allow_new_data, skip_nonfinite;
};

/* Minutes between the checkpoints a run saves against being killed without
 * warning (--checkpoint-minutes' default). */
#define TRAIN_CHECKPOINT_MINUTES 10.0

/* Parse argv (argv[0] is the command's name) into *o, checking every
 * value and the combinations that make sense on their own; 0, or the exit
 * code with a message printed. o->inputs and o->targets are allocated
 * (train_options_free). */
int train_options_parse(int argc, char **argv, struct train_options *o);
void train_options_free(struct train_options *o);

/* Set the given trainer options on t (a resumed run: those it may
 * change). 0, or 1 with a message naming the flag. */
int train_options_apply(const struct train_options *o, subsae_trainer *t);

/* The --matryoshka widths, if given, set on a new run's trainer
 * (subsae_trainer_set_matryoshka). 0, or 1 with a message. */
int train_options_apply_matryoshka(const struct train_options *o, subsae_trainer *t);

/* The command line of a run to resume: the original arguments without
 * the options a resume does not take (the model's structural options,
 * --resume, --out, --overwrite), then `--resume DIR`; shell-quoted where
 * needed, into out. */
void train_options_resume_command(int argc, char **argv, const char *dir, char *out,
                                  size_t size);

/* The help of `subsae train`. */
void train_options_help(FILE *out);

#endif
