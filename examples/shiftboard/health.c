/* GET /health: answers within a second whatever the database does.
 *
 * The pool's own view (dbs_pool_stats) costs no round trip and is always
 * reported. The database itself is asked by a probe thread with a short
 * statement bound; the request waits for the probe at most SB_HEALTH_WAIT_MS
 * and answers 503 when it has not finished by then. At most one probe runs
 * at a time: while one is stuck (a silent network, a connect that hangs),
 * further checks wait on it instead of piling up threads and sessions, so a
 * load balancer polling /health cannot make things worse.
 *
 * The budget: the promise is an answer within a second; the request waits
 * for the probe SB_HEALTH_WAIT_MS, and the probe's statement is bounded
 * well under that, which leaves half the second for everything else
 * (thread start, the pool's view, the answer's trip).
 *
 * Writes: a database that answers SELECT 1 may still refuse every write
 * (a full disk; on SQLite, a file whose write lock another process holds).
 * The routes report their writes' outcomes (sb_health_write_end); a write
 * refused for want of storage, or one that could not get the lock within
 * its bounds, makes /health answer 503 "degraded" until a write succeeds
 * again or SB_WRITE_DEGRADED_S pass without another such failure.
 *
 * While a lock is known, one write at a time waits for it (that write
 * finds out when the lock is gone) and the others are refused at once
 * (sb_health_write_begin): each write that waits it out holds a handler
 * slot about 4 s, so a few clients writing would otherwise take every
 * slot, and reads, which the lock does not stop, would find none. */
#include "shiftboard.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SB_HEALTH_WAIT_MS = 450, SB_HEALTH_STATEMENT_MS = 300, SB_WRITE_DEGRADED_S = 30 };

/* The probe's state, guarded by lock. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t finished; /* on CLOCK_MONOTONIC: finished_init */
static pthread_once_t finished_once = PTHREAD_ONCE_INIT;
static bool running;          /* a probe thread is out */
static unsigned long rounds;  /* probes finished so far */
static struct timespec started; /* when the running probe began */
static int last_rc = DBS_OK;
static char last_code[32], last_message[512];

static const sb_app *probe_app;

/* The last write refused for want of storage (DBS_EFULL) or for a lock
 * (SB_WRITE_LOCKED), guarded by lock; 0 when none since the last write
 * that succeeded. */
enum { SB_WRITE_LOCKED = 1 };
static int write_fail_rc;
static struct timespec write_fail_at;
/* A write is out that waits for a known lock (guarded by lock). */
static bool lock_probe_out;

/* Whether rc, the end of a write, says the database's write lock could not
 * be had. SQLite only: there it means the wait for another connection's or
 * process's lock ran out (busy_timeout_ms on each of dbs_transact's tries,
 * or the statement bound), which SELECT 1 never notices. On PostgreSQL and
 * MariaDB a conflict still failing after the retries is between requests,
 * and a server that stopped answering is the probe's to report. */
static bool write_locked(const sb_app *app, int rc)
{
    return !app->postgres && !app->mariadb && (rc == DBS_ERETRYABLE || rc == DBS_ESTMT_TIMEOUT);
}

static double ms_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

bool sb_health_write_begin(const sb_app *app, bool *probe)
{
    *probe = false;
    if (app->postgres || app->mariadb)
        return true;
    pthread_mutex_lock(&lock);
    bool go = true;
    if (write_fail_rc == SB_WRITE_LOCKED) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (ms_between(&write_fail_at, &now) < SB_WRITE_DEGRADED_S * 1000.0) {
            go = !lock_probe_out;
            lock_probe_out = *probe = go;
        }
    }
    pthread_mutex_unlock(&lock);
    return go;
}

void sb_health_write_end(const sb_app *app, int rc, bool stores, bool probe)
{
    pthread_mutex_lock(&lock);
    if (probe)
        lock_probe_out = false;
    if (rc == DBS_OK) {
        /* any write took the lock; only one that stored shows room */
        if (stores || write_fail_rc == SB_WRITE_LOCKED)
            write_fail_rc = 0;
    } else if (rc == DBS_EFULL || write_locked(app, rc)) {
        write_fail_rc = rc == DBS_EFULL ? rc : SB_WRITE_LOCKED;
        clock_gettime(CLOCK_MONOTONIC, &write_fail_at);
    }
    pthread_mutex_unlock(&lock);
}

static int probe_once(const sb_app *app, dbs_error *err)
{
    dbs_context ctx = {.request_id = "health"};
    dbs_session *s = dbs_session_open(app->pool, &ctx, err);
    if (!s)
        return err->code;
    /* a health check must answer fast, whatever the pool's bound (where
     * the backend fixes it at connect, the pool's bound stands) */
    int rc = dbs_session_set_statement_timeout(s, SB_HEALTH_STATEMENT_MS, err);
    if (rc == DBS_ECONFIG)
        rc = DBS_OK;
    if (rc == DBS_OK) {
        dbs_rows *r = dbs_query(s, "SELECT 1", NULL, 0, err);
        if (!r) {
            rc = err->code;
        } else {
            int n = dbs_rows_next(r, err);
            rc = n == 1 ? DBS_OK : n < 0 ? n : DBS_ESQL;
            dbs_rows_close(r);
        }
    }
    dbs_session_close(s);
    return rc;
}

