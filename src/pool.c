/*
 * The pool's public face and its two paths: acquire (the shard fast path,
 * then the locked path: idle list, parked connections, a new connection, or
 * the queue) and release (park, hand off, idle, or close), with open,
 * shutdown and close. Shards are in shard.c, the queue in waiters.c, a
 * connection's life and accounting in conn.c, the circuit breaker in
 * breaker.c, upkeep in housekeeper.c.
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
 *   The idle list is empty whenever a thread waits: a connection given
 *   back while threads wait goes straight to the oldest waiter (direct
 *   hand-off: the releasing thread posts the waiter's semaphore under the
 *   lock, so the waiter wakes already served, without retaking it), and a
 *   newcomer queues behind the waiters even if a connection is idle for
 *   an instant. The one exception is the bounded barging rule of
 *   dbs_config.barge_limit_us: the thread giving a connection back may
 *   park it for its own next checkout while the oldest waiter has waited
 *   less than barge_ns and its run of such sessions has held it less
 *   than barge_hold_ns (shard.barge_held_ns). Waiters sleep until their
 *   own limit at most; the first to reach it makes order strict
 *   (in_order): parked connections go to the queue and nobody parks
 *   while anyone waits, until the queue empties or its head has waited
 *   less than barge_ns.
 *   Idle connections are reused LIFO (the most recently released first) so
 *   the rest age out under idle_timeout when load drops.
 */
/* sem_clockwait: a waiter's deadline on CLOCK_MONOTONIC (glibc 2.30+). */
#define _GNU_SOURCE
#include "pool_int.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the idle connection to hand out ---- */

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

/* Finishes a checkout: s gets c and is listed in its shard. [no lock] */
static void checkout_done(dbs_pool *p, dbs_session *s, dbs__conn *c, int64_t start, int64_t now)
{
    dbs__shard *sh = s->shard;
    bool fallback = false;
    dbs__lock_take(&sh->mu);
    s->conn = c;
    s->opened_ns = now;
    dbs__session_link(sh, s);
    sh->acquired++;
    if (p->cfg.metrics) {
        dbs__shard_hists *h = dbs__shard_hists_of(sh);
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

/* ---- acquire and release ---- */

/* Called with p->mu held and a slot reserved (n_pending counted): connects
 * outside the lock and returns with the lock released. */
static int acquire_create(dbs_pool *p, dbs_session *s, int64_t start, dbs_error *err)
{
    pthread_mutex_unlock(&p->mu);
    dbs__conn *c = dbs__conn_open(p, err);
    int64_t now = dbs__now_ns();
    pthread_mutex_lock(&p->mu);
    int ev = dbs__connect_done(p, c, c || !err ? DBS_OK : err->code, now);
    if (!c) {
        pthread_mutex_unlock(&p->mu);
        dbs__connect_announce(p, s, NULL, ev, err);
        return err ? err->code : DBS_ECONNECT;
    }
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        dbs__conn_close(p, c);
        return dbs__err(err, DBS_ECLOSED, "the pool was closed while connecting");
    }
    p->n_in_use++;
    pthread_mutex_unlock(&p->mu);
    dbs__connect_announce(p, s, c, ev, NULL);
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
    if (dbs__conn_expired(c, now))
        why = "lifetime";
    else if (dbs__conn_check(p, c,
                             dbs__needs_validation(p, c, c->idle_since_ns, validate_before, now),
                             &perr) != DBS_OK)
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
    dbs__conn_close(p, c);
    pthread_mutex_lock(&p->mu);
    p->n_in_use--;
    dbs__conn_gone(p, broken ? DBS__GONE_BROKEN : DBS__GONE_LIFETIME, dbs__now_ns());
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    }
    /* A replacement keeps the caller's turn, but within its bound: after
     * the acquire timeout no connect is begun, so dbs_session_open returns
     * within acquire_timeout_ms plus one connect or one validation. */
    if (dbs__now_ns() - start >= dbs__ms_ns(p->cfg.acquire_timeout_ms)) {
        dbs__pass_slot(p);
        pthread_mutex_unlock(&p->mu);
        return dbs__err(err, DBS_ECONNECT,
                        "the connection failed validation (%s) and acquire_timeout_ms=%d "
                        "had passed before another could be opened",
                        broken ? perr.message : why, p->cfg.acquire_timeout_ms);
    }
    p->n_pending++;
    int rc = dbs__circuit_admit(p, true, err);
    if (rc != DBS_OK) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    return acquire_create(p, s, start, err);
}

