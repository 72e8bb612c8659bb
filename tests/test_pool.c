/* The pool: timeout, FIFO hand-off, parked connections, overflow, lifetime, idle timeout,
 * min_idle, validation, failed and slow connects, circuit breaker, modes,
 * close with sessions out. Runs on SQLite and PostgreSQL. */
#include "common.h"
#include "pool_int.h" /* dbs__shard_of: which threads share a shard */

static _Atomic uint64_t last_checkout_conn;
static atomic_int connects;
static pthread_mutex_t timeout_mu = PTHREAD_MUTEX_INITIALIZER;
static char timeout_reason[sizeof ((dbs_error *)0)->message];
static int timeout_code;

static void on_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_TIMEOUT) {
        pthread_mutex_lock(&timeout_mu);
        snprintf(timeout_reason, sizeof timeout_reason, "%s", ev->reason ? ev->reason : "");
        timeout_code = ev->code;
        pthread_mutex_unlock(&timeout_mu);
    }
    if (ev->kind == DBS_EVENT_CHECKOUT)
        atomic_store(&last_checkout_conn, ev->conn_id);
    if (ev->kind == DBS_EVENT_CONNECT)
        atomic_fetch_add(&connects, 1);
}

static dbs_config base_config(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.on_event = on_event;
    cfg.log_events = 0;
    return cfg;
}

static uint64_t checkout_conn(dbs_pool *p, dbs_session **out)
{
    dbs_error err;
    *out = dbs_session_open(p, NULL, &err);
    if (!*out)
        CHECK_FAIL("open: %s", err.message);
    return atomic_load(&last_checkout_conn);
}

static void test_acquire_timeout(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 300;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *held = dbs_session_open(p, NULL, &err);
    CHECK(held);
    int64_t t0 = now_ms();
    dbs_session *s = dbs_session_open(p, NULL, &err);
    int64_t waited = now_ms() - t0;
    CHECK(s == NULL);
    CHECK_EQ(err.code, DBS_ETIMEOUT);
    CHECK_CONTAINS(err.message, "acquire_timeout_ms=300");
    /* It waited the whole timeout (the deadline is monotonic, so never
     * less) and gave up then, not seconds later. */
    CHECK_INT(waited, >=, 300);
    CHECK_INT(waited, <, 5000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.timeouts, 1);
    CHECK_EQ(st.waiting, 0);
    dbs_session_close(held);
    dbs_pool_close(p);
}

/* The timeout event says what the caller's error says: the bound and the
 * pool's numbers, not only the code's generic text. */
static void test_timeout_event_says_why(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 50;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *held = dbs_session_open(p, NULL, &err);
    CHECK(held);
    pthread_mutex_lock(&timeout_mu);
    timeout_reason[0] = '\0';
    timeout_code = 0;
    pthread_mutex_unlock(&timeout_mu);
    CHECK(dbs_session_open(p, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_ETIMEOUT);
    pthread_mutex_lock(&timeout_mu);
    CHECK_EQ(timeout_code, DBS_ETIMEOUT);
    CHECK_STR(timeout_reason, err.message);
    CHECK_CONTAINS(timeout_reason, "acquire_timeout_ms=50");
    CHECK_CONTAINS(timeout_reason, "pool size 1, 1 in use");
    pthread_mutex_unlock(&timeout_mu);
    dbs_session_close(held);
    dbs_pool_close(p);
}

/* ---- FIFO ---- */

struct fifo_arg {
    dbs_pool *pool;
    int index;
    atomic_int *served;
    int order;
};

static void *fifo_waiter(void *v)
{
    struct fifo_arg *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    if (!s)
        CHECK_FAIL("waiter %d: %s", a->index, err.message);
    a->order = atomic_fetch_add(a->served, 1);
    dbs_session_close(s);
    return NULL;
}

/* Once the oldest waiter has waited barge_limit_us, order is strict: every
 * waiter is served in order of arrival. With 0, always. */
static void fifo_case(int barge_limit_us)
{
    enum { N = 8 };
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    cfg.barge_limit_us = barge_limit_us;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *held = dbs_session_open(p, NULL, &err);
    CHECK(held);
    atomic_int served = 0;
    pthread_t th[N];
    struct fifo_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct fifo_arg){.pool = p, .index = i, .served = &served};
        pthread_create(&th[i], NULL, fifo_waiter, &args[i]);
        /* arrival order is known only once this one is queued */
        WAIT_UNTIL(stats_of(p).waiting == i + 1, 30000);
        CHECK_EQ(stats_of(p).waiting, i + 1);
    }
    /* Past every waiter's limit: from here on nobody may be passed over. */
    dbs__sleep_ms(barge_limit_us / 1000 + 5);
    dbs_session_close(held);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++)
        CHECK_EQ(args[i].order, i);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.acquired, st.released);
    dbs_pool_close(p);
}

static void test_fifo_handoff(void)
{
    fifo_case(0);
    fifo_case(1000); /* the default */
    fifo_case(50000);
}

/* A waiter that has waited its limit is not passed over: a thread that
 * gives the connection back and asks again at once is served second. */
static void no_barging_case(int barge_limit_us)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    cfg.barge_limit_us = barge_limit_us;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *held = dbs_session_open(p, NULL, &err);
    atomic_int served = 0;
    struct fifo_arg a = {.pool = p, .served = &served};
    pthread_t th;
    pthread_create(&th, NULL, fifo_waiter, &a);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    dbs__sleep_ms(barge_limit_us / 1000 + 5);
    dbs_session_close(held);
    /* Reopening at once, this running thread would win any race for an
     * idle connection against the waiter still waking up; with hand-off
     * there is none, so it is served second. */
    dbs_session *again = dbs_session_open(p, NULL, &err);
    CHECK(again);
    int mine = atomic_fetch_add(&served, 1);
    dbs_session_close(again);
    pthread_join(th, NULL);
    CHECK_EQ(mine, 1);
    CHECK_EQ(a.order, 0);
    dbs_pool_close(p);
}

static void test_no_barging(void)
{
    no_barging_case(0);
    no_barging_case(1000);
}

/* Within the limit a thread may take back the connection it gave back,
 * without a wake-up, but only while the sessions it took it back for have
 * held it less than barge_limit_us / DBS_BARGE_HOLD_SHARE in all: the
 * next one it gives back goes to the waiter. */
