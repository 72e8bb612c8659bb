/* The housekeeper: one background thread a pool that keeps min_idle
 * connections ready and closes idle ones past idle_timeout or lifetime, so a
 * quiet pool shrinks and a busy one never pays for a connect it could have
 * made in advance; with leak_threshold_ms, a second one that only reports
 * leaks, started and joined by the first. Stopped and joined by
 * dbs_pool_close. */
#include "pool_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- leaks ----
 * A session's fields are copied under its shard's lock, because the session
 * may close and be reused the moment the lock is released; the copies are
 * reported after. */

enum { LEAK_BATCH = 32 };

typedef struct leak_report {
    dbs__who who;
    dbs_context ctx; /* who.ctx points here; its strings into the batch's */
} leak_report;

static const char *copy_str(char **w, const char *src)
{
    if (!src)
        return NULL;
    size_t n = strlen(src) + 1;
    char *dst = memcpy(*w, src, n);
    *w += n;
    return dst;
}

static bool leak_due(const dbs_session *s, int64_t now, int64_t threshold_ns, bool at_close)
{
    return at_close ? !s->close_reported
                    : !s->leak_reported && now - s->opened_ns >= threshold_ns;
}

/* Marks and copies up to LEAK_BATCH sessions of sh not yet reported that
 * are held past the threshold; at pool close, every session still open,
 * even one reported before: the operator needs the full list of what was
 * abandoned. A session counts as one leak however often it is reported.
 * The contexts are copied whole (the event's ctx is the session's) into
 * strs: when they need more than cap bytes, nothing is marked, *need says
 * how many, and -1 is returned, to be called again with room. [shard] */
static int collect_leaks(dbs__shard *sh, int64_t now, int64_t threshold_ns, bool at_close,
                         leak_report *out, char *strs, size_t cap, size_t *need)
{
    int n = 0;
    size_t bytes = 0;
    for (dbs_session *s = sh->sessions; s && n < LEAK_BATCH; s = s->next) {
        if (!leak_due(s, now, threshold_ns, at_close))
            continue;
        const char *f[3] = {s->ctx.request_id, s->ctx.user_id, s->ctx.tenant_id};
        for (int i = 0; i < 3; i++)
            bytes += f[i] ? strlen(f[i]) + 1 : 0;
        n++;
    }
    if (bytes > cap) {
        *need = bytes;
        return -1;
    }
    n = 0;
    char *w = strs;
    for (dbs_session *s = sh->sessions; s && n < LEAK_BATCH; s = s->next) {
        if (!leak_due(s, now, threshold_ns, at_close))
            continue;
        if (at_close)
            s->close_reported = true;
        if (!s->leak_reported) {
            s->leak_reported = true;
            sh->leaks++;
        }
        leak_report *r = &out[n++];
        r->who = dbs__who_of(s, s->conn);
        r->ctx.request_id = copy_str(&w, s->ctx.request_id);
        r->ctx.user_id = copy_str(&w, s->ctx.user_id);
        r->ctx.tenant_id = copy_str(&w, s->ctx.tenant_id);
        r->who.ctx = &r->ctx;
    }
    return n;
}

void dbs__leaks_report(dbs_pool *p, bool all, const char *reason)
{
    leak_report *batch = malloc(sizeof *batch * LEAK_BATCH);
    size_t cap = 4096;
    char *strs = malloc(cap);
    if (!batch || !strs) {
        free(batch);
        free(strs);
        return; /* reported next round */
    }
    int64_t threshold = all ? 0 : (int64_t)p->cfg.leak_threshold_ms * 1000000;
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        for (;;) {
            size_t need = 0;
            dbs__lock_take(&sh->mu);
            int n = collect_leaks(sh, dbs__now_ns(), threshold, all, batch, strs, cap, &need);
            dbs__lock_give(&sh->mu);
            if (n < 0) {
                /* grown outside the lock; the sessions may change meanwhile,
                 * so what they need is measured again */
                char *more = realloc(strs, need);
                if (!more)
                    goto out; /* reported next round */
                strs = more;
                cap = need;
                continue;
            }
            for (int k = 0; k < n; k++)
                dbs__emit_who(p, DBS_EVENT_LEAK, &batch[k].who, 0, reason);
            if (n < LEAK_BATCH)
                break;
        }
    }
