/* Connect failures say which (wrong password, unknown database: DBS_ECONFIG;
 * unreachable host: DBS_ECONNECT), are bounded by connect_timeout in the URL, and never
 * contain the password; option values libpq refuses (connect_timeout, sslmode,
 * target_session_attrs, port) are DBS_ECONFIG at dbs_pool_open; a URL with more
 * than 16 hosts reaches the last; sslmode=require works against the TLS server. */
#include "common.h"

static char password[256], port[32];

/* Every event, reason included, goes to stderr: grepped for the password. */
static void print_event(const dbs_event *ev, void *user)
{
    (void)user;
    fprintf(stderr, "event %s code=%d reason=%s\n", ev->name, ev->code,
            ev->reason ? ev->reason : "");
}

/* Opens a pool on url, which must fail to connect: returns the error. */
static dbs_error fail_connect(const char *url)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.acquire_timeout_ms = 20000;
    cfg.on_event = print_event;
    dbs_error err;
    memset(&err, 0, sizeof err);
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (p) {
        dbs_session *s = dbs_session_open(p, NULL, &err);
        CHECK(s == NULL);
        dbs_pool_close(p);
    }
    fprintf(stderr, "%s\n", err.message); /* grepped for the password */
    CHECK(strstr(err.message, password) == NULL);
    return err;
}

/* A URL whose option values libpq would refuse at every connect: refused
 * at dbs_pool_open with DBS_ECONFIG naming the option, before any connect
 * (lazy_open: nothing would connect), never a transient DBS_ECONNECT. */
static void bad_option(const char *opt, const char *want)
{
    char url[2048];
    snprintf(url, sizeof url,
             "host=127.0.0.1 port=%s dbname=dbscope user=dbscope password=%s %s",
             port, password, opt);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.lazy_open = 1;
    dbs_error err;
    memset(&err, 0, sizeof err);
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (p)
        CHECK_FAIL("%s: the pool opened", opt);
    fprintf(stderr, "%s: %s\n", opt, err.message);
    CHECK_EQ(err.code, DBS_ECONFIG);
    CHECK_CONTAINS(err.message, want);
    CHECK(strstr(err.message, password) == NULL);
}

/* One session on url, whose pool must open. */
static void connects(const char *url)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("session: %s", err.message);
    CHECK_EQ(query_int(s, "SELECT 1", NULL, 0), 1);
    dbs_session_close(s);
    dbs_pool_close(p);
}

