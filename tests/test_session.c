/* Sessions: autobegin, commit, rollback, close rolls back, thread ownership,
 * misuse after close, the request context, DBS_SCOPED, commit-and-close
 * (and a unit's session, which its work may not close), a thread that exits
 * with its session open. Every backend. */
#include "common.h"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef DBSCOPE_WITH_PG
#include <libpq-fe.h>
#endif
#ifdef DBSCOPE_WITH_MYSQL
#include <mysql.h>
#endif

static dbs_pool *pool;
static char tbl[64];
static char url[1024]; /* the test database's, for a second pool on it */

static int64_t count_rows(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    CHECK(s);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", tbl);
    int64_t n = query_int(s, sql, NULL, 0);
    dbs_session_close(s);
    return n;
}

static void insert(dbs_session *s, int id)
{
    dbs_error err;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES ($1, $2)", tbl);
    dbs_value v[] = {DBS_INT(id), DBS_TEXT("x")};
    CHECK_OK(dbs_exec(s, sql, v, 2, &err), &err);
}

static void test_close_without_commit_rolls_back(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    CHECK(s);
    insert(s, 1);
    insert(s, 2);
    dbs_session_close(s);
    CHECK_EQ(count_rows(), 0);
}

static void test_commit_and_autobegin(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    insert(s, 10);
    CHECK_OK(dbs_commit(s, &err), &err);
    insert(s, 11); /* a new transaction begins by itself */
    CHECK_OK(dbs_rollback(s, &err), &err);
    insert(s, 12);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err); /* nothing open: a no-op */
    CHECK_OK(dbs_rollback(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_rows(), 2);
}

static void test_failed_statement_then_rollback(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    insert(s, 20);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (20, 'dup')", tbl);
    CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), DBS_ECONSTRAINT);
    CHECK_OK(dbs_rollback(s, &err), &err);
    insert(s, 21); /* usable again after rollback */
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_rows(), 3);
}

struct thread_arg {
    dbs_session *s;
    dbs_rows *r;
    int exec_rc, commit_rc, rollback_rc, query_null, query_code;
    int rows_next_rc, rows_cols, rows_get_rc;
    void *native;
};

static void *other_thread(void *v)
{
    struct thread_arg *a = v;
    dbs_error err;
    a->exec_rc = (int)dbs_exec(a->s, "SELECT 1", NULL, 0, &err);
    a->commit_rc = dbs_commit(a->s, &err);
    a->rollback_rc = dbs_rollback(a->s, &err);
    dbs_rows *r = dbs_query(a->s, "SELECT 1", NULL, 0, &err);
    a->query_null = r == NULL;
    a->query_code = err.code;
    a->native = dbs_session_native(a->s);
    /* the owner's rows: refused too, and left as they were */
    a->rows_next_rc = dbs_rows_next(a->r, &err);
    a->rows_cols = dbs_rows_count_cols(a->r);
    int64_t x;
    a->rows_get_rc = dbs_rows_get_int64(a->r, 0, &x, &err);
    dbs_rows_close(a->r);     /* refused */
    dbs_session_close(a->s); /* refused: not the owner */
    return NULL;
}

static void test_other_thread_is_misuse(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    insert(s, 30);
    dbs_rows *r = dbs_query(s, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &err);
    CHECK(r);
    struct thread_arg a = {.s = s, .r = r};
    pthread_t th;
    pthread_create(&th, NULL, other_thread, &a);
    pthread_join(th, NULL);
    CHECK_EQ(a.exec_rc, DBS_EMISUSE);
    CHECK_EQ(a.commit_rc, DBS_EMISUSE);
    CHECK_EQ(a.rollback_rc, DBS_EMISUSE);
    CHECK(a.query_null);
    CHECK_EQ(a.query_code, DBS_EMISUSE);
    CHECK(a.native == NULL);
    CHECK_EQ(a.rows_next_rc, DBS_EMISUSE);
    CHECK_EQ(a.rows_cols, 0);
    CHECK_EQ(a.rows_get_rc, DBS_EMISUSE);
    /* the rows survived the refused close, from their first row */
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 1);
    dbs_rows_close(r);
    /* the session survived, with its transaction */
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_rows(), 4);
}

