/*
 * PRIVATE to dbscope: shared between its source files, never installed.
 *
 * Locking: each pool has one mutex, pool->mu, guarding the fields marked
 * [mu] (the connection layer's counters and breaker, shutdown), and
 * DBS__SHARDS shard locks (dbs__lock), each guarding its shard's fields and
 * the sessions linked to it ([shard]); its resource pool (pool->rp) has
 * locks of its own (respool.h). The order is pool->mu, then any shard
 * (shards in index order), then the resource pool's. The checkout and
 * checkin fast paths take only their own shard and its parking slot. No
 * lock is held across I/O (connect, ping, statements, close) nor while
 * calling on_event.
 */
#ifndef DBS_INTERNAL_H
#define DBS_INTERNAL_H

#include "base.h"
#include "breaker.h"
#include "dbscope.h"
#include "driver.h"
#include "respool.h"

#include <locale.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#if defined(__GNUC__) || defined(__clang__)
#define DBS__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DBS__PRINTF(a, b)
#endif

/* ---- error.c ---- */

/* Fills err (if not NULL) with code and a formatted message, clears sqlstate,
 * and returns code. Never allocates, so it is safe on out-of-memory paths. */
int dbs__err(dbs_error *err, int code, const char *fmt, ...) DBS__PRINTF(3, 4);
/* Copies a SQLSTATE into err (if not NULL). */
void dbs__err_sqlstate(dbs_error *err, const char *sqlstate);
/* 1 for a failure of enum dbs_code (one dbs_strerror knows), 0 for DBS_OK,
 * positive values and anything else. */
bool dbs__code_known(int code);

/* ---- cancellation (pthread_cancel; cancel.c, base.h) ----
 * No dbscope call is a cancellation point: a cancel acts at the caller's
 * next cancellation point after the call, with no lock held, no waiter
 * left in a queue, no connection half-way through an exchange, no SQLite
 * mutex held. The thread's exit then ends its open sessions (session.c).
 *
 * Each public call that can reach a cancellation point opens with
 * DBS__IN_LIB, which only marks the thread inside dbscope; the points
 * themselves disable cancellation the first time one is reached within
 * the outermost call (dbs__cancel_defer), and that call's exit, on every
 * path out, gives the program its state back if one was. A call sure to
 * reach one (dbs_exec, dbs_query, dbs_session_commit_close,
 * dbs_transact, dbs_session_transact) or rare
 * opens with DBS__NO_CANCEL instead, which defers at once: the same one
 * change, made where the call has a frame anyway. These defer, and every
 * path to a cancellation point inside dbscope goes through one:
 *   - the driver's methods: p->drv is cancel.c's copy of the backend's
 *     table, which defers in every method that may block or do I/O (a
 *     connect, a statement, commit, rollback, reset, ping, the socket look
 *     of pre_ping, close, forget, interrupt, the event loop's send, step
 *     and cancel); the backends' own sleeps, name lookups, fsyncs,
 *     getrandom and the credential provider run inside them;
 *   - a row's next and close where they step, reset or finalize a
 *     statement: SQLite's (driver_sqlite.c, sq_next past the row its
 *     query read, sq_rows_close), the only backend whose rows are not
 *     held in memory (driver.h, dbs__rows_ops), reached through
 *     dbs_rows_next (query.c) and dbs__rows_free (session.c) on a
 *     program's thread (the replica monitors and the loop's workers are
 *     dbscope's own; a loop's rows are read whole and only freed);
 *   - the wait for a connection or a turn (respool_wait.c), the sleeps
 *     (dbs__sleep_ms: dbs_transact's back-off), the events (on_event and
 *     the default log line: dbs__emit_event) and every other line to
 *     stderr (dbs__log_line), the event loop's wake-up writes (loop.c:
 *     mbox_post, unit_complete);
 *   - the rest (joins, drains, epoll_wait, closing descriptors, the fork
 *     gate) is reached only from calls that defer at once (dbs_pool_open,
 *     _close, _shutdown, _ping, _wait_ready, _after_fork_child,
 *     dbs_loop_open, _run, _close) or on dbscope's own threads.
 * Nothing else inside dbscope waits or does I/O: mutexes, dbs__lock and
 * sem_post are no cancellation points. A call that reaches none (a
 * checkout of a parked connection, the checkin of a session that sent
 * nothing, a row already read) changes no state. Calls made from inside dbscope (on_event's,
 * a credential provider's) are not outermost and give nothing back.
 * The program's own code that a call runs at a point where a frame
 * unwound by a cancel leaves everything whole (dbs_transact's work, a
 * loop's unit callbacks) runs between dbs__cancel_user and
 * dbs__cancel_lib: with the program's state, and on the program's side,
 * so its own calls to dbscope are outermost again; a cancel there leaves
 * the thread outside dbscope, as its exit handler wants, and the unwind
 * puts back what the call set for it (below). on_event and the
 * credential provider run inside the library's steps and stay deferred. */
static inline unsigned char dbs__lib_enter(void)
{
    unsigned char was = dbs__cx_state;
    if (was == DBS__CX_OUT)
        dbs__cx_state = DBS__CX_IN;
    return was;
}
static inline void dbs__lib_leave(const unsigned char *was)
{
    if (*was == DBS__CX_OUT) {
        if (dbs__cx_state == DBS__CX_OFF)
            dbs__cancel_give_back();
        dbs__cx_state = DBS__CX_OUT;
    }
}
#define DBS__IN_LIB(was)                                                       \
    unsigned char was __attribute__((cleanup(dbs__lib_leave), unused)) = dbs__lib_enter()
/* DBS__IN_LIB and dbs__cancel_defer at once, for the calls sure to reach
 * a point (a statement) or rare: the change inline, where the call has a
 * frame anyway. */
static inline unsigned char dbs__lib_enter_deferred(void)
{
    unsigned char was = dbs__cx_state;
    if (was != DBS__CX_OFF) {
        (void)pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &dbs__cx_saved);
        dbs__cx_state = DBS__CX_OFF;
    }
    return was;
}
#define DBS__NO_CANCEL(was)                                                    \
    unsigned char was __attribute__((cleanup(dbs__lib_leave), unused)) = dbs__lib_enter_deferred()
