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
    dbs_pool_close(p);

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
