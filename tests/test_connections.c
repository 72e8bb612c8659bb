/* Connections: where their passwords come from, waiting until enough are
 * open, and what a child process may do with them after fork().
 *
 *   - credential provider (PostgreSQL, MariaDB): asked before every
 *     physical connect, its answer used in place of the URL's password: a
 *     role whose password is changed (ALTER ROLE / ALTER USER) between
 *     connects keeps connecting when the provider returns the new one; a
 *     stale answer and a failing provider are DBS_ECONFIG, never counted
 *     by the circuit breaker, and no password reaches a message or event.
 *     SQLite never calls it.
 *   - dbs_pool_wait_ready: min_idle connections open on a lazily opened
 *     pool; a database that is not there: DBS_ECONNECT (a refusal for
 *     good: DBS_ECONFIG) saying how many of how many are open and why.
 *   - fork(): a child gets DBS_EMISUSE from the inherited pool and the
 *     sessions open at the fork until dbs_pool_after_fork_child, which
 *     lets go of the parent's connections without a word; the parent's
 *     connections, idle and in use, are the same server sessions after
 *     the child ran and still work.
 *
 * Runs on the URL of DBSCOPE_TEST_URL_FILE (SQLite when unset); the
 * server's administrator URL is read beside it (super_url). */
#include "common.h"

#include <libgen.h>
#include <sys/wait.h>

static const char *url;
static char server_dir[600];

/* ---- events: no secret in any of them ---- */

static const char *secrets[4];
static atomic_int secret_leaks;

static void on_event(const dbs_event *ev, void *user)
{
    (void)user;
    for (int i = 0; i < 4; i++)
        if (ev->reason && secrets[i] && strstr(ev->reason, secrets[i])) {
            fprintf(stderr, "secret in event %s: %s\n", ev->name, ev->reason);
            atomic_fetch_add(&secret_leaks, 1);
        }
}

static void no_secret(const char *msg)
{
    for (int i = 0; i < 4; i++)
        if (secrets[i] && strstr(msg, secrets[i]))
            CHECK_FAIL("a password appears in: %s", msg);
}

/* ---- the credential provider under test ---- */

static struct {
    pthread_mutex_t mu;
    char password[64];
    bool fail;
    char host[128], user[128], backend[32];
} prov = {.mu = PTHREAD_MUTEX_INITIALIZER};
static atomic_int prov_calls;

static int provider(dbs_credential *cred, void *user)
{
    CHECK(user == &prov);
    CHECK_INT(cred->password_cap, >=, 1024);
    atomic_fetch_add(&prov_calls, 1);
    pthread_mutex_lock(&prov.mu);
    snprintf(prov.host, sizeof prov.host, "%s", cred->host);
    snprintf(prov.user, sizeof prov.user, "%s", cred->user);
    snprintf(prov.backend, sizeof prov.backend, "%s", cred->backend);
    /* written even when failing: dbscope must not let it out */
    snprintf(cred->password, cred->password_cap, "%s", prov.password);
    bool fail = prov.fail;
    if (fail)
        snprintf(cred->why, cred->why_cap, "token service unreachable (had %s)",
                 prov.password);
    pthread_mutex_unlock(&prov.mu);
    return fail ? -1 : 0;
}

static void provide(const char *password, bool fail)
{
    pthread_mutex_lock(&prov.mu);
    snprintf(prov.password, sizeof prov.password, "%s", password);
    prov.fail = fail;
    pthread_mutex_unlock(&prov.mu);
}

static void admin(const char *sql)
{
    char super[1024];
    read_line(server_dir, "super_url", super, sizeof super);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super;
    cfg.pool_size = 1;
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("admin pool: %s", e.message);
    dbs_session *s = open_ok(p);
    if (dbs_exec(s, sql, NULL, 0, &e) < 0)
        CHECK_FAIL("%s: %s", sql, e.message);
    CHECK_OK(dbs_commit(s, &e), &e);
    dbs_session_close(s);
    dbs_pool_close(p);
}

static void set_password(const char *role, const char *pw)
{
    char sql[300];
    if (test_is_mysql(url))
        snprintf(sql, sizeof sql, "ALTER USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'", role, pw);
    else
        snprintf(sql, sizeof sql, "ALTER ROLE %s PASSWORD '%s'", role, pw);
    admin(sql);
}

static atomic_int unit_runs;

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    (void)s;
    (void)arg;
    (void)err;
    atomic_fetch_add(&unit_runs, 1);
    return 0;
}

