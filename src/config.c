/* Defaults, URL and environment parsing. No I/O here, so all of it is
 * unit-tested (and fuzzable) on its own; credential redaction is in
 * redact.c. */
#include "internal.h"

#ifdef DBSCOPE_WITH_PG
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#endif

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void dbs_config_init(dbs_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->pool_size = 10;
    cfg->max_overflow = 20;
    cfg->min_idle = 0;
    cfg->acquire_timeout_ms = 30000;
    cfg->max_lifetime_ms = 3600000;
    cfg->idle_timeout_ms = 600000;
    cfg->pre_ping = 1;
    cfg->leak_threshold_ms = 0;
    cfg->retry_max = 3;
    cfg->mode = DBS_POOL_AUTO;
    cfg->validation_window_ms = 500;
    cfg->housekeeping_interval_ms = 1000;
    cfg->retry_base_ms = 10;
    cfg->retry_cap_ms = 1000;
    cfg->busy_timeout_ms = 5000;
    cfg->stmt_cache_size = 64;
    cfg->reset = DBS_RESET_FULL;
    cfg->log_events = -1;
    cfg->circuit_threshold = 5;
    cfg->circuit_cooldown_ms = 250;
    cfg->metrics = 1;
    cfg->name = "default";
    cfg->connect_timeout_ms = 10000;
    cfg->statement_timeout_ms = 30000;
    cfg->lazy_open = 0;
    cfg->replica_url = NULL;
    cfg->replica_max_lag_ms = 0;
    cfg->replica_fallback = 1;
    cfg->barge_limit_us = 2000;
}

/* ---- environment ---- */

static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Seconds, fractions allowed ("2.5"), to milliseconds. */
static int parse_seconds_ms(const char *s, int *out)
{
    char *end;
    errno = 0;
    double v = dbs__strtod(s, &end); /* "2.5" under any locale */
    while (isspace((unsigned char)*end))
        end++;
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < 0 ||
        v * 1000.0 > (double)INT_MAX || strpbrk(s, "xXpP")) /* no hex floats */
        return -1;
    *out = (int)(v * 1000.0 + 0.5);
    if (*out == 0 && v > 0)
        *out = 1; /* under half a millisecond is not 0, which means never */
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

