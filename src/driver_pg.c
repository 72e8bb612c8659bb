/*
 * PostgreSQL backend on libpq.
 *
 * Round trips. begin() sends nothing. Every statement goes out in pipeline
 * mode as one batch: [ROLLBACK owed] [BEGIN, set_config(...) for each
 * context setting] [Parse of a statement new to the cache] Bind/Execute,
 * Sync. So the first statement of a transaction costs one round trip with
 * its BEGIN and context, every later one costs one, COMMIT one: N + 1.
 *
 * Reset. A session is "dirty" once it ran anything that may change session
 * state (decided conservatively from the SQL text, plus anything done through
 * native()). A clean session's release costs nothing beyond its ROLLBACK (if
 * it had a transaction open). A dirty session's ROLLBACK is owed rather than
 * sent, and release sends ROLLBACK and the reset statements in one simple
 * query: one round trip in all. The reset keeps our prepared statements
 * unless the user PREPAREd something (then DEALLOCATE ALL, cache dropped).
 *
 * Locking: none. driver.h guarantees one thread at a time per connection.
 */
#include "internal.h"

#include <libpq-fe.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PG_OID_BOOL 16
#define PG_OID_BYTEA 17
#define PG_OID_INT8 20
#define PG_OID_FLOAT8 701

typedef struct pg_stmt {
    char *sql; /* NULL = free slot */
    char name[24];
    uint64_t last_use;
    bool may_change; /* may_change_session(sql), worked out once */
} pg_stmt;

typedef struct pg_conn {
    PGconn *pg;
    const dbs__target *t;
    bool broken;
    bool dirty;         /* session state may have changed since reset */
    bool user_prepared; /* the user PREPAREd: reset must DEALLOCATE ALL */
    bool begin_pending; /* begin() called, BEGIN not yet sent */
    bool tx_sent;       /* BEGIN sent: a transaction is open server-side */
    bool rollback_owed; /* a dirty session's ROLLBACK, sent with the next
                           batch or the reset */
    bool read_only;     /* transactions begin READ ONLY (set_read_only) */
    const dbs_context *ctx;
    pg_stmt *cache;
    int cache_n;
    uint64_t tick, next_name;
    char password[128]; /* only to scrub it out of libpq's messages */
} pg_conn;

typedef struct pg_rows {
    dbs_rows base;
    PGresult *res;
    int row, nrows, ncols;
    unsigned char *blob; /* decoded bytea of the last get_blob */
} pg_rows;

static const dbs__rows_ops pg_rows_ops;

/* ---- errors ---- */

/* Replaces every occurrence of the password in msg by "***". */
static void scrub(const pg_conn *c, char *msg, size_t cap)
{
    size_t pl = strlen(c->password);
    if (pl == 0)
        return;
    char *p;
    while ((p = strstr(msg, c->password)) != NULL) {
        size_t tail = strlen(p + pl);
        if ((size_t)(p - msg) + 3 + tail + 1 > cap)
            tail = cap - (size_t)(p - msg) - 4;
        memmove(p + 3, p + pl, tail);
        p[3 + tail] = '\0';
        memcpy(p, "***", 3);
    }
}