/* was: what DBS__IN_LIB of the call running the program's code saw. A
 * call made from inside dbscope leaves the state as the step that made
 * it had it. */
static inline void dbs__cancel_user(unsigned char was)
{
    if (was == DBS__CX_OUT) {
        if (dbs__cx_state == DBS__CX_OFF)
            dbs__cancel_give_back();
        dbs__cx_state = DBS__CX_OUT;
    }
}
static inline void dbs__cancel_lib(unsigned char was)
{
    if (was == DBS__CX_OUT)
        dbs__cx_state = DBS__CX_IN;
}
/* ---- unwinding (a cancel or pthread_exit in the program's code) ----
 * The frames of the public calls that run the program's code (session.c:
 * dbs_transact's and nested units' work; loop.c: dbs_loop_run's unit
 * callbacks; stats.c: dbs_pool_sessions' fn) put back what the call set
 * for the time of the callback through cleanup attributes, and those
 * files are built with -fexceptions (CMakeLists.txt), so the unwind of a
 * cancel, a pthread_exit or a C++ exception runs them too: before any
 * cleanup handler or destructor of the program's outside the call, which
 * may call dbscope, runs. DBS__IN_LIB's and DBS__NO_CANCEL's cleanups run
 * then as well, and give the program back its cancel state. With zero-cost
 * unwinding tables that costs the normal path nothing but the check a
 * cleanup makes; pthread_cleanup_push would cost each call a setjmp.
 *
 * dbs__unwound: in the cleanup itself (always inlined: in the frame the
 * unwind landed in), before any call on the unwind's path.
 * AddressSanitizer keeps the redzones of the unwound frames marked (it
 * clears them only before a call that never returns), and every call made
 * from the landing frame runs on that part of the stack; even
 * __asan_handle_no_return does (its own sigaltstack buffer lies there).
 * So the part of the thread's stack below the landing frame is cleared
 * directly, its low end found once a thread (dbs__unwind_note, at the
 * frame's setup, where nothing is marked wrongly yet). Nothing in other
 * builds. */
#if defined(__SANITIZE_ADDRESS__)
#define DBS__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DBS__ASAN 1
#endif
#endif
#ifdef DBS__ASAN
#include <sanitizer/asan_interface.h>
extern _Thread_local char *dbs__stack_lo;
void dbs__stack_lo_find(void);
static inline __attribute__((always_inline)) void dbs__unwind_note(void)
{
    if (!dbs__stack_lo)
        dbs__stack_lo_find();
}
static inline __attribute__((always_inline)) void dbs__unwound(void)
{
    char *here = __builtin_frame_address(0);
    if (dbs__stack_lo && here > dbs__stack_lo)
        __asan_unpoison_memory_region(dbs__stack_lo, (size_t)(here - dbs__stack_lo));
}
#else
static inline void dbs__unwind_note(void)
{
}
static inline void dbs__unwound(void)
{
}
#endif
/* At a thread's exit (session.c): a cancel or pthread_exit in the
 * program's code left the thread outside; one in on_event may not have,
 * and nothing of that call will return. */
static inline void dbs__cancel_thread_exit(void)
{
    dbs__cx_state = DBS__CX_OUT;
}
/* p->drv: real's methods, those that may reach a cancellation point
 * deferring first. */
const dbs__driver *dbs__cancel_driver(const dbs__driver *real);
/* One line to stderr (a refusal, a default event log line), deferred. */
void dbs__log_line(const char *fmt, ...) DBS__PRINTF(1, 2);

/* ---- abandonable waits (stop.c; set by housekeeper.c, replica.c) ----
 * The stop flag of the pool's own thread running here (the housekeeper,
 * a replica monitor), NULL on every other thread. Once it is set, the
 * drivers' waits on this thread (a connect, a ping, a name lookup) end
 * early and fail, and what they were doing is closed, never handed out:
 * so dbs_pool_close can join the thread at once, whatever server it was
 * waiting for. A request's thread has none: its waits run their bounds. */
extern _Thread_local const atomic_bool *dbs__thread_stop;
/* The longest a wait sleeps between looks at dbs__thread_stop. */
enum { DBS__STOP_SLICE_MS = 50 };
static inline bool dbs__stopping(void)
{
    const atomic_bool *s = dbs__thread_stop;
    return s && atomic_load_explicit(s, memory_order_acquire);
}

/* ---- resolve.c ---- */

/* Resolves host (a name or a numeric address) for TCP within deadline_ns
 * (CLOCK_MONOTONIC; <= 0: no bound) into out: up to max_addrs numeric
 * addresses, comma-separated, in getaddrinfo's order, each once. A lookup
 * still running at the deadline is left to finish on its own thread, which
 * frees everything. DBS_ECONNECT when it fails or runs out of time (a name
 * that does not exist included: DNS may be down or late), message naming
 * the lookup. Any thread; blocks at most until the deadline. */
int dbs__resolve(const char *host, const char *port, int64_t deadline_ns, char *out,
                 size_t cap, int max_addrs, dbs_error *err);

/* ---- histogram.c ---- */

#define DBS__HIST_SUB 8
#define DBS__HIST_BUCKETS (DBS__HIST_SUB * 40)

typedef struct dbs__hist {
    _Atomic uint64_t b[DBS__HIST_BUCKETS];
    _Atomic uint64_t sum_us, max_us;
} dbs__hist;

typedef struct dbs__hist_snap {
    uint64_t b[DBS__HIST_BUCKETS];
    uint64_t count, sum_us, max_us;
} dbs__hist_snap;

/* Records one duration. Writers of one histogram must be serialised (the
 * pool calls it with p->mu held); readers need no lock. */