int dbs_config_from_env(dbs_config *cfg, dbs_error *err)
{
    if (!cfg)
        return dbs__err(err, DBS_EMISUSE, "dbs_config_from_env: cfg is NULL");
    dbs_config c = *cfg; /* all or nothing: cfg changes only on success */
    const char *v;
    long long n;
    if ((v = env("DATABASE_URL")))
        c.url = v;
    if ((v = env("DB_POOL_SIZE"))) {
        if (parse_int(v, 1, 100000, &n))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_POOL_SIZE=\"%.40s\" is not a whole number from 1 to 100000", v);
        c.pool_size = (int)n;
    }
    if ((v = env("DB_MAX_OVERFLOW"))) {
        if (parse_int(v, 0, 100000, &n))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_MAX_OVERFLOW=\"%.40s\" is not a whole number from 0 to 100000", v);
        c.max_overflow = (int)n;
    }
    if ((v = env("DB_POOL_MIN_IDLE"))) {
        if (parse_int(v, 0, 100000, &n))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_POOL_MIN_IDLE=\"%.40s\" is not a whole number from 0 to 100000", v);
        c.min_idle = (int)n;
    }
    if ((v = env("DB_POOL_TIMEOUT"))) {
        if (parse_seconds_ms(v, &c.acquire_timeout_ms))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_POOL_TIMEOUT=\"%.40s\" is not a number of seconds >= 0 (e.g. 30 or 0.5)", v);
    }
    if ((v = env("DB_POOL_RECYCLE"))) {
        if (parse_seconds_ms(v, &c.max_lifetime_ms))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_POOL_RECYCLE=\"%.40s\" is not a number of seconds >= 0 (0 = never recycle)", v);
    }
    if ((v = env("DB_POOL_PRE_PING"))) {
        if (parse_bool(v, &c.pre_ping))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_POOL_PRE_PING=\"%.40s\" is not a boolean (1/0, true/false, yes/no, on/off)", v);
    }
    if ((v = env("DB_LEAK_THRESHOLD_MS"))) {
        if (parse_int(v, 0, INT_MAX, &n))
            return dbs__err(err, DBS_ECONFIG,
                            "DB_LEAK_THRESHOLD_MS=\"%.40s\" is not a whole number of milliseconds >= 0", v);
        c.leak_threshold_ms = (int)n;
    }
    /* Every timeout field, in milliseconds, the unit in each name. Two
     * variables for one field (DB_POOL_TIMEOUT in seconds beside
     * DB_ACQUIRE_TIMEOUT_MS) is ambiguous: refused rather than guessed. */
    struct { const char *name, *alias; int *field; } ms[] = {
        {"DB_CONNECT_TIMEOUT_MS", NULL, &c.connect_timeout_ms},
        {"DB_STATEMENT_TIMEOUT_MS", NULL, &c.statement_timeout_ms},
        {"DB_ACQUIRE_TIMEOUT_MS", "DB_POOL_TIMEOUT", &c.acquire_timeout_ms},
        {"DB_MAX_LIFETIME_MS", "DB_POOL_RECYCLE", &c.max_lifetime_ms},
        {"DB_IDLE_TIMEOUT_MS", NULL, &c.idle_timeout_ms},
        {"DB_BUSY_TIMEOUT_MS", NULL, &c.busy_timeout_ms},
    };
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        if (!(v = env(ms[i].name)))
            continue;
        if (parse_int(v, 0, INT_MAX, &n))
            return dbs__err(err, DBS_ECONFIG,
                            "%s=\"%.40s\" is not a whole number of milliseconds from 0 "
                            "to %d (e.g. 5000)", ms[i].name, v, INT_MAX);
        if (ms[i].alias && env(ms[i].alias))
            return dbs__err(err, DBS_ECONFIG,
                            "both %s and %s are set and name the same setting: unset one",
                            ms[i].name, ms[i].alias);
        *ms[i].field = (int)n;
    }
    *cfg = c;
    if (err)
        dbs__err(err, DBS_OK, "ok");
    return DBS_OK;
}

int dbs__config_check(const dbs_config *c, dbs_error *err)
{
    struct { const char *name; int v, lo, hi; } f[] = {
        {"pool_size", c->pool_size, 1, 100000},
        {"max_overflow", c->max_overflow, 0, 100000},
        {"min_idle", c->min_idle, 0, 100000},
        {"acquire_timeout_ms", c->acquire_timeout_ms, 0, INT_MAX},
        {"max_lifetime_ms", c->max_lifetime_ms, 0, INT_MAX},
        {"idle_timeout_ms", c->idle_timeout_ms, 0, INT_MAX},
        {"leak_threshold_ms", c->leak_threshold_ms, 0, INT_MAX},
        {"retry_max", c->retry_max, 0, 1000},
        {"validation_window_ms", c->validation_window_ms, 0, INT_MAX},
        {"housekeeping_interval_ms", c->housekeeping_interval_ms, 1, 86400000},
        {"retry_base_ms", c->retry_base_ms, 0, 3600000},
        {"retry_cap_ms", c->retry_cap_ms, 0, 3600000},
        {"busy_timeout_ms", c->busy_timeout_ms, 0, INT_MAX},
        {"stmt_cache_size", c->stmt_cache_size, 0, 10000},
        {"circuit_threshold", c->circuit_threshold, 0, 1000000},
        {"circuit_cooldown_ms", c->circuit_cooldown_ms, 0, INT_MAX},
        {"slow_session_ms", c->slow_session_ms, 0, INT_MAX},
        {"keepalive_ms", c->keepalive_ms, 0, INT_MAX},
        {"connect_timeout_ms", c->connect_timeout_ms, 0, INT_MAX},
        {"statement_timeout_ms", c->statement_timeout_ms, 0, INT_MAX},
        /* the monitor's ring holds about 100 s of primary positions */
        {"replica_max_lag_ms", c->replica_max_lag_ms, 0, 60000},
        {"replica_fallback", c->replica_fallback, 0, 1},
        /* switches: a 2 or a -1 is a mistake, not a stronger "on" */
        {"pre_ping", c->pre_ping, 0, 1},
        {"metrics", c->metrics, 0, 1},
        {"lazy_open", c->lazy_open, 0, 1},
        {"barge_limit_us", c->barge_limit_us, 0, 60000000},
    };
    if (c->log_events < -1 || c->log_events > 1)
        return dbs__err(err, DBS_ECONFIG,
                        "config field log_events is %d; use -1 (the default: on unless "
                        "on_event is set), 0 (off) or 1 (on, also with on_event)",
                        c->log_events);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v < f[i].lo)
            return dbs__err(err, DBS_ECONFIG, "config field %s is %d; it must be >= %d",
                            f[i].name, f[i].v, f[i].lo);
        if (f[i].v > f[i].hi)
            return dbs__err(err, DBS_ECONFIG, "config field %s is %d; it must be <= %d",
                            f[i].name, f[i].v, f[i].hi);
    }
    if (c->min_idle > c->pool_size)
        return dbs__err(err, DBS_ECONFIG,
                        "config field min_idle (%d) is larger than pool_size (%d)",
                        c->min_idle, c->pool_size);
    if (c->pool_size > 100000 || c->max_overflow > 100000)
        return dbs__err(err, DBS_ECONFIG, "pool_size and max_overflow may be at most 100000");
    if ((unsigned)c->mode > DBS_POOL_SINGLE)
        return dbs__err(err, DBS_ECONFIG, "config field mode is %d, not a dbs_pool_mode",
                        (int)c->mode);
    if ((unsigned)c->reset > DBS_RESET_TRACKED)
        return dbs__err(err, DBS_ECONFIG, "config field reset is %d, not a dbs_reset_mode",
                        (int)c->reset);
    if (c->retry_cap_ms < c->retry_base_ms)
        return dbs__err(err, DBS_ECONFIG,
                        "config field retry_cap_ms (%d) is smaller than retry_base_ms (%d)",
                        c->retry_cap_ms, c->retry_base_ms);
    return DBS_OK;
}

