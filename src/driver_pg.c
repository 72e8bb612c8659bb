/*
 * PostgreSQL backend on libpq.
 *
 * Flights. The connection stays in pipeline mode and non-blocking: every
 * round trip is one "flight" of queued commands and Syncs, written with
 * PQflush and read with poll() on PQsocket, PQconsumeInput and PQisBusy
 * against a deadline, so no call here waits without bound (PQgetResult is
 * only called when PQisBusy says it will not block).
 *
 * Round trips. begin() sends nothing. A statement's flight is [owed
 * DEALLOCATEs, Sync] [BEGIN (with the transaction options: ISOLATION
 * LEVEL, READ ONLY, DEFERRABLE), set_config(...) for each context setting, or
 * for a read-only transaction without one a SELECT: its first snapshot]
 * [Parse of a statement new to the cache] Bind/Execute, Sync. After each
 * flight the server's transaction status says whether the transaction
 * dbscope began is still open (follow_tx). So the first
 * statement of a transaction costs one round trip with its BEGIN and
 * context, every later one costs one, COMMIT one: N + 1. On a pool with
 * replicas, the COMMIT's flight also reads the commit's WAL position
 * (end_tx), for reads that must see it.
 *
 * Reset (DBS_RESET_FULL). Nothing guesses from SQL text what a session
 * changed: a function, trigger or view can change anything. Every session
 * that sent anything gets the reset, in the flight that ends it:
 * ROLLBACK or COMMIT, then in the same segment (no Sync between them: a
 * Sync costs the server a transaction end, a ReadyForQuery and a write of
 * its own) the reset commands and a query that reconciles the server's
 * prepared statements with the statement cache and reports the backend's
 * temporary schema, on which the two commands it may leave out depend
 * (named statements parsed once per connection, see pg_reset_sql), Sync;
 * when the session made the backend's first temporary schema, or the
 * server skipped the reset because the COMMIT failed (it reports each
 * skipped command as aborted), the reset runs again in full before the
 * connection is used.
 * After dbs_commit followed by close, no command ends the session, so the
 * reset flight is written at release and its answer read by the
 * connection's next flight ("posted"): the server runs it as it arrives,
 * not when the connection is next used (advisory locks go at release), the
 * releasing thread does not wait for it, and the next user's commands queue
 * behind it on the same socket.
 *
 * Units of an event loop (a_send, a_step: the non-blocking path). The same
 * machinery, resumable: a_send queues a whole unit as segments of one
 * flight and writes what the socket takes; a_step writes the rest, reads
 * what arrived (PQconsumeInput, PQgetResult while !PQisBusy) and matches
 * each result to the command queued for it, unit by unit, in order. A
 * unit is [owed DEALLOCATEs, Sync] [BEGIN (options, READ ONLY), the guard
 * (below), set_config(..., true) for the context, for each statement its
 * Parse when it is new to the cache (there, so that its names resolve
 * after the unit's statements before it ran) and Bind/Execute, Sync] [COMMIT (with the commit position as end_tx reads it), the reset,
 * its marker, Sync] [DEALLOCATE of statements it evicted from the cache,
 * Sync]. A failed statement makes the rest of its segment
 * PGRES_PIPELINE_ABORTED; the COMMIT, in the next segment, then ends the
 * failed transaction as a ROLLBACK and the reset runs: only that unit
 * fails. (A COMMIT that itself fails makes the server skip the reset:
 * reset_done then has it run again in full, as for end_tx.) The unit is
 * handed back as soon as its COMMIT's answer is read, before its reset's.
 *
 * Pipelined units and the reset. Unit k+1 is on the wire before unit k's
 * reset answer comes back, so "the reset runs again in full before the
 * connection is used" (reset_done) would come too late. It is made sound
 * by construction so: the reset between units runs CLOSE ALL and UNLISTEN
 * * by name every time (two Bind/Executes of no cost on a session without
 * cursors or LISTEN), so no LISTEN or cursor WITH HOLD outlives it; its
 * last command, in the reset's own implicit transaction, sets a marker
 * (dbscope.reset = the reset's number on this connection and a random
 * part drawn for it, see a_marker), which is
 * therefore set only when every command of that reset ran (one that
 * fails, or a named statement a unit deallocated, aborts the segment,
 * marker included). A unit queued behind a reset whose answer is unread
 * starts with a guard, right after its BEGIN: a query that raises an
 * error unless the marker holds that reset's value, no prepared statement
 * made by SQL exists (from_sql: a session's PREPARE, which the reset's
 * answer would have had deallocated, or one of dbscope's names replaced
 * by a session, the reset's own and the marker's included, so that a
 * replaced statement can neither run for the next unit nor fake the
 * reset) and, when that reset ran without DISCARD TEMP (the server had
 * reported no temporary schema), the backend still has none. The guard is
 * sent from its text, unnamed, so no session can replace it. When the
 * guard fails, its segment aborts to
 * its Sync and nothing of the unit runs: it comes back DBS_ERETRYABLE (not
 * committed, safe to send again), and by then the reset again in full is
 * queued (a_reset_read, when the reset's answer says so), ahead of
 * anything sent later. A connection whose resets are all read needs no
 * guard. A blocking release's reset that is still unread (posted) when a
 * unit comes is read as a flight of its own, and a reset of this kind
 * follows it. Cost per unit: the guard, parsed each time, with a look at
 * pg_prepared_statements, and one Bind/Execute for the marker (the named
 * statement dbs_m, parsed once per connection, see a_prepare); no extra
 * round trip.
 *
 * Cancel (a_cancel): the cancel request goes from a thread (start_cancel);
 * the statement it reaches fails with 57014 and its unit ends
 * DBS_ECANCELED; units behind it are in their own segments and run. A
 * request could still be on its way after the flight is read, and reach
 * the next user's statement: the connection takes no more units and is
 * discarded (is_broken) once its flight is read.
 *
 * Locking: none, except the pools' cancel requests (cancels_mu). driver.h guarantees
 * one thread at a time per connection.
 */
#include "internal.h"

#include <libpq-fe.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PG_OID_BOOL 16
#define PG_OID_BYTEA 17
#define PG_OID_INT8 20
#define PG_OID_FLOAT8 701
#define PG_OID_INT2 21
#define PG_OID_INT4 23
#define PG_OID_OID 26
#define PG_OID_JSON 114
#define PG_OID_FLOAT4 700
#define PG_OID_TIMESTAMP 1114
#define PG_OID_TIMESTAMPTZ 1184
#define PG_OID_NUMERIC 1700
#define PG_OID_UUID 2950
#define PG_OID_JSONB 3802

/* Commands and Syncs in one flight. The largest is a release: owed
 * DEALLOCATEs (PG_MAXFOREIGN + Sync), ROLLBACK/COMMIT + Sync, the reset
 * commands, the reconcile query and a Sync. */
#define PG_MAXQ 48
/* Foreign prepared statements deallocated one by one; more: DEALLOCATE ALL. */
#define PG_MAXFOREIGN 16
/* Cancel requests in flight at once, per pool (see start_cancel). */
#define PG_MAXCANCELS 4

/* Defaults applied unless the URL sets its own: a peer that stops answering
 * is noticed within about 25 s when idle or waiting for a long statement
 * (10 s idle, then 3 probes 5 s apart), and within 30 s when data we sent
 * stays unacknowledged. */
static const char *const pg_tcp_defaults[][2] = {
    {"keepalives", "1"},        {"keepalives_idle", "10"},
    {"keepalives_interval", "5"}, {"keepalives_count", "3"},
    {"tcp_user_timeout", "30000"},
};
#define PG_NDEFAULTS (sizeof pg_tcp_defaults / sizeof pg_tcp_defaults[0])

/* Settings that change how the server spells the values dbscope reads
 * (text results), sent in the startup packet: a role's or a database's
 * defaults (ALTER ROLE ... SET) apply to every connection below them, and
 * RESET ALL, the reset's, returns to the startup packet's values, not to
 * the server's defaults. client_encoding is a libpq keyword of its own (the
 * URL's, if any, after it wins); extra_float_digits (above 0: float4 and
 * float8 in their shortest exact spelling; 0 or less cuts digits) goes in
 * options, before the user's own. DateStyle must be ISO for timestamps,
 * but the date order beside it is how the user's SQL reads '02/03/2024',
 * which no setting sent here may change: it is added (with the order the
 * server reported) only to a connection that came up in another style,
 * made again (pg_connect_with). */
#define PG_STARTUP_OPTIONS "-c extra_float_digits=3"

/* The reset: DISCARD ALL spelt out (DISCARD ALL itself may not run in a
 * pipeline), minus DEALLOCATE ALL, which the reconcile query (the last
 * entry) replaces so that dbscope's own prepared statements survive. The
 * reconcile query also releases the session's advisory locks (a function:
 * no command of its own) and reports the backend's temporary schema.
 *
 * The named reset (every session's) leaves out what the server reports
 * absent, read by its reconcile query; the reset from the text (below)
 * runs every command. CLOSE ALL and UNLISTEN * run in every reset: on a
 * session without a cursor WITH HOLD or a LISTEN each costs the server
 * about 2 us (bench/reset_items.c), less than the probes of pg_cursors and
 * pg_listening_channels() that would let them be left out (about 11 and
 * 7 us), and a session that left either needs no second round trip.
 *
 * DISCARD TEMP and DISCARD PLANS run only on a backend that has a
 * temporary schema, as the server reports it (pg_my_temp_schema(), read by
 * every reset; once made, a backend keeps it). Without one there is no
 * temporary object to drop, and no cached plan to drop either: the server
 * re-plans a cached statement by itself when what its plan was made under
 * is no longer so (an object it uses changed or was dropped, DISCARD
 * TEMP's drops included; search_path resolves differently, and making the
 * temporary schema changes it; another role, or row_security, for a plan
 * row-level security shaped). What it does not notice is a new object that
 * shadows the one a statement resolved to: a temporary table made in a
 * temporary schema that was already there. So on a backend with a
 * temporary schema DISCARD PLANS stays, and the next session resolves
 * every cached statement afresh, as on a fresh connection
 * (tests/test_pg_reset.c: plan_rls, plan_search_path, plan_temp,
 * plan_shadow). A session that made the backend's first temporary object
 * finds the reset without them: the reset then runs again in full from
 * the text before the connection is used (reset_done), once per backend.
 *
 * Each is a named statement, "dbs_r0" ... "dbs_r7", parsed in the first
 * reset of a connection and executed by name after that (Bind/Execute:
 * no parsing or planning per session). Whether they are still ours is the
 * server's to say: the reconcile query returns their text and whether SQL
 * made them (from_sql), and a reset whose named statement is missing, or
 * is not ours (a session deallocated it and prepared its own under that
 * name), runs again from the text (reset_again). */
enum { PG_R_TEMP = 5, PG_R_PLANS = 6 };
static const char *const pg_reset_sql[] = {
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET ALL",
    "CLOSE ALL",
    "UNLISTEN *",
    "DISCARD SEQUENCES",
    "DISCARD TEMP",  /* PG_R_TEMP: only with a temporary schema */
    "DISCARD PLANS", /* PG_R_PLANS: likewise */
    /* Every prepared statement on the server, to compare with the cache,
     * with the text of those named like the reset's, in the third column
     * the temporary schema's oid (0: none), and in the fourth whether SQL
     * made it (from_sql: PREPARE, whatever runs it, a function or DO
     * included; dbscope's own are all protocol-level Parses, so one of
     * its names with from_sql true was put there by a session, see
     * reconcile). Run by name, it lists
     * at least itself, so the advisory locks are released:
     * pg_advisory_unlock_all() runs once a row, which costs the server less
     * than the join that would run it once (pg_reconcile_text, below, for
     * the reset from the text). A query that does the
     * comparison on the server (with the cache's names as a parameter)
     * costs 0.6 ms of planning per release; this costs little more than a
     * round trip, and the client compares at most stmt_cache_size names.
     * LIKE costs the server less than left() and a comparison, about 3 us
     * a reset (bench/reset_items.c); its '_' matches any character, so a
     * few other names may come with their text, and reset_index decides.
     * setseed($1) likewise: a session's setseed() makes the backend's
     * random() a sequence known in advance, which neither RESET ALL nor
     * DISCARD ALL touches; the reset seeds it again from a value nobody
     * before it can know (reset_seed), as a fresh backend seeds itself. */
    ("SELECT name, CASE WHEN name OPERATOR(pg_catalog.~~) 'dbs_r_' "
     "THEN statement END, pg_catalog.pg_my_temp_schema(), from_sql, "
     "pg_catalog.pg_advisory_unlock_all(), pg_catalog.setseed($1) "
     "FROM pg_catalog.pg_prepared_statements"),
};
/* The reconcile query as the reset from the text runs it (unnamed): at
 * least one row even when no statement is prepared, so that the locks are
 * released, random() seeded and the temporary schema reported all the
 * same. */
static const char pg_reconcile_text[] =
    "SELECT p.name, CASE WHEN p.name OPERATOR(pg_catalog.~~) 'dbs_r_' "
    "THEN p.statement END, o.t, p.from_sql "
    "FROM (SELECT pg_catalog.pg_advisory_unlock_all() AS u, "
    "pg_catalog.setseed($1) AS r, pg_catalog.pg_my_temp_schema() AS t) "
    "AS o LEFT JOIN pg_catalog.pg_prepared_statements AS p ON true";
#define PG_NRESET ((int)(sizeof pg_reset_sql / sizeof pg_reset_sql[0]))

typedef struct pg_stmt {
    char *sql; /* NULL = free slot */
    char name[24];
    uint64_t last_use;
    uint64_t born; /* a_epoch when it was parsed */
    uint64_t parsing; /* the unit (a_units) whose transaction parses it,
                         until that Parse's answer is read; 0: done */
    bool seen; /* in the server's list (reconcile) */
} pg_stmt;

/* Item roles in a flight; results are read back in the same order. */
enum {
    Q_SYNC,
    Q_CMD,       /* result kept in res[] */
};

typedef struct pg_flight {
    int n;
    int owed_to;              /* items before it: owed DEALLOCATEs */
    int done;                 /* items read completely (collect) */
    int reset_from, reset_to; /* reset commands: [from, to), -1 none */
    int reconcile;            /* index of the reconcile query, -1 none */
    bool reset_named;         /* the reset ran by name (dbs_r0 ...) */
    bool reset_temp;          /* the reset ran DISCARD TEMP and PLANS */
    bool reset_full;          /* the reset ran every command (the text) */
    signed char rcmd[PG_MAXQ]; /* reset items: index in pg_reset_sql */
    unsigned char kind[PG_MAXQ];
    PGresult *res[PG_MAXQ];
} pg_flight;

typedef struct pg_conn {
    PGconn *pg;
    const dbs__target *t;
    bool broken;
    bool used;          /* anything sent since the last reset */
    bool begin_pending; /* begin() called, BEGIN not yet sent */
    bool tx_sent;       /* BEGIN sent: a transaction is open server-side */
    bool native_used;   /* native() handed out the PGconn */
    bool dealloc_all;   /* too many foreign statements: DEALLOCATE ALL */
    bool tcp;           /* TCP socket: TCP_CORK works */
    bool corked;
    bool read_only;     /* transactions begin READ ONLY (set_read_only) */
    bool opt_ro;        /* transactions begin READ ONLY (tx_options) */
    char begin_sql[80]; /* how transactions begin (tx_options); "" = BEGIN */
    bool reset_stmts;   /* dbs_r0 ... are on the server (see pg_reset_sql) */
    bool temp_schema;   /* the backend has a temporary schema (the last
                           reset's reconcile query said so) */
    bool escaped;       /* since the last reset, a transaction dbscope began
                           ended on the server other than by its COMMIT or
                           ROLLBACK (COMMIT, END, ROLLBACK sent as SQL) */
    uint64_t commit_pos; /* WAL position covering the last commit that
                            wrote, 0: none (pg_commit_pos) */
    int tx_fail;        /* the code of the failure that left dbscope's
                           transaction aborted (0: none): its COMMIT,
                           answered ROLLBACK, fails with that class */
    char tx_fail_state[6];
    const dbs_context *ctx;
    pg_stmt *cache;
    int cache_n;
    uint64_t tick, next_name;
    int timeout_ms;     /* bound on each round trip (0: none) */
    int bound_ms;       /* the bound of the flight in progress, for messages */
    pg_flight posted;   /* written, answer not read yet (n == 0: none) */
    int n_foreign;      /* prepared statements to deallocate next flight */
    /* "DEALLOCATE" and a quoted name of up to 63 bytes, quotes doubled */
    char foreign[PG_MAXFOREIGN][12 + 2 * 63 + 2];
    char password[128]; /* only to scrub it out of libpq's messages */
    /* The non-blocking path (a_*): flights in the order sent. */
    struct pg_aflight *a_head, *a_tail;
    int a_resets;        /* flights queued whose reset answer is unread */
    int a_full;          /* of them, resets from the text */
    uint64_t a_epoch;    /* the number of the last reset queued */
    uint64_t a_nonce;    /* the random half of its marker (a_marker) */
    uint64_t a_units;    /* units sent on this connection */
    uint64_t a_results;  /* answers read whole (a_results) */
    int64_t a_read_ns;   /* when the last of them was read */
    bool a_notemp;       /* that reset ran without DISCARD TEMP */
    bool a_cancel;       /* a cancel was asked for while units flew */
    bool a_spent;        /* ... so the connection goes once they are read */
    bool a_known;        /* the server said why it ended the session: no
                            command after that one ran */
    bool a_torn;         /* a flight was queued in part (libpq refused a
                            message): what is queued is never answered
                            whole, so the next a_step hands every unit
                            back as the connection's loss */
    bool a_outq;         /* output queued that the socket did not take */
    bool a_named;        /* the marker is parsed, as the named statement
                            dbs_m (a_prepare) */
    uint64_t reconcile_min; /* reconcile keeps cache entries born since */
    dbs_error reset_err; /* code < 0: a release reset failed after its
                            caller was answered (pg_reset_failure) */
} pg_conn;

typedef struct pg_rows {
    dbs_rows base;
    PGresult *res;
    int row, nrows, ncols;
    unsigned char *blob; /* decoded bytea of the last get_blob */
} pg_rows;

static const dbs__rows_ops pg_rows_ops;

/* ---- errors ---- */

/* Replaces every secret of the connection string in msg by "***": the
 * password libpq read, and every secret dbs__scrub_url_secrets finds in the
 * string (sslpassword too, raw, decoded and as libpq reads it). */
static void scrub(const pg_conn *c, char *msg, size_t cap)
{
    size_t pl = strlen(c->password);
    dbs__scrub_text(msg, cap, c->password, pl);
    dbs__scrub_url_secrets(c->t->conninfo, msg, cap);
}

/* libpq's messages end in newlines and may span lines: one line for logs. */
static void chomp(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\t' || *p == '\r')
            *p = ' ';
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
}

static int conn_lost(pg_conn *c, dbs_error *err, const char *what)
{
    char m[400];
    snprintf(m, sizeof m, "%s", PQerrorMessage(c->pg));
    chomp(m);
    scrub(c, m, sizeof m);
    c->broken = true;
    return dbs__err(err, DBS_ECONNECT,
                    "postgresql: connection lost during %s: %s", what,
                    m[0] ? m : "server closed the connection");
}

/* Maps a failed result to a dbs_code by SQLSTATE and fills err. */
static int result_err(pg_conn *c, const PGresult *r, dbs_error *err)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char m[400];
    snprintf(m, sizeof m, "%s",
             r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg));
    chomp(m);
    scrub(c, m, sizeof m);
    int code = DBS_ESQL;
    /* Serialization failure, deadlock, and a lock not obtained in time
     * (55P03: lock_timeout, NOWAIT), transient as MariaDB's lock wait
     * timeout and SQLite's BUSY are. */
    if (st && (!strcmp(st, "40001") || !strcmp(st, "40P01") || !strcmp(st, "55P03")))
        code = DBS_ERETRYABLE;
    else if (st && !strncmp(st, "23", 2))
        code = DBS_ECONSTRAINT;
    /* disk_full. Not the rest of class 53 (out of memory, too many
     * connections, a configured limit): those are not storage. */
    else if (st && !strcmp(st, "53100"))
        code = DBS_EFULL;
    /* 08P01 is also what a Bind with the wrong parameter count gets, on a
     * connection that is fine: only a lost connection makes it ECONNECT. */
    else if (st && !strcmp(st, "08P01") && PQstatus(c->pg) == CONNECTION_OK)
        code = DBS_ESQL;
    else if ((st && (!strncmp(st, "08", 2) || !strcmp(st, "57P01") ||
                     !strcmp(st, "57P02") || !strcmp(st, "57P03"))) ||
             PQstatus(c->pg) != CONNECTION_OK)
        code = DBS_ECONNECT;
    /* A read-write session refused as read-only: the server is a standby
     * now (a failed-over primary); the next connect finds the writable one. */
    if (code == DBS_ECONNECT || (st && !strcmp(st, "25006") && !c->read_only && !c->opt_ro))
        c->broken = true;
    dbs__err(err, code, "postgresql: %s", m[0] ? m : "statement failed");
    if (st)
        dbs__err_sqlstate(err, st);
    return code;
}

static bool failed(const PGresult *r)
{
    return r && PQresultStatus(r) == PGRES_FATAL_ERROR;
}

/* ---- notices ---- */

