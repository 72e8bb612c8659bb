/* URL parsing and redaction (src/config.c). Two kinds of input: raw bytes
 * as a URL, and URLs built around a password the target knows, so it can
 * check that the password never reaches the redacted text nor any error
 * message. */
#include "internal.h"

#include "fuzz.h"
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
        if (p == big || p[-1] == '?' || p[-1] == '&' || p[-1] == ' ')
            CHECK(strncmp(p + 9, "***", 3) == 0);
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2000)
        return 0;
    char *raw = malloc(size);
    memcpy(raw, data + 1, size - 1);
    raw[size - 1] = '\0';
    switch (data[0] % 4) {
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
        int kind = data[0] % 4;
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
    }
    free(raw);
    return 0;
}
