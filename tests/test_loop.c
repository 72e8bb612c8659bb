/* The event-loop API (dbs_loop, dbs_unit): units of work driven by a
 * program's own epoll loop, on SQLite (worker threads) and PostgreSQL
 * (the loop's own thread, pipelined). Every wait below is the loop's
 * descriptor and deadline exactly as a program uses them; a unit that
 * never completes is a hang that CTest's timeout reports. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

static bool is_pg;
static bool is_sqlite;
static bool is_mysql;
static char tbl[64];

typedef struct res {
    int calls;
    int rc;
    int attempts;
    int64_t val;      /* the first column of statement 0's first row */
    int64_t affected; /* statement 0's */
    char msg[512];
    char sqlstate[6];
    int seq; /* completion order, across units */
} res;

static int done_seq;

/* A unit's outcome, with its message when it is not the one expected. */
#define CHECK_RC(r, want)                                                      \
    do {                                                                       \
        if ((r).rc != (want))                                                  \
            CHECK_FAIL("unit: rc %d, want %d (attempts %d): %s", (r).rc,      \
                       (want), (r).attempts, (r).msg);                         \
    } while (0)

static void on_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    res *r = arg;
    r->calls++;
    r->rc = rc;
    r->seq = ++done_seq;
    CHECK(err != NULL);
    CHECK_EQ(err->code, rc);
    snprintf(r->msg, sizeof r->msg, "%s", err->message);
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", err->sqlstate);
    r->attempts = dbs_unit_attempts(u);
    r->val = -1;
    r->affected = dbs_unit_affected(u, 0);
    dbs_rows *rows = dbs_unit_rows(u, 0);
    if (rc == DBS_OK && rows) {
        dbs_error e;
        if (dbs_rows_next(rows, &e) == 1)
            r->val = dbs_rows_int(rows, 0);
    }
}

/* One pass of a program's loop: wait on the loop's descriptor for at most
 * its deadline, then let it work. */
static int step(dbs_loop *l, int ep)
{
    struct epoll_event ev;
    int t = dbs_loop_timeout_ms(l);
    int n = epoll_wait(ep, &ev, 1, t);
    CHECK(n >= 0 || errno == EINTR);
    int k = dbs_loop_run(l);
    CHECK(k >= 0);
    return k;
}

static int watch(dbs_loop *l)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, dbs_loop_fd(l), &ev), 0);
    return ep;
}

/* Runs l until every submitted unit completed. */
static void drain(dbs_loop *l)
{
    int ep = watch(l);
    while (dbs_loop_pending(l) > 0)
        step(l, ep);
    close(ep);
}

/* Runs l until the pool has every connection back: a connection goes
 * back once the reset that follows its last unit was answered, which the
 * loop reads when it runs. */
static void settle(dbs_loop *l, dbs_pool *p)
{
    int ep = watch(l);
    while (stats_of(p).in_use > 0)
        step(l, ep);
    close(ep);
}

static dbs_unit *unit1(dbs_loop *l, unsigned flags, const char *sql)
{
    dbs_error err;
    dbs_unit *u = dbs_unit_new(l, NULL, flags, &err);
    if (!u)
        CHECK_FAIL("dbs_unit_new: %s", err.message);
    CHECK_OK(dbs_unit_add(u, sql, NULL, 0, &err), &err);
    return u;
}

static void submit(dbs_unit *u, res *r)
{
    dbs_error err;
    memset(r, 0, sizeof *r);
    int rc = dbs_unit_submit(u, on_done, r, &err);
    if (rc != DBS_OK)
        CHECK_FAIL("dbs_unit_submit: %d %s", rc, err.message);
}

static dbs_pool *pool_of(int size, void (*tune)(dbs_config *))
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = size;
    cfg.max_overflow = 0;
    if (tune)
        tune(&cfg);
    return open_pool("loop", &cfg);
}

/* A statement that runs until cancelled (or for 30 s). */
static const char *long_sql(void)
{
    if (is_mysql)
        return "SELECT SLEEP(30)";
    return is_pg ? "SELECT pg_sleep(30)"
                 : "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                   "WHERE x < 2000000000) SELECT count(*) FROM c";
}

/* ---- the basic unit: several statements, parameters, rows, affected ---- */

static void test_basic(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_context ctx = {.request_id = "req-1", .user_id = "u1", .tenant_id = NULL};
    dbs_unit *u = dbs_unit_new(l, &ctx, 0, &err);
    CHECK(u != NULL);
    CHECK_STR(dbs_unit_context(u)->request_id, "req-1");
    char sql[256], text[32];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, $2)", tbl);
    snprintf(text, sizeof text, "seven");
    dbs_value v[2] = {DBS_INT(7), DBS_TEXT(text)};
    CHECK_EQ(dbs_unit_add(u, sql, v, 2, &err), 0);
    memset(text, 'x', 5); /* the unit copied it */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE v = 'seven'", tbl);
    CHECK_EQ(dbs_unit_add(u, sql, NULL, 0, &err), 1);
    res r;
    submit(u, &r);
    CHECK_EQ(dbs_loop_pending(l), 1);
    CHECK_EQ(r.calls, 0); /* never from inside submit */
    drain(l);
    CHECK_EQ(r.calls, 1);
    if (r.rc != DBS_OK)
        CHECK_FAIL("basic unit: %d %s", r.rc, r.msg);
    CHECK_EQ(r.affected, 1);
    CHECK_EQ(r.attempts, 1);

    /* the rows of a later statement */
    u = unit1(l, 0, "SELECT 41 + 1");
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 42);

    /* a failing statement: the unit's error, nothing committed; counted in
     * the pool's error table on every backend, as a session's is */
    uint64_t sql_errors = dbs_pool_errors(p, DBS_ESQL, NULL);
    u = dbs_unit_new(l, NULL, 0, &err);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (8, 'eight')", tbl);
    CHECK_EQ(dbs_unit_add(u, sql, NULL, 0, &err), 0);
    CHECK_EQ(dbs_unit_add(u, "SELECT * FROM no_such_table_here", NULL, 0, &err), 1);
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_ESQL);
    CHECK_EQ(r.attempts, 1);
    CHECK_EQ(dbs_pool_errors(p, DBS_ESQL, NULL), sql_errors + 1);
    CHECK_EQ(dbs_pool_errors(p, DBS_ESQL, r.sqlstate), 1);
    settle(l, p);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_session *s = open_ok(p);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id = 8", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0);
    dbs_session_close(s);
    dbs_loop_close(l);
    CHECK_EQ(stats_of(p).in_use, 0);
}

/* ---- misuse is a status ---- */

static void *run_elsewhere(void *arg)
{
    return (void *)(intptr_t)dbs_loop_run(arg);
}

/* A loop whose owner exited, reached from a thread started after: glibc
 * gives that thread the dead one's pthread_t, which the owner check took
 * for the owner's. */
struct dead_loop {
    dbs_pool *p;
    pthread_t id;
    dbs_loop *l;
};

