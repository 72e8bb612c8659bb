/* pthread_cancel of a program's thread while it is inside a dbscope call:
 * no dbscope call is a cancellation point, so the call finishes (or waits
 * out its own bound), the cancel acts at the thread's next cancellation
 * point, and the thread's exit gives its session back. Each case cancels
 * a thread of a pool of one (or two), then checks that the pool serves
 * the next session, that the connection came back with the leak reported
 * and recovered, and that nothing the cancelled thread wrote is visible.
 * A deadlock would hang: every join and acquire has a bound of seconds. */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "common.h"

#include <errno.h>
#include <semaphore.h>
#include <unistd.h>

static char url[1024];
static char tbl[64];

/* Generous: a bound against a hang, never a speed. */
enum { JOIN_LIMIT_S = 60, ACQUIRE_LIMIT_MS = 20000 };

static dbs_pool *pool_of(int size)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = size;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = ACQUIRE_LIMIT_MS;
    cfg.busy_timeout_ms = 60000; /* SQLite: the blocked write waits for the holder */
    cfg.log_events = 0;          /* the leaks below are on purpose */
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    return p;
}

/* Joins th, which must have been cancelled; fails the test if it has not
 * ended within the bound (a deadlock in the library). */
static void join_cancelled(pthread_t th, const char *what)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += JOIN_LIMIT_S;
    void *ret = NULL;
    int rc = pthread_timedjoin_np(th, &ret, &dl);
    if (rc != 0)
        CHECK_FAIL("%s: the cancelled thread did not end within %d s (deadlock)", what,
                   JOIN_LIMIT_S);
    if (ret != PTHREAD_CANCELED)
        CHECK_FAIL("%s: the thread was not cancelled", what);
}

/* Waits for sem, within the bound. */
static void sem_wait_bounded(sem_t *sem, const char *what)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += JOIN_LIMIT_S;
    while (sem_timedwait(sem, &dl) != 0)
        if (errno != EINTR)
            CHECK_FAIL("%s: the thread never got there (cancelled inside a call?)", what);
}

static int64_t v_of(dbs_pool *p, int id)
{
    dbs_session *s = open_ok(p);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id = $1", tbl);
    int64_t n = query_int(s, sql, (dbs_value[]){DBS_INT(id)}, 1);
    if (n == 1) {
        snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = $1", tbl);
        n = 100 + query_int(s, sql, (dbs_value[]){DBS_INT(id)}, 1);
    }
    dbs_session_close(s);
    return n; /* 0: no such row; 100 + v otherwise */
}

/* After a cancelled thread: its connection back, its session reported as
 * a leak once and recovered once, and the pool's connections serve the
 * next sessions (all of them at once: none was lost). */
static void check_after(dbs_pool *p, int size, uint64_t leaks0, const char *what)
{
    WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
    dbs_stats st = stats_of(p);
    if (st.in_use != 0)
        CHECK_FAIL("%s: %d connections still in use", what, st.in_use);
    CHECK_EQ(st.leaks, leaks0 + 1);
    CHECK_EQ(st.leaks_recovered, leaks0 + 1);
    CHECK_EQ(st.acquired, st.released);
    dbs_session *s[2] = {NULL, NULL};
    dbs_error err;
    for (int i = 0; i < size; i++) {
        s[i] = dbs_session_open(p, NULL, &err);
        if (!s[i])
            CHECK_FAIL("%s: the pool serves no session after the cancel: %s", what,
                       err.message);
        CHECK_EQ(query_int(s[i], "SELECT 1", NULL, 0), 1);
    }
    for (int i = 0; i < size; i++)
        dbs_session_close(s[i]);
}

/* ---- (1) cancelled while waiting for a connection ---- */

struct waiter {
    dbs_pool *p;
    atomic_int opened; /* 1: dbs_session_open returned a session */
};

