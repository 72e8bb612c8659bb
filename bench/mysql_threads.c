/* Threads doing units of work on MariaDB: dbscope beside a dedicated
 * libmariadb connection per thread and beside libzdb's pool.
 *
 *   bench_mysql_threads URL [THREADS] [POOL] [UNITS_PER_THREAD]
 *
 * The unit: START TRANSACTION, a primary-key lookup bound as a parameter,
 * COMMIT. Ways:
 *   dedicated  one libmariadb connection per thread, statement prepared
 *              once (no pool, no reset: the floor)
 *   dbscope    a pool of POOL connections, DBS_RESET_FULL (the default)
 *   dbs-rb     the same with DBS_RESET_ROLLBACK
 *   zdb        libzdb 3.1's pool of POOL connections (no reset; it returns
 *              NULL when every connection is taken, so threads yield and ask
 *              again)
 * Prints per way: threads, pool, units, units per second, and a checksum of
 * the values read (the same for every way).
 */
#define _POSIX_C_SOURCE 200809L
#include "dbscope.h"

#include <mysql.h>
#include <zdb/zdb.h>

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *url;
static int units;
static dbs_pool *pool;
static ConnectionPool_T zpool;
static char host[256], user[128], pass[256], db[128], sock[512];
static unsigned port;
static _Atomic int64_t checksum;
static atomic_int failed;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_mysql_threads: %s: %s\n", what, msg);
    exit(1);
}

static void *dedicated(void *arg)
{
    intptr_t t = (intptr_t)arg;
    MYSQL *my = mysql_init(NULL);
    if (!mysql_real_connect(my, host, user, pass, db, port, sock[0] ? sock : NULL, 0))
        die("connect", mysql_error(my));
    MYSQL_STMT *st = mysql_stmt_init(my);
    const char *q = "SELECT v FROM bench_threads WHERE id = ?";
    if (!st || mysql_stmt_prepare(st, q, (unsigned long)strlen(q)))
        die("prepare", mysql_error(my));
    int64_t sum = 0;
    for (int i = 0; i < units; i++) {
        long long id = (t * 7 + i) % 100 + 1, v = 0;
        MYSQL_BIND b, o;
        memset(&b, 0, sizeof b);
        memset(&o, 0, sizeof o);
        b.buffer_type = o.buffer_type = MYSQL_TYPE_LONGLONG;
        b.buffer = &id;
        o.buffer = &v;
        if (mysql_query(my, "START TRANSACTION") || mysql_stmt_bind_param(st, &b) ||
            mysql_stmt_execute(st) || mysql_stmt_bind_result(st, &o) ||
            mysql_stmt_store_result(st) || mysql_stmt_fetch(st) != 0 ||
            mysql_stmt_free_result(st) || mysql_query(my, "COMMIT"))
            die("unit", mysql_error(my));
        sum += v;
    }
    mysql_stmt_close(st);
    mysql_close(my);
    atomic_fetch_add(&checksum, sum);
    return NULL;
}

static int dbs_unit(dbs_session *s, void *arg, dbs_error *err)
{
    int64_t *io = arg;
    dbs_value v[] = {DBS_INT(*io)};
    dbs_rows *r = dbs_query(s, "SELECT v FROM bench_threads WHERE id = $1", v, 1, err);
    if (!r)
        return err->code;
    int rc = dbs_rows_next(r, err);
    *io = rc == 1 ? dbs_rows_int(r, 0) : 0;
    dbs_rows_close(r);
    return rc == 1 ? 0 : DBS_ESQL;
}

static void *with_dbscope(void *arg)
{
    intptr_t t = (intptr_t)arg;
    int64_t sum = 0;
    for (int i = 0; i < units; i++) {
        int64_t io = (t * 7 + i) % 100 + 1;
        dbs_error err;
        if (dbs_transact(pool, NULL, dbs_unit, &io, &err) != DBS_OK) {
            atomic_fetch_add(&failed, 1);
            continue;
        }
        sum += io;
    }
    atomic_fetch_add(&checksum, sum);
    return NULL;
}

