/* Closes the same session twice. */
#include <dbscope.h>

void twice(dbs_pool *pool);
void twice(dbs_pool *pool)
{
    dbs_session *s = dbs_session_open(pool, NULL, NULL);
    if (!s)
        return;
    dbs_session_close(s);
    dbs_session_close(s); /* expected: -Wanalyzer-double-free */
}
