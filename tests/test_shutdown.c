/* Shutdown and the pool's lifetime: dbs_pool_shutdown drains with a bound and
 * refuses new work; nothing reads freed memory when workers, stats readers
 * and dbs_transact's retries race the shutdown and the close; a waiter woken
 * by a shutdown leaves no stale wake-up for its thread's next wait; threads
 * that come and go reuse the connections their predecessors parked. Runs on
 * SQLite and PostgreSQL, and means most under ASan and TSan. */
#include "common.h"
#include <sqlite3.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>

static dbs_config base_config(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.log_events = 0;
    return cfg;
}

/* ---- shutdown drains and refuses ---- */

struct worker {
    dbs_pool *pool;
    atomic_int *stop;
    int units, last_rc;
};

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    return dbs_exec(s, "SELECT 1", NULL, 0, err) < 0 ? err->code : 0;
}

static void *worker_main(void *v)
{
    struct worker *w = v;
    dbs_error err;
    for (;;) {
        int rc = dbs_transact(w->pool, NULL, unit, NULL, &err);
        w->last_rc = rc;
        if (rc == DBS_ECLOSED)
            return NULL; /* what a shutdown tells every worker */
        CHECK_OK(rc, &err);
        w->units++;
        /* a stats reader's work, on the same pool, as it shuts down */
        dbs_stats st;
        dbs_pool_stats(w->pool, &st);
        char buf[4096];
        CHECK(dbs_pool_metrics(w->pool, buf, sizeof buf) > 0);
    }
}

static void test_shutdown_stops_workers(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("shutdown", &cfg);
    enum { N = 6 };
    struct worker w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.pool = p};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    WAIT_UNTIL(stats_of(p).acquired > 200, 30000);
    /* Drained: every session closes by itself once the workers see ECLOSED. */
    CHECK_EQ(dbs_pool_shutdown(p, 60000), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(w[i].last_rc, DBS_ECLOSED);
    }
    /* After a shutdown the pool still answers, and refuses new sessions. */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(st.acquired, st.released);
    dbs_error err;
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECLOSED);
    CHECK_EQ(dbs_transact(p, NULL, unit, NULL, &err), DBS_ECLOSED);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0); /* again: harmless */
    dbs_pool_close(p);
}

static void test_shutdown_reports_sessions_still_open(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    dbs_pool *p = open_pool("shutdown", &cfg);
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err);
    dbs_session *b = dbs_session_open(p, NULL, &err);
    CHECK(a && b);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 2);
    CHECK_EQ(dbs_pool_shutdown(p, 20), 2); /* bounded: returns with them open */
    /* open sessions finish their requests (test_sessions_finish_after_shutdown) */
    CHECK_OK(dbs_exec(a, "SELECT 1", NULL, 0, &err), &err);
    dbs_session_close(a);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 1);
    dbs_session_close(b);
    CHECK_EQ(dbs_pool_shutdown(p, -1), 0);
    CHECK_EQ(stats_of(p).size, 0); /* their connections were closed */
    dbs_pool_close(p);
    CHECK_EQ(dbs_pool_shutdown(NULL, 0), DBS_EMISUSE);
}

/* What a drain is for: the requests in flight finish. Sessions open at
 * the shutdown go on working (statements, rows, commit, rollback) until
 * they close, and so does the attempt a dbs_transact is running; only
 * dbs_pool_close turns their next call into DBS_ECLOSED. */
struct in_flight {
    dbs_pool *pool;
    const char *tbl;
    atomic_int in_work, go;
    int rc;
    dbs_error err;
};

static int in_flight_unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct in_flight *f = arg;
    /* the session is open; its statements come after the shutdown (and
     * after the other writer: SQLite has one) */
    atomic_store(&f->in_work, 1);
    while (!atomic_load(&f->go))
        dbs__sleep_ms(1);
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (3)", f->tbl);
    if (dbs_exec(s, sql, NULL, 0, err) < 0)
        return err->code;
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (4)", f->tbl);
    return dbs_exec(s, sql, NULL, 0, err) < 0 ? err->code : 0;
}

static void *in_flight_main(void *v)
{
    struct in_flight *f = v;
    f->rc = dbs_transact(f->pool, NULL, in_flight_unit, f, &f->err);
    return NULL;
}

