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

atomic_ulong dbs__fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The fork gate. A child gets a copy of every lock as it was at the fork,
 * and a lock some other thread held then stays held for good in the child.
 * The libraries under the drivers keep process-wide locks (SQLite's static
 * mutexes: the unix VFS's list of open files, the memory statistics; the
 * client plugin list of Connector/C; OpenSSL's stores), taken and let go
 * inside their calls. A user's thread is the user's to keep out of them at
 * a fork, as with any library; the library's own threads (the housekeeper,
 * the replica monitors, the loop's SQLite workers) are the library's to
 * keep out. So each of their passes runs inside the gate, and a fork()
 * waits in its prepare handler until no pass is inside: a child never
 * inherits one of those locks from a library thread. Passes that would
 * start meanwhile wait for the fork to end. A fork from inside a pass (an
 * event callback that the housekeeper runs) does not wait, as that would
 * wait on itself. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_inside;  /* passes inside the gate */
static int gate_forkers; /* threads in fork(), past their wait */
static _Thread_local int gate_depth;      /* this thread's passes, nested */
static _Thread_local bool gate_unguarded; /* this thread forked from inside */

static void gate_prepare(void)
{
    if (gate_depth > 0) {
        gate_unguarded = true;
        return;
    }
    /* fork() runs this on the program's thread: a cancel acting in the
     * wait would unwind with gate_mu (and glibc's fork lock) held */
    int old, unused;
    (void)pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    pthread_mutex_lock(&gate_mu);
    gate_forkers++;
    while (gate_inside > 0)
        pthread_cond_wait(&gate_cv, &gate_mu);
    (void)pthread_setcancelstate(old, &unused);
    /* held through the fork: the child's copy is held by its only thread */
}

static void gate_parent(void)
{
    if (gate_unguarded) {
        gate_unguarded = false;
        return;
    }
    gate_forkers--;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static void in_child(void)
{
    atomic_fetch_add(&dbs__fork_generation, 1);
    if (!gate_unguarded)
        pthread_mutex_unlock(&gate_mu); /* held by this thread since prepare */
    /* The child's only thread is this one: waiters and passes of other
     * threads are gone, and the lock and condition variable are made anew
     * rather than trusted (in the unguarded case another thread may have
     * held the lock at the fork). */
    pthread_mutex_init(&gate_mu, NULL);
    pthread_cond_init(&gate_cv, NULL);
    gate_forkers = 0;
    gate_inside = gate_depth > 0 ? 1 : 0;
    gate_unguarded = false;
}

/* Set once the handlers are in: the calls on every statement's path
 * (dbs__fork_gen) then skip pthread_once. */
static atomic_bool atfork_done;

static void atfork_register(void)
{
    pthread_atfork(gate_prepare, gate_parent, in_child);
    atomic_store_explicit(&atfork_done, true, memory_order_release);
}

void dbs__fork_gate_enter(void)
{
    if (gate_depth++ > 0)
        return;
    pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&gate_mu);
    while (gate_forkers > 0)
        pthread_cond_wait(&gate_cv, &gate_mu);
    gate_inside++;
    pthread_mutex_unlock(&gate_mu);
}

void dbs__fork_gate_leave(void)
{
    if (--gate_depth > 0)
        return;
    pthread_mutex_lock(&gate_mu);
    if (--gate_inside == 0 && gate_forkers > 0)
        pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

unsigned long dbs__fork_gen(void)
{
    if (!atomic_load_explicit(&atfork_done, memory_order_acquire))
        pthread_once(&atfork_once, atfork_register);
    return atomic_load_explicit(&dbs__fork_generation, memory_order_relaxed);
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
