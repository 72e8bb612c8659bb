/*
 * Event loops: units of work that never block the loop's thread.
 *
 * A dbs_loop belongs to one thread (its owner). It offers one descriptor,
 * an epoll instance (level-triggered) holding
 *   - an eventfd, written by other threads when they post to the loop's
 *     mailbox: a connection the pool handed over (the resource pool's
 *     PENDING request served), a connection made on a worker thread, a
 *     unit a worker ran;
 *   - the socket of each connection the loop holds while a unit is in
 *     flight on it (native backends: driver a_* methods), with the events
 *     a_step asks for.
 * dbs_loop_timeout_ms is the nearest timer: a unit's deadline
 * (dbs_unit_set_timeout) or retry back-off, the acquire bound of the
 * oldest unit waiting for a connection, a connection's statement bound
 * (over the reset after its last unit too), the resource pool's barge
 * limit for the loop's own requests.
 *
 * Units wait in a FIFO per lane: the primary's, and one per replica pool
 * for read-only units (native backends only; a worker backend chooses the
 * replica on the worker). A replica qualified when a unit was queued for
 * it; it is judged again before its units start (lane_recheck). Every
 * lane's connections count against the loop's max_connections. On a
 * native backend a unit goes out on a held connection of its lane with
 * spare depth (fewer than pipeline_depth units in flight), else the lane
 * asks the pool for one more connection (within
 * max_connections) without waiting: the resource pool answers at once
 * (READY, CREATE: connect on a worker thread, PENDING: its done callback
 * posts to the mailbox). A connection whose units all came back and whose
 * lane has nothing waiting goes back to the pool at once, so blocking
 * sessions and other loops share it. On a worker backend (no a_* methods)
 * up to max_connections units run on the pool's worker threads at once
 * (dbs__workers_unit), the rest wait here.
 *
 * Nothing here blocks: the check before a hand-out is the driver's peek
 * (no round trip; a connection that died unnoticed fails its unit with
 * DBS_ECONNECT before COMMIT, which is retried); connects run on workers;
 * statements go out through a_send/a_step on non-blocking sockets; closing
 * a native connection sends one message on a non-blocking socket.
 *
 * Lifetimes: the loop keeps its pool through dbs__pool_hold (owner thread)
 * until dbs_loop_close, or its owner thread's exit (owner_exit), which
 * closes it the same way and leaves its memory to the pool. The mailbox outlives the loop while a worker still
 * holds a job that will post to it (refs); a post to a closed mailbox is
 * undone by the poster (a connection goes back to the pool, a unit is
 * freed). A resource-pool request is cancelled at close (its done either
 * has run, and its post is in the mailbox, or never will).
 */
#define _GNU_SOURCE
#include "loop.h"
#include "workers.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOOP_MAGIC 0x4442534cu /* "DBSL" */
#define UNIT_MAGIC 0x44425355u /* "DBSU" */

/* CANCEL_RESENDS: a cancel request answered without the unit ending goes
 * again at most that many times; a statement that catches every one
 * would otherwise outlast any bound. */
enum { LOOP_EVENTS = 64, CANCEL_BOUND_MS = 5000, CANCEL_RESENDS = 2 };

/* ---- the mailbox ---- */

enum post_kind { POST_REQ, POST_CONN, POST_UNIT };

typedef struct post {
    enum post_kind kind;
    struct post *next;
} post;

typedef struct mbox {
    pthread_mutex_t mu;
    post *head, *tail; /* [mu] */
    bool closed;       /* [mu] the loop is gone: posters undo their post */
    int efd;           /* written under mu while not closed */
    atomic_int refs;   /* the loop's, and one per job on a worker */
} mbox;

static void mbox_unref(mbox *m)
{
    if (atomic_fetch_sub(&m->refs, 1) == 1) {
        pthread_mutex_destroy(&m->mu);
        free(m);
    }
}

/* Any thread. false: the loop is closed and the post was not taken. */
static bool mbox_post(mbox *m, post *p)
{
    pthread_mutex_lock(&m->mu);
    if (m->closed) {
        pthread_mutex_unlock(&m->mu);
        return false;
    }
    p->next = NULL;
    bool was_empty = !m->head;
    if (m->tail)
        m->tail->next = p;
    else
        m->head = p;
    m->tail = p;
    if (was_empty) {
        uint64_t one = 1;
        dbs__cancel_defer(); /* write() is a cancellation point */
        ssize_t w = write(m->efd, &one, sizeof one);
        (void)w; /* only fails when the counter is full: readable anyway */
    }
    pthread_mutex_unlock(&m->mu);
    return true;
}

static post *mbox_take(mbox *m)
{
    pthread_mutex_lock(&m->mu);
    post *p = m->head;
    m->head = m->tail = NULL;
    uint64_t v;
    ssize_t r = read(m->efd, &v, sizeof v);
    (void)r; /* EAGAIN: nothing was written */
    pthread_mutex_unlock(&m->mu);
    return p;
}

/* ---- types ---- */

typedef struct lane lane;
typedef struct lconn lconn;

enum unit_state { U_NEW, U_QUEUED, U_SENT, U_WORKER, U_BACKOFF, U_DONE };

/* Why the loop cancelled a unit in flight: what it then completes with. */
/* CW_DEADLINE_QUEUED: the deadline passed while it waited for a worker
 * thread (it never had a connection) */
enum cancel_why { CW_NONE, CW_USER, CW_DEADLINE, CW_DEADLINE_QUEUED, CW_STMT };

struct dbs_unit {
    unsigned magic;
    dbs_loop *loop;
    post post;                /* a worker's completion */
    mbox *mb;                 /* the loop's mailbox, for the worker */
    dbs__aunit au;
    size_t cap;               /* au.stmts allocated */
    char *ctx_buf;
    dbs_context ctx;
    dbs_tx_options txo;
    bool has_txo;
    unsigned flags;
    int timeout_ms;
    enum unit_state state;
    bool submitted;
    bool orphan;              /* completed while a worker held it (the loop
                                 closed, or it was cancelled waiting for a
                                 connection): the worker's post frees it */
    bool cb_ran;              /* an orphan's callback ran */
    bool post_seen;           /* an orphan's post came before its callback
                                 ran: run_callbacks frees it */
    enum cancel_why cancel;   /* set: cancel it (or it was cancelled) */
    bool cancel_sent;         /* a_cancel went out for it */
    int attempts;
    int64_t submit_ns, queued_ns, deadline_ns, retry_ns;
    int heap_idx;             /* -1: not in the timer heap */
    lane *lane;
    lconn *conn;
    struct dbs_unit *prev, *next; /* lane queue, connection flight, done list */
    dbs_unit_fn done;
    void *arg;
    dbs_error err;
    int rc;
    const char *file;         /* the site that made it (dbs_unit_new_at): */
    int line;                 /* what its reports and its worker's session */
    const char *func;         /* name */
};

struct lconn {
    lane *lane;
    dbs__conn *c;
    int fd;
    uint32_t events;          /* registered with epoll (0: not registered) */
    int inflight;
    dbs_unit *head, *tail;    /* units in flight, oldest first */
    int64_t got_ns;
    int64_t last_rx_ns;       /* the last time it had something to read, or
                                 its flight began */
    int64_t answer_ns;        /* the last time an answer was read whole, or
                                 its flight began: the statement at the
                                 head began then (the statement bound) */
    uint64_t answers;         /* drv->a_results when answer_ns was set */
    int64_t cancel_ns;        /* a_cancel sent, 0: none */
    int cancel_resends;       /* sent again since (timers) */
    bool retired;             /* takes no more units (a cancel went out on
                                 it): discarded once its flight is read */
    bool dead;                /* freed at the end of this run */
    dbs_error last;           /* last.code < 0: the failure of the last
                                 unit that ended on it, or what made it
                                 unfit; its invalidate event says so */
    dbs_error broke;          /* broke.code < 0: a unit's reset failed on
                                 it after the unit was handed back, which
                                 broke it: said rather than last */
    lconn *next;              /* the lane's, or the dead list */
};

/* A request for one connection of a lane: the resource pool's request,
 * then, if it reserved a slot, the connect job on a worker. */
typedef struct creq {
    post post;
    dbs__rp_req req;
    dbs_loop *loop;           /* NULL once the loop let go of it */
    mbox *mb;
    lane *lane;
    dbs_pool *pool;
    int64_t start_ns;
    int64_t pass_ns;          /* the lane's dispatch pass before the one
                                 that asked: units queued after it were
                                 first offered a connection by this one */
    bool connecting;          /* on a worker: made a connection or failed */
    bool cancelled;           /* the loop took it back: its post is void */
    dbs__conn *conn;          /* a connect's outcome */
    int rc;
    dbs_error err;
    struct creq *prev, *next; /* the lane's outstanding requests */
} creq;

struct lane {
    dbs_pool *pool;
    dbs_unit *qhead, *qtail;  /* waiting for a connection, oldest first */
    int nq;
    lconn *conns;
    int nconns;
    creq *reqs;
    int nreq;
    bool closed;              /* the pool closed: no connection to come */
    int64_t pass_ns;          /* its last dispatch pass began */
    int64_t prev_pass_ns;     /* the one before */
};

struct dbs_loop {
    unsigned magic;
    uint64_t owner_id;        /* dbs__thread_id() of its owner: the check */
    pthread_t owner;          /* the same thread, as events name it */
    dbs_pool *pool;
    bool native;              /* the backend has a_* methods */
    dbs_loop_config cfg;
    int epfd;
    mbox *mb;
    lane *lanes;              /* [0] the primary, [1 + i] replica i */
    int nlanes;
    int nconns, nreqs;        /* over every lane */
    int nworker;              /* units on workers */
    dbs_unit *whead;          /* those units (prev/next) */
    int pending;              /* submitted, callback not yet run */
    int queued;               /* waiting for a connection (queue_max) */
    dbs_unit **heap;          /* timers: deadlines and back-offs */
    int heap_n, heap_cap;
    dbs_unit *done_head, *done_tail; /* completed, callbacks to run */
    lconn *dead;
    bool in_run;
    bool closing;
    bool served;              /* timers served a request in order: its
                                 post waits in the mailbox */
    atomic_bool kick;         /* run now: timeout 0 */
    _Atomic int64_t next_ns;  /* the nearest timer, INT64_MAX: none */
    /* 1 while open, plus one per unit made and neither submitted nor
     * discarded: such a unit is the program's and may outlive the loop,
     * so the memory goes with the last of them (any thread: discard) and
     * unit_ok reads the magic of a closed loop, never freed memory. A
     * loop its owner's exit closed passes the open one to its pool
     * (kept), whose memory it then goes with. */
    atomic_int refs;
    const char *file;         /* the site that opened it (dbs_loop_open_at), */
    int line;                 /* which its leak report names */
    const char *func;
    unsigned long fork_gen;   /* dbs__fork_gen() at open: in a child, the
                                 connections are the parent's */
    const dbs__driver *drv;   /* the pool's, for a child that may have
                                 freed the pool */
    dbs_loop *t_prev, *t_next; /* the owner thread's open loops */
    bool exiting;             /* closed by its owner's exit: callbacks do
                                 not run, their outcomes are counted */
    int exit_failed, exit_unknown, exit_committed; /* those outcomes */
    dbs__kept kept;
};

static bool transient(int code)
{
    return code == DBS_ERETRYABLE || code == DBS_ECONNECT || code == DBS_EFULL;
}

static bool on_owner(const dbs_loop *l)
{
    return l->owner_id == dbs__thread_id();
}

static void loop_unref(dbs_loop *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        free(l);
}

/* In a child of fork(), a loop opened before it: its connections, its
 * mailbox and its workers are the parent's. */
static bool forked(const dbs_loop *l)
{
    return l->fork_gen != dbs__fork_gen();
}

/* ---- the timer heap: units with a deadline or a back-off ---- */

static int64_t unit_wake(const dbs_unit *u)
{
    int64_t w = u->deadline_ns ? u->deadline_ns : INT64_MAX;
    if (u->state == U_BACKOFF && u->retry_ns < w)
        w = u->retry_ns;
    return w;
}

static void heap_swap(dbs_loop *l, int a, int b)
{
    dbs_unit *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_idx = a;
    l->heap[b]->heap_idx = b;
}

