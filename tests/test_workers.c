/* The pool's worker threads (src/workers.c), which run an event loop's
 * units on backends without non-blocking methods: a unit commits and its
 * rows are read on another thread; a failing unit rolls back whole; jobs
 * run in FIFO order; a read-only unit is enforced; a COMMIT the database
 * refuses counts as sent; a unit queued past its deadline, or waiting for
 * a connection past it, ends DBS_ETIMEOUT; a queued unit cancelled ends at
 * once, a running one is interrupted on the server (its statement runs
 * forever otherwise) and its connection discarded; shutting the pool down
 * ends every unit and joins the threads. SQLite, PostgreSQL, MariaDB. */
#include "common.h"
#include "workers.h"

#include <dirent.h>

/* What a loop's mailbox would get: the units done, in order. */
typedef struct box {
    pthread_mutex_t mu;
    dbs__aunit *done[64];
    pthread_t thread[64];
    atomic_int n;
} box;

static box mbox = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void posted(dbs__aunit *u, void *arg)
{
    box *b = arg;
    pthread_mutex_lock(&b->mu);
    int i = atomic_load(&b->n);
    if (i < 64) {
        b->done[i] = u;
        b->thread[i] = pthread_self();
    }
    atomic_store(&b->n, i + 1);
    pthread_mutex_unlock(&b->mu);
}

static void box_reset(void)
{
    pthread_mutex_lock(&mbox.mu);
    atomic_store(&mbox.n, 0);
    pthread_mutex_unlock(&mbox.mu);
}

static void wait_done(int n)
{
    WAIT_UNTIL(atomic_load(&mbox.n) >= n, 600000);
    CHECK_EQ(atomic_load(&mbox.n), n);
}

typedef struct unit_buf {
    dbs__aunit u;
    dbs__astmt st[4];
    dbs_value v[4];
} unit_buf;

static void unit_init(unit_buf *b, const char *const *sql, size_t n)
{
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < n; i++)
        b->st[i].sql = sql[i];
    b->u.stmts = b->st;
    b->u.n = n;
}

static void submit(dbs_pool *p, unit_buf *b, int64_t deadline)
{
    CHECK_EQ(dbs__workers_unit(p, &b->u, deadline, 0, __FILE__, __LINE__, __func__, posted, &mbox),
             DBS_OK);
}

static dbs_backend backend;

/* A statement that runs until it is stopped. */
static const char *forever(void)
{
    switch (backend) {
    case DBS_BACKEND_POSTGRESQL: return "SELECT pg_sleep(100000)";
    case DBS_BACKEND_MARIADB: return "SELECT SLEEP(100000)";
    default:
        return "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
               "SELECT count(*) FROM c";
    }
}

static int64_t count_rows(dbs_pool *p, const char *tbl)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
    dbs_session *s = open_ok(p);
    int64_t n = query_int(s, sql, NULL, 0);
    dbs_session_close(s);
    return n;
}

/* Waits until a unit holds a connection and its statement has had time to
 * reach the server (on MariaDB and PostgreSQL: seen running there). */
static void wait_running(dbs_pool *p, int in_use)
{
    WAIT_UNTIL(stats_of(p).in_use >= in_use, 30000);
    CHECK_INT(stats_of(p).in_use, >=, in_use);
    const char *probe = backend == DBS_BACKEND_POSTGRESQL
                            ? "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                              "'SELECT pg_sleep(100000)%'"
                        : backend == DBS_BACKEND_MARIADB
                            ? "SELECT count(*) FROM information_schema.processlist WHERE info "
                              "LIKE 'SELECT SLEEP(100000)%'"
                            : NULL;
    if (!probe) {
        dbs__sleep_ms(300); /* SQLite: nothing to look at from outside */
        return;
    }
    int64_t seen = 0;
    for (int i = 0; i < 3000 && seen < in_use; i++) {
        dbs_session *s = open_ok(p);
        seen = query_int(s, probe, NULL, 0);
        dbs_session_close(s);
        if (seen < in_use)
            dbs__sleep_ms(10);
    }
    CHECK_INT(seen, >=, in_use);
}

