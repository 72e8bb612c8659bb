/* Counters and the consistent snapshot of them. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill_percentiles(const dbs__hist_snap *h, int64_t *p50, int64_t *p90,
                             int64_t *p99, int64_t *max, uint64_t *count);
struct out;
struct snapshot;
static void put_otel(struct out *o, dbs_pool *p, int T, const struct snapshot *sn,
                     char *const *labs);
static void put_json_observe(struct out *o, dbs_pool *p);

/* The pool's wait and use histograms: its own plus its shards'. Cells are
 * read without locks (see histogram.c); a shard's histograms, once made,
 * live as long as the pool. hists: the shards' pointers, or NULL to read
 * them here. */

static void pool_stats(dbs_pool *p, dbs_stats *out);

void dbs_pool_stats(dbs_pool *p, dbs_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p || p->magic != DBS__POOL_MAGIC)
        return;
    /* a call under way when the pool is closed stays safe: see dbs__pool_ref */
    dbs__pool_ref(p);
    pool_stats(p, out);
    dbs__pool_unref(p);
}

static void pool_stats(dbs_pool *p, dbs_stats *out)
{
    dbs__shard_hists *hists[DBS__SHARDS];
    dbs__pool_snapshot(p, out, hists);
    dbs__replicas_stats(p, out); /* each replica pool's own snapshot */
    if (!p->cfg.metrics)
        return;
    dbs__hist_snap *h = malloc(2 * sizeof *h);
    if (!h)
        return;
    dbs__hists_read_shards(p, hists, &h[0], &h[1]);
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
    /* le="0.005", never "0,005" under the program's locale: a scrape
     * refuses the whole page for one such number */
    locale_t old = dbs__c_numeric_enter();
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    dbs__c_numeric_leave(old);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* The length of the well-formed UTF-8 sequence at s (no overlong form, no
 * surrogate, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!k || (k == 2 && c < 0xC2) || (k == 4 && c > 0xF4))
        return 0;
    for (size_t j = 1; j < k; j++) /* stops at the NUL: it is no continuation */
        if ((s[j] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0) ||
        (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
        return 0;
    return k;
}

/* Label values and JSON strings: backslash, quote and newline escaped,
 * other control characters left out, and each byte that is no UTF-8 written
 * as U+FFFD: a scrape rejects the whole text for one such label value, and
 * a JSON parser the whole object (a pool's name is free text). */
static void put_escaped(out *o, const char *s)
{
    while (*s) {
        size_t k = utf8_len((const unsigned char *)s);
        if (k == 0)
            put(o, "\xEF\xBF\xBD");
        else if (*s == '\\' || *s == '"')
            put(o, "\\%c", *s);
        else if (*s == '\n')
            put(o, "\\n");
        else if ((unsigned char)*s >= 0x20)
            put(o, "%.*s", (int)k, s);
        s += k ? k : 1;
    }
}

typedef struct snapshot {
    dbs_stats st;
    dbs__hist_snap wait, use;
    int circuit; /* enum dbs_circuit_state */
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
    sn->circuit = dbs_pool_circuit(p);
    return DBS_OK;
}

static void put_head(out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One series: name{labs[,key="val"]} value. */
static void put_series(out *o, const char *name, const char *labs, const char *key,
                       const char *val, uint64_t v)
{
    put(o, "%s{%s", name, labs);
    if (key)
        put(o, ",%s=\"%s\"", key, val);
    put(o, "} %llu\n", (unsigned long long)v);
}

static void put_hist_series(out *o, const char *labs, const char *name, const dbs__hist_snap *h)
{
    uint64_t cum = 0;
    int next = 0;
    /* bucket boundaries at each octave from 1 µs to 2^25 µs (33.5 s); le
     * is inclusive, so a bucket whose largest value is le_us itself counts
     * (below 16 µs buckets hold one value each: 1, 2, 4, 8 µs). Eight
     * digits write every octave to 2^26 µs exactly: with six, le="2.09715"
     * counted values up to 2.097151 s, above it. */
    for (int k = 0; k <= 25; k++) {
        uint64_t le_us = (uint64_t)1 << k;
        while (next < DBS__HIST_BUCKETS && dbs__hist_upper(next) <= le_us)
            cum += h->b[next++];
        put(o, "%s_bucket{%s,le=\"%.8g\"} %llu\n", name, labs, (double)le_us / 1e6,
            (unsigned long long)cum);
    }
    put(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labs, (unsigned long long)h->count);
    put(o, "%s_sum{%s} %.6f\n", name, labs, (double)h->sum_us / 1e6);
    put(o, "%s_count{%s} %llu\n", name, labs, (unsigned long long)h->count);
}

/* The label set of one target: pool="<name>",target="primary", or, for a
 * replica, target="replica",host="<host:port>". malloc'd; NULL if out of
 * memory. */
static char *target_labels(const char *pool, const char *host)
{
    out o = {NULL, 0, 0};
    for (int pass = 0; pass < 2; pass++) {
        o.len = 0;
        put(&o, "pool=\"");
        put_escaped(&o, pool);
        put(&o, "\",target=\"%s\"", host ? "replica" : "primary");
        if (host) {
            put(&o, ",host=\"");
            put_escaped(&o, host);
            put(&o, "\"");
        }
        if (pass == 0) {
            o.cap = o.len + 1;
            o.buf = malloc(o.cap);
            if (!o.buf)
                return NULL;
        }
    }
    return o.buf;
}

static int pool_metrics(dbs_pool *p, char *buf, size_t len);

int dbs_pool_metrics(dbs_pool *p, char *buf, size_t len)
{
    /* terminated on every path, failures included: no stale text is read
     * as an exposition */
    if (buf && len)
        buf[0] = '\0';
    /* buf NULL with room claimed would be written through */
    if (!p || p->magic != DBS__POOL_MAGIC || (!buf && len))
        return DBS_EMISUSE;
    /* a scrape under way when the server closes the pool stays safe */
    dbs__pool_ref(p);
    int rc = pool_metrics(p, buf, len);
    dbs__pool_unref(p);
    return rc;
}

static int pool_metrics(dbs_pool *p, char *buf, size_t len)
{
    /* the primary first, then each replica's pool */
    const int T = 1 + dbs__replicas_count(p);
    snapshot *sn = calloc((size_t)T, sizeof *sn);
    char **labs = calloc((size_t)T, sizeof *labs);
    int rc = sn && labs ? DBS_OK : DBS_ENOMEM;
    for (int t = 0; rc == DBS_OK && t < T; t++) {
        dbs_pool *tp = t == 0 ? p : dbs__replica_pool(p, t - 1);
        labs[t] = target_labels(p->name, tp->replica_label);
        rc = labs[t] ? take_snapshot(tp, &sn[t]) : DBS_ENOMEM;
        if (rc == DBS_OK)
            dbs__hists_read_shards(tp, NULL, &sn[t].wait, &sn[t].use);
    }
    if (rc != DBS_OK) {
        for (int t = 0; labs && t < T; t++)
            free(labs[t]);
        free(labs);
        free(sn);
        return rc;
    }
    out o = {buf, len, 0};

#define EACH(name, type, help, expr)                                           \
    do {                                                                       \
        put_head(&o, name, type, help);                                        \
        for (int t = 0; t < T; t++) {                                          \
            const dbs_stats *s = &sn[t].st;                                    \
            put_series(&o, name, labs[t], NULL, NULL, (uint64_t)(expr));       \
        }                                                                      \
    } while (0)

    static const char *const states[] = {"idle", "in_use", "pending"};
    put_head(&o, "dbscope_connections", "gauge",
             "Connections by state: idle, in use by a session, being opened.");
    for (int t = 0; t < T; t++) {
        const dbs_stats *s = &sn[t].st;
        uint64_t conns[] = {(uint64_t)s->idle, (uint64_t)s->in_use, (uint64_t)s->pending};
        for (int i = 0; i < 3; i++)
            put_series(&o, "dbscope_connections", labs[t], "state", states[i], conns[i]);
    }
    EACH("dbscope_connections_max", "gauge",
         "The most connections the pool may open (pool_size + max_overflow).", s->max_size);
    EACH("dbscope_overflow_in_use", "gauge", "Connections in use beyond pool_size.",
         s->overflow_in_use);
    EACH("dbscope_waiting_threads", "gauge", "Threads waiting for a connection.", s->waiting);
    EACH("dbscope_acquired_total", "counter", "Sessions that got a connection.", s->acquired);
    EACH("dbscope_released_total", "counter", "Sessions that gave their connection back.",
         s->released);
    EACH("dbscope_connections_created_total", "counter", "Connections opened.", s->created);
    static const char *const reasons[] = {"lifetime", "idle", "broken", "overflow", "pool_close",
                                          "dirty", "other"};
    put_head(&o, "dbscope_connections_closed_total", "counter",
             "Connections closed, by reason.");
    for (int t = 0; t < T; t++) {
        const dbs_stats *s = &sn[t].st;
        uint64_t by_reason = s->closed_lifetime + s->closed_idle + s->closed_broken +
                             s->closed_overflow + s->closed_pool + s->closed_dirty;
        uint64_t closed[] = {s->closed_lifetime, s->closed_idle, s->closed_broken,
                             s->closed_overflow, s->closed_pool, s->closed_dirty,
                             s->closed > by_reason ? s->closed - by_reason : 0};
        for (int i = 0; i < 7; i++)
            put_series(&o, "dbscope_connections_closed_total", labs[t], "reason", reasons[i],
                       closed[i]);
    }
    EACH("dbscope_acquire_timeouts_total", "counter",
         "Acquires that gave up after acquire_timeout_ms.", s->timeouts);
    EACH("dbscope_connect_failures_total", "counter", "Connect attempts that failed.",
         s->connect_failures);
    EACH("dbscope_invalidated_total", "counter", "Connections found broken and discarded.",
         s->invalidated);
    EACH("dbscope_unavailable_total", "counter",
         "Acquires refused at once while the circuit was open.", s->unavailable);
    EACH("dbscope_retries_total", "counter", "Units of work retried by dbs_transact.",
         s->retries);
    EACH("dbscope_leaks_total", "counter", "Sessions reported as held past leak_threshold_ms.",
         s->leaks);
    EACH("dbscope_leaks_recovered_total", "counter",
         "Sessions reported as leaked that were closed later.", s->leaks_recovered);
    EACH("dbscope_slow_sessions_total", "counter", "Sessions held past slow_session_ms.",
         s->slow_sessions);
#undef EACH
    if (T > 1) {
        put_head(&o, "dbscope_replica_lag_seconds", "gauge",
                 "How far a replica is behind the primary, from WAL positions (-1: unknown).");
        for (int t = 1; t < T; t++) {
            int64_t lag = dbs__replica_lag_ms(p, t - 1);
            put(&o, "dbscope_replica_lag_seconds{%s} %.3f\n", labs[t],
                lag < 0 ? -1.0 : (double)lag / 1e3);
        }
        put_head(&o, "dbscope_ro_fallbacks_total", "counter",
                 "Read-only sessions that no replica qualified for.");
        put_series(&o, "dbscope_ro_fallbacks_total", labs[0], NULL, NULL,
                   sn[0].st.ro_fallbacks);
        put_head(&o, "dbscope_ro_pos_fallbacks_total", "counter",
                 "Read-only sessions that no replica had replayed the position for "
                 "(reads your own writes).");
        put_series(&o, "dbscope_ro_pos_fallbacks_total", labs[0], NULL, NULL,
                   sn[0].st.ro_pos_fallbacks);
    }
    put_head(&o, "dbscope_acquire_wait_seconds", "histogram",
             "Time from asking for a connection to getting one.");
    for (int t = 0; t < T; t++)
        put_hist_series(&o, labs[t], "dbscope_acquire_wait_seconds", &sn[t].wait);
    put_head(&o, "dbscope_session_duration_seconds", "histogram",
             "Time a session held its connection.");
    for (int t = 0; t < T; t++)
        put_hist_series(&o, labs[t], "dbscope_session_duration_seconds", &sn[t].use);
    put_otel(&o, p, T, sn, labs);
    for (int t = 0; t < T; t++)
        free(labs[t]);
    free(labs);
    free(sn);
    return o.len > (size_t)INT32_MAX ? DBS_ENOMEM : (int)o.len;
}

static int pool_stats_json(dbs_pool *p, char *buf, size_t len);

int dbs_pool_stats_json(dbs_pool *p, char *buf, size_t len)
{
    if (buf && len)
        buf[0] = '\0'; /* as dbs_pool_metrics: terminated on every path */
    if (!p || p->magic != DBS__POOL_MAGIC || (!buf && len))
        return DBS_EMISUSE;
    dbs__pool_ref(p); /* as dbs_pool_metrics */
    int rc = pool_stats_json(p, buf, len);
    dbs__pool_unref(p);
    return rc;
}

static int pool_stats_json(dbs_pool *p, char *buf, size_t len)
{
    dbs_stats s;
    dbs_pool_stats(p, &s);
    out o = {buf, len, 0};
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
        {"closed_pool", s.closed_pool}, {"closed_dirty", s.closed_dirty}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        put(&o, ",\"%s\":%llu", c[i].k, (unsigned long long)c[i].v);
    put(&o, ",\"replica_size\":%d,\"replica_in_use\":%d,\"replica_lag_ms\":%lld,"
            "\"ro_fallbacks\":%llu,\"ro_pos_fallbacks\":%llu,\"replicas\":[",
        s.replica_size, s.replica_in_use, (long long)s.replica_lag_ms,
        (unsigned long long)s.ro_fallbacks, (unsigned long long)s.ro_pos_fallbacks);
    for (int i = 0; i < dbs__replicas_count(p); i++) {
        dbs_stats rs;
        dbs_pool *rp = dbs__replica_pool(p, i);
        dbs_pool_stats(rp, &rs);
        put(&o, "%s{\"host\":\"", i ? "," : "");
        put_escaped(&o, rp->replica_label);
        put(&o, "\",\"size\":%d,\"in_use\":%d,\"lag_ms\":%lld}", rs.size, rs.in_use,
            (long long)dbs__replica_lag_ms(p, i));
    }
    put(&o, "]");
    put(&o, ",\"wait_us\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"max\":%lld,\"count\":%llu}",
        (long long)s.wait_p50_us, (long long)s.wait_p90_us, (long long)s.wait_p99_us,
        (long long)s.wait_max_us, (unsigned long long)s.wait_count);
    put(&o, ",\"use_us\":{\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"max\":%lld,\"count\":%llu}",
        (long long)s.use_p50_us, (long long)s.use_p90_us, (long long)s.use_p99_us,
        (long long)s.use_max_us, (unsigned long long)s.use_count);
    put_json_observe(&o, p);
    put(&o, "}");
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

/* The list being gathered: one allocation of entries and one of strings,
 * sized outside the locks and checked under them. */
typedef struct gather {
    listed *list;
    char *strs;
    size_t cap_n, cap_b, n, used;
    size_t need_n, need_b; /* what every pool visited needed */
    bool fits;
} gather;

/* Adds p's sessions to g under p's shard locks, or, if they do not fit,
 * only counts what they need. */
static void gather_pool(dbs_pool *p, gather *g)
{
    const char *target = p->replica_label ? p->replica_label : "primary";
    int64_t now = dbs__now_ns();
    dbs__shards_lock(p);
    size_t pn = 0, pb = 0;
    for (int k = 0; k < DBS__SHARDS; k++) {
        for (dbs_session *s = p->shards[k].sessions; s; s = s->next) {
            pn++;
            const char *f[3] = {s->ctx.request_id, s->ctx.user_id, s->ctx.tenant_id};
            for (int i = 0; i < 3; i++)
                pb += f[i] ? strlen(f[i]) + 1 : 0;
        }
    }
    g->need_n += pn;
    g->need_b += pb;
    if (!g->fits || g->n + pn > g->cap_n || g->used + pb > g->cap_b) {
        g->fits = false;
        dbs__shards_unlock(p);
        return;
    }
    for (int k = 0; k < DBS__SHARDS; k++) {
        for (dbs_session *s = p->shards[k].sessions; s; s = s->next) {
            listed *l = &g->list[g->n++];
            dbs_session_info *in = &l->in;
            l->opened_ns = s->opened_ns;
            in->file = s->file;
            in->line = s->line;
            in->func = s->func;
            in->thread = (unsigned long)s->owner;
            in->age_ms = (now - s->opened_ns) / 1000000;
            in->in_transaction = atomic_load_explicit(&s->tx_open, memory_order_relaxed);
            in->leak_reported = s->leak_reported;
            in->conn_id = s->conn ? s->conn->item.id : 0;
            in->target = target;
            in->read_only = atomic_load_explicit(&s->read_only, memory_order_relaxed);
            const char *f[3] = {s->ctx.request_id, s->ctx.user_id, s->ctx.tenant_id};
            const char **d[3] = {&in->ctx.request_id, &in->ctx.user_id, &in->ctx.tenant_id};
            for (int i = 0; i < 3; i++) {
                *d[i] = NULL;
                if (!f[i])
                    continue;
                size_t len = strlen(f[i]) + 1;
                memcpy(g->strs + g->used, f[i], len);
                *d[i] = g->strs + g->used;
                g->used += len;
            }
        }
    }
    dbs__shards_unlock(p);
}

typedef struct sessions_frame sessions_frame;
static int pool_sessions(sessions_frame *f, dbs_session_fn fn, void *user);

/* The pool's reference and the list copy dbs_pool_sessions holds while
 * fn runs; p NULL once let go. */
typedef struct sessions_frame {
    dbs_pool *p;
    void *list, *strs; /* the copy fn is called on, NULL between two */
} sessions_frame;

/* A pthread_exit in fn (or a C++ exception through it) unwinds the call:
 * both let go of, as the call's return would (built with -fexceptions:
 * CMakeLists.txt, internal.h). */
static void sessions_unwound(sessions_frame *f)
{
    free(f->list);
    free(f->strs);
    f->list = f->strs = NULL;
    dbs_pool *p = f->p;
    f->p = NULL;
    dbs__pool_unref(p);
}

static inline __attribute__((always_inline)) void sessions_frame_leave(sessions_frame *f)
{
    if (__builtin_expect(f->p != NULL, 0)) {
        dbs__unwound();
        sessions_unwound(f);
    }
}

int dbs_pool_sessions(dbs_pool *p, dbs_session_fn fn, void *user)
{
    /* fn runs with cancellation deferred, as on_event does: a cancel in it
     * would keep the pool's reference and the copied list (a
     * pthread_exit lets go of them: sessions_unwound) */
    DBS__NO_CANCEL(cancel_old);
    if (!p || p->magic != DBS__POOL_MAGIC || !fn)
        return DBS_EMISUSE;
    dbs__pool_ref(p); /* as dbs_pool_metrics; fn may close the pool too */
    dbs__unwind_note();
    sessions_frame frame __attribute__((cleanup(sessions_frame_leave))) = {.p = p};
    int rc = pool_sessions(&frame, fn, user);
    frame.p = NULL;
    dbs__pool_unref(p);
    return rc;
}

static int pool_sessions(sessions_frame *f, dbs_session_fn fn, void *user)
{
    dbs_pool *p = f->p;
    /* The primary's sessions and each replica's, one list oldest first;
     * grown and gathered again if more sessions arrived meanwhile. */
    const int T = 1 + dbs__replicas_count(p);
    size_t cap_n = 16, cap_b = 1024;
    for (;;) {
        gather g = {.cap_n = cap_n, .cap_b = cap_b, .fits = true};
        g.list = malloc(sizeof *g.list * cap_n);
        g.strs = malloc(cap_b);
        if (!g.list || !g.strs) {
            free(g.list);
            free(g.strs);
            return DBS_ENOMEM;
        }
        for (int t = 0; t < T; t++)
            gather_pool(t == 0 ? p : dbs__replica_pool(p, t - 1), &g);
        if (g.fits) {
            qsort(g.list, g.n, sizeof *g.list, by_age); /* oldest first */
            f->list = g.list;
            f->strs = g.strs;
            for (size_t i = 0; i < g.n; i++)
                fn(&g.list[i].in, user);
            f->list = f->strs = NULL;
        }
        free(g.list);
        free(g.strs);
        if (g.fits)
            return (int)g.n;
        cap_n = g.need_n + 16;
        cap_b = g.need_b + 1024;
    }
}

/* ---- OpenTelemetry's names, the error table, the circuit ---- */


/* A histogram in seconds under an OpenTelemetry name; labs: the series'
 * labels. */
static void put_otel_hist(out *o, const char *name, const char *labs, const dbs__hist_snap *h)
{
    put_hist_series(o, labs, name, h);
}

/* db_client_connection_pool_name="<pool>" plus, for a replica,
 * server_address="<host:port>" (the primary's series have the pool's
 * name alone, as OpenTelemetry asks: unique within the application). */
static char *otel_labels(const char *pool, const char *host, const char *extra_k,
                         const char *extra_v)
{
    out o = {NULL, 0, 0};
    for (int pass = 0; pass < 2; pass++) {
        o.len = 0;
        put(&o, "db_client_connection_pool_name=\"");
        put_escaped(&o, pool);
        put(&o, "\"");
        if (host) {
            put(&o, ",server_address=\"");
            put_escaped(&o, host);
            put(&o, "\"");
        }
        if (extra_k)
            put(&o, ",%s=\"%s\"", extra_k, extra_v);
        if (pass == 0) {
            o.cap = o.len + 1;
            o.buf = malloc(o.cap);
            if (!o.buf)
                return NULL;
        }
    }
    return o.buf;
}

/* An idle-connection limit of tp's configuration (pool_size, min_idle) as
 * its mode applies it: none kept in NONE mode, never above max_size. */
static int idle_bound(const dbs_pool *tp, int max_size, int v)
{
    if (tp->mode == DBS_POOL_NONE)
        return 0;
    return v < max_size ? v : max_size;
}

static void put_otel(out *o, dbs_pool *p, int T, const snapshot *sn, char *const *labs)
{
    char **ol = calloc((size_t)T, sizeof *ol);
    char **sys = calloc((size_t)T, sizeof *sys);
    dbs__hist_snap *h = malloc(2 * (size_t)T * sizeof *h);
    bool ok = ol && sys && h;
    for (int t = 0; ok && t < T; t++) {
        dbs_pool *tp = t == 0 ? p : dbs__replica_pool(p, t - 1);
        ol[t] = otel_labels(p->name, tp->replica_label, NULL, NULL);
        sys[t] = otel_labels(p->name, tp->replica_label, "db_system_name",
                             tp->drv ? tp->drv->name : "other_sql");
        ok = ol[t] && sys[t];
        if (ok)
            dbs__hists_read_op(tp, &h[2 * t], &h[2 * t + 1]);
    }
    if (ok) {
        put_head(o, "db_client_connection_count", "gauge",
                 "The number of connections that are currently in state described by the "
                 "state attribute (OpenTelemetry db.client.connection.count).");
        for (int t = 0; t < T; t++) {
            put_series(o, "db_client_connection_count", ol[t], "db_client_connection_state",
                       "idle", (uint64_t)sn[t].st.idle);
            put_series(o, "db_client_connection_count", ol[t], "db_client_connection_state",
                       "used", (uint64_t)sn[t].st.in_use);
        }
#define OTEL(name, type, help, expr)                                           \
    do {                                                                       \
        put_head(o, name, type, help);                                         \
        for (int t = 0; t < T; t++) {                                          \
            dbs_pool *tp = t == 0 ? p : dbs__replica_pool(p, t - 1);           \
            const dbs_stats *s = &sn[t].st;                                    \
            (void)tp;                                                          \
            (void)s;                                                           \
            put_series(o, name, ol[t], NULL, NULL, (uint64_t)(expr));          \
        }                                                                      \
    } while (0)
        /* within what the mode lets the pool open: SINGLE keeps one
         * connection whatever pool_size says, NONE keeps none */
        OTEL("db_client_connection_idle_max", "gauge",
             "The maximum number of idle open connections allowed (pool_size).",
             idle_bound(tp, s->max_size, tp->cfg.pool_size));
        OTEL("db_client_connection_idle_min", "gauge",
             "The minimum number of idle open connections allowed (min_idle).",
             idle_bound(tp, s->max_size, tp->cfg.min_idle));
        OTEL("db_client_connection_max", "gauge",
             "The maximum number of open connections allowed.", s->max_size);
        OTEL("db_client_connection_pending_requests", "gauge",
             "The number of current pending requests for an open connection.", s->waiting);
        OTEL("db_client_connection_timeouts_total", "counter",
             "The number of connection timeouts that have occurred trying to obtain a "
             "connection from the pool.", s->timeouts);
#undef OTEL
        put_head(o, "db_client_connection_create_time_seconds", "histogram",
                 "The time it took to create a new connection.");
        for (int t = 0; t < T; t++)
            put_otel_hist(o, "db_client_connection_create_time_seconds", ol[t], &h[2 * t + 1]);
        put_head(o, "db_client_connection_wait_time_seconds", "histogram",
                 "The time it took to obtain an open connection from the pool.");
        for (int t = 0; t < T; t++)
            put_otel_hist(o, "db_client_connection_wait_time_seconds", ol[t], &sn[t].wait);
        put_head(o, "db_client_connection_use_time_seconds", "histogram",
                 "The time between borrowing a connection and returning it to the pool.");
        for (int t = 0; t < T; t++)
            put_otel_hist(o, "db_client_connection_use_time_seconds", ol[t], &sn[t].use);
        put_head(o, "db_client_operation_duration_seconds", "histogram",
                 "Duration of database client operations (dbs_exec, dbs_query).");
        for (int t = 0; t < T; t++)
            put_otel_hist(o, "db_client_operation_duration_seconds", sys[t], &h[2 * t]);
    }
    for (int t = 0; t < T; t++) {
        free(ol ? ol[t] : NULL);
        free(sys ? sys[t] : NULL);
    }
    free(ol);
    free(sys);
    free(h);

    /* the error table: only the cells that counted something */
    put_head(o, "dbscope_errors_total", "counter",
             "Failures returned to the pool's callers, by error class (dbs_code) and "
             "SQLSTATE (\"\": none; \"other\": one outside dbscope's fixed list).");
    for (int t = 0; t < T; t++) {
        dbs_pool *tp = t == 0 ? p : dbs__replica_pool(p, t - 1);
        for (int c = 0; c < DBS__ERR_CLASSES; c++) {
            for (int i = 0; i < DBS__ERR_STATES; i++) {
                uint64_t v = atomic_load_explicit(&tp->errors[c][i], memory_order_relaxed);
                if (!v)
                    continue;
                char nb[24];
                put(o, "dbscope_errors_total{%s,error_class=\"%s\",sqlstate=\"%s\"} %llu\n",
                    labs[t], dbs__err_class_name(c, nb, sizeof nb), dbs__err_state_name(i),
                    (unsigned long long)v);
            }
        }
    }
    put_head(o, "dbscope_circuit_open", "gauge",
             "1 while the circuit breaker is open (acquires fail fast), else 0.");
    /* every target's, however many replicas: read once per target, with its
     * snapshot, so the two metrics agree */
    for (int t = 0; t < T; t++)
        put_series(o, "dbscope_circuit_open", labs[t], NULL, NULL,
                   sn[t].circuit != DBS_CIRCUIT_CLOSED);
    put_head(o, "dbscope_circuit_state", "gauge",
             "The circuit breaker's state: 1 for the current one of closed, open, half_open.");
    for (int t = 0; t < T; t++)
        for (int st = DBS_CIRCUIT_CLOSED; st <= DBS_CIRCUIT_HALF_OPEN; st++)
            put_series(o, "dbscope_circuit_state", labs[t], "state", dbs__circuit_name(st),
                       sn[t].circuit == st);
}

/* The error table and the circuit in the JSON: "errors": the total,
 * "errors_by": one {"class","sqlstate","count"} per cell that counted. */
static void put_json_observe(out *o, dbs_pool *p)
{
    put(o, ",\"circuit\":\"%s\",\"errors\":%llu,\"errors_by\":[",
        dbs__circuit_name(dbs_pool_circuit(p)), (unsigned long long)dbs_pool_errors(p, 0, NULL));
    bool first = true;
    for (int c = 0; c < DBS__ERR_CLASSES; c++) {
        for (int i = 0; i < DBS__ERR_STATES; i++) {
            uint64_t v = atomic_load_explicit(&p->errors[c][i], memory_order_relaxed);
            if (!v)
                continue;
            char nb[24];
            put(o, "%s{\"class\":\"%s\",\"sqlstate\":\"%s\",\"count\":%llu}", first ? "" : ",",
                dbs__err_class_name(c, nb, sizeof nb), dbs__err_state_name(i),
                (unsigned long long)v);
            first = false;
        }
    }
    put(o, "]");
}
