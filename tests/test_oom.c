/* Every allocation dbscope makes can fail. The program is linked with
 * -Wl,--wrap=malloc,... against the static library, so each allocation in
 * dbscope's own objects (not in libsqlite3 or libpq, whose out-of-memory
 * handling is theirs) goes through the __wrap_ functions below, which fail
 * the Nth allocation of the armed thread. Each public sequence runs with
 * the failure at 1, 2, 3, ... until it completes without reaching it, and
 * after each attempt: the call failed with a documented code and a message,
 * no connection is left in use, a later session works and sees no
 * half-written data, and, once the pool is closed and the thread has
 * exited, every allocation was freed.
 *
 * Only allocations of the thread that runs the sequence are counted, so the
 * pool's own threads (housekeeper, loop workers) keep the count
 * deterministic. Each attempt runs on a thread of its own, because a
 * thread's closed sessions are kept until it exits. */
#include "common.h"
#include "workers.h"

#include <poll.h>
#include <stdint.h>

/* ---- the allocator ---------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void __wrap_free(void *p);

/* Live allocations by pointer: open addressing, linear probing, deletion
 * by backward shift (no tombstones, so the table never fills up with
 * them). Each entry keeps who allocated it, for the leak report. */
#define LIVE_CAP (1u << 18)
typedef struct {
    void *p;
    void *caller;
    uint64_t seq;
} live_ent;
static live_ent live[LIVE_CAP];
static size_t live_n;
static uint64_t alloc_seq;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;

static _Thread_local long oom_fail_at; /* 0: disarmed */
static _Thread_local long oom_count;
static _Thread_local bool oom_hit;

static size_t slot_of(const void *p)
{
    uintptr_t h = (uintptr_t)p;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (LIVE_CAP - 1);
}

static void live_add(void *p, void *caller)
{
    if (!p)
        return;
    pthread_mutex_lock(&live_lock);
    if (live_n + 1 >= LIVE_CAP / 2) {
        fprintf(stderr, "test_oom: allocation table full\n");
        abort();
    }
    size_t i = slot_of(p);
    while (live[i].p)
        i = (i + 1) & (LIVE_CAP - 1);
    live[i] = (live_ent){p, caller, ++alloc_seq};
    live_n++;
    pthread_mutex_unlock(&live_lock);
}

/* Whether p was allocated here: dbscope also frees what libc allocated
 * for it (none today, but a free of an unknown pointer is not ours). */
