/* tfb-server --mode loop: dbscope's event-loop API (dbs_loop, dbs_unit)
 * inside h2o's evloop, as the leading C entries of the TechEmpower
 * benchmarks are built: one thread per core, each with its own listening
 * socket (SO_REUSEPORT, so the kernel spreads connections), its own h2o
 * loop and its own dbs_loop, all on one shared dbs_pool. The dbs_loop's
 * descriptor sits in h2o's epoll set beside the HTTP sockets; nothing on
 * these threads ever waits for the database.
 *
 *   /db        one unit of one SELECT
 *   /queries   one unit of N SELECTs, sent in one flight (pipelined)
 *   /updates   a read-only unit of N SELECTs, then a unit of one bulk
 *              UPDATE ... FROM (VALUES ...) of the rows sorted by id
 *   /fortunes  one unit of one SELECT
 *
 * With --pipeline 0 nothing is pipelined, as a client library without
 * pipelining works: /queries and /updates read with one unit a SELECT,
 * each sent once the previous one answered, and the loop keeps one unit
 * in flight a connection (the baseline pipelining is measured against).
 *
 * When an HTTP client goes away before its unit completes, the unit is
 * cancelled (dbs_unit_cancel): its statement stops on the server and the
 * connection goes back to work. */
#include "tfb.h"

#include <errno.h>
#include <h2o.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How often a loop looks for clients that went away while their unit ran. */
#define GONE_CHECK_MS 100
/* How often a loop looks for connections past their deadline (lconn). */
#define DEADLINE_CHECK_MS 1000

typedef struct lreq lreq;
typedef struct lconn lconn;
typedef struct lslot lslot;

typedef struct lthread {
    h2o_context_t ctx; /* first: a request's conn->ctx points here */
    h2o_accept_ctx_t accept;
    h2o_socket_t *listener;
    h2o_socket_t *dbsock;
    dbs_loop *dl;
    int listen_fd;
    int index;
    int ok;
    pthread_t tid;
    lreq *pending; /* requests with a unit in flight */
    int npending;
    uint64_t last_check_ms;
    uint64_t accept_resume_ms; /* out of descriptors: accept again then (0: accepting) */
    lconn *conns;              /* this loop's HTTP connections */
    uint64_t last_deadline_ms;
} lthread;

/* An HTTP connection, from its accept until h2o closes its socket (the
 * socket's on_close). It is counted against the connection limit, and its
 * deadlines are the loop's own, whatever h2o's timers do: h2o 2.2 has no
 * timer at all while it writes a response (a client that never reads
 * would hold its connection for good), and a bound it does not own cannot
 * be moved by how a client spaces its bytes. Loop thread only. */
struct lconn {
    lthread *t;
    h2o_socket_t *sock;
    lconn *prev, *next;
    int busy;             /* requests begun and not ended (answers written included) */
    uint64_t active_ms;   /* accepted, or a request began or ended */
    uint64_t writing_ms;  /* seen writing since then, without a break (0: not) */
    int cut;              /* shut down: h2o closes it on its next read or write */
};

struct lreq {
    lthread *t;
    h2o_req_t *req;   /* NULL once h2o disposed of the request */
    dbs_unit *unit;   /* the unit in flight, or NULL */
    int canceled;     /* dbs_unit_cancel was called on unit */
    int linked;       /* on t->pending */
    enum tfb_route route;
    int n;
    int got;          /* --pipeline 0: worlds read so far */
    int fd;           /* the client's socket, -1 unknown */
    lslot *slot;      /* in the request's memory pool: points back here */
    lreq *prev, *next;
    tfb_world w[];    /* n of them (/db, /queries, /updates) */
};

/* A request's memory pool holds this; its dispose runs once, when the
 * request ends whichever way (answered, or its connection closed), and
 * always before the connection's socket closes. */
struct lslot {
    lreq *r;  /* the request's lreq while it has one */
    lconn *c; /* the connection, when it is one of ours */
};

