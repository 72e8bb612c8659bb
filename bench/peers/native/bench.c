/*
 * The C side of the benchmark harness: dbscope and the C peers behind one
 * driver, so every system runs the same loop, clock and bookkeeping.
 *
 *   bench_native SYSTEM SCENARIO --db URL [--matrix T:P,...] [--seconds S]
 *                [--warmup S] [--timeline]
 *   bench_native setup sqlite|pg|mysql --db URL  (creates the bench table)
 *   bench_native memory sqlite|pg --db URL      (dbscope bytes a connection)
 *
 * SYSTEM: dbscope (with leak reports on), dbscope-noval (validation off),
 * dbscope-fifo (barge_limit_us = 0: strict order),
 * dbscope-rollback (reset = DBS_RESET_ROLLBACK),
 * dbscope-blind (histograms and leak reports off), none (dbscope NONE mode:
 * connect per request), direct (each thread owns a raw connection: sqlite3,
 * libpq, or libmariadb with server-side prepared statements), zdb
 * (libzdb 3.1), lock (the floor: one pthread mutex lock and unlock, cycle
 * only), bouncer (raw libpq, each thread its own client connection,
 * through PgBouncer: --db points at PgBouncer).
 * SCENARIO: cycle (acquire + release), sqlite (BEGIN; SELECT by key;
 * COMMIT), pg (BEGIN; SELECT; UPDATE; COMMIT), mysql (the pg unit on
 * MariaDB: --db is a mysql:// or mariadb:// URL, or libzdb's for zdb with
 * --check-url ours), fair (the sqlite unit, for fairness), recovery (the pg
 * unit, with a timeline of throughput). MariaDB needs a build with
 * DBSCOPE_WITH_MYSQL; without it, its URLs are refused.
 *
 * Prints one line a matrix entry:
 *   RESULT {"system":..., "ops":..., "ops_s":..., "p50_us":..., ...}
 * Every unit checks what it read (v = 3 * id) and the pg unit's updates are
 * counted in the table, so a run that skipped work reports check "bad".
 */
#define _GNU_SOURCE
#include "dbscope.h"

#include <errno.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <zdb.h>
#ifdef DBSCOPE_WITH_MYSQL
#include <mysql.h>
#endif

enum { ROWS = 1000, MAXT = 64, HB = 64 * 16, TL_MAX = 600 };

/* ---- time and histograms ---- */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* 16 buckets a power of two of nanoseconds: within 6% */
static int bucket(int64_t ns)
{
    if (ns < 16)
        return (int)(ns < 0 ? 0 : ns);
    int o = 63 - __builtin_clzll((unsigned long long)ns);
    int b = (o - 3) * 16 + (int)((ns >> (o - 4)) & 15);
    return b < HB ? b : HB - 1;
}

static double bucket_ns(int b)
{
    if (b < 16)
        return b;
    int o = b / 16 + 3;
    return (double)((16 + (b % 16)) * (1LL << (o - 4))) * 1.03;
}

static double percentile(const uint64_t *h, double q)
{
    uint64_t n = 0;
    for (int i = 0; i < HB; i++)
        n += h[i];
    if (!n)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)n), seen = 0;
    for (int i = 0; i < HB; i++) {
        seen += h[i];
        if (seen >= rank)
            return bucket_ns(i);
    }
    return bucket_ns(HB - 1);
}

/* ---- the run ---- */

typedef struct run run;

typedef struct system_ops {
    const char *name;
    int (*open)(run *r);           /* 0 or -1 */
    void *(*thread_open)(run *r);  /* per-thread state (direct) */
    void (*thread_close)(run *r, void *ts);
    void *(*acquire)(run *r, void *ts);
    void (*release)(run *r, void *ts, void *h);
    int (*unit)(run *r, void *ts, void *h, int64_t id, int64_t *v, bool update);
    void (*close)(run *r);
} system_ops;

struct run {
    const system_ops *sys;
    const char *scenario, *db;
    bool pg, my, update, cycle;
    int threads, pool;
    double seconds;
    atomic_bool stop;
    atomic_bool measuring;
    int64_t t0;
    dbs_pool *dpool;
    ConnectionPool_T zpool;
    URL_T zurl;
    bool timeline;
};

typedef struct worker {
    run *r;
    int idx;
    uint64_t ops, errors;
    uint64_t lat[HB], wait[HB];
    int64_t wait_max;
    uint64_t checksum, expected;
    uint64_t tl_ops[TL_MAX], tl_err[TL_MAX];
} worker;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---- dbscope ---- */

static int barge_limit_us = -1; /* -1: the default */

