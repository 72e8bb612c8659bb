/*
 * PRIVATE to dbscope. The backend method table.
 *
 * A backend is this table plus one .c file. pool.c and session.c know
 * nothing else about a database: adding a backend touches neither.
 *
 * Contract for every method:
 *   - Never called with the pool lock held: a method may block on I/O.
 *   - A connection (void *c) is used by one thread at a time; the pool hands
 *     it from thread to thread with a mutex in between, so no method needs
 *     locking of its own.
 *   - Failures fill err with a dbs_code, the SQLSTATE when known, and a
 *     message that names what failed; never a password.
 *   - When a failure means the connection is unusable (lost, protocol
 *     desync, out of memory mid-statement), is_broken(c) returns 1 from then
 *     on, and the pool closes the connection instead of reusing it.
 */
#ifndef DBS_DRIVER_H
#define DBS_DRIVER_H

#include "dbscope.h"

#include <stdbool.h>

/* What a backend needs from the configuration, resolved once at pool open.
 * Owned by the pool; valid until the driver's target_close. */
typedef struct dbs__target {
    const char *conninfo;  /* SQLite: filename or URI for sqlite3_open_v2;
                              PostgreSQL: the URL or key=value string, for
                              libpq's own parser */
    int memory;            /* SQLite in-memory database */
    int busy_timeout_ms;
    int stmt_cache_size;
    enum dbs_reset_mode reset;
    /* set_config names for request, user, tenant; NULL = not applied */
    const char *ctx_setting[3];
    void *shared;          /* the backend's own per-pool state */
    int connect_timeout_ms;   /* bound on each connect, end to end (0: none) */
    int statement_timeout_ms; /* default bound on each round trip, measured
                                 on the client (0: none) */
    /* Receives the server's notices and warnings (NULL: dropped). Called on
     * the thread using the connection, with no lock held. */
    void (*notice)(void *arg, const char *msg);
    void *notice_arg;
    int commit_pos;           /* 1: read each commit's position (the pool
                                 has replicas to use it; see commit_pos) */
    /* dbs_config.credential and its argument (NULL: none); a backend with
     * a password asks it through dbs__credential_get before each connect */
    dbs_credential_fn credential;
    void *credential_user;
} dbs__target;

/* Asks t's credential provider for the password of a connect (credential.c).
 * 1 when t has none (buf untouched: use the URL's); DBS_OK with buf (cap
 * bytes, DBS_CREDENTIAL_MAX) holding it, NUL-terminated; DBS_ECONFIG with
 * err saying which provider failed for which host and user, and why, buf
 * wiped. Wipe buf with dbs__credential_wipe once the connect is over. */
int dbs__credential_get(const dbs__target *t, const char *backend, const char *host,
                        const char *port, const char *user, char *buf, size_t cap,
                        dbs_error *err);
void dbs__credential_wipe(char *buf, size_t cap);

/* For forget() (fork.c): puts /dev/null in place of socket fd, so that
 * nothing written to it reaches the peer and closing it leaves the
 * parent's copy open. false when that failed: then leave the connection
 * allocated rather than close it. */
bool dbs__fd_silence(int fd);

/* Rows: each backend's rows struct begins with this header. query.c owns the
 * magic and the session; the backend owns the rest. dbs_rows_next and
 * dbs_rows_close only mark the thread inside dbscope (internal.h): a next
 * or close that may reach a cancellation point (steps, resets or
 * finalizes a statement, reads a socket) calls dbs__cancel_defer first,
 * as SQLite's do; one over rows held in memory needs nothing. */
typedef struct dbs__rows_ops dbs__rows_ops;
struct dbs_rows {
    const dbs__rows_ops *ops;
    struct dbs_session *session;
    struct dbs_rows *prev, *next; /* the session's open rows */
    unsigned magic;
    int on_row;                   /* the last next() returned a row */
};

struct dbs__rows_ops {
    int (*next)(dbs_rows *r, dbs_error *err);   /* 1 row, 0 end, < 0 code */
    int (*count_cols)(dbs_rows *r);
    const char *(*name)(dbs_rows *r, int col);
    int (*is_null)(dbs_rows *r, int col);
    int64_t (*get_int)(dbs_rows *r, int col);
    double (*get_real)(dbs_rows *r, int col);
    const char *(*get_text)(dbs_rows *r, int col, size_t *len);
    const void *(*get_blob)(dbs_rows *r, int col, size_t *len);
    void (*close)(dbs_rows *r);                 /* frees r */
    /* The column's type (enum dbs_type) as the database declares it
     * (SQLite: by its declared type, else the current value's). */
    int (*col_type)(dbs_rows *r, int col);
    /* How the current row's value is held, for the checked accessors
     * (called on a row only): DBS_TYPE_NULL for NULL; INT when get_int
     * returns it exactly, BOOL when get_int returns it as 0/1, REAL when
     * get_real does, BLOB for bytes that are not text; otherwise the
     * column's text type (TEXT, DECIMAL, TIMESTAMP, UUID, JSON), read
     * through get_text. */
    int (*val_type)(dbs_rows *r, int col);
    /* Optional (NULL: unknown). After next() returned 0: the rows the
     * statement inserted, updated or deleted, as exec() counts them (0
     * for a SELECT). */
    int64_t (*affected)(dbs_rows *r);
};


