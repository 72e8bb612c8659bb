/*
 * Routing, the top layer: a dbs_pool as its users see it, the primary and
 * its read replicas (dbs_pool_open, dbs_pool_shutdown, dbs_pool_close open
 * and close them together), and the choice of where a read-only session
 * goes (dbs_session_open_ro). One internal pool per replica host
 * (dbs_config.replica_url), owned by the primary's pool, and the monitor
 * that measures how far each replica is behind, so that choosing one for a
 * read-only session costs no round trip. The primary tells this layer of
 * its commits through its on_commit hook.
 *
 * Lag is measured with WAL positions, not timestamps, so it stays right when
 * the primary is idle and when replay is paused: every PERIOD_MS a monitor
 * thread reads the primary's pg_current_wal_lsn() and keeps (time, position)
 * in a ring whenever the position moved; another thread per replica reads
 * pg_last_wal_replay_lsn(). A replica's lag is the age of the oldest primary
 * sample whose position it has not replayed yet (0 when it replayed them
 * all, however long ago that was). Each thread has its own connection
 * (never a pool's, so a busy pool never delays a measurement and the
 * measurements never take a slot from requests), bounded by the pool's
 * connect and statement bounds (a sample by SAMPLE_BOUND_MS where
 * statements have none), and one thread per server, so a server that
 * hangs delays only its own measurements.
 *
 * A replica qualifies for a read-only session while its last measurement
 * is recent (STALE_PERIODS), it is in recovery (a promoted replica is not a
 * replica any more), and, with a bound, it is provably fresh enough: every
 * commit acknowledged before the primary's last sample that showed a
 * position the replica has replayed is on the replica (a commit is flushed
 * before it is acknowledged, so it lies below what pg_current_wal_lsn()
 * showed at any later moment), so the data a session sees there is at most
 * now - that sample's time old. That age, not the age of the first sample
 * the replica is behind, is what the bound is held against: a late or
 * missing primary sample counts against the bound instead of hiding a
 * write made since.
 *
 * Reads your own writes: a session may need a replica that has replayed a
 * given position (dbs_session_open_ro_after), and the pool keeps, for each
 * user_id, the position of that user's last commit in a fixed table
 * (USER_SLOTS, a hash of the user_id; two users that share a slot need the
 * larger of their positions, so a collision can only send reads to the
 * primary more often, never to a replica that lacks a write). A replica
 * whose last measured replay position is below what the session needs is
 * passed over; no round trip is made to check again. A commit whose
 * position did not come back marks its slot (see MARK_NEW) until a
 * primary sample provides one that covers it.
 *
 * Lifetimes: each monitor thread holds a reference on the primary's pool;
 * the primary holds one on each replica pool until it is freed, so a
 * dbs_transact_ro that still holds the primary never touches a freed
 * replica pool.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "pool_int.h"
#include "loop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PERIOD_MS = 100, STALE_PERIODS = 3, RING = 1024, USER_SLOTS = 4096 };
/* A sample's bound when the pool's statements have none
 * (statement_timeout_ms = 0): a question whose answer was lost (a
 * firewall that forgot the connection) would otherwise keep the monitor,
 * and so the server's measurements, waiting for good. */
enum { SAMPLE_BOUND_MS = 10000 };

typedef struct replica {
    dbs_pool *pool;
    _Atomic int64_t ok_ns;           /* when its last good sample was taken
                                        (0: never) */
    atomic_bool in_recovery;
    _Atomic int64_t replay_lsn;      /* -1: none */
    _Atomic int64_t behind_since_ns; /* the oldest primary sample it has not
                                        replayed, 0: none */
    _Atomic int64_t safe_ns;         /* the last primary sample it is known
                                        to have replayed, 0: none */
} replica;

typedef struct monitor {
    struct dbs__replicas *rs;
    dbs_pool *primary;
    int idx; /* -1: the primary */
} monitor;

struct dbs__replicas {
    int n;
    replica *r;
    atomic_uint next;              /* round robin */
    atomic_ullong fallbacks;
    atomic_ullong pos_fallbacks;   /* no replica had the position needed */
    _Atomic int64_t primary_ok_ns; /* when the primary's last good sample
                                      was taken (0: never) */
    pthread_mutex_t mu;
    pthread_cond_t cv;             /* [mu] wakes the monitor to stop */
    bool stop;                     /* [mu] */
    int n_threads;                 /* started; set and read by open/shutdown */
    pthread_t *threads;
    monitor *mons;
    atomic_bool stopped;           /* shutdown ran (or is running) */
    /* [mu] the primary's positions, oldest first from ring_start: when
     * each was first and last seen */
    int64_t ring_t[RING], ring_last_t[RING], ring_lsn[RING];
    int ring_start, ring_n;
    /* the position each user_id's last commit needs (a hash's slot) */
    uint64_t user_seed;
    _Atomic uint64_t user_pos[USER_SLOTS];
};

static const int64_t stale_ns = (int64_t)STALE_PERIODS * PERIOD_MS * 1000000;

/* Recomputes every replica's behind_since and safe from the ring.
 * [rs->mu] */