static bool live_del(void *p)
{
    if (!p)
        return false;
    pthread_mutex_lock(&live_lock);
    size_t i = slot_of(p);
    while (live[i].p && live[i].p != p)
        i = (i + 1) & (LIVE_CAP - 1);
    if (!live[i].p) {
        pthread_mutex_unlock(&live_lock);
        return false;
    }
    live[i].p = NULL;
    live_n--;
    /* backward shift: move later entries of the run into the hole */
    size_t j = i;
    for (;;) {
        j = (j + 1) & (LIVE_CAP - 1);
        if (!live[j].p)
            break;
        size_t k = slot_of(live[j].p);
        /* live[j] may move to i when its home k is not in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            live[i] = live[j];
            live[j].p = NULL;
            i = j;
        }
    }
    pthread_mutex_unlock(&live_lock);
    return true;
}

/* OOM_TRACE=1 in the environment: where each failed allocation was, as
 * an offset in the executable for addr2line -e test_oom */
static bool oom_trace;
extern char __executable_start;

/* Armed for every thread instead (oom_any): the loop's worker threads
 * too. The pool is quiet then (no housekeeping pass within the attempt),
 * so only the unit's own work allocates. */
static atomic_long oom_any_fail_at, oom_any_count;
static atomic_bool oom_any_hit;

static bool oom_fail_now(void *caller)
{
    long n;
    if (oom_fail_at) {
        if ((n = ++oom_count) != oom_fail_at)
            return false;
        oom_hit = true;
    } else if (atomic_load(&oom_any_fail_at)) {
        if ((n = atomic_fetch_add(&oom_any_count, 1) + 1) != atomic_load(&oom_any_fail_at))
            return false;
        atomic_store(&oom_any_hit, true);
    } else {
        return false;
    }
    if (oom_trace)
        fprintf(stderr, "test_oom: allocation %ld fails, caller %#tx\n", n,
                (char *)caller - &__executable_start);
    return true;
}

void *__wrap_malloc(size_t n)
{
    if (oom_fail_now(__builtin_return_address(0)))
        return NULL;
    void *p = __real_malloc(n);
    live_add(p, __builtin_return_address(0));
    return p;
}

void *__wrap_calloc(size_t k, size_t n)
{
    if (oom_fail_now(__builtin_return_address(0)))
        return NULL;
    void *p = __real_calloc(k, n);
    live_add(p, __builtin_return_address(0));
    return p;
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    if (oom_fail_now(__builtin_return_address(0)))
        return NULL;
    void *p = __real_aligned_alloc(a, n);
    live_add(p, __builtin_return_address(0));
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (oom_fail_now(__builtin_return_address(0)))
        return NULL; /* p stays allocated, as realloc leaves it */
    void *q = __real_realloc(p, n);
    if (q || n == 0) {
        live_del(p);
        live_add(q, __builtin_return_address(0));
    }
    return q;
}

char *__wrap_strdup(const char *s)
{
    if (oom_fail_now(__builtin_return_address(0)))
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = __real_malloc(n);
    if (p)
        memcpy(p, s, n);
    live_add(p, __builtin_return_address(0));
    return p;
}

char *__wrap_strndup(const char *s, size_t n)
{
    if (oom_fail_now(__builtin_return_address(0)))
        return NULL;
    size_t len = strnlen(s, n);
    char *p = __real_malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    live_add(p, __builtin_return_address(0));
    return p;
}

void __wrap_free(void *p)
{
    live_del(p);
    __real_free(p);
}

static void arm(long n)
{
    oom_count = 0;
    oom_hit = false;
    oom_fail_at = n;
}

/* Disarms; whether the armed failure was reached. */
static bool disarm(void)
{
    oom_fail_at = 0;
    return oom_hit;
}

/* ---- checks ----------------------------------------------------------- */

static dbs_config base_cfg;
static char tbl[64];
static long attempt_now;
static const char *case_now;

#define FAIL_AT(...)                                                           \
    CHECK_FAIL("%s, allocation %ld failing: %s", case_now, attempt_now,        \
               (snprintf(fail_buf, sizeof fail_buf, __VA_ARGS__), fail_buf))
static char fail_buf[1024];

/* A failed call: a documented code and a message. */
static void check_failed(const char *what, long long rc, const dbs_error *err)
{
    if (rc >= 0)
        FAIL_AT("%s returned %lld, expected a failure", what, rc);
    if (err->code != rc)
        FAIL_AT("%s returned %lld but err->code is %d (%s)", what, rc, err->code,
                err->message);
    if (!err->message[0])
        FAIL_AT("%s failed with %lld and no message", what, rc);
    if (rc != DBS_ENOMEM)
        FAIL_AT("%s failed with %lld (%s), not DBS_ENOMEM", what, rc, err->message);
}

static void check_idle(dbs_pool *p)
{
    dbs_stats st;
    dbs_pool_stats(p, &st);
    if (st.in_use != 0)
        FAIL_AT("%d connections still in use", st.in_use);
    if (st.waiting != 0 || st.pending != 0)
        FAIL_AT("waiting %d, pending %d", st.waiting, st.pending);
}

/* Rows of the table with tag, on a fresh session (which must work). */
static int64_t count_tag(dbs_pool *p, int64_t tag)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        FAIL_AT("a later session cannot open: %s", err.message);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE tag = $1", tbl);
    dbs_rows *r = dbs_query(s, sql, (dbs_value[]){DBS_INT(tag)}, 1, &err);
    if (!r)
        FAIL_AT("a later query fails: %s", err.message);
    if (dbs_rows_next(r, &err) != 1)
        FAIL_AT("a later query has no row: %s", err.message);
    int64_t n = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    dbs_session_close(s);
    check_idle(p);
    return n;
}

static dbs_pool *pool_ok(void)
{
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&base_cfg, &err);
    if (!p)
        FAIL_AT("dbs_pool_open: %s", err.message);
    return p;
}

static int64_t next_tag = 1000;

/* ---- the sequences -------------------------------------------------------
 * Each returns whether the armed failure was reached. */

