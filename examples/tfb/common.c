/* tfb-server: what both modes share (routes, bodies, the bulk update,
 * --setup, the listening socket). */
#include "tfb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

atomic_int tfb_stop;

void tfb_wait_signal(void)
{
    sigset_t set;
    int sig;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    while (sigwait(&set, &sig) != 0)
        ;
    atomic_store(&tfb_stop, 1);
}

void tfb_buf_add(tfb_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void tfb_buf_str(tfb_buf *b, const char *s)
{
    tfb_buf_add(b, s, strlen(s));
}

void tfb_buf_int(tfb_buf *b, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    tfb_buf_add(b, t, (size_t)n);
}

void tfb_buf_free(tfb_buf *b)
{
    free(b->p);
    *b = (tfb_buf){0};
}

static int path_is(const char *path, size_t len, const char *want)
{
    return strlen(want) == len && !memcmp(path, want, len);
}

enum tfb_route tfb_route_of(const char *path, size_t len, int test_routes)
{
    if (path_is(path, len, "/json"))
        return TFB_JSON;
    if (path_is(path, len, "/plaintext"))
        return TFB_PLAINTEXT;
    if (path_is(path, len, "/db"))
        return TFB_DB;
    if (path_is(path, len, "/queries"))
        return TFB_QUERIES;
    if (path_is(path, len, "/fortunes"))
        return TFB_FORTUNES;
    if (path_is(path, len, "/updates"))
        return TFB_UPDATES;
    if (test_routes && path_is(path, len, "/sleep"))
        return TFB_SLEEP;
    return TFB_NONE;
}

/* A decimal integer, optionally signed, filling all of val: 1 and *out
 * set (saturated at +-1e9), 0 otherwise. */
static int parse_int(const char *val, size_t len, long *out)
{
    size_t i = 0;
    int neg = 0;
    long v = 0;
    if (!val || len == 0)
        return 0;
    if (val[0] == '-' || val[0] == '+') {
        neg = val[0] == '-';
        i = 1;
    }
    if (i == len)
        return 0;
    for (; i < len; i++) {
        if (val[i] < '0' || val[i] > '9')
            return 0;
        if (v < 1000000000L)
            v = v * 10 + (val[i] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}

int tfb_queries(const char *val, size_t len)
{
    long v;
    if (!parse_int(val, len, &v))
        return 1;
    if (v < 1)
        return 1;
    if (v > TFB_MAX_QUERIES)
        return TFB_MAX_QUERIES;
    return (int)v;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes n bytes of a form-encoded query string into out (room for n):
 * %XX escapes, '+' a space, a '%' not followed by two hex digits kept as
 * it is, as libmicrohttpd decodes arguments, so both modes read the same
 * value. Returns the decoded length. */
static size_t form_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (in[i] == '+') {
            out[o++] = ' ';
        } else if (in[i] == '%' && i + 2 < n && (hi = hex_digit(in[i + 1])) >= 0 &&
                   (lo = hex_digit(in[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

const char *tfb_query_arg(const char *query, size_t qlen, const char *name, char *buf,
                          size_t *len)
{
    size_t nl = strlen(name);
    const char *p = query, *end = query + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ke = eq ? eq : e;
        /* The name is compared decoded and exactly (%71ueries is
         * queries; Queries is not). */
        size_t kl = form_decode(p, (size_t)(ke - p), buf);
        if (kl == nl && !memcmp(buf, name, nl)) {
            if (!eq) {
                *len = 0;
                return NULL;
            }
            *len = form_decode(eq + 1, (size_t)(e - eq - 1), buf);
            return buf;
        }
        p = e + 1;
    }
    *len = 0;
    return NULL;
}

double tfb_seconds(const char *val, size_t len)
{
    long v;
    if (!parse_int(val, len, &v) || v < 0)
        return 0;
    return v > 3600 ? 3600 : (double)v;
}

/* xorshift64*, one state a thread, seeded from the clock and the
 * state's address. */
static _Thread_local uint64_t rng_state;

int32_t tfb_random_id(void)
{
    if (rng_state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                    (uint64_t)(uintptr_t)&rng_state;
        if (rng_state == 0)
            rng_state = 0x9E3779B97F4A7C15ull;
    }
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 2685821657736338717ull;
    return (int32_t)((r >> 33) % TFB_WORLD_ROWS) + 1;
}

void tfb_body_json(tfb_buf *b)
{
    /* Serialized for each request, as the rules ask (no cached body). */
    tfb_buf_str(b, "{\"message\":\"");
    tfb_buf_str(b, "Hello, World!");
    tfb_buf_str(b, "\"}");
}

void tfb_body_world(tfb_buf *b, const tfb_world *w)
{
    tfb_buf_str(b, "{\"id\":");
    tfb_buf_int(b, w->id);
    tfb_buf_str(b, ",\"randomNumber\":");
    tfb_buf_int(b, w->rnd);
    tfb_buf_add(b, "}", 1);
}

void tfb_body_worlds(tfb_buf *b, const tfb_world *w, int n)
{
    tfb_buf_add(b, "[", 1);
    for (int i = 0; i < n; i++) {
        if (i)
            tfb_buf_add(b, ",", 1);
        tfb_body_world(b, &w[i]);
    }
    tfb_buf_add(b, "]", 1);
}

static int fortune_cmp(const void *a, const void *b)
{
    const tfb_fortune *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->msg, y->msg, n);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

static void html_escape(tfb_buf *b, const char *s, size_t n)
{
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: continue;
        }
        tfb_buf_add(b, s + from, i - from);
        tfb_buf_str(b, rep);
        from = i + 1;
    }
    tfb_buf_add(b, s + from, n - from);
}

void tfb_body_fortunes(tfb_buf *b, tfb_fortune *f, int n)
{
    static const char added[] = "Additional fortune added at request time.";
    f[n].id = 0;
    f[n].msg = added;
    f[n].len = sizeof added - 1;
    n++;
    /* Byte order of UTF-8 is code point order, as the verifier sorts. */
    qsort(f, (size_t)n, sizeof *f, fortune_cmp);
    tfb_buf_str(b, "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
                   "<tr><th>id</th><th>message</th></tr>");
    for (int i = 0; i < n; i++) {
        tfb_buf_str(b, "<tr><td>");
        tfb_buf_int(b, f[i].id);
        tfb_buf_str(b, "</td><td>");
        html_escape(b, f[i].msg, f[i].len);
        tfb_buf_str(b, "</td></tr>");
    }
    tfb_buf_str(b, "</table></body></html>");
}

static int world_cmp(const void *a, const void *b)
{
    const tfb_world *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

void tfb_update_arrays(tfb_world *w, int n, tfb_buf *ids, tfb_buf *rnds)
{
    tfb_world sorted[TFB_MAX_QUERIES];
    int m = 0;
    if (n > TFB_MAX_QUERIES)
        n = TFB_MAX_QUERIES;
    memcpy(sorted, w, (size_t)n * sizeof *w);
    /* Rows locked in id order by every request: concurrent updates take
     * their locks in one order. */
    qsort(sorted, (size_t)n, sizeof *sorted, world_cmp);
    for (int i = 0; i < n; i++)
        if (m == 0 || sorted[m - 1].id != sorted[i].id)
            sorted[m++] = sorted[i];
    /* An id drawn twice is written once; the response shows that value. */
    for (int i = 0; i < n; i++) {
        tfb_world key = {.id = w[i].id};
        const tfb_world *hit = bsearch(&key, sorted, (size_t)m, sizeof *sorted, world_cmp);
        if (hit)
            w[i].rnd = hit->rnd;
    }
    tfb_buf_add(ids, "{", 1);
    tfb_buf_add(rnds, "{", 1);
    for (int i = 0; i < m; i++) {
        if (i) {
            tfb_buf_add(ids, ",", 1);
            tfb_buf_add(rnds, ",", 1);
        }
        tfb_buf_int(ids, sorted[i].id);
        tfb_buf_int(rnds, sorted[i].rnd);
    }
    tfb_buf_add(ids, "}", 1);
    tfb_buf_add(rnds, "}", 1);
}

int tfb_status_of(int rc)
{
    switch (rc) {
    case DBS_EBUSY:
    case DBS_ETIMEOUT:
    case DBS_EUNAVAILABLE:
    /* The server is stopping: loop mode's units end DBS_ECANCELED as it
     * closes its loops; a pool shut down refuses sessions. */
    case DBS_ECANCELED:
    case DBS_ECLOSED:
        return 503;
    default:
        return 500;
    }
}

/* --setup: the tables of toolset/databases/postgres/create-postgres.sql,
 * each created and filled in the same statements when it is absent (its
 * GRANTs to benchmarkdbuser and the pg_stat_statements extension are the
 * toolset's own affair and left out). */
static const char *const fortunes[12] = {
    "fortune: No such file or directory",
    "A computer scientist is someone who fixes things that aren''t broken.",
    "After enough decimal places, nobody gives a damn.",
    "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    "A computer program does what you tell it to do, not what you want it to do.",
    "Emacs is a nice operating system, but I prefer UNIX. \xe2\x80\x94 Tom Christaensen",
    "Any program that runs right is obsolete.",
    "A list is only as strong as its weakest link. \xe2\x80\x94 Donald Knuth",
    "Feature: A bug with seniority.",
    "Computers make very fast, very accurate mistakes.",
    "<script>alert(\"This should not be displayed in a browser alert box.\");</script>",
    "\xe3\x83\x95\xe3\x83\xac\xe3\x83\xbc\xe3\x83\xa0\xe3\x83\xaf\xe3\x83\xbc\xe3\x82\xaf\xe3\x81"
    "\xae\xe3\x83\x99\xe3\x83\xb3\xe3\x83\x81\xe3\x83\x9e\xe3\x83\xbc\xe3\x82\xaf",
};

static int absent(dbs_session *s, const char *regclass, int *is_absent, dbs_error *err)
{
    dbs_value p = DBS_TEXT(regclass);
    dbs_rows *r = dbs_query(s, "SELECT to_regclass($1) IS NULL", &p, 1, err);
    if (!r)
        return err->code;
    int rc = dbs_rows_next(r, err);
    if (rc == 1)
        rc = dbs_rows_get_bool(r, 0, is_absent, err);
    else if (rc == 0)
        rc = DBS_ESQL;
    dbs_rows_close(r);
    return rc < 0 ? rc : 0;
}

static int setup_table(dbs_session *s, const char *name, int world, dbs_error *err)
{
    char reg[64], sql[512];
    int is_absent = 0;
    snprintf(reg, sizeof reg, "public.%s", name);
    int rc = absent(s, reg, &is_absent, err);
    if (rc < 0 || !is_absent)
        return rc;
    if (world) {
        snprintf(sql, sizeof sql,
                 "CREATE TABLE  %s (\n  id integer NOT NULL,\n"
                 "  randomNumber integer NOT NULL default 0,\n  PRIMARY KEY  (id)\n)", name);
        if (dbs_exec(s, sql, NULL, 0, err) < 0)
            return err->code;
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s (id, randomnumber)\nSELECT x.id, least(floor(random() * 10000 "
                 "+ 1), 10000) FROM generate_series(1,10000) as x(id)", name);
        if (dbs_exec(s, sql, NULL, 0, err) < 0)
            return err->code;
        return 0;
    }
    snprintf(sql, sizeof sql,
             "CREATE TABLE %s (\n  id integer NOT NULL,\n  message varchar(2048) NOT NULL,\n"
             "  PRIMARY KEY  (id)\n)", name);
    if (dbs_exec(s, sql, NULL, 0, err) < 0)
        return err->code;
    for (int i = 0; i < 12; i++) {
        char ins[512];
        snprintf(ins, sizeof ins, "INSERT INTO %s (id, message) VALUES (%d, '%s')", name, i + 1,
                 fortunes[i]);
        if (dbs_exec(s, ins, NULL, 0, err) < 0)
            return err->code;
    }
    return 0;
}

static int setup_work(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    int rc = setup_table(s, "World", 1, err);
    if (rc == 0)
        rc = setup_table(s, "Fortune", 0, err);
    if (rc == 0)
        rc = setup_table(s, "\"World\"", 1, err);
    if (rc == 0)
        rc = setup_table(s, "\"Fortune\"", 0, err);
    return rc;
}

int tfb_setup(dbs_pool *pool, dbs_error *err)
{
    return dbs_transact(pool, NULL, setup_work, NULL, err);
}

int tfb_listen(const char *host, int *port, int reuseport)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", *port);
    int e = getaddrinfo(host && *host ? host : NULL, ps, &hints, &ai);
    if (e) {
        fprintf(stderr, "tfb-server: --listen %s:%d: %s\n", host ? host : "", *port,
                gai_strerror(e));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 4096)) {
        fprintf(stderr, "tfb-server: cannot listen on %s:%d: %s\n", host ? host : "", *port,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    if (*port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

unsigned tfb_connection_limit(const tfb_options *opt, int per_thread)
{
    struct rlimit rl;
    rlim_t want = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        rlim_t reserve = 2 * (rlim_t)(opt->pool_size + opt->max_overflow) +
                         (rlim_t)per_thread * (rlim_t)opt->threads + 32;
        want = rl.rlim_cur > reserve + (rlim_t)opt->threads ? rl.rlim_cur - reserve
                                                            : (rlim_t)opt->threads;
        if (want > 65536)
            want = 65536;
    }
    return (unsigned)want;
}