static void test_credential_server(void)
{
    char role[64], pw1[64], pw2[64], pw3[64], port[32], sql[400], u[600];
    long pid = (long)getpid();
    snprintf(role, sizeof role, "dbs_cred_%ld", pid);
    snprintf(pw1, sizeof pw1, "first-%ld-Secret", pid);
    snprintf(pw2, sizeof pw2, "second-%ld-Secret", pid);
    snprintf(pw3, sizeof pw3, "third-%ld-Secret", pid);
    secrets[0] = pw1;
    secrets[1] = pw2;
    secrets[2] = pw3;
    secrets[3] = "url-pw-Secret";
    read_line(server_dir, "port", port, sizeof port);
    bool my = test_is_mysql(url);
    if (my) {
        snprintf(sql, sizeof sql, "CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'", role, pw1);
        admin(sql);
        snprintf(sql, sizeof sql, "GRANT ALL ON dbscope.* TO '%s'@'127.0.0.1'", role);
        admin(sql);
        snprintf(u, sizeof u, "mariadb://%s:url-pw-Secret@127.0.0.1:%s/dbscope", role, port);
    } else {
        snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN PASSWORD '%s'", role, pw1);
        admin(sql);
        snprintf(u, sizeof u, "postgresql://%s:url-pw-Secret@127.0.0.1:%s/dbscope", role, port);
    }

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = u;
    cfg.pool_size = 4;
    cfg.max_overflow = 0;
    cfg.circuit_threshold = 2;
    cfg.circuit_cooldown_ms = 50;
    cfg.acquire_timeout_ms = 20000;
    cfg.credential = provider;
    cfg.credential_user = &prov;
    cfg.on_event = on_event;
    cfg.log_events = 0;
    dbs_error e;

    /* the URL's password is wrong: only the provider's can work */
    provide(pw1, false);
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("dbs_pool_open with the provider's password: %s", e.message);
    CHECK_EQ(atomic_load(&prov_calls), 1);
    CHECK_STR(prov.host, "127.0.0.1");
    CHECK_STR(prov.user, role);
    CHECK_STR(prov.backend, my ? "mariadb" : "postgresql");
    dbs_session *s1 = open_ok(p);
    char who[200];
    text_of(s1, my ? "SELECT CURRENT_USER()" : "SELECT current_user", who, sizeof who);
    CHECK_CONTAINS(who, role);

    /* the password changes on the server (a rotated token): the next
     * physical connect asks again and gets the new one */
    set_password(role, pw2);
    provide(pw2, false);
    dbs_session *s2 = open_ok(p); /* s1 holds the only connection */
    CHECK_EQ(atomic_load(&prov_calls), 2);
    CHECK_EQ(query_int(s2, "SELECT 2", NULL, 0), 2);
    CHECK_EQ(query_int(s1, "SELECT 1", NULL, 0), 1); /* connected before: unaffected */

    /* a stale answer: the server's refusal, a configuration error */
    set_password(role, pw3);
    dbs_session *s3 = dbs_session_open(p, NULL, &e);
    CHECK(s3 == NULL);
    fprintf(stderr, "stale: %s\n", e.message);
    CHECK_EQ(e.code, DBS_ECONFIG);
    CHECK_CONTAINS(e.message, "wrong password");
    CHECK_CONTAINS(e.message, "credential provider");
    no_secret(e.message);

    /* a provider that fails: DBS_ECONFIG naming it and its reason, every
     * time, never an open circuit */
    provide(pw3, true);
    for (int i = 0; i < 6; i++) {
        s3 = dbs_session_open(p, NULL, &e);
        CHECK(s3 == NULL);
        CHECK_EQ(e.code, DBS_ECONFIG);
        CHECK_CONTAINS(e.message, "credential provider");
        CHECK_CONTAINS(e.message, "token service unreachable");
        CHECK_CONTAINS(e.message, role);
        no_secret(e.message);
        CHECK(!dbs_error_is_transient(&e));
    }
    fprintf(stderr, "failing provider: %s\n", e.message);
    CHECK_EQ(dbs_transact(p, NULL, unit, NULL, &e), DBS_ECONFIG);
    CHECK_EQ(atomic_load(&unit_runs), 0);
    CHECK_EQ(stats_of(p).unavailable, 0);
    CHECK_EQ(stats_of(p).retries, 0);

    /* readiness fails at once on it: waiting does not cure it */
    dbs_config lazy = cfg;
    lazy.lazy_open = 1;
    lazy.min_idle = 2;
    dbs_pool *lp = dbs_pool_open(&lazy, &e);
    CHECK(lp != NULL);
    CHECK_EQ(dbs_pool_wait_ready(lp, 600000, &e), DBS_ECONFIG);
    fprintf(stderr, "wait_ready: %s\n", e.message);
    CHECK_CONTAINS(e.message, "of 2 connections open");
    CHECK_CONTAINS(e.message, "credential provider");
    no_secret(e.message);
    dbs_pool_close(lp);

    /* the provider right again: connects work, with the same pool */
    provide(pw3, false);
    s3 = open_ok(p);
    CHECK_EQ(query_int(s3, "SELECT 3", NULL, 0), 3);
    dbs_session_close(s3);
    dbs_session_close(s2);
    dbs_session_close(s1);
    dbs_pool_close(p);
    CHECK_EQ(atomic_load(&secret_leaks), 0);

    if (my)
        snprintf(sql, sizeof sql, "DROP USER '%s'@'127.0.0.1'", role);
    else
        snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    admin(sql);
    memset(secrets, 0, sizeof secrets);
}

