/* Shared set-up for the backend-neutral tests: a pool on the test database
 * with a table unique to this process, and an event recorder. */
#ifndef DBS_TEST_COMMON_H
#define DBS_TEST_COMMON_H

#include "check.h"
#include "internal.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static char test_table[64];

/* A table name no other test process uses (tests share one PostgreSQL). */
static inline const char *table_name(const char *base)
{
    snprintf(test_table, sizeof test_table, "%s_%ld", base, (long)getpid());
    return test_table;
}

/* The first line of DIR/NAME (files the PostgreSQL fixture writes), without
 * its line end; fails the test if there is none. */
static inline void read_line(const char *dir, const char *name, char *out, size_t n)
{
    char path[900];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(out, (int)n, f))
        CHECK_FAIL("cannot read %s", path);
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
}

static inline dbs_pool *open_pool(const char *name, dbs_config *cfg)
{
    dbs_error err;
    cfg->url = test_url(name);
    dbs_pool *p = dbs_pool_open(cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open(%s): %s", cfg->url, err.message);
    return p;
}

/* Runs sql on a fresh session and commits; fails the test on error. */
static inline void run_sql(dbs_pool *p, const char *sql)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    if (dbs_exec(s, sql, NULL, 0, &err) < 0)
        CHECK_FAIL("%s: %s", sql, err.message);
    if (dbs_commit(s, &err) != DBS_OK)
        CHECK_FAIL("commit: %s", err.message);
    dbs_session_close(s);
}

/* A session, or the test fails. */
static inline dbs_session *open_ok(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    return s;
}

/* sql without parameters on s, or the test fails. */
static inline void exec_ok(dbs_session *s, const char *sql)
{
    dbs_error err;
    if (dbs_exec(s, sql, NULL, 0, &err) < 0)
        CHECK_FAIL("%s: %s", sql, err.message);
}

/* The first column of the one row sql returns, as text ("(null)" for
 * NULL), in out; returns out. */
static inline const char *text_of(dbs_session *s, const char *sql, char *out, size_t n)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (!r)
        CHECK_FAIL("%s: %s", sql, err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    const char *t = dbs_rows_text(r, 0, NULL);
    snprintf(out, n, "%s", t ? t : "(null)");
    dbs_rows_close(r);
    return out;
}

/* One integer from a query with up to 2 int parameters. */
static inline int64_t query_int(dbs_session *s, const char *sql, const dbs_value *v, size_t n)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, sql, v, n, &err);
    if (!r)
        CHECK_FAIL("%s: %s", sql, err.message);
    int rc = dbs_rows_next(r, &err);
    if (rc != 1)
        CHECK_FAIL("%s: no row (%d %s)", sql, rc, err.message);
    int64_t x = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    return x;
}

static inline int64_t now_ms(void)
{
    return dbs__now_ns() / 1000000;
}

/* Waits until cond holds, up to limit_ms; the test asserts cond afterwards,
 * never the time it took. */
#define WAIT_UNTIL(cond, limit_ms)                                             \
    do {                                                                       \
        int64_t wait_end_ = now_ms() + (limit_ms);                             \
        while (!(cond) && now_ms() < wait_end_)                                \
            dbs__sleep_ms(5);                                                  \
    } while (0)

/* The threads of this process, as /proc lists them. */
static inline int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static inline dbs_stats stats_of(dbs_pool *p)
{
    dbs_stats st;
    dbs_pool_stats(p, &st);
    return st;
}

/* A session asked for while the circuit is open, its target still down:
 * refused with DBS_EUNAVAILABLE, no connect tried. The first probe is let
 * through 50 ms after the circuit opened, so a caller that comes later (a
 * thread descheduled on a loaded machine, or one slowed by a sanitizer)
 * is that probe and gets the failed connect instead (DBS_ECONNECT), and the
 * next probe is twice as far off. Asks until refused; returns the number
 * of probes made first, which a test counts in connect_failures (0 unless
 * the machine was slow). */
