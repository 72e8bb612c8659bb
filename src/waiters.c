/* The waiters: a FIFO queue of threads waiting for a connection, and the
 * direct hand-off that serves the oldest first (see pool.c's invariants). */
#define _GNU_SOURCE /* sem_clockwait: a deadline on CLOCK_MONOTONIC */
#include "pool_int.h"

#include <errno.h>

/* The queue's head changed: its age is mirrored for the lock-free checks,
 * and order is strict while the head has waited barge_ns (always, in
 * strict mode). [mu] */
static void head_changed(dbs_pool *p)
{
    dbs__waiter *h = p->wait_head;
    if (!h) {
        atomic_store_explicit(&p->in_order, false, memory_order_relaxed);
        atomic_store_explicit(&p->oldest_since_ns, INT64_MAX, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(&p->oldest_since_ns, h->since, memory_order_seq_cst);
    if (atomic_load_explicit(&p->in_order, memory_order_relaxed) &&
        dbs__now_ns() - h->since < p->barge_ns)
        atomic_store_explicit(&p->in_order, false, memory_order_relaxed);
}

void dbs__wait_enqueue(dbs_pool *p, dbs__waiter *w)
{
    w->next = NULL;
    w->queued = true;
    if (p->wait_tail) {
        p->wait_tail->next = w;
    } else {
        p->wait_head = w;
        atomic_store_explicit(&p->oldest_since_ns, w->since, memory_order_seq_cst);
    }
    p->wait_tail = w;
    dbs__set_waiting(p, p->n_waiting + 1);
}

void dbs__serve_in_order(dbs_pool *p)
{
    atomic_store_explicit(&p->in_order, true, memory_order_seq_cst);
    while (p->wait_head) {
        dbs__conn *c = NULL;
        if (p->idle_head && p->mode != DBS_POOL_NONE) {
            c = p->idle_head;
            dbs__idle_remove(p, c);
            p->n_in_use++;
        } else if (!(c = dbs__take_parked(p, memory_order_seq_cst))) {
            return;
        }
        dbs__hand_off(p, c);
    }
}

dbs__waiter *dbs__wait_pop(dbs_pool *p)
{
    dbs__waiter *w = p->wait_head;
    if (!w)
        return NULL;
    p->wait_head = w->next;
    if (!p->wait_head)
        p->wait_tail = NULL;
    w->next = NULL;
    w->queued = false;
    dbs__set_waiting(p, p->n_waiting - 1);
    head_changed(p);
    return w;
}

/* Only on timeout, so a linear walk is fine. */
void dbs__wait_remove(dbs_pool *p, dbs__waiter *w)
{
    dbs__waiter *prev = NULL;
    for (dbs__waiter *q = p->wait_head; q; prev = q, q = q->next) {
        if (q != w)
            continue;
        if (prev)
            prev->next = w->next;
        else
            p->wait_head = w->next;
        if (p->wait_tail == w)
            p->wait_tail = prev;
        w->queued = false;
        dbs__set_waiting(p, p->n_waiting - 1);
        if (!prev)
            head_changed(p);
        return;
    }
}

/* A slot has come free (a connection closed or a connect failed). If anyone
 * waits, the oldest waiter gets the reservation and connects itself, so a
 * slot never sits free while a thread waits. [mu] */
void dbs__pass_slot(dbs_pool *p)
{
    if (p->closed)
        return;
    dbs__waiter *w = dbs__wait_pop(p);
    if (!w)
        return;
    w->may_create = true;
    p->n_pending++;
    POST_SEM(w->sem); /* under the lock: the waiter's stack frame is alive */
}

/* Gives c, which stays in use, to the oldest waiter; the waiter checks it
 * (lifetime, validation) and lists its session itself once awake. [mu] */
bool dbs__hand_off(dbs_pool *p, dbs__conn *c)
{
    dbs__waiter *w = dbs__wait_pop(p);
    if (!w)
        return false;
    w->handed = c;
    POST_SEM(w->sem); /* under the lock: the waiter's stack frame is alive */
    return true;
}

/* Each thread waits on one semaphore of its own, made on its first wait.
 * A thread waits for one pool at a time, and every post is consumed by the
 * wait it was meant for, so it is always at zero between waits. */
sem_t *dbs__waiter_sem(void)
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

bool dbs__wait_posted(sem_t *sem, int64_t deadline)
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
