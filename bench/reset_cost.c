/* What the PostgreSQL reset costs. One thread runs the bench's PostgreSQL
 * unit of work (BEGIN; SELECT v WHERE id; UPDATE n = n + 1 WHERE id;
 * COMMIT) through:
 *
 *   full-transact   dbscope, reset = DBS_RESET_FULL, dbs_transact (the reset
 *                   rides with the COMMIT)
 *   full-commit     dbscope, DBS_RESET_FULL, dbs_commit then close (the
 *                   reset is posted at close)
 *   full-commit-close  dbscope, DBS_RESET_FULL, dbs_session_commit_close
 *                   (the reset rides with the COMMIT, as in dbs_transact)
 *   rollback        dbscope, DBS_RESET_ROLLBACK, dbs_transact (no reset)
 *   direct          libpq alone, pipelined and prepared as dbscope does:
 *                   the floor
 *   direct+reset-before   the same, with the reset dbscope sent before
 *                   (nine named statements, DISCARD PLANS among them) in
 *                   the COMMIT's flight: the server's cost of that reset
 *   direct+reset-sync     the six named statements below after a Sync of
 *                   their own behind the COMMIT's, as dbscope sent them
 *                   before they shared the COMMIT's segment
 *   direct+reset-now      the reset dbscope sends now on a backend without
 *                   a temporary schema: six named statements (CLOSE ALL
 *                   and UNLISTEN * among them) in the COMMIT's segment (no
 *                   Sync between)
 *   direct+reset-now-temp the same on a backend with a temporary schema:
 *                   DISCARD TEMP and DISCARD PLANS too
 *
 * and prints per system (medians of the rounds): units/s and its ratio to
 * "rollback" and to "direct" (wall clock: depends on what else runs), the
 * server backend's and this process's CPU microseconds per unit, and their
 * sum's ratio to "direct" (does not); then a checksum of the work (the sum
 * of n must grow by exactly the units run).
 *
 * With "per-command", also the server CPU each reset command adds, before
 * and now: the whole reset's minus the same reset's without that command
 * (all of them interleaved in the same rounds).
 *
 *   bench/reset_cost.sh [units] [rounds] [per-command]   starts a server
 *   reset_cost URL [units] [rounds] [per-command]        against yours
 */
#define _POSIX_C_SOURCE 200809L
#include "dbscope.h"

#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROWS 1000

static const char *url;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One measurement: wall-clock rate, and CPU time per unit of the server
 * backend (from /proc/PID/schedstat: the server runs on this machine) and
 * of this process. CPU times do not depend on what else the machine runs;
 * the rate does. */
typedef struct meas {
    double rate, server_us, client_us;
} meas;

static long long backend_ns(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/schedstat", pid);
    FILE *f = fopen(path, "r");
    long long ns = 0;
    if (!f || fscanf(f, "%lld", &ns) != 1)
        ns = 0;
    if (f)
        fclose(f);
    return ns;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct mark {
    double wall, cpu;
    long long server;
} mark;

static mark mark_now(long pid)
{
    return (mark){now_s(), cpu_s(), backend_ns(pid)};
}

static meas since(mark m, long pid, int units)
{
    mark e = mark_now(pid);
    return (meas){units / (e.wall - m.wall), (double)(e.server - m.server) / 1e3 / units,
                  (e.cpu - m.cpu) * 1e6 / units};
}


static void die(const char *what, const char *msg)
{
    fprintf(stderr, "reset_cost: %s: %s\n", what, msg);
    exit(1);
}

static PGconn *pq_open(void)
{
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK)
        die("connect", PQerrorMessage(pg));
    return pg;
}

static void pq_do(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(pg));
    PQclear(r);
}

static long long total_n(void)
{
    PGconn *pg = pq_open();
    PGresult *r = PQexec(pg, "SELECT sum(n) FROM reset_bench");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die("sum", PQerrorMessage(pg));
    long long t = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return t;
}