static void test_barging_hold_is_bounded(void)
{
    enum { HOLD_MS = 5, MOST = 8 };
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    /* A budget of MOST * HOLD_MS: at most MOST sessions of at least
     * HOLD_MS each are taken back in a row. The waiter's limit is 64
     * times that, so the budget alone decides below. */
    const int64_t budget_ms = MOST * HOLD_MS;
    cfg.barge_limit_us = (int)(budget_ms * 1000 * DBS_BARGE_HOLD_SHARE);
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *held;
    int64_t opened = now_ms();
    uint64_t conn = checkout_conn(p, &held);
    atomic_int served = 0;
    struct fifo_arg a = {.pool = p, .served = &served};
    pthread_t th;
    pthread_create(&th, NULL, fifo_waiter, &a);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    int64_t queued = now_ms();
    int taken_back = 0;
    int64_t run_ms = 0; /* at least what the pool counts */
    for (;;) {
        dbs__sleep_ms(HOLD_MS);
        dbs_session_close(held);
        int64_t closed = now_ms();
        run_ms += closed - opened;
        bool young = closed - queued < budget_ms * DBS_BARGE_HOLD_SHARE;
        opened = now_ms();
        uint64_t again = checkout_conn(p, &held);
        CHECK_EQ(again, conn);
        if (atomic_load(&served) > 0) {
            /* Handed to the waiter: only once the budget was spent (or
             * the waiter's limit passed). */
            if (young)
                CHECK_INT(run_ms, >=, budget_ms);
            break;
        }
        taken_back++;
        CHECK_INT(taken_back, <=, MOST);
    }
    dbs_session_close(held);
    pthread_join(th, NULL);
    CHECK_EQ(a.order, 0);
    dbs_pool_close(p);
}

/* With more threads than shards, threads share one. Only the thread that
 * parked a connection may take it back past the waiters: a shard-mate
 * queues behind them like anyone else. */
struct mate_arg {
    dbs_pool *pool;
    dbs__shard *main_shard;
    atomic_int *go, *served;
    atomic_int probed; /* is_mate is set */
    bool is_mate;
    int order;
};

static void *shard_mate(void *v)
{
    struct mate_arg *a = v;
    a->is_mate = dbs__shard_of(a->pool) == a->main_shard;
    atomic_store(&a->probed, 1);
    if (!a->is_mate)
        return NULL;
    while (!atomic_load(a->go))
        dbs__sleep_ms(1);
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    if (!s)
        CHECK_FAIL("shard-mate: %s", err.message);
    a->order = atomic_fetch_add(a->served, 1);
    dbs_session_close(s);
    return NULL;
}

static void test_barging_is_per_thread(void)
{
    enum { BUDGET_MS = 20 };
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    cfg.barge_limit_us = BUDGET_MS * 1000 * DBS_BARGE_HOLD_SHARE;
    dbs_pool *p = open_pool("pool", &cfg);
    atomic_int go = 0, served = 0;
    struct mate_arg mate = {.pool = p, .main_shard = dbs__shard_of(p), .go = &go,
                            .served = &served};
    pthread_t mate_th;
    /* Threads take ordinals, and so shards, in the order they first use a
     * pool: within DBS__SHARDS new threads one shares this thread's. */
    for (int i = 0;; i++) {
        if (i > DBS__SHARDS)
            CHECK_FAIL("no thread shares this thread's shard");
        atomic_store(&mate.probed, 0);
        pthread_create(&mate_th, NULL, shard_mate, &mate);
        WAIT_UNTIL(atomic_load(&mate.probed), 30000);
        if (mate.is_mate)
            break;
        pthread_join(mate_th, NULL);
    }
    int64_t t0 = now_ms();
    dbs_session *held = open_ok(p);
    struct fifo_arg w = {.pool = p, .served = &served};
    pthread_t w_th;
    pthread_create(&w_th, NULL, fifo_waiter, &w);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    dbs_session_close(held); /* parked in this shard: the waiter is young */
    bool parked = now_ms() - t0 < BUDGET_MS;
    atomic_store(&go, 1);
    pthread_join(w_th, NULL);
    pthread_join(mate_th, NULL);
    /* The shard-mate found the connection parked but not its own: it
     * queued behind the waiter. */
    if (parked) {
        CHECK_EQ(w.order, 0);
        CHECK_EQ(mate.order, 1);
    }
    CHECK_EQ(stats_of(p).timeouts, 0);
    dbs_pool_close(p);
}

struct limit_arg {
    dbs_pool *pool;
    int rc;
    int64_t waited_ms;
};

static void *limit_waiter(void *v)
{
    struct limit_arg *a = v;
    dbs_error err;
    int64_t t0 = now_ms();
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    a->waited_ms = now_ms() - t0;
    a->rc = s ? DBS_OK : err.code;
    dbs_session_close(s);
    return NULL;
}

/* A connection given back while the only waiter is within its limit stays
 * with the thread that gave it back; if that thread never asks again, the
 * waiter takes it when its limit passes, not at its acquire timeout. */
static void frees_parked_case(int barge_limit_us, int acquire_timeout_ms)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = acquire_timeout_ms;
    cfg.barge_limit_us = barge_limit_us;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    int64_t t0 = now_ms();
    dbs_session *held = dbs_session_open(p, NULL, &err);
    CHECK(held);
    struct limit_arg a = {.pool = p, .rc = -1};
    pthread_t th;
    pthread_create(&th, NULL, limit_waiter, &a);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    dbs_session_close(held);
    int64_t hold_ms = now_ms() - t0; /* at least what the pool counts */
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, DBS_OK);
    CHECK_EQ(stats_of(p).timeouts, 0);
    /* Held for less than the budget, the connection was parked for this
     * thread, which never asks again: the waiter gets it at its limit, or
     * at its deadline if that comes first. (Held longer, it went to the
     * waiter at once: nothing to check about when.) */
    if (hold_ms * 1000 < barge_limit_us / DBS_BARGE_HOLD_SHARE) {
        int expect = barge_limit_us / 1000 < acquire_timeout_ms ? barge_limit_us / 1000
                                                               : acquire_timeout_ms;
        CHECK_INT(a.waited_ms, >=, expect);
    }
    dbs_pool_close(p);
}

