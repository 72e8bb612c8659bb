/* The session layer's shards: each thread opens and closes its sessions
 * through its own shard of every pool, which lists them, counts them and
 * their checkouts, and holds the pool open for them through a shutdown
 * (see dbs__shard in internal.h). */
#include "pool_int.h"

/* Each thread's ordinal, given on its first checkout: it picks the thread's
 * shard in every pool, and is its affinity token in the resource pool.
 * Threads made one after another get different shards. */
static atomic_uint next_ordinal;
static _Thread_local unsigned my_ordinal; /* ordinal + 1; 0 = none yet */

dbs__shard *dbs__shard_of(dbs_pool *p)
{
    if (!my_ordinal)
        my_ordinal = atomic_fetch_add_explicit(&next_ordinal, 1, memory_order_relaxed) + 1;
    return &p->shards[(my_ordinal - 1) % DBS__SHARDS];
}

unsigned dbs__thread_ordinal(void)
{
    return my_ordinal;
}

void dbs__shards_lock(dbs_pool *p)
{
    for (int i = 0; i < DBS__SHARDS; i++)
        dbs__lock_take(&p->shards[i].mu);
}

void dbs__shards_unlock(dbs_pool *p)
{
    for (int i = DBS__SHARDS; i-- > 0;)
        dbs__lock_give(&p->shards[i].mu);
}

void dbs__shards_close(dbs_pool *p)
{
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        dbs__lock_take(&sh->mu);
        sh->closed = true;
        p->n_draining += sh->n_sessions;
        atomic_fetch_add(&p->refs, sh->n_sessions + sh->n_holds);
        dbs__lock_give(&sh->mu);
    }
}

bool dbs__shard_leave(dbs_pool *p, dbs__shard *sh)
{
    dbs__lock_take(&sh->mu);
    sh->n_sessions--;
    bool closed = sh->closed;
    dbs__lock_give(&sh->mu);
    if (!closed)
        return false;
    /* Counted in n_draining since the shutdown: tell dbs_pool_shutdown. */
    pthread_mutex_lock(&p->mu);
    if (--p->n_draining == 0)
        pthread_cond_broadcast(&p->drain_cv);
    pthread_mutex_unlock(&p->mu);
    return true;
}