/* ---- dbscope ---- */

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    long long id = *(long long *)arg;
    dbs_value p = DBS_INT(id);
    dbs_rows *rows = dbs_query(s, "SELECT v FROM reset_bench WHERE id = $1", &p, 1, err);
    if (!rows)
        return -1;
    int n = dbs_rows_next(rows, err);
    long long v = n == 1 ? (long long)dbs_rows_int(rows, 0) : -1;
    dbs_rows_close(rows);
    if (v != 3 * id)
        return -1;
    return dbs_exec(s, "UPDATE reset_bench SET n = n + 1 WHERE id = $1", &p, 1, err) == 1 ? 0
                                                                                          : -1;
}

/* How a unit's session ends. */
enum ending { TRANSACT, COMMIT_THEN_CLOSE, COMMIT_CLOSE };

static meas run_dbscope(enum dbs_reset_mode mode, enum ending how, int units)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.reset = mode;
    cfg.log_events = 0;
    cfg.retry_max = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        die("dbs_pool_open", err.message);
    dbs_session *s0 = dbs_session_open(p, NULL, &err);
    if (!s0)
        die("open", err.message);
    dbs_rows *r0 = dbs_query(s0, "SELECT pg_backend_pid()", NULL, 0, &err);
    if (!r0 || dbs_rows_next(r0, &err) != 1)
        die("pid", err.message);
    long pid = (long)dbs_rows_int(r0, 0);
    dbs_rows_close(r0);
    dbs_session_close(s0);
    mark m = mark_now(pid);
    for (int i = 0; i < units; i++) {
        long long id = 1 + i % ROWS;
        if (how == TRANSACT) {
            if (dbs_transact(p, NULL, unit, &id, &err) != DBS_OK)
                die("unit", err.message);
        } else {
            dbs_session *s = dbs_session_open(p, NULL, &err);
            if (!s)
                die("open", err.message);
            if (unit(s, &id, &err) != 0)
                die("unit", err.message);
            if (how == COMMIT_CLOSE) {
                if (dbs_session_commit_close(s, &err) != DBS_OK)
                    die("commit", err.message);
            } else {
                if (dbs_commit(s, &err) != DBS_OK)
                    die("commit", err.message);
                dbs_session_close(s);
            }
        }
    }
    meas out = since(m, pid, units);
    dbs_pool_close(p);
    return out;
}

/* ---- libpq alone ---- */

/* Every command either reset sends: dbscope's named reset before (the
 * first nine: DISCARD PLANS always, CLOSE ALL, UNLISTEN *, the advisory
 * locks and DISCARD TEMP as commands of their own) and now (on a backend
 * without a temporary schema: six commands, CLOSE ALL and UNLISTEN *
 * among them, the reconcile query releasing the advisory locks and reading
 * the server's state; with a temporary schema DISCARD TEMP and DISCARD
 * PLANS too). */
static const char *const reset_sql[] = {
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET ALL",
    "CLOSE ALL",
    "UNLISTEN *",
    "SELECT pg_catalog.pg_advisory_unlock_all()",
    "DISCARD TEMP",
    "DISCARD SEQUENCES",
    "DISCARD PLANS",
    "SELECT name, CASE WHEN pg_catalog.left(name, 5) OPERATOR(pg_catalog.=) "
    "'dbs_r' THEN statement END FROM pg_catalog.pg_prepared_statements",
    "SELECT name, CASE WHEN name OPERATOR(pg_catalog.~~) 'dbs_r_' "
    "THEN statement END, pg_catalog.pg_my_temp_schema(), "
    "pg_catalog.pg_advisory_unlock_all() "
    "FROM pg_catalog.pg_prepared_statements",
};
/* Short names for the table. */
static const char *const cmd_label[] = {
    "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL", "CLOSE ALL", "UNLISTEN *",
    "SELECT pg_advisory_unlock_all()", "DISCARD TEMP", "DISCARD SEQUENCES",
    "DISCARD PLANS", "reconcile (before)", "reconcile + locks (now)",
};
#define NCMD ((int)(sizeof reset_sql / sizeof reset_sql[0]))
#define BEFORE 0x1ffu                                  /* commands 0..8 */
#define NOW ((1u << 0) | (1u << 1) | (1u << 2) | (1u << 3) | (1u << 6) | (1u << 9))
#define NOW_TEMP (NOW | (1u << 5) | (1u << 7))         /* temporary schema */

