/* A pooled connection's life: opening it through the driver, validating it,
 * closing it, and the one place each of its counts is kept. */
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
    c->impl = impl;
    c->created_ns = dbs__now_ns();
    if (p->cfg.max_lifetime_ms > 0) {
        /* Up to 2.5% less, at random, so connections opened together (at
         * start, after a restart) do not all retire in the same instant. */
        int64_t life = dbs__ms_ns(p->cfg.max_lifetime_ms);
        int64_t jitter = (int64_t)(dbs__random() % (uint64_t)(life / 40 + 1));
        c->expires_ns = c->created_ns + life - jitter;
    }
    return c;
}

void dbs__conn_close(dbs_pool *p, dbs__conn *c)
{
    p->drv->close(c->impl);
    free(c);
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
        int rc = p->drv->peek(c->impl, err);
        if (rc < 0)
            return rc;
        ping = rc == DBS__PEEK_UNSURE;
    }
    return ping ? p->drv->ping(c->impl, err) : DBS_OK;
}

void dbs__conn_counted(dbs_pool *p, dbs__conn *c)
{
    c->id = ++p->next_conn_id;
    dbs__set_open(p, p->n_open + 1);
    p->counters.created++;
}

void dbs__conn_gone(dbs_pool *p, enum dbs__gone why, int64_t now)
{
    dbs__set_open(p, p->n_open - 1);
    p->counters.closed++;
    switch (why) {
    case DBS__GONE_LIFETIME: p->counters.closed_lifetime++; break;
    case DBS__GONE_IDLE: p->counters.closed_idle++; break;
    case DBS__GONE_OVERFLOW: p->counters.closed_overflow++; break;
    case DBS__GONE_POOL: p->counters.closed_pool++; break;
    case DBS__GONE_NONE_MODE: break;
    case DBS__GONE_BROKEN:
        p->counters.closed_broken++;
        p->counters.invalidated++;
        /* Others idle as long may be broken too (a server restart). */
        atomic_store_explicit(&p->validate_before_ns, now, memory_order_relaxed);
        break;
    }
}

int dbs__connect_done(dbs_pool *p, dbs__conn *c, int code, int64_t now)
{
    p->n_pending--;
    int ev = -1;
    if (!c && code == DBS_ECONFIG)
        p->probing = false; /* the breaker is for outages, not for this */
    else
        ev = dbs__circuit_note(p, c != NULL, now);
    if (!c) {
        p->counters.connect_failures++;
        dbs__pass_slot(p);
    } else if (p->closed) {
        dbs__pass_slot(p); /* the caller closes c: nobody gets it */
    } else {
        dbs__conn_counted(p, c);
    }
    return ev;
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
