/* What a dbscope session costs on MariaDB, and how much of it is the reset.
 *
 *   bench_mysql_reset URL [ITERATIONS]
 *
 * One thread, one connection, the same unit of work each time (a primary
 * key lookup in a transaction), measured five ways:
 *   raw        a dedicated libmariadb connection, the statement prepared
 *              once: START TRANSACTION, execute, COMMIT
 *   raw+reset  the same plus mysql_reset_connection and a new prepare after
 *              it, which is what a pool that resets must do at least
 *   reset      mysql_reset_connection alone
 *   dbscope    dbs_session_open, the lookup, dbs_commit, dbs_session_close
 *              with DBS_RESET_FULL (the default)
 *   rollback   the same with DBS_RESET_ROLLBACK (no state reset)
 *   tracked    the same with DBS_RESET_TRACKED (COM_RESET_CONNECTION only
 *              when the server reported a change of session state)
 * Three rounds, interleaved; prints one row per way: iterations, the best
 * round's microseconds per unit, the server's CPU microseconds per unit
 * (the least of the rounds: the connection's server thread, read from
 * /proc/TID/schedstat, so the server must run on this machine; "-" when it
 * cannot be read), and a checksum of the values read (every way but
 * "reset" must read the same).
 */
#define _POSIX_C_SOURCE 200809L
#include "dbscope.h"

#include <mysql.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_mysql_reset: %s: %s\n", what, msg);
    exit(1);
}

static dbs_pool *open_pool(const char *url, enum dbs_reset_mode mode)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.reset = mode;
    cfg.pre_ping = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        die("pool", err.message);
    return p;
}

/* CPU nanoseconds the server thread tid has run (0: unknown). */
static long long thread_ns(long tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/schedstat", tid);
    FILE *f = tid > 0 ? fopen(path, "r") : NULL;
    long long ns = 0;
    if (!f || fscanf(f, "%lld", &ns) != 1)
        ns = 0;
    if (f)
        fclose(f);
    return ns;
}

static const char *const tid_sql =
    "SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()";

/* The server thread of the pool's one connection. */
static long pool_tid(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        die("open", err.message);
    dbs_rows *r = dbs_query(s, tid_sql, NULL, 0, &err);
    long tid = r && dbs_rows_next(r, &err) == 1 ? (long)dbs_rows_int(r, 0) : 0;
    if (r)
        dbs_rows_close(r);
    dbs_session_close(s);
    return tid;
}

static int64_t unit(dbs_pool *p, int64_t k)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        die("open", err.message);
    dbs_value v[] = {DBS_INT(k % 100 + 1)};
    dbs_rows *r = dbs_query(s, "SELECT v FROM bench_reset WHERE id = $1", v, 1, &err);
    if (!r || dbs_rows_next(r, &err) != 1)
        die("query", err.message);
    int64_t x = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    if (dbs_commit(s, &err) != DBS_OK)
        die("commit", err.message);
    dbs_session_close(s);
    return x;
}

/* The raw client's parts, from the URL the pool parsed: the native handle
 * of a session opened only to borrow its connection parameters would hide
 * nothing, so the raw client connects with the same URL pieces itself. */
typedef struct raw {
    MYSQL *my;
    MYSQL_STMT *st;
} raw;

static void raw_prepare(raw *w)
{
    w->st = mysql_stmt_init(w->my);
    const char *q = "SELECT v FROM bench_reset WHERE id = ?";
    if (!w->st || mysql_stmt_prepare(w->st, q, (unsigned long)strlen(q)))
        die("prepare", mysql_error(w->my));
}

