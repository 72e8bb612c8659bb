/* The reset holds whatever the session ran, and rollback ends the
 * transaction at once. Pool of one, no overflow: user A's session, then user
 * B's on the very same backend (the pid proves it). A changes session state
 * only from inside plpgsql functions and a trigger, where no scan of the SQL
 * text can see it, and ends its session five ways (dbs_transact, dbs_commit
 * then close, close without commit, commit then more state then close,
 * dbs_session_commit_close); B must see none of it. Also: a
 * commented PREPARE, a user's PREPARE, DEALLOCATE ALL by the user (plain and
 * inside a function), dbs_rollback freeing row locks, notices reaching
 * on_event with the password scrubbed; the reset's own named statements
 * replaced by a session (reset_statements); a cached statement's name
 * taken by a session's own PREPARE, in a DO block or a function (swap); and
 * cached plans across
 * sessions: row-level security per role (plan_rls, plan_rls_session),
 * search_path changed in a function (plan_search_path), a temporary table
 * dropped by the reset (plan_temp): PostgreSQL re-plans these by itself,
 * so the reset needs no DISCARD PLANS for them; and a temporary table made
 * by the next session (plan_shadow: it does not re-plan, which is why a
 * backend with a temporary schema still gets DISCARD PLANS). */
#include "common.h"

static dbs_pool *pool, *other;
static int64_t the_pid;
static long me;
static char password[256];
static char default_search_path[256];

static dbs_pool *open_one(enum dbs_reset_mode reset)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.reset = reset;
    return open_pool("reset", &cfg);
}




static int64_t pid_of(dbs_session *s)
{
    return query_int(s, "SELECT pg_backend_pid()", NULL, 0);
}

/* Opens the next session and checks it got the same backend. */
static dbs_session *same_conn(dbs_pool *p)
{
    dbs_session *s = open_ok(p);
    CHECK_EQ(pid_of(s), the_pid);
    return s;
}