static int d_open_cfg(run *r, enum dbs_pool_mode mode, bool validate, bool observe,
                      enum dbs_reset_mode reset)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    if (barge_limit_us >= 0)
        cfg.barge_limit_us = barge_limit_us;
    /* observability on: histograms (the default) and leak reports; off:
     * neither, for the cost of watching */
    cfg.metrics = observe;
    cfg.leak_threshold_ms = observe ? 60000 : 0;
    cfg.url = r->db;
    cfg.pool_size = r->pool;
    cfg.max_overflow = 0;
    cfg.mode = mode;
    cfg.pre_ping = validate;
    cfg.log_events = 0;
    cfg.retry_max = 0; /* the bench counts failures itself */
    cfg.reset = reset;
    dbs_error err;
    r->dpool = dbs_pool_open(&cfg, &err);
    if (!r->dpool)
        fprintf(stderr, "dbscope: %s\n", err.message);
    return r->dpool ? 0 : -1;
}

static int d_open(run *r) { return d_open_cfg(r, DBS_POOL_QUEUE, true, true, DBS_RESET_FULL); }
/* The same pool with barge_limit_us = 0: strict first come, first served. */
static int d_open_fifo(run *r)
{
    barge_limit_us = 0;
    return d_open_cfg(r, DBS_POOL_QUEUE, true, true, DBS_RESET_FULL);
}
static int d_open_noval(run *r)
{
    return d_open_cfg(r, DBS_POOL_QUEUE, false, true, DBS_RESET_FULL);
}
static int d_open_none(run *r) { return d_open_cfg(r, DBS_POOL_NONE, true, true, DBS_RESET_FULL); }
static int d_open_blind(run *r)
{
    return d_open_cfg(r, DBS_POOL_QUEUE, true, false, DBS_RESET_FULL);
}
/* The documented opt-out: release only rolls back, so the caller promises
 * to leave no session state; beside dbscope, what the full reset costs. */
static int d_open_rollback(run *r)
{
    return d_open_cfg(r, DBS_POOL_QUEUE, true, true, DBS_RESET_ROLLBACK);
}

static void *d_acquire(run *r, void *ts)
{
    (void)ts;
    dbs_error err;
    return dbs_session_open(r->dpool, NULL, &err);
}

/* Set by a unit that ended its session itself (dbs_session_commit_close):
 * the release then has nothing left to do. */
static _Thread_local bool d_unit_closed;

static void d_release(run *r, void *ts, void *h)
{
    (void)r;
    (void)ts;
    if (d_unit_closed)
        d_unit_closed = false;
    else
        dbs_session_close(h);
}

static int d_unit(run *r, void *ts, void *h, int64_t id, int64_t *v, bool update)
{
    (void)r;
    (void)ts;
    dbs_session *s = h;
    dbs_error err;
    dbs_value p = DBS_INT(id);
    dbs_rows *rows = dbs_query(s, "SELECT v FROM bench WHERE id = $1", &p, 1, &err);
    if (!rows)
        return -1;
    int n = dbs_rows_next(rows, &err);
    if (n == 1)
        *v = dbs_rows_int(rows, 0);
    dbs_rows_close(rows);
    if (n != 1)
        return -1;
    if (update && dbs_exec(s, "UPDATE bench SET n = n + 1 WHERE id = $1", &p, 1, &err) != 1)
        return -1;
    /* The session ends with its commit, and says so: the reset then rides
     * with the COMMIT (dbs_commit and then dbs_session_close would cost
     * PostgreSQL one more turn; bench/reset_cost.sh, "full-commit"). */
    d_unit_closed = true;
    return dbs_session_commit_close(s, &err) == DBS_OK ? 0 : -1;
}

static void d_close(run *r)
{
    dbs_pool_close(r->dpool);
}

/* ---- direct: raw sqlite3 / libpq / libmariadb, a connection a thread ---- */

typedef struct direct {
    sqlite3 *db;
    sqlite3_stmt *begin, *sel, *commit;
    PGconn *pg;
#ifdef DBSCOPE_WITH_MYSQL
    MYSQL *my;
    MYSQL_STMT *msel, *mupd;
#endif
    bool prepared;
    bool broken; /* a unit failed: the protocol state is unknown */
} direct;

static const char *sqlite_path(const char *url)
{
    if (!strncmp(url, "sqlite://", 9))
        return url + 9;
    if (!strncmp(url, "sqlite:", 7))
        return url + 7;
    return url;
}

/* Through PgBouncer in transaction mode, named statements would not
 * survive: unnamed ones there, prepared ones on a direct connection (again
 * after every reconnect). */
static void x_prepare(run *r, direct *d)
{
    d->prepared = false;
    if (!strcmp(r->sys->name, "bouncer"))
        return;
    PGresult *a = PQprepare(d->pg, "sel", "SELECT v FROM bench WHERE id = $1", 1, NULL);
    PGresult *b = PQprepare(d->pg, "upd", "UPDATE bench SET n = n + 1 WHERE id = $1", 1, NULL);
    d->prepared = PQresultStatus(a) == PGRES_COMMAND_OK && PQresultStatus(b) == PGRES_COMMAND_OK;
    PQclear(a);
    PQclear(b);
}

static bool is_mysql_url(const char *url)
{
    return !strncmp(url, "mysql://", 8) || !strncmp(url, "mariadb://", 10);
}

#ifdef DBSCOPE_WITH_MYSQL
/* The parts of a mysql:// URL libmariadb needs: the query's other options
 * are dbscope's own, not for it. %XX is decoded. */
