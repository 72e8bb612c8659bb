/* The generic resource pool: the slot ledger, the idle list, parking, the
 * queue of requests and its order rule (see respool.h for what it owns and
 * its locks).
 *
 * Invariants, under rp->mu:
 *   n_open + n_pending + n_leaving <= max_size, but for the moment
 *   between dbs__rp_replace and its item's dbs__rp_left (the replacement's
 *   slot is reserved while the item it replaces is still being closed:
 *   counted twice, so the ceiling only ever errs low);
 *   n_idle = length of the idle list; n_in_use = n_open - n_idle (held,
 *   being looked at, or parked);
 *   the idle list is empty whenever a request waits, but for an instant
 *   inside a call that then serves the queue.
 *
 * The parking protocol: a request that makes order strict (counts itself
 * in n_waiting_hint with barge_ns 0, or sets in_order at its barge limit)
 * then looks at the maybe_parked flags; a giver parking sets its slot's
 * flag and then asks the order rule again, and unparks if it no longer
 * allows it. Both in sequentially consistent order, so one of the two
 * always sees the other and no item sits parked while a request it is owed
 * waits. A flag may stay set after its item is taken back (the fast path
 * does not clear it, so that the flags' cache line is not written on every
 * acquire); callers holding rp->mu clear it when they find the slot
 * empty. */
#include "respool.h"

#include <limits.h>
#include <string.h>

/* ---- completing requests ---- */

/* w was served (or completed empty): done now, under mu; its wake once mu
 * is released (unlock), so that no wake-up system call lengthens the hold
 * of the pool's lock that every acquire and release needs. [mu] */
static void complete(dbs__respool *rp, dbs__rp_req *w)
{
    if (w->done)
        w->done(w);
    if (!w->wake)
        return;
    w->wake_next = NULL;
    if (rp->wake_tail)
        rp->wake_tail->wake_next = w;
    else
        rp->wake_head = w;
    rp->wake_tail = w;
}

/* Releases mu, then runs the wakes of the requests served under it, in
 * the order they were served. */
static void unlock(dbs__respool *rp)
{
    dbs__rp_req *w = rp->wake_head;
    rp->wake_head = rp->wake_tail = NULL;
    pthread_mutex_unlock(&rp->mu);
    while (w) {
        dbs__rp_req *next = w->wake_next; /* w may be gone once woken */
        w->wake(w);
        w = next;
    }
}

/* ---- the order rule ---- */

/* Whether a free item may go to the caller asking now rather than to the
 * queue: nobody waits, or the oldest request has waited less than barge_ns
 * and order is not strict. Without the lock. */
static inline bool may_barge(dbs__respool *rp, int64_t now, memory_order mo)
{
    if (atomic_load_explicit(&rp->n_waiting_hint, mo) == 0)
        return true;
    if (rp->cfg.barge_ns == 0 || atomic_load_explicit(&rp->in_order, mo))
        return false;
    return now - atomic_load_explicit(&rp->oldest_since_ns, mo) < rp->cfg.barge_ns;
}

/* Whether a giver may park its item: KEEP_FREE if nobody waits, KEEP_BARGE
 * if requests wait but barging is allowed and the giver's run has not spent
 * the hold budget, 0 if not. */
enum { KEEP_FREE = 1, KEEP_BARGE = 2 };

static inline int may_keep(dbs__respool *rp, int64_t now, bool spent, memory_order mo)
{
    if (atomic_load_explicit(&rp->n_waiting_hint, mo) == 0)
        return KEEP_FREE;
    return !spent && may_barge(rp, now, mo) ? KEEP_BARGE : 0;
}

static inline bool expired(const dbs__rp_item *it, int64_t now)
{
    return it->expires_ns != 0 && now >= it->expires_ns;
}

static inline dbs__rp_slot *slot_of(dbs__respool *rp, unsigned token)
{
    return &rp->slots[token % DBS__RP_SLOTS];
}

/* ---- counts mirrored for the fast paths [mu] ---- */