static void test_sessions_finish_after_shutdown(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 3;
    dbs_pool *p = open_pool("shutdown", &cfg);
    char url[1024];
    snprintf(url, sizeof url, "%s", cfg.url);
    const char *tbl = table_name("drain");
    char sql[160];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
    run_sql(p, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY)", tbl);
    run_sql(p, sql);

    struct in_flight f = {.pool = p, .tbl = tbl, .rc = 1};
    pthread_t th;
    pthread_create(&th, NULL, in_flight_main, &f);
    WAIT_UNTIL(atomic_load(&f.in_work), 30000);
    CHECK(atomic_load(&f.in_work));
    dbs_error err;
    dbs_session *a = open_ok(p);
    dbs_session *b = open_ok(p);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (1)", tbl);
    CHECK_OK(dbs_exec(a, sql, NULL, 0, &err), &err); /* a transaction open */

    CHECK_EQ(dbs_pool_shutdown(p, 0), 3);
    uint64_t closed_errors = dbs_pool_errors(p, DBS_ECLOSED, NULL);
    CHECK(dbs_session_open(p, NULL, &err) == NULL); /* nothing new */
    CHECK_EQ(err.code, DBS_ECLOSED);
    /* a refused acquire is a failure the caller got: counted, with or
     * without a dbs_error */
    CHECK(dbs_session_open(p, NULL, NULL) == NULL);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), closed_errors + 2);
    /* a's request finishes its transaction */
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (2)", tbl);
    CHECK_EQ(dbs_exec(a, sql, NULL, 0, &err), 1);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id <= 2", tbl);
    CHECK_EQ(query_int(a, sql, NULL, 0), 2);
    CHECK_OK(dbs_commit(a, &err), &err);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (5)", tbl);
    CHECK_EQ(dbs_exec(a, sql, NULL, 0, &err), 1);
    CHECK_OK(dbs_rollback(a, &err), &err);
    dbs_session_close(a);
    /* the unit under way finishes its attempt and commits */
    atomic_store(&f.go, 1);
    pthread_join(th, NULL);
    CHECK_OK(f.rc, &f.err);
    CHECK_EQ(dbs_transact(p, NULL, unit, NULL, &err), DBS_ECLOSED); /* a new one */
    CHECK_EQ(dbs_pool_shutdown(p, 0), 1); /* b is still open */
    CHECK_EQ(query_int(b, "SELECT 1", NULL, 0), 1);
    /* after dbs_pool_close, a session still open is told so */
    dbs_pool_close(p);
    CHECK_EQ(dbs_exec(b, "SELECT 1", NULL, 0, &err), DBS_ECLOSED);
    CHECK_EQ(dbs_commit(b, &err), DBS_ECLOSED);
    dbs_session_close(b); /* frees the pool */

    /* what the drained requests committed is there */
    dbs_config c2 = base_config();
    c2.url = url;
    dbs_pool *q = dbs_pool_open(&c2, &err);
    if (!q)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    dbs_session *s = open_ok(q);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4); /* 1, 2, 3, 4; not 5 */
    dbs_session_close(s);
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(q, sql);
    dbs_pool_close(q);
}

/* A session closed on another thread while shutdown waits wakes it. */
struct late_closer {
    dbs_pool *pool;
    pthread_barrier_t *opened;
    atomic_int *go;
};

static void *late_closer_main(void *v)
{
    struct late_closer *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    CHECK(s);
    pthread_barrier_wait(a->opened);
    while (!atomic_load(a->go))
        dbs__sleep_ms(1);
    dbs__sleep_ms(20);
    dbs_session_close(s);
    return NULL;
}

static void test_shutdown_waits_for_a_session(void)
{
    dbs_config cfg = base_config();
    dbs_pool *p = open_pool("shutdown", &cfg);
    pthread_barrier_t opened;
    pthread_barrier_init(&opened, NULL, 2);
    atomic_int go = 0;
    struct late_closer a = {.pool = p, .opened = &opened, .go = &go};
    pthread_t th;
    pthread_create(&th, NULL, late_closer_main, &a);
    pthread_barrier_wait(&opened);
    atomic_store(&go, 1);
    CHECK_EQ(dbs_pool_shutdown(p, 120000), 0);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&opened);
    dbs_pool_close(p);
}

/* ---- dbs_transact across a close ---- */

static atomic_int attempts;

static int always_retryable(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)arg;
    atomic_fetch_add(&attempts, 1);
    return dbs__err(err, DBS_ERETRYABLE, "injected serialization failure");
}

struct transact_arg {
    dbs_pool *pool;
    int rc;
};

static void *transact_main(void *v)
{
    struct transact_arg *a = v;
    dbs_error err;
    a->rc = dbs_transact(a->pool, NULL, always_retryable, NULL, &err);
    return NULL;
}