/* Waits in the queue until served or the acquire deadline. At this
 * waiter's barge limit (or its deadline, if that comes first) order becomes
 * strict and whatever sits idle or parked goes to the waiters, oldest
 * first. Returns with p->mu held: w served (handed or may_create), or
 * still queued on timeout or shutdown. [mu] */
static void wait_turn(dbs_pool *p, dbs__waiter *w, int64_t deadline)
{
    bool limit_passed = p->barge_ns == 0;
    for (;;) {
        int64_t until = deadline;
        if (!limit_passed && w->since + p->barge_ns < deadline)
            until = w->since + p->barge_ns;
        pthread_mutex_unlock(&p->mu);
        bool posted = dbs__wait_posted(w->sem, until);
        pthread_mutex_lock(&p->mu);
        if (!posted && !w->queued) {
            /* Taken off the queue just as the wait timed out (served, or
             * woken by a shutdown): whoever did it posted under the lock
             * we now hold, so take that post now, or it would end this
             * thread's next wait, on any pool, at once. */
            pthread_mutex_unlock(&p->mu);
            while (sem_wait(w->sem) != 0) {
            }
            SEM_TAKEN(w->sem);
            pthread_mutex_lock(&p->mu);
            posted = true;
        }
        if (posted || !w->queued || p->closed || limit_passed)
            return;
        /* The limit has passed (or the deadline, if it comes first: a
         * connection kept for its thread must not let a waiter time out). */
        limit_passed = true;
        dbs__serve_in_order(p);
    }
}

/* The locked path: the idle list, a new connection, another shard's parked
 * connection, or the queue. */
