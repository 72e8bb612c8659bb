/*
 * MariaDB/MySQL backend on MariaDB Connector/C (libmariadb).
 *
 * URLs: mysql://user:pass@host:port/db?opt=... and mariadb://..., parsed
 * here (target_open) because Connector/C has no URL parser of its own. The
 * options are listed in docs/mariadb.md; anything else is DBS_ECONFIG.
 *
 * Parameters: $1..$n are rewritten to '?' where the server's lexer reads
 * code (translate: not in quotes, backticks, comments the server skips or
 * names), and each '?' is bound from params[map[i]], so a number used
 * twice is bound twice. Statements are server-side prepared statements kept
 * in a per-connection LRU cache of stmt_cache_size entries (0: prepared,
 * executed and closed each time). Query results are read whole into the
 * rows object, so rows outlive the statement handle: two open results of
 * the same cached statement, or a reset under an open result, cannot
 * interfere.
 *
 * Round trips. begin() sends nothing. The first statement of a transaction
 * sends "[ROLLBACK;] [SET TRANSACTION ISOLATION LEVEL ...;] START
 * TRANSACTION [READ ONLY][; SET @ctx...]" as one multi-statement
 * text query, then its prepared statement: one round trip more than the
 * statement, since the binary protocol cannot carry a text command in the
 * same packet. A statement new to the cache is prepared and executed in one
 * round trip (mariadb_stmt_execute_direct). COMMIT costs one, and so does
 * ROLLBACK (dbs_rollback releases the row locks before it returns); only
 * the rollback of a session that closes is left to the reset, which rolls
 * back in its own round trip.
 *
 * The transaction's state is what the server reports after each statement
 * (server_status), never what the SQL looked like: follow_tx. A read-only
 * session is READ ONLY at the transaction and the session level, the
 * latter tracked by the server (session_track_system_variables).
 *
 * Reset (DBS_RESET_FULL): COM_RESET_CONNECTION. Under DBS_RESET_TRACKED,
 * skipped when the session left nothing to undo as
 * the server itself reports it (note_state, needs_reset): no change of
 * session state reported by its trackers, no failed statement, no escaped
 * transaction, no native(); then the release statement (release_sql) rides
 * with the COMMIT or ROLLBACK and undoes or looks for what the trackers do
 * not report (named locks, LAST_INSERT_ID, user variables set by := or
 * INTO), and the statement cache stays. HANDLER ... OPEN and a sequence's
 * PREVIOUS VALUE are neither reported nor looked for (docs/mariadb.md).
 * Otherwise COM_RESET_CONNECTION (mysql_reset_connection): it holds by
 * construction; it rolls back, drops temporary tables, releases GET_LOCK
 * locks, clears user variables, restores session variables (the trackers
 * too, switched on again before the next statement) and deallocates every
 * prepared statement, ours included. It does not restore
 * the current database: the server reports schema changes (session
 * tracking), so a USE is undone with COM_INIT_DB only when it happened; on
 * a server that does not track the schema, COM_INIT_DB is sent each time.
 * Nor does MariaDB's restore the current role (SET ROLE): the reset owes a
 * SET ROLE back to the connection's first role, sent in front of the next
 * transaction's START TRANSACTION, so it costs no round trip of its own;
 * so does a SELECT of no row, for FOUND_ROWS(), which the reset keeps.
 * Nor does it restore Connector/C's own character set, which followed a
 * SET NAMES and would escape for it while the server reads the
 * connection's: SET NAMES back, only then (full_reset).
 * The cache is emptied: its handles died with the server's statements, and
 * are prepared again with their next execution, at no extra round trip.
 * One round trip (one more after a USE, one more after a SET NAMES).
 *
 * Bounds: connect_timeout_ms is one deadline for the whole connect (the
 * lookup, every address, the handshake, the session setup), kept by our
 * own waits on the non-blocking calls (see abandonable waits); it becomes
 * MYSQL_OPT_CONNECT_TIMEOUT too, and
 * statement_timeout_ms MYSQL_OPT_READ_TIMEOUT/WRITE_TIMEOUT, both in whole
 * seconds rounded up (Connector/C has no finer unit), at most INT_MAX / 1000
 * (ms_to_s). Those bound each read; a round trip is read within the read
 * timeout from when it was sent (stmt_store, stmt_next, the b_ calls),
 * except a statement's first execution (mariadb_stmt_execute_direct has no
 * non-blocking form). A round trip that runs
 * out of time is killed on the server from a second connection (best
 * effort, bounded by the same timeouts), and the connection is broken.
 * The URL options connect_timeout, read_timeout and write_timeout (seconds)
 * take precedence. A per-session bound (dbs_session_set_statement_timeout)
 * is not applied here: Connector/C fixes the socket timeouts at connect
 * and has no call to change them on an open connection, and the driver
 * table has no method for it; sessions keep the pool's bound.
 *
 * Locking: none. driver.h guarantees one thread at a time per connection;
 * the library's global initialisation runs once (pthread_once).
 */
#include "internal.h"

#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>

enum { MY_CTX_NAME = 64 };

/* The trackers note_state relies on. COM_RESET_CONNECTION puts them back
 * to the server's defaults, so they are set again after each reset. */
#define TRACK_SQL                                                              \
    "SET SESSION session_track_state_change=ON,session_track_schema=ON,"      \
    "session_track_system_variables='*'"

/* A SELECT of no row: FOUND_ROWS() reads 0 after it. COM_RESET_CONNECTION
 * keeps the connection's count of the last SELECT (how many rows a SELECT
 * SQL_CALC_FOUND_ROWS matched: another user's search), and START
 * TRANSACTION, SET and SET ROLE do not replace it. */
#define FOUND_SQL "SELECT 0 LIMIT 0"

/* What the URL says; t->shared. */
typedef struct my_target {
    const char *url; /* the pool's (t->conninfo), for scrubbing messages */
    char *host, *user, *password, *db, *socket;
    bool host_given; /* the URL names host (not the socket's "localhost") */
    unsigned port;
    int ssl_mode; /* MY_SSL_* */
    char *ssl_ca, *ssl_capath, *ssl_cert, *ssl_key, *ssl_cipher, *ssl_crl,
        *ssl_crlpath;
    int url_connect_timeout_s; /* -1: not in the URL */
    int url_read_timeout_s, url_write_timeout_s; /* -1: not in the URL */
    char var[3][MY_CTX_NAME + 4]; /* @`name` for request, user, tenant */
    char release[3 * MY_CTX_NAME + 320]; /* see release_sql */
} my_target;

enum { MY_SSL_UNSET, MY_SSL_DISABLED, MY_SSL_PREFERRED, MY_SSL_REQUIRED,
       MY_SSL_VERIFY_CA, MY_SSL_VERIFY_IDENTITY };

typedef struct my_stmt {
    char *sql; /* the caller's text, the cache key; NULL = free slot */
    MYSQL_STMT *st;
    int *map;  /* placeholder i is bound from params[map[i]] */
    int nmap;
    int max_param;
    uint64_t last_use;
    char *pending; /* translated SQL not yet prepared on the server: its
                      first execution prepares it in the same round trip */
} my_stmt;

typedef struct my_conn {
    MYSQL *my;
    const dbs__target *t;
    const my_target *mt;
    bool broken;
    bool begin_pending; /* begin() called, START TRANSACTION not yet sent */
    bool tx_sent;       /* START TRANSACTION sent */
    bool rollback_owed; /* sent with the next statement or done by reset */
    bool vars_set;      /* context user variables may hold values */
    bool native_used;   /* the caller had the raw handle */
    bool read_only;     /* transactions begin READ ONLY (set_read_only) */
    bool opt_ro;        /* transactions begin READ ONLY (tx_options) */
    enum dbs_isolation iso; /* the next transactions' level (tx_options) */
    bool session_ro;    /* SET SESSION TRANSACTION READ ONLY is in effect,
                           and the server reports changes to it */
    bool ro_owed;       /* the caller changed the session's access mode:
                           set it again before the next statement */
    bool tx_failed;     /* the server rolled the transaction back (deadlock):
                           later statements would run outside it */
    bool rollback_on_timeout; /* the server's InnoDB rolls back the whole
                           transaction at a lock wait timeout, not just the
                           statement (innodb_rollback_on_timeout, fixed at
                           server start, read at connect) */
    bool escaped;       /* since the last reset, a transaction dbscope began
                           ended on the server other than by its COMMIT or
                           ROLLBACK (implicit commit, COMMIT sent as SQL) */
    bool schema_tracked;
    bool role_owed;     /* the reset's SET ROLE, sent before the next
                           statement (or native()) */
    bool found_owed;    /* the reset left FOUND_ROWS() at the count of the
                           session's last SELECT, which only a SELECT
                           replaces: FOUND_SQL, sent as role_owed is */
    bool tracking;      /* the server reports every change of session state
                           (session_track_*, set at connect under
                           DBS_RESET_TRACKED only): see note_state */
    bool track_owed;    /* a reset switched tracking off: switch it on again
                           before the next statement */
    bool dirty;         /* since the last reset, a statement may have left
                           session state behind: the server reported a
                           change, or a statement failed (an error packet
                           carries no report), or tracking is off */
    bool released;      /* the release statement ran with the COMMIT or
                           ROLLBACK and found nothing left: reset() has
                           nothing to do */
    bool answer_owed;   /* a release statement was sent at release and its
                           answer is read by the next use (settle) */
    bool reset_owed;    /* that answer found state: COM_RESET_CONNECTION
                           before anything else is sent */
    char role_sql[160]; /* how to get the connection's first role back */
    bool names_lost;    /* the server ignores the character set asked for at
                           connect, and a reset puts its own back: SET
                           NAMES after connect and after every reset */
    unsigned long long max_packet; /* the server's max_allowed_packet for
                           this connection (0: unknown) */
    char charset[32];   /* the client character set the connection began
                           with: what a reset must leave on both sides */
    char *setup_sql;    /* "SET autocommit=1,time_zone=...": the settings
                           the connection began with (init_connect's) where
                           COM_RESET_CONNECTION would leave the server's
                           global ones instead, and autocommit on, which
                           follow_tx relies on; NULL when there are none */
    bool setup_owed;    /* send setup_sql before the next statement (or
                           native()): after connect when autocommit was off,
                           after every reset */
    bool setup_mode;    /* setup_sql sets sql_mode ... */
    bool setup_nbe;     /* ... to one with NO_BACKSLASH_ESCAPES */
    const dbs_context *ctx;
    my_stmt *cache;
    int cache_n;
    uint64_t tick;
    unsigned rt_s; /* read timeout, seconds (0: none) */
    unsigned wt_s; /* write timeout, seconds (0: none) */
    unsigned ct_s; /* connect timeout, seconds (0: none) */
    int64_t stmt_t0;  /* when the statement in progress was sent (rt_s's
                         deadline for reading all its results) */
    bool past_bound;  /* a read failed at that deadline: a timeout */
    char addr[48]; /* the address connected to, "" when by name or socket */
    atomic_bool killed; /* my_interrupt sent a KILL: the connection's loss is
                           that cancel's doing (set from another thread) */
    dbs_error reset_err; /* code < 0: the release statement failed after the
                            COMMIT or ROLLBACK it rode with was answered
                            (my_reset_failure) */
} my_conn;

/* One fetched cell: numbers kept as numbers, everything else as bytes in
 * the result's arena (offset, so the arena may grow). */
typedef struct my_cell {
    unsigned char kind; /* 0 NULL, 1 int, 2 unsigned, 3 real, 4 bytes */
    union { int64_t i; uint64_t u; double r; size_t off; } v;
    size_t n;
} my_cell;

typedef struct my_rows {
    dbs_rows base;
    int ncols;
    size_t nrows, row; /* row is 1-based while on a row; 0 before */
    my_cell *cells;
    char *arena;
    size_t arena_n, arena_cap;
    size_t *name_off;
    unsigned char *ctype; /* each column's enum dbs_type */
    char scratch[40]; /* number as text for get_text */
    int64_t affected; /* rows the statement changed (as my_exec counts) */
} my_rows;

static const dbs__rows_ops my_rows_ops;

/* ---- URL ---- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string; NULL on a bad escape or NUL
 * (*bad = 1) or out of memory (*bad = 0). */
static char *decode(const char *s, size_t n, int *bad)
{
    *bad = 0;
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int a = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int b = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                free(d);
                *bad = 1;
                return NULL;
            }
            d[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            d[o++] = s[i];
        }
    }
    d[o] = '\0';
    return d;
}

static void target_free(my_target *m)
{
    if (!m)
        return;
    if (m->password) /* not left lying in freed memory */
        memset(m->password, 0, strlen(m->password));
    char *f[] = {m->host,   m->user,       m->password, m->db,
                 m->socket, m->ssl_ca,     m->ssl_capath, m->ssl_cert,
                 m->ssl_key, m->ssl_cipher, m->ssl_crl, m->ssl_crlpath};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        free(f[i]);
    free(m);
}

static const char *const my_options[] = {DBS__MYSQL_URL_OPTIONS};