/* libpq's messages end in newlines and may span lines: one line for logs. */
static void chomp(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

static int conn_lost(pg_conn *c, dbs_error *err, const char *what)
{
    char m[400];
    snprintf(m, sizeof m, "%s", PQerrorMessage(c->pg));
    chomp(m);
    scrub(c, m, sizeof m);
    c->broken = true;
    return dbs__err(err, DBS_ECONNECT,
                    "postgresql: connection lost during %s: %s", what,
                    m[0] ? m : "server closed the connection");
}

/* Maps a failed result to a dbs_code by SQLSTATE and fills err. */
static int result_err(pg_conn *c, const PGresult *r, dbs_error *err)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char m[400];
    snprintf(m, sizeof m, "%s",
             r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg));
    chomp(m);
    scrub(c, m, sizeof m);
    int code = DBS_ESQL;
    if (st && (!strcmp(st, "40001") || !strcmp(st, "40P01")))
        code = DBS_ERETRYABLE;
    else if (st && !strncmp(st, "23", 2))
        code = DBS_ECONSTRAINT;
    /* 08P01 is also what a Bind with the wrong parameter count gets, on a
     * connection that is fine: only a lost connection makes it ECONNECT. */
    else if (st && !strcmp(st, "08P01") && PQstatus(c->pg) == CONNECTION_OK)
        code = DBS_ESQL;
    else if ((st && (!strncmp(st, "08", 2) || !strcmp(st, "57P01") ||
                     !strcmp(st, "57P02") || !strcmp(st, "57P03"))) ||
             PQstatus(c->pg) != CONNECTION_OK)
        code = DBS_ECONNECT;
    /* A read-write session refused as read-only: the server is a standby
     * now (a failed-over primary); the next connect finds the writable one. */
    if (code == DBS_ECONNECT || (st && !strcmp(st, "25006") && !c->read_only))
        c->broken = true;
    dbs__err(err, code, "postgresql: %s", m[0] ? m : "statement failed");
    if (st)
        dbs__err_sqlstate(err, st);
    return code;
}

/* ---- connect ---- */

static void *pg_connect(const dbs__target *t, dbs_error *err)
{
    pg_conn *c = calloc(1, sizeof *c);
    if (!c) {
        dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        return NULL;
    }
    c->t = t;
    PQconninfoOption *opts = PQconninfoParse(t->conninfo, NULL);
    if (opts) {
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (!strcmp(o->keyword, "password") && o->val)
                snprintf(c->password, sizeof c->password, "%s", o->val);
        PQconninfoFree(opts);
    }
    c->pg = PQconnectdb(t->conninfo);
    if (!c->pg) {
        free(c);
        dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        return NULL;
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        char m[400];
        snprintf(m, sizeof m, "%s", PQerrorMessage(c->pg));
        chomp(m);
        scrub(c, m, sizeof m);
        const char *why = "cannot connect";
        if (strstr(m, "password authentication failed") ||
            strstr(m, "no password supplied"))
            why = "wrong password or user (check the user and password)";
        else if (strstr(m, "database") && strstr(m, "does not exist"))
            why = "unknown database (check the database name in the URL)";
        else if (strstr(m, "role") && strstr(m, "does not exist"))
            why = "unknown user (check the user name in the URL)";
        else if (strstr(m, "Connection refused") ||
                 strstr(m, "timeout expired") ||
                 strstr(m, "could not translate host") ||
                 strstr(m, "No route") || strstr(m, "Network is unreachable") ||
                 strstr(m, "No such file"))
            why =
                "unreachable host (check host, port and that the server runs)";
        dbs__err(err, DBS_ECONNECT, "postgresql: %s: %s", why, m);
        PQfinish(c->pg);
        free(c);
        return NULL;
    }
    int cap = t->stmt_cache_size > 0 ? t->stmt_cache_size : 0;
    if (cap > 0) {
        c->cache = calloc((size_t)cap, sizeof *c->cache);
        if (!c->cache) {
            PQfinish(c->pg);
            free(c);
            dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
            return NULL;
        }
        c->cache_n = cap;
    }
    return c;
}

static void cache_clear(pg_conn *c)
{
    for (int i = 0; i < c->cache_n; i++) {
        free(c->cache[i].sql);
        c->cache[i].sql = NULL;
    }
}

static void pg_close(void *vc)
{
    pg_conn *c = vc;
    if (!c)
        return;
    cache_clear(c);
    free(c->cache);
    PQfinish(c->pg);
    free(c);
}

static int pg_is_broken(void *vc)
{
    pg_conn *c = vc;
    if (!c->broken && PQstatus(c->pg) != CONNECTION_OK)
        c->broken = true;
    return c->broken;
}

static void *pg_native(void *vc)
{
    pg_conn *c = vc;
    c->dirty = true;
    c->user_prepared = true; /* anything may have been done */
    return c->pg;
}

