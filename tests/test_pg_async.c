/* PostgreSQL's non-blocking methods (a_send, a_step, a_cancel, a_idle),
 * driven directly as an event loop drives them: poll() on a_fd with the
 * events a_step asks for. One unit; 16 units in one flight with one failing
 * in the middle (only it fails); what one unit leaves in the session (a
 * LISTEN, a temporary table, a cursor WITH HOLD, a session setting) is not
 * seen by the next unit of another user in the same flight; cancel of
 * pg_sleep(10); the backend killed mid-flight; the connection lost (a
 * real TCP proxy resets it) after the COMMITs went out and ran, their
 * answers held back; the blocking methods on the same connection
 * afterwards, and units again after them; through an event loop, a reset
 * whose answer never comes (the network silent right after the COMMIT's
 * answer) bounded by statement_timeout_ms. */
#include "common.h"
#include "faultproxy.h"
#include "pool_int.h"

#include <poll.h>

static dbs_pool *pool;
static const dbs__driver *drv;
static char tbl[64];

typedef struct tunit {
    dbs__aunit u;
    dbs__astmt st[8];
    dbs_value v[8][2];
    dbs_context ctx;
    bool done;
} tunit;

static void tu_init(tunit *t, const char *user)
{
    memset(t, 0, sizeof *t);
    t->ctx.user_id = user;
    t->u.ctx = &t->ctx;
    t->u.stmts = t->st;
}

static int tu_add(tunit *t, const char *sql, int nparams, int64_t p0, int64_t p1)
{
    int i = (int)t->u.n++;
    t->st[i].sql = sql;
    t->v[i][0] = DBS_INT(p0);
    t->v[i][1] = DBS_INT(p1);
    t->st[i].params = nparams ? t->v[i] : NULL;
    t->st[i].n = (size_t)nparams;
    return i;
}

static void tu_free(tunit *t)
{
    for (size_t i = 0; i < t->u.n; i++)
        if (t->st[i].rows) {
            t->st[i].rows->ops->close(t->st[i].rows);
            t->st[i].rows = NULL;
        }
}

/* Statement i's first column of its first row, as text. */
static const char *tu_text(tunit *t, int i, int col)
{
    dbs_rows *r = t->st[i].rows;
    CHECK(r != NULL);
    dbs_error err;
    if (r->ops->next(r, &err) != 1)
        CHECK_FAIL("statement %d: no row", i);
    const char *s = r->ops->get_text(r, col, NULL);
    return s ? s : "(null)";
}

/* Steps c until every unit sent is handed back, checking they come back
 * in the order sent. */
static void wait_all(void *c, tunit **ts, int n)
{
    int got = 0;
    short want = POLLIN | POLLOUT;
    while (got < n) {
        struct pollfd p = {.fd = drv->a_fd(c), .events = want ? want : POLLIN};
        int r = poll(&p, 1, 1000);
        dbs__aunit *done = NULL;
        int k = drv->a_step(c, r > 0 ? p.revents : 0, &done, &want);
        for (dbs__aunit *u = done; u; u = u->next, k--) {
            CHECK(got < n);
            CHECK(u == &ts[got]->u); /* oldest first */
            ts[got]->done = true;
            got++;
        }
        CHECK_EQ(k, 0);
        if (got < n)
            CHECK(want & POLLIN);
    }
}

/* Steps c until nothing is in flight (the last reset read too). */
static void drain(void *c)
{
    short want = POLLIN;
    dbs__aunit *done = NULL;
    CHECK_EQ(drv->a_step(c, 0, &done, &want), 0);
    while (want) {
        struct pollfd p = {.fd = drv->a_fd(c), .events = want};
        int r = poll(&p, 1, 1000);
        CHECK_EQ(drv->a_step(c, r > 0 ? p.revents : 0, &done, &want), 0);
    }
}

static void send_ok(void *c, tunit *t)
{
    dbs_error err;
    CHECK_OK(drv->a_send(c, &t->u, &err), &err);
}

/* Sends the units together and waits for them all. */
static void flight(void *c, tunit **ts, int n)
{
    for (int i = 0; i < n; i++)
        send_ok(c, ts[i]);
    wait_all(c, ts, n);
    drain(c);
}

static void *new_conn(dbs__conn **dc)
{
    dbs_error err;
    *dc = dbs__conn_open(pool, &err);
    if (!*dc)
        CHECK_FAIL("connect: %s", err.message);
    return (*dc)->impl;
}

static int64_t backend_pid(void *c)
{
    tunit t;
    tu_init(&t, "pid");
    tu_add(&t, "SELECT pg_backend_pid()", 0, 0, 0);
    tunit *ts[] = {&t};
    flight(c, ts, 1);
    CHECK_OK(t.u.rc, &t.u.err);
    int64_t pid = strtoll(tu_text(&t, 0, 0), NULL, 10);
    tu_free(&t);
    return pid;
}

