/* Credential redaction: which option names hold secrets, the redacted form
 * of a URL, and scrubbing secrets out of messages that may quote them. No
 * I/O, no other file of the library: the URL parser (config.c) and the
 * network drivers all use it. */
#include "internal.h"

#ifdef DBSCOPE_WITH_PG
#include <libpq-fe.h>
#endif

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- secrets in URLs and connection strings ----
 *
 * One scanner (secret_spans) says where the secrets of a URL or key=value
 * string stand in its raw text, whether or not any parser accepts the rest;
 * dbs__redact masks them for every echo of such a string and
 * dbs__scrub_url_secrets takes them out of messages that quote them. A
 * secret is: the password of a URL's userinfo (user:SECRET@), in the
 * string itself or in a URL nested in a value; and the value of every
 * secret key, as a URL query parameter or a key=value pair, with the
 * words after it that no parser reads as a parameter (no '=': the rest of
 * a secret that held an unescaped '&' or space).
 *
 * The secret keys: every option that libpq marks secret (dispchar "*" in
 * PQconndefaults(): password and sslpassword in libpq 15), read from the
 * libpq this process runs with, and those of Connector/C and MariaDB
 * option files (password, passwd, ssl/tls passphrase), compared without
 * case, '-' or '_', after percent-decoding (libpq decodes a URL's
 * parameter names: ss%6cpassword= is sslpassword=). */

/* Normalized (lowercase, no '-' or '_') names, whatever libpq says too. */
static const char *const secret_keys_builtin[] = {
    "password",      "sslpassword",   "passwd",           "sslpassphrase",
    "tlspassphrase", "sslkeypassword", "oauthclientsecret",
};

#define SECRET_KEY_MAX 48
static char libpq_secret_keys[16][SECRET_KEY_MAX];
static int libpq_secret_n;
static pthread_once_t libpq_secret_once = PTHREAD_ONCE_INIT;

/* Writes key's normalized form to out (cap bytes); false if too long. */
static bool normalize_key(const char *key, size_t len, bool decode, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)key[i];
        unsigned hi, lo;
        if (decode && ch == '%' && i + 2 < len && isxdigit((unsigned char)key[i + 1]) &&
            isxdigit((unsigned char)key[i + 2]) &&
            sscanf(key + i + 1, "%1x%1x", &hi, &lo) == 2) {
            ch = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '-' || ch == '_' || isspace(ch))
            continue;
        if (o + 1 >= cap)
            return false;
        out[o++] = (char)tolower(ch);
    }
    out[o] = '\0';
    return true;
}

static void load_libpq_secret_keys(void)
{
#ifdef DBSCOPE_WITH_PG
    /* the option list alone: no defaults, no environment, no service file */
    PQconninfoOption *opts = PQconninfoParse("", NULL);
    if (!opts)
        return;
    for (PQconninfoOption *o = opts; o->keyword && libpq_secret_n < 16; o++)
        if (o->dispchar && strchr(o->dispchar, '*') &&
            normalize_key(o->keyword, strlen(o->keyword), false,
                          libpq_secret_keys[libpq_secret_n], SECRET_KEY_MAX))
            libpq_secret_n++;
    PQconninfoFree(opts);
#endif
}

bool dbs__secret_key(const char *key, size_t len, bool decode)
{
    char k[SECRET_KEY_MAX];
    if (!normalize_key(key, len, decode, k, sizeof k))
        return false; /* longer than any secret key's name */
    for (size_t i = 0; i < sizeof secret_keys_builtin / sizeof secret_keys_builtin[0]; i++)
        if (!strcmp(k, secret_keys_builtin[i]))
            return true;
    pthread_once(&libpq_secret_once, load_libpq_secret_keys);
    for (int i = 0; i < libpq_secret_n; i++)
        if (!strcmp(k, libpq_secret_keys[i]))
            return true;
    return false;
}

/* How a secret is written where it stands, so that scrubbing can also look
 * for it as a parser that read it would quote it. */
enum { SP_URL, SP_KV_QUOTED, SP_KV_PLAIN };
typedef struct {
    size_t off, len;
    int form;
} secret_span;

#define SPAN_MAX 32
typedef struct {
    secret_span s[SPAN_MAX];
    int n;
    size_t rest; /* more than SPAN_MAX secrets: all from here on is one */
    bool overflow;
} span_list;