static int drain(PGconn *pg, int syncs)
{
    int bad = 0;
    while (syncs > 0) {
        PGresult *r = PQgetResult(pg);
        if (!r)
            continue; /* end of one command's results */
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC)
            syncs--;
        else if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED)
            bad = 1;
        PQclear(r);
    }
    return bad;
}

/* The unit through libpq alone; after its COMMIT (and, with
 * sync_between, a Sync), the reset commands in mask (bit i:
 * reset_sql[i]), then a Sync, each a named statement parsed once
 * (Bind/Execute by name), as dbscope sends them.
 * temp: the backend has a temporary schema (made, and its table dropped,
 * before the clock starts). */
static meas run_direct(unsigned mask, int temp, int sync_between, int units)
{
    PGconn *pg = pq_open();
    PGresult *a = PQprepare(pg, "sel", "SELECT v FROM reset_bench WHERE id = $1", 1, NULL);
    PGresult *b = PQprepare(pg, "upd", "UPDATE reset_bench SET n = n + 1 WHERE id = $1", 1, NULL);
    if (PQresultStatus(a) != PGRES_COMMAND_OK || PQresultStatus(b) != PGRES_COMMAND_OK)
        die("prepare", PQerrorMessage(pg));
    PQclear(a);
    PQclear(b);
    char names[NCMD][16];
    for (int k = 0; k < NCMD; k++) {
        snprintf(names[k], sizeof names[k], "r%d", k);
        if (mask & (1u << k)) {
            PGresult *r = PQprepare(pg, names[k], reset_sql[k], 0, NULL);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                die("prepare", PQerrorMessage(pg));
            PQclear(r);
        }
    }
    if (temp) {
        pq_do(pg, "CREATE TEMP TABLE reset_tmp (x int)");
        pq_do(pg, "DROP TABLE reset_tmp");
    }
    if (!PQenterPipelineMode(pg))
        die("pipeline", PQerrorMessage(pg));
    long pid = PQbackendPID(pg);
    mark m = mark_now(pid);
    for (int i = 0; i < units; i++) {
        long long id = 1 + i % ROWS;
        char idt[24];
        snprintf(idt, sizeof idt, "%lld", id);
        const char *vals[1] = {idt};
        /* BEGIN + SELECT, then UPDATE, then COMMIT: 3 round trips */
        PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
        PQsendQueryPrepared(pg, "sel", 1, vals, NULL, NULL, 0);
        PQpipelineSync(pg);
        PGresult *r;
        long long v = -1;
        int syncs = 1;
        while (syncs > 0) {
            r = PQgetResult(pg);
            if (!r)
                continue;
            if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
                v = atoll(PQgetvalue(r, 0, 0));
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
                syncs--;
            PQclear(r);
        }
        if (v != 3 * id)
            die("select", "wrong value");
        PQsendQueryPrepared(pg, "upd", 1, vals, NULL, NULL, 0);
        PQpipelineSync(pg);
        if (drain(pg, 1))
            die("update", PQerrorMessage(pg));
        PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
        syncs = 1;
        if (!mask || sync_between) {
            PQpipelineSync(pg);
            syncs = mask ? 2 : 1;
        }
        if (mask) {
            for (int k = 0; k < NCMD; k++)
                if (mask & (1u << k))
                    PQsendQueryPrepared(pg, names[k], 0, NULL, NULL, NULL, 0);
            PQpipelineSync(pg);
        }
        if (drain(pg, syncs))
            die("commit", PQerrorMessage(pg));
    }
    meas out = since(m, pid, units);
    PQfinish(pg);
    return out;
}

/* What each reset command adds, before and now, on one connection: the
 * variants (the whole reset before; before without command c, for each of
 * its commands; the whole reset now; now without c) take turns unit by
 * unit (before and now on a connection each), so that whatever else the
 * machine runs hits them all alike. Per
 * variant, the server CPU of its reset segment plus that of the unit after
 * it (where DISCARD PLANS shows: the unit's statements are planned again),
 * read from the backend's schedstat around each flight (the backend sleeps
 * between flights, so the figure is exact). A command's cost: the whole
 * reset's figure minus the figure without it. out[v]: microseconds a
 * unit. */
