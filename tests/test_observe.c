/* Observability: leaks reported with the acquiring line, recovered leaks,
 * the live session list, histograms, every event kind, Prometheus and JSON
 * exports, the housekeeper's keep-alive. Both backends. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <jansson.h>

/* ---- an event recorder ---- */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static int ev_count[DBS_EVENT_NOTICE + 1];
static struct {
    char file[256], func[64], request_id[64], reason[128];
    int line, attempt, code;
    int64_t age_ms;
    uint64_t conn_id;
} last[DBS_EVENT_NOTICE + 1];

static void on_event(const dbs_event *ev, void *user)
{
    CHECK(user == &ev_mu);
    CHECK(ev->name && *ev->name);
    pthread_mutex_lock(&ev_mu);
    ev_count[ev->kind]++;
    snprintf(last[ev->kind].file, sizeof last[0].file, "%s", ev->file ? ev->file : "");
    snprintf(last[ev->kind].func, sizeof last[0].func, "%s", ev->func ? ev->func : "");
    snprintf(last[ev->kind].request_id, sizeof last[0].request_id, "%s",
             ev->ctx && ev->ctx->request_id ? ev->ctx->request_id : "");
    snprintf(last[ev->kind].reason, sizeof last[0].reason, "%s", ev->reason ? ev->reason : "");
    last[ev->kind].line = ev->line;
    last[ev->kind].attempt = ev->attempt;
    last[ev->kind].code = ev->code;
    last[ev->kind].age_ms = ev->age_ms;
    last[ev->kind].conn_id = ev->conn_id;
    pthread_mutex_unlock(&ev_mu);
}

static int events(enum dbs_event_kind k)
{
    pthread_mutex_lock(&ev_mu);
    int n = ev_count[k];
    pthread_mutex_unlock(&ev_mu);
    return n;
}

static dbs_config observed(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.on_event = on_event;
    cfg.event_user = &ev_mu;
    cfg.housekeeping_interval_ms = 20;
    return cfg;
}

/* Runs f with stderr sent to a file; returns what was written (static). */
static const char *capture_stderr_begin(int *saved)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/dbscope-observe-%ld.log",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    fflush(stderr);
    *saved = dup(2);
    FILE *f = fopen(path, "w");
    CHECK(f);
    dup2(fileno(f), 2);
    fclose(f);
    return path;
}

static char *capture_stderr_end(int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    CHECK(f);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(path);
    return text;
}

static void test_leak_reported_with_line(void)
{
    dbs_config cfg = observed();
    cfg.leak_threshold_ms = 100;
    cfg.log_events = 1; /* both: on_event and the default logger */
    dbs_pool *p = open_pool("observe", &cfg);
    int saved;
    const char *path = capture_stderr_begin(&saved);
    dbs_context ctx = {.request_id = "req-leaky", .user_id = "u7"};
    dbs_error err;
    int before = events(DBS_EVENT_LEAK);
    dbs_session *s = dbs_session_open(p, &ctx, &err); int line = __LINE__;
    CHECK(s);
    WAIT_UNTIL(events(DBS_EVENT_LEAK) > before, 30000);
    CHECK_EQ(events(DBS_EVENT_LEAK), before + 1);
    pthread_mutex_lock(&ev_mu);
    CHECK(strstr(last[DBS_EVENT_LEAK].file, "test_observe.c") != NULL);
    CHECK_EQ(last[DBS_EVENT_LEAK].line, line);
    CHECK_STR(last[DBS_EVENT_LEAK].func, "test_leak_reported_with_line");
    CHECK_STR(last[DBS_EVENT_LEAK].request_id, "req-leaky");
    CHECK_INT(last[DBS_EVENT_LEAK].age_ms, >=, 100);
    pthread_mutex_unlock(&ev_mu);
    dbs__sleep_ms(100); /* reported once, not every round */
    CHECK_EQ(events(DBS_EVENT_LEAK), before + 1);
    CHECK_EQ(stats_of(p).leaks, 1);

    int rec = events(DBS_EVENT_LEAK_RECOVERED);
    dbs_session_close(s);
    CHECK_EQ(events(DBS_EVENT_LEAK_RECOVERED), rec + 1);
    CHECK_EQ(stats_of(p).leaks_recovered, 1);
    dbs_pool_close(p);

    char *text = capture_stderr_end(saved, path);
    char site[300];
    snprintf(site, sizeof site, "test_observe.c:%d func=test_leak_reported_with_line", line);
    CHECK_CONTAINS(text, "event=leak ");
    CHECK_CONTAINS(text, site);
    CHECK_CONTAINS(text, "request_id=req-leaky user_id=u7");
    CHECK_CONTAINS(text, "event=leak_recovered");
    CHECK_CONTAINS(text, "age_ms=");
    CHECK_CONTAINS(text, "thread=");
}

/* Leaks are reported in every pool mode: a NONE pool, which keeps no
 * connection and so had no housekeeper, never reported a session held past
 * leak_threshold_ms (stats.leaks stayed 0) until the pool closed. */
static void test_leak_reported_every_mode(void)
{
    static const enum dbs_pool_mode modes[] = {DBS_POOL_NONE, DBS_POOL_SINGLE, DBS_POOL_QUEUE};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        dbs_config cfg = observed();
        cfg.mode = modes[i];
        cfg.leak_threshold_ms = 100;
        cfg.log_events = 0;
        dbs_pool *p = open_pool("observe", &cfg);
        int before = events(DBS_EVENT_LEAK), rec = events(DBS_EVENT_LEAK_RECOVERED);
        dbs_session *s = open_ok(p);
        WAIT_UNTIL(events(DBS_EVENT_LEAK) > before, 30000);
        CHECK_EQ(events(DBS_EVENT_LEAK), before + 1);
        CHECK_EQ(stats_of(p).leaks, 1);
        dbs_session_close(s);
        CHECK_EQ(events(DBS_EVENT_LEAK_RECOVERED), rec + 1);
        CHECK_EQ(stats_of(p).leaks_recovered, 1);
        dbs_pool_close(p);
    }
}

/* A program that stops its pool when a leak is reported: the report runs
 * on the housekeeper, which the stop would have to join (itself), and
 * whose pool the close would free under it. Both calls are refused there,
 * and the pool goes on working until the program's own thread closes it. */
static dbs_pool *stop_pool;
static atomic_int stop_seen, stop_rc = 1;
static void stop_on_leak(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind != DBS_EVENT_LEAK || atomic_exchange(&stop_seen, 1))
        return;
    atomic_store(&stop_rc, dbs_pool_shutdown(stop_pool, 0));
    dbs_pool_close(stop_pool);
}

static void test_stop_from_own_thread(void)
{
    dbs_config cfg = observed();
    cfg.on_event = stop_on_leak;
    cfg.leak_threshold_ms = 50;
    cfg.log_events = 0;
    int saved;
    const char *path = capture_stderr_begin(&saved);
    stop_pool = open_pool("observe", &cfg);
    dbs_error err;
    dbs_session *s = dbs_session_open(stop_pool, NULL, &err);
    CHECK(s);
    WAIT_UNTIL(atomic_load(&stop_seen) == 1 && atomic_load(&stop_rc) != 1, 30000);
    CHECK_EQ(atomic_load(&stop_rc), DBS_EMISUSE);
    dbs_session_close(s);
    s = dbs_session_open(stop_pool, NULL, &err); /* still open */
    CHECK(s);
    CHECK(dbs_exec(s, "SELECT 1", NULL, 0, &err) >= 0);
    dbs_session_close(s);
    CHECK_EQ(dbs_pool_shutdown(stop_pool, 1000), 0);
    dbs_pool_close(stop_pool);
    char *text = capture_stderr_end(saved, path);
    CHECK_CONTAINS(text, "dbs_pool_shutdown refused");
    CHECK_CONTAINS(text, "dbs_pool_close refused");
}

static void test_leak_at_pool_close(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    int before = events(DBS_EVENT_LEAK);
    dbs_session *s = dbs_session_open(p, NULL, &err); int line = __LINE__;
    dbs_pool_close(p);
    CHECK_EQ(events(DBS_EVENT_LEAK), before + 1);
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(last[DBS_EVENT_LEAK].line, line);
    CHECK_CONTAINS(last[DBS_EVENT_LEAK].reason, "dbs_pool_close");
    pthread_mutex_unlock(&ev_mu);
    dbs_session_close(s);

    /* A session already reported as a leak is listed again at close (the
     * operator wants everything that was abandoned) but counted once. */
    cfg.leak_threshold_ms = 20;
    p = open_pool("observe", &cfg);
    before = events(DBS_EVENT_LEAK);
    s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    WAIT_UNTIL(events(DBS_EVENT_LEAK) == before + 1, 30000);
    CHECK_EQ(stats_of(p).leaks, 1);
    dbs_pool_close(p);
    CHECK_EQ(events(DBS_EVENT_LEAK), before + 2);
    pthread_mutex_lock(&ev_mu);
    CHECK_CONTAINS(last[DBS_EVENT_LEAK].reason, "dbs_pool_close");
    pthread_mutex_unlock(&ev_mu);
    dbs_session_close(s);
}

/* A leak event carries the session's context as the session has it: a
 * request id of any length whole, as the checkout event and
 * dbs_pool_sessions give it, in the housekeeper's reports and at close. */
static char long_seen[2][1200];
static int long_leaks;

static void on_long_ctx(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind != DBS_EVENT_LEAK || !ev->ctx)
        return;
    pthread_mutex_lock(&ev_mu);
    int k = long_leaks < 2 ? long_leaks : 1;
    snprintf(long_seen[k], sizeof long_seen[k], "%s|%s",
             ev->ctx->request_id ? ev->ctx->request_id : "(null)",
             ev->ctx->tenant_id ? ev->ctx->tenant_id : "(null)");
    long_leaks++;
    pthread_mutex_unlock(&ev_mu);
}

static void test_leak_long_context(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.on_event = on_long_ctx;
    cfg.log_events = 0;
    cfg.housekeeping_interval_ms = 20;
    cfg.leak_threshold_ms = 50;
    dbs_pool *p = open_pool("observe", &cfg);
    char rid[600], tenant[200], want[1200];
    for (size_t i = 0; i < sizeof rid - 1; i++)
        rid[i] = (char)('a' + i % 26);
    rid[sizeof rid - 1] = '\0';
    memset(tenant, 'T', sizeof tenant - 1);
    tenant[sizeof tenant - 1] = '\0';
    snprintf(want, sizeof want, "%s|%s", rid, tenant);
    dbs_context ctx = {.request_id = rid, .tenant_id = tenant};
    dbs_session *s = dbs_session_open(p, &ctx, NULL);
    CHECK(s);
    WAIT_UNTIL(stats_of(p).leaks == 1, 30000);
    dbs_pool_close(p); /* reported again, at close */
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(long_leaks, 2);
    CHECK_STR(long_seen[0], want);
    CHECK_STR(long_seen[1], want);
    pthread_mutex_unlock(&ev_mu);
    dbs_session_close(s);
}

/* A unit of work run by dbs_transact is listed, and would be reported as a
 * leak, at the line that called dbs_transact, not inside the library. */
static dbs_pool *site_pool;

struct site_seen {
    const char *file;
    int line;
    char func[64];
};

static void record_site(const dbs_session_info *in, void *user)
{
    struct site_seen *seen = user;
    seen->file = strstr(in->file, "test_observe.c") ? "test_observe.c" : in->file;
    seen->line = in->line;
    snprintf(seen->func, sizeof seen->func, "%s", in->func);
}

static int list_own_site(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)err;
    struct site_seen *seen = arg;
    return dbs_pool_sessions(site_pool, record_site, seen) == 1 ? 0 : -1;
}

static void test_transact_names_caller(void)
{
    dbs_config cfg = observed();
    site_pool = open_pool("observe", &cfg);
    struct site_seen seen = {0};
    dbs_error err;
    int rc = dbs_transact(site_pool, NULL, list_own_site, &seen, &err); int line = __LINE__;
    CHECK_OK(rc, &err);
    CHECK_STR(seen.file, "test_observe.c");
    CHECK_EQ(seen.line, line);
    CHECK_STR(seen.func, "test_transact_names_caller");
    dbs_pool_close(site_pool);
}

/* Every way of acquiring names its caller's line in a leak report: the
 * read-only sessions, each dbs_transact variant (the leak reported while
 * its work runs), and an event loop's unit on a worker's session (its
 * checkout event; a PostgreSQL unit runs on the loop's own connection,
 * whose events name no site). */
static atomic_int site_leaks_before;

static int wait_own_leak(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)arg;
    (void)err;
    WAIT_UNTIL(events(DBS_EVENT_LEAK) > atomic_load(&site_leaks_before), 30000);
    return 0;
}

static void check_leak_site(int line, const char *what)
{
    CHECK_INT(events(DBS_EVENT_LEAK), >, atomic_load(&site_leaks_before));
    pthread_mutex_lock(&ev_mu);
    if (!strstr(last[DBS_EVENT_LEAK].file, "test_observe.c") ||
        last[DBS_EVENT_LEAK].line != line ||
        strcmp(last[DBS_EVENT_LEAK].func, "test_leak_site_every_acquire") != 0)
        CHECK_FAIL("%s: leak reported at %s:%d (%s), not test_observe.c:%d", what,
                   last[DBS_EVENT_LEAK].file, last[DBS_EVENT_LEAK].line,
                   last[DBS_EVENT_LEAK].func, line);
    pthread_mutex_unlock(&ev_mu);
}

static void unit_done_flag(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    (void)err;
    *(int *)arg = rc == DBS_OK ? 1 : -1;
}

static void test_leak_site_every_acquire(void)
{
    dbs_config cfg = observed();
    cfg.leak_threshold_ms = 50;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    int line;
    dbs_session *s;

    atomic_store(&site_leaks_before, events(DBS_EVENT_LEAK));
    s = dbs_session_open_ro(p, NULL, &err); line = __LINE__;
    if (!s)
        CHECK_FAIL("dbs_session_open_ro: %s", err.message);
    WAIT_UNTIL(events(DBS_EVENT_LEAK) > atomic_load(&site_leaks_before), 30000);
    check_leak_site(line, "dbs_session_open_ro");
    dbs_session_close(s);

    atomic_store(&site_leaks_before, events(DBS_EVENT_LEAK));
    s = dbs_session_open_ro_after(p, NULL, 0, &err); line = __LINE__;
    if (!s)
        CHECK_FAIL("dbs_session_open_ro_after: %s", err.message);
    WAIT_UNTIL(events(DBS_EVENT_LEAK) > atomic_load(&site_leaks_before), 30000);
    check_leak_site(line, "dbs_session_open_ro_after");
    dbs_session_close(s);

    atomic_store(&site_leaks_before, events(DBS_EVENT_LEAK));
    int rc = dbs_transact_ro(p, NULL, wait_own_leak, NULL, &err); line = __LINE__;
    CHECK_OK(rc, &err);
    check_leak_site(line, "dbs_transact_ro");

    atomic_store(&site_leaks_before, events(DBS_EVENT_LEAK));
    rc = dbs_transact_ro_after(p, NULL, 0, wait_own_leak, NULL, &err); line = __LINE__;
    CHECK_OK(rc, &err);
    check_leak_site(line, "dbs_transact_ro_after");

    atomic_store(&site_leaks_before, events(DBS_EVENT_LEAK));
    dbs_tx_options opt = {0};
    rc = dbs_transact_opts(p, NULL, &opt, wait_own_leak, NULL, &err); line = __LINE__;
    CHECK_OK(rc, &err);
    check_leak_site(line, "dbs_transact_opts");

    atomic_store(&site_leaks_before, events(DBS_EVENT_LEAK));
    rc = dbs_transact(p, NULL, wait_own_leak, NULL, &err); line = __LINE__;
    CHECK_OK(rc, &err);
    check_leak_site(line, "dbs_transact");

    if (!test_is_pg(cfg.url)) {
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        if (!l)
            CHECK_FAIL("dbs_loop_open: %s", err.message);
        int done = 0;
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err); line = __LINE__;
        CHECK(u);
        CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
        CHECK_OK(dbs_unit_submit(u, unit_done_flag, &done, &err), &err);
        struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
        int64_t end = now_ms() + 30000;
        while (dbs_loop_pending(l) > 0 && now_ms() < end) {
            (void)poll(&pfd, 1, dbs_loop_timeout_ms(l));
            CHECK_INT(dbs_loop_run(l), >=, 0);
        }
        CHECK_EQ(done, 1);
        pthread_mutex_lock(&ev_mu);
        if (!strstr(last[DBS_EVENT_CHECKOUT].file, "test_observe.c") ||
            last[DBS_EVENT_CHECKOUT].line != line)
            CHECK_FAIL("dbs_unit_new: checkout at %s:%d, not test_observe.c:%d",
                       last[DBS_EVENT_CHECKOUT].file, last[DBS_EVENT_CHECKOUT].line, line);
        pthread_mutex_unlock(&ev_mu);
        dbs_loop_close(l);
    }
    dbs_pool_close(p);
}

