/* LD_PRELOAD shim for test_shiftboard.py's clock-step scenario: every
 * CLOCK_REALTIME reading the program makes is CLOCKSHIFT_S seconds off,
 * while the kernel measures absolute CLOCK_REALTIME timeouts (condition
 * variables, sem_timedwait) on the true wall clock. A wait timed on the
 * wall clock then behaves as if the clock was stepped by -CLOCKSHIFT_S
 * right after it was read (an NTP step, `date -s`); one timed on
 * CLOCK_MONOTONIC is untouched. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "clock_gettime"); /* POSIX's way round ISO C */
    int rc = real(id, ts);
    if (rc == 0 && id == CLOCK_REALTIME) {
        const char *s = getenv("CLOCKSHIFT_S");
        if (s)
            ts->tv_sec += strtol(s, NULL, 10);
    }
    return rc;
}
