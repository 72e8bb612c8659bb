/* SQLite specifics: WAL, foreign keys, busy is retryable, :memory: shared by
 * every session and kept across recycling, session state reset. */
#include "common.h"

#include <sqlite3.h>
#include <sys/stat.h>

static void test_wal_and_foreign_keys(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_pool *p = open_pool("sqlite", &cfg);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    dbs_rows *r = dbs_query(s, "PRAGMA journal_mode", NULL, 0, &err);
    CHECK(r);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_STR(dbs_rows_text(r, 0, NULL), "wal");
    dbs_rows_close(r);
    CHECK_OK(dbs_exec(s, "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                         "CREATE TABLE child (id INTEGER PRIMARY KEY, "
                         "parent_id INTEGER NOT NULL REFERENCES parent(id))", NULL, 0, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_EQ(dbs_exec(s, "INSERT INTO child (id, parent_id) VALUES (1, 99)", NULL, 0, &err),
             DBS_ECONSTRAINT);
    CHECK_STR(err.sqlstate, "23503");
    CHECK_CONTAINS(err.message, "FOREIGN KEY");
    CHECK_EQ(dbs_exec(s, "INSERT INTO child (id) VALUES (2)", NULL, 0, &err), DBS_ECONSTRAINT);
    CHECK_STR(err.sqlstate, "23502");
    CHECK_CONTAINS(err.message, "NOT NULL");
    /* '?' is not our placeholder */
    CHECK_EQ(dbs_exec(s, "SELECT ?", (dbs_value[]){DBS_INT(1)}, 1, &err), DBS_ESQL);
    CHECK_CONTAINS(err.message, "$1..$n");
    dbs_session_close(s);
    dbs_pool_close(p);
}

struct busy_ctx {
    dbs_session *holder;
    int calls;
};

static int busy_work(dbs_session *s, void *arg, dbs_error *err)
{
    struct busy_ctx *b = arg;
    if (++b->calls == 2) {
        dbs_error e;
        CHECK_OK(dbs_commit(b->holder, &e), &e); /* the other writer finishes */
    }
    int64_t rc = dbs_exec(s, "INSERT INTO t (v) VALUES ('second')", NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

static void test_busy_is_retried(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.busy_timeout_ms = 0; /* busy at once, for a quick test */
    cfg.retry_base_ms = 1;
    dbs_pool *p = open_pool("sqlite", &cfg);
    run_sql(p, "CREATE TABLE t (v TEXT)");
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err);
    CHECK_OK(dbs_exec(a, "INSERT INTO t (v) VALUES ('first')", NULL, 0, &err), &err);
    /* a holds the write lock: the unit below is busy once, then retried */
    struct busy_ctx b = {.holder = a};
    CHECK_OK(dbs_transact(p, NULL, busy_work, &b, &err), &err);
    CHECK_EQ(b.calls, 2);
    CHECK_EQ(stats_of(p).retries, 1);
    dbs_session_close(a);
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK_EQ(query_int(s, "SELECT COUNT(*) FROM t", NULL, 0), 2);
    dbs_session_close(s);

    /* without dbs_transact the caller sees DBS_ERETRYABLE */
    a = dbs_session_open(p, NULL, &err);
    CHECK_OK(dbs_exec(a, "INSERT INTO t (v) VALUES ('x')", NULL, 0, &err), &err);
    s = dbs_session_open(p, NULL, &err);
    CHECK_EQ(dbs_exec(s, "INSERT INTO t (v) VALUES ('y')", NULL, 0, &err), DBS_ERETRYABLE);
    CHECK(dbs_error_is_transient(&err));
    /* a later statement in the same unit must not run outside it */
    dbs_session_close(s);
    dbs_session_close(a);
    dbs_pool_close(p);
}

static void test_memory_shared(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite::memory:";
    cfg.max_lifetime_ms = 50;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p);
    CHECK_EQ(stats_of(p).max_size, 1); /* AUTO chose SINGLE */
    run_sql(p, "CREATE TABLE m (v INTEGER)");
    run_sql(p, "INSERT INTO m VALUES (1)");
    dbs__sleep_ms(80); /* the connection is recycled; the data stays */
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK_EQ(query_int(s, "SELECT COUNT(*) FROM m", NULL, 0), 1);
    dbs_session_close(s);
    CHECK_INT(stats_of(p).closed_lifetime, >=, 1);
    dbs_pool_close(p);

    /* QUEUE on :memory: too: all connections see one database */
    cfg.mode = DBS_POOL_QUEUE;
    cfg.max_lifetime_ms = 0;
    p = dbs_pool_open(&cfg, &err);
    CHECK(p);
    run_sql(p, "CREATE TABLE m (v INTEGER)");
    dbs_session *a = dbs_session_open(p, NULL, &err);
    dbs_session *b = dbs_session_open(p, NULL, &err);
    CHECK(a && b);
    CHECK_OK(dbs_exec(a, "INSERT INTO m VALUES (5)", NULL, 0, &err), &err);
    CHECK_OK(dbs_commit(a, &err), &err);
    CHECK_EQ(query_int(b, "SELECT SUM(v) FROM m", NULL, 0), 5);
    dbs_session_close(a);
    dbs_session_close(b);
    dbs_pool_close(p);

    /* two pools on :memory: are two databases */
    cfg.mode = DBS_POOL_AUTO;
    dbs_pool *p1 = dbs_pool_open(&cfg, &err);
    dbs_pool *p2 = dbs_pool_open(&cfg, &err);
    run_sql(p1, "CREATE TABLE only_here (v INTEGER)");
    s = dbs_session_open(p2, NULL, &err);
    CHECK_EQ(dbs_exec(s, "SELECT * FROM only_here", NULL, 0, &err), DBS_ESQL);
    dbs_session_close(s);
    dbs_pool_close(p1);
    dbs_pool_close(p2);
}

static void test_state_reset(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("sqlite", &cfg);
    dbs_error err;
    /* temp table: gone for the next session */
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK_OK(dbs_exec(s, "CREATE TEMP TABLE scratch (v)", NULL, 0, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = dbs_session_open(p, NULL, &err);
    CHECK_EQ(dbs_exec(s, "SELECT * FROM scratch", NULL, 0, &err), DBS_ESQL);
    dbs_session_close(s);
    /* a pragma: back to the default */
    s = dbs_session_open(p, NULL, &err);
    int64_t cache = query_int(s, "PRAGMA cache_size", NULL, 0);
    CHECK_OK(dbs_exec(s, "PRAGMA cache_size=123", NULL, 0, &err), &err);
    CHECK_EQ(query_int(s, "PRAGMA cache_size", NULL, 0), 123);
    dbs_session_close(s);
    s = dbs_session_open(p, NULL, &err);
    CHECK_EQ(query_int(s, "PRAGMA cache_size", NULL, 0), cache);
    dbs_session_close(s);
    /* a cached state-changing statement still marks the connection */
    for (int i = 0; i < 2; i++) {
        s = dbs_session_open(p, NULL, &err);
        CHECK_OK(dbs_exec(s, "CREATE TEMP TABLE again (v)", NULL, 0, &err), &err);
        dbs_session_close(s);
    }
    /* ATTACH: detached again */
    s = dbs_session_open(p, NULL, &err);
    CHECK_OK(dbs_exec(s, "ATTACH ':memory:' AS other", NULL, 0, &err), &err);
    dbs_session_close(s);
    s = dbs_session_open(p, NULL, &err);
    CHECK_EQ(dbs_exec(s, "CREATE TABLE other.x (v)", NULL, 0, &err), DBS_ESQL);
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).size, 1);
    CHECK_EQ(stats_of(p).created, 1); /* reset in place, same pool slot */
    dbs_pool_close(p);
}

static int64_t pragma_int(dbs_pool *p, const char *sql)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    int64_t v = query_int(s, sql, NULL, 0);
    dbs_session_close(s);
    return v;
}

/* Acknowledged commits survive a power loss by default: SQLite runs with
 * synchronous=NORMAL and the pool syncs the WAL after each write
 * transaction (test_sqlite_crash proves the durability); ?synchronous=full
 * is the default spelled out, ?synchronous=normal the opt-out. */
static void test_durable_by_default(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_pool *p = open_pool("sqlite", &cfg);
    CHECK_EQ(pragma_int(p, "PRAGMA synchronous"), 1); /* NORMAL + group sync */
    dbs_pool_close(p);
    char url[1024];
    snprintf(url, sizeof url, "%s?synchronous=normal", test_url("sqlite"));
    cfg.url = url;
    dbs_error err;
    p = dbs_pool_open(&cfg, &err);
    CHECK(p);
    CHECK_EQ(pragma_int(p, "PRAGMA synchronous"), 1); /* NORMAL */
    dbs_pool_close(p);
    snprintf(url, sizeof url, "%s?synchronous=off", test_url("sqlite"));
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "synchronous");
}

static atomic_int file_events;

static void count_file_events(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_INVALIDATE && ev->reason && strstr(ev->reason, "deleted"))
        atomic_fetch_add(&file_events, 1);
}