static void test_barge_limit_frees_parked(void)
{
    frees_parked_case(64 * 25000, 60000); /* a budget of 25 ms */
    /* A limit beyond the acquire timeout: the waiter still gets the
     * connection at its deadline rather than DBS_ETIMEOUT. */
    frees_parked_case(60000000, 400);
}

/* ---- parked connections ---- */

struct park_arg {
    dbs_pool *pool;
    uint64_t conn;
    int rc;
};

static void *open_close_once(void *v)
{
    struct park_arg *a = v;
    dbs_session *s;
    a->conn = checkout_conn(a->pool, &s);
    a->rc = s ? 0 : -1;
    dbs_session_close(s);
    return NULL;
}

static void test_parked_connection_serves_other_threads(void)
{
    /* A released connection kept for its thread's next checkout is still
     * the pool's: another thread gets it rather than waiting, and one
     * parked by a thread that has exited is not lost. */
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 20000;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *s;
    uint64_t mine = checkout_conn(p, &s);
    dbs_session_close(s);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.idle, 1); /* parked counts as idle */
    CHECK_EQ(st.in_use, 0);
    for (int round = 0; round < 3; round++) {
        struct park_arg a = {.pool = p, .rc = -1};
        pthread_t th;
        pthread_create(&th, NULL, open_close_once, &a);
        pthread_join(th, NULL);
        CHECK_EQ(a.rc, 0);
        CHECK_EQ(a.conn, mine);
        CHECK_EQ(checkout_conn(p, &s), mine); /* from the exited thread's slot */
        dbs_session_close(s);
    }
    st = stats_of(p);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.created, 1);
    CHECK_EQ(st.timeouts, 0);
    CHECK_EQ(st.acquired, 7);
    CHECK_EQ(st.released, 7);
    CHECK_EQ(st.idle + st.in_use, st.size);
    dbs_pool_close(p);
}

static void test_parked_connections_age_out(void)
{
    /* The housekeeper sees parked connections: idle timeout and lifetime
     * close them like any idle one. */
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.min_idle = 0;
    cfg.idle_timeout_ms = 100;
    cfg.housekeeping_interval_ms = 20;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *s;
    checkout_conn(p, &s);
    dbs_session_close(s);
    WAIT_UNTIL(stats_of(p).size == 0, 30000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(st.idle, 0);
    CHECK_INT(st.closed_idle, >=, 1);
    dbs_pool_close(p);
}

static void test_overflow(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 1;
    cfg.acquire_timeout_ms = 100;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *s[3];
    for (int i = 0; i < 3; i++) {
        s[i] = dbs_session_open(p, NULL, &err);
        if (!s[i])
            CHECK_FAIL("session %d: %s", i, err.message);
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 3);
    CHECK_EQ(st.in_use, 3);
    CHECK_EQ(st.overflow_in_use, 1);
    CHECK_EQ(st.max_size, 3);
    dbs_session *extra = dbs_session_open(p, NULL, &err);
    CHECK(extra == NULL);
    CHECK_EQ(err.code, DBS_ETIMEOUT);
    for (int i = 0; i < 3; i++)
        dbs_session_close(s[i]);
    st = stats_of(p);
    CHECK_EQ(st.size, 2); /* the overflow connection was closed */
    CHECK_EQ(st.idle, 2);
    CHECK_EQ(st.closed_overflow, 1);
    CHECK_EQ(st.overflow_in_use, 0);
    dbs_pool_close(p);
}

static void test_lifetime(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.max_lifetime_ms = 400;
    cfg.housekeeping_interval_ms = 3600000; /* recycling on checkout/release */
    dbs_pool *p;
    dbs_session *s;
    uint64_t first, again;
    /* Before expiry: the same connection. Only check-outs within the
     * lifetime, less its jitter, of the pool's opening prove that: a run
     * held up longer (a loaded machine) proves nothing, and goes again on a
     * fresh pool. */
    for (int tries = 1;; tries++) {
        int64_t t0 = now_ms();
        p = open_pool("pool", &cfg);
        first = checkout_conn(p, &s);
        dbs_session_close(s);
        again = checkout_conn(p, &s);
        dbs_session_close(s);
        if (now_ms() - t0 < cfg.max_lifetime_ms * 39 / 40)
            break;
        if (tries == 10)
            CHECK_FAIL("10 runs took longer than max_lifetime_ms=%d", cfg.max_lifetime_ms);
        dbs_pool_close(p);
    }
    CHECK_EQ(first, again); /* before expiry: the same connection */
    dbs__sleep_ms(450);
    uint64_t later = checkout_conn(p, &s);
    CHECK(later != first); /* after: a new one */
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).closed_lifetime, 1);
    CHECK_EQ(stats_of(p).size, 1);

    /* A connection that expires while held is retired on release. */
    uint64_t held = checkout_conn(p, &s);
    dbs__sleep_ms(450);
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).closed_lifetime, 2);
    uint64_t next = checkout_conn(p, &s);
    CHECK(next != held);
    dbs_session_close(s);
    dbs_pool_close(p);
}

static void test_idle_timeout_to_min_idle(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.min_idle = 1;
    cfg.idle_timeout_ms = 200;
    cfg.housekeeping_interval_ms = 20;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = dbs_session_open(p, NULL, &err);
        CHECK(s[i]);
    }
    CHECK_EQ(stats_of(p).size, 4);
    for (int i = 0; i < 4; i++)
        dbs_session_close(s[i]);
    WAIT_UNTIL(stats_of(p).size == 1, 30000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.closed_idle, 3);
    dbs__sleep_ms(300); /* and never below min_idle */
    CHECK_EQ(stats_of(p).size, 1);
    dbs_pool_close(p);
}

/* idle_timeout_ms closes idle connections beyond min_idle only: with
 * connections in use and exactly min_idle idle, the idle one stays (it was
 * closed and opened again every round). */