static h2o_globalconf_t g_config;
static dbs_pool *g_pool;
static const tfb_options *g_opt;
static int g_loop_connections;
static lthread *g_threads;
/* HTTP connections open in all loops, and how many may be: a process-wide
 * count, since descriptors are the process's. */
static atomic_uint g_conns;
static unsigned g_conn_limit;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- requests and their units ------------------------------------------ */

static void link_pending(lreq *r)
{
    lthread *t = r->t;
    r->prev = NULL;
    r->next = t->pending;
    if (t->pending)
        t->pending->prev = r;
    t->pending = r;
    t->npending++;
    r->linked = 1;
}

static void free_lreq(lreq *r)
{
    lthread *t = r->t;
    if (r->linked) {
        if (r->prev)
            r->prev->next = r->next;
        else
            t->pending = r->next;
        if (r->next)
            r->next->prev = r->prev;
        t->npending--;
    }
    if (r->slot)
        r->slot->r = NULL;
    free(r);
}

/* The request's memory pool is going: the client went away (or the
 * response is done). A unit still running is cancelled; its callback
 * frees r. */
static void on_req_dispose(void *p)
{
    lslot *slot = p;
    if (slot->c) {
        slot->c->busy--;
        slot->c->active_ms = now_ms();
    }
    lreq *r = slot->r;
    if (!r)
        return;
    r->req = NULL;
    r->slot = NULL;
    if (r->unit && !r->canceled) {
        r->canceled = 1;
        dbs_unit_cancel(r->unit);
    }
}

static void add_header(h2o_req_t *req, const h2o_token_t *tok, const char *v)
{
    h2o_add_header(&req->pool, &req->res.headers, tok, NULL, v, strlen(v));
}

/* Sends body (copied) on req. */
static void send_body(h2o_req_t *req, int status, const char *type, tfb_buf *b)
{
    if (b->oom) {
        h2o_send_error_generic(req, 500, "Internal Server Error", "out of memory\n", 0);
        tfb_buf_free(b);
        return;
    }
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Error";
    add_header(req, H2O_TOKEN_CONTENT_TYPE, type);
    req->res.content_length = b->len; /* else h2o sends it chunked */
    h2o_send_inline(req, b->p ? b->p : "", b->len);
    tfb_buf_free(b);
}

static void send_error(h2o_req_t *req, int rc, const char *message)
{
    int status = tfb_status_of(rc);
    char *body = h2o_mem_alloc_pool(&req->pool, 600);
    snprintf(body, 600, "%s: %s\n", dbs_strerror(rc), message);
    h2o_send_error_generic(req, status,
                           status == 503 ? "Service Unavailable" : "Internal Server Error", body,
                           H2O_SEND_ERROR_KEEP_HEADERS);
}

/* Ends r with a response (when its client is still there) and frees it. */
static void finish_error(lreq *r, int rc, const char *message)
{
    h2o_req_t *req = r->req;
    free_lreq(r);
    if (req)
        send_error(req, rc, message);
}

static void finish_body(lreq *r, const char *type, tfb_buf *b)
{
    h2o_req_t *req = r->req;
    free_lreq(r);
    if (req)
        send_body(req, 200, type, b);
    else
        tfb_buf_free(b);
}

static int submit(lreq *r, dbs_unit *u, dbs_unit_fn done)
{
    dbs_error err = {0};
    r->unit = u;
    r->canceled = 0;
    int rc = dbs_unit_submit(u, done, r, &err);
    if (rc < 0) {
        r->unit = NULL;
        finish_error(r, rc, err.message);
    }
    return rc;
}

static void on_worlds_done(dbs_unit *u, int rc, const dbs_error *err, void *arg);

/* The reads of /db, /queries and /updates: one unit of the n SELECTs, or
 * with --pipeline 0 a unit of the next one alone. */