static bool seq_pool_open(long n)
{
    dbs_error err;
    arm(n);
    dbs_pool *p = dbs_pool_open(&base_cfg, &err);
    bool hit = disarm();
    if (!p) {
        check_failed("dbs_pool_open", err.code, &err);
        return hit;
    }
    int64_t tag = next_tag++;
    CHECK_EQ(count_tag(p, tag), 0);
    dbs_pool_close(p);
    return hit;
}

static const dbs_context ctx = {"req-1", "user-1", "tenant-1"};

static bool seq_session_open(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    arm(n);
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    bool hit = disarm();
    if (!s) {
        check_failed("dbs_session_open", err.code, &err);
    } else {
        const dbs_context *c = dbs_session_context(s);
        CHECK_STR(c->tenant_id, "tenant-1");
        dbs_session_close(s);
    }
    check_idle(p);
    CHECK_EQ(count_tag(p, 1), 0);
    dbs_pool_close(p);
    return hit;
}

static const unsigned char uuid16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* INSERT with every parameter type, a query whose rows are kept and read
 * every way, then COMMIT: the row is there exactly when the commit
 * succeeded. */
static bool seq_exec_query_commit(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    int64_t tag = next_tag++;
    char ins[256], sel[256];
    snprintf(ins, sizeof ins,
             "INSERT INTO %s (tag, t, b, r, ts, u, j) VALUES ($1, $2, $3, $4, $5, $6, $7)",
             tbl);
    snprintf(sel, sizeof sel, "SELECT tag, t, b, r, ts, u, j FROM %s WHERE tag = $1", tbl);
    struct timespec ts = {1700000000, 123456000};
    dbs_value v[7] = {DBS_INT(tag),       DBS_TEXT("hello, world"),
                      DBS_BLOB("\0\1\2", 3), DBS_REAL(2.5),
                      DBS_TIMESTAMP(ts),  DBS_UUID(uuid16),
                      DBS_JSON("{\"a\": 1}")};
    dbs_session *s = open_ok(p);
    arm(n);
    int rc = DBS_OK;
    bool committed = false;
    int64_t x = dbs_exec(s, ins, v, 7, &err);
    if (x < 0) {
        rc = (int)x;
        goto done;
    }
    dbs_rows *r = dbs_query(s, sel, v, 1, &err);
    if (!r) {
        rc = err.code;
        goto done;
    }
    int got = dbs_rows_next(r, &err);
    if (got < 0) {
        rc = got;
        dbs_rows_close(r);
        goto done;
    }
    CHECK_EQ(got, 1);
    int64_t i64;
    double d;
    const char *txt;
    const void *blob;
    size_t len;
    struct timespec ts2;
    unsigned char u2[16];
    CHECK_EQ(dbs_rows_count_cols(r), 7);
    CHECK_STR(dbs_rows_name(r, 1), "t");
    int col = dbs_rows_col(r, "J", &err);
    CHECK_EQ(col, 6);
    CHECK(dbs_rows_type(r, 0, &err) >= 0);
    CHECK_OK(dbs_rows_get_int64(r, 0, &i64, &err), &err);
    CHECK_EQ(i64, tag);
    CHECK_OK(dbs_rows_get_text(r, 1, &txt, &len, &err), &err);
    CHECK_STR(txt, "hello, world");
    if ((rc = dbs_rows_get_blob(r, 2, &blob, &len, &err)) < 0) {
        dbs_rows_close(r);
        goto done;
    }
    CHECK_EQ(len, 3);
    CHECK_OK(dbs_rows_get_double(r, 3, &d, &err), &err);
    CHECK(d == 2.5);
    CHECK_OK(dbs_rows_get_timestamp(r, 4, &ts2, &err), &err);
    CHECK_EQ(ts2.tv_sec, ts.tv_sec);
    CHECK_OK(dbs_rows_get_uuid(r, 5, u2, &err), &err);
    CHECK(memcmp(u2, uuid16, 16) == 0);
    CHECK(dbs_rows_text(r, 6, NULL) != NULL);
    CHECK(dbs_rows_blob(r, 2, &len) != NULL);
    got = dbs_rows_next(r, &err);
    if (got < 0) {
        rc = got;
        dbs_rows_close(r);
        goto done;
    }
    CHECK_EQ(got, 0);
    /* kept past the next statement: rows stay the caller's */
    x = dbs_exec(s, "SELECT 1", NULL, 0, &err);
    dbs_rows_close(r);
    if (x < 0) {
        rc = (int)x;
        goto done;
    }
    rc = dbs_commit(s, &err);
    committed = rc == DBS_OK;
done:;
    bool hit = disarm();
    if (rc < 0) {
        if (rc == DBS_ECOMMIT_UNKNOWN)
            FAIL_AT("commit outcome unknown after an allocation failure: %s", err.message);
        check_failed("exec/query/commit", rc, &err);
    }
    dbs_session_close(s);
    check_idle(p);
    int64_t have = count_tag(p, tag);
    if (have != (committed ? 1 : 0))
        FAIL_AT("%" PRId64 " rows after %s", have, committed ? "a commit" : "a failure");
    dbs_pool_close(p);
    return hit;
}