static void test_one_unit(void *c)
{
    char ins[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1), ($2)", tbl);
    tunit t;
    tu_init(&t, "alice");
    tu_add(&t, "SELECT $1::int8 + 1, current_setting('app.user'), "
               "current_setting('transaction_read_only')",
           1, 41, 0);
    tu_add(&t, ins, 2, 1, 2);
    tunit *ts[] = {&t};
    flight(c, ts, 1);
    CHECK_OK(t.u.rc, &t.u.err);
    CHECK(t.u.commit_sent);
    CHECK_STR(tu_text(&t, 0, 0), "42");
    CHECK_STR(t.st[0].rows->ops->get_text(t.st[0].rows, 1, NULL), "alice");
    CHECK_STR(t.st[0].rows->ops->get_text(t.st[0].rows, 2, NULL), "off");
    CHECK(t.st[0].rows->session == NULL);
    CHECK(t.st[1].rows == NULL);
    CHECK_EQ(t.st[1].affected, 2);
    tu_free(&t);
    CHECK_EQ(drv->a_idle(c), 1);

    /* read-only: the database refuses a write */
    tu_init(&t, "alice");
    t.u.read_only = true;
    tu_add(&t, ins, 2, 3, 4);
    flight(c, ts, 1);
    CHECK_EQ(t.u.rc, DBS_ESQL);
    CHECK_STR(t.u.err.sqlstate, "25006");
    CHECK(!t.u.commit_sent);
    CHECK(!drv->is_broken(c));
    tu_free(&t);

    /* what was committed is there, what failed is not */
    tu_init(&t, "alice");
    char cnt[200];
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s", tbl);
    tu_add(&t, cnt, 0, 0, 0);
    flight(c, ts, 1);
    CHECK_OK(t.u.rc, &t.u.err);
    CHECK_STR(tu_text(&t, 0, 0), "2");
    tu_free(&t);
    printf("one unit: rows, rows affected, the context, read-only enforced\n");
}

/* 16 units in one flight, the 8th fails on a duplicate key: only it. */
static void test_pipeline16(void *c)
{
    char ins[200], cnt[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1) RETURNING id", tbl);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s WHERE id >= 100", tbl);
    tunit t[16], *ts[16];
    for (int i = 0; i < 16; i++) {
        tu_init(&t[i], i % 2 ? "bob" : "carol");
        tu_add(&t[i], "SELECT current_setting('app.user')", 0, 0, 0);
        /* the 8th inserts a key that exists (1, from test_one_unit) */
        tu_add(&t[i], ins, 1, i == 7 ? 1 : 100 + i, 0);
        tu_add(&t[i], "SELECT $1::int8 * 2", 1, i, 0);
        ts[i] = &t[i];
    }
    flight(c, ts, 16);
    for (int i = 0; i < 16; i++) {
        if (i == 7) {
            CHECK_EQ(t[i].u.rc, DBS_ECONSTRAINT);
            CHECK_STR(t[i].u.err.sqlstate, "23505");
            CHECK(!t[i].u.commit_sent);
            CHECK(t[i].st[0].rows == NULL);
            continue;
        }
        CHECK_OK(t[i].u.rc, &t[i].u.err);
        CHECK_STR(tu_text(&t[i], 0, 0), i % 2 ? "bob" : "carol");
        char want[24];
        snprintf(want, sizeof want, "%d", 100 + i);
        CHECK_STR(tu_text(&t[i], 1, 0), want);
        snprintf(want, sizeof want, "%d", 2 * i);
        CHECK_STR(tu_text(&t[i], 2, 0), want);
    }
    for (int i = 0; i < 16; i++)
        tu_free(&t[i]);
    tunit k;
    tu_init(&k, "x");
    tu_add(&k, cnt, 0, 0, 0);
    tunit *ks[] = {&k};
    flight(c, ks, 1);
    CHECK_STR(tu_text(&k, 0, 0), "15");
    tu_free(&k);
    CHECK_EQ(drv->a_idle(c), 1);
    printf("16 units in one flight, one failing in the middle: only it fails\n");
}

/* Unit A leaves state; unit B, of another user, in the same flight, must
 * see none of it. B may come back DBS_ERETRYABLE (not run: the guard
 * found state the reset before it had not undone): then it is sent again,
 * as the loop does, and must succeed. */
/* Sends a and b in one flight, b behind a's reset, and sends b again
 * while its guard turned it back (DBS_ERETRYABLE: nothing of it ran);
 * returns the attempts b took. */
static int flight_after(void *c, tunit *a, tunit *b)
{
    tunit *ts[] = {a, b};
    flight(c, ts, 2);
    CHECK_OK(a->u.rc, &a->u.err);
    int tries = 1;
    while (b->u.rc == DBS_ERETRYABLE && tries < 4) {
        CHECK(!b->u.commit_sent);
        tu_free(b);
        tunit *bs[] = {b};
        flight(c, bs, 1);
        tries++;
    }
    CHECK_OK(b->u.rc, &b->u.err);
    return tries;
}

static void isolation_case(void *c, const char *what, const char *dirty)
{
    tunit a, b;
    tu_init(&a, "a");
    tu_add(&a, dirty, 0, 0, 0);
    tu_init(&b, "b");
    tu_add(&b, "SELECT current_setting('app.user'), "
               "(SELECT count(*) FROM pg_listening_channels()), "
               "(SELECT count(*) FROM pg_cursors WHERE is_holdable), "
               "current_setting('app.leak', true), "
               "to_regclass('iso_tmp') IS NULL",
           0, 0, 0);
    int tries = flight_after(c, &a, &b);
    (void)tu_text(&b, 0, 0);
    dbs_rows *r = b.st[0].rows;
    CHECK_STR(r->ops->get_text(r, 0, NULL), "b");
    CHECK_STR(r->ops->get_text(r, 1, NULL), "0");
    CHECK_STR(r->ops->get_text(r, 2, NULL), "0");
    const char *lk = r->ops->get_text(r, 3, NULL);
    CHECK(lk == NULL || !strcmp(lk, ""));
    CHECK_STR(r->ops->get_text(r, 4, NULL), "t");
    tu_free(&a);
    tu_free(&b);
    CHECK_EQ(drv->a_idle(c), 1);
    printf("isolation: %s is not seen by the next unit in the flight (%d attempt%s)\n", what,
           tries, tries > 1 ? "s" : "");
}

