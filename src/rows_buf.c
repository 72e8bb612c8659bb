/* Rows held in memory: a copy of any backend's rows, read to the end
 * through the rows ops, that no session owns (session NULL). A unit of an
 * event loop run on a worker thread keeps its statements' rows this way:
 * the session and its connection are gone (back to the pool) by the time
 * the loop's thread reads them.
 *
 * Every cell keeps what the source's accessors returned on that row: its
 * NULL flag, how the value was held (val_type) and the column's type
 * (col_type, which SQLite derives from the current value for an
 * expression), the integer, the number, the text and the bytes. So the
 * checked accessors, dbs_rows_type and the plain ones answer as they would
 * have on the source. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct buf_cell {
    int64_t i;
    double d;
    size_t text, text_n;  /* offsets into the arena; text is NUL-ended */
    size_t blob, blob_n;
    signed char is_null, vt, ct, has_text, has_blob;
} buf_cell;

typedef struct buf_rows {
    dbs_rows hdr;
    int ncols;
    size_t nrows, cap;    /* rows held, and room in cells */
    size_t row;           /* 1-based while on a row; 0 before the first */
    buf_cell *cells;      /* nrows * ncols */
    size_t *name;         /* arena offsets of the column names */
    signed char *ctype;   /* col_type off a row (before the first, after the last) */
    char *arena;
    size_t arena_n, arena_cap;
    int64_t affected;
} buf_rows;

static const dbs__rows_ops buf_ops;

/* Copies n bytes (and a NUL) into the arena: the offset, or SIZE_MAX when
 * out of memory. */
static size_t arena_put(buf_rows *b, const void *p, size_t n)
{
    if (n > SIZE_MAX / 2 - b->arena_n - 1)
        return SIZE_MAX;
    if (!b->arena || b->arena_n + n + 1 > b->arena_cap) {
        size_t cap = b->arena && b->arena_cap ? b->arena_cap : 256;
        while (cap < b->arena_n + n + 1)
            cap *= 2;
        char *a = realloc(b->arena, cap);
        if (!a)
            return SIZE_MAX;
        b->arena = a;
        b->arena_cap = cap;
    }
    size_t off = b->arena_n;
    if (n && p)
        memcpy(b->arena + off, p, n);
    b->arena[off + n] = '\0';
    b->arena_n += n + 1;
    return off;
}

static void buf_free(buf_rows *b)
{
    free(b->cells);
    free(b->name);
    free(b->ctype);
    free(b->arena);
    free(b);
}

/* One cell of src's current row. */
static int copy_cell(buf_rows *b, dbs_rows *src, int col, buf_cell *x)
{
    const dbs__rows_ops *o = src->ops;
    /* The types first: SQLite's answer is undefined after a conversion. */
    x->vt = (signed char)o->val_type(src, col);
    x->ct = (signed char)o->col_type(src, col);
    x->is_null = (signed char)(o->is_null(src, col) != 0);
    x->i = o->get_int(src, col);
    x->d = o->get_real(src, col);
    size_t n = 0;
    const char *t = o->get_text(src, col, &n);
    if (t) {
        x->text = arena_put(b, t, n);
        if (x->text == SIZE_MAX)
            return DBS_ENOMEM;
        x->text_n = n;
        x->has_text = 1;
    }
    n = 0;
    const void *p = o->get_blob(src, col, &n);
    if (p) {
        x->has_blob = 1;
        if (x->has_text && n == x->text_n && memcmp(p, b->arena + x->text, n) == 0) {
            x->blob = x->text; /* the same bytes: kept once */
        } else {
            x->blob = arena_put(b, p, n);
            if (x->blob == SIZE_MAX)
                return DBS_ENOMEM;
        }
        x->blob_n = n;
    }
    return DBS_OK;
}

