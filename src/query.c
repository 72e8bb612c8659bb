/* Statements and rows: argument checks, autobegin, and the rows API over the
 * backend's rows. Parameters are always bound, never formatted into SQL. */
#include "internal.h"
#include "session_check.h"
#include "loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Whether c could start a statement text that is all blanks: most begin
 * with a keyword, and then the text need not be scanned. */
static bool blank_first(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v' || c == ';';
}

static int check_args(const char *sql, const dbs_value *params, size_t n, dbs_error *err)
{
    if (!sql)
        return dbs__err(err, DBS_EMISUSE, "sql is NULL");
    /* The same answer from every backend: PostgreSQL would run nothing
     * and report success, SQLite and MariaDB refuse it. */
    if (blank_first(sql[0]) && sql[strspn(sql, " \t\n\r\f\v;")] == '\0')
        return dbs__err(err, DBS_ESQL, "the statement is empty: its text holds nothing to run");
    if (n > 0 && !params)
        return dbs__err(err, DBS_EMISUSE, "%zu parameters announced but params is NULL", n);
    if (n > 65535)
        return dbs__err(err, DBS_EMISUSE, "%zu parameters: at most 65535", n);
    for (size_t i = 0; i < n; i++) {
        const dbs_value *v = &params[i];
        dbs__ts f;
        switch (v->type) {
        case DBS_TYPE_TEXT: case DBS_TYPE_JSON: case DBS_TYPE_BLOB:
            /* No object is larger than PTRDIFF_MAX; SIZE_MAX is a text's
             * "up to its NUL". A length past it is a caller's bug that
             * would have a backend read that far. */
            if (v->b.p && v->b.n > PTRDIFF_MAX && (v->type == DBS_TYPE_BLOB || v->b.n != SIZE_MAX))
                return dbs__err(err, DBS_EMISUSE,
                                "parameter $%zu: a length of %zu bytes is more than any "
                                "object can hold", i + 1, v->b.n);
            break;
        case DBS_TYPE_NULL: case DBS_TYPE_INT: case DBS_TYPE_REAL: case DBS_TYPE_BOOL:
            break;
        case DBS_TYPE_TIMESTAMP:
            if (dbs__ts_fields(v->ts, &f) != DBS_OK)
                return dbs__err(err, DBS_EMISUSE,
                                "parameter $%zu: timestamp out of range (tv_nsec must be "
                                "0..999999999 and the year 0001..9999)", i + 1);
            break;
        case DBS_TYPE_UUID:
            if (v->b.p && v->b.n != 16)
                return dbs__err(err, DBS_EMISUSE,
                                "parameter $%zu: a UUID is 16 bytes, not %zu (use DBS_UUID, "
                                "or dbs_uuid_parse for text)", i + 1, v->b.n);
            break;
        case DBS_TYPE_DECIMAL:
            return dbs__err(err, DBS_EMISUSE,
                            "parameter $%zu: DBS_TYPE_DECIMAL is a column type only; bind a "
                            "decimal as DBS_TEXT(\"12.50\")", i + 1);
        default:
            return dbs__err(err, DBS_EMISUSE, "parameter $%zu has unknown type %d", i + 1,
                            (int)v->type);
        }
    }
    return DBS_OK;
}

/* dbs_unit_add's check of a statement's arguments (loop.c): the same
 * rules as dbs_exec's. */
int dbs__stmt_args_check(const char *sql, const dbs_value *params, size_t n, dbs_error *err)
{
    return check_args(sql, params, n, err);
}

int64_t dbs_exec(dbs_session *s, const char *sql, const dbs_value *params, size_t n,
                 dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    dbs_error local;
    if (!err)
        err = &local;
    int rc = dbs__session_check(s, err);
    if (rc == DBS_OK)
        rc = check_args(sql, params, n, err);
    if (rc == DBS_OK)
        rc = dbs__session_autobegin(s, err);
    if (rc != DBS_OK)
        return rc;
    int64_t t0 = dbs__op_start(s);
    int64_t r = s->pool->drv->exec(s->conn->impl, sql, params, n, err);
    dbs__op_done(s, t0);
    if (r < 0)
        return dbs__session_failed(s, (int)r, err);
    err->code = DBS_OK;
    return r;
}

