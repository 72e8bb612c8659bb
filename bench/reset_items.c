/* What each item of the PostgreSQL reset costs the server, one backend,
 * libpq alone. Each variant is one pipeline segment (its commands, then a
 * Sync) run by name as dbscope runs the reset; the variants take turns
 * flight by flight, so that whatever else the machine runs hits them all
 * alike, and the backend's CPU is read from /proc/PID/schedstat around
 * each flight (the backend sleeps between flights: the figure is exact).
 * Printed: server CPU microseconds a flight, and that minus an empty
 * flight's (a Sync alone: the wake-up, the transaction end, ReadyForQuery
 * and the write every segment costs).
 *
 *   reset_items URL [flights]     (3000; the server must run on this machine)
 */
#define _POSIX_C_SOURCE 200809L
#include <libpq-fe.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#define RECONCILE_NOW                                                              \
    "SELECT name, CASE WHEN name OPERATOR(pg_catalog.~~) 'dbs_r_' THEN statement " \
    "END, pg_catalog.pg_my_temp_schema(), pg_catalog.pg_advisory_unlock_all() "    \
    "FROM pg_catalog.pg_prepared_statements"
#define RECONCILE                                                                  \
    "SELECT p.name, CASE WHEN pg_catalog.left(p.name, 5) OPERATOR(pg_catalog.=) "  \
    "'dbs_r' THEN p.statement END, o.t, o.k FROM (SELECT "                         \
    "pg_catalog.pg_advisory_unlock_all() AS u, pg_catalog.pg_my_temp_schema() AS " \
    "t, EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) OR EXISTS (SELECT " \
    "FROM pg_catalog.pg_cursors WHERE is_holdable) AS k) AS o LEFT JOIN "          \
    "pg_catalog.pg_prepared_statements AS p ON true"

/* Statements, each prepared once under a name. */
static const char *const sql[] = {
    "SET SESSION AUTHORIZATION DEFAULT",
    "RESET ALL",
    "DISCARD SEQUENCES",
    RECONCILE,
    "SELECT 1",
    "SELECT pg_catalog.pg_advisory_unlock_all()",
    "SELECT pg_catalog.pg_my_temp_schema()",
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_listening_channels())",
    "SELECT EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable)",
    "SELECT name FROM pg_catalog.pg_prepared_statements",
    "CLOSE ALL",
    "UNLISTEN *",
    RECONCILE_NOW,
    "BEGIN",
    "COMMIT",
};
#define NSQL ((int)(sizeof sql / sizeof sql[0]))
enum { S_SSA, S_RESET, S_SEQ, S_REC, S_ONE, S_CLOSE = 10, S_UNLISTEN, S_REC2, S_BEGIN = NSQL - 2, S_COMMIT = NSQL - 1 };

/* A variant: statements (indexes into sql), -1 = a Sync in the middle. */
typedef struct variant {
    const char *label;
    int items[10];
    int n;
} variant;

static const variant vars[] = {
    {"empty segment (a Sync alone)", {0}, 0},
    {"SET SESSION AUTHORIZATION DEFAULT", {S_SSA}, 1},
    {"RESET ALL", {S_RESET}, 1},
    {"DISCARD SEQUENCES", {S_SEQ}, 1},
    {"reconcile + locks + probes", {S_REC}, 1},
    {"  SELECT 1 (for scale)", {S_ONE}, 1},
    {"  pg_advisory_unlock_all()", {5}, 1},
    {"  pg_my_temp_schema()", {6}, 1},
    {"  pg_listening_channels() probe", {7}, 1},
    {"  pg_cursors probe", {8}, 1},
    {"  pg_prepared_statements names", {9}, 1},
    {"CLOSE ALL", {S_CLOSE}, 1},
    {"UNLISTEN *", {S_UNLISTEN}, 1},
    {"reconcile + locks (now)", {S_REC2}, 1},
    {"the reset (before: 4 statements)", {S_SSA, S_RESET, S_SEQ, S_REC}, 4},
    {"the reset (now: 6 statements)",
     {S_SSA, S_RESET, S_CLOSE, S_UNLISTEN, S_SEQ, S_REC2},
     6},
    {"BEGIN, COMMIT, Sync (no reset)", {S_BEGIN, S_COMMIT}, 2},
    {"BEGIN, COMMIT, Sync, the reset, Sync (older)",
     {S_BEGIN, S_COMMIT, -1, S_SSA, S_RESET, S_SEQ, S_REC},
     7},
    {"BEGIN, COMMIT, the reset, Sync (before)", {S_BEGIN, S_COMMIT, S_SSA, S_RESET, S_SEQ, S_REC}, 6},
    {"BEGIN, COMMIT, the reset, Sync (now)",
     {S_BEGIN, S_COMMIT, S_SSA, S_RESET, S_CLOSE, S_UNLISTEN, S_SEQ, S_REC2},
     8},
};
#define NVAR ((int)(sizeof vars / sizeof vars[0]))

static void die(const char *what, PGconn *pg)
{
    fprintf(stderr, "reset_items: %s: %s", what, PQerrorMessage(pg));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: reset_items URL [flights]\n");
        return 2;
    }
    int flights = argc > 2 ? atoi(argv[2]) : 3000;
    if (flights <= 0)
        flights = 3000;
    PGconn *pg = PQconnectdb(argv[1]);
    if (PQstatus(pg) != CONNECTION_OK)
        die("connect", pg);
    char names[NSQL][16];
    for (int i = 0; i < NSQL; i++) {
        snprintf(names[i], sizeof names[i], "dbs_r%d", i);
        PGresult *r = PQprepare(pg, names[i], sql[i], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die(sql[i], pg);
        PQclear(r);
    }
    if (!PQenterPipelineMode(pg))
        die("pipeline", pg);
    long pid = PQbackendPID(pg);
    double sum[NVAR] = {0};
    for (int it = 0; it < flights; it++)
        for (int v = 0; v < NVAR; v++) {
            int syncs = 1;
            long long t0 = backend_ns(pid);
            for (int k = 0; k < vars[v].n; k++) {
                int i = vars[v].items[k];
                if (i < 0) {
                    PQpipelineSync(pg);
                    syncs++;
                } else {
                    PQsendQueryPrepared(pg, names[i], 0, NULL, NULL, NULL, 0);
                }
            }
            PQpipelineSync(pg);
            while (syncs > 0) {
                PGresult *r = PQgetResult(pg);
                if (!r)
                    continue;
                ExecStatusType st = PQresultStatus(r);
                if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED)
                    die(vars[v].label, pg);
                if (st == PGRES_PIPELINE_SYNC)
                    syncs--;
                PQclear(r);
            }
            sum[v] += (double)(backend_ns(pid) - t0);
        }
    double empty = sum[0] / flights / 1e3;
    printf("%-48s %10s %10s\n", "segment", "server_us", "-empty");
    for (int v = 0; v < NVAR; v++) {
        double us = sum[v] / flights / 1e3;
        printf("%-48s %10.1f %10.1f\n", vars[v].label, us, us - empty);
    }
    PQfinish(pg);
    return 0;
}