out:
    free(strs);
    free(batch);
}

/* What the pool connects to changed under it (a database file deleted or
 * replaced): report it, and have every connection validated before its next
 * hand-out, so none goes on writing where nobody will read. */
static void check_target(dbs_pool *p)
{
    if (!p->drv->target_check)
        return;
    dbs_error err;
    if (p->drv->target_check(&p->target, &err) == DBS_OK)
        return;
    dbs__conn_suspect(p, dbs__now_ns());
    dbs__emit(p, DBS_EVENT_INVALIDATE, NULL, NULL, err.code, err.message);
}

/* ---- upkeep of the idle connections ---- */

/* Closes each of list (through next) after its event. */
static void close_list(dbs_pool *p, dbs__rp_item *list, const char *why)
{
    while (list) {
        dbs__rp_item *next = list->next;
        dbs__conn *c = dbs__conn_of(list);
        dbs__emit(p, DBS_EVENT_CLOSE, NULL, c, 0, why);
        dbs__conn_close(p, c);
        list = next;
    }
}

static int list_len(const dbs__rp_item *list)
{
    int n = 0;
    for (; list; list = list->next)
        n++;
    return n;
}

void dbs__pool_maintain(dbs_pool *p)
{
    if (p->mode == DBS_POOL_NONE || dbs__rp_is_closed(&p->rp))
        return;
    int64_t now = dbs__now_ns();
    int64_t idle_ns = dbs__ms_ns(p->cfg.idle_timeout_ms);
    int64_t ka = dbs__ms_ns(p->cfg.keepalive_ms);
    int64_t idle_before = idle_ns > 0 ? now - idle_ns : INT64_MIN;
    int64_t ka_before = ka > 0 ? now - ka : INT64_MIN;

    /* Parked connections age too: those the checks below may act on go
     * back to the idle list; the rest count as idle for min_idle. */
    int parked_idle = dbs__rp_unpark_stale(&p->rp, now,
                                           idle_before > ka_before ? idle_before : ka_before);
    dbs__rp_item *expired, *idle;
    dbs__rp_take_stale(&p->rp, now, idle_before, p->cfg.min_idle - parked_idle, &expired,
                       &idle);
    /* Closed before anything else: their slots stay taken, from waiters
     * and from the refill below, until they are, so that the server never
     * sees one connection more than the ceiling; a ping pass on a slow
     * server would make that wait last. */
    int n_expired = list_len(expired), n_idle = list_len(idle);
    close_list(p, idle, "idle");
    close_list(p, expired, "lifetime");
    dbs__conn_gone(p, DBS__GONE_LIFETIME, n_expired, now);
    dbs__conn_gone(p, DBS__GONE_IDLE, n_idle, now);
    /* Keep-alive: connections idle past keepalive_ms are taken (counted in
     * use, so nobody gets them mid-ping) and pinged below. */
    int pinging = 0; /* still idle, for min_idle's count */
    dbs__rp_item *ping_list = ka > 0 ? dbs__rp_take_idle_before(&p->rp, ka_before, &pinging) : NULL;
    int create = dbs__rp_reserve_upto(&p->rp, p->cfg.min_idle,
                                      pinging + parked_idle + atomic_load(&p->warming));

    while (ping_list) {
        dbs__rp_item *it = ping_list;
        ping_list = it->next;
        dbs__conn *c = dbs__conn_of(it);
        dbs_error perr;
        bool ok = dbs__conn_validate(p, c, &perr) == DBS_OK;
        if (!ok) {
            dbs_error rerr;
            dbs__conn_release_failure(p, c, &rerr);
            if (rerr.code < 0)
                dbs__errors_note(p, rerr.code, rerr.sqlstate);
        }
        int64_t t = dbs__now_ns(); /* just pinged */
        /* A ping is not a use: idle_timeout_ms still counts from the last
         * session, or keep-alive would keep every connection for good. */
        enum dbs__rp_outcome out =
            dbs__rp_release(&p->rp, it, t, ok ? DBS__RP_KEEP_LOOKED : DBS__RP_DROP_FIRST);
        if (out == DBS__RP_IDLE || out == DBS__RP_HANDED)
            continue;
        if (!ok)
            dbs__emit(p, DBS_EVENT_INVALIDATE, NULL, c, DBS_ECONNECT, perr.message);
        dbs__conn_close(p, c);
        dbs__conn_gone(p, ok ? DBS__GONE_POOL : DBS__GONE_BROKEN, 1, t);
    }

    /* Warm-up: min_idle connects, made here and never on a request's
     * path. Each reserved slot is either used or given back; the circuit
     * breaker and a shutdown stop the round. */
    for (int i = 0; i < create; i++) {
        bool closed = dbs__rp_is_closed(&p->rp);
        if (closed || dbs__conn_admit(p, false, NULL) != DBS_OK) {
            /* a refused admit gave its own slot back */
            for (int k = closed ? i : i + 1; k < create; k++)
                dbs__rp_create_failed(&p->rp);
            return;
        }
        dbs_error err;
        dbs__conn *c = dbs__conn_open(p, &err);
        now = dbs__now_ns();
        int ev;
        /* counted from before its slot stops being pending until after it
         * is idle: counted twice at worst, never missed */
        atomic_fetch_add(&p->warming, 1);
        int rc = dbs__conn_settle(p, c, c ? DBS_OK : err.code, now, &ev);
        if (!c || rc == DBS_ECLOSED)
            atomic_fetch_sub(&p->warming, 1);
        if (!c) {
            for (int k = i + 1; k < create; k++)
                dbs__rp_create_failed(&p->rp); /* give back the rest too */
            dbs__connect_announce(p, NULL, NULL, ev, &err);
            return;
        }
        if (rc == DBS_ECLOSED) {
            dbs__conn_close(p, c);
            continue; /* the next turn gives back the rest */
        }
        /* Announced while still the housekeeper's: once idle, another
         * thread may take it, and close and free it, at once. */
        dbs__connect_announce(p, NULL, c, ev, NULL);
        now = dbs__now_ns();
        enum dbs__rp_outcome out = dbs__rp_release(&p->rp, &c->item, now, DBS__RP_KEEP_ALL);
        atomic_fetch_sub(&p->warming, 1);
        if (out != DBS__RP_IDLE && out != DBS__RP_HANDED) { /* shut down meanwhile */
            dbs__emit(p, DBS_EVENT_CLOSE, NULL, c, 0, "pool_close");
            dbs__conn_close(p, c);
            dbs__conn_gone(p, DBS__GONE_POOL, 1, now);
        }
    }
}