static inline int open_refused_by_circuit(dbs_pool *p, dbs_error *err)
{
    for (int probes = 0; probes < 20; probes++) {
        dbs_stats st0 = stats_of(p);
        dbs_session *s = dbs_session_open(p, NULL, err);
        if (s)
            CHECK_FAIL("a session while the circuit is open and its target down");
        dbs_stats st = stats_of(p);
        if (err->code == DBS_EUNAVAILABLE) {
            CHECK_EQ(st.connect_failures, st0.connect_failures); /* no connect tried */
            CHECK_EQ(st.unavailable, st0.unavailable + 1);
            return probes;
        }
        CHECK_EQ(err->code, DBS_ECONNECT); /* the probe, refused by the target */
        CHECK_EQ(st.connect_failures, st0.connect_failures + 1);
        CHECK_EQ(st.unavailable, st0.unavailable);
    }
    CHECK_FAIL("20 probes in a row: the circuit never refused a caller");
    return -1;
}

/* ---- load: threads running one unit of work through dbs_transact until
 * stopped, counting outcomes; the fault tests kill connections or restart
 * the server under it. Each call's arg is a distinct int64_t id. ---- */

enum { LOAD_MAX_THREADS = 32 };

typedef struct test_load test_load;
typedef struct test_load_worker {
    test_load *load;
    int64_t base;
} test_load_worker;

struct test_load {
    dbs_pool *pool;
    dbs_work_fn unit;
    int threads;
    atomic_int stop, done, failures, commit_unknown;
    pthread_t th[LOAD_MAX_THREADS];
    test_load_worker w[LOAD_MAX_THREADS];
};

static inline void *load_worker(void *v)
{
    test_load_worker *w = v;
    test_load *l = w->load;
    for (int64_t k = 0; !atomic_load(&l->stop); k++) {
        int64_t id = w->base + k;
        dbs_error err;
        int rc = dbs_transact(l->pool, NULL, l->unit, &id, &err);
        if (rc == DBS_ECOMMIT_UNKNOWN)
            atomic_fetch_add(&l->commit_unknown, 1);
        else if (rc != DBS_OK) {
            fprintf(stderr, "unit failed: %s\n", err.message);
            atomic_fetch_add(&l->failures, 1);
        } else
            atomic_fetch_add(&l->done, 1);
    }
    return NULL;
}

static inline void load_start(test_load *l, dbs_pool *p, dbs_work_fn unit, int threads)
{
    CHECK(threads > 0 && threads <= LOAD_MAX_THREADS);
    l->pool = p;
    l->unit = unit;
    l->threads = threads;
    atomic_store(&l->stop, 0);
    atomic_store(&l->done, 0);
    atomic_store(&l->failures, 0);
    atomic_store(&l->commit_unknown, 0);
    for (int i = 0; i < threads; i++) {
        l->w[i] = (test_load_worker){.load = l, .base = (int64_t)i * 1000000};
        CHECK(pthread_create(&l->th[i], NULL, load_worker, &l->w[i]) == 0);
    }
}

/* Stops the load, prints what it did (what names the test). */
static inline void load_stop(test_load *l, const char *what)
{
    atomic_store(&l->stop, 1);
    for (int i = 0; i < l->threads; i++)
        pthread_join(l->th[i], NULL);
    printf("%s: units done %d, commit outcome unknown %d, failed %d, retries %llu\n", what,
           atomic_load(&l->done), atomic_load(&l->commit_unknown), atomic_load(&l->failures),
           (unsigned long long)stats_of(l->pool).retries);
}

/* After the fault: no unit failed but those whose COMMIT was in flight,
 * the failures were retried, and the pool is back to size connections by
 * itself, every one of them answering. */
static inline void load_check_recovered(test_load *l, int size)
{
    CHECK_EQ(atomic_load(&l->failures), 0);
    CHECK_INT(stats_of(l->pool).retries, >=, 1);
    WAIT_UNTIL(stats_of(l->pool).size == size, 30000);
    CHECK_EQ(stats_of(l->pool).size, size);
    dbs_session *ss[LOAD_MAX_THREADS];
    CHECK(size <= LOAD_MAX_THREADS);
    for (int i = 0; i < size; i++) {
        ss[i] = open_ok(l->pool);
        CHECK_EQ(query_int(ss[i], "SELECT 1", NULL, 0), 1);
    }
    for (int i = 0; i < size; i++)
        dbs_session_close(ss[i]);
}

#endif
