/* Read replicas and failover on a real primary with a synchronous streaming
 * standby (tests/pg_replica.sh): read-only sessions run on the standby, a
 * write there is refused; a standby whose replay is paused stops qualifying
 * once it is past replica_max_lag_ms, and qualifies again once it catches
 * up; an idle primary does not make a standby look behind; with the standby
 * down, read-only sessions run on the primary or fail fast; and under four
 * writers the primary is crashed, the standby promoted, writes resume by
 * themselves with every acknowledged write on the new primary, and the old
 * primary, rebuilt as a standby, serves read-only sessions again. Reads
 * your own writes: with the standby's replay paused, a user's read right
 * after their write never misses it (by user_id, and by explicit WAL
 * position), and reads return to the standby once it has replayed. A
 * late measurement of the primary (its monitor connection gone silent)
 * stops the standby from qualifying once the bound can no longer be
 * proven, rather than 300 ms later. The event-loop API routes the same
 * way: a read-only unit runs on the standby, a write in it is refused, and
 * one given a commit position the paused standby has not replayed runs on
 * the primary and sees that commit. A session that waited for a busy
 * replica's connection past the bound runs on the primary, and so does a
 * read-only unit that waited in a loop for it; a loop's replica lane
 * that no longer needs a connection makes room for its primary lane at
 * once; a user's
 * commit made while the sampler resolves an earlier lost position is not
 * covered by that sample's older position; and a replica_url whose hosts
 * are all primaries reports no replica lag (-1). A replica_url with
 * target_session_attrs=read-write, or naming the standby twice, is refused
 * at open, and PGTARGETSESSIONATTRS=read-write (meant for url) does not
 * keep reads off the standby. A unit whose commit position did not come
 * back reports UINT64_MAX, not 0, and a commit whose outcome is unknown
 * (DBS_ECOMMIT_UNKNOWN, but committed) is seen by its user's next read,
 * from a session and from a loop alike.
 *
 * Usage: test_pg_replica SCRIPT DIR [TESTS] (the script, a scratch directory,
 * and optionally the names of the tests to run, comma-separated). */
#include "common.h"
#include "faultproxy.h"
#include "sizing.h"

#include <pthread.h>
#include <stdarg.h>
#include <sys/epoll.h>

static const char *script, *dir;
static atomic_int ro_errors; /* failed statements in ro_where */
static char port_a[16], port_b[16], password[128], superpw[128];

static void sh(const char *fmt, ...)
{
    char args[300], cmd[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "sh %s %s %s", script, args, dir);
    /* node arguments follow DIR */
    char *sp = strchr(args, ' ');
    if (sp) {
        *sp = '\0';
        snprintf(cmd, sizeof cmd, "sh %s %s %s %s", script, args, dir, sp + 1);
    }
    int rc = system(cmd);
    if (rc != 0)
        CHECK_FAIL("%s: exit %d", cmd, rc);
}

/* key=value URL for the given ports (comma lists for several hosts). */
static void url_for(char *out, size_t n, const char *ports, int hosts, bool super,
                    const char *extra)
{
    snprintf(out, n,
             "host=%s port=%s user=%s password=%s dbname=dbscope connect_timeout=3 %s",
             hosts == 2 ? "127.0.0.1,127.0.0.1" : "127.0.0.1", ports,
             super ? "postgres" : "dbscope", super ? superpw : password, extra);
}

static dbs_pool *open_with(const char *url, const char *replica_url, int lag_ms, int fallback)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.replica_url = replica_url;
    cfg.replica_max_lag_ms = lag_ms;
    cfg.replica_fallback = fallback;
    cfg.pool_size = 4;
    cfg.max_overflow = 4;
    cfg.acquire_timeout_ms = 20000;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    return p;
}

/* Where a read-only session runs: fills *port with the server's port and
 * returns pg_is_in_recovery() (1: a standby), or the dbs_code of the open. */
/* A bound for ro_where's statement, 0: the pool's. A test whose pool has
 * none sets it, so that a read routed to a silent server fails instead of
 * waiting for good. */
static int ro_bound_ms;

static int ro_where(dbs_pool *p, int *port, dbs_error *err)
{
    dbs_session *s = dbs_session_open_ro(p, NULL, err);
    if (!s)
        return err->code;
    if (ro_bound_ms > 0 && dbs_session_set_statement_timeout(s, ro_bound_ms, err) != DBS_OK) {
        dbs_session_close(s);
        return err->code;
    }
    /* errors returned, not fatal: the waits below retry */
    dbs_rows *r = dbs_query(s, "SELECT pg_is_in_recovery()::int, inet_server_port()", NULL, 0,
                            err);
    int rec = r ? dbs_rows_next(r, err) : err->code;
    if (rec == 1) {
        rec = (int)dbs_rows_int(r, 0);
        if (port)
            *port = (int)dbs_rows_int(r, 1);
    } else if (rec == 0) {
        rec = DBS_ESQL;
    } else {
        fprintf(stderr, "ro_where: %s\n", err->message);
        atomic_fetch_add(&ro_errors, 1);
    }
    dbs_rows_close(r);
    dbs_session_close(s);
    return rec;
}

static int64_t ro_count(dbs_pool *p, int64_t id)
{
    dbs_error err;
    dbs_session *s = dbs_session_open_ro(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open_ro: %s", err.message);
    dbs_value v[] = {DBS_INT(id)};
    int64_t n = query_int(s, "SELECT count(*) FROM replica_t WHERE id = $1", v, 1);
    dbs_session_close(s);
    return n;
}

static void insert(dbs_pool *p, int64_t id)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    dbs_value v[] = {DBS_INT(id)};
    CHECK_OK(dbs_exec(s, "INSERT INTO replica_t (id) VALUES ($1)", v, 1, &err), &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
}

static int64_t query_int_of(dbs_pool *p, const char *sql)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    int64_t v = query_int(s, sql, NULL, 0);
    dbs_session_close(s);
    return v;
}

static bool lag_known(dbs_pool *p)
{
    return stats_of(p).replica_lag_ms >= 0;
}

struct seen {
    int ro, replica;
    char target[64];
};

static void on_session(const dbs_session_info *in, void *user)
{
    struct seen *s = user;
    if (in->read_only) {
        s->ro++;
        snprintf(s->target, sizeof s->target, "%s", in->target);
    }
    if (strcmp(in->target, "primary") != 0)
        s->replica++;
}

static int work_count(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    *(int64_t *)arg = query_int(s, "SELECT count(*) FROM replica_t", NULL, 0);
    return 0;
}