/* libpq calls this on the thread using the connection, from inside
 * PQconsumeInput or PQgetResult: one line, password scrubbed, to the
 * pool. Without a receiver libpq would print to stderr. */
static void on_notice(void *arg, const PGresult *r)
{
    pg_conn *c = arg;
    /* An error that arrives while nothing runs comes here too: a FATAL one
     * (57P01 after pg_terminate_backend, an idle timeout) is the server
     * saying why it is closing the connection. */
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC")))
        c->broken = true;
    if (!c->t->notice)
        return;
    char m[512];
    snprintf(m, sizeof m, "%s", PQresultErrorMessage(r));
    chomp(m);
    scrub(c, m, sizeof m);
    if (m[0])
        c->t->notice(c->t->notice_arg, m);
}

/* ---- cancel ---- */

/* A pool's cancel requests (t->shared). PQcancel opens a connection of its
 * own and waits for the server to close it. libpq 15 bounds that wait only
 * by the connection's keepalives and tcp_user_timeout (a network that
 * drops packets), not by connect_timeout, and not at all against a server
 * that accepts and never answers (a hung postmaster, a proxy). So the
 * requests run on threads the pool owns: at most PG_MAXCANCELS at once
 * per pool, each taking the next queued request when its own is answered
 * (a late cancel is harmless: its key is that backend's alone); beyond
 * PG_MAXCANCELQ queued, a request is not sent, and the pool is told. At
 * dbs_pool_close, cancels_stop waits for them (see there).
 *
 * Locking: cancels_mu guards every pg_cancels and pg_cthread field; it is
 * process-wide, taken for a few instructions at a time, never around I/O
 * or pthread_join. */
typedef struct pg_cjob {
    PGcancel *k;
    struct pg_cjob *next;
} pg_cjob;

typedef struct pg_cthread {
    pthread_t th;
    struct pg_cancels *owner;
    bool exited; /* past its last request: joining it does not wait */
    bool left;   /* detached by cancels_stop: frees itself at exit */
    struct pg_cthread *next;
} pg_cthread;

typedef struct pg_cancels {
    int refs;    /* the pool's, and one per thread left (cancels_stop) */
    int running; /* threads not exited and not left */
    int queued;
    pg_cjob *head, *tail;
    pg_cthread *threads; /* not joined, not left */
    bool orphan;         /* its pool is freed: only threads left hold it */
    struct pg_cancels *next_all; /* every pool's, for fork */
} pg_cancels;

/* Requests queued per pool behind the PG_MAXCANCELS running. */
#define PG_MAXCANCELQ 64
/* What cancels_stop waits when connect_timeout_ms is 0 (no bound). */
#define PG_CANCEL_WAIT_MS 10000

static pthread_mutex_t cancels_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cancels_cv;
static pg_cancels *cancels_all;
static pthread_once_t cancels_once = PTHREAD_ONCE_INIT;

static void cancels_unlink(pg_cancels *q)
{
    for (pg_cancels **pp = &cancels_all; *pp; pp = &(*pp)->next_all)
        if (*pp == q) {
            *pp = q->next_all;
            break;
        }
}

/* A child of fork() has none of its parent's cancel threads, and must not
 * send the requests the parent queued for its own connections: every
 * pool's requests are forgotten, and the lock, which another thread may
 * have held at the fork, made anew. */
static void cancels_cv_init(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&cancels_cv, &attr);
    pthread_condattr_destroy(&attr);
}

/* Forgets q's requests not yet sent. [cancels_mu] */
static void cancels_drop_queued(pg_cancels *q)
{
    while (q->head) {
        pg_cjob *j = q->head;
        q->head = j->next;
        PQfreeCancel(j->k);
        free(j);
    }
    q->tail = NULL;
    q->queued = 0;
}

static void cancels_child(void)
{
    pthread_mutex_init(&cancels_mu, NULL);
    cancels_cv_init();
    for (pg_cancels **pp = &cancels_all; *pp;) {
        pg_cancels *q = *pp;
        cancels_drop_queued(q);
        while (q->threads) {
            pg_cthread *th = q->threads;
            q->threads = th->next;
            free(th);
        }
        q->running = 0;
        /* threads left by the parent are not the child's */
        if (q->orphan) {
            *pp = q->next_all;
            free(q);
            continue;
        }
        q->refs = 1;
        pp = &q->next_all;
    }
}

static void cancels_register(void)
{
    cancels_cv_init();
    pthread_atfork(NULL, NULL, cancels_child);
}

static void *cancel_main(void *arg)
{
    pg_cthread *me = arg;
    pg_cancels *q = me->owner;
    pthread_mutex_lock(&cancels_mu);
    while (q->head) {
        pg_cjob *j = q->head;
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->queued--;
        pthread_mutex_unlock(&cancels_mu);
        char buf[256];
        (void)PQcancel(j->k, buf, sizeof buf);
        PQfreeCancel(j->k);
        free(j);
        pthread_mutex_lock(&cancels_mu);
    }
    me->exited = true;
    bool left = me->left, last = false;
    if (left) {
        last = --q->refs == 0;
        if (last)
            cancels_unlink(q);
    } else {
        q->running--;
        pthread_cond_broadcast(&cancels_cv);
    }
    pthread_mutex_unlock(&cancels_mu);
    if (left)
        free(me);
    if (last)
        free(q);
    return NULL;
}

/* Asks the server to cancel what the connection runs, without waiting:
 * the request goes from one of the pool's cancel threads with its own copy
 * of the cancel key (PQgetCancel). */
static void start_cancel(pg_conn *c)
{
    pg_cancels *q = c->t->shared;
    PGcancel *k = q ? PQgetCancel(c->pg) : NULL;
    pg_cjob *j = k ? malloc(sizeof *j) : NULL;
    if (!j) {
        PQfreeCancel(k);
        return;
    }
    j->k = k;
    j->next = NULL;
    pthread_once(&cancels_once, cancels_register);
    pthread_mutex_lock(&cancels_mu);
    /* threads past their last request, joined below outside the lock */
    pg_cthread *done = NULL;
    for (pg_cthread **pp = &q->threads; *pp;) {
        pg_cthread *th = *pp;
        if (th->exited) {
            *pp = th->next;
            th->next = done;
            done = th;
        } else {
            pp = &th->next;
        }
    }
    bool sent = q->queued < PG_MAXCANCELQ;
    if (sent) {
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        q->queued++;
        pg_cthread *th = q->running < PG_MAXCANCELS ? calloc(1, sizeof *th) : NULL;
        if (th) {
            th->owner = q;
            if (pthread_create(&th->th, NULL, cancel_main, th) == 0) {
                th->next = q->threads;
                q->threads = th;
                q->running++;
            } else {
                free(th);
            }
        }
        /* no thread to send it, now or later: not sent either */
        if (q->running == 0) {
            q->head = q->tail = NULL;
            q->queued = 0;
            sent = false;
        }
    }
    int queued = q->queued;
    pthread_mutex_unlock(&cancels_mu);
    while (done) {
        pg_cthread *th = done;
        done = th->next;
        pthread_join(th->th, NULL);
        free(th);
    }
    if (!sent) {
        PQfreeCancel(j->k);
        free(j);
        if (c->t->notice) {
            char m[200];
            snprintf(m, sizeof m,
                     "postgresql: cancel request not sent (%d already waiting for the "
                     "server, or no thread could be started): the statement runs on "
                     "until the server notices its connection was closed",
                     queued);
            c->t->notice(c->t->notice_arg, m);
        }
    }
}

/* At dbs_pool_close (final: false) and when the pool is freed (final:
 * true; sessions left open may have sent more since): waits until the
 * pool's cancel requests are answered, up to connect_timeout_ms (a request
 * is a connect and one answer; PG_CANCEL_WAIT_MS without one), and joins
 * their threads. A request still unanswered then is left to end by itself:
 * its thread is detached and holds nothing of the pool (its own copy of
 * the key, and q, which it frees if it is the last); a request still
 * queued is not sent. Either is reported through t->notice. */
static void cancels_stop(dbs__target *t, bool final)
{
    pg_cancels *q = t->shared;
    if (!q)
        return;
    pthread_once(&cancels_once, cancels_register);
    int ms = t->connect_timeout_ms > 0 ? t->connect_timeout_ms : PG_CANCEL_WAIT_MS;
    const int64_t deadline = dbs__now_ns() + (int64_t)ms * 1000000;
    pthread_mutex_lock(&cancels_mu);
    /* Re-checked after every wake: a wait may end spuriously, and the
     * broadcast is for every pool's threads. */
    while (q->running > 0 && dbs__now_ns() < deadline) {
        struct timespec ts = dbs__timespec(deadline);
        (void)pthread_cond_timedwait(&cancels_cv, &cancels_mu, &ts);
    }
    int dropped = q->queued, left = 0;
    cancels_drop_queued(q);
    pg_cthread *done = NULL;
    while (q->threads) {
        pg_cthread *th = q->threads;
        q->threads = th->next;
        if (th->exited) {
            th->next = done;
            done = th;
        } else {
            pthread_detach(th->th);
            th->left = true;
            q->refs++;
            q->running--;
            left++;
        }
    }
    bool last = false;
    if (final) {
        t->shared = NULL;
        q->orphan = true;
        last = --q->refs == 0;
        if (last)
            cancels_unlink(q);
    }
    pthread_mutex_unlock(&cancels_mu);
    while (done) {
        pg_cthread *th = done;
        done = th->next;
        pthread_join(th->th, NULL);
        free(th);
    }
    if (last)
        free(q);
    if ((left || dropped) && t->notice) {
        char m[300];
        snprintf(m, sizeof m,
                 "postgresql: %d cancel request%s unanswered after %d ms at pool close, "
                 "left to end by %s (holding nothing of the pool); %d queued, not sent",
                 left, left == 1 ? "" : "s", ms, left == 1 ? "itself" : "themselves",
                 dropped);
        t->notice(t->notice_arg, m);
    }
}

static void pg_target_stop(dbs__target *t)
{
    cancels_stop(t, false);
}

static void pg_target_close(dbs__target *t)
{
    cancels_stop(t, true);
}

/* From another thread, while c's user waits in a statement: the cancel
 * request, as the statement bound sends it (the cancel key is fixed at
 * connect, and PQcancel touches nothing else of c). */
static void pg_interrupt(void *vc)
{
    pg_conn *c = vc;
    if (c->pg)
        start_cancel(c);
}

static int timed_out(pg_conn *c, dbs_error *err, const char *what,
                     bool commit)
{
    start_cancel(c);
    c->broken = true;
    if (commit)
        return dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                        "postgresql: no answer to COMMIT within %d ms: the "
                        "transaction may or may not have been committed; "
                        "the connection is discarded",
                        c->bound_ms);
    return dbs__err(err, DBS_ESTMT_TIMEOUT,
                    "postgresql: no answer to %s within %d ms "
                    "(statement_timeout_ms, or "
                    "dbs_session_set_statement_timeout): cancel requested, "
                    "connection discarded",
                    what, c->bound_ms);
}

/* ---- non-blocking I/O ---- */

enum { IO_OK, IO_LOST, IO_TIMEOUT };

static int64_t deadline_of(int ms)
{
    return ms > 0 ? dbs__now_ns() + (int64_t)ms * 1000000 : INT64_MAX;
}

/* Waits until fd is ready for events or the deadline passes. On a pool's
 * own thread, IO_LOST as soon as the pool shuts down (dbs__stopping): the
 * caller discards the connection, and no cancel request is sent. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    const bool stoppable = dbs__thread_stop != NULL;
    for (;;) {
        if (stoppable && dbs__stopping())
            return IO_LOST;
        int64_t now = dbs__now_ns();
        if (now >= deadline)
            return IO_TIMEOUT;
        int64_t left = (deadline - now + 999999) / 1000000;
        int ms = deadline == INT64_MAX || left > INT_MAX ? -1 : (int)left;
        if (stoppable && (ms < 0 || ms > DBS__STOP_SLICE_MS))
            ms = DBS__STOP_SLICE_MS;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return IO_LOST;
        if (n > 0)
            return IO_OK;
    }
}

/* Writes out what libpq has buffered. */
static int flush_all(pg_conn *c, int64_t deadline)
{
    for (;;) {
        int f = PQflush(c->pg);
        if (f < 0)
            return IO_LOST;
        if (f == 0)
            return IO_OK;
        /* Also readable: the server may be blocked writing to us. */
        int w = wait_fd(PQsocket(c->pg), POLLOUT | POLLIN, deadline);
        if (w != IO_OK)
            return w;
        if (!PQconsumeInput(c->pg))
            return IO_LOST;
    }
}

/* The next result without blocking past the deadline (*r NULL: the end of
 * the current command's results). */
static int next_result(pg_conn *c, int64_t deadline, PGresult **r)
{
    *r = NULL;
    for (;;) {
        int f = PQflush(c->pg);
        if (f < 0)
            return IO_LOST;
        if (!PQisBusy(c->pg))
            break;
        int w = wait_fd(PQsocket(c->pg), (short)(POLLIN | (f ? POLLOUT : 0)),
                        deadline);
        if (w != IO_OK)
            return w;
        if (!PQconsumeInput(c->pg))
            return IO_LOST;
    }
    *r = PQgetResult(c->pg);
    return IO_OK;
}

static void flight_clear(pg_flight *f)
{
    for (int i = 0; i < f->n; i++) {
        PQclear(f->res[i]);
        f->res[i] = NULL;
    }
    f->n = 0;
}

static void flight_init(pg_flight *f)
{
    f->n = f->done = f->owed_to = 0;
    f->reset_from = f->reset_to = f->reconcile = -1;
    f->reset_named = false;
    f->reset_temp = false;
    f->reset_full = false;
}

/* Queues one command without parameters. */
static void q_cmd(pg_conn *c, pg_flight *f, bool *ok, const char *sql)
{
    if (!*ok || f->n >= PG_MAXQ) {
        *ok = false;
        return;
    }
    *ok = PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
    f->res[f->n] = NULL;
    f->kind[f->n++] = Q_CMD;
}

static void q_sync(pg_conn *c, pg_flight *f, bool *ok)
{
    if (!*ok || f->n >= PG_MAXQ) {
        *ok = false;
        return;
    }
    *ok = PQpipelineSync(c->pg) == 1;
    f->res[f->n] = NULL;
    f->kind[f->n++] = Q_SYNC;
}

/* libpq writes out what is queued at every Sync. A flight with more than
 * one Sync would then go out in several writes, and the server could answer
 * the first part before the rest arrives: corked, it leaves in one. */
static void cork(pg_conn *c, bool on)
{
    if (!c->tcp || c->corked == on)
        return;
    int v = on;
    (void)setsockopt(PQsocket(c->pg), IPPROTO_TCP, TCP_CORK, &v, sizeof v);
    c->corked = on;
}

/* A Sync with more of the flight to follow. */
static void q_sync_more(pg_conn *c, pg_flight *f, bool *ok)
{
    cork(c, true);
    q_sync(c, f, ok);
}

/* Reads every result of f: res[i] is the first result of command i (the
 * caller clears them with flight_clear). IO_LOST and IO_TIMEOUT leave the
 * connection broken; the results read so far are kept, so the caller can
 * report the server's own reason (57P01 ...). */
static int collect(pg_conn *c, pg_flight *f, int64_t deadline)
{
    f->done = 0;
    for (int i = 0; i < f->n; i++) {
        PGresult *r;
        int rc;
        if (f->kind[i] == Q_SYNC) {
            rc = next_result(c, deadline, &r);
            if (rc == IO_OK && PQresultStatus(r) != PGRES_PIPELINE_SYNC)
                rc = IO_LOST; /* out of step with the server */
            PQclear(r);
        } else {
            while ((rc = next_result(c, deadline, &r)) == IO_OK && r) {
                if (!f->res[i])
                    f->res[i] = r;
                else
                    PQclear(r);
                if (PQstatus(c->pg) != CONNECTION_OK)
                    break;
            }
        }
        if (rc == IO_OK && PQstatus(c->pg) != CONNECTION_OK)
            rc = IO_LOST;
        if (rc != IO_OK) {
            c->broken = true;
            return rc;
        }
        f->done = i + 1;
    }
    return IO_OK;
}

/* ---- the statement cache ---- */

/* Forgets every cached statement. Statements the server still has become
 * foreign to the cache: the next reset's reconcile query deallocates them,
 * and names are never reused, so none can be mistaken for another. */
static void cache_clear(pg_conn *c)
{
    for (int i = 0; i < c->cache_n; i++) {
        free(c->cache[i].sql);
        c->cache[i].sql = NULL;
    }
}

static int pg_set_read_only(void *vc, int on, dbs_error *err)
{
    (void)err;
    ((pg_conn *)vc)->read_only = on != 0;
    return DBS_OK;
}

/* Checks o and writes the BEGIN it makes (READ ONLY also when ro), for
 * the blocking path (pg_tx_options) and a loop's units (a_begin_sql) alike. */
static int tx_begin_text(const dbs_tx_options *o, bool ro, char *out, size_t n, dbs_error *err)
{
    if (o && o->immediate)
        return dbs__err(err, DBS_ECONFIG,
                        "postgresql: the immediate transaction option is SQLite's (BEGIN "
                        "IMMEDIATE); PostgreSQL locks rows as they are written: leave it 0");
    if (o && o->deferrable && (o->isolation != DBS_ISOLATION_SERIALIZABLE || !o->read_only))
        return dbs__err(err, DBS_ECONFIG,
                        "postgresql: DEFERRABLE has an effect only on a SERIALIZABLE READ "
                        "ONLY transaction: set isolation = DBS_ISOLATION_SERIALIZABLE and "
                        "read_only = 1, or deferrable = 0");
    if (o && (o->isolation < 0 || o->isolation > DBS_ISOLATION_SERIALIZABLE))
        return dbs__err(err, DBS_EMISUSE, "postgresql: unknown isolation level %d",
                        (int)o->isolation);
    static const char *const level[] = {"", " ISOLATION LEVEL READ COMMITTED",
                                        " ISOLATION LEVEL REPEATABLE READ",
                                        " ISOLATION LEVEL SERIALIZABLE"};
    snprintf(out, n, "BEGIN%s%s%s", o ? level[o->isolation] : "", ro ? " READ ONLY" : "",
             o && o->deferrable ? " DEFERRABLE" : "");
    return DBS_OK;
}

static int pg_tx_options_check(const dbs_tx_options *o, bool ro, dbs_error *err)
{
    char sql[80];
    return tx_begin_text(o, ro || (o && o->read_only), sql, sizeof sql, err);
}

/* Transaction options become the BEGIN itself: BEGIN ISOLATION LEVEL ...
 * READ ONLY DEFERRABLE, sent in the first statement's flight. */
static int pg_tx_options(void *vc, const dbs_tx_options *o, dbs_error *err)
{
    pg_conn *c = vc;
    char sql[sizeof c->begin_sql];
    int rc = tx_begin_text(o, o && o->read_only, sql, sizeof sql, err);
    if (rc != DBS_OK)
        return rc;
    c->opt_ro = o && o->read_only;
    c->begin_sql[0] = '\0';
    if (o)
        memcpy(c->begin_sql, sql, sizeof sql);
    return DBS_OK;
}

/* The BEGIN of dbscope's next transaction on c. */
static const char *begin_sql(const pg_conn *c)
{
    if (!c->begin_sql[0])
        return c->read_only ? "BEGIN READ ONLY" : "BEGIN";
    if (c->read_only && !c->opt_ro)
        return NULL; /* the caller appends READ ONLY */
    return c->begin_sql;
}

/* Finds or assigns the cached statement for sql: *fresh = needs a Parse.
 * The SQL copy belongs to the cache entry and is freed by cache_clear or on
 * eviction; GCC 12's analyzer loses it through the entry pointer returned
 * to run() and reports a leak that is not there, hence the pragma. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
#endif
static pg_stmt *cache_get(pg_conn *c, const char *sql, const char *sig, bool *fresh,
                          char *evicted, size_t evicted_n)
{
    evicted[0] = '\0';
    if (c->cache_n == 0)
        return NULL;
    /* An entry is its SQL and its parameters' types (after the SQL's NUL):
     * the Parse fixed them, and values of other types bound to it were
     * read as those ('abc' for a bigint refused, a double's text for an
     * integer refused). */
    size_t sl = strlen(sql), gl = strlen(sig);
    pg_stmt *victim = &c->cache[0];
    for (int i = 0; i < c->cache_n; i++) {
        pg_stmt *e = &c->cache[i];
        if (e->sql && !strcmp(e->sql, sql) && !strcmp(e->sql + sl + 1, sig)) {
            e->last_use = ++c->tick;
            *fresh = false;
            return e;
        }
        if (!e->sql || (victim->sql && e->last_use < victim->last_use))
            victim = e;
    }
    char *copy = malloc(sl + gl + 2);
    if (!copy)
        return NULL; /* fall back to an unnamed statement */
    memcpy(copy, sql, sl + 1);
    memcpy(copy + sl + 1, sig, gl + 1);
    /* The evicted statement is deallocated in the same flight; names are
     * never reused, and one whose DEALLOCATE was skipped by an aborted
     * pipeline is found by the next reset's reconcile query. */
    if (victim->sql)
        snprintf(evicted, evicted_n, "%s", victim->name);
    free(victim->sql);
    victim->sql = copy;
    snprintf(victim->name, sizeof victim->name, "dbs_%llu",
             (unsigned long long)++c->next_name);
    victim->last_use = ++c->tick;
    victim->born = c->a_epoch;
    victim->parsing = 0;
    *fresh = true;
    return victim;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* Which of the reset's named statements name is (see pg_reset_sql), or -1. */