static void sql_fmt(char *out, size_t n, const char *fmt)
{
    /* every %ld in fmt is this process's id: names no other test uses */
    char tmp[2048];
    snprintf(tmp, sizeof tmp, "%s", fmt);
    size_t o = 0;
    for (const char *p = tmp; *p && o + 24 < n; p++) {
        if (p[0] == '%' && p[1] == 'l' && p[2] == 'd') {
            o += (size_t)snprintf(out + o, n - o, "%ld", me);
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void run_fmt(dbs_pool *p, const char *fmt)
{
    char sql[2048];
    sql_fmt(sql, sizeof sql, fmt);
    run_sql(p, sql);
}

static void setup(void)
{
    run_fmt(pool, "CREATE SEQUENCE rs_seq_%ld");
    run_fmt(pool, "CREATE TABLE rs_t_%ld (id int PRIMARY KEY, v int)");
    run_fmt(pool, "INSERT INTO rs_t_%ld VALUES (1, 0)");
    /* Everything a session can leave behind, from inside one function. */
    run_fmt(pool,
            "CREATE FUNCTION rs_dirty_%ld() RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  PERFORM set_config('app.leak', 'yes', false);\n"
            "  PERFORM set_config('search_path', 'pg_catalog', false);\n"
            "  CREATE TEMP TABLE IF NOT EXISTS rs_tmp (x int);\n"
            "  INSERT INTO rs_tmp VALUES (1);\n"
            "  PERFORM pg_advisory_lock(4242);\n"
            "  EXECUTE 'LISTEN rs_ch';\n"
            "  PERFORM nextval('public.rs_seq_%ld');\n"
            "  RETURN 1;\n"
            "END $$");
    run_fmt(pool,
            "CREATE FUNCTION rs_dealloc_%ld() RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN 1; END $$");
    /* A trigger that changes session state behind a plain INSERT. */
    /* A unique constraint checked at COMMIT: a COMMIT that fails. */
    run_fmt(pool, "CREATE TABLE rs_def_%ld (x int UNIQUE DEFERRABLE "
                  "INITIALLY DEFERRED)");
    run_fmt(pool, "CREATE TABLE rs_trig_%ld (x int)");
    run_fmt(pool,
            "CREATE FUNCTION rs_trig_fn_%ld() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  PERFORM set_config('app.trig', 'yes', false);\n"
            "  PERFORM pg_advisory_lock(4343);\n"
            "  RETURN NEW;\n"
            "END $$");
    run_fmt(pool, "CREATE TRIGGER rs_trig_%ld AFTER INSERT ON rs_trig_%ld "
                  "FOR EACH ROW EXECUTE FUNCTION rs_trig_fn_%ld()");
    /* Plans: row-level security by role (a policy for each role, so a
     * plan holds the policy of the role it was made for) ... */
    run_fmt(pool, "CREATE ROLE rs_a_%ld NOLOGIN");
    run_fmt(pool, "CREATE ROLE rs_b_%ld NOLOGIN");
    run_fmt(pool, "GRANT rs_a_%ld, rs_b_%ld TO CURRENT_USER");
    run_fmt(pool, "CREATE TABLE rs_rls_%ld (owner text, v int)");
    run_fmt(pool, "INSERT INTO rs_rls_%ld VALUES ('a', 1), ('b', 2)");
    run_fmt(pool, "GRANT SELECT ON rs_rls_%ld TO rs_a_%ld, rs_b_%ld");
    run_fmt(pool, "ALTER TABLE rs_rls_%ld ENABLE ROW LEVEL SECURITY");
    run_fmt(pool, "CREATE POLICY rs_pa ON rs_rls_%ld TO rs_a_%ld "
                  "USING (owner = 'a')");
    run_fmt(pool, "CREATE POLICY rs_pb ON rs_rls_%ld TO rs_b_%ld "
                  "USING (owner = 'b')");
    /* (a function that makes a role current for the rest of the session) */
    run_fmt(pool,
            "CREATE FUNCTION rs_role_%ld(r text) RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  PERFORM set_config('role', r, false);\n"
            "  RETURN 1;\n"
            "END $$");
    /* ... one table name in two schemas, and a function that changes
     * search_path for the rest of the session ... */
    run_fmt(pool, "CREATE SCHEMA rs_sch_%ld");
    run_fmt(pool, "CREATE TABLE public.rs_sp_%ld AS SELECT 1 AS v");
    run_fmt(pool, "CREATE TABLE rs_sch_%ld.rs_sp_%ld AS SELECT 2 AS v");
    run_fmt(pool,
            "CREATE FUNCTION rs_path_%ld() RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  PERFORM set_config('search_path', 'rs_sch_%ld, public', false);\n"
            "  RETURN 1;\n"
            "END $$");
    /* ... and a table a temporary table shadows, made inside a function. */
    run_fmt(pool, "CREATE TABLE public.rs_shadow_%ld AS SELECT 1 AS v");
    run_fmt(pool,
            "CREATE FUNCTION rs_shadow_fn_%ld() RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  CREATE TEMP TABLE rs_shadow_%ld AS SELECT 99 AS v;\n"
            "  RETURN 1;\n"
            "END $$");
}

static void teardown(void)
{
    run_fmt(pool, "DROP FUNCTION rs_shadow_fn_%ld()");
    run_fmt(pool, "DROP TABLE public.rs_shadow_%ld");
    run_fmt(pool, "DROP FUNCTION rs_path_%ld()");
    run_fmt(pool, "DROP TABLE rs_sch_%ld.rs_sp_%ld");
    run_fmt(pool, "DROP SCHEMA rs_sch_%ld");
    run_fmt(pool, "DROP TABLE public.rs_sp_%ld");
    run_fmt(pool, "DROP TABLE rs_rls_%ld");
    run_fmt(pool, "DROP FUNCTION rs_role_%ld(text)");
    run_fmt(pool, "DROP ROLE rs_a_%ld");
    run_fmt(pool, "DROP ROLE rs_b_%ld");
    run_fmt(pool, "DROP TABLE rs_def_%ld");
    run_fmt(pool, "DROP TABLE rs_trig_%ld");
    run_fmt(pool, "DROP FUNCTION rs_trig_fn_%ld()");
    run_fmt(pool, "DROP FUNCTION rs_dirty_%ld()");
    run_fmt(pool, "DROP FUNCTION rs_dealloc_%ld()");
    run_fmt(pool, "DROP TABLE rs_t_%ld");
    run_fmt(pool, "DROP SEQUENCE rs_seq_%ld");
}

/* What B must not see of A's session. */
static void check_clean(const char *how)
{
    dbs_session *s = same_conn(pool);
    char v[256];
    text_of(s, "SELECT coalesce(current_setting('app.leak', true), '')", v,
            sizeof v);
    if (strcmp(v, "") != 0)
        CHECK_FAIL("%s: app.leak is '%s'", how, v);
    text_of(s, "SELECT coalesce(current_setting('app.trig', true), '')", v,
            sizeof v);
    if (strcmp(v, "") != 0)
        CHECK_FAIL("%s: app.trig is '%s'", how, v);
    text_of(s, "SHOW search_path", v, sizeof v);
    if (strcmp(v, default_search_path) != 0)
        CHECK_FAIL("%s: search_path is '%s'", how, v);
    if (query_int(s, "SELECT count(*) FROM pg_catalog.pg_class WHERE "
                     "relname = 'rs_tmp' AND relpersistence = 't' AND "
                     "relnamespace = pg_catalog.pg_my_temp_schema()",
                  NULL, 0) != 0)
        CHECK_FAIL("%s: the temp table survived", how);
    if (query_int(s, "SELECT count(*) FROM pg_catalog.pg_locks WHERE "
                     "locktype = 'advisory' AND pid = pg_backend_pid()",
                  NULL, 0) != 0)
        CHECK_FAIL("%s: an advisory lock is still held", how);
    if (query_int(s, "SELECT count(*) FROM pg_catalog.pg_listening_channels()",
                  NULL, 0) != 0)
        CHECK_FAIL("%s: still listening", how);
    if (query_int(s, "SELECT count(*) FROM pg_catalog.pg_prepared_statements "
                     "WHERE from_sql",
                  NULL, 0) != 0)
        CHECK_FAIL("%s: a user's prepared statement survived", how);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    /* currval fails once the sequence state is discarded */
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT currval('public.rs_seq_%ld')", me);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (r) {
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_FAIL("%s: currval() of A's sequence is visible: %lld", how,
                   (long long)dbs_rows_int(r, 0));
    }
    CHECK_STR(err.sqlstate, "55000");
    dbs_session_close(s);
}

static int dirty_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    char sql[200];
    CHECK_EQ(pid_of(s), the_pid);
    snprintf(sql, sizeof sql, "SELECT public.rs_dirty_%ld()", me);
    if (dbs_exec(s, sql, NULL, 0, err) < 0)
        return -1;
    snprintf(sql, sizeof sql, "INSERT INTO public.rs_trig_%ld VALUES (1)", me);
    return dbs_exec(s, sql, NULL, 0, err) < 0 ? -1 : 0;
}

static void test_functions(void)
{
    dbs_error err;
    /* 1: dbs_transact (the reset rides with the COMMIT) */
    CHECK_OK(dbs_transact(pool, NULL, dirty_work, NULL, &err), &err);
    check_clean("dbs_transact");
    /* 2: dbs_commit, then close (the reset is posted at close) */
    dbs_session *s = open_ok(pool);
    CHECK_OK(dirty_work(s, NULL, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    check_clean("dbs_commit + close");
    /* 3: close without commit (the reset rides with the ROLLBACK) */
    s = open_ok(pool);
    CHECK_OK(dirty_work(s, NULL, &err), &err);
    dbs_session_close(s);
    check_clean("close without commit");
    /* 4: dbs_commit, then more state in a new transaction, then close */
    s = open_ok(pool);
    CHECK_OK(dirty_work(s, NULL, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_OK(dirty_work(s, NULL, &err), &err);
    dbs_session_close(s);
    check_clean("commit, more work, close");
    /* 5: dbs_session_commit_close (the reset rides with the COMMIT) */
    s = open_ok(pool);
    CHECK_OK(dirty_work(s, NULL, &err), &err);
    CHECK_OK(dbs_session_commit_close(s, &err), &err);
    check_clean("dbs_session_commit_close");
    printf("state made inside functions and a trigger: not seen by the next "
           "user (5 ways to end a session)\n");
}

/* dirty_work, then two equal rows under a unique constraint checked at
 * COMMIT: the COMMIT fails. */
static int dirty_then_bad_commit(dbs_session *s, void *arg, dbs_error *err)
{
    if (dirty_work(s, arg, err) != 0)
        return -1;
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO public.rs_def_%ld VALUES (7), (7)", me);
    return dbs_exec(s, sql, NULL, 0, err) == 2 ? 0 : -1;
}

/* The reset shares the COMMIT's pipeline segment (no Sync between them):
 * a COMMIT that fails makes the server skip it, which it reports, and the
 * reset runs again before the connection is used. Also when the session
 * made the backend's first temporary object, and through dbs_commit +
 * close (the reset is then posted on its own). */
static void test_failed_commit(void)
{
    dbs_error err;
    for (int round = 0; round < 2; round++) {
        CHECK_EQ(dbs_transact(pool, NULL, dirty_then_bad_commit, NULL, &err),
                 DBS_ECONSTRAINT);
        CHECK_STR(err.sqlstate, "23505");
        check_clean("a COMMIT that failed (dbs_transact)");
    }
    dbs_session *s = same_conn(pool);
    CHECK_OK(dirty_then_bad_commit(s, NULL, &err), &err);
    CHECK_EQ(dbs_commit(s, &err), DBS_ECONSTRAINT);
    dbs_session_close(s);
    check_clean("a COMMIT that failed (dbs_commit + close)");
    s = same_conn(pool);
    CHECK_OK(dirty_then_bad_commit(s, NULL, &err), &err);
    CHECK_EQ(dbs_session_commit_close(s, &err), DBS_ECONSTRAINT);
    CHECK_STR(err.sqlstate, "23505");
    check_clean("a COMMIT that failed (dbs_session_commit_close)");
    CHECK_EQ(stats_of(pool).created, 1);
    printf("a COMMIT that failed: the reset the server skipped runs again\n");
}

/* A user's prepared statement, made by sql, is gone for the next user. */
static void prepare_case(const char *fmt, const char *name_fmt)
{
    dbs_error err;
    char sql[200], name[64];
    sql_fmt(name, sizeof name, name_fmt);
    dbs_session *s = same_conn(pool);
    sql_fmt(sql, sizeof sql, fmt);
    exec_ok(s, sql);
    snprintf(sql, sizeof sql, "EXECUTE %s", name);
    CHECK_EQ(query_int(s, sql, NULL, 0), 42);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);

    /* twice: the second time the EXECUTE itself is a cached statement,
     * and the error is still the server's own about the user's name */
    for (int i = 0; i < 2; i++) {
        s = same_conn(pool);
        if (dbs_query(s, sql, NULL, 0, &err) != NULL)
            CHECK_FAIL("the next user can run %s", sql);
        CHECK_STR(err.sqlstate, "26000");
        CHECK_CONTAINS(err.message, name);
        dbs_session_close(s);
    }
}

static void test_prepare(void)
{
    prepare_case("/* c */ Prepare rs_q_%ld AS SELECT 42", "rs_q_%ld");
    prepare_case("PREPARE rs_p_%ld AS SELECT 42", "rs_p_%ld");
    printf("PREPARE (plain and behind a comment): the next user cannot "
           "EXECUTE it\n");
}

static int cached_units(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    CHECK_EQ(pid_of(s), the_pid);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT v FROM rs_t_%ld WHERE id = $1", me);
    dbs_value v[] = {DBS_INT(1)};
    dbs_rows *r = dbs_query(s, sql, v, 1, err);
    if (!r)
        return -1;
    int rc = dbs_rows_next(r, err) == 1 ? 0 : -1;
    dbs_rows_close(r);
    return rc;
}

static void test_deallocate(void)
{
    dbs_error err;
    /* Cache our statements, then the user deallocates everything. */
    CHECK_OK(dbs_transact(pool, NULL, cached_units, NULL, &err), &err);
    dbs_session *s = same_conn(pool);
    CHECK_OK(cached_units(s, NULL, &err), &err);
    exec_ok(s, "DEALLOCATE ALL");
    /* the same session goes on */
    CHECK_OK(cached_units(s, NULL, &err), &err);
    CHECK_EQ(pid_of(s), the_pid);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    for (int i = 0; i < 3; i++)
        CHECK_OK(dbs_transact(pool, NULL, cached_units, NULL, &err), &err);

    /* Inside a function, where no command tag shows it. */
    s = same_conn(pool);
    CHECK_OK(cached_units(s, NULL, &err), &err);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT rs_dealloc_%ld()", me);
    exec_ok(s, sql);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    for (int i = 0; i < 3; i++)
        CHECK_OK(dbs_transact(pool, NULL, cached_units, NULL, &err), &err);
    CHECK_EQ(stats_of(pool).created, 1);
    printf("DEALLOCATE ALL by the user (plain, in a function): later units "
           "run on the same connection\n");
}

/* With DBS_RESET_ROLLBACK nothing reconciles at release: the statement that
 * finds its prepared statement gone re-prepares it. */
static void test_deallocate_rollback_mode(void)
{
    dbs_pool *p = open_one(DBS_RESET_ROLLBACK);
    dbs_session *s = open_ok(p);
    int64_t pid = pid_of(s);
    dbs_session_close(s);
    dbs_error err;
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT v FROM rs_t_%ld WHERE id = $1", me);
    dbs_value v[] = {DBS_INT(1)};
    for (int round = 0; round < 3; round++) {
        s = open_ok(p);
        CHECK_EQ(query_int(s, sql, v, 1), 0); /* cached */
        snprintf(sql, sizeof sql, "SELECT rs_dealloc_%ld()", me);
        exec_ok(s, sql);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        s = open_ok(p);
        snprintf(sql, sizeof sql, "SELECT v FROM rs_t_%ld WHERE id = $1", me);
        CHECK_EQ(query_int(s, sql, v, 1), 0); /* first of its transaction */
        CHECK_EQ(pid_of(s), pid);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }
    CHECK_EQ(stats_of(p).created, 1);
    dbs_pool_close(p);
    printf("DBS_RESET_ROLLBACK: a statement whose prepared statement a "
           "function removed is prepared again\n");
}

/* The server holds at most stmt_cache_size of dbscope's statements per
 * connection, also when new statements run after a failure in their
 * transaction (the server refuses the DEALLOCATE of the entry each one
 * evicts) and with DBS_RESET_ROLLBACK, where no reset reconciles. */
static void test_cache_bound_aborted(void)
{
    for (int mode = 0; mode < 2; mode++) {
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.pool_size = 1;
        cfg.max_overflow = 0;
        cfg.stmt_cache_size = 4;
        cfg.reset = mode ? DBS_RESET_FULL : DBS_RESET_ROLLBACK;
        dbs_pool *p = open_pool("reset", &cfg);
        dbs_error err;
        char sql[64];
        for (int round = 0; round < 10; round++) {
            dbs_session *s = open_ok(p);
            for (int i = 0; i < 4; i++) { /* a full cache */
                snprintf(sql, sizeof sql, "SELECT %d", 50000 + round * 100 + i);
                CHECK_EQ(query_int(s, sql, NULL, 0), 50000 + round * 100 + i);
            }
            CHECK(dbs_exec(s, "SELECT 1/0", NULL, 0, &err) < 0);
            for (int i = 0; i < 8; i++) {
                snprintf(sql, sizeof sql, "SELECT %d", round * 100 + i);
                CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), DBS_ESQL);
                CHECK_STR(err.sqlstate, "25P02");
            }
            dbs_session_close(s);
        }
        dbs_session *s = open_ok(p);
        CHECK(query_int(s, "SELECT count(*) FROM pg_catalog.pg_prepared_statements "
                           "WHERE NOT from_sql AND name !~ '^dbs_r[0-9]$'",
                        NULL, 0) <= 4);
        dbs_session_close(s);
        CHECK_EQ(stats_of(p).created, 1);
        dbs_pool_close(p);
    }
    printf("statements after a failure in their transaction: at most "
           "stmt_cache_size on the server, in every reset mode\n");
}

static void test_rollback_frees_locks(void)
{
    dbs_error err;
    char sql[200];
    dbs_session *a = same_conn(pool);
    exec_ok(a, "SET LOCAL work_mem = '5MB'");
    snprintf(sql, sizeof sql, "SELECT v FROM rs_t_%ld WHERE id = 1 FOR UPDATE",
             me);
    CHECK_EQ(query_int(a, sql, NULL, 0), 0);
    CHECK_OK(dbs_rollback(a, &err), &err);
    /* a stays open: the row lock must be gone already */
    dbs_session *b = open_ok(other);
    exec_ok(b, "SET LOCAL lock_timeout = '10s'");
    snprintf(sql, sizeof sql, "UPDATE rs_t_%ld SET v = v WHERE id = 1", me);
    int64_t n = dbs_exec(b, sql, NULL, 0, &err);
    if (n != 1)
        CHECK_FAIL("the row is still locked after dbs_rollback: %s",
                   err.message);
    CHECK_OK(dbs_commit(b, &err), &err);
    dbs_session_close(b);
    CHECK_EQ(pid_of(a), the_pid); /* a goes on */
    dbs_session_close(a);
    printf("dbs_rollback after SET LOCAL + FOR UPDATE: the row lock is "
           "free at once\n");
}

static pthread_mutex_t notes_mu = PTHREAD_MUTEX_INITIALIZER;
static char notes[8][512];
static int n_notes;

static void on_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind != DBS_EVENT_NOTICE)
        return;
    CHECK(ev->reason != NULL);
    pthread_mutex_lock(&notes_mu);
    if (n_notes < 8)
        snprintf(notes[n_notes++], sizeof notes[0], "%s", ev->reason);
    pthread_mutex_unlock(&notes_mu);
}

