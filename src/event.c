/* Events: delivered to on_event, and the default logger, which prints only
 * what an operator must see (leaks, invalidations) as one logfmt line each. */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const event_names[] = {
    [DBS_EVENT_CONNECT] = "connect",
    [DBS_EVENT_CHECKOUT] = "checkout",
    [DBS_EVENT_CHECKIN] = "checkin",
    [DBS_EVENT_INVALIDATE] = "invalidate",
    [DBS_EVENT_RETRY] = "retry",
    [DBS_EVENT_LEAK] = "leak",
    [DBS_EVENT_LEAK_RECOVERED] = "leak_recovered",
    [DBS_EVENT_SLOW_SESSION] = "slow_session",
    [DBS_EVENT_CIRCUIT_OPEN] = "circuit_open",
    [DBS_EVENT_CIRCUIT_CLOSE] = "circuit_close",
    [DBS_EVENT_TIMEOUT] = "timeout",
    [DBS_EVENT_CONNECT_FAILED] = "connect_failed",
    [DBS_EVENT_CLOSE] = "close",
    [DBS_EVENT_NOTICE] = "notice",
};

static bool logged_by_default(enum dbs_event_kind k)
{
    return k == DBS_EVENT_LEAK || k == DBS_EVENT_LEAK_RECOVERED || k == DBS_EVENT_INVALIDATE ||
           k == DBS_EVENT_NOTICE;
}

/* Appends key=value, quoting values that need it, as logfmt readers expect. */
static void put_kv(char *buf, size_t cap, size_t *o, const char *key, const char *val)
{
    if (!val)
        return;
    bool quote = *val == '\0';
    for (const char *q = val; *q && !quote; q++)
        quote = *q == ' ' || *q == '"' || *q == '=' || *q == '\\' || (unsigned char)*q < 0x20;
    int n = snprintf(buf + *o, cap - *o, " %s=%s", key, quote ? "\"" : "");
    if (n < 0 || (size_t)n >= cap - *o)
        return;
    *o += (size_t)n;
    for (const char *q = val; *q && *o + 4 < cap; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '"' || ch == '\\') {
            buf[(*o)++] = '\\';
            buf[(*o)++] = (char)ch;
        } else if (ch == '\n') {
            buf[(*o)++] = '\\';
            buf[(*o)++] = 'n';
        } else if (ch < 0x20) {
            buf[(*o)++] = ' ';
        } else {
            buf[(*o)++] = (char)ch;
        }
    }
    if (quote && *o + 1 < cap)
        buf[(*o)++] = '"';
    buf[*o] = '\0';
}

static void log_event(const dbs_pool *p, const dbs_event *ev)
{
    char buf[1536];
    size_t o = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, sizeof buf,
                     "time=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=dbscope event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000,
                     ev->kind == DBS_EVENT_LEAK ? "warn" : "info", ev->name);
    if (n < 0)
        return;
    o = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    char num[32];
    put_kv(buf, sizeof buf, &o, "db", p->drv ? p->drv->name : NULL);
    if (ev->conn_id) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)ev->conn_id);
        put_kv(buf, sizeof buf, &o, "conn", num);
    }
    if (ev->file) {
        char site[320];
        snprintf(site, sizeof site, "%s:%d", ev->file, ev->line);
        put_kv(buf, sizeof buf, &o, "site", site);
        put_kv(buf, sizeof buf, &o, "func", ev->func);
    }
    if (ev->thread) {
        snprintf(num, sizeof num, "%lx", ev->thread);
        put_kv(buf, sizeof buf, &o, "thread", num);
    }
    if (ev->kind == DBS_EVENT_LEAK || ev->kind == DBS_EVENT_LEAK_RECOVERED ||
        ev->kind == DBS_EVENT_SLOW_SESSION) {
        snprintf(num, sizeof num, "%lld", (long long)ev->age_ms);
        put_kv(buf, sizeof buf, &o, "age_ms", num);
    }
    if (ev->ctx) {
        put_kv(buf, sizeof buf, &o, "request_id", ev->ctx->request_id);
        put_kv(buf, sizeof buf, &o, "user_id", ev->ctx->user_id);
        put_kv(buf, sizeof buf, &o, "tenant_id", ev->ctx->tenant_id);
    }
    put_kv(buf, sizeof buf, &o, "reason", ev->reason);
    dbs__log_line("%s", buf);
}

void dbs__emit_event(dbs_pool *p, enum dbs_event_kind kind, const dbs__who *who, int code,
                     const char *reason)
{
    static const dbs__who nobody;
    if (!who)
        who = &nobody;
    bool log = p->cfg.log_events && logged_by_default(kind);
    int64_t now = dbs__now_ns();
    dbs_event ev = {
        .kind = kind,
        .name = event_names[kind],
        .ctx = who->ctx,
        .file = who->file,
        .line = who->line,
        .func = who->func,
        .thread = who->thread,
        .conn_id = who->conn_id,
        .age_ms = who->since_ns ? (now - who->since_ns) / 1000000
                  : who->conn_id ? (now - who->conn_created_ns) / 1000000 : 0,
        .attempt = who->attempt,
        .code = code,
        /* a failure always says what failed: the code's own text where the
         * caller had no message to pass (an acquire's timeout) */
        .reason = reason || code >= 0 ? reason : dbs_strerror(code),
    };
    /* on_event is the program's code, run inside the library's step */
    if (p->cfg.on_event) {
        dbs__cancel_defer();
        p->cfg.on_event(&ev, p->cfg.event_user);
    }
    if (log)
        log_event(p, &ev);
}

void dbs__log_line(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2;
    line[len++] = '\n';
    dbs__cancel_defer();
    /* one write, so concurrent lines do not interleave */
    fwrite(line, 1, len, stderr);
}
