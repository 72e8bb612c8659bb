/* A connection the server closed while it sat idle in the pool (a killed
 * backend: pg_terminate_backend, MariaDB's KILL; an idle timeout and a
 * restart look the same from the client) is never handed out, however
 * recently it was used: the check-out looks at its socket. PostgreSQL and
 * MariaDB (SQLite has no socket). */
#define _GNU_SOURCE /* POLLRDHUP */
#include "common.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

enum { SIZE = 4 };

static bool mysql;

/* The server's id for s's connection (backend pid, connection id). */
static int64_t backend_id(dbs_session *s)
{
    return query_int(s, mysql ? "SELECT CONNECTION_ID()" : "SELECT pg_backend_pid()", NULL, 0);
}

/* The local port of s's connection, as the server sees it. */
static int client_port(dbs_session *s)
{
    if (!mysql)
        return (int)query_int(s, "SELECT inet_client_port()", NULL, 0);
    char host[128];
    text_of(s, "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
            host, sizeof host);
    const char *colon = strrchr(host, ':');
    CHECK(colon);
    return atoi(colon + 1);
}

/* This process's socket bound to local port, or -1. */
static int socket_of_port(int port)
{
    for (int fd = 3; fd < 4096; fd++) {
        struct sockaddr_storage sa;
        socklen_t n = sizeof sa;
        if (getsockname(fd, (struct sockaddr *)&sa, &n) != 0)
            continue;
        if (sa.ss_family == AF_INET && ntohs(((struct sockaddr_in *)&sa)->sin_port) == port)
            return fd;
        if (sa.ss_family == AF_INET6 && ntohs(((struct sockaddr_in6 *)&sa)->sin6_port) == port)
            return fd;
    }
    return -1;
}

/* Whether the peer has closed fd (nothing is read from it). */
static bool peer_closed(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void kill_backend(dbs_pool *admin, int64_t id)
{
    char sql[96];
    dbs_session *s = open_ok(admin);
    if (mysql) {
        snprintf(sql, sizeof sql, "KILL %lld", (long long)id);
        exec_ok(s, sql);
    } else {
        snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)", (long long)id);
        CHECK_EQ(query_int(s, sql, NULL, 0), 1);
    }
    dbs_session_close(s);
}

struct pooled {
    int64_t id;
    int fd;
};

/* Fills the pool with SIZE connections, each used a moment ago, and
 * returns them to it; out[i] says which backend and which socket each is. */
static void fill(dbs_pool *p, struct pooled *out)
{
    dbs_session *s[SIZE];
    for (int i = 0; i < SIZE; i++) {
        s[i] = open_ok(p);
        out[i].id = backend_id(s[i]);
        out[i].fd = socket_of_port(client_port(s[i]));
        CHECK(out[i].fd >= 0);
    }
    for (int i = 0; i < SIZE; i++)
        dbs_session_close(s[i]);
    CHECK_EQ(stats_of(p).size, SIZE);
}

static dbs_pool *pool_for(const char *url)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = SIZE;
    cfg.max_overflow = 0;
    cfg.pre_ping = 1;
    cfg.validation_window_ms = 3600000; /* every connection is "recently used" */
    cfg.idle_timeout_ms = 0;
    cfg.max_lifetime_ms = 0;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    return p;
}

/* The first statement of a session must succeed; the session's backend
 * must not be one of the killed ones. */
static dbs_session *first_statement_ok(dbs_pool *p, const struct pooled *dead, int n_dead)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    dbs_rows *r = dbs_query(s, mysql ? "SELECT CONNECTION_ID()" : "SELECT pg_backend_pid()",
                            NULL, 0, &err);
    if (!r)
        CHECK_FAIL("the first statement of a session failed: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int64_t id = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    for (int i = 0; i < n_dead; i++)
        CHECK(id != dead[i].id);
    return s;
}

/* One killed connection: the one the next check-out would take (this
 * thread's last, parked for it). */