typedef struct my_url {
    char user[128], pass[256], host[256], db[128], socket[512];
    unsigned port;
} my_url;

static void my_decode(char *dst, size_t cap, const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n && w + 1 < cap; i++) {
        unsigned x;
        if (s[i] == '%' && i + 2 < n && sscanf(s + i + 1, "%2x", &x) == 1) {
            dst[w++] = (char)x;
            i += 2;
        } else {
            dst[w++] = s[i];
        }
    }
    dst[w] = '\0';
}

static void my_parse(const char *url, my_url *u)
{
    memset(u, 0, sizeof *u);
    const char *p = strstr(url, "://");
    if (!p)
        die("bench_native: not a mysql:// URL");
    p += 3;
    const char *end = p + strcspn(p, "/?");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        my_decode(u->user, sizeof u->user, p, (size_t)((colon ? colon : at) - p));
        if (colon)
            my_decode(u->pass, sizeof u->pass, colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *colon = memchr(p, ':', (size_t)(end - p));
    my_decode(u->host, sizeof u->host, p, (size_t)((colon ? colon : end) - p));
    if (colon)
        u->port = (unsigned)atoi(colon + 1);
    if (*end == '/')
        my_decode(u->db, sizeof u->db, end + 1, strcspn(end + 1, "?"));
    const char *q = strchr(end, '?');
    for (const char *k = q; k; k = strchr(k + 1, '&'))
        if (!strncmp(k + 1, "socket=", 7))
            my_decode(u->socket, sizeof u->socket, k + 8, strcspn(k + 8, "&"));
}

static MYSQL *my_connect(const char *url)
{
    my_url u;
    my_parse(url, &u);
    MYSQL *my = mysql_init(NULL);
    if (!my)
        die("bench_native: out of memory");
    if (!mysql_real_connect(my, u.host[0] ? u.host : NULL, u.user, u.pass, u.db, u.port,
                            u.socket[0] ? u.socket : NULL, CLIENT_FOUND_ROWS)) {
        fprintf(stderr, "direct: %s\n", mysql_error(my));
        mysql_close(my);
        return NULL;
    }
    return my;
}

/* The floor: statements prepared once on the server (again after a
 * reconnect), executed with bound parameters. */
static bool my_prepare(direct *d)
{
    static const char sel[] = "SELECT v FROM bench WHERE id = ?",
                      upd[] = "UPDATE bench SET n = n + 1 WHERE id = ?";
    d->msel = mysql_stmt_init(d->my);
    d->mupd = mysql_stmt_init(d->my);
    return d->msel && d->mupd && !mysql_stmt_prepare(d->msel, sel, sizeof sel - 1) &&
           !mysql_stmt_prepare(d->mupd, upd, sizeof upd - 1);
}

static void my_drop(direct *d)
{
    if (d->msel)
        mysql_stmt_close(d->msel);
    if (d->mupd)
        mysql_stmt_close(d->mupd);
    if (d->my)
        mysql_close(d->my);
    d->msel = d->mupd = NULL;
    d->my = NULL;
}

static bool my_open(run *r, direct *d)
{
    d->my = my_connect(r->db);
    if (d->my && my_prepare(d))
        return true;
    if (d->my)
        fprintf(stderr, "direct: %s\n", mysql_error(d->my));
    my_drop(d);
    return false;
}

static int my_unit(direct *d, int64_t id, int64_t *v, bool update)
{
    long long key = id, got = 0;
    MYSQL_BIND in, out;
    memset(&in, 0, sizeof in);
    memset(&out, 0, sizeof out);
    in.buffer_type = out.buffer_type = MYSQL_TYPE_LONGLONG;
    in.buffer = &key;
    out.buffer = &got;
    if (mysql_real_query(d->my, "START TRANSACTION", 17) || mysql_stmt_bind_param(d->msel, &in) ||
        mysql_stmt_execute(d->msel) || mysql_stmt_bind_result(d->msel, &out) ||
        mysql_stmt_store_result(d->msel))
        goto fail;
    int f = mysql_stmt_fetch(d->msel);
    mysql_stmt_free_result(d->msel);
    if (f != 0)
        goto fail;
    if (update && (mysql_stmt_bind_param(d->mupd, &in) || mysql_stmt_execute(d->mupd) ||
                   mysql_stmt_affected_rows(d->mupd) != 1))
        goto fail;
    if (mysql_real_query(d->my, "COMMIT", 6))
        goto fail;
    *v = got;
    return 0;
fail:
    d->broken = true;
    return -1;
}

/* Sum of n over the table, on a connection of its own. */
static long long my_total(const char *url)
{
    MYSQL *my = my_connect(url);
    long long n = -1;
    if (my && !mysql_query(my, "SELECT coalesce(sum(n), 0) FROM bench")) {
        MYSQL_RES *res = mysql_store_result(my);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        if (row && row[0])
            n = strtoll(row[0], NULL, 10);
        mysql_free_result(res);
    }
    if (my)
        mysql_close(my);
    return n;
}

static void my_setup(const char *url)
{
    MYSQL *my = my_connect(url);
    if (!my)
        die("setup: cannot connect to MariaDB");
    char *sql = malloc(64 * ROWS + 128);
    if (!sql)
        die("setup: out of memory");
    int w = sprintf(sql, "INSERT INTO bench (id, v) VALUES ");
    for (int i = 1; i <= ROWS; i++)
        w += sprintf(sql + w, "%s(%d, %d)", i > 1 ? "," : "", i, 3 * i);
    if (mysql_query(my, "DROP TABLE IF EXISTS bench") ||
        mysql_query(my, "CREATE TABLE bench (id INT PRIMARY KEY, v BIGINT NOT NULL,"
                        " n BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB") ||
        mysql_query(my, sql))
        die("setup: %s", mysql_error(my));
    free(sql);
    mysql_close(my);
}
#else
static bool my_open(run *r, direct *d)
{
    (void)r;
    (void)d;
    die("bench_native: built without MariaDB (DBSCOPE_WITH_MYSQL)");
}

static long long my_total(const char *url)
{
    (void)url;
    die("bench_native: built without MariaDB (DBSCOPE_WITH_MYSQL)");
}

static void my_setup(const char *url)
{
    (void)url;
    die("bench_native: built without MariaDB (DBSCOPE_WITH_MYSQL)");
}
#endif

static void *x_thread_open(run *r)
{
    direct *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    if (!r->pg) {
        if (sqlite3_open(sqlite_path(r->db), &d->db) != SQLITE_OK)
            die("direct: %s", sqlite3_errmsg(d->db));
        sqlite3_busy_timeout(d->db, 5000);
        sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL,
                     NULL);
        sqlite3_prepare_v2(d->db, "BEGIN", -1, &d->begin, NULL);
        sqlite3_prepare_v2(d->db, "SELECT v FROM bench WHERE id = ?1", -1, &d->sel, NULL);
        sqlite3_prepare_v2(d->db, "COMMIT", -1, &d->commit, NULL);
        return d;
    }
    if (r->my) {
        if (my_open(r, d))
            return d;
        free(d);
        return NULL;
    }
    d->pg = PQconnectdb(r->db);
    if (PQstatus(d->pg) != CONNECTION_OK) {
        fprintf(stderr, "direct: %s", PQerrorMessage(d->pg));
        PQfinish(d->pg);
        free(d);
        return NULL;
    }
    x_prepare(r, d);
    return d;
}

