/* Lock-free log-bucketed histograms of durations in microseconds.
 *
 * Eight buckets an octave: values below 8 µs have a bucket each; above,
 * a value v with 2^o <= v < 2^(o+1) falls in one of eight equal slices of
 * that octave. A percentile is reported as its bucket's upper bound: never
 * below the true value, at most 1/8 of an octave above it.
 *
 * Writers are serialised by the caller (the pool records inside the lock
 * hold that checkout and checkin take anyway), so recording is a few plain
 * loads and stores: no atomic read-modify-write, no extra lock. The cells
 * are atomics so that readers need no lock at all: they sum the buckets
 * they see, so a snapshot taken under load may be a few samples behind the
 * counters, never torn in a way that breaks monotonicity. */
#include "internal.h"

static int bucket_of(uint64_t us)
{
    if (us < DBS__HIST_SUB)
        return (int)us;
    int o = 63 - __builtin_clzll(us); /* >= 3 */
    int sub = (int)((us >> (o - 3)) & 7u);
    int idx = (o - 2) * DBS__HIST_SUB + sub;
    return idx < DBS__HIST_BUCKETS ? idx : DBS__HIST_BUCKETS - 1;
}

uint64_t dbs__hist_upper(int idx)
{
    if (idx < DBS__HIST_SUB)
        return (uint64_t)idx;
    int o = idx / DBS__HIST_SUB + 2;
    uint64_t sub = (uint64_t)(idx % DBS__HIST_SUB);
    return ((DBS__HIST_SUB + sub + 1) << (o - 3)) - 1;
}

void dbs__hist_add(dbs__hist *h, int64_t us)
{
    uint64_t v = us > 0 ? (uint64_t)us : 0;
    _Atomic uint64_t *cell = &h->b[bucket_of(v)];
    atomic_store_explicit(cell, atomic_load_explicit(cell, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_us, atomic_load_explicit(&h->sum_us, memory_order_relaxed) + v,
                          memory_order_relaxed);
    if (v > atomic_load_explicit(&h->max_us, memory_order_relaxed))
        atomic_store_explicit(&h->max_us, v, memory_order_relaxed);
}

void dbs__hist_read(dbs__hist *h, dbs__hist_snap *out)
{
    out->count = 0;
    for (int i = 0; i < DBS__HIST_BUCKETS; i++) {
        out->b[i] = atomic_load_explicit(&h->b[i], memory_order_relaxed);
        out->count += out->b[i];
    }
    out->sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    out->max_us = atomic_load_explicit(&h->max_us, memory_order_relaxed);
}

void dbs__hist_merge(dbs__hist *h, dbs__hist_snap *acc)
{
    for (int i = 0; i < DBS__HIST_BUCKETS; i++) {
        uint64_t v = atomic_load_explicit(&h->b[i], memory_order_relaxed);
        acc->b[i] += v;
        acc->count += v;
    }
    acc->sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    if (max > acc->max_us)
        acc->max_us = max;
}

int64_t dbs__hist_percentile(const dbs__hist_snap *s, double q)
{
    if (s->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)s->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < DBS__HIST_BUCKETS; i++) {
        seen += s->b[i];
        if (seen >= rank) {
            uint64_t up = dbs__hist_upper(i);
            return (int64_t)(up < s->max_us ? up : s->max_us);
        }
    }
    return (int64_t)s->max_us;
}

void dbs__hist_add_shared(dbs__hist *h, int64_t us)
{
    uint64_t v = us > 0 ? (uint64_t)us : 0;
    atomic_fetch_add_explicit(&h->b[bucket_of(v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, v, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    while (v > max &&
           !atomic_compare_exchange_weak_explicit(&h->max_us, &max, v, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}
