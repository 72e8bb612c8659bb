/* Transaction options (isolation, read only, deferrable, immediate) and
 * nested units (savepoints), on each backend: the level the server reports
 * inside the transaction, the default back on the same connection's next
 * transaction, refusals of what a backend does not have, savepoints that
 * roll back alone, and a transient failure inside a nested unit that makes
 * the OUTER unit run again, never the inner alone. */
#include "common.h"

enum backend { SQLITE, PG, MYSQL };
static enum backend be;
static dbs_pool *pool;  /* one connection: "the same connection" is certain */
static dbs_pool *pool2; /* another connection, for the conflicting writer */
static char tbl[64];
static dbs_pool *super;  /* MariaDB: the fixture's superuser */
static const char *url_all; /* the pools' URL (test_url again would make a new file) */

/* fmt with the table's name for its %s */
static char sqlbuf[256];
#define Q(fmt) (snprintf(sqlbuf, sizeof sqlbuf, fmt, tbl), (const char *)sqlbuf)

/* The isolation level the server reports for the transaction running on s
 * (lower case, words separated by spaces), in out. */
static const char *level_of(dbs_session *s, char *out, size_t n)
{
    if (be == PG) {
        text_of(s, "SHOW transaction_isolation", out, n);
    } else {
        /* @@tx_isolation is the session's setting, not the running
         * transaction's: ask InnoDB, as the fixture's superuser (PROCESS),
         * about this connection's transaction (begun by a read). */
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", tbl);
        (void)query_int(s, sql, NULL, 0);
        dbs_value id[] = {DBS_INT(query_int(s, "SELECT CONNECTION_ID()", NULL, 0))};
        /* INNODB_TRX is a cache refilled when read 100 ms or more after
         * its last fill: wait past that so it shows this transaction */
        dbs__sleep_ms(150);
        dbs_session *su = open_ok(super);
        dbs_error err;
        dbs_rows *r = dbs_query(su,
                                "SELECT trx_isolation_level FROM information_schema.innodb_trx "
                                "WHERE trx_mysql_thread_id = $1",
                                id, 1, &err);
        CHECK(r);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        snprintf(out, n, "%s", dbs_rows_text(r, 0, NULL));
        dbs_rows_close(r);
        dbs_session_close(su);
    }
    for (char *p = out; *p; p++) {
        *p = (char)((*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p);
        if (*p == '-')
            *p = ' ';
    }
    return out;
}

static const char *default_level(void)
{
    return be == PG ? "read committed" : "repeatable read";
}

static int64_t count_id(int id)
{
    dbs_session *s = open_ok(pool2);
    dbs_value v[] = {DBS_INT(id)};
    int64_t n = query_int(s,Q("SELECT COUNT(*) FROM %s WHERE id = $1"), v, 1);
    dbs_session_close(s);
    return n;
}

static int64_t value_of(int id)
{
    dbs_session *s = open_ok(pool2);
    dbs_value v[] = {DBS_INT(id)};
    int64_t n = query_int(s,Q("SELECT v FROM %s WHERE id = $1"), v, 1);
    dbs_session_close(s);
    return n;
}

static int64_t insert(dbs_session *s, int id, dbs_error *err)
{
    dbs_value v[] = {DBS_INT(id)};
    return dbs_exec(s,Q("INSERT INTO %s (id, v) VALUES ($1, 0)"), v, 1, err);
}

/* ---- options ---- */

static const enum dbs_isolation levels[] = {DBS_ISOLATION_READ_COMMITTED,
                                            DBS_ISOLATION_REPEATABLE_READ,
                                            DBS_ISOLATION_SERIALIZABLE};
static const char *const level_names[] = {"read committed", "repeatable read", "serializable"};

struct level_work {
    const char *want;
    int calls;
};

static int check_level_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    struct level_work *w = arg;
    w->calls++;
    char got[64];
    CHECK_STR(level_of(s, got, sizeof got), w->want);
    return 0;
}