static void update_lag(struct dbs__replicas *rs)
{
    for (int i = 0; i < rs->n; i++) {
        replica *r = &rs->r[i];
        if (!atomic_load(&r->ok_ns))
            continue;
        int64_t replayed = atomic_load(&r->replay_lsn);
        int64_t since = 0, safe = 0;
        for (int k = 0; k < rs->ring_n; k++) {
            int idx = (rs->ring_start + k) % RING;
            if (rs->ring_lsn[idx] > replayed) {
                since = rs->ring_t[idx];
                break;
            }
            safe = rs->ring_last_t[idx];
        }
        atomic_store(&r->behind_since_ns, since);
        atomic_store(&r->safe_ns, safe);
    }
}

/* One query returning one row of int8 columns, on the monitor's own
 * connection (autocommit: no BEGIN). *null_out marks NULL columns. */
static int query_row(dbs_pool *tp, dbs__conn *c, const char *sql, int64_t *vals, bool *nulls,
                     int ncols, dbs_error *err)
{
    dbs_rows *r = dbs__conn_query(tp, c, sql, err);
    if (!r)
        return err->code;
    int rc = r->ops->next(r, err);
    if (rc == 1) {
        for (int i = 0; i < ncols; i++) {
            nulls[i] = r->ops->is_null(r, i);
            vals[i] = nulls[i] ? -1 : r->ops->get_int(r, i);
        }
    }
    r->ops->close(r);
    if (rc == 1)
        return DBS_OK;
    return rc < 0 ? rc : dbs__err(err, DBS_ESQL, "no row");
}

/* User slots whose commit position did not come back hold MARK_NEW. A
 * primary sample that starts after such a commit was acknowledged shows an
 * insert position that covers it: each sample first turns MARK_NEW into
 * MARK_SEEN, then, with its position, MARK_SEEN into that position (larger
 * than anything committed before, so it also covers what the slot held).
 * A mark set meanwhile is MARK_NEW again (the larger) and waits for the
 * next sample; so does a commit with a position that lands on a MARK_SEEN
 * slot, which the sample under way may have read before it. */
#define MARK_NEW UINT64_MAX
#define MARK_SEEN (UINT64_MAX - 1)

static void marks_seen(struct dbs__replicas *rs)
{
    for (int i = 0; i < USER_SLOTS; i++) {
        uint64_t v = MARK_NEW;
        if (atomic_load_explicit(&rs->user_pos[i], memory_order_relaxed) == MARK_NEW)
            atomic_compare_exchange_strong(&rs->user_pos[i], &v, MARK_SEEN);
    }
}

static void marks_resolve(struct dbs__replicas *rs, uint64_t pos)
{
    for (int i = 0; i < USER_SLOTS; i++) {
        uint64_t v = MARK_SEEN;
        if (atomic_load_explicit(&rs->user_pos[i], memory_order_relaxed) == MARK_SEEN)
            atomic_compare_exchange_strong(&rs->user_pos[i], &v, pos);
    }
}

/* Tests only: how long the primary's sampler waits between reading a
 * position and applying it (0: not at all), to widen that window. */
_Atomic int dbs__replica_resolve_delay_ms;

static int sample(struct dbs__replicas *rs, monitor *m, dbs_pool *tp, dbs__conn *c, int64_t t)
{
    dbs_error err;
    int64_t v[2] = {0, 0};
    bool nulls[2] = {true, true}; /* a query that fails leaves them */
    if (m->idx < 0) {
        /* On a server in recovery this fails: the connection is closed and
         * the next one follows the URL (target_session_attrs) to the
         * writable host. */
        marks_seen(rs);
        int rc = query_row(tp, c,
                           "SELECT (pg_current_wal_lsn() - '0/0')::int8, "
                           "(pg_current_wal_insert_lsn() - '0/0')::int8",
                           v, nulls, 2, &err);
        if (rc != DBS_OK || nulls[0] || nulls[1])
            return rc != DBS_OK ? rc : DBS_ESQL;
        int delay = atomic_load_explicit(&dbs__replica_resolve_delay_ms, memory_order_relaxed);
        if (delay > 0)
            dbs__sleep_ms(delay);
        marks_resolve(rs, (uint64_t)v[1]);
        pthread_mutex_lock(&rs->mu);
        /* Positions only grow on one primary; a smaller one means another
         * server is primary now (a failover), whose history may never
         * contain what the old one wrote last: forget those samples, or a
         * replica would look behind them for good. */
        while (rs->ring_n > 0 &&
               rs->ring_lsn[(rs->ring_start + rs->ring_n - 1) % RING] > v[0])
            rs->ring_n--;
        int last = (rs->ring_start + rs->ring_n - 1) % RING;
        if (rs->ring_n == 0 || rs->ring_lsn[last] != v[0]) {
            if (rs->ring_n == RING) { /* drop the oldest */
                rs->ring_start = (rs->ring_start + 1) % RING;
                rs->ring_n--;
            }
            int idx = (rs->ring_start + rs->ring_n) % RING;
            rs->ring_t[idx] = t;
            rs->ring_last_t[idx] = t;
            rs->ring_lsn[idx] = v[0];
            rs->ring_n++;
        } else {
            rs->ring_last_t[last] = t;
        }
        atomic_store(&rs->primary_ok_ns, t);
        update_lag(rs);
        pthread_mutex_unlock(&rs->mu);
        return DBS_OK;
    }
    int rc = query_row(tp, c,
                       "SELECT pg_is_in_recovery()::int, "
                       "(pg_last_wal_replay_lsn() - '0/0')::int8",
                       v, nulls, 2, &err);
    if (rc != DBS_OK)
        return rc;
    replica *r = &rs->r[m->idx];
    pthread_mutex_lock(&rs->mu);
    atomic_store(&r->in_recovery, v[0] == 1);
    atomic_store(&r->replay_lsn, nulls[1] ? -1 : v[1]);
    atomic_store(&r->ok_ns, t);
    update_lag(rs);
    pthread_mutex_unlock(&rs->mu);
    return DBS_OK;
}

