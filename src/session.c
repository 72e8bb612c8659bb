/* The unit of work: a session holds one connection for one thread, begins a
 * transaction on its first statement, commits or rolls back, and always gives
 * its connection back. dbs_transact wraps that with retries. */
#include "internal.h"
#include "session_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if none:
 * what PostgreSQL's and MariaDB's utf8mb4 accept, so no overlong form, no
 * surrogate, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t k;
    unsigned lo = 0x80, hi = 0xbf;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        k = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        k = 3;
        if (p[0] == 0xe0)
            lo = 0xa0;
        else if (p[0] == 0xed)
            hi = 0x9f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        k = 4;
        if (p[0] == 0xf0)
            lo = 0x90;
        else if (p[0] == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < k || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return k;
}

int dbs__context_check(const dbs_context *ctx, const char *fn, dbs_error *err)
{
    if (!ctx)
        return DBS_OK;
    const char *src[3] = {ctx->request_id, ctx->user_id, ctx->tenant_id};
    static const char *const name[3] = {"request_id", "user_id", "tenant_id"};
    for (int i = 0; i < 3; i++) {
        if (!src[i])
            continue;
        /* strnlen: a field far past the bound is not read to its end */
        size_t n = strnlen(src[i], (size_t)DBS_CONTEXT_MAX + 1);
        if (n > DBS_CONTEXT_MAX)
            return dbs__err(err, DBS_EMISUSE,
                            "%s: ctx->%s is longer than DBS_CONTEXT_MAX (%d bytes): "
                            "pass an identifier, not a payload",
                            fn, name[i], DBS_CONTEXT_MAX);
        const unsigned char *p = (const unsigned char *)src[i];
        for (size_t at = 0; at < n;) {
            size_t k = utf8_seq(p + at, n - at);
            if (k == 0)
                return dbs__err(err, DBS_EMISUSE,
                                "%s: ctx->%s is not valid UTF-8 (byte %zu): the "
                                "database would refuse or alter it",
                                fn, name[i], at);
            at += k;
        }
    }
    return DBS_OK;
}

/* The context is copied into one allocation so the caller's strings may die
 * right after open, and the copy can never change under the session. */
static int copy_context(dbs_session *s, const dbs_context *ctx)
{
    if (!ctx)
        return DBS_OK;
    const char *src[3] = {ctx->request_id, ctx->user_id, ctx->tenant_id};
    size_t len[3], total = 0;
    for (int i = 0; i < 3; i++) {
        len[i] = src[i] ? strlen(src[i]) + 1 : 0;
        total += len[i];
    }
    if (total == 0)
        return DBS_OK;
    if (total > s->ctx_cap || !s->ctx_buf) {
        char *buf = realloc(s->ctx_buf, total);
        if (!buf)
            return DBS_ENOMEM;
        s->ctx_buf = buf;
        s->ctx_cap = total;
    }
    char *w = s->ctx_buf;
    const char **dst[3] = {&s->ctx.request_id, &s->ctx.user_id, &s->ctx.tenant_id};
    for (int i = 0; i < 3; i++) {
        if (!src[i])
            continue;
        memcpy(w, src[i], len[i]);
        *dst[i] = w;
        w += len[i];
    }
    return DBS_OK;
}

/* Closed sessions' memory is kept on a per-thread list and reused by the
 * thread's next opens, never returned to malloc while the thread lives. So
 * no session handle of a living thread ever points at freed memory: a use
 * after close finds DBS__DEAD_MAGIC and is refused with DBS_EMISUSE, until a
 * later dbs_session_open of the same thread reuses that memory (the list is
 * LIFO, so the handle closed last is the first reused). Steady state costs
 * no allocation. The list holds at most as many sessions as the thread ever
 * had open at once, and is freed at thread exit. */
static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;
static _Thread_local dbs_session *spare; /* linked through next */
/* The key's value only arms its destructor (thread_exit) at thread exit,
 * once a thread; the lists themselves live in thread-local variables, so
 * opening and closing a session costs no call. */
static _Thread_local bool spare_armed;
/* The sessions open on this thread, newest first, linked through t_next:
 * the thread's exit ends them. */
static _Thread_local dbs_session *open_list;

static void thread_exit(void *unused);

static void spare_init(void)
{
    pthread_key_create(&spare_key, thread_exit);
}

/* Arms thread_exit for this thread; false if it cannot be (no key). */
static bool arm(void)
{
    if (spare_armed)
        return true;
    pthread_once(&spare_once, spare_init);
    if (pthread_setspecific(spare_key, &spare_armed) != 0)
        return false;
    spare_armed = true;
    return true;
}

/* The dbs_transact attempt (1, 2, ...) whose session this thread is
 * opening right now, 0 otherwise: the session's events carry it. */
static _Thread_local int transact_attempt;

static dbs_session *session_alloc(void)
{
    dbs_session *s = spare;
    if (s) {
        /* Field by field: cheaper than clearing the whole struct, and
         * keeps the context buffer. dbs__session_open sets the rest. */
        spare = s->next;
        s->conn = NULL;
        s->in_tx = false;
        atomic_store_explicit(&s->tx_open, 0, memory_order_relaxed);
        s->broken = false;
        s->broke.code = 0;
        s->hold = false;
        s->held.code = 0;
        s->prior.code = 0;
        s->touched = false;
        s->native_taken = false;
        atomic_store_explicit(&s->read_only, false, memory_order_relaxed);
        s->committed = false;
        s->attempt = 0;
        s->commit_pos = 0;
        s->ctx = (dbs_context){NULL, NULL, NULL};
        s->opened_ns = 0;
        s->leak_reported = false;
        s->close_reported = false;
        s->rows = NULL;
        s->shard = NULL;
        s->prev = s->next = NULL;
        s->txo = (dbs_tx_options){0};
        s->sp_depth = 0;
        s->doom.code = 0;
        s->t_prev = s->t_next = NULL;
        s->unit_pool = NULL;
        s->exit_closed = false; /* never set on a spare: such are kept */
        return s;
    }
    return calloc(1, sizeof *s);
}