/* ---- URLs ---- */

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* key=value conninfo: starts with an identifier followed by '='. */
static int looks_like_keyvalue(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!isalpha((unsigned char)*s))
        return 0;
    while (isalnum((unsigned char)*s) || *s == '_')
        s++;
    while (isspace((unsigned char)*s))
        s++;
    return *s == '=';
}

#ifdef DBSCOPE_WITH_PG
/* Adds to seen[] (indexed as PQconninfoParse lists its options, the same
 * list for every string) the options that the len bytes of text set on
 * their own, read by libpq. */
static void pg_count_options(const char *text, size_t len, unsigned char *seen, size_t n)
{
    char *one = malloc(len + 1);
    if (!one)
        return;
    memcpy(one, text, len);
    one[len] = '\0';
    PQconninfoOption *opts = PQconninfoParse(one, NULL);
    free(one);
    if (!opts)
        return;
    for (size_t i = 0; i < n && opts[i].keyword; i++)
        if (opts[i].val && seen[i] < 2)
            seen[i]++;
    PQconninfoFree(opts);
}

/* The end of the key=value pair at s (blanks before it skipped), as libpq's
 * conninfo_parse reads one: a quoted value ends at its unescaped quote, a
 * bare one at a blank; a backslash escapes the next byte in either. */
static const char *pg_pair_end(const char *s)
{
    s += strcspn(s, "= \t\n\r\f\v");
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '=')
        s++;
    while (isspace((unsigned char)*s))
        s++;
    bool quoted = *s == '\'';
    if (quoted)
        s++;
    for (; *s; s++) {
        if (*s == '\\' && s[1])
            s++;
        else if (quoted ? *s == '\'' : isspace((unsigned char)*s))
            return s + quoted;
    }
    return s;
}

/* The option url (which libpq parsed) sets twice, or NULL. libpq keeps the
 * last without a word: ?connect_timeout=5&connect_timeout=0 would leave
 * connects unbounded, a second sslmode give up TLS. Each part is read by
 * libpq alone, so its synonyms (?ssl=true is sslmode) and %-escapes
 * count, and the URI's own host, user and database against the query's. */