static void heap_fix(dbs_loop *l, int i)
{
    while (i > 0 && unit_wake(l->heap[(i - 1) / 2]) > unit_wake(l->heap[i])) {
        heap_swap(l, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        int m = i, a = 2 * i + 1, b = 2 * i + 2;
        if (a < l->heap_n && unit_wake(l->heap[a]) < unit_wake(l->heap[m]))
            m = a;
        if (b < l->heap_n && unit_wake(l->heap[b]) < unit_wake(l->heap[m]))
            m = b;
        if (m == i)
            return;
        heap_swap(l, i, m);
        i = m;
    }
}

static void heap_remove(dbs_loop *l, dbs_unit *u)
{
    int i = u->heap_idx;
    if (i < 0)
        return;
    u->heap_idx = -1;
    l->heap_n--;
    if (i == l->heap_n)
        return;
    l->heap[i] = l->heap[l->heap_n];
    l->heap[i]->heap_idx = i;
    heap_fix(l, i);
}

/* Puts u in the heap, or moves it, or takes it out when it has no timer. */
static int heap_update(dbs_loop *l, dbs_unit *u)
{
    if (unit_wake(u) == INT64_MAX) {
        heap_remove(l, u);
        return DBS_OK;
    }
    if (u->heap_idx >= 0) {
        heap_fix(l, u->heap_idx);
        return DBS_OK;
    }
    if (l->heap_n == l->heap_cap) {
        int cap = l->heap_cap ? l->heap_cap * 2 : 64;
        dbs_unit **h = realloc(l->heap, (size_t)cap * sizeof *h);
        if (!h)
            return DBS_ENOMEM;
        l->heap = h;
        l->heap_cap = cap;
    }
    u->heap_idx = l->heap_n;
    l->heap[l->heap_n++] = u;
    heap_fix(l, u->heap_idx);
    return DBS_OK;
}

/* ---- units: memory ---- */

static void unit_rows_free(dbs_unit *u)
{
    for (size_t i = 0; i < u->au.n; i++) {
        dbs_rows *r = u->au.stmts[i].rows;
        if (r) {
            r->magic = DBS__DEAD_MAGIC;
            r->ops->close(r);
            u->au.stmts[i].rows = NULL;
        }
        u->au.stmts[i].affected = -1;
    }
}

/* Frees u and everything it owns. Any thread (a worker frees an orphan). */
static void unit_free(dbs_unit *u)
{
    unit_rows_free(u);
    for (size_t i = 0; i < u->au.n; i++) {
        dbs__astmt *s = &u->au.stmts[i];
        /* one block: the values, the SQL text, the parameters' bytes */
        free((void *)(uintptr_t)s->params);
    }
    free(u->au.stmts);
    free(u->ctx_buf);
    u->magic = DBS__DEAD_MAGIC;
    free(u);
}

/* ---- completion ---- */

/* u ends: its callback runs later in this dbs_loop_run (or at the next). */
static void unit_complete(dbs_loop *l, dbs_unit *u, int rc, const dbs_error *err)
{
    heap_remove(l, u);
    u->state = U_DONE;
    u->rc = rc;
    if (err && err != &u->err)
        u->err = *err;
    u->err.code = rc;
    if (rc == DBS_OK) {
        snprintf(u->err.message, sizeof u->err.message, "ok");
        u->err.sqlstate[0] = '\0';
    } else if (!u->err.message[0]) {
        snprintf(u->err.message, sizeof u->err.message, "%s", dbs_strerror(rc));
    }
    u->next = NULL;
    u->prev = NULL;
    if (l->done_tail)
        l->done_tail->next = u;
    else
        l->done_head = u;
    l->done_tail = u;
    if (!l->in_run) {
        /* Outside a run (dbs_unit_cancel): the program may be asleep on the
         * descriptor with a deadline asked before, so the descriptor says
         * there is work; the next run reads the counter back. */
        atomic_store_explicit(&l->kick, true, memory_order_relaxed);
        uint64_t one = 1;
        dbs__cancel_defer(); /* write() is a cancellation point */
        ssize_t w = write(l->mb->efd, &one, sizeof one);
        (void)w; /* only fails when the counter is full: readable anyway */
    }
}

static void unit_fail(dbs_loop *l, dbs_unit *u, int rc, const char *msg)
{
    dbs_error e;
    dbs__err(&e, rc, "%s", msg);
    unit_complete(l, u, rc, &e);
}

/* The unit whose callback runs. */
typedef struct cb_frame {
    dbs_loop *l;
    dbs_unit *u; /* NULL once the callback returned */
} cb_frame;

/* A cancel or pthread_exit in a unit's callback (or a C++ exception
 * through it) unwinds dbs_loop_run: the run ends there, between two
 * units, so the loop is left as between two runs (the units that ended
 * after this one run their callbacks at the next run, or in the close),
 * u is freed as after its callback, and a cleanup handler of the
 * program's may close the loop, or run it again. The callbacks
 * dbs_loop_close runs must return (the header says so): one that leaves
 * by pthread_exit leaves that close unfinished. */
static void cb_unwound(cb_frame *f)
{
    dbs_loop *l = f->l;
    dbs_unit *u = f->u;
    f->u = NULL;
    if (!l->closing) {
        l->in_run = false;
        atomic_store_explicit(&l->kick, true, memory_order_relaxed);
    }
    if (u->orphan && !u->post_seen)
        u->cb_ran = true; /* a worker still holds it: freed when it posts */
    else
        unit_free(u);
}

/* Built with -fexceptions (CMakeLists.txt; internal.h): the unwind runs
 * it too. */
static inline __attribute__((always_inline)) void cb_frame_leave(cb_frame *f)
{
    if (__builtin_expect(f->u != NULL, 0)) {
        dbs__unwound();
        cb_unwound(f);
    }
}

/* Runs the callbacks of the units that ended; returns how many. user:
 * the program's cancel state, which they run with; or -1: they stay
 * deferred (dbs_loop_close, which must finish to give back what the loop
 * holds). */
static int run_callbacks(dbs_loop *l, int user)
{
    int n = 0;
    while (l->done_head) {
        dbs_unit *u = l->done_head;
        l->done_head = u->next;
        if (!l->done_head)
            l->done_tail = NULL;
        u->next = NULL;
        /* an orphan's worker may still be writing its outcome: its rows
         * are not read (it did not complete DBS_OK here) */
        for (size_t i = 0; i < u->au.n && !u->orphan; i++) {
            dbs_rows *r = u->au.stmts[i].rows;
            if (r) {
                r->session = NULL;
                r->magic = DBS__ROWS_MAGIC;
                r->on_row = 0;
            }
        }
        l->pending--;
        n++;
        if (l->exiting) {
            /* The owner thread is gone, its stack unwound and the
             * program's thread-local state may be destroyed already:
             * what the callback would reach is not there to run it on.
             * Its outcome goes into the loop's leak report instead. */
            if (u->rc == DBS_OK)
                l->exit_committed++;
            else if (u->rc == DBS_ECOMMIT_UNKNOWN)
                l->exit_unknown++;
            else
                l->exit_failed++;
        } else if (u->done) {
            /* A cancel or pthread_exit in it unwinds through here:
             * cb_frame_leave puts the loop back between two units. */
            dbs__unwind_note();
            cb_frame frame __attribute__((cleanup(cb_frame_leave))) = {.l = l, .u = u};
            if (user >= 0)
                dbs__cancel_user((unsigned char)user);
            u->done(u, u->rc, &u->err, u->arg);
            if (user >= 0)
                dbs__cancel_lib((unsigned char)user);
            frame.u = NULL;
        }
        if (u->orphan && !u->post_seen) {
            u->cb_ran = true;
            continue; /* a worker still holds it: freed when it posts */
        }
        unit_free(u);
    }
    return n;
}

/* ---- lanes and queues ---- */

static void queue_push(dbs_loop *l, lane *ln, dbs_unit *u, int64_t now)
{
    u->state = U_QUEUED;
    u->lane = ln;
    u->queued_ns = now;
    u->prev = ln->qtail;
    u->next = NULL;
    if (ln->qtail)
        ln->qtail->next = u;
    else
        ln->qhead = u;
    ln->qtail = u;
    ln->nq++;
    l->queued++;
}

static void queue_unlink(dbs_loop *l, dbs_unit *u)
{
    lane *ln = u->lane;
    if (u->prev)
        u->prev->next = u->next;
    else
        ln->qhead = u->next;
    if (u->next)
        u->next->prev = u->prev;
    else
        ln->qtail = u->prev;
    u->prev = u->next = NULL;
    ln->nq--;
    l->queued--;
}

/* The lane a unit's attempt waits in: read-only units on a native backend
 * go to a replica that qualifies now. DBS_OK, or a failure for the unit. */
static int choose_lane(dbs_loop *l, dbs_unit *u, lane **out, dbs_error *err)
{
    *out = &l->lanes[0];
    if (!(u->flags & DBS_UNIT_RO) || l->nlanes == 1)
        return DBS_OK;
    int i = dbs__replica_choose(l->pool, &u->ctx, u->au.after_pos, err);
    if (i >= 0) {
        *out = &l->lanes[1 + i];
        return DBS_OK;
    }
    if (l->pool->cfg.replica_fallback)
        return DBS_OK;
    dbs__errors_note(l->pool, DBS_EUNAVAILABLE, NULL);
    return DBS_EUNAVAILABLE;
}

/* A unit (new or to retry) joins the queue of its lane. */
static void unit_enqueue(dbs_loop *l, dbs_unit *u, int64_t now)
{
    lane *ln;
    dbs_error e;
    int rc = choose_lane(l, u, &ln, &e);
    if (rc != DBS_OK) {
        unit_complete(l, u, rc, &e);
        return;
    }
    if (ln->closed || dbs__pool_closed(ln->pool)) {
        dbs__errors_note(ln->pool, DBS_ECLOSED, NULL);
        unit_fail(l, u, DBS_ECLOSED, "the pool is closed");
        return;
    }
    heap_update(l, u);
    queue_push(l, ln, u, now);
}

/* ---- connections ---- */

static void conn_watch(dbs_loop *l, lconn *lc, short want)
{
    uint32_t ev = 0;
    if (want & POLLIN)
        ev |= EPOLLIN;
    if (want & POLLOUT)
        ev |= EPOLLOUT;
    if (ev == lc->events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = lc};
    if (ev == 0) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, lc->fd, &e);
    } else if (lc->events == 0) {
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, lc->fd, &e) != 0 && errno == EEXIST)
            epoll_ctl(l->epfd, EPOLL_CTL_MOD, lc->fd, &e);
    } else {
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, lc->fd, &e);
    }
    lc->events = ev;
}

static void lane_unlink_conn(lane *ln, lconn *lc)
{
    for (lconn **pp = &ln->conns; *pp; pp = &(*pp)->next) {
        if (*pp == lc) {
            *pp = lc->next;
            break;
        }
    }
    ln->nconns--;
}

/* Lets go of lc (no unit in flight): back to its pool, or discarded. */
static void conn_drop(dbs_loop *l, lconn *lc, bool discard)
{
    lane *ln = lc->lane;
    conn_watch(l, lc, 0);
    lane_unlink_conn(ln, lc);
    l->nconns--;
    const dbs__driver *drv = ln->pool->drv;
    if (!discard && (drv->is_broken(lc->c->impl) || !drv->a_idle(lc->c->impl)))
        discard = true;
    dbs_error why = lc->broke.code < 0 ? lc->broke : lc->last;
    if (discard && why.code >= 0 && lc->retired && !drv->is_broken(lc->c->impl))
        dbs__err(&why, DBS_ECANCELED, "a cancel request went out on it, which could reach "
                                      "its next user");
    dbs__pool_loop_giveback(ln->pool, lc->c, true, discard, dbs__now_ns() - lc->got_ns,
                            why.code < 0 ? &why : NULL);
    lc->c = NULL;
    lc->dead = true;
    lc->next = l->dead;
    l->dead = lc;
}

static void attempt_done(dbs_loop *l, dbs_unit *u, int64_t now);
static void unit_timed_out(dbs_loop *l, dbs_pool *p, dbs_unit *u, const dbs_error *e);
static int attempt_outcome(const dbs_loop *l, const dbs_unit *u, dbs_error *out);

/* Discards lc with units in flight: the one at the head may have run on
 * the server (its outcome is rc, or DBS_ECOMMIT_UNKNOWN if its COMMIT went
 * out); those behind it had not started (the server runs a connection's
 * pipeline in order) and fail with DBS_ECONNECT, retried. */