static void test_isolation(void)
{
    dbs__conn *dc;
    void *c = new_conn(&dc);
    /* a first unit and its reset, so the named reset statements exist */
    int64_t pid = backend_pid(c);
    isolation_case(c, "a LISTEN", "LISTEN iso_channel");
    isolation_case(c, "a cursor WITH HOLD", "DECLARE iso_cur CURSOR WITH HOLD FOR SELECT 1");
    isolation_case(c, "a session setting", "SELECT set_config('app.leak', 'yes', false)");
    /* the backend's first temporary object: the named reset runs without
     * DISCARD TEMP (the server reported no temporary schema) */
    isolation_case(c, "the backend's first temporary table",
                   "CREATE TEMP TABLE iso_tmp (x int)");
    isolation_case(c, "a temporary table", "CREATE TEMP TABLE iso_tmp (x int)");
    /* a unit that deallocates every prepared statement (the reset's own
     * named ones too): its reset cannot run by name */
    {
        tunit a, b;
        tu_init(&a, "a");
        tu_add(&a, "SELECT set_config('app.leak', 'yes', false)", 0, 0, 0);
        tu_add(&a, "DEALLOCATE ALL", 0, 0, 0);
        tu_init(&b, "b");
        tu_add(&b, "SELECT current_setting('app.leak', true)", 0, 0, 0);
        int tries = flight_after(c, &a, &b);
        const char *lk = tu_text(&b, 0, 0);
        CHECK(!strcmp(lk, "(null)") || !strcmp(lk, ""));
        tu_free(&a);
        tu_free(&b);
        printf("isolation: DEALLOCATE ALL of the reset's statements: the next unit "
               "sees nothing (%d attempts)\n", tries);
    }
    /* a unit that replaces one of dbscope's cached statements with its own
     * SQL under the same name (a DO block: DEALLOCATE, PREPARE): the unit
     * behind it in the flight, on the wire before the reset's answer says
     * so, must not run the replacement */
    {
        tunit a0;
        tu_init(&a0, "a");
        tu_add(&a0, "SELECT $1::int + 1 AS iso_swap", 1, 1, 0);
        tunit *t0[] = {&a0};
        flight(c, t0, 1);
        CHECK_OK(a0.u.rc, &a0.u.err);
        CHECK_STR(tu_text(&a0, 0, 0), "2");
        tu_free(&a0);
        tunit a, b;
        tu_init(&a, "a");
        tu_add(&a, "DO $$DECLARE n text; BEGIN SELECT name INTO n FROM pg_prepared_statements "
                   "WHERE statement = 'SELECT $1::int + 1 AS iso_swap'; "
                   "EXECUTE format('DEALLOCATE %I', n); "
                   "EXECUTE format('PREPARE %I(int) AS SELECT 424242 + $1', n); END$$",
               0, 0, 0);
        tu_init(&b, "b");
        tu_add(&b, "SELECT $1::int + 1 AS iso_swap", 1, 1, 0);
        int tries = flight_after(c, &a, &b);
        CHECK_STR(tu_text(&b, 0, 0), "2");
        tu_free(&a);
        tu_free(&b);
        printf("isolation: a cached statement replaced by a unit is not run by the next "
               "(%d attempts)\n", tries);
    }
    /* a user's PREPARE is not the next unit's to EXECUTE */
    {
        tunit a, b;
        tu_init(&a, "a");
        tu_add(&a, "PREPARE iso_p AS SELECT 4242", 0, 0, 0);
        tu_init(&b, "b");
        tu_add(&b, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'iso_p'", 0, 0,
               0);
        int tries = flight_after(c, &a, &b);
        CHECK_STR(tu_text(&b, 0, 0), "0");
        tu_free(&a);
        tu_free(&b);
        printf("isolation: a unit's PREPARE is gone for the next (%d attempts)\n", tries);
    }
    CHECK_EQ(backend_pid(c), pid);
    CHECK(!drv->is_broken(c));
    dbs__conn_close(pool, dc);
}

/* The blocking methods on a connection the non-blocking path used, and
 * units again after a blocking release's reset (posted, unread). */
static void test_blocking_after(void *c)
{
    dbs_error err;
    CHECK_EQ(drv->a_idle(c), 1);
    CHECK_OK(drv->begin(c, NULL, &err), &err);
    dbs_rows *r = drv->query(c, "SELECT current_setting('app.user', true), 7", NULL, 0, &err);
    if (!r)
        CHECK_FAIL("blocking query: %s", err.message);
    CHECK_EQ(r->ops->next(r, &err), 1);
    const char *u = r->ops->get_text(r, 0, NULL);
    CHECK(u == NULL || !strcmp(u, ""));
    CHECK_STR(r->ops->get_text(r, 1, NULL), "7");
    r->ops->close(r);
    CHECK_OK(drv->exec(c, "SELECT set_config('app.leak', 'blocking', false)", NULL, 0, &err),
             &err);
    CHECK_OK(drv->commit(c, &err), &err);
    /* the release: its reset is written, its answer read later */
    CHECK_OK(drv->reset(c, DBS_RESET_FULL, &err), &err);
    tunit t;
    tu_init(&t, "dave");
    tu_add(&t, "SELECT current_setting('app.leak', true), current_setting('app.user')", 0, 0,
           0);
    tunit *ts[] = {&t};
    flight(c, ts, 1);
    CHECK_OK(t.u.rc, &t.u.err);
    const char *lk = tu_text(&t, 0, 0);
    CHECK(!strcmp(lk, "(null)") || !strcmp(lk, ""));
    CHECK_STR(t.st[0].rows->ops->get_text(t.st[0].rows, 1, NULL), "dave");
    tu_free(&t);
    CHECK_EQ(drv->a_idle(c), 1);
    CHECK_OK(drv->ping(c, &err), &err);
    printf("blocking methods on the connection afterwards, and units after them\n");
}