static void session_free(dbs_session *s)
{
    s->magic = DBS__DEAD_MAGIC;
    if (!arm()) {
        /* no destructor to free it at thread exit: do not keep it */
        free(s->ctx_buf);
        free(s);
        return;
    }
    s->prev = NULL;
    s->next = spare;
    spare = s;
}

/* s, just opened, joins the thread's open sessions. Without the
 * destructor (no key could be had) its thread's exit leaves it open, as a
 * thread that never ends would. */
static void track(dbs_session *s)
{
    (void)arm();
    s->t_prev = NULL;
    s->t_next = open_list;
    if (open_list)
        open_list->t_prev = s;
    open_list = s;
}

static void untrack(dbs_session *s)
{
    if (s->t_prev)
        s->t_prev->t_next = s->t_next;
    else if (open_list == s)
        open_list = s->t_next;
    if (s->t_next)
        s->t_next->t_prev = s->t_prev;
    s->t_prev = s->t_next = NULL;
}

static void session_close(dbs_session *s);

dbs_session *dbs_session_open_at(dbs_pool *pool, const dbs_context *ctx, dbs_error *err,
                                 const char *file, int line, const char *func)
{
    DBS__IN_LIB(cancel_old);
    return dbs__session_open(pool, ctx, err, file, line, func);
}

/* The body lives here, without the public malloc attribute, so the analyzer
 * checks dbscope's own callers by their code rather than by the attribute. */
dbs_session *dbs__session_open(dbs_pool *pool, const dbs_context *ctx, dbs_error *err,
                               const char *file, int line, const char *func)
{
    dbs_error local;
    if (!err)
        err = &local;
    const bool uncounted = dbs__acquire_uncounted;
    dbs__acquire_uncounted = false;
    if (!pool || pool->magic != DBS__POOL_MAGIC) {
        dbs__err(err, DBS_EMISUSE, "dbs_session_open: not an open pool (NULL or freed)");
        return NULL;
    }
    if (dbs__fork_check(pool, "dbs_session_open", err) != DBS_OK)
        return NULL;
    if (dbs__pool_closed(pool)) {
        dbs__err(err, DBS_ECLOSED, "dbs_session_open: the pool is closed");
        if (!uncounted)
            dbs__errors_note(pool, DBS_ECLOSED, NULL); /* a failed acquire, as below */
        return NULL;
    }
    if (dbs__context_check(ctx, "dbs_session_open", err) != DBS_OK)
        return NULL;
    dbs_session *s = session_alloc();
    if (!s || copy_context(s, ctx) != DBS_OK) {
        if (s)
            session_free(s);
        dbs__err(err, DBS_ENOMEM, "out of memory opening a session");
        dbs__errors_note(pool, DBS_ENOMEM, NULL);
        return NULL;
    }
    s->magic = DBS__SESSION_MAGIC;
    s->owner_id = dbs__thread_id();
    s->owner = pthread_self();
    s->pool = pool;
    s->file = file;
    s->line = line;
    s->func = func;
    s->attempt = transact_attempt;
    s->fork_gen = pool->fork_gen;
    s->uncounted = uncounted;
    int rc = dbs__pool_acquire(pool, s, err);
    /* not this session's failure, nor its acquire's: the last user's */
    if (s->prior.code < 0)
        dbs__errors_note(pool, s->prior.code, s->prior.sqlstate);
    if (rc != DBS_OK) {
        /* DBS_ECANCELED: a loop's unit the program called off while its
         * worker waited, no failure (one called off while it waited on
         * the loop counts nowhere either) */
        if (rc != DBS_ECANCELED && !uncounted)
            dbs__errors_note(pool, rc, err->sqlstate);
        session_free(s);
        return NULL;
    }
    track(s);
    err->code = DBS_OK;
    return s;
}

void dbs__session_broke(dbs_session *s, int code, const dbs_error *err)
{
    if (!s->broke.code) {
        s->broke.code = code;
        snprintf(s->broke.message, sizeof s->broke.message, "%s",
                 err && err->code == code ? err->message : dbs_strerror(code));
    }
    s->broken = true;
}

int dbs__session_failed(dbs_session *s, int code, const dbs_error *err)
{
    /* A posted reset's failure that this call met first (no check looked
     * at the connection before the hand-out: pre_ping 0) is this call's
     * failure: counted once, here, not again by a later check. */
    if (s->pool->drv->reset_failure)
        (void)s->pool->drv->reset_failure(s->conn->impl, NULL);
    /* what the backend reported for this failure, err or no err */
    if (s->hold && s->held.code >= 0) {
        const char *st = dbs__thread_sqlstate();
        s->held.code = code;
        snprintf(s->held.sqlstate, sizeof s->held.sqlstate, "%s", st ? st : "");
    } else {
        dbs__errors_note(s->pool, code, dbs__thread_sqlstate());
    }
    if (code == DBS_ECONNECT || code == DBS_ECOMMIT_UNKNOWN || code == DBS_ENOMEM ||
        s->pool->drv->is_broken(s->conn->impl))
        dbs__session_broke(s, code, err);
    return code;
}

static void set_tx(dbs_session *s, bool open)
{
    s->in_tx = open;
    atomic_store_explicit(&s->tx_open, open, memory_order_relaxed);
}

int dbs__session_autobegin(dbs_session *s, dbs_error *err)
{
    if (s->in_tx) {
        if (s->doom.code == 0)
            return DBS_OK;
        /* A nested unit doomed the transaction (dbs_session_transact):
         * later statements get its error until the transaction ends. */
        if (err)
            *err = s->doom;
        return s->doom.code;
    }
    int rc = s->pool->drv->begin(s->conn->impl, &s->ctx, err);
    if (rc != DBS_OK)
        return dbs__session_failed(s, rc, err);
    set_tx(s, true);
    return DBS_OK;
}

