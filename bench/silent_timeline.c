/* What a service sees when the network to PostgreSQL goes silent: worker
 * threads run small units of work through dbs_transact while a TCP proxy
 * (tests/faultproxy.c) between them and the server passes bytes, then keeps
 * every socket open and drops everything for SILENT_S seconds, then passes
 * again. Prints, per pool configuration, when the first error came after the
 * silence began and of which kind, what the workers got during it, and how
 * long after the network healed the first and the last worker were served
 * again. Nothing is asserted: this is the measurement docs/pool.md quotes.
 *
 *   bench/silent_timeline.sh   (starts a throwaway server, then runs this)
 *   bench_silent_timeline PG_PORT PASSWORD [SILENT_S]
 */
#define _POSIX_C_SOURCE 200809L
#include "faultproxy.h"

#include <dbscope.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { WORKERS = 8, MAX_CODES = 16 };

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static atomic_int stop;
static double silent_at, healed_at;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static double first_error = -1;
static int first_code;
static int code_count[MAX_CODES];
static double served_after_heal[WORKERS];
static long units_ok;

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    dbs_rows *r = dbs_query(s, "SELECT 1", NULL, 0, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    dbs_rows_close(r);
    return n == 1 ? 0 : n < 0 ? n : -5;
}

struct worker {
    dbs_pool *pool;
    int idx;
};

static void *worker_main(void *v)
{
    struct worker *w = v;
    while (!atomic_load(&stop)) {
        dbs_error err;
        int rc = dbs_transact(w->pool, NULL, unit, NULL, &err);
        double t = now_s();
        pthread_mutex_lock(&mu);
        if (rc == 0) {
            units_ok++;
            if (healed_at > 0 && t > healed_at && served_after_heal[w->idx] == 0)
                served_after_heal[w->idx] = t - healed_at;
        } else if (silent_at > 0) {
            if (first_error < 0) {
                first_error = t - silent_at;
                first_code = rc;
            }
            if (-rc > 0 && -rc < MAX_CODES)
                code_count[-rc]++;
        }
        pthread_mutex_unlock(&mu);
        if (rc != 0) {
            struct timespec pause = {0, 20 * 1000000L}; /* a client's retry pace */
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

static void sleep_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

static void run(const char *label, faultproxy *fp, const char *password, int acquire_ms,
                int connect_ms, int statement_ms, double silent_s)
{
    char url[512];
    snprintf(url, sizeof url, "postgresql://dbscope:%s@127.0.0.1:%d/dbscope?sslmode=disable",
             password, fp_port(fp));
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.log_events = 0;
    cfg.acquire_timeout_ms = acquire_ms;
    cfg.connect_timeout_ms = connect_ms;
    cfg.statement_timeout_ms = statement_ms;
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_error err;
    dbs_pool *pool = dbs_pool_open(&cfg, &err);
    if (!pool) {
        fprintf(stderr, "%s\n", err.message);
        exit(1);
    }
    memset(code_count, 0, sizeof code_count);
    memset(served_after_heal, 0, sizeof served_after_heal);
    first_error = -1;
    silent_at = healed_at = 0;
    units_ok = 0;
    atomic_store(&stop, 0);
    struct worker w[WORKERS];
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (struct worker){pool, i};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    sleep_s(1.0);
    pthread_mutex_lock(&mu);
    silent_at = now_s();
    pthread_mutex_unlock(&mu);
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    sleep_s(silent_s);
    pthread_mutex_lock(&mu);
    healed_at = now_s();
    pthread_mutex_unlock(&mu);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    /* wait until every worker was served again, or give up after a while */
    double limit = statement_ms / 1000.0 + connect_ms / 1000.0 + 30;
    for (;;) {
        sleep_s(0.05);
        pthread_mutex_lock(&mu);
        int served = 0;
        for (int i = 0; i < WORKERS; i++)
            served += served_after_heal[i] > 0;
        pthread_mutex_unlock(&mu);
        if (served == WORKERS || now_s() - healed_at > limit)
            break;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    double first = 0, last = 0;
    int served = 0;
    for (int i = 0; i < WORKERS; i++) {
        if (served_after_heal[i] <= 0)
            continue;
        if (!served++ || served_after_heal[i] < first)
            first = served_after_heal[i];
        if (served_after_heal[i] > last)
            last = served_after_heal[i];
    }
    printf("%s (acquire %d ms, connect %d ms, statement %d ms), %d workers, %.0f s silent:\n",
           label, acquire_ms, connect_ms, statement_ms, WORKERS, silent_s);
    if (first_error >= 0)
        printf("  first error %.2f s after the silence began: %s\n", first_error,
               dbs_strerror(first_code));
    else
        printf("  no error during the silence\n");
    printf("  errors during and after the silence:");
    for (int c = 1; c < MAX_CODES; c++)
        if (code_count[c])
            printf(" %s=%d", dbs_strerror(-c), code_count[c]);
    printf("\n  served again after the network healed: first worker %.2f s, last %.2f s "
           "(%d of %d)\n",
           first, last, served, WORKERS);
    dbs_stats st;
    dbs_pool_stats(pool, &st);
    printf("  pool: %llu connects failed, %llu invalidated, %llu refused while the circuit "
           "was open\n",
           (unsigned long long)st.connect_failures, (unsigned long long)st.invalidated,
           (unsigned long long)st.unavailable);
    dbs_pool_close(pool);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return fprintf(stderr, "usage: bench_silent_timeline PG_PORT PASSWORD [SILENT_S]\n"), 2;
    double silent_s = argc > 3 ? atof(argv[3]) : 10;
    faultproxy *fp = fp_start(atoi(argv[1]));
    run("web service bounds", fp, argv[2], 2000, 3000, 5000, silent_s);
    run("dbscope defaults", fp, argv[2], 30000, 10000, 30000, silent_s);
    fp_stop(fp);
    return 0;
}
