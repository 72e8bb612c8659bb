/* docs/leaks.md's fix, in the function docs/leaks.md starts with.
 * Compiled only. */
#include <dbscope.h>

#include <stdint.h>

extern dbs_pool *pool;

/* @FILE_SCOPE@ */

int lookup_order(const dbs_context *ctx, int order_id, int64_t *total);
int lookup_order(const dbs_context *ctx, int order_id, int64_t *total)
{
    dbs_error err;

    /* @BODY@ */

    if (!s)
        return err.code;
    dbs_rows *r = dbs_query(s, "SELECT total FROM orders WHERE id = $1",
                            (dbs_value[]){DBS_INT(order_id)}, 1, &err);
    int more = r ? dbs_rows_next(r, &err) : -1;
    if (more == 1)
        *total = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    return more == 1 ? 0 : -1;
}