/* dbs_commit, dbs_rollback and dbs_transact's final COMMIT: the same checks
 * and bookkeeping around the backend's commit or rollback. last: the session
 * closes right after, so the backend may do the release reset in the
 * COMMIT's own round trip. */
static int end_tx(dbs_session *s, bool commit, bool last, dbs_error *err)
{
    int rc = dbs__session_check(s, err);
    if (rc != DBS_OK)
        return rc;
    if (s->in_tx) {
        set_tx(s, false);
        void *c = s->conn->impl;
        const dbs__driver *drv = s->pool->drv;
        s->tx_seq++;
        s->sp_depth = 0;
        if (s->doom.code != 0) {
            /* A nested unit doomed the transaction: nothing of it may
             * commit. Rolled back, and the doom's error returned, so that
             * dbs_transact runs the whole unit again when it is transient. */
            dbs_error doom = s->doom;
            s->doom.code = 0;
            rc = drv->rollback(c, err);
            if (rc != DBS_OK)
                return dbs__session_failed(s, rc, err);
            if (!commit) {
                if (err)
                    err->code = DBS_OK;
                return DBS_OK;
            }
            if (err) {
                *err = doom;
                char m[sizeof err->message];
                snprintf(m, sizeof m, "%s", doom.message);
                dbs__err(err, doom.code,
                         "COMMIT refused, the transaction was rolled back: a nested unit "
                         "failed with: %s", m);
                dbs__err_sqlstate(err, doom.sqlstate);
            }
            return doom.code;
        }
        if (!commit)
            rc = drv->rollback(c, err);
        else if (last && drv->commit_release)
            rc = drv->commit_release(c, err);
        else
            rc = drv->commit(c, err);
        /* Only a refusal from the database (serialization failure, a
         * deferred constraint, a transaction that had already failed)
         * proves a COMMIT committed nothing; anything else may have. */
        bool maybe = commit && (rc == DBS_OK || rc == DBS_ECOMMIT_UNKNOWN ||
                                rc == DBS_ECONNECT || rc == DBS_ESTMT_TIMEOUT);
        if (maybe)
            s->committed = true;
        /* A COMMIT whose outcome is unknown may have written, and its
         * user is about to read back to learn which: the user's reads
         * need a position that covers it, as when a commit's position
         * did not come back (the routing layer waits for the primary's
         * next sample; a replica that lacks it would say "not there"). */
        if (maybe && rc != DBS_OK && s->pool->on_commit &&
            !atomic_load_explicit(&s->read_only, memory_order_relaxed))
            s->pool->on_commit(s->pool, s->ctx.user_id, UINT64_MAX);
        if (rc != DBS_OK)
            return dbs__session_failed(s, rc, err);
        /* The reset that rode with the COMMIT failed: the commit stands,
         * but the session met a failure, counted as a close's is, and it
         * is what its connection's invalidate event says. */
        dbs_error rerr;
        int rrc = last && drv->commit_release && drv->reset_failure
                      ? drv->reset_failure(c, &rerr)
                      : DBS_OK;
        if (rrc != DBS_OK) {
            if (!s->uncounted)
                dbs__errors_note(s->pool, rrc, rerr.sqlstate);
            dbs__session_broke(s, rrc, &rerr);
        }
        if (commit && drv->commit_pos) {
            uint64_t pos = drv->commit_pos(c);
            if (pos) {
                s->commit_pos = pos;
                if (s->pool->on_commit) /* the routing layer's */
                    s->pool->on_commit(s->pool, s->ctx.user_id, pos);
            }
        }
    }
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

uint64_t dbs_session_commit_pos(dbs_session *s)
{
    if (!s || s->magic != DBS__SESSION_MAGIC || s->owner_id != dbs__thread_id())
        return 0;
    return s->commit_pos;
}

int dbs_commit(dbs_session *s, dbs_error *err)
{
    DBS__IN_LIB(cancel_old);
    return end_tx(s, true, false, err);
}

int dbs_rollback(dbs_session *s, dbs_error *err)
{
    DBS__IN_LIB(cancel_old);
    return end_tx(s, false, false, err);
}

/* The units running on this thread, innermost first: a dbs_transact
 * called from a unit's work for the same pool joins it. */
typedef struct unit_frame {
    dbs_pool *pool;          /* the pool the unit was called for */
    dbs_session *s;          /* NULL once the work returned */
    bool ro;
    struct unit_frame *up;
} unit_frame;
static _Thread_local unit_frame *unit_top;

/* Whether s is the session of a dbs_transact running on this thread: that
 * call commits and closes it; its work must not. */
static bool unit_session(const dbs_session *s)
{
    for (const unit_frame *f = unit_top; f; f = f->up)
        if (f->s == s)
            return true;
    return false;
}

static void session_close(dbs_session *s)
{
    if (!s || s->magic != DBS__SESSION_MAGIC)
        return; /* NULL, or closed twice: nothing left to do */
    if (s->owner_id != dbs__thread_id()) {
        dbs__log_line("dbscope: dbs_session_close refused: session opened at %s:%d (%s) "
                      "belongs to another thread",
                      s->file ? s->file : "?", s->line, s->func ? s->func : "?");
        return;
    }
    if (unit_session(s)) {
        dbs__log_line("dbscope: dbs_session_close refused: the session opened at %s:%d (%s) "
                      "is dbs_transact's, which commits and closes it when the unit's "
                      "work returns",
                      s->file ? s->file : "?", s->line, s->func ? s->func : "?");
        return;
    }
    dbs_pool *p = s->pool;
    untrack(s);
    /* the count as is: s's pool registered the handlers (internal.h) */
    if (s->fork_gen != atomic_load_explicit(&dbs__fork_generation, memory_order_relaxed)) {
        /* In a child, a session opened before fork(): its connection and
         * rows are the parent's. Nothing is sent, nothing of the pool's
         * is touched (dbs_pool_after_fork_child forgets the session); the
         * connection is let go as that call lets go of idle ones. */
        if (s->conn && p->drv->forget)
            p->drv->forget(s->conn->impl);
        free(s->conn);
        /* Its rows are let go of as the connection is (their memory is
         * left): dead, so a later dbs_rows_close is the no-op it is after
         * any dbs_session_close, and never reaches the recycled s. */
        for (dbs_rows *r = s->rows; r; r = r->next)
            r->magic = DBS__DEAD_MAGIC;
        s->rows = NULL;
        s->magic = DBS__DEAD_MAGIC;
        /* Ended by its thread's exit in a child: the pool may be freed
         * already (dbs_pool_after_fork_child no longer counts it), so its
         * memory is left as that of the sessions the parent's other
         * threads had open. */
        if (!s->exit_closed)
            session_free(s);
        return;
    }
    if (s->rows)
        dbs__rows_close_all(s);
    enum dbs__giveback how = s->broken        ? DBS__GIVE_BROKEN
                             : s->native_taken ? DBS__GIVE_DIRTY
                                               : DBS__GIVE_KEEP;
    /* A session that never used its connection has nothing to undo: the
     * connection is as the last reset left it. One whose native handle
     * was handed out is closed instead (dirty): the handle reaches what no
     * reset covers, the client library's own state included (callbacks,
     * character set, options, a change of user), so nothing short of a
     * new connection is sure to undo it. Closing it ends its transaction. */
    if (s->conn && s->touched && how == DBS__GIVE_KEEP && !dbs__pool_closed(p)) {
        dbs_error e;
        e.code = DBS_OK;
        void *c = s->conn->impl;
        if (p->drv->set_timeout)
            p->drv->set_timeout(c, -1); /* release work: the pool's bound */
        bool undone;
        if (s->in_tx && (p->drv->rollback_release ? p->drv->rollback_release(c, &e)
                                                  : p->drv->rollback(c, &e)) != DBS_OK)
            undone = false;
        else if (atomic_load_explicit(&s->read_only, memory_order_relaxed) &&
                 p->drv->set_read_only(c, 0, &e) != DBS_OK)
            undone = false;
        else
            undone = p->drv->reset(c, p->cfg.reset, &e) == DBS_OK;
        how = p->drv->is_broken(c) ? DBS__GIVE_BROKEN
              : undone             ? DBS__GIVE_KEEP
                                   : DBS__GIVE_DIRTY;
        /* A release statement that failed after the ROLLBACK it rode with
         * was answered broke it: that failure, not the "broken" a later
         * call of the release then met. */
        dbs_error rerr;
        if (how == DBS__GIVE_BROKEN && p->drv->reset_failure &&
            p->drv->reset_failure(c, &rerr) != DBS_OK) {
            e = rerr;
            undone = false;
        }
        /* The rollback or reset that broke it is what its invalidate
         * event says, as for a failure the session's own calls met. */
        if (how == DBS__GIVE_BROKEN)
            dbs__session_broke(s, !undone && e.code < 0 ? e.code : DBS_ECONNECT,
                               !undone && e.code < 0 ? &e : NULL);
        /* No call returns it, but the session met it: counted as the
         * failures of its own calls are (dbscope's readiness check
         * excepted, as its acquire is). */
        if (!undone && !s->uncounted)
            dbs__errors_note(p, e.code < 0 ? e.code : DBS_ECONNECT, e.code < 0 ? e.sqlstate : NULL);
    }
    set_tx(s, false);
    s->magic = DBS__DEAD_MAGIC;
    if (s->exit_closed) {
        /* Its thread is gone with its spare list: the pool keeps it, for
         * other threads may still hold the handle, and frees it with its
         * own memory, which the release below may do (p's lock is still
         * there: s is counted in its shard until then). */
        pthread_mutex_lock(&p->mu);
        s->t_next = p->exited;
        p->exited = s;
        pthread_mutex_unlock(&p->mu);
        dbs__pool_release(p, s, how); /* p, and s with it, may be gone after this */
        return;
    }
    dbs__pool_release(p, s, how); /* p may be gone after this */
    session_free(s);
}

/* At the exit of a thread that opened a session (the key's destructor, on
 * the exiting thread, so the ownership check passes): its sessions still
 * open end as dbs_session_close would end them (rows closed, transaction
 * rolled back, connection reset and given back, or closed when that
 * fails), each reported as a leak naming its acquire site, then its
 * spare sessions are freed. Only thread-local variables are read, which
 * live until the thread is gone (they have no destructors to run before
 * this one); the thread's semaphore (respool_wait.c) and shard ordinal
 * (shard.c) are among them, and closing waits on no semaphore. A program
 * key's destructor may run before this one or after it: a session it
 * closes first is closed as usual, one it closes after is found closed. */
/* s, open on this thread, ends with the thread: reported as a leak
 * (why), closed as dbs_session_close would close it, and the hold of the
 * dbs_transact it was the session of let go. exiting: the pool keeps s
 * (the thread's spare list goes with the thread); else s is kept for the
 * thread's next sessions. */
static void end_as_leak(dbs_session *s, bool exiting, const char *why)
{
    dbs_pool *held = s->unit_pool;
    bool ours = s->fork_gen == dbs__fork_gen();
    s->exit_closed = exiting;
    if (ours) {
        dbs__shard *sh = s->shard;
        dbs__lock_take(&sh->mu);
        if (!s->leak_reported) {
            s->leak_reported = true; /* so its release counts it recovered */
            sh->leaks++;
        }
        dbs__lock_give(&sh->mu);
        dbs__emit(s->pool, DBS_EVENT_LEAK, s, s->conn, 0, why);
    }
    session_close(s); /* takes s off open_list */
    /* The unit's hold kept the pool allocated across the close; in a
     * child, the pool no longer counts a hold of the parent's. */
    if (held && ours)
        dbs__pool_drop(held); /* may free the pool, and s */
}

static void thread_exit(void *unused)
{
    (void)unused;
    /* A cancel that acted in the program's code (not at a call that never
     * returns, such as pthread_exit, before which AddressSanitizer clears
     * the stack) unwound frames whose redzones stay marked: this runs on
     * that part of the stack. */
#ifdef DBS__ASAN
    __asan_handle_no_return();
#endif
    dbs__cancel_thread_exit();
    DBS__IN_LIB(cancel_old);
    /* The units under way (dbs_transact) forgot their frames as the
     * unwind left them (unit_frame_leave); a frame unwound without that
     * (a caller built without unwind tables) will not return either, and
     * its session is not its to close any more. */
    unit_top = NULL;
    transact_attempt = 0;
    while (open_list)
        end_as_leak(open_list, true,
                    "its thread exited with the session open: rolled back, connection "
                    "given back");
    while (spare) {
        dbs_session *s = spare;
        spare = s->next;
        free(s->ctx_buf);
        free(s);
    }
    /* The key's value was cleared for this call: a session a later
     * destructor opens arms it again, for another round. */
    spare_armed = false;
}

void dbs_session_close(dbs_session *s)
{
    DBS__IN_LIB(cancel_old);
    session_close(s);
}

int dbs_session_commit_close(dbs_session *s, dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    if (!s || s->magic != DBS__SESSION_MAGIC || s->owner_id != dbs__thread_id())
        return dbs__session_check(s, err); /* refused: s stays as it was */
    if (unit_session(s))
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_session_commit_close: the session opened at %s:%d is "
                        "dbs_transact's, which commits and closes it when the unit's work "
                        "returns; call dbs_commit to commit within the unit",
                        s->file ? s->file : "?", s->line);
    /* Nothing follows the COMMIT: the backend may send the release reset
     * with it (commit_release), as dbs_transact's last commit does. A
     * session from before fork(), or of a pool dbs_pool_close was called
     * on, is refused by end_tx and only let go of. */
    int rc = end_tx(s, true, true, err);
    session_close(s);
    return rc;
}

