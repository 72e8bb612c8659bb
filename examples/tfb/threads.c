/* tfb-server --mode threads: the blocking API (dbs_transact) on
 * libmicrohttpd's thread pool. Each request runs to completion on the
 * HTTP thread that read it, database round trips included, as most C
 * servers on a blocking client are written; it is the baseline the loop
 * mode is measured against. libmicrohttpd rather than h2o with a thread
 * pool beside it: the blocking call then needs no hand-off between
 * threads at all, and libmicrohttpd keeps the connections that wait for a
 * thread in its own epoll set without a thread each. */
#include "tfb.h"

#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Whether the client on fd closed (or half-closed) its end. A blocking
 * call cannot be cancelled, but work for a client that left need not
 * start: without this look, requests whose clients left while they waited
 * for a thread (a client that sends and closes, over and over) would each
 * run in full, ahead of the clients still waiting. */
static int client_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static int gone_error(dbs_error *err)
{
    err->code = DBS_ECANCELED;
    snprintf(err->message, sizeof err->message, "the client went away");
    return DBS_ECANCELED;
}

typedef struct worlds_arg {
    tfb_world *w;
    int n;
    int fd; /* the client's socket, looked at between statements */
} worlds_arg;

/* Reads n random worlds, one statement each; stops when the client went
 * away. Safe to run again. */
static int read_worlds(dbs_session *s, void *arg, dbs_error *err)
{
    worlds_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        if (client_gone(a->fd))
            return gone_error(err);
        dbs_value id = DBS_INT(tfb_random_id());
        dbs_rows *r = dbs_query(s, TFB_SQL_WORLD, &id, 1, err);
        if (!r)
            return err->code;
        int rc = dbs_rows_next(r, err);
        if (rc == 1) {
            a->w[i].id = (int32_t)dbs_rows_int(r, 0);
            a->w[i].rnd = (int32_t)dbs_rows_int(r, 1);
        } else if (rc == 0) {
            snprintf(err->message, sizeof err->message, "world %lld: no such row (run --setup)",
                     (long long)id.i);
            err->code = rc = DBS_ESQL;
        }
        dbs_rows_close(r);
        if (rc < 0)
            return rc;
    }
    return 0;
}

typedef struct update_arg {
    const char *sql;
    const dbs_value *params;
    size_t n;
} update_arg;

static int write_worlds(dbs_session *s, void *arg, dbs_error *err)
{
    update_arg *a = arg;
    return dbs_exec(s, a->sql, a->params, a->n, err) < 0 ? err->code : 0;
}

typedef struct fortunes_arg {
    tfb_fortune f[64];
    char *own[64]; /* the messages f points at */
    int n;
} fortunes_arg;

static void fortunes_free(fortunes_arg *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->own[i]);
    a->n = 0;
}

static int read_fortunes(dbs_session *s, void *arg, dbs_error *err)
{
    fortunes_arg *a = arg;
    fortunes_free(a); /* a retry starts over */
    dbs_rows *r = dbs_query(s, TFB_SQL_FORTUNES, NULL, 0, err);
    if (!r)
        return err->code;
    int rc;
    while ((rc = dbs_rows_next(r, err)) == 1) {
        if (a->n == (int)(sizeof a->f / sizeof a->f[0]) - 1) {
            snprintf(err->message, sizeof err->message, "fortune: more than %d rows",
                     a->n);
            err->code = rc = DBS_ESQL;
            break;
        }
        size_t len = 0;
        const char *t = dbs_rows_text(r, 1, &len);
        char *m = malloc(len + 1);
        if (!m) {
            err->code = rc = DBS_ENOMEM;
            break;
        }
        memcpy(m, t ? t : "", len);
        m[len] = '\0';
        a->f[a->n].id = (int32_t)dbs_rows_int(r, 0);
        a->own[a->n] = m;
        a->f[a->n].msg = m;
        a->f[a->n].len = len;
        a->n++;
    }
    dbs_rows_close(r);
    return rc < 0 ? rc : 0;
}

