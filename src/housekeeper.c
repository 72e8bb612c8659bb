/* The housekeeper: one background thread a pool that keeps min_idle
 * connections ready and closes idle ones past idle_timeout or lifetime, so a
 * quiet pool shrinks and a busy one never pays for a connect it could have
 * made in advance. Stopped and joined by dbs_pool_close. */
#include "internal.h"

#include <errno.h>
#include <string.h>

static void *housekeeper_main(void *arg)
{
    dbs_pool *p = arg;
    const int64_t period = (int64_t)p->cfg.housekeeping_interval_ms * 1000000;
    pthread_mutex_lock(&p->mu);
    while (p->hk_running) {
        pthread_mutex_unlock(&p->mu);
        dbs__pool_maintain(p);
        pthread_mutex_lock(&p->mu);
        struct timespec ts = dbs__timespec(dbs__now_ns() + period);
        /* Re-check the flag after every wake: a wait can end spuriously. */
        while (p->hk_running && pthread_cond_timedwait(&p->hk_cv, &p->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int dbs__housekeeper_start(dbs_pool *p, dbs_error *err)
{
    const dbs_config *c = &p->cfg;
    if (c->min_idle == 0 && c->idle_timeout_ms == 0 && c->max_lifetime_ms == 0 &&
        c->leak_threshold_ms == 0 && c->slow_session_ms == 0)
        return DBS_OK;
    pthread_mutex_lock(&p->mu);
    p->hk_running = true;
    pthread_mutex_unlock(&p->mu);
    int rc = pthread_create(&p->hk_thread, NULL, housekeeper_main, p);
    if (rc != 0) {
        pthread_mutex_lock(&p->mu);
        p->hk_running = false;
        pthread_mutex_unlock(&p->mu);
        return dbs__err(err, DBS_ENOMEM, "cannot start the housekeeper thread: %s",
                        strerror(rc));
    }
    p->hk_started = true;
    return DBS_OK;
}

void dbs__housekeeper_stop(dbs_pool *p)
{
    if (!p->hk_started)
        return;
    pthread_mutex_lock(&p->mu);
    p->hk_running = false;
    pthread_cond_signal(&p->hk_cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->hk_thread, NULL);
    p->hk_started = false;
}