dbs_rows *dbs_query(dbs_session *s, const char *sql, const dbs_value *params, size_t n,
                    dbs_error *err)
{
    DBS__NO_CANCEL(cancel_old);
    dbs_error local;
    if (!err)
        err = &local;
    int rc = dbs__session_check(s, err);
    if (rc == DBS_OK)
        rc = check_args(sql, params, n, err);
    if (rc == DBS_OK)
        rc = dbs__session_autobegin(s, err);
    if (rc != DBS_OK)
        return NULL;
    int64_t t0 = dbs__op_start(s);
    dbs_rows *r = s->pool->drv->query(s->conn->impl, sql, params, n, err);
    dbs__op_done(s, t0);
    if (!r) {
        dbs__session_failed(s, err->code, err);
        return NULL;
    }
    r->session = s;
    r->magic = DBS__ROWS_MAGIC;
    r->on_row = 0;
    r->prev = NULL;
    r->next = s->rows;
    if (s->rows)
        s->rows->prev = r;
    s->rows = r;
    err->code = DBS_OK;
    return r;
}

/* Rows with no session (session NULL) are a unit's of an event loop,
 * held in memory (rows_buf.c) or by a backend: no thread owns them and no
 * session can fail under them. */
static bool owner_ok(const dbs_rows *r)
{
    return !r->session || r->session->owner_id == dbs__thread_id();
}

static bool rows_ok(const dbs_rows *r)
{
    return r && r->magic == DBS__ROWS_MAGIC && owner_ok(r);
}

static bool col_ok(dbs_rows *r, int col)
{
    return rows_ok(r) && col >= 0 && col < r->ops->count_cols(r);
}

/* Marked only: a row in hand (a buffered result, SQLite's first row)
 * reaches no cancellation point, and a backend's next that steps a
 * statement defers first itself (driver.h, dbs__rows_ops). */
int dbs_rows_next(dbs_rows *r, dbs_error *err)
{
    DBS__IN_LIB(cancel_old);
    if (!r || r->magic != DBS__ROWS_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "rows are NULL or already closed");
    int rc = r->session ? dbs__session_check(r->session, err) : DBS_OK;
    if (rc != DBS_OK)
        return rc;
    dbs_error local;
    if (!err)
        err = &local;
    rc = r->ops->next(r, err);
    r->on_row = rc == 1;
    if (rc < 0)
        return r->session ? dbs__session_failed(r->session, rc, err) : rc;
    err->code = DBS_OK;
    return rc;
}

int dbs_rows_count_cols(dbs_rows *r)
{
    return rows_ok(r) ? r->ops->count_cols(r) : 0;
}

/* A column's name for a comparison or a message: SQLite's is NULL when it
 * ran out of memory making it. */
static const char *cname(dbs_rows *r, int col)
{
    const char *n = r->ops->name(r, col);
    return n ? n : "";
}

const char *dbs_rows_name(dbs_rows *r, int col)
{
    return col_ok(r, col) ? r->ops->name(r, col) : NULL;
}

int dbs_rows_is_null(dbs_rows *r, int col)
{
    return col_ok(r, col) ? r->ops->is_null(r, col) : 1;
}

int64_t dbs_rows_int(dbs_rows *r, int col)
{
    return col_ok(r, col) ? r->ops->get_int(r, col) : 0;
}

double dbs_rows_real(dbs_rows *r, int col)
{
    return col_ok(r, col) ? r->ops->get_real(r, col) : 0.0;
}

const char *dbs_rows_text(dbs_rows *r, int col, size_t *len)
{
    if (col_ok(r, col))
        return r->ops->get_text(r, col, len);
    if (len)
        *len = 0;
    return NULL;
}

const void *dbs_rows_blob(dbs_rows *r, int col, size_t *len)
{
    if (col_ok(r, col))
        return r->ops->get_blob(r, col, len);
    if (len)
        *len = 0;
    return NULL;
}

/* ---- checked accessors ---- */

