/*
 * dbscope — request-scoped database sessions over a fast, fair,
 * self-healing connection pool.
 *
 * This header is the whole public interface and its manual.
 *
 * THREADING MODEL
 *   - A dbs_pool may be used from any thread at the same time. Every pool
 *     function is thread-safe.
 *   - A dbs_session belongs to the thread that opened it. Every session
 *     function called from another thread returns DBS_EMISUSE and does
 *     nothing (this is always detected, also on a thread started after the
 *     owner exited, which may have been given the owner's pthread_t).
 *     dbs_session_close from another thread is refused the same way; the
 *     session stays open. The same holds for a dbs_loop and its owner.
 *   - A thread that exits (returns from its start routine, calls
 *     pthread_exit or is cancelled, also inside a dbs_transact unit's
 *     work) with sessions open has them closed at its exit, on that
 *     thread, as
 *     dbs_session_close would close them: their rows closed, their
 *     transactions rolled back, their connections reset and given back to
 *     the pool (closed when that fails), the hold of a dbs_transact under
 *     way let go. Each is reported first as a DBS_EVENT_LEAK naming the
 *     line that opened it, with reason "its thread exited with the session
 *     open: ...", then as a DBS_EVENT_LEAK_RECOVERED (counted in leaks and
 *     leaks_recovered once each). This runs from a pthread key destructor,
 *     in no set order with the program's own. The process's exit (main
 *     returning, exit()) runs no such destructor: sessions still open then
 *     are left to the process's end. In a child of fork(), a session from
 *     before the fork is let go of there as dbs_session_close lets go of
 *     it, nothing sent. Such a session's memory is kept, never reused, until
 *     the pool's memory is freed (dbs_pool_close, once no session is left):
 *     until then a call on its handle, from any thread, is refused with
 *     DBS_EMISUSE; its rows are freed with it, as at any close. An event
 *     loop (dbs_loop) still open at its owner thread's exit is closed
 *     there too, without its units' callbacks (see dbs_loop_open).
 *   - Cancellation (pthread_cancel). No dbscope function is a
 *     cancellation point: each call that could reach one (a wait for a
 *     connection, a statement's I/O, a SQLite lock's sleep, a close, a
 *     retry's back-off, dbs_pool_shutdown's drain, dbs_loop_run, on_event)
 *     disables cancellation before it reaches one, and returns the
 *     caller's state as it found it (a call that reaches none, such as a
 *     checkout of an idle connection, the close of a session that sent
 *     nothing or dbs_rows_next of a row already read, leaves the state
 *     alone: it costs nothing), so a cancel
 *     sent meanwhile acts at the thread's next
 *     cancellation point after the call returned, the pool whole; the
 *     call itself ends as it would have (a statement runs to its end or
 *     its bound). The thread's exit then ends its open sessions as above,
 *     reported as leaks. The program's own code that a call runs with the
 *     caller's state, and so stays cancellable, is dbs_transact's and
 *     dbs_session_transact's work and the unit callbacks dbs_loop_run
 *     runs. A cancel there unwinds as pthread_exit does, and the unwind
 *     (also that of a pthread_exit there, or of a C++ exception) ends
 *     what the call had under way as it leaves the call, before any
 *     cleanup handler (pthread_cleanup_push) or destructor of the
 *     program's outside the call runs: a dbs_transact unit is rolled
 *     back and its connection given back (reported as a leak, as at the
 *     thread's exit); a nested unit is rolled back to its savepoint (the
 *     enclosing transaction goes on as after a failed nested unit, or is
 *     rolled back in turn as the unwind leaves its own dbs_transact);
 *     dbs_loop_run ends between two units, the loop as between two
 *     runs. Such a handler may call dbscope: it finds no unit in
 *     progress (its dbs_transact is a unit of its own, on a fresh
 *     session, and commits), and may close the loop (dbs_loop_close) or
 *     the session it had. A handler pushed inside the work runs before
 *     the unwind reaches dbs_transact, with the unit still in progress:
 *     its dbs_transact is a nested unit of the unit being unwound, and
 *     is rolled back with it. on_event, the credential provider,
 *     dbs_pool_sessions' fn and the callbacks dbs_loop_close runs are
 *     called from inside the library's own steps and run with
 *     cancellation disabled; on_event, the credential provider and the
 *     callbacks dbs_loop_close runs must return (a pthread_exit there
 *     leaves the step that called them unfinished), dbs_pool_sessions'
 *     fn may leave by pthread_exit. Asynchronous cancellation
 *     (PTHREAD_CANCEL_ASYNCHRONOUS) must not be enabled across a call.
 *   - A dbs_rows belongs to its session, and so to the same thread.
 *   - Use after close. A closed session's memory is kept by its thread for
 *     the thread's next sessions and freed only at thread exit, so a closed
 *     session handle never points at freed memory while that thread lives:
 *     using it returns DBS_EMISUSE, unless a later dbs_session_open on the
 *     same thread has reused that memory (it reuses the handle closed last
 *     first), in which case the call acts on the new session. A dbs_rows is
 *     freed by dbs_rows_close or its session's close: using it afterwards is
 *     undefined, like using freed memory. A pool used after dbs_pool_close
 *     returned is undefined too; dbs_pool_shutdown is the call that leaves
 *     it usable.
 *   - Callbacks (on_event) run on the thread that caused the event, never
 *     with any pool lock held, so they may call dbs_pool_stats.
 *
 * OWNERSHIP
 *   Opaque handles (dbs_pool, dbs_session, dbs_rows) are created and
 *   destroyed only by dbscope. Closing NULL is a no-op. dbs_config,
 *   dbs_stats, dbs_error and dbs_context are plain structs owned by the
 *   caller; dbscope copies what it keeps.
 *
 * ERRORS
 *   Functions that can fail return a negative dbs_code (or NULL) and take a
 *   caller-owned dbs_error *err as last argument, which may be NULL. When
 *   given, err->code is set to the same value as returned, err->message says
 *   what failed and how to fix it, and err->sqlstate holds the database's
 *   five-character SQLSTATE when there is one ("" otherwise). Passwords and
 *   other secrets (sslpassword, passphrases: every option libpq or
 *   Connector/C treats as secret) never appear in any message, log line,
 *   event or metric.
 */
#ifndef DBSCOPE_H
#define DBSCOPE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DBS_VERSION_MAJOR 0
#define DBS_VERSION_MINOR 1
#define DBS_VERSION_PATCH 0
#define DBS_VERSION_NUMBER                                                     \
    ((DBS_VERSION_MAJOR << 16) | (DBS_VERSION_MINOR << 8) | DBS_VERSION_PATCH)
#define DBS_VERSION_STRING "0.1.0"

/* Returns DBS_VERSION_NUMBER of the library actually linked. Any thread. */
unsigned dbs_version(void);
/* Returns the version as "MAJOR.MINOR.PATCH"; static storage. Any thread. */
const char *dbs_version_string(void);

#if defined(__GNUC__) && __GNUC__ >= 11 && !defined(__clang__)
#define DBS__DEALLOC(f) __attribute__((malloc, malloc(f, 1)))
#else
#define DBS__DEALLOC(f)
#endif
#if defined(__GNUC__) || defined(__clang__)
#define DBS__WARN_UNUSED __attribute__((warn_unused_result))
#else
#define DBS__WARN_UNUSED
#endif

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

typedef struct dbs_error {
    int code;           /* a dbs_code */
    char sqlstate[6];   /* SQLSTATE from the database, or "" */
    char message[512];  /* what failed and how to fix it; never a password */
} dbs_error;

/* All negative; functions return them directly. Codes are only ever added at
 * the end and never change meaning. */
enum dbs_code {
    DBS_OK = 0,
    DBS_ECONFIG = -1,         /* bad configuration: URL, variable, field;
                                 also a connect the database refuses for
                                 good: wrong password or user (PostgreSQL
                                 28P01, 28000; MariaDB 1045), unknown
                                 database (3D000; 1049, and 1102 for a name
                                 the server calls incorrect, such as one
                                 over 64 characters), a SQLite path that
                                 cannot work (missing directory, permission
                                 denied, a file only readable, a file that
                                 is not a database, a name over 255 bytes,
                                 a symbolic link loop). Never retried, never
                                 counted by the circuit breaker; sqlstate
                                 is set when the server sent one */
    DBS_ECONNECT = -2,        /* cannot connect (too many connections,
                                 PostgreSQL 53300, MariaDB 1040, is one),
                                 or the connection was lost or ended by
                                 the server (PostgreSQL 57P01, MariaDB
                                 1927 or 2013 after a KILL) */
    DBS_ETIMEOUT = -3,        /* no connection within the acquire timeout */
    DBS_ECLOSED = -4,         /* the pool was shut down or closed */
    DBS_ESQL = -5,            /* the statement failed */
    DBS_ECONSTRAINT = -6,     /* integrity constraint violated (SQLSTATE
                                 class 23; on MariaDB also a NOT NULL
                                 column left out, 1364) */
    DBS_ERETRYABLE = -7,      /* serialization failure, deadlock, or a
                                 lock not obtained in time, on every
                                 backend: PostgreSQL 40001, 40P01, 55P03
                                 (lock_timeout, NOWAIT); MariaDB 1213,
                                 1020 (snapshot isolation), 40001, 1205
                                 lock wait timeout; SQLite BUSY, LOCKED.
                                 Transient (retried by dbs_transact). A
                                 MariaDB lock wait timeout ends only its
                                 statement, unless the server runs with
                                 innodb_rollback_on_timeout: then, as
                                 after a deadlock, the whole transaction
                                 is rolled back, later statements are
                                 refused (DBS_ERETRYABLE) and its COMMIT
                                 rolls back */
    DBS_ECOMMIT_UNKNOWN = -8, /* COMMIT failed in a way that leaves its
                                 outcome unknown: the connection was lost,
                                 the server ended it in answer, or (SQLite)
                                 an I/O error or failed sync while writing
                                 the commit. Never retried */
    DBS_EMISUSE = -9,         /* wrong thread, use after close, bad argument */
    DBS_EUNAVAILABLE = -10,   /* circuit open: the database is known down */
    DBS_ENOMEM = -11,         /* out of memory */
    DBS_ESTMT_TIMEOUT = -12,  /* no answer within the statement bound
                                 (statement_timeout_ms): the round trip was
                                 cancelled and the connection discarded.
                                 A server's own bound (PostgreSQL
                                 statement_timeout, 57014; MariaDB
                                 max_statement_time, 1969) is DBS_ESQL:
                                 the connection stays */
    DBS_EFULL = -13,          /* the database's storage is full (SQLite
                                 SQLITE_FULL or a write failing with ENOSPC
                                 or EDQUOT, PostgreSQL 53100 disk_full,
                                 MariaDB 1021 ER_DISK_FULL, 1114
                                 ER_RECORD_FILE_FULL, 3019 undo log full,
                                 4139 ER_INDEX_FILE_FULL): the statement or
                                 COMMIT wrote nothing and the connection
                                 stays usable; transient (retried by
                                 dbs_transact like DBS_ERETRYABLE), worth
                                 retrying once space is freed. The rest of
                                 PostgreSQL's class 53 (out of memory, too
                                 many connections) is not this */
    DBS_ETYPE = -14,          /* a row accessor (dbs_rows_get_*) cannot
                                 read the value as the type asked for:
                                 'abc' as an integer, 2.5 as an integer, an
                                 integer beyond int64_t, a BLOB as a
                                 number, text that is no timestamp or UUID.
                                 The message names the column, the value's
                                 type and the accessor that fits */
    DBS_ENULL = -15,          /* a row accessor (dbs_rows_get_*) found SQL
                                 NULL where a value was asked for: test
                                 with dbs_rows_is_null first, or use
                                 COALESCE in the SQL */
    DBS_ECANCELED = -16,      /* the program cancelled the unit of work
                                 (dbs_unit_cancel) or closed its loop:
                                 what it had sent was cancelled on the
                                 server and rolled back; nothing of it
                                 committed unless it was past its COMMIT,
                                 which then reports DBS_ECOMMIT_UNKNOWN */
    DBS_EBUSY = -17           /* an event loop's queue of units waiting for
                                 a connection is full (dbs_loop_config
                                 .queue_max): shed the request (HTTP 503)
                                 rather than queue without bound */
};

/* Returns a static, constant description of a dbs_code ("unknown error code"
 * for anything else). Never NULL. Any thread. */
const char *dbs_strerror(int code);

/* Returns 1 when the failure in err is worth retrying as a whole unit of work
 * (DBS_ERETRYABLE, DBS_EFULL, or DBS_ECONNECT before any COMMIT was sent), 0
 * otherwise and for NULL. DBS_ECOMMIT_UNKNOWN is never transient: the COMMIT
 * may have happened. DBS_ECONFIG never is: a wrong password stays wrong.
 * Any thread. */
int dbs_error_is_transient(const dbs_error *err);

/* ------------------------------------------------------------------------
 * Request context and events
 * ------------------------------------------------------------------------ */

/* Who a session works for. Any field may be NULL. Copied when a session opens
 * and immutable afterwards; the caller's strings may be freed right after
 * dbs_session_open returns. Each field is UTF-8 text of at most
 * DBS_CONTEXT_MAX bytes (its NUL not counted), kept and applied (the
 * PostgreSQL settings, the MariaDB variables) byte for byte; anything else is refused whole, before anything is sent,
 * with DBS_EMISUSE by dbs_session_open (and the calls built on it:
 * dbs_transact, dbs_session_open_ro, ...) and by dbs_unit_new. */
typedef struct dbs_context {
    const char *request_id, *user_id, *tenant_id;
} dbs_context;

/* The longest context field in bytes: room for any identifier, and small
 * enough that all three, sent to MariaDB as two hex digits a byte, fit in
 * one packet under any max_allowed_packet a server is likely to run with
 * (past it the server drops the connection). */
#define DBS_CONTEXT_MAX 65536

enum dbs_event_kind {
    DBS_EVENT_CONNECT,        /* a new connection was opened (dbs_pool_open's
                                 first one too) */
    DBS_EVENT_CHECKOUT,       /* a session got a connection */
    DBS_EVENT_CHECKIN,        /* a session gave its connection back */
    DBS_EVENT_INVALIDATE,     /* a connection was found broken and discarded;
                                 code and reason: the failure that broke it
                                 (DBS_ECONNECT for a lost connection;
                                 DBS_ESTMT_TIMEOUT, DBS_ECOMMIT_UNKNOWN, ...
                                 when a session's failure did) */
    DBS_EVENT_RETRY,          /* dbs_transact retries a unit of work */
    DBS_EVENT_LEAK,           /* a session is held past leak_threshold_ms,
                                 open at dbs_pool_close, or open when its
                                 thread exited (it is closed then: see
                                 THREADING MODEL); reason says which */
    DBS_EVENT_LEAK_RECOVERED, /* a session reported as leaked was closed */
    DBS_EVENT_SLOW_SESSION,   /* a session was held past slow_session_ms */
    DBS_EVENT_CIRCUIT_OPEN,   /* connects keep failing: failing fast now */
    DBS_EVENT_CIRCUIT_CLOSE,  /* a connect succeeded again */
    DBS_EVENT_TIMEOUT,        /* an acquire gave up after acquire_timeout_ms
                                 (or a unit's timeout passed before it had
                                 a connection): one per dbs_stats.timeouts */
    DBS_EVENT_CONNECT_FAILED, /* a connect attempt failed */
    DBS_EVENT_CLOSE,          /* a healthy connection was closed (see reason) */
    DBS_EVENT_NOTICE          /* the database sent a notice or warning; reason
                                 holds its text (PostgreSQL NOTICE, WARNING) */
};