static void *monitor_main(void *arg)
{
    monitor *m = arg;
    struct dbs__replicas *rs = m->rs;
    dbs_pool *tp = m->idx < 0 ? m->primary : rs->r[m->idx].pool;
    dbs__conn *c = NULL; /* its own, never a pool's */
    /* set before dbs__replicas_shutdown joins: a connect or sample under
     * way then ends at once */
    dbs__thread_stop = &rs->stopped;
    pthread_mutex_lock(&rs->mu);
    while (!rs->stop) {
        pthread_mutex_unlock(&rs->mu);
        int64_t t = dbs__now_ns();
        dbs_error err;
        dbs__fork_gate_enter();
        if (!c) {
            c = dbs__conn_open(tp, &err);
            if (c && tp->cfg.statement_timeout_ms == 0 && tp->drv->set_timeout)
                tp->drv->set_timeout(c->impl, SAMPLE_BOUND_MS);
        }
        if (c && (sample(rs, m, tp, c, t) != DBS_OK || dbs__conn_broken(tp, c))) {
            dbs__conn_close(tp, c);
            c = NULL;
        }
        dbs__fork_gate_leave();
        /* The server failed us: its pool's idle connections may be dead
         * too (a restart), so each is pinged before its next hand-out,
         * however recently it was used. */
        if (!c)
            dbs__conn_suspect(tp, dbs__now_ns());
        pthread_mutex_lock(&rs->mu);
        struct timespec ts = dbs__timespec(t + (int64_t)PERIOD_MS * 1000000);
        /* Re-check the flag after every wake: a wait can end spuriously. */
        while (!rs->stop && pthread_cond_timedwait(&rs->cv, &rs->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&rs->mu);
    if (c) {
        dbs__fork_gate_enter();
        dbs__conn_close(tp, c);
        dbs__fork_gate_leave();
    }
    dbs__pool_unref(m->primary); /* may free the pool, rs with it */
    return NULL;
}

static void note_commit(dbs_pool *p, const char *user_id, uint64_t pos);

static dbs_pool *open_one(const dbs_config *cfg, dbs_error *err);
static void replicas_free(dbs_pool *p);

/* Starts a monitor thread per server (the primary's sampler first), each
 * holding a reference on p that it drops when it exits. */
static int start_monitors(dbs_pool *p, struct dbs__replicas *rs, dbs_error *err)
{
    for (int i = -1; i < rs->n; i++) {
        atomic_fetch_add(&p->refs, 1); /* the thread's; it drops it */
        int e = pthread_create(&rs->threads[rs->n_threads], NULL, monitor_main,
                               &rs->mons[i + 1]);
        if (e != 0) {
            atomic_fetch_sub(&p->refs, 1);
            return dbs__err(err, DBS_ENOMEM, "cannot start the replica monitor: %s",
                            strerror(e));
        }
        rs->n_threads++;
    }
    return DBS_OK;
}

/* Opens p's replica pools (lazily: no connect) and starts the lag
 * monitor, from p->cfg.replica_url. [no lock] */
static int replicas_open(dbs_pool *p, dbs_error *err)
{
#ifdef DBSCOPE_WITH_PG
    char **targets, **labels;
    int n;
    int rc = dbs__url_split_hosts(p->cfg.replica_url, &targets, &labels, &n, err);
    if (rc != DBS_OK)
        return rc;
    struct dbs__replicas *rs = calloc(1, sizeof *rs);
    if (rs) {
        rs->r = calloc((size_t)n, sizeof *rs->r);
        rs->threads = calloc((size_t)n + 1, sizeof *rs->threads);
        rs->mons = calloc((size_t)n + 1, sizeof *rs->mons);
    }
    if (!rs || !rs->r || !rs->threads || !rs->mons) {
        if (rs) {
            free(rs->r);
            free(rs->threads);
            free(rs->mons);
        }
        free(rs);
        dbs__url_hosts_free(targets, labels, n);
        return dbs__err(err, DBS_ENOMEM, "out of memory opening the replicas");
    }
    rs->user_seed = dbs__random();
    p->target.commit_pos = 1; /* commits record their positions from now on */
    p->on_commit = note_commit;
    p->on_free = replicas_free;
    pthread_mutex_init(&rs->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&rs->cv, &attr);
    pthread_condattr_destroy(&attr);
    p->replicas = rs;
    for (int i = 0; i < n; i++) {
        dbs_config c = p->cfg;
        c.url = targets[i];
        c.replica_url = NULL;
        c.lazy_open = 1; /* a replica that is down must not stop the program */
        dbs_error e;
        dbs_pool *rp = open_one(&c, &e);
        if (!rp) {
            rc = dbs__err(err, e.code, "replica %s: %s", labels[i], e.message);
            break;
        }
        rp->replica_label = labels[i];
        labels[i] = NULL;
        atomic_fetch_add(&rp->refs, 1); /* dropped by replicas_free */
        atomic_store(&rs->r[i].replay_lsn, -1);
        rs->r[i].pool = rp;
        rs->n = i + 1;
    }
    dbs__url_hosts_free(targets, labels, n);
    if (rc != DBS_OK)
        return rc;
    for (int i = -1; i < rs->n; i++) {
        monitor *m = &rs->mons[i + 1];
        m->rs = rs;
        m->primary = p;
        m->idx = i;
    }
    return start_monitors(p, rs, err);
#else
    (void)p;
    return dbs__err(err, DBS_ECONFIG, "replica_url needs PostgreSQL (DBSCOPE_WITH_PG=OFF)");
#endif
}

/* Lets go of c without sending anything: the backend's forget, or (SQLite,
 * whose handles must not be touched across fork) nothing at all. */
static void forget(dbs_pool *p, dbs__conn *c)
{
    if (p->drv->forget)
        p->drv->forget(c->impl);
    free(c);
}

/* In a child, lets go of p's inherited connections without sending
 * anything, resets its state and restarts its housekeeper. */
static int pool_after_fork(dbs_pool *p, dbs_error *err)
{
    if (p->fork_gen == dbs__fork_gen())
        return DBS_OK;
    /* The child has one thread, this one: any lock another thread of the
     * parent held at the fork stays held for good, so each is made anew,
     * and nothing of the parent's other threads (waiters, connects under
     * way, sessions, the housekeeper) exists any more. */
    dbs__pool_init_sync(p);

    int n_gone;
    for (dbs__rp_item *it = dbs__rp_after_fork(&p->rp, &n_gone), *next; it; it = next) {
        next = it->next;
        forget(p, dbs__conn_of(it));
    }
    /* Every inherited connection, idle or held, is the parent's: for the
     * child's counts it was closed (at shutdown of the parent's share), so
     * size = created - closed still holds. */
    p->counters.closed += (uint64_t)n_gone;
    p->counters.closed_pool += (uint64_t)n_gone;
    for (int i = 0; i < DBS__SHARDS; i++) {
        dbs__shard *sh = &p->shards[i];
        atomic_store(&sh->mu.held, false);
        /* Sessions open at the fork: those of other threads are gone with
         * them (their memory is left); this thread's are closed by
         * dbs_session_close without touching the pool (see session.c). */
        sh->sessions = NULL;
        sh->n_sessions = 0;
        sh->n_holds = 0;
    }
    /* Connections in use by those sessions are neither counted nor
     * touched from here on. */
    p->n_draining = 0;
    atomic_store(&p->warming, 0); /* a warm-up of another thread's, gone */
    dbs__breaker_init(&p->breaker, p->cfg.circuit_threshold, p->cfg.circuit_cooldown_ms);
    p->last_fail_code = DBS_OK;
    p->last_fail_ns = 0;
    p->last_fail[0] = '\0';
    /* References: the owner's, and a replica pool's primary's; the
     * housekeeper and monitors add theirs as they start. */
    atomic_store(&p->refs, p->replica_label ? 2 : 1);
    p->hk_started = false;
    p->hk_running = false;
    p->fork_gen = dbs__fork_gen();
    if (!p->closed)
        return dbs__housekeeper_start(p, err);
    /* A stop the parent had under way at the fork is not the child's:
     * none of the pool's threads exists here, and none starts again. */
    p->stopped = true;
    return DBS_OK;
}

/* In a child after fork(): dbs__pool_after_fork on each replica's pool,
 * and the monitor threads started again. */
static int replicas_after_fork(dbs_pool *p, dbs_error *err)
{
    struct dbs__replicas *rs = p->replicas;
    if (!rs)
        return DBS_OK;
    /* The parent's monitor threads do not exist here; their connections
     * are left as they are (never sent anything), their lock re-made. */
    pthread_mutex_init(&rs->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&rs->cv, &attr);
    pthread_condattr_destroy(&attr);
    for (int i = 0; i < rs->n; i++) {
        int rc = pool_after_fork(rs->r[i].pool, err);
        if (rc != DBS_OK)
            return rc;
        atomic_store(&rs->r[i].ok_ns, 0); /* measured anew */
    }
    rs->n_threads = 0;
    /* a primary shut down before the fork: no monitor again */
    if (p->closed)
        atomic_store(&rs->stopped, true);
    if (atomic_load(&rs->stopped))
        return DBS_OK;
    rs->stop = false;
    return start_monitors(p, rs, err);
}

/* Stops the monitor threads (joins them: each abandons a wait on a silent
 * server within DBS__STOP_SLICE_MS) and shuts the replica pools down; at close, closes them too. Once each, at the primary's
 * shutdown and close. */
static void replicas_shutdown(dbs_pool *p)
{
    struct dbs__replicas *rs = p->replicas;
    /* once, by the first shutdown (begin_shutdown): a later caller,
     * replicas_close's included, comes only once that one is over */
    if (!rs || atomic_exchange(&rs->stopped, true))
        return;
    pthread_mutex_lock(&rs->mu);
    rs->stop = true;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
    /* Between samples a thread exits at once; one waiting on a silent
     * server (a connect, a sample) sees rs->stopped, its dbs__thread_stop,
     * within DBS__STOP_SLICE_MS, drops what it was doing and exits: the
     * join is short, and no monitor is left inside libpq afterwards. */
    for (int i = 0; i < rs->n_threads; i++)
        pthread_join(rs->threads[i], NULL);
    rs->n_threads = 0;
    for (int i = 0; i < rs->n; i++)
        dbs_pool_shutdown(rs->r[i].pool, 0);
}

static void replicas_close(dbs_pool *p)
{
    struct dbs__replicas *rs = p->replicas;
    if (!rs)
        return;
    replicas_shutdown(p);
    for (int i = 0; i < rs->n; i++)
        dbs_pool_close(rs->r[i].pool); /* the primary's reference stays */
}

/* Waits until the replica pools have drained or deadline passes (0: do not
 * wait; < 0: no bound); returns the sessions still open on them. */
static int replicas_drain(dbs_pool *p, int64_t deadline_ns, bool forever)
{
    struct dbs__replicas *rs = p->replicas;
    int left = 0;
    if (!rs)
        return 0;
    for (int i = 0; i < rs->n; i++) {
        int ms = 0;
        if (forever) {
            ms = -1;
        } else {
            int64_t rem = (deadline_ns - dbs__now_ns()) / 1000000;
            ms = rem > 0 ? (rem > INT32_MAX ? INT32_MAX : (int)rem) : 0;
        }
        left += dbs_pool_shutdown(rs->r[i].pool, ms);
    }
    return left;
}

/* What replicas_open made, with the primary's memory. */
static void replicas_free(dbs_pool *p)
{
    struct dbs__replicas *rs = p->replicas;
    if (!rs)
        return;
    for (int i = 0; i < rs->n; i++)
        dbs__pool_unref(rs->r[i].pool);
    pthread_cond_destroy(&rs->cv);
    pthread_mutex_destroy(&rs->mu);
    free(rs->r);
    free(rs->threads);
    free(rs->mons);
    free(rs);
    p->replicas = NULL;
}

/* Whether replica i may serve a read-only session now: from the cached
 * measurements only. */
static bool qualifies(const struct dbs__replicas *rs, int i, int bound_ms, int64_t now)
{
    replica *r = &rs->r[i];
    int64_t ok = atomic_load(&r->ok_ns);
    if (!ok || now - ok > stale_ns || !atomic_load(&r->in_recovery))
        return false;
    if (bound_ms > 0) {
        /* The age of what it is known to have: unknown is too old. */
        int64_t safe = atomic_load(&r->safe_ns);
        if (!safe || now - safe > (int64_t)bound_ms * 1000000)
            return false;
    }
    return true;
}

/* The table's slot for user_id: FNV-1a, seeded per pool so that nobody can
 * choose ids that share a slot with another user's, then mixed. */
static _Atomic uint64_t *user_slot(struct dbs__replicas *rs, const char *user_id)
{
    uint64_t h = 14695981039346656037ull ^ rs->user_seed;
    for (const unsigned char *c = (const unsigned char *)user_id; *c; c++)
        h = (h ^ *c) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return &rs->user_pos[h % USER_SLOTS];
}

static void note_commit(dbs_pool *p, const char *user_id, uint64_t pos)
{
    struct dbs__replicas *rs = p->replicas;
    if (!rs || !user_id)
        return;
    _Atomic uint64_t *slot = user_slot(rs, user_id);
    uint64_t cur = atomic_load(slot);
    for (;;) {
        /* A slot marked seen is resolved with the position a sample under
         * way read, maybe before this commit: this commit needs a sample
         * that starts after it, as a lost position does. */
        uint64_t want = cur == MARK_SEEN ? MARK_NEW : pos;
        if (cur >= want || atomic_compare_exchange_weak(slot, &cur, want))
            return;
    }
}

dbs_session *dbs__replica_session(dbs_pool *p, const dbs_context *ctx, uint64_t pos,
                                  dbs_error *err, const char *file, int line, const char *func)
{
    struct dbs__replicas *rs = p->replicas;
    if (ctx && ctx->user_id) {
        uint64_t mine = atomic_load(user_slot(rs, ctx->user_id));
        if (mine > pos)
            pos = mine;
    }
    unsigned start = atomic_fetch_add_explicit(&rs->next, 1, memory_order_relaxed);
    int tried = 0, behind_pos = 0;
    char last[420] = "";
    for (int k = 0; k < rs->n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)rs->n);
        /* now, not when the call began: a connect that failed on the
         * replica before this one may have taken connect_timeout_ms */
        if (!qualifies(rs, i, p->cfg.replica_max_lag_ms, dbs__now_ns()))
            continue;
        /* Measured, so it may have replayed more by now: passed over all
         * the same (the primary has it for sure). */
        int64_t replayed = atomic_load(&rs->r[i].replay_lsn);
        if (pos && (replayed < 0 || (uint64_t)replayed < pos)) {
            behind_pos++;
            continue;
        }
        tried++;
        dbs_session *s = dbs__session_open(rs->r[i].pool, ctx, err, file, line, func);
        /* The wait for a connection (up to acquire_timeout_ms on a busy
         * replica) may have outlasted the bound or the replica's standby
         * role: what held when the wait began proves nothing now. */
        if (s && !qualifies(rs, i, p->cfg.replica_max_lag_ms, dbs__now_ns())) {
            dbs__session_close(s);
            tried--;
            continue;
        }
        if (s)
            return s;
        /* A busy replica is not a down one: its caller waited its bound.
         * A misuse is the caller's, which no other host would change. */
        if (err->code == DBS_ECLOSED || err->code == DBS_ETIMEOUT || err->code == DBS_ENOMEM ||
            err->code == DBS_EMISUSE)
            return NULL;
        snprintf(last, sizeof last, "; %.100s: %.300s", rs->r[i].pool->replica_label, err->message);
    }
    if (tried == 0 && behind_pos > 0) {
        atomic_fetch_add_explicit(&rs->pos_fallbacks, 1, memory_order_relaxed);
        dbs__err(err, DBS_EUNAVAILABLE,
                 "no read replica has replayed WAL position %X/%X yet, which this session "
                 "needs (its own position or its user's last commit)",
                 (unsigned)(pos >> 32), (unsigned)pos);
    } else if (tried == 0) {
        atomic_fetch_add_explicit(&rs->fallbacks, 1, memory_order_relaxed);
        dbs__err(err, DBS_EUNAVAILABLE,
                 "no read replica qualifies (%d configured; each must be reachable, in "
                 "recovery and measured in the last %d ms%s)",
                 rs->n, STALE_PERIODS * PERIOD_MS,
                 p->cfg.replica_max_lag_ms > 0 ? ", within replica_max_lag_ms" : "");
    } else {
        atomic_fetch_add_explicit(&rs->fallbacks, 1, memory_order_relaxed);
        dbs__err(err, DBS_EUNAVAILABLE, "no read replica could serve the session%s", last);
    }
    return NULL;
}

