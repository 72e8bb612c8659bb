/* dbscope-sizing: will N processes, each with a dbscope pool, fit in one
 * PostgreSQL server's max_connections at their peak? Says what happens at
 * peak and what to change. No database is contacted.
 *
 *   dbscope-sizing -n PROCESSES [-p POOL_SIZE] [-o MAX_OVERFLOW]
 *                  [-m MAX_CONNECTIONS] [-r SUPERUSER_RESERVED]
 *                  [-c OTHER_CLIENTS] [-x EXTRA_PER_PROCESS] [--replicas]
 *
 * Defaults are dbscope's and PostgreSQL's: pool_size 10, max_overflow 20,
 * max_connections 100, superuser_reserved_connections 3. --replicas counts
 * the replica monitor's connection to the primary (one per process). Exit
 * status: 0 fits, 1 does not, 2 bad arguments. */
#include "sizing.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int number(const char *opt, const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > INT_MAX) {
        fprintf(stderr, "dbscope-sizing: %s needs a whole number >= %d (got \"%s\")\n", opt, lo,
                s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: dbscope-sizing -n PROCESSES [-p POOL_SIZE] [-o MAX_OVERFLOW]\n"
               "                      [-m MAX_CONNECTIONS] [-r SUPERUSER_RESERVED]\n"
               "                      [-c OTHER_CLIENTS] [-x EXTRA_PER_PROCESS] [--replicas]\n");
}

int main(int argc, char **argv)
{
    dbs_sizing_in in = {.processes = -1, .pool_size = 10, .max_overflow = 20,
                        .max_connections = 100, .superuser_reserved = 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int *dst = NULL, lo = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--replicas")) {
            in.extra_per_process += 1;
            continue;
        } else if (!strcmp(a, "-n")) {
            dst = &in.processes;
            lo = 1;
        } else if (!strcmp(a, "-p")) {
            dst = &in.pool_size;
            lo = 1;
        } else if (!strcmp(a, "-o")) {
            dst = &in.max_overflow;
        } else if (!strcmp(a, "-m")) {
            dst = &in.max_connections;
            lo = 1;
        } else if (!strcmp(a, "-r")) {
            dst = &in.superuser_reserved;
        } else if (!strcmp(a, "-c")) {
            dst = &in.other_clients;
        } else if (!strcmp(a, "-x")) {
            dst = &in.extra_per_process;
        } else {
            fprintf(stderr, "dbscope-sizing: unknown option \"%s\"\n", a);
            usage(stderr);
            return 2;
        }
        if (number(a, i + 1 < argc ? argv[i + 1] : NULL, lo, dst) != 0)
            return 2;
        i++;
    }
    if (in.processes < 0) {
        fprintf(stderr, "dbscope-sizing: -n PROCESSES is required\n");
        usage(stderr);
        return 2;
    }
    dbs_sizing_out out;
    dbs_sizing(&in, &out);
    printf("%d processes x (pool_size %d + max_overflow %d%s) = %lld connections at peak, "
           "%lld steady\n",
           in.processes, in.pool_size, in.max_overflow,
           in.extra_per_process ? " + extra" : "", out.peak, out.steady);
    printf("the server takes %d (max_connections %d - superuser_reserved_connections %d"
           " - other clients %d)\n",
           out.available, in.max_connections, in.superuser_reserved, in.other_clients);
    if (out.fits) {
        printf("fits: every process can reach its peak at once (%lld to spare)\n",
               (long long)out.available - out.peak);
        return 0;
    }
    printf("does not fit: beyond %d processes at peak, connects are refused (\"sorry, too many "
           "clients already\"); dbscope reports them as DBS_ECONNECT and opens the circuit\n",
           out.fit_processes);
    if (out.suggest_pool_size > 0)
        printf("suggest: pool_size %d, max_overflow %d per process; or PgBouncer in "
               "transaction mode in front of the server (stmt_cache_size = 0)\n",
               out.suggest_pool_size, out.suggest_max_overflow);
    else
        printf("suggest: not even one connection per process fits; put PgBouncer in "
               "transaction mode in front of the server (stmt_cache_size = 0), or raise "
               "max_connections\n");
    return 1;
}