/* ---- the session list under load ---- */

enum { HOLDERS = 16 };
static pthread_barrier_t held_bar, listed;
static atomic_int holder_line; /* written by every holder, same value */
static atomic_bool stop_churn;

static void *holder(void *v)
{
    dbs_pool *p = v;
    char uid[32];
    snprintf(uid, sizeof uid, "holder-%lx", (unsigned long)pthread_self());
    dbs_context ctx = {.user_id = uid};
    dbs_error err;
    atomic_store(&holder_line, __LINE__ + 1);
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    if (!s)
        CHECK_FAIL("holder: %s", err.message);
    CHECK_OK(dbs_exec(s, "SELECT 1", NULL, 0, &err), &err); /* in a transaction */
    pthread_barrier_wait(&held_bar);
    pthread_barrier_wait(&listed);
    dbs_session_close(s);
    return NULL;
}

static void *churn(void *v)
{
    dbs_pool *p = v;
    while (!atomic_load(&stop_churn)) {
        dbs_error err;
        dbs_session *s = dbs_session_open(p, NULL, &err);
        if (s)
            dbs_session_close(s);
    }
    return NULL;
}

struct seen {
    int n, at_site, in_tx, churners;
    unsigned long threads[64];
};

static void visit(const dbs_session_info *in, void *user)
{
    struct seen *s = user;
    if (in->line == atomic_load(&holder_line) && strstr(in->file, "test_observe.c")) {
        s->at_site++;
        CHECK(in->ctx.user_id && strncmp(in->ctx.user_id, "holder-", 7) == 0);
        CHECK_STR(in->func, "holder");
        CHECK(in->conn_id > 0);
        CHECK_INT(in->age_ms, >=, 0);
        s->in_tx += in->in_transaction;
        for (int i = 0; i < s->n && i < 64; i++)
            CHECK(s->threads[i] != in->thread); /* one session a thread */
        if (s->n < 64)
            s->threads[s->n] = in->thread;
        s->n++;
    } else {
        s->churners++;
    }
}

static void test_session_list(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = HOLDERS + 2;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    pthread_barrier_init(&held_bar, NULL, HOLDERS + 1);
    pthread_barrier_init(&listed, NULL, HOLDERS + 1);
    pthread_t th[HOLDERS], ch[2];
    for (int i = 0; i < HOLDERS; i++)
        pthread_create(&th[i], NULL, holder, p);
    atomic_store(&stop_churn, false);
    for (int i = 0; i < 2; i++)
        pthread_create(&ch[i], NULL, churn, p);
    pthread_barrier_wait(&held_bar);
    for (int round = 0; round < 20; round++) { /* under churn, repeatedly */
        struct seen seen = {0};
        int n = dbs_pool_sessions(p, visit, &seen);
        CHECK_EQ(seen.at_site, HOLDERS);
        CHECK_EQ(seen.in_tx, HOLDERS);
        CHECK_EQ(n, seen.at_site + seen.churners);
        CHECK_INT(seen.churners, <=, 2);
    }
    pthread_barrier_wait(&listed);
    atomic_store(&stop_churn, true);
    for (int i = 0; i < HOLDERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(ch[i], NULL);
    struct seen none = {0};
    CHECK_EQ(dbs_pool_sessions(p, visit, &none), 0);
    CHECK_EQ(dbs_pool_sessions(NULL, visit, &none), DBS_EMISUSE);
    pthread_barrier_destroy(&held_bar);
    pthread_barrier_destroy(&listed);
    dbs_pool_close(p);
}

/* Sessions are listed oldest first, whichever threads hold them. */
struct order {
    unsigned long thread[4];
    int n;
};

static void record_order(const dbs_session_info *info, void *user)
{
    struct order *o = user;
    if (o->n < 4)
        o->thread[o->n] = info->thread;
    o->n++;
}

static pthread_barrier_t order_held, order_done;

static void *hold_one(void *v)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(v, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    pthread_barrier_wait(&order_held);
    pthread_barrier_wait(&order_done);
    dbs_session_close(s);
    return NULL;
}

static void test_session_list_order(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 4;
    dbs_pool *p = open_pool("observe", &cfg);
    pthread_barrier_init(&order_held, NULL, 2);
    pthread_barrier_init(&order_done, NULL, 2);
    pthread_t th;
    pthread_create(&th, NULL, hold_one, p);
    pthread_barrier_wait(&order_held);
    struct timespec pause = {0, 5 * 1000000};
    nanosleep(&pause, NULL);
    dbs_error err;
    dbs_session *mine = dbs_session_open(p, NULL, &err);
    CHECK(mine);
    struct order o = {0};
    CHECK_EQ(dbs_pool_sessions(p, record_order, &o), 2);
    CHECK(o.thread[0] == (unsigned long)th);
    CHECK(o.thread[1] == (unsigned long)pthread_self());
    dbs_session_close(mine);
    pthread_barrier_wait(&order_done);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&order_held);
    pthread_barrier_destroy(&order_done);
    dbs_pool_close(p);
}

/* ---- histograms ---- */

static void test_histogram_math(void)
{
    static dbs__hist h;
    dbs__hist_snap sn;
    for (int i = 1; i <= 100; i++)
        dbs__hist_add(&h, i * 1000); /* 1 ms .. 100 ms */
    dbs__hist_read(&h, &sn);
    CHECK_EQ(sn.count, 100);
    CHECK_EQ(sn.max_us, 100000);
    struct { double q; int64_t truth; } cases[] = {{0.5, 50000}, {0.9, 90000}, {0.99, 99000},
                                                   {1.0, 100000}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t got = dbs__hist_percentile(&sn, cases[i].q);
        /* never below the truth, at most one bucket (1/8 octave) above */
        CHECK_INT(got, >=, cases[i].truth);
        CHECK_INT(got, <=, cases[i].truth + cases[i].truth / 8 + 1);
    }
    for (int idx = 1; idx < DBS__HIST_BUCKETS; idx++)
        CHECK_INT(dbs__hist_upper(idx), >, dbs__hist_upper(idx - 1));
    static dbs__hist empty;
    dbs__hist_read(&empty, &sn);
    CHECK_EQ(dbs__hist_percentile(&sn, 0.5), 0);
}

struct waiter_arg {
    dbs_pool *pool;
};

static void *second_waiter(void *v)
{
    struct waiter_arg *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    CHECK(s);
    dbs_session_close(s);
    return NULL;
}

static void test_injected_delays(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    for (int i = 0; i < 5; i++) { /* five sessions held 30 ms each */
        dbs_session *s = dbs_session_open(p, NULL, &err);
        dbs__sleep_ms(30);
        dbs_session_close(s);
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.use_count, 5);
    CHECK_INT(st.use_p50_us, >=, 30000);
    CHECK_INT(st.use_max_us, >=, 30000);
    CHECK_INT(st.use_p50_us, <=, st.use_max_us);

    /* a waiter held up 60 ms */
    dbs_session *s = dbs_session_open(p, NULL, &err);
    struct waiter_arg a = {p};
    pthread_t th;
    pthread_create(&th, NULL, second_waiter, &a);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    dbs__sleep_ms(60);
    dbs_session_close(s);
    pthread_join(th, NULL);
    st = stats_of(p);
    CHECK_INT(st.wait_max_us, >=, 60000);
    CHECK_INT(st.wait_p99_us, >=, 60000);
    CHECK_INT(st.wait_p50_us, <, 60000); /* most acquires did not wait */
    dbs_pool_close(p);

    cfg.metrics = 0; /* off: nothing recorded */
    p = open_pool("observe", &cfg);
    s = dbs_session_open(p, NULL, &err);
    dbs_session_close(s);
    st = stats_of(p);
    CHECK_EQ(st.use_count, 0);
    CHECK_EQ(st.wait_count, 0);
    dbs_pool_close(p);
}

/* ---- events ---- */

static int fail_once(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    int *calls = arg;
    if ((*calls)++ == 0)
        return err->code = DBS_ERETRYABLE;
    return 0;
}

static void test_every_event(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 1;
    cfg.max_overflow = 1;
    cfg.acquire_timeout_ms = 50;
    cfg.slow_session_ms = 10;
    cfg.circuit_threshold = 1;
    cfg.circuit_cooldown_ms = 50;
    cfg.validation_window_ms = 0;
    cfg.retry_base_ms = 1;
    cfg.log_events = 0;
    int base[DBS_EVENT_CLOSE + 1];
    for (int k = 0; k <= DBS_EVENT_CLOSE; k++)
        base[k] = events((enum dbs_event_kind)k);
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_context ctx = {.request_id = "req-ev"};
    dbs_session *a = dbs_session_open(p, &ctx, &err); int line = __LINE__;
    CHECK(a);
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(last[DBS_EVENT_CHECKOUT].line, line);
    CHECK_STR(last[DBS_EVENT_CHECKOUT].request_id, "req-ev");
    pthread_mutex_unlock(&ev_mu);
    dbs_session *b = dbs_session_open(p, &ctx, &err); /* overflow: connect */
    CHECK(b);
    CHECK(dbs_session_open(p, &ctx, &err) == NULL); /* timeout */
    /* a failure's event says what failed (reason: "failures: the error
     * message"), so a tracer can record it as the span's error */
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(last[DBS_EVENT_TIMEOUT].code, DBS_ETIMEOUT);
    CHECK_CONTAINS(last[DBS_EVENT_TIMEOUT].reason, "timed out");
    pthread_mutex_unlock(&ev_mu);
    dbs__sleep_ms(15);
    dbs_session_close(b); /* slow session; overflow closed */
    dbs_session_close(a);
    atomic_store(&dbs__fault.fail_pings, 1);
    a = dbs_session_open(p, &ctx, &err); /* invalidate, then connect */
    CHECK(a);
    atomic_store(&dbs__fault.fail_connects, 1);
    CHECK(dbs_session_open(p, &ctx, &err) == NULL); /* connect_failed, circuit open */
    dbs__sleep_ms(60);
    b = dbs_session_open(p, &ctx, &err); /* the probe closes the circuit */
    CHECK(b);
    dbs_session_close(b);
    dbs_session_close(a);
    int calls = 0;
    CHECK_OK(dbs_transact(p, &ctx, fail_once, &calls, &err), &err); /* retry */
    pthread_mutex_lock(&ev_mu);
    CHECK_STR(last[DBS_EVENT_RETRY].request_id, "req-ev");
    pthread_mutex_unlock(&ev_mu);
    dbs_pool_close(p);

    enum dbs_event_kind expected[] = {
        DBS_EVENT_CONNECT, DBS_EVENT_CHECKOUT, DBS_EVENT_CHECKIN, DBS_EVENT_INVALIDATE,
        DBS_EVENT_RETRY, DBS_EVENT_SLOW_SESSION, DBS_EVENT_CIRCUIT_OPEN,
        DBS_EVENT_CIRCUIT_CLOSE, DBS_EVENT_TIMEOUT, DBS_EVENT_CONNECT_FAILED, DBS_EVENT_CLOSE};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        if (events(expected[i]) <= base[expected[i]])
            CHECK_FAIL("event kind %d was never delivered", (int)expected[i]);
    pthread_mutex_lock(&ev_mu);
    CHECK_STR(last[DBS_EVENT_CLOSE].reason, "overflow");
    pthread_mutex_unlock(&ev_mu);
}

/* The invalidate event of a connection discarded at check-in carries the
 * failure that broke its session, as every failure's event does (code:
 * its dbs_code; reason: its message), not a generic "broken": here a
 * statement past its bound (DBS_ESTMT_TIMEOUT). */
static void test_invalidate_carries_failure(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 1;
    cfg.statement_timeout_ms = 100;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    const char *forever = be == DBS_BACKEND_POSTGRESQL ? "SELECT pg_sleep(3600)"
                          : be == DBS_BACKEND_MARIADB  ? "SELECT SLEEP(3600)"
                                                       : "WITH RECURSIVE n(i) AS (SELECT 1 UNION "
                                                         "ALL SELECT i + 1 FROM n) SELECT "
                                                         "count(*) FROM n";
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    int before = events(DBS_EVENT_INVALIDATE);
    CHECK_EQ(dbs_exec(s, forever, NULL, 0, &err), DBS_ESTMT_TIMEOUT);
    dbs_session_close(s);
    CHECK_EQ(events(DBS_EVENT_INVALIDATE), before + 1);
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(last[DBS_EVENT_INVALIDATE].code, DBS_ESTMT_TIMEOUT);
    char head[64];
    snprintf(head, sizeof head, "%.60s", err.message); /* the recorder keeps 127 bytes */
    CHECK_CONTAINS(last[DBS_EVENT_INVALIDATE].reason, head);
    pthread_mutex_unlock(&ev_mu);
    dbs_pool_close(p);
}

/* dbs_pool_open's own connection is announced like any other, and so is
 * its failure. */
static void test_open_connect_event(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    int connects = events(DBS_EVENT_CONNECT);
    dbs_pool *p = open_pool("observe", &cfg);
    CHECK_EQ(events(DBS_EVENT_CONNECT), connects + 1);
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(last[DBS_EVENT_CONNECT].conn_id, 1);
    CHECK_EQ(last[DBS_EVENT_CONNECT].code, 0);
    CHECK_EQ(last[DBS_EVENT_CONNECT].attempt, 0);
    pthread_mutex_unlock(&ev_mu);
    CHECK_EQ(stats_of(p).created, 1);
    dbs_pool_close(p);

    int failed = events(DBS_EVENT_CONNECT_FAILED);
    atomic_store(&dbs__fault.fail_connects, 1);
    dbs_error err;
    cfg.url = test_url("observe");
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(events(DBS_EVENT_CONNECT_FAILED), failed + 1);
    pthread_mutex_lock(&ev_mu);
    CHECK_EQ(last[DBS_EVENT_CONNECT_FAILED].code, err.code);
    CHECK_CONTAINS(last[DBS_EVENT_CONNECT_FAILED].reason, "injected fault");
    pthread_mutex_unlock(&ev_mu);
}

/* attempt: the run of dbs_transact an event belongs to. */
static int fail_twice(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    int *calls = arg;
    if ((*calls)++ < 2)
        return err->code = DBS_ERETRYABLE;
    return 0;
}