static void test_isolation(void)
{
    dbs_error err;
    char got[64];
    for (int i = 0; i < 3; i++) {
        dbs_tx_options o = {.isolation = levels[i]};
        /* a session's transactions */
        dbs_session *s = open_ok(pool);
        CHECK_OK(dbs_session_set_tx_options(s, &o, &err), &err);
        CHECK_STR(level_of(s, got, sizeof got), level_names[i]);
        CHECK_OK(dbs_commit(s, &err), &err);
        /* the next transaction of the session has them too ... */
        CHECK_STR(level_of(s, got, sizeof got), level_names[i]);
        /* ... they cannot change while one is open ... */
        CHECK_EQ(dbs_session_set_tx_options(s, NULL, &err), DBS_EMISUSE);
        CHECK_OK(dbs_commit(s, &err), &err);
        /* ... and back to plain, the server's default is back */
        CHECK_OK(dbs_session_set_tx_options(s, NULL, &err), &err);
        CHECK_STR(level_of(s, got, sizeof got), default_level());
        CHECK_OK(dbs_commit(s, &err), &err);
        CHECK_OK(dbs_session_set_tx_options(s, &o, &err), &err);
        dbs_session_close(s);
        /* the connection's next user (the same connection: pool of one)
         * gets the default */
        s = open_ok(pool);
        CHECK_STR(level_of(s, got, sizeof got), default_level());
        dbs_session_close(s);

        /* a unit of work */
        struct level_work w = {.want = level_names[i]};
        CHECK_OK(dbs_transact_opts(pool, NULL, &o, check_level_work, &w, &err), &err);
        CHECK_EQ(w.calls, 1);
        w = (struct level_work){.want = default_level()};
        CHECK_OK(dbs_transact(pool, NULL, check_level_work, &w, &err), &err);
        CHECK_EQ(w.calls, 1);
    }
    /* a plain read-only session keeps the server's default level */
    dbs_session *s = dbs_session_open_ro(pool, NULL, &err);
    CHECK(s);
    CHECK_STR(level_of(s, got, sizeof got), default_level());
    /* and options on it stay read-only */
    CHECK_OK(dbs_rollback(s, &err), &err);
    dbs_tx_options o = {.isolation = DBS_ISOLATION_SERIALIZABLE};
    CHECK_OK(dbs_session_set_tx_options(s, &o, &err), &err);
    CHECK_STR(level_of(s, got, sizeof got), "serializable");
    CHECK_EQ(insert(s, 900, &err), DBS_ESQL);
    CHECK_STR(err.sqlstate, "25006");
    dbs_session_close(s);
}