/* For event loops: the index of a replica that may serve a read-only unit
 * now (as dbs__replica_session chooses, round robin, from the cached
 * measurements, no round trip), or -1 with err DBS_EUNAVAILABLE, counted
 * in ro_fallbacks or ro_pos_fallbacks. Any thread; never blocks. */
int dbs__replica_choose(dbs_pool *p, const dbs_context *ctx, uint64_t pos, dbs_error *err)
{
    struct dbs__replicas *rs = p->replicas;
    if (ctx && ctx->user_id) {
        uint64_t mine = atomic_load(user_slot(rs, ctx->user_id));
        if (mine > pos)
            pos = mine;
    }
    int64_t now = dbs__now_ns();
    unsigned start = atomic_fetch_add_explicit(&rs->next, 1, memory_order_relaxed);
    int behind_pos = 0;
    for (int k = 0; k < rs->n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)rs->n);
        if (!qualifies(rs, i, p->cfg.replica_max_lag_ms, now))
            continue;
        int64_t replayed = atomic_load(&rs->r[i].replay_lsn);
        if (pos && (replayed < 0 || (uint64_t)replayed < pos)) {
            behind_pos++;
            continue;
        }
        if (dbs__pool_closed(rs->r[i].pool))
            continue;
        return i;
    }
    if (behind_pos > 0) {
        atomic_fetch_add_explicit(&rs->pos_fallbacks, 1, memory_order_relaxed);
        dbs__err(err, DBS_EUNAVAILABLE,
                 "no read replica has replayed WAL position %X/%X yet, which this unit "
                 "needs (its own position or its user's last commit)",
                 (unsigned)(pos >> 32), (unsigned)pos);
    } else {
        atomic_fetch_add_explicit(&rs->fallbacks, 1, memory_order_relaxed);
        dbs__err(err, DBS_EUNAVAILABLE,
                 "no read replica qualifies (%d configured; each must be reachable, in "
                 "recovery and measured in the last %d ms%s)",
                 rs->n, STALE_PERIODS * PERIOD_MS,
                 p->cfg.replica_max_lag_ms > 0 ? ", within replica_max_lag_ms" : "");
    }
    return -1;
}