static void span_add(span_list *l, size_t off, size_t len, int form)
{
    if (l->overflow) {
        if (off < l->rest)
            l->rest = off;
        return;
    }
    if (l->n == SPAN_MAX) {
        l->overflow = true;
        l->rest = off;
        return;
    }
    l->s[l->n].off = off;
    l->s[l->n].len = len;
    l->s[l->n].form = form;
    l->n++;
}

static bool is_scheme_at(const char *p, const char **after)
{
    if (!isalpha((unsigned char)*p))
        return false;
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (*p != ':')
        return false;
    *after = p + 1;
    return true;
}

/* The password of a userinfo that starts at p (after "scheme:" and any
 * "//") and ends before end: up to the LAST '@' before end, from its first
 * ':'. Taking the last '@' rather than the first '/' or '?' is deliberate:
 * a malformed URL (an unescaped '/', '?', '@' or '[' in the password, a
 * bad percent escape) must hide its password too; at worst a '@' in the
 * query hides more than it needs to. */
static void userinfo_span(const char *base, const char *p, const char *end, bool whole,
                          span_list *l)
{
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (!at)
        return;
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon)
        span_add(l, (size_t)(colon + 1 - base), (size_t)(at - (colon + 1)), SP_URL);
    else if (whole) /* "user:SECRET@host" read as scheme "user": all of it */
        span_add(l, (size_t)(p - base), (size_t)(at - p), SP_URL);
}

/* Where text's secrets stand (see above). A URL (text starting with
 * "scheme:") has its parameters after '?' or '&', each value running to the
 * next '&' (libpq and the MariaDB driver split there, and nothing else); a
 * key=value string has "key = value" pairs split by white space, a value
 * either '...' with backslash escapes or plain with backslash escapes
 * (libpq's conninfo grammar). Parameters are also looked for after white
 * space in a URL and after '?' or '&' in a key=value string: what neither
 * parser would read is hidden all the same. */
static void secret_spans(const char *text, span_list *l)
{
    memset(l, 0, sizeof *l);
    const char *after;
    bool url = is_scheme_at(text, &after);
    if (url) {
        /* Without "//" what looks like a scheme may be a user name
         * (app:SECRET@host, a URL missing its scheme): a userinfo with no
         * ':' is then all password. */
        bool slashes = after[0] == '/' && after[1] == '/';
        if (slashes)
            after += 2;
        userinfo_span(text, after, after + strlen(after), !slashes, l);
    } else if (strchr(text, '@')) {
        /* Not a URL at all ("postgres//u:SECRET@h", "//u:SECRET@h"): from
         * the first ':' to the last '@' may be a password. */
        userinfo_span(text, text, text + strlen(text), false, l);
    }
    /* a URL anywhere else (nested in a value, or a stray word): its
     * userinfo, up to white space, a quote or a '&' */
    for (const char *p = strstr(text, "://"); p; p = strstr(p + 3, "://")) {
        const char *u = p + 3, *e = u;
        while (*e && !isspace((unsigned char)*e) && *e != '\'' && *e != '&')
            e++;
        userinfo_span(text, u, e, false, l);
    }
    /* Pairs also start after ';', as in the connection strings of other
     * ecosystems (Password=SECRET;...): what no parser here would read is
     * hidden all the same. */
    for (const char *p = text; *p;) {
        bool start = p == text ? !url
                               : (p[-1] == '?' || p[-1] == '&' || p[-1] == ';' ||
                                  isspace((unsigned char)p[-1]));
        if (!start || isspace((unsigned char)*p) || *p == '&' || *p == '?' || *p == '=') {
            p++;
            continue;
        }
        const char *k = p;
        while (*p && *p != '=' && *p != '&' && *p != '?' && !isspace((unsigned char)*p))
            p++;
        size_t kl = (size_t)(p - k);
        const char *q = p;
        while (isspace((unsigned char)*q))
            q++;
        if (*q != '=' || !dbs__secret_key(k, kl, true))
            continue; /* p is past the key: its value is scanned as text */
        q++;
        if (url) { /* to the next '&', white space and quotes included */
            const char *v = q;
            while (*q && *q != '&')
                q++;
            /* A secret with an unescaped '&' in it: libpq quotes the rest
             * ("missing key/value separator ... \"r3st\""), which no parser
             * reads as a parameter, having no '='. */
            for (;;) {
                const char *t = q, *e;
                while (*t == '&')
                    t++;
                for (e = t; *e && *e != '&' && *e != '='; e++) {
                }
                if (t == q || e == t || *e == '=')
                    break;
                q = e;
            }
            span_add(l, (size_t)(v - text), (size_t)(q - v), SP_URL);
        } else {
            while (isspace((unsigned char)*q))
                q++;
            const char *v = q;
            int form;
            if (*q == '\'') {
                form = SP_KV_QUOTED;
                q++;
                while (*q && *q != '\'') {
                    if (*q == '\\' && q[1])
                        q++;
                    q++;
                }
                if (*q)
                    q++;
            } else {
                form = SP_KV_PLAIN;
                while (*q && !isspace((unsigned char)*q)) {
                    if (*q == '\\' && q[1])
                        q++;
                    q++;
                }
            }
            /* A secret with white space in it, unquoted or in double
             * quotes: libpq ends it at the space and quotes the rest
             * ("missing \"=\" after ..."). Words up to the next "key ="
             * are that rest; a valid string has none. */
            for (;;) {
                const char *t = q, *e, *f;
                while (isspace((unsigned char)*t))
                    t++;
                for (e = t; *e && *e != '=' && !isspace((unsigned char)*e); e++) {
                }
                for (f = e; isspace((unsigned char)*f); f++) {
                }
                if (t == q || e == t || *f == '=')
                    break;
                q = e;
            }
            span_add(l, (size_t)(v - text), (size_t)(q - v), form);
        }
        p = q;
    }
}

