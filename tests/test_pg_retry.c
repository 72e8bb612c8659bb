/* Serialization failure (40001) and deadlock (40P01) between two real
 * concurrent transactions: dbs_transact retries the loser and both units
 * succeed. A lock not obtained in time (55P03: lock_timeout, NOWAIT) is
 * transient too, as on the other backends: retried until the lock is
 * free. */
#include "common.h"

static dbs_pool *pool;
static char tbl[64];
static atomic_int step; /* choreography of the first attempts */

static void wait_step(int want)
{
    int64_t end = now_ms() + 30000;
    while (atomic_load(&step) < want && now_ms() < end)
        dbs__sleep_ms(2);
    CHECK_INT(atomic_load(&step), >=, want);
}

/* ---- deadlock: A locks 1 then 2, B locks 2 then 1 ---- */

struct dl {
    int first, second;
    atomic_int attempts;
    atomic_int done;
    struct dl *other;
};

static int dl_unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct dl *d = arg;
    int attempt = atomic_fetch_add(&d->attempts, 1);
    /* The victim's retry waits for the survivor's commit: a retry quick
     * enough to take its first row back before the survivor, woken by the
     * victim's rollback, locks it would make a second, legitimate deadlock. */
    if (attempt > 0) {
        int64_t end = now_ms() + 30000;
        while (!atomic_load(&d->other->done) && now_ms() < end)
            dbs__sleep_ms(2);
    }
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE %s SET v = v + 1 WHERE id = $1", tbl);
    dbs_value a[] = {DBS_INT(d->first)}, b[] = {DBS_INT(d->second)};
    int64_t rc = dbs_exec(s, sql, a, 1, err);
    if (rc < 0)
        return (int)rc;
    if (attempt == 0) {
        atomic_fetch_add(&step, 1);
        wait_step(2); /* both hold their first lock */
    }
    rc = dbs_exec(s, sql, b, 1, err);
    return rc < 0 ? (int)rc : 0;
}

static void *dl_thread(void *arg)
{
    dbs_error err;
    int rc = dbs_transact(pool, NULL, dl_unit, arg, &err);
    if (rc != DBS_OK)
        CHECK_FAIL("deadlock unit: %s", err.message);
    atomic_store(&((struct dl *)arg)->done, 1);
    return NULL;
}

/* ---- serialization: A reads under REPEATABLE READ, B updates and commits,
 * A's update then fails with 40001 ---- */

static atomic_int a_attempts;

