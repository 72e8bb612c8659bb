/* requires: uv.h */
/* libuv declares POSIX types (pthread_rwlock_t) that -std=c11 hides */
#define _POSIX_C_SOURCE 200809L

/* docs/event-loops.md's libuv glue, as examples/loop_libuv.c declares
 * around it. Compiled only. */
#include <dbscope.h>

#include <stdint.h>
#include <uv.h>

typedef struct app {
    dbs_pool *pool;
    dbs_loop *loop;
    uv_poll_t poll;
    uv_timer_t timer;
} app;

/* @FILE_SCOPE@ */

int glue(app *ap, uv_loop_t *uv);
int glue(app *ap, uv_loop_t *uv)
{
    app a = *ap;
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    dbs_error err;

    /* @BODY@ */

    *ap = a;
    return a.loop ? 0 : -1;
}