void dbs__session_close(dbs_session *s)
{
    session_close(s);
}

void dbs__session_close_scoped(dbs_session **s)
{
    DBS__IN_LIB(cancel_old);
    if (s && *s) {
        session_close(*s);
        *s = NULL;
    }
}

void *dbs_session_native(dbs_session *s)
{
    /* the handle is handed out settled: a posted reset is read, a
     * transaction begun (every backend's native) */
    DBS__NO_CANCEL(cancel_old);
    if (dbs__session_check(s, NULL) != DBS_OK)
        return NULL;
    s->native_taken = true;
    return s->pool->drv->native(s->conn->impl);
}

int dbs_session_set_statement_timeout(dbs_session *s, int timeout_ms, dbs_error *err)
{
    int rc = dbs__session_check(s, err);
    if (rc != DBS_OK)
        return rc;
    if (timeout_ms < 0)
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_session_set_statement_timeout: timeout_ms is %d; it must be "
                        ">= 0 (0: no bound)", timeout_ms);
    if (!s->pool->drv->set_timeout)
        return dbs__err(err, DBS_ECONFIG,
                        "dbs_session_set_statement_timeout: the %s backend fixes the statement "
                        "bound when it connects; set statement_timeout_ms in the pool's "
                        "configuration instead", s->pool->drv->name);
    s->pool->drv->set_timeout(s->conn->impl, timeout_ms);
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

