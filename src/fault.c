/* Fault injection for tests, off the production path: a test arms it before
 * opening a pool (dbs__fault.armed), and that pool then goes through a
 * faulting copy of its driver's method table, whose connect and ping fail or
 * stall on demand, whose reset fails and close stalls on demand, and which
 * calls the real driver otherwise. Release code only pays one load at pool open. */
#include "internal.h"

#include <pthread.h>

dbs__faults dbs__fault;

/* One faulting table per real driver; the real one is found by slot. */
enum { SLOTS = 4 };
static struct {
    const dbs__driver *real;
    dbs__driver faulty;
} slots[SLOTS];
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;

static bool take(atomic_int *n)
{
    return atomic_load_explicit(n, memory_order_relaxed) > 0 && atomic_fetch_sub(n, 1) > 0;
}

/* One more connection may exist on the server from now on. */
static void live_up(void)
{
    int n = atomic_fetch_add(&dbs__fault.live, 1) + 1;
    for (int peak = atomic_load(&dbs__fault.live_peak);
         n > peak && !atomic_compare_exchange_weak(&dbs__fault.live_peak, &peak, n);) {
    }
}

static void *connect_real(int i, const dbs__target *t, dbs_error *err)
{
    live_up();
    void *c = slots[i].real->connect(t, err);
    if (!c)
        atomic_fetch_sub(&dbs__fault.live, 1);
    return c;
}

static void *connect_via(int i, const dbs__target *t, dbs_error *err)
{
    atomic_fetch_add_explicit(&dbs__fault.connects, 1, memory_order_relaxed);
    int delay = atomic_load_explicit(&dbs__fault.connect_delay_ms, memory_order_relaxed);
    /* A stalled connect, abandoned at shutdown as a real one is
     * (dbs__thread_stop) */
    for (int64_t until = dbs__now_ns() + (int64_t)delay * 1000000; delay > 0;) {
        if (dbs__stopping()) {
            dbs__err(err, DBS_ECLOSED, "connect abandoned: the pool shut down");
            return NULL;
        }
        int64_t left = (until - dbs__now_ns()) / 1000000;
        if (left <= 0)
            break;
        dbs__sleep_ms(left < DBS__STOP_SLICE_MS ? left : DBS__STOP_SLICE_MS);
    }
    while (atomic_load_explicit(&dbs__fault.connect_gate, memory_order_acquire)) {
        if (dbs__stopping()) {
            dbs__err(err, DBS_ECLOSED, "connect abandoned: the pool shut down");
            return NULL;
        }
        dbs__sleep_ms(10);
    }
    if (take(&dbs__fault.fail_connects)) {
        dbs__err(err, DBS_ECONNECT, "cannot connect: injected fault");
        return NULL;
    }
    return connect_real(i, t, err);
}

static int ping_via(int i, void *c, dbs_error *err)
{
    if (take(&dbs__fault.fail_pings))
        return dbs__err(err, DBS_ECONNECT, "ping failed: injected fault");
    return slots[i].real->ping(c, err);
}

static int reset_via(int i, void *c, enum dbs_reset_mode mode, dbs_error *err)
{
    if (take(&dbs__fault.fail_resets))
        return dbs__err(err, DBS_ESQL, "reset failed: injected fault");
    return slots[i].real->reset(c, mode, err);
}

static void close_via(int i, void *c)
{
    int delay = atomic_load_explicit(&dbs__fault.close_delay_ms, memory_order_relaxed);
    if (delay > 0)
        dbs__sleep_ms(delay); /* a goodbye to a slow server */
    slots[i].real->close(c);
    if (c)
        atomic_fetch_sub(&dbs__fault.live, 1);
}

#define SLOT_FNS(i)                                                            \
    static void *connect_##i(const dbs__target *t, dbs_error *err)             \
    {                                                                          \
        return connect_via(i, t, err);                                         \
    }                                                                          \
    static int ping_##i(void *c, dbs_error *err)                               \
    {                                                                          \
        return ping_via(i, c, err);                                            \
    }                                                                          \
    static void close_##i(void *c)                                             \
    {                                                                          \
        close_via(i, c);                                                       \
    }                                                                          \
    static int reset_##i(void *c, enum dbs_reset_mode m, dbs_error *err)       \
    {                                                                          \
        return reset_via(i, c, m, err);                                        \
    }
SLOT_FNS(0)
SLOT_FNS(1)
SLOT_FNS(2)
SLOT_FNS(3)

static void *(*const connects[SLOTS])(const dbs__target *, dbs_error *) = {
    connect_0, connect_1, connect_2, connect_3};
static int (*const pings[SLOTS])(void *, dbs_error *) = {ping_0, ping_1, ping_2, ping_3};
static void (*const closes[SLOTS])(void *) = {close_0, close_1, close_2, close_3};
static int (*const resets[SLOTS])(void *, enum dbs_reset_mode, dbs_error *) = {
    reset_0, reset_1, reset_2, reset_3};

const dbs__driver *dbs__fault_driver(const dbs__driver *real)
{
    if (!atomic_load_explicit(&dbs__fault.armed, memory_order_relaxed))
        return real;
    const dbs__driver *out = real;
    pthread_mutex_lock(&slots_mu);
    for (int i = 0; i < SLOTS; i++) {
        if (slots[i].real == real) {
            out = &slots[i].faulty;
            break;
        }
        if (!slots[i].real) {
            slots[i].real = real;
            slots[i].faulty = *real; /* every other method: the real one */
            slots[i].faulty.connect = connects[i];
            slots[i].faulty.ping = pings[i];
            slots[i].faulty.close = closes[i];
            slots[i].faulty.reset = resets[i];
            out = &slots[i].faulty;
            break;
        }
    }
    pthread_mutex_unlock(&slots_mu);
    return out;
}
