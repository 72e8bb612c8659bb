/* Statements and rows: argument checks, autobegin, and the rows API over the
 * backend's rows. Parameters are always bound, never formatted into SQL. */
#include "internal.h"

#include <stdlib.h>

static int check_args(const char *sql, const dbs_value *params, size_t n, dbs_error *err)
{
    if (!sql)
        return dbs__err(err, DBS_EMISUSE, "sql is NULL");
    if (n > 0 && !params)
        return dbs__err(err, DBS_EMISUSE, "%zu parameters announced but params is NULL", n);
    if (n > 65535)
        return dbs__err(err, DBS_EMISUSE, "%zu parameters: at most 65535", n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned)params[i].type > DBS_TYPE_BLOB)
            return dbs__err(err, DBS_EMISUSE, "parameter $%zu has unknown type %d", i + 1,
                            (int)params[i].type);
    return DBS_OK;
}

int64_t dbs_exec(dbs_session *s, const char *sql, const dbs_value *params, size_t n,
                 dbs_error *err)
{
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
        return dbs__session_failed(s, (int)r);
    err->code = DBS_OK;
    return r;
}

dbs_rows *dbs_query(dbs_session *s, const char *sql, const dbs_value *params, size_t n,
                    dbs_error *err)
{
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
        dbs__session_failed(s, err->code);
        return NULL;
    }
    r->session = s;
    r->magic = DBS__ROWS_MAGIC;
    r->prev = NULL;
    r->next = s->rows;
    if (s->rows)
        s->rows->prev = r;
    s->rows = r;
    err->code = DBS_OK;
    return r;
}

static bool rows_ok(const dbs_rows *r)
{
    return r && r->magic == DBS__ROWS_MAGIC && pthread_equal(r->session->owner, pthread_self());
}

static bool col_ok(dbs_rows *r, int col)
{
    return rows_ok(r) && col >= 0 && col < r->ops->count_cols(r);
}

int dbs_rows_next(dbs_rows *r, dbs_error *err)
{
    if (!r || r->magic != DBS__ROWS_MAGIC)
        return dbs__err(err, DBS_EMISUSE, "rows are NULL or already closed");
    int rc = dbs__session_check(r->session, err);
    if (rc != DBS_OK)
        return rc;
    dbs_error local;
    if (!err)
        err = &local;
    rc = r->ops->next(r, err);
    if (rc < 0)
        return dbs__session_failed(r->session, rc);
    err->code = DBS_OK;
    return rc;
}

int dbs_rows_count_cols(dbs_rows *r)
{
    return rows_ok(r) ? r->ops->count_cols(r) : 0;
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

static void rows_free(dbs_rows *r)
{
    dbs_session *s = r->session;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->rows = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->magic = DBS__DEAD_MAGIC;
    r->ops->close(r);
}

void dbs_rows_close(dbs_rows *r)
{
    if (!rows_ok(r))
        return;
    rows_free(r);
}

void dbs__rows_close_all(dbs_session *s)
{
    while (s->rows)
        rows_free(s->rows);
}