static int retries_seen[8], n_retries_seen, checkouts_seen[8], n_checkouts_seen;

static void on_attempt(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_RETRY && n_retries_seen < 8)
        retries_seen[n_retries_seen++] = ev->attempt;
    if (ev->kind == DBS_EVENT_CHECKOUT && n_checkouts_seen < 8)
        checkouts_seen[n_checkouts_seen++] = ev->attempt;
    if (ev->kind != DBS_EVENT_RETRY && ev->kind != DBS_EVENT_CHECKOUT &&
        ev->kind != DBS_EVENT_CHECKIN && ev->kind != DBS_EVENT_CONNECT)
        CHECK_FAIL("unexpected event %s", ev->name);
}

static void test_attempt(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.on_event = on_attempt;
    cfg.retry_base_ms = 1;
    dbs_pool *p = open_pool("observe", &cfg);
    n_retries_seen = n_checkouts_seen = 0;
    int calls = 0;
    dbs_error err;
    CHECK_OK(dbs_transact(p, NULL, fail_twice, &calls, &err), &err);
    CHECK_EQ(calls, 3);
    CHECK_EQ(n_retries_seen, 2);
    CHECK_EQ(retries_seen[0], 2); /* the attempt about to run */
    CHECK_EQ(retries_seen[1], 3);
    CHECK_EQ(n_checkouts_seen, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(checkouts_seen[i], i + 1); /* the run each session was for */
    dbs_session *s = open_ok(p); /* outside dbs_transact: 0 */
    dbs_session_close(s);
    CHECK_EQ(n_checkouts_seen, 4);
    CHECK_EQ(checkouts_seen[3], 0);
    dbs_pool_close(p);
}

/* The default logger and on_event: by default (log_events -1) a program
 * that set on_event gets each event once, there, and nothing on stderr; one
 * without on_event gets the log lines; log_events = 1 asks for both. */
static int logged_events(int log_events, bool listen, int *heard)
{
    dbs_config cfg = observed();
    if (!listen)
        cfg.on_event = NULL;
    if (log_events != -2)
        cfg.log_events = log_events;
    cfg.validation_window_ms = 0; /* every check-out pings */
    int saved;
    const char *path = capture_stderr_begin(&saved);
    int before = events(DBS_EVENT_INVALIDATE);
    dbs_pool *p = open_pool("observe", &cfg);
    atomic_store(&dbs__fault.fail_pings, 1);
    dbs_session *s = open_ok(p); /* invalidate, then connect */
    dbs_session_close(s);
    atomic_store(&dbs__fault.fail_pings, 0);
    dbs_pool_close(p);
    *heard = events(DBS_EVENT_INVALIDATE) - before;
    const char *text = capture_stderr_end(saved, path);
    int n = 0;
    for (const char *q = text; (q = strstr(q, "event=invalidate")); q++)
        n++;
    return n;
}

static void test_log_or_listen(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    CHECK_EQ(cfg.log_events, -1);
    int heard;
    CHECK_EQ(logged_events(-2, true, &heard), 0); /* the default, with on_event */
    CHECK_EQ(heard, 1);
    CHECK_EQ(logged_events(-2, false, &heard), 1); /* the default, no on_event */
    CHECK_EQ(heard, 0);
    CHECK_EQ(logged_events(1, true, &heard), 1); /* both, asked for */
    CHECK_EQ(heard, 1);
    CHECK_EQ(logged_events(0, false, &heard), 0);

    cfg.url = test_url("observe");
    cfg.log_events = 2;
    dbs_error err;
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "log_events is 2");
}

/* ---- callbacks that call back ---- */

/* The promise: on_event runs with no pool lock held, so it may call
 * dbs_pool_stats, and the calls that take the same locks (the exports, the
 * session list, the circuit, the histograms). Each event below does all of
 * them; a lock held around any event deadlocks (the alarm ends it), and
 * every snapshot seen from inside one must add up. */
static _Atomic(dbs_pool *) reenter_pool;
static atomic_int reentered;

static void check_snapshot(const dbs_stats *st)
{
    if (st->size != st->idle + st->in_use || st->idle < 0 || st->in_use < 0 ||
        st->waiting < 0 || st->pending < 0 ||
        (uint64_t)st->size != st->created - st->closed)
        CHECK_FAIL("inconsistent stats: size %d idle %d in_use %d waiting %d pending %d "
                   "created %llu closed %llu",
                   st->size, st->idle, st->in_use, st->waiting, st->pending,
                   (unsigned long long)st->created, (unsigned long long)st->closed);
    uint64_t by_reason = st->closed_lifetime + st->closed_idle + st->closed_broken +
                         st->closed_overflow + st->closed_dirty + st->closed_pool;
    if (by_reason > st->closed)
        CHECK_FAIL("closed %llu, by reason %llu", (unsigned long long)st->closed,
                   (unsigned long long)by_reason);
}

static void count_session(const dbs_session_info *in, void *user)
{
    (void)in;
    ++*(int *)user;
}

static void on_event_reenter(const dbs_event *ev, void *user)
{
    (void)user;
    dbs_pool *p = atomic_load(&reenter_pool);
    if (!p || ev->kind == DBS_EVENT_NOTICE)
        return;
    dbs_stats st;
    dbs_pool_stats(p, &st);
    check_snapshot(&st);
    static _Thread_local char text[65536];
    CHECK_INT(dbs_pool_metrics(p, text, sizeof text), >, 0);
    CHECK_INT(dbs_pool_stats_json(p, text, sizeof text), >, 0);
    int n = 0;
    CHECK_INT(dbs_pool_sessions(p, count_session, &n), >=, 0);
    CHECK_INT(dbs_pool_circuit(p), >=, 0);
    (void)dbs_pool_errors(p, 0, NULL);
    static _Thread_local dbs_histogram h;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_WAIT, &h), DBS_OK);
    atomic_fetch_add(&reentered, 1);
}

static void unit_done_noop(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    (void)err;
    /* acquire_timeout_ms is 50 here (for the timeout event): on a slow
     * build a unit queued behind the others may run out of it */
    *(int *)arg = rc == DBS_OK ? 1 : rc == DBS_ETIMEOUT ? 2 : -1;
}

static void test_reentrant_callbacks(void)
{
    alarm(120); /* a deadlock fails the test instead of hanging it */
    dbs_config cfg = observed();
    cfg.on_event = on_event_reenter;
    cfg.pool_size = 1;
    cfg.max_overflow = 1;
    cfg.acquire_timeout_ms = 50;
    cfg.slow_session_ms = 10;
    cfg.leak_threshold_ms = 40;
    cfg.circuit_threshold = 1;
    cfg.circuit_cooldown_ms = 50;
    cfg.validation_window_ms = 0;
    cfg.retry_base_ms = 1;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    atomic_store(&reenter_pool, p);
    atomic_store(&reentered, 0);
    dbs_error err;
    dbs_session *a = open_ok(p);
    dbs_session *b = open_ok(p);                  /* overflow: connect */
    CHECK(dbs_session_open(p, NULL, &err) == NULL); /* timeout */
    WAIT_UNTIL(stats_of(p).leaks == 2, 30000);     /* leak, from the housekeeper */
    dbs_session_close(b);                          /* slow, recovered, overflow close */
    dbs_session_close(a);
    atomic_store(&dbs__fault.fail_pings, 1);
    a = open_ok(p); /* invalidate, then connect */
    atomic_store(&dbs__fault.fail_connects, 1);
    CHECK(dbs_session_open(p, NULL, &err) == NULL); /* connect_failed, circuit open */
    dbs__sleep_ms(60);
    b = open_ok(p); /* the probe closes the circuit */
    dbs_session_close(b);
    dbs_session_close(a);
    int calls = 0;
    CHECK_OK(dbs_transact(p, NULL, fail_once, &calls, &err), &err); /* retry */

    /* the event loop's check-outs and check-ins */
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    int done[4] = {0};
    for (int i = 0; i < 4; i++) {
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u);
        CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
        CHECK_OK(dbs_unit_submit(u, unit_done_noop, &done[i], &err), &err);
    }
    struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
    int64_t end = now_ms() + 30000;
    while (dbs_loop_pending(l) > 0 && now_ms() < end) {
        (void)poll(&pfd, 1, dbs_loop_timeout_ms(l));
        CHECK_INT(dbs_loop_run(l), >=, 0);
    }
    for (int i = 0; i < 4; i++)
        CHECK(done[i] == 1 || done[i] == 2);
    CHECK_EQ(done[0], 1); /* first in line: a connection was free */
    dbs_loop_close(l);

    a = open_ok(p); /* still open at dbs_pool_close: a leak event from inside it */
    dbs_pool_shutdown(p, 0);
    dbs_session_close(a);
    atomic_store(&reenter_pool, NULL);
    dbs_pool_close(p);
    alarm(0);
    CHECK_INT(atomic_load(&reentered), >, 10);
}

/* ---- stats add up at every instant ---- */

static atomic_bool consistency_stop;

static void *stats_reader(void *arg)
{
    dbs_pool *p = arg;
    dbs_stats prev = {0};
    long reads = 0;
    while (!atomic_load(&consistency_stop)) {
        dbs_stats st;
        dbs_pool_stats(p, &st);
        check_snapshot(&st);
        /* counters never go back */
        const uint64_t *a = &prev.acquired, *b = &st.acquired;
        for (int i = 0; i < 7; i++)
            if (b[i] < a[i])
                CHECK_FAIL("counter %d went back: %llu to %llu", i,
                           (unsigned long long)a[i], (unsigned long long)b[i]);
        if (st.wait_count < prev.wait_count || st.use_count < prev.use_count)
            CHECK_FAIL("histogram counts went back");
        prev = st;
        reads++;
    }
    return (void *)reads;
}

static void *session_churn(void *arg)
{
    dbs_pool *p = arg;
    while (!atomic_load(&consistency_stop)) {
        dbs_error err;
        dbs_session *s = dbs_session_open(p, NULL, &err);
        if (!s)
            continue; /* a timeout under the load: fine */
        (void)dbs_exec(s, "SELECT 1", NULL, 0, &err);
        dbs_session_close(s);
    }
    return NULL;
}

static void *loop_churn(void *arg)
{
    dbs_pool *p = arg;
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
    int done[8];
    while (!atomic_load(&consistency_stop)) {
        for (int i = 0; i < 8; i++) {
            dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
            CHECK(u);
            CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
            CHECK_OK(dbs_unit_submit(u, unit_done_noop, &done[i], &err), &err);
        }
        while (dbs_loop_pending(l) > 0) {
            (void)poll(&pfd, 1, dbs_loop_timeout_ms(l));
            CHECK_INT(dbs_loop_run(l), >=, 0);
        }
    }
    dbs_loop_close(l);
    return NULL;
}

static void test_stats_consistent_under_load(void)
{
    static const enum dbs_pool_mode modes[] = {DBS_POOL_QUEUE, DBS_POOL_NONE};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        dbs_config cfg = observed();
        cfg.on_event = NULL;
        cfg.log_events = 0;
        cfg.mode = modes[m];
        cfg.pool_size = 2;
        cfg.max_overflow = 2;
        cfg.max_lifetime_ms = 50; /* lifetime closes all along */
        cfg.acquire_timeout_ms = 2000;
        dbs_pool *p = open_pool("observe", &cfg);
        atomic_store(&consistency_stop, false);
        pthread_t rd, th[4], lt;
        CHECK(pthread_create(&rd, NULL, stats_reader, p) == 0);
        for (int i = 0; i < 4; i++)
            CHECK(pthread_create(&th[i], NULL, session_churn, p) == 0);
        CHECK(pthread_create(&lt, NULL, loop_churn, p) == 0);
        dbs__sleep_ms(1500);
        atomic_store(&consistency_stop, true);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        pthread_join(lt, NULL);
        void *reads;
        pthread_join(rd, &reads);
        CHECK_INT((long)reads, >, 0);
        dbs_stats st = stats_of(p);
        check_snapshot(&st);
        CHECK_EQ(st.acquired, st.released);
        /* A connection the housekeeper is closing (lifetime) counts in use
         * until its close returns: wait for that, generously. */
        for (int i = 0; i < 1000 && st.in_use != 0; i++) {
            dbs__sleep_ms(10);
            st = stats_of(p);
        }
        CHECK_EQ(st.in_use, 0);
        dbs_pool_close(p);
    }
}

/* ---- exports ---- */

static bool is_name(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return n > 0;
}

struct sample {
    char name[96], labels[256];
    double value;
};

/* A strict reader of the text exposition format: every line is a HELP or
 * TYPE comment or a sample of a family already typed. */
static int parse_prometheus(char *text, struct sample *out, int max)
{
    char typed[128][96];
    char types[128][16];
    int ntyped = 0, n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            const char *sp = strchr(line + 7, ' ');
            CHECK(sp && is_name(line + 7, (size_t)(sp - line - 7)) && sp[1]);
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[16];
            CHECK(sscanf(line + 7, "%95s %15s", name, type) == 2);
            CHECK(strcmp(type, "gauge") == 0 || strcmp(type, "counter") == 0 ||
                  strcmp(type, "histogram") == 0);
            CHECK(ntyped < 128);
            snprintf(typed[ntyped], sizeof typed[0], "%s", name);
            snprintf(types[ntyped++], sizeof types[0], "%s", type);
            continue;
        }
        CHECK(line[0] != '#');
        const char *brace = strchr(line, '{');
        CHECK(brace);
        size_t nl = (size_t)(brace - line);
        CHECK(is_name(line, nl) && nl < 96);
        const char *close = strchr(brace, '}');
        CHECK(close && close[1] == ' ');
        struct sample *s = &out[n++];
        CHECK(n <= max);
        memcpy(s->name, line, nl);
        s->name[nl] = '\0';
        snprintf(s->labels, sizeof s->labels, "%.*s", (int)(close - brace - 1), brace + 1);
        /* labels: k="v" pairs */
        const char *q = s->labels;
        while (*q) {
            const char *eq = strchr(q, '=');
            CHECK(eq && is_name(q, (size_t)(eq - q)) && eq[1] == '"');
            q = eq + 2;
            while (*q && *q != '"')
                q += (*q == '\\') ? 2 : 1;
            CHECK(*q == '"');
            q++;
            if (*q == ',')
                q++;
        }
        char *end;
        s->value = strtod(close + 2, &end);
        CHECK(*end == '\0' && end != close + 2);
        bool family = false;
        for (int i = 0; i < ntyped; i++) {
            size_t tl = strlen(typed[i]);
            if (strcmp(types[i], "histogram") == 0
                    ? strncmp(s->name, typed[i], tl) == 0 &&
                          (!strcmp(s->name + tl, "_bucket") || !strcmp(s->name + tl, "_sum") ||
                           !strcmp(s->name + tl, "_count"))
                    : strcmp(s->name, typed[i]) == 0)
                family = true;
        }
        if (!family)
            CHECK_FAIL("sample %s has no TYPE line before it", s->name);
    }
    return n;
}

static double sample(const struct sample *s, int n, const char *name, const char *labels)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0 && strcmp(s[i].labels, labels) == 0)
            return s[i].value;
    CHECK_FAIL("no sample %s{%s}", name, labels);
}

