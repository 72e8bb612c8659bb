/* README.md's event-loop sample, run: the pool and context of the quick
 * start, a table for it, and the program's loop as a poll() on the loop's
 * descriptor and deadline. */
#include <dbscope.h>

#include <poll.h>
#include <stdio.h>

/* @FILE_SCOPE@ */

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_error err;
    if (dbs_config_from_env(&cfg, &err) != DBS_OK)
        return 1;
    dbs_pool *pool = dbs_pool_open(&cfg, &err);
    if (!pool)
        return 1;
    dbs_context ctx = {.request_id = "req-1", .user_id = "42"};
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s || dbs_exec(s, "CREATE TABLE shift (title TEXT NOT NULL, owner INTEGER NOT NULL)",
                       NULL, 0, &err) < 0 || dbs_session_commit_close(s, &err) != DBS_OK)
        return 1;

    /* @BODY@ */

    int left = 1000;
    while (dbs_loop_pending(loop) > 0 && left-- > 0) {
        struct pollfd p = {.fd = dbs_loop_fd(loop), .events = POLLIN};
        poll(&p, 1, dbs_loop_timeout_ms(loop));
        dbs_loop_run(loop);
    }
    int pending = dbs_loop_pending(loop);
    dbs_loop_close(loop);
    dbs_pool_close(pool);
    return pending == 0 ? 0 : 1;
}
