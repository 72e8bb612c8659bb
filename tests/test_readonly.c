/* Read-only sessions without replicas, on both backends: a write fails with
 * DBS_ESQL, the switch is off again for the next session on the same
 * connection; on SQLite, dbscope's own toggling of query_only does not make
 * the connection dirty (no reopen), while a session's own PRAGMA still
 * does. And the replica settings' checks. */
#include "common.h"

static int64_t one(dbs_session *s, const char *sql)
{
    return query_int(s, sql, NULL, 0);
}

enum backend { SQLITE, PG, MYSQL };

static void test_read_only(enum backend be)
{
    bool pg = be == PG;
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("readonly", &cfg);
    const char *t = table_name("ro_t");
    char sql[200];
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (id %s PRIMARY KEY, v INTEGER)", t,
             pg ? "serial" : be == MYSQL ? "INTEGER AUTO_INCREMENT" : "INTEGER");
    run_sql(p, sql);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    snprintf(sql, sizeof sql, "INSERT INTO %s (v) VALUES (1)", t);
    CHECK_OK(dbs_exec(s, sql, NULL, 0, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    /* total_changes() counts since the connection opened: a reopen shows */
    int64_t total = be == SQLITE ? one(s, "SELECT total_changes()") : 0;
    dbs_session_close(s);

    s = dbs_session_open_ro(p, NULL, &err);
    CHECK(s != NULL);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", t);
    CHECK_EQ(one(s, sql), 1);
    snprintf(sql, sizeof sql, "INSERT INTO %s (v) VALUES (2)", t);
    CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), DBS_ESQL);
    if (be == SQLITE)
        CHECK_CONTAINS(err.message, "readonly");
    else
        CHECK_STR(err.sqlstate, "25006");
    dbs_session_close(s);
    /* the same connection, read-write again (pool_size 1) */
    s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    CHECK_OK(dbs_exec(s, sql, NULL, 0, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    if (be == SQLITE) {
        CHECK_EQ(one(s, "PRAGMA query_only"), 0);
        dbs_session_close(s);
        /* not reopened by the toggling: the connection's own state lives */
        s = dbs_session_open_ro(p, NULL, &err);
        CHECK(s != NULL);
        CHECK_EQ(one(s, "SELECT total_changes()"), total + 1);
        dbs_session_close(s);
        s = dbs_session_open(p, NULL, &err);
        CHECK_EQ(one(s, "SELECT total_changes()"), total + 1);
        /* a session's own PRAGMA still marks the connection dirty */
        CHECK_OK(dbs_exec(s, "PRAGMA query_only=1", NULL, 0, &err), &err);
        dbs_session_close(s);
        s = dbs_session_open(p, NULL, &err);
        CHECK_EQ(one(s, "PRAGMA query_only"), 0);
        CHECK_EQ(one(s, "SELECT total_changes()"), 0); /* reopened */
    } else if (pg) {
        CHECK_EQ(one(s, "SELECT current_setting('transaction_read_only') = 'on'"), 0);
    }
    dbs_session_close(s);

    /* dbs_transact_ro: the same, as a unit */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.replica_lag_ms, -1);
    CHECK_EQ(st.ro_fallbacks, 0);
    dbs_pool_close(p);
}

static void test_config(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    CHECK_EQ(cfg.replica_fallback, 1);
    CHECK_EQ(cfg.replica_max_lag_ms, 0);
    CHECK(cfg.replica_url == NULL);
    dbs_error err;
    cfg.url = "sqlite::memory:";
    cfg.replica_url = "postgresql://u@h/db";
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "replica_url");
    cfg.replica_url = NULL;
    cfg.replica_max_lag_ms = -1;
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_CONTAINS(err.message, "replica_max_lag_ms");
    cfg.replica_max_lag_ms = 0;
    cfg.replica_fallback = 2;
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_CONTAINS(err.message, "replica_fallback");
#ifdef DBSCOPE_WITH_PG
    /* libpq's syntax: the ports must pair with the hosts; the password
     * is never quoted */
    dbs_config_init(&cfg);
    cfg.url = "postgresql://u:secretpw@127.0.0.1:1/db?connect_timeout=1";
    cfg.lazy_open = 1;
    cfg.log_events = 0;
    cfg.replica_url = "host=a,b,c port=1,2 password=secretpw";
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "3 hosts but 2 ports");
    CHECK(strstr(err.message, "secretpw") == NULL);
    cfg.replica_url = "host=a port";
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    /* replicas down or absent: a lazy pool opens, read-only sessions fall
     * back to the primary, which is down too here */
    cfg.replica_url = "postgresql://u:secretpw@127.0.0.1:1,127.0.0.1:2/db?connect_timeout=1";
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("lazy open: %s", err.message);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.replica_lag_ms, -1);
    dbs_session *s = dbs_session_open_ro(p, NULL, &err);
    CHECK(s == NULL);
    CHECK(err.code == DBS_ECONNECT || err.code == DBS_EUNAVAILABLE);
    CHECK_EQ(stats_of(p).ro_fallbacks, 1);
    static char text[1 << 16];
    CHECK_INT(dbs_pool_metrics(p, text, sizeof text), >, 0);
    CHECK_CONTAINS(text, "host=\"127.0.0.1:2\"");
    CHECK(strstr(text, "secretpw") == NULL);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    dbs_pool_close(p);
#endif
}

int main(void)
{
    const char *url = test_url("readonly");
    test_read_only(test_is_pg(url) ? PG : test_is_mysql(url) ? MYSQL : SQLITE);
    test_config();
    puts("test_readonly: ok");
    return 0;
}
