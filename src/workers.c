/* A pool's worker threads (workers.h): a FIFO of jobs, the unit runner
 * for backends without non-blocking methods, and the cancel of a unit.
 *
 * Locking: w->mu guards the queue, the list of units held, every job's
 * state and the interrupt queue. It is never held across a statement, a
 * connect, a job or a callback. The interrupter (a thread of its own,
 * started with the first worker) calls the driver's interrupt with the
 * job marked `interrupting`; the worker that holds the session waits for
 * that mark to clear before it closes the session, so the connection
 * stays open during the call.
 *
 * Lifetimes: a unit's job is the worker's that took it, and only that
 * worker frees it (unit_finish), once the job is off the interrupt queue
 * and no interrupt of it is under way; a job is queued for an interrupt
 * only while J_RUNNING, and leaves that state, and the queue, in one hold
 * of w->mu. The workers (w) are the pool's, freed with it, which no
 * thread of theirs outlives: dbs__workers_stop returns, on every thread
 * that calls it, only once they are joined. */
#include "workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* QUEUED: in the FIFO; OPENING: a worker took it and waits for its
 * session; RUNNING: its statements run on conn; COMMITTING: its COMMIT
 * goes out (a cancel no longer stops it). */
enum job_state { J_QUEUED, J_OPENING, J_RUNNING, J_COMMITTING, J_DONE };

typedef struct wjob {
    struct wjob *next;            /* the FIFO */
    void (*fn)(void *arg);        /* a plain job, or NULL for a unit */
    void *arg;
    /* units */
    dbs__aunit *u;
    int64_t deadline_ns;          /* the unit's own: past it, it never runs */
    int64_t acquire_ns;           /* the acquire's, tried once when past */
    int64_t queued_ns;            /* when it was queued */
    const char *file;             /* the unit's site, for its session */
    int line;
    const char *func;
    void (*done)(dbs__aunit *u, void *arg);
    void *done_arg;
    struct wjob *uprev, *unext;   /* the units held (queued or running) */
    enum job_state state;
    bool commit_out;              /* J_DONE: its COMMIT went out (or the
                                     server ended its transaction itself) */
    bool cancelled;
    void *conn;                   /* the session's connection while running */
    bool int_queued;              /* on the interrupt queue */
    bool interrupting;            /* the interrupter is calling on conn */
    bool interrupted;             /* an interrupt went to conn: discard it */
    dbs__rp_waiter waiter;        /* units: ends its acquire's wait on cancel */
    struct wjob *inext;           /* the interrupt queue */
} wjob;

struct dbs__workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* a job was queued, or stop */
    pthread_cond_t int_cv;        /* an interrupt was queued or is over, or stop,
                                     or the threads are joined */
    wjob *head, *tail;
    wjob *units;
    wjob *int_head;
    pthread_t th[DBS__WORKERS_MAX];
    int n;                        /* threads started */
    pthread_t interrupter;
    bool interrupter_started;
    bool stopping;
    bool joined;
    atomic_bool stop_flag;        /* the threads' dbs__thread_stop */
    unsigned long fork_gen;
    dbs_pool *pool;
};

/* ---- the queue ---- */

static void unit_link(struct dbs__workers *w, wjob *j)
{
    j->uprev = NULL;
    j->unext = w->units;
    if (w->units)
        w->units->uprev = j;
    w->units = j;
}

static void unit_unlink(struct dbs__workers *w, wjob *j)
{
    if (j->uprev)
        j->uprev->unext = j->unext;
    else if (w->units == j)
        w->units = j->unext;
    if (j->unext)
        j->unext->uprev = j->uprev;
    j->uprev = j->unext = NULL;
}

static void queue_unlink(struct dbs__workers *w, wjob *j)
{
    wjob *prev = NULL;
    for (wjob *x = w->head; x; prev = x, x = x->next) {
        if (x != j)
            continue;
        if (prev)
            prev->next = x->next;
        else
            w->head = x->next;
        if (w->tail == x)
            w->tail = prev;
        x->next = NULL;
        return;
    }
}

