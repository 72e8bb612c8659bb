/*
 * The pool: slots, the idle list, per-thread shards, FIFO waiters,
 * overflow and lifetime.
 *
 * Invariants, all under p->mu:
 *   n_open    = connections that exist (idle + in use);
 *   n_idle    = length of the idle list;
 *   n_in_use  = n_open - n_idle: connections held by sessions, being
 *               checked, or parked in a shard (see dbs__shard);
 *   n_pending = slots reserved by threads connecting right now, outside the
 *               lock; n_open + n_pending <= max_size always, so a failed
 *               connect only gives its reservation back and never uses up
 *               a slot, and a slow connect holds no lock.
 *   The idle list is empty, and no shard parks, whenever a thread waits: a
 *   released connection goes straight to the oldest waiter (direct
 *   hand-off: the releasing thread posts the waiter's semaphore under the
 *   lock, so the waiter wakes already served, without retaking it), so a
 *   thread that arrives later cannot barge past the queue, and a new
 *   arrival that finds waiters queues behind them even if a connection is
 *   idle for an instant.
 *   Idle connections are reused LIFO (the most recently released first) so
 *   the rest age out under idle_timeout when load drops.
 */
/* sem_clockwait: a waiter's deadline on CLOCK_MONOTONIC (glibc 2.30+). */
#define _GNU_SOURCE
#include "internal.h"

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

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t ms_ns(int ms)
{
    return (int64_t)ms * 1000000;
}

/* ---- idle list [mu] ---- */

static void idle_push(dbs_pool *p, dbs__conn *c)
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

static void idle_remove(dbs_pool *p, dbs__conn *c)
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

/* The connection this thread last gave back to this pool. A thread that
 * finds it idle takes it again rather than the most recently released one:
 * the same server process keeps serving the same client thread, so the
 * kernel keeps the pair on warm caches, and each connection's prepared
 * statements stay hot. Only a preference: ids are checked against the idle
 * list under the lock, never dereferenced from here. */
static _Thread_local struct {
    const dbs_pool *pool;
    uint64_t conn_id;
} last_conn;

/* The idle connection to hand out: this thread's last one if idle, else
 * the most recently released (LIFO). [mu] */
static dbs__conn *idle_pick(dbs_pool *p)
{
    dbs__conn *c = p->idle_head;
    if (last_conn.pool == p && c->id != last_conn.conn_id) {
        for (dbs__conn *q = c->next; q; q = q->next) {
            if (q->id == last_conn.conn_id)
                return q;
        }
    }
    return c;
}

/* ---- shards ---- */

/* Each thread's ordinal, given on its first checkout: it picks the thread's
 * shard in every pool. Threads made one after another get different shards. */
static atomic_uint next_ordinal;
static _Thread_local unsigned my_ordinal; /* ordinal + 1; 0 = none yet */

static dbs__shard *shard_of(dbs_pool *p)
{
    if (!my_ordinal)
        my_ordinal = atomic_fetch_add_explicit(&next_ordinal, 1, memory_order_relaxed) + 1;
    return &p->shards[(my_ordinal - 1) % DBS__SHARDS];
}

