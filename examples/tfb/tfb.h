/* tfb-server: the TechEmpower Framework Benchmarks test types on dbscope
 * (docs/tfb.md). Shared between the two modes: the event-loop mode on
 * h2o's evloop with dbs_loop (loop.c) and the blocking mode on
 * libmicrohttpd's thread pool with dbs_transact (threads.c). */
#ifndef TFB_H
#define TFB_H

#include <dbscope.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TFB_SERVER "dbscope-tfb"
#define TFB_MAX_QUERIES 500
#define TFB_WORLD_ROWS 10000
/* Seconds an HTTP connection may stay silent (idle between requests, or
 * sending a request's headers) before it is closed: h2o's default
 * (H2O_DEFAULT_HTTP1_REQ_TIMEOUT_IN_SECS), which loop mode keeps, and
 * libmicrohttpd's connection timeout in threads mode. Without it, idle
 * connections past the process's descriptor limit stop the server from
 * accepting anyone for as long as they stay open. */
#define TFB_IDLE_TIMEOUT_S 10

/* The statements, as every mode sends them. */
#define TFB_SQL_WORLD "SELECT id, randomnumber FROM world WHERE id = $1"
#define TFB_SQL_FORTUNES "SELECT id, message FROM fortune"
#define TFB_SQL_UPDATE                                                         \
    "UPDATE world SET randomnumber = v.r FROM (SELECT unnest($1::int[]) AS id, "  \
    "unnest($2::int[]) AS r) AS v WHERE world.id = v.id"
#define TFB_SQL_SLEEP "SELECT pg_sleep($1)"

enum tfb_route {
    TFB_NONE, TFB_JSON, TFB_PLAINTEXT, TFB_DB, TFB_QUERIES, TFB_FORTUNES, TFB_UPDATES,
    TFB_SLEEP
};

typedef struct tfb_options {
    const char *host;    /* --listen HOST */
    int port;            /* --listen :PORT */
    int threads;         /* loops (loop mode) or HTTP threads (threads mode) */
    int pipeline;        /* dbs_loop_config.pipeline_depth (loop mode) */
    int queue_max;       /* dbs_loop_config.queue_max (loop mode; 0: default) */
    int pool_size;       /* the pool's kept connections (DB_POOL_SIZE) */
    int max_overflow;    /* and its overflow (DB_MAX_OVERFLOW) */
    int test_routes;     /* --test-routes: /sleep */
    int verbose;
} tfb_options;

typedef struct tfb_world {
    int32_t id;
    int32_t rnd;
} tfb_world;

typedef struct tfb_fortune {
    int32_t id;
    const char *msg; /* not owned */
    size_t len;
} tfb_fortune;

/* A growable byte buffer; on allocation failure it stays failed (oom). */
typedef struct tfb_buf {
    char *p;
    size_t len, cap;
    int oom;
} tfb_buf;

void tfb_buf_add(tfb_buf *b, const char *s, size_t n);
void tfb_buf_str(tfb_buf *b, const char *s);
void tfb_buf_int(tfb_buf *b, int64_t v);
void tfb_buf_free(tfb_buf *b);

/* Set once SIGINT or SIGTERM came (tfb_wait_signal): the loop threads
 * stop serving and return. Read and written from any thread. */
extern atomic_int tfb_stop;

/* Blocks until SIGINT or SIGTERM (which main blocks in every thread),
 * then sets tfb_stop. */
void tfb_wait_signal(void);

/* The route a path names (the path without its query string). */
enum tfb_route tfb_route_of(const char *path, size_t len, int test_routes);

/* ?queries= as the verifier wants it: a number clamped to 1..500, and 1
 * for a missing or empty value or anything that is not a number. val is
 * the raw value (may be NULL), len its length. */
int tfb_queries(const char *val, size_t len);

/* The value of the first argument called name in a query string (query,
 * qlen bytes, without the '?'), decoded as a form is (%XX, '+' a space),
 * names compared decoded and exactly, as both modes read arguments. buf
 * needs room for qlen bytes; the value is written there (not
 * NUL-terminated: it may hold a NUL byte) and *len is its length. NULL
 * when there is no such argument or it has no '='. */
const char *tfb_query_arg(const char *query, size_t qlen, const char *name, char *buf,
                          size_t *len);

/* /sleep?s=N: seconds, 0..3600 (0 for anything else). */
double tfb_seconds(const char *val, size_t len);

/* A random world id 1..10000 and a random number 1..10000, from a
 * per-thread generator. */
int32_t tfb_random_id(void);

/* Bodies. Each appends to b. */
void tfb_body_json(tfb_buf *b);
void tfb_body_world(tfb_buf *b, const tfb_world *w);
void tfb_body_worlds(tfb_buf *b, const tfb_world *w, int n);
/* Adds the request-time fortune, sorts by message and renders the page;
 * f must have room for n + 1 entries. */
void tfb_body_fortunes(tfb_buf *b, tfb_fortune *f, int n);

/* The bulk UPDATE for the worlds in w (n of them): sorts a copy by id,
 * gives duplicated ids one value (written back into w, so the response
 * shows what was stored), and writes the two arrays TFB_SQL_UPDATE takes
 * as PostgreSQL array text ("{1,2,3}") into ids and rnds. One statement
 * with two parameters whatever n is: prepared once per connection, and
 * within the driver's parameter limit. */
void tfb_update_arrays(tfb_world *w, int n, tfb_buf *ids, tfb_buf *rnds);

/* --setup: creates and fills the toolset's tables where absent. */
int tfb_setup(dbs_pool *pool, dbs_error *err);

/* HTTP status for a failed unit: 503 when the server is short of
 * connections (DBS_EBUSY, DBS_ETIMEOUT, DBS_EUNAVAILABLE) or stopping
 * (DBS_ECANCELED, DBS_ECLOSED), 500 otherwise. */
int tfb_status_of(int rc);

/* Opens the listening socket(s): reuseport set, nonblocking. *port is
 * updated when it was 0. -1 on failure (message on stderr). */
int tfb_listen(const char *host, int *port, int reuseport);

/* HTTP connections a mode may hold at once: what the descriptor limit
 * (RLIMIT_NOFILE) leaves after two a pool connection (the connection and
 * a cancel request's socket), per_thread a thread (threads mode: its
 * epoll set; loop mode: its listener, epoll set and dbs_loop descriptors)
 * and 32 more; at least one a thread, at most 65536. Past it a new
 * connection is not served (threads mode leaves it in the backlog, loop
 * mode refuses it), so the process never runs out of descriptors and the
 * pool can always connect. */
unsigned tfb_connection_limit(const tfb_options *opt, int per_thread);

int tfb_run_threads(dbs_pool *pool, const tfb_options *opt);
int tfb_run_loop(dbs_pool *pool, const tfb_options *opt);

#endif
