/* URL parsing and redaction (src/config.c, src/redact.c). Two kinds of input: raw bytes
 * as a URL, and URLs built around a secret the target knows, so it can
 * check that the secret never reaches the redacted text nor any error
 * message: a password in the userinfo or as password=, and (kind 4) a
 * random secret under any secret key libpq or Connector/C defines, in any
 * spelling (case, percent-encoded name, '-' or '_'), in any position among
 * other parameters, in a URL, a key=value string (plain with backslash
 * escapes, or quoted with \' escapes), or in a URL nested in a value. */
#include "internal.h"

#include "fuzz.h"
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_redact(const char *url, const char *secret)
{
    char out[160];
    dbs__redact(url, out, sizeof out);
    CHECK(memchr(out, '\0', sizeof out) != NULL);
    char big[4096];
    dbs__redact(url, big, sizeof big);
    /* every password= parameter left in the text is masked */
    for (const char *p = big; (p = strstr(p, "password=")); p += 9)
        if (p == big || p[-1] == '?' || p[-1] == '&' || p[-1] == ' ') {
            const char *v = p + 9;
            while (isspace((unsigned char)*v))
                v++;
            CHECK(strncmp(v, "***", 3) == 0 || *v == '\0');
        }
    if (secret) {
        CHECK(strstr(big, secret) == NULL);
        CHECK(strstr(out, secret) == NULL);
    }
    char tiny[1];
    dbs__redact(url, tiny, 0);
    dbs__redact(url, tiny, 1);
    CHECK(tiny[0] == '\0');
}

static void check_parse(const char *url, const char *secret)
{
    const dbs__driver *drv;
    char *conninfo;
    int memory;
    dbs_error err;
    memset(&err, 0x5a, sizeof err);
    int rc = dbs__url_parse(url, &drv, &conninfo, &memory, &err);
    if (rc == DBS_OK) {
        CHECK(drv != NULL && conninfo != NULL);
        free(conninfo);
    } else {
        CHECK(rc == DBS_ECONFIG || rc == DBS_ENOMEM);
        CHECK(err.code == rc);
        CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
        CHECK(drv == NULL && conninfo == NULL);
        CHECK(err.message[0] != '\0');
        if (secret)
            CHECK(strstr(err.message, secret) == NULL);
    }
}

/* Percent-encodes every byte but letters and digits, as a URL carries a
 * password that holds anything. */
static void encode(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* The URL of kind 1..3 with secret as its password and tail after it. */
static void build(char *out, size_t cap, int kind, const char *secret, const char *tail)
{
    if (kind == 1)
        snprintf(out, cap, "postgresql://app:%s@%s", secret, tail);
    else if (kind == 2)
        snprintf(out, cap, "host=db password=%s %s", secret, tail);
    else
        snprintf(out, cap, "postgresql://app@db/x?sslmode=disable&password=%s&%s", secret, tail);
}


/* The secret keys, as their definers spell them. */
static const char *const secret_keys[] = {
    "password", "sslpassword", "passwd", "ssl_passphrase", "ssl-passphrase",
    "tls_passphrase", "tls-passphrase", "password1", "password2", "password3", "pwd",
};

/* Appends to out (at *o, cap bytes) key as written under the bits of
 * spell: each letter upper or lower, each byte maybe percent-encoded (a
 * URL's parameter names are decoded by libpq). */
static void put_key(char *out, size_t *o, size_t cap, const char *key, uint32_t spell, bool url)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; key[i] && *o + 4 < cap; i++) {
        unsigned char c = (unsigned char)key[i];
        uint32_t bits = spell >> ((2 * i) % 30);
        if (bits & 1)
            c = (unsigned char)(c >= 'a' && c <= 'z' ? c - 32 : c);
        if (url && (bits & 2)) {
            out[(*o)++] = '%';
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        } else {
            out[(*o)++] = (char)c;
        }
    }
}