static void conn_abandon(dbs_loop *l, lconn *lc, int rc, const char *why)
{
    dbs__err(&lc->last, rc, "%s", why);
    dbs_unit *u = lc->head;
    lc->head = lc->tail = NULL;
    lc->inflight = 0;
    bool first = true;
    while (u) {
        dbs_unit *next = u->next;
        u->next = u->prev = NULL;
        u->conn = NULL;
        int code = first || l->closing ? rc : DBS_ECONNECT;
        if (u->au.commit_sent)
            code = DBS_ECOMMIT_UNKNOWN;
        u->au.rc = code;
        dbs__err(&u->au.err, code, "%s", why);
        attempt_done(l, u, dbs__now_ns());
        first = false;
        u = next;
    }
    conn_drop(l, lc, true);
}

static void conn_step(dbs_loop *l, lconn *lc, short revents);

static uint64_t drv_results(const lconn *lc)
{
    const dbs__driver *drv = lc->lane->pool->drv;
    return drv->a_results ? drv->a_results(lc->c->impl) : 0;
}

/* A connection of lane ln is the loop's (in use): checked without a round
 * trip, then put to work. */
static void conn_got(dbs_loop *l, lane *ln, dbs__conn *c, int64_t start, bool fresh);

static void lane_closed(dbs_loop *l, lane *ln)
{
    ln->closed = true;
    while (ln->qhead) {
        dbs_unit *u = ln->qhead;
        queue_unlink(l, u);
        /* a failed acquire, as a blocking waiter's (no session counts it) */
        dbs__errors_note(ln->pool, DBS_ECLOSED, NULL);
        unit_fail(l, u, DBS_ECLOSED, "the pool was closed while the unit waited for a "
                                     "connection");
    }
}

static void connect_job(void *arg);

/* Starts a connect on a worker for the slot req holds. */
static void start_connect(dbs_loop *l, creq *r)
{
    r->connecting = true;
    r->loop = l;
    r->mb = l->mb;
    atomic_fetch_add(&l->mb->refs, 1);
    atomic_fetch_add(&r->pool->refs, 1);
    if (dbs__workers_run(l->pool, connect_job, r) != DBS_OK) {
        dbs__rp_create_failed(&r->pool->rp);
        dbs__pool_unref(r->pool);
        mbox_unref(l->mb);
        lane *ln = r->lane;
        if (r->prev)
            r->prev->next = r->next;
        else
            ln->reqs = r->next;
        if (r->next)
            r->next->prev = r->prev;
        ln->nreq--;
        l->nreqs--;
        free(r);
        lane_closed(l, ln);
    }
}

static void req_unlink(dbs_loop *l, creq *r)
{
    lane *ln = r->lane;
    if (r->prev)
        r->prev->next = r->next;
    else if (ln->reqs == r)
        ln->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    ln->nreq--;
    l->nreqs--;
}

/* The resource pool served the request: its wake, run on the serving
 * thread once the pool's lock is released. The request holds a reference
 * on the mailbox until here. A loop that closed meanwhile took the request
 * back (dbs__rp_cancel with put_back, which found it served): what it was
 * served with is the pool's again, and the request is freed here. */
static void req_served(dbs__rp_req *req)
{
    creq *r = req->arg;
    mbox *m = r->mb;
    if (!mbox_post(m, &r->post)) {
        if (r->req.item) /* taken back into a closed pool: left to us */
            dbs__pool_loop_left(r->pool, dbs__conn_of(r->req.item));
        free(r);
    }
    mbox_unref(m); /* r may be the loop's, or gone, from the post on */
}

/* No memory to take a connection for lane ln. While the lane has a
 * connection or a request under way, they dispatch its queue again; with
 * neither nothing would, and its units would wait for a timer (their
 * acquire bound, at best): the unit waiting longest fails instead, as
 * with a failed connect, before anything of it was sent. */
static void lane_nomem(dbs_loop *l, lane *ln, const char *what)
{
    dbs_unit *u = ln->qhead;
    if (!u || ln->nconns || ln->nreq)
        return;
    queue_unlink(l, u);
    u->attempts++;
    u->au.commit_sent = false;
    u->au.rc = dbs__err(&u->au.err, DBS_ENOMEM, "out of memory %s: nothing of the unit was sent",
                        what);
    attempt_done(l, u, dbs__now_ns());
}

/* Asks lane ln's pool for one more connection, without waiting. */
static void lane_acquire(dbs_loop *l, lane *ln)
{
    creq *r = calloc(1, sizeof *r);
    if (!r) {
        lane_nomem(l, ln, "asking the pool for a connection");
        return;
    }
    r->post.kind = POST_REQ;
    r->req.done = NULL;
    r->req.wake = req_served;
    r->req.arg = r;
    r->loop = l;
    r->mb = l->mb;
    r->lane = ln;
    r->pool = ln->pool;
    r->start_ns = dbs__now_ns();
    r->pass_ns = ln->prev_pass_ns;
    r->next = ln->reqs;
    if (ln->reqs)
        ln->reqs->prev = r;
    ln->reqs = r;
    ln->nreq++;
    l->nreqs++;
    dbs__rp_item *it = NULL;
    atomic_fetch_add(&l->mb->refs, 1); /* the request's, until its wake */
    int st = dbs__rp_acquire(&ln->pool->rp, &r->req, 0, &it);
    if (st != DBS__RP_PENDING)
        mbox_unref(l->mb); /* answered at once: no wake will run */
    switch (st) {
    case DBS__RP_READY:
        req_unlink(l, r);
        conn_got(l, ln, dbs__conn_of(it), r->start_ns, false);
        free(r);
        return;
    case DBS__RP_CREATE:
        start_connect(l, r);
        return;
    case DBS__RP_PENDING:
        return; /* req_served posts it */
    default:
        req_unlink(l, r);
        free(r);
        lane_closed(l, ln);
        return;
    }
}

/* On a worker: makes a connection on the slot r reserved, and posts it. */
static void connect_job(void *arg)
{
    creq *r = arg;
    dbs_pool *p = r->pool;
    dbs__conn *c = NULL;
    int rc = dbs__conn_admit(p, true, &r->err);
    if (rc == DBS_OK) {
        c = dbs__conn_open(p, &r->err);
        int64_t now = dbs__now_ns();
        int ev;
        rc = dbs__conn_settle(p, c, c ? DBS_OK : r->err.code, now, &ev);
        if (!c) {
            dbs__connect_announce(p, NULL, NULL, ev, &r->err);
            rc = r->err.code < 0 ? r->err.code : DBS_ECONNECT;
        } else if (rc == DBS_ECLOSED) {
            dbs__conn_close(p, c);
            c = NULL;
            dbs__err(&r->err, DBS_ECLOSED, "the pool was closed while connecting");
        } else {
            dbs__connect_announce(p, NULL, c, ev, NULL);
        }
    }
    r->rc = rc;
    r->conn = c;
    mbox *mb = r->mb;
    if (!mbox_post(mb, &r->post)) {
        /* the loop is gone: the connection goes back to the pool */
        if (c)
            dbs__pool_loop_giveback(p, c, false, false, 0, NULL);
        free(r);
        dbs__pool_unref(p);
    }
    mbox_unref(mb);
}

static void conn_got(dbs_loop *l, lane *ln, dbs__conn *c, int64_t start, bool fresh)
{
    if (!c)
        return; /* READY always comes with an item */
    dbs_pool *p = ln->pool;
    int64_t now = dbs__now_ns();
    if (!fresh) {
        const char *why = NULL;
        dbs_error perr;
        perr.code = DBS_OK;
        if (dbs__conn_expired(c, now))
            why = "lifetime";
        else if (p->drv->is_broken(c->impl))
            why = "broken";
        else if (dbs__peek_wanted(p) && p->drv->peek(c->impl, 0, &perr) == DBS_ECONNECT)
            why = "broken";
        /* DBS__PEEK_UNSURE or an idle past validation_window_ms: the unit
         * goes ahead; a connection that turns out dead fails it with
         * DBS_ECONNECT before its COMMIT, and it is retried. */
        if (why) {
            bool broken = why[0] == 'b';
            /* what the peek found, when it found it */
            bool seen = broken && perr.code < 0;
            if (broken) {
                /* a reset a blocking release posted, which failed: the
                 * closed session's failure, counted once (as pool.c's
                 * check does) */
                dbs_error rerr;
                dbs__conn_release_failure(p, c, &rerr);
                if (rerr.code < 0)
                    dbs__errors_note(p, rerr.code, rerr.sqlstate);
            }
            dbs__emit(p, broken ? DBS_EVENT_INVALIDATE : DBS_EVENT_CLOSE, NULL, c,
                      seen ? perr.code : broken ? DBS_ECONNECT : 0, seen ? perr.message : why);
            int st = dbs__rp_replace(&p->rp, &c->item);
            dbs__conn_close(p, c);
            dbs__conn_gone(p, broken ? DBS__GONE_BROKEN : DBS__GONE_LIFETIME, 1,
                           dbs__now_ns());
            if (st != DBS__RP_CREATE) {
                lane_closed(l, ln);
                return;
            }
            creq *r = calloc(1, sizeof *r);
            if (!r) {
                dbs__rp_create_failed(&p->rp);
                lane_nomem(l, ln, "replacing a connection");
                return;
            }
            r->post.kind = POST_REQ;
            r->lane = ln;
            r->pool = p;
            r->start_ns = start;
            r->pass_ns = ln->prev_pass_ns;
            r->next = ln->reqs;
            if (ln->reqs)
                ln->reqs->prev = r;
            ln->reqs = r;
            ln->nreq++;
            l->nreqs++;
            start_connect(l, r);
            return;
        }
    }
    lconn *lc = calloc(1, sizeof *lc);
    if (!lc) {
        dbs__pool_loop_giveback(p, c, false, false, 0, NULL);
        lane_nomem(l, ln, "taking a connection");
        return;
    }
    lc->lane = ln;
    lc->c = c;
    lc->fd = p->drv->a_fd(c->impl);
    lc->got_ns = now;
    lc->last_rx_ns = now; /* a blocking release's reset may be unread */
    lc->answer_ns = now;
    lc->answers = drv_results(lc);
    lc->next = ln->conns;
    ln->conns = lc;
    ln->nconns++;
    l->nconns++;
    dbs__pool_loop_checkout(p, c, now - start);
}

/* The unit at the head of lc's flight, if the loop wants it cancelled. */
static void conn_cancel_head(lconn *lc, int64_t now)
{
    dbs_unit *u = lc->head;
    if (!u || u->cancel == CW_NONE || u->cancel_sent)
        return;
    u->cancel_sent = true;
    lc->cancel_ns = now;
    lc->cancel_resends = 0;
    lc->retired = true;
    lc->lane->pool->drv->a_cancel(lc->c->impl);
}

/* Others (blocking sessions, other loops) wait in ln's pool's FIFO, not
 * counting this lane's own requests: its connections then take no new
 * units and go back once their flight is read, so the pool's order holds
 * between the loop and everyone else. A hint, read without a lock. */
static bool others_wait(const lane *ln)
{
    int own = 0;
    for (const creq *r = ln->reqs; r; r = r->next)
        if (!r->connecting)
            own++;
    return dbs__rp_waiting_hint(&ln->pool->rp) > own;
}