/* A statement cache of one, units alternating two statements, in one
 * flight: each evicts the other's statement (deallocated after the unit
 * that still uses it), and the resets in between list statements that are
 * on their way out. Every unit succeeds, and so do the blocking methods
 * afterwards, whose first flight carries what the resets found owed. */
static void test_cache_churn(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.stmt_cache_size = 1;
    dbs_pool *p1 = open_pool("async_cache", &cfg);
    dbs_error err;
    dbs__conn *dc = dbs__conn_open(p1, &err);
    if (!dc)
        CHECK_FAIL("connect: %s", err.message);
    void *c = dc->impl;
    for (int round = 0; round < 3; round++) {
        tunit t[8], *ts[8];
        for (int i = 0; i < 8; i++) {
            tu_init(&t[i], "e");
            tu_add(&t[i], i % 2 ? "SELECT $1::int8 + 1" : "SELECT $1::int8 + 2", 1, i, 0);
            tu_add(&t[i], i % 2 ? "SELECT $1::int8 + 1" : "SELECT $1::int8 + 2", 1, i, 0);
            ts[i] = &t[i];
        }
        flight(c, ts, 8);
        for (int i = 0; i < 8; i++) {
            CHECK_OK(t[i].u.rc, &t[i].u.err);
            char want[24];
            snprintf(want, sizeof want, "%d", i + (i % 2 ? 1 : 2));
            CHECK_STR(tu_text(&t[i], 1, 0), want);
            tu_free(&t[i]);
        }
        CHECK_OK(drv->begin(c, NULL, &err), &err);
        dbs_value v = DBS_INT(5);
        CHECK_EQ(drv->exec(c, "SELECT $1::int8 + 3", &v, 1, &err), 0);
        CHECK_OK(drv->commit(c, &err), &err);
        CHECK_OK(drv->reset(c, DBS_RESET_FULL, &err), &err);
    }
    CHECK(!drv->is_broken(c));
    dbs__conn_close(p1, dc);
    dbs_pool_close(p1);
    printf("a statement cache of one under pipelined units, then blocking statements\n");
}

/* A COMMIT that fails (a deferred unique constraint) makes the server skip
 * the reset that shares its segment: the unit fails, nothing of it
 * committed, and the unit behind it in the flight, of another user, sees
 * nothing of its session state (after the guard sent it back, once). */
static void test_failed_commit(void)
{
    char def[80], sql[2][200];
    snprintf(def, sizeof def, "%s_def", tbl);
    snprintf(sql[1], sizeof sql[1],
             "CREATE TABLE %s (k int UNIQUE DEFERRABLE INITIALLY DEFERRED)", def);
    run_sql(pool, sql[1]);
    snprintf(sql[1], sizeof sql[1], "INSERT INTO %s VALUES (1), (1)", def);
    dbs__conn *dc;
    void *c = new_conn(&dc);
    (void)backend_pid(c);
    tunit a, b;
    tu_init(&a, "a");
    tu_add(&a, "SELECT set_config('app.leak', 'yes', false)", 0, 0, 0);
    tu_add(&a, sql[1], 0, 0, 0);
    tu_init(&b, "b");
    tu_add(&b, "SELECT current_setting('app.leak', true)", 0, 0, 0);
    tunit *ts[] = {&a, &b};
    flight(c, ts, 2);
    CHECK_EQ(a.u.rc, DBS_ECONSTRAINT);
    CHECK(!a.u.commit_sent);
    int tries = 1;
    while (b.u.rc == DBS_ERETRYABLE && tries < 4) {
        tu_free(&b);
        tunit *bs[] = {&b};
        flight(c, bs, 1);
        tries++;
    }
    CHECK_OK(b.u.rc, &b.u.err);
    const char *lk = tu_text(&b, 0, 0);
    CHECK(!strcmp(lk, "(null)") || !strcmp(lk, ""));
    CHECK_EQ(drv->a_idle(c), 1);
    tu_free(&a);
    tu_free(&b);
    dbs__conn_close(pool, dc);
    snprintf(sql[1], sizeof sql[1], "DROP TABLE %s", def);
    run_sql(pool, sql[1]);
    printf("a COMMIT that fails: the unit behind it sees nothing (%d attempts)\n", tries);
}

/* Two connections' units in a deadlock (each locks a row, then wants the
 * other's): the server fails one with 40P01, which comes back
 * DBS_ERETRYABLE, not committed; the other commits. */