static const char *type_name(int t)
{
    switch (t) {
    case DBS_TYPE_NULL: return "NULL";
    case DBS_TYPE_INT: return "an integer";
    case DBS_TYPE_REAL: return "a floating-point number";
    case DBS_TYPE_TEXT: return "text";
    case DBS_TYPE_BLOB: return "a BLOB";
    case DBS_TYPE_BOOL: return "a boolean";
    case DBS_TYPE_TIMESTAMP: return "a timestamp";
    case DBS_TYPE_UUID: return "a UUID";
    case DBS_TYPE_JSON: return "JSON";
    case DBS_TYPE_DECIMAL: return "a decimal";
    default: return "a value";
    }
}

static int col_range(const char *fn, int col, int n, dbs_error *err)
{
    if (n == 0)
        return dbs__err(err, DBS_EMISUSE,
                        "%s: column %d is out of range: the statement returned no columns", fn,
                        col);
    return dbs__err(err, DBS_EMISUSE,
                    "%s: column %d is out of range: the result has %d column%s (0..%d)", fn, col,
                    n, n == 1 ? "" : "s", n - 1);
}

/* Checks r, col and the current row for accessor fn; returns DBS_OK or
 * DBS_EMISUSE with err filled. */
static int cell_check(dbs_rows *r, int col, const void *out, const char *fn, dbs_error *err)
{
    if (!r || r->magic != DBS__ROWS_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "%s: rows are NULL or already closed", fn);
    if (!owner_ok(r))
        return dbs__err(err, DBS_EMISUSE, "%s: rows belong to another thread's session", fn);
    int n = r->ops->count_cols(r);
    if (col < 0 || col >= n)
        return col_range(fn, col, n, err);
    if (!out)
        return dbs__err(err, DBS_EMISUSE, "%s: out is NULL", fn);
    if (!r->on_row)
        return dbs__err(err, DBS_EMISUSE,
                        "%s: no current row: call dbs_rows_next and read only after it "
                        "returned 1", fn);
    return DBS_OK;
}

static int cell_null(dbs_rows *r, int col, const char *fn, dbs_error *err)
{
    return dbs__err(err, DBS_ENULL,
                    "%s: column %d \"%s\" is NULL (test dbs_rows_is_null first, or use "
                    "COALESCE in the query)", fn, col, cname(r, col));
}

static int cell_type(dbs_rows *r, int col, int vt, const char *fn, const char *want,
                     const char *hint, dbs_error *err)
{
    return dbs__err(err, DBS_ETYPE, "%s: column %d \"%s\" holds %s that is not %s%s", fn, col,
                    cname(r, col), type_name(vt), want, hint);
}