static void *open_loop_and_exit(void *v)
{
    struct dead_loop *d = v;
    dbs_error err;
    d->id = pthread_self();
    d->l = dbs_loop_open(d->p, NULL, &err);
    if (!d->l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    return NULL; /* leaks it, on purpose */
}

static void *use_dead_loop(void *v)
{
    struct dead_loop *d = v;
    dbs_error err;
    if (!pthread_equal(d->id, pthread_self()))
        fprintf(stderr, "dead_loop_owner: this thread's pthread_t is not the dead one's; "
                        "the test proves less\n");
    CHECK_EQ(dbs_loop_run(d->l), DBS_EMISUSE);
    CHECK_EQ(dbs_loop_pending(d->l), DBS_EMISUSE);
    CHECK(dbs_unit_new(d->l, NULL, 0, &err) == NULL);
    CHECK_EQ(err.code, DBS_EMISUSE);
    return NULL;
}

/* Run last, on a pool of its own. The owner's exit closed the loop, whose
 * memory its pool keeps until dbs_pool_close, so that the calls above are
 * refused rather than reading freed memory. */
static struct dead_loop dead_loop;

static void test_dead_loop_owner(void)
{
    dead_loop.p = pool_of(1, NULL);
    pthread_t th;
    pthread_create(&th, NULL, open_loop_and_exit, &dead_loop);
    pthread_join(th, NULL);
    pthread_create(&th, NULL, use_dead_loop, &dead_loop);
    pthread_join(th, NULL);
    dbs_pool_close(dead_loop.p); /* its memory stays, with the loop */
}

static void test_misuse(dbs_pool *p)
{
    dbs_error err;
    dbs_loop_config cfg;
    dbs_loop_config_init(&cfg);
    cfg.pipeline_depth = 0;
    CHECK(dbs_loop_open(p, &cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "pipeline_depth");
    CHECK(dbs_loop_open(NULL, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_EMISUSE);

    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK_EQ(dbs_unit_add(u, NULL, NULL, 0, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_unit_submit(u, on_done, NULL, &err), DBS_EMISUSE); /* no statement: freed */
    CHECK_CONTAINS(err.message, "no statement");
    CHECK(dbs_unit_new(l, NULL, 0x80, &err) == NULL);
    CHECK_EQ(err.code, DBS_EMISUSE);
    u = unit1(l, 0, "SELECT 1");
    CHECK_EQ(dbs_unit_set_timeout(u, 0), DBS_EMISUSE);
    dbs_unit_discard(u);
    pthread_t th;
    void *rv;
    pthread_create(&th, NULL, run_elsewhere, l);
    pthread_join(th, &rv);
    CHECK_EQ((int)(intptr_t)rv, DBS_EMISUSE);
    CHECK_EQ(dbs_loop_timeout_ms(l), -1); /* nothing to wait for */
    dbs_loop_close(l);
    dbs_loop_close(NULL);
}

/* A unit built but not submitted when its loop closes is still the
 * program's (dbs_unit_new): every call on it is refused, nothing touches
 * the closed loop, and dbs_unit_discard frees it. */
static void test_unit_outlives_loop(dbs_pool *p)
{
    dbs_error err;
    for (int round = 0; round < 2; round++) {
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        CHECK(l != NULL);
        dbs_unit *u = unit1(l, 0, "SELECT 1");
        dbs_unit *v = unit1(l, 0, "SELECT 2");
        dbs_loop_close(l);
        /* what a later loop of this thread might reuse the memory for */
        dbs_loop *l2 = dbs_loop_open(p, NULL, &err);
        CHECK(l2 != NULL);
        CHECK_EQ(dbs_unit_add(u, "SELECT 3", NULL, 0, &err), DBS_EMISUSE);
        CHECK_EQ(dbs_unit_set_timeout(u, 1000), DBS_EMISUSE);
        CHECK_EQ(dbs_unit_set_after(u, 1), DBS_EMISUSE);
        CHECK_EQ(dbs_unit_set_tx_options(u, NULL, &err), DBS_EMISUSE);
        res r = {0};
        CHECK_EQ(dbs_unit_submit(u, on_done, &r, &err), DBS_EMISUSE);
        CHECK_CONTAINS(err.message, "closed");
        CHECK_EQ(dbs_loop_pending(l2), 0);
        dbs_loop_close(l2);
        CHECK_EQ(r.calls, 0);
        /* the last unit of the closed loop let go of frees what was left */
        if (round == 0) {
            dbs_unit_discard(u);
            dbs_unit_discard(v);
        } else {
            dbs_unit_discard(v);
            dbs_unit_discard(u);
        }
    }
}

/* Options the backend refuses are refused by dbs_unit_set_tx_options, as
 * the header says, not found only when the unit has its connection (after
 * a wait, or a failed connect that is retried as transient). */
static void test_tx_refusals(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    dbs_tx_options bad[4];
    unsigned flags[4] = {0, 0, 0, 0};
    int n = 0;
    /* DEFERRABLE without SERIALIZABLE READ ONLY has no effect anywhere */
    bad[n++] = (dbs_tx_options){.isolation = DBS_ISOLATION_SERIALIZABLE, .deferrable = 1};
    if (is_sqlite) {
        bad[n++] = (dbs_tx_options){.isolation = DBS_ISOLATION_READ_COMMITTED};
        bad[n++] = (dbs_tx_options){.immediate = 1, .read_only = 1};
        flags[n] = DBS_UNIT_RO;
        bad[n++] = (dbs_tx_options){.immediate = 1};
    } else {
        bad[n++] = (dbs_tx_options){.immediate = 1};
    }
    for (int i = 0; i < n; i++) {
        dbs_unit *u = dbs_unit_new(l, NULL, flags[i], &err);
        CHECK(u != NULL);
        CHECK_EQ(dbs_unit_set_tx_options(u, &bad[i], &err), DBS_ECONFIG);
        CHECK_EQ(err.code, DBS_ECONFIG);
        dbs_unit_discard(u);
    }
    dbs_loop_close(l);
}

/* ---- queue_max + 1 ---- */

static void test_queue_max(dbs_pool *p)
{
    dbs_error err;
    dbs_loop_config cfg;
    dbs_loop_config_init(&cfg);
    cfg.queue_max = 3;
    dbs_loop *l = dbs_loop_open(p, &cfg, &err);
    CHECK(l != NULL);
    res r[4];
    for (int i = 0; i < 3; i++)
        submit(unit1(l, 0, "SELECT 1"), &r[i]);
    dbs_unit *u = unit1(l, 0, "SELECT 1");
    memset(&r[3], 0, sizeof r[3]);
    CHECK_EQ(dbs_unit_submit(u, on_done, &r[3], &err), DBS_EBUSY);
    CHECK_CONTAINS(err.message, "queue_max");
    drain(l);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(r[i].calls, 1);
        CHECK_RC(r[i], DBS_OK);
    }
    CHECK_EQ(r[3].calls, 0); /* refused: its callback never runs */
    /* room again */
    submit(unit1(l, 0, "SELECT 1"), &r[3]);
    drain(l);
    CHECK_RC(r[3], DBS_OK);
    dbs_loop_close(l);
}

/* ---- cancel while waiting, cancel in flight ---- */

static void test_cancel(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    int ep = watch(l);
    /* the pool's only connection is held: the unit waits */
    dbs_session *s = open_ok(p);
    res r;
    dbs_unit *u = unit1(l, 0, "SELECT 1");
    submit(u, &r);
    for (int i = 0; i < 3; i++)
        dbs_loop_run(l);
    CHECK_EQ(r.calls, 0);
    dbs_unit_cancel(u);
    CHECK_EQ(r.calls, 0); /* at the next dbs_loop_run */
    /* a worker waiting for the connection gets it, and does not run it */
    dbs_session_close(s);
    while (r.calls == 0)
        step(l, ep);
    CHECK_RC(r, DBS_ECANCELED);

    /* in flight: cancelled on the server; the connection lives on */
    u = unit1(l, 0, long_sql());
    submit(u, &r);
    if (is_pg) {
        /* asked on a pool of its own: p's one connection is the unit's */
        dbs_pool *q = pool_of(1, NULL);
        s = open_ok(q);
        /* wait until the server runs it (a fact the server reports) */
        for (int i = 0; i < 2000; i++) {
            dbs_loop_run(l);
            int64_t n = query_int(s, "SELECT count(*) FROM pg_stat_activity WHERE query = "
                                     "'SELECT pg_sleep(30)' AND state = 'active'", NULL, 0);
            if (n > 0)
                break;
            dbs__sleep_ms(5);
        }
        dbs_session_close(s);
        dbs_pool_close(q);
    } else {
        for (int i = 0; i < 20; i++) {
            dbs_loop_run(l);
            dbs__sleep_ms(5);
        }
    }
    CHECK_EQ(r.calls, 0);
    uint64_t cancels = dbs_pool_errors(p, DBS_ECANCELED, NULL);
    dbs_unit_cancel(u);
    while (r.calls == 0)
        step(l, ep);
    CHECK_RC(r, DBS_ECANCELED);
    if (is_pg) {
        /* the statement the server cancelled counts as a session's would,
         * under its code's name (error_class is never code_N for a code
         * the header has) */
        CHECK_EQ(dbs_pool_errors(p, DBS_ECANCELED, NULL), cancels + 1);
        static char text[262144];
        CHECK_INT(dbs_pool_metrics(p, text, sizeof text), <, (int)sizeof text);
        CHECK_CONTAINS(text, "error_class=\"canceled\"");
        CHECK(strstr(text, "error_class=\"code_") == NULL);
    }
    /* the pool still serves, the same connection or another */
    submit(unit1(l, 0, "SELECT 5"), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 5);
    close(ep);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
}

/* ---- close with units pending ---- */

static void test_close_pending(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    res r[5];
    submit(unit1(l, 0, long_sql()), &r[0]);
    for (int i = 1; i < 5; i++)
        submit(unit1(l, 0, "SELECT 1"), &r[i]);
    for (int i = 0; i < 10; i++) {
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    dbs_loop_close(l); /* callbacks run inside */
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(r[i].calls, 1);
        if (r[i].rc != DBS_OK && !(is_pg && r[i].rc == DBS_ECOMMIT_UNKNOWN))
            CHECK_RC(r[i], DBS_ECANCELED);
    }
    /* PostgreSQL pipelines a unit's COMMIT with its statements: one in
     * flight may have committed (the cancel request can come late) */
    if (!(is_pg && r[0].rc == DBS_ECOMMIT_UNKNOWN))
        CHECK_RC(r[0], DBS_ECANCELED);
    /* the connection that ran it is discarded or back; blocking users go on */
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 3", NULL, 0), 3);
    dbs_session_close(s);
}

/* Closing the loop while units commit: a unit reported DBS_ECANCELED must
 * not have committed (a program that retries it would write twice), and
 * one reported DBS_OK must have. Large rows keep the COMMITs long enough
 * to be caught; whether a close lands inside one is up to timing, so this
 * checks the promise whenever it does. */
static void test_close_committing(dbs_pool *p)
{
    enum { N = 48, ROW = 60000 };
    static char big[ROW + 1];
    memset(big, 'x', ROW);
    dbs_error err;
    int caught = 0;
    for (int round = 0; round < 3; round++) {
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        CHECK(l != NULL);
        res r[N];
        char sql[200];
        snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, $2)", tbl);
        for (int i = 0; i < N; i++) {
            dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
            CHECK(u != NULL);
            dbs_value v[2] = {DBS_INT(1000 + round * N + i), DBS_TEXT(big)};
            CHECK_OK(dbs_unit_add(u, sql, v, 2, &err), &err);
            submit(u, &r[i]);
        }
        int64_t t0 = dbs__now_ns();
        while (dbs__now_ns() - t0 < (int64_t)(20 + 40 * round) * 1000000) {
            dbs_loop_run(l);
            dbs__sleep_ms(1);
        }
        dbs_loop_close(l);
        WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
        dbs_session *s = open_ok(p);
        for (int i = 0; i < N; i++) {
            CHECK_EQ(r[i].calls, 1);
            char q[200];
            snprintf(q, sizeof q, "SELECT count(*) FROM %s WHERE id = $1", tbl);
            dbs_value id = DBS_INT(1000 + round * N + i);
            int64_t rows = query_int(s, q, &id, 1);
            if (r[i].rc == DBS_ECANCELED && rows != 0)
                CHECK_FAIL("unit %d: reported cancelled, but it committed (attempts %d: %s)", i, r[i].attempts, r[i].msg);
            if (r[i].rc == DBS_OK && rows != 1)
                CHECK_FAIL("unit %d: reported committed, but its row is missing", i);
            if (r[i].rc == DBS_ECOMMIT_UNKNOWN)
                caught++;
        }
        dbs_session_close(s);
    }
    fprintf(stderr, "  close while committing: %d units reported DBS_ECOMMIT_UNKNOWN\n",
            caught);
}

/* A unit cancelled while it waits for a connection that a blocking session
 * holds ends at once (DBS_ECANCELED at the next dbs_loop_run), not when
 * the wait would have ended (acquire_timeout_ms, 30 s by default). */
static void test_cancel_waiting(void)
{
    dbs_pool *p = pool_of(1, NULL);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    res r;
    dbs_unit *u = unit1(l, 0, "SELECT 2");
    submit(u, &r);
    for (int i = 0; i < 10; i++) { /* on its way to the pool's queue */
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    CHECK_EQ(r.calls, 0);
    dbs_unit_cancel(u);
    int ep = watch(l);
    while (r.calls == 0)
        step(l, ep);
    close(ep);
    CHECK_RC(r, DBS_ECANCELED);
    CHECK_EQ(stats_of(p).in_use, 1); /* the session still holds it */
    dbs_session_close(s);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    dbs_pool_close(p);
}

/* ---- the statement bound, and a unit's own timeout ---- */

static void stmt_bound(dbs_config *c)
{
    c->statement_timeout_ms = 300;
}

static void test_bounds(void)
{
    dbs_pool *p = pool_of(1, stmt_bound);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    res r, r2;
    /* a statement far past the bound */
    submit(unit1(l, 0, long_sql()), &r);
    drain(l);
    CHECK_RC(r, DBS_ESTMT_TIMEOUT);
    CHECK_EQ(r.attempts, 1);
    submit(unit1(l, 0, "SELECT 9"), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    dbs_loop_close(l);
    dbs_pool_close(p);

    /* The unit's own timeout in flight: the pool's one connection is made
     * first, so the unit has it at once. A thread descheduled for the
     * whole bound before that ends the unit while it waits (DBS_ETIMEOUT,
     * as promised), which shows nothing here: again. */
    p = pool_of(1, NULL);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    dbs_session_close(s);
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.pipeline_depth = 1; /* the second unit below waits for the connection */
    l = dbs_loop_open(p, &lc, &err);
    CHECK(l != NULL);
    for (int tries = 0;; tries++) {
        dbs_unit *u = unit1(l, 0, long_sql());
        CHECK_EQ(dbs_unit_set_timeout(u, 300), DBS_OK);
        submit(u, &r);
        drain(l);
        if (r.rc != DBS_ETIMEOUT || tries == 9)
            break;
    }
    CHECK_RC(r, DBS_ESTMT_TIMEOUT);

    /* ... and while it waits: a unit without a timeout holds the one
     * connection until it is cancelled, so the second never has it, however
     * late its deadline is seen (a deadline of the first's could pass
     * before the second's if this thread stalled between the submits) */
    int ep = watch(l);
    dbs_unit *hold = unit1(l, 0, long_sql());
    submit(hold, &r);
    dbs_unit *u = unit1(l, 0, "SELECT 1");
    CHECK_EQ(dbs_unit_set_timeout(u, 100), DBS_OK);
    submit(u, &r2);
    while (r2.calls == 0)
        step(l, ep);
    CHECK_RC(r2, DBS_ETIMEOUT);
    CHECK_EQ(r.calls, 0);
    dbs_unit_cancel(hold);
    while (r.calls == 0)
        step(l, ep);
    close(ep);
    /* PostgreSQL's COMMIT goes out with the statement; and a cancel
     * request that reaches the backend before the flight does is ignored
     * by the server, so the unit may also run to its end and commit
     * (DBS_OK, as dbs_unit_cancel allows) */
    if (!(is_pg && (r.rc == DBS_ECOMMIT_UNKNOWN || r.rc == DBS_OK)))
        CHECK_RC(r, DBS_ECANCELED);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);

    /* The same with the loop's defaults (pipelining) and one worker
     * thread: the short unit is never held behind the long one past its
     * own timeout. It runs elsewhere (DBS_OK), ends waiting (DBS_ETIMEOUT:
     * it never had a connection) or, on PostgreSQL, on a connection of its
     * own whose answer was not read by its deadline (DBS_ESTMT_TIMEOUT):
     * either way while the long one, which has no timeout, still runs. */
    p = pool_of(2, NULL);
    dbs_loop_config_init(&lc);
    lc.workers = 1;
    l = dbs_loop_open(p, &lc, &err);
    CHECK(l != NULL);
    ep = watch(l);
    hold = unit1(l, 0, long_sql());
    submit(hold, &r);
    u = unit1(l, 0, "SELECT 1");
    CHECK_EQ(dbs_unit_set_timeout(u, 200), DBS_OK);
    submit(u, &r2);
    while (r2.calls == 0)
        step(l, ep);
    if (r2.rc != DBS_OK && !(is_pg && r2.rc == DBS_ESTMT_TIMEOUT))
        CHECK_RC(r2, DBS_ETIMEOUT);
    CHECK_EQ(r.calls, 0);
    dbs_unit_cancel(hold);
    while (r.calls == 0)
        step(l, ep);
    close(ep);
    if (!(is_pg && r.rc == DBS_ECOMMIT_UNKNOWN))
        CHECK_RC(r, DBS_ECANCELED);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    dbs_pool_close(p);
}

/* ---- the acquire bound: a unit that cannot get a connection ---- */

static void short_acquire(dbs_config *c)
{
    c->acquire_timeout_ms = 200;
}

static void test_acquire_bound(void)
{
    dbs_pool *p = pool_of(1, short_acquire);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    dbs_session *s = open_ok(p); /* the only connection, held throughout */
    res r;
    submit(unit1(l, 0, "SELECT 1"), &r);
    drain(l);
    CHECK_RC(r, DBS_ETIMEOUT);
    CHECK(stats_of(p).timeouts >= 1);
    /* a failed acquire, counted as a session's would be */
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, ""), 1);
    dbs_session_close(s);
    submit(unit1(l, 0, "SELECT 1"), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* ---- the site that made a unit: what names it in reports ---- */

/* A unit is made by a line of the program: the reports about it (an
 * acquire that timed out, and on the worker backends the worker's
 * session in dbs_pool_sessions and its leak and slow reports) name that
 * line, as they name a session's dbs_session_open, not the library's. */
static pthread_mutex_t site_mu = PTHREAD_MUTEX_INITIALIZER;
static char site_file[256], site_func[64];
static int site_line, site_timeouts;

static void site_event(const dbs_event *ev, void *arg)
{
    (void)arg;
    if (ev->kind != DBS_EVENT_TIMEOUT)
        return;
    pthread_mutex_lock(&site_mu);
    site_timeouts++;
    snprintf(site_file, sizeof site_file, "%s", ev->file ? ev->file : "(null)");
    snprintf(site_func, sizeof site_func, "%s", ev->func ? ev->func : "(null)");
    site_line = ev->line;
    pthread_mutex_unlock(&site_mu);
}

static void site_cfg(dbs_config *c)
{
    c->acquire_timeout_ms = 200;
    c->on_event = site_event;
}

struct site_seen {
    int line, found;
    char other[300];
};

static void site_session(const dbs_session_info *in, void *arg)
{
    struct site_seen *w = arg;
    if (in->file && strcmp(in->file, __FILE__) == 0 && in->line == w->line && in->func &&
        strcmp(in->func, "test_site") == 0 && in->ctx.request_id &&
        strcmp(in->ctx.request_id, "req-site") == 0)
        w->found++;
    else
        snprintf(w->other, sizeof w->other, "%s:%d (%s)", in->file ? in->file : "(null)",
                 in->line, in->func ? in->func : "(null)");
}

static void test_site(void)
{
    dbs_pool *p = pool_of(1, site_cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    dbs_context ctx = {.request_id = "req-site"};

    /* an acquire that timed out names the unit's line */
    dbs_session *s = open_ok(p);
    int line = __LINE__ + 1;
    dbs_unit *u = dbs_unit_new(l, &ctx, 0, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
    res r;
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_ETIMEOUT);
    dbs_session_close(s);
    pthread_mutex_lock(&site_mu);
    CHECK(site_timeouts >= 1);
    CHECK_STR(site_file, __FILE__);
    CHECK_EQ(site_line, line);
    CHECK_STR(site_func, "test_site");
    pthread_mutex_unlock(&site_mu);

    /* the worker's session is listed at the unit's line (PostgreSQL runs
     * a unit without a session: nothing to list) */
    if (!is_pg) {
        struct site_seen w = {.line = __LINE__ + 1};
        u = dbs_unit_new(l, &ctx, 0, &err);
        CHECK(u != NULL);
        CHECK_OK(dbs_unit_add(u, long_sql(), NULL, 0, &err), &err);
        submit(u, &r);
        int ep = watch(l);
        for (int waited = 0; w.found == 0 && waited < 30000; waited += 10) {
            dbs_loop_run(l);
            dbs_pool_sessions(p, site_session, &w);
            if (w.found == 0)
                dbs__sleep_ms(10);
        }
        if (w.found != 1)
            CHECK_FAIL("the unit's session is listed at %s, not %s:%d (test_site)", w.other,
                       __FILE__, w.line);
        dbs_unit_cancel(u);
        while (r.calls == 0)
            step(l, ep);
        close(ep);
        CHECK_RC(r, DBS_ECANCELED);
    }
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* ---- the pool closed under an open loop ---- */

static void test_pool_closed(void)
{
    dbs_pool *p = pool_of(1, NULL);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    int ep = watch(l);
    dbs_session *s = open_ok(p);
    res r[3];
    for (int i = 0; i < 3; i++)
        submit(unit1(l, 0, "SELECT 1"), &r[i]);
    for (int i = 0; i < 5; i++)
        dbs_loop_run(l);
    dbs_session_close(s);
    dbs_pool_close(p); /* the loop keeps the pool's memory until it closes */
    while (dbs_loop_pending(l) > 0)
        step(l, ep);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(r[i].calls, 1);
        CHECK(r[i].rc == DBS_ECLOSED || r[i].rc == DBS_OK);
    }
    dbs_unit *u = unit1(l, 0, "SELECT 1");
    CHECK_EQ(dbs_unit_submit(u, on_done, &r[0], &err), DBS_ECLOSED);
    close(ep);
    dbs_loop_close(l);
}

/* ---- retry of a real transient failure ---- */

/* PostgreSQL: a REPEATABLE READ unit whose row another session updates
 * after the unit's snapshot fails 40001 and runs again. The order is
 * made by a lock, not by time: the other session holds an advisory lock
 * that the unit waits for after its first statement, updates once the
 * unit is seen waiting, and only then lets go. */
typedef struct updater {
    dbs_pool *p;
    atomic_int done;
    atomic_int locked;
} updater;

static void *update_during_wait(void *arg)
{
    updater *w = arg;
    dbs_session *s = open_ok(w->p);
    dbs_error err;
    query_int(s, "SELECT 1 FROM (SELECT pg_advisory_lock(7713)) AS l", NULL, 0);
    CHECK_OK(dbs_commit(s, &err), &err);
    atomic_store(&w->locked, 1);
    int64_t n = 0;
    for (int i = 0; i < 12000 && n == 0; i++) {
        n = query_int(s, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                         "AND objid = 7713 AND NOT granted", NULL, 0);
        CHECK_OK(dbs_rollback(s, &err), &err);
        if (n == 0)
            dbs__sleep_ms(5);
    }
    CHECK_INT(n, >, 0);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE %s SET v = 'by-other' WHERE id = 1", tbl);
    exec_ok(s, sql);
    CHECK_OK(dbs_commit(s, &err), &err);
    query_int(s, "SELECT 1 FROM (SELECT pg_advisory_unlock(7713)) AS l", NULL, 0);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    atomic_store(&w->done, 1);
    return NULL;
}

/* PostgreSQL: the server ends the unit's connection while its statement
 * runs (pg_terminate_backend): DBS_ECONNECT before COMMIT, run again on
 * another connection. */
static void *kill_during_sleep(void *arg)
{
    updater *w = arg;
    dbs_session *s = open_ok(w->p);
    for (int i = 0; i < 4000; i++) {
        int64_t n = query_int(s, "SELECT count(pg_terminate_backend(pid)) FROM "
                                 "pg_stat_activity WHERE query = 'SELECT pg_sleep(0.5)' "
                                 "AND state = 'active'", NULL, 0);
        dbs_error err;
        CHECK_OK(dbs_rollback(s, &err), &err);
        if (n > 0)
            break;
        dbs__sleep_ms(5);
    }
    dbs_session_close(s);
    atomic_store(&w->done, 1);
    return NULL;
}

/* SQLite: a blocking session holds the write lock; the unit's write is
 * refused busy, retried, and goes through once the lock is let go. */
static atomic_int retries_seen;
static atomic_int retries_named; /* naming the function that made the unit */
static void count_retry(const dbs_event *ev, void *arg)
{
    (void)arg;
    if (ev->kind != DBS_EVENT_RETRY)
        return;
    atomic_fetch_add(&retries_seen, 1);
    if (ev->func && (strcmp(ev->func, "unit1") == 0 || strcmp(ev->func, "test_retry") == 0) &&
        ev->file && strcmp(ev->file, __FILE__) == 0 && ev->line > 0)
        atomic_fetch_add(&retries_named, 1);
}

static void retry_cfg(dbs_config *c)
{
    c->retry_max = 20;
    c->retry_base_ms = 50;
    c->retry_cap_ms = 100;
    c->busy_timeout_ms = 20;
    c->on_event = count_retry;
}

static void test_retry(void)
{
    dbs_pool *p = pool_of(2, retry_cfg);
    dbs_error err;
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INT PRIMARY KEY, v TEXT)", tbl);
    run_sql(p, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (1, 'one')", tbl);
    run_sql(p, sql);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    int ep = watch(l);
    res r;
    if (is_pg) {
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        dbs_tx_options o = {.isolation = DBS_ISOLATION_REPEATABLE_READ};
        CHECK_OK(dbs_unit_set_tx_options(u, &o, &err), &err);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
        CHECK_OK(dbs_unit_add(u, sql, NULL, 0, &err), &err);
        CHECK_OK(dbs_unit_add(u, "SELECT pg_advisory_xact_lock(7713)", NULL, 0, &err), &err);
        snprintf(sql, sizeof sql, "UPDATE %s SET v = 'by-unit' WHERE id = 1", tbl);
        CHECK_OK(dbs_unit_add(u, sql, NULL, 0, &err), &err);
        updater w = {.p = p};
        pthread_t th;
        pthread_create(&th, NULL, update_during_wait, &w);
        while (!atomic_load(&w.locked))
            dbs__sleep_ms(1);
        submit(u, &r);
        while (r.calls == 0)
            step(l, ep);
        pthread_join(th, NULL);
        if (r.rc != DBS_OK)
            CHECK_FAIL("retried unit: %d %s", r.rc, r.msg);
        CHECK_EQ(r.attempts, 2);

        updater k = {.p = p};
        pthread_create(&th, NULL, kill_during_sleep, &k);
        submit(unit1(l, 0, "SELECT pg_sleep(0.5)"), &r);
        while (r.calls == 0)
            step(l, ep);
        pthread_join(th, NULL);
        CHECK_RC(r, DBS_OK);
        CHECK_EQ(r.attempts, 2);
    } else {
        dbs_session *s = open_ok(p);
        snprintf(sql, sizeof sql, "UPDATE %s SET v = 'held' WHERE id = 1", tbl);
        exec_ok(s, sql); /* holds the write lock until its commit */
        snprintf(sql, sizeof sql, "UPDATE %s SET v = 'by-unit' WHERE id = 1", tbl);
        submit(unit1(l, 0, sql), &r);
        while (atomic_load(&retries_seen) == 0 && r.calls == 0)
            step(l, ep);
        CHECK_EQ(r.calls, 0);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        while (r.calls == 0)
            step(l, ep);
        if (r.rc != DBS_OK)
            CHECK_FAIL("retried unit: %d %s", r.rc, r.msg);
        CHECK(r.attempts >= 2);
    }
    CHECK(stats_of(p).retries >= 1);
    int named = atomic_load(&retries_named), seen = atomic_load(&retries_seen);
    CHECK_EQ(named, seen);
    dbs_session *s = open_ok(p);
    char out[32];
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 1", tbl);
    CHECK_STR(text_of(s, sql, out, sizeof out), "by-unit");
    dbs_session_close(s);

    /* a failure that is not transient runs once */
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (1, 'dup')", tbl);
    submit(unit1(l, 0, sql), &r);
    drain(l);
    CHECK_RC(r, DBS_ECONSTRAINT);
    CHECK_EQ(r.attempts, 1);
    close(ep);
    dbs_loop_close(l);
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(p, sql);
    dbs_pool_close(p);
}

/* ---- read-only units ---- */

static void test_read_only(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (99, 'ro')", tbl);
    res r;
    submit(unit1(l, DBS_UNIT_RO, sql), &r);
    drain(l);
    CHECK_RC(r, DBS_ESQL); /* enforced by the database */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id = 7", tbl);
    submit(unit1(l, DBS_UNIT_RO, sql), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 1);
    dbs_loop_close(l);
}

/* ---- a loop that owns 1,000 waiting units with a pool of 4 ---- */

static void thousand_cfg(dbs_config *c)
{
    c->acquire_timeout_ms = 60000;
}

static void test_thousand(void)
{
    enum { N = 1000 };
    dbs_pool *p = pool_of(4, thousand_cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    int ep = watch(l);
    static res r[N];
    for (int i = 0; i < N; i++) {
        dbs_unit *u = dbs_unit_new(l, NULL, i % 3 == 0 ? DBS_UNIT_RO : 0, &err);
        CHECK(u != NULL);
        dbs_value v = DBS_INT(i);
        CHECK_OK(dbs_unit_add(u, "SELECT $1 + 0", &v, 1, &err), &err);
        if (i % 10 == 9) /* a bound shorter than the queue takes */
            CHECK_EQ(dbs_unit_set_timeout(u, 1), DBS_OK);
        submit(u, &r[i]);
    }
    CHECK_EQ(dbs_loop_pending(l), N);
    int max_size = 0;
    while (dbs_loop_pending(l) > 0) {
        step(l, ep);
        dbs_stats st = stats_of(p);
        if (st.size > max_size)
            max_size = st.size;
    }
    CHECK(max_size <= 4);
    int ok = 0, late = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(r[i].calls, 1);
        if (r[i].rc == DBS_OK) {
            CHECK_EQ(r[i].val, i);
            ok++;
        } else {
            /* only a unit with its own short bound may miss */
            CHECK_EQ(i % 10, 9);
            if (r[i].rc != DBS_ETIMEOUT && r[i].rc != DBS_ESTMT_TIMEOUT)
                CHECK_FAIL("unit %d: %d %s", i, r[i].rc, r[i].msg);
            late++;
        }
    }
    CHECK_EQ(ok + late, N);
    CHECK(ok >= N - N / 10);
    close(ep);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* ---- the loop and blocking sessions share one pool ---- */

typedef struct blocker {
    dbs_pool *p;
    atomic_int stop, runs, done;
} blocker;

static void *blocking_user(void *arg)
{
    blocker *b = arg;
    while (!atomic_load(&b->stop)) {
        dbs_session *s = open_ok(b->p);
        CHECK_EQ(query_int(s, "SELECT 2", NULL, 0), 2);
        dbs_session_close(s);
        atomic_fetch_add(&b->runs, 1);
    }
    atomic_store(&b->done, 1);
    return NULL;
}

static void test_shared(void)
{
    dbs_pool *p = pool_of(2, NULL);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    blocker b = {.p = p};
    pthread_t th;
    pthread_create(&th, NULL, blocking_user, &b);
    enum { UNITS = 2000 };
    static res r[UNITS];
    while (atomic_load(&b.runs) == 0)
        dbs__sleep_ms(1);
    int before = atomic_load(&b.runs);
    for (int i = 0; i < UNITS; i++)
        submit(unit1(l, 0, "SELECT 1"), &r[i]);
    drain(l);
    /* the thread had its turns while the loop's queue was full: the pool's
     * order holds between them */
    int during = atomic_load(&b.runs) - before;
    atomic_store(&b.stop, 1);
    /* the loop keeps running while the thread finishes: it gives back
     * what it holds as it reads it */
    while (!atomic_load(&b.done)) {
        dbs_loop_run(l);
        dbs__sleep_ms(1);
    }
    pthread_join(th, NULL);
    for (int i = 0; i < UNITS; i++)
        CHECK_RC(r[i], DBS_OK);
    CHECK_INT(during, >=, 2);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* ---- a program's own loop ----
 * One epoll set, as a server has: its own descriptor (a timerfd standing
 * for arriving requests) beside dbs_loop_fd, the wait bounded by
 * dbs_loop_timeout_ms. Each "request" submits a unit; each unit's callback
 * submits a follow-up unit, as a handler that needs a second query does. */
typedef struct program {
    dbs_loop *l;
    int submitted, first_done, second_done, failed;
} program;

static void second_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    program *pg = arg;
    (void)u;
    if (rc != DBS_OK) {
        fprintf(stderr, "second unit: %s\n", err->message);
        pg->failed++;
    }
    pg->second_done++;
}

static void first_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    program *pg = arg;
    pg->first_done++;
    dbs_rows *r = dbs_unit_rows(u, 0);
    dbs_error e;
    if (rc != DBS_OK || !r || dbs_rows_next(r, &e) != 1) {
        fprintf(stderr, "first unit: %s\n", err->message);
        pg->failed++;
        pg->second_done++;
        return;
    }
    dbs_value v = DBS_INT(dbs_rows_int(r, 0) + 1);
    dbs_unit *n = dbs_unit_new(pg->l, dbs_unit_context(u), 0, &e);
    CHECK(n != NULL);
    CHECK_OK(dbs_unit_add(n, "SELECT $1 + 0", &v, 1, &e), &e);
    CHECK_OK(dbs_unit_submit(n, second_done, pg, &e), &e);
}

static void test_program(void)
{
    enum { REQUESTS = 300 };
    dbs_pool *p = pool_of(3, NULL);
    dbs_error err;
    program pg = {0};
    pg.l = dbs_loop_open(p, NULL, &err);
    CHECK(pg.l != NULL);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    CHECK(tfd >= 0);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    CHECK_EQ(timerfd_settime(tfd, 0, &its, NULL), 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = tfd};
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev), 0);
    ev.data.fd = dbs_loop_fd(pg.l);
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, dbs_loop_fd(pg.l), &ev), 0);
    while (pg.second_done < REQUESTS) {
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, dbs_loop_timeout_ms(pg.l));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd != tfd)
                continue;
            uint64_t ticks;
            if (read(tfd, &ticks, sizeof ticks) != (ssize_t)sizeof ticks)
                continue;
            for (uint64_t t = 0; t < ticks && pg.submitted < REQUESTS; t++) {
                char id[32];
                snprintf(id, sizeof id, "req-%d", pg.submitted);
                dbs_context ctx = {.request_id = id};
                dbs_unit *u = dbs_unit_new(pg.l, &ctx, 0, &err);
                CHECK(u != NULL);
                dbs_value v = DBS_INT(pg.submitted);
                CHECK_OK(dbs_unit_add(u, "SELECT $1 + 0", &v, 1, &err), &err);
                CHECK_OK(dbs_unit_submit(u, first_done, &pg, &err), &err);
                pg.submitted++;
            }
            if (pg.submitted == REQUESTS) {
                epoll_ctl(ep, EPOLL_CTL_DEL, tfd, NULL);
                close(tfd);
                tfd = -1;
            }
        }
        /* readable or past its deadline: let it work (never blocks) */
        CHECK(dbs_loop_run(pg.l) >= 0);
    }
    CHECK_EQ(pg.first_done, REQUESTS);
    CHECK_EQ(pg.failed, 0);
    CHECK_EQ(dbs_loop_pending(pg.l), 0);
    if (tfd >= 0)
        close(tfd);
    close(ep);
    dbs_loop_close(pg.l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}