void dbs__hist_add(dbs__hist *h, int64_t us);
/* Copies the histogram (no lock; see histogram.c for what that means). */
void dbs__hist_read(dbs__hist *h, dbs__hist_snap *out);
/* Adds the histogram into acc (no lock, as dbs__hist_read). */
void dbs__hist_merge(dbs__hist *h, dbs__hist_snap *acc);
/* The q-quantile (0 < q <= 1) in µs: its bucket's upper bound, capped by
 * the maximum seen. 0 when empty. */
int64_t dbs__hist_percentile(const dbs__hist_snap *s, double q);
/* Largest value that falls in bucket idx. */
uint64_t dbs__hist_upper(int idx);

/* ---- observe.c ---- */

/* The error table's size: a class per dbs_code (index -code; 0 for codes
 * past the table) and a column per SQLSTATE of a fixed list, one for none
 * and one for every other (observe.c). */
#define DBS__ERR_CLASSES 24
#define DBS__ERR_STATES 52

/* dbs__hist_add for a histogram written by several threads at once:
 * atomic read-modify-writes. */
void dbs__hist_add_shared(dbs__hist *h, int64_t us);
/* The SQLSTATE of the last error made on this thread (dbs__err clears it,
 * dbs__err_sqlstate sets it, whether or not the caller passed an err), so
 * that the error table sees what the backend reported even when the
 * caller passed no dbs_error. "" when none. */
const char *dbs__thread_sqlstate(void);
/* Names for the exports: an error class (its dbs_code's, or "code_N" in
 * buf), a SQLSTATE column ("" none, "other"), a dbs_circuit_state. */
const char *dbs__err_class_name(int cls, char *buf, size_t len);
const char *dbs__err_state_name(int idx);
const char *dbs__circuit_name(int state);
/* The pool's own wait and use histograms, and its statement and connect
 * ones, summed over its shards. */
void dbs__hists_read(dbs_pool *p, dbs__hist_snap *wait, dbs__hist_snap *use);
/* The same from hists (DBS__SHARDS, as dbs__pool_snapshot took them; NULL:
 * read them now). */
struct dbs__shard_hists;
void dbs__hists_read_shards(dbs_pool *p, struct dbs__shard_hists *const *hists,
                            dbs__hist_snap *wait, dbs__hist_snap *use);
void dbs__hists_read_op(dbs_pool *p, dbs__hist_snap *op, dbs__hist_snap *create);

/* ---- config.c ---- */

/* Picks the backend for url and the string it connects with (malloc'd into
 * *conninfo). DBS_ECONFIG with a message naming what is wrong. No I/O. */
int dbs__url_parse(const char *url, const dbs__driver **drv, char **conninfo,
                   int *memory, dbs_error *err);
#ifdef DBSCOPE_WITH_PG
/* Splits a libpq connection string naming several hosts into one
 * single-host key=value string per host (every other option passed
 * through) and a "host:port" label each, all malloc'd; free them with
 * dbs__url_hosts_free. DBS_ECONFIG when libpq cannot parse it. No I/O. */
int dbs__url_split_hosts(const char *url, char ***targets, char ***labels, int *n,
                         dbs_error *err);
void dbs__url_hosts_free(char **targets, char **labels, int n);
#endif
/* Checks every numeric field for range; DBS_ECONFIG naming the field. */
int dbs__config_check(const dbs_config *cfg, dbs_error *err);

/* ---- redact.c ---- */

/* The options a mysql:// or mariadb:// URL takes (driver_mysql.c reads
 * them) and the one an sqlite: URL takes (config.c): one list for the
 * parsers and the redaction, which masks the value of every other key. */
#define DBS__MYSQL_URL_OPTIONS                                                 \
    "socket", "ssl_mode", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key",       \
        "ssl_cipher", "ssl_crl", "ssl_crlpath", "connect_timeout",             \
        "read_timeout", "write_timeout"
#define DBS__SQLITE_URL_OPTION "synchronous"

/* Whether key (len bytes) names a secret: an option libpq marks secret
 * (dispchar "*": password, sslpassword), a password or passphrase of
 * Connector/C or MySQL (password1..3 of multi-factor authentication), or
 * ODBC's pwd; without case, '-' or '_', percent-decoded if decode. */
bool dbs__secret_key(const char *key, size_t len, bool decode);
/* Writes url (a URL or key=value string) with every secret replaced by
 * "***": the password of any userinfo and the value of every secret key,
 * quoted, escaped or percent-encoded; the value of every key its parser
 * does not know, and such words after a secret as the rest of it. Works on the raw text, before and
 * whether or not any parser accepts it. Every echo of a URL or connection
 * string goes through it. */
void dbs__redact(const char *url, char *out, size_t n);
/* Replaces in msg (cap bytes) every copy of a secret that url carries, as
 * written, decoded (percent, quotes, backslashes), in pieces, and as libpq
 * reads it: for messages of parsers and servers that may quote it. */
void dbs__scrub_url_secrets(const char *url, char *msg, size_t cap);
/* Replaces every copy of needle (len bytes, NUL-terminated) in msg (cap
 * bytes) by "***", cutting msg where the mask would not fit. */
void dbs__scrub_text(char *msg, size_t cap, const char *needle, size_t len);

/* ---- conn.c: the connection layer ---- */

/* A pooled connection: the pool's item (item.data points back here) and
 * the driver's connection. Touched only by its holder (a session, or the
 * thread closing, checking or creating it), or by the resource pool while
 * idle or parked (item's own fields). */
typedef struct dbs__conn {
    dbs__rp_item item;     /* item.id: the connection's number; item.expires_ns:
                              the end of its lifetime (0 = never) */
    void *impl;
    int64_t created_ns;
} dbs__conn;

static inline dbs__conn *dbs__conn_of(dbs__rp_item *it)
{
    return it ? (dbs__conn *)it->data : NULL;
}

