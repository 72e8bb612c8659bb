/* SQLite: a statement waiting for another connection's lock is bounded by
 * the smaller of busy_timeout_ms and the statement bound. When the
 * statement bound is what runs out the call returns DBS_ESTMT_TIMEOUT (and
 * the connection is discarded); when busy_timeout_ms runs out first it
 * stays DBS_ERETRYABLE. Every path that can wait: dbs_exec, dbs_rows_next
 * (dbs_query steps there), and COMMIT, which on a rollback-journal database
 * (sqlite::memory:) waits for readers to leave: a COMMIT that gave up
 * committed nothing, whichever bound ran out, so it is never
 * DBS_ECOMMIT_UNKNOWN. BEGIN is BEGIN DEFERRED and takes no lock.
 *
 * The lock is held for the whole call (the holder never lets go), so a
 * wait bounded only by busy_timeout_ms (60 s here) would outlast the
 * CTest timeout: no elapsed time is asserted. */
#include "common.h"

/* A pool on a fresh file (WAL) or on a memory database (rollback journal). */
static dbs_pool *pool_of(const char *name, bool memory, int stmt_ms, int busy_ms)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.statement_timeout_ms = stmt_ms;
    cfg.busy_timeout_ms = busy_ms;
    cfg.log_events = 0;
    cfg.pool_size = 4;
    cfg.mode = DBS_POOL_QUEUE; /* a memory database is one connection by default */
    cfg.url = memory ? "sqlite::memory:" : test_url(name);
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open(%s): %s", cfg.url, err.message);
    run_sql(p, "CREATE TABLE t (v TEXT)");
    return p;
}

/* A session that holds the write lock (an INSERT, not committed). */
static dbs_session *writer(dbs_pool *p)
{
    dbs_session *a = open_ok(p);
    exec_ok(a, "INSERT INTO t (v) VALUES ('holder')");
    return a;
}

static int64_t count_rows(dbs_pool *p)
{
    dbs_session *s = open_ok(p);
    int64_t n = query_int(s, "SELECT COUNT(*) FROM t", NULL, 0);
    dbs_session_close(s);
    return n;
}

/* dbs_exec and dbs_rows_next waiting on a held write lock. */
static void test_statement_waits(int stmt_ms, int busy_ms, int want)
{
    dbs_pool *p = pool_of("sqlite_busy", false, stmt_ms, busy_ms);
    dbs_session *a = writer(p);
    dbs_error err;

    dbs_session *s = open_ok(p);
    CHECK_EQ(dbs_exec(s, "INSERT INTO t (v) VALUES ('exec')", NULL, 0, &err), want);
    CHECK_EQ(err.code, want);
    if (want == DBS_ESTMT_TIMEOUT) {
        CHECK_CONTAINS(err.message, "statement bound");
        CHECK_CONTAINS(err.message, "lock");
        CHECK_STR(err.sqlstate, "57014");
        CHECK(!dbs_error_is_transient(&err));
    } else {
        CHECK(dbs_error_is_transient(&err));
    }
    dbs_session_close(s);

    /* dbs_query steps to the first row: the wait happens there */
    s = open_ok(p);
    dbs_rows *r = dbs_query(s, "INSERT INTO t (v) VALUES ('query') RETURNING v", NULL, 0, &err);
    int rc = r ? dbs_rows_next(r, &err) : err.code;
    CHECK_EQ(rc, want);
    CHECK_EQ(err.code, want);
    if (r)
        dbs_rows_close(r);
    dbs_session_close(s);

    /* the same bound set on the session, the pool's being none */
    if (want == DBS_ESTMT_TIMEOUT) {
        dbs_pool *q = pool_of("sqlite_busy_session", false, 0, busy_ms);
        dbs_session *b = writer(q);
        s = open_ok(q);
        CHECK_OK(dbs_session_set_statement_timeout(s, stmt_ms, &err), &err);
        CHECK_EQ(dbs_exec(s, "INSERT INTO t (v) VALUES ('session')", NULL, 0, &err),
                 DBS_ESTMT_TIMEOUT);
        dbs_session_close(s);
        dbs_session_close(b);
        dbs_pool_close(q);
        test_db_remove(); /* q's file; p's goes at exit */
    }

    /* nothing of the waiters was written; the pool works on */
    CHECK_OK(dbs_commit(a, &err), &err);
    dbs_session_close(a);
    CHECK_EQ(count_rows(p), 1);
    run_sql(p, "INSERT INTO t (v) VALUES ('after')");
    CHECK_EQ(count_rows(p), 2);
    dbs_pool_close(p);
}