static const char *pg_option_twice(const char *url, char *key, size_t cap)
{
    PQconninfoOption *all = PQconninfoParse("", NULL);
    if (!all)
        return NULL;
    size_t n = 0;
    while (all[n].keyword)
        n++;
    unsigned char *seen = calloc(n ? n : 1, 1);
    const char *found = NULL;
    if (seen) {
        if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
            /* the query begins at the first '?' after the user's part,
             * which libpq reads up to an '@' before any '/': a '?' or '&'
             * in an unescaped password is the password's */
            const char *auth = url + (url[8] == ':' ? 11 : 13);
            const char *at = auth + strcspn(auth, "@/");
            size_t base = (size_t)((*at == '@' ? at + 1 : auth) - url);
            base += strcspn(url + base, "?");
            pg_count_options(url, base, seen, n);
            for (const char *q = url + base; *q;) {
                q++; /* the '?' or the '&' */
                size_t plen = strcspn(q, "&");
                char *piece = plen ? malloc(plen + 15) : NULL;
                if (piece) {
                    memcpy(piece, "postgresql://?", 14);
                    memcpy(piece + 14, q, plen);
                    pg_count_options(piece, plen + 14, seen, n);
                    free(piece);
                }
                q += plen;
            }
        } else {
            for (const char *p = url;;) {
                while (isspace((unsigned char)*p))
                    p++;
                if (!*p)
                    break;
                const char *e = pg_pair_end(p);
                pg_count_options(p, (size_t)(e - p), seen, n);
                p = e;
            }
        }
        for (size_t i = 0; i < n && !found; i++)
            if (seen[i] > 1) {
                snprintf(key, cap, "%s", all[i].keyword);
                found = key;
            }
        free(seen);
    }
    PQconninfoFree(all);
    return found;
}
#endif

int dbs__url_parse(const char *url, const dbs__driver **drv, char **conninfo,
                   int *memory, dbs_error *err)
{
    *drv = NULL;
    *conninfo = NULL;
    *memory = 0;
    if (!url || !*url)
        return dbs__err(err, DBS_ECONFIG,
                        "no database URL: set dbs_config.url or DATABASE_URL "
                        "(e.g. sqlite:app.db, postgresql://user@host/db or "
                        "mariadb://user@host/db)");
    char shown[160];
    dbs__redact(url, shown, sizeof shown);

    if (strncmp(url, "sqlite:", 7) == 0) {
        const char *rest = url + 7;
        const char *path;
        if (strncmp(rest, ":memory:", 8) == 0 && (rest[8] == '\0' || rest[8] == '?')) {
            *memory = 1;
            path = rest; /* with its option, if any: refused below */
        } else if (strncmp(rest, "///", 3) == 0) {
            path = rest + 2; /* keep the leading '/': absolute */
        } else if (strncmp(rest, "//", 2) == 0) {
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\": SQLite URLs name a file, not a host: "
                            "use sqlite:///abs/path.db or sqlite:relative.db", shown);
        } else {
            path = rest;
        }
        const char *q = strchr(path, '?');
        if (!*path || q == path)
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\" names no file: use sqlite:///abs/path.db, "
                            "sqlite:relative.db or sqlite::memory:", shown);
        /* An SQLite URI filename for memory gives each connection a
         * database of its own: the pool's connections would not share it. */
        if (strncmp(path, "file:", 5) == 0 &&
            (strstr(path, ":memory:") || strstr(path, "mode=memory")))
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\": an in-memory SQLite URI gives each connection a "
                            "database of its own; use sqlite::memory:, one database "
                            "shared by the pool's connections", shown);
        if (q && strcmp(q, "?" DBS__SQLITE_URL_OPTION "=full") != 0 &&
            strcmp(q, "?" DBS__SQLITE_URL_OPTION "=normal") != 0)
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\": the only option SQLite URLs take is "
                            "?synchronous=full (the default) or ?synchronous=normal", shown);
        if (q && *memory)
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\": an in-memory database has nothing to sync", shown);
        *drv = &dbs__driver_sqlite;
        *conninfo = dup_str(*memory ? ":memory:" : path);
        return *conninfo ? DBS_OK : dbs__err(err, DBS_ENOMEM, "out of memory");
    }
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0 ||
        looks_like_keyvalue(url)) {
#ifdef DBSCOPE_WITH_PG
        /* libpq's own parser, so dbscope accepts exactly what libpq does;
         * its message may quote the raw text, password included. */
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &perr);
        if (!opts) {
            /* scrubbed whole, then cut to fit: a secret cut first would
             * no longer be found */
            size_t pn = perr ? strlen(perr) + 64 : 0;
            char *full = pn ? malloc(pn) : NULL;
            char why[300];
            if (full) {
                snprintf(full, pn, "%s", perr);
                dbs__scrub_url_secrets(url, full, pn);
                snprintf(why, sizeof why, "%s", full);
                free(full);
            } else {
                snprintf(why, sizeof why, "%s", perr ? perr : "out of memory");
            }
            PQfreemem(perr);
            dbs__scrub_url_secrets(url, why, sizeof why);
            for (char *q = why; *q; q++)
                if (*q == '\n')
                    *q = ' ';
            size_t wl = strlen(why);
            while (wl > 0 && why[wl - 1] == ' ')
                why[--wl] = '\0';
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\" is not a valid PostgreSQL connection string: %s",
                            shown, why);
        }
        PQconninfoFree(opts);
        char twice[64];
        if (pg_option_twice(url, twice, sizeof twice))
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\": option %s given twice (libpq would keep the last "
                            "without a word): give it once", shown, twice);
        *drv = &dbs__driver_pg;
        *conninfo = dup_str(url);
        return *conninfo ? DBS_OK : dbs__err(err, DBS_ENOMEM, "out of memory");
