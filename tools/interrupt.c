/* The first SIGINT / SIGTERM is recorded for the command to act on; the
 * second exits at once (see interrupt.h). */
#include "interrupt.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t received;

static void on_signal(int signal)
{
    if (received)
        _exit(128 + signal); /* the user insists: no cleanup, nothing half written */
    received = signal;
}

void interrupt_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* reads and writes in progress go on */
    const int signals[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        /* A signal the process was started ignoring (nohup, a shell's
         * background job) stays ignored. */
        struct sigaction old;
        if (sigaction(signals[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(signals[i], &sa, NULL);
    }
}

int interrupt_signal(void)
{
    return received;
}

const char *interrupt_name(int signal)
{
    return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "a signal";
}

int interrupt_exit_code(int signal)
{
    return 128 + signal;
}
