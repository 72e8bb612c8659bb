/* shiftboard: a multi-user shift-scheduling JSON API over HTTP, the
 * reference service for dbscope. Every request gets its own database
 * session through dbs_transact, with a context of request id and user id;
 * nothing database-related outlives a request. */
#ifndef SHIFTBOARD_H
#define SHIFTBOARD_H

#include "dbscope.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest request body accepted; larger ones get 413. */
#define SB_MAX_BODY (16 * 1024)

/* One HTTP request as the handlers see it. */
typedef struct sb_request {
    const char *method;
    const char *path;
    const char *query_limit;    /* ?limit= */
    const char *query_after;    /* ?after= */
    const char *authorization;  /* the Authorization header, or NULL */
    const char *body;           /* NUL-terminated, may be empty */
    size_t body_len;
    char request_id[40];
    char user_id[24];           /* set once the bearer token is checked */
    char client[48];            /* the client's address, as text */
    void *conn;                 /* the HTTP layer's own, for sb_app.hash_enter */
} sb_request;

/* A response: status, a body the handler allocated (freed by the HTTP
 * layer), its content type, and optional Retry-After, Allow and
 * WWW-Authenticate values (static strings). */
typedef struct sb_response {
    int status;
    char *body;
    const char *content_type;
    const char *retry_after;
    const char *allow;
    const char *www_authenticate;
    char retry_buf[16];         /* room for a computed Retry-After value */
} sb_response;

/* ---- app.c: the routes ---- */

/* Everything the handlers share; read-only after start. */
typedef struct sb_app {
    dbs_pool *pool;
    bool postgres;
    bool mariadb; /* mysql:// or mariadb:// */
    unsigned long long pwhash_ops;
    size_t pwhash_mem;
    bool allow_bypassrls; /* start even if the role bypasses row-level security */
    /* The bound on password hashes in memory at once (server.c: from
     * --hash-memory and the processors), shown in /metrics; 0: none. */
    unsigned hash_permits;
    /* Waits for one of those permits for req's next hash, its address
     * holding or waiting for at most its share of them, and returns true;
     * false when none came within the bound, with res answered 503 and
     * Retry-After. hash_leave gives the permit back. Called on the
     * request's thread around the argon2id call alone, with no session
     * open. NULL (the fuzz target): no bound. */
    bool (*hash_enter)(sb_request *req, sb_response *res);
    void (*hash_leave)(sb_request *req);
    /* Requests refused because their address held its share of the handler
     * slots (server.c, --slots-per-ip), and because no hashing permit came
     * in time: the fields counted after start. */
    atomic_ulong share_refused;
    atomic_ulong hash_refused;
} sb_app;

/* Routes req to its handler and fills res. Any thread. */
void sb_handle(const sb_app *app, sb_request *req, sb_response *res);

/* ---- health.c ---- */

/* GET /health: the pool's view and a bounded check of the database; answers
 * within a second even when the database does not. Any thread. */
void sb_health(const sb_app *app, sb_request *req, sb_response *res);
/* Whether a unit of work that writes may run now: false while, on SQLite,
 * the file is known locked by another connection or process and another
 * write already waits for the lock (one at a time finds out when it is
 * gone; the rest are refused at once instead of each holding a handler
 * slot for the lock's bounds). *probe says the write admitted is that one.
 * Any thread. */
bool sb_health_write_begin(const sb_app *app, bool *probe);
/* Tells /health how a unit of work that writes ended (probe: as
 * sb_health_write_begin said): DBS_EFULL makes the service degraded (503
 * "degraded", code "full") for a while; on SQLite so does a write that
 * waited out its bounds for another connection's or process's lock
 * (DBS_ERETRYABLE once retried, DBS_ESTMT_TIMEOUT: code "locked").
 * DBS_OK ends "locked", and, from a unit that stored something (stores),
 * "full" too. Other codes are ignored. Any thread. */
void sb_health_write_end(const sb_app *app, int rc, bool stores, bool probe);

/* ---- ratelimit.c: limits on guessing ---- */

/* Failed logins and failed bearer tokens are counted per client address
 * and per account name in fixed windows of SB_RL_WINDOW_S: past
 * SB_RL_ADDRESS_MAX failures from an address, or SB_RL_ACCOUNT_MAX for an
 * account, further attempts get 429 until the window ends. An account over
 * its limit stays open to the addresses it logged in from before.
 * Accounts registered are counted per client address in windows of
 * SB_RL_REGISTER_WINDOW_S, at most SB_RL_REGISTER_MAX each: registration
 * needs no account, so it is what one client could otherwise repeat
 * without end, each time a row more. */
enum {
    SB_RL_WINDOW_S = 60,
    SB_RL_ADDRESS_MAX = 20,
    SB_RL_ACCOUNT_MAX = 10,
    SB_RL_REGISTER_WINDOW_S = 3600,
    SB_RL_REGISTER_MAX = 64,
    SB_RL_DEFAULT_ENTRIES = 16384,
};

