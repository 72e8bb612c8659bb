/* Counters and the consistent snapshot of them. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill_percentiles(const dbs__hist_snap *h, int64_t *p50, int64_t *p90,
                             int64_t *p99, int64_t *max, uint64_t *count);

/* The pool's wait and use histograms: its own plus its shards'. Cells are
 * read without locks (see histogram.c); a shard's histograms, once made,
 * live as long as the pool. hists: the shards' pointers, or NULL to read
 * them here. */
static void read_hists(dbs_pool *p, dbs__shard_hists *const *hists, dbs__hist_snap *wait,
                       dbs__hist_snap *use)
{
    memset(wait, 0, sizeof *wait);
    memset(use, 0, sizeof *use);
    pthread_mutex_lock(&p->mu);
    dbs__hist_merge(&p->wait_hist, wait);
    dbs__hist_merge(&p->use_hist, use);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard_hists *h;
        if (hists) {
            h = hists[i];
        } else {
            dbs__lock_take(&p->shards[i].mu);
            h = p->shards[i].hists;
            dbs__lock_give(&p->shards[i].mu);
        }
        if (h) {
            dbs__hist_merge(&h->wait, wait);
            dbs__hist_merge(&h->use, use);
        }
    }
}

void dbs_pool_stats(dbs_pool *p, dbs_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p || p->magic != DBS__POOL_MAGIC)
        return;
    /* Every shard's lock under the pool's: nothing moves while the
     * snapshot is taken, so its numbers add up. */
    dbs__shard_hists *hists[DBS__SHARDS];
    int parked = 0;
    pthread_mutex_lock(&p->mu);
    dbs__shards_lock(p);
    *out = p->counters;
    for (int i = 0; i < DBS__SHARDS; i++) {
        const dbs__shard *sh = &p->shards[i];
        out->acquired += sh->acquired;
        out->released += sh->released;
        out->leaks += sh->leaks;
        out->leaks_recovered += sh->leaks_recovered;
        out->slow_sessions += sh->slow_sessions;
        parked += sh->parked != NULL;
        hists[i] = sh->hists;
    }
    /* a parked connection is idle for every purpose but the idle list */
    int in_use = p->n_in_use - parked;
    out->size = p->n_open;
    out->idle = p->n_idle + parked;
    out->in_use = in_use;
    int over = p->n_open - p->cfg.pool_size;
    if (p->mode != DBS_POOL_QUEUE || over < 0)
        over = 0;
    out->overflow_in_use = over < in_use ? over : in_use;
    out->waiting = p->n_waiting;
    out->pending = p->n_pending;
    out->max_size = p->max_size;
    dbs__shards_unlock(p);
    pthread_mutex_unlock(&p->mu);
    if (!p->cfg.metrics)
        return;
    dbs__hist_snap *h = malloc(2 * sizeof *h);
    if (!h)
        return;
    read_hists(p, hists, &h[0], &h[1]);
    fill_percentiles(&h[0], &out->wait_p50_us, &out->wait_p90_us, &out->wait_p99_us,
                     &out->wait_max_us, &out->wait_count);
    fill_percentiles(&h[1], &out->use_p50_us, &out->use_p90_us, &out->use_p99_us,
                     &out->use_max_us, &out->use_count);
    free(h);
}

/* ---- exports ---- */

/* An output buffer that counts what it could not hold, like snprintf. */
typedef struct out {
    char *buf;
    size_t cap, len;
} out;

static void put(out *o, const char *fmt, ...) DBS__PRINTF(2, 3);
static void put(out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* Label values and JSON strings: backslash, quote and newline escaped. */
static void put_escaped(out *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else if ((unsigned char)*s >= 0x20)
            put(o, "%c", *s);
    }
}

typedef struct snapshot {
    dbs_stats st;
    dbs__hist_snap wait, use;
} snapshot;

