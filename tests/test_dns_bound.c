/* connect_timeout_ms bounds the name lookup too. Run by tests/dns_silent.sh:
 * the system's DNS server is a UDP socket of this program that never
 * answers, and the resolver would wait 30 s. dbs_pool_open on a host name
 * with connect_timeout_ms = 1000 returns DBS_ECONNECT naming the lookup,
 * long before (CTest's timeout, 25 s, fails a wait for the resolver), and
 * so does a session of a lazily opened pool. The lookup left behind
 * finishes on its own thread.
 *
 * Lookups left behind are bounded. The connects that want one host:port
 * share its lookup (at most two at once, a second only once the first is
 * a second old): ten failed connects with circuit_threshold = 0 leave at
 * most two lookup threads, not ten. At most 64 lookups are pending in the
 * process: past that, a connect to yet another name fails at once with
 * DBS_ECONNECT naming the pending lookups, rather than adding a thread
 * (65 names, each a pool of its own, left as many threads). A child of
 * fork() has none of its parent's lookups: there the same name resolves
 * (from /etc/hosts, see dns_silent.sh) and connects.
 *
 *   test_dns_bound pg | mysql   (DBSCOPE_PG_DIR, DBSCOPE_MYSQL_DIR) */
#include "common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void check_err(const dbs_error *e)
{
    fprintf(stderr, "  -> %d %s\n", e->code, e->message);
    CHECK_EQ(e->code, DBS_ECONNECT);
    CHECK_CONTAINS(e->message, "name lookup");
    CHECK_CONTAINS(e->message, "some-name.invalid-host.test");
    CHECK_CONTAINS(e->message, "connect_timeout_ms");
}


/* resolve.c's bound on the lookups pending in a process. */
enum { MAX_LOOKUPS = 64 };