static void *open_waits(void *v)
{
    struct waiter *w = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(w->p, NULL, &err);
    atomic_store(&w->opened, s ? 1 : -1);
    pthread_testcancel(); /* the thread's own cancellation point */
    CHECK_FAIL("the cancel did not act after dbs_session_open returned");
    return NULL;
}

static void test_cancel_acquire_wait(void)
{
    dbs_pool *p = pool_of(1);
    uint64_t leaks0 = stats_of(p).leaks;
    dbs_session *held = open_ok(p);
    struct waiter w = {.p = p};
    pthread_t th;
    pthread_create(&th, NULL, open_waits, &w);
    WAIT_UNTIL(stats_of(p).waiting == 1, 20000);
    CHECK_EQ(stats_of(p).waiting, 1);
    pthread_cancel(th);
    /* the cancel reaches the thread while it still waits */
    dbs__sleep_ms(100);
    dbs_session_close(held); /* handed to the waiter, which must be there */
    join_cancelled(th, "acquire wait");
    int opened = atomic_load(&w.opened);
    CHECK_EQ(opened, 1); /* it got the connection, then was cancelled */
    CHECK_EQ(stats_of(p).waiting, 0);
    check_after(p, 1, leaks0, "acquire wait");
    dbs_pool_close(p);
}

/* ---- (2) cancelled while a statement waits for a lock ---- */

struct blocked {
    dbs_pool *p;
    int id;
    sem_t started;
    atomic_int returned; /* 1: the UPDATE returned */
    atomic_llong result;
};

static void *update_blocks(void *v)
{
    struct blocked *b = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(b->p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE %s SET v = 2 WHERE id = $1", tbl);
    sem_post(&b->started);
    int64_t n = dbs_exec(s, sql, (dbs_value[]){DBS_INT(b->id)}, 1, &err);
    atomic_store(&b->result, (long long)n);
    atomic_store(&b->returned, 1);
    pthread_testcancel();
    CHECK_FAIL("the cancel did not act after dbs_exec returned");
    return NULL;
}

static void test_cancel_blocked_statement(void)
{
    dbs_pool *p = pool_of(2);
    uint64_t leaks0 = stats_of(p).leaks;
    struct blocked b = {.p = p, .id = 20};
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (20, 1)", tbl);
    run_sql(p, sql);
    /* the holder: its uncommitted write locks the row (SQLite: the
     * database) until it rolls back */
    dbs_session *holder = open_ok(p);
    snprintf(sql, sizeof sql, "UPDATE %s SET v = 3 WHERE id = 20", tbl);
    exec_ok(holder, sql);
    sem_init(&b.started, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, update_blocks, &b);
    sem_wait_bounded(&b.started, "blocked statement");
    /* Gives the UPDATE time to block on the lock. Whether the cancel comes
     * before it or during it, the statement must end whole. */
    dbs__sleep_ms(300);
    pthread_cancel(th);
    dbs__sleep_ms(200);
    int returned = atomic_load(&b.returned);
    CHECK_EQ(returned, 0); /* still blocked by the holder */
    dbs_error err;
    CHECK_OK(dbs_rollback(holder, &err), &err);
    dbs_session_close(holder);
    join_cancelled(th, "blocked statement");
    returned = atomic_load(&b.returned);
    CHECK_EQ(returned, 1);
    /* it ran to its end (or its backend's lock bound), never cut midway */
    long long n = atomic_load(&b.result);
    CHECK(n == 1 || n == DBS_ERETRYABLE);
    /* the cancelled thread's write was rolled back at its exit */
    CHECK_EQ(v_of(p, 20), 101);
    check_after(p, 2, leaks0, "blocked statement");
    sem_destroy(&b.started);
    dbs_pool_close(p);
}

/* ---- (3) cancelled inside dbs_transact's work ---- */

struct unit {
    dbs_pool *p;
    int id;
    bool self;   /* cancel itself before its statement, else wait to be */
    sem_t wrote;
    atomic_int returned;
    atomic_llong result;
};

static int work_then_wait(dbs_session *s, void *arg, dbs_error *err)
{
    struct unit *u = arg;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, 1)", tbl);
    if (u->self)
        pthread_cancel(pthread_self()); /* pending through the statement */
    int64_t n = dbs_exec(s, sql, (dbs_value[]){DBS_INT(u->id)}, 1, err);
    atomic_store(&u->result, (long long)n);
    atomic_store(&u->returned, 1);
    sem_post(&u->wrote);
    for (int i = 0; i < JOIN_LIMIT_S * 1000; i++)
        usleep(1000); /* the work's own cancellation point */
    return DBS_ESQL;  /* never cancelled: dbs_transact returns, and the test fails */
}