static void test_idle_timeout_spares_min_idle_in_use(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.min_idle = 1;
    cfg.idle_timeout_ms = 50;
    cfg.housekeeping_interval_ms = 10;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = dbs_session_open(p, NULL, &err);
        if (!s[i])
            CHECK_FAIL("session %d: %s", i, err.message);
    }
    dbs_session_close(s[3]); /* 3 in use, 1 idle: min_idle exactly */
    dbs__sleep_ms(500);      /* many idle timeouts and rounds */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.closed_idle, 0);
    CHECK_EQ(st.created, 4);
    CHECK_EQ(st.size, 4);
    CHECK_EQ(st.idle, 1);
    for (int i = 0; i < 3; i++)
        dbs_session_close(s[i]);
    /* now 4 idle: back to min_idle */
    WAIT_UNTIL(stats_of(p).size == 1, 30000);
    CHECK_EQ(stats_of(p).size, 1);
    CHECK_EQ(stats_of(p).closed_idle, 3);
    dbs_pool_close(p);
}

/* min_idle is kept within pool_size: with pool_size connections in use,
 * the housekeeper opens no overflow connection to sit idle (one a session
 * then used was closed as overflow at release and opened again). */
static void test_min_idle_within_pool_size(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 5;
    cfg.min_idle = 2;
    cfg.housekeeping_interval_ms = 10;
    dbs_pool *p = open_pool("pool", &cfg);
    WAIT_UNTIL(stats_of(p).idle == 2, 30000);
    CHECK_EQ(stats_of(p).idle, 2);
    dbs_error err;
    dbs_session *s[2];
    for (int i = 0; i < 2; i++) {
        s[i] = dbs_session_open(p, NULL, &err);
        if (!s[i])
            CHECK_FAIL("session %d: %s", i, err.message);
    }
    dbs__sleep_ms(300); /* many rounds */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 2);
    CHECK_EQ(st.created, 2);
    /* an overflow session still works, and its connection goes at release */
    dbs_session *o = dbs_session_open(p, NULL, &err);
    if (!o)
        CHECK_FAIL("overflow session: %s", err.message);
    dbs_session_close(o);
    CHECK_EQ(stats_of(p).closed_overflow, 1);
    for (int i = 0; i < 2; i++)
        dbs_session_close(s[i]);
    dbs__sleep_ms(100);
    st = stats_of(p);
    CHECK_EQ(st.size, 2);
    CHECK_EQ(st.idle, 2);
    dbs_pool_close(p);
}

/* Keep-alive pings do not make a connection "used": one idle past
 * idle_timeout_ms is closed even though it was pinged meanwhile (the pool
 * never shrank while keepalive_ms was under idle_timeout_ms). */
static void test_keepalive_keeps_idle_timeout(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.min_idle = 0;
    cfg.idle_timeout_ms = 300;
    cfg.keepalive_ms = 30;
    cfg.housekeeping_interval_ms = 10;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *s;
    checkout_conn(p, &s);
    dbs_session_close(s);
    WAIT_UNTIL(stats_of(p).size == 0, 10000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 0);
    CHECK_INT(st.closed_idle, >=, 1);
    CHECK_EQ(st.invalidated, 0);
    dbs_pool_close(p);
}

/* Keep-alive replaces a connection whose ping fails, and min_idle stays
 * kept: the dead one is closed and counted broken, and a new one opened. */
static void test_keepalive_replaces_dead(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.min_idle = 1;
    cfg.idle_timeout_ms = 0;
    cfg.keepalive_ms = 30;
    cfg.housekeeping_interval_ms = 10;
    dbs_pool *p = open_pool("pool", &cfg);
    WAIT_UNTIL(stats_of(p).idle == 1, 30000);
    atomic_store(&dbs__fault.fail_pings, 1);
    WAIT_UNTIL(stats_of(p).closed_broken == 1 && stats_of(p).idle == 1, 30000);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.closed_broken, 1);
    CHECK_EQ(st.idle, 1);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.created, 2);
    dbs_pool_close(p);
}

/* SQLite: a database file deleted under the pool is reported within
 * housekeeping_interval_ms (docs/pool.md) also when nothing else needs
 * upkeep (no min_idle, idle timeout, lifetime, leak or keep-alive): the
 * housekeeper was not started then, and nobody looked. */
static atomic_int deleted_events;

static void count_deleted(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_INVALIDATE && ev->reason && strstr(ev->reason, "deleted"))
        atomic_fetch_add(&deleted_events, 1);
}

static void test_target_checked_without_upkeep(void)
{
    dbs_config cfg = base_config();
    cfg.on_event = count_deleted;
    cfg.pool_size = 2;
    cfg.min_idle = 0;
    cfg.idle_timeout_ms = 0;
    cfg.max_lifetime_ms = 0;
    cfg.housekeeping_interval_ms = 10;
    dbs_pool *p = open_pool("pool", &cfg);
    if (dbs_pool_backend(p) != DBS_BACKEND_SQLITE) {
        dbs_pool_close(p);
        return;
    }
    dbs_session *s;
    checkout_conn(p, &s);
    dbs_session_close(s);
    test_db_remove();
    WAIT_UNTIL(atomic_load(&deleted_events) > 0, 10000);
    CHECK_INT(atomic_load(&deleted_events), >, 0);
    dbs_pool_close(p);
}

static void test_min_idle_fill(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 5;
    cfg.min_idle = 3;
    cfg.housekeeping_interval_ms = 20;
    dbs_pool *p = open_pool("pool", &cfg);
    WAIT_UNTIL(stats_of(p).idle == 3, 30000);
    CHECK_EQ(stats_of(p).idle, 3);
    /* Taking one leaves 2 idle: the housekeeper brings it back to 3. */
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s);
    WAIT_UNTIL(stats_of(p).idle == 3, 30000);
    CHECK_EQ(stats_of(p).idle, 3);
    CHECK_EQ(stats_of(p).size, 4);
    dbs_session_close(s);
    dbs_pool_close(p);
}

static void test_validation_replaces_broken(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.validation_window_ms = 0; /* validate every hand-out */
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *s;
    uint64_t first = checkout_conn(p, &s);
    dbs_session_close(s);
    atomic_store(&dbs__fault.fail_pings, 1);
    uint64_t second = checkout_conn(p, &s); /* no error for the caller */
    CHECK(second != first);
    dbs_error err;
    CHECK_OK(dbs_exec(s, "SELECT 1", NULL, 0, &err), &err);
    dbs_session_close(s);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.invalidated, 1);
    CHECK_EQ(st.size, 1);
    dbs_pool_close(p);

    /* pre_ping off: no validation at all */
    cfg.pre_ping = 0;
    p = open_pool("pool", &cfg);
    first = checkout_conn(p, &s);
    dbs_session_close(s);
    atomic_store(&dbs__fault.fail_pings, 1);
    second = checkout_conn(p, &s);
    CHECK_EQ(second, first);
    dbs_session_close(s);
    atomic_store(&dbs__fault.fail_pings, 0);
    dbs_pool_close(p);
}

