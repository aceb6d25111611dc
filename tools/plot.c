/* gnuplot plots (see plot.h). */
#include "plot.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static bool find_in_path(const char *program)
{
    const char *path = getenv("PATH");
    if (!path)
        return false;
    char candidate[4096];
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len > 0 && len + strlen(program) + 2 < sizeof candidate) {
            snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, path, program);
            if (access(candidate, X_OK) == 0)
                return true;
        }
        path += len;
        if (*path == ':')
            path++;
    }
    return false;
}

int plot_check(const char *flag)
{
    if (find_in_path("gnuplot"))
        return 0;
    return cli_fail("%s needs gnuplot, which is not in PATH (Debian: apt-get install "
                    "gnuplot-nox)",
                    flag);
}

void plot_string(FILE *g, const char *s)
{
    fputc('\'', g);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', g);
        fputc(*s, g);
    }
    fputc('\'', g);
}

FILE *plot_start(const char *flag, const char *png, int width, int height)
{
    if (plot_check(flag))
        return NULL;
    FILE *g = popen("gnuplot", "w");
    if (!g) {
        cli_fail("%s: cannot start gnuplot", flag);
        return NULL;
    }
    fprintf(g, "set terminal pngcairo size %d,%d noenhanced\nset output ", width, height);
    plot_string(g, png);
    fputc('\n', g);
    return g;
}

int plot_finish(FILE *g, const char *flag, const char *png)
{
    int status = pclose(g);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return cli_fail("%s %s: gnuplot failed (exit status %d)", flag, png,
                        status == -1 || !WIFEXITED(status) ? -1 : WEXITSTATUS(status));
    return 0;
}