static void x_thread_close(run *r, void *ts)
{
    (void)r;
    direct *d = ts;
    if (!d)
        return;
    if (d->db) {
        sqlite3_finalize(d->begin);
        sqlite3_finalize(d->sel);
        sqlite3_finalize(d->commit);
        sqlite3_close(d->db);
    }
    if (d->pg)
        PQfinish(d->pg);
#ifdef DBSCOPE_WITH_MYSQL
    my_drop(d);
#endif
    free(d);
}

static void *x_acquire(run *r, void *ts)
{
    direct *d = ts;
    if (d && d->pg && (d->broken || PQstatus(d->pg) != CONNECTION_OK)) {
        /* what a careful hand-written server does after a failure:
         * reconnect, prepare again */
        PQreset(d->pg);
        d->broken = false;
        if (PQstatus(d->pg) == CONNECTION_OK)
            x_prepare(r, d);
    }
#ifdef DBSCOPE_WITH_MYSQL
    if (d && r->my && (d->broken || !d->my)) {
        /* the same after a failure on MariaDB: a fresh connection */
        my_drop(d);
        d->broken = !my_open(r, d);
        if (d->broken)
            return NULL;
    }
#endif
    return ts;
}

static void x_release(run *r, void *ts, void *h)
{
    (void)r;
    (void)ts;
    (void)h;
}

static bool step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE;
}

/* One pipelined exchange: BEGIN and the SELECT together, as dbscope does. */
static int pg_collect(PGconn *pg, int n, int64_t *v)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        PGresult *res;
        while ((res = PQgetResult(pg)) != NULL) {
            ExecStatusType s = PQresultStatus(res);
            if (s == PGRES_TUPLES_OK && PQntuples(res) == 1 && v)
                *v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            if (s == PGRES_FATAL_ERROR || s == PGRES_PIPELINE_ABORTED)
                ok = -1;
            if (s == PGRES_COMMAND_OK && !strncmp(PQcmdStatus(res), "UPDATE", 6) &&
                strcmp(PQcmdTuples(res), "1") != 0)
                ok = -1;
            PQclear(res);
        }
    }
    PGresult *sync = PQgetResult(pg);
    if (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC)
        ok = -1;
    PQclear(sync);
    return ok;
}