/* Passed to on_event. Every pointer in it is valid only during the callback. */
typedef struct dbs_event {
    enum dbs_event_kind kind;
    const char *name;         /* "connect", "checkout", ...: logfmt spelling */
    const dbs_context *ctx;   /* the session's context; fields may be NULL */
    const char *file;         /* acquire site of the session, or NULL */
    int line;
    const char *func;
    unsigned long thread;     /* opaque id of the session's owner thread */
    uint64_t conn_id;         /* pool-unique connection number, 0 if none */
    int64_t age_ms;           /* session or connection age, when meaningful */
    int attempt;              /* dbs_transact's attempt: for retry, the one
                                 about to run (2, 3, ...); for the events of
                                 a session dbs_transact opened (checkout,
                                 connect, connect_failed, invalidate,
                                 timeout, checkin, close, slow_session,
                                 leak, ...), the attempt it was opened for
                                 (1: the first run, 2, 3, ...: retries);
                                 0 for every other event */
    int code;                 /* a dbs_code for failures, else 0 */
    const char *reason;       /* close: "lifetime", "idle", "overflow", ...;
                                 failures: the error message */
} dbs_event;

typedef void (*dbs_event_fn)(const dbs_event *ev, void *user);

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

/* A credential provider's question and answer (dbs_config.credential). */
typedef struct dbs_credential {
    const char *backend;   /* "postgresql" or "mariadb" */
    const char *host;      /* the host as the URL names it (libpq: the
                              whole comma-separated list of a multi-host
                              URL; a replica's pool: that replica's host);
                              "" when the URL names none (also a MariaDB
                              URL that names only a socket=) */
    const char *port;      /* as the URL names it, "" when it does not */
    const char *user;      /* the URL's user, "" when it names none */
    char *password;        /* the provider writes the password or token
                              here, NUL-terminated and not empty;
                              dbscope's buffer, wiped once the connect is
                              over */
    size_t password_cap;   /* bytes at password (DBS_CREDENTIAL_MAX) */
    char *why;             /* on failure the provider may say why here,
                              NUL-terminated (never the secret): it
                              becomes part of the DBS_ECONFIG message */
    size_t why_cap;        /* bytes at why (256) */
} dbs_credential;

/* Room for a password or token: RDS IAM tokens take about 1.5 KB, cloud
 * access tokens a few KB. */
#define DBS_CREDENTIAL_MAX 8192

/* Returns 0 with cred->password filled, anything else on failure. */
typedef int (*dbs_credential_fn)(dbs_credential *cred, void *user);

enum dbs_pool_mode {
    DBS_POOL_AUTO,   /* SINGLE for sqlite::memory:, QUEUE otherwise */
    DBS_POOL_QUEUE,  /* the real pool */
    DBS_POOL_NONE,   /* a new connection for every session, closed after;
                        as many at once as sessions are open (pool_size
                        and max_overflow do not bound them; the
                        database's own connection limit does) */
    DBS_POOL_SINGLE  /* one shared connection, sessions take turns (FIFO) */
};

enum dbs_reset_mode {
    DBS_RESET_FULL,     /* roll back and undo any session state (default) */
    DBS_RESET_ROLLBACK, /* only roll back: the caller promises not to touch
                           session state (settings, temp tables, ...).
                           In every mode a connection whose native handle
                           was handed out is closed, not reused
                           (dbs_session_native) */
    DBS_RESET_TRACKED   /* as FULL, except on MariaDB: COM_RESET_CONNECTION
                           only when the server reported a change of session
                           state (or a statement failed, the transaction
                           escaped); otherwise
                           named locks, LAST_INSERT_ID() and user variables
                           are undone in the COMMIT's or ROLLBACK's round
                           trip and prepared statements stay. The caller
                           promises not to leave a HANDLER open and not to
                           rely on a sequence's PREVIOUS VALUE being unset:
                           the server reports neither (docs/mariadb.md).
                           PostgreSQL and SQLite: the same as FULL. */
};

typedef struct dbs_config {
    const char *url;      /* sqlite:..., postgresql://... or key=value.
                             SQLite files: an acknowledged commit survives a
                             power loss (synchronous=NORMAL plus one WAL sync
                             shared by the commits of all threads, as durable
                             as synchronous=FULL; ?synchronous=full says the
                             same); sqlite:FILE?synchronous=normal trades that
                             for speed (docs/pool.md). A relative path
                             (also file:rel.db) names a file in the
                             directory dbs_pool_open ran in. A file
                             deleted or replaced under the pool (or a
                             symbolic link on its path switched to
                             another file) is reported (an invalidate
                             event) and its connections discarded; the
                             pool never recreates it. */
    int pool_size;        /* connections kept (default 10) */
    int max_overflow;     /* extra connections under load (default 20);
                             pool_size + max_overflow bounds the pool's
                             connections at every instant, counting those
                             connecting and those still being closed */
    int min_idle;         /* idle connections kept ready (default 0), within
                             pool_size: never overflow connections */
    int acquire_timeout_ms; /* wait for a connection at most (30000) */
    int max_lifetime_ms;  /* recycle connections older than this, minus up
                             to 2.5% random jitter (3600000; 0 = never) */
    int idle_timeout_ms;  /* close idle connections beyond min_idle after
                             this long unused by a session (600000; 0 =
                             never); keep-alive pings do not count */
    int pre_ping;         /* check a connection before handing it out (1):
                             at every check-out a look at its socket
                             without a round trip (one non-blocking
                             system call; PostgreSQL and MariaDB), so one
                             the server closed while idle is replaced
                             (on PostgreSQL the answer to the reset the
                             last close posted is read then, waited for
                             if still on its way, and one that failed
                             replaces the connection too);
                             and a ping when it was idle longer than
                             validation_window_ms or bytes nobody asked
                             for wait on it. 0: no check at all. Other
                             values: DBS_ECONFIG */
    int leak_threshold_ms; /* report sessions held longer, within a quarter
                             of this after they cross it (0 = off) */
    int retry_max;        /* dbs_transact retries of transient failures (3) */
    enum dbs_pool_mode mode;
    /* Fields below are dbscope's additions to the contract. */
    int validation_window_ms;     /* see pre_ping (500) */
    int housekeeping_interval_ms; /* housekeeper period (1000); the
                                     housekeeper runs only when some upkeep
                                     is set, and always on a SQLite file
                                     (it watches the file is still there) */
    int retry_base_ms;            /* first backoff ceiling (10) */
    int retry_cap_ms;             /* largest backoff ceiling (1000) */
    int busy_timeout_ms;          /* SQLite: wait on a locked file (5000),
                                     then DBS_ERETRYABLE; the statement
                                     bound, if smaller, ends the wait
                                     first: DBS_ESTMT_TIMEOUT */
    int stmt_cache_size;          /* prepared statements kept per connection
                                     (64; 0 = off, for PgBouncer transaction
                                     pooling) */
    enum dbs_reset_mode reset;    /* what release does (DBS_RESET_FULL) */
    /* PostgreSQL: names of settings that receive the session's context at
     * the start of each transaction, with set_config(name, value, true), for
     * row-level security. NULL = not applied. Example: "app.tenant_id".
     * A name no setting can have (empty, a space, an empty part, a part
     * not starting with a letter or _) is DBS_ECONFIG at dbs_pool_open;
     * one the server does not know fails the transaction's first
     * statement. MariaDB/MySQL: names of user variables (@`name`) set at the start of
     * each transaction; NULL = dbs_request_id, dbs_user_id, dbs_tenant_id. */
    const char *ctx_request_setting, *ctx_user_setting, *ctx_tenant_setting;
    dbs_event_fn on_event;        /* called for every event, from the
                                     connect of dbs_pool_open's first
                                     connection on (NULL = none) */
    void *event_user;             /* passed to on_event */
    int log_events;               /* the default logger: leaks, invalidations
                                     and database notices to stderr, one
                                     logfmt line each. -1 (the default):
                                     on unless on_event is set, so that a
                                     program that listens sees each event
                                     once, in on_event; 1: on, on_event or
                                     not; 0: off. Other values: DBS_ECONFIG */
    int circuit_threshold;        /* consecutive failed connects that open the
                                     circuit (5; 0 = never). A connect
                                     refused with DBS_ECONFIG (wrong
                                     password, unknown database) is not an
                                     outage and is not counted */
    int circuit_cooldown_ms;      /* longest fail-fast spell between probes:
                                     they start 50 ms apart and double up
                                     to this (250) */
    int slow_session_ms;          /* report sessions held longer (0 = off) */
    int keepalive_ms;             /* ping connections idle this long, so a
                                     server or firewall does not drop them
                                     (0 = off) */
    int metrics;                  /* wait/usage histograms (1; 0 = off;
                                     other values: DBS_ECONFIG) */
    const char *name;             /* pool name in metrics and logs
                                     ("default") */
    int connect_timeout_ms;       /* bounds each connect end to end: name
                                     lookup, TCP, TLS, authentication,
                                     and the session setup queries
                                     MariaDB/MySQL send after it, with one
                                     deadline for every host and address
                                     tried (a host list, a name with
                                     several addresses): the connect
                                     returns within connect_timeout_ms,
                                     to the millisecond, however many
                                     there are, and none is tried once it
                                     has passed
                                     (10000; 0 = none: a connect then
                                     waits as long as the network, the
                                     resolver and the server take). A URL that sets its own
                                     connect_timeout keeps it. A lookup
                                     past it is DBS_ECONNECT, and so is a
                                     name that does not exist (DNS may be
                                     down). A lookup left behind runs on
                                     until the resolver gives up; the
                                     connects to one host:port share it
                                     (at most two at once), and while 64
                                     are pending in the process a connect
                                     that needs another fails at once with
                                     DBS_ECONNECT naming them. */
    int statement_timeout_ms;     /* bounds every round trip dbscope makes
                                     on a connection (statements, COMMIT,
                                     ROLLBACK, pings, reset), measured on
                                     the client, so it holds when the
                                     server cannot answer at all (30000;
                                     0 = none; MariaDB/MySQL round it up
                                     to whole seconds, and end the
                                     statement on the server from a
                                     connection of their own, bounded as
                                     much again: a call there returns
                                     within about twice it). SQLite interrupts
                                     a statement that runs past it. See
                                     dbs_session_set_statement_timeout. */
    int lazy_open;                /* 1: dbs_pool_open connects nothing and
                                     returns at once; sessions fail fast
                                     until the database answers (0; other
                                     values: DBS_ECONFIG) */
    /* Read replicas (PostgreSQL only; elsewhere DBS_ECONFIG). Where the
     * sessions of dbs_session_open_ro and dbs_transact_ro go: a URL or
     * key=value string in libpq's syntax. Several hosts in it
     * (postgresql://u@h1:5432,h2:5433/db or host=h1,h2 port=5432,5433) are
     * balanced across, round robin among those that qualify; every other
     * option applies to each. Each host gets a pool of its own with this
     * configuration's sizes and bounds, opened lazily and shut down and
     * closed with this pool. A background monitor keeps one extra
     * connection to the primary and to each replica to measure lag
     * (docs/postgresql.md, "Replicas and failover"). Copied at open.
     * NULL or "" = no replicas: read-only sessions run on this pool.
     * DBS_ECONFIG at open for a server named twice (one host and port,
     * however spelled: each would be chosen twice as often and its
     * metric series would appear twice) and for target_session_attrs
     * read-write or primary, which no standby satisfies; without
     * target_session_attrs the replicas connect with "any", so that
     * PGTARGETSESSIONATTRS, set for url, does not keep them away.
     *
     * Reads your own writes. With replica_url set, every commit through
     * dbscope (dbs_commit, dbs_transact) of a transaction that wrote
     * records its WAL position, in the COMMIT's own round trip (two small
     * statements more in it; dbs_session_commit_pos). The pool
     * remembers, for each ctx->user_id (NULL: nobody), the position of
     * that user's last such commit on this pool, and the user's read-only
     * sessions (dbs_session_open_ro, dbs_transact_ro) then run only on a
     * replica measured to have replayed it, else as if no replica
     * qualified (replica_fallback; counted in ro_pos_fallbacks): a user
     * always sees their own writes. The memory is a fixed table of 4096
     * slots keyed by a hash of user_id; users that share a slot need the
     * larger of their positions, which can only send reads to the primary
     * more often. A COMMIT whose outcome is unknown
     * (DBS_ECOMMIT_UNKNOWN) counts for its user as a commit whose
     * position did not come back: it may have written. Commits made
     * otherwise (COMMIT sent as SQL, or through dbs_session_native) are
     * not recorded. For another process, or
     * another pool, pass the position: dbs_session_open_ro_after. */
    const char *replica_url;
    int replica_max_lag_ms;       /* a replica qualifies only while it is
                                     known to have replayed everything the
                                     primary committed more than this long
                                     ago: measured with WAL positions every
                                     100 ms and counted from the primary's
                                     last sample the replica has replayed,
                                     so a late sample counts against the
                                     bound (bounds under a few sampling
                                     periods leave replicas qualifying only
                                     part of the time). 0: no bound; a
                                     replica must still be reachable and
                                     in recovery */
    int replica_fallback;         /* 1: read-only sessions run on the
                                     primary while no replica qualifies;
                                     0: they fail fast with
                                     DBS_EUNAVAILABLE (1) */
    /* Who gets a connection while threads wait for one (QUEUE mode; SINGLE
     * and NONE are always first come, first served). Waiters queue in
     * order of arrival. The one thread that can get a connection ahead
     * of them is a thread taking back, in its next dbs_session_open, the
     * connection its last dbs_session_close gave back (no hand-off, no
     * wake-up), and only while
     *   - the oldest waiter has waited less than barge_limit_us, and
     *   - the sessions that took that connection back while others
     *     waited, with the one that gives it back, have held it for less
     *     than barge_limit_us / DBS_BARGE_HOLD_SHARE in all (counted from
     *     the first such session in a row).
     * Any other connection given back, and that one once either bound
     * is reached, goes straight to the oldest waiter; a newcomer queues
     * behind the waiters. From the moment the oldest waiter has waited
     * barge_limit_us, order is strict: nobody takes a connection back,
     * and connections kept for their threads go to the waiters, oldest
     * first, until the queue is empty or the waiter at its head has
     * waited less than the limit. So a waiter is passed over only within
     * the first barge_limit_us of its wait, and never for longer than its
     * acquire timeout. 0: strict order always (a thread that gives a
     * connection back while others wait hands it to the oldest).
     * (2000; docs/pool.md has the numbers) */
    int barge_limit_us;
    /* Credential provider (NULL: the URL's password, or libpq's and
     * Connector/C's own sources). Called before every physical connect on
     * PostgreSQL and MariaDB/MySQL: each connection of the pool, of its
     * replicas' pools and of the replica monitor, and (MariaDB/MySQL) the
     * extra connection that ends a timed-out statement on the server. What
     * it writes to cred->password is used for that connect only, in place
     * of the URL's password, so a token that expires (AWS RDS IAM: 15
     * minutes, checked only at connect) works: every new connect asks
     * again. SQLite has no password and never calls it. It runs on
     * whatever thread connects (a session's, the housekeeper's, a replica
     * monitor's), with no dbscope lock held, possibly on several threads
     * at once: it must be thread-safe, and it may block (its time counts
     * against nothing; keep it short or cache). It must not call dbscope
     * on this pool. A provider that fails (returns non-zero, writes no
     * NUL within password_cap, or writes an empty password, which never
     * falls back to the URL's) fails the connect with DBS_ECONFIG, whose
     * message names the provider, the host and user, and cred->why: a
     * configuration error, never retried and never counted by the circuit
     * breaker. The password never appears in a message, event or log. */
    dbs_credential_fn credential;
    void *credential_user;        /* passed to credential */
} dbs_config;

