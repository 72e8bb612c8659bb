/* shiftboard's process: configuration, the pool, the HTTP server
 * (libmicrohttpd, thread-pool mode), request logging and graceful shutdown.
 *
 * Usage: shiftboard [--listen HOST:PORT] [--threads N]
 * Database: DATABASE_URL (default sqlite:shiftboard.db) and DB_POOL_*. */
#include "shiftboard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static sb_app app;
static atomic_ulong request_seq;
static char id_prefix[9];

/* What one connection accumulates across libmicrohttpd's calls. */
typedef struct conn_state {
    char *body;
    size_t len;
    bool too_large;
    struct timespec started;
} conn_state;

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* One logfmt line a request, written whole with one call so lines from
 * concurrent requests never interleave. */
static void log_request(const sb_request *req, int status, double ms)
{
    char ts[32];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[512];
    int n = snprintf(line, sizeof line,
                     "time=%s.%03ldZ level=info msg=request request_id=%s user_id=%s "
                     "method=%s path=\"%.200s\" status=%d duration_ms=%.2f\n",
                     ts, now.tv_nsec / 1000000, req->request_id,
                     req->user_id[0] ? req->user_id : "-", req->method, req->path, status, ms);
    if (n > 0)
        fwrite(line, 1, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, stderr);
}

static enum MHD_Result respond(struct MHD_Connection *c, const sb_request *req, sb_response *res,
                            const conn_state *st)
{
    char empty[1] = "";
    char *body = res->body ? res->body : empty;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok = MHD_NO;
    if (r) {
        MHD_add_response_header(r, "Content-Type",
                                res->content_type ? res->content_type : "application/json");
        MHD_add_response_header(r, "X-Request-Id", req->request_id);
        MHD_add_response_header(r, "Cache-Control", "no-store");
        if (res->retry_after)
            MHD_add_response_header(r, "Retry-After", res->retry_after);
        if (res->allow)
            MHD_add_response_header(r, "Allow", res->allow);
        ok = MHD_queue_response(c, (unsigned)res->status, r);
        MHD_destroy_response(r);
    }
    log_request(req, res->status, ms_since(&st->started));
    free(res->body);
    res->body = NULL;
    return ok;
}