/* A file deleted under a running pool is reported and never written to in
 * silence: not through the connections that still have the old inode open,
 * and not through a new empty file created in its place. */
static void test_deleted_file_detected(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.on_event = count_file_events;
    cfg.log_events = 0;
    cfg.housekeeping_interval_ms = 10;
    cfg.pool_size = 2;
    dbs_pool *p = open_pool("sqlite", &cfg);
    run_sql(p, "CREATE TABLE kept (v INTEGER)");
    run_sql(p, "INSERT INTO kept VALUES (1)");
    test_db_remove(); /* the file, its WAL and its index: gone */
    WAIT_UNTIL(atomic_load(&file_events) > 0, 30000);
    CHECK(atomic_load(&file_events) > 0); /* reported by the housekeeper */
    dbs_error err;
    CHECK_EQ(dbs_pool_ping(p, &err), DBS_ECONNECT); /* the health check says so */
    /* A unit of work fails instead of writing into the deleted inode. */
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (s) {
        CHECK(dbs_exec(s, "INSERT INTO kept VALUES (2)", NULL, 0, &err) < 0);
        dbs_session_close(s);
    } else {
        CHECK(err.code == DBS_ECONNECT || err.code == DBS_EUNAVAILABLE);
    }
    CHECK(access(test_db_path, F_OK) != 0); /* no empty file made in its place */
    dbs_pool_close(p);
}

/* The statement bound holds on SQLite too: a statement that runs past it
 * is interrupted, the call returns DBS_ESTMT_TIMEOUT and the connection is
 * discarded; a session may tighten or lift it. */
static void test_statement_bound(void)
{
    static const char *const forever =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT count(*) FROM n";
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.statement_timeout_ms = 100;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("sqlite", &cfg);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    CHECK_EQ(dbs_exec(s, forever, NULL, 0, &err), DBS_ESTMT_TIMEOUT);
    CHECK_CONTAINS(err.message, "statement bound");
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).invalidated, 1); /* discarded */
    s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    CHECK_OK(dbs_exec(s, "SELECT 1", NULL, 0, &err), &err); /* service goes on */
    /* tightened, and lifted for a long report: a bounded long statement */
    CHECK_OK(dbs_session_set_statement_timeout(s, 0, &err), &err);
    CHECK_OK(dbs_exec(s, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                         "WHERE i < 3000000) SELECT count(*) FROM n", NULL, 0, &err), &err);
    CHECK_OK(dbs_session_set_statement_timeout(s, 20, &err), &err);
    CHECK_EQ(dbs_exec(s, forever, NULL, 0, &err), DBS_ESTMT_TIMEOUT);
    CHECK_EQ(dbs_session_set_statement_timeout(s, -1, &err), DBS_EMISUSE);
    dbs_session_close(s);
    dbs_pool_close(p);
}

