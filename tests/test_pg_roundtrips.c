/* Round trips, measured: the test puts a TCP relay between dbscope and the
 * server and counts the client's turns to speak (each time the client sends
 * after the server last did is one round trip). Checks that BEGIN, the
 * request-context settings and the first statement share one round trip,
 * that N statements + COMMIT cost N + 1 with the full reset included, that
 * an unused session costs none, that the reset adds no round trip to a
 * release whatever the session did, and that dbs_session_commit_close
 * sends the reset with the COMMIT (no turn of its own). */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static atomic_int turns;
static int listen_fd, server_port;

static void *relay(void *arg)
{
    (void)arg;
    for (;;) {
        int cfd = accept(listen_fd, NULL, NULL);
        if (cfd < 0)
            return NULL;
        int sfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)server_port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (sfd < 0 || connect(sfd, (struct sockaddr *)&a, sizeof a) != 0)
            CHECK_FAIL("relay cannot reach the server");
        struct pollfd fds[2] = {{.fd = cfd, .events = POLLIN},
                                {.fd = sfd, .events = POLLIN}};
        int last = 1; /* who spoke last: 0 client, 1 server */
        char buf[65536];
        for (;;) {
            if (poll(fds, 2, -1) < 0)
                break;
            int done = 0;
            for (int i = 0; i < 2; i++) {
                if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t n = read(fds[i].fd, buf, sizeof buf);
                if (n <= 0) {
                    done = 1;
                    break;
                }
                if (i == 0 && last == 1)
                    atomic_fetch_add(&turns, 1);
                last = i;
                for (ssize_t off = 0; off < n;) {
                    ssize_t w =
                        write(fds[1 - i].fd, buf + off, (size_t)(n - off));
                    if (w <= 0) {
                        done = 1;
                        break;
                    }
                    off += w;
                }
            }
            if (done)
                break;
        }
        close(cfd);
        close(sfd);
    }
}

typedef struct unit_arg {
    const char *tbl;
    int first;
    int64_t id;
} unit_arg;

/* Two inserts and a count; records the round trips of the first. */
static int three_statements(dbs_session *s, void *arg, dbs_error *err)
{
    unit_arg *a = arg;
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO %s VALUES ($1, current_setting('app.tenant_id'))",
             a->tbl);
    int t0 = atomic_load(&turns);
    dbs_value v1[] = {DBS_INT(++a->id)};
    if (dbs_exec(s, sql, v1, 1, err) != 1)
        return -1;
    a->first = atomic_load(&turns) - t0;
    dbs_value v2[] = {DBS_INT(++a->id)};
    if (dbs_exec(s, sql, v2, 1, err) != 1)
        return -1;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE tenant = 't1'",
             a->tbl);
    return query_int(s, sql, NULL, 0) > 0 ? 0 : -1;
}

static int nothing(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)arg;
    (void)err;
    return 0;
}

int main(void)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    char password[256], port[32];
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    server_port = atoi(port);

    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(listen_fd, 4) == 0);
    socklen_t al = sizeof a;
    CHECK(getsockname(listen_fd, (struct sockaddr *)&a, &al) == 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, relay, NULL) == 0);
    pthread_detach(th);

    char url[1024];
    snprintf(url, sizeof url,
             "postgresql://dbscope:%s@127.0.0.1:%d/"
             "dbscope?sslmode=disable&connect_timeout=10",
             password, ntohs(a.sin_port));
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.pre_ping = 0;
    cfg.keepalive_ms = 0;
    cfg.ctx_user_setting = "app.user_id";
    cfg.ctx_tenant_setting = "app.tenant_id";
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    char tbl[64], sql[256];
    snprintf(tbl, sizeof tbl, "rt_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int, tenant text)", tbl);
    run_sql(p, sql); /* also opens the one connection */
    /* run_sql's close posted a reset: a ping reads its answer, so every
     * byte has passed the relay before counting starts. */
    CHECK_OK(dbs_pool_ping(p, &err), &err);

    dbs_context ctx = {.request_id = "r1", .user_id = "u1", .tenant_id = "t1"};

    /* A unit of work of 3 statements through dbs_transact: 3 + 1 round
     * trips, the full reset riding with the COMMIT. */
    unit_arg ua = {.tbl = tbl};
    int t0 = atomic_load(&turns);
    CHECK_OK(dbs_transact(p, &ctx, three_statements, &ua, &err), &err);
    int unit = atomic_load(&turns) - t0;
    printf(
        "first statement with BEGIN + 2 context settings: %d round trip(s)\n",
        ua.first);
    printf("3 statements + COMMIT with the reset (dbs_transact): %d round "
           "trip(s)\n", unit);
    CHECK_EQ(ua.first, 1);
    CHECK_EQ(unit, 4);

    /* The same again: the statement cache saves the Parse, not a trip. */
    t0 = atomic_load(&turns);
    CHECK_OK(dbs_transact(p, &ctx, three_statements, &ua, &err), &err);
    CHECK_EQ(atomic_load(&turns) - t0, 4);

    /* Nothing sent: commit, rollback and release cost nothing. */
    t0 = atomic_load(&turns);
    CHECK_OK(dbs_transact(p, &ctx, nothing, NULL, &err), &err);
    dbs_session *s = dbs_session_open(p, &ctx, &err);
    CHECK(s != NULL);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    CHECK_EQ(atomic_load(&turns) - t0, 0);

    /* Closed without commit: the ROLLBACK carries the reset: 1 + 1. */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE tenant = 't1'",
             tbl);
    t0 = atomic_load(&turns);
    s = dbs_session_open(p, &ctx, &err);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4);
    dbs_session_close(s);
    CHECK_EQ(atomic_load(&turns) - t0, 2);

    /* Session state, plain or made inside a function, costs no more. */
    t0 = atomic_load(&turns);
    s = dbs_session_open(p, &ctx, &err);
    CHECK_OK(dbs_exec(s, "SET work_mem = '9MB'", NULL, 0, &err), &err);
    CHECK_OK(dbs_exec(s, "SELECT set_config('app.x', 'y', false)", NULL, 0,
                      &err), &err);
    dbs_session_close(s);
    int dirty = atomic_load(&turns) - t0;
    printf("session with SET and set_config closed: %d round trip(s)\n",
           dirty);
    CHECK_EQ(dirty, 3);

    /* dbs_commit, then close: nothing ends the session, so the reset is
     * written at close and its answer read by the next flight; the relay
     * sees that as one more turn, which no caller waits for. Counted up to
     * the next session's first statement, whose answer follows it. */
    t0 = atomic_load(&turns);
    s = dbs_session_open(p, &ctx, &err);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    s = dbs_session_open(p, &ctx, &err);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4);
    int posted = atomic_load(&turns) - t0;
    dbs_session_close(s);
    printf("statement + dbs_commit + close, next session's statement: %d "
           "turn(s), 1 of them the reset nobody waits for\n", posted);
    CHECK_EQ(posted, 4);

    /* dbs_session_commit_close: the reset rides with the COMMIT, so the
     * same sequence takes one turn less. */
    t0 = atomic_load(&turns);
    s = dbs_session_open(p, &ctx, &err);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4);
    CHECK_OK(dbs_session_commit_close(s, &err), &err);
    s = dbs_session_open(p, &ctx, &err);
    CHECK_EQ(query_int(s, sql, NULL, 0), 4);
    int joined = atomic_load(&turns) - t0;
    dbs_session_close(s);
    printf("statement + dbs_session_commit_close, next session's statement: "
           "%d turn(s)\n", joined);
    CHECK_EQ(joined, 3);

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(p, sql);
    dbs_pool_close(p);
    return 0;
}
