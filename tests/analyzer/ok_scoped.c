/* Correct: DBS_SCOPED closes the session on every path out of the block. */
#include <dbscope.h>

int add_row(dbs_pool *pool, int fail);
int add_row(dbs_pool *pool, int fail)
{
    dbs_error err;
    DBS_SCOPED dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        return -1;
    if (fail)
        return -2; /* rolled back and released by the cleanup */
    if (dbs_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, &err) < 0)
        return -1;
    return dbs_commit(s, &err);
}