static void int_unlink(struct dbs__workers *w, wjob *j)
{
    if (!j->int_queued)
        return;
    for (wjob **pp = &w->int_head; *pp; pp = &(*pp)->inext)
        if (*pp == j) {
            *pp = j->inext;
            break;
        }
    j->inext = NULL;
    j->int_queued = false;
}

/* Asks the interrupter to stop what runs on j's connection. [w->mu] */
static void interrupt_locked(struct dbs__workers *w, wjob *j)
{
    if (j->state != J_RUNNING || !j->conn || j->int_queued || j->interrupting ||
        !w->pool->drv->interrupt)
        return;
    j->int_queued = true;
    j->inext = w->int_head;
    w->int_head = j;
    pthread_cond_broadcast(&w->int_cv);
}

/* ---- the unit runner ---- */

/* An attempt's outcome, kept apart from the unit until it is over: the
 * unit is written once, by publish, right before its done runs, so that
 * its owner may look at it (a loop closing) without a race. */
typedef struct outcome {
    int rc;
    bool commit_sent;
    bool uncounted;     /* see dbs__aunit */
    uint64_t commit_pos;
    dbs_error err;
    dbs_rows **rows;    /* u->n each, NULL when out of memory */
    int64_t *affected;
} outcome;

static void outcome_fail(outcome *o, int code, const char *msg)
{
    o->rc = dbs__err(&o->err, code, "%s", msg);
}

/* Writes o into u (rows only for a unit that committed); frees o's arrays. */
static void publish(dbs__aunit *u, outcome *o)
{
    for (size_t i = 0; i < u->n; i++) {
        dbs_rows *r = o->rows ? o->rows[i] : NULL;
        if (r && o->rc != DBS_OK) {
            r->ops->close(r);
            r = NULL;
        }
        u->stmts[i].rows = r;
        u->stmts[i].affected = o->rc == DBS_OK && o->affected ? o->affected[i] : -1;
    }
    u->rc = o->rc;
    u->commit_sent = o->commit_sent;
    u->uncounted = o->uncounted;
    u->commit_pos = o->commit_pos;
    u->err = o->err;
    free(o->rows);
    free(o->affected);
}

static bool is_cancelled(struct dbs__workers *w, wjob *j)
{
    pthread_mutex_lock(&w->mu);
    bool c = j->cancelled || w->stopping;
    pthread_mutex_unlock(&w->mu);
    return c;
}

static void cancelled_outcome(struct dbs__workers *w, outcome *o)
{
    pthread_mutex_lock(&w->mu);
    bool closed = w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (closed)
        outcome_fail(o, DBS_ECLOSED, "the pool was shut down while the unit ran; rolled back");
    else
        outcome_fail(o, DBS_ECANCELED, "the unit was cancelled; rolled back");
}

/* One statement on s: its rows kept in *rows (NULL without columns), its
 * count in *affected. */
static int run_stmt(dbs_session *s, const dbs__astmt *st, dbs_rows **rows, int64_t *affected,
                    dbs_error *err)
{
    dbs_rows *r = dbs_query(s, st->sql, st->params, st->n, err);
    if (!r)
        return err->code;
    int rc = DBS_OK;
    if (dbs_rows_count_cols(r) == 0) {
        /* no result set: read to the end all the same (SQLite runs the
         * statement there) */
        rc = dbs_rows_next(r, err);
        if (rc > 0)
            rc = DBS_OK;
        if (rc == DBS_OK)
            *affected = dbs__rows_affected(r);
    } else {
        *rows = dbs__rows_buf(r, err);
        if (!*rows)
            rc = err->code;
        else
            *affected = dbs__rows_affected(*rows);
    }
    dbs_rows_close(r);
    return rc;
}