static void test_deadlock(void)
{
    char sql[3][200];
    snprintf(sql[0], sizeof sql[0], "INSERT INTO %s (id) VALUES (9001), (9002)", tbl);
    run_sql(pool, sql[0]);
    snprintf(sql[0], sizeof sql[0], "UPDATE %s SET id = id WHERE id = $1", tbl);
    dbs__conn *d1, *d2;
    void *c1 = new_conn(&d1), *c2 = new_conn(&d2);
    tunit a, b;
    tu_init(&a, "a");
    tu_add(&a, sql[0], 1, 9001, 0);
    tu_add(&a, "SELECT pg_sleep(0.3)", 0, 0, 0);
    tu_add(&a, sql[0], 1, 9002, 0);
    tu_init(&b, "b");
    tu_add(&b, sql[0], 1, 9002, 0);
    tu_add(&b, "SELECT pg_sleep(0.3)", 0, 0, 0);
    tu_add(&b, sql[0], 1, 9001, 0);
    send_ok(c1, &a);
    send_ok(c2, &b);
    void *cs[2] = {c1, c2};
    tunit *us[2] = {&a, &b};
    short want[2] = {POLLIN, POLLIN};
    int got = 0;
    while (got < 2) {
        struct pollfd p[2];
        for (int i = 0; i < 2; i++) {
            p[i].fd = drv->a_fd(cs[i]);
            p[i].events = want[i] ? want[i] : POLLIN;
            p[i].revents = 0;
        }
        (void)poll(p, 2, 1000);
        for (int i = 0; i < 2; i++) {
            dbs__aunit *done = NULL;
            got += drv->a_step(cs[i], p[i].revents, &done, &want[i]);
            if (done) {
                CHECK(done == &us[i]->u);
                CHECK(done->next == NULL);
            }
        }
    }
    drain(c1);
    drain(c2);
    int failed = 0;
    for (int i = 0; i < 2; i++) {
        if (us[i]->u.rc == DBS_OK)
            continue;
        failed++;
        CHECK_EQ(us[i]->u.rc, DBS_ERETRYABLE);
        CHECK_STR(us[i]->u.err.sqlstate, "40P01");
        CHECK(!us[i]->u.commit_sent);
    }
    CHECK_EQ(failed, 1);
    CHECK_EQ(drv->a_idle(c1), 1);
    CHECK_EQ(drv->a_idle(c2), 1);
    tu_free(&a);
    tu_free(&b);
    dbs__conn_close(pool, d1);
    dbs__conn_close(pool, d2);
    printf("deadlock between two connections' units: one DBS_ERETRYABLE, not committed\n");
}

/* Waits until the backend pid runs pg_sleep, seen from a session. */
static void wait_sleeping(int64_t pid)
{
    dbs_session *s = open_ok(pool);
    dbs_value v = DBS_INT(pid);
    int64_t n = 0;
    for (int i = 0; i < 2000 && n == 0; i++) {
        n = query_int(s, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND "
                         "state = 'active' AND wait_event = 'PgSleep'",
                      &v, 1);
        dbs_error err; /* a new transaction: a fresh view of the activity */
        CHECK_OK(dbs_commit(s, &err), &err);
        if (n == 0)
            dbs__sleep_ms(5);
    }
    CHECK_EQ(n, 1);
    dbs_session_close(s);
}

/* Steps c until the unit is handed back or the sleeper is seen running. */
static void step_until_sleeping(void *c, int64_t pid)
{
    short want;
    dbs__aunit *done;
    CHECK_EQ(drv->a_step(c, 0, &done, &want), 0);
    wait_sleeping(pid);
}

static void test_cancel(void)
{
    dbs__conn *dc;
    void *c = new_conn(&dc);
    int64_t pid = backend_pid(c);
    tunit a, b, d;
    tu_init(&a, "a");
    tu_add(&a, "SELECT 1", 0, 0, 0);
    tu_init(&b, "b");
    tu_add(&b, "SELECT pg_sleep(10)", 0, 0, 0);
    tu_init(&d, "d");
    tu_add(&d, "SELECT current_setting('app.user')", 0, 0, 0);
    tunit *ts[] = {&a, &b, &d};
    for (int i = 0; i < 3; i++)
        send_ok(c, ts[i]);
    step_until_sleeping(c, pid);
    drv->a_cancel(c);
    wait_all(c, ts, 3);
    CHECK_OK(a.u.rc, &a.u.err);
    CHECK_EQ(b.u.rc, DBS_ECANCELED);
    CHECK_STR(b.u.err.sqlstate, "57014");
    CHECK(!b.u.commit_sent);
    /* The unit behind it runs in its own segments. Were the cancel to
     * reach the server between commands instead (it is not seen to once
     * pg_sleep runs), the reset it hit would make the guard send that
     * unit back, not run: never a partial or a wrong commit. */
    if (d.u.rc == DBS_ERETRYABLE) {
        CHECK(!d.u.commit_sent);
        printf("cancel: the unit behind was sent back by its guard\n");
    } else {
        CHECK_OK(d.u.rc, &d.u.err);
        CHECK_STR(tu_text(&d, 0, 0), "d");
    }
    /* a cancel request could still be on its way: the connection goes */
    drain(c);
    CHECK_EQ(drv->a_idle(c), 0);
    CHECK_EQ(drv->is_broken(c), 1);
    for (int i = 0; i < 3; i++)
        tu_free(ts[i]);
    dbs__conn_close(pool, dc);
    printf("cancel: pg_sleep(10) ends DBS_ECANCELED, the unit behind it commits\n");
}