static void test_notices(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.on_event = on_event;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("reset", &cfg);
    dbs_session *s = open_ok(p);
    exec_ok(s, "DO $$BEGIN RAISE NOTICE 'hello %', 6 * 7; END$$");
    char sql[600];
    snprintf(sql, sizeof sql,
             "DO $$BEGIN RAISE WARNING 'line one\nsecret %s'; END$$",
             password);
    exec_ok(s, sql);
    dbs_session_close(s);
    dbs_pool_close(p);
    CHECK_EQ(n_notes, 2);
    CHECK_CONTAINS(notes[0], "hello 42");
    CHECK_CONTAINS(notes[0], "NOTICE");
    CHECK_CONTAINS(notes[1], "WARNING");
    CHECK_CONTAINS(notes[1], "secret ***");
    CHECK(strstr(notes[1], password) == NULL);
    CHECK(strchr(notes[1], '\n') == NULL);
    printf("notices reach on_event as one line: %s | %s\n", notes[0],
           notes[1]);

    /* The default logger prints them as logfmt, not libpq's raw text. */
    char path[] = "/tmp/dbscope-notice-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    CHECK(saved >= 0 && dup2(fd, 2) == 2);
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    p = open_pool("reset", &cfg); /* log_events on, no on_event */
    s = open_ok(p);
    exec_ok(s, "DO $$BEGIN RAISE NOTICE 'logged %', 'here'; END$$");
    dbs_session_close(s);
    dbs_pool_close(p);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[4096] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    CHECK(n > 0);
    CHECK_CONTAINS(buf, "level=info msg=dbscope event=notice db=postgresql");
    CHECK_CONTAINS(buf, "reason=\"NOTICE:  logged here\"");
    printf("default logger: %.*s", (int)strcspn(strstr(buf, "event=notice"), "\n") + 1,
           strstr(buf, "event=notice"));
}