static void test_routing(const char *url_a, const char *url_b)
{
    dbs_pool *p = open_with(url_a, url_b, 0, 1);
    run_sql(p, "CREATE TABLE IF NOT EXISTS replica_t (id int8 PRIMARY KEY)");
    WAIT_UNTIL(lag_known(p), 20000);
    CHECK(lag_known(p));
    int port = 0;
    dbs_error err;
    CHECK_EQ(ro_where(p, &port, &err), 1);
    CHECK_EQ(port, atoi(port_b));

    /* a write on a read-only session: refused by the server */
    dbs_session *s = dbs_session_open_ro(p, NULL, &err);
    CHECK(s != NULL);
    struct seen seen = {0};
    CHECK_EQ(dbs_pool_sessions(p, on_session, &seen), 1);
    CHECK_EQ(seen.ro, 1);
    CHECK_EQ(seen.replica, 1);
    char label[64];
    snprintf(label, sizeof label, "127.0.0.1:%s", port_b);
    CHECK_STR(seen.target, label);
    CHECK_EQ(dbs_exec(s, "INSERT INTO replica_t (id) VALUES (-1)", NULL, 0, &err), DBS_ESQL);
    CHECK_STR(err.sqlstate, "25006");
    dbs_session_close(s);

    dbs_stats st = stats_of(p);
    CHECK_INT(st.replica_size, >=, 1);
    CHECK_EQ(st.replica_in_use, 0);
    static char text[1 << 16];
    int n = dbs_pool_metrics(p, text, sizeof text);
    CHECK_INT(n, >, 0);
    CHECK_CONTAINS(text, "target=\"replica\",host=\"127.0.0.1:");
    CHECK_CONTAINS(text, "dbscope_acquired_total{pool=\"default\",target=\"primary\"}");
    char json[4096];
    CHECK_INT(dbs_pool_stats_json(p, json, sizeof json), >, 0);
    CHECK_CONTAINS(json, "\"replicas\":[{\"host\":\"127.0.0.1:");

    /* a read-write session on the same pool still goes to the primary */
    s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(query_int(s, "SELECT pg_is_in_recovery()::int", NULL, 0), 0);
    dbs_session_close(s);

    int64_t count = -1;
    CHECK_OK(dbs_transact_ro(p, NULL, work_count, &count, &err), &err);
    CHECK_INT(count, >=, 0);

    /* shutdown covers the replicas: a session open on one counts as not
     * drained, finishes its work (the drain is for it), and closes
     * cleanly; a new one is refused */
    s = dbs_session_open_ro(p, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(dbs_pool_shutdown(p, 0), 1);
    CHECK_OK(dbs_exec(s, "SELECT 1", NULL, 0, &err), &err);
    CHECK(dbs_session_open_ro(p, NULL, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECLOSED);
    dbs_session_close(s);
    CHECK_EQ(dbs_pool_shutdown(p, 1000), 0);
    CHECK_EQ(stats_of(p).replica_size, 0);
    dbs_pool_close(p);
}

static void test_lag(const char *url_a, const char *url_b, const char *super_b)
{
    /* A bound a loaded machine's standby keeps in normal running (300 ms
     * was missed at load average 20), and a pause far longer than it. */
    dbs_pool *p = open_with(url_a, url_b, 1000, 1);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *sb = dbs_pool_open(&cfg, &err);
    if (!sb)
        CHECK_FAIL("super pool: %s", err.message);
    WAIT_UNTIL(lag_known(p), 20000);
    insert(p, 1);
    WAIT_UNTIL(ro_count(p, 1) == 1 && ro_where(p, NULL, &err) == 1, 20000);
    CHECK_EQ(ro_where(p, NULL, &err), 1);

    run_sql(sb, "SELECT pg_wal_replay_pause()");
    insert(p, 2);
    /* Past the bound the standby no longer qualifies: read-only sessions
     * run on the primary and see the write. */
    dbs__sleep_ms(2500);
    uint64_t fb = stats_of(p).ro_fallbacks;
    CHECK_EQ(ro_where(p, NULL, &err), 0);
    CHECK_EQ(ro_count(p, 2), 1);
    CHECK_INT(stats_of(p).ro_fallbacks, >, fb);
    int64_t lag = stats_of(p).replica_lag_ms;
    CHECK(lag == -1 || lag > 1000);

    run_sql(sb, "SELECT pg_wal_replay_resume()");
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 20000);
    CHECK_EQ(ro_where(p, NULL, &err), 1);
    CHECK_EQ(ro_count(p, 2), 1);

    /* An idle primary: no new WAL for many sampling periods, and the
     * standby still qualifies. */
    dbs__sleep_ms(1500);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(ro_where(p, NULL, &err), 1);
    CHECK_EQ(stats_of(p).replica_lag_ms, 0);
    dbs_pool_close(sb);
    dbs_pool_close(p);
}

static void test_fallback(const char *url_a, const char *url_b)
{
    dbs_pool *p = open_with(url_a, url_b, 0, 1);
    dbs_pool *strict = open_with(url_a, url_b, 0, 0);
    dbs_error err;
    WAIT_UNTIL(lag_known(p) && lag_known(strict), 20000);
    CHECK_EQ(ro_where(strict, NULL, &err), 1);
    CHECK_EQ(ro_where(p, NULL, &err), 1);
    sh("halt b");
    WAIT_UNTIL(!lag_known(p) && !lag_known(strict), 20000);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(ro_where(p, NULL, &err), 0);
    dbs_session *s = dbs_session_open_ro(strict, NULL, &err);
    CHECK(s == NULL);
    CHECK_EQ(err.code, DBS_EUNAVAILABLE);
    CHECK_CONTAINS(err.message, "replica");
    CHECK_INT(stats_of(strict).ro_fallbacks, >=, 1);
    /* the refusal is a failure its caller got: counted in the error table */
    CHECK_INT(dbs_pool_errors(strict, DBS_EUNAVAILABLE, ""), >=, 1);
    sh("run b");
    /* The monitor saw the standby fail, so the connections its pools kept
     * from before the restart are pinged before reuse, however recently
     * they were used: no session gets a dead one. */
    atomic_store(&ro_errors, 0);
    WAIT_UNTIL(ro_where(strict, NULL, &err) == 1 && ro_where(p, NULL, &err) == 1, 30000);
    CHECK_EQ(atomic_load(&ro_errors), 0);
    CHECK_EQ(ro_where(strict, NULL, &err), 1);
    CHECK_EQ(ro_where(p, NULL, &err), 1);
    dbs_pool_close(strict);
    dbs_pool_close(p);
}

/* ---- reads your own writes ---- */

/* Where a read-only session of ctx's (needing pos) runs, as ro_where, and
 * whether it sees the row id: *seen = count of it. */
static int ro_sees(dbs_pool *p, const dbs_context *ctx, uint64_t pos, int64_t id,
                   int64_t *seen)
{
    dbs_error err;
    dbs_session *s = dbs_session_open_ro_after(p, ctx, pos, &err);
    if (!s)
        CHECK_FAIL("open_ro_after: %s", err.message);
    dbs_value v[] = {DBS_INT(id)};
    *seen = query_int(s, "SELECT count(*) FROM replica_t WHERE id = $1", v, 1);
    int rec = (int)query_int(s, "SELECT pg_is_in_recovery()::int", NULL, 0);
    dbs_session_close(s);
    return rec;
}

struct ins {
    int64_t id;
};

static int work_insert(dbs_session *s, void *arg, dbs_error *err)
{
    dbs_value v[] = {DBS_INT(((struct ins *)arg)->id)};
    int64_t rc = dbs_exec(s, "INSERT INTO replica_t (id) VALUES ($1)", v, 1, err);
    return rc < 0 ? (int)rc : 0;
}

struct seen_arg {
    int64_t id, seen, rec;
};

static int work_seen(dbs_session *s, void *arg, dbs_error *err)
{
    (void)err;
    struct seen_arg *a = arg;
    dbs_value v[] = {DBS_INT(a->id)};
    a->seen = query_int(s, "SELECT count(*) FROM replica_t WHERE id = $1", v, 1);
    a->rec = query_int(s, "SELECT pg_is_in_recovery()::int", NULL, 0);
    return 0;
}

static uint64_t wal_insert_pos(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("open: %s", err.message);
    int64_t v = query_int(s, "SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", NULL, 0);
    dbs_session_close(s);
    return (uint64_t)v;
}

static void test_read_own_writes(const char *url_a, const char *url_b, const char *super_b)
{
    enum { N = 1000 };
    /* No lag bound: only the positions keep a user's reads fresh. */
    dbs_pool *p = open_with(url_a, url_b, 0, 1);
    dbs_pool *other = open_with(url_a, url_b, 0, 1); /* another process's */
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *sb = dbs_pool_open(&cfg, &err);
    if (!sb)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(p, "CREATE TABLE IF NOT EXISTS replica_t (id int8 PRIMARY KEY)");
    run_sql(p, "DELETE FROM replica_t WHERE id >= 4999999 AND id < 7000000");
    WAIT_UNTIL(lag_known(p) && lag_known(other), 20000);

    /* Positions: a write's commit has one, at or below the insert position
     * read after it; a commit that wrote nothing, or on a read-only
     * session, has none. */
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(dbs_session_commit_pos(s), 0);
    CHECK_EQ(query_int(s, "SELECT count(*) FROM replica_t WHERE id = -9", NULL, 0), 0);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_EQ(dbs_session_commit_pos(s), 0);
    exec_ok(s, "INSERT INTO replica_t (id) VALUES (5000000)");
    CHECK_OK(dbs_commit(s, &err), &err);
    uint64_t pos = dbs_session_commit_pos(s);
    CHECK(pos > 0 && pos != UINT64_MAX);
    CHECK_EQ(query_int(s, "SELECT count(*) FROM replica_t WHERE id = -9", NULL, 0), 0);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK(dbs_session_commit_pos(s) == pos); /* a later read-only commit keeps it */
    dbs_session_close(s);
    CHECK(pos <= wal_insert_pos(p));
    s = dbs_session_open_ro(p, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_EQ(dbs_session_commit_pos(s), 0);
    dbs_session_close(s);
    /* without replicas no position is read: nothing would use it */
    dbs_pool *plain = open_with(url_a, NULL, 0, 1);
    s = dbs_session_open(plain, NULL, &err);
    CHECK(s != NULL);
    exec_ok(s, "INSERT INTO replica_t (id) VALUES (4999999)");
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK_EQ(dbs_session_commit_pos(s), 0);
    dbs_session_close(s);
    dbs_pool_close(plain);
    /* caught up: reads by position go to the standby */
    int64_t seen = 0;
    WAIT_UNTIL(ro_sees(p, NULL, pos, 5000000, &seen) == 1, 20000);
    CHECK_EQ(ro_sees(p, NULL, pos, 5000000, &seen), 1);
    CHECK_EQ(seen, 1);

    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);

    /* Create, then read at once as the same user: never stale. */
    dbs_context me = {.user_id = "user-42"};
    uint64_t fb0 = stats_of(p).ro_pos_fallbacks;
    int stale = 0, on_replica = 0;
    for (int i = 0; i < N; i++) {
        struct ins in = {5000001 + i};
        CHECK_OK(dbs_transact(p, &me, work_insert, &in, &err), &err);
        if (ro_sees(p, &me, 0, in.id, &seen) == 1)
            on_replica++;
        if (seen != 1)
            stale++;
    }
    CHECK_EQ(stale, 0);
    CHECK_EQ(on_replica, 0);
    CHECK_INT(stats_of(p).ro_pos_fallbacks, >=, fb0 + N);

    /* The standby really is behind: a read that needs nothing runs there
     * and misses the writes, and so do the reads of other users (three,
     * so that the user table sharing a slot with user-42 for all of them
     * is out of the question). */
    CHECK_EQ(ro_sees(p, NULL, 0, 5000001, &seen), 1);
    CHECK_EQ(seen, 0);
    int others = 0;
    const char *names[] = {"user-7", "user-8", "user-9"};
    for (int i = 0; i < 3; i++) {
        dbs_context them = {.user_id = names[i]};
        others += ro_sees(p, &them, 0, 5000001, &seen) == 1 && seen == 0;
    }
    CHECK_INT(others, >=, 1);

    /* Explicit positions, also for a pool that never saw the commit (as
     * another process would), through dbs_transact_ro_after too. */
    stale = on_replica = 0;
    for (int i = 0; i < N; i++) {
        int64_t id = 6000000 + i;
        s = dbs_session_open(p, NULL, &err);
        CHECK(s != NULL);
        dbs_value v[] = {DBS_INT(id)};
        CHECK_OK(dbs_exec(s, "INSERT INTO replica_t (id) VALUES ($1)", v, 1, &err), &err);
        CHECK_OK(dbs_commit(s, &err), &err);
        uint64_t at = dbs_session_commit_pos(s);
        dbs_session_close(s);
        CHECK(at > pos);
        dbs_pool *rp = i % 2 ? other : p;
        if (i % 3 == 0) {
            struct seen_arg a = {.id = id};
            CHECK_OK(dbs_transact_ro_after(rp, NULL, at, work_seen, &a, &err), &err);
            seen = a.seen;
            on_replica += a.rec == 1;
        } else {
            on_replica += ro_sees(rp, NULL, at, id, &seen) == 1;
        }
        if (seen != 1)
            stale++;
    }
    CHECK_EQ(stale, 0);
    CHECK_EQ(on_replica, 0);
    CHECK_INT(stats_of(other).ro_pos_fallbacks, >=, N / 2);
    /* with replica_fallback = 0 such a read is refused, saying why */
    dbs_pool *strict = open_with(url_a, url_b, 0, 0);
    WAIT_UNTIL(lag_known(strict), 20000);
    CHECK(dbs_session_open_ro_after(strict, NULL, wal_insert_pos(p), &err) == NULL);
    CHECK_EQ(err.code, DBS_EUNAVAILABLE);
    CHECK_CONTAINS(err.message, "replayed WAL position");
    dbs_pool_close(strict);

    /* Replayed: the user's reads, and reads by position, return to the
     * standby by themselves. */
    run_sql(sb, "SELECT pg_wal_replay_resume()");
    WAIT_UNTIL(ro_sees(p, &me, 0, 5000000 + N, &seen) == 1, 20000);
    CHECK_EQ(ro_sees(p, &me, 0, 5000000 + N, &seen), 1);
    CHECK_EQ(seen, 1);
    uint64_t last = wal_insert_pos(p);
    WAIT_UNTIL(ro_sees(other, NULL, last, 6000000 + N - 1, &seen) == 1, 20000);
    CHECK_EQ(ro_sees(other, NULL, last, 6000000 + N - 1, &seen), 1);
    CHECK_EQ(seen, 1);

    /* A commit whose position does not come back (the position function
     * refused to the role) needs the primary: the session says so, and
     * its user's reads go there until the monitor, measuring the primary
     * again, has a position that covers it; then back to the standby. */
    char url_sa[600];
    url_for(url_sa, sizeof url_sa, port_a, 1, true, "");
    cfg.url = url_sa;
    dbs_pool *sa = dbs_pool_open(&cfg, &err);
    if (!sa)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(sa, "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_current_wal_insert_lsn() FROM PUBLIC");
    dbs_context lost = {.user_id = "user-lost"};
    s = dbs_session_open(p, &lost, &err);
    CHECK(s != NULL);
    exec_ok(s, "INSERT INTO replica_t (id) VALUES (6999999)");
    CHECK_OK(dbs_commit(s, &err), &err);
    CHECK(dbs_session_commit_pos(s) == UINT64_MAX);
    dbs_session_close(s);
    CHECK_EQ(ro_sees(p, &lost, 0, 6999999, &seen), 0);
    CHECK_EQ(seen, 1);
    run_sql(sa, "GRANT EXECUTE ON FUNCTION pg_catalog.pg_current_wal_insert_lsn() TO PUBLIC");
    WAIT_UNTIL(ro_sees(p, &lost, 0, 6999999, &seen) == 1, 20000);
    CHECK_EQ(ro_sees(p, &lost, 0, 6999999, &seen), 1);
    CHECK_EQ(seen, 1);
    dbs_pool_close(sa);
    dbs_pool_close(sb);
    dbs_pool_close(other);
    dbs_pool_close(p);
}

/* The lag bound holds when the primary's measurements stop: its monitor
 * connection goes silent (a real TCP proxy drops every byte), a write
 * lands that the paused standby does not replay, and once longer than the
 * bound has passed without a primary measurement, the standby no longer
 * qualifies (the old rule let measurements up to 300 ms old stand, and
 * the session read the standby without the write). */
static void test_sample_age(const char *url_a, const char *url_b, const char *super_b)
{
    enum { BOUND_MS = 120 };
    faultproxy *fp = fp_start(atoi(port_a));
    char port[16], url_fp[600];
    snprintf(port, sizeof port, "%d", fp_port(fp));
    url_for(url_fp, sizeof url_fp, port, 1, false, "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url_fp;
    cfg.replica_url = url_b;
    cfg.replica_max_lag_ms = BOUND_MS;
    cfg.replica_fallback = 0; /* the primary is behind the silent proxy */
    cfg.statement_timeout_ms = 1000;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_pool *w = open_with(url_a, NULL, 0, 1);
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    dbs_pool *sb = dbs_pool_open(&cfg, &err);
    if (!sb)
        CHECK_FAIL("super pool: %s", err.message);

    for (int round = 0; round < 3; round++) {
        WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 30000);
        CHECK_EQ(ro_where(p, NULL, &err), 1);
        run_sql(sb, "SELECT pg_wal_replay_pause()");
        WAIT_UNTIL(
            query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
            20000);
        /* everything written so far replayed, and the standby qualifies */
        WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 20000);
        fp_set(fp, FP_SILENT, FP_BOTH, 0);
        int64_t id = 7000000 + round;
        insert(w, id);
        /* longer than the bound, well within the old 300 ms */
        dbs__sleep_ms(BOUND_MS + 30);
        dbs_session *s = dbs_session_open_ro(p, NULL, &err);
        if (s) {
            dbs_value v[] = {DBS_INT(id)};
            int64_t n = query_int(s, "SELECT count(*) FROM replica_t WHERE id = $1", v, 1);
            dbs_session_close(s);
            CHECK_EQ(n, 1); /* 0: a stale read */
        }
        CHECK(s == NULL);
        CHECK_EQ(err.code, DBS_EUNAVAILABLE);
        /* and so it stays while the primary stays unmeasured */
        for (int i = 0; i < 10; i++) {
            dbs__sleep_ms(50);
            s = dbs_session_open_ro(p, NULL, &err);
            CHECK(s == NULL);
            CHECK_EQ(err.code, DBS_EUNAVAILABLE);
        }
        fp_set(fp, FP_PASS, FP_BOTH, 0);
        run_sql(sb, "SELECT pg_wal_replay_resume()");
        WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 30000);
        CHECK_EQ(ro_count(p, id), 1);
    }
    dbs_pool_close(sb);
    dbs_pool_close(w);
    dbs_pool_close(p);
    fp_stop(fp);
}

