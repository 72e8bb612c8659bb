/* Many threads, many transactions, a small pool: no update lost, no
 * connection ever held by two sessions at once, acquired == released; and
 * bare checkouts racing parked connections against waiters. */
#include "common.h"

#include <sched.h>

enum { THREADS = 16, ITERS = 300, MAX_CONN = 4096 };

static dbs_pool *pool;
static char tbl[64];
static atomic_int holder[MAX_CONN];
static atomic_int violations;

static void on_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->conn_id >= MAX_CONN)
        return;
    if (ev->kind == DBS_EVENT_CHECKOUT && atomic_exchange(&holder[ev->conn_id], 1) != 0)
        atomic_fetch_add(&violations, 1);
    if (ev->kind == DBS_EVENT_CHECKIN && atomic_exchange(&holder[ev->conn_id], 0) != 1)
        atomic_fetch_add(&violations, 1);
}

static int bump(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE %s SET n = n + 1 WHERE id = 1", tbl);
    int64_t rc = dbs_exec(s, sql, NULL, 0, err);
    if (rc < 0)
        return (int)rc;
    return rc == 1 ? 0 : DBS_ESQL;
}

static void *worker(void *v)
{
    long id = (long)v;
    char rid[32], uid[32];
    for (int i = 0; i < ITERS; i++) {
        snprintf(rid, sizeof rid, "r%ld-%d", id, i);
        snprintf(uid, sizeof uid, "u%ld", id);
        dbs_context ctx = {.request_id = rid, .user_id = uid};
        dbs_error err;
        int rc = dbs_transact(pool, &ctx, bump, NULL, &err);
        if (rc != 0)
            CHECK_FAIL("thread %ld iteration %d: %d %s", id, i, rc, err.message);
        if (i % 10 == 0) { /* a plain read session in between */
            dbs_session *s = dbs_session_open(pool, &ctx, &err);
            if (!s)
                CHECK_FAIL("open: %s", err.message);
            char sql[128];
            snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE id = 1", tbl);
            CHECK_INT(query_int(s, sql, NULL, 0), >, 0);
            dbs_session_close(s);
        }
    }
    return NULL;
}

/* ---- parking against waiting ----
 * Bare checkouts, no statement, more threads than connections: releases
 * that park race with threads that start waiting, as often as possible. A
 * connection left parked while a thread sleeps in the queue would show as
 * a timeout; one handed to two sessions, as a holder violation. */
enum { CYCLERS = 8, CYCLES = 20000 };

static void *cycler(void *v)
{
    dbs_pool *p = v;
    for (int i = 0; i < CYCLES; i++) {
        dbs_error err;
        dbs_session *s = dbs_session_open(p, NULL, &err);
        if (!s)
            CHECK_FAIL("cycle %d: %s", i, err.message);
        if (i % 64 == 0)
            sched_yield(); /* now and then, be preempted holding it */
        dbs_session_close(s);
    }
    return NULL;
}

static void parking_races_waiting(int barge_limit_us)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.barge_limit_us = barge_limit_us;
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 30000;
    cfg.on_event = on_event;
    dbs_pool *p = open_pool("stress", &cfg);
    pthread_t th[CYCLERS];
    for (long i = 0; i < CYCLERS; i++)
        pthread_create(&th[i], NULL, cycler, p);
    for (int i = 0; i < CYCLERS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&violations), 0);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.timeouts, 0);
    CHECK_EQ(st.acquired, (uint64_t)CYCLERS * CYCLES);
    CHECK_EQ(st.acquired, st.released);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.idle, st.size);
    CHECK_INT(st.size, <=, 2);
    dbs_pool_close(p);
}

/* Under each order rule: strict, the default, and a limit so short that
 * waiters keep reaching it (serving in order races with taking back). */
static void test_parking_races_waiting(void)
{
    parking_races_waiting(0);
    parking_races_waiting(1000);
    parking_races_waiting(20);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 4;
    cfg.max_overflow = 2;
    cfg.retry_max = 50; /* SQLite has one writer: contention is expected */
    cfg.retry_base_ms = 1;
    cfg.retry_cap_ms = 20;
    cfg.on_event = on_event;
    pool = open_pool("stress", &cfg);
    snprintf(tbl, sizeof tbl, "%s", table_name("stress"));
    char sql[160];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, n) VALUES (1, 0)", tbl);
    run_sql(pool, sql);

    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);

    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE id = 1", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), THREADS * ITERS);
    dbs_session_close(s);
    CHECK_EQ(atomic_load(&violations), 0);
    dbs_stats st = stats_of(pool);
    CHECK_EQ(st.acquired, st.released);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_INT(st.size, <=, 6);
    printf("stress: %d transactions, %llu retries, %llu connections created\n",
           THREADS * ITERS, (unsigned long long)st.retries, (unsigned long long)st.created);
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    test_parking_races_waiting();
    puts("test_stress: ok");
    return 0;
}