/* Runs a simple-protocol command string (one round trip). */
static int simple(pg_conn *c, const char *sql, const char *what, dbs_error *err)
{
    PGresult *r = PQexec(c->pg, sql);
    if (!r || PQstatus(c->pg) != CONNECTION_OK) {
        PQclear(r);
        return conn_lost(c, err, what);
    }
    int rc = DBS_OK;
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
        st != PGRES_EMPTY_QUERY)
        rc = result_err(c, r, err);
    PQclear(r);
    return rc;
}

static int pg_ping(void *vc, dbs_error *err)
{
    pg_conn *c = vc;
    return simple(c, ";", "ping", err);
}

static int pg_set_read_only(void *vc, int on, dbs_error *err)
{
    (void)err;
    ((pg_conn *)vc)->read_only = on != 0;
    return DBS_OK;
}

static int pg_begin(void *vc, const dbs_context *ctx, dbs_error *err)
{
    (void)err;
    pg_conn *c = vc;
    c->ctx = ctx;
    c->begin_pending = true;
    return DBS_OK;
}

/* ---- statements ---- */

/* Conservative: false only for statements that cannot change session state. */
static bool may_change_session(const char *sql)
{
    while (isspace((unsigned char)*sql) || *sql == '(')
        sql++;
    static const char *const safe[] = {"select", "insert", "update", "delete",
                                       "with",   "values", "table",  "merge"};
    bool ok = false;
    for (size_t i = 0; i < sizeof safe / sizeof safe[0]; i++) {
        size_t n = strlen(safe[i]);
        if (!strncasecmp(sql, safe[i], n) && !isalnum((unsigned char)sql[n]) &&
            sql[n] != '_')
            ok = true;
    }
    if (!ok)
        return true;
    /* Functions that change session state from inside a plain query. */
    static const char *const risky[] = {
        "set_config", "advisory", "listen",        "temp",   "prepare",
        "dblink",     "role",     "authorization", "cursor", "do "};
    for (size_t i = 0; i < sizeof risky / sizeof risky[0]; i++) {
        size_t n = strlen(risky[i]);
        for (const char *p = sql; *p; p++)
            if (!strncasecmp(p, risky[i], n))
                return true;
    }
    return false;
}

static bool is_user_prepare(const char *sql)
{
    while (isspace((unsigned char)*sql))
        sql++;
    return !strncasecmp(sql, "prepare", 7) || strstr(sql, "PREPARE") ||
           strstr(sql, "prepare");
}

/* Finds or assigns the cached statement for sql: *fresh = needs a Parse.
 * The SQL copy belongs to the cache entry and is freed by cache_clear or on
 * eviction; GCC 12's analyzer loses it through the entry pointer returned
 * to run() and reports a leak that is not there, hence the pragma. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
#endif
static pg_stmt *cache_get(pg_conn *c, const char *sql, bool *fresh,
                          char *evicted, size_t evicted_n)
{
    evicted[0] = '\0';
    if (c->cache_n == 0)
        return NULL;
    pg_stmt *victim = &c->cache[0];
    for (int i = 0; i < c->cache_n; i++) {
        pg_stmt *e = &c->cache[i];
        if (e->sql && !strcmp(e->sql, sql)) {
            e->last_use = ++c->tick;
            *fresh = false;
            return e;
        }
        if (!e->sql || (victim->sql && e->last_use < victim->last_use))
            victim = e;
    }
    bool may_change = may_change_session(sql);
    char *copy = strdup(sql);
    if (!copy)
        return NULL; /* fall back to an unnamed statement */
    /* The evicted statement is deallocated in the same batch; names are
     * never reused, so a DEALLOCATE skipped by an aborted batch costs some
     * server memory, never a wrong statement. */
    if (victim->sql)
        snprintf(evicted, evicted_n, "%s", victim->name);
    free(victim->sql);
    victim->sql = copy;
    snprintf(victim->name, sizeof victim->name, "dbs_%llu",
             (unsigned long long)++c->next_name);
    victim->last_use = ++c->tick;
    victim->may_change = may_change;
    *fresh = true;
    return victim;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

