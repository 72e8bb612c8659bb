/* Correct: every path closes the session exactly once. */
#include <dbscope.h>

int add_row(dbs_pool *pool);
int add_row(dbs_pool *pool)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        return err.code;
    int rc = (int)dbs_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, &err);
    if (rc >= 0)
        rc = dbs_commit(s, &err);
    dbs_session_close(s);
    return rc < 0 ? rc : 0;
}
