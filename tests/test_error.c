/* Error codes: stable values, a message for each, which are transient. */
#include "check.h"

int main(void)
{
    /* the values are part of the ABI */
    CHECK_EQ(DBS_ECONFIG, -1);
    CHECK_EQ(DBS_ENOMEM, -11);
    const char *seen[12] = {0};
    for (int c = 0; c >= DBS_ENOMEM; c--) {
        const char *m = dbs_strerror(c);
        CHECK(m && *m);
        for (int k = 0; k < -c; k++)
            CHECK(strcmp(seen[k], m) != 0);
        seen[-c] = m;
    }
    CHECK_STR(dbs_strerror(-1000), "unknown error code");
    dbs_error e = {0};
    e.code = DBS_ERETRYABLE;
    CHECK(dbs_error_is_transient(&e));
    e.code = DBS_ECONNECT;
    CHECK(dbs_error_is_transient(&e));
    e.code = DBS_ECOMMIT_UNKNOWN;
    CHECK(!dbs_error_is_transient(&e));
    e.code = DBS_ESQL;
    CHECK(!dbs_error_is_transient(&e));
    e.code = DBS_ETIMEOUT;
    CHECK(!dbs_error_is_transient(&e));
    CHECK(!dbs_error_is_transient(NULL));
    CHECK_EQ(dbs_version(), DBS_VERSION_NUMBER);
    CHECK_STR(dbs_version_string(), DBS_VERSION_STRING);
    puts("test_error: ok");
    return 0;
}
