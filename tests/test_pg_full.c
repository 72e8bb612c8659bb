/* PostgreSQL's disk_full (53100) is DBS_EFULL: a table in a tablespace on
 * a tiny tmpfs (root only: mounting; else skipped) is filled by INSERTs
 * until the server cannot extend its file. The unit is retried like
 * DBS_ERETRYABLE, nothing of it is stored, and the same connection works
 * again once space is freed. */
#include "common.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/stat.h>

static atomic_int work_calls;
static char dir[] = "/tmp/dbscope-pgfull-XXXXXX";

static PGconn *su;
static char table[64], ts[64];

/* The tmpfs is in the server's mount namespace: gone however the test
 * ends, after the table and tablespace on it (a table left on a vanished
 * directory would fail the server's every checkpoint). */
static void cleanup(void)
{
    if (su) {
        char sql[256];
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
        PQclear(PQexec(su, sql));
        snprintf(sql, sizeof sql, "DROP TABLESPACE IF EXISTS %s", ts);
        /* the pool's backend may still be exiting: a few tries */
        for (int i = 0; i < 50; i++) {
            PGresult *r = PQexec(su, sql);
            bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            if (!ok && i == 49)
                fprintf(stderr, "%s: %s", sql, PQerrorMessage(su));
            PQclear(r);
            if (ok)
                break;
            dbs__sleep_ms(100);
        }
        PQfinish(su);
        su = NULL;
    }
    umount2(dir, MNT_DETACH);
    rmdir(dir);
}

static void admin(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        CHECK_FAIL("%s: %s", sql, PQerrorMessage(conn));
    PQclear(r);
}

static int insert_many(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    atomic_fetch_add(&work_calls, 1);
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s SELECT g, repeat('x', 2000) FROM generate_series(1, 5000) g",
             table);
    int64_t rc = dbs_exec(s, sql, NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

static int insert_one(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (-1, 'after')", table);
    int64_t rc = dbs_exec(s, sql, NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: mounting a tmpfs needs root\n");
        return 77;
    }
    const char *pgdir = getenv("DBSCOPE_PG_DIR");
    CHECK(pgdir != NULL);
    char super[1024];
    read_line(pgdir, "super_url", super, sizeof super);
    struct passwd *pw = getpwnam("postgres");
    CHECK(pw != NULL);

    CHECK(mkdtemp(dir) != NULL);
    CHECK(chmod(dir, 0755) == 0);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=4m,mode=0700") != 0)
        CHECK_FAIL("mount tmpfs on %s: %s", dir, strerror(errno));
    atexit(cleanup);
    CHECK(chown(dir, pw->pw_uid, pw->pw_gid) == 0);
    char sql[512];
    snprintf(ts, sizeof ts, "full_ts_%ld", (long)getpid());
    snprintf(table, sizeof table, "full_t_%ld", (long)getpid());

    /* Administration outside any transaction, as the superuser. */
    su = PQconnectdb(super);
    CHECK(PQstatus(su) == CONNECTION_OK);
    snprintf(sql, sizeof sql, "CREATE TABLESPACE %s LOCATION '%s'", ts, dir);
    admin(su, sql);
    snprintf(sql, sizeof sql, "GRANT CREATE ON TABLESPACE %s TO dbscope", ts);
    admin(su, sql);

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = test_url("pg_full");
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.retry_max = 2;
    cfg.retry_base_ms = 1;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int, v text) TABLESPACE %s", table, ts);
    run_sql(p, sql);
    /* Fill it: each unit adds about 10 MB, the file system holds 4. */
    dbs_stats st0 = stats_of(p);
    int rc = dbs_transact(p, NULL, insert_many, NULL, &err);
    fprintf(stderr, "full tablespace: %d [%s] %s (runs %d)\n", rc, err.sqlstate, err.message,
            atomic_load(&work_calls));
    CHECK_EQ(rc, DBS_EFULL);
    CHECK_EQ(err.code, DBS_EFULL);
    CHECK_STR(err.sqlstate, "53100");
    CHECK(dbs_error_is_transient(&err));
    CHECK_EQ(atomic_load(&work_calls), 3); /* retried */
    CHECK_EQ(stats_of(p).retries - st0.retries, 2);
    dbs_session *s = open_ok(p);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0); /* nothing stored */
    dbs_session_close(s);
    /* Space freed (the file system grown): the same connection writes
     * again. */
    if (mount("tmpfs", dir, "tmpfs", MS_REMOUNT, "size=64m,mode=0700") != 0)
        CHECK_FAIL("remount %s: %s", dir, strerror(errno));
    CHECK_EQ(dbs_transact(p, NULL, insert_one, NULL, &err), DBS_OK);
    dbs_stats st1 = stats_of(p);
    CHECK_EQ(st1.created, st0.created);
    CHECK_EQ(st1.closed, st0.closed);

    dbs_pool_close(p);
    cleanup();
    fprintf(stderr, "ok\n");
    return 0;
}