static int reset_index(const char *name)
{
    if (strncmp(name, "dbs_r", 5) != 0 || !isdigit((unsigned char)name[5]) ||
        name[6] != '\0')
        return -1;
    int i = name[5] - '0';
    return i < PG_NRESET ? i : -1;
}

/* Whether row i of the reconcile query is a statement SQL made (PREPARE,
 * in a function or DO block too). dbscope makes its own with protocol
 * Parse only, so such a statement is never dbscope's, whatever its name:
 * a session that deallocated one of dbscope's names and prepared its own
 * under it. Unknown (NULL) counts as SQL's: it is then deallocated and
 * prepared again, which costs a Parse and leaks nothing. */
static bool by_sql(const PGresult *r, int i)
{
    return PQgetisnull(r, i, 3) || strcmp(PQgetvalue(r, i, 3), "f") != 0;
}

/* Applies the reconcile query's rows: statements the cache does not know
 * are owed a DEALLOCATE at the front of the next flight (before anything
 * of the next user's); cached ones the server no longer has leave the
 * cache. A statement is dbscope's only when the server says Parse made it
 * (from_sql false) and its name is one of dbscope's; a name alone proves
 * nothing, since any session may DEALLOCATE a name and PREPARE its own
 * SQL under it for the next user's Bind to run. One under dbscope's name
 * that SQL made is owed a DEALLOCATE like any user's, and the cache entry
 * or named statement (dbs_m) of that name is prepared again.
 * Returns whether the reset's named statements are all on the server,
 * Parse-made, with dbscope's text; when not, every statement under their
 * names is owed a DEALLOCATE and the next reset parses them again. Also
 * notes the backend's temporary schema (temp_schema). */
static bool reconcile(pg_conn *c, const PGresult *r)
{
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) < 4 ||
        PQntuples(r) < 1) {
        c->reset_stmts = false;
        c->temp_schema = true;
        return false;
    }
    /* Once a backend has a temporary schema it keeps it. */
    if (PQgetisnull(r, 0, 2) || strcmp(PQgetvalue(r, 0, 2), "0") != 0)
        c->temp_schema = true;
    for (int i = 0; i < c->cache_n; i++)
        c->cache[i].seen = false;
    bool mine[PG_NRESET] = {false};
    int n_mine = 0;
    for (int i = 0; c->reset_stmts && i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0))
            continue; /* no prepared statement at all */
        int k = reset_index(PQgetvalue(r, i, 0));
        if (k >= 0 && !mine[k] && !by_sql(r, i) && !PQgetisnull(r, i, 1) &&
            !strcmp(PQgetvalue(r, i, 1), pg_reset_sql[k])) {
            mine[k] = true;
            n_mine++;
        }
    }
    bool intact = n_mine == PG_NRESET;
    if (!intact)
        c->reset_stmts = false;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0))
            continue;
        const char *name = PQgetvalue(r, i, 0);
        bool sql = by_sql(r, i);
        /* the marker's (see a_prepare) */
        bool named = !strcmp(name, "dbs_m");
        bool ours = !sql && ((intact && reset_index(name) >= 0) || named);
        if (!strncmp(name, "dbs_", 4))
            for (int k = 0; k < c->cache_n && !ours; k++)
                if (c->cache[k].sql && !strcmp(c->cache[k].name, name)) {
                    if (!sql) {
                        ours = c->cache[k].seen = true;
                    } else {
                        /* a session's statement under this entry's name:
                         * the entry goes, its SQL is parsed again under a
                         * new name (names are never reused) */
                        free(c->cache[k].sql);
                        c->cache[k].sql = NULL;
                    }
                }
        if (ours)
            continue;
        if (named)
            c->a_named = false; /* parsed again after the DEALLOCATE */
        if (c->n_foreign < PG_MAXFOREIGN && strlen(name) < 64) {
            /* A quoted identifier: the user may name a statement anything. */
            char *w = c->foreign[c->n_foreign++];
            size_t o = 0;
            memcpy(w + o, "DEALLOCATE \"", 12);
            o += 12;
            for (const char *p = name; *p; p++) {
                if (*p == '"')
                    w[o++] = '"';
                w[o++] = *p;
            }
            w[o++] = '"';
            w[o] = '\0';
        } else {
            c->dealloc_all = true;
        }
    }
    for (int i = 0; i < c->cache_n; i++)
        if (c->cache[i].sql && !c->cache[i].seen && c->cache[i].born < c->reconcile_min) {
            free(c->cache[i].sql);
            c->cache[i].sql = NULL;
        }
    return intact;
}

/* ---- flights ---- */

/* The seed the reset gives setseed(), in [-1, 1): from the kernel's
 * random source, since a session that could tell it (dbs__random is not
 * for secrets) could tell the next session's random() too. */
static void reset_seed(char *out, size_t n)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x)
        x ^= dbs__random() ^ (uint64_t)dbs__now_ns();
    dbs__fmt_double(out, n, (double)(x >> 11) / 4503599627370496.0 - 1.0);
}

/* Queues reset item i (pg_reset_sql[i]): how = 0 its text (Parse, Bind,
 * Execute of an unnamed statement), 1 the Parse of its named statement,
 * 2 Bind/Execute of its named statement. */
static void q_reset_item(pg_conn *c, pg_flight *f, bool *ok, int i, int how)
{
    if (!*ok || f->n >= PG_MAXQ) {
        *ok = false;
        return;
    }
    char name[24], seed[32]; /* room for any int: what -O0 warns of */
    snprintf(name, sizeof name, "dbs_r%d", i);
    /* the reconcile query takes the seed of random() */
    int np = i == PG_NRESET - 1 && how != 1;
    const char *pv[1] = {seed};
    if (np)
        reset_seed(seed, sizeof seed);
    if (how == 0)
        *ok = PQsendQueryParams(c->pg,
                                i == PG_NRESET - 1 ? pg_reconcile_text
                                                   : pg_reset_sql[i],
                                np, NULL, pv, NULL, NULL, 0) == 1;
    else if (how == 1)
        *ok = PQsendPrepare(c->pg, name, pg_reset_sql[i], 0, NULL) == 1;
    else
        *ok = PQsendQueryPrepared(c->pg, name, np, pv, NULL, NULL, 0) == 1;
    f->res[f->n] = NULL;
    f->rcmd[f->n] = (signed char)i;
    f->kind[f->n++] = Q_CMD;
}

/* Queues the reset commands and the reconcile query, then a Sync: named
 * (parsed first when the connection has not got them yet) or, to run it
 * again after the named statements turned out not to be dbscope's or
 * that the backend made its first temporary schema, from the text with
 * every command. Named: DISCARD TEMP and DISCARD PLANS only on a backend
 * with a temporary schema (see pg_reset_sql); their named statements are
 * parsed all the same, so that the reconcile query finds the set whole. */
static void q_reset_body(pg_conn *c, pg_flight *f, bool *ok, bool named)
{
    bool parse = named && !c->reset_stmts;
    f->reset_from = f->n;
    f->reset_named = named;
    f->reset_full = !named;
    f->reset_temp = c->temp_schema || f->reset_full;
    for (int i = 0; i < PG_NRESET; i++) {
        if (parse)
            q_reset_item(c, f, ok, i, 1);
        if ((i == PG_R_TEMP || i == PG_R_PLANS) && !f->reset_temp)
            continue;
        q_reset_item(c, f, ok, i, named ? 2 : 0);
    }
    f->reset_to = f->n;
    f->reconcile = *ok ? f->n - 1 : -1;
    if (named)
        c->reset_stmts = true; /* unless reset_done finds otherwise */
}

static void q_reset(pg_conn *c, pg_flight *f, bool *ok, bool named)
{
    q_reset_body(c, f, ok, named);
    q_sync(c, f, ok);
}

static bool names_stmt(const PGresult *r, const char *name);

/* After a reset flight was read: any failed reset command means the state
 * may not be clean, so the connection goes; else the cache is reconciled.
 * *again: the server skipped the reset (an error before it in its
 * segment: a COMMIT or ROLLBACK that failed), or it ran by name and a
 * named statement was missing (the
 * server ran none of the reset after it) or was not dbscope's, or the
 * server reports what the named reset left out (a temporary schema it ran
 * without DISCARD TEMP and DISCARD PLANS): it must run again in full from
 * the text (reset_again).
 * Notifications a LISTEN left queued in
 * libpq are dropped. */
static int reset_done(pg_conn *c, pg_flight *f, bool *again, dbs_error *err)
{
    *again = false;
    /* Skipped by the server from its first command on, after an error
     * before it in its segment (a COMMIT that failed): none of it ran. */
    if (f->reset_from >= 0 && f->reset_from < f->reset_to &&
        f->res[f->reset_from] &&
        PQresultStatus(f->res[f->reset_from]) == PGRES_PIPELINE_ABORTED) {
        *again = true;
        return DBS_OK;
    }
    for (int i = f->reset_from; i >= 0 && i < f->reset_to; i++)
        if (failed(f->res[i]) || !f->res[i]) {
            const char *st =
                f->res[i] ? PQresultErrorField(f->res[i], PG_DIAG_SQLSTATE)
                          : NULL;
            char name[16];
            snprintf(name, sizeof name, "dbs_r%d", f->rcmd[i]);
            /* 08P01: a statement of the session's under the name of
             * the reconcile query, which takes no seed */
            if (f->reset_named && st &&
                (!strcmp(st, "26000") || !strcmp(st, "42P05") ||
                 !strcmp(st, "08P01")) &&
                names_stmt(f->res[i], name)) {
                c->reset_stmts = false;
                *again = true;
                return DBS_OK;
            }
            c->broken = true;
            if (f->res[i])
                result_err(c, f->res[i], err);
            return dbs__err(err, DBS_ECONNECT,
                            "postgresql: the connection's reset failed "
                            "(%s): the connection is discarded",
                            pg_reset_sql[f->rcmd[i]]);
        }
    if (f->reconcile >= 0 && !reconcile(c, f->res[f->reconcile]) &&
        f->reset_named)
        *again = true;
    /* The session made the backend's first temporary object: run the
     * reset again, in full. */
    if (!f->reset_full && ((c->temp_schema && !f->reset_temp) || f->reconcile < 0))
        *again = true;
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL)
        PQfreemem(n);
    return DBS_OK;
}

/* Runs the reset again from its text, in a flight of its own, after a
 * named reset whose statements were not all dbscope's (reset_done): only
 * after a session removed or replaced them (DEALLOCATE by the user, in a
 * function or not; DISCARD ALL through dbs_session_native), or made the
 * backend's first temporary schema. From the text it runs every command. */
static int reset_again(pg_conn *c, int64_t deadline, dbs_error *err)
{
    /* this flight's reconcile query lists the foreign statements anew */
    c->n_foreign = 0;
    c->dealloc_all = false;
    pg_flight f;
    flight_init(&f);
    bool ok = true;
    q_reset(c, &f, &ok, false);
    int rc;
    bool again;
    int io = ok ? collect(c, &f, deadline) : IO_LOST;
    if (io == IO_TIMEOUT)
        rc = timed_out(c, err, "the reset", false);
    else if (io == IO_LOST)
        rc = conn_lost(c, err, "the reset");
    else
        rc = reset_done(c, &f, &again, err);
    flight_clear(&f);
    return rc;
}

/* Reads the posted reset's answer (long arrived, as a rule). Its failure
 * is the release's, whose caller was answered long ago: kept for
 * pg_reset_failure too, so that it counts as the closed session's. */
static int drain_posted(pg_conn *c, int64_t deadline, dbs_error *err)
{
    pg_flight *f = &c->posted;
    if (f->n == 0)
        return DBS_OK;
    dbs_error local;
    if (!err)
        err = &local;
    int io = collect(c, f, deadline);
    int rc = DBS_OK;
    bool again = false;
    if (io == IO_TIMEOUT)
        rc = timed_out(c, err, "the reset", false);
    else if (io == IO_LOST)
        rc = conn_lost(c, err, "the reset");
    else
        rc = reset_done(c, f, &again, err);
    flight_clear(f);
    flight_init(f);
    if (rc == DBS_OK && again)
        rc = reset_again(c, deadline, err);
    if (rc == DBS_OK &&
        atomic_load_explicit(&dbs__fault.fail_posted_resets, memory_order_relaxed) > 0 &&
        atomic_fetch_sub(&dbs__fault.fail_posted_resets, 1) > 0) {
        c->broken = true;
        rc = dbs__err(err, DBS_ECONNECT, "postgresql: the connection's reset failed "
                                         "(injected fault): the connection is discarded");
    }
    if (rc != DBS_OK)
        c->reset_err = *err;
    return rc;
}

/* Starts a flight: reads any posted answer, makes sure the connection is
 * in pipeline mode, and queues the DEALLOCATEs owed from the last reset
 * with their own Sync (so one that fails aborts nothing else). */
static int flight_open(pg_conn *c, pg_flight *f, int64_t *deadline, bool *ok,
                       dbs_error *err)
{
    flight_init(f);
    *ok = true;
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
    c->bound_ms = c->timeout_ms;
    *deadline = deadline_of(c->timeout_ms);
    int rc = drain_posted(c, *deadline, err);
    if (rc != DBS_OK)
        return rc;
    if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF) {
        /* After native(): the caller may have left anything behind. */
        if (PQsetnonblocking(c->pg, 1) != 0 || PQisBusy(c->pg) ||
            !PQenterPipelineMode(c->pg))
            return conn_lost(c, err, "pipeline start");
    }
    if (c->dealloc_all) {
        q_cmd(c, f, ok, "DEALLOCATE ALL");
        q_sync_more(c, f, ok);
        cache_clear(c);
        c->reset_stmts = false;
        c->a_named = false;
    } else if (c->n_foreign > 0) {
        for (int i = 0; i < c->n_foreign; i++)
            q_cmd(c, f, ok, c->foreign[i]);
        q_sync_more(c, f, ok);
    }
    c->dealloc_all = false;
    c->n_foreign = 0;
    f->owed_to = f->n;
    return DBS_OK;
}

/* Sends the queued flight and reads all its results. */
static int flight_wait(pg_conn *c, pg_flight *f, int64_t deadline, bool ok,
                       const char *what, bool commit, dbs_error *err)
{
    cork(c, false);
    if (!ok) {
        c->broken = true;
        return commit ? dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                                 "postgresql: connection lost sending "
                                 "COMMIT: the transaction may or may not "
                                 "have been committed")
                      : conn_lost(c, err, what);
    }
    int io = collect(c, f, deadline);
    if (io == IO_OK)
        return DBS_OK;
    if (io == IO_TIMEOUT)
        return timed_out(c, err, what, commit);
    if (commit)
        return dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                        "postgresql: connection lost during COMMIT: the "
                        "transaction may or may not have been committed");
    /* Keep the server's reason (57P01 ...) when it sent one. */
    for (int i = 0; i < f->n; i++)
        if (failed(f->res[i]) &&
            result_err(c, f->res[i], err) == DBS_ECONNECT)
            return DBS_ECONNECT;
    return conn_lost(c, err, what);
}

/* ---- connect ---- */

static void *connect_fail(pg_conn *c, dbs_error *err, int code,
                          const char *msg)
{
    dbs__err(err, code, "%s", msg);
    if (c->pg)
    PQfinish(c->pg);
    free(c);
    return NULL;
}

/* libpq's message for a failed connect, made one line per reason: each
 * line once (libpq repeats a refusal when it retries without TLS, and for
 * each address of a host), without the verbose LOCATION lines. st gets the
 * SQLSTATE of the last attempt's refusal ("FATAL:  28P01: ..."), or "". */
static void connect_message(const char *raw, char *out, size_t cap, char st[6])
{
    out[0] = '\0';
    st[0] = '\0';
    size_t w = 0;
    const char *line = raw;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        bool keep = n > 0 && strncmp(line, "LOCATION:", 9) != 0;
        /* Each attempt starts with "connection to server ...": a reason
         * from an earlier attempt is not the last one's. */
        if (!strncmp(line, "connection to server", 20))
            st[0] = '\0';
        for (size_t i = 0; keep && i + 9 <= n; i++) {
            /* "SEVERITY:  XXXXX: " */
            if (line[i] == ':' && line[i + 1] == ' ' && line[i + 2] == ' ' &&
                line[i + 8] == ':') {
                bool ok = true;
                for (int k = 3; k < 8; k++)
                    ok = ok && (isdigit((unsigned char)line[i + k]) ||
                                isupper((unsigned char)line[i + k]));
                if (ok) {
                    memcpy(st, line + i + 3, 5);
                    st[5] = '\0';
                    break;
                }
            }
        }
        if (keep && w > 0) {
            /* already said? */
            for (const char *p = out; *p;) {
                const char *q = strchr(p, '\n');
                size_t pn = q ? (size_t)(q - p) : strlen(p);
                if (pn == n && !strncmp(p, line, n)) {
                    keep = false;
                    break;
                }
                if (!q)
                    break;
                p = q + 1;
            }
        }
        if (keep && w + n + 2 < cap) {
            if (w > 0)
                out[w++] = '\n';
            memcpy(out + w, line, n);
            w += n;
            out[w] = '\0';
        }
        line = end ? end + 1 : NULL;
    }
}

/* An integer option as libpq reads it (parse_int_param in fe-connect.c):
 * a decimal int, optionally signed, blanks allowed around it, nothing
 * else; "" is not one. libpq refuses the connect for anything else. */
static bool pg_int_param(const char *v, int *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (end == v || errno != 0 || n < INT_MIN || n > INT_MAX)
        return false;
    while (*end && isspace((unsigned char)*end))
        end++;
    if (*end)
        return false;
    *out = (int)n;
    return true;
}

/* libpq's connect_timeout as it reads it: seconds, 0 or less = none, and
 * 1 means 2. Returns -1 when the string does not set it, or sets it to a
 * value libpq would refuse (pg_target_open refused the pool for that, so
 * here it is only a guard: the pool's own bound then applies). libpq
 * itself reads connect_timeout only in its blocking connect, not in
 * PQconnectPoll, so this bound is the only one. */
static int url_connect_timeout_ms(const char *conninfo, char *password,
                                  size_t password_n)
{
    int ms = -1;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts)
        return -1;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        int s;
        if (!strcmp(o->keyword, "password"))
            snprintf(password, password_n, "%s", o->val);
        else if (!strcmp(o->keyword, "connect_timeout") && pg_int_param(o->val, &s))
            ms = s <= 0 ? 0 : s < 2 ? 2000 : s > INT_MAX / 1000 ? INT_MAX : s * 1000;
    }
    PQconninfoFree(opts);
    return ms;
}

/* Whether v is one of the NULL-terminated words (libpq compares with
 * strcmp: case matters). */
static bool one_of(const char *v, const char *const *words)
{
    for (; *words; words++)
        if (!strcmp(v, *words))
            return true;
    return false;
}

/* Checks, at dbs_pool_open, the option values of the connection string
 * that libpq would refuse at every connect: without this each refusal
 * would come at connect time as DBS_ECONNECT, a transient failure that the
 * pool retries and the breaker counts, and an unparsable connect_timeout
 * would leave connects unbounded. The checks are libpq's own (fe-connect.c:
 * connectOptions2, parse_int_param, PQconnectPoll's port check) and, for
 * the keep-alive timers libpq passes to setsockopt, Linux's ranges (the
 * options read only at a TCP connect, when some host can be one); no
 * more: done here, before any connect, so no network failure can be
 * taken for one. A port out of range only makes libpq skip that host, but
 * no server is ever reached through it: a mistake in the URL all the same.
 * Values a service file or the environment supplies are libpq's to check
 * at connect time. */
/* Whether name can name a setting (what set_config takes): parts of
 * letters, digits, _ and $ joined by dots, each starting with a letter or
 * _. The server decides whether the setting exists; a name no setting can
 * have would fail every transaction's first statement, so it is refused
 * at open instead. */
static bool setting_name_ok(const char *name)
{
    bool start = true;
    for (const unsigned char *q = (const unsigned char *)name;; q++) {
        if (*q == '.' || *q == '\0') {
            if (start)
                return false; /* an empty part */
            if (!*q)
                return true;
            start = true;
        } else if (start ? !(isalpha(*q) || *q == '_' || *q >= 0x80)
                         : !(isalnum(*q) || *q == '_' || *q == '$' || *q >= 0x80)) {
            return false;
        } else {
            start = false;
        }
    }
}

/* Whether some host of the connection string may be reached over TCP,
 * the only connect where libpq reads the keep-alive options and
 * tcp_user_timeout: a hostaddr, or a host that is not a socket directory
 * ('/') or an abstract socket ('@'). What the string leaves out is libpq's
 * default: PGHOST, PGHOSTADDR or the service PGSERVICE names, else the
 * default socket directory (dbscope builds on POSIX systems only). A
 * service named in the string would supply them instead, and is not read
 * here: only the string's own host and hostaddr count then (a refusal
 * must be sure). */