/* ---- plans: DISCARD PLANS is not part of the reset ---- */

/* The name of the server's prepared statement whose text is sql (the one
 * dbscope's statement cache made for it), in out; the test fails if there
 * is none. */
static void stmt_name(dbs_session *s, const char *sql, char *out, size_t n)
{
    dbs_error err;
    dbs_value v[] = {DBS_TEXT(sql)};
    dbs_rows *r = dbs_query(s,
                            "SELECT name FROM pg_catalog.pg_prepared_statements "
                            "WHERE statement = $1",
                            v, 1, &err);
    if (!r)
        CHECK_FAIL("pg_prepared_statements: %s", err.message);
    if (dbs_rows_next(r, &err) != 1)
        CHECK_FAIL("no prepared statement for %s", sql);
    snprintf(out, n, "%s", dbs_rows_text(r, 0, NULL));
    dbs_rows_close(r);
}

/* The same cached statement as before (first: remember it). */
static void same_stmt(dbs_session *s, const char *sql, char *name, size_t n)
{
    char now[64];
    stmt_name(s, sql, now, sizeof now);
    if (!name[0])
        snprintf(name, n, "%s", now);
    else if (strcmp(now, name) != 0)
        CHECK_FAIL("%s: prepared statement %s, was %s: not the same cached "
                   "statement", sql, now, name);
}

