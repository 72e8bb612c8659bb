/*
 * The pool's public face and its policy: acquire (the fast path through the
 * thread's shard and its parking slot, else the resource pool's locked path
 * and, if the caller must wait, its blocking adapter) and release (park,
 * else give back to the resource pool, which hands off, keeps idle or lets
 * go), with open, shutdown and close. What each connection is and how it
 * is checked is the connection layer's (conn.c); the slots, the idle list,
 * parking and the waiters are the resource pool's (respool.c); the
 * sessions listed and counted are the shards' (shard.c).
 */
#include "pool_int.h"
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The connection this thread last gave back to this pool. A thread that
 * finds it idle takes it again rather than the most recently released one:
 * the same server process keeps serving the same client thread, so the
 * kernel keeps the pair on warm caches, and each connection's prepared
 * statements stay hot. Only a preference: the id is looked for in the idle
 * list under its lock, never dereferenced from here. */
static _Thread_local struct {
    const dbs_pool *pool;
    uint64_t conn_id;
} last_conn;

static uint64_t preferred_conn(const dbs_pool *p)
{
    return last_conn.pool == p ? last_conn.conn_id : 0;
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
    if (s->uncounted) {
        /* dbscope's own (a readiness check): not the program's session */
        dbs__lock_give(&sh->mu);
        return;
    }
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

_Thread_local int64_t dbs__acquire_deadline_ns;
_Thread_local dbs__rp_waiter *dbs__acquire_waiter;
_Thread_local bool dbs__acquire_uncounted;

/* Until when an acquire begun at start may wait. */
static int64_t acquire_deadline(const dbs_pool *p, int64_t start)
{
    int64_t d = dbs__acquire_deadline_ns;
    return d > 0 ? d : start + dbs__ms_ns(p->cfg.acquire_timeout_ms);
}

/* With a slot reserved: connects, outside any lock. */
static int acquire_create(dbs_pool *p, dbs_session *s, int64_t start, dbs_error *err)
{
    int rc = dbs__conn_admit(p, !s->uncounted, err);
    if (rc != DBS_OK)
        return rc;
    dbs__conn *c = dbs__conn_open(p, err);
    int64_t now = dbs__now_ns();
    int ev;
    rc = dbs__conn_settle(p, c, c || !err ? DBS_OK : err->code, now, &ev);
    if (!c) {
        dbs__connect_announce(p, s, NULL, ev, err);
        return err ? err->code : DBS_ECONNECT;
    }
    if (rc == DBS_ECLOSED) {
        dbs__conn_close(p, c);
        return dbs__err(err, DBS_ECLOSED, "the pool was closed while connecting");
    }
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
    const char *why = NULL;
    dbs_error perr;
    if (dbs__conn_expired(c, now))
        why = "lifetime";
    else if (dbs__conn_check(p, c, dbs__needs_validation(p, c, now), &perr) != DBS_OK)
        why = "broken";
    if (!why) {
        checkout_done(p, s, c, start, now);
        return DBS_OK;
    }
    bool broken = why[0] == 'b';
    if (broken) {
        dbs__conn_release_failure(p, c, &s->prior);
        dbs__emit(p, DBS_EVENT_INVALIDATE, s, c, DBS_ECONNECT, perr.message);
    } else {
        dbs__emit(p, DBS_EVENT_CLOSE, s, c, 0, why);
    }
    /* A replacement keeps the caller's turn, but within its bound: after
     * the acquire timeout no connect is begun, so dbs_session_open returns
     * within acquire_timeout_ms plus one connect or one validation. */
    bool late = dbs__now_ns() >= acquire_deadline(p, start);
    int st = DBS__RP_CLOSED;
    if (late)
        dbs__rp_release(&p->rp, &c->item, now, DBS__RP_DROP_FIRST);
    else
        st = dbs__rp_replace(&p->rp, &c->item);
    dbs__conn_close(p, c);
    dbs__conn_gone(p, broken ? DBS__GONE_BROKEN : DBS__GONE_LIFETIME, 1, dbs__now_ns());
    if (dbs__rp_is_closed(&p->rp)) {
        if (st == DBS__RP_CREATE)
            dbs__rp_create_failed(&p->rp);
        return dbs__err(err, DBS_ECLOSED, "the pool is closed");
    }
    if (late)
        return dbs__err(err, DBS_ECONNECT,
                        "the connection failed validation (%s) and acquire_timeout_ms=%d "
                        "had passed before another could be opened",
                        broken ? perr.message : why, p->cfg.acquire_timeout_ms);
    return acquire_create(p, s, start, err);
}

/* The locked path: the resource pool's idle list, a parked connection of
 * another thread, a new connection, or its queue (blocking until served or
 * the acquire deadline). */
static int acquire_slow(dbs_pool *p, dbs_session *s, int64_t start, dbs_error *err)
{
    const int64_t deadline = acquire_deadline(p, start);
    bool was_closed = dbs__rp_is_closed(&p->rp);
    dbs__rp_item *it = NULL;
    dbs__rp_stats seen;
    int st = dbs__rp_wait(&p->rp, preferred_conn(p), deadline, &it, &seen,
                          dbs__acquire_waiter);
    /* Served just as its unit was cancelled: what it was served with goes
     * on to the next waiter, unchecked and uncounted, as a loop's request
     * puts back what it no longer wants; a wait that ran out meanwhile
     * is no timeout of the pool's either. */
    if (st != DBS__RP_CLOSED && st != DBS__RP_CANCELED && dbs__acquire_waiter &&
        dbs__rp_waiter_cancelled(dbs__acquire_waiter)) {
        if (st == DBS__RP_READY)
            dbs__pool_loop_giveback(p, dbs__conn_of(it), false, false, 0, NULL);
        else if (st == DBS__RP_CREATE)
            dbs__rp_create_failed(&p->rp);
        st = DBS__RP_CANCELED;
    }
    switch (st) {
    case DBS__RP_READY:
        return acquire_check(p, s, dbs__conn_of(it), start, err);
    case DBS__RP_CREATE:
        return acquire_create(p, s, start, err);
    case DBS__RP_CLOSED:
        return dbs__err(err, DBS_ECLOSED, was_closed ? "the pool is closed"
                                                     : "the pool was closed while waiting");
    case DBS__RP_CANCELED:
        return dbs__err(err, DBS_ECANCELED,
                        "the unit was cancelled while it waited for a connection");
    case DBS__RP_EXPIRED: {
        pthread_mutex_lock(&p->mu);
        if (!s->uncounted)
            p->counters.timeouts++;
        pthread_mutex_unlock(&p->mu);
        /* The event quotes the caller's message: the numbers say why. */
        dbs_error local;
        if (!err)
            err = &local;
        /* a deadline without a worker's waiter is a read-only session's
         * acquire_timeout_ms, shared with the replica it passed over */
        int rc = dbs__acquire_deadline_ns > 0 && dbs__acquire_waiter
                     ? dbs__err(err, DBS_ETIMEOUT,
                                "timed out waiting for a connection until the unit's deadline "
                                "(its timeout, or acquire_timeout_ms=%d from when it was "
                                "queued; pool size %d, %d in use, %d others waiting): raise "
                                "pool_size/max_overflow, acquire_timeout_ms or the unit's "
                                "timeout",
                                p->cfg.acquire_timeout_ms, seen.open, seen.in_use, seen.waiting)
                     : dbs__err(err, DBS_ETIMEOUT,
                          "timed out waiting for a connection: none within "
                          "acquire_timeout_ms=%d (pool size %d, %d in use, %d others "
                          "waiting): raise pool_size/max_overflow, or look for sessions "
                          "held too long (leak_threshold_ms)",
                          p->cfg.acquire_timeout_ms, seen.open, seen.in_use, seen.waiting);
        dbs__emit(p, DBS_EVENT_TIMEOUT, s, NULL, rc, err->message);
        return rc;
    }
    default:
        return dbs__err(err, DBS_ENOMEM, "cannot create a wait semaphore");
    }
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
    /* The fast path: the connection parked for this thread, when the order
     * rule lets it take it back; settled in this one hold of its shard's
     * lock (and its parking slot's). */
    dbs__conn *c = dbs__conn_of(dbs__rp_unpark(&p->rp, dbs__thread_ordinal(), start));
    /* A connection whose socket must be looked at goes the way of one to
     * validate (acquire_check): no system call under this lock. */
    if (c && !dbs__conn_expired(c, start) && !dbs__peek_wanted(p) &&
        !dbs__needs_validation(p, c, start) && (!p->cfg.metrics || dbs__shard_hists_of(sh))) {
        s->conn = c;
        s->opened_ns = start;
        dbs__session_link(sh, s);
        if (!s->uncounted) {
            sh->acquired++;
            if (p->cfg.metrics)
                dbs__hist_add(&sh->hists->wait, 0);
        }
        dbs__lock_give(&sh->mu);
        if (!s->uncounted)
            dbs__emit(p, DBS_EVENT_CHECKOUT, s, c, 0, NULL);
        return DBS_OK;
    }
    dbs__lock_give(&sh->mu);
    int rc = c ? acquire_check(p, s, c, start, err) : acquire_slow(p, s, start, err);
    if (rc != DBS_OK && dbs__shard_leave(p, sh))
        dbs__pool_unref(p);
    return rc;
}

void dbs__pool_release(dbs_pool *p, dbs_session *s, enum dbs__giveback how)
{
    bool discard = how != DBS__GIVE_KEEP;
    dbs__conn *c = s->conn;
    dbs__shard *sh = s->shard;
    const char *reason = NULL;
    enum dbs_event_kind ev = DBS_EVENT_CLOSE;
    enum dbs__gone why = DBS__GONE_POOL;
    int64_t now = dbs__now_ns();
    int64_t held_ns = now - s->opened_ns;
    bool slow = p->cfg.slow_session_ms > 0 && held_ns >= dbs__ms_ns(p->cfg.slow_session_ms) &&
                !s->uncounted;
    bool fallback = false, parked = false, left = false;

    /* Before the connection is visible to anyone else, so checkout and
     * checkin events of one connection never cross. */
    /* c may be another thread's (or closed) by the time the events below
     * go out: they quote a copy. */
    const uint64_t conn_id = c ? c->item.id : 0;
    const int64_t conn_created_ns = c ? c->created_ns : 0;
    /* a readiness check's session (uncounted) is dbscope's own: no
     * check-in, as it had no check-out, and no count */
    const bool counted = !s->uncounted;
    if (c && counted)
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
        if (counted)
            sh->released++;
        if (counted && p->cfg.metrics) {
            dbs__shard_hists *h = dbs__shard_hists_of(sh);
            if (h)
                dbs__hist_add(&h->use, held_ns / 1000);
            else
                fallback = true;
        }
        /* Park it for this thread's next checkout unless it must go or the
         * resource pool's order rule owes it to the waiters. */
        if (!discard && !sh->closed && p->mode != DBS_POOL_NONE &&
            dbs__rp_park(&p->rp, &c->item, dbs__thread_ordinal(), now, held_ns)) {
            parked = true;
            last_conn.pool = p;
            last_conn.conn_id = conn_id;
        }
    }
    if (parked && !recovered && !slow && !fallback) {
        /* nothing left to do with p: stop counting now, in this hold */
        sh->n_sessions--;
        left = true;
    }
    dbs__lock_give(&sh->mu);

    if (c && !parked) {
        enum dbs__rp_ask ask = discard                    ? DBS__RP_DROP_FIRST
                               : p->mode == DBS_POOL_NONE ? DBS__RP_DROP
                                                          : DBS__RP_KEEP;
        switch (dbs__rp_release(&p->rp, &c->item, now, ask)) {
        case DBS__RP_GONE_ASKED:
            if (how == DBS__GIVE_DIRTY) {
                reason = "dirty";
                why = DBS__GONE_DIRTY;
            } else if (discard) {
                reason = "broken";
                ev = DBS_EVENT_INVALIDATE;
                why = DBS__GONE_BROKEN;
            } else {
                reason = "no_pool";
                why = DBS__GONE_NONE_MODE;
            }
            break;
        case DBS__RP_GONE_CLOSED: reason = "pool_close"; why = DBS__GONE_POOL; break;
        case DBS__RP_GONE_EXPIRED: reason = "lifetime"; why = DBS__GONE_LIFETIME; break;
        case DBS__RP_GONE_OVERFLOW: reason = "overflow"; why = DBS__GONE_OVERFLOW; break;
        case DBS__RP_IDLE:
            last_conn.pool = p;
            last_conn.conn_id = conn_id;
            break;
        default: break; /* handed to the oldest waiter */
        }
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
        /* A failure's event carries that failure: the one that broke the
         * session where it is known (a statement past its bound, a COMMIT
         * whose outcome is unknown), not only a lost connection. */
        int code = 0;
        if (ev == DBS_EVENT_INVALIDATE) {
            code = s->broke.code ? s->broke.code : DBS_ECONNECT;
            if (s->broke.code)
                reason = s->broke.message;
        }
        dbs__emit(p, ev, s, c, code, reason);
        dbs__conn_close(p, c);
        dbs__conn_gone(p, why, 1, now); /* its slot goes on once it is closed */
    }
    if (!left && dbs__shard_leave(p, sh))
        dbs__pool_unref(p); /* may free p */
}