static int parse_url(const char *url, my_target *m, dbs_error *err)
{
    char shown[200];
    dbs__redact(url, shown, sizeof shown);
    const char *p = strstr(url, "://");
    if (!p)
        return dbs__err(err, DBS_ECONFIG, "URL \"%s\" is not a mysql:// URL", shown);
    p += 3;
    size_t alen = strcspn(p, "/?");
    const char *auth = p, *auth_end = p + alen;
    /* A '@' after the host is the end of a user name or password that
     * holds a '/' or '?' left unencoded: what follows the '/' or '?' would
     * be read as the database and the options, and a message about them
     * would quote part of the password. dbs__redact takes the last '@' as
     * the end of the userinfo too, so refusing it here keeps the parser and
     * the redaction agreeing on what the password is; the message shows
     * the URL only as dbs__redact masks it, all of that hidden. */
    if (strchr(auth_end, '@'))
        return dbs__err(err, DBS_ECONFIG,
                        "URL \"%s\": '@' after the host: percent-encode the user name "
                        "and password ('/' as %%2F, '?' as %%3F, '@' as %%40), and any "
                        "'@' in the database name or an option as %%40",
                        shown);
    const char *at = NULL;
    for (const char *q = auth; q < auth_end; q++)
        if (*q == '@')
            at = q;
    int bad = 0;
#define DECODE(dst, s, n, what)                                                \
    do {                                                                       \
        (dst) = decode((s), (n), &bad);                                        \
        if (!(dst))                                                            \
            return bad ? dbs__err(err, DBS_ECONFIG,                            \
                                  "URL \"%s\": bad %%-escape in the %s", shown, \
                                  (what))                                      \
                       : dbs__err(err, DBS_ENOMEM, "out of memory");           \
    } while (0)
    const char *hp = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon) {
            DECODE(m->user, auth, (size_t)(colon - auth), "user name");
            DECODE(m->password, colon + 1, (size_t)(at - colon - 1), "password");
        } else {
            DECODE(m->user, auth, (size_t)(at - auth), "user name");
        }
        hp = at + 1;
    }
    /* host, [v6], :port */
    const char *host_end = auth_end, *port = NULL;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(auth_end - hp));
        if (!rb)
            return dbs__err(err, DBS_ECONFIG, "URL \"%s\": unclosed [ in the host",
                            shown);
        DECODE(m->host, hp + 1, (size_t)(rb - hp - 1), "host");
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return dbs__err(err, DBS_ECONFIG,
                                "URL \"%s\": junk after the [host]", shown);
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(hp, ':', (size_t)(auth_end - hp));
        if (colon) {
            host_end = colon;
            port = colon + 1;
        }
        if (host_end > hp)
            DECODE(m->host, hp, (size_t)(host_end - hp), "host");
    }
    if (port) {
        char *end;
        errno = 0;
        long v = strtol(port, &end, 10);
        if (port == auth_end || end != auth_end || errno || v < 1 || v > 65535)
            return dbs__err(err, DBS_ECONFIG,
                            "URL \"%s\": the port is not a number from 1 to 65535",
                            shown);
        m->port = (unsigned)v;
    }
    p = auth_end;
    if (*p == '/') {
        p++;
        size_t dl = strcspn(p, "?");
        if (dl > 0)
            DECODE(m->db, p, dl, "database name");
        p += dl;
    }
    m->url_connect_timeout_s = -1;
    m->url_read_timeout_s = -1;
    m->url_write_timeout_s = -1;
    if (*p == '?')
        p++;
    unsigned seen = 0; /* bit i: my_options[i] was given */
    while (*p) {
        size_t kl = strcspn(p, "=&");
        size_t vl = 0;
        const char *val = p + kl;
        if (*val == '=') {
            val++;
            vl = strcspn(val, "&");
        }
        char *key, *v;
        DECODE(key, p, kl, "option name");
        v = decode(val, vl, &bad);
        if (!v) {
            free(key);
            return bad ? dbs__err(err, DBS_ECONFIG,
                                  "URL \"%s\": bad %%-escape in an option value",
                                  shown)
                       : dbs__err(err, DBS_ENOMEM, "out of memory");
        }
        /* Messages name a known option as the list spells it and quote no
         * value: the URL shown beside them says the rest, redacted. */
        int idx = -1;
        for (size_t i = 0; i < sizeof my_options / sizeof my_options[0]; i++)
            if (!strcmp(key, my_options[i]))
                idx = (int)i;
        char **slot = NULL;
        int rc = DBS_OK;
        if (idx < 0) {
            char known[200] = "";
            for (size_t i = 0; i < sizeof my_options / sizeof my_options[0]; i++) {
                strncat(known, my_options[i], sizeof known - strlen(known) - 1);
                if (i + 1 < sizeof my_options / sizeof my_options[0])
                    strncat(known, ", ", sizeof known - strlen(known) - 1);
            }
            /* (the name is the URL's text, shown redacted beside it: no
             * part of the userinfo, since no '@' follows the host) */
            rc = dbs__err(err, DBS_ECONFIG,
                          "URL \"%s\": unknown option \"%.40s\" (known: %s)", shown, key,
                          known);
        } else if (seen & (1u << idx)) {
            /* Which one wins is no answer to give silently: a
             * ssl_mode=required later undone by ssl_mode=disabled. */
            rc = dbs__err(err, DBS_ECONFIG, "URL \"%s\": option %s given twice", shown,
                          my_options[idx]);
        } else if (!*v) {
            rc = dbs__err(err, DBS_ECONFIG, "URL \"%s\": option %s has no value", shown,
                          my_options[idx]);
        } else if (!strcmp(key, "socket"))
            slot = &m->socket;
        else if (!strcmp(key, "ssl_ca"))
            slot = &m->ssl_ca;
        else if (!strcmp(key, "ssl_capath"))
            slot = &m->ssl_capath;
        else if (!strcmp(key, "ssl_cert"))
            slot = &m->ssl_cert;
        else if (!strcmp(key, "ssl_key"))
            slot = &m->ssl_key;
        else if (!strcmp(key, "ssl_cipher"))
            slot = &m->ssl_cipher;
        else if (!strcmp(key, "ssl_crl"))
            slot = &m->ssl_crl;
        else if (!strcmp(key, "ssl_crlpath"))
            slot = &m->ssl_crlpath;
        else if (!strcmp(key, "ssl_mode")) {
            static const char *const modes[] = {"disabled", "preferred", "required",
                                                "verify_ca", "verify_identity"};
            int mode = MY_SSL_UNSET; /* this value's, whatever came before */
            for (int i = 0; i < 5; i++)
                if (!strcasecmp(v, modes[i]))
                    mode = MY_SSL_DISABLED + i;
            if (mode == MY_SSL_UNSET)
                rc = dbs__err(err, DBS_ECONFIG,
                              "URL \"%s\": ssl_mode is not one of disabled, "
                              "preferred, required, verify_ca, verify_identity",
                              shown);
            m->ssl_mode = mode;
        } else {
            /* connect_timeout, read_timeout, write_timeout */
            char *end;
            errno = 0;
            long sec = strtol(v, &end, 10);
            if (*end || errno || sec < 0 || sec > 100000)
                rc = dbs__err(err, DBS_ECONFIG,
                              "URL \"%s\": %s is not a whole number of seconds from 0 "
                              "to 100000",
                              shown, my_options[idx]);
            *(key[0] == 'c'   ? &m->url_connect_timeout_s
              : key[0] == 'r' ? &m->url_read_timeout_s
                              : &m->url_write_timeout_s) = (int)sec;
        }
        if (idx >= 0)
            seen |= 1u << idx;
        if (slot) {
            free(*slot);
            *slot = v;
            v = NULL;
        }
        free(key);
        free(v);
        if (rc != DBS_OK)
            return rc;
        p = val + vl;
        if (*p == '&')
            p++;
    }
#undef DECODE
    if (m->socket && m->host && strcmp(m->host, "localhost") != 0)
        return dbs__err(err, DBS_ECONFIG,
                        "URL \"%s\": socket= needs the host localhost or no host "
                        "(it is %s)",
                        shown, m->host);
    m->host_given = m->host != NULL;
    if (m->socket && !m->host) {
        m->host = strdup("localhost");
        if (!m->host)
            return dbs__err(err, DBS_ENOMEM, "out of memory");
    }
    return DBS_OK;
}

/* A setting name becomes a user variable: @`name`. Only characters that
 * need no escaping inside backticks are accepted. */
static int ctx_var(const char *name, char *out, size_t n, dbs_error *err)
{
    size_t len = strlen(name);
    if (len == 0 || len > MY_CTX_NAME)
        return dbs__err(err, DBS_ECONFIG,
                        "context setting name \"%.40s\" must have 1 to %d characters",
                        name, MY_CTX_NAME);
    for (const char *q = name; *q; q++)
        if (!isalnum((unsigned char)*q) && *q != '_' && *q != '.' && *q != '$')
            return dbs__err(err, DBS_ECONFIG,
                            "context setting name \"%.40s\": only letters, digits, "
                            "_ . and $ (it becomes the user variable @`name`)",
                            name);
    snprintf(out, n, "@`%s`", name);
    return DBS_OK;
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;
static void lib_init(void)
{
    lib_rc = mysql_library_init(0, NULL, NULL);
}

static void scrub(const my_target *m, char *msg, size_t cap);

static int my_target_open(dbs__target *t, dbs_error *err)
{
    pthread_once(&lib_once, lib_init);
    if (lib_rc != 0)
        return dbs__err(err, DBS_ENOMEM, "mariadb: client library initialisation failed");
    my_target *m = calloc(1, sizeof *m);
    if (!m)
        return dbs__err(err, DBS_ENOMEM, "out of memory");
    m->url = t->conninfo;
    int rc = parse_url(t->conninfo, m, err);
    /* Its messages quote no text that may be the password, and go through
     * the scrub all the same, as every other message of this backend. */
    if (rc != DBS_OK && err)
        scrub(m, err->message, sizeof err->message);
    static const char *const defaults[3] = {"dbs_request_id", "dbs_user_id",
                                            "dbs_tenant_id"};
    for (int i = 0; i < 3 && rc == DBS_OK; i++)
        rc = ctx_var(t->ctx_setting[i] ? t->ctx_setting[i] : defaults[i], m->var[i],
                     sizeof m->var[i], err);
    if (rc != DBS_OK) {
        target_free(m);
        return rc;
    }
    /* The names need no escaping in quotes either (ctx_var). */
    const char *nm[3];
    for (int i = 0; i < 3; i++)
        nm[i] = t->ctx_setting[i] ? t->ctx_setting[i] : defaults[i];
    /* One statement, not a DO and a SELECT: each statement of a
     * multi-statement costs the server a parse and a result of its own
     * (about 13 us of 80 on a 2-core machine, docs/mariadb.md). */
    /* The context's own variables count too when they hold a value: the
     * release sets them to NULL first only when dbscope set them, and a
     * session without a context may have assigned them by hand (:= is not
     * tracked). */
    snprintf(m->release, sizeof m->release,
             "SELECT RELEASE_ALL_LOCKS(),LAST_INSERT_ID(0),(SELECT COUNT(*) FROM "
             "information_schema.USER_VARIABLES WHERE VARIABLE_NAME NOT IN "
             "('%s','%s','%s') OR VARIABLE_VALUE IS NOT NULL)",
             nm[0], nm[1], nm[2]);
    t->shared = m;
    return DBS_OK;
}

static void my_target_close(dbs__target *t)
{
    target_free(t->shared);
    t->shared = NULL;
}

/* ---- errors ---- */

/* Replaces every secret of the URL in msg by "***": the password as the
 * driver decoded it, and whatever dbs__scrub_url_secrets finds in the URL. */
static void scrub(const my_target *m, char *msg, size_t cap)
{
    size_t pl = m->password ? strlen(m->password) : 0;
    dbs__scrub_text(msg, cap, m->password, pl);
    dbs__scrub_url_secrets(m->url, msg, cap);
}

/* Errors after which the connection cannot be trusted: lost, killed, shut
 * down, out of sync, network failures. */
static bool is_lost(unsigned e)
{
    switch (e) {
    case ER_SERVER_SHUTDOWN:      /* 1053 */
    case ER_ABORTING_CONNECTION:  /* 1152 */
    case ER_NET_READ_ERROR:       /* 1158 */
    case ER_NET_READ_INTERRUPTED: /* 1159 */
    case ER_NET_ERROR_ON_WRITE:   /* 1160 */
    case ER_NET_WRITE_INTERRUPTED: /* 1161 */
    case ER_NEW_ABORTING_CONNECTION: /* 1184 */
    case 1927:                    /* ER_CONNECTION_KILLED */
    case 4031:                    /* MySQL: client interaction timeout */
    case CR_CONNECTION_ERROR:     /* 2002 */
    case CR_CONN_HOST_ERROR:      /* 2003 */
    case CR_SERVER_GONE_ERROR:    /* 2006 */
    case CR_SERVER_LOST:          /* 2013 */
    case CR_COMMANDS_OUT_OF_SYNC: /* 2014 */
    case CR_SSL_CONNECTION_ERROR: /* 2026 */
    case CR_MALFORMED_PACKET:     /* 2027 */
    case 2055:                    /* CR_SERVER_LOST_EXTENDED */
    case 5013:                    /* CR_ERR_NET_READ */
    case 5014:                    /* CR_ERR_NET_WRITE */
        return true;
    default:
        return false;
    }
}

static void kill_on_server(my_conn *c);
static int release_read(my_conn *c, bool ok, const char *prefix, bool commit, int64_t t0,
                        dbs_error *err);
static int full_reset(my_conn *c, dbs_error *err);

/* The server's storage is full: the statement wrote nothing. */
static bool is_full(unsigned e)
{
    switch (e) {
    case ER_DISK_FULL:            /* 1021 */
    case ER_RECORD_FILE_FULL:     /* 1114: "The table is full" */
    case 3019:                    /* ER_INNODB_UNDO_LOG_FULL */
    case 4139:                    /* ER_INDEX_FILE_FULL */
        return true;
    default:
        return false;
    }
}

/* Maps an error to a dbs_code, fills err, marks the connection broken when
 * it is. started_ns: when the round trip began (for timeouts); commit: the
 * round trip carried COMMIT. */
static int fail(my_conn *c, unsigned e, const char *state, const char *msg,
                int64_t started_ns, bool commit, dbs_error *err)
{
    char m[400];
    snprintf(m, sizeof m, "%s", msg && *msg ? msg : "unknown error");
    scrub(c->mt, m, sizeof m);
    /* What a failed statement did before it failed (a procedure that set a
     * variable, then raised an error) is not reported: an error packet
     * carries no session state. The release resets. */
    c->dirty = true;
    int code = DBS_ESQL;
    /* Whether a read ran into the statement's deadline (stmt_store,
     * stmt_next) holds for this failure only: a later one, a COMMIT's
     * lost connection say, is not a timeout for it. */
    const bool past_bound = c->past_bound;
    c->past_bound = false;
    /* The server closes the connection after a packet past its
     * max_allowed_packet (1153); Connector/C, after a row past its own
     * (2020), has the rest of the result unread: either way nothing more
     * can go over it. The statement's fault, not the network's: DBS_ESQL,
     * not retried. */
    if (e == ER_NET_PACKET_TOO_LARGE || e == CR_NET_PACKET_TOO_LARGE)
        c->broken = true;
    if (is_lost(e)) {
        bool timed_out = false;
        unsigned bound = c->rt_s; /* the smaller bound that is set */
        if (c->wt_s && (!bound || c->wt_s < bound))
            bound = c->wt_s;
        /* A write that timed out is 2006, not 2013: Connector/C closes
         * the connection on any failed send and reports the server
         * gone. Past the bound it was the bound all the same. */
        if (bound > 0 && (e == CR_SERVER_LOST || e == CR_SERVER_GONE_ERROR || e == 5013 ||
                          e == 5014)) {
            int64_t took_ms = (dbs__now_ns() - started_ns) / 1000000;
            timed_out = took_ms >= (int64_t)bound * 1000 - 100 || past_bound;
        }
        c->broken = true;
        bool killed = atomic_load(&c->killed);
        if (timed_out && !killed)
            kill_on_server(c);
        if (commit) {
            code = dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                            "mariadb: connection lost during COMMIT: the transaction "
                            "may or may not have been committed (%s [%u])",
                            m, e);
        } else if (killed) {
            code = dbs__err(err, DBS_ECANCELED,
                            "mariadb: the statement was cancelled; the connection was "
                            "killed (%s [%u])",
                            m, e);
        } else if (timed_out) {
            code = dbs__err(err, DBS_ESTMT_TIMEOUT,
                            "mariadb: no answer within the statement timeout (%u s); "
                            "the connection was discarded (%s [%u])",
                            bound, m, e);
        } else {
            code = dbs__err(err, DBS_ECONNECT, "mariadb: connection lost: %s [%u]", m, e);
        }
        if (state && *state && strcmp(state, "00000") != 0)
            dbs__err_sqlstate(err, state);
        return code;
    }
    /* A deadlock victim's whole transaction is gone on the server, not just
     * the statement; so is that of a write conflict under snapshot
     * isolation (1020 ER_CHECKREAD, innodb_snapshot_isolation: a
     * serialization failure, if with SQLSTATE HY000), and that of a lock
     * wait timeout where InnoDB rolls back the transaction on it
     * (innodb_rollback_on_timeout); elsewhere the timeout takes only the
     * statement. An error packet carries no server status to tell, so the
     * server's setting decides: a metadata lock's timeout (1205 too, which
     * rolls back nothing) is then taken for one that did, and its COMMIT
     * refused and rolled back: never a commit of part of a transaction. */
    bool serial = e == ER_LOCK_DEADLOCK || e == ER_CHECKREAD ||
                  (state && !strcmp(state, "40001"));
    if ((serial || (e == ER_LOCK_WAIT_TIMEOUT && c->rollback_on_timeout)) && c->tx_sent)
        c->tx_failed = true;
    /* A lock not obtained in time (1205; MySQL's NOWAIT, 3572) is
     * transient, as PostgreSQL's 55P03 and SQLite's BUSY are. */
    if (serial || e == ER_LOCK_WAIT_TIMEOUT || e == 3572)
        code = DBS_ERETRYABLE;
    /* A NOT NULL column left out without a default (1364, 1423 through a
     * view; SQLSTATE HY000) is the NOT NULL violation an explicit NULL is
     * (1048, 23000) and PostgreSQL's 23502. */
    else if ((state && !strncmp(state, "23", 2)) || e == ER_NO_DEFAULT_FOR_FIELD ||
             e == ER_NO_DEFAULT_FOR_VIEW_FIELD)
        code = DBS_ECONSTRAINT;
    else if (is_full(e))
        code = DBS_EFULL;
    else if (e == CR_OUT_OF_MEMORY || e == ER_OUTOFMEMORY)
        code = DBS_ENOMEM;
    dbs__err(err, code, "mariadb: %s [%u]", m, e);
    if (state && *state && strcmp(state, "00000") != 0)
        dbs__err_sqlstate(err, state);
    return code;
}

static int fail_conn(my_conn *c, int64_t started_ns, bool commit, dbs_error *err)
{
    return fail(c, mysql_errno(c->my), mysql_sqlstate(c->my), mysql_error(c->my),
                started_ns, commit, err);
}

static int fail_stmt(my_conn *c, MYSQL_STMT *st, int64_t started_ns, dbs_error *err)
{
    return fail(c, mysql_stmt_errno(st), mysql_stmt_sqlstate(st), mysql_stmt_error(st),
                started_ns, false, err);
}

/* ---- connect ---- */

/* Whole seconds, rounded up. Not (ms + 999) / 1000, which overflows int
 * for a bound within 999 of INT_MAX (allowed: dbscope.h). At most
 * INT_MAX / 1000 s: Connector/C keeps its timeouts as int milliseconds
 * (seconds * 1000, pvio_socket_set_timeout), so one more second would
 * overflow there; the bound loses under a second of its 24.8 days. */
static unsigned ms_to_s(int ms)
{
    if (ms <= 0)
        return 0;
    unsigned s = (unsigned)(ms / 1000) + (ms % 1000 != 0);
    return s < INT_MAX / 1000 ? s : INT_MAX / 1000;
}

