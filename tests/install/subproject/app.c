#include <dbscope.h>

int main(void)
{
    return dbs_version() == DBS_VERSION_NUMBER ? 0 : 1;
}