int dbs__pool_hold(dbs_pool *p, dbs_error *err)
{
    dbs__shard *sh = dbs__shard_of(p);
    dbs__lock_take(&sh->mu);
    if (sh->closed) {
        dbs__lock_give(&sh->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is shut down");
    }
    sh->n_holds++;
    dbs__lock_give(&sh->mu);
    return DBS_OK;
}

void dbs__pool_drop(dbs_pool *p)
{
    dbs__shard *sh = dbs__shard_of(p);
    dbs__lock_take(&sh->mu);
    sh->n_holds--;
    bool closed = sh->closed;
    dbs__lock_give(&sh->mu);
    if (closed)
        dbs__pool_unref(p);
}

void dbs__pool_keep(dbs_pool *p, dbs__kept *k)
{
    pthread_mutex_lock(&p->mu);
    k->next = p->kept;
    p->kept = k;
    pthread_mutex_unlock(&p->mu);
}

void dbs__pool_count_leak(dbs_pool *p, bool recovered)
{
    dbs__shard *sh = dbs__shard_of(p);
    dbs__lock_take(&sh->mu);
    if (recovered)
        sh->leaks_recovered++;
    else
        sh->leaks++;
    dbs__lock_give(&sh->mu);
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
    /* Whichever call drops the last reference (a dbs_pool_stats racing
     * dbs_pool_close, say) closes the targets here: waits, joins, closes. */
    DBS__NO_CANCEL(cancel_old);
    if (p->workers_free)
        p->workers_free(p);
    if (p->on_free)
        p->on_free(p);
    free(p->replica_label);
    if (p->drv && p->drv->target_close)
        p->drv->target_close(&p->target);
    for (int i = 0; i < DBS__SHARDS; i++)
        free(p->shards[i].hists);
    while (p->exited) {
        struct dbs_session *s = p->exited;
        p->exited = s->t_next;
        free(s->ctx_buf);
        free(s);
    }
    while (p->kept) {
        dbs__kept *k = p->kept;
        p->kept = k->next;
        k->free(k);
    }
    pthread_cond_destroy(&p->hk_cv);
    pthread_cond_destroy(&p->drain_cv);
    pthread_cond_destroy(&p->stop_cv);
    pthread_mutex_destroy(&p->mu);
    dbs__rp_destroy(&p->rp);
    free(p->url);
    free(p->name);
    free((void *)(uintptr_t)p->target.conninfo);
    for (int i = 0; i < 3; i++)
        free(p->ctx_settings[i]);
    p->magic = DBS__DEAD_MAGIC;
    free(p);
}

void dbs__pool_ref(dbs_pool *p)
{
    atomic_fetch_add(&p->refs, 1);
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

/* The pool's lock and condition variables, made at open and made anew in
 * a child after fork(). The lock is held for a few dozen instructions at a
 * time: spinning briefly beats sleeping in the kernel when another core
 * holds it. */
void dbs__pool_init_sync(dbs_pool *p)
{
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
    pthread_cond_init(&p->stop_cv, &attr);
    pthread_condattr_destroy(&attr);
}

dbs_pool *dbs__pool_open(const dbs_config *cfg, dbs_error *err)
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
    drv = dbs__cancel_driver(dbs__fault_driver(drv));

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
    p->mode = cfg->mode == DBS_POOL_AUTO ? (memory ? DBS_POOL_SINGLE : DBS_POOL_QUEUE)
                                         : cfg->mode;
    dbs__rp_config rc = {.keep_size = cfg->pool_size, .keep_none = p->mode == DBS_POOL_NONE};
    switch (p->mode) {
    case DBS_POOL_SINGLE: rc.max_size = 1; break;
    case DBS_POOL_NONE: rc.max_size = INT_MAX; break;
    default: rc.max_size = cfg->pool_size + cfg->max_overflow; break;
    }
    /* SINGLE takes turns strictly; NONE never has a connection to pass. */
    rc.barge_ns = p->mode == DBS_POOL_QUEUE ? (int64_t)cfg->barge_limit_us * 1000 : 0;
    rc.barge_hold_ns = rc.barge_ns / DBS_BARGE_HOLD_SHARE;
    dbs__rp_init(&p->rp, &rc);
    dbs__breaker_init(&p->breaker, cfg->circuit_threshold, cfg->circuit_cooldown_ms);
    /* The default logger is for programs that listen to nothing: one that
     * set on_event gets each event once, there, unless it asks for both. */
    if (p->cfg.log_events < 0)
        p->cfg.log_events = p->cfg.on_event ? 0 : 1;
    p->drv = drv;
    p->target.conninfo = conninfo;
    p->url = dup_opt(cfg->url);
    p->name = dup_opt(cfg->name ? cfg->name : "default");
    const char *names[3] = {cfg->ctx_request_setting, cfg->ctx_user_setting,
                            cfg->ctx_tenant_setting};
    bool oom = !p->url || !p->name;
    for (int i = 0; i < 3; i++) {
        p->ctx_settings[i] = dup_opt(names[i]);
        oom |= names[i] && !p->ctx_settings[i];
        p->target.ctx_setting[i] = p->ctx_settings[i];
    }
    dbs__pool_init_sync(p);
    atomic_init(&p->refs, 1);
    if (oom) {
        pool_free(p);
        dbs__err(err, DBS_ENOMEM, "out of memory allocating the pool");
        return NULL;
    }
    p->cfg.url = p->url;
    p->cfg.name = p->name;
    p->cfg.ctx_request_setting = p->ctx_settings[0];
    p->cfg.ctx_user_setting = p->ctx_settings[1];
    p->cfg.ctx_tenant_setting = p->ctx_settings[2];

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
        /* no other thread yet: the slot is there */
        dbs__rp_reserve_upto(&p->rp, 1, 0);
        pthread_mutex_lock(&p->mu);
        p->counters.created++;
        pthread_mutex_unlock(&p->mu);
        bool keep = p->mode != DBS_POOL_NONE;
        dbs__rp_created(&p->rp, &c->item, now, keep);
        /* Quoted by the events below: c may be closed by then. */
        const dbs__who who = {.conn_id = c->item.id, .conn_created_ns = c->created_ns};
        if (!keep)
            dbs__rp_release(&p->rp, &c->item, now, DBS__RP_DROP);
        dbs__emit_who(p, DBS_EVENT_CONNECT, &who, 0, NULL);
        if (!keep) {
            dbs__emit_who(p, DBS_EVENT_CLOSE, &who, 0, "no_pool");
            dbs__conn_close(p, c);
            dbs__conn_gone(p, DBS__GONE_NONE_MODE, 1, now);
        }
    }
    if (err)
        dbs__err(err, DBS_OK, "ok");
    return p;
}

