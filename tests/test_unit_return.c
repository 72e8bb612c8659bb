/* What dbs_transact returns for what a unit of work returns: always
 * err->code, 0 or a negative dbs_code. A positive value (a row count, a
 * "not found" of the caller's own) or a number that is no dbs_code counts
 * as DBS_ESQL; a dbs_code the unit returns without filling err is kept and
 * retried when it is transient. Both dbs_transact and dbs_transact_ro. */
#include "common.h"

static atomic_int calls;

static int returns_arg(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)err;
    atomic_fetch_add(&calls, 1);
    return *(int *)arg;
}

typedef int (*transact_fn)(dbs_pool *, const dbs_context *, dbs_work_fn, void *,
                           dbs_error *);

static int rw(dbs_pool *p, const dbs_context *c, dbs_work_fn w, void *a, dbs_error *e)
{
    return dbs_transact(p, c, w, a, e);
}

static int ro(dbs_pool *p, const dbs_context *c, dbs_work_fn w, void *a, dbs_error *e)
{
    return dbs_transact_ro(p, c, w, a, e);
}

static void check_variant(dbs_pool *p, transact_fn fn, const char *name)
{
    const int positives[] = {1, 42, 2147483647};
    for (size_t i = 0; i < sizeof positives / sizeof positives[0]; i++) {
        int v = positives[i];
        dbs_error err;
        memset(&err, 0, sizeof err);
        atomic_store(&calls, 0);
        int rc = fn(p, NULL, returns_arg, &v, &err);
        fprintf(stderr, "%s: unit returned %d -> %d (%s)\n", name, v, rc, err.message);
        CHECK_EQ(rc, DBS_ESQL);
        CHECK_EQ(err.code, rc);
        CHECK_CONTAINS(err.message, "returned");
        CHECK_EQ(atomic_load(&calls), 1); /* not transient: run once */
    }
    /* A negative number that is no dbs_code. */
    int v = -1000;
    dbs_error err;
    atomic_store(&calls, 0);
    int rc = fn(p, NULL, returns_arg, &v, &err);
    CHECK_EQ(rc, DBS_ESQL);
    CHECK_EQ(err.code, rc);
    CHECK_EQ(atomic_load(&calls), 1);
    /* A dbs_code without err filled: kept, and retried when transient. */
    v = DBS_ECONSTRAINT;
    atomic_store(&calls, 0);
    rc = fn(p, NULL, returns_arg, &v, &err);
    CHECK_EQ(rc, DBS_ECONSTRAINT);
    CHECK_EQ(err.code, rc);
    CHECK_EQ(atomic_load(&calls), 1);
    v = DBS_ERETRYABLE;
    atomic_store(&calls, 0);
    rc = fn(p, NULL, returns_arg, &v, &err);
    CHECK_EQ(rc, DBS_ERETRYABLE);
    CHECK_EQ(err.code, rc);
    CHECK_EQ(atomic_load(&calls), 3); /* retry_max = 2: three runs */
    v = 0;
    rc = fn(p, NULL, returns_arg, &v, &err);
    CHECK_EQ(rc, DBS_OK);
    CHECK_EQ(err.code, DBS_OK);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 2;
    cfg.retry_max = 2;
    cfg.retry_base_ms = 1;
    cfg.retry_cap_ms = 2;
    dbs_pool *p = open_pool("unit_return", &cfg);
    check_variant(p, rw, "dbs_transact");
    check_variant(p, ro, "dbs_transact_ro");
    dbs_pool_close(p);
    fprintf(stderr, "ok\n");
    return 0;
}
