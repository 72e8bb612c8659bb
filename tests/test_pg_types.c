/* PostgreSQL column types through the portable row accessors, and the
 * statement cache switched off (PgBouncer transaction pooling). */
#include "common.h"

static void check_types(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    static const unsigned char bin[] = {0, 0xff, '\\', 'x', 1};
    dbs_value v[] = {DBS_BLOB(bin, sizeof bin), DBS_TEXT("héllo"), DBS_NULL};
    dbs_rows *r =
        dbs_query(s,
                  "SELECT 7::int2, 70000::int4, 9000000000::int8, 1.5::float4, "
                  "2.25::float8, 12.50::numeric, true, false, 'v'::varchar, "
                  "$1::bytea, $2::text, $3::int, 'x'::bytea",
                  v, 3, &err);
    if (!r)
        CHECK_FAIL("query: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 7);
    CHECK_EQ(dbs_rows_int(r, 1), 70000);
    CHECK_EQ(dbs_rows_int(r, 2), INT64_C(9000000000));
    CHECK(dbs_rows_real(r, 3) == 1.5);
    CHECK(dbs_rows_real(r, 4) == 2.25);
    CHECK(dbs_rows_real(r, 5) == 12.5);
    CHECK_EQ(dbs_rows_int(r, 5), 12);
    CHECK_EQ(dbs_rows_int(r, 6), 1);
    CHECK_EQ(dbs_rows_int(r, 7), 0);
    CHECK_STR(dbs_rows_text(r, 8, NULL), "v");
    size_t len;
    const unsigned char *b = dbs_rows_blob(r, 9, &len);
    CHECK_EQ(len, sizeof bin);
    CHECK(memcmp(b, bin, sizeof bin) == 0);
    CHECK_STR(dbs_rows_text(r, 10, &len), "héllo");
    CHECK(dbs_rows_is_null(r, 11));
    b = dbs_rows_blob(r, 12, &len);
    CHECK_EQ(len, 1);
    CHECK_EQ(b[0], 'x');
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    dbs_rows_close(r);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
}

/* libpq's bytea decoding, failed at will as when malloc fails: the
 * program is linked with -Wl,--wrap=PQunescapeBytea. */
unsigned char *__real_PQunescapeBytea(const unsigned char *from, size_t *to_length);
unsigned char *__wrap_PQunescapeBytea(const unsigned char *from, size_t *to_length);
static bool unescape_fails;

unsigned char *__wrap_PQunescapeBytea(const unsigned char *from, size_t *to_length)
{
    if (unescape_fails)
        return NULL;
    return __real_PQunescapeBytea(from, to_length);
}

/* A bytea that cannot be decoded for want of memory is DBS_ENOMEM, never
 * an empty value (it read as 0 bytes, DBS_OK); the next read decodes it. */
static void check_bytea_oom(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    dbs_rows *r = dbs_query(s, "SELECT '\\x0102'::bytea AS b", NULL, 0, &err);
    if (!r)
        CHECK_FAIL("query: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    const void *b = NULL;
    size_t len = 99;
    unescape_fails = true;
    int rc = dbs_rows_get_blob(r, 0, &b, &len, &err);
    unescape_fails = false;
    if (rc != DBS_ENOMEM)
        CHECK_FAIL("bytea decoding out of memory: rc %d, %zu bytes, not DBS_ENOMEM", rc, len);
    CHECK(b == NULL && len == 99); /* untouched */
    CHECK_OK(dbs_rows_get_blob(r, 0, &b, &len, &err), &err);
    CHECK_EQ(len, 2);
    CHECK(memcmp(b, "\x01\x02", 2) == 0);
    dbs_rows_close(r);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
}

/* A role's own defaults (ALTER ROLE ... SET) apply to every connection it
 * makes, and dbscope's reset (RESET ALL) returns to them: settings that
 * change how the server spells values must not change what dbscope reads.
 * Checked on a role of this test's own, with the defaults below, against
 * what the server's defaults give. */
static void expect_ts(dbs_rows *r, int col, int64_t sec, long nsec)
{
    dbs_error err;
    struct timespec ts;
    if (dbs_rows_get_timestamp(r, col, &ts, &err) != DBS_OK)
        CHECK_FAIL("column %d \"%s\": %s", col, dbs_rows_text(r, col, NULL), err.message);
    if (ts.tv_sec != sec || ts.tv_nsec != nsec)
        CHECK_FAIL("column %d \"%s\" read as %lld.%09ld, not %lld.%09ld", col,
                   dbs_rows_text(r, col, NULL), (long long)ts.tv_sec, ts.tv_nsec,
                   (long long)sec, nsec);
}

/* The values whose spelling the settings change, read as with the
 * server's defaults. */
static void read_values(dbs_session *s, const char *what)
{
    dbs_error err;
    static const unsigned char bin[] = {0, 0xff, '\\', 'x', '\'', 0x80};
    /* é and € in UTF-8: the bytes dbscope sends and expects back */
    dbs_value v[] = {DBS_BLOB(bin, sizeof bin), DBS_TEXT("\xc3\xa9\xe2\x82\xac")};
    dbs_rows *r = dbs_query(
        s,
        "SELECT 0.1::float8 + 0.2::float8, 1.23456::float4, 1e-320::float8, "
        "$1::bytea, '\\x00ff'::bytea, "
        "'2024-05-01 12:00:00.5+00'::timestamptz, "
        "'2024-05-01 12:00:00.5+00'::timestamptz AT TIME ZONE 'UTC', "
        "'1850-06-01 12:00:00+00'::timestamptz, '1800-06-01 12:00:00+00'::timestamptz, "
        "chr(233) || chr(8364), $2::text = chr(233) || chr(8364), "
        "octet_length($2::text), '{\"k\": \"\\u00e9\"}'::json ->> 'k'",
        v, 2, &err);
    if (!r)
        CHECK_FAIL("%s: query: %s", what, err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    double d;
    CHECK_OK(dbs_rows_get_double(r, 0, &d, &err), &err);
    if (d != 0.1 + 0.2)
        CHECK_FAIL("%s: 0.1::float8 + 0.2::float8 \"%s\" read as %.17g", what,
                   dbs_rows_text(r, 0, NULL), d);
    CHECK_OK(dbs_rows_get_double(r, 1, &d, &err), &err);
    if (d != 1.23456) /* the float4's shortest spelling, as by default */
        CHECK_FAIL("%s: 1.23456::float4 \"%s\" read as %.17g", what,
                   dbs_rows_text(r, 1, NULL), d);
    CHECK_OK(dbs_rows_get_double(r, 2, &d, &err), &err);
    if (d != 1e-320)
        CHECK_FAIL("%s: 1e-320::float8 \"%s\" read as %.17g", what, dbs_rows_text(r, 2, NULL),
                   d);
    const void *b;
    size_t len;
    CHECK_OK(dbs_rows_get_blob(r, 3, &b, &len, &err), &err);
    CHECK_EQ(len, sizeof bin);
    CHECK(memcmp(b, bin, sizeof bin) == 0);
    CHECK_OK(dbs_rows_get_blob(r, 4, &b, &len, &err), &err);
    CHECK_EQ(len, 2);
    CHECK(memcmp(b, "\x00\xff", 2) == 0);
    expect_ts(r, 5, 1714564800, 500000000);
    expect_ts(r, 6, 1714564800, 500000000);
    expect_ts(r, 7, -3773736000LL, 0);
    expect_ts(r, 8, -5351572800LL, 0);
    CHECK_STR(dbs_rows_text(r, 9, NULL), "\xc3\xa9\xe2\x82\xac");
    CHECK_EQ(dbs_rows_int(r, 10), 1);
    CHECK_EQ(dbs_rows_int(r, 11), 5);
    CHECK_STR(dbs_rows_text(r, 12, NULL), "\xc3\xa9");
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    dbs_rows_close(r);
}

static void check_role_defaults(void)
{
    const char *dir = getenv("DBSCOPE_PG_DIR");
    CHECK(dir != NULL);
    char super_url[1024], port[32], role[64], url[1200], sql[256];
    read_line(dir, "super_url", super_url, sizeof super_url);
    read_line(dir, "port", port, sizeof port);
    snprintf(role, sizeof role, "fmt_role_%ld", (long)getpid());
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = super_url;
    cfg.pool_size = 1;
    dbs_error err;
    dbs_pool *su = dbs_pool_open(&cfg, &err);
    if (!su)
        CHECK_FAIL("super pool: %s", err.message);
    snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN PASSWORD 'fmt-pw'", role);
    run_sql(su, sql);
    static const char *const defaults[] = {
        "extra_float_digits = -3",     "bytea_output = 'escape'",
        "DateStyle = 'SQL, DMY'",      "IntervalStyle = 'sql_standard'",
        "TimeZone = 'Asia/Kolkata'",   "client_encoding = 'LATIN1'",
        "lc_monetary = 'C'",           "lc_numeric = 'C'",
    };
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        snprintf(sql, sizeof sql, "ALTER ROLE %s SET %s", role, defaults[i]);
        run_sql(su, sql);
    }
    snprintf(url, sizeof url, "postgresql://%s:fmt-pw@127.0.0.1:%s/dbscope?connect_timeout=10",
             role, port);
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("role pool: %s", err.message);

    dbs_session *s = open_ok(p);
    read_values(s, "role defaults");
    char out[128];
    /* the role's date order is kept for the SQL it writes */
    CHECK_STR(text_of(s, "SELECT '02/03/2024'::date::text", out, sizeof out), "2024-03-02");
    /* a zone of the session's own, at any offset: half hours, negative,
     * and the local mean times with seconds of dates before 1900 */
    static const char *const zones[] = {"Asia/Kathmandu", "America/St_Johns",
                                        "America/New_York", "Europe/Amsterdam",
                                        "Asia/Manila", "America/Juneau", "Pacific/Kiritimati"};
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        snprintf(sql, sizeof sql, "SET TimeZone = '%s'", zones[i]);
        exec_ok(s, sql);
        read_values(s, zones[i]);
    }
    /* a session's own settings, undone for the next user */
    exec_ok(s, "SET extra_float_digits = 0");
    exec_ok(s, "SET DateStyle = 'German'");
    exec_ok(s, "SET client_encoding = 'LATIN1'");
    exec_ok(s, "SET bytea_output = 'escape'");
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);

    /* RESET ALL returned to what the connection started with */
    s = open_ok(p);
    read_values(s, "after a session's SETs");
    /* what the startup packet set, not the role's nor the session's */
    CHECK_STR(text_of(s, "SHOW extra_float_digits", out, sizeof out), "3");
    CHECK_STR(text_of(s, "SHOW DateStyle", out, sizeof out), "ISO, DMY");
    CHECK_STR(text_of(s, "SHOW client_encoding", out, sizeof out), "UTF8");
    CHECK_STR(text_of(s, "SELECT '02/03/2024'::date::text", out, sizeof out), "2024-03-02");
    dbs_session_close(s);
    dbs_pool_close(p);

    snprintf(sql, sizeof sql, "DROP ROLE %s", role);
    run_sql(su, sql);
    dbs_pool_close(su);
}