/* Appends value as the form writes it: percent-encoded (URL), quoted with
 * \' and \\ escapes, or plain with backslash escapes. */
static void put_value(char *out, size_t *o, size_t cap, const char *v, int form)
{
    static const char hex[] = "0123456789ABCDEF";
    if (form == 1)
        out[(*o)++] = '\'';
    for (size_t i = 0; v[i] && *o + 6 < cap; i++) {
        unsigned char c = (unsigned char)v[i];
        if (form == 0) {
            if (isalnum(c)) {
                out[(*o)++] = (char)c;
            } else {
                out[(*o)++] = '%';
                out[(*o)++] = hex[c >> 4];
                out[(*o)++] = hex[c & 15];
            }
        } else {
            if (c == '\\' || c == '\'' || (form == 2 && isspace(c)))
                out[(*o)++] = '\\';
            out[(*o)++] = (char)c;
        }
    }
    if (form == 1)
        out[(*o)++] = '\'';
    out[*o] = '\0';
}

/* One text of kind 4 with secret (or a stand-in) under its key. */
static void build_keyed(char *out, size_t cap, const uint8_t *d, const char *secret,
                        const char *tail)
{
    int layout = d[0] % 6; /* 0, 1: URL (pg, mysql); 2, 3: key=value; 4, 5: nested */
    const char *key = secret_keys[d[1] % (sizeof secret_keys / sizeof secret_keys[0])];
    int before = d[2] % 5;
    uint32_t spell = (uint32_t)d[3] | (uint32_t)d[4] << 8 | (uint32_t)d[5] << 16;
    size_t o = 0;
    bool url = layout < 2;
    o += (size_t)snprintf(out, cap, "%s",
                          layout == 0   ? "postgresql://app@db/x?"
                          : layout == 1 ? "mysql://app@db/x?"
                                        : "host=db ");
    for (int i = 0; i < before; i++)
        o += (size_t)snprintf(out + o, cap - o, url ? "opt%d=v%d&" : "opt%d = v%d ", i, i);
    if (layout >= 4) {
        /* a URL nested in a value, with the secret as its password */
        o += (size_t)snprintf(out + o, cap - o, "dbname=%spostgresql://u:",
                              layout == 4 ? "'" : "");
        put_value(out, &o, cap, secret, 0);
        o += (size_t)snprintf(out + o, cap - o, "@h/db%s ", layout == 4 ? "'" : "");
    } else {
        put_key(out, &o, cap, key, spell, url);
        o += (size_t)snprintf(out + o, cap - o, "%s", url ? "=" : (spell & 4) ? " = " : "=");
        put_value(out, &o, cap, secret, url ? 0 : layout == 2 ? 1 : 2);
        o += (size_t)snprintf(out + o, cap - o, "%s", url ? "&" : " ");
    }
    snprintf(out + o, cap - o, "%s", tail);
}