/* A relative path names the file in the directory the pool was opened in,
 * for good: after a chdir (a daemon's), new connections still open that
 * file, and the housekeeper does not take it for deleted. */
/* A write transaction whose file was deleted (or only its WAL) between
 * its writes and its COMMIT: the COMMIT fails, rolled back, instead of being
 * acknowledged into an inode nobody will read; the housekeeper has not
 * looked yet (it runs once a minute here). A transaction that only read
 * commits as before. */
static void test_commit_into_deleted_file_fails(void)
{
    for (int wal_only = 0; wal_only < 2; wal_only++) {
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.housekeeping_interval_ms = 60000;
        cfg.log_events = 0;
        cfg.pool_size = 2;
        dbs_pool *p = open_pool("sqlite", &cfg);
        run_sql(p, "CREATE TABLE gone (v INTEGER)");
        run_sql(p, "INSERT INTO gone VALUES (1)");
        dbs_error err;
        dbs_session *r = open_ok(p); /* a reader, open across the deletion */
        CHECK_EQ(query_int(r, "SELECT count(*) FROM gone", NULL, 0), 1);
        dbs_session *s = open_ok(p);
        exec_ok(s, "INSERT INTO gone VALUES (2)");
        if (wal_only) {
            char wal[1000];
            snprintf(wal, sizeof wal, "%s-wal", test_db_path);
            CHECK_EQ(unlink(wal), 0);
        } else {
            test_db_remove();
        }
        CHECK_EQ(dbs_commit(s, &err), DBS_ECONNECT);
        CHECK_CONTAINS(err.message, "deleted or replaced");
        CHECK_CONTAINS(err.message, "rolled back");
        dbs_session_close(s);
        CHECK_OK(dbs_commit(r, &err), &err); /* nothing written: nothing refused */
        dbs_session_close(r);
        CHECK_EQ(stats_of(p).size, 1); /* the writer's connection was discarded */
        dbs_pool_close(p);
        test_db_remove();
    }
}

/* The WAL deleted while a connection of the pool has it open, then a
 * connection opened after that: it would create an empty WAL while the
 * shared WAL index (one per process) still describes the old one's frames,
 * read pages from frames that are not there and append its commit to a
 * WAL with no header, which recovery ignores. It must fail rather than
 * acknowledge a commit that is then lost (or read garbage); the commit of
 * every acknowledged row must survive the pool. */
static void test_new_connection_after_wal_deleted(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.housekeeping_interval_ms = 60000;
    cfg.log_events = 0;
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.circuit_threshold = 1000;
    dbs_pool *p = open_pool("sqlite", &cfg);
    run_sql(p, "CREATE TABLE walgone (v INTEGER)");
    for (int i = 0; i < 20; i++)
        run_sql(p, "INSERT INTO walgone VALUES (1)");
    CHECK_EQ(stats_of(p).size, 1);
    dbs_error err;
    dbs_session *r = open_ok(p); /* the one connection, open across the deletion */
    CHECK_EQ(query_int(r, "SELECT count(*) FROM walgone", NULL, 0), 20);
    char wal[1000];
    snprintf(wal, sizeof wal, "%s-wal", test_db_path);
    CHECK_EQ(unlink(wal), 0);
    int acked = 0;
    dbs_session *s = dbs_session_open(p, NULL, &err); /* a new connection */
    if (s) {
        int64_t n = -1;
        dbs_rows *rows = dbs_query(s, "SELECT count(*) FROM walgone", NULL, 0, &err);
        if (rows && dbs_rows_next(rows, &err) == 1)
            n = dbs_rows_int(rows, 0);
        dbs_rows_close(rows);
        fprintf(stderr, "new connection after the WAL was deleted: count %lld (%s)\n",
                (long long)n, n < 0 ? err.message : "");
        /* it reads what was committed, or fails: never another count */
        CHECK(n == 20 || n == -1);
        if (dbs_exec(s, "INSERT INTO walgone VALUES (2)", NULL, 0, &err) >= 0 &&
            dbs_commit(s, &err) == DBS_OK)
            acked = 1;
        else
            fprintf(stderr, "refused: %s\n", err.message);
        dbs_session_close(s);
    } else {
        fprintf(stderr, "no new connection: %s\n", err.message);
    }
    dbs_session_close(r);
    dbs_pool_close(p);
    /* What is on disk now, through SQLite alone. */
    sqlite3 *db = NULL;
    CHECK_EQ(sqlite3_open_v2(test_db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM walgone WHERE v = 2", -1, &st, NULL);
    int64_t found = rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0)
                                                                      : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    fprintf(stderr, "acknowledged %d, found %lld\n", acked, (long long)found);
    if (acked)
        CHECK_EQ(found, 1);
    test_db_remove();
}

/* A URL naming the file as an SQLite URI (sqlite:file:PATH, which config.c
 * accepts) keeps the promises of a plain path: a file deleted under the
 * pool is reported and never created again, and a URI that names no file
 * (SQLite's private temporary database, one per connection, whose writes
 * no other session would see) is refused. */
static void test_file_uri(void)
{
    test_url("sqlite_uri"); /* sets test_db_path */
    char url[1100];
    snprintf(url, sizeof url, "sqlite:file:%s", test_db_path);
    atomic_store(&file_events, 0);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.on_event = count_file_events;
    cfg.log_events = 0;
    cfg.housekeeping_interval_ms = 10;
    cfg.pool_size = 2;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open(%s): %s", url, err.message);
    run_sql(p, "CREATE TABLE kept (v INTEGER)");
    run_sql(p, "INSERT INTO kept VALUES (1)");
    CHECK(access(test_db_path, F_OK) == 0);
    test_db_remove();
    WAIT_UNTIL(atomic_load(&file_events) > 0, 30000);
    CHECK(atomic_load(&file_events) > 0); /* reported by the housekeeper */
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (s) {
        CHECK(dbs_exec(s, "INSERT INTO kept VALUES (2)", NULL, 0, &err) < 0);
        dbs_session_close(s);
    }
    s = dbs_session_open(p, NULL, &err); /* a new connection, if any */
    if (s) {
        CHECK(dbs_exec(s, "INSERT INTO kept VALUES (3)", NULL, 0, &err) < 0);
        dbs_session_close(s);
    }
    CHECK(access(test_db_path, F_OK) != 0); /* no empty file made in its place */
    dbs_pool_close(p);
    test_db_remove();

    /* No file at all: each connection a private database of its own. */
    cfg.url = "sqlite:file:";
    p = dbs_pool_open(&cfg, &err);
    if (p) {
        dbs_pool_close(p);
        CHECK_FAIL("sqlite:file: was accepted");
    }
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "names no file");
}

