/* Readiness: waiting, within a caller's bound, until the pool holds the
 * connections it is configured to keep ready (min_idle), so that a service
 * says it is ready only once its first requests will not all connect at
 * once. */
#include "pool_int.h"

#include <stdio.h>

int dbs_pool_wait_ready(dbs_pool *p, int timeout_ms, dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    if (!p || p->magic != DBS__POOL_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_pool_wait_ready: not an open pool");
    if (timeout_ms < 0)
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_pool_wait_ready: timeout_ms is %d; give the milliseconds to "
                        "wait at most (0: only look)", timeout_ms);
    int rc = dbs__fork_check(p, "dbs_pool_wait_ready", err);
    if (rc != DBS_OK)
        return rc;
    const int64_t start = dbs__now_ns(), deadline = start + dbs__ms_ns(timeout_ms);
    /* NONE keeps nothing open: ready once a connect works. */
    bool keeps = p->mode != DBS_POOL_NONE;
    int want = p->cfg.min_idle > 0 ? p->cfg.min_idle : 1;
    if (want > p->rp.cfg.max_size)
        want = p->rp.cfg.max_size;
    bool pinged = false;
    dbs_error last; /* the last failure this call saw itself */
    last.code = DBS_OK;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        bool closed = p->closed;
        int open = dbs__rp_open_hint(&p->rp);
        int fcode = p->last_fail_ns >= start ? p->last_fail_code : DBS_OK;
        char why[256];
        snprintf(why, sizeof why, "%s", p->last_fail);
        pthread_mutex_unlock(&p->mu);
        if (closed)
            return dbs__err(err, DBS_ECLOSED, "dbs_pool_wait_ready: the pool is shut down");
        if (keeps ? open >= want : pinged) {
            if (err)
                dbs__err(err, DBS_OK, "ok");
            return DBS_OK;
        }
        if (fcode == DBS_OK && last.code != DBS_OK) {
            fcode = last.code;
            snprintf(why, sizeof why, "%.255s", last.message);
        }
        int64_t now = dbs__now_ns();
        /* a refusal for good does not end by waiting */
        if (fcode == DBS_ECONFIG || now >= deadline) {
            int code = fcode == DBS_ECONFIG ? DBS_ECONFIG
                       : fcode != DBS_OK    ? DBS_ECONNECT
                                            : DBS_ETIMEOUT;
            return dbs__err(err, code,
                            "dbs_pool_wait_ready: %d of %d connections open after %lld ms "
                            "(min_idle %d)%s%.300s%s",
                            keeps ? open : 0, want, (long long)((now - start) / 1000000),
                            p->cfg.min_idle,
                            fcode != DBS_OK ? "; the last connect failed: " : "",
                            fcode != DBS_OK ? why : "",
                            fcode == DBS_OK ? "; connects are still under way" : "");
        }
        /* Connect now rather than at the housekeeper's next round: the
         * same warm-up it runs (each connect bounded by
         * connect_timeout_ms), or, when min_idle is 0, one connection. */
        if (keeps && p->cfg.min_idle > 0) {
            dbs__pool_maintain(p);
        } else {
            dbs_error e;
            /* a readiness check, not the program's acquire: its refusals
             * (every 20 ms while the database is down) count nowhere but
             * in the connects' own counters, as the warm-up's above */
            dbs__acquire_uncounted = true;
            rc = dbs_pool_ping(p, &e);
            dbs__acquire_uncounted = false;
            if (rc == DBS_OK)
                pinged = true;
            else
                last = e;
        }
        pthread_mutex_lock(&p->mu);
        bool done = keeps && dbs__rp_open_hint(&p->rp) >= want;
        pthread_mutex_unlock(&p->mu);
        if (!done && !pinged) {
            int64_t left = (deadline - dbs__now_ns()) / 1000000;
            dbs__sleep_ms(left < 0 ? 0 : left < 20 ? left : 20);
        }
    }
}