static void test_failed_connect_keeps_slot(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 100;
    cfg.circuit_threshold = 0;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err);
    CHECK(a);
    atomic_store(&dbs__fault.fail_connects, 3);
    for (int i = 0; i < 3; i++) {
        dbs_session *b = dbs_session_open(p, NULL, &err);
        CHECK(b == NULL);
        CHECK_EQ(err.code, DBS_ECONNECT);
    }
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 1);
    CHECK_EQ(st.pending, 0);
    CHECK_EQ(st.connect_failures, 3);
    dbs_session *b = dbs_session_open(p, NULL, &err); /* the slot is still there */
    if (!b)
        CHECK_FAIL("after failed connects: %s", err.message);
    dbs_session_close(b);
    dbs_session_close(a);
    dbs_pool_close(p);
}

struct slow_arg {
    dbs_pool *pool;
    int rc;
};

static void *slow_opener(void *v)
{
    struct slow_arg *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    a->rc = s ? 0 : err.code;
    dbs_session_close(s);
    return NULL;
}

static void test_slow_connect_blocks_nobody(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 3;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err); /* takes the idle one */
    CHECK(a);
    dbs_session_close(a); /* one idle again */
    dbs_session *mine = dbs_session_open(p, NULL, &err);
    CHECK(mine);
    /* the connect stalls until this thread lets it go: however long this
     * thread is descheduled below, it is still under way */
    atomic_store(&dbs__fault.connect_gate, 1);
    struct slow_arg sa = {.pool = p};
    pthread_t th;
    pthread_create(&th, NULL, slow_opener, &sa); /* must connect: slow */
    WAIT_UNTIL(stats_of(p).pending == 1, 30000);
    CHECK_EQ(stats_of(p).pending, 1);
    /* While it connects, this thread uses the pool freely. */
    dbs_session_close(mine);
    dbs_session *again = dbs_session_open(p, NULL, &err);
    CHECK(again);
    CHECK_OK(dbs_exec(again, "SELECT 1", NULL, 0, &err), &err);
    dbs_session_close(again);
    CHECK_EQ(stats_of(p).pending, 1); /* still connecting: we did not wait */
    atomic_store(&dbs__fault.connect_gate, 0);
    pthread_join(th, NULL);
    CHECK_EQ(sa.rc, 0);
    dbs_pool_close(p);
}

static void test_circuit_breaker(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 3;
    cfg.circuit_threshold = 2;
    cfg.circuit_cooldown_ms = 300;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err);
    CHECK(a);
    atomic_store(&dbs__fault.fail_connects, 1000);
    for (int i = 0; i < 2; i++) {
        CHECK(dbs_session_open(p, NULL, &err) == NULL);
        CHECK_EQ(err.code, DBS_ECONNECT);
    }
    int probes = open_refused_by_circuit(p, &err); /* failing fast, no connect tried */
    CHECK_EQ(stats_of(p).connect_failures, 2 + probes);
    CHECK_EQ(stats_of(p).unavailable, 1);
    /* connections already open still work */
    CHECK_OK(dbs_exec(a, "SELECT 1", NULL, 0, &err), &err);
    atomic_store(&dbs__fault.fail_connects, 0);
    /* the first probe comes after 50 ms, not the whole cool-down: a short
     * outage ends for the callers soon after the database is back (each
     * failed probe doubles the spell, up to the cool-down) */
    int spell_ms = 50;
    for (int i = 0; i < probes; i++)
        spell_ms = spell_ms * 2 < cfg.circuit_cooldown_ms ? spell_ms * 2 : cfg.circuit_cooldown_ms;
    dbs__sleep_ms(spell_ms + 100);
    dbs_session *b = dbs_session_open(p, NULL, &err); /* the probe succeeds */
    if (!b)
        CHECK_FAIL("after the first probe interval: %s", err.message);
    dbs_session_close(b);
    dbs_session_close(a);
    dbs_pool_close(p);
}

static void test_mode_none(void)
{
    dbs_config cfg = base_config();
    cfg.mode = DBS_POOL_NONE;
    dbs_pool *p = open_pool("pool", &cfg);
    CHECK_EQ(stats_of(p).size, 0);
    dbs_session *s;
    uint64_t a = checkout_conn(p, &s);
    dbs_session_close(s);
    uint64_t b = checkout_conn(p, &s);
    dbs_session_close(s);
    CHECK(a != b);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(st.created, 3); /* the check at open + one per session */
    dbs_pool_close(p);
}

static void test_mode_single(void)
{
    dbs_config cfg = base_config();
    cfg.mode = DBS_POOL_SINGLE;
    cfg.acquire_timeout_ms = 100;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err);
    CHECK(a);
    CHECK(dbs_session_open(p, NULL, &err) == NULL); /* serialised */
    CHECK_EQ(err.code, DBS_ETIMEOUT);
    dbs_session_close(a);
    CHECK_EQ(stats_of(p).max_size, 1);
    dbs_pool_close(p);
}

struct closer_arg {
    dbs_pool *pool;
    int rc;
};

static void *blocked_opener(void *v)
{
    struct closer_arg *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    a->rc = s ? 0 : err.code;
    dbs_session_close(s);
    return NULL;
}

