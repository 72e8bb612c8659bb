/* Statements and their $n parameters through the public API on SQLite
 * (src/query.c's argument checks, the SQLite driver's $n mapping and its
 * rows). Input: a parameter count and types, then SQL. Checks: every call
 * returns rows or a dbs_code with a message, and a failed or odd statement
 * never leaves the session unusable: SELECT 1 works after a rollback. */
#include "dbscope.h"

#include "fuzz.h"
#include <sqlite3.h>
#include <stdbool.h>
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static dbs_pool *pool;
static dbs_session *s;
static int steps;

/* A fuzzed recursive query can run for ever: stopped after a budget. */
static int progress(void *arg)
{
    (void)arg;
    return ++steps > 200;
}

static void setup(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite::memory:";
    cfg.metrics = 0;
    dbs_error err;
    pool = dbs_pool_open(&cfg, &err);
    CHECK(pool);
    s = dbs_session_open(pool, NULL, &err);
    CHECK(s);
    CHECK(dbs_exec(s, "CREATE TABLE t (a, b, c)", NULL, 0, &err) >= 0);
    CHECK(dbs_commit(s, &err) == DBS_OK);
    sqlite3 *db = dbs_session_native(s);
    sqlite3_progress_handler(db, 1000, progress, NULL);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1 << 20);
}

/* Statements that reach outside the database (files, extensions) are not
 * the scanner's business: skipped. */
static bool harmless(const char *sql)
{
    static const char *const bad[] = {"attach", "vacuum", "pragma", "load_extension", "detach",
                                      "readfile", "writefile", "edit("};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        for (const char *p = sql; *p; p++)
            if (!strncasecmp(p, bad[i], strlen(bad[i])))
                return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pool)
        setup();
    if (size < 2 || size > 2000)
        return 0;
    size_t n = data[0] % 9;
    if (size < 1 + n)
        return 0;
    dbs_value params[8];
    static const char blob[] = {0, 1, 2, 3};
    for (size_t i = 0; i < n; i++) {
        switch (data[1 + i] % 5) {
        case 0: params[i] = DBS_NULL; break;
        case 1: params[i] = DBS_INT((int64_t)data[1 + i] * 1000003 - 7); break;
        case 2: params[i] = DBS_REAL(data[1 + i] / 3.0); break;
        case 3: params[i] = DBS_TEXT("p'\"$1"); break;
        default: params[i] = DBS_BLOB(blob, sizeof blob); break;
        }
    }
    size_t len = size - 1 - n;
    char *sql = malloc(len + 1);
    memcpy(sql, data + 1 + n, len);
    sql[len] = '\0';
    steps = 0;
    if (harmless(sql)) {
        dbs_error err;
        dbs_rows *r = dbs_query(s, sql, params, n, &err);
        if (!r) {
            CHECK(err.code < 0 && err.message[0]);
        } else {
            int rc, rows = 0;
            while ((rc = dbs_rows_next(r, &err)) == 1 && rows++ < 100) {
                int cols = dbs_rows_count_cols(r);
                for (int c = 0; c < cols; c++) {
                    size_t tl;
                    (void)dbs_rows_text(r, c, &tl);
                    (void)dbs_rows_name(r, c);
                }
                CHECK(dbs_rows_text(r, cols, NULL) == NULL);
            }
            CHECK(rc >= -12 && rc <= 1);
            dbs_rows_close(r);
        }
        dbs_rollback(s, &err);
        dbs_rows *one = dbs_query(s, "SELECT 1", NULL, 0, &err);
        CHECK(one);
        CHECK(dbs_rows_next(one, &err) == 1 && dbs_rows_int(one, 0) == 1);
        dbs_rows_close(one);
        dbs_rollback(s, &err);
    }
    free(sql);
    return 0;
}
