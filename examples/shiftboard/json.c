/* JSON responses, built with jansson. */
#include "shiftboard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_json(sb_response *res, int status, json_t *obj)
{
    res->body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!res->body) {
        /* out of memory, or text jansson refused: still answer in JSON */
        res->status = 500;
        res->body = strdup("{\"error\":\"internal error building the response\"}");
        return;
    }
    res->status = status;
}

void sb_error(sb_response *res, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(res->body);
    res->body = NULL;
    /* json_string rejects invalid UTF-8 (a path echoed back may carry
     * any bytes): say so rather than answer without a body */
    json_t *m = json_string(msg);
    sb_json(res, status, json_pack("{so}", "error", m ? m : json_string("bad request")));
}