/* A file: URL spelled with an authority or percent-escapes
 * (file://localhost/..., a directory with a space as %20): once the file
 * existed, its deletion is an outage like a plain path's, DBS_ECONNECT,
 * and not taken for a directory that does not exist (DBS_ECONFIG, which
 * the circuit breaker does not count). At the first connect, a directory
 * that really is missing is still DBS_ECONFIG. */
static void test_file_uri_spelled(void)
{
    char dir[256], path[400], url[1100];
    snprintf(dir, sizeof dir, "/tmp/dbscope uri-%ld", (long)getpid());
    CHECK_EQ(mkdir(dir, 0700), 0);
    snprintf(path, sizeof path, "%s/app.db", dir);
    static const char *const forms[] = {"file://localhost/tmp/dbscope%20uri-",
                                        "file:/tmp/dbscope%20uri-", "file:///tmp/dbscope uri-"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char uri[400];
        snprintf(uri, sizeof uri, "%s%ld/app.db", forms[i], (long)getpid());
        snprintf(url, sizeof url, "sqlite:%s", uri);
        atomic_store(&file_events, 0);
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url;
        cfg.on_event = count_file_events;
        cfg.log_events = 0;
        cfg.housekeeping_interval_ms = 10;
        cfg.pool_size = 1;
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (!p)
            CHECK_FAIL("dbs_pool_open(%s): %s", url, err.message);
        run_sql(p, "CREATE TABLE kept (v INTEGER)");
        CHECK(access(path, F_OK) == 0);
        CHECK_EQ(unlink(path), 0);
        WAIT_UNTIL(atomic_load(&file_events) > 0, 30000);
        CHECK(atomic_load(&file_events) > 0);
        dbs_session *s = dbs_session_open(p, NULL, &err);
        if (s) {
            dbs_session_close(s);
            CHECK_FAIL("%s: a session on the deleted file", url);
        }
        if (err.code != DBS_ECONNECT)
            CHECK_FAIL("%s: %d, not DBS_ECONNECT: %s", url, err.code, err.message);
        dbs_pool_close(p);
        char side[500];
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
    }
    CHECK_EQ(rmdir(dir), 0);
    dbs_config cfg;
    dbs_config_init(&cfg);
    snprintf(url, sizeof url, "sqlite:file://localhost/tmp/dbscope%%20uri-%ld/app.db",
             (long)getpid());
    cfg.url = url;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (p) {
        dbs_pool_close(p);
        CHECK_FAIL("%s: opened without its directory", url);
    }
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "directory does not exist");
}

/* What SQLite reports about a connection's last statement is not handed to
 * the next user: a pool of one, so both sessions get the same connection. */
static void test_last_statement_reset(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("sqlite", &cfg);
    run_sql(p, "CREATE TABLE ids (id INTEGER PRIMARY KEY)");
    dbs_session *s = open_ok(p);
    exec_ok(s, "INSERT INTO ids VALUES (4242)");
    CHECK_EQ(query_int(s, "SELECT last_insert_rowid()", NULL, 0), 4242);
    CHECK_EQ(query_int(s, "SELECT changes()", NULL, 0), 1);
    int64_t total = query_int(s, "SELECT total_changes()", NULL, 0);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT last_insert_rowid()", NULL, 0), 0);
    CHECK_EQ(query_int(s, "SELECT changes()", NULL, 0), 0);
    /* the same connection (total_changes() cannot be reset: dbscope.h) */
    CHECK_EQ(query_int(s, "SELECT total_changes()", NULL, 0), total);
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).created, 1);
    dbs_pool_close(p);
}

/* Whatever a session writes into the temp database is gone for the next
 * user of the connection, however it names temp: an object called temp.x
 * reaches the authorizer as SQLITE_CREATE_TABLE/VIEW/TRIGGER with database
 * "temp", not as SQLITE_CREATE_TEMP_*, and a row inserted into dbscope's
 * own temp table is a write to temp like any other. Each statement runs in
 * a session of its own, so one cannot hide another's miss. */