static bool pg_tcp_possible(const PQconninfoOption *opts)
{
    const char *host = NULL, *hostaddr = NULL;
    bool service = false;
    for (const PQconninfoOption *o = opts; o->keyword; o++) {
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
        else if (!strcmp(o->keyword, "service"))
            service = o->val && *o->val;
    }
    /* libpq fills only the options the string does not give (an empty
     * value is given) */
    PQconninfoOption *defs = (!host || !hostaddr) && !service ? PQconndefaults() : NULL;
    for (PQconninfoOption *o = defs; o && o->keyword; o++) {
        if (!strcmp(o->keyword, "host") && !host)
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr") && !hostaddr)
            hostaddr = o->val;
    }
    bool tcp = false;
    /* an empty entry of hostaddr leaves that host to host's entry */
    for (const char *p = hostaddr; p && !tcp;) {
        size_t len = strcspn(p, ",");
        tcp = len > 0;
        if (!p[len])
            break;
        p += len + 1;
    }
    /* an empty entry of host is the default socket directory */
    for (const char *p = host; p && !tcp;) {
        size_t len = strcspn(p, ",");
        tcp = len > 0 && p[0] != '/' && p[0] != '@';
        if (!p[len])
            break;
        p += len + 1;
    }
    PQconninfoFree(defs);
    return tcp;
}

static int pg_target_open(dbs__target *t, dbs_error *err)
{
    static const char *const sslmodes[] = {"disable", "allow", "prefer", "require",
                                           "verify-ca", "verify-full", NULL};
    /* libpq 14's set; dbscope needs libpq 14 or newer (pipeline mode) */
    static const char *const attrs[] = {"any", "read-write", "read-only", "primary",
                                        "standby", "prefer-standby", NULL};
    PQconninfoOption *opts = PQconninfoParse(t->conninfo, NULL);
    if (!opts)
        return DBS_OK; /* config.c parsed it with libpq; out of memory here */
    int rc = DBS_OK, n;
    int tcp = -1; /* pg_tcp_possible, read once when an option needs it */
    for (PQconninfoOption *o = opts; o->keyword && rc == DBS_OK; o++) {
        const char *v = o->val;
        if (!v)
            continue;
        if (!strcmp(o->keyword, "connect_timeout") && !pg_int_param(v, &n))
            rc = dbs__err(err, DBS_ECONFIG,
                          "postgresql: connect_timeout \"%.40s\" in the URL is not a whole "
                          "number of seconds (libpq refuses it; 0: no bound)", v);
        /* read as connect_timeout is, but only at a TCP connect, after the
         * socket is made: each would fail every TCP connect as an outage */
        else if ((!strcmp(o->keyword, "keepalives") || !strcmp(o->keyword, "keepalives_idle") ||
                  !strcmp(o->keyword, "keepalives_interval") ||
                  !strcmp(o->keyword, "keepalives_count") ||
                  !strcmp(o->keyword, "tcp_user_timeout")) &&
                 !pg_int_param(v, &n) && (tcp < 0 ? (tcp = pg_tcp_possible(opts)) : tcp))
            rc = dbs__err(err, DBS_ECONFIG,
                          "postgresql: %s \"%.40s\" in the URL is not a whole number "
                          "(libpq refuses it at every connect)", o->keyword, v);
        else if (!strcmp(o->keyword, "sslmode") && !one_of(v, sslmodes))
            rc = dbs__err(err, DBS_ECONFIG,
                          "postgresql: sslmode \"%.40s\" in the URL is not one of disable, "
                          "allow, prefer, require, verify-ca, verify-full", v);
        else if (!strcmp(o->keyword, "target_session_attrs") && !one_of(v, attrs))
            rc = dbs__err(err, DBS_ECONFIG,
                          "postgresql: target_session_attrs \"%.40s\" in the URL is not one "
                          "of any, read-write, read-only, primary, standby, prefer-standby", v);
        else if (!strcmp(o->keyword, "port")) {
            /* a list, one per host; an empty entry is the default port */
            for (const char *p = v; rc == DBS_OK;) {
                size_t len = strcspn(p, ",");
                char one[64];
                if (len > 0) {
                    snprintf(one, sizeof one, "%.*s", (int)(len < 63 ? len : 63), p);
                    if (len > 63 || !pg_int_param(one, &n) || n < 1 || n > 65535)
                        rc = dbs__err(err, DBS_ECONFIG,
                                      "postgresql: port \"%.*s\" in the URL is not a port "
                                      "number (1 to 65535)", (int)(len < 40 ? len : 40), p);
                }
                if (!p[len])
                    break;
                p += len + 1;
            }
        }
    }
#ifdef __linux__
    /* libpq hands the keep-alive values to setsockopt as they are (a
     * negative one as 0), and Linux refuses those out of its range: every
     * TCP connect would fail. With keepalives off none is set, nor on a
     * Unix socket. */
    static const struct { const char *key; int hi; } ka[] = {
        {"keepalives_idle", 32767}, {"keepalives_interval", 32767}, {"keepalives_count", 127}};
    bool ka_on = true;
    for (PQconninfoOption *o = opts; o->keyword && rc == DBS_OK; o++)
        if (o->val && !strcmp(o->keyword, "keepalives") && pg_int_param(o->val, &n))
            ka_on = n != 0;
    for (PQconninfoOption *o = opts; ka_on && o->keyword && rc == DBS_OK; o++)
        for (size_t i = 0; o->val && i < sizeof ka / sizeof ka[0] && rc == DBS_OK; i++)
            if (!strcmp(o->keyword, ka[i].key) && pg_int_param(o->val, &n) &&
                (n < 1 || n > ka[i].hi) &&
                (tcp < 0 ? (tcp = pg_tcp_possible(opts)) : tcp))
                rc = dbs__err(err, DBS_ECONFIG,
                              "postgresql: %s %d in the URL is not from 1 to %d, which Linux "
                              "refuses at every TCP connect (or set keepalives=0)",
                              ka[i].key, n, ka[i].hi);
#endif
    PQconninfoFree(opts);
    for (int i = 0; i < 3 && rc == DBS_OK; i++)
        if (t->ctx_setting[i] && !setting_name_ok(t->ctx_setting[i]))
            rc = dbs__err(err, DBS_ECONFIG,
                          "postgresql: context setting name \"%.60s\" is not a setting name "
                          "(letters, digits, _ and $, in parts joined by dots, each starting "
                          "with a letter or _; e.g. app.tenant_id)",
                          t->ctx_setting[i]);
    if (rc == DBS_OK) {
        pg_cancels *q = calloc(1, sizeof *q);
        if (!q)
            return dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        q->refs = 1;
        pthread_once(&cancels_once, cancels_register);
        pthread_mutex_lock(&cancels_mu);
        q->next_all = cancels_all;
        cancels_all = q;
        pthread_mutex_unlock(&cancels_mu);
        t->shared = q;
    }
    return rc;
}

/* The number of items of a comma-separated libpq list (0: empty). */
static int count_list(const char *s)
{
    if (!s || !*s)
        return 0;
    int n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

/* Splits a comma-separated libpq list in place: up to max items. */
static int split_list(char *s, char **items, int max)
{
    int n = 0;
    if (!s || !*s)
        return 0;
    for (char *p = s; n < max;) {
        items[n++] = p;
        char *q = strchr(p, ',');
        if (!q)
            break;
        *q = '\0';
        p = q + 1;
    }
    return n;
}

#define PG_ADDRS_PER_HOST 4

/* Name lookups bounded by the connect's deadline (libpq's own are not):
 * every host name of the connection string is resolved here and passed
 * to libpq as hostaddr beside host (which libpq still uses for TLS
 * verification, Kerberos and the password file). A name with several
 * addresses becomes one entry per address, tried in order as libpq would.
 * Unix-socket hosts keep an empty hostaddr. Sets *host, *hostaddr and
 * *port (malloc'ed, NULL: nothing to override) or returns an error: the
 * lookup failed or ran out of time (for a list, when every host's did). */
static int resolve_hosts(const char *conninfo, int64_t deadline, char **host_out,
                         char **addr_out, char **port_out, dbs_error *err)
{
    *host_out = *addr_out = *port_out = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (!opts)
        return DBS_OK; /* libpq reports it when it connects */
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
    }
    int rc = DBS_OK;
    /* Not in the string: libpq's defaults (PGHOST, PGHOSTADDR, PGPORT). */
    PQconninfoOption *defs = (!host || !*host || !port) ? PQconndefaults() : NULL;
    for (PQconninfoOption *o = defs; o && o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (!strcmp(o->keyword, "host") && (!host || !*host))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr") && (!hostaddr || !*hostaddr))
            hostaddr = o->val;
        else if (!strcmp(o->keyword, "port") && !port)
            port = o->val;
    }
    if (!host || !*host || (hostaddr && *hostaddr)) {
        PQconninfoFree(opts);
        PQconninfoFree(defs);
        return DBS_OK; /* the default socket, or addresses given */
    }
    /* As many hosts as the string names, as libpq takes them: none is
     * dropped. Each host becomes at most PG_ADDRS_PER_HOST entries, each
     * entry written with a comma before it; with one port for every host,
     * that port is written for every entry. */
    size_t nl = (size_t)count_list(host), npl = (size_t)count_list(port);
    size_t slots = nl * PG_ADDRS_PER_HOST;
    char *hcopy = strdup(host), *pcopy = port ? strdup(port) : NULL;
    size_t cap = slots * (INET6_ADDRSTRLEN + 1) + 1;
    size_t hcap = PG_ADDRS_PER_HOST * (strlen(host) + 1) + 1;
    size_t pcap = port ? (npl == 1 ? slots : PG_ADDRS_PER_HOST) * (strlen(port) + 1) + slots + 1
                       : 1;
    char *hosts = malloc(hcap), *addrs = malloc(cap), *ports = malloc(pcap);
    char **h = malloc(nl * sizeof *h), **pt = npl ? malloc(npl * sizeof *pt) : NULL;
    PQconninfoFree(opts);
    PQconninfoFree(defs);
    if (!hcopy || (port && !pcopy) || !hosts || !addrs || !ports || !h || (npl && !pt)) {
        rc = dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        goto out;
    }
    int nh = split_list(hcopy, h, (int)nl);
    int np = split_list(pcopy, pt, (int)npl);
    size_t hw = 0, aw = 0, pw = 0;
    int entries = 0, failed = 0;
    dbs_error last;
    last.code = DBS_OK;
    for (int i = 0; i < nh; i++) {
        const char *p = np == 1 ? pt[0] : i < np ? pt[i] : "";
        char one[PG_ADDRS_PER_HOST * (INET6_ADDRSTRLEN + 1) + 1] = "";
        char *a[PG_ADDRS_PER_HOST];
        int na = 1;
        if (h[i][0] && h[i][0] != '/' && h[i][0] != '@') {
            if (dbs__resolve(h[i], p, deadline, one, sizeof one, PG_ADDRS_PER_HOST, &last) !=
                DBS_OK) {
                failed++;
                continue;
            }
            na = split_list(one, a, PG_ADDRS_PER_HOST);
        } else {
            a[0] = one; /* a socket directory: no address */
        }
        for (int k = 0; k < na; k++) {
            hw += (size_t)snprintf(hosts + hw, hcap - hw, "%s%s", entries ? "," : "", h[i]);
            aw += (size_t)snprintf(addrs + aw, cap - aw, "%s%s", entries ? "," : "", a[k]);
            pw += (size_t)snprintf(ports + pw, pcap - pw, "%s%s", entries ? "," : "", p);
            entries++;
        }
    }
    if (entries == 0 && failed > 0) {
        rc = last.code;
        if (err)
            *err = last;
        goto out;
    }
    *host_out = hosts;
    *addr_out = addrs;
    *port_out = np > 0 ? ports : NULL;
    hosts = addrs = NULL;
    if (np > 0)
        ports = NULL;
out:
    free(h);
    free(pt);
    free(hcopy);
    free(pcopy);
    free(hosts);
    free(addrs);
    free(ports);
    return rc;
}

/* Host, port and user as the connection string names them ("" when it
 * does not), for the credential provider: pointers into the parsed
 * options returned (PQconninfoFree them; NULL: out of memory, the string
 * parsed when the pool opened), whole however long (copies into fixed
 * buffers cut a multi-host list). */
static PQconninfoOption *url_identity(const char *conninfo, const char **host,
                                      const char **port, const char **user)
{
    *host = *port = *user = "";
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "host") || (!strcmp(o->keyword, "hostaddr") && !**host))
            *host = o->val;
        else if (!strcmp(o->keyword, "port"))
            *port = o->val;
        else if (!strcmp(o->keyword, "user"))
            *user = o->val;
    }
    return opts;
}

static void *pg_connect_with(const dbs__target *t, const char *token, dbs_error *err);

/* The options of the startup packet: ours (PG_STARTUP_OPTIONS and, when
 * given, datestyle's), then the user's, from the URL or else libpq's
 * default (PGOPTIONS, or the service PGSERVICE names; a service named in
 * the URL is read by libpq only for what the call does not give, so its
 * options are not kept: the URL's own are). The user's come last, so a
 * setting they give wins. NULL: out of memory. */
static char *startup_options(const char *conninfo, const char *datestyle)
{
    const char *user = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL), *defs = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "options") && o->val)
            user = o->val;
    if (!user) {
        defs = PQconndefaults();
        for (PQconninfoOption *o = defs; o && o->keyword; o++)
            if (!strcmp(o->keyword, "options") && o->val)
                user = o->val;
    }
    size_t n = sizeof PG_STARTUP_OPTIONS + strlen(datestyle) + (user ? strlen(user) : 0) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s%s%s", PG_STARTUP_OPTIONS, datestyle, user ? " " : "",
                 user ? user : "");
    PQconninfoFree(opts);
    PQconninfoFree(defs);
    return out;
}

/* Asks the credential provider, if any, then connects with its answer. */
static void *pg_connect(const dbs__target *t, dbs_error *err)
{
    if (!t->credential)
        return pg_connect_with(t, NULL, err);
    const char *host, *port, *user;
    PQconninfoOption *opts = url_identity(t->conninfo, &host, &port, &user);
    if (!opts) {
        dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        return NULL;
    }
    char token[DBS_CREDENTIAL_MAX];
    int rc = dbs__credential_get(t, "postgresql", host, port, user, token, sizeof token, err);
    PQconninfoFree(opts);
    if (rc != DBS_OK)
        return NULL;
    void *c = pg_connect_with(t, token, err);
    if (!c && err) /* libpq does not quote a password; in case */
        dbs__scrub_text(err->message, sizeof err->message, token, strlen(token));
    dbs__credential_wipe(token, sizeof token);
    return c;
}

/* token: the password for this connect (the credential provider's), in
 * place of the URL's; NULL: the URL's. */
static void *pg_connect_with(const dbs__target *t, const char *token, dbs_error *err)
{
    pg_conn *c = calloc(1, sizeof *c);
    if (!c) {
        dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        return NULL;
    }
    c->t = t;
    c->timeout_ms = t->statement_timeout_ms;
    c->reconcile_min = UINT64_MAX;
    flight_init(&c->posted);
    int bound = url_connect_timeout_ms(t->conninfo, c->password,
                                       sizeof c->password);
    if (bound < 0)
        bound = t->connect_timeout_ms;
    int64_t deadline = deadline_of(bound);
    /* " -c DateStyle=ISO,<order>" for a server that started the first
     * connect in another style; plain: without our options, for a server
     * that refuses an options startup parameter (PgBouncer before 1.20) */
    char datestyle[48] = "";
    bool plain = false;

again:;
    char *r_host, *r_addr, *r_port;
    if (resolve_hosts(t->conninfo, deadline, &r_host, &r_addr, &r_port, err) != DBS_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "postgresql: cannot connect: %.450s",
                 err ? err->message : "name lookup failed");
        int code = err ? err->code : DBS_ECONNECT;
        return connect_fail(c, err, code, msg);
    }
    char *options = plain ? NULL : startup_options(t->conninfo, datestyle);
    if (!plain && !options) {
        free(r_host);
        free(r_addr);
        free(r_port);
        return connect_fail(c, err, DBS_ENOMEM, "postgresql: out of memory");
    }
    /* Our TCP defaults and client_encoding first, the URL after: with
     * expand_dbname the last value of a keyword wins, so the URL's own
     * settings are kept; then the options (the URL's merged in), and the
     * resolved addresses, beside the names they came from. */
    const char *kw[PG_NDEFAULTS + 8], *val[PG_NDEFAULTS + 8];
    size_t k = 0;
    for (size_t i = 0; i < PG_NDEFAULTS; i++, k++) {
        kw[k] = pg_tcp_defaults[i][0];
        val[k] = pg_tcp_defaults[i][1];
    }
    kw[k] = "client_encoding";
    val[k++] = "UTF8";
    kw[k] = "dbname";
    val[k++] = t->conninfo;
    if (options) {
        kw[k] = "options";
        val[k++] = options;
    }
    if (token) { /* after the URL: the last value wins */
        kw[k] = "password";
        val[k++] = token;
    }
    if (r_addr) {
        kw[k] = "host";
        val[k++] = r_host;
        kw[k] = "hostaddr";
        val[k++] = r_addr;
        if (r_port) {
            kw[k] = "port";
            val[k++] = r_port;
        }
    }
    kw[k] = NULL;
    val[k] = NULL;
    c->pg = PQconnectStartParams(kw, val, 1);
    free(options);
    free(r_host);
    free(r_addr);
    free(r_port);
    if (!c->pg)
        return connect_fail(c, err, DBS_ENOMEM, "postgresql: out of memory");
    PQsetNoticeReceiver(c->pg, on_notice, c);
    /* Verbose while connecting: the server's refusal then carries its
     * SQLSTATE ("FATAL:  28P01: ..."), which libpq has no other way to
     * report for a connect. Back to the default once connected. */
    PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);
    bool timeout = false;
    PostgresPollingStatusType ps = PQstatus(c->pg) == CONNECTION_BAD
                                       ? PGRES_POLLING_FAILED
                                       : PGRES_POLLING_WRITING;
    while (ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        int fd = PQsocket(c->pg);
        if (fd < 0) {
            ps = PGRES_POLLING_FAILED;
            break;
        }
        int w = wait_fd(fd, ps == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                        deadline);
        if (w == IO_TIMEOUT) {
            timeout = true;
            break;
        }
        if (dbs__stopping()) /* the pool shut down: abandoned and closed */
            return connect_fail(c, err, DBS_ECLOSED,
                                "postgresql: connect abandoned: the pool shut down");
        ps = PQconnectPoll(c->pg);
    }
    /* PgBouncer before 1.20 refuses an options startup parameter it does
     * not know: connected without ours, as dbscope did before it sent
     * them (PgBouncer's own server connections then have only its
     * configuration and the role's defaults) */
    if (ps != PGRES_POLLING_OK && !timeout && !plain &&
        strstr(PQerrorMessage(c->pg), "unsupported startup parameter: options")) {
        PQfinish(c->pg);
        c->pg = NULL;
        plain = true;
        goto again;
    }
    if (ps != PGRES_POLLING_OK) {
        char m[400], msg[512], st[6] = "";
        if (timeout)
            snprintf(m, sizeof m, "no answer within %d ms (connect_timeout_ms, "
                     "or connect_timeout in the URL)", bound);
        else
            connect_message(PQerrorMessage(c->pg), m, sizeof m, st);
        chomp(m);
        scrub(c, m, sizeof m);
        if (token && *token)
            dbs__scrub_text(m, sizeof m, token, strlen(token));
        /* Refusals that no retry can cure, by the server's SQLSTATE (or
         * libpq's own verdict that a password is needed): configuration
         * errors, not outages. */
        int code = DBS_ECONNECT;
        const char *why = "cannot connect";
        if (!timeout && (!strcmp(st, "28P01") || PQconnectionNeedsPassword(c->pg))) {
            code = DBS_ECONFIG;
            why = token ? "wrong password or user (check the user in the URL and the "
                          "password the credential provider returns)"
                        : "wrong password or user (check the user and password in the URL)";
        } else if (!strcmp(st, "28000")) {
            code = DBS_ECONFIG;
            why = "the server refuses this user, database or client address, or "
                  "the authentication method (check the user in the URL and the "
                  "server's pg_hba.conf)";
        } else if (!strcmp(st, "3D000")) {
            code = DBS_ECONFIG;
            why = "unknown database (check the database name in the URL)";
        } else if (!strcmp(st, "42501")) {
            code = DBS_ECONFIG;
            why = "the user may not connect to this database (GRANT CONNECT, or "
                  "check the user and database in the URL)";
        } else if (timeout || strstr(m, "Connection refused") ||
                 strstr(m, "timeout expired") ||
                 strstr(m, "could not translate host") ||
                 strstr(m, "No route") || strstr(m, "Network is unreachable") ||
                 strstr(m, "No such file"))
            why =
                "unreachable host (check host, port and that the server runs)";
        snprintf(msg, sizeof msg, "postgresql: %s: %s", why, m);
        void *r = connect_fail(c, err, code, msg);
        dbs__err_sqlstate(err, st);
        return r;
    }
    /* Timestamps are read in DateStyle ISO only: a connection that came
     * up in another (a role's or database's default) is made again with
     * ISO and the date order the server reported, which RESET ALL then
     * keeps. Once: a URL's own options may insist on another style. */
    const char *ds = PQparameterStatus(c->pg, "DateStyle");
    if (!plain && !datestyle[0] && ds && strncmp(ds, "ISO", 3) != 0) {
        const char *order = strchr(ds, ',');
        order = order ? order + 1 + strspn(order + 1, " ") : "";
        snprintf(datestyle, sizeof datestyle, " -c DateStyle=ISO%s%.8s", *order ? "," : "",
                 order);
        PQfinish(c->pg);
        c->pg = NULL;
        goto again;
    }
    PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    c->tcp = getsockname(PQsocket(c->pg), (struct sockaddr *)&sa, &sl) == 0 &&
             (sa.ss_family == AF_INET || sa.ss_family == AF_INET6);
    if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg))
        return connect_fail(c, err, DBS_ECONNECT,
                            "postgresql: cannot enter pipeline mode (libpq "
                            "14 or newer and a server speaking protocol 3)");
    int cap = t->stmt_cache_size > 0 ? t->stmt_cache_size : 0;
    if (cap > 0)
        c->cache = calloc((size_t)cap, sizeof *c->cache);
    if (cap > 0 && !c->cache) {
        free(c->cache);
        return connect_fail(c, err, DBS_ENOMEM, "postgresql: out of memory");
    }
    c->cache_n = cap;
    return c;
}

