/* The stop flag of the pool's own threads (internal.h: abandonable waits).
 * Defined at the bottom, apart from the threads that set it (housekeeper.c,
 * replica.c), because the drivers below them read it. */
#include "internal.h"

_Thread_local const atomic_bool *dbs__thread_stop;