/* The pool is closed (not only shut down) while dbs_transact sleeps between
 * attempts, holding no session: the retry must neither read the freed pool
 * nor run again. */
static void test_close_during_transact_backoff(void)
{
    dbs_config cfg = base_config();
    /* As many retries as the pool allows (about 25 s of backoff): a main
     * thread descheduled after seeing the second attempt must still find
     * dbs_transact retrying, so that only the close can end it. */
    cfg.retry_max = 1000;
    cfg.retry_base_ms = 50;
    cfg.retry_cap_ms = 50;
    dbs_pool *p = open_pool("shutdown", &cfg);
    atomic_store(&attempts, 0);
    struct transact_arg a = {.pool = p};
    pthread_t th;
    pthread_create(&th, NULL, transact_main, &a);
    WAIT_UNTIL(atomic_load(&attempts) >= 2, 30000);
    dbs_pool_close(p);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, DBS_ECLOSED);
    CHECK(atomic_load(&attempts) < 1000);
}

/* ---- no stale wake-up ---- */

enum { WAITERS = 64 };

struct waiter_arg {
    dbs_pool *first, *second;
    pthread_barrier_t *phase;
    int first_rc, second_rc;
};
/* Waiters done with the first pool: under a slow build (TSan) they may all
 * time out before half of them wait at once, and the round goes on then
 * rather than sit out WAIT_UNTIL's limit. */
static atomic_int first_done;

static void *waiter_main(void *v)
{
    struct waiter_arg *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->first, NULL, &err);
    a->first_rc = s ? 0 : err.code;
    if (s)
        dbs_session_close(s);
    atomic_fetch_add(&first_done, 1);
    pthread_barrier_wait(a->phase);
    /* This wait must last until a connection comes, not end at once on a
     * post left over from the first pool's shutdown. */
    s = dbs_session_open(a->second, NULL, &err);
    a->second_rc = s ? 0 : err.code;
    if (s)
        dbs_session_close(s);
    return NULL;
}

static void test_no_stale_wakeup_after_shutdown(void)
{
    for (int round = 0; round < 8; round++) {
        dbs_config cfg = base_config();
        cfg.pool_size = 1;
        cfg.max_overflow = 0;
        cfg.acquire_timeout_ms = 40; /* times out as the shutdown pops */
        cfg.min_idle = 1; /* held1 takes it: no connect within the 40 ms */
        dbs_pool *first = open_pool("shutdown", &cfg);
        cfg.min_idle = 0;
        cfg.acquire_timeout_ms = 120000;
        dbs_pool *second = open_pool("shutdown", &cfg);
        dbs_error err;
        CHECK_OK(dbs_pool_wait_ready(first, 60000, &err), &err);
        dbs_session *held1 = dbs_session_open(first, NULL, &err);
        dbs_session *held2 = dbs_session_open(second, NULL, &err);
        CHECK(held1 && held2);
        pthread_barrier_t phase;
        pthread_barrier_init(&phase, NULL, WAITERS + 1);
        struct waiter_arg a[WAITERS];
        pthread_t th[WAITERS];
        atomic_store(&first_done, 0);
        for (int i = 0; i < WAITERS; i++) {
            a[i] = (struct waiter_arg){.first = first, .second = second, .phase = &phase};
            pthread_create(&th[i], NULL, waiter_main, &a[i]);
        }
        WAIT_UNTIL(stats_of(first).waiting >= WAITERS / 2 || atomic_load(&first_done) == WAITERS,
                   30000);
        dbs__sleep_ms(35 + round);
        dbs_pool_shutdown(first, 0);
        pthread_barrier_wait(&phase);
        WAIT_UNTIL(stats_of(second).waiting == WAITERS, 60000);
        dbs_session_close(held2); /* each waiter gets it in turn */
        for (int i = 0; i < WAITERS; i++) {
            pthread_join(th[i], NULL);
            CHECK(a[i].first_rc == DBS_ECLOSED || a[i].first_rc == DBS_ETIMEOUT);
            CHECK_EQ(a[i].second_rc, 0);
        }
        pthread_barrier_destroy(&phase);
        dbs_session_close(held1);
        dbs_pool_close(first);
        dbs_pool_close(second);
    }
}

/* ---- a waiter given a slot as the shutdown begins ---- */

/* A thread is held still by a signal whose handler waits on a pipe: the
 * test decides when it runs again. */
