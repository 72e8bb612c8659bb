/* What SQLite durability costs: the same write and read units of work through
 * dbscope on a file with the default (a commit is on disk when it is
 * acknowledged: synchronous=NORMAL plus the pool's shared WAL sync) and with
 * ?synchronous=normal (the opt-out: the last commits may be lost on a power
 * cut), interleaved round by round, the median round reported, with a
 * checksum of the rows written.
 *
 * THREADS threads (1 by default) share each round's write units; reads run
 * on one thread.
 *
 *   build/.../bench/bench_sqlite_sync [UNITS_PER_ROUND] [ROUNDS] [DIR] [THREADS]
 */
#define _POSIX_C_SOURCE 200809L
#include <dbscope.h>

#include <pthread.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int write_unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    return dbs_exec(s, "INSERT INTO t (v) VALUES ('x')", NULL, 0, err) < 0 ? err->code : 0;
}

static int read_unit(dbs_session *s, void *arg, dbs_error *err)
{
    long long *sum = arg;
    dbs_rows *r = dbs_query(s, "SELECT count(*) FROM t", NULL, 0, err);
    if (!r)
        return err->code;
    if (dbs_rows_next(r, err) == 1)
        *sum += dbs_rows_int(r, 0);
    dbs_rows_close(r);
    return 0;
}

typedef struct writer {
    dbs_pool *pool;
    int units;
    int failed;
} writer;

static void *write_thread(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < w->units; i++) {
        dbs_error err;
        if (dbs_transact(w->pool, NULL, write_unit, NULL, &err) != 0) {
            fprintf(stderr, "%s\n", err.message);
            w->failed = 1;
            return NULL;
        }
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int units = argc > 1 ? atoi(argv[1]) : 500;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    const char *dir = argc > 3 ? argv[3] : "/tmp";
    int threads = argc > 4 ? atoi(argv[4]) : 1;
    if (units <= 0 || rounds <= 0 || rounds > 100 || threads <= 0 || threads > 64)
        return fprintf(stderr,
                       "usage: bench_sqlite_sync [UNITS] [ROUNDS 1-100] [DIR] [THREADS 1-64]\n"),
               2;
    static const char *const modes[2] = {"default", "normal"};
    dbs_pool *pool[2];
    char path[2][512];
    for (int m = 0; m < 2; m++) {
        snprintf(path[m], sizeof path[m], "%s/dbscope-sync-%s-%ld.db", dir, modes[m], (long)getpid());
        char url[600];
        snprintf(url, sizeof url, "sqlite://%s%s", path[m], m ? "?synchronous=normal" : "");
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url;
        if (threads > cfg.pool_size)
            cfg.pool_size = threads;
        dbs_error err;
        pool[m] = dbs_pool_open(&cfg, &err);
        if (!pool[m])
            return fprintf(stderr, "%s\n", err.message), 1;
        dbs_session *s = dbs_session_open(pool[m], NULL, &err);
        if (!s || dbs_exec(s, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", NULL, 0, &err) < 0 ||
            dbs_commit(s, &err) != DBS_OK)
            return fprintf(stderr, "%s\n", err.message), 1;
        dbs_session_close(s);
    }
    double w[2][100], r[2][100];
    long long sum[2] = {0, 0};
    for (int k = 0; k < rounds; k++) {
        for (int m = 0; m < 2; m++) {
            dbs_error err;
            writer wr[64];
            pthread_t th[64];
            double t0 = now_s();
            for (int i = 0; i < threads; i++) {
                wr[i] = (writer){pool[m], units / threads + (i < units % threads), 0};
                pthread_create(&th[i], NULL, write_thread, &wr[i]);
            }
            int failed = 0;
            for (int i = 0; i < threads; i++) {
                pthread_join(th[i], NULL);
                failed |= wr[i].failed;
            }
            if (failed)
                return 1;
            double t1 = now_s();
            for (int i = 0; i < units; i++)
                if (dbs_transact(pool[m], NULL, read_unit, &sum[m], &err) != 0)
                    return fprintf(stderr, "%s\n", err.message), 1;
            double t2 = now_s();
            w[m][k] = (t1 - t0) / units * 1e6;
            r[m][k] = (t2 - t1) / units * 1e6;
        }
    }
    printf("mode,threads,write_unit_us,read_unit_us,checksum\n");
    for (int m = 0; m < 2; m++) {
        qsort(w[m], (size_t)rounds, sizeof w[m][0], cmp);
        qsort(r[m], (size_t)rounds, sizeof r[m][0], cmp);
        printf("%s,%d,%.1f,%.2f,%lld\n", modes[m], threads, w[m][rounds / 2], r[m][rounds / 2], sum[m]);
        dbs_pool_close(pool[m]);
        char side[600];
        unlink(path[m]);
        snprintf(side, sizeof side, "%s-wal", path[m]);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path[m]);
        unlink(side);
    }
    return 0;
}
