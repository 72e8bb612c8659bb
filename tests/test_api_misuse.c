/* The whole public API with bad arguments and handles in the wrong state,
 * from a table: each call returns its documented error (DBS_EMISUSE, most
 * often) with err->code the same and a message saying what was wrong, or
 * its documented fallback where it has no error (0, -1, NULL, a no-op),
 * with err given and with err NULL, and leaves the pool, the session and
 * its rows as they were. Then lifecycles over and over: pools opened and
 * closed, with a session, an event loop, replicas, a shutdown first, a
 * close from another thread, leave no descriptor, thread or memory behind.
 * Runs on every backend (and means most under ASan and UBSan). */
#include "common.h"

#include <dirent.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <sys/wait.h>

/* ---- the state the calls are made against ---- */

typedef struct fix {
    dbs_pool *pool;      /* open */
    dbs_pool *down;      /* shut down, not yet closed */
    dbs_session *s;      /* open, no transaction */
    dbs_session *dead;   /* closed: its memory kept by this thread */
    dbs_rows *before;    /* before its first row */
    dbs_rows *after;     /* past its last row */
    dbs_rows *on;        /* on a row: one column, 1 */
    dbs_loop *loop;
    dbs_unit *unit;      /* not submitted, one statement */
    dbs_unit *orphan;    /* not submitted, its loop closed */
    dbs_histogram hist;
} fix;

/* What a call that returns a handle gave back: 1 for a handle, else the
 * code in err, or FAILED_QUIETLY with err NULL (it failed, how is not
 * known). */
#define FAILED_QUIETLY 1000

static int ptr_rc(const void *p, const dbs_error *err)
{
    return p ? 1 : err ? err->code : FAILED_QUIETLY;
}

static int work_ok(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s, (void)arg, (void)err;
    return 0;
}

static void visit(const dbs_session_info *info, void *user)
{
    (void)info, (void)user;
}

static const dbs_tx_options bad_isolation = {.isolation = (enum dbs_isolation)99};
static const dbs_tx_options neg_isolation = {.isolation = (enum dbs_isolation)-1};

static char long_field[DBS_CONTEXT_MAX + 2];
static const dbs_context bad_utf8 = {.request_id = "r\xff", .user_id = NULL, .tenant_id = NULL};
static const dbs_context too_long = {.request_id = NULL, .user_id = long_field, .tenant_id = NULL};

static const unsigned char uuid16[16];

static void fix_unchanged(fix *f, const char *after);

static size_t n_calls;

/* One row of the table: call, an expression that uses err, returns want
 * with err->code the same and a message, and again want with err NULL
 * (or fails quietly where its answer is a NULL handle); the state is
 * unchanged after each. */
