/* Real faults on MariaDB, as test_pg_bounds.c has them on PostgreSQL: a TCP
 * proxy (tests/faultproxy.c) between dbscope and the fixture's server goes
 * silent, resets, or accepts connections it never answers; connections
 * are killed from another one at each step. Each part checks the error a
 * call returns, that it returns at all (limits are generous, only there
 * so a broken build cannot hang), that dbs_transact never runs a unit
 * again past its COMMIT, that the next session gets a working connection
 * and that the pool's counts add up. One CTest test per part (argv[1]). */
#include "common.h"
#include "faultproxy.h"

#include <poll.h>
#include <stdatomic.h>

static faultproxy *fp;
static char password[256];
static int server_port;
static const char *dir;

static void url_for(char *out, size_t n, int port, const char *extra)
{
    snprintf(out, n, "mariadb://dbscope:%s@127.0.0.1:%d/dbscope?ssl_mode=disabled%s",
             password, port, extra);
}

/* A pool through the proxy. */
static dbs_config proxy_cfg(char *url, size_t url_n, int pool_size, int connect_ms,
                            int statement_ms, enum dbs_reset_mode reset)
{
    url_for(url, url_n, fp_port(fp), "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = pool_size;
    cfg.max_overflow = 0;
    cfg.connect_timeout_ms = connect_ms;
    cfg.statement_timeout_ms = statement_ms;
    cfg.reset = reset;
    cfg.log_events = 0;
    return cfg;
}

static dbs_pool *open_or_fail(const dbs_config *cfg)
{
    dbs_error err;
    dbs_pool *p = dbs_pool_open(cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    return p;
}

static dbs_pool *open_via_proxy(char *url, size_t url_n, int statement_ms,
                                enum dbs_reset_mode reset)
{
    dbs_config cfg = proxy_cfg(url, url_n, 1, 2000, statement_ms, reset);
    cfg.pre_ping = 0;
    return open_or_fail(&cfg);
}

/* No session out, nothing waiting, and every connection made either open
 * or counted closed. */
static void check_counts(dbs_pool *p)
{
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.in_use, 0);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.acquired, st.released);
    CHECK_EQ((int64_t)st.created, (int64_t)st.closed + st.size);
}

static dbs_pool *super_pool(void)
{
    static char url[1024];
    read_line(dir, "super_url", url, sizeof url);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 4;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("super pool: %s", err.message);
    return p;
}

static void kill_id(dbs_pool *su, const char *what, int64_t id)
{
    char sql[64];
    snprintf(sql, sizeof sql, "%s %lld", what, (long long)id);
    dbs_session *s = open_ok(su);
    exec_ok(s, sql);
    dbs_session_close(s);
}

static int64_t conn_id(dbs_session *s)
{
    return query_int(s, "SELECT CONNECTION_ID()", NULL, 0);
}

/* ---- silent: a statement on a network gone silent ---- */

static void test_silent(void)
{
    for (int mode = 0; mode < 2; mode++) {
        enum dbs_reset_mode rm = mode ? DBS_RESET_TRACKED : DBS_RESET_FULL;
        char url[512];
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        dbs_pool *p = open_via_proxy(url, sizeof url, 1000, rm);
        dbs_session *s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
        fp_set(fp, FP_SILENT, FP_BOTH, 0);
        dbs_error err;
        int64_t t0 = now_ms();
        CHECK(dbs_query(s, "SELECT 2", NULL, 0, &err) == NULL);
        CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
        CHECK(strstr(err.message, password) == NULL);
        printf("silent statement: %lld ms: %s\n", (long long)(now_ms() - t0), err.message);
        dbs_session_close(s);
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 3", NULL, 0), 3);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        check_counts(p);
        dbs_pool_close(p);
    }
}

/* ---- commit: COMMIT on a network gone silent, and one killed ---- */

static faultproxy *commit_fp;
static int work_runs;

static int silent_before_commit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    work_runs++;
    if (dbs_exec(s, "SELECT 1", NULL, 0, err) < 0)
        return err->code;
    fp_set(commit_fp, FP_SILENT, FP_BOTH, 0);
    return 0;
}