/* For the lag-bound tests: a pool whose replica's pool has one connection
 * and a bound of bound_ms, with the standby qualifying; *w writes on the
 * primary, *sb is a superuser's pool on the standby (to pause its
 * replay); row id of replica_t is not there. */
static dbs_pool *open_one_replica_conn_acq(const char *url_a, const char *url_b,
                                           const char *super_b, int bound_ms, int acquire_ms,
                                           int64_t id, dbs_pool **w, dbs_pool **sb)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url_a;
    cfg.replica_url = url_b;
    cfg.replica_max_lag_ms = bound_ms;
    cfg.pool_size = 1; /* the replica's pool too: one connection */
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = acquire_ms;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    *w = open_with(url_a, NULL, 0, 1);
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    *sb = dbs_pool_open(&cfg, &err);
    if (!*sb)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(*w, "CREATE TABLE IF NOT EXISTS replica_t (id int8 PRIMARY KEY)");
    char sql[80];
    snprintf(sql, sizeof sql, "DELETE FROM replica_t WHERE id = %lld", (long long)id);
    run_sql(*w, sql);
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 30000);
    return p;
}

static dbs_pool *open_one_replica_conn(const char *url_a, const char *url_b, const char *super_b,
                                       int bound_ms, int64_t id, dbs_pool **w, dbs_pool **sb)
{
    return open_one_replica_conn_acq(url_a, url_b, super_b, bound_ms, 30000, id, w, sb);
}

