/* A connect the database refuses for good is a configuration error, not an
 * outage: DBS_ECONFIG with the SQLSTATE and a message saying what to fix,
 * from dbs_pool_open, dbs_session_open (lazy_open, NONE mode, the
 * housekeeper's min_idle connects) and dbs_transact alike; never retried,
 * never counted by the circuit breaker, however many attempts.
 *
 *   test_config_errors sqlite   a missing directory, a directory for a file, a
 *                               file for a directory, a file that is not a
 *                               database; permission denied (also a WAL
 *                               file only readable)
 *   test_config_errors pg       wrong password, unknown user, unknown database,
 *                               a role that may not log in, no CONNECT right
 *   test_config_errors mysql    wrong password, unknown database, a database
 *                               without a grant
 * (pg and mysql read the throwaway server's directory: DBSCOPE_PG_DIR,
 * DBSCOPE_MYSQL_DIR.) */
#include "common.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef DBSCOPE_WITH_PG
#include <libpq-fe.h>
#endif

static atomic_int circuit_opens, work_calls;
static const char *secret = "";

static void on_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_CIRCUIT_OPEN)
        atomic_fetch_add(&circuit_opens, 1);
    if (ev->reason && *secret && strstr(ev->reason, secret))
        CHECK_FAIL("the password appears in an event: %s", ev->reason);
}

static int work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)arg;
    (void)err;
    atomic_fetch_add(&work_calls, 1);
    return 0;
}

static void check_err(const dbs_error *e, const char *sqlstate, const char *fix)
{
    fprintf(stderr, "  -> %d [%s] %s\n", e->code, e->sqlstate, e->message);
    CHECK_EQ(e->code, DBS_ECONFIG);
    CHECK_STR(e->sqlstate, sqlstate);
    CHECK_CONTAINS(e->message, fix);
    if (*secret)
        CHECK(strstr(e->message, secret) == NULL);
}

static void config_for(dbs_config *cfg, const char *url)
{
    dbs_config_init(cfg);
    cfg->url = url;
    cfg->pool_size = 2;
    cfg->acquire_timeout_ms = 20000;
    cfg->connect_timeout_ms = 10000;
    cfg->circuit_threshold = 2;
    cfg->circuit_cooldown_ms = 50;
    cfg->retry_max = 3;
    cfg->retry_base_ms = 1;
    cfg->housekeeping_interval_ms = 20;
    cfg->on_event = on_event;
    cfg->log_events = 0;
}

/* Every path that connects, on a URL the database refuses for good. once:
 * a fragment of the server's message that must appear exactly once. */
static void refused(const char *url, const char *sqlstate, const char *fix,
                    const char *once)
{
    fprintf(stderr, "case: %s\n", fix);
    dbs_config cfg;
    dbs_error e;
    atomic_store(&circuit_opens, 0);
    atomic_store(&work_calls, 0);

    /* dbs_pool_open: its first connect. */
    config_for(&cfg, url);
    memset(&e, 0, sizeof e);
    CHECK(dbs_pool_open(&cfg, &e) == NULL);
    check_err(&e, sqlstate, fix);
    if (once) {
        const char *first = strstr(e.message, once);
        CHECK(first != NULL);
        if (strstr(first + 1, once))
            CHECK_FAIL("\"%s\" appears twice in: %s", once, e.message);
    }

    /* lazy_open, then many sessions and units: every one ECONFIG, none
     * refused by an open circuit, no unit run or retried. */
    for (int mode = 0; mode < 2; mode++) {
        config_for(&cfg, url);
        cfg.lazy_open = 1;
        cfg.mode = mode == 0 ? DBS_POOL_QUEUE : DBS_POOL_NONE;
        dbs_pool *p = dbs_pool_open(&cfg, &e);
        CHECK(p != NULL);
        for (int i = 0; i < 12; i++) {
            dbs_session *s = dbs_session_open(p, NULL, &e);
            CHECK(s == NULL);
            check_err(&e, sqlstate, fix);
            CHECK(!dbs_error_is_transient(&e));
        }
        for (int i = 0; i < 4; i++) {
            int rc = dbs_transact(p, NULL, work, NULL, &e);
            CHECK_EQ(rc, DBS_ECONFIG);
            check_err(&e, sqlstate, fix);
        }
        dbs_stats st = stats_of(p);
        CHECK_EQ(atomic_load(&work_calls), 0);
        CHECK_EQ(st.retries, 0);
        CHECK_EQ(st.unavailable, 0);
        CHECK_INT(st.connect_failures, >=, 16);
        CHECK_EQ(atomic_load(&circuit_opens), 0);
        dbs_pool_close(p);
    }

    /* The housekeeper's min_idle connects fail the same way, and do not
     * open the circuit for the sessions either. */
    config_for(&cfg, url);
    cfg.lazy_open = 1;
    cfg.min_idle = 2;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    CHECK(p != NULL);
    WAIT_UNTIL(stats_of(p).connect_failures >= 8, 20000);
    CHECK_INT(stats_of(p).connect_failures, >=, 8);
    dbs_session *s = dbs_session_open(p, NULL, &e);
    CHECK(s == NULL);
    check_err(&e, sqlstate, fix);
    CHECK_EQ(stats_of(p).unavailable, 0);
    CHECK_EQ(atomic_load(&circuit_opens), 0);
    dbs_pool_close(p);
}