const dbs_context *dbs_session_context(dbs_session *s)
{
    if (!s || s->magic != DBS__SESSION_MAGIC || s->owner_id != dbs__thread_id())
        return NULL;
    return &s->ctx;
}

/* ---- transaction options ---- */

static bool txo_plain(const dbs_tx_options *o)
{
    return !o || (o->isolation == DBS_ISOLATION_DEFAULT && !o->read_only && !o->deferrable &&
                  !o->immediate);
}

static bool txo_same(const dbs_tx_options *a, const dbs_tx_options *b)
{
    if (txo_plain(a) || txo_plain(b))
        return txo_plain(a) && txo_plain(b);
    return a->isolation == b->isolation && !a->read_only == !b->read_only &&
           !a->deferrable == !b->deferrable && !a->immediate == !b->immediate;
}

int dbs_session_set_tx_options(dbs_session *s, const dbs_tx_options *opt, dbs_error *err)
{
    DBS__IN_LIB(cancel_old);
    int rc = dbs__session_check(s, err);
    if (rc != DBS_OK)
        return rc;
    if (s->in_tx)
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_session_set_tx_options: the session has a transaction open "
                        "(begun by its first statement); options apply from a "
                        "transaction's start: dbs_commit or dbs_rollback first");
    if (opt && ((unsigned)opt->isolation > DBS_ISOLATION_SERIALIZABLE))
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_session_set_tx_options: isolation is %d; use a DBS_ISOLATION_ "
                        "value", (int)opt->isolation);
    if (txo_plain(opt) && txo_plain(&s->txo)) {
        if (err)
            err->code = DBS_OK;
        return DBS_OK;
    }
    if (!s->pool->drv->tx_options)
        return dbs__err(err, DBS_ECONFIG,
                        "dbs_session_set_tx_options: the %s backend has no transaction "
                        "options", s->pool->drv->name);
    rc = s->pool->drv->tx_options(s->conn->impl, txo_plain(opt) ? NULL : opt, err);
    if (rc != DBS_OK)
        return dbs__session_failed(s, rc, err);
    s->txo = txo_plain(opt) ? (dbs_tx_options){0} : *opt;
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

/* ---- nested units ---- */