static void test_commit(void)
{
    for (int mode = 0; mode < 3; mode++) {
        enum dbs_reset_mode rm = mode == 0   ? DBS_RESET_FULL
                                 : mode == 1 ? DBS_RESET_TRACKED
                                             : DBS_RESET_ROLLBACK;
        char url[512];
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        dbs_pool *p = open_via_proxy(url, sizeof url, 1000, rm);
        commit_fp = fp;
        work_runs = 0;
        dbs_error err;
        int rc = dbs_transact(p, NULL, silent_before_commit, NULL, &err);
        CHECK_EQ(rc, DBS_ECOMMIT_UNKNOWN);
        CHECK_EQ(err.code, DBS_ECOMMIT_UNKNOWN);
        CHECK_EQ(work_runs, 1);
        CHECK_EQ(stats_of(p).retries, 0);
        CHECK_EQ(stats_of(p).size, 0);

        /* The same through dbs_commit. */
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        dbs_session *s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 4", NULL, 0), 4);
        fp_set(fp, FP_SILENT, FP_BOTH, 0);
        CHECK_EQ(dbs_commit(s, &err), DBS_ECOMMIT_UNKNOWN);
        CHECK(!dbs_error_is_transient(&err));
        dbs_session_close(s);
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 5", NULL, 0), 5);
        dbs_session_close(s);
        check_counts(p);
        dbs_pool_close(p);
    }
    printf("COMMIT on a silent network: DBS_ECOMMIT_UNKNOWN, work ran once\n");
}

/* ---- units on an event loop ---- */

typedef struct unit_res {
    int calls, rc;
    int64_t val;
    char msg[512];
} unit_res;

static void unit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    unit_res *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", err->message);
    r->val = -1;
    dbs_rows *rows = dbs_unit_rows(u, 0);
    dbs_error e;
    if (rc == DBS_OK && rows && dbs_rows_next(rows, &e) == 1)
        r->val = dbs_rows_int(rows, 0);
}

/* Submits one "SELECT n" unit (timeout_ms > 0: its own bound) and runs the
 * loop until it completes; fails the test if it never does. */
static void run_unit(dbs_loop *l, int n, int timeout_ms, unit_res *r)
{
    memset(r, 0, sizeof *r);
    dbs_error err;
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    char sql[32];
    snprintf(sql, sizeof sql, "SELECT %d", n);
    CHECK_EQ(dbs_unit_add(u, sql, NULL, 0, &err), 0);
    if (timeout_ms > 0)
        CHECK_OK(dbs_unit_set_timeout(u, timeout_ms), NULL);
    CHECK_OK(dbs_unit_submit(u, unit_done, r, &err), &err);
    int64_t end = now_ms() + 60000;
    while (r->calls == 0 && now_ms() < end) {
        struct pollfd pf = {.fd = dbs_loop_fd(l), .events = POLLIN};
        int t = dbs_loop_timeout_ms(l);
        (void)poll(&pf, 1, t < 0 || t > 50 ? 50 : t);
        CHECK(dbs_loop_run(l) >= 0);
    }
    if (r->calls == 0)
        CHECK_FAIL("unit SELECT %d did not complete within 60 s", n);
    CHECK_EQ(r->calls, 1);
}

/* ---- send: a statement whose sending stops halfway ---- */

/* A statement of 12 MB (under the server's max_allowed_packet) into a
 * network that takes no more bytes: the client's write blocks until the
 * write timeout, which Connector/C reports as 2006 (server gone), not as
 * 2013. It is the statement bound all the same: DBS_ESTMT_TIMEOUT, not a
 * lost connection that dbs_transact would run again. */
enum { BIG = 12 << 20 };
static char *big;
static int big_runs;

static int big_unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    big_runs++;
    if (dbs_exec(s, "SELECT 1", NULL, 0, err) < 0)
        return err->code;
    fp_set(fp, FP_STALL, FP_UP, 0);
    dbs_value v[] = {DBS_BLOB(big, BIG)};
    if (dbs_exec(s, "SELECT LENGTH($1)", v, 1, err) < 0)
        return err->code;
    return 0;
}

