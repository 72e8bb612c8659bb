/*
 * PRIVATE to dbscope: the base every file may use, the generic resource
 * pool (respool.c) included: clocks and a short lock. Nothing here knows a
 * database, a driver or dbscope's public types.
 */
#ifndef DBS_BASE_H
#define DBS_BASE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* ---- clock.c ---- */

int64_t dbs__now_ns(void);       /* CLOCK_MONOTONIC */
uint64_t dbs__random(void);      /* per-thread PRNG, not for secrets */
void dbs__sleep_ms(int64_t ms);  /* sleeps through signals */
/* Absolute CLOCK_MONOTONIC timespec for a deadline in ns. */
struct timespec dbs__timespec(int64_t ns);
/* Absolute CLOCK_REALTIME timespec ms from now, for the calls that take
 * only that clock (pthread_timedjoin_np). */

/* ---- clock.c: the calling thread's identity ----
 * A number no other thread of the process ever has, not even one started
 * after this one exited: a pthread_t is reused (glibc hands a new thread
 * the descriptor, and so the pthread_t, of one that exited), so it cannot
 * tell a handle's owner from a thread started after the owner exited.
 * Never 0. A child of fork() keeps the forking thread's. */
extern _Thread_local uint64_t dbs__tid;
uint64_t dbs__thread_id_new(void);

static inline uint64_t dbs__thread_id(void)
{
    uint64_t t = dbs__tid;
    return t ? t : dbs__thread_id_new();
}

/* ---- lock.c: a short lock ----
 * A shard's lock is nearly always taken by the thread the shard serves, for a
 * few dozen instructions: a test-and-set lock released by a plain store
 * costs one atomic operation where a mutex costs two, and no call. When it
 * is contended (threads sharing a shard, the housekeeper, a snapshot) the
 * waiter spins briefly, then yields the CPU so that a holder that was
 * preempted gets to run. */
typedef struct dbs__lock {
    atomic_bool held;
} dbs__lock;

void dbs__lock_wait(dbs__lock *l);

static inline void dbs__lock_take(dbs__lock *l)
{
    if (atomic_exchange_explicit(&l->held, true, memory_order_acquire))
        dbs__lock_wait(l);
}

static inline void dbs__lock_give(dbs__lock *l)
{
    atomic_store_explicit(&l->held, false, memory_order_release);
}

#endif /* DBS_BASE_H */