static void test_read_only(void)
{
    dbs_error err;
    dbs_tx_options ro = {.read_only = 1};
    dbs_session *s = open_ok(pool);
    CHECK_OK(dbs_session_set_tx_options(s, &ro, &err), &err);
    CHECK_EQ(insert(s, 10, &err), DBS_ESQL);
    CHECK_STR(err.sqlstate, "25006");
    CHECK_OK(dbs_rollback(s, &err), &err);
    if (be == PG) {
        char got[16];
        CHECK_STR(text_of(s, "SHOW transaction_read_only", got, sizeof got), "on");
        CHECK_OK(dbs_rollback(s, &err), &err);
    }
    if (be == MYSQL) {
        /* DDL, which would commit the transaction and run outside it, is
         * refused too */
        CHECK_EQ(dbs_exec(s,Q("CREATE TABLE %s_ddl (x INT)"), NULL, 0, &err), DBS_ESQL);
        CHECK_OK(dbs_rollback(s, &err), &err);
    }
    /* the connection is fine, and writes again once the option is off */
    CHECK_OK(dbs_session_set_tx_options(s, NULL, &err), &err);
    CHECK_OK(insert(s, 10, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_EQ(count_id(10), 1);
    /* the option is the session's: its close gives the next user a
     * writable connection (the same one) */
    CHECK_OK(dbs_session_set_tx_options(s, &ro, &err), &err);
    dbs_session_close(s);
    s = open_ok(pool);
    CHECK_OK(insert(s, 11, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_id(11), 1);
    CHECK_EQ(stats_of(pool).invalidated, 0);
}

static int insert_12(dbs_session *s, void *arg, dbs_error *err)
{
    (*(int *)arg)++;
    int64_t rc = insert(s, 12, err);
    return rc < 0 ? (int)rc : 0;
}

static void test_refusals(void)
{
    dbs_error err;
    dbs_session *s = open_ok(pool);
    dbs_tx_options bad = {.isolation = (enum dbs_isolation)99};
    CHECK_EQ(dbs_session_set_tx_options(s, &bad, &err), DBS_EMISUSE);
    CHECK(strstr(err.message, "isolation"));

    /* deferrable: PostgreSQL's, and only where it has an effect */
    dbs_tx_options def = {.isolation = DBS_ISOLATION_SERIALIZABLE, .read_only = 1,
                          .deferrable = 1};
    if (be == PG) {
        CHECK_OK(dbs_session_set_tx_options(s, &def, &err), &err);
        char got[16];
        CHECK_STR(text_of(s, "SHOW transaction_deferrable", got, sizeof got), "on");
        CHECK_STR(text_of(s, "SHOW transaction_read_only", got, sizeof got), "on");
        CHECK_OK(dbs_rollback(s, &err), &err);
        def.read_only = 0;
        CHECK_EQ(dbs_session_set_tx_options(s, &def, &err), DBS_ECONFIG);
        CHECK(strstr(err.message, "DEFERRABLE"));
    } else {
        CHECK_EQ(dbs_session_set_tx_options(s, &def, &err), DBS_ECONFIG);
        CHECK(strstr(err.message, "DEFERRABLE"));
    }
    /* immediate: SQLite's */
    dbs_tx_options imm = {.immediate = 1};
    if (be != SQLITE) {
        CHECK_EQ(dbs_session_set_tx_options(s, &imm, &err), DBS_ECONFIG);
        CHECK(strstr(err.message, "IMMEDIATE"));
    }
    /* SQLite has one level */
    if (be == SQLITE) {
        for (int i = 0; i < 2; i++) {
            dbs_tx_options o = {.isolation = levels[i]};
            CHECK_EQ(dbs_session_set_tx_options(s, &o, &err), DBS_ECONFIG);
            CHECK(strstr(err.message, "SERIALIZABLE"));
        }
        dbs_tx_options o = {.isolation = DBS_ISOLATION_SERIALIZABLE};
        CHECK_OK(dbs_session_set_tx_options(s, &o, &err), &err);
    }
    /* a refused option changes nothing: then back to plain, it writes */
    CHECK_OK(dbs_session_set_tx_options(s, NULL, &err), &err);
    CHECK_OK(insert(s, 13, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_id(13), 1);

    /* dbs_transact_opts refuses them before running the unit, once */
    int calls = 0;
    if (be != SQLITE) {
        CHECK_EQ(dbs_transact_opts(pool, NULL, &imm, insert_12, &calls, &err), DBS_ECONFIG);
        CHECK_EQ(calls, 0);
    }
    def.read_only = 1;
    if (be != PG) {
        CHECK_EQ(dbs_transact_opts(pool, NULL, &def, insert_12, &calls, &err), DBS_ECONFIG);
        CHECK_EQ(calls, 0);
    }
    dbs_tx_options ro = {.read_only = 1};
    CHECK_EQ(dbs_transact_opts(pool, NULL, &ro, insert_12, &calls, &err), DBS_ESQL);
    CHECK_EQ(calls, 1);
    CHECK_EQ(count_id(12), 0);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

/* Options the backend refuses are the caller's mistake, known without a
 * connection: refused at once with their own code while the pool has no
 * connection to give (not DBS_ETIMEOUT after the wait) and while the
 * database is down (not DBS_ECONNECT, retried, counted as connect failures
 * and opening the circuit). */
static void test_refusals_first(void)
{
    dbs_tx_options bad[4];
    int code[4], n = 0;
    bad[n] = (dbs_tx_options){.isolation = (enum dbs_isolation)99};
    code[n++] = DBS_EMISUSE;
    bad[n] = (dbs_tx_options){.isolation = DBS_ISOLATION_SERIALIZABLE, .deferrable = 1};
    code[n++] = DBS_ECONFIG; /* PostgreSQL too: without read_only */
    if (be != SQLITE) {
        bad[n] = (dbs_tx_options){.immediate = 1};
        code[n++] = DBS_ECONFIG;
    } else {
        bad[n] = (dbs_tx_options){.isolation = DBS_ISOLATION_READ_COMMITTED};
        code[n++] = DBS_ECONFIG;
        bad[n] = (dbs_tx_options){.immediate = 1, .read_only = 1};
        code[n++] = DBS_ECONFIG;
    }

    /* the pool's one connection held: nothing to wait for */
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 300;
    cfg.log_events = 0;
    cfg.url = url_all;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p != NULL);
    dbs_session *hold = open_ok(p);
    for (int i = 0; i < n; i++) {
        int calls = 0;
        CHECK_EQ(dbs_transact_opts(p, NULL, &bad[i], insert_12, &calls, &err), code[i]);
        CHECK_EQ(err.code, code[i]);
        CHECK_EQ(calls, 0);
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.timeouts, 0);
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, NULL), 0);
    dbs_session_close(hold);
    dbs_pool_close(p);

    if (be == SQLITE)
        return;
    /* a server that is not there (nothing listens on port 1) */
    dbs_config_init(&cfg);
    cfg.url = be == PG ? "postgresql://dbscope@127.0.0.1:1/dbscope"
                       : "mariadb://dbscope@127.0.0.1:1/dbscope";
    cfg.lazy_open = 1;
    cfg.log_events = 0;
    cfg.retry_base_ms = 1;
    cfg.retry_cap_ms = 2;
    cfg.circuit_threshold = 2;
    p = dbs_pool_open(&cfg, &err);
    CHECK(p != NULL);
    for (int i = 0; i < n; i++) {
        int calls = 0;
        CHECK_EQ(dbs_transact_opts(p, NULL, &bad[i], insert_12, &calls, &err), code[i]);
        CHECK_EQ(calls, 0);
    }
    st = stats_of(p);
    CHECK_EQ(st.connect_failures, 0);
    CHECK_EQ(st.retries, 0);
    CHECK_EQ(dbs_pool_circuit(p), DBS_CIRCUIT_CLOSED);
    dbs_pool_close(p);
}

/* SQLite's BEGIN IMMEDIATE: the write lock is the transaction's from its
 * start, so another connection's write waits for it (and gives up). */
static void test_immediate(void)
{
    if (be != SQLITE)
        return;
    dbs_error err;
    dbs_tx_options imm = {.immediate = 1};
    dbs_session *a = open_ok(pool);
    CHECK_OK(dbs_session_set_tx_options(a, &imm, &err), &err);
    (void)query_int(a, "SELECT 1", NULL, 0); /* begins: takes the write lock */
    dbs_session *b = open_ok(pool2);
    CHECK_EQ(insert(b, 20, &err), DBS_ERETRYABLE);
    dbs_session_close(b);
    CHECK_OK(dbs_rollback(a, &err), &err);
    /* a plain (deferred) transaction that has only read blocks nobody */
    CHECK_OK(dbs_session_set_tx_options(a, NULL, &err), &err);
    (void)query_int(a, "SELECT 1", NULL, 0);
    b = open_ok(pool2);
    CHECK_OK(insert(b, 20, &err), &err);
    CHECK_OK(dbs_commit(b, &err), &err);
    dbs_session_close(b);
    dbs_session_close(a);

    /* BEGIN IMMEDIATE takes the write lock, which a read-only transaction
     * cannot take (query_only): refused when set, not accepted and then
     * every transaction failing with "attempt to write a readonly
     * database"; on a read-only session too */
    dbs_tx_options imm_ro = {.immediate = 1, .read_only = 1};
    a = open_ok(pool);
    CHECK_EQ(dbs_session_set_tx_options(a, &imm_ro, &err), DBS_ECONFIG);
    CHECK(strstr(err.message, "immediate"));
    CHECK_EQ(query_int(a, "SELECT 1", NULL, 0), 1); /* nothing changed */
    dbs_session_close(a);
    int calls = 0;
    CHECK_EQ(dbs_transact_opts(pool, NULL, &imm_ro, insert_12, &calls, &err), DBS_ECONFIG);
    CHECK_EQ(calls, 0);
    a = dbs_session_open_ro(pool, NULL, &err);
    CHECK(a != NULL);
    CHECK_EQ(dbs_session_set_tx_options(a, &imm, &err), DBS_ECONFIG);
    CHECK_EQ(query_int(a, "SELECT 1", NULL, 0), 1);
    dbs_session_close(a);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

/* ---- nested units ---- */

struct nest {
    int outer_calls, inner_calls;
    int inner_id;       /* what the inner unit inserts */
    int inner_fail;     /* the inner unit then returns this (0: success) */
    int inner_dup;      /* the inner unit then inserts this id again */
    int depth2;         /* the inner unit runs a failing unit of its own */
    bool explicit_api;  /* dbs_session_transact rather than dbs_transact */
    int inner_rc;       /* what the nested call returned */
};

static int inner_work(dbs_session *s, void *arg, dbs_error *err);

static int innermost_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    int64_t rc = insert(s, 40, err);
    if (rc < 0)
        return (int)rc;
    return dbs__err(err, DBS_ESQL, "innermost unit fails on purpose");
}

static int inner_work(dbs_session *s, void *arg, dbs_error *err)
{
    struct nest *n = arg;
    n->inner_calls++;
    int64_t rc = insert(s, n->inner_id, err);
    if (rc < 0)
        return (int)rc;
    if (n->depth2) {
        dbs_error e2;
        CHECK_EQ(dbs_transact(pool, NULL, innermost_work, NULL, &e2), DBS_ESQL);
        /* the middle unit goes on after its inner unit rolled back */
        rc = insert(s, n->depth2, err);
        if (rc < 0)
            return (int)rc;
    }
    if (n->inner_dup) {
        rc = insert(s, n->inner_dup, err); /* a real error: the key exists */
        if (rc < 0)
            return (int)rc;
    }
    if (n->inner_fail)
        return dbs__err(err, n->inner_fail, "inner unit fails on purpose");
    return 0;
}

static int outer_work(dbs_session *s, void *arg, dbs_error *err)
{
    struct nest *n = arg;
    n->outer_calls++;
    int64_t rc = insert(s, 30, err);
    if (rc < 0)
        return (int)rc;
    dbs_error e2;
    n->inner_rc = n->explicit_api ? dbs_session_transact(s, inner_work, n, &e2)
                                  : dbs_transact(pool, NULL, inner_work, n, &e2);
    /* the outer unit goes on whatever the inner one did */
    rc = insert(s, 31, err);
    return rc < 0 ? (int)rc : 0;
}

static void clear_ids(void)
{
    run_sql(pool2,Q("DELETE FROM %s WHERE id >= 30 AND id < 100"));
}

static void test_savepoints(void)
{
    dbs_error err;
    for (int api = 0; api < 2; api++) {
        /* the inner unit succeeds: its rows commit with the outer's */
        clear_ids();
        struct nest n = {.inner_id = 32};
        if (api == 0) {
            CHECK_OK(dbs_transact(pool, NULL, outer_work, &n, &err), &err);
        } else {
            n.explicit_api = true;
            dbs_session *s = open_ok(pool);
            CHECK_OK(outer_work(s, &n, &err), &err);
            CHECK_OK(dbs_commit(s, &err), &err);
            dbs_session_close(s);
        }
        CHECK_EQ(n.inner_rc, DBS_OK);
        CHECK_EQ(n.outer_calls, 1);
        CHECK_EQ(n.inner_calls, 1);
        CHECK_EQ(count_id(30), 1);
        CHECK_EQ(count_id(32), 1);
        CHECK_EQ(count_id(31), 1);

        /* the inner unit fails: only its rows go */
        clear_ids();
        n = (struct nest){.inner_id = 33, .inner_fail = DBS_ESQL, .explicit_api = api};
        CHECK_OK(dbs_transact(pool, NULL, outer_work, &n, &err), &err);
        CHECK_EQ(n.inner_rc, DBS_ESQL);
        CHECK_EQ(n.outer_calls, 1);
        CHECK_EQ(count_id(30), 1);
        CHECK_EQ(count_id(33), 0);
        CHECK_EQ(count_id(31), 1);

        /* a real error inside it (PostgreSQL: the transaction would be
         * aborted but for the savepoint) */
        clear_ids();
        n = (struct nest){.inner_id = 34, .inner_dup = 30, .explicit_api = api};
        CHECK_OK(dbs_transact(pool, NULL, outer_work, &n, &err), &err);
        CHECK_EQ(n.inner_rc, DBS_ECONSTRAINT);
        CHECK_EQ(count_id(34), 0);
        CHECK_EQ(count_id(31), 1);

        /* two levels: the innermost fails alone */
        clear_ids();
        n = (struct nest){.inner_id = 35, .depth2 = 36, .explicit_api = api};
        CHECK_OK(dbs_transact(pool, NULL, outer_work, &n, &err), &err);
        CHECK_EQ(n.inner_rc, DBS_OK);
        CHECK_EQ(count_id(35), 1);
        CHECK_EQ(count_id(40), 0);
        CHECK_EQ(count_id(36), 1);
        CHECK_EQ(count_id(31), 1);
    }
    /* no work: refused */
    clear_ids();
    dbs_session *s = open_ok(pool);
    CHECK_EQ(dbs_session_transact(s, NULL, NULL, &err), DBS_EMISUSE);
    dbs_session_close(s);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

struct nest_opt {
    int calls;
    int rc;
};

static int noop_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)err;
    (*(int *)arg)++;
    return 0;
}

static int outer_opts_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    struct nest_opt *n = arg;
    dbs_tx_options ro = {.read_only = 1};
    n->rc = dbs_transact_opts(pool, NULL, &ro, noop_work, &n->calls, err);
    return 0;
}

