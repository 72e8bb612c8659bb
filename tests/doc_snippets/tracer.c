/* docs/observability.md's span per unit: the tracing library's calls it
 * names, declared as a C shim would. Compiled only. */
#include <stdint.h>

void *tracer_current(void);
void *tracer_start_span(const char *name, void *parent);
void tracer_set_attr(void *span, const char *key, const char *value);
void tracer_set_attr_int(void *span, const char *key, int64_t value);
void tracer_add_event(void *span, const char *name, const char *key, ...);
void tracer_add_error(void *span, const char *name, const char *message);
void tracer_end_span(void *span);

/* @FILE_SCOPE@ */

void setup(dbs_config *pcfg);
void setup(dbs_config *pcfg)
{
    dbs_config cfg = *pcfg;

    /* @BODY@ */

    *pcfg = cfg;
}