/* A shard of the session layer: each thread opens and closes its sessions
 * through its own shard of every pool (its ordinal modulo DBS__SHARDS), so
 * threads on different cores do not write a shared cache line. It holds the
 * sessions opened through it, their count (the pool is not freed while one
 * is open), and the counters and histograms of their checkouts and
 * checkins. The connection a thread gave back may be parked for it in the
 * resource pool's slot of the same token (respool.h), taken under this
 * shard's lock (this lock, then the slot's). */
#define DBS__SHARDS 32

typedef struct dbs__shard_hists {
    dbs__hist wait, use;
    dbs__hist op; /* statement durations: atomic adds (observe.c) */
} dbs__shard_hists;

typedef struct dbs__shard {
    _Alignas(64) dbs__lock mu;
    bool closed;                  /* [shard] the pool was closed */
    int n_sessions;               /* [shard] open, or opening */
    int n_holds;                  /* [shard] dbs_transact calls under way
                                     (dbs__pool_hold) */
    struct dbs_session *sessions; /* [shard] checked out, newest first */
    uint64_t acquired, released, leaks, leaks_recovered, slow_sessions; /* [shard] */
    dbs__shard_hists *hists;       /* [shard] made on first use; freed with the pool */
} dbs__shard;

#define DBS__POOL_MAGIC 0x44425350u    /* "DBSP" */
#define DBS__SESSION_MAGIC 0x44425353u /* "DBSS" */
#define DBS__ROWS_MAGIC 0x44425352u    /* "DBSR" */
#define DBS__DEAD_MAGIC 0xdeadbeefu    /* freed: best-effort use-after-close */

/* Memory a thread's exit left with a pool (an event loop's: loop.c),
 * freed with the pool's through free. */
typedef struct dbs__kept {
    struct dbs__kept *next;
    void (*free)(struct dbs__kept *k);
} dbs__kept;

struct dbs_pool {
    unsigned magic;
    dbs_config cfg;              /* copy; strings below are owned copies */
    enum dbs_pool_mode mode;     /* resolved: never AUTO */
    char *url;
    char *ctx_settings[3];
    const dbs__driver *drv;
    dbs__target target;

    /* The connections' slots, idle list, parking and waiters: the
     * resource pool owns them all (respool.h); nothing else writes them. */
    dbs__respool rp;

    pthread_mutex_t mu;
    /* all [mu] */
    bool closed;                  /* shut down: no new session */
    atomic_bool is_closed;        /* closed, for lock-free checks */
    bool close_called;            /* dbs_pool_close ran (owner ref dropped) */
    int n_draining;               /* sessions open or opening at shutdown
                                     that have not closed yet */
    pthread_cond_t drain_cv;      /* [mu] n_draining reached 0 */
    bool stopped;                 /* the first shutdown has stopped and
                                     joined the pool's threads (the
                                     housekeeper, the replica monitors,
                                     the replicas' own): a later call
                                     waits for it on stop_cv */
    pthread_cond_t stop_cv;       /* [mu] stopped was set */
    atomic_int refs;              /* 1 for the owner (dropped by
                                     dbs_pool_close), 1 for a running
                                     housekeeper, 1 for each
                                     dbs_pool_shutdown under way; at
                                     shutdown, the shards'
                                     n_sessions and n_holds move here */
    dbs__breaker breaker;         /* [mu] the connection layer's */
    dbs_stats counters;           /* the uint64 counters of dbs_stats
                                     not kept in the shards */
    char *name;                   /* owned copy of cfg.name */
    dbs__hist wait_hist;          /* [mu] for shards that could not get */
    dbs__hist use_hist;           /* [mu]   histograms of their own */
    /* idle since before this: ping first, whatever the window (a
     * connection was just found broken; others may be too). The
     * connection layer's (dbs__conn_suspect). */
    _Atomic int64_t validate_before_ns;

    dbs__shard shards[DBS__SHARDS];
    /* [mu] Sessions their threads' exits ended (session.c), linked through
     * t_next: kept, never reused, so that a call on one from a thread that
     * still has the handle finds it closed; freed with the pool. */
    struct dbs_session *exited;
    /* [mu] Event loops their owners' exits closed (loop.c), kept for the
     * same reason and freed with the pool, each by its own free. */
    struct dbs__kept *kept;

    /* housekeeper.c */
    /* Warm-up connections between their connect and the idle list (being
     * announced): counted as idle by every warm-up, so two warm-ups at
     * once (the housekeeper's, dbs_pool_wait_ready's) never make more
     * than min_idle between them. */
    atomic_int warming;
    pthread_t hk_thread;
    pthread_cond_t hk_cv;         /* [mu] wakes the housekeeper to stop */
    bool hk_running;              /* [mu] */
    bool hk_started;              /* set and read by open/close only */

    /* replica.c: a primary's replicas (NULL: none); set at open, freed
     * with the pool. A replica's own pool has replica_label set to its
     * "host:port" and no replicas of its own. */
    struct dbs__replicas *replicas;
    char *replica_label;
    /* Set by the routing layer (replica.c) at open, NULL otherwise: told
     * the position of every commit that may have written, so that the
     * committing user's reads go where that commit is visible. Called
     * from the committing thread, no lock held. */
    void (*on_commit)(dbs_pool *p, const char *user_id, uint64_t pos);
    /* Set with on_commit: frees what the routing layer attached (replicas),
     * with the pool's memory. */
    void (*on_free)(dbs_pool *p);

    /* observe.c: the connect-time histogram and the error table, written
     * with atomic adds from any thread */
    dbs__hist create_hist;
    dbs__hist op_hist;            /* statements of sessions whose shard has
                                     no histograms (out of memory) */
    _Atomic uint64_t errors[DBS__ERR_CLASSES][DBS__ERR_STATES];

    /* ready.c: the last failed connect of this pool, for
     * dbs_pool_wait_ready. [mu] */
    int last_fail_code;
    int64_t last_fail_ns;
    char last_fail[256];

    /* workers.c: the worker threads that run event loops' units, made
     * on first use (NULL: none); the hooks are set with them, so that
     * shutdown and free reach workers.c without tying the files:
     * workers_stop joins the threads (begin_shutdown), workers_free frees
     * what is left (pool_free). */
    struct dbs__workers *_Atomic workers;
    void (*workers_stop)(dbs_pool *p);
    void (*workers_free)(dbs_pool *p);

