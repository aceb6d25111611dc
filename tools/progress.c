/* Progress bar / progress lines on stderr. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

enum { BAR_WIDTH = 24 };
static const double TERMINAL_INTERVAL = 0.1, LOG_INTERVAL = 5.0;

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void format_duration(double seconds, char *out, size_t size)
{
    long s = seconds > 0 && seconds < 1e7 ? (long)(seconds + 0.5) : 0;
    if (s >= 3600)
        snprintf(out, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(out, size, "%ld:%02ld", s / 60, s % 60);
}

static void format_rate(double rate, char *out, size_t size)
{
    if (rate >= 1e6)
        snprintf(out, size, "%.2fM", rate / 1e6);
    else if (rate >= 1e3)
        snprintf(out, size, "%.1fk", rate / 1e3);
    else
        snprintf(out, size, "%.0f", rate);
}

void cli_progress_start(struct cli_progress *p, const char *label, const char *unit,
                        int64_t total, bool quiet)
{
    *p = (struct cli_progress){.label = label, .unit = unit, .total = total, .quiet = quiet,
                               .terminal = isatty(STDERR_FILENO) == 1};
    p->started = p->last_shown = monotonic_seconds();
}

static void show(struct cli_progress *p, int64_t done, const char *detail, double now)
{
    double elapsed = now - p->started;
    double rate = elapsed > 1e-9 && done > p->first ? (double)(done - p->first) / elapsed : 0.0;
    double fraction = p->total > 0 ? (double)done / (double)p->total : 0.0;
    if (fraction > 1.0)
        fraction = 1.0;
    char rate_text[32], eta[32], spent[32];
    format_rate(rate, rate_text, sizeof rate_text);
    format_duration(rate > 0 && p->total > 0 ? (double)(p->total - done) / rate : 0.0, eta,
                    sizeof eta);
    format_duration(elapsed, spent, sizeof spent);
    if (p->terminal) {
        char bar[BAR_WIDTH + 1];
        int filled = (int)(fraction * BAR_WIDTH + 0.5);
        for (int i = 0; i < BAR_WIDTH; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[BAR_WIDTH] = '\0';
        fprintf(stderr, "\r\033[K%s [%s] %3.0f%%  %s %s/s  %s  ETA %s%s%s", p->label, bar,
                100.0 * fraction, rate_text, p->unit, spent, eta, detail ? "  " : "",
                detail ? detail : "");
        p->drawn = true;
    } else {
        fprintf(stderr, "%s: %lld/%lld %s (%.0f%%), %s %s/s, elapsed %s, ETA %s%s%s\n", p->label,
                (long long)done, (long long)p->total, p->unit, 100.0 * fraction, rate_text,
                p->unit, spent, eta, detail ? ", " : "", detail ? detail : "");
    }
    fflush(stderr);
    p->last_shown = now;
}

void cli_progress_update(struct cli_progress *p, int64_t done, const char *detail)
{
    if (p->quiet)
        return;
    double now = monotonic_seconds();
    if (now - p->last_shown >= (p->terminal ? TERMINAL_INTERVAL : LOG_INTERVAL))
        show(p, done, detail, now);
}

void cli_progress_finish(struct cli_progress *p, int64_t done, const char *detail)
{
    if (p->quiet)
        return;
    show(p, done, detail, monotonic_seconds());
    cli_progress_stop(p);
}

void cli_progress_stop(struct cli_progress *p)
{
    if (p->terminal && p->drawn) {
        fputc('\n', stderr);
        fflush(stderr);
    }
    p->drawn = false;
}