static void *with_zdb(void *arg)
{
    intptr_t t = (intptr_t)arg;
    volatile int64_t sum = 0;
    for (int i = 0; i < units; i++) {
        long long id = (t * 7 + i) % 100 + 1;
        Connection_T c;
        while (!(c = ConnectionPool_getConnection(zpool)))
            sched_yield();
        volatile long long got = 0;
        TRY
        {
            Connection_beginTransaction(c);
            PreparedStatement_T p =
                Connection_prepareStatement(c, "SELECT v FROM bench_threads WHERE id = ?");
            PreparedStatement_setLLong(p, 1, id);
            ResultSet_T rs = PreparedStatement_executeQuery(p);
            if (ResultSet_next(rs))
                got = ResultSet_getLLong(rs, 1);
            Connection_commit(c);
        }
        ELSE
        {
            atomic_fetch_add(&failed, 1);
        }
        END_TRY;
        Connection_close(c);
        sum += got;
    }
    atomic_fetch_add(&checksum, sum);
    return NULL;
}

static void run_way(const char *name, void *(*fn)(void *), int threads, int psize)
{
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!th)
        die("memory", "calloc");
    atomic_store(&checksum, 0);
    atomic_store(&failed, 0);
    double t0 = now_s();
    for (intptr_t i = 0; i < threads; i++)
        if (pthread_create(&th[i], NULL, fn, (void *)i) != 0)
            die("thread", name);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double secs = now_s() - t0;
    free(th);
    printf("%-10s %8d %6d %10d %12.0f %16" PRId64 "%s\n", name, threads, psize,
           threads * units, threads * units / secs, atomic_load(&checksum),
           atomic_load(&failed) ? "  FAILURES" : "");
}

static dbs_pool *open_pool(int psize, enum dbs_reset_mode mode)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = psize;
    cfg.max_overflow = 0;
    cfg.reset = mode;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        die("pool", err.message);
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage", "bench_mysql_threads URL [THREADS] [POOL] [UNITS_PER_THREAD]");
    url = argv[1];
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    int psize = argc > 3 ? atoi(argv[3]) : 4;
    units = argc > 4 ? atoi(argv[4]) : 1000;

    pool = open_pool(psize, DBS_RESET_FULL);
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    if (!s)
        die("open", err.message);
    if (dbs_exec(s, "CREATE TABLE IF NOT EXISTS bench_threads (id INT PRIMARY KEY, v BIGINT)",
                 NULL, 0, &err) < 0 ||
        dbs_exec(s, "DELETE FROM bench_threads", NULL, 0, &err) < 0)
        die("setup", err.message);
    for (int i = 1; i <= 100; i++) {
        dbs_value v[] = {DBS_INT(i), DBS_INT(i * 3)};
        if (dbs_exec(s, "INSERT INTO bench_threads VALUES ($1, $2)", v, 2, &err) < 0)
            die("insert", err.message);
    }
    if (dbs_commit(s, &err) != DBS_OK)
        die("commit", err.message);
    /* The other clients connect with the same parameters as the pool. */
    MYSQL *m = dbs_session_native(s);
    snprintf(host, sizeof host, "%s", m->host ? m->host : "");
    snprintf(user, sizeof user, "%s", m->user);
    snprintf(pass, sizeof pass, "%s", m->passwd ? m->passwd : "");
    snprintf(db, sizeof db, "%s", m->db ? m->db : "");
    snprintf(sock, sizeof sock, "%s", m->unix_socket && !m->port ? m->unix_socket : "");
    port = m->port;
    dbs_session_close(s);

    printf("%-10s %8s %6s %10s %12s %16s\n", "way", "threads", "pool", "units", "units/s",
           "checksum");
    run_way("dedicated", dedicated, threads, threads);
    run_way("dbscope", with_dbscope, threads, psize);
    dbs_pool_close(pool);
    pool = open_pool(psize, DBS_RESET_ROLLBACK);
    run_way("dbs-rb", with_dbscope, threads, psize);
    dbs_pool_close(pool);

    char zurl[1200];
    snprintf(zurl, sizeof zurl, "mysql://%s:%u/%s?user=%s&password=%s", host, port, db, user,
             pass);
    URL_T u = URL_new(zurl);
    if (!u)
        die("zdb", "bad URL");
    zpool = ConnectionPool_new(u);
    ConnectionPool_setInitialConnections(zpool, psize);
    ConnectionPool_setMaxConnections(zpool, psize);
    TRY
    {
        ConnectionPool_start(zpool);
    }
    ELSE
    {
        die("zdb start", Exception_frame.message);
    }
    END_TRY;
    run_way("zdb", with_zdb, threads, psize);
    ConnectionPool_stop(zpool);
    ConnectionPool_free(&zpool);
    URL_free(&u);
    return 0;
}
