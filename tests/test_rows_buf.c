/* Rows held in memory with no session (src/rows_buf.c), as an event
 * loop's units keep them: every accessor, checked or not, and
 * dbs_rows_type answer on the copy exactly as on the session's own rows,
 * for every type; the copy is read from another thread than the one that
 * made it; dbs_rows_close leaves it to its owner; the rows a statement
 * changed are kept. SQLite. */
#include "common.h"

#include <pthread.h>

static const char *cols_sql =
    "SELECT i, r, t, b, bo, ts, u, j, d, n, 1 + 1 AS e_int, 'x' || t AS e_text, "
    "NULL AS e_null, x'00ff' AS e_blob, 2.5 AS e_real FROM tb ORDER BY k";

static void mem_eq(const void *a, size_t an, const void *b, size_t bn, const char *what, int row,
                   int col)
{
    if ((a == NULL) != (b == NULL) || an != bn || (a && memcmp(a, b, an) != 0))
        CHECK_FAIL("row %d col %d: %s differs (%zu vs %zu bytes: \"%.*s\" vs \"%.*s\")", row, col, what, an, bn, (int)an, a ? (const char *)a : "", (int)bn, b ? (const char *)b : "");
}

/* SQLite's answer to sqlite3_column_type is undefined once an accessor
 * converted the value (text read from an integer, say), on the source as
 * anywhere: so each pass reads the rows afresh with one accessor only. */
enum { K_TYPE, K_INT, K_REAL, K_TEXT, K_BLOB, K_GET_INT64, K_GET_DOUBLE, K_GET_BOOL,
       K_GET_TEXT, K_GET_BLOB, K_GET_TS, K_GET_UUID, K_COUNT };

/* Accessor k on the current row of a (the session's) and b (the copy). */
static void same_cells(dbs_rows *a, dbs_rows *b, int row, int k)
{
    int n = dbs_rows_count_cols(a);
    CHECK_EQ(dbs_rows_count_cols(b), n);
    for (int c = -1; c <= n; c++) { /* out of range on both sides too */
        dbs_error ea, eb;
        size_t an = 0, bn = 0;
        int ra = 0, rb = 0;
        ea.message[0] = eb.message[0] = '\0';
        switch (k) {
        case K_TYPE:
            CHECK_EQ(dbs_rows_type(b, c, &eb), dbs_rows_type(a, c, &ea));
            CHECK_EQ(eb.code, ea.code);
            CHECK_EQ(dbs_rows_is_null(b, c), dbs_rows_is_null(a, c));
            if (c >= 0 && c < n)
                CHECK_STR(dbs_rows_name(b, c), dbs_rows_name(a, c));
            break;
        case K_INT:
            CHECK_EQ(dbs_rows_int(b, c), dbs_rows_int(a, c));
            break;
        case K_REAL: {
            double da = dbs_rows_real(a, c), db = dbs_rows_real(b, c);
            CHECK(da == db || (da != da && db != db));
            break;
        }
        case K_TEXT: {
            const char *ta = dbs_rows_text(a, c, &an);
            const char *tb = dbs_rows_text(b, c, &bn);
            mem_eq(ta, an, tb, bn, "text", row, c);
            break;
        }
        case K_BLOB: {
            const void *pa = dbs_rows_blob(a, c, &an);
            const void *pb = dbs_rows_blob(b, c, &bn);
            mem_eq(pa, an, pb, bn, "blob", row, c);
            break;
        }
        case K_GET_INT64: {
            int64_t ia = 0, ib = 0;
            ra = dbs_rows_get_int64(a, c, &ia, &ea);
            rb = dbs_rows_get_int64(b, c, &ib, &eb);
            CHECK_EQ(ib, ia);
            break;
        }
        case K_GET_DOUBLE: {
            double fa = 0, fb = 0;
            ra = dbs_rows_get_double(a, c, &fa, &ea);
            rb = dbs_rows_get_double(b, c, &fb, &eb);
            CHECK(fa == fb);
            break;
        }
        case K_GET_BOOL: {
            int ba = -1, bb = -1;
            ra = dbs_rows_get_bool(a, c, &ba, &ea);
            rb = dbs_rows_get_bool(b, c, &bb, &eb);
            CHECK_EQ(bb, ba);
            break;
        }
        case K_GET_TEXT: {
            const char *sa = NULL, *sb = NULL;
            ra = dbs_rows_get_text(a, c, &sa, &an, &ea);
            rb = dbs_rows_get_text(b, c, &sb, &bn, &eb);
            mem_eq(sa, an, sb, bn, "get_text", row, c);
            break;
        }
        case K_GET_BLOB: {
            const void *va = NULL, *vb = NULL;
            ra = dbs_rows_get_blob(a, c, &va, &an, &ea);
            rb = dbs_rows_get_blob(b, c, &vb, &bn, &eb);
            mem_eq(va, an, vb, bn, "get_blob", row, c);
            break;
        }
        case K_GET_TS: {
            struct timespec tsa = {0, 0}, tsb = {0, 0};
            ra = dbs_rows_get_timestamp(a, c, &tsa, &ea);
            rb = dbs_rows_get_timestamp(b, c, &tsb, &eb);
            CHECK(tsa.tv_sec == tsb.tv_sec && tsa.tv_nsec == tsb.tv_nsec);
            break;
        }
        case K_GET_UUID: {
            unsigned char ua[16] = {0}, ub[16] = {0};
            ra = dbs_rows_get_uuid(a, c, ua, &ea);
            rb = dbs_rows_get_uuid(b, c, ub, &eb);
            CHECK(memcmp(ua, ub, 16) == 0);
            break;
        }
        }
        if (ra != rb)
            CHECK_FAIL("accessor %d, row %d col %d: %d vs %d: \"%s\" / \"%s\"", k, row, c, rb,
                       ra, eb.message, ea.message);
        if (ra != DBS_OK)
            CHECK_STR(eb.message, ea.message);
    }
    if (k == K_TYPE) {
        dbs_error ea, eb;
        CHECK_EQ(dbs_rows_col(b, "E_TEXT", &eb), dbs_rows_col(a, "E_TEXT", &ea));
        CHECK_EQ(dbs_rows_col(b, "nope", &eb), dbs_rows_col(a, "nope", &ea));
        CHECK_STR(eb.message, ea.message);
    }
}