/* The lag bound holds for a session that waits for a replica's
 * connection: the standby qualified when the session began to wait, its
 * replay then stopped and a write landed, and by the time the replica's
 * only connection came free the standby was far past the bound. The
 * session must not run there (it did: it read the standby without the
 * write, a read older than replica_max_lag_ms). */
struct waiter {
    dbs_pool *p;
    int64_t id, seen, rec;
    int rc;
};

static void *ro_waiter(void *arg)
{
    struct waiter *w = arg;
    dbs_error err;
    dbs_session *s = dbs_session_open_ro(w->p, NULL, &err);
    w->rc = s ? DBS_OK : err.code;
    if (!s)
        return NULL;
    dbs_value v[] = {DBS_INT(w->id)};
    w->seen = query_int(s, "SELECT count(*) FROM replica_t WHERE id = $1", v, 1);
    w->rec = query_int(s, "SELECT pg_is_in_recovery()::int", NULL, 0);
    dbs_session_close(s);
    return NULL;
}

static void test_wait_past_bound(const char *url_a, const char *url_b, const char *super_b)
{
    enum { BOUND_MS = 1000 };
    dbs_pool *w, *sb;
    dbs_pool *p = open_one_replica_conn(url_a, url_b, super_b, BOUND_MS, 7100000, &w, &sb);
    dbs_error err;

    /* the replica's one connection, held; a second read-only session
     * waits for it while the standby qualifies */
    dbs_session *held = dbs_session_open_ro(p, NULL, &err);
    CHECK(held != NULL);
    CHECK_EQ(query_int(held, "SELECT pg_is_in_recovery()::int", NULL, 0), 1);
    struct waiter wt = {.p = p, .id = 7100000, .seen = -1, .rec = -1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, ro_waiter, &wt) == 0);
    dbs__sleep_ms(300);

    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);
    insert(w, wt.id);
    /* well past the bound: the standby does not have the write */
    dbs__sleep_ms(BOUND_MS * 5 / 2);
    dbs_session_close(held);
    pthread_join(th, NULL);
    CHECK_EQ(wt.rc, DBS_OK);
    fprintf(stderr, "  waiter: in recovery %lld, saw %lld\n", (long long)wt.rec,
            (long long)wt.seen);
    CHECK_EQ(wt.seen, 1); /* 0: a read older than the bound */
    CHECK_EQ(wt.rec, 0);
    run_sql(sb, "SELECT pg_wal_replay_resume()");
    run_sql(w, "DELETE FROM replica_t WHERE id = 7100000");
    dbs_pool_close(sb);
    dbs_pool_close(w);
    dbs_pool_close(p);
}

/* One acquire bound for the whole call: a read-only session that waited
 * for the replica's connection, found the replica past the lag bound once
 * it had it, and fell back to the primary, must wait there only for what
 * is left of acquire_timeout_ms. It got the whole bound again, so with
 * the primary's connection held too it took one released well after its
 * own bound had passed (DBS_OK where DBS_ETIMEOUT is due). */
static void test_wait_one_bound(const char *url_a, const char *url_b, const char *super_b)
{
    enum { BOUND_MS = 1000, ACQUIRE_MS = 6000, ID = 7150000 };
    dbs_pool *w, *sb;
    dbs_pool *p = open_one_replica_conn_acq(url_a, url_b, super_b, BOUND_MS, ACQUIRE_MS, ID, &w,
                                            &sb);
    dbs_error err;
    dbs_session *held = dbs_session_open_ro(p, NULL, &err);
    CHECK(held != NULL);
    CHECK_EQ(query_int(held, "SELECT pg_is_in_recovery()::int", NULL, 0), 1);
    dbs_session *held_primary = dbs_session_open(p, NULL, &err); /* the primary's one */
    CHECK(held_primary != NULL);
    struct waiter wt = {.p = p, .id = ID, .seen = -1, .rec = -1};
    int64_t t0 = dbs__now_ns();
    pthread_t th;
    CHECK(pthread_create(&th, NULL, ro_waiter, &wt) == 0);
    dbs__sleep_ms(300);
    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);
    insert(w, ID);
    dbs__sleep_ms(BOUND_MS * 5 / 2);
    /* the waiter gets the replica's connection well within its bound,
     * finds the replica past the lag bound and turns to the primary */
    CHECK_INT((dbs__now_ns() - t0) / 1000000, <, ACQUIRE_MS - 1500);
    dbs_session_close(held);
    /* the primary's connection comes free only after the waiter's bound */
    while (dbs__now_ns() - t0 < (int64_t)(ACQUIRE_MS + 1500) * 1000000)
        dbs__sleep_ms(50);
    dbs_session_close(held_primary);
    pthread_join(th, NULL);
    fprintf(stderr, "  waiter: rc %d, in recovery %lld\n", wt.rc, (long long)wt.rec);
    CHECK_EQ(wt.rc, DBS_ETIMEOUT); /* DBS_OK: a connection after its bound */
    run_sql(sb, "SELECT pg_wal_replay_resume()");
    char sql[80];
    snprintf(sql, sizeof sql, "DELETE FROM replica_t WHERE id = %d", ID);
    run_sql(w, sql);
    dbs_pool_close(sb);
    dbs_pool_close(w);
    dbs_pool_close(p);
}

/* Reads your own writes after a commit whose position was lost: the
 * user's slot waits for a primary sample that started after it (MARK_NEW,
 * then MARK_SEEN while a sample runs). A commit of the same user that
 * lands while that sample is under way, after the server read its
 * position, must not be covered by that position: it was (the slot kept
 * its mark, then took the sample's older position), so the user's next
 * read ran on a standby that had replayed the sample's position but not
 * the commit, and missed it. The sampler is held between reading the
 * position and applying it to make the window wide. */
extern _Atomic int dbs__replica_resolve_delay_ms;

/* When the primary's sampler of p (its monitor connection, whose backend
 * shows its last query) last began a sample's query, in microseconds. */
static int64_t sampler_query_start(dbs_pool *p)
{
    return query_int_of(p, "SELECT coalesce(max((extract(epoch FROM query_start) * 1e6)::int8), 0) "
                           "FROM pg_stat_activity WHERE query LIKE 'SELECT (pg_current_wal_lsn()%'");
}

static void test_mark_race(const char *url_a, const char *url_b, const char *super_b)
{
    enum { DELAY_MS = 3000 };
    dbs_pool *p = open_with(url_a, url_b, 0, 1);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *sb = dbs_pool_open(&cfg, &err);
    if (!sb)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(p, "CREATE TABLE IF NOT EXISTS replica_t (id int8 PRIMARY KEY)");
    run_sql(p, "DELETE FROM replica_t WHERE id = 7200000");
    WAIT_UNTIL(lag_known(p), 20000);
    dbs_context me = {.user_id = "user-race"};

    atomic_store(&dbs__replica_resolve_delay_ms, DELAY_MS);
    /* a sample has just read its position (it saw the marks first) and
     * waits; the mark set now waits for the next one */
    int64_t q0 = sampler_query_start(p);
    WAIT_UNTIL(sampler_query_start(p) != q0, 20000);
    int64_t q1 = sampler_query_start(p);
    p->on_commit(p, me.user_id, UINT64_MAX); /* a commit whose position did not come back */
    /* the next sample saw the mark, has read its position and waits */
    WAIT_UNTIL(sampler_query_start(p) != q1, 20000);
    /* the standby has that position and more, then replays no further */
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT (pg_last_wal_replay_lsn() >= '%llX/%llX'::pg_lsn)::int",
             (unsigned long long)(wal_insert_pos(p) >> 32),
             (unsigned long long)(wal_insert_pos(p) & 0xffffffffu));
    WAIT_UNTIL(query_int_of(sb, sql) == 1, 20000);
    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);
    /* the user's write, committed while the sample waits */
    struct ins in = {7200000};
    CHECK_OK(dbs_transact(p, &me, work_insert, &in, &err), &err);
    /* the sample applied, and the next one too */
    dbs__sleep_ms(DELAY_MS * 2 + 500);
    atomic_store(&dbs__replica_resolve_delay_ms, 0);
    int64_t seen = -1;
    int rec = ro_sees(p, &me, 0, in.id, &seen);
    fprintf(stderr, "  user's read: in recovery %d, saw %lld\n", rec, (long long)seen);
    CHECK_EQ(seen, 1); /* 0: the user's own write missed */
    run_sql(sb, "SELECT pg_wal_replay_resume()");
    run_sql(p, "DELETE FROM replica_t WHERE id = 7200000");
    dbs_pool_close(sb);
    dbs_pool_close(p);
}