/* A job that holds its worker for a while (bounded), then says it ended. */
static atomic_int slow_started, slow_ended;

static void slow_job(void *arg)
{
    (void)arg;
    atomic_store(&slow_started, 1);
    dbs__sleep_ms(1000);
    atomic_store(&slow_ended, 1);
}

static void *shutdown_thread(void *arg)
{
    (void)dbs_pool_shutdown(arg, 0);
    return NULL;
}

static int plain_order[32];
static atomic_int plain_n;

static void plain_job(void *arg)
{
    pthread_mutex_lock(&mbox.mu);
    int i = atomic_load(&plain_n);
    if (i < 32)
        plain_order[i] = (int)(intptr_t)arg;
    atomic_store(&plain_n, i + 1);
    pthread_mutex_unlock(&mbox.mu);
}

/* ---- a loop opened as the pool shuts down ---- */

/* A thread that has been joined may still be listed for a moment: the
 * count is awaited, then compared. */
static void threads_back_to(int n)
{
    WAIT_UNTIL(count_threads() == n, 10000);
    CHECK_EQ(count_threads(), n);
}

struct opener {
    dbs_pool *pool;
    atomic_int started;
    bool opened;
    dbs_error err;
};

static void *opener_main(void *v)
{
    struct opener *o = v;
    atomic_store(&o->started, 1);
    dbs_loop *l = dbs_loop_open(o->pool, NULL, &o->err);
    o->opened = l != NULL;
    dbs_loop_close(l);
    return NULL;
}

/* dbs_loop_open on a pool with no worker threads yet, racing its
 * shutdown: a loop whose open found the pool shut down gets DBS_ECLOSED
 * and starts no thread; one opened before has its threads joined by the
 * shutdown. Either way none is left once the shutdown returned and the
 * open is over. First with the open held right past its look at the pool
 * (dbs__fault.workers_gate) while the shutdown runs: it started the
 * workers after the shutdown had joined none before, and they outlived
 * the pool; then in rounds, as they come. */