static int ok(dbs_error *err)
{
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

int dbs_rows_get_int64(dbs_rows *r, int col, int64_t *out, dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_int64";
    int rc = cell_check(r, col, out, fn, err);
    if (rc != DBS_OK)
        return rc;
    int vt = r->ops->val_type(r, col);
    int64_t v;
    switch (vt) {
    case DBS_TYPE_NULL:
        return cell_null(r, col, fn, err);
    case DBS_TYPE_INT:
    case DBS_TYPE_BOOL:
        *out = r->ops->get_int(r, col);
        return ok(err);
    case DBS_TYPE_REAL: {
        double d = r->ops->get_real(r, col);
        if (d != d || d < -9223372036854775808.0 || d >= 9223372036854775808.0 ||
            d != (double)(int64_t)d)
            return cell_type(r, col, vt, fn, "a whole number within int64_t",
                             " (read it with dbs_rows_get_double)", err);
        *out = (int64_t)d;
        return ok(err);
    }
    case DBS_TYPE_BLOB:
        return cell_type(r, col, vt, fn, "an integer", " (read it with dbs_rows_get_blob)",
                         err);
    default: {
        size_t n = 0;
        const char *t = r->ops->get_text(r, col, &n);
        if (!t || dbs__parse_int64(t, n, &v) != 0)
            return cell_type(r, col, vt, fn, "a whole number within int64_t",
                             " (read it with dbs_rows_get_text or _get_double)", err);
        *out = v;
        return ok(err);
    }
    }
}

int dbs_rows_get_double(dbs_rows *r, int col, double *out, dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_double";
    int rc = cell_check(r, col, out, fn, err);
    if (rc != DBS_OK)
        return rc;
    int vt = r->ops->val_type(r, col);
    switch (vt) {
    case DBS_TYPE_NULL:
        return cell_null(r, col, fn, err);
    case DBS_TYPE_INT:
    case DBS_TYPE_BOOL:
        *out = (double)r->ops->get_int(r, col);
        return ok(err);
    case DBS_TYPE_REAL:
        *out = r->ops->get_real(r, col);
        return ok(err);
    case DBS_TYPE_BLOB:
        return cell_type(r, col, vt, fn, "a number", " (read it with dbs_rows_get_blob)", err);
    case DBS_TYPE_TIMESTAMP: /* whose text strtod may read: 'infinity' */
        return cell_type(r, col, vt, fn, "a number",
                         " (read it with dbs_rows_get_timestamp)", err);
    default: {
        size_t n = 0;
        double d;
        const char *t = r->ops->get_text(r, col, &n);
        if (!t || dbs__parse_double(t, n, &d) != 0)
            return cell_type(r, col, vt, fn, "a number", " (read it with dbs_rows_get_text)",
                             err);
        *out = d;
        return ok(err);
    }
    }
}

int dbs_rows_get_bool(dbs_rows *r, int col, int *out, dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_bool";
    int rc = cell_check(r, col, out, fn, err);
    if (rc != DBS_OK)
        return rc;
    int vt = r->ops->val_type(r, col);
    if (vt == DBS_TYPE_NULL)
        return cell_null(r, col, fn, err);
    if (vt == DBS_TYPE_BOOL || vt == DBS_TYPE_INT) {
        int64_t v = r->ops->get_int(r, col);
        if (v == 0 || v == 1) {
            *out = (int)v;
            return ok(err);
        }
    }
    return cell_type(r, col, vt, fn, "a boolean (true/false, or the integer 0 or 1)", "", err);
}

int dbs_rows_get_text(dbs_rows *r, int col, const char **out, size_t *len, dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_text";
    int rc = cell_check(r, col, out, fn, err);
    if (rc != DBS_OK)
        return rc;
    int vt = r->ops->val_type(r, col);
    if (vt == DBS_TYPE_NULL)
        return cell_null(r, col, fn, err);
    if (vt == DBS_TYPE_BLOB)
        return cell_type(r, col, vt, fn, "text", " (read it with dbs_rows_get_blob)", err);
    size_t n = 0;
    const char *t = r->ops->get_text(r, col, &n);
    if (!t)
        return dbs__err(err, DBS_ENOMEM, "%s: out of memory reading column %d", fn, col);
    *out = t;
    if (len)
        *len = n;
    return ok(err);
}

int dbs_rows_get_blob(dbs_rows *r, int col, const void **out, size_t *len, dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_blob";
    int rc = cell_check(r, col, out, fn, err);
    if (rc == DBS_OK && !len)
        rc = dbs__err(err, DBS_EMISUSE, "%s: len is NULL (a blob's length is needed)", fn);
    if (rc != DBS_OK)
        return rc;
    if (r->ops->val_type(r, col) == DBS_TYPE_NULL)
        return cell_null(r, col, fn, err);
    size_t n = 0;
    const void *b = r->ops->get_blob(r, col, &n);
    if (!b)
        return dbs__err(err, DBS_ENOMEM, "%s: out of memory reading column %d", fn, col);
    *out = b;
    *len = n;
    return ok(err);
}

int dbs_rows_get_timestamp(dbs_rows *r, int col, struct timespec *out, dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_timestamp";
    int rc = cell_check(r, col, out, fn, err);
    if (rc != DBS_OK)
        return rc;
    int vt = r->ops->val_type(r, col);
    struct timespec ts;
    dbs__ts f;
    switch (vt) {
    case DBS_TYPE_NULL:
        return cell_null(r, col, fn, err);
    case DBS_TYPE_INT:
        ts = (struct timespec){.tv_sec = (time_t)r->ops->get_int(r, col), .tv_nsec = 0};
        break;
    case DBS_TYPE_TEXT:
    case DBS_TYPE_TIMESTAMP: {
        size_t n = 0;
        const char *t = r->ops->get_text(r, col, &n);
        dbs_error pe;
        if (!t || dbs_timestamp_parse(t, n, &ts, &pe) != DBS_OK)
            return dbs__err(err, DBS_ETYPE, "%s: column %d \"%s\": %s", fn, col,
                            cname(r, col), t ? pe.message : "no text");
        break;
    }
    default:
        return cell_type(r, col, vt, fn, "a timestamp",
                         " (timestamps are read from timestamp columns, ISO 8601 text or "
                         "integer seconds since the epoch)", err);
    }
    /* An instant dbs_timestamp_format and DBS_TIMESTAMP cannot take back
     * (integer seconds beyond the calendar, text whose zone moves it out
     * of year 1) is no timestamp: the caller could do nothing with it. */
    if (dbs__ts_fields(ts, &f) != DBS_OK)
        return dbs__err(err, DBS_ETYPE,
                        "%s: column %d \"%s\" holds an instant outside years 0001..9999 "
                        "(UTC)", fn, col, cname(r, col));
    *out = ts;
    return ok(err);
}

int dbs_rows_get_uuid(dbs_rows *r, int col, unsigned char out[16], dbs_error *err)
{
    static const char fn[] = "dbs_rows_get_uuid";
    int rc = cell_check(r, col, out, fn, err);
    if (rc != DBS_OK)
        return rc;
    int vt = r->ops->val_type(r, col);
    size_t n = 0;
    switch (vt) {
    case DBS_TYPE_NULL:
        return cell_null(r, col, fn, err);
    case DBS_TYPE_BLOB: {
        const void *b = r->ops->get_blob(r, col, &n);
        if (!b || n != 16)
            return dbs__err(err, DBS_ETYPE,
                            "%s: column %d \"%s\" holds a BLOB of %zu bytes, not a UUID's 16",
                            fn, col, cname(r, col), n);
        memcpy(out, b, 16);
        return ok(err);
    }
    case DBS_TYPE_TEXT:
    case DBS_TYPE_UUID: {
        const char *t = r->ops->get_text(r, col, &n);
        dbs_error pe;
        if (!t || dbs_uuid_parse(t, n, out, &pe) != DBS_OK)
            return dbs__err(err, DBS_ETYPE, "%s: column %d \"%s\": %s", fn, col,
                            cname(r, col), t ? pe.message : "no text");
        return ok(err);
    }
    default:
        return cell_type(r, col, vt, fn, "a UUID", "", err);
    }
}

int dbs_rows_type(dbs_rows *r, int col, dbs_error *err)
{
    if (!r || r->magic != DBS__ROWS_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_rows_type: rows are NULL or already closed");
    if (!owner_ok(r))
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_rows_type: rows belong to another thread's session");
    int n = r->ops->count_cols(r);
    if (col < 0 || col >= n)
        return col_range("dbs_rows_type", col, n, err);
    ok(err);
    return r->ops->col_type(r, col);
}

int dbs_rows_col(dbs_rows *r, const char *name, dbs_error *err)
{
    if (!r || r->magic != DBS__ROWS_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "dbs_rows_col: rows are NULL or already closed");
    if (!owner_ok(r))
        return dbs__err(err, DBS_EMISUSE,
                        "dbs_rows_col: rows belong to another thread's session");
    if (!name)
        return dbs__err(err, DBS_EMISUSE, "dbs_rows_col: name is NULL");
    int n = r->ops->count_cols(r);
    for (int i = 0; i < n; i++)
        if (strcmp(cname(r, i), name) == 0) {
            ok(err);
            return i;
        }
    for (int i = 0; i < n; i++)
        if (strcasecmp(cname(r, i), name) == 0) {
            ok(err);
            return i;
        }
    if (!err)
        return DBS_EMISUSE;
    char list[300];
    size_t w = 0;
    list[0] = '\0';
    for (int i = 0; i < n && w < sizeof list; i++)
        w += (size_t)snprintf(list + w, sizeof list - w, "%s\"%s\"", i ? ", " : "",
                              cname(r, i));
    return dbs__err(err, DBS_EMISUSE, "dbs_rows_col: no column named \"%.100s\"; the columns "
                    "are: %s", name, n ? list : "(none)");
}

void dbs_rows_close(dbs_rows *r)
{
    DBS__IN_LIB(cancel_old);
    /* session-less rows are their unit's, which frees them */
    if (!rows_ok(r) || !r->session)
        return;
    dbs__rows_free(r);
}