static void test_nested_options(void)
{
    dbs_error err;
    struct nest_opt n = {0};
    CHECK_OK(dbs_transact(pool, NULL, outer_opts_work, &n, &err), &err);
    CHECK_EQ(n.rc, DBS_EMISUSE);
    CHECK_EQ(n.calls, 0);
}

/* A nested unit does not use its ctx, but a ctx no session could take
 * (not UTF-8, longer than DBS_CONTEXT_MAX) is refused with DBS_EMISUSE
 * before anything runs, nested or not, as the header says of every call
 * built on dbs_session_open; the enclosing unit goes on. */
static char nest_long[DBS_CONTEXT_MAX + 2];

static int outer_bad_ctx_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    struct nest_opt *n = arg;
    const dbs_context bad[] = {{.request_id = "r\xff"}, {.tenant_id = nest_long}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dbs_error e2;
        int rc = dbs_transact(pool, &bad[i], noop_work, &n->calls, &e2);
        CHECK_EQ(rc, DBS_EMISUSE);
        CHECK_EQ(e2.code, DBS_EMISUSE);
        CHECK_CONTAINS(e2.message, i == 0 ? "UTF-8" : "DBS_CONTEXT_MAX");
        rc = dbs_transact_ro(pool, &bad[i], noop_work, &n->calls, &e2);
        CHECK_EQ(rc, DBS_EMISUSE);
        dbs_tx_options ro = {.read_only = 1};
        rc = dbs_transact_opts(pool, &bad[i], &ro, noop_work, &n->calls, &e2);
        CHECK_EQ(rc, DBS_EMISUSE);
    }
    /* the unit's transaction is intact */
    exec_ok(s, "SELECT 1");
    n->rc = DBS_OK;
    return 0;
}

