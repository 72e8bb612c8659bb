/* Leaks: the error path returns without closing the session. */
#include <dbscope.h>

int add_row(dbs_pool *pool);
int add_row(dbs_pool *pool)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        return -1;
    if (dbs_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, &err) < 0)
        return -1; /* expected: -Wanalyzer-malloc-leak */
    dbs_commit(s, &err);
    dbs_session_close(s);
    return 0;
}