static void *transact_cancelled(void *v)
{
    struct unit *u = v;
    dbs_error err;
    dbs_transact(u->p, NULL, work_then_wait, u, &err);
    CHECK_FAIL("dbs_transact returned from a cancelled unit: %s", err.message);
    return NULL;
}

static void test_cancel_in_work(bool self)
{
    const char *what = self ? "work, cancel pending" : "work";
    dbs_pool *p = pool_of(1);
    uint64_t leaks0 = stats_of(p).leaks;
    struct unit u = {.p = p, .id = self ? 31 : 30, .self = self};
    sem_init(&u.wrote, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, transact_cancelled, &u);
    if (!self) {
        sem_wait_bounded(&u.wrote, what);
        pthread_cancel(th);
    }
    join_cancelled(th, what);
    int returned = atomic_load(&u.returned);
    long long inserted = atomic_load(&u.result);
    CHECK_EQ(returned, 1);
    CHECK_EQ(inserted, 1); /* the INSERT ran whole */
    CHECK_EQ(v_of(p, u.id), 0);            /* and was rolled back */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.retries, 0);
    check_after(p, 1, leaks0, what);
    sem_destroy(&u.wrote);
    dbs_pool_close(p);
}

/* A nested unit's work: the savepoint is open when the cancel acts, and
 * the thread's exit rolls back the whole transaction. */
static int nested_then_wait(dbs_session *s, void *arg, dbs_error *err)
{
    return dbs_session_transact(s, work_then_wait, arg, err);
}

static void *nested_cancelled(void *v)
{
    struct unit *u = v;
    dbs_error err;
    dbs_transact(u->p, NULL, nested_then_wait, u, &err);
    CHECK_FAIL("dbs_transact returned from a cancelled unit: %s", err.message);
    return NULL;
}

static void test_cancel_in_nested_work(void)
{
    dbs_pool *p = pool_of(1);
    uint64_t leaks0 = stats_of(p).leaks;
    struct unit u = {.p = p, .id = 32};
    sem_init(&u.wrote, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, nested_cancelled, &u);
    sem_wait_bounded(&u.wrote, "nested work");
    pthread_cancel(th);
    join_cancelled(th, "nested work");
    long long inserted = atomic_load(&u.result);
    CHECK_EQ(inserted, 1);
    CHECK_EQ(v_of(p, u.id), 0);
    check_after(p, 1, leaks0, "nested work");
    sem_destroy(&u.wrote);
    dbs_pool_close(p);
}

/* ---- (4) a cancel pending across whole calls ----
 * The thread cancels itself first, then runs checkouts and checkins of a
 * parked connection (which reach no cancellation point), a statement, a
 * commit, rows, and a unit: each finishes, and the cancel acts at the
 * thread's own cancellation point after the last. A call cancelled inside
 * would leave steps short, and its session open (a leak). */

struct pending {
    dbs_pool *p;
    int id;
    atomic_int steps;
};

static int insert_work(dbs_session *s, void *arg, dbs_error *err)
{
    struct pending *pc = arg;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, 1)", tbl);
    return dbs_exec(s, sql, (dbs_value[]){DBS_INT(pc->id + 1)}, 1, err) == 1 ? 0 : DBS_ESQL;
}

