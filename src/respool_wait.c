/* The blocking adapter of the resource pool: a request whose wake callback
 * posts the waiting thread's own semaphore (after the serving thread has
 * released the pool's lock). The serving thread does all
 * the work under the pool's lock, so the woken thread returns at once,
 * already served. */
#define _GNU_SOURCE /* sem_clockwait: a deadline on CLOCK_MONOTONIC */
#include "respool.h"

#include <errno.h>
#include <semaphore.h>

/* ThreadSanitizer does not see sem_clockwait synchronise with sem_post (its
 * runtime does not intercept it), so the hand-off tells it. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define POST_SEM(sem) (__tsan_release(sem), sem_post(sem))
#define SEM_TAKEN(sem) __tsan_acquire(sem)
#else
#define POST_SEM(sem) sem_post(sem)
#define SEM_TAKEN(sem) ((void)(sem))
#endif

/* Each thread waits on one semaphore of its own, made on its first wait.
 * A thread waits for one pool at a time, and every post is consumed by the
 * wait it was meant for, so it is always at zero between waits. */
static sem_t *thread_sem(void)
{
    static _Thread_local sem_t sem;
    static _Thread_local bool ready;
    if (!ready) {
        if (sem_init(&sem, 0, 0) != 0)
            return NULL;
        ready = true;
    }
    return &sem;
}

/* Waits for a post until deadline (CLOCK_MONOTONIC); false on timeout. */
static bool wait_posted(sem_t *sem, int64_t deadline)
{
    struct timespec ts = dbs__timespec(deadline);
    for (;;) {
        if (sem_clockwait(sem, CLOCK_MONOTONIC, &ts) == 0) {
            SEM_TAKEN(sem);
            return true;
        }
        if (errno != EINTR)
            return false;
    }
}

/* The request's wake: on the serving thread, after the pool's lock is
 * released, while the waiter's frame is alive (the waiter returns only
 * once it has taken this post). */
static void post_wake(dbs__rp_req *req)
{
    POST_SEM((sem_t *)req->arg);
}

void dbs__rp_waiter_init(dbs__rp_waiter *wt)
{
    pthread_mutex_init(&wt->mu, NULL);
    wt->rp = NULL;
    wt->req = NULL;
    wt->cancelled = false;
}

void dbs__rp_waiter_destroy(dbs__rp_waiter *wt)
{
    pthread_mutex_destroy(&wt->mu);
}

void dbs__rp_waiter_cancel(dbs__rp_waiter *wt)
{
    pthread_mutex_lock(&wt->mu);
    wt->cancelled = true;
    /* The wait leaves wt (under mu) before it returns, so its request is
     * alive here; ended, it is posted exactly once, as if served. */
    if (wt->req)
        dbs__rp_end(wt->rp, wt->req);
    pthread_mutex_unlock(&wt->mu);
}

bool dbs__rp_waiter_cancelled(dbs__rp_waiter *wt)
{
    pthread_mutex_lock(&wt->mu);
    bool c = wt->cancelled;
    pthread_mutex_unlock(&wt->mu);
    return c;
}

/* The wait itself, once w is reachable through its waiter, if any. */
static int wait_for(dbs__respool *rp, dbs__rp_req *w, sem_t *sem, uint64_t prefer_id,
                    int64_t deadline, dbs__rp_item **item, dbs__rp_stats *seen,
                    dbs__rp_waiter *wt)
{
    int st = dbs__rp_acquire(rp, w, prefer_id, item);
    if (st != DBS__RP_PENDING)
        return st;
    dbs__cancel_defer(); /* the semaphore's waits are cancellation points */
    /* A cancel between the waiter's registration and the queueing found
     * nothing queued to end: end it now (posted as the cancel would). */
    if (wt && dbs__rp_waiter_cancelled(wt))
        dbs__rp_end(rp, w);
    /* Until its barge limit (or its deadline, if that comes first), then
     * order becomes strict and whatever sits idle or parked goes to the
     * queue, oldest first; then until its deadline. */
    bool limit_passed = rp->cfg.barge_ns == 0;
    for (;;) {
        int64_t until = deadline;
        if (!limit_passed && w->since + rp->cfg.barge_ns < deadline)
            until = w->since + rp->cfg.barge_ns;
        if (wait_posted(sem, until))
            break;
        pthread_mutex_lock(&rp->mu);
        if (!w->queued) {
            /* Served (or closed, or ended) just as the wait timed out:
             * whoever did it posts, if it has not yet, once it has
             * released the lock; take that post now, or it would end this
             * thread's next wait, on any pool, at once. */
            pthread_mutex_unlock(&rp->mu);
            while (sem_wait(sem) != 0) {
            }
            SEM_TAKEN(sem);
            break;
        }
        pthread_mutex_unlock(&rp->mu);
        if (limit_passed) {
            if (dbs__rp_cancel(rp, w, false)) {
                dbs__rp_stats_get(rp, seen);
                return DBS__RP_EXPIRED;
            }
            /* served between the two locks: its post is there or coming */
            while (sem_wait(sem) != 0) {
            }
            SEM_TAKEN(sem);
            break;
        }
        limit_passed = true;
        dbs__rp_serve_in_order(rp);
    }
    if (w->ended)
        return DBS__RP_CANCELED;
    if (w->item) {
        *item = w->item;
        return DBS__RP_READY;
    }
    if (!w->may_create)
        return DBS__RP_CLOSED;
    /* A slot was reserved for this request; a close since then means no
     * item is made, for nobody to use. */
    if (dbs__rp_is_closed(rp)) {
        dbs__rp_create_failed(rp);
        return DBS__RP_CLOSED;
    }
    return DBS__RP_CREATE;
}

int dbs__rp_wait(dbs__respool *rp, uint64_t prefer_id, int64_t deadline, dbs__rp_item **item,
                 dbs__rp_stats *seen, dbs__rp_waiter *wt)
{
    dbs__rp_req w = {.wake = post_wake};
    sem_t *sem = thread_sem();
    if (!sem)
        return -1;
    w.arg = sem;
    if (wt) {
        pthread_mutex_lock(&wt->mu);
        bool cancelled = wt->cancelled;
        if (!cancelled) {
            wt->rp = rp;
            wt->req = &w;
        }
        pthread_mutex_unlock(&wt->mu);
        if (cancelled)
            return DBS__RP_CANCELED;
    }
    int st = wait_for(rp, &w, sem, prefer_id, deadline, item, seen, wt);
    if (wt) {
        pthread_mutex_lock(&wt->mu);
        wt->rp = NULL;
        wt->req = NULL;
        pthread_mutex_unlock(&wt->mu);
    }
    return st;
}