/* Whether byte i of the text is inside a secret; whether a secret with no
 * bytes (an empty value) stands right before it. */
static bool span_covers(const span_list *l, size_t i)
{
    for (int k = 0; k < l->n; k++)
        if (l->s[k].off <= i && i < l->s[k].off + l->s[k].len)
            return true;
    return l->overflow && i >= l->rest;
}

static bool span_empty_at(const span_list *l, size_t i)
{
    for (int k = 0; k < l->n; k++)
        if (l->s[k].off == i && l->s[k].len == 0)
            return true;
    return false;
}

void dbs__redact(const char *url, char *out, size_t n)
{
    if (n == 0)
        return;
    const char *p = url ? url : "";
    span_list l;
    secret_spans(p, &l);
    size_t o = 0, len = strlen(p);
#define PUT(ch)                                                                \
    do {                                                                       \
        if (o + 1 < n)                                                         \
            out[o++] = (ch);                                                   \
    } while (0)
    bool masking = false; /* secrets that touch become one "***" */
    for (size_t i = 0; i <= len; i++) {
        bool covered = i < len && span_covers(&l, i);
        if (!masking && (covered || span_empty_at(&l, i))) {
            PUT('*'); PUT('*'); PUT('*');
        }
        masking = covered;
        if (!covered && i < len)
            PUT(p[i]);
    }
    out[o] = '\0';
#undef PUT
}

void dbs__scrub_text(char *msg, size_t cap, const char *needle, size_t len)
{
    if (!msg || !needle || len == 0 || cap == 0)
        return;
    char *p = msg;
    /* A needle of one or two bytes is found inside most words of any
     * message ("p" in "postgresql"): it is replaced only where it stands
     * alone, as a message quotes a value, so the message stays readable. */
    bool alone = len < 3;
    /* From after each replacement on: a needle that "***" contains (a
     * password of asterisks) must not be found again in its own mask. */
    while ((p = strstr(p, needle)) != NULL) {
        if (alone && ((p > msg && isalnum((unsigned char)p[-1])) ||
                      isalnum((unsigned char)p[len]))) {
            p++;
            continue;
        }
        size_t pos = (size_t)(p - msg);
        if (pos + 3 >= cap) { /* no room for the mask: cut the message */
            *p = '\0';
            return;
        }
        size_t tail = strlen(p + len);
        if (pos + 3 + tail >= cap)
            tail = cap - 1 - pos - 3;
        memmove(p + 3, p + len, tail);
        p[3 + tail] = '\0';
        memcpy(p, "***", 3);
        p += 3;
    }
    /* A message cut to fit its buffer may end in the first bytes of the
     * needle (a value quoted whole, then truncated): those go too. */
    size_t m = strlen(msg), kmax = len - 1 < m ? len - 1 : m;
    for (size_t at = m - kmax; at + 3 <= m; at++)
        if (msg[at] == needle[0] && memcmp(msg + at, needle, m - at) == 0) {
            if (at + 3 < cap)
                memcpy(msg + at, "***", 4);
            else
                msg[at] = '\0';
            return;
        }
}

/* value (len bytes, written in form) as its parser reads it, to dec
 * (len + 1 bytes): percent escapes decoded for a URL; quotes and backslash
 * escapes for key=value (libpq's conninfo grammar). percent: decode percent
 * escapes whatever the form (what no parser would do, but a caller might
 * have meant). Returns dec's length; a decoded NUL cuts it there. */