static int hold_pipe[2];
static atomic_int held_still;

static void hold_still(int sig)
{
    (void)sig;
    atomic_store(&held_still, 1);
    char b;
    while (read(hold_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
    atomic_store(&held_still, 2);
}

struct slot_waiter {
    dbs_pool *pool;
    int rc;
};

static void *slot_waiter_main(void *v)
{
    struct slot_waiter *w = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(w->pool, NULL, &err);
    w->rc = s ? DBS_OK : err.code;
    if (s)
        dbs_session_close(s);
    return NULL;
}

/* The waiter is handed the slot of a connection that closed (the oldest
 * waiter connects itself), and the pool is shut down before it runs again:
 * it returns DBS_ECLOSED without connecting. */
static void test_slot_given_before_shutdown(void)
{
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer defers a signal to a thread blocked in sem_clockwait,
     * which it does not intercept, until that wait ends: the waiter cannot
     * be held still where this test needs it. */
    puts("test_slot_given_before_shutdown: not run under ThreadSanitizer");
    return;
#endif
    CHECK(pipe(hold_pipe) == 0);
    struct sigaction sa = {0};
    sa.sa_handler = hold_still;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    atomic_store(&held_still, 0);

    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 120000;
    cfg.max_lifetime_ms = 1; /* the connection retires when given back */
    cfg.barge_limit_us = 0;  /* the waiter sleeps until served, lock free */
    dbs_pool *p = open_pool("shutdown", &cfg);
    dbs_session *held = open_ok(p);
    struct slot_waiter w = {.pool = p, .rc = 1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, slot_waiter_main, &w) == 0);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    CHECK_EQ(stats_of(p).waiting, 1);
    /* The waiter holds the pool's lock from queueing itself until it
     * sleeps, and (no barge limit to wake it) takes it again only once
     * served: once this thread has had the lock, it sleeps (or is about
     * to), holding nothing. */
    pthread_mutex_lock(&p->mu);
    pthread_mutex_unlock(&p->mu);
    CHECK(pthread_kill(th, SIGUSR1) == 0);
    WAIT_UNTIL(atomic_load(&held_still) == 1, 30000);
    CHECK_EQ(atomic_load(&held_still), 1);

    dbs__sleep_ms(2); /* past max_lifetime_ms */
    dbs_session_close(held); /* retired: its slot goes to the waiter */
    CHECK_EQ(stats_of(p).waiting, 0);
    int connects = atomic_load(&dbs__fault.connects);
    dbs_pool_shutdown(p, 0);
    CHECK(write(hold_pipe[1], "x", 1) == 1); /* the waiter runs again */
    pthread_join(th, NULL);
    CHECK_EQ(w.rc, DBS_ECLOSED);
    CHECK_EQ(atomic_load(&dbs__fault.connects), connects); /* no connect begun */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.idle, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.created, st.closed);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0); /* nothing left to drain */
    dbs_pool_close(p);
    signal(SIGUSR1, SIG_DFL);
    close(hold_pipe[0]);
    close(hold_pipe[1]);
}

/* ---- threads that come and go ---- */

static void *one_session(void *v)
{
    dbs_pool *p = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    CHECK_OK(dbs_exec(s, "SELECT 1", NULL, 0, &err), &err);
    dbs_session_close(s); /* parked in this thread's shard, then it exits */
    return NULL;
}

static void test_exited_threads_connections_are_reused(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 10;
    dbs_pool *p = open_pool("shutdown", &cfg);
    for (int i = 0; i < 40; i++) {
        pthread_t th;
        pthread_create(&th, NULL, one_session, p);
        pthread_join(th, NULL);
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.created, 1); /* concurrency 1: one connection, ever */
    CHECK_EQ(st.size, 1);
    dbs_pool_close(p);
}

/* ---- shutdown and close racing one another ---- */

/* A thread that has been joined may still be listed for a moment: the
 * count is awaited, then compared. */
static void threads_back_to(int n)
{
    WAIT_UNTIL(count_threads() == n, 10000);
    CHECK_EQ(count_threads(), n);
}

struct shutter {
    dbs_pool *pool;
    int timeout_ms;
    int rc;
};

static void *shutdown_main(void *v)
{
    struct shutter *sh = v;
    sh->rc = dbs_pool_shutdown(sh->pool, sh->timeout_ms);
    return NULL;
}

/* The housekeeper's leak report, held in on_event until the test lets it
 * go: the first shutdown's join of the housekeeper waits for it. */
static atomic_int leak_cb_in, leak_cb_release, leak_cb_seen;