static void test_killed(void)
{
    dbs__conn *dc;
    void *c = new_conn(&dc);
    int64_t pid = backend_pid(c);
    tunit a, b, d;
    tu_init(&a, "a");
    tu_add(&a, "SELECT 1", 0, 0, 0);
    tu_init(&b, "b");
    tu_add(&b, "SELECT pg_sleep(10)", 0, 0, 0);
    tu_init(&d, "d");
    tu_add(&d, "SELECT 2", 0, 0, 0);
    tunit *ts[] = {&a, &b, &d};
    for (int i = 0; i < 3; i++)
        send_ok(c, ts[i]);
    step_until_sleeping(c, pid);
    dbs_session *s = open_ok(pool);
    dbs_value v = DBS_INT(pid);
    CHECK_EQ(query_int(s, "SELECT pg_terminate_backend($1::int)::int", &v, 1), 1);
    dbs_session_close(s);
    wait_all(c, ts, 3);
    CHECK_OK(a.u.rc, &a.u.err);
    CHECK_EQ(b.u.rc, DBS_ECONNECT);
    CHECK(!b.u.commit_sent);
    /* the server ended the session at b's statement: d never ran */
    CHECK_EQ(d.u.rc, DBS_ECONNECT);
    CHECK(!d.u.commit_sent);
    CHECK_EQ(drv->is_broken(c), 1);
    CHECK_EQ(drv->a_idle(c), 0);
    dbs_error err;
    CHECK_EQ(drv->a_send(c, &a.u, &err), DBS_ECONNECT);
    for (int i = 0; i < 3; i++)
        tu_free(ts[i]);
    dbs__conn_close(pool, dc);
    printf("killed backend mid-flight: every unit handed back, DBS_ECONNECT\n");
}

/* A pool of one connection through a fault proxy of its own, and that
 * connection taken from it: *fp, *pp and *dc are the caller's to close. */
static void *via_proxy(faultproxy **fp_out, dbs_pool **pp_out, dbs__conn **dc_out)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    char password[256], port[32];
    static char url[512]; /* the pool's URL, for as long as it is open */
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    faultproxy *fp = fp_start(atoi(port));
    snprintf(url, sizeof url, "postgresql://dbscope:%s@127.0.0.1:%d/dbscope?sslmode=disable",
             password, fp_port(fp));
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.pre_ping = 0;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *pp = dbs_pool_open(&cfg, &err);
    if (!pp)
        CHECK_FAIL("open via proxy: %s", err.message);
    dbs__conn *dc = dbs__conn_open(pp, &err);
    if (!dc)
        CHECK_FAIL("connect via proxy: %s", err.message);
    *fp_out = fp;
    *pp_out = pp;
    *dc_out = dc;
    return dc->impl;
}

/* The server's answers are held back (the proxy drops them) while both
 * units commit; then the connection is reset: both may have committed as
 * far as the client can tell, so both are DBS_ECOMMIT_UNKNOWN. */
static void test_commit_unknown(void)
{
    faultproxy *fp;
    dbs_pool *pp;
    dbs__conn *dc;
    void *c = via_proxy(&fp, &pp, &dc);
    dbs_error err;
    char ins[200], cnt[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1)", tbl);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s WHERE id IN (5000, 5001)", tbl);
    tunit a, b;
    tu_init(&a, "a");
    tu_add(&a, ins, 1, 5000, 0);
    tu_init(&b, "b");
    tu_add(&b, ins, 1, 5001, 0);
    tunit *ts[] = {&a, &b};
    fp_set(fp, FP_SILENT, FP_DOWN, 0);
    send_ok(c, &a);
    send_ok(c, &b);
    short want;
    dbs__aunit *done;
    CHECK_EQ(drv->a_step(c, 0, &done, &want), 0);
    dbs_session *s = open_ok(pool);
    int64_t n = 0;
    for (int i = 0; i < 2000 && n < 2; i++) {
        n = query_int(s, cnt, NULL, 0);
        CHECK_OK(dbs_commit(s, &err), &err);
        if (n < 2)
            dbs__sleep_ms(5);
    }
    CHECK_EQ(n, 2); /* both committed on the server */
    dbs_session_close(s);
    fp_set(fp, FP_RESET, FP_BOTH, 0);
    wait_all(c, ts, 2);
    CHECK_EQ(a.u.rc, DBS_ECOMMIT_UNKNOWN);
    CHECK(a.u.commit_sent);
    CHECK_EQ(b.u.rc, DBS_ECOMMIT_UNKNOWN);
    CHECK(b.u.commit_sent);
    CHECK_EQ(drv->is_broken(c), 1);
    CHECK_EQ(drv->a_idle(c), 0);
    tu_free(&a);
    tu_free(&b);
    dbs__conn_close(pp, dc);
    dbs_pool_close(pp);
    fp_stop(fp);
    printf("connection lost after the COMMITs went out: DBS_ECOMMIT_UNKNOWN\n");
}

/* libpq refusing a message after a unit's COMMIT was queued (out of memory)
 * must not hand the unit back as untouched: the COMMIT leaves with the
 * next flush, PQfinish's included, and the server runs it if it reads
 * that far before it sees the close, so a caller that ran the unit again
 * could write twice. It ends DBS_ECOMMIT_UNKNOWN, and at most once. */
/* A unit whose rows dbscope could not keep (out of memory) failed on the
 * client alone: the server, which saw no failure, ran the COMMIT already
 * on the wire. The unit must not then say "failed", which a caller may
 * run again: it wrote. */
static void test_rows_lost_committed(void)
{
    dbs__conn *dc;
    void *c = new_conn(&dc);
    char ins[200], cnt[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1)", tbl);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s WHERE id = 6100", tbl);
    tunit t;
    tu_init(&t, "rows-lost");
    tu_add(&t, ins, 1, 6100, 0);
    tu_add(&t, "SELECT 1", 0, 0, 0);
    atomic_store(&dbs__fault.fail_row_keeps, 1);
    dbs_error err;
    CHECK_OK(drv->a_send(c, &t.u, &err), &err);
    tunit *ts[] = {&t};
    wait_all(c, ts, 1);
    CHECK_EQ(atomic_load(&dbs__fault.fail_row_keeps), 0); /* the fault was hit */
    dbs_session *s = open_ok(pool);
    int64_t n = query_int(s, cnt, NULL, 0);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(n, 1); /* it committed */
    CHECK_EQ(t.u.rc, DBS_ECOMMIT_UNKNOWN);
    CHECK(t.u.commit_sent);
    CHECK_CONTAINS(t.u.err.message, "committed");
    tu_free(&t);
    dbs__conn_close(pool, dc);
    printf("rows lost after the work ran: DBS_ECOMMIT_UNKNOWN, committed\n");
}