static size_t decode_value(const char *v, size_t len, int form, bool percent, char *dec)
{
    size_t d = 0, i = 0;
    bool quoted = form == SP_KV_QUOTED && len > 0 && v[0] == '\'';
    if (quoted)
        i = 1;
    for (; i < len; i++) {
        unsigned hi, lo;
        if ((form == SP_URL || percent) && v[i] == '%' && i + 2 < len &&
            isxdigit((unsigned char)v[i + 1]) && isxdigit((unsigned char)v[i + 2]) &&
            sscanf(v + i + 1, "%1x%1x", &hi, &lo) == 2) {
            dec[d++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (form != SP_URL && v[i] == '\\' && i + 1 < len) {
            dec[d++] = v[++i];
        } else if (quoted && v[i] == '\'') {
            break;
        } else {
            dec[d++] = v[i];
        }
    }
    dec[d] = '\0';
    return strlen(dec);
}

/* Replaces in msg every copy of value (len bytes), decoded, and its pieces.
 * A value of any length: one the scrub cannot copy (out of memory)
 * replaces msg rather than let it through. */
static void scrub_value(char *msg, size_t cap, const char *value, size_t len, int form)
{
    if (len == 0)
        return;
    char *raw = malloc(3 * (len + 1));
    if (!raw) {
        snprintf(msg, cap, "(not shown: out of memory while hiding its secrets)");
        return;
    }
    char *dec = raw + len + 1, *piece = dec + len + 1;
    memcpy(raw, value, len);
    raw[len] = '\0';
    dbs__scrub_text(msg, cap, raw, len);
    for (int percent = 0; percent < 2; percent++) {
        size_t d = decode_value(raw, len, form, percent, dec);
        if (d > 0)
            dbs__scrub_text(msg, cap, dec, d);
    }
    /* Several parameters taken as one (more secrets than SPAN_MAX: the
     * rest of the text is one span): each '&'-separated value, as a parser
     * quotes it, raw and decoded. */
    for (size_t a = 0; a < len;) {
        size_t b = a;
        while (b < len && raw[b] != '&')
            b++;
        const char *eq = memchr(raw + a, '=', b - a);
        size_t v = eq ? (size_t)(eq + 1 - raw) : a;
        if (b - v >= 3 && b - v < len) {
            memcpy(piece, raw + v, b - v);
            piece[b - v] = '\0';
            dbs__scrub_text(msg, cap, piece, b - v);
            for (int percent = 0; percent < 2; percent++) {
                size_t d = decode_value(piece, b - v, form, percent, dec);
                if (d >= 3)
                    dbs__scrub_text(msg, cap, dec, d);
            }
        }
        a = b + 1;
    }
    /* A parser that splits the malformed text elsewhere (at the first '@',
     * at a '/', a '[', an '&') quotes pieces of it: each piece of 3 bytes
     * or more. */
    for (size_t a = 0; a < len;) {
        size_t b = a;
        while (b < len && !strchr("@:/?#[]%&'\\ \t\n\v\f\r", raw[b]))
            b++;
        if (b - a >= 3 && b - a < len) {
            memcpy(piece, raw + a, b - a);
            piece[b - a] = '\0';
            dbs__scrub_text(msg, cap, piece, b - a);
        }
        a = b + 1;
    }
    free(raw);
}

void dbs__scrub_url_secrets(const char *url, char *msg, size_t cap)
{
    if (!url || !msg || cap == 0)
        return;
    span_list l;
    secret_spans(url, &l);
    for (int k = 0; k < l.n; k++)
        scrub_value(msg, cap, url + l.s[k].off, l.s[k].len, l.s[k].form);
    if (l.overflow)
        scrub_value(msg, cap, url + l.rest, strlen(url + l.rest), SP_URL);
#ifdef DBSCOPE_WITH_PG
    /* and each secret as libpq itself reads it from the string */
    if (strncmp(url, "mysql://", 8) != 0 && strncmp(url, "mariadb://", 10) != 0 &&
        strncmp(url, "sqlite:", 7) != 0) {
        PQconninfoOption *opts = PQconninfoParse(url, NULL);
        if (opts) {
            for (PQconninfoOption *o = opts; o->keyword; o++)
                if (o->val && o->val[0] && o->dispchar && strchr(o->dispchar, '*'))
                    dbs__scrub_text(msg, cap, o->val, strlen(o->val));
            PQconninfoFree(opts);
        }
    }
#endif
}
