/* The PostgreSQL driver's $n scanner (max_param, static in driver_pg.c),
 * reached by compiling the driver into this target: the library's copy is
 * then never linked in. Checks: the result is -1 (text too hard to read) or
 * 0..256, and a positive result n stands in the text as "$n". */
#include "../../src/driver_pg.c"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *sql = malloc(size + 1);
    memcpy(sql, data, size);
    sql[size] = '\0';
    int n = max_param(sql);
    /* PG_MAXP + 1 stands for any $n past the protocol's limit */
    CHECK(n >= -1 && n <= PG_MAXP + 1);
    if (!strchr(sql, '$'))
        CHECK(n == 0);
    if (n > 0) {
        char needle[16];
        snprintf(needle, sizeof needle, "$%d", n);
        bool found = false;
        /* as "$n" or with leading zeros, "$007" */
        for (const char *p = sql; (p = strchr(p, '$')); p++) {
            char *e;
            long v = strtol(p + 1, &e, 10);
            if (isdigit((unsigned char)p[1]) && (v == n || (n > PG_MAXP && v > PG_MAXP)))
                found = true;
        }
        CHECK(found);
    }
    free(sql);
    return 0;
}