static void run_sqlite(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[600], url[800];
    snprintf(dir, sizeof dir, "%s/dbscope-cfgerr-%ld", tmp ? tmp : "/tmp", (long)getpid());
    snprintf(url, sizeof url, "sqlite://%s/no/such/dir/app.db", dir);
    refused(url, "", "directory does not exist", NULL);

    /* A path that names a directory, and one that goes through a file. */
    char other[700];
    snprintf(other, sizeof other, "%s-d", dir);
    CHECK(mkdir(other, 0700) == 0);
    snprintf(url, sizeof url, "sqlite://%s", other);
    refused(url, "", "the path names a directory", NULL);
    rmdir(other);
    snprintf(other, sizeof other, "%s-f", dir);
    FILE *f = fopen(other, "w");
    CHECK(f != NULL);
    fclose(f);
    snprintf(url, sizeof url, "sqlite://%s/app.db", other);
    refused(url, "", "its directory is not a directory", NULL);
    unlink(other);

    /* A file that is not an SQLite database: no connect will ever work. */
    f = fopen(other, "w");
    CHECK(f != NULL);
    for (int i = 0; i < 100; i++)
        fputs("not a database, a text file named by mistake\n", f);
    fclose(f);
    snprintf(url, sizeof url, "sqlite://%s", other);
    refused(url, "", "not an SQLite database", NULL);
    unlink(other);

    /* A name one byte past NAME_MAX, as the file and as its directory, and
     * a symbolic link that points at itself: no connect will ever open
     * them (they were DBS_ECONNECT, retried and counted as an outage). */
    char longname[257], longurl[1200];
    memset(longname, 'n', 256);
    longname[256] = '\0';
    snprintf(longurl, sizeof longurl, "sqlite://%s-%s", dir, longname);
    refused(longurl, "", "too long", NULL);
    snprintf(longurl, sizeof longurl, "sqlite://%s-%s/app.db", dir, longname);
    refused(longurl, "", "too long", NULL);
    snprintf(other, sizeof other, "%s-loop", dir);
    CHECK(symlink(other, other) == 0);
    snprintf(url, sizeof url, "sqlite://%s", other);
    refused(url, "", "symbolic link", NULL);
    snprintf(url, sizeof url, "sqlite://%s/app.db", other);
    refused(url, "", "symbolic link", NULL);
    unlink(other);

    /* Permission denied: a directory only root may enter, opened by a
     * process that is not root. */
    if (geteuid() != 0) {
        fprintf(stderr, "not root: the permission case is skipped\n");
        return;
    }
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(url, sizeof url, "sqlite://%s/app.db", dir);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        refused(url, "", "permission denied", NULL);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    rmdir(dir);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);

    /* A database file the process may only read, already in WAL mode, in
     * a directory it may write: SQLite opens it read-only without a word,
     * and without a check every write would fail later as DBS_ESQL. */
    CHECK(mkdir(dir, 0777) == 0);
    CHECK(chmod(dir, 0777) == 0);
    snprintf(other, sizeof other, "%s/ro.db", dir);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(other, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t (v)", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(db);
    CHECK(chmod(other, 0444) == 0);
    snprintf(url, sizeof url, "sqlite://%s", other);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        refused(url, "", "permission denied", NULL);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    static const char *const ends[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char side[800];
        snprintf(side, sizeof side, "%s%s", other, ends[i]);
        unlink(side);
    }
    rmdir(dir);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

static char password[256], port[32];

static void server(const char *env)
{
    const char *dir = getenv(env);
    if (!dir)
        CHECK_FAIL("%s is not set", env);
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    secret = password;
}

#ifdef DBSCOPE_WITH_PG
/* Runs sql as the throwaway PostgreSQL's administrator (DIR/super_url),
 * outside a transaction (CREATE DATABASE). */
static void pg_admin(const char *sql)
{
    char super[1024];
    read_line(getenv("DBSCOPE_PG_DIR"), "super_url", super, sizeof super);
    PGconn *su = PQconnectdb(super);
    if (PQstatus(su) != CONNECTION_OK)
        CHECK_FAIL("administrator connection: %s", PQerrorMessage(su));
    PGresult *r = PQexec(su, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        CHECK_FAIL("%s: %s", sql, PQerrorMessage(su));
    PQclear(r);
    PQfinish(su);
}
#endif

static void run_pg(void)
{
#ifndef DBSCOPE_WITH_PG
    CHECK_FAIL("built without PostgreSQL");
#else
    server("DBSCOPE_PG_DIR");
    char url[1200];
    snprintf(url, sizeof url, "postgresql://dbscope:%sX@127.0.0.1:%s/dbscope", password, port);
    refused(url, "28P01", "wrong password", "password authentication failed");
    snprintf(url, sizeof url, "host=127.0.0.1 port=%s dbname=dbscope user=dbscope "
             "password=%sX", port, password);
    refused(url, "28P01", "wrong password", "password authentication failed");
    snprintf(url, sizeof url, "postgresql://nobody_%ld:%s@127.0.0.1:%s/dbscope",
             (long)getpid(), password, port);
    refused(url, "28P01", "wrong password", NULL); /* scram: an unknown user looks the same */
    snprintf(url, sizeof url, "postgresql://dbscope:%s@127.0.0.1:%s/no_such_db_%ld",
             password, port, (long)getpid());
    refused(url, "3D000", "unknown database", "does not exist");
    /* one byte past the server's 63: cut to 63, and unknown as such */
    snprintf(url, sizeof url, "postgresql://dbscope:%s@127.0.0.1:%s/%064d", password, port, 0);
    refused(url, "3D000", "unknown database", "does not exist");

    /* The right password for a role that may not log in (28000), and a
     * database the user may not connect to (42501): refused for good too. */
    char sql[600], role[64], db[64];
    snprintf(role, sizeof role, "dbscope_nologin_%ld", (long)getpid());
    snprintf(db, sizeof db, "dbscope_noconnect_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE ROLE %s NOLOGIN PASSWORD '%s'", role, password);
    pg_admin(sql);
    snprintf(url, sizeof url, "postgresql://%s:%s@127.0.0.1:%s/dbscope", role, password, port);
    refused(url, "28000", "the server refuses this user", "not permitted to log in");
    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    pg_admin(sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    pg_admin(sql);
    snprintf(sql, sizeof sql, "REVOKE CONNECT ON DATABASE %s FROM PUBLIC", db);
    pg_admin(sql);
    snprintf(url, sizeof url, "postgresql://dbscope:%s@127.0.0.1:%s/%s", password, port, db);
    refused(url, "42501", "may not connect to this database", "permission denied");
    snprintf(sql, sizeof sql, "DROP DATABASE %s", db);
    pg_admin(sql);
#endif
}

static void run_mysql(void)
{
    server("DBSCOPE_MYSQL_DIR");
    char url[1200];
    snprintf(url, sizeof url, "mariadb://dbscope:%sX@127.0.0.1:%s/dbscope", password, port);
    refused(url, "28000", "wrong password", "Access denied");
    snprintf(url, sizeof url, "mariadb://dbscope:%s@127.0.0.1:%s/no_such_db_%ld",
             password, port, (long)getpid());
    refused(url, "42000", "unknown or forbidden database", "no_such_db");
    /* a database that exists, without a grant on it (1044), and one that
     * does not exist for an account that may see every database (1049) */
    snprintf(url, sizeof url, "mariadb://dbscope:%s@127.0.0.1:%s/mysql", password, port);
    refused(url, "42000", "unknown or forbidden database", "[1044]");
    /* a name one byte past the server's 64: the server calls it incorrect
     * (1102), which no retry cures either (it was DBS_ECONNECT) */
    snprintf(url, sizeof url, "mariadb://dbscope:%s@127.0.0.1:%s/%065d", password, port, 0);
    refused(url, "42000", "unknown or forbidden database", "[1102]");
    char superpw[256];
    read_line(getenv("DBSCOPE_MYSQL_DIR"), "superpw", superpw, sizeof superpw);
    secret = superpw;
    snprintf(url, sizeof url, "mariadb://root:%s@127.0.0.1:%s/no_such_db_%ld", superpw, port,
             (long)getpid());
    refused(url, "42000", "unknown or forbidden database", "[1049]");
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "sqlite";
    if (!strcmp(what, "sqlite"))
        run_sqlite();
    else if (!strcmp(what, "pg"))
        run_pg();
    else if (!strcmp(what, "mysql"))
        run_mysql();
    else
        CHECK_FAIL("usage: test_config_errors sqlite|pg|mysql");
    fprintf(stderr, "ok\n");
    return 0;
}