static void a_drop(pg_conn *c);

static void pg_close(void *vc)
{
    pg_conn *c = vc;
    if (!c)
        return;
    a_drop(c);
    flight_clear(&c->posted);
    cache_clear(c);
    free(c->cache);
    /* Non-blocking: the goodbye message is written if the socket takes it,
     * never waited for. */
    PQfinish(c->pg);
    free(c);
}

/* In a child after fork(): libpq's socket is the parent's too. Silenced
 * first, so PQfinish's Terminate (and a TLS close_notify) never reaches
 * the server, which would end the parent's session. */
static void pg_forget(void *vc)
{
    pg_conn *c = vc;
    if (!c || !dbs__fd_silence(PQsocket(c->pg)))
        return; /* left allocated rather than risk a word */
    pg_close(c);
}

static int pg_is_broken(void *vc)
{
    pg_conn *c = vc;
    if (!c->broken && PQstatus(c->pg) != CONNECTION_OK)
        c->broken = true;
    return c->broken;
}

static void pg_set_timeout(void *vc, int ms)
{
    pg_conn *c = vc;
    c->timeout_ms = ms < 0 ? c->t->statement_timeout_ms : ms;
}

/* A flight of only the owed work and a Sync: one round trip. */
static int pg_ping(void *vc, dbs_error *err)
{
    pg_conn *c = vc;
    pg_flight f;
    int64_t dl;
    bool ok;
    int rc = flight_open(c, &f, &dl, &ok, err);
    if (rc != DBS_OK)
        return rc;
    q_sync(c, &f, &ok);
    rc = flight_wait(c, &f, dl, ok, "ping", false, err);
    flight_clear(&f);
    return rc;
}

/* Polls the socket without waiting: 1 readable (data or the server's
 * close), 0 not, -1 the poll failed. */
static int readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR) {
    }
    return n < 0 ? -1 : n > 0;
}

/* An idle connection's socket, without a round trip (nothing is sent).
 * The answer to the posted reset is read first. Then readable means the
 * server wrote something unasked (a notice, a ParameterStatus, a NOTIFY,
 * an error before it closes), or closed it.
 * libpq reads all of it; a close or a FATAL error makes the connection
 * broken, and anything else unasked is left to a ping to settle. */
static int pg_peek(void *vc, int wait, dbs_error *err)
{
    pg_conn *c = vc;
    if (pg_is_broken(c))
        return dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
    /* The reset a release posted is read before the hand-out, on a
     * program's thread waiting for its answer if it is still on its way
     * (the first statement would wait for it all the same): a reset that
     * failed is the closed session's failure, and the next user gets
     * another connection rather than that failure from its first call.
     * An event loop's thread never waits: bytes arrived may be part of
     * that answer only, and reading it may take another round trip (the
     * reset run again); the unit's flight reads it first, as a flight of
     * its own, and a connection that turns out dead fails the unit
     * before its COMMIT. */
    if (c->posted.n > 0) {
        if (!wait)
            return DBS_OK;
        int rc = drain_posted(c, deadline_of(c->timeout_ms), err);
        if (rc != DBS_OK)
            return rc;
    }
    int fd = PQsocket(c->pg);
    int r = fd < 0 ? -1 : readable_now(fd);
    if (r == 0)
        return DBS_OK; /* the common case: one poll() */
    bool unasked = false;
    for (int round = 0; r != 0 && round < 8; round++) {
        if (r < 0)
            return DBS__PEEK_UNSURE;
        unasked = true;
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK)
            return conn_lost(c, err, "the idle time (the server closed it)");
        (void)PQisBusy(c->pg); /* parses: notices, a FATAL error, NOTIFY */
        PGnotify *n;
        while ((n = PQnotifies(c->pg)) != NULL)
            PQfreemem(n);
        if (c->broken)
            return dbs__err(err, DBS_ECONNECT,
                            "postgresql: the server is closing the idle connection");
        r = readable_now(fd);
    }
    return r != 0 || unasked ? DBS__PEEK_UNSURE : DBS_OK;
}

/* The caller gets the PGconn as libpq users expect it: out of pipeline
 * mode with nothing pending, and nothing of the previous user's left (the
 * posted reset and owed DEALLOCATEs are done first). */
static void *pg_native(void *vc)
{
    pg_conn *c = vc;
    c->used = true;
    c->native_used = true;
    if (c->broken)
        return c->pg;
    pg_flight f;
    int64_t dl;
    bool ok;
    dbs_error e;
    if (flight_open(c, &f, &dl, &ok, &e) == DBS_OK) {
        if (f.n > 0)
            flight_wait(c, &f, dl, ok, "owed DEALLOCATE", false, &e);
        flight_clear(&f);
    }
    if (!c->broken && !PQexitPipelineMode(c->pg))
        c->broken = true;
    return c->pg;
}

/* After each statement's flight: what the server reports of the
 * transaction dbscope began (ReadyForQuery's status, and the command tag),
 * never what the SQL looked like. A COMMIT, END or ROLLBACK sent as SQL
 * ends it (idle), COMMIT AND CHAIN commits and opens another: something
 * may have committed (escaped), and the next statement begins a new
 * transaction of dbscope's own (READ ONLY again in a read-only session),
 * so no statement runs outside one. */
static void follow_tx(pg_conn *c, PGresult *r)
{
    if (!c->tx_sent || c->broken)
        return;
    const char *tag = r ? PQcmdStatus(r) : "";
    bool chained = tag && !strncmp(tag, "COMMIT", 6);
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE && !chained)
        return;
    c->escaped = true;
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
        c->tx_sent = false;
        c->begin_pending = true;
    }
}

static int pg_tx_escaped(void *vc)
{
    return ((pg_conn *)vc)->escaped;
}

static int pg_begin(void *vc, const dbs_context *ctx, dbs_error *err)
{
    (void)err;
    pg_conn *c = vc;
    c->ctx = ctx;
    c->begin_pending = true;
    return DBS_OK;
}

/* ---- statements ---- */

/* The protocol counts a Bind's parameters in 16 bits; a few fit in
 * pg_params itself, more take one allocation (params_of). */
enum { PG_MAXP = 65535, PG_SMALLP = 32 };

/* Whether c may start a name (scan.l's ident_start) or go on in one
 * (ident_cont, which takes '$': "a$1" is a name). */
static bool pg_ident_start(unsigned char c)
{
    return isalpha(c) || c == '_' || c >= 0x80;
}

static bool pg_ident_cont(unsigned char c)
{
    return pg_ident_start(c) || isdigit(c) || c == '$';
}

/* The highest $n in sql read as PostgreSQL's lexer (scan.l) reads it, a
 * plain string's backslash an escape when scs_off (the session's
 * standard_conforming_strings off), or -1 for a text the server refuses
 * as unterminated. *plain_backslash notes a backslash in a plain string,
 * whose reading depends on scs_off. */
static int max_param_read(const char *sql, bool scs_off, bool *plain_backslash)
{
    int max = 0;
    const unsigned char *p = (const unsigned char *)sql;
    while (*p) {
        if (*p == '\'' || ((*p == 'E' || *p == 'e') && p[1] == '\'')) {
            /* E'...' escapes with backslashes always; '...' (N'...',
             * U&'...') only with standard_conforming_strings off */
            bool e = *p != '\'', esc = e || scs_off;
            p += e ? 2 : 1;
            for (;; p++) {
                if (!*p)
                    return -1;
                if (*p == '\\') {
                    *plain_backslash |= !e;
                    if (esc && !*++p)
                        return -1;
                } else if (*p == '\'') {
                    if (p[1] != '\'')
                        break;
                    p++;
                }
            }
            p++;
        } else if (*p == '"') {
            for (p++;; p++) {
                if (!*p)
                    return -1;
                if (*p == '"' && *++p != '"')
                    break;
            }
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            /* block comments nest */
            int depth = 0;
            do {
                if (!*p)
                    return -1;
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    depth--;
                    p += 2;
                } else {
                    p++;
                }
            } while (depth > 0);
        } else if (pg_ident_start(*p)) {
            while (pg_ident_cont(*p))
                p++;
        } else if (isdigit(*p)) {
            /* a number, with its junk ("1abc", refused by the server):
             * never a '$', which starts a parameter after it */
            while (isalnum(*p) || *p == '_' || *p == '.' || *p >= 0x80)
                p++;
        } else if (*p == '$' && isdigit(p[1])) {
            long v = strtol((const char *)p + 1, NULL, 10);
            /* past any count given: the server names it */
            if (v > max)
                max = v > PG_MAXP ? PG_MAXP + 1 : (int)v;
            for (p++; isdigit(*p); p++) {
            }
        } else if (*p == '$') {
            /* a dollar-quoted string: $$...$$ or $tag$...$tag$ */
            const unsigned char *t = p + 1;
            if (pg_ident_start(*t))
                while (pg_ident_cont(*t) && *t != '$')
                    t++;
            if (*t != '$') {
                p++;
                continue;
            }
            size_t dl = (size_t)(t + 1 - p);
            const char *close = (const char *)t + 1;
            for (; (close = strchr(close, '$')); close++)
                if (!strncmp(close, (const char *)p, dl))
                    break;
            if (!close)
                return -1;
            p = (const unsigned char *)close + dl;
        } else {
            p++;
        }
    }
    return max;
}

/* The highest $n in sql outside strings, quoted names and comments, or -1
 * when the text leaves it open: it depends on standard_conforming_strings
 * (a backslash in a plain string, the two readings differing; the setting
 * is the session's, not known where this runs), or the server will refuse
 * the text. The server accepts parameters a statement never uses, SQLite
 * does not: this keeps the backends alike. */
static int max_param(const char *sql)
{
    if (!strchr(sql, '$'))
        return 0;
    bool plain_backslash = false;
    int max = max_param_read(sql, false, &plain_backslash);
    if (max >= 0 && plain_backslash && max_param_read(sql, true, &plain_backslash) != max)
        return -1;
    return max;
}

/* Whether an error is about the statement called name (and not, say, about
 * a user's EXECUTE of a statement that does not exist): the server quotes
 * the name in its message; "dbs_1" must not match "dbs_12". */
static bool names_stmt(const PGresult *r, const char *name)
{
    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    size_t n = strlen(name);
    for (const char *p = m; p && (p = strstr(p, name)) != NULL; p += n)
        if (!isalnum((unsigned char)p[n]) && p[n] != '_')
            return true;
    return false;
}

/* A statement's parameters as libpq takes them: in .in for up to
 * PG_SMALLP, else in a block params_check sizes. */
typedef struct pg_params {
    Oid *types;
    const char **vals;
    int *lens, *fmts;
    char (*nums)[40];
    char *sig;  /* the types, a letter each (cache_get) */
    char *heap; /* params_of's block (params_free) */
    struct {
        Oid types[PG_SMALLP];
        const char *vals[PG_SMALLP];
        int lens[PG_SMALLP], fmts[PG_SMALLP];
        char nums[PG_SMALLP][40];
        char sig[PG_SMALLP + 1];
    } in;
} pg_params;

/* A parameter's bytes in that block: a value, a type, a length, a format,
 * a number's text, a letter of sig. */
#define PG_PARAM_BYTES (sizeof(const char *) + sizeof(Oid) + 2 * sizeof(int) + 40 + 1)

static void params_free(pg_params *p)
{
    free(p->heap);
    p->heap = NULL;
}

/* Checks sql's parameters: DBS_OK and the bytes params_fill needs beyond
 * pg_params (its arrays past PG_SMALLP, counted texts with a NUL) in
 * *heap, or an error that names the parameter. */
static int params_check(const char *sql, const dbs_value *params, size_t n, size_t *heap,
                        dbs_error *err)
{
    *heap = 0;
    if (n > PG_MAXP)
        return dbs__err(err, DBS_EMISUSE, "postgresql: %zu parameters: at most %d", n,
                        PG_MAXP);
    int used = max_param(sql);
    if (used >= 0 && (size_t)used < n)
        return dbs__err(err, DBS_ESQL,
                        "postgresql: %zu parameters given but the statement uses $%d "
                        "at most",
                        n, used);
    size_t need = n > PG_SMALLP ? n * PG_PARAM_BYTES + 1 : 0;
    char ts[40];
    for (size_t i = 0; i < n; i++) {
        const dbs_value *v = &params[i];
        switch (v->type) {
        case DBS_TYPE_INT:
        case DBS_TYPE_REAL:
        case DBS_TYPE_BOOL:
        case DBS_TYPE_UUID:
        case DBS_TYPE_NULL:
            break;
        case DBS_TYPE_TIMESTAMP:
            if (dbs_timestamp_format(v->ts, ts) < 0)
                return dbs__err(err, DBS_EMISUSE,
                                "postgresql: parameter $%zu: timestamp out of range", i + 1);
            break;
        case DBS_TYPE_JSON:
        case DBS_TYPE_TEXT:
        case DBS_TYPE_BLOB:
            if (!v->b.p || (v->type != DBS_TYPE_BLOB && v->b.n == SIZE_MAX))
                break;
            if (v->b.n > INT32_MAX)
                return dbs__err(err, DBS_EMISUSE,
                                "postgresql: parameter $%zu too long", i + 1);
            if (v->type == DBS_TYPE_TEXT) {
                /* Counted text goes as text too, copied with a NUL by
                 * params_fill: in binary format a type the server infers
                 * (an integer, a numeric) read the bytes as its own
                 * binary form ("1234" became 825373492). A NUL byte would
                 * cut that copy short: refused, as the server refuses it
                 * in text. */
                if (memchr(v->b.p, '\0', v->b.n))
                    return dbs__err(err, DBS_ESQL,
                                    "postgresql: parameter $%zu: text with a NUL "
                                    "byte, which PostgreSQL text cannot hold (bind "
                                    "bytes as DBS_BLOB)", i + 1);
                need += v->b.n + 1;
            }
            break;
        default:
            return dbs__err(err, DBS_EMISUSE,
                            "postgresql: parameter $%zu has no valid type", i + 1);
        }
    }
    *heap = need;
    return DBS_OK;
}

static int pg_args_check(const char *sql, const dbs_value *params, size_t n,
                         dbs_error *err)
{
    size_t heap;
    return params_check(sql, params, n, &heap, err);
}

/* Converts parameters params_check passed into p, its arrays and copies
 * in buf (the bytes params_check asked for; p's strings may point into
 * params too). Fails never: nothing of a flight is queued before every
 * statement's parameters were checked and their memory found. */
static void params_fill(const dbs_value *params, size_t n, pg_params *p, char *buf)
{
    p->heap = NULL;
    char *h = buf;
    if (n > PG_SMALLP) {
        /* the widest first, each array aligned for its type */
        p->vals = (const char **)(void *)h;
        p->types = (Oid *)(void *)(p->vals + n);
        p->lens = (int *)(void *)(p->types + n);
        p->fmts = p->lens + n;
        p->nums = (char(*)[40])(void *)(p->fmts + n);
        p->sig = (char *)(p->nums + n);
        h = p->sig + n + 1;
    } else {
        p->vals = p->in.vals;
        p->types = p->in.types;
        p->lens = p->in.lens;
        p->fmts = p->in.fmts;
        p->nums = p->in.nums;
        p->sig = p->in.sig;
    }
    Oid *types = p->types;
    const char **vals = p->vals;
    int *lens = p->lens, *fmts = p->fmts;
    char(*nums)[40] = p->nums;
    for (size_t i = 0; i < n; i++) {
        const dbs_value *v = &params[i];
        lens[i] = 0;
        fmts[i] = 0;
        switch (v->type) {
        case DBS_TYPE_INT:
            types[i] = PG_OID_INT8;
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)v->i);
            vals[i] = nums[i];
            break;
        case DBS_TYPE_REAL:
            types[i] = PG_OID_FLOAT8;
            dbs__fmt_double(nums[i], sizeof nums[i], v->r);
            vals[i] = nums[i];
            break;
        case DBS_TYPE_BOOL:
            types[i] = PG_OID_BOOL;
            vals[i] = v->i ? "t" : "f";
            break;
        case DBS_TYPE_TIMESTAMP:
            types[i] = PG_OID_TIMESTAMPTZ;
            (void)dbs_timestamp_format(v->ts, nums[i]); /* checked */
            vals[i] = nums[i];
            break;
        case DBS_TYPE_UUID:
            types[i] = PG_OID_UUID;
            vals[i] = NULL;
            if (v->b.p) {
                dbs_uuid_format(v->b.p, nums[i]);
                vals[i] = nums[i];
            }
            break;
        case DBS_TYPE_JSON:
        case DBS_TYPE_TEXT:
            /* A NULL pointer is SQL NULL. A counted json goes in binary
             * format, whose form is the text itself, so it needs no
             * terminating NUL. */
            types[i] = v->type == DBS_TYPE_JSON ? PG_OID_JSON : 0;
            vals[i] = v->b.p;
            if (v->b.p && v->b.n != SIZE_MAX) {
                if (v->type == DBS_TYPE_TEXT) {
                    memcpy(h, v->b.p, v->b.n);
                    h[v->b.n] = '\0';
                    vals[i] = h;
                    h += v->b.n + 1;
                    break;
                }
                lens[i] = (int)v->b.n;
                fmts[i] = 1;
                vals[i] = v->b.n ? v->b.p : "";
            }
            break;
        case DBS_TYPE_BLOB:
            types[i] = PG_OID_BYTEA;
            vals[i] = v->b.p ? (v->b.n ? v->b.p : "") : NULL;
            lens[i] = v->b.p ? (int)v->b.n : 0;
            fmts[i] = 1;
            break;
        default: /* DBS_TYPE_NULL: params_check let no other through */
            types[i] = 0;
            vals[i] = NULL;
            break;
        }
        switch (types[i]) {
        case PG_OID_INT8: p->sig[i] = 'i'; break;
        case PG_OID_FLOAT8: p->sig[i] = 'f'; break;
        case PG_OID_BOOL: p->sig[i] = 'b'; break;
        case PG_OID_TIMESTAMPTZ: p->sig[i] = 't'; break;
        case PG_OID_UUID: p->sig[i] = 'u'; break;
        case PG_OID_JSON: p->sig[i] = 'j'; break;
        case PG_OID_BYTEA: p->sig[i] = 'y'; break;
        default: p->sig[i] = '-'; break; /* inferred by the server */
        }
    }
    p->sig[n] = '\0';
}

/* Checks sql's parameters and converts them into p (params_free after).
 * DBS_OK, or an error that names the parameter, or DBS_ENOMEM: nothing
 * allocated then. */
static int params_of(const char *sql, const dbs_value *params, size_t n, pg_params *p,
                     dbs_error *err)
{
    p->heap = NULL;
    size_t need;
    int rc = params_check(sql, params, n, &need, err);
    if (rc != DBS_OK)
        return rc;
    char *h = need ? malloc(need) : NULL;
    if (need && !h)
        return dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
    params_fill(params, n, p, h);
    p->heap = h;
    return DBS_OK;
}

static PGresult *run_params(pg_conn *c, const char *sql, const pg_params *pp, size_t n,
                            dbs_error *err);

/* Sends the flight for one statement and returns its result (caller
 * clears) or NULL with err filled. */
static PGresult *run(pg_conn *c, const char *sql, const dbs_value *params,
                     size_t n, dbs_error *err)
{
    if (c->broken) {
        dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
        return NULL;
    }
    pg_params pp;
    if (params_of(sql, params, n, &pp, err) != DBS_OK)
        return NULL;
    PGresult *r = run_params(c, sql, &pp, n, err);
    params_free(&pp);
    return r;
}