/* A unit of work for a backend's non-blocking methods (a_*). loop.c owns
 * it and everything it points to until the backend hands it back
 * completed; the backend fills the outcome fields. */
typedef struct dbs__astmt {
    const char *sql;
    const dbs_value *params; /* valid until the unit completes */
    size_t n;
    dbs_rows *rows;          /* the backend's: the statement's rows, fully
                                read (rows header filled but for session
                                and magic; session stays NULL), or NULL
                                when it returns none; loop.c closes them */
    int64_t affected;        /* rows affected, -1 unknown */
    int64_t op_us;           /* set by the backend when the statement's
                                answer came (it ran, or failed itself), for
                                db.client.operation.duration: how long it
                                took as the backend could see it; -1 (set
                                by loop.c before each attempt): it did not
                                run */
} dbs__astmt;

typedef struct dbs__aunit {
    const dbs_context *ctx;     /* applied as a session's (begin()) */
    const dbs_tx_options *opt;  /* NULL: plain */
    bool read_only;             /* as set_read_only(c, 1) for this unit */
    uint64_t after_pos;         /* read-only units: a replica must have
                                   replayed this position (read your
                                   writes, as dbs_session_open_ro_after);
                                   0: none */
    dbs__astmt *stmts;
    size_t n;
    /* the outcome, set by the backend before it hands the unit back */
    int rc;                     /* DBS_OK: committed; else a dbs_code */
    bool commit_sent;           /* the COMMIT went out (rc != DBS_OK then
                                   means DBS_ECOMMIT_UNKNOWN or a failed
                                   COMMIT the server answered) */
    dbs_error err;
    bool uncounted;             /* a worker's: rc != DBS_OK is not counted
                                   in dbs_pool_errors yet (the loop counts
                                   it as the unit's callback reports it) */
    uint64_t commit_pos;        /* as commit_pos() after a commit */
    struct dbs__aunit *next;    /* the backend's while it holds the unit;
                                   links the list a_step hands back */
    void *owner;                /* loop.c's */
} dbs__aunit;

