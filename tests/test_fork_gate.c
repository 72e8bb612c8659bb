/* fork() while one of the library's own threads is inside SQLite.
 *
 * A child gets a copy of every lock as it was at the fork; one that another
 * thread held then stays held for good in the child. SQLite keeps
 * process-wide locks (its static mutexes: the unix VFS's list of open
 * files is one), taken inside its calls, and the housekeeper calls SQLite
 * on its own schedule (the min_idle warm-up here). What this proves:
 *
 *   - A fork while the housekeeper is inside SQLite, holding the unix VFS's
 *     own lock, waits for it to come out: the child's first connection
 *     opens (before the fork gate, the child blocked for good in SQLite's
 *     open, on the lock the parent's housekeeper held).
 *   - The parent's pool goes on working after that fork.
 *   - A fork from inside an event callback that the housekeeper runs does
 *     not wait on itself: it returns, in the parent and in the child.
 *
 * The stall is a VFS shim in front of SQLite's unix VFS whose open, once,
 * on a thread other than the test's, takes SQLITE_MUTEX_STATIC_VFS1 (the
 * lock the unix VFS takes in its own open) and sleeps holding it, as a
 * slow moment inside SQLite's open would. SQLite only: the shim is
 * SQLite's. The child is bounded by alarm(): a hang fails the test.
 */
#include "common.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

static sqlite3_vfs *real_vfs;
static sqlite3_vfs stall_vfs;
static pthread_t test_thread;
static atomic_int stall_armed, stall_inside;

static int stall_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)v;
    if (!pthread_equal(pthread_self(), test_thread) && atomic_exchange(&stall_armed, 0)) {
        sqlite3_mutex *m = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_VFS1);
        sqlite3_mutex_enter(m);
        atomic_store(&stall_inside, 1);
        dbs__sleep_ms(300);
        sqlite3_mutex_leave(m);
    }
    return real_vfs->xOpen(real_vfs, name, f, flags, out);
}

static void stall_install(void)
{
    real_vfs = sqlite3_vfs_find("unix");
    CHECK(real_vfs);
    stall_vfs = *real_vfs;
    stall_vfs.pNext = NULL;
    stall_vfs.zName = "stallopen";
    stall_vfs.xOpen = stall_open;
    CHECK_EQ(sqlite3_vfs_register(&stall_vfs, 1), SQLITE_OK);
}

static char db_path[600];
static char url[700];

static dbs_pool *open_warming(dbs_event_fn on_event)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 4;
    cfg.min_idle = 2; /* connections the housekeeper opens */
    cfg.housekeeping_interval_ms = 20;
    cfg.on_event = on_event;
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("open: %s", e.message);
    return p;
}

/* Exit status 0 when the child opened a connection of its own and used it. */
static void child_uses_pool(dbs_pool *p)
{
    alarm(20);
    dbs_error e;
    if (dbs_pool_after_fork_child(p, &e) != DBS_OK) {
        fprintf(stderr, "child: %s\n", e.message);
        _exit(2);
    }
    dbs_session *s = dbs_session_open(p, NULL, &e);
    if (!s) {
        fprintf(stderr, "child: %s\n", e.message);
        _exit(3);
    }
    dbs_value one = DBS_INT(1);
    dbs_rows *r = dbs_query(s, "SELECT $1 + 41", &one, 1, &e);
    int ok = r && dbs_rows_next(r, &e) == 1 && dbs_rows_int(r, 0) == 42;
    if (!ok)
        fprintf(stderr, "child: %s\n", e.message);
    dbs_rows_close(r);
    dbs_session_close(s);
    dbs_pool_close(p);
    _exit(ok ? 0 : 4);
}

static void expect_child_ok(pid_t pid)
{
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status))
        CHECK_FAIL("the child was killed by signal %d (SIGALRM: it hung, blocked on a lock "
                   "a thread of the parent held at the fork)", WTERMSIG(status));
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
}

static void test_fork_waits_for_housekeeper(void)
{
    atomic_store(&stall_inside, 0);
    atomic_store(&stall_armed, 1);
    dbs_pool *p = open_warming(NULL);
    WAIT_UNTIL(atomic_load(&stall_inside), 10000);
    CHECK(atomic_load(&stall_inside)); /* the housekeeper is in SQLite's open now */
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        child_uses_pool(p);
    expect_child_ok(pid);
    /* the parent's pool, housekeeper included, goes on */
    dbs_error e;
    CHECK_OK(dbs_pool_wait_ready(p, 10000, &e), &e);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 7", NULL, 0), 7);
    dbs_session_close(s);
    dbs_pool_close(p);
}

static atomic_int forked_in_callback; /* 1: forked, 2: child ok, -1: failed */

static void fork_on_connect(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind != DBS_EVENT_CONNECT || pthread_equal(pthread_self(), test_thread))
        return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&forked_in_callback, &expected, 1))
        return;
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    int status = 0;
    bool ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0;
    atomic_store(&forked_in_callback, ok ? 2 : -1);
}