static void test_close_with_sessions_out(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 60000;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    dbs_session *a = dbs_session_open(p, NULL, &err);
    dbs_session *b = dbs_session_open(p, NULL, &err);
    CHECK(a && b);
    CHECK_OK(dbs_exec(a, "SELECT 1", NULL, 0, &err), &err);
    struct closer_arg w = {.pool = p, .rc = 1};
    pthread_t th;
    pthread_create(&th, NULL, blocked_opener, &w);
    WAIT_UNTIL(stats_of(p).waiting == 1, 30000);
    dbs_pool_close(p); /* waits for nobody */
    pthread_join(th, NULL);
    CHECK_EQ(w.rc, DBS_ECLOSED); /* the waiter was woken */
    CHECK_EQ(dbs_exec(a, "SELECT 1", NULL, 0, &err), DBS_ECLOSED);
    CHECK_EQ(err.code, DBS_ECLOSED);
    CHECK_EQ(dbs_commit(b, &err), DBS_ECLOSED);
    CHECK(dbs_query(b, "SELECT 1", NULL, 0, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECLOSED);
    dbs_session_close(a); /* connections closed now; the pool freed last */
    dbs_session_close(b);
}

struct holder_arg {
    dbs_pool *pool;
    pthread_barrier_t *opened, *closed;
    int rc;
};

static void *hold_across_close(void *v)
{
    struct holder_arg *a = v;
    dbs_error err;
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    a->rc = s ? 0 : err.code;
    pthread_barrier_wait(a->opened);
    pthread_barrier_wait(a->closed);
    if (s) {
        a->rc = dbs_exec(s, "SELECT 1", NULL, 0, &err);
        dbs_session_close(s); /* the last of these frees the pool */
    }
    return NULL;
}

static void test_close_with_sessions_out_elsewhere(void)
{
    /* Sessions of several threads outlive dbs_pool_close; each fails with
     * DBS_ECLOSED and closes cleanly, and the pool is freed once, by the
     * last (ASan and TSan check the "once"). */
    enum { N = 6 };
    dbs_config cfg = base_config();
    cfg.pool_size = N;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *s; /* leaves a parked connection behind, too */
    checkout_conn(p, &s);
    dbs_session_close(s);
    pthread_barrier_t opened, closed;
    pthread_barrier_init(&opened, NULL, N + 1);
    pthread_barrier_init(&closed, NULL, N + 1);
    pthread_t th[N];
    struct holder_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (struct holder_arg){.pool = p, .opened = &opened, .closed = &closed, .rc = -1};
        pthread_create(&th[i], NULL, hold_across_close, &a[i]);
    }
    pthread_barrier_wait(&opened);
    dbs_pool_close(p);
    pthread_barrier_wait(&closed);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(a[i].rc, DBS_ECLOSED);
    }
    pthread_barrier_destroy(&opened);
    pthread_barrier_destroy(&closed);
}

static void test_ping(void)
{
    dbs_config cfg = base_config();
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_error err;
    CHECK_OK(dbs_pool_ping(p, &err), &err);
    CHECK_EQ(err.code, DBS_OK);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.acquired, 1);
    CHECK_EQ(st.released, 1);
    dbs_pool_close(p);
    dbs_pool_close(NULL);
}

/* dbs_pool_stats is one consistent snapshot: while the housekeeper closes
 * idle and expired connections, sessions take overflow connections and
 * give them back, and connects happen, every snapshot adds up (a
 * connection closed is counted closed in the same snapshot that no longer
 * counts it open; one opened, counted created in the one that counts it
 * open). */
typedef struct {
    dbs_pool *p;
    atomic_bool *stop;
} churn_arg;

static void *churn(void *arg)
{
    churn_arg *a = arg;
    unsigned seed = (unsigned)(uintptr_t)a;
    while (!atomic_load(a->stop)) {
        dbs_error err;
        dbs_session *s = dbs_session_open(a->p, NULL, &err);
        if (!s)
            CHECK_FAIL("open: %s", err.message);
        if (rand_r(&seed) % 4 == 0)
            dbs__sleep_ms(2); /* held long enough for the others to overflow */
        dbs_session_close(s);
        if (rand_r(&seed) % 8 == 0)
            dbs__sleep_ms(8); /* idle long enough for the idle timeout */
    }
    return NULL;
}

static void churn_start(dbs_pool *p, atomic_bool *stop, int n, pthread_t *th, churn_arg *a)
{
    for (int i = 0; i < n; i++) {
        a[i] = (churn_arg){p, stop};
        pthread_create(&th[i], NULL, churn, &a[i]);
    }
}

static void churn_stop(atomic_bool *stop, int n, const pthread_t *th)
{
    atomic_store(stop, true);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

static void test_stats_add_up(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 2;
    cfg.max_overflow = 3;
    cfg.min_idle = 1;
    cfg.idle_timeout_ms = 3;
    cfg.max_lifetime_ms = 20;
    cfg.housekeeping_interval_ms = 1;
    cfg.acquire_timeout_ms = 30000;
    dbs_pool *p = open_pool("pool", &cfg);
    /* a slow goodbye: every close takes a while after its connection left */
    atomic_store(&dbs__fault.close_delay_ms, 1);
    enum { T = 4 };
    atomic_bool stop = false;
    pthread_t th[T];
    churn_arg a[T];
    churn_start(p, &stop, T, th, a);
    /* until each way of closing happened, and 200 closings were seen */
    uint64_t closings = 0, prev_closed = 0;
    for (int64_t until = now_ms() + 120000;;) {
        dbs_stats st = stats_of(p);
        CHECK_EQ(st.idle + st.in_use, st.size);
        CHECK_EQ(st.created - st.closed, (uint64_t)st.size);
        CHECK_EQ(st.closed_lifetime + st.closed_idle + st.closed_broken + st.closed_overflow +
                     st.closed_pool + st.closed_dirty,
                 st.closed);
        closings += st.closed != prev_closed;
        prev_closed = st.closed;
        if (closings >= 200 && st.closed_idle > 0 && st.closed_lifetime > 0 &&
            st.closed_overflow > 0)
            break;
        if (now_ms() > until)
            CHECK_FAIL("not every way of closing happened: %llu idle, %llu lifetime, "
                       "%llu overflow",
                       (unsigned long long)st.closed_idle,
                       (unsigned long long)st.closed_lifetime,
                       (unsigned long long)st.closed_overflow);
    }
    churn_stop(&stop, T, th);
    atomic_store(&dbs__fault.close_delay_ms, 0);
    dbs_pool_close(p);
}

/* The ceiling counts connections still closing. Each way a connection
 * goes (lifetime at release and at checkout, overflow, idle timeout and
 * min_idle refills, a failed reset) gives its slot on only once its close
 * has returned: with slow goodbyes and more threads than slots, never more
 * than pool_size + max_overflow connections exist at once, and on a
 * PostgreSQL server whose limit is exactly that (a role's connection
 * limit, counted as max_connections is), no acquire is refused with
 * "too many connections" (53300). */
typedef struct {
    dbs_pool *p;
    atomic_bool *stop;
    atomic_int *opened;
} ceiling_arg;

static void *ceiling_churn(void *arg)
{
    ceiling_arg *a = arg;
    unsigned seed = (unsigned)(uintptr_t)a;
    while (!atomic_load(a->stop)) {
        dbs_error err;
        dbs_session *s = dbs_session_open(a->p, NULL, &err);
        if (!s)
            CHECK_FAIL("open within the ceiling: %s", err.message);
        exec_ok(s, "SELECT 1");
        if (rand_r(&seed) % 16 == 0)
            atomic_store(&dbs__fault.fail_resets, 1); /* closed as dirty */
        if (rand_r(&seed) % 4 == 0)
            dbs__sleep_ms(2);
        dbs_session_close(s);
        atomic_fetch_add(a->opened, 1);
        if (rand_r(&seed) % 8 == 0)
            dbs__sleep_ms(8);
    }
    return NULL;
}

/* On PostgreSQL, a login limited to n connections, as a URL in out (the
 * test's URL with its user and password swapped); false elsewhere. */
static bool limited_login(dbs_pool *admin, int n, char *out, size_t len)
{
    const char *url = test_url("pool");
    const char *at = strchr(url, '@'), *scheme = strstr(url, "://");
    if (!test_is_pg(url))
        return false;
    CHECK(at && scheme);
    char user[64], sql[512];
    snprintf(user, sizeof user, "dbs_ceiling_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", user);
    run_sql(admin, sql);
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN PASSWORD 'ceiling-pw' CONNECTION LIMIT %d",
             user, n);
    run_sql(admin, sql);
    snprintf(out, len, "%.*s%s:ceiling-pw%s", (int)(scheme + 3 - url), url, user, at);
    return true;
}

