/* Progress display for long commands: a bar with rate and ETA redrawn in
 * place when stderr is a terminal, a plain line every few seconds when it
 * is not (logs, CI), nothing with --quiet. */
#ifndef SUBSAE_CLI_PROGRESS_H
#define SUBSAE_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct cli_progress {
    const char *label; /* e.g. "train" */
    const char *unit;  /* e.g. "tokens" */
    int64_t total;     /* <= 0 when unknown */
    int64_t first;     /* done when started (e.g. a resumed run): the rate and
                        * the ETA count from here; 0 unless set after start */
    bool quiet, terminal, drawn;
    double started, last_shown;
};

void cli_progress_start(struct cli_progress *p, const char *label, const char *unit,
                        int64_t total, bool quiet);
/* `detail` (may be NULL) is appended, e.g. "loss 0.31, L0 8.0". */
void cli_progress_update(struct cli_progress *p, int64_t done, const char *detail);
/* Final state, then a newline on a terminal. */
void cli_progress_finish(struct cli_progress *p, int64_t done, const char *detail);
/* End a bar left drawn in place (a newline on a terminal) so that other
 * text (a log line, an error) starts on a line of its own; a later update
 * draws the bar again below it. Nothing otherwise. */
void cli_progress_stop(struct cli_progress *p);

#endif