/* COMMIT alone, and close with the transaction left open. */
static bool seq_commit(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    int64_t tag = next_tag++;
    char ins[160];
    snprintf(ins, sizeof ins, "INSERT INTO %s (tag, t) VALUES ($1, $2)", tbl);
    dbs_session *s = open_ok(p);
    CHECK_OK(dbs_exec(s, ins, (dbs_value[]){DBS_INT(tag), DBS_TEXT("c")}, 2, &err), &err);
    arm(n);
    int rc = dbs_commit(s, &err);
    bool hit = disarm();
    if (rc < 0) {
        if (rc == DBS_ECOMMIT_UNKNOWN)
            FAIL_AT("commit outcome unknown after an allocation failure: %s", err.message);
        check_failed("dbs_commit", rc, &err);
    }
    dbs_session_close(s);
    check_idle(p);
    if (count_tag(p, tag) != (rc == DBS_OK ? 1 : 0))
        FAIL_AT("commit returned %d but the row count disagrees", rc);
    dbs_pool_close(p);
    return hit;
}

static bool seq_commit_close(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    int64_t tag = next_tag++;
    char ins[160];
    snprintf(ins, sizeof ins, "INSERT INTO %s (tag, t) VALUES ($1, $2)", tbl);
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    CHECK(s);
    CHECK_OK(dbs_exec(s, ins, (dbs_value[]){DBS_INT(tag), DBS_TEXT("cc")}, 2, &err), &err);
    arm(n);
    int rc = dbs_session_commit_close(s, &err);
    bool hit = disarm();
    if (rc < 0) {
        if (rc == DBS_ECOMMIT_UNKNOWN)
            FAIL_AT("commit outcome unknown after an allocation failure: %s", err.message);
        check_failed("dbs_session_commit_close", rc, &err);
    }
    check_idle(p);
    if (count_tag(p, tag) != (rc == DBS_OK ? 1 : 0))
        FAIL_AT("commit_close returned %d but the row count disagrees", rc);
    dbs_pool_close(p);
    return hit;
}

static bool seq_close(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    int64_t tag = next_tag++;
    char ins[160];
    snprintf(ins, sizeof ins, "INSERT INTO %s (tag, t) VALUES ($1, $2)", tbl);
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    CHECK(s);
    CHECK_OK(dbs_exec(s, ins, (dbs_value[]){DBS_INT(tag), DBS_TEXT("x")}, 2, &err), &err);
    dbs_rows *r = dbs_query(s, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &err);
    CHECK(r);
    arm(n);
    dbs_session_close(s); /* closes r too */
    bool hit = disarm();
    check_idle(p);
    if (count_tag(p, tag) != 0)
        FAIL_AT("an uncommitted row survived the session's close");
    dbs_pool_close(p);
    return hit;
}

typedef struct {
    int64_t tag;
} work_arg;

static int work_inner(dbs_session *s, void *arg, dbs_error *err)
{
    work_arg *a = arg;
    char upd[160];
    snprintf(upd, sizeof upd, "UPDATE %s SET t = $2 WHERE tag = $1", tbl);
    int64_t x = dbs_exec(s, upd, (dbs_value[]){DBS_INT(a->tag), DBS_TEXT("inner")}, 2, err);
    return x < 0 ? (int)x : 0;
}