enum { PG_MAXP = 256 };

/* The highest $n in sql outside quotes and comments, or -1 when a dollar-
 * quoted body makes the text too hard to read this simply. The server
 * accepts parameters a statement never uses, SQLite does not: this keeps the
 * backends alike. */
static int max_param(const char *sql)
{
    int max = 0;
    for (const char *p = sql; *p; p++) {
        if (*p == '\'' || *p == '"') {
            char q = *p;
            while (p[1] && p[1] != q)
                p++;
            if (p[1])
                p++;
        } else if (p[0] == '-' && p[1] == '-') {
            while (p[1] && p[1] != '\n')
                p++;
        } else if (*p == '$') {
            if (!isdigit((unsigned char)p[1]))
                return -1;
            long v = strtol(p + 1, NULL, 10);
            if (v > max && v <= PG_MAXP)
                max = (int)v;
            while (isdigit((unsigned char)p[1]))
                p++;
        }
    }
    return max;
}

/* Sends the batch for one statement and returns its result (caller clears)
 * or NULL with err filled. */
static PGresult *run(pg_conn *c, const char *sql, const dbs_value *params,
                     size_t n, dbs_error *err)
{
    if (c->broken) {
        dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
        return NULL;
    }
    if (n > PG_MAXP) {
        dbs__err(err, DBS_EMISUSE, "postgresql: more than %d parameters",
                 PG_MAXP);
        return NULL;
    }
    int used = max_param(sql);
    if (used >= 0 && (size_t)used < n) {
        dbs__err(err, DBS_ESQL,
                 "postgresql: %zu parameters given but the statement uses $%d "
                 "at most",
                 n, used);
        return NULL;
    }
    Oid types[PG_MAXP];
    const char *vals[PG_MAXP];
    int lens[PG_MAXP], fmts[PG_MAXP];
    char nums[PG_MAXP][32];
    for (size_t i = 0; i < n; i++) {
        lens[i] = 0;
        fmts[i] = 0;
        switch (params[i].type) {
        case DBS_TYPE_INT:
            types[i] = PG_OID_INT8;
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)params[i].i);
            vals[i] = nums[i];
            break;
        case DBS_TYPE_REAL:
            types[i] = PG_OID_FLOAT8;
            snprintf(nums[i], sizeof nums[i], "%.17g", params[i].r);
            vals[i] = nums[i];
            break;
        case DBS_TYPE_TEXT:
            /* A NULL pointer is SQL NULL. A counted string goes in binary
             * format, whose text encoding is the bytes themselves, so it
             * needs no terminating NUL. */
            types[i] = 0;
            vals[i] = params[i].b.p;
            if (params[i].b.p && params[i].b.n != SIZE_MAX) {
                if (params[i].b.n > INT32_MAX) {
                    dbs__err(err, DBS_EMISUSE,
                             "postgresql: parameter $%zu too long", i + 1);
                    return NULL;
                }
                lens[i] = (int)params[i].b.n;
                fmts[i] = 1;
                vals[i] = params[i].b.n ? params[i].b.p : "";
            }
            break;
        case DBS_TYPE_BLOB:
            types[i] = PG_OID_BYTEA;
            vals[i] =
                params[i].b.p ? (params[i].b.n ? params[i].b.p : "") : NULL;
            if (params[i].b.n > INT32_MAX) {
                dbs__err(err, DBS_EMISUSE,
                         "postgresql: parameter $%zu too long", i + 1);
                return NULL;
            }
            lens[i] = (int)params[i].b.n;
            fmts[i] = 1;
            break;
        case DBS_TYPE_NULL:
            types[i] = 0;
            vals[i] = NULL;
            break;
        default:
            dbs__err(err, DBS_EMISUSE,
                     "postgresql: parameter $%zu has no valid type", i + 1);
            return NULL;
        }
    }
    if (!PQenterPipelineMode(c->pg)) {
        conn_lost(c, err, "pipeline start");
        return NULL;
    }
    int sent = 0, stmt_idx;
    bool ok = true;
    if (c->rollback_owed) {
        ok = ok &&
             PQsendQueryParams(c->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
        sent++;
        c->rollback_owed = false;
    }
    if (c->begin_pending) {
        ok = ok &&
             PQsendQueryParams(c->pg, c->read_only ? "BEGIN READ ONLY" : "BEGIN",
                               0, NULL, NULL, NULL, NULL, 0);
        sent++;
        const char *cv[3] = {c->ctx ? c->ctx->request_id : NULL,
                             c->ctx ? c->ctx->user_id : NULL,
                             c->ctx ? c->ctx->tenant_id : NULL};
        for (int i = 0; i < 3; i++) {
            if (!c->t->ctx_setting[i])
                continue;
            const char *pv[2] = {c->t->ctx_setting[i], cv[i] ? cv[i] : ""};
            ok = ok &&
                 PQsendQueryParams(c->pg, "SELECT set_config($1, $2, true)", 2,
                                   NULL, pv, NULL, NULL, 0);
            sent++;
        }
        c->begin_pending = false;
        c->tx_sent = true;
    }
    bool fresh = false;
    char evicted[24], dealloc[48];
    int parse_idx = -1;
    pg_stmt *e = cache_get(c, sql, &fresh, evicted, sizeof evicted);
    /* The keyword scan costs more than the rest of the client side of a
     * statement: once per cached statement, not once per execution. */
    bool may_change = e ? e->may_change : may_change_session(sql);
    if (may_change) {
        c->dirty = true;
        if (is_user_prepare(sql))
            c->user_prepared = true;
    }
    if (evicted[0]) {
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", evicted);
        ok = ok &&
             PQsendQueryParams(c->pg, dealloc, 0, NULL, NULL, NULL, NULL, 0);
        sent++;
    }
    if (e && fresh) {
        ok = ok && PQsendPrepare(c->pg, e->name, sql, (int)n, n ? types : NULL);
        parse_idx = sent;
        sent++;
    }
    stmt_idx = sent;
    if (e)
        ok = ok && PQsendQueryPrepared(c->pg, e->name, (int)n, n ? vals : NULL,
                                       n ? lens : NULL, n ? fmts : NULL, 0);
    else
        ok = ok && PQsendQueryParams(c->pg, sql, (int)n, n ? types : NULL,
                                     n ? vals : NULL, n ? lens : NULL,
                                     n ? fmts : NULL, 0);
    sent++;
    ok = ok && PQpipelineSync(c->pg);
    if (!ok) {
        if (e) {
            free(e->sql);
            e->sql = NULL;
        }
        conn_lost(c, err, "send");
        return NULL;
    }

    PGresult *keep = NULL, *fail = NULL;
    bool parsed = false;
    for (int i = 0; i < sent; i++) {
        PGresult *r;
        while ((r = PQgetResult(c->pg)) != NULL) {
            ExecStatusType st = PQresultStatus(r);
            if (i == parse_idx && st == PGRES_COMMAND_OK)
                parsed = true;
            if (st == PGRES_FATAL_ERROR && !fail) {
                fail = r;
                continue;
            }
            if (i == stmt_idx && !keep && st != PGRES_PIPELINE_ABORTED) {
                keep = r;
                continue;
            }
            PQclear(r);
        }
        if (PQstatus(c->pg) != CONNECTION_OK)
            break;
    }
    /* The Sync's own result ends the batch. */
    if (PQstatus(c->pg) == CONNECTION_OK) {
        PGresult *r = PQgetResult(c->pg);
        if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC)
            c->broken = true;
        PQclear(r);
    }
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK ||
        !PQexitPipelineMode(c->pg)) {
        /* Keep the server's reason (57P01 ...) when it sent one. */
        if (!fail || result_err(c, fail, err) != DBS_ECONNECT)
            conn_lost(c, err, "statement");
        c->broken = true;
        PQclear(fail);
        PQclear(keep);
        return NULL;
    }
    /* A Parse that failed, or was skipped because the batch aborted before
     * it, left no statement on the server. */
    if (e && fresh && !parsed) {
        free(e->sql);
        e->sql = NULL;
    }
    if (fail) {
        result_err(c, fail, err);
        PQclear(fail);
        PQclear(keep);
        return NULL;
    }
    if (!keep) {
        dbs__err(err, DBS_ESQL, "postgresql: no result");
        return NULL;
    }
    return keep;
}