static dbs_rows *copy_of(dbs_session *s, const char *sql)
{
    dbs_error err;
    dbs_rows *src = dbs_query(s, sql, NULL, 0, &err);
    if (!src)
        CHECK_FAIL("%s: %s", sql, err.message);
    dbs_rows *b = dbs__rows_buf(src, &err);
    if (!b)
        CHECK_FAIL("dbs__rows_buf(%s): %s", sql, err.message);
    CHECK(b->session == NULL);
    dbs_rows_close(src);
    return b;
}

/* Both read side by side with accessor k, row by row, before the first
 * row and after the last; the copy is made afresh. Returns the rows. */
static int compare(dbs_session *s, const char *sql, int k)
{
    dbs_error err;
    dbs_rows *b = copy_of(s, sql);
    dbs_rows *a = dbs_query(s, sql, NULL, 0, &err);
    if (!a)
        CHECK_FAIL("%s: %s", sql, err.message);
    int rows = 0;
    same_cells(a, b, rows, k); /* before the first row: types, and no row */
    for (;;) {
        dbs_error eb;
        int ra = dbs_rows_next(a, &err), rb = dbs_rows_next(b, &eb);
        CHECK_EQ(rb, ra);
        CHECK_EQ(eb.code, DBS_OK);
        if (ra <= 0)
            break;
        rows++;
        same_cells(a, b, rows, k);
    }
    same_cells(a, b, -1, k); /* after the last */
    CHECK_EQ(dbs_rows_next(b, &err), 0);
    dbs_rows_close(a);
    b->ops->close(b);
    return rows;
}

typedef struct reader {
    dbs_rows *b;
    int64_t sum;
    int rows;
    char first_text[32];
} reader;

