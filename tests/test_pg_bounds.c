/* Every round trip is bounded. A real TCP proxy (tests/faultproxy.c) sits
 * between dbscope and the test server and goes silent, resets, delays, or
 * accepts connections it never answers. Checks which error each call
 * returns, that it returns at all, and what happens to the connection;
 * limits are generous and only there so a broken build cannot hang. */
#include "common.h"
#include "faultproxy.h"

#include <sys/wait.h>
#include <unistd.h>

static faultproxy *fp;
static char password[256];
static int server_port;

static void url_for(char *out, size_t n, int port, const char *extra)
{
    snprintf(out, n, "postgresql://dbscope:%s@127.0.0.1:%d/dbscope?sslmode=disable%s",
             password, port, extra);
}

static dbs_pool *open_via_proxy(int statement_timeout_ms, char *url, size_t url_n)
{
    url_for(url, url_n, fp_port(fp), "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.pre_ping = 0;
    cfg.connect_timeout_ms = 2000;
    cfg.statement_timeout_ms = statement_timeout_ms;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    return p;
}


/* A statement on a network gone silent: DBS_ESTMT_TIMEOUT, the connection
 * is discarded, and service resumes once the network passes again. */
static void test_silent_statement(void)
{
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_pool *p = open_via_proxy(1000, url, sizeof url);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    dbs_error err;
    dbs_rows *r = dbs_query(s, "SELECT 2", NULL, 0, &err);
    CHECK(r == NULL);
    CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
    CHECK_CONTAINS(err.message, "within 1000 ms");
    CHECK(strstr(err.message, password) == NULL);
    dbs_session_close(s);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.closed_broken + st.invalidated >= 1, 1);
    CHECK_EQ(st.size, 0);

    /* Only one direction silent: the answers are lost, same outcome. */
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 3", NULL, 0), 3);
    fp_set(fp, FP_SILENT, FP_DOWN, 0);
    CHECK(dbs_exec(s, "SELECT 4", NULL, 0, &err) < 0);
    CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
    dbs_session_close(s);

    fp_set(fp, FP_PASS, FP_BOTH, 0);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 5", NULL, 0), 5);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).created, 3);
    dbs_pool_close(p);
    printf("silent network: DBS_ESTMT_TIMEOUT, connection discarded, service "
           "resumes\n");
}

/* Ping and reset are bounded too: a pool that pings a connection on a
 * silent network discards it and fails the acquire cleanly. */
static void test_silent_ping(void)
{
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    url_for(url, sizeof url, fp_port(fp), "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.validation_window_ms = 0; /* ping at every checkout */
    cfg.connect_timeout_ms = 1000;
    cfg.statement_timeout_ms = 1000;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p != NULL);
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (s) {
        /* a pool may hand out a fresh connection; it cannot be used */
        CHECK(dbs_exec(s, "SELECT 1", NULL, 0, &err) < 0);
        dbs_session_close(s);
    } else {
        CHECK(err.code == DBS_ECONNECT || err.code == DBS_ETIMEOUT ||
              err.code == DBS_EUNAVAILABLE);
    }
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    /* the circuit breaker may fail fast for a moment: try for a while */
    int64_t end = now_ms() + 30000;
    while ((s = dbs_session_open(p, NULL, &err)) == NULL && now_ms() < end)
        dbs__sleep_ms(100);
    CHECK(s != NULL);
    CHECK_EQ(query_int(s, "SELECT 6", NULL, 0), 6);
    dbs_session_close(s);
    dbs_pool_close(p);
    printf("silent network at checkout: the ping is bounded\n");
}

static int work_runs;
static faultproxy *commit_fp;

static int silent_before_commit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    work_runs++;
    if (dbs_exec(s, "SELECT 1", NULL, 0, err) < 0)
        return -1;
    fp_set(commit_fp, FP_SILENT, FP_BOTH, 0);
    return 0;
}

/* COMMIT in flight when the network goes silent: the outcome is unknown,
 * and dbs_transact does not run the work again. */
static void test_silent_commit(void)
{
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_pool *p = open_via_proxy(1000, url, sizeof url);
    commit_fp = fp;
    work_runs = 0;
    dbs_error err;
    int rc = dbs_transact(p, NULL, silent_before_commit, NULL, &err);
    CHECK_EQ(rc, DBS_ECOMMIT_UNKNOWN);
    CHECK_EQ(err.code, DBS_ECOMMIT_UNKNOWN);
    CHECK_EQ(work_runs, 1);
    CHECK_EQ(stats_of(p).size, 0);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_pool_close(p);
    printf("COMMIT on a silent network: DBS_ECOMMIT_UNKNOWN, work ran once\n");
}