static void new_request_id(sb_request *req, struct MHD_Connection *c)
{
    /* A caller-supplied id is kept when it is short and plain, so a request
     * can be followed from a proxy's log into ours. */
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given && *given && strlen(given) < sizeof req->request_id &&
        strspn(given, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
            strlen(given)) {
        snprintf(req->request_id, sizeof req->request_id, "%s", given);
        return;
    }
    snprintf(req->request_id, sizeof req->request_id, "%s-%lu", id_prefix,
             atomic_fetch_add(&request_seq, 1) + 1);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    conn_state *st = *state;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &st->started);
        *state = st;
        /* refuse an announced oversized body before reading any of it */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > SB_MAX_BODY)
            st->too_large = true;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!st->too_large && st->len + *upload_size <= SB_MAX_BODY) {
            char *b = realloc(st->body, st->len + *upload_size + 1);
            if (!b)
                return MHD_NO;
            memcpy(b + st->len, upload, *upload_size);
            st->body = b;
            st->len += *upload_size;
            b[st->len] = '\0';
        } else {
            st->too_large = true; /* keep reading, to answer cleanly */
        }
        *upload_size = 0;
        return MHD_YES;
    }

    sb_request req = {
        .method = method,
        .path = url,
        .query_limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"),
        .query_after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"),
        .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
        .body = st->body ? st->body : "",
        .body_len = st->len,
    };
    new_request_id(&req, c);
    sb_response res = {0};
    if (st->too_large)
        sb_error(&res, 413, "request body larger than %d bytes", SB_MAX_BODY);
    else
        sb_handle(&app, &req, &res);
    return respond(c, &req, &res, st);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    conn_state *st = *state;
    if (st) {
        free(st->body);
        free(st);
        *state = NULL;
    }
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static int parse_listen(const char *arg, struct sockaddr_in *addr)
{
    const char *colon = strrchr(arg, ':');
    if (!colon)
        return -1;
    char host[64];
    size_t hl = (size_t)(colon - arg);
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, arg, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -1;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((uint16_t)port);
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof host, "127.0.0.1");
    return inet_pton(AF_INET, host, &addr->sin_addr) == 1 ? 0 : -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: shiftboard [--listen HOST:PORT] [--threads N]\n"
                    "  DATABASE_URL  sqlite:FILE or postgresql://... (default sqlite:shiftboard.db)\n"
                    "  DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_TIMEOUT, ...: see docs/pool.md\n");
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:8080";
    unsigned threads = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            long n = strtol(argv[++i], NULL, 10);
            if (n < 1 || n > 256) {
                fprintf(stderr, "shiftboard: --threads must be 1..256\n");
                return 2;
            }
            threads = (unsigned)n;
        } else {
            usage();
            return 2;
        }
    }
    struct sockaddr_in addr;
    if (parse_listen(listen, &addr) != 0) {
        fprintf(stderr, "shiftboard: --listen wants HOST:PORT with an IPv4 address, got \"%s\"\n",
                listen);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "shiftboard: libsodium failed to initialise\n");
        return 1;
    }
    /* Password hashing cost: argon2id at libsodium's interactive level;
     * SHIFTBOARD_PWHASH=min is for tests under sanitizers only. */
    const char *cost = getenv("SHIFTBOARD_PWHASH");
    bool cheap = cost && !strcmp(cost, "min");
    app.pwhash_ops = cheap ? crypto_pwhash_OPSLIMIT_MIN : crypto_pwhash_OPSLIMIT_INTERACTIVE;
    app.pwhash_mem = cheap ? crypto_pwhash_MEMLIMIT_MIN : crypto_pwhash_MEMLIMIT_INTERACTIVE;
    uint32_t r = randombytes_random();
    snprintf(id_prefix, sizeof id_prefix, "%08x", r);

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite:shiftboard.db";
    cfg.name = "shiftboard";
    cfg.acquire_timeout_ms = 5000;
    cfg.leak_threshold_ms = 10000;
    cfg.ctx_request_setting = "app.request_id";
    cfg.ctx_user_setting = "app.user_id";
    dbs_error err;
    if (dbs_config_from_env(&cfg, &err) != DBS_OK) {
        fprintf(stderr, "shiftboard: %s\n", err.message);
        return 2;
    }
    app.pool = dbs_pool_open(&cfg, &err);
    if (!app.pool) {
        fprintf(stderr, "shiftboard: %s\n", err.message);
        return 1;
    }
    app.postgres = strncmp(cfg.url, "sqlite:", 7) != 0;
    /* The database may still be starting: retry the schema for a while. */
    int rc = DBS_OK;
    for (int attempt = 0; attempt < 30; attempt++) {
        rc = sb_schema(&app, &err);
        if (rc == DBS_OK || (rc != DBS_ECONNECT && rc != DBS_EUNAVAILABLE))
            break;
        fprintf(stderr, "shiftboard: database not reachable yet (%s); retrying\n", err.message);
        sleep(1);
    }
    if (rc != DBS_OK) {
        fprintf(stderr, "shiftboard: creating the schema: %s\n", err.message);
        dbs_pool_close(app.pool);
        return 1;
    }

    /* The stop signals are blocked everywhere (the server's threads inherit
     * the mask) and only taken in sigsuspend below: no signal lands in the
     * middle of a request, and none can slip in between check and wait. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t stops, waitmask;
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stops, &waitmask);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGTERM);

    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "shiftboard: cannot listen on %s: %s\n", listen, strerror(errno));
        dbs_pool_close(app.pool);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, host, sizeof host);
    printf("shiftboard: listening on http://%s:%u/ (database: %s)\n", host,
           info ? info->port : ntohs(addr.sin_port), app.postgres ? "postgresql" : cfg.url);
    fflush(stdout);

    while (!stop_signal)
        sigsuspend(&waitmask);

    /* Stop accepting, let the requests in flight finish (stopping the
     * daemon joins its threads after their current request), then close
     * the pool: by then no session can be out. */
    fprintf(stderr, "shiftboard: %s received, shutting down\n",
            stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    MHD_socket ls = MHD_quiesce_daemon(d);
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    MHD_stop_daemon(d);
    dbs_stats st;
    dbs_pool_stats(app.pool, &st);
    dbs_pool_close(app.pool);
    fprintf(stderr, "shiftboard: stopped; %llu sessions served, %d still out\n",
            (unsigned long long)st.acquired, st.in_use);
    return 0;
}