/* ---- limits crossed: acquire_timeout_ms 0, a cancel seen by a sleeping
 * program, big units, callbacks that come back in, no busy loop ---- */

static void zero_acquire(dbs_config *c)
{
    c->acquire_timeout_ms = 0;
}

/* acquire_timeout_ms = 0: no wait for a connection, but one that is idle
 * (or can be made) is taken, as dbs_session_open takes it. The acquire
 * bound used to fire before the unit was ever offered a connection: every
 * unit ended DBS_ETIMEOUT with the pool idle. */
static void test_acquire_zero(void)
{
    dbs_pool *p = pool_of(2, zero_acquire);
    dbs_session *s = open_ok(p); /* a blocking session gets one at once */
    dbs_session_close(s);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    /* an idle connection */
    res r;
    submit(unit1(l, 0, "SELECT 4"), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 4);
    settle(l, p);
    /* none idle, room for one more: it is made for the unit */
    s = open_ok(p);
    CHECK_EQ(stats_of(p).in_use, 1);
    submit(unit1(l, 0, "SELECT 5"), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 5);
    int ep = watch(l);
    while (stats_of(p).in_use > 1) /* s holds the other */
        step(l, ep);
    close(ep);
    /* none to be had: no wait, DBS_ETIMEOUT */
    dbs_session *s2 = open_ok(p);
    submit(unit1(l, 0, "SELECT 6"), &r);
    drain(l);
    CHECK_RC(r, DBS_ETIMEOUT);
    dbs_session_close(s2);
    dbs_session_close(s);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    dbs_pool_close(p);
}

/* After dbs_unit_cancel of a unit that waits, the program that watches
 * the descriptor learns there is work (its callback) without asking for
 * the deadline again, as the libuv example's glue asks only after a run
 * or a submit: it used to sleep until the acquire bound (30 s). */
static void test_cancel_wakes(void)
{
    dbs_pool *p = pool_of(1, NULL);
    dbs_session *s = open_ok(p);
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    CHECK(l != NULL);
    res r[2];
    dbs_unit *u0 = unit1(l, 0, "SELECT 1");
    dbs_unit *u1 = unit1(l, 0, "SELECT 2");
    submit(u0, &r[0]);
    submit(u1, &r[1]);
    for (int i = 0; i < 10; i++) {
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    int t = dbs_loop_timeout_ms(l);
    CHECK_INT(t, >, 1000); /* the acquire bound: nothing is ready */
    struct pollfd pf = {.fd = dbs_loop_fd(l), .events = POLLIN};
    CHECK_EQ(poll(&pf, 1, 0), 0);
    dbs_unit_cancel(u1);
    pf.revents = 0;
    CHECK_EQ(poll(&pf, 1, 0), 1); /* its callback waits: readable */
    dbs_loop_run(l);
    CHECK_EQ(r[1].calls, 1);
    CHECK_RC(r[1], DBS_ECANCELED);
    dbs_unit_cancel(u0);
    pf.revents = 0;
    int ep = watch(l);
    while (r[0].calls == 0)
        step(l, ep);
    close(ep);
    CHECK_RC(r[0], DBS_ECANCELED);
    dbs_session_close(s);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    dbs_pool_close(p);
}

/* Cancelling every unit whose worker waits for a connection frees the
 * workers at once: their waits leave the pool's queue (no connection is
 * taken for a unit already cancelled, none is lost) and the next unit
 * finds a worker, though the acquire bound (60 s) is far off. It used to
 * leave every worker blocked until that bound, or until each in turn had
 * taken a connection and let it go. */
static void long_acquire(dbs_config *c)
{
    c->acquire_timeout_ms = 60000;
}

static void test_cancel_workers(void)
{
    enum { N = 4 };
    dbs_pool *p = pool_of(N, long_acquire);
    dbs_session *s[N];
    for (int i = 0; i < N; i++)
        s[i] = open_ok(p);
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.workers = N;
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    CHECK(l != NULL);
    int ep = watch(l);
    res r[N], last;
    dbs_unit *u[N];
    for (int i = 0; i < N; i++) {
        u[i] = unit1(l, 0, "SELECT 1");
        submit(u[i], &r[i]);
    }
    /* every worker waits in the pool's queue (PostgreSQL: the loop, for
     * one connection that would take them all) */
    int want = is_pg ? 1 : N;
    for (int64_t end = now_ms() + 30000; stats_of(p).waiting < want && now_ms() < end;) {
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    CHECK_INT(stats_of(p).waiting, >=, want);
    uint64_t acquired = stats_of(p).acquired;
    uint64_t cancels = dbs_pool_errors(p, DBS_ECANCELED, NULL);
    for (int i = 0; i < N; i++)
        dbs_unit_cancel(u[i]);
    for (int i = 0; i < N; i++) {
        while (r[i].calls == 0)
            step(l, ep);
        CHECK_RC(r[i], DBS_ECANCELED);
    }
    /* the waits are over while every connection is still held (the
     * loop's deadline is the acquire bound, 60 s: look every 5 ms) */
    for (int64_t end = now_ms() + 30000; stats_of(p).waiting > 0 && now_ms() < end;) {
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    CHECK_EQ(stats_of(p).waiting, 0);
    CHECK_EQ(stats_of(p).in_use, N);
    /* a worker is free: the next unit waits in the pool's queue, not for a
     * thread */
    submit(unit1(l, 0, "SELECT 7"), &last);
    for (int64_t end = now_ms() + 30000; stats_of(p).waiting == 0 && now_ms() < end;) {
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    CHECK_EQ(stats_of(p).waiting, 1);
    dbs_session_close(s[0]);
    for (int64_t end = now_ms() + 30000; last.calls == 0 && now_ms() < end;) {
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    CHECK_EQ(last.calls, 1);
    CHECK_RC(last, DBS_OK);
    CHECK_EQ(last.val, 7);
    for (int i = 1; i < N; i++)
        dbs_session_close(s[i]);
    close(ep);
    settle(l, p);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.size, st.idle);
    CHECK_EQ(st.size, N);
    /* only the last unit took a connection; the cancelled ones neither
     * failed nor timed out: the program called them off */
    CHECK_EQ(st.acquired, acquired + 1);
    CHECK_EQ(st.timeouts, 0);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECANCELED, NULL), cancels);
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, NULL), 0);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* Cancels racing the connections' release: blocking sessions take and
 * give back the pool's two connections without pause while the loop
 * submits units and cancels each after a varying number of runs, so that
 * cancels land while a unit waits for a worker, while its worker waits
 * for a connection, just as one is handed to it, and while it runs. Every
 * unit completes once; afterwards no connection is lost or held, nothing
 * waits, and a unit gets a worker and a connection at once. Run under
 * ThreadSanitizer as well (DBSCOPE_TSAN). */
typedef struct churn {
    dbs_pool *p;
    atomic_bool stop;
    atomic_int fails;
} churn;

static void *churn_main(void *arg)
{
    churn *c = arg;
    while (!atomic_load(&c->stop)) {
        dbs_error err;
        dbs_session *s = dbs_session_open(c->p, NULL, &err);
        if (!s) {
            atomic_fetch_add(&c->fails, 1);
            continue;
        }
        dbs_session_close(s);
    }
    return NULL;
}

static void test_cancel_churn(void)
{
    enum { ROUNDS = 300, THREADS = 2, BATCH = 3 };
    /* PostgreSQL without TLS here: connects and closes on many threads at
     * once meet inside libcrypto, which ThreadSanitizer does not see into
     * (its reports there are about OpenSSL's own locking, not dbscope's) */
    static char url[1024];
    const char *base = test_url("loop");
    snprintf(url, sizeof url, "%s%s", base,
             is_pg ? (strchr(base, '?') ? "&sslmode=disable" : "?sslmode=disable") : "");
    dbs_config pc;
    dbs_config_init(&pc);
    pc.pool_size = 2;
    pc.max_overflow = 0;
    long_acquire(&pc);
    pc.url = url;
    dbs_error oerr;
    dbs_pool *p = dbs_pool_open(&pc, &oerr);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", oerr.message);
    churn c = {.p = p};
    atomic_init(&c.stop, false);
    atomic_init(&c.fails, 0);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, churn_main, &c), 0);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    static res r[ROUNDS][BATCH];
    int ok = 0, cancelled = 0;
    for (int round = 0; round < ROUNDS; round++) {
        dbs_unit *u[BATCH];
        for (int i = 0; i < BATCH; i++) {
            u[i] = unit1(l, 0, "SELECT 1");
            submit(u[i], &r[round][i]);
        }
        for (int k = round % 5; k > 0; k--) {
            dbs_loop_run(l);
            if (round % 3 == 0)
                dbs__sleep_ms(1);
        }
        for (int i = 0; i < BATCH; i++)
            if (r[round][i].calls == 0)
                dbs_unit_cancel(u[i]);
        dbs_loop_run(l);
    }
    drain(l);
    atomic_store(&c.stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    for (int round = 0; round < ROUNDS; round++)
        for (int i = 0; i < BATCH; i++) {
            CHECK_EQ(r[round][i].calls, 1);
            if (r[round][i].rc == DBS_OK)
                ok++;
            else
                CHECK_RC(r[round][i], DBS_ECANCELED);
            cancelled += r[round][i].rc == DBS_ECANCELED;
        }
    fprintf(stderr, "  cancel churn: %d committed, %d cancelled\n", ok, cancelled);
    CHECK_EQ(atomic_load(&c.fails), 0);
    /* PostgreSQL: a connection a cancel went out on is replaced; one made
     * for the loop comes back once the loop runs */
    int ep = watch(l);
    while (stats_of(p).in_use > 0 || stats_of(p).pending > 0)
        step(l, ep);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.size, st.idle);
    CHECK_EQ(st.timeouts, 0);
    /* both connections are there to be had at once */
    dbs_session *s0 = open_ok(p), *s1 = open_ok(p);
    CHECK_EQ(stats_of(p).in_use, 2);
    dbs_session_close(s1);
    /* and every worker is free */
    res last;
    submit(unit1(l, 0, "SELECT 8"), &last);
    for (int64_t end = now_ms() + 30000; last.calls == 0 && now_ms() < end;) {
        epoll_wait(ep, &(struct epoll_event){0}, 1, 5);
        dbs_loop_run(l);
    }
    close(ep);
    CHECK_EQ(last.calls, 1);
    CHECK_RC(last, DBS_OK);
    CHECK_EQ(last.val, 8);
    dbs_session_close(s0);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* Cancelling units pipelined behind one cancelled in flight: each ends
 * DBS_ECANCELED (or DBS_OK when it had already committed), never with the
 * retryable failure the spoiled connection gave it, whose retry the
 * cancel stopped. */
static void test_cancel_pipelined(void)
{
    enum { N = 6 };
    dbs_pool *p = pool_of(1, NULL);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    for (int round = 0; round < 200; round++) {
        res r[N];
        dbs_unit *u[N];
        for (int i = 0; i < N; i++) {
            u[i] = unit1(l, 0, i == 0 ? long_sql() : "SELECT 1");
            submit(u[i], &r[i]);
        }
        for (int k = 0; k < round % 4; k++) {
            dbs_loop_run(l);
            dbs__sleep_ms(1);
        }
        /* the first (in flight, on PostgreSQL with the rest behind it),
         * then the rest in turn, the loop running between */
        for (int i = 0; i < N; i++) {
            if (r[i].calls == 0)
                dbs_unit_cancel(u[i]);
            dbs_loop_run(l);
        }
        drain(l);
        for (int i = 0; i < N; i++) {
            CHECK_EQ(r[i].calls, 1);
            /* a cancel that lands as the unit's COMMIT goes out may leave
             * its outcome unknown; never "retry it": it was called off */
            if (r[i].rc != DBS_OK && r[i].rc != DBS_ECOMMIT_UNKNOWN)
                CHECK_RC(r[i], DBS_ECANCELED);
        }
    }
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    dbs_pool_close(p);
}

/* A cancel request the server answers without ending the unit: it
 * reached a statement that catches it (a PL/pgSQL handler for
 * query_canceled; alike, a request landing between two statements of
 * the unit), the unit's rows come in after it, and its next statement
 * runs on. The statement bound still
 * holds: the unit ends DBS_ESTMT_TIMEOUT long before its 30 s statement
 * would, the loop sleeps meanwhile (it used to ask for a run at once,
 * over and over, until the statement ended by itself), and the connection
 * is not the next unit's. PostgreSQL: the loop's own connection. */
static void caught_bound(dbs_config *c)
{
    /* the handler's statement (1.5 s) outlasts the bound, and ends within
     * the bound on the cancel's answer that follows */
    c->statement_timeout_ms = 1000;
}

/* The statement bound counts from when a statement began, not from the
 * last bytes the server sent: rows bigger than the server's output buffer
 * reach the loop as they are made, and NOTICEs as they are raised, so a
 * statement that kept sending held its connection past the bound (the
 * bound measured silence) and ended DBS_OK. PostgreSQL: the loop's own
 * connection. */
static void test_bound_trickle(void)
{
    dbs_pool *p = pool_of(1, caught_bound);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    const char *sqls[] = {
        /* 20 rows of 100 kB, one every 0.3 s: 6 s in all */
        "SELECT pg_sleep(0.3), repeat('x', 100000) FROM generate_series(1, 20)",
        /* a NOTICE every 0.2 s for 6 s */
        "DO $$BEGIN FOR i IN 1..30 LOOP PERFORM pg_sleep(0.2); "
        "RAISE NOTICE 'still here %', i; END LOOP; END$$"};
    for (int i = 0; i < 2; i++) {
        res r;
        submit(unit1(l, 0, sqls[i]), &r);
        drain(l);
        fprintf(stderr, "  bound_trickle %d: %d %s\n", i, r.rc, r.msg);
        CHECK_RC(r, DBS_ESTMT_TIMEOUT);
        settle(l, p);
    }
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    dbs_pool_close(p);
}