static void test_ceiling_counts_closing(void)
{
    enum { SIZE = 1, OVER = 2, T = 6 };
    dbs_config acfg = base_config();
    dbs_pool *admin = open_pool("pool", &acfg);
    char url[1024];
    /* The server frees a connection's place only when its backend process
     * has exited, a moment after the client closed it; on a loaded
     * machine a new connect can come first. So its limit leaves two more:
     * a pool that did not count connections still closing went to 7 at
     * once here. The exact ceiling is the client's count (live_peak). */
    bool server = limited_login(admin, SIZE + OVER + 2, url, sizeof url);
    dbs_config cfg = base_config();
    cfg.pool_size = SIZE;
    cfg.max_overflow = OVER;
    cfg.min_idle = 1;
    cfg.idle_timeout_ms = 5;
    cfg.max_lifetime_ms = 40;
    cfg.housekeeping_interval_ms = 2;
    cfg.acquire_timeout_ms = 60000;
    if (server)
        cfg.url = url;
    else
        cfg.url = test_url("pool");
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    /* a slow goodbye: each connection given up lingers a while */
    atomic_store(&dbs__fault.close_delay_ms, 100);
    atomic_store(&dbs__fault.live_peak, atomic_load(&dbs__fault.live));
    int base = atomic_load(&dbs__fault.live) - stats_of(p).size; /* the admin's */
    atomic_bool stop = false;
    atomic_int opened = 0;
    pthread_t th[T];
    ceiling_arg a[T];
    for (int i = 0; i < T; i++) {
        a[i] = (ceiling_arg){p, &stop, &opened};
        pthread_create(&th[i], NULL, ceiling_churn, &a[i]);
    }
    /* until each way of closing happened, with hundreds of sessions */
    for (int64_t until = now_ms() + 120000;;) {
        dbs_stats st = stats_of(p);
        if (atomic_load(&opened) >= 300 && st.closed_lifetime > 0 && st.closed_dirty > 0 &&
            st.closed_idle + st.closed_overflow > 0)
            break;
        if (now_ms() > until)
            CHECK_FAIL("in two minutes, %d sessions and %llu lifetime, %llu dirty, %llu idle, "
                       "%llu overflow closes", atomic_load(&opened),
                       (unsigned long long)st.closed_lifetime,
                       (unsigned long long)st.closed_dirty, (unsigned long long)st.closed_idle,
                       (unsigned long long)st.closed_overflow);
        dbs__sleep_ms(10);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    CHECK_INT(atomic_load(&dbs__fault.live_peak) - base, <=, SIZE + OVER);
    atomic_store(&dbs__fault.close_delay_ms, 0);
    atomic_store(&dbs__fault.fail_resets, 0);
    dbs_pool_close(p);
    if (server) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP ROLE dbs_ceiling_%ld", (long)getpid());
        run_sql(admin, sql);
    }
    dbs_pool_close(admin);
}

/* A working connection whose reset fails is closed as "dirty": never
 * handed out again, counted in closed_dirty, and not taken for broken
 * (no invalidation, no validation of the others). */
static _Atomic int dirty_closes;

static void on_dirty_event(const dbs_event *ev, void *user)
{
    on_event(ev, user);
    if (ev->kind == DBS_EVENT_CLOSE && ev->reason && !strcmp(ev->reason, "dirty"))
        atomic_fetch_add(&dirty_closes, 1);
}

static void test_reset_failure_closes_dirty(void)
{
    dbs_config cfg = base_config();
    cfg.pool_size = 1;
    cfg.on_event = on_dirty_event;
    dbs_pool *p = open_pool("pool", &cfg);
    dbs_session *s;
    uint64_t first = checkout_conn(p, &s);
    dbs_error err;
    CHECK_EQ(dbs_exec(s, "SELECT 1", NULL, 0, &err), 0);
    atomic_store(&dbs__fault.fail_resets, 1);
    dbs_session_close(s);
    CHECK_EQ(atomic_load(&dbs__fault.fail_resets), 0); /* the reset ran */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.closed_dirty, 1);
    CHECK_EQ(st.closed, 1);
    CHECK_EQ(st.invalidated, 0);
    CHECK_EQ(st.closed_broken, 0);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(atomic_load(&dirty_closes), 1);
    uint64_t next = checkout_conn(p, &s);
    CHECK(next != first);
    dbs_session_close(s);
    static char text[1 << 17];
    int n = dbs_pool_metrics(p, text, sizeof text);
    CHECK_INT(n, <, (int)sizeof text);
    CHECK_CONTAINS(text, "reason=\"dirty\"} 1");
    dbs_pool_close(p);
}