/* What the provider says, read as the header says it: an empty password
 * is an answer like any other and never lets the URL's password through
 * (libpq ignores an empty value and used the URL's; Connector/C sent it),
 * and the host is the URL's own, "" when it names none (a MariaDB URL
 * with only socket=: "localhost", which the URL never said). */
static void test_credential_answers(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url; /* the right password in the URL */
    cfg.credential = provider;
    cfg.credential_user = &prov;
    cfg.log_events = 0;
    dbs_error e;
    provide("", false);
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (p)
        CHECK_FAIL("an empty password from the provider connected with the URL's");
    fprintf(stderr, "empty answer: %s\n", e.message);
    CHECK_EQ(e.code, DBS_ECONFIG);
    CHECK_CONTAINS(e.message, "credential provider");
    CHECK_CONTAINS(e.message, "empty password");
    CHECK(!dbs_error_is_transient(&e));

    if (!test_is_mysql(url))
        return;
    char sock[600], u[1200];
    read_line(server_dir, "socket", sock, sizeof sock);
    const char *pw = strstr(url, "://dbscope:");
    CHECK(pw != NULL);
    pw += strlen("://dbscope:");
    snprintf(u, sizeof u, "mariadb://dbscope:%.*s@/dbscope?socket=%s", (int)strcspn(pw, "@"),
             pw, sock);
    char right[256];
    snprintf(right, sizeof right, "%.*s", (int)strcspn(pw, "@"), pw);
    provide(right, false);
    cfg.url = u;
    p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("socket URL: %s", e.message);
    CHECK_STR(prov.host, "");
    dbs_pool_close(p);
    snprintf(u, sizeof u, "mariadb://dbscope:%s@localhost/dbscope?socket=%s", right, sock);
    p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("socket URL with localhost: %s", e.message);
    CHECK_STR(prov.host, "localhost");
    dbs_pool_close(p);
}

/* The provider is given the URL's whole host list, port list and user,
 * however long (PostgreSQL cut them at 255, 63 and 127 bytes): it refuses
 * here, having recorded them, so nothing connects. */
static char long_host[2048], long_port[512], long_user[512];

static int long_provider(dbs_credential *cred, void *user)
{
    (void)user;
    snprintf(long_host, sizeof long_host, "%s", cred->host);
    snprintf(long_port, sizeof long_port, "%s", cred->port);
    snprintf(long_user, sizeof long_user, "%s", cred->user);
    snprintf(cred->why, cred->why_cap, "recorded");
    return -1;
}

static void test_credential_long_lists(void)
{
    char hosts[1024] = "", ports[256] = "", hostports[1400] = "", user[300];
    size_t nh = test_is_pg(url) ? 12 : 1;
    for (size_t i = 0; i < nh; i++) {
        char h[96]; /* room for any size_t: what -O0 builds warn of */
        snprintf(h, sizeof h, "dbscope-no-such-host-%02zu-of-a-long-list.invalid", i);
        size_t w = strlen(hosts), wp = strlen(ports), whp = strlen(hostports);
        snprintf(hosts + w, sizeof hosts - w, "%s%s", i ? "," : "", h);
        snprintf(ports + wp, sizeof ports - wp, "%s%zu", i ? "," : "", 54300 + i);
        snprintf(hostports + whp, sizeof hostports - whp, "%s%s:%zu", i ? "," : "", h,
                 54300 + i);
    }
    if (!test_is_pg(url)) /* one host, but longer than PostgreSQL's cut */
        for (size_t i = 1; i < 12; i++) {
            size_t w = strlen(hosts);
            snprintf(hosts + w, sizeof hosts - w, ".label-%zu-of-a-long-host-name", i);
        }
    memset(user, 'u', 200);
    user[200] = '\0';
    char u[2400];
    if (test_is_pg(url))
        snprintf(u, sizeof u, "postgresql://%s:pw@%s/dbscope", user, hostports);
    else {
        snprintf(ports, sizeof ports, "3306");
        snprintf(u, sizeof u, "mariadb://%s:pw@%s:3306/dbscope", user, hosts);
    }
    CHECK_INT(strlen(hosts), >, 300);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = u;
    cfg.credential = long_provider;
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (p)
        CHECK_FAIL("a refusing provider let the pool open");
    CHECK_EQ(e.code, DBS_ECONFIG);
    CHECK_CONTAINS(e.message, "recorded");
    CHECK_STR(long_host, hosts);
    CHECK_STR(long_port, ports);
    CHECK_STR(long_user, user);
}