/* The same, with the COMMIT's answer lost: the server, which saw no
 * failure, may have run the COMMIT that was on the wire (here it did).
 * Not "out of memory", a failure nothing of which committed: the outcome
 * is unknown, DBS_ECOMMIT_UNKNOWN. */
static void test_rows_lost_commit_unanswered(void)
{
    faultproxy *fp;
    dbs_pool *pp;
    dbs__conn *dc;
    void *c = via_proxy(&fp, &pp, &dc);
    dbs_error err;
    char ins[200], cnt[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1)", tbl);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s WHERE id = 6200", tbl);
    tunit t;
    tu_init(&t, "rows-lost-unanswered");
    tu_add(&t, ins, 1, 6200, 0);
    tu_add(&t, "SELECT 1", 0, 0, 0);
    /* the answers stop right after the statements' ReadyForQuery (in a
     * transaction): the rows come, the COMMIT's answer does not */
    static const unsigned char in_tx_ready[] = {'Z', 0, 0, 0, 5, 'T'};
    fp_silent_after(fp, FP_DOWN, in_tx_ready, sizeof in_tx_ready);
    atomic_store(&dbs__fault.fail_row_keeps, 1);
    send_ok(c, &t);
    short want = POLLIN | POLLOUT;
    for (int i = 0; i < 3000 && atomic_load(&dbs__fault.fail_row_keeps) > 0; i++) {
        struct pollfd pf = {.fd = drv->a_fd(c), .events = want ? want : POLLIN};
        int r = poll(&pf, 1, 10);
        dbs__aunit *done = NULL;
        CHECK_EQ(drv->a_step(c, r > 0 ? pf.revents : 0, &done, &want), 0);
    }
    CHECK_EQ(atomic_load(&dbs__fault.fail_row_keeps), 0); /* the fault was hit */
    dbs_session *s = open_ok(pool);
    int64_t n = 0;
    for (int i = 0; i < 2000 && n < 1; i++) {
        n = query_int(s, cnt, NULL, 0);
        CHECK_OK(dbs_commit(s, &err), &err);
        if (n < 1)
            dbs__sleep_ms(5);
    }
    dbs_session_close(s);
    CHECK_EQ(n, 1); /* it committed on the server */
    fp_set(fp, FP_RESET, FP_BOTH, 0);
    tunit *ts[] = {&t};
    wait_all(c, ts, 1);
    if (t.u.rc != DBS_ECOMMIT_UNKNOWN)
        CHECK_FAIL("rows lost, COMMIT unanswered, committed: rc %d (%s), want "
                   "DBS_ECOMMIT_UNKNOWN", t.u.rc, t.u.err.message);
    CHECK(t.u.commit_sent);
    tu_free(&t);
    dbs__conn_close(pp, dc);
    dbs_pool_close(pp);
    fp_stop(fp);
    printf("rows lost, COMMIT unanswered: DBS_ECOMMIT_UNKNOWN\n");
}

static void test_send_torn(void)
{
    dbs__conn *dc;
    void *c = new_conn(&dc);
    const int64_t pid = backend_pid(c);
    char ins[200], cnt[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1)", tbl);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s WHERE id = 6000", tbl);
    tunit t;
    tu_init(&t, "torn");
    tu_add(&t, ins, 1, 6000, 0);
    atomic_store(&dbs__fault.fail_sends, 1);
    dbs_error err;
    int rc = drv->a_send(c, &t.u, &err);
    CHECK_EQ(atomic_load(&dbs__fault.fail_sends), 0); /* the fault was hit */
    /* not "untouched": its COMMIT may leave with the next flush */
    CHECK_EQ(rc, DBS_OK);
    tunit *ts[] = {&t};
    wait_all(c, ts, 1);
    CHECK_EQ(t.u.rc, DBS_ECOMMIT_UNKNOWN);
    CHECK(t.u.commit_sent);
    CHECK_EQ(drv->is_broken(c), 1);
    tu_free(&t);
    dbs__conn_close(pool, dc);
    /* the backend reads all that was flushed before it exits */
    dbs_session *s = open_ok(pool);
    dbs_value pv[1] = {DBS_INT(pid)};
    int64_t alive = 1;
    for (int i = 0; i < 2000 && alive; i++) {
        alive = query_int(s, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pv, 1);
        CHECK_OK(dbs_commit(s, &err), &err);
        if (alive)
            dbs__sleep_ms(5);
    }
    CHECK_EQ(alive, 0);
    int64_t n = query_int(s, cnt, NULL, 0);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK(n <= 1);
    printf("send torn after COMMIT: DBS_ECOMMIT_UNKNOWN (%lld row)\n", (long long)n);
}

/* An event loop's unit on PostgreSQL comes back with its COMMIT's answer;
 * the reset that follows it in the flight is answered later. A network
 * that goes silent between the two (keepalives off, as a URL may ask)
 * must not leave the loop holding the connection, counted in use, until
 * another unit goes out on it: statement_timeout_ms bounds the reset's
 * round trip as it bounds a statement's (and a blocking release's reset),
 * and past it the connection is discarded. */
static atomic_int rs_invalidated;

