/* Pools and fork(). A child inherits the pool's memory and its
 * connections' sockets, which the parent's server sessions share: a child
 * must never send anything on them (a statement would interleave with the
 * parent's, a goodbye message would end the parent's session). A child
 * gets DBS_EMISUSE from every call that would use them until it calls
 * dbs_pool_after_fork_child, which lets go of them silently and starts the
 * pool afresh. */
#include "pool_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_ulong fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void in_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, in_child);
}

unsigned long dbs__fork_gen(void)
{
    pthread_once(&atfork_once, atfork_register);
    return atomic_load_explicit(&fork_gen, memory_order_relaxed);
}

int dbs__fork_check(const dbs_pool *p, const char *what, dbs_error *err)
{
    if (p->fork_gen == dbs__fork_gen())
        return DBS_OK;
    return dbs__err(err, DBS_EMISUSE,
                    "%s: this process is a child of the one that opened the pool (fork()): "
                    "it must not use the parent's connections; call "
                    "dbs_pool_after_fork_child(pool) first in the child", what);
}

bool dbs__fd_silence(int fd)
{
    if (fd < 0)
        return true;
    /* /dev/null takes the socket's place under the same number: what the
     * client library then writes (a goodbye, a TLS close_notify) fails or
     * goes nowhere, and its close drops only this process's descriptor.
     * Never shutdown(): that would end the parent's connection too. */
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul < 0)
        return false;
    bool ok = dup2(nul, fd) == fd;
    close(nul);
    return ok;
}

/* Lets go of c without sending anything: the backend's forget, or (SQLite,
 * whose handles must not be touched across fork) nothing at all. */
static void forget(dbs_pool *p, dbs__conn *c)
{
    if (p->drv->forget)
        p->drv->forget(c->impl);
    free(c);
}

int dbs__pool_after_fork(dbs_pool *p, dbs_error *err)
{
    if (p->fork_gen == dbs__fork_gen())
        return DBS_OK;
    /* The child has one thread, this one: any lock another thread of the
     * parent held at the fork stays held for good, so each is made anew,
     * and nothing of the parent's other threads (waiters, connects under
     * way, sessions, the housekeeper) exists any more. */
    pthread_mutexattr_t mattr;
    pthread_mutexattr_init(&mattr);
    pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->mu, &mattr);
    pthread_mutexattr_destroy(&mattr);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->hk_cv, &attr);
    pthread_cond_init(&p->drain_cv, &attr);
    pthread_condattr_destroy(&attr);

    for (dbs__conn *c = p->idle_head, *next; c; c = next) {
        next = c->next;
        forget(p, c);
    }
    p->idle_head = p->idle_tail = NULL;
    p->n_idle = 0;
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        atomic_store(&sh->mu.held, false);
        dbs__conn *c = dbs__unpark(sh);
        if (c)
            forget(p, c);
        /* Sessions open at the fork: those of other threads are gone with
         * them (their memory is left); this thread's are closed by
         * dbs_session_close without touching the pool (see session.c). */
        sh->sessions = NULL;
        sh->n_sessions = 0;
        sh->n_holds = 0;
        atomic_store(&p->maybe_parked[i], false);
    }
    /* Connections in use by those sessions are neither counted nor
     * touched from here on. */
    p->n_in_use = 0;
    p->n_pending = 0;
    p->n_draining = 0;
    p->wait_head = p->wait_tail = NULL;
    dbs__set_waiting(p, 0);
    dbs__set_open(p, 0);
    atomic_store(&p->in_order, false);
    atomic_store(&p->oldest_since_ns, INT64_MAX);
    p->consecutive_failures = 0;
    p->circuit_open = false;
    p->probing = false;
    p->circuit_backoff_ms = 0;
    p->last_fail_code = DBS_OK;
    p->last_fail_ns = 0;
    p->last_fail[0] = '\0';
    /* References: the owner's, and a replica pool's primary's; the
     * housekeeper and monitors add theirs as they start. */
    atomic_store(&p->refs, p->replica_label ? 2 : 1);
    p->hk_started = false;
    p->hk_running = false;
    p->fork_gen = dbs__fork_gen();
    int rc = DBS_OK;
    if (!p->closed && p->mode != DBS_POOL_NONE)
        rc = dbs__housekeeper_start(p, err);
    if (rc == DBS_OK)
        rc = dbs__replicas_after_fork(p, err);
    return rc;
}

int dbs_pool_after_fork_child(dbs_pool *pool, dbs_error *err)
{
    if (!pool || pool->magic != DBS__POOL_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_pool_after_fork_child: not an open pool");
    int rc = dbs__pool_after_fork(pool, err);
    if (rc == DBS_OK && err)
        dbs__err(err, DBS_OK, "ok");
    return rc;
}