static void submit_world_reads(lreq *r)
{
    dbs_error err = {0};
    int count = g_opt->pipeline == 0 ? 1 : r->n;
    dbs_unit *u = dbs_unit_new(r->t->dl, NULL, DBS_UNIT_RO, &err);
    for (int i = 0; u && i < count; i++) {
        dbs_value id = DBS_INT(tfb_random_id());
        if (dbs_unit_add(u, TFB_SQL_WORLD, &id, 1, &err) < 0) {
            dbs_unit_discard(u);
            u = NULL;
        }
    }
    if (!u) {
        finish_error(r, err.code ? err.code : DBS_ENOMEM, err.message);
        return;
    }
    submit(r, u, on_worlds_done);
}

static void on_update_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    lreq *r = arg;
    (void)u;
    r->unit = NULL;
    if (rc < 0) {
        finish_error(r, rc, err->message);
        return;
    }
    tfb_buf b = {0};
    tfb_body_worlds(&b, r->w, r->n);
    finish_body(r, "application/json", &b);
}

static void on_worlds_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    lreq *r = arg;
    r->unit = NULL;
    if (rc < 0) {
        finish_error(r, rc, err->message);
        return;
    }
    if (!r->req) {
        free_lreq(r);
        return;
    }
    int serial = g_opt->pipeline == 0;
    for (int i = serial ? r->got : 0; i < (serial ? r->got + 1 : r->n); i++) {
        dbs_error e = {0};
        dbs_rows *rows = dbs_unit_rows(u, serial ? 0 : i);
        if (!rows || dbs_rows_next(rows, &e) != 1) {
            finish_error(r, DBS_ESQL, "world: no such row (run tfb-server --setup)");
            return;
        }
        r->w[i].id = (int32_t)dbs_rows_int(rows, 0);
        r->w[i].rnd = (int32_t)dbs_rows_int(rows, 1);
    }
    if (serial && ++r->got < r->n) {
        submit_world_reads(r);
        return;
    }
    tfb_buf b = {0};
    if (r->route == TFB_DB) {
        tfb_body_world(&b, &r->w[0]);
        finish_body(r, "application/json", &b);
        return;
    }
    if (r->route == TFB_QUERIES) {
        tfb_body_worlds(&b, r->w, r->n);
        finish_body(r, "application/json", &b);
        return;
    }
    /* /updates: the writes, in a unit of their own. */
    tfb_buf ids = {0}, rnds = {0};
    dbs_error e = {0};
    for (int i = 0; i < r->n; i++)
        r->w[i].rnd = tfb_random_id();
    tfb_update_arrays(r->w, r->n, &ids, &rnds);
    dbs_value params[2] = {DBS_TEXT(ids.p), DBS_TEXT(rnds.p)};
    dbs_unit *w = ids.oom || rnds.oom ? NULL : dbs_unit_new(r->t->dl, NULL, 0, &e);
    if (!w || dbs_unit_add(w, TFB_SQL_UPDATE, params, 2, &e) < 0) {
        dbs_unit_discard(w);
        tfb_buf_free(&ids);
        tfb_buf_free(&rnds);
        finish_error(r, e.code ? e.code : DBS_ENOMEM, e.message);
        return;
    }
    tfb_buf_free(&ids);
    tfb_buf_free(&rnds);
    submit(r, w, on_update_done);
}

static void on_fortunes_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    lreq *r = arg;
    r->unit = NULL;
    if (rc < 0) {
        finish_error(r, rc, err->message);
        return;
    }
    if (!r->req) {
        free_lreq(r);
        return;
    }
    /* The rows stay valid until this callback returns: no copies. */
    tfb_fortune f[64];
    int n = 0;
    dbs_rows *rows = dbs_unit_rows(u, 0);
    dbs_error e = {0};
    while (rows && n < 63 && dbs_rows_next(rows, &e) == 1) {
        f[n].id = (int32_t)dbs_rows_int(rows, 0);
        f[n].msg = dbs_rows_text(rows, 1, &f[n].len);
        if (!f[n].msg)
            f[n].msg = "";
        n++;
    }
    tfb_buf b = {0};
    tfb_body_fortunes(&b, f, n);
    finish_body(r, "text/html; charset=utf-8", &b);
}

