/* Killed backends under load (pg_terminate_backend from a superuser) and,
 * with an argument "restart", a server restart under load: no unit of work
 * fails except ones whose COMMIT was in flight (DBS_ECOMMIT_UNKNOWN, which
 * must not be retried), dead connections are never handed out as good, and
 * after the restart the pool is back to its configured size by itself. */
#include "common.h"

enum { THREADS = 8, POOL = 4 };

static dbs_pool *pool;
static char tbl[64], appname[64];
static atomic_int stop, done_units, failures, commit_unknown;

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

static void *worker(void *arg)
{
    int64_t base = (intptr_t)arg * 1000000;
    for (int64_t k = 0; !atomic_load(&stop); k++) {
        int64_t id = base + k;
        dbs_error err;
        int rc = dbs_transact(pool, NULL, unit, &id, &err);
        if (rc == DBS_ECOMMIT_UNKNOWN)
            atomic_fetch_add(&commit_unknown, 1);
        else if (rc != DBS_OK) {
            fprintf(stderr, "unit failed: %s\n", err.message);
            atomic_fetch_add(&failures, 1);
        } else
            atomic_fetch_add(&done_units, 1);
    }
    return NULL;
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

    pthread_t th[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)i) == 0);

    if (restart) {
        WAIT_UNTIL(atomic_load(&done_units) > 50, 30000);
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "%s%s -D %s/data -m fast -w -t 60 restart >/dev/null 2>&1",
                 getuid() == 0 ? "runuser -u postgres -- " : "", pg_ctl, dir);
        CHECK_EQ(system(cmd), 0);
        int before = atomic_load(&done_units);
        WAIT_UNTIL(atomic_load(&done_units) > before + 100, 60000);
    } else {
        dbs_config sc;
        dbs_config_init(&sc);
        sc.url = super_url;
        sc.pool_size = 1;
        dbs_pool *su = dbs_pool_open(&sc, &err);
        if (!su)
            CHECK_FAIL("superuser pool: %s", err.message);
        for (int round = 0; round < 10; round++) {
            int before = atomic_load(&done_units);
            WAIT_UNTIL(atomic_load(&done_units) > before + 20, 30000);
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
        int before = atomic_load(&done_units);
        WAIT_UNTIL(atomic_load(&done_units) > before + 50, 30000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    printf(
        "units done %d, commit outcome unknown %d, failed %d, retries %llu\n",
        atomic_load(&done_units), atomic_load(&commit_unknown),
        atomic_load(&failures), (unsigned long long)stats_of(pool).retries);
    CHECK_EQ(atomic_load(&failures), 0);
    CHECK_INT(stats_of(pool).retries, >=, 1);

    /* Back to full size by itself, and every connection works. */
    WAIT_UNTIL(stats_of(pool).size == POOL, 30000);
    CHECK_EQ(stats_of(pool).size, POOL);
    dbs_session *ss[POOL];
    for (int i = 0; i < POOL; i++) {
        ss[i] = dbs_session_open(pool, NULL, &err);
        if (!ss[i])
            CHECK_FAIL("session %d: %s", i, err.message);
        CHECK_EQ(query_int(ss[i], "SELECT 1", NULL, 0), 1);
    }
    for (int i = 0; i < POOL; i++)
        dbs_session_close(ss[i]);

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    return 0;
}
