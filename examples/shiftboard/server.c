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
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static sb_app app;
static atomic_ulong request_seq;
static char id_prefix[9];

/* Requests between their first callback and their completion notice: what
 * shutdown waits for before stopping the daemon, because stopping it closes
 * every connection, answered or not. Guarded by drain_lock. */
static pthread_mutex_t drain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained = PTHREAD_COND_INITIALIZER;
static unsigned in_flight;
/* Set once shutdown has begun: answers then carry Connection: close, so
 * keep-alive clients go away instead of holding the drain open. */
static atomic_bool stopping;

/* What one connection accumulates across libmicrohttpd's calls. */
typedef struct conn_state {
    char *body;
    size_t len;
    bool too_large;
    size_t discarded; /* body bytes read past the limit, thrown away */
    struct timespec started;
} conn_state;

/* An oversized body is read and thrown away so that the 413 reaches a
 * client that sends it all before reading (closing on unread data makes
 * the kernel reset the connection, answer included); past this much more,
 * the client is cut off instead. */
#define SB_DISCARD_MAX (1024 * 1024)

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Copies s into out as a logfmt value, quoted unless always is false and s
 * is a plain token. The path arrives percent-decoded and the method is
 * whatever the client sent, so either may hold quotes, spaces, backslashes
 * and newlines: escaped, they cannot forge a field or a whole log line.
 * Cut at out's size (at least 8). */
static void logfmt_value(const char *s, bool always, char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!always && *s && strlen(s) < len &&
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./") ==
            strlen(s)) {
        memcpy(out, s, strlen(s) + 1);
        return;
    }
    size_t o = 0;
    out[o++] = '"';
    for (; *s && o + 6 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
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
    char method[40], path[256];
    logfmt_value(req->method, false, method, sizeof method);
    logfmt_value(req->path, true, path, sizeof path);
    char line[512];
    int n = snprintf(line, sizeof line,
                     "time=%s.%03ldZ level=info msg=request request_id=%s user_id=%s "
                     "method=%s path=%s status=%d duration_ms=%.2f\n",
                     ts, now.tv_nsec / 1000000, req->request_id,
                     req->user_id[0] ? req->user_id : "-", method, path, status, ms);
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
        if (res->www_authenticate)
            MHD_add_response_header(r, "WWW-Authenticate", res->www_authenticate);
        if (atomic_load(&stopping))
            MHD_add_response_header(r, "Connection", "close");
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

static sb_request request_of(struct MHD_Connection *c, const char *method, const char *url,
                             const conn_state *st)
{
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
    return req;
}

static enum MHD_Result too_large(struct MHD_Connection *c, const char *method, const char *url,
                                 const conn_state *st)
{
    sb_request req = request_of(c, method, url, st);
    sb_response res = {0};
    sb_error(&res, 413, "request body larger than %d bytes", SB_MAX_BODY);
    return respond(c, &req, &res, st);
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
        pthread_mutex_lock(&drain_lock);
        in_flight++;
        pthread_mutex_unlock(&drain_lock);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > SB_MAX_BODY) {
            st->too_large = true;
            /* a client waiting for "100 Continue" gets the 413 instead and
             * never sends the body (libmicrohttpd sends 100 only when no
             * answer is queued by now) */
            const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
            if (expect && !strcasecmp(expect, "100-continue"))
                return too_large(c, method, url, st);
        }
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
            st->too_large = true;
            st->discarded += *upload_size;
            if (st->discarded > SB_DISCARD_MAX)
                return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (st->too_large)
        return too_large(c, method, url, st);

    sb_request req = request_of(c, method, url, st);
    sb_response res = {0};
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
        pthread_mutex_lock(&drain_lock);
        if (--in_flight == 0)
            pthread_cond_broadcast(&drained);
        pthread_mutex_unlock(&drain_lock);
    }
}

/* Waits until no request is in flight, or until deadline_s have passed: a
 * client that never finishes sending its body must not stall the shutdown
 * for ever. Returns the requests still in flight. */
