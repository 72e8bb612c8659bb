/* Observability beyond the counters: the error table (failures by class
 * and SQLSTATE), the circuit's state, statement timing, and histogram
 * snapshots that a caller can subtract for windowed percentiles. */
#include "pool_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(DBS_HISTOGRAM_BUCKETS == DBS__HIST_BUCKETS,
               "the public histogram has the internal one's buckets");

/* ---- the error table ---- */

/* Column 0: no SQLSTATE; 1..: these; the last: any other. A fixed list, so
 * that the metrics' cardinality is bounded whatever servers send. */
static const char *const known_states[DBS__ERR_STATES - 2] = {
    "08000", "08001", "08003", "08004", "08006", "08P01", /* connection */
    "0A000",                                              /* not supported */
    "22001", "22003", "22007", "22008", "22012", "22P02", /* data */
    "23000", "23502", "23503", "23505", "23514", "23P01", /* integrity */
    "25001", "25006", "25P02",                            /* transaction state */
    "28000", "28P01",                                     /* authorization */
    "3D000",                                              /* unknown database */
    "40001", "40P01",                                     /* rollback */
    "42000", "42501", "42601", "42703", "42883", "42P01", /* syntax, access */
    "42S02", "42S22",                                     /* (MariaDB) */
    "53100", "53200", "53300",                            /* resources */
    "55P03",                                              /* lock not available */
    "57014", "57P01", "57P02", "57P03",                   /* operator */
    "58030",                                              /* I/O */
    "HY000",                                              /* MariaDB: general */
    "XX000", "XX001",                                     /* internal */
};

static int state_index(const char *sqlstate)
{
    if (!sqlstate || !*sqlstate)
        return 0;
    for (int i = 0; i < DBS__ERR_STATES - 2; i++)
        if (known_states[i] && strncmp(known_states[i], sqlstate, 5) == 0)
            return i + 1;
    return DBS__ERR_STATES - 1;
}

static int class_index(int code)
{
    /* compared before negating: -INT_MIN overflows */
    return code < 0 && code > -DBS__ERR_CLASSES ? -code : 0;
}

void dbs__errors_note(dbs_pool *p, int code, const char *sqlstate)
{
    if (!p || code >= 0)
        return;
    atomic_fetch_add_explicit(&p->errors[class_index(code)][state_index(sqlstate)], 1,
                              memory_order_relaxed);
}

void dbs__pool_count_timeout(dbs_pool *p, const dbs__who *who, const char *reason)
{
    pthread_mutex_lock(&p->mu);
    p->counters.timeouts++;
    pthread_mutex_unlock(&p->mu);
    dbs__emit_who(p, DBS_EVENT_TIMEOUT, who, DBS_ETIMEOUT, reason);
    dbs__errors_note(p, DBS_ETIMEOUT, NULL);
}

const char *dbs__err_class_name(int cls, char *buf, size_t len)
{
    static const char *const names[] = {
        "other",   "config",         "connect", "timeout",     "closed",
        "sql",     "constraint",     "retryable", "commit_unknown", "misuse",
        "unavailable", "nomem",      "stmt_timeout", "full", "type",
        "null",    "canceled",       "busy",
    };
    if (cls >= 0 && cls < (int)(sizeof names / sizeof names[0]))
        return names[cls];
    snprintf(buf, len, "code_%d", -cls);
    return buf;
}

const char *dbs__err_state_name(int idx)
{
    if (idx <= 0)
        return "";
    if (idx >= DBS__ERR_STATES - 1)
        return "other";
    return known_states[idx - 1];
}

uint64_t dbs_pool_errors(dbs_pool *p, int code, const char *sqlstate)
{
    if (!p || p->magic != DBS__POOL_MAGIC || code > 0)
        return 0;
    dbs__pool_ref(p); /* as dbs_pool_metrics: safe across a dbs_pool_close */
    uint64_t n = 0;
    int st = sqlstate ? state_index(sqlstate) : -1;
    for (int c = 0; c < DBS__ERR_CLASSES; c++) {
        if (code < 0 && c != class_index(code))
            continue;
        for (int i = 0; i < DBS__ERR_STATES; i++)
            if (st < 0 || i == st)
                n += atomic_load_explicit(&p->errors[c][i], memory_order_relaxed);
    }
    dbs__pool_unref(p);
    return n;
}

/* ---- the circuit ---- */

int dbs_pool_circuit(dbs_pool *p)
{
    if (!p || p->magic != DBS__POOL_MAGIC)
        return DBS_EMISUSE;
    dbs__pool_ref(p); /* as dbs_pool_metrics: safe across a dbs_pool_close */
    pthread_mutex_lock(&p->mu);
    int st = !p->breaker.open    ? DBS_CIRCUIT_CLOSED
             : p->breaker.probing ? DBS_CIRCUIT_HALF_OPEN
                              : DBS_CIRCUIT_OPEN;
    pthread_mutex_unlock(&p->mu);
    dbs__pool_unref(p);
    return st;
}