static void test_send(void)
{
    big = malloc(BIG);
    CHECK(big != NULL);
    memset(big, 'x', BIG);
    dbs_value v[] = {DBS_BLOB(big, BIG)};
    for (int mode = 0; mode < 2; mode++) {
        enum dbs_reset_mode rm = mode ? DBS_RESET_TRACKED : DBS_RESET_FULL;
        char url[512];
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        dbs_pool *p = open_via_proxy(url, sizeof url, 1000, rm);
        dbs_session *s = open_ok(p);
        /* through while the network is up: the size is not the fault */
        CHECK_EQ(query_int(s, "SELECT LENGTH($1)", v, 1), BIG);
        fp_set(fp, FP_STALL, FP_UP, 0);
        dbs_error err;
        int64_t t0 = now_ms();
        CHECK(dbs_exec(s, "SELECT LENGTH($1)", v, 1, &err) < 0);
        printf("stalled send: %lld ms: %d %s\n", (long long)(now_ms() - t0), err.code,
               err.message);
        CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
        CHECK(strstr(err.message, password) == NULL);
        dbs_session_close(s);

        /* In a unit of work: not run again. */
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        big_runs = 0;
        int rc = dbs_transact(p, NULL, big_unit, NULL, &err);
        printf("stalled send in dbs_transact: %d %s\n", rc, err.message);
        CHECK_EQ(rc, DBS_ESTMT_TIMEOUT);
        CHECK_EQ(big_runs, 1);
        CHECK_EQ(stats_of(p).retries, 0);

        fp_set(fp, FP_PASS, FP_BOTH, 0);
        s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 3", NULL, 0), 3);
        dbs_session_close(s);
        check_counts(p);
        dbs_pool_close(p);
    }

    /* The same from an event loop's unit (a worker thread's session). */
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_config cfg = proxy_cfg(url, sizeof url, 1, 2000, 1000, DBS_RESET_FULL);
    /* No ping at check-out, as open_via_proxy: a unit that reaches its
     * connection more than validation_window_ms after the first (a loaded
     * machine) would ping through the stalled network, lose the
     * connection and fail its reconnect (DBS_ECONNECT) before the
     * statement whose send stalls ever went out. */
    cfg.pre_ping = 0;
    dbs_pool *p = open_or_fail(&cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    unit_res r;
    run_unit(l, 1, 0, &r);
    CHECK_EQ(r.rc, DBS_OK);
    fp_set(fp, FP_STALL, FP_UP, 0);
    memset(&r, 0, sizeof r);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK_EQ(dbs_unit_add(u, "SELECT LENGTH($1)", v, 1, &err), 0);
    CHECK_OK(dbs_unit_submit(u, unit_done, &r, &err), &err);
    int64_t end = now_ms() + 60000;
    while (r.calls == 0 && now_ms() < end) {
        struct pollfd pf = {.fd = dbs_loop_fd(l), .events = POLLIN};
        int t = dbs_loop_timeout_ms(l);
        (void)poll(&pf, 1, t < 0 || t > 50 ? 50 : t);
        CHECK(dbs_loop_run(l) >= 0);
    }
    CHECK_EQ(r.calls, 1);
    printf("loop, stalled send: %d %s\n", r.rc, r.msg);
    CHECK_EQ(r.rc, DBS_ESTMT_TIMEOUT);
    CHECK_EQ(stats_of(p).retries, 0);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    run_unit(l, 4, 0, &r);
    CHECK_EQ(r.rc, DBS_OK);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    check_counts(p);
    dbs_pool_close(p);
    free(big);
}

/* ---- connect: a listener that accepts and never answers ---- */

static atomic_int connect_done;
static dbs_error connect_err;

static void *connect_thread(void *arg)
{
    dbs_config *cfg = arg;
    dbs_pool *p = dbs_pool_open(cfg, &connect_err);
    if (p)
        dbs_pool_close(p);
    atomic_store(&connect_done, p ? 2 : 1);
    return NULL;
}

/* dbs_pool_open(url) on a thread of its own, which must fail with
 * DBS_ECONNECT; returns the milliseconds it took. */
static int64_t connect_fails(const char *url, int connect_ms, int statement_ms,
                             enum dbs_reset_mode reset, const char *extra)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.reset = reset;
    cfg.connect_timeout_ms = connect_ms;
    cfg.statement_timeout_ms = statement_ms;
    cfg.log_events = 0;
    atomic_store(&connect_done, 0);
    pthread_t th;
    int64_t t0 = now_ms();
    CHECK(pthread_create(&th, NULL, connect_thread, &cfg) == 0);
    WAIT_UNTIL(atomic_load(&connect_done) != 0, 60000);
    if (!atomic_load(&connect_done))
        CHECK_FAIL("dbs_pool_open (connect_timeout_ms %d, statement_timeout_ms %d, %s) "
                   "still waits after 60 s for a server that never answers",
                   connect_ms, statement_ms, *extra ? extra : "no URL bound");
    pthread_join(th, NULL);
    CHECK_EQ(atomic_load(&connect_done), 1);
    CHECK_EQ(connect_err.code, DBS_ECONNECT);
    CHECK(strstr(connect_err.message, password) == NULL);
    int64_t took = now_ms() - t0;
    printf("connect (%d ms, statement %d ms, %s): %lld ms: %s\n", connect_ms, statement_ms,
           extra, (long long)took, connect_err.message);
    return took;
}

