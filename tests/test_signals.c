/* Blocking calls under a storm of signals.
 *
 * A server program installs handlers without SA_RESTART, and profilers and
 * timers (setitimer, SIGPROF, SIGALRM, SIGCHLD) interrupt every thread
 * often: each interrupted system call returns EINTR. Every wait of the
 * library must come through that as if nothing happened: no early return
 * with a wrong error, no wait past its bound, no lost wake-up. Here
 * SIGALRM, with a no-op handler and no SA_RESTART, reaches the process
 * every millisecond (setitimer) and each of the test's threads every
 * millisecond as well (pthread_kill), while the test
 *
 *   - waits for a connection until the acquire timeout (DBS_ETIMEOUT, not
 *     before it, not long after it),
 *   - waits for a connection that another thread hands back (served),
 *   - runs a statement that takes many intervals (a sleep on a server,
 *     a wait on a locked SQLite file): it succeeds,
 *   - runs one past statement_timeout_ms: DBS_ESTMT_TIMEOUT within the
 *     bound the header gives, not the statement's whole length,
 *   - runs dbs_transact units: committed, once each.
 *
 * The bounds checked are generous (seconds): they catch a wait that
 * restarts its whole timeout at each signal, not a slow machine.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>

static atomic_long hits;

static void on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add_explicit(&hits, 1, memory_order_relaxed);
}

enum { MAX_TARGETS = 8 };
/* Under targets_mu: a thread is signalled only while registered, and it
 * leaves before it exits, so no signal goes to a thread that is gone. */
static pthread_mutex_t targets_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t targets[MAX_TARGETS];
static int ntargets;
static atomic_bool storm_on;
static pthread_t storm_thread;

static void target_add(void)
{
    pthread_mutex_lock(&targets_mu);
    CHECK(ntargets < MAX_TARGETS);
    targets[ntargets++] = pthread_self();
    pthread_mutex_unlock(&targets_mu);
}

static void target_remove(void)
{
    /* Threads leave in the reverse order they came (the test's helpers
     * are joined before the next one starts). */
    pthread_mutex_lock(&targets_mu);
    ntargets--;
    pthread_mutex_unlock(&targets_mu);
}

static void *storm(void *v)
{
    (void)v;
    while (atomic_load(&storm_on)) {
        pthread_mutex_lock(&targets_mu);
        for (int i = 0; i < ntargets; i++)
            pthread_kill(targets[i], SIGALRM);
        pthread_mutex_unlock(&targets_mu);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void storm_start(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: interrupted calls return EINTR */
    CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
    target_add();
    atomic_store(&storm_on, true);
    /* The signalling thread takes none itself. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    CHECK_EQ(pthread_create(&storm_thread, NULL, storm, NULL), 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    CHECK_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void storm_stop(void)
{
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    atomic_store(&storm_on, false);
    pthread_join(storm_thread, NULL);
}

static const char *url;
static const char *table;

static dbs_pool *pool_with(int size, int acquire_ms, int stmt_ms)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = size;
    cfg.max_overflow = 0;
    cfg.acquire_timeout_ms = acquire_ms;
    cfg.statement_timeout_ms = stmt_ms;
    cfg.busy_timeout_ms = 20000;
    cfg.housekeeping_interval_ms = 5; /* its sleeps are interrupted too */
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open(%s): %s", url, err.message);
    return p;
}

/* A statement that takes about ms on the server (SQLite: a read). */
static void sleep_sql(char *out, size_t n, int ms)
{
    if (test_is_pg(url))
        snprintf(out, n, "SELECT 1 FROM (SELECT pg_sleep(%d.%03d)) s", ms / 1000, ms % 1000);
    else if (test_is_mysql(url))
        snprintf(out, n, "SELECT 1 FROM (SELECT SLEEP(%d.%03d)) s", ms / 1000, ms % 1000);
    else
        snprintf(out, n, "SELECT 1");
}

/* The acquire timeout, passed under signals: DBS_ETIMEOUT, not early. */
static void acquire_times_out(void)
{
    dbs_pool *p = pool_with(1, 400, 30000);
    dbs_session *held = open_ok(p);
    for (int i = 0; i < 3; i++) {
        dbs_error err;
        int64_t t0 = now_ms();
        dbs_session *s = dbs_session_open(p, NULL, &err);
        int64_t took = now_ms() - t0;
        CHECK(s == NULL);
        CHECK_EQ(err.code, DBS_ETIMEOUT);
        CHECK_INT(took, >=, 390);
        CHECK_INT(took, <, 5000);
    }
    dbs_session_close(held);
    dbs_pool_close(p);
}

typedef struct {
    dbs_pool *p;
    dbs_session *s;
    atomic_bool opened;
    int hold_ms;
} holder;

static void *hold_then_close(void *v)
{
    holder *h = v;
    target_add();
    h->s = open_ok(h->p);
    atomic_store(&h->opened, true);
    dbs__sleep_ms(h->hold_ms);
    dbs_session_close(h->s);
    target_remove();
    return NULL;
}

/* A connection handed back while another thread waits for it reaches the
 * waiter: no wake-up is lost to a signal. */
static void acquire_served(void)
{
    dbs_pool *p = pool_with(1, 20000, 30000);
    for (int i = 0; i < 3; i++) {
        holder h = {.p = p, .hold_ms = 200};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, hold_then_close, &h), 0);
        WAIT_UNTIL(atomic_load(&h.opened), 10000);
        CHECK(atomic_load(&h.opened));
        dbs_error err;
        int64_t t0 = now_ms();
        dbs_session *s = dbs_session_open(p, NULL, &err);
        int64_t took = now_ms() - t0;
        if (!s)
            CHECK_FAIL("open: %d %s", err.code, err.message);
        CHECK_INT(took, <, 10000);
        dbs_session_close(s);
        pthread_join(th, NULL);
    }
    dbs_pool_close(p);
}