/* A thread that exits with a session open, and a thread made after it:
 * glibc gives the new thread the dead one's pthread_t (its stack and
 * descriptor are reused), so a check by pthread_t took it for the owner
 * and let it run statements on, read the rows of and close another
 * thread's session. The session is closed at its thread's exit (its rows
 * with it, which are then freed like any closed session's rows); its
 * handle stays refused, whoever calls. */
struct dead_owner {
    dbs_pool *p;
    pthread_t id;
    dbs_session *s;
    dbs_rows *r;
};

static void *open_and_exit(void *v)
{
    struct dead_owner *d = v;
    dbs_error err;
    d->id = pthread_self();
    d->s = dbs_session_open(d->p, NULL, &err);
    if (!d->s)
        CHECK_FAIL("open: %s", err.message);
    d->r = dbs_query(d->s, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &err);
    if (!d->r)
        CHECK_FAIL("query: %s", err.message);
    return NULL; /* leaks both, on purpose */
}

static void *use_dead_owners(void *v)
{
    struct dead_owner *d = v;
    dbs_error err;
    if (!pthread_equal(d->id, pthread_self()))
        fprintf(stderr, "test_dead_owner: this thread's pthread_t is not the dead one's; "
                        "the test proves less\n");
    CHECK_EQ(dbs_exec(d->s, "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "another thread");
    CHECK(dbs_query(d->s, "SELECT 1", NULL, 0, &err) == NULL);
    CHECK_EQ(err.code, DBS_EMISUSE);
    CHECK_EQ(dbs_commit(d->s, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rollback(d->s, &err), DBS_EMISUSE);
    CHECK(dbs_session_native(d->s) == NULL);
    CHECK(dbs_session_context(d->s) == NULL);
    CHECK_EQ(dbs_session_set_statement_timeout(d->s, 0, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_session_set_tx_options(d->s, NULL, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_session_commit_close(d->s, &err), DBS_EMISUSE);
    dbs_session_close(d->s);          /* refused */
    return NULL;
}

static void test_dead_owner(void)
{
    struct dead_owner d = {.p = pool};
    pthread_t th;
    pthread_create(&th, NULL, open_and_exit, &d);
    pthread_join(th, NULL);
    /* its connection came back with the thread's exit */
    WAIT_UNTIL(stats_of(pool).in_use == 0, 10000);
    CHECK_EQ(stats_of(pool).in_use, 0);
    pthread_create(&th, NULL, use_dead_owners, &d);
    pthread_join(th, NULL);
    /* and on this thread, which never owned it: refused the same way */
    dbs_error err;
    CHECK_EQ(dbs_exec(d.s, "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_session_commit_close(d.s, &err), DBS_EMISUSE);
    dbs_session_close(d.s);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

static void test_use_after_close(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    /* a copy the compiler cannot follow: this misuse is the point here (GCC
     * reports it at compile time otherwise, thanks to the malloc attribute) */
    dbs_session *volatile stale = s;
    dbs_session_close(s);
    s = stale;
    /* Best effort: the memory is kept for this thread's next session, so
     * the stale handle is recognised instead of read after free. */
    CHECK_EQ(dbs_exec(s, "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "closed");
    CHECK_EQ(dbs_commit(s, &err), DBS_EMISUSE);
    dbs_session_close(s); /* a second close does nothing */
    dbs_session_close(NULL);
    CHECK_EQ(stats_of(pool).in_use, 0);
    CHECK_EQ(dbs_exec(NULL, "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
}

/* With several sessions of a thread open and closed, every stale handle is
 * still recognised: none of them points at memory given back to malloc. */
static void test_use_after_close_many_open(void)
{
    dbs_error err;
    enum { N = 3 };
    dbs_session *volatile stale[N];
    for (int i = 0; i < N; i++) {
        stale[i] = dbs_session_open(pool, NULL, &err);
        CHECK(stale[i]);
    }
    for (int i = 0; i < N; i++)
        dbs_session_close(stale[i]);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(dbs_exec(stale[i], "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
        CHECK(dbs_session_native(stale[i]) == NULL);
        dbs_session_close(stale[i]);
    }
    CHECK_EQ(stats_of(pool).in_use, 0);
}

static void test_context_is_copied(void)
{
    char req[16] = "req-1", user[16] = "alice";
    dbs_context ctx = {.request_id = req, .user_id = user};
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, &ctx, &err);
    CHECK(s);
    strcpy(req, "changed");
    strcpy(user, "mallory");
    const dbs_context *c = dbs_session_context(s);
    CHECK_STR(c->request_id, "req-1");
    CHECK_STR(c->user_id, "alice");
    CHECK(c->tenant_id == NULL);
    dbs_session_close(s);
    s = dbs_session_open(pool, NULL, &err);
    c = dbs_session_context(s);
    CHECK(c->request_id == NULL && c->user_id == NULL);
    dbs_session_close(s);
}

static int scoped_body(void)
{
    dbs_error err;
    DBS_SCOPED dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        return -1;
    insert(s, 40);
    CHECK_EQ(stats_of(pool).in_use, 1);
    return 0; /* no commit: the scope's end rolls back and releases */
}

static void test_scoped(void)
{
    CHECK_EQ(scoped_body(), 0);
    CHECK_EQ(stats_of(pool).in_use, 0);
    CHECK_EQ(count_rows(), 4);
}

static void test_acquire_site_recorded(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    int line = __LINE__ - 1;
    CHECK(strstr(s->file, "test_session.c") != NULL);
    CHECK_EQ(s->line, line);
    CHECK_STR(s->func, "test_acquire_site_recorded");
    dbs_session_close(s);
}

struct cc_arg {
    dbs_session *s;
    int rc;
};

static void *commit_close_elsewhere(void *v)
{
    struct cc_arg *a = v;
    dbs_error e;
    a->rc = dbs_session_commit_close(a->s, &e);
    return NULL;
}

/* The unit's session is dbs_transact's: its work may neither commit-close
 * nor close it (both refused, the session stays usable). */
static int close_inside_unit(dbs_session *s, void *arg, dbs_error *err)
{
    int *rcs = arg;
    insert(s, 120);
    rcs[0] = dbs_session_commit_close(s, err);
    /* a copy the compiler cannot follow: the close below is refused, which
     * GCC cannot know (it would report the later use as after a free) */
    dbs_session *volatile keep = s;
    dbs_session_close(s);
    s = keep;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (121, 'y')", tbl);
    rcs[1] = (int)dbs_exec(s, sql, NULL, 0, err);
    return rcs[1] == 1 ? 0 : -1;
}

static void test_commit_close(void)
{
    dbs_error err;
    int64_t before = count_rows();
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    insert(s, 100);
    CHECK_OK(dbs_session_commit_close(s, &err), &err);
    CHECK_EQ(count_rows(), before + 1);
    CHECK_EQ(stats_of(pool).in_use, 0);

    /* nothing to commit: closed all the same */
    s = dbs_session_open(pool, NULL, &err);
    dbs_session *volatile stale = s;
    CHECK_OK(dbs_session_commit_close(s, &err), &err);
    CHECK_EQ(stats_of(pool).in_use, 0);
    s = stale; /* closed: refused, as every call on a closed session */
    CHECK_EQ(dbs_session_commit_close(s, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_session_commit_close(NULL, &err), DBS_EMISUSE);

    /* from another thread: refused, the session and its transaction stay */
    s = dbs_session_open(pool, NULL, &err);
    insert(s, 101);
    struct cc_arg a = {.s = s};
    pthread_t th;
    pthread_create(&th, NULL, commit_close_elsewhere, &a);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, DBS_EMISUSE);
    insert(s, 102);
    CHECK_OK(dbs_session_commit_close(s, &err), &err);
    CHECK_EQ(count_rows(), before + 3);

    /* inside dbs_transact: refused; the unit commits when its work returns */
    int rcs[2] = {0, 0};
    CHECK_OK(dbs_transact(pool, NULL, close_inside_unit, rcs, &err), &err);
    CHECK_EQ(rcs[0], DBS_EMISUSE);
    CHECK_EQ(rcs[1], 1);
    CHECK_EQ(count_rows(), before + 5);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

/* sql run through s's native handle, as its backend's own client would;
 * fails the test if it fails. */
static void native_exec(dbs_session *s, const char *sql)
{
    void *h = dbs_session_native(s);
    CHECK(h != NULL);
    switch (dbs_pool_backend(pool)) {
    case DBS_BACKEND_SQLITE: {
        char *msg = NULL;
        if (sqlite3_exec(h, sql, NULL, NULL, &msg) != SQLITE_OK)
            CHECK_FAIL("%s: %s", sql, msg ? msg : "?");
        break;
    }
#ifdef DBSCOPE_WITH_PG
    case DBS_BACKEND_POSTGRESQL: {
        PGresult *r = PQexec(h, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
            CHECK_FAIL("%s: %s", sql, PQerrorMessage(h));
        PQclear(r);
        break;
    }
#endif
#ifdef DBSCOPE_WITH_MYSQL
    case DBS_BACKEND_MARIADB:
        if (mysql_query(h, sql) != 0)
            CHECK_FAIL("%s: %s", sql, mysql_error(h));
        break;
#endif
    default: CHECK_FAIL("backend %d", (int)dbs_pool_backend(pool));
    }
}

static int64_t count_id(int id)
{
    dbs_session *s = open_ok(pool);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id = $1", tbl);
    dbs_value v[] = {DBS_INT(id)};
    int64_t n = query_int(s, sql, v, 1);
    dbs_session_close(s);
    return n;
}

/* A unit that wrote through the native handle before any statement of
 * dbscope's, then failed transiently. What the handle ran before the
 * session's transaction began committed at once: running the unit again
 * would write it twice. */
static int native_write_then_transient(dbs_session *s, void *arg, dbs_error *err)
{
    int *calls = arg;
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (%d, 'n')", tbl, 200 + (*calls)++);
    native_exec(s, sql);
    err->code = DBS_ERETRYABLE; /* as a deadlock of a later statement */
    snprintf(err->message, sizeof err->message, "a deadlock, as it were");
    return DBS_ERETRYABLE;
}

static void test_native_unit_not_rerun(void)
{
    dbs_error err;
    int calls = 0;
    CHECK_EQ(dbs_transact(pool, NULL, native_write_then_transient, &calls, &err),
             DBS_ERETRYABLE);
    CHECK_EQ(calls, 1);
    CHECK_EQ(count_id(200), 1); /* it committed: not run a second time */
    CHECK_EQ(count_id(201), 0);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

/* The handle taken while rows are being read: the rows read on to their
 * end, and the handle then runs statements of its own. */
static void test_native_amid_rows(void)
{
    dbs_error err;
    uint64_t dirty = stats_of(pool).closed_dirty;
    dbs_session *s = open_ok(pool);
    dbs_rows *r = dbs_query(s, "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3", NULL, 0, &err);
    if (!r)
        CHECK_FAIL("query: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 1);
    void *h = dbs_session_native(s);
    CHECK(h != NULL);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 2);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 3);
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    dbs_rows_close(r);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, v) VALUES (210, 'n')", tbl);
    native_exec(s, sql);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(count_id(210), 1);
    CHECK_EQ(stats_of(pool).closed_dirty, dirty + 1);
}

static int take_native(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    (void)err;
    insert(s, 220);
    return dbs_session_native(s) ? 0 : -1;
}

/* Whichever way the session ends, the connection whose handle was handed
 * out is closed, never handed out again. */
static void test_native_never_reused(void)
{
    dbs_error err;
    for (int how = 0; how < 4; how++) {
        uint64_t dirty = stats_of(pool).closed_dirty;
        if (how == 2) {
            CHECK_OK(dbs_transact(pool, NULL, take_native, NULL, &err), &err);
        } else {
            dbs_session *s = open_ok(pool);
            CHECK(dbs_session_native(s) != NULL);
            if (how == 0) {
                dbs_session_close(s);
            } else if (how == 1) {
                CHECK_OK(dbs_session_commit_close(s, &err), &err);
            } else {
                CHECK(dbs_exec(s, "SELEC broken", NULL, 0, &err) < 0);
                dbs_session_close(s);
            }
        }
        CHECK_EQ(stats_of(pool).closed_dirty, dirty + 1);
        CHECK_EQ(stats_of(pool).in_use, 0);
    }
    CHECK_EQ(count_id(220), 1);
}

/* ---- a thread that exits with a session open ----
 * Its sessions are ended at its exit as a close would end them, their
 * transactions rolled back and their connections given back; a leak
 * event names where each was opened. */

enum { EXIT_EVENTS = 256 };
static pthread_mutex_t exit_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    enum dbs_event_kind kind;
    char file[128];
    int line;
    char reason[128];
} exit_ev[EXIT_EVENTS];
static int n_exit_ev;

static void record_leaks(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind != DBS_EVENT_LEAK && ev->kind != DBS_EVENT_LEAK_RECOVERED)
        return;
    pthread_mutex_lock(&exit_mu);
    if (n_exit_ev < EXIT_EVENTS) {
        exit_ev[n_exit_ev].kind = ev->kind;
        snprintf(exit_ev[n_exit_ev].file, sizeof exit_ev[0].file, "%s",
                 ev->file ? ev->file : "");
        exit_ev[n_exit_ev].line = ev->line;
        snprintf(exit_ev[n_exit_ev].reason, sizeof exit_ev[0].reason, "%s",
                 ev->reason ? ev->reason : "");
        n_exit_ev++;
    }
    pthread_mutex_unlock(&exit_mu);
}

static void exit_ev_reset(void)
{
    pthread_mutex_lock(&exit_mu);
    n_exit_ev = 0;
    pthread_mutex_unlock(&exit_mu);
}

/* How many leak events of a thread's exit named this file at line. */
static int exit_leaks_at(int line)
{
    int n = 0;
    pthread_mutex_lock(&exit_mu);
    for (int i = 0; i < n_exit_ev; i++)
        if (exit_ev[i].kind == DBS_EVENT_LEAK && exit_ev[i].line == line &&
            strstr(exit_ev[i].file, "test_session.c") &&
            strstr(exit_ev[i].reason, "thread exited"))
            n++;
    pthread_mutex_unlock(&exit_mu);
    return n;
}

/* A pool of one connection on the test database, listening for leaks. */
static dbs_pool *pool_of_one(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 10000; /* a bound for the test, not a speed */
    cfg.on_event = record_leaks;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    return p;
}

/* dbs_transact calls under way on p (their holds on it), all threads. */
static int holds_of(dbs_pool *p)
{
    int n = 0;
    dbs__shards_lock(p);
    for (int i = 0; i < DBS__SHARDS; i++)
        n += p->shards[i].n_holds;
    dbs__shards_unlock(p);
    return n;
}

enum exit_how { EXIT_RETURN, EXIT_PTHREAD, EXIT_IN_UNIT };

struct exiting {
    dbs_pool *p;
    enum exit_how how;
    int id;
    int line;                     /* where its session was opened */
    dbs_session *s;
    pthread_barrier_t *opened;    /* if set: waited on once the INSERT ran */
    pthread_barrier_t *go;        /* if set: waited on before the exit */
};

static void exiting_wait(struct exiting *x)
{
    if (x->opened)
        pthread_barrier_wait(x->opened);
    if (x->go)
        pthread_barrier_wait(x->go);
}

static int insert_and_exit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    struct exiting *x = arg;
    x->s = s;
    insert(s, x->id);
    exiting_wait(x);
    pthread_exit(NULL);
}

static void *open_insert_exit(void *v)
{
    struct exiting *x = v;
    dbs_error err;
    if (x->how == EXIT_IN_UNIT) {
        x->line = __LINE__ + 1;
        dbs_transact(x->p, NULL, insert_and_exit, x, &err);
        CHECK_FAIL("the unit's work never returns: %s", err.message);
    }
    x->line = __LINE__ + 1;
    x->s = dbs_session_open(x->p, NULL, &err);
    if (!x->s)
        CHECK_FAIL("open: %s", err.message);
    insert(x->s, x->id);
    exiting_wait(x);
    if (x->how == EXIT_PTHREAD)
        pthread_exit(NULL);
    return NULL; /* the session left open, on purpose */
}

static void *use_exited(void *v)
{
    struct exiting *x = v;
    dbs_error err;
    CHECK_EQ(dbs_exec(x->s, "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_commit(x->s, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_session_commit_close(x->s, &err), DBS_EMISUSE);
    dbs_session_close(x->s); /* refused, and harmless */
    CHECK_EQ(dbs_exec(x->s, "SELECT 1", NULL, 0, &err), DBS_EMISUSE);
    return NULL;
}

/* Each way a thread can leave with its session open: the INSERT is not
 * committed, the one connection comes back for another thread, the leak
 * event names the line that opened it, and the dead thread's handle is
 * refused, not followed into freed memory. */
static void test_thread_exit_gives_back(void)
{
    for (int how = EXIT_RETURN; how <= EXIT_IN_UNIT; how++) {
        exit_ev_reset();
        dbs_pool *p = pool_of_one();
        struct exiting x = {.p = p, .how = how, .id = 600 + how};
        pthread_t th;
        pthread_create(&th, NULL, open_insert_exit, &x);
        pthread_join(th, NULL);
        WAIT_UNTIL(stats_of(p).in_use == 0, 10000);
        CHECK_EQ(stats_of(p).in_use, 0);
        CHECK_EQ(holds_of(p), 0); /* a unit's hold on the pool went with it */
        CHECK_EQ(count_id(x.id), 0);
        CHECK_EQ(exit_leaks_at(x.line), 1);
        dbs_stats st = stats_of(p);
        CHECK_EQ(st.leaks, 1);
        CHECK_EQ(st.leaks_recovered, 1);
        CHECK_EQ(st.acquired, st.released);
        /* the pool's one connection serves the next thread */
        dbs_session *s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
        dbs_session_close(s);
        pthread_create(&th, NULL, use_exited, &x);
        pthread_join(th, NULL);
        CHECK_EQ(stats_of(p).in_use, 0);
        dbs_pool_close(p);
    }
}

/* The pool closed while the thread still holds its session: the thread's
 * exit ends it all the same, and the pool's memory is freed with it (a
 * leak checker finds nothing). Then the same with the close racing the
 * exit, for ThreadSanitizer. */
static void test_thread_exit_after_pool_close(void)
{
    for (int how = EXIT_RETURN; how <= EXIT_IN_UNIT; how++) {
        pthread_barrier_t opened, go;
        pthread_barrier_init(&opened, NULL, 2);
        pthread_barrier_init(&go, NULL, 2);
        exit_ev_reset();
        struct exiting x = {.p = pool_of_one(), .how = how, .id = 610 + how,
                            .opened = &opened, .go = &go};
        pthread_t th;
        pthread_create(&th, NULL, open_insert_exit, &x);
        pthread_barrier_wait(&opened);
        dbs_pool_close(x.p);
        pthread_barrier_wait(&go);
        pthread_join(th, NULL);
        CHECK_EQ(exit_leaks_at(x.line), 1);
        CHECK_EQ(count_id(x.id), 0);
        pthread_barrier_destroy(&opened);
        pthread_barrier_destroy(&go);
    }
    enum { ROUNDS = 12 };
    for (int i = 0; i < ROUNDS; i++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        exit_ev_reset();
        struct exiting x = {.p = pool_of_one(), .how = i % 3, .id = 620 + i, .go = &go};
        pthread_t th;
        pthread_create(&th, NULL, open_insert_exit, &x);
        pthread_barrier_wait(&go);
        dbs_pool_close(x.p); /* as the thread leaves */
        pthread_join(th, NULL);
        CHECK_EQ(exit_leaks_at(x.line), 1);
        CHECK_EQ(count_id(x.id), 0);
        pthread_barrier_destroy(&go);
    }
}

/* A child of fork() whose thread exits with the parent's session open:
 * the session is let go of as dbs_session_close would in the child,
 * nothing sent on the parent's connection and nothing of the pool touched,
 * so the parent's session goes on, its transaction intact. */
static pthread_key_t child_key;
static dbs_session *child_s;
static int child_rounds;

/* In the child: 0 once the session is closed, 5 if it is still open after
 * a few rounds of destructors (run in no set order). */
static void child_exit(void *v)
{
    if (child_s->magic == DBS__SESSION_MAGIC && ++child_rounds < 3) {
        pthread_setspecific(child_key, v); /* another round, after dbscope's */
        return;
    }
    _exit(child_s->magic == DBS__SESSION_MAGIC ? 5 : 0);
}

static void *fork_and_exit(void *v)
{
    struct exiting *x = v;
    dbs_error err;
    x->s = dbs_session_open(x->p, NULL, &err);
    if (!x->s)
        CHECK_FAIL("open: %s", err.message);
    insert(x->s, x->id);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child's only thread leaves; a destructor of the test's own
         * ends the child once dbscope's has closed the session, without the
         * exit handlers (one removes the parent's SQLite file; ThreadSanitizer
         * cannot run them on a thread that has finished). */
        child_s = x->s;
        if (pthread_key_create(&child_key, child_exit) != 0 ||
            pthread_setspecific(child_key, &child_rounds) != 0)
            _exit(3);
        pthread_exit(NULL);
    }
    CHECK(pid > 0);
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    insert(x->s, x->id + 1);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE id >= $1", tbl);
    dbs_value v1[] = {DBS_INT(x->id)};
    CHECK_EQ(query_int(x->s, sql, v1, 1), 2);
    dbs_session_close(x->s); /* rolled back */
    return NULL;
}

static void test_thread_exit_in_fork_child(void)
{
    struct exiting x = {.p = pool, .id = 640};
    pthread_t th;
    pthread_create(&th, NULL, fork_and_exit, &x);
    pthread_join(th, NULL);
    CHECK_EQ(count_id(640), 0);
    CHECK_EQ(stats_of(pool).in_use, 0);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 2;
    pool = open_pool("session", &cfg);
    snprintf(url, sizeof url, "%s", cfg.url);
    snprintf(tbl, sizeof tbl, "%s", table_name("sess"));
    char sql[160];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY, v TEXT)", tbl);
    run_sql(pool, sql);

    test_close_without_commit_rolls_back();
    test_commit_and_autobegin();
    test_failed_statement_then_rollback();
    test_other_thread_is_misuse();
    test_dead_owner();
    test_use_after_close();
    test_use_after_close_many_open();
    test_context_is_copied();
    test_scoped();
    test_acquire_site_recorded();
    test_commit_close();
    test_native_unit_not_rerun();
    test_native_amid_rows();
    test_native_never_reused();
    test_thread_exit_gives_back();
    test_thread_exit_after_pool_close();
    test_thread_exit_in_fork_child();

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_stats st = stats_of(pool);
    CHECK_EQ(st.acquired, st.released);
    dbs_pool_close(pool);
    puts("test_session: ok");
    return 0;
}
