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