/* A statement that takes many intervals on the server succeeds. */
static void long_statement(void)
{
    dbs_pool *p = pool_with(2, 20000, 30000);
    char sql[200];
    dbs_session *s = open_ok(p);
    sleep_sql(sql, sizeof sql, 300);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(query_int(s, sql, NULL, 0), 1);
    dbs_session_close(s);
    dbs_pool_close(p);
}

typedef struct {
    dbs_pool *p;
    atomic_bool locked;
    int hold_ms;
} sq_locker;

static void *sq_lock_then_commit(void *v)
{
    sq_locker *l = v;
    target_add();
    dbs_session *s = open_ok(l->p);
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s(v) VALUES (1)", table);
    exec_ok(s, sql);
    atomic_store(&l->locked, true);
    dbs__sleep_ms(l->hold_ms);
    dbs_error err;
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    target_remove();
    return NULL;
}

/* SQLite: a write that waits on another connection's lock for many
 * intervals, then gets it. */
static void sqlite_busy_wait(void)
{
    dbs_pool *p = pool_with(2, 20000, 30000);
    for (int i = 0; i < 3; i++) {
        sq_locker l = {.p = p, .hold_ms = 300};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, sq_lock_then_commit, &l), 0);
        WAIT_UNTIL(atomic_load(&l.locked), 10000);
        CHECK(atomic_load(&l.locked));
        dbs_session *s = open_ok(p);
        char sql[200];
        snprintf(sql, sizeof sql, "INSERT INTO %s(v) VALUES (2)", table);
        exec_ok(s, sql);
        dbs_error err;
        CHECK_OK(dbs_commit(s, &err), &err);
        dbs_session_close(s);
        pthread_join(th, NULL);
    }
    dbs_pool_close(p);
}

/* Past statement_timeout_ms: DBS_ESTMT_TIMEOUT within the bound the header
 * gives (MariaDB: about twice it), not the statement's whole length. */
static void statement_bound(void)
{
    dbs_pool *p = pool_with(2, 20000, 1000);
    dbs_error err;
    int64_t t0, took;
    if (test_is_pg(url) || test_is_mysql(url)) {
        dbs_session *s = open_ok(p);
        char sql[200];
        sleep_sql(sql, sizeof sql, 8000);
        t0 = now_ms();
        dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
        took = now_ms() - t0;
        if (r) {
            dbs_rows_close(r);
            CHECK_FAIL("a %s past the bound succeeded after %lld ms", sql, (long long)took);
        }
        CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
        dbs_session_close(s);
    } else {
        sq_locker l = {.p = p, .hold_ms = 6000};
        pthread_t th;
        CHECK_EQ(pthread_create(&th, NULL, sq_lock_then_commit, &l), 0);
        WAIT_UNTIL(atomic_load(&l.locked), 10000);
        CHECK(atomic_load(&l.locked));
        dbs_session *s = open_ok(p);
        char sql[200];
        snprintf(sql, sizeof sql, "INSERT INTO %s(v) VALUES (3)", table);
        t0 = now_ms();
        long long n = dbs_exec(s, sql, NULL, 0, &err);
        took = now_ms() - t0;
        CHECK_INT(n, <, 0);
        CHECK_EQ(err.code, DBS_ESTMT_TIMEOUT);
        dbs_session_close(s);
        pthread_join(th, NULL);
    }
    CHECK_INT(took, >=, 900);
    CHECK_INT(took, <, 5000);
    dbs_pool_close(p);
}

