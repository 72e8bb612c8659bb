/* shiftboard's routes. Each handler validates its input first, then does
 * its database work in units run by dbs_transact with the request's
 * context, and slow work that needs no database (password hashing) outside
 * any session, so a connection is held only while it is used. */
#include "shiftboard.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* TOKEN_EXPIRED_KEPT_S: how long an expired token stays stored, so that a
 * client still presenting it (a tab left polling overnight) is told it
 * expired instead of being counted as guessing tokens, which would soon
 * lock its address out of the login it needs. TOKENS_MAX: the tokens a
 * user keeps stored at most; without a bound, logging in over and over
 * grew the table without end, and each login's cleanup scanned every
 * token of its user while holding the write lock (SQLite's for everyone). */
enum {
    TOKEN_TTL_S = 24 * 3600,
    TOKEN_EXPIRED_KEPT_S = 7 * 24 * 3600,
    TOKENS_MAX = 64,
    PAGE_DEFAULT = 50,
    PAGE_MAX = 200
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static dbs_context context_of(const sb_request *req)
{
    return (dbs_context){.request_id = req->request_id,
                         .user_id = req->user_id[0] ? req->user_id : NULL};
}

/* Whether a failure is the database being away or out of room for a
 * while, which a client should retry later: 503 with Retry-After. */
static bool transient(int rc)
{
    switch (rc) {
    case DBS_ETIMEOUT:
    case DBS_EUNAVAILABLE:
    case DBS_ECONNECT:
    case DBS_ECLOSED:
    case DBS_ECOMMIT_UNKNOWN:
    case DBS_ESTMT_TIMEOUT:
    case DBS_ERETRYABLE:
    case DBS_EFULL:
        return true;
    default:
        return false;
    }
}

/* A failed unit of work, as the client sees it: the database being away
 * (or full) is the client's cue to retry later; anything else is our
 * fault and is logged with the request id, without details in the
 * response. */
static void db_failure(const sb_request *req, sb_response *res, int rc, const dbs_error *err)
{
    if (rc == DBS_EFULL) {
        res->retry_after = "5";
        sb_error(res, 503, "the database's storage is full, retry later");
    } else if (transient(rc)) {
        res->retry_after = "1";
        sb_error(res, 503, "database unavailable, retry later");
    } else {
        sb_error(res, 500, "internal error (request %s)", req->request_id);
    }
    fprintf(stderr, "level=error msg=\"database\" request_id=%s code=%s error=\"%s\"\n",
            req->request_id, dbs_strerror(rc), err->message);
}

/* dbs_transact for a unit that writes. Its outcome feeds /health: a write
 * refused for want of storage makes the service degraded until a write
 * that stores a row succeeds (stores: the unit always inserts, so its
 * success shows there is room again), or until the window passes; one
 * that could not get SQLite's write lock, until any write succeeds, and
 * meanwhile only one write at a time waits for that lock (health.c). */
static int write_transact(const sb_app *app, const dbs_context *ctx, dbs_work_fn work, void *arg,
                          bool stores, dbs_error *err)
{
    bool probe;
    if (!sb_health_write_begin(app, &probe)) {
        *err = (dbs_error){.code = DBS_ERETRYABLE};
        snprintf(err->message, sizeof err->message,
                 "the database file is locked by another connection or process, and a "
                 "write already waits for it");
        return DBS_ERETRYABLE;
    }
    int rc = dbs_transact(app->pool, ctx, work, arg, err);
    sb_health_write_end(app, rc, stores, probe);
    return rc;
}

/* 429: too many failed attempts; try again in wait seconds. */
static void too_many(sb_response *res, int wait)
{
    snprintf(res->retry_buf, sizeof res->retry_buf, "%d", wait);
    res->retry_after = res->retry_buf;
    sb_error(res, 429, "too many failed attempts; retry in %d s", wait);
}

/* ---- input ---- */

static json_t *body_object(const sb_request *req, sb_response *res)
{
    json_error_t e;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        sb_error(res, 400, "malformed JSON: %s (line %d, column %d)", e.text, e.line, e.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        sb_error(res, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* The string field key of obj, 1..max bytes of valid UTF-8 with no control
 * characters; NULL with res filled otherwise. */
static const char *text_field(json_t *obj, const char *key, size_t min, size_t max,
                              sb_response *res)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        sb_error(res, 400, "field \"%s\" is missing", key);
        return NULL;
    }
    if (!json_is_string(v)) {
        sb_error(res, 400, "field \"%s\" must be a string", key);
        return NULL;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n < min || n > max) {
        sb_error(res, 400, "field \"%s\" must be %zu to %zu bytes long", key, min, max);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            sb_error(res, 400, "field \"%s\" must not contain control characters", key);
            return NULL;
        }
    }
    return s;
}

/* A positive decimal integer, strictly. */
static bool parse_id(const char *s, int64_t *out)
{
    if (!s || !*s || strlen(s) > 18 || strspn(s, "0123456789") != strlen(s) || s[0] == '0')
        return false;
    *out = strtoll(s, NULL, 10);
    return *out > 0;
}

/* A permit to hold one password hash in memory (sb_app.hash_enter), taken
 * around the hash alone: a unit of work holding it would let a slow
 * database refuse logins while nothing hashes. False: res is answered. */
static bool hash_enter(const sb_app *app, sb_request *req, sb_response *res)
{
    return !app->hash_enter || app->hash_enter(req, res);
}

static void hash_leave(const sb_app *app, sb_request *req)
{
    if (app->hash_leave)
        app->hash_leave(req);
}

/* ---- users ---- */

struct new_user {
    const char *name, *hash;
    int64_t id;
};

static int insert_user(dbs_session *s, void *arg, dbs_error *err)
{
    struct new_user *u = arg;
    dbs_value v[] = {DBS_TEXT(u->name), DBS_TEXT(u->hash), DBS_INT(now_s())};
    dbs_rows *r = dbs_query(
        s, "INSERT INTO users (name, pw_hash, created_at) VALUES ($1, $2, $3) RETURNING id", v,
        3, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    if (n == 1)
        u->id = dbs_rows_int(r, 0);
    dbs_rows_close(r);
    return n == 1 ? 0 : n < 0 ? n : DBS_ESQL;
}

struct name_check {
    const char *name;
    bool taken;
};

static int name_taken(dbs_session *s, void *arg, dbs_error *err)
{
    struct name_check *c = arg;
    dbs_value v[] = {DBS_TEXT(c->name)};
    dbs_rows *r = dbs_query(s, "SELECT 1 FROM users WHERE name = $1", v, 1, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    dbs_rows_close(r);
    c->taken = n == 1;
    return n < 0 ? n : 0;
}

static void create_user(const sb_app *app, sb_request *req, sb_response *res)
{
    json_t *body = body_object(req, res);
    if (!body)
        return;
    const char *name = text_field(body, "name", 1, 64, res);
    const char *password = name ? text_field(body, "password", 8, 1024, res) : NULL;
    if (!name || !password) {
        json_decref(body);
        return;
    }
    /* before the hash: each account made is a row for good, so one
     * address makes a bounded number of them an hour */
    int wait = sb_rl_register_claim(req->client);
    if (wait) {
        json_decref(body);
        snprintf(res->retry_buf, sizeof res->retry_buf, "%d", wait);
        res->retry_after = res->retry_buf;
        sb_error(res, 429, "too many accounts registered from your address (%d an hour); "
                 "retry in %d s", SB_RL_REGISTER_MAX, wait);
        return;
    }
    /* A taken name is answered before the hash, or a client could spend
     * the hashing permits (64 MiB and tens of ms each) on names it knows
     * are taken, for the price of a request. The look-up tells nothing the
     * answer did not already tell: registration answers "taken" either
     * way, so a name's existence was always one registration away. The
     * insert's unique violation stays the authority: a name taken between
     * this look-up and the insert is still 409 below. */
    struct name_check nc = {.name = name};
    dbs_context ctx = context_of(req);
    dbs_error err;
    int rc = dbs_transact(app->pool, &ctx, name_taken, &nc, &err);
    if (rc != DBS_OK || nc.taken) {
        sb_rl_register_refund(req->client); /* no account made */
        if (rc != DBS_OK)
            db_failure(req, res, rc, &err);
        else
            sb_error(res, 409, "the name \"%s\" is taken", name);
        json_decref(body);
        return;
    }
    char hash[256];
    if (!hash_enter(app, req, res)) {
        sb_rl_register_refund(req->client); /* no account made */
        json_decref(body);
        return;
    }
    int hashed = sb_password_hash(app, password, hash, sizeof hash);
    hash_leave(app, req);
    if (hashed != 0) {
        sb_rl_register_refund(req->client);
        json_decref(body);
        sb_error(res, 500, "out of memory hashing the password");
        return;
    }
    struct new_user u = {.name = name, .hash = hash};
    rc = write_transact(app, &ctx, insert_user, &u, true, &err);
    if (rc != DBS_OK)
        sb_rl_register_refund(req->client); /* no account made */
    if (rc == DBS_ECONSTRAINT) {
        sb_error(res, 409, "the name \"%s\" is taken", name);
    } else if (rc != DBS_OK) {
        db_failure(req, res, rc, &err);
    } else {
        /* she chose the password here: this address is hers like one she
         * logged in from, so guesses at her new account from elsewhere
         * cannot keep her out before her first login */
        sb_rl_succeeded(req->client, name);
        sb_json(res, 201, json_pack("{sI}", "id", (json_int_t)u.id));
    }
    json_decref(body);
}

struct login {
    const char *name;
    int64_t id;
    char hash[256];
    char token_hash[65];
};

static int find_user(dbs_session *s, void *arg, dbs_error *err)
{
    struct login *l = arg;
    dbs_value v[] = {DBS_TEXT(l->name)};
    dbs_rows *r = dbs_query(s, "SELECT id, pw_hash FROM users WHERE name = $1", v, 1, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    l->id = 0;
    if (n == 1) {
        l->id = dbs_rows_int(r, 0);
        snprintf(l->hash, sizeof l->hash, "%s", dbs_rows_text(r, 1, NULL));
    }
    dbs_rows_close(r);
    return n < 0 ? n : 0;
}

/* Makes room for one more of the user's tokens: of those stored, the
 * TOKENS_MAX - 1 that expire last stay (ties in the second broken by the
 * hash), the rest are deleted, so logging in past TOKENS_MAX signs the
 * oldest out. */
static int trim_tokens(dbs_session *s, const struct login *l, dbs_error *err)
{
    /* the last to stay: the one at offset TOKENS_MAX - 2 */
    dbs_value u[] = {DBS_INT(l->id), DBS_INT(TOKENS_MAX - 2)};
    dbs_rows *r = dbs_query(s,
                            "SELECT expires_at, token_hash FROM tokens WHERE user_id = $1 "
                            "ORDER BY expires_at DESC, token_hash DESC LIMIT 1 OFFSET $2",
                            u, 2, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    int64_t expires = n == 1 ? dbs_rows_int(r, 0) : 0;
    char hash[65] = "";
    if (n == 1)
        snprintf(hash, sizeof hash, "%s", dbs_rows_text(r, 1, NULL));
    dbs_rows_close(r);
    if (n != 1)
        return n < 0 ? n : 0; /* fewer than that: nothing to delete */
    dbs_value v[] = {DBS_INT(l->id), DBS_INT(expires), DBS_TEXT(hash)};
    if (dbs_exec(s,
                 "DELETE FROM tokens WHERE user_id = $1 AND (expires_at < $2 OR "
                 "(expires_at = $2 AND token_hash < $3))",
                 v, 3, err) < 0)
        return err->code;
    return 0;
}

static int store_token(dbs_session *s, void *arg, dbs_error *err)
{
    struct login *l = arg;
    int64_t now = now_s();
    dbs_value old[] = {DBS_INT(l->id), DBS_INT(now - TOKEN_EXPIRED_KEPT_S)};
    if (dbs_exec(s, "DELETE FROM tokens WHERE user_id = $1 AND expires_at <= $2", old, 2, err) <
        0)
        return err->code;
    int rc = trim_tokens(s, l, err);
    if (rc != 0)
        return rc;
    dbs_value v[] = {DBS_TEXT(l->token_hash), DBS_INT(l->id), DBS_INT(now + TOKEN_TTL_S)};
    int64_t n = dbs_exec(
        s, "INSERT INTO tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)", v, 3, err);
    return n < 0 ? (int)n : 0;
}

static void login(const sb_app *app, sb_request *req, sb_response *res)
{
    json_t *body = body_object(req, res);
    if (!body)
        return;
    const char *name = text_field(body, "name", 1, 64, res);
    const char *password = name ? text_field(body, "password", 1, 1024, res) : NULL;
    if (!name || !password) {
        json_decref(body);
        return;
    }
    /* before any work: a refused guess costs no hashing and no session;
     * counted as failed already, since judging it takes a while */
    int wait = sb_rl_claim(req->client, name);
    if (wait) {
        json_decref(body);
        too_many(res, wait);
        return;
    }
    struct login l = {.name = name};
    dbs_context ctx = context_of(req);
    dbs_error err;
    int rc = dbs_transact(app->pool, &ctx, find_user, &l, &err);
    if (rc != DBS_OK) {
        sb_rl_refund(req->client, name); /* not a guess judged */
        db_failure(req, res, rc, &err);
        json_decref(body);
        return;
    }
    /* verified with no session open: hashing takes tens of milliseconds */
    if (!hash_enter(app, req, res)) {
        sb_rl_refund(req->client, name); /* not a guess judged */
        json_decref(body);
        return;
    }
    bool right = sb_password_check(app, l.id ? l.hash : NULL, password);
    hash_leave(app, req);
    if (!right) {
        json_decref(body);
        /* a 401 names its scheme (RFC 9110), here the one the token is for */
        res->www_authenticate = "Bearer realm=\"shiftboard\"";
        sb_error(res, 401, "wrong name or password");
        return;
    }
    sb_rl_refund(req->client, name);
    sb_rl_succeeded(req->client, name);
    char token[65];
    sb_token_new(token, l.token_hash);
    snprintf(req->user_id, sizeof req->user_id, "%lld", (long long)l.id);
    ctx = context_of(req);
    rc = write_transact(app, &ctx, store_token, &l, true, &err);
    if (rc != DBS_OK)
        db_failure(req, res, rc, &err);
    else
        sb_json(res, 200, json_pack("{sssi}", "token", token, "expires_in", TOKEN_TTL_S));
    json_decref(body);
}

/* ---- authentication ---- */

struct auth {
    char token_hash[65];
    int64_t user_id; /* 0: no such token, or expired */
    bool expired;    /* a token we issued, past its expiry */
};

static int check_token(dbs_session *s, void *arg, dbs_error *err)
{
    struct auth *a = arg;
    dbs_value v[] = {DBS_TEXT(a->token_hash)};
    dbs_rows *r =
        dbs_query(s, "SELECT user_id, expires_at FROM tokens WHERE token_hash = $1", v, 1, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    a->expired = n == 1 && dbs_rows_int(r, 1) <= now_s();
    a->user_id = n == 1 && !a->expired ? dbs_rows_int(r, 0) : 0;
    dbs_rows_close(r);
    return n < 0 ? n : 0;
}

/* Sets req->user_id from the bearer token, or fills res with 401/503. */
static bool authenticate(const sb_app *app, sb_request *req, sb_response *res)
{
    const char *h = req->authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        res->www_authenticate = "Bearer realm=\"shiftboard\"";
        sb_error(res, 401, "missing bearer token (Authorization: Bearer TOKEN)");
        return false;
    }
    /* a token names no account: guesses are limited per address */
    int wait = sb_rl_check(req->client, NULL);
    if (wait) {
        too_many(res, wait);
        return false;
    }
    const char *token = h + 7;
    if (strlen(token) != 64 || strspn(token, "0123456789abcdef") != 64) {
        wait = sb_rl_claim(req->client, NULL);
        if (wait) {
            too_many(res, wait);
            return false;
        }
        res->www_authenticate = "Bearer realm=\"shiftboard\", error=\"invalid_token\"";
        sb_error(res, 401, "invalid or expired token");
        return false;
    }
    struct auth a;
    sb_token_hash(token, a.token_hash);
    dbs_context ctx = context_of(req);
    dbs_error err;
    int rc = dbs_transact(app->pool, &ctx, check_token, &a, &err);
    if (rc != DBS_OK) {
        db_failure(req, res, rc, &err);
        return false;
    }
    if (!a.user_id) {
        /* an expired token was ours: no guess. A guess is counted with a
         * second look at the limit, under one lock: tokens checked at once
         * all passed the first look before any of them was counted, so
         * the ones past the limit are refused here (valid tokens are never
         * counted, so claiming before the lookup would refuse a busy
         * client's good requests) */
        if (!a.expired && (wait = sb_rl_claim(req->client, NULL)) != 0) {
            too_many(res, wait);
            return false;
        }
        res->www_authenticate = "Bearer realm=\"shiftboard\", error=\"invalid_token\"";
        sb_error(res, 401, "invalid or expired token");
        return false;
    }
    snprintf(req->user_id, sizeof req->user_id, "%lld", (long long)a.user_id);
    return true;
}

/* ---- shifts ---- */

struct shift_io {
    int64_t user_id, id, after;
    int limit;
    const char *title, *starts_at, *ends_at;
    int64_t starts, ends;
    json_t *out; /* a shift object, or the list */
    int64_t next;
    int64_t affected;
    bool mariadb; /* no UPDATE ... RETURNING there */
};

static json_t *shift_json(dbs_rows *r)
{
    return json_pack("{sIssssss}", "id", (json_int_t)dbs_rows_int(r, 0), "title",
                     dbs_rows_text(r, 1, NULL), "starts_at", dbs_rows_text(r, 2, NULL),
                     "ends_at", dbs_rows_text(r, 3, NULL));
}

static int insert_shift(dbs_session *s, void *arg, dbs_error *err)
{
    struct shift_io *io = arg;
    dbs_value v[] = {DBS_INT(io->user_id), DBS_TEXT(io->title),    DBS_TEXT(io->starts_at),
                     DBS_TEXT(io->ends_at), DBS_INT(io->starts),   DBS_INT(io->ends),
                     DBS_INT(now_s())};
    dbs_rows *r = dbs_query(s,
                            "INSERT INTO shifts (user_id, title, starts_at, ends_at, "
                            "starts_epoch, ends_epoch, created_at) "
                            "VALUES ($1, $2, $3, $4, $5, $6, $7) "
                            "RETURNING id, title, starts_at, ends_at",
                            v, 7, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    json_decref(io->out); /* a retried unit starts over */
    io->out = n == 1 ? shift_json(r) : NULL;
    dbs_rows_close(r);
    return n == 1 ? 0 : n < 0 ? n : DBS_ESQL;
}

static void create_shift(const sb_app *app, sb_request *req, sb_response *res)
{
    json_t *body = body_object(req, res);
    if (!body)
        return;
    struct shift_io io = {.user_id = strtoll(req->user_id, NULL, 10)};
    io.title = text_field(body, "title", 1, 200, res);
    io.starts_at = io.title ? text_field(body, "starts_at", 1, 64, res) : NULL;
    io.ends_at = io.starts_at ? text_field(body, "ends_at", 1, 64, res) : NULL;
    if (!io.ends_at) {
        json_decref(body);
        return;
    }
    if (!sb_parse_rfc3339(io.starts_at, &io.starts)) {
        sb_error(res, 400, "field \"starts_at\" must be an RFC 3339 date-time, "
                           "like 2026-11-24T09:00:00Z");
    } else if (!sb_parse_rfc3339(io.ends_at, &io.ends)) {
        sb_error(res, 400, "field \"ends_at\" must be an RFC 3339 date-time, "
                           "like 2026-11-24T17:00:00Z");
    } else if (io.ends <= io.starts) {
        sb_error(res, 400, "the shift must end after it starts");
    } else {
        dbs_context ctx = context_of(req);
        dbs_error err;
        int rc = write_transact(app, &ctx, insert_shift, &io, true, &err);
        if (rc != DBS_OK) {
            json_decref(io.out);
            db_failure(req, res, rc, &err);
        } else {
            sb_json(res, 201, io.out);
        }
    }
    json_decref(body);
}

/* GET routes only read: with DATABASE_REPLICA_URL set they run read-only on
 * a replica that is within the lag bound (or on the primary). */
static int read_transact(const sb_app *app, const dbs_context *ctx, dbs_work_fn work,
                         void *arg, dbs_error *err)
{
    const char *replicas = getenv("DATABASE_REPLICA_URL");
    return replicas && *replicas ? dbs_transact_ro(app->pool, ctx, work, arg, err)
                                 : dbs_transact(app->pool, ctx, work, arg, err);
}

static int list_shifts_unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct shift_io *io = arg;
    /* One row more than the page: tells whether there is a next page. */
    dbs_value v[] = {DBS_INT(io->user_id), DBS_INT(io->after), DBS_INT(io->limit + 1)};
    dbs_rows *r = dbs_query(s,
                            "SELECT id, title, starts_at, ends_at FROM shifts "
                            "WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                            v, 3, err);
    if (!r)
        return err->code;
    json_decref(io->out);
    io->out = json_array();
    io->next = 0;
    int n, seen = 0;
    while ((n = dbs_rows_next(r, err)) == 1) {
        if (seen++ == io->limit) {
            json_t *last = json_array_get(io->out, json_array_size(io->out) - 1);
            io->next = (int64_t)json_integer_value(json_object_get(last, "id"));
            break;
        }
        json_array_append_new(io->out, shift_json(r));
    }
    dbs_rows_close(r);
    return n < 0 ? n : 0;
}

static void list_shifts(const sb_app *app, sb_request *req, sb_response *res)
{
    struct shift_io io = {.user_id = strtoll(req->user_id, NULL, 10), .limit = PAGE_DEFAULT};
    if (req->query_limit) {
        int64_t l;
        if (!parse_id(req->query_limit, &l) || l > PAGE_MAX) {
            sb_error(res, 400, "limit must be an integer from 1 to %d", PAGE_MAX);
            return;
        }
        io.limit = (int)l;
    }
    if (req->query_after && !parse_id(req->query_after, &io.after) &&
        strcmp(req->query_after, "0") != 0) {
        sb_error(res, 400, "after must be a shift id");
        return;
    }
    dbs_context ctx = context_of(req);
    dbs_error err;
    int rc = read_transact(app, &ctx, list_shifts_unit, &io, &err);
    if (rc != DBS_OK) {
        json_decref(io.out);
        db_failure(req, res, rc, &err);
        return;
    }
    json_t *next = io.next ? json_integer(io.next) : json_null();
    sb_json(res, 200, json_pack("{soso}", "shifts", io.out, "next", next));
}

static int get_shift_unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct shift_io *io = arg;
    dbs_value v[] = {DBS_INT(io->id), DBS_INT(io->user_id)};
    dbs_rows *r = dbs_query(
        s, "SELECT id, title, starts_at, ends_at FROM shifts WHERE id = $1 AND user_id = $2", v,
        2, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    json_decref(io->out);
    io->out = n == 1 ? shift_json(r) : NULL;
    dbs_rows_close(r);
    return n < 0 ? n : 0;
}

static int delete_shift_unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct shift_io *io = arg;
    dbs_value v[] = {DBS_INT(io->id), DBS_INT(io->user_id)};
    io->affected = dbs_exec(s, "DELETE FROM shifts WHERE id = $1 AND user_id = $2", v, 2, err);
    return io->affected < 0 ? (int)io->affected : 0;
}

/* Another user's shift is answered exactly like a missing one: 404, so
 * ids cannot be probed for existence. */
static void one_shift(const sb_app *app, sb_request *req, sb_response *res, int64_t id,
                      bool del)
{
    struct shift_io io = {.user_id = strtoll(req->user_id, NULL, 10), .id = id};
    dbs_context ctx = context_of(req);
    dbs_error err;
    int rc = del ? write_transact(app, &ctx, delete_shift_unit, &io, false, &err)
                 : read_transact(app, &ctx, get_shift_unit, &io, &err);
    if (rc != DBS_OK) {
        json_decref(io.out);
        db_failure(req, res, rc, &err);
    } else if (del) {
        if (io.affected == 0)
            sb_error(res, 404, "no shift %lld", (long long)id);
        else
            res->status = 204;
    } else if (!io.out) {
        sb_error(res, 404, "no shift %lld", (long long)id);
    } else {
        sb_json(res, 200, io.out);
    }
}

/* What a PATCH found: the unit of work answers it without writing, so a
 * refused change commits nothing. */
enum { PATCH_DONE, PATCH_MISSING, PATCH_ENDS_FIRST };

/* One statement merges the given fields over the stored ones and checks
 * the merged times, so two concurrent PATCHes of one shift cannot each
 * pass the check against what the other is changing. NULL parameters keep
 * the stored value (COALESCE). */
/* A PATCH's parameters: $1 id, $2 user, then each field, NULL where the
 * PATCH leaves it as stored (PATCH_SET's COALESCEs). */
enum { PATCH_PARAMS = 7 };
#define PATCH_SET                                                              \
    "UPDATE shifts SET title = COALESCE($3, title), "                          \
    "starts_at = COALESCE($4, starts_at), "                                    \
    "starts_epoch = COALESCE($5, starts_epoch), "                              \
    "ends_at = COALESCE($6, ends_at), "                                        \
    "ends_epoch = COALESCE($7, ends_epoch) "

static void patch_params(const struct shift_io *io, dbs_value *v)
{
    v[0] = DBS_INT(io->id);
    v[1] = DBS_INT(io->user_id);
    v[2] = io->title ? DBS_TEXT(io->title) : DBS_NULL;
    v[3] = io->starts_at ? DBS_TEXT(io->starts_at) : DBS_NULL;
    v[4] = io->starts_at ? DBS_INT(io->starts) : DBS_NULL;
    v[5] = io->ends_at ? DBS_TEXT(io->ends_at) : DBS_NULL;
    v[6] = io->ends_at ? DBS_INT(io->ends) : DBS_NULL;
}

/* MariaDB has no UPDATE ... RETURNING: the row is locked and read first
 * (FOR UPDATE, so a concurrent PATCH waits for this one), the merged times
 * checked here, then written. */
static int update_shift_locked(dbs_session *s, struct shift_io *io, dbs_error *err)
{
    dbs_value key[] = {DBS_INT(io->id), DBS_INT(io->user_id)};
    dbs_rows *r = dbs_query(s,
                            "SELECT starts_epoch, ends_epoch FROM shifts "
                            "WHERE id = $1 AND user_id = $2 FOR UPDATE",
                            key, 2, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    int64_t starts = n == 1 ? dbs_rows_int(r, 0) : 0, ends = n == 1 ? dbs_rows_int(r, 1) : 0;
    dbs_rows_close(r);
    if (n < 0)
        return n;
    json_decref(io->out); /* a retried unit starts over */
    io->out = NULL;
    if (n == 0) {
        io->affected = PATCH_MISSING;
        return 0;
    }
    if (io->starts_at)
        starts = io->starts;
    if (io->ends_at)
        ends = io->ends;
    if (ends <= starts) {
        io->affected = PATCH_ENDS_FIRST;
        return 0;
    }
    dbs_value v[PATCH_PARAMS];
    patch_params(io, v);
    if (dbs_exec(s, PATCH_SET "WHERE id = $1 AND user_id = $2", v, PATCH_PARAMS, err) < 0)
        return err->code;
    r = dbs_query(s,
                  "SELECT id, title, starts_at, ends_at FROM shifts WHERE id = $1 AND user_id = $2",
                  key, 2, err);
    if (!r)
        return err->code;
    n = dbs_rows_next(r, err);
    io->out = n == 1 ? shift_json(r) : NULL;
    dbs_rows_close(r);
    if (n != 1)
        return n < 0 ? n : DBS_ESQL;
    io->affected = PATCH_DONE;
    return 0;
}

static int update_shift_unit(dbs_session *s, void *arg, dbs_error *err)
{
    struct shift_io *io = arg;
    if (io->mariadb)
        return update_shift_locked(s, io, err);
    dbs_value v[PATCH_PARAMS];
    patch_params(io, v);
    dbs_rows *r = dbs_query(s,
                            PATCH_SET "WHERE id = $1 AND user_id = $2 "
                                      "AND COALESCE($7, ends_epoch) > COALESCE($5, starts_epoch) "
                                      "RETURNING id, title, starts_at, ends_at",
                            v, PATCH_PARAMS, err);
    if (!r)
        return err->code;
    int n = dbs_rows_next(r, err);
    json_decref(io->out); /* a retried unit starts over */
    io->out = n == 1 ? shift_json(r) : NULL;
    dbs_rows_close(r);
    if (n < 0)
        return n;
    if (n == 1) {
        io->affected = PATCH_DONE;
        return 0;
    }
    /* nothing updated: no such shift of this user, or the merged times
     * are backwards */
    dbs_rows *q = dbs_query(s, "SELECT 1 FROM shifts WHERE id = $1 AND user_id = $2", v, 2, err);
    if (!q)
        return err->code;
    n = dbs_rows_next(q, err);
    dbs_rows_close(q);
    if (n < 0)
        return n;
    io->affected = n == 1 ? PATCH_ENDS_FIRST : PATCH_MISSING;
    return 0;
}

/* The fields a PATCH may carry, each optional, with create's rules. */
static const char *const patch_fields[] = {"title", "starts_at", "ends_at"};

/* PATCH /api/shifts/{id}: any of title, starts_at, ends_at; the merged
 * shift must still end after it starts. Unknown fields are refused, not
 * ignored: a misspelt field ("start_at") must not pass as a change that
 * did nothing. */
static void update_shift(const sb_app *app, sb_request *req, sb_response *res, int64_t id)
{
    json_t *body = body_object(req, res);
    if (!body)
        return;
    const char *key;
    json_t *value;
    json_object_foreach(body, key, value) {
        bool known = false;
        for (size_t i = 0; i < sizeof patch_fields / sizeof patch_fields[0]; i++)
            known = known || !strcmp(key, patch_fields[i]);
        if (!known) {
            sb_error(res, 400, "unknown field \"%.64s\": a shift has title, starts_at and ends_at",
                     key);
            json_decref(body);
            return;
        }
    }
    if (json_object_size(body) == 0) {
        sb_error(res, 400, "nothing to change: give title, starts_at or ends_at");
        json_decref(body);
        return;
    }
    struct shift_io io = {.user_id = strtoll(req->user_id, NULL, 10), .id = id,
                          .mariadb = app->mariadb};
    bool ok = true;
    if (json_object_get(body, "title"))
        ok = (io.title = text_field(body, "title", 1, 200, res)) != NULL;
    if (ok && json_object_get(body, "starts_at")) {
        ok = (io.starts_at = text_field(body, "starts_at", 1, 64, res)) != NULL;
        if (ok && !(ok = sb_parse_rfc3339(io.starts_at, &io.starts)))
            sb_error(res, 400, "field \"starts_at\" must be an RFC 3339 date-time, "
                               "like 2026-11-24T09:00:00Z");
    }
    if (ok && json_object_get(body, "ends_at")) {
        ok = (io.ends_at = text_field(body, "ends_at", 1, 64, res)) != NULL;
        if (ok && !(ok = sb_parse_rfc3339(io.ends_at, &io.ends)))
            sb_error(res, 400, "field \"ends_at\" must be an RFC 3339 date-time, "
                               "like 2026-11-24T17:00:00Z");
    }
    if (ok && io.starts_at && io.ends_at && io.ends <= io.starts) {
        sb_error(res, 400, "the shift must end after it starts");
        ok = false;
    }
    if (ok) {
        dbs_context ctx = context_of(req);
        dbs_error err;
        int rc = write_transact(app, &ctx, update_shift_unit, &io, false, &err);
        if (rc != DBS_OK) {
            json_decref(io.out);
            db_failure(req, res, rc, &err);
        } else if (io.affected == PATCH_MISSING) {
            sb_error(res, 404, "no shift %lld", (long long)id);
        } else if (io.affected == PATCH_ENDS_FIRST) {
            sb_error(res, 400, "the shift must end after it starts (%s)",
                     io.starts_at ? "the new starts_at is not before its end"
                                  : "the new ends_at is not after its start");
        } else {
            sb_json(res, 200, io.out);
        }
    }
    json_decref(body);
}

/* ---- operations ---- */

static char *pool_json(const sb_app *app)
{
    char *buf = NULL;
    size_t cap = 2048;
    for (;;) {
        char *b = realloc(buf, cap);
        if (!b) {
            free(buf);
            return NULL;
        }
        buf = b;
        int n = dbs_pool_stats_json(app->pool, buf, cap);
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if ((size_t)n < cap)
            return buf;
        cap = (size_t)n + 1;
    }
}

static void metrics(const sb_app *app, sb_response *res)
{
    size_t cap = 16384;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf) {
            sb_error(res, 500, "out of memory");
            return;
        }
        int n = dbs_pool_metrics(app->pool, buf, cap);
        if (n >= 0 && (size_t)n < cap) {
            size_t entries, slots;
            unsigned long evicted, refused;
            sb_rl_stats(&entries, &slots, &evicted, &refused);
            unsigned hashing, hashing_peak;
            unsigned long hashes;
            sb_hash_counts(&hashing, &hashing_peak, &hashes);
            int m = snprintf(
                buf + n, cap - (size_t)n,
                "# HELP shiftboard_ratelimit_entries Slots in use in the guessing limits' table.\n"
                "# TYPE shiftboard_ratelimit_entries gauge\n"
                "shiftboard_ratelimit_entries %zu\n"
                "# HELP shiftboard_ratelimit_capacity Slots in the guessing limits' table.\n"
                "# TYPE shiftboard_ratelimit_capacity gauge\n"
                "shiftboard_ratelimit_capacity %zu\n"
                "# HELP shiftboard_ratelimit_evictions_total Keys forgotten to make room.\n"
                "# TYPE shiftboard_ratelimit_evictions_total counter\n"
                "shiftboard_ratelimit_evictions_total %lu\n"
                "# HELP shiftboard_ratelimit_refused_total Attempts answered 429.\n"
                "# TYPE shiftboard_ratelimit_refused_total counter\n"
                "shiftboard_ratelimit_refused_total %lu\n"
                "# HELP shiftboard_slots_per_ip_refused_total Requests answered 503 because "
                "their address held its share of the handler slots (--slots-per-ip).\n"
                "# TYPE shiftboard_slots_per_ip_refused_total counter\n"
                "shiftboard_slots_per_ip_refused_total %lu\n"
                "# HELP shiftboard_hashes_in_progress Password hashes in memory now.\n"
                "# TYPE shiftboard_hashes_in_progress gauge\n"
                "shiftboard_hashes_in_progress %u\n"
                "# HELP shiftboard_hashes_in_progress_max The most password hashes in "
                "memory at once since the start.\n"
                "# TYPE shiftboard_hashes_in_progress_max gauge\n"
                "shiftboard_hashes_in_progress_max %u\n"
                "# HELP shiftboard_hashes_total Password hashes computed (made or verified) "
                "since the start.\n"
                "# TYPE shiftboard_hashes_total counter\n"
                "shiftboard_hashes_total %lu\n"
                "# HELP shiftboard_hash_permits The most password hashes allowed in memory "
                "at once (--hash-memory, the processors).\n"
                "# TYPE shiftboard_hash_permits gauge\n"
                "shiftboard_hash_permits %u\n"
                "# HELP shiftboard_hash_refused_total Requests answered 503 because no "
                "password hashing permit came in time.\n"
                "# TYPE shiftboard_hash_refused_total counter\n"
                "shiftboard_hash_refused_total %lu\n",
                entries, slots, evicted, refused, atomic_load(&app->share_refused), hashing,
                hashing_peak, hashes, app->hash_permits, atomic_load(&app->hash_refused));
            if (m < 0 || (size_t)m >= cap - (size_t)n) {
                free(buf);
                cap = (size_t)n + (m > 0 ? (size_t)m : 1024) + 1;
                continue;
            }
            res->status = 200;
            res->body = buf;
            res->content_type = "text/plain; version=0.0.4; charset=utf-8";
            return;
        }
        free(buf);
        if (n < 0) {
            sb_error(res, 500, "metrics: %s", dbs_strerror(n));
            return;
        }
        cap = (size_t)n + 1;
    }
}

/* ---- routing ---- */

static bool method_is(const sb_request *req, const char *m)
{
    return !strcmp(req->method, m);
}

/* Whether req's method is one of allow ("GET, POST"); if not, res gets 405
 * with an Allow header. */
static bool allowed(const sb_request *req, sb_response *res, const char *allow)
{
    size_t n = strlen(req->method);
    for (const char *a = allow; (a = strstr(a, req->method)); a += n) {
        bool starts = a == allow || a[-1] == ' ';
        bool ends = a[n] == '\0' || a[n] == ',';
        if (starts && ends)
            return true;
    }
    res->allow = allow;
    sb_error(res, 405, "method %s not allowed here; allowed: %s", req->method, allow);
    return false;
}

static void dashboard(sb_response *res)
{
    res->body = strdup(sb_dashboard_html);
    res->status = res->body ? 200 : 500;
    res->content_type = "text/html; charset=utf-8";
}

static void pool_stats(const sb_app *app, const sb_request *req, sb_response *res)
{
    /* ?after=SEQ (-1: all kept): the dashboard's history, windows and held
     * sessions beside the pool's stats */
    long long after = 0;
    bool dash = req->query_after != NULL;
    if (dash) {
        char *end;
        errno = 0;
        after = strtoll(req->query_after, &end, 10);
        if (end == req->query_after || *end || errno || after < -1) {
            sb_error(res, 400, "after must be a sample number (-1: every sample kept)");
            return;
        }
    }
    char *pool = pool_json(app);
    if (!pool) {
        sb_error(res, 500, "out of memory");
        return;
    }
    if (!dash) {
        res->status = 200;
        res->body = pool;
        return;
    }
    json_t *o = json_loads(pool, 0, NULL);
    free(pool);
    char *history = NULL;
    json_t *extra = o ? sb_dash_json(app->pool, after, &history) : NULL;
    char *text = extra && json_object_update(o, extra) == 0 ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    json_decref(extra);
    /* the history is text already (each sample rendered once, dash.c):
     * it goes in as the object's last member, "{...}" becoming
     * "{...,"history":[...]}" */
    size_t tl = text ? strlen(text) : 0, hl = history ? strlen(history) : 0;
    char *body = tl >= 2 && history ? malloc(tl + hl + 16) : NULL;
    if (!body) {
        free(text);
        free(history);
        sb_error(res, 500, "out of memory");
        return;
    }
    memcpy(body, text, tl - 1);
    sprintf(body + tl - 1, ",\"history\":%s}", history);
    free(text);
    free(history);
    res->status = 200;
    res->body = body;
}

void sb_handle(const sb_app *app, sb_request *req, sb_response *res)
{
    const char *p = req->path;
    int64_t id;
    if (!strcmp(p, "/")) {
        if (allowed(req, res, "GET"))
            dashboard(res);
    } else if (!strcmp(p, "/health")) {
        if (allowed(req, res, "GET"))
            sb_health(app, req, res);
    } else if (!strcmp(p, "/metrics")) {
        if (allowed(req, res, "GET"))
            metrics(app, res);
    } else if (!strcmp(p, "/api/pool")) {
        if (allowed(req, res, "GET"))
            pool_stats(app, req, res);
    } else if (!strcmp(p, "/api/users")) {
        if (allowed(req, res, "POST"))
            create_user(app, req, res);
    } else if (!strcmp(p, "/api/login")) {
        if (allowed(req, res, "POST"))
            login(app, req, res);
    } else if (!strcmp(p, "/api/shifts")) {
        if (allowed(req, res, "GET, POST") && authenticate(app, req, res)) {
            if (method_is(req, "GET"))
                list_shifts(app, req, res);
            else
                create_shift(app, req, res);
        }
    } else if (!strncmp(p, "/api/shifts/", 12) && parse_id(p + 12, &id)) {
        if (allowed(req, res, "GET, PATCH, DELETE") && authenticate(app, req, res)) {
            if (method_is(req, "PATCH"))
                update_shift(app, req, res, id);
            else
                one_shift(app, req, res, id, method_is(req, "DELETE"));
        }
    } else {
        sb_error(res, 404, "no such route: %s", p);
    }
}
