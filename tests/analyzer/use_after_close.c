/* Uses a session after closing it. */
#include <dbscope.h>

int late(dbs_pool *pool);
int late(dbs_pool *pool)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        return -1;
    dbs_session_close(s);
    return dbs_commit(s, &err); /* expected: -Wanalyzer-use-after-free */
}