static void test_cancel_caught(void)
{
    dbs_pool *p = pool_of(1, caught_bound);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    res r;
    dbs_unit *u = unit1(l, 0,
                        "DO $$BEGIN PERFORM pg_sleep(1.5); "
                        "EXCEPTION WHEN query_canceled THEN NULL; END$$");
    /* rows past the server's output buffer: they reach the loop at once,
     * after the cancel (a server sends a flight's answers at its Sync,
     * or when that buffer fills) */
    CHECK_INT(dbs_unit_add(u, "SELECT repeat('x', 100000)", NULL, 0, &err), ==, 1);
    CHECK_INT(dbs_unit_add(u, "SELECT pg_sleep(30)", NULL, 0, &err), ==, 2);
    submit(u, &r);
    int ep = watch(l);
    int steps = 0;
    while (r.calls == 0) {
        step(l, ep);
        steps++;
    }
    fprintf(stderr, "  cancel_caught: %d steps: %s\n", steps, r.msg);
    CHECK_RC(r, DBS_ESTMT_TIMEOUT);
    CHECK_INT(steps, <, 1000);
    /* the next unit runs, on a clean connection */
    submit(unit1(l, 0, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                       "AND query = 'SELECT pg_sleep(30)'"),
           &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 0); /* cancelled on the server, not left to run */
    close(ep);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* A statement that catches every cancel request and keeps talking (a
 * NOTICE every 0.2 s, so the loop's statement bound, on silence, never
 * fires): each request the unit's own timeout sends is answered, none
 * ends the unit. dbs_unit_set_timeout still bounds the whole unit: it
 * ends after a few requests (DBS_ESTMT_TIMEOUT, or DBS_ECOMMIT_UNKNOWN
 * as its COMMIT went out in its flight), not when the statement
 * chooses to (here: never; the loop used to send the request again
 * every bound, for good), and the statement does not go on running on
 * the server. PostgreSQL. */
static void test_cancel_caught_always(void)
{
    dbs_pool *p = pool_of(1, caught_bound);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    res r;
    dbs_unit *u = unit1(l, 0,
                        "DO $$BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); "
                        "RAISE NOTICE 'caught_always'; "
                        "EXCEPTION WHEN query_canceled THEN RAISE NOTICE 'caught'; END; "
                        "END LOOP; END$$");
    CHECK_EQ(dbs_unit_set_timeout(u, 1000), DBS_OK);
    submit(u, &r);
    int ep = watch(l);
    int64_t t0 = now_ms();
    for (int64_t end = t0 + 30000; r.calls == 0 && now_ms() < end;) {
        struct epoll_event ev;
        (void)epoll_wait(ep, &ev, 1, 100);
        dbs_loop_run(l);
    }
    fprintf(stderr, "  cancel_caught_always: %lld ms: %s\n", (long long)(now_ms() - t0),
            r.msg);
    CHECK_EQ(r.calls, 1);
    CHECK_INT(now_ms() - t0, <, 25000);
    /* its COMMIT went out in the flight, unanswered: which it is only
     * the server knows */
    if (r.rc != DBS_ECOMMIT_UNKNOWN)
        CHECK_RC(r, DBS_ESTMT_TIMEOUT);
    close(ep);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
    /* the statement is not left looping on the server (a session each
     * look: pg_stat_activity holds still within a transaction) */
    int64_t n = -1;
    for (int64_t end = now_ms() + 20000; n != 0 && now_ms() < end;) {
        dbs_session *s = open_ok(p);
        n = query_int(s, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                         "'DO $$BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); RAISE NOTICE "
                         "''caught_always''%' AND pid <> pg_backend_pid()",
                      NULL, 0);
        dbs_session_close(s);
        if (n != 0)
            dbs__sleep_ms(50);
    }
    CHECK_EQ(n, 0);
    dbs_pool_close(p);
}

/* A unit that waits for a row lock another session holds: the program's
 * cancel, and the unit's own timeout, end that wait while the lock is
 * still held (SQLite: a wait on another connection's write lock, bounded
 * here by nothing short of busy_timeout_ms), nothing of the unit
 * committed, the connection comes back and the next unit runs. */
static void lock_bounds(dbs_config *c)
{
    c->busy_timeout_ms = 120000;  /* SQLite: far past the wait below */
    c->statement_timeout_ms = 0;  /* only the cancel may end the wait */
}

static void test_cancel_lock(void)
{
    dbs_pool *p = pool_of(2, lock_bounds);
    char t[64], sql[256];
    snprintf(t, sizeof t, "%s", table_name("loop_lk"));
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INT PRIMARY KEY, v INT)", t);
    run_sql(p, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1, 0)", t);
    run_sql(p, sql);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    int ep = watch(l);
    char upd[256];
    snprintf(upd, sizeof upd, "UPDATE %s SET v = v + 1 WHERE id = 1", t);
    for (int round = 0; round < 2; round++) {
        dbs_session *holder = open_ok(p);
        exec_ok(holder, upd); /* holds the row (SQLite: the write lock) */
        res r;
        dbs_unit *u = unit1(l, 0, upd);
        if (round == 1)
            CHECK_EQ(dbs_unit_set_timeout(u, 500), DBS_OK);
        submit(u, &r);
        /* on its way into the lock wait (a cancel before it is taken
         * from the queue ends it as well: it waits either way) */
        for (int64_t end = now_ms() + 300; now_ms() < end;) {
            dbs_loop_run(l);
            dbs__sleep_ms(5);
        }
        CHECK_EQ(r.calls, 0);
        if (round == 0)
            dbs_unit_cancel(u);
        for (int64_t end = now_ms() + 30000; r.calls == 0 && now_ms() < end;) {
            struct epoll_event ev;
            (void)epoll_wait(ep, &ev, 1, 100);
            dbs_loop_run(l);
        }
        /* ended while the lock is still held */
        CHECK_EQ(r.calls, 1);
        CHECK_RC(r, round == 0 ? DBS_ECANCELED : DBS_ESTMT_TIMEOUT);
        dbs_session_close(holder); /* rolls its update back */
        settle(l, p);
        CHECK_EQ(stats_of(p).in_use, 0);
        dbs_session *s = open_ok(p);
        snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 1", t);
        CHECK_EQ(query_int(s, sql, NULL, 0), 0); /* the unit committed nothing */
        dbs_session_close(s);
        submit(unit1(l, 0, "SELECT 5"), &r);
        drain(l);
        CHECK_RC(r, DBS_OK);
        CHECK_EQ(r.val, 5);
        settle(l, p);
    }
    close(ep);
    dbs_loop_close(l);
    snprintf(sql, sizeof sql, "DROP TABLE %s", t);
    run_sql(p, sql);
    WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* A cancel, or the pool's shutdown, that lands while a worker's unit is
 * between two statements (past the worker's check for a cancel, before
 * the next statement reaches the server; before the first, too): the
 * interrupt finds no statement to stop (MariaDB's KILL QUERY is dropped
 * by the server), yet the statement that follows must not run to its
 * bound, here none: the unit ends long before its 30 s statement would,
 * which is not left running on the server, and the pool serves on. The
 * worker waits in the gap for the interrupt to have gone out
 * (dbs__fault.unit_gap_ms). The worker backends (SQLite, MariaDB). */
static void gap_bounds(dbs_config *c)
{
    c->statement_timeout_ms = 0; /* only the cancel may end the statement */
}

static void test_cancel_between(void)
{
    dbs_config acfg;
    dbs_config_init(&acfg);
    dbs_pool *admin = is_mysql ? open_pool("loop", &acfg) : NULL;
    for (int round = 0; round < 3; round++) {
        dbs_pool *p = pool_of(1, gap_bounds);
        dbs_error err;
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        CHECK(l != NULL);
        int ep = watch(l);
        /* 0: a cancel before the first statement; 1: between the first
         * and the second; 2: dbs_pool_shutdown between them */
        atomic_store(&dbs__fault.unit_gap_at, round == 0 ? 0 : 1);
        atomic_store(&dbs__fault.unit_gap_ms, 10000);
        atomic_store(&dbs__fault.unit_gaps, 0);
        res r;
        dbs_unit *u = unit1(l, 0, "SELECT 1");
        CHECK_INT(dbs_unit_add(u, long_sql(), NULL, 0, &err), ==, 1);
        submit(u, &r);
        for (int64_t end = now_ms() + 30000;
             atomic_load(&dbs__fault.unit_gaps) == 0 && now_ms() < end;) {
            dbs_loop_run(l);
            dbs__sleep_ms(5);
        }
        CHECK_EQ(atomic_load(&dbs__fault.unit_gaps), 1);
        CHECK_EQ(r.calls, 0);
        atomic_store(&dbs__fault.unit_gap_ms, 0); /* the next units: no gap */
        int64_t t0 = now_ms();
        if (round < 2) {
            dbs_unit_cancel(u);
            /* far less than the statement's 30 s */
            for (int64_t end = now_ms() + 20000; r.calls == 0 && now_ms() < end;) {
                struct epoll_event ev;
                (void)epoll_wait(ep, &ev, 1, 100);
                dbs_loop_run(l);
            }
        } else {
            CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
            while (r.calls == 0)
                step(l, ep);
        }
        fprintf(stderr, "  cancel_between round %d: %lld ms: %s\n", round,
                (long long)(now_ms() - t0), r.msg);
        CHECK_EQ(r.calls, 1);
        CHECK_INT(now_ms() - t0, <, 20000);
        CHECK_RC(r, round < 2 ? DBS_ECANCELED : DBS_ECLOSED);
        /* what the cancel ended is no lost connection (MariaDB: it was
         * killed, on purpose) */
        CHECK_EQ(dbs_pool_errors(p, DBS_ECONNECT, NULL), 0);
        if (admin) {
            dbs_session *s = open_ok(admin);
            int64_t n = -1;
            for (int64_t end = now_ms() + 20000; n != 0 && now_ms() < end;) {
                n = query_int(s, "SELECT count(*) FROM information_schema.processlist "
                                 "WHERE info = 'SELECT SLEEP(30)'", NULL, 0);
                if (n != 0)
                    dbs__sleep_ms(20);
            }
            CHECK_EQ(n, 0); /* not left running on the server */
            dbs_session_close(s);
        }
        if (round < 2) {
            submit(unit1(l, 0, "SELECT 6"), &r);
            drain(l);
            CHECK_RC(r, DBS_OK);
            CHECK_EQ(r.val, 6);
            settle(l, p);
        }
        close(ep);
        dbs_loop_close(l);
        dbs_pool_close(p);
    }
    atomic_store(&dbs__fault.unit_gap_ms, 0);
    dbs_pool_close(admin);
}

/* A unit of many statements, and one with a large parameter. */
static void test_big(dbs_pool *p)
{
    enum { N = 5000 };
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    for (int i = 0; i < N; i++) {
        dbs_value v = DBS_INT(i);
        CHECK_EQ(dbs_unit_add(u, "SELECT $1 + 0", &v, 1, &err), i);
    }
    res r;
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 0);
    size_t big_n = 12u << 20; /* within MariaDB's max_allowed_packet */
    char *big = malloc(big_n + 1);
    memset(big, 'y', big_n);
    big[big_n] = '\0';
    u = dbs_unit_new(l, NULL, 0, &err);
    dbs_value v = DBS_TEXT(big);
    CHECK_EQ(dbs_unit_add(u, "SELECT length($1)", &v, 1, &err), 0);
    free(big);
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, (int64_t)big_n);
    settle(l, p);
    dbs_loop_close(l);
}

/* "SELECT CASE WHEN 2 IN ($1, ..., $n) THEN 7 ELSE 0 END" (the caller's). */
static char *in_list_sql(size_t n)
{
    size_t cap = 64 + n * 8;
    char *sql = malloc(cap);
    CHECK(sql != NULL);
    size_t w = (size_t)snprintf(sql, cap, "SELECT CASE WHEN 2 IN (");
    for (size_t i = 1; i <= n; i++)
        w += (size_t)snprintf(sql + w, cap - w, i > 1 ? ", $%zu" : "$%zu", i);
    snprintf(sql + w, cap - w, ") THEN 7 ELSE 0 END");
    return sql;
}

/* Statements of many parameters in one unit, each as itself (PostgreSQL's
 * pipeline refused more than 256); one past the protocol's 65535 is
 * refused by dbs_unit_add, the unit unchanged. SQLite's own limit may be
 * lower (test_query). */
/* A length no memory can hold (a blob of SIZE_MAX bytes, a counted text
 * past PTRDIFF_MAX) is refused when the statement is added, as dbs_exec
 * refuses it: the unit kept such a blob's pointer uncopied (its length
 * plus one wrapped to 0), and the backend later read the caller's memory
 * as far as it said. */
/* PostgreSQL: a cancel that lands on a unit's BEGIN fails it, and the
 * server skips the unit's statements; the COMMIT after them then finds no
 * transaction and answers "COMMIT" all the same. The unit ran nothing: it
 * is not a commit of unknown outcome (it was reported as one, "the
 * transaction committed all the same: do not run it again", when a cancel
 * from dbs_unit_cancel met the BEGIN). */
static void test_begin_refused(dbs_pool *p)
{
    if (!is_pg)
        return;
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (4711, 'begin-refused')", tbl);
    atomic_store(&dbs__fault.fail_begins, 1);
    res r;
    submit(unit1(l, 0, sql), &r);
    drain(l);
    atomic_store(&dbs__fault.fail_begins, 0);
    CHECK_EQ(r.calls, 1);
    if (r.rc == DBS_OK || r.rc == DBS_ECOMMIT_UNKNOWN)
        CHECK_FAIL("a unit whose BEGIN failed: rc %d (%s), want its failure", r.rc, r.msg);
    dbs_session *s = open_ok(p);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id = 4711", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0);
    dbs_session_close(s);
    /* the connection goes on */
    submit(unit1(l, 0, "SELECT 5"), &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    dbs_loop_close(l);
}

static void test_impossible_length(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    static const char bytes[4] = "abc";
    const dbs_value bad[] = {DBS_BLOB(bytes, SIZE_MAX), DBS_BLOB(bytes, (size_t)PTRDIFF_MAX + 1),
                             DBS_TEXTN(bytes, (size_t)PTRDIFF_MAX + 1),
                             DBS_JSONN(bytes, SIZE_MAX - 1)};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u != NULL);
        const dbs_value v[] = {DBS_INT(1), bad[i]};
        if (dbs_unit_add(u, "SELECT $1, $2", v, 2, &err) != DBS_EMISUSE)
            CHECK_FAIL("value %zu: dbs_unit_add took a length of %zu bytes (%d)", i, bad[i].b.n,
                       err.code);
        if (!strstr(err.message, "$2"))
            CHECK_FAIL("value %zu: the refusal names no parameter: %s", i, err.message);
        dbs_unit_discard(u);
        dbs_session *s = open_ok(p);
        CHECK_EQ(dbs_exec(s, "SELECT $1, $2", v, 2, &err), DBS_EMISUSE);
        dbs_session_close(s);
    }
    dbs_loop_close(l);
}

static void test_many_params(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    const size_t most = is_sqlite ? 1000 : 65535;
    dbs_value *v = malloc(65536 * sizeof *v);
    CHECK(v != NULL);
    for (size_t i = 0; i < 65536; i++)
        v[i] = DBS_INT(-(int64_t)i - 1);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    const size_t counts[] = {most, 257, 40};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t n = counts[k];
        char *sql = in_list_sql(n);
        /* the last one a counted text where the server converts it */
        v[n - 1] = is_sqlite ? DBS_INT(2) : DBS_TEXTN("2x", 1);
        CHECK_EQ(dbs_unit_add(u, sql, v, n, &err), (int)k);
        v[n - 1] = DBS_INT(-(int64_t)n);
        free(sql);
    }
    char *sql = in_list_sql(65536);
    CHECK_EQ(dbs_unit_add(u, sql, v, 65536, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "65535");
    free(sql);
    CHECK_EQ(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), 3);
    res r;
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 7);
    /* the connection goes on */
    u = unit1(l, 0, "SELECT 41 + 1");
    submit(u, &r);
    drain(l);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 42);
    settle(l, p);
    dbs_loop_close(l);
    free(v);
}

/* Parameters the backend refuses whatever the connection (PostgreSQL: a
 * text value holding a NUL byte, more parameters than the statement uses)
 * are refused by dbs_unit_add, as dbs_exec refuses them before sending:
 * found only once the unit has a connection, they came, with the server
 * down, as DBS_ECONNECT, retried and counted as connect failures. The
 * pool here points at a port where nothing listens. */
static void test_bad_params_down(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = is_pg ? "postgresql://dbscope@127.0.0.1:1/dbscope?connect_timeout=2"
                    : "mariadb://dbscope@127.0.0.1:1/dbscope?ssl_mode=disabled";
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.lazy_open = 1;
    cfg.retry_max = 2;
    cfg.connect_timeout_ms = 2000;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    dbs_value nul[] = {DBS_TEXTN("a\0b", 3)};
    dbs_value two[] = {DBS_INT(1), DBS_INT(2)};
    if (is_pg) {
        CHECK_EQ(dbs_unit_add(u, "SELECT $1::text", nul, 1, &err), DBS_ESQL);
        CHECK_EQ(err.code, DBS_ESQL);
        CHECK_CONTAINS(err.message, "NUL");
        CHECK_EQ(dbs_unit_add(u, "SELECT $1::int", two, 2, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "2 parameters given");
        CHECK_EQ(dbs_unit_add(u, "SELECT 1", two, 2, &err), DBS_ESQL);
    } else {
        /* MariaDB's reading of $n depends on the session's sql_mode, and
         * its text holds a NUL: what the server refuses is the session's */
        CHECK_EQ(dbs_unit_add(u, "SELECT $1", nul, 1, &err), 0);
    }
    /* The unit is unchanged by what was refused: a good statement runs
     * into the outage, as it should. */
    int first = dbs_unit_add(u, "SELECT $1", two, 1, &err);
    CHECK_EQ(first, is_pg ? 0 : 1);
    res r;
    submit(u, &r);
    drain(l);
    CHECK_EQ(r.calls, 1);
    CHECK_RC(r, DBS_ECONNECT);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* Callbacks that come back into the loop. */
typedef struct reent {
    dbs_loop *l;
    dbs_unit *other;
    res *other_r;
    int run_rc;
    res follow;
    int seen;
} reent;

static void reent_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    reent *x = arg;
    (void)err;
    x->seen++;
    x->run_rc = dbs_loop_run(x->l);
    dbs_loop_close(x->l); /* refused */
    dbs_unit_cancel(u);   /* its own: completed, a no-op */
    dbs_unit_cancel(u);
    if (x->other) {
        dbs_unit_cancel(x->other);
        dbs_unit_cancel(x->other);
        x->other = NULL;
    }
    if (rc == DBS_OK)
        submit(unit1(x->l, 0, "SELECT 6"), &x->follow);
}

static void test_reentry(dbs_pool *p)
{
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.max_connections = 1;
    lc.pipeline_depth = 1;
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    CHECK(l != NULL);
    reent x = {.l = l};
    res r2;
    dbs_unit *a = unit1(l, 0, "SELECT 1");
    dbs_unit *b = unit1(l, 0, "SELECT 2");
    x.other = b;
    CHECK_OK(dbs_unit_submit(a, reent_done, &x, &err), &err);
    submit(b, &r2);
    drain(l);
    CHECK_EQ(x.seen, 1);
    CHECK_EQ(x.run_rc, DBS_EMISUSE);
    CHECK_EQ(r2.calls, 1);
    if (r2.rc != DBS_OK)
        CHECK_RC(r2, DBS_ECANCELED);
    CHECK_EQ(x.follow.calls, 1);
    CHECK_RC(x.follow, DBS_OK);
    CHECK_EQ(x.follow.val, 6);
    settle(l, p);
    dbs_loop_close(l);
}

/* While a statement runs for a while, the loop is not run in a busy loop. */
static void test_no_spin(dbs_pool *p)
{
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    const char *sql = is_mysql ? "SELECT SLEEP(1)"
                      : is_pg  ? "SELECT pg_sleep(1)"
                               : "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                 "FROM c WHERE x < 3000000) SELECT count(*) FROM c";
    res r;
    submit(unit1(l, 0, sql), &r);
    int ep = watch(l);
    int steps = 0;
    while (r.calls == 0) {
        step(l, ep);
        steps++;
    }
    close(ep);
    CHECK_RC(r, DBS_OK);
    fprintf(stderr, "  no_spin: %d steps\n", steps);
    CHECK_INT(steps, <, 100);
    settle(l, p);
    dbs_loop_close(l);
}

/* ---- the request context at and past its limits ---- */

static void ctx_cfg(dbs_config *c)
{
    c->ctx_request_setting = "app.request_id";
    c->ctx_user_setting = "app.user_id";
    c->ctx_tenant_setting = "app.tenant_id";
}