static int64_t pg_exec(void *vc, const char *sql, const dbs_value *params,
                       size_t n, dbs_error *err)
{
    pg_conn *c = vc;
    PGresult *r = run(c, sql, params, n, err);
    if (!r)
        return err ? err->code : DBS_ESQL;
    /* Rows affected, as SQLite counts them: a SELECT changes none. */
    const char *t = PQcmdTuples(r);
    int64_t rows = t && *t && strncmp(PQcmdStatus(r), "SELECT", 6) != 0
                       ? strtoll(t, NULL, 10)
                       : 0;
    PQclear(r);
    return rows;
}

static dbs_rows *pg_query(void *vc, const char *sql, const dbs_value *params,
                          size_t n, dbs_error *err)
{
    pg_conn *c = vc;
    PGresult *r = run(c, sql, params, n, err);
    if (!r)
        return NULL;
    pg_rows *pr = calloc(1, sizeof *pr);
    if (!pr) {
        PQclear(r);
        dbs__err(err, DBS_ENOMEM, "postgresql: out of memory");
        return NULL;
    }
    pr->base.ops = &pg_rows_ops;
    pr->res = r;
    pr->row = -1;
    pr->nrows = PQntuples(r);
    pr->ncols = PQnfields(r);
    return &pr->base;
}

