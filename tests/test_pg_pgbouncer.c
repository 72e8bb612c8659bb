/* Behind PgBouncer in transaction pooling mode, configured as
 * docs/postgresql.md says (stmt_cache_size = 0, reset = DBS_RESET_ROLLBACK):
 * more dbscope connections than PgBouncer has server connections, so every
 * transaction may land on a different server connection. Each transaction
 * still sees its own request context (transaction-local settings travel
 * with the transaction), parameters bind, and no update is lost.
 *
 * The test starts its own pgbouncer in front of the shared throwaway server
 * and skips (exit 77) only when pgbouncer is not installed. */
#include "common.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>

enum { THREADS = 8, UNITS = 150 };

static dbs_pool *pool;
static char tbl[64];
static atomic_int wrong_context, failures;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        CHECK_FAIL("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

static int unit(dbs_session *s, void *arg, dbs_error *err)
{
    const char *user = arg;
    dbs_rows *r = dbs_query(s, "SELECT current_setting('app.user_id')", NULL, 0, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    if (n == 1 && strcmp(dbs_rows_text(r, 0, NULL), user) != 0)
        atomic_fetch_add(&wrong_context, 1);
    dbs_rows_close(r);
    if (n != 1)
        return n < 0 ? n : DBS_ESQL;
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE %s SET n = n + $1 WHERE id = $2", tbl);
    dbs_value v[] = {DBS_INT(1), DBS_INT(1)};
    int64_t rc = dbs_exec(s, sql, v, 2, err);
    return rc == 1 ? 0 : rc < 0 ? (int)rc : DBS_ESQL;
}

static void *worker(void *arg)
{
    char user[32];
    snprintf(user, sizeof user, "user-%ld", (long)(intptr_t)arg);
    dbs_context ctx = {.request_id = "bouncer", .user_id = user};
    for (int k = 0; k < UNITS; k++) {
        dbs_error err;
        if (dbs_transact(pool, &ctx, unit, user, &err) != DBS_OK) {
            fprintf(stderr, "transact: %s\n", err.message);
            atomic_fetch_add(&failures, 1);
        }
    }
    return NULL;
}

int main(void)
{
    const char *bouncer = "/usr/sbin/pgbouncer";
    if (access(bouncer, X_OK) != 0) {
        printf("SKIP: %s not installed\n", bouncer);
        return 77;
    }
    const char *pgdir = getenv("DBSCOPE_PG_DIR");
    if (!pgdir)
        CHECK_FAIL("DBSCOPE_PG_DIR is not set");
    char port[16], password[128];
    read_line(pgdir, "port", port, sizeof port);
    read_line(pgdir, "password", password, sizeof password);

    /* pgbouncer's own directory, readable by the postgres user when root
     * runs the tests (pgbouncer, like postgres, refuses to run as root) */
    char dir[] = "/tmp/dbscope-bouncer-XXXXXX";
    if (!mkdtemp(dir))
        CHECK_FAIL("mkdtemp: %s", strerror(errno));
    chmod(dir, 0777);
    int bport = free_port();
    char path[600];
    snprintf(path, sizeof path, "%s/users.txt", dir);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fprintf(f, "\"dbscope\" \"%s\"\n", password);
    fclose(f);
    snprintf(path, sizeof path, "%s/pgbouncer.ini", dir);
    f = fopen(path, "w");
    CHECK(f);
    fprintf(f,
            "[databases]\n"
            "dbscope = host=127.0.0.1 port=%s dbname=dbscope\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            "listen_port = %d\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            "auth_file = %s/users.txt\n"
            "pool_mode = transaction\n"
            "default_pool_size = 2\n"
            "max_client_conn = 100\n"
            "logfile = %s/pgbouncer.log\n"
            "pidfile = %s/pgbouncer.pid\n",
            port, bport, dir, dir, dir);
    fclose(f);
    chmod(path, 0644);
    snprintf(path, sizeof path, "%s/users.txt", dir);
    chmod(path, 0644);

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char ini[600];
        snprintf(ini, sizeof ini, "%s/pgbouncer.ini", dir);
        if (getuid() == 0) {
            struct passwd *pw = getpwnam("postgres");
            if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
                _exit(126);
        }
        execl(bouncer, "pgbouncer", "-q", ini, (char *)NULL);
        _exit(127);
    }

    char url[512];
    snprintf(url, sizeof url,
             "postgresql://dbscope:%s@127.0.0.1:%d/dbscope?connect_timeout=10", password, bport);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 6; /* more than PgBouncer's 2 server connections */
    cfg.max_overflow = 0;
    cfg.stmt_cache_size = 0;
    cfg.reset = DBS_RESET_ROLLBACK;
    cfg.ctx_user_setting = "app.user_id";
    cfg.retry_max = 5;
    dbs_error err;
    /* pgbouncer takes a moment to listen: the pool open probes until then */
    for (int i = 0; i < 200 && !(pool = dbs_pool_open(&cfg, &err)); i++)
        dbs__sleep_ms(50);
    if (!pool)
        CHECK_FAIL("pool through pgbouncer: %s", err.message);
    /* the first connect happens on first use: wait until one succeeds */
    for (int i = 0; i < 200; i++) {
        dbs_session *s = dbs_session_open(pool, NULL, &err);
        if (s && dbs_exec(s, "SELECT 1", NULL, 0, &err) >= 0) {
            dbs_session_close(s);
            break;
        }
        dbs_session_close(s);
        dbs__sleep_ms(50);
    }

    snprintf(tbl, sizeof tbl, "bouncer_%ld", (long)getpid());
    char sql[200];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int PRIMARY KEY, n int NOT NULL)", tbl);
    run_sql(pool, sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1, 0)", tbl);
    run_sql(pool, sql);

    pthread_t t[THREADS];
    for (intptr_t i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    dbs_session *s = dbs_session_open(pool, NULL, &err);
    CHECK(s);
    snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE id = 1", tbl);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    CHECK(r);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int64_t n = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    CHECK_OK(dbs_exec(s, sql, NULL, 0, &err) < 0 ? err.code : 0, &err);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    dbs_stats st;
    dbs_pool_stats(pool, &st);
    dbs_pool_close(pool);

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);

    printf("units %d, counter %lld, wrong context %d, failures %d, retries %llu\n",
           THREADS * UNITS, (long long)n, atomic_load(&wrong_context), atomic_load(&failures),
           (unsigned long long)st.retries);
    CHECK_EQ(atomic_load(&failures), 0);
    CHECK_EQ(atomic_load(&wrong_context), 0);
    CHECK_EQ(n, THREADS * UNITS);
    CHECK_EQ(st.acquired, st.released);
    return 0;
}