/* Reads field i of the context back inside the transaction. */
static const char *ctx_read_sql(int i)
{
    static const char *const pg[3] = {"SELECT current_setting('app.request_id', true)",
                                      "SELECT current_setting('app.user_id', true)",
                                      "SELECT current_setting('app.tenant_id', true)"};
    static const char *const my[3] = {"SELECT @`app.request_id`", "SELECT @`app.user_id`",
                                      "SELECT @`app.tenant_id`"};
    return is_pg ? pg[i] : is_mysql ? my[i] : "SELECT ''";
}

/* The first row's first column is want byte for byte (NULL: SQL NULL or
 * '', as PostgreSQL applies a missing field). */
static void ctx_check_rows(dbs_rows *rows, const char *want, const char *what)
{
    dbs_error e;
    if (!rows || dbs_rows_next(rows, &e) != 1)
        CHECK_FAIL("%s: no row", what);
    size_t n = 0;
    const char *t = dbs_rows_text(rows, 0, &n);
    if (!want) {
        if (t && n)
            CHECK_FAIL("%s: %zu bytes of a context that is not this session's", what, n);
        return;
    }
    if (!t || n != strlen(want) || memcmp(t, want, n) != 0)
        CHECK_FAIL("%s: %zu bytes read back, not the %zu applied", what, t ? n : 0,
                   strlen(want));
}

static const char *ctx_want[3];

static const char *ctx_field(const dbs_context *c, int f)
{
    return f == 0 ? c->request_id : f == 1 ? c->user_id : c->tenant_id;
}

static void ctx_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    int *calls = arg;
    ++*calls;
    if (rc != DBS_OK)
        CHECK_FAIL("context unit: %d %s", rc, err->message);
    for (int i = 0; i < 3 && !is_sqlite; i++)
        ctx_check_rows(dbs_unit_rows(u, i), ctx_want[i], "unit");
}

static int ctx_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)arg;
    (void)err;
    CHECK_FAIL("dbs_transact ran its work under a context it should refuse");
    return 0;
}

static void test_ctx_limits(void)
{
    dbs_pool *p = pool_of(1, ctx_cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    char *at_max = malloc(DBS_CONTEXT_MAX + 2), *big = malloc((16u << 20) + 1);
    CHECK(at_max && big);
    for (size_t i = 0; i < DBS_CONTEXT_MAX + 1; i++)
        at_max[i] = (char)('a' + i % 26);
    at_max[DBS_CONTEXT_MAX] = '\0';
    memset(big, 'b', 16u << 20); /* past MariaDB's max_allowed_packet */
    big[16u << 20] = '\0';
    const char *good[] = {"", "x", at_max, "q'\"\\`;--\n\r\t$1 ? %s",
                          "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        for (int f = 0; f < 3; f++) {
            dbs_context ctx = {"r", "u", "t"};
            const char **fld[3] = {&ctx.request_id, &ctx.user_id, &ctx.tenant_id};
            *fld[f] = good[k];
            ctx_want[0] = ctx.request_id;
            ctx_want[1] = ctx.user_id;
            ctx_want[2] = ctx.tenant_id;
            dbs_session *s = dbs_session_open(p, &ctx, &err);
            if (!s)
                CHECK_FAIL("context %zu field %d refused: %s", k, f, err.message);
            CHECK_STR(ctx_field(dbs_session_context(s), f), good[k]);
            for (int i = 0; i < 3 && !is_sqlite; i++) {
                dbs_rows *rows = dbs_query(s, ctx_read_sql(i), NULL, 0, &err);
                if (!rows)
                    CHECK_FAIL("context %zu field %d: %s", k, f, err.message);
                ctx_check_rows(rows, ctx_want[i], "session");
                dbs_rows_close(rows);
            }
            dbs_session_close(s);
            dbs_unit *u = dbs_unit_new(l, &ctx, 0, &err);
            if (!u)
                CHECK_FAIL("context %zu field %d refused: %s", k, f, err.message);
            CHECK_STR(ctx_field(dbs_unit_context(u), f), good[k]);
            for (int i = 0; i < 3; i++)
                CHECK_EQ(dbs_unit_add(u, ctx_read_sql(i), NULL, 0, &err), i);
            int calls = 0;
            CHECK_OK(dbs_unit_submit(u, ctx_done, &calls, &err), &err);
            drain(l);
            CHECK_EQ(calls, 1);
            settle(l, p);
        }
    }
    /* nothing of it is left for the next session, on either path */
    for (int i = 0; i < 3; i++)
        ctx_want[i] = NULL;
    dbs_session *s = open_ok(p);
    for (int i = 0; i < 3 && !is_sqlite; i++) {
        dbs_rows *rows = dbs_query(s, ctx_read_sql(i), NULL, 0, &err);
        ctx_check_rows(rows, NULL, "next session");
        dbs_rows_close(rows);
    }
    dbs_session_close(s);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(dbs_unit_add(u, ctx_read_sql(i), NULL, 0, &err), i);
    int calls = 0;
    CHECK_OK(dbs_unit_submit(u, ctx_done, &calls, &err), &err);
    drain(l);
    CHECK_EQ(calls, 1);
    settle(l, p);

    /* refused whole before anything is sent: no connection spent, none
     * broken, no retry; never a value the server would change or drop */
    at_max[DBS_CONTEXT_MAX] = 'z';
    at_max[DBS_CONTEXT_MAX + 1] = '\0';
    const char *bad[] = {at_max, big, "\xff", "ab\xc3", "\xc0\x80", "\xed\xa0\x80",
                         "\xf4\x90\x80\x80", "ok\xe2\x82"};
    uint64_t created = stats_of(p).created;
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        for (int f = 0; f < 3; f++) {
            dbs_context ctx = {"r", "u", "t"};
            const char **fld[3] = {&ctx.request_id, &ctx.user_id, &ctx.tenant_id};
            *fld[f] = bad[k];
            memset(&err, 0, sizeof err);
            s = dbs_session_open(p, &ctx, &err);
            if (s)
                CHECK_FAIL("bad context %zu field %d: the session opened", k, f);
            CHECK_EQ(err.code, DBS_EMISUSE);
            CHECK(strstr(err.message, "ctx->") != NULL);
            CHECK_EQ(dbs_transact(p, &ctx, ctx_work, NULL, &err), DBS_EMISUSE);
            u = dbs_unit_new(l, &ctx, 0, &err);
            if (u)
                CHECK_FAIL("bad context %zu field %d: the unit was made", k, f);
            CHECK_EQ(err.code, DBS_EMISUSE);
        }
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.created, created);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.invalidated, 0);
    free(at_max);
    free(big);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* ---- the pool's ceiling with units whose connections are killed ---- */

typedef struct ceil_arg {
    dbs_pool *admin;
    int done, ok, failed, kills;
    int64_t killed; /* the server's id of the connection ended last */
} ceil_arg;

static void ceil_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    ceil_arg *a = arg;
    a->done++;
    if (rc != DBS_OK) {
        /* the kill: the connection lost (before or at COMMIT), nothing else */
        if (rc != DBS_ECONNECT && rc != DBS_ECOMMIT_UNKNOWN)
            CHECK_FAIL("ceiling unit: %d %s", rc, err->message);
        a->failed++;
        return;
    }
    a->ok++;
    dbs_rows *rows = dbs_unit_rows(u, 0);
    dbs_error e;
    CHECK(rows && dbs_rows_next(rows, &e) == 1);
    int64_t id = dbs_rows_int(rows, 0);
    /* every tenth unit, its connection is ended from another session */
    if (a->admin && a->ok % 10 == 0 && id != a->killed) {
        char sql[128];
        if (is_pg)
            snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)::int", (long long)id);
        else
            snprintf(sql, sizeof sql, "KILL CONNECTION %lld", (long long)id);
        dbs_session *s = open_ok(a->admin);
        if (is_pg)
            CHECK_EQ(query_int(s, sql, NULL, 0), 1);
        else
            exec_ok(s, sql);
        a->kills++;
        a->killed = id;
        dbs_session_close(s);
    }
}

static void test_ceiling_killed(void)
{
    enum { N = 100 };
    dbs_config acfg;
    dbs_config_init(&acfg);
    dbs_pool *admin = is_sqlite ? NULL : open_pool("loop", &acfg);
    atomic_store(&dbs__fault.armed, 1);
    dbs_pool *p = pool_of(1, NULL);
    atomic_store(&dbs__fault.armed, 0);
    /* the admin's connection is the only other one this process has */
    int base = atomic_load(&dbs__fault.live) - stats_of(p).size;
    atomic_store(&dbs__fault.live_peak, atomic_load(&dbs__fault.live));
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    ceil_arg a = {.admin = admin, .killed = -1};
    const char *id_sql = is_pg ? "SELECT pg_backend_pid()"
                         : is_mysql ? "SELECT CONNECTION_ID()" : "SELECT 1";
    for (int i = 0; i < N; i++) {
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u != NULL);
        CHECK_EQ(dbs_unit_add(u, id_sql, NULL, 0, &err), 0);
        CHECK_OK(dbs_unit_submit(u, ceil_done, &a, &err), &err);
    }
    drain(l);
    CHECK_EQ(a.done, N);
    settle(l, p);
    dbs_loop_close(l);
    if (admin)
        CHECK(a.kills > 0);
    CHECK_INT(atomic_load(&dbs__fault.live_peak) - base, <=, 1);
    dbs_pool_close(p);
    dbs_pool_close(admin);
}

/* ---- loops on threads of their own, closed while their units run ---- */

/* One loop per thread on one pool, each closed a few runs after its units
 * went out (some still waiting, some in flight, a long one on the
 * server): every unit completes once, as cancelled or committed, and the
 * pool has every connection back and still serves. */

typedef struct tc_arg {
    dbs_pool *p;
    int calls, bad;
} tc_arg;

static void tc_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    tc_arg *a = arg;
    a->calls++;
    if (rc != DBS_OK && rc != DBS_ECANCELED && rc != DBS_ECOMMIT_UNKNOWN) {
        a->bad++;
        fprintf(stderr, "  threads_close: unit ended %d: %s\n", rc, err->message);
    }
}

static void *tc_thread(void *arg)
{
    tc_arg *a = arg;
    for (int it = 0; it < 5; it++) {
        dbs_error err;
        dbs_loop *l = dbs_loop_open(a->p, NULL, &err);
        CHECK(l != NULL);
        for (int i = 0; i < 12; i++) {
            dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
            CHECK(u != NULL);
            CHECK(dbs_unit_add(u, i % 3 ? "SELECT 1" : long_sql(), NULL, 0, &err) >= 0);
            CHECK_OK(dbs_unit_submit(u, tc_done, a, &err), &err);
        }
        int ep = watch(l);
        for (int k = 0; k < 3 + it; k++) {
            struct epoll_event ev;
            int t = dbs_loop_timeout_ms(l);
            epoll_wait(ep, &ev, 1, t < 0 || t > 50 ? 50 : t);
            CHECK(dbs_loop_run(l) >= 0);
        }
        close(ep);
        dbs_loop_close(l);
    }
    return NULL;
}

static void test_threads_close(void)
{
    enum { T = 3 };
    dbs_pool *p = pool_of(4, NULL);
    pthread_t th[T];
    tc_arg a[T];
    for (int i = 0; i < T; i++) {
        a[i] = (tc_arg){.p = p};
        CHECK_EQ(pthread_create(&th[i], NULL, tc_thread, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(a[i].calls, 5 * 12);
        CHECK_EQ(a[i].bad, 0);
    }
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    CHECK_EQ(stats_of(p).in_use, 0);
    /* the pool still serves */
    dbs_session *s = open_ok(p);
    dbs_session_close(s);
    dbs_pool_close(p);
}


/* A loop's max_connections defaults to, and is capped at, the pool's
 * pool_size + max_overflow in every mode: on a NONE pool, which opens a
 * connection per user and bounds its blocking sessions by nothing, a loop
 * held as many connections as its queue could fill (20 for 40 units on
 * PostgreSQL, each worker's on SQLite and MariaDB) against pool_size 2. */
static void none_tune(dbs_config *cfg)
{
    cfg->mode = DBS_POOL_NONE;
    cfg->max_overflow = 1;
}

static void test_none_ceiling(void)
{
    enum { N = 40 };
    atomic_store(&dbs__fault.armed, 1);
    dbs_pool *p = pool_of(2, none_tune);
    atomic_store(&dbs__fault.armed, 0);
    int base = atomic_load(&dbs__fault.live);
    atomic_store(&dbs__fault.live_peak, base);
    const char *sql = is_pg      ? "SELECT pg_sleep(0.05)"
                      : is_mysql ? "SELECT SLEEP(0.05)"
                                 : "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                   "FROM c WHERE x < 100000) SELECT count(*) FROM c";
    for (int depth = 1; depth <= 16; depth += 15) {
        dbs_loop_config lc;
        dbs_loop_config_init(&lc);
        lc.pipeline_depth = depth;
        dbs_error err;
        dbs_loop *l = dbs_loop_open(p, &lc, &err);
        if (!l)
            CHECK_FAIL("dbs_loop_open: %s", err.message);
        static res r[N];
        for (int i = 0; i < N; i++)
            submit(unit1(l, 0, sql), &r[i]);
        drain(l);
        for (int i = 0; i < N; i++)
            CHECK_RC(r[i], DBS_OK);
        settle(l, p);
        dbs_loop_close(l);
    }
    CHECK_INT(atomic_load(&dbs__fault.live_peak) - base, <=, 3);
    dbs_pool_close(p);
}

/* ---- the rounds of one dbs_loop_run ---- */

/* A run goes round (timers, dispatch, callbacks) while callbacks ran, up
 * to a cap, so that callbacks submitting without end cannot keep it
 * forever. A unit submitted by a callback of the last round is ready all
 * the same: the loop must ask to be run again at once (timeout 0), not
 * leave it for its acquire bound. A chain of units each ending in the
 * round after the one that submitted it (its own timeout, 1 ms, is past
 * when the next round's timers run) takes one round per unit; after len
 * of them a real unit goes out. Every len around the cap, and around
 * twice the cap (the chain carries on into a second run). */
typedef struct chain {
    dbs_loop *l;
    int left;
    int links;
    int rc_bad;
    res fin;
} chain;

static void chain_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    (void)err;
    chain *c = arg;
    /* the first link was cancelled, the others timed out */
    if (rc != (c->links == 0 ? DBS_ECANCELED : DBS_ETIMEOUT))
        c->rc_bad = rc;
    c->links++;
    if (c->left-- > 0) {
        dbs_unit *n = unit1(c->l, 0, "SELECT 1");
        CHECK_EQ(dbs_unit_set_timeout(n, 1), DBS_OK);
        dbs_error e;
        CHECK_OK(dbs_unit_submit(n, chain_done, c, &e), &e);
        dbs__sleep_ms(2); /* its deadline is past when the next round begins */
    } else {
        submit(unit1(c->l, 0, "SELECT 7"), &c->fin);
    }
}

static void test_round_cap(void)
{
    dbs_pool *p = pool_of(1, long_acquire); /* the acquire bound: 60 s */
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    int ep = watch(l);
    static const int lens[][2] = {{58, 72}, {124, 138}};
    for (int k = 0; k < 2; k++)
        for (int len = lens[k][0]; len <= lens[k][1]; len++) {
            chain c = {.l = l, .left = len};
            /* the first link: ends at once (cancelled while queued) */
            dbs_unit *u = unit1(l, 0, "SELECT 1");
            CHECK_OK(dbs_unit_submit(u, chain_done, &c, &err), &err);
            dbs_unit_cancel(u);
            int64_t end = now_ms() + 20000;
            while (c.fin.calls == 0 && now_ms() < end) {
                int t = dbs_loop_timeout_ms(l);
                /* the only unit that can wait for a connection is the
                 * last, which the pool's only connection serves at once */
                if (c.links == len + 1 && t > 30000)
                    CHECK_FAIL("chain of %d: the loop asks to sleep %d ms (the "
                               "acquire bound) while the unit submitted by the last "
                               "callback is ready to go out",
                               len, t);
                int64_t left = end - now_ms();
                if (t < 0 || t > left)
                    t = (int)(left > 0 ? left : 0);
                struct epoll_event ev;
                int n = epoll_wait(ep, &ev, 1, t);
                CHECK(n >= 0 || errno == EINTR);
                CHECK(dbs_loop_run(l) >= 0);
            }
            CHECK_EQ(c.links, len + 1);
            CHECK_EQ(c.rc_bad, 0);
            if (c.fin.calls != 1)
                CHECK_FAIL("chain of %d: the unit submitted by its last callback did "
                           "not run",
                           len);
            CHECK_RC(c.fin, DBS_OK);
            CHECK_EQ(c.fin.val, 7);
        }
    close(ep);
    settle(l, p);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

static bool want(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

/* ---- nothing one unit did is visible to the next ----
 *
 * Each kind of session state the blocking reset tests cover, left by unit
 * N and looked for by unit N+1 on the same connection (pool of one; the
 * backend's pid or connection id checked where the connection stays), the
 * two submitted together, so that on PostgreSQL they share one flight and
 * N+1 is on the wire before N's reset has answered. Unit N ends each way a
 * unit ends: committed, failed by a statement after the state was made,
 * cancelled and timed out in a statement after it (those two discard the
 * connection on every backend, so the check runs on the next one, still
 * in the same flight on PostgreSQL). Then a blocking session's state seen
 * by a unit, and a unit's by a blocking session, on the same pool. */
typedef struct lk_res {
    int calls, rc, last, attempts;
    int64_t id;
    char text[256];
    char sqlstate[6];
    char msg[512];
} lk_res;

static void lk_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    lk_res *r = arg;
    r->calls++;
    r->rc = rc;
    r->attempts = dbs_unit_attempts(u);
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", err->sqlstate);
    snprintf(r->msg, sizeof r->msg, "%s", err->message);
    r->id = -1;
    snprintf(r->text, sizeof r->text, "(none)");
    if (rc != DBS_OK)
        return;
    dbs_error e;
    dbs_rows *rows = dbs_unit_rows(u, 0);
    if (rows && dbs_rows_next(rows, &e) == 1)
        r->id = dbs_rows_int(rows, 0);
    rows = dbs_unit_rows(u, r->last);
    if (rows && dbs_rows_next(rows, &e) == 1) {
        const char *t = dbs_rows_text(rows, 0, NULL);
        snprintf(r->text, sizeof r->text, "%s", t ? t : "(null)");
    }
}

typedef struct lk_case {
    const char *what;
    const char *dirty[5];  /* run by unit N, after the id (NULL-ended) */
    const char *check[5];  /* run by unit N+1, after the id: the last one's
                              first column is compared with want */
    const char *want;      /* "!SQLSTATE": that error; "<>x": anything
                              but x; else the text ("(null)" for NULL) */
    bool ctx;              /* unit N runs under a context, N+1 under none */
} lk_case;

enum { LK_OK, LK_FAIL, LK_CANCEL, LK_TIMEOUT, LK_BLOCKING_N, LK_BLOCKING_N1, LK_ENDS };
static const char *const lk_end_name[LK_ENDS] = {
    "committed", "failed after it", "cancelled after it", "timed out after it",
    "a blocking session's, seen by a unit", "a unit's, seen by a blocking session"};

static const char *lk_id_sql(void)
{
    return is_pg ? "SELECT pg_backend_pid()" : is_mysql ? "SELECT CONNECTION_ID()" : "SELECT 1";
}

static dbs_unit *lk_unit(dbs_loop *l, const dbs_context *ctx, const char *const *sqls,
                         const char *extra, lk_res *r)
{
    dbs_error err;
    dbs_unit *u = dbs_unit_new(l, ctx, 0, &err);
    if (!u)
        CHECK_FAIL("dbs_unit_new: %s", err.message);
    int last = dbs_unit_add(u, lk_id_sql(), NULL, 0, &err);
    CHECK_EQ(last, 0);
    for (int i = 0; sqls[i]; i++) {
        last = dbs_unit_add(u, sqls[i], NULL, 0, &err);
        if (last < 0)
            CHECK_FAIL("dbs_unit_add %s: %s", sqls[i], err.message);
    }
    if (extra)
        CHECK(dbs_unit_add(u, extra, NULL, 0, &err) > 0);
    memset(r, 0, sizeof *r);
    r->last = last;
    return u;
}

static void lk_submit(dbs_unit *u, lk_res *r)
{
    dbs_error err;
    int last = r->last;
    memset(r, 0, sizeof *r);
    r->last = last;
    if (dbs_unit_submit(u, lk_done, r, &err) != DBS_OK)
        CHECK_FAIL("dbs_unit_submit: %s", err.message);
}

/* A blocking session running sqls (the id first); returns the id, and the
 * last statement's first column in text. */
static int64_t lk_session(dbs_pool *p, const dbs_context *ctx, const char *const *sqls,
                          int n, char *text, size_t cap, char *state)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, ctx, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    int64_t id = query_int(s, lk_id_sql(), NULL, 0);
    snprintf(text, cap, "(none)");
    state[0] = '\0';
    for (int i = 0; i < n && sqls[i]; i++) {
        dbs_rows *r = dbs_query(s, sqls[i], NULL, 0, &err);
        if (!r) {
            snprintf(state, 6, "%s", err.sqlstate);
            break;
        }
        if (dbs_rows_next(r, &err) == 1) {
            const char *t = dbs_rows_text(r, 0, NULL);
            snprintf(text, cap, "%s", t ? t : "(null)");
        }
        dbs_rows_close(r);
    }
    if (!state[0])
        CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    return id;
}

