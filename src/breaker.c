/* The circuit breaker's state machine (see breaker.h). */
#include "breaker.h"

void dbs__breaker_init(dbs__breaker *b, int threshold, int cooldown_ms)
{
    *b = (dbs__breaker){.threshold = threshold, .cooldown_ms = cooldown_ms};
}

bool dbs__breaker_admit(dbs__breaker *b, int64_t now)
{
    if (!b->open)
        return true;
    if (now >= b->open_until_ns && !b->probing) {
        b->probing = true;
        return true;
    }
    return false;
}

void dbs__breaker_skip(dbs__breaker *b)
{
    b->probing = false;
}

enum dbs__breaker_change dbs__breaker_note(dbs__breaker *b, bool ok, int64_t now)
{
    b->probing = false;
    if (ok) {
        b->consecutive_failures = 0;
        if (b->open) {
            b->open = false;
            return DBS__BREAKER_CLOSED;
        }
        return DBS__BREAKER_SAME;
    }
    b->consecutive_failures++;
    if (b->threshold <= 0)
        return DBS__BREAKER_SAME;
    /* Probes start 50 ms apart and back off to the cool-down: the end of
     * an outage is noticed within a cool-down, and a long outage costs the
     * database one refused connect a cool-down. */
    if (b->open) {
        /* Clamped before doubling: a cool-down near INT_MAX must not
         * overflow. */
        if (b->backoff_ms > b->cooldown_ms / 2)
            b->backoff_ms = b->cooldown_ms;
        else
            b->backoff_ms *= 2;
        b->open_until_ns = now + (int64_t)b->backoff_ms * 1000000;
        return DBS__BREAKER_SAME;
    }
    if (b->consecutive_failures >= b->threshold) {
        b->open = true;
        b->backoff_ms = b->cooldown_ms < 50 ? b->cooldown_ms : 50;
        b->open_until_ns = now + (int64_t)b->backoff_ms * 1000000;
        return DBS__BREAKER_OPENED;
    }
    return DBS__BREAKER_SAME;
}