#else
        return dbs__err(err, DBS_ECONFIG,
                        "URL \"%s\" is PostgreSQL, but this dbscope was built "
                        "without it (DBSCOPE_WITH_PG=OFF)", shown);
#endif
    }
    if (strncmp(url, "mysql://", 8) == 0 || strncmp(url, "mariadb://", 10) == 0) {
#ifdef DBSCOPE_WITH_MYSQL
        *drv = &dbs__driver_mysql;
        *conninfo = dup_str(url);
        return *conninfo ? DBS_OK : dbs__err(err, DBS_ENOMEM, "out of memory");
#else
        return dbs__err(err, DBS_ECONFIG,
                        "URL \"%s\" is MariaDB/MySQL, but this dbscope was built "
                        "without it (DBSCOPE_WITH_MYSQL=OFF)", shown);
#endif
    }
    const char *colon = strchr(url, ':');
    if (colon && colon - url < 20)
        return dbs__err(err, DBS_ECONFIG,
                        "URL \"%s\": unknown scheme \"%.*s\"; dbscope speaks sqlite: "
                        "(sqlite:app.db), postgresql: or postgres: "
                        "(postgresql://user@host/db), mariadb: or mysql: "
                        "(mariadb://user@host/db)",
                        shown, (int)(colon - url), url);
    return dbs__err(err, DBS_ECONFIG,
                    "URL \"%s\" is not a database URL: use sqlite:///abs/path.db, "
                    "sqlite:relative.db, sqlite::memory:, postgresql://user@host/db "
                    "or mariadb://user@host/db",
                    shown);
}

#ifdef DBSCOPE_WITH_PG
/* Appends "key='value' " to a growing string, quoting as libpq reads it. */
static bool kv_append(char **buf, size_t *len, size_t *cap, const char *key, const char *val,
                      size_t vlen)
{
    size_t need = *len + strlen(key) + 2 * vlen + 8;
    if (need > *cap) {
        size_t nc = need * 2;
        char *b = realloc(*buf, nc);
        if (!b)
            return false;
        *buf = b;
        *cap = nc;
    }
    char *w = *buf + *len;
    w += snprintf(w, *cap - *len, "%s='", key);
    for (size_t i = 0; i < vlen; i++) {
        if (val[i] == '\'' || val[i] == '\\')
            *w++ = '\\';
        *w++ = val[i];
    }
    *w++ = '\'';
    *w++ = ' ';
    *w = '\0';
    *len = (size_t)(w - *buf);
    return true;
}

/* The i-th element of a comma-separated list (libpq's multi-host syntax):
 * a list of one applies to every host. */