typedef struct dbs__driver {
    const char *name;   /* "sqlite", "postgresql": logs and metrics */

    /* Per-pool set-up and tear-down (t->shared). target_open may keep what
     * must outlive single connections, such as the anchor that keeps an
     * in-memory SQLite database alive. Either may be NULL. */
    int (*target_open)(dbs__target *t, dbs_error *err);
    void (*target_close)(dbs__target *t);
    /* Optional. At dbs_pool_close, after the shutdown: ends what the
     * backend runs for the pool on threads of its own (PostgreSQL's cancel
     * requests), waiting at most connect_timeout_ms (10 s when 0), so that
     * none is left inside the client library when the close returns;
     * what is still running then is left to end by itself and reported
     * through t->notice. target_close does the same again. */
    void (*target_stop)(dbs__target *t);
    /* For the housekeeper, may be NULL: DBS_OK, or an error when what the
     * target names changed under the pool (a database file deleted or
     * replaced); the pool then validates every connection before its next
     * hand-out. Called from one thread at a time, never with a lock. */
    int (*target_check)(dbs__target *t, dbs_error *err);

    /* Opens a connection; NULL with err filled (DBS_ECONNECT, DBS_ENOMEM). */
    void *(*connect)(const dbs__target *t, dbs_error *err);
    /* One cheap round trip proving the connection works. */
    int (*ping)(void *c, dbs_error *err);
    /* Starts a transaction carrying ctx (copied by the caller for the whole
     * transaction, so the backend may keep the pointer until commit or
     * rollback). A backend may defer sending anything until the next
     * statement so BEGIN costs no round trip of its own. */
    int (*begin)(void *c, const dbs_context *ctx, dbs_error *err);
    /* Runs a statement with $1..$n parameters: rows affected or < 0. */
    int64_t (*exec)(void *c, const char *sql, const dbs_value *params,
                    size_t n, dbs_error *err);
    /* Runs a query; the rows' header is filled but for session and magic. */
    dbs_rows *(*query)(void *c, const char *sql, const dbs_value *params,
                       size_t n, dbs_error *err);
    /* Ends the transaction begun by begin(). commit returns
     * DBS_ECOMMIT_UNKNOWN when the connection was lost with COMMIT sent. If
     * begin() was deferred and nothing was sent, both cost nothing. */
    int (*commit)(void *c, dbs_error *err);
    int (*rollback)(void *c, dbs_error *err);
    /* Called at release, after rollback: leaves nothing of the session's for
     * the next user (DBS_RESET_FULL) or only ends any transaction
     * (DBS_RESET_ROLLBACK). Failure means the connection is discarded. */
    int (*reset)(void *c, enum dbs_reset_mode mode, dbs_error *err);
    /* 1 once the connection is known to be unusable. */
    int (*is_broken)(void *c);
    /* The backend's own handle. The caller may change anything with it, so
     * the backend treats the connection as dirty for the next reset. */
    void *(*native)(void *c);
    /* Closes and frees c. Never fails. */
    void (*close)(void *c);

    /* Optional (NULL: the pool uses commit() or rollback(), then reset()).
     * Ends the transaction as commit()/rollback() do, for a session that
     * ends right after, and does the release reset (t->reset) in the same
     * round trip; reset() then has nothing left to do. A commit that
     * succeeded stays DBS_OK even if its reset failed: the connection is
     * then broken and discarded. */
    int (*commit_release)(void *c, dbs_error *err);
    /* May leave the rollback to the reset() that follows at once in the
     * same release (MariaDB: COM_RESET_CONNECTION rolls back). */
    int (*rollback_release)(void *c, dbs_error *err);
    /* Optional (NULL: none can happen). The failure of a release reset
     * that ran where the call that sent it could not report it: with a
     * COMMIT that succeeded (commit_release, which returns DBS_OK), after
     * a ROLLBACK whose answer came (MariaDB's rollback_release), or, on
     * the non-blocking path, after its unit was handed back (a_step). The
     * connection is broken since. Returns its code (< 0) with err filled,
     * once: the failure is forgotten then; DBS_OK when there is none.
     * Sends nothing. */
    int (*reset_failure)(void *c, dbs_error *err);
    /* Optional. Bounds each later round trip on c to ms (0: none; < 0: the
     * pool's t->statement_timeout_ms again). Sends nothing. */
    void (*set_timeout)(void *c, int ms);
    /* Optional (NULL: the backend cannot enforce read-only sessions, and
     * dbs_session_open_ro refuses it). on = 1: every transaction begun
     * from now on is read-only, enforced by the database; on = 0: back to
     * read-write, called before the connection's reset at release. Must
     * not by itself make reset treat the connection as dirty. */
    int (*set_read_only)(void *c, int on, dbs_error *err);
    /* Optional (NULL: the backend has no socket to look at, as SQLite).
     * Whether an idle connection is still usable, without a round trip:
     * looks at its socket without blocking (one poll or recv(MSG_PEEK) when
     * nothing arrived, the common case). DBS_OK: nothing arrived, or only
     * what the backend itself was owed (read now); DBS__PEEK_UNSURE: the
     * server sent something unasked that the backend could not account for
     * (a notice, a ParameterStatus, an error before it closes): the caller
     * pings, which reads it; DBS_ECONNECT with err filled: the server closed
     * the connection or the socket failed, and is_broken(c) is 1 from then
     * on. Never sends anything. wait: the caller may block (a program's
     * thread checking out), so an answer the backend is owed and that is
     * still on its way (PostgreSQL's posted reset) is waited for, within
     * the statement bound, and read; 0 on an event loop's thread, which
     * never blocks: a connection owed such an answer is DBS_OK, left for
     * its next flight to read. */
    int (*peek)(void *c, int wait, dbs_error *err);
    /* 1 when, since the last reset, a transaction that begin() started
     * ended on the server other than by commit() or rollback(), as the
     * server reports it after each statement (an implicit commit by DDL, a
     * COMMIT or ROLLBACK sent as SQL): part of the session's work may have
     * committed. The backend then begins a new transaction (read-only
     * still, after set_read_only) with the next statement, so no statement
     * runs outside one. Never blocks, sends nothing. */
    int (*tx_escaped)(void *c);
    /* Optional (NULL: the backend has no positions). With
     * t->commit_pos, after a commit() or commit_release() that returned
     * DBS_OK: the position in the server's
     * log that a replica must have replayed to show what that commit
     * wrote (PostgreSQL: a WAL position), read from the commit's own
     * round trip; 0 when the commit wrote nothing; UINT64_MAX when it may
     * have written but the position did not come back; 0 without
     * t->commit_pos. Sends nothing. */
    uint64_t (*commit_pos)(void *c);
    /* Optional. In a child process after fork(): closes c's socket and
     * frees c WITHOUT sending anything on it (no goodbye message, no TLS
     * close_notify), so the parent's server session, which shares the
     * socket, lives on. NULL: c must not be touched at all in a child
     * (SQLite): it is left allocated. */
    void (*forget)(void *c);
    /* Optional (NULL: dbs_session_set_tx_options is refused with
     * DBS_ECONFIG). Sets how every transaction begin() starts from now on
     * (o NULL or zeroed: plain), sent with the transaction's start, never
     * in a round trip of its own; called only while no transaction is
     * open. DBS_ECONFIG for an option the backend does not have, with
     * nothing changed. reset() returns c to plain transactions. Must not
     * by itself make reset treat the connection as dirty. */
    int (*tx_options)(void *c, const dbs_tx_options *o, dbs_error *err);
    /* With tx_options. Whether tx_options would refuse o (not plain), on a
     * read-only session when ro, decided without a connection: the
     * caller's mistake is reported before any is waited for or opened. */
    int (*tx_options_check)(const dbs_tx_options *o, bool ro, dbs_error *err);
    /* Optional (NULL: nothing to check). Whether exec or query would
     * refuse sql's parameters before sending anything, decided without a
     * connection, with the error they would give: dbs_unit_add refuses
     * them there, since found only once the unit has a connection they
     * come after a wait or a failed connect, and look like an outage. */
    int (*args_check)(const char *sql, const dbs_value *params, size_t n, dbs_error *err);
    /* Optional (NULL: a statement in flight cannot be stopped from
     * outside). Called from another thread while c's user waits in a
     * statement (the caller keeps c open until it returns): asks the
     * database to stop that statement, which then fails (SQLite:
     * sqlite3_interrupt and a mark its handlers read; PostgreSQL: a cancel
     * request; MariaDB: KILL of the whole connection from a connection of
     * its own). The caller discards c afterwards: on SQLite and MariaDB a
     * statement that begins after the call fails too (a call that lands
     * between two statements must not let the next run to its bound);
     * PostgreSQL's server ignores a request that finds no statement
     * running. May block for a connect and one round trip, within the
     * connection's bounds: call it from a thread that may wait. */
    void (*interrupt)(void *c);
    /* Optional, all or none (NULL: a loop runs this backend's units on
     * worker threads through the blocking methods above). Non-blocking
     * units, for loop.c. None of them ever waits; the connection is used
     * by the loop's thread only while any unit is in flight on it.
     *
     * a_fd: the socket to watch.
     * a_send: queues u's whole flight behind those in flight: its
     *   transaction's start with ctx and opt, its statements, COMMIT, a
     *   Sync, then what the release reset (t->reset) needs before the
     *   connection's next unit or user, so that nothing u did is visible
     *   to them; writes what the socket takes now. DBS_OK, or an error
     *   with u untouched (nothing of it sent; is_broken(c) says whether
     *   the connection is lost).
     * a_step: after the socket was ready (revents from poll, or 0 to just
     *   flush): writes what is queued and the socket takes, reads what
     *   arrived, and hands back, oldest first through next, every unit
     *   that ended (outcome filled). *want: the poll events it waits for
     *   (POLLIN, plus POLLOUT while output is queued; 0 when nothing is in
     *   flight). When the connection is lost, every unit in flight is
     *   handed back failed (DBS_ECONNECT; DBS_ECOMMIT_UNKNOWN for one
     *   whose COMMIT went out) and is_broken(c) is 1. Returns how many
     *   units it handed back. A backend may read while it writes (libpq
     *   does when the socket is full), in a_send too: call a_step(c, 0)
     *   after a_send, which also hands back what was read then, and poll
     *   for *want only after that.
     * a_cancel: asks the server to cancel what runs on c now without the
     *   caller waiting (a thread, or a non-blocking socket); the unit then
     *   ends through a_step, failed with DBS_ECANCELED, or as it would
     *   have if the cancel came too late.
     * a_idle: 1 when no unit is in flight and the connection may go back
     *   to the pool (or to the blocking methods) as a clean one: nothing
     *   open, the reset done.
     * a_results: how many of c's queued commands have had their answer
     *   read, whole (a result, not a row or a notice of one): the loop
     *   counts a statement's bound from the last answer, so that one that
     *   keeps sending (rows as they are made, notices) is still bounded. */
    int (*a_fd)(void *c);
    int (*a_send)(void *c, dbs__aunit *u, dbs_error *err);
    int (*a_step)(void *c, short revents, dbs__aunit **done, short *want);
    void (*a_cancel)(void *c);
    int (*a_idle)(void *c);
    uint64_t (*a_results)(void *c);
} dbs__driver;

/* peek(): bytes arrived unasked; only a round trip can tell. */
#define DBS__PEEK_UNSURE 1

extern const dbs__driver dbs__driver_sqlite;
#ifdef DBSCOPE_WITH_PG
extern const dbs__driver dbs__driver_pg;
#endif
#ifdef DBSCOPE_WITH_MYSQL
extern const dbs__driver dbs__driver_mysql;
#endif

#endif /* DBS_DRIVER_H */
