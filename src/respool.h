/*
 * PRIVATE to dbscope: a generic resource pool. It knows items, not
 * databases: nothing here includes a driver, the pool's policy or dbscope's
 * public header, and it is tested alone on integers (tests/test_respool.c).
 *
 * What it owns, and nobody else writes:
 *   - the slot ledger: n_open items exist, n_pending slots are reserved by
 *     callers making an item right now (outside any lock), n_leaving items
 *     left the pool and are being closed, n_in_use items are held (or
 *     parked); n_open + n_pending + n_leaving <= max_size, so a failed make
 *     only gives its slot back and never uses one up, and an item's slot
 *     is passed on only once it is closed (dbs__rp_left, then
 *     dbs__rp_pass_free): never more than max_size items exist;
 *   - the idle list (most recently returned first; the tail has been idle
 *     longest);
 *   - the parking slots: an item given back may be parked for the next
 *     acquire of the same affinity token (a thread's ordinal today, an
 *     event loop's id later) while the order rule allows; parked items
 *     count in use;
 *   - the FIFO of requests and the order rule: an item given back while
 *     requests wait goes to the oldest (direct hand-off), except for the
 *     bounded barging rule (barge_ns, barge_hold_ns): the giver may park it
 *     for its own next acquire while the oldest request has waited less
 *     than barge_ns and its run of such holds is under barge_hold_ns. Once
 *     the oldest has waited barge_ns order is strict (in_order): parked
 *     items go to the queue, nobody parks while anyone waits, until the
 *     queue empties or its head has waited less than barge_ns;
 *   - close: no acquire succeeds after it, every request completes empty.
 *
 * Nothing blocks. An acquire answers at once: READY (an item), CREATE (a
 * slot is reserved: make the item outside any lock and report back with
 * dbs__rp_created or dbs__rp_create_failed), PENDING (queued: the request's
 * done callback runs, once, when it is served, ended (dbs__rp_end) or the
 * pool closes) or
 * CLOSED. Giving back, expiring and closing report their outcome as values;
 * the only calls upward are a request's done callback, which runs with the
 * pool's lock held and must do no more than note or queue its completion,
 * and its wake callback, which runs on the same thread once the lock is
 * released and must do no more than wake its owner. The blocking adapter
 * (respool_wait.c) is one such owner.
 *
 * Locks: rp->mu guards the fields marked [mu]; each parking slot has a
 * short lock ([slot]). Order: rp->mu before any slot, slots in index
 * order. A caller may hold a lock of its own across any call here as long
 * as it never takes that lock inside a done callback.
 */
#ifndef DBS_RESPOOL_H
#define DBS_RESPOOL_H

#include "base.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* An item, embedded in what the caller pools (data points back to it). Its
 * fields other than data are the pool's while the item is idle or parked;
 * the holder's otherwise. */
typedef struct dbs__rp_item {
    void *data;                      /* the caller's */
    uint64_t id;                     /* given by dbs__rp_created: 1, 2, ... */
    int64_t expires_ns;              /* the caller's: 0 never; past it the
                                        item is dropped, not kept */
    int64_t idle_since_ns;           /* [mu] idle, [slot] parked */
    int64_t used_ns;                 /* [mu] idle, [slot] parked: when a
                                        holder last gave it back; a look
                                        (DBS__RP_KEEP_LOOKED) is not a use, so
                                        an idle timeout counts from here */
    struct dbs__rp_item *prev, *next; /* [mu] idle list; the lists the
                                        calls below return use next */
} dbs__rp_item;

enum dbs__rp_status {
    DBS__RP_READY,   /* *item is the caller's (counted in use) */
    DBS__RP_CREATE,  /* a slot is reserved for the caller */
    DBS__RP_PENDING, /* queued; done runs when served (or ended) */
    DBS__RP_CLOSED,  /* the pool is closed */
    DBS__RP_EXPIRED, /* (dbs__rp_wait only) the deadline passed */
    DBS__RP_CANCELED /* (dbs__rp_wait only) its waiter was cancelled */
};

