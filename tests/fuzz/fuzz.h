/* What the fuzz targets share: a check that holds in every build type
 * (assert vanishes under NDEBUG) and says which invariant broke. */
#ifndef DBSCOPE_FUZZ_H
#define DBSCOPE_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#endif