static int pg_commit(void *vc, dbs_error *err)
{
    pg_conn *c = vc;
    if (c->begin_pending) { /* nothing was sent: nothing to commit */
        c->begin_pending = false;
        return DBS_OK;
    }
    if (!c->tx_sent)
        return DBS_OK;
    c->tx_sent = false;
    PGresult *r = PQexec(c->pg, "COMMIT");
    if (!r || PQstatus(c->pg) != CONNECTION_OK) {
        PQclear(r);
        c->broken = true;
        return dbs__err(
            err, DBS_ECOMMIT_UNKNOWN,
            "postgresql: connection lost during COMMIT: the transaction "
            "may or may not have been committed");
    }
    int rc = DBS_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = result_err(c, r, err);
    else if (!strcmp(PQcmdStatus(r), "ROLLBACK"))
        rc = dbs__err(err, DBS_ESQL,
                      "postgresql: COMMIT rolled back: the transaction "
                      "had failed on an earlier statement");
    PQclear(r);
    return rc;
}

static int pg_rollback(void *vc, dbs_error *err)
{
    pg_conn *c = vc;
    if (c->begin_pending) {
        c->begin_pending = false;
        return DBS_OK;
    }
    if (!c->tx_sent)
        return DBS_OK;
    c->tx_sent = false;
    /* A dirty session pays for its reset anyway: send the ROLLBACK with it
     * (or with the next statement) instead of on its own. */
    if (c->dirty && c->t->reset == DBS_RESET_FULL) {
        c->rollback_owed = true;
        return DBS_OK;
    }
    return simple(c, "ROLLBACK", "ROLLBACK", err);
}