/* Sleeps period_ns, or until the housekeeper is stopped. [mu], held
 * again on return */
static void hk_sleep(dbs_pool *p, int64_t period_ns)
{
    struct timespec ts = dbs__timespec(dbs__now_ns() + period_ns);
    /* Re-check the flag after every wake: a wait can end spuriously. */
    while (p->hk_running && pthread_cond_timedwait(&p->hk_cv, &p->mu, &ts) != ETIMEDOUT) {
    }
}

/* A leak is reported within a quarter of its threshold after it crosses
 * it, whatever the housekeeping interval. */
static int64_t leak_period_ns(const dbs_pool *p)
{
    int64_t ms = p->cfg.leak_threshold_ms / 4 > 10 ? p->cfg.leak_threshold_ms / 4 : 10;
    return ms * 1000000;
}

/* The leak reports, on a thread of their own beside the housekeeper's
 * upkeep: a keep-alive ping or a min_idle connect to a server that stopped
 * answering lasts up to its bound, and the sessions stuck on that server
 * are the ones to report in time. It calls no driver. */
static void *leaks_main(void *arg)
{
    dbs_pool *p = arg;
    /* one of the pool's own threads: a stop asked from its callbacks is
     * refused (dbs_pool_close joins the housekeeper, which joins this) */
    dbs__thread_stop = &p->is_closed;
    pthread_mutex_lock(&p->mu);
    while (p->hk_running) {
        pthread_mutex_unlock(&p->mu);
        /* a child must not inherit a shard lock held by this thread */
        dbs__fork_gate_enter();
        dbs__leaks_report(p, false, "held past leak_threshold_ms");
        dbs__fork_gate_leave();
        pthread_mutex_lock(&p->mu);
        hk_sleep(p, leak_period_ns(p));
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *housekeeper_main(void *arg)
{
    dbs_pool *p = arg;
    /* Set before dbs__housekeeper_stop joins: a connect or ping of this
     * round then ends at once. */
    dbs__thread_stop = &p->is_closed;
    /* Joined below, before this thread lets go of the pool. Without it
     * (no thread to be had) the rounds report leaks, as often as they
     * must. */
    pthread_t leaks_thread;
    bool leaks_apart = p->cfg.leak_threshold_ms > 0 &&
                       pthread_create(&leaks_thread, NULL, leaks_main, p) == 0;
    bool leaks_here = p->cfg.leak_threshold_ms > 0 && !leaks_apart;
    int64_t period = (int64_t)p->cfg.housekeeping_interval_ms * 1000000;
    if (leaks_here && leak_period_ns(p) < period)
        period = leak_period_ns(p);
    pthread_mutex_lock(&p->mu);
    while (p->hk_running) {
        pthread_mutex_unlock(&p->mu);
        /* the driver work only: the leak report calls no driver, and its
         * callbacks then run outside the gate */
        dbs__fork_gate_enter();
        check_target(p);
        dbs__pool_maintain(p);
        dbs__fork_gate_leave();
        if (leaks_here)
            dbs__leaks_report(p, false, "held past leak_threshold_ms");
        pthread_mutex_lock(&p->mu);
        hk_sleep(p, period);
    }
    pthread_mutex_unlock(&p->mu);
    if (leaks_apart)
        pthread_join(leaks_thread, NULL);
    dbs__pool_unref(p); /* the reference taken for this thread; may free p */
    return NULL;
}

int dbs__housekeeper_start(dbs_pool *p, dbs_error *err)
{
    const dbs_config *c = &p->cfg;
    /* A target that can change under the pool (a SQLite file deleted or
     * replaced) is watched whatever else is configured. A NONE pool keeps
     * no connection to look after: only its leaks and its file. */
    bool upkeep = p->mode != DBS_POOL_NONE &&
                  (c->min_idle || c->idle_timeout_ms || c->max_lifetime_ms ||
                   c->slow_session_ms || c->keepalive_ms);
    if (!upkeep && c->leak_threshold_ms == 0 && (!p->drv->target_check || p->target.memory))
        return DBS_OK;
    pthread_mutex_lock(&p->mu);
    p->hk_running = true;
    pthread_mutex_unlock(&p->mu);
    /* The thread keeps the pool allocated while it runs, so that a stop
     * that does not wait for it (below) never frees memory it uses. */
    atomic_fetch_add(&p->refs, 1);
    int rc = pthread_create(&p->hk_thread, NULL, housekeeper_main, p);
    if (rc != 0) {
        atomic_fetch_sub(&p->refs, 1);
        pthread_mutex_lock(&p->mu);
        p->hk_running = false;
        pthread_mutex_unlock(&p->mu);
        return dbs__err(err, DBS_ENOMEM, "cannot start the housekeeper thread: %s",
                        strerror(rc));
    }
    p->hk_started = true;
    return DBS_OK;
}

void dbs__housekeeper_stop(dbs_pool *p)
{
    if (!p->hk_started)
        return;
    pthread_mutex_lock(&p->mu);
    p->hk_running = false;
    pthread_cond_broadcast(&p->hk_cv); /* the housekeeper and its leak reporter */
    pthread_mutex_unlock(&p->mu);
    /* Between rounds it wakes and exits at once. In the middle of a round
     * it may be waiting on a silent server (a keep-alive ping, a min_idle
     * connect, a name lookup): p->is_closed, set before this call, is its
     * stop flag (dbs__thread_stop), and each such wait looks at it at least
     * every DBS__STOP_SLICE_MS, abandons its work and closes what it
     * opened. So the join is short, and no thread of the pool is left
     * inside a driver once dbs_pool_close returns. */
    pthread_join(p->hk_thread, NULL);
    p->hk_started = false;
}