/* Another thread than the session's: the copy belongs to no thread. */
static void *read_elsewhere(void *arg)
{
    reader *rd = arg;
    dbs_error err;
    int rc;
    while ((rc = dbs_rows_next(rd->b, &err)) == 1) {
        int64_t v = 0;
        if (dbs_rows_get_int64(rd->b, 0, &v, &err) == DBS_OK)
            rd->sum += v;
        const char *t = NULL;
        size_t n = 0;
        if (rd->rows == 0 && dbs_rows_get_text(rd->b, 2, &t, &n, &err) == DBS_OK)
            snprintf(rd->first_text, sizeof rd->first_text, "%.*s", (int)n, t);
        rd->rows++;
    }
    if (rc < 0)
        rd->rows = -1;
    return NULL;
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    dbs_pool *p = open_pool("test_rows_buf", &cfg);
    run_sql(p, "DROP TABLE IF EXISTS tb");
    run_sql(p, "CREATE TABLE tb (k INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, "
               "bo BOOLEAN, ts TIMESTAMP, u UUID, j JSON, d DECIMAL(10,2), n)");
    dbs_session *s = open_ok(p);
    dbs_error err;
    const unsigned char uuid[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                                    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    struct timespec when = {1700000000, 123456000};
    dbs_value row1[] = {DBS_INT(42), DBS_REAL(3.25), DBS_TEXT("héllo"), DBS_BLOB("\0\1\2", 3),
                        DBS_BOOL(1), DBS_TIMESTAMP(when), DBS_UUID(uuid),
                        DBS_JSON("{\"a\":[1,2]}"), DBS_TEXT("12.50"), DBS_INT(7)};
    CHECK_OK(dbs_exec(s, "INSERT INTO tb (k, i, r, t, b, bo, ts, u, j, d, n) VALUES "
                         "(1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", row1, 10, &err), &err);
    /* every column NULL */
    exec_ok(s, "INSERT INTO tb (k) VALUES (2)");
    /* values held other than their column declares (SQLite keeps them so) */
    exec_ok(s, "INSERT INTO tb VALUES (3, '17', '2.5e1', 99, 'text in blob', 0, "
               "'2024-02-29T12:34:56Z', '123e4567-e89b-12d3-a456-426614174000', '[]', 3, "
               "x'')");
    exec_ok(s, "INSERT INTO tb VALUES (4, -9223372036854775808, -0.0, '', x'', 2, 1700000000, "
               "x'0102', 'null', '1e400', 1.5)");
    exec_ok(s, "INSERT INTO tb VALUES (5, 9007199254740993, 1e308, 'not a number', "
               "'abc', 'yes', 'garbage', 'not-a-uuid', '{', 'x', 'y')");
    CHECK_OK(dbs_commit(s, &err), &err);

    /* every type, cell by cell, each accessor */
    for (int k = 0; k < K_COUNT; k++)
        CHECK_EQ(compare(s, cols_sql, k), 5);
    dbs_rows *b = copy_of(s, cols_sql);
    dbs_rows_close(b); /* not the program's to free: still there */
    CHECK_EQ(dbs_rows_count_cols(b), 15);
    CHECK_EQ(dbs_rows_next(b, &err), 1);
    b->ops->close(b);

    /* no rows at all */
    const char *none = "SELECT i, t FROM tb WHERE k < 0";
    for (int k = 0; k < K_COUNT; k++)
        CHECK_EQ(compare(s, none, k), 0);

    /* read on another thread than the one that made it */
    b = copy_of(s, "SELECT i, r, t FROM tb WHERE i IS NOT NULL ORDER BY k");
    reader rd = {.b = b};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, read_elsewhere, &rd), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(rd.rows, 4);
    CHECK_EQ(rd.sum, 42 + 17 + INT64_MIN + 9007199254740993LL);
    CHECK_STR(rd.first_text, "héllo");
    b->ops->close(b);

    /* the rows a statement changed, as dbs_exec counts them */
    b = copy_of(s, "UPDATE tb SET n = 1 WHERE k >= 3");
    CHECK_EQ(dbs_rows_count_cols(b), 0);
    CHECK_EQ(dbs__rows_affected(b), 3);
    CHECK_EQ(dbs_rows_next(b, &err), 0);
    b->ops->close(b);
    b = copy_of(s, "INSERT INTO tb (k) VALUES (6)");
    CHECK_EQ(dbs__rows_affected(b), 1);
    b->ops->close(b);
    b = copy_of(s, "SELECT k FROM tb");
    CHECK_EQ(dbs__rows_affected(b), 0);
    b->ops->close(b);
    CHECK_OK(dbs_rollback(s, &err), &err);

    /* a failure while reading the source: reported, nothing kept (the
     * second row's: dbs_query ran the statement up to the first) */
    dbs_rows *src = dbs_query(s, "SELECT abs(v - $1) FROM (SELECT 0 AS v UNION ALL "
                                 "SELECT -9223372036854775807)",
                              (dbs_value[]){DBS_INT(1)}, 1, &err);
    CHECK(src != NULL);
    CHECK(dbs__rows_buf(src, &err) == NULL);
    CHECK(err.code < 0);
    dbs_rows_close(src);
    dbs_session_close(s);
    dbs_pool_close(p);
    test_db_remove();
    printf("ok\n");
    return 0;
}