static int lk_attempts;
static void lk_expect(const lk_case *k, int how, int rc, const char *text, const char *state,
                      const char *msg)
{
    const char *w = k->want;
    if (w[0] == '!') {
        if (rc == DBS_OK || strcmp(state, w + 1) != 0)
            CHECK_FAIL("%s (%s): the next user got rc %d sqlstate '%s' (%s), want %s",
                       k->what, lk_end_name[how], rc, state, msg, w);
        return;
    }
    if (rc != DBS_OK)
        CHECK_FAIL("%s (%s): the next user failed: %d %s", k->what, lk_end_name[how], rc, msg);
    if (!strncmp(w, "<>", 2) ? !strcmp(text, w + 2) : strcmp(text, w) != 0)
        CHECK_FAIL("%s (%s): the next user saw '%s', want %s (attempts %d)", k->what, lk_end_name[how], text,
                   w, lk_attempts);
}

static void lk_run(dbs_pool *p, dbs_loop *l, const lk_case *k, int how)
{
    dbs_context alice = {"req-alice", "alice", "tenant-alice"};
    const dbs_context *dctx = k->ctx ? &alice : NULL;
    int nchk = 0;
    while (k->check[nchk])
        nchk++;
    if (how == LK_BLOCKING_N) {
        char text[256], state[6];
        int64_t id = lk_session(p, dctx, k->dirty, 4, text, sizeof text, state);
        lk_res b;
        dbs_unit *ub = lk_unit(l, NULL, k->check, NULL, &b);
        lk_submit(ub, &b);
        drain(l);
        CHECK_EQ(b.calls, 1);
        lk_expect(k, how, b.rc, b.text, b.sqlstate, b.msg);
        if (b.rc == DBS_OK)
            CHECK_EQ(b.id, id);
        settle(l, p);
        return;
    }
    if (how == LK_BLOCKING_N1) {
        lk_res a;
        dbs_unit *ua = lk_unit(l, dctx, k->dirty, NULL, &a);
        lk_submit(ua, &a);
        drain(l);
        CHECK_RC(a, DBS_OK);
        settle(l, p);
        char text[256], state[6];
        int64_t id = lk_session(p, NULL, k->check, nchk, text, sizeof text, state);
        lk_expect(k, how, state[0] ? DBS_ESQL : DBS_OK, text, state, state);
        CHECK_EQ(id, a.id);
        return;
    }
    const char *extra = how == LK_FAIL ? "SELECT * FROM lk_no_such_table"
                        : how == LK_CANCEL || how == LK_TIMEOUT ? long_sql()
                                                                : NULL;
    lk_res a, b;
    dbs_unit *ua = lk_unit(l, dctx, k->dirty, extra, &a);
    if (how == LK_TIMEOUT)
        CHECK_EQ(dbs_unit_set_timeout(ua, 300), DBS_OK);
    dbs_unit *ub = lk_unit(l, NULL, k->check, NULL, &b);
    lk_submit(ua, &a);
    lk_submit(ub, &b);
    if (how == LK_CANCEL) {
        /* the long statement runs, the state made before it */
        for (int i = 0; i < 40 && a.calls == 0; i++) {
            dbs_loop_run(l);
            dbs__sleep_ms(10);
        }
        if (a.calls == 0)
            dbs_unit_cancel(ua);
    }
    drain(l);
    CHECK_EQ(a.calls, 1);
    CHECK_EQ(b.calls, 1);
    if (how == LK_OK)
        CHECK_RC(a, DBS_OK);
    else
        CHECK(a.rc != DBS_OK);
    lk_attempts = b.attempts;
    lk_expect(k, how, b.rc, b.text, b.sqlstate, b.msg);
    if (b.rc == DBS_OK && (how == LK_OK || how == LK_FAIL)) {
        if (b.id != a.id && a.id != -1)
            CHECK_FAIL("%s: not the same connection (%lld, %lld)", k->what, (long long)a.id,
                       (long long)b.id);
    }
    settle(l, p);
}

/* reset_between's pool: on MariaDB, DBS_RESET_TRACKED releases a unit
 * that left nothing the server reported without COM_RESET_CONNECTION (the
 * release statement instead), so the cases run under it too. */
static enum dbs_reset_mode lk_reset_mode = DBS_RESET_FULL;
static void lk_cfg(dbs_config *c)
{
    ctx_cfg(c);
    c->reset = lk_reset_mode;
}

static void test_reset_between(void)
{
    char t[64], sql[256], seq[64], t2[64];
    snprintf(t, sizeof t, "%s", table_name("lk_t"));
    snprintf(t2, sizeof t2, "%s", table_name("lk_u"));
    snprintf(seq, sizeof seq, "%s", table_name("lk_s"));
    dbs_pool *p = pool_of(1, lk_cfg);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INT PRIMARY KEY, v TEXT)", t);
    run_sql(p, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INT PRIMARY KEY)", t2);
    run_sql(p, sql);
    if (is_pg) {
        snprintf(sql, sizeof sql, "CREATE SEQUENCE %s", seq);
        run_sql(p, sql);
    }
    /* the texts that name the tables and the sequence */
    char ins[128], cnt[128], nextv[128], shadow[128], shadow_ins[128], lockt[128], cnt2[128];
    snprintf(ins, sizeof ins, "INSERT OR REPLACE INTO %s VALUES (7, 'x')", t);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s", t);
    snprintf(cnt2, sizeof cnt2, "SELECT count(*) FROM %s", t2);
    snprintf(nextv, sizeof nextv, "SELECT nextval('%s')", seq);
    snprintf(shadow, sizeof shadow, "CREATE TEMP TABLE %s (id int, v text)", t);
    snprintf(shadow_ins, sizeof shadow_ins, "INSERT INTO %s VALUES (1, 'a'), (2, 'b')", t);
    snprintf(lockt, sizeof lockt, "LOCK TABLES %s WRITE", t);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    /* the backend's seeded random() */
    char seeded[300] = "";
    if (is_pg) {
        const char *s[] = {"SELECT setseed(0.5)", "SELECT random()::text", NULL};
        lk_res r;
        dbs_unit *u = lk_unit(l, NULL, s, NULL, &r);
        lk_submit(u, &r);
        drain(l);
        CHECK_RC(r, DBS_OK);
        snprintf(seeded, sizeof seeded, "<>%s", r.text);
        settle(l, p);
    }
    const lk_case pg[] = {
        {"a SET", {"SET app.leak = 'yes'"},
         {"SELECT coalesce(current_setting('app.leak', true), '')"}, "", false},
        {"set_config(..., false)", {"SELECT set_config('app.leak', 'yes', false)"},
         {"SELECT coalesce(current_setting('app.leak', true), '')"}, "", false},
        {"search_path", {"SET search_path = pg_catalog"},
         {"SELECT current_setting('search_path')"}, "\"$user\", public", false},
        {"a role made current", {"SELECT set_config('role', 'lk_role', false)"},
         {"SELECT current_user::text"}, "dbscope", false},
        {"SET ROLE", {"SET ROLE lk_role"}, {"SELECT current_user::text"}, "dbscope", false},
        {"default transaction characteristics",
         {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"},
         {"SELECT current_setting('transaction_isolation') || "
          "current_setting('transaction_read_only')"},
         "read committedoff", false},
        {"the backend's first temporary table", {"CREATE TEMP TABLE lk_tmp (x int)"},
         {"SELECT to_regclass('lk_tmp') IS NULL"}, "t", false},
        {"a temporary table", {"CREATE TEMP TABLE lk_tmp (x int)"},
         {"SELECT to_regclass('lk_tmp') IS NULL"}, "t", false},
        {"a temporary table shadowing a cached statement's", {shadow, shadow_ins, cnt},
         {cnt}, "0", false},
        {"a cached plan, shadowed by the next user's temporary table", {cnt},
         {shadow, shadow_ins, cnt}, "2", false},
        {"PREPARE", {"PREPARE lk_p AS SELECT 1"},
         {"SELECT count(*) FROM pg_prepared_statements WHERE from_sql"}, "0", false},
        {"a cursor WITH HOLD", {"DECLARE lk_c CURSOR WITH HOLD FOR SELECT 1"},
         {"SELECT coalesce(string_agg(name || ':' || is_holdable || ':' || statement, ','), '') FROM pg_cursors WHERE name <> ''"}, "", false},
        {"LISTEN", {"LISTEN lk_channel"}, {"SELECT count(*) FROM pg_listening_channels()"},
         "0", false},
        {"a session advisory lock", {"SELECT pg_advisory_lock(4242)"},
         {"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
          "AND pid = pg_backend_pid()"},
         "0", false},
        {"lastval()", {nextv}, {"SELECT lastval()"}, "!55000", false},
        {"the seed of random()", {"SELECT setseed(0.5)"}, {"SELECT random()::text"}, seeded,
         false},
        {"the request context", {"SELECT 1"},
         {"SELECT current_setting('app.user_id', true) || '|' || "
          "current_setting('app.request_id', true) || '|' || "
          "current_setting('app.tenant_id', true)"},
         "||", true},
    };
    const lk_case my[] = {
        {"a session variable", {"SET SESSION sql_mode = 'ANSI_QUOTES'"},
         {"SELECT @@session.sql_mode = @@global.sql_mode"}, "1", false},
        {"a user variable (SET)", {"SET @lk = 42"}, {"SELECT @lk"}, "(null)", false},
        {"a user variable (:=)", {"SELECT @lk2 := 42"}, {"SELECT @lk2"}, "(null)", false},
        {"a user variable (INTO)", {"SELECT 42 INTO @lk3"}, {"SELECT @lk3"}, "(null)", false},
        {"a temporary table", {"CREATE TEMPORARY TABLE lk_tmp (x int)"},
         {"SELECT count(*) FROM information_schema.tables WHERE table_name = 'lk_tmp'",
          "CREATE TEMPORARY TABLE lk_tmp (x int)", "SELECT 'made'"},
         "made", false},
        {"LAST_INSERT_ID()", {"SELECT LAST_INSERT_ID(42)"}, {"SELECT LAST_INSERT_ID()"}, "0",
         false},
        /* not held by this connection: a unit cancelled or timed out
         * ends with a KILL of its connection, whose session the server
         * ends (and its named locks frees) a moment later */
        {"GET_LOCK", {"SELECT GET_LOCK('lk_lock', 0)"},
         {"SELECT IFNULL(IS_USED_LOCK('lk_lock') <> CONNECTION_ID(), 1)"}, "1", false},
        {"LOCK TABLES", {lockt}, {cnt2}, "0", false},
        {"USE", {"USE information_schema"}, {"SELECT DATABASE()"}, "dbscope", false},
        {"the request context", {"SELECT 1"},
         {"SELECT concat_ws('|', @`app.user_id`, @`app.request_id`, @`app.tenant_id`, 'end')"},
         "end", true},
    };
    const lk_case sq[] = {
        {"last_insert_rowid()", {ins}, {"SELECT last_insert_rowid()"}, "0", false},
        {"changes()", {ins}, {"SELECT changes()"}, "0", false},
        {"a PRAGMA", {"PRAGMA recursive_triggers = 1"}, {"PRAGMA recursive_triggers"}, "0",
         false},
        {"PRAGMA cache_size", {"PRAGMA cache_size = 123"}, {"PRAGMA cache_size"}, "<>123",
         false},
        {"a temporary table", {"CREATE TEMP TABLE lk_tmp (x)"},
         {"SELECT count(*) FROM temp.sqlite_master WHERE name <> 'dbscope_nochange'"}, "0", false},
        {"a temporary view", {"CREATE TEMP VIEW lk_v AS SELECT 1"},
         {"SELECT count(*) FROM temp.sqlite_master WHERE name <> 'dbscope_nochange'"}, "0", false},
    };
    const lk_case *cases = is_pg ? pg : is_mysql ? my : sq;
    size_t n = is_pg ? sizeof pg / sizeof pg[0]
               : is_mysql ? sizeof my / sizeof my[0] : sizeof sq / sizeof sq[0];
    if (is_pg) {
        /* a role the test's user may SET ROLE to (it has CREATEROLE) */
        run_sql(p, "DO $$BEGIN CREATE ROLE lk_role; EXCEPTION WHEN duplicate_object THEN "
                   "NULL; END$$");
        dbs_session *s = open_ok(p);
        dbs_rows *r = dbs_query(s, "GRANT lk_role TO CURRENT_USER", NULL, 0, &err);
        if (r)
            dbs_rows_close(r);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }
    for (size_t i = 0; i < n; i++) {
        for (int how = 0; how < LK_ENDS; how++) {
            lk_run(p, l, &cases[i], how);
        }
        printf("reset_between: %s: not seen by the next user (%d ways%s)\n", cases[i].what,
               LK_ENDS, lk_reset_mode == DBS_RESET_TRACKED ? ", DBS_RESET_TRACKED" : "");
    }
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    snprintf(sql, sizeof sql, "DROP TABLE %s", t);
    run_sql(p, sql);
    snprintf(sql, sizeof sql, "DROP TABLE %s", t2);
    run_sql(p, sql);
    if (is_pg) {
        snprintf(sql, sizeof sql, "DROP SEQUENCE %s", seq);
        run_sql(p, sql);
    }
    dbs_pool_close(p);
}

/* A unit's statements see what its earlier statements did, as they do
 * in a blocking session: a temporary table that shadows a real one is
 * the one the statements after it write and read, also on a backend that
 * already has a temporary schema (PostgreSQL) and when the statements are
 * cached; a table made by the unit is there for its next statement. On
 * PostgreSQL every statement new to the connection's cache used to be
 * parsed before the unit's BEGIN, so names resolved before the statements
 * ahead of it ran: the rows meant for the temporary table went into the
 * real one, committed, for every user to see. */
static void test_unit_sees_own(void)
{
    char t[64], nt[64], sql[256];
    snprintf(t, sizeof t, "%s", table_name("own_t"));
    snprintf(nt, sizeof nt, "%s", table_name("own_new"));
    dbs_pool *p = pool_of(1, NULL);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INT PRIMARY KEY, v TEXT)", t);
    run_sql(p, sql);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    char mk[128], ins[128], cnt[128], mk2[128], ins2[128], cnt2[128], drop2[128];
    snprintf(mk, sizeof mk, "CREATE TEMPORARY TABLE %s (id INT, v TEXT)", t);
    snprintf(ins, sizeof ins, "INSERT INTO %s VALUES (1, 'a'), (2, 'b')", t);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s", t);
    snprintf(mk2, sizeof mk2, "CREATE TABLE %s (x INT)", nt);
    snprintf(ins2, sizeof ins2, "INSERT INTO %s VALUES (1)", nt);
    snprintf(cnt2, sizeof cnt2, "SELECT count(*) FROM %s", nt);
    snprintf(drop2, sizeof drop2, "DROP TABLE %s", nt);
    const char *first[] = {"CREATE TEMPORARY TABLE own_first (x INT)", NULL};
    const char *shadow[] = {mk, ins, cnt, NULL};
    const char *made[] = {mk2, ins2, cnt2, NULL};
    for (int round = 0; round < 3; round++) {
        lk_res r;
        if (round == 0) {
            /* the backend's temporary schema, made by a unit before */
            dbs_unit *u = lk_unit(l, NULL, first, NULL, &r);
            lk_submit(u, &r);
            drain(l);
            CHECK_RC(r, DBS_OK);
            settle(l, p);
        }
        dbs_unit *u = lk_unit(l, NULL, shadow, NULL, &r);
        lk_submit(u, &r);
        drain(l);
        CHECK_RC(r, DBS_OK);
        if (strcmp(r.text, "2") != 0)
            CHECK_FAIL("round %d: the unit's own temporary table holds %s rows, want 2", round,
                       r.text);
        settle(l, p);
        dbs_session *s = open_ok(p);
        CHECK_EQ(query_int(s, cnt, NULL, 0), 0); /* the real table */
        dbs_session_close(s);
        u = lk_unit(l, NULL, made, NULL, &r);
        lk_submit(u, &r);
        drain(l);
        CHECK_RC(r, DBS_OK);
        CHECK_STR(r.text, "1");
        settle(l, p);
        run_sql(p, drop2);
    }
    printf("unit_sees_own: a unit's statements see its temporary table and its new table\n");
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    snprintf(sql, sizeof sql, "DROP TABLE %s", t);
    run_sql(p, sql);
    dbs_pool_close(p);
}

/* The guard before a unit queued behind an unanswered reset compares the
 * reset's marker with pg_catalog's own operator. A unit that put a schema
 * of its own ahead of pg_catalog in search_path, with an "=" there that
 * says every two texts are equal, and that made its own reset fail (it
 * deallocated one of the reset's named statements) passed the guard of
 * the unit behind it, which then ran on the unreset session and read what
 * the first one left. PostgreSQL only. */
