/*
 * PRIVATE to dbscope: a pool's worker threads (workers.c). They run the
 * units of event loops (dbs_loop) for backends without non-blocking
 * methods (SQLite, MariaDB) through the blocking API, and whatever else a
 * loop must not do on its own thread (a connect). Bounded: at most the
 * number asked (dbs_loop_config.workers, the largest of every loop of the
 * pool), started on first use, stopped and joined when the pool shuts
 * down (dbs_pool_shutdown or dbs_pool_close), before its connections are
 * closed. Jobs run in the order they were queued.
 */
#ifndef DBS_WORKERS_H
#define DBS_WORKERS_H

#include "internal.h"

/* Threads started when a job comes before any dbs__workers_start. */
#define DBS__WORKERS_DEFAULT 4
/* The most worker threads a pool runs. */
#define DBS__WORKERS_MAX 256

/* Starts (or grows to n, at most DBS__WORKERS_MAX) the pool's worker
 * threads. Idempotent: fewer than running is a no-op. DBS_OK; DBS_EMISUSE
 * for n < 1; DBS_ECLOSED once the pool is shut down; DBS_ENOMEM (err
 * says why) when no thread could be started. Any thread; blocks only to
 * create threads. */
int dbs__workers_start(dbs_pool *pool, int n, dbs_error *err);

/* Runs fn(arg) on a worker thread, FIFO. DBS_OK, or DBS_ECLOSED once the
 * pool is shut down (fn never runs then), or DBS_ENOMEM. A job queued
 * before the shutdown still runs, during it, with the pool closed
 * (dbs__pool_closed) and waits of the drivers on that thread ending early
 * (dbs__thread_stop): it should fail fast. Starts DBS__WORKERS_DEFAULT
 * threads if none run yet. Never blocks. Any thread. */
int dbs__workers_run(dbs_pool *pool, void (*fn)(void *arg), void *arg);

/* Runs one attempt of u on a worker through the blocking API: a session
 * (read-only if u->read_only: on a replica within the lag bound that has
 * replayed u->after_pos, as dbs_session_open_ro_after, else the primary),
 * u->opt, its statements in order (dbs_query each: rows with columns are
 * kept as session-less rows (dbs__rows_buf) in u->stmts[i].rows, NULL for
 * a statement without columns; u->stmts[i].affected as dbs_exec counts),
 * then the COMMIT. The outcome: u->rc (DBS_OK: committed), u->err,
 * u->commit_pos (as dbs_session_commit_pos), u->commit_sent (dbs_commit
 * was called, whatever it returned, or the server ended the transaction
 * itself (tx_escaped): part of the work may have committed, so the unit
 * must not run again), u->uncounted (a failure once the session had its
 * connection: not counted in dbs_pool_errors, left to the caller to
 * count as it reports it; failures before, such as the acquire's, and
 * the close's, are counted here). On a failure the session rolls back
 * as it closes, and rows already kept are freed (every rows is NULL). u is written only
 * once, right before done runs (nothing of it before: its owner may read
 * it meanwhile), and its statements' sql and params only read. The
 * session is opened at file, line and func (kept, not copied: they must
 * outlive the attempt), the site that made the unit, so that
 * dbs_pool_sessions and the session's reports name the program's line.
 * The connection is back in the pool before done runs. deadline_ns is the
 * unit's own bound (CLOCK_MONOTONIC; 0: none), acquire_ns its acquire
 * bound (0: the pool's acquire_timeout_ms from when the acquire begins):
 * a unit still queued for a thread when either passes ends DBS_ETIMEOUT
 * without running, and the acquire waits at most until the earlier. An
 * acquire_ns already past when the unit is queued (acquire_timeout_ms 0)
 * leaves it one try, as a blocking acquire with no time left takes an
 * idle connection or a slot to connect on. Then
 * done(u, arg) runs once, on the worker thread (or in dbs__workers_cancel
 * for a unit still queued, or in this call when it fails: never, it
 * returns the code instead): it must only post (mailbox + eventfd).
 * DBS_OK, or DBS_ECLOSED (the pool is shut down) or DBS_ENOMEM, with done
 * never to run and u untouched. Never blocks. Any thread. */
int dbs__workers_unit(dbs_pool *pool, dbs__aunit *u, int64_t deadline_ns, int64_t acquire_ns,
                      const char *file, int line, const char *func,
                      void (*done)(dbs__aunit *u, void *arg), void *arg);

/* From any thread: cancels u if a worker holds it. A unit still queued
 * leaves the queue and ends DBS_ECANCELED without running; its done runs
 * inside this call, on the calling thread. A unit whose worker waits for
 * a connection ends DBS_ECANCELED when that wait does: at once with
 * end_wait (the wait leaves the pool's queue, and a connection or slot
 * handed to it just then goes on to the next waiter), else at the wait's
 * own bound (a unit's deadline, which bounds that wait already). A unit
 * running ends
 * DBS_ECANCELED unless its COMMIT went out (then as the COMMIT ended):
 * no statement of it starts from now on, and a statement in flight is
 * interrupted on the server (the driver's interrupt: sqlite3_interrupt,
 * PostgreSQL's cancel request, MariaDB KILL of the connection), from a
 * thread of the workers' own, and the connection is then discarded
 * rather than reused;
 * done runs on the worker as usual. A unit not held (done already ran) is
 * left alone. done runs once in every case. Never blocks. Returns where
 * the unit was: */
enum dbs__wcancel {
    DBS__WC_QUEUED,     /* waiting for a worker thread: done ran here */
    DBS__WC_OPENING,    /* on a worker, waiting for a connection: no
                           statement of it will run */
    DBS__WC_STARTED,    /* on a worker, before its COMMIT: none goes out
                           (or over without one) */
    DBS__WC_COMMITTING, /* its COMMIT may have gone out */
    DBS__WC_DONE        /* not held: done ran, whatever it said (its
                           outcome is published in u, readable now) */
};
enum dbs__wcancel dbs__workers_cancel(dbs_pool *pool, dbs__aunit *u, bool end_wait);

/* At pool shutdown, after every loop closed (dbs_pool_shutdown and
 * dbs_pool_close call it, each time; idempotent): no job is taken from now on;
 * queued units end DBS_ECLOSED without running, running ones are
 * interrupted as dbs__workers_cancel does (their statements would fail on
 * the closed pool anyway), queued jobs run; then every thread is joined.
 * Blocks until they end: at most one statement or connect bound; a call
 * while another thread's is under way returns once that one has joined
 * them (its caller may free the pool). Not from a worker thread. */
void dbs__workers_stop(dbs_pool *pool);

#endif /* DBS_WORKERS_H */
