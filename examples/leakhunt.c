/*
 * leakhunt: a small service with a connection leak, and the tools that find
 * it. docs/leaks.md walks through its output.
 *
 * Eight worker threads serve "order lookups" on a pool of 4 connections.
 * lookup_order() forgets to close its session when the order does not exist,
 * so every miss keeps a connection for good. Soon the pool is dry and the
 * other requests time out. The program then shows what an operator would
 * look at while it runs: the leak reports the housekeeper printed, the
 * pool's stats, the list of sessions still open with the line that
 * acquired each, and the Prometheus metrics; then it stops the workers,
 * whose exits give the leaked connections back.
 *
 * Usage: leakhunt [seconds]       (default 3)
 * Database: DATABASE_URL (default sqlite:leakhunt.db).
 */
#include "dbscope.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { WORKERS = 8, ORDERS = 50 };
enum { NOT_FOUND = 1 }; /* lookup_order: no such order */

static dbs_pool *pool;
static atomic_bool stopping;
static atomic_long served, timed_out, missing;

/* The bug: the early return for a missing order skips dbs_session_close.
 * Compiled with -fanalyzer -DDBSCOPE_ANALYZE, GCC reports it (docs/leaks.md). */
static int lookup_order(const dbs_context *ctx, int order_id, int64_t *total)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, ctx, &err);
    if (!s)
        return err.code;
    dbs_value id = DBS_INT(order_id);
    dbs_rows *r = dbs_query(s, "SELECT total FROM orders WHERE id = $1", &id, 1, &err);
    if (!r) {
        dbs_session_close(s);
        return err.code;
    }
    if (dbs_rows_next(r, &err) != 1) {
        dbs_rows_close(r);
        return NOT_FOUND; /* leaks s */
    }
    *total = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    dbs_session_close(s);
    return DBS_OK;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    unsigned seed = (unsigned)id * 2654435761u;
    char request_id[32], user_id[32];
    for (int i = 0; !atomic_load(&stopping); i++) {
        snprintf(request_id, sizeof request_id, "req-%ld-%d", id, i);
        snprintf(user_id, sizeof user_id, "user-%ld", id);
        dbs_context ctx = {.request_id = request_id, .user_id = user_id};
        /* about one lookup in 50 asks for an order that does not exist */
        int order = (int)(rand_r(&seed) % (ORDERS + 1)) + 1;
        int64_t total;
        int rc = lookup_order(&ctx, order, &total);
        if (rc == DBS_OK)
            atomic_fetch_add(&served, 1);
        else if (rc == NOT_FOUND)
            atomic_fetch_add(&missing, 1);
        else if (rc == DBS_ETIMEOUT)
            atomic_fetch_add(&timed_out, 1);
        struct timespec pause = {0, 1000 * 1000}; /* 1 ms between requests */
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static int setup(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    if (dbs_exec(s, "DROP TABLE IF EXISTS orders", NULL, 0, err) < 0 ||
        dbs_exec(s, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL)",
                 NULL, 0, err) < 0)
        return err->code;
    for (int i = 1; i <= ORDERS; i++) {
        dbs_value v[] = {DBS_INT(i), DBS_INT(i * 100)};
        if (dbs_exec(s, "INSERT INTO orders (id, total) VALUES ($1, $2)", v, 2, err) < 0)
            return err->code;
    }
    return 0;
}

static void print_session(const dbs_session_info *in, void *user)
{
    (void)user;
    printf("  conn=%llu held %lld ms by thread %lx at %s:%d (%s)%s request_id=%s\n",
           (unsigned long long)in->conn_id, (long long)in->age_ms, in->thread, in->file,
           in->line, in->func, in->in_transaction ? " in transaction" : "",
           in->ctx.request_id ? in->ctx.request_id : "-");
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 3;
    if (seconds <= 0) {
        fprintf(stderr, "usage: leakhunt [seconds > 0]\n");
        return 2;
    }
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite:leakhunt.db";
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 200;
    cfg.leak_threshold_ms = 1000;
    cfg.name = "orders";
    dbs_error err;
    if (dbs_config_from_env(&cfg, &err) != DBS_OK) {
        fprintf(stderr, "leakhunt: %s\n", err.message);
        return 2;
    }
    pool = dbs_pool_open(&cfg, &err);
    if (!pool) {
        fprintf(stderr, "leakhunt: %s\n", err.message);
        return 1;
    }
    if (dbs_transact(pool, NULL, setup, NULL, &err) != DBS_OK) {
        fprintf(stderr, "leakhunt: setup: %s\n", err.message);
        dbs_pool_close(pool);
        return 1;
    }

    pthread_t t[WORKERS];
    for (long i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    struct timespec run = {seconds, 0};
    nanosleep(&run, NULL);

    /* What an operator looks at while the service runs (the workers are
     * still up: once a thread exits, its leaked sessions are given back) */
    dbs_stats st;
    dbs_pool_stats(pool, &st);
    printf("served %ld, not found %ld, timed out %ld\n", atomic_load(&served),
           atomic_load(&missing), atomic_load(&timed_out));
    printf("pool: size %d, in use %d, idle %d, timeouts %llu, leaks %llu\n", st.size,
           st.in_use, st.idle, (unsigned long long)st.timeouts, (unsigned long long)st.leaks);
    printf("open sessions:\n");
    dbs_pool_sessions(pool, print_session, NULL);

    static char metrics[64 * 1024];
    if (dbs_pool_metrics(pool, metrics, sizeof metrics) >= 0) {
        printf("metrics (excerpt):\n");
        for (char *line = strtok(metrics, "\n"); line; line = strtok(NULL, "\n"))
            if (!strncmp(line, "dbscope_connections{", 20) ||
                !strncmp(line, "dbscope_waiting_threads", 23) ||
                !strncmp(line, "dbscope_acquire_timeouts_total", 30) ||
                !strncmp(line, "dbscope_leaks_total", 19))
                printf("  %s\n", line);
    }

    atomic_store(&stopping, true);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    /* each worker's exit rolled back its leaked sessions and gave their
     * connections back, reporting each again */
    dbs_pool_stats(pool, &st);
    printf("after the workers exited: in use %d, leaks %llu, recovered %llu\n", st.in_use,
           (unsigned long long)st.leaks, (unsigned long long)st.leaks_recovered);
    dbs_pool_close(pool); /* would report any session still out, and close its connection */
    return 0;
}