static void test_exports(void)
{
    dbs_config cfg = observed();
    cfg.name = "main \"db\"";
    cfg.pool_size = 3;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    for (int i = 0; i < 20; i++) {
        dbs_session *s = dbs_session_open(p, NULL, &err);
        dbs_session_close(s);
    }
    dbs_session *held = dbs_session_open(p, NULL, &err);
    dbs_stats st = stats_of(p);
    static char text[65536];
    int n = dbs_pool_metrics(p, text, sizeof text);
    CHECK_INT(n, >, 0);
    CHECK_INT(n, <, (int)sizeof text);
    CHECK_EQ((int)strlen(text), n);
    static struct sample s[512];
    int ns = parse_prometheus(text, s, 512);
    const char *L = "pool=\"main \\\"db\\\"\",target=\"primary\"";
    char lab[128];
    snprintf(lab, sizeof lab, "%s,state=\"in_use\"", L);
    CHECK_EQ(sample(s, ns, "dbscope_connections", lab), st.in_use);
    snprintf(lab, sizeof lab, "%s,state=\"idle\"", L);
    CHECK_EQ(sample(s, ns, "dbscope_connections", lab), st.idle);
    CHECK_EQ(sample(s, ns, "dbscope_acquired_total", L), st.acquired);
    CHECK_EQ(sample(s, ns, "dbscope_released_total", L), st.released);
    CHECK_EQ(sample(s, ns, "dbscope_connections_created_total", L), st.created);
    CHECK_EQ(sample(s, ns, "dbscope_connections_max", L), st.max_size);
    CHECK_EQ(sample(s, ns, "dbscope_acquire_timeouts_total", L), st.timeouts);
    CHECK_EQ(sample(s, ns, "dbscope_waiting_threads", L), st.waiting);
    CHECK_EQ(sample(s, ns, "dbscope_acquire_wait_seconds_count", L), st.wait_count);
    CHECK_EQ(sample(s, ns, "dbscope_session_duration_seconds_count", L), st.use_count);
    /* histogram buckets are cumulative and end at the count */
    double prev = 0;
    int buckets = 0;
    for (int i = 0; i < ns; i++) {
        if (strcmp(s[i].name, "dbscope_acquire_wait_seconds_bucket") != 0)
            continue;
        CHECK(s[i].value >= prev);
        prev = s[i].value;
        buckets++;
        if (strstr(s[i].labels, "le=\"+Inf\""))
            CHECK_EQ(s[i].value, st.wait_count);
    }
    CHECK_INT(buckets, >, 10);

    /* too small a buffer: cut, terminated, and the full length returned */
    char small[64];
    CHECK_EQ(dbs_pool_metrics(p, small, sizeof small), n);
    CHECK_EQ(strlen(small), sizeof small - 1);
    CHECK_EQ(dbs_pool_metrics(p, NULL, 0), n);
    /* exactly one byte short: all but the last character, terminated */
    static char exact[65536];
    CHECK_EQ(dbs_pool_metrics(p, exact, (size_t)n), n);
    CHECK_EQ(strlen(exact), (size_t)n - 1);
    CHECK_EQ(dbs_pool_metrics(p, exact, 1), n);
    CHECK_EQ(exact[0], '\0');
    /* a failure leaves no stale text behind either: always terminated */
    memset(small, 'x', sizeof small);
    CHECK_EQ(dbs_pool_metrics(NULL, small, sizeof small), DBS_EMISUSE);
    CHECK_EQ(small[0], '\0');
    memset(small, 'x', sizeof small);
    CHECK_EQ(dbs_pool_stats_json(NULL, small, sizeof small), DBS_EMISUSE);
    CHECK_EQ(small[0], '\0');

    /* JSON */
    char json[4096];
    int jn = dbs_pool_stats_json(p, json, sizeof json);
    CHECK_INT(jn, >, 0);
    CHECK_INT(jn, <, (int)sizeof json);
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        CHECK_FAIL("stats JSON does not parse: %s: %s", jerr.text, json);
    CHECK_STR(json_string_value(json_object_get(root, "pool")), "main \"db\"");
    CHECK_EQ(json_integer_value(json_object_get(root, "acquired")), st.acquired);
    CHECK_EQ(json_integer_value(json_object_get(root, "in_use")), st.in_use);
    CHECK_EQ(json_integer_value(json_object_get(root, "size")), st.size);
    json_t *w = json_object_get(root, "wait_us");
    CHECK(json_is_object(w));
    CHECK_EQ(json_integer_value(json_object_get(w, "count")), st.wait_count);
    CHECK_EQ(json_integer_value(json_object_get(w, "p99")), st.wait_p99_us);
    json_decref(root);
    dbs_session_close(held);
    dbs_pool_close(p);
}

/* Whether s[0..n) is well-formed UTF-8 (no overlong form, no surrogate):
 * what a Prometheus server requires of a label value. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                             : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n || (k == 2 && c < 0xC2) || (k == 4 && c > 0xF4))
            return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
        if ((k == 3 && c == 0xE0 && s[i + 1] < 0xA0) || (k == 3 && c == 0xED && s[i + 1] >= 0xA0) ||
            (k == 4 && c == 0xF0 && s[i + 1] < 0x90) || (k == 4 && c == 0xF4 && s[i + 1] >= 0x90))
            return false;
        i += k;
    }
    return true;
}

/* What `promtool check metrics` and a Prometheus scrape demand of the text
 * format, checked on the whole text: HELP and TYPE at most once a family,
 * TYPE before its samples; metric and label names well formed, no label
 * twice in a series; label values valid UTF-8 with only the \\, \" and \n
 * escapes; a value a float reads (NaN and +-Inf included); no series
 * twice; and each histogram series' buckets cumulative, with le="+Inf"
 * equal to its _count. Fails the test on the first breach. */
static void check_exposition(const char *text)
{
    enum { FAM = 128, SER = 8192 };
    static char fam[FAM][96], ftype[FAM][16];
    static bool fhelp[FAM], ftyped[FAM];
    static char *series[SER];
    int nfam = 0, nser = 0;
    size_t len = strlen(text);
    CHECK(len > 0 && text[len - 1] == '\n');
    char *copy = strdup(text);
    CHECK(copy);
    for (char *line = copy, *next; *line; line = next) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        next = nl + 1;
        if (line[0] == '#') {
            bool help = strncmp(line, "# HELP ", 7) == 0;
            CHECK(help || strncmp(line, "# TYPE ", 7) == 0);
            const char *name = line + 7, *sp = strchr(name, ' ');
            if (!sp || !is_name(name, (size_t)(sp - name)) || (size_t)(sp - name) >= 96)
                CHECK_FAIL("bad comment line: %s", line);
            int f = 0;
            while (f < nfam && (strlen(fam[f]) != (size_t)(sp - name) ||
                                strncmp(fam[f], name, (size_t)(sp - name)) != 0))
                f++;
            if (f == nfam) {
                CHECK(nfam < FAM);
                snprintf(fam[nfam], sizeof fam[0], "%.*s", (int)(sp - name), name);
                fhelp[nfam] = ftyped[nfam] = false;
                nfam++;
            }
            if (help) {
                if (fhelp[f])
                    CHECK_FAIL("second HELP line for %s", fam[f]);
                fhelp[f] = true;
                for (const char *q = sp + 1; *q; q++)
                    if (*q == '\\' && q[1] != '\\' && q[1] != 'n')
                        CHECK_FAIL("bad escape in HELP of %s", fam[f]);
                    else if (*q == '\\')
                        q++;
            } else {
                if (ftyped[f])
                    CHECK_FAIL("second TYPE line for %s", fam[f]);
                ftyped[f] = true;
                snprintf(ftype[f], sizeof ftype[0], "%s", sp + 1);
                CHECK(!strcmp(ftype[f], "gauge") || !strcmp(ftype[f], "counter") ||
                      !strcmp(ftype[f], "histogram") || !strcmp(ftype[f], "summary") ||
                      !strcmp(ftype[f], "untyped"));
            }
            continue;
        }
        /* a sample: name{labels} value */
        const char *p = line;
        while (*p && *p != '{' && *p != ' ')
            p++;
        size_t nlen = (size_t)(p - line);
        if (!is_name(line, nlen))
            CHECK_FAIL("bad metric name in: %s", line);
        char labnames[16][64];
        int nlab = 0;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                const char *k = p;
                while (*p && *p != '=')
                    p++;
                if (*p != '=' || !is_name(k, (size_t)(p - k)) || p[1] != '"')
                    CHECK_FAIL("bad label in: %s", line);
                CHECK(nlab < 16 && (size_t)(p - k) < 64);
                snprintf(labnames[nlab], 64, "%.*s", (int)(p - k), k);
                for (int i = 0; i < nlab; i++)
                    if (!strcmp(labnames[i], labnames[nlab]))
                        CHECK_FAIL("label %s twice in: %s", labnames[i], line);
                nlab++;
                p += 2;
                const char *v = p;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                        CHECK_FAIL("bad escape in label value: %s", line);
                    p += *p == '\\' ? 2 : 1;
                }
                if (*p != '"')
                    CHECK_FAIL("unterminated label value: %s", line);
                if (!utf8_ok((const unsigned char *)v, (size_t)(p - v)))
                    CHECK_FAIL("label value not UTF-8: %s", line);
                p++;
                if (*p == ',')
                    p++;
                else if (*p != '}')
                    CHECK_FAIL("bad label list: %s", line);
            }
            p++;
        }
        if (*p != ' ')
            CHECK_FAIL("no value in: %s", line);
        p++;
        if (strcmp(p, "NaN") && strcmp(p, "+Inf") && strcmp(p, "-Inf")) {
            char *end;
            errno = 0;
            double v = strtod(p, &end);
            if (end == p || *end != '\0' || errno == ERANGE || v != v)
                CHECK_FAIL("bad value in: %s", line);
        }
        /* the sample's family, typed before it */
        int f = -1;
        for (int i = 0; i < nfam && f < 0; i++) {
            size_t tl = strlen(fam[i]);
            bool hist = !strcmp(ftype[i], "histogram");
            if (nlen == tl && !strncmp(line, fam[i], tl))
                f = hist ? -2 : i; /* a histogram's own name has no samples */
            else if (hist && nlen > tl && !strncmp(line, fam[i], tl) &&
                     (!strncmp(line + tl, "_bucket", nlen - tl) ||
                      !strncmp(line + tl, "_sum", nlen - tl) ||
                      !strncmp(line + tl, "_count", nlen - tl)) &&
                     (nlen - tl == 7 || nlen - tl == 4 || nlen - tl == 6))
                f = i;
        }
        if (f < 0 || !ftyped[f])
            CHECK_FAIL("sample without its family's TYPE before it: %s", line);
        const char *sp = strrchr(line, ' ');
        CHECK(nser < SER);
        series[nser] = strndup(line, (size_t)(sp - line));
        CHECK(series[nser]);
        for (int i = 0; i < nser; i++)
            if (!strcmp(series[i], series[nser]))
                CHECK_FAIL("series twice: %s", series[nser]);
        nser++;
    }
    /* histograms: per series, buckets cumulative up to +Inf = _count */
    for (int i = 0; i < nser; i++) {
        char *b = strstr(series[i], "_bucket{");
        if (!b || !strstr(series[i], ",le=\"+Inf\"}"))
            continue;
        size_t stem = (size_t)(b - series[i]);
        char labs[512];
        snprintf(labs, sizeof labs, "%.*s", (int)(strstr(series[i], ",le=\"+Inf\"}") - b - 8),
                 b + 8);
        /* the values of this series' buckets, in text order */
        char want_b[700], want_c[700];
        snprintf(want_b, sizeof want_b, "%.*s_bucket{%s,le=", (int)stem, series[i], labs);
        snprintf(want_c, sizeof want_c, "%.*s_count{%s} ", (int)stem, series[i], labs);
        double prev = -1, inf = -1, count = -2;
        for (const char *q = text; *q;) {
            const char *eol = strchr(q, '\n');
            const char *sp = eol;
            while (sp > q && sp[-1] != ' ')
                sp--;
            double v = strtod(sp, NULL);
            if (!strncmp(q, want_b, strlen(want_b))) {
                if (v < prev)
                    CHECK_FAIL("histogram buckets not cumulative at: %.*s", (int)(eol - q), q);
                prev = v;
                if (!strncmp(q + strlen(want_b), "\"+Inf\"", 6))
                    inf = v;
            } else if (!strncmp(q, want_c, strlen(want_c))) {
                count = v;
            }
            q = eol + 1;
        }
        if (inf != count)
            CHECK_FAIL("histogram %.*s{%s}: +Inf bucket %g, _count %g", (int)stem, series[i],
                       labs, inf, count);
    }
    for (int i = 0; i < nser; i++)
        free(series[i]);
    free(copy);
}

/* A pool's name is the operator's free text: a quote, a backslash, a
 * newline, a tab, bytes that are no UTF-8. Every export stays valid: the
 * Prometheus text by the rules a scrape applies, the JSON by a parser. */
static void test_hostile_names(void)
{
    static const char *const names[] = {
        "main \"db\"", "back\\slash", "new\nline", "tab\there", "caf\xc3\xa9 ok",
        "bad \xff\xfe utf8", "cut \xc3", "overlong \xc0\xaf", "surrogate \xed\xa0\x80", "",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        dbs_config cfg = observed();
        cfg.name = names[i];
        cfg.log_events = 0;
        dbs_pool *p = open_pool("observe", &cfg);
        dbs_session *s = open_ok(p);
        dbs_error err;
        CHECK(dbs_exec(s, "SELEC 1", NULL, 0, &err) < 0); /* an errors_total series */
        dbs_session_close(s);
        static char text[262144];
        int n = dbs_pool_metrics(p, text, sizeof text);
        CHECK_INT(n, >, 0);
        CHECK_INT(n, <, (int)sizeof text);
        check_exposition(text);
        static char json[16384];
        CHECK_INT(dbs_pool_stats_json(p, json, sizeof json), <, (int)sizeof json);
        json_error_t jerr;
        json_t *root = json_loads(json, 0, &jerr);
        if (!root)
            CHECK_FAIL("stats JSON of pool %zu does not parse: %s", i, jerr.text);
        json_decref(root);
        dbs_pool_close(p);
    }
}

/* An export under way when the pool is closed stays safe (the header:
 * "calls already under way ... dbs_pool_stats ... stay safe"): a scrape on
 * the metrics endpoint's thread while the server shuts down. The call is
 * held in the middle of writing its text (the caller's buffer runs into a
 * page that faults until released) while dbs_pool_close runs; the pool's
 * memory, freed by the close under it before, must outlive the call. */
static char *guard_page;
static size_t guard_size;
static atomic_int guard_state; /* 1: a write is held at the page; 2: let it go */

static void on_guard_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char *a = si->si_addr;
    if (!guard_page || a < guard_page || a >= guard_page + guard_size) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    atomic_store(&guard_state, 1);
    while (atomic_load(&guard_state) != 2) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    mprotect(guard_page, guard_size, PROT_READ | PROT_WRITE);
}

struct held_export {
    dbs_pool *p;
    char *buf;
    size_t len;
    bool json;
    int rc;
};

static void *held_export(void *arg)
{
    struct held_export *h = arg;
    h->rc = h->json ? dbs_pool_stats_json(h->p, h->buf, h->len)
                    : dbs_pool_metrics(h->p, h->buf, h->len);
    return NULL;
}