/* A statement cached under user A's row-level security policy, then run
 * by user B on the same backend (the user is the request context's
 * user_id, set as the role, so each transaction runs as its user): B sees
 * only B's rows, and A again only A's.
 *
 * The policies are per role, so the plan made for A holds A's policy,
 * owner = 'a', as a constant (EXPLAIN shows it below), and the statement
 * has no parameters, so that plan is the generic one the server keeps
 * (generic_plans counts it). Were the server to run that cached plan for
 * B, B would get A's row and this test would fail. It cannot: the plan
 * cache marks a plan that row-level security shaped with the role it was
 * made for (and row_security), and plans the statement again whenever it
 * runs under another (plancache.c: RevalidateCachedQuery, CheckCachedPlan).
 * DISCARD PLANS added nothing to that. */
static void test_plan_rls(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.reset = DBS_RESET_FULL;
    cfg.ctx_user_setting = "role";
    dbs_pool *p = open_pool("reset", &cfg);
    char role[2][64], sql[200], name[64] = "", v[256];
    sql_fmt(role[0], sizeof role[0], "rs_a_%ld");
    sql_fmt(role[1], sizeof role[1], "rs_b_%ld");
    sql_fmt(sql, sizeof sql,
            "SELECT string_agg(owner, ',' ORDER BY owner) FROM rs_rls_%ld");
    int64_t pid = -1;
    dbs_error err;
    for (int round = 0; round < 3; round++)
        for (int who = 0; who < 2; who++) {
            dbs_context ctx = {.user_id = role[who]};
            dbs_session *s = dbs_session_open(p, &ctx, &err);
            if (!s)
                CHECK_FAIL("open: %s", err.message);
            text_of(s, sql, v, sizeof v);
            if (strcmp(v, who ? "b" : "a") != 0)
                CHECK_FAIL("round %d, %s sees '%s'", round, role[who], v);
            text_of(s, "SELECT current_user", v, sizeof v);
            CHECK_STR(v, role[who]);
            int64_t now = pid_of(s);
            if (pid < 0)
                pid = now;
            CHECK_EQ(now, pid);
            same_stmt(s, sql, name, sizeof name);
            if (round == 0 && who == 0) {
                /* A's plan: A's policy inside, kept as the generic plan */
                char q[256];
                snprintf(q, sizeof q, "EXPLAIN (COSTS OFF) EXECUTE %s", name);
                dbs_rows *r = dbs_query(s, q, NULL, 0, &err);
                CHECK(r != NULL);
                bool has_a = false;
                while (dbs_rows_next(r, &err) == 1)
                    has_a |= strstr(dbs_rows_text(r, 0, NULL), "'a'") != NULL;
                dbs_rows_close(r);
                CHECK(has_a);
                snprintf(q, sizeof q,
                         "SELECT generic_plans FROM pg_catalog."
                         "pg_prepared_statements WHERE name = '%s'",
                         name);
                CHECK(query_int(s, q, NULL, 0) >= 1);
            }
            CHECK_OK(dbs_commit(s, &err), &err);
            dbs_session_close(s);
        }
    CHECK_EQ(stats_of(p).created, 1);
    dbs_pool_close(p);
    printf("row-level security: one cached statement, users A and B take "
           "turns on one backend, each sees only its own rows\n");
}