    /* fork.c: dbs__fork_gen() when the pool was opened, or last made
     * clean in a child (dbs_pool_after_fork_child). Another value: this
     * process is a child of the one that opened it. */
    unsigned long fork_gen;
};

/* ---- fork.c ---- */

/* How many fork()s this process descends from since dbscope was first
 * used (counted by a pthread_atfork child handler). Any thread, no lock. */
unsigned long dbs__fork_gen(void);
/* fork.c's count of forks into this process's line, for the inline session
 * check: a session's pool exists, so its open has registered the fork
 * handlers that count (dbs__fork_gen), and the count can be read as is. */
extern atomic_ulong dbs__fork_generation;
/* Whether p (or s's pool) was opened before a fork() in a parent: fills
 * err with DBS_EMISUSE saying what to do, naming what (the call). */
int dbs__fork_check(const dbs_pool *p, const char *what, dbs_error *err);
/* A pass of one of the library's own threads (housekeeper, replica
 * monitor, SQLite worker) that calls into a driver: fork() waits until no
 * such pass is between enter and leave, so that a child never inherits a
 * process-wide lock of a database library held by one of them. Nests;
 * enter blocks while another thread is forking. Not for a user's thread:
 * a fork from it would wait for the user's own call to end. */
void dbs__fork_gate_enter(void);
void dbs__fork_gate_leave(void);

/* Counts s in the pool (the pool stays allocated until s is released) and
 * gets it a connection (s->conn), registering s with its shard. Blocks up to
 * the acquire timeout. s->ctx and the acquire site must be set. err must
 * not be NULL (events quote it). On failure s is not counted. */
int dbs__pool_acquire(dbs_pool *p, struct dbs_session *s, dbs_error *err);
/* How a session's connection goes back: kept, or discarded because it is
 * broken, or because it works but what the session left could not be
 * undone (its rollback or reset failed). */
enum dbs__giveback { DBS__GIVE_KEEP, DBS__GIVE_BROKEN, DBS__GIVE_DIRTY };
/* Takes s->conn back (closing it when how is not DBS__GIVE_KEEP, the pool
 * is closed or the connection should go) and unregisters s. The connection
 * must already be rolled back and reset. May free p: the caller must not
 * touch it after. */
void dbs__pool_release(dbs_pool *p, struct dbs_session *s, enum dbs__giveback how);
/* Locks every shard, in index order (after p->mu if the caller holds it,
 * before the resource pool's locks), for a consistent view of them all;
 * and unlocks them. */
void dbs__shards_lock(dbs_pool *p);
void dbs__shards_unlock(dbs_pool *p);
/* Keeps p allocated (and counts in its shutdown) until dbs__pool_drop, from
 * the same thread: dbs_transact's hold across its attempts. DBS_ECLOSED once
 * the pool is shut down. */
int dbs__pool_hold(dbs_pool *p, dbs_error *err);
void dbs__pool_drop(dbs_pool *p);
/* Drops a reference; the last one frees the pool. */
void dbs__pool_unref(dbs_pool *p);
/* Takes one for a call that only reads p (stats, exports, the session
 * list), so that a dbs_pool_close while it runs cannot free p under it;
 * shut down or not. Dropped with dbs__pool_unref. */
void dbs__pool_ref(dbs_pool *p);
/* One pool, its connections and sessions (dbs_pool_open without the
 * housekeeper and the replicas, which the routing layer adds). */
dbs_pool *dbs__pool_open(const dbs_config *cfg, dbs_error *err);
void dbs__pool_init_sync(dbs_pool *p);
/* The first call (true; false after): no new session from here on,
 * waiters woken, idle and parked connections closed. */
bool dbs__pool_begin_shutdown(dbs_pool *p);
/* The first shutdown's caller, once every thread the pool started is
 * joined: marks p stopped and wakes the later callers waiting for it. */
void dbs__pool_set_stopped(dbs_pool *p);
/* A later shutdown's caller: returns once p is stopped (the first
 * caller's joins are over), so that its own caller may close p next. */
void dbs__pool_wait_stopped(dbs_pool *p);
/* Waits for the sessions open at shutdown until deadline (timeout_ms 0:
 * not at all; < 0: no bound); returns how many are still open. */
int dbs__pool_drain(dbs_pool *p, int64_t deadline, int timeout_ms);
/* true the first time: dbs_pool_close's work is the caller's. */
bool dbs__pool_close_once(dbs_pool *p);
/* The backend's own threads for p (driver target_stop), at dbs_pool_close. */
void dbs__pool_stop_target(dbs_pool *p);
/* dbs_pool_stats of p alone (no replicas, no percentiles), taken under
 * every lock; hists (DBS__SHARDS, or NULL) gets the shards' histograms. */
void dbs__pool_snapshot(dbs_pool *p, dbs_stats *out, dbs__shard_hists **hists);
/* Counts a retry. */
void dbs__pool_count_retry(dbs_pool *p);
/* Set by a thread about to open a session (an event loop's unit on a
 * worker thread): its acquire waits until this CLOCK_MONOTONIC instant
 * instead of acquire_timeout_ms from now. 0: the pool's bound. */
extern _Thread_local int64_t dbs__acquire_deadline_ns;
/* Set beside it by a worker thread: the acquire's wait ends, DBS_ECANCELED,
 * when the unit is cancelled (dbs__rp_waiter_cancel). NULL: none. */
extern _Thread_local dbs__rp_waiter *dbs__acquire_waiter;
/* Set by dbs_pool_wait_ready just before its ping: a readiness check, not
 * the program's acquire, so its failure counts in no acquire counter
 * (dbs_pool_errors, unavailable, timeouts); its connects count as any.
 * The session's open takes it (s->uncounted) and clears it, so that a
 * session an on_event callback opens meanwhile counts as usual. */