static int do_sleep(dbs_session *s, void *arg, dbs_error *err)
{
    dbs_value p = DBS_REAL(*(double *)arg);
    dbs_rows *r = dbs_query(s, TFB_SQL_SLEEP, &p, 1, err);
    if (!r)
        return err->code;
    int rc = dbs_rows_next(r, err);
    dbs_rows_close(r);
    return rc < 0 ? rc : 0;
}

static char empty[1];

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, const char *type,
                                 tfb_buf *b)
{
    struct MHD_Response *r;
    if (b->oom) {
        tfb_buf_free(b);
        status = 500;
        type = "text/plain";
        r = MHD_create_response_from_buffer(0, empty, MHD_RESPMEM_PERSISTENT);
    } else if (b->p) {
        r = MHD_create_response_from_buffer(b->len, b->p, MHD_RESPMEM_MUST_FREE);
        b->p = NULL;
    } else {
        r = MHD_create_response_from_buffer(0, empty, MHD_RESPMEM_PERSISTENT);
    }
    if (!r)
        return MHD_NO;
    /* libmicrohttpd adds Date (and Content-Length) itself. */
    MHD_add_response_header(r, "Server", TFB_SERVER);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int rc, const dbs_error *err)
{
    tfb_buf b = {0};
    tfb_buf_str(&b, dbs_strerror(rc));
    tfb_buf_str(&b, ": ");
    tfb_buf_str(&b, err->message);
    tfb_buf_str(&b, "\n");
    return send_body(c, (unsigned)tfb_status_of(rc), "text/plain; charset=utf-8", &b);
}

typedef struct arg_find {
    const char *name;
    const char *val;
    size_t len;
} arg_find;

static enum MHD_Result arg_match(void *cls, enum MHD_ValueKind kind, const char *key,
                                 size_t key_size, const char *value, size_t value_size)
{
    arg_find *a = cls;
    (void)kind;
    if (key_size != strlen(a->name) || memcmp(key, a->name, key_size))
        return MHD_YES;
    a->val = value;
    a->len = value ? value_size : 0;
    return MHD_NO;
}

/* name's first value, decoded, as tfb_query_arg reads loop mode's: the
 * name compared exactly (MHD_lookup_connection_value ignores case), the
 * value with its length (a %00 in it is a byte, not its end). */
static const char *arg_of(struct MHD_Connection *c, const char *name, size_t *len)
{
    arg_find a = {name, NULL, 0};
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, arg_match, &a);
    *len = a.len;
    return a.val;
}

/* --- deadlines ------------------------------------------------------------
 * libmicrohttpd's connection timeout restarts on every byte that comes or
 * goes, so a client that sends its request a byte every few seconds, or
 * reads its answer so, keeps its connection for good, and enough of them
 * keep every connection the limit allows. Each connection has deadlines
 * of its own instead, of TFB_IDLE_TIMEOUT_S each, that no traffic moves:
 * from its accept or its last answer to its next request read whole
 * (headers and body), and from the handler's return to the answer
 * written. While the handler runs it has none: the database work has its
 * own bounds. A thread looks once a second and shuts a late connection's
 * socket down; libmicrohttpd sees the end and closes it. */

typedef struct tconn tconn;
struct tconn {
    int fd;
    int busy;           /* in the handler */
    uint64_t since_ms;  /* the deadline runs from then (busy: unused) */
    int cut;
    tconn *prev, *next;
};

/* Guards the list and every tconn's fields. Held across a shutdown, and
 * taken by libmicrohttpd's close notice before it closes the descriptor,
 * so a descriptor shut down is always still the connection's. */