/* See barge_limit_us: how long, as a share of that limit, a thread's
 * sessions may keep the connection they take back while others wait. */
#define DBS_BARGE_HOLD_SHARE 64

/* Fills cfg with the defaults above (url = NULL). Always call it first: fields
 * may be added at the end in later versions. Any thread. */
void dbs_config_init(dbs_config *cfg);

/* Overrides fields from the environment: DATABASE_URL, DB_POOL_SIZE,
 * DB_MAX_OVERFLOW, DB_POOL_MIN_IDLE, DB_POOL_TIMEOUT (seconds, fractions allowed,
 * with a decimal point whatever the program's locale),
 * DB_POOL_RECYCLE (seconds), DB_POOL_PRE_PING (1/0/true/false/yes/no/on/off),
 * DB_LEAK_THRESHOLD_MS, and every timeout field in whole milliseconds:
 * DB_CONNECT_TIMEOUT_MS (connect_timeout_ms), DB_STATEMENT_TIMEOUT_MS
 * (statement_timeout_ms), DB_ACQUIRE_TIMEOUT_MS (acquire_timeout_ms, like
 * DB_POOL_TIMEOUT), DB_MAX_LIFETIME_MS (max_lifetime_ms, like
 * DB_POOL_RECYCLE), DB_IDLE_TIMEOUT_MS (idle_timeout_ms),
 * DB_BUSY_TIMEOUT_MS (busy_timeout_ms); setting both names of one field is
 * DBS_ECONFIG. An unset or empty variable leaves its field alone.
 * A bad value returns DBS_ECONFIG naming the variable, and leaves cfg
 * unchanged. cfg->url points into the environment afterwards: do not change
 * DATABASE_URL while cfg is in use. Not thread-safe against setenv. */
int dbs_config_from_env(dbs_config *cfg, dbs_error *err);

/* ------------------------------------------------------------------------
 * Pool
 * ------------------------------------------------------------------------ */

typedef struct dbs_pool dbs_pool;

typedef struct dbs_stats {
    /* One consistent snapshot, at every moment: size = idle + in_use =
     * created - closed, and closed = the closed_* reasons below added up
     * (plus, in DBS_POOL_NONE mode, the connection closed after each
     * session). */
    int size;             /* open connections (idle + in use) */
    int idle;             /* open and not in use */
    int in_use;           /* held by sessions, or by the pool itself while
                             it opens, pings, replaces or closes one */
    int overflow_in_use;  /* in use beyond pool_size */
    int waiting;          /* threads waiting for a connection */
    /* timeouts: acquires that ended DBS_ETIMEOUT without a connection,
     * each with its DBS_EVENT_TIMEOUT and counted as DBS_ETIMEOUT in
     * dbs_pool_errors (so the two agree): a session's or a dbs_transact
     * attempt's past acquire_timeout_ms, and an event loop's unit's past
     * that bound or its own (dbs_unit_set_timeout) while it waited for a
     * connection, a worker thread or its next attempt, on every backend.
     * dbs_pool_wait_ready's checks count nowhere. */
    uint64_t acquired, released, created, closed, timeouts, leaks, retries;
    /* dbscope's additions */
    int pending;          /* connects in progress */
    int max_size;         /* the most connections the pool may open */
    uint64_t connect_failures; /* failed connect attempts */
    uint64_t invalidated; /* connections found broken and discarded */
    uint64_t unavailable; /* acquires refused while the circuit was open */
    /* Closed, by reason (the event's reason, and the Prometheus label):
     * past max_lifetime_ms; idle past idle_timeout_ms; found broken
     * (also counted in invalidated); above pool_size with nobody waiting;
     * working, but what a session left on it could not be undone (its
     * rollback or reset at dbs_session_close failed, or the session took
     * its native handle: "dirty", never handed out again; a reset that
     * fails in the COMMIT's own round trip, as dbs_transact and
     * dbs_session_commit_close send it on PostgreSQL and MariaDB, counts
     * as broken); at shutdown. With the NONE mode's closes (in closed only), they add up
     * to closed. */
    uint64_t closed_lifetime, closed_idle, closed_broken, closed_overflow,
        closed_dirty, closed_pool;
    uint64_t leaks_recovered; /* sessions reported as leaked, closed later */
    uint64_t slow_sessions;   /* sessions held past slow_session_ms */
    /* Acquire wait and session usage times in microseconds (0 with metrics
     * off), from log-bucketed histograms: a percentile is the upper bound
     * of its bucket, at most 1/8 of an octave (9%) above the true value. */
    int64_t wait_p50_us, wait_p90_us, wait_p99_us, wait_max_us;
    int64_t use_p50_us, use_p90_us, use_p99_us, use_max_us;
    uint64_t wait_count, use_count;
    /* Replicas (replica_url): totals over their pools. */
    int replica_size;         /* open replica connections */
    int replica_in_use;       /* replica connections held by sessions */
    int64_t replica_lag_ms;   /* the largest lag of a replica, -1 when one
                                 is unknown (not measured lately) or there
                                 are no replicas; a host of replica_url
                                 found not in recovery (the primary) is
                                 left out */
    uint64_t ro_fallbacks;    /* read-only sessions run on the primary (or
                                 refused, replica_fallback = 0) because no
                                 replica qualified */
    uint64_t ro_pos_fallbacks; /* read-only sessions run on the primary (or
                                 refused) because no replica that qualified
                                 had replayed the position they needed
                                 (dbs_session_open_ro_after, or their
                                 user's last commit) */
} dbs_stats;

/* Creates a pool from cfg (copied, url included) and opens one connection to
 * prove the configuration works; it stays in the pool. Blocks for that
 * connect (at most connect_timeout_ms); with lazy_open it connects nothing
 * and returns at once, and sessions then fail with DBS_ECONNECT (then
 * DBS_EUNAVAILABLE once the circuit opens) until the database answers, or
 * with DBS_ECONFIG, every time, while it refuses them for good (a wrong
 * password, an unknown database). Returns NULL with DBS_ECONFIG (bad URL
 * or field, or that refusal: the message names it and sqlstate holds the
 * server's SQLSTATE) or DBS_ECONNECT (message says why; never the
 * password). Any thread. */
dbs_pool *dbs_pool_open(const dbs_config *cfg, dbs_error *err) DBS__WARN_UNUSED;

/* The last call on a pool: shuts it down as dbs_pool_shutdown(pool, 0) does
 * unless that was called, reports the sessions still open as leaks, and
 * gives up the caller's handle. Waits for no session and for no connection
 * I/O: sessions still open get DBS_ECLOSED on their next call, their
 * connections are closed when they close, and the pool's memory is freed
 * with the last of them.
 * No call on pool may start after this one (a thread that might still open
 * a session must be joined first: see dbs_pool_shutdown); calls already
 * under way (dbs_transact, which keeps the pool across its retries,
 * dbs_pool_stats and the other calls that only read the pool, such as
 * dbs_pool_metrics from a scrape's thread, open sessions, and a
 * dbs_pool_shutdown on another thread, which keeps the pool's memory until
 * it returns, however long its drain) stay safe. "Under way" means begun
 * before this call was made, as the program orders its threads (a call
 * merely racing this one may find the pool freed). If another thread's
 * dbs_pool_shutdown is stopping the pool's threads, this call waits until
 * they are joined. Blocks for closing the idle
 * connections and for joining the pool's own threads (as dbs_pool_shutdown
 * does) and, on PostgreSQL, for the pool's cancel requests still
 * unanswered (sent when a statement passed its bound, was cancelled or
 * interrupted by the shutdown), up to connect_timeout_ms (10 s when 0):
 * when it returns, no thread the pool started is left, none inside
 * libpq or Connector/C, so the program may exit or unload the library.
 * The one exception is a cancel request the server has not answered in
 * that time (a server that accepts it and never answers, a network that
 * drops packets: libpq's PQcancel has no bound of its own but the
 * connection's keep-alives and tcp_user_timeout): its thread is left to
 * end by itself, holding nothing of the pool, and a DBS_EVENT_NOTICE says
 * how many were left.
 * Call once, from any thread of the program's; NULL is a no-op. Not from
 * a callback dbscope runs on a thread of its own (on_event for a leak the
 * housekeeper found, a unit's work on an event loop's worker), which this
 * call would have to join: such a call does nothing but print a line on
 * stderr. */
void dbs_pool_close(dbs_pool *pool);

/* Graceful shutdown, for servers, of pool and its replicas' pools. From the
 * call on, every new session on pool fails with DBS_ECLOSED and every thread waiting for a connection wakes
 * with DBS_ECLOSED, without connecting even if it had just been given room
 * for a new connection; a connect already under way ends within
 * connect_timeout_ms and its connection is closed, never handed out. Idle
 * connections are closed, and the pool's own threads (the housekeeper, the
 * replica monitors) are stopped and joined: a connect, ping or name lookup
 * one of them has under way, even to a server that never answers, is
 * abandoned within about 50 ms (its connection closed, never handed out),
 * so the join takes that plus closing what it opened, never a connect or
 * statement bound. (A name lookup's own helper thread, inside
 * getaddrinfo, cannot be stopped: it is left to end by itself, and holds
 * nothing of the pool.) The event loops' worker threads (dbs_loop) are
 * stopped and joined too: units still queued for them complete with
 * DBS_ECLOSED, and a statement one of them runs is interrupted on the
 * server (sqlite3_interrupt, PostgreSQL's cancel request, MariaDB KILL
 * of its connection) and its unit completes with DBS_ECLOSED; the join waits for that
 * statement to return, which a server that stopped answering delays up to
 * the statement bound. A loop still open gets DBS_ECLOSED for its units
 * from then on (every unit not yet started, on a connection the loop
 * holds too; one in flight runs on); close it before dbs_pool_close.
 * Then waits up to timeout_ms (0: not at all; < 0: without bound)
 * for the sessions still open to close, and returns how many are still open
 * (0: drained). Those sessions are what the drain is for: the requests in
 * flight finish. A session open at the call (on pool or a replica's pool)
 * keeps working until it closes: statements, rows, dbs_commit,
 * dbs_rollback, nested units, dbs_session_commit_close; so does the
 * attempt a dbs_transact call is running (it commits as usual), whose
 * retry, like any new session, gets DBS_ECLOSED. Closing such a session
 * closes its connection (ending what it left uncommitted) rather than
 * keeping it. Only after dbs_pool_close do their calls return DBS_ECLOSED.
 * The pool's memory stays valid until dbs_pool_close, so statistics and
 * metrics keep working too.
 * A server's sequence: stop accepting requests; dbs_pool_shutdown(pool,
 * deadline); join the workers; dbs_pool_close(pool). Blocks at most
 * timeout_ms plus closing the idle connections plus joining the pool's
 * threads as above (tens of ms). Any thread of the program's; calling it
 * again, or on several threads at once, is harmless: every call returns
 * only once every thread the pool started is stopped and joined (the
 * housekeeper, the replica monitors and the replicas' own, the event
 * loops' worker threads), waiting for the joins another thread's call has
 * under way, so that a dbs_pool_close after any of them finds none left.
 * A dbs_pool_close on another thread may come while this call drains: the
 * call keeps the pool's memory until it returns. An event loop opened once
 * the shutdown has begun fails with DBS_ECLOSED and starts no thread (see
 * dbs_loop_open). On a thread of dbscope's own (from on_event or a
 * unit's work there, as for dbs_pool_close) it does nothing and returns
 * DBS_EMISUSE, as for a pool that is not open. */
int dbs_pool_shutdown(dbs_pool *pool, int timeout_ms);

/* Checks out a connection, validates it with a round trip and returns it.
 * Blocks up to acquire_timeout_ms plus one round trip. Any thread. */
int dbs_pool_ping(dbs_pool *pool, dbs_error *err);

/* Waits until the pool holds min_idle open connections (at least one; a
 * NONE-mode pool, which keeps none: until one connect works), connecting
 * them from the calling thread rather than waiting for the housekeeper,
 * so that a service says it is ready only once its first requests will
 * not all connect at once. Returns DBS_OK when they are open; else, once
 * timeout_ms has passed, DBS_ECONNECT when connects failed (the message
 * says how many of how many connections are open and why the last
 * connect failed) or DBS_ETIMEOUT when they are still under way; at once
 * DBS_ECONFIG when the database refuses the connects for good (a wrong
 * password, a failing credential provider), DBS_ECLOSED after a shutdown,
 * DBS_EMISUSE for a negative timeout_ms. Blocks up to timeout_ms plus one
 * connect (connect_timeout_ms). Its checks are not the program's acquires:
 * a refused one counts nowhere, neither in dbs_pool_errors nor in the
 * stats' unavailable or timeouts, however often it retries (whatever
 * min_idle is), and the session its ping holds is not counted as one
 * (acquired, released, the wait and use histograms, check-out and
 * check-in events); its connects count as any connect does (created,
 * connect_failures, the circuit), and a connection its ping finds broken
 * is discarded with its invalidate event, as any. Any thread. */
int dbs_pool_wait_ready(dbs_pool *pool, int timeout_ms, dbs_error *err);