/* dbs__fault.unit_gap_ms: before statement i, past the cancel check,
 * waits until an interrupt went to j's connection (a test's cancel landing
 * between two statements), at most that long. */
static void fault_gap(struct dbs__workers *w, wjob *j, size_t i)
{
    int ms = atomic_load_explicit(&dbs__fault.unit_gap_ms, memory_order_relaxed);
    if (ms <= 0 || (size_t)atomic_load(&dbs__fault.unit_gap_at) != i)
        return;
    atomic_fetch_add(&dbs__fault.unit_gaps, 1);
    int64_t until = dbs__now_ns() + (int64_t)ms * 1000000;
    pthread_mutex_lock(&w->mu);
    while (!(j->interrupted && !j->interrupting) && dbs__now_ns() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&w->int_cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
}

static void run_unit(struct dbs__workers *w, wjob *j, outcome *o)
{
    dbs__aunit *u = j->u;
    dbs_pool *p = w->pool;
    /* A bound that passed while the unit waited for this thread ends it;
     * an acquire bound already past when it was queued here (0 ms, or a
     * loop run late) leaves it its one try for a connection. */
    /* Failures before the unit has a session count here, as the
     * session's own would, and as the loop counts those of its queue. */
    int64_t now = dbs__now_ns();
    if ((j->deadline_ns > 0 && now >= j->deadline_ns) ||
        (j->acquire_ns > 0 && now >= j->acquire_ns && j->queued_ns < j->acquire_ns)) {
        outcome_fail(o, DBS_ETIMEOUT, "the unit's deadline passed while it waited for a "
                                      "worker thread: raise dbs_loop_config.workers, or the "
                                      "timeout");
        const dbs__who who = {.ctx = u->ctx, .file = j->file, .line = j->line,
                              .func = j->func, .thread = (unsigned long)pthread_self()};
        dbs__pool_count_timeout(p, &who, o->err.message);
        return;
    }
    o->rows = calloc(u->n ? u->n : 1, sizeof *o->rows);
    o->affected = calloc(u->n ? u->n : 1, sizeof *o->affected);
    if (!o->rows || !o->affected) {
        outcome_fail(o, DBS_ENOMEM, "out of memory running a unit");
        dbs__errors_note(p, DBS_ENOMEM, NULL);
        return;
    }
    int64_t until = j->acquire_ns;
    if (j->deadline_ns > 0 && (until == 0 || j->deadline_ns < until))
        until = j->deadline_ns;
    dbs__acquire_deadline_ns = until;
    dbs__acquire_waiter = &j->waiter;
    dbs_session *s = u->read_only
                         ? dbs_session_open_ro_after_at(p, u->ctx, u->after_pos, &o->err,
                                                        j->file, j->line, j->func)
                         : dbs_session_open_at(p, u->ctx, &o->err, j->file, j->line,
                                               j->func);
    dbs__acquire_deadline_ns = 0;
    dbs__acquire_waiter = NULL;
    if (!s) {
        o->rc = o->err.code;
        return;
    }
    pthread_mutex_lock(&w->mu);
    j->conn = s->conn ? s->conn->impl : NULL;
    j->state = J_RUNNING;
    pthread_mutex_unlock(&w->mu);
    /* From here on the unit's failure is counted by the loop, as its
     * callback reports it: a statement the cancel or the shutdown
     * interrupted failed for that reason (DBS_ECANCELED, DBS_ECLOSED),
     * not with the interrupted statement's error, as on PostgreSQL's
     * own connections, and one cancelled between two statements failed
     * too, though no call of the session did. */
    s->hold = true;

    int rc = DBS_OK;
    if (u->opt)
        rc = dbs_session_set_tx_options(s, u->opt, &o->err);
    for (size_t i = 0; rc == DBS_OK && i < u->n; i++) {
        if (is_cancelled(w, j)) {
            rc = DBS_ECANCELED;
            break;
        }
        fault_gap(w, j, i);
        o->affected[i] = -1;
        rc = run_stmt(s, &u->stmts[i], &o->rows[i], &o->affected[i], &o->err);
    }
    /* Past this point a cancel no longer interrupts: the COMMIT goes out. */
    pthread_mutex_lock(&w->mu);
    if (rc == DBS_OK && (j->cancelled || w->stopping))
        rc = DBS_ECANCELED;
    if (rc == DBS_OK)
        j->state = J_COMMITTING;
    bool cancelled = j->cancelled || w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (rc == DBS_OK) {
        rc = dbs_commit(s, &o->err);
        /* A COMMIT refused with a transient code (busy, a full disk, a
         * file replaced: SQLite rolled it back) committed nothing: run
         * again, as dbs_transact runs its unit again. */
        o->commit_sent = rc != DBS_ERETRYABLE && rc != DBS_EFULL && rc != DBS_ECONNECT;
        if (rc == DBS_OK)
            o->commit_pos = dbs_session_commit_pos(s);
    } else if (cancelled) {
        /* what failed is the cancel's doing (an interrupted statement) */
        cancelled_outcome(w, o);
        rc = o->rc;
    }
    /* The server may have ended the transaction itself (DDL's implicit
     * commit, a COMMIT sent as SQL): part of the unit may have committed. */
    if (s->conn && p->drv->tx_escaped && p->drv->tx_escaped(s->conn->impl))
        o->commit_sent = true;
    o->rc = rc;
    if (rc != DBS_OK && o->err.code != rc)
        dbs__err(&o->err, rc, "the unit failed (%d)", rc);
    /* the close's own failures count as any session's */
    s->hold = false;
    o->uncounted = rc != DBS_OK;
    if (rc == DBS_OK && s->held.code < 0) /* met, and not the unit's end */
        dbs__errors_note(s->pool, s->held.code, s->held.sqlstate);

    /* The interrupter must be done with the connection before it goes,
     * and j off its queue before j is freed. j leaves J_RUNNING first, in
     * the same hold as the unlink: the wait below lets go of w->mu, and a
     * cancel or a shutdown taking it then would queue j again (its
     * interrupt just over), to be popped after j is freed. */
    pthread_mutex_lock(&w->mu);
    j->state = J_DONE;
    j->commit_out = o->commit_sent;
    int_unlink(w, j);
    while (j->interrupting)
        pthread_cond_wait(&w->int_cv, &w->mu);
    bool interrupted = j->interrupted;
    j->conn = NULL;
    pthread_mutex_unlock(&w->mu);
    /* A statement stopped from outside may leave the connection anywhere
     * (a late cancel request could reach its next user): never reused. */
    if (interrupted) {
        /* its invalidate event says why: the unit's failure if the
         * interrupt ended a statement, else the interrupt itself */
        if (o->rc != DBS_OK)
            dbs__session_broke(s, o->rc, &o->err);
        else {
            dbs_error why;
            dbs__err(&why, DBS_ECANCELED,
                     "a statement on it was interrupted (the unit was cancelled or the pool "
                     "shut down): a late interrupt could reach its next user");
            dbs__session_broke(s, DBS_ECANCELED, &why);
        }
    }
    dbs_session_close(s);
}

/* Ends a unit job: off the list, then its done (the job is freed first:
 * done may let the unit go). */
static void unit_finish(struct dbs__workers *w, wjob *j, bool listed)
{
    if (listed) {
        pthread_mutex_lock(&w->mu);
        unit_unlink(w, j);
        pthread_mutex_unlock(&w->mu);
    }
    dbs__aunit *u = j->u;
    void (*done)(dbs__aunit *, void *) = j->done;
    void *arg = j->done_arg;
    dbs__rp_waiter_destroy(&j->waiter);
    free(j);
    done(u, arg);
}

/* ---- the threads ---- */

static void *worker_main(void *arg)
{
    struct dbs__workers *w = arg;
    dbs__thread_stop = &w->stop_flag;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        wjob *j = w->head;
        if (!j)
            break; /* stopping, and nothing left */
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        j->next = NULL;
        if (!j->fn)
            j->state = J_OPENING;
        bool stopping = w->stopping, cancelled = j->cancelled;
        pthread_mutex_unlock(&w->mu);
        if (j->fn) {
            dbs__fork_gate_enter();
            j->fn(j->arg);
            dbs__fork_gate_leave();
            free(j);
        } else {
            outcome o = {.rc = DBS_OK};
            if (stopping) {
                outcome_fail(&o, DBS_ECLOSED, "the pool was shut down before the unit ran");
                /* its acquire failed so: counted as a blocking waiter's */
                dbs__errors_note(w->pool, DBS_ECLOSED, NULL);
            } else if (cancelled)
                outcome_fail(&o, DBS_ECANCELED, "the unit was cancelled before it ran");
            else {
                dbs__fork_gate_enter();
                run_unit(w, j, &o);
                dbs__fork_gate_leave();
            }
            publish(j->u, &o);
            unit_finish(w, j, true);
        }
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void *interrupter_main(void *arg)
{
    struct dbs__workers *w = arg;
    dbs__thread_stop = &w->stop_flag;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->int_head && !(w->stopping && w->n == 0))
            pthread_cond_wait(&w->int_cv, &w->mu);
        /* j is live: its worker frees it only once it is off this queue
         * and no longer interrupting */
        wjob *j = w->int_head;
        if (!j)
            break;
        w->int_head = j->inext;
        j->inext = NULL;
        j->int_queued = false;
        j->interrupting = true;
        j->interrupted = true;
        void *conn = j->conn;
        pthread_mutex_unlock(&w->mu);
        w->pool->drv->interrupt(conn);
        pthread_mutex_lock(&w->mu);
        j->interrupting = false;
        pthread_cond_broadcast(&w->int_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- the pool's hooks ---- */

static void workers_stop(dbs_pool *p);

static void workers_free(dbs_pool *p)
{
    struct dbs__workers *w = atomic_load(&p->workers);
    if (!w)
        return;
    atomic_store(&p->workers, NULL);
    if (w->fork_gen != dbs__fork_gen())
        return; /* a parent's: its lock may be held by a thread not here */
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->int_cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* The pool's workers, made on first use, in *out: DBS_OK, or DBS_ECLOSED
 * (none made once the pool is shut down), or DBS_ENOMEM. */
static int workers_of(dbs_pool *p, struct dbs__workers **out)
{
    struct dbs__workers *w = atomic_load_explicit(&p->workers, memory_order_acquire);
    if (w && w->fork_gen == dbs__fork_gen()) {
        *out = w;
        return DBS_OK;
    }
    pthread_mutex_lock(&p->mu);
    w = atomic_load_explicit(&p->workers, memory_order_acquire);
    if (w && w->fork_gen != dbs__fork_gen())
        w = NULL; /* a parent's, whose threads are not in this process: left */
    /* Made and hooked in the same hold of p->mu that sees the pool open:
     * a shutdown, which closes the pool under p->mu and only then looks
     * for p->workers_stop, either finds these workers to join or is seen
     * here. Made after it, their threads would start after the stop and
     * outlive the pool. */
    if (!w && p->closed) {
        pthread_mutex_unlock(&p->mu);
        return DBS_ECLOSED;
    }
    if (!w && (w = calloc(1, sizeof *w)) != NULL) {
        pthread_mutex_init(&w->mu, NULL);
        pthread_condattr_t a;
        pthread_condattr_init(&a);
        pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
        pthread_cond_init(&w->cv, &a);
        pthread_cond_init(&w->int_cv, &a);
        pthread_condattr_destroy(&a);
        atomic_init(&w->stop_flag, false);
        w->fork_gen = dbs__fork_gen();
        w->pool = p;
        atomic_store_explicit(&p->workers, w, memory_order_release);
        p->workers_stop = workers_stop;
        p->workers_free = workers_free;
    }
    pthread_mutex_unlock(&p->mu);
    *out = w;
    return w ? DBS_OK : DBS_ENOMEM;
}

/* dbs__fault.workers_gate: holds a start past its check of the pool until
 * the test lets it go (a shutdown landing between the check and the
 * threads' start). */
static void fault_workers_gate(void)
{
    if (!atomic_load_explicit(&dbs__fault.workers_gate, memory_order_acquire))
        return;
    atomic_fetch_add(&dbs__fault.workers_gated, 1);
    while (atomic_load_explicit(&dbs__fault.workers_gate, memory_order_acquire))
        dbs__sleep_ms(1);
}

int dbs__workers_start(dbs_pool *p, int n, dbs_error *err)
{
    if (n < 1)
        return dbs__err(err, DBS_EMISUSE, "workers: %d threads asked; at least 1", n);
    if (n > DBS__WORKERS_MAX)
        n = DBS__WORKERS_MAX;
    if (dbs__pool_closed(p))
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    fault_workers_gate();
    struct dbs__workers *w;
    int rc = workers_of(p, &w);
    if (rc == DBS_ECLOSED)
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    if (rc != DBS_OK)
        return dbs__err(err, DBS_ENOMEM, "out of memory starting worker threads");
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        rc = dbs__err(err, DBS_ECLOSED, "the pool is closed");
    } else {
        if (!w->interrupter_started) {
            if (pthread_create(&w->interrupter, NULL, interrupter_main, w) == 0)
                w->interrupter_started = true;
            else
                rc = dbs__err(err, DBS_ENOMEM, "cannot start the workers' interrupt thread");
        }
        while (rc == DBS_OK && w->n < n) {
            if (pthread_create(&w->th[w->n], NULL, worker_main, w) != 0) {
                if (w->n == 0)
                    rc = dbs__err(err, DBS_ENOMEM, "cannot start a worker thread");
                break; /* fewer than asked: those running serve */
            }
            w->n++;
        }
    }
    pthread_mutex_unlock(&w->mu);
    if (rc == DBS_OK && err)
        err->code = DBS_OK;
    return rc;
}

/* Queues j (counted in units when it is one). */
static int enqueue(dbs_pool *p, wjob *j)
{
    if (dbs__pool_closed(p))
        return DBS_ECLOSED;
    struct dbs__workers *w;
    int rc = workers_of(p, &w);
    if (rc != DBS_OK)
        return rc;
    pthread_mutex_lock(&w->mu);
    bool need = w->n == 0 && !w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (need) {
        dbs_error e;
        rc = dbs__workers_start(p, DBS__WORKERS_DEFAULT, &e);
        if (rc != DBS_OK)
            return rc;
    }
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        return DBS_ECLOSED;
    }
    j->next = NULL;
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    if (!j->fn)
        unit_link(w, j);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return DBS_OK;
}

int dbs__workers_run(dbs_pool *p, void (*fn)(void *arg), void *arg)
{
    if (!fn)
        return DBS_EMISUSE;
    wjob *j = calloc(1, sizeof *j);
    if (!j)
        return DBS_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    int rc = enqueue(p, j);
    if (rc != DBS_OK)
        free(j);
    return rc;
}

int dbs__workers_unit(dbs_pool *p, dbs__aunit *u, int64_t deadline_ns, int64_t acquire_ns,
                      const char *file, int line, const char *func,
                      void (*done)(dbs__aunit *u, void *arg), void *arg)
{
    if (!u || !done)
        return DBS_EMISUSE;
    wjob *j = calloc(1, sizeof *j);
    if (!j)
        return DBS_ENOMEM;
    j->u = u;
    j->deadline_ns = deadline_ns;
    j->acquire_ns = acquire_ns;
    j->queued_ns = dbs__now_ns();
    j->file = file ? file : __FILE__;
    j->line = file ? line : __LINE__;
    j->func = func ? func : "dbs_unit";
    j->done = done;
    j->done_arg = arg;
    j->state = J_QUEUED;
    dbs__rp_waiter_init(&j->waiter);
    int rc = enqueue(p, j);
    if (rc != DBS_OK) {
        dbs__rp_waiter_destroy(&j->waiter);
        free(j);
    }
    return rc;
}

enum dbs__wcancel dbs__workers_cancel(dbs_pool *p, dbs__aunit *u, bool end_wait)
{
    struct dbs__workers *w = atomic_load_explicit(&p->workers, memory_order_acquire);
    if (!w || !u || w->fork_gen != dbs__fork_gen())
        return DBS__WC_DONE;
    pthread_mutex_lock(&w->mu);
    wjob *j = w->units;
    while (j && j->u != u)
        j = j->unext;
    if (!j) { /* done: its outcome is posted, whatever it is */
        pthread_mutex_unlock(&w->mu);
        return DBS__WC_DONE;
    }
    /* The runner tests cancelled and moves to J_COMMITTING in one hold of
     * w->mu: from that state on the COMMIT goes out, before it none. */
    /* J_DONE: over, its outcome not yet published (the worker closes the
     * session first, a round trip): what it did to the COMMIT is known */
    enum dbs__wcancel where = j->state == J_COMMITTING ? DBS__WC_COMMITTING
                              : j->state == J_DONE       ? (j->commit_out ? DBS__WC_COMMITTING
                                                                          : DBS__WC_STARTED)
                              : j->state == J_OPENING    ? DBS__WC_OPENING
                                                         : DBS__WC_STARTED;
    /* A worker waiting for a connection for it stops waiting (a unit
     * cancelled before by its deadline included: that bound is its
     * acquire's own). Under w->mu, so the job and its waiter outlive the
     * call. */
    if (end_wait && j->state == J_OPENING)
        dbs__rp_waiter_cancel(&j->waiter);
    if (j->cancelled) {
        pthread_mutex_unlock(&w->mu);
        return where;
    }
    j->cancelled = true;
    if (j->state == J_QUEUED) {
        /* still in the queue: out of it, and done from here */
        queue_unlink(w, j);
        unit_unlink(w, j);
        pthread_mutex_unlock(&w->mu);
        outcome o = {.rc = DBS_OK};
        outcome_fail(&o, DBS_ECANCELED, "the unit was cancelled before it ran");
        publish(u, &o);
        unit_finish(w, j, false);
        return DBS__WC_QUEUED;
    }
    interrupt_locked(w, j);
    pthread_mutex_unlock(&w->mu);
    return where;
}

void dbs__workers_stop(dbs_pool *p)
{
    struct dbs__workers *w = atomic_load_explicit(&p->workers, memory_order_acquire);
    if (!w || w->fork_gen != dbs__fork_gen())
        return;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        /* Another thread's stop is joining them (a dbs_pool_shutdown on
         * another thread): this one returns once they are gone as well,
         * or its caller would free the pool, and w, under them. Bounded
         * as that join is. */
        while (!w->joined)
            pthread_cond_wait(&w->int_cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
        return;
    }
    w->stopping = true;
    atomic_store(&w->stop_flag, true);
    for (wjob *j = w->units; j; j = j->unext)
        interrupt_locked(w, j);
    int n = w->n;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < n; i++)
        pthread_join(w->th[i], NULL);
    pthread_mutex_lock(&w->mu);
    w->n = 0; /* the interrupter ends once no worker is left */
    bool intr = w->interrupter_started;
    pthread_cond_broadcast(&w->int_cv);
    pthread_mutex_unlock(&w->mu);
    if (intr)
        pthread_join(w->interrupter, NULL);
    pthread_mutex_lock(&w->mu);
    w->joined = true;
    pthread_cond_broadcast(&w->int_cv);
    pthread_mutex_unlock(&w->mu);
}

static void workers_stop(dbs_pool *p)
{
    dbs__workers_stop(p);
}
