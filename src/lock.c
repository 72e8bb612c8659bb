/* The shard lock's slow path (the lock itself is in base.h). */
#include "base.h"

#include <sched.h>

void dbs__lock_wait(dbs__lock *l)
{
    for (;;) {
        for (int spin = 0; spin < 100; spin++) {
            if (!atomic_load_explicit(&l->held, memory_order_relaxed) &&
                !atomic_exchange_explicit(&l->held, true, memory_order_acquire))
                return;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        sched_yield();
    }
}
