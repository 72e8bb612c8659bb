/*
 * PRIVATE to dbscope: the circuit breaker, a pure state machine. After
 * threshold connects in a row fail it opens: connects are refused (the
 * caller fails fast) but for one probe at a time, 50 ms after the last
 * failure at first, backing off to cooldown_ms; a success closes it. It
 * makes no call and takes no lock: its owner (the connection layer, conn.c)
 * guards it.
 */
#ifndef DBS_BREAKER_H
#define DBS_BREAKER_H

#include "base.h"

typedef struct dbs__breaker {
    int threshold;            /* 0: never opens */
    int cooldown_ms;
    int consecutive_failures;
    int64_t open_until_ns;    /* no probe before this */
    int backoff_ms;           /* current wait between probes */
    bool open;
    bool probing;             /* one connect let through to probe */
} dbs__breaker;

/* What a note changed, for the owner to announce. */
enum dbs__breaker_change { DBS__BREAKER_SAME, DBS__BREAKER_OPENED, DBS__BREAKER_CLOSED };

void dbs__breaker_init(dbs__breaker *b, int threshold, int cooldown_ms);
/* Whether a connect may go ahead now: always while closed; while open, one
 * probe at a time once the back-off has passed (the caller's connect is
 * then the probe, and must be noted). */
bool dbs__breaker_admit(dbs__breaker *b, int64_t now);
/* A connect's outcome. */
enum dbs__breaker_change dbs__breaker_note(dbs__breaker *b, bool ok, int64_t now);
/* A connect that failed for a reason that is not an outage (a wrong
 * password): not counted, but a probe it was is over. */
void dbs__breaker_skip(dbs__breaker *b);

#endif /* DBS_BREAKER_H */