static void test_nested_bad_context(void)
{
    memset(nest_long, 't', sizeof nest_long - 1);
    dbs_error err;
    struct nest_opt n = {.rc = -1};
    CHECK_OK(dbs_transact(pool, NULL, outer_bad_ctx_work, &n, &err), &err);
    CHECK_EQ(n.rc, DBS_OK);
    CHECK_EQ(n.calls, 0);
}

/* dbs_transact_ro inside a read-write unit joins it (and sees its writes);
 * a read-write dbs_transact inside a read-only unit is a unit of its own. */
struct mixed {
    dbs_pool *p;
    int inner_calls;
    int64_t seen;
    int inner_rc;
};

static int see_60(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    struct mixed *m = arg;
    m->inner_calls++;
    m->seen = query_int(s, Q("SELECT COUNT(*) FROM %s WHERE id = 60"), NULL, 0);
    return 0;
}

static int write_61(dbs_session *s, void *arg, dbs_error *err)
{
    struct mixed *m = arg;
    m->inner_calls++;
    int64_t rc = insert(s, 61, err);
    return rc < 0 ? (int)rc : 0;
}

static int rw_outer(dbs_session *s, void *arg, dbs_error *err)
{
    struct mixed *m = arg;
    int64_t rc = insert(s, 60, err);
    if (rc < 0)
        return (int)rc;
    dbs_error e2;
    m->inner_rc = dbs_transact_ro(m->p, NULL, see_60, m, &e2);
    return 0;
}