static void fill_percentiles(const dbs__hist_snap *h, int64_t *p50, int64_t *p90,
                             int64_t *p99, int64_t *max, uint64_t *count)
{
    *p50 = dbs__hist_percentile(h, 0.50);
    *p90 = dbs__hist_percentile(h, 0.90);
    *p99 = dbs__hist_percentile(h, 0.99);
    *max = (int64_t)h->max_us;
    *count = h->count;
}

static int take_snapshot(dbs_pool *p, snapshot *sn)
{
    if (!p || p->magic != DBS__POOL_MAGIC)
        return DBS_EMISUSE;
    dbs_pool_stats(p, &sn->st);
    return DBS_OK;
}

static void put_hist(out *o, const char *pool, const char *name, const char *help,
                     const dbs__hist_snap *h)
{
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    int next = 0;
    /* bucket boundaries at each octave from 1 µs to 2^25 µs (33.5 s) */
    for (int k = 0; k <= 25; k++) {
        uint64_t le_us = (uint64_t)1 << k;
        while (next < DBS__HIST_BUCKETS && dbs__hist_upper(next) < le_us)
            cum += h->b[next++];
        put(o, "%s_bucket{pool=\"", name);
        put_escaped(o, pool);
        put(o, "\",le=\"%.6g\"} %llu\n", (double)le_us / 1e6, (unsigned long long)cum);
    }
    put(o, "%s_bucket{pool=\"", name);
    put_escaped(o, pool);
    put(o, "\",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
    put(o, "%s_sum{pool=\"", name);
    put_escaped(o, pool);
    put(o, "\"} %.6f\n", (double)h->sum_us / 1e6);
    put(o, "%s_count{pool=\"", name);
    put_escaped(o, pool);
    put(o, "\"} %llu\n", (unsigned long long)h->count);
}

static void put_metric(out *o, const char *pool, const char *name, const char *type,
                       const char *help, const char *label, const char *const *values,
                       const uint64_t *nums, int n)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < n; i++) {
        put(o, "%s{pool=\"", name);
        put_escaped(o, pool);
        if (label)
            put(o, "\",%s=\"%s", label, values[i]);
        put(o, "\"} %llu\n", (unsigned long long)nums[i]);
    }
}

#define ONE(o, pool, name, type, help, v)                                      \
    do {                                                                       \
        uint64_t one_ = (uint64_t)(v);                                         \
        put_metric(o, pool, name, type, help, NULL, NULL, &one_, 1);           \
    } while (0)

