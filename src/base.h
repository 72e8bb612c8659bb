/*
 * PRIVATE to dbscope: the base every file may use, the generic resource
 * pool (respool.c) included: clocks and a short lock. Nothing here knows a
 * database, a driver or dbscope's public types.
 */
#ifndef DBS_BASE_H
#define DBS_BASE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* ---- clock.c ---- */

int64_t dbs__now_ns(void);       /* CLOCK_MONOTONIC */
uint64_t dbs__random(void);      /* per-thread PRNG, not for secrets */
/* cancel.c: sleeps through signals; never a cancellation point */
void dbs__sleep_ms(int64_t ms);
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

/* ---- cancel.c: no dbscope call is a cancellation point ----
 * A public call that can reach a cancellation point (pthread_cancel) marks
 * itself inside the library (DBS__IN_LIB, internal.h); cancellation is
 * disabled only when such a point is about to be reached
 * (dbs__cancel_defer), once per outermost call, and the outermost call's
 * exit gives the program back the state it had then. So a call that
 * reaches none (a checkout of a parked connection, the checkin of a
 * session that sent nothing, a row already read) costs no change of state: in glibc each one
 * that changes it is a locked compare-and-swap. internal.h lists the
 * points that defer and why they are all of them.
 *
 * dbs__cx_state: DBS__CX_OUT on the program's side (and on the library's
 * own threads, which nobody cancels: the points there defer nothing);
 * DBS__CX_IN inside a call, the program's state untouched; DBS__CX_OFF
 * inside a call, cancellation disabled by dbscope, dbs__cx_saved holding
 * the program's state. Initial-exec: the shared library reads them
 * without a __tls_get_addr call. */
enum { DBS__CX_OUT = 0, DBS__CX_IN = 1, DBS__CX_OFF = 2 };
extern _Thread_local unsigned char dbs__cx_state __attribute__((tls_model("initial-exec")));
extern _Thread_local int dbs__cx_saved __attribute__((tls_model("initial-exec")));

void dbs__cancel_defer_now(void);

/* Before anything that may be a cancellation point. The change itself is
 * out of line, so that the check alone costs the callers no frame. */
static inline void dbs__cancel_defer(void)
{
    if (dbs__cx_state == DBS__CX_IN)
        dbs__cancel_defer_now();
}

static inline void dbs__cancel_give_back(void)
{
    int unused; /* POSIX leaves a NULL oldstate unspecified */
    (void)pthread_setcancelstate(dbs__cx_saved, &unused);
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