static void *calls_pending(void *v)
{
    struct pending *pc = v;
    pthread_cancel(pthread_self());
    dbs_error err;
    for (int i = 0; i < 3; i++) {
        dbs_session *s = dbs_session_open(pc->p, NULL, &err);
        if (!s)
            return NULL;
        dbs_session_close(s);
        atomic_fetch_add(&pc->steps, 1);
    }
    dbs_session *s = dbs_session_open(pc->p, NULL, &err);
    if (!s)
        return NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, 1)", tbl);
    if (dbs_exec(s, sql, (dbs_value[]){DBS_INT(pc->id)}, 1, &err) != 1 ||
        dbs_commit(s, &err) != DBS_OK)
        return NULL;
    atomic_fetch_add(&pc->steps, 1);
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = $1", tbl);
    dbs_rows *r = dbs_query(s, sql, (dbs_value[]){DBS_INT(pc->id)}, 1, &err);
    if (!r || dbs_rows_next(r, &err) != 1)
        return NULL;
    dbs_rows_close(r);
    dbs_session_close(s);
    atomic_fetch_add(&pc->steps, 1);
    if (dbs_transact(pc->p, NULL, insert_work, pc, &err) != DBS_OK)
        return NULL;
    atomic_fetch_add(&pc->steps, 1);
    /* the handle is handed out settled: on PostgreSQL and MariaDB the
     * reset the last release posted is read first (I/O) */
    s = dbs_session_open(pc->p, NULL, &err);
    if (!s || !dbs_session_native(s))
        return NULL;
    dbs_session_close(s);
    atomic_fetch_add(&pc->steps, 1);
    pthread_testcancel();
    atomic_store(&pc->steps, -1000); /* not cancelled after all */
    return NULL;
}

static void test_pending_calls(void)
{
    dbs_pool *p = pool_of(1);
    uint64_t leaks0 = stats_of(p).leaks;
    struct pending pc = {.p = p, .id = 40};
    pthread_t th;
    pthread_create(&th, NULL, calls_pending, &pc);
    join_cancelled(th, "pending calls");
    int steps = atomic_load(&pc.steps);
    CHECK_EQ(steps, 7);
    CHECK_EQ(v_of(p, pc.id), 101);
    CHECK_EQ(v_of(p, pc.id + 1), 101);
    WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.leaks, leaks0);
    CHECK_EQ(st.acquired, st.released);
    dbs_pool_close(p);
}

/* ---- (5) rows read with a cancel pending ----
 * A row already in hand (SQLite's first, which dbs_query read; every row
 * on the backends that hold a result in memory) costs no change of the
 * cancel state; a step that reads further defers first. On SQLite the
 * connection is fresh, its page cache cold: the steps past the first
 * rows read the file (pread, a cancellation point). Every row is read,
 * and the cancel acts after the calls. */

enum { N_ROWS = 400, PAD = 200 };
static char rows_tbl[64];

static void fill_rows(dbs_pool *p)
{
    char pad[PAD + 1];
    memset(pad, 'x', PAD);
    pad[PAD] = '\0';
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, pad) VALUES ($1, $2)", rows_tbl);
    dbs_session *s = open_ok(p);
    dbs_error err;
    for (int i = 1; i <= N_ROWS; i++)
        if (dbs_exec(s, sql, (dbs_value[]){DBS_INT(i), DBS_TEXT(pad)}, 2, &err) != 1)
            CHECK_FAIL("insert: %s", err.message);
    if (dbs_commit(s, &err) != DBS_OK)
        CHECK_FAIL("commit: %s", err.message);
    dbs_session_close(s);
}

