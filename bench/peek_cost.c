/* What the look at an idle connection's socket costs a check-out: sessions
 * opened and closed on one thread (nothing sent, so no round trip), with
 * pre_ping on (every check-out looks at the socket, docs/pool.md) and off.
 *
 *   bench_peek_cost URL [N]
 *
 * Prints ns per open+close for each and the difference. */
#define _POSIX_C_SOURCE 200809L
#include "dbscope.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double run(const char *url, int pre_ping, int n)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.pre_ping = pre_ping;
    cfg.validation_window_ms = 3600000; /* the look only, never a ping */
    cfg.metrics = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p) {
        fprintf(stderr, "dbs_pool_open: %s\n", err.message);
        exit(1);
    }
    double best = 1e18;
    for (int round = 0; round < 5; round++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            dbs_session *s = dbs_session_open(p, NULL, &err);
            if (!s) {
                fprintf(stderr, "open: %s\n", err.message);
                exit(1);
            }
            dbs_session_close(s);
        }
        double per = (now_ns() - t0) / n;
        if (per < best)
            best = per;
    }
    dbs_pool_close(p);
    return best;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 200000;
    double off = run(argv[1], 0, n), on = run(argv[1], 1, n);
    printf("open+close, best of 5 x %d: pre_ping=0 %.0f ns, pre_ping=1 %.0f ns, "
           "the look at the socket %.0f ns\n", n, off, on, on - off);
    return 0;
}
