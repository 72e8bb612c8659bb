/* Fault injection for tests: connect and ping failures on demand, so timeouts
 * and broken connections are deterministic in unit tests. Every counter is
 * zero unless a test sets it, and the cost when unused is one relaxed load. */
#include "internal.h"

dbs__faults dbs__fault;