/* The same with the role switched for the rest of the session, inside a
 * function: user A's session makes A's role current and caches the
 * statement (A's policy in its plan); the next session, on the same
 * backend, runs it as the login user, which owns the table and so sees
 * every row; then user B's session, B's role made current the same way,
 * sees only B's rows through the same cached statement. The reset's SET
 * SESSION AUTHORIZATION DEFAULT ends the role (RESET ALL leaves role
 * alone; without it the next session runs as A and sees A's rows); the
 * plan cache re-plans for each role by itself. */
static void test_plan_rls_session(void)
{
    char role[2][64], sql[200], name[64] = "", v[256], setrole[2][200];
    sql_fmt(role[0], sizeof role[0], "rs_a_%ld");
    sql_fmt(role[1], sizeof role[1], "rs_b_%ld");
    for (int who = 0; who < 2; who++) {
        char fmt[200];
        snprintf(fmt, sizeof fmt, "SELECT rs_role_%%ld('%s')", role[who]);
        sql_fmt(setrole[who], sizeof setrole[who], fmt);
    }
    sql_fmt(sql, sizeof sql,
            "SELECT string_agg(owner, ',' ORDER BY owner) FROM rs_rls_%ld");
    char login[128];
    dbs_session *s = same_conn(pool);
    text_of(s, "SELECT session_user", login, sizeof login);
    dbs_session_close(s);
    dbs_error err;
    for (int round = 0; round < 2; round++)
        for (int who = 0; who < 2; who++) {
            s = same_conn(pool);
            exec_ok(s, setrole[who]);
            text_of(s, sql, v, sizeof v);
            if (strcmp(v, who ? "b" : "a") != 0)
                CHECK_FAIL("round %d, %s sees '%s'", round, role[who], v);
            same_stmt(s, sql, name, sizeof name);
            CHECK_OK(dbs_commit(s, &err), &err);
            dbs_session_close(s);

            s = same_conn(pool);
            text_of(s, "SELECT current_user", v, sizeof v);
            if (strcmp(v, login) != 0)
                CHECK_FAIL("the next session runs as %s, not %s", v, login);
            text_of(s, sql, v, sizeof v);
            if (strcmp(v, "a,b") != 0)
                CHECK_FAIL("round %d: after %s's session, the owner sees "
                           "'%s'", round, role[who], v);
            same_stmt(s, sql, name, sizeof name);
            CHECK_OK(dbs_commit(s, &err), &err);
            dbs_session_close(s);
        }
    printf("row-level security, role made current in a function: the next "
           "session's run of the cached statement is the login user's, "
           "then B's only B's\n");
}

/* Session 1 changes search_path inside a function, and its cached
 * statement follows (the server plans it again); session 2's run of the
 * same cached statement resolves with the default search_path again. */
static void test_plan_search_path(void)
{
    char sql[200], fn[200], name[64] = "";
    sql_fmt(sql, sizeof sql, "SELECT v FROM rs_sp_%ld");
    sql_fmt(fn, sizeof fn, "SELECT rs_path_%ld()");
    dbs_error err;
    for (int round = 0; round < 2; round++) {
        dbs_session *s = same_conn(pool);
        CHECK_EQ(query_int(s, sql, NULL, 0), 1);
        same_stmt(s, sql, name, sizeof name);
        exec_ok(s, fn);
        CHECK_EQ(query_int(s, sql, NULL, 0), 2); /* rs_sch_%ld's table now */
        same_stmt(s, sql, name, sizeof name);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);

        s = same_conn(pool);
        if (query_int(s, sql, NULL, 0) != 1)
            CHECK_FAIL("session 2's cached statement still reads the "
                       "schema session 1's search_path named");
        same_stmt(s, sql, name, sizeof name);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }
    printf("search_path changed in a function: the next session's cached "
           "statement reads the default schema\n");
}

/* Session 1 makes a temporary table that shadows a real one (inside a
 * function) and caches a statement that reads it; the reset's DISCARD
 * TEMP drops it, and session 2's run of the same cached statement reads
 * the real table. transact: session 1 is a dbs_transact (the reset rides
 * with its COMMIT), else dbs_commit and close (the reset is posted). */
struct temp_arg {
    int64_t pid;
    char *name;
    size_t name_n;
};

static int temp_session1(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    struct temp_arg *a = arg;
    char sql[200], fn[200];
    sql_fmt(sql, sizeof sql, "SELECT v FROM rs_shadow_%ld");
    sql_fmt(fn, sizeof fn, "SELECT rs_shadow_fn_%ld()");
    CHECK_EQ(pid_of(s), a->pid);
    exec_ok(s, fn);
    CHECK_EQ(query_int(s, sql, NULL, 0), 99); /* the temporary table */
    same_stmt(s, sql, a->name, a->name_n);
    return 0;
}