/* A connection's connect event comes before any checkout of it: the
 * housekeeper's warm-up connect is announced before the connection is
 * idle, where another thread could take it (and close and free it). The
 * connect event's callback is slow here, to leave any thread that could
 * take the connection early all the time it needs. */
enum { MAX_CONNS = 4096 };
static atomic_bool connected[MAX_CONNS];
static atomic_int checkout_before_connect;

static void on_order_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->conn_id == 0 || ev->conn_id >= MAX_CONNS)
        return;
    if (ev->kind == DBS_EVENT_CONNECT) {
        dbs__sleep_ms(5);
        atomic_store(&connected[ev->conn_id], true);
    } else if (ev->kind == DBS_EVENT_CHECKOUT && !atomic_load(&connected[ev->conn_id])) {
        atomic_fetch_add(&checkout_before_connect, 1);
    }
}

static void test_connect_event_before_checkout(void)
{
    dbs_config cfg = base_config();
    cfg.on_event = on_order_event;
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.min_idle = 4;
    cfg.max_lifetime_ms = 30; /* the warm-up keeps connecting */
    cfg.housekeeping_interval_ms = 1;
    cfg.acquire_timeout_ms = 30000;
    dbs_pool *p = open_pool("pool", &cfg);
    enum { T = 3 };
    atomic_bool stop = false;
    pthread_t th[T];
    churn_arg a[T];
    churn_start(p, &stop, T, th, a);
    WAIT_UNTIL(stats_of(p).created >= 60, 120000);
    churn_stop(&stop, T, th);
    CHECK_INT(stats_of(p).created, >=, 60);
    CHECK_EQ(atomic_load(&checkout_before_connect), 0);
    dbs_pool_close(p);
}

/* Two warm-ups at once, the housekeeper's and dbs_pool_wait_ready's, make
 * min_idle connections between them, not more: a connection being
 * announced (a slow connect callback here) counts as idle for both. */
static void on_slow_connect(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_CONNECT)
        dbs__sleep_ms(20);
}

static void *wait_ready_thread(void *arg)
{
    dbs_error err;
    if (dbs_pool_wait_ready(arg, 60000, &err) != DBS_OK)
        CHECK_FAIL("wait_ready: %s", err.message);
    return NULL;
}

static void test_warmups_make_min_idle(void)
{
    dbs_config cfg = base_config();
    cfg.on_event = on_slow_connect;
    cfg.pool_size = 8;
    cfg.min_idle = 3;
    cfg.lazy_open = 1;
    cfg.housekeeping_interval_ms = 1;
    dbs_pool *p = open_pool("pool", &cfg);
    enum { T = 3 };
    pthread_t th[T];
    for (int i = 0; i < T; i++)
        pthread_create(&th[i], NULL, wait_ready_thread, p);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    dbs__sleep_ms(100); /* the housekeeper's rounds go on meanwhile */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 3);
    CHECK_EQ(st.created, 3);
    dbs_pool_close(p);
}

/* Leaks are reported within a quarter of leak_threshold_ms after they
 * cross it also while the housekeeper's upkeep waits on the database (a
 * min_idle connect to a server that stopped answering, here one that
 * takes a minute): the sessions stuck then are the ones to report. */
static atomic_int leak_events;

static void count_leaks(const dbs_event *ev, void *user)
{
    on_event(ev, user);
    if (ev->kind == DBS_EVENT_LEAK)
        atomic_fetch_add(&leak_events, 1);
}

static void test_leak_report_not_held_up(void)
{
    dbs_config cfg = base_config();
    cfg.on_event = count_leaks;
    cfg.pool_size = 3;
    cfg.max_overflow = 0;
    cfg.min_idle = 2;
    cfg.leak_threshold_ms = 200;
    cfg.housekeeping_interval_ms = 1;
    dbs_pool *p = open_pool("pool", &cfg);
    WAIT_UNTIL(stats_of(p).idle == 2, 30000);
    CHECK_EQ(stats_of(p).idle, 2);
    atomic_store(&leak_events, 0);
    /* from here the housekeeper's warm-up connect stalls (until shutdown
     * abandons it) */
    atomic_store(&dbs__fault.connect_delay_ms, 60000);
    dbs_session *held = open_ok(p); /* an idle one: no connect */
    WAIT_UNTIL(stats_of(p).pending == 1, 30000);
    CHECK_EQ(stats_of(p).pending, 1);
    WAIT_UNTIL(atomic_load(&leak_events) > 0, 20000);
    CHECK_INT(atomic_load(&leak_events), >, 0);
    CHECK_EQ(stats_of(p).pending, 1); /* the connect is still under way */
    dbs_session_close(held);
    dbs_pool_close(p); /* abandons the connect */
    atomic_store(&dbs__fault.connect_delay_ms, 0);
}

int main(void)
{
    atomic_store(&dbs__fault.armed, 1); /* pools below can fault on demand */
    test_acquire_timeout();
    test_timeout_event_says_why();
    test_fifo_handoff();
    test_no_barging();
    test_barging_hold_is_bounded();
    test_barging_is_per_thread();
    test_barge_limit_frees_parked();
    test_parked_connection_serves_other_threads();
    test_parked_connections_age_out();
    test_overflow();
    test_lifetime();
    test_idle_timeout_to_min_idle();
    test_min_idle_fill();
    test_idle_timeout_spares_min_idle_in_use();
    test_min_idle_within_pool_size();
    test_keepalive_keeps_idle_timeout();
    test_keepalive_replaces_dead();
    test_target_checked_without_upkeep();
    test_validation_replaces_broken();
    test_failed_connect_keeps_slot();
    test_slow_connect_blocks_nobody();
    test_circuit_breaker();
    test_mode_none();
    test_mode_single();
    test_close_with_sessions_out();
    test_close_with_sessions_out_elsewhere();
    test_ping();
    test_stats_add_up();
    test_ceiling_counts_closing();
    test_reset_failure_closes_dirty();
    test_connect_event_before_checkout();
    test_warmups_make_min_idle();
    test_leak_report_not_held_up();
    puts("test_pool: ok");
    return 0;
}