static PGresult *run_params(pg_conn *c, const char *sql, const pg_params *pp, size_t n,
                            dbs_error *err)
{
    const Oid *types = pp->types;
    const char *const *vals = pp->vals;
    const int *lens = pp->lens, *fmts = pp->fmts;
    bool retried = false, rollback_first = false;
again:;
    /* In a transaction that failed the server refuses every command, the
     * DEALLOCATE of an entry a new statement would evict too: its
     * statement would stay on the server, known to no cache entry, and
     * with DBS_RESET_ROLLBACK no reconcile ever finds it. Such a
     * statement, which fails anyway, runs unnamed. */
    bool aborted = !rollback_first && PQtransactionStatus(c->pg) == PQTRANS_INERROR;
    pg_flight f;
    int64_t dl;
    bool ok;
    if (flight_open(c, &f, &dl, &ok, err) != DBS_OK)
        return NULL;
    c->used = true;
    if (rollback_first) {
        q_cmd(c, &f, &ok, "ROLLBACK");
        q_sync_more(c, &f, &ok);
    }
    bool began = false;
    if (c->begin_pending) {
        const char *bsql = begin_sql(c);
        char ro_begin[sizeof c->begin_sql + 12];
        if (!bsql) {
            snprintf(ro_begin, sizeof ro_begin, "%s READ ONLY", c->begin_sql);
            bsql = ro_begin;
        }
        q_cmd(c, &f, &ok, bsql);
        const char *cv[3] = {c->ctx ? c->ctx->request_id : NULL,
                             c->ctx ? c->ctx->user_id : NULL,
                             c->ctx ? c->ctx->tenant_id : NULL};
        bool snapshot = false;
        for (int i = 0; i < 3; i++) {
            if (!c->t->ctx_setting[i] || !ok || f.n >= PG_MAXQ)
                continue;
            const char *pv[2] = {c->t->ctx_setting[i], cv[i] ? cv[i] : ""};
            ok = PQsendQueryParams(c->pg, "SELECT pg_catalog.set_config($1, $2, true)",
                                   2, NULL, pv, NULL, NULL, 0) == 1;
            f.res[f.n] = NULL;
            f.kind[f.n++] = Q_CMD;
            snapshot = true;
        }
        /* SET TRANSACTION READ WRITE is accepted until the transaction's
         * first snapshot: a read-only one takes it in BEGIN's own flight
         * (a SELECT does), so it cannot be switched to read-write. */
        if ((c->read_only || c->opt_ro) && !snapshot)
            q_cmd(c, &f, &ok, "SELECT");
        c->begin_pending = false;
        c->tx_sent = true;
        c->tx_fail = 0;
        began = true;
    }
    bool fresh = false;
    char evicted[24], dealloc[48];
    int parse_idx = -1;
    evicted[0] = '\0';
    pg_stmt *e = aborted ? NULL : cache_get(c, sql, pp->sig, &fresh, evicted, sizeof evicted);
    if (evicted[0]) {
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", evicted);
        q_cmd(c, &f, &ok, dealloc);
    }
    if (e && fresh && ok && f.n < PG_MAXQ - 2) {
        ok = PQsendPrepare(c->pg, e->name, sql, (int)n, n ? types : NULL) == 1;
        parse_idx = f.n;
        f.res[f.n] = NULL;
        f.kind[f.n++] = Q_CMD;
    }
    int stmt_idx = f.n;
    if (ok && f.n < PG_MAXQ - 1) {
        if (e)
            ok = PQsendQueryPrepared(c->pg, e->name, (int)n, n ? vals : NULL,
                                     n ? lens : NULL, n ? fmts : NULL,
                                     0) == 1;
        else
            ok = PQsendQueryParams(c->pg, sql, (int)n, n ? types : NULL,
                                   n ? vals : NULL, n ? lens : NULL,
                                   n ? fmts : NULL, 0) == 1;
        f.res[f.n] = NULL;
        f.kind[f.n++] = Q_CMD;
    } else {
        ok = false;
    }
    q_sync(c, &f, &ok);
    int rc = flight_wait(c, &f, dl, ok, "statement", false, err);
    /* A Parse that failed, or was skipped because the pipeline aborted
     * before it, left no statement on the server. */
    if (e && fresh &&
        (rc != DBS_OK || parse_idx < 0 || !f.res[parse_idx] ||
         PQresultStatus(f.res[parse_idx]) != PGRES_COMMAND_OK)) {
        free(e->sql);
        e->sql = NULL;
    }
    if (rc != DBS_OK) {
        flight_clear(&f);
        return NULL;
    }
    const PGresult *fail = NULL;
    int fail_idx = -1;
    /* An owed DEALLOCATE that failed (the statement was gone already)
     * aborted nothing and is no failure of this statement's. */
    for (int i = f.owed_to; i < f.n && !fail; i++)
        if (failed(f.res[i])) {
            fail = f.res[i];
            fail_idx = i;
        }
    if (fail) {
        const char *st = PQresultErrorField(fail, PG_DIAG_SQLSTATE);
        if (st && !strcmp(st, "26000") && e && !fresh && fail_idx == stmt_idx &&
            names_stmt(fail, e->name)) {
            /* Our statement is gone: the session deallocated it (inside a
             * function, or through native()). Others may be gone too. */
            cache_clear(c);
            if (began && !retried) {
                /* Nothing of the transaction but its start ran: begin it
                 * again, after ending the aborted one. */
                flight_clear(&f);
                retried = rollback_first = true;
                c->begin_pending = true;
                c->tx_sent = false;
                goto again;
            }
            flight_clear(&f);
            dbs__err(err, DBS_ESQL,
                     "postgresql: the prepared statement dbscope made for "
                     "this query was deallocated by the session itself "
                     "(DEALLOCATE inside a function?): the transaction is "
                     "aborted; roll back and run it again");
            dbs__err_sqlstate(err, "26000");
            return NULL;
        }
        int code = result_err(c, fail, err);
        const char *fst = PQresultErrorField(fail, PG_DIAG_SQLSTATE);
        if (c->tx_sent && fst && !strcmp(fst, "25P02") && c->tx_fail) {
            /* Refused because an earlier failure aborted the transaction:
             * that failure's consequence, with its class (as SQLite's
             * lost_tx), so a unit that passes this on, or a savepoint's
             * RELEASE refused so, runs again when it was transient. It
             * aborted nothing itself: the COMMIT still answers with the
             * failure that did. */
            if (err && (c->tx_fail == DBS_ERETRYABLE || c->tx_fail == DBS_EFULL))
                err->code = c->tx_fail;
        } else if (c->tx_sent && PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
            /* the last failure that aborted it (a savepoint's rollback
             * may have revived it since an earlier one) */
            c->tx_fail = code;
            snprintf(c->tx_fail_state, sizeof c->tx_fail_state, "%s", fst ? fst : "");
        }
        flight_clear(&f);
        follow_tx(c, NULL);
        return NULL;
    }
    PGresult *keep = f.res[stmt_idx];
    f.res[stmt_idx] = NULL;
    flight_clear(&f);
    follow_tx(c, keep);
    if (!keep) {
        dbs__err(err, DBS_ESQL, "postgresql: no result");
        return NULL;
    }
    /* DEALLOCATE (or DISCARD ALL) run by the user may have removed ours:
     * forget them all rather than fail on each later. */
    const char *tag = PQcmdStatus(keep);
    if (!strncmp(tag, "DEALLOCATE", 10) || !strncmp(tag, "DISCARD", 7))
        cache_clear(c);
    return keep;
}

static int64_t pg_exec(void *vc, const char *sql, const dbs_value *params,
                       size_t n, dbs_error *err)
{
    pg_conn *c = vc;
    PGresult *r = run(c, sql, params, n, err);
    if (!r)
        return err ? err->code : DBS_ESQL;
    /* Rows affected, as SQLite counts them: a SELECT changes none. */
    const char *t = PQcmdTuples(r);
    int64_t rows = t && *t && strncmp(PQcmdStatus(r), "SELECT", 6) != 0
                       ? strtoll(t, NULL, 10)
                       : 0;
    PQclear(r);
    return rows;
}

static dbs_rows *pg_query(void *vc, const char *sql, const dbs_value *params,
                          size_t n, dbs_error *err)
{
    pg_conn *c = vc;
    PGresult *r = run(c, sql, params, n, err);
    if (!r)
        return NULL;
    pg_rows *pr = calloc(1, sizeof *pr);
    if (!pr) {
        PQclear(r);
        dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        return NULL;
    }
    pr->base.ops = &pg_rows_ops;
    pr->res = r;
    pr->row = -1;
    pr->nrows = PQntuples(r);
    pr->ncols = PQnfields(r);
    return &pr->base;
}

/* ---- ending transactions, and the reset ---- */

/* Whether the server has a transaction open (or failed) on c, by what
 * dbscope sent or what the server last reported (a user's own BEGIN). */
static bool tx_open(pg_conn *c)
{
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);
    return c->tx_sent || ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
}

/* A pg_lsn's text ("16/B374D848") as a number; 0 if r is not one. */
static uint64_t lsn_of(const PGresult *r)
{
    unsigned long long hi, lo;
    char tail;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        PQgetisnull(r, 0, 0) ||
        sscanf(PQgetvalue(r, 0, 0), "%llx/%llx%c", &hi, &lo, &tail) != 2 ||
        hi > UINT32_MAX || lo > UINT32_MAX)
        return 0;
    return (uint64_t)hi << 32 | (uint64_t)lo;
}

/* The position a committed transaction needs a replica to have replayed:
 * 0 when it wrote nothing (no transaction id). A write whose position did
 * not come back (the connection failed right after the COMMIT's answer)
 * gets UINT64_MAX, which no replica reaches: its reads need the primary
 * rather than risk missing it. */
static uint64_t commit_pos_of(const PGresult *wrote, const PGresult *pos)
{
    if (wrote && PQresultStatus(wrote) == PGRES_TUPLES_OK &&
        PQntuples(wrote) == 1 && !strcmp(PQgetvalue(wrote, 0, 0), "f"))
        return 0;
    uint64_t lsn = lsn_of(pos);
    return lsn ? lsn : UINT64_MAX;
}

/* dbs__fault.fail_release_resets: a reset that rode with a COMMIT fails
 * once the COMMIT succeeded, as a lost connection makes it. */
static bool fault_release_reset(pg_conn *c, dbs_error *err)
{
    if (atomic_load_explicit(&dbs__fault.fail_release_resets, memory_order_relaxed) <= 0 ||
        atomic_fetch_sub(&dbs__fault.fail_release_resets, 1) <= 0)
        return false;
    c->broken = true;
    dbs__err(err, DBS_ECONNECT, "postgresql: the connection's reset failed (injected fault): "
                                "the connection is discarded");
    return true;
}

/* Ends the transaction with cmd ("COMMIT" or "ROLLBACK") when one is open
 * and, for a release under DBS_RESET_FULL of a connection that was used,
 * runs the reset in the same flight. */
static int end_tx(pg_conn *c, bool commit, bool release, dbs_error *err)
{
    /* Open: BEGIN was sent, or (nothing of ours pending) the server says
     * so. A begin() whose BEGIN was never sent left nothing to end. */
    bool open = c->tx_sent || (!c->begin_pending && !c->broken &&
                               c->posted.n == 0 && tx_open(c));
    c->begin_pending = false;
    c->tx_sent = false;
    c->ctx = NULL;
    int fail_code = c->tx_fail;
    char fail_state[6];
    memcpy(fail_state, c->tx_fail_state, sizeof fail_state);
    c->tx_fail = 0;
    bool reset = release && c->t->reset != DBS_RESET_ROLLBACK && c->used;
    if (!open && !reset)
        return DBS_OK;
    const char *cmd = commit ? "COMMIT" : "ROLLBACK";
    pg_flight f;
    int64_t dl;
    bool ok;
    /* A failure here sent nothing: not committed, and it says so. */
    int rc = flight_open(c, &f, &dl, &ok, err);
    if (rc != DBS_OK)
        return rc;
    int end_idx = -1, wrote_idx = -1, pos_idx = -1;
    c->commit_pos = 0;
    if (open) {
        /* The commit's position (pg_commit_pos), in the same flight: did
         * the transaction get a transaction id (only a write gives one),
         * under its own Sync so that a failure cannot skip the COMMIT;
         * then, right after the COMMIT and before its Sync (so both
         * answers leave the server in one write), the WAL insert position,
         * which covers the commit record whatever synchronous_commit says
         * (NULL on a standby, which has none and where nothing can have
         * written). Not for a transaction known to have failed, nor a
         * read-only one, nor without replicas to use it (the two
         * statements cost about 30 us of a COMMIT's round trip). */
        if (commit && c->t->commit_pos && !c->read_only && !c->opt_ro &&
            PQserverVersion(c->pg) >= 100000 &&
            PQtransactionStatus(c->pg) != PQTRANS_INERROR) {
            wrote_idx = f.n;
            q_cmd(c, &f, &ok,
                  PQserverVersion(c->pg) >= 130000
                      ? "SELECT pg_catalog.pg_current_xact_id_if_assigned() "
                        "IS NOT NULL"
                      : "SELECT pg_catalog.txid_current_if_assigned() "
                        "IS NOT NULL");
            q_sync_more(c, &f, &ok);
        }
        end_idx = f.n;
        q_cmd(c, &f, &ok, cmd);
        if (wrote_idx >= 0) {
            pos_idx = f.n;
            q_cmd(c, &f, &ok,
                  "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL "
                  "ELSE pg_catalog.pg_current_wal_insert_lsn() END");
        }
        /* With the reset, no Sync between them: it follows the COMMIT in
         * the same segment (see reset_done). */
        if (!reset)
            q_sync(c, &f, &ok);
    }
    if (reset)
        q_reset(c, &f, &ok, true);
    rc = flight_wait(c, &f, dl, ok, cmd, commit && open, err);
    /* The flight failed after the answer to COMMIT/ROLLBACK came (in the
     * reset): that answer stands; the connection is broken either way. */
    bool known = end_idx >= 0 && f.done > end_idx;
    if (rc != DBS_OK && (known || (commit && !open)))
        rc = DBS_OK;
    if (rc == DBS_OK && end_idx >= 0) {
        PGresult *r = f.res[end_idx];
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = result_err(c, r, err);
            /* The server ended the connection in answer to COMMIT (57P01
             * while waiting for a synchronous standby comes after the
             * local commit): only a refusal proves nothing was committed. */
            if (commit && rc == DBS_ECONNECT) {
                char m[sizeof err->message];
                snprintf(m, sizeof m, "%s", err ? err->message : "");
                char st[6] = "";
                if (err)
                    memcpy(st, err->sqlstate, sizeof st);
                rc = dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                              "%s: the transaction may or may not have been committed",
                              m);
                dbs__err_sqlstate(err, st);
            }
        }
        else if (commit && !strcmp(PQcmdStatus(r), "ROLLBACK") &&
                 wrote_idx >= 0 && failed(f.res[wrote_idx]))
            /* the position's own statement failed the transaction */
            rc = result_err(c, f.res[wrote_idx], err);
        else if (commit && !strcmp(PQcmdStatus(r), "ROLLBACK") &&
                 (fail_code == DBS_ERETRYABLE || fail_code == DBS_EFULL)) {
            /* a refusal, as MariaDB's after a deadlock and SQLite's after
             * a transaction it rolled back itself: dbs_transact runs the
             * unit again even if its work ignored the failure */
            rc = dbs__err(err, fail_code,
                          "postgresql: COMMIT rolled back: the transaction "
                          "had failed on an earlier statement (SQLSTATE %s, %s)",
                          fail_state, dbs_strerror(fail_code));
            dbs__err_sqlstate(err, fail_state);
        } else if (commit && !strcmp(PQcmdStatus(r), "ROLLBACK"))
            rc = dbs__err(err, DBS_ESQL,
                          "postgresql: COMMIT rolled back: the transaction "
                          "had failed on an earlier statement");
        else if (wrote_idx >= 0)
            c->commit_pos =
                commit_pos_of(f.res[wrote_idx], f.res[pos_idx]);
    }
    if (reset && !c->broken) {
        dbs_error rerr;
        bool again;
        /* A commit that succeeded stays a success: a failed reset only
         * means the connection is discarded (reset_done breaks it). */
        int rrc = reset_done(c, &f, &again, &rerr);
        if (rrc == DBS_OK && again)
            rrc = reset_again(c, dl, &rerr);
        if (rrc == DBS_OK && rc == DBS_OK && commit && fault_release_reset(c, &rerr))
            rrc = rerr.code;
        if (rrc != DBS_OK && rc == DBS_OK && !commit) {
            rc = rerr.code;
            if (err)
                *err = rerr;
        } else if (rrc != DBS_OK && rc == DBS_OK) {
            c->reset_err = rerr; /* the COMMIT's success stands: reported apart */
        }
    }
    if (reset) {
        c->used = false;
        c->native_used = false;
    }
    flight_clear(&f);
    return rc;
}

static int pg_reset_failure(void *vc, dbs_error *err)
{
    pg_conn *c = vc;
    int rc = c->reset_err.code;
    if (rc >= 0)
        return DBS_OK;
    if (err)
        *err = c->reset_err;
    c->reset_err.code = DBS_OK;
    return rc;
}

static int pg_commit(void *vc, dbs_error *err)
{
    return end_tx(vc, true, false, err);
}

static int pg_rollback(void *vc, dbs_error *err)
{
    return end_tx(vc, false, false, err);
}

static int pg_commit_release(void *vc, dbs_error *err)
{
    return end_tx(vc, true, true, err);
}

static int pg_rollback_release(void *vc, dbs_error *err)
{
    return end_tx(vc, false, true, err);
}

static uint64_t pg_commit_pos(void *vc)
{
    return ((pg_conn *)vc)->commit_pos;
}

/* At release, after commit or rollback. A transaction still open (the
 * user's own BEGIN) is rolled back. Under DBS_RESET_FULL, a connection
 * used since its last reset gets the reset, posted: written now and run by
 * the server now, its answer read by the connection's next flight. */
static int pg_reset(void *vc, enum dbs_reset_mode mode, dbs_error *err)
{
    pg_conn *c = vc;
    c->opt_ro = false;
    c->begin_sql[0] = '\0';
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
    c->begin_pending = false;
    c->tx_sent = false;
    c->escaped = false;
    c->ctx = NULL;
    bool open = c->posted.n == 0 && tx_open(c);
    bool reset = mode != DBS_RESET_ROLLBACK && c->used;
    if (!open && !reset)
        return DBS_OK;
    pg_flight f;
    int64_t dl;
    bool ok;
    int rc = flight_open(c, &f, &dl, &ok, err);
    if (rc != DBS_OK)
        return rc;
    if (open) {
        q_cmd(c, &f, &ok, "ROLLBACK");
        if (!reset) /* with the reset: one segment (see reset_done) */
            q_sync(c, &f, &ok);
    }
    if (!reset) {
        rc = flight_wait(c, &f, dl, ok, "ROLLBACK", false, err);
        flight_clear(&f);
        return rc;
    }
    q_reset(c, &f, &ok, true);
    c->used = false;
    c->native_used = false;
    cork(c, false);
    int io = ok ? flush_all(c, dl) : IO_LOST;
    if (io != IO_OK) {
        flight_clear(&f);
        return io == IO_TIMEOUT ? timed_out(c, err, "the reset", false)
                                : conn_lost(c, err, "reset");
    }
    c->posted = f;
    return DBS_OK;
}

/* ---- rows ---- */

static int pg_next(dbs_rows *hr, dbs_error *err)
{
    (void)err;
    pg_rows *r = (pg_rows *)hr;
    if (r->row + 1 >= r->nrows) {
        r->row = r->nrows;
        return 0;
    }
    r->row++;
    return 1;
}

static int pg_count_cols(dbs_rows *hr)
{
    return ((pg_rows *)hr)->ncols;
}

static const char *pg_name(dbs_rows *hr, int col)
{
    return PQfname(((pg_rows *)hr)->res, col);
}

static bool on_row(const pg_rows *r)
{
    return r->row >= 0 && r->row < r->nrows;
}

static int pg_is_null(dbs_rows *hr, int col)
{
    pg_rows *r = (pg_rows *)hr;
    return !on_row(r) || PQgetisnull(r->res, r->row, col);
}

static int64_t pg_int(dbs_rows *hr, int col)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col))
        return 0;
    const char *v = PQgetvalue(r->res, r->row, col);
    if (PQftype(r->res, col) == PG_OID_BOOL)
        return v[0] == 't';
    char *end;
    long long x = strtoll(v, &end, 10);
    Oid t = PQftype(r->res, col);
    /* a float's text may be 'Infinity', which strtoll reads as 0 */
    if (*end == '.' || *end == 'e' || *end == 'E' || t == PG_OID_FLOAT4 || t == PG_OID_FLOAT8)
        return dbs__int64_cut(dbs__strtod(v, NULL));
    return x;
}

static double pg_real(dbs_rows *hr, int col)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col))
        return 0.0;
    const char *v = PQgetvalue(r->res, r->row, col);
    if (PQftype(r->res, col) == PG_OID_BOOL)
        return v[0] == 't';
    return dbs__strtod(v, NULL);
}

static const char *pg_text(dbs_rows *hr, int col, size_t *len)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = (size_t)PQgetlength(r->res, r->row, col);
    return PQgetvalue(r->res, r->row, col);
}

static const void *pg_blob(dbs_rows *hr, int col, size_t *len)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (PQftype(r->res, col) != PG_OID_BYTEA)
        return pg_text(hr, col, len);
    size_t n = 0;
    unsigned char *b = PQunescapeBytea(
        (const unsigned char *)PQgetvalue(r->res, r->row, col), &n);
    PQfreemem(r->blob);
    r->blob = b;
    if (len)
        *len = b ? n : 0;
    /* NULL only out of memory (an empty bytea decodes to a byte of
     * room): dbs_rows_get_blob's DBS_ENOMEM, never an empty value */
    return b;
}

static int pg_col_type(dbs_rows *hr, int col)
{
    switch (PQftype(((pg_rows *)hr)->res, col)) {
    case PG_OID_INT2: case PG_OID_INT4: case PG_OID_INT8: case PG_OID_OID:
        return DBS_TYPE_INT;
    case PG_OID_FLOAT4: case PG_OID_FLOAT8: return DBS_TYPE_REAL;
    case PG_OID_NUMERIC: return DBS_TYPE_DECIMAL;
    case PG_OID_BOOL: return DBS_TYPE_BOOL;
    case PG_OID_BYTEA: return DBS_TYPE_BLOB;
    case PG_OID_TIMESTAMP: case PG_OID_TIMESTAMPTZ: return DBS_TYPE_TIMESTAMP;
    case PG_OID_UUID: return DBS_TYPE_UUID;
    case PG_OID_JSON: case PG_OID_JSONB: return DBS_TYPE_JSON;
    default: return DBS_TYPE_TEXT;
    }
}