static void temp_case(dbs_pool *p, int64_t pid, bool transact, char *name,
                      size_t name_n)
{
    char sql[200];
    sql_fmt(sql, sizeof sql, "SELECT v FROM rs_shadow_%ld");
    dbs_error err;
    struct temp_arg a = {pid, name, name_n};
    dbs_session *s;
    if (transact) {
        CHECK_OK(dbs_transact(p, NULL, temp_session1, &a, &err), &err);
    } else {
        s = open_ok(p);
        CHECK_OK(temp_session1(s, &a, &err), &err);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }

    s = open_ok(p);
    CHECK_EQ(pid_of(s), pid);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (!r)
        CHECK_FAIL("session 2's cached statement: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    if (dbs_rows_int(r, 0) != 1)
        CHECK_FAIL("session 2 reads session 1's temporary table: %lld",
                   (long long)dbs_rows_int(r, 0));
    dbs_rows_close(r);
    same_stmt(s, sql, name, name_n);
    CHECK_EQ(query_int(s, "SELECT count(*) FROM pg_catalog.pg_class WHERE "
                          "relpersistence = 't' AND relnamespace = "
                          "pg_catalog.pg_my_temp_schema()",
                       NULL, 0),
             0);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
}

/* Each on a backend whose first temporary table session 1 makes (the
 * reset learns of the temporary schema only then), ending both ways, then
 * again on the same backend (the schema is there from the start). */
static void test_plan_temp(void)
{
    for (int transact = 0; transact < 2; transact++) {
        dbs_pool *p = open_one(DBS_RESET_FULL);
        dbs_session *s = open_ok(p);
        int64_t pid = pid_of(s);
        CHECK_EQ(query_int(s, "SELECT pg_catalog.pg_my_temp_schema()::int8",
                           NULL, 0),
                 0);
        dbs_session_close(s);
        char name[64] = "";
        for (int round = 0; round < 2; round++)
            temp_case(p, pid, transact, name, sizeof name);
        CHECK_EQ(stats_of(p).created, 1);
        dbs_pool_close(p);
    }
    char name[64] = "";
    temp_case(pool, the_pid, false, name, sizeof name);
    printf("temporary table shadowing a table: gone for the next session's "
           "cached statement (first and later temporary tables of a "
           "backend, both ways to end a session)\n");
}

/* Why a backend with a temporary schema gets DISCARD PLANS. Session 1 caches a statement that
 * reads the real table; session 2 makes a temporary table of the same name
 * (inside a function) and runs the same statement: it must read the
 * temporary table, as it would on a fresh connection. The server does not
 * re-plan a statement when a new object shadows the one it resolved to
 * (PostgreSQL's documentation of PREPARE says so), so without DISCARD
 * PLANS session 2 reads the real table through session 1's plan. */
static void test_plan_shadow(void)
{
    char sql[200], fn[200], name[64] = "";
    sql_fmt(sql, sizeof sql, "SELECT v + 0 FROM rs_shadow_%ld");
    sql_fmt(fn, sizeof fn, "SELECT rs_shadow_fn_%ld()");
    dbs_error err;
    for (int round = 0; round < 2; round++) {
        dbs_session *s = same_conn(pool);
        CHECK_EQ(query_int(s, sql, NULL, 0), 1); /* the real table */
        same_stmt(s, sql, name, sizeof name);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);

        s = same_conn(pool);
        exec_ok(s, fn);
        int64_t v = query_int(s, sql, NULL, 0);
        if (v != 99)
            CHECK_FAIL("session 2 made a temporary table, but its cached "
                       "statement reads the table session 1's plan "
                       "resolved: %lld", (long long)v);
        same_stmt(s, sql, name, sizeof name);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }
    printf("temporary table made by the next session: its cached statement "
           "reads it, as on a fresh connection\n");
}

/* The reset runs as named statements dbs_r0 ... (parsed once per
 * connection). A session that deallocates one and prepares its own under
 * that name does not get its statement run instead: the reset checks their
 * text on the server and runs again from the text. Each of them in turn,
 * after A left state behind; B sees none of it, and the connection stays. */
static void test_reset_statements(void)
{
    char dirty[200];
    sql_fmt(dirty, sizeof dirty, "SELECT public.rs_dirty_%ld()");
    dbs_error err;
    dbs_session *s0 = same_conn(pool);
    int n_reset = (int)query_int(s0, "SELECT count(*) FROM pg_catalog."
                                     "pg_prepared_statements WHERE name ~ "
                                     "'^dbs_r[0-9]$'", NULL, 0);
    dbs_session_close(s0);
    CHECK(n_reset >= 6);
    for (int k = 0; k < n_reset; k++) {
        dbs_session *s = same_conn(pool);
        char q[160], name[16];
        snprintf(name, sizeof name, "dbs_r%d", k);
        snprintf(q, sizeof q, "SELECT count(*) FROM pg_catalog."
                              "pg_prepared_statements WHERE name = '%s'", name);
        CHECK_EQ(query_int(s, q, NULL, 0), 1);
        exec_ok(s, dirty);
        snprintf(q, sizeof q, "DEALLOCATE %s", name);
        exec_ok(s, q);
        snprintf(q, sizeof q, "PREPARE %s AS SELECT 1", name);
        exec_ok(s, q);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        char how[64];
        snprintf(how, sizeof how, "%s replaced by the session", name);
        check_clean(how);
    }
    CHECK_EQ(stats_of(pool).created, 1);
    printf("the reset's named statements replaced by a session: the reset "
           "still runs in full\n");
}