int dbs_pool_metrics(dbs_pool *p, char *buf, size_t len)
{
    snapshot *sn = malloc(sizeof *sn);
    if (!sn)
        return DBS_ENOMEM;
    int rc = take_snapshot(p, sn);
    if (rc != DBS_OK) {
        free(sn);
        return rc;
    }
    read_hists(p, NULL, &sn->wait, &sn->use);
    const dbs_stats *s = &sn->st;
    const char *pool = p->name;
    out o = {buf, len, 0};
    if (len)
        buf[0] = '\0';

    static const char *const states[] = {"idle", "in_use", "pending"};
    uint64_t conns[] = {(uint64_t)s->idle, (uint64_t)s->in_use, (uint64_t)s->pending};
    put_metric(&o, pool, "dbscope_connections", "gauge",
               "Connections by state: idle, in use by a session, being opened.", "state",
               states, conns, 3);
    ONE(&o, pool, "dbscope_connections_max", "gauge",
        "The most connections the pool may open (pool_size + max_overflow).", s->max_size);
    ONE(&o, pool, "dbscope_overflow_in_use", "gauge",
        "Connections in use beyond pool_size.", s->overflow_in_use);
    ONE(&o, pool, "dbscope_waiting_threads", "gauge",
        "Threads waiting for a connection.", s->waiting);
    ONE(&o, pool, "dbscope_acquired_total", "counter",
        "Sessions that got a connection.", s->acquired);
    ONE(&o, pool, "dbscope_released_total", "counter",
        "Sessions that gave their connection back.", s->released);
    ONE(&o, pool, "dbscope_connections_created_total", "counter",
        "Connections opened.", s->created);
    static const char *const reasons[] = {"lifetime", "idle", "broken", "overflow", "pool_close",
                                          "other"};
    uint64_t by_reason = s->closed_lifetime + s->closed_idle + s->closed_broken +
                         s->closed_overflow + s->closed_pool;
    uint64_t closed[] = {s->closed_lifetime, s->closed_idle, s->closed_broken,
                         s->closed_overflow, s->closed_pool,
                         s->closed > by_reason ? s->closed - by_reason : 0};
    put_metric(&o, pool, "dbscope_connections_closed_total", "counter",
               "Connections closed, by reason.", "reason", reasons, closed, 6);
    ONE(&o, pool, "dbscope_acquire_timeouts_total", "counter",
        "Acquires that gave up after acquire_timeout_ms.", s->timeouts);
    ONE(&o, pool, "dbscope_connect_failures_total", "counter",
        "Connect attempts that failed.", s->connect_failures);
    ONE(&o, pool, "dbscope_invalidated_total", "counter",
        "Connections found broken and discarded.", s->invalidated);
    ONE(&o, pool, "dbscope_unavailable_total", "counter",
        "Acquires refused at once while the circuit was open.", s->unavailable);
    ONE(&o, pool, "dbscope_retries_total", "counter",
        "Units of work retried by dbs_transact.", s->retries);
    ONE(&o, pool, "dbscope_leaks_total", "counter",
        "Sessions reported as held past leak_threshold_ms.", s->leaks);
    ONE(&o, pool, "dbscope_leaks_recovered_total", "counter",
        "Sessions reported as leaked that were closed later.", s->leaks_recovered);
    ONE(&o, pool, "dbscope_slow_sessions_total", "counter",
        "Sessions held past slow_session_ms.", s->slow_sessions);
    put_hist(&o, pool, "dbscope_acquire_wait_seconds",
             "Time from asking for a connection to getting one.", &sn->wait);
    put_hist(&o, pool, "dbscope_session_duration_seconds",
             "Time a session held its connection.", &sn->use);
    free(sn);
    return o.len > (size_t)INT32_MAX ? DBS_ENOMEM : (int)o.len;
}

