/* PNG plots through gnuplot (a Debian package the program runs, not a
 * library it links): `subsae rank --plot` and `subsae eval
 * --density-plot`. */
#ifndef SUBSAE_CLI_PLOT_H
#define SUBSAE_CLI_PLOT_H

#include "cli.h"

/* 0 when gnuplot is in PATH, else 1 with a message naming `flag` (call it
 * before the work, so that a missing program costs nothing). */
int plot_check(const char *flag);

/* A gnuplot process drawing into `png` (width x height pixels), or NULL
 * with a message. */
FILE *plot_start(const char *flag, const char *png, int width, int height);

/* Write `s` as a gnuplot string (single quotes, a quote doubled). */
void plot_string(FILE *g, const char *s);

/* Wait for gnuplot: 0, or 1 with a message when it failed. */
int plot_finish(FILE *g, const char *flag, const char *png);

#endif
