/*
 * loop_libuv: dbscope's event-loop API (dbs_loop, dbs_unit) driven by
 * libuv, as docs/event-loops.md walks through it.
 *
 *   loop_libuv [URL] [UNITS]
 *
 * URL (default: $DATABASE_URL, else sqlite:loop_libuv.db) names the
 * database; UNITS (default 200) how many units of work to run. Each unit
 * inserts a row and reads back how many rows its own transaction sees;
 * every tenth is a read-only unit that only counts. All are submitted at
 * once: the loop keeps at most max_connections of them on the database,
 * the rest wait in its queue, and nothing ever blocks libuv's thread.
 * Prints one line per tenth unit, then a summary; exits 0 when every unit
 * committed.
 *
 * The glue is two libuv handles: a uv_poll_t on dbs_loop_fd (readable:
 * run the loop) and a uv_timer_t armed for dbs_loop_timeout_ms after
 * every run and every submit (due: run the loop). That is all a loop
 * needs: the library's sockets, timers and worker threads sit behind
 * that one descriptor.
 */
#include <dbscope.h>
#include <uv.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct app {
    uv_loop_t *uv;
    uv_poll_t poll;      /* dbs_loop_fd, readable */
    uv_timer_t timer;    /* dbs_loop_timeout_ms */
    dbs_pool *pool;
    dbs_loop *loop;
    char table[64];
    int units, submitted, ok, failed;
    int64_t sum_seen;
} app;

static void on_timer(uv_timer_t *h);

/* After anything that may have changed the loop's next deadline (a run, a
 * submit): the timer fires when dbs_loop_run is due even if the
 * descriptor stays quiet; once no unit is left, the handles close and
 * uv_run returns. */
static void settle(app *a)
{
    if (a->submitted == a->units && dbs_loop_pending(a->loop) == 0) {
        if (!uv_is_closing((uv_handle_t *)&a->poll)) {
            uv_close((uv_handle_t *)&a->poll, NULL);
            uv_close((uv_handle_t *)&a->timer, NULL);
        }
        return;
    }
    int ms = dbs_loop_timeout_ms(a->loop);
    if (ms < 0)
        uv_timer_stop(&a->timer);
    else
        uv_timer_start(&a->timer, on_timer, (uint64_t)ms, 0);
}

static void run_loop(app *a)
{
    if (dbs_loop_run(a->loop) < 0)
        fprintf(stderr, "loop_libuv: dbs_loop_run refused: not the loop's thread\n");
    settle(a);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    run_loop(h->data);
}

static void on_timer(uv_timer_t *h)
{
    run_loop(h->data);
}

/* A unit's completion: on libuv's thread, inside dbs_loop_run. The rows
 * are the unit's, valid until this returns. */
static void unit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    app *a = arg;
    const dbs_context *ctx = dbs_unit_context(u);
    const char *id = ctx && ctx->request_id ? ctx->request_id : "?";
    if (rc != DBS_OK) {
        a->failed++;
        fprintf(stderr, "unit %s failed: %s (%s)\n", id, err->message, dbs_strerror(rc));
        return;
    }
    a->ok++;
    /* the count: statement 1 of a write, 0 of a read-only unit */
    dbs_rows *r = dbs_unit_rows(u, 1);
    if (!r)
        r = dbs_unit_rows(u, 0);
    dbs_error e;
    int64_t seen = -1;
    if (r && dbs_rows_next(r, &e) == 1 && dbs_rows_get_int64(r, 0, &seen, &e) != DBS_OK)
        seen = -1;
    a->sum_seen += seen;
    if (a->ok % 10 == 0)
        printf("unit %s committed after %d attempt(s): its transaction saw %" PRId64
               " row(s)\n", id, dbs_unit_attempts(u), seen);
}

/* Builds and submits unit i: a write (INSERT, then a count that sees it)
 * or, every tenth, a read-only count. */
