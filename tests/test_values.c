/* Values and rows: the checked accessors report a wrong type, a NULL, a bad
 * column and a missing row; column types and columns by name; booleans,
 * timestamps, UUIDs and JSON both ways; the pool's backend; generated keys
 * with RETURNING. All three backends. */
#include "common.h"

#include <math.h>
#include <poll.h>
#include <sqlite3.h>

static dbs_pool *pool;
static dbs_backend backend;
static char tbl[64];

static dbs_rows *query_ok(dbs_session *s, const char *sql, const dbs_value *v, size_t n)
{
    dbs_error err;
    dbs_rows *r = dbs_query(s, sql, v, n, &err);
    if (!r)
        CHECK_FAIL("%s: %s", sql, err.message);
    return r;
}

/* 'abc', NULL, 2.5, column 99, no row: never a silent 0. */
static void test_checked_errors(dbs_session *s)
{
    dbs_error err;
    dbs_rows *r = query_ok(s,
                           "SELECT 'abc' AS s, NULL AS z, 2.5 AS r, 7 AS i, '12abc' AS t, "
                           "'99999999999999999999' AS big, '-42' AS neg, '' AS e",
                           NULL, 0);
    int64_t i = -1;
    double d = -1;
    int b = -1;
    const char *t = NULL;
    size_t len = 0;

    /* No current row yet. */
    CHECK_EQ(dbs_rows_get_int64(r, 3, &i, &err), DBS_EMISUSE);
    CHECK_EQ(err.code, DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "no current row");
    CHECK_EQ(dbs_rows_next(r, &err), 1);

    CHECK_OK(dbs_rows_get_int64(r, 3, &i, &err), &err);
    CHECK_EQ(i, 7);
    CHECK_EQ(err.code, DBS_OK);

    i = -1;
    CHECK_EQ(dbs_rows_get_int64(r, 0, &i, &err), DBS_ETYPE);
    CHECK_EQ(err.code, DBS_ETYPE);
    CHECK_CONTAINS(err.message, "\"s\"");
    CHECK_EQ(i, -1); /* untouched */
    CHECK_EQ(dbs_rows_int(r, 0), 0); /* the unchecked fallback, documented */

    CHECK_EQ(dbs_rows_get_int64(r, 1, &i, &err), DBS_ENULL);
    CHECK_CONTAINS(err.message, "NULL");
    CHECK_EQ(dbs_rows_get_double(r, 1, &d, &err), DBS_ENULL);
    CHECK_EQ(dbs_rows_get_text(r, 1, &t, &len, &err), DBS_ENULL);
    CHECK_EQ(dbs_rows_get_bool(r, 1, &b, &err), DBS_ENULL);

    CHECK_EQ(dbs_rows_get_int64(r, 99, &i, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "column 99 is out of range");
    CHECK_CONTAINS(err.message, "8 columns");
    CHECK_EQ(dbs_rows_get_int64(r, -1, &i, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_get_text(r, 99, &t, &len, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_type(r, 99, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_get_int64(r, 3, NULL, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_get_int64(NULL, 3, &i, &err), DBS_EMISUSE);

    CHECK_EQ(dbs_rows_get_int64(r, 2, &i, &err), DBS_ETYPE); /* 2.5 */
    CHECK_OK(dbs_rows_get_double(r, 2, &d, &err), &err);
    CHECK(d == 2.5);
    CHECK_EQ(dbs_rows_get_double(r, 0, &d, &err), DBS_ETYPE);
    CHECK_EQ(dbs_rows_get_int64(r, 4, &i, &err), DBS_ETYPE);  /* 12abc */
    CHECK_EQ(dbs_rows_get_double(r, 4, &d, &err), DBS_ETYPE);
    CHECK_EQ(dbs_rows_get_int64(r, 5, &i, &err), DBS_ETYPE);  /* > int64 */
    CHECK_OK(dbs_rows_get_int64(r, 6, &i, &err), &err);
    CHECK_EQ(i, -42);
    CHECK_EQ(dbs_rows_get_int64(r, 7, &i, &err), DBS_ETYPE);  /* '' */
    CHECK_EQ(dbs_rows_get_bool(r, 3, &b, &err), DBS_ETYPE);   /* 7 */
    CHECK_EQ(dbs_rows_get_timestamp(r, 0, &(struct timespec){0}, &err), DBS_ETYPE);
    unsigned char u[16];
    CHECK_EQ(dbs_rows_get_uuid(r, 0, u, &err), DBS_ETYPE);
    CHECK_OK(dbs_rows_get_text(r, 0, &t, &len, &err), &err);
    CHECK_STR(t, "abc");
    CHECK_EQ(len, 3);
    CHECK_OK(dbs_rows_get_text(r, 3, &t, &len, &err), &err);
    CHECK_STR(t, "7");

    /* Past the end. */
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    CHECK_EQ(dbs_rows_get_int64(r, 3, &i, &err), DBS_EMISUSE);
    dbs_rows_close(r);
    /* None of it ended the transaction. */
    CHECK_EQ(query_int(s, "SELECT 5", NULL, 0), 5);
}

/* Text read as an integer exactly: one past int64_t's range, a fraction
 * past double's precision and bytes after a NUL are not integers. */
static void test_int_text_exact(dbs_session *s)
{
    dbs_error err;
    dbs_rows *r = query_ok(s,
                           "SELECT '-9223372036854775809' AS a, '12.0000000000000001' AS b, "
                           "'9223372036854775807' AS c, '-9223372036854775808' AS d, "
                           "'1e3' AS e, '-0' AS f, '12.000' AS g, "
                           "'9223372036854775808' AS h, '0x10' AS i",
                           NULL, 0);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int64_t i = -1;
    CHECK_EQ(dbs_rows_get_int64(r, 0, &i, &err), DBS_ETYPE);
    CHECK_EQ(dbs_rows_get_int64(r, 1, &i, &err), DBS_ETYPE);
    CHECK_EQ(i, -1);
    CHECK_OK(dbs_rows_get_int64(r, 2, &i, &err), &err);
    CHECK(i == INT64_MAX);
    CHECK_OK(dbs_rows_get_int64(r, 3, &i, &err), &err);
    CHECK(i == INT64_MIN);
    CHECK_OK(dbs_rows_get_int64(r, 4, &i, &err), &err);
    CHECK_EQ(i, 1000);
    CHECK_OK(dbs_rows_get_int64(r, 5, &i, &err), &err);
    CHECK_EQ(i, 0);
    CHECK_OK(dbs_rows_get_int64(r, 6, &i, &err), &err);
    CHECK_EQ(i, 12);
    CHECK_EQ(dbs_rows_get_int64(r, 7, &i, &err), DBS_ETYPE);
    CHECK_EQ(dbs_rows_get_int64(r, 8, &i, &err), DBS_ETYPE); /* not decimal */
    dbs_rows_close(r);

    /* PostgreSQL text holds no NUL (the server refuses it); the others
     * keep all six bytes, which are not a number. */
    dbs_value nul[] = {DBS_TEXTN("12\0abc", 6)};
    r = dbs_query(s, "SELECT $1 AS t", nul, 1, &err);
    if (backend == DBS_BACKEND_POSTGRESQL) {
        CHECK(r == NULL);
        CHECK_EQ(err.code, DBS_ESQL);
        CHECK_OK(dbs_rollback(s, &err), &err);
        return;
    }
    CHECK(r != NULL);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    const char *t;
    size_t len;
    CHECK_OK(dbs_rows_get_text(r, 0, &t, &len, &err), &err);
    CHECK_EQ(len, 6);
    CHECK(memcmp(t, "12\0abc", 6) == 0);
    double d = -1;
    CHECK_EQ(dbs_rows_get_int64(r, 0, &i, &err), DBS_ETYPE);
    CHECK_EQ(dbs_rows_get_double(r, 0, &d, &err), DBS_ETYPE);
    dbs_rows_close(r);
}

/* The edges of the number and instant accessors, with values of the
 * test's own: every whitespace strtod would skip is leading space ('\r2'
 * as much as ' 2'); a long number is still a number (a DECIMAL of wide
 * scale); an integer or text instant outside years 0001..9999 (UTC) is no
 * timestamp, as dbs_timestamp_format and DBS_TIMESTAMP say. */
static void test_number_time_edges(dbs_session *s)
{
    dbs_error err;
    static const char *const spaced[] = {"\r2", "\v2", "\f2", "\n2", "\t2", " 2"};
    for (size_t k = 0; k < sizeof spaced / sizeof spaced[0]; k++) {
        dbs_value v[] = {DBS_TEXT(spaced[k])};
        dbs_rows *r = query_ok(s, "SELECT $1 AS t", v, 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        double d = -1;
        int rc = dbs_rows_get_double(r, 0, &d, &err);
        if (rc != DBS_ETYPE)
            CHECK_FAIL("get_double of whitespace 0x%02x then '2': %d (%g), not DBS_ETYPE",
                       (unsigned)spaced[k][0], rc, d);
        CHECK(d == -1);
        dbs_rows_close(r);
    }

    /* "1." and 700 zeros: one, however many digits spell it */
    char wide[800] = "1.";
    memset(wide + 2, '0', 700);
    wide[702] = '\0';
    dbs_value w[] = {DBS_TEXT(wide)};
    dbs_rows *r = query_ok(s, "SELECT $1 AS t", w, 1);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    double d = -1;
    CHECK_OK(dbs_rows_get_double(r, 0, &d, &err), &err);
    CHECK(d == 1.0);
    int64_t i = -1;
    CHECK_OK(dbs_rows_get_int64(r, 0, &i, &err), &err);
    CHECK_EQ(i, 1);
    dbs_rows_close(r);

    /* seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, and one
     * past each; the extremes of int64_t */
    static const int64_t secs[] = {-62135596800LL, 253402300799LL, -62135596801LL,
                                   253402300800LL, INT64_MIN, INT64_MAX};
    for (size_t k = 0; k < sizeof secs / sizeof secs[0]; k++) {
        dbs_value v[] = {DBS_INT(secs[k])};
        r = query_ok(s, "SELECT $1 AS t", v, 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        struct timespec ts = {.tv_sec = 7, .tv_nsec = 7};
        int rc = dbs_rows_get_timestamp(r, 0, &ts, &err);
        if (k < 2) {
            CHECK_OK(rc, &err);
            CHECK(ts.tv_sec == (time_t)secs[k] && ts.tv_nsec == 0);
            char out[DBS_TIMESTAMP_TEXT_LEN];
            CHECK_EQ(dbs_timestamp_format(ts, out), 27);
        } else {
            if (rc != DBS_ETYPE)
                CHECK_FAIL("get_timestamp of %" PRId64 " s: %d, not DBS_ETYPE", secs[k], rc);
            CHECK(ts.tv_sec == 7 && ts.tv_nsec == 7); /* untouched */
            CHECK_CONTAINS(err.message, "0001");
        }
        dbs_rows_close(r);
    }
    /* text whose zone puts the instant in year 0 */
    dbs_value y0[] = {DBS_TEXT("0001-01-01T00:30:00+01:00")};
    r = query_ok(s, "SELECT $1 AS t", y0, 1);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_get_timestamp(r, 0, &(struct timespec){0}, &err), DBS_ETYPE);
    dbs_rows_close(r);

    if (backend == DBS_BACKEND_POSTGRESQL) {
        /* a timestamp is no number, 'infinity' included */
        r = query_ok(s, "SELECT 'infinity'::timestamptz AS t, 1::numeric(1000,600) AS n",
                     NULL, 0);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        d = -1;
        CHECK_EQ(dbs_rows_get_double(r, 0, &d, &err), DBS_ETYPE);
        CHECK(d == -1);
        CHECK_OK(dbs_rows_get_double(r, 1, &d, &err), &err);
        CHECK(d == 1.0);
        dbs_rows_close(r);
    }
}

/* Runs sql both ways a program can, and check(rows) on each: through
 * dbs_query on s, and as an event-loop unit (its rows read in the
 * callback: on SQLite and MariaDB a copy a worker made, on PostgreSQL the
 * loop's own). */
typedef void (*rows_check)(dbs_rows *r);
typedef struct unit_run {
    rows_check check;
    int rc;
    char msg[sizeof(((dbs_error *)0)->message)];
} unit_run;

static void unit_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    unit_run *ur = arg;
    ur->rc = rc;
    snprintf(ur->msg, sizeof ur->msg, "%s", err->message);
    if (rc == DBS_OK)
        ur->check(dbs_unit_rows(u, 0));
}

static void both_paths(dbs_session *s, const char *sql, const dbs_value *v, size_t n,
                       rows_check check)
{
    dbs_rows *r = query_ok(s, sql, v, n);
    check(r);
    dbs_rows_close(r);

    dbs_error err;
    dbs_loop *l = dbs_loop_open(pool, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK_OK(dbs_unit_add(u, sql, v, n, &err) >= 0 ? DBS_OK : err.code, &err);
    unit_run ur = {.check = check, .rc = 1};
    CHECK_OK(dbs_unit_submit(u, unit_done, &ur, &err), &err);
    while (dbs_loop_pending(l) > 0) {
        struct pollfd pf = {.fd = dbs_loop_fd(l), .events = POLLIN};
        (void)poll(&pf, 1, dbs_loop_timeout_ms(l));
        CHECK(dbs_loop_run(l) >= 0);
    }
    if (ur.rc != DBS_OK)
        CHECK_FAIL("unit %s: rc %d: %s", sql, ur.rc, ur.msg);
    dbs_loop_close(l);
}

static void check_cut(dbs_rows *r)
{
    dbs_error err;
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    static const int64_t want[] = {INT64_MAX, INT64_MIN, INT64_MAX, INT64_MAX,
                                   INT64_MIN, INT64_MAX, INT64_MIN};
    for (int c = 0; c < 7; c++) {
        int64_t got = dbs_rows_int(r, c);
        if (got != want[c])
            CHECK_FAIL("dbs_rows_int of column %s: %" PRId64 ", want %" PRId64,
                       dbs_rows_name(r, c), got, want[c]);
    }
}

static void check_nan_cut(dbs_rows *r)
{
    dbs_error err;
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    for (int c = 0; c < dbs_rows_count_cols(r); c++)
        if (dbs_rows_int(r, c) != 0)
            CHECK_FAIL("dbs_rows_int of a NaN (%s): %" PRId64 ", not 0", dbs_rows_name(r, c),
                       dbs_rows_int(r, c));
}

/* The unchecked dbs_rows_int cuts a number that does not fit to the
 * nearest end of int64_t, the same on every backend: SQLite's own cut.
 * A REAL or DECIMAL beyond int64_t was cast as it was on PostgreSQL and
 * MariaDB (undefined behaviour: INT64_MIN on x86, the sign lost), and
 * PostgreSQL read 'Infinity' as 0. */
static void test_unchecked_cut(dbs_session *s)
{
    dbs_value v[] = {DBS_REAL(1e300), DBS_REAL(-1e300), DBS_REAL(9223372036854775808.0),
                     DBS_REAL(INFINITY), DBS_REAL(-INFINITY)};
    both_paths(s,
               "SELECT $1 AS a, $2 AS b, $3 AS c, "
               "CAST('99999999999999999999.5' AS DECIMAL(30,1)) AS d, "
               "CAST('-99999999999999999999.5' AS DECIMAL(30,1)) AS e, "
               "$4 AS f, $5 AS g",
               v, 5, check_cut);
    if (backend == DBS_BACKEND_SQLITE)
        return; /* SQLite stores no NaN */
    dbs_value nan[] = {DBS_REAL(NAN)};
    both_paths(s,
               backend == DBS_BACKEND_POSTGRESQL ? "SELECT $1 AS n, 'NaN'::numeric AS m"
                                                 : "SELECT $1 AS n",
               nan, 1, check_nan_cut);
}

static void check_float_spelling(dbs_rows *r)
{
    dbs_error err;
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    static const char *const text[] = {"19.99", "0.1", NULL};
    static const double num[] = {19.99, 0.1, -2.5e-7};
    for (int c = 0; c < 3; c++) {
        const char *t = NULL;
        double d = 0;
        CHECK_OK(dbs_rows_get_text(r, c, &t, NULL, &err), &err);
        CHECK_OK(dbs_rows_get_double(r, c, &d, &err), &err);
        if ((text[c] && strcmp(t, text[c]) != 0) || d != num[c] || dbs_rows_real(r, c) != num[c])
            CHECK_FAIL("column %s: text '%s', double %.17g, dbs_rows_real %.17g; want %s, %.17g",
                       dbs_rows_name(r, c), t, d, dbs_rows_real(r, c),
                       text[c] ? text[c] : "(any)", num[c]);
        /* however it is spelled, the text reads back as the same number */
        CHECK(dbs__strtod(t, NULL) == num[c]);
    }
}

/* A floating-point value reads as the database spells it, the same on
 * every backend: a DOUBLE 19.99 as "19.99" (MariaDB's text was
 * "19.989999999999998"), a single-precision 0.1 as 0.1 and "0.1", as
 * PostgreSQL's float4 reads (MariaDB's FLOAT read as 0.10000000149011612). */
static void test_float_spelling(dbs_session *s)
{
    dbs_value v[] = {DBS_REAL(19.99), DBS_REAL(0.1), DBS_REAL(-2.5e-7)};
    both_paths(s,
               backend == DBS_BACKEND_POSTGRESQL ? "SELECT $1 AS d, CAST($2 AS real) AS f, $3 AS e"
               : backend == DBS_BACKEND_MARIADB  ? "SELECT $1 AS d, CAST($2 AS FLOAT) AS f, $3 AS e"
                                                 : "SELECT $1 AS d, CAST($2 AS REAL) AS f, $3 AS e",
               v, 3, check_float_spelling);
}

/* SQLite's allocator, failed at will on this thread: installed before
 * SQLite starts, without lookaside (whose slots would serve the small
 * allocations below without asking it). */
static sqlite3_mem_methods mem_real;
static _Thread_local bool mem_fail;

static void *mem_malloc(int n)
{
    return mem_fail ? NULL : mem_real.xMalloc(n);
}

static void *mem_realloc(void *p, int n)
{
    return mem_fail ? NULL : mem_real.xRealloc(p, n);
}

static void mem_install(void)
{
    static sqlite3_mem_methods m;
    CHECK_EQ(sqlite3_config(SQLITE_CONFIG_GETMALLOC, &mem_real), SQLITE_OK);
    m = mem_real;
    m.xMalloc = mem_malloc;
    m.xRealloc = mem_realloc;
    CHECK_EQ(sqlite3_config(SQLITE_CONFIG_MALLOC, &m), SQLITE_OK);
    CHECK_EQ(sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0), SQLITE_OK);
}

/* A value that SQLite cannot turn into bytes for want of memory is
 * DBS_ENOMEM, never an empty value (the integer read as 0 bytes, DBS_OK,
 * as a PostgreSQL bytea did). SQLite leaves that row's value NULL after
 * the failed conversion: the statement run again reads it. */
static void test_blob_oom(dbs_session *s)
{
    if (backend != DBS_BACKEND_SQLITE)
        return; /* PostgreSQL's bytea: test_pg_types */
    dbs_error err;
    dbs_rows *r = query_ok(s, "SELECT 12345 AS i", NULL, 0);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    const void *b = NULL;
    size_t len = 99;
    mem_fail = true;
    int rc = dbs_rows_get_blob(r, 0, &b, &len, &err);
    mem_fail = false;
    if (rc != DBS_ENOMEM)
        CHECK_FAIL("an integer's bytes out of memory: rc %d, %zu bytes, not DBS_ENOMEM", rc, len);
    CHECK(b == NULL && len == 99);
    dbs_rows_close(r);
    r = query_ok(s, "SELECT 12345 AS i", NULL, 0);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_OK(dbs_rows_get_blob(r, 0, &b, &len, &err), &err);
    CHECK_EQ(len, 5);
    CHECK(memcmp(b, "12345", 5) == 0);
    dbs_rows_close(r);
}

/* Numbers cross the wire in the database's spelling whatever the
 * program's locale: under a decimal comma (setlocale(LC_ALL, "") with
 * LANG=de_DE.UTF-8), a REAL parameter still binds as 2.5 and a REAL or
 * numeric text still reads as 2.5, not as an error or a silent 2. */
static void test_comma_locale_numbers(dbs_pool *p)
{
    if (!test_comma_locale())
        return;
    dbs_error err;
    dbs_session *s = open_ok(p);
    dbs_value v[] = {DBS_REAL(2.5), DBS_TEXT("2.5")};
    dbs_rows *r = dbs_query(s, "SELECT $1 AS r, $2 AS t", v, 2, &err);
    if (!r)
        CHECK_FAIL("a REAL parameter under a decimal comma: %s", err.message);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    double d = 0;
    CHECK_OK(dbs_rows_get_double(r, 0, &d, &err), &err);
    if (d != 2.5 || dbs_rows_real(r, 0) != 2.5)
        CHECK_FAIL("REAL 2.5 read back under a decimal comma as %g and %g", d,
                   dbs_rows_real(r, 0));
    CHECK(strchr(dbs_rows_text(r, 0, NULL), ',') == NULL);
    d = 0;
    CHECK_OK(dbs_rows_get_double(r, 1, &d, &err), &err);
    CHECK(d == 2.5);
    CHECK(dbs_rows_real(r, 1) == 2.5);
    dbs_rows_close(r);
    CHECK_OK(dbs_rollback(s, &err), &err);
    dbs_session_close(s);
    setlocale(LC_NUMERIC, "C");
}

/* Parameters the same on every backend, with the statement cache on: a
 * counted text where the server infers a number, one statement bound with
 * different types, a count mismatch that writes nothing, a NaN that is
 * never stored as NULL. Own session: PostgreSQL's refusals abort it. */
static void test_params(dbs_pool *p)
{
    dbs_error err;
    dbs_session *s = open_ok(p);
    dbs_value tn[] = {DBS_TEXTN("1234", 4)};
    CHECK_EQ(query_int(s, "SELECT $1 + 0", tn, 1), 1234);
    dbs_value tz[] = {DBS_TEXTN("12.50xyz", 5)};
    dbs_rows *r = query_ok(s, "SELECT $1 + 0.0", tz, 1);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK(dbs_rows_real(r, 0) == 12.5);
    dbs_rows_close(r);

    /* The same text with an integer, then text, then an integer again. */
    const char *echo = "SELECT $1 AS echo";
    for (int k = 0; k < 2; k++) {
        dbs_value vi[] = {DBS_INT(5 + k)};
        r = query_ok(s, echo, vi, 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        int64_t i;
        CHECK_OK(dbs_rows_get_int64(r, 0, &i, &err), &err);
        CHECK_EQ(i, 5 + k);
        dbs_rows_close(r);
        dbs_value vt[] = {DBS_TEXT("abc")};
        r = query_ok(s, echo, vt, 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_STR(dbs_rows_text(r, 0, NULL), "abc");
        CHECK_EQ(dbs_rows_type(r, 0, &err), DBS_TYPE_TEXT);
        dbs_rows_close(r);
        dbs_value vr[] = {DBS_REAL(2.5)};
        r = query_ok(s, echo, vr, 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        double d;
        CHECK_OK(dbs_rows_get_double(r, 0, &d, &err), &err);
        CHECK(d == 2.5);
        dbs_rows_close(r);
    }

    /* One parameter too many: refused, and nothing written. */
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, n) VALUES ($1, 7)", tbl);
    dbs_value two[] = {DBS_INT(900), DBS_INT(1)};
    CHECK_EQ(dbs_exec(s, sql, two, 2, &err), DBS_ESQL);
    CHECK_CONTAINS(err.message, "2 parameters given");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id = 900", tbl);
    CHECK_EQ(query_int(s, sql, NULL, 0), 0);
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, n) VALUES ($2, 7)", tbl);
    CHECK_EQ(dbs_exec(s, sql, two, 1, &err), DBS_ESQL);
    CHECK_OK(dbs_rollback(s, &err), &err);

    /* NaN comes back as NaN or is refused; never as SQL NULL. */
    dbs_value nan[] = {DBS_REAL(NAN)};
    r = dbs_query(s, "SELECT $1 AS nan", nan, 1, &err);
    if (r) {
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        double d = 0;
        CHECK_OK(dbs_rows_get_double(r, 0, &d, &err), &err);
        CHECK(d != d);
        dbs_rows_close(r);
    } else {
        CHECK(err.code == DBS_EMISUSE || err.code == DBS_ESQL);
        CHECK_CONTAINS(err.message, "NaN");
    }
    CHECK_OK(dbs_rollback(s, &err), &err);
    dbs_session_close(s);
}

static void test_col_by_name(dbs_session *s)
{
    dbs_error err;
    dbs_rows *r = query_ok(s, "SELECT 1 AS alpha, 2 AS beta", NULL, 0);
    CHECK_EQ(dbs_rows_col(r, "beta", &err), 1);
    CHECK_EQ(dbs_rows_col(r, "alpha", &err), 0);
    CHECK_EQ(dbs_rows_col(r, "BETA", &err), 1);
    CHECK_EQ(dbs_rows_col(r, "gamma", &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "\"gamma\"");
    CHECK_CONTAINS(err.message, "\"alpha\", \"beta\"");
    CHECK_EQ(dbs_rows_col(r, NULL, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int64_t v;
    CHECK_OK(dbs_rows_get_int64(r, dbs_rows_col(r, "beta", NULL), &v, &err), &err);
    CHECK_EQ(v, 2);
    dbs_rows_close(r);
}

static const unsigned char uuid_bytes[16] = {0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                             0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};
static const char uuid_text[] = "123e4567-e89b-12d3-a456-426614174000";
static const char json_text[] = "{\"a\": [1, 2]}";

static void test_roundtrip(dbs_session *s)
{
    dbs_error err;
    char sql[300];
    /* 2024-02-29T12:34:56.123456789Z; and a moment before 1970. */
    struct timespec ts = {.tv_sec = 1709210096, .tv_nsec = 123456789};
    struct timespec old = {.tv_sec = -14182940, .tv_nsec = 500000000};
    snprintf(sql, sizeof sql, "INSERT INTO %s (id, b, ts, u, j) VALUES ($1, $2, $3, $4, $5)",
             tbl);
    dbs_value v1[] = {DBS_INT(1), DBS_BOOL(1), DBS_TIMESTAMP(ts), DBS_UUID(uuid_bytes),
                      DBS_JSON(json_text)};
    CHECK_OK(dbs_exec(s, sql, v1, 5, &err), &err);
    dbs_value v2[] = {DBS_INT(2), DBS_BOOL(0), DBS_TIMESTAMP(old), DBS_UUID(NULL),
                      DBS_JSONN("[true]xyz", 6)};
    CHECK_OK(dbs_exec(s, sql, v2, 5, &err), &err);
    dbs_value v3[] = {DBS_INT(3), DBS_NULL, DBS_NULL, DBS_NULL, DBS_JSON(NULL)};
    CHECK_OK(dbs_exec(s, sql, v3, 5, &err), &err);

    if (backend == DBS_BACKEND_POSTGRESQL) /* timestamptz comes back in the session's zone */
        exec_ok(s, "SET TIME ZONE 'Asia/Kolkata'");

    snprintf(sql, sizeof sql, "SELECT id, b, ts, u, j FROM %s ORDER BY id", tbl);
    dbs_rows *r = query_ok(s, sql, NULL, 0);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int b = -1;
    CHECK_OK(dbs_rows_get_bool(r, 1, &b, &err), &err);
    CHECK_EQ(b, 1);
    struct timespec got;
    CHECK_OK(dbs_rows_get_timestamp(r, 2, &got, &err), &err);
    CHECK_EQ(got.tv_sec, ts.tv_sec);
    CHECK_EQ(got.tv_nsec, 123456000); /* microseconds */
    char iso[DBS_TIMESTAMP_TEXT_LEN];
    CHECK_EQ(dbs_timestamp_format(got, iso), 27);
    CHECK_STR(iso, "2024-02-29T12:34:56.123456Z");
    unsigned char u[16];
    CHECK_OK(dbs_rows_get_uuid(r, 3, u, &err), &err);
    CHECK(memcmp(u, uuid_bytes, 16) == 0);
    const char *t;
    size_t len;
    CHECK_OK(dbs_rows_get_text(r, 3, &t, &len, &err), &err);
    CHECK_STR(t, uuid_text);
    CHECK_OK(dbs_rows_get_text(r, 4, &t, &len, &err), &err);
    CHECK_STR(t, json_text);

    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_OK(dbs_rows_get_bool(r, 1, &b, &err), &err);
    CHECK_EQ(b, 0);
    CHECK_OK(dbs_rows_get_timestamp(r, 2, &got, &err), &err);
    CHECK_EQ(got.tv_sec, old.tv_sec);
    CHECK_EQ(got.tv_nsec, old.tv_nsec);
    CHECK_EQ(dbs_rows_get_uuid(r, 3, u, &err), DBS_ENULL);
    CHECK_OK(dbs_rows_get_text(r, 4, &t, &len, &err), &err);
    CHECK_STR(t, "[true]");

    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_get_bool(r, 1, &b, &err), DBS_ENULL);
    CHECK_EQ(dbs_rows_get_timestamp(r, 2, &got, &err), DBS_ENULL);
    CHECK_EQ(dbs_rows_get_text(r, 4, &t, &len, &err), DBS_ENULL);
    CHECK_EQ(dbs_rows_next(r, &err), 0);
    dbs_rows_close(r);

    /* The server sees typed values: a boolean filter, a UUID and a
     * timestamp compared as such. */
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE b = $1 AND u = $2 AND ts = $3", tbl);
    dbs_value w[] = {DBS_BOOL(1), DBS_UUID(uuid_bytes), DBS_TIMESTAMP(ts)};
    CHECK_EQ(query_int(s, sql, w, 3), 1);

    if (backend == DBS_BACKEND_POSTGRESQL) {
        /* timestamptz, uuid, jsonb: the server's own types. */
        snprintf(sql, sizeof sql,
                 "SELECT extract(epoch FROM ts)::bigint, u::text, j->'a'->>1 FROM %s WHERE id = 1",
                 tbl);
        r = query_ok(s, sql, NULL, 0);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        int64_t e;
        CHECK_OK(dbs_rows_get_int64(r, 0, &e, &err), &err);
        CHECK_EQ(e, ts.tv_sec);
        CHECK_STR(dbs_rows_text(r, 2, NULL), "2");
        dbs_rows_close(r);
        exec_ok(s, "SET TIME ZONE 'UTC'");
    }
    if (backend == DBS_BACKEND_SQLITE) {
        /* Stored as documented: ISO text, lower-case UUID text, 0/1. */
        snprintf(sql, sizeof sql,
                 "SELECT ts, u, b, unixepoch(ts), json_extract(j, '$.a[1]') FROM %s WHERE id = 1",
                 tbl);
        r = query_ok(s, sql, NULL, 0);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_STR(dbs_rows_text(r, 0, NULL), "2024-02-29T12:34:56.123456Z");
        CHECK_STR(dbs_rows_text(r, 1, NULL), uuid_text);
        CHECK_EQ(dbs_rows_int(r, 2), 1);
        CHECK_EQ(dbs_rows_int(r, 3), ts.tv_sec);
        CHECK_EQ(dbs_rows_int(r, 4), 2);
        dbs_rows_close(r);
    }
    if (backend == DBS_BACKEND_MARIADB) {
        snprintf(sql, sizeof sql,
                 "SELECT CAST(ts AS CHAR), JSON_EXTRACT(j, '$.a[1]') FROM %s WHERE id = 1", tbl);
        r = query_ok(s, sql, NULL, 0);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_STR(dbs_rows_text(r, 0, NULL), "2024-02-29 12:34:56.123456");
        CHECK_STR(dbs_rows_text(r, 1, NULL), "2");
        dbs_rows_close(r);
    }

    /* Bad parameters: refused before anything is sent. */
    struct timespec bad = {.tv_sec = 0, .tv_nsec = 1000000000};
    dbs_value bv[] = {DBS_TIMESTAMP(bad)};
    CHECK_EQ(dbs_exec(s, "SELECT $1", bv, 1, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "timestamp out of range");
    dbs_value bu[] = {{.type = DBS_TYPE_UUID, .b = {uuid_text, 36}}};
    CHECK_EQ(dbs_exec(s, "SELECT $1", bu, 1, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "dbs_uuid_parse");
    dbs_value bd[] = {{.type = DBS_TYPE_DECIMAL, .b = {"1.5", SIZE_MAX}}};
    CHECK_EQ(dbs_exec(s, "SELECT $1", bd, 1, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "DBS_TEXT");
}

static void test_types(dbs_session *s)
{
    dbs_error err;
    char sql[300];
    snprintf(sql, sizeof sql, "UPDATE %s SET d = $1, dd = $2 WHERE id = 1", tbl);
    dbs_value dv[] = {DBS_TEXT("12.50"), DBS_TEXT("2024-02-29")};
    CHECK_OK(dbs_exec(s, sql, dv, 2, &err), &err);
    snprintf(sql, sizeof sql, "SELECT id, b, ts, u, j, n, s, bl, d, dd FROM %s ORDER BY id", tbl);
    dbs_rows *r = query_ok(s, sql, NULL, 0);
    CHECK_EQ(dbs_rows_type(r, 0, &err), DBS_TYPE_INT);
    /* MariaDB's BOOLEAN is TINYINT(1), which the protocol cannot tell. */
    CHECK_EQ(dbs_rows_type(r, 1, &err),
             backend == DBS_BACKEND_MARIADB ? DBS_TYPE_INT : DBS_TYPE_BOOL);
    CHECK_EQ(dbs_rows_type(r, 2, &err), DBS_TYPE_TIMESTAMP);
    CHECK_EQ(dbs_rows_type(r, 3, &err), DBS_TYPE_UUID);
    CHECK_EQ(dbs_rows_type(r, 4, &err), DBS_TYPE_JSON);
    CHECK_EQ(dbs_rows_type(r, 5, &err), DBS_TYPE_INT);
    CHECK_EQ(dbs_rows_type(r, 6, &err), DBS_TYPE_TEXT);
    CHECK_EQ(dbs_rows_type(r, 7, &err), DBS_TYPE_BLOB);
    CHECK_EQ(dbs_rows_type(r, 8, &err), DBS_TYPE_DECIMAL);
    CHECK_EQ(dbs_rows_type(r, 9, &err), DBS_TYPE_TEXT);
    CHECK_EQ(dbs_rows_type(r, 10, &err), DBS_EMISUSE);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    int64_t i;
    double d;
    CHECK_EQ(dbs_rows_get_int64(r, 8, &i, &err), DBS_ETYPE); /* 12.50 */
    CHECK_OK(dbs_rows_get_double(r, 8, &d, &err), &err);
    CHECK(d == 12.5);
    struct timespec day;
    CHECK_OK(dbs_rows_get_timestamp(r, 9, &day, &err), &err); /* a DATE: midnight UTC */
    CHECK_EQ(day.tv_sec, 1709164800);
    dbs_rows_close(r);

    r = query_ok(s, "SELECT 1.5 AS x, 'a' AS y", NULL, 0);
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    CHECK_EQ(dbs_rows_type(r, 0, &err),
             backend == DBS_BACKEND_SQLITE ? DBS_TYPE_REAL : DBS_TYPE_DECIMAL);
    CHECK_EQ(dbs_rows_type(r, 1, &err), DBS_TYPE_TEXT);
    dbs_rows_close(r);
}

/* INSERT ... RETURNING on every backend, and each one's own way. */
static void test_generated_key(dbs_session *s)
{
    dbs_error err;
    char sql[300];
    snprintf(sql, sizeof sql, "INSERT INTO %s (n) VALUES ($1) RETURNING id", tbl);
    int64_t ids[2];
    for (int k = 0; k < 2; k++) {
        dbs_value v[] = {DBS_INT(100 + k)};
        dbs_rows *r = query_ok(s, sql, v, 1);
        CHECK_EQ(dbs_rows_next(r, &err), 1);
        CHECK_OK(dbs_rows_get_int64(r, 0, &ids[k], &err), &err);
        CHECK_EQ(dbs_rows_next(r, &err), 0);
        dbs_rows_close(r);
    }
    CHECK(ids[0] > 3);
    CHECK(ids[1] > ids[0]);
    snprintf(sql, sizeof sql, "SELECT n FROM %s WHERE id = $1", tbl);
    dbs_value v[] = {DBS_INT(ids[1])};
    CHECK_EQ(query_int(s, sql, v, 1), 101);
    /* A statement without columns: every column is out of range. */
    snprintf(sql, sizeof sql, "UPDATE %s SET n = n WHERE id = -1", tbl);
    dbs_rows *r = query_ok(s, sql, NULL, 0);
    int64_t x;
    CHECK_EQ(dbs_rows_count_cols(r), 0);
    CHECK_EQ(dbs_rows_get_int64(r, 0, &x, &err), DBS_EMISUSE);
    CHECK_CONTAINS(err.message, "no columns");
    dbs_rows_close(r);
    if (backend == DBS_BACKEND_MARIADB)
        CHECK_EQ(query_int(s, "SELECT LAST_INSERT_ID()", NULL, 0), ids[1]);
    if (backend == DBS_BACKEND_SQLITE)
        CHECK_EQ(query_int(s, "SELECT last_insert_rowid()", NULL, 0), ids[1]);
}

static void check_blob_stays_blob(dbs_rows *r)
{
    dbs_error err;
    CHECK_EQ(dbs_rows_next(r, &err), 1);
    size_t n = 0;
    CHECK(dbs_rows_text(r, 0, &n) != NULL); /* the unchecked read, as text */
    const void *b = NULL;
    CHECK_OK(dbs_rows_get_blob(r, 0, &b, &n, &err), &err);
    CHECK_EQ(n, 2);
    CHECK(memcmp(b, "12", 2) == 0);
    CHECK_EQ(dbs_rows_type(r, 0, &err), DBS_TYPE_BLOB);
    const char *t = NULL;
    int rc = dbs_rows_get_text(r, 0, &t, &n, &err);
    if (rc != DBS_ETYPE)
        CHECK_FAIL("dbs_rows_get_text of a BLOB after dbs_rows_text: %d, not DBS_ETYPE", rc);
    int64_t i = -1;
    CHECK_EQ(dbs_rows_get_int64(r, 0, &i, &err), DBS_ETYPE);
    CHECK_EQ(i, -1);
}

/* A value reads as what it is however it was read before: a BLOB read
 * with dbs_rows_text stays a BLOB for dbs_rows_type and the checked
 * accessors (on SQLite, whose sqlite3_column_type is undefined after a
 * conversion, it turned into text: dbs_rows_get_text then gave the bytes
 * and dbs_rows_get_int64 of the bytes "12" gave 12). */
static void test_blob_after_text(dbs_session *s)
{
    dbs_value v[] = {DBS_BLOB("12", 2)};
    both_paths(s, "SELECT $1 AS b", v, 1, check_blob_stays_blob);
}

static void test_text_helpers(void)
{
    dbs_error err;
    struct timespec t;
    CHECK_OK(dbs_timestamp_parse("2024-02-29T12:34:56.123456789Z", SIZE_MAX, &t, &err), &err);
    CHECK_EQ(t.tv_sec, 1709210096);
    CHECK_EQ(t.tv_nsec, 123456789);
    CHECK_OK(dbs_timestamp_parse("2024-02-29 18:04:56.5+05:30", SIZE_MAX, &t, &err), &err);
    CHECK_EQ(t.tv_sec, 1709210096);
    CHECK_EQ(t.tv_nsec, 500000000);
    CHECK_OK(dbs_timestamp_parse("2024-02-29 07:34:56-05", SIZE_MAX, &t, &err), &err);
    CHECK_EQ(t.tv_sec, 1709210096);
    CHECK_OK(dbs_timestamp_parse("1970-01-01", SIZE_MAX, &t, &err), &err);
    CHECK_EQ(t.tv_sec, 0);
    CHECK_OK(dbs_timestamp_parse("1969-12-31T23:59:59Zjunk", 20, &t, &err), &err);
    CHECK_EQ(t.tv_sec, -1);
    CHECK_EQ(dbs_timestamp_parse("2023-02-29", SIZE_MAX, &t, &err), DBS_ETYPE);
    CHECK_CONTAINS(err.message, "day");
    CHECK_EQ(dbs_timestamp_parse("infinity", SIZE_MAX, &t, &err), DBS_ETYPE);
    CHECK_EQ(dbs_timestamp_parse("0044-03-15 00:00:00+00 BC", SIZE_MAX, &t, &err), DBS_ETYPE);
    CHECK_CONTAINS(err.message, "BC");
    CHECK_EQ(dbs_timestamp_parse(NULL, 0, &t, &err), DBS_EMISUSE);
    char iso[DBS_TIMESTAMP_TEXT_LEN];
    CHECK_EQ(dbs_timestamp_format((struct timespec){.tv_sec = -62135596801, .tv_nsec = 0}, iso),
             DBS_EMISUSE); /* year 0 */
    CHECK_STR(iso, "");
    CHECK_EQ(dbs_timestamp_format((struct timespec){.tv_sec = -62135596800, .tv_nsec = 0}, iso),
             27);
    CHECK_STR(iso, "0001-01-01T00:00:00.000000Z");

    unsigned char u[16];
    CHECK_OK(dbs_uuid_parse(uuid_text, SIZE_MAX, u, &err), &err);
    CHECK(memcmp(u, uuid_bytes, 16) == 0);
    CHECK_OK(dbs_uuid_parse("{123E4567E89B12D3A456426614174000}", SIZE_MAX, u, &err), &err);
    CHECK(memcmp(u, uuid_bytes, 16) == 0);
    CHECK_EQ(dbs_uuid_parse("123e4567-e89b-12d3-a456-42661417400g", SIZE_MAX, u, &err),
             DBS_ETYPE);
    CHECK_EQ(dbs_uuid_parse("123e4567", SIZE_MAX, u, &err), DBS_ETYPE);
    CHECK_CONTAINS(err.message, "8 characters");
    char out[37];
    dbs_uuid_format(uuid_bytes, out);
    CHECK_STR(out, uuid_text);
}

/* Text whose zone moves it past the calendar that dbs_timestamp_format
 * and DBS_TIMESTAMP take is refused as dbs_rows_get_timestamp refuses it:
 * accepting it handed the caller an instant nothing else would take. */
static void test_parse_range(void)
{
    dbs_error err;
    struct timespec t;
    char iso[DBS_TIMESTAMP_TEXT_LEN];
    CHECK_OK(dbs_timestamp_parse("0001-01-01T00:00:00Z", SIZE_MAX, &t, &err), &err);
    CHECK_EQ(t.tv_sec, -62135596800);
    CHECK_EQ(dbs_timestamp_format(t, iso), 27);
    CHECK_OK(dbs_timestamp_parse("9999-12-31T23:59:59.999999999Z", SIZE_MAX, &t, &err), &err);
    CHECK_EQ(t.tv_sec, 253402300799);
    CHECK_EQ(t.tv_nsec, 999999999);
    CHECK_EQ(dbs_timestamp_format(t, iso), 27);
    CHECK_OK(dbs_timestamp_parse("0001-01-01T00:00:00-15:00", SIZE_MAX, &t, &err), &err);
    CHECK_OK(dbs_timestamp_parse("9999-12-31T23:59:59+15:00", SIZE_MAX, &t, &err), &err);
    static const char *const past[] = {
        "0001-01-01T00:00:00+00:01", "0001-01-01T00:00:00+00:00:01", "0001-01-01+01",
        "9999-12-31T23:59:59-00:01", "9999-12-31T23:59:60Z", "9999-12-31T23:59:59-0001",
    };
    for (size_t i = 0; i < sizeof past / sizeof past[0]; i++) {
        CHECK_EQ(dbs_timestamp_parse(past[i], SIZE_MAX, &t, &err), DBS_ETYPE);
        CHECK_EQ(err.code, DBS_ETYPE);
        CHECK_CONTAINS(err.message, "0001");
        CHECK_CONTAINS(err.message, "9999");
        CHECK_CONTAINS(err.message, "UTC");
    }
}

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 2;
    if (strncmp(test_url("values"), "sqlite:", 7) == 0)
        mem_install(); /* before SQLite starts */
    pool = open_pool("values", &cfg);
    backend = dbs_pool_backend(pool);
    CHECK_EQ(backend, test_is_mysql(cfg.url)  ? DBS_BACKEND_MARIADB
                      : test_is_pg(cfg.url) ? DBS_BACKEND_POSTGRESQL
                                            : DBS_BACKEND_SQLITE);
    CHECK_EQ(dbs_pool_backend(NULL), DBS_BACKEND_UNKNOWN);

    snprintf(tbl, sizeof tbl, "%s", table_name("vals"));
    char sql[400];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", tbl);
    run_sql(pool, sql);
    switch (backend) {
    case DBS_BACKEND_POSTGRESQL:
        snprintf(sql, sizeof sql,
                 "CREATE TABLE %s (id BIGINT GENERATED BY DEFAULT AS IDENTITY (START 10) "
                 "PRIMARY KEY, b BOOLEAN, ts TIMESTAMPTZ, u UUID, j JSONB, n BIGINT, s TEXT, "
                 "bl BYTEA, d DECIMAL(10,2), dd DATE)", tbl);
        break;
    case DBS_BACKEND_MARIADB:
        snprintf(sql, sizeof sql,
                 "CREATE TABLE %s (id BIGINT AUTO_INCREMENT PRIMARY KEY, b BOOLEAN, "
                 "ts DATETIME(6), u UUID, j JSON, n BIGINT, s TEXT, bl BLOB, d DECIMAL(10,2), "
                 "dd DATE) AUTO_INCREMENT = 10",
                 tbl);
        break;
    default:
        snprintf(sql, sizeof sql,
                 "CREATE TABLE %s (id INTEGER PRIMARY KEY, b BOOLEAN, ts TIMESTAMP, u UUID, "
                 "j JSON, n BIGINT, s TEXT, bl BLOB, d DECIMAL(10,2), dd DATE)", tbl);
        break;
    }
    run_sql(pool, sql);

    test_text_helpers();
    test_parse_range();
    dbs_error err;
    dbs_session *s = open_ok(pool);
    test_checked_errors(s);
    test_int_text_exact(s);
    test_number_time_edges(s);
    test_unchecked_cut(s);
    test_float_spelling(s);
    test_blob_oom(s);
    test_col_by_name(s);
    test_roundtrip(s);
    test_types(s);
    test_generated_key(s);
    test_blob_after_text(s);
    CHECK_OK(dbs_commit(s, &err), &err);
    dbs_session_close(s);
    test_params(pool);
    test_comma_locale_numbers(pool);

    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    run_sql(pool, sql);
    dbs_pool_close(pool);
    puts("test_values: ok");
    return 0;
}