static void *rows_pending(void *v)
{
    struct pending *pc = v;
    pthread_cancel(pthread_self());
    dbs_error err;
    dbs_session *s = dbs_session_open(pc->p, NULL, &err);
    if (!s)
        return NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT id, pad FROM %s ORDER BY id", rows_tbl);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (!r)
        return NULL;
    while (dbs_rows_next(r, &err) == 1)
        if (dbs_rows_int(r, 0) == atomic_load(&pc->steps) + 1)
            atomic_fetch_add(&pc->steps, 1);
    dbs_rows_close(r);
    /* closed half-way: the statement is reset with rows left */
    r = dbs_query(s, sql, NULL, 0, &err);
    if (!r || dbs_rows_next(r, &err) != 1 || dbs_rows_next(r, &err) != 1)
        return NULL;
    dbs_rows_close(r);
    dbs_session_close(s);
    atomic_fetch_add(&pc->steps, 1);
    pthread_testcancel();
    atomic_store(&pc->steps, -1000); /* not cancelled after all */
    return NULL;
}

static void test_pending_rows(void)
{
    dbs_pool *p = pool_of(1);
    fill_rows(p);
    dbs_pool_close(p);
    p = pool_of(1); /* a fresh connection: nothing of the table cached */
    struct pending pc = {.p = p};
    pthread_t th;
    pthread_create(&th, NULL, rows_pending, &pc);
    join_cancelled(th, "pending rows");
    int steps = atomic_load(&pc.steps);
    CHECK_EQ(steps, N_ROWS + 1);
    WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.leaks, 0);
    CHECK_EQ(st.acquired, st.released);
    dbs_pool_close(p);
}

/* ---- (6) on_event runs deferred ----
 * Checkout and checkin reach no cancellation point of their own, but the
 * program's on_event does (usleep): it runs with cancellation disabled
 * all the same, with a cancel pending; the cancel acts after the call. */

static pthread_t ev_thread;
static atomic_int ev_seen, ev_enabled;

static void on_ev(const dbs_event *ev, void *user)
{
    (void)ev;
    (void)user;
    if (!pthread_equal(pthread_self(), ev_thread))
        return; /* the housekeeper's */
    int old, unused;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    pthread_setcancelstate(old, &unused);
    atomic_fetch_add(&ev_seen, 1);
    if (old == PTHREAD_CANCEL_ENABLE)
        atomic_fetch_add(&ev_enabled, 1);
    usleep(1); /* a cancellation point of the program's */
}

static void *cycles_pending(void *v)
{
    struct pending *pc = v;
    pthread_cancel(pthread_self());
    dbs_error err;
    for (int i = 0; i < 3; i++) {
        dbs_session *s = dbs_session_open(pc->p, NULL, &err);
        if (!s)
            return NULL;
        atomic_fetch_add(&pc->steps, 1);
        dbs_session_close(s);
        atomic_fetch_add(&pc->steps, 1);
    }
    pthread_testcancel();
    atomic_store(&pc->steps, -1000);
    return NULL;
}

static void test_events_deferred(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = ACQUIRE_LIMIT_MS;
    cfg.on_event = on_ev;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    dbs_session_close(open_ok(p)); /* the connection made and parked */
    struct pending pc = {.p = p};
    atomic_store(&ev_seen, 0);
    atomic_store(&ev_enabled, 0);
    pthread_create(&ev_thread, NULL, cycles_pending, &pc);
    join_cancelled(ev_thread, "events");
    int steps = atomic_load(&pc.steps);
    CHECK_EQ(steps, 6);
    int seen = atomic_load(&ev_seen), enabled = atomic_load(&ev_enabled);
    CHECK_INT(seen, >=, 6); /* a checkout and a checkin each */
    CHECK_EQ(enabled, 0);
    WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
    CHECK_EQ(stats_of(p).leaks, 0);
    dbs_pool_close(p);
}

/* ---- (6) a cleanup handler that calls dbscope ----
 * A cancel or pthread_exit in the program's code that a call runs (a
 * unit's work, a nested unit's, dbs_pool_sessions' fn) unwinds through
 * dbscope's frames, and a cleanup handler pushed around the call runs
 * after they are gone. Its calls find no unit in progress: its
 * dbs_transact is a unit of its own that commits, on the connection the
 * unwound unit gave back (a pool of one), and what the unwound work
 * wrote is rolled back. Before, the thread still pointed at the unit's
 * unwound frame: the handler's dbs_transact ran as a savepoint of the
 * doomed transaction (reported DBS_OK, then rolled back at the thread's
 * exit) and its dbs_session_open waited for the connection the dead
 * unit still held. */