/* A request, the caller's memory, alive until done (and wake, if set) has
 * run or it was cancelled. A one-slot mailbox: when done runs, item is set
 * (an item for the caller), or may_create (a slot reserved for it), or
 * neither (the pool closed, or ended is set: dbs__rp_end). */
typedef struct dbs__rp_req {
    void (*done)(struct dbs__rp_req *req); /* runs under rp->mu; no pool call;
                                              NULL: none */
    /* NULL, or runs after done, once rp->mu is released, on the thread
     * that served the request, before the call that served it returns:
     * where a blocking owner is woken, so that the system call that wakes
     * it is not made with the pool's lock held. None of the resource
     * pool's locks is held then, and no caller of a call that serves
     * requests holds a lock of the layers above, so it may call the pool
     * (a loop's request does, when its loop closed before the post: it
     * closes the connection it was served and counts it). The request
     * must stay alive until it has run. */
    void (*wake)(struct dbs__rp_req *req);
    void *arg;                             /* the caller's */
    int64_t since;                         /* [mu] set by dbs__rp_acquire */
    int64_t deadline;                      /* for dbs__rp_expire; 0: none */
    dbs__rp_item *item;                    /* [mu] handed to it */
    bool may_create;                       /* [mu] a slot reserved for it */
    bool queued;                           /* [mu] still waiting */
    bool ended;                            /* [mu] ended by dbs__rp_end */
    struct dbs__rp_req *next;              /* [mu] */
    struct dbs__rp_req *wake_next;         /* [mu] served, wake to run */
} dbs__rp_req;

#define DBS__RP_SLOTS 32

typedef struct dbs__rp_slot {
    _Alignas(64) dbs__lock mu;
    dbs__rp_item *parked;  /* [slot] */
    unsigned parked_by;    /* [slot] the token that parked it (tokens share
                              a slot when there are more than DBS__RP_SLOTS) */
    int64_t barge_held_ns; /* [slot] how long the holds whose item was
                              parked while requests waited lasted, in a row */
    bool closed;           /* [slot] */
} dbs__rp_slot;

typedef struct dbs__rp_config {
    int max_size;          /* items plus reserved slots, at most */
    int keep_size;         /* above this many items, one given back while
                              nobody waits is dropped (overflow), and none
                              is parked */
    int64_t barge_ns;      /* 0: strict order */
    int64_t barge_hold_ns;
    bool keep_none;        /* nothing is kept: every item given back goes */
} dbs__rp_config;

typedef struct dbs__respool {
    dbs__rp_config cfg;
    pthread_mutex_t mu;
    /* all [mu] */
    dbs__rp_item *idle_head, *idle_tail;
    int n_idle, n_open, n_pending, n_in_use;
    /* Items taken out of n_open (a GONE outcome, dbs__rp_replace,
     * dbs__rp_take_stale, dbs__rp_close) that their owner has not yet
     * reported closed with dbs__rp_left: a view that adds them to the open
     * and in-use counts never sees an item vanish before its owner counts
     * it gone. */
    int n_leaving;
    dbs__rp_req *wait_head, *wait_tail;
    int n_waiting;
    dbs__rp_req *wake_head, *wake_tail; /* served, their wake to run once
                                           mu is released */
    bool closed;
    atomic_bool is_closed;     /* closed, for lock-free looks */
    uint64_t next_id;

    /* Written under mu, read without it by the fast paths. */
    _Alignas(64) atomic_int n_waiting_hint;
    atomic_int n_open_hint;
    _Atomic int64_t oldest_since_ns; /* INT64_MAX: nobody waits */
    atomic_bool in_order;

    /* slots[i].parked may be set: cleared under mu and the slot's lock,
     * set under the slot's lock. */
    _Alignas(64) atomic_bool maybe_parked[DBS__RP_SLOTS];
    dbs__rp_slot slots[DBS__RP_SLOTS];
} dbs__respool;

/* A consistent view (taken under every lock). */
typedef struct dbs__rp_stats {
    int open, leaving, idle, parked, in_use, pending, waiting, max_size;
} dbs__rp_stats;