dbs_rows *dbs__rows_buf(dbs_rows *src, dbs_error *err)
{
    buf_rows *b = calloc(1, sizeof *b);
    if (!b) {
        dbs__err(err, DBS_ENOMEM, "out of memory keeping a statement's rows");
        return NULL;
    }
    int nc = src->ops->count_cols(src);
    b->ncols = nc > 0 ? nc : 0;
    b->affected = -1;
    b->name = calloc((size_t)b->ncols + 1, sizeof *b->name);
    b->ctype = calloc((size_t)b->ncols + 1, 1);
    int rc = b->name && b->ctype ? DBS_OK : DBS_ENOMEM;
    for (int c = 0; rc == DBS_OK && c < b->ncols; c++) {
        const char *nm = src->ops->name(src, c);
        b->name[c] = arena_put(b, nm ? nm : "", nm ? strlen(nm) : 0);
        if (b->name[c] == SIZE_MAX)
            rc = DBS_ENOMEM;
        b->ctype[c] = (signed char)src->ops->col_type(src, c);
    }
    if (rc != DBS_OK) {
        buf_free(b);
        dbs__err(err, DBS_ENOMEM, "out of memory keeping a statement's rows");
        return NULL;
    }
    for (;;) {
        int got = dbs_rows_next(src, err);
        if (got < 0) {
            buf_free(b);
            return NULL;
        }
        if (got == 0)
            break;
        if (b->ncols > 0 && b->nrows == b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 8;
            buf_cell *cells = cap <= SIZE_MAX / sizeof *cells / (size_t)b->ncols
                                  ? realloc(b->cells, cap * (size_t)b->ncols * sizeof *cells)
                                  : NULL;
            if (!cells) {
                buf_free(b);
                dbs__err(err, DBS_ENOMEM, "out of memory keeping a statement's rows");
                return NULL;
            }
            b->cells = cells;
            b->cap = cap;
        }
        for (int c = 0; c < b->ncols; c++) {
            buf_cell *x = &b->cells[b->nrows * (size_t)b->ncols + (size_t)c];
            memset(x, 0, sizeof *x);
            if (copy_cell(b, src, c, x) != DBS_OK) {
                buf_free(b);
                dbs__err(err, DBS_ENOMEM, "out of memory keeping a statement's rows");
                return NULL;
            }
        }
        b->nrows++;
    }
    if (src->ops->affected)
        b->affected = src->ops->affected(src);
    b->hdr.ops = &buf_ops;
    b->hdr.session = NULL;
    b->hdr.prev = b->hdr.next = NULL;
    b->hdr.magic = DBS__ROWS_MAGIC;
    b->hdr.on_row = 0;
    if (err)
        err->code = DBS_OK;
    return (dbs_rows *)b; /* hdr comes first */
}

static buf_rows *of(dbs_rows *r)
{
    return (buf_rows *)r;
}

static const buf_cell *cell(dbs_rows *r, int col)
{
    buf_rows *b = of(r);
    if (b->row < 1 || b->row > b->nrows)
        return NULL;
    return &b->cells[(b->row - 1) * (size_t)b->ncols + (size_t)col];
}

static int buf_next(dbs_rows *r, dbs_error *err)
{
    (void)err;
    buf_rows *b = of(r);
    if (b->row >= b->nrows) {
        b->row = b->nrows + 1;
        return 0;
    }
    b->row++;
    return 1;
}

static int buf_count_cols(dbs_rows *r)
{
    return of(r)->ncols;
}

static const char *buf_name(dbs_rows *r, int col)
{
    return of(r)->arena + of(r)->name[col];
}

static int buf_is_null(dbs_rows *r, int col)
{
    const buf_cell *x = cell(r, col);
    return x ? x->is_null : 1;
}

static int64_t buf_int(dbs_rows *r, int col)
{
    const buf_cell *x = cell(r, col);
    return x ? x->i : 0;
}

static double buf_real(dbs_rows *r, int col)
{
    const buf_cell *x = cell(r, col);
    return x ? x->d : 0.0;
}

static const char *buf_text(dbs_rows *r, int col, size_t *len)
{
    const buf_cell *x = cell(r, col);
    if (!x || !x->has_text) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = x->text_n;
    return of(r)->arena + x->text;
}

static const void *buf_blob(dbs_rows *r, int col, size_t *len)
{
    const buf_cell *x = cell(r, col);
    if (!x || !x->has_blob) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = x->blob_n;
    return of(r)->arena + x->blob;
}

static int buf_col_type(dbs_rows *r, int col)
{
    const buf_cell *x = r->on_row ? cell(r, col) : NULL;
    return x ? x->ct : of(r)->ctype[col];
}

static int buf_val_type(dbs_rows *r, int col)
{
    const buf_cell *x = cell(r, col);
    return x ? x->vt : DBS_TYPE_NULL;
}

static int64_t buf_affected(dbs_rows *r)
{
    return of(r)->affected;
}

static void buf_close(dbs_rows *r)
{
    buf_free(of(r));
}

static const dbs__rows_ops buf_ops = {
    .next = buf_next,
    .count_cols = buf_count_cols,
    .name = buf_name,
    .is_null = buf_is_null,
    .get_int = buf_int,
    .get_real = buf_real,
    .get_text = buf_text,
    .get_blob = buf_blob,
    .close = buf_close,
    .col_type = buf_col_type,
    .val_type = buf_val_type,
    .affected = buf_affected,
};

int64_t dbs__rows_affected(dbs_rows *r)
{
    return r->ops->affected ? r->ops->affected(r) : -1;
}