enum ending { BY_CANCEL, BY_EXIT };

struct unwound {
    dbs_pool *p;
    int id;             /* the unwound work's row; id + 1: the handler's */
    enum ending how;
    bool nested;        /* the work ends inside a nested unit */
    atomic_int handler_rc;   /* the handler's dbs_transact */
    atomic_int handler_open; /* 1: its dbs_session_open served, -1: refused */
    atomic_int handler_state; /* the cancel state the handler ran with */
};

/* Ends the calling thread from inside the program's code. */
static void end_thread(enum ending how)
{
    if (how == BY_EXIT)
        pthread_exit(NULL);
    pthread_cancel(pthread_self());
    pthread_testcancel();
    CHECK_FAIL("the thread's own cancel did not act");
}

static void join_ended(pthread_t th, enum ending how, const char *what)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += JOIN_LIMIT_S;
    void *ret = &ret;
    if (pthread_timedjoin_np(th, &ret, &dl) != 0)
        CHECK_FAIL("%s: the thread did not end within %d s (deadlock)", what, JOIN_LIMIT_S);
    if (ret != (how == BY_EXIT ? NULL : PTHREAD_CANCELED))
        CHECK_FAIL("%s: the thread did not end as it should", what);
}

static int insert_then_end(dbs_session *s, void *arg, dbs_error *err)
{
    struct unwound *c = arg;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, 1)", tbl);
    if (dbs_exec(s, sql, (dbs_value[]){DBS_INT(c->id)}, 1, err) != 1)
        CHECK_FAIL("insert: %s", err->message);
    end_thread(c->how);
    return DBS_ESQL;
}

static int nested_then_end(dbs_session *s, void *arg, dbs_error *err)
{
    return dbs_session_transact(s, insert_then_end, arg, err);
}

static void handler_calls(void *v)
{
    struct unwound *c = v;
    int state, unused;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
    pthread_setcancelstate(state, &unused);
    atomic_store(&c->handler_state, state);
    dbs_error err;
    struct pending pc = {.p = c->p, .id = c->id}; /* insert_work: id + 1 */
    int rc = dbs_transact(c->p, NULL, insert_work, &pc, &err);
    if (rc != DBS_OK)
        fprintf(stderr, "the handler's dbs_transact: %s\n", err.message);
    atomic_store(&c->handler_rc, rc);
    dbs_session *s = dbs_session_open(c->p, NULL, &err);
    if (!s)
        fprintf(stderr, "the handler's dbs_session_open: %s\n", err.message);
    atomic_store(&c->handler_open, s ? 1 : -1);
    dbs_session_close(s);
}

static void *transact_unwound(void *v)
{
    struct unwound *c = v;
    dbs_error err;
    pthread_cleanup_push(handler_calls, c);
    dbs_transact(c->p, NULL, c->nested ? nested_then_end : insert_then_end, c, &err);
    CHECK_FAIL("dbs_transact returned from an unwound unit: %s", err.message);
    pthread_cleanup_pop(0);
    return NULL;
}

static void test_handler_after_unit(enum ending how, bool nested, int id, const char *what)
{
    dbs_pool *p = pool_of(1);
    uint64_t leaks0 = stats_of(p).leaks;
    struct unwound c = {.p = p, .id = id, .how = how, .nested = nested};
    atomic_store(&c.handler_rc, 1);
    pthread_t th;
    pthread_create(&th, NULL, transact_unwound, &c);
    join_ended(th, how, what);
    int hrc = atomic_load(&c.handler_rc), hopen = atomic_load(&c.handler_open);
    CHECK_EQ(hrc, DBS_OK);
    CHECK_EQ(hopen, 1);
    CHECK_EQ(v_of(p, id), 0);       /* the unwound unit: rolled back */
    CHECK_EQ(v_of(p, id + 1), 101); /* the handler's: a unit of its own, committed */
    CHECK_EQ(stats_of(p).retries, 0);
    check_after(p, 1, leaks0, what); /* the unwound unit's session: one leak */
    dbs_pool_close(p);
}