static void connect_bounded(int connect_ms, int statement_ms, const char *extra)
{
    char url[512];
    url_for(url, sizeof url, fp_port(fp), extra);
    (void)connect_fails(url, connect_ms, statement_ms, DBS_RESET_FULL, extra);
}

/* A unit on an event loop of a lazily opened pool on url, whose connect
 * must fail with DBS_ECONNECT (the worker thread's connect, not the
 * caller's); returns the milliseconds it took. */
static int64_t loop_connect_fails(const char *url, int connect_ms)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.connect_timeout_ms = connect_ms;
    cfg.lazy_open = 1;
    cfg.retry_max = 0;
    cfg.circuit_threshold = 0;
    cfg.acquire_timeout_ms = 60000;
    cfg.log_events = 0;
    dbs_pool *p = open_or_fail(&cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    unit_res r;
    int64_t t0 = now_ms();
    run_unit(l, 1, 0, &r);
    int64_t took = now_ms() - t0;
    printf("loop connect (%d ms): %lld ms: %d %s\n", connect_ms, (long long)took, r.rc, r.msg);
    CHECK_EQ(r.rc, DBS_ECONNECT);
    CHECK(strstr(r.msg, password) == NULL);
    dbs_loop_close(l);
    dbs_pool_close(p);
    return took;
}

static void test_connect(void)
{
    fp_blackhole(fp, 1);
    connect_bounded(1500, 30000, "");
    /* the handshake read is the connect's, whatever statement_timeout_ms */
    connect_bounded(1500, 0, "");
    connect_bounded(0, 0, "&connect_timeout=2");
    fp_blackhole(fp, 0);

    /* The bound is the whole connect's, session setup included: a server
     * whose every packet is 400 ms late needs about three times the bound
     * for the handshake and the setup queries, each of which Connector/C
     * alone bounds by statement_timeout_ms (or not at all); 200 ms late,
     * the handshake fits in the bound and the setup (two queries under
     * DBS_RESET_TRACKED) does not. */
    char url[512];
    url_for(url, sizeof url, fp_port(fp), "");
    fp_set(fp, FP_LATENCY, FP_BOTH, 400);
    CHECK_INT(connect_fails(url, 1000, 30000, DBS_RESET_FULL, "400 ms latency"), <, 3000);
    CHECK_INT(connect_fails(url, 1000, 0, DBS_RESET_FULL, "400 ms latency"), <, 3000);
    CHECK_INT(loop_connect_fails(url, 1000), <, 3000);
    fp_set(fp, FP_LATENCY, FP_BOTH, 200);
    CHECK_INT(connect_fails(url, 1000, 30000, DBS_RESET_TRACKED, "200 ms latency"), <, 3000);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
}

/* ---- addresses: a name with four addresses, none of which answers ----
 * Run by tests/dns_silent.sh, whose /etc/hosts gives dbscope-multi.test
 * the addresses 127.0.0.2-5. Each drops every SYN: Connector/C's connect
 * to each runs to its own timeout, and the next address is tried. One
 * deadline for them all: the connect ends within connect_timeout_ms
 * (lookup included), not four times it. */

