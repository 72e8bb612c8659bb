/* tfb-server: the TechEmpower Framework Benchmarks test types (/json,
 * /plaintext, /db, /queries, /fortunes, /updates) on dbscope, in two
 * modes: --mode loop (dbs_loop in h2o's evloop, one a core) and --mode
 * threads (dbs_transact on libmicrohttpd's thread pool). docs/tfb.md. */
#include "tfb.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tfb-server [--mode loop|threads] [--listen HOST:PORT] [--threads N]\n"
            "                  [--pipeline N] [--queue-max N] [--setup] [--test-routes]\n"
            "  DATABASE_URL (and DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_*_TIMEOUT_MS...) name\n"
            "  the PostgreSQL database and size the pool.\n"
            "  --mode loop      dbscope's event-loop API in h2o, one loop a thread (default)\n"
            "  --mode threads   the blocking API on libmicrohttpd's thread pool\n"
            "  --listen         address to serve (default 0.0.0.0:8080; port 0: any)\n"
            "  --threads N      loop: loops (default: processors); threads: HTTP threads\n"
            "                   (default: DB_POOL_SIZE)\n"
            "  --pipeline N     loop: units in flight on one connection (default 16;\n"
            "                   1: one unit at a time, its statements still in one\n"
            "                   flight; 0: no pipelining at all, every statement a\n"
            "                   unit of its own sent after the last one's answer)\n"
            "  --queue-max N    loop: units a loop keeps waiting for a connection; past it\n"
            "                   requests get 503 (default 4096)\n"
            "  --setup          create and fill the tables world and fortune where absent\n"
            "  --test-routes    also serve /sleep?s=N (SELECT pg_sleep(N)), for tests\n");
}

static int int_arg(const char *name, const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "tfb-server: %s wants a number from %d to %d, not '%s'\n", name, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv)
{
    tfb_options opt = {.host = "0.0.0.0", .port = 8080, .threads = 0, .pipeline = 16};
    const char *mode = "loop";
    int setup = 0;
    static char host[256];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--mode") && v) {
            mode = v;
            i++;
        } else if (!strcmp(a, "--listen") && v) {
            const char *colon = strrchr(v, ':');
            if (!colon || (size_t)(colon - v) >= sizeof host ||
                int_arg("--listen's port", colon + 1, 0, 65535, &opt.port))
                return (fprintf(stderr, "tfb-server: --listen wants HOST:PORT\n"), 2);
            memcpy(host, v, (size_t)(colon - v));
            host[colon - v] = '\0';
            /* [::1]:8080 */
            if (host[0] == '[' && host[strlen(host) - 1] == ']') {
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = '\0';
            }
            opt.host = host;
            i++;
        } else if (!strcmp(a, "--threads") && v) {
            if (int_arg("--threads", v, 1, 1024, &opt.threads))
                return 2;
            i++;
        } else if (!strcmp(a, "--pipeline") && v) {
            if (int_arg("--pipeline", v, 0, 1024, &opt.pipeline))
                return 2;
            i++;
        } else if (!strcmp(a, "--queue-max") && v) {
            if (int_arg("--queue-max", v, 1, 1 << 24, &opt.queue_max))
                return 2;
            i++;
        } else if (!strcmp(a, "--setup")) {
            setup = 1;
        } else if (!strcmp(a, "--test-routes")) {
            opt.test_routes = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "tfb-server: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    int loop = !strcmp(mode, "loop");
    if (!loop && strcmp(mode, "threads")) {
        fprintf(stderr, "tfb-server: --mode is loop or threads, not '%s'\n", mode);
        return 2;
    }
#ifndef TFB_WITH_LOOP
    if (loop) {
        fprintf(stderr, "tfb-server: this build has no loop mode (the library has no "
                        "dbs_loop); use --mode threads\n");
        return 2;
    }
#endif

    /* Signals go to the thread in tfb_wait_signal only. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    dbs_config cfg;
    dbs_error err = {0};
    dbs_config_init(&cfg);
    if (dbs_config_from_env(&cfg, &err) < 0) {
        fprintf(stderr, "tfb-server: %s\n", err.message);
        return 2;
    }
    if (!cfg.url || !*cfg.url) {
        fprintf(stderr, "tfb-server: set DATABASE_URL to the PostgreSQL database "
                        "(postgresql://user:password@host/db)\n");
        return 2;
    }
    dbs_pool *pool = dbs_pool_open(&cfg, &err);
    if (!pool) {
        fprintf(stderr, "tfb-server: %s\n", err.message);
        return 1;
    }
    if (dbs_pool_backend(pool) != DBS_BACKEND_POSTGRESQL) {
        fprintf(stderr, "tfb-server: DATABASE_URL must name a PostgreSQL database (the "
                        "test types' SQL is PostgreSQL's)\n");
        dbs_pool_close(pool);
        return 2;
    }
    if (setup && tfb_setup(pool, &err) < 0) {
        fprintf(stderr, "tfb-server: --setup: %s\n", err.message);
        dbs_pool_close(pool);
        return 1;
    }
    if (opt.threads == 0) {
        if (loop) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            opt.threads = n > 0 ? (int)n : 1;
        } else {
            /* One thread a kept connection: overflow connections are
             * closed when given back, so more threads would make
             * connections come and go under steady load. */
            opt.threads = cfg.pool_size > 0 ? cfg.pool_size : 1;
        }
    }
    opt.pool_size = cfg.pool_size;
    opt.max_overflow = cfg.max_overflow;
    int rc = loop ?
#ifdef TFB_WITH_LOOP
                  tfb_run_loop(pool, &opt)
#else
                  2
#endif
                  : tfb_run_threads(pool, &opt);
    dbs_pool_close(pool);
    return rc;
}