static void conn_step(dbs_loop *l, lconn *lc, short revents)
{
    const dbs__driver *drv = lc->lane->pool->drv;
    int64_t now = dbs__now_ns();
    if (revents & (POLLIN | POLLHUP | POLLERR))
        lc->last_rx_ns = now;
    dbs__aunit *done = NULL;
    short want = 0;
    drv->a_step(lc->c->impl, revents, &done, &want);
    /* A reset that failed after its unit was handed back: no unit
     * reports it, yet a unit's session would have met it at its close,
     * where it counts (session.c): counted so here. */
    dbs_error rerr;
    int rrc = drv->reset_failure ? drv->reset_failure(lc->c->impl, &rerr) : DBS_OK;
    if (rrc != DBS_OK) {
        dbs__errors_note(lc->lane->pool, rrc, rerr.sqlstate);
        if (lc->broke.code >= 0)
            lc->broke = rerr;
    }
    bool progressed = done != NULL;
    while (done) {
        dbs__aunit *next = done->next;
        dbs_unit *u = done->owner;
        /* units come back oldest first: u is lc's head */
        if (u->prev)
            u->prev->next = u->next;
        else
            lc->head = u->next;
        if (u->next)
            u->next->prev = u->prev;
        else
            lc->tail = u->prev;
        u->prev = u->next = NULL;
        u->conn = NULL;
        lc->inflight--;
        if (u->cancel_sent)
            lc->cancel_ns = 0;
        (void)attempt_outcome(l, u, &lc->last);
        attempt_done(l, u, now);
        done = next;
    }
    if (progressed)
        lc->last_rx_ns = now;
    /* bytes are not progress: rows of a statement still running, or its
     * notices, keep coming; only a whole answer is */
    uint64_t answers = drv->a_results ? drv->a_results(lc->c->impl) : 0;
    if (progressed || answers != lc->answers || !drv->a_results) {
        lc->answers = answers;
        lc->answer_ns = drv->a_results ? now : lc->last_rx_ns;
    }
    conn_cancel_head(lc, now);
    conn_watch(l, lc, lc->inflight > 0 || !drv->a_idle(lc->c->impl) ? want : 0);
    if (lc->inflight == 0) {
        lc->cancel_ns = 0;
        if (lc->retired || drv->is_broken(lc->c->impl))
            conn_drop(l, lc, true);
        else if (drv->a_idle(lc->c->impl) &&
                 (lc->lane->nq == 0 || l->closing || others_wait(lc->lane)))
            conn_drop(l, lc, false);
    }
}

/* ---- dispatch ---- */

static void worker_done(dbs__aunit *au, void *arg);

/* Hands u's attempt out (u already off the queue). */
static void native_send(dbs_loop *l, lconn *lc, dbs_unit *u)
{
    lane *ln = lc->lane;
    dbs_error e;
    u->au.rc = DBS_OK;
    u->au.commit_sent = false;
    u->au.commit_pos = 0;
    u->au.err.code = DBS_OK;
    u->au.err.message[0] = '\0';
    u->au.err.sqlstate[0] = '\0';
    for (size_t i = 0; i < u->au.n; i++)
        u->au.stmts[i].op_us = -1;
    int rc = ln->pool->drv->a_send(lc->c->impl, &u->au, &e);
    if (rc != DBS_OK) {
        /* DBS_ECONNECT: the connection takes no more units (lost, or
         * retired by the backend): the unit, untouched, goes to another */
        bool conn_refused = rc == DBS_ECONNECT || ln->pool->drv->is_broken(lc->c->impl);
        if (conn_refused) {
            lc->retired = true;
            lc->last = e;
            lc->last.code = rc;
            /* the unit is untouched: first in line again */
            u->prev = NULL;
            u->next = ln->qhead;
            if (ln->qhead)
                ln->qhead->prev = u;
            else
                ln->qtail = u;
            ln->qhead = u;
            ln->nq++;
            l->queued++;
            u->state = U_QUEUED;
            if (lc->inflight == 0)
                conn_drop(l, lc, true);
            else if (ln->pool->drv->is_broken(lc->c->impl))
                conn_abandon(l, lc, DBS_ECONNECT, "the connection was lost");
            return;
        }
        /* The unit failed alone (out of memory, a statement the backend
         * refuses): a failed attempt, counted as attempt_done counts those
         * the server ends, since no session counts it either. */
        dbs__errors_note(ln->pool, rc, e.sqlstate);
        unit_complete(l, u, rc, &e);
        return;
    }
    u->attempts++;
    u->state = U_SENT;
    u->conn = lc;
    u->prev = lc->tail;
    u->next = NULL;
    if (lc->tail)
        lc->tail->next = u;
    else
        lc->head = u;
    lc->tail = u;
    if (lc->inflight++ == 0) {
        lc->last_rx_ns = lc->answer_ns = dbs__now_ns();
        lc->answers = drv_results(lc);
    }
}

static lconn *lane_pick(const dbs_loop *l, const lane *ln)
{
    lconn *best = NULL;
    for (lconn *lc = ln->conns; lc; lc = lc->next) {
        if (lc->dead || lc->retired || lc->inflight >= l->cfg.pipeline_depth)
            continue;
        if (!best || lc->inflight < best->inflight)
            best = lc;
    }
    return best;
}

/* Connections of ln with nothing in flight go back to the pool while
 * nothing waits for them. */
static void lane_sweep(dbs_loop *l, lane *ln)
{
    const dbs__driver *drv = ln->pool->drv;
    bool yield = ln->conns && others_wait(ln);
    for (lconn *lc = ln->conns, *next; lc; lc = next) {
        next = lc->next;
        if (lc->dead || lc->inflight > 0)
            continue;
        if (lc->retired || drv->is_broken(lc->c->impl))
            conn_drop(l, lc, true);
        else if ((ln->nq == 0 || yield) && drv->a_idle(lc->c->impl))
            conn_drop(l, lc, false);
    }
}

static void dispatch_native(dbs_loop *l, lane *ln)
{
    bool yield = ln->conns && others_wait(ln);
    while (ln->qhead && !yield) {
        lconn *lc = lane_pick(l, ln);
        if (!lc)
            break;
        int before = lc->inflight;
        /* fill this connection's spare depth, then flush it once */
        while (ln->qhead && lc->inflight < l->cfg.pipeline_depth && !lc->dead &&
               !lc->retired) {
            dbs_unit *u = ln->qhead;
            /* A unit with a timeout goes only where nothing runs ahead of
             * it: behind another unit its bound could not be kept (the
             * server runs a flight in order, and a cancel request reaches
             * only the statement running, another unit's). It waits in the
             * queue instead, where its timeout ends it (DBS_ETIMEOUT). */
            if (u->deadline_ns && lc->inflight > 0)
                break;
            queue_unlink(l, u);
            native_send(l, lc, u);
            if (u->state == U_QUEUED)
                break; /* the connection was lost */
        }
        if (!lc->dead && lc->inflight != before)
            conn_step(l, lc, 0);
        else if (!lc->dead)
            break; /* nothing this connection may take now */
    }
    /* more connections, while units wait for one and the bound allows (a
     * unit with a timeout at the head counts only idle ones) */
    bool timed = ln->qhead && ln->qhead->deadline_ns;
    int spare = 0;
    for (lconn *lc = ln->conns; lc; lc = lc->next)
        if (!lc->dead && !lc->retired && !yield)
            spare += timed ? lc->inflight == 0 : l->cfg.pipeline_depth - lc->inflight;
    while (!ln->closed && ln->nq > spare + ln->nreq * l->cfg.pipeline_depth &&
           l->nconns + l->nreqs < l->cfg.max_connections) {
        int before = ln->nreq + ln->nconns;
        lane_acquire(l, ln);
        if (ln->closed)
            break;
        if (ln->nreq + ln->nconns == before)
            break; /* out of memory: lane_nomem answered */
        if (ln->conns && lane_pick(l, ln) && ln->qhead) {
            dispatch_native(l, ln);
            return;
        }
    }
}

static void wlist_add(dbs_loop *l, dbs_unit *u)
{
    u->prev = NULL;
    u->next = l->whead;
    if (l->whead)
        l->whead->prev = u;
    l->whead = u;
    l->nworker++;
}

static void wlist_del(dbs_loop *l, dbs_unit *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else
        l->whead = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
    l->nworker--;
}

static void dispatch_workers(dbs_loop *l, lane *ln)
{
    while (ln->qhead && l->nworker < l->cfg.max_connections) {
        dbs_unit *u = ln->qhead;
        queue_unlink(l, u);
        /* the acquire bound counts from when the unit was queued here; a
         * worker still tries once for a unit past it, so that it is
         * offered a connection before the bound ends it */
        int64_t acquire = u->queued_ns + dbs__ms_ns(l->pool->cfg.acquire_timeout_ms);
        u->au.rc = DBS_OK;
        u->au.commit_sent = false;
        u->au.commit_pos = 0;
        u->au.uncounted = false;
        u->au.err.code = DBS_OK;
        u->au.err.message[0] = '\0';
        u->post.kind = POST_UNIT;
        u->mb = l->mb;
        u->state = U_WORKER;
        u->attempts++;
        wlist_add(l, u);
        atomic_fetch_add(&l->mb->refs, 1);
        int rc = dbs__workers_unit(l->pool, &u->au, u->deadline_ns, acquire, u->file,
                                   u->line, u->func, worker_done, u);
        if (rc != DBS_OK) {
            mbox_unref(l->mb);
            wlist_del(l, u);
            u->attempts--;
            dbs__errors_note(ln->pool, rc, NULL); /* no worker's session counted it */
            /* the hand-off fails for want of memory (or of a worker
             * thread) as well as for a closed pool: say which */
            unit_fail(l, u, rc,
                      rc == DBS_ECLOSED ? "the pool is closed"
                      : rc == DBS_ENOMEM
                          ? "out of memory handing the unit to a worker thread: nothing was sent"
                          : "the unit could not be handed to a worker thread");
        }
    }
}

/* Units queued for replica i were sent there because it qualified then;
 * the wait for a connection may have outlasted the lag bound or its
 * standby role, so before any of them starts the replica is judged again,
 * and if it no longer qualifies they choose a lane again (another replica,
 * the primary, or DBS_EUNAVAILABLE without replica_fallback), as a
 * blocking read-only session gives back a replica's connection then. */
static void lane_recheck(dbs_loop *l, int i)
{
    lane *ln = &l->lanes[i];
    if (!ln->qhead || dbs__replica_still_ok(l->pool, i - 1))
        return;
    int64_t now = dbs__now_ns();
    for (int n = ln->nq; n > 0 && ln->qhead; n--) {
        dbs_unit *u = ln->qhead;
        queue_unlink(l, u);
        unit_enqueue(l, u, now);
    }
}

static void dispatch(dbs_loop *l)
{
    if (l->closing)
        return;
    /* A pool shut down meanwhile: units still waiting end DBS_ECLOSED, as a
     * blocking waiter wakes with it and a worker's queued unit ends; the
     * loop's connections would otherwise start them, after the shutdown.
     * What is in flight runs on, as an open session does. */
    for (int i = 0; i < l->nlanes; i++)
        if (!l->lanes[i].closed && dbs__pool_closed(l->lanes[i].pool))
            lane_closed(l, &l->lanes[i]);
    /* first, so that a unit moved to another lane goes out in this pass */
    for (int i = 1; i < l->nlanes; i++)
        lane_recheck(l, i);
    /* Every lane's connections count against max_connections: one that a
     * lane no longer needs goes back before any lane asks for one, or a
     * lane dispatched before it would wait for the next run (the acquire
     * bound, when nothing else wakes the loop). */
    for (int i = 0; i < l->nlanes && l->native; i++)
        lane_sweep(l, &l->lanes[i]);
    int64_t now = dbs__now_ns();
    for (int i = 0; i < l->nlanes; i++) {
        if (l->native) {
            lane *ln = &l->lanes[i];
            ln->prev_pass_ns = ln->pass_ns;
            ln->pass_ns = now;
            if (ln->qhead)
                dispatch_native(l, ln);
            lane_sweep(l, &l->lanes[i]);
        } else if (l->lanes[i].qhead) {
            dispatch_workers(l, &l->lanes[i]);
        }
    }
}

/* On a worker: u's attempt ended. */
static void worker_done(dbs__aunit *au, void *arg)
{
    (void)au;
    dbs_unit *u = arg;
    /* once posted, u is the loop's: nothing of it is read after */
    mbox *m = u->mb;
    if (!mbox_post(m, &u->post))
        unit_free(u); /* the loop closed: its callback ran there */
    mbox_unref(m);
}

/* ---- an attempt's outcome ---- */

/* What u's attempt ended with, as its callback and the counts see it: a
 * cancel of the loop's own is the bound that caused it. Fills *out. */
