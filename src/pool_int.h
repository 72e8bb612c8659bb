/*
 * PRIVATE to the pool's files: pool.c (acquire, release, open, shutdown),
 * shard.c (per-thread shards and parking), waiters.c (the FIFO queue and
 * hand-off), conn.c (a connection's life and its accounting), breaker.c
 * (the circuit breaker), housekeeper.c (background upkeep).
 *
 * The locks, what they guard and their order are described in internal.h;
 * [mu] marks a function called with p->mu held, [shard] one called with the
 * shard's lock held.
 */
#ifndef DBS_POOL_INT_H
#define DBS_POOL_INT_H

#include "internal.h"

#include <semaphore.h>
#include <stdlib.h>

/* ThreadSanitizer does not see sem_clockwait synchronise with sem_post (its
 * runtime does not intercept it), so the hand-off tells it. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define POST_SEM(sem) (__tsan_release(sem), sem_post(sem))
#define SEM_TAKEN(sem) __tsan_acquire(sem)
#else
#define POST_SEM(sem) sem_post(sem)
#define SEM_TAKEN(sem) ((void)(sem))
#endif

static inline int64_t dbs__ms_ns(int ms)
{
    return (int64_t)ms * 1000000;
}

/* ---- the idle list [mu] ---- */

static inline void dbs__idle_push(dbs_pool *p, dbs__conn *c)
{
    c->prev = NULL;
    c->next = p->idle_head;
    if (p->idle_head)
        p->idle_head->prev = c;
    else
        p->idle_tail = c;
    p->idle_head = c;
    p->n_idle++;
}

static inline void dbs__idle_remove(dbs_pool *p, dbs__conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->idle_tail = c->prev;
    c->prev = c->next = NULL;
    p->n_idle--;
}

/* ---- the counts that the fast paths read without the lock [mu] ---- */

/* The pool's count of waiters, and its mirror for the fast paths. [mu] */
static inline void dbs__set_waiting(dbs_pool *p, int n)
{
    p->n_waiting = n;
    atomic_store_explicit(&p->n_waiting_hint, n, memory_order_seq_cst);
}

static inline void dbs__set_open(dbs_pool *p, int n)
{
    p->n_open = n;
    atomic_store_explicit(&p->n_open_hint, n, memory_order_relaxed);
}

/* ---- the bounded barging rule (dbs_config.barge_limit_us) ---- */

/* Whether a free connection may go to the thread asking now rather than to
 * the waiters: nobody waits, or (outside strict mode) the oldest waiter has
 * waited less than barge_ns and order is not strict. Without the lock:
 * with seq_cst, for a thread that has just parked (see dbs__shard). */
static inline bool dbs__may_barge(dbs_pool *p, int64_t now, memory_order mo)
{
    if (atomic_load_explicit(&p->n_waiting_hint, mo) == 0)
        return true;
    if (p->barge_ns == 0 || atomic_load_explicit(&p->in_order, mo))
        return false;
    return now - atomic_load_explicit(&p->oldest_since_ns, mo) < p->barge_ns;
}

/* Whether a thread giving back a connection may park it for its own next
 * checkout: DBS__KEEP_FREE if nobody waits, DBS__KEEP_BARGE if threads
 * wait but barging is allowed and its run of sessions has not spent the
 * hold budget (spent), 0 if not. */
enum { DBS__KEEP_FREE = 1, DBS__KEEP_BARGE = 2 };

static inline int dbs__may_keep(dbs_pool *p, int64_t now, bool spent, memory_order mo)
{
    if (atomic_load_explicit(&p->n_waiting_hint, mo) == 0)
        return DBS__KEEP_FREE;
    return !spent && dbs__may_barge(p, now, mo) ? DBS__KEEP_BARGE : 0;
}

/* ---- shards (shard.c) ---- */

/* [shard] */
static inline void dbs__session_link(dbs__shard *sh, dbs_session *s)
{
    s->prev = NULL;
    s->next = sh->sessions;
    if (sh->sessions)
        sh->sessions->prev = s;
    sh->sessions = s;
}