static void check_keyed(const uint8_t *data, size_t size)
{
    if (size < 16)
        return;
    const uint8_t *d = data + 1;
    /* the secret: 8..23 bytes of letters, digits and the punctuation
     * every form has to escape */
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789 '\\&%@:/?=#\"";
    size_t sl = 8 + d[6] % 16;
    if (size < 8 + sl)
        return;
    char secret[32];
    for (size_t i = 0; i < sl; i++)
        secret[i] = alphabet[d[7 + i] % (sizeof alphabet - 1)];
    secret[sl] = '\0';
    size_t tl = size - 8 - sl;
    char *tail = malloc(tl + 1);
    memcpy(tail, d + 7 + sl, tl);
    tail[tl] = '\0';
    for (size_t i = 0; i < tl; i++)
        if (tail[i] == '\0' || tail[i] == '@' || tail[i] == ':' || tail[i] == '\'')
            tail[i] = '_';
    size_t cap = tl + 512;
    char *text = malloc(cap);
    /* a secret that the text shows anyway (in the tail, in the template)
     * proves nothing */
    build_keyed(text, cap, d, "Q", tail);
    char baseline[4096];
    dbs__redact(text, baseline, sizeof baseline);
    bool fair = !strstr(baseline, secret) && !strstr(text, secret);
    size_t q = 0;
    char enc[128]; /* the secret percent-encoded, as a URL carries it */
    put_value(enc, &q, sizeof enc, secret, 0);
    fair = fair && !strstr(baseline, enc) && !strstr(text, enc);
    build_keyed(text, cap, d, secret, tail);
    if (fair) {
        check_redact(text, secret);
        char big[4096];
        dbs__redact(text, big, sizeof big);
        CHECK(strstr(big, enc) == NULL);
        check_parse(text, secret);
        /* a message quoting the secret, decoded and (in a URL) as written */
        bool in_url = d[0] % 6 < 2 || d[0] % 6 >= 4;
        char msg[512];
        snprintf(msg, sizeof msg, "failed: \"%s\" (%s)", secret, in_url ? enc : "");
        dbs__scrub_url_secrets(text, msg, sizeof msg);
        CHECK(strstr(msg, secret) == NULL);
        CHECK(strstr(msg, enc) == NULL);
    }
    free(text);
    free(tail);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2000)
        return 0;
    char *raw = malloc(size);
    memcpy(raw, data + 1, size - 1);
    raw[size - 1] = '\0';
    switch (data[0] % 5) {
    case 0: /* anything at all */
        check_redact(raw, NULL);
        check_parse(raw, NULL);
        break;
    case 1:   /* postgresql://user:SECRET@rest */
    case 2: { /* key=value with password=SECRET */
        /* the secret is the first 8..32 bytes, the rest is the URL's tail */
        size_t sl = 8 + (size > 1 ? data[1] % 25 : 0);
        if (size < 2 + sl)
            break;
        const uint8_t *sp = data + 2;
        char secret[3 * 32 + 1];
        encode(sp, sl, secret);
        /* the secret must not stand anywhere else in the URL, or finding it
         * in the output would prove nothing */
        size_t tl = size - 2 - sl;
        char *tail = malloc(tl + 1);
        memcpy(tail, data + 2 + sl, tl);
        tail[tl] = '\0';
        for (size_t i = 0; i < tl; i++)
            if (tail[i] == '\0' || tail[i] == '@' || tail[i] == ':')
                tail[i] = '_';
        char *url = malloc(tl + 200 + sizeof secret);
        int kind = data[0] % 5;
        /* the same URL with a stand-in for the secret: whatever of the
         * secret it shows comes from the template or the tail, not from
         * the password, and proves nothing */
        build(url, tl + 200 + sizeof secret, kind, "Q", tail);
        char baseline[4096];
        dbs__redact(url, baseline, sizeof baseline);
        bool fair = !strstr(baseline, secret) && !strstr(url, secret);
        build(url, tl + 200 + sizeof secret, kind, secret, tail);
        if (fair) {
            check_redact(url, secret);
            check_parse(url, secret);
        }
        free(url);
        free(tail);
        break;
    }
    case 3: { /* ?password=SECRET among query parameters */
        char secret[3 * 16 + 1];
        size_t sl = size - 1 < 16 ? size - 1 : 16;
        if (sl < 8)
            break;
        encode(data + 1, sl, secret);
        char *url = malloc(size + 200 + sizeof secret);
        size_t cap = size + 200 + sizeof secret;
        build(url, cap, 3, "Q", raw + sl);
        char baseline[4096];
        dbs__redact(url, baseline, sizeof baseline);
        bool fair = !strstr(baseline, secret) && !strstr(url, secret);
        build(url, cap, 3, secret, raw + sl);
        if (fair) {
            check_redact(url, secret);
            check_parse(url, secret);
        }
        free(url);
        break;
    }
    case 4:
        check_keyed(data, size);
        break;
    }
    free(raw);
    return 0;
}