static void holding_on_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind != DBS_EVENT_LEAK || atomic_exchange(&leak_cb_seen, 1))
        return;
    atomic_store(&leak_cb_in, 1);
    while (!atomic_load(&leak_cb_release))
        dbs__sleep_ms(1);
    atomic_store(&leak_cb_in, 0);
}

static atomic_int second_called;

static void *releaser_main(void *v)
{
    (void)v;
    while (!atomic_load(&second_called))
        dbs__sleep_ms(1);
    /* room for a second shutdown that does not wait to return meanwhile
     * (a slower machine only makes the check pass more easily) */
    dbs__sleep_ms(300);
    atomic_store(&leak_cb_release, 1);
    return NULL;
}

/* A second dbs_pool_shutdown, called while the first is joining the
 * housekeeper, returns only once it is joined: its caller may close the
 * pool next, and no thread of the pool may outlive that. It returned at
 * once before, the housekeeper still inside on_event. */
static void test_second_shutdown_waits_for_joins(void)
{
    int before = count_threads();
    atomic_store(&leak_cb_in, 0);
    atomic_store(&leak_cb_release, 0);
    atomic_store(&leak_cb_seen, 0);
    atomic_store(&second_called, 0);
    dbs_config cfg = base_config();
    cfg.leak_threshold_ms = 20;
    cfg.on_event = holding_on_event;
    dbs_pool *p = open_pool("shutdown", &cfg);
    dbs_session *s = open_ok(p); /* held past the threshold: reported */
    WAIT_UNTIL(atomic_load(&leak_cb_in), 30000);
    CHECK(atomic_load(&leak_cb_in));
    pthread_t rel, first;
    CHECK_EQ(pthread_create(&rel, NULL, releaser_main, NULL), 0);
    struct shutter a = {.pool = p, .timeout_ms = 0};
    CHECK_EQ(pthread_create(&first, NULL, shutdown_main, &a), 0);
    WAIT_UNTIL(dbs__pool_closed(p), 30000);
    CHECK(dbs__pool_closed(p));
    atomic_store(&second_called, 1);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 1);
    int still_in = atomic_load(&leak_cb_in);
    CHECK_EQ(still_in, 0);
    dbs_pool_close(p); /* right after: the session keeps the memory */
    pthread_join(first, NULL);
    CHECK_EQ(a.rc, 1); /* the session still open */
    dbs_session_close(s);
    pthread_join(rel, NULL);
    threads_back_to(before);
}

/* Rounds of two shutdowns at once, the close right after the second;
 * the housekeeper busy (min_idle, a short interval). However the second
 * meets the first, no thread of the pool is left once both returned and the
 * pool is closed, and nothing reads freed memory (ASan, TSan). */
static void test_two_shutdowns_then_close(void)
{
    int before = count_threads();
    for (int round = 0; round < 40; round++) {
        dbs_config cfg = base_config();
        cfg.min_idle = 2;
        cfg.housekeeping_interval_ms = 1;
        dbs_pool *p = open_pool("shutdown", &cfg);
        struct shutter a = {.pool = p, .timeout_ms = -1};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, shutdown_main, &a), 0);
        /* the first begun (a call under way may race the close; one
         * begun after it may not) */
        WAIT_UNTIL(dbs__pool_closed(p), 30000);
        CHECK(dbs__pool_closed(p));
        CHECK_EQ(dbs_pool_shutdown(p, round % 2 ? -1 : 0), 0);
        dbs_pool_close(p);
        pthread_join(th, NULL);
        CHECK_EQ(a.rc, 0);
        threads_back_to(before);
    }
}

/* A shutdown draining (waiting for a session) while another thread
 * closes the pool and then the session, whose close frees the pool: the
 * shutdown under way keeps the pool's memory until it returns, and
 * returns 0, drained. */
static void test_close_while_shutdown_drains(void)
{
    for (int round = 0; round < 40; round++) {
        dbs_config cfg = base_config();
        dbs_pool *p = open_pool("shutdown", &cfg);
        dbs_session *s = open_ok(p);
        struct shutter a = {.pool = p, .timeout_ms = round % 2 ? -1 : 60000};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, shutdown_main, &a), 0);
        WAIT_UNTIL(dbs__pool_closed(p), 30000);
        CHECK(dbs__pool_closed(p));
        if (round % 4 < 2)
            dbs__sleep_ms(1); /* the drain's wait begun, most often */
        dbs_pool_close(p);
        dbs_session_close(s);
        pthread_join(th, NULL);
        CHECK_EQ(a.rc, 0);
    }
}