static void on_sleep_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    lreq *r = arg;
    (void)u;
    r->unit = NULL;
    if (rc < 0) {
        finish_error(r, rc, err->message);
        return;
    }
    tfb_buf b = {0};
    tfb_buf_str(&b, "slept\n");
    finish_body(r, "text/plain", &b);
}

/* name's value in the query string of req, decoded (tfb_query_arg) into
 * the request's memory pool; NULL when absent. */
static const char *query_arg(h2o_req_t *req, const char *name, size_t *len)
{
    *len = 0;
    if (req->query_at == SIZE_MAX)
        return NULL;
    size_t qlen = req->path.len - req->query_at - 1;
    char *buf = h2o_mem_alloc_pool(&req->pool, qlen + 1);
    return tfb_query_arg(req->path.base + req->query_at + 1, qlen, name, buf, len);
}

static void on_conn_close(void *data);

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    lthread *t = (lthread *)req->conn->ctx;
    h2o_socket_t *sock = req->conn->callbacks->get_socket
                             ? req->conn->callbacks->get_socket(req->conn)
                             : NULL;
    lslot *slot = h2o_mem_alloc_shared(&req->pool, sizeof *slot, on_req_dispose);
    if (!slot) {
        h2o_send_error_generic(req, 500, "Internal Server Error", "out of memory\n", 0);
        return 0;
    }
    slot->r = NULL;
    slot->c = sock && sock->on_close.cb == on_conn_close ? sock->on_close.data : NULL;
    if (slot->c) {
        slot->c->busy++;
        slot->c->active_ms = now_ms();
        /* h2o 2.2 goes on to the next request it holds when an answer
         * could not be written: a connection cut with requests pipelined
         * would have each of them run (and cancelled), one a check's
         * period. The first one closes it instead. */
        if (slot->c->cut) {
            h2o_send_error_generic(req, 503, "Service Unavailable",
                                   "the connection was past its deadline\n",
                                   H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
            return 0;
        }
    }
    enum tfb_route route =
        tfb_route_of(req->path_normalized.base, req->path_normalized.len, g_opt->test_routes);
    tfb_buf b = {0};
    size_t len = 0;
    const char *v;
    int n = 1;
    switch (route) {
    case TFB_JSON:
        tfb_body_json(&b);
        send_body(req, 200, "application/json", &b);
        return 0;
    case TFB_PLAINTEXT:
        tfb_buf_str(&b, "Hello, World!");
        send_body(req, 200, "text/plain", &b);
        return 0;
    case TFB_NONE:
        tfb_buf_str(&b, "not found\n");
        send_body(req, 404, "text/plain", &b);
        return 0;
    case TFB_QUERIES:
    case TFB_UPDATES:
        v = query_arg(req, "queries", &len);
        n = tfb_queries(v, len);
        break;
    default:
        break;
    }
    lreq *r = calloc(1, sizeof *r + (size_t)n * sizeof(tfb_world));
    if (!r) {
        h2o_send_error_generic(req, 500, "Internal Server Error", "out of memory\n", 0);
        return 0;
    }
    slot->r = r;
    r->t = t;
    r->req = req;
    r->slot = slot;
    r->route = route;
    r->n = n;
    r->fd = sock ? h2o_socket_get_fd(sock) : -1;
    link_pending(r);

    dbs_error err = {0};
    dbs_unit *u = NULL;
    dbs_unit_fn done = on_worlds_done;
    switch (route) {
    case TFB_DB:
    case TFB_QUERIES:
    case TFB_UPDATES:
        submit_world_reads(r);
        return 0;
    case TFB_FORTUNES:
        done = on_fortunes_done;
        u = dbs_unit_new(t->dl, NULL, DBS_UNIT_RO, &err);
        if (u && dbs_unit_add(u, TFB_SQL_FORTUNES, NULL, 0, &err) < 0) {
            dbs_unit_discard(u);
            u = NULL;
        }
        break;
    case TFB_SLEEP: {
        done = on_sleep_done;
        v = query_arg(req, "s", &len);
        dbs_value secs = DBS_REAL(tfb_seconds(v, len));
        u = dbs_unit_new(t->dl, NULL, DBS_UNIT_RO, &err);
        if (u && dbs_unit_add(u, TFB_SQL_SLEEP, &secs, 1, &err) < 0) {
            dbs_unit_discard(u);
            u = NULL;
        }
        break;
    }
    default:
        break;
    }
    if (!u) {
        finish_error(r, err.code ? err.code : DBS_ENOMEM, err.message);
        return 0;
    }
    submit(r, u, done);
    return 0;
}