/* The code work returned, as a dbs_code: a positive value or a code of
 * the unit's own counts as DBS_ESQL, and err says so. */
static int unit_code(int rc, dbs_error *err)
{
    int code = dbs__code_known(rc) ? rc : DBS_ESQL;
    if (err->code != code)
        dbs__err(err, code, "the unit of work returned %d; rolled back", rc);
    return code;
}

/* A failure that ends the whole transaction's chances (the server rolled
 * it back, or may have, or the connection is gone): never undone at a
 * savepoint, so the outermost unit runs again or reports it. */
static bool dooms_tx(int code)
{
    return code == DBS_ERETRYABLE || code == DBS_ECONNECT || code == DBS_EFULL ||
           code == DBS_ESTMT_TIMEOUT || code == DBS_ECOMMIT_UNKNOWN || code == DBS_ENOMEM;
}

static void doom(dbs_session *s, const dbs_error *e)
{
    if (s->doom.code == 0 && s->in_tx)
        s->doom = *e;
}

/* One savepoint command on s; the savepoint of depth d is dbs_sp<d>. */
static int sp_cmd(dbs_session *s, const char *cmd, int depth, dbs_error *err)
{
    char sql[64];
    snprintf(sql, sizeof sql, "%s dbs_sp%d", cmd, depth);
    /* what dbs_exec does, on the session's own connection */
    int rc = dbs__session_check(s, err);
    if (rc == DBS_OK)
        rc = dbs__session_autobegin(s, err);
    if (rc != DBS_OK)
        return rc;
    int64_t r = s->pool->drv->exec(s->conn->impl, sql, NULL, 0, err);
    if (r < 0)
        return dbs__session_failed(s, (int)r, err);
    err->code = DBS_OK;
    return DBS_OK;
}

/* A nested unit whose work is under way. */
typedef struct sp_frame {
    dbs_session *s; /* NULL once the work returned */
    int depth;
    unsigned seq;
} sp_frame;

/* A cancel or pthread_exit in a nested unit's work unwinds its frame:
 * the unit failed, so its savepoint is rolled back and released, as a
 * failed unit's is, before any cleanup handler of the program's outside
 * the call runs. A handler that goes on with the session (the program's
 * own, from dbs_session_transact) finds it as it was before the unit; a
 * transaction that cannot be brought back there is doomed, as after any
 * such failure. Inside a dbs_transact the unwind goes on to end the
 * whole unit (unit_unwound). */
static void sp_unwound(sp_frame *f)
{
    DBS__IN_LIB(cancel_old);
    dbs_session *s = f->s;
    f->s = NULL;
    if (s->magic != DBS__SESSION_MAGIC || s->owner_id != dbs__thread_id() ||
        s->tx_seq != f->seq || !s->in_tx)
        return; /* work ended the transaction: its savepoint went with it */
    s->sp_depth = f->depth - 1;
    dbs_error e;
    int rc = sp_cmd(s, "ROLLBACK TO SAVEPOINT", f->depth, &e);
    if (rc == DBS_OK)
        rc = sp_cmd(s, "RELEASE SAVEPOINT", f->depth, &e);
    if (rc != DBS_OK)
        doom(s, &e);
}

static inline __attribute__((always_inline)) void sp_frame_leave(sp_frame *f)
{
    if (__builtin_expect(f->s != NULL, 0)) {
        dbs__unwound();
        sp_unwound(f);
    }
}

static int nested_unit(dbs_session *s, const dbs_tx_options *opt, dbs_work_fn work, void *arg,
                       dbs_error *err, unsigned char cancel_old)
{
    int rc = dbs__session_check(s, err);
    if (rc != DBS_OK)
        return rc;
    if (!work)
        return dbs__err(err, DBS_EMISUSE, "dbs_session_transact: work is NULL");
    if (!txo_plain(opt) && !txo_same(opt, &s->txo))
        return dbs__err(err, DBS_EMISUSE,
                        "a nested unit runs as a savepoint of the enclosing transaction and "
                        "cannot change its isolation or access mode: pass the same options "
                        "or none");
    if (s->doom.code != 0 && s->in_tx) {
        *err = s->doom;
        return s->doom.code; /* the transaction cannot commit: no use running */
    }
    int depth = s->sp_depth + 1;
    rc = sp_cmd(s, "SAVEPOINT", depth, err);
    if (rc != DBS_OK)
        return rc;
    s->sp_depth = depth;
    unsigned seq = s->tx_seq;
    err->code = DBS_OK;
    /* A cancel (or pthread_exit) in work unwinds through here: the unit
     * failed, and is undone as a failed one is (sp_frame_leave). */
    dbs__unwind_note();
    sp_frame frame __attribute__((cleanup(sp_frame_leave))) = {.s = s, .depth = depth,
                                                              .seq = seq};
    dbs__cancel_user(cancel_old);
    rc = work(s, arg, err);
    dbs__cancel_lib(cancel_old);
    frame.s = NULL;
    if (rc != 0)
        rc = unit_code(rc, err);
    if (s->magic != DBS__SESSION_MAGIC || s->tx_seq != seq || !s->in_tx)
        return rc; /* work ended the transaction: its savepoint went with it */
    s->sp_depth = depth - 1;
    if (rc == DBS_OK) {
        rc = sp_cmd(s, "RELEASE SAVEPOINT", depth, err);
        if (rc != DBS_OK)
            doom(s, err);
        return rc;
    }
    if (dooms_tx(rc)) {
        doom(s, err);
        return rc;
    }
    dbs_error e2;
    int rc2 = sp_cmd(s, "ROLLBACK TO SAVEPOINT", depth, &e2);
    if (rc2 == DBS_OK)
        rc2 = sp_cmd(s, "RELEASE SAVEPOINT", depth, &e2);
    if (rc2 != DBS_OK) {
        doom(s, &e2);
        *err = e2;
        return rc2;
    }
    return rc;
}