static void set_waiting(dbs__respool *rp, int n)
{
    rp->n_waiting = n;
    atomic_store_explicit(&rp->n_waiting_hint, n, memory_order_seq_cst);
}

static void set_open(dbs__respool *rp, int n)
{
    rp->n_open = n;
    atomic_store_explicit(&rp->n_open_hint, n, memory_order_relaxed);
}

/* One item leaves: it counts as leaving, and keeps its slot, until its
 * owner has closed and counted it (dbs__rp_left). A slot given on before
 * the close returns would let the next request connect while the old
 * connection still holds its place on the server: one more than max_size
 * for a moment, enough to be refused by a server whose limit max_size
 * was sized to. */
static void drop_open(dbs__respool *rp)
{
    set_open(rp, rp->n_open - 1);
    rp->n_leaving++;
}

/* ---- the idle list [mu] ---- */

static void idle_push(dbs__respool *rp, dbs__rp_item *c)
{
    c->prev = NULL;
    c->next = rp->idle_head;
    if (rp->idle_head)
        rp->idle_head->prev = c;
    else
        rp->idle_tail = c;
    rp->idle_head = c;
    rp->n_idle++;
}

/* Puts c, idle since c->idle_since_ns (an item upkeep took back from its
 * slot, idle for long), where that ranks it, so that the list stays in
 * order of idle time. [mu] */
static void idle_insert(dbs__respool *rp, dbs__rp_item *c)
{
    dbs__rp_item *q = rp->idle_tail;
    while (q && q->idle_since_ns < c->idle_since_ns)
        q = q->prev;
    if (!q) {
        idle_push(rp, c);
        return;
    }
    c->prev = q;
    c->next = q->next;
    if (q->next)
        q->next->prev = c;
    else
        rp->idle_tail = c;
    q->next = c;
    rp->n_idle++;
}

static void idle_remove(dbs__respool *rp, dbs__rp_item *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        rp->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        rp->idle_tail = c->prev;
    c->prev = c->next = NULL;
    rp->n_idle--;
}

/* prefer_id's item if idle, else the most recently returned (LIFO, so
 * the rest age out when load drops). [mu] */
static dbs__rp_item *idle_pick(dbs__respool *rp, uint64_t prefer_id)
{
    dbs__rp_item *c = rp->idle_head;
    if (prefer_id && c->id != prefer_id) {
        for (dbs__rp_item *q = c->next; q; q = q->next) {
            if (q->id == prefer_id)
                return q;
        }
    }
    return c;
}

/* ---- parked items ---- */

/* Takes slot i's parked item, if any, and clears its flag. [mu] */
static dbs__rp_item *take_from(dbs__respool *rp, int i)
{
    dbs__rp_slot *sl = &rp->slots[i];
    dbs__lock_take(&sl->mu);
    dbs__rp_item *c = sl->parked;
    sl->parked = NULL;
    atomic_store_explicit(&rp->maybe_parked[i], false, memory_order_relaxed);
    dbs__lock_give(&sl->mu);
    return c;
}

/* Takes a parked item from any slot. With seq_cst, for a request that has
 * just counted itself as waiting (the parking protocol). [mu] */
static dbs__rp_item *take_parked(dbs__respool *rp, memory_order mo)
{
    for (int i = 0; i < DBS__RP_SLOTS; i++) {
        if (!atomic_load_explicit(&rp->maybe_parked[i], mo))
            continue;
        dbs__rp_item *c = take_from(rp, i);
        if (c)
            return c;
    }
    return NULL;
}

/* ---- the queue [mu] ---- */

/* The queue's head changed: its age is mirrored for the lock-free checks,
 * and order stays strict only while the head has waited barge_ns. */