/* A listener that accepts and never answers: dbs_pool_open gives up after
 * connect_timeout_ms; a URL's own connect_timeout wins over the field. */
static void test_connect_bound(void)
{
    char url[512];
    fp_blackhole(fp, 1);
    url_for(url, sizeof url, fp_port(fp), "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.connect_timeout_ms = 1500;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p == NULL);
    CHECK_EQ(err.code, DBS_ECONNECT);
    CHECK_CONTAINS(err.message, "no answer within 1500 ms");
    CHECK(strstr(err.message, password) == NULL);

    /* With no bound of its own (0), only the URL's can end this connect. */
    url_for(url, sizeof url, fp_port(fp), "&connect_timeout=2");
    cfg.connect_timeout_ms = 0;
    p = dbs_pool_open(&cfg, &err);
    CHECK(p == NULL);
    CHECK_EQ(err.code, DBS_ECONNECT);
    CHECK_CONTAINS(err.message, "no answer within 2000 ms");
    fp_blackhole(fp, 0);
    printf("connect to a listener that never answers: DBS_ECONNECT: %s\n",
           err.message);

    /* One bound for the whole connect, however many hosts: libpq's own
     * connect_timeout is per host. Four hosts that drop every SYN, then a
     * server whose every packet is 400 ms late (the handshake needs about
     * three times the bound). */
    static const char *const addrs[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"};
    int fds[12];
    int port = fp_dead_port(addrs, 4, fds);
    snprintf(url, sizeof url,
             "postgresql://dbscope:%s@127.0.0.2:%d,127.0.0.3:%d,127.0.0.4:%d,127.0.0.5:%d/"
             "dbscope?sslmode=disable",
             password, port, port, port, port);
    cfg.connect_timeout_ms = 1000;
    for (int i = 0; i < 2; i++) {
        if (i == 1) {
            url_for(url, sizeof url, fp_port(fp), "");
            fp_set(fp, FP_LATENCY, FP_BOTH, 400);
        }
        int64_t t0 = now_ms();
        p = dbs_pool_open(&cfg, &err);
        int64_t took = now_ms() - t0;
        printf("connect, %s: %lld ms: %s\n", i ? "400 ms latency" : "4 dead hosts",
               (long long)took, p ? "connected" : err.message);
        CHECK(p == NULL);
        CHECK_EQ(err.code, DBS_ECONNECT);
        CHECK_INT(took, <, 3500);
    }
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    fp_dead_close(fds, 4);
}

/* The per-session bound: lifting it lets a long statement through;
 * tightening it fails a short one, which the server is asked to cancel; the
 * pool's bound is back for the next session. */
static void test_session_bound(void)
{
    char url[512];
    url_for(url, sizeof url, server_port, "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 2;
    cfg.statement_timeout_ms = 300;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    CHECK(p != NULL);

    dbs_session *s = open_ok(p);
    CHECK_EQ(dbs_session_set_statement_timeout(s, -1, &err), DBS_EMISUSE);
    CHECK_OK(dbs_session_set_statement_timeout(s, 20000, &err), &err);
    CHECK_OK(dbs_exec(s, "SELECT pg_sleep(0.6)", NULL, 0, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_OK(dbs_session_set_statement_timeout(s, 0, &err), &err); /* none */
    CHECK_OK(dbs_exec(s, "SELECT pg_sleep(0.6)", NULL, 0, &err), &err);
    dbs_session_close(s);

    /* The pool's bound again: the same sleep now fails. */
    s = open_ok(p);
    CHECK(dbs_exec(s, "SELECT pg_sleep(0.6)", NULL, 0, &err) < 0);
    CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
    dbs_session_close(s);

    /* Tightened: fails, and the server stops the statement. */
    s = open_ok(p);
    CHECK_OK(dbs_session_set_statement_timeout(s, 100, &err), &err);
    CHECK(dbs_exec(s, "SELECT pg_sleep(30), 'bounds-probe'", NULL, 0, &err) < 0);
    CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
    dbs_session_close(s);
    const char *probe = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                        "'SELECT pg_sleep(30), ''bounds-probe''%'";
    int64_t running = 1;
    for (int i = 0; i < 100 && running; i++) {
        s = open_ok(p);
        /* the probe itself is no statement to bound at 300 ms */
        CHECK_OK(dbs_session_set_statement_timeout(s, 20000, &err), &err);
        running = query_int(s, probe, NULL, 0);
        dbs_session_close(s);
        if (running)
            dbs__sleep_ms(100);
    }
    CHECK_EQ(running, 0);
    CHECK_INT(stats_of(p).closed_broken + stats_of(p).invalidated, >=, 2);
    dbs_pool_close(p);
    printf("per-session bound: lifted, none, pool's again, tightened "
           "(cancelled on the server)\n");
}

/* Latency passes (slower, same answers); a reset network is a lost
 * connection (DBS_ECONNECT), not a timeout. */
static void test_latency_and_reset(void)
{
    char url[512];
    fp_set(fp, FP_LATENCY, FP_BOTH, 50);
    dbs_pool *p = open_via_proxy(5000, url, sizeof url);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 7", NULL, 0), 7);
    fp_set(fp, FP_RESET, FP_BOTH, 0);
    dbs_error err;
    int64_t rc = dbs_exec(s, "SELECT 8", NULL, 0, &err);
    CHECK(rc < 0);
    CHECK_EQ(err.code, DBS_ECONNECT);
    dbs_session_close(s);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 9", NULL, 0), 9);
    dbs_session_close(s);
    dbs_pool_close(p);
    printf("latency passes; a reset is DBS_ECONNECT\n");
}

/* A child of fork() sends its own cancels, whatever its parent's were
 * doing: with the parent's cancel threads at their cap (each stuck on a
 * silent network), a child's statement that runs past its bound is still
 * cancelled on the server, which then ends the backend at once; without
 * the cancel a pg_sleep(60) would run on for its minute. */
static void test_fork_cancel(void)
{
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    /* the child starts threads after a multi-threaded fork, which
     * ThreadSanitizer refuses and GCC's AddressSanitizer may hang
     * (test_connections.c says more): the plain build runs it */
    printf("fork: not under a sanitizer\n");
    return;
#endif
    char url[512];
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    url_for(url, sizeof url, fp_port(fp), "");
    dbs_config pc;
    dbs_config_init(&pc);
    pc.url = url;
    pc.pool_size = 4;
    pc.pre_ping = 0;
    pc.statement_timeout_ms = 1000; /* SELECT 1 through the proxy fits, loaded */
    pc.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&pc, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_session *ss[4];
    for (int i = 0; i < 4; i++) {
        ss[i] = open_ok(p);
        CHECK_EQ(query_int(ss[i], "SELECT 1", NULL, 0), 1);
    }
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    for (int i = 0; i < 4; i++) { /* four cancels, each stuck in PQcancel */
        CHECK(dbs_exec(ss[i], "SELECT 2", NULL, 0, &err) < 0);
        CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
        dbs_session_close(ss[i]);
    }
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char direct[512];
        url_for(direct, sizeof direct, server_port, "");
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = direct;
        cfg.pool_size = 2;
        cfg.statement_timeout_ms = 1000;
        cfg.log_events = 0;
        dbs_pool *cp = dbs_pool_open(&cfg, &err);
        if (!cp)
            _exit(2);
        dbs_session *a = dbs_session_open(cp, NULL, &err);
        dbs_session *b = dbs_session_open(cp, NULL, &err);
        if (!a || !b)
            _exit(3);
        dbs_value pid_v[1] = {DBS_INT(query_int(a, "SELECT pg_backend_pid()", NULL, 0))};
        if (dbs_exec(a, "SELECT pg_sleep(60)", NULL, 0, &err) != DBS_ESTMT_TIMEOUT)
            _exit(4);
        dbs_session_close(a);
        /* the cancel ends the sleep; the backend then finds its client
         * gone and exits */
        int64_t alive = 1;
        for (int i = 0; i < 1000 && alive; i++) {
            alive = query_int(b, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                              pid_v, 1);
            if (dbs_commit(b, &err) != DBS_OK)
                _exit(5);
            if (alive)
                dbs__sleep_ms(10);
        }
        dbs_session_close(b);
        dbs_pool_close(cp);
        _exit(alive ? 6 : 0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_pool_close(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        CHECK_FAIL("child: status %d (6: its statement was not cancelled on the server)",
                   WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("fork: a child cancels its own statements while its parent's cancels are stuck\n");
}

int main(int argc, char **argv)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
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
        {"silent", test_silent_statement}, {"ping", test_silent_ping},
        {"commit", test_silent_commit},    {"connect", test_connect_bound},
        {"session", test_session_bound},   {"reset", test_latency_and_reset},
        {"fork_cancel", test_fork_cancel},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (argc < 2 || !strcmp(argv[1], parts[i].name))
            parts[i].fn();
    fp_stop(fp);
    return 0;
}