static int attempt_outcome(const dbs_loop *l, const dbs_unit *u, dbs_error *out)
{
    int rc = u->au.rc;
    dbs_error e = u->au.err;
    e.code = rc;
    if (rc == DBS_ECANCELED && u->cancel != CW_USER && !u->au.commit_sent) {
        if (u->cancel == CW_STMT)
            dbs__err(&e, DBS_ESTMT_TIMEOUT,
                     "no answer within statement_timeout_ms=%d: the statement was "
                     "cancelled on the server", l->pool->cfg.statement_timeout_ms);
        else if (u->cancel == CW_DEADLINE)
            dbs__err(&e, DBS_ESTMT_TIMEOUT,
                     "the unit's timeout (%d ms) passed while it ran: it was cancelled on "
                     "the server", u->timeout_ms);
        else if (u->cancel == CW_DEADLINE_QUEUED)
            dbs__err(&e, DBS_ETIMEOUT,
                     "the unit's timeout (%d ms) passed while it waited for a worker "
                     "thread, before it had a connection: raise dbs_loop_config.workers "
                     "or the timeout", u->timeout_ms);
        rc = e.code;
    }
    /* A failure, before its COMMIT went out, of a unit the program
     * cancelled: it ends as cancelled, as promised, with the cause quoted
     * (a unit pipelined behind one whose cancel spoiled the connection's
     * state did not run at all; the cancel request itself may reach the
     * unit's statement before the loop marked the connection's cancel).
     * Nothing of it committed. */
    if (u->cancel == CW_USER && rc != DBS_OK && rc != DBS_ECANCELED &&
        rc != DBS_ECOMMIT_UNKNOWN && !u->au.commit_sent) {
        dbs__err(&e, DBS_ECANCELED, "the unit was cancelled; rolled back (it had failed "
                                    "with: %.200s)", u->au.err.message);
        rc = e.code;
    }
    *out = e;
    return rc;
}

static void attempt_done(dbs_loop *l, dbs_unit *u, int64_t now)
{
    dbs_error e;
    int rc = attempt_outcome(l, u, &e);
    /* Cancelled without the loop asking: a cancel request meant for the
     * unit ahead of it on the connection arrived after that one ended.
     * Nothing of it committed: run it again like a lost connection. */
    bool stray = rc == DBS_ECANCELED && u->cancel == CW_NONE && !u->au.commit_sent;
    /* A unit on the loop's connection has no session: each failed
     * attempt is counted here, in the table of the pool it ran on, as a
     * session's would be, as the callback will report it. So is a
     * worker's once its session had a connection (au.uncounted: a cancel
     * ends it DBS_ECANCELED, or DBS_ESTMT_TIMEOUT for the unit's
     * timeout, on every backend); its failures before that (its acquire)
     * were counted on the worker. */
    if (rc != DBS_OK && (l->native || u->au.uncounted) && !stray)
        dbs__errors_note(u->lane ? u->lane->pool : l->pool, rc, e.sqlstate);
    /* A worker's unit that its timeout took out of the workers' queue had
     * no session either: a timeout without a connection, as in the loop's
     * queue. */
    if (rc == DBS_ETIMEOUT && !l->native && u->cancel == CW_DEADLINE_QUEUED) {
        unit_timed_out(l, l->pool, u, &e);
        return;
    }
    /* Likewise each statement that ran counts once in the operation
     * histogram, as a worker's dbs_query would have counted it. */
    if (l->native)
        dbs__op_note(u->lane ? u->lane->pool : l->pool, &u->au);
    if (rc == DBS_OK) {
        if (l->native && u->au.commit_pos && u->lane == &l->lanes[0] && l->pool->on_commit)
            l->pool->on_commit(l->pool, u->ctx.user_id, u->au.commit_pos);
        unit_complete(l, u, DBS_OK, NULL);
        return;
    }
    /* A COMMIT that went out with its outcome unknown may have written:
     * the user's reads need a position that covers it, as a session's
     * (see end_tx in session.c). */
    if (l->native && u->au.commit_sent && !u->au.read_only && u->lane == &l->lanes[0] &&
        l->pool->on_commit &&
        (rc == DBS_ECOMMIT_UNKNOWN || rc == DBS_ECONNECT || rc == DBS_ESTMT_TIMEOUT))
        l->pool->on_commit(l->pool, u->ctx.user_id, UINT64_MAX);
    if (!(transient(rc) || stray) || u->au.commit_sent || u->cancel != CW_NONE ||
        l->closing || u->attempts > l->pool->cfg.retry_max ||
        (u->deadline_ns && now >= u->deadline_ns)) {
        if (!e.message[0])
            dbs__err(&e, rc, "%s", dbs_strerror(rc));
        unit_complete(l, u, rc, &e);
        return;
    }
    /* dbs_transact's rule: a transient failure before COMMIT runs the whole
     * unit again, after a jittered back-off */
    unit_rows_free(u);
    u->err = e;
    dbs__pool_count_retry(l->pool);
    const dbs__who who = {.ctx = &u->ctx, .file = u->file, .line = u->line, .func = u->func,
                          .thread = (unsigned long)l->owner, .attempt = u->attempts + 1};
    dbs__emit_who(l->pool, DBS_EVENT_RETRY, &who, rc, e.message);
    int64_t ceiling = l->pool->cfg.retry_base_ms;
    for (int i = 1; i < u->attempts && ceiling < l->pool->cfg.retry_cap_ms; i++)
        ceiling *= 2;
    if (ceiling > l->pool->cfg.retry_cap_ms)
        ceiling = l->pool->cfg.retry_cap_ms;
    int64_t wait_ms = ceiling > 0 ? (int64_t)(dbs__random() % (uint64_t)(ceiling + 1)) : 0;
    if (wait_ms == 0) {
        unit_enqueue(l, u, now);
        return;
    }
    u->state = U_BACKOFF;
    u->retry_ns = now + dbs__ms_ns((int)wait_ms);
    if (heap_update(l, u) != DBS_OK)
        unit_enqueue(l, u, now);
}

/* ---- posts ---- */

static void handle_post(dbs_loop *l, post *p)
{
    if (p->kind == POST_UNIT) {
        dbs_unit *u = (dbs_unit *)(void *)((char *)p - offsetof(dbs_unit, post));
        if (u->orphan) {
            if (u->cb_ran)
                unit_free(u); /* its callback ran when it was orphaned */
            else
                u->post_seen = true; /* freed once its callback ran */
            return;
        }
        wlist_del(l, u);
        attempt_done(l, u, dbs__now_ns());
        return;
    }
    creq *r = (creq *)(void *)((char *)p - offsetof(creq, post));
    if (r->cancelled) {
        if (r->connecting) {
            if (r->conn)
                dbs__pool_loop_giveback(r->pool, r->conn, false, false, 0, NULL);
            dbs__pool_unref(r->pool);
        } else if (r->req.item) {
            /* served, and taken back by dbs__rp_cancel into a pool that
             * closed (or keeps nothing) meanwhile: it is ours to close */
            dbs__pool_loop_left(r->pool, dbs__conn_of(r->req.item));
        }
        free(r);
        return;
    }
    lane *ln = r->lane;
    if (r->connecting) {
        req_unlink(l, r);
        dbs__pool_unref(r->pool);
        if (r->conn) {
            conn_got(l, ln, r->conn, r->start_ns, true);
        } else if (r->rc == DBS_ECLOSED) {
            lane_closed(l, ln);
        } else {
            /* The connect failed: the unit waiting longest for this lane
             * fails with it, as a blocking acquire would (retried when
             * transient). */
            dbs_unit *u = ln->qhead;
            if (u) {
                queue_unlink(l, u);
                u->attempts++;
                u->au.rc = r->rc;
                u->au.err = r->err;
                u->au.commit_sent = false;
                attempt_done(l, u, dbs__now_ns());
            }
        }
        free(r);
        return;
    }
    /* the resource pool served the request */
    if (r->req.item) {
        req_unlink(l, r);
        conn_got(l, ln, dbs__conn_of(r->req.item), r->start_ns, false);
        free(r);
    } else if (r->req.may_create) {
        start_connect(l, r); /* stays listed until the connect posts */
    } else {
        req_unlink(l, r);
        free(r);
        lane_closed(l, ln);
    }
}

/* Requests of lanes no unit waits on any more (cancelled, timed out)
 * leave the pool's queue, as a worker's wait does when its unit is
 * cancelled: queued there they count as waiting and would take a
 * connection ahead of a blocking session only for the loop to hand it
 * back. One served meanwhile puts back what it was served with; its post
 * is void. Connects under way run on (their connection goes back). */
static void retract_requests(dbs_loop *l)
{
    for (int i = 0; i < l->nlanes; i++) {
        lane *ln = &l->lanes[i];
        if (ln->nq > 0)
            continue;
        for (creq *r = ln->reqs, *next; r; r = next) {
            next = r->next;
            if (r->connecting)
                continue;
            req_unlink(l, r);
            r->cancelled = true;
            if (dbs__rp_cancel(&ln->pool->rp, &r->req, true)) {
                free(r); /* still queued: its wake never runs */
                mbox_unref(l->mb);
            }
        }
    }
}

/* ---- timers ---- */

/* u ends DBS_ETIMEOUT (e) without a connection: counted in p as a
 * blocking acquire that gives up is, with its timeout event, whichever
 * bound ended it and wherever it waited. */
static void unit_timed_out(dbs_loop *l, dbs_pool *p, dbs_unit *u, const dbs_error *e)
{
    const dbs__who who = {.ctx = &u->ctx, .file = u->file, .line = u->line,
                          .func = u->func, .thread = (unsigned long)l->owner,
                          .attempt = u->attempts};
    /* the event says what the unit's callback will read */
    dbs__pool_count_timeout(p, &who, e->message);
    unit_complete(l, u, DBS_ETIMEOUT, e);
}

static void unit_deadline(dbs_loop *l, dbs_unit *u)
{
    switch (u->state) {
    case U_QUEUED: {
        queue_unlink(l, u);
        dbs_error e;
        dbs__err(&e, DBS_ETIMEOUT, "the unit's timeout passed while it waited for a connection");
        unit_timed_out(l, u->lane ? u->lane->pool : l->pool, u, &e);
        break;
    }
    case U_BACKOFF: {
        dbs_error e;
        char last[300];
        memcpy(last, u->err.message, sizeof last - 1);
        last[sizeof last - 1] = '\0';
        dbs__err(&e, DBS_ETIMEOUT,
                 "the unit's timeout passed while it waited to run again after: %s", last);
        unit_timed_out(l, u->lane ? u->lane->pool : l->pool, u, &e);
        break;
    }
    case U_SENT:
        u->cancel = CW_DEADLINE;
        heap_remove(l, u);
        conn_cancel_head(u->conn, dbs__now_ns());
        break;
    case U_WORKER:
        u->cancel = CW_DEADLINE;
        heap_remove(l, u);
        if (dbs__workers_cancel(l->pool, &u->au, false) == DBS__WC_QUEUED)
            u->cancel = CW_DEADLINE_QUEUED;
        break;
    default:
        heap_remove(l, u);
        break;
    }
}

static int64_t cancel_bound_ns(const dbs_loop *l)
{
    const dbs_config *c = &l->pool->cfg;
    int ms = c->statement_timeout_ms > 0 ? c->statement_timeout_ms : CANCEL_BOUND_MS;
    return dbs__ms_ns(ms);
}