static void test_fork_inside_housekeeper_callback(void)
{
    atomic_store(&forked_in_callback, 0);
    alarm(60); /* a fork waiting on itself would never return */
    dbs_pool *p = open_warming(fork_on_connect);
    WAIT_UNTIL(atomic_load(&forked_in_callback) >= 2 || atomic_load(&forked_in_callback) < 0,
               20000);
    CHECK_EQ(atomic_load(&forked_in_callback), 2);
    alarm(0);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 8", NULL, 0), 8);
    dbs_session_close(s);
    dbs_pool_close(p);
}

/* Rows open at the fork, closed in the child: the parent's SQLite handle is
 * not touched (no sqlite3_reset of its statement, which could end the
 * parent's read or, outside a transaction, commit its write from the
 * child). SQLite reports a reset of a statement that ran through its
 * profile callback: the child records one. */
static volatile sig_atomic_t handle_touched;

static int on_profile(unsigned kind, void *ctx, void *p, void *x)
{
    (void)kind;
    (void)ctx;
    (void)p;
    (void)x;
    handle_touched = 1;
    return 0;
}

static void test_child_closes_rows_of_parent(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 2;
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("open: %s", e.message);
    dbs_session *s = open_ok(p);
    sqlite3 *db = dbs_session_native(s);
    CHECK(db);
    CHECK_EQ(sqlite3_trace_v2(db, SQLITE_TRACE_PROFILE, on_profile, NULL), SQLITE_OK);
    dbs_rows *r = dbs_query(s, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &e);
    if (!r)
        CHECK_FAIL("query: %s", e.message);
    CHECK_EQ(dbs_rows_next(r, &e), 1); /* stepping: the statement is under way */
    handle_touched = 0;
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        dbs_rows_close(r);
        dbs_session_close(s);
        dbs_rows_close(r); /* after its session: a no-op, as in the parent */
        int touched = handle_touched;
        dbs_pool_close(p);
        if (touched)
            fprintf(stderr, "child: closing the rows reset the parent's statement\n");
        _exit(touched ? 5 : 0);
    }
    expect_child_ok(pid);
    /* the parent's rows are where they were */
    CHECK_EQ(dbs_rows_next(r, &e), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 2);
    dbs_rows_close(r);
    sqlite3_trace_v2(db, 0, NULL, NULL);
    dbs_session_close(s);
    dbs_pool_close(p);
}

/* A child that shuts the parent's pool down without
 * dbs_pool_after_fork_child first (dbs_pool_shutdown does that step
 * itself): the pool stays usable until dbs_pool_close, as in a parent. */
static void test_child_shuts_down_then_closes(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 2;
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("open: %s", e.message);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    dbs_session_close(s);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(20);
        int left = dbs_pool_shutdown(p, 0);
        dbs_error ce;
        dbs_session *cs = dbs_session_open(p, NULL, &ce);
        int rc = cs ? DBS_OK : ce.code; /* a shut pool: DBS_ECLOSED */
        dbs_session_close(cs);
        dbs_pool_close(p);
        if (left != 0 || rc != DBS_ECLOSED)
            fprintf(stderr, "child: shutdown %d, then a session %d\n", left, rc);
        _exit(left == 0 && rc == DBS_ECLOSED ? 0 : 6);
    }
    expect_child_ok(pid);
    dbs_pool_close(p);
}

int main(void)
{
    test_thread = pthread_self();
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(db_path, sizeof db_path, "%s/dbscope-forkgate-%ld.db", dir, (long)getpid());
    snprintf(url, sizeof url, "sqlite:%s", db_path);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    /* As test_connections: ThreadSanitizer cannot start threads in the child
     * of a threaded process, and GCC's AddressSanitizer does not guard its
     * allocator's lock across fork(). The plain build runs this. */
    fprintf(stderr, "fork: not under a sanitizer\n");
    (void)stall_install;
    (void)test_fork_waits_for_housekeeper;
    (void)test_fork_inside_housekeeper_callback;
    (void)test_child_closes_rows_of_parent;
    (void)test_child_shuts_down_then_closes;
#else
    stall_install();
    fprintf(stderr, "fork while the housekeeper is inside SQLite\n");
    test_fork_waits_for_housekeeper();
    fprintf(stderr, "fork from an event callback the housekeeper runs\n");
    test_fork_inside_housekeeper_callback();
    fprintf(stderr, "rows open at the fork, closed in the child\n");
    test_child_closes_rows_of_parent();
    fprintf(stderr, "the parent's pool shut down in the child, then closed\n");
    test_child_shuts_down_then_closes();
#endif
    char p[700];
    const char *ends[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", db_path, ends[i]);
        unlink(p);
    }
    fprintf(stderr, "ok\n");
    return 0;
}
