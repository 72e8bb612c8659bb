/* shiftboard's routes, query strings and JSON bodies (app.c), on a real
 * in-memory SQLite database: method, path, ?limit=, ?after=, the
 * Authorization header and the body all come from the input. Checks: no
 * input makes the service fail (500) or answer without a proper body; every
 * error is JSON with an "error" string; 405 names the allowed methods and
 * 401 the scheme. */
#include "shiftboard.h"

#include "fuzz.h"
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char sb_dashboard_html[] = "<!doctype html><title>dashboard</title>";

static sb_app app;
static char token[80];

static void call(const char *method, const char *path, const char *body, const char *auth,
                 sb_response *res)
{
    sb_request req = {.method = method, .path = path, .authorization = auth,
                      .body = body ? body : "", .body_len = body ? strlen(body) : 0};
    snprintf(req.request_id, sizeof req.request_id, "fuzz");
    memset(res, 0, sizeof *res);
    sb_handle(&app, &req, res);
}

static void setup(void)
{
    CHECK(sodium_init() >= 0);
    app.pwhash_ops = crypto_pwhash_OPSLIMIT_MIN;
    app.pwhash_mem = crypto_pwhash_MEMLIMIT_MIN;
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite::memory:";
    cfg.metrics = 0;
    dbs_error err;
    app.pool = dbs_pool_open(&cfg, &err);
    CHECK(app.pool);
    CHECK(sb_schema(&app, &err) == DBS_OK);
    sb_response res;
    call("POST", "/api/users", "{\"name\":\"fuzz\",\"password\":\"fuzzfuzz1\"}", NULL, &res);
    CHECK(res.status == 201);
    free(res.body);
    call("POST", "/api/login", "{\"name\":\"fuzz\",\"password\":\"fuzzfuzz1\"}", NULL, &res);
    CHECK(res.status == 200);
    json_t *j = json_loads(res.body, 0, NULL);
    snprintf(token, sizeof token, "Bearer %s", json_string_value(json_object_get(j, "token")));
    json_decref(j);
    free(res.body);
    call("POST", "/api/shifts",
         "{\"title\":\"t\",\"starts_at\":\"2026-11-24T09:00:00Z\",\"ends_at\":\"2026-11-24T17:00:00Z\"}",
         token, &res);
    CHECK(res.status == 201);
    free(res.body);
}

/* Cuts the next '\n'-terminated piece off *p; NULL when it is empty. */
static char *piece(char **p)
{
    char *s = *p;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = s + strlen(s);
    }
    return *s ? s : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "get"};
    if (!app.pool)
        setup();
    if (size < 2 || size > SB_MAX_BODY + 512)
        return 0;
    char *buf = malloc(size - 1);
    memcpy(buf, data + 2, size - 2);
    buf[size - 2] = '\0';
    char *p = buf;
    char *path = piece(&p);
    sb_request req = {
        .method = methods[data[0] % (sizeof methods / sizeof *methods)],
        .path = path ? path : "/",
        .query_limit = piece(&p),
        .query_after = piece(&p),
        .authorization = data[1] & 1 ? token : data[1] & 2 ? "Bearer 0123" : NULL,
        .body = p,
        .body_len = strlen(p),
    };
    snprintf(req.request_id, sizeof req.request_id, "fuzz");
    sb_response res = {0};
    sb_handle(&app, &req, &res);
    /* 429: the limits on guessing, which the fuzzer's failed logins and
     * tokens reach */
    static const int known[] = {200, 201, 204, 400, 401, 404, 405, 409, 413, 429};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        ok = ok || res.status == known[i];
    if (!ok)
        fprintf(stderr, "status %d for %s %s: %s\n", res.status, req.method, req.path,
                res.body ? res.body : "(no body)");
    CHECK(ok);
    if (res.status == 204) {
        CHECK(!res.body || !res.body[0]);
    } else if (!res.content_type) { /* JSON */
        CHECK(res.body);
        json_t *j = json_loads(res.body, 0, NULL);
        CHECK(j);
        if (res.status >= 400)
            CHECK(json_is_string(json_object_get(j, "error")));
        json_decref(j);
    }
    if (res.status == 405)
        CHECK(res.allow && res.allow[0]);
    if (res.status == 401)
        CHECK(res.www_authenticate && !strncmp(res.www_authenticate, "Bearer", 6));
    if (res.status == 429)
        CHECK(res.retry_after && atoi(res.retry_after) >= 1);
    free(res.body);
    free(buf);
    return 0;
}