static void test_temp_by_name_reset(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("sqlite", &cfg);
    run_sql(p, "CREATE TABLE items (id INTEGER PRIMARY KEY, owner TEXT);"
               "CREATE TABLE audit (who TEXT, what TEXT)");
    static const char *const writes[] = {
        "CREATE TABLE temp.secrets (v TEXT)",
        "CREATE TABLE temp.copied AS SELECT 'token' AS v",
        "CREATE VIEW temp.v_alice AS SELECT 'alice-view' AS x",
        "CREATE TRIGGER temp.spy AFTER INSERT ON main.items BEGIN "
        "INSERT INTO audit VALUES ('alice-trigger', new.owner); END",
        "INSERT INTO temp.dbscope_nochange VALUES ('alice-row')",
        "PRAGMA temp.user_version = 42",
    };
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        dbs_session *s = open_ok(p);
        exec_ok(s, writes[i]);
        dbs_error err;
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        s = open_ok(p);
        char what[300];
        snprintf(what, sizeof what, "after \"%s\"", writes[i]);
        if (query_int(s, "SELECT COUNT(*) FROM temp.sqlite_master "
                         "WHERE name <> 'dbscope_nochange'", NULL, 0) != 0 ||
            query_int(s, "SELECT COUNT(*) FROM temp.dbscope_nochange", NULL, 0) != 0 ||
            query_int(s, "PRAGMA temp.user_version", NULL, 0) != 0)
            CHECK_FAIL("temp state survived the reset %s", what);
        exec_ok(s, "INSERT INTO items (owner) VALUES ('bob')");
        CHECK_EQ(query_int(s, "SELECT COUNT(*) FROM audit", NULL, 0), 0);
        CHECK_OK(dbs_rollback(s, &err), &err);
        dbs_session_close(s);
    }
    /* Reading temp changes nothing: the connection is kept, not reopened
     * (total_changes() counts since it opened). */
    dbs_session *s = open_ok(p);
    exec_ok(s, "INSERT INTO items (owner) VALUES ('carol')");
    int64_t total = query_int(s, "SELECT total_changes()", NULL, 0);
    CHECK_INT(total, >, 0);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT COUNT(*) FROM temp.dbscope_nochange", NULL, 0), 0);
    CHECK_EQ(query_int(s, "SELECT COUNT(*) FROM temp.sqlite_master", NULL, 0), 1);
    dbs_session_close(s);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT total_changes()", NULL, 0), total);
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).created, 1);
    dbs_pool_close(p);
}

/* SQLite applies flag PRAGMAs, cache_size and busy_timeout (which replaces
 * dbscope's busy handler) as it compiles them: a statement dbscope refuses
 * after preparing it has already changed the connection, so the reset
 * must reopen it all the same. */
static void test_refused_pragma_reset(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("sqlite", &cfg);
    static const char *const reads[] = {"PRAGMA ignore_check_constraints",
                                        "PRAGMA recursive_triggers", "PRAGMA cache_size",
                                        "PRAGMA busy_timeout"};
    enum { NREADS = sizeof reads / sizeof reads[0] };
    int64_t before[NREADS];
    dbs_session *s = open_ok(p);
    for (int i = 0; i < NREADS; i++)
        before[i] = query_int(s, reads[i], NULL, 0);
    dbs_session_close(s);
    dbs_value one = DBS_INT(1);
    /* dbs_query prepares, then refuses: the statement never runs. (dbs_exec
     * runs each statement once prepared; the PRAGMAs SQLite applies at
     * compile time are read-only and take no $N, so none of its refusals
     * follows one.) */
    static const struct {
        const char *sql;
        size_t nparams; /* one more than the statement uses: refused */
    } refused[] = {
        {"PRAGMA ignore_check_constraints=1", 1},
        {"PRAGMA recursive_triggers=1; SELECT 1", 0}, /* two statements */
        {"PRAGMA cache_size=7", 1},
        {"PRAGMA busy_timeout=12345", 1},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        s = open_ok(p);
        dbs_error err;
        CHECK(dbs_query(s, refused[i].sql, &one, refused[i].nparams, &err) == NULL);
        CHECK_EQ(err.code, DBS_ESQL);
        dbs_session_close(s);
        s = open_ok(p);
        for (int k = 0; k < NREADS; k++)
            if (query_int(s, reads[k], NULL, 0) != before[k])
                CHECK_FAIL("%s changed after the refused \"%s\"", reads[k], refused[i].sql);
        dbs_session_close(s);
    }
    dbs_pool_close(p);
}

/* soft_heap_limit, hard_heap_limit, temp_store_directory and
 * data_store_directory set variables of the whole SQLite library: no
 * reset can undo them, so they are refused with a value (before SQLite
 * applies them) and may still be read. */
static void test_process_wide_pragma_refused(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_pool *p = open_pool("sqlite", &cfg);
    dbs_session *s = open_ok(p);
    int64_t soft = query_int(s, "PRAGMA soft_heap_limit", NULL, 0);
    int64_t hard = query_int(s, "PRAGMA hard_heap_limit", NULL, 0);
    static const char *const sets[] = {
        "PRAGMA soft_heap_limit=7777777",
        "PRAGMA hard_heap_limit=999999999999",
        "PRAGMA temp_store_directory='/tmp'",
        "PRAGMA temp_store_directory=''",
        "PRAGMA data_store_directory='/tmp'",
        "PRAGMA main.soft_heap_limit(7777777)",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        dbs_error err;
        dbs_rows *r = dbs_query(s, sets[i], NULL, 0, &err);
        if (r) {
            dbs_rows_close(r);
            CHECK_FAIL("\"%s\" was not refused", sets[i]);
        }
        CHECK_EQ(err.code, DBS_ESQL);
        CHECK_CONTAINS(err.message, "process-wide");
        CHECK_CONTAINS(err.message, "at start-up");
        CHECK_EQ(dbs_exec(s, sets[i], NULL, 0, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "process-wide");
    }
    /* reading stays allowed, and nothing changed */
    CHECK_EQ(query_int(s, "PRAGMA soft_heap_limit", NULL, 0), soft);
    CHECK_EQ(query_int(s, "PRAGMA hard_heap_limit", NULL, 0), hard);
    dbs_error err;
    dbs_rows *r = dbs_query(s, "PRAGMA temp_store_directory", NULL, 0, &err);
    CHECK(r);
    CHECK_EQ(dbs_rows_next(r, &err), 0); /* unset: no row */
    dbs_rows_close(r);
    dbs_session_close(s);
    dbs_pool_close(p);
}

static atomic_int moved_events;

static void count_moved(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_INVALIDATE)
        atomic_fetch_add(&moved_events, 1);
}