static void test_export_across_close(void)
{
    guard_size = (size_t)sysconf(_SC_PAGESIZE);
    char *mem;
    CHECK(posix_memalign((void **)&mem, guard_size, 2 * guard_size) == 0);
    struct sigaction sa = {0}, old;
    sa.sa_sigaction = on_guard_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGSEGV, &sa, &old) == 0);
    for (int json = 0; json < 2; json++) {
        dbs_config cfg = observed();
        cfg.name = "closing";
        cfg.log_events = 0;
        dbs_pool *p = open_pool("observe", &cfg);
        dbs_session_close(open_ok(p));
        /* the text starts 100 bytes before the page that holds it up */
        guard_page = mem + guard_size;
        CHECK(mprotect(guard_page, guard_size, PROT_NONE) == 0);
        atomic_store(&guard_state, 0);
        struct held_export h = {p, guard_page - 100, 100 + guard_size, json != 0, 0};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, held_export, &h) == 0);
        WAIT_UNTIL(atomic_load(&guard_state) == 1, 30000);
        CHECK_EQ(atomic_load(&guard_state), 1);
        dbs_pool_close(p); /* the export is under way */
        /* the call's hold on the pool is all that is left of it; before,
         * nothing held it and this read memory the close had freed */
        if (atomic_load(&p->refs) < 1 || p->magic != DBS__POOL_MAGIC)
            CHECK_FAIL("%s under way: the pool was freed by dbs_pool_close under it",
                       json ? "dbs_pool_stats_json" : "dbs_pool_metrics");
        atomic_store(&guard_state, 2);
        pthread_join(t, NULL);
        CHECK_INT(h.rc, >, 100);
        guard_page = NULL;
    }
    CHECK(sigaction(SIGSEGV, &old, NULL) == 0);
    free(mem);
}

/* ---- OpenTelemetry's names, the error table, the circuit ---- */

static double sample_or(const struct sample *s, int n, const char *name, const char *labels,
                        double dflt)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0 && strcmp(s[i].labels, labels) == 0)
            return s[i].value;
    return dflt;
}

static int metrics_of(dbs_pool *p, struct sample *s, int max)
{
    static char text[262144];
    int n = dbs_pool_metrics(p, text, sizeof text);
    CHECK_INT(n, >, 0);
    CHECK_INT(n, <, (int)sizeof text);
    check_exposition(text);
    return parse_prometheus(text, s, max);
}

/* A Prometheus bucket counts the values up to and including its le: a
 * wait of exactly 1 µs (an uncontended acquire) belongs in le="1e-06", one
 * of exactly 8 µs in le="8e-06". Above 8 µs a bucket of the histogram
 * spans several values, and the bound's own counts only when its bucket
 * ends there; every bucket that ends at or below a bound counts. */
static void test_bucket_bounds_inclusive(void)
{
    dbs_config cfg = observed();
    cfg.name = "le";
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    static const int64_t values[] = {1, 2, 4, 8, 16, 1024};
    pthread_mutex_lock(&p->mu); /* the fallback histograms' writers hold it */
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        dbs__hist_add(&p->wait_hist, values[i]);
    pthread_mutex_unlock(&p->mu);
    static struct sample m[4096];
    int n = metrics_of(p, m, 4096);
    dbs_histogram h;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_WAIT, &h), DBS_OK);
    static const char *const les[] = {"1e-06", "2e-06", "4e-06", "8e-06", "1.6e-05",
                                      "0.001024"};
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        uint64_t want = 0; /* every value recorded up to this bound */
        for (int b = 0; b < DBS_HISTOGRAM_BUCKETS; b++)
            if (dbs_histogram_upper_us(b) <= (uint64_t)values[i])
                want += h.bucket[b];
        char lab[128];
        snprintf(lab, sizeof lab, "pool=\"le\",target=\"primary\",le=\"%s\"", les[i]);
        CHECK_EQ(sample(m, n, "dbscope_acquire_wait_seconds_bucket", lab), want);
        if (values[i] <= 8) /* buckets of one value each: the bound's own counts */
            CHECK_INT(want, >=, i + 1);
    }
    dbs_pool_close(p);
}

/* Each le is the octave itself, exactly: a value recorded in µs counts in
 * a bucket only if it is at most that bucket's le as the text spells it.
 * Printed with six significant digits, le="2.09715" (2^21 µs is 2.097152 s)
 * counted a wait of 2.097151 s, above it; so did 4.1943, 16.7772 and
 * 33.5544. */
static void test_bucket_bounds_exact(void)
{
    dbs_config cfg = observed();
    cfg.name = "le_exact";
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    /* the largest value each bound above a second counts */
    uint64_t values[8];
    int nv = 0;
    for (int k = 20; k <= 25; k++)
        values[nv++] = ((uint64_t)1 << k) - 1;
    pthread_mutex_lock(&p->mu); /* the fallback histograms' writers hold it */
    for (int i = 0; i < nv; i++)
        dbs__hist_add(&p->wait_hist, (int64_t)values[i]);
    pthread_mutex_unlock(&p->mu);
    static struct sample m[4096];
    int n = metrics_of(p, m, 4096);
    dbs_histogram h;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_WAIT, &h), DBS_OK);
    const char *pre = "pool=\"le_exact\",target=\"primary\",le=\"";
    int les = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(m[i].name, "dbscope_acquire_wait_seconds_bucket") != 0 ||
            strncmp(m[i].labels, pre, strlen(pre)) != 0)
            continue;
        const char *le = m[i].labels + strlen(pre);
        if (!strncmp(le, "+Inf", 4))
            continue;
        double bound = strtod(le, NULL);
        /* an octave of µs, written exactly */
        double us = bound * 1e6;
        uint64_t oct = (uint64_t)(us + 0.5);
        if (oct == 0 || (oct & (oct - 1)) != 0 || us - (double)oct > 1e-6 * us ||
            (double)oct - us > 1e-6 * us || (double)oct / 1e6 != bound)
            CHECK_FAIL("le=\"%.*s is no octave of µs written exactly", (int)strcspn(le, "\""),
                       le);
        uint64_t want = 0; /* the values the bound, as written, includes */
        for (int b = 0; b < DBS_HISTOGRAM_BUCKETS; b++)
            if ((double)dbs_histogram_upper_us(b) / 1e6 <= bound)
                want += h.bucket[b];
        if (m[i].value != (double)want)
            CHECK_FAIL("bucket le=\"%.*s counts %.0f, values up to its le: %llu",
                       (int)strcspn(le, "\""), le, m[i].value, (unsigned long long)want);
        les++;
    }
    CHECK_EQ(les, 26);
    dbs_pool_close(p);
}

/* A program that called setlocale under de_DE prints 0.005 as "0,005":
 * the metrics must not, or a scrape refuses the whole page. */
static void test_metrics_comma_locale(void)
{
    if (!test_comma_locale())
        return;
    dbs_config cfg = observed();
    cfg.name = "comma";
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    dbs_session_close(s);
    static char text[1 << 18];
    int n = dbs_pool_metrics(p, text, sizeof text);
    setlocale(LC_NUMERIC, "C");
    CHECK_INT(n, >, 0);
    CHECK(strstr(text, "le=\"1.6e-05\"") != NULL);
    for (const char *q = strstr(text, "_sum{"); q; q = strstr(q + 1, "_sum{")) {
        const char *v = strstr(q, "} ");
        CHECK(v != NULL);
        CHECK(strcspn(v, ",\n") == strcspn(v, "\n"));
    }
    for (const char *q = strstr(text, "le=\""); q; q = strstr(q + 1, "le=\""))
        CHECK(strcspn(q + 4, ",\"") == strcspn(q + 4, "\""));
    check_exposition(text);
    dbs_pool_close(p);
}

static void test_otel_names_and_errors(void)
{
    dbs_config cfg = observed();
    cfg.name = "otel";
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.min_idle = 2;
    cfg.acquire_timeout_ms = 200;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    /* Both connections made before any open: a connect (TLS, under a
     * sanitizer) can take longer than the 200 ms that the acquire timeout
     * below needs to be short. */
    WAIT_UNTIL(stats_of(p).idle >= 2, 30000);
    CHECK_INT(stats_of(p).idle, >=, 2);
    const char *tbl = table_name("otel");
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY)", tbl);
    run_sql(p, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", tbl);
    run_sql(p, sql);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 0);
    dbs_histogram before, after;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_OPERATION, &before), DBS_OK);
    CHECK_EQ(dbs_histogram_percentile(&before, &before, 0.99), -1);

    /* a real error from the database, twice: with an err and without one */
    dbs_error err;
    for (int i = 0; i < 2; i++) {
        dbs_session *s = open_ok(p);
        CHECK_EQ(dbs_exec(s, sql, NULL, 0, i ? &err : NULL), DBS_ECONSTRAINT);
        dbs_session_close(s);
    }
    /* MariaDB reports a duplicate key as 23000 */
    const char *dup = strcmp(p->drv->name, "mariadb") == 0 ? "23000" : "23505";
    CHECK_STR(err.sqlstate, dup);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECONSTRAINT, dup), 2);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECONSTRAINT, NULL), 2);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 2);
    CHECK_EQ(dbs_pool_errors(p, DBS_ESQL, NULL), 0);
    /* a statement that fails with no SQLSTATE of the list counts as "other"
     * or "" (SQLite has none for a syntax error) */
    dbs_session *s = open_ok(p);
    CHECK_EQ(dbs_exec(s, "SELEC 1", NULL, 0, &err), DBS_ESQL);
    dbs_session_close(s);
    CHECK_EQ(dbs_pool_errors(p, DBS_ESQL, NULL), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 3);

    /* an acquire that times out */
    dbs_session *h1 = open_ok(p), *h2 = open_ok(p);
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_ETIMEOUT);
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, ""), 1);

    dbs_stats st = stats_of(p);
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_OPERATION, &after), DBS_OK);
    /* 4 statements since the first snapshot (the duplicate twice, the
     * syntax error; the inserts before it) */
    CHECK_EQ(after.count - before.count, 3);
    CHECK_INT(dbs_histogram_percentile(&after, &before, 0.5), >=, 0);
    CHECK_INT(dbs_histogram_percentile(&after, &before, 0.99), <=, (int64_t)after.max_us);
    CHECK_EQ(dbs_histogram_percentile(&after, &after, 0.5), -1);
    CHECK_EQ(dbs_histogram_percentile(&after, NULL, 1.5), -1);
    dbs_histogram create;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_CREATE, &create), DBS_OK);
    CHECK_EQ(create.count, st.created);
    CHECK_EQ(dbs_pool_histogram(p, 99, &create), DBS_EMISUSE);

    static struct sample m[4096];
    int n = metrics_of(p, m, 4096);
    const char *O = "db_client_connection_pool_name=\"otel\"";
    char lab[256];
    snprintf(lab, sizeof lab, "%s,db_client_connection_state=\"used\"", O);
    CHECK_EQ(sample(m, n, "db_client_connection_count", lab), 2);
    snprintf(lab, sizeof lab, "%s,db_client_connection_state=\"idle\"", O);
    CHECK_EQ(sample(m, n, "db_client_connection_count", lab), st.idle);
    CHECK_EQ(sample(m, n, "db_client_connection_idle_max", O), 2);
    CHECK_EQ(sample(m, n, "db_client_connection_idle_min", O), 2);
    CHECK_EQ(sample(m, n, "db_client_connection_max", O), 2);
    CHECK_EQ(sample(m, n, "db_client_connection_pending_requests", O), 0);
    CHECK_EQ(sample(m, n, "db_client_connection_timeouts_total", O), 1);
    CHECK_EQ(sample(m, n, "db_client_connection_create_time_seconds_count", O), st.created);
    CHECK_EQ(sample(m, n, "db_client_connection_wait_time_seconds_count", O), st.wait_count);
    CHECK_EQ(sample(m, n, "db_client_connection_use_time_seconds_count", O), st.use_count);
    snprintf(lab, sizeof lab, "%s,le=\"+Inf\"", O);
    CHECK_EQ(sample(m, n, "db_client_connection_wait_time_seconds_bucket", lab), st.wait_count);
    snprintf(lab, sizeof lab, "%s,db_system_name=\"%s\"", O, p->drv->name);
    CHECK_EQ(sample(m, n, "db_client_operation_duration_seconds_count", lab), after.count);
    /* today's names stay */
    const char *L = "pool=\"otel\",target=\"primary\"";
    CHECK_EQ(sample(m, n, "dbscope_acquire_timeouts_total", L), 1);
    CHECK_EQ(sample(m, n, "dbscope_acquired_total", L), st.acquired);
    /* the error table */
    snprintf(lab, sizeof lab, "%s,error_class=\"constraint\",sqlstate=\"%s\"", L, dup);
    CHECK_EQ(sample(m, n, "dbscope_errors_total", lab), 2);
    snprintf(lab, sizeof lab, "%s,error_class=\"timeout\",sqlstate=\"\"", L);
    CHECK_EQ(sample(m, n, "dbscope_errors_total", lab), 1);
    CHECK_EQ(sample(m, n, "dbscope_circuit_open", L), 0);
    snprintf(lab, sizeof lab, "%s,state=\"closed\"", L);
    CHECK_EQ(sample(m, n, "dbscope_circuit_state", lab), 1);
    CHECK_EQ(dbs_pool_circuit(p), DBS_CIRCUIT_CLOSED);

    /* the JSON has them too */
    static char json[16384];
    CHECK_INT(dbs_pool_stats_json(p, json, sizeof json), <, (int)sizeof json);
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        CHECK_FAIL("stats JSON does not parse: %s: %s", jerr.text, json);
    CHECK_STR(json_string_value(json_object_get(root, "circuit")), "closed");
    CHECK_EQ(json_integer_value(json_object_get(root, "errors")), 4);
    CHECK(json_array_size(json_object_get(root, "errors_by")) >= 3);
    json_decref(root);
    dbs_session_close(h1);
    dbs_session_close(h2);
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(p, sql);
    dbs_pool_close(p);
}

/* The OpenTelemetry limits agree with each other whatever the mode: a
 * SINGLE pool opens one connection, so no more than one can be idle, and
 * fewer can be kept idle than may be (min_idle <= idle_max <= max). */
static void test_otel_limits_single(void)
{
    dbs_config cfg = observed();
    cfg.name = "single";
    cfg.mode = DBS_POOL_SINGLE;
    cfg.pool_size = 4;
    cfg.min_idle = 2;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    CHECK_EQ(stats_of(p).max_size, 1);
    static struct sample m[4096];
    int n = metrics_of(p, m, 4096);
    const char *O = "db_client_connection_pool_name=\"single\"";
    CHECK_EQ(sample(m, n, "db_client_connection_max", O), 1);
    CHECK_EQ(sample(m, n, "db_client_connection_idle_max", O), 1);
    CHECK_INT(sample(m, n, "db_client_connection_idle_min", O), <=, 1);
    dbs_pool_close(p);
}

static void test_circuit_gauge(void)
{
    dbs_config cfg = observed();
    cfg.name = "circuit";
    cfg.mode = DBS_POOL_NONE; /* every session connects */
    cfg.circuit_threshold = 2;
    cfg.circuit_cooldown_ms = 60000; /* probes grow far apart: it stays open */
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    atomic_store(&dbs__fault.fail_connects, 1000000);
    dbs_error err;
    for (int i = 0; i < 2; i++) {
        CHECK(dbs_session_open(p, NULL, &err) == NULL);
        CHECK_EQ(err.code, DBS_ECONNECT);
    }
    int probes = open_refused_by_circuit(p, &err);
    CHECK_EQ(dbs_pool_circuit(p), DBS_CIRCUIT_OPEN);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECONNECT, NULL), 2 + probes);
    CHECK_EQ(dbs_pool_errors(p, DBS_EUNAVAILABLE, NULL), 1);
    static struct sample m[4096];
    int n = metrics_of(p, m, 4096);
    const char *L = "pool=\"circuit\",target=\"primary\"";
    char lab[256];
    CHECK_EQ(sample(m, n, "dbscope_circuit_open", L), 1);
    snprintf(lab, sizeof lab, "%s,state=\"open\"", L);
    CHECK_EQ(sample(m, n, "dbscope_circuit_state", lab), 1);
    snprintf(lab, sizeof lab, "%s,state=\"closed\"", L);
    CHECK_EQ(sample(m, n, "dbscope_circuit_state", lab), 0);
    snprintf(lab, sizeof lab, "%s,error_class=\"unavailable\",sqlstate=\"\"", L);
    CHECK_EQ(sample(m, n, "dbscope_errors_total", lab), 1);
    CHECK_EQ(sample_or(m, n, "dbscope_errors_total", "nonsense", -1), -1);
    atomic_store(&dbs__fault.fail_connects, 0);
    dbs_pool_close(p);
}

