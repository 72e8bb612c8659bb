/* A fragment that uses what the text around it has: a pool, a session,
 * rows, a context, a configuration, the program's own functions the
 * fragment names. Compiled only. */
#include <dbscope.h>

#include <stdint.h>
#include <stdio.h>

extern dbs_pool *pool;
extern void *server;
void stop_accepting(void *server);
void join_workers(void *server);
void log_warn(const char *fmt, ...);
extern dbs_work_fn transfer, create_shift, read_shift;
extern int t, shift;

/* @FILE_SCOPE@ */

int fragment(dbs_session *s, dbs_rows *r, const dbs_context *ctxp);
int fragment(dbs_session *s, dbs_rows *r, const dbs_context *ctxp)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_context ctx = *ctxp;
    dbs_error err;
    int rc = 0;
    (void)s, (void)r, (void)ctx, (void)err, (void)rc;

    {
    /* @BODY@ */
    }

    (void)cfg;
    return rc;
}