static void test_addresses(void)
{
    if (!getenv("DBSCOPE_RESOLV_CONF")) {
        printf("skipped: run through tests/dns_silent.sh\n");
        exit(77);
    }
    static const char *const addrs[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
    int fds[12];
    int port = fp_dead_port(addrs, 4, fds);
    char url[512];
    snprintf(url, sizeof url,
             "mariadb://dbscope:%s@dbscope-multi.test:%d/dbscope?ssl_mode=disabled", password,
             port);
    CHECK_INT(connect_fails(url, 1000, 30000, DBS_RESET_FULL, "4 dead addresses"), <, 3500);
    CHECK_INT(connect_fails(url, 1500, 0, DBS_RESET_FULL, "4 dead addresses"), <, 4000);
    CHECK_INT(loop_connect_fails(url, 1000), <, 3500);
    fp_dead_close(fds, 4);
}

/* ---- kill: KILL CONNECTION / KILL QUERY at each step ---- */

static int kill_runs;
static dbs_pool *kill_su;
static int64_t kill_first_id;

static int64_t kill_target;
static const char *kill_what;

/* Waits for kill_target to wait on the lock, then kills it. */
static void *killer(void *arg)
{
    (void)arg;
    dbs_session *k = open_ok(kill_su);
    int64_t waiting = 0;
    for (int i = 0; i < 2000 && !waiting; i++) {
        waiting = query_int(k, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            "WHERE ID = $1 AND INFO LIKE 'SELECT GET_LOCK%'",
                            (dbs_value[]){DBS_INT(kill_target)}, 1);
        dbs_error e;
        CHECK_OK(dbs_commit(k, &e), &e);
        if (!waiting)
            dbs__sleep_ms(10);
    }
    CHECK(waiting);
    dbs_session_close(k);
    kill_id(kill_su, kill_what, kill_target);
    return NULL;
}

/* Killed mid-transaction, before COMMIT: DBS_ECONNECT, retried whole. */
static int kill_mid_tx(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    kill_runs++;
    dbs_rows *r = dbs_query(s, "SELECT CONNECTION_ID()", NULL, 0, err);
    if (!r)
        return err->code;
    CHECK_EQ(dbs_rows_next(r, err), 1);
    int64_t id = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    if (kill_runs == 1) {
        kill_first_id = id;
        kill_id(kill_su, "KILL CONNECTION", id);
    }
    if (dbs_exec(s, "SELECT 1", NULL, 0, err) < 0)
        return err->code;
    return 0;
}

static void test_kill(void)
{
    kill_su = super_pool();
    for (int mode = 0; mode < 3; mode++) {
        enum dbs_reset_mode rm = mode == 0   ? DBS_RESET_FULL
                                 : mode == 1 ? DBS_RESET_TRACKED
                                             : DBS_RESET_ROLLBACK;
        char url[512];
        url_for(url, sizeof url, server_port, "");
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url;
        cfg.pool_size = 1;
        cfg.max_overflow = 0;
        cfg.statement_timeout_ms = 10000;
        cfg.reset = rm;
        cfg.log_events = 0;
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (!p)
            CHECK_FAIL("open: %s", err.message);

        /* idle in the pool, after a session that committed and closed */
        dbs_session *s = open_ok(p);
        int64_t id = conn_id(s);
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        kill_id(kill_su, "KILL CONNECTION", id);
        s = open_ok(p);
        CHECK(conn_id(s) != id);
        dbs_session_close(s);

        /* mid-transaction: the unit is retried once, on a new connection */
        kill_runs = 0;
        CHECK_OK(dbs_transact(p, NULL, kill_mid_tx, NULL, &err), &err);
        CHECK_EQ(kill_runs, 2);

        /* A statement waiting on a row lock, killed: KILL QUERY fails the
         * statement and keeps the session's connection and transaction;
         * KILL CONNECTION loses it (DBS_ECONNECT), and the next session
         * gets a new one. */
        for (int how = 0; how < 2; how++) {
            dbs_session *holder = open_ok(kill_su);
            exec_ok(holder, "SELECT GET_LOCK('dbs_fault_lock', 0)");
            s = open_ok(p);
            id = conn_id(s);
            kill_target = id;
            kill_what = how ? "KILL CONNECTION" : "KILL QUERY";
            pthread_t th;
            CHECK(pthread_create(&th, NULL, killer, NULL) == 0);
            int64_t rc = dbs_exec(s, "SELECT GET_LOCK('dbs_fault_lock', 60)", NULL, 0, &err);
            pthread_join(th, NULL);
            printf("%s mid-statement: %lld %s\n", kill_what, (long long)rc,
                   rc < 0 ? err.message : "");
            if (how == 0) {
                /* GET_LOCK answers NULL when interrupted, or an error */
                CHECK(rc >= 0 || err.code == DBS_ESQL);
                CHECK_EQ(conn_id(s), id);
            } else {
                CHECK_EQ(rc, DBS_ECONNECT);
            }
            dbs_session_close(s);
            exec_ok(holder, "DO RELEASE_ALL_LOCKS()");
            dbs_session_close(holder);
            s = open_ok(p);
            CHECK_EQ(conn_id(s) != id, how == 1);
            dbs_session_close(s);
        }
        check_counts(p);
        dbs_pool_close(p);
    }
    dbs_pool_close(kill_su);
    printf("KILL idle, mid-transaction: discarded, retried, the pool heals\n");
}

/* ---- release: the release statement's answer lost ---- */

static char invalidate_reason[600];

static void on_ev(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_INVALIDATE && ev->reason && !invalidate_reason[0])
        snprintf(invalidate_reason, sizeof invalidate_reason, "%s", ev->reason);
}