/* After fork(). A pool opened in a process is that process's: a child of
 * a pre-fork server inherits its memory and its connections' sockets, which
 * the parent's server sessions share, and must never send anything on them
 * (its statements would interleave with the parent's; a goodbye message
 * would end the parent's session). In the child, every call that would use
 * them (dbs_session_open and _ro, dbs_transact and its variants,
 * dbs_pool_ping, dbs_pool_wait_ready, and every call on a session opened
 * before the fork) returns DBS_EMISUSE saying so, until the child calls
 * dbs_pool_after_fork_child. That call lets go of every inherited
 * connection WITHOUT sending anything on it (PostgreSQL, MariaDB: the
 * socket is replaced by /dev/null before the client library closes it, so
 * neither Terminate/COM_QUIT nor a TLS close_notify reaches the server;
 * SQLite: its handles are left untouched and allocated, as SQLite requires
 * of a connection that crossed a fork), forgets the sessions other threads
 * had open, re-makes the pool's locks, starts its housekeeper (and replica
 * monitors) again, and leaves the pool empty and usable: the child's
 * sessions open connections of its own. A session the calling thread had
 * open at the fork can only be closed (dbs_session_close lets go of its
 * connection the same way; dbs_rows_close of its rows lets go of them
 * without touching the connection, their memory left). dbs_pool_close
 * and dbs_pool_shutdown in a child do this first by themselves. Call it in the child right after fork(),
 * before it starts threads and before any other call on the pool
 * (dbs_pool_stats included); the parent's pool and connections are
 * unaffected. DBS_OK (also in the process that opened the pool: nothing to
 * do), or DBS_ENOMEM when a thread cannot be started. Blocks for no I/O.
 *
 * A child inherits every lock as it was at the fork, and one that another
 * thread held stays held for good; the database libraries keep
 * process-wide ones (SQLite's static mutexes, Connector/C's plugin list,
 * OpenSSL's stores). The library's own threads (the housekeeper, the
 * replica monitors, the SQLite workers of event loops) are kept out of
 * them at a fork: fork() waits, in a pthread_atfork handler, for the pass
 * of each such thread that is under way (a ping, a warm-up connect, a
 * lag sample, a unit of work) to end, at most that pass's own bound
 * (connect_timeout_ms, statement_timeout_ms); passes wait for the fork in
 * turn. A fork from an event callback the housekeeper runs does not wait.
 * Threads of the program's own that are inside a library call at the
 * fork are the program's to stop first, as with any library. */
int dbs_pool_after_fork_child(dbs_pool *pool, dbs_error *err);

/* Fills *out with one consistent snapshot of the pool's counters. Takes the
 * pool's locks briefly (checkouts pause meanwhile); never blocks on I/O.
 * Any thread. */
void dbs_pool_stats(dbs_pool *pool, dbs_stats *out);

/* Writes the pool's stats as Prometheus text exposition (version 0.0.4):
 * gauges and counters with HELP and TYPE lines, wait and usage times as
 * Prometheus histograms, every dbscope_* series labelled pool="<name>"
 * and target="primary" (the OpenTelemetry names below carry their own
 * labels), or, for each replica's pool (replica_url),
 * target="replica" and host="<host:port>"; with replicas, also
 * dbscope_replica_lag_seconds per replica (-1: unknown) and
 * dbscope_ro_fallbacks_total. Returns the
 * length of the whole text (like snprintf: if >= len, it was cut; call again
 * with a larger buffer; buf NULL with len 0 measures), or a negative
 * dbs_code (DBS_EMISUSE for a bad pool, or buf NULL with len > 0). buf is
 * always NUL-terminated when len > 0. Any thread; takes the pool's locks
 * briefly. */
int dbs_pool_metrics(dbs_pool *pool, char *buf, size_t len);

/* The same stats as one JSON object, with the same return convention; with
 * "circuit" ("closed", "open", "half_open"), "errors" (dbs_pool_errors's
 * total) and "errors_by" ([{"class","sqlstate","count"}], the cells of the
 * error table that counted something). buf is the caller's. Any thread;
 * takes the pool's locks briefly, never waits on a connection. */
int dbs_pool_stats_json(dbs_pool *pool, char *buf, size_t len);

/* ------------------------------------------------------------------------
 * Observability: errors, the circuit, histograms
 *
 * dbs_pool_metrics also writes every pool metric under the name
 * OpenTelemetry's database semantic conventions give it, in the form the
 * OpenTelemetry-to-Prometheus mapping makes of it (dots to underscores,
 * the unit "s" as _seconds, counters with _total; labels
 * db_client_connection_pool_name and, for operations, db_system_name):
 * db_client_connection_count{db_client_connection_state="idle"|"used"},
 * db_client_connection_idle_max (pool_size), _idle_min (min_idle), _max
 * (pool_size + max_overflow), _pending_requests (threads waiting),
 * db_client_connection_timeouts_total, the histograms
 * db_client_connection_create_time_seconds (connects that succeeded),
 * _wait_time_seconds, _use_time_seconds, and
 * db_client_operation_duration_seconds (each dbs_exec and dbs_query call,
 * and each statement of an event loop's unit that ran, once per attempt,
 * on every backend; db_system_name "sqlite", "postgresql" or "mariadb").
 * Beside them:
 * dbscope_errors_total{error_class,sqlstate} and the circuit as
 * dbscope_circuit_open (0/1) and dbscope_circuit_state{state}.
 * docs/observability.md has the table, and how to open a span per unit of
 * work from the events.
 * ------------------------------------------------------------------------ */

/* The failures the pool's callers got, counted by error class (the
 * dbs_code) and SQLSTATE: every failed acquire (dbs_session_open, the
 * sessions dbs_transact opens, dbs_session_open_ro, whose refusal for
 * want of a qualifying replica counts here and whose failure on a
 * replica's pool counts in that pool's table: DBS_ETIMEOUT,
 * DBS_EUNAVAILABLE, DBS_ECONNECT, DBS_ECLOSED after a shutdown, ...) and
 * every failure of a statement, a fetch, BEGIN, COMMIT or ROLLBACK on its
 * sessions, as the backend reported it (whether or not the caller passed a
 * dbs_error); the rollback or reset that ends a session (dbs_session_close,
 * dbs_session_commit_close, dbs_transact's, a worker's unit's, and on
 * PostgreSQL the reset an event loop sends after a unit) when it fails,
 * though no call returns that failure; an event loop's units count the
 * same way on every backend, each failed attempt once (its acquire, its
 * send, or what failed in it: a unit that ends DBS_ETIMEOUT, DBS_ENOMEM or
 * DBS_ECLOSED before it has a connection included, whether it waited in
 * the loop's queue or a worker thread's), and so does a dbs_unit_submit
 * refused with DBS_ECLOSED or DBS_EBUSY (the blocking acquire has no such
 * refusal: its waiters queue). A unit the program cancelled while it
 * waited never failed and counts nowhere; one cancelled in flight
 * (dbs_unit_cancel, dbs_loop_close), timed out while it ran, or cut off
 * by dbs_pool_shutdown on a worker counts once, as its callback reports
 * it (DBS_ECANCELED, DBS_ESTMT_TIMEOUT, DBS_ECLOSED, DBS_ECOMMIT_UNKNOWN),
 * on every backend, never as the error of the statement the cancel
 * interrupted. A PostgreSQL reset posted at a session's close (after
 * dbs_commit) that fails counts once, as a failed reset at close: the
 * next check-out's pre_ping reads it and hands out another connection.
 * Nor do dbscope's own checks count (dbs_pool_wait_ready,
 * the housekeeper's keep-alive pings, whose broken connections count in
 * invalidated). Every DBS_ETIMEOUT counted here is one of dbs_stats'
 * timeouts. The table is fixed (bounded cardinality in the metrics): SQLSTATEs outside
 * its list of common ones count as "other".
 * Returns the count of failures with code (a negative dbs_code; 0: every
 * class) and sqlstate (five characters; "" : those without one; NULL:
 * any). 0 for a bad pool. Lock-free; any thread. */
uint64_t dbs_pool_errors(dbs_pool *pool, int code, const char *sqlstate);

/* The circuit breaker's state (see circuit_threshold). */
enum dbs_circuit_state {
    DBS_CIRCUIT_CLOSED = 0,   /* connects succeed: acquires go through */
    DBS_CIRCUIT_OPEN = 1,     /* connects keep failing: acquires that need
                                 one fail fast with DBS_EUNAVAILABLE */
    DBS_CIRCUIT_HALF_OPEN = 2 /* open, with one probe connect under way */
};

/* Returns the pool's enum dbs_circuit_state, or DBS_EMISUSE for a bad
 * pool. Takes the pool's lock briefly; any thread. */
int dbs_pool_circuit(dbs_pool *pool);

#define DBS_HISTOGRAM_BUCKETS 320

enum dbs_histogram_kind {
    DBS_HIST_WAIT,     /* acquire waits (db.client.connection.wait_time) */
    DBS_HIST_USE,      /* session hold times (.use_time) */
    DBS_HIST_CREATE,   /* connects that succeeded (.create_time) */
    DBS_HIST_OPERATION /* dbs_exec and dbs_query calls, and each statement
                          of a dbs_unit that ran (one that failed
                          included; those after it, which never ran, not),
                          once per attempt, whichever backend
                          (db.client.operation.duration) */
};

/* A snapshot of one of the pool's log-bucketed histograms of durations in
 * microseconds, counted since the pool opened: eight buckets an octave,
 * bucket i counting the values up to dbs_histogram_upper_us(i) (and above
 * the bucket before). Caller-owned (about 2.6 kB). */
typedef struct dbs_histogram {
    uint64_t count;  /* values recorded */
    uint64_t sum_us; /* their sum */
    uint64_t max_us; /* the largest */
    uint64_t bucket[DBS_HISTOGRAM_BUCKETS];
} dbs_histogram;

/* Fills *out with the primary's histogram of kind (a replica's pool is
 * not included; dbs_pool_metrics exports those). All zero with metrics
 * off. DBS_OK, DBS_EMISUSE (bad pool, kind or out NULL) or DBS_ENOMEM.
 * Never blocks on I/O; takes the shards' locks one at a time, briefly.
 * Any thread. */
int dbs_pool_histogram(dbs_pool *pool, enum dbs_histogram_kind kind, dbs_histogram *out);

/* The largest value bucket counts, in µs (0 for a bucket out of range).
 * Any thread. */
uint64_t dbs_histogram_upper_us(int bucket);

/* The q-quantile (0 < q <= 1) in µs of the values recorded between two
 * snapshots of one histogram, before (NULL: since the start) and now:
 * windowed percentiles, e.g. the p99 acquire wait of the last ten seconds
 * from a snapshot taken every second. The upper bound of the value's
 * bucket, at most 9% above it. -1 when no value was recorded in between,
 * for q out of range, or NULL now. Allocates nothing the caller frees;
 * any thread. */
int64_t dbs_histogram_percentile(const dbs_histogram *now, const dbs_histogram *before,
                                 double q);

/* One open session, as seen by dbs_pool_sessions. Valid only during the
 * callback; strings are copies, but file and func, which are the strings
 * the acquire site passed (see dbs_session_open_at). */
typedef struct dbs_session_info {
    const char *file;       /* acquire site */
    int line;
    const char *func;
    unsigned long thread;   /* opaque id of the owner thread */
    int64_t age_ms;         /* since the session got its connection */
    int in_transaction;     /* 1: a transaction is open (idle in transaction
                               if the thread is doing something else) */
    int leak_reported;      /* 1: held past leak_threshold_ms, reported */
    uint64_t conn_id;
    dbs_context ctx;
    const char *target;     /* "primary", or the replica's "host:port" */
    int read_only;          /* 1: opened with dbs_session_open_ro */
} dbs_session_info;

typedef void (*dbs_session_fn)(const dbs_session_info *info, void *user);

/* Calls fn for every session open on pool (its replicas' included, see
 * target) at one instant, oldest first:
 * who holds which connection, where it was acquired, since when. The list
 * is copied under the pool's locks and fn runs after they are released, so
 * fn may call any dbscope function; it runs with cancellation deferred
 * (pthread_cancel acts after this call returns); a pthread_exit in fn
 * lets go of the copy and the pool as the call's return would. Returns the number of
 * sessions visited, or a negative dbs_code (DBS_ENOMEM). Any thread, under
 * any load. */
int dbs_pool_sessions(dbs_pool *pool, dbs_session_fn fn, void *user);

/* ------------------------------------------------------------------------
 * Sessions: the unit of work
 * ------------------------------------------------------------------------ */

typedef struct dbs_session dbs_session;

/* Compile-time leak detection: GCC's -fanalyzer tracks a session from
 * dbs_session_open to dbs_session_close (the malloc attribute below), but
 * stops tracking it once it has been passed to a function that might keep
 * it. Building with -DDBSCOPE_ANALYZE declares the functions that only use
 * a session (dbs_exec, dbs_query, dbs_commit, ...) as taking it const,
 * which tells the analyzer they do not keep it, so a session leaked after
 * its first statement is reported too. The calling convention is the same
 * either way; use it in an analysis build (docs/leaks.md). */
#ifdef DBSCOPE_ANALYZE
#define DBS__IN const
#else
#define DBS__IN
#endif

/* Closes s: rolls back anything uncommitted, resets the connection's state
 * and returns the connection to the pool (or discards it if broken). A
 * rollback or reset that fails here is reported by nothing the program
 * calls, but counts in dbs_pool_errors as a failure of the session's, and
 * its connection is closed (its invalidate event, when broken, names that
 * failure). Blocks
 * for the rollback and reset; on PostgreSQL, after a dbs_commit, the reset
 * is written to the server (which runs it as it arrives) and its answer is
 * read by the connection's next use. Only the thread that opened s may close
 * it (elsewhere: refused, s stays open); the session a running dbs_transact
 * gave its work is that call's to close (refused too, with a message on
 * stderr); NULL is a no-op.
 * SQLite, under DBS_RESET_FULL: the next user sees last_insert_rowid() and
 * changes() as 0; total_changes() counts every change since the connection
 * opened and cannot be reset (a session must not rely on it: use changes(),
 * or the count dbs_exec returns). A session that prepared a statement
 * changing connection state (anything written to the temp database, however
 * named; ATTACH; a PRAGMA with a value), even one dbscope then refused, gets
 * its connection reopened. PRAGMAs that change every connection in the
 * process (soft_heap_limit, hard_heap_limit, temp_store_directory,
 * data_store_directory) cannot be undone by any reset: setting one is
 * refused with DBS_ESQL (reading it is allowed); set them through the
 * SQLite C API at start-up.
 * A session that ends with a commit costs less closed by
 * dbs_session_commit_close (below).
 * PostgreSQL: what DISCARD ALL undoes, and random() is seeded again (a
 * session's setseed() survives DISCARD ALL); not undone: state kept by
 * extensions (dblink, LOAD), and a custom setting a session defined reads
 * '' rather than NULL afterwards (docs/postgresql.md).
 * MariaDB/MySQL, under DBS_RESET_FULL: COM_RESET_CONNECTION after every
 * session that ran a statement (its own round trip; prepared statements are
 * prepared again). Under DBS_RESET_TRACKED: only when the server reported a
 * change of session state, a statement failed, or the transaction ended
 * other than by dbscope; otherwise named locks,
 * LAST_INSERT_ID(), the seeds of RAND() (reseeded) and unreported user
 * variables are dealt with in the
 * COMMIT's or ROLLBACK's round trip and prepared statements stay; a HANDLER
 * left open and a sequence's PREVIOUS VALUE are not seen that way
 * (docs/mariadb.md). FOUND_ROWS() is not the previous session's count
 * either way: COM_RESET_CONNECTION keeps it, so a SELECT of no row goes in
 * front of the next START TRANSACTION, and the release statement is one.
 * After a dbs_commit (no transaction left to end),
 * that statement is written to the server, which runs it as it arrives,
 * and its answer is read by the connection's next use, as on PostgreSQL:
 * another connection's GET_LOCK of a name this session held may then
 * briefly find it still taken. */
void dbs_session_close(dbs_session *s);

