/* The state-leak matrix: whatever one session does to its connection is
 * invisible to the next session that gets the very same connection (pool of
 * one, no overflow; the backend pid proves it is the same). One check per
 * item. Runs on the PostgreSQL fixture only. */
#include "common.h"

#include <libpq-fe.h>

static dbs_pool *pool, *super_pool;
static int64_t the_pid;
static char tbl[64], role[64];

static dbs_pool *open_one(const char *url)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    return p;
}




/* Opens the next session and checks it got the same backend. */
static dbs_session *same_conn(dbs_pool *p, int64_t pid)
{
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT pg_backend_pid()", NULL, 0), pid);
    return s;
}

static int64_t pid_of(dbs_pool *p)
{
    dbs_session *s = open_ok(p);
    int64_t pid = query_int(s, "SELECT pg_backend_pid()", NULL, 0);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    return pid;
}

static void leak_open_tx(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", tbl);
    exec_ok(s, sql);
    dbs_session_close(s); /* no commit */
    s = same_conn(pool, the_pid);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0);
    dbs_session_close(s);
}

static void leak_failed_tx(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    dbs_error err;
    CHECK(dbs_exec(s, "SELECT 1/0", NULL, 0, &err) < 0);
    CHECK_STR(err.sqlstate, "22012");
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    CHECK_EQ(query_int(s, "SELECT 41 + 1", NULL, 0), 42);
    dbs_session_close(s);
}

static void leak_set(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    exec_ok(s, "SET work_mem = '7MB'");
    exec_ok(s, "SELECT set_config('app.leak', 'yes', false)");
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    char v[64];
    text_of(s, "SHOW work_mem", v, sizeof v);
    CHECK(strcmp(v, "7MB") != 0);
    text_of(s, "SELECT coalesce(current_setting('app.leak', true), '')", v,
            sizeof v);
    CHECK_STR(v, "");
    dbs_session_close(s);
}

/* Dirty and not committed: the owed ROLLBACK rides with the reset. */
static void leak_set_uncommitted(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (2)", tbl);
    exec_ok(s, sql);
    exec_ok(s, "SET work_mem = '5MB'");
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    char v[64];
    text_of(s, "SHOW work_mem", v, sizeof v);
    CHECK(strcmp(v, "5MB") != 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0);
    dbs_session_close(s);
}

/* A bad context setting name aborts the batch before the statement's Parse:
 * the statement cache must not believe it was prepared. */
static void cache_after_aborted_batch(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = test_url("test_pg_leak");
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.ctx_tenant_setting = "statement_timeout"; /* "t" is not a valid value */
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p != NULL);
    dbs_context ctx = {.tenant_id = "t"};
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    CHECK(s != NULL);
    CHECK(dbs_exec(s, "SELECT 7", NULL, 0, &err) < 0);
    dbs_session_close(s);
    dbs_context good = {.tenant_id = "0"};
    s = dbs_session_open(p, &good, &err);
    CHECK(s != NULL);
    CHECK_EQ(query_int(s, "SELECT 7", NULL, 0), 7);
    dbs_session_close(s);
    dbs_pool_close(p);
}

static void leak_set_role(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    char sql[200], v[64], who[64];
    text_of(s, "SELECT current_user", who, sizeof who);
    snprintf(sql, sizeof sql, "SET ROLE %s", role);
    exec_ok(s, sql);
    text_of(s, "SELECT current_user", v, sizeof v);
    CHECK_STR(v, role);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    text_of(s, "SELECT current_user", v, sizeof v);
    CHECK_STR(v, who);
    dbs_session_close(s);
}

static void leak_session_authorization(void)
{
    int64_t pid = pid_of(super_pool);
    dbs_session *s = same_conn(super_pool, pid);
    char sql[200], v[64];
    snprintf(sql, sizeof sql, "SET SESSION AUTHORIZATION %s", role);
    exec_ok(s, sql);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(super_pool, pid);
    text_of(s, "SELECT session_user", v, sizeof v);
    CHECK_STR(v, "postgres");
    dbs_session_close(s);
}

static void leak_temp_table(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    exec_ok(s, "CREATE TEMP TABLE leak_tmp (x int)");
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    CHECK_EQ(
        query_int(s,
                  "SELECT count(*) FROM pg_class WHERE relname = 'leak_tmp' "
                  "AND relpersistence = 't' AND pg_table_is_visible(oid)",
                  NULL, 0),
        0);
    dbs_session_close(s);
}

static void leak_prepare(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    exec_ok(s, "PREPARE leak_p AS SELECT 1");
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    CHECK_EQ(query_int(s,
                       "SELECT count(*) FROM pg_prepared_statements WHERE "
                       "from_sql",
                       NULL, 0),
             0);
    /* Our own cache was dropped with it and still works. */
    CHECK_EQ(query_int(s, "SELECT pg_backend_pid()", NULL, 0), the_pid);
    dbs_session_close(s);
}