/* A session of a lazily opened pool on host, or NULL with *e. */
static bool connects(const char *what, const char *host, const char *password,
                     const char *port, int bound_ms, dbs_error *e)
{
    char url[512];
    snprintf(url, sizeof url, "%s://dbscope:%s@%s:%s/dbscope",
             !strcmp(what, "pg") ? "postgresql" : "mariadb", password, host, port);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.connect_timeout_ms = bound_ms;
    cfg.circuit_threshold = 0;
    cfg.lazy_open = 1;
    cfg.log_events = 0;
    dbs_pool *p = dbs_pool_open(&cfg, e);
    CHECK(p != NULL);
    dbs_session *s = dbs_session_open(p, NULL, e);
    if (s)
        exec_ok(s, "SELECT 1");
    dbs_session_close(s);
    dbs_pool_close(p);
    return s != NULL;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    const char *env = !strcmp(what, "pg") ? "DBSCOPE_PG_DIR"
                      : !strcmp(what, "mysql") ? "DBSCOPE_MYSQL_DIR" : NULL;
    if (!env)
        CHECK_FAIL("usage: test_dns_bound pg|mysql");
    const char *dir = getenv(env);
    CHECK(dir != NULL);
    char password[256], port[32], url[1024];
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    snprintf(url, sizeof url, "%s://dbscope:%s@some-name.invalid-host.test:%s/dbscope",
             !strcmp(what, "pg") ? "postgresql" : "mariadb", password, port);

    /* The silent DNS server, on the first free loopback address of a
     * range: the PostgreSQL and MariaDB runs of this test may run at once,
     * and port 53 cannot be chosen in resolv.conf. The address is written
     * into the resolv.conf that dns_silent.sh bind-mounted, before the
     * first lookup reads it. */
    const char *conf = getenv("DBSCOPE_RESOLV_CONF");
    if (!conf)
        CHECK_FAIL("DBSCOPE_RESOLV_CONF unset: run through tests/dns_silent.sh");
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    char addr[32] = "";
    for (int i = 1; i < 255 && !addr[0]; i++) {
        char cand[32];
        snprintf(cand, sizeof cand, "127.0.53.%d", i);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons(53);
        CHECK(inet_pton(AF_INET, cand, &sa.sin_addr) == 1);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            snprintf(addr, sizeof addr, "%s", cand);
        else if (errno != EADDRINUSE)
            CHECK_FAIL("bind %s:53: %s", cand, strerror(errno));
    }
    if (!addr[0])
        CHECK_FAIL("no free address in 127.0.53.1-254 for the silent DNS server");
    FILE *rc = fopen(conf, "w");
    CHECK(rc != NULL);
    fprintf(rc, "nameserver %s\noptions timeout:30 attempts:1\n", addr);
    CHECK(fclose(rc) == 0);

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.connect_timeout_ms = 1000;
    cfg.log_events = 0;
    dbs_error e;
    CHECK(dbs_pool_open(&cfg, &e) == NULL);
    check_err(&e);

    cfg.lazy_open = 1;
    dbs_pool *p = dbs_pool_open(&cfg, &e);
    CHECK(p != NULL);
    for (int i = 0; i < 3; i++) {
        dbs_session *s = dbs_session_open(p, NULL, &e);
        CHECK(s == NULL);
        check_err(&e);
    }
    dbs_pool_close(p);

    /* PostgreSQL: a host from libpq's environment (PGHOST) is bounded too. */
    if (!strcmp(what, "pg")) {
        char kv[1024];
        snprintf(kv, sizeof kv, "user=dbscope password=%s dbname=dbscope port=%s", password,
                 port);
        setenv("PGHOST", "some-name.invalid-host.test", 1);
        cfg.url = kv;
        cfg.lazy_open = 0;
        CHECK(dbs_pool_open(&cfg, &e) == NULL);
        check_err(&e);
        unsetenv("PGHOST");
        cfg.url = url;
    }

    /* A name the lookup answers (from /etc/hosts): PostgreSQL connects by
     * the address it got, with the name beside it. (MariaDB takes
     * "localhost" for its Unix socket.) */
    if (!strcmp(what, "pg")) {
        snprintf(url, sizeof url, "postgresql://dbscope:%s@localhost:%s/dbscope", password,
                 port);
        cfg.lazy_open = 0;
        p = dbs_pool_open(&cfg, &e);
        if (!p)
            CHECK_FAIL("localhost: %s", e.message);
        dbs_session *s = open_ok(p);
        exec_ok(s, "SELECT 1");
        dbs_session_close(s);
        dbs_pool_close(p);
    }
    /* One host:port, ten connects that give up on its lookup, with no
     * breaker to stop them: its lookups are shared. */
    cfg.url = url;
    snprintf(url, sizeof url, "%s://dbscope:%s@some-name.invalid-host.test:%s/dbscope",
             !strcmp(what, "pg") ? "postgresql" : "mariadb", password, port);
    cfg.lazy_open = 1;
    cfg.circuit_threshold = 0;
    cfg.connect_timeout_ms = 200;
    p = dbs_pool_open(&cfg, &e);
    CHECK(p != NULL);
    int before = count_threads();
    for (int i = 0; i < 10; i++) {
        dbs_session *s = dbs_session_open(p, NULL, &e);
        CHECK(s == NULL);
        check_err(&e);
    }
    int after = count_threads();
    fprintf(stderr, "  ten connects to one name: %d threads more\n", after - before);
    CHECK_INT(after - before, <=, 2);
    dbs_pool_close(p);

    /* One name more than the bound, each its own pool: the names past it
     * fail at once, naming what is pending, and add no thread. */
    before = count_threads();
    int refused = 0;
    for (int i = 0; i <= MAX_LOOKUPS; i++) {
        char host[64];
        snprintf(host, sizeof host, "name-%d.invalid-host.test", i);
        CHECK(!connects(what, host, password, port, 50, &e));
        CHECK_EQ(e.code, DBS_ECONNECT);
        CHECK_CONTAINS(e.message, host);
        if (strstr(e.message, "pending")) {
            if (!refused)
                fprintf(stderr, "  -> %s\n", e.message);
            CHECK_CONTAINS(e.message, "invalid-host.test");
            refused++;
        } else {
            CHECK_CONTAINS(e.message, "connect_timeout_ms");
        }
    }
    after = count_threads();
    fprintf(stderr, "  %d names: %d threads more, %d refused\n", MAX_LOOKUPS + 1,
            after - before, refused);
    CHECK_INT(refused, >=, 1);
    CHECK_INT(after - before, <=, MAX_LOOKUPS);
    /* a name /etc/hosts answers waits its turn here too */
    CHECK(!connects(what, "dbscope-loopback.test", password, port, 5000, &e));
    CHECK_CONTAINS(e.message, "pending");

    /* A child has none of those lookups: the name resolves and connects.
     * Not under a sanitizer: the child starts a lookup thread, which
     * ThreadSanitizer refuses after a multi-threaded fork, and GCC's
     * AddressSanitizer may leave its allocator's lock held in the child
     * (test_connections.c says more); the plain build runs it. */
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (!connects(what, "dbscope-loopback.test", password, port, 5000, &e)) {
            fprintf(stderr, "child: %s\n", e.message);
            _exit(1);
        }
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
#endif

    close(fd);
    fprintf(stderr, "ok\n");
    return 0;
}