static unsigned drain(int deadline_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += deadline_s;
    pthread_mutex_lock(&drain_lock);
    /* a loop: wakeups may be spurious, and a request may start and end
     * between the broadcast and our turn at the lock */
    while (in_flight > 0 && pthread_cond_timedwait(&drained, &drain_lock, &until) == 0)
        ;
    unsigned left = in_flight;
    pthread_mutex_unlock(&drain_lock);
    return left;
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

/* The stop signals, blocked in every thread and taken only by sigwait in
 * main. Blocked before the first thread starts (the pool's housekeeper,
 * libmicrohttpd's workers), since threads inherit the mask: a stop signal
 * can then never land in a thread that would merely set a flag. */
static sigset_t stop_signals;

static void block_stop_signals(void)
{
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    /* a client that hangs up mid-response is a failed write, not a death */
    signal(SIGPIPE, SIG_IGN);
}

/* Creates the schema, retrying for a while when the database is not up yet
 * (a container starting beside it). Returns 0 when done, 1 when a stop
 * signal ended the wait, -1 on failure. */
static int create_schema(void)
{
    dbs_error err;
    int rc = DBS_OK;
    for (int attempt = 0; attempt < 30; attempt++) {
        rc = sb_schema(&app, &err);
        if (rc == DBS_OK || (rc != DBS_ECONNECT && rc != DBS_EUNAVAILABLE &&
                             rc != DBS_ETIMEOUT))
            break;
        fprintf(stderr, "shiftboard: database not reachable yet (%s); retrying\n", err.message);
        struct timespec second = {.tv_sec = 1};
        if (sigtimedwait(&stop_signals, NULL, &second) > 0) {
            fprintf(stderr, "shiftboard: stopped before the schema was ready\n");
            return 1;
        }
    }
    if (rc != DBS_OK) {
        fprintf(stderr, "shiftboard: creating the schema: %s\n", err.message);
        return -1;
    }
    return 0;
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
    block_stop_signals();

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite:shiftboard.db";
    cfg.name = "shiftboard";
    /* a request should fail with 503 in seconds, not hang for the default
     * 30, when the pool is exhausted or the database is away */
    cfg.acquire_timeout_ms = 5000;
    cfg.leak_threshold_ms = 10000;
    /* PostgreSQL: the context as transaction-local settings, which the
     * row-level security policy reads (schema.c) */
    cfg.ctx_request_setting = "app.request_id";
    cfg.ctx_user_setting = "app.user_id";
    dbs_error err;
    if (dbs_config_from_env(&cfg, &err) != DBS_OK) {
        fprintf(stderr, "shiftboard: %s\n", err.message);
        return 2;
    }
    cfg.replica_url = getenv("DATABASE_REPLICA_URL"); /* GET routes read there */
    app.pool = dbs_pool_open(&cfg, &err);
    if (!app.pool) {
        fprintf(stderr, "shiftboard: %s\n", err.message);
        return 1;
    }
    app.postgres = strncmp(cfg.url, "sqlite:", 7) != 0;
    int schema = create_schema();
    if (schema != 0) {
        dbs_pool_close(app.pool);
        return schema > 0 ? 0 : 1;
    }

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

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;

    /* Stop accepting, let the requests in flight finish and their answers
     * go out, then stop the daemon (which closes the idle keep-alive
     * connections and joins its threads) and close the pool: by then no
     * session can be out. */
    fprintf(stderr, "shiftboard: %s received, shutting down\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&stopping, true);
    MHD_socket ls = MHD_quiesce_daemon(d);
    /* Refuse new connections now, but keep the descriptor open: the
     * daemon's threads may still use it until they are stopped
     * (libmicrohttpd's manual says so), and a closed number could be
     * reused meanwhile. */
    if (ls != MHD_INVALID_SOCKET)
        shutdown(ls, SHUT_RDWR);
    unsigned left = drain(30);
    if (left)
        fprintf(stderr, "shiftboard: %u requests still unfinished after 30 s; closing them\n",
                left);
    MHD_stop_daemon(d);
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    dbs_stats st;
    dbs_pool_stats(app.pool, &st);
    dbs_pool_close(app.pool);
    fprintf(stderr, "shiftboard: stopped; %llu sessions served, %d still out\n",
            (unsigned long long)st.acquired, st.in_use);
    return 0;
}
