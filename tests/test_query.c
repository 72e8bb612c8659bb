/* Statements: $1..$n in any order, every value type both ways, the rows API,
 * errors by kind. Both backends. */
#include "common.h"

static dbs_pool *pool;
static const char *pool_url;
static char tbl[64];

static void test_types_roundtrip(dbs_session *s)
{
    dbs_error err;
    char sql[200];
    static const unsigned char blob[] = {0, 1, 2, 255, 0, 7};
    const char *tricky = "'); DROP TABLE x; -- \"quoted\" $1 ?";
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (id, n, r, t, b) VALUES ($1, $2, $3, $4, $5)", tbl);
    dbs_value v[] = {DBS_INT(1), DBS_INT(INT64_C(-9007199254740993)), DBS_REAL(2.5),
                     DBS_TEXT(tricky), DBS_BLOB(blob, sizeof blob)};
    CHECK_EQ(dbs_exec(s, sql, v, 5, &err), 1);
    dbs_value nulls[] = {DBS_INT(2), DBS_NULL, DBS_NULL, DBS_TEXT(NULL), DBS_BLOB(NULL, 0)};
    CHECK_EQ(dbs_exec(s, sql, nulls, 5, &err), 1);
    dbs_value empty[] = {DBS_INT(3), DBS_INT(0), DBS_REAL(0), DBS_TEXTN("abc", 0),
                         DBS_BLOB("", 0)};
    CHECK_EQ(dbs_exec(s, sql, empty, 5, &err), 1);

    snprintf(sql, sizeof sql, "SELECT id, n, r, t, b FROM %s ORDER BY id", tbl);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (!r)
        CHECK_FAIL("query: %s", err.message);
    CHECK_EQ(dbs_rows_count_cols(r), 5);
    CHECK_STR(dbs_rows_name(r, 0), "id");
    CHECK_STR(dbs_rows_name(r, 4), "b");
    CHECK(dbs_rows_name(r, 5) == NULL);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 1);
    CHECK_EQ(dbs_rows_int(r, 1), INT64_C(-9007199254740993));
    CHECK(dbs_rows_real(r, 2) == 2.5);
    size_t len;
    CHECK_STR(dbs_rows_text(r, 3, &len), tricky);
    CHECK_EQ(len, strlen(tricky));
    const unsigned char *b = dbs_rows_blob(r, 4, &len);
    CHECK_EQ(len, sizeof blob);
    CHECK(memcmp(b, blob, sizeof blob) == 0);
    CHECK(!dbs_rows_is_null(r, 3));
    CHECK(dbs_rows_is_null(r, 9)); /* out of range reads as NULL */
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    for (int c = 1; c <= 4; c++)
        CHECK(dbs_rows_is_null(r, c));
    CHECK(dbs_rows_text(r, 3, &len) == NULL);
    CHECK_EQ(len, 0);
    CHECK(dbs_rows_blob(r, 4, NULL) == NULL);
    CHECK_EQ(dbs_rows_int(r, 1), 0);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_STR(dbs_rows_text(r, 3, &len), ""); /* empty, not NULL */
    CHECK(dbs_rows_blob(r, 4, &len) != NULL);
    CHECK_EQ(len, 0);
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    dbs_rows_close(r);
}

static void test_params_any_order(dbs_session *s)
{
    dbs_error err;
    char sql[200];
    /* $2 before $1, $1 used twice */
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE t = $2 OR (id = $1 AND id = $1) ORDER BY id",
             tbl);
    dbs_value v[] = {DBS_INT(2), DBS_TEXT("no such")};
    dbs_rows *r = dbs_query(s, sql, v, 2, &err);
    if (!r)
        CHECK_FAIL("query: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 2);
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    dbs_rows_close(r);
}

static void test_rows_affected(dbs_session *s)
{
    dbs_error err;
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE %s SET r = $1 WHERE id >= $2", tbl);
    dbs_value v[] = {DBS_REAL(1.5), DBS_INT(2)};
    CHECK_EQ(dbs_exec(s, sql, v, 2, &err), 2);
    snprintf(sql, sizeof sql, "SELECT id FROM %s", tbl);
    CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), 0);
}