static void head_changed(dbs__respool *rp)
{
    dbs__rp_req *h = rp->wait_head;
    if (!h) {
        atomic_store_explicit(&rp->in_order, false, memory_order_relaxed);
        atomic_store_explicit(&rp->oldest_since_ns, INT64_MAX, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(&rp->oldest_since_ns, h->since, memory_order_seq_cst);
    if (atomic_load_explicit(&rp->in_order, memory_order_relaxed) &&
        dbs__now_ns() - h->since < rp->cfg.barge_ns)
        atomic_store_explicit(&rp->in_order, false, memory_order_relaxed);
}

static void enqueue(dbs__respool *rp, dbs__rp_req *w)
{
    w->next = NULL;
    w->queued = true;
    if (rp->wait_tail) {
        rp->wait_tail->next = w;
    } else {
        rp->wait_head = w;
        atomic_store_explicit(&rp->oldest_since_ns, w->since, memory_order_seq_cst);
    }
    rp->wait_tail = w;
    set_waiting(rp, rp->n_waiting + 1);
}

static dbs__rp_req *pop(dbs__respool *rp)
{
    dbs__rp_req *w = rp->wait_head;
    if (!w)
        return NULL;
    rp->wait_head = w->next;
    if (!rp->wait_head)
        rp->wait_tail = NULL;
    w->next = NULL;
    w->queued = false;
    set_waiting(rp, rp->n_waiting - 1);
    head_changed(rp);
    return w;
}

/* Only on cancel and expiry, so a linear walk is fine. */
static void unqueue(dbs__respool *rp, dbs__rp_req *w)
{
    dbs__rp_req *prev = NULL;
    for (dbs__rp_req *q = rp->wait_head; q; prev = q, q = q->next) {
        if (q != w)
            continue;
        if (prev)
            prev->next = w->next;
        else
            rp->wait_head = w->next;
        if (rp->wait_tail == w)
            rp->wait_tail = prev;
        w->next = NULL;
        w->queued = false;
        set_waiting(rp, rp->n_waiting - 1);
        if (!prev)
            head_changed(rp);
        return;
    }
}

/* Slots have come free: the oldest requests get the reservations and make
 * their items themselves, so a slot never sits free while a request
 * waits. */
static void pass_slots(dbs__respool *rp)
{
    while (!rp->closed && rp->wait_head &&
           rp->n_open + rp->n_pending + rp->n_leaving < rp->cfg.max_size) {
        dbs__rp_req *w = pop(rp);
        if (!w)
            break;
        w->may_create = true;
        rp->n_pending++;
        complete(rp, w);
    }
}

/* Gives c, which stays in use, to the oldest request; false if none. */
static bool hand_off(dbs__respool *rp, dbs__rp_item *c)
{
    dbs__rp_req *w = pop(rp);
    if (!w)
        return false;
    w->item = c;
    complete(rp, w);
    return true;
}

static void serve_in_order(dbs__respool *rp)
{
    /* Nobody waits (the asker was served meanwhile): strict order set now
     * would outlive the queue and bind the next request, however young. */
    if (!rp->wait_head)
        return;
    atomic_store_explicit(&rp->in_order, true, memory_order_seq_cst);
    while (rp->wait_head) {
        dbs__rp_item *c = NULL;
        if (rp->idle_head && !rp->cfg.keep_none) {
            c = rp->idle_head;
            idle_remove(rp, c);
            rp->n_in_use++;
        } else if (!(c = take_parked(rp, memory_order_seq_cst))) {
            return;
        }
        hand_off(rp, c);
    }
}

/* ---- life ---- */

void dbs__rp_init(dbs__respool *rp, const dbs__rp_config *cfg)
{
    memset(rp, 0, sizeof *rp);
    rp->cfg = *cfg;
    /* Held for a few dozen instructions at a time: spinning briefly beats
     * sleeping in the kernel when another core holds it. */
    pthread_mutexattr_t mattr;
    pthread_mutexattr_init(&mattr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init(&rp->mu, &mattr);
    pthread_mutexattr_destroy(&mattr);
    atomic_init(&rp->oldest_since_ns, INT64_MAX);
}

void dbs__rp_destroy(dbs__respool *rp)
{
    pthread_mutex_destroy(&rp->mu);
}

dbs__rp_item *dbs__rp_close(dbs__respool *rp)
{
    pthread_mutex_lock(&rp->mu);
    if (rp->closed) {
        unlock(rp);
        return NULL;
    }
    rp->closed = true;
    atomic_store(&rp->is_closed, true);
    /* Each completes with neither an item nor a slot. */
    for (dbs__rp_req *w; (w = pop(rp));)
        complete(rp, w);
    dbs__rp_item *out = rp->idle_head;
    for (dbs__rp_item *c = out; c; c = c->next)
        drop_open(rp);
    rp->idle_head = rp->idle_tail = NULL;
    rp->n_idle = 0;
    for (int i = 0; i < DBS__RP_SLOTS; i++) {
        dbs__rp_slot *sl = &rp->slots[i];
        dbs__lock_take(&sl->mu);
        sl->closed = true;
        dbs__rp_item *c = sl->parked;
        sl->parked = NULL;
        atomic_store_explicit(&rp->maybe_parked[i], false, memory_order_relaxed);
        dbs__lock_give(&sl->mu);
        if (c) {
            c->next = out;
            out = c;
            rp->n_in_use--;
            drop_open(rp);
        }
    }
    unlock(rp);
    return out;
}

dbs__rp_item *dbs__rp_after_fork(dbs__respool *rp, int *n_gone)
{
    *n_gone = rp->n_open + rp->n_leaving;
    pthread_mutexattr_t mattr;
    pthread_mutexattr_init(&mattr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init(&rp->mu, &mattr);
    pthread_mutexattr_destroy(&mattr);
    dbs__rp_item *out = rp->idle_head;
    rp->idle_head = rp->idle_tail = NULL;
    rp->n_idle = 0;
    for (int i = 0; i < DBS__RP_SLOTS; i++) {
        dbs__rp_slot *sl = &rp->slots[i];
        atomic_store(&sl->mu.held, false);
        if (sl->parked) {
            sl->parked->next = out;
            out = sl->parked;
            sl->parked = NULL;
        }
        sl->barge_held_ns = 0;
        atomic_store(&rp->maybe_parked[i], false);
    }
    rp->n_in_use = rp->n_pending = 0;
    rp->wait_head = rp->wait_tail = NULL;
    rp->wake_head = rp->wake_tail = NULL;
    set_waiting(rp, 0);
    set_open(rp, 0);
    rp->n_leaving = 0;
    atomic_store(&rp->in_order, false);
    atomic_store(&rp->oldest_since_ns, INT64_MAX);
    return out;
}

/* ---- acquire ---- */

dbs__rp_item *dbs__rp_unpark(dbs__respool *rp, unsigned token, int64_t now)
{
    dbs__rp_slot *sl = slot_of(rp, token);
    dbs__rp_item *c = NULL;
    dbs__lock_take(&sl->mu);
    if (sl->parked && may_barge(rp, now, memory_order_relaxed) &&
        (sl->parked_by == token ||
         atomic_load_explicit(&rp->n_waiting_hint, memory_order_relaxed) == 0)) {
        c = sl->parked;
        sl->parked = NULL;
    }
    dbs__lock_give(&sl->mu);
    return c;
}

int dbs__rp_acquire(dbs__respool *rp, dbs__rp_req *req, uint64_t prefer_id, dbs__rp_item **item)
{
    dbs__rp_item *c = NULL;
    req->item = NULL;
    req->may_create = false;
    req->ended = false;
    pthread_mutex_lock(&rp->mu);
    if (rp->closed) {
        unlock(rp);
        return DBS__RP_CLOSED;
    }
    if (!rp->wait_head) {
        /* Every item that exists is used before a new one is made: the
         * idle list, then those parked for other tokens (a thread that
         * exited leaves its item parked for good). */
        if (rp->idle_head && !rp->cfg.keep_none) {
            c = idle_pick(rp, prefer_id);
            idle_remove(rp, c);
            rp->n_in_use++;
        } else if ((c = take_parked(rp, memory_order_relaxed))) {
            /* parked items count in use already */
        } else if (rp->n_open + rp->n_pending + rp->n_leaving < rp->cfg.max_size) {
            rp->n_pending++;
            unlock(rp);
            return DBS__RP_CREATE;
        }
    }
    if (c) {
        unlock(rp);
        *item = c;
        return DBS__RP_READY;
    }
    req->since = dbs__now_ns();
    enqueue(rp, req);
    /* While order is strict, items parked before this request counted
     * itself as waiting go to the queue, oldest first (the seq_cst half of
     * the parking protocol). */
    if (!may_barge(rp, req->since, memory_order_seq_cst))
        serve_in_order(rp);
    unlock(rp);
    return DBS__RP_PENDING;
}

void dbs__rp_serve_in_order(dbs__respool *rp)
{
    pthread_mutex_lock(&rp->mu);
    serve_in_order(rp);
    unlock(rp);
}

/* Gives c (in use) back as ask says. [mu] */
static enum dbs__rp_outcome release_locked(dbs__respool *rp, dbs__rp_item *c, int64_t now,
                                           enum dbs__rp_ask ask)
{
    enum dbs__rp_outcome out = DBS__RP_IDLE;
    rp->n_in_use--;
    if (ask == DBS__RP_DROP_FIRST)
        out = DBS__RP_GONE_ASKED;
    else if (rp->closed)
        out = DBS__RP_GONE_CLOSED;
    else if (ask == DBS__RP_DROP || rp->cfg.keep_none)
        out = DBS__RP_GONE_ASKED;
    else if (ask == DBS__RP_KEEP && expired(c, now))
        out = DBS__RP_GONE_EXPIRED;
    else if (ask == DBS__RP_KEEP && rp->n_open > rp->cfg.keep_size && !rp->wait_head)
        out = DBS__RP_GONE_OVERFLOW;
    if (out != DBS__RP_IDLE) {
        drop_open(rp); /* its slot is passed on by dbs__rp_left */
        return out;
    }
    c->idle_since_ns = now;
    if (ask != DBS__RP_KEEP_LOOKED)
        c->used_ns = now;
    if (hand_off(rp, c)) {
        rp->n_in_use++; /* still in use, by the request now */
        return DBS__RP_HANDED;
    }
    idle_push(rp, c);
    return DBS__RP_IDLE;
}

bool dbs__rp_cancel(dbs__respool *rp, dbs__rp_req *req, bool put_back)
{
    pthread_mutex_lock(&rp->mu);
    if (req->queued) {
        unqueue(rp, req);
        unlock(rp);
        return true;
    }
    if (put_back) {
        /* Served just as its owner gave up: what it was served with goes
         * on to the next request, not to waste. */
        if (req->item) {
            switch (release_locked(rp, req->item, dbs__now_ns(), DBS__RP_KEEP_ALL)) {
            case DBS__RP_HANDED:
            case DBS__RP_IDLE: req->item = NULL; break;
            default: break; /* closed: still the caller's, to close */
            }
        } else if (req->may_create) {
            req->may_create = false;
            rp->n_pending--;
            pass_slots(rp);
        }
    }
    unlock(rp);
    return false;
}

bool dbs__rp_end(dbs__respool *rp, dbs__rp_req *req)
{
    pthread_mutex_lock(&rp->mu);
    bool queued = req->queued;
    if (queued) {
        unqueue(rp, req);
        req->ended = true;
        complete(rp, req);
    }
    unlock(rp);
    return queued;
}

void dbs__rp_left(dbs__respool *rp, int n)
{
    pthread_mutex_lock(&rp->mu);
    rp->n_leaving -= n;
    pthread_mutex_unlock(&rp->mu);
}

void dbs__rp_pass_free(dbs__respool *rp)
{
    pthread_mutex_lock(&rp->mu);
    pass_slots(rp);
    unlock(rp);
}

dbs__rp_req *dbs__rp_expire(dbs__respool *rp, int64_t now)
{
    dbs__rp_req *out = NULL, **tail = &out;
    pthread_mutex_lock(&rp->mu);
    dbs__rp_req *h = rp->wait_head;
    if (h && rp->cfg.barge_ns > 0 && now - h->since >= rp->cfg.barge_ns)
        serve_in_order(rp);
    for (dbs__rp_req *w = rp->wait_head, *next; w; w = next) {
        next = w->next;
        if (w->deadline == 0 || now < w->deadline)
            continue;
        unqueue(rp, w);
        *tail = w;
        tail = &w->next;
    }
    unlock(rp);
    return out;
}

/* ---- a slot's outcome ---- */

int dbs__rp_created(dbs__respool *rp, dbs__rp_item *item, int64_t now, bool to_idle)
{
    pthread_mutex_lock(&rp->mu);
    rp->n_pending--;
    if (rp->closed) {
        unlock(rp);
        return DBS__RP_CLOSED;
    }
    item->id = ++rp->next_id;
    set_open(rp, rp->n_open + 1);
    rp->n_in_use++;
    if (to_idle)
        release_locked(rp, item, now, DBS__RP_KEEP_ALL);
    unlock(rp);
    return DBS__RP_READY;
}

void dbs__rp_create_failed(dbs__respool *rp)
{
    pthread_mutex_lock(&rp->mu);
    rp->n_pending--;
    pass_slots(rp);
    unlock(rp);
}

int dbs__rp_replace(dbs__respool *rp, dbs__rp_item *item)
{
    (void)item;
    pthread_mutex_lock(&rp->mu);
    rp->n_in_use--;
    drop_open(rp);
    int st = DBS__RP_CLOSED;
    if (!rp->closed) {
        rp->n_pending++;
        st = DBS__RP_CREATE;
    }
    unlock(rp);
    return st;
}

/* ---- give back ---- */

bool dbs__rp_park(dbs__respool *rp, dbs__rp_item *c, unsigned token, int64_t now, int64_t held_ns)
{
    dbs__rp_slot *sl = slot_of(rp, token);
    bool parked = false;
    dbs__lock_take(&sl->mu);
    bool spent = sl->barge_held_ns + held_ns >= rp->cfg.barge_hold_ns;
    if (!sl->closed && !sl->parked && !rp->cfg.keep_none && !expired(c, now) &&
        atomic_load_explicit(&rp->n_open_hint, memory_order_relaxed) <= rp->cfg.keep_size &&
        may_keep(rp, now, spent, memory_order_relaxed)) {
        c->idle_since_ns = c->used_ns = now;
        sl->parked = c;
        sl->parked_by = token;
        atomic_bool *flag = &rp->maybe_parked[sl - rp->slots];
        /* Already set: a request that counted itself before our look below
         * will take this slot's lock after us, or we see it. */
        if (!atomic_load_explicit(flag, memory_order_relaxed))
            atomic_store_explicit(flag, true, memory_order_seq_cst);
        int keep = may_keep(rp, now, spent, memory_order_seq_cst);
        if (keep) {
            parked = true;
            sl->barge_held_ns = keep == KEEP_BARGE ? sl->barge_held_ns + held_ns : 0;
        } else {
            sl->parked = NULL;
        }
    }
    /* The giver's item goes to the queue: its run is broken. Not so for a
     * token sharing the slot with the one whose item is parked there: the
     * run counted is that one's, which goes on. */
    if (!parked && !(sl->parked && sl->parked_by != token))
        sl->barge_held_ns = 0;
    dbs__lock_give(&sl->mu);
    return parked;
}

enum dbs__rp_outcome dbs__rp_release(dbs__respool *rp, dbs__rp_item *item, int64_t now,
                                     enum dbs__rp_ask ask)
{
    pthread_mutex_lock(&rp->mu);
    enum dbs__rp_outcome out = release_locked(rp, item, now, ask);
    unlock(rp);
    return out;
}

/* ---- upkeep ---- */

int dbs__rp_unpark_stale(dbs__respool *rp, int64_t now, int64_t stale_before)
{
    int stay = 0;
    pthread_mutex_lock(&rp->mu);
    for (int i = 0; i < DBS__RP_SLOTS; i++) {
        dbs__rp_slot *sl = &rp->slots[i];
        if (!atomic_load_explicit(&rp->maybe_parked[i], memory_order_relaxed))
            continue;
        dbs__lock_take(&sl->mu);
        dbs__rp_item *c = sl->parked;
        if (!c)
            atomic_store_explicit(&rp->maybe_parked[i], false, memory_order_relaxed);
        if (c && (expired(c, now) || c->idle_since_ns <= stale_before)) {
            sl->parked = NULL;
        } else {
            stay += c != NULL;
            c = NULL;
        }
        dbs__lock_give(&sl->mu);
        /* Parked while requests waited (its giver barged): the oldest gets
         * it now, as from any giver, rather than at its barge limit. */
        if (c && !hand_off(rp, c)) {
            rp->n_in_use--;
            idle_insert(rp, c);
        }
    }
    unlock(rp);
    return stay;
}

void dbs__rp_take_stale(dbs__respool *rp, int64_t now, int64_t idle_before, int keep_min,
                        dbs__rp_item **expired_out, dbs__rp_item **idle_out)
{
    *expired_out = *idle_out = NULL;
    pthread_mutex_lock(&rp->mu);
    /* Oldest idle first: the tail has been idle longest. */
    for (dbs__rp_item *c = rp->idle_tail, *prev; c; c = prev) {
        prev = c->prev;
        bool exp = expired(c, now);
        bool idle = c->used_ns <= idle_before && rp->n_idle > keep_min;
        if (!exp && !idle)
            continue;
        idle_remove(rp, c);
        drop_open(rp);
        dbs__rp_item **list = exp ? expired_out : idle_out;
        c->next = *list;
        *list = c;
    }
    unlock(rp);
}

dbs__rp_item *dbs__rp_take_idle_before(dbs__respool *rp, int64_t before, int *n)
{
    dbs__rp_item *out = NULL;
    *n = 0;
    pthread_mutex_lock(&rp->mu);
    for (dbs__rp_item *c = rp->idle_tail, *prev; c; c = prev) {
        prev = c->prev;
        if (c->idle_since_ns > before)
            continue;
        idle_remove(rp, c);
        rp->n_in_use++;
        c->next = out;
        out = c;
        (*n)++;
    }
    unlock(rp);
    return out;
}

int dbs__rp_reserve_upto(dbs__respool *rp, int want, int extra)
{
    pthread_mutex_lock(&rp->mu);
    if (rp->closed) {
        unlock(rp);
        return 0;
    }
    int need = want - rp->n_idle - extra - rp->n_pending;
    int cap = rp->cfg.keep_size < rp->cfg.max_size ? rp->cfg.keep_size : rp->cfg.max_size;
    int room = cap - rp->n_open - rp->n_pending - rp->n_leaving;
    int n = need < room ? need : room;
    if (n < 0)
        n = 0;
    rp->n_pending += n;
    unlock(rp);
    return n;
}

/* ---- looking ---- */

void dbs__rp_stats_get(dbs__respool *rp, dbs__rp_stats *out)
{
    pthread_mutex_lock(&rp->mu);
    int parked = 0;
    for (int i = 0; i < DBS__RP_SLOTS; i++)
        dbs__lock_take(&rp->slots[i].mu);
    for (int i = 0; i < DBS__RP_SLOTS; i++)
        parked += rp->slots[i].parked != NULL;
    for (int i = DBS__RP_SLOTS; i-- > 0;)
        dbs__lock_give(&rp->slots[i].mu);
    out->open = rp->n_open;
    out->leaving = rp->n_leaving;
    out->idle = rp->n_idle;
    out->parked = parked;
    out->in_use = rp->n_in_use;
    out->pending = rp->n_pending;
    out->waiting = rp->n_waiting;
    out->max_size = rp->cfg.max_size;
    unlock(rp);
}