/* A replica's measurement that never gets an answer (its monitor
 * connection's bytes dropped for a moment, as a firewall that forgets a
 * connection does) ends within a bound even with statement_timeout_ms = 0,
 * so the monitor reconnects and the replica qualifies again once the
 * network is back (the monitor waited for that answer for good: the
 * replica never served again). */
static void test_silent_sample(const char *url_a)
{
    faultproxy *fp = fp_start(atoi(port_b));
    char port[16], url_fp[600];
    snprintf(port, sizeof port, "%d", fp_port(fp));
    url_for(url_fp, sizeof url_fp, port, 1, false, "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url_a;
    cfg.replica_url = url_fp;
    cfg.statement_timeout_ms = 0;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 30000);
    CHECK_EQ(ro_where(p, NULL, &err), 1);
    /* the pool's statements have no bound (the monitor's own bound is
     * what this tests): the test's reads get one */
    ro_bound_ms = 20000;
    fp_set(fp, FP_SILENT, FP_BOTH, 0);
    /* the replica's measurements stop: it no longer qualifies. The lag is
     * unknown as soon as either server's samples are stale, and on a
     * loaded machine the primary's can be late while the replica's last
     * one is still fresh: routing needs only the replica's, which cannot
     * move while its bytes are dropped, so a second past the lag going
     * unknown it is stale (three periods: 300 ms). */
    WAIT_UNTIL(!lag_known(p), 20000);
    dbs__sleep_ms(1000);
    CHECK_EQ(ro_where(p, NULL, &err), 0);
    fp_set(fp, FP_PASS, FP_BOTH, 0);
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 60000);
    CHECK_EQ(ro_where(p, NULL, &err), 1);
    ro_bound_ms = 0;
    dbs_pool_close(p);
    fp_stop(fp);
}

/* What replica_url says about the session a replica must allow: with
 * target_session_attrs=read-write (or primary) no standby is ever
 * connected to and every read went to the primary without a word, so
 * dbs_pool_open refuses it; standby is kept. PGTARGETSESSIONATTRS set
 * for url (read-write) does not reach the replicas: their reads run on
 * the standby (they ran on the primary). A standby named twice is
 * refused, naming it (its metric series appeared twice). */
static void test_session_attrs(const char *url_a, const char *url_b)
{
    char url[700];
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url_a;
    cfg.log_events = 0;
    dbs_error err;
    snprintf(url, sizeof url, "%s target_session_attrs=read-write", url_b);
    cfg.replica_url = url;
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, "target_session_attrs=read-write");
    char ports[40], label[64];
    snprintf(ports, sizeof ports, "%s,%s", port_b, port_b);
    url_for(url, sizeof url, ports, 2, false, "");
    CHECK(dbs_pool_open(&cfg, &err) == NULL);
    CHECK_EQ(err.code, DBS_ECONFIG);
    snprintf(label, sizeof label, "127.0.0.1:%s", port_b);
    CHECK_CONTAINS(err.message, label);

    snprintf(url, sizeof url, "%s target_session_attrs=standby", url_b);
    dbs_pool *p = open_with(url_a, url, 0, 1);
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 20000);
    CHECK_EQ(ro_where(p, NULL, &err), 1);
    dbs_pool_close(p);

    setenv("PGTARGETSESSIONATTRS", "read-write", 1);
    p = open_with(url_a, url_b, 0, 1);
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 20000);
    int where = ro_where(p, NULL, &err);
    dbs_pool_close(p);
    unsetenv("PGTARGETSESSIONATTRS");
    CHECK_EQ(where, 1);
}

/* replica_url naming only servers that are not in recovery (the primary,
 * or a promoted standby): there is no replica, so no replica lag to
 * report: replica_lag_ms is -1, as without replicas (it said 0, a
 * replica fully caught up), and read-only sessions run on the primary. */
static void test_no_standby(const char *url_a)
{
    dbs_pool *p = open_with(url_a, url_a, 1000, 1);
    dbs_error err;
    /* ten sampling periods: the host is measured, not in recovery */
    dbs__sleep_ms(1000);
    CHECK_EQ(ro_where(p, NULL, &err), 0);
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.replica_lag_ms, -1);
    CHECK_INT(st.ro_fallbacks, >=, 1);
    static char text[1 << 16];
    CHECK_INT(dbs_pool_metrics(p, text, sizeof text), >, 0);
    CHECK_CONTAINS(text, "dbscope_replica_lag_seconds{pool=\"default\",target=\"replica\"");
    char json[4096];
    CHECK_INT(dbs_pool_stats_json(p, json, sizeof json), >, 0);
    CHECK_CONTAINS(json, "\"replica_lag_ms\":-1");
    dbs_pool_close(p);
}

/* ---- failover under load ---- */

enum { WRITERS = 4, MAX_ACKED = 1 << 20 };

static dbs_pool *wpool;
static atomic_int stop_writers, acked_n, failed_n, readonly_n;
static int64_t acked[MAX_ACKED];
static _Atomic int64_t last_ack_ms, down_ms, back_ms;

static int write_unit(dbs_session *s, void *arg, dbs_error *err)
{
    dbs_value v[] = {DBS_INT(*(int64_t *)arg)};
    int64_t rc = dbs_exec(s, "INSERT INTO replica_t (id) VALUES ($1)", v, 1, err);
    return rc < 0 ? (int)rc : 0;
}