/* A nested unit on the program's own session (dbs_session_transact):
 * the unwind undoes the savepoint's work, so a handler that goes on with
 * the session and commits commits only what came before the unit and
 * after it. Before, the savepoint stayed open and the handler's commit
 * committed the unwound work. */
struct own {
    struct unwound c;
    dbs_session *s;
    atomic_int commit_rc;
};

static void handler_commits(void *v)
{
    struct own *o = v;
    dbs_error err;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, 1)", tbl);
    int rc = dbs_exec(o->s, sql, (dbs_value[]){DBS_INT(o->c.id + 2)}, 1, &err) == 1
                 ? dbs_commit(o->s, &err)
                 : err.code;
    if (rc != DBS_OK)
        fprintf(stderr, "the handler's insert and commit: %s\n", err.message);
    atomic_store(&o->commit_rc, rc);
    dbs_session_close(o->s);
}

static void *session_unit_unwound(void *v)
{
    struct own *o = v;
    dbs_error err;
    o->s = open_ok(o->c.p);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, 1)", tbl);
    if (dbs_exec(o->s, sql, (dbs_value[]){DBS_INT(o->c.id + 1)}, 1, &err) != 1)
        CHECK_FAIL("insert: %s", err.message);
    pthread_cleanup_push(handler_commits, o);
    dbs_session_transact(o->s, insert_then_end, &o->c, &err);
    CHECK_FAIL("dbs_session_transact returned from an unwound unit: %s", err.message);
    pthread_cleanup_pop(0);
    return NULL;
}

static void test_handler_after_session_unit(enum ending how, int id, const char *what)
{
    dbs_pool *p = pool_of(1);
    uint64_t leaks0 = stats_of(p).leaks;
    struct own o = {.c = {.p = p, .id = id, .how = how}};
    atomic_store(&o.commit_rc, 1);
    pthread_t th;
    pthread_create(&th, NULL, session_unit_unwound, &o);
    join_ended(th, how, what);
    int crc = atomic_load(&o.commit_rc);
    CHECK_EQ(crc, DBS_OK);
    CHECK_EQ(v_of(p, id), 0);       /* the unwound nested unit: undone */
    CHECK_EQ(v_of(p, id + 1), 101); /* before it */
    CHECK_EQ(v_of(p, id + 2), 101); /* the handler's, after it */
    WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.leaks, leaks0); /* the handler closed it */
    CHECK_EQ(st.acquired, st.released);
    dbs_pool_close(p);
}

/* dbs_pool_sessions' fn runs deferred, but may still leave by
 * pthread_exit: the call's copy of the list and its reference on the
 * pool go (AddressSanitizer's leak check sees them otherwise), and the
 * handler runs with the cancel state the thread had. */
static void exits_in_fn(const dbs_session_info *si, void *user)
{
    (void)si;
    (void)user;
    pthread_exit(NULL);
}

static void count_fn(const dbs_session_info *si, void *user)
{
    (void)si;
    ++*(int *)user;
}

static void handler_lists(void *v)
{
    struct unwound *c = v;
    int state, unused;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
    pthread_setcancelstate(state, &unused);
    atomic_store(&c->handler_state, state);
    int n = 0;
    atomic_store(&c->handler_rc, dbs_pool_sessions(c->p, count_fn, &n) == n ? n : -1);
}

