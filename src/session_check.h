/* The session check every statement and row step makes (session_check.c),
 * kept out of internal.h: the layers below the session (connections, the
 * pool) include nothing that calls up into the session layer. */
#ifndef DBS_SESSION_CHECK_H
#define DBS_SESSION_CHECK_H

#include "internal.h"

/* Checks magic, state and owner thread; DBS_EMISUSE or DBS_ECLOSED. */
int dbs__session_check_full(dbs_session *s, dbs_error *err);
/* The same check, its passing case inline: every statement and row step
 * of a unit makes it, and the call and the error paths' frame cost more
 * than the tests (bench/notes.md, "Units of work"). Anything not plainly
 * fine goes to the full check, which alone decides a refusal. */
static inline int dbs__session_check(dbs_session *s, dbs_error *err)
{
    if (s && s->magic == DBS__SESSION_MAGIC && s->owner_id == dbs__thread_id() &&
        s->fork_gen == atomic_load_explicit(&dbs__fork_generation, memory_order_relaxed) &&
        !dbs__pool_closed(s->pool) && s->conn) {
        s->touched = true;
        return DBS_OK;
    }
    return dbs__session_check_full(s, err);
}
#endif