static int pg_reset(void *vc, enum dbs_reset_mode mode, dbs_error *err)
{
    pg_conn *c = vc;
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "postgresql: connection is broken");
    c->begin_pending = false;
    c->tx_sent = false;
    c->ctx = NULL;
    bool owed = c->rollback_owed || PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    c->rollback_owed = false;
    if (mode == DBS_RESET_ROLLBACK || !c->dirty)
        return owed ? simple(c, "ROLLBACK", "reset", err) : DBS_OK;
    /* Each of these is needed: RESET ALL does not undo SET SESSION
     * AUTHORIZATION's role change reliably nor close cursors, locks or temp
     * tables. DISCARD ALL would also drop our prepared statements, so it is
     * spelt out, and DEALLOCATE ALL only when the user prepared. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "%sSET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; "
             "UNLISTEN *; "
             "SELECT pg_advisory_unlock_all(); DISCARD TEMP;%s",
             owed ? "ROLLBACK; " : "",
             c->user_prepared ? " DEALLOCATE ALL;" : "");
    int rc = simple(c, sql, "reset", err);
    if (rc == DBS_OK && c->user_prepared)
        cache_clear(c);
    if (rc != DBS_OK)
        c->broken = true;
    c->dirty = false;
    c->user_prepared = false;
    return rc;
}

/* ---- rows ---- */

static int pg_next(dbs_rows *hr, dbs_error *err)
{
    (void)err;
    pg_rows *r = (pg_rows *)hr;
    if (r->row + 1 >= r->nrows) {
        r->row = r->nrows;
        return 0;
    }
    r->row++;
    return 1;
}

static int pg_count_cols(dbs_rows *hr)
{
    return ((pg_rows *)hr)->ncols;
}

static const char *pg_name(dbs_rows *hr, int col)
{
    return PQfname(((pg_rows *)hr)->res, col);
}

static bool on_row(const pg_rows *r)
{
    return r->row >= 0 && r->row < r->nrows;
}

static int pg_is_null(dbs_rows *hr, int col)
{
    pg_rows *r = (pg_rows *)hr;
    return !on_row(r) || PQgetisnull(r->res, r->row, col);
}

static int64_t pg_int(dbs_rows *hr, int col)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col))
        return 0;
    const char *v = PQgetvalue(r->res, r->row, col);
    if (PQftype(r->res, col) == PG_OID_BOOL)
        return v[0] == 't';
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end == '.' || *end == 'e' || *end == 'E')
        return (int64_t)strtod(v, NULL);
    return x;
}

static double pg_real(dbs_rows *hr, int col)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col))
        return 0.0;
    const char *v = PQgetvalue(r->res, r->row, col);
    if (PQftype(r->res, col) == PG_OID_BOOL)
        return v[0] == 't';
    return strtod(v, NULL);
}

static const char *pg_text(dbs_rows *hr, int col, size_t *len)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = (size_t)PQgetlength(r->res, r->row, col);
    return PQgetvalue(r->res, r->row, col);
}

static const void *pg_blob(dbs_rows *hr, int col, size_t *len)
{
    pg_rows *r = (pg_rows *)hr;
    if (pg_is_null(hr, col)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (PQftype(r->res, col) != PG_OID_BYTEA)
        return pg_text(hr, col, len);
    size_t n = 0;
    unsigned char *b = PQunescapeBytea(
        (const unsigned char *)PQgetvalue(r->res, r->row, col), &n);
    PQfreemem(r->blob);
    r->blob = b;
    if (len)
        *len = b ? n : 0;
    return b ? (const void *)b : (const void *)"";
}

static void pg_rows_close(dbs_rows *hr)
{
    pg_rows *r = (pg_rows *)hr;
    PQfreemem(r->blob);
    PQclear(r->res);
    free(r);
}

static const dbs__rows_ops pg_rows_ops = {
    .next = pg_next,
    .count_cols = pg_count_cols,
    .name = pg_name,
    .is_null = pg_is_null,
    .get_int = pg_int,
    .get_real = pg_real,
    .get_text = pg_text,
    .get_blob = pg_blob,
    .close = pg_rows_close,
};

const dbs__driver dbs__driver_pg = {
    .name = "postgresql",
    .target_open = NULL,
    .target_close = NULL,
    .connect = pg_connect,
    .ping = pg_ping,
    .begin = pg_begin,
    .exec = pg_exec,
    .query = pg_query,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .reset = pg_reset,
    .is_broken = pg_is_broken,
    .native = pg_native,
    .close = pg_close,
    .set_read_only = pg_set_read_only,
};
