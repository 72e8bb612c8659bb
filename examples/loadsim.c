/*
 * loadsim: simulated concurrent requests, each with its own session.
 *
 * Worker threads play web requests: each request opens a session through
 * dbs_transact with a request context, does a little reading and writing on
 * a small ledger, and gives the connection back. A few requests on purpose
 * fail half-way and must leave nothing behind. At the end it checks the
 * ledger balances and prints the pool's stats.
 *
 * Usage: loadsim [requests-per-thread] [threads]
 * Database: DATABASE_URL (default sqlite:loadsim.db) and DB_POOL_* variables.
 */
#include "dbscope.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ACCOUNTS = 20 };

static dbs_pool *pool;
static int requests_per_thread = 500;

struct transfer {
    int from, to, amount;
    int fail_halfway; /* a request that dies after its first write */
};

static int do_transfer(dbs_session *s, void *arg, dbs_error *err)
{
    const struct transfer *t = arg;
    dbs_value debit[] = {DBS_INT(t->amount), DBS_INT(t->from)};
    int64_t rc = dbs_exec(s, "UPDATE account SET balance = balance - $1 WHERE id = $2",
                          debit, 2, err);
    if (rc < 0)
        return (int)rc;
    if (t->fail_halfway)
        return 1; /* rolled back by dbs_transact (which reports DBS_ESQL):
                     the debit never happened */
    dbs_value credit[] = {DBS_INT(t->amount), DBS_INT(t->to)};
    rc = dbs_exec(s, "UPDATE account SET balance = balance + $1 WHERE id = $2", credit, 2, err);
    if (rc < 0)
        return (int)rc;
    dbs_value log[] = {DBS_INT(t->from), DBS_INT(t->to), DBS_INT(t->amount)};
    rc = dbs_exec(s, "INSERT INTO transfer_log (src, dst, amount) VALUES ($1, $2, $3)", log, 3,
                  err);
    return rc < 0 ? (int)rc : 0;
}

static void *request_thread(void *arg)
{
    long id = (long)arg;
    unsigned seed = (unsigned)id * 7919u + 1;
    char request_id[32], user_id[32];
    for (int i = 0; i < requests_per_thread; i++) {
        snprintf(request_id, sizeof request_id, "req-%ld-%d", id, i);
        snprintf(user_id, sizeof user_id, "user-%ld", id);
        dbs_context ctx = {.request_id = request_id, .user_id = user_id};
        struct transfer t = {
            .from = (int)(rand_r(&seed) % ACCOUNTS) + 1,
            .to = (int)(rand_r(&seed) % ACCOUNTS) + 1,
            .amount = (int)(rand_r(&seed) % 50) + 1,
            .fail_halfway = rand_r(&seed) % 10 == 0,
        };
        dbs_error err;
        int rc = dbs_transact(pool, &ctx, do_transfer, &t, &err);
        if (rc != 0 && !(t.fail_halfway && rc == DBS_ESQL))
            fprintf(stderr, "request %s failed: %s\n", request_id, err.message);
    }
    return NULL;
}

static int setup(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    /* One statement a call: PostgreSQL prepares each statement and MariaDB
     * takes one a round trip, so neither accepts a list. */
    static const char *const schema[] = {
        "DROP TABLE IF EXISTS transfer_log",
        "DROP TABLE IF EXISTS account",
        "CREATE TABLE account (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL)",
        "CREATE TABLE transfer_log (src INTEGER, dst INTEGER, amount BIGINT)",
    };
    int64_t rc = 0;
    for (size_t i = 0; rc >= 0 && i < sizeof schema / sizeof schema[0]; i++)
        rc = dbs_exec(s, schema[i], NULL, 0, err);
    for (int i = 1; rc >= 0 && i <= ACCOUNTS; i++) {
        dbs_value v[] = {DBS_INT(i)};
        rc = dbs_exec(s, "INSERT INTO account (id, balance) VALUES ($1, 1000)", v, 1, err);
    }
    return rc < 0 ? (int)rc : 0;
}

int main(int argc, char **argv)
{
    int threads = 8;
    if (argc > 1)
        requests_per_thread = atoi(argv[1]);
    if (argc > 2)
        threads = atoi(argv[2]);
    if (requests_per_thread <= 0 || threads <= 0 || threads > 1024) {
        fprintf(stderr, "usage: loadsim [requests-per-thread > 0] [threads 1..1024]\n");
        return 2;
    }
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite:loadsim.db";
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.retry_max = 20; /* one SQLite writer at a time: busy is expected */
    dbs_error err;
    if (dbs_config_from_env(&cfg, &err) != DBS_OK) {
        fprintf(stderr, "loadsim: %s\n", err.message);
        return 2;
    }
    pool = dbs_pool_open(&cfg, &err);
    if (!pool) {
        fprintf(stderr, "loadsim: %s\n", err.message);
        return 1;
    }
    if (dbs_transact(pool, NULL, setup, NULL, &err) != 0) {
        fprintf(stderr, "loadsim: setting up the schema: %s\n", err.message);
        dbs_pool_close(pool);
        return 1;
    }
    /* The backend, not the URL: a URL may carry a password. */
    static const char *const backends[] = {"unknown", "sqlite", "postgresql", "mariadb"};
    dbs_backend b = dbs_pool_backend(pool);
    printf("loadsim: %d threads x %d requests on %s, pool_size=%d\n", threads,
           requests_per_thread, (unsigned)b < 4 ? backends[b] : "unknown", cfg.pool_size);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!th)
        return 1;
    for (long i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, request_thread, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    free(th);

    /* Money moved but none was made or lost: failed requests left nothing. */
    int status = 0;
    DBS_SCOPED dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s) {
        fprintf(stderr, "loadsim: %s\n", err.message);
        dbs_pool_close(pool);
        return 1;
    }
    dbs_rows *r = dbs_query(s, "SELECT SUM(balance), (SELECT COUNT(*) FROM transfer_log) "
                               "FROM account", NULL, 0, &err);
    if (r && dbs_rows_next(r, &err) == 1) {
        long long total = (long long)dbs_rows_int(r, 0);
        long long moves = (long long)dbs_rows_int(r, 1);
        printf("loadsim: %lld transfers committed, total balance %lld (expected %d): %s\n",
               moves, total, ACCOUNTS * 1000, total == ACCOUNTS * 1000 ? "ok" : "WRONG");
        status = total == ACCOUNTS * 1000 ? 0 : 1;
    } else {
        fprintf(stderr, "loadsim: %s\n", err.message);
        status = 1;
    }
    dbs_rows_close(r);
    dbs_session_close(s);
    s = NULL;

    dbs_stats st;
    dbs_pool_stats(pool, &st);
    printf("pool: size=%d idle=%d in_use=%d waiting=%d acquired=%llu released=%llu "
           "created=%llu closed=%llu timeouts=%llu retries=%llu leaks=%llu\n",
           st.size, st.idle, st.in_use, st.waiting, (unsigned long long)st.acquired,
           (unsigned long long)st.released, (unsigned long long)st.created,
           (unsigned long long)st.closed, (unsigned long long)st.timeouts,
           (unsigned long long)st.retries, (unsigned long long)st.leaks);
    dbs_pool_close(pool);
    return status;
}