/* Opens a session on pool with a connection from it: the first free one
 * (idle, or parked by another thread), else a new one if the pool may grow,
 * else the first to be released to the threads waiting in order of arrival
 * (but see barge_limit_us: while threads wait, a thread may take back the
 * connection it has just given back, within bounds).
 * Returns within acquire_timeout_ms (DBS_ETIMEOUT) plus at most one bounded
 * connect (connect_timeout_ms) or validation (statement_timeout_ms): a
 * connection that fails validation is replaced only while the acquire
 * timeout has not passed (else DBS_ECONNECT). DBS_ECLOSED once the pool is
 * shut down, DBS_EUNAVAILABLE while its circuit is open. ctx may be NULL;
 * it is copied. file, line and func name the acquire site for leak reports:
 * call it through dbs_session_open. file and func (either may be NULL) are
 * kept as given, not copied, so that opening a session costs no copy: they
 * must stay valid until the pool is closed, as the string literals
 * dbs_session_open passes do (a binding passes strings it keeps).
 * The session belongs to the calling thread; close it with
 * dbs_session_close. Returns NULL on failure. */
dbs_session *dbs_session_open_at(dbs_pool *pool, const dbs_context *ctx,
                                 dbs_error *err, const char *file, int line,
                                 const char *func)
    DBS__DEALLOC(dbs_session_close) DBS__WARN_UNUSED;

#define dbs_session_open(pool, ctx, err)                                       \
    dbs_session_open_at(pool, ctx, err, __FILE__, __LINE__, __func__)

/* Opens a read-only session: like dbs_session_open, but its transactions
 * are READ ONLY by construction, so a write fails with DBS_ESQL and SQLSTATE
 * 25006, whatever the session sent before it: a COMMIT or ROLLBACK sent as
 * SQL makes the next statement begin a new read-only transaction, and the
 * switch cannot be turned off. PostgreSQL: BEGIN READ ONLY, with the first
 * snapshot taken in BEGIN's own flight so SET TRANSACTION READ WRITE is
 * refused. SQLite: PRAGMA query_only, only statements that
 * sqlite3_stmt_readonly calls read-only, and no PRAGMA query_only. MariaDB:
 * START TRANSACTION READ ONLY and the session's access mode READ ONLY,
 * whose changes the server reports and dbscope undoes before the next
 * statement; a statement that changes the access mode for itself alone
 * (SET STATEMENT tx_read_only=0 FOR ...) is not caught: use an account
 * without write privileges where that matters. With replica_url it runs on a replica that qualifies (the
 * lag bound, reachable, in recovery), chosen from cached measurements
 * without a round trip; while none does, on the primary (replica_fallback
 * = 1, counted in ro_fallbacks) or not at all (DBS_EUNAVAILABLE). It
 * never sees data older than replica_max_lag_ms (a replica whose
 * measurements are late stops qualifying), and it sees every commit that
 * ctx->user_id made through this pool (see replica_url). A backend that
 * cannot enforce read-only returns DBS_ECONFIG naming it. Blocks like dbs_session_open (a replica whose
 * connect fails is passed over for the next, then the primary; the waits
 * for a replica's connection and the primary's share one
 * acquire_timeout_ms, counted from the call). The
 * session belongs to the calling thread; close it with dbs_session_close.
 * Returns NULL on failure. */
dbs_session *dbs_session_open_ro_at(dbs_pool *pool, const dbs_context *ctx,
                                    dbs_error *err, const char *file, int line,
                                    const char *func)
    DBS__DEALLOC(dbs_session_close) DBS__WARN_UNUSED;

#define dbs_session_open_ro(pool, ctx, err)                                    \
    dbs_session_open_ro_at(pool, ctx, err, __FILE__, __LINE__, __func__)

/* Opens a read-only session that sees at least what the commit at
 * position pos wrote (dbs_session_commit_pos of the session that made it,
 * on this process or another; 0: no requirement), as well as what
 * dbs_session_open_ro promises: on a replica whose last measurement shows
 * it has replayed pos (a replica measured below it is passed over; it is
 * measured every 100 ms, and no round trip is spent to ask again), else
 * as if no replica qualified: on the primary (replica_fallback = 1,
 * counted in ro_pos_fallbacks) or not at all (DBS_EUNAVAILABLE). Without
 * replica_url the session runs on pool, which is the primary. Blocks,
 * belongs to the calling thread and is closed like dbs_session_open_ro.
 * Returns NULL on failure. */
dbs_session *dbs_session_open_ro_after_at(dbs_pool *pool, const dbs_context *ctx,
                                          uint64_t pos, dbs_error *err,
                                          const char *file, int line,
                                          const char *func)
    DBS__DEALLOC(dbs_session_close) DBS__WARN_UNUSED;

#define dbs_session_open_ro_after(pool, ctx, pos, err)                         \
    dbs_session_open_ro_after_at(pool, ctx, pos, err, __FILE__, __LINE__,      \
                                 __func__)

/* The position in the server's log (PostgreSQL: the WAL position, as a
 * number: pg_lsn "X/Y" is X << 32 | Y) of s's last successful commit
 * that may have written, read in that COMMIT's own round trip; pass it to
 * dbs_session_open_ro_after or dbs_transact_ro_after to read what that
 * commit wrote (on this pool, another pool or another process). 0 if s
 * has committed no write yet, on a read-only session, on a pool without
 * replica_url (positions are read only where replicas can use them), or
 * on a backend without positions (SQLite, MariaDB/MySQL);
 * UINT64_MAX (no replica reaches it: reads go to the primary) in the rare
 * case where the commit succeeded but its position did not come back.
 * Valid until s closes. Owner thread only (0 otherwise); never blocks. */
uint64_t dbs_session_commit_pos(DBS__IN dbs_session *s);

/* Commits the current transaction, if any (none: returns DBS_OK). The next
 * statement begins a new one. DBS_ECOMMIT_UNKNOWN when the connection was lost
 * with COMMIT in flight. Blocks for one round trip. Owner thread only.
 * SQLite files: a transaction that wrote returns once its commit is on disk,
 * which takes one sync of the WAL shared with the commits of other threads
 * (the call also waits for a sync another thread is running); a sync that
 * fails gives DBS_ECOMMIT_UNKNOWN (other sessions may already see the
 * commit; a power loss may undo it). A COMMIT into a database file or WAL
 * that was deleted or replaced while open is rolled back instead: DBS_ECONNECT,
 * the connection is discarded. */
int dbs_commit(DBS__IN dbs_session *s, dbs_error *err);

/* dbs_commit, then dbs_session_close, for a session that ends with its
 * commit. Knowing that nothing follows the COMMIT, the backend sends the
 * release reset with it, as dbs_transact does: on PostgreSQL one flight
 * and one turn of the server where dbs_commit and dbs_session_close take
 * two (bench/reset_cost.sh: about 16 us of the server's CPU a session,
 * "full-commit" against "full-transact"); on MariaDB/MySQL under
 * DBS_RESET_TRACKED the reset's statements ride in the COMMIT's round
 * trip; on SQLite it is the two calls. Returns what dbs_commit returns
 * (DBS_OK also when there was nothing to commit; DBS_ECOMMIT_UNKNOWN when
 * the outcome cannot be known; DBS_OK too when the commit succeeded and
 * the reset riding with it failed: that failure counts in
 * dbs_pool_errors, as one at dbs_session_close does, and the connection,
 * broken, is discarded with an invalidate event that names it); s is closed and freed in every case, the
 * connection back in the pool or discarded, except when the call is
 * refused with DBS_EMISUSE and s left open: s is NULL or closed, belongs
 * to another thread, or is the session of a dbs_transact running on this
 * thread (that call commits and closes it). A session opened before
 * fork() is let go of as dbs_session_close does, with DBS_EMISUSE.
 * Blocks for one round trip (SQLite: and the WAL sync dbs_commit waits
 * for). Owner thread only. */
int dbs_session_commit_close(dbs_session *s, dbs_error *err);

/* Rolls back the current transaction, if any: its locks are released
 * before it returns, on every backend. Blocks for one round trip. Owner
 * thread only. */
int dbs_rollback(DBS__IN dbs_session *s, dbs_error *err);

/* The backend's own handle (sqlite3 *, PGconn * or MYSQL *) for what
 * dbscope does not wrap. Valid until dbs_session_close. The handle reaches
 * state no reset covers (the client library's callbacks, options and
 * character set, a change of user), so a connection whose handle was
 * handed out is never reused, whatever the reset mode: dbs_session_close
 * closes it (a "dirty" close, counted in closed_dirty) and the pool opens
 * another when needed. A session that needs it pays that reconnect. Do not
 * begin, commit, roll back or close through it. What runs through it is in
 * the session's transaction only while one is open (begun by a statement
 * of dbscope's, not yet ended): before that, or after dbs_commit or
 * dbs_rollback, each statement commits at once, on every backend, and
 * dbs_session_close does not undo it; so a dbs_transact unit that took
 * the handle is never run again (see there). Callbacks set on it may be
 * called until the session closes (in dbs_transact, by its COMMIT after
 * work returns). On SQLite, busy_timeout_ms, the statement bound and
 * dbs_session_set_statement_timeout rest on dbscope's busy and progress
 * handlers: replaced through the handle (sqlite3_busy_handler,
 * sqlite3_busy_timeout, sqlite3_progress_handler), they no longer hold for
 * the rest of the session. Owner thread only; NULL on misuse. */
void *dbs_session_native(DBS__IN dbs_session *s);

/* Returns the context the session was opened with (strings owned by the
 * session, valid until it closes; fields may be NULL). Owner thread only. */
const dbs_context *dbs_session_context(DBS__IN dbs_session *s);

/* Sets the bound on each of this session's round trips (statements, COMMIT,
 * ROLLBACK) to timeout_ms (0: none), in place of the pool's
 * statement_timeout_ms, until the session closes: a report query may need
 * minutes, a health check a few hundred milliseconds. The connection's own
 * release work (reset, pings) keeps the pool's bound. A round trip that runs
 * out of time is cancelled on the server where it can be reached, the
 * connection is discarded, and the call returns DBS_ESTMT_TIMEOUT
 * (DBS_ECOMMIT_UNKNOWN for COMMIT). On SQLite the bound interrupts a
 * statement that runs past it (checked every few thousand VM steps) and
 * ends a wait on another connection's lock (DBS_ESTMT_TIMEOUT, COMMIT
 * included: a COMMIT that waited for a lock committed nothing, so it is
 * not DBS_ECOMMIT_UNKNOWN).
 * Returns DBS_OK; DBS_EMISUSE for a negative value; DBS_ECONFIG where the
 * backend fixes the bound when it connects (MariaDB/MySQL: its client's
 * socket timeouts), the pool's statement_timeout_ms then stands. Owner
 * thread only; never blocks. */
int dbs_session_set_statement_timeout(DBS__IN dbs_session *s, int timeout_ms,
                                      dbs_error *err);

typedef int (*dbs_work_fn)(dbs_session *s, void *arg, dbs_error *err);

/* Runs work(s, arg, err) in a transaction on a fresh session: commits when
 * work returns 0, rolls back otherwise, always closes the session. (Called
 * from a unit's work, on the same thread and for the same pool, it runs as
 * a savepoint of that unit instead: see "Nested units" below.) work
 * returns 0 or a negative dbs_code (normally the one a dbscope call gave
 * it); any other value (a positive one, a code of its own) counts as
 * DBS_ESQL, so the return is always err->code and negative on failure.
 * Retries the
 * whole unit up to retry_max times, with exponential backoff and full jitter,
 * when it failed transiently (DBS_ERETRYABLE, DBS_EFULL, DBS_ECONNECT) before
 * any COMMIT of the unit was sent, or when its final COMMIT was refused as a
 * serialization failure or for a full disk (also when work ignored such a
 * failure of a statement and returned 0: on every backend the COMMIT of a
 * transaction the failure aborted is refused with its code and commits
 * nothing, and so are the statements it still ran, whose refusal work may
 * pass on instead; a lock wait timeout aborts it on PostgreSQL, and on MariaDB
 * under innodb_rollback_on_timeout). Never a DBS_ECONFIG (a wrong
 * password, an unknown database). Never once anything of the unit may have committed:
 * a unit whose work called dbs_commit and then failed is not run again, nor
 * one that got DBS_ECOMMIT_UNKNOWN or DBS_ESTMT_TIMEOUT, nor one whose
 * transaction the server reports ended other than by dbscope's COMMIT or
 * ROLLBACK (an implicit commit by DDL on MariaDB, a COMMIT, END or ROLLBACK
 * sent as SQL, SQLite back in autocommit mode), nor one whose work took the
 * native handle (dbs_session_native: what ran through it may have
 * committed where dbscope cannot see): the error is returned. Such
 * a unit's later statements run in a new transaction all the same. (On
 * MariaDB, a START TRANSACTION or COMMIT AND CHAIN sent as SQL in a
 * read-write session commits without the server reporting it: do not send
 * them. On PostgreSQL and MariaDB, a COMMIT sent as SQL whose connection
 * is lost before its answer looks like any statement lost with its
 * connection, DBS_ECONNECT, and the unit is run again: end a unit by
 * returning 0 or with dbs_commit, never with SQL. SQLite reports every
 * commit as it happens, so there one that fails part way is
 * DBS_ECOMMIT_UNKNOWN however it was sent.) Keeps pool
 * allocated until it returns, even across a dbs_pool_close on another thread
 * (the next attempt then gets DBS_ECLOSED). work must be safe
 * to run again and must not close s. Returns 0 or the last error. Blocks.
 * Any thread (the session belongs to the calling thread). */
int dbs_transact(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work,
                 void *arg, dbs_error *err);

/* dbs_transact with the acquire site named for leak reports and the session
 * list; dbs_transact calls through this macro name the caller's line. */
int dbs_transact_at(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work,
                    void *arg, dbs_error *err, const char *file, int line,
                    const char *func);

#define dbs_transact(pool, ctx, work, arg, err)                                \
    dbs_transact_at(pool, ctx, work, arg, err, __FILE__, __LINE__, __func__)

/* dbs_transact on a read-only session (dbs_session_open_ro): a replica
 * that qualifies, else the primary or DBS_EUNAVAILABLE per
 * replica_fallback. Each retry chooses again. Same ownership, blocking
 * and threads as dbs_transact. */
int dbs_transact_ro(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work,
                    void *arg, dbs_error *err);

int dbs_transact_ro_at(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work,
                       void *arg, dbs_error *err, const char *file, int line,
                       const char *func);

#define dbs_transact_ro(pool, ctx, work, arg, err)                             \
    dbs_transact_ro_at(pool, ctx, work, arg, err, __FILE__, __LINE__, __func__)

/* dbs_transact_ro on dbs_session_open_ro_after(pool, ctx, pos, ...): sees
 * at least what the commit at pos wrote. Same ownership, blocking and
 * threads as dbs_transact. */
int dbs_transact_ro_after(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                          dbs_work_fn work, void *arg, dbs_error *err);

int dbs_transact_ro_after_at(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                             dbs_work_fn work, void *arg, dbs_error *err,
                             const char *file, int line, const char *func);

#define dbs_transact_ro_after(pool, ctx, pos, work, arg, err)                  \
    dbs_transact_ro_after_at(pool, ctx, pos, work, arg, err, __FILE__,         \
                             __LINE__, __func__)

/* ---- Transaction options and nested units ---- */