/* dbs_pool_wait_ready's connects are readiness checks, not the program's
 * acquires: against a database that refuses them (here every connect
 * fails, and the circuit opens) it counts nothing in dbs_pool_errors or in
 * stats.unavailable, whether it pings (min_idle 0, or a NONE-mode pool) or
 * warms min_idle connections. */
static void test_wait_ready_counts_nothing(void)
{
    static const struct {
        int mode, min_idle;
    } cases[] = {{DBS_POOL_QUEUE, 0}, {DBS_POOL_NONE, 0}, {DBS_POOL_QUEUE, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dbs_config cfg = observed();
        cfg.mode = cases[i].mode;
        cfg.min_idle = cases[i].min_idle;
        cfg.lazy_open = 1;
        cfg.circuit_threshold = 2;
        cfg.circuit_cooldown_ms = 60000; /* it stays open */
        cfg.log_events = 0;
        atomic_store(&dbs__fault.fail_connects, 1000000);
        dbs_pool *p = open_pool("observe", &cfg);
        dbs_error err;
        CHECK_EQ(dbs_pool_wait_ready(p, 700, &err), DBS_ECONNECT);
        CHECK_CONTAINS(err.message, "the last connect failed");
        dbs_stats st = stats_of(p);
        CHECK_INT(st.connect_failures, >=, 1);
        CHECK_EQ(st.unavailable, 0);
        CHECK_EQ(st.timeouts, 0);
        CHECK_EQ(dbs_pool_errors(p, 0, NULL), 0);
        /* the program's own acquire still counts */
        CHECK(dbs_session_open(p, NULL, &err) == NULL);
        CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);
        atomic_store(&dbs__fault.fail_connects, 0);
        dbs_pool_close(p);
    }
}

#ifdef DBSCOPE_WITH_PG
/* Every target's circuit is exported, however many replicas replica_url
 * names: the 65th target (the primary and 64 replicas) had no
 * dbscope_circuit_open or dbscope_circuit_state series while its other
 * series were there. Lazy pools on an address nothing listens on: no
 * server is needed, the monitors' connects are refused. */
static void test_circuit_every_replica(void)
{
    enum { REPLICAS = 70 };
    static char rurl[REPLICAS * 16 + 64];
    int w = snprintf(rurl, sizeof rurl, "host=");
    for (int i = 0; i < REPLICAS; i++)
        w += snprintf(rurl + w, sizeof rurl - (size_t)w, "%s127.0.0.%d", i ? "," : "", i + 2);
    snprintf(rurl + w, sizeof rurl - (size_t)w, " port=1 user=u");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "postgresql://u:x@127.0.0.1:1/db";
    cfg.name = "many";
    cfg.replica_url = rurl;
    cfg.lazy_open = 1;
    cfg.connect_timeout_ms = 2000;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open with %d replicas: %s", REPLICAS, err.message);
    int len = dbs_pool_metrics(p, NULL, 0);
    CHECK_INT(len, >, 0);
    char *text = malloc((size_t)len + 1);
    CHECK(text != NULL);
    CHECK_EQ(dbs_pool_metrics(p, text, (size_t)len + 1), len);
    int open_series = 0, state_series = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        open_series += !strncmp(l, "dbscope_circuit_open{", 21);
        state_series += !strncmp(l, "dbscope_circuit_state{", 22);
    }
    CHECK_EQ(open_series, 1 + REPLICAS);
    CHECK_EQ(state_series, 3 * (1 + REPLICAS));
    char want[128];
    snprintf(want, sizeof want,
             "dbscope_circuit_open{pool=\"many\",target=\"replica\",host=\"127.0.0.%d:1\"}",
             REPLICAS + 1);
    if (!strstr(text, want))
        CHECK_FAIL("the metrics lack %s", want);
    free(text);
    dbs_pool_close(p);
}
#endif

static void test_keepalive_and_min_idle(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 3;
    cfg.min_idle = 2;
    cfg.keepalive_ms = 30;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    WAIT_UNTIL(stats_of(p).idle == 2, 30000);
    CHECK_EQ(stats_of(p).idle, 2);
    /* an idle connection that fails its keep-alive ping is replaced by the
     * housekeeper, with no session involved */
    atomic_store(&dbs__fault.fail_pings, 1);
    WAIT_UNTIL(stats_of(p).invalidated == 1 && stats_of(p).idle == 2, 30000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.invalidated, 1);
    CHECK_EQ(st.idle, 2);
    CHECK_EQ(st.acquired, 0);
    CHECK_INT(st.created, >=, 3);
    dbs_pool_close(p);

    /* keep-alive alone (no min_idle, no timeouts) still runs the pings */
    atomic_store(&dbs__fault.fail_pings, 0);
    cfg.min_idle = 0;
    cfg.idle_timeout_ms = 0;
    cfg.max_lifetime_ms = 0;
    p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).idle, 1);
    atomic_store(&dbs__fault.fail_pings, 1);
    WAIT_UNTIL(stats_of(p).invalidated == 1, 30000);
    CHECK_EQ(stats_of(p).invalidated, 1);
    CHECK_EQ(stats_of(p).idle, 0);
    dbs_pool_close(p);
}


/* Units of an event loop that a shutdown ends with DBS_ECLOSED while they
 * wait for a connection count in dbs_pool_errors, once each, as a blocking
 * waiter woken by the shutdown does: on PostgreSQL (no session) and on the
 * worker backends, for the unit a worker waits for and for those still in
 * the loop's queue behind it. */
static int closed_unit_rc[3];

static void unit_done_rc(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    CHECK_EQ(err->code, rc);
    *(int *)arg = rc;
}

static void test_loop_closed_units_counted(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_session *held = open_ok(p);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    for (int i = 0; i < 3; i++) {
        closed_unit_rc[i] = 1;
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u);
        CHECK_INT(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), >=, 0);
        CHECK_OK(dbs_unit_submit(u, unit_done_rc, &closed_unit_rc[i], &err), &err);
    }
    /* the loop asks the pool for its connection (or hands a unit to a worker
     * that does): somebody waits */
    for (int64_t end = now_ms() + 30000; stats_of(p).waiting == 0 && now_ms() < end;) {
        CHECK_INT(dbs_loop_run(l), >=, 0);
        dbs__sleep_ms(5);
    }
    CHECK_EQ(stats_of(p).waiting, 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 0);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 1); /* held is still open */
    struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
    for (int64_t end = now_ms() + 30000; dbs_loop_pending(l) > 0 && now_ms() < end;) {
        int t = dbs_loop_timeout_ms(l);
        (void)poll(&pfd, 1, t < 0 || t > 20 ? 20 : t);
        CHECK_INT(dbs_loop_run(l), >=, 0);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ(closed_unit_rc[i], DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, NULL), 3);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 3);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.in_use, 1);
    dbs_loop_close(l);
    dbs_session_close(held);
    st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.size, 0);
    dbs_pool_close(p);
}

/* An event loop's unit counts each of its statements that ran once in the
 * operation histogram, on every backend: whether a worker's session ran it
 * (SQLite, MariaDB) or the loop's own pipelined connection (PostgreSQL). */
static int run_unit_rc(dbs_loop *l, const char *const *sql, int n)
{
    dbs_error err;
    int rc = 1;
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u);
    for (int i = 0; i < n; i++)
        CHECK_INT(dbs_unit_add(u, sql[i], NULL, 0, &err), >=, 0);
    CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
    struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
    for (int64_t end = now_ms() + 60000; dbs_loop_pending(l) > 0 && now_ms() < end;) {
        int t = dbs_loop_timeout_ms(l);
        (void)poll(&pfd, 1, t < 0 || t > 20 ? 20 : t);
        CHECK_INT(dbs_loop_run(l), >=, 0);
    }
    return rc;
}

static void run_unit(dbs_loop *l, const char *const *sql, int n, int want)
{
    CHECK_EQ(run_unit_rc(l, sql, n), want);
}

static void test_loop_ops_counted(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 2;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_histogram before, after;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_OPERATION, &before), DBS_OK);
    static const char *const three[] = {"SELECT 1", "SELECT 2", "SELECT 3"};
    run_unit(l, three, 3, DBS_OK);
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_OPERATION, &after), DBS_OK);
    CHECK_EQ(after.count - before.count, 3);
    CHECK_INT(dbs_histogram_percentile(&after, &before, 0.5), >=, 0);
    /* a statement that fails ran and counts; the one after it never ran */
    before = after;
    static const char *const failing[] = {"SELECT 1", "SELEC 2", "SELECT 3"};
    run_unit(l, failing, 3, DBS_ESQL);
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_OPERATION, &after), DBS_OK);
    CHECK_EQ(after.count - before.count, 2);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* After a shutdown every acquire fails with DBS_ECLOSED and counts once in
 * dbs_pool_errors, whichever call made it: dbs_session_open, the session
 * dbs_transact (or _ro, _opts) would open, dbs_pool_ping's. */
static int work_select(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    return dbs_exec(s, "SELECT 1", NULL, 0, err) < 0 ? err->code : DBS_OK;
}

static void test_closed_acquires_counted(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    dbs_error err;
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 1);
    CHECK_EQ(dbs_transact(p, NULL, work_select, NULL, &err), DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 2);
    CHECK_EQ(dbs_transact_ro(p, NULL, work_select, NULL, &err), DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 3);
    dbs_tx_options opt = {0};
    CHECK_EQ(dbs_transact_opts(p, NULL, &opt, work_select, NULL, &err), DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 4);
    CHECK_EQ(dbs_transact(p, NULL, work_select, NULL, NULL), DBS_ECLOSED); /* no err */
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 5);
    CHECK_EQ(dbs_pool_ping(p, &err), DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 6);
    dbs_pool_close(p);
}


/* ---- counts that agree with what happened ---- */

/* dbs_pool_wait_ready's ping is dbscope's own check, not the program's
 * session: no acquired, released, wait or use sample, no check-out or
 * check-in event; what it finds wrong is still its answer. The program's
 * own dbs_pool_ping is a session like any. */
static void test_wait_ready_not_a_session(void)
{
    static const int modes[] = {DBS_POOL_QUEUE, DBS_POOL_NONE};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        dbs_config cfg = observed();
        cfg.mode = modes[i];
        cfg.lazy_open = 1; /* nothing open: readiness pings */
        cfg.log_events = 0;
        dbs_pool *p = open_pool("observe", &cfg);
        int out0 = events(DBS_EVENT_CHECKOUT), in0 = events(DBS_EVENT_CHECKIN);
        dbs_error err;
        CHECK_OK(dbs_pool_wait_ready(p, 30000, &err), &err);
        dbs_stats st = stats_of(p);
        CHECK_INT(st.created, >=, 1);
        CHECK_EQ(st.acquired, 0);
        CHECK_EQ(st.released, 0);
        CHECK_EQ(st.wait_count, 0);
        CHECK_EQ(st.use_count, 0);
        CHECK_EQ(events(DBS_EVENT_CHECKOUT), out0);
        CHECK_EQ(events(DBS_EVENT_CHECKIN), in0);
        if (modes[i] == DBS_POOL_NONE) {
            /* a ping that fails is its answer, as before, and no session */
            atomic_store(&dbs__fault.fail_pings, 1000000);
            CHECK_EQ(dbs_pool_wait_ready(p, 300, &err), DBS_ECONNECT);
            CHECK_CONTAINS(err.message, "ping failed");
            atomic_store(&dbs__fault.fail_pings, 0);
            st = stats_of(p);
            CHECK_EQ(st.acquired, 0);
            CHECK_EQ(st.use_count, 0);
            CHECK_EQ(dbs_pool_errors(p, 0, NULL), 0);
        }
        CHECK_OK(dbs_pool_ping(p, &err), &err);
        st = stats_of(p);
        CHECK_EQ(st.acquired, 1);
        CHECK_EQ(st.released, 1);
        CHECK_EQ(st.wait_count, 1);
        CHECK_EQ(st.use_count, 1);
        CHECK_EQ(events(DBS_EVENT_CHECKOUT), out0 + 1);
        dbs_pool_close(p);
    }
}

/* A unit submitted after a shutdown is refused with DBS_ECLOSED and counted
 * once, as a blocking session refused so is (test_closed_acquires_counted). */
static void test_closed_submit_counted(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u);
    CHECK_INT(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), >=, 0);
    CHECK_EQ(dbs_unit_submit(u, unit_done_rc, NULL, &err), DBS_ECLOSED);
    CHECK_EQ(err.code, DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 1);
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, ""), 2);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 2);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* PostgreSQL's loop lanes send units themselves: a unit its send refuses
 * alone (here for want of memory; the connection goes on) is a failed
 * attempt, counted as one the server fails is. */