/* Clients that went away while their unit runs: h2o has no callback for
 * that (it may not read a connection while its request is handled), so
 * the loop looks at the sockets itself (a peer that closed, or
 * half-closed, its end). */
static void check_gone(lthread *t)
{
    uint64_t now = now_ms();
    if (!t->pending || now - t->last_check_ms < GONE_CHECK_MS)
        return;
    t->last_check_ms = now;
    struct pollfd fds[256];
    lreq *who[256];
    lreq *r = t->pending;
    while (r) {
        int k = 0;
        for (; r && k < 256; r = r->next) {
            if (r->fd < 0 || !r->unit || r->canceled)
                continue;
            fds[k].fd = r->fd;
            fds[k].events = POLLRDHUP;
            fds[k].revents = 0;
            who[k++] = r;
        }
        if (k == 0 || poll(fds, (nfds_t)k, 0) <= 0)
            continue;
        for (int i = 0; i < k; i++)
            if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
                who[i]->canceled = 1;
                dbs_unit_cancel(who[i]->unit);
            }
    }
}

/* --- the loop thread ----------------------------------------------------- */

static void on_db_readable(h2o_socket_t *sock, const char *err)
{
    lthread *t = sock->data;
    (void)err;
    dbs_loop_run(t->dl);
}

static void on_conn_close(void *data)
{
    lconn *c = data;
    lthread *t = c->t;
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    atomic_fetch_sub(&g_conns, 1);
}

/* Past the limit: the connection is answered 503 and closed at once. Not
 * accepting instead would leave it, and every connection after it, in
 * the backlog for as long as the connections held stay open, a listener
 * to wake again when one closes (on another loop, with SO_REUSEPORT,
 * whose backlog is not this one's); refusing keeps the listener as it is
 * and the connections held served. */
static void refuse(h2o_socket_t *s)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Server: " TFB_SERVER "\r\n"
                               "Connection: close\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 30\r\n\r\n"
                               "too many connections: refused\n";
    int fd = h2o_socket_get_fd(s);
    /* A new socket's send buffer is empty: this is one write or nothing. */
    if (fd >= 0 && send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* the client is gone already: nothing to tell it */
    }
    h2o_socket_close(s);
}

/* Cuts the connections past a deadline, of TFB_IDLE_TIMEOUT_S each: one
 * that has had no request begin or end for that long while it is not
 * being answered (a client that sends its request a byte at a time, or
 * sends nothing), and one that has been writing without a break for that
 * long (a client that does not read its answers). A connection whose
 * request is being handled has none: its unit's own bounds end it. The
 * socket is shut down rather than closed, so that h2o, which owns it,
 * sees the end on its next read or write (or its next request, on_req)
 * and closes it itself. */
