/* The connection layer: a pooled connection's life through the driver
 * (open, check, validate, close), the circuit breaker that guards connects,
 * and the one place each of its counts is kept. It gives connections to
 * the resource pool and takes back none: the pool says when one goes. */
#include "pool_int.h"

#include <stdio.h>
#include <stdlib.h>

dbs__conn *dbs__conn_open(dbs_pool *p, dbs_error *err)
{
    int64_t t0 = dbs__now_ns();
    void *impl = p->drv->connect(&p->target, err);
    if (impl && p->cfg.metrics)
        dbs__hist_add_shared(&p->create_hist, (dbs__now_ns() - t0) / 1000);
    if (!impl) {
        /* A driver's parser may split a malformed URL elsewhere than
         * dbs__redact does and quote the rest: scrub every reading. */
        if (err)
            dbs__scrub_url_secrets(p->url, err->message, sizeof err->message);
        return NULL;
    }
    dbs__conn *c = calloc(1, sizeof *c);
    if (!c) {
        p->drv->close(impl);
        dbs__err(err, DBS_ENOMEM, "out of memory allocating a connection");
        return NULL;
    }
    c->item.data = c;
    c->impl = impl;
    c->created_ns = dbs__now_ns();
    if (p->cfg.max_lifetime_ms > 0) {
        /* Up to 2.5% less, at random, so connections opened together (at
         * start, after a restart) do not all retire in the same instant. */
        int64_t life = dbs__ms_ns(p->cfg.max_lifetime_ms);
        int64_t jitter = (int64_t)(dbs__random() % (uint64_t)(life / 40 + 1));
        c->item.expires_ns = c->created_ns + life - jitter;
    }
    return c;
}

void dbs__conn_close(dbs_pool *p, dbs__conn *c)
{
    p->drv->close(c->impl);
    free(c);
}

dbs_rows *dbs__conn_query(dbs_pool *p, dbs__conn *c, const char *sql, dbs_error *err)
{
    return p->drv->query(c->impl, sql, NULL, 0, err);
}

int dbs__conn_validate(dbs_pool *p, dbs__conn *c, dbs_error *err)
{
    if (p->drv->is_broken(c->impl))
        return dbs__err(err, DBS_ECONNECT, "connection is broken");
    return p->drv->ping(c->impl, err);
}

int dbs__conn_check(dbs_pool *p, dbs__conn *c, bool ping, dbs_error *err)
{
    if (!p->cfg.pre_ping)
        return DBS_OK;
    if (p->drv->is_broken(c->impl))
        return dbs__err(err, DBS_ECONNECT, "connection is broken");
    if (!ping && p->drv->peek) {
        int rc = p->drv->peek(c->impl, 1, err);
        if (rc < 0)
            return rc;
        ping = rc == DBS__PEEK_UNSURE;
    }
    return ping ? p->drv->ping(c->impl, err) : DBS_OK;
}

void dbs__conn_suspect(dbs_pool *p, int64_t now)
{
    atomic_store_explicit(&p->validate_before_ns, now, memory_order_relaxed);
}

void dbs__conn_gone(dbs_pool *p, enum dbs__gone why, int n, int64_t now)
{
    if (n <= 0)
        return;
    uint64_t k = (uint64_t)n;
    pthread_mutex_lock(&p->mu);
    p->counters.closed += k;
    switch (why) {
    case DBS__GONE_LIFETIME: p->counters.closed_lifetime += k; break;
    case DBS__GONE_IDLE: p->counters.closed_idle += k; break;
    case DBS__GONE_OVERFLOW: p->counters.closed_overflow += k; break;
    case DBS__GONE_POOL: p->counters.closed_pool += k; break;
    case DBS__GONE_DIRTY: p->counters.closed_dirty += k; break;
    case DBS__GONE_NONE_MODE: break;
    case DBS__GONE_BROKEN:
        p->counters.closed_broken += k;
        p->counters.invalidated += k;
        break;
    }
    dbs__rp_left(&p->rp, n); /* under p->mu, as dbs__pool_snapshot reads both */
    pthread_mutex_unlock(&p->mu);
    /* Their slots go on only now that they are closed; not under p->mu,
     * as the requests served wake on this thread. */
    dbs__rp_pass_free(&p->rp);
    /* Others idle as long may be broken too (a server restart). */
    if (why == DBS__GONE_BROKEN)
        dbs__conn_suspect(p, now);
}

int dbs__conn_admit(dbs_pool *p, bool count, dbs_error *err)
{
    int64_t now = dbs__now_ns();
    pthread_mutex_lock(&p->mu);
    if (dbs__breaker_admit(&p->breaker, now)) {
        pthread_mutex_unlock(&p->mu);
        return DBS_OK;
    }
    if (count)
        p->counters.unavailable++;
    int failures = p->breaker.consecutive_failures;
    int64_t left = (p->breaker.open_until_ns - now) / 1000000;
    pthread_mutex_unlock(&p->mu);
    dbs__rp_create_failed(&p->rp);
    return dbs__err(err, DBS_EUNAVAILABLE,
                    "database unavailable: %d connects in a row failed; failing fast, "
                    "next attempt in %lld ms", failures, (long long)(left > 0 ? left : 0));
}

int dbs__conn_settle(dbs_pool *p, dbs__conn *c, int code, int64_t now, int *ev)
{
    /* The breaker hears first: a waiter handed the slot of a failed connect
     * asks it before connecting in turn. */
    enum dbs__breaker_change change = DBS__BREAKER_SAME;
    pthread_mutex_lock(&p->mu);
    if (!c && code == DBS_ECONFIG)
        dbs__breaker_skip(&p->breaker); /* the breaker is for outages, not for this */
    else
        change = dbs__breaker_note(&p->breaker, c != NULL, now);
    /* Counted and made open in one hold of p->mu, which dbs__pool_snapshot
     * takes too: no snapshot sees one without the other. */
    int rc = code < 0 ? code : DBS_ECONNECT;
    if (!c) {
        p->counters.connect_failures++;
    } else if (dbs__rp_created(&p->rp, &c->item, now, false) == DBS__RP_READY) {
        p->counters.created++;
        rc = DBS_OK;
    } else {
        rc = DBS_ECLOSED; /* shut down meanwhile: never counted */
    }
    pthread_mutex_unlock(&p->mu);
    *ev = change == DBS__BREAKER_OPENED   ? DBS_EVENT_CIRCUIT_OPEN
          : change == DBS__BREAKER_CLOSED ? DBS_EVENT_CIRCUIT_CLOSE
                                          : -1;
    if (!c)
        dbs__rp_create_failed(&p->rp);
    return rc;
}

void dbs__connect_announce(dbs_pool *p, const dbs_session *s, const dbs__conn *c, int ev,
                           const dbs_error *err)
{
    int code = c ? 0 : err ? err->code : DBS_ECONNECT;
    const char *why = c || !err ? NULL : err->message;
    if (!c) { /* for dbs_pool_wait_ready */
        pthread_mutex_lock(&p->mu);
        p->last_fail_code = code;
        p->last_fail_ns = dbs__now_ns();
        snprintf(p->last_fail, sizeof p->last_fail, "%.255s", why ? why : dbs_strerror(code));
        pthread_mutex_unlock(&p->mu);
    }
    dbs__emit(p, c ? DBS_EVENT_CONNECT : DBS_EVENT_CONNECT_FAILED, s, c, code, why);
    if (ev >= 0)
        dbs__emit(p, (enum dbs_event_kind)ev, s, c, code, why);
}