static void test_loop_open_racing_shutdown(const dbs_config *cfg0)
{
    int before = count_threads();
    dbs_config cfg = *cfg0;
    dbs_pool *p = open_pool("test_workers", &cfg);
    int gated = atomic_load(&dbs__fault.workers_gated);
    atomic_store(&dbs__fault.workers_gate, 1);
    struct opener o = {.pool = p};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, opener_main, &o), 0);
    WAIT_UNTIL(atomic_load(&dbs__fault.workers_gated) > gated, 30000);
    CHECK_INT(atomic_load(&dbs__fault.workers_gated), >, gated);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    atomic_store(&dbs__fault.workers_gate, 0);
    pthread_join(th, NULL);
    CHECK(!o.opened);
    CHECK_EQ(o.err.code, DBS_ECLOSED);
    threads_back_to(before); /* the housekeeper's gone with the shutdown */
    dbs_pool_close(p);
    threads_back_to(before);

    int opened = 0;
    for (int round = 0; round < 60; round++) {
        p = open_pool("test_workers", &cfg);
        o = (struct opener){.pool = p};
        CHECK_EQ(pthread_create(&th, NULL, opener_main, &o), 0);
        /* the shutdown a little later each round, across the open's steps */
        while (!atomic_load(&o.started))
            ;
        for (volatile int spin = 0; spin < (round % 20) * 2000; spin++)
            ;
        /* a loop open keeps the pool (its hold) until it closes: the drain
         * waits for that */
        CHECK_EQ(dbs_pool_shutdown(p, -1), 0);
        pthread_join(th, NULL);
        if (o.opened)
            opened++;
        else
            CHECK_EQ(o.err.code, DBS_ECLOSED);
        threads_back_to(before);
        dbs_pool_close(p);
    }
    printf("loop opens racing shutdown: %d of 60 opened first\n", opened);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 3;
    cfg.max_overflow = 0;
    /* far past the test's timeout: only a unit's own deadline ends a wait */
    cfg.acquire_timeout_ms = 3600 * 1000;
    dbs_pool *p = open_pool("test_workers", &cfg);
    backend = dbs_pool_backend(p);
    const char *tbl = table_name("tw");
    char sql[6][256];
    snprintf(sql[0], sizeof sql[0], "DROP TABLE IF EXISTS %s", tbl);
    run_sql(p, sql[0]);
    snprintf(sql[0], sizeof sql[0], "CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)", tbl);
    run_sql(p, sql[0]);
    snprintf(sql[0], sizeof sql[0], "INSERT INTO %s (id, v) VALUES ($1, $2)", tbl);
    snprintf(sql[1], sizeof sql[1], "SELECT id, v FROM %s ORDER BY id", tbl);
    snprintf(sql[2], sizeof sql[2], "UPDATE %s SET v = 'u' WHERE id >= $1", tbl);
    dbs_error err;

    /* one worker: FIFO is observable */
    CHECK_EQ(dbs__workers_start(p, 0, &err), DBS_EMISUSE);
    CHECK_OK(dbs__workers_start(p, 1, &err), &err);
    CHECK_OK(dbs__workers_start(p, 1, &err), &err); /* idempotent */

    /* a unit: INSERT, UPDATE, SELECT; its rows read on this thread */
    unit_buf a;
    const char *s1[] = {sql[0], sql[0], sql[2], sql[1]};
    unit_init(&a, s1, 4);
    dbs_value ins1[] = {DBS_INT(1), DBS_TEXT("one")}, ins2[] = {DBS_INT(2), DBS_TEXT("two")};
    dbs_value upd[] = {DBS_INT(2)};
    a.st[0].params = ins1;
    a.st[0].n = 2;
    a.st[1].params = ins2;
    a.st[1].n = 2;
    a.st[2].params = upd;
    a.st[2].n = 1;
    dbs_context ctx = {.request_id = "req-1"};
    a.u.ctx = &ctx;
    box_reset();
    submit(p, &a, 0);
    wait_done(1);
    CHECK(mbox.done[0] == &a.u);
    CHECK(!pthread_equal(mbox.thread[0], pthread_self()));
    CHECK_EQ(a.u.rc, DBS_OK);
    CHECK(a.u.commit_sent);
    CHECK(a.st[0].rows == NULL && a.st[1].rows == NULL && a.st[2].rows == NULL);
    CHECK_EQ(a.st[0].affected, 1);
    CHECK_EQ(a.st[2].affected, 1);
    CHECK_EQ(a.st[3].affected, 0);
    dbs_rows *r = a.st[3].rows;
    CHECK(r != NULL && r->session == NULL);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int64_t id = 0;
    const char *t = NULL;
    CHECK_OK(dbs_rows_get_int64(r, 0, &id, &err), &err);
    CHECK_OK(dbs_rows_get_text(r, 1, &t, NULL, &err), &err);
    CHECK_EQ(id, 1);
    CHECK_STR(t, "one");
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_OK(dbs_rows_get_text(r, 1, &t, NULL, &err), &err);
    CHECK_STR(t, "u");
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    r->ops->close(r);
    CHECK_EQ(count_rows(p, tbl), 2);

    /* a failing statement: the whole unit rolls back, no rows kept */
    unit_buf f;
    const char *s2[] = {sql[0], sql[1], "SELECT no_such_column FROM no_such_table"};
    unit_init(&f, s2, 3);
    dbs_value ins3[] = {DBS_INT(3), DBS_TEXT("three")};
    f.st[0].params = ins3;
    f.st[0].n = 2;
    box_reset();
    submit(p, &f, 0);
    wait_done(1);
    CHECK_EQ(f.u.rc, DBS_ESQL);
    CHECK_EQ(f.u.err.code, DBS_ESQL);
    CHECK(!f.u.commit_sent);
    CHECK(f.st[1].rows == NULL);
    CHECK_EQ(count_rows(p, tbl), 2);

    /* FIFO: plain jobs and units in the order queued */
    atomic_store(&plain_n, 0);
    for (int i = 0; i < 16; i++)
        CHECK_EQ(dbs__workers_run(p, plain_job, (void *)(intptr_t)i), DBS_OK);
    WAIT_UNTIL(atomic_load(&plain_n) == 16, 30000);
    CHECK_EQ(atomic_load(&plain_n), 16);
    pthread_mutex_lock(&mbox.mu);
    for (int i = 0; i < 16; i++)
        CHECK_EQ(plain_order[i], i);
    pthread_mutex_unlock(&mbox.mu);
    unit_buf many[8];
    const char *s3[] = {"SELECT 1"};
    box_reset();
    for (int i = 0; i < 8; i++) {
        unit_init(&many[i], s3, 1);
        submit(p, &many[i], 0);
    }
    wait_done(8);
    for (int i = 0; i < 8; i++) {
        CHECK(mbox.done[i] == &many[i].u);
        CHECK_EQ(many[i].u.rc, DBS_OK);
        many[i].st[0].rows->ops->close(many[i].st[0].rows);
    }

    /* read-only: enforced by the database */
    unit_buf ro;
    const char *s4[] = {sql[0]};
    unit_init(&ro, s4, 1);
    dbs_value ins4[] = {DBS_INT(4), DBS_TEXT("four")};
    ro.st[0].params = ins4;
    ro.st[0].n = 2;
    ro.u.read_only = true;
    box_reset();
    submit(p, &ro, 0);
    wait_done(1);
    CHECK(ro.u.rc < 0);
    CHECK(!ro.u.commit_sent);
    CHECK_EQ(count_rows(p, tbl), 2);

    /* transaction options reach the session */
    unit_buf to;
    unit_init(&to, s3, 1);
    dbs_tx_options txo = {.isolation = DBS_ISOLATION_SERIALIZABLE};
    to.u.opt = &txo;
    box_reset();
    submit(p, &to, 0);
    wait_done(1);
    CHECK_EQ(to.u.rc, DBS_OK);
    to.st[0].rows->ops->close(to.st[0].rows);

    /* a COMMIT the database refuses (a deferred foreign key): sent */
    if (backend != DBS_BACKEND_MARIADB) {
        char ddl[2][256];
        snprintf(ddl[0], sizeof ddl[0], "DROP TABLE IF EXISTS %s_child", tbl);
        run_sql(p, ddl[0]);
        snprintf(ddl[0], sizeof ddl[0],
                 "CREATE TABLE %s_child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES "
                 "%s (id) DEFERRABLE INITIALLY DEFERRED)", tbl, tbl);
        run_sql(p, ddl[0]);
        snprintf(ddl[1], sizeof ddl[1], "INSERT INTO %s_child VALUES (1, 999)", tbl);
        unit_buf fk;
        const char *s5[] = {ddl[1]};
        unit_init(&fk, s5, 1);
        box_reset();
        submit(p, &fk, 0);
        wait_done(1);
        CHECK(fk.u.rc < 0);
        CHECK(fk.u.commit_sent);
        CHECK(fk.st[0].rows == NULL);
    }

    /* deadlines: passed while queued; passed while waiting for a connection */
    unit_buf late;
    unit_init(&late, s3, 1);
    box_reset();
    submit(p, &late, dbs__now_ns() - 1);
    wait_done(1);
    CHECK_EQ(late.u.rc, DBS_ETIMEOUT);
    dbs_session *held[3];
    for (int i = 0; i < 3; i++)
        held[i] = open_ok(p);
    unit_buf starved;
    unit_init(&starved, s3, 1);
    box_reset();
    submit(p, &starved, dbs__now_ns() + 300 * 1000000LL);
    wait_done(1); /* acquire_timeout_ms is an hour: the unit's own bound ended it */
    CHECK_EQ(starved.u.rc, DBS_ETIMEOUT);
    CHECK_CONTAINS(starved.u.err.message, "deadline");
    for (int i = 0; i < 3; i++)
        dbs_session_close(held[i]);

    /* cancel: one running forever, one queued behind it */
    unit_buf run, queued;
    const char *s6[] = {sql[0], forever()};
    unit_init(&run, s6, 2);
    dbs_value ins5[] = {DBS_INT(5), DBS_TEXT("five")};
    run.st[0].params = ins5;
    run.st[0].n = 2;
    unit_init(&queued, s3, 1);
    dbs_stats before = stats_of(p);
    box_reset();
    submit(p, &run, 0);
    submit(p, &queued, 0);
    wait_running(p, 1);
    dbs__workers_cancel(p, &queued.u, true);
    CHECK_EQ(atomic_load(&mbox.n), 1); /* done ran inside the cancel */
    CHECK(mbox.done[0] == &queued.u);
    CHECK_EQ(queued.u.rc, DBS_ECANCELED);
    dbs__workers_cancel(p, &queued.u, true); /* no longer held: nothing */
    dbs__workers_cancel(p, &run.u, true);
    wait_done(2);
    CHECK(mbox.done[1] == &run.u);
    CHECK_EQ(run.u.rc, DBS_ECANCELED);
    CHECK(!run.u.commit_sent);
    CHECK(run.st[1].rows == NULL);
    dbs__workers_cancel(p, &run.u, true); /* done already ran: nothing */
    CHECK_EQ(count_rows(p, tbl), 2);
    CHECK_INT(stats_of(p).invalidated, >, before.invalidated); /* not reused */

    /* more workers; shutdown with units running and queued: each ends,
     * the threads are joined, nothing new is taken */
    CHECK_OK(dbs__workers_start(p, 2, &err), &err);
    unit_buf r1, r2, q1;
    const char *s7[] = {forever()};
    unit_init(&r1, s7, 1);
    unit_init(&r2, s7, 1);
    unit_init(&q1, s3, 1);
    box_reset();
    submit(p, &r1, 0);
    submit(p, &r2, 0);
    submit(p, &q1, 0);
    wait_running(p, 2);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    CHECK_EQ(atomic_load(&mbox.n), 3);
    CHECK_EQ(r1.u.rc, DBS_ECLOSED);
    CHECK_EQ(r2.u.rc, DBS_ECLOSED);
    CHECK_EQ(q1.u.rc, DBS_ECLOSED);
    CHECK_EQ(dbs__workers_run(p, plain_job, NULL), DBS_ECLOSED);
    unit_buf after;
    unit_init(&after, s3, 1);
    CHECK_EQ(dbs__workers_unit(p, &after.u, 0, 0, __FILE__, __LINE__, __func__, posted, &mbox),
             DBS_ECLOSED);
    dbs_pool_close(p);

    /* Two shutdowns at once: the one that finds the other joining the
     * workers returns only once they are joined, for its caller may close
     * the pool and free it (the workers with it) next. It returned at
     * once before, a worker still in its job. */
    p = open_pool("test_workers", &cfg);
    CHECK_OK(dbs__workers_start(p, 1, &err), &err);
    CHECK_EQ(dbs__workers_run(p, slow_job, NULL), DBS_OK);
    WAIT_UNTIL(atomic_load(&slow_started), 30000);
    CHECK(atomic_load(&slow_started));
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, shutdown_thread, p), 0);
    WAIT_UNTIL(dbs__pool_closed(p), 30000);
    CHECK(dbs__pool_closed(p));
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    int ended = atomic_load(&slow_ended);
    CHECK_EQ(ended, 1);
    pthread_join(th, NULL);
    dbs_pool_close(p);

    test_loop_open_racing_shutdown(&cfg);

    /* a pool closed with its workers idle, and one that never had any */
    p = open_pool("test_workers", &cfg);
    CHECK_OK(dbs__workers_start(p, 3, &err), &err);
    dbs_pool_close(p);
    p = open_pool("test_workers", &cfg);
    snprintf(sql[3], sizeof sql[3], "DROP TABLE IF EXISTS %s_child", tbl);
    run_sql(p, sql[3]);
    snprintf(sql[3], sizeof sql[3], "DROP TABLE IF EXISTS %s", tbl);
    run_sql(p, sql[3]);
    dbs_pool_close(p);
    test_db_remove();
    printf("ok\n");
    return 0;
}
