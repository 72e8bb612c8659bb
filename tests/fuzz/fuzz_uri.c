/* shiftboard's checks on raw request targets (examples/shiftboard/guard.c).
 * Checks against the definition: an accepted target decodes with no
 * control byte, is at most SB_MAX_URI long, every % is a full escape, and
 * the argument count is that of the non-empty &-pieces of the query, at
 * most SB_MAX_ARGS. A refused one has a 4xx status and a message. */
#include "guard.h"

#include "fuzz.h"
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 3 * SB_MAX_URI)
        return 0;
    char *u = malloc(size + 1);
    memcpy(u, data, size);
    u[size] = '\0';
    size_t args;
    enum sb_uri_verdict v = sb_uri_check(u, &args);
    size_t len = strlen(u);
    if (v != SB_URI_OK) {
        int st = sb_uri_status(v);
        CHECK(st >= 400 && st < 500);
        CHECK(sb_uri_message(v)[0]);
        if (v == SB_URI_TOO_LONG)
            CHECK(len > SB_MAX_URI);
    } else {
        CHECK(len <= SB_MAX_URI);
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)u[i];
            CHECK(c >= 0x20 && c != 0x7f);
            if (c == '%') {
                CHECK(isxdigit((unsigned char)u[i + 1]) && isxdigit((unsigned char)u[i + 2]));
                unsigned d = (unsigned)strtoul((char[]){u[i + 1], u[i + 2], 0}, NULL, 16);
                CHECK(d >= 0x20 && d != 0x7f);
            }
        }
        size_t want = 0;
        const char *q = strchr(u, '?');
        if (q) {
            size_t piece = 0;
            for (const char *p = q + 1;; p++) {
                if (*p == '&' || !*p) {
                    want += piece > 0;
                    piece = 0;
                    if (!*p)
                        break;
                } else {
                    piece++;
                }
            }
        }
        CHECK(args == want && args <= SB_MAX_ARGS);
    }
    free(u);
    return 0;
}