bool dbs__pool_begin_shutdown(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    p->closed = true;
    atomic_store(&p->is_closed, true);
    /* From now on no shard counts a new session; the sessions and holds
     * still counted keep the pool allocated through refs, and the sessions
     * are what shutdown waits for. */
    dbs__shards_close(p);
    pthread_mutex_unlock(&p->mu);
    /* Each waiter wakes with neither a connection nor a slot and returns
     * DBS_ECLOSED; the idle and parked connections come back to close. */
    dbs__rp_item *idle = dbs__rp_close(&p->rp);
    int n = 0;
    while (idle) {
        dbs__rp_item *next = idle->next;
        dbs__conn_close(p, dbs__conn_of(idle));
        idle = next;
        n++;
    }
    dbs__conn_gone(p, DBS__GONE_POOL, n, dbs__now_ns());
    return true;
}

void dbs__pool_set_stopped(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopped = true;
    pthread_cond_broadcast(&p->stop_cv);
    pthread_mutex_unlock(&p->mu);
}

void dbs__pool_wait_stopped(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    /* Re-checked after every wake: a wait may end spuriously. Bounded as
     * the first caller's joins are (tens of ms, or a statement bound for
     * a worker's statement). */
    while (!p->stopped)
        pthread_cond_wait(&p->stop_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int dbs__pool_drain(dbs_pool *p, int64_t deadline, int timeout_ms)
{
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
    return left;
}

bool dbs__pool_close_once(dbs_pool *p)
{
    pthread_mutex_lock(&p->mu);
    bool again = p->close_called;
    p->close_called = true;
    pthread_mutex_unlock(&p->mu);
    return !again;
}

void dbs__pool_stop_target(dbs_pool *p)
{
    if (p->drv && p->drv->target_stop)
        p->drv->target_stop(&p->target);
}

void dbs__pool_snapshot(dbs_pool *p, dbs_stats *out, dbs__shard_hists **hists)
{
    /* Every shard's lock under the pool's: nothing moves while the
     * snapshot is taken, so its numbers add up. */
    dbs__rp_stats rs;
    pthread_mutex_lock(&p->mu);
    dbs__shards_lock(p);
    *out = p->counters;
    for (int i = 0; i < DBS__SHARDS; i++) {
        const dbs__shard *sh = &p->shards[i];
        out->acquired += sh->acquired;
        out->released += sh->released;
        out->leaks += sh->leaks;
        out->leaks_recovered += sh->leaks_recovered;
        out->slow_sessions += sh->slow_sessions;
        if (hists)
            hists[i] = sh->hists;
    }
    dbs__rp_stats_get(&p->rp, &rs);
    /* A parked connection is idle for every purpose but the idle list; one
     * leaving is still open, in use by whoever closes it, until counted
     * closed (dbs__conn_gone): so size = idle + in_use = created - closed. */
    int in_use = rs.in_use - rs.parked + rs.leaving;
    out->size = rs.open + rs.leaving;
    out->idle = rs.idle + rs.parked;
    out->in_use = in_use;
    int over = out->size - p->cfg.pool_size;
    if (p->mode != DBS_POOL_QUEUE || over < 0)
        over = 0;
    out->overflow_in_use = over < in_use ? over : in_use;
    out->waiting = rs.waiting;
    out->pending = rs.pending;
    out->max_size = rs.max_size;
    dbs__shards_unlock(p);
    pthread_mutex_unlock(&p->mu);
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

/* ---- connections held by an event loop (loop.c) ---- */

/* Counts a loop's check-out (out) or check-in in the calling thread's
 * shard, with its wait or use time in the histograms. */
static void loop_count(dbs_pool *p, bool out, int64_t ns)
{
    dbs__shard *sh = dbs__shard_of(p);
    bool fallback = false;
    dbs__lock_take(&sh->mu);
    if (out)
        sh->acquired++;
    else
        sh->released++;
    if (p->cfg.metrics) {
        dbs__shard_hists *h = dbs__shard_hists_of(sh);
        if (h)
            dbs__hist_add(out ? &h->wait : &h->use, ns / 1000);
        else
            fallback = true;
    }
    dbs__lock_give(&sh->mu);
    if (fallback) {
        pthread_mutex_lock(&p->mu);
        dbs__hist_add(out ? &p->wait_hist : &p->use_hist, ns / 1000);
        pthread_mutex_unlock(&p->mu);
    }
}

void dbs__pool_loop_checkout(dbs_pool *p, dbs__conn *c, int64_t wait_ns)
{
    loop_count(p, true, wait_ns);
    dbs__emit(p, DBS_EVENT_CHECKOUT, NULL, c, 0, NULL);
}

void dbs__pool_loop_left(dbs_pool *p, dbs__conn *c)
{
    bool none = p->mode == DBS_POOL_NONE;
    dbs__emit(p, DBS_EVENT_CLOSE, NULL, c, 0, none ? "no_pool" : "pool_close");
    dbs__conn_close(p, c);
    dbs__conn_gone(p, none ? DBS__GONE_NONE_MODE : DBS__GONE_POOL, 1, dbs__now_ns());
}

void dbs__pool_loop_giveback(dbs_pool *p, dbs__conn *c, bool counted, bool discard,
                             int64_t held_ns, const dbs_error *broke)
{
    int64_t now = dbs__now_ns();
    if (counted) {
        dbs__emit(p, DBS_EVENT_CHECKIN, NULL, c, 0, NULL);
        loop_count(p, false, held_ns);
    }
    enum dbs__rp_ask ask = discard                    ? DBS__RP_DROP_FIRST
                           : p->mode == DBS_POOL_NONE ? DBS__RP_DROP
                                                      : DBS__RP_KEEP;
    const char *reason = NULL;
    enum dbs__gone why = DBS__GONE_POOL;
    switch (dbs__rp_release(&p->rp, &c->item, now, ask)) {
    case DBS__RP_GONE_ASKED:
        reason = discard ? "broken" : "no_pool";
        why = discard ? DBS__GONE_BROKEN : DBS__GONE_NONE_MODE;
        break;
    case DBS__RP_GONE_CLOSED: reason = "pool_close"; break;
    case DBS__RP_GONE_EXPIRED: reason = "lifetime"; why = DBS__GONE_LIFETIME; break;
    case DBS__RP_GONE_OVERFLOW: reason = "overflow"; why = DBS__GONE_OVERFLOW; break;
    default: break; /* kept: idle, or handed to the oldest waiter */
    }
    if (!reason)
        return;
    /* as a session's (dbs__pool_release): the failure, where it is known */
    int code = 0;
    if (discard) {
        code = broke && broke->code < 0 ? broke->code : DBS_ECONNECT;
        if (broke && broke->code < 0 && broke->message[0] && !strcmp(reason, "broken"))
            reason = broke->message;
    }
    dbs__emit(p, discard ? DBS_EVENT_INVALIDATE : DBS_EVENT_CLOSE, NULL, c, code, reason);
    dbs__conn_close(p, c);
    dbs__conn_gone(p, why, 1, now);
}