void dbs__lock_wait(dbs__lock *l)
{
    for (;;) {
        for (int spin = 0; spin < 100; spin++) {
            if (!atomic_load_explicit(&l->held, memory_order_relaxed) &&
                !atomic_exchange_explicit(&l->held, true, memory_order_acquire))
                return;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        sched_yield();
    }
}

void dbs__shards_lock(dbs_pool *p)
{
    for (int i = 0; i < DBS__SHARDS; i++)
        dbs__lock_take(&p->shards[i].mu);
}

void dbs__shards_unlock(dbs_pool *p)
{
    for (int i = DBS__SHARDS; i-- > 0;)
        dbs__lock_give(&p->shards[i].mu);
}

/* [shard] */
static void session_link(dbs__shard *sh, dbs_session *s)
{
    s->prev = NULL;
    s->next = sh->sessions;
    if (sh->sessions)
        sh->sessions->prev = s;
    sh->sessions = s;
}

/* [shard] */
static void session_unlink(dbs__shard *sh, dbs_session *s)
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
static dbs__shard_hists *shard_hists(dbs__shard *sh)
{
    dbs__shard_hists *h = sh->hists;
    if (!h) {
        h = calloc(1, sizeof *h);
        sh->hists = h; /* freed by pool_free */
    }
    return h;
}

/* Takes the shard's parked connection, if any, leaving its flag. [shard] */
static dbs__conn *unpark(dbs__shard *sh)
{
    dbs__conn *c = sh->parked;
    sh->parked = NULL;
    return c;
}

/* Takes shard i's parked connection, if any, and clears its flag. [mu] */
static dbs__conn *take_from(dbs_pool *p, int i)
{
    dbs__shard *sh = &p->shards[i];
    dbs__lock_take(&sh->mu);
    dbs__conn *c = unpark(sh);
    atomic_store_explicit(&p->maybe_parked[i], false, memory_order_relaxed);
    dbs__lock_give(&sh->mu);
    return c;
}

/* Takes a parked connection from any shard. With seq_cst, for a thread that
 * has just counted itself in n_waiting_hint (see dbs__shard). [mu] */
static dbs__conn *take_parked(dbs_pool *p, memory_order mo)
{
    for (int i = 0; i < DBS__SHARDS; i++) {
        if (!atomic_load_explicit(&p->maybe_parked[i], mo))
            continue;
        dbs__conn *c = take_from(p, i);
        if (c)
            return c;
    }
    return NULL;
}

/* Finishes a checkout: s gets c and is listed in its shard. [no lock] */
static void checkout_done(dbs_pool *p, dbs_session *s, dbs__conn *c, int64_t start, int64_t now)
{
    dbs__shard *sh = s->shard;
    bool fallback = false;
    dbs__lock_take(&sh->mu);
    s->conn = c;
    s->opened_ns = now;
    session_link(sh, s);
    sh->acquired++;
    if (p->cfg.metrics) {
        dbs__shard_hists *h = shard_hists(sh);
        if (h)
            dbs__hist_add(&h->wait, (now - start) / 1000);
        else
            fallback = true;
    }
    dbs__lock_give(&sh->mu);
    if (fallback) {
        pthread_mutex_lock(&p->mu);
        dbs__hist_add(&p->wait_hist, (now - start) / 1000);
        pthread_mutex_unlock(&p->mu);
    }
    dbs__emit(p, DBS_EVENT_CHECKOUT, s, c, 0, NULL);
}

/* s no longer counts in its shard; the last session of a closed pool frees
 * it. [no lock] */
static void shard_leave(dbs_pool *p, dbs__shard *sh)
{
    dbs__lock_take(&sh->mu);
    sh->n_sessions--;
    bool closed = sh->closed;
    dbs__lock_give(&sh->mu);
    if (closed)
        dbs__pool_unref(p);
}

/* The pool's count of waiters, and its mirror for the fast paths. [mu] */
static void set_waiting(dbs_pool *p, int n)
{
    p->n_waiting = n;
    atomic_store_explicit(&p->n_waiting_hint, n, memory_order_seq_cst);
}

static void set_open(dbs_pool *p, int n)
{
    p->n_open = n;
    atomic_store_explicit(&p->n_open_hint, n, memory_order_relaxed);
}

/* ---- waiters [mu] ---- */

static void wait_enqueue(dbs_pool *p, dbs__waiter *w)
{
    w->next = NULL;
    w->queued = true;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    set_waiting(p, p->n_waiting + 1);
}

static dbs__waiter *wait_pop(dbs_pool *p)
{
    dbs__waiter *w = p->wait_head;
    if (!w)
        return NULL;
    p->wait_head = w->next;
    if (!p->wait_head)
        p->wait_tail = NULL;
    w->next = NULL;
    w->queued = false;
    set_waiting(p, p->n_waiting - 1);
    return w;
}

/* Only on timeout, so a linear walk is fine. */
static void wait_remove(dbs_pool *p, dbs__waiter *w)
{
    dbs__waiter *prev = NULL;
    for (dbs__waiter *q = p->wait_head; q; prev = q, q = q->next) {
        if (q != w)
            continue;
        if (prev)
            prev->next = w->next;
        else
            p->wait_head = w->next;
        if (p->wait_tail == w)
            p->wait_tail = prev;
        w->queued = false;
        set_waiting(p, p->n_waiting - 1);
        return;
    }
}

/* A slot has come free (a connection closed or a connect failed). If anyone
 * waits, the oldest waiter gets the reservation and connects itself, so a
 * slot never sits free while a thread waits. [mu] */
static void pass_slot(dbs_pool *p)
{
    if (p->closed)
        return;
    dbs__waiter *w = wait_pop(p);
    if (!w)
        return;
    w->may_create = true;
    p->n_pending++;
    POST_SEM(w->sem); /* under the lock: the waiter's stack frame is alive */
}

/* Gives c, which stays in use, to the oldest waiter; the waiter checks it
 * (lifetime, validation) and lists its session itself once awake. [mu] */
static bool hand_off(dbs_pool *p, dbs__conn *c)
{
    dbs__waiter *w = wait_pop(p);
    if (!w)
        return false;
    w->handed = c;
    POST_SEM(w->sem); /* under the lock: the waiter's stack frame is alive */
    return true;
}

/* ---- connections, outside the lock ---- */

static dbs__conn *conn_open(dbs_pool *p, dbs_error *err)
{
    int delay = atomic_load_explicit(&dbs__fault.connect_delay_ms, memory_order_relaxed);
    if (delay > 0)
        dbs__sleep_ms(delay);
    if (atomic_load_explicit(&dbs__fault.fail_connects, memory_order_relaxed) > 0 &&
        atomic_fetch_sub(&dbs__fault.fail_connects, 1) > 0) {
        dbs__err(err, DBS_ECONNECT, "cannot connect to %s: injected fault", p->url_redacted);
        return NULL;
    }
    void *impl = p->drv->connect(&p->target, err);
    if (!impl)
        return NULL;
    dbs__conn *c = calloc(1, sizeof *c);
    if (!c) {
        p->drv->close(impl);
        dbs__err(err, DBS_ENOMEM, "out of memory allocating a connection");
        return NULL;
    }
    c->impl = impl;
    c->created_ns = dbs__now_ns();
    if (p->cfg.max_lifetime_ms > 0) {
        /* Up to 2.5% less, at random, so connections opened together (at
         * start, after a restart) do not all retire in the same instant. */
        int64_t life = ms_ns(p->cfg.max_lifetime_ms);
        int64_t jitter = (int64_t)(dbs__random() % (uint64_t)(life / 40 + 1));
        c->expires_ns = c->created_ns + life - jitter;
    }
    return c;
}

static void conn_close(dbs_pool *p, dbs__conn *c)
{
    p->drv->close(c->impl);
    free(c);
}

static bool conn_expired(const dbs__conn *c, int64_t now)
{
    return c->expires_ns != 0 && now >= c->expires_ns;
}

/* Which connections to ping before hand-out: those idle past the window,
 * and any idle since before a connection was last found broken. */
static bool needs_validation(dbs_pool *p, const dbs__conn *c, int64_t idle_since,
                             int64_t validate_before, int64_t now)
{
    (void)c;
    if (!p->cfg.pre_ping)
        return false;
    return now - idle_since >= ms_ns(p->cfg.validation_window_ms) ||
           idle_since < validate_before;
}

static int validate(dbs_pool *p, dbs__conn *c, dbs_error *err)
{
    if (atomic_load_explicit(&dbs__fault.fail_pings, memory_order_relaxed) > 0 &&
        atomic_fetch_sub(&dbs__fault.fail_pings, 1) > 0)
        return dbs__err(err, DBS_ECONNECT, "ping failed: injected fault");
    if (p->drv->is_broken(c->impl))
        return dbs__err(err, DBS_ECONNECT, "connection is broken");
    return p->drv->ping(c->impl, err);
}

/* The circuit breaker, on a connect attempt's outcome. [mu] Returns the event
 * to emit once unlocked, or -1. */
static int circuit_note(dbs_pool *p, bool ok, int64_t now)
{
    p->probing = false;
    if (ok) {
        p->consecutive_failures = 0;
        if (p->circuit_open) {
            p->circuit_open = false;
            return DBS_EVENT_CIRCUIT_CLOSE;
        }
        return -1;
    }
    p->consecutive_failures++;
    if (p->cfg.circuit_threshold <= 0)
        return -1;
    /* Probes start 50 ms apart and back off to the cool-down: the end of
     * an outage is noticed within a cool-down, and a long outage costs the
     * database one refused connect a cool-down. */
    if (p->circuit_open) {
        p->circuit_backoff_ms *= 2;
        if (p->circuit_backoff_ms > p->cfg.circuit_cooldown_ms)
            p->circuit_backoff_ms = p->cfg.circuit_cooldown_ms;
        p->circuit_open_until_ns = now + ms_ns(p->circuit_backoff_ms);
        return -1;
    }
    if (p->consecutive_failures >= p->cfg.circuit_threshold) {
        p->circuit_open = true;
        p->circuit_backoff_ms = p->cfg.circuit_cooldown_ms < 50 ? p->cfg.circuit_cooldown_ms : 50;
        p->circuit_open_until_ns = now + ms_ns(p->circuit_backoff_ms);
        return DBS_EVENT_CIRCUIT_OPEN;
    }
    return -1;
}

/* ---- acquire and release ---- */

/* Called with p->mu held and a slot reserved (n_pending counted): connects
 * outside the lock and returns with the lock released. */
static int acquire_create(dbs_pool *p, dbs_session *s, int64_t start, dbs_error *err)
{
    pthread_mutex_unlock(&p->mu);
    dbs__conn *c = conn_open(p, err);
    int64_t now = dbs__now_ns();
    pthread_mutex_lock(&p->mu);
    p->n_pending--;
    int ev = circuit_note(p, c != NULL, now);
    if (!c) {
        p->counters.connect_failures++;
        pass_slot(p);
        pthread_mutex_unlock(&p->mu);
        int code = err ? err->code : DBS_ECONNECT;
        dbs__emit(p, DBS_EVENT_CONNECT_FAILED, s, NULL, code, err ? err->message : NULL);
        if (ev >= 0)
            dbs__emit(p, (enum dbs_event_kind)ev, s, NULL, code, err ? err->message : NULL);
        return code;
    }
    if (p->closed) {
        pass_slot(p);
        pthread_mutex_unlock(&p->mu);
        conn_close(p, c);
        return dbs__err(err, DBS_ECLOSED, "the pool was closed while connecting");
    }
    c->id = ++p->next_conn_id;
    set_open(p, p->n_open + 1);
    p->n_in_use++;
    p->counters.created++;
    pthread_mutex_unlock(&p->mu);
    dbs__emit(p, DBS_EVENT_CONNECT, s, c, 0, NULL);
    if (ev >= 0)
        dbs__emit(p, (enum dbs_event_kind)ev, s, c, 0, NULL);
    checkout_done(p, s, c, start, now);
    return DBS_OK;
}

/* c is the caller's (counted in use) and s is not listed yet: checks c's
 * lifetime and, if due, pings it, outside any lock. A connection that fails
 * is replaced in the same slot, keeping the caller's turn. */
static int acquire_check(dbs_pool *p, dbs_session *s, dbs__conn *c, int64_t start,
                         dbs_error *err)
{
    int64_t now = dbs__now_ns();
    int64_t validate_before = atomic_load_explicit(&p->validate_before_ns, memory_order_relaxed);
    const char *why = NULL;
    dbs_error perr;
    if (conn_expired(c, now))
        why = "lifetime";
    else if (needs_validation(p, c, c->idle_since_ns, validate_before, now) &&
             validate(p, c, &perr) != DBS_OK)
        why = "broken";
    if (!why) {
        checkout_done(p, s, c, start, now);
        return DBS_OK;
    }
    bool broken = why[0] == 'b';
    if (broken)
        dbs__emit(p, DBS_EVENT_INVALIDATE, s, c, DBS_ECONNECT, perr.message);
    else
        dbs__emit(p, DBS_EVENT_CLOSE, s, c, 0, why);
    conn_close(p, c);
    pthread_mutex_lock(&p->mu);
    p->n_in_use--;
    set_open(p, p->n_open - 1);
    p->counters.closed++;
    if (broken) {
        p->counters.closed_broken++;
        p->counters.invalidated++;
        atomic_store_explicit(&p->validate_before_ns, dbs__now_ns(), memory_order_relaxed);
    } else {
        p->counters.closed_lifetime++;
    }
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    }
    p->n_pending++;
    return acquire_create(p, s, start, err);
}