static int x_unit(run *r, void *ts, void *h, int64_t id, int64_t *v, bool update)
{
    (void)r;
    (void)h;
    direct *d = ts;
    if (!d)
        return -1;
    if (d->db) {
        if (!step_done(d->begin))
            return -1;
        sqlite3_bind_int64(d->sel, 1, id);
        int rc = sqlite3_step(d->sel);
        if (rc == SQLITE_ROW)
            *v = sqlite3_column_int64(d->sel, 0);
        sqlite3_reset(d->sel);
        if (!step_done(d->commit) || rc != SQLITE_ROW) {
            sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        return 0;
    }
#ifdef DBSCOPE_WITH_MYSQL
    if (d->my)
        return my_unit(d, id, v, update);
#endif
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    const char *vals[1] = {ids};
    PGconn *pg = d->pg;
    if (!PQenterPipelineMode(pg))
        return -1;
    int ok = PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
    ok = ok && (d->prepared ? PQsendQueryPrepared(pg, "sel", 1, vals, NULL, NULL, 0)
                            : PQsendQueryParams(pg, "SELECT v FROM bench WHERE id = $1", 1,
                                                NULL, vals, NULL, NULL, 0));
    ok = ok && PQpipelineSync(pg);
    int rc = ok ? pg_collect(pg, 2, v) : -1;
    if (rc == 0 && update) {
        ok = d->prepared ? PQsendQueryPrepared(pg, "upd", 1, vals, NULL, NULL, 0)
                         : PQsendQueryParams(pg, "UPDATE bench SET n = n + 1 WHERE id = $1", 1,
                                             NULL, vals, NULL, NULL, 0);
        ok = ok && PQpipelineSync(pg);
        rc = ok ? pg_collect(pg, 1, NULL) : -1;
    }
    if (rc == 0) {
        ok = PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(pg);
        rc = ok ? pg_collect(pg, 1, NULL) : -1;
    }
    if (rc != 0) {
        /* the pipeline may hold unread results: start over on a fresh
         * connection rather than guess (through PgBouncer the client
         * connection itself stays up after the server goes away) */
        d->broken = true;
        return rc;
    }
    PQexitPipelineMode(pg);
    return rc;
}

/* ---- libzdb ---- */

static char zdb_error[256];

static void z_abort(const char *e)
{
    snprintf(zdb_error, sizeof zdb_error, "%s", e);
}

/* libzdb URLs: sqlite:///path?... and postgresql://host:port/db?user=...;
 * built from ours by bench/run, passed as is. */
static int z_open(run *r)
{
    r->zurl = URL_new(r->db);
    if (!r->zurl) {
        fprintf(stderr, "zdb: bad URL %s\n", r->db);
        return -1;
    }
    r->zpool = ConnectionPool_new(r->zurl);
    ConnectionPool_setAbortHandler(r->zpool, z_abort);
    ConnectionPool_setInitialConnections(r->zpool, r->pool);
    ConnectionPool_setMaxConnections(r->zpool, r->pool);
    volatile int ok = 0;
    TRY
    {
        ConnectionPool_start(r->zpool);
        ok = 1;
    }
    ELSE
    {
        fprintf(stderr, "zdb: %s\n", Exception_frame.message);
    }
    END_TRY;
    return ok ? 0 : -1;
}

/* libzdb returns NULL when every connection is taken: no queue, no
 * timeout. Callers must retry themselves; this is the polite way. */
static void *z_acquire(run *r, void *ts)
{
    (void)ts;
    for (;;) {
        Connection_T c = ConnectionPool_getConnection(r->zpool);
        if (c)
            return c;
        if (atomic_load_explicit(&r->stop, memory_order_relaxed))
            return NULL;
        sched_yield();
    }
}

static void z_release(run *r, void *ts, void *h)
{
    (void)r;
    (void)ts;
    Connection_close(h);
}

static int z_unit(run *r, void *ts, void *h, int64_t id, int64_t *v, bool update)
{
    (void)r;
    (void)ts;
    Connection_T c = h;
    volatile int rc = -1;
    volatile int64_t got = 0;
    TRY
    {
        Connection_beginTransaction(c);
        PreparedStatement_T p = Connection_prepareStatement(c, "SELECT v FROM bench WHERE id = ?");
        PreparedStatement_setLLong(p, 1, id);
        ResultSet_T rs = PreparedStatement_executeQuery(p);
        if (ResultSet_next(rs)) {
            got = ResultSet_getLLong(rs, 1);
            rc = 0;
        }
        if (rc == 0 && update) {
            PreparedStatement_T u =
                Connection_prepareStatement(c, "UPDATE bench SET n = n + 1 WHERE id = ?");
            PreparedStatement_setLLong(u, 1, id);
            PreparedStatement_execute(u);
        }
        Connection_commit(c);
    }
    ELSE
    {
        rc = -1;
        TRY
        {
            Connection_rollback(c);
        }
        ELSE
        {
        }
        END_TRY;
    }
    END_TRY;
    *v = got;
    return rc;
}

static void z_close(run *r)
{
    ConnectionPool_stop(r->zpool);
    ConnectionPool_free(&r->zpool);
    URL_free(&r->zurl);
}

/* ---- the floor: an uncontended lock and unlock, through the same loop ---- */

/* What the cheapest possible checkout costs in this harness: the loop, its
 * clock reads and bookkeeping around one pthread mutex lock and unlock. A
 * pool's cycle is compared with this row. */
static pthread_mutex_t floor_mu = PTHREAD_MUTEX_INITIALIZER;

static int f_open(run *r)
{
    (void)r;
    return 0;
}

static void *f_acquire(run *r, void *ts)
{
    (void)r;
    (void)ts;
    pthread_mutex_lock(&floor_mu);
    return &floor_mu;
}

static void f_release(run *r, void *ts, void *h)
{
    (void)r;
    (void)ts;
    pthread_mutex_unlock(h);
}

static int f_unit(run *r, void *ts, void *h, int64_t id, int64_t *v, bool update)
{
    (void)r, (void)ts, (void)h, (void)id, (void)v, (void)update;
    return -1; /* the floor has no database: cycle only */
}

static void f_close(run *r)
{
    (void)r;
}

static const system_ops systems[] = {
    {"dbscope", d_open, NULL, NULL, d_acquire, d_release, d_unit, d_close},
    {"dbscope-noval", d_open_noval, NULL, NULL, d_acquire, d_release, d_unit, d_close},
    {"dbscope-fifo", d_open_fifo, NULL, NULL, d_acquire, d_release, d_unit, d_close},
    {"none", d_open_none, NULL, NULL, d_acquire, d_release, d_unit, d_close},
    {"dbscope-blind", d_open_blind, NULL, NULL, d_acquire, d_release, d_unit, d_close},
    {"dbscope-rollback", d_open_rollback, NULL, NULL, d_acquire, d_release, d_unit, d_close},
    {"direct", NULL, x_thread_open, x_thread_close, x_acquire, x_release, x_unit, NULL},
    {"bouncer", NULL, x_thread_open, x_thread_close, x_acquire, x_release, x_unit, NULL},
    {"zdb", z_open, NULL, NULL, z_acquire, z_release, z_unit, z_close},
    {"lock", f_open, NULL, NULL, f_acquire, f_release, f_unit, f_close},
};

/* ---- the loop ---- */

static void *work(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    void *ts = r->sys->thread_open ? r->sys->thread_open(r) : NULL;
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(w->idx + 1);
    while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t id = (int64_t)(x % ROWS) + 1;
        int64_t t0 = now_ns();
        void *h = r->sys->acquire(r, ts);
        int64_t t1 = now_ns();
        int rc = h ? 0 : -1;
        int64_t v = 0;
        if (h && !r->cycle)
            rc = r->sys->unit(r, ts, h, id, &v, r->update);
        if (h)
            r->sys->release(r, ts, h);
        int64_t t2 = now_ns();
        if (!atomic_load_explicit(&r->measuring, memory_order_relaxed))
            continue;
        if (r->timeline) {
            int64_t slot = (t2 - r->t0) / 100000000;
            if (slot >= 0 && slot < TL_MAX) {
                if (rc == 0)
                    w->tl_ops[slot]++;
                else
                    w->tl_err[slot]++;
            }
        }
        if (rc != 0) {
            /* a caller backs off a little before trying again, in every
             * adapter alike, so failed units are comparable */
            w->errors++;
            usleep(1000);
            continue;
        }
        w->ops++;
        w->lat[bucket(t2 - t0)]++;
        w->wait[bucket(t1 - t0)]++;
        if (t1 - t0 > w->wait_max)
            w->wait_max = t1 - t0;
        if (!r->cycle) {
            w->checksum += (uint64_t)v;
            w->expected += (uint64_t)(3 * id);
        }
    }
    if (r->sys->thread_close)
        r->sys->thread_close(r, ts);
    return NULL;
}