static int ro_outer(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)err;
    struct mixed *m = arg;
    dbs_error e2;
    m->inner_rc = dbs_transact(m->p, NULL, write_61, m, &e2);
    if (m->inner_rc != DBS_OK)
        fprintf(stderr, "inner unit: %s\n", e2.message);
    return 0;
}

static void test_nested_mixed(void)
{
    dbs_error err;
    clear_ids();
    struct mixed m = {.p = pool};
    CHECK_OK(dbs_transact(pool, NULL, rw_outer, &m, &err), &err);
    CHECK_EQ(m.inner_rc, DBS_OK);
    CHECK_EQ(m.inner_calls, 1);
    CHECK_EQ(m.seen, 1); /* the enclosing unit's uncommitted row */
    m = (struct mixed){.p = pool2};
    CHECK_OK(dbs_transact_ro(pool2, NULL, ro_outer, &m, &err), &err);
    CHECK_EQ(m.inner_rc, DBS_OK); /* not refused as a write in a read-only unit */
    CHECK_EQ(m.inner_calls, 1);
    CHECK_EQ(count_id(61), 1);
}

/* The retry rule: a transient failure of the whole transaction inside a
 * nested unit (PostgreSQL: a serialization failure; SQLite: a write on a
 * stale snapshot; MariaDB: a lock wait timeout) makes the OUTER unit run
 * again, whether its work passes the error on or ignores it. */
struct retry {
    int outer_calls, inner_calls;
    bool swallow;
    dbs_session *blocker; /* MariaDB: holds the row lock until rolled back */
};

static int bump_work(dbs_session *s, void *arg, dbs_error *err)
{
    struct retry *r = arg;
    r->inner_calls++;
    dbs_value v[] = {DBS_INT(100 + r->inner_calls)};
    int64_t rc = dbs_exec(s,Q("UPDATE %s SET v = $1 WHERE id = 100"), v, 1, err);
    return rc < 0 ? (int)rc : 0;
}