/* Each thread waits on one semaphore of its own, made on its first wait.
 * A thread waits for one pool at a time, and every post is consumed by the
 * wait it was meant for, so it is always at zero between waits. */
static sem_t *waiter_sem(void)
{
    static _Thread_local sem_t sem;
    static _Thread_local bool ready;
    if (!ready) {
        if (sem_init(&sem, 0, 0) != 0)
            return NULL;
        ready = true;
    }
    return &sem;
}

/* Waits for a post until deadline (CLOCK_MONOTONIC). */
static bool wait_posted(sem_t *sem, int64_t deadline)
{
    struct timespec ts = dbs__timespec(deadline);
    for (;;) {
        if (sem_clockwait(sem, CLOCK_MONOTONIC, &ts) == 0) {
            SEM_TAKEN(sem);
            return true;
        }
        if (errno != EINTR)
            return false;
    }
}

/* The locked path: the idle list, a new connection, another shard's parked
 * connection, or the FIFO queue. */
static int acquire_slow(dbs_pool *p, dbs_session *s, int64_t start, dbs_error *err)
{
    const int64_t deadline = start + ms_ns(p->cfg.acquire_timeout_ms);
    dbs__waiter w = {0};
    dbs__conn *c = NULL;
    bool create = false;
    int rc;

    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    }
    if (!p->wait_head) {
        /* Below pool_size a new connection beats taking another thread's
         * parked one: threads that keep their own never contend. */
        int base = p->cfg.pool_size < p->max_size ? p->cfg.pool_size : p->max_size;
        if (p->idle_head && p->mode != DBS_POOL_NONE) {
            c = idle_pick(p);
            idle_remove(p, c);
            p->n_in_use++;
        } else if (p->n_open + p->n_pending < base) {
            create = true;
        } else if ((c = take_parked(p, memory_order_relaxed))) {
            /* parked connections count in use already */
        } else if (p->n_open + p->n_pending < p->max_size) {
            create = true;
        }
        if (create)
            p->n_pending++;
    }
    if (c) {
        pthread_mutex_unlock(&p->mu);
        return acquire_check(p, s, c, start, err);
    }
    if (!create) {
        w.sem = waiter_sem();
        if (!w.sem) {
            pthread_mutex_unlock(&p->mu);
            return dbs__err(err, DBS_ENOMEM, "cannot create a wait semaphore");
        }
        wait_enqueue(p, &w);
        /* Connections parked before this thread counted itself as waiting
         * go to the queue, oldest waiter first. */
        while (p->wait_head) {
            dbs__conn *pc = take_parked(p, memory_order_seq_cst);
            if (!pc)
                break;
            hand_off(p, pc);
        }
        pthread_mutex_unlock(&p->mu);
        bool posted = wait_posted(w.sem, deadline);
        if (posted && w.handed) {
            /* The server's post orders its writes before this read. */
            return acquire_check(p, s, w.handed, start, err);
        }
        pthread_mutex_lock(&p->mu);
        if (!posted && (w.handed || w.may_create)) {
            /* served just as the wait timed out: take the post that is
             * coming (it was made under the lock we now hold, or will
             * be before the server unlocks), so it cannot wake this
             * thread's next wait early */
            pthread_mutex_unlock(&p->mu);
            while (sem_wait(w.sem) != 0) {
            }
            SEM_TAKEN(w.sem);
            pthread_mutex_lock(&p->mu);
        }
        if (w.handed) {
            pthread_mutex_unlock(&p->mu);
            return acquire_check(p, s, w.handed, start, err);
        }
        if (!w.may_create) {
            if (w.queued)
                wait_remove(p, &w);
            if (p->closed) {
                pthread_mutex_unlock(&p->mu);
                return dbs__err(err, DBS_ECLOSED, "the pool was closed while waiting");
            }
            p->counters.timeouts++;
            int size = p->n_open, in_use = p->n_in_use, waiting = p->n_waiting;
            pthread_mutex_unlock(&p->mu);
            rc = dbs__err(err, DBS_ETIMEOUT,
                          "no connection within acquire_timeout_ms=%d (pool size %d, %d in use, "
                          "%d others waiting): raise pool_size/max_overflow, or look for sessions "
                          "held too long (leak_threshold_ms)",
                          p->cfg.acquire_timeout_ms, size, in_use, waiting);
            dbs__emit(p, DBS_EVENT_TIMEOUT, s, NULL, rc, NULL);
            return rc;
        }
        /* pass_slot reserved a slot (n_pending) for us */
    }
    int64_t now = dbs__now_ns();
    if (p->circuit_open && (now < p->circuit_open_until_ns || p->probing)) {
        p->n_pending--;
        pass_slot(p);
        p->counters.unavailable++;
        int64_t left = (p->circuit_open_until_ns - now) / 1000000;
        rc = dbs__err(err, DBS_EUNAVAILABLE,
                      "database unavailable: %d connects in a row failed; failing fast, "
                      "next attempt in %lld ms", p->consecutive_failures,
                      (long long)(left > 0 ? left : 0));
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    if (p->circuit_open)
        p->probing = true;
    return acquire_create(p, s, start, err);
}