int dbs_session_transact(dbs_session *s, dbs_work_fn work, void *arg, dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    dbs_error local;
    if (!err)
        err = &local;
    return nested_unit(s, NULL, work, arg, err, cancel_old);
}

static unit_frame *enclosing_unit(const dbs_pool *pool, bool ro, uint64_t pos)
{
    for (unit_frame *f = unit_top; f; f = f->up) {
        if (f->pool != pool)
            continue;
        if (f->ro && (!ro || pos != 0))
            return NULL; /* a write, or a position, in a read-only unit: a unit
                          * of its own */
        return f->s->magic == DBS__SESSION_MAGIC ? f : NULL;
    }
    return NULL;
}

/* ---- dbs_transact ---- */

/* A cancel or pthread_exit in a unit's work (or a C++ exception through
 * it) unwinds dbs_transact's frame: the thread will not get back there,
 * so the unit ends here, as its thread's exit would end it but now,
 * before a cleanup handler of the program's (or a destructor) outside
 * the call runs. That handler's calls then find no unit in progress and
 * nothing pointing into the unwound frame: its dbs_transact is a unit of
 * its own, on a fresh session, with the connection this one gave back.
 * Out of line: only the unwind comes here. */
static void unit_unwound(unit_frame *f)
{
    DBS__IN_LIB(cancel_old);
    unit_top = f->up;
    dbs_session *s = f->s;
    f->s = NULL;
    if (s->magic == DBS__SESSION_MAGIC && s->owner_id == dbs__thread_id())
        /* kept by the pool, as at the thread's exit: another thread
         * that has the handle finds it closed, never freed (a C++
         * exception caught above keeps one a throw until the pool is
         * freed) */
        end_as_leak(s, true,
                    "its thread exited with the session open (unwound out of the "
                    "dbs_transact unit's work): rolled back, connection given back");
}

/* The unit frame's cleanup: built with -fexceptions (CMakeLists.txt), the
 * unwind runs it too. On the way out of a returned work it only checks. */
static inline __attribute__((always_inline)) void unit_frame_leave(unit_frame *f)
{
    if (__builtin_expect(f->s != NULL, 0)) {
        dbs__unwound();
        unit_unwound(f);
    }
}

static bool transient(int code)
{
    return code == DBS_ERETRYABLE || code == DBS_ECONNECT || code == DBS_EFULL;
}


/* Parenthesised: the header's macro of the same name routes callers to
 * dbs_transact_at; this keeps the plain symbol for the ABI and for callers
 * that take its address. */
int(dbs_transact)(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work, void *arg,
                  dbs_error *err)
{
    return dbs_transact_at(pool, ctx, work, arg, err, "?", 0, "dbs_transact");
}

static int transact_attempts(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work,
                             void *arg, dbs_error *err, const char *file, int line,
                             const char *func, dbs__opener open, uint64_t pos,
                             const dbs_tx_options *opt, unsigned char cancel_old);

int(dbs_transact_opts)(dbs_pool *pool, const dbs_context *ctx, const dbs_tx_options *opt,
                       dbs_work_fn work, void *arg, dbs_error *err)
{
    return dbs__transact(pool, ctx, work, arg, err, "?", 0, "dbs_transact_opts", NULL, 0, opt);
}

int dbs_transact_opts_at(dbs_pool *pool, const dbs_context *ctx, const dbs_tx_options *opt,
                         dbs_work_fn work, void *arg, dbs_error *err, const char *file,
                         int line, const char *func)
{
    return dbs__transact(pool, ctx, work, arg, err, file, line, func, NULL, 0, opt);
}

int dbs_transact_at(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work, void *arg,
                    dbs_error *err, const char *file, int line, const char *func)
{
    return dbs__transact(pool, ctx, work, arg, err, file, line, func, NULL, 0, NULL);
}