static int ser_a(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    int attempt = atomic_fetch_add(&a_attempts, 1);
    int64_t rc = dbs_exec(s, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                          NULL, 0, err);
    if (rc < 0)
        return (int)rc;
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 1", tbl);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, err);
    if (!r)
        return err->code;
    dbs_rows_close(r);
    if (attempt == 0) {
        atomic_store(&step, 11);
        wait_step(12); /* B committed its update */
    }
    snprintf(sql, sizeof sql, "UPDATE %s SET v = v + 10 WHERE id = 1", tbl);
    rc = dbs_exec(s, sql, NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

static int ser_b(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE %s SET v = v + 100 WHERE id = 1", tbl);
    int64_t rc = dbs_exec(s, sql, NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

static void *ser_a_thread(void *arg)
{
    (void)arg;
    dbs_error err;
    if (dbs_transact(pool, NULL, ser_a, NULL, &err) != DBS_OK)
        CHECK_FAIL("serialization unit: %s", err.message);
    return NULL;
}

/* ---- a unit that committed part of its work is never run again ---- */

static atomic_int part_attempts;

static int commit_then_lose_connection(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    atomic_fetch_add(&part_attempts, 1);
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1000 + $1, 0)", tbl);
    dbs_value v[] = {DBS_INT(atomic_load(&part_attempts))};
    int64_t rc = dbs_exec(s, sql, v, 1, err);
    if (rc < 0)
        return (int)rc;
    int c = dbs_commit(s, err);
    if (c != DBS_OK)
        return c;
    /* The server ends this backend: DBS_ECONNECT, transient on its own,
     * but the unit's first part is already committed. */
    rc = dbs_exec(s, "SELECT pg_terminate_backend(pg_backend_pid())", NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

static void test_no_retry_after_commit(void)
{
    atomic_store(&part_attempts, 0);
    dbs_error err;
    int rc = dbs_transact(pool, NULL, commit_then_lose_connection, NULL, &err);
    CHECK_EQ(rc, DBS_ECONNECT);
    CHECK_EQ(atomic_load(&part_attempts), 1);
    dbs_session *s = dbs_session_open(pool, NULL, NULL);
    CHECK(s);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id > 1000", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 1); /* once, not twice */
    dbs_session_close(s);
}

/* ---- a lock not obtained in time: lock_timeout and NOWAIT ---- */

static dbs_session *holder; /* holds row 2's lock until released */
static int lt_attempts;

static int lock_timeout_unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    if (lt_attempts++ == 1)
        CHECK_OK(dbs_rollback(holder, err), err);
    if (dbs_exec(s, "SET LOCAL lock_timeout = '200ms'", NULL, 0, err) < 0)
        return err->code;
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE %s SET v = v + 1000 WHERE id = 2", tbl);
    int64_t rc = dbs_exec(s, sql, NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

static void test_lock_timeout(void)
{
    dbs_error err;
    char sql[200];
    holder = dbs_session_open(pool, NULL, &err);
    CHECK(holder);
    snprintf(sql, sizeof sql, "UPDATE %s SET v = v + 1 WHERE id = 2", tbl);
    CHECK_OK(dbs_exec(holder, sql, NULL, 0, &err), &err);
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    CHECK(s);
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 2 FOR UPDATE NOWAIT", tbl);
    CHECK(dbs_query(s, sql, NULL, 0, &err) == NULL);
    CHECK_EQ(err.code, DBS_ERETRYABLE);
    CHECK_STR(err.sqlstate, "55P03");
    CHECK(dbs_error_is_transient(&err));
    dbs_session_close(s);
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 2", tbl);
    int64_t before = query_int(holder, sql, NULL, 0);

    lt_attempts = 0;
    CHECK_OK(dbs_transact(pool, NULL, lock_timeout_unit, NULL, &err), &err);
    CHECK_EQ(lt_attempts, 2);
    dbs_session_close(holder);
    s = dbs_session_open(pool, NULL, NULL);
    CHECK(s);
    CHECK_EQ(query_int(s, sql, NULL, 0), before - 1 + 1000); /* the holder's rolled back */
    dbs_session_close(s);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 4;
    cfg.retry_max = 5;
    pool = open_pool("test_pg_retry", &cfg);
    snprintf(tbl, sizeof tbl, "retry_%ld", (long)getpid());
    char sql[200];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int PRIMARY KEY, v int)",
             tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1, 0), (2, 0)", tbl);
    run_sql(pool, sql);

    struct dl da = {1, 2, 0, 0, NULL}, db = {2, 1, 0, 0, NULL};
    da.other = &db;
    db.other = &da;
    pthread_t t1, t2;
    CHECK(pthread_create(&t1, NULL, dl_thread, &da) == 0);
    CHECK(pthread_create(&t2, NULL, dl_thread, &db) == 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK_EQ(atomic_load(&da.attempts) + atomic_load(&db.attempts), 3);
    dbs_session *s = dbs_session_open(pool, NULL, NULL);
    snprintf(sql, sizeof sql, "SELECT sum(v) FROM %s", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4); /* both units, once each */
    dbs_session_close(s);
    uint64_t retries = stats_of(pool).retries;
    CHECK_INT(retries, >=, 1);

    atomic_store(&step, 10);
    CHECK(pthread_create(&t1, NULL, ser_a_thread, NULL) == 0);
    wait_step(11);
    dbs_error err;
    CHECK_OK(dbs_transact(pool, NULL, ser_b, NULL, &err), &err);
    atomic_store(&step, 12);
    pthread_join(t1, NULL);
    CHECK_EQ(atomic_load(&a_attempts), 2);
    CHECK_INT(stats_of(pool).retries, >=, retries + 1);
    s = dbs_session_open(pool, NULL, NULL);
    snprintf(sql, sizeof sql, "SELECT v FROM %s WHERE id = 1", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 2 + 100 + 10);
    dbs_session_close(s);

    test_no_retry_after_commit();
    test_lock_timeout();

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    return 0;
}