static void check_deadlines(lthread *t)
{
    uint64_t now = now_ms();
    if (now - t->last_deadline_ms < DEADLINE_CHECK_MS)
        return;
    t->last_deadline_ms = now;
    const uint64_t bound = (uint64_t)TFB_IDLE_TIMEOUT_S * 1000u;
    for (lconn *c = t->conns; c; c = c->next) {
        if (c->cut)
            continue;
        /* Writing first: a request counts as handled until its answer is
         * written. */
        int late = 0;
        if (h2o_socket_is_writing(c->sock)) {
            if (!c->writing_ms)
                c->writing_ms = now;
            late = now - c->writing_ms > bound;
        } else {
            c->writing_ms = 0;
            late = c->busy == 0 && now - c->active_ms > bound;
        }
        if (late) {
            c->cut = 1;
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
        }
    }
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    lthread *t = listener->data;
    if (err)
        return;
    for (int i = 0; i < 64; i++) {
        errno = 0;
        h2o_socket_t *s = h2o_evloop_socket_accept(listener);
        if (!s) {
            /* Out of descriptors: the connection stays in the backlog and
             * the listener readable, so an accept tried again at once
             * would spin the thread. Wait a check's period (the loop
             * resumes it), until idle connections time out or go. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                h2o_socket_read_stop(listener);
                t->accept_resume_ms = now_ms() + GONE_CHECK_MS;
            }
            break;
        }
        if (atomic_fetch_add(&g_conns, 1) >= g_conn_limit) {
            atomic_fetch_sub(&g_conns, 1);
            refuse(s);
            continue;
        }
        lconn *c = calloc(1, sizeof *c);
        if (!c) {
            atomic_fetch_sub(&g_conns, 1);
            h2o_socket_close(s);
            continue;
        }
        c->t = t;
        c->sock = s;
        c->active_ms = now_ms();
        c->next = t->conns;
        if (t->conns)
            t->conns->prev = c;
        t->conns = c;
        s->on_close.cb = on_conn_close;
        s->on_close.data = c;
        h2o_accept(&t->accept, s);
    }
}

static void *loop_main(void *arg)
{
    lthread *t = arg;
    h2o_evloop_t *loop = h2o_evloop_create();
    dbs_error err = {0};
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.pipeline_depth = g_opt->pipeline > 0 ? g_opt->pipeline : 1;
    lc.max_connections = g_loop_connections;
    if (g_opt->queue_max > 0)
        lc.queue_max = g_opt->queue_max;
    t->dl = dbs_loop_open(g_pool, &lc, &err);
    if (!t->dl) {
        fprintf(stderr, "tfb-server: loop %d: %s\n", t->index, err.message);
        kill(getpid(), SIGTERM); /* main, in tfb_wait_signal, stops the rest */
        return NULL;
    }
    h2o_context_init(&t->ctx, loop, &g_config);
    t->accept.ctx = &t->ctx;
    t->accept.hosts = g_config.hosts;
    int dbfd = dup(dbs_loop_fd(t->dl));
    if (dbfd < 0) {
        fprintf(stderr, "tfb-server: loop %d: dup: %s\n", t->index, strerror(errno));
        kill(getpid(), SIGTERM);
        dbs_loop_close(t->dl);
        return NULL;
    }
    t->dbsock = h2o_evloop_socket_create(loop, dbfd, H2O_SOCKET_FLAG_DONT_READ);
    t->dbsock->data = t;
    h2o_socket_read_start(t->dbsock, on_db_readable);
    t->listener = h2o_evloop_socket_create(loop, t->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    h2o_socket_read_start(t->listener, on_accept);
    t->ok = 1;

    while (!atomic_load_explicit(&tfb_stop, memory_order_relaxed)) {
        int to = dbs_loop_timeout_ms(t->dl);
        if (to < 0 || to > GONE_CHECK_MS)
            to = GONE_CHECK_MS;
        h2o_evloop_run(loop, to);
        /* Timers that fell due, and units the handlers submitted. */
        if (dbs_loop_timeout_ms(t->dl) == 0)
            dbs_loop_run(t->dl);
        check_gone(t);
        check_deadlines(t);
        if (t->accept_resume_ms && now_ms() >= t->accept_resume_ms) {
            t->accept_resume_ms = 0;
            h2o_socket_read_start(t->listener, on_accept);
        }
    }

    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    /* Units still running end with DBS_ECANCELED: their clients get 503. */
    dbs_loop_close(t->dl);
    t->dl = NULL;
    h2o_socket_read_stop(t->dbsock);
    h2o_socket_close(t->dbsock);
    /* Flush the answers just queued. The HTTP connections still open stay
     * as they are: h2o 2.2 has no call that closes them, and its context
     * cannot be disposed with them open. The process exits next; the
     * loop and context stay reachable from g_threads until then. */
    for (int i = 0; i < 4; i++)
        h2o_evloop_run(loop, 10);
    return NULL;
}

int tfb_run_loop(dbs_pool *pool, const tfb_options *opt)
{
    g_pool = pool;
    g_opt = opt;
    /* Each loop may hold its share of the pool's kept connections
     * (DB_POOL_SIZE), so that one busy loop does not starve the others,
     * and no loop leans on overflow connections, which are closed when
     * given back. */
    g_loop_connections = opt->pool_size / opt->threads;
    if (g_loop_connections < 1)
        g_loop_connections = 1;

    g_conn_limit = tfb_connection_limit(opt, 4);
    h2o_config_init(&g_config);
    /* No route takes a body, and h2o reads one whole into memory before the
     * handler sees the request (up to 1 GiB by default, on every
     * connection): past this it answers 413. */
    g_config.max_request_entity_size = 4096;
    /* HTTP/1.1 only, as the benchmark speaks it: a connection's requests
     * then end (lslot) before its socket closes, which the deadlines'
     * bookkeeping relies on, and one connection is one request at a time. */
    g_config.http1.upgrade_to_http2 = 0;
    g_config.server_name = h2o_iovec_init(H2O_STRLIT(TFB_SERVER));
    h2o_hostconf_t *host =
        h2o_config_register_host(&g_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof *h);
    h->on_req = on_req;

    lthread *ts = g_threads = calloc((size_t)opt->threads, sizeof *ts);
    if (!ts) {
        fprintf(stderr, "tfb-server: out of memory\n");
        return 1;
    }
    int port = opt->port, rc = 0, started = 0;
    for (int i = 0; i < opt->threads; i++)
        ts[i].listen_fd = -1;
    for (int i = 0; i < opt->threads; i++) {
        ts[i].index = i;
        ts[i].listen_fd = tfb_listen(opt->host, &port, 1);
        if (ts[i].listen_fd < 0) {
            rc = 1;
            break;
        }
    }
    for (int i = 0; rc == 0 && i < opt->threads; i++) {
        if (pthread_create(&ts[i].tid, NULL, loop_main, &ts[i])) {
            fprintf(stderr, "tfb-server: cannot start loop thread %d\n", i);
            rc = 1;
            break;
        }
        started++;
    }
    if (rc == 0) {
        printf("tfb-server: mode loop, %d loops, pipeline depth %d, %d connections a loop, "
               "%u HTTP connections at most, listening on %s:%d\n",
               opt->threads, opt->pipeline, g_loop_connections, g_conn_limit, opt->host, port);
        fflush(stdout);
        tfb_wait_signal();
    }
    /* The pool first, as in threads mode: until a loop sees tfb_stop (up
     * to a check's period) its handlers go on submitting units, which
     * now fail with DBS_ECLOSED (503) instead of starting a statement;
     * the loops then cancel the units in flight as they close. */
    dbs_pool_shutdown(pool, 0);
    atomic_store(&tfb_stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(ts[i].tid, NULL);
    for (int i = 0; i < opt->threads; i++)
        if (!ts[i].ok && ts[i].listen_fd >= 0)
            close(ts[i].listen_fd); /* never handed to h2o */
    return rc;
}