static void test_guard_operator(void)
{
    dbs_pool *p = pool_of(1, NULL);
    run_sql(p, "CREATE SCHEMA IF NOT EXISTS dbs_evil");
    run_sql(p, "CREATE OR REPLACE FUNCTION dbs_evil.same(text, text) RETURNS boolean "
               "LANGUAGE sql IMMUTABLE AS 'SELECT true'");
    run_sql(p, "DROP OPERATOR IF EXISTS dbs_evil.= (text, text)");
    run_sql(p, "CREATE OPERATOR dbs_evil.= (LEFTARG = text, RIGHTARG = text, "
               "FUNCTION = dbs_evil.same)");
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    /* a unit first, so that the reset's named statements exist */
    lk_res r0;
    const char *none[] = {NULL};
    dbs_unit *u = lk_unit(l, NULL, none, NULL, &r0);
    lk_submit(u, &r0);
    drain(l);
    CHECK_RC(r0, DBS_OK);
    for (int round = 0; round < 3; round++) {
        const char *dirty[] = {
            "SELECT pg_catalog.set_config('search_path', 'dbs_evil, pg_catalog', false)",
            "SELECT pg_catalog.set_config('app.guard_leak', 'secret', false)",
            "DEALLOCATE dbs_r0", NULL};
        const char *check[] = {"SELECT pg_catalog.current_setting('app.guard_leak', true)",
                               NULL};
        lk_res ra, rb;
        dbs_unit *a = lk_unit(l, NULL, dirty, NULL, &ra);
        dbs_unit *b = lk_unit(l, NULL, check, NULL, &rb);
        lk_submit(a, &ra);
        lk_submit(b, &rb);
        drain(l);
        fprintf(stderr, "  guard_operator %d: a %d (%s), b %d pid %lld vs %lld: %s (%s)\n", round,
                ra.rc, ra.msg, rb.rc, (long long)rb.id, (long long)ra.id, rb.text, rb.msg);
        if (rb.rc == DBS_OK && !strcmp(rb.text, "secret"))
            CHECK_FAIL("round %d: the unit behind one whose reset failed read its setting", round);
        settle(l, p);
    }
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    run_sql(p, "DROP SCHEMA dbs_evil CASCADE");
    dbs_pool_close(p);
}

/* ---- re-entrancy and threads ---- */

/* A callback that blocks for a while (a program's slow handler) delays
 * the loop, not the pool: what the pool handed over meanwhile is the
 * loop's before any bound is judged. A unit waited for a connection a
 * blocking session held; the callback of another unit gave it back and
 * then took longer than acquire_timeout_ms. The pool served the unit's
 * request (at once, or at the barge limit from the loop's own timers),
 * yet the loop fired the acquire bound before reading its mailbox
 * (PostgreSQL: DBS_ETIMEOUT, "none within acquire_timeout_ms", with the
 * connection in its mailbox). The same for a loop run late. */
typedef struct slow_cb {
    dbs_session *s;
    int sleep_ms;
    int calls;
} slow_cb;

static void slow_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u, (void)err;
    slow_cb *x = arg;
    x->calls++;
    CHECK_EQ(rc, DBS_ECANCELED);
    dbs_session_close(x->s); /* its connection goes to the waiting unit */
    x->s = NULL;
    dbs__sleep_ms(x->sleep_ms);
}

/* barge_limit_us 0: the session hands its connection to the loop's
 * request at once (a post in the mailbox); 100 ms: it keeps it for its
 * thread, and the loop's timers serve the request in order at that limit,
 * which passed during the callback too. */
static int barge_us;
static void blocked_tune(dbs_config *c)
{
    c->acquire_timeout_ms = 200;
    c->barge_limit_us = barge_us;
}

static void blocked_callback(int barge)
{
    barge_us = barge;
    dbs_pool *p = pool_of(1, blocked_tune);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    slow_cb x = {.s = open_ok(p), .sleep_ms = 900};
    res r;
    submit(unit1(l, 0, "SELECT 5"), &r);
    CHECK(dbs_loop_run(l) >= 0); /* it asks the pool; the session holds it */
    dbs_unit *a = unit1(l, 0, "SELECT 1");
    CHECK_OK(dbs_unit_submit(a, slow_done, &x, &err), &err);
    dbs_unit_cancel(a); /* its callback runs at the next run */
    CHECK(dbs_loop_run(l) >= 1);
    CHECK_EQ(x.calls, 1);
    drain(l);
    CHECK_EQ(r.calls, 1);
    CHECK_RC(r, DBS_OK);
    CHECK_EQ(r.val, 5);
    settle(l, p);
    dbs_loop_close(l);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

static void test_blocked_callback(void)
{
    blocked_callback(0);
    blocked_callback(100000);
}

/* Every owner-only call from another thread while the owner runs the
 * loop: refused, nothing changed, and no data race (TSan). */
typedef struct other_thread {
    dbs_loop *l;
    dbs_unit *pending; /* submitted by the owner */
    dbs_unit *fresh;   /* made by the owner, not submitted */
    atomic_int go, stop;
    int submit_rc, run_rc, pending_rc, new_null, new_code, fd_ok, ctx_seen;
} other_thread;

static void *other_calls(void *arg)
{
    other_thread *o = arg;
    while (!atomic_load(&o->go))
        dbs__sleep_ms(1);
    dbs_error err;
    for (int i = 0; i < 50; i++) {
        dbs_loop_close(o->l); /* refused, with a line on stderr */
        dbs_unit_cancel(o->pending);
        o->submit_rc = dbs_unit_submit(o->fresh, on_done, NULL, &err);
        o->run_rc = dbs_loop_run(o->l);
        o->pending_rc = dbs_loop_pending(o->l);
        dbs_unit *u = dbs_unit_new(o->l, NULL, 0, &err);
        o->new_null += u == NULL;
        o->new_code = err.code;
        o->fd_ok += dbs_loop_fd(o->l) >= 0;
        (void)dbs_loop_timeout_ms(o->l);
        o->ctx_seen += dbs_unit_context(o->pending) != NULL;
    }
    atomic_store(&o->stop, 1);
    return NULL;
}

static void test_threads_refused(void)
{
    dbs_pool *p = pool_of(1, NULL);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    res r[2];
    other_thread o = {.l = l};
    /* it waits for the connection this session holds: pending throughout,
     * and cancelled for sure (one in flight on PostgreSQL may commit) */
    dbs_session *s = open_ok(p);
    o.pending = unit1(l, 0, "SELECT 1");
    submit(o.pending, &r[0]);
    o.fresh = unit1(l, 0, "SELECT 7");
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, other_calls, &o), 0);
    atomic_store(&o.go, 1);
    while (!atomic_load(&o.stop)) {
        CHECK(dbs_loop_run(l) >= 0);
        dbs__sleep_ms(1);
    }
    pthread_join(th, NULL);
    CHECK_EQ(o.submit_rc, DBS_EMISUSE);
    CHECK_EQ(o.run_rc, DBS_EMISUSE);
    CHECK_EQ(o.pending_rc, DBS_EMISUSE);
    CHECK_EQ(o.new_null, 50);
    CHECK_EQ(o.new_code, DBS_EMISUSE);
    CHECK_EQ(o.fd_ok, 50);
    CHECK_EQ(o.ctx_seen, 0); /* the owner's only */
    /* nothing was cancelled, closed or submitted by the other thread */
    CHECK_EQ(r[0].calls, 0);
    CHECK_EQ(dbs_loop_pending(l), 1);
    dbs_unit_cancel(o.pending);
    dbs_session_close(s);
    submit(o.fresh, &r[1]); /* left as it was: the owner's to submit */
    drain(l);
    CHECK_RC(r[0], DBS_ECANCELED);
    CHECK_RC(r[1], DBS_OK);
    CHECK_EQ(r[1].val, 7);
    settle(l, p);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* dbs_pool_shutdown from a unit's callback, with units of the loop still
 * waiting for a connection: they complete with DBS_ECLOSED, as the
 * header says ("a loop still open gets DBS_ECLOSED for its units from
 * then on"), on every backend, once each, and every connection comes
 * back. */
typedef struct shut_cb {
    dbs_pool *p;
    int calls, rc;
} shut_cb;

static void shut_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u, (void)err;
    shut_cb *x = arg;
    x->calls++;
    CHECK_EQ(rc, DBS_OK);
    x->rc = dbs_pool_shutdown(x->p, 0);
}

static void test_shutdown_units(void)
{
    dbs_pool *p = pool_of(1, NULL);
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.max_connections = 1;
    lc.pipeline_depth = 1;
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    CHECK(l != NULL);
    shut_cb x = {.p = p};
    enum { N = 4 };
    res r[N];
    CHECK_OK(dbs_unit_submit(unit1(l, 0, "SELECT 1"), shut_done, &x, &err), &err);
    for (int i = 0; i < N; i++)
        submit(unit1(l, 0, "SELECT 2"), &r[i]);
    drain(l);
    CHECK_EQ(x.calls, 1);
    CHECK_EQ(x.rc, 0);
    /* The first may have gone out before the callback ran (PostgreSQL
     * sends it on the connection the one before freed, in the same run):
     * it runs on as an open session does. The others had not; PostgreSQL's
     * loop used to start each of them on the connection it held and
     * commit it, after the shutdown. */
    CHECK_EQ(r[0].calls, 1);
    if (r[0].rc != DBS_OK)
        CHECK_RC(r[0], DBS_ECLOSED);
    for (int i = 1; i < N; i++) {
        CHECK_EQ(r[i].calls, 1);
        CHECK_RC(r[i], DBS_ECLOSED);
    }
    dbs_unit *u = unit1(l, 0, "SELECT 1");
    CHECK_EQ(dbs_unit_submit(u, on_done, &r[0], &err), DBS_ECLOSED);
    settle(l, p);
    dbs_loop_close(l);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* Closing the loop while units that fail before their COMMIT (an unknown
 * table) end on the workers: none of them may be reported
 * DBS_ECOMMIT_UNKNOWN ("it may have committed"), which the header keeps
 * for a unit whose COMMIT had gone out. A worker marks its unit over
 * before it closes the unit's session (a reset, a round trip on MariaDB)
 * and posts it; a close landing then took any unit so marked for one that
 * may have committed. PostgreSQL pipelines every unit's COMMIT with its
 * statements: there, one in flight is DBS_ECOMMIT_UNKNOWN as documented. */
static void test_close_failing(void)
{
    enum { N = 32 };
    dbs_pool *p = pool_of(4, NULL);
    dbs_error err;
    int unknown = 0, cancelled = 0;
    for (int round = 0; round < 100; round++) {
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        CHECK(l != NULL);
        res r[N];
        for (int i = 0; i < N; i++)
            submit(unit1(l, 0, "SELECT * FROM dbscope_no_such_table"), &r[i]);
        /* closes at varied points of the units' runs */
        int64_t until = dbs__now_ns() + (int64_t)(round % 20) * 150000;
        do
            dbs_loop_run(l);
        while (dbs__now_ns() < until);
        dbs_loop_close(l);
        for (int i = 0; i < N; i++) {
            CHECK_EQ(r[i].calls, 1);
            if (r[i].rc == DBS_ECOMMIT_UNKNOWN) {
                unknown++;
                if (!is_pg)
                    CHECK_FAIL("unit %d of round %d: DBS_ECOMMIT_UNKNOWN, though it failed "
                               "before its COMMIT: %s", i, round, r[i].msg);
            } else if (r[i].rc == DBS_ECANCELED) {
                cancelled++;
            } else {
                CHECK_RC(r[i], DBS_ESQL);
            }
        }
    }
    fprintf(stderr, "  close while failing: %d cancelled, %d commit unknown\n", cancelled,
            unknown);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    CHECK_EQ(stats_of(p).in_use, 0);
    dbs_pool_close(p);
}

/* ---- a loop whose owner thread exits without closing it ---- */

/* The thread's exit closes its loops as dbs_loop_close would (callbacks
 * aside): a loop that held every connection of a small pool, and had one
 * more asked for in the pool's queue, gives them back and takes its
 * request out of the queue, reported as a leak naming the line that
 * opened it. Before, the loop was leaked with its connections and its
 * request: the pool served no one again. */
enum { OX_SIZE = 3, OX_UNITS = OX_SIZE }; /* one connection is the main thread's */

static pthread_mutex_t ox_mu = PTHREAD_MUTEX_INITIALIZER;
static int ox_leaks, ox_recovered, ox_line;
static char ox_file[256], ox_reason[512], ox_recovered_reason[512];

static void ox_event(const dbs_event *ev, void *arg)
{
    (void)arg;
    if (ev->kind != DBS_EVENT_LEAK && ev->kind != DBS_EVENT_LEAK_RECOVERED)
        return;
    pthread_mutex_lock(&ox_mu);
    if (ev->kind == DBS_EVENT_LEAK) {
        ox_leaks++;
        snprintf(ox_file, sizeof ox_file, "%s", ev->file ? ev->file : "(null)");
        ox_line = ev->line;
        snprintf(ox_reason, sizeof ox_reason, "%s", ev->reason ? ev->reason : "");
    } else {
        ox_recovered++;
        snprintf(ox_recovered_reason, sizeof ox_recovered_reason, "%s",
                 ev->reason ? ev->reason : "");
    }
    pthread_mutex_unlock(&ox_mu);
}

static void ox_cfg(dbs_config *c)
{
    /* far past the waits below: the loop's worker, waiting for a
     * connection, leaves the queue because its loop closed, not at its
     * acquire bound */
    c->acquire_timeout_ms = 60000;
    c->statement_timeout_ms = 60000;
    c->log_events = 0;
    c->on_event = ox_event;
}

struct ox_arg {
    dbs_pool *p;
    int line;         /* of its dbs_loop_open */
    res r[OX_UNITS];
    bool closed_one;  /* also opens a loop it closes by hand */
    bool stalled;     /* the units never got where they should */
};

/* Runs l without waiting longer than 10 ms at a time (units in flight
 * leave it no deadline) until the pool holds what the test wants. */
static bool ox_until(dbs_loop *l, dbs_pool *p, int in_use, int waiting)
{
    int ep = watch(l);
    int64_t end = now_ms() + 30000;
    dbs_stats st = stats_of(p);
    while ((st.in_use != in_use || st.waiting != waiting) && now_ms() < end) {
        struct epoll_event ev;
        int t = dbs_loop_timeout_ms(l);
        (void)epoll_wait(ep, &ev, 1, t < 0 || t > 10 ? 10 : t);
        CHECK(dbs_loop_run(l) >= 0);
        st = stats_of(p);
    }
    close(ep);
    return st.in_use == in_use && st.waiting == waiting;
}

static void *ox_thread(void *v)
{
    struct ox_arg *a = v;
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.pipeline_depth = 1; /* a connection a unit */
    lc.workers = OX_UNITS + 1;
    if (a->closed_one) {
        dbs_loop *other = dbs_loop_open(a->p, &lc, &err);
        CHECK(other != NULL);
        dbs_loop_close(other); /* closed by hand: not the exit's */
    }
    a->line = __LINE__ + 1;
    dbs_loop *l = dbs_loop_open(a->p, &lc, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    /* OX_SIZE - 1 units on the connections the main thread left, the last
     * one waiting in the pool's queue behind them */
    for (int i = 0; i < OX_UNITS; i++)
        submit(unit1(l, 0, long_sql()), &a->r[i]);
    if (!ox_until(l, a->p, OX_SIZE, 1))
        a->stalled = true;
    dbs__sleep_ms(50); /* the statements under way on the server */
    return NULL; /* leaves l open */
}

struct ox_take {
    dbs_pool *p;
    int got;
    char msg[512];
};

/* Another thread takes every connection of the pool at once. */
static void *ox_take_all(void *v)
{
    struct ox_take *t = v;
    dbs_session *s[OX_SIZE];
    for (int i = 0; i < OX_SIZE; i++) {
        dbs_error err;
        s[i] = dbs_session_open(t->p, NULL, &err);
        if (!s[i]) {
            snprintf(t->msg, sizeof t->msg, "%s", err.message);
            break;
        }
        if (query_int(s[i], "SELECT 1", NULL, 0) == 1)
            t->got++;
    }
    if (t->got == OX_SIZE)
        CHECK_EQ(stats_of(t->p).in_use, OX_SIZE);
    for (int i = 0; i < t->got; i++)
        dbs_session_close(s[i]);
    return NULL;
}

static void test_owner_exits(void)
{
    for (int round = 0; round < 2; round++) {
        dbs_pool *p = pool_of(OX_SIZE, ox_cfg);
        dbs_stats before = stats_of(p);
        pthread_mutex_lock(&ox_mu);
        ox_leaks = ox_recovered = 0;
        pthread_mutex_unlock(&ox_mu);
        dbs_session *held = open_ok(p);
        CHECK_EQ(query_int(held, "SELECT 1", NULL, 0), 1);
        static struct ox_arg a;
        memset(&a, 0, sizeof a);
        a.p = p;
        a.closed_one = round == 1;
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, ox_thread, &a), 0);
        pthread_join(th, NULL);
        CHECK(!a.stalled);
        /* the request that waited in the pool's queue left it */
        WAIT_UNTIL(stats_of(p).waiting == 0, 15000);
        CHECK_EQ(stats_of(p).waiting, 0);
        /* the units ended with their loop: their callbacks did not run on
         * a thread that was gone */
        for (int i = 0; i < OX_UNITS; i++)
            CHECK_EQ(a.r[i].calls, 0);
        dbs_session_close(held);
        struct ox_take t = {.p = p};
        CHECK_EQ(pthread_create(&th, NULL, ox_take_all, &t), 0);
        pthread_join(th, NULL);
        if (t.got != OX_SIZE)
            CHECK_FAIL("round %d: %d of %d connections after the loop's owner exited: %s",
                       round, t.got, OX_SIZE, t.msg);
        WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
        dbs_stats st = stats_of(p);
        CHECK_EQ(st.in_use, 0);
        CHECK_EQ(st.waiting, 0);
        CHECK_EQ(st.leaks, before.leaks + 1);
        CHECK_EQ(st.leaks_recovered, before.leaks_recovered + 1);
        pthread_mutex_lock(&ox_mu);
        CHECK_EQ(ox_leaks, 1);
        CHECK_EQ(ox_recovered, 1);
        CHECK_STR(ox_file, __FILE__);
        CHECK_EQ(ox_line, a.line);
        CHECK_CONTAINS(ox_reason, "thread exited");
        CHECK_CONTAINS(ox_recovered_reason, "cancelled");
        pthread_mutex_unlock(&ox_mu);
        dbs_pool_close(p);
    }
}

/* A cancel or pthread_exit in a unit's callback unwinds dbs_loop_run: a
 * cleanup handler's dbs_loop_close closes the loop there (the other
 * unit's callback runs in it, as in any close; nothing is reported as
 * a leak, for nothing is left to the thread's exit) and the loop's
 * connections go back. Before, the loop stayed marked inside its run:
 * the close was refused, and the thread's exit closed the loop as a
 * leak without the other callback. */
struct cu_arg {
    dbs_pool *p;
    bool by_exit;
    dbs_loop *l;
    int calls[2];
    int rcs[2];
    bool ending;    /* a callback has ended the thread */
};

struct cu_unit {
    struct cu_arg *a;
    int i;
};

static void cu_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    (void)err;
    struct cu_unit *cu = arg;
    struct cu_arg *a = cu->a;
    a->calls[cu->i]++;
    a->rcs[cu->i] = rc;
    if (a->ending)
        return; /* the other unit's, run by the handler's close */
    a->ending = true;
    if (a->by_exit)
        pthread_exit(NULL);
    pthread_cancel(pthread_self());
    pthread_testcancel();
    CHECK_FAIL("the callback's own cancel did not act");
}

static void cu_handler(void *v)
{
    struct cu_arg *a = v;
    dbs_loop_close(a->l);
}