/* Fires what is due; returns the nearest timer still to come. */
static int64_t timers(dbs_loop *l, int64_t now)
{
    int64_t next = INT64_MAX;
    while (l->heap_n > 0) {
        dbs_unit *u = l->heap[0];
        int64_t w = unit_wake(u);
        if (w > now) {
            next = w;
            break;
        }
        if (u->deadline_ns && now >= u->deadline_ns) {
            unit_deadline(l, u);
        } else {
            /* the back-off is over */
            heap_remove(l, u);
            unit_enqueue(l, u, now);
        }
    }
    const dbs_config *pc = &l->pool->cfg;
    for (int i = 0; i < l->nlanes; i++) {
        lane *ln = &l->lanes[i];
        /* the resource pool's barge limit: strict order once the oldest
         * request of this loop's has waited it */
        int64_t barge = ln->pool->rp.cfg.barge_ns;
        if (barge > 0) {
            for (creq *r = ln->reqs; r; r = r->next) {
                if (r->connecting)
                    continue;
                if (now - r->start_ns >= barge) {
                    dbs__rp_serve_in_order(&ln->pool->rp);
                    l->served = true;
                    break;
                }
                if (r->start_ns + barge < next)
                    next = r->start_ns + barge;
            }
        }
        /* the statement bound, and the bound on an unanswered cancel */
        for (lconn *lc = ln->conns, *lnext; lc; lc = lnext) {
            lnext = lc->next;
            if (lc->dead)
                continue;
            if (lc->inflight == 0) {
                /* Its units came back with their COMMIT's answer; the
                 * reset that followed them may still be unanswered, and
                 * only another unit sent on it would put it under the
                 * statement bound: the bound holds for the reset's round
                 * trip as a blocking release's, and past it the
                 * connection is discarded (the loop would hold it, in
                 * use, for as long as the network stays silent). */
                if (pc->statement_timeout_ms <= 0 || ln->pool->drv->a_idle(lc->c->impl))
                    continue;
                int64_t until = lc->last_rx_ns + dbs__ms_ns(pc->statement_timeout_ms);
                if (now >= until) {
                    ln->pool->drv->a_cancel(lc->c->impl);
                    conn_drop(l, lc, true);
                    continue;
                }
                if (until < next)
                    next = until;
                continue;
            }
            if (lc->cancel_ns) {
                int64_t until = lc->cancel_ns + cancel_bound_ns(l);
                if (now >= until && lc->last_rx_ns <= lc->cancel_ns) {
                    dbs_unit *h = lc->head;
                    int rc = h->cancel == CW_USER ? DBS_ECANCELED : DBS_ESTMT_TIMEOUT;
                    conn_abandon(l, lc, rc,
                                 "the server did not answer the cancel request in time: "
                                 "the connection was discarded");
                    continue;
                }
                if (now >= until && lc->cancel_resends >= CANCEL_RESENDS) {
                    /* answered each time, and the unit goes on: its
                     * statements catch the request; only closing ends it */
                    dbs_unit *h = lc->head;
                    int rc = h->cancel == CW_USER ? DBS_ECANCELED : DBS_ESTMT_TIMEOUT;
                    conn_abandon(l, lc, rc,
                                 "the unit went on through every cancel request (its "
                                 "statements catch query_canceled): the connection was "
                                 "discarded");
                    continue;
                }
                if (now >= until) {
                    /* The server answered since, yet the unit is still
                     * out: the request reached a statement that caught
                     * it, or one already over, and the next runs on. Not
                     * answered is not over: it goes again (else the bound
                     * stops holding, and the past deadline spins the
                     * program's loop), a few times. */
                    lc->cancel_ns = now;
                    lc->cancel_resends++;
                    ln->pool->drv->a_cancel(lc->c->impl);
                    until = now + cancel_bound_ns(l);
                }
                if (until < next)
                    next = until;
            } else if (pc->statement_timeout_ms > 0) {
                int64_t until = lc->answer_ns + dbs__ms_ns(pc->statement_timeout_ms);
                if (now >= until) {
                    lc->head->cancel = CW_STMT;
                    conn_cancel_head(lc, now);
                    until = lc->cancel_ns + cancel_bound_ns(l);
                }
                if (until < next)
                    next = until;
            }
        }
    }
    return next;
}

/* A connect for ln under way that u waits for (its post wakes the loop):
 * begun within u's bound, or by the dispatch pass that first offered u a
 * connection. */
static bool connect_begun(const lane *ln, const dbs_unit *u, int64_t bound)
{
    for (const creq *r = ln->reqs; r; r = r->next)
        if (r->connecting &&
            (r->start_ns <= u->queued_ns + bound ||
             (r->pass_ns < u->queued_ns && u->queued_ns <= r->start_ns)))
            return true;
    return false;
}

/* The acquire bound, oldest first: units that waited acquire_timeout_ms
 * for a connection end DBS_ETIMEOUT. Run after a dispatch pass, so that a
 * unit is offered what the pool has (an idle connection, a slot to
 * connect on) before its bound can end it, as a blocking acquire tries
 * once before it waits: with acquire_timeout_ms 0 that try is all it
 * gets. A connect begun within a unit's bound is waited for, as a
 * blocking acquire waits for the one it began (its bound plus one
 * connect). Returns the nearest bound still to come. */
static int64_t acquire_bounds(dbs_loop *l, int64_t now)
{
    int64_t next = INT64_MAX;
    const dbs_config *pc = &l->pool->cfg;
    int64_t bound = dbs__ms_ns(pc->acquire_timeout_ms);
    for (int i = 0; i < l->nlanes; i++) {
        lane *ln = &l->lanes[i];
        while (ln->qhead && now - ln->qhead->queued_ns >= bound &&
               !connect_begun(ln, ln->qhead, bound)) {
            dbs_unit *u = ln->qhead;
            queue_unlink(l, u);
            dbs__rp_stats st;
            dbs__rp_stats_get(&ln->pool->rp, &st);
            dbs_error e;
            dbs__err(&e, DBS_ETIMEOUT,
                     "timed out waiting for a connection: none within acquire_timeout_ms=%d "
                     "(pool size %d, %d in use, %d others waiting, %d units waiting in this "
                     "loop): raise pool_size/max_overflow, or submit fewer units at once",
                     pc->acquire_timeout_ms, st.open, st.in_use, st.waiting, ln->nq);
            unit_timed_out(l, ln->pool, u, &e);
        }
        if (ln->qhead && ln->qhead->queued_ns + bound < next &&
            !connect_begun(ln, ln->qhead, bound))
            next = ln->qhead->queued_ns + bound;
    }
    return next;
}

/* ---- public: the loop ---- */

void dbs_loop_config_init(dbs_loop_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->pipeline_depth = 16;
    cfg->max_connections = 0; /* the pool's pool_size + max_overflow */
    cfg->queue_max = 4096;
    cfg->workers = 4;
}

/* ---- the owner thread's exit ----
 *
 * A thread that exits with loops open has them closed at its exit, from a
 * pthread key destructor on that thread (so the owner check holds), as
 * session.c closes its sessions: its loops are listed in a thread-local
 * list, which lives until the thread is gone. The two destructors run in
 * no set order and share nothing: a loop's close opens no session of its
 * thread, and a session's close touches no loop. */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static bool exit_key_made;
static _Thread_local bool exit_armed;
static _Thread_local dbs_loop *open_loops; /* newest first, through t_next */

static void owner_exit(void *unused);

static void exit_key_init(void)
{
    exit_key_made = pthread_key_create(&exit_key, owner_exit) == 0;
}

/* l, just opened, joins its thread's loops. Without the key (none could
 * be had) its thread's exit leaves it open, as a thread that never ends
 * would. */
static void track(dbs_loop *l)
{
    if (!exit_armed) {
        pthread_once(&exit_once, exit_key_init);
        if (exit_key_made && pthread_setspecific(exit_key, &exit_armed) == 0)
            exit_armed = true;
    }
    l->t_prev = NULL;
    l->t_next = open_loops;
    if (open_loops)
        open_loops->t_prev = l;
    open_loops = l;
}

static void untrack(dbs_loop *l)
{
    if (l->t_prev)
        l->t_prev->t_next = l->t_next;
    else if (open_loops == l)
        open_loops = l->t_next;
    if (l->t_next)
        l->t_next->t_prev = l->t_prev;
    l->t_prev = l->t_next = NULL;
}

/* Parenthesised, as dbs_unit_new: the header's macro routes callers to
 * dbs_loop_open_at; the plain symbol stays for the ABI. */
dbs_loop *(dbs_loop_open)(dbs_pool *pool, const dbs_loop_config *cfg, dbs_error *err)
{
    return dbs_loop_open_at(pool, cfg, err, "?", 0, "dbs_loop_open");
}

dbs_loop *dbs_loop_open_at(dbs_pool *pool, const dbs_loop_config *cfg, dbs_error *err,
                           const char *file, int line, const char *func)
{
    DBS__NO_CANCEL(cancel_old);
    dbs_error local;
    if (!err)
        err = &local;
    if (!pool || pool->magic != DBS__POOL_MAGIC) {
        dbs__err(err, DBS_EMISUSE, "dbs_loop_open: not an open pool (NULL or freed)");
        return NULL;
    }
    if (dbs__fork_check(pool, "dbs_loop_open", err) != DBS_OK)
        return NULL;
    dbs_loop_config c;
    dbs_loop_config_init(&c);
    if (cfg)
        c = *cfg;
    if (c.pipeline_depth < 1 || c.pipeline_depth > 1024) {
        dbs__err(err, DBS_EMISUSE,
                 "dbs_loop_open: pipeline_depth is %d; it must be 1..1024 (1: no pipelining)",
                 c.pipeline_depth);
        return NULL;
    }
    if (c.max_connections < 0 || c.queue_max < 1 || c.workers < 1 || c.workers > 256) {
        dbs__err(err, DBS_EMISUSE,
                 "dbs_loop_open: max_connections %d (>= 0; 0: the pool's size), queue_max %d "
                 "(>= 1), workers %d (1..256): start from dbs_loop_config_init",
                 c.max_connections, c.queue_max, c.workers);
        return NULL;
    }
    /* A NONE pool bounds its connections by nothing (max_size is
     * INT_MAX): a loop on it still holds no more than pool_size +
     * max_overflow, as the header promises every loop. */
    int ceiling = pool->mode == DBS_POOL_NONE ? pool->cfg.pool_size + pool->cfg.max_overflow
                                              : pool->rp.cfg.max_size;
    if (c.max_connections == 0 || c.max_connections > ceiling)
        c.max_connections = ceiling;
    if (dbs__pool_closed(pool)) {
        dbs__err(err, DBS_ECLOSED, "dbs_loop_open: the pool is closed");
        return NULL;
    }
    dbs_loop *l = calloc(1, sizeof *l);
    mbox *mb = calloc(1, sizeof *mb);
    int nlanes = 1 + dbs__replicas_count(pool);
    lane *lanes = calloc((size_t)nlanes, sizeof *lanes);
    if (!l || !mb || !lanes) {
        free(l);
        free(mb);
        free(lanes);
        dbs__err(err, DBS_ENOMEM, "out of memory opening an event loop");
        return NULL;
    }
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    if (l->epfd < 0 || mb->efd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, mb->efd, &e) != 0) {
        int en = errno;
        if (l->epfd >= 0)
            close(l->epfd);
        if (mb->efd >= 0)
            close(mb->efd);
        free(l);
        free(mb);
        free(lanes);
        dbs__err(err, DBS_ENOMEM, "dbs_loop_open: cannot make its descriptor: %s",
                 strerror(en));
        return NULL;
    }
    pthread_mutex_init(&mb->mu, NULL);
    atomic_init(&mb->refs, 1);
    l->native = pool->drv->a_send != NULL;
    if (dbs__workers_start(pool, c.workers, err) != DBS_OK ||
        dbs__pool_hold(pool, err) != DBS_OK) {
        close(l->epfd);
        close(mb->efd);
        mbox_unref(mb);
        free(l);
        free(lanes);
        return NULL;
    }
    l->magic = LOOP_MAGIC;
    atomic_init(&l->refs, 1);
    l->owner_id = dbs__thread_id();
    l->owner = pthread_self();
    l->file = file;
    l->line = line;
    l->func = func;
    l->fork_gen = pool->fork_gen;
    l->drv = pool->drv;
    l->pool = pool;
    l->cfg = c;
    l->mb = mb;
    l->lanes = lanes;
    l->nlanes = l->native ? nlanes : 1;
    lanes[0].pool = pool;
    for (int i = 1; i < nlanes; i++)
        lanes[i].pool = dbs__replica_pool(pool, i - 1);
    atomic_init(&l->kick, false);
    atomic_init(&l->next_ns, INT64_MAX);
    track(l);
    err->code = DBS_OK;
    return l;
}

int dbs_loop_fd(const dbs_loop *loop)
{
    if (!loop || loop->magic != LOOP_MAGIC)
        return -1;
    return loop->epfd;
}