int dbs_pool_stats_json(dbs_pool *p, char *buf, size_t len)
{
    dbs_stats s;
    if (!p || p->magic != DBS__POOL_MAGIC)
        return DBS_EMISUSE;
    dbs_pool_stats(p, &s);
    out o = {buf, len, 0};
    if (len)
        buf[0] = '\0';
    put(&o, "{\"pool\":\"");
    put_escaped(&o, p->name);
    put(&o, "\",\"size\":%d,\"idle\":%d,\"in_use\":%d,\"pending\":%d,\"overflow_in_use\":%d,"
            "\"waiting\":%d,\"max_size\":%d",
        s.size, s.idle, s.in_use, s.pending, s.overflow_in_use, s.waiting, s.max_size);
    struct { const char *k; uint64_t v; } c[] = {
        {"acquired", s.acquired}, {"released", s.released}, {"created", s.created},
        {"closed", s.closed}, {"timeouts", s.timeouts}, {"leaks", s.leaks},
        {"leaks_recovered", s.leaks_recovered}, {"retries", s.retries},
        {"connect_failures", s.connect_failures}, {"invalidated", s.invalidated},
        {"unavailable", s.unavailable}, {"slow_sessions", s.slow_sessions},
        {"closed_lifetime", s.closed_lifetime}, {"closed_idle", s.closed_idle},
        {"closed_broken", s.closed_broken}, {"closed_overflow", s.closed_overflow},
        {"closed_pool", s.closed_pool}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        put(&o, ",\"%s\":%llu", c[i].k, (unsigned long long)c[i].v);
    put(&o, ",\"wait_us\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"max\":%lld,\"count\":%llu}",
        (long long)s.wait_p50_us, (long long)s.wait_p90_us, (long long)s.wait_p99_us,
        (long long)s.wait_max_us, (unsigned long long)s.wait_count);
    put(&o, ",\"use_us\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"max\":%lld,\"count\":%llu}}",
        (long long)s.use_p50_us, (long long)s.use_p90_us, (long long)s.use_p99_us,
        (long long)s.use_max_us, (unsigned long long)s.use_count);
    return o.len > (size_t)INT32_MAX ? DBS_ENOMEM : (int)o.len;
}

/* ---- the session list ---- */

typedef struct listed {
    dbs_session_info in;
    int64_t opened_ns;
} listed;

static int by_age(const void *a, const void *b)
{
    int64_t x = ((const listed *)a)->opened_ns, y = ((const listed *)b)->opened_ns;
    return (x > y) - (x < y);
}

int dbs_pool_sessions(dbs_pool *p, dbs_session_fn fn, void *user)
{
    if (!p || p->magic != DBS__POOL_MAGIC || !fn)
        return DBS_EMISUSE;
    /* Sized outside the locks, checked under them, grown and retried if
     * more sessions arrived meanwhile. */
    size_t cap_n = 16, cap_b = 1024, n = 0;
    listed *list = malloc(sizeof *list * cap_n);
    char *strs = malloc(cap_b);
    if (!list || !strs) {
        free(list);
        free(strs);
        return DBS_ENOMEM;
    }
    for (;;) {
        size_t need_n = 0, need_b = 0, used = 0;
        int64_t now = dbs__now_ns();
        dbs__shards_lock(p);
        for (int k = 0; k < DBS__SHARDS; k++) {
            for (dbs_session *s = p->shards[k].sessions; s; s = s->next) {
                need_n++;
                const char *f[3] = {s->ctx.request_id, s->ctx.user_id, s->ctx.tenant_id};
                for (int i = 0; i < 3; i++)
                    need_b += f[i] ? strlen(f[i]) + 1 : 0;
            }
        }
        bool fits = need_n <= cap_n && need_b <= cap_b;
        if (fits) {
            n = 0;
            for (int k = 0; k < DBS__SHARDS; k++) {
                for (dbs_session *s = p->shards[k].sessions; s; s = s->next) {
                    listed *l = &list[n++];
                    dbs_session_info *in = &l->in;
                    l->opened_ns = s->opened_ns;
                    in->file = s->file;
                    in->line = s->line;
                    in->func = s->func;
                    in->thread = (unsigned long)s->owner;
                    in->age_ms = (now - s->opened_ns) / 1000000;
                    in->in_transaction = atomic_load_explicit(&s->tx_open, memory_order_relaxed);
                    in->leak_reported = s->leak_reported;
                    in->conn_id = s->conn ? s->conn->id : 0;
                    const char *f[3] = {s->ctx.request_id, s->ctx.user_id, s->ctx.tenant_id};
                    const char **d[3] = {&in->ctx.request_id, &in->ctx.user_id,
                                         &in->ctx.tenant_id};
                    for (int i = 0; i < 3; i++) {
                        *d[i] = NULL;
                        if (!f[i])
                            continue;
                        size_t len = strlen(f[i]) + 1;
                        memcpy(strs + used, f[i], len);
                        *d[i] = strs + used;
                        used += len;
                    }
                }
            }
        }
        dbs__shards_unlock(p);
        if (fits)
            break;
        free(list);
        free(strs);
        cap_n = need_n + 16;
        cap_b = need_b + 1024;
        list = malloc(sizeof *list * cap_n);
        strs = malloc(cap_b);
        if (!list || !strs) {
            free(list);
            free(strs);
            return DBS_ENOMEM;
        }
    }
    qsort(list, n, sizeof *list, by_age); /* oldest first */
    for (size_t i = 0; i < n; i++)
        fn(&list[i].in, user);
    free(list);
    free(strs);
    return (int)n;
}