/* Why an item given back left the pool, or where it went. Every item that
 * leaves (each GONE outcome, and the items of dbs__rp_replace,
 * dbs__rp_take_stale and dbs__rp_close) is reported with dbs__rp_left once
 * its owner has counted it gone. */
enum dbs__rp_outcome {
    DBS__RP_PARKED,        /* kept for the giver's token */
    DBS__RP_IDLE,          /* on the idle list */
    DBS__RP_HANDED,        /* to the oldest request */
    DBS__RP_GONE_ASKED,    /* dropped as the caller asked: close it */
    DBS__RP_GONE_CLOSED,   /* the pool is closed: close it */
    DBS__RP_GONE_OVERFLOW, /* above keep_size and nobody waits: close it */
    DBS__RP_GONE_EXPIRED   /* past expires_ns: close it */
};

/* What the giver asks of dbs__rp_release. */
enum dbs__rp_ask {
    DBS__RP_KEEP,       /* keep it, unless closed, expired or overflow */
    DBS__RP_KEEP_ALL,   /* keep it unless closed (no overflow, no expiry) */
    DBS__RP_KEEP_LOOKED, /* as KEEP_ALL, for an idle item the owner only
                           looked at (a keep-alive ping): its used_ns
                           stays, so looks never keep it from timing out */
    DBS__RP_DROP,       /* drop it (GONE_CLOSED if closed: that comes first) */
    DBS__RP_DROP_FIRST  /* drop it (GONE_ASKED even if closed) */
};

/* ---- life ---- */

void dbs__rp_init(dbs__respool *rp, const dbs__rp_config *cfg);
/* Frees nothing the caller owns; the pool must be closed and empty. */
void dbs__rp_destroy(dbs__respool *rp);
/* Closes the pool: every queued request completes empty (its done runs
 * now), no slot parks again, and the idle and parked items are taken out
 * of it (no longer counted open) and returned as a list (through next),
 * for the caller to close. Reserved slots and items in use stay counted
 * until given back. Idempotent: a second call returns NULL. Any thread. */
dbs__rp_item *dbs__rp_close(dbs__respool *rp);
static inline bool dbs__rp_is_closed(dbs__respool *rp)
{
    return atomic_load_explicit(&rp->is_closed, memory_order_relaxed);
}

/* In a child after fork(), which has this one thread: the locks are made
 * anew (one held by another thread of the parent stays held for good),
 * and the idle and parked items are taken out and returned (through next)
 * for the caller to let go of; nothing else of the parent's other threads
 * (requests, reserved slots, items in use) is counted any more. *n_gone:
 * how many items (open or leaving) stopped being counted. */
dbs__rp_item *dbs__rp_after_fork(dbs__respool *rp, int *n_gone);

/* ---- acquire ---- */

/* The fast path: the item parked in token's slot, if the order rule lets
 * token take it (nobody waits, or token parked it and may barge). The
 * item is the caller's; NULL if none. Takes only the slot's lock. */
dbs__rp_item *dbs__rp_unpark(dbs__respool *rp, unsigned token, int64_t now);
/* The locked path: an idle item (prefer_id's if idle, else the most
 * recently returned), a parked one from any slot, a reserved slot
 * (CREATE), or req is queued (PENDING; req->since is read under the lock,
 * so the queue's order is the order of since). When requests wait, a new
 * one queues behind them even if an item is idle for an instant. req->done
 * may run before this returns PENDING. */
int dbs__rp_acquire(dbs__respool *rp, dbs__rp_req *req, uint64_t prefer_id, dbs__rp_item **item);
/* Cancels a request. true: it was still queued and is no more (done will
 * not run). false: it was served (or completed empty by close) before:
 * done has run (its wake, if any, may still be to run on the serving
 * thread: wait for it before the request's memory goes); what it was
 * served with is the
 * caller's, unless put_back, in which case the pool takes it back as Go's
 * database/sql does: an item goes to the next request or the idle list, a
 * slot to the next request. */