static void test_loop_send_failure_counted(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    if (dbs_pool_backend(p) != DBS_BACKEND_POSTGRESQL) {
        dbs_pool_close(p); /* the worker backends send through sessions */
        return;
    }
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    static const char *const one[] = {"SELECT 1"};
    atomic_store(&dbs__fault.fail_send_allocs, 1);
    run_unit(l, one, 1, DBS_ENOMEM);
    CHECK_EQ(atomic_load(&dbs__fault.fail_send_allocs), 0); /* the fault was hit */
    CHECK_EQ(dbs_pool_errors(p, DBS_ENOMEM, ""), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);
    run_unit(l, one, 1, DBS_OK);
    CHECK_EQ(stats_of(p).invalidated, 0);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* Whether the last invalidate event, one more than before, named a failure
 * rather than the bare "broken". */
static void check_invalidate_named(int before, int code)
{
    WAIT_UNTIL(events(DBS_EVENT_INVALIDATE) > before, 30000);
    CHECK_EQ(events(DBS_EVENT_INVALIDATE), before + 1);
    pthread_mutex_lock(&ev_mu);
    if (!last[DBS_EVENT_INVALIDATE].reason[0] ||
        !strcmp(last[DBS_EVENT_INVALIDATE].reason, "broken"))
        CHECK_FAIL("the invalidate event says \"%s\" (code %d), not what broke it",
                   last[DBS_EVENT_INVALIDATE].reason, last[DBS_EVENT_INVALIDATE].code);
    if (code)
        CHECK_EQ(last[DBS_EVENT_INVALIDATE].code, code);
    pthread_mutex_unlock(&ev_mu);
}

/* The invalidate event carries the connection's failure on every path
 * that discards one, not only a session's own statements
 * (test_invalidate_carries_failure): an event loop's unit past its
 * statement bound (PostgreSQL: the loop's lane gives the connection back;
 * SQLite, MariaDB: a worker's session), a worker's unit interrupted by
 * its cancel, and a session whose close found the connection gone (its
 * rollback failed: the server ended it). */
static const char *forever_sql(enum dbs_backend be)
{
    return be == DBS_BACKEND_POSTGRESQL ? "SELECT pg_sleep(3600)"
           : be == DBS_BACKEND_MARIADB  ? "SELECT SLEEP(3600)"
                                        : "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT "
                                          "i + 1 FROM n) SELECT count(*) FROM n";
}

static void test_invalidate_reason_every_path(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 2;
    cfg.statement_timeout_ms = 500; /* the cancel's bound too: room on a loaded machine */
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);

    const char *forever[] = {forever_sql(be)};
    int before = events(DBS_EVENT_INVALIDATE);
    int rc0 = run_unit_rc(l, forever, 1);
    /* On PostgreSQL the unit's COMMIT went out in its flight, behind the
     * statement: when the server does not answer the cancel within its
     * bound (a loaded machine), the connection is discarded with the
     * COMMIT's fate unknown, which is the honest answer. */
    if (be == DBS_BACKEND_POSTGRESQL && rc0 == DBS_ECOMMIT_UNKNOWN) {
        check_invalidate_named(before, 0);
    } else {
        CHECK_EQ(rc0, DBS_ESTMT_TIMEOUT);
        check_invalidate_named(before, DBS_ESTMT_TIMEOUT);
    }

    if (be != DBS_BACKEND_POSTGRESQL) {
        /* a worker's unit whose statement is interrupted by its cancel
         * (the worker waits, before its first statement, for the
         * interrupt to have gone out) */
        atomic_store(&dbs__fault.unit_gap_at, 0);
        atomic_store(&dbs__fault.unit_gap_ms, 10000);
        atomic_store(&dbs__fault.unit_gaps, 0);
        int rc = 1;
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u);
        CHECK_INT(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), >=, 0);
        CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
        for (int64_t end = now_ms() + 30000;
             atomic_load(&dbs__fault.unit_gaps) == 0 && now_ms() < end;) {
            CHECK_INT(dbs_loop_run(l), >=, 0);
            dbs__sleep_ms(5);
        }
        CHECK_EQ(atomic_load(&dbs__fault.unit_gaps), 1);
        atomic_store(&dbs__fault.unit_gap_ms, 0);
        before = events(DBS_EVENT_INVALIDATE);
        dbs_unit_cancel(u);
        struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
        for (int64_t end = now_ms() + 30000; dbs_loop_pending(l) > 0 && now_ms() < end;) {
            (void)poll(&pfd, 1, 20);
            CHECK_INT(dbs_loop_run(l), >=, 0);
        }
        CHECK_EQ(rc, DBS_ECANCELED);
        check_invalidate_named(before, be == DBS_BACKEND_SQLITE ? DBS_ECANCELED : 0);
    }
    dbs_loop_close(l);

    if (be != DBS_BACKEND_SQLITE) {
        /* the server ends a session's connection: its close's rollback
         * finds it gone */
        dbs_session *s = open_ok(p);
        int64_t id = query_int(s, be == DBS_BACKEND_POSTGRESQL ? "SELECT pg_backend_pid()"
                                                                : "SELECT CONNECTION_ID()",
                               NULL, 0);
        dbs_session *k = open_ok(p);
        char sql[96];
        if (be == DBS_BACKEND_POSTGRESQL)
            snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)", (long long)id);
        else
            snprintf(sql, sizeof sql, "KILL %lld", (long long)id);
        exec_ok(k, sql);
        snprintf(sql, sizeof sql,
                 be == DBS_BACKEND_POSTGRESQL
                     ? "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld"
                     : "SELECT count(*) FROM information_schema.processlist WHERE id = %lld",
                 (long long)id);
        int64_t n = 1;
        for (int64_t end = now_ms() + 30000; n != 0 && now_ms() < end;) {
            n = query_int(k, sql, NULL, 0);
            if (n != 0)
                dbs__sleep_ms(20);
        }
        CHECK_EQ(n, 0);
        dbs_session_close(k);
        before = events(DBS_EVENT_INVALIDATE);
        dbs_session_close(s);
        check_invalidate_named(before, DBS_ECONNECT);
    }
    dbs_pool_close(p);
}

/* ---- every backend and path counts alike ---- */

/* Runs l until nothing is pending (a generous bound). */
static void drain_loop(dbs_loop *l)
{
    struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
    for (int64_t end = now_ms() + 60000; dbs_loop_pending(l) > 0 && now_ms() < end;) {
        int t = dbs_loop_timeout_ms(l);
        (void)poll(&pfd, 1, t < 0 || t > 20 ? 20 : t);
        CHECK_INT(dbs_loop_run(l), >=, 0);
    }
    CHECK_EQ(dbs_loop_pending(l), 0);
}

static dbs_unit *unit_of(dbs_loop *l, const char *sql)
{
    dbs_error err;
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    if (!u)
        CHECK_FAIL("dbs_unit_new: %s", err.message);
    CHECK_INT(dbs_unit_add(u, sql, NULL, 0, &err), >=, 0);
    return u;
}

/* A unit that ends DBS_ETIMEOUT before it had a connection counts once in
 * the timeouts, once as DBS_ETIMEOUT in dbs_pool_errors and with one
 * timeout event, as a blocking acquire that gives up does, on every
 * backend: whether its own timeout passed in the loop's queue
 * (PostgreSQL), in the queue of the workers' threads (SQLite, MariaDB:
 * the one worker is busy with another unit), or while it waited to run
 * again after a failed connect. */
static void test_unit_timeouts_counted(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    cfg.retry_base_ms = 60000; /* the back-off outlasts the unit's timeout */
    cfg.retry_cap_ms = 60000;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.workers = 1;
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_session *a = open_ok(p), *b = open_ok(p);
    int ev0 = events(DBS_EVENT_TIMEOUT);
    int rc_wait = 1, rc_timed = 1;
    dbs_unit *waits = unit_of(l, "SELECT 1");
    CHECK_OK(dbs_unit_submit(waits, unit_done_rc, &rc_wait, &err), &err);
    for (int64_t end = now_ms() + 30000; stats_of(p).waiting == 0 && now_ms() < end;) {
        CHECK_INT(dbs_loop_run(l), >=, 0);
        dbs__sleep_ms(5);
    }
    CHECK_EQ(stats_of(p).waiting, 1); /* the worker (or the loop) waits */
    dbs_unit *timed = unit_of(l, "SELECT 2");
    CHECK_EQ(dbs_unit_set_timeout(timed, 200), DBS_OK);
    CHECK_OK(dbs_unit_submit(timed, unit_done_rc, &rc_timed, &err), &err);
    for (int64_t end = now_ms() + 30000; rc_timed == 1 && now_ms() < end;) {
        struct pollfd pfd = {.fd = dbs_loop_fd(l), .events = POLLIN};
        int t = dbs_loop_timeout_ms(l);
        (void)poll(&pfd, 1, t < 0 || t > 20 ? 20 : t);
        CHECK_INT(dbs_loop_run(l), >=, 0);
    }
    CHECK_EQ(rc_timed, DBS_ETIMEOUT);
    dbs_unit_cancel(waits); /* called off: no failure */
    drain_loop(l);
    CHECK_EQ(rc_wait, DBS_ECANCELED);
    CHECK_EQ(stats_of(p).timeouts, 1);
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, NULL), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);
    CHECK_EQ(events(DBS_EVENT_TIMEOUT), ev0 + 1);
    dbs_session_close(b);
    dbs_session_close(a);

    dbs_loop_close(l);
    dbs_pool_close(p);

    /* its timeout passes in the back-off after a connect that failed */
    cfg.lazy_open = 1; /* nothing open: the unit connects */
    p = open_pool("observe", &cfg);
    l = dbs_loop_open(p, &lc, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    ev0 = events(DBS_EVENT_TIMEOUT);
    atomic_store(&dbs__fault.fail_connects, 1);
    dbs_unit *u = unit_of(l, "SELECT 3");
    CHECK_EQ(dbs_unit_set_timeout(u, 300), DBS_OK);
    int rc = 1;
    CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
    drain_loop(l);
    atomic_store(&dbs__fault.fail_connects, 0);
    CHECK_EQ(rc, DBS_ETIMEOUT);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECONNECT, NULL), 1);
    CHECK_EQ(stats_of(p).timeouts, 1);
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, NULL), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 2);
    CHECK_EQ(events(DBS_EVENT_TIMEOUT), ev0 + 1);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* A dbs_unit_submit refused because queue_max units already wait failed
 * the program's call: counted once as DBS_EBUSY, on every backend (the
 * blocking acquire has no such bound: its waiters queue). */
static void test_busy_submit_counted(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    dbs_error err;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.queue_max = 1;
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    int rc = 1;
    CHECK_OK(dbs_unit_submit(unit_of(l, "SELECT 1"), unit_done_rc, &rc, &err), &err);
    CHECK_EQ(dbs_unit_submit(unit_of(l, "SELECT 2"), unit_done_rc, NULL, &err), DBS_EBUSY);
    CHECK_EQ(err.code, DBS_EBUSY);
    CHECK_EQ(dbs_pool_errors(p, DBS_EBUSY, ""), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);
    drain_loop(l);
    CHECK_EQ(rc, DBS_OK);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* The rollback or reset that ends a session failed: dbs_session_close
 * returns nothing, but the pool saw a failure of the session's, counted
 * as one its own calls met, on every backend and path: a blocking
 * session, dbs_transact's, and the session a worker runs a unit on
 * (SQLite, MariaDB). Here the reset fails and the connection still works
 * (closed as dirty). */
static void test_close_failures_counted(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    dbs_error err;
    dbs_session *s = open_ok(p);
    exec_ok(s, "SELECT 1");
    atomic_store(&dbs__fault.fail_resets, 1);
    dbs_session_close(s);
    CHECK_EQ(atomic_load(&dbs__fault.fail_resets), 0); /* the reset ran */
    CHECK_EQ(stats_of(p).closed_dirty, 1);
    CHECK_EQ(dbs_pool_errors(p, DBS_ESQL, ""), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);

    atomic_store(&dbs__fault.fail_resets, 1);
    CHECK_OK(dbs_transact(p, NULL, work_select, NULL, &err), &err);
    int n = atomic_load(&dbs__fault.fail_resets) == 0; /* the release reset ran apart */
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1 + n);
    atomic_store(&dbs__fault.fail_resets, 0);

    if (be != DBS_BACKEND_POSTGRESQL) { /* a worker's session */
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        if (!l)
            CHECK_FAIL("dbs_loop_open: %s", err.message);
        static const char *const one[] = {"SELECT 1"};
        atomic_store(&dbs__fault.fail_resets, 1);
        run_unit(l, one, 1, DBS_OK);
        CHECK_EQ(atomic_load(&dbs__fault.fail_resets), 0);
        CHECK_EQ(dbs_pool_errors(p, 0, NULL), 2 + n);
        dbs_loop_close(l);
    }
    dbs_pool_close(p);
}

/* A reset that fails in the COMMIT's own round trip (PostgreSQL and
 * MariaDB: dbs_session_commit_close, dbs_transact's last COMMIT, an event
 * loop's unit on PostgreSQL) leaves the commit a success and the
 * connection broken: counted once as a failure, and its invalidate event
 * says what failed, not the "connection is broken" of a later call. */
static void test_release_reset_failure(void)
{
    dbs_config cfg = observed();
    cfg.log_events = 0;
    cfg.reset = DBS_RESET_TRACKED; /* MariaDB's reset rides with the COMMIT */
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    if (be == DBS_BACKEND_SQLITE) {
        dbs_pool_close(p); /* its reset runs apart, at close */
        return;
    }
    dbs_error err;
    int before = events(DBS_EVENT_INVALIDATE);
    dbs_session *s = open_ok(p);
    exec_ok(s, "SELECT 1");
    atomic_store(&dbs__fault.fail_release_resets, 1);
    CHECK_OK(dbs_session_commit_close(s, &err), &err);
    CHECK_EQ(atomic_load(&dbs__fault.fail_release_resets), 0);
    check_invalidate_named(before, DBS_ECONNECT);
    pthread_mutex_lock(&ev_mu);
    CHECK_CONTAINS(last[DBS_EVENT_INVALIDATE].reason, "injected");
    pthread_mutex_unlock(&ev_mu);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECONNECT, NULL), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);

    before = events(DBS_EVENT_INVALIDATE);
    atomic_store(&dbs__fault.fail_release_resets, 1);
    CHECK_OK(dbs_transact(p, NULL, work_select, NULL, &err), &err);
    CHECK_EQ(atomic_load(&dbs__fault.fail_release_resets), 0);
    check_invalidate_named(before, DBS_ECONNECT);
    pthread_mutex_lock(&ev_mu);
    CHECK_CONTAINS(last[DBS_EVENT_INVALIDATE].reason, "injected");
    pthread_mutex_unlock(&ev_mu);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 2);

    if (be == DBS_BACKEND_POSTGRESQL) { /* the loop's own connection */
        dbs_loop *l = dbs_loop_open(p, NULL, &err);
        if (!l)
            CHECK_FAIL("dbs_loop_open: %s", err.message);
        static const char *const one[] = {"SELECT 1"};
        before = events(DBS_EVENT_INVALIDATE);
        atomic_store(&dbs__fault.fail_release_resets, 1);
        run_unit(l, one, 1, DBS_OK);
        for (int64_t end = now_ms() + 30000;
             atomic_load(&dbs__fault.fail_release_resets) != 0 && now_ms() < end;) {
            (void)dbs_loop_run(l);
            dbs__sleep_ms(5);
        }
        for (int64_t end = now_ms() + 30000;
             events(DBS_EVENT_INVALIDATE) == before && now_ms() < end;) {
            (void)dbs_loop_run(l);
            dbs__sleep_ms(5);
        }
        check_invalidate_named(before, DBS_ECONNECT);
        pthread_mutex_lock(&ev_mu);
        CHECK_CONTAINS(last[DBS_EVENT_INVALIDATE].reason, "injected");
        pthread_mutex_unlock(&ev_mu);
        CHECK_EQ(dbs_pool_errors(p, 0, NULL), 3);
        dbs_loop_close(l);
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.invalidated, st.closed_broken);
    CHECK_INT(st.invalidated, >=, 2);
    dbs_pool_close(p);
}

/* ---- a scenario counts the same on every backend ---- */

/* Runs l until the unit running sql has its statement under way on the
 * server: seen there from another session (PostgreSQL, MariaDB), or, on
 * SQLite, the worker's session holding its connection a moment. */
static void wait_running(dbs_loop *l, dbs_pool *p, dbs_session *watch)
{
    enum dbs_backend be = dbs_pool_backend(p);
    const char *seen =
        be == DBS_BACKEND_POSTGRESQL
            ? "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
              "'%pg_sleep(3600)%' AND pid <> pg_backend_pid()"
            : "SELECT count(*) FROM information_schema.processlist WHERE info LIKE "
              "'SELECT SLEEP(3600)%'";
    int64_t n = 0;
    for (int64_t end = now_ms() + 30000; n == 0 && now_ms() < end;) {
        CHECK_INT(dbs_loop_run(l), >=, 0);
        if (be == DBS_BACKEND_SQLITE)
            n = stats_of(p).in_use >= 1;
        else
            n = query_int(watch, seen, NULL, 0);
        dbs_error err;
        CHECK_OK(dbs_commit(watch, &err), &err); /* pg_stat_activity: a snapshot a transaction */
        if (n == 0)
            dbs__sleep_ms(10);
    }
    CHECK_INT(n, >=, 1);
    if (be == DBS_BACKEND_SQLITE)
        dbs__sleep_ms(50); /* the statement most likely started; either way counts alike */
}

/* A unit in flight that the program calls off ends DBS_ECANCELED and
 * counts once, as DBS_ECANCELED, on every backend: PostgreSQL's units on
 * the loop's connection, and SQLite's and MariaDB's on a worker, whose
 * statement the cancel interrupts (sqlite3_interrupt, KILL) and whose
 * session would otherwise count that statement's error, or nothing when
 * the cancel lands between two statements. The same when the program
 * closes the loop with the unit in flight: it ends, and counts, as
 * DBS_ECANCELED, or DBS_ECOMMIT_UNKNOWN on PostgreSQL, whose COMMIT went
 * out with the statement. */