/* COMMIT waiting for a reader to leave (rollback journal: the writer needs
 * the exclusive lock). It committed nothing: DBS_ESTMT_TIMEOUT or
 * DBS_ERETRYABLE, never DBS_ECOMMIT_UNKNOWN, and the row is not there. */
static void test_commit_waits(int stmt_ms, int busy_ms, int want)
{
    dbs_pool *p = pool_of(NULL, true, stmt_ms, busy_ms);
    dbs_error err;
    dbs_session *reader = open_ok(p);
    CHECK_EQ(query_int(reader, "SELECT COUNT(*) FROM t", NULL, 0), 0); /* holds SHARED */
    dbs_session *s = open_ok(p);
    exec_ok(s, "INSERT INTO t (v) VALUES ('commit')");
    CHECK_EQ(dbs_commit(s, &err), want);
    CHECK_EQ(err.code, want);
    CHECK_CONTAINS(err.message, "COMMIT");
    if (want == DBS_ESTMT_TIMEOUT)
        CHECK_CONTAINS(err.message, "nothing was committed");
    dbs_session_close(s);
    CHECK_OK(dbs_commit(reader, &err), &err);
    dbs_session_close(reader);
    CHECK_EQ(count_rows(p), 0);
    run_sql(p, "INSERT INTO t (v) VALUES ('after')");
    CHECK_EQ(count_rows(p), 1);
    dbs_pool_close(p);
}

/* A read transaction that then writes, after another connection committed
 * (WAL: SQLITE_BUSY_SNAPSHOT, which no waiting can cure): DBS_ERETRYABLE,
 * and dbs_transact runs the unit again on a fresh snapshot. */
typedef struct snap_arg {
    dbs_pool *p;
    int calls;
} snap_arg;

static int snapshot_unit(dbs_session *s, void *arg, dbs_error *err)
{
    snap_arg *a = arg;
    a->calls++;
    int64_t n = query_int(s, "SELECT COUNT(*) FROM t", NULL, 0); /* the snapshot */
    if (a->calls == 1)
        run_sql(a->p, "INSERT INTO t (v) VALUES ('other')"); /* another connection */
    dbs_value v = DBS_INT(n);
    int64_t rc = dbs_exec(s, "INSERT INTO t (v) VALUES ($1)", &v, 1, err);
    if (a->calls == 1) {
        CHECK_EQ(rc, DBS_ERETRYABLE);
        CHECK(dbs_error_is_transient(err));
    }
    return rc < 0 ? (int)rc : 0;
}

static void test_snapshot_upgrade(void)
{
    dbs_pool *p = pool_of("sqlite_busy_snapshot", false, 60000, 60000);
    snap_arg a = {p, 0};
    dbs_error err;
    CHECK_OK(dbs_transact(p, NULL, snapshot_unit, &a, &err), &err);
    CHECK_EQ(a.calls, 2);
    CHECK_EQ(count_rows(p), 2);
    dbs_pool_close(p);
}

int main(void)
{
    /* the statement bound is the smaller: DBS_ESTMT_TIMEOUT */
    test_statement_waits(200, 60000, DBS_ESTMT_TIMEOUT);
    test_commit_waits(200, 60000, DBS_ESTMT_TIMEOUT);
    /* busy_timeout_ms is the smaller: DBS_ERETRYABLE, as before */
    test_statement_waits(60000, 100, DBS_ERETRYABLE);
    test_commit_waits(60000, 100, DBS_ERETRYABLE);
    test_snapshot_upgrade();
    printf("test_sqlite_busy: ok\n");
    return 0;
}
