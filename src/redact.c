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
 * words after it that are the rest of a secret that held an unescaped '&'
 * or space: where the text's parser reads parameters, every word up to the
 * next key it knows (a word with no '=', or a key it does not know: it
 * quotes them); elsewhere, the words with no '='. And the value of every
 * key the text's parser does not know, most likely a mistyped secret
 * (pasword=) or the rest of one. Key names stay: a message naming one
 * still helps.
 *
 * The secret keys: every option that libpq marks secret (dispchar "*" in
 * PQconndefaults(): password and sslpassword in libpq 15), read from the
 * libpq this process runs with, and those of Connector/C and MariaDB
 * option files (password, passwd, ssl/tls passphrase), MySQL's
 * multi-factor passwords (password1, password2, password3) and ODBC's
 * pwd, compared without case, '-' or '_', after percent-decoding (libpq
 * decodes a URL's parameter names: ss%6cpassword= is sslpassword=). In
 * a parameter its parser does not know the value is masked whatever the
 * key; the list matters where a pair is read inside another value
 * (application_name='a password2=...') or after a ';'.
 *
 * The known keys, by the parser that reads the text (as config.c sends
 * it): for a key=value string and a postgres:// or postgresql:// URL, every
 * option of the libpq this process runs with (PQconninfoParse's list),
 * and in a URL the "ssl=true" libpq reads as sslmode=require; for a
 * mysql:// or mariadb:// URL, DBS__MYSQL_URL_OPTIONS; for sqlite:,
 * DBS__SQLITE_URL_OPTION; for any other scheme, none. Compared as those
 * parsers compare them: exactly, after percent-decoding in a URL. */

/* Normalized (lowercase, no '-' or '_') names, whatever libpq says too. */
static const char *const secret_keys_builtin[] = {
    "password",      "sslpassword",   "passwd",           "sslpassphrase",
    "tlspassphrase", "sslkeypassword", "oauthclientsecret", "password1",
    "password2",     "password3",     "pwd",
};

#define SECRET_KEY_MAX 48
static char libpq_secret_keys[16][SECRET_KEY_MAX];
static int libpq_secret_n;
/* every option libpq knows, as it spells them; one past the room is
 * unknown, its value masked */
static char libpq_keys[128][SECRET_KEY_MAX];
static int libpq_key_n;
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
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (libpq_secret_n < 16 && o->dispchar && strchr(o->dispchar, '*') &&
            normalize_key(o->keyword, strlen(o->keyword), false,
                          libpq_secret_keys[libpq_secret_n], SECRET_KEY_MAX))
            libpq_secret_n++;
        if (libpq_key_n < 128 && strlen(o->keyword) < SECRET_KEY_MAX)
            strcpy(libpq_keys[libpq_key_n++], o->keyword);
    }
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

/* The parser that reads a text, for the keys it knows. */
enum { PARSE_NONE, PARSE_LIBPQ_KV, PARSE_LIBPQ_URL, PARSE_MYSQL, PARSE_SQLITE };

/* Whether the parser reads key (len bytes; val, vlen: its value, in a URL)
 * as one of its options. A bad escape, a decoded NUL or a name longer than
 * any option's is none: the parser refuses it, or reads another key. */
static bool key_known(int parser, const char *key, size_t len, const char *val, size_t vlen)
{
    char k[SECRET_KEY_MAX];
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned hi, lo;
        char ch = key[i];
        if (parser != PARSE_LIBPQ_KV && ch == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)key[i + 1]) ||
                !isxdigit((unsigned char)key[i + 2]) ||
                sscanf(key + i + 1, "%1x%1x", &hi, &lo) != 2)
                return false;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0' || o + 1 >= sizeof k)
            return false;
        k[o++] = ch;
    }
    k[o] = '\0';
    if (parser == PARSE_LIBPQ_URL && !strcmp(k, "ssl"))
        return vlen == 4 && !memcmp(val, "true", 4); /* else libpq refuses it */
    if (parser == PARSE_LIBPQ_KV || parser == PARSE_LIBPQ_URL) {
        pthread_once(&libpq_secret_once, load_libpq_secret_keys);
        for (int i = 0; i < libpq_key_n; i++)
            if (!strcmp(k, libpq_keys[i]))
                return true;
    } else if (parser == PARSE_MYSQL) {
        static const char *const opts[] = {DBS__MYSQL_URL_OPTIONS};
        for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
            if (!strcmp(k, opts[i]))
                return true;
    } else if (parser == PARSE_SQLITE) {
        return !strcmp(k, DBS__SQLITE_URL_OPTION);
    }
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
    for (int i = 0; i < l->n; i++)
        if (l->s[i].off == off && l->s[i].len == len)
            return; /* found again by parser_spans */
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