int dbs_loop_timeout_ms(const dbs_loop *loop)
{
    if (!loop || loop->magic != LOOP_MAGIC)
        return -1;
    if (atomic_load_explicit(&loop->kick, memory_order_relaxed))
        return 0;
    int64_t next = atomic_load_explicit(&loop->next_ns, memory_order_relaxed);
    if (next == INT64_MAX)
        return -1;
    int64_t left = next - dbs__now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000; /* never early */
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static void take_posts(dbs_loop *l)
{
    l->served = false;
    for (post *p = mbox_take(l->mb), *next; p; p = next) {
        next = p->next;
        handle_post(l, p);
    }
}

/* Reads what is ready: the connections' sockets, then the mailbox. */
static void take_ready(dbs_loop *l)
{
    struct epoll_event evs[LOOP_EVENTS];
    int n = epoll_wait(l->epfd, evs, LOOP_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        lconn *lc = evs[i].data.ptr;
        if (!lc || lc->dead)
            continue;
        short re = 0;
        if (evs[i].events & EPOLLIN)
            re |= POLLIN;
        if (evs[i].events & EPOLLOUT)
            re |= POLLOUT;
        if (evs[i].events & EPOLLERR)
            re |= POLLERR;
        if (evs[i].events & EPOLLHUP)
            re |= POLLHUP;
        conn_step(l, lc, re);
    }
    take_posts(l);
}

int dbs_loop_run(dbs_loop *l)
{
    DBS__NO_CANCEL(cancel_old);
    if (!l || l->magic != LOOP_MAGIC || !on_owner(l) || l->in_run || forked(l))
        return DBS_EMISUSE;
    l->in_run = true;
    atomic_store_explicit(&l->kick, false, memory_order_relaxed);
    int completed = 0;
    bool capped = false;
    for (int round = 0;; round++) {
        /* Again after callbacks: one that took a while (a program's slow
         * handler) must not make the timers below judge units by a state
         * older than what arrived meanwhile (a connection the pool handed
         * over, an answer): the acquire bound would end a unit whose
         * connection waits in the mailbox. */
        take_ready(l);
        timers(l, dbs__now_ns());
        /* a connection kept for a thread, handed to the loop's request at
         * its barge limit: the loop's before the acquire bound is judged
         * (both pass in the same run when the loop ran late) */
        if (l->served)
            take_posts(l);
        dispatch(l);
        acquire_bounds(l, dbs__now_ns());
        retract_requests(l);
        int k = run_callbacks(l, cancel_old);
        completed += k;
        if (k == 0)
            break;
        if (round > 64) {
            /* what the last callbacks submitted has not gone out: the
             * next run is due at once (their submit's kick is cleared
             * below) */
            capped = true;
            break;
        }
    }
    /* what the callbacks submitted went out: the nearest timer now (a
     * back-off that ends here queues its unit, offered a connection at
     * the next run before its acquire bound counts) */
    int64_t now = dbs__now_ns(), next = acquire_bounds(l, now), t = timers(l, now);
    atomic_store_explicit(&l->next_ns, t < next ? t : next, memory_order_relaxed);
    atomic_store_explicit(&l->kick, capped || l->done_head != NULL, memory_order_relaxed);
    while (l->dead) {
        lconn *lc = l->dead;
        l->dead = lc->next;
        free(lc);
    }
    l->in_run = false;
    return completed;
}

int dbs_loop_pending(const dbs_loop *l)
{
    if (!l || l->magic != LOOP_MAGIC || !on_owner(l))
        return DBS_EMISUSE;
    return l->pending;
}

/* In a child of fork(), a loop from before it: let go of without a word,
 * as a session from before the fork is. Its connections are silenced and
 * let go of (a cancel request, a reset or a goodbye would reach the
 * parent's sessions on them); nothing of the pool's is touched (the child
 * may have freed it, dbs_pool_after_fork_child counts no connection of
 * the parent's in use); the rest of its memory is left, its units and
 * requests with it, as the parent's other threads left theirs. */
static void loop_forget(dbs_loop *l)
{
    l->magic = DBS__DEAD_MAGIC;
    for (int i = 0; i < l->nlanes; i++) {
        for (lconn *lc = l->lanes[i].conns; lc; lc = lc->next) {
            if (lc->c && l->drv->forget)
                l->drv->forget(lc->c->impl);
            free(lc->c);
            lc->c = NULL;
        }
    }
    close(l->epfd); /* this process's descriptors only */
    close(l->mb->efd);
}

/* dbs_loop_close's work, the owner's checks passed. */
static void loop_close(dbs_loop *l)
{
    untrack(l);
    if (forked(l)) {
        loop_forget(l);
        return;
    }
    l->in_run = true;
    l->closing = true;
    /* what already arrived counts */
    for (post *p = mbox_take(l->mb), *next; p; p = next) {
        next = p->next;
        handle_post(l, p);
    }
    for (int i = 0; i < l->nlanes; i++) {
        lane *ln = &l->lanes[i];
        while (ln->qhead) {
            dbs_unit *u = ln->qhead;
            queue_unlink(l, u);
            unit_fail(l, u, DBS_ECANCELED, "the event loop was closed");
        }
        /* requests: taken back (a served one's post is in the mailbox) */
        for (creq *r = ln->reqs, *next; r; r = next) {
            next = r->next;
            r->cancelled = true;
            if (!r->connecting && dbs__rp_cancel(&ln->pool->rp, &r->req, true)) {
                free(r); /* still queued: its wake never runs */
                mbox_unref(l->mb);
            }
            /* else: its post comes, or came, and is dropped below or by
             * the connect job */
        }
        ln->reqs = NULL;
        /* connections: those with work in flight are cancelled on the server
         * and discarded */
        for (lconn *lc = ln->conns, *next; lc; lc = next) {
            next = lc->next;
            if (lc->inflight > 0) {
                lc->lane->pool->drv->a_cancel(lc->c->impl);
                conn_abandon(l, lc, DBS_ECANCELED, "the event loop was closed");
            } else {
                conn_drop(l, lc, false);
            }
        }
    }
    /* back-offs */
    while (l->heap_n > 0) {
        dbs_unit *u = l->heap[0];
        heap_remove(l, u);
        if (u->state == U_BACKOFF)
            unit_fail(l, u, DBS_ECANCELED, "the event loop was closed");
    }
    /* units on workers: cancelled there; their callback runs now, and
     * whoever sees the unit last frees it: this loop if the worker's post
     * arrives before the mailbox closes, else the worker */
    while (l->whead) {
        dbs_unit *u = l->whead;
        wlist_del(l, u);
        u->orphan = true;
        enum dbs__wcancel where = dbs__workers_cancel(l->pool, &u->au, true);
        /* a unit that failed before its COMMIT did not commit: only one
         * whose COMMIT went out may have */
        int rc = where == DBS__WC_COMMITTING || (where == DBS__WC_DONE && u->au.commit_sent)
                     ? DBS_ECOMMIT_UNKNOWN
                     : DBS_ECANCELED;
        /* Its outcome, posted later, is not read (orphan): a unit that had
         * a connection counts here as its callback says, as one in flight
         * on the loop's own connection does; one that waited (queued for
         * a worker, or for a connection) never failed; one over already
         * counted what its worker counted. */
        bool count = where == DBS__WC_STARTED || where == DBS__WC_COMMITTING ||
                     (where == DBS__WC_DONE && (u->au.uncounted || u->au.rc == DBS_OK));
        if (count)
            dbs__errors_note(l->pool, rc, NULL);
        if (rc == DBS_ECOMMIT_UNKNOWN)
            unit_fail(l, u, DBS_ECOMMIT_UNKNOWN,
                      "the event loop was closed while the unit's COMMIT was under way on a "
                      "worker: it may have committed");
        else
            unit_fail(l, u, DBS_ECANCELED, "the event loop was closed");
    }
    run_callbacks(l, -1);
    pthread_mutex_lock(&l->mb->mu);
    l->mb->closed = true;
    post *late = l->mb->head;
    l->mb->head = l->mb->tail = NULL;
    pthread_mutex_unlock(&l->mb->mu);
    for (post *p = late, *next; p; p = next) {
        next = p->next;
        handle_post(l, p);
    }
    run_callbacks(l, -1);
    while (l->dead) {
        lconn *lc = l->dead;
        l->dead = lc->next;
        free(lc);
    }
    close(l->epfd);
    close(l->mb->efd);
    mbox_unref(l->mb);
    free(l->heap);
    free(l->lanes);
    l->magic = DBS__DEAD_MAGIC;
    dbs_pool *p = l->pool;
    if (l->exiting) {
        const dbs__who who = {.file = l->file, .line = l->line, .func = l->func,
                              .thread = (unsigned long)l->owner};
        char why[320];
        snprintf(why, sizeof why,
                 "the event loop its thread left open was closed: %d units did not commit "
                 "(cancelled or failed), %d may have committed (their COMMIT had gone out), "
                 "%d committed; their callbacks did not run",
                 l->exit_failed, l->exit_unknown, l->exit_committed);
        dbs__pool_count_leak(p, true);
        dbs__emit_who(p, DBS_EVENT_LEAK_RECOVERED, &who, 0, why);
        /* Its thread is gone, but other threads may still have the
         * handle: the pool keeps the memory, so that a call on it finds
         * the loop closed (a session's exit does the same), and frees it
         * with its own, which the drop below may do. */
        dbs__pool_keep(p, &l->kept);
        dbs__pool_drop(p);
        return;
    }
    dbs__pool_drop(p);
    loop_unref(l);
}

void dbs_loop_close(dbs_loop *l)
{
    DBS__NO_CANCEL(cancel_old);
    if (!l || l->magic != LOOP_MAGIC)
        return;
    /* in_run is the owner's: another thread must not read it */
    if (!on_owner(l) || l->in_run) {
        dbs__log_line("dbscope: dbs_loop_close refused: called from %s",
                      !on_owner(l) ? "another thread than the loop's owner"
                                   : "inside dbs_loop_run (a callback)");
        return;
    }
    loop_close(l);
}

static void kept_free(dbs__kept *k)
{
    loop_unref((dbs_loop *)(void *)((char *)k - offsetof(dbs_loop, kept)));
}

/* The owner thread's exit (the key's destructor): each loop still open
 * is reported as a leak naming the line that opened it, closed as
 * dbs_loop_close closes it but without running its units' callbacks
 * (counted in the report instead), then reported recovered. Like a
 * dbs_loop_close it waits for no server: statements in flight are
 * cancelled by requests sent from other threads, connections with work
 * in flight are closed, requests in the pool's queue taken back. */
static void owner_exit(void *unused)
{
    /* a normal exit with a cancel pending must not act on it in here; a
     * cancel in on_event may have left the thread marked inside */
    dbs__cancel_thread_exit();
    DBS__NO_CANCEL(cancel_old);
    (void)unused;
    exit_armed = false; /* the key's value was cleared for this call */
    while (open_loops) {
        dbs_loop *l = open_loops;
        if (forked(l)) {
            loop_close(l); /* let go of: the pool is the parent's */
            continue;
        }
        /* A thread that left from inside a callback (pthread_exit) left
         * its run between two units: the state is whole, and the run
         * never returns. */
        l->in_run = false;
        dbs_pool *p = l->pool;
        const dbs__who who = {.file = l->file, .line = l->line, .func = l->func,
                              .thread = (unsigned long)l->owner};
        char why[256];
        snprintf(why, sizeof why,
                 "its thread exited with the event loop open, %d of its units not completed: "
                 "closed, its connections given back",
                 l->pending);
        dbs__pool_count_leak(p, false);
        dbs__emit_who(p, DBS_EVENT_LEAK, &who, 0, why);
        l->exiting = true;
        l->exit_failed = l->exit_unknown = l->exit_committed = 0;
        l->kept.free = kept_free;
        loop_close(l); /* takes l off open_loops; p may be freed by it */
    }
}

/* ---- public: units ---- */

static bool unit_ok(const dbs_unit *u)
{
    return u && u->magic == UNIT_MAGIC && u->loop && u->loop->magic == LOOP_MAGIC &&
           on_owner(u->loop) && !forked(u->loop);
}

/* Parenthesised: the header's macro of the same name routes callers to
 * dbs_unit_new_at; this keeps the plain symbol for the ABI (programs built
 * against a header without the macro) and for callers that take its
 * address. */
dbs_unit *(dbs_unit_new)(dbs_loop *l, const dbs_context *ctx, unsigned flags, dbs_error *err)
{
    return dbs_unit_new_at(l, ctx, flags, err, "?", 0, "dbs_unit_new");
}

dbs_unit *dbs_unit_new_at(dbs_loop *l, const dbs_context *ctx, unsigned flags, dbs_error *err,
                          const char *file, int line, const char *func)
{
    dbs_error local;
    if (!err)
        err = &local;
    if (!l || l->magic != LOOP_MAGIC) {
        dbs__err(err, DBS_EMISUSE, "dbs_unit_new: not an open loop (NULL or closed)");
        return NULL;
    }
    if (!on_owner(l)) {
        dbs__err(err, DBS_EMISUSE, "dbs_unit_new: the loop belongs to another thread");
        return NULL;
    }
    if (forked(l)) {
        dbs__err(err, DBS_EMISUSE,
                 "dbs_unit_new: this process is a child of the one that opened the loop "
                 "(fork()): its connections are the parent's; open a loop in the child, "
                 "after dbs_pool_after_fork_child");
        return NULL;
    }
    if (flags & ~DBS_UNIT_RO) {
        dbs__err(err, DBS_EMISUSE, "dbs_unit_new: flags 0x%x: only DBS_UNIT_RO is known",
                 flags);
        return NULL;
    }
    if ((flags & DBS_UNIT_RO) && !l->pool->drv->set_read_only) {
        dbs__err(err, DBS_ECONFIG,
                 "dbs_unit_new: the %s backend cannot enforce read-only units; drop "
                 "DBS_UNIT_RO", l->pool->drv->name);
        return NULL;
    }
    if (dbs__context_check(ctx, "dbs_unit_new", err) != DBS_OK)
        return NULL;
    dbs_unit *u = calloc(1, sizeof *u);
    if (!u) {
        dbs__err(err, DBS_ENOMEM, "out of memory making a unit");
        return NULL;
    }
    if (ctx) {
        const char *src[3] = {ctx->request_id, ctx->user_id, ctx->tenant_id};
        size_t len[3], total = 0;
        for (int i = 0; i < 3; i++) {
            len[i] = src[i] ? strlen(src[i]) + 1 : 0;
            total += len[i];
        }
        if (total) {
            u->ctx_buf = malloc(total);
            if (!u->ctx_buf) {
                free(u);
                dbs__err(err, DBS_ENOMEM, "out of memory making a unit");
                return NULL;
            }
            char *w = u->ctx_buf;
            const char **dst[3] = {&u->ctx.request_id, &u->ctx.user_id, &u->ctx.tenant_id};
            for (int i = 0; i < 3; i++) {
                if (!src[i])
                    continue;
                memcpy(w, src[i], len[i]);
                *dst[i] = w;
                w += len[i];
            }
        }
    }
    u->magic = UNIT_MAGIC;
    u->loop = l;
    u->flags = flags;
    u->file = file ? file : "?";
    u->line = line;
    u->func = func ? func : "dbs_unit_new";
    u->heap_idx = -1;
    u->au.ctx = &u->ctx;
    u->au.read_only = (flags & DBS_UNIT_RO) != 0;
    u->au.owner = u;
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    err->code = DBS_OK;
    return u;
}

/* The bytes a parameter points at (text, JSON, blob, UUID), or 0 for a
 * value held in the dbs_value itself. */
static size_t param_bytes(const dbs_value *v)
{
    if (v->type != DBS_TYPE_TEXT && v->type != DBS_TYPE_JSON && v->type != DBS_TYPE_BLOB &&
        v->type != DBS_TYPE_UUID)
        return 0;
    if (!v->b.p)
        return 0;
    bool text = v->type == DBS_TYPE_TEXT || v->type == DBS_TYPE_JSON;
    return (text && v->b.n == SIZE_MAX ? strlen(v->b.p) : v->b.n) + 1;
}

int dbs_unit_add(dbs_unit *u, const char *sql, const dbs_value *params, size_t n,
                 dbs_error *err)
{
    if (!unit_ok(u))
        return dbs__err(err, DBS_EMISUSE, "dbs_unit_add: not a unit of this thread's loop");
    if (u->submitted)
        return dbs__err(err, DBS_EMISUSE, "dbs_unit_add: the unit was already submitted");
    int rc = dbs__stmt_args_check(sql, params, n, err);
    /* the backend's own refusals too, known now: see args_check */
    const dbs__driver *drv = u->loop->pool->drv;
    if (rc == DBS_OK && drv->args_check)
        rc = drv->args_check(sql, params, n, err);
    if (rc != DBS_OK)
        return rc;
    if (u->au.n > INT32_MAX - 1)
        return dbs__err(err, DBS_EMISUSE, "dbs_unit_add: too many statements");
    if (u->au.n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 4;
        dbs__astmt *s = realloc(u->au.stmts, cap * sizeof *s);
        if (!s)
            return dbs__err(err, DBS_ENOMEM, "out of memory adding a statement");
        u->au.stmts = s;
        u->cap = cap;
    }
    /* One block holds the values (copied), the SQL text and every
     * parameter's bytes (each NUL-terminated), the values pointing into
     * it; s->params is the block (freed through it). */
    size_t sl = strlen(sql) + 1, total = n * sizeof(dbs_value) + sl;
    for (size_t i = 0; i < n; i++) {
        size_t len = param_bytes(&params[i]);
        if (len > SIZE_MAX - total)
            return dbs__err(err, DBS_ENOMEM, "out of memory adding a statement: its "
                                             "parameters hold more bytes than memory can");
        total += len;
    }
    dbs_value *pv = malloc(total);
    if (!pv)
        return dbs__err(err, DBS_ENOMEM, "out of memory adding a statement");
    char *w = (char *)(pv + n);
    const char *sq = w;
    memcpy(w, sql, sl);
    w += sl;
    for (size_t i = 0; i < n; i++) {
        pv[i] = params[i];
        size_t len = param_bytes(&params[i]);
        if (len == 0)
            continue;
        memcpy(w, params[i].b.p, len - 1);
        w[len - 1] = '\0';
        pv[i].b.p = w;
        w += len;
    }
    u->au.stmts[u->au.n] =
        (dbs__astmt){.sql = sq, .params = pv, .n = n, .rows = NULL, .affected = -1, .op_us = -1};
    u->au.n++;
    if (err)
        err->code = DBS_OK;
    return (int)u->au.n - 1;
}

int dbs_unit_set_tx_options(dbs_unit *u, const dbs_tx_options *opt, dbs_error *err)
{
    if (!unit_ok(u) || u->submitted)
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_unit_set_tx_options: not an unsubmitted unit of this thread's "
                        "loop");
    if (opt && (unsigned)opt->isolation > DBS_ISOLATION_SERIALIZABLE)
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_unit_set_tx_options: isolation is %d; use a DBS_ISOLATION_ value",
                        (int)opt->isolation);
    bool plain = !opt || (opt->isolation == DBS_ISOLATION_DEFAULT && !opt->read_only &&
                          !opt->deferrable && !opt->immediate);
    if (plain) {
        u->has_txo = false;
        u->au.opt = NULL;
    } else {
        dbs_pool *p = u->loop->pool;
        if (!p->drv->tx_options)
            return dbs__err(err, DBS_ECONFIG,
                            "dbs_unit_set_tx_options: the %s backend has no transaction "
                            "options", p->drv->name);
        /* every refusal the unit's BEGIN would meet, known now: found
         * only once a connection is in hand, it would come after a wait
         * or a failed connect, which is retried as an outage */
        int rc = p->drv->tx_options_check(opt, (u->flags & DBS_UNIT_RO) != 0, err);
        if (rc != DBS_OK)
            return rc;
        u->txo = *opt;
        u->has_txo = true;
        u->au.opt = &u->txo;
    }
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