static int submit_one(app *a, int i)
{
    char rid[32], sql[160];
    snprintf(rid, sizeof rid, "unit-%d", i);
    dbs_context ctx = {.request_id = rid}; /* copied by dbs_unit_new */
    bool ro = i % 10 == 9;
    dbs_error err;
    dbs_unit *u = dbs_unit_new(a->loop, &ctx, ro ? DBS_UNIT_RO : 0, &err);
    if (!u) {
        fprintf(stderr, "dbs_unit_new: %s\n", err.message);
        return -1;
    }
    if (!ro) {
        snprintf(sql, sizeof sql, "INSERT INTO %s (id, note) VALUES ($1, $2)", a->table);
        dbs_value v[] = {DBS_INT(i), DBS_TEXT(rid)}; /* copied by dbs_unit_add */
        if (dbs_unit_add(u, sql, v, 2, &err) < 0) {
            fprintf(stderr, "dbs_unit_add: %s\n", err.message);
            dbs_unit_discard(u);
            return -1;
        }
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", a->table);
    if (dbs_unit_add(u, sql, NULL, 0, &err) < 0) {
        fprintf(stderr, "dbs_unit_add: %s\n", err.message);
        dbs_unit_discard(u);
        return -1;
    }
    dbs_unit_set_timeout(u, 30000); /* the whole unit, waits included */
    /* On failure the unit is freed and unit_done never runs. */
    if (dbs_unit_submit(u, unit_done, a, &err) != DBS_OK) {
        fprintf(stderr, "dbs_unit_submit: %s\n", err.message);
        return -1;
    }
    a->submitted++;
    return 0;
}

/* The table, made with the blocking API before the loop starts. */
static int setup(app *a)
{
    dbs_error err;
    char sql[160];
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    if (!s) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", a->table);
    int rc = dbs_exec(s, sql, NULL, 0, &err) < 0 ? -1 : 0;
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id INTEGER PRIMARY KEY, note TEXT)", a->table);
    if (rc == 0 && dbs_exec(s, sql, NULL, 0, &err) < 0)
        rc = -1;
    if (rc == 0 && dbs_commit(s, &err) != DBS_OK)
        rc = -1;
    if (rc != 0)
        fprintf(stderr, "setup: %s\n", err.message);
    dbs_session_close(s);
    return rc;
}

static void teardown(app *a)
{
    dbs_error err;
    char sql[160];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", a->table);
    dbs_session *s = dbs_session_open(a->pool, NULL, &err);
    if (s && dbs_exec(s, sql, NULL, 0, &err) >= 0)
        (void)dbs_commit(s, &err);
    dbs_session_close(s);
}

int main(int argc, char **argv)
{
    app a = {.units = 200};
    const char *url = argc > 1 ? argv[1] : getenv("DATABASE_URL");
    if (argc > 2)
        a.units = atoi(argv[2]);
    if (a.units < 1 || a.units > 100000) {
        fprintf(stderr, "usage: loop_libuv [URL] [UNITS 1..100000]\n");
        return 2;
    }
    snprintf(a.table, sizeof a.table, "loop_demo_%ld", (long)getpid());

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url && *url ? url : "sqlite:loop_libuv.db";
    cfg.pool_size = 4;
    dbs_error err;
    a.pool = dbs_pool_open(&cfg, &err);
    if (!a.pool) {
        fprintf(stderr, "dbs_pool_open: %s\n", err.message);
        return 1;
    }
    if (setup(&a) != 0) {
        dbs_pool_close(a.pool);
        return 1;
    }

    /* One dbs_loop per loop thread: this one, libuv's. */
    dbs_loop_config lc;
    dbs_loop_config_init(&lc);
    lc.queue_max = a.units; /* every unit may wait at once */
    a.loop = dbs_loop_open(a.pool, &lc, &err);
    if (!a.loop) {
        fprintf(stderr, "dbs_loop_open: %s\n", err.message);
        dbs_pool_close(a.pool);
        return 1;
    }
    a.uv = uv_default_loop();
    uv_poll_init(a.uv, &a.poll, dbs_loop_fd(a.loop));
    uv_timer_init(a.uv, &a.timer);
    a.poll.data = a.timer.data = &a;
    uv_poll_start(&a.poll, UV_READABLE, on_readable);

    int bad = 0;
    for (int i = 0; i < a.units && !bad; i++)
        bad = submit_one(&a, i) != 0;
    if (bad)
        a.units = a.submitted; /* wait for those submitted, then stop */
    settle(&a);
    uv_run(a.uv, UV_RUN_DEFAULT);

    dbs_loop_close(a.loop);
    uv_loop_close(a.uv);
    printf("%d units: %d committed, %d failed\n", a.units, a.ok, a.failed);
    teardown(&a);
    dbs_pool_close(a.pool);
    return !bad && a.failed == 0 && a.ok == a.units ? 0 : 1;
}
