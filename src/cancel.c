/* Cancellation deferred only where it is needed (base.h, internal.h): the
 * thread's state, and the copy of each driver's method table whose
 * methods that may reach a cancellation point defer first. */
#define _GNU_SOURCE /* pthread_getattr_np: AddressSanitizer builds */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

_Thread_local unsigned char dbs__cx_state __attribute__((tls_model("initial-exec")));
_Thread_local int dbs__cx_saved __attribute__((tls_model("initial-exec")));

#ifdef DBS__ASAN
/* internal.h, "unwinding": the low end of this thread's stack. */
_Thread_local char *dbs__stack_lo;

void dbs__stack_lo_find(void)
{
    pthread_attr_t a;
    void *lo = NULL;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) != 0)
        return;
    if (pthread_attr_getstack(&a, &lo, &size) == 0)
        dbs__stack_lo = lo;
    pthread_attr_destroy(&a);
}
#endif

void dbs__cancel_defer_now(void)
{
    (void)pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &dbs__cx_saved);
    dbs__cx_state = DBS__CX_OFF;
}

/* base.h's dbs__cancel_defer, for the points in this file: base.h's
 * inline reads the state this file defines, and this file takes nothing
 * back from base.h's inlines. */
static inline void defer_here(void)
{
    if (dbs__cx_state == DBS__CX_IN)
        dbs__cancel_defer_now();
}

/* nanosleep is a cancellation point: a sleep defers first. */
void dbs__sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    defer_here();
    struct timespec ts = dbs__timespec(ms * 1000000);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the driver's methods ----
 * Every method that may block, send, receive, sleep, close a descriptor or
 * call the program (the credential provider, the notice receiver) defers
 * first. The others are listed apart, each one that its contract in
 * driver.h says never blocks and sends nothing: they are on every
 * checkout and checkin (is_broken, set_timeout) and must cost nothing.
 * A method added to dbs__driver fails the size check below until it is in
 * one list or the other. */
#define DEFERRED(F, I)                                                                      \
    F(I, return, int, target_open, (dbs__target * t, dbs_error * e), (t, e))                \
    F(I, , void, target_close, (dbs__target * t), (t))                                      \
    F(I, , void, target_stop, (dbs__target * t), (t))                                       \
    F(I, return, int, target_check, (dbs__target * t, dbs_error * e), (t, e))               \
    F(I, return, void *, connect, (const dbs__target *t, dbs_error *e), (t, e))             \
    F(I, return, int, ping, (void *c, dbs_error *e), (c, e))                                \
    F(I, return, int, begin, (void *c, const dbs_context *x, dbs_error *e), (c, x, e))      \
    F(I, return, int64_t, exec,                                                             \
      (void *c, const char *q, const dbs_value *v, size_t n, dbs_error *e), (c, q, v, n, e)) \
    F(I, return, dbs_rows *, query,                                                         \
      (void *c, const char *q, const dbs_value *v, size_t n, dbs_error *e), (c, q, v, n, e)) \
    F(I, return, int, commit, (void *c, dbs_error *e), (c, e))                              \
    F(I, return, int, rollback, (void *c, dbs_error *e), (c, e))                            \
    F(I, return, int, reset, (void *c, enum dbs_reset_mode m, dbs_error *e), (c, m, e))     \
    F(I, , void, close, (void *c), (c))                                                     \
    F(I, return, int, commit_release, (void *c, dbs_error *e), (c, e))                      \
    F(I, return, int, rollback_release, (void *c, dbs_error *e), (c, e))                    \
    F(I, return, int, set_read_only, (void *c, int on, dbs_error *e), (c, on, e))           \
    F(I, return, int, peek, (void *c, int w, dbs_error *e), (c, w, e))                      \
    F(I, , void, forget, (void *c), (c))                                                    \
    F(I, return, int, tx_options, (void *c, const dbs_tx_options *o, dbs_error *e), (c, o, e)) \
    F(I, , void, interrupt, (void *c), (c))                                                 \
    F(I, return, int, a_send, (void *c, dbs__aunit *u, dbs_error *e), (c, u, e))            \
    F(I, return, int, a_step, (void *c, short r, dbs__aunit **d, short *w), (c, r, d, w))   \
    F(I, , void, a_cancel, (void *c), (c))
enum { N_DEFERRED = 23 };
/* never block, send nothing: is_broken, native, set_timeout, tx_escaped,
 * commit_pos, tx_options_check, args_check, a_fd, a_idle, a_results,
 * reset_failure */
enum { N_PLAIN = 11 };
_Static_assert(sizeof(dbs__driver) ==
                   sizeof(const char *) + (N_DEFERRED + N_PLAIN) * sizeof(void (*)(void)),
               "a dbs__driver method is in neither list of cancel.c");

/* One copy per table (a backend's, or fault.c's faulting copy of one);
 * the real one is found by slot. */
enum { SLOTS = 8 };
static struct {
    const dbs__driver *real;
    dbs__driver deferring;
} slots[SLOTS];
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;

#define DEF(I, R, T, m, params, args)                                                       \
    static T m##_##I params                                                                 \
    {                                                                                       \
        defer_here();                                                                       \
        R slots[I].real->m args;                                                            \
    }
DEFERRED(DEF, 0)
DEFERRED(DEF, 1)
DEFERRED(DEF, 2)
DEFERRED(DEF, 3)
DEFERRED(DEF, 4)
DEFERRED(DEF, 5)
DEFERRED(DEF, 6)
DEFERRED(DEF, 7)

#define SET(I, R, T, m, params, args)                                                       \
    if (real->m)                                                                            \
        d->m = m##_##I;
static void fill(int i, dbs__driver *d, const dbs__driver *real)
{
    switch (i) {
    case 0: DEFERRED(SET, 0) break;
    case 1: DEFERRED(SET, 1) break;
    case 2: DEFERRED(SET, 2) break;
    case 3: DEFERRED(SET, 3) break;
    case 4: DEFERRED(SET, 4) break;
    case 5: DEFERRED(SET, 5) break;
    case 6: DEFERRED(SET, 6) break;
    case 7: DEFERRED(SET, 7) break;
    }
}

const dbs__driver *dbs__cancel_driver(const dbs__driver *real)
{
    const dbs__driver *out = NULL;
    pthread_mutex_lock(&slots_mu);
    for (int i = 0; i < SLOTS && !out; i++) {
        if (slots[i].real == real) {
            out = &slots[i].deferring;
        } else if (!slots[i].real) {
            slots[i].real = real;
            slots[i].deferring = *real; /* the methods that never block */
            fill(i, &slots[i].deferring, real);
            out = &slots[i].deferring;
        }
    }
    pthread_mutex_unlock(&slots_mu);
    /* Three backends, each with at most one faulting copy: never full. */
    return out ? out : real;
}