static void test_cancel_in_flight_counted(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 3;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    dbs_error err;
    dbs_session *watch = open_ok(p);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    uint64_t base = dbs_pool_errors(p, 0, NULL); /* the watcher's queries fail nothing */

    /* its statement running on the server */
    int rc = 1;
    dbs_unit *u = unit_of(l, forever_sql(be));
    CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
    wait_running(l, p, watch);
    dbs_unit_cancel(u);
    drain_loop(l);
    CHECK_EQ(rc, DBS_ECANCELED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECANCELED, NULL), 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), base + 1);
    uint64_t cancels = 1;

    if (be != DBS_BACKEND_POSTGRESQL) {
        /* between two statements: the worker waits before the second one
         * until the cancel's interrupt went out */
        atomic_store(&dbs__fault.unit_gap_at, 1);
        atomic_store(&dbs__fault.unit_gap_ms, 10000);
        atomic_store(&dbs__fault.unit_gaps, 0);
        rc = 1;
        u = unit_of(l, "SELECT 1");
        CHECK_INT(dbs_unit_add(u, "SELECT 2", NULL, 0, &err), >=, 0);
        CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
        for (int64_t end = now_ms() + 30000;
             atomic_load(&dbs__fault.unit_gaps) == 0 && now_ms() < end;) {
            CHECK_INT(dbs_loop_run(l), >=, 0);
            dbs__sleep_ms(5);
        }
        CHECK_EQ(atomic_load(&dbs__fault.unit_gaps), 1);
        atomic_store(&dbs__fault.unit_gap_ms, 0);
        dbs_unit_cancel(u);
        drain_loop(l);
        CHECK_EQ(rc, DBS_ECANCELED);
        CHECK_EQ(dbs_pool_errors(p, DBS_ECANCELED, NULL), 2);
        CHECK_EQ(dbs_pool_errors(p, 0, NULL), base + 2);
        cancels = 2;
    }

    /* the loop closed with the unit in flight: its callback runs inside
     * dbs_loop_close */
    rc = 1;
    u = unit_of(l, forever_sql(be));
    CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
    wait_running(l, p, watch);
    dbs_loop_close(l);
    /* PostgreSQL pipelines the unit's COMMIT behind its statement: out
     * already, so its fate is unknown */
    if (be == DBS_BACKEND_POSTGRESQL)
        CHECK_EQ(rc, DBS_ECOMMIT_UNKNOWN);
    else
        CHECK_EQ(rc, DBS_ECANCELED);
    /* a worker's outcome, published after the close, counts nothing more */
    WAIT_UNTIL(stats_of(p).in_use == 1, 30000);
    CHECK_EQ(stats_of(p).in_use, 1);
    CHECK_EQ(dbs_pool_errors(p, rc, NULL), rc == DBS_ECANCELED ? cancels + 1 : 1);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), base + cancels + 1);
    dbs_session_close(watch);
    dbs_pool_close(p);
}

/* A worker's unit that dbs_pool_shutdown cuts off (SQLite, MariaDB: its
 * statement interrupted) ends DBS_ECLOSED, and counts so, once, as does
 * the unit still queued behind it for the one worker; not as the
 * interrupted statement's error. (On PostgreSQL a unit in flight on the
 * loop's own connection runs on through a shutdown.) */
static void test_shutdown_in_flight_counted(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 3;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    if (be == DBS_BACKEND_POSTGRESQL) {
        dbs_pool_close(p);
        return;
    }
    dbs_error err;
    dbs_session *watch = open_ok(p);
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.workers = 1;
    dbs_loop *l = dbs_loop_open(p, &lc, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    int rc = 1, rc_queued = 1;
    dbs_unit *u = unit_of(l, forever_sql(be));
    CHECK_OK(dbs_unit_submit(u, unit_done_rc, &rc, &err), &err);
    wait_running(l, p, watch);
    CHECK_OK(dbs_unit_submit(unit_of(l, "SELECT 1"), unit_done_rc, &rc_queued, &err), &err);
    CHECK_INT(dbs_loop_run(l), >=, 0);
    dbs_session_close(watch);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 0);
    drain_loop(l);
    CHECK_EQ(rc, DBS_ECLOSED);
    CHECK_EQ(rc_queued, DBS_ECLOSED);
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, NULL), 2);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 2);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* PostgreSQL posts a blocking session's reset at its close (after
 * dbs_commit: nothing ends the session) and reads its answer later. When
 * that reset failed, the failure is the closed session's: counted once,
 * as a failed reset at close is on every backend, whether the next
 * checkout finds it at once or the answer is still on its way; the next
 * user's session gets another connection and its call succeeds. */
static void test_posted_reset_failure(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 1;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    if (dbs_pool_backend(p) != DBS_BACKEND_POSTGRESQL) {
        dbs_pool_close(p);
        return;
    }
    dbs_error err;
    for (int later = 0; later < 2; later++) {
        dbs_session *s = open_ok(p);
        exec_ok(s, "SELECT 1");
        CHECK_OK(dbs_commit(s, &err), &err);
        atomic_store(&dbs__fault.fail_posted_resets, 1);
        int before = events(DBS_EVENT_INVALIDATE);
        dbs_session_close(s);
        if (later)
            dbs__sleep_ms(200); /* its answer most likely arrived: found at checkout */
        s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 7", NULL, 0), 7);
        CHECK_EQ(atomic_load(&dbs__fault.fail_posted_resets), 0);
        dbs_session_close(s);
        check_invalidate_named(before, DBS_ECONNECT);
        pthread_mutex_lock(&ev_mu);
        CHECK_CONTAINS(last[DBS_EVENT_INVALIDATE].reason, "injected");
        pthread_mutex_unlock(&ev_mu);
        CHECK_EQ(dbs_pool_errors(p, DBS_ECONNECT, NULL), (uint64_t)later + 1);
        CHECK_EQ(dbs_pool_errors(p, 0, NULL), (uint64_t)later + 1);
    }
    dbs_pool_close(p);

    /* with pre_ping off nothing looks at the connection before the next
     * call, which meets the failure: counted once all the same */
    cfg.pre_ping = 0;
    p = open_pool("observe", &cfg);
    dbs_session *s = open_ok(p);
    exec_ok(s, "SELECT 1");
    CHECK_OK(dbs_commit(s, &err), &err);
    atomic_store(&dbs__fault.fail_posted_resets, 1);
    dbs_session_close(s);
    s = open_ok(p);
    CHECK_EQ(dbs_exec(s, "SELECT 1", NULL, 0, &err), DBS_ECONNECT);
    CHECK_CONTAINS(err.message, "injected");
    dbs_session_close(s);
    s = open_ok(p);
    exec_ok(s, "SELECT 1");
    dbs_session_close(s);
    CHECK_EQ(dbs_pool_errors(p, 0, NULL), 1);
    dbs_pool_close(p);
}

/* What a user would assert of the counts at rest, after a mix of every
 * path (blocking sessions, dbs_transact and its retries, read-only units,
 * pings, readiness, an acquire timeout, event-loop units that commit and
 * fail, refusals after a shutdown): every session counted out and in once,
 * with one wait and one use sample each; every timeout once; the errors by
 * class adding up to the total; the connection ledger balanced; and the
 * Prometheus text and the JSON saying the same numbers. */
static void test_counts_agree(void)
{
    dbs_config cfg = observed();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 200;
    cfg.retry_base_ms = 1;
    cfg.name = "counts";
    cfg.log_events = 0;
    dbs_pool *p = open_pool("observe", &cfg);
    enum dbs_backend be = dbs_pool_backend(p);
    dbs_error err;
    for (int i = 0; i < 5; i++) {
        dbs_session *s = open_ok(p);
        exec_ok(s, "SELECT 1");
        if (i == 2)
            CHECK_EQ(dbs_exec(s, "SELEC 1", NULL, 0, &err), DBS_ESQL);
        dbs_session_close(s);
    }
    CHECK_OK(dbs_transact(p, NULL, work_select, NULL, &err), &err);
    int calls = 0;
    CHECK_OK(dbs_transact(p, NULL, fail_once, &calls, &err), &err); /* one retry */
    CHECK_OK(dbs_transact_ro(p, NULL, work_select, NULL, &err), &err);
    CHECK_OK(dbs_pool_ping(p, &err), &err);
    CHECK_OK(dbs_pool_wait_ready(p, 30000, &err), &err);
    {
        dbs_session *a = open_ok(p), *b = open_ok(p);
        CHECK(dbs_session_open(p, NULL, &err) == NULL);
        CHECK_EQ(err.code, DBS_ETIMEOUT);
        dbs_session_close(b);
        dbs_session_close(a);
    }
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    static const char *const good[] = {"SELECT 1", "SELECT 2"};
    static const char *const bad[] = {"SELECT 1", "SELEC 2"};
    for (int i = 0; i < 4; i++)
        run_unit(l, good, 2, DBS_OK);
    run_unit(l, bad, 2, DBS_ESQL);
    if (be == DBS_BACKEND_POSTGRESQL) {
        atomic_store(&dbs__fault.fail_send_allocs, 1);
        run_unit(l, good, 2, DBS_ENOMEM);
    }
    CHECK_EQ(dbs_pool_shutdown(p, 30000), 0);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u);
    CHECK_INT(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), >=, 0);
    CHECK_EQ(dbs_unit_submit(u, unit_done_rc, NULL, &err), DBS_ECLOSED);
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    dbs_loop_close(l);

    dbs_stats st = stats_of(p);
    /* sessions, the loop's check-outs included */
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.acquired, st.released);
    CHECK_EQ(st.wait_count, st.acquired);
    CHECK_EQ(st.use_count, st.released);
    /* five sessions, three transacts (one twice), a ping, two held */
    CHECK_INT(st.acquired, >=, 5 + 4 + 1 + 2);
    CHECK_EQ(st.retries, 1);
    /* the connection ledger */
    CHECK_EQ(st.size, st.idle + st.in_use);
    CHECK_EQ((int64_t)(st.created - st.closed), st.size);
    CHECK_EQ(st.closed, st.closed_lifetime + st.closed_idle + st.closed_broken +
                            st.closed_overflow + st.closed_dirty + st.closed_pool);
    CHECK_EQ(st.invalidated, st.closed_broken);
    /* errors: each counted once, by class, adding up */
    CHECK_EQ(st.timeouts, 1);
    CHECK_EQ(dbs_pool_errors(p, DBS_ETIMEOUT, NULL), st.timeouts);
    CHECK_EQ(dbs_pool_errors(p, DBS_ESQL, NULL), 2);
    CHECK_EQ(dbs_pool_errors(p, DBS_ERETRYABLE, NULL), 0); /* work's own return */
    CHECK_EQ(dbs_pool_errors(p, DBS_ECLOSED, NULL), 2);
    CHECK_EQ(dbs_pool_errors(p, DBS_ENOMEM, NULL), be == DBS_BACKEND_POSTGRESQL ? 1 : 0);
    uint64_t total = dbs_pool_errors(p, 0, NULL), by_class = 0;
    for (int code = -1; code >= -64; code--)
        by_class += dbs_pool_errors(p, code, NULL);
    CHECK_EQ(by_class, total);
    CHECK_EQ(total, 5 + (be == DBS_BACKEND_POSTGRESQL));

    /* the Prometheus text: well formed (every family's HELP and TYPE once),
     * and the same numbers */
    static struct sample m[4096];
    int n = metrics_of(p, m, 4096);
    const char *L = "pool=\"counts\",target=\"primary\"";
    const char *O = "db_client_connection_pool_name=\"counts\"";
    CHECK_EQ(sample(m, n, "dbscope_acquired_total", L), st.acquired);
    CHECK_EQ(sample(m, n, "dbscope_released_total", L), st.released);
    CHECK_EQ(sample(m, n, "dbscope_connections_created_total", L), st.created);
    CHECK_EQ(sample(m, n, "dbscope_acquire_timeouts_total", L), st.timeouts);
    CHECK_EQ(sample(m, n, "dbscope_acquire_wait_seconds_count", L), st.wait_count);
    CHECK_EQ(sample(m, n, "dbscope_session_duration_seconds_count", L), st.use_count);
    CHECK_EQ(sample(m, n, "db_client_connection_timeouts_total", O), st.timeouts);
    CHECK_EQ(sample(m, n, "db_client_connection_wait_time_seconds_count", O), st.wait_count);
    CHECK_EQ(sample(m, n, "db_client_connection_use_time_seconds_count", O), st.use_count);
    double errs = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(m[i].name, "dbscope_errors_total"))
            errs += m[i].value;
    CHECK_EQ(errs, total);
    dbs_histogram op;
    CHECK_EQ(dbs_pool_histogram(p, DBS_HIST_OPERATION, &op), DBS_OK);
    char lab[160];
    snprintf(lab, sizeof lab, "%s,db_system_name=\"%s\"", O,
             be == DBS_BACKEND_POSTGRESQL ? "postgresql"
             : be == DBS_BACKEND_MARIADB  ? "mariadb"
                                          : "sqlite");
    CHECK_EQ(sample(m, n, "db_client_operation_duration_seconds_count", lab), op.count);

    char json[8192];
    int jn = dbs_pool_stats_json(p, json, sizeof json);
    CHECK_INT(jn, >, 0);
    CHECK_INT(jn, <, (int)sizeof json);
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        CHECK_FAIL("stats JSON does not parse: %s: %s", jerr.text, json);
    CHECK_EQ(json_integer_value(json_object_get(root, "acquired")), st.acquired);
    CHECK_EQ(json_integer_value(json_object_get(root, "errors")), total);
    json_int_t cells = 0;
    json_t *by = json_object_get(root, "errors_by");
    for (size_t i = 0; i < json_array_size(by); i++)
        cells += json_integer_value(json_object_get(json_array_get(by, i), "count"));
    CHECK_EQ(cells, total);
    json_decref(root);
    dbs_pool_close(p);
}

int main(void)
{
    atomic_store(&dbs__fault.armed, 1); /* pools below can fault on demand */
    test_histogram_math();
    test_leak_reported_with_line();
    test_leak_reported_every_mode();
    test_stop_from_own_thread();
    test_leak_at_pool_close();
    test_leak_long_context();
    test_transact_names_caller();
    test_leak_site_every_acquire();
    test_session_list();
    test_session_list_order();
    test_injected_delays();
    test_every_event();
    test_invalidate_carries_failure();
    test_open_connect_event();
    test_attempt();
    test_log_or_listen();
    test_reentrant_callbacks();
    test_stats_consistent_under_load();
    test_exports();
    test_hostile_names();
    test_export_across_close();
    test_bucket_bounds_inclusive();
    test_bucket_bounds_exact();
    test_metrics_comma_locale();
    test_otel_names_and_errors();
    test_circuit_gauge();
    test_otel_limits_single();
    test_keepalive_and_min_idle();
    test_loop_closed_units_counted();
    test_loop_ops_counted();
    test_wait_ready_counts_nothing();
    test_closed_acquires_counted();
    test_wait_ready_not_a_session();
    test_closed_submit_counted();
    test_loop_send_failure_counted();
    test_invalidate_reason_every_path();
    test_unit_timeouts_counted();
    test_busy_submit_counted();
    test_close_failures_counted();
    test_release_reset_failure();
    test_cancel_in_flight_counted();
    test_shutdown_in_flight_counted();
    test_posted_reset_failure();
    test_counts_agree();
#ifdef DBSCOPE_WITH_PG
    test_circuit_every_replica();
#endif
    puts("test_observe: ok");
    return 0;
}