static void test_relative_path_survives_chdir(void)
{
    char dir[256], other[300], here[4096];
    CHECK(getcwd(here, sizeof here) != NULL);
    snprintf(dir, sizeof dir, "/tmp/dbscope-rel-%ld", (long)getpid());
    snprintf(other, sizeof other, "%s/elsewhere", dir);
    CHECK_EQ(mkdir(dir, 0700), 0);
    CHECK_EQ(mkdir(other, 0700), 0);
    CHECK_EQ(chdir(dir), 0);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite:rel.db";
    cfg.on_event = count_moved;
    cfg.log_events = 0;
    cfg.housekeeping_interval_ms = 10;
    cfg.idle_timeout_ms = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p);
    run_sql(p, "CREATE TABLE kept (v INTEGER)");
    run_sql(p, "INSERT INTO kept VALUES (7)");
    CHECK_EQ(chdir(other), 0);
    dbs__sleep_ms(100); /* housekeeping rounds after the chdir */
    /* two at once: the second is a connection opened after the chdir */
    dbs_session *a = dbs_session_open(p, NULL, &err);
    dbs_session *b = dbs_session_open(p, NULL, &err);
    CHECK(a && b);
    CHECK_EQ(query_int(a, "SELECT v FROM kept", NULL, 0), 7);
    CHECK_EQ(query_int(b, "SELECT v FROM kept", NULL, 0), 7);
    dbs_session_close(a);
    dbs_session_close(b);
    CHECK_EQ(atomic_load(&moved_events), 0);
    dbs_pool_close(p);
    CHECK_EQ(chdir(here), 0);
    char f[400];
    static const char *const ends[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(f, sizeof f, "%s/rel.db%s", dir, ends[i]);
        unlink(f);
    }
    rmdir(other);
    rmdir(dir);
}

/* A file made with SQLite alone, holding one table t with one row v. */
static void make_db(const char *path, int v)
{
    sqlite3 *db = NULL;
    char sql[100];
    snprintf(sql, sizeof sql, "CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (%d)", v);
    CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* The URL's path through a symbolic link that a deployment switches to
 * another database (a "current" link to the file, or to its directory,
 * replaced by rename): the housekeeper reports the path now naming another
 * file, and the connections still open on the old one must be discarded,
 * not handed out to read and commit there. SQLite opened the file the link
 * named then, so its own check (SQLITE_FCNTL_HAS_MOVED) finds nothing
 * moved. */
static void test_symlink_switched(void)
{
    for (int dir_link = 0; dir_link < 2; dir_link++) {
        char dir[256], a[300], b[300], link[300], tmp[400], url[500];
        snprintf(dir, sizeof dir, "/tmp/dbscope-link-%ld", (long)getpid());
        CHECK_EQ(mkdir(dir, 0700), 0);
        if (dir_link) {
            snprintf(a, sizeof a, "%s/r1", dir);
            snprintf(b, sizeof b, "%s/r2", dir);
            CHECK_EQ(mkdir(a, 0700), 0);
            CHECK_EQ(mkdir(b, 0700), 0);
            snprintf(tmp, sizeof tmp, "%s/app.db", a);
            make_db(tmp, 1);
            snprintf(tmp, sizeof tmp, "%s/app.db", b);
            make_db(tmp, 2);
            snprintf(link, sizeof link, "%s/current", dir);
            snprintf(url, sizeof url, "sqlite://%s/app.db", link);
        } else {
            snprintf(a, sizeof a, "%s/a.db", dir);
            snprintf(b, sizeof b, "%s/b.db", dir);
            make_db(a, 1);
            make_db(b, 2);
            snprintf(link, sizeof link, "%s/current.db", dir);
            snprintf(url, sizeof url, "sqlite://%s", link);
        }
        CHECK_EQ(symlink(a, link), 0);
        atomic_store(&moved_events, 0);
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url;
        cfg.on_event = count_moved;
        cfg.log_events = 0;
        cfg.housekeeping_interval_ms = 10;
        cfg.pool_size = 2;
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (!p)
            CHECK_FAIL("dbs_pool_open(%s): %s", url, err.message);
        dbs_session *s1 = open_ok(p), *s2 = open_ok(p); /* both connections */
        CHECK_EQ(query_int(s1, "SELECT v FROM t", NULL, 0), 1);
        CHECK_EQ(query_int(s2, "SELECT v FROM t", NULL, 0), 1);
        dbs_session_close(s1);
        dbs_session_close(s2);
        snprintf(tmp, sizeof tmp, "%s/switching", dir);
        CHECK_EQ(symlink(b, tmp), 0);
        CHECK_EQ(rename(tmp, link), 0);
        WAIT_UNTIL(atomic_load(&moved_events) > 0, 30000);
        CHECK(atomic_load(&moved_events) > 0);
        s1 = open_ok(p);
        s2 = open_ok(p);
        CHECK_EQ(query_int(s1, "SELECT v FROM t", NULL, 0), 2);
        CHECK_EQ(query_int(s2, "SELECT v FROM t", NULL, 0), 2);
        exec_ok(s1, "INSERT INTO t VALUES (3)");
        CHECK_OK(dbs_commit(s1, &err), &err);
        dbs_session_close(s1);
        dbs_session_close(s2);
        dbs_pool_close(p);
        /* the commit is in the file the path names now */
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        snprintf(tmp, sizeof tmp, dir_link ? "%s/app.db" : "%s", b);
        CHECK_EQ(sqlite3_open(tmp, &db), SQLITE_OK);
        CHECK_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM t WHERE v = 3", -1, &st, NULL),
                 SQLITE_OK);
        CHECK_EQ(sqlite3_step(st), SQLITE_ROW);
        CHECK_EQ(sqlite3_column_int(st, 0), 1);
        sqlite3_finalize(st);
        sqlite3_close(db);
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK_EQ(system(cmd), 0);
    }
}

/* A relative path names the file in the directory dbs_pool_open ran in
 * (here one whose name a URI would read otherwise: a space, %, # and ?),
 * however it is spelled (sqlite:rel.db, or as an SQLite URI, file:rel.db)
 * and however late the first connection opens (lazy_open, then a
 * daemon's chdir before the first session). */