/* The failure's class as the answer's "code": the names of /api/pool's
 * errors_by, so the two can be matched; dbs_strerror's sentence did not fit
 * last_code and reached clients cut ("database unavailable: failing f"). */
static const char *code_name(int rc)
{
    switch (rc) {
    case DBS_OK: return "ok";
    case DBS_ECONFIG: return "config";
    case DBS_ECONNECT: return "connect";
    case DBS_ETIMEOUT: return "timeout";
    case DBS_ECLOSED: return "closed";
    case DBS_ESQL: return "sql";
    case DBS_ERETRYABLE: return "retryable";
    case DBS_EUNAVAILABLE: return "unavailable";
    case DBS_ENOMEM: return "nomem";
    case DBS_ESTMT_TIMEOUT: return "stmt_timeout";
    case DBS_EFULL: return "full";
    default: return "other";
    }
}

static void *probe_thread(void *arg)
{
    (void)arg;
    dbs_error err = {0};
    int rc = probe_once(probe_app, &err);
    pthread_mutex_lock(&lock);
    last_rc = rc;
    snprintf(last_code, sizeof last_code, "%s", code_name(rc));
    snprintf(last_message, sizeof last_message, "%s", rc == DBS_OK ? "" : err.message);
    running = false;
    rounds++;
    pthread_cond_broadcast(&finished);
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* The wait for a probe is timed on the monotonic clock: a step of the wall
 * clock must not answer "timeout" at once, nor hold a request for the step. */
static void finished_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&finished, &a);
    pthread_condattr_destroy(&a);
}

void sb_health(const sb_app *app, sb_request *req, sb_response *res)
{
    (void)req;
    pthread_once(&finished_once, finished_init);
    struct timespec now, until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += SB_HEALTH_WAIT_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;

    pthread_mutex_lock(&lock);
    /* the probe that finishes after this point answers for this request:
     * one already running counts, since it began before it */
    unsigned long want = rounds + 1;
    if (!running) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        probe_app = app;
        if (pthread_create(&t, &attr, probe_thread, NULL) == 0) {
            running = true;
            clock_gettime(CLOCK_MONOTONIC, &started);
        }
        pthread_attr_destroy(&attr);
    }
    /* a loop: wakeups may be spurious */
    while (running && rounds < want && pthread_cond_timedwait(&finished, &lock, &until) == 0)
        ;
    bool answered = rounds >= want;
    int rc = last_rc;
    int write_rc = write_fail_rc;
    double write_age_ms = 0;
    char code[32], message[512];
    snprintf(code, sizeof code, "%s", last_code);
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (write_rc) {
        write_age_ms = ms_between(&write_fail_at, &now);
        if (write_age_ms >= SB_WRITE_DEGRADED_S * 1000.0)
            write_rc = write_fail_rc = 0;
    }
    if (answered)
        snprintf(message, sizeof message, "%s", last_message);
    else if (running)
        snprintf(message, sizeof message, "the database has not answered a check begun %.0f ms ago",
                 ms_between(&started, &now));
    else
        snprintf(message, sizeof message, "could not start a database check");
    pthread_mutex_unlock(&lock);

    dbs_stats st;
    dbs_pool_stats(app->pool, &st);
    json_t *pool = json_pack(
        "{sisisisisisisisIsIsIsIsI}", "size", st.size, "idle", st.idle, "in_use", st.in_use,
        "max_size", st.max_size, "waiting", st.waiting, "pending", st.pending, "overflow_in_use",
        st.overflow_in_use, "timeouts", (json_int_t)st.timeouts, "connect_failures",
        (json_int_t)st.connect_failures, "unavailable", (json_int_t)st.unavailable,
        "invalidated", (json_int_t)st.invalidated, "acquired", (json_int_t)st.acquired);
    const char *db = app->postgres ? "postgresql" : app->mariadb ? "mariadb" : "sqlite";
    if (answered && rc == DBS_OK && !write_rc) {
        sb_json(res, 200, json_pack("{ssssso*}", "status", "ok", "database", db, "pool", pool));
        return;
    }
    if (answered && rc == DBS_OK) {
        /* reads work, writes do not */
        bool locked = write_rc == SB_WRITE_LOCKED;
        const char *what = locked                  ? "locked"
                           : write_rc == DBS_EFULL ? "full"
                                                   : dbs_strerror(write_rc);
        char why[200];
        snprintf(why, sizeof why, "writes are failing: %s (last %.0f s ago)",
                 locked ? "the database file is locked by another connection or process"
                        : dbs_strerror(write_rc),
                 write_age_ms / 1000.0);
        res->retry_after = "5";
        sb_json(res, 503,
                json_pack("{sssssssssbso*}", "status", "degraded", "database", db, "error", why,
                          "code", what, "answered", true, "pool", pool));
        return;
    }
    res->retry_after = "1";
    sb_json(res, 503,
            json_pack("{sssssssssbso*}", "status", "unavailable", "database", db, "error", message,
                      "code", answered ? code : "timeout", "answered", answered, "pool", pool));
}