int dbs__transact(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work, void *arg,
                  dbs_error *err, const char *file, int line, const char *func,
                  dbs__opener open, uint64_t pos, const dbs_tx_options *opt)
{
    /* Here, where every dbs_transact variant arrives once: cancel_old is
     * the program's state, which the unit's work runs with. */
    DBS__NO_CANCEL(cancel_old);
    dbs_error local;
    if (!err)
        err = &local;
    if (!pool || pool->magic != DBS__POOL_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_transact: not an open pool");
    if (!work)
        return dbs__err(err, DBS_EMISUSE, "dbs_transact: work is NULL");
    if (dbs__fork_check(pool, "dbs_transact", err) != DBS_OK)
        return err->code;
    /* Here, not only in the session's open: a nested unit does not use its
     * ctx, but a ctx no session could take is the caller's mistake all the
     * same, refused whether or not a unit encloses the call. */
    if (dbs__context_check(ctx, "dbs_transact", err) != DBS_OK)
        return err->code;
    unit_frame *outer = enclosing_unit(pool, open != NULL, pos);
    if (outer)
        return nested_unit(outer->s, opt, work, arg, err, cancel_old);
    /* Options no attempt could begin with are known without a connection:
     * refused now, not after a wait for one or a connect that fails and
     * is retried (which would report the caller's mistake as an outage). */
    if (!txo_plain(opt)) {
        if ((unsigned)opt->isolation > DBS_ISOLATION_SERIALIZABLE)
            return dbs__err(err, DBS_EMISUSE,
                            "dbs_transact_opts: isolation is %d; use a DBS_ISOLATION_ value",
                            (int)opt->isolation);
        if (!pool->drv->tx_options)
            return dbs__err(err, DBS_ECONFIG,
                            "dbs_transact_opts: the %s backend has no transaction options",
                            pool->drv->name);
        int rc = pool->drv->tx_options_check(opt, open != NULL, err);
        if (rc != DBS_OK)
            return rc;
    }
    /* Held across attempts, so a dbs_pool_close on another thread cannot
     * free the pool between one attempt's session and the next. */
    int rc = dbs__pool_hold(pool, err);
    if (rc != DBS_OK) {
        /* the session it would open fails so: counted as dbs_session_open's */
        dbs__errors_note(pool, rc, NULL);
        return rc;
    }
    rc = transact_attempts(pool, ctx, work, arg, err, file, line, func, open, pos, opt,
                           cancel_old);
    dbs__pool_drop(pool);
    return rc;
}

static int transact_attempts(dbs_pool *pool, const dbs_context *ctx, dbs_work_fn work,
                             void *arg, dbs_error *err, const char *file, int line,
                             const char *func, dbs__opener open, uint64_t pos,
                             const dbs_tx_options *opt, unsigned char cancel_old)
{
    const int retry_max = pool->cfg.retry_max;
    for (int attempt = 0;; attempt++) {
        int rc;
        bool committed = false;
        err->code = DBS_OK;
        transact_attempt = attempt + 1;
        dbs_session *s = open ? open(pool, ctx, pos, err, file, line, func)
                              : dbs__session_open(pool, ctx, err, file, line, func);
        transact_attempt = 0;
        if (s)
            s->unit_pool = pool; /* the hold above: its thread's exit lets go */
        if (s && !txo_plain(opt) && dbs_session_set_tx_options(s, opt, err) != DBS_OK) {
            rc = err->code; /* the backend refuses them: no attempt can run */
            session_close(s);
            return rc;
        }
        if (!s) {
            rc = err->code;
        } else {
            /* What a cancel (or pthread_exit) in work unwinds is whole at
             * this point, and the unwind ends it (unit_frame_leave): the
             * frame forgotten, the session rolled back, its connection
             * given back and the hold let go, before any cleanup handler
             * of the program's outside this call runs. */
            dbs__unwind_note();
            unit_frame frame __attribute__((cleanup(unit_frame_leave))) = {
                .pool = pool, .s = s, .ro = open != NULL, .up = unit_top};
            unit_top = &frame;
            dbs__cancel_user(cancel_old);
            rc = work(s, arg, err);
            dbs__cancel_lib(cancel_old);
            unit_top = frame.up;
            frame.s = NULL;
            if (rc != 0 && s->doom.code != 0) {
                /* A nested unit doomed the transaction: what failed after
                 * is its consequence, and the doom decides the retry. */
                *err = s->doom;
                rc = s->doom.code;
            }
            if (rc == 0) {
                rc = end_tx(s, true, true, err);
            } else {
                /* The return is always err->code and a dbs_code: a positive
                 * value or a code of the unit's own becomes DBS_ESQL. */
                rc = unit_code(rc, err);
                /* the session's close rolls back */
            }
            /* The server may also have ended the unit's transaction
             * itself (an implicit commit by DDL, a COMMIT sent as SQL):
             * what ran before that may have committed. So may what ran
             * through the native handle: outside a transaction of the
             * session's (before its first statement, after its commit or
             * rollback), the backend commits each statement at once. */
            committed = s->committed || s->native_taken ||
                        (s->conn && s->pool->drv->tx_escaped &&
                         s->pool->drv->tx_escaped(s->conn->impl));
            session_close(s);
        }
        if (rc == 0)
            return DBS_OK;
        /* A unit that committed part of its work (work called dbs_commit,
         * or the server ended its transaction) would do that part twice:
         * never run again. */
        if (!transient(rc) || committed || attempt >= retry_max)
            return rc;
        dbs__pool_count_retry(pool);
        /* the retry event carries the caller's context, not a session */
        const dbs__who who = {.ctx = ctx, .file = file, .line = line, .func = func,
                              .thread = (unsigned long)pthread_self(),
                              .attempt = attempt + 2 /* the one about to run */};
        dbs__emit_who(pool, DBS_EVENT_RETRY, &who, rc, err->message);
        /* Full jitter: a random wait up to a ceiling that doubles each
         * attempt, so retrying clients spread out instead of colliding again. */
        int64_t ceiling = pool->cfg.retry_base_ms;
        for (int i = 0; i < attempt && ceiling < pool->cfg.retry_cap_ms; i++)
            ceiling *= 2;
        if (ceiling > pool->cfg.retry_cap_ms)
            ceiling = pool->cfg.retry_cap_ms;
        if (ceiling > 0)
            dbs__sleep_ms((int64_t)(dbs__random() % (uint64_t)(ceiling + 1)));
    }
}

/* A session's round trip: any connection the pool would hand out proves
 * itself, and one found lost is discarded as a session's would be. */
int dbs_pool_ping(dbs_pool *p, dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    if (!p || p->magic != DBS__POOL_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_pool_ping: not an open pool");
    dbs_error local;
    if (!err)
        err = &local;
    dbs_session *s = dbs__session_open(p, NULL, err, __FILE__, __LINE__, "dbs_pool_ping");
    if (!s)
        return err->code;
    int rc = p->drv->ping(s->conn->impl, err);
    if (rc != DBS_OK && p->drv->is_broken(s->conn->impl))
        dbs__session_broke(s, rc, err);
    dbs__session_close(s);
    if (rc == DBS_OK && err)
        dbs__err(err, DBS_OK, "ok");
    return rc;
}

/* ---- the session's open rows ---- */

void dbs__rows_free(dbs_rows *r)
{
    dbs_session *s = r->session;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->rows = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->magic = DBS__DEAD_MAGIC;
    /* In a child, rows of a session opened before fork() are the
     * parent's: closing them would reset the parent's SQLite statement
     * (ending its read, or committing its write from here). Left as the
     * connection is, memory and all. */
    if (s->fork_gen == atomic_load_explicit(&dbs__fork_generation, memory_order_relaxed))
        r->ops->close(r); /* one that resets a statement defers first (driver.h) */
}

void dbs__rows_close_all(dbs_session *s)
{
    while (s->rows)
        dbs__rows_free(s->rows);
}