/* For event loops: whether replica i, chosen by dbs__replica_choose when
 * a unit was queued, may still serve it now that the unit starts (a wait
 * for a connection may have outlasted the bound or the standby role), as
 * dbs__replica_session checks once it holds the connection. Any thread;
 * never blocks. */
bool dbs__replica_still_ok(dbs_pool *p, int i)
{
    return qualifies(p->replicas, i, p->cfg.replica_max_lag_ms, dbs__now_ns());
}

int dbs__replicas_count(dbs_pool *p)
{
    return p->replicas ? p->replicas->n : 0;
}

dbs_pool *dbs__replica_pool(dbs_pool *p, int i)
{
    return p->replicas->r[i].pool;
}

int64_t dbs__replica_lag_ms(dbs_pool *p, int i)
{
    struct dbs__replicas *rs = p->replicas;
    replica *r = &rs->r[i];
    int64_t now = dbs__now_ns();
    int64_t ok = atomic_load(&r->ok_ns), pok = atomic_load(&rs->primary_ok_ns);
    if (!ok || now - ok > stale_ns || !pok || now - pok > stale_ns ||
        !atomic_load(&r->in_recovery))
        return -1;
    int64_t since = atomic_load(&r->behind_since_ns);
    return since ? (now - since) / 1000000 : 0;
}

