/* docs/event-loops.md's unit, inside a function of examples/loop_libuv.c's
 * shape. Compiled only. */
#include <dbscope.h>

typedef struct app {
    dbs_loop *loop;
} app;

void unit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg);

/* @FILE_SCOPE@ */

int submit_one(app *a, int i, const char *rid);
int submit_one(app *a, int i, const char *rid)
{
    dbs_context ctx = {.request_id = rid};
    dbs_error err;

    /* @BODY@ */

    return 0;
}
