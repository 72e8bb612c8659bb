/* Per-thread shards: each thread checks out and in through its own shard of
 * every pool, parks the connection it gave back there for its next checkout
 * while nobody waits, and lists its sessions there; see dbs__shard in
 * internal.h for the protocol between parking and waiting. */
#include "pool_int.h"

/* Each thread's ordinal, given on its first checkout: it picks the thread's
 * shard in every pool. Threads made one after another get different shards. */
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

/* Takes shard i's parked connection, if any, and clears its flag. [mu] */
static dbs__conn *take_from(dbs_pool *p, int i)
{
    dbs__shard *sh = &p->shards[i];
    dbs__lock_take(&sh->mu);
    dbs__conn *c = dbs__unpark(sh);
    atomic_store_explicit(&p->maybe_parked[i], false, memory_order_relaxed);
    dbs__lock_give(&sh->mu);
    return c;
}

dbs__conn *dbs__take_parked(dbs_pool *p, memory_order mo)
{
    for (int i = 0; i < DBS__SHARDS; i++) {
        if (!atomic_load_explicit(&p->maybe_parked[i], mo))
            continue;
        dbs__conn *c = take_from(p, i);
        if (c)
            return c;
    }
    return NULL;
}

void dbs__shard_leave(dbs_pool *p, dbs__shard *sh)
{
    dbs__lock_take(&sh->mu);
    sh->n_sessions--;
    bool closed = sh->closed;
    dbs__lock_give(&sh->mu);
    if (!closed)
        return;
    /* Counted in n_draining since the shutdown: tell dbs_pool_shutdown. */
    pthread_mutex_lock(&p->mu);
    if (--p->n_draining == 0)
        pthread_cond_broadcast(&p->drain_cv);
    pthread_mutex_unlock(&p->mu);
    dbs__pool_unref(p);
}

int dbs__pool_hold(dbs_pool *p, dbs_error *err)
{
    dbs__shard *sh = dbs__shard_of(p);
    dbs__lock_take(&sh->mu);
    if (sh->closed) {
        dbs__lock_give(&sh->mu);
        return dbs__err(err, DBS_ECLOSED, "the pool is shut down");
    }
    sh->n_holds++;
    dbs__lock_give(&sh->mu);
    return DBS_OK;
}

void dbs__pool_drop(dbs_pool *p)
{
    dbs__shard *sh = dbs__shard_of(p);
    dbs__lock_take(&sh->mu);
    sh->n_holds--;
    bool closed = sh->closed;
    dbs__lock_give(&sh->mu);
    if (closed)
        dbs__pool_unref(p);
}