extern _Thread_local bool dbs__acquire_uncounted;
/* true once dbs_pool_shutdown (or dbs_pool_close, which shuts down
 * first) has been called: no new session. Any thread, no lock. */
static inline bool dbs__pool_closed(dbs_pool *p)
{
    return atomic_load_explicit(&p->is_closed, memory_order_relaxed);
}

/* ---- replica.c ---- */

/* A read-only session on a qualifying replica, round robin, that has
 * replayed at least pos and the position ctx->user_id's last commit on p
 * needs; NULL with err when none qualified or served (DBS_EUNAVAILABLE,
 * counted in ro_fallbacks or ro_pos_fallbacks), or DBS_ECLOSED. */
dbs_session *dbs__replica_session(dbs_pool *p, const dbs_context *ctx, uint64_t pos,
                                  dbs_error *err, const char *file, int line,
                                  const char *func);
/* The replicas' part of dbs_stats. */
void dbs__replicas_stats(dbs_pool *p, dbs_stats *out);
/* The replica pools, for the exports: n and the i-th; and a replica's
 * lag in ms, -1 unknown. */
int dbs__replicas_count(dbs_pool *p);
dbs_pool *dbs__replica_pool(dbs_pool *p, int i);
int64_t dbs__replica_lag_ms(dbs_pool *p, int i);

/* ---- housekeeper.c ---- */

int dbs__housekeeper_start(dbs_pool *p, dbs_error *err);
/* One round of upkeep, on the calling thread: closes the idle connections
 * past idle_timeout_ms (keeping min_idle) or their lifetime, pings those
 * idle past keepalive_ms, then opens connections up to min_idle. The
 * housekeeper's, and dbs_pool_wait_ready's. */
void dbs__pool_maintain(dbs_pool *p);
void dbs__housekeeper_stop(dbs_pool *p);
/* Reports sessions held past leak_threshold_ms (or, with all, every open
 * session not yet reported) once each, as leak events. Takes the shards'
 * locks one at a time. */
void dbs__leaks_report(dbs_pool *p, bool all, const char *reason);

/* ---- session.c ---- */

enum dbs__session_state { DBS__S_OPEN, DBS__S_CLOSED };

/* A new field needs a reset in session.c's session_alloc too. */
struct dbs_session {
    unsigned magic;
    uint64_t owner_id;        /* dbs__thread_id() of the thread that opened
                                 it: the ownership check (a pthread_t may
                                 be a later thread's) */
    pthread_t owner;          /* the same thread, as reports name it */
    dbs_pool *pool;
    dbs__conn *conn;
    bool in_tx;               /* a transaction was begun on the connection */
    atomic_int tx_open;       /* in_tx, readable by dbs_pool_sessions */
    bool broken;              /* the connection was lost: discard it */
    bool uncounted;           /* dbs_pool_wait_ready's: dbscope's own, not
                                 the program's session: its acquire's
                                 failure counts nowhere, and its check-out
                                 and check-in neither in acquired/released,
                                 the wait and use histograms, nor as events
                                 (dbs__acquire_uncounted) */
    bool hold;                /* a worker's unit's session (workers.c): the
                                 failures of its calls are kept in held,
                                 not counted, for the unit's outcome,
                                 which the loop counts as its callback
                                 reports it (a cancel's, a shutdown's) */
    dbs_error held;           /* held.code < 0: the first such failure */
    dbs_error prior;          /* prior.code < 0: the failed release reset
                                 of the connection's last user that the
                                 acquire's check found (pool.c), counted
                                 by dbs__session_open as that close's */
    dbs_error broke;          /* broke.code != 0: the failure that made it
                                 broken, which its invalidate event carries */
    bool touched;             /* its connection was used (dbs__session_check
                                 passed): only then has close anything to
                                 undo */
    bool native_taken;        /* dbs_session_native handed out the
                                 backend's handle: the connection is closed
                                 at release, never reused */
    atomic_bool read_only;    /* opened by dbs_session_open_ro: the
                                 backend's read-only switch is on */
    bool committed;           /* a COMMIT was sent and not refused: the
                                 unit may have taken effect, so
                                 dbs_transact must not run it again */
    int attempt;              /* the dbs_transact attempt it was opened
                                 for (1, 2, ...), 0: none; for events */
    uint64_t commit_pos;      /* dbs_session_commit_pos: the position of
                                 the last commit that may have written */
    dbs_context ctx;          /* points into ctx_buf */
    char *ctx_buf;
    size_t ctx_cap;
    const char *file;         /* acquire site, as given: valid until the
                                 pool closes (dbs_session_open_at) */
    int line;
    const char *func;
    int64_t opened_ns;
    bool leak_reported;       /* [shard] */
    bool close_reported;      /* [shard] reported as open at dbs_pool_close */
    dbs_rows *rows;           /* open result sets */
    dbs__shard *shard;        /* the pool shard it was opened through */
    struct dbs_session *prev, *next; /* [shard] shard->sessions */
    unsigned long fork_gen;   /* dbs__fork_gen() at open: another value
                                 means it was opened before a fork() */
    /* Transaction options and nested units (session.c) */
    dbs_tx_options txo;       /* dbs_session_set_tx_options, zeroed: plain */
    int sp_depth;             /* savepoints of nested units open now */
    unsigned tx_seq;          /* transactions ended so far (end_tx) */
    dbs_error doom;           /* doom.code != 0: a nested unit failed in a
                                 way that dooms the transaction: its
                                 commit rolls back and returns this */
    /* The thread's exit (session.c) */
    struct dbs_session *t_prev, *t_next; /* [owner] the thread's open
                                 sessions, which its exit ends; once ended
                                 that way, t_next links pool->exited [mu] */
    dbs_pool *unit_pool;      /* the pool a dbs_transact keeps for the unit
                                 this session runs (dbs__pool_hold), NULL:
                                 none; the thread's exit lets go of it */
    bool exit_closed;         /* ended by its thread's exit: never reused */
};