static void test_credential_sqlite(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.credential = provider;
    cfg.credential_user = &prov;
    cfg.min_idle = 2;
    cfg.log_events = 0;
    atomic_store(&prov_calls, 0);
    dbs_pool *p = open_pool("connections", &cfg);
    dbs_error e;
    CHECK_OK(dbs_pool_wait_ready(p, 60000, &e), &e);
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    dbs_session_close(s);
    dbs_pool_close(p);
    CHECK_EQ(atomic_load(&prov_calls), 0); /* SQLite has no password */
}

/* ---- readiness ---- */

static void test_wait_ready(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.lazy_open = 1;
    cfg.min_idle = 3;
    cfg.pool_size = 4;
    cfg.housekeeping_interval_ms = 600000; /* one round, at the start */
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    CHECK(p != NULL);
    /* (the housekeeper's first round may be connecting too) */
    CHECK_OK(dbs_pool_wait_ready(p, 600000, &e), &e);
    CHECK_INT(stats_of(p).size, >=, 3);
    CHECK_INT(stats_of(p).idle, >=, 3);
    CHECK_EQ(dbs_pool_wait_ready(p, -1, &e), DBS_EMISUSE);
    dbs_pool_close(p);

    /* min_idle 0: one connection proves the database answers (nothing
     * else connects a lazily opened pool with min_idle 0) */
    cfg.min_idle = 0;
    p = dbs_pool_open(&cfg, &e);
    CHECK(p != NULL);
    CHECK_EQ(stats_of(p).size, 0);
    CHECK_OK(dbs_pool_wait_ready(p, 600000, &e), &e);
    CHECK_INT(stats_of(p).size, >=, 1);
    dbs_pool_close(p);

    /* nothing there: the bound ends the wait with what is open and why */
    char bad[1200];
    if (test_is_mysql(url))
        snprintf(bad, sizeof bad, "mariadb://nobody@127.0.0.1:1/none");
    else if (test_is_pg(url))
        snprintf(bad, sizeof bad, "postgresql://nobody@127.0.0.1:1/none");
    else
        snprintf(bad, sizeof bad, "sqlite:///nonexistent-dir-%ld/x.db", (long)getpid());
    cfg.url = bad;
    cfg.min_idle = 2;
    cfg.housekeeping_interval_ms = 50;
    p = dbs_pool_open(&cfg, &e);
    CHECK(p != NULL);
    int rc = dbs_pool_wait_ready(p, 300, &e);
    fprintf(stderr, "not ready: %s\n", e.message);
    /* SQLite: a missing directory is refused for good */
    CHECK_EQ(rc, test_is_pg(url) || test_is_mysql(url) ? DBS_ECONNECT : DBS_ECONFIG);
    CHECK_EQ(e.code, rc);
    CHECK_CONTAINS(e.message, "0 of 2 connections open");
    CHECK_CONTAINS(e.message, "the last connect failed");
    dbs_pool_shutdown(p, 0);
    CHECK_EQ(dbs_pool_wait_ready(p, 1000, &e), DBS_ECLOSED);
    dbs_pool_close(p);
}

/* ---- fork ---- */

static _Atomic uint64_t last_checkout;

static void on_checkout(const dbs_event *ev, void *user)
{
    (void)user;
    if (ev->kind == DBS_EVENT_CHECKOUT)
        atomic_store(&last_checkout, ev->conn_id);
}

/* The server's own number for the session's connection, to tell whether a
 * connection is still the same server session; SQLite, which has none:
 * the pool's number of the connection, as the checkout of the session
 * opened last reported it (call it right after the open). */
static int64_t conn_ident(dbs_session *s)
{
    if (test_is_mysql(url))
        return query_int(s, "SELECT CONNECTION_ID()", NULL, 0);
    if (test_is_pg(url))
        return query_int(s, "SELECT pg_backend_pid()", NULL, 0);
    return (int64_t)atomic_load(&last_checkout);
}