static long rss_kb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

/* Sum of n over the table: the pg unit adds 1 a unit. */
static long long pg_total(const char *url)
{
    if (is_mysql_url(url))
        return my_total(url);
    PGconn *c = PQconnectdb(url);
    long long n = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *res = PQexec(c, "SELECT coalesce(sum(n), 0) FROM bench");
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    PQfinish(c);
    return n;
}

static void run_one(run *r, double warmup, const char *direct_url)
{
    static worker ws[MAXT];
    memset(ws, 0, sizeof ws);
    atomic_store(&r->stop, false);
    atomic_store(&r->measuring, false);
    if (r->sys->open && r->sys->open(r) != 0)
        die("%s: cannot open the pool (%s)", r->sys->name, zdb_error);
    long long before = r->update && direct_url ? pg_total(direct_url) : 0;
    pthread_t t[MAXT];
    for (int i = 0; i < r->threads; i++) {
        ws[i].r = r;
        ws[i].idx = i;
        pthread_create(&t[i], NULL, work, &ws[i]);
    }
    struct timespec wt = {(time_t)warmup, (long)((warmup - (double)(time_t)warmup) * 1e9)};
    nanosleep(&wt, NULL);
    r->t0 = now_ns();
    struct timespec wall0;
    clock_gettime(CLOCK_REALTIME, &wall0);
    atomic_store(&r->measuring, true);
    struct timespec rt = {(time_t)r->seconds,
                          (long)((r->seconds - (double)(time_t)r->seconds) * 1e9)};
    nanosleep(&rt, NULL);
    atomic_store(&r->measuring, false);
    int64_t elapsed = now_ns() - r->t0;
    atomic_store(&r->stop, true);
    for (int i = 0; i < r->threads; i++)
        pthread_join(t[i], NULL);
    if (r->sys->close)
        r->sys->close(r);

    uint64_t ops = 0, errors = 0, minop = UINT64_MAX, maxop = 0, sum = 0, exp = 0;
    static uint64_t lat[HB], wait[HB];
    memset(lat, 0, sizeof lat);
    memset(wait, 0, sizeof wait);
    int64_t wait_max = 0;
    for (int i = 0; i < r->threads; i++) {
        ops += ws[i].ops;
        errors += ws[i].errors;
        minop = ws[i].ops < minop ? ws[i].ops : minop;
        maxop = ws[i].ops > maxop ? ws[i].ops : maxop;
        sum += ws[i].checksum;
        exp += ws[i].expected;
        for (int b = 0; b < HB; b++) {
            lat[b] += ws[i].lat[b];
            wait[b] += ws[i].wait[b];
        }
        if (ws[i].wait_max > wait_max)
            wait_max = ws[i].wait_max;
    }
    const char *check = sum == exp ? "ok" : "bad";
    if (r->update && direct_url && !r->timeline) {
        /* every counted unit committed one increment (units still running
         * at the stop were not counted but may have committed: >=) */
        long long after = pg_total(direct_url);
        if (after - before < (long long)ops)
            check = "bad";
    }
    double secs = (double)elapsed / 1e9;
    printf("RESULT {\"system\":\"%s\",\"scenario\":\"%s\",\"threads\":%d,\"pool\":%d,"
           "\"ops\":%llu,\"secs\":%.3f,\"ops_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,"
           "\"wait_p99_us\":%.2f,\"wait_max_us\":%.1f,\"min_thread\":%llu,\"max_thread\":%llu,"
           "\"errors\":%llu,\"checksum\":%llu,\"check\":\"%s\",\"rss_kb\":%ld}\n",
           r->sys->name, r->scenario, r->threads, r->pool, (unsigned long long)ops, secs,
           (double)ops / secs, percentile(lat, 0.5) / 1e3, percentile(lat, 0.99) / 1e3,
           percentile(wait, 0.99) / 1e3, (double)wait_max / 1e3, (unsigned long long)minop,
           (unsigned long long)maxop, (unsigned long long)errors, (unsigned long long)sum, check,
           rss_kb());
    if (r->timeline) {
        int slots = (int)(elapsed / 100000000);
        printf("TIMELINE {\"system\":\"%s\",\"start\":%.3f,\"bucket_ms\":100,\"ops\":[",
               r->sys->name, (double)wall0.tv_sec + (double)wall0.tv_nsec / 1e9);
        for (int s = 0; s < slots && s < TL_MAX; s++) {
            uint64_t n = 0;
            for (int i = 0; i < r->threads; i++)
                n += ws[i].tl_ops[s];
            printf("%s%llu", s ? "," : "", (unsigned long long)n);
        }
        printf("],\"errors\":[");
        for (int s = 0; s < slots && s < TL_MAX; s++) {
            uint64_t n = 0;
            for (int i = 0; i < r->threads; i++)
                n += ws[i].tl_err[s];
            printf("%s%llu", s ? "," : "", (unsigned long long)n);
        }
        printf("]}\n");
    }
    fflush(stdout);
}