static void test_one_killed(const char *url, dbs_pool *admin)
{
    dbs_pool *p = pool_for(url);
    struct pooled c[SIZE];
    fill(p, c);
    /* c[0] was given back first: parked for this thread, taken next. */
    kill_backend(admin, c[0].id);
    WAIT_UNTIL(peer_closed(c[0].fd), 30000);
    CHECK(peer_closed(c[0].fd));
    uint64_t inval = stats_of(p).invalidated;
    dbs_session *s = first_statement_ok(p, &c[0], 1);
    dbs_session_close(s);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.invalidated, inval + 1);
    CHECK_EQ(st.closed_broken, 1);
    CHECK_EQ(st.size, SIZE);
    CHECK_EQ(st.in_use, 0);
    dbs_pool_close(p);
}

/* Every connection killed at once: each check-out gets a live one. */
static void test_all_killed(const char *url, dbs_pool *admin)
{
    dbs_pool *p = pool_for(url);
    struct pooled c[SIZE];
    fill(p, c);
    for (int i = 0; i < SIZE; i++)
        kill_backend(admin, c[i].id);
    for (int i = 0; i < SIZE; i++) {
        WAIT_UNTIL(peer_closed(c[i].fd), 30000);
        CHECK(peer_closed(c[i].fd));
    }
    uint64_t inval = stats_of(p).invalidated;
    dbs_session *s[SIZE];
    for (int i = 0; i < SIZE; i++)
        s[i] = first_statement_ok(p, c, SIZE);
    for (int i = 0; i < SIZE; i++)
        dbs_session_close(s[i]);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.invalidated, inval + SIZE);
    CHECK_EQ(st.size, SIZE);
    CHECK_EQ(st.in_use, 0);
    dbs_pool_close(p);
}

/* Bytes that arrive unasked on an idle connection (a notice, here a
 * NOTIFY on a channel it listens to) do not make it broken: it is handed
 * out, and works. PostgreSQL only (MariaDB sends nothing unasked). */
static void test_unasked_bytes(const char *url, dbs_pool *admin)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.validation_window_ms = 3600000;
    cfg.reset = DBS_RESET_ROLLBACK; /* keeps the LISTEN */
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    dbs_session *s = open_ok(p);
    exec_ok(s, "LISTEN dbscope_liveness");
    CHECK_OK(dbs_commit(s, &err), &err);
    int fd = socket_of_port(client_port(s));
    CHECK(fd >= 0);
    int64_t id = backend_id(s);
    dbs_session_close(s);
    dbs_session *a = open_ok(admin);
    exec_ok(a, "NOTIFY dbscope_liveness");
    CHECK_OK(dbs_commit(a, &err), &err);
    dbs_session_close(a);
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    WAIT_UNTIL(poll(&pf, 1, 0) == 1, 30000);
    CHECK_EQ(poll(&pf, 1, 0), 1);
    s = open_ok(p);
    CHECK_EQ(backend_id(s), id); /* the same connection, not replaced */
    dbs_session_close(s);
    CHECK_EQ(stats_of(p).invalidated, 0);
    dbs_pool_close(p);
}

int main(void)
{
    const char *url = test_url("liveness");
    mysql = test_is_mysql(url);
    if (!mysql && !test_is_pg(url))
        CHECK_FAIL("test_liveness needs PostgreSQL or MariaDB (DBSCOPE_TEST_URL_FILE)");
    static char own[1024];
    snprintf(own, sizeof own, "%s", url);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = own;
    cfg.pool_size = 1;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *admin = dbs_pool_open(&cfg, &err);
    if (!admin)
        CHECK_FAIL("admin pool: %s", err.message);
    test_one_killed(own, admin);
    test_all_killed(own, admin);
    if (!mysql)
        test_unasked_bytes(own, admin);
    dbs_pool_close(admin);
    puts("test_liveness: ok");
    return 0;
}