/* Makes the table, of at least entries slots (fixed from then on; a second
 * call changes nothing). Without it, the first use makes it at
 * SB_RL_DEFAULT_ENTRIES. Returns 0, or -1 out of memory. Any thread. */
int sb_rl_init(size_t entries);
/* Seconds the attempt from address (for account, or NULL for a token) must
 * wait, 0 when it may go ahead now. Any thread; never blocks beyond a
 * mutex. */
int sb_rl_check(const char *address, const char *account);
/* sb_rl_check, and an attempt it lets through is counted as failed at once,
 * under the same lock: for an attempt that takes long to judge (a login's
 * password hash), so that attempts running at once cannot all pass the
 * check before any of them is counted. sb_rl_refund takes the count back
 * when the attempt did not fail. Also how a failure judged after an
 * earlier sb_rl_check is counted (a bearer token looked up): nonzero then
 * means the attempt is past the limit after all and is answered 429. */
int sb_rl_claim(const char *address, const char *account);
/* Takes back the failure sb_rl_claim counted (in its window still). */
void sb_rl_refund(const char *address, const char *account);
/* Seconds a registration from address must wait, 0 when it may go ahead
 * now, in which case it is counted at once (under the lock, like
 * sb_rl_claim, so registrations running at once cannot all pass the
 * check); sb_rl_register_refund takes it back when no account was made. */
int sb_rl_register_claim(const char *address);
void sb_rl_register_refund(const char *address);
/* Remembers that account logged in from address. */
void sb_rl_succeeded(const char *address, const char *account);
/* The table's slots in use, its capacity, the keys it forgot to make room
 * and the attempts it refused so far. */
void sb_rl_stats(size_t *entries, size_t *capacity, unsigned long *evicted,
                 unsigned long *refused);

/* ---- dash.c: what the dashboard draws ---- */

/* Starts the sampler: a sample of pool a second (sessions, windowed wait
 * percentiles, errors, HTTP answers, the circuit, replica lag) into a ring
 * of ten minutes. 0, or -1 if the thread cannot start. */
int sb_dash_start(dbs_pool *pool);
/* Stops and joins the sampler (before the pool closes). */
void sb_dash_stop(void);
/* Counts an HTTP answer by status. Any thread. */
void sb_dash_http(int status);
/* {"seq", "wait_p99_10s_ms", "wait_p99_60s_ms", "held": the sessions open
 * now, longest held first, "held_total", "http"}, and in *history (the
 * caller frees it) the JSON array text of the samples after seq `after`
 * (-1: all kept), each rendered once when it was taken; NULL if out of
 * memory. */
json_t *sb_dash_json(dbs_pool *pool, long long after, char **history);

/* ---- json.c: responses ---- */

/* res gets status and the JSON text of obj (which is consumed). */
void sb_json(sb_response *res, int status, json_t *obj);
/* res gets status and {"error": message}. */
void sb_error(sb_response *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- auth.c: passwords and tokens ---- */

/* Hashes password with argon2id into out (crypto_pwhash_STRBYTES). Slow on
 * purpose: call it with no session open. Returns 0 or -1 (out of memory). */
int sb_password_hash(const sb_app *app, const char *password, char *out, size_t len);
/* Checks password against a stored hash; with hash NULL, spends the same
 * time (a decoy hashed at app's cost) and fails, so unknown names cannot
 * be told apart by timing. */
bool sb_password_check(const sb_app *app, const char *hash, const char *password);
/* Password hashes (both of the above) running now, the most that ran at
 * once since the start, and how many ran since the start. Any thread. */
void sb_hash_counts(unsigned *now, unsigned *peak, unsigned long *total);
/* A new random token (hex, 64 chars) and the hash stored for it. */
void sb_token_new(char token[65], char hash[65]);
/* The stored hash of a presented token. */
void sb_token_hash(const char *token, char hash[65]);

/* ---- times.c ---- */

/* Parses an RFC 3339 date-time ("2026-11-24T09:00:00Z", offsets and
 * fractions allowed) to seconds since the epoch, UTC. */
bool sb_parse_rfc3339(const char *s, int64_t *out);

/* ---- schema.c ---- */

/* Creates or migrates the schema, idempotently. On PostgreSQL, turns on
 * row-level security for shifts, keyed on app.user_id, after checking that
 * the role connected is bound by it: a superuser or a BYPASSRLS role is
 * refused with DBS_ECONFIG and a message saying what to do, unless
 * app->allow_bypassrls, in which case a warning is logged. */
int sb_schema(sb_app *app, dbs_error *err);

/* ---- dashboard.c ---- */

extern const char sb_dashboard_html[];

#endif