static int retry_outer(dbs_session *s, void *arg, dbs_error *err)
{
    struct retry *r = arg;
    r->outer_calls++;
    dbs_error e;
    if (be == MYSQL)
        exec_ok(s, "SET SESSION innodb_lock_wait_timeout = 1");
    /* the outer unit reads the row: its snapshot */
    (void)query_int(s,Q("SELECT v FROM %s WHERE id = 100"), NULL, 0);
    if (r->outer_calls == 1) {
        /* someone else changes it, the first time only */
        dbs_session *b = open_ok(pool2);
        exec_ok(b,Q("UPDATE %s SET v = -1 WHERE id = 100"));
        if (be == MYSQL)
            r->blocker = b; /* keeps the lock: the inner unit's wait times out */
        else {
            CHECK_OK(dbs_commit(b, &e), &e);
            dbs_session_close(b);
        }
    }
    int rc = dbs_transact(pool, NULL, bump_work, r, err);
    if (r->blocker) {
        dbs_session_close(r->blocker);
        r->blocker = NULL;
    }
    if (r->outer_calls == 1)
        CHECK_EQ(rc, DBS_ERETRYABLE);
    else
        CHECK_OK(rc, err);
    if (r->swallow && rc != DBS_OK) {
        /* the outer work ignores it: its COMMIT must not commit the rest */
        err->code = DBS_OK;
        return 0;
    }
    return rc;
}