/* A connect to a server that takes the connection and never answers ends
 * at connect_timeout_ms, DBS_ECONNECT. The listener's backlog completes
 * the TCP handshake; nothing is ever written back. */
static void connect_bound(void)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(ls >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_EQ(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(ls, 16), 0);
    socklen_t al = sizeof a;
    CHECK_EQ(getsockname(ls, (struct sockaddr *)&a, &al), 0);
    char silent[200];
    if (test_is_pg(url))
        snprintf(silent, sizeof silent, "postgresql://dbs:not-the-password@127.0.0.1:%d/db?sslmode=disable",
                 ntohs(a.sin_port));
    else
        snprintf(silent, sizeof silent, "mariadb://dbs:not-the-password@127.0.0.1:%d/db", ntohs(a.sin_port));
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = silent;
    cfg.pool_size = 1;
    cfg.lazy_open = 1;
    cfg.connect_timeout_ms = 1000;
    cfg.acquire_timeout_ms = 60000;
    cfg.circuit_threshold = 0;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open(%s): %s", silent, err.message);
    for (int i = 0; i < 2; i++) {
        int64_t t0 = now_ms();
        dbs_session *s = dbs_session_open(p, NULL, &err);
        int64_t took = now_ms() - t0;
        CHECK(s == NULL);
        CHECK_EQ(err.code, DBS_ECONNECT);
        CHECK_INT(took, >=, 900);
        CHECK_INT(took, <, 10000);
    }
    dbs_pool_close(p);
    close(ls);
}

static atomic_int unit_runs;

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    atomic_fetch_add(&unit_runs, 1);
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s(v) VALUES (4)", table);
    if (dbs_exec(s, sql, NULL, 0, err) < 0)
        return err->code;
    sleep_sql(sql, sizeof sql, 100);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, err);
    if (!r)
        return err->code;
    dbs_rows_close(r);
    return 0;
}

/* dbs_transact: each unit committed, run once. */
static void transact(void)
{
    dbs_pool *p = pool_with(2, 20000, 30000);
    dbs_session *s = open_ok(p);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE v = 4", table);
    int64_t before = query_int(s, sql, NULL, 0);
    dbs_session_close(s);
    atomic_store(&unit_runs, 0);
    for (int i = 0; i < 10; i++) {
        dbs_error err;
        CHECK_OK(dbs_transact(p, NULL, unit, NULL, &err), &err);
    }
    CHECK_EQ(atomic_load(&unit_runs), 10);
    s = open_ok(p);
    CHECK_EQ(query_int(s, sql, NULL, 0), before + 10);
    dbs_session_close(s);
    dbs_pool_close(p);
}

/* ---- an event loop under the storm ---- */

typedef struct sig_res {
    int calls, rc;
    char msg[512];
} sig_res;

static void sig_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    sig_res *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", err->message);
}

/* Runs l as a program's loop does, its epoll_wait interrupted as often as
 * anything else, until no unit is pending or limit_ms passed. */
static void loop_drain(dbs_loop *l, int64_t limit_ms)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN};
    CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, dbs_loop_fd(l), &ev), 0);
    int64_t until = now_ms() + limit_ms;
    while (dbs_loop_pending(l) > 0) {
        if (now_ms() > until)
            CHECK_FAIL("%d units still pending after %lld ms", dbs_loop_pending(l),
                       (long long)limit_ms);
        int n = epoll_wait(ep, &ev, 1, dbs_loop_timeout_ms(l));
        CHECK(n >= 0 || errno == EINTR);
        CHECK(dbs_loop_run(l) >= 0);
    }
    close(ep);
}

/* Units through dbs_loop_run: each committed once; one past its
 * statement bound ends with DBS_ESTMT_TIMEOUT, not the statement's whole
 * length; one that waits past the acquire bound ends with DBS_ETIMEOUT. */