static void *writer(void *arg)
{
    int64_t base = 1000000 * (1 + (intptr_t)arg);
    for (int64_t k = 0; !atomic_load(&stop_writers); k++) {
        int64_t id = base + k;
        dbs_error err;
        int rc = dbs_transact(wpool, NULL, write_unit, &id, &err);
        if (rc == DBS_OK) {
            int i = atomic_fetch_add(&acked_n, 1);
            if (i < MAX_ACKED)
                acked[i] = id;
            int64_t t = now_ms(), zero = 0;
            atomic_store(&last_ack_ms, t);
            if (atomic_load(&down_ms) && t > atomic_load(&down_ms))
                atomic_compare_exchange_strong(&back_ms, &zero, t);
        } else {
            if (strcmp(err.sqlstate, "25006") == 0)
                atomic_fetch_add(&readonly_n, 1);
            atomic_fetch_add(&failed_n, 1);
            dbs__sleep_ms(20);
        }
    }
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_failover(void)
{
    char ports[40], url_w[600], url_r[600], url_a_only[600];
    snprintf(ports, sizeof ports, "%s,%s", port_a, port_b);
    url_for(url_w, sizeof url_w, ports, 2, false, "target_session_attrs=read-write");
    url_for(url_r, sizeof url_r, ports, 2, false, "");
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url_w;
    cfg.replica_url = url_r;
    /* a bound, so the lag history must survive the switch of primary */
    cfg.replica_max_lag_ms = 2000;
    cfg.pool_size = 4;
    cfg.max_overflow = 4;
    cfg.retry_max = 20;
    cfg.retry_cap_ms = 500;
    cfg.acquire_timeout_ms = 20000;
    cfg.log_events = 0;
    dbs_error err;
    wpool = dbs_pool_open(&cfg, &err);
    if (!wpool)
        CHECK_FAIL("open: %s", err.message);
    pthread_t th[WRITERS];
    for (intptr_t i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *)i);
    WAIT_UNTIL(atomic_load(&acked_n) >= 200, 30000);
    CHECK_INT(atomic_load(&acked_n), >=, 200);

    int64_t t_kill = now_ms();
    sh("kill a");
    atomic_store(&down_ms, now_ms()); /* the primary is gone now */
    sh("promote b");
    /* Writes resume by themselves, on the promoted standby. */
    WAIT_UNTIL(atomic_load(&last_ack_ms) > now_ms() - 50 &&
                   atomic_load(&last_ack_ms) > t_kill + 1,
               60000);
    int before = atomic_load(&acked_n);
    WAIT_UNTIL(atomic_load(&acked_n) >= before + 200, 60000);
    CHECK_INT(atomic_load(&acked_n), >=, before + 200);
    CHECK(atomic_load(&back_ms) > 0);

    /* The old primary comes back as a standby of the new one. */
    sh("rejoin a b");
    int before2 = atomic_load(&acked_n);
    WAIT_UNTIL(atomic_load(&acked_n) >= before2 + 100, 60000);
    atomic_store(&stop_writers, 1);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&readonly_n), 0);

    /* read-only sessions use the rebuilt standby again */
    int port = 0;
    WAIT_UNTIL(ro_where(wpool, &port, &err) == 1 && port == atoi(port_a), 60000);
    CHECK_EQ(ro_where(wpool, &port, &err), 1);
    CHECK_EQ(port, atoi(port_a));
    /* the promoted host, still listed in replica_url, is left out of the
     * lag; the rejoined standby's is known */
    WAIT_UNTIL(stats_of(wpool).replica_lag_ms >= 0, 20000);
    CHECK_INT(stats_of(wpool).replica_lag_ms, >=, 0);

    /* every acknowledged write is on the new primary */
    int n = atomic_load(&acked_n);
    CHECK_INT(n, <=, MAX_ACKED);
    dbs_session *s = dbs_session_open(wpool, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(query_int(s, "SELECT pg_is_in_recovery()::int", NULL, 0), 0);
    CHECK_EQ(query_int(s, "SELECT inet_server_port()", NULL, 0), atoi(port_b));
    int64_t rows = query_int(s, "SELECT count(*) FROM replica_t WHERE id >= 1000000", NULL, 0);
    CHECK_INT(rows, >=, n);
    int64_t *have = malloc(sizeof *have * (size_t)rows);
    CHECK(have != NULL);
    dbs_rows *r = dbs_query(s, "SELECT id FROM replica_t WHERE id >= 1000000", NULL, 0, &err);
    CHECK(r != NULL);
    int64_t k = 0;
    while (dbs_rows_next(r, &err) == 1 && k < rows)
        have[k++] = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    dbs_session_close(s);
    qsort(have, (size_t)k, sizeof *have, cmp64);
    for (int i = 0; i < n; i++)
        if (!bsearch(&acked[i], have, (size_t)k, sizeof *have, cmp64))
            CHECK_FAIL("acknowledged write %lld is not on the new primary",
                       (long long)acked[i]);
    free(have);
    /* Reported for docs/postgresql.md, never asserted: from the crash to
     * the first acknowledged write, promotion included. */
    printf("failover: %.2f s from the primary's crash to the first acknowledged write "
           "(promotion included); %d writes acknowledged, %d units failed meanwhile\n",
           (double)(atomic_load(&back_ms) - atomic_load(&down_ms)) / 1e3, n,
           atomic_load(&failed_n));
    dbs_pool_close(wpool);

    /* A read-write session that lands on a server that is read-only now
     * (no target_session_attrs): refused with 25006 and the connection
     * discarded, so the next connect goes elsewhere. */
    url_for(url_a_only, sizeof url_a_only, port_a, 1, false, "");
    dbs_pool *old = open_with(url_a_only, NULL, 0, 1);
    dbs_stats st0 = stats_of(old);
    s = dbs_session_open(old, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(dbs_exec(s, "INSERT INTO replica_t (id) VALUES (-2)", NULL, 0, &err), DBS_ESQL);
    CHECK_STR(err.sqlstate, "25006");
    dbs_session_close(s);
    dbs_stats st1 = stats_of(old);
    CHECK_EQ(st1.closed_broken, st0.closed_broken + 1);
    CHECK_EQ(st1.size, 0);
    /* a read-only session on that server is not discarded for it */
    s = dbs_session_open_ro(old, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(dbs_exec(s, "INSERT INTO replica_t (id) VALUES (-3)", NULL, 0, &err), DBS_ESQL);
    dbs_session_close(s);
    CHECK_EQ(stats_of(old).closed_broken, st1.closed_broken);
    dbs_pool_close(old);
}

/* The sizing rule on a real server: N pools of pool_size connections each
 * against max_connections (100) less superuser_reserved_connections (3),
 * with nothing else connected: as many pools as dbscope-sizing says reach
 * their peak, and the connects beyond max_connections - reserved are
 * refused. */
static void test_sizing_rule(const char *url_a)
{
    enum { N = 7, SIZE = 16 };
    dbs_sizing_in in = {.processes = N, .pool_size = SIZE, .max_overflow = 0,
                        .max_connections = 100, .superuser_reserved = 3};
    dbs_sizing_out out;
    dbs_sizing(&in, &out);
    CHECK_EQ(out.fits, 0);
    dbs_pool *pools[N];
    static dbs_session *held[N * SIZE];
    int nheld = 0, full = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url_a;
        cfg.pool_size = SIZE;
        cfg.max_overflow = 0;
        cfg.lazy_open = 1;
        cfg.log_events = 0;
        cfg.acquire_timeout_ms = 5000;
        dbs_error err;
        pools[i] = dbs_pool_open(&cfg, &err);
        CHECK(pools[i] != NULL);
        int got = 0;
        for (int k = 0; k < SIZE; k++) {
            dbs_session *s = dbs_session_open(pools[i], NULL, &err);
            if (!s) {
                CHECK_EQ(err.code, DBS_ECONNECT);
                CHECK_CONTAINS(err.message, "slots are reserved");
                refused++;
                break;
            }
            held[nheld++] = s;
            got++;
        }
        full += got == SIZE;
    }
    CHECK_EQ(full, out.fit_processes);
    CHECK_EQ(nheld, out.available);
    CHECK_EQ(refused, 1);
    for (int i = 0; i < nheld; i++)
        dbs_session_close(held[i]);
    for (int i = 0; i < N; i++)
        dbs_pool_close(pools[i]);
}


/* ---- event loops: read-only units on the standby ---- */

struct lunit {
    bool done;
    int rc;
    int64_t v[2];   /* the first row's first column of statements 0 and 1 */
    uint64_t pos;   /* dbs_unit_commit_pos */
    char msg[512];
};

static void lunit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    struct lunit *o = arg;
    o->done = true;
    o->rc = rc;
    snprintf(o->msg, sizeof o->msg, "%s", err->message);
    for (int i = 0; i < 2 && rc == DBS_OK; i++) {
        dbs_rows *r = dbs_unit_rows(u, i);
        dbs_error e;
        if (r && dbs_rows_next(r, &e) == 1)
            o->v[i] = dbs_rows_int(r, 0);
    }
    if (rc == DBS_OK)
        o->pos = dbs_unit_commit_pos(u);
}

/* Runs a unit of sql[0..n-1] under ctx to its end, waiting on the loop's
 * descriptor and deadline as a program would. */
static struct lunit run_lunit_ctx(dbs_loop *l, const dbs_context *ctx, unsigned flags,
                                  uint64_t after, const char *const *sql, int n)
{
    struct lunit o = {.v = {-1, -1}};
    dbs_error err;
    dbs_unit *u = dbs_unit_new(l, ctx, flags, &err);
    if (!u)
        CHECK_FAIL("dbs_unit_new: %s", err.message);
    for (int i = 0; i < n; i++)
        if (dbs_unit_add(u, sql[i], NULL, 0, &err) < 0)
            CHECK_FAIL("dbs_unit_add: %s", err.message);
    if (after)
        CHECK_EQ(dbs_unit_set_after(u, after), DBS_OK);
    CHECK_OK(dbs_unit_submit(u, lunit_done, &o, &err), &err);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, dbs_loop_fd(l), &ev) == 0);
    while (!o.done) {
        struct epoll_event got;
        (void)epoll_wait(ep, &got, 1, dbs_loop_timeout_ms(l));
        CHECK(dbs_loop_run(l) >= 0);
    }
    close(ep);
    return o;
}

static struct lunit run_lunit(dbs_loop *l, unsigned flags, uint64_t after, const char *const *sql,
                              int n)
{
    return run_lunit_ctx(l, NULL, flags, after, sql, n);
}

