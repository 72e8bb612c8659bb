/* Killed backends under load (pg_terminate_backend from a superuser) and,
 * with an argument "restart", a server restart under load: no unit of work
 * fails except ones whose COMMIT was in flight (DBS_ECOMMIT_UNKNOWN, which
 * must not be retried), dead connections are never handed out as good, and
 * after the restart the pool is back to its configured size by itself. */
#include "common.h"

enum { THREADS = 8, POOL = 4 };

static dbs_pool *pool;
static char tbl[64], appname[64];
static test_load load;

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    int64_t id = *(int64_t *)arg;
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES ($1)", tbl);
    dbs_value v[] = {DBS_INT(id)};
    int64_t rc = dbs_exec(s, sql, v, 1, err);
    if (rc < 0)
        return (int)rc;
    rc = dbs_exec(s, "SELECT pg_sleep(0.002)", NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

int main(int argc, char **argv)
{
    int restart = argc > 1 && !strcmp(argv[1], "restart");
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    char super_url[1024], pg_ctl[512];
    read_line(dir, "super_url", super_url, sizeof super_url);
    read_line(dir, "pg_ctl", pg_ctl, sizeof pg_ctl);

    snprintf(appname, sizeof appname, "failover_%ld", (long)getpid());
    char url[2048];
    snprintf(url, sizeof url, "%s&application_name=%s",
             test_url("test_pg_failover"), appname);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = POOL;
    cfg.min_idle = POOL;
    cfg.max_overflow = 0;
    cfg.retry_max = 10;
    cfg.housekeeping_interval_ms = 100;
    cfg.circuit_threshold = 0;
    dbs_error err;
    pool = dbs_pool_open(&cfg, &err);
    if (!pool)
        CHECK_FAIL("open: %s", err.message);
    snprintf(tbl, sizeof tbl, "failover_%ld", (long)getpid());
    char sql[512];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id bigint PRIMARY KEY)", tbl);
    run_sql(pool, sql);

    load_start(&load, pool, unit, THREADS);

    if (restart) {
        WAIT_UNTIL(atomic_load(&load.done) > 50, 30000);
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "%s%s -D %s/data -m fast -w -t 60 restart >/dev/null 2>&1",
                 getuid() == 0 ? "runuser -u postgres -- " : "", pg_ctl, dir);
        CHECK_EQ(system(cmd), 0);
        int before = atomic_load(&load.done);
        WAIT_UNTIL(atomic_load(&load.done) > before + 100, 60000);
    } else {
        dbs_config sc;
        dbs_config_init(&sc);
        sc.url = super_url;
        sc.pool_size = 1;
        dbs_pool *su = dbs_pool_open(&sc, &err);
        if (!su)
            CHECK_FAIL("superuser pool: %s", err.message);
        for (int round = 0; round < 10; round++) {
            int before = atomic_load(&load.done);
            WAIT_UNTIL(atomic_load(&load.done) > before + 20, 30000);
            dbs_session *s = dbs_session_open(su, NULL, &err);
            CHECK(s != NULL);
            dbs_value v[] = {DBS_TEXT(appname)};
            int64_t killed =
                query_int(s,
                          "SELECT count(pg_terminate_backend(pid)) FROM "
                          "pg_stat_activity WHERE application_name = $1",
                          v, 1);
            CHECK_INT(killed, >=, 1);
            dbs_session_close(s);
        }
        dbs_pool_close(su);
        int before = atomic_load(&load.done);
        WAIT_UNTIL(atomic_load(&load.done) > before + 50, 30000);
    }
    load_stop(&load, "failover");
    load_check_recovered(&load, POOL);

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    return 0;
}