enum { V_BEFORE, V_BEFORE_MINUS, V_NOW = V_BEFORE_MINUS + NCMD, V_NOW_MINUS, NVAR = V_NOW_MINUS + NCMD };

static unsigned var_mask(int v)
{
    if (v == V_BEFORE)
        return BEFORE;
    if (v < V_NOW)
        return BEFORE & ~(1u << (v - V_BEFORE_MINUS));
    if (v == V_NOW)
        return NOW;
    return NOW & ~(1u << (v - V_NOW_MINUS));
}

static PGconn *cmd_conn(char names[NCMD][16])
{
    PGconn *pg = pq_open();
    PGresult *a = PQprepare(pg, "sel", "SELECT v FROM reset_bench WHERE id = $1", 1, NULL);
    PGresult *b = PQprepare(pg, "upd", "UPDATE reset_bench SET n = n + 1 WHERE id = $1", 1, NULL);
    if (PQresultStatus(a) != PGRES_COMMAND_OK || PQresultStatus(b) != PGRES_COMMAND_OK)
        die("prepare", PQerrorMessage(pg));
    PQclear(a);
    PQclear(b);
    for (int k = 0; k < NCMD; k++) {
        snprintf(names[k], 16, "r%d", k);
        PGresult *r = PQprepare(pg, names[k], reset_sql[k], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("prepare", PQerrorMessage(pg));
        PQclear(r);
    }
    if (!PQenterPipelineMode(pg))
        die("pipeline", PQerrorMessage(pg));
    return pg;
}

/* The before variants run on one connection and the now variants on
 * another, taking turns: the before reset's DISCARD PLANS must not make
 * the now reset's statements be planned again. */
static void run_commands(int units, double out[NVAR])
{
    char names[NCMD][16];
    PGconn *conns[2] = {cmd_conn(names), cmd_conn(names)};
    double sum[NVAR] = {0};
    int n[NVAR] = {0};
    int prev[2] = {-1, -1};
    for (int i = 0; i < units; i++) {
        int v = i % NVAR, side = v >= V_NOW;
        PGconn *pg = conns[side];
        long pid = PQbackendPID(pg);
        long long id = 1 + i % ROWS;
        char idt[24];
        snprintf(idt, sizeof idt, "%lld", id);
        const char *vals[1] = {idt};
        long long t0 = backend_ns(pid);
        PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
        PQsendQueryPrepared(pg, "sel", 1, vals, NULL, NULL, 0);
        PQpipelineSync(pg);
        if (drain(pg, 1))
            die("select", PQerrorMessage(pg));
        PQsendQueryPrepared(pg, "upd", 1, vals, NULL, NULL, 0);
        PQpipelineSync(pg);
        if (drain(pg, 1))
            die("update", PQerrorMessage(pg));
        PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
        PQpipelineSync(pg);
        if (drain(pg, 1))
            die("commit", PQerrorMessage(pg));
        long long t1 = backend_ns(pid);
        if (prev[side] >= 0) /* the unit after that connection's last reset */
            sum[prev[side]] += (double)(t1 - t0);
        unsigned mask = var_mask(v);
        for (int k = 0; k < NCMD; k++)
            if (mask & (1u << k))
                PQsendQueryPrepared(pg, names[k], 0, NULL, NULL, NULL, 0);
        PQpipelineSync(pg);
        if (drain(pg, 1))
            die("reset", PQerrorMessage(pg));
        sum[v] += (double)(backend_ns(pid) - t1);
        n[v]++;
        prev[side] = v;
    }
    for (int v = 0; v < NVAR; v++)
        out[v] = n[v] ? sum[v] / n[v] / 1e3 : 0;
    PQfinish(conns[0]);
    PQfinish(conns[1]);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: reset_cost URL [units] [rounds] [per-command]\n");
        return 2;
    }
    url = argv[1];
    int units = argc > 2 ? atoi(argv[2]) : 20000;
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    int per_cmd = argc > 4 && !strcmp(argv[4], "per-command");
    if (units <= 0 || rounds <= 0 || rounds > 15 || (argc > 4 && !per_cmd))
        die("arguments", "units > 0, 1 <= rounds <= 15, then optionally per-command");
    PGconn *pg = pq_open();
    pq_do(pg, "SET client_min_messages = warning");
    pq_do(pg, "DROP TABLE IF EXISTS reset_bench");
    pq_do(pg, "CREATE TABLE reset_bench (id int PRIMARY KEY, v bigint, n bigint)");
    pq_do(pg, "INSERT INTO reset_bench SELECT i, 3 * i, 0 FROM generate_series(1, 1000) i");
    PQfinish(pg);

    enum { FT, FC, FX, RB, DI, DB, DS, DN, DT, NSYS };
    static const char *const names[NSYS] = {"full-transact", "full-commit", "full-commit-close",
                                            "rollback", "direct",
                                            "direct+reset-before", "direct+reset-sync",
                                            "direct+reset-now", "direct+reset-now-temp"};
    meas res[NSYS][15];
    double cmds[15][NVAR];
    long long before = total_n();
    long long runs = 0, extra = 0;
    for (int k = 0; k < rounds; k++) {
        /* interleaved, so drift on a shared machine hits every system */
        res[FT][k] = run_dbscope(DBS_RESET_FULL, TRANSACT, units);
        res[FC][k] = run_dbscope(DBS_RESET_FULL, COMMIT_THEN_CLOSE, units);
        res[FX][k] = run_dbscope(DBS_RESET_FULL, COMMIT_CLOSE, units);
        res[RB][k] = run_dbscope(DBS_RESET_ROLLBACK, TRANSACT, units);
        res[DI][k] = run_direct(0, 0, 1, units);
        res[DB][k] = run_direct(BEFORE, 0, 1, units);
        res[DS][k] = run_direct(NOW, 0, 1, units);
        res[DN][k] = run_direct(NOW, 0, 0, units);
        res[DT][k] = run_direct(NOW_TEMP, 1, 0, units);
        runs += NSYS;
        if (per_cmd) {
            run_commands(units * 4, cmds[k]);
            extra += units * 4;
        }
    }
    long long done = total_n() - before;
    /* medians, each column on its own */
    double med[NSYS][3];
    for (int s = 0; s < NSYS; s++)
        for (int c = 0; c < 3; c++) {
            double v[15];
            for (int k = 0; k < rounds; k++)
                v[k] = c == 0 ? res[s][k].rate : c == 1 ? res[s][k].server_us : res[s][k].client_us;
            med[s][c] = median(v, rounds);
        }
    printf("%-22s %9s %9s %9s %11s %11s %11s\n", "system", "units/s", "/rollback", "/direct",
           "server_us", "client_us", "cpu/direct");
    for (int s = 0; s < NSYS; s++)
        printf("%-22s %9.0f %9.3f %9.3f %11.1f %11.1f %11.3f\n", names[s], med[s][0],
               med[s][0] / med[RB][0], med[s][0] / med[DI][0], med[s][1], med[s][2],
               (med[s][1] + med[s][2]) / (med[DI][1] + med[DI][2]));
    if (per_cmd) {
        double m[NVAR];
        for (int v = 0; v < NVAR; v++) {
            double x[15];
            for (int k = 0; k < rounds; k++)
                x[k] = cmds[k][v];
            m[v] = median(x, rounds);
        }
        printf("\nserver CPU us a unit, per reset command (the reset's segment and the unit after "
               "it; the whole reset minus the reset without that command; - not sent)\n");
        printf("%-36s %10s %10s\n", "command", "before", "now");
        for (int c = 0; c < NCMD; c++) {
            char b[16] = "-", n[16] = "-";
            if (BEFORE & (1u << c))
                snprintf(b, sizeof b, "%.1f", m[V_BEFORE] - m[V_BEFORE_MINUS + c]);
            if (NOW & (1u << c))
                snprintf(n, sizeof n, "%.1f", m[V_NOW] - m[V_NOW_MINUS + c]);
            printf("%-36s %10s %10s\n", cmd_label[c], b, n);
        }
        printf("%-36s %10.1f %10.1f\n", "whole: reset + the unit after it", m[V_BEFORE],
               m[V_NOW]);
    }
    long long want = (long long)units * runs + extra;
    printf("checksum: %lld updates counted, %lld expected: %s\n", done, want,
           done == want ? "ok" : "MISMATCH");
    return done == want ? 0 : 1;
}