static int parser_of(const char *text)
{
    const char *after;
    if (!is_scheme_at(text, &after))
        return PARSE_LIBPQ_KV;
    if (!strncmp(text, "postgresql://", 13) || !strncmp(text, "postgres://", 11))
        return PARSE_LIBPQ_URL;
    if (!strncmp(text, "mysql://", 8) || !strncmp(text, "mariadb://", 10))
        return PARSE_MYSQL;
    if (!strncmp(text, "sqlite:", 7))
        return PARSE_SQLITE;
    return PARSE_NONE;
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

/* The end of a key=value string's value that starts at q: '...' with
 * backslash escapes, or plain up to white space with backslash escapes
 * (libpq's conninfo grammar). */
static const char *kv_value_end(const char *q)
{
    if (*q == '\'') {
        q++;
        while (*q && *q != '\'') {
            if (*q == '\\' && q[1])
                q++;
            q++;
        }
        return *q ? q + 1 : q;
    }
    while (*q && !isspace((unsigned char)*q)) {
        if (*q == '\\' && q[1])
            q++;
        q++;
    }
    return q;
}

/* A secret with white space in it, unquoted or in double quotes: libpq
 * ends it at the space (or a closing quote) and reads on, quoting the
 * rest ("missing \"=\" after ...", "invalid connection option ..."). So
 * the words after a secret's value (ending at q) up to the next key libpq
 * knows are that rest: a word with no '=', or an unknown key and its
 * value. A valid string has none. Where libpq reads no parameters
 * (!parsed: inside a value, after a ';'), any "key =" ends it. Returns
 * their end. */
static const char *kv_rest(const char *q, bool parsed)
{
    for (;;) {
        const char *t = q, *e, *f;
        while (isspace((unsigned char)*t))
            t++;
        if (!*t || (!parsed && t == q))
            return q;
        for (e = t; *e && *e != '=' && !isspace((unsigned char)*e); e++) {
        }
        for (f = e; isspace((unsigned char)*f); f++) {
        }
        if (*f == '=') {
            if (!parsed || key_known(PARSE_LIBPQ_KV, t, (size_t)(e - t), NULL, 0))
                return q;
            for (f++; isspace((unsigned char)*f); f++) {
            }
            e = kv_value_end(f);
        }
        q = e;
    }
}

/* The same in a URL's query, for a secret with an unescaped '&' in it:
 * the parameters after its value (ending at q, at '&' or the end) up to the
 * next key the URL's parser knows; libpq and the MariaDB driver quote the
 * others ("missing key/value separator", "invalid URI query parameter",
 * "unknown option"); !parsed, any "key=" ends it. */
static const char *url_rest(const char *q, int parser, bool parsed)
{
    for (;;) {
        const char *t = q, *e, *v;
        while (*t == '&')
            t++;
        if (!*t)
            return q;
        for (e = t; *e && *e != '&' && *e != '='; e++) {
        }
        if (*e == '=') {
            for (v = ++e; *e && *e != '&'; e++) {
            }
            if (!parsed || key_known(parser, t, (size_t)(v - 1 - t), v, (size_t)(e - v)))
                return q;
        }
        q = e;
    }
}

/* The parameters as the text's own parser reads them (libpq's key=value
 * grammar, or a URL's query split at '&'): the value of every secret key
 * and every key the parser does not know, with the rest after it as above.
 * Words inside a known key's value are no keys here
 * (options='-c statement_timeout=5000'); secret_spans still looks there. */
static void parser_spans(const char *text, int parser, span_list *l)
{
    if (parser == PARSE_LIBPQ_KV) {
        for (const char *p = text;;) {
            while (isspace((unsigned char)*p))
                p++;
            if (!*p)
                return;
            const char *k = p;
            while (*p && *p != '=' && !isspace((unsigned char)*p))
                p++;
            size_t kl = (size_t)(p - k);
            const char *q = p;
            while (isspace((unsigned char)*q))
                q++;
            if (*q != '=')
                continue; /* libpq stops here: "missing \"=\" after ..." */
            for (q++; isspace((unsigned char)*q); q++) {
            }
            const char *v = q;
            q = kv_value_end(q);
            if (dbs__secret_key(k, kl, true) || !key_known(parser, k, kl, NULL, 0)) {
                q = kv_rest(q, true);
                span_add(l, (size_t)(v - text), (size_t)(q - v),
                         *v == '\'' ? SP_KV_QUOTED : SP_KV_PLAIN);
            }
            p = q;
        }
    }
    const char *p = strchr(text, '?');
    if (!p)
        return;
    for (p++; *p;) {
        const char *k = p, *e = p;
        while (*e && *e != '&' && *e != '=')
            e++;
        if (*e != '=') { /* no value: the parser refuses it, naming it */
            p = *e ? e + 1 : e;
            continue;
        }
        const char *v = e + 1, *q = v;
        while (*q && *q != '&')
            q++;
        size_t kl = (size_t)(e - k);
        if (dbs__secret_key(k, kl, true) || !key_known(parser, k, kl, v, (size_t)(q - v))) {
            q = url_rest(q, parser, true);
            span_add(l, (size_t)(v - text), (size_t)(q - v), SP_URL);
        }
        p = *q ? q + 1 : q;
    }
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
            q = url_rest(q, PARSE_NONE, false);
            span_add(l, (size_t)(v - text), (size_t)(q - v), SP_URL);
        } else {
            while (isspace((unsigned char)*q))
                q++;
            const char *v = q;
            int form = *q == '\'' ? SP_KV_QUOTED : SP_KV_PLAIN;
            q = kv_rest(kv_value_end(q), false);
            span_add(l, (size_t)(v - text), (size_t)(q - v), form);
        }
        p = q;
    }
    parser_spans(text, parser_of(text), l);
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
     * rest of the text is one span; a secret and the words after it): each
     * value separated by '&' or by white space (not escaped, in key=value),
     * as a parser quotes it, raw and decoded. */
    for (int sp = 0; sp < 2; sp++)
        for (size_t a = 0; a < len;) {
            size_t b = a;
            while (b < len && (sp ? !isspace((unsigned char)raw[b]) : raw[b] != '&'))
                b += sp && form != SP_URL && raw[b] == '\\' && b + 1 < len ? 2 : 1;
            /* the word whole (a value), and after its '=' (a parameter) */
            const char *eq = memchr(raw + a, '=', b - a);
            size_t from[2] = {a, eq ? (size_t)(eq + 1 - raw) : a};
            for (int w = 0; w < 2; w++) {
                size_t v = from[w];
                if (b - v < 3 || b - v >= len || (w == 1 && v == a))
                    continue;
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
     * at a '/', a '[', an '&', an '=') quotes pieces of it: each piece of 3
     * bytes or more, and a shorter one where it is quoted as a word (the
     * rest of a secret read as a key: invalid connection option "ab"). */
    static const char *const seps[] = {"@:/?#[]%&'\\ \t\n\v\f\r",
                                       "@:/?#[]%&'\\= \t\n\v\f\r"};
    for (int s = 0; s < 2; s++)
        for (size_t a = 0; a < len;) {
            size_t b = a;
            while (b < len && !strchr(seps[s], raw[b]))
                b++;
            if (b - a >= 3 && b - a < len) {
                memcpy(piece, raw + a, b - a);
                piece[b - a] = '\0';
                dbs__scrub_text(msg, cap, piece, b - a);
            } else if (s == 1 && b > a && b - a < len) {
                char word[8];
                int wl = snprintf(word, sizeof word, "\"%.*s\"", (int)(b - a), raw + a);
                dbs__scrub_text(msg, cap, word, (size_t)wl);
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