static int pg_val_type(dbs_rows *hr, int col)
{
    return pg_is_null(hr, col) ? DBS_TYPE_NULL : pg_col_type(hr, col);
}

/* As pg_exec counts them: a SELECT changes none. */
static int64_t pg_affected(dbs_rows *hr)
{
    PGresult *r = ((pg_rows *)hr)->res;
    const char *t = PQcmdTuples(r);
    return t && *t && strncmp(PQcmdStatus(r), "SELECT", 6) != 0
               ? strtoll(t, NULL, 10)
               : 0;
}

static void pg_rows_close(dbs_rows *hr)
{
    pg_rows *r = (pg_rows *)hr;
    PQfreemem(r->blob);
    PQclear(r->res);
    free(r);
}

static const dbs__rows_ops pg_rows_ops = {
    .next = pg_next,
    .count_cols = pg_count_cols,
    .name = pg_name,
    .is_null = pg_is_null,
    .get_int = pg_int,
    .get_real = pg_real,
    .get_text = pg_text,
    .get_blob = pg_blob,
    .close = pg_rows_close,
    .col_type = pg_col_type,
    .val_type = pg_val_type,
    .affected = pg_affected,
};

/* ---- the non-blocking path (a_*) ---- */

/* What each command of a unit's flight is, read back in the same order. */
enum {
    A_SYNC,   /* a Sync between segments */
    A_IGNORE, /* an owed or deferred DEALLOCATE: its outcome changes nothing */
    A_PARSE,  /* arg: the statement; Parse of a statement new to the cache */
    A_STEP,   /* BEGIN, the context: the unit fails if one does */
    A_GUARD,  /* the check that the reset before left nothing (top comment) */
    A_STMT,   /* arg: the statement */
    A_WROTE,  /* did the transaction write (commit_pos) */
    A_COMMIT,
    A_POS,    /* the commit's WAL position */
    A_RESET,  /* arg: its index in rf */
    A_RSYNC,  /* the Sync that ends the reset */
};

typedef struct pg_aitem {
    unsigned char kind;
    int arg;
} pg_aitem;

typedef struct pg_aflight {
    struct pg_aflight *next;
    dbs__aunit *u;      /* NULL: a reset of its own, or handed back */
    pg_aitem *it;
    int n, cap, pos;    /* items, room, the next to read */
    PGresult *cur;      /* the first result of it[pos] */
    int64_t sent_ns;    /* when a_send queued it */
    char (*names)[24];  /* per statement: its cached name, "" none */
    PGresult *wrote, *commit, *lsn;
    bool ro;            /* the unit is read-only */
    bool failed;        /* u->rc and u->err hold the unit's first error */
    bool own_fail;      /* ... one of dbscope's own, which the server never
                           saw (no memory to keep rows): its transaction
                           went on to its COMMIT */
    bool commit_queued; /* its COMMIT is written or in libpq's buffer */
    bool escaped;       /* a statement of the unit ended its transaction */
    bool has_pos;       /* the commit position follows the COMMIT */
    bool reset;         /* rf is a reset whose answer is unread */
    bool full;          /* ... run from the text */
    int mark;           /* rf index of the marker, -1 none */
    uint64_t epoch;     /* the marker's value */
    pg_flight rf;
} pg_aflight;

/* The last command of every reset the non-blocking path queues: it sets a
 * session setting to a number of the connection's own (the reset's
 * epoch), after every reset command and in their implicit transaction,
 * so that the setting holds that number only when the whole reset ran
 * (a failed or skipped command aborts its segment, marker included). */
static const char pg_mark_sql[] =
    "SELECT pg_catalog.set_config('dbscope.reset', $1, false)";

/* The guard at the start of a unit queued behind a reset whose answer is
 * unread: an error (invalid integer text, 22P02), so that nothing of the
 * unit runs, unless the reset before it ran whole ($1: its epoch) and,
 * when it ran without DISCARD TEMP ($2), the backend has no temporary
 * schema. The error's argument is not a constant, so the planner cannot
 * raise it ahead of the test. Every operator is pg_catalog's by name (IS
 * DISTINCT FROM would take the = that the session's search_path finds
 * first, which a session may have put ahead of pg_catalog). */
static const char pg_guard_sql[] =
    "SELECT CASE WHEN NOT COALESCE(pg_catalog.current_setting('dbscope.reset', true) "
    "OPERATOR(pg_catalog.=) $1, false) "
    "OR ($2::pg_catalog.bool AND pg_catalog.pg_my_temp_schema() "
    "OPERATOR(pg_catalog.<>) 0::pg_catalog.oid) "
    "OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) "
    "THEN pg_catalog.int4('dbscope guard: reset ' OPERATOR(pg_catalog.||) "
    "COALESCE(pg_catalog.current_setting('dbscope.reset', true), '-')) END";

static pg_aflight *af_new(size_t nstmts)
{
    pg_aflight *af = calloc(1, sizeof *af);
    if (!af)
        return NULL;
    af->cap = 48 + PG_MAXFOREIGN + 6 * (int)nstmts;
    af->it = malloc((size_t)af->cap * sizeof *af->it);
    af->names = nstmts ? calloc(nstmts, sizeof *af->names) : NULL;
    if (!af->it || (nstmts && !af->names)) {
        free(af->it);
        free(af->names);
        free(af);
        return NULL;
    }
    af->mark = -1;
    flight_init(&af->rf);
    return af;
}

static void af_free(pg_aflight *af)
{
    PQclear(af->cur);
    PQclear(af->wrote);
    PQclear(af->commit);
    PQclear(af->lsn);
    flight_clear(&af->rf);
    free(af->it);
    free(af->names);
    free(af);
}

static void af_push(pg_aflight *af, bool *ok, int kind, int arg)
{
    if (!*ok)
        return;
    if (af->n >= af->cap) {
        *ok = false; /* sized for the most a unit queues: not reached */
        return;
    }
    af->it[af->n].kind = (unsigned char)kind;
    af->it[af->n++].arg = arg;
}

static void a_cmd(pg_conn *c, pg_aflight *af, bool *ok, int kind, int arg, const char *sql)
{
    if (!*ok)
        return;
    *ok = PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
    af_push(af, ok, kind, arg);
}

static void a_sync(pg_conn *c, pg_aflight *af, bool *ok, int kind)
{
    if (!*ok)
        return;
    *ok = PQpipelineSync(c->pg) == 1;
    af_push(af, ok, kind, 0);
}

/* Parses the marker as a named statement (dbs_m), once per connection:
 * then it costs a Bind/Execute, no parsing. Under a Sync of its own, its
 * failure ignored: one that is there already stays; one that is missing
 * when bound fails its segment (a reset then runs again, a unit comes
 * back DBS_ERETRYABLE) and it is parsed anew. */
static void a_prepare(pg_conn *c, pg_aflight *af, bool *ok)
{
    if (c->a_named || !*ok)
        return;
    *ok = PQsendPrepare(c->pg, "dbs_m", pg_mark_sql, 1, NULL) == 1;
    af_push(af, ok, A_IGNORE, 0);
    a_sync(c, af, ok, A_SYNC);
    c->a_named = true;
}

/* The marker value of the last reset queued: its number, and a random
 * part drawn for it. A session could read the marker of the reset before
 * it and set the setting itself, then make its own reset fail part way
 * (deallocating one of its named statements aborts the segment): a
 * number alone would then let the guard pass on a reset that did not run.
 * The random part is sent only with the reset, after the session's last
 * statement, so no session can know it. */
static void a_marker(const pg_conn *c, char *out, size_t n)
{
    snprintf(out, n, "%llu-%016llx", (unsigned long long)c->a_epoch,
             (unsigned long long)c->a_nonce);
}

/* Queues af's reset (named, or from the text with every command), its
 * marker and a Sync. */
static void a_reset(pg_conn *c, pg_aflight *af, bool *ok, bool named)
{
    pg_flight *f = &af->rf;
    flight_init(f);
    a_prepare(c, af, ok);
    q_reset_body(c, f, ok, named);
    char ep[48];
    af->epoch = ++c->a_epoch;
    c->a_nonce = dbs__random();
    a_marker(c, ep, sizeof ep);
    const char *pv[1] = {ep};
    if (*ok && f->n < PG_MAXQ) {
        *ok = PQsendQueryPrepared(c->pg, "dbs_m", 1, pv, NULL, NULL, 0) == 1;
        af->mark = f->n;
        f->res[f->n] = NULL;
        f->kind[f->n++] = Q_CMD;
    } else {
        *ok = false;
    }
    for (int i = 0; i < f->n; i++)
        af_push(af, ok, A_RESET, i);
    a_sync(c, af, ok, A_RSYNC);
    af->reset = true;
    af->full = !named;
    c->a_resets++;
    if (af->full)
        c->a_full++;
    c->a_notemp = !f->reset_temp;
}

static void a_link(pg_conn *c, pg_aflight *af)
{
    af->next = NULL;
    if (c->a_tail)
        c->a_tail->next = af;
    else
        c->a_head = af;
    c->a_tail = af;
}

/* Writes what the socket takes. false: the connection is lost. */
static bool a_flush(pg_conn *c)
{
    int f = PQflush(c->pg);
    c->a_outq = f > 0;
    return f >= 0;
}

/* A reset queued alone (the reset again, from the text). */
static void a_reset_alone(pg_conn *c)
{
    pg_aflight *af = af_new(0);
    if (!af) {
        c->broken = true; /* cannot prove the next user a clean session */
        return;
    }
    c->n_foreign = 0; /* its reconcile query lists them anew */
    c->dealloc_all = false;
    bool ok = true;
    cork(c, true);
    a_reset(c, af, &ok, false);
    cork(c, false);
    a_link(c, af);
    if (!ok)
        c->a_torn = c->broken = true; /* its answers would never all come */
}

/* How u's transaction begins: BEGIN with its options, READ ONLY for a
 * read-only unit. */
static int a_begin_sql(const dbs__aunit *u, char *out, size_t n, bool *ro, dbs_error *err)
{
    *ro = u->read_only || (u->opt && u->opt->read_only);
    return tx_begin_text(u->opt, *ro, out, n, err);
}

/* A blocking session's reset, written at its release and not read yet
 * (pg_reset): a flight of its own, read first. */
static pg_aflight *a_posted(pg_conn *c)
{
    pg_aflight *af = af_new(0);
    if (!af)
        return NULL;
    af->rf = c->posted;
    flight_init(&c->posted);
    bool ok = true;
    for (int i = 0; i < af->rf.n; i++) {
        if (af->rf.kind[i] == Q_SYNC)
            af_push(af, &ok, i == af->rf.n - 1 ? A_RSYNC : A_SYNC, 0);
        else
            af_push(af, &ok, A_RESET, i);
    }
    af->reset = true;
    af->epoch = c->a_epoch + 1; /* statements parsed after it are newer */
    c->a_resets++;
    return af;
}

static int pg_a_fd(void *vc)
{
    return PQsocket(((pg_conn *)vc)->pg);
}

static int pg_a_send(void *vc, dbs__aunit *u, dbs_error *err)
{
    pg_conn *c = vc;
    if (pg_is_broken(c))
        return dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
    if (c->a_spent)
        return dbs__err(err, DBS_ECONNECT,
                        "postgresql: a cancel request was sent on this connection: it "
                        "takes no more units and is discarded once its flight is read");
    if (u->n == 0 || !u->stmts)
        return dbs__err(err, DBS_EMISUSE, "postgresql: a unit with no statement");
    char bsql[96];
    bool ro = false;
    int rc = a_begin_sql(u, bsql, sizeof bsql, &ro, err);
    if (rc != DBS_OK)
        return rc;
    if (atomic_load_explicit(&dbs__fault.fail_begins, memory_order_relaxed) > 0 &&
        atomic_fetch_sub(&dbs__fault.fail_begins, 1) > 0)
        snprintf(bsql, sizeof bsql, "DO $$BEGIN RAISE query_canceled; END$$");
    /* Every statement's parameters are checked, and the memory the
     * largest needs found, before anything is queued: the unit fails
     * alone, the connection goes on. */
    size_t most = 0;
    for (size_t i = 0; i < u->n; i++) {
        if (!u->stmts[i].sql)
            return dbs__err(err, DBS_EMISUSE, "postgresql: statement %zu has no SQL", i);
        size_t need;
        rc = params_check(u->stmts[i].sql, u->stmts[i].params, u->stmts[i].n, &need, err);
        if (rc != DBS_OK)
            return rc;
        if (need > most)
            most = need;
    }
    pg_params pp;
    if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF) {
        /* After native(): the caller may have left anything behind. */
        if (PQsetnonblocking(c->pg, 1) != 0 || PQisBusy(c->pg) ||
            !PQenterPipelineMode(c->pg))
            return conn_lost(c, err, "pipeline start");
    }
    const bool full = c->t->reset != DBS_RESET_ROLLBACK;
    pg_aflight *af = af_new(u->n);
    pg_aflight *posted = NULL, *after = NULL;
    char (*evicted)[24] = calloc(u->n, sizeof *evicted);
    bool *parse = calloc(u->n, sizeof *parse);
    /* each statement's in turn; never NULL, so params_fill's block is
     * there whatever a statement's count */
    char *scratch = malloc(most ? most : 1);
    bool oom = !af || !evicted || !parse || !scratch;
    if (!oom && atomic_load_explicit(&dbs__fault.fail_send_allocs, memory_order_relaxed) > 0 &&
        atomic_fetch_sub(&dbs__fault.fail_send_allocs, 1) > 0)
        oom = true; /* a test's stand-in for malloc failing here */
    if (!oom && c->posted.n > 0) {
        if (full) {
            after = af_new(0);
            oom = !after;
        }
        if (!oom) { /* last: it takes c->posted */
            posted = a_posted(c);
            oom = !posted;
        }
    }
    if (oom) {
        if (af)
            af_free(af);
        if (after)
            af_free(after);
        free(evicted);
        free(parse);
        free(scratch);
        return dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
    }
    bool ok = true;
    cork(c, true);
    if (posted) {
        a_link(c, posted);
        if (after) {
            /* the blocking reset sets no marker; this one sets the
             * marker the guard below checks */
            a_reset(c, after, &ok, true);
            a_link(c, after);
        }
    }
    af->ro = ro;
    /* The DEALLOCATEs owed from the last reset, under a Sync of their own. */
    if (c->dealloc_all) {
        a_cmd(c, af, &ok, A_IGNORE, 0, "DEALLOCATE ALL");
        a_sync(c, af, &ok, A_SYNC);
        cache_clear(c);
        c->reset_stmts = false;
        c->a_named = false;
    } else if (c->n_foreign > 0) {
        for (int i = 0; i < c->n_foreign; i++)
            a_cmd(c, af, &ok, A_IGNORE, 0, c->foreign[i]);
        a_sync(c, af, &ok, A_SYNC);
    }
    c->dealloc_all = false;
    c->n_foreign = 0;
    /* Statements new to the cache are parsed in the transaction, right
     * before their Bind: a Parse resolves names, and ahead of the unit's
     * BEGIN it would resolve them before the statements in front of it ran
     * (a temporary table made by the unit that shadows a real one: the
     * rows meant for it went into the real table). A Parse that fails or
     * that an earlier failure skips leaves no statement on the server:
     * until its answer is read (a_item), a later unit runs that SQL
     * unnamed. Evicted ones are deallocated after the unit, which may
     * still use them. */
    const uint64_t unit_no = ++c->a_units;
    size_t n_evicted = 0;
    for (size_t i = 0; i < u->n && ok; i++) {
        bool fresh = false;
        params_fill(u->stmts[i].params, u->stmts[i].n, &pp, scratch);
        /* the entry owns its SQL copy (see cache_get's pragma) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
#endif
        pg_stmt *e = cache_get(c, u->stmts[i].sql, pp.sig, &fresh, evicted[n_evicted],
                               sizeof evicted[n_evicted]);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
        if (evicted[n_evicted][0])
            n_evicted++;
        if (!e)
            continue;
        if (fresh)
            e->parsing = unit_no;
        else if (e->parsing && e->parsing != unit_no)
            continue; /* another unit's Parse, not answered yet */
        parse[i] = fresh;
        snprintf(af->names[i], sizeof af->names[i], "%s", e->name);
    }
    /* The transaction: BEGIN, the guard, the context, the statements. */
    const bool guard = full && c->a_resets > 0;
    if (full) /* before the COMMIT's segment, which the reset shares */
        a_prepare(c, af, &ok);
    a_cmd(c, af, &ok, A_STEP, 0, bsql);
    bool snapshot = false;
    if (guard && ok) {
        char ep[48];
        a_marker(c, ep, sizeof ep);
        const char *gv[2] = {ep, c->a_notemp ? "t" : "f"};
        /* from its text, unnamed: a named guard is a statement the session
         * before could have swapped for one that always passes */
        ok = PQsendQueryParams(c->pg, pg_guard_sql, 2, NULL, gv, NULL, NULL, 0) == 1;
        af_push(af, &ok, A_GUARD, 0);
        snapshot = true;
    }
    const dbs_context *ctx = u->ctx;
    const char *cv[3] = {ctx ? ctx->request_id : NULL, ctx ? ctx->user_id : NULL,
                         ctx ? ctx->tenant_id : NULL};
    for (int i = 0; i < 3 && ok; i++) {
        if (!c->t->ctx_setting[i])
            continue;
        const char *pv[2] = {c->t->ctx_setting[i], cv[i] ? cv[i] : ""};
        ok = PQsendQueryParams(c->pg, "SELECT pg_catalog.set_config($1, $2, true)", 2, NULL,
                               pv, NULL, NULL, 0) == 1;
        af_push(af, &ok, A_STEP, 0);
        snapshot = true;
    }
    /* A read-only transaction takes its first snapshot at once, so that no
     * statement of the unit can make it read-write (see run()). */
    if (ro && !snapshot)
        a_cmd(c, af, &ok, A_STEP, 0, "SELECT");
    for (size_t i = 0; i < u->n && ok; i++) {
        const dbs__astmt *st = &u->stmts[i];
        params_fill(st->params, st->n, &pp, scratch);
        int np = (int)st->n;
        if (parse[i]) {
            ok = ok && PQsendPrepare(c->pg, af->names[i], st->sql, np, np ? pp.types : NULL) == 1;
            af_push(af, &ok, A_PARSE, (int)i);
        }
        if (!ok)
            break;
        if (af->names[i][0])
            ok = PQsendQueryPrepared(c->pg, af->names[i], np, np ? pp.vals : NULL,
                                     np ? pp.lens : NULL, np ? pp.fmts : NULL, 0) == 1;
        else
            ok = PQsendQueryParams(c->pg, st->sql, np, np ? pp.types : NULL,
                                   np ? pp.vals : NULL, np ? pp.lens : NULL,
                                   np ? pp.fmts : NULL, 0) == 1;
        af_push(af, &ok, A_STMT, (int)i);
    }
    /* The commit's position, as end_tx reads it. */
    bool pos = c->t->commit_pos && !ro && PQserverVersion(c->pg) >= 100000;
    if (pos)
        a_cmd(c, af, &ok, A_WROTE, 0,
              PQserverVersion(c->pg) >= 130000
                  ? "SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL"
                  : "SELECT pg_catalog.txid_current_if_assigned() IS NOT NULL");
    a_sync(c, af, &ok, A_SYNC);
    /* COMMIT in a segment of its own but for the reset that follows it
     * (no Sync between them, as end_tx does): after a failed statement it
     * ends the aborted transaction (as ROLLBACK), so the reset and the
     * next unit start clean. A COMMIT that fails makes the server skip
     * the reset: reset_done then has it run again in full. */
    a_cmd(c, af, &ok, A_COMMIT, 0, "COMMIT");
    af->commit_queued = ok;
    if (ok && atomic_load_explicit(&dbs__fault.fail_sends, memory_order_relaxed) > 0 &&
        atomic_fetch_sub(&dbs__fault.fail_sends, 1) > 0)
        ok = false; /* a test's stand-in for libpq out of memory here */
    af->has_pos = pos;
    if (pos)
        a_cmd(c, af, &ok, A_POS, 0,
              "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL "
              "ELSE pg_catalog.pg_current_wal_insert_lsn() END");
    if (full)
        a_reset(c, af, &ok, true);
    else
        a_sync(c, af, &ok, A_SYNC);
    if (n_evicted > 0) {
        for (size_t i = 0; i < n_evicted; i++) {
            char d[48];
            snprintf(d, sizeof d, "DEALLOCATE %s", evicted[i]);
            a_cmd(c, af, &ok, A_IGNORE, 0, d);
        }
        a_sync(c, af, &ok, A_SYNC);
    }
    free(evicted);
    free(parse);
    free(scratch);
    cork(c, false);
    if (!ok && !af->commit_queued) {
        /* What was queued is read in order and dropped; u is not part of
         * it. The connection cannot be trusted with more. */
        a_link(c, af);
        c->broken = true;
        return conn_lost(c, err, "sending a unit");
    }
    /* !ok past the COMMIT: u is no longer untouched (the COMMIT leaves
     * with whatever is flushed next, PQfinish's Terminate included), so
     * it stays in flight and ends as the connection's loss: the COMMIT's
     * outcome unknown (a_fail_all). */
    if (!ok)
        c->a_torn = c->broken = true;
    u->rc = DBS_OK;
    /* The COMMIT is queued: from here it may go out whatever happens to
     * the loop (what libpq holds is written, and PQfinish flushes it too),
     * so a unit abandoned before its outcome is read may have committed.
     * Its outcome, once read, says what it really was (a_finish). */
    u->commit_sent = af->commit_queued;
    u->commit_pos = 0;
    u->err.code = DBS_OK;
    u->err.sqlstate[0] = '\0';
    u->err.message[0] = '\0';
    for (size_t i = 0; i < u->n; i++) {
        u->stmts[i].rows = NULL;
        u->stmts[i].affected = -1;
    }
    u->next = NULL;
    af->u = u;
    af->sent_ns = dbs__now_ns();
    a_link(c, af);
    if (!a_flush(c))
        c->broken = true; /* a_step hands the units back */
    return DBS_OK;
}