static void *cu_thread(void *v)
{
    struct cu_arg *a = v;
    dbs_error err;
    a->l = dbs_loop_open(a->p, NULL, &err);
    if (!a->l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    static struct cu_unit cu[2];
    for (int i = 0; i < 2; i++) {
        cu[i] = (struct cu_unit){a, i};
        dbs_unit *u = unit1(a->l, 0, "SELECT 1");
        if (dbs_unit_submit(u, cu_done, &cu[i], &err) != DBS_OK)
            CHECK_FAIL("dbs_unit_submit: %s", err.message);
    }
    pthread_cleanup_push(cu_handler, a);
    int ep = watch(a->l);
    for (;;)
        step(a->l, ep); /* until a callback ends the thread */
    pthread_cleanup_pop(0);
    return NULL;
}

static void test_callback_unwinds(bool by_exit)
{
    dbs_pool *p = pool_of(2, NULL);
    dbs_stats before = stats_of(p);
    static struct cu_arg a;
    memset(&a, 0, sizeof a);
    a.p = p;
    a.by_exit = by_exit;
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, cu_thread, &a), 0);
    void *ret = &ret;
    CHECK_EQ(pthread_join(th, &ret), 0);
    CHECK(ret == (by_exit ? NULL : PTHREAD_CANCELED));
    /* each callback once: the one that ended the thread, and the other
     * in the handler's close (completed, or cancelled by the close) */
    CHECK_EQ(a.calls[0], 1);
    CHECK_EQ(a.calls[1], 1);
    CHECK(a.rcs[0] == DBS_OK || a.rcs[1] == DBS_OK);
    WAIT_UNTIL(stats_of(p).in_use == 0, 20000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.leaks, before.leaks); /* the handler closed it, not the exit */
    CHECK_EQ(st.acquired, st.released);
    dbs_pool_close(p);
}

/* The owner's exit races dbs_pool_close on another thread (TSan): the loop
 * holds the pool until it is closed, whichever ends first; its report and
 * its memory go to the pool before it lets go of it. */
struct ox_race {
    dbs_pool *p;
    atomic_int ready;
};

static void *ox_race_thread(void *v)
{
    struct ox_race *r = v;
    dbs_error err;
    dbs_loop *l = dbs_loop_open(r->p, NULL, &err);
    CHECK(l != NULL);
    res u[2];
    /* a statement in flight (on a worker on SQLite and MariaDB), which the
     * exit interrupts while dbs_pool_close stops the workers */
    submit(unit1(l, 0, long_sql()), &u[0]);
    submit(unit1(l, 0, "SELECT 1"), &u[1]);
    for (int i = 0; i < 20; i++) {
        dbs_loop_run(l);
        dbs__sleep_ms(1);
    }
    atomic_store(&r->ready, 1);
    return NULL; /* leaves l open */
}

static void test_owner_exit_races_close(void)
{
    for (int round = 0; round < 6; round++) {
        static struct ox_race r;
        r.p = pool_of(2, NULL);
        atomic_store(&r.ready, 0);
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, ox_race_thread, &r), 0);
        while (!atomic_load(&r.ready))
            dbs__sleep_ms(1);
        if (round % 2)
            dbs__sleep_ms(1);
        dbs_pool_close(r.p);
        pthread_join(th, NULL);
    }
}

/* A statement in flight on a worker (SQLite, MariaDB) or on the loop's
 * own connection (PostgreSQL) while everything that interrupts it races
 * the ends of its loop and its pool: dbs_unit_cancel, the unit's bound,
 * dbs_loop_close, the owner thread's exit, dbs_pool_shutdown and
 * dbs_pool_close, each on a thread of its own. The interrupt (a KILL
 * from a connection of its own on MariaDB, sqlite3_interrupt, a cancel
 * request) must be over before the connection it names, the job that
 * names it, the workers and the pool are freed: ThreadSanitizer and
 * AddressSanitizer see any that is not, and when dbs_pool_close returns
 * no worker may be left. Rounds vary who goes first; nothing is timed. */
enum ir_mode { IR_CANCEL, IR_BOUND, IR_LOOP_CLOSE, IR_EXIT, IR_SHUTDOWN, IR_MODES };
static const char *const ir_name[IR_MODES] = {"cancel", "bound", "loop_close", "exit",
                                              "shutdown"};
enum { IR_ROUNDS = 30 };

struct ir_arg {
    dbs_pool *p;
    enum ir_mode mode;
    int round;
    res r;
    atomic_int ready;  /* the statement is under way */
    atomic_int go;     /* the other side may act */
    bool stalled;
};

static void ir_cfg(dbs_config *c)
{
    c->acquire_timeout_ms = 60000;
    c->statement_timeout_ms = 60000;
    c->log_events = 0; /* the exits' leak reports */
}

static void *ir_owner(void *v)
{
    struct ir_arg *a = v;
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.workers = 2;
    dbs_loop *l = dbs_loop_open(a->p, &lc, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_unit *u = unit1(l, 0, long_sql());
    if (a->mode == IR_BOUND)
        CHECK_EQ(dbs_unit_set_timeout(u, 1 + a->round % 15), DBS_OK);
    submit(u, &a->r);
    /* under way: a worker's session holds the connection (SQLite,
     * MariaDB), or the loop sent it (PostgreSQL); then a little more,
     * more each round, so the statement is sometimes on the server */
    int ep = watch(l);
    int64_t end = now_ms() + 30000;
    while (stats_of(a->p).in_use < 1 && a->r.calls == 0 && now_ms() < end) {
        struct epoll_event ev;
        (void)epoll_wait(ep, &ev, 1, 1);
        CHECK(dbs_loop_run(l) >= 0);
    }
    if (stats_of(a->p).in_use < 1 && a->r.calls == 0) {
        dbs_stats st = stats_of(a->p);
        fprintf(stderr, "stalled: pending %d in_use %d idle %d waiting %d size %d\n",
                dbs_loop_pending(l), st.in_use, st.idle, st.waiting, st.size);
        a->stalled = true;
    }
    dbs__sleep_ms(a->round % 6);
    atomic_store(&a->ready, 1);
    if (a->round % 2) /* the other side first, or both at once */
        while (!atomic_load(&a->go))
            dbs__sleep_ms(1);
    switch (a->mode) {
    case IR_CANCEL:
        dbs_unit_cancel(u);
        break;
    case IR_BOUND: /* until its bound fired: the loop's timer cancels it */
        for (int i = 0; i < 20 && a->r.calls == 0; i++) {
            struct epoll_event ev;
            (void)epoll_wait(ep, &ev, 1, 1);
            CHECK(dbs_loop_run(l) >= 0);
        }
        break;
    default: break;
    }
    close(ep);
    if (a->mode == IR_EXIT)
        return NULL; /* leaves l open: the exit closes it */
    dbs_loop_close(l);
    return NULL;
}

static void *ir_shutdown(void *v)
{
    dbs_pool *p = v;
    (void)dbs_pool_shutdown(p, 0);
    return NULL;
}

static void test_interrupt_races(void)
{
    for (int mode = 0; mode < IR_MODES; mode++) {
        int callbacks = 0;
        for (int round = 0; round < IR_ROUNDS; round++) {
            static struct ir_arg a;
            memset(&a, 0, sizeof a);
            a.p = pool_of(2, ir_cfg);
            a.mode = (enum ir_mode)mode;
            a.round = round;
            pthread_t owner, shut;
            CHECK_EQ(pthread_create(&owner, NULL, ir_owner, &a), 0);
            while (!atomic_load(&a.ready))
                dbs__sleep_ms(1);
            /* every third round the owner is done first: no race with the
             * pool's close, only with the interrupt itself */
            if (round % 3 == 2) {
                atomic_store(&a.go, 1);
                pthread_join(owner, NULL);
            }
            /* shutdown: two at once (calling it again is harmless), the
             * close after both, as a server's sequence has it */
            if (mode == IR_SHUTDOWN)
                CHECK_EQ(pthread_create(&shut, NULL, ir_shutdown, a.p), 0);
            atomic_store(&a.go, 1);
            if (mode == IR_SHUTDOWN) {
                (void)dbs_pool_shutdown(a.p, 0);
                pthread_join(shut, NULL);
            }
            dbs_pool_close(a.p);
            if (round % 3 != 2)
                pthread_join(owner, NULL);
            if (a.stalled)
                CHECK_FAIL("%s round %d: the statement never got under way", ir_name[mode],
                           round);
            /* a unit's callback runs once, with the failure that ended it;
             * the exit runs none, and the long statement never commits
             * (on PostgreSQL its COMMIT went out in its flight: a close
             * may say it is unknown) */
            CHECK_INT(a.r.calls, <=, 1);
            if (mode == IR_EXIT)
                CHECK_EQ(a.r.calls, 0);
            else
                CHECK_EQ(a.r.calls, 1);
            if (a.r.calls == 1 && a.r.rc != DBS_ECANCELED && a.r.rc != DBS_ECLOSED &&
                a.r.rc != DBS_ETIMEOUT && a.r.rc != DBS_ESTMT_TIMEOUT &&
                !(is_pg && a.r.rc == DBS_ECOMMIT_UNKNOWN))
                CHECK_FAIL("%s round %d: rc %d: %s", ir_name[mode], round, a.r.rc, a.r.msg);
            callbacks += a.r.calls;
        }
        fprintf(stderr, "  %s: %d rounds, %d callbacks\n", ir_name[mode], IR_ROUNDS, callbacks);
    }
}

/* A loop opened before fork(), with a unit on the server: in the child,
 * neither dbs_loop_close nor the exit of the thread that forked sends
 * anything on the parent's connections (a cancel request would end the
 * parent's statement), and the child's calls on it are refused. The
 * parent's unit commits as if no child had been. */
struct ox_fork {
    dbs_pool *p;
    bool by_hand;
    res r;
    int child_status;
};

static void *ox_fork_thread(void *v)
{
    struct ox_fork *f = v;
    dbs_error err;
    dbs_loop *l = dbs_loop_open(f->p, NULL, &err);
    CHECK(l != NULL);
    const char *sql = is_pg      ? "SELECT 7 FROM pg_sleep(0.5)"
                      : is_mysql ? "SELECT 7 + SLEEP(0.5)"
                                 : "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                   "FROM c WHERE x < 3000000) SELECT count(*) FROM c";
    submit(unit1(l, 0, sql), &f->r);
    for (int i = 0; i < 20 && f->r.calls == 0; i++) { /* on its way to the server */
        dbs_loop_run(l);
        dbs__sleep_ms(5);
    }
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* the child: its only thread is this one */
        int bad = dbs_loop_run(l) != DBS_EMISUSE;
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        bad |= u != NULL;
        if (f->by_hand)
            dbs_loop_close(l);
        if (bad)
            _exit(3);
        return NULL; /* the last thread's exit: the process ends with 0 */
    }
    CHECK_EQ(waitpid(pid, &f->child_status, 0), pid);
    drain(l);
    dbs_loop_close(l);
    return NULL;
}

static void test_owner_exit_fork(void)
{
    for (int round = 0; round < 2; round++) {
        static struct ox_fork f;
        memset(&f, 0, sizeof f);
        f.p = pool_of(2, NULL);
        f.by_hand = round == 1;
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, ox_fork_thread, &f), 0);
        pthread_join(th, NULL);
        CHECK(WIFEXITED(f.child_status));
        CHECK_EQ(WEXITSTATUS(f.child_status), 0);
        CHECK_EQ(f.r.calls, 1);
        CHECK_RC(f.r, DBS_OK);
        CHECK_EQ(f.r.val, is_sqlite ? 3000000 : 7);
        WAIT_UNTIL(stats_of(f.p).in_use == 0, 20000);
        CHECK_EQ(stats_of(f.p).in_use, 0);
        dbs_pool_close(f.p);
    }
}

int main(int argc, char **argv)
{
    const char *url = test_url("loop");
    is_pg = test_is_pg(url);
    is_sqlite = strncmp(url, "sqlite:", 7) == 0;
    is_mysql = test_is_mysql(url);
    snprintf(tbl, sizeof tbl, "%s", table_name("loop_t"));

    dbs_pool *p = pool_of(1, NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INT PRIMARY KEY, v TEXT)", tbl);
    run_sql(p, sql);
    if (want(argc, argv, "misuse")) {
        fprintf(stderr, "misuse\n");
        test_misuse(p);
    }
    if (want(argc, argv, "unit_outlives_loop")) {
        fprintf(stderr, "unit_outlives_loop\n");
        test_unit_outlives_loop(p);
    }
    if (want(argc, argv, "tx_refusals")) {
        fprintf(stderr, "tx_refusals\n");
        test_tx_refusals(p);
    }
    if (want(argc, argv, "basic")) {
        fprintf(stderr, "basic\n");
        test_basic(p);
    }
    if (want(argc, argv, "queue_max")) {
        fprintf(stderr, "queue_max\n");
        test_queue_max(p);
    }
    if (want(argc, argv, "read_only")) {
        fprintf(stderr, "read_only\n");
        test_read_only(p);
    }
    if (want(argc, argv, "cancel")) {
        fprintf(stderr, "cancel\n");
        test_cancel(p);
    }
    if (want(argc, argv, "close_pending")) {
        fprintf(stderr, "close_pending\n");
        test_close_pending(p);
    }
    if (want(argc, argv, "close_committing")) {
        fprintf(stderr, "close_committing\n");
        test_close_committing(p);
    }
    if (want(argc, argv, "begin_refused")) {
        fprintf(stderr, "begin_refused\n");
        test_begin_refused(p);
    }
    if (want(argc, argv, "impossible_length")) {
        fprintf(stderr, "impossible_length\n");
        test_impossible_length(p);
    }
    if (want(argc, argv, "many_params")) {
        fprintf(stderr, "many_params\n");
        test_many_params(p);
    }
    if (want(argc, argv, "big")) {
        fprintf(stderr, "big\n");
        test_big(p);
    }
    if (want(argc, argv, "reentry")) {
        fprintf(stderr, "reentry\n");
        test_reentry(p);
    }
    if (want(argc, argv, "no_spin")) {
        fprintf(stderr, "no_spin\n");
        test_no_spin(p);
    }
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(p, sql);
    dbs_pool_close(p);

    if (want(argc, argv, "none_ceiling")) {
        fprintf(stderr, "none_ceiling\n");
        test_none_ceiling();
    }
    if (want(argc, argv, "cancel_waiting")) {
        fprintf(stderr, "cancel_waiting\n");
        test_cancel_waiting();
    }
    if (want(argc, argv, "bounds")) {
        fprintf(stderr, "bounds\n");
        test_bounds();
    }
    if (want(argc, argv, "acquire_bound")) {
        fprintf(stderr, "acquire_bound\n");
        test_acquire_bound();
    }
    if (want(argc, argv, "site")) {
        fprintf(stderr, "site\n");
        test_site();
    }
    if (want(argc, argv, "pool_closed")) {
        fprintf(stderr, "pool_closed\n");
        test_pool_closed();
    }
    if (want(argc, argv, "retry")) {
        fprintf(stderr, "retry\n");
        test_retry();
    }
    if (want(argc, argv, "thousand")) {
        fprintf(stderr, "thousand\n");
        test_thousand();
    }
    if (want(argc, argv, "program")) {
        fprintf(stderr, "program\n");
        test_program();
    }
    if (want(argc, argv, "shared")) {
        fprintf(stderr, "shared\n");
        test_shared();
    }
    if (want(argc, argv, "acquire_zero")) {
        fprintf(stderr, "acquire_zero\n");
        test_acquire_zero();
    }
    if (want(argc, argv, "cancel_wakes")) {
        fprintf(stderr, "cancel_wakes\n");
        test_cancel_wakes();
    }
    if (want(argc, argv, "cancel_workers")) {
        fprintf(stderr, "cancel_workers\n");
        test_cancel_workers();
    }
    if (want(argc, argv, "cancel_churn")) {
        fprintf(stderr, "cancel_churn\n");
        test_cancel_churn();
    }
    if (want(argc, argv, "cancel_pipelined")) {
        fprintf(stderr, "cancel_pipelined\n");
        test_cancel_pipelined();
    }
    if (is_pg && want(argc, argv, "cancel_caught")) {
        fprintf(stderr, "cancel_caught\n");
        test_cancel_caught();
    }
    if (is_pg && want(argc, argv, "bound_trickle")) {
        fprintf(stderr, "bound_trickle\n");
        test_bound_trickle();
    }
    if (is_pg && want(argc, argv, "cancel_caught_always")) {
        fprintf(stderr, "cancel_caught_always\n");
        test_cancel_caught_always();
    }
    if (want(argc, argv, "cancel_lock")) {
        fprintf(stderr, "cancel_lock\n");
        test_cancel_lock();
    }
    if (!is_pg && want(argc, argv, "cancel_between")) {
        fprintf(stderr, "cancel_between\n");
        test_cancel_between();
    }
    if (!is_sqlite && want(argc, argv, "bad_params_down")) {
        fprintf(stderr, "bad_params_down\n");
        test_bad_params_down();
    }
    if (want(argc, argv, "ctx_limits")) {
        fprintf(stderr, "ctx_limits\n");
        test_ctx_limits();
    }
    if (want(argc, argv, "ceiling_killed")) {
        fprintf(stderr, "ceiling_killed\n");
        test_ceiling_killed();
    }
    if (want(argc, argv, "threads_close")) {
        fprintf(stderr, "threads_close\n");
        test_threads_close();
    }
    if (want(argc, argv, "round_cap")) {
        fprintf(stderr, "round_cap\n");
        test_round_cap();
    }
    if (want(argc, argv, "reset_between")) {
        fprintf(stderr, "reset_between\n");
        test_reset_between();
        if (is_mysql) {
            lk_reset_mode = DBS_RESET_TRACKED;
            test_reset_between();
        }
    }
    if (want(argc, argv, "unit_sees_own")) {
        fprintf(stderr, "unit_sees_own\n");
        test_unit_sees_own();
    }
    if (is_pg && want(argc, argv, "guard_operator")) {
        fprintf(stderr, "guard_operator\n");
        test_guard_operator();
    }
    if (want(argc, argv, "blocked_callback")) {
        fprintf(stderr, "blocked_callback\n");
        test_blocked_callback();
    }
    if (want(argc, argv, "threads_refused")) {
        fprintf(stderr, "threads_refused\n");
        test_threads_refused();
    }
    if (want(argc, argv, "close_failing")) {
        fprintf(stderr, "close_failing\n");
        test_close_failing();
    }
    if (want(argc, argv, "shutdown_units")) {
        fprintf(stderr, "shutdown_units\n");
        test_shutdown_units();
    }
    if (want(argc, argv, "owner_exits")) {
        fprintf(stderr, "owner_exits\n");
        test_owner_exits();
    }
    if (want(argc, argv, "callback_unwinds")) {
        fprintf(stderr, "callback_unwinds\n");
        test_callback_unwinds(false);
        test_callback_unwinds(true);
    }
    if (want(argc, argv, "owner_exit_races_close")) {
        fprintf(stderr, "owner_exit_races_close\n");
        test_owner_exit_races_close();
    }
    if (want(argc, argv, "interrupt_races")) {
        fprintf(stderr, "interrupt_races\n");
        test_interrupt_races();
    }
    if (want(argc, argv, "owner_exit_fork")) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
        /* As test_fork_gate: neither sanitizer carries a threaded
         * process's child through fork() (ThreadSanitizer crashes as the
         * child's thread exits). The plain build runs this. */
        fprintf(stderr, "owner_exit_fork: not under a sanitizer\n");
        (void)test_owner_exit_fork;
#else
        fprintf(stderr, "owner_exit_fork\n");
        test_owner_exit_fork();
#endif
    }
    if (want(argc, argv, "dead_loop_owner")) { /* last: its loop's memory stays with its pool */
        fprintf(stderr, "dead_loop_owner\n");
        test_dead_loop_owner();
    }
    printf("test_loop: ok\n");
    return 0;
}