bool dbs__rp_cancel(dbs__respool *rp, dbs__rp_req *req, bool put_back);
/* Ends a queued request for its owner, who is blocked on it: it leaves
 * the queue with neither an item nor a slot and ended set, and completes
 * as if served (done now, wake once the lock is released, on this
 * thread). false if it was no longer queued: nothing is done. */
bool dbs__rp_end(dbs__respool *rp, dbs__rp_req *req);
/* Makes order strict now (the oldest request reached its barge limit):
 * idle and parked items go to the queue, oldest first. Nothing if nobody
 * waits: strict order lasts only while the queue's head has waited its
 * limit. */
void dbs__rp_serve_in_order(dbs__respool *rp);
/* For event loops: makes order strict if the oldest request has waited
 * barge_ns, then takes every request past its deadline out of the queue
 * and returns them (through next; done does not run for them). */
dbs__rp_req *dbs__rp_expire(dbs__respool *rp, int64_t now);

/* ---- a slot's outcome ---- */

/* The caller made item on a reserved slot: it is counted open, given an
 * id and is the caller's (in use). DBS__RP_CLOSED if the pool closed
 * meanwhile: the caller closes it (it was never counted). With to_idle,
 * the item is not the caller's: it goes to the oldest request or the idle
 * list (warming up), DBS__RP_READY then meaning it was kept. */
int dbs__rp_created(dbs__respool *rp, dbs__rp_item *item, int64_t now, bool to_idle);
/* The caller could not make an item on its reserved slot (or will not):
 * the slot goes to the oldest request, or is free again. */
void dbs__rp_create_failed(dbs__respool *rp);

/* The caller's item (in use) turned out unusable: it leaves the pool (no
 * longer counted open, but leaving until dbs__rp_left) and a slot is
 * reserved for the caller, who keeps its turn and makes a replacement
 * once it has closed the item and counted it: DBS__RP_CREATE. Until then
 * the ledger counts the item and its replacement both. DBS__RP_CLOSED if
 * the pool closed: nothing is reserved. The caller closes the item. */
int dbs__rp_replace(dbs__respool *rp, dbs__rp_item *item);

/* ---- give back ---- */

/* The fast path: parks item (in use, not expired, the caller willing to
 * keep it) for token's next acquire if the slot is free, at most keep_size
 * items exist and the order rule allows (nobody waits, or the oldest has
 * waited less than barge_ns and token's run of barging holds, held_ns
 * added, is under barge_hold_ns). Takes only the slot's lock. true if
 * parked; false: give it back with dbs__rp_release. */
bool dbs__rp_park(dbs__respool *rp, dbs__rp_item *item, unsigned token, int64_t now,
                  int64_t held_ns);
/* Gives item (in use) back: kept (to the oldest request, or idle) or
 * dropped, as ask says and the pool's state decides; a dropped item is no
 * longer counted open but leaving, and keeps its slot until dbs__rp_left.
 * The outcome says which, for the caller to close and count a dropped
 * one. */
enum dbs__rp_outcome dbs__rp_release(dbs__respool *rp, dbs__rp_item *item, int64_t now,
                                     enum dbs__rp_ask ask);

/* ---- upkeep ---- */

/* Parked items past their expiry or idle since before stale_before go to
 * the oldest request, if one waits (the pool layer checks what it hands
 * out), else back to the idle list (so the calls below may act on them);
 * returns how many stay parked. */
int dbs__rp_unpark_stale(dbs__respool *rp, int64_t now, int64_t stale_before);
/* Takes out of the pool, oldest idle first, the idle items past their
 * expiry (into *expired) and those unused (used_ns) since before
 * idle_before while more than keep_min items are idle (into *idle); each
 * is no longer counted open but leaving (keeping its slot until
 * dbs__rp_left). The caller closes them. Items in use do not count for keep_min: an item
 * idle while others are held is not "beyond" it. */
void dbs__rp_take_stale(dbs__respool *rp, int64_t now, int64_t idle_before, int keep_min,
                        dbs__rp_item **expired, dbs__rp_item **idle);
