/* Checks on the raw request target (guard.h). libmicrohttpd decodes the
 * path before the routes see it, so "%00" would end it early and
 * "/api/shifts/1%00junk" would read as "/api/shifts/1": such targets are
 * refused here, on the bytes the client sent. */
#include "guard.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

enum sb_uri_verdict sb_uri_check(const char *raw, size_t *args)
{
    size_t n = 0;
    if (args)
        *args = 0;
    const char *q = NULL;
    for (const char *p = raw; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (n >= SB_MAX_URI)
            return SB_URI_TOO_LONG;
        if (c < 0x20 || c == 0x7f)
            return SB_URI_NUL;
        if (c == '%') {
            int hi = hexval(p[1]);
            int lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0)
                return SB_URI_BAD_ESCAPE;
            /* an encoded control byte is cut or misread alike */
            if (hi * 16 + lo < 0x20 || hi * 16 + lo == 0x7f)
                return SB_URI_NUL;
        }
        if (c == '?' && !q)
            q = p;
    }
    if (q) {
        /* empty pieces ("a=1&&b=2") are no arguments to libmicrohttpd either */
        size_t count = 0;
        for (const char *p = q + 1; *p;) {
            size_t len = strcspn(p, "&");
            if (len > 0)
                count++;
            p += len;
            if (*p == '&')
                p++;
        }
        if (args)
            *args = count;
        if (count > SB_MAX_ARGS)
            return SB_URI_TOO_MANY_ARGS;
    }
    return SB_URI_OK;
}

int sb_uri_status(enum sb_uri_verdict v)
{
    return v == SB_URI_TOO_LONG ? 414 : v == SB_URI_OK ? 200 : 400;
}

const char *sb_uri_message(enum sb_uri_verdict v)
{
    switch (v) {
    case SB_URI_NUL:
        return "the request target must not contain NUL or control characters (%00..%1f)";
    case SB_URI_TOO_LONG:
        return "the request target is longer than 8192 bytes";
    case SB_URI_TOO_MANY_ARGS:
        return "more than 64 query arguments";
    case SB_URI_BAD_ESCAPE:
        return "a % in the request target must be followed by two hex digits";
    case SB_URI_OK:
        break;
    }
    return "ok";
}