static void test_release(void)
{
    /* Under DBS_RESET_TRACKED a session that commits and closes sends its
     * release statement without waiting; its answer is read at the next
     * check-out. The network goes silent in between. */
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_config cfg = proxy_cfg(url, sizeof url, 1, 1000, 1000, DBS_RESET_TRACKED);
    cfg.on_event = on_ev;
    dbs_pool *p = open_or_fail(&cfg);
    dbs_error err;
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    invalidate_reason[0] = '\0';
    CHECK_OK(dbs_commit(s, &err), &err);
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    dbs_session_close(s);
    s = dbs_session_open(p, NULL, &err);
    if (s) {
        CHECK(dbs_exec(s, "SELECT 2", NULL, 0, &err) < 0);
        dbs_session_close(s);
    } else {
        printf("release answer lost: %s\n", err.message);
        CHECK(err.code == DBS_ECONNECT || err.code == DBS_ETIMEOUT ||
              err.code == DBS_EUNAVAILABLE);
    }
    /* The connection whose answer was lost is discarded, and the event
     * says why, once: the message is not written over itself. */
    printf("invalidate: %s\n", invalidate_reason);
    CHECK_CONTAINS(invalidate_reason, "release statement");
    CHECK(strstr(invalidate_reason, "mariadb: mariadb:") == NULL);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    int64_t end = now_ms() + 30000;
    while ((s = dbs_session_open(p, NULL, &err)) == NULL && now_ms() < end)
        dbs__sleep_ms(100);
    CHECK(s != NULL);
    CHECK_EQ(query_int(s, "SELECT 6", NULL, 0), 6);
    dbs_session_close(s);
    check_counts(p);
    dbs_pool_close(p);
}

/* ---- reset: a network reset is a lost connection ---- */

static void test_reset(void)
{
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_pool *p = open_via_proxy(url, sizeof url, 5000, DBS_RESET_FULL);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 7", NULL, 0), 7);
    fp_set(fp, FP_RESET, FP_BOTH, 0);
    dbs_error err;
    CHECK(dbs_exec(s, "SELECT 8", NULL, 0, &err) < 0);
    CHECK_EQ(err.code, DBS_ECONNECT);
    dbs_session_close(s);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 9", NULL, 0), 9);
    dbs_session_close(s);
    check_counts(p);
    dbs_pool_close(p);
}

/* ---- loop: a unit on worker threads whose server goes silent ---- */