static const char *list_item(const char *list, int i, size_t *len)
{
    if (!list) {
        *len = 0;
        return NULL;
    }
    int items = 1;
    for (const char *q = list; *q; q++)
        items += *q == ',';
    if (items == 1)
        i = 0;
    const char *s = list;
    for (int k = 0; k < i; k++) {
        s = strchr(s, ',');
        if (!s) {
            *len = 0;
            return NULL;
        }
        s++;
    }
    const char *e = strchr(s, ',');
    *len = e ? (size_t)(e - s) : strlen(s);
    return s;
}

static int list_count(const char *list)
{
    if (!list || !*list)
        return 0;
    int n = 1;
    for (const char *q = list; *q; q++)
        n += *q == ',';
    return n;
}

/* The server that host i of a replica_url names, as a comparable key: a
 * numeric address (hostaddr, else host) by its value, a name as DNS
 * compares it (case aside; a socket directory as a path), a port by its
 * number (libpq's default as the labels show it). Two spellings of one
 * server give one key; a name and an address of one server do not (that
 * would take a lookup). */
static void server_key(const char *host, const char *hostaddr, const char *port, int i,
                       char *out, size_t cap)
{
    size_t hl, al, pl;
    const char *h = list_item(host, i, &hl), *a = list_item(hostaddr, i, &al),
               *pt = list_item(port, i, &pl);
    char name[256], pbuf[32];
    snprintf(name, sizeof name, "%.*s", (int)(al ? al : hl), al ? a : (hl ? h : ""));
    snprintf(pbuf, sizeof pbuf, "%.*s", (int)(pl ? pl : 4), pl ? pt : "5432");
    char *end;
    errno = 0;
    long pn = strtol(pbuf, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (!errno && end != pbuf && !*end)
        snprintf(pbuf, sizeof pbuf, "%ld", pn);
    unsigned char bin[sizeof(struct in6_addr)];
    char canon[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, name, bin) == 1 && inet_ntop(AF_INET, bin, canon, sizeof canon))
        snprintf(out, cap, "a:%s/%s", canon, pbuf);
    else if (inet_pton(AF_INET6, name, bin) == 1 &&
             inet_ntop(AF_INET6, bin, canon, sizeof canon))
        snprintf(out, cap, "a:%s/%s", canon, pbuf);
    else {
        /* a socket directory is a path: its case matters */
        for (char *c = name; *c && name[0] != '/' && name[0] != '@'; c++)
            *c = (char)tolower((unsigned char)*c);
        snprintf(out, cap, "h:%s/%s", name, pbuf);
    }
}

/* DBS_ECONFIG when two hosts of a replica_url are one server, or would be
 * shown as one (their labels): each would get a pool and a monitor, be
 * chosen twice as often, and show its metric series twice with the same
 * labels, which a scraper refuses. */
static int check_distinct(const char *shown, const char *host, const char *hostaddr,
                          const char *port, char **labels, int n, dbs_error *err)
{
    for (int j = 1; j < n; j++) {
        char kj[400];
        server_key(host, hostaddr, port, j, kj, sizeof kj);
        for (int i = 0; i < j; i++) {
            char ki[400];
            server_key(host, hostaddr, port, i, ki, sizeof ki);
            if (strcmp(ki, kj) != 0 && strcmp(labels[i], labels[j]) != 0)
                continue;
            return dbs__err(err, DBS_ECONFIG,
                            "replica_url \"%s\" names one replica twice: %s (host %d) and "
                            "%s (host %d); list each server once",
                            shown, labels[i], i + 1, labels[j], j + 1);
        }
    }
    return DBS_OK;
}

void dbs__url_hosts_free(char **targets, char **labels, int n)
{
    for (int i = 0; i < n; i++) {
        if (targets)
            free(targets[i]);
        if (labels)
            free(labels[i]);
    }
    free(targets);
    free(labels);
}

