/* dbs_config_from_env with fuzzed values: the input is split at NUL bytes
 * into one value per variable (an empty piece leaves it unset). Checks:
 * all or nothing (a failure leaves cfg as it was and names the variable),
 * and whatever is accepted passes the pool's own configuration check. */
#include "internal.h"

#include "fuzz.h"
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const vars[] = {
    "DATABASE_URL",    "DB_POOL_SIZE",        "DB_MAX_OVERFLOW",         "DB_POOL_TIMEOUT",
    "DB_POOL_RECYCLE", "DB_POOL_PRE_PING",    "DB_LEAK_THRESHOLD_MS",    "DB_STATEMENT_TIMEOUT_MS",
    "DB_CONNECT_TIMEOUT_MS", "DB_POOL_MIN_IDLE",
};
enum { NVARS = sizeof vars / sizeof *vars };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *p = buf, *end = buf + size;
    for (size_t i = 0; i < NVARS; i++) {
        if (p < end && *p) {
            setenv(vars[i], p, 1);
            p += strlen(p);
        } else {
            unsetenv(vars[i]);
        }
        if (p < end)
            p++; /* the NUL between pieces */
    }
    dbs_config cfg, before;
    dbs_config_init(&cfg);
    cfg.pool_size = 3; /* not a default, to see it kept */
    before = cfg;
    dbs_error err;
    int rc = dbs_config_from_env(&cfg, &err);
    CHECK(rc == err.code);
    CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
    if (rc != DBS_OK) {
        CHECK(rc == DBS_ECONFIG);
        CHECK(memcmp(&cfg, &before, sizeof cfg) == 0);
        bool named = false;
        for (size_t i = 0; i < NVARS; i++)
            named = named || strstr(err.message, vars[i]) != NULL;
        CHECK(named);
    } else {
        dbs_error check;
        int crc = dbs__config_check(&cfg, &check);
        /* min_idle against pool_size is a relation between two settings,
         * the rest must hold for any value accepted */
        CHECK(crc == DBS_OK || strstr(check.message, "min_idle") != NULL);
        if (!getenv("DB_POOL_SIZE"))
            CHECK(cfg.pool_size == 3);
    }
    free(buf);
    return 0;
}