/* ---- setup and memory ---- */

static void setup(const char *kind, const char *url)
{
    char sql[256];
    if (!strcmp(kind, "sqlite")) {
        sqlite3 *db;
        if (sqlite3_open(sqlite_path(url), &db) != SQLITE_OK)
            die("setup: %s", sqlite3_errmsg(db));
        char *e = NULL;
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; DROP TABLE IF EXISTS bench;"
                     "CREATE TABLE bench (id INTEGER PRIMARY KEY, v INTEGER NOT NULL,"
                     " n INTEGER NOT NULL DEFAULT 0); BEGIN",
                     NULL, NULL, &e);
        for (int i = 1; i <= ROWS; i++) {
            snprintf(sql, sizeof sql, "INSERT INTO bench (id, v) VALUES (%d, %d)", i, 3 * i);
            sqlite3_exec(db, sql, NULL, NULL, &e);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, &e) != SQLITE_OK)
            die("setup: %s", e);
        sqlite3_close(db);
        return;
    }
    if (!strcmp(kind, "mysql")) {
        my_setup(url);
        return;
    }
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        die("setup: %s", PQerrorMessage(c));
    PGresult *res = PQexec(c, "DROP TABLE IF EXISTS bench; "
                              "CREATE TABLE bench (id int PRIMARY KEY, v bigint NOT NULL, "
                              "n bigint NOT NULL DEFAULT 0); "
                              "INSERT INTO bench (id, v) SELECT i, 3 * i FROM "
                              "generate_series(1, 1000) i");
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        die("setup: %s", PQerrorMessage(c));
    PQclear(res);
    PQfinish(c);
}