static void leak_listen(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    exec_ok(s, "LISTEN leak_channel");
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    CHECK_EQ(
        query_int(s, "SELECT count(*) FROM pg_listening_channels()", NULL, 0),
        0);
    dbs_session_close(s);
}

static void leak_advisory_lock(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    dbs_value k[] = {DBS_INT(4242)};
    query_int(s, "SELECT 1 FROM pg_advisory_lock($1)", k, 1);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    CHECK_EQ(
        query_int(s,
                  "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                  "AND pid = pg_backend_pid()",
                  NULL, 0),
        0);
    dbs_session_close(s);
}

static void leak_cursor(void)
{
    dbs_session *s = same_conn(pool, the_pid);
    exec_ok(s, "DECLARE leak_c CURSOR WITH HOLD FOR SELECT 1");
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = same_conn(pool, the_pid);
    CHECK_EQ(query_int(s,
                       "SELECT count(*) FROM pg_cursors WHERE name = 'leak_c'",
                       NULL, 0),
             0);
    dbs_session_close(s);
}

/* Per-connection state the server keeps, each item left by session A and
 * looked for by session B on the same backend, A ending every way a
 * session ends: closed with its transaction open, dbs_commit then close,
 * dbs_session_commit_close, dbs_transact, and a statement that failed
 * after the state was made (the transaction aborted), then close. */
typedef void (*leak_fn)(dbs_session *s);
static leak_fn unit_set;
static int unit_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    (void)err;
    unit_set(s);
    return 0;
}
static void across_ends(dbs_pool *p, const char *what, leak_fn set, leak_fn check)
{
    int64_t pid = pid_of(p);
    for (int how = 0; how < 5; how++) {
        dbs_error err;
        if (how == 3) {
            unit_set = set;
            CHECK_OK(dbs_transact(p, NULL, unit_work, NULL, &err), &err);
        } else {
            dbs_session *s = same_conn(p, pid);
            set(s);
            if (how == 1)
                CHECK_OK(dbs_commit(s, &err), &err);
            if (how == 4)
                CHECK(dbs_exec(s, "SELECT 1/0", NULL, 0, &err) < 0);
            if (how == 2)
                CHECK_OK(dbs_session_commit_close(s, &err), &err);
            else
                dbs_session_close(s);
        }
        dbs_session *s = same_conn(p, pid);
        check(s);
        dbs_session_close(s);
    }
    printf("leak: %s: not seen by the next session (5 ways to end)\n", what);
}

static char seq[64];
static void set_lastval(dbs_session *s)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT nextval('%s')", seq);
    CHECK_INT(query_int(s, sql, NULL, 0), >, 0);
}
static void check_lastval(dbs_session *s)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, "SELECT lastval()", NULL, 0, &err);
    if (r) {
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_FAIL("lastval() of the previous session: %lld", (long long)dbs_rows_int(r, 0));
    }
    CHECK_STR(err.sqlstate, "55000");
}
static void set_characteristics(dbs_session *s)
{
    exec_ok(s, "SELECT set_config('default_transaction_isolation', 'serializable', false), "
               "set_config('default_transaction_deferrable', 'on', false), "
               "set_config('statement_timeout', '4321', false), "
               "set_config('lock_timeout', '1234', false), "
               "set_config('idle_in_transaction_session_timeout', '99999', false)");
    exec_ok(s, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
}
static void check_characteristics(dbs_session *s)
{
    char v[64];
    CHECK_STR(text_of(s, "SHOW default_transaction_isolation", v, sizeof v), "read committed");
    CHECK_STR(text_of(s, "SHOW transaction_isolation", v, sizeof v), "read committed");
    CHECK_STR(text_of(s, "SHOW default_transaction_read_only", v, sizeof v), "off");
    CHECK_STR(text_of(s, "SHOW default_transaction_deferrable", v, sizeof v), "off");
    CHECK_STR(text_of(s, "SHOW lock_timeout", v, sizeof v), "0");
    CHECK_STR(text_of(s, "SHOW idle_in_transaction_session_timeout", v, sizeof v), "0");
    CHECK(strcmp(text_of(s, "SHOW statement_timeout", v, sizeof v), "4321ms") != 0);
}
static void set_replication_role(dbs_session *s)
{
    exec_ok(s, "SET session_replication_role = replica");
}
static void check_replication_role(dbs_session *s)
{
    char v[64];
    CHECK_STR(text_of(s, "SHOW session_replication_role", v, sizeof v), "origin");
}
static void set_role_fn(dbs_session *s)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT set_config('role', '%s', false)", role);
    exec_ok(s, sql);
}
static void check_role_fn(dbs_session *s)
{
    char v[64];
    CHECK_STR(text_of(s, "SELECT current_user", v, sizeof v), "dbscope");
}

/* setseed() makes the backend's random() a sequence anyone who knows the
 * seed can tell in advance; RESET ALL and DISCARD ALL leave it so. */