/* $n is counted where the server's lexer reads a parameter: not in nested
 * block comments, E'' strings, dollar-quoted bodies or names ("a$2"); a
 * quote in a comment opens no string. Used parameters are accepted,
 * surplus ones refused, on the blocking path and by dbs_unit_add. */
static void check_param_lexing(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    dbs_value v[] = {DBS_INT(5), DBS_INT(7)};
    static const char *const one[] = {
        "/* it's */ SELECT $1::int",
        "SELECT $1::int -- it's\n",
        "SELECT $1::int /* outer /* inner */ $2 */",
        "SELECT length(E'it\\'s $2') + $1::int - 7",
        "SELECT length($q$ it's $2 $q$) + $1::int - 9",
        "SELECT length($$'$$) + $1::int - 1",
        "SELECT a$2 FROM (SELECT $1::int AS a$2) t",
    };
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        dbs_rows *r = dbs_query(s, one[i], v, 1, &err);
        if (!r)
            CHECK_FAIL("%s: %s", one[i], err.message);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_EQ(dbs_rows_int(r, 0), 5);
        dbs_rows_close(r);
        /* $2 is no parameter there: a second one is one too many */
        CHECK_EQ(dbs_exec(s, one[i], v, 2, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "uses $1 at most");
        CHECK_OK(dbs_rollback(s, &err), &err);
    }
    /* A backslash in a plain string escapes nothing unless
     * standard_conforming_strings is off: the session's, so left to the
     * server. */
    CHECK_EQ(query_int(s, "SELECT length('a\\') + $1::int - 2", v, 1), 5);
    dbs_session_close(s);

    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    for (size_t i = 0; i < sizeof one / sizeof one[0]; i++) {
        CHECK_EQ(dbs_unit_add(u, one[i], v, 2, &err), DBS_ESQL);
        CHECK_EQ(dbs_unit_add(u, one[i], v, 1, &err), (int)i);
    }
    dbs_unit_discard(u);
    dbs_loop_close(l);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    dbs_pool *p = open_pool("test_pg_types", &cfg);
    check_types(p);
    check_types(p); /* from the statement cache */
    check_bytea_oom(p);
    check_param_lexing(p);
    dbs_pool_close(p);
    check_role_defaults();

    /* Cache off: statements stay unnamed, nothing is left prepared. */
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.stmt_cache_size = 0;
    cfg.reset = DBS_RESET_ROLLBACK;
    p = open_pool("test_pg_types", &cfg);
    check_types(p);
    dbs_error err;
    dbs_session *s = dbs_session_open(p, NULL, &err);
    CHECK(s != NULL);
    CHECK_EQ(
        query_int(s, "SELECT count(*) FROM pg_prepared_statements", NULL, 0),
        0);
    dbs_session_close(s);
    dbs_pool_close(p);
    return 0;
}