void dbs__replicas_stats(dbs_pool *p, dbs_stats *out)
{
    struct dbs__replicas *rs = p->replicas;
    out->replica_lag_ms = -1;
    if (!rs || rs->n == 0)
        return;
    out->ro_fallbacks = atomic_load_explicit(&rs->fallbacks, memory_order_relaxed);
    out->ro_pos_fallbacks = atomic_load_explicit(&rs->pos_fallbacks, memory_order_relaxed);
    int64_t lag = 0;
    bool any = false; /* a host that is a replica, measured or not */
    for (int i = 0; i < rs->n; i++) {
        dbs_stats st;
        dbs__pool_snapshot(rs->r[i].pool, &st, NULL);
        out->replica_size += st.size;
        out->replica_in_use += st.in_use;
        int64_t l = dbs__replica_lag_ms(p, i);
        replica *r = &rs->r[i];
        int64_t ok = atomic_load(&r->ok_ns);
        if (l < 0 && ok && dbs__now_ns() - ok <= stale_ns && !atomic_load(&r->in_recovery))
            continue; /* measured, and not a replica: a primary listed too */
        any = true;
        if (l < 0 || lag < 0)
            lag = -1;
        else if (l > lag)
            lag = l;
    }
    /* every host left out: no replica, so no lag to report (0 would
     * read as a replica fully caught up) */
    out->replica_lag_ms = any ? lag : -1;
}