int dbs__url_split_hosts(const char *url, char ***targets, char ***labels, int *n,
                         dbs_error *err)
{
    *targets = *labels = NULL;
    *n = 0;
    char shown[160];
    dbs__redact(url, shown, sizeof shown);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &perr);
    if (!opts) {
        PQfreemem(perr);
        return dbs__err(err, DBS_ECONFIG,
                        "replica_url \"%s\" is not a valid PostgreSQL connection string",
                        shown);
    }
    char twice[64];
    if (pg_option_twice(url, twice, sizeof twice)) {
        PQconninfoFree(opts);
        return dbs__err(err, DBS_ECONFIG,
                        "replica_url \"%s\": option %s given twice (libpq would keep the "
                        "last without a word): give it once", shown, twice);
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *attrs = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "target_session_attrs"))
            attrs = o->val;
    }
    int rc = DBS_OK;
    /* Each replica is connected to alone, so the attribute only decides
     * whether that standby is reachable at all: these two never let a
     * standby through, and every read would go to the primary without a
     * word. (Words libpq does not know are refused by the replica's own
     * pool at its open.) */
    if (attrs && (!strcmp(attrs, "read-write") || !strcmp(attrs, "primary"))) {
        rc = dbs__err(err, DBS_ECONFIG,
                      "replica_url \"%s\": target_session_attrs=%s never connects to a "
                      "standby; use any, standby, prefer-standby or read-only, or leave it "
                      "out", shown, attrs);
        goto out;
    }
    int hosts = list_count(host) > list_count(hostaddr) ? list_count(host) : list_count(hostaddr);
    if (hosts == 0)
        hosts = 1; /* libpq's default host */
    int np = list_count(port);
    if ((np > 1 && np != hosts) ||
        (list_count(host) > 1 && list_count(hostaddr) > 1 &&
         list_count(host) != list_count(hostaddr))) {
        rc = dbs__err(err, DBS_ECONFIG,
                      "replica_url \"%s\": %d hosts but %d ports (give one port, or one "
                      "per host)", shown, hosts, np);
        goto out;
    }
    *targets = calloc((size_t)hosts, sizeof **targets);
    *labels = calloc((size_t)hosts, sizeof **labels);
    if (!*targets || !*labels) {
        rc = dbs__err(err, DBS_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < hosts; i++) {
        char *buf = NULL;
        size_t len = 0, cap = 0;
        bool ok = true;
        for (PQconninfoOption *o = opts; ok && o->keyword; o++) {
            if (!o->val || !*o->val)
                continue;
            bool per_host = !strcmp(o->keyword, "host") || !strcmp(o->keyword, "hostaddr") ||
                            !strcmp(o->keyword, "port");
            size_t vl = strlen(o->val);
            const char *v = per_host ? list_item(o->val, i, &vl) : o->val;
            if (v && vl)
                ok = kv_append(&buf, &len, &cap, o->keyword, v, vl);
        }
        /* PGTARGETSESSIONATTRS is meant for url (read-write, say): it
         * would keep the replicas from their standbys. The monitor tells
         * a standby from a primary itself. */
        if (ok && (!attrs || !*attrs))
            ok = kv_append(&buf, &len, &cap, "target_session_attrs", "any", 3);
        size_t hl, al, pl;
        const char *h = list_item(host, i, &hl), *a = list_item(hostaddr, i, &al),
                   *pt = list_item(port, i, &pl);
        char label[300];
        snprintf(label, sizeof label, "%.*s:%.*s", (int)(hl ? hl : al),
                 hl ? h : (al ? a : ""), (int)(pl ? pl : 4), pl ? pt : "5432");
        if (!hl && !al)
            snprintf(label, sizeof label, "default:%.*s", (int)(pl ? pl : 4), pl ? pt : "5432");
        /* shown in messages, stats and metrics: never a secret of the URL,
         * however oddly the host was written */
        dbs__scrub_url_secrets(url, label, sizeof label);
        (*labels)[i] = dup_str(label);
        if (ok && !buf)
            buf = dup_str(""); /* libpq's defaults for everything */
        (*targets)[i] = buf;
        if (!ok || !buf || !(*labels)[i]) {
            *n = i + 1;
            rc = dbs__err(err, DBS_ENOMEM, "out of memory");
            goto out;
        }
    }
    *n = hosts;
    rc = check_distinct(shown, host, hostaddr, port, *labels, hosts, err);
out:
    PQconninfoFree(opts);
    if (rc != DBS_OK) {
        dbs__url_hosts_free(*targets, *labels, *n);
        *targets = *labels = NULL;
        *n = 0;
    }
    return rc;
}
#endif