int dbs_unit_set_timeout(dbs_unit *u, int timeout_ms)
{
    if (!unit_ok(u) || u->submitted || timeout_ms <= 0)
        return DBS_EMISUSE;
    u->timeout_ms = timeout_ms;
    return DBS_OK;
}

int dbs_unit_set_after(dbs_unit *u, uint64_t pos)
{
    if (!unit_ok(u) || u->submitted)
        return DBS_EMISUSE;
    u->au.after_pos = pos;
    return DBS_OK;
}

int dbs_unit_submit(dbs_unit *u, dbs_unit_fn done, void *arg, dbs_error *err)
{
    DBS__IN_LIB(cancel_old);
    dbs_error local;
    if (!err)
        err = &local;
    if (u && u->magic == UNIT_MAGIC && !u->submitted && u->loop->magic != LOOP_MAGIC)
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_unit_submit: the unit's loop was closed: dbs_unit_discard it");
    if (!unit_ok(u))
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_unit_submit: not a unit of this thread's loop (NULL, freed, or "
                        "another thread's)");
    if (u->submitted)
        return dbs__err(err, DBS_EMISUSE, "dbs_unit_submit: the unit was already submitted");
    dbs_loop *l = u->loop;
    loop_unref(l); /* the unit is the loop's now, or freed below; l stays open */
    int rc;
    if (u->au.n == 0)
        rc = dbs__err(err, DBS_EMISUSE,
                      "dbs_unit_submit: the unit has no statement (dbs_unit_add first)");
    else if (l->closing)
        rc = dbs__err(err, DBS_EMISUSE, "dbs_unit_submit: the loop is closing");
    else if (dbs__pool_closed(l->pool)) {
        rc = dbs__err(err, DBS_ECLOSED, "dbs_unit_submit: the pool is closed");
        /* the acquire it stands for failed: counted as a blocking
         * session's refused open is (dbs__session_open) */
        dbs__errors_note(l->pool, DBS_ECLOSED, NULL);
    }
    else if (l->queued >= l->cfg.queue_max) {
        rc = dbs__err(err, DBS_EBUSY,
                      "dbs_unit_submit: %d units already wait for a connection in this loop "
                      "(queue_max): answer 503 or try again later, or raise queue_max",
                      l->queued);
        /* a failed call of the program's, as a refused acquire is */
        dbs__errors_note(l->pool, DBS_EBUSY, NULL);
    } else
        rc = DBS_OK;
    if (rc != DBS_OK) {
        unit_free(u);
        return rc;
    }
    int64_t now = dbs__now_ns();
    u->submitted = true;
    u->done = done;
    u->arg = arg;
    u->submit_ns = now;
    if (u->timeout_ms > 0)
        u->deadline_ns = now + dbs__ms_ns(u->timeout_ms);
    l->pending++;
    unit_enqueue(l, u, now);
    atomic_store_explicit(&l->kick, true, memory_order_relaxed);
    err->code = DBS_OK;
    return DBS_OK;
}

void dbs_unit_discard(dbs_unit *u)
{
    if (!u || u->magic != UNIT_MAGIC || u->submitted)
        return;
    dbs_loop *l = u->loop;
    unit_free(u);
    loop_unref(l);
}

void dbs_unit_cancel(dbs_unit *u)
{
    DBS__IN_LIB(cancel_old);
    if (!unit_ok(u) || !u->submitted || u->cancel == CW_USER)
        return;
    dbs_loop *l = u->loop;
    switch (u->state) {
    case U_QUEUED:
        queue_unlink(l, u);
        unit_fail(l, u, DBS_ECANCELED, "the unit was cancelled while it waited");
        break;
    case U_BACKOFF:
        unit_fail(l, u, DBS_ECANCELED,
                  "the unit was cancelled while it waited to run again");
        break;
    case U_SENT:
        u->cancel = CW_USER;
        conn_cancel_head(u->conn, dbs__now_ns());
        break;
    case U_WORKER:
        u->cancel = CW_USER;
        if (dbs__workers_cancel(l->pool, &u->au, true) == DBS__WC_OPENING) {
            /* Waiting for a connection: no statement of it will run, so it
             * ends now; the worker's wait ends too, and the worker lets go
             * of it then (orphan). */
            wlist_del(l, u);
            u->orphan = true;
            unit_fail(l, u, DBS_ECANCELED,
                      "the unit was cancelled while it waited for a connection");
        }
        break;
    default:
        break;
    }
    atomic_store_explicit(&l->kick, true, memory_order_relaxed);
}

dbs_rows *dbs_unit_rows(dbs_unit *u, int i)
{
    if (!unit_ok(u) || u->state != U_DONE || u->rc != DBS_OK || i < 0 || (size_t)i >= u->au.n)
        return NULL;
    return u->au.stmts[i].rows;
}

int64_t dbs_unit_affected(const dbs_unit *u, int i)
{
    if (!unit_ok(u) || u->state != U_DONE || u->rc != DBS_OK || i < 0 || (size_t)i >= u->au.n)
        return -1;
    return u->au.stmts[i].affected;
}

int dbs_unit_attempts(const dbs_unit *u)
{
    if (!unit_ok(u))
        return 0;
    return u->attempts;
}

uint64_t dbs_unit_commit_pos(const dbs_unit *u)
{
    if (!unit_ok(u) || u->state != U_DONE || u->rc != DBS_OK)
        return 0;
    return u->au.commit_pos;
}

const dbs_context *dbs_unit_context(const dbs_unit *u)
{
    if (!u || u->magic != UNIT_MAGIC)
        return NULL;
    /* the owner's only, as every call on a unit; its copy stays readable
     * in a callback the loop's close runs */
    if (u->loop && u->loop->magic == LOOP_MAGIC && !on_owner(u->loop))
        return NULL;
    return &u->ctx;
}