/* ---- read-only sessions ---- */

/* A read-only session: on a replica that qualifies, else on the primary
 * (or refused, per replica_fallback); then the backend's read-only switch,
 * so that read-only holds by construction on every backend. */
static dbs_session *open_ro(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                            dbs_error *err, const char *file, int line, const char *func)
{
    if (!pool || pool->magic != DBS__POOL_MAGIC) {
        dbs__err(err, DBS_EMISUSE, "dbs_session_open_ro: not an open pool (NULL or freed)");
        return NULL;
    }
    if (dbs__fork_check(pool, "dbs_session_open_ro", err) != DBS_OK)
        return NULL;
    /* Before any replica is tried: each would refuse it, and the caller
     * would see its own mistake as no replica able to serve. */
    if (dbs__context_check(ctx, "dbs_session_open_ro", err) != DBS_OK)
        return NULL;
    if (!pool->drv->set_read_only) {
        dbs__err(err, DBS_ECONFIG,
                 "dbs_session_open_ro: the %s backend cannot enforce read-only sessions; "
                 "use dbs_session_open", pool->drv->name);
        dbs__errors_note(pool, DBS_ECONFIG, NULL);
        return NULL;
    }
    dbs_session *s = NULL;
    /* One acquire bound for the call: a replica's connection waited for
     * and then passed over (past the lag bound once in hand), and the
     * primary after it, share acquire_timeout_ms rather than each getting
     * it again. A worker's unit has set its own deadline already. */
    const int64_t own = dbs__acquire_deadline_ns;
    if (pool->replicas && own == 0)
        dbs__acquire_deadline_ns = dbs__now_ns() + dbs__ms_ns(pool->cfg.acquire_timeout_ms);
    if (pool->replicas && !dbs__pool_closed(pool)) {
        s = dbs__replica_session(pool, ctx, pos, err, file, line, func);
        if (!s && (err->code != DBS_EUNAVAILABLE || !pool->cfg.replica_fallback)) {
            dbs__acquire_deadline_ns = own;
            /* a replica pool's own acquire failure is counted there; no
             * replica to serve it is this pool's */
            if (err->code == DBS_EUNAVAILABLE)
                dbs__errors_note(pool, DBS_EUNAVAILABLE, NULL);
            return NULL;
        }
    }
    if (!s)
        s = dbs__session_open(pool, ctx, err, file, line, func);
    dbs__acquire_deadline_ns = own;
    if (!s)
        return NULL;
    s->touched = true;
    int rc = s->pool->drv->set_read_only(s->conn->impl, 1, err);
    if (rc != DBS_OK) {
        dbs__errors_note(s->pool, rc, err->sqlstate);
        dbs__session_broke(s, rc, err);
        dbs__session_close(s);
        err->code = rc;
        return NULL;
    }
    atomic_store_explicit(&s->read_only, true, memory_order_relaxed);
    err->code = DBS_OK;
    return s;
}

dbs_session *dbs_session_open_ro_at(dbs_pool *pool, const dbs_context *ctx, dbs_error *err,
                                    const char *file, int line, const char *func)
{
    DBS__IN_LIB(cancel_old);
    dbs_error local;
    return open_ro(pool, ctx, 0, err ? err : &local, file, line, func);
}

dbs_session *dbs_session_open_ro_after_at(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                                          dbs_error *err, const char *file, int line,
                                          const char *func)
{
    DBS__IN_LIB(cancel_old);
    dbs_error local;
    return open_ro(pool, ctx, pos, err ? err : &local, file, line, func);
}


int(dbs_transact_ro)(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work, void *arg,
                     dbs_error *err)
{
    return dbs__transact(pool, ctx, work, arg, err, "?", 0, "dbs_transact_ro", open_ro, 0, NULL);
}

int dbs_transact_ro_at(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work, void *arg,
                       dbs_error *err, const char *file, int line, const char *func)
{
    return dbs__transact(pool, ctx, work, arg, err, file, line, func, open_ro, 0, NULL);
}

int(dbs_transact_ro_after)(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                           dbs_work_fn work, void *arg, dbs_error *err)
{
    return dbs__transact(pool, ctx, work, arg, err, "?", 0, "dbs_transact_ro_after", open_ro, pos, NULL);
}

int dbs_transact_ro_after_at(dbs_pool *pool, const dbs_context *ctx, uint64_t pos,
                             dbs_work_fn work, void *arg, dbs_error *err, const char *file,
                             int line, const char *func)
{
    return dbs__transact(pool, ctx, work, arg, err, file, line, func, open_ro, pos, NULL);
}

