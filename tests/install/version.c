/* The public header alone, first and with nothing before it, in a user's
 * program built as C11 and as C++ with -pedantic -Werror
 * (tests/install/check.sh). Prints the version the header's macros give
 * and the one the linked library reports, for the check to compare with
 * CMake's project version. */
#include <dbscope.h>

#include <stdio.h>

int main(void)
{
    dbs_config cfg;
    dbs_config_init(&cfg);
#ifdef DBS_SCOPED
    /* the scoped-session attribute must compile in C++ too */
    DBS_SCOPED dbs_session *s = NULL;
    (void)s;
#endif
    printf("%d.%d.%d %s %s %u %u\n", DBS_VERSION_MAJOR, DBS_VERSION_MINOR, DBS_VERSION_PATCH,
           DBS_VERSION_STRING, dbs_version_string(), (unsigned)DBS_VERSION_NUMBER, dbs_version());
    return 0;
}