/* Isolation levels. DBS_ISOLATION_DEFAULT is the server's own default,
 * which differs between backends: PostgreSQL READ COMMITTED, MariaDB/MySQL
 * (InnoDB) REPEATABLE READ, SQLite SERIALIZABLE (its only level; in WAL
 * mode a reader works on a snapshot and a writer whose snapshot is stale
 * gets DBS_ERETRYABLE). Each server's configuration can change its
 * default (default_transaction_isolation, transaction_isolation). */
enum dbs_isolation {
    DBS_ISOLATION_DEFAULT,
    DBS_ISOLATION_READ_COMMITTED,
    DBS_ISOLATION_REPEATABLE_READ,
    DBS_ISOLATION_SERIALIZABLE
};

/* How a transaction begins. A zeroed struct (or NULL where one is taken)
 * is a plain transaction: the server's default level, read-write. The
 * options go out with the transaction's start itself, in the same round
 * trip as its first statement: PostgreSQL BEGIN ISOLATION LEVEL ... READ
 * ONLY DEFERRABLE; MariaDB/MySQL SET TRANSACTION ISOLATION LEVEL ... (for
 * that one transaction) and START TRANSACTION [READ ONLY] in one
 * multi-statement; SQLite BEGIN [IMMEDIATE]. An option a backend does not
 * have is refused with DBS_ECONFIG naming it, never ignored. */
typedef struct dbs_tx_options {
    enum dbs_isolation isolation; /* SQLite: DEFAULT or SERIALIZABLE only */
    int read_only;   /* 1: READ ONLY: a write fails with DBS_ESQL, SQLSTATE
                        25006, on every backend (SQLite: PRAGMA query_only
                        and only statements sqlite3_stmt_readonly calls
                        read-only, as in dbs_session_open_ro; MariaDB: READ
                        ONLY at the transaction and the session level, so
                        DDL is refused too) */
    int deferrable;  /* 1: DEFERRABLE, PostgreSQL only, and only with
                        SERIALIZABLE and read_only (where it has an effect:
                        the transaction waits for a snapshot that cannot
                        fail, then runs without serialization failures) */
    int immediate;   /* 1: SQLite only: BEGIN IMMEDIATE, the write lock is
                        taken when the transaction begins (waiting up to
                        busy_timeout_ms), so a later write cannot fail
                        because another connection wrote first; refused
                        with read_only and on a read-only session, which
                        cannot take the write lock */
} dbs_tx_options;

/* Sets the options of every transaction s begins from now on, until the
 * next call or the session's close (opt NULL: back to a plain
 * transaction). The server's own default applies again to the
 * connection's next user. Refused while s has a transaction open
 * (DBS_EMISUSE: dbs_commit or dbs_rollback first; a session begins its
 * transaction with its first statement), for a value out of range
 * (DBS_EMISUSE), and for an option the backend does not have or a
 * combination that would have no effect (DBS_ECONFIG). On a read-only
 * session (dbs_session_open_ro) read_only = 0 does not make it writable.
 * Owner thread only; never blocks (SQLite: read_only runs one PRAGMA in
 * process). */
int dbs_session_set_tx_options(DBS__IN dbs_session *s, const dbs_tx_options *opt,
                               dbs_error *err);

/* dbs_transact whose transaction begins with opt (NULL: as dbs_transact),
 * on each attempt. Options the backend refuses fail at once, without
 * running work and before any connection is waited for or opened
 * (DBS_ECONFIG, DBS_EMISUSE; never retried). Called inside a
 * unit, it joins that unit as dbs_transact does, and then opt must be
 * NULL, zeroed, or equal to the enclosing transaction's options
 * (DBS_EMISUSE otherwise: a savepoint cannot change them). Same ownership,
 * blocking and threads as dbs_transact. */
int dbs_transact_opts(dbs_pool *pool, const dbs_context *ctx, const dbs_tx_options *opt,
                      dbs_work_fn work, void *arg, dbs_error *err);

int dbs_transact_opts_at(dbs_pool *pool, const dbs_context *ctx, const dbs_tx_options *opt,
                         dbs_work_fn work, void *arg, dbs_error *err, const char *file,
                         int line, const char *func);

#define dbs_transact_opts(pool, ctx, opt, work, arg, err)                      \
    dbs_transact_opts_at(pool, ctx, opt, work, arg, err, __FILE__, __LINE__,   \
                         __func__)

/* Nested units. dbs_transact (and its _opts and _ro variants) called by a
 * unit's work, on the same thread and for the same pool, does not open a
 * session of its own: it runs the inner work on the enclosing unit's
 * session as dbs_session_transact does, as a savepoint of the unit's
 * transaction, under the unit's context (its own ctx is not used, though
 * one no session could take is refused with DBS_EMISUSE all the same). (A
 * read-write dbs_transact inside a dbs_transact_ro unit,
 * and a dbs_transact_ro_after with a position inside one, still run as
 * units of their own; a dbs_transact_ro inside a read-write unit joins it,
 * sees its writes and is not read-only.)
 *
 * dbs_session_transact runs work(s, arg, err) as a nested unit of s's
 * transaction (begun first if none is open): SAVEPOINT, then work; when
 * work returns 0, RELEASE SAVEPOINT: its changes become part of the
 * transaction, which the caller (or the enclosing unit) commits. When work
 * fails, ROLLBACK TO SAVEPOINT and RELEASE: only the inner work is undone,
 * the transaction goes on, and work's error is returned. A nested unit is
 * never retried by itself: a failure that dooms the whole transaction
 * (DBS_ERETRYABLE: a serialization failure or deadlock; DBS_ECONNECT,
 * DBS_EFULL, DBS_ESTMT_TIMEOUT, DBS_ECOMMIT_UNKNOWN) is returned as is,
 * with no rollback to the savepoint, and the transaction can no longer
 * commit: its dbs_commit (or the enclosing dbs_transact's COMMIT) rolls
 * back instead and returns that error, even if the caller ignored it, so
 * that dbs_transact runs the whole outer unit again. Likewise when the
 * savepoint's own ROLLBACK TO or RELEASE fails (that error is returned).
 * work must not commit or roll back s (if it does, the savepoint is gone
 * and nothing is rolled back to it). Returns 0 or a negative dbs_code,
 * like dbs_transact (a non-dbs_code return of work counts as DBS_ESQL).
 * Blocks for one round trip before and one after work (two after a
 * failure). Owner thread only. */
int dbs_session_transact(DBS__IN dbs_session *s, dbs_work_fn work, void *arg,
                         dbs_error *err);

#if defined(__GNUC__) || defined(__clang__)
/* Scope-bound session: DBS_SCOPED dbs_session *s = dbs_session_open(...);
 * s is closed (rolling back what was not committed) when it leaves scope.
 * A scoped session closed early (dbs_session_close, dbs_session_commit_close)
 * must have its variable set to NULL after that call: the handle's memory
 * may already belong to a session opened since. */
void dbs__session_close_scoped(dbs_session **s);
#define DBS_SCOPED __attribute__((cleanup(dbs__session_close_scoped)))
#endif

/* ------------------------------------------------------------------------
 * Statements
 * ------------------------------------------------------------------------ */

/* The type of a parameter (dbs_value.type) and of a result column
 * (dbs_rows_type). Values are only ever added at the end. */
enum dbs_type {
    DBS_TYPE_NULL, DBS_TYPE_INT, DBS_TYPE_REAL, DBS_TYPE_TEXT, DBS_TYPE_BLOB,
    DBS_TYPE_BOOL,      /* true/false: .i is 0 or 1 */
    DBS_TYPE_TIMESTAMP, /* an instant: .ts, UTC, microsecond precision */
    DBS_TYPE_UUID,      /* 16 bytes: .b.p points at them (.b.n == 16) */
    DBS_TYPE_JSON,      /* JSON text: .b as for TEXT */
    DBS_TYPE_DECIMAL    /* exact numeric (NUMERIC, DECIMAL): a column type
                           only; read it as text (exact) or with
                           dbs_rows_get_int64/_double; bind a decimal as
                           DBS_TEXT (DBS_EMISUSE as a parameter type) */
};

/* A bound parameter. For TEXT and JSON, b.n == SIZE_MAX means
 * NUL-terminated. A TEXT, BLOB, JSON or UUID with b.p == NULL binds SQL
 * NULL. dbscope reads p only during the call it is passed to.
 *
 * How each type is sent (and read back with dbs_rows_get_*):
 *   BOOL       PostgreSQL boolean; MariaDB an integer 0/1 (BOOLEAN is
 *              TINYINT(1)); SQLite the integer 0/1.
 *   TIMESTAMP  .ts is seconds and nanoseconds since 1970-01-01 00:00:00
 *              UTC (tv_nsec in 0..999999999, years 0001 to 9999), sent
 *              truncated to microseconds. PostgreSQL: timestamptz (use a
 *              timestamptz column: a timestamp column gets the wall time
 *              in the session's TimeZone, which dbs_rows_get_timestamp
 *              reads back as UTC, so only with TimeZone UTC).
 *              MariaDB: a DATETIME value holding the UTC wall time
 *              (use DATETIME(6); a TIMESTAMP column converts from the
 *              session's time_zone, so it stores the instant only with
 *              time_zone '+00:00': the server's, or its init_connect's,
 *              which dbscope keeps after each reset). SQLite: ISO 8601 text
 *              "YYYY-MM-DDTHH:MM:SS.ffffffZ" (dbs_timestamp_format), which
 *              sorts in time order and which SQLite's date and time
 *              functions read.
 *   UUID       PostgreSQL uuid; MariaDB the 36-character text, which a
 *              UUID (10.7+) or CHAR(36) column takes (for a BINARY(16)
 *              column bind DBS_BLOB of the 16 bytes); SQLite the
 *              36-character lower-case text (dbs_uuid_format).
 *   JSON       PostgreSQL json (assigned to a json or jsonb column);
 *              MariaDB and SQLite text (MariaDB's JSON is LONGTEXT; SQLite's
 *              JSON functions read text).
 *   TEXT       the bytes as given (DBS_TEXTN may hold NUL bytes and any
 *              encoding on SQLite; MariaDB checks them against the column's
 *              character set). PostgreSQL text holds no NUL byte: a
 *              DBS_TEXTN with one is DBS_ESQL (bind bytes as DBS_BLOB).
 *   REAL       a NaN is DBS_ESQL on SQLite (which would store NULL) and
 *              refused by MariaDB for a column; PostgreSQL keeps it.
 *              Numbers are sent and read (dbs_rows_real, the text of a
 *              REAL, dbs_rows_get_double) with a decimal point, as the
 *              databases spell them, whatever locale the program set
 *              (setlocale(LC_ALL, "") under de_DE prints "2,5").
 * Text in these forms also binds as DBS_TEXT where the server converts it
 * (PostgreSQL infers a text parameter's type from the statement). */
/* dbs_value.b's type, declared out of the union: C++ compilers reject a
 * type declared inside an anonymous union (clang++ -pedantic). */
struct dbs__bytes {
    const void *p;
    size_t n;
};

typedef struct dbs_value {
    enum dbs_type type;
    union {
        int64_t i;
        double r;
        struct dbs__bytes b;
        struct timespec ts;
    };
} dbs_value;

#define DBS_NULL ((dbs_value){.type = DBS_TYPE_NULL})
#define DBS_INT(x) ((dbs_value){.type = DBS_TYPE_INT, .i = (int64_t)(x)})
#define DBS_REAL(x) ((dbs_value){.type = DBS_TYPE_REAL, .r = (double)(x)})
#define DBS_TEXT(s)                                                            \
    ((dbs_value){.type = DBS_TYPE_TEXT, .b = {(s), SIZE_MAX}})
#define DBS_TEXTN(s, len)                                                      \
    ((dbs_value){.type = DBS_TYPE_TEXT, .b = {(s), (size_t)(len)}})
#define DBS_BLOB(ptr, len)                                                     \
    ((dbs_value){.type = DBS_TYPE_BLOB, .b = {(ptr), (size_t)(len)}})
#define DBS_BOOL(x) ((dbs_value){.type = DBS_TYPE_BOOL, .i = (x) ? 1 : 0})
/* x is a struct timespec (UTC), e.g. from clock_gettime(CLOCK_REALTIME). */
#define DBS_TIMESTAMP(x) ((dbs_value){.type = DBS_TYPE_TIMESTAMP, .ts = (x)})
/* p points at 16 bytes (unsigned char[16]), read during the call only. */
#define DBS_UUID(p) ((dbs_value){.type = DBS_TYPE_UUID, .b = {(p), 16}})
#define DBS_JSON(s)                                                            \
    ((dbs_value){.type = DBS_TYPE_JSON, .b = {(s), SIZE_MAX}})
#define DBS_JSONN(s, len)                                                      \
    ((dbs_value){.type = DBS_TYPE_JSON, .b = {(s), (size_t)(len)}})

typedef struct dbs_rows dbs_rows;

/* Runs one statement with parameters $1..$n bound from params[0..n-1] (any
 * order, reused freely; never interpolated; "$01" is $1 on every backend,
 * as PostgreSQL's server reads it, and "$0" is DBS_ESQL). Begins the session's
 * transaction first if none is open. Returns the rows affected (>= 0: a
 * SELECT 0, an INSERT, UPDATE or DELETE with RETURNING the rows it wrote)
 * or a negative dbs_code. A text of several statements is DBS_ESQL on
 * PostgreSQL and MariaDB before anything runs; SQLite runs them in order
 * (dbs_query refuses them on every backend). Blanks and comments after the
 * last ';' are no statement. A $n counts where the server's lexer reads a
 * parameter (not in strings, quoted names, comments, dollar-quoted bodies;
 * a MariaDB versioned comment the server runs is code: docs/values.md). A
 * statement may not use more parameters than given nor
 * be given more than it uses (DBS_ESQL). At most 65535 parameters on
 * every backend (more: DBS_EMISUSE, before anything is sent); SQLite's
 * build may allow fewer (SQLITE_MAX_VARIABLE_NUMBER, 32766 by default) and
 * MariaDB counts each use of one against 65535 (past either: DBS_ESQL).
 * sql NULL is DBS_EMISUSE; sql of
 * nothing but spaces and semicolons is DBS_ESQL on every backend, before
 * anything is sent (a statement of nothing but comments: DBS_ESQL on
 * SQLite, which compiles nothing; PostgreSQL and MariaDB run it as
 * nothing). Blocks for one round trip. Owner thread only. */
int64_t dbs_exec(DBS__IN dbs_session *s, const char *sql, const dbs_value *params,
                 size_t n, dbs_error *err);

/* Runs a query like dbs_exec and returns its rows, positioned before the
 * first; the rows are the caller's. Close them with dbs_rows_close before
 * the session closes (closing the session closes them too). Returns NULL
 * on failure. Blocks for one round trip (PostgreSQL and MariaDB read the
 * whole result then; SQLite runs the statement up to its first row, so a
 * write is done and its failure reported here, even if its rows are
 * closed unread). Owner thread only. */
dbs_rows *dbs_query(DBS__IN dbs_session *s, const char *sql, const dbs_value *params,
                    size_t n, dbs_error *err);