/* ---- the pool as its users see it: the primary and its replicas ---- */

/* One pool with its housekeeper (a NONE pool's keeps no connection, but
 * reports its leaks and watches its file). */
static dbs_pool *open_one(const dbs_config *cfg, dbs_error *err)
{
    dbs_pool *p = dbs__pool_open(cfg, err);
    if (p && dbs__housekeeper_start(p, err) != DBS_OK) {
        dbs_pool_close(p);
        return NULL;
    }
    return p;
}

dbs_pool *dbs_pool_open(const dbs_config *cfg, dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    dbs_pool *p = open_one(cfg, err);
    if (!p)
        return NULL;
    if (cfg->replica_url && *cfg->replica_url) {
        dbs_error rerr;
        if (replicas_open(p, &rerr) != DBS_OK) {
            if (err)
                *err = rerr;
            dbs_pool_close(p);
            return NULL;
        }
        p->cfg.replica_url = NULL; /* the caller's: used only here */
    }
    if (err)
        dbs__err(err, DBS_OK, "ok");
    return p;
}

/* The first call of dbs_pool_shutdown (or of dbs_pool_close without it):
 * no new session from here on, waiters woken, idle and parked connections
 * closed, the housekeeper and the lag monitor stopped, the replicas shut
 * down. Every call returns only once all of that is over: the workers,
 * the housekeeper, the monitors and the replicas' threads joined. */
static void begin_shutdown(dbs_pool *p)
{
    bool first = dbs__pool_begin_shutdown(p);
    /* The event loops' worker threads: their sessions fail on the closed
     * pool, their statements are interrupted; joined here, so that none
     * outlives the pool. No worker starts once the pool is closed
     * (workers.c), and the hook is set before that, under p->mu: read
     * after dbs__pool_begin_shutdown, it is the one to call. */
    if (p->workers_stop)
        p->workers_stop(p);
    /* A later call (dbs_pool_shutdown on two threads, or then
     * dbs_pool_close) waits for the joins another thread has under way:
     * its caller may go on to free the pool. */
    if (!first) {
        dbs__pool_wait_stopped(p);
        return;
    }
    dbs__housekeeper_stop(p);
    replicas_shutdown(p);
    dbs__pool_set_stopped(p);
}

/* In a child after fork(): the pool and its replicas let go of the
 * parent's connections without a word and start their threads again. */
static int after_fork(dbs_pool *p, dbs_error *err)
{
    if (p->fork_gen == dbs__fork_gen())
        return DBS_OK;
    int rc = pool_after_fork(p, err);
    if (rc == DBS_OK)
        rc = replicas_after_fork(p, err);
    return rc;
}

int dbs_pool_after_fork_child(dbs_pool *pool, dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    if (!pool || pool->magic != DBS__POOL_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_pool_after_fork_child: not an open pool");
    int rc = after_fork(pool, err);
    if (rc == DBS_OK && err)
        dbs__err(err, DBS_OK, "ok");
    return rc;
}

/* On one of dbscope's own threads (a housekeeper, a replica monitor, an
 * event loop's worker: dbs__thread_stop is set only there), the stop joins
 * the very thread asking for it, or frees the pool under a thread that
 * returns into it; the callback that asked (on_event, a unit's work) is
 * refused instead. */
static bool on_own_thread(const char *fn)
{
    if (!dbs__thread_stop)
        return false;
    dbs__log_line("dbscope: %s refused: called on one of dbscope's own threads (from "
                  "on_event or a unit's work); call it from a thread of the program's",
                  fn);
    return true;
}

int dbs_pool_shutdown(dbs_pool *p, int timeout_ms)
{
    DBS__NO_CANCEL(cancel_old);
    if (!p || p->magic != DBS__POOL_MAGIC || on_own_thread("dbs_pool_shutdown"))
        return DBS_EMISUSE;
    /* In a child, first: the after-fork step sets the references anew,
     * which would drop the one taken below. */
    (void)after_fork(p, NULL); /* as dbs_pool_close */
    /* A dbs_pool_close on another thread may drop the owner's reference
     * while this call drains, and the last session's close then frees
     * the pool: this call's own keeps it (and the replicas' pools, which
     * it holds) until the call returns. May free it here. */
    dbs__pool_ref(p);
    const int64_t deadline = dbs__now_ns() + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    begin_shutdown(p);
    int left = dbs__pool_drain(p, deadline, timeout_ms);
    left += replicas_drain(p, deadline, timeout_ms < 0);
    dbs__pool_unref(p);
    return left;
}

void dbs_pool_close(dbs_pool *p)
{
    DBS__NO_CANCEL(cancel_old);
    if (!p || p->magic != DBS__POOL_MAGIC || on_own_thread("dbs_pool_close"))
        return;
    /* in a child after fork(): the parent's connections are let go of
     * without a word, never closed as the pool's own */
    (void)after_fork(p, NULL);
    begin_shutdown(p);
    if (!dbs__pool_close_once(p))
        return;
    replicas_close(p);
    /* after the shutdown, whose interrupts of the loops' statements send
     * cancel requests */
    dbs__pool_stop_target(p);
    /* Sessions still out now were never going to be closed in time. */
    dbs__leaks_report(p, true, "still open at dbs_pool_close");
    dbs__pool_unref(p); /* the owner's reference: may free p */
}
