/* What shiftboard's HTTP layer checks before a request reaches the routes,
 * as pure functions of their input (no I/O, no state), so the tests and
 * the fuzzers can drive them alone. */
#ifndef SHIFTBOARD_GUARD_H
#define SHIFTBOARD_GUARD_H

#include <stddef.h>

/* The longest request target accepted, query included; longer ones get 414. */
#define SB_MAX_URI 8192
/* The most query arguments accepted; more get 400. */
#define SB_MAX_ARGS 64

/* What is wrong with a raw request target, as it came on the request line
 * (still percent-encoded). */
enum sb_uri_verdict {
    SB_URI_OK = 0,
    SB_URI_NUL,       /* %00 or a raw control byte: would cut the path short */
    SB_URI_TOO_LONG,  /* over SB_MAX_URI bytes */
    SB_URI_TOO_MANY_ARGS, /* over SB_MAX_ARGS query arguments */
    SB_URI_BAD_ESCAPE /* % not followed by two hex digits */
};

/* Checks raw, a NUL-terminated request target. *args gets the number of
 * query arguments counted (may be NULL). Never fails otherwise. */
enum sb_uri_verdict sb_uri_check(const char *raw, size_t *args);

/* The answer to a verdict other than SB_URI_OK: its status and message. */
int sb_uri_status(enum sb_uri_verdict v);
const char *sb_uri_message(enum sb_uri_verdict v);

#endif