static double seeded[2];
static void set_seed(dbs_session *s)
{
    exec_ok(s, "SELECT setseed(0.5)");
}
static void check_seed(dbs_session *s)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, "SELECT random()", NULL, 0, &err);
    CHECK(r != NULL);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    double v = dbs_rows_real(r, 0);
    dbs_rows_close(r);
    if (v == seeded[0] || v == seeded[1])
        CHECK_FAIL("random() follows the previous session's setseed(): %.17g", v);
}

/* Whatever the native handle changed, on the server or in libpq (a notice
 * receiver that would get the next user's notices with this user's
 * pointer, the error verbosity, a setting), leaves with the connection:
 * it is closed at release, never handed out again. */
static int alice_notices;
static void alice_receiver(void *arg, const PGresult *res)
{
    (void)arg;
    (void)res;
    alice_notices++;
}

static void leak_native(void)
{
    dbs_stats before, after;
    dbs_pool_stats(pool, &before);
    dbs_session *s = same_conn(pool, the_pid);
    PGconn *pg = dbs_session_native(s);
    CHECK(pg != NULL);
    PGresult *r = PQexec(pg, "SET statement_timeout = '123s'");
    CHECK_EQ(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQsetNoticeReceiver(pg, alice_receiver, NULL);
    PQsetErrorVerbosity(pg, PQERRORS_VERBOSE);
    dbs_session_close(s);
    dbs_pool_stats(pool, &after);
    CHECK_EQ(after.closed_dirty, before.closed_dirty + 1);

    s = open_ok(pool);
    int64_t pid = query_int(s, "SELECT pg_backend_pid()", NULL, 0);
    CHECK(pid != the_pid);
    char v[64];
    text_of(s, "SHOW statement_timeout", v, sizeof v);
    CHECK(strcmp(v, "123s") != 0);
    exec_ok(s, "DO $$BEGIN RAISE NOTICE 'bob private notice'; END$$");
    CHECK_EQ(alice_notices, 0);
    dbs_error err;
    CHECK(dbs_exec(s, "SELECT * FROM no_such_table_here", NULL, 0, &err) < 0);
    CHECK(strstr(err.message, "LOCATION") == NULL); /* the pool's verbosity */
    dbs_session_close(s);
    the_pid = pid;
}

int main(void)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    char path[900], super_url[1024];
    snprintf(path, sizeof path, "%s/super_url", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    CHECK(fgets(super_url, sizeof super_url, f) != NULL);
    fclose(f);
    super_url[strcspn(super_url, "\r\n")] = '\0';

    snprintf(tbl, sizeof tbl, "leak_%ld", (long)getpid());
    snprintf(role, sizeof role, "leak_role_%ld", (long)getpid());
    pool = open_one(test_url("test_pg_leak"));
    super_pool = open_one(super_url);

    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (x int)", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "CREATE ROLE %s", role);
    run_sql(super_pool, sql);
    snprintf(sql, sizeof sql, "GRANT %s TO dbscope", role);
    run_sql(super_pool, sql);

    the_pid = pid_of(pool);
    leak_open_tx();
    leak_failed_tx();
    leak_set();
    leak_set_uncommitted();
    cache_after_aborted_batch();
    leak_set_role();
    leak_session_authorization();
    leak_temp_table();
    leak_prepare();
    leak_listen();
    leak_advisory_lock();
    leak_cursor();
    leak_native();
    snprintf(seq, sizeof seq, "leak_seq_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE SEQUENCE %s", seq);
    run_sql(pool, sql);
    the_pid = pid_of(pool);
    across_ends(pool, "lastval()", set_lastval, check_lastval);
    across_ends(pool, "default transaction characteristics and timeouts",
                set_characteristics, check_characteristics);
    across_ends(pool, "a role made current through set_config", set_role_fn, check_role_fn);
    {
        dbs_session *s = same_conn(pool, the_pid);
        exec_ok(s, "SELECT setseed(0.5)");
        dbs_error err;
        for (int i = 0; i < 2; i++) {
            dbs_rows *r = dbs_query(s, "SELECT random()", NULL, 0, &err);
            CHECK(r != NULL);
            CHECK_EQ(dbs_rows_next(r, &err), 1);
            seeded[i] = dbs_rows_real(r, 0);
            dbs_rows_close(r);
        }
        dbs_session_close(s);
    }
    across_ends(pool, "the seed of random()", set_seed, check_seed);
    /* the reset's seed is a number sent as text: "0,25" under de_DE made
     * the reset fail and the connection go */
    if (test_comma_locale()) {
        across_ends(pool, "the seed of random(), under a decimal-comma locale", set_seed,
                    check_seed);
        setlocale(LC_NUMERIC, "C");
    }
    across_ends(super_pool, "session_replication_role", set_replication_role,
                check_replication_role);
    snprintf(sql, sizeof sql, "DROP SEQUENCE %s", seq);
    run_sql(pool, sql);

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    run_sql(super_pool, sql);
    dbs_pool_close(pool);
    dbs_pool_close(super_pool);
    return 0;
}
