/*
 * PRIVATE to the pool's files, by layer from the bottom:
 *   respool.c, respool_wait.c  the generic resource pool: slots, idle list,
 *                              parking, waiters (respool.h);
 *   breaker.c                  the circuit breaker, a pure state machine;
 *   conn.c                     the connection layer: driver calls, checks,
 *                              the breaker, connection counts;
 *   shard.c                    the session layer's shards: sessions listed,
 *                              counted and drained;
 *   pool.c                     acquire and release (the policy that joins
 *                              them), open, shutdown and close;
 *   housekeeper.c              background upkeep.
 *
 * The locks, what they guard and their order are described in internal.h;
 * [mu] marks a function called with p->mu held, [shard] one called with the
 * shard's lock held.
 */
#ifndef DBS_POOL_INT_H
#define DBS_POOL_INT_H

#include "internal.h"

#include <stdlib.h>

static inline int64_t dbs__ms_ns(int ms)
{
    return (int64_t)ms * 1000000;
}

/* ---- shards (shard.c) ---- */

/* [shard] */
static inline void dbs__session_link(dbs__shard *sh, dbs_session *s)
{
    s->prev = NULL;
    s->next = sh->sessions;
    if (sh->sessions)
        sh->sessions->prev = s;
    sh->sessions = s;
}

