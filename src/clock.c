/* Monotonic time, a cheap per-thread PRNG for jitter, and each
 * thread's identity. */
#include "base.h"

#include <time.h>

int64_t dbs__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec dbs__timespec(int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000),
                          .tv_nsec = (long)(ns % 1000000000)};
    return ts;
}

/* splitmix64 seeded per thread from the clock and the state's address, so
 * threads started together still draw different jitter. */
uint64_t dbs__random(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                (uint64_t)(uintptr_t)&state;
        if (state == 0)
            state = 0x9e3779b97f4a7c15u;
    }
    uint64_t z = (state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

_Thread_local uint64_t dbs__tid;

uint64_t dbs__thread_id_new(void)
{
    /* 64 bits: a process never starts enough threads to wrap it */
    static atomic_uint_fast64_t next;
    dbs__tid = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) + 1;
    return dbs__tid;
}