static int64_t raw_unit(raw *w, int64_t k)
{
    long long id = k % 100 + 1, v = 0;
    MYSQL_BIND b, o;
    memset(&b, 0, sizeof b);
    memset(&o, 0, sizeof o);
    b.buffer_type = MYSQL_TYPE_LONGLONG;
    b.buffer = &id;
    o.buffer_type = MYSQL_TYPE_LONGLONG;
    o.buffer = &v;
    if (mysql_query(w->my, "START TRANSACTION") || mysql_stmt_bind_param(w->st, &b) ||
        mysql_stmt_execute(w->st) || mysql_stmt_bind_result(w->st, &o) ||
        mysql_stmt_store_result(w->st) || mysql_stmt_fetch(w->st) != 0)
        die("raw unit", mysql_error(w->my));
    mysql_stmt_free_result(w->st);
    if (mysql_query(w->my, "COMMIT"))
        die("commit", mysql_error(w->my));
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage", "bench_mysql_reset URL [ITERATIONS]");
    const char *url = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 5000;

    dbs_pool *p = open_pool(url, DBS_RESET_FULL);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        die("open", err.message);
    if (dbs_exec(s, "CREATE TABLE IF NOT EXISTS bench_reset (id INT PRIMARY KEY, v BIGINT)",
                 NULL, 0, &err) < 0 ||
        dbs_exec(s, "DELETE FROM bench_reset", NULL, 0, &err) < 0)
        die("setup", err.message);
    for (int i = 1; i <= 100; i++) {
        dbs_value v[] = {DBS_INT(i), DBS_INT(i * 7)};
        if (dbs_exec(s, "INSERT INTO bench_reset VALUES ($1, $2)", v, 2, &err) < 0)
            die("insert", err.message);
    }
    if (dbs_commit(s, &err) != DBS_OK)
        die("commit", err.message);
    /* The raw client borrows the pool connection's own parameters. */
    MYSQL *borrowed = dbs_session_native(s);
    char host[256], user[128], db[128];
    snprintf(host, sizeof host, "%s", borrowed->host ? borrowed->host : "");
    snprintf(user, sizeof user, "%s", borrowed->user);
    snprintf(db, sizeof db, "%s", borrowed->db ? borrowed->db : "");
    unsigned port = borrowed->port;
    char pass[256];
    snprintf(pass, sizeof pass, "%s", borrowed->passwd ? borrowed->passwd : "");
    const char *sock = borrowed->unix_socket;
    char sockbuf[512];
    snprintf(sockbuf, sizeof sockbuf, "%s", sock ? sock : "");
    dbs_session_close(s);

    raw w = {mysql_init(NULL), NULL};
    if (!mysql_real_connect(w.my, host, user, pass, db, port, sockbuf[0] ? sockbuf : NULL, 0))
        die("raw connect", mysql_error(w.my));
    long raw_tid = 0;
    if (mysql_query(w.my, tid_sql) == 0) {
        MYSQL_RES *res = mysql_store_result(w.my);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        raw_tid = row && row[0] ? atol(row[0]) : 0;
        if (res)
            mysql_free_result(res);
    }
    raw_prepare(&w);

    /* Three rounds, the ways interleaved, the best round of each kept: a
     * shared machine's noise inflates times, it never deflates them. */
    dbs_pool *full = p, *rb = open_pool(url, DBS_RESET_ROLLBACK);
    dbs_pool *tracked = open_pool(url, DBS_RESET_TRACKED);
    enum { WAYS = 6, ROUNDS = 3 };
    static const char *const names[WAYS] = {"raw",     "raw+reset", "reset",
                                            "dbscope", "rollback",  "tracked"};
    double best[WAYS], server[WAYS];
    int64_t sums[WAYS] = {0};
    long tids[WAYS] = {raw_tid, raw_tid, raw_tid, pool_tid(full), pool_tid(rb),
                       pool_tid(tracked)};
    for (int k = 0; k < WAYS; k++)
        best[k] = server[k] = 1e30;
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < WAYS; k++) {
            int64_t sum = 0;
            long long c0 = thread_ns(tids[k]);
            double t0 = now_us();
            for (int i = 0; i < n; i++) {
                switch (k) {
                case 0: sum += raw_unit(&w, i); break;
                case 1:
                    sum += raw_unit(&w, i);
                    if (mysql_reset_connection(w.my))
                        die("reset", mysql_error(w.my));
                    mysql_stmt_close(w.st);
                    raw_prepare(&w);
                    break;
                case 2:
                    if (mysql_reset_connection(w.my))
                        die("reset", mysql_error(w.my));
                    /* the statement died with the reset */
                    if (i == n - 1) {
                        mysql_stmt_close(w.st);
                        raw_prepare(&w);
                    }
                    break;
                case 3: sum += unit(full, i); break;
                case 4: sum += unit(rb, i); break;
                default: sum += unit(tracked, i); break;
                }
            }
            double us = (now_us() - t0) / n;
            long long c1 = thread_ns(tids[k]);
            double sus = c0 && c1 ? (double)(c1 - c0) / 1e3 / n : 1e30;
            if (us < best[k])
                best[k] = us;
            if (sus < server[k])
                server[k] = sus;
            sums[k] = sum;
        }
    }
    printf("%-10s %10s %10s %10s %16s\n", "way", "units", "us/unit", "server_us", "checksum");
    for (int k = 0; k < WAYS; k++) {
        char sv[24] = "-";
        if (server[k] < 1e29)
            snprintf(sv, sizeof sv, "%.1f", server[k]);
        printf("%-10s %10d %10.1f %10s %16" PRId64 "\n", names[k], n, best[k], sv, sums[k]);
    }
    mysql_stmt_close(w.st);
    mysql_close(w.my);
    dbs_pool_close(full);
    dbs_pool_close(rb);
    dbs_pool_close(tracked);
    return 0;
}