/* Records r, a failed result of one of af's commands, as its unit's error
 * (the first one stands). */
static void a_fail(pg_conn *c, pg_aflight *af, const pg_aitem *it, const PGresult *r)
{
    dbs__aunit *u = af->u;
    if (!u || af->failed || !failed(r))
        return;
    /* a read-only unit refused a write: the session is not a standby's */
    bool ro = c->read_only;
    c->read_only = c->read_only || af->ro;
    int code = result_err(c, r, &u->err);
    c->read_only = ro;
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (code == DBS_ECONNECT && st)
        c->a_known = true; /* the server ended the session at this command */
    else if (it->kind == A_GUARD && st && (!strcmp(st, "22P02") || !strcmp(st, "26000"))) {
        if (!strcmp(st, "26000"))
            c->a_named = false; /* deallocated: parsed again */
        code = dbs__err(&u->err, DBS_ERETRYABLE,
                        "postgresql: the unit did not run: the connection's previous unit "
                        "left session state its reset does not undo by name (a temporary "
                        "schema), or that reset did not run whole; the connection is reset "
                        "in full first: run the unit again");
    } else if (st && !strcmp(st, "57014") && c->a_cancel) {
        char m[sizeof u->err.message];
        snprintf(m, sizeof m, "%s", u->err.message);
        code = dbs__err(&u->err, DBS_ECANCELED, "%s (cancelled: the unit was rolled back)", m);
    } else if (it->kind == A_STMT && st && !strcmp(st, "26000") &&
               af->names[it->arg][0] && names_stmt(r, af->names[it->arg])) {
        /* an earlier unit deallocated the statement dbscope made for this
         * one (DEALLOCATE ALL, DISCARD ALL): nothing of this unit ran */
        cache_clear(c);
        code = dbs__err(&u->err, DBS_ERETRYABLE,
                        "postgresql: the prepared statement dbscope made for statement %d "
                        "was deallocated by an earlier unit on the connection: nothing of "
                        "this unit ran; run it again",
                        it->arg);
    }
    if (st)
        dbs__err_sqlstate(&u->err, st);
    u->rc = code;
    af->failed = true;
}

/* The unit's outcome, once its COMMIT's Sync came back. */
static void a_finish(pg_conn *c, pg_aflight *af)
{
    dbs__aunit *u = af->u;
    PGresult *r = af->commit;
    if (af->own_fail && r && PQresultStatus(r) == PGRES_COMMAND_OK &&
        !strcmp(PQcmdStatus(r), "COMMIT")) {
        /* The failure was dbscope's own (no memory to keep a statement's
         * rows), which the server never saw: its COMMIT, already on the
         * wire, committed. Never "failed" then, which a caller may run
         * again: the rows are lost, the writes are not. (After a failure
         * the server reported, "COMMIT" means no transaction was left to
         * end: a BEGIN that failed, a cancel landing on it, made the
         * server skip the unit's statements.) */
        char m[sizeof u->err.message];
        snprintf(m, sizeof m, "%s", u->err.message);
        u->commit_sent = true;
        u->rc = dbs__err(&u->err, DBS_ECOMMIT_UNKNOWN,
                         "%s; the transaction committed all the same: do not run it again", m);
    } else if (af->failed && (!af->own_fail || (r && !failed(r)))) {
        /* the COMMIT ended a failed transaction: nothing of it committed,
         * unless a statement of its own ended it before. (After a failure
         * of dbscope's own, "ROLLBACK": the server failed a statement
         * behind it. A COMMIT that got no answer, or the server's end of
         * the session in answer, may have committed as any other: below.) */
        u->commit_sent = af->escaped;
    } else if (r && PQresultStatus(r) == PGRES_COMMAND_OK &&
               !strcmp(PQcmdStatus(r), "COMMIT")) {
        u->rc = DBS_OK;
        u->commit_sent = true;
        if (af->wrote)
            u->commit_pos = commit_pos_of(af->wrote, af->lsn);
    } else if (r && PQresultStatus(r) == PGRES_COMMAND_OK) {
        u->commit_sent = af->escaped;
        u->rc = dbs__err(&u->err, DBS_ESQL,
                         "postgresql: COMMIT rolled back: the transaction had failed");
    } else if (failed(r)) {
        int code = result_err(c, r, &u->err);
        u->commit_sent = code == DBS_ECONNECT || af->escaped;
        if (code == DBS_ECONNECT) {
            c->a_known = true;
            char m[sizeof u->err.message];
            snprintf(m, sizeof m, "%s", u->err.message);
            code = dbs__err(&u->err, DBS_ECOMMIT_UNKNOWN,
                            "%s: the transaction may or may not have been committed", m);
        }
        /* else a refusal (serialization failure, deferred constraint):
         * nothing committed */
        u->rc = code;
    } else {
        u->commit_sent = true;
        u->rc = dbs__err(&u->err, DBS_ECOMMIT_UNKNOWN,
                         "postgresql: no answer to COMMIT: the transaction may or may not "
                         "have been committed");
    }
    if (u->rc != DBS_OK) /* rows of a unit that did not commit are not its */
        for (size_t i = 0; i < u->n; i++) {
            if (u->stmts[i].rows)
                u->stmts[i].rows->ops->close(u->stmts[i].rows);
            u->stmts[i].rows = NULL;
            u->stmts[i].affected = -1;
        }
}

/* The answer to a reset came back: as the blocking release reads it
 * (reset_done), and when it says the reset must run again in full, that
 * reset is queued now, unless one already is (behind this flight). */
static void a_reset_read(pg_conn *c, pg_aflight *af)
{
    pg_flight *f = &af->rf;
    af->reset = false;
    c->a_resets--;
    if (af->full)
        c->a_full--;
    bool again = false, cancelled = false;
    for (int i = 0; i < f->n; i++)
        if (failed(f->res[i])) {
            const char *st = PQresultErrorField(f->res[i], PG_DIAG_SQLSTATE);
            cancelled = cancelled || (st && !strcmp(st, "57014"));
        }
    if (cancelled) {
        again = true; /* a cancel reached the reset: it did not finish */
    } else {
        dbs_error e;
        c->reconcile_min = af->epoch ? af->epoch : UINT64_MAX;
        int rc = reset_done(c, f, &again, &e);
        c->reconcile_min = UINT64_MAX;
        if (rc == DBS_OK && fault_release_reset(c, &e))
            rc = e.code;
        if (rc != DBS_OK) {
            /* its unit was handed back: the loop reports it */
            if (c->reset_err.code >= 0)
                c->reset_err = e;
            /* broken (reset_done says so): the units behind fail their
             * guard, and the connection goes once they are read */
            if (c->t->notice)
                c->t->notice(c->t->notice_arg, e.message);
            return;
        }
        if (af->mark >= 0 && (!f->res[af->mark] ||
                              PQresultStatus(f->res[af->mark]) != PGRES_TUPLES_OK)) {
            again = true;
            if (failed(f->res[af->mark]))
                c->a_named = false; /* dbs_m may be gone: parsed again */
        }
    }
    c->used = false;
    c->native_used = false;
    if (again && c->a_full == 0 && !c->a_spent && !c->broken)
        a_reset_alone(c);
}

static void a_hand(dbs__aunit ***tail, int *n, dbs__aunit *u)
{
    u->next = NULL;
    **tail = u;
    *tail = &u->next;
    (*n)++;
}

/* Takes r (the first result of af's item it, or NULL). */
static void a_item(pg_conn *c, pg_aflight *af, const pg_aitem *it, PGresult *r,
                   dbs__aunit ***tail, int *n)
{
    dbs__aunit *u = af->u;
    switch (it->kind) {
    case A_PARSE: {
        /* no statement of that name on the server unless it succeeded */
        bool made = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        for (int k = 0; k < c->cache_n; k++)
            if (c->cache[k].sql && !strcmp(c->cache[k].name, af->names[it->arg])) {
                c->cache[k].parsing = 0;
                if (!made) {
                    free(c->cache[k].sql);
                    c->cache[k].sql = NULL;
                }
            }
        if (!made)
            a_fail(c, af, it, r);
        break;
    }
    case A_STEP:
    case A_GUARD:
        a_fail(c, af, it, r);
        break;
    case A_STMT:
        if (failed(r)) {
            a_fail(c, af, it, r);
            break;
        }
        if (!r || !u || af->failed)
            break;
        {
            ExecStatusType es = PQresultStatus(r);
            const char *tag = PQcmdStatus(r);
            /* the server ended the transaction dbscope began (COMMIT,
             * ROLLBACK sent as SQL): something may have committed */
            if (!strncmp(tag, "COMMIT", 6) || !strncmp(tag, "ROLLBACK", 8) ||
                !strncmp(tag, "PREPARE TRANSACTION", 19))
                af->escaped = true;
            if (!strncmp(tag, "DEALLOCATE", 10) || !strncmp(tag, "DISCARD", 7)) {
                cache_clear(c);
                c->a_named = false;
            }
            dbs__astmt *st = &u->stmts[it->arg];
            const char *t = PQcmdTuples(r);
            st->affected = t && *t && strncmp(tag, "SELECT", 6) != 0 ? strtoll(t, NULL, 10) : 0;
            if (es == PGRES_TUPLES_OK) {
                pg_rows *pr =
                    atomic_load_explicit(&dbs__fault.fail_row_keeps, memory_order_relaxed) > 0 &&
                            atomic_fetch_sub(&dbs__fault.fail_row_keeps, 1) > 0
                        ? NULL
                        : calloc(1, sizeof *pr);
                if (!pr) {
                    u->rc = dbs__err(&u->err, DBS_ENOMEM, "postgresql: out of memory");
                    af->failed = true;
                    af->own_fail = true;
                    break;
                }
                pr->base.ops = &pg_rows_ops;
                pr->res = r;
                pr->row = -1;
                pr->nrows = PQntuples(r);
                pr->ncols = PQnfields(r);
                if (st->rows)
                    st->rows->ops->close(st->rows);
                st->rows = &pr->base;
                r = NULL; /* the rows' */
            }
        }
        break;
    case A_WROTE:
        if (failed(r))
            a_fail(c, af, it, r);
        else if (!af->wrote) {
            af->wrote = r;
            r = NULL;
        }
        break;
    case A_COMMIT:
    case A_POS:
        if (it->kind == A_COMMIT && !af->commit) {
            af->commit = r;
            r = NULL;
        } else if (it->kind == A_POS && !af->lsn) {
            af->lsn = r;
            r = NULL;
        }
        /* the outcome is known: handed back before the reset's answer */
        if (u && (it->kind == A_POS || !af->has_pos)) {
            a_finish(c, af);
            af->u = NULL;
            a_hand(tail, n, u);
        }
        break;
    case A_RESET:
        if (it->arg >= 0 && it->arg < af->rf.n && !af->rf.res[it->arg]) {
            af->rf.res[it->arg] = r;
            r = NULL;
        }
        break;
    case A_RSYNC:
        a_reset_read(c, af);
        break;
    default: /* A_SYNC, A_IGNORE */
        break;
    }
    PQclear(r);
}

enum { A_OK, A_LOST };

/* The connection failed at item it: the server's own reason, when r is an
 * error it sent (a SQLSTATE: 57P01 after pg_terminate_backend ...) for a
 * command before the unit's COMMIT, becomes the unit's error; libpq's
 * account of the loss has none, and a COMMIT's outcome stays unknown
 * (a_fail_all). */
static void a_lost_reason(pg_conn *c, pg_aflight *af, const pg_aitem *it, const PGresult *r)
{
    if (!failed(r) || !PQresultErrorField(r, PG_DIAG_SQLSTATE))
        return;
    c->a_known = true; /* the server stopped at it: nothing after ran */
    if (it->kind != A_COMMIT && it->kind != A_POS && !af->commit)
        a_fail(c, af, it, r);
}

/* Reads every result libpq has whole, without waiting. */
static int a_read(pg_conn *c, dbs__aunit ***tail, int *n)
{
    while (c->a_head) {
        pg_aflight *af = c->a_head;
        if (af->pos >= af->n) {
            c->a_head = af->next;
            if (!c->a_head)
                c->a_tail = NULL;
            af_free(af);
            continue;
        }
        if (PQisBusy(c->pg))
            return A_OK;
        const pg_aitem *it = &af->it[af->pos];
        PGresult *r = PQgetResult(c->pg);
        bool sync = it->kind == A_SYNC || it->kind == A_RSYNC;
        if (sync) {
            if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
                /* out of step with the server, or the connection failed */
                a_lost_reason(c, af, it, r);
                PQclear(r);
                return A_LOST;
            }
            PQclear(r);
            c->a_results++;
            c->a_read_ns = dbs__now_ns();
            a_item(c, af, it, NULL, tail, n);
        } else if (r) {
            if (!af->cur)
                af->cur = r;
            else
                PQclear(r);
            if (PQstatus(c->pg) != CONNECTION_OK) {
                PGresult *cur = af->cur;
                af->cur = NULL;
                a_lost_reason(c, af, it, cur);
                PQclear(cur);
                return A_LOST;
            }
            continue;
        } else {
            PGresult *cur = af->cur;
            af->cur = NULL;
            c->a_results++;
            /* A statement's duration in the pipeline: from the answer
             * before it on this connection (or its unit's send, if later)
             * to its own, as this thread read them, its Parse's added (a
             * session's dbs_query covers both too). The server runs one
             * command at a time, so that is its run and its answer's way
             * back, not its wait behind the commands ahead; a loop slow to
             * read lengthens it. A statement that failed in its Parse ran
             * as far as a session's would have; one skipped after an
             * earlier failure (PGRES_PIPELINE_ABORTED) never ran: none. */
            int64_t now = dbs__now_ns();
            if ((it->kind == A_STMT || it->kind == A_PARSE) && af->u && cur &&
                PQresultStatus(cur) != PGRES_PIPELINE_ABORTED) {
                int64_t from = c->a_read_ns > af->sent_ns ? c->a_read_ns : af->sent_ns;
                int64_t *op = &af->u->stmts[it->arg].op_us;
                *op = (*op > 0 ? *op : 0) + (now > from ? (now - from) / 1000 : 0);
            }
            c->a_read_ns = now;
            a_item(c, af, it, cur, tail, n);
        }
        af->pos++;
    }
    return A_OK;
}

/* The connection is lost: every unit still in flight is handed back. One
 * whose COMMIT went out and got no answer may have committed, unless the
 * server said it ended the session at an earlier command (a_known): it
 * runs commands in order, so none after that one ran. */
static void a_fail_all(pg_conn *c, dbs__aunit ***tail, int *n)
{
    dbs_error lost;
    conn_lost(c, &lost, "a unit's flight");
    pg_aflight *af = c->a_head, *head = af;
    c->a_head = c->a_tail = NULL;
    c->a_resets = c->a_full = 0;
    while (af) {
        pg_aflight *next = af->next;
        dbs__aunit *u = af->u;
        if (u) {
            PGresult *r = af->commit;
            bool committed = r && PQresultStatus(r) == PGRES_COMMAND_OK &&
                             !strcmp(PQcmdStatus(r), "COMMIT");
            if (af->own_fail && committed) {
                /* dbscope's own failure (as in a_finish): it committed */
                char m[sizeof u->err.message];
                snprintf(m, sizeof m, "%s", u->err.message);
                u->commit_sent = true;
                u->rc = dbs__err(&u->err, DBS_ECOMMIT_UNKNOWN,
                                 "%s; the transaction committed all the same: do not run it "
                                 "again", m);
            } else if (af->failed && (!af->own_fail || (r && !failed(r)))) {
                /* a failure the server saw: its COMMIT rolls back (after
                 * dbscope's own, one whose COMMIT got no answer, or an
                 * error the loss followed, may have committed: below) */
                u->commit_sent = af->escaped;
            } else if (committed) {
                u->rc = DBS_OK; /* the answer came; its Sync's did not */
                u->commit_sent = true;
                if (af->wrote)
                    u->commit_pos = commit_pos_of(af->wrote, af->lsn);
            } else if (af->commit_queued && (!c->a_known || af == head)) {
                /* (the server's stop at the head's own command before its
                 * COMMIT made it failed, above) */
                u->commit_sent = true;
                u->err = lost;
                u->rc = dbs__err(&u->err, DBS_ECOMMIT_UNKNOWN,
                                 "%s: the transaction may or may not have been committed",
                                 lost.message);
            } else {
                u->commit_sent = af->escaped;
                u->err = lost;
                u->rc = DBS_ECONNECT;
            }
            if (u->rc != DBS_OK)
                for (size_t i = 0; i < u->n; i++) {
                    if (u->stmts[i].rows)
                        u->stmts[i].rows->ops->close(u->stmts[i].rows);
                    u->stmts[i].rows = NULL;
                    u->stmts[i].affected = -1;
                }
            af->u = NULL;
            a_hand(tail, n, u);
        }
        af_free(af);
        af = next;
    }
    c->broken = true;
}

static int pg_a_step(void *vc, short revents, dbs__aunit **done, short *want)
{
    pg_conn *c = vc;
    dbs__aunit *head = NULL, **tail = &head;
    int n = 0;
    if (c->a_head) {
        bool lost = c->a_torn || !a_flush(c);
        if (!lost && (revents & (POLLIN | POLLERR | POLLHUP)))
            lost = !PQconsumeInput(c->pg);
        /* what arrived before a loss is read: the server's reason */
        if (a_read(c, &tail, &n) != A_OK || PQstatus(c->pg) != CONNECTION_OK)
            lost = true;
        /* libpq reads while it writes when the socket is full: what the
         * last flush read is read now, or no event would announce it */
        if (!lost && c->a_head && !a_flush(c))
            lost = true;
        if (!lost && c->a_head &&
            (a_read(c, &tail, &n) != A_OK || PQstatus(c->pg) != CONNECTION_OK))
            lost = true;
        if (lost)
            a_fail_all(c, &tail, &n);
    }
    if (!c->a_head) {
        c->a_outq = false;
        c->a_known = false;
        c->a_cancel = false;
        if (c->a_spent)
            c->broken = true;
    }
    *done = head;
    *want = c->a_head ? (short)(POLLIN | (c->a_outq ? POLLOUT : 0)) : 0;
    return n;
}

/* The cancel request goes from a thread (start_cancel); the unit it
 * reaches ends DBS_ECANCELED through a_step. Whether it reached the unit
 * running now or, late, the next command, only the server knows: so the
 * connection takes no more units and is discarded once its flight is
 * read (a request still on its way must not reach the next user). */
static void pg_a_cancel(void *vc)
{
    pg_conn *c = vc;
    if (!c->a_head || c->broken)
        return;
    c->a_cancel = true;
    c->a_spent = true;
    start_cancel(c);
}

static int pg_a_idle(void *vc)
{
    pg_conn *c = vc;
    if (c->a_head || pg_is_broken(c) || c->posted.n > 0)
        return 0;
    return PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

static uint64_t pg_a_results(void *vc)
{
    return ((pg_conn *)vc)->a_results;
}

/* At close: flights dropped (their units are loop.c's). */
static void a_drop(pg_conn *c)
{
    pg_aflight *af = c->a_head;
    c->a_head = c->a_tail = NULL;
    while (af) {
        pg_aflight *next = af->next;
        af_free(af);
        af = next;
    }
}

const dbs__driver dbs__driver_pg = {
    .name = "postgresql",
    .target_open = pg_target_open,
    .target_close = pg_target_close,
    .target_stop = pg_target_stop,
    .connect = pg_connect,
    .ping = pg_ping,
    .begin = pg_begin,
    .exec = pg_exec,
    .query = pg_query,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .reset = pg_reset,
    .is_broken = pg_is_broken,
    .native = pg_native,
    .close = pg_close,
    .commit_release = pg_commit_release,
    .rollback_release = pg_rollback_release,
    .reset_failure = pg_reset_failure,
    .set_timeout = pg_set_timeout,
    .set_read_only = pg_set_read_only,
    .peek = pg_peek,
    .tx_escaped = pg_tx_escaped,
    .tx_options = pg_tx_options,
    .tx_options_check = pg_tx_options_check,
    .args_check = pg_args_check,
    .commit_pos = pg_commit_pos,
    .forget = pg_forget,
    .interrupt = pg_interrupt,
    .a_fd = pg_a_fd,
    .a_send = pg_a_send,
    .a_step = pg_a_step,
    .a_cancel = pg_a_cancel,
    .a_idle = pg_a_idle,
    .a_results = pg_a_results,
};