static int work_insert(dbs_session *s, void *arg, dbs_error *err)
{
    work_arg *a = arg;
    char ins[160], sel[160];
    snprintf(ins, sizeof ins, "INSERT INTO %s (tag, t) VALUES ($1, $2)", tbl);
    snprintf(sel, sizeof sel, "SELECT t FROM %s WHERE tag = $1", tbl);
    int64_t x = dbs_exec(s, ins, (dbs_value[]){DBS_INT(a->tag), DBS_TEXT("w")}, 2, err);
    if (x < 0)
        return (int)x;
    dbs_rows *r = dbs_query(s, sel, (dbs_value[]){DBS_INT(a->tag)}, 1, err);
    if (!r)
        return err->code;
    int rc = dbs_rows_next(r, err);
    dbs_rows_close(r);
    if (rc < 0)
        return rc;
    /* a nested unit: a savepoint of this one */
    return dbs_session_transact(s, work_inner, a, err);
}

static bool seq_transact(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    work_arg a = {next_tag++};
    arm(n);
    int rc = dbs_transact(p, &ctx, work_insert, &a, &err);
    bool hit = disarm();
    if (rc < 0) {
        if (rc == DBS_ECOMMIT_UNKNOWN)
            FAIL_AT("commit outcome unknown after an allocation failure: %s", err.message);
        check_failed("dbs_transact", rc, &err);
    }
    check_idle(p);
    if (count_tag(p, a.tag) != (rc == DBS_OK ? 1 : 0))
        FAIL_AT("dbs_transact returned %d but the row count disagrees", rc);
    dbs_pool_close(p);
    return hit;
}

static void on_session(const dbs_session_info *info, void *user)
{
    (void)info;
    ++*(int *)user;
}

static bool seq_stats(long n)
{
    dbs_pool *p = pool_ok();
    dbs_error err;
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    CHECK(s);
    static char buf[1 << 17], jbuf[1 << 16];
    dbs_stats st;
    dbs_histogram h;
    int seen = 0;
    arm(n);
    dbs_pool_stats(p, &st);
    int m = dbs_pool_metrics(p, buf, sizeof buf);
    int j = dbs_pool_stats_json(p, jbuf, sizeof jbuf);
    int hr = dbs_pool_histogram(p, DBS_HIST_WAIT, &h);
    int sr = dbs_pool_sessions(p, on_session, &seen);
    bool hit = disarm();
    CHECK_EQ(st.in_use, 1);
    if (m < 0 && m != DBS_ENOMEM)
        FAIL_AT("dbs_pool_metrics: %d", m);
    if (m >= 0 && !strstr(buf, "dbscope"))
        FAIL_AT("dbs_pool_metrics wrote no metric");
    if (j < 0 ? j != DBS_ENOMEM : jbuf[0] != '{')
        FAIL_AT("dbs_pool_stats_json: %d", j);
    if (hr != DBS_OK && hr != DBS_ENOMEM)
        FAIL_AT("dbs_pool_histogram: %d", hr);
    if (sr < 0 ? sr != DBS_ENOMEM : sr != 1 || seen != 1)
        FAIL_AT("dbs_pool_sessions: %d, %d seen", sr, seen);
    dbs_session_close(s);
    check_idle(p);
    dbs_pool_close(p);
    return hit;
}

/* ---- the event loop ---------------------------------------------------- */

typedef struct {
    int done, rc;
    int64_t tag;
    dbs_error err;
} unit_out;

static void unit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    unit_out *o = arg;
    o->done++;
    o->rc = rc;
    o->err = *err;
    if (rc == DBS_OK) {
        dbs_rows *r = dbs_unit_rows(u, 1);
        dbs_error e;
        if (!r || dbs_rows_next(r, &e) != 1 || dbs_rows_int(r, 0) != o->tag)
            FAIL_AT("a committed unit's rows are wrong");
    }
}

static bool loop_any; /* seq_loop arms every thread */

static void arm_loop(long n)
{
    if (!loop_any) {
        arm(n);
        return;
    }
    atomic_store(&oom_any_count, 0);
    atomic_store(&oom_any_hit, false);
    atomic_store(&oom_any_fail_at, n);
}

static bool disarm_loop(void)
{
    if (!loop_any)
        return disarm();
    atomic_store(&oom_any_fail_at, 0);
    return atomic_load(&oom_any_hit);
}