const char *dbs__circuit_name(int state)
{
    return state == DBS_CIRCUIT_OPEN        ? "open"
           : state == DBS_CIRCUIT_HALF_OPEN ? "half_open"
                                            : "closed";
}

/* ---- statement timing ---- */

void dbs__op_done(dbs_session *s, int64_t start)
{
    if (!start)
        return;
    int64_t us = (dbs__now_ns() - start) / 1000;
    /* the shard's histograms were made (or not) by this session's own
     * checkout, under the shard's lock this thread took */
    dbs__shard_hists *h = s->shard ? s->shard->hists : NULL;
    dbs__hist_add_shared(h ? &h->op : &s->pool->op_hist, us);
}

void dbs__op_note(dbs_pool *p, const dbs__aunit *u)
{
    if (!p->cfg.metrics)
        return;
    for (size_t i = 0; i < u->n; i++)
        if (u->stmts[i].op_us >= 0)
            dbs__hist_add_shared(&p->op_hist, u->stmts[i].op_us);
}

/* ---- histogram snapshots ---- */

void dbs__hists_read_op(dbs_pool *p, dbs__hist_snap *op, dbs__hist_snap *create)
{
    memset(op, 0, sizeof *op);
    memset(create, 0, sizeof *create);
    dbs__hist_merge(&p->op_hist, op);
    dbs__hist_merge(&p->create_hist, create);
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__lock_take(&p->shards[i].mu);
        dbs__shard_hists *h = p->shards[i].hists;
        dbs__lock_give(&p->shards[i].mu);
        if (h)
            dbs__hist_merge(&h->op, op);
    }
}

int dbs_pool_histogram(dbs_pool *p, enum dbs_histogram_kind kind, dbs_histogram *out)
{
    if (!out)
        return DBS_EMISUSE;
    memset(out, 0, sizeof *out);
    if (!p || p->magic != DBS__POOL_MAGIC || (unsigned)kind > DBS_HIST_OPERATION)
        return DBS_EMISUSE;
    dbs__hist_snap *h = malloc(4 * sizeof *h);
    if (!h)
        return DBS_ENOMEM;
    dbs__pool_ref(p); /* as dbs_pool_metrics: safe across a dbs_pool_close */
    dbs__hists_read(p, &h[0], &h[1]);
    dbs__hists_read_op(p, &h[2], &h[3]);
    dbs__pool_unref(p);
    const dbs__hist_snap *s = kind == DBS_HIST_WAIT    ? &h[0]
                              : kind == DBS_HIST_USE    ? &h[1]
                              : kind == DBS_HIST_CREATE ? &h[3]
                                                        : &h[2];
    out->count = s->count;
    out->sum_us = s->sum_us;
    out->max_us = s->max_us;
    memcpy(out->bucket, s->b, sizeof out->bucket);
    free(h);
    return DBS_OK;
}

uint64_t dbs_histogram_upper_us(int bucket)
{
    if (bucket < 0 || bucket >= DBS_HISTOGRAM_BUCKETS)
        return 0;
    return dbs__hist_upper(bucket);
}

int64_t dbs_histogram_percentile(const dbs_histogram *now, const dbs_histogram *before,
                                 double q)
{
    if (!now || !(q > 0.0) || q > 1.0)
        return -1;
    dbs__hist_snap *d = malloc(sizeof *d);
    if (!d)
        return -1;
    d->count = 0;
    int top = -1;
    for (int i = 0; i < DBS__HIST_BUCKETS; i++) {
        uint64_t b = before ? before->bucket[i] : 0;
        d->b[i] = now->bucket[i] > b ? now->bucket[i] - b : 0;
        d->count += d->b[i];
        if (d->b[i])
            top = i;
    }
    d->sum_us = 0;
    /* the largest value of the window is not kept: its bucket's bound,
     * capped by the largest ever */
    d->max_us = top < 0 ? 0 : dbs__hist_upper(top);
    if (d->max_us > now->max_us)
        d->max_us = now->max_us;
    int64_t r = d->count ? dbs__hist_percentile(d, q) : -1;
    free(d);
    return r;
}

void dbs__hists_read_shards(dbs_pool *p, struct dbs__shard_hists *const *hists,
                            dbs__hist_snap *wait, dbs__hist_snap *use)
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

void dbs__hists_read(dbs_pool *p, dbs__hist_snap *wait, dbs__hist_snap *use)
{
    dbs__hists_read_shards(p, NULL, wait, use);
}