int dbs__pool_acquire(dbs_pool *p, dbs_session *s, dbs_error *err)
{
    const int64_t start = dbs__now_ns();
    dbs__shard *sh = shard_of(p);
    s->shard = sh;
    dbs__lock_take(&sh->mu);
    if (sh->closed) {
        dbs__lock_give(&sh->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    }
    sh->n_sessions++;
    dbs__conn *c = NULL;
    /* The fast path: nobody waits, so this thread's parked connection is
     * its own to take, settled in this one hold of its shard's lock. */
    if (sh->parked && atomic_load_explicit(&p->n_waiting_hint, memory_order_relaxed) == 0) {
        c = unpark(sh);
        int64_t validate_before =
            atomic_load_explicit(&p->validate_before_ns, memory_order_relaxed);
        if (!conn_expired(c, start) &&
            !needs_validation(p, c, c->idle_since_ns, validate_before, start) &&
            (!p->cfg.metrics || shard_hists(sh))) {
            s->conn = c;
            s->opened_ns = start;
            session_link(sh, s);
            sh->acquired++;
            if (p->cfg.metrics)
                dbs__hist_add(&sh->hists->wait, 0);
            dbs__lock_give(&sh->mu);
            dbs__emit(p, DBS_EVENT_CHECKOUT, s, c, 0, NULL);
            return DBS_OK;
        }
    }
    dbs__lock_give(&sh->mu);
    int rc = c ? acquire_check(p, s, c, start, err) : acquire_slow(p, s, start, err);
    if (rc != DBS_OK)
        shard_leave(p, sh);
    return rc;
}

void dbs__pool_release(dbs_pool *p, dbs_session *s, bool discard)
{
    dbs__conn *c = s->conn;
    dbs__shard *sh = s->shard;
    const char *reason = NULL;
    enum dbs_event_kind ev = DBS_EVENT_CLOSE;
    int64_t now = dbs__now_ns();
    int64_t held_ns = now - s->opened_ns;
    bool slow = p->cfg.slow_session_ms > 0 && held_ns >= ms_ns(p->cfg.slow_session_ms);
    bool fallback = false, parked = false, left = false;

    /* Before the connection is visible to anyone else, so checkout and
     * checkin events of one connection never cross. */
    dbs__conn view = {0};
    if (c) {
        view.id = c->id;
        view.created_ns = c->created_ns;
        dbs__emit(p, DBS_EVENT_CHECKIN, s, c, 0, NULL);
    }
    dbs__lock_take(&sh->mu);
    session_unlink(sh, s);
    s->conn = NULL;
    bool recovered = s->leak_reported;
    if (recovered)
        sh->leaks_recovered++;
    if (slow)
        sh->slow_sessions++;
    if (c) {
        sh->released++;
        if (p->cfg.metrics) {
            dbs__shard_hists *h = shard_hists(sh);
            if (h)
                dbs__hist_add(&h->use, held_ns / 1000);
            else
                fallback = true;
        }
        /* Park it for this thread's next checkout unless it must go, the
         * shard holds one already, or anyone waits (see dbs__shard). */
        if (!discard && !sh->closed && !sh->parked && p->mode != DBS_POOL_NONE &&
            !conn_expired(c, now) &&
            atomic_load_explicit(&p->n_open_hint, memory_order_relaxed) <= p->cfg.pool_size &&
            atomic_load_explicit(&p->n_waiting_hint, memory_order_relaxed) == 0) {
            c->idle_since_ns = now;
            sh->parked = c;
            atomic_bool *flag = &p->maybe_parked[sh - p->shards];
            /* Already set: a waiter that counted itself before our look
             * below will take this shard's lock after us, or we see it. */
            if (!atomic_load_explicit(flag, memory_order_relaxed))
                atomic_store_explicit(flag, true, memory_order_seq_cst);
            if (atomic_load_explicit(&p->n_waiting_hint, memory_order_seq_cst) == 0) {
                parked = true;
                last_conn.pool = p;
                last_conn.conn_id = c->id;
            } else {
                unpark(sh);
            }
        }
    }
    if (parked && !recovered && !slow && !fallback) {
        /* nothing left to do with p: stop counting now, in this hold */
        sh->n_sessions--;
        left = true;
    }
    dbs__lock_give(&sh->mu);

    if (c && !parked) {
        pthread_mutex_lock(&p->mu);
        p->n_in_use--;
        if (discard) {
            reason = "broken";
            ev = DBS_EVENT_INVALIDATE;
            p->counters.closed_broken++;
            p->counters.invalidated++;
            atomic_store_explicit(&p->validate_before_ns, now, memory_order_relaxed);
        } else if (p->closed) {
            reason = "pool_close";
            p->counters.closed_pool++;
        } else if (p->mode == DBS_POOL_NONE) {
            reason = "no_pool";
        } else if (conn_expired(c, now)) {
            reason = "lifetime";
            p->counters.closed_lifetime++;
        } else if (p->n_open > p->cfg.pool_size && !p->wait_head) {
            reason = "overflow";
            p->counters.closed_overflow++;
        }
        if (reason) {
            set_open(p, p->n_open - 1);
            p->counters.closed++;
            pass_slot(p);
        } else {
            c->idle_since_ns = now; /* just used: no ping needed */
            if (hand_off(p, c)) {
                p->n_in_use++; /* still in use, by the waiter now */
            } else {
                idle_push(p, c);
                last_conn.pool = p;
                last_conn.conn_id = c->id;
            }
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (fallback) {
        pthread_mutex_lock(&p->mu);
        dbs__hist_add(&p->use_hist, held_ns / 1000);
        pthread_mutex_unlock(&p->mu);
    }
    /* c may be another thread's (or closed) by now: events quote a copy. */
    if (recovered)
        dbs__emit(p, DBS_EVENT_LEAK_RECOVERED, s, c ? &view : NULL, 0, NULL);
    if (slow)
        dbs__emit(p, DBS_EVENT_SLOW_SESSION, s, c ? &view : NULL, 0, NULL);
    if (c && reason) {
        dbs__emit(p, ev, s, c, discard ? DBS_ECONNECT : 0, reason);
        conn_close(p, c);
    }
    if (!left)
        shard_leave(p, sh); /* may free p */
}

void dbs__pool_count_retry(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->counters.retries++;
    pthread_mutex_unlock(&p->mu);
}

bool dbs__pool_closed(dbs_pool *p)
{
    return atomic_load_explicit(&p->is_closed, memory_order_relaxed);
}

/* ---- housekeeping ---- */

void dbs__pool_maintain(dbs_pool *p)
{
    if (p->mode == DBS_POOL_NONE)
        return;
    int64_t now = dbs__now_ns();
    dbs__conn *doomed[2] = {NULL, NULL}; /* [0] idle, [1] lifetime */
    int64_t idle_ns = ms_ns(p->cfg.idle_timeout_ms);

    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    /* Parked connections age too: those the checks below may act on go
     * back to the idle list; the rest count as idle for min_idle. */
    int64_t ka = ms_ns(p->cfg.keepalive_ms);
    int parked_idle = 0;
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        if (!atomic_load_explicit(&p->maybe_parked[i], memory_order_relaxed))
            continue;
        dbs__lock_take(&sh->mu);
        dbs__conn *c = sh->parked;
        if (!c)
            atomic_store_explicit(&p->maybe_parked[i], false, memory_order_relaxed);
        if (c && (conn_expired(c, now) || (idle_ns > 0 && now - c->idle_since_ns >= idle_ns) ||
                  (ka > 0 && now - c->idle_since_ns >= ka))) {
            unpark(sh);
        } else {
            parked_idle += c != NULL;
            c = NULL;
        }
        dbs__lock_give(&sh->mu);
        if (c) {
            p->n_in_use--;
            idle_push(p, c);
        }
    }
    /* Oldest idle first: the tail has been idle longest. */
    for (dbs__conn *c = p->idle_tail, *prev; c; c = prev) {
        prev = c->prev;
        bool expired = conn_expired(c, now);
        bool idle = idle_ns > 0 && now - c->idle_since_ns >= idle_ns &&
                    p->n_open > p->cfg.min_idle;
        if (!expired && !idle)
            continue;
        idle_remove(p, c);
        set_open(p, p->n_open - 1);
        p->counters.closed++;
        if (expired)
            p->counters.closed_lifetime++;
        else
            p->counters.closed_idle++;
        c->next = doomed[expired];
        doomed[expired] = c;
        pass_slot(p);
    }
    /* Keep-alive: take connections idle past keepalive_ms off the list
     * (counted in use, so nobody gets them mid-ping) and ping them below. */
    dbs__conn *ping_list = NULL;
    int pinging = 0; /* still idle, for min_idle's count */
    if (ka > 0) {
        for (dbs__conn *c = p->idle_tail, *prev; c; c = prev) {
            prev = c->prev;
            if (now - c->idle_since_ns < ka)
                continue;
            idle_remove(p, c);
            p->n_in_use++;
            c->next = ping_list;
            ping_list = c;
            pinging++;
        }
    }
    int want = p->cfg.min_idle - p->n_idle - pinging - parked_idle - p->n_pending;
    int room = p->max_size - p->n_open - p->n_pending;
    int create = want < room ? want : room;
    if (create < 0)
        create = 0;
    p->n_pending += create;
    pthread_mutex_unlock(&p->mu);

    while (ping_list) {
        dbs__conn *c = ping_list;
        ping_list = c->next;
        dbs_error perr;
        bool ok = validate(p, c, &perr) == DBS_OK;
        int64_t t = dbs__now_ns();
        pthread_mutex_lock(&p->mu);
        bool drop = !ok || p->closed;
        if (!drop) {
            c->idle_since_ns = t; /* just pinged */
            if (!hand_off(p, c)) {
                p->n_in_use--;
                idle_push(p, c);
            }
        } else {
            p->n_in_use--;
            set_open(p, p->n_open - 1);
            p->counters.closed++;
            if (ok) {
                p->counters.closed_pool++;
            } else {
                p->counters.closed_broken++;
                p->counters.invalidated++;
                atomic_store_explicit(&p->validate_before_ns, t, memory_order_relaxed);
            }
            pass_slot(p);
        }
        pthread_mutex_unlock(&p->mu);
        if (drop) {
            if (!ok)
                dbs__emit(p, DBS_EVENT_INVALIDATE, NULL, c, DBS_ECONNECT, perr.message);
            conn_close(p, c);
        }
    }
    for (int k = 0; k < 2; k++) {
        while (doomed[k]) {
            dbs__conn *next = doomed[k]->next;
            dbs__emit(p, DBS_EVENT_CLOSE, NULL, doomed[k], 0, k ? "lifetime" : "idle");
            conn_close(p, doomed[k]);
            doomed[k] = next;
        }
    }

    for (int i = 0; i < create; i++) {
        dbs_error err;
        dbs__conn *c = conn_open(p, &err);
        now = dbs__now_ns();
        pthread_mutex_lock(&p->mu);
        p->n_pending--;
        int ev = circuit_note(p, c != NULL, now);
        if (!c) {
            p->counters.connect_failures++;
            p->n_pending -= create - i - 1; /* give back the rest too */
            pass_slot(p);
            pthread_mutex_unlock(&p->mu);
            dbs__emit(p, DBS_EVENT_CONNECT_FAILED, NULL, NULL, err.code, err.message);
            if (ev >= 0)
                dbs__emit(p, (enum dbs_event_kind)ev, NULL, NULL, err.code, err.message);
            return;
        }
        if (p->closed) {
            pthread_mutex_unlock(&p->mu);
            conn_close(p, c);
            continue;
        }
        c->id = ++p->next_conn_id;
        set_open(p, p->n_open + 1);
        p->counters.created++;
        c->idle_since_ns = now;
        if (hand_off(p, c)) {
            p->n_in_use++;
        } else {
            c->idle_since_ns = now;
            idle_push(p, c);
        }
        pthread_mutex_unlock(&p->mu);
        dbs__emit(p, DBS_EVENT_CONNECT, NULL, c, 0, NULL);
        if (ev >= 0)
            dbs__emit(p, (enum dbs_event_kind)ev, NULL, c, 0, NULL);
    }
}

/* ---- open and close ---- */

static char *dup_opt(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void pool_free(dbs_pool *p)
{
    if (p->drv && p->drv->target_close)
        p->drv->target_close(&p->target);
    for (int i = 0; i < DBS__SHARDS; i++)
        free(p->shards[i].hists);
    pthread_cond_destroy(&p->hk_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p->name);
    free(p->url_redacted);
    free((void *)(uintptr_t)p->target.conninfo);
    for (int i = 0; i < 3; i++)
        free(p->ctx_settings[i]);
    p->magic = DBS__DEAD_MAGIC;
    free(p);
}

void dbs__pool_unref(dbs_pool *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1)
        pool_free(p);
}

/* The backend's notices, as events (no session: the connection may be
 * between users). Always built: the default logger prints them too. */
static void pool_notice(void *arg, const char *msg)
{
    dbs__emit_event(arg, DBS_EVENT_NOTICE, NULL, NULL, 0, msg);
}

dbs_pool *dbs_pool_open(const dbs_config *cfg, dbs_error *err)
{
    if (!cfg) {
        dbs__err(err, DBS_EMISUSE, "dbs_pool_open: cfg is NULL (start from dbs_config_init)");
        return NULL;
    }
    if (dbs__config_check(cfg, err) != DBS_OK)
        return NULL;
    const dbs__driver *drv;
    char *conninfo;
    int memory;
    if (dbs__url_parse(cfg->url, &drv, &conninfo, &memory, err) != DBS_OK)
        return NULL;

    /* Aligned for its shards, which keep to cache lines of their own. */
    dbs_pool *p = aligned_alloc(_Alignof(dbs_pool), sizeof *p);
    if (p)
        memset(p, 0, sizeof *p);
    if (!p) {
        free(conninfo);
        dbs__err(err, DBS_ENOMEM, "out of memory allocating the pool");
        return NULL;
    }
    p->magic = DBS__POOL_MAGIC;
    p->cfg = *cfg;
    p->drv = drv;
    p->target.conninfo = conninfo;
    p->url = dup_opt(cfg->url);
    p->name = dup_opt(cfg->name ? cfg->name : "default");
    p->url_redacted = malloc(256);
    const char *names[3] = {cfg->ctx_request_setting, cfg->ctx_user_setting,
                            cfg->ctx_tenant_setting};
    bool oom = !p->url || !p->url_redacted || !p->name;
    for (int i = 0; i < 3; i++) {
        p->ctx_settings[i] = dup_opt(names[i]);
        oom |= names[i] && !p->ctx_settings[i];
        p->target.ctx_setting[i] = p->ctx_settings[i];
    }
    /* Held for a few dozen instructions at a time: spinning briefly beats
     * sleeping in the kernel when another core holds it. */
    pthread_mutexattr_t mattr;
    pthread_mutexattr_init(&mattr);
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->mu, &mattr);
    pthread_mutexattr_destroy(&mattr);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->hk_cv, &attr);
    pthread_condattr_destroy(&attr);
    atomic_init(&p->refs, 1);
    if (oom) {
        pool_free(p);
        dbs__err(err, DBS_ENOMEM, "out of memory allocating the pool");
        return NULL;
    }
    dbs__redact(p->url, p->url_redacted, 256);
    p->cfg.url = p->url;
    p->cfg.name = p->name;
    p->cfg.ctx_request_setting = p->ctx_settings[0];
    p->cfg.ctx_user_setting = p->ctx_settings[1];
    p->cfg.ctx_tenant_setting = p->ctx_settings[2];

    p->mode = cfg->mode == DBS_POOL_AUTO ? (memory ? DBS_POOL_SINGLE : DBS_POOL_QUEUE)
                                         : cfg->mode;
    switch (p->mode) {
    case DBS_POOL_SINGLE: p->max_size = 1; break;
    case DBS_POOL_NONE: p->max_size = INT_MAX; break;
    default: p->max_size = cfg->pool_size + cfg->max_overflow; break;
    }
    p->target.memory = memory;
    p->target.busy_timeout_ms = cfg->busy_timeout_ms;
    p->target.stmt_cache_size = cfg->stmt_cache_size;
    p->target.reset = cfg->reset;
    p->target.connect_timeout_ms = cfg->connect_timeout_ms;
    p->target.statement_timeout_ms = cfg->statement_timeout_ms;
    p->target.notice = pool_notice;
    p->target.notice_arg = p;

    if (drv->target_open && drv->target_open(&p->target, err) != DBS_OK) {
        p->drv = NULL; /* nothing to close */
        pool_free(p);
        return NULL;
    }
    /* One connection up front proves the URL, credentials and database
     * before the program starts serving. */
    dbs__conn *c = conn_open(p, err);
    if (!c) {
        pool_free(p);
        return NULL;
    }
    c->id = ++p->next_conn_id;
    p->counters.created++;
    if (p->mode == DBS_POOL_NONE) {
        conn_close(p, c);
        p->counters.closed++;
    } else {
        c->idle_since_ns = dbs__now_ns();
        idle_push(p, c);
        set_open(p, 1);
    }
    if (p->mode != DBS_POOL_NONE && dbs__housekeeper_start(p, err) != DBS_OK) {
        dbs_pool_close(p);
        return NULL;
    }
    if (err)
        dbs__err(err, DBS_OK, "ok");
    return p;
}

