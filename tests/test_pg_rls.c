/* Row-level security with the request context: two tenants, 16 threads,
 * thousands of transactions over a pool smaller than the thread count (so
 * connections pass between tenants all the time). No transaction ever sees
 * a row of the other tenant, and rows it writes are its own tenant's. */
#include "common.h"

enum { THREADS = 16, UNITS = 200 };

static dbs_pool *pool;
static char tbl[64];
static atomic_int foreign_rows, failures;

struct work {
    const char *tenant;
    int64_t id;
};

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct work *w = arg;
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, tenant) VALUES ($1, $2)",
             tbl);
    dbs_value v[] = {DBS_INT(w->id), DBS_TEXT(w->tenant)};
    int64_t rc = dbs_exec(s, sql, v, 2, err);
    if (rc < 0)
        return (int)rc;
    snprintf(sql, sizeof sql, "SELECT tenant FROM %s ORDER BY id DESC LIMIT 50",
             tbl);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, err);
    if (!r)
        return err->code;
    int n;
    while ((n = dbs_rows_next(r, err)) == 1)
        if (strcmp(dbs_rows_text(r, 0, NULL), w->tenant) != 0)
            atomic_fetch_add(&foreign_rows, 1);
    dbs_rows_close(r);
    return n < 0 ? n : 0;
}

static void *worker(void *arg)
{
    intptr_t i = (intptr_t)arg;
    const char *tenant = i % 2 ? "tenant_b" : "tenant_a";
    dbs_context ctx = {
        .request_id = "rls", .user_id = "u", .tenant_id = tenant};
    for (int k = 0; k < UNITS; k++) {
        struct work w = {tenant, (int64_t)i * 100000 + k};
        dbs_error err;
        if (dbs_transact(pool, &ctx, unit, &w, &err) != DBS_OK) {
            fprintf(stderr, "transact: %s\n", err.message);
            atomic_fetch_add(&failures, 1);
        }
    }
    return NULL;
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 6;
    cfg.max_overflow = 0;
    cfg.ctx_tenant_setting = "app.tenant_id";
    pool = open_pool("test_pg_rls", &cfg);
    snprintf(tbl, sizeof tbl, "rls_%ld", (long)getpid());
    char sql[256];
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    CHECK(s != NULL);
    {
        char one[256];
        snprintf(
            one, sizeof one,
            "CREATE TABLE %s (id bigint PRIMARY KEY, tenant text NOT NULL)",
            tbl);
        CHECK_OK(dbs_exec(s, one, NULL, 0, &err), &err);
        snprintf(one, sizeof one, "ALTER TABLE %s ENABLE ROW LEVEL SECURITY",
                 tbl);
        CHECK_OK(dbs_exec(s, one, NULL, 0, &err), &err);
        snprintf(one, sizeof one, "ALTER TABLE %s FORCE ROW LEVEL SECURITY",
                 tbl);
        CHECK_OK(dbs_exec(s, one, NULL, 0, &err), &err);
        snprintf(one, sizeof one,
                 "CREATE POLICY p ON %s USING (tenant = "
                 "current_setting('app.tenant_id', "
                 "true)) WITH CHECK (tenant = current_setting('app.tenant_id', "
                 "true))",
                 tbl);
        CHECK_OK(dbs_exec(s, one, NULL, 0, &err), &err);
    }
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);

    pthread_t th[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&failures), 0);
    CHECK_EQ(atomic_load(&foreign_rows), 0);

    /* Without a tenant the policy shows nothing at all. */
    s = dbs_session_open(pool, NULL, &err);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0);
    dbs_session_close(s);
    /* Each tenant sees exactly its own rows. */
    dbs_context a = {.tenant_id = "tenant_a"};
    s = dbs_session_open(pool, &a, &err);
    CHECK_EQ(query_int(s, sql, NULL, 0), (THREADS / 2) * UNITS);
    dbs_session_close(s);

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    return 0;
}