/* Takes the idle items idle since before before (counted in use) for the
 * caller to look at; returns them (through next) and their count in *n.
 * Give each back with dbs__rp_release (KEEP_ALL, or DROP_FIRST). */
dbs__rp_item *dbs__rp_take_idle_before(dbs__respool *rp, int64_t before, int *n);
/* Reserves slots (for dbs__rp_created with to_idle) so that the idle
 * items, plus extra the caller counts as idle, plus the slots reserved,
 * reach want, within keep_size (none above it: such an item would be
 * dropped as overflow on its first release) and max_size; returns how
 * many it reserved. */
int dbs__rp_reserve_upto(dbs__respool *rp, int want, int extra);

/* n items that left the pool (see n_leaving) are closed and counted:
 * called under the lock that guards the owner's count of them, so that a
 * view taken under both sees each item either leaving or counted, and
 * only once each close has returned. Their slots are free but not yet
 * passed on: call dbs__rp_pass_free next, with no lock of the layers
 * above held (it serves requests, whose wakes run on the caller's
 * thread). */
void dbs__rp_left(dbs__respool *rp, int n);
/* Gives the free slots to the oldest requests (as reservations). */
void dbs__rp_pass_free(dbs__respool *rp);

/* ---- looking ---- */

void dbs__rp_stats_get(dbs__respool *rp, dbs__rp_stats *out);
/* Items that exist (no lock: a hint). */
static inline int dbs__rp_open_hint(dbs__respool *rp)
{
    return atomic_load_explicit(&rp->n_open_hint, memory_order_relaxed);
}
/* Requests waiting (no lock: a hint). */
static inline int dbs__rp_waiting_hint(dbs__respool *rp)
{
    return atomic_load_explicit(&rp->n_waiting_hint, memory_order_relaxed);
}

/* ---- the blocking adapter (respool_wait.c) ---- */

/* What another thread ends a blocking wait with (dbs__rp_waiter_cancel):
 * the owner of a wait that may be called off passes one to each of its
 * waits, and keeps it alive and initialised until no thread can cancel
 * it. Once cancelled it stays so: every later wait with it returns
 * CANCELED at once. Lock order: mu before any pool's. */
typedef struct dbs__rp_waiter {
    pthread_mutex_t mu;
    dbs__respool *rp;  /* [mu] the pool a wait with it is in, or NULL */
    dbs__rp_req *req;  /* [mu] that wait's request */
    bool cancelled;    /* [mu] */
} dbs__rp_waiter;

void dbs__rp_waiter_init(dbs__rp_waiter *wt);
void dbs__rp_waiter_destroy(dbs__rp_waiter *wt);
/* Cancels wt: a wait with it still queued returns CANCELED now, holding
 * nothing. One already served returns what it was served with (its
 * owner, seeing dbs__rp_waiter_cancelled, puts that back); the next
 * returns CANCELED before it asks. Never blocks beyond the locks. Any
 * thread. */
void dbs__rp_waiter_cancel(dbs__rp_waiter *wt);
bool dbs__rp_waiter_cancelled(dbs__rp_waiter *wt);

/* Acquires for a thread that blocks: the locked path, then, if queued,
 * waits on the calling thread's own semaphore (posted by the request's wake
 * callback) until served or deadline (CLOCK_MONOTONIC), making order
 * strict at its barge limit. READY (*item the caller's), CREATE, CLOSED,
 * EXPIRED (the deadline passed; *seen then holds the pool's counts at
 * that moment) or, with wt (NULL: none), CANCELED (wt was cancelled
 * before or while it waited: nothing is the caller's), or -1 if the
 * thread's semaphore cannot be made. A request served just as its
 * deadline passed, or as wt was cancelled, keeps what it was served
 * with. */
int dbs__rp_wait(dbs__respool *rp, uint64_t prefer_id, int64_t deadline, dbs__rp_item **item,
                 dbs__rp_stats *seen, dbs__rp_waiter *wt);

#endif /* DBS_RESPOOL_H */
