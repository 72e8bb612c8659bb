/* The value parsers that read text the database sent (src/values.c):
 * dbs_timestamp_parse and dbs_uuid_parse over counted bytes, never read
 * past them. Checks: a parsed timestamp has tv_nsec in range and, when its
 * year can be written, formats to text that parses to the same instant
 * (microseconds); a parsed UUID formats to text that parses to the same
 * bytes; a failure is always DBS_ETYPE with a message. */
#include "dbscope.h"

#include "fuzz.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 128)
        return 0;
    /* An exact-size copy, so ASan sees any read past the counted bytes. */
    char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    dbs_error err;
    struct timespec ts;
    int rc = dbs_timestamp_parse(s, size, &ts, &err);
    if (rc == DBS_OK) {
        CHECK(ts.tv_nsec >= 0 && ts.tv_nsec <= 999999999);
        char iso[DBS_TIMESTAMP_TEXT_LEN];
        if (dbs_timestamp_format(ts, iso) > 0) {
            struct timespec again;
            CHECK(dbs_timestamp_parse(iso, SIZE_MAX, &again, &err) == DBS_OK);
            CHECK(again.tv_sec == ts.tv_sec && again.tv_nsec == ts.tv_nsec / 1000 * 1000);
        }
    } else {
        CHECK(rc == DBS_ETYPE && err.code == DBS_ETYPE && err.message[0]);
    }
    unsigned char u[16];
    rc = dbs_uuid_parse(s, size, u, &err);
    if (rc == DBS_OK) {
        char text[37];
        unsigned char back[16];
        dbs_uuid_format(u, text);
        CHECK(strlen(text) == 36);
        CHECK(dbs_uuid_parse(text, 36, back, &err) == DBS_OK && memcmp(u, back, 16) == 0);
    } else {
        CHECK(rc == DBS_ETYPE && err.code == DBS_ETYPE && err.message[0]);
    }
    free(s);
    return 0;
}