void dbs_pool_close(dbs_pool *p)
{
    if (!p || p->magic != DBS__POOL_MAGIC)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->closed = true;
    atomic_store(&p->is_closed, true);
    for (dbs__waiter *w; (w = wait_pop(p));)
        POST_SEM(w->sem);
    dbs__conn *idle = p->idle_head;
    p->idle_head = p->idle_tail = NULL;
    int closing = p->n_idle;
    p->n_idle = 0;
    /* From now on no shard parks or counts a new session; the sessions
     * still counted keep the pool allocated through refs instead. */
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        dbs__lock_take(&sh->mu);
        sh->closed = true;
        dbs__conn *c = unpark(sh);
        if (c) {
            c->next = idle;
            idle = c;
            p->n_in_use--;
            closing++;
        }
        atomic_fetch_add(&p->refs, sh->n_sessions);
        dbs__lock_give(&sh->mu);
    }
    set_open(p, p->n_open - closing);
    p->counters.closed += (uint64_t)closing;
    p->counters.closed_pool += (uint64_t)closing;
    pthread_mutex_unlock(&p->mu);

    dbs__housekeeper_stop(p);
    /* Sessions still out now were never going to be closed in time. */
    dbs__leaks_report(p, true, "still open at dbs_pool_close");
    while (idle) {
        dbs__conn *next = idle->next;
        conn_close(p, idle);
        idle = next;
    }
    dbs__pool_unref(p);
}

int dbs_pool_ping(dbs_pool *p, dbs_error *err)
{
    if (!p || p->magic != DBS__POOL_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_pool_ping: not an open pool");
    dbs_error local;
    if (!err)
        err = &local;
    dbs_session *s = dbs__session_open(p, NULL, err, __FILE__, __LINE__, "dbs_pool_ping");
    if (!s)
        return err->code;
    int rc = p->drv->ping(s->conn->impl, err);
    if (rc != DBS_OK && p->drv->is_broken(s->conn->impl))
        s->broken = true;
    dbs__session_close(s);
    if (rc == DBS_OK && err)
        dbs__err(err, DBS_OK, "ok");
    return rc;
}