/* [shard] */
static inline void dbs__session_unlink(dbs__shard *sh, dbs_session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else if (sh->sessions == s)
        sh->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* The shard's histograms, made on first use. NULL if out of memory: the
 * caller records in the pool's own under p->mu instead. [shard] */
static inline dbs__shard_hists *dbs__shard_hists_of(dbs__shard *sh)
{
    dbs__shard_hists *h = sh->hists;
    if (!h) {
        h = calloc(1, sizeof *h);
        sh->hists = h; /* freed by pool_free */
    }
    return h;
}

/* This thread's shard of p. */
dbs__shard *dbs__shard_of(dbs_pool *p);
/* This thread's ordinal (non-zero once it has called dbs__shard_of): its
 * affinity token in the resource pool. More than one thread may share a
 * shard. */
unsigned dbs__thread_ordinal(void);
/* A session (or one being opened) no longer counts in sh; after a
 * shutdown, tells dbs_pool_shutdown. Returns true when it dropped the last
 * pool reference the shutdown handed it: the caller then unrefs p. */
bool dbs__shard_leave(dbs_pool *p, dbs__shard *sh);
/* At shutdown: no shard counts a new session from now on; the sessions
 * and holds still counted move into p->n_draining and p->refs. [mu] */
void dbs__shards_close(dbs_pool *p);

/* ---- connections (conn.c) ---- */

static inline bool dbs__conn_expired(const dbs__conn *c, int64_t now)
{
    return c->item.expires_ns != 0 && now >= c->item.expires_ns;
}

/* Which connections to ping before hand-out: those idle past the window,
 * and any idle since before a connection was last found broken. */
static inline bool dbs__needs_validation(dbs_pool *p, const dbs__conn *c, int64_t now)
{
    if (!p->cfg.pre_ping)
        return false;
    int64_t idle_since = c->item.idle_since_ns;
    return now - idle_since >= dbs__ms_ns(p->cfg.validation_window_ms) ||
           idle_since < atomic_load_explicit(&p->validate_before_ns, memory_order_relaxed);
}

/* Opens a connection through the driver, outside any lock; NULL with err
 * filled (password scrubbed). Not yet counted: see dbs__conn_settle. */
dbs__conn *dbs__conn_open(dbs_pool *p, dbs_error *err);
/* Closes and frees c, outside any lock. Its accounting is dbs__conn_gone. */
void dbs__conn_close(dbs_pool *p, dbs__conn *c);
/* Whether the driver knows c lost its server. */
static inline bool dbs__conn_broken(dbs_pool *p, dbs__conn *c)
{
    return p->drv->is_broken(c->impl);
}
/* A statement on c in autocommit (no BEGIN), outside any lock: its rows,
 * or NULL with err. For connections of the pool's own (the lag monitor's),
 * never a session's. */
dbs_rows *dbs__conn_query(dbs_pool *p, dbs__conn *c, const char *sql, dbs_error *err);
/* One round trip proving c works, outside any lock. */
int dbs__conn_validate(dbs_pool *p, dbs__conn *c, dbs_error *err);
/* Whether a check-out needs a look at c's socket (dbs__conn_check) before
 * the hand-out: pre_ping is on and the backend has a socket. */
static inline bool dbs__peek_wanted(const dbs_pool *p)
{
    return p->cfg.pre_ping && p->drv->peek;
}
/* The check before a hand-out, outside any lock (nothing when pre_ping is
 * off): a connection known broken fails; else the backend looks at its
 * socket without a round trip (peek), so one the server closed while it
 * was idle is never handed out, however recently used; a ping follows when
 * ping is set (idle past validation_window_ms, see dbs__needs_validation)
 * or the socket holds bytes nobody asked for. DBS_OK or < 0 with err. */
int dbs__conn_check(dbs_pool *p, dbs__conn *c, bool ping, dbs_error *err);
/* After a check of c failed: the failure of a release reset that its
 * session could not see (PostgreSQL's posted reset, which the check
 * read), in *out (out->code < 0), else out->code = 0. It is the closed
 * session's failure, counted once as a failed reset at close is, by the
 * caller's layer (dbs_pool_errors belongs above this one). */
static inline void dbs__conn_release_failure(dbs_pool *p, dbs__conn *c, dbs_error *out)
{
    out->code = 0;
    if (c && p->drv->reset_failure)
        (void)p->drv->reset_failure(c->impl, out);
}
/* Every connection idle since before now is validated before its next
 * hand-out: one was found broken, or what the pool connects to changed. */
void dbs__conn_suspect(dbs_pool *p, int64_t now);

/* Why a connection left the pool: each has its counter in dbs_stats. */
enum dbs__gone {
    DBS__GONE_LIFETIME, DBS__GONE_IDLE, DBS__GONE_BROKEN, DBS__GONE_OVERFLOW,
    DBS__GONE_POOL, DBS__GONE_NONE_MODE,
    DBS__GONE_DIRTY /* working, but what a session left could not be undone */
};
/* The one place a connection's end is counted (the resource pool has
 * already let it go): closed, by reason; a broken one makes every
 * connection idle since before now be validated before hand-out. n
 * connections at once. Called once they are closed (dbs__conn_close has
 * returned): their slots are passed on to waiters here, so that the pool
 * never has more than its ceiling on the server. Takes p->mu, and must be
 * called with no lock held (waiters served wake on this thread). */
void dbs__conn_gone(dbs_pool *p, enum dbs__gone why, int n, int64_t now);
/* Whether a connect may go ahead, for a caller holding a reserved slot:
 * while the circuit is open only one probe at a time, once its back-off
 * has passed. On refusal the slot is given back and the caller gets
 * DBS_EUNAVAILABLE (counted in unavailable when count is set). Takes
 * p->mu. */
int dbs__conn_admit(dbs_pool *p, bool count, dbs_error *err);
/* The one place a connect attempt made on a reserved slot is settled: the
 * outcome noted by the circuit breaker (a configuration error, DBS_ECONFIG,
 * is not an outage: not noted); a failure counted and its slot given back;
 * a success counted and the connection made open in the resource pool, in
 * use by the caller (who announces it, dbs__connect_announce, before anyone
 * else can take it: a connection handed on may be closed and freed by its
 * next user at once).
 * code: the failure's dbs_code (when c is NULL). Returns DBS_OK, the
 * failure's code, or DBS_ECLOSED when the pool was shut down meanwhile:
 * the caller then closes c. *ev: the breaker's event for
 * dbs__connect_announce, or -1. */
int dbs__conn_settle(dbs_pool *p, dbs__conn *c, int code, int64_t now, int *ev);
/* The events of a settled connect: connect or connect_failed (err's code
 * and message), then the breaker's ev if any. s and c may be NULL. [no
 * lock] */
void dbs__connect_announce(dbs_pool *p, const dbs_session *s, const dbs__conn *c, int ev,
                           const dbs_error *err);

#endif /* DBS_POOL_INT_H */