static pthread_mutex_t g_conns_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_sweep_cv = PTHREAD_COND_INITIALIZER;
static tconn *g_conns;
static int g_sweep_stop;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    tconn *t = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = ci ? calloc(1, sizeof *t) : NULL;
        *socket_context = t;
        if (!t)
            return; /* out of memory: libmicrohttpd's own timeout still holds */
        t->fd = ci->connect_fd;
        pthread_mutex_lock(&g_conns_lock);
        t->since_ms = now_ms();
        t->next = g_conns;
        if (g_conns)
            g_conns->prev = t;
        g_conns = t;
        pthread_mutex_unlock(&g_conns_lock);
        return;
    }
    if (!t)
        return;
    pthread_mutex_lock(&g_conns_lock);
    if (t->prev)
        t->prev->next = t->next;
    else
        g_conns = t->next;
    if (t->next)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&g_conns_lock);
    free(t);
    *socket_context = NULL;
}

static tconn *tconn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* busy: the handler starts; otherwise a deadline starts now. */
static void tconn_mark(struct MHD_Connection *c, int busy)
{
    tconn *t = tconn_of(c);
    if (!t)
        return;
    pthread_mutex_lock(&g_conns_lock);
    t->busy = busy;
    t->since_ms = now_ms();
    pthread_mutex_unlock(&g_conns_lock);
}

/* The answer is written (or the request ended otherwise): the next
 * request's deadline starts. */
static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)state;
    (void)toe;
    tconn_mark(c, 0);
}

static void *sweep_main(void *arg)
{
    (void)arg;
    const uint64_t bound = (uint64_t)TFB_IDLE_TIMEOUT_S * 1000u;
    pthread_mutex_lock(&g_conns_lock);
    while (!g_sweep_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&g_sweep_cv, &g_conns_lock, &ts);
        uint64_t now = now_ms();
        for (tconn *t = g_conns; t; t = t->next)
            if (!t->busy && !t->cut && now - t->since_ms > bound) {
                t->cut = 1;
                shutdown(t->fd, SHUT_RDWR);
            }
    }
    pthread_mutex_unlock(&g_conns_lock);
    return NULL;
}

typedef struct threads_ctx {
    const tfb_options *opt;
    dbs_pool *pool;
} threads_ctx;