static void child(dbs_pool *p, dbs_session *held, int64_t id_held, int64_t id_idle)
{
    dbs_error e;
    /* everything that would touch the parent's connections is refused */
    CHECK(dbs_session_open(p, NULL, &e) == NULL);
    CHECK_EQ(e.code, DBS_EMISUSE);
    CHECK_CONTAINS(e.message, "dbs_pool_after_fork_child");
    CHECK_EQ(dbs_pool_ping(p, &e), DBS_EMISUSE);
    CHECK_EQ(dbs_exec(held, "SELECT 1", NULL, 0, &e), DBS_EMISUSE);
    CHECK_CONTAINS(e.message, "fork");

    CHECK_OK(dbs_pool_after_fork_child(p, &e), &e);
    CHECK_OK(dbs_pool_after_fork_child(p, &e), &e); /* twice: nothing more */
    dbs_stats st = stats_of(p);
    CHECK_EQ(st.size, 0);
    /* the counts still add up: the parent's connections were let go of */
    CHECK_EQ(st.created - st.closed, (uint64_t)st.size);
    dbs_session *s = open_ok(p);
    int64_t id = conn_ident(s);
    CHECK(id != id_held && id != id_idle);
    CHECK_EQ(query_int(s, "SELECT 41 + 1", NULL, 0), 42);
    dbs_session_close(s);
    CHECK_OK(dbs_pool_wait_ready(p, 600000, &e), &e);
    /* the session open at the fork can only be let go of */
    CHECK_EQ(dbs_exec(held, "SELECT 1", NULL, 0, &e), DBS_EMISUSE);
    dbs_session_close(held);
    dbs_pool_close(p);
}

static void test_fork(bool clean)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 3;
    cfg.mode = DBS_POOL_QUEUE;
    cfg.on_event = on_checkout;
    cfg.log_events = 0;
    dbs_error e;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    if (!p)
        CHECK_FAIL("open: %s", e.message);
    dbs_session *held = open_ok(p);
    int64_t id_held = conn_ident(held);
    dbs_session *other = open_ok(p);
    int64_t id_idle = conn_ident(other);
    CHECK(id_held != id_idle);
    dbs_session_close(other); /* idle (or kept for this thread) at the fork */
    exec_ok(held, "SELECT 1"); /* a transaction open at the fork */
    dbs_stats before = stats_of(p);

    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (clean) {
            child(p, held, id_held, id_idle);
        } else {
            /* a child that only closes the pool: the same silence */
            dbs_session_close(held);
            dbs_pool_close(p);
        }
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);

    /* the parent's connections are the same server sessions, and work */
    if (test_is_pg(url) || test_is_mysql(url))
        CHECK_EQ(conn_ident(held), id_held);
    CHECK_EQ(query_int(held, "SELECT 7", NULL, 0), 7);
    CHECK_OK(dbs_commit(held, &e), &e);
    dbs_session *again = open_ok(p);
    CHECK_EQ(conn_ident(again), id_idle);
    CHECK_EQ(query_int(again, "SELECT 8", NULL, 0), 8);
    dbs_session_close(again);
    dbs_session_close(held);
    dbs_stats after = stats_of(p);
    CHECK_EQ(after.invalidated, before.invalidated);
    CHECK_EQ(after.created, before.created);
    dbs_pool_close(p);
}

int main(void)
{
    url = test_url("connections");
    const char *file = getenv("DBSCOPE_TEST_URL_FILE");
    if (file && *file) {
        char copy[900];
        snprintf(copy, sizeof copy, "%s", file);
        snprintf(server_dir, sizeof server_dir, "%s", dirname(copy));
    }
    fprintf(stderr, "credential provider\n");
    if (test_is_pg(url) || test_is_mysql(url)) {
        test_credential_server();
        test_credential_answers();
        test_credential_long_lists();
    } else
        test_credential_sqlite();
    fprintf(stderr, "wait ready\n");
    test_wait_ready();
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    /* ThreadSanitizer's runtime cannot start threads in the child of a
     * process that had threads ("starting new threads after
     * multi-threaded fork is not supported"), and GCC's AddressSanitizer
     * does not guard its allocator's lock across fork() as glibc's malloc
     * does: a child can block for good in its first malloc (seen: the
     * child's housekeeper in the ASan allocator's lock). The fork part
     * runs in the plain build, on every backend. */
    fprintf(stderr, "fork: not under a sanitizer\n");
    (void)test_fork;
#else
    fprintf(stderr, "fork\n");
    test_fork(true);
    test_fork(false);
#endif
    fprintf(stderr, "ok\n");
    return 0;
}