int main(void)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    read_line(dir, "password", password, sizeof password);
    read_line(dir, "port", port, sizeof port);
    char url[2048];
    /* Capture everything printed from here on. */
    char log_path[900];
    snprintf(log_path, sizeof log_path, "%s/connect_%ld.log", dir,
             (long)getpid());
    int saved = dup(2);
    CHECK(freopen(log_path, "w", stderr) != NULL);

    /* Wrong password: the right one is in the URL text around it. */
    snprintf(url, sizeof url,
             "postgresql://dbscope:%sX@127.0.0.1:%s/dbscope?connect_timeout=5",
             password, port);
    dbs_error e = fail_connect(url);
    CHECK_EQ(e.code, DBS_ECONFIG);
    CHECK_CONTAINS(e.message, "wrong password");

    snprintf(
        url, sizeof url,
        "postgresql://dbscope:%s@127.0.0.1:%s/no_such_db_%ld?connect_timeout=5",
        password, port, (long)getpid());
    e = fail_connect(url);
    CHECK_EQ(e.code, DBS_ECONFIG);
    CHECK_CONTAINS(e.message, "unknown database");

    /* Port 1 on loopback: refused at once. A blackholed address needs the
     * connect_timeout, which bounds it. */
    snprintf(url, sizeof url,
             "postgresql://dbscope:%s@127.0.0.1:1/dbscope?connect_timeout=2",
             password);
    e = fail_connect(url);
    CHECK_EQ(e.code, DBS_ECONNECT);
    CHECK_CONTAINS(e.message, "unreachable host");

    /* key=value form, also scrubbed. */
    snprintf(url, sizeof url,
             "host=127.0.0.1 port=%s dbname=dbscope user=dbscope password=%sX "
             "connect_timeout=5",
             port, password);
    e = fail_connect(url);
    CHECK_EQ(e.code, DBS_ECONFIG);
    CHECK_CONTAINS(e.message, "wrong password");

    /* Values libpq refuses (audit P2, P4). connect_timeout=abc used to
     * leave every connect without a bound. */
    bad_option("connect_timeout=abc", "connect_timeout");
    bad_option("connect_timeout=1.5", "connect_timeout");
    bad_option("connect_timeout=''", "connect_timeout");
    bad_option("connect_timeout=99999999999", "connect_timeout");
    bad_option("sslmode=bogus", "sslmode");
    bad_option("sslmode=Require", "sslmode"); /* libpq's strcmp: case matters */
    bad_option("target_session_attrs=bogus", "target_session_attrs");
    /* the URL's own port (%s above) comes first: this one is the last */
    bad_option("port=99999", "port");
    bad_option("port=0", "port");
    bad_option("port=54x", "port");
    /* Context setting names no setting can have failed every
     * transaction's first statement (DBS_ESQL); refused at open now. */
    static const char *const bad_names[] = {"", "a b", "app..x", "app.", ".x", "1app.x",
                                            "app.x-y", "app.x;DROP"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = test_url("test_pg_connect");
        cfg.lazy_open = 1;
        cfg.ctx_tenant_setting = bad_names[i];
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (p)
            CHECK_FAIL("context setting name \"%s\": the pool opened", bad_names[i]);
        CHECK_EQ(err.code, DBS_ECONFIG);
        CHECK_CONTAINS(err.message, "context setting name");
    }
    {
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = test_url("test_pg_connect");
        cfg.ctx_tenant_setting = "app.tenant_id";
        cfg.ctx_user_setting = "search_path"; /* a built-in one: allowed */
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (!p)
            CHECK_FAIL("app.tenant_id: %s", err.message);
        dbs_pool_close(p);
    }
    /* ... and values libpq takes, which open and connect */
    snprintf(url, sizeof url,
             "host=127.0.0.1 port=' %s ' dbname=dbscope user=dbscope password=%s "
             "connect_timeout=' 7 ' sslmode=prefer target_session_attrs=any",
             port, password);
    connects(url);

    /* Over the server's Unix socket libpq reads no keep-alive option and
     * no tcp_user_timeout: values a TCP connect would refuse were refused
     * at open there too, and connect. */
    {
        char sock[900];
        read_line(dir, "socket", sock, sizeof sock);
        static const char *const opts[] = {"keepalives_idle=0", "keepalives_count=128",
                                           "keepalives=abc", "tcp_user_timeout=1.5"};
        for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
            snprintf(url, sizeof url,
                     "host=%s port=%s dbname=dbscope user=dbscope password=%s %s", sock,
                     port, password, opts[i]);
            connects(url);
        }
        /* ... but not with a TCP host beside it */
        snprintf(url, sizeof url,
                 "host=%s,127.0.0.1 port=%s dbname=dbscope user=dbscope password=%s "
                 "keepalives_idle=0",
                 sock, port, password);
        dbs_config cfg;
        dbs_config_init(&cfg);
        cfg.url = url;
        cfg.lazy_open = 1;
        dbs_error err;
        dbs_pool *p = dbs_pool_open(&cfg, &err);
        if (p)
            CHECK_FAIL("a socket and 127.0.0.1 with keepalives_idle=0: the pool opened");
        CHECK_EQ(err.code, DBS_ECONFIG);
        CHECK_CONTAINS(err.message, "keepalives_idle");
    }

    /* More hosts than the 16 that resolve_hosts used to keep: the server is
     * the last of 20 (the others are socket directories that do not exist,
     * refused at once), and is reached (audit P3). */
    {
        char hosts[1024] = "";
        size_t o = 0;
        for (int i = 0; i < 19; i++)
            o += (size_t)snprintf(hosts + o, sizeof hosts - o,
                                  "/nonexistent_dbscope_%d,", i);
        snprintf(hosts + o, sizeof hosts - o, "127.0.0.1");
        snprintf(url, sizeof url,
                 "host=%s port=%s dbname=dbscope user=dbscope password=%s "
                 "connect_timeout=10",
                 hosts, port, password);
        connects(url);
    }

    /* TLS. */
    snprintf(url, sizeof url, "%s&sslmode=require&application_name=dbscope_tls",
             test_url("test_pg_connect"));
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    dbs_session *s = dbs_session_open(p, NULL, &err);
    if (!s)
        CHECK_FAIL("session: %s", err.message);
    CHECK_EQ(
        query_int(
            s, "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            NULL, 0),
        1);
    dbs_session_close(s);
    dbs_pool_close(p);

    fflush(stderr);
    FILE *f = fopen(log_path, "r");
    CHECK(f != NULL);
    static char all[1 << 16];
    size_t got = fread(all, 1, sizeof all - 1, f);
    all[got] = '\0';
    fclose(f);
    dup2(saved, 2);
    fputs(all, stdout);
    CHECK_INT(got, >, 0);
    if (strstr(all, password))
        CHECK_FAIL("the password appears in what dbscope printed");
    unlink(log_path);
    return 0;
}