/* ---- a session's statement under one of dbscope's names ---- */

#define SWAP_SQL "SELECT $1::int + 1 AS rs_swap"

/* Session 1's replacement: DEALLOCATE the name dbscope's cache gave
 * SWAP_SQL and PREPARE another statement under it, so that a Bind of that
 * name by the next session would run it. */
static const char *const swap_do =
    "DO $$DECLARE n text; BEGIN "
    "SELECT name INTO n FROM pg_catalog.pg_prepared_statements "
    "WHERE statement = '" SWAP_SQL "'; "
    "EXECUTE format('DEALLOCATE %I', n); "
    "EXECUTE format('PREPARE %I(int) AS SELECT 424242 + $1 AS v', n); END$$";

static int swap_unit(dbs_session *s, void *arg, dbs_error *err)
{
    CHECK_EQ(pid_of(s), the_pid);
    return dbs_exec(s, arg, NULL, 0, err) < 0 ? -1 : 0;
}

/* Session 0 caches SWAP_SQL; session 1 (replace: SQL that swaps the
 * server's statement under that name, run through dbs_transact or
 * dbs_commit and close) replaces it; the sessions after it, on the same
 * backend, get SWAP_SQL's own answer, and no statement SQL made under one
 * of dbscope's names is left. */
static void swap_case(const char *how, const char *replace, bool transact)
{
    dbs_error err;
    dbs_value one[] = {DBS_INT(1)};
    char name[64] = "";
    dbs_session *s = same_conn(pool);
    CHECK_EQ(query_int(s, SWAP_SQL, one, 1), 2);
    same_stmt(s, SWAP_SQL, name, sizeof name);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);

    if (transact) {
        char sql[600];
        snprintf(sql, sizeof sql, "%s", replace);
        CHECK_OK(dbs_transact(pool, NULL, swap_unit, sql, &err), &err);
    } else {
        s = same_conn(pool);
        exec_ok(s, replace);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }

    for (int i = 0; i < 2; i++) {
        s = same_conn(pool);
        int64_t v = query_int(s, SWAP_SQL, one, 1);
        if (v != 2)
            CHECK_FAIL("%s: the next session's %s ran the previous session's "
                       "statement under %s: got %lld, expected 2",
                       how, SWAP_SQL, name, (long long)v);
        CHECK_EQ(query_int(s, "SELECT count(*) FROM pg_catalog.pg_prepared_statements "
                              "WHERE from_sql AND name LIKE 'dbs\\_%'",
                           NULL, 0),
                 0);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
    }
}

/* dbscope's statements are protocol-level Parses; whatever SQL prepares,
 * in a DO block or a function, has from_sql true on the server, so the
 * reset never takes it for dbscope's by its name (audit P1). */
static void test_swap(void)
{
    char fn[600], call[200];
    sql_fmt(fn, sizeof fn,
            "CREATE FUNCTION rs_swap_%ld() RETURNS int LANGUAGE plpgsql AS $f$\n"
            "DECLARE n text;\n"
            "BEGIN\n"
            "  SELECT name INTO n FROM pg_catalog.pg_prepared_statements\n"
            "   WHERE statement = '" SWAP_SQL "';\n"
            "  EXECUTE format('DEALLOCATE %I', n);\n"
            "  EXECUTE format('PREPARE %I(int) AS SELECT 424242 + $1 AS v', n);\n"
            "  RETURN 1;\n"
            "END $f$");
    run_sql(pool, fn);
    sql_fmt(call, sizeof call, "SELECT public.rs_swap_%ld()");
    swap_case("DO block, commit and close", swap_do, false);
    swap_case("DO block, dbs_transact", swap_do, true);
    swap_case("plpgsql function, commit and close", call, false);
    swap_case("plpgsql function, dbs_transact", call, true);
    run_fmt(pool, "DROP FUNCTION rs_swap_%ld()");
    CHECK_EQ(stats_of(pool).created, 1);
    printf("a session's statement under a cached statement's name (DO, "
           "function): the next session runs its own\n");
}

int main(int argc, char **argv)
{
    me = (long)getpid();
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    read_line(dir, "password", password, sizeof password);
    pool = open_one(DBS_RESET_FULL);
    other = open_one(DBS_RESET_FULL);
    dbs_session *s = open_ok(pool);
    the_pid = pid_of(s);
    text_of(s, "SHOW search_path", default_search_path,
            sizeof default_search_path);
    dbs_session_close(s);
    setup();

    /* test_pg_reset NAME runs one part (setup and checks of the rest
     * still run): to show each part on its own. */
    static const struct {
        const char *name;
        void (*fn)(void);
    } parts[] = {
        {"functions", test_functions},
        {"prepare", test_prepare},
        {"deallocate", test_deallocate},
        {"deallocate_rollback_mode", test_deallocate_rollback_mode},
        {"cache_bound_aborted", test_cache_bound_aborted},
        {"rollback", test_rollback_frees_locks},
        {"notices", test_notices},
        {"plan_rls", test_plan_rls},
        {"plan_rls_session", test_plan_rls_session},
        {"plan_search_path", test_plan_search_path},
        {"plan_temp", test_plan_temp},
        {"plan_shadow", test_plan_shadow},
        {"reset_statements", test_reset_statements},
        {"failed_commit", test_failed_commit},
        {"swap", test_swap},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (argc < 2 || !strcmp(argv[1], parts[i].name))
            parts[i].fn();

    teardown();
    CHECK_EQ(stats_of(pool).created, 1);
    dbs_pool_close(other);
    dbs_pool_close(pool);
    return 0;
}
