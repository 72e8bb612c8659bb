/* The circuit breaker: after circuit_threshold connects in a row fail, the
 * pool fails fast (DBS_EUNAVAILABLE) instead of making every caller wait
 * for a connect that will fail, and lets one probe through at a time, 50 ms
 * after the last failure at first, backing off to circuit_cooldown_ms. */
#include "pool_int.h"

int dbs__circuit_note(dbs_pool *p, bool ok, int64_t now)
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
        /* Clamped before doubling: a cool-down near INT_MAX must not
         * overflow. */
        if (p->circuit_backoff_ms > p->cfg.circuit_cooldown_ms / 2)
            p->circuit_backoff_ms = p->cfg.circuit_cooldown_ms;
        else
            p->circuit_backoff_ms *= 2;
        p->circuit_open_until_ns = now + dbs__ms_ns(p->circuit_backoff_ms);
        return -1;
    }
    if (p->consecutive_failures >= p->cfg.circuit_threshold) {
        p->circuit_open = true;
        p->circuit_backoff_ms = p->cfg.circuit_cooldown_ms < 50 ? p->cfg.circuit_cooldown_ms : 50;
        p->circuit_open_until_ns = now + dbs__ms_ns(p->circuit_backoff_ms);
        return DBS_EVENT_CIRCUIT_OPEN;
    }
    return -1;
}

int dbs__circuit_admit(dbs_pool *p, bool count, dbs_error *err)
{
    if (!p->circuit_open)
        return DBS_OK;
    int64_t now = dbs__now_ns();
    if (now >= p->circuit_open_until_ns && !p->probing) {
        p->probing = true;
        return DBS_OK;
    }
    p->n_pending--;
    dbs__pass_slot(p);
    if (count)
        p->counters.unavailable++;
    int64_t left = (p->circuit_open_until_ns - now) / 1000000;
    return dbs__err(err, DBS_EUNAVAILABLE,
                    "database unavailable: %d connects in a row failed; failing fast, "
                    "next attempt in %lld ms", p->consecutive_failures,
                    (long long)(left > 0 ? left : 0));
}
