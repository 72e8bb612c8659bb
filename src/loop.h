/*
 * PRIVATE to dbscope: what the event loop (loop.c) needs of the layers
 * below it, defined in their files.
 */
#ifndef DBS_LOOP_H
#define DBS_LOOP_H

#include "pool_int.h"

/* pool.c. A connection the loop took from p's resource pool (in use):
 * counted as a session's checkout would be (acquired, the wait
 * histogram, the checkout event). Loop thread; takes the thread's shard
 * lock. */
void dbs__pool_loop_checkout(dbs_pool *p, dbs__conn *c, int64_t wait_ns);
/* pool.c. Gives c (in use, clean: a_idle, or discard) back to p's
 * resource pool, which hands it to the oldest waiter (a blocking session
 * or a loop), keeps it idle, or lets it go (then it is counted and closed
 * here). counted: it was counted by dbs__pool_loop_checkout (checkin
 * event, released, the use histogram over held_ns). No lock held by the
 * caller. broke: with discard, the failure that made the connection unfit
 * (its last), which the invalidate event carries; NULL: unknown. */
void dbs__pool_loop_giveback(dbs_pool *p, dbs__conn *c, bool counted, bool discard,
                             int64_t held_ns, const dbs_error *broke);
/* Closes c, which the resource pool let go of when a cancelled request
 * was taken back (dbs__rp_cancel's GONE outcomes), and counts it closed. */
void dbs__pool_loop_left(dbs_pool *p, dbs__conn *c);

/* pool.c. k stays allocated until p's memory is freed, then goes
 * through k->free. Any thread; takes p->mu. */
void dbs__pool_keep(dbs_pool *p, dbs__kept *k);
/* pool.c. Counts a leak of p's (leaks), or one recovered
 * (leaks_recovered), as a session's would be. Takes the thread's shard
 * lock. */
void dbs__pool_count_leak(dbs_pool *p, bool recovered);

/* replica.c: see there. */
int dbs__replica_choose(dbs_pool *p, const dbs_context *ctx, uint64_t pos, dbs_error *err);
bool dbs__replica_still_ok(dbs_pool *p, int i);

/* query.c: dbs_exec's checks of a statement's arguments. */
int dbs__stmt_args_check(const char *sql, const dbs_value *params, size_t n, dbs_error *err);

#endif /* DBS_LOOP_H */
