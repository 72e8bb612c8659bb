/* Correct: dbs_transact owns the session; the work function never closes it. */
#include <dbscope.h>

static int work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    int64_t n = dbs_exec(s, "INSERT INTO t VALUES (1)", NULL, 0, err);
    return n < 0 ? (int)n : 0;
}

int add_row(dbs_pool *pool);
int add_row(dbs_pool *pool)
{
    dbs_error err;
    return dbs_transact(pool, NULL, work, NULL, &err);
}
