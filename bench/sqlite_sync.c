/* What SQLite durability costs: the same write and read units of work through
 * dbscope on a file with synchronous=FULL (the default: a commit is on disk
 * when it is acknowledged) and with ?synchronous=normal (the opt-out: the
 * last commits may be lost on a power cut), interleaved round by round, the
 * median round reported, with a checksum of the rows written.
 *
 *   build/.../bench/bench_sqlite_sync [UNITS_PER_ROUND] [ROUNDS] [DIR]
 */
#define _POSIX_C_SOURCE 200809L
#include <dbscope.h>

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
    if (units <= 0 || rounds <= 0 || rounds > 100)
        return fprintf(stderr, "usage: bench_sqlite_sync [UNITS] [ROUNDS 1-100] [DIR]\n"), 2;
    static const char *const modes[2] = {"full", "normal"};
    dbs_pool *pool[2];
    char path[2][512];
    for (int m = 0; m < 2; m++) {
        snprintf(path[m], sizeof path[m], "%s/dbscope-sync-%s-%ld.db", dir, modes[m], (long)getpid());
        char url[600];
        snprintf(url, sizeof url, "sqlite://%s%s", path[m], m ? "?synchronous=normal" : "");
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url;
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
            double t0 = now_s();
            for (int i = 0; i < units; i++)
                if (dbs_transact(pool[m], NULL, write_unit, NULL, &err) != 0)
                    return fprintf(stderr, "%s\n", err.message), 1;
            double t1 = now_s();
            for (int i = 0; i < units; i++)
                if (dbs_transact(pool[m], NULL, read_unit, &sum[m], &err) != 0)
                    return fprintf(stderr, "%s\n", err.message), 1;
            double t2 = now_s();
            w[m][k] = (t1 - t0) / units * 1e6;
            r[m][k] = (t2 - t1) / units * 1e6;
        }
    }
    printf("mode,write_unit_us,read_unit_us,checksum\n");
    for (int m = 0; m < 2; m++) {
        qsort(w[m], (size_t)rounds, sizeof w[m][0], cmp);
        qsort(r[m], (size_t)rounds, sizeof r[m][0], cmp);
        printf("%s,%.1f,%.2f,%lld\n", modes[m], w[m][rounds / 2], r[m][rounds / 2], sum[m]);
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