static void test_retry_rule(void)
{
    dbs_error err;
    dbs_tx_options rr = {.isolation = be == SQLITE ? DBS_ISOLATION_SERIALIZABLE
                                                   : DBS_ISOLATION_REPEATABLE_READ};
    for (int swallow = 0; swallow < 2; swallow++) {
        run_sql(pool2,Q("UPDATE %s SET v = 0 WHERE id = 100"));
        uint64_t retries0 = stats_of(pool).retries;
        struct retry r = {.swallow = swallow};
        CHECK_OK(dbs_transact_opts(pool, NULL, &rr, retry_outer, &r, &err), &err);
        CHECK_EQ(r.outer_calls, 2);
        CHECK_EQ(r.inner_calls, 2); /* once per outer run, never alone */
        CHECK_EQ(stats_of(pool).retries - retries0, 1);
        CHECK_EQ(value_of(100), 102);
    }
    /* dbs_session_transact: the doomed transaction's commit rolls back and
     * says why */
    run_sql(pool2,Q("UPDATE %s SET v = 0 WHERE id = 100"));
    dbs_session *s = open_ok(pool);
    CHECK_OK(dbs_session_set_tx_options(s, &rr, &err), &err);
    struct retry r = {.outer_calls = 1};
    if (be == MYSQL)
        exec_ok(s, "SET SESSION innodb_lock_wait_timeout = 1");
    (void)query_int(s,Q("SELECT v FROM %s WHERE id = 100"), NULL, 0);
    dbs_session *b = open_ok(pool2);
    exec_ok(b,Q("UPDATE %s SET v = -1 WHERE id = 100"));
    if (be != MYSQL) {
        CHECK_OK(dbs_commit(b, &err), &err);
        dbs_session_close(b);
        b = NULL;
    }
    CHECK_EQ(dbs_session_transact(s, bump_work, &r, &err), DBS_ERETRYABLE);
    dbs_session_close(b);
    /* later statements and the commit get the same error */
    CHECK_EQ(insert(s, 50, &err), DBS_ERETRYABLE);
    CHECK_EQ(dbs_commit(s, &err), DBS_ERETRYABLE);
    CHECK(strstr(err.message, "nested unit"));
    if (be == PG)
        CHECK_STR(err.sqlstate, "40001"); /* the serialization failure's */
    /* the next transaction is a fresh one */
    CHECK_OK(insert(s, 50, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_id(50), 1);
    CHECK_EQ(value_of(100), be == MYSQL ? 0 : -1); /* never the inner's 101 */
}

/* A nested unit whose work ignores a serialization failure and returns 0:
 * its RELEASE SAVEPOINT is refused as part of the aborted transaction,
 * and that refusal is the failure's, so the nested unit returns
 * DBS_ERETRYABLE and the OUTER unit runs again (it used to end with
 * DBS_ESQL, run once, on PostgreSQL and MariaDB). SQLite has no 40001 to
 * raise. */
static const char *raise_40001;

static int ignoring_inner(dbs_session *s, void *arg, dbs_error *err)
{
    struct retry *r = arg;
    r->inner_calls++;
    int64_t rc = insert(s, 71, err);
    if (rc < 0)
        return (int)rc;
    if (r->outer_calls == 1) {
        dbs_error ignored;
        CHECK_EQ(dbs_exec(s, raise_40001, NULL, 0, &ignored), DBS_ERETRYABLE);
    }
    return 0;
}

static int ignoring_outer(dbs_session *s, void *arg, dbs_error *err)
{
    struct retry *r = arg;
    r->outer_calls++;
    int64_t rc = insert(s, 70, err);
    if (rc < 0)
        return (int)rc;
    dbs_error e2;
    int irc = dbs_transact(pool, NULL, ignoring_inner, r, &e2);
    CHECK_EQ(irc, r->outer_calls == 1 ? DBS_ERETRYABLE : DBS_OK);
    return 0; /* whatever the inner unit did */
}

static void test_nested_ignored(void)
{
    if (be == SQLITE)
        return;
    if (be == PG) {
        raise_40001 = "DO $$BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END$$";
    } else {
        run_sql(pool2, "DROP PROCEDURE IF EXISTS dbs_txo_40001");
        run_sql(pool2, "CREATE PROCEDURE dbs_txo_40001() SIGNAL SQLSTATE '40001' "
                       "SET MESSAGE_TEXT = 'forced serialization failure'");
        raise_40001 = "CALL dbs_txo_40001()";
    }
    dbs_error err;
    clear_ids();
    struct retry r = {0};
    CHECK_OK(dbs_transact(pool, NULL, ignoring_outer, &r, &err), &err);
    CHECK_EQ(r.outer_calls, 2);
    CHECK_EQ(r.inner_calls, 2);
    CHECK_EQ(count_id(70), 1);
    CHECK_EQ(count_id(71), 1);

    /* dbs_session_transact: the nested unit says so, and so does the commit */
    clear_ids();
    dbs_session *s = open_ok(pool);
    r = (struct retry){.outer_calls = 1};
    CHECK_EQ(dbs_session_transact(s, ignoring_inner, &r, &err), DBS_ERETRYABLE);
    CHECK_EQ(dbs_commit(s, &err), DBS_ERETRYABLE);
    dbs_session_close(s);
    CHECK_EQ(count_id(71), 0);
    if (be == MYSQL)
        run_sql(pool2, "DROP PROCEDURE dbs_txo_40001");
}

int main(void)
{
    const char *url = test_url("txopts");
    be = test_is_pg(url) ? PG : test_is_mysql(url) ? MYSQL : SQLITE;
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 5000;
    cfg.retry_max = 3;
    cfg.retry_base_ms = 1;
    cfg.retry_cap_ms = 4;
    pool = open_pool("txopts", &cfg);
    url_all = cfg.url;
    dbs_config cfg2;
    dbs_config_init(&cfg2);
    cfg2.url = cfg.url;
    cfg2.busy_timeout_ms = 50;
    dbs_error err;
    pool2 = dbs_pool_open(&cfg2, &err);
    CHECK(pool2);
    if (be == MYSQL) {
        /* the fixture writes super_url beside url */
        char dir[600], super_url[1024];
        snprintf(dir, sizeof dir, "%s", getenv("DBSCOPE_TEST_URL_FILE"));
        *strrchr(dir, '/') = '\0';
        read_line(dir, "super_url", super_url, sizeof super_url);
        dbs_config cfg3;
        dbs_config_init(&cfg3);
        cfg3.url = super_url;
        super = dbs_pool_open(&cfg3, &err);
        CHECK(super);
    }
    snprintf(tbl, sizeof tbl, "%s", table_name("txo"));
    run_sql(pool2,Q("DROP TABLE IF EXISTS %s"));
    run_sql(pool2,Q("CREATE TABLE %s (id INTEGER PRIMARY KEY, v INTEGER)"));
    run_sql(pool2,Q("INSERT INTO %s (id, v) VALUES (100, 0)"));

    if (be != SQLITE)
        test_isolation();
    test_read_only();
    test_refusals();
    test_refusals_first();
    test_immediate();
    test_savepoints();
    test_nested_options();
    test_nested_bad_context();
    test_nested_mixed();
    test_retry_rule();
    test_nested_ignored();

    dbs_stats st = stats_of(pool);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.acquired, st.released);
    run_sql(pool2,Q("DROP TABLE %s"));
    dbs_pool_close(pool);
    dbs_pool_close(pool2);
    dbs_pool_close(super);
    puts("test_txopts: ok");
    return 0;
}