/* [shard] */
static inline void dbs__session_unlink(dbs__shard *sh, dbs_session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (sh->sessions == s)
        sh->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* The shard's histograms, made on first use. NULL if out of memory: the
 * caller records in the pool's own under p->mu instead. [shard] */
static inline dbs__shard_hists *dbs__shard_hists_of(dbs__shard *sh)
{
    dbs__shard_hists *h = sh->hists;
    if (!h) {
        h = calloc(1, sizeof *h);
        sh->hists = h; /* freed by pool_free */
    }
    return h;
}

/* Takes the shard's parked connection, if any, leaving its flag. [shard] */
static inline dbs__conn *dbs__unpark(dbs__shard *sh)
{
    dbs__conn *c = sh->parked;
    sh->parked = NULL;
    return c;
}

/* This thread's shard of p. */
dbs__shard *dbs__shard_of(dbs_pool *p);
/* This thread's ordinal (non-zero once it has called dbs__shard_of): more
 * than one thread may share a shard, and only the one that parked a
 * connection may take it back past the waiters. */
unsigned dbs__thread_ordinal(void);
/* Takes a parked connection from any shard. With seq_cst, for a thread that
 * has just counted itself in n_waiting_hint (see dbs__shard). [mu] */
dbs__conn *dbs__take_parked(dbs_pool *p, memory_order mo);
/* A session (or one being opened) no longer counts in sh; after a shutdown,
 * tells dbs_pool_shutdown and drops the pool reference it held. */
void dbs__shard_leave(dbs_pool *p, dbs__shard *sh);

/* ---- waiters (waiters.c) [mu] ---- */

void dbs__wait_enqueue(dbs_pool *p, dbs__waiter *w);
dbs__waiter *dbs__wait_pop(dbs_pool *p);
void dbs__wait_remove(dbs_pool *p, dbs__waiter *w);
/* Order becomes strict: idle and parked connections go to the waiters,
 * oldest first, and so does every connection given back until the queue
 * empties or its head has waited less than barge_ns. */
void dbs__serve_in_order(dbs_pool *p);
/* A slot has come free: the oldest waiter gets it and connects itself. */
void dbs__pass_slot(dbs_pool *p);
/* Gives c, which stays in use, to the oldest waiter; false if none. */
bool dbs__hand_off(dbs_pool *p, dbs__conn *c);
/* The calling thread's wait semaphore (not under any lock). */
sem_t *dbs__waiter_sem(void);
/* Waits for a post until deadline (CLOCK_MONOTONIC); false on timeout. */
bool dbs__wait_posted(sem_t *sem, int64_t deadline);

/* ---- connections (conn.c) ---- */

static inline bool dbs__conn_expired(const dbs__conn *c, int64_t now)
{
    return c->expires_ns != 0 && now >= c->expires_ns;
}

/* Which connections to ping before hand-out: those idle past the window,
 * and any idle since before a connection was last found broken. */
static inline bool dbs__needs_validation(dbs_pool *p, const dbs__conn *c, int64_t idle_since,
                             int64_t validate_before, int64_t now)
{
    (void)c;
    if (!p->cfg.pre_ping)
        return false;
    return now - idle_since >= dbs__ms_ns(p->cfg.validation_window_ms) ||
           idle_since < validate_before;
}

/* Opens a connection through the driver, outside any lock; NULL with err
 * filled (password scrubbed). Not yet counted: see dbs__conn_counted. */
dbs__conn *dbs__conn_open(dbs_pool *p, dbs_error *err);
/* Closes and frees c, outside any lock. Its accounting is dbs__conn_gone. */
void dbs__conn_close(dbs_pool *p, dbs__conn *c);
/* One round trip proving c works, outside any lock. */
int dbs__conn_validate(dbs_pool *p, dbs__conn *c, dbs_error *err);
/* Whether a check-out needs a look at c's socket (dbs__conn_check) before
 * the hand-out: pre_ping is on and the backend has a socket. */
static inline bool dbs__peek_wanted(const dbs_pool *p)
{
    return p->cfg.pre_ping && p->drv->peek;
}
/* The check before a hand-out, outside any lock (nothing when pre_ping is
 * off): a connection known broken fails; else the backend looks at its
 * socket without a round trip (peek), so one the server closed while it
 * was idle is never handed out, however recently used; a ping follows when
 * ping is set (idle past validation_window_ms, see dbs__needs_validation)
 * or the socket holds bytes nobody asked for. DBS_OK or < 0 with err. */
int dbs__conn_check(dbs_pool *p, dbs__conn *c, bool ping, dbs_error *err);

/* Why a connection left the pool: each has its counter in dbs_stats. */
enum dbs__gone {
    DBS__GONE_LIFETIME, DBS__GONE_IDLE, DBS__GONE_BROKEN, DBS__GONE_OVERFLOW,
    DBS__GONE_POOL, DBS__GONE_NONE_MODE
};
/* The one place a new connection is counted: numbered, open, created. [mu] */
void dbs__conn_counted(dbs_pool *p, dbs__conn *c);
/* The one place a connect attempt made on a reserved slot (n_pending) is
 * settled: the slot released, the outcome noted by the circuit breaker; a
 * failure counted and its slot passed on to the oldest waiter; a success
 * counted (dbs__conn_counted), unless the pool was shut down meanwhile:
 * then the caller closes c, whose slot is passed on. code: the failure's
 * dbs_code (when c is NULL). A configuration error (DBS_ECONFIG: wrong
 * password, unknown database, a path that cannot exist) is not an outage:
 * the circuit breaker does not count it. Returns the breaker's event for
 * dbs__connect_announce, or -1. [mu] */
int dbs__connect_done(dbs_pool *p, dbs__conn *c, int code, int64_t now);
/* The events of a settled connect: connect or connect_failed (err's code
 * and message), then the breaker's ev if any. s and c may be NULL. [no
 * lock] */
void dbs__connect_announce(dbs_pool *p, const dbs_session *s, const dbs__conn *c, int ev,
                           const dbs_error *err);
/* The one place a connection's end is counted (it must not be idle or
 * counted in use any more): open, closed, by reason; a broken one makes
 * every connection idle since before now be validated before hand-out.
 * The caller then passes the slot on (dbs__pass_slot) or keeps it for a
 * replacement. [mu] */
void dbs__conn_gone(dbs_pool *p, enum dbs__gone why, int64_t now);

/* ---- the circuit breaker (breaker.c) [mu] ---- */

/* On a connect attempt's outcome. Returns the event to emit once
 * unlocked, or -1. */
int dbs__circuit_note(dbs_pool *p, bool ok, int64_t now);
/* Whether a connect may go ahead, for a caller holding a reserved slot
 * (n_pending counted): while the circuit is open only one probe at a time,
 * once its back-off has passed. On refusal the slot is given back and the
 * caller gets DBS_EUNAVAILABLE (counted in unavailable when count is set). */
int dbs__circuit_admit(dbs_pool *p, bool count, dbs_error *err);

#endif /* DBS_POOL_INT_H */