static bool seq_loop(long n)
{
    dbs_pool *p = pool_ok();
    /* the workers start with the first unit: before the failure is armed
     * for them */
    if (loop_any) {
        dbs_error e;
        CHECK_OK(dbs__workers_start(p, 1, &e), &e);
    }
    dbs_error err;
    unit_out o = {0, 0, next_tag++, {0}};
    char ins[160], sel[160];
    snprintf(ins, sizeof ins, "INSERT INTO %s (tag, t) VALUES ($1, $2)", tbl);
    snprintf(sel, sizeof sel, "SELECT tag, t FROM %s WHERE tag = $1", tbl);
    bool submitted = false, committed = false;
    int rc = DBS_OK;
    arm_loop(n);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l) {
        rc = err.code;
        goto out;
    }
    dbs_unit *u = dbs_unit_new(l, &ctx, 0, &err);
    if (!u) {
        rc = err.code;
        goto out;
    }
    if ((rc = dbs_unit_add(u, ins, (dbs_value[]){DBS_INT(o.tag), DBS_TEXT("loop")}, 2,
                           &err)) < 0 ||
        (rc = dbs_unit_add(u, sel, (dbs_value[]){DBS_INT(o.tag)}, 1, &err)) < 0) {
        dbs_unit_discard(u);
        goto out;
    }
    rc = dbs_unit_submit(u, unit_done, &o, &err);
    if (rc < 0)
        goto out;
    submitted = true;
    rc = DBS_OK;
    while (!o.done) {
        struct pollfd pf = {.fd = dbs_loop_fd(l), .events = POLLIN};
        poll(&pf, 1, dbs_loop_timeout_ms(l));
        int k = dbs_loop_run(l);
        if (k < 0)
            FAIL_AT("dbs_loop_run: %d", k);
        /* PostgreSQL's units run on the loop's own thread: one that waits
         * has a connection, a connect or a place in the pool's queue under
         * way for it, or nothing would ever run it but a timer */
        dbs_stats st;
        dbs_pool_stats(p, &st);
        if (!o.done && test_is_pg(base_cfg.url) && st.in_use + st.pending + st.waiting == 0)
            FAIL_AT("a unit waits with nothing under way for it");
    }
out:
    dbs_loop_close(l);
    bool hit = disarm_loop();
    if (rc < 0)
        check_failed("loop open/unit new/add/submit", rc, &err);
    if (submitted) {
        CHECK_EQ(o.done, 1);
        /* PostgreSQL's pipeline has the COMMIT on the wire while it
         * copies the rows before it: a unit whose rows could not be kept
         * committed all the same, which it reports as not to be run again
         * (driver_pg.c, a_finish) */
        if (o.rc == DBS_ECOMMIT_UNKNOWN && strstr(o.err.message, "committed all the same"))
            committed = true;
        else if (o.rc < 0)
            check_failed("unit", o.rc, &o.err);
        else
            committed = true;
    }
    check_idle(p);
    int64_t have = count_tag(p, o.tag);
    if (have != (committed ? 1 : 0))
        FAIL_AT("%" PRId64 " rows after a unit that returned %d", have, o.rc);
    dbs_pool_close(p);
    return hit;
}

/* ---- the driver -------------------------------------------------------- */

typedef bool (*seq_fn)(long n);

typedef struct {
    seq_fn fn;
    long n;
    bool hit;
} attempt;

static void *attempt_main(void *arg)
{
    attempt *a = arg;
    a->hit = a->fn(a->n);
    return NULL;
}

static void report_leaks(void)
{
    pthread_mutex_lock(&live_lock);
    for (size_t i = 0; i < LIVE_CAP; i++)
        if (live[i].p)
            fprintf(stderr, "  live: #%" PRIu64 " %p from %#tx\n", live[i].seq, live[i].p,
                    (char *)live[i].caller - &__executable_start);
    pthread_mutex_unlock(&live_lock);
}

static size_t live_count(void)
{
    pthread_mutex_lock(&live_lock);
    size_t n = live_n;
    pthread_mutex_unlock(&live_lock);
    return n;
}

static long run_case(const char *name, seq_fn fn)
{
    case_now = name;
    size_t base = live_count();
    int64_t t0 = dbs__now_ns();
    long n;
    for (n = 1;; n++) {
        attempt_now = n;
        attempt a = {fn, n, false};
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, attempt_main, &a), 0);
        CHECK_EQ(pthread_join(t, NULL), 0);
        if (oom_trace)
            fprintf(stderr, "test_oom: %s %ld: %.3f s\n", name, n,
                    (double)(dbs__now_ns() - t0) / 1e9);
        size_t now = live_count();
        if (now != base) {
            report_leaks();
            FAIL_AT("%zu allocations live after the pool closed, %zu before", now, base);
        }
        if (!a.hit)
            break;
        if (n > 5000)
            FAIL_AT("no end of allocations");
    }
    printf("%s: %ld allocations failed one at a time (%.1f s)\n", name, n - 1,
           (double)(dbs__now_ns() - t0) / 1e9);
    fflush(stdout);
    return n - 1;
}