static void test_loop_replica(const char *url_a, const char *url_b, const char *super_b)
{
    dbs_pool *p = open_with(url_a, url_b, 0, 1);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *sb = dbs_pool_open(&cfg, &err);
    if (!sb)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(p, "CREATE TABLE IF NOT EXISTS replica_t (id int8 PRIMARY KEY)");
    run_sql(p, "DELETE FROM replica_t WHERE id IN (8000000, 8000002)");
    WAIT_UNTIL(lag_known(p), 20000);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);

    static const char *const where[] = {"SELECT pg_is_in_recovery()::int"};
    /* a read-only unit runs on the standby (no lag bound here) */
    struct lunit o;
    WAIT_UNTIL((o = run_lunit(l, DBS_UNIT_RO, 0, where, 1)).rc == DBS_OK && o.v[0] == 1, 20000);
    /* and a write in it is refused by the database */
    static const char *const write_ro[] = {"INSERT INTO replica_t (id) VALUES (8000001)"};
    o = run_lunit(l, DBS_UNIT_RO, 0, write_ro, 1);
    CHECK_EQ(o.rc, DBS_ESQL);

    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);
    static const char *const write[] = {"INSERT INTO replica_t (id) VALUES (8000000)"};
    o = run_lunit(l, 0, 0, write, 1);
    if (o.rc != DBS_OK)
        CHECK_FAIL("write unit: %s", o.msg);
    uint64_t pos = o.pos;
    CHECK(pos > 0 && pos != UINT64_MAX);
    /* read after that commit: the paused standby has not replayed it, so
     * the primary answers, and sees it */
    static const char *const seen[] = {"SELECT pg_is_in_recovery()::int",
                                       "SELECT count(*) FROM replica_t WHERE id = 8000000"};
    o = run_lunit(l, DBS_UNIT_RO, pos, seen, 2);
    CHECK_EQ(o.rc, DBS_OK);
    CHECK_EQ(o.v[0], 0);
    CHECK_EQ(o.v[1], 1);
    /* without the position the standby still answers, stale */
    o = run_lunit(l, DBS_UNIT_RO, 0, seen, 2);
    CHECK_EQ(o.rc, DBS_OK);
    CHECK_EQ(o.v[0], 1);
    CHECK_EQ(o.v[1], 0);

    /* A commit whose position did not come back (the position function
     * refused to the role, as in test_read_own_writes): the unit's
     * position is UINT64_MAX, as dbs_session_commit_pos's is, so a read
     * after it runs on the primary and sees it. (It was 0, "wrote
     * nothing", and the read after it went to the paused standby.) */
    char url_sa[600];
    url_for(url_sa, sizeof url_sa, port_a, 1, true, "");
    cfg.url = url_sa;
    dbs_pool *sa = dbs_pool_open(&cfg, &err);
    if (!sa)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(sa, "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_current_wal_insert_lsn() FROM PUBLIC");
    static const char *const write_lost[] = {"INSERT INTO replica_t (id) VALUES (8000002)"};
    o = run_lunit(l, 0, 0, write_lost, 1);
    run_sql(sa, "GRANT EXECUTE ON FUNCTION pg_catalog.pg_current_wal_insert_lsn() TO PUBLIC");
    if (o.rc != DBS_OK)
        CHECK_FAIL("write unit: %s", o.msg);
    uint64_t lost_pos = o.pos;
    static const char *const seen_lost[] = {"SELECT pg_is_in_recovery()::int",
                                            "SELECT count(*) FROM replica_t WHERE id = 8000002"};
    o = run_lunit(l, DBS_UNIT_RO, lost_pos, seen_lost, 2);
    CHECK_EQ(o.rc, DBS_OK);
    CHECK_EQ(o.v[1], 1); /* 0: a stale read */
    CHECK_EQ(o.v[0], 0);
    CHECK(lost_pos == UINT64_MAX);
    dbs_pool_close(sa);

    run_sql(sb, "SELECT pg_wal_replay_resume()");
    /* once replayed, the position sends it back to the standby */
    WAIT_UNTIL((o = run_lunit(l, DBS_UNIT_RO, pos, seen, 2)).rc == DBS_OK && o.v[0] == 1,
               20000);
    CHECK_EQ(o.v[1], 1);
    dbs_loop_close(l);
    run_sql(p, "DELETE FROM replica_t WHERE id IN (8000000, 8000002)");
    dbs_pool_close(sb);
    dbs_pool_close(p);
    puts("loop replica: ok");
}

/* The lag bound holds for a read-only unit that waits in the loop for a
 * replica's connection, as test_wait_past_bound shows for a session: the
 * standby qualified when the unit was queued for it, its replay then
 * stopped and a write landed, and by the time the replica's only
 * connection came to the loop the standby was far past the bound. The
 * unit must not start there (it did: it read the standby without the
 * write); it goes back through the choice of a lane, to the primary. */
static void test_loop_wait_past_bound(const char *url_a, const char *url_b, const char *super_b)
{
    enum { BOUND_MS = 1000, ID = 7200000 };
    dbs_pool *w, *sb;
    dbs_pool *p = open_one_replica_conn(url_a, url_b, super_b, BOUND_MS, ID, &w, &sb);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);

    /* the replica's one connection, held; a read-only unit queues for it
     * while the standby qualifies */
    dbs_session *held = dbs_session_open_ro(p, NULL, &err);
    CHECK(held != NULL);
    CHECK_EQ(query_int(held, "SELECT pg_is_in_recovery()::int", NULL, 0), 1);
    struct lunit o = {.v = {-1, -1}};
    dbs_unit *u = dbs_unit_new(l, NULL, DBS_UNIT_RO, &err);
    if (!u)
        CHECK_FAIL("dbs_unit_new: %s", err.message);
    CHECK_OK(dbs_unit_add(u, "SELECT count(*) FROM replica_t WHERE id = 7200000", NULL, 0, &err),
             &err);
    CHECK_OK(dbs_unit_add(u, "SELECT pg_is_in_recovery()::int", NULL, 0, &err), &err);
    CHECK_OK(dbs_unit_submit(u, lunit_done, &o, &err), &err);
    for (int i = 0; i < 10; i++) {
        CHECK(dbs_loop_run(l) >= 0);
        dbs__sleep_ms(30);
    }
    CHECK(!o.done);
    CHECK_EQ(stats_of(p).replica_in_use, 1); /* held's: the unit waits */

    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);
    insert(w, ID);
    /* well past the bound: the standby does not have the write */
    dbs__sleep_ms(BOUND_MS * 5 / 2);
    dbs_session_close(held); /* the replica's connection goes to the loop */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, dbs_loop_fd(l), &ev) == 0);
    while (!o.done) {
        struct epoll_event got;
        (void)epoll_wait(ep, &got, 1, dbs_loop_timeout_ms(l));
        CHECK(dbs_loop_run(l) >= 0);
    }
    close(ep);
    if (o.rc != DBS_OK)
        CHECK_FAIL("unit: %d %s", o.rc, o.msg);
    fprintf(stderr, "  unit: saw %lld, in recovery %lld\n", (long long)o.v[0],
            (long long)o.v[1]);
    CHECK_EQ(o.v[0], 1); /* 0: a read older than the bound */
    CHECK_EQ(o.v[1], 0);
    dbs_loop_close(l);
    run_sql(sb, "SELECT pg_wal_replay_resume()");
    run_sql(w, "DELETE FROM replica_t WHERE id = 7200000");
    dbs_pool_close(sb);
    dbs_pool_close(w);
    dbs_pool_close(p);
}

/* A loop's lanes share max_connections: a connection a replica's lane
 * was handed after its unit went away (cancelled while it waited) must
 * make room for a unit waiting in the primary's lane at once. It went
 * back to the replica's pool only after the primary's lane had been
 * served, and the unit waited for the next run of a loop that nothing
 * woke: until acquire_timeout_ms, DBS_ETIMEOUT. */
static void test_loop_lane_slot(const char *url_a, const char *url_b)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url_a;
    cfg.replica_url = url_b;
    cfg.pool_size = 1; /* the loop's bound and the replica's pool: one */
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = 10000;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    WAIT_UNTIL(ro_where(p, NULL, &err) == 1, 30000);
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_session *held = dbs_session_open_ro(p, NULL, &err);
    CHECK(held != NULL);
    CHECK_EQ(query_int(held, "SELECT pg_is_in_recovery()::int", NULL, 0), 1);

    /* a read-only unit asks the replica's pool, and goes away */
    struct lunit ro = {.v = {-1, -1}}, rw = {.v = {-1, -1}};
    dbs_unit *u = dbs_unit_new(l, NULL, DBS_UNIT_RO, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), &err);
    CHECK_OK(dbs_unit_submit(u, lunit_done, &ro, &err), &err);
    CHECK(dbs_loop_run(l) >= 0);
    CHECK(!ro.done);
    dbs_unit_cancel(u);
    CHECK(dbs_loop_run(l) >= 0);
    CHECK(ro.done);
    CHECK_EQ(ro.rc, DBS_ECANCELED);
    /* a read-write unit waits for the loop's one slot */
    u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, "SELECT 42", NULL, 0, &err), &err);
    CHECK_OK(dbs_unit_submit(u, lunit_done, &rw, &err), &err);
    CHECK(dbs_loop_run(l) >= 0);
    dbs_session_close(held); /* the replica's connection goes to the loop */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, dbs_loop_fd(l), &ev) == 0);
    while (!rw.done) {
        struct epoll_event got;
        (void)epoll_wait(ep, &got, 1, dbs_loop_timeout_ms(l));
        CHECK(dbs_loop_run(l) >= 0);
    }
    close(ep);
    if (rw.rc != DBS_OK)
        CHECK_FAIL("read-write unit: %d %s", rw.rc, rw.msg);
    CHECK_EQ(rw.v[0], 42);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

/* Ends, from another connection, the first backend found waiting in
 * its COMMIT for the standby (wait_event SyncRep): the server answers
 * that COMMIT with 57P01 after committing locally. */