static void test_relative_path_lazy(void)
{
    static const char *const urls[] = {"sqlite:rel.db", "sqlite:file:rel.db",
                                       "sqlite:file:rel%20x.db"};
    static const char *const files[] = {"rel.db", "rel.db", "rel x.db"};
    char dir[256], other[300], here[4096], f[400];
    CHECK(getcwd(here, sizeof here) != NULL);
    snprintf(dir, sizeof dir, "/tmp/dbscope-lazy %%#?-%ld", (long)getpid());
    snprintf(other, sizeof other, "%s/elsewhere", dir);
    CHECK_EQ(mkdir(dir, 0700), 0);
    CHECK_EQ(mkdir(other, 0700), 0);
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        CHECK_EQ(chdir(dir), 0);
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = urls[i];
        cfg.lazy_open = 1;
        cfg.log_events = 0;
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (!p)
            CHECK_FAIL("dbs_pool_open(%s): %s", urls[i], err.message);
        CHECK_EQ(chdir(other), 0);
        run_sql(p, "CREATE TABLE made (v INTEGER)");
        dbs_pool_close(p);
        snprintf(f, sizeof f, "%s/%s", dir, files[i]);
        if (access(f, F_OK) != 0)
            CHECK_FAIL("%s: no %s (the file went to the directory of the first connect)",
                       urls[i], f);
        static const char *const ends[] = {"", "-wal", "-shm"};
        for (int k = 0; k < 3; k++) {
            snprintf(f, sizeof f, "%s/%s%s", dir, files[i], ends[k]);
            unlink(f);
            snprintf(f, sizeof f, "%s/%s%s", other, files[i], ends[k]);
            unlink(f);
        }
    }
    CHECK_EQ(chdir(here), 0);
    rmdir(other);
    rmdir(dir);
}

/* The first row of sql with params, its columns joined by '|', in out. */
static const char *row_text(dbs_session *s, const char *sql, const dbs_value *v, size_t n,
                            char *out, size_t cap)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, sql, v, n, &err);
    if (!r)
        CHECK_FAIL("%s: %s", sql, err.message);
    if (dbs_rows_next(r, &err) != 1)
        CHECK_FAIL("%s: no row (%s)", sql, err.message);
    size_t w = 0;
    out[0] = '\0';
    for (int i = 0; i < dbs_rows_count_cols(r); i++) {
        const char *t = dbs_rows_text(r, i, NULL);
        w += (size_t)snprintf(out + w, cap - w, "%s%s", i ? "|" : "", t ? t : "(null)");
    }
    dbs_rows_close(r);
    return out;
}

/* $N is rewritten for SQLite only where its tokenizer reads a parameter:
 * strings, quoted names, comments and names containing '$' keep theirs;
 * a $N used again is the same value; other parameter styles are refused
 * as before; messages quote the caller's text. With and without the
 * statement cache (an uncached statement's text is the driver's copy). */