static void test_loop(void)
{
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_config cfg = proxy_cfg(url, sizeof url, 2, 1000, 1000, DBS_RESET_FULL);
    cfg.retry_max = 0;
    dbs_pool *p = open_or_fail(&cfg);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    unit_res r;
    run_unit(l, 1, 0, &r);
    CHECK_EQ(r.rc, DBS_OK);
    CHECK_EQ(r.val, 1);

    /* Silent: the statement bound ends the unit. */
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    run_unit(l, 2, 0, &r);
    printf("loop, silent network: %d %s\n", r.rc, r.msg);
    CHECK(r.rc == DBS_ESTMT_TIMEOUT || r.rc == DBS_ECONNECT || r.rc == DBS_ECOMMIT_UNKNOWN);
    /* Silent, with a unit bound shorter than the statement's. */
    int64_t t0 = now_ms();
    run_unit(l, 3, 300, &r);
    printf("loop, silent network, unit bound: %lld ms: %d %s\n", (long long)(now_ms() - t0),
           r.rc, r.msg);
    CHECK(r.rc == DBS_ESTMT_TIMEOUT || r.rc == DBS_ETIMEOUT || r.rc == DBS_ECONNECT);

    /* The loop and the pool serve again once the network does. */
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    int64_t end = now_ms() + 30000;
    do {
        run_unit(l, 4, 0, &r);
    } while (r.rc != DBS_OK && now_ms() < end && (dbs__sleep_ms(100), 1));
    CHECK_EQ(r.rc, DBS_OK);
    CHECK_EQ(r.val, 4);
    dbs_loop_close(l);
    WAIT_UNTIL(stats_of(p).in_use == 0, 30000);
    check_counts(p);
    dbs_pool_close(p);
}

/* ---- trickle: a server that keeps answering, a byte at a time ---- */

/* Every byte of each answer comes well within Connector/C's read timeout,
 * and no answer comes whole within statement_timeout_ms: the bound is the
 * round trip's, so each of these ends at it, as a silent network does
 * (they returned DBS_OK, seconds past the bound). */
static void test_trickle(void)
{
    static const char *const what[] = {"a cached statement", "START TRANSACTION", "COMMIT",
                                       "ROLLBACK"};
    for (int step = 0; step < 4; step++) {
        char url[512];
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        dbs_pool *p = open_via_proxy(url, sizeof url, 1000, DBS_RESET_FULL);
        dbs_session *s = open_ok(p);
        dbs_error err;
        exec_ok(s, "DO 1"); /* prepared and cached, in a transaction */
        if (step == 1) /* the next statement starts a transaction */
            CHECK_OK(dbs_commit(s, &err), &err);
        /* 200 ms a byte: an OK packet alone takes over 2 s */
        fp_set(fp, FP_TRICKLE, FP_DOWN, 200);
        int64_t t0 = now_ms();
        int rc, want = DBS_ESTMT_TIMEOUT;
        if (step < 2) {
            int64_t n = dbs_exec(s, "DO 1", NULL, 0, &err);
            rc = n < 0 ? (int)n : DBS_OK;
        } else if (step == 2) {
            rc = dbs_commit(s, &err);
            want = DBS_ECOMMIT_UNKNOWN;
        } else {
            rc = dbs_rollback(s, &err);
        }
        printf("trickle, %s: %lld ms: %d %s\n", what[step], (long long)(now_ms() - t0), rc,
               rc ? err.message : "");
        CHECK_EQ(rc, want);
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        dbs_session_close(s);
        s = open_ok(p);
        CHECK_EQ(query_int(s, "SELECT 5", NULL, 0), 5);
        dbs_session_close(s);
        check_counts(p);
        dbs_pool_close(p);
    }
}

int main(int argc, char **argv)
{
    dir = getenv("DBSCOPE_MYSQL_DIR");
    CHECK(dir != NULL);
    char port[32];
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    server_port = atoi(port);
    fp = fp_start(server_port);
    static const struct {
        const char *name;
        void (*fn)(void);
    } parts[] = {
        {"silent", test_silent}, {"commit", test_commit},   {"connect", test_connect},
        {"kill", test_kill},     {"release", test_release}, {"reset", test_reset},
        {"loop", test_loop},     {"addresses", test_addresses}, {"send", test_send},
        {"trickle", test_trickle},
    };
    int ran = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (argc < 2 || !strcmp(argv[1], parts[i].name)) {
            parts[i].fn();
            ran++;
        }
    CHECK(ran > 0);
    fp_stop(fp);
    printf("test_mysql_faults %s: ok\n", argc < 2 ? "all" : argv[1]);
    return 0;
}