static int acquire_slow(dbs_pool *p, dbs_session *s, int64_t start, dbs_error *err)
{
    const int64_t deadline = start + dbs__ms_ns(p->cfg.acquire_timeout_ms);
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
        /* Every connection that exists is used before a new one is opened:
         * the idle list, then those parked in other shards (a thread that
         * exited leaves its connection parked in its shard for good). */
        if (p->idle_head && p->mode != DBS_POOL_NONE) {
            c = idle_pick(p);
            dbs__idle_remove(p, c);
            p->n_in_use++;
        } else if ((c = dbs__take_parked(p, memory_order_relaxed))) {
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
        w.sem = dbs__waiter_sem();
        if (!w.sem) {
            pthread_mutex_unlock(&p->mu);
            return dbs__err(err, DBS_ENOMEM, "cannot create a wait semaphore");
        }
        /* Read under the lock: the queue's order is the order of since,
         * so its head is always its longest waiter. */
        w.since = dbs__now_ns();
        dbs__wait_enqueue(p, &w);
        /* While order is strict, connections parked before this thread
         * counted itself as waiting go to the queue, oldest waiter first
         * (the seq_cst half of the parking protocol, see dbs__shard). */
        if (!dbs__may_barge(p, w.since, memory_order_seq_cst))
            dbs__serve_in_order(p);
        wait_turn(p, &w, deadline);
        if (w.handed) {
            /* The server's post (or this lock) orders its writes before
             * this read. */
            pthread_mutex_unlock(&p->mu);
            return acquire_check(p, s, w.handed, start, err);
        }
        if (!w.may_create) {
            if (w.queued)
                dbs__wait_remove(p, &w);
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
        /* pass_slot reserved a slot (n_pending) for us; a shutdown
         * since then means no connect is begun, for nobody to use. */
        if (p->closed) {
            p->n_pending--;
            pthread_mutex_unlock(&p->mu);
            return dbs__err(err, DBS_ECLOSED, "the pool was closed while waiting");
        }
    }
    rc = dbs__circuit_admit(p, true, err);
    if (rc != DBS_OK) {
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    return acquire_create(p, s, start, err);
}

int dbs__pool_acquire(dbs_pool *p, dbs_session *s, dbs_error *err)
{
    const int64_t start = dbs__now_ns();
    dbs__shard *sh = dbs__shard_of(p);
    s->shard = sh;
    dbs__lock_take(&sh->mu);
    if (sh->closed) {
        dbs__lock_give(&sh->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    }
    sh->n_sessions++;
    dbs__conn *c = NULL;
    /* The fast path: nobody waits, or this thread parked the connection
     * and the order rule lets it take it back past the waiters; settled in
     * this one hold of its shard's lock. */
    if (sh->parked && dbs__may_barge(p, start, memory_order_relaxed) &&
        (sh->parked_by == dbs__thread_ordinal() ||
         atomic_load_explicit(&p->n_waiting_hint, memory_order_relaxed) == 0)) {
        c = dbs__unpark(sh);
        int64_t validate_before =
            atomic_load_explicit(&p->validate_before_ns, memory_order_relaxed);
        /* A connection whose socket must be looked at goes the way of one
         * to validate (acquire_check): no system call under this lock. */
        if (!dbs__conn_expired(c, start) && !dbs__peek_wanted(p) &&
            !dbs__needs_validation(p, c, c->idle_since_ns, validate_before, start) &&
            (!p->cfg.metrics || dbs__shard_hists_of(sh))) {
            s->conn = c;
            s->opened_ns = start;
            dbs__session_link(sh, s);
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
        dbs__shard_leave(p, sh);
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
    bool slow = p->cfg.slow_session_ms > 0 && held_ns >= dbs__ms_ns(p->cfg.slow_session_ms);
    bool fallback = false, parked = false, left = false;

    /* Before the connection is visible to anyone else, so checkout and
     * checkin events of one connection never cross. */
    /* c may be another thread's (or closed) by the time the events below
     * go out: they quote a copy. */
    const uint64_t conn_id = c ? c->id : 0;
    const int64_t conn_created_ns = c ? c->created_ns : 0;
    if (c)
        dbs__emit(p, DBS_EVENT_CHECKIN, s, c, 0, NULL);
    dbs__lock_take(&sh->mu);
    dbs__session_unlink(sh, s);
    s->conn = NULL;
    bool recovered = s->leak_reported;
    if (recovered)
        sh->leaks_recovered++;
    if (slow)
        sh->slow_sessions++;
    if (c) {
        sh->released++;
        if (p->cfg.metrics) {
            dbs__shard_hists *h = dbs__shard_hists_of(sh);
            if (h)
                dbs__hist_add(&h->use, held_ns / 1000);
            else
                fallback = true;
        }
        /* Park it for this thread's next checkout unless it must go, the
         * shard holds one already, or the waiters are owed it by the order
         * rule (dbs__may_keep; see dbs__shard for the protocol). */
        bool spent = sh->barge_held_ns + held_ns >= p->barge_hold_ns;
        if (!discard && !sh->closed && !sh->parked && p->mode != DBS_POOL_NONE &&
            !dbs__conn_expired(c, now) &&
            atomic_load_explicit(&p->n_open_hint, memory_order_relaxed) <= p->cfg.pool_size &&
            dbs__may_keep(p, now, spent, memory_order_relaxed)) {
            c->idle_since_ns = now;
            sh->parked = c;
            sh->parked_by = dbs__thread_ordinal();
            atomic_bool *flag = &p->maybe_parked[sh - p->shards];
            /* Already set: a waiter that counted itself before our look
             * below will take this shard's lock after us, or we see it. */
            if (!atomic_load_explicit(flag, memory_order_relaxed))
                atomic_store_explicit(flag, true, memory_order_seq_cst);
            int keep = dbs__may_keep(p, now, spent, memory_order_seq_cst);
            if (keep) {
                parked = true;
                sh->barge_held_ns = keep == DBS__KEEP_BARGE ? sh->barge_held_ns + held_ns : 0;
                last_conn.pool = p;
                last_conn.conn_id = c->id;
            } else {
                dbs__unpark(sh);
            }
        }
        if (!parked)
            sh->barge_held_ns = 0;
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
        enum dbs__gone why = DBS__GONE_POOL;
        if (discard) {
            reason = "broken";
            ev = DBS_EVENT_INVALIDATE;
            why = DBS__GONE_BROKEN;
        } else if (p->closed) {
            reason = "pool_close";
            why = DBS__GONE_POOL;
        } else if (p->mode == DBS_POOL_NONE) {
            reason = "no_pool";
            why = DBS__GONE_NONE_MODE;
        } else if (dbs__conn_expired(c, now)) {
            reason = "lifetime";
            why = DBS__GONE_LIFETIME;
        } else if (p->n_open > p->cfg.pool_size && !p->wait_head) {
            reason = "overflow";
            why = DBS__GONE_OVERFLOW;
        }
        if (reason) {
            dbs__conn_gone(p, why, now);
            dbs__pass_slot(p);
        } else {
            c->idle_since_ns = now; /* just used: no ping needed */
            if (dbs__hand_off(p, c)) {
                p->n_in_use++; /* still in use, by the waiter now */
            } else {
                dbs__idle_push(p, c);
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
    if (recovered || slow) {
        dbs__who who = dbs__who_of(s, NULL);
        who.conn_id = conn_id;
        who.conn_created_ns = conn_created_ns;
        if (recovered)
            dbs__emit_who(p, DBS_EVENT_LEAK_RECOVERED, &who, 0, NULL);
        if (slow)
            dbs__emit_who(p, DBS_EVENT_SLOW_SESSION, &who, 0, NULL);
    }
    if (c && reason) {
        dbs__emit(p, ev, s, c, discard ? DBS_ECONNECT : 0, reason);
        dbs__conn_close(p, c);
    }
    if (!left)
        dbs__shard_leave(p, sh); /* may free p */
}

void dbs__pool_count_retry(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->counters.retries++;
    pthread_mutex_unlock(&p->mu);
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
    dbs__replicas_free(p);
    free(p->replica_label);
    if (p->drv && p->drv->target_close)
        p->drv->target_close(&p->target);
    for (int i = 0; i < DBS__SHARDS; i++)
        free(p->shards[i].hists);
    pthread_cond_destroy(&p->hk_cv);
    pthread_cond_destroy(&p->drain_cv);
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
 * between users); the default logger prints them too. */
static void pool_notice(void *arg, const char *msg)
{
    dbs__emit_who(arg, DBS_EVENT_NOTICE, NULL, 0, msg);
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
    if (cfg->replica_url && *cfg->replica_url && strcmp(drv->name, "postgresql") != 0) {
        free(conninfo);
        dbs__err(err, DBS_ECONFIG,
                 "replica_url is set but the primary's URL is %s: read replicas are a "
                 "PostgreSQL feature", drv->name);
        return NULL;
    }
    drv = dbs__fault_driver(drv);

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
    p->fork_gen = dbs__fork_gen();
    p->cfg = *cfg;
    /* The default logger is for programs that listen to nothing: one that
     * set on_event gets each event once, there, unless it asks for both. */
    if (p->cfg.log_events < 0)
        p->cfg.log_events = p->cfg.on_event ? 0 : 1;
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
    pthread_cond_init(&p->drain_cv, &attr);
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
    /* SINGLE takes turns strictly; NONE never has a connection to pass. */
    p->barge_ns = p->mode == DBS_POOL_QUEUE ? (int64_t)cfg->barge_limit_us * 1000 : 0;
    atomic_init(&p->oldest_since_ns, INT64_MAX);
    p->barge_hold_ns = p->barge_ns / DBS_BARGE_HOLD_SHARE;
    p->target.memory = memory;
    p->target.busy_timeout_ms = cfg->busy_timeout_ms;
    p->target.stmt_cache_size = cfg->stmt_cache_size;
    p->target.reset = cfg->reset;
    p->target.connect_timeout_ms = cfg->connect_timeout_ms;
    p->target.statement_timeout_ms = cfg->statement_timeout_ms;
    p->target.notice = pool_notice;
    p->target.notice_arg = p;
    p->target.credential = cfg->credential;
    p->target.credential_user = cfg->credential_user;

    if (drv->target_open && drv->target_open(&p->target, err) != DBS_OK) {
        p->drv = NULL; /* nothing to close */
        pool_free(p);
        return NULL;
    }
    /* One connection up front proves the URL, credentials and database
     * before the program starts serving; lazy_open skips it, for a
     * program that must start while the database is down. */
    if (!cfg->lazy_open) {
        dbs__conn *c = dbs__conn_open(p, err);
        if (!c) {
            /* on_event hears of it as of any failed connect */
            dbs__connect_announce(p, NULL, NULL, -1, err);
            pool_free(p);
            return NULL;
        }
        int64_t now = dbs__now_ns();
        pthread_mutex_lock(&p->mu); /* no other thread yet: for the rule */
        dbs__conn_counted(p, c);
        /* Quoted by the events below: c may be closed by then. */
        const dbs__who who = {.conn_id = c->id, .conn_created_ns = c->created_ns};
        bool keep = p->mode != DBS_POOL_NONE;
        if (!keep) {
            dbs__conn_gone(p, DBS__GONE_NONE_MODE, now);
        } else {
            c->idle_since_ns = now;
            dbs__idle_push(p, c);
        }
        pthread_mutex_unlock(&p->mu);
        dbs__emit_who(p, DBS_EVENT_CONNECT, &who, 0, NULL);
        if (!keep) {
            dbs__emit_who(p, DBS_EVENT_CLOSE, &who, 0, "no_pool");
            dbs__conn_close(p, c);
        }
    }
    if (p->mode != DBS_POOL_NONE && dbs__housekeeper_start(p, err) != DBS_OK) {
        dbs_pool_close(p);
        return NULL;
    }
    if (cfg->replica_url && *cfg->replica_url) {
        dbs_error rerr;
        if (dbs__replicas_open(p, &rerr) != DBS_OK) {
            if (err)
                *err = rerr;
            dbs_pool_close(p);
            return NULL;
        }
        p->cfg.replica_url = NULL; /* the caller's: used only here */
    }
    if (err)
        dbs__err(err, DBS_OK, "ok");
    return p;
}

/* The first call of dbs_pool_shutdown (or of dbs_pool_close without it):
 * no new session from here on, waiters woken, idle and parked connections
 * closed, the housekeeper told to stop. */
static void begin_shutdown(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->closed = true;
    atomic_store(&p->is_closed, true);
    /* Each wakes with neither a connection nor a slot, sees p->closed and
     * returns DBS_ECLOSED. */
    for (dbs__waiter *w; (w = dbs__wait_pop(p));)
        POST_SEM(w->sem);
    const int64_t now = dbs__now_ns();
    dbs__conn *idle = p->idle_head;
    for (dbs__conn *c = idle; c; c = c->next)
        dbs__conn_gone(p, DBS__GONE_POOL, now);
    p->idle_head = p->idle_tail = NULL;
    p->n_idle = 0;
    /* From now on no shard parks or counts a new session; the sessions
     * and holds still counted keep the pool allocated through refs, and
     * the sessions are what shutdown waits for. */
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        dbs__lock_take(&sh->mu);
        sh->closed = true;
        dbs__conn *c = dbs__unpark(sh);
        if (c) {
            c->next = idle;
            idle = c;
            p->n_in_use--;
            dbs__conn_gone(p, DBS__GONE_POOL, now);
        }
        p->n_draining += sh->n_sessions;
        atomic_fetch_add(&p->refs, sh->n_sessions + sh->n_holds);
        dbs__lock_give(&sh->mu);
    }
    pthread_mutex_unlock(&p->mu);

    dbs__housekeeper_stop(p);
    dbs__replicas_shutdown(p);
    while (idle) {
        dbs__conn *next = idle->next;
        dbs__conn_close(p, idle);
        idle = next;
    }
}

int dbs_pool_shutdown(dbs_pool *p, int timeout_ms)
{
    if (!p || p->magic != DBS__POOL_MAGIC)
        return DBS_EMISUSE;
    const int64_t deadline = dbs__now_ns() + dbs__ms_ns(timeout_ms > 0 ? timeout_ms : 0);
    (void)dbs__pool_after_fork(p, NULL); /* as dbs_pool_close */
    begin_shutdown(p);
    pthread_mutex_lock(&p->mu);
    while (p->n_draining > 0 && timeout_ms != 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&p->drain_cv, &p->mu);
            continue;
        }
        struct timespec ts = dbs__timespec(deadline);
        /* Re-checked after every wake: a wait may end spuriously. */
        if (pthread_cond_timedwait(&p->drain_cv, &p->mu, &ts) == ETIMEDOUT)
            break;
    }
    int left = p->n_draining;
    pthread_mutex_unlock(&p->mu);
    return left + dbs__replicas_drain(p, deadline, timeout_ms < 0);
}

void dbs_pool_close(dbs_pool *p)
{
    if (!p || p->magic != DBS__POOL_MAGIC)
        return;
    /* in a child after fork(): the parent's connections are let go of
     * without a word, never closed as the pool's own */
    (void)dbs__pool_after_fork(p, NULL);
    begin_shutdown(p);
    pthread_mutex_lock(&p->mu);
    bool again = p->close_called;
    p->close_called = true;
    pthread_mutex_unlock(&p->mu);
    if (again)
        return;
    dbs__replicas_close(p);
    /* Sessions still out now were never going to be closed in time. */
    dbs__leaks_report(p, true, "still open at dbs_pool_close");
    dbs__pool_unref(p); /* the owner's reference: may free p */
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

dbs_backend dbs_pool_backend(const dbs_pool *p)
{
    if (!p || p->magic != DBS__POOL_MAGIC || !p->drv)
        return DBS_BACKEND_UNKNOWN;
    /* The fault-injecting copy of a driver keeps its name. */
    if (!strcmp(p->drv->name, "sqlite"))
        return DBS_BACKEND_SQLITE;
    if (!strcmp(p->drv->name, "postgresql"))
        return DBS_BACKEND_POSTGRESQL;
    if (!strcmp(p->drv->name, "mariadb"))
        return DBS_BACKEND_MARIADB;
    return DBS_BACKEND_UNKNOWN;
}