int main(void)
{
    oom_trace = getenv("OOM_TRACE") != NULL;
    /* the wrappers are in the link, and count what they should */
    size_t before = live_count();
    /* through pointers, which the compiler cannot fold away */
    void *(*volatile alloc)(size_t) = malloc;
    char *(*volatile dup)(const char *) = strdup;
    void *probe = alloc(16);
    CHECK(probe != NULL);
    CHECK_EQ(live_count(), before + 1);
    free(probe);
    CHECK_EQ(live_count(), before);
    arm(2);
    probe = alloc(16);
    CHECK(probe != NULL);
    CHECK(dup("x") == NULL);
    CHECK(disarm());
    free(probe);
    CHECK_EQ(live_count(), before);
    dbs_config_init(&base_cfg);
    base_cfg.url = test_url("oom");
    base_cfg.log_events = 0;
    base_cfg.pool_size = 2;
    base_cfg.max_overflow = 0;
    base_cfg.acquire_timeout_ms = 10000;
    table_name("oom");
    snprintf(tbl, sizeof tbl, "%s", test_table);
    case_now = "setup";
    {
        dbs_pool *p = pool_ok();
        char sql[256];
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
        run_sql(p, sql);
        snprintf(sql, sizeof sql,
                 "CREATE TABLE %s (tag BIGINT, t TEXT, b %s, r DOUBLE PRECISION, "
                 "ts %s, u %s, j %s)",
                 tbl, test_is_pg(base_cfg.url) ? "BYTEA" : "BLOB",
                 test_is_pg(base_cfg.url) ? "TIMESTAMPTZ" : "TIMESTAMP",
                 test_is_pg(base_cfg.url) ? "UUID" : "TEXT",
                 test_is_pg(base_cfg.url) ? "JSONB" : "JSON");
        run_sql(p, sql);
        dbs_pool_close(p);
    }
    /* what the process allocates once (resolver, fork handlers) */
    case_now = "warm-up";
    static const seq_fn all[] = {seq_pool_open,  seq_session_open, seq_exec_query_commit,
                                 seq_commit,     seq_commit_close, seq_close,
                                 seq_transact,   seq_stats,        seq_loop};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        attempt a = {all[i], 0, false};
        pthread_t t;
        CHECK_EQ(pthread_create(&t, NULL, attempt_main, &a), 0);
        CHECK_EQ(pthread_join(t, NULL), 0);
    }

    long total = 0;
    total += run_case("dbs_pool_open", seq_pool_open);
    total += run_case("dbs_session_open", seq_session_open);
    total += run_case("dbs_exec, dbs_query, dbs_rows_*, dbs_commit", seq_exec_query_commit);
    total += run_case("dbs_commit", seq_commit);
    total += run_case("dbs_session_commit_close", seq_commit_close);
    total += run_case("dbs_session_close", seq_close);
    total += run_case("dbs_transact", seq_transact);
    total += run_case("stats and metrics", seq_stats);
    total += run_case("event loop", seq_loop);
    /* statements prepared for one use only (no statement cache) */
    base_cfg.stmt_cache_size = 0;
    total += run_case("no statement cache: dbs_exec, dbs_query, dbs_rows_*, dbs_commit",
                      seq_exec_query_commit);
    total += run_case("no statement cache: dbs_transact", seq_transact);
    total += run_case("no statement cache: event loop", seq_loop);
    base_cfg.stmt_cache_size = 64;
    /* SQLite's units run on worker threads, which copy their rows */
    if (!test_is_pg(base_cfg.url)) {
        base_cfg.housekeeping_interval_ms = 3600000;
        loop_any = true;
        total += run_case("event loop, every thread", seq_loop);
        loop_any = false;
    }
    CHECK(total > 0);

    case_now = "teardown";
    dbs_pool *p = pool_ok();
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(p, sql);
    dbs_pool_close(p);
    printf("test_oom: ok\n");
    return 0;
}
