/* Error object, codes and messages. The error path never allocates. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static const char unknown_code[] = "unknown error code";

/* See dbs__thread_sqlstate. */
static _Thread_local char thread_sqlstate[6];

const char *dbs__thread_sqlstate(void)
{
    return thread_sqlstate;
}

const char *dbs_strerror(int code)
{
    switch (code) {
    case DBS_OK: return "success";
    case DBS_ECONFIG: return "invalid configuration";
    case DBS_ECONNECT: return "cannot connect to the database or the connection was lost";
    case DBS_ETIMEOUT: return "timed out waiting for a connection from the pool";
    case DBS_ECLOSED: return "the pool is closed";
    case DBS_ESQL: return "SQL statement failed";
    case DBS_ECONSTRAINT: return "integrity constraint violated";
    case DBS_ERETRYABLE: return "transient failure (serialization failure, deadlock or busy database); retry the unit of work";
    case DBS_ECOMMIT_UNKNOWN: return "connection lost during COMMIT: the outcome is unknown";
    case DBS_EMISUSE: return "library misuse";
    case DBS_EUNAVAILABLE: return "database unavailable: failing fast while the circuit is open";
    case DBS_ENOMEM: return "out of memory";
    case DBS_ESTMT_TIMEOUT: return "no answer from the database within the statement timeout; the connection was discarded";
    case DBS_EFULL: return "the database's storage is full: free disk space, then retry";
    case DBS_ETYPE: return "the value cannot be read as the type asked for";
    case DBS_ENULL: return "the value is SQL NULL";
    case DBS_ECANCELED: return "the unit of work was cancelled";
    case DBS_EBUSY: return "the event loop's queue of waiting units is full";
    default: return unknown_code;
    }
}

bool dbs__code_known(int code)
{
    return code < 0 && dbs_strerror(code) != unknown_code;
}

int dbs_error_is_transient(const dbs_error *err)
{
    if (!err)
        return 0;
    return err->code == DBS_ERETRYABLE || err->code == DBS_ECONNECT || err->code == DBS_EFULL;
}

int dbs__err(dbs_error *err, int code, const char *fmt, ...)
{
    thread_sqlstate[0] = '\0';
    if (!err)
        return code;
    err->code = code;
    err->sqlstate[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(err->message, sizeof err->message, "%s", dbs_strerror(code));
    return code;
}

void dbs__err_sqlstate(dbs_error *err, const char *sqlstate)
{
    size_t t = sqlstate ? strnlen(sqlstate, sizeof thread_sqlstate - 1) : 0;
    if (t)
        memcpy(thread_sqlstate, sqlstate, t);
    thread_sqlstate[t] = '\0';
    if (!err)
        return;
    if (!sqlstate) {
        err->sqlstate[0] = '\0';
        return;
    }
    size_t n = strnlen(sqlstate, sizeof err->sqlstate - 1);
    memcpy(err->sqlstate, sqlstate, n);
    err->sqlstate[n] = '\0';
}

unsigned dbs_version(void)
{
    return DBS_VERSION_NUMBER;
}

const char *dbs_version_string(void)
{
    return DBS_VERSION_STRING;
}