static void test_two_open_rows(dbs_session *s)
{
    dbs_error err;
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT id FROM %s ORDER BY id", tbl);
    dbs_rows *a = dbs_query(s, sql, NULL, 0, &err);
    dbs_rows *b = dbs_query(s, sql, NULL, 0, &err);
    CHECK(a && b);
    CHECK_EQ(dbs_rows_next(a, &err), 1);
    CHECK_EQ(dbs_rows_next(a, &err), 1);
    CHECK_EQ(dbs_rows_next(b, &err), 1);
    CHECK_EQ(dbs_rows_int(a, 0), 2);
    CHECK_EQ(dbs_rows_int(b, 0), 1);
    dbs_rows_close(a);
    /* b left open on purpose: closing the session closes it */
}

static void test_errors(void)
{
    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE id = $2", tbl);
    dbs_value one[] = {DBS_INT(1)};
    CHECK(dbs_query(s, sql, one, 1, &err) == NULL); /* uses $2, given 1 */
    CHECK(err.code == DBS_ESQL);
    CHECK_OK(dbs_rollback(s, &err), &err);
    dbs_value two[] = {DBS_INT(1), DBS_INT(2)};
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE id = $1", tbl);
    CHECK_EQ(dbs_exec(s, sql, two, 2, &err), DBS_ESQL); /* given 2, uses 1 */
    CHECK_OK(dbs_rollback(s, &err), &err);
    CHECK_EQ(dbs_exec(s, "SELEC nonsense", NULL, 0, &err), DBS_ESQL);
    CHECK(strlen(err.message) > 0);
    CHECK_OK(dbs_rollback(s, &err), &err);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (1)", tbl);
    CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), DBS_ECONSTRAINT);
    CHECK_STR(err.sqlstate, test_is_mysql(pool_url) ? "23000" : "23505");
    CHECK_OK(dbs_rollback(s, &err), &err);
    CHECK_EQ(dbs_exec(s, NULL, NULL, 0, &err), DBS_EMISUSE);
    /* nothing to run: refused alike on every backend (PostgreSQL ran it
     * as nothing and said 0 rows) */
    static const char *const nothing[] = {"", "  \n\t", ";", " ; ;"};
    for (size_t i = 0; i < sizeof nothing / sizeof nothing[0]; i++) {
        CHECK_EQ(dbs_exec(s, nothing[i], NULL, 0, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "empty");
        CHECK(dbs_query(s, nothing[i], NULL, 0, &err) == NULL);
        CHECK_EQ(err.code, DBS_ESQL);
    }
    CHECK_EQ(dbs_exec(s, "SELECT 1", NULL, 1, &err), DBS_EMISUSE);
    dbs_value bad = {.type = (enum dbs_type)42};
    CHECK_EQ(dbs_exec(s, "SELECT $1", &bad, 1, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_next(NULL, &err), DBS_EMISUSE);
    dbs_rows_close(NULL);
    /* still usable */
    CHECK_EQ(query_int(s, "SELECT 42", NULL, 0), 42);
    dbs_session_close(s);
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 2;
    pool = open_pool("query", &cfg);
    pool_url = cfg.url;
    snprintf(tbl, sizeof tbl, "%s", table_name("q"));
    char sql[200];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
    run_sql(pool, sql);
    const char *blob_type = test_is_pg(cfg.url) ? "BYTEA" : "BLOB";
    snprintf(sql, sizeof sql,
             "CREATE TABLE %s (id INTEGER PRIMARY KEY, n BIGINT, r DOUBLE PRECISION, "
             "t TEXT, b %s)", tbl, blob_type);
    run_sql(pool, sql);

    dbs_error err;
    dbs_session *s = dbs_session_open(pool, NULL, &err);
    test_types_roundtrip(s);
    test_params_any_order(s);
    test_rows_affected(s);
    test_two_open_rows(s);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    test_errors();

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    puts("test_query: ok");
    return 0;
}
