/* dbs_pool_close joins every thread the pool started: none is left inside
 * a driver (libpq, Connector/C) after it returns, whatever the pool's threads were waiting for. A
 * real TCP proxy (tests/faultproxy.c) goes silent or accepts connections
 * it never answers, for far longer than the test may run (connect and
 * statement bounds of 10 minutes, CTest's timeout well below): a close
 * that waited for those bounds hangs and CTest fails it; a close that left
 * a thread behind shows in the count of the process's threads
 * (/proc/self/task), taken before the pool opened and after it closed. */
#include "common.h"
#include "faultproxy.h"

#include <dirent.h>
#include <time.h>

static faultproxy *fp;
static char password[256];
static int server_port;
static bool is_pg; /* else MariaDB */

enum { FOREVER_MS = 600000 };

static void url_for(char *out, size_t n, int port)
{
    if (is_pg)
        snprintf(out, n, "postgresql://dbscope:%s@127.0.0.1:%d/dbscope?sslmode=disable",
                 password, port);
    else
        snprintf(out, n, "mysql://dbscope:%s@127.0.0.1:%d/dbscope", password, port);
}

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (no bound but CTest's) until the proxy has accepted more than
 * `seen` connections. */
static void wait_accepted(int seen)
{
    while (fp_accepted(fp) <= seen)
        pause_ms(10);
}

static void config_for(dbs_config *cfg, const char *url)
{
    dbs_config_init(cfg);
    cfg->url = url;
    cfg->pool_size = 2;
    cfg->max_overflow = 0;
    cfg->lazy_open = 1;
    cfg->connect_timeout_ms = FOREVER_MS;
    cfg->statement_timeout_ms = FOREVER_MS;
    cfg->housekeeping_interval_ms = 20;
    cfg->log_events = 0;
}

/* (a) The housekeeper is connecting (min_idle) to a server that never
 * answers. */
static void test_close_while_connecting(void)
{
    char url[512];
    url_for(url, sizeof url, fp_port(fp));
    fp_blackhole(fp, 1);
    int before = count_threads();
    int seen = fp_accepted(fp);
    dbs_config cfg;
    config_for(&cfg, url);
    cfg.min_idle = 1;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    wait_accepted(seen); /* the housekeeper's connect is under way */
    pause_ms(100);       /* and well into its wait */
    dbs_pool_close(p);
    CHECK_EQ(count_threads(), before);
    fp_blackhole(fp, 0);
    printf("close joins a housekeeper connecting to a silent server\n");
}

/* (b) The housekeeper is pinging an idle connection (keepalive_ms) over a
 * network gone silent. */
static void test_close_while_pinging(void)
{
    char url[512];
    url_for(url, sizeof url, fp_port(fp));
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    int before = count_threads();
    dbs_config cfg;
    config_for(&cfg, url);
    cfg.min_idle = 1;
    cfg.keepalive_ms = 50;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    CHECK_OK(dbs_pool_wait_ready(p, FOREVER_MS, &err), &err);
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    pause_ms(500); /* several keep-alive rounds: a ping is stuck in one */
    dbs_pool_close(p);
    CHECK_EQ(count_threads(), before);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    printf("close joins a housekeeper pinging over a silent network\n");
}

/* (c) A replica monitor is connecting to a standby that never answers. */
static void test_close_while_monitoring(void)
{
    char url[512], rurl[512];
    url_for(url, sizeof url, server_port);
    url_for(rurl, sizeof rurl, fp_port(fp));
    fp_blackhole(fp, 1);
    int before = count_threads();
    int seen = fp_accepted(fp);
    dbs_config cfg;
    config_for(&cfg, url);
    cfg.replica_url = rurl;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    wait_accepted(seen); /* the monitor's connect is under way */
    pause_ms(100);
    dbs_pool_close(p);
    CHECK_EQ(count_threads(), before);
    fp_blackhole(fp, 0);
    printf("close joins a replica monitor connecting to a silent standby\n");
}

/* A statement past its bound sends a cancel request (a connection of its
 * own to the same address, here through the proxy). (d) The server answers
 * it, slowly: the close waits for that answer, within connect_timeout_ms,
 * rather than return with the request's thread inside libpq. */
static void test_close_while_cancelling(void)
{
    char url[512];
    url_for(url, sizeof url, fp_port(fp));
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    int before = count_threads();
    dbs_config cfg;
    config_for(&cfg, url);
    cfg.statement_timeout_ms = 200;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("session: %s", err.message);
    /* the cancel request's packet reaches the server a second late */
    fp_set(fp, FP_LATENCY, FP_BOTH, 1000);
    CHECK(dbs_exec(s, "SELECT pg_sleep(5)", NULL, 0, &err) < 0);
    CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
    dbs_session_close(s);
    dbs_pool_close(p);
    CHECK_EQ(count_threads(), before);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    printf("close waits for a cancel request the server answers late\n");
}

static int cancel_reports;

static void on_cancel_event(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_NOTICE && ev->reason && strstr(ev->reason, "cancel request"))
        cancel_reports++;
}

/* (e) The cancel request goes to a server that accepts it and never
 * answers: nothing in libpq bounds that wait. The close waits
 * connect_timeout_ms for it, then returns and says so; the request's
 * thread holds nothing of the pool and ends when the server closes its
 * socket (here: when the proxy stops). */
static void test_close_while_cancel_unanswered(void)
{
    char url[512];
    url_for(url, sizeof url, fp_port(fp));
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    dbs_config cfg;
    config_for(&cfg, url);
    cfg.statement_timeout_ms = 200;
    cfg.connect_timeout_ms = 300;
    cfg.on_event = on_cancel_event;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("session: %s", err.message);
    fp_blackhole(fp, 1); /* the cancel request's connection: never answered */
    CHECK(dbs_exec(s, "SELECT pg_sleep(5)", NULL, 0, &err) < 0);
    CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
    dbs_session_close(s);
    dbs_pool_close(p);
    CHECK_EQ(cancel_reports, 1);
    fp_blackhole(fp, 0);
    printf("close reports a cancel request the server never answers\n");
}

int main(int argc, char **argv)
{
    /* PostgreSQL or MariaDB, by the server directory the test was given */
    const char *dir = getenv("DBSCOPE_PG_DIR");
    is_pg = dir != NULL;
    if (!dir)
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
        {"connect", test_close_while_connecting},
        {"ping", test_close_while_pinging},
        {"replica", test_close_while_monitoring},
        {"cancel", test_close_while_cancelling},
        {"cancel_unanswered", test_close_while_cancel_unanswered},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if ((argc < 2 || !strcmp(argv[1], parts[i].name)) &&
            (is_pg || (parts[i].fn != test_close_while_monitoring && /* pg only */
                       parts[i].fn != test_close_while_cancelling &&
                       parts[i].fn != test_close_while_cancel_unanswered)))
            parts[i].fn();
    fp_stop(fp);
    return 0;
}