/* DBS_EMISUSE, naming fn and the field, for a context no backend can carry
 * exactly (a field longer than DBS_CONTEXT_MAX or not UTF-8); DBS_OK for
 * NULL. Checked before anything is sent, so such a context is refused
 * whole instead of reaching a server that would change or drop it. */
int dbs__context_check(const dbs_context *ctx, const char *fn, dbs_error *err);

/* dbs_session_open_at without the public allocation attribute. */
dbs_session *dbs__session_open(dbs_pool *pool, const dbs_context *ctx, dbs_error *err,
                               const char *file, int line, const char *func);
/* Opens a session for one attempt of dbs__transact (dbs_session_open_ro's
 * choice of pool, for a read-only unit). */
typedef dbs_session *(*dbs__opener)(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                                    dbs_error *err, const char *file, int line,
                                    const char *func);
/* dbs_transact's attempts, each on a session from open (NULL: a session on
 * pool itself, dbs__session_open; set: a read-only unit), with opt (NULL:
 * the defaults). */
int dbs__transact(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work, void *arg,
                  dbs_error *err, const char *file, int line, const char *func,
                  dbs__opener open, uint64_t pos, const dbs_tx_options *opt);
/* dbs_session_close without the public deallocator role. */
void dbs__session_close(dbs_session *s);
/* Begins a transaction if none is open (autobegin). */
int dbs__session_autobegin(dbs_session *s, dbs_error *err);
/* Notes a failure from the backend (err: its message, or NULL): a lost
 * connection marks the session broken so the connection is discarded at
 * close. Returns code. */
int dbs__session_failed(dbs_session *s, int code, const dbs_error *err);
/* Marks s broken for the failure code (err: its message, or NULL), kept
 * for its connection's invalidate event unless an earlier one broke it. */
void dbs__session_broke(dbs_session *s, int code, const dbs_error *err);
/* Counts a failure in pool p's error table: its class (code) and the
 * SQLSTATE (NULL or "": none). Lock-free; any thread. */
void dbs__errors_note(dbs_pool *p, int code, const char *sqlstate);
/* A statement's timing, for db.client.operation.duration: the start (0
 * with metrics off; inline, as it is on every statement's path) and the
 * record. */
static inline int64_t dbs__op_start(const dbs_session *s)
{
    return s->pool->cfg.metrics ? dbs__now_ns() : 0;
}
void dbs__op_done(dbs_session *s, int64_t start);
/* The same record for each statement of an event loop's unit that ran on
 * the loop's own connection (no session): its op_us (driver.h). */
void dbs__op_note(dbs_pool *p, const dbs__aunit *u);

/* Takes r off its session's list of open rows and closes it. */
void dbs__rows_free(dbs_rows *r);
/* Closes every open rows of s. */
void dbs__rows_close_all(dbs_session *s);

/* ---- rows_buf.c: rows no session owns ---- */

/* Reads src (before its first row; a session's, or a backend's own) to its
 * end through dbs_rows_next and returns a copy held in memory that no
 * session owns (session NULL): every accessor answers on it as on src,
 * from any thread, one at a time. src is left read to its end; the caller
 * still closes it. NULL with err filled: DBS_ENOMEM, or src's failure
 * (then src's session saw it as dbs_rows_next reports it). The copy is
 * freed by r->ops->close(r); dbs_rows_close leaves session-less rows
 * alone (the unit that holds them frees them). */
dbs_rows *dbs__rows_buf(dbs_rows *src, dbs_error *err);
/* After r was read to its end: the rows its statement inserted, updated
 * or deleted (0 for a SELECT), or -1 when the backend cannot tell. */
int64_t dbs__rows_affected(dbs_rows *r);

/* ---- event.c ---- */

/* Whom an event is about: a copy of what it quotes, so that it can be made
 * from a session, a connection, a leak report or a dbs_transact call alike,
 * and outlive them while it is delivered. */
typedef struct dbs__who {
    const dbs_context *ctx;   /* NULL: none */
    const char *file;         /* acquire site, or NULL */
    int line;
    const char *func;
    unsigned long thread;     /* owner thread, 0: none */
    int64_t since_ns;         /* the session's checkout, 0: no session */
    uint64_t conn_id;         /* 0: no connection */
    int64_t conn_created_ns;
    int attempt;              /* dbs_event.attempt */
} dbs__who;

/* An acquire that ended DBS_ETIMEOUT without a connection and without a
 * session to count it (an event loop's unit: its acquire bound, or its
 * own timeout while it waited for a connection, a worker thread or its
 * next attempt): counted as a blocking acquire's timeout is, in the
 * stats' timeouts, with its timeout event (who, reason: what the unit's
 * callback reads) and in the error table. No lock held; any thread. */
void dbs__pool_count_timeout(dbs_pool *p, const dbs__who *who, const char *reason);

/* Delivers an event: to cfg.on_event and, for leaks, invalidations and
 * notices when log_events is on, to stderr as one logfmt line. Never call
 * with p->mu or a shard lock held. */
void dbs__emit_event(dbs_pool *p, enum dbs_event_kind kind, const dbs__who *who, int code,
                     const char *reason);

/* Whether an event goes anywhere: checked inline, because checkout and
 * checkin events happen on every cycle and usually nobody listens. */
static inline bool dbs__event_wanted(const dbs_pool *p, enum dbs_event_kind kind)
{
    return p->cfg.on_event ||
           (p->cfg.log_events && (kind == DBS_EVENT_LEAK || kind == DBS_EVENT_LEAK_RECOVERED ||
                                  kind == DBS_EVENT_INVALIDATE || kind == DBS_EVENT_NOTICE));
}

/* s's and c's part of an event; either may be NULL. */
static inline dbs__who dbs__who_of(const dbs_session *s, const dbs__conn *c)
{
    dbs__who w = {0};
    if (s) {
        w.ctx = &s->ctx;
        w.file = s->file;
        w.line = s->line;
        w.func = s->func;
        w.thread = (unsigned long)s->owner;
        w.since_ns = s->opened_ns;
        w.attempt = s->attempt;
    }
    if (c) {
        w.conn_id = c->item.id;
        w.conn_created_ns = c->created_ns;
    }
    return w;
}