/* ---- bounded shutdown, lazy open ---- */

/* The housekeeper stuck in a connect to a server that does not answer must
 * not hold the close hostage: the connect is abandoned, and close returns
 * having joined the housekeeper (tests/test_close_joins.c counts the
 * threads). */
static void test_close_not_held_by_housekeeper(void)
{
    dbs_config cfg = base_config();
    cfg.min_idle = 3; /* the housekeeper connects at once */
    cfg.pool_size = 4;
    cfg.lazy_open = 1; /* so that only the housekeeper connects */
    atomic_store(&dbs__fault.connect_delay_ms, 20000);
    dbs_pool *p = open_pool("shutdown", &cfg);
    WAIT_UNTIL(stats_of(p).pending > 0, 30000);
    CHECK(stats_of(p).pending > 0); /* stuck in its min_idle connects */
    int64_t t0 = now_ms();
    CHECK_EQ(dbs_pool_shutdown(p, 100), 0);
    dbs_pool_close(p);
    /* a hang guard, not a measurement: the stall is 20 s */
    CHECK_INT(now_ms() - t0, <, 15000);
    atomic_store(&dbs__fault.connect_delay_ms, 0);
}

/* lazy_open: the pool opens without the database, fails fast while it is
 * out of reach, and serves as soon as it is back. SQLite stands in for a
 * server that is down: another process holds the file's exclusive lock,
 * so no connection can set up (a missing directory, or a file that is not
 * a database, would be a configuration error instead, DBS_ECONFIG, never
 * retried: tests/test_config_errors.c). */
static void test_lazy_open(void)
{
    if (test_is_pg(test_url("shutdown")))
        return; /* the PostgreSQL side is proven with a stopped listener in test_pg_bounds */
    char dir[800], url[900];
    snprintf(dir, sizeof dir, "/tmp/dbscope-lazy-%ld", (long)getpid());
    snprintf(url, sizeof url, "sqlite://%s/app.db", dir);
    CHECK_EQ(mkdir(dir, 0700), 0);
    char junk_path[1000];
    snprintf(junk_path, sizeof junk_path, "%s/app.db", dir);
    sqlite3 *holder = NULL;
    CHECK_EQ(sqlite3_open(junk_path, &holder), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(holder, "PRAGMA journal_mode=DELETE; CREATE TABLE t(x); "
                                  "BEGIN EXCLUSIVE; INSERT INTO t VALUES (1)", NULL, NULL, NULL),
             SQLITE_OK);
    dbs_config cfg = base_config();
    cfg.url = url;
    cfg.lazy_open = 1;
    cfg.circuit_threshold = 2;
    cfg.busy_timeout_ms = 50;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p); /* nothing to connect to, and it opened anyway */
    CHECK_EQ(stats_of(p).size, 0);
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONNECT);
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    open_refused_by_circuit(p, &err); /* failing fast now */
    CHECK_EQ(sqlite3_exec(holder, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_close(holder), SQLITE_OK);
    dbs_session *s = NULL;
    for (int i = 0; i < 2000 && !s; i++) {
        s = dbs_session_open(p, NULL, &err);
        if (!s)
            dbs__sleep_ms(5);
    }
    CHECK(s); /* serves once the database is there */
    CHECK_OK(dbs_exec(s, "SELECT 1", NULL, 0, &err), &err);
    dbs_session_close(s);
    dbs_pool_close(p);
    char f[1000];
    snprintf(f, sizeof f, "%s/app.db", dir);
    unlink(f);
    snprintf(f, sizeof f, "%s/app.db-wal", dir);
    unlink(f);
    snprintf(f, sizeof f, "%s/app.db-shm", dir);
    unlink(f);
    rmdir(dir);
}

int main(void)
{
    atomic_store(&dbs__fault.armed, 1);
    test_shutdown_stops_workers();
    test_shutdown_reports_sessions_still_open();
    test_shutdown_waits_for_a_session();
    test_sessions_finish_after_shutdown();
    test_close_during_transact_backoff();
    test_no_stale_wakeup_after_shutdown();
    test_slot_given_before_shutdown();
    test_exited_threads_connections_are_reused();
    test_second_shutdown_waits_for_joins();
    test_two_shutdowns_then_close();
    test_close_while_shutdown_drains();
    test_close_not_held_by_housekeeper();
    test_lazy_open();
    puts("test_shutdown: ok");
    return 0;
}
