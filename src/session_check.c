/* The session check: whether a call on a session may go ahead (its
 * handle, its thread, its process, its pool, its connection). Its own
 * file, below the session layer, so that the inline check every statement
 * makes (session_check.h) calls nothing above it. */
#include "internal.h"
#include "session_check.h"

/* Whether dbs_pool_close was called on p: from then on a session's calls
 * are refused. A shutdown alone refuses new sessions only, so that the
 * requests in flight finish (the drain waits for them); the lock is taken
 * only once the pool is shut down. */
static bool pool_gone(dbs_pool *p)
{
    if (!dbs__pool_closed(p))
        return false;
    pthread_mutex_lock(&p->mu);
    bool gone = p->close_called;
    pthread_mutex_unlock(&p->mu);
    return gone;
}

int dbs__session_check_full(dbs_session *s, dbs_error *err)
{
    if (s && s->magic == DBS__DEAD_MAGIC && s->exit_closed && s->owner_id != dbs__thread_id())
        return dbs__err(err, DBS_EMISUSE,
                        "session opened at %s:%d belongs to another thread, which exited "
                        "with it open: it was rolled back and closed then",
                        s->file ? s->file : "?", s->line);
    if (!s || s->magic != DBS__SESSION_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "session is NULL or already closed");
    if (s->owner_id != dbs__thread_id())
        return dbs__err(err, DBS_EMISUSE,
                        "session opened at %s:%d is used from another thread; a session "
                        "belongs to the thread that opened it", s->file ? s->file : "?", s->line);
    if (s->fork_gen != dbs__fork_gen())
        return dbs__err(err, DBS_EMISUSE,
                        "session opened at %s:%d before fork(): its connection is the "
                        "parent's; close it, and open a new one after "
                        "dbs_pool_after_fork_child", s->file ? s->file : "?", s->line);
    if (pool_gone(s->pool))
        return dbs__err(err, DBS_ECLOSED, "the pool was closed (dbs_pool_close); close this "
                                          "session");
    if (!s->conn)
        return dbs__err(err, DBS_ECONNECT, "the session lost its connection");
    s->touched = true;
    return DBS_OK;
}