static enum MHD_Result answer(const threads_ctx *tc, struct MHD_Connection *c,
                              const char *url)
{
    const tfb_options *opt = tc->opt;
    dbs_pool *pool = tc->pool;
    tfb_buf b = {0};
    dbs_error err = {0};
    size_t len;
    const char *v;
    int rc;
    enum tfb_route route = tfb_route_of(url, strlen(url), opt->test_routes);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    /* No database work for a client that already left: close its
     * connection instead. */
    if (route != TFB_JSON && route != TFB_PLAINTEXT && route != TFB_NONE && client_gone(fd))
        return MHD_NO;
    switch (route) {
    case TFB_JSON:
        tfb_body_json(&b);
        return send_body(c, 200, "application/json", &b);
    case TFB_PLAINTEXT:
        tfb_buf_str(&b, "Hello, World!");
        return send_body(c, 200, "text/plain", &b);
    case TFB_DB: {
        tfb_world w;
        worlds_arg a = {&w, 1, fd};
        if ((rc = dbs_transact_ro(pool, NULL, read_worlds, &a, &err)) < 0)
            return rc == DBS_ECANCELED ? MHD_NO : send_error(c, rc, &err);
        tfb_body_world(&b, &w);
        return send_body(c, 200, "application/json", &b);
    }
    case TFB_QUERIES:
    case TFB_UPDATES: {
        int upd = route == TFB_UPDATES;
        v = arg_of(c, "queries", &len);
        tfb_world w[TFB_MAX_QUERIES];
        worlds_arg a = {w, tfb_queries(v, len), fd};
        if ((rc = dbs_transact_ro(pool, NULL, read_worlds, &a, &err)) < 0)
            return rc == DBS_ECANCELED ? MHD_NO : send_error(c, rc, &err);
        if (upd) {
            tfb_buf ids = {0}, rnds = {0};
            for (int i = 0; i < a.n; i++)
                w[i].rnd = tfb_random_id();
            tfb_update_arrays(w, a.n, &ids, &rnds);
            dbs_value params[2] = {DBS_TEXT(ids.p), DBS_TEXT(rnds.p)};
            update_arg u = {TFB_SQL_UPDATE, params, 2};
            if (ids.oom || rnds.oom) {
                err.code = rc = DBS_ENOMEM;
            } else {
                rc = dbs_transact(pool, NULL, write_worlds, &u, &err);
            }
            tfb_buf_free(&ids);
            tfb_buf_free(&rnds);
            if (rc < 0)
                return send_error(c, rc, &err);
        }
        tfb_body_worlds(&b, w, a.n);
        return send_body(c, 200, "application/json", &b);
    }
    case TFB_FORTUNES: {
        fortunes_arg *a = calloc(1, sizeof *a);
        if (!a) {
            err.code = DBS_ENOMEM;
            return send_error(c, DBS_ENOMEM, &err);
        }
        if ((rc = dbs_transact_ro(pool, NULL, read_fortunes, a, &err)) < 0) {
            fortunes_free(a);
            free(a);
            return send_error(c, rc, &err);
        }
        tfb_body_fortunes(&b, a->f, a->n);
        fortunes_free(a);
        free(a);
        return send_body(c, 200, "text/html; charset=utf-8", &b);
    }
    case TFB_SLEEP: {
        v = arg_of(c, "s", &len);
        double secs = tfb_seconds(v, len);
        if ((rc = dbs_transact_ro(pool, NULL, do_sleep, &secs, &err)) < 0)
            return send_error(c, rc, &err);
        tfb_buf_str(&b, "slept\n");
        return send_body(c, 200, "text/plain", &b);
    }
    case TFB_NONE:
    default:
        tfb_buf_str(&b, "not found\n");
        return send_body(c, 404, "text/plain", &b);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state)
{
    static int seen;
    (void)version;
    (void)upload;
    (void)method;
    /* Answered on the second call, once the whole request is in: a
     * response queued earlier would close the connection. */
    if (!*state) {
        *state = &seen;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* no route takes a body */
        return MHD_YES;
    }
    tconn_mark(c, 1);
    enum MHD_Result ok = answer(cls, c, url);
    tconn_mark(c, 0); /* the answer's deadline */
    return ok;
}

int tfb_run_threads(dbs_pool *pool, const tfb_options *opt)
{
    int port = opt->port;
    int fd = tfb_listen(opt->host, &port, 0);
    if (fd < 0)
        return 1;
    threads_ctx tc = {opt, pool};
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO, 0, NULL, NULL,
        on_request, &tc, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)opt->threads, MHD_OPTION_CONNECTION_LIMIT, tfb_connection_limit(opt, 1),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)TFB_IDLE_TIMEOUT_S,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "tfb-server: libmicrohttpd did not start (out of threads?)\n");
        close(fd);
        return 1;
    }
    pthread_t sweeper;
    int swept = pthread_create(&sweeper, NULL, sweep_main, NULL) == 0;
    if (!swept) {
        fprintf(stderr, "tfb-server: cannot start the deadline thread\n");
        MHD_stop_daemon(d);
        close(fd);
        return 1;
    }
    printf("tfb-server: mode threads, %d HTTP threads, listening on %s:%d\n", opt->threads,
           opt->host, port);
    fflush(stdout);
    tfb_wait_signal();
    /* The pool first: libmicrohttpd's threads go on with the requests
     * they already read (a batch of connections each) before they see
     * the stop, and each would start its statement; after the shutdown
     * they fail at once with DBS_ECLOSED (503), and only the statements
     * already running hold the stop up. main closes the pool. */
    dbs_pool_shutdown(pool, 0);
    pthread_mutex_lock(&g_conns_lock);
    g_sweep_stop = 1;
    pthread_cond_signal(&g_sweep_cv);
    pthread_mutex_unlock(&g_conns_lock);
    pthread_join(sweeper, NULL);
    MHD_stop_daemon(d);
    close(fd);
    return 0;
}