static void test_params_rewritten(void)
{
    for (int cache = 0; cache < 2; cache++) {
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = "sqlite::memory:";
        cfg.stmt_cache_size = cache ? 16 : 0;
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        CHECK(p);
        dbs_session *s = open_ok(p);
        exec_ok(s, "CREATE TABLE pr (\"$1\" TEXT, [$2] TEXT, `$3` TEXT, a$1 TEXT, "
                   "\"x\"\"$1\" TEXT)");
        exec_ok(s, "INSERT INTO pr VALUES ('q1', 'q2', 'q3', 'n1', 'd1')");
        char out[256];
        dbs_value v[12];
        for (int i = 0; i < 12; i++)
            v[i] = DBS_INT(100 + i + 1);

        /* quoted, commented and '$'-named: untouched; $2 used twice */
        CHECK_STR(row_text(s, "SELECT \"$1\", [$2], `$3`, a$1, \"x\"\"$1\", '$1', "
                              "'it''s $2', /* $3 */ $2, $1 -- $4 '\n"
                              ", $2 + 0, '[$1]' FROM pr", v, 2, out, sizeof out),
                  "q1|q2|q3|n1|d1|$1|it's $2|102|101|102|[$1]");
        /* an unterminated comment ends the text as SQLite reads it */
        CHECK_STR(row_text(s, "SELECT $1 /* $2", v, 1, out, sizeof out), "101");
        /* any order; $1 again where its slot's number fits ("?2") */
        CHECK_STR(row_text(s, "SELECT $3, $1, $3 || '', $1 * 1", v, 3, out, sizeof out),
                  "103|101|103|101");
        /* $1 again after ten others: "?11" is longer than "$1" */
        CHECK_STR(row_text(s, "SELECT $2+$3+$4+$5+$6+$7+$8+$9+$10+$11, $1, $12, $1 + 0",
                           v, 12, out, sizeof out), "1065|101|112|101");
        /* a gap: $2 is unused and need not be bound */
        CHECK_STR(row_text(s, "SELECT $1, $3", v, 3, out, sizeof out), "101|103");

        /* other parameter styles: refused as before, by name ("$01" is
         * $1, as PostgreSQL reads it: test_query leading_zero_params) */
        const char *styles[] = {"SELECT ?", "SELECT ?1", "SELECT :a", "SELECT @a",
                                "SELECT $a", "SELECT $1, :a", "SELECT $1a", "SELECT $0",
                                "SELECT $00", "SELECT $1::a"};
        for (size_t i = 0; i < sizeof styles / sizeof styles[0]; i++) {
            CHECK_EQ(dbs_exec(s, styles[i], v, 1, &err), DBS_ESQL);
            CHECK_CONTAINS(err.message, "write parameters as $1..$n");
        }
        CHECK_OK(dbs_rollback(s, &err), &err);

        /* SQLite's messages quote the caller's text, not the rewrite */
        CHECK_EQ(dbs_exec(s, "SELECT $1 $2 $3", v, 3, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "near \"$2\"");
        CHECK_CONTAINS(err.message, "(statement: SELECT $1 $2 $3)");
        CHECK_OK(dbs_rollback(s, &err), &err);
        /* a step's failure too (abs() of the least integer overflows) */
        dbs_value least = DBS_INT(INT64_MIN);
        dbs_rows *r = dbs_query(s, "SELECT abs($1)", &least, 1, &err);
        if (r) {
            CHECK(dbs_rows_next(r, &err) < 0);
            dbs_rows_close(r);
        }
        CHECK_CONTAINS(err.message, "integer overflow");
        CHECK_CONTAINS(err.message, "(statement: SELECT abs($1))");
        CHECK_OK(dbs_rollback(s, &err), &err);

        /* a text of several statements: each binds what it uses, and
         * one parameter too many is still refused */
        exec_ok(s, "CREATE TABLE pm (a INTEGER, b INTEGER)");
        CHECK_EQ(dbs_exec(s, "INSERT INTO pm VALUES ($2, $1); /* ; $3 */ "
                             "INSERT INTO pm VALUES ($1, '$2;'); ", v, 2, &err), 1);
        CHECK_STR(row_text(s, "SELECT group_concat(a || ',' || b, ' ') FROM pm", NULL, 0,
                           out, sizeof out), "102,101 101,$2;");
        CHECK_OK(dbs_commit(s, &err), &err);
        CHECK_EQ(dbs_exec(s, "INSERT INTO pm VALUES ($1, 0); INSERT INTO pm VALUES ($1, 1)",
                          v, 2, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "only up to $1");
        CHECK_OK(dbs_rollback(s, &err), &err);
        /* a trigger's own ';' does not end its statement: the next
         * statement's parameters are where SQLite finds them */
        dbs_value w[] = {DBS_INT(7), DBS_INT(8)};
        CHECK_EQ(dbs_exec(s, "CREATE TEMP TRIGGER pt AFTER INSERT ON pm BEGIN "
                             "UPDATE pm SET b = b + 1 WHERE a = NEW.a; END; "
                             "INSERT INTO pm VALUES ($1, $2)", w, 2, &err), 1);
        CHECK_EQ(query_int(s, "SELECT b FROM pm WHERE a = $1", w, 1), 9);
        dbs_session_close(s);
        dbs_pool_close(p);
    }
}

/* A session's result sets reuse one block of memory: whatever the last one
 * left there (its value types noted on the heap past 16 columns, or on the
 * block itself; a finished write; an early close on a row) is not the next
 * one's. */
static void test_rows_memory_reused(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite::memory:";
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p);
    dbs_session *s = open_ok(p);
    exec_ok(s, "CREATE TABLE ru (a INTEGER, b)");
    exec_ok(s, "INSERT INTO ru VALUES (1, x'00ff'), (2, 'two')");
    for (int round = 0; round < 2; round++) {
        /* 20 columns: their types noted outside the block */
        dbs_rows *r = dbs_query(s, "SELECT 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,"
                                   "'last'", NULL, 0, &err);
        CHECK(r);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_EQ(dbs_rows_type(r, 19, &err), DBS_TYPE_TEXT);
        CHECK_STR(dbs_rows_text(r, 0, NULL), "1"); /* an integer read as text */
        dbs_rows_close(r);
        /* a write whose rows are read to their end */
        r = dbs_query(s, "UPDATE ru SET a = a + 10 RETURNING a", NULL, 0, &err);
        CHECK(r);
        int n = 0;
        while (dbs_rows_next(r, &err) == 1)
            n++;
        CHECK_EQ(n, 2);
        dbs_rows_close(r);
        /* then one column whose first value is a BLOB, read on the block:
         * its type is the value's, not the text the first column was read
         * as, and the rows run to their end */
        r = dbs_query(s, "SELECT b FROM ru ORDER BY a", NULL, 0, &err);
        CHECK(r);
        CHECK_EQ(dbs_rows_count_cols(r), 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_EQ(dbs_rows_type(r, 0, &err), DBS_TYPE_BLOB);
        const void *b = NULL;
        size_t len = 0;
        CHECK_OK(dbs_rows_get_blob(r, 0, &b, &len, &err), &err);
        CHECK_EQ(len, 2);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_EQ(dbs_rows_type(r, 0, &err), DBS_TYPE_TEXT);
        CHECK_STR(dbs_rows_text(r, 0, NULL), "two");
        CHECK_EQ(dbs_rows_next(r, &err), 0);
        CHECK_EQ(dbs_rows_next(r, &err), 0);
        dbs_rows_close(r);
        /* closed on its row, unread: the next one starts from its own first */
        r = dbs_query(s, "SELECT a FROM ru ORDER BY a", NULL, 0, &err);
        CHECK(r);
        dbs_rows_close(r);
        CHECK_EQ(query_int(s, "SELECT count(*) FROM ru", NULL, 0), 2);
    }
    CHECK_EQ(query_int(s, "SELECT min(a) FROM ru", NULL, 0), 21);
    dbs_session_close(s);
    dbs_pool_close(p);
}

int main(void)
{
    test_wal_and_foreign_keys();
    test_busy_is_retried();
    test_memory_shared();
    test_state_reset();
    test_durable_by_default();
    test_deleted_file_detected();
    test_statement_bound();
    test_relative_path_survives_chdir();
    test_symlink_switched();
    test_relative_path_lazy();
    test_commit_into_deleted_file_fails();
    test_new_connection_after_wal_deleted();
    test_file_uri();
    test_file_uri_spelled();
    test_last_statement_reset();
    test_temp_by_name_reset();
    test_refused_pragma_reset();
    test_process_wide_pragma_refused();
    test_params_rewritten();
    test_rows_memory_reused();
    puts("test_sqlite: ok");
    return 0;
}