/* Advances to the next row: 1 a row, 0 the end, < 0 an error. Owner
 * thread only. On PostgreSQL and MariaDB the rows came with dbs_query and
 * it never blocks; on SQLite each call steps the statement, which reads
 * the file and may wait on another connection's lock, within
 * busy_timeout_ms and the statement timeout. */
int dbs_rows_next(dbs_rows *r, dbs_error *err);
/* Number of columns, counting from 0 in the accessors below. Owner thread
 * only; never blocks (as do dbs_rows_name and the accessors below). */
int dbs_rows_count_cols(dbs_rows *r);
/* Column name; valid until dbs_rows_close (the text is r's). NULL for a
 * bad column, and on SQLite when it ran out of memory making the name. */
const char *dbs_rows_name(dbs_rows *r, int col);

/* The unchecked accessors below never fail: they return a fallback that
 * cannot be told from a real value: 0 (0.0, NULL) for SQL NULL, for a
 * column out of range, for no current row, on another thread's rows, and
 * for text that is not a number ('abc' reads as 0); a prefix or a cut
 * where a number does not fit ('12abc' reads as 12, 2.5 as 2, a REAL or
 * DECIMAL beyond int64_t, infinities included, as INT64_MAX or INT64_MIN
 * on every backend, a NaN as 0, an unsigned BIGINT beyond int64_t wraps).
 * They keep their signatures and these fallbacks for existing code. Use
 * them where the query guarantees the type and NOT NULL (a COUNT(*), a
 * primary key); everywhere else use the checked dbs_rows_get_* accessors,
 * which report each of those cases. Owner thread only; never block. */

/* 1 if the current row's column is NULL (or col is out of range). */
int dbs_rows_is_null(dbs_rows *r, int col);
/* Column as an integer (0 for NULL or a bad column). */
int64_t dbs_rows_int(dbs_rows *r, int col);
/* Column as a double (0.0 for NULL or a bad column). */
double dbs_rows_real(dbs_rows *r, int col);
/* Column as NUL-terminated text, NULL for NULL. *len (if len) gets its length.
 * Valid until the next dbs_rows_next or dbs_rows_close. */
const char *dbs_rows_text(dbs_rows *r, int col, size_t *len);
/* Column as bytes, NULL for NULL. Valid like dbs_rows_text. */
const void *dbs_rows_blob(dbs_rows *r, int col, size_t *len);

/* Checked accessors. Each reads column col (from 0) of the current row into
 * *out and returns DBS_OK, or returns, with err filled and *out untouched:
 *   DBS_EMISUSE  r is NULL or closed, another thread's, col is out of range
 *                (the message gives the valid range), out is NULL, or there
 *                is no current row (before the first dbs_rows_next or
 *                after it returned 0);
 *   DBS_ENULL    the value is SQL NULL;
 *   DBS_ETYPE    the value cannot be read as that type (the message names
 *                the column and the value's type).
 * None of these ends the session's transaction or affects the rows: the
 * next call may read the same column another way. Owner thread only; never
 * block, never allocate (but dbs_rows_get_blob on PostgreSQL bytea, which
 * decodes: DBS_ENOMEM, *out untouched, when that finds no memory). */

/* An integer: INT and BOOL (0/1) values; a REAL or DECIMAL value that is a
 * whole number within int64_t (2.0, not 2.5); text that is entirely a
 * decimal integer within int64_t, or such a whole number ('12', '-7',
 * '12.0', '1e3'; not 'abc', '12abc', '', ' 12', '0x10',
 * '99999999999999999999'). Text and DECIMAL values are read digit by digit,
 * exactly: '-9223372036854775809' and '12.0000000000000001' are DBS_ETYPE. */
int dbs_rows_get_int64(dbs_rows *r, int col, int64_t *out, dbs_error *err);
/* A double: INT, BOOL, REAL and DECIMAL values, and text that is entirely a
 * number as strtod reads it, at any length ('2.5', '1e3', 'NaN'; not
 * 'abc', '2.5x', ' 2' or '\r2' (leading space of any kind) or a number
 * beyond double's range). A timestamp ('infinity' included) is DBS_ETYPE.
 * PostgreSQL float4 and float8 are read in their shortest exact spelling
 * whatever extra_float_digits a role or database sets by default (dbscope
 * connects with 3); a session's own SET extra_float_digits = 0 or less
 * cuts digits from what it then reads, until the reset undoes it. */
int dbs_rows_get_double(dbs_rows *r, int col, double *out, dbs_error *err);
/* A boolean as 0 or 1: PostgreSQL boolean; the integers 0 and 1 (MariaDB's
 * BOOLEAN, SQLite); any other value is DBS_ETYPE. */
int dbs_rows_get_bool(dbs_rows *r, int col, int *out, dbs_error *err);
/* The value as text, NUL-terminated, in *out (length in *len if len): any
 * value but a BLOB (PostgreSQL bytea, SQLite BLOB), which is DBS_ETYPE;
 * numbers in the backend's own spelling; JSON as its text. Valid until the
 * next dbs_rows_next or dbs_rows_close. */
int dbs_rows_get_text(dbs_rows *r, int col, const char **out, size_t *len,
                      dbs_error *err);
/* The value's bytes in *out (never NULL: an empty value is "") and their
 * number in *len (len required): any value (text as its bytes). Valid like
 * dbs_rows_get_text. */
int dbs_rows_get_blob(dbs_rows *r, int col, const void **out, size_t *len,
                      dbs_error *err);
/* An instant as UTC seconds and nanoseconds: PostgreSQL timestamptz (in
 * any TimeZone setting; in DateStyle ISO, which dbscope connects with
 * whatever style a role or database sets by default, keeping its date
 * order; a session's own SET DateStyle to another style makes timestamps
 * DBS_ETYPE until the reset) and timestamp
 * (its wall time taken as UTC); MariaDB DATETIME and TIMESTAMP (the wall
 * time taken as UTC); text that dbs_timestamp_parse accepts; an integer as seconds since
 * the epoch (SQLite's unixepoch()). 'infinity' and instants outside years
 * 0001..9999 in UTC (those dbs_timestamp_format and DBS_TIMESTAMP refuse:
 * integer seconds beyond them, text whose zone moves it out of them) are
 * DBS_ETYPE. */
int dbs_rows_get_timestamp(dbs_rows *r, int col, struct timespec *out,
                           dbs_error *err);
/* A UUID's 16 bytes: PostgreSQL uuid; text that dbs_uuid_parse accepts
 * (MariaDB UUID and CHAR(36), SQLite text); a 16-byte BLOB (BINARY(16)). */
int dbs_rows_get_uuid(dbs_rows *r, int col, unsigned char out[16],
                      dbs_error *err);

/* The column's type as a dbs_type (>= 0), or a negative dbs_code
 * (DBS_EMISUSE for a bad r or col, with err filled). PostgreSQL and MariaDB
 * report the declared type of the result column, the same for every row:
 * integers INT; float4/float8, FLOAT/DOUBLE REAL; numeric, DECIMAL DECIMAL;
 * boolean BOOL (MariaDB's BOOLEAN is TINYINT(1) and reads as INT);
 * timestamptz, timestamp, DATETIME, TIMESTAMP TIMESTAMP; uuid, MariaDB's
 * UUID (10.7+) UUID; json, jsonb, MariaDB's JSON JSON (MariaDB tells
 * UUID and JSON apart in its extended metadata, 10.5+); bytea, binary
 * strings BLOB; everything else (dates, times, intervals, ...) TEXT.
 * SQLite columns have no fixed type: a column of a table reports its
 * declared type, first by the names BOOL, TIMESTAMP or DATETIME, UUID,
 * JSON, then by SQLite's affinity rules (INT: INT; CHAR, CLOB, TEXT: TEXT;
 * BLOB or none: BLOB; REAL, FLOA, DOUB: REAL; of the rest DEC... and
 * NUM... DECIMAL, others such as DATE TEXT); an expression reports the current row's value (NULL when
 * it is NULL or there is no current row). Owner thread only; never blocks. */
int dbs_rows_type(dbs_rows *r, int col, dbs_error *err);

/* The number (from 0) of the column called name, or a negative dbs_code:
 * DBS_EMISUSE with err filled when r is bad, name is NULL, or no column
 * has that name (the message lists the columns). An exact match wins;
 * otherwise a match ignoring ASCII case (PostgreSQL folds unquoted names
 * to lower case, MariaDB and SQLite compare them without case). With two
 * columns of the same name, the first. Owner thread only; never blocks. */
int dbs_rows_col(dbs_rows *r, const char *name, dbs_error *err);
/* Frees r; NULL is a no-op. Owner thread only. Never blocks but on
 * SQLite, where closing the rows of a statement that ran outside a
 * transaction ends its write, and waits for that write's sync to disk
 * (synchronous=FULL); a statement left before its end is reset, not run. */
void dbs_rows_close(dbs_rows *r);

/* ------------------------------------------------------------------------
 * Values as text, backends, and generated keys
 * ------------------------------------------------------------------------ */

/* Size of a buffer for dbs_timestamp_format, NUL included. */
#define DBS_TIMESTAMP_TEXT_LEN 32

/* Writes ts (UTC; tv_nsec in 0..999999999) as ISO 8601 / RFC 3339 text
 * "YYYY-MM-DDTHH:MM:SS.ffffffZ" (microseconds, truncated) into out and
 * returns its length (27), or DBS_EMISUSE for a tv_nsec out of range or a
 * year outside 0001..9999 (out then holds ""). Any thread; never blocks. */
int dbs_timestamp_format(struct timespec ts, char out[DBS_TIMESTAMP_TEXT_LEN]);

/* Reads ISO 8601 text into *out (UTC): "YYYY-MM-DD", then optionally "T"
 * or " " and "HH:MM[:SS[.fraction]]" (a "." or ","; any number of
 * digits, those past the ninth, below a nanosecond, dropped), then
 * optionally a zone "Z", "+HH", "+HH:MM", "+HHMM" or "-..." (PostgreSQL's
 * output, "2024-05-01 12:00:00.5+02", is one of these); without a zone the
 * time is UTC. len is text's length, or SIZE_MAX when text is
 * NUL-terminated. Returns DBS_OK, or DBS_ETYPE with err naming what is
 * wrong (DBS_EMISUSE for NULL text or out); an instant outside years
 * 0001..9999 in UTC (text whose zone or leap second moves it out of them,
 * such as "0001-01-01T00:00:00+00:01") is DBS_ETYPE, as
 * dbs_timestamp_format, DBS_TIMESTAMP and dbs_rows_get_timestamp refuse
 * it. Any thread; never blocks. */
int dbs_timestamp_parse(const char *text, size_t len, struct timespec *out,
                        dbs_error *err);

/* Writes uuid's 16 bytes as 36 characters of lower-case text
 * ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx") and a NUL into out; uuid NULL
 * writes the empty text, out NULL nothing. Any thread; never blocks. */
void dbs_uuid_format(const unsigned char uuid[16], char out[37]);

/* Reads a UUID's text into out: 32 hexadecimal digits (either case), with
 * the four hyphens of the 8-4-4-4-12 form or none, optionally in braces.
 * len as for dbs_timestamp_parse. Returns DBS_OK, or DBS_ETYPE with err
 * naming what is wrong (DBS_EMISUSE for NULL text or out). Any thread;
 * never blocks. */
int dbs_uuid_parse(const char *text, size_t len, unsigned char out[16],
                   dbs_error *err);

/* The database a pool speaks, so that portable code need not parse the URL
 * (say, to choose a dialect's SQL). Values are only ever added at the end. */
typedef enum dbs_backend {
    DBS_BACKEND_UNKNOWN = 0, /* not an open pool */
    DBS_BACKEND_SQLITE,      /* sqlite: URLs */
    DBS_BACKEND_POSTGRESQL,  /* postgresql:, postgres: and key=value */
    DBS_BACKEND_MARIADB      /* mariadb: and mysql: (MariaDB or MySQL) */
} dbs_backend;

/* The backend of pool (its replicas speak the same), DBS_BACKEND_UNKNOWN
 * for NULL or a closed pool. Any thread; never blocks.
 *
 * Generated keys. INSERT ... RETURNING id works on all three backends and
 * is the portable way: run it with dbs_query and read the row (one per
 * inserted row). It needs SQLite 3.35 or later, any supported PostgreSQL,
 * and MariaDB 10.5 or later (not MySQL, which has no RETURNING); the
 * versions dbscope is tested with (SQLite 3.40, PostgreSQL 15, MariaDB
 * 10.11) all have it. Per backend: PostgreSQL only has RETURNING (or
 * currval() in the same transaction); MariaDB and MySQL also have
 * SELECT LAST_INSERT_ID() on the same session, right after the INSERT
 * (the session keeps its connection, so it is the right one); SQLite also
 * has SELECT last_insert_rowid() on the same session. */
dbs_backend dbs_pool_backend(const dbs_pool *pool);


/* ------------------------------------------------------------------------
 * Event loops: units of work that never block a thread
 * ------------------------------------------------------------------------
 * For servers on an event loop (libuv, libevent, h2o, epoll). One dbs_loop
 * per loop thread, opened on a pool that blocking sessions may share. The
 * loop offers one descriptor and one deadline, as c-ares and libcurl's
 * multi interface do: the program watches dbs_loop_fd for reading with its
 * own loop and calls dbs_loop_run when it is readable or when
 * dbs_loop_timeout_ms has passed. dbs_loop_run never blocks; every
 * completion callback runs inside it, on the loop's thread.
 *
 * A unit of work (dbs_unit) is a list of statements run as one
 * transaction, with the same guarantees as dbs_transact: the request
 * context applied (PostgreSQL: transaction-local settings), a transient
 * failure before COMMIT, or a COMMIT refused as dbs_transact's would be
 * retried (busy, a full disk), retried as a whole (retry_max, with backoff
 * as a timer), never after a COMMIT whose outcome is unknown, and the reset of
 * the connection before its next user. Results are kept until the unit is
 * done and handed over together, so a retry is invisible to the program.
 * Every bound of the blocking API holds as a timer, not a blocked thread:
 * acquire_timeout_ms for a connection (a unit is offered what the pool
 * has before its bound can end it: with 0, an idle connection or a new
 * one, never a wait), connect_timeout_ms, and
 * statement_timeout_ms for each statement (past it the statement is
 * cancelled on the server and the unit fails with DBS_ESTMT_TIMEOUT). A
 * unit whose COMMIT had already gone out ends as the COMMIT ended
 * (DBS_OK included), or with DBS_ECOMMIT_UNKNOWN when no answer came: on
 * SQLite and MariaDB a COMMIT past the bound (a SQLite COMMIT that only
 * waited for another connection's lock committed nothing: then
 * DBS_ESTMT_TIMEOUT), on PostgreSQL, where the COMMIT goes out in the
 * unit's flight, a server that answers neither the unit nor the cancel
 * within another statement bound. dbs_unit_set_timeout and
 * dbs_unit_cancel say the same of theirs.
 *
 * PostgreSQL runs units on the loop's thread through libpq's non-blocking
 * pipeline mode: the statements of a unit, and up to pipeline_depth
 * independent units, go out in one flight on one connection, each unit
 * ending in a Sync of its own, so one unit's error never touches another
 * (no two units share a transaction). SQLite and MariaDB run each unit on
 * a small bounded pool of worker threads (SQLite's calls touch the disk;
 * Connector/C's non-blocking API has no pipelining), and the completion
 * comes back through the loop's descriptor: the loop thread still never
 * waits.
 *
 * Units needing a decision on a result before their next statement are
 * two units, or a blocking dbs_transact on a thread of the program's own. */

