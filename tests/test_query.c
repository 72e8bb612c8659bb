/* Statements: $1..$n in any order, every value type both ways, the rows API,
 * errors by kind. Both backends. */
#include "common.h"

#include <sqlite3.h>

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
    /* a write that returns rows counts the rows it wrote, on every backend
     * (MariaDB counted none, as for a SELECT) */
    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (70), (71) RETURNING id", tbl);
    CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), 2);
    snprintf(sql, sizeof sql, " /* c */ DELETE FROM %s WHERE id >= 70 RETURNING id", tbl);
    CHECK_EQ(dbs_exec(s, sql, NULL, 0, &err), 2);
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

/* dbs_query runs the statement before it returns on every backend
 * (SQLite up to its first row, as the header says): an UPDATE whose rows
 * are closed unread is done, as on PostgreSQL and MariaDB, and an INSERT
 * ... RETURNING that a key refuses fails in dbs_query, not in the first
 * dbs_rows_next (on SQLite nothing ran before that call). Before the
 * first dbs_rows_next there is still no current row. */
static void test_query_runs(void)
{
    dbs_error err;
    dbs_session *s = open_ok(pool);
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE %s SET n = 77 WHERE id = 1", tbl);
    dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
    if (!r)
        CHECK_FAIL("%s: %s", sql, err.message);
    dbs_rows_close(r);
    snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE id = 1", tbl);
    int64_t n = query_int(s, sql, NULL, 0);
    if (n != 77)
        CHECK_FAIL("an UPDATE through dbs_query, its rows closed unread: n is %" PRId64
                   ", not 77", n);
    CHECK_OK(dbs_rollback(s, &err), &err);

    snprintf(sql, sizeof sql, "INSERT INTO %s (id) VALUES (1) RETURNING id", tbl);
    r = dbs_query(s, sql, NULL, 0, &err);
    if (r)
        CHECK_FAIL("an INSERT of a taken key through dbs_query returned rows (%d: %s)",
                   dbs_rows_next(r, &err), err.message);
    CHECK_EQ(err.code, DBS_ECONSTRAINT);
    CHECK_OK(dbs_rollback(s, &err), &err);

    r = dbs_query(s, "SELECT 5 AS five", NULL, 0, &err);
    CHECK(r != NULL);
    CHECK_EQ(dbs_rows_int(r, 0), 0);
    CHECK_EQ(dbs_rows_is_null(r, 0), 1);
    CHECK(dbs_rows_text(r, 0, NULL) == NULL);
    int64_t i = -1;
    CHECK_EQ(dbs_rows_get_int64(r, 0, &i, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_int(r, 0), 5);
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    CHECK_EQ(dbs_rows_int(r, 0), 0);
    dbs_rows_close(r);
    dbs_session_close(s);
}

/* A comment or any blank after the last statement's ';' is no second
 * statement, on any backend (SQLite's dbs_query refused "SELECT 1; --
 * done" as a text of several statements, and dbs_exec, given a parameter
 * too many, ran such a statement before refusing it). */
static void test_trailing_comment(void)
{
    dbs_error err;
    dbs_session *s = open_ok(pool);
    static const char *const tails[] = {"; -- done", "; /* done */", ";\f", " -- done\n;"};
    for (size_t k = 0; k < sizeof tails / sizeof tails[0]; k++) {
        char sql[100];
        snprintf(sql, sizeof sql, "SELECT 42 AS x%s", tails[k]);
        dbs_rows *r = dbs_query(s, sql, NULL, 0, &err);
        if (!r)
            CHECK_FAIL("dbs_query(\"%s\"): %d %s", sql, err.code, err.message);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_EQ(dbs_rows_int(r, 0), 42);
        CHECK_EQ(dbs_rows_next(r, &err), 0);
        dbs_rows_close(r);
    }
    char ins[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES ($1); -- one", tbl);
    dbs_value two[] = {DBS_INT(60), DBS_INT(61)};
    CHECK_EQ(dbs_exec(s, ins, two, 2, &err), DBS_ESQL);
    snprintf(ins, sizeof ins, "SELECT count(*) FROM %s WHERE id = 60", tbl);
    CHECK_EQ(query_int(s, ins, NULL, 0), 0);
    CHECK_OK(dbs_rollback(s, &err), &err);
    dbs_session_close(s);
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

/* "$01" is "$1" on every backend, as PostgreSQL's server reads it (SQLite
 * refused it); "$0" and "$00" name no parameter anywhere. */
static void test_leading_zero_params(void)
{
    dbs_error err;
    dbs_session *s = open_ok(pool);
    dbs_value v[] = {DBS_INT(3), DBS_INT(4)};
    CHECK_EQ(query_int(s, "SELECT $01 + $2", v, 2), 7);
    CHECK_EQ(query_int(s, "SELECT $2 * 10 + $001", v, 2), 43);
    /* the same parameter under both spellings, once where SQLite's
     * rewrite slots it and once where it falls back to the names ("?11"
     * does not fit in "$1") */
    CHECK_EQ(query_int(s, "SELECT $01 * 10 + $1 + $2 - $02", v, 2), 33);
    dbs_value w[11];
    for (int i = 0; i < 11; i++)
        w[i] = DBS_INT(i + 1);
    CHECK_EQ(query_int(s, "SELECT $2+$3+$4+$5+$6+$7+$8+$9+$10+$11+$01+$1", w, 11), 67);
    CHECK_OK(dbs_commit(s, &err), &err);
    static const char *const zero[] = {"SELECT $0", "SELECT $00 + $1", "SELECT $1 + $0"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
        CHECK_EQ(dbs_exec(s, zero[i], v, 1, &err), DBS_ESQL);
        CHECK_OK(dbs_rollback(s, &err), &err);
    }
    CHECK_EQ(query_int(s, "SELECT 42", NULL, 0), 42);
    dbs_session_close(s);
}

/* The most parameters a statement may have: 65535 (the PostgreSQL and
 * MariaDB protocols' count), on SQLite fewer if its build says so
 * (SQLITE_MAX_VARIABLE_NUMBER: 32766 by default, 250000 on Debian). */
static size_t most_params(void)
{
    if (strncmp(pool_url, "sqlite:", 7) != 0)
        return 65535;
    sqlite3 *db = NULL;
    CHECK_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
    int n = sqlite3_limit(db, SQLITE_LIMIT_VARIABLE_NUMBER, -1);
    sqlite3_close(db);
    return n < 65535 ? (size_t)n : 65535;
}

/* "SELECT count(*) FROM tbl WHERE id IN ($1, ..., $n)" (the caller's);
 * uses $1..$used, n of them. */
static char *in_list_sql(size_t used)
{
    size_t cap = 64 + strlen(tbl) + used * 8;
    char *sql = malloc(cap);
    CHECK(sql != NULL);
    size_t w = (size_t)snprintf(sql, cap, "SELECT count(*) FROM %s WHERE id IN (", tbl);
    for (size_t i = 1; i <= used; i++)
        w += (size_t)snprintf(sql + w, cap - w, i > 1 ? ", $%zu" : "$%zu", i);
    snprintf(sql + w, cap - w, ")");
    return sql;
}

/* n parameters no row's id matches but the last, a counted text "2" (the
 * row with id 2): so the last one arrived, as itself. */
static dbs_value *in_list_params(size_t n)
{
    dbs_value *v = malloc(n * sizeof *v);
    CHECK(v != NULL);
    for (size_t i = 0; i < n; i++)
        v[i] = DBS_INT(-(int64_t)i - 1);
    v[n - 1] = DBS_TEXTN("2x", 1);
    return v;
}

typedef struct many_arg {
    const char *sql;
    const dbs_value *v;
    size_t n;
    int64_t count;
} many_arg;

static int many_work(dbs_session *s, void *arg, dbs_error *err)
{
    many_arg *a = arg;
    dbs_rows *r = dbs_query(s, a->sql, a->v, a->n, err);
    if (!r)
        return err->code;
    if (dbs_rows_next(r, err) == 1)
        a->count = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    return 0;
}

/* Up to the backend's limit of parameters on every backend (PostgreSQL
 * refused more than 256); one past it is refused before anything is sent,
 * and the session goes on. */
static void test_many_params(void)
{
    dbs_error err;
    dbs_session *s = open_ok(pool);
    const size_t most = most_params();
    const size_t counts[] = {257, 1000, most};
    dbs_value *v = in_list_params(65536);
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t n = counts[k];
        char *sql = in_list_sql(n);
        v[n - 1] = DBS_TEXTN("2x", 1);
        dbs_rows *r = dbs_query(s, sql, v, n, &err);
        if (!r)
            CHECK_FAIL("%zu parameters: %d %s", n, err.code, err.message);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_EQ(dbs_rows_int(r, 0), 1);
        dbs_rows_close(r);
        v[n - 1] = DBS_INT(-(int64_t)n);
        /* more given than used, above the old limit too: DBS_ESQL */
        if (n < 65535) {
            CHECK_EQ(dbs_exec(s, sql, v, n + 1, &err), DBS_ESQL);
            CHECK_OK(dbs_rollback(s, &err), &err);
        }
        free(sql);
    }
    /* one past the backend's limit: SQLite's own refusal */
    if (most < 65535) {
        char *sql = in_list_sql(most + 1);
        CHECK_EQ(dbs_exec(s, sql, v, most + 1, &err), DBS_ESQL);
        CHECK_OK(dbs_rollback(s, &err), &err);
        free(sql);
    }
    /* past the protocol's: refused before anything is sent, in the middle
     * of a transaction that goes on */
    char *sql = in_list_sql(65536);
    char ins[200];
    snprintf(ins, sizeof ins, "INSERT INTO %s (id) VALUES (90)", tbl);
    CHECK_EQ(dbs_exec(s, ins, NULL, 0, &err), 1);
    CHECK_EQ(dbs_exec(s, sql, v, 65536, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "65535");
    CHECK(dbs_query(s, sql, v, 65536, &err) == NULL);
    CHECK_EQ(err.code, DBS_EMISUSE);
    free(sql);
    CHECK_OK(dbs_commit(s, &err), &err);
    snprintf(ins, sizeof ins, "SELECT count(*) FROM %s WHERE id = 90", tbl);
    CHECK_EQ(query_int(s, ins, NULL, 0), 1);
    snprintf(ins, sizeof ins, "DELETE FROM %s WHERE id = 90", tbl);
    CHECK_EQ(dbs_exec(s, ins, NULL, 0, &err), 1);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);

    /* MariaDB counts each use of a parameter: one used 65536 times is
     * refused before anything is sent */
    if (test_is_mysql(pool_url)) {
        s = open_ok(pool);
        size_t cap = 16 + 65536 * 4;
        sql = malloc(cap);
        CHECK(sql != NULL);
        size_t w = (size_t)snprintf(sql, cap, "SELECT 2 IN (");
        for (size_t i = 0; i < 65536; i++)
            w += (size_t)snprintf(sql + w, cap - w, i ? ",$1" : "$1");
        snprintf(sql + w, cap - w, ")");
        dbs_value two = DBS_INT(2);
        CHECK_EQ(dbs_exec(s, sql, &two, 1, &err), DBS_ESQL);
        CHECK_CONTAINS(err.message, "more than 65535 parameter uses");
        CHECK_OK(dbs_rollback(s, &err), &err);
        CHECK_EQ(query_int(s, "SELECT 42", NULL, 0), 42);
        free(sql);
        dbs_session_close(s);
    }

    /* through dbs_transact, at the limit */
    sql = in_list_sql(most);
    v[most - 1] = DBS_TEXTN("2x", 1);
    many_arg a = {.sql = sql, .v = v, .n = most, .count = -1};
    CHECK_OK(dbs_transact(pool, NULL, many_work, &a, &err), &err);
    CHECK_EQ(a.count, 1);
    free(sql);
    free(v);
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
    test_query_runs();
    test_trailing_comment();
    test_leading_zero_params();
    test_many_params();

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    puts("test_query: ok");
    return 0;
}