/* dbscope's own heap bytes a pooled connection: a pool holding N open
 * connections minus N raw connections of the same backend. */
static void memory(const char *url)
{
    enum { N = 16 };
    if (is_mysql_url(url))
        die("memory: sqlite or pg URLs only");
    bool pg = strncmp(url, "sqlite", 6) != 0;
    /* one connection first, so one-time library set-up (TLS, SQLite's
     * globals) is charged to neither side */
    if (pg) {
        PQfinish(PQconnectdb(url));
    } else {
        sqlite3 *db;
        sqlite3_open(sqlite_path(url), &db);
        sqlite3_close(db);
    }
    struct mallinfo2 m0 = mallinfo2();
    void *raw[N];
    for (int i = 0; i < N; i++) {
        if (pg) {
            raw[i] = PQconnectdb(url);
        } else {
            sqlite3 *db;
            sqlite3_open(sqlite_path(url), &db);
            sqlite3_exec(db, "PRAGMA journal_mode=WAL; SELECT v FROM bench WHERE id = 1", NULL,
                         NULL, NULL);
            raw[i] = db;
        }
    }
    struct mallinfo2 m1 = mallinfo2();
    for (int i = 0; i < N; i++) {
        if (pg)
            PQfinish(raw[i]);
        else
            sqlite3_close(raw[i]);
    }
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = N;
    cfg.max_overflow = 0;
    dbs_error err;
    struct mallinfo2 m2 = mallinfo2();
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        die("memory: %s", err.message);
    dbs_session *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = dbs_session_open(p, NULL, &err);
        dbs_value v = DBS_INT(1);
        dbs_rows *r = s[i] ? dbs_query(s[i], "SELECT v FROM bench WHERE id = $1", &v, 1, &err)
                           : NULL;
        if (r) {
            dbs_rows_next(r, &err);
            dbs_rows_close(r);
        }
    }
    for (int i = 0; i < N; i++)
        dbs_session_close(s[i]);
    struct mallinfo2 m3 = mallinfo2();
    long raw_per = (long)(m1.uordblks - m0.uordblks) / N;
    long pooled_per = (long)(m3.uordblks - m2.uordblks) / N;
    printf("MEMORY {\"backend\":\"%s\",\"connections\":%d,\"raw_bytes_per_conn\":%ld,"
           "\"pooled_bytes_per_conn\":%ld,\"dbscope_bytes_per_conn\":%ld}\n",
           pg ? "postgresql" : "sqlite", N, raw_per, pooled_per, pooled_per - raw_per);
    dbs_pool_close(p);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        die("usage: bench_native SYSTEM SCENARIO --db URL [--matrix T:P,...] [--seconds S] "
            "[--warmup S] [--timeline] [--check-url URL]");
    const char *db = NULL, *matrix = "1:4", *check_url = NULL;
    double seconds = 1, warmup = 0.2;
    bool timeline = false;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--db") && i + 1 < argc)
            db = argv[++i];
        else if (!strcmp(argv[i], "--matrix") && i + 1 < argc)
            matrix = argv[++i];
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atof(argv[++i]);
        else if (!strcmp(argv[i], "--check-url") && i + 1 < argc)
            check_url = argv[++i];
        else if (!strcmp(argv[i], "--timeline"))
            timeline = true;
        else
            die("bench_native: unknown argument %s", argv[i]);
    }
    if (!db)
        die("bench_native: --db is required");
    if (!strcmp(argv[1], "setup")) {
        setup(argv[2], db);
        return 0;
    }
    if (!strcmp(argv[1], "memory")) {
        memory(db);
        return 0;
    }
    run r = {.db = db, .scenario = argv[2], .seconds = seconds, .timeline = timeline};
    for (size_t i = 0; i < sizeof systems / sizeof systems[0]; i++)
        if (!strcmp(systems[i].name, argv[1]))
            r.sys = &systems[i];
    if (!r.sys)
        die("bench_native: unknown system %s", argv[1]);
    r.cycle = !strcmp(r.scenario, "cycle");
    r.update = !strcmp(r.scenario, "pg") || !strcmp(r.scenario, "recovery") ||
               !strcmp(r.scenario, "mysql");
    r.my = is_mysql_url(db);
    r.pg = strncmp(db, "sqlite", 6) != 0;
    if (r.cycle && r.sys->thread_open)
        die("bench_native: %s has no pool to cycle", r.sys->name);
    for (const char *m = matrix; *m;) {
        int t, p, used;
        if (sscanf(m, "%d:%d%n", &t, &p, &used) != 2 || t < 1 || t > MAXT || p < 1)
            die("bench_native: bad matrix entry at %s", m);
        r.threads = t;
        r.pool = p;
        run_one(&r, warmup, check_url ? check_url : (r.update ? db : NULL));
        m += used;
        if (*m == ',')
            m++;
    }
    return 0;
}