typedef struct dbs_loop dbs_loop;
typedef struct dbs_unit dbs_unit;

typedef struct dbs_loop_config {
    int pipeline_depth;  /* units in flight on one connection at once
                            (PostgreSQL; default 16; 1: no pipelining) */
    int max_connections; /* connections this loop holds at once (default
                            and ceiling: the pool's pool_size +
                            max_overflow); the rest wait their turn in
                            the pool's FIFO like blocking sessions */
    int queue_max;       /* units waiting for a connection, at most
                            (default 4096); past it dbs_unit_submit
                            returns DBS_EBUSY */
    int workers;         /* SQLite and MariaDB: worker threads of the
                            pool's that run units (default 4; shared by
                            every loop of the pool: the largest asked
                            applies) */
} dbs_loop_config;

/* Fills cfg with the defaults. Any thread. */
void dbs_loop_config_init(dbs_loop_config *cfg);

/* Opens a loop on pool for the calling thread, which becomes its owner:
 * every dbs_loop_* and dbs_unit_* call but dbs_loop_fd and
 * dbs_loop_timeout_ms must come from it. cfg NULL: the defaults. Sends
 * nothing and never blocks: connections come from the pool as units need
 * them. The pool must outlive the loop. NULL with err filled (DBS_ENOMEM,
 * DBS_EMISUSE for a bad field, DBS_ECLOSED for a closed pool).
 * On a dbs_pool_shutdown racing it on another thread: a loop opened before
 * the shutdown began has the pool's worker threads it started stopped and
 * joined by it (its units not yet started then complete DBS_ECLOSED); one
 * whose open comes after gets DBS_ECLOSED and starts no thread.
 *
 * Close it with dbs_loop_close before its thread exits. An owner thread
 * that exits (returns from its start routine or calls pthread_exit, also
 * from inside a callback) with loops open has them closed at its exit, on
 * that thread, as dbs_loop_close closes them: units waiting end
 * DBS_ECANCELED, statements in flight are cancelled on the server, the
 * loop's requests leave the pool's queue, its connections go back to the
 * pool (closed when work was in flight on them), and nothing waits for a
 * server: the exit takes no longer than a dbs_loop_close (well within
 * statement_timeout_ms, the bound of a session's close at its thread's
 * exit). The units' callbacks do not run then: the thread's stack and
 * its thread-local state are gone. Each such loop is reported first as a
 * DBS_EVENT_LEAK naming the line that opened it (dbs_event.file, line,
 * func) with reason "its thread exited with the event loop open ...",
 * then as a DBS_EVENT_LEAK_RECOVERED whose reason counts its units that
 * did not commit, that may have committed (DBS_ECOMMIT_UNKNOWN: their
 * COMMIT had gone out) and that committed (counted in leaks and
 * leaks_recovered once each). This runs from a pthread key destructor,
 * in no set order with sessions' (see THREADING MODEL) and the
 * program's; the process's exit runs none. The closed loop's memory is
 * kept until the pool's is freed (dbs_pool_close): until then a call on
 * its handle, from any thread, is refused (DBS_EMISUSE, -1 from
 * dbs_loop_fd and dbs_loop_timeout_ms) and dbs_loop_close on it does
 * nothing. In a child of fork(), a loop opened before the fork is used
 * by nothing (DBS_EMISUSE): dbs_loop_close, or its thread's exit, lets
 * go of it there without a word to the server (its connections are the
 * parent's), unreported. */
dbs_loop *dbs_loop_open(dbs_pool *pool, const dbs_loop_config *cfg,
                        dbs_error *err) DBS__WARN_UNUSED;

/* dbs_loop_open with the site that opened the loop named (file and func
 * are kept, not copied: string literals, as the macro passes); the leak
 * report of a loop its thread's exit closed names it. */
dbs_loop *dbs_loop_open_at(dbs_pool *pool, const dbs_loop_config *cfg, dbs_error *err,
                           const char *file, int line, const char *func) DBS__WARN_UNUSED;

#define dbs_loop_open(pool, cfg, err)                                          \
    dbs_loop_open_at(pool, cfg, err, __FILE__, __LINE__, __func__)

/* The descriptor to watch for reading (level-triggered: it stays readable
 * while work waits); the loop owns it, do not close it. Valid until
 * dbs_loop_close. -1 for NULL. Any thread; never blocks. */
int dbs_loop_fd(const dbs_loop *loop);

/* Milliseconds until dbs_loop_run must be called even if the descriptor
 * stays quiet (0: now; -1: no deadline). Ask again after each
 * dbs_loop_run and after each submit. Any thread; never blocks. */
int dbs_loop_timeout_ms(const dbs_loop *loop);

/* Does whatever is ready: reads and writes connections, takes
 * connections the pool handed over, fires timers that are due, and runs
 * the completion callbacks of the units that ended. Returns the number of
 * units completed (>= 0) or DBS_EMISUSE (another thread's loop). Never
 * blocks. A callback may submit new units and may cancel others; it must
 * not call dbs_loop_run or dbs_loop_close. Owner thread only. */
int dbs_loop_run(dbs_loop *loop);

/* Units submitted and not yet completed (>= 0), or DBS_EMISUSE for NULL
 * or another thread's loop. Owner thread only; never blocks. */
int dbs_loop_pending(const dbs_loop *loop);

/* Closes the loop: every unit not yet done completes with DBS_ECANCELED,
 * or DBS_ECOMMIT_UNKNOWN for one whose COMMIT had already gone out
 * (callbacks run inside this call; statements in flight are cancelled on
 * the server), requests of the loop's leave the pool's queue, connections
 * go back to the pool or are discarded, and loop is freed. Waits for no
 * server: a connection with work in flight is discarded. Owner thread
 * only; NULL is a no-op. A loop still open when its owner thread exits is
 * closed at the exit, without its callbacks, and reported as a leak (see
 * dbs_loop_open). */
void dbs_loop_close(dbs_loop *loop);

/* Unit flags. */
#define DBS_UNIT_RO 1u /* read-only: may run on a replica (within
                          replica_max_lag_ms when the unit starts, not
                          only when it was queued), enforced by the
                          database as dbs_session_open_ro is */

/* Called once when a unit ends, inside dbs_loop_run or dbs_loop_close, on
 * the loop's thread (never when the loop's thread exits with it open: see
 * dbs_loop_open). rc is DBS_OK (committed) or a negative dbs_code, and
 * err says what failed (never NULL; err->code == rc). The unit and its
 * results are valid until the callback returns; then the loop frees them. */
typedef void (*dbs_unit_fn)(dbs_unit *u, int rc, const dbs_error *err, void *arg);

/* Starts building a unit for loop, on behalf of ctx (copied; NULL: none).
 * flags: 0 or DBS_UNIT_RO. The program owns the unit until
 * dbs_unit_submit, or frees it with dbs_unit_discard; one not yet
 * submitted when its loop closes stays the program's, and every call on
 * it but dbs_unit_discard then returns DBS_EMISUSE. NULL with err
 * filled (DBS_ENOMEM, DBS_EMISUSE). Owner thread only; never blocks. */
dbs_unit *dbs_unit_new(dbs_loop *loop, const dbs_context *ctx, unsigned flags,
                       dbs_error *err) DBS__WARN_UNUSED;

/* dbs_unit_new with the site that made the unit named (file and func are
 * kept, not copied: string literals, as the macro passes); dbs_unit_new
 * calls through this macro name the caller's line. What names it: the
 * unit's retry and acquire-timeout events, and on SQLite and MariaDB the
 * worker's session that runs it, as a dbs_session_open would be named: in
 * dbs_pool_sessions (with the unit's context), its leak, slow_session and
 * other session events. On PostgreSQL a unit runs on a connection the
 * loop holds, without a session: it is not in dbs_pool_sessions and is
 * never reported as a leak or a slow session (statement_timeout_ms and
 * dbs_unit_set_timeout bound it instead); its connection's checkout and
 * checkin events name no site. */
dbs_unit *dbs_unit_new_at(dbs_loop *loop, const dbs_context *ctx, unsigned flags,
                          dbs_error *err, const char *file, int line,
                          const char *func) DBS__WARN_UNUSED;

#define dbs_unit_new(loop, ctx, flags, err)                                    \
    dbs_unit_new_at(loop, ctx, flags, err, __FILE__, __LINE__, __func__)

/* Appends a statement with parameters $1..$n, as dbs_exec takes them (sql
 * and params are copied: the caller's may go at once). Returns the
 * statement's index (0, 1, ...) for dbs_unit_rows, or a negative dbs_code
 * with the unit unchanged (DBS_ENOMEM; DBS_EMISUSE for a submitted unit
 * or bad arguments; DBS_ESQL for an empty statement, as dbs_exec, and on
 * PostgreSQL for more parameters than the statement uses or a text value
 * holding a NUL byte: refused here, not as the unit runs, so that with
 * the server down they do not end as a failed connect). Owner thread
 * only; never blocks. */
int dbs_unit_add(dbs_unit *u, const char *sql, const dbs_value *params, size_t n,
                 dbs_error *err);

/* Sets how the unit's transaction begins (as dbs_session_set_tx_options;
 * NULL: plain). DBS_ECONFIG for an option the backend does not have, or
 * a combination that would have no effect, refused here as
 * dbs_session_set_tx_options refuses it (DBS_UNIT_RO counting as a
 * read-only session). Before submit only. Owner thread only. */
int dbs_unit_set_tx_options(dbs_unit *u, const dbs_tx_options *opt, dbs_error *err);

/* Bounds the whole unit, from submit to its callback, waits and retries
 * included (timeout_ms > 0, else DBS_EMISUSE; default: none beyond the
 * pool's bounds). DBS_OK, or DBS_EMISUSE with the unit unchanged. Past
 * the bound the unit is cancelled and completes with DBS_ETIMEOUT while it waits
 * for a connection (in the loop's queue, a worker thread's, or between
 * attempts: counted as an acquire's timeout, in dbs_stats' timeouts and
 * dbs_pool_errors, with a DBS_EVENT_TIMEOUT, on every backend),
 * DBS_ESTMT_TIMEOUT once it has one (or as it ended on
 * the server, DBS_OK included, when its answer was already on the way;
 * DBS_ECOMMIT_UNKNOWN when its COMMIT had gone out and no answer came
 * within the statement bound).
 * On SQLite and MariaDB, whose units run on worker threads, a connect the
 * worker has begun for the unit runs to its end (at most
 * connect_timeout_ms) before the unit completes: a unit that needs a new
 * connection to a server that does not answer ends then, DBS_ECONNECT.
 * Before submit only. Owner thread only. */
int dbs_unit_set_timeout(dbs_unit *u, int timeout_ms);

/* A DBS_UNIT_RO unit sees at least what the commit at position pos wrote
 * (dbs_unit_commit_pos or dbs_session_commit_pos): a replica that has not
 * replayed it is passed over for the primary. 0: no position. DBS_OK,
 * or DBS_EMISUSE (a submitted unit, or another thread's). Before submit
 * only. Owner thread only; never blocks. */
int dbs_unit_set_after(dbs_unit *u, uint64_t pos);

/* Hands the unit to the loop; done(u, rc, err, arg) runs exactly once,
 * later, from dbs_loop_run or dbs_loop_close, never from inside this
 * call (nor at all when the owner thread exits with the loop open: see
 * dbs_loop_open). Returns DBS_OK, or a negative code with done never to run and
 * the unit freed: DBS_EBUSY (queue_max units already wait; counted in
 * dbs_pool_errors, the program's call having failed), DBS_ECLOSED
 * (the pool is shut down or closed; counted in dbs_pool_errors, as a
 * session refused so is), DBS_EMISUSE (a unit with no statement, or a
 * submit from a callback that dbs_loop_close runs). DBS_EMISUSE also for a
 * unit submitted twice, from another thread or after its loop closed,
 * which is left as it was (a submitted unit is the loop's; its done still
 * runs once; the other two are the program's to dbs_unit_discard). Never
 * blocks. Owner thread only. */
int dbs_unit_submit(dbs_unit *u, dbs_unit_fn done, void *arg, dbs_error *err);

/* Frees a unit that was never submitted (also after its loop closed); a
 * submitted one is the loop's, and this does nothing. NULL is a no-op.
 * The thread that owns the unit, which need not be the loop's; never
 * blocks. */
void dbs_unit_discard(dbs_unit *u);

/* Cancels a submitted unit whose callback has not run (for instance its
 * HTTP client went away): a unit still waiting leaves the queue (on
 * SQLite and MariaDB a worker thread waiting for a connection for it
 * stops waiting at once and is free for the next unit; a connection
 * handed to it just then goes to the next waiter; a loop's request for a
 * connection no unit needs any more leaves the pool's queue too); such a
 * unit never failed, and counts in neither dbs_pool_errors nor
 * timeouts. A unit in flight is cancelled on the server (PostgreSQL's
 * cancel request, sent without blocking; MariaDB KILL of the unit's
 * connection from another one, which also stops a statement that had not
 * reached the server yet; SQLite sqlite3_interrupt, which also ends a wait for
 * another connection's lock, however long busy_timeout_ms) and its
 * connection checked before reuse, or discarded; it counts once in
 * dbs_pool_errors, as done reports it, on every backend.
 * done then runs with DBS_ECANCELED at the next dbs_loop_run (or DBS_OK /
 * DBS_ECOMMIT_UNKNOWN when the COMMIT had already gone out; never with
 * the retryable failure of an attempt the cancel keeps from running
 * again); the loop's
 * descriptor turns readable when that callback is ready to run, so a
 * program asleep on it with a deadline asked earlier wakes. Never
 * blocks. Owner thread only; u must not have completed. */
void dbs_unit_cancel(dbs_unit *u);

/* Inside the callback of a unit that completed with DBS_OK: statement
 * i's rows (positioned before the first; read them with dbs_rows_next and
 * the accessors, on the loop's thread; do not close them: the unit does),
 * or NULL for a statement that returns no rows or a bad index. */
dbs_rows *dbs_unit_rows(dbs_unit *u, int i);

/* Inside the callback: rows statement i affected (>= 0), or -1 for a bad
 * index or a unit that did not commit. */
int64_t dbs_unit_affected(const dbs_unit *u, int i);

/* Inside the callback: how many times the unit ran (1 + its retries). */
int dbs_unit_attempts(const dbs_unit *u);

/* Inside the callback of a committed unit: the position a replica must
 * have replayed to show what it wrote (as dbs_session_commit_pos; 0 when
 * it wrote nothing or the pool has no replicas; UINT64_MAX, which no
 * replica reaches, when its position did not come back). */
uint64_t dbs_unit_commit_pos(const dbs_unit *u);

/* The unit's context as copied at dbs_unit_new. Owner thread only: NULL
 * from another thread. */
const dbs_context *dbs_unit_context(const dbs_unit *u);

#ifdef __cplusplus
}
#endif
#endif /* DBSCOPE_H */
