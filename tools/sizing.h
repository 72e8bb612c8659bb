/* The arithmetic of dbscope-sizing, apart from its command line so that it
 * is unit-tested alone (tests/test_sizing.c). No I/O. */
#ifndef DBS_SIZING_H
#define DBS_SIZING_H

typedef struct dbs_sizing_in {
    int processes;        /* N processes, each with one pool */
    int pool_size, max_overflow;
    int extra_per_process; /* connections outside the pools: the replica
                              monitor's one to the primary, other tools */
    int max_connections, superuser_reserved, other_clients;
} dbs_sizing_in;

typedef struct dbs_sizing_out {
    long long peak;       /* connections all processes may open at once */
    long long steady;     /* with every pool at pool_size, no overflow */
    int available;        /* max_connections - reserved - other clients */
    int fits;             /* 1: peak <= available */
    int fit_processes;    /* processes that can all reach their peak */
    /* when it does not fit: per-process sizes that do (pool_size first,
     * overflow from what is left; 0 if not even one each) */
    int suggest_pool_size, suggest_max_overflow;
} dbs_sizing_out;

static inline void dbs_sizing(const dbs_sizing_in *in, dbs_sizing_out *out)
{
    int per = in->pool_size + in->max_overflow + in->extra_per_process;
    out->available = in->max_connections - in->superuser_reserved - in->other_clients;
    if (out->available < 0)
        out->available = 0;
    out->peak = (long long)in->processes * per;
    out->steady = (long long)in->processes * (in->pool_size + in->extra_per_process);
    out->fits = out->peak <= out->available;
    out->fit_processes = per > 0 ? out->available / per : in->processes;
    out->suggest_pool_size = in->pool_size;
    out->suggest_max_overflow = in->max_overflow;
    if (!out->fits && in->processes > 0) {
        int share = out->available / in->processes - in->extra_per_process;
        if (share < 1) {
            out->suggest_pool_size = out->suggest_max_overflow = 0;
        } else {
            out->suggest_pool_size = in->pool_size < share ? in->pool_size : share;
            out->suggest_max_overflow = share - out->suggest_pool_size;
            if (out->suggest_max_overflow > in->max_overflow)
                out->suggest_max_overflow = in->max_overflow;
        }
    }
}

#endif
