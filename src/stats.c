/* Counters and the consistent snapshot of them. */
#include "internal.h"

#include <string.h>

void dbs_pool_stats(dbs_pool *p, dbs_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p || p->magic != DBS__POOL_MAGIC)
        return;
    pthread_mutex_lock(&p->mu);
    *out = p->counters;
    out->size = p->n_open;
    out->idle = p->n_idle;
    out->in_use = p->n_in_use;
    int over = p->n_open - p->cfg.pool_size;
    if (p->mode != DBS_POOL_QUEUE || over < 0)
        over = 0;
    out->overflow_in_use = over < p->n_in_use ? over : p->n_in_use;
    out->waiting = p->n_waiting;
    out->pending = p->n_pending;
    out->max_size = p->max_size;
    pthread_mutex_unlock(&p->mu);
}