static void *sessions_fn_exits(void *v)
{
    struct unwound *c = v;
    pthread_cleanup_push(handler_lists, c);
    dbs_pool_sessions(c->p, exits_in_fn, NULL);
    CHECK_FAIL("dbs_pool_sessions returned past a pthread_exit in fn");
    pthread_cleanup_pop(0);
    return NULL;
}

static void test_handler_after_sessions_fn(void)
{
    dbs_pool *p = pool_of(1);
    dbs_session *held = open_ok(p); /* one to list */
    struct unwound c = {.p = p, .how = BY_EXIT};
    atomic_store(&c.handler_rc, -2);
    atomic_store(&c.handler_state, -1);
    pthread_t th;
    pthread_create(&th, NULL, sessions_fn_exits, &c);
    join_ended(th, BY_EXIT, "sessions fn");
    int hrc = atomic_load(&c.handler_rc), hstate = atomic_load(&c.handler_state);
    CHECK_EQ(hrc, 1);
    CHECK_EQ(hstate, PTHREAD_CANCEL_ENABLE); /* the thread's own, given back */
    dbs_session_close(held);
    dbs_pool_close(p);
}

/* A call returns with the caller's cancel state as it found it. */
static void test_state_kept(void)
{
    dbs_pool *p = pool_of(1);
    int old;
    for (int st = PTHREAD_CANCEL_ENABLE; st <= PTHREAD_CANCEL_DISABLE; st++) {
        pthread_setcancelstate(st, &old);
        dbs_session *s = open_ok(p);
        int now;
        pthread_setcancelstate(st, &now);
        CHECK_EQ(now, st);
        CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
        pthread_setcancelstate(st, &now);
        CHECK_EQ(now, st);
        dbs_session_close(s);
        pthread_setcancelstate(st, &now);
        CHECK_EQ(now, st);
    }
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
    dbs_pool_close(p);
}

int main(int argc, char **argv)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_pool *pool = open_pool("cancel", &cfg);
    snprintf(url, sizeof url, "%s", cfg.url);
    snprintf(tbl, sizeof tbl, "%s", table_name("cancel"));
    char sql[160];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
             tbl);
    run_sql(pool, sql);
    snprintf(rows_tbl, sizeof rows_tbl, "%s", table_name("cancel_rows"));
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", rows_tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql,
             "CREATE TABLE %s (id INTEGER PRIMARY KEY, pad VARCHAR(%d) NOT NULL)", rows_tbl,
             PAD);
    run_sql(pool, sql);

    /* one case by name (test_cancel acquire_wait), else all */
    const char *only = argc > 1 ? argv[1] : NULL;
#define CASE(name, call)                                                       \
    if (!only || strcmp(only, name) == 0)                                      \
        call;
    CASE("state_kept", test_state_kept());
    CASE("acquire_wait", test_cancel_acquire_wait());
    CASE("blocked_statement", test_cancel_blocked_statement());
    CASE("in_work", test_cancel_in_work(false));
    CASE("in_work_pending", test_cancel_in_work(true));
    CASE("in_nested_work", test_cancel_in_nested_work());
    CASE("pending_calls", test_pending_calls());
    CASE("pending_rows", test_pending_rows());
    CASE("events_deferred", test_events_deferred());
    CASE("handler_after_unit", test_handler_after_unit(BY_CANCEL, false, 50, "handler after unit"));
    CASE("handler_after_unit_exit",
         test_handler_after_unit(BY_EXIT, false, 53, "handler after unit, pthread_exit"));
    CASE("handler_after_nested_unit",
         test_handler_after_unit(BY_CANCEL, true, 56, "handler after nested unit"));
    CASE("handler_after_session_unit",
         test_handler_after_session_unit(BY_CANCEL, 60, "handler after session's unit"));
    CASE("handler_after_session_unit_exit",
         test_handler_after_session_unit(BY_EXIT, 64, "handler after session's unit, exit"));
    CASE("handler_after_sessions_fn", test_handler_after_sessions_fn());

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "DROP TABLE %s", rows_tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    puts("test_cancel: ok");
    return 0;
}