static void loop_units(void)
{
    enum { N = 20 };
    dbs_pool *p = pool_with(1, 20000, 30000);
    dbs_session *s = open_ok(p);
    char count[200], sql[200];
    snprintf(count, sizeof count, "SELECT COUNT(*) FROM %s WHERE v = 5", table);
    int64_t before = query_int(s, count, NULL, 0);
    dbs_session_close(s);
    dbs_error err;
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    sig_res r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
        CHECK(u != NULL);
        snprintf(sql, sizeof sql, "INSERT INTO %s(v) VALUES (5)", table);
        CHECK_EQ(dbs_unit_add(u, sql, NULL, 0, &err), 0);
        sleep_sql(sql, sizeof sql, 20);
        CHECK_EQ(dbs_unit_add(u, sql, NULL, 0, &err), 1);
        CHECK_OK(dbs_unit_submit(u, sig_done, &r[i], &err), &err);
    }
    loop_drain(l, 60000);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(r[i].calls, 1);
        if (r[i].rc != DBS_OK)
            CHECK_FAIL("unit %d: %d %s", i, r[i].rc, r[i].msg);
    }
    dbs_loop_close(l);
    s = open_ok(p);
    CHECK_EQ(query_int(s, count, NULL, 0), before + N);
    dbs_session_close(s);
    dbs_pool_close(p);

    if (!test_is_pg(url) && !test_is_mysql(url))
        return; /* SQLite has no statement to outlast its bound here */
    /* A statement bound of 2 s: the bound on the cancel's answer is the
     * same, and a loaded server can take longer than 300 ms to answer one
     * (the unit then ends DBS_ECOMMIT_UNKNOWN, its COMMIT sent with it). */
    p = pool_with(1, 300, 2000);
    l = dbs_loop_open(p, NULL, &err);
    CHECK(l != NULL);
    sig_res slow, waiter;
    memset(&slow, 0, sizeof slow);
    memset(&waiter, 0, sizeof waiter);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    sleep_sql(sql, sizeof sql, 20000);
    CHECK_EQ(dbs_unit_add(u, sql, NULL, 0, &err), 0);
    CHECK_OK(dbs_unit_submit(u, sig_done, &slow, &err), &err);
    u = dbs_unit_new(l, NULL, 0, &err);
    CHECK_EQ(dbs_unit_add(u, "SELECT 1", NULL, 0, &err), 0);
    dbs_unit_set_timeout(u, 150); /* ends while the slow one holds the connection */
    CHECK_OK(dbs_unit_submit(u, sig_done, &waiter, &err), &err);
    int64_t t0 = now_ms();
    loop_drain(l, 60000);
    CHECK_INT(now_ms() - t0, <, 10000); /* the bound, not the 20 s sleep */
    CHECK_EQ(slow.calls, 1);
    if (slow.rc != DBS_ESTMT_TIMEOUT)
        CHECK_FAIL("slow unit: %d %s", slow.rc, slow.msg);
    CHECK_EQ(waiter.calls, 1);
    if (waiter.rc != DBS_ETIMEOUT)
        CHECK_FAIL("waiting unit: %d %s", waiter.rc, waiter.msg);
    dbs_loop_close(l);
    dbs_pool_close(p);
}

int main(void)
{
    url = test_url("signals");
    table = table_name("sig");
    {
        dbs_pool *p = pool_with(1, 20000, 30000);
        char sql[200];
        snprintf(sql, sizeof sql, "CREATE TABLE %s (v INT)", table);
        run_sql(p, sql);
        dbs_pool_close(p);
    }
    storm_start();
    acquire_times_out();
    acquire_served();
    if (test_is_pg(url) || test_is_mysql(url))
        long_statement();
    else
        sqlite_busy_wait();
    statement_bound();
    if (test_is_pg(url) || test_is_mysql(url))
        connect_bound();
    transact();
    loop_units();
    storm_stop();
    CHECK_INT(atomic_load(&hits), >, 100);
    {
        dbs_pool *p = pool_with(1, 20000, 30000);
        char sql[200];
        snprintf(sql, sizeof sql, "DROP TABLE %s", table);
        run_sql(p, sql);
        dbs_pool_close(p);
    }
    printf("ok (%ld signals)\n", atomic_load(&hits));
    return 0;
}