static void rs_event(const dbs_event *ev, void *arg)
{
    (void)arg;
    if (ev->kind == DBS_EVENT_INVALIDATE)
        atomic_fetch_add(&rs_invalidated, 1);
}

typedef struct rs_res {
    int calls, rc;
    char msg[512];
} rs_res;

static void rs_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    rs_res *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", err->message);
}

/* Runs l as a program does (its descriptor, its deadline) until cond or
 * limit_ms passed; never sleeps past the limit whatever the loop asks. */
#define RS_RUN_UNTIL(l, cond, limit_ms)                                        \
    do {                                                                       \
        int64_t end_ = now_ms() + (limit_ms);                                  \
        while (!(cond) && now_ms() < end_) {                                   \
            int t_ = dbs_loop_timeout_ms(l);                                   \
            int64_t left_ = end_ - now_ms();                                   \
            if (t_ < 0 || t_ > left_)                                          \
                t_ = (int)(left_ > 0 ? left_ : 0);                             \
            struct pollfd p_ = {.fd = dbs_loop_fd(l), .events = POLLIN};       \
            (void)poll(&p_, 1, t_);                                            \
            CHECK(dbs_loop_run(l) >= 0);                                       \
        }                                                                      \
    } while (0)

static void test_loop_reset_silent(void)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    char password[256], port[32], url[512];
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    faultproxy *fp = fp_start(atoi(port));
    snprintf(url, sizeof url,
             "postgresql://dbscope:%s@127.0.0.1:%d/dbscope?sslmode=disable&keepalives=0&"
             "tcp_user_timeout=0",
             password, fp_port(fp));
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.reset = DBS_RESET_FULL;
    /* Far above a round trip on a loaded machine under a sanitizer (the
     * units before the silence must succeed within it, through the proxy's
     * thread), far below the wait for the reset's end below. */
    cfg.statement_timeout_ms = 4000;
    cfg.log_events = 0;
    cfg.on_event = rs_event;
    dbs_error err;
    dbs_pool *pp = dbs_pool_open(&cfg, &err);
    if (!pp)
        CHECK_FAIL("open via proxy: %s", err.message);
    dbs_loop *l = dbs_loop_open(pp, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    /* a first unit through a quiet network: connected, statements parsed */
    rs_res r = {0};
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
    CHECK_OK(dbs_unit_submit(u, rs_done, &r, &err), &err);
    RS_RUN_UNTIL(l, r.calls == 1 && stats_of(pp).in_use == 0, 30000);
    CHECK_EQ(r.calls, 1);
    CHECK_OK(r.rc, &err);
    CHECK_EQ(stats_of(pp).in_use, 0);
    int inv0 = atomic_load(&rs_invalidated);

    /* the answer stops right after the COMMIT's CommandComplete */
    static const unsigned char commit_done[] = {'C', 0, 0, 0, 11, 'C', 'O', 'M', 'M',
                                                'I', 'T', 0};
    fp_silent_after(fp, FP_DOWN, commit_done, sizeof commit_done);
    memset(&r, 0, sizeof r);
    u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, "SELECT 2", NULL, 0, &err), &err);
    CHECK_OK(dbs_unit_submit(u, rs_done, &r, &err), &err);
    RS_RUN_UNTIL(l, r.calls == 1, 30000);
    CHECK_EQ(r.calls, 1);
    if (r.rc != DBS_OK)
        CHECK_FAIL("the unit whose COMMIT was answered: %d %s", r.rc, r.msg);
    /* the reset's answer never comes: bounded all the same */
    RS_RUN_UNTIL(l, stats_of(pp).in_use == 0, 20000);
    if (stats_of(pp).in_use != 0)
        CHECK_FAIL("the loop still holds the connection whose reset went unanswered "
                   "(dbs_loop_timeout_ms %d)", dbs_loop_timeout_ms(l));
    CHECK(atomic_load(&rs_invalidated) > inv0);
    CHECK_EQ(dbs_loop_pending(l), 0);

    /* the network is back: the next unit runs on a new connection */
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    memset(&r, 0, sizeof r);
    u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, "SELECT 3", NULL, 0, &err), &err);
    CHECK_OK(dbs_unit_submit(u, rs_done, &r, &err), &err);
    RS_RUN_UNTIL(l, r.calls == 1 && stats_of(pp).in_use == 0, 30000);
    CHECK_EQ(r.calls, 1);
    if (r.rc != DBS_OK)
        CHECK_FAIL("after the network came back: %d %s", r.rc, r.msg);
    CHECK_EQ(stats_of(pp).in_use, 0);
    dbs_loop_close(l);
    dbs_pool_close(pp);
    fp_stop(fp);
    printf("loop: a reset whose answer never comes is bounded by statement_timeout_ms\n");
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 2;
    cfg.reset = DBS_RESET_FULL;
    cfg.ctx_user_setting = "app.user";
    pool = open_pool("async", &cfg);
    drv = pool->drv;
    CHECK(drv->a_send != NULL);
    snprintf(tbl, sizeof tbl, "%s", table_name("pg_async"));
    char sql[200];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int8 PRIMARY KEY)", tbl);
    run_sql(pool, sql);

    dbs__conn *dc;
    void *c = new_conn(&dc);
    test_one_unit(c);
    test_pipeline16(c);
    test_blocking_after(c);
    dbs__conn_close(pool, dc);
    test_isolation();
    test_cache_churn();
    test_deadlock();
    test_failed_commit();
    test_cancel();
    test_killed();
    test_commit_unknown();
    test_send_torn();
    test_rows_lost_committed();
    test_rows_lost_commit_unanswered();
    test_loop_reset_silent();

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    printf("ok\n");
    return 0;
}
