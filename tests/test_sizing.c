/* dbscope-sizing's arithmetic: N x (pool_size + max_overflow [+ extra])
 * against max_connections less the reserved and other clients. */
#include "check.h"
#include "sizing.h"

static dbs_sizing_out run(int n, int p, int o, int x, int m, int r, int c)
{
    dbs_sizing_in in = {n, p, o, x, m, r, c};
    dbs_sizing_out out;
    dbs_sizing(&in, &out);
    return out;
}

int main(void)
{
    /* dbscope's defaults, 3 processes, PostgreSQL's defaults: 90 > 97? no */
    dbs_sizing_out o = run(3, 10, 20, 0, 100, 3, 0);
    CHECK_EQ(o.peak, 90);
    CHECK_EQ(o.steady, 30);
    CHECK_EQ(o.available, 97);
    CHECK_EQ(o.fits, 1);
    CHECK_EQ(o.fit_processes, 3);

    /* 4 processes: 120 at peak, 97 available: the 4th is refused */
    o = run(4, 10, 20, 0, 100, 3, 0);
    CHECK_EQ(o.fits, 0);
    CHECK_EQ(o.fit_processes, 3);
    /* 97 / 4 = 24 each: pool_size kept, overflow cut */
    CHECK_EQ(o.suggest_pool_size, 10);
    CHECK_EQ(o.suggest_max_overflow, 14);
    CHECK_INT(4 * (o.suggest_pool_size + o.suggest_max_overflow), <=, o.available);

    /* the replica monitor's connection counts */
    o = run(3, 10, 22, 1, 100, 3, 0);
    CHECK_EQ(o.peak, 99);
    CHECK_EQ(o.fits, 0);
    CHECK_EQ(o.fit_processes, 2);
    CHECK_EQ(o.suggest_pool_size + o.suggest_max_overflow + 1, 97 / 3);

    /* exactly full fits */
    o = run(97, 1, 0, 0, 100, 3, 0);
    CHECK_EQ(o.fits, 1);
    o = run(98, 1, 0, 0, 100, 3, 0);
    CHECK_EQ(o.fits, 0);
    CHECK_EQ(o.suggest_pool_size, 0); /* not even one each: PgBouncer */

    /* other clients and a reserve larger than the server */
    o = run(1, 10, 0, 0, 20, 3, 10);
    CHECK_EQ(o.available, 7);
    CHECK_EQ(o.fits, 0);
    CHECK_EQ(o.suggest_pool_size, 7);
    CHECK_EQ(o.suggest_max_overflow, 0);
    o = run(1, 1, 0, 0, 3, 5, 0);
    CHECK_EQ(o.available, 0);
    CHECK_EQ(o.fit_processes, 0);
    puts("test_sizing: ok");
    return 0;
}