static void *terminate_syncrep(void *arg)
{
    dbs_pool *sa = arg;
    WAIT_UNTIL(query_int_of(sa, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE wait_event = 'SyncRep'") > 0,
               30000);
    return NULL;
}

/* A commit whose outcome is unknown (DBS_ECOMMIT_UNKNOWN: the connection
 * ended with the COMMIT in flight) may have happened, and here has: the
 * COMMIT waits for the paused standby to apply it (synchronous_commit =
 * remote_apply), committed locally, when its backend is terminated. Its
 * user's next read must see it, or a program that reads back to learn
 * the outcome finds the row missing on the stale standby and writes it
 * again. Sessions and event-loop units alike. (Nothing was recorded for
 * the user: both reads ran on the standby and missed the row.) */
static void test_unknown_commit(const char *url_a, const char *url_b, const char *super_b)
{
    dbs_pool *p = open_with(url_a, url_b, 0, 1);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super_b;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *sb = dbs_pool_open(&cfg, &err);
    if (!sb)
        CHECK_FAIL("super pool: %s", err.message);
    char url_sa[600];
    url_for(url_sa, sizeof url_sa, port_a, 1, true, "");
    cfg.url = url_sa;
    dbs_pool *sa = dbs_pool_open(&cfg, &err);
    if (!sa)
        CHECK_FAIL("super pool: %s", err.message);
    run_sql(p, "CREATE TABLE IF NOT EXISTS replica_t (id int8 PRIMARY KEY)");
    run_sql(p, "DELETE FROM replica_t WHERE id IN (8100000, 8100001)");
    WAIT_UNTIL(lag_known(p) && ro_where(p, NULL, &err) == 1, 20000);
    run_sql(sb, "SELECT pg_wal_replay_pause()");
    WAIT_UNTIL(query_int_of(sb, "SELECT (pg_get_wal_replay_pause_state() = 'paused')::int") == 1,
               20000);

    dbs_context me = {.user_id = "user-unknown"};
    dbs_session *s = dbs_session_open(p, &me, &err);
    CHECK(s != NULL);
    exec_ok(s, "SET LOCAL synchronous_commit = remote_apply");
    exec_ok(s, "INSERT INTO replica_t (id) VALUES (8100000)");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, terminate_syncrep, sa) == 0);
    int rc = dbs_commit(s, &err);
    pthread_join(t, NULL);
    CHECK_EQ(rc, DBS_ECOMMIT_UNKNOWN);
    dbs_session_close(s);
    CHECK_EQ(query_int_of(sa, "SELECT count(*) FROM replica_t WHERE id = 8100000"), 1);
    int64_t seen = -1;
    int rec = ro_sees(p, &me, 0, 8100000, &seen);
    CHECK_EQ(seen, 1); /* 0: a stale read */
    CHECK_EQ(rec, 0);

    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    /* another user, whose reads the session's commit does not send to
     * the primary */
    dbs_context me2 = {.user_id = "user-unknown-loop"};
    static const char *const seen_q[] = {"SELECT pg_is_in_recovery()::int",
                                         "SELECT count(*) FROM replica_t WHERE id = 8100001"};
    struct lunit o = run_lunit_ctx(l, &me2, DBS_UNIT_RO, 0, seen_q, 2);
    CHECK_EQ(o.rc, DBS_OK);
    CHECK_EQ(o.v[0], 1);
    static const char *const write[] = {"SET LOCAL synchronous_commit = remote_apply",
                                        "INSERT INTO replica_t (id) VALUES (8100001)"};
    CHECK(pthread_create(&t, NULL, terminate_syncrep, sa) == 0);
    o = run_lunit_ctx(l, &me2, 0, 0, write, 2);
    pthread_join(t, NULL);
    CHECK_EQ(o.rc, DBS_ECOMMIT_UNKNOWN);
    CHECK_EQ(query_int_of(sa, "SELECT count(*) FROM replica_t WHERE id = 8100001"), 1);
    o = run_lunit_ctx(l, &me2, DBS_UNIT_RO, 0, seen_q, 2);
    CHECK_EQ(o.rc, DBS_OK);
    CHECK_EQ(o.v[1], 1); /* 0: a stale read */
    CHECK_EQ(o.v[0], 0);
    dbs_loop_close(l);

    run_sql(sb, "SELECT pg_wal_replay_resume()");
    /* replayed: the user's reads return to the standby */
    WAIT_UNTIL(ro_sees(p, &me, 0, 8100000, &seen) == 1 &&
                   ro_sees(p, &me2, 0, 8100001, &seen) == 1,
               20000);
    CHECK_EQ(ro_sees(p, &me2, 0, 8100001, &seen), 1);
    CHECK_EQ(seen, 1);
    run_sql(p, "DELETE FROM replica_t WHERE id IN (8100000, 8100001)");
    dbs_pool_close(sa);
    dbs_pool_close(sb);
    dbs_pool_close(p);
}

static int work_never(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)err;
    ++*(int *)arg;
    return 0;
}

/* A context the header refuses (past DBS_CONTEXT_MAX, not UTF-8) is the
 * caller's mistake: DBS_EMISUSE on the first try, from every read-only
 * entry point and with either replica_fallback, never DBS_EUNAVAILABLE,
 * never counted as a fallback or an unavailable replica, never retried. */
static void test_bad_context(const char *url_a, const char *url_b)
{
    static char longid[DBS_CONTEXT_MAX + 2];
    memset(longid, 'x', DBS_CONTEXT_MAX + 1);
    const dbs_context bad[] = {
        {.user_id = longid},
        {.request_id = "r\xff"},
        {.tenant_id = "\xc0\x80"},
    };
    for (int fb = 0; fb <= 1; fb++) {
        dbs_pool *p = open_with(url_a, url_b, 0, fb);
        WAIT_UNTIL(lag_known(p), 20000);
        CHECK(lag_known(p));
        dbs_stats before = stats_of(p);
        uint64_t unavail = dbs_pool_errors(p, DBS_EUNAVAILABLE, NULL);
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            dbs_error err;
            CHECK(dbs_session_open_ro(p, &bad[i], &err) == NULL);
            CHECK_EQ(err.code, DBS_EMISUSE);
            CHECK(dbs_session_open_ro_after(p, &bad[i], 1, &err) == NULL);
            CHECK_EQ(err.code, DBS_EMISUSE);
            int calls = 0;
            CHECK_EQ(dbs_transact_ro(p, &bad[i], work_never, &calls, &err), DBS_EMISUSE);
            CHECK_EQ(err.code, DBS_EMISUSE);
            CHECK_EQ(dbs_transact_ro_after(p, &bad[i], 1, work_never, &calls, &err),
                     DBS_EMISUSE);
            CHECK_EQ(calls, 0);
        }
        dbs_stats after = stats_of(p);
        CHECK_EQ(after.ro_fallbacks, before.ro_fallbacks);
        CHECK_EQ(after.ro_pos_fallbacks, before.ro_pos_fallbacks);
        CHECK_EQ(after.retries, before.retries);
        CHECK_EQ(dbs_pool_errors(p, DBS_EUNAVAILABLE, NULL), unavail);
        CHECK_EQ(dbs_pool_sessions(p, on_session, &(struct seen){0}), 0);
        /* and the replica still serves a good one */
        dbs_error err;
        CHECK_EQ(ro_where(p, NULL, &err), 1);
        dbs_pool_close(p);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_pg_replica SCRIPT DIR\n");
        return 2;
    }
    script = argv[1];
    dir = argv[2];
    sh("start");
    read_line(dir, "a.port", port_a, sizeof port_a);
    read_line(dir, "b.port", port_b, sizeof port_b);
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "superpw", superpw, sizeof superpw);
    char url_a[600], url_b[600], super_b[600];
    url_for(url_a, sizeof url_a, port_a, 1, false, "");
    url_for(url_b, sizeof url_b, port_b, 1, false, "");
    url_for(super_b, sizeof super_b, port_b, 1, true, "");

    /* an optional third argument runs only the tests it names
     * (comma-separated) */
    const char *only = argc > 3 ? argv[3] : NULL;
#define RUN(name, call)                                                        \
    do {                                                                       \
        if (!only || strstr(only, name)) {                                     \
            printf("-- %s\n", name);                                           \
            fflush(stdout);                                                    \
            call;                                                              \
        }                                                                      \
    } while (0)
    RUN("test_sizing_rule", test_sizing_rule(url_a));
    RUN("test_routing", test_routing(url_a, url_b));
    RUN("test_no_standby", test_no_standby(url_a));
    RUN("test_bad_context", test_bad_context(url_a, url_b));
    RUN("test_session_attrs", test_session_attrs(url_a, url_b));
    RUN("test_lag", test_lag(url_a, url_b, super_b));
    RUN("test_wait_past_bound", test_wait_past_bound(url_a, url_b, super_b));
    RUN("test_wait_one_bound", test_wait_one_bound(url_a, url_b, super_b));
    RUN("test_read_own_writes", test_read_own_writes(url_a, url_b, super_b));
    RUN("test_mark_race", test_mark_race(url_a, url_b, super_b));
    RUN("test_loop_replica", test_loop_replica(url_a, url_b, super_b));
    RUN("test_loop_wait_past_bound", test_loop_wait_past_bound(url_a, url_b, super_b));
    RUN("test_loop_lane_slot", test_loop_lane_slot(url_a, url_b));
    RUN("test_unknown_commit", test_unknown_commit(url_a, url_b, super_b));
    RUN("test_sample_age", test_sample_age(url_a, url_b, super_b));
    RUN("test_silent_sample", test_silent_sample(url_a));
    RUN("test_fallback", test_fallback(url_a, url_b));
    RUN("test_failover", test_failover());
#undef RUN
    sh("stop");
    puts("test_pg_replica: ok");
    return 0;
}