static inline void dbs__emit(dbs_pool *p, enum dbs_event_kind kind, const dbs_session *s,
                             const dbs__conn *c, int code, const char *reason)
{
    if (dbs__event_wanted(p, kind)) {
        dbs__who w = dbs__who_of(s, c);
        dbs__emit_event(p, kind, &w, code, reason);
    }
}

static inline void dbs__emit_who(dbs_pool *p, enum dbs_event_kind kind, const dbs__who *w,
                                 int code, const char *reason)
{
    if (dbs__event_wanted(p, kind))
        dbs__emit_event(p, kind, w, code, reason);
}

/* ---- fault.c: deterministic failures for tests, off unless armed ---- */

typedef struct dbs__faults {
    atomic_int armed;             /* pools opened from now on can fault */
    atomic_int fail_connects;     /* the next N connects fail */
    atomic_int fail_pings;        /* the next N pings fail */
    atomic_int connect_delay_ms;  /* every connect sleeps this long first */
    atomic_int connect_gate;      /* while nonzero, every connect (past its
                                     delay) waits until a test clears it:
                                     a stall that ends when the test says,
                                     not when a clock does */
    atomic_int close_delay_ms;    /* every close sleeps this long first */
    atomic_int fail_resets;       /* the next N resets fail (the connection
                                     still works) */
    atomic_int connects;          /* connects begun, counted */
    atomic_int live;              /* connections that may exist on the
                                     server: from a connect's start until
                                     it failed or its close returned */
    atomic_int live_peak;         /* the most live at once */
    atomic_int fail_sends;        /* the next N event-loop sends on
                                     PostgreSQL fail once their COMMIT is
                                     queued, as libpq out of memory would */
    atomic_int fail_row_keeps;    /* the next N event-loop results with rows
                                     on PostgreSQL find no memory to be
                                     kept in */
    atomic_int unit_gap_at;       /* with unit_gap_ms: a worker running a */
    atomic_int unit_gap_ms;       /* unit, past its cancel check before
                                     statement unit_gap_at (0: the first),
                                     waits until an interrupt went to its
                                     connection, at most unit_gap_ms: a
                                     cancel that lands between statements */
    atomic_int unit_gaps;         /* such waits begun */
    atomic_int fail_begins;       /* the next N event-loop units on
                                     PostgreSQL have their BEGIN fail at the
                                     server with query_canceled, as a
                                     cancel that lands on it does */
    atomic_int fail_send_allocs;  /* the next N event-loop sends on
                                     PostgreSQL find no memory before
                                     anything is queued: the unit fails
                                     alone, the connection goes on */
    atomic_int fail_release_resets; /* the next N resets that ride with a
                                     COMMIT (commit_release on PostgreSQL
                                     and MariaDB, an event loop's unit on
                                     PostgreSQL) fail once the COMMIT
                                     succeeded, as a lost connection would:
                                     the connection is broken */
    atomic_int workers_gate;      /* while nonzero, a start of a pool's
                                     worker threads (an event loop's open)
                                     past its check of the pool waits
                                     until a test clears it: a shutdown
                                     that lands right there */
    atomic_int workers_gated;     /* such waits begun */
    atomic_int fail_posted_resets; /* the next N resets a blocking release
                                     posted without waiting for their
                                     answer (PostgreSQL, after dbs_commit
                                     and dbs_session_close) are answered
                                     as failed when that answer is read:
                                     the connection is broken */
} dbs__faults;
extern dbs__faults dbs__fault;

/* real, or, when a test armed faults, a copy of it whose connect, ping,
 * reset and close obey dbs__fault. Called once at pool open. */
const dbs__driver *dbs__fault_driver(const dbs__driver *real);

/* ---- values (values.c) ---- */

/* A UTC instant broken down, microseconds truncated. */
typedef struct dbs__ts {
    int year, month, day, hour, minute, second, usec;
} dbs__ts;

/* ts broken down: DBS_OK, or DBS_EMISUSE for a tv_nsec outside
 * 0..999999999 or a year outside 0001..9999. */
int dbs__ts_fields(struct timespec ts, dbs__ts *out);
/* The n bytes at s as a whole number: entirely a decimal integer within
 * int64_t, or a number that is whole and within it ("12.0", "1e3");
 * 0, or -1 for anything else. */
int dbs__parse_int64(const char *s, size_t n, int64_t *out);
/* The n bytes at s entirely as a number (strtod's syntax, no leading
 * space, no overflow): 0, or -1. s[n] is read: text a row accessor
 * returned (NUL-terminated) is parsed in place, at any length. */
int dbs__parse_double(const char *s, size_t n, double *out);
/* d cut to int64_t as dbs_rows_int promises: toward zero, beyond either
 * end that end (SQLite's own cut), a NaN 0. A plain cast of a double
 * out of range is undefined (INT64_MIN on x86, whatever the sign). */
int64_t dbs__int64_cut(double d);
/* strtod, and snprintf's "%.*g" with the fewest digits (15 to 17) that
 * read back as v, in the C locale whatever the program's (a decimal
 * point, never a comma): how numbers cross the wire and how dbscope reads
 * a database's text. Any thread; errno as strtod sets it. */
double dbs__strtod(const char *s, char **end);
int dbs__fmt_double(char *out, size_t cap, double v);
/* A single-precision value widened to double (MariaDB's FLOAT as
 * Connector/C hands it) as the double its shortest spelling names, as
 * PostgreSQL's float4 reads: 0.1f is 0.1, not 0.10000000149011612. */
double dbs__float_spelled(double v);
/* The same for any printf or strtod between the two: the calling thread
 * in the C locale's numbers until dbs__c_numeric_leave(what enter gave). */
locale_t dbs__c_numeric_enter(void);
void dbs__c_numeric_leave(locale_t old);

#endif /* DBS_INTERNAL_H */