/* Applies the target's options to a fresh handle. */
static void set_options(MYSQL *my, const my_target *m, unsigned ct_s, unsigned rt_s,
                        unsigned wt_s)
{
    if (ct_s)
        mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &ct_s);
    if (rt_s)
        mysql_options(my, MYSQL_OPT_READ_TIMEOUT, &rt_s);
    if (wt_s)
        mysql_options(my, MYSQL_OPT_WRITE_TIMEOUT, &wt_s);
    /* A silent reconnect would lose the session's state and transaction
     * under the caller's feet: a lost connection is reported instead. */
    my_bool off = 0, on = 1;
    mysql_options(my, MYSQL_OPT_RECONNECT, &off);
    /* Every handle: whichever thread made it, the housekeeper may ping it
     * (see nb_wait) */
    mysql_options(my, MYSQL_OPT_NONBLOCK, 0);
    unsigned int no_infile = 0;
    mysql_options(my, MYSQL_OPT_LOCAL_INFILE, &no_infile);
    mysql_options(my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(my, MYSQL_REPORT_DATA_TRUNCATION, &on);
    /* Any SSL option makes Connector/C ask for TLS: none for disabled. */
    if (m->ssl_mode == MY_SSL_DISABLED)
        return;
    if (m->ssl_ca)
        mysql_options(my, MYSQL_OPT_SSL_CA, m->ssl_ca);
    if (m->ssl_capath)
        mysql_options(my, MYSQL_OPT_SSL_CAPATH, m->ssl_capath);
    if (m->ssl_cert)
        mysql_options(my, MYSQL_OPT_SSL_CERT, m->ssl_cert);
    if (m->ssl_key)
        mysql_options(my, MYSQL_OPT_SSL_KEY, m->ssl_key);
    if (m->ssl_cipher)
        mysql_options(my, MYSQL_OPT_SSL_CIPHER, m->ssl_cipher);
    if (m->ssl_crl)
        mysql_options(my, MYSQL_OPT_SSL_CRL, m->ssl_crl);
    if (m->ssl_crlpath)
        mysql_options(my, MYSQL_OPT_SSL_CRLPATH, m->ssl_crlpath);
    switch (m->ssl_mode) {
    case MY_SSL_REQUIRED:
        mysql_options(my, MYSQL_OPT_SSL_ENFORCE, &on);
        mysql_options(my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &off);
        break;
    case MY_SSL_VERIFY_CA:
    case MY_SSL_VERIFY_IDENTITY:
        mysql_options(my, MYSQL_OPT_SSL_ENFORCE, &on);
        mysql_options(my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
        break;
    case MY_SSL_PREFERRED:
        /* Connector/C asks for TLS whenever an SSL option is set and falls
         * back to plain text only when the server does not offer it. */
        mysql_options(my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &off);
        if (!m->ssl_cipher)
            mysql_options(my, MYSQL_OPT_SSL_CIPHER, "");
        break;
    default:
        break;
    }
}

/* ---- abandonable waits ----
 * On a pool's own thread (dbs__thread_stop set: the housekeeper, a replica
 * monitor) the connect and the ping go through Connector/C's non-blocking
 * API (MYSQL_OPT_NONBLOCK, set on every handle before its connect), so the
 * wait is a poll() of ours that looks at the stop flag every
 * DBS__STOP_SLICE_MS. Once it is set, every wait is answered with
 * MYSQL_WAIT_TIMEOUT: Connector/C then fails the call as a timeout, leaving
 * the handle consistent for mysql_close. The blocking calls keep working
 * on such a handle (Connector/C 3.x uses its non-blocking path only inside
 * a _start/_cont call). Any other thread uses the blocking calls, except
 * where a bound applies (a round trip's: see b_query; and a connect's): Connector/C's connect timeout covers one
 * address and only until the server's greeting (the rest of the handshake
 * waits up to the read timeout, the statement bound, or for ever), so a
 * connect and its session setup run non-blocking too, and the deadline
 * answers their waits with MYSQL_WAIT_TIMEOUT as the stop flag does. */

/* Waits for what a _start/_cont call asked (status), until deadline at
 * the latest (CLOCK_MONOTONIC; 0: none); returns the events for the next
 * _cont. Sets *stopped once the pool shuts down. */
static int nb_wait(MYSQL *my, int status, int64_t deadline, bool *stopped)
{
    int64_t until = deadline > 0 ? deadline : INT64_MAX;
    if (status & MYSQL_WAIT_TIMEOUT) {
        int64_t t = dbs__now_ns() + (int64_t)mysql_get_timeout_value_ms(my) * 1000000;
        if (t < until)
            until = t;
    }
    short events = (short)(((status & MYSQL_WAIT_READ) ? POLLIN : 0) |
                           ((status & MYSQL_WAIT_WRITE) ? POLLOUT : 0) |
                           ((status & MYSQL_WAIT_EXCEPT) ? POLLPRI : 0));
    for (;;) {
        if (*stopped || dbs__stopping()) {
            *stopped = true;
            return MYSQL_WAIT_TIMEOUT;
        }
        int64_t now = dbs__now_ns();
        if (now >= until)
            return MYSQL_WAIT_TIMEOUT;
        int64_t left = (until - now + 999999) / 1000000;
        int ms = left < DBS__STOP_SLICE_MS ? (int)left : DBS__STOP_SLICE_MS;
        struct pollfd pfd = {.fd = (int)mysql_get_socket(my), .events = events};
        int n = poll(&pfd, 1, ms);
        if (n < 0 && errno != EINTR)
            return MYSQL_WAIT_TIMEOUT; /* fails the call */
        if (n <= 0)
            continue;
        int ready = 0;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            ready |= MYSQL_WAIT_READ;
        if (pfd.revents & (POLLOUT | POLLHUP | POLLERR))
            ready |= MYSQL_WAIT_WRITE;
        if (pfd.revents & POLLPRI)
            ready |= MYSQL_WAIT_EXCEPT;
        return ready & status ? ready & status : status & ~MYSQL_WAIT_TIMEOUT;
    }
}

/* mysql_real_connect, failed as a timeout at deadline (0: none), and
 * abandoned (NULL, *stopped) once the pool shuts down when called on a
 * pool's own thread. */
static MYSQL *real_connect(MYSQL *my, const char *host, const char *user, const char *password,
                           const char *db, unsigned port, const char *socket,
                           unsigned long flags, int64_t deadline, bool *stopped)
{
    if (!dbs__thread_stop && deadline <= 0)
        return mysql_real_connect(my, host, user, password, db, port, socket, flags);
    MYSQL *ret = NULL;
    int st = mysql_real_connect_start(&ret, my, host, user, password, db, port, socket, flags);
    while (st)
        st = mysql_real_connect_cont(&ret, my, nb_wait(my, st, deadline, stopped));
    return *stopped ? NULL : ret;
}

/* mysql_query, mysql_store_result and mysql_set_character_set for the
 * session setup of a connect, within its deadline as real_connect. */
static int setup_query(MYSQL *my, const char *sql, int64_t deadline, bool *stopped)
{
    if (!dbs__thread_stop && deadline <= 0)
        return mysql_query(my, sql);
    int ret = 1;
    int st = mysql_real_query_start(&ret, my, sql, strlen(sql));
    while (st)
        st = mysql_real_query_cont(&ret, my, nb_wait(my, st, deadline, stopped));
    return ret;
}

static MYSQL_RES *setup_store(MYSQL *my, int64_t deadline, bool *stopped)
{
    if (!dbs__thread_stop && deadline <= 0)
        return mysql_store_result(my);
    MYSQL_RES *ret = NULL;
    int st = mysql_store_result_start(&ret, my);
    while (st)
        st = mysql_store_result_cont(&ret, my, nb_wait(my, st, deadline, stopped));
    return ret;
}

static int setup_names(MYSQL *my, const char *cs, int64_t deadline, bool *stopped)
{
    if (!dbs__thread_stop && deadline <= 0)
        return mysql_set_character_set(my, cs);
    int ret = 1;
    int st = mysql_set_character_set_start(&ret, my, cs);
    while (st)
        st = mysql_set_character_set_cont(&ret, my, nb_wait(my, st, deadline, stopped));
    return ret;
}

static bool past(int64_t deadline);

/* Reading a statement's results (store_result, next_result) ends at the
 * read timeout counted from when the statement was sent (c->stmt_t0), as
 * the bound promises: Connector/C's own read timeout bounds each read, so
 * rows that keep coming, each in time, would hold the call for as long as
 * they come. Past it Connector/C fails the call as lost, and past_bound
 * tells fail that it was the bound. */
static int64_t stmt_deadline(const my_conn *c)
{
    return c->rt_s ? c->stmt_t0 + (int64_t)c->rt_s * 1000000000 : 0;
}

static int stmt_store(my_conn *c, MYSQL_STMT *st)
{
    int64_t dl = stmt_deadline(c);
    if (!dl)
        return mysql_stmt_store_result(st);
    int ret = 1;
    bool stopped = false;
    int s = mysql_stmt_store_result_start(&ret, st);
    while (s)
        s = mysql_stmt_store_result_cont(&ret, st, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return ret;
}

static int stmt_next(my_conn *c, MYSQL_STMT *st)
{
    int64_t dl = stmt_deadline(c);
    if (!dl)
        return mysql_stmt_next_result(st);
    int ret = 1;
    bool stopped = false;
    int s = mysql_stmt_next_result_start(&ret, st);
    while (s)
        s = mysql_stmt_next_result_cont(&ret, st, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret > 0 && past(dl);
    return ret;
}

/* The other calls of a round trip, within its deadline dl (0: none) as
 * stmt_store is: Connector/C's read timeout bounds each read, so a server
 * that answers a byte at a time, each in time, held them past the bound
 * (a COMMIT, the release, an execute). Past it the call fails as lost and
 * past_bound tells fail that it was the bound; on a pool's own thread
 * they are abandoned once the pool shuts down, as read_query_result is. */
static int64_t rt_deadline(const my_conn *c, int64_t t0)
{
    return c->rt_s ? t0 + (int64_t)c->rt_s * 1000000000 : 0;
}

static int b_query(my_conn *c, const char *sql, size_t len, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_real_query(c->my, sql, (unsigned long)len);
    int ret = 1;
    bool stopped = false;
    int s = mysql_real_query_start(&ret, c->my, sql, (unsigned long)len);
    while (s)
        s = mysql_real_query_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

static int b_send(my_conn *c, const char *sql, size_t len, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_send_query(c->my, sql, (unsigned long)len);
    int ret = 1;
    bool stopped = false;
    int s = mysql_send_query_start(&ret, c->my, sql, (unsigned long)len);
    while (s)
        s = mysql_send_query_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

static my_bool b_read(my_conn *c, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_read_query_result(c->my);
    my_bool ret = 1;
    bool stopped = false;
    int s = mysql_read_query_result_start(&ret, c->my);
    while (s)
        s = mysql_read_query_result_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

/* NULL with mysql_field_count 0: a result without rows. */
static MYSQL_RES *b_store(my_conn *c, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_store_result(c->my);
    MYSQL_RES *ret = NULL;
    bool stopped = false;
    int s = mysql_store_result_start(&ret, c->my);
    while (s)
        s = mysql_store_result_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = !ret && mysql_field_count(c->my) != 0 && past(dl);
    return ret;
}

static int b_next(my_conn *c, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_next_result(c->my);
    int ret = 1;
    bool stopped = false;
    int s = mysql_next_result_start(&ret, c->my);
    while (s)
        s = mysql_next_result_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret > 0 && past(dl);
    return stopped && ret >= 0 ? 1 : ret;
}

static int b_execute(my_conn *c, MYSQL_STMT *st, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_stmt_execute(st);
    int ret = 1;
    bool stopped = false;
    int s = mysql_stmt_execute_start(&ret, st);
    while (s)
        s = mysql_stmt_execute_cont(&ret, st, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

static int b_reset(my_conn *c, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_reset_connection(c->my);
    int ret = 1;
    bool stopped = false;
    int s = mysql_reset_connection_start(&ret, c->my);
    while (s)
        s = mysql_reset_connection_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

static int b_select_db(my_conn *c, const char *db, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_select_db(c->my, db);
    int ret = 1;
    bool stopped = false;
    int s = mysql_select_db_start(&ret, c->my, db);
    while (s)
        s = mysql_select_db_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

static my_bool b_change_user(my_conn *c, int64_t dl)
{
    if (!dbs__thread_stop && !dl)
        return mysql_change_user(c->my, c->mt->user, c->mt->password, NULL);
    my_bool ret = 1;
    bool stopped = false;
    int s = mysql_change_user_start(&ret, c->my, c->mt->user, c->mt->password, NULL);
    while (s)
        s = mysql_change_user_cont(&ret, c->my, nb_wait(c->my, s, dl, &stopped));
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

static int b_names(my_conn *c, int64_t dl)
{
    bool stopped = false;
    int ret = setup_names(c->my, c->charset, dl, &stopped);
    c->past_bound = ret != 0 && past(dl);
    return stopped ? 1 : ret;
}

/* The credential provider's password for a connect to m (1: none set,
 * use the URL's). */
static int my_credential(const dbs__target *t, const my_target *m, char *buf, size_t cap,
                         dbs_error *err)
{
    char port[16] = "";
    if (m->port)
        snprintf(port, sizeof port, "%u", m->port);
    return dbs__credential_get(t, "mariadb", m->host_given ? m->host : "", port, m->user, buf,
                               cap, err);
}

static void *my_connect_with(const dbs__target *t, const char *password, dbs_error *err);

/* Whether the connect's deadline (0: none) has passed. */
static bool past(int64_t deadline)
{
    return deadline > 0 && dbs__now_ns() >= deadline;
}

/* The end of a connect whose session setup ran past its bound (bound_ms),
 * or that the pool's shutdown abandoned (stopped): c closed, NULL. */
static void *connect_late(my_conn *c, bool stopped, int bound_ms, dbs_error *err)
{
    mysql_close(c->my);
    free(c->setup_sql);
    free(c);
    if (stopped)
        dbs__err(err, DBS_ECLOSED, "mariadb: connect abandoned: the pool shut down");
    else
        dbs__err(err, DBS_ECONNECT,
                 "mariadb: unreachable host (check host, port or socket and that the "
                 "server runs): no answer within %d ms (connect_timeout_ms, or "
                 "connect_timeout in the URL) to the session setup",
                 bound_ms);
    return NULL;
}

/* Asks the credential provider, if any, then connects with its answer. */
static void *my_connect(const dbs__target *t, dbs_error *err)
{
    const my_target *m = t->shared;
    if (!t->credential)
        return my_connect_with(t, m->password, err);
    char token[DBS_CREDENTIAL_MAX];
    if (my_credential(t, m, token, sizeof token, err) != DBS_OK)
        return NULL;
    void *c = my_connect_with(t, token, err);
    if (!c && err && *token)
        dbs__scrub_text(err->message, sizeof err->message, token, strlen(token));
    dbs__credential_wipe(token, sizeof token);
    return c;
}

/* c->setup_sql from the connect's info query: ac is @@autocommit and
 * @@GLOBAL.autocommit; init (MariaDB; NULL for MySQL) the session and
 * global values of time_zone, sql_mode and tx_isolation. dbscope's
 * transactions end where the server says (follow_tx): under autocommit 0
 * (init_connect's, or the global one a reset returns to) the server opens a
 * transaction of its own right after the implicit commit of LOCK TABLES,
 * which would pass for dbscope's. A setting init_connect made is the
 * connection's, as on every new connection: the reset, which returns to
 * the global one, owes it back (a TIMESTAMP written in init_connect's
 * time_zone would be read back in another). Values go in as hex
 * literals. 0, or -1 out of memory. */
static int setup_build(my_conn *c, MYSQL_ROW ac, MYSQL_ROW init)
{
    static const char *const names[3] = {"time_zone", "sql_mode", "tx_isolation"};
    bool ac_off = !ac[0] || strcmp(ac[0], "1") != 0;
    bool gac_off = !ac[1] || strcmp(ac[1], "1") != 0;
    size_t need = 32;
    for (int i = 0; init && i < 3; i++)
        if (init[2 * i])
            need += strlen(names[i]) + 2 * strlen(init[2 * i]) + 8;
    char *sql = malloc(need);
    if (!sql)
        return -1;
    size_t w = (size_t)snprintf(sql, need, "SET ");
    size_t empty = w;
    if (ac_off || gac_off)
        w += (size_t)snprintf(sql + w, need - w, "autocommit=1");
    for (int i = 0; init && i < 3; i++) {
        const char *v = init[2 * i], *g = init[2 * i + 1];
        if (!v || (g && !strcmp(v, g)))
            continue;
        w += (size_t)snprintf(sql + w, need - w, "%s%s=X'", w > empty ? "," : "", names[i]);
        static const char hx[] = "0123456789abcdef";
        for (const unsigned char *q = (const unsigned char *)v; *q; q++) {
            sql[w++] = hx[*q >> 4];
            sql[w++] = hx[*q & 15];
        }
        sql[w++] = '\'';
        sql[w] = '\0';
        if (i == 1) {
            c->setup_mode = true;
            c->setup_nbe = strstr(v, "NO_BACKSLASH_ESCAPES") != NULL;
        }
    }
    if (w == empty) {
        free(sql);
        return 0;
    }
    c->setup_sql = sql;
    c->setup_owed = ac_off;
    return 0;
}

/* password: the URL's, or the credential provider's for this connect. */
static void *my_connect_with(const dbs__target *t, const char *password, dbs_error *err)
{
    const my_target *m = t->shared;
    my_conn *c = calloc(1, sizeof *c);
    if (!c) {
        dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
        return NULL;
    }
    c->t = t;
    c->mt = m;
    atomic_init(&c->killed, false);
    c->rt_s = m->url_read_timeout_s >= 0 ? (unsigned)m->url_read_timeout_s
                                         : ms_to_s(t->statement_timeout_ms);
    c->wt_s = m->url_write_timeout_s >= 0 ? (unsigned)m->url_write_timeout_s
                                          : ms_to_s(t->statement_timeout_ms);
    c->ct_s = m->url_connect_timeout_s >= 0 ? (unsigned)m->url_connect_timeout_s
                                             : ms_to_s(t->connect_timeout_ms);
    c->my = mysql_init(NULL);
    if (!c->my) {
        free(c);
        dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
        return NULL;
    }
    set_options(c->my, m, c->ct_s, c->rt_s, c->wt_s);
    /* One deadline for the whole connect: the lookup, every address tried,
     * the handshake and the session setup each get what is left of it
     * (Connector/C's own timeout would give each address the whole bound
     * again), and none starts once it has passed. */
    int bound_ms = m->url_connect_timeout_s >= 0 ? m->url_connect_timeout_s * 1000
                                                  : t->connect_timeout_ms;
    int64_t dl = bound_ms > 0 ? dbs__now_ns() + (int64_t)bound_ms * 1000000 : 0;
    /* The name lookup within the connect bound (Connector/C's own is
     * unbounded), then a connect by address, each address in turn while
     * they are unreachable. Verifying the server's certificate (verify_ca,
     * verify_identity) needs the name, which Connector/C checks against
     * the host it connects to: there the bounded lookup proves the name
     * resolves, and Connector/C connects by name (looking it up again). */
    char addrs[4 * 48], *addr[4];
    int naddr = 0;
    if (m->host && *m->host && strcmp(m->host, "localhost") != 0 && !m->socket) {
        char port[16];
        snprintf(port, sizeof port, "%u", m->port ? m->port : 3306u);
        dbs_error rerr;
        if (dbs__resolve(m->host, port, dl, addrs, sizeof addrs, 4, &rerr) != DBS_OK) {
            dbs__err(err, rerr.code, "mariadb: cannot connect: %.400s", rerr.message);
            mysql_close(c->my);
            free(c);
            return NULL;
        }
        bool by_name = m->ssl_mode == MY_SSL_VERIFY_CA || m->ssl_mode == MY_SSL_VERIFY_IDENTITY;
        char *save = NULL;
        for (char *a = strtok_r(addrs, ",", &save); a && !by_name && naddr < 4;
             a = strtok_r(NULL, ",", &save))
            addr[naddr++] = a;
    }
    bool connected = false, stopped = false;
    for (int i = 0; !past(dl); i++) {
        const char *host = naddr > 0 ? addr[i] : m->host;
        connected = real_connect(c->my, host, m->user, password, m->db, m->port, m->socket,
                                 CLIENT_FOUND_ROWS | CLIENT_MULTI_STATEMENTS, dl,
                                 &stopped) != NULL;
        if (stopped || (connected && dbs__stopping())) {
            mysql_close(c->my); /* abandoned: never handed out */
            free(c);
            dbs__err(err, DBS_ECLOSED, "mariadb: connect abandoned: the pool shut down");
            return NULL;
        }
        unsigned e = mysql_errno(c->my);
        if (connected && naddr > 0)
            snprintf(c->addr, sizeof c->addr, "%s", host);
        if (connected || past(dl) || i + 1 >= naddr ||
            (e != CR_CONN_HOST_ERROR && e != CR_CONNECTION_ERROR))
            break;
        mysql_close(c->my); /* the next address, on a fresh handle */
        c->my = mysql_init(NULL);
        if (!c->my) {
            free(c);
            dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
            return NULL;
        }
        set_options(c->my, m, c->ct_s, c->rt_s, c->wt_s);
    }
    if (!connected) {
        unsigned e = mysql_errno(c->my);
        char msg[400];
        snprintf(msg, sizeof msg, "%s", mysql_error(c->my));
        scrub(m, msg, sizeof msg);
        /* Refusals that no retry can cure are configuration errors, not
         * outages: not retried, not counted by the circuit breaker. */
        int code = DBS_ECONNECT;
        const char *why = "cannot connect";
        if ((e == ER_ACCESS_DENIED_ERROR || e == 1698) && password != m->password)
            why = "wrong password or user (check the user in the URL and the password the "
                  "credential provider returns)";
        else if (e == ER_ACCESS_DENIED_ERROR || e == 1698 /* ER_ACCESS_DENIED_NO_PASSWORD */)
            why = "wrong password or user (check the user and password in the URL)";
        else if (e == ER_BAD_DB_ERROR || e == ER_DBACCESS_DENIED_ERROR ||
                 e == ER_WRONG_DB_NAME /* over 64 characters, or not a name */)
            why = "unknown or forbidden database (check the database name in the URL)";
        else if (e == ER_HOST_NOT_PRIVILEGED)
            why = "the server does not let this user connect from this host (check the "
                  "user in the URL and its grants)";
        else if (e == ER_NOT_SUPPORTED_AUTH_MODE || e == CR_AUTH_PLUGIN_CANNOT_LOAD)
            why = "unsupported authentication method (check the user's authentication "
                  "plugin)";
        else if (e == CR_CONNECTION_ERROR || e == CR_CONN_HOST_ERROR ||
                 e == CR_UNKNOWN_HOST || e == CR_SERVER_LOST || e == CR_SERVER_GONE_ERROR)
            why = "unreachable host (check host, port or socket and that the server runs)";
        else if (e == CR_SSL_CONNECTION_ERROR)
            why = "TLS failed (check ssl_mode and the certificates)";
        if (e == ER_ACCESS_DENIED_ERROR || e == 1698 || e == ER_BAD_DB_ERROR ||
            e == ER_DBACCESS_DENIED_ERROR || e == ER_WRONG_DB_NAME ||
            e == ER_HOST_NOT_PRIVILEGED ||
            e == ER_NOT_SUPPORTED_AUTH_MODE || e == CR_AUTH_PLUGIN_CANNOT_LOAD)
            code = DBS_ECONFIG;
        if (code == DBS_ECONNECT && past(dl))
            dbs__err(err, code,
                     "mariadb: unreachable host (check host, port or socket and that the "
                     "server runs): no answer within %d ms (connect_timeout_ms, or "
                     "connect_timeout in the URL): %s [%u]",
                     bound_ms, msg, e);
        else
            dbs__err(err, code, "mariadb: %s: %s [%u]", why, msg, e);
        const char *state = mysql_sqlstate(c->my);
        if (state && *state && strcmp(state, "00000") != 0 && strcmp(state, "HY000") != 0)
            dbs__err_sqlstate(err, state);
        mysql_close(c->my);
        free(c);
        return NULL;
    }
    /* Whether the server tells us about USE: then the reset knows when the
     * current database needs restoring. And the role the connection starts
     * with, which COM_RESET_CONNECTION leaves as the session set it: the
     * reset owes a SET ROLE back to it (MySQL: SET ROLE DEFAULT). */
    bool maria = mariadb_connection(c->my);
    /* utf8mb4 (set_options), unless the server refused it for its own */
    snprintf(c->charset, sizeof c->charset, "%s", mysql_character_set_name(c->my));
    /* Session state tracking, which lets the release skip
     * COM_RESET_CONNECTION when the server reported no change (note_state).
     * A server without it, or MySQL (whose information_schema has no
     * USER_VARIABLES for the release statement): every release resets.
     * Only under DBS_RESET_TRACKED: every other release resets whatever
     * the trackers say, and switching them on again after each reset
     * (track_owed) would cost every session a statement (about 20 us of
     * the server's CPU) for nothing. */
    if (maria && (c->my->server_capabilities & CLIENT_SESSION_TRACKING) &&
        t->reset == DBS_RESET_TRACKED) {
        if (past(dl))
            return connect_late(c, stopped, bound_ms, err);
        if (setup_query(c->my, TRACK_SQL, dl, &stopped) == 0)
            c->tracking = true;
        else if (stopped || past(dl))
            return connect_late(c, stopped, bound_ms, err);
        else if (is_lost(mysql_errno(c->my))) {
            fail_conn(c, dbs__now_ns(), false, err);
            mysql_close(c->my);
            free(c);
            return NULL;
        }
    }
    /* With them, whether a lock wait timeout rolls back the whole
     * transaction (see fail). A server without InnoDB has no such variable
     * and refuses the query: asked again without it. And the character set the server gave the session, which is not the
     * one asked for at connect on a server that ignores the client's
     * (skip-character-set-client-handshake); and the largest packet it
     * takes from this connection (fixed at connect: the session value is
     * read-only). */
#define INFO_SQL                                                               \
    "SELECT @@character_set_client, @@max_allowed_packet, @@character_set_results, "  \
    "@@character_set_connection, @@autocommit, @@GLOBAL.autocommit, @@session_track_schema"
    /* The settings that change how values are read or written which a
     * server's init_connect may have set for this connection, and the
     * global ones COM_RESET_CONNECTION returns to instead (init_connect
     * runs at connect only). */
#define INIT_SQL                                                               \
    ", @@time_zone, @@GLOBAL.time_zone, @@sql_mode, @@GLOBAL.sql_mode, @@tx_isolation, " \
    "@@GLOBAL.tx_isolation"
    static const char *const info_sql[2][2] = {
        /* [maria][asks innodb_rollback_on_timeout] */
        {INFO_SQL, INFO_SQL ", @@innodb_rollback_on_timeout"},
        {INFO_SQL ", CURRENT_ROLE()" INIT_SQL,
         INFO_SQL ", CURRENT_ROLE()" INIT_SQL ", @@innodb_rollback_on_timeout"}};
#undef INFO_SQL
#undef INIT_SQL
    bool names_now = false;
    bool rot = true;
    if (stopped || past(dl))
        return connect_late(c, stopped, bound_ms, err);
    int qrc = setup_query(c->my, info_sql[maria][1], dl, &stopped);
    if (qrc != 0 && mysql_errno(c->my) == ER_UNKNOWN_SYSTEM_VARIABLE && !past(dl)) {
        rot = false;
        qrc = setup_query(c->my, info_sql[maria][0], dl, &stopped);
    }
    if (qrc == 0) {
        MYSQL_RES *r = setup_store(c->my, dl, &stopped);
        if (!r && (stopped || past(dl)))
            return connect_late(c, stopped, bound_ms, err);
        MYSQL_ROW all = r ? mysql_fetch_row(r) : NULL;
        c->names_lost = all && all[0] && strcmp(all[0], c->charset) != 0;
        if (all && all[1])
            c->max_packet = strtoull(all[1], NULL, 10);
        /* init_connect's SET character_set_results = latin1 (or NULL: no
         * conversion) would change every text read back: SET NAMES at
         * connect. The reset puts the handshake's set back. */
        names_now = all && (!all[2] || !all[3] || strcmp(all[2], c->charset) != 0 ||
                            strcmp(all[3], c->charset) != 0);
        if (all && setup_build(c, all + 4, maria ? all + 8 : NULL) != 0) {
            mysql_free_result(r);
            mysql_close(c->my);
            free(c);
            dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
            return NULL;
        }
        MYSQL_ROW row = all ? all + 6 : NULL;
        const char *rv = row && rot ? row[maria ? 8 : 1] : NULL;
        c->rollback_on_timeout = rv && (!strcmp(rv, "1") || !strcasecmp(rv, "ON"));
        c->schema_tracked = row && row[0] &&
                            (!strcmp(row[0], "1") || !strcasecmp(row[0], "ON")) &&
                            (c->my->server_capabilities & CLIENT_SESSION_TRACKING);
        if (!maria)
            snprintf(c->role_sql, sizeof c->role_sql, "SET ROLE DEFAULT");
        else if (row && row[1] && strlen(row[1]) < sizeof c->role_sql / 2 - 16) {
            size_t w = (size_t)snprintf(c->role_sql, sizeof c->role_sql, "SET ROLE `");
            for (const char *q = row[1]; *q; q++) {
                if (*q == '`')
                    c->role_sql[w++] = '`';
                c->role_sql[w++] = *q;
            }
            memcpy(c->role_sql + w, "`", 2);
        } else {
            snprintf(c->role_sql, sizeof c->role_sql, "SET ROLE NONE");
        }
        mysql_free_result(r);
    } else if (stopped || past(dl)) {
        return connect_late(c, stopped, bound_ms, err);
    } else if (is_lost(mysql_errno(c->my))) {
        fail_conn(c, dbs__now_ns(), false, err);
        mysql_close(c->my);
        free(c);
        return NULL;
    }
    /* Connector/C encodes for the set it asked for, whatever the server
     * took: text would be stored as the wrong characters. SET NAMES is
     * obeyed where the handshake is not (and again after each reset,
     * which puts the server's default back). */
    if ((c->names_lost || names_now) && (stopped || past(dl)))
        return connect_late(c, stopped, bound_ms, err);
    if ((c->names_lost || names_now) && setup_names(c->my, c->charset, dl, &stopped) != 0) {
        if (stopped || past(dl))
            return connect_late(c, stopped, bound_ms, err);
        fail_conn(c, dbs__now_ns(), false, err);
        mysql_close(c->my);
        free(c->setup_sql);
        free(c);
        return NULL;
    }
    int cap = t->stmt_cache_size > 0 ? t->stmt_cache_size : 0;
    if (cap > 0) {
        c->cache = calloc((size_t)cap, sizeof *c->cache);
        if (!c->cache) {
            mysql_close(c->my);
            free(c->setup_sql);
            free(c);
            dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
            return NULL;
        }
        c->cache_n = cap;
    }
    return c;
}

/* A round trip that ran out of time may still run on the server (a long
 * query, a lock wait): end it there, from a connection of its own. Best
 * effort, bounded by the statement's timeouts (so the failing call takes
 * at most about twice its bound); failures are ignored, as the connection
 * is discarded anyway. */
static bool kill_sql(my_conn *c, const char *what);

static void kill_on_server(my_conn *c)
{
    (void)kill_sql(c, "KILL");
}

/* From another thread, while c's user waits in a statement, or is about
 * to send one: KILL (the connection), not KILL QUERY, which the server
 * drops when it lands between statements (or before the statement
 * arrives), so that the next one would run to its bound, or forever. The
 * caller discards c afterwards anyway. What fails on c from now on is the
 * cancel's doing (DBS_ECANCELED, not a lost connection), a COMMIT's
 * outcome still unknown. mysql_thread_id is fixed at connect. */
static void my_interrupt(void *vc)
{
    my_conn *c = vc;
    if (c->my) {
        /* before the KILL lands: the failure it causes is read by then */
        atomic_store(&c->killed, true);
        /* Not sent (no connection for it: the server full, the password
         * refused): nothing was killed, so a failure to come is the
         * statement's own, and its timeout sends a KILL of its own. */
        if (!kill_sql(c, "KILL"))
            atomic_store(&c->killed, false);
    }
}

/* what: "KILL" (the connection) or "KILL QUERY" (its statement). Whether
 * the server took it. */
static bool kill_sql(my_conn *c, const char *what)
{
    unsigned long id = mysql_thread_id(c->my);
    MYSQL *k = mysql_init(NULL);
    if (!k || id == 0) {
        if (k)
            mysql_close(k);
        return false;
    }
    bool sent = false;
    /* At most the statement's own bound again: a server that stopped
     * answering must not hold the caller for a whole connect timeout. */
    unsigned ct = c->rt_s && (!c->ct_s || c->rt_s < c->ct_s) ? c->rt_s : c->ct_s;
    set_options(k, c->mt, ct, c->rt_s, c->wt_s);
    /* A physical connect like any other: the credential provider's
     * password of now (the connection's own may have expired). */
    char token[DBS_CREDENTIAL_MAX];
    const char *password = c->mt->password;
    dbs_error cerr;
    int cred = my_credential(c->t, c->mt, token, sizeof token, &cerr);
    if (cred == DBS_OK)
        password = token;
    /* One deadline for the connect and the KILL, as for a connect of the
     * pool's: Connector/C's timeouts bound each read, and a server that
     * answers a byte at a time held the caller far past twice its bound.
     * Not abandoned at a shutdown, whose interrupts are these KILLs. */
    int64_t dl = ct ? dbs__now_ns() + (int64_t)ct * 1000000000 : 0;
    const atomic_bool *stop = dbs__thread_stop;
    dbs__thread_stop = NULL;
    bool stopped = false;
    /* the address the connection went to: no name lookup, unbounded */
    if (cred >= DBS_OK &&
        real_connect(k, c->addr[0] ? c->addr : c->mt->host, c->mt->user, password, NULL,
                     c->mt->port, c->mt->socket, 0, dl, &stopped)) {
        char sql[64];
        snprintf(sql, sizeof sql, "%s %lu", what, id);
        /* ER_NO_SUCH_THREAD: the connection is gone already */
        sent = setup_query(k, sql, dl, &stopped) == 0 || mysql_errno(k) == ER_NO_SUCH_THREAD;
    }
    dbs__thread_stop = stop;
    if (cred == DBS_OK)
        dbs__credential_wipe(token, sizeof token);
    mysql_close(k);
    return sent;
}

static void stmt_free(my_stmt *e)
{
    if (e->st)
        mysql_stmt_close(e->st);
    free(e->sql);
    free(e->map);
    free(e->pending);
    memset(e, 0, sizeof *e);
}

static void cache_clear(my_conn *c)
{
    for (int i = 0; i < c->cache_n; i++)
        if (c->cache[i].sql)
            stmt_free(&c->cache[i]);
}

static void my_close(void *vc)
{
    my_conn *c = vc;
    if (!c)
        return;
    cache_clear(c);
    free(c->cache);
    free(c->setup_sql);
    mysql_close(c->my);
    free(c);
}

/* In a child after fork(): as pg_forget, COM_QUIT, COM_STMT_CLOSE and a
 * TLS close_notify must not reach the server on the parent's socket. */
static void my_forget(void *vc)
{
    my_conn *c = vc;
    if (!c || !dbs__fd_silence((int)mysql_get_socket(c->my)))
        return; /* left allocated rather than risk a word */
    my_close(c);
}

static int my_is_broken(void *vc)
{
    return ((my_conn *)vc)->broken;
}

/* Reads the answer of a release statement sent at the last release, if
 * one is owed. Sends nothing. */
static int answer(my_conn *c, dbs_error *err)
{
    if (!c->answer_owed)
        return DBS_OK;
    c->answer_owed = false;
    int64_t t0 = dbs__now_ns();
    int rc = release_read(c, b_read(c, rt_deadline(c, t0)) == 0, NULL, false, t0, err);
    if (rc == DBS_OK && c->broken)
        rc = dbs__err(err, DBS_ECONNECT, "mariadb: the release statement failed");
    c->reset_owed = rc == DBS_OK && c->dirty;
    return rc;
}

/* Before anything is sent on c: the last release's answer, and the reset
 * it found owed. */
static int settle(my_conn *c, dbs_error *err)
{
    int rc = answer(c, err);
    if (rc != DBS_OK || !c->reset_owed)
        return rc;
    c->reset_owed = false;
    return full_reset(c, err);
}

/* Runs a text command (possibly several statements) and reads every
 * result. */
static int text(my_conn *c, const char *sql, size_t len, bool commit, dbs_error *err)
{
    int rc = settle(c, err);
    if (rc != DBS_OK)
        return rc;
    int64_t t0 = dbs__now_ns(), dl = rt_deadline(c, t0);
    if (b_query(c, sql, len, dl) != 0)
        return fail_conn(c, t0, commit, err);
    for (;;) {
        MYSQL_RES *r = b_store(c, dl);
        if (r)
            mysql_free_result(r);
        else if (mysql_field_count(c->my) != 0)
            return fail_conn(c, t0, commit, err);
        int more = b_next(c, dl);
        if (more < 0)
            break;
        if (more > 0)
            return fail_conn(c, t0, commit, err);
    }
    return DBS_OK;
}

static int send_begin(my_conn *c, dbs_error *err);

/* Whether dbscope's transactions on c are READ ONLY: a read-only session's
 * (set_read_only) or by the transaction options. */
static bool want_ro(const my_conn *c)
{
    return c->read_only || c->opt_ro;
}

/* After each statement: what the server reports of the transaction
 * dbscope began, not what the SQL looked like. DDL and COMMIT sent as SQL
 * end it (an implicit commit: SERVER_STATUS_IN_TRANS goes); START
 * TRANSACTION sent as SQL ends it and opens one of the caller's, read-write
 * (SERVER_STATUS_IN_TRANS_READONLY missing in a read-only session). Either
 * way something may have committed (escaped), and the next statement begins
 * a new transaction of dbscope's own, READ ONLY again in a read-only
 * session, after rolling back the caller's. */
static void follow_tx(my_conn *c)
{
    if (!c->tx_sent || c->tx_failed || c->broken)
        return;
    const char *name;
    size_t len;
    if (c->session_ro && (c->my->server_status & SERVER_SESSION_STATE_CHANGED) &&
        mysql_session_track_get_first(c->my, SESSION_TRACK_SYSTEM_VARIABLES, &name, &len) == 0) {
        /* The caller set the session's access mode (SET SESSION
         * TRANSACTION READ WRITE): set it back before the next statement.
         * The transaction itself is READ ONLY still. */
        c->ro_owed = true;
    }
    unsigned st = c->my->server_status;
    bool in = (st & SERVER_STATUS_IN_TRANS) != 0;
    if (in && (!want_ro(c) || (st & SERVER_STATUS_IN_TRANS_READONLY)))
        return;
    c->escaped = true;
    c->tx_sent = false;
    c->begin_pending = true;
    if (in)
        c->rollback_owed = true;
}

/* After the last packet of each result of a statement of the caller's
 * (the OK of a command, the end of a result set, each result of a CALL):
 * the server sets SERVER_SESSION_STATE_CHANGED when a tracker has
 * something to report, and the trackers switched on at connect
 * (session_track_state_change, _schema, _system_variables='*') report any
 * change of user variables, session variables, temporary tables, SQL-level
 * prepared statements, the current database, the current role and
 * GET_LOCK locks, made by the statement itself, a procedure, a function or
 * a trigger. The flag, not the list of reports: Connector/C leaves the
 * last list in place after a result set that reported nothing. Statements
 * dbscope sends itself (send_begin, COMMIT) are not looked at: what they
 * change is dbscope's own to undo. */
static void note_state(my_conn *c)
{
    if (!c->tracking || (c->my->server_status & SERVER_SESSION_STATE_CHANGED))
        c->dirty = true;
}

/* Whether the full reset must send COM_RESET_CONNECTION: the session may
 * have left state that only it undoes. The caller's own use of the handle,
 * a transaction that escaped (DDL and LOCK TABLES commit implicitly, as
 * does BACKUP STAGE; COMMIT sent as SQL; after which statements ran outside
 * dbscope's transaction), a reported change, a failed statement, a server
 * that does not report: reset. */
static bool needs_reset(const my_conn *c)
{
    return c->t->reset != DBS_RESET_TRACKED || !c->tracking || c->dirty || c->native_used ||
           c->escaped;
}

static int my_tx_escaped(void *vc)
{
    my_conn *c = vc;
    follow_tx(c);
    return c->escaped;
}

static void *my_native(void *vc)
{
    my_conn *c = vc;
    c->native_used = true;
    dbs_error se;
    if (!c->broken && settle(c, &se) != DBS_OK)
        c->broken = true;
    /* The caller may run statements right away: an owed ROLLBACK must not
     * fall on them. */
    c->released = false;
    if ((c->rollback_owed || c->role_owed || c->found_owed || c->setup_owed ||
         (c->session_ro && !want_ro(c))) &&
        !c->broken) {
        bool begin = c->begin_pending;
        c->begin_pending = false; /* the caller's to begin, if at all */
        dbs_error e;
        if (send_begin(c, &e) != DBS_OK)
            c->broken = true;
        c->begin_pending = begin;
    }
    return c->my;
}

static int my_ping(void *vc, dbs_error *err)
{
    my_conn *c = vc;
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "mariadb: connection is broken");
    int rc = settle(c, err);
    if (rc != DBS_OK)
        return rc;
    int64_t t0 = dbs__now_ns(), dl = rt_deadline(c, t0);
    bool stopped = false;
    if ((dbs__thread_stop || dl) && mysql_get_socket(c->my) >= 0) {
        /* within the bound (see b_query); on a pool's own thread,
         * abandoned once the pool shuts down */
        int st = mysql_ping_start(&rc, c->my);
        while (st)
            st = mysql_ping_cont(&rc, c->my, nb_wait(c->my, st, dl, &stopped));
        c->past_bound = rc != 0 && past(dl);
    } else {
        rc = mysql_ping(c->my);
    }
    if (stopped) {
        c->broken = true;
        return dbs__err(err, DBS_ECLOSED, "mariadb: ping abandoned: the pool shut down");
    }
    if (rc != 0)
        return fail_conn(c, t0, false, err);
    return DBS_OK;
}

/* An idle connection's socket, without a round trip: the protocol is
 * strictly question and answer, so an idle connection receives nothing
 * until the server closes it (a KILL, wait_timeout, a restart), perhaps
 * after an error packet saying why. Closed: broken. Bytes: the error
 * packet (or, with TLS, records of the TLS layer), which a ping reads and
 * judges. */
static int my_peek(void *vc, int wait, dbs_error *err)
{
    (void)wait; /* a program's thread: a loop's units run on workers */
    my_conn *c = vc;
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "mariadb: connection is broken");
    if (c->answer_owed) {
        /* The last release's answer, owed to the backend: read now (it is
         * normally there already). A reset it finds owed is sent by the
         * next use, not here. */
        dbs_error aerr;
        if (answer(c, &aerr) != DBS_OK) {
            /* Reported as a lost connection (a timeout included): the
             * callers of peek discard on DBS_ECONNECT. aerr is formatted
             * from, not err itself: a message printed into its own
             * buffer overlaps (undefined; glibc doubled the prefix). */
            c->broken = true;
            return dbs__err(err, DBS_ECONNECT, "%s", aerr.message);
        }
    }
    my_socket fd = mysql_get_socket(c->my);
    if ((int)fd < 0) {
        c->broken = true;
        return dbs__err(err, DBS_ECONNECT, "mariadb: the connection has no socket");
    }
    char b;
    ssize_t n;
    while ((n = recv((int)fd, &b, 1, MSG_PEEK | MSG_DONTWAIT)) < 0 && errno == EINTR) {
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return DBS_OK; /* nothing arrived: the common case */
    if (n > 0)
        return DBS__PEEK_UNSURE;
    c->broken = true;
    if (n == 0)
        return dbs__err(err, DBS_ECONNECT,
                        "mariadb: the server closed the idle connection (killed, "
                        "wait_timeout or a restart)");
    return dbs__err(err, DBS_ECONNECT, "mariadb: the idle connection failed: %s",
                    strerror(errno));
}

static int my_set_read_only(void *vc, int on, dbs_error *err)
{
    (void)err;
    ((my_conn *)vc)->read_only = on != 0;
    return DBS_OK;
}

/* Transaction options go out with START TRANSACTION (send_begin): SET
 * TRANSACTION ISOLATION LEVEL, which holds for the next transaction only,
 * and READ ONLY at the transaction and the session level, as for a
 * read-only session. */
static int my_tx_options_check(const dbs_tx_options *o, bool ro, dbs_error *err)
{
    (void)ro;
    if (o && o->deferrable)
        return dbs__err(err, DBS_ECONFIG,
                        "mariadb: DEFERRABLE is PostgreSQL's; MariaDB/MySQL have no such "
                        "transaction mode: leave deferrable 0");
    if (o && o->immediate)
        return dbs__err(err, DBS_ECONFIG,
                        "mariadb: the immediate transaction option is SQLite's (BEGIN "
                        "IMMEDIATE); InnoDB locks rows as they are written: leave it 0");
    return DBS_OK;
}

static int my_tx_options(void *vc, const dbs_tx_options *o, dbs_error *err)
{
    my_conn *c = vc;
    int rc = my_tx_options_check(o, false, err);
    if (rc != DBS_OK)
        return rc;
    c->opt_ro = o && o->read_only;
    c->iso = o ? o->isolation : DBS_ISOLATION_DEFAULT;
    return DBS_OK;
}

static int my_begin(void *vc, const dbs_context *ctx, dbs_error *err)
{
    (void)err;
    my_conn *c = vc;
    c->ctx = ctx;
    c->begin_pending = true;
    return DBS_OK;
}

/* ---- statements ---- */

static bool ident_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_' || ch == '$' ||
           (unsigned char)ch >= 0x80;
}

enum { MY_MAXP = 65535 };

/* A number parameter's bound copy, or a value's form for the server: a
 * timestamp's date and time, a UUID's text. */
typedef union my_num { long long i; double r; MYSQL_TIME t; char u[37]; } my_num;

/* How the server reads a statement's text, each part from what the server
 * or Connector/C reports rather than from the text: whether a backslash
 * in quotes escapes (not under NO_BACKSLASH_ESCAPES, in the status flags
 * of every OK packet), which versioned comments are code (the server's
 * version and kind), and the connection's character set (which Connector/C
 * follows through SET NAMES, reported by the server's session tracking):
 * the server's lexer takes a multi-byte character whole, and in gbk, sjis,
 * big5 or cp932 its second byte may be a backslash or a backtick. */
typedef struct my_lex {
    bool backslash;
    bool maria;
    unsigned long version;
    const MARIADB_CHARSET_INFO *cs;
} my_lex;

/* Bytes of the character at p (before end): a valid multi-byte character
 * of the connection's character set, else 1. */
static size_t char_len(const my_lex *lx, const char *p, const char *end)
{
    if ((unsigned char)*p < 0x80 || !lx->cs || lx->cs->char_maxlen < 2 || !lx->cs->mb_valid)
        return 1;
    unsigned l = lx->cs->mb_valid(p, end);
    return l > 1 && l <= (size_t)(end - p) ? l : 1;
}

/* The end of a comment the server skips, from p (after its opening):
 * the first star-slash, with one plain comment inside when nested (a
 * versioned comment for a later version may hold one; the server's
 * consume_comment). */
static const char *comment_end(const char *p, bool nested)
{
    for (; *p; p++) {
        if (nested && p[0] == '/' && p[1] == '*') {
            p = comment_end(p + 2, false);
            if (!*p)
                return p;
            p--;
        } else if (p[0] == '*' && p[1] == '/') {
            return p + 2;
        }
    }
    return p;
}

/* Whether the server runs the versioned comment whose version digits
 * (if any) start at d, MariaDB's "M!" form for m_form: 1 it runs, from *body on; 0 the
 * server skips it; -1 servers of the kind read it differently (MySQL
 * once read 5 digits, later 6 followed by a blank). The server's rule
 * (sql_lex.cc, MY_LEX_LONG_COMMENT): no version is always code; a version
 * up to the server's is code, except, on MariaDB, a version of MySQL 5.7
 * and later (50700..99999) not in the "M!" form. */
static int versioned_runs(const my_lex *lx, const char *d, bool m_form, const char **body)
{
    size_t nd = 0;
    unsigned long v = 0, v5 = 0;
    while (nd < 6 && isdigit((unsigned char)d[nd])) {
        v = v * 10 + (unsigned long)(d[nd++] - '0');
        if (nd == 5)
            v5 = v;
    }
    if (nd < 5) {
        *body = d;
        return 1;
    }
    if (lx->maria) {
        *body = d + nd;
        return v <= lx->version && (v < 50700 || v > 99999 || m_form);
    }
    *body = d + 5;
    int r5 = v5 <= lx->version;
    if (nd == 6 && isspace((unsigned char)d[6]) && (v <= lx->version) != r5)
        return -1;
    return r5;
}

/* Rewrites $1..$n as '?' where the server reads code into *out: not in
 * quotes, backticks, comments, names ("a$1", "t.$1") or user variables
 * ("@a$1"); a versioned comment the server runs (a comment opening with
 * '!', "!50110" or, on MariaDB, "M!" or "M!100100") is code. *map (nmap entries) says which
 * parameter each '?' takes; *maxp is the highest $n. DBS_ESQL for a '?' of
 * the caller's own, which would shift every binding, and for a text whose
 * reading the server's kind leaves open. */
static int translate(const char *sql, const my_lex *lx, char **out, int **map, int *nmap,
                     int *maxp, dbs_error *err)
{
    size_t len = strlen(sql);
    const char *end = sql + len;
    char *o = malloc(len + 1);
    int cap = 8, n = 0, max = 0;
    int *m = malloc((size_t)cap * sizeof *m);
    if (!o || !m) {
        free(o);
        free(m);
        return dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
    }
    size_t w = 0;
    /* the last character goes on into what follows: a name, a number, a
     * user variable, or a '.' (after which the server reads a name) */
    bool word = false;
    bool in_code_comment = false; /* in a versioned comment the server runs */
    const char *p = sql;
#define COPY(k)                                                                \
    do {                                                                       \
        size_t k_ = (k);                                                       \
        memcpy(o + w, p, k_);                                                  \
        w += k_;                                                               \
        p += k_;                                                               \
    } while (0)
    while (*p) {
        bool after_word = word;
        word = false;
        size_t cl = char_len(lx, p, end);
        if (cl > 1) {
            COPY(cl);
            word = true;
        } else if (*p == '\'' || *p == '"' || *p == '`') {
            char q = *p;
            COPY(1);
            while (*p) {
                size_t k = char_len(lx, p, end);
                if (k == 1 && *p == '\\' && lx->backslash && q != '`' && p[1])
                    k = 2;
                else if (k == 1 && *p == q) {
                    COPY(1);
                    break;
                }
                COPY(k);
            }
        } else if ((p[0] == '-' && p[1] == '-' &&
                    ((unsigned char)p[2] <= ' ' || p[2] == 0x7f)) ||
                   *p == '#') {
            /* "--" then a blank or a control character: "--1" is minus
             * minus one */
            while (*p && *p != '\n')
                COPY(1);
        } else if (p[0] == '/' && p[1] == '*') {
            bool m_form = lx->maria && p[2] == 'M' && p[3] == '!';
            if (p[2] == '!' || m_form) {
                const char *body;
                int runs = versioned_runs(lx, p + (m_form ? 4 : 3), m_form, &body);
                if (runs < 0) {
                    free(o);
                    free(m);
                    return dbs__err(err, DBS_ESQL,
                                    "mariadb: versioned comment \"%.10s\": MySQL servers "
                                    "differ in how they read a 6-digit version; write it "
                                    "with 5 digits",
                                    p);
                }
                if (runs) {
                    COPY((size_t)(body - p));
                    in_code_comment = true;
                } else {
                    COPY((size_t)(comment_end(body, true) - p));
                }
            } else {
                COPY((size_t)(comment_end(p + 2, false) - p));
            }
        } else if (in_code_comment && p[0] == '*' && p[1] == '/') {
            COPY(2);
            in_code_comment = false;
        } else if (*p == '@') {
            /* a user or system variable, whose name may hold '$' */
            COPY(1);
            if (*p == '@')
                COPY(1);
            while (isalnum((unsigned char)*p) || *p == '_' || *p == '$' || *p == '.')
                COPY(1);
            word = true;
        } else if (*p == '$' && isdigit((unsigned char)p[1]) && !after_word) {
            char *num_end;
            long v = strtol(p + 1, &num_end, 10);
            if (v < 1 || v > MY_MAXP || ident_char(*num_end)) {
                free(o);
                free(m);
                return dbs__err(err, DBS_ESQL,
                                "mariadb: bad parameter \"%.*s\": use $1..$%d",
                                (int)(num_end - p < 12 ? num_end - p : 12), p, MY_MAXP);
            }
            if (n == MY_MAXP) { /* the server's count of placeholders */
                free(o);
                free(m);
                return dbs__err(err, DBS_ESQL, "mariadb: more than %d parameter uses",
                                MY_MAXP);
            }
            if (n == cap) {
                cap *= 2;
                int *g = realloc(m, (size_t)cap * sizeof *m);
                if (!g) {
                    free(o);
                    free(m);
                    return dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
                }
                m = g;
            }
            m[n++] = (int)v - 1;
            if (v > max)
                max = (int)v;
            o[w++] = '?';
            p = num_end;
        } else if (*p == '?') {
            free(o);
            free(m);
            return dbs__err(err, DBS_ESQL,
                            "mariadb: '?' placeholder in the statement: write "
                            "parameters as $1..$n");
        } else {
            word = ident_char(*p) || *p == '.';
            COPY(1);
        }
    }
#undef COPY
    o[w] = '\0';
    *out = o;
    *map = m;
    *nmap = n;
    *maxp = max;
    return DBS_OK;
}

/* Sends what the transaction owes before its first statement, as one text
 * round trip: an owed ROLLBACK, START TRANSACTION, the context variables. */
static int send_begin(my_conn *c, dbs_error *err)
{
    const dbs_context *ctx = c->begin_pending ? c->ctx : NULL;
    const char *cv[3] = {ctx ? ctx->request_id : NULL, ctx ? ctx->user_id : NULL,
                         ctx ? ctx->tenant_id : NULL};
    bool vars = c->vars_set || cv[0] || cv[1] || cv[2];
    size_t need = 256 + sizeof TRACK_SQL + sizeof c->role_sql + sizeof FOUND_SQL +
                  (c->setup_sql ? strlen(c->setup_sql) : 0);
    for (int i = 0; i < 3; i++)
        need += 3 * sizeof c->mt->var[i] + (cv[i] ? 2 * strlen(cv[i]) : 0) + 48;
    char *sql = malloc(need);
    if (!sql)
        return dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
    size_t w = 0;
#define APPEND(s)                                                              \
    do {                                                                       \
        size_t l_ = strlen(s);                                                 \
        memcpy(sql + w, (s), l_);                                              \
        w += l_;                                                               \
    } while (0)
    if (c->track_owed) {
        APPEND(TRACK_SQL);
        APPEND(";");
    }
    if (c->role_owed) {
        APPEND(c->role_sql);
        APPEND(";");
    }
    if (c->found_owed)
        APPEND(FOUND_SQL ";");
    if (c->setup_owed && c->setup_sql) {
        APPEND(c->setup_sql);
        APPEND(";");
    }

    if (c->rollback_owed)
        APPEND("ROLLBACK;");
    /* A read-only session is read-only at the session level too, so that
     * DDL, which commits implicitly and then runs outside the transaction,
     * is refused; and the server reports any change of it after the
     * statement that made it (follow_tx), before the next one runs. */
    bool set_ro = want_ro(c) && (c->ro_owed || (c->begin_pending && !c->session_ro));
    bool set_rw = !want_ro(c) && c->session_ro;
    if (set_ro) {
        APPEND("SET SESSION TRANSACTION READ ONLY;");
        /* (with tracking on, '*' reports it already) */
        if (!c->tracking && (c->my->server_capabilities & CLIENT_SESSION_TRACKING))
            APPEND(mariadb_connection(c->my)
                       ? "SET SESSION session_track_system_variables="
                         "'tx_read_only,session_track_system_variables';"
                       : "SET SESSION session_track_system_variables="
                         "'transaction_read_only,session_track_system_variables';");
    } else if (set_rw) {
        APPEND("SET SESSION TRANSACTION READ WRITE;");
    }
    if (c->begin_pending && c->iso != DBS_ISOLATION_DEFAULT) {
        static const char *const level[] = {"", "READ COMMITTED", "REPEATABLE READ",
                                            "SERIALIZABLE"};
        APPEND("SET TRANSACTION ISOLATION LEVEL ");
        APPEND(level[c->iso]);
        APPEND(";");
    }
    if (c->begin_pending)
        APPEND(want_ro(c) ? "START TRANSACTION READ ONLY" : "START TRANSACTION");
    if (vars && c->begin_pending) {
        /* Values go in as hex literals: no quoting, nothing to inject. */
        APPEND(";SET ");
        for (int i = 0; i < 3; i++) {
            if (i)
                APPEND(",");
            APPEND(c->mt->var[i]);
            APPEND("=");
            if (!cv[i]) {
                APPEND("NULL");
                continue;
            }
            APPEND("CONVERT(X'");
            static const char hx[] = "0123456789abcdef";
            for (const unsigned char *q = (const unsigned char *)cv[i]; *q; q++) {
                sql[w++] = hx[*q >> 4];
                sql[w++] = hx[*q & 15];
            }
            APPEND("' USING utf8mb4)");
        }
    }
#undef APPEND
    if (w > 0 && sql[w - 1] == ';')
        w--; /* the role alone, nothing after it */
    int rc = text(c, sql, w, false, err);
    free(sql);
    if (rc != DBS_OK)
        return rc;
    c->role_owed = false;
    c->found_owed = false;
    c->setup_owed = false;
    c->rollback_owed = false;
    c->track_owed = false;
    c->released = false;
    if (vars && c->begin_pending)
        c->vars_set = ctx && (cv[0] || cv[1] || cv[2]);
    if (c->begin_pending) {
        c->begin_pending = false;
        c->tx_sent = true;
        c->tx_failed = false;
    }
    if (set_ro)
        c->session_ro = true;
    if (set_rw)
        c->session_ro = false;
    c->ro_owed = false;
    return DBS_OK;
}

/* Finds sql in the cache, or makes a new entry for it (in a cache slot, or
 * in *tmp when there is no cache) whose pending SQL run() prepares with its
 * first execution. Returns the entry or NULL with err filled. The entry's
 * copies and handles belong to the cache (or to *tmp, freed by the caller);
 * GCC 12's analyzer loses them through the returned pointer. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
#endif
static my_stmt *prepare(my_conn *c, const char *sql, my_stmt *tmp, dbs_error *err)
{
    my_stmt *victim = NULL;
    for (int i = 0; i < c->cache_n; i++) {
        my_stmt *e = &c->cache[i];
        if (e->sql && !strcmp(e->sql, sql)) {
            e->last_use = ++c->tick;
            return e;
        }
        /* a free slot, else the least recently used */
        if (!victim || (victim->sql && (!e->sql || e->last_use < victim->last_use)))
            victim = e;
    }
    my_stmt ne = {0};
    /* Under NO_BACKSLASH_ESCAPES (the server's default sql_mode may set
     * it; every OK packet reports it) a backslash in quotes is a
     * character: 'C:\' ends there. */
    my_lex lx = {
        .backslash = c->setup_owed && c->setup_mode
                         ? !c->setup_nbe /* the sql_mode it runs under, sent before it */
                         : !(c->my->server_status & SERVER_STATUS_NO_BACKSLASH_ESCAPES),
        .maria = mariadb_connection(c->my),
        .version = mysql_get_server_version(c->my),
        .cs = c->my->charset,
    };
    int rc = translate(sql, &lx, &ne.pending, &ne.map, &ne.nmap, &ne.max_param, err);
    if (rc != DBS_OK)
        return NULL;
    ne.st = mysql_stmt_init(c->my);
    ne.sql = victim ? strdup(sql) : NULL;
    if (!ne.st || (victim && !ne.sql)) {
        stmt_free(&ne);
        dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
        return NULL;
    }
    my_stmt *e = victim ? victim : tmp;
    if (victim && victim->sql)
        stmt_free(victim); /* COM_STMT_CLOSE: no answer awaited */
    *e = ne;
    e->last_use = ++c->tick;
    return e;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

static void drop_entry(my_conn *c, my_stmt *e, my_stmt *tmp)
{
    (void)c;
    if (e == tmp || !c->cache_n)
        stmt_free(e);
}

/* The least the server receives in one packet for e with params: the
 * COM_STMT_EXECUTE (header, NULL bitmap, types, values), or the
 * COM_STMT_PREPARE of a statement new to the connection. The server
 * closes the connection on a larger packet than its max_allowed_packet
 * (1153, or a reset in the middle of the write), so it is refused before
 * anything is sent. A lower bound: only what surely does not fit. */
static unsigned long long packet_size(const my_stmt *e, const dbs_value *params)
{
    unsigned long long n = (unsigned long long)e->nmap, need = 10;
    if (n > 0)
        need += (n + 7) / 8 + 1 + 2 * n;
    for (int i = 0; i < e->nmap; i++) {
        const dbs_value *v = &params[e->map[i]];
        unsigned long long l;
        switch (v->type) {
        case DBS_TYPE_INT: case DBS_TYPE_REAL: case DBS_TYPE_BOOL:
            need += 8;
            break;
        case DBS_TYPE_TIMESTAMP:
            need += 1;
            break;
        case DBS_TYPE_UUID:
            need += v->b.p ? 37 : 0;
            break;
        case DBS_TYPE_JSON: case DBS_TYPE_TEXT: case DBS_TYPE_BLOB:
            if (!v->b.p)
                break;
            l = v->type != DBS_TYPE_BLOB && v->b.n == SIZE_MAX ? strlen(v->b.p) : v->b.n;
            need += l + (l < 251 ? 1 : l < 65536 ? 3 : l < 16777216 ? 4 : 9);
            break;
        default:
            break;
        }
    }
    unsigned long long prep = e->pending ? 1 + strlen(e->pending) : 0;
    return need > prep ? need : prep;
}

/* Prepares (or finds), begins if owed, binds and executes. On success the
 * statement's result (if any) is waiting to be read from the returned
 * entry. */
static my_stmt *run(my_conn *c, const char *sql, const dbs_value *params, size_t n,
                    my_stmt *tmp, bool retry, dbs_error *err)
{
    if (c->broken) {
        dbs__err(err, DBS_ECONNECT, "mariadb: connection is broken");
        return NULL;
    }
    if (settle(c, err) != DBS_OK)
        return NULL;
    if (c->tx_failed && !c->begin_pending) {
        /* the failure's consequence, with its class (as SQLite's lost_tx
         * and PostgreSQL's 25P02): a unit that passes it on, or a
         * savepoint's RELEASE refused so, runs again */
        dbs__err(err, DBS_ERETRYABLE,
                 "mariadb: this transaction failed with a deadlock, a serialization "
                 "failure (40001) or a lock wait timeout the server rolled it back for "
                 "(innodb_rollback_on_timeout); roll back and run the unit of work again");
        dbs__err_sqlstate(err, "40001");
        return NULL;
    }
    memset(tmp, 0, sizeof *tmp);
    my_stmt *e = prepare(c, sql, tmp, err);
    if (!e)
        return NULL;
    if ((size_t)e->max_param != n) {
        if ((size_t)e->max_param > n)
            dbs__err(err, DBS_ESQL,
                     "mariadb: the statement uses $%d but %zu parameters were given",
                     e->max_param, n);
        else
            dbs__err(err, DBS_ESQL,
                     "mariadb: %zu parameters given but the statement uses $%d at most",
                     n, e->max_param);
        drop_entry(c, e, tmp);
        return NULL;
    }
    unsigned long long need = packet_size(e, params);
    if (c->max_packet && need > c->max_packet) {
        dbs__err(err, DBS_ESQL,
                 "mariadb: the statement and its parameters need a packet of at least %llu "
                 "bytes, more than the server's max_allowed_packet (%llu); nothing was sent",
                 need, c->max_packet);
        drop_entry(c, e, tmp);
        return NULL;
    }
    /* Before the transaction's start: out of memory sends nothing. */
    enum { STACK = 16 };
    MYSQL_BIND sb[STACK];
    my_num sv[STACK];
    unsigned long sl[STACK];
    MYSQL_BIND *b = sb;
    void *heap = NULL;
    my_num *vals = sv;
    unsigned long *lens = sl;
    if (e->nmap > STACK) {
        size_t k = (size_t)e->nmap;
        heap = calloc(k, sizeof *b + sizeof *vals + sizeof *lens);
        if (!heap) {
            drop_entry(c, e, tmp);
            dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
            return NULL;
        }
        b = heap;
        vals = (void *)(b + k);
        lens = (void *)(vals + k);
    }
    follow_tx(c); /* the last statement's report, native() use included */
    if ((c->begin_pending || c->rollback_owed || c->role_owed || c->found_owed ||
         c->ro_owed || c->track_owed || c->setup_owed) &&
        send_begin(c, err) != DBS_OK) {
        free(heap);
        drop_entry(c, e, tmp);
        return NULL;
    }
    memset(b, 0, (size_t)(e->nmap > STACK ? e->nmap : STACK) * sizeof *b);
    for (int i = 0; i < e->nmap; i++) {
        const dbs_value *v = &params[e->map[i]];
        switch (v->type) {
        case DBS_TYPE_INT:
            vals[i].i = v->i;
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = &vals[i].i;
            break;
        case DBS_TYPE_REAL:
            vals[i].r = v->r;
            b[i].buffer_type = MYSQL_TYPE_DOUBLE;
            b[i].buffer = &vals[i].r;
            break;
        case DBS_TYPE_BOOL:
            vals[i].i = v->i ? 1 : 0;
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = &vals[i].i;
            break;
        case DBS_TYPE_TIMESTAMP: {
            /* The UTC wall time, as a DATETIME (microseconds). */
            dbs__ts f = {0};
            (void)dbs__ts_fields(v->ts, &f); /* checked by the caller */
            memset(&vals[i].t, 0, sizeof vals[i].t);
            vals[i].t.year = (unsigned)f.year;
            vals[i].t.month = (unsigned)f.month;
            vals[i].t.day = (unsigned)f.day;
            vals[i].t.hour = (unsigned)f.hour;
            vals[i].t.minute = (unsigned)f.minute;
            vals[i].t.second = (unsigned)f.second;
            vals[i].t.second_part = (unsigned long)f.usec;
            vals[i].t.time_type = MYSQL_TIMESTAMP_DATETIME;
            b[i].buffer_type = MYSQL_TYPE_DATETIME;
            b[i].buffer = &vals[i].t;
            break;
        }
        case DBS_TYPE_UUID:
            if (!v->b.p) {
                b[i].buffer_type = MYSQL_TYPE_NULL;
                break;
            }
            dbs_uuid_format(v->b.p, vals[i].u);
            lens[i] = 36;
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = vals[i].u;
            b[i].buffer_length = 36;
            b[i].length = &lens[i];
            break;
        case DBS_TYPE_JSON:
        case DBS_TYPE_TEXT:
        case DBS_TYPE_BLOB:
            if (!v->b.p) {
                b[i].buffer_type = MYSQL_TYPE_NULL;
                break;
            }
            b[i].buffer_type =
                v->type == DBS_TYPE_BLOB ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
            lens[i] = v->type != DBS_TYPE_BLOB && v->b.n == SIZE_MAX
                          ? (unsigned long)strlen(v->b.p)
                          : (unsigned long)v->b.n;
            /* Connector/C only reads parameter buffers. */
            b[i].buffer = (void *)(uintptr_t)v->b.p;
            b[i].buffer_length = lens[i];
            b[i].length = &lens[i];
            break;
        default:
            b[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        }
    }
    int64_t t0 = dbs__now_ns();
    c->stmt_t0 = t0;
    c->past_bound = false;
    bool fresh = e->pending != NULL, ok;
    if (fresh) {
        /* COM_STMT_PREPARE and COM_STMT_EXECUTE in one round trip (MariaDB
         * 10.2+; against MySQL, Connector/C sends them one after the
         * other). The parameters are bound before the server has seen the
         * statement, so their number is announced first. */
        unsigned int np = (unsigned int)e->nmap;
        ok = !mysql_stmt_attr_set(e->st, STMT_ATTR_PREBIND_PARAMS, &np) &&
             (e->nmap == 0 || !mysql_stmt_bind_param(e->st, b)) &&
             !mariadb_stmt_execute_direct(e->st, e->pending, strlen(e->pending));
    } else {
        ok = (e->nmap == 0 || !mysql_stmt_bind_param(e->st, b)) &&
             !b_execute(c, e->st, stmt_deadline(c));
    }
    free(heap);
    if (!ok) {
        unsigned eno = mysql_stmt_errno(e->st);
        fail_stmt(c, e->st, t0, err);
        if (fresh) /* the server may not hold it: forget it */
            stmt_free(e);
        else
            drop_entry(c, e, tmp);
        if (fresh && eno == ER_MAX_PREPARED_STMT_COUNT_REACHED && c->cache_n > 0 &&
            !retry && !c->broken) {
            /* The server's max_prepared_stmt_count is shared by every
             * connection: give ours back and try once more. */
            cache_clear(c);
            return run(c, sql, params, n, tmp, true, err);
        }
        return NULL;
    }
    if (fresh) {
        free(e->pending);
        e->pending = NULL;
    }
    return e;
}

/* Whether sql, a statement that returned rows, is a write with RETURNING
 * (INSERT, REPLACE, DELETE, UPDATE first), whose rows are the rows it
 * wrote: the server reports no count of its own for it. */
static bool writes_returning(const char *sql)
{
    for (;;) {
        sql += strspn(sql, " \t\n\r\f\v(");
        if (sql[0] == '/' && sql[1] == '*') {
            const char *e = strstr(sql + 2, "*/");
            if (!e)
                return false;
            sql = e + 2;
        } else if ((sql[0] == '-' && sql[1] == '-') || sql[0] == '#') {
            sql += strcspn(sql, "\n");
        } else {
            break;
        }
    }
    static const char *const kw[] = {"INSERT", "REPLACE", "DELETE", "UPDATE"};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++) {
        size_t n = strlen(kw[i]);
        if (strncasecmp(sql, kw[i], n) == 0 && !ident_char(sql[n]))
            return true;
    }
    return false;
}

/* Reads the rest of a statement's results (procedures can return several)
 * so the connection is ready for the next command. *stored (if stored)
 * gets the count of rows of the first result read here. */
static int drain(my_conn *c, MYSQL_STMT *st, bool consumed, int64_t *stored, dbs_error *err)
{
    int64_t t0 = dbs__now_ns();
    for (;;) {
        if (!consumed) {
            if (mysql_stmt_field_count(st) > 0) {
                if (stmt_store(c, st) != 0)
                    return fail_stmt(c, st, t0, err);
                if (stored) {
                    *stored = (int64_t)mysql_stmt_num_rows(st);
                    stored = NULL;
                }
                mysql_stmt_free_result(st);
            }
            note_state(c); /* this result's last packet */
        }
        consumed = false;
        int more = stmt_next(c, st);
        if (more < 0)
            return DBS_OK;
        if (more > 0)
            return fail_stmt(c, st, t0, err);
    }
}

static int64_t my_exec(void *vc, const char *sql, const dbs_value *params, size_t n,
                       dbs_error *err)
{
    my_conn *c = vc;
    my_stmt tmp;
    my_stmt *e = run(c, sql, params, n, &tmp, false, err);
    if (!e)
        return err ? err->code : DBS_ESQL;
    /* Rows affected as the other backends count them: a SELECT changes
     * none, a write with RETURNING the rows it returned; with
     * CLIENT_FOUND_ROWS an UPDATE counts the rows it matched. */
    int64_t rows = 0;
    bool returning = false;
    if (mysql_stmt_field_count(e->st) == 0) {
        my_ulonglong a = mysql_stmt_affected_rows(e->st);
        rows = a == (my_ulonglong)-1 ? 0 : (int64_t)a;
    } else {
        returning = writes_returning(sql);
    }
    int rc = drain(c, e->st, false, returning ? &rows : NULL, err);
    drop_entry(c, e, &tmp);
    if (rc != DBS_OK)
        return rc;
    follow_tx(c);
    return rows;
}

static int arena_reserve(my_rows *r, size_t more)
{
    if (r->arena_n + more <= r->arena_cap)
        return 0;
    size_t cap = r->arena_cap ? r->arena_cap : 256;
    while (cap < r->arena_n + more) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *a = realloc(r->arena, cap);
    if (!a)
        return -1;
    r->arena = a;
    r->arena_cap = cap;
    return 0;
}

static void rows_free(my_rows *r)
{
    free(r->cells);
    free(r->arena);
    free(r->name_off);
    free(r->ctype);
    free(r);
}

/* The dbs_type of a result column, from its protocol type, its character
 * set (63: binary) and MariaDB's extended metadata (UUID, JSON). */
static int field_type(const MYSQL_FIELD *f)
{
    MARIADB_CONST_STRING a = {0};
    if (mariadb_field_attr(&a, f, MARIADB_FIELD_ATTR_DATA_TYPE_NAME) == 0 && a.length == 4 &&
        !strncasecmp(a.str, "uuid", 4))
        return DBS_TYPE_UUID;
    if (mariadb_field_attr(&a, f, MARIADB_FIELD_ATTR_FORMAT_NAME) == 0 && a.length == 4 &&
        !strncasecmp(a.str, "json", 4))
        return DBS_TYPE_JSON;
    switch (f->type) {
    case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_LONG: case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONGLONG: case MYSQL_TYPE_YEAR:
        return DBS_TYPE_INT;
    case MYSQL_TYPE_FLOAT: case MYSQL_TYPE_DOUBLE:
        return DBS_TYPE_REAL;
    case MYSQL_TYPE_DECIMAL: case MYSQL_TYPE_NEWDECIMAL:
        return DBS_TYPE_DECIMAL;
    case MYSQL_TYPE_DATETIME: case MYSQL_TYPE_TIMESTAMP: case MYSQL_TYPE_DATETIME2:
    case MYSQL_TYPE_TIMESTAMP2:
        return DBS_TYPE_TIMESTAMP;
    case MYSQL_TYPE_JSON:
        return DBS_TYPE_JSON;
    case MYSQL_TYPE_STRING: case MYSQL_TYPE_VAR_STRING: case MYSQL_TYPE_VARCHAR:
    case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB:
    case MYSQL_TYPE_BLOB: case MYSQL_TYPE_BIT: case MYSQL_TYPE_GEOMETRY:
        return f->charsetnr == 63 ? DBS_TYPE_BLOB : DBS_TYPE_TEXT;
    default:
        return DBS_TYPE_TEXT;
    }
}

/* Reads the whole result of e into a rows object. */
static my_rows *fetch_all(my_conn *c, MYSQL_STMT *st, dbs_error *err)
{
    my_rows *r = calloc(1, sizeof *r);
    MYSQL_RES *meta = mysql_stmt_result_metadata(st);
    if (!r || !meta) {
        if (meta)
            mysql_free_result(meta);
        free(r);
        dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
        return NULL;
    }
    r->base.ops = &my_rows_ops;
    int nc = (int)mysql_num_fields(meta);
    MYSQL_FIELD *f = mysql_fetch_fields(meta);
    r->ncols = nc;
    MYSQL_BIND *b = calloc((size_t)nc ? (size_t)nc : 1, sizeof *b);
    my_cell *cur = calloc((size_t)nc ? (size_t)nc : 1, sizeof *cur);
    unsigned long *len = calloc((size_t)nc ? (size_t)nc : 1, sizeof *len);
    my_bool *isnull = calloc((size_t)nc ? (size_t)nc : 1, sizeof *isnull);
    r->name_off = calloc((size_t)nc ? (size_t)nc : 1, sizeof *r->name_off);
    r->ctype = calloc((size_t)nc ? (size_t)nc : 1, 1);
    size_t cells_cap = 0;
    int rc = DBS_OK;
    if (!b || !cur || !len || !isnull || !r->name_off || !r->ctype) {
        rc = dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
        goto out;
    }
    for (int i = 0; i < nc; i++) {
        size_t nl = strlen(f[i].name) + 1;
        if (arena_reserve(r, nl)) {
            rc = dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
            goto out;
        }
        r->name_off[i] = r->arena_n;
        memcpy(r->arena + r->arena_n, f[i].name, nl);
        r->arena_n += nl;
        r->ctype[i] = (unsigned char)field_type(&f[i]);
        b[i].is_null = &isnull[i];
        b[i].length = &len[i];
        switch (f[i].type) {
        case MYSQL_TYPE_TINY:
        case MYSQL_TYPE_SHORT:
        case MYSQL_TYPE_LONG:
        case MYSQL_TYPE_INT24:
        case MYSQL_TYPE_LONGLONG:
        case MYSQL_TYPE_YEAR:
            b[i].buffer_type = MYSQL_TYPE_LONGLONG;
            b[i].buffer = &cur[i].v.i;
            b[i].is_unsigned = (f[i].flags & UNSIGNED_FLAG) != 0;
            cur[i].kind = b[i].is_unsigned ? 2 : 1;
            break;
        case MYSQL_TYPE_FLOAT:
        case MYSQL_TYPE_DOUBLE:
            b[i].buffer_type = MYSQL_TYPE_DOUBLE;
            b[i].buffer = &cur[i].v.r;
            cur[i].kind = 3;
            break;
        default:
            /* Strings, blobs, decimals, dates: as bytes, read by
             * mysql_stmt_fetch_column once their length is known. */
            b[i].buffer_type = MYSQL_TYPE_STRING;
            b[i].buffer = NULL;
            b[i].buffer_length = 0;
            cur[i].kind = 4;
            break;
        }
    }
    int64_t t0 = dbs__now_ns();
    if (stmt_store(c, st) != 0) {
        rc = fail_stmt(c, st, t0, err);
        goto out;
    }
    note_state(c); /* the result set's last packet is read */
    if (nc > 0 && mysql_stmt_bind_result(st, b) != 0) {
        rc = fail_stmt(c, st, t0, err);
        goto out;
    }
    for (;;) {
        int fr = mysql_stmt_fetch(st);
        if (fr == MYSQL_NO_DATA)
            break;
        if (fr == 1) {
            rc = fail_stmt(c, st, t0, err);
            goto out;
        }
        if (r->nrows == cells_cap) {
            size_t ncap = cells_cap ? cells_cap * 2 : 16;
            my_cell *g = realloc(r->cells, ncap * (size_t)(nc ? nc : 1) * sizeof *g);
            if (!g) {
                rc = dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
                goto out;
            }
            r->cells = g;
            cells_cap = ncap;
        }
        my_cell *row = r->cells + r->nrows * (size_t)nc;
        for (int i = 0; i < nc; i++) {
            row[i] = cur[i];
            if (isnull[i]) {
                row[i].kind = 0;
                continue;
            }
            if (f[i].type == MYSQL_TYPE_FLOAT)
                row[i].v.r = dbs__float_spelled(cur[i].v.r);
            if (cur[i].kind != 4)
                continue;
            if (arena_reserve(r, (size_t)len[i] + 1)) {
                rc = dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
                goto out;
            }
            row[i].v.off = r->arena_n;
            row[i].n = len[i];
            if (len[i] > 0) {
                MYSQL_BIND one = {0};
                unsigned long got = 0;
                one.buffer_type = MYSQL_TYPE_STRING;
                one.buffer = r->arena + r->arena_n;
                one.buffer_length = len[i];
                one.length = &got;
                if (mysql_stmt_fetch_column(st, &one, (unsigned)i, 0) != 0) {
                    rc = fail_stmt(c, st, t0, err);
                    goto out;
                }
            }
            r->arena[r->arena_n + len[i]] = '\0';
            r->arena_n += (size_t)len[i] + 1;
        }
        r->nrows++;
    }
out:
    mysql_free_result(meta);
    free(b);
    free(cur);
    free(len);
    free(isnull);
    mysql_stmt_free_result(st);
    if (rc != DBS_OK) {
        rows_free(r);
        return NULL;
    }
    return r;
}

static dbs_rows *my_query(void *vc, const char *sql, const dbs_value *params, size_t n,
                          dbs_error *err)
{
    my_conn *c = vc;
    my_stmt tmp;
    my_stmt *e = run(c, sql, params, n, &tmp, false, err);
    if (!e)
        return NULL;
    my_rows *r = NULL;
    if (mysql_stmt_field_count(e->st) == 0) {
        /* No result set (an INSERT through dbs_query): no rows. */
        r = calloc(1, sizeof *r);
        if (r) {
            r->base.ops = &my_rows_ops;
            my_ulonglong a = mysql_stmt_affected_rows(e->st);
            r->affected = a == (my_ulonglong)-1 ? 0 : (int64_t)a;
        } else
            dbs__err(err, DBS_ENOMEM, "mariadb: out of memory");
    } else {
        r = fetch_all(c, e->st, err);
        if (r && writes_returning(sql))
            r->affected = (int64_t)r->nrows;
    }
    if (r && drain(c, e->st, mysql_stmt_field_count(e->st) > 0, NULL, err) != DBS_OK) {
        rows_free(r);
        r = NULL;
    }
    drop_entry(c, e, &tmp);
    if (r)
        follow_tx(c);
    return r ? &r->base : NULL;
}

/* The release statement: what a full reset undoes that the trackers do not
 * report, undone or looked at in the same round trip as the session's
 * COMMIT or ROLLBACK (or, when there is none, in one of its own; still no
 * COM_RESET_CONNECTION, and the statement cache stays):
 *   - GET_LOCK locks (not tracked): RELEASE_ALL_LOCKS() releases them all;
 *   - LAST_INSERT_ID() (not tracked, kept by the connection): back to 0,
 *     as after a reset;
 *   - the context variables: NULL;
 *   - user variables set by := or SELECT ... INTO (not tracked; SET is):
 *     counted, ours left out; any there, and the reset runs;
 *   - the seeds of RAND() (SET @@rand_seed1, not tracked, and no query
 *     shows them): seeded again from the kernel's random source, as the
 *     reset does, so no session can tell the next one's RAND().
 * prefix: "COMMIT", "ROLLBACK" or NULL. Returns the prefix's outcome (a
 * COMMIT that succeeded is DBS_OK even if what follows failed: the
 * connection is then broken). Sets c->dirty when the reset must run.
 * send_only (no prefix): sent, not waited for; the server runs it as it
 * arrives, and the answer is read by the connection's next use (settle).
 * So a session that ends with dbs_commit and then closes does not wait for
 * a round trip of its own at release. */

static int release_sql(my_conn *c, const char *prefix, bool commit, bool send_only,
                       dbs_error *err)
{
    char sql[sizeof c->mt->release + 3 * (MY_CTX_NAME + 12) + 80];
    size_t w = 0;
    if (prefix)
        w += (size_t)snprintf(sql + w, sizeof sql - w, "%s;", prefix);
    if (c->vars_set)
        w += (size_t)snprintf(sql + w, sizeof sql - w, "SET %s=NULL,%s=NULL,%s=NULL;",
                              c->mt->var[0], c->mt->var[1], c->mt->var[2]);
    uint32_t seed[2] = {0, 0};
    if (getrandom(seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        uint64_t x = dbs__random() ^ (uint64_t)dbs__now_ns();
        seed[0] ^= (uint32_t)x;
        seed[1] ^= (uint32_t)(x >> 32);
    }
    /* below the server's modulus (0x3FFFFFFF) */
    w += (size_t)snprintf(sql + w, sizeof sql - w, "SET @@rand_seed1=%lu,@@rand_seed2=%lu;",
                          (unsigned long)(seed[0] % 0x3FFFFFFFu),
                          (unsigned long)(seed[1] % 0x3FFFFFFFu));
    w += (size_t)snprintf(sql + w, sizeof sql - w, "%s", c->mt->release);
    int64_t t0 = dbs__now_ns();
    if (!send_only)
        return release_read(c, b_query(c, sql, w, rt_deadline(c, t0)) == 0, prefix, commit,
                            t0, err);
    if (b_send(c, sql, w, rt_deadline(c, t0)) != 0) {
        int rc = fail_conn(c, t0, false, err);
        c->broken = true;
        return rc;
    }
    c->answer_owed = true;
    return DBS_OK;
}

/* Reads the release statement's results (ok: its first was read without
 * error); see release_sql. */
static int release_read(my_conn *c, bool ok, const char *prefix, bool commit, int64_t t0,
                        dbs_error *err)
{
    int64_t dl = rt_deadline(c, t0);
    int idx = 0;
    long long others = -1;
    while (ok) {
        MYSQL_RES *r = b_store(c, dl);
        if (r) {
            /* the count is the last column of the one result set */
            MYSQL_ROW row = mysql_fetch_row(r);
            unsigned nf = mysql_num_fields(r);
            if (row && nf > 0 && row[nf - 1])
                others = strtoll(row[nf - 1], NULL, 10);
            mysql_free_result(r);
        } else if (mysql_field_count(c->my) != 0) {
            ok = false;
            break;
        }
        int more = b_next(c, dl);
        if (more < 0)
            break;
        idx++;
        ok = more == 0;
    }
    if (!ok) {
        dbs_error local;
        bool first = idx == 0 && prefix;
        int rc = fail_conn(c, t0, commit && first, first ? err : &local);
        if (first)
            return rc;
        c->broken = true; /* the transaction ended; the rest did not run */
        /* with the COMMIT or ROLLBACK, whose answer stands: reported
         * apart (a posted statement's failure is its reader's answer) */
        if (prefix && c->reset_err.code >= 0)
            c->reset_err = local;
        return DBS_OK;
    }
    c->vars_set = false;
    if (others != 0)
        c->dirty = true;
    return DBS_OK;
}

/* COMMIT, and with release, the release statement in the same round trip
 * when the session left nothing that needs the reset anyway. */
static int commit_tx(my_conn *c, bool release, dbs_error *err)
{
    follow_tx(c);
    c->begin_pending = false; /* nothing sent: nothing to commit */
    if (!c->tx_sent)
        return DBS_OK;
    c->tx_sent = false;
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "mariadb: connection is broken");
    if (c->tx_failed) {
        /* Nothing of the transaction may commit: say so, as a deadlock,
         * rather than commit and report success. A ROLLBACK all the same:
         * a deadlock's rollback is InnoDB's, but a 40001 raised by the
         * server's own code (SIGNAL in a trigger or procedure) rolls back
         * nothing, and the transaction left open would be committed by
         * the next START TRANSACTION. A ROLLBACK that fails leaves the
         * connection broken: discarded, which rolls back too. */
        c->tx_failed = false;
        dbs_error rerr;
        if (text(c, "ROLLBACK", 8, false, &rerr) != DBS_OK)
            c->broken = true;
        int rc = dbs__err(err, DBS_ERETRYABLE,
                          "mariadb: COMMIT of a transaction that failed with a deadlock, a "
                          "serialization failure (40001) or a lock wait timeout under "
                          "innodb_rollback_on_timeout: rolled back, nothing was committed");
        dbs__err_sqlstate(err, "40001");
        return rc;
    }
    if (release && !needs_reset(c)) {
        int rc = release_sql(c, "COMMIT", true, false, err);
        if (rc == DBS_OK && !c->broken &&
            atomic_load_explicit(&dbs__fault.fail_release_resets, memory_order_relaxed) > 0 &&
            atomic_fetch_sub(&dbs__fault.fail_release_resets, 1) > 0) {
            /* a test's stand-in for the release statement failing */
            c->broken = true;
            dbs__err(&c->reset_err, DBS_ECONNECT,
                     "mariadb: the release statement after COMMIT failed (injected fault)");
        }
        c->released = rc == DBS_OK && !c->broken && !c->dirty;
        return rc;
    }
    return text(c, "COMMIT", 6, true, err);
}

static int my_reset_failure(void *vc, dbs_error *err)
{
    my_conn *c = vc;
    int rc = c->reset_err.code;
    if (rc >= 0)
        return DBS_OK;
    if (err)
        *err = c->reset_err;
    c->reset_err.code = DBS_OK;
    return rc;
}

static int my_commit(void *vc, dbs_error *err)
{
    return commit_tx(vc, false, err);
}

/* The session's last COMMIT: see release_sql. */
static int my_commit_release(void *vc, dbs_error *err)
{
    return commit_tx(vc, true, err);
}

/* Rolls back now, in a round trip of its own: the transaction's row locks
 * go before dbs_rollback returns, as its contract says, even though a
 * full reset would roll back too (the session may live on for long). */
static int my_rollback(void *vc, dbs_error *err)
{
    my_conn *c = vc;
    follow_tx(c);
    c->begin_pending = false;
    c->tx_failed = false;
    bool open = c->tx_sent || c->rollback_owed;
    c->tx_sent = false;
    c->rollback_owed = false;
    if (!open || c->broken)
        return DBS_OK; /* the server rolls back a lost connection's work */
    return text(c, "ROLLBACK", 8, false, err);
}

/* The rollback of a session that closes right after: under the full reset,
 * when the reset that follows at once in the same release will send
 * COM_RESET_CONNECTION, which rolls back, the ROLLBACK is left to it: one
 * round trip, not two; otherwise the ROLLBACK carries the release
 * statement. */
static int my_rollback_release(void *vc, dbs_error *err)
{
    my_conn *c = vc;
    if (c->t->reset == DBS_RESET_ROLLBACK || c->broken)
        return my_rollback(vc, err);
    follow_tx(c);
    if (!needs_reset(c)) {
        /* No COM_RESET_CONNECTION to leave the rollback to, so far: the
         * ROLLBACK now, with the release statement. */
        c->begin_pending = false;
        c->tx_failed = false;
        bool open = c->tx_sent || c->rollback_owed;
        c->tx_sent = false;
        c->rollback_owed = false;
        if (!open)
            return DBS_OK; /* reset() sends the release statement */
        int rc = release_sql(c, "ROLLBACK", false, false, err);
        c->released = rc == DBS_OK && !c->broken && !c->dirty;
        return rc;
    }
    c->begin_pending = false;
    c->tx_failed = false;
    c->rollback_owed = c->rollback_owed || c->tx_sent;
    c->tx_sent = false;
    return DBS_OK;
}

static int my_reset(void *vc, enum dbs_reset_mode mode, dbs_error *err)
{
    my_conn *c = vc;
    if (c->broken)
        return dbs__err(err, DBS_ECONNECT, "mariadb: connection is broken");
    int src = settle(c, err);
    if (src != DBS_OK)
        return src;
    follow_tx(c); /* the last statement's report */
    bool full = mode != DBS_RESET_ROLLBACK ? needs_reset(c) : c->native_used;
    c->begin_pending = false;
    c->tx_failed = false;
    c->escaped = false;
    c->ctx = NULL;
    c->opt_ro = false;
    c->iso = DBS_ISOLATION_DEFAULT;
    bool owed = c->rollback_owed || c->tx_sent ||
                (c->my->server_status & SERVER_STATUS_IN_TRANS);
    c->tx_sent = false;
    c->rollback_owed = false;
    if (mode == DBS_RESET_ROLLBACK && !full)
        return owed ? text(c, "ROLLBACK", 8, false, err) : DBS_OK;
    if (!full && c->released) {
        /* The release statement ran with the COMMIT or ROLLBACK. */
        c->released = false;
        return owed ? text(c, "ROLLBACK", 8, false, err) : DBS_OK;
    }
    if (!full) {
        /* Every statement of the session succeeded and the server
         * reported no change of session state (note_state): the release
         * statement, in one round trip, instead of COM_RESET_CONNECTION;
         * the reset still runs if it finds state. */
        c->released = false;
        int rc = release_sql(c, owed ? "ROLLBACK" : NULL, false, !owed, err);
        if (rc != DBS_OK || c->broken)
            return rc != DBS_OK ? rc
                                : dbs__err(err, DBS_ECONNECT, "mariadb: connection is broken");
        if (!owed)
            return DBS_OK; /* the answer is read by the next use */
        full = c->dirty;
    }
    c->released = false;
    if (!full)
        return DBS_OK;
    return full_reset(c, err);
}

/* COM_RESET_CONNECTION and what it owes: see the top of the file. */
static int full_reset(my_conn *c, dbs_error *err)
{
    int64_t t0 = dbs__now_ns();
    if (b_reset(c, rt_deadline(c, t0)) != 0) {
        int rc = fail_conn(c, t0, false, err);
        c->broken = true;
        return rc;
    }
    /* The server deallocated our statements with everything else; their
     * handles are dead (Connector/C detached them). */
    cache_clear(c);
    c->vars_set = false;
    c->dirty = false;
    c->session_ro = false;
    c->ro_owed = false;
    c->native_used = false;
    c->role_owed = c->role_sql[0] != '\0';
    c->found_owed = true;
    c->setup_owed = c->setup_sql != NULL; /* the reset put the globals back */
    c->track_owed = c->tracking; /* the reset put the trackers back */
    /* A SET NAMES of the session's (or mysql_set_character_set on the
     * native handle) is undone on the server, but not in Connector/C, which
     * followed the server's report of it (character_set_client is tracked
     * by default) and stays on it: it would escape (mysql_real_escape_string)
     * for gbk while the server reads utf8mb4, or the reverse, the way to an
     * injection through a multi-byte character that swallows a backslash.
     * Connector/C has no way to change its side alone: SET NAMES back to
     * the connection's first character set makes both sides agree by
     * construction. A round trip only when the session changed it. Before
     * COM_CHANGE_USER below, which carries the client's character set. */
    if (c->charset[0] &&
        (c->names_lost || strcmp(mysql_character_set_name(c->my), c->charset) != 0)) {
        t0 = dbs__now_ns();
        if (b_names(c, rt_deadline(c, t0)) != 0) {
            int rc = fail_conn(c, t0, false, err);
            c->broken = true;
            return rc;
        }
    }
    const char *want = c->mt->db;
    const char *now = c->my->db;
    bool same = c->schema_tracked && ((!want && !now) || (want && now && !strcmp(want, now)));
    if (!same) {
        t0 = dbs__now_ns();
        int bad;
        if (want)
            bad = b_select_db(c, want, rt_deadline(c, t0));
        else /* no way to unselect a database but to start over */
            bad = b_change_user(c, rt_deadline(c, t0));
        if (bad) {
            int rc = fail_conn(c, t0, false, err);
            c->broken = true;
            return rc;
        }
        /* COM_CHANGE_USER carried the set the server ignores */
        if (!want && c->names_lost && b_names(c, rt_deadline(c, dbs__now_ns())) != 0) {
            int rc = fail_conn(c, t0, false, err);
            c->broken = true;
            return rc;
        }
    }
    return DBS_OK;
}

/* ---- rows ---- */

static int my_next(dbs_rows *hr, dbs_error *err)
{
    (void)err;
    my_rows *r = (my_rows *)hr;
    if (r->row >= r->nrows) {
        r->row = r->nrows + 1;
        return 0;
    }
    r->row++;
    return 1;
}

static int my_count_cols(dbs_rows *hr)
{
    return ((my_rows *)hr)->ncols;
}

static const char *my_name(dbs_rows *hr, int col)
{
    my_rows *r = (my_rows *)hr;
    return r->arena + r->name_off[col];
}

static const my_cell *cell(const my_rows *r, int col)
{
    if (r->row < 1 || r->row > r->nrows)
        return NULL;
    const my_cell *x = &r->cells[(r->row - 1) * (size_t)r->ncols + (size_t)col];
    return x->kind ? x : NULL;
}

static int my_is_null(dbs_rows *hr, int col)
{
    return cell((my_rows *)hr, col) == NULL;
}

static int64_t my_int(dbs_rows *hr, int col)
{
    my_rows *r = (my_rows *)hr;
    const my_cell *x = cell(r, col);
    if (!x)
        return 0;
    switch (x->kind) {
    case 1: return x->v.i;
    case 2: return (int64_t)x->v.u;
    case 3: return dbs__int64_cut(x->v.r);
    default: {
        const char *s = r->arena + x->v.off;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (*end == '.' || *end == 'e' || *end == 'E')
            return dbs__int64_cut(dbs__strtod(s, NULL));
        return v;
    }
    }
}

static double my_real(dbs_rows *hr, int col)
{
    my_rows *r = (my_rows *)hr;
    const my_cell *x = cell(r, col);
    if (!x)
        return 0.0;
    switch (x->kind) {
    case 1: return (double)x->v.i;
    case 2: return (double)x->v.u;
    case 3: return x->v.r;
    default: return dbs__strtod(r->arena + x->v.off, NULL);
    }
}

static const char *my_text(dbs_rows *hr, int col, size_t *len)
{
    my_rows *r = (my_rows *)hr;
    const my_cell *x = cell(r, col);
    if (!x) {
        if (len)
            *len = 0;
        return NULL;
    }
    int n;
    switch (x->kind) {
    case 1: n = snprintf(r->scratch, sizeof r->scratch, "%lld", (long long)x->v.i); break;
    case 2: n = snprintf(r->scratch, sizeof r->scratch, "%llu", (unsigned long long)x->v.u); break;
    case 3: n = dbs__fmt_double(r->scratch, sizeof r->scratch, x->v.r); break;
    default:
        if (len)
            *len = x->n;
        return r->arena + x->v.off;
    }
    if (len)
        *len = (size_t)n;
    return r->scratch;
}

static const void *my_blob(dbs_rows *hr, int col, size_t *len)
{
    return my_text(hr, col, len);
}

static int my_col_type(dbs_rows *hr, int col)
{
    my_rows *r = (my_rows *)hr;
    return r->ctype ? r->ctype[col] : DBS_TYPE_TEXT;
}

static int my_val_type(dbs_rows *hr, int col)
{
    my_rows *r = (my_rows *)hr;
    const my_cell *x = cell(r, col);
    if (!x)
        return DBS_TYPE_NULL;
    switch (x->kind) {
    case 1: return DBS_TYPE_INT;
    case 2: return x->v.u > (uint64_t)INT64_MAX ? DBS_TYPE_DECIMAL : DBS_TYPE_INT;
    case 3: return DBS_TYPE_REAL;
    default: return my_col_type(hr, col);
    }
}

static int64_t my_affected(dbs_rows *hr)
{
    return ((my_rows *)hr)->affected;
}

static void my_rows_close(dbs_rows *hr)
{
    rows_free((my_rows *)hr);
}

static const dbs__rows_ops my_rows_ops = {
    .next = my_next,
    .count_cols = my_count_cols,
    .name = my_name,
    .is_null = my_is_null,
    .get_int = my_int,
    .get_real = my_real,
    .get_text = my_text,
    .get_blob = my_blob,
    .close = my_rows_close,
    .col_type = my_col_type,
    .val_type = my_val_type,
    .affected = my_affected,
};

const dbs__driver dbs__driver_mysql = {
    .name = "mariadb",
    .target_open = my_target_open,
    .target_close = my_target_close,
    .connect = my_connect,
    .ping = my_ping,
    .begin = my_begin,
    .set_read_only = my_set_read_only,
    .exec = my_exec,
    .query = my_query,
    .commit = my_commit,
    .rollback = my_rollback,
    .rollback_release = my_rollback_release,
    .commit_release = my_commit_release,
    .reset_failure = my_reset_failure,
    .tx_escaped = my_tx_escaped,
    .tx_options = my_tx_options,
    .tx_options_check = my_tx_options_check,
    .reset = my_reset,
    .is_broken = my_is_broken,
    .native = my_native,
    .close = my_close,
    .peek = my_peek,
    .forget = my_forget,
    .interrupt = my_interrupt,
};