#define EXPECT(want, call)                                                      \
    do {                                                                        \
        dbs_error e_ = {.code = 12345, .sqlstate = "", .message = "stale"};     \
        dbs_error *err = &e_;                                                   \
        long long rc_ = (long long)(call);                                      \
        if (rc_ != (want))                                                      \
            CHECK_FAIL("%s: returned %lld (%s), not %d: %s", #call, rc_,        \
                       dbs_strerror((int)rc_), (int)(want), e_.message);        \
        if (rc_ < 0 && e_.code != rc_)                                          \
            CHECK_FAIL("%s: err->code is %d, not the %lld returned", #call,     \
                       e_.code, rc_);                                           \
        if (rc_ < 0 && (!e_.message[0] || !strcmp(e_.message, "stale")))       \
            CHECK_FAIL("%s: returned %lld with no message", #call, rc_);        \
        fix_unchanged(f, #call);                                                \
        err = NULL;                                                             \
        rc_ = (long long)(call);                                                \
        if (rc_ != (want) && rc_ != FAILED_QUIETLY)                             \
            CHECK_FAIL("%s with err NULL: returned %lld, not %d", #call, rc_,   \
                       (int)(want));                                            \
        fix_unchanged(f, #call);                                                \
        n_calls++;                                                              \
    } while (0)

/* A call with no error to report: cond holds (its fallback), and the
 * state is unchanged. */
#define QUIET(cond)                                                             \
    do {                                                                        \
        if (!(cond))                                                            \
            CHECK_FAIL("%s: not its documented fallback", #cond);               \
        fix_unchanged(f, #cond);                                                \
        n_calls++;                                                              \
    } while (0)

static dbs_rows *rows_of(dbs_session *s, const char *sql)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (!r)
        CHECK_FAIL("%s: %s", sql, err.message);
    return r;
}

static void fix_open(fix *f, const char *url)
{
    dbs_error err;
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.log_events = 0;
    cfg.pool_size = 4;
    cfg.url = url;
    memset(f, 0, sizeof *f);
    f->pool = dbs_pool_open(&cfg, &err);
    if (!f->pool)
        CHECK_FAIL("open %s: %s", url, err.message);
    /* A second pool, shut down: usable for reading until its close. An
     * in-memory SQLite database is the pool's own, so a file for that. */
    f->down = dbs_pool_open(&cfg, &err);
    if (!f->down)
        CHECK_FAIL("open %s: %s", url, err.message);
    CHECK_EQ(dbs_pool_shutdown(f->down, 0), 0);
    f->dead = open_ok(f->pool);
    dbs_session_close(f->dead); /* s reuses its memory: another first */
    dbs_session *keep = open_ok(f->pool);
    f->dead = open_ok(f->pool);
    dbs_session_close(f->dead);
    f->s = keep;
    f->before = rows_of(f->s, "SELECT 1 AS one");
    f->after = rows_of(f->s, "SELECT 1 AS one");
    CHECK_EQ(dbs_rows_next(f->after, &err), 1);
    CHECK_EQ(dbs_rows_next(f->after, &err), 0);
    f->on = rows_of(f->s, "SELECT 1 AS one");
    CHECK_EQ(dbs_rows_next(f->on, &err), 1);
    CHECK_OK(dbs_rollback(f->s, &err), &err); /* no transaction: options may change */
    f->loop = dbs_loop_open(f->pool, NULL, &err);
    if (!f->loop)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    f->unit = dbs_unit_new(f->loop, NULL, 0, &err);
    CHECK(f->unit);
    CHECK_OK(dbs_unit_add(f->unit, "SELECT 1", NULL, 0, &err), &err);
    dbs_loop *gone = dbs_loop_open(f->pool, NULL, &err);
    CHECK(gone);
    f->orphan = dbs_unit_new(gone, NULL, 0, &err);
    CHECK(f->orphan);
    CHECK_OK(dbs_unit_add(f->orphan, "SELECT 1", NULL, 0, &err), &err);
    dbs_loop_close(gone);
}

/* The state every case must leave as it found. */
static void fix_unchanged(fix *f, const char *after)
{
    dbs_error err;
    dbs_stats st;
    dbs_pool_stats(f->pool, &st);
    if (st.in_use != 1)
        CHECK_FAIL("after %s: %d connections in use, not the one session's", after,
                   st.in_use);
    int64_t v = 0;
    if (dbs_rows_get_int64(f->on, 0, &v, &err) != DBS_OK || v != 1)
        CHECK_FAIL("after %s: the current row reads %lld: %s", after, (long long)v,
                   err.message);
    if (dbs_session_context(f->s) == NULL)
        CHECK_FAIL("after %s: the session is no longer usable", after);
    if (dbs_loop_pending(f->loop) != 0)
        CHECK_FAIL("after %s: the loop has units pending", after);
}

/* The table, function by function in the header's order. */
static void sweep_calls(fix *f)
{
    dbs_config bad;
    dbs_value v1 = DBS_INT(1);
    char buf[64];
    struct timespec ts;
    unsigned char u[16];
    int64_t i64;
    double d;
    int b;
    const char *t;
    const void *bl;
    size_t len;
    dbs_stats st;
    dbs_histogram h;
    dbs_loop_config lc;

    /* errors, configuration */
    QUIET(!strcmp(dbs_strerror(INT_MIN), "unknown error code"));
    QUIET(!strcmp(dbs_strerror(1), "unknown error code"));
    QUIET(!strcmp(dbs_strerror(INT_MAX), "unknown error code"));
    QUIET(dbs_error_is_transient(NULL) == 0);
    QUIET((dbs_config_init(NULL), true));
    EXPECT(DBS_EMISUSE, dbs_config_from_env(NULL, err));

    /* pools */
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_pool_open(NULL, err), err));
    dbs_config_init(&bad);
    bad.log_events = 0;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err)); /* url NULL */
    bad.url = "";
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.url = dbs_pool_backend(f->pool) == DBS_BACKEND_SQLITE ? "sqlite::memory:" : test_url("x");
    bad.pool_size = 0;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.pool_size = INT_MAX;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.pool_size = 10;
    bad.max_overflow = -1;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.max_overflow = 0;
    bad.acquire_timeout_ms = INT_MIN;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.acquire_timeout_ms = 1000;
    bad.mode = (enum dbs_pool_mode)99;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.mode = (enum dbs_pool_mode)-1;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.mode = DBS_POOL_AUTO;
    bad.reset = (enum dbs_reset_mode)-1;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    bad.reset = DBS_RESET_FULL;
    bad.log_events = 2;
    EXPECT(DBS_ECONFIG, ptr_rc(dbs_pool_open(&bad, err), err));
    QUIET((dbs_pool_close(NULL), true));
    QUIET(dbs_pool_shutdown(NULL, 0) == DBS_EMISUSE);
    EXPECT(DBS_EMISUSE, dbs_pool_ping(NULL, err));
    EXPECT(DBS_EMISUSE, dbs_pool_wait_ready(NULL, 0, err));
    EXPECT(DBS_EMISUSE, dbs_pool_wait_ready(f->pool, -1, err));
    EXPECT(DBS_EMISUSE, dbs_pool_wait_ready(f->pool, INT_MIN, err));
    EXPECT(DBS_EMISUSE, dbs_pool_after_fork_child(NULL, err));
    QUIET((dbs_pool_stats(NULL, &st), st.size == 0 && st.max_size == 0));
    QUIET((dbs_pool_stats(f->pool, NULL), true));
    QUIET((strcpy(buf, "x"), dbs_pool_metrics(NULL, buf, sizeof buf) == DBS_EMISUSE && !buf[0]));
    QUIET(dbs_pool_metrics(f->pool, NULL, 0) > 0);
    QUIET(dbs_pool_metrics(f->pool, NULL, 100) == DBS_EMISUSE);
    QUIET(dbs_pool_metrics(f->pool, buf, 0) > 0);
    QUIET((strcpy(buf, "x"), dbs_pool_stats_json(NULL, buf, sizeof buf) == DBS_EMISUSE && !buf[0]));
    QUIET(dbs_pool_stats_json(f->pool, NULL, 0) > 0);
    QUIET(dbs_pool_stats_json(f->pool, NULL, 100) == DBS_EMISUSE);
    QUIET(dbs_pool_errors(NULL, 0, NULL) == 0);
    QUIET(dbs_pool_errors(f->pool, 1, NULL) == 0);
    QUIET(dbs_pool_errors(f->pool, INT_MAX, "") == 0);
    QUIET(dbs_pool_errors(f->pool, INT_MIN, NULL) == 0);
    QUIET(dbs_pool_errors(f->pool, -1000, "x") == 0);
    QUIET(dbs_pool_circuit(NULL) == DBS_EMISUSE);
    QUIET(dbs_pool_histogram(NULL, DBS_HIST_WAIT, &h) == DBS_EMISUSE);
    QUIET(dbs_pool_histogram(f->pool, (enum dbs_histogram_kind)99, &h) == DBS_EMISUSE);
    QUIET(dbs_pool_histogram(f->pool, (enum dbs_histogram_kind)-1, &h) == DBS_EMISUSE);
    QUIET(dbs_pool_histogram(f->pool, DBS_HIST_WAIT, NULL) == DBS_EMISUSE);
    QUIET(dbs_histogram_upper_us(-1) == 0 && dbs_histogram_upper_us(INT_MIN) == 0);
    QUIET(dbs_histogram_upper_us(DBS_HISTOGRAM_BUCKETS) == 0 &&
          dbs_histogram_upper_us(INT_MAX) == 0);
    memset(&h, 0, sizeof h);
    QUIET(dbs_histogram_percentile(NULL, NULL, 0.5) == -1);
    QUIET(dbs_histogram_percentile(&h, NULL, 0.0) == -1);
    QUIET(dbs_histogram_percentile(&h, NULL, -1.0) == -1);
    QUIET(dbs_histogram_percentile(&h, NULL, 1.5) == -1);
    QUIET(dbs_histogram_percentile(&h, NULL, NAN) == -1);
    QUIET(dbs_histogram_percentile(&h, NULL, INFINITY) == -1);
    QUIET(dbs_histogram_percentile(&h, &h, 0.5) == -1);
    QUIET(dbs_pool_sessions(NULL, visit, NULL) == DBS_EMISUSE);
    QUIET(dbs_pool_sessions(f->pool, NULL, NULL) == DBS_EMISUSE);
    QUIET(dbs_pool_backend(NULL) == DBS_BACKEND_UNKNOWN);

    /* sessions */
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_session_open(NULL, NULL, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_session_open(f->pool, &bad_utf8, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_session_open(f->pool, &too_long, err), err));
    EXPECT(DBS_ECLOSED, ptr_rc(dbs_session_open(f->down, NULL, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_session_open_ro(NULL, NULL, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_session_open_ro_after(NULL, NULL, 1, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_session_open_ro_after(f->pool, &bad_utf8, 0, err), err));
    QUIET(dbs_session_commit_pos(NULL) == 0);
    QUIET(dbs_session_commit_pos(f->dead) == 0);
    EXPECT(DBS_EMISUSE, dbs_commit(NULL, err));
    EXPECT(DBS_EMISUSE, dbs_commit(f->dead, err));
    EXPECT(DBS_EMISUSE, dbs_rollback(NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rollback(f->dead, err));
    EXPECT(DBS_EMISUSE, dbs_session_commit_close(NULL, err));
    EXPECT(DBS_EMISUSE, dbs_session_commit_close(f->dead, err));
    QUIET((dbs_session_close(NULL), true));
    QUIET((dbs_session_close(f->dead), true));
    QUIET((dbs__session_close_scoped(NULL), true));
    QUIET(dbs_session_native(NULL) == NULL && dbs_session_native(f->dead) == NULL);
    QUIET(dbs_session_context(NULL) == NULL && dbs_session_context(f->dead) == NULL);
    EXPECT(DBS_EMISUSE, dbs_session_set_statement_timeout(NULL, 0, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_statement_timeout(f->dead, 0, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_statement_timeout(f->s, -1, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_statement_timeout(f->s, INT_MIN, err));

    /* dbs_transact and its variants */
    EXPECT(DBS_EMISUSE, dbs_transact(NULL, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact(f->pool, NULL, NULL, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact(f->pool, &bad_utf8, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact(f->pool, &too_long, work_ok, NULL, err));
    EXPECT(DBS_ECLOSED, dbs_transact(f->down, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, (dbs_transact)(NULL, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_ro(NULL, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_ro(f->pool, NULL, NULL, NULL, err));
    EXPECT(DBS_EMISUSE, (dbs_transact_ro)(NULL, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_ro_after(NULL, NULL, 1, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_ro_after(f->pool, NULL, 1, NULL, NULL, err));
    EXPECT(DBS_EMISUSE, (dbs_transact_ro_after)(NULL, NULL, 1, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_opts(NULL, NULL, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_opts(f->pool, NULL, NULL, NULL, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_opts(f->pool, NULL, &bad_isolation, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_transact_opts(f->pool, NULL, &neg_isolation, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, (dbs_transact_opts)(NULL, NULL, NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_tx_options(NULL, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_tx_options(f->dead, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_tx_options(f->s, &bad_isolation, err));
    EXPECT(DBS_EMISUSE, dbs_session_set_tx_options(f->s, &neg_isolation, err));
    EXPECT(DBS_EMISUSE, dbs_session_transact(NULL, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_session_transact(f->dead, work_ok, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_session_transact(f->s, NULL, NULL, err));

    /* statements */
    for (int q = 0; q < 2; q++) {
        /* q = 0: dbs_exec, 1: dbs_query, with the same arguments */
#define STMT(s, sql, p, n)                                                     \
    (q ? ptr_rc(dbs_query(s, sql, p, n, err), err) : dbs_exec(s, sql, p, n, err))
        dbs_value v;
        EXPECT(DBS_EMISUSE, STMT(NULL, "SELECT 1", NULL, 0));
        EXPECT(DBS_EMISUSE, STMT(f->dead, "SELECT 1", NULL, 0));
        EXPECT(DBS_EMISUSE, STMT(f->s, NULL, NULL, 0));
        EXPECT(DBS_ESQL, STMT(f->s, "", NULL, 0));
        EXPECT(DBS_ESQL, STMT(f->s, " ;\n;", NULL, 0));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT 1", NULL, 1));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT 1", NULL, SIZE_MAX));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v1, 65536));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v1, SIZE_MAX));
        v = (dbs_value){.type = (enum dbs_type)99};
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = (dbs_value){.type = (enum dbs_type)-1};
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = (dbs_value){.type = DBS_TYPE_DECIMAL};
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_TIMESTAMP(((struct timespec){0, -1}));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_TIMESTAMP(((struct timespec){0, 1000000000}));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_TIMESTAMP(((struct timespec){INT64_MAX, 0}));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_TIMESTAMP(((struct timespec){INT64_MIN, 0}));
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = (dbs_value){.type = DBS_TYPE_UUID, .b = {uuid16, 15}};
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_UUID(uuid16);
        v.b.n = SIZE_MAX;
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_BLOB(uuid16, SIZE_MAX);
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_TEXTN("x", (size_t)PTRDIFF_MAX + 1);
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
        v = DBS_JSONN("1", SIZE_MAX - 1);
        EXPECT(DBS_EMISUSE, STMT(f->s, "SELECT $1", &v, 1));
#undef STMT
        /* none of it began a transaction */
        EXPECT(DBS_OK, dbs_session_set_tx_options(f->s, NULL, err));
    }

    /* rows */
    EXPECT(DBS_EMISUSE, dbs_rows_next(NULL, err));
    QUIET(dbs_rows_count_cols(NULL) == 0);
    QUIET(dbs_rows_name(NULL, 0) == NULL && dbs_rows_name(f->on, -1) == NULL &&
          dbs_rows_name(f->on, 1) == NULL && dbs_rows_name(f->on, INT_MAX) == NULL &&
          dbs_rows_name(f->on, INT_MIN) == NULL);
    QUIET(dbs_rows_is_null(NULL, 0) == 1 && dbs_rows_is_null(f->on, -1) == 1 &&
          dbs_rows_is_null(f->on, INT_MAX) == 1);
    QUIET(dbs_rows_int(NULL, 0) == 0 && dbs_rows_int(f->on, 1) == 0 &&
          dbs_rows_int(f->on, INT_MIN) == 0 && dbs_rows_int(f->before, 0) == 0 &&
          dbs_rows_int(f->after, 0) == 0);
    QUIET(dbs_rows_real(NULL, 0) == 0.0 && dbs_rows_real(f->on, -1) == 0.0 &&
          dbs_rows_real(f->before, 0) == 0.0 && dbs_rows_real(f->after, 0) == 0.0);
    QUIET((len = 7, dbs_rows_text(NULL, 0, &len) == NULL && len == 0));
    QUIET((len = 7, dbs_rows_text(f->on, 1, &len) == NULL && len == 0));
    QUIET(dbs_rows_text(f->on, -1, NULL) == NULL);
    QUIET(dbs_rows_text(f->before, 0, NULL) == NULL && dbs_rows_text(f->after, 0, NULL) == NULL);
    QUIET((len = 7, dbs_rows_blob(NULL, 0, &len) == NULL && len == 0));
    QUIET((len = 7, dbs_rows_blob(f->on, INT_MAX, &len) == NULL && len == 0));
    QUIET(dbs_rows_blob(f->before, 0, NULL) == NULL && dbs_rows_blob(f->after, 0, NULL) == NULL);
    dbs_rows *const rs[3] = {f->before, f->after, NULL};
    for (int k = 0; k < 3; k++) {
        /* no current row (before the first, past the last), or no rows */
        EXPECT(DBS_EMISUSE, dbs_rows_get_int64(rs[k], 0, &i64, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_double(rs[k], 0, &d, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_bool(rs[k], 0, &b, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_text(rs[k], 0, &t, &len, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_blob(rs[k], 0, &bl, &len, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_timestamp(rs[k], 0, &ts, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_uuid(rs[k], 0, u, err));
    }
    EXPECT(DBS_EMISUSE, dbs_rows_type(NULL, 0, err));
    EXPECT(DBS_EMISUSE, dbs_rows_col(NULL, "one", err));
    const int cols[4] = {-1, 1, INT_MAX, INT_MIN};
    for (int k = 0; k < 4; k++) {
        int c = cols[k];
        EXPECT(DBS_EMISUSE, dbs_rows_get_int64(f->on, c, &i64, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_double(f->on, c, &d, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_bool(f->on, c, &b, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_text(f->on, c, &t, &len, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_blob(f->on, c, &bl, &len, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_timestamp(f->on, c, &ts, err));
        EXPECT(DBS_EMISUSE, dbs_rows_get_uuid(f->on, c, u, err));
        EXPECT(DBS_EMISUSE, dbs_rows_type(f->on, c, err));
    }
    EXPECT(DBS_EMISUSE, dbs_rows_get_int64(f->on, 0, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_double(f->on, 0, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_bool(f->on, 0, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_text(f->on, 0, NULL, &len, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_blob(f->on, 0, NULL, &len, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_blob(f->on, 0, &bl, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_timestamp(f->on, 0, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_get_uuid(f->on, 0, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_col(f->on, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_rows_col(f->on, "", err));
    EXPECT(DBS_EMISUSE, dbs_rows_col(f->on, "two", err));
    QUIET((dbs_rows_close(NULL), true));

    /* values as text */
    QUIET((strcpy(buf, "x"), dbs_timestamp_format((struct timespec){0, -1}, buf) ==
                                 DBS_EMISUSE && !buf[0]));
    QUIET((strcpy(buf, "x"), dbs_timestamp_format((struct timespec){0, 1000000000}, buf) ==
                                 DBS_EMISUSE && !buf[0]));
    QUIET((strcpy(buf, "x"), dbs_timestamp_format((struct timespec){INT64_MAX, 0}, buf) ==
                                 DBS_EMISUSE && !buf[0]));
    QUIET((strcpy(buf, "x"), dbs_timestamp_format((struct timespec){INT64_MIN, 0}, buf) ==
                                 DBS_EMISUSE && !buf[0]));
    QUIET((strcpy(buf, "x"), dbs_uuid_format(NULL, buf), !buf[0]));
    dbs_uuid_format((const unsigned char *)"0123456789abcdef", NULL); /* writes nothing */
    EXPECT(DBS_EMISUSE, dbs_timestamp_parse(NULL, 0, &ts, err));
    EXPECT(DBS_EMISUSE, dbs_timestamp_parse(NULL, SIZE_MAX, &ts, err));
    EXPECT(DBS_EMISUSE, dbs_timestamp_parse("2024-01-01", SIZE_MAX, NULL, err));
    EXPECT(DBS_ETYPE, dbs_timestamp_parse("", SIZE_MAX, &ts, err));
    EXPECT(DBS_ETYPE, dbs_timestamp_parse("2024-01-01", 0, &ts, err));
    EXPECT(DBS_ETYPE, dbs_timestamp_parse("2024-01-01", 4, &ts, err));
    EXPECT(DBS_EMISUSE, dbs_uuid_parse(NULL, 0, u, err));
    EXPECT(DBS_EMISUSE, dbs_uuid_parse(NULL, SIZE_MAX, u, err));
    EXPECT(DBS_EMISUSE, dbs_uuid_parse("00000000-0000-0000-0000-000000000000", SIZE_MAX, NULL,
                                       err));
    EXPECT(DBS_ETYPE, dbs_uuid_parse("", SIZE_MAX, u, err));
    EXPECT(DBS_ETYPE, dbs_uuid_parse("00000000-0000-0000-0000-000000000000", 0, u, err));
    EXPECT(DBS_ETYPE, dbs_uuid_parse("00000000-0000-0000-0000-000000000000", 35, u, err));

    /* event loops */
    QUIET((dbs_loop_config_init(NULL), true));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_loop_open(NULL, NULL, err), err));
    EXPECT(DBS_ECLOSED, ptr_rc(dbs_loop_open(f->down, NULL, err), err));
    int *const fields[4] = {&lc.pipeline_depth, &lc.max_connections, &lc.queue_max,
                            &lc.workers};
    const int bads[4][3] = {{0, 1025, INT_MIN}, {-1, INT_MIN, -1}, {0, -1, INT_MIN},
                            {0, 257, INT_MAX}};
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++) {
            dbs_loop_config_init(&lc);
            *fields[k] = bads[k][j];
            EXPECT(DBS_EMISUSE, ptr_rc(dbs_loop_open(f->pool, &lc, err), err));
        }
    QUIET(dbs_loop_fd(NULL) == -1 && dbs_loop_timeout_ms(NULL) == -1);
    QUIET(dbs_loop_run(NULL) == DBS_EMISUSE && dbs_loop_pending(NULL) == DBS_EMISUSE);
    QUIET((dbs_loop_close(NULL), true));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_unit_new(NULL, NULL, 0, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_unit_new(f->loop, NULL, 2, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_unit_new(f->loop, NULL, UINT_MAX, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_unit_new(f->loop, &bad_utf8, 0, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc(dbs_unit_new(f->loop, &too_long, 0, err), err));
    EXPECT(DBS_EMISUSE, ptr_rc((dbs_unit_new)(NULL, NULL, 0, err), err));
    EXPECT(DBS_EMISUSE, dbs_unit_add(NULL, "SELECT 1", NULL, 0, err));
    EXPECT(DBS_EMISUSE, dbs_unit_add(f->orphan, "SELECT 1", NULL, 0, err));
    EXPECT(DBS_EMISUSE, dbs_unit_add(f->unit, NULL, NULL, 0, err));
    EXPECT(DBS_ESQL, dbs_unit_add(f->unit, "", NULL, 0, err));
    EXPECT(DBS_ESQL, dbs_unit_add(f->unit, ";", NULL, 0, err));
    EXPECT(DBS_EMISUSE, dbs_unit_add(f->unit, "SELECT 1", NULL, 1, err));
    EXPECT(DBS_EMISUSE, dbs_unit_add(f->unit, "SELECT $1", &v1, SIZE_MAX, err));
    EXPECT(DBS_EMISUSE, dbs_unit_add(f->unit, "SELECT $1", &v1, 65536, err));
    EXPECT(DBS_EMISUSE, dbs_unit_set_tx_options(NULL, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_unit_set_tx_options(f->orphan, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_unit_set_tx_options(f->unit, &bad_isolation, err));
    EXPECT(DBS_EMISUSE, dbs_unit_set_tx_options(f->unit, &neg_isolation, err));
    QUIET(dbs_unit_set_timeout(NULL, 1) == DBS_EMISUSE &&
          dbs_unit_set_timeout(f->orphan, 1) == DBS_EMISUSE);
    QUIET(dbs_unit_set_timeout(f->unit, 0) == DBS_EMISUSE &&
          dbs_unit_set_timeout(f->unit, -1) == DBS_EMISUSE &&
          dbs_unit_set_timeout(f->unit, INT_MIN) == DBS_EMISUSE);
    QUIET(dbs_unit_set_after(NULL, 1) == DBS_EMISUSE &&
          dbs_unit_set_after(f->orphan, 1) == DBS_EMISUSE);
    EXPECT(DBS_EMISUSE, dbs_unit_submit(NULL, NULL, NULL, err));
    EXPECT(DBS_EMISUSE, dbs_unit_submit(f->orphan, NULL, NULL, err));
    QUIET((dbs_unit_discard(NULL), true));
    QUIET((dbs_unit_cancel(NULL), true));
    QUIET((dbs_unit_cancel(f->unit), true)); /* not submitted: nothing to cancel */
    QUIET((dbs_unit_cancel(f->orphan), true));
    QUIET(dbs_unit_rows(NULL, 0) == NULL && dbs_unit_rows(f->unit, 0) == NULL &&
          dbs_unit_rows(f->unit, -1) == NULL && dbs_unit_rows(f->unit, INT_MAX) == NULL);
    QUIET(dbs_unit_affected(NULL, 0) == -1 && dbs_unit_affected(f->unit, 0) == -1 &&
          dbs_unit_affected(f->unit, INT_MIN) == -1);
    QUIET(dbs_unit_attempts(NULL) == 0 && dbs_unit_attempts(f->unit) == 0);
    QUIET(dbs_unit_commit_pos(NULL) == 0 && dbs_unit_commit_pos(f->unit) == 0);
    QUIET(dbs_unit_context(NULL) == NULL);
    /* an empty unit's submit is refused and frees it (as the header says) */
    dbs_unit *empty = dbs_unit_new(f->loop, NULL, 0, NULL);
    QUIET(empty && dbs_unit_submit(empty, NULL, NULL, NULL) == DBS_EMISUSE);

    /* a pool shut down, not yet closed: reads work, new work is refused */
    EXPECT(DBS_ECLOSED, dbs_pool_ping(f->down, err));
    EXPECT(DBS_ECLOSED, dbs_pool_wait_ready(f->down, 0, err));
    EXPECT(DBS_ECLOSED, ptr_rc(dbs_session_open_ro(f->down, NULL, err), err));
    EXPECT(DBS_ECLOSED, dbs_transact_ro(f->down, NULL, work_ok, NULL, err));
    EXPECT(DBS_OK, dbs_pool_after_fork_child(f->down, err));
    QUIET(dbs_pool_shutdown(f->down, 0) == 0 && dbs_pool_shutdown(f->down, -1) == 0 &&
          dbs_pool_shutdown(f->down, INT_MAX) == 0);
    QUIET(dbs_pool_backend(f->down) == dbs_pool_backend(f->pool));
    QUIET((dbs_pool_stats(f->down, &st), st.size == 0 && st.max_size > 0));
    QUIET(dbs_pool_metrics(f->down, NULL, 0) > 0 && dbs_pool_stats_json(f->down, NULL, 0) > 0);
    QUIET(dbs_pool_circuit(f->down) == DBS_CIRCUIT_CLOSED);
    QUIET(dbs_pool_histogram(f->down, DBS_HIST_USE, &h) == DBS_OK);
    QUIET(dbs_pool_sessions(f->down, visit, NULL) == 0);
}

static void test_sweep(const char *url)
{
    memset(long_field, 'x', sizeof long_field - 1);
    fix fx, *f = &fx;
    fix_open(f, url);
    sweep_calls(f);
    /* still in working order */
    dbs_error err;
    CHECK_EQ(query_int(f->s, "SELECT 41 + 1", NULL, 0), 42);
    dbs_unit_discard(f->unit);
    dbs_unit_discard(f->orphan);
    dbs_loop_close(f->loop);
    dbs_rows_close(f->before);
    dbs_rows_close(f->after);
    dbs_rows_close(f->on);
    dbs_session_close(f->s);
    dbs_stats st;
    dbs_pool_stats(f->pool, &st);
    CHECK_EQ(st.in_use, 0);
    CHECK_OK(dbs_pool_ping(f->pool, &err), &err);
    dbs_pool_close(f->down);
    dbs_pool_close(f->pool);
    printf("%zu calls with bad arguments or in the wrong state: documented answers\n",
           n_calls);
}

/* ---- lifecycles ---- */

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        CHECK_FAIL("opendir %s", path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

typedef struct usage {
    int fds, threads;
    size_t heap; /* bytes malloc has handed out and not had back */
} usage;

static usage usage_now(void)
{
    usage u;
    u.fds = count_dir("/proc/self/fd");
    u.threads = count_dir("/proc/self/task");
    struct mallinfo2 mi = mallinfo2();
    u.heap = mi.uordblks + mi.hblkhd;
    return u;
}

enum { CHURN_PLAIN, CHURN_SESSION, CHURN_LOOP, CHURN_SHUTDOWN, CHURN_THREAD, CHURN_KINDS };

typedef struct churn {
    const char *url, *replica_url;
} churn;

static void *close_elsewhere(void *v)
{
    dbs_pool_close(v);
    return NULL;
}

static void unit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    if (rc != DBS_OK)
        CHECK_FAIL("unit: %d %s", rc, err->message);
    *(int *)arg = 1;
}

static void churn_once(const churn *c, int kind)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = c->url;
    cfg.replica_url = c->replica_url;
    cfg.log_events = 0;
    cfg.pool_size = 2;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open %s: %s", c->url, err.message);
    switch (kind) {
    case CHURN_SESSION: {
        dbs_session *s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        break;
    }
    case CHURN_LOOP: {
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        if (!l)
            CHECK_FAIL("dbs_loop_open: %s", err.message);
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u);
        CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
        int done = 0;
        CHECK_OK(dbs_unit_submit(u, unit_done, &done, &err), &err);
        int64_t t0 = now_ms();
        while (!done) {
            CHECK_OK(dbs_loop_run(l), NULL);
            if (now_ms() - t0 > 60000)
                CHECK_FAIL("a unit of SELECT 1 not done in 60 s");
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        dbs_loop_close(l);
        break;
    }
    case CHURN_SHUTDOWN: {
        dbs_session *s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
        dbs_session_close(s);
        CHECK_EQ(dbs_pool_shutdown(p, 1000), 0);
        break;
    }
    default:
        break;
    }
    if (kind == CHURN_THREAD) {
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, close_elsewhere, p), 0);
        CHECK_EQ(pthread_join(t, NULL), 0);
    } else {
        dbs_pool_close(p);
    }
}

static void test_churn(const char *what, const churn *c, int cycles)
{
    /* warm up: the first cycles fill what libraries keep for good (a
     * thread's spare sessions, SSL's tables, SQLite's page cache) */
    for (int i = 0; i < 20 * CHURN_KINDS; i++)
        churn_once(c, i % CHURN_KINDS);
    usage u0 = usage_now();
    for (int i = 0; i < cycles; i++)
        churn_once(c, i % CHURN_KINDS);
    usage u1 = usage_now();
    printf("%s: %d cycles: fds %d -> %d, threads %d -> %d, heap %zu -> %zu bytes\n", what,
           cycles, u0.fds, u1.fds, u0.threads, u1.threads, u0.heap, u1.heap);
    CHECK_EQ(u1.fds, u0.fds);
    CHECK_EQ(u1.threads, u0.threads);
#if !defined(__SANITIZE_ADDRESS__)
    /* With malloc's per-thread caches off (see main), the bytes in use
     * come back to the byte when nothing leaks: less than a byte a cycle
     * is no cycle's. */
    if (u1.heap > u0.heap && u1.heap - u0.heap >= (size_t)cycles)
        CHECK_FAIL("%s: the heap grew by %zu bytes in %d cycles", what, u1.heap - u0.heap,
                   cycles);
#endif
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *url = test_url("api_misuse");
    bool sweep = argc < 2 || !strcmp(argv[1], "sweep");
    bool churn_on = argc < 2 || !strcmp(argv[1], "churn");
    if (sweep)
        test_sweep(url);
#if !defined(__SANITIZE_ADDRESS__)
    /* mallinfo2 counts the chunks malloc's per-thread cache keeps as in
     * use, which makes the heap move by kilobytes with no leak: the churn
     * runs with the cache off, in this program run again. */
    const char *tun = getenv("GLIBC_TUNABLES");
    if (churn_on && (!tun || !strstr(tun, "glibc.malloc.tcache_count=0"))) {
        setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", 1);
        static char churn_arg[] = "churn";
        char *again[] = {argv[0], churn_arg, NULL};
        if (sweep) {
            pid_t pid = fork();
            CHECK(pid >= 0);
            if (pid == 0) {
                execv("/proc/self/exe", again);
                _exit(127);
            }
            int st;
            CHECK_EQ(waitpid(pid, &st, 0), pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        }
        execv("/proc/self/exe", again);
        CHECK_FAIL("execv /proc/self/exe");
    }
#endif
    if (churn_on) {
        static char memory_url[] = "sqlite::memory:";
        churn c = {.url = url, .replica_url = NULL};
        test_churn(test_is_pg(url) ? "postgresql" : test_is_mysql(url) ? "mariadb" : "sqlite file",
                   &c, 500);
        if (test_is_pg(url)) {
            /* the primary as its own replica: found not in recovery, left
             * out, but monitored, with a pool of its own */
            c.replica_url = url;
            test_churn("postgresql with replica_url", &c, 500);
        } else if (!test_is_mysql(url)) {
            c.url = memory_url;
            test_churn("sqlite::memory:", &c, 500);
        }
    }
    return 0;
}
