/* Leaks: the session is never closed. */
#include <dbscope.h>

int count(dbs_pool *pool);
int count(dbs_pool *pool)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        return -1;
    return (int)dbs_exec(s, "SELECT 1", NULL, 0, &err); /* expected: leak */
}
