/* shiftboard's process: configuration, the pool, the HTTP server
 * (libmicrohttpd, thread-pool mode), request logging and graceful shutdown.
 *
 * Usage: shiftboard [--listen HOST:PORT] [--threads N] [--slots-per-ip N]
 *                   [--max-per-ip N] [--max-connections N] [--hash-memory MIB]
 *                   [--allow-bypassrls]
 *
 * --allow-bypassrls (or SHIFTBOARD_ALLOW_BYPASSRLS=1): start on PostgreSQL
 * even as a role that row-level security does not bind (schema.c).
 *
 * Threads. Every connection has a thread of its own (libmicrohttpd's
 * thread-per-connection mode): a handler that waits on the database holds up
 * its own client and nobody else's, where a shared worker thread would stall
 * every connection it serves, /health included. --threads bounds how many
 * requests run their handlers at once; one that finds no room within
 * SB_QUEUE_WAIT_MS is answered 503; of them, at most max(1, threads/2)
 * are of the routes that hash passwords (hash_routes), and at most
 * --slots-per-ip come from one client address (slot_cap). /health,
 * /metrics and the dashboard bypass that bound: they never wait on the
 * database. Hashes in memory at once are bounded by the machine, not by
 * --threads (hash_permits: the processors, and --hash-memory).
 * Database: DATABASE_URL (default sqlite:shiftboard.db), DB_POOL_* and
 * DB_STATEMENT_TIMEOUT_MS, DB_CONNECT_TIMEOUT_MS; DATABASE_REPLICA_URL
 * (read-only replicas for the GET routes) and DB_REPLICA_MAX_LAG_MS (how far
 * behind a replica may be and still serve them, 1000).
 *
 * Hostile clients. The listening socket is ours: one thread accepts and
 * hands each connection to libmicrohttpd, so a failed accept (out of file
 * descriptors) backs off instead of spinning, and the service recovers by
 * itself once descriptors free up. Connections are bounded in total (from
 * the open-file limit) and per client address, by that thread before
 * libmicrohttpd sees them: past a bound a connection is answered 503 and
 * closed, and when the service is full a newcomer from an address holding
 * fewer connections than the most crowded one gets room by the close of
 * one of that address's connections, idle ones first but whatever their
 * phase, so a flood from some addresses cannot lock others out. A watchdog cuts any
 * connection that has not sent a whole request head within
 * SB_HEAD_TIMEOUT_S of its start (or of its previous answer), trickle or
 * not, and any body not received within SB_BODY_TIMEOUT_S: slow clients
 * cannot hold the service. Repeated log lines are rate-limited. */
/* accept4 and pipe2: the descriptors are born close-on-exec */
#define _GNU_SOURCE
#include "guard.h"
#include "shiftboard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    SB_HEAD_TIMEOUT_S = 10,  /* a whole request head, from connection or last answer */
    SB_BODY_TIMEOUT_S = 30,  /* a whole body, from the request's start */
    SB_READY_TIMEOUT_S = 30, /* the pool's min_idle connections, at start */
    SB_DRAIN_S = 10,         /* shutdown: requests in flight */
    SB_POOL_DRAIN_MS = 3000, /* shutdown: sessions still open after that */
    SB_LATE_MS = 2000,       /* shutdown: handlers begun after the drain */
    SB_LOG_EVERY_S = 10,     /* a repeated log line at most this often */
    SB_QUEUE_WAIT_MS = 2000, /* for room among the --threads running handlers */
    SB_HASH_WAIT_MS = 1000,  /* for a password hashing permit */
    SB_HANDOFF_S = 10,       /* a connection handed over and never started: forgotten */
    SB_ROOM_WAIT_MS = 2000,  /* an admitted connection waits this long for room */
    SB_REPLICA_MAX_LAG_MS = 1000, /* DB_REPLICA_MAX_LAG_MS's default */
};

/* Room among the handlers running at once (--threads). One client address
 * may hold or wait for at most slot_cap of them (--slots-per-ip, by
 * default all but max(1, threads/4); 0: no bound), counted in
 * conn_track.slotted under track_lock: when the database is slow every
 * handler waits on it, and one address with many connections would
 * otherwise hold every slot and every other client would get 503. Its
 * further requests wait in slot_line, within the same SB_QUEUE_WAIT_MS,
 * rather than being refused at once: many clients behind one address
 * (NAT, a load generator) with a fast database would otherwise get 503s
 * while slots are free. The line is first come, first served, and a slot
 * let go is handed to the first waiter of its address directly, so one
 * waiter wakes, not all of them. */
static sem_t handler_slots;
static unsigned slot_cap;
typedef struct slot_waiter {
    struct slot_waiter *next;
    struct conn_track *track;
    pthread_cond_t turn; /* signalled once track->slotted was set for it */
} slot_waiter;
static slot_waiter *slot_line, **slot_line_end = &slot_line; /* guarded by track_lock */
static pthread_condattr_t monotonic_attr; /* monotonic_conds_init */
/* Password hashing (argon2id: tens of ms and 64 MiB each) is bounded
 * twice, each bound a share.
 *
 * hash_routes: the requests of the routes that hash (registration, any
 * login) running their handlers, max(1, threads/2) of them, taken before a
 * handler slot: such requests, which anyone can send, cannot then fill
 * every slot. It is held through the request's database units too, which
 * is why it scales with --threads.
 *
 * hash_permits: the hashes in memory at once, taken around the argon2id
 * call alone (sb_app.hash_enter), no more than the processors (a hash is
 * all CPU: more at once than processors finish no sooner, they only take
 * more memory) nor than fit in --hash-memory. Held through a database unit, a permit let a
 * slow database make logins 503 for want of permits while nothing hashed;
 * scaled with --threads, it let clients take 64 MiB a thread.
 *
 * In each, one client address may hold or wait for at most cap =
 * max(1, permits/2) (conn_track.sharing[], guarded by track_lock; turn is
 * signalled when one is let go), its further requests waiting in a line of
 * their own: permits go to whoever asks most often, so one address asking
 * without pause would otherwise keep every other client's registrations
 * and logins waiting until they are refused. */
enum share_kind { SHARE_ROUTE, SHARE_HASH, SHARE_KINDS };
typedef struct share {
    sem_t permits;
    unsigned cap;
    pthread_cond_t turn; /* monotonic_conds_init */
} share;
static share hash_routes, hash_permits;

static share *share_of(enum share_kind k)
{
    return k == SHARE_ROUTE ? &hash_routes : &hash_permits;
}

static sb_app app;
static atomic_ulong request_seq;
static char id_prefix[9];

/* Requests between their first callback and their completion notice: what
 * shutdown waits for before stopping the daemon, because stopping it closes
 * every connection, answered or not. busy counts those inside a handler,
 * which only the database can hold up. Guarded by drain_lock. */
static pthread_mutex_t drain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drained;
static unsigned in_flight;
static atomic_uint busy;
/* Set once shutdown has begun: answers then carry Connection: close, so
 * keep-alive clients go away instead of holding the drain open. */
static atomic_bool stopping;

/* What one request accumulates across libmicrohttpd's calls; made when its
 * request line arrives (the URI log callback). */
typedef struct conn_state {
    char *body;
    size_t len;
    bool counted;  /* in in_flight */
    bool too_large;
    size_t discarded; /* body bytes read past the limit, thrown away */
    enum sb_uri_verdict uri; /* the raw request target's check */
    struct timespec started;
} conn_state;

/* An oversized body is read and thrown away so that the 413 reaches a
 * client that sends it all before reading (closing on unread data makes
 * the kernel reset the connection, answer included); past this much more,
 * the client is cut off instead. The body deadline bounds how long. */
#define SB_DISCARD_MAX (32 * 1024 * 1024)

/* ---- rate-limited logging ---- */

/* One slot per kind of line (its format string), at most one line per
 * SB_LOG_EVERY_S each: a flood of identical failures (accept with no
 * descriptors left, a client address over its limit) costs a line now and
 * then with a count, not gigabytes of log. Guarded by log_lock. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_slot {
    const char *key;
    time_t last;
    unsigned long suppressed;
} log_slots[32];

static time_t mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec;
}

static void log_limited_v(const char *key, const char *fmt, va_list ap)
{
    time_t now = mono_s();
    unsigned long suppressed = 0;
    pthread_mutex_lock(&log_lock);
    struct log_slot *slot = NULL;
    for (size_t i = 0; i < sizeof log_slots / sizeof *log_slots; i++) {
        if (log_slots[i].key == key || !log_slots[i].key) {
            slot = &log_slots[i];
            break;
        }
    }
    if (!slot)
        slot = &log_slots[(uintptr_t)key % (sizeof log_slots / sizeof *log_slots)];
    if (slot->key == key && now - slot->last < SB_LOG_EVERY_S) {
        slot->suppressed++;
        pthread_mutex_unlock(&log_lock);
        return;
    }
    if (slot->key == key)
        suppressed = slot->suppressed;
    slot->key = key;
    slot->last = now;
    slot->suppressed = 0;
    pthread_mutex_unlock(&log_lock);
    char msg[400];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    char line[600];
    int len;
    if (suppressed)
        len = snprintf(line, sizeof line, "shiftboard: %s (%lu more like it in the last %d s)\n",
                       msg, suppressed, SB_LOG_EVERY_S);
    else
        len = snprintf(line, sizeof line, "shiftboard: %s\n", msg);
    if (len > 0)
        fwrite(line, 1, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1, stderr);
}

static void log_limited(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_limited(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_limited_v(fmt, fmt, ap);
    va_end(ap);
}

static void answer_mhd_error(unsigned status, const char *html);

/* libmicrohttpd's own messages, rate-limited like ours. One of them
 * announces an error answer of its own, which is HTML and, for a bad
 * Content-Length, sent with its head twice: the connection gets ours
 * first (answer_mhd_error). */
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    static const char error_answer[] = "Error processing request (HTTP response code is %u ('%s'))";
    if (!strncmp(fmt, error_answer, sizeof error_answer - 1)) {
        va_list aq;
        va_copy(aq, ap);
        unsigned status = va_arg(aq, unsigned);
        const char *html = va_arg(aq, const char *);
        va_end(aq);
        answer_mhd_error(status, html ? html : "");
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    log_limited_v(fmt, fmt, ap);
#pragma GCC diagnostic pop
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Copies s into out as a logfmt value, quoted unless always is false and s
 * is a plain token. The path arrives percent-decoded and the method is
 * whatever the client sent, so either may hold quotes, spaces, backslashes
 * and newlines: escaped, they cannot forge a field or a whole log line.
 * Cut at out's size (at least 8). */
static void logfmt_value(const char *s, bool always, char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!always && *s && strlen(s) < len &&
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./") ==
            strlen(s)) {
        memcpy(out, s, strlen(s) + 1);
        return;
    }
    size_t o = 0;
    out[o++] = '"';
    for (; *s && o + 6 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
}

/* One logfmt line a request, written whole with one call so lines from
 * concurrent requests never interleave. */
static void log_request(const sb_request *req, int status, double ms)
{
    char ts[32];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char method[40], path[256];
    logfmt_value(req->method, false, method, sizeof method);
    logfmt_value(req->path, true, path, sizeof path);
    char line[512];
    int n = snprintf(line, sizeof line,
                     "time=%s.%03ldZ level=info msg=request request_id=%s user_id=%s "
                     "method=%s path=%s status=%d duration_ms=%.2f\n",
                     ts, now.tv_nsec / 1000000, req->request_id,
                     req->user_id[0] ? req->user_id : "-", method, path, status, ms);
    if (n > 0)
        fwrite(line, 1, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, stderr);
}

/* dbscope's events as logfmt lines beside the requests': the database's
 * notices (PostgreSQL NOTICE and WARNING, which would otherwise reach
 * stderr raw), and what dbscope's own logger would show, leaks and
 * invalidations, with the request id of the session involved. Runs on the
 * thread that caused the event; one write a line. */
static void log_event(const dbs_event *ev, void *user)
{
    (void)user;
    const char *level;
    switch (ev->kind) {
    case DBS_EVENT_NOTICE:
        level = ev->reason && !strncmp(ev->reason, "WARNING", 7) ? "warn" : "info";
        break;
    case DBS_EVENT_LEAK:
        level = "warn";
        break;
    case DBS_EVENT_LEAK_RECOVERED:
    case DBS_EVENT_INVALIDATE:
        level = "info";
        break;
    default:
        return;
    }
    char text[400];
    snprintf(text, sizeof text, "%s", ev->reason ? ev->reason : "");
    /* libpq ends a notice with a newline */
    for (size_t n = strlen(text); n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' '); n--)
        text[n - 1] = '\0';
    char reason[sizeof text * 4 + 8], at[300], site[sizeof at * 4 + 8], request_id[80],
        user_id[48];
    logfmt_value(text, true, reason, sizeof reason);
    if (ev->file)
        snprintf(at, sizeof at, "%s:%d", ev->file, ev->line);
    else
        snprintf(at, sizeof at, "-");
    logfmt_value(at, false, site, sizeof site);
    logfmt_value(ev->ctx && ev->ctx->request_id ? ev->ctx->request_id : "-", false, request_id,
                 sizeof request_id);
    logfmt_value(ev->ctx && ev->ctx->user_id ? ev->ctx->user_id : "-", false, user_id,
                 sizeof user_id);
    char ts[32];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "time=%s.%03ldZ level=%s msg=dbscope event=%s request_id=%s user_id=%s "
                     "conn=%llu site=%s age_ms=%lld reason=%s\n",
                     ts, now.tv_nsec / 1000000, level, ev->name, request_id, user_id,
                     (unsigned long long)ev->conn_id, site, (long long)ev->age_ms, reason);
    if (n > 0)
        fwrite(line, 1, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, stderr);
}

/* ---- connection deadlines ---- */

/* libmicrohttpd's connection timeout restarts with every byte, so a client
 * trickling a header line every few seconds would hold its connection (and
 * with enough of them, every connection) for ever. Each connection's phase
 * and deadline are kept here instead, and a watchdog thread cuts the
 * connections that are past it, whatever they trickle. */
enum phase {
    PHASE_HEAD,  /* waiting for a whole request head */
    PHASE_BODY,  /* head received, body coming */
    PHASE_WRITE, /* answered, libmicrohttpd writing: no deadline of ours */
    PHASE_BUSY   /* in a handler: no deadline of ours */
};

typedef struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    uint32_t addr; /* the client's IPv4 address, network order */
    /* false from the accept until libmicrohttpd's start notice: the
     * descriptor is libmicrohttpd's then, and may be closed (and its number
     * reused) without a notice when it gives up on it, so nothing acts on
     * it; such a track is forgotten after SB_HANDOFF_S. */
    bool started;
    struct timespec born;
    enum phase phase;
    struct timespec deadline;
    bool cut;
    /* its request holds or waits for a permit of hash_routes, of
     * hash_permits */
    bool sharing[SHARE_KINDS];
    bool slotted; /* its request holds or waits for a handler slot */
    /* The request begun on this connection and not yet completed: freed
     * with the connection when libmicrohttpd gave up on it before its
     * completion notice (a request line too big for its memory). Touched
     * only by the connection's own thread. */
    struct conn_state *pending;
} conn_track;

/* The list of open connections, and of those handed to libmicrohttpd and
 * not yet started: what the acceptor counts against --max-connections and
 * --max-per-ip. Guarded by track_lock, which is also held while the
 * watchdog or the acceptor acts on a descriptor: libmicrohttpd closes a
 * socket only after its close notice has unlinked it here, so the
 * descriptor of a started track is never a reused number. */
static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER;
static conn_track track_list = {.prev = &track_list, .next = &track_list};

/* The connection this thread serves (thread-per-connection mode), once a
 * request line has arrived on it (on_uri): what libmicrohttpd's error
 * answer, announced in its log on the same thread, goes to. Valid for the
 * thread's life, which is the connection's. */
static _Thread_local conn_track *own_track;

/* ms from now on CLOCK_MONOTONIC, which every timed wait here measures
 * (monotonic_conds_init, sem_clockwait): a step of the wall clock (NTP,
 * date -s) must neither end a wait at once nor stretch it by the step. */
static struct timespec monotonic_in_ms(int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (ms % 1000) * 1000000L;
    until.tv_sec += ms / 1000 + until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    return until;
}

static pthread_cond_t watch_wake; /* the watchdog's, below */

static void monotonic_conds_init(void)
{
    pthread_condattr_t *a = &monotonic_attr;
    pthread_condattr_init(a);
    pthread_condattr_setclock(a, CLOCK_MONOTONIC);
    pthread_cond_init(&hash_routes.turn, a);
    pthread_cond_init(&hash_permits.turn, a);
    pthread_cond_init(&drained, a);
    pthread_cond_init(&watch_wake, a);
}

static void deadline_in(struct timespec *t, int s)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += s;
}

static bool past(const struct timespec *deadline, const struct timespec *now)
{
    return now->tv_sec > deadline->tv_sec ||
           (now->tv_sec == deadline->tv_sec && now->tv_nsec >= deadline->tv_nsec);
}

static void set_phase(struct MHD_Connection *c, enum phase p, int timeout_s)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = ci ? ci->socket_context : NULL;
    if (!t)
        return;
    pthread_mutex_lock(&track_lock);
    t->phase = p;
    if (timeout_s)
        deadline_in(&t->deadline, timeout_s);
    pthread_mutex_unlock(&track_lock);
}

/* A request's deadline counts from its start, so entering the body phase
 * keeps the time the head took. */
static void set_body_phase(struct MHD_Connection *c, const struct timespec *started)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = ci ? ci->socket_context : NULL;
    if (!t)
        return;
    pthread_mutex_lock(&track_lock);
    t->phase = PHASE_BODY;
    t->deadline = *started;
    t->deadline.tv_sec += SB_BODY_TIMEOUT_S;
    pthread_mutex_unlock(&track_lock);
}

struct conn_state;
static void forget_request(struct conn_state *st);

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode what)
{
    (void)cls;
    if (what == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci)
            return; /* untracked: libmicrohttpd's idle timeout still applies */
        pthread_mutex_lock(&track_lock);
        conn_track *t = NULL;
        for (conn_track *p = track_list.next; p != &track_list; p = p->next) {
            if (!p->started && p->fd == ci->connect_fd) {
                t = p;
                break;
            }
        }
        if (!t) {
            /* handed over so long ago that its track was forgotten */
            t = calloc(1, sizeof *t);
            if (!t) {
                pthread_mutex_unlock(&track_lock);
                return;
            }
            t->fd = ci->connect_fd;
            const union MHD_ConnectionInfo *ai =
                MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
            if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET)
                t->addr = ((const struct sockaddr_in *)(const void *)ai->client_addr)
                              ->sin_addr.s_addr;
            t->prev = track_list.prev;
            t->next = &track_list;
            track_list.prev->next = t;
            track_list.prev = t;
        }
        t->started = true;
        t->phase = PHASE_HEAD;
        deadline_in(&t->deadline, SB_HEAD_TIMEOUT_S);
        pthread_mutex_unlock(&track_lock);
        *socket_context = t;
    } else if (*socket_context) {
        conn_track *t = *socket_context;
        pthread_mutex_lock(&track_lock);
        t->prev->next = t->next;
        t->next->prev = t->prev;
        pthread_mutex_unlock(&track_lock);
        if (t->pending)
            forget_request(t->pending);
        free(t);
        *socket_context = NULL;
    }
}

static const char timeout_answer[] =
    "HTTP/1.1 408 Request Timeout\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Connection: close\r\n"
    "Content-Length: 57\r\n"
    "\r\n"
    "{\"error\":\"the request was not received within its time\"}\n";

/* The most query arguments sure to fit libmicrohttpd's connection memory
 * (64 KiB here); more are refused before it parses them. */
#define SB_ARGS_UNPARSED 256

static const char too_many_args_answer[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Connection: close\r\n"
    "Content-Length: 41\r\n"
    "\r\n"
    "{\"error\":\"more than 64 query arguments\"}\n";

/* A target over SB_MAX_URI with a query, refused on the socket like too
 * many arguments (on_uri): long arguments do not fit either. */
static const char too_long_answer[] =
    "HTTP/1.1 414 URI Too Long\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Connection: close\r\n"
    "Content-Length: 57\r\n"
    "\r\n"
    "{\"error\":\"the request target is longer than 8192 bytes\"}\n";

/* Answers t's client with a canned response and shuts its socket down, which
 * libmicrohttpd sees as the client leaving and closes in its own thread.
 * answer only for connections to which libmicrohttpd is writing nothing
 * (it would interleave with libmicrohttpd's bytes); NULL cuts without one.
 * Called with track_lock held. */
static void cut(conn_track *t, const char *answer, size_t len)
{
    if (t->cut)
        return;
    if (answer)
        (void)!send(t->fd, answer, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(t->fd, SHUT_RDWR);
    t->cut = true;
}

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static bool watch_stop; /* guarded by watch_lock */

/* Every quarter second, cuts the connections past their deadline: a 408
 * (nothing else is being written to them in these phases), then shutdown
 * of the socket, which libmicrohttpd sees as the client leaving and closes
 * in its own thread. */
static void *watchdog(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&watch_lock);
    while (!watch_stop) {
        struct timespec until = monotonic_in_ms(250);
        pthread_cond_timedwait(&watch_wake, &watch_lock, &until);
        if (watch_stop)
            break;
        pthread_mutex_unlock(&watch_lock);
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        unsigned heads = 0, bodies = 0;
        pthread_mutex_lock(&track_lock);
        for (conn_track *t = track_list.next, *next; t != &track_list; t = next) {
            next = t->next;
            if (!t->started) {
                /* libmicrohttpd dropped it before starting it (out of
                 * memory): it no longer counts */
                struct timespec forget = t->born;
                forget.tv_sec += SB_HANDOFF_S;
                if (past(&forget, &now)) {
                    t->prev->next = t->next;
                    t->next->prev = t->prev;
                    free(t);
                }
                continue;
            }
            if (t->cut || (t->phase != PHASE_HEAD && t->phase != PHASE_BODY) ||
                !past(&t->deadline, &now))
                continue;
            cut(t, timeout_answer, sizeof timeout_answer - 1);
            if (t->phase == PHASE_HEAD)
                heads++;
            else
                bodies++;
        }
        pthread_mutex_unlock(&track_lock);
        if (heads)
            log_limited("cut %u connections that sent no whole request head within %d s", heads,
                        SB_HEAD_TIMEOUT_S);
        if (bodies)
            log_limited("cut %u requests whose body did not arrive within %d s", bodies,
                        SB_BODY_TIMEOUT_S);
        pthread_mutex_lock(&watch_lock);
    }
    pthread_mutex_unlock(&watch_lock);
    return NULL;
}

/* ---- accepting ---- */

/* The listening socket and a pipe that wakes the accept thread to stop. */
static int listen_fd = -1;
static int stop_pipe[2] = {-1, -1};

static bool accept_wait(int timeout_ms)
{
    struct pollfd p[2] = {{.fd = stop_pipe[0], .events = POLLIN},
                          {.fd = listen_fd, .events = POLLIN}};
    /* with timeout_ms set, waits on the stop pipe alone: a backing-off
     * accept must not wake for the very connection it cannot take */
    int n = poll(p, timeout_ms >= 0 ? 1 : 2, timeout_ms);
    return !(n > 0 && (p[0].revents & POLLIN));
}

/* What the acceptor answers a connection it cannot take, then closes it. */
static const char full_answer[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Retry-After: 1\r\n"
    "Connection: close\r\n"
    "Content-Length: 52\r\n"
    "\r\n"
    "{\"error\":\"too many connections, retry in a moment\"}\n";
static const char per_ip_answer[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Retry-After: 1\r\n"
    "Connection: close\r\n"
    "Content-Length: 56\r\n"
    "\r\n"
    "{\"error\":\"too many connections from your address open\"}\n";
/* What an idle connection closed to make room for another client is told. */
static const char evicted_answer[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Cache-Control: no-store\r\n"
    "Retry-After: 1\r\n"
    "Connection: close\r\n"
    "Content-Length: 73\r\n"
    "\r\n"
    "{\"error\":\"closed to make room: your address holds the most connections\"}\n";

/* The limits the acceptor enforces, set before it starts. mhd_limit is
 * libmicrohttpd's own connection limit, which the acceptor never lets it
 * reach: its refusal path is not to be trusted (0.9.75 deadlocks in it when
 * connections come through MHD_add_connection in thread-per-connection
 * mode), so every refusal happens here, before libmicrohttpd sees the
 * connection. */
static unsigned max_connections, max_per_ip, mhd_limit;

/* Refuses fd: what the client sent so far is read (closing on unread data
 * would reset the connection and lose the answer), the canned answer is
 * sent without waiting, and the socket closed. */
static void refuse_fd(int fd, const char *answer, size_t len)
{
    sb_dash_http(503); /* every canned answer is a 503 */
    char sink[4096];
    (void)!recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    (void)!send(fd, answer, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    close(fd);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* How many entries of sorted (n of them) equal key. */
static unsigned count_of(const uint32_t *sorted, size_t n, uint32_t key)
{
    const uint32_t *hit = bsearch(&key, sorted, n, sizeof *sorted, cmp_u32);
    if (!hit)
        return 0;
    const uint32_t *lo = hit, *hi = hit;
    while (lo > sorted && lo[-1] == key)
        lo--;
    while (hi + 1 < sorted + n && hi[1] == key)
        hi++;
    return (unsigned)(hi - lo + 1);
}

/* The service is full and a client from an address that holds mine
 * connections wants in: cuts one connection of the address that holds the
 * most, if that address holds at least two more than mine, so that every
 * address keeps its share. Whatever phase that address's connections are
 * in, one of them goes: were only idle ones eligible, a flood that keeps
 * its connections busy (a body trickled within its deadline, an answer read
 * a byte at a time) would keep every other address out for as long as it
 * lasts. Closing is always allowed, the client can retry; the cheapest to
 * lose goes first: one waiting for a request head, then one sending its
 * body, then one whose answer is being written, then one in its handler.
 * Returns whether one was cut. Called with track_lock held. */
static bool make_room(unsigned mine)
{
    size_t n = 0;
    for (conn_track *t = track_list.next; t != &track_list; t = t->next)
        n++;
    uint32_t *addrs = malloc((n ? n : 1) * sizeof *addrs);
    if (!addrs)
        return false;
    size_t k = 0;
    for (conn_track *t = track_list.next; t != &track_list; t = t->next)
        if (!t->cut)
            addrs[k++] = t->addr;
    qsort(addrs, k, sizeof *addrs, cmp_u32);
    conn_track *victim = NULL;
    unsigned most = mine + 1;
    for (conn_track *t = track_list.next; t != &track_list; t = t->next) {
        if (!t->started || t->cut)
            continue;
        unsigned held = count_of(addrs, k, t->addr);
        /* the phases are listed cheapest to lose first */
        if (held > most || (victim && held == most && t->phase < victim->phase)) {
            most = held;
            victim = t;
        }
    }
    free(addrs);
    if (!victim)
        return false;
    /* a connection being answered gets no canned answer of ours: it would
     * interleave with libmicrohttpd's bytes */
    if (victim->phase == PHASE_HEAD || victim->phase == PHASE_BODY)
        cut(victim, evicted_answer, sizeof evicted_answer - 1);
    else
        cut(victim, NULL, 0);
    return true;
}

static unsigned mhd_connections(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i ? i->num_connections : 0;
}

enum admission { ADMIT, WAIT_ROOM, REFUSE_ADDRESS, REFUSE_FULL };

/* Whether a connection from addr may be handed to libmicrohttpd now.
 * libmicrohttpd counts a connection until its thread is joined, after our
 * close notice: its count is at most the tracked connections plus the ones
 * it still counts after their notice, and that sum is kept under its
 * limit. Called with track_lock held. */
static enum admission admission_of(struct MHD_Daemon *d, int fd, uint32_t addr)
{
    unsigned total = 0, leaving = 0, mine = 0;
    for (conn_track *t = track_list.next, *next; t != &track_list; t = next) {
        next = t->next;
        if (!t->started && t->fd == fd) {
            /* the number is ours again: libmicrohttpd closed that one
             * without starting it */
            t->prev->next = t->next;
            t->next->prev = t->prev;
            free(t);
            continue;
        }
        total++;
        leaving += t->cut;
        mine += t->addr == addr && !t->cut;
    }
    if (max_per_ip && mine >= max_per_ip)
        return REFUSE_ADDRESS;
    if (total < max_connections && total + mhd_connections(d) < mhd_limit)
        return ADMIT;
    if (total - leaving < max_connections || make_room(mine))
        return WAIT_ROOM;
    return REFUSE_FULL;
}

/* Hands fd to libmicrohttpd, or refuses it. Returns false when a stop
 * began while it waited for room. */
static bool take(struct MHD_Daemon *d, int fd, struct sockaddr_storage *from,
                 socklen_t len)
{
    uint32_t addr = from->ss_family == AF_INET
                        ? ((const struct sockaddr_in *)(const void *)from)->sin_addr.s_addr
                        : 0;
    conn_track *t = calloc(1, sizeof *t);
    if (!t) {
        refuse_fd(fd, full_answer, sizeof full_answer - 1);
        return true;
    }
    t->fd = fd;
    t->addr = addr;
    for (int waited = 0;; waited += 10) {
        pthread_mutex_lock(&track_lock);
        enum admission a = admission_of(d, fd, addr);
        if (a == ADMIT) {
            clock_gettime(CLOCK_MONOTONIC, &t->born);
            t->prev = track_list.prev;
            t->next = &track_list;
            track_list.prev->next = t;
            track_list.prev = t;
        }
        pthread_mutex_unlock(&track_lock);
        if (a == ADMIT)
            break;
        if (a == REFUSE_ADDRESS || a == REFUSE_FULL || waited >= SB_ROOM_WAIT_MS) {
            free(t);
            refuse_fd(fd, a == REFUSE_ADDRESS ? per_ip_answer : full_answer,
                      a == REFUSE_ADDRESS ? sizeof per_ip_answer - 1 : sizeof full_answer - 1);
            if (a == REFUSE_ADDRESS)
                log_limited("refused a connection: its address holds %u connections already "
                            "(--max-per-ip)", max_per_ip);
            else
                log_limited("refused a connection: %u connections open (--max-connections)",
                            max_connections);
            return true;
        }
        /* the connections cut to make room are closing */
        if (!accept_wait(10)) {
            free(t);
            close(fd);
            return false;
        }
    }
    /* libmicrohttpd closes fd itself when it fails (out of memory) */
    if (MHD_add_connection(d, fd, (struct sockaddr *)from, len) != MHD_YES) {
        pthread_mutex_lock(&track_lock);
        for (conn_track *p = track_list.next; p != &track_list; p = p->next) {
            if (p == t && !p->started) {
                p->prev->next = p->next;
                p->next->prev = p->prev;
                free(p);
                break;
            }
        }
        pthread_mutex_unlock(&track_lock);
    }
    return true;
}

static void *acceptor(void *arg)
{
    struct MHD_Daemon *d = arg;
    int backoff_ms = 0;
    while (accept_wait(backoff_ms ? backoff_ms : -1)) {
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        int fd = accept4(listen_fd, (struct sockaddr *)&from, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* The connection waits in the backlog until descriptors
                 * free up; retry at growing intervals, up to half a second. */
                backoff_ms = backoff_ms ? (backoff_ms * 2 > 500 ? 500 : backoff_ms * 2) : 10;
                log_limited("accept: %s; new connections wait until descriptors free up",
                            strerror(e));
            } else if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED &&
                       e != EPROTO && e != EPERM) {
                log_limited("accept: %s", strerror(e));
                backoff_ms = 100;
            }
            continue;
        }
        backoff_ms = 0;
        if (!take(d, fd, &from, len))
            break;
    }
    return NULL;
}

static int open_listener(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* How many connections the open-file limit leaves room for: each takes a
 * descriptor, and so do the pool's connections (SQLite: the database, its
 * journal and shared-memory files), each HTTP thread (epoll and wake-up
 * descriptors), the listener and standard streams, plus headroom. */
static unsigned connection_budget(const dbs_config *cfg, bool postgres)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1024;
    long db = (long)(cfg->pool_size + cfg->max_overflow) * (postgres ? 1 : 3);
    long reserve = 24 + db;
    long budget = (long)rl.rlim_cur - reserve;
    /* a thread each, too */
    if (budget > 1024)
        budget = 1024;
    return budget > 0 ? (unsigned)budget : 0;
}

/* ---- requests ---- */

static enum MHD_Result respond(struct MHD_Connection *c, const sb_request *req, sb_response *res,
                               const conn_state *st, bool close_after)
{
    /* libmicrohttpd writes from here on: the watchdog must not */
    set_phase(c, PHASE_WRITE, 0);
    char empty[1] = "";
    char *body = res->body ? res->body : empty;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok = MHD_NO;
    if (r) {
        MHD_add_response_header(r, "Content-Type",
                                res->content_type ? res->content_type : "application/json");
        MHD_add_response_header(r, "X-Request-Id", req->request_id);
        MHD_add_response_header(r, "Cache-Control", "no-store");
        if (res->retry_after)
            MHD_add_response_header(r, "Retry-After", res->retry_after);
        if (res->allow)
            MHD_add_response_header(r, "Allow", res->allow);
        if (res->www_authenticate)
            MHD_add_response_header(r, "WWW-Authenticate", res->www_authenticate);
        if (close_after || atomic_load(&stopping))
            MHD_add_response_header(r, "Connection", "close");
        ok = MHD_queue_response(c, (unsigned)res->status, r);
        MHD_destroy_response(r);
    }
    log_request(req, res->status, ms_since(&st->started));
    sb_dash_http(res->status);
    free(res->body);
    res->body = NULL;
    return ok;
}

static void new_request_id(sb_request *req, struct MHD_Connection *c)
{
    /* A caller-supplied id is kept when it is short and plain, so a request
     * can be followed from a proxy's log into ours. */
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given && *given && strlen(given) < sizeof req->request_id &&
        strspn(given, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
            strlen(given)) {
        snprintf(req->request_id, sizeof req->request_id, "%s", given);
        return;
    }
    snprintf(req->request_id, sizeof req->request_id, "%s-%lu", id_prefix,
             atomic_fetch_add(&request_seq, 1) + 1);
}

static sb_request request_of(struct MHD_Connection *c, const char *method, const char *url,
                             const conn_state *st)
{
    sb_request req = {
        .method = method,
        .path = url,
        .query_limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"),
        .query_after = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"),
        .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
        .body = st->body ? st->body : "",
        .body_len = st->len,
    };
    const union MHD_ConnectionInfo *ai =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ai->client_addr)->sin_addr,
                  req.client, sizeof req.client);
    else
        snprintf(req.client, sizeof req.client, "unknown");
    new_request_id(&req, c);
    return req;
}

/* An error answered by this layer, before or instead of the routes. */
static enum MHD_Result refuse(struct MHD_Connection *c, const char *method, const char *url,
                              const conn_state *st, int status, bool close_after,
                              const char *message)
{
    sb_request req = request_of(c, method, url, st);
    sb_response res = {0};
    sb_error(&res, status, "%s", message);
    return respond(c, &req, &res, st, close_after);
}

static enum MHD_Result too_large(struct MHD_Connection *c, const char *method, const char *url,
                                 const conn_state *st)
{
    char msg[64];
    snprintf(msg, sizeof msg, "request body larger than %d bytes", SB_MAX_BODY);
    /* the connection closes after it: the rest of the body is not read */
    return refuse(c, method, url, st, 413, true, msg);
}

/* The framing headers of a request, as counted by count_framing. */
struct framing {
    unsigned lengths, encodings;
    bool chunked; /* the one Transfer-Encoding is "chunked" alone */
    bool spaced;  /* a header name holds whitespace ("Content-Length : 5") */
    bool untoken; /* a header name holds a byte no token may (RFC 9110 5.1) */
    bool folded;  /* a framing header continued on the next line (obs-fold) */
    bool ctl;     /* a header value holds CR, NUL or another control byte */
    bool bad_length; /* a Content-Length that is not digits alone */
};

/* Whether n bytes at s are all decimal digits, at least one: RFC 9112 6.3's
 * 1*DIGIT, without the sign, spaces and lists that strtoull would take. */
static bool all_digits(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    struct framing *f = cls;
    if (strpbrk(key, " \t"))
        f->spaced = true;
    /* libmicrohttpd 0.9.75 appends an obs-fold line (one starting with a
     * space or a tab) to the previous header's name, not its value, so
     * "Content-Length: 2\r\n 0" arrives as a header "Content-Length0" and
     * the body is read as empty, where a proxy that unfolds it (RFC 9112
     * 5.2) or takes the line for a header of its own frames it otherwise.
     * A continuation with a separator in it leaves a name that is no
     * token; one without, a name that merely starts with a framing one. */
    if (strlen(key) != key_size || strspn(key, "!#$%&'*+-.^_`|~0123456789"
                                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                               "abcdefghijklmnopqrstuvwxyz") != key_size)
        f->untoken = true;
    static const char cl[] = MHD_HTTP_HEADER_CONTENT_LENGTH;
    static const char te[] = MHD_HTTP_HEADER_TRANSFER_ENCODING;
    if ((key_size >= sizeof cl && !strncasecmp(key, cl, sizeof cl - 1)) ||
        (key_size >= sizeof te && !strncasecmp(key, te, sizeof te - 1)))
        f->folded = true;
    /* libmicrohttpd ends a line at LF alone and keeps a bare CR in the
     * value ("X: a\rContent-Length: 60" is one header X to it), where
     * other parsers end the line there: refused, as RFC 9112 2.2 allows */
    for (size_t i = 0; value && i < value_size; i++) {
        unsigned char b = (unsigned char)value[i];
        if ((b < 0x20 && b != '\t') || b == 0x7f)
            f->ctl = true;
    }
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        f->lengths++;
        if (!value || !all_digits(value, value_size))
            f->bad_length = true;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->encodings++;
        f->chunked = value && !strcasecmp(value, "chunked");
    }
    return MHD_YES;
}

/* Why the end of c's body could be read in two ways, or NULL. libmicrohttpd
 * takes the first of two Content-Lengths, lets chunked override a
 * Content-Length and keeps the connection open after either, reads a body
 * in a coding it does not know until the client leaves, and takes
 * "Content-Length : 5" for another header (whose name ends in a space),
 * reading no body at all; so it does with a folded framing header, and a
 * bare CR hides a header from it that other parsers see. A proxy in
 * front that frames the body otherwise would forward, as one request's
 * body, bytes that we would answer as a request of their own (request
 * smuggling), so RFC 9112 (2.2, 5.2, 6.1, 6.3) asks for 400 and a close. */
static const char *framing_problem(struct MHD_Connection *c)
{
    struct framing f = {0};
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, count_framing, &f);
    if (f.spaced)
        return "whitespace in a header name";
    if (f.folded || f.untoken)
        return "a header name that is not a token, or a header line folded onto the next";
    if (f.ctl)
        return "a control character (CR, NUL, ...) in a header value";
    if (f.lengths > 1)
        return "more than one Content-Length";
    if (f.encodings && f.lengths)
        return "both Content-Length and Transfer-Encoding";
    if (f.encodings > 1 || (f.encodings && !f.chunked))
        return "a Transfer-Encoding other than chunked alone";
    if (f.bad_length)
        return "a Content-Length that is not digits alone";
    return NULL;
}

/* Called when a request line has arrived, with the target as sent: the
 * request's state starts here, so the checks see the undecoded bytes. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    conn_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    clock_gettime(CLOCK_MONOTONIC, &st->started);
    st->uri = sb_uri_check(uri, NULL);
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *t = sc ? sc->socket_context : NULL;
    if (t)
        t->pending = st;
    own_track = t;
    /* libmicrohttpd parses every query argument into the connection's
     * memory before any handler runs, and a connection whose arguments do
     * not fit there is never answered: refuse those here, on the socket.
     * They are too many, or fewer in a target that fills most of that
     * memory (30 arguments in 64 KB did not fit), which is too long to be
     * served anyway. */
    size_t amps = 0;
    const char *query = strchr(uri, '?');
    for (const char *p = query; p && *p; p++)
        amps += *p == '&';
    bool many = amps >= SB_ARGS_UNPARSED, long_query = query && st->uri == SB_URI_TOO_LONG;
    if (many || long_query) {
        if (t) {
            pthread_mutex_lock(&track_lock);
            if (many)
                cut(t, too_many_args_answer, sizeof too_many_args_answer - 1);
            else
                cut(t, too_long_answer, sizeof too_long_answer - 1);
            pthread_mutex_unlock(&track_lock);
        }
        if (many)
            log_limited("refused a request with %zu query arguments", amps + 1);
        else
            log_limited("refused a request target of more than %d bytes with a query",
                        SB_MAX_URI);
    }
    return st;
}

/* The answers libmicrohttpd gives by itself to what it cannot parse, and
 * ours instead: by its status and a text its HTML holds (NULL: any), our
 * status and error (NULL: the body limit's). */
static const struct {
    unsigned status, answer;
    const char *html_has;
    const char *error;
} mhd_errors[] = {
    {400, 400, "Content-Length", "a Content-Length that is not digits alone"},
    {400, 400, "chunked", "a malformed chunked body"},
    {400, 400, NULL, "a malformed request"},
    /* a length past 2^64, or a chunk's: over the body limit either way */
    {413, 413, NULL, NULL},
    {414, 414, NULL, "the request line does not fit the connection's memory"},
    {431, 431, NULL, "the request head does not fit the connection's memory"},
    /* a chunk's size line (extensions included) that does not fit the
     * connection's memory: the body is read as it comes otherwise, so
     * the client's doing, whatever libmicrohttpd calls it (RFC 9112
     * 7.1.1 asks for a 4xx) */
    {500, 400, NULL, "a chunk size line, with its extensions, longer than the connection's memory"},
    {505, 505, NULL, "an HTTP version other than 1.0 and 1.1"},
};

/* Answers this thread's connection status (libmicrohttpd's choice, about
 * to be sent) in JSON, and shuts its socket, so that libmicrohttpd's own
 * answer fails to go out after ours: its HTML, or a head sent twice. An
 * error before the first request line (one that does not fit the
 * connection's memory) has no connection known here and keeps
 * libmicrohttpd's answer. */
static void answer_mhd_error(unsigned status, const char *html)
{
    conn_track *t = own_track;
    if (!t)
        return;
    size_t i = 0;
    while (i < sizeof mhd_errors / sizeof *mhd_errors &&
           (mhd_errors[i].status != status ||
            (mhd_errors[i].html_has && !strstr(html, mhd_errors[i].html_has))))
        i++;
    unsigned answer = i < sizeof mhd_errors / sizeof *mhd_errors ? mhd_errors[i].answer : status;
    const char *error =
        i < sizeof mhd_errors / sizeof *mhd_errors ? mhd_errors[i].error : "a malformed request";
    const char *reason = MHD_get_reason_phrase_for(answer);
    char body[160], buf[512];
    int blen = error ? snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", error)
                     : snprintf(body, sizeof body,
                                "{\"error\":\"request body larger than %d bytes\"}\n", SB_MAX_BODY);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %u %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Cache-Control: no-store\r\n"
                     "Connection: close\r\n"
                     "Content-Length: %d\r\n"
                     "\r\n"
                     "%s",
                     answer, reason && *reason ? reason : "Error", blen, body);
    if (blen <= 0 || n <= 0 || (size_t)n >= sizeof buf)
        return;
    pthread_mutex_lock(&track_lock);
    bool answered = !t->cut;
    cut(t, buf, (size_t)n);
    pthread_mutex_unlock(&track_lock);
    if (answered)
        sb_dash_http((int)answer);
}

static bool handler_slot(conn_track *self, bool *turn);
static bool sem_wait_until(sem_t *s, const struct timespec *until);

/* Takes *at out of slot_line. Called with track_lock held. */
static void slot_line_remove(slot_waiter **at)
{
    *at = (*at)->next;
    if (!*at)
        slot_line_end = at;
}

/* Marks t's request as one that holds or waits for a handler slot once its
 * address has fewer than slot_cap such requests, waiting in slot_line until
 * `until` for that: false if it did not come. An untracked connection, and
 * every one with slot_cap 0, is bounded by the slots alone. t as for
 * share_claim. */
static bool slot_claim(conn_track *t, const struct timespec *until)
{
    if (!t || !slot_cap)
        return true;
    pthread_mutex_lock(&track_lock);
    unsigned mine = 0;
    for (conn_track *p = track_list.next; p != &track_list; p = p->next)
        mine += p->slotted && p->addr == t->addr;
    if (mine < slot_cap) {
        t->slotted = true;
        pthread_mutex_unlock(&track_lock);
        return true;
    }
    slot_waiter w = {.track = t};
    pthread_cond_init(&w.turn, &monotonic_attr);
    *slot_line_end = &w;
    slot_line_end = &w.next;
    while (!t->slotted && pthread_cond_timedwait(&w.turn, &track_lock, until) != ETIMEDOUT)
        ;
    /* handed a claim, it was taken out of the line by whoever let it go */
    if (!t->slotted) {
        slot_waiter **at = &slot_line;
        while (*at != &w)
            at = &(*at)->next;
        slot_line_remove(at);
    }
    bool ok = t->slotted;
    pthread_mutex_unlock(&track_lock);
    pthread_cond_destroy(&w.turn);
    return ok;
}

/* Lets t's claim go: to the first request of its address in slot_line, if
 * one waits, which keeps the address's count as it was. */
static void slot_unclaim(conn_track *t)
{
    if (!t || !t->slotted)
        return;
    pthread_mutex_lock(&track_lock);
    t->slotted = false;
    for (slot_waiter **at = &slot_line; *at; at = &(*at)->next) {
        slot_waiter *w = *at;
        if (w->track->addr == t->addr) {
            slot_line_remove(at);
            w->track->slotted = true;
            pthread_cond_signal(&w->turn);
            break;
        }
    }
    pthread_mutex_unlock(&track_lock);
}

/* Marks t's request as one that holds or waits for a permit of share k
 * once its address has fewer than that share's cap such requests, waiting
 * until `until` for that: false if it did not come. An untracked
 * connection is bounded by the permits alone. t is the calling
 * connection's own, valid until its close notice, which comes on this
 * thread after the request. */
static bool share_claim(enum share_kind k, conn_track *t, const struct timespec *until)
{
    share *sh = share_of(k);
    if (!t)
        return true;
    pthread_mutex_lock(&track_lock);
    for (;;) {
        unsigned mine = 0;
        for (conn_track *p = track_list.next; p != &track_list; p = p->next)
            mine += p->sharing[k] && p->addr == t->addr;
        if (mine < sh->cap) {
            t->sharing[k] = true;
            break;
        }
        if (pthread_cond_timedwait(&sh->turn, &track_lock, until) == ETIMEDOUT)
            break;
    }
    bool ok = t->sharing[k];
    pthread_mutex_unlock(&track_lock);
    return ok;
}

static void share_unclaim(enum share_kind k, conn_track *t)
{
    share *sh = share_of(k);
    if (!t)
        return;
    pthread_mutex_lock(&track_lock);
    t->sharing[k] = false;
    pthread_cond_broadcast(&sh->turn);
    pthread_mutex_unlock(&track_lock);
}

/* Its address's turn at the shares of k, then a permit, both within
 * SB_HASH_WAIT_MS; res answered 503 when either did not come. */
static bool share_take(enum share_kind k, conn_track *t, sb_response *res)
{
    share *sh = share_of(k);
    struct timespec until = monotonic_in_ms(SB_HASH_WAIT_MS);
    if (!share_claim(k, t, &until)) {
        res->retry_after = "1";
        sb_error(res, 503,
                 "server busy: %u password %s from your address in progress, retry later",
                 sh->cap, k == SHARE_ROUTE ? "checks" : "hashes");
        return false;
    }
    if (!sem_wait_until(&sh->permits, &until)) {
        share_unclaim(k, t);
        res->retry_after = "1";
        sb_error(res, 503, "server busy: too many password %s in progress, retry later",
                 k == SHARE_ROUTE ? "checks" : "hashes");
        return false;
    }
    return true;
}

static void share_give(enum share_kind k, conn_track *t)
{
    sem_post(&share_of(k)->permits);
    share_unclaim(k, t);
}

static bool hash_enter(sb_request *req, sb_response *res)
{
    if (share_take(SHARE_HASH, req->conn, res))
        return true;
    atomic_fetch_add(&app.hash_refused, 1);
    return false;
}

static void hash_leave(sb_request *req)
{
    share_give(SHARE_HASH, req->conn);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **state)
{
    (void)cls;
    (void)version;
    conn_state *st = *state;
    if (!st) { /* out of memory in on_uri */
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &st->started);
        *state = st;
    }
    if (!st->counted) {
        st->counted = true;
        pthread_mutex_lock(&drain_lock);
        in_flight++;
        pthread_mutex_unlock(&drain_lock);
        set_body_phase(c, &st->started);
        if (st->uri != SB_URI_OK)
            return refuse(c, method, url, st, sb_uri_status(st->uri), false,
                          sb_uri_message(st->uri));
        const char *framing = framing_problem(c);
        if (framing)
            return refuse(c, method, url, st, 400, true, framing);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > SB_MAX_BODY) {
            st->too_large = true;
            /* a client waiting for "100 Continue" gets the 413 instead and
             * never sends the body (libmicrohttpd sends 100 only when no
             * answer is queued by now); so does one announcing more than
             * would be read and discarded */
            const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
            if ((expect && !strcasecmp(expect, "100-continue")) ||
                strtoull(cl, NULL, 10) > SB_MAX_BODY + (unsigned long long)SB_DISCARD_MAX)
                return too_large(c, method, url, st);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!st->too_large && st->len + *upload_size <= SB_MAX_BODY) {
            char *b = realloc(st->body, st->len + *upload_size + 1);
            if (!b)
                return MHD_NO;
            memcpy(b + st->len, upload, *upload_size);
            st->body = b;
            st->len += *upload_size;
            b[st->len] = '\0';
        } else {
            st->too_large = true;
            st->discarded += *upload_size;
            /* counted over the whole body, kept part included: the chunk
             * that crossed the limit is thrown away whole, so the bytes
             * thrown away alone would cut a body announced at exactly the
             * most that on_request lets through */
            if (st->len + st->discarded > SB_MAX_BODY + (size_t)SB_DISCARD_MAX)
                return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    set_phase(c, PHASE_BUSY, 0);
    if (st->too_large)
        return too_large(c, method, url, st);

    /* HEAD is GET without the body: libmicrohttpd sends the head alone */
    bool head = !strcmp(method, MHD_HTTP_METHOD_HEAD);
    sb_request req = request_of(c, head ? MHD_HTTP_METHOD_GET : method, url, st);
    sb_response res = {0};
    bool bounded = strcmp(url, "/health") && strcmp(url, "/metrics") && strcmp(url, "/") &&
                   strcmp(url, "/api/pool");
    /* the routes that run argon2id (app.c: create_user, login) wait for a
     * permit of hash_routes first, holding no handler slot meanwhile, and
     * no more than its cap of them from one address; the hash itself waits
     * for one of hash_permits (hash_enter) */
    bool hashes = !strcmp(req.method, MHD_HTTP_METHOD_POST) &&
                  (!strcmp(req.path, "/api/users") || !strcmp(req.path, "/api/login"));
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_track *self = sc ? sc->socket_context : NULL;
    req.conn = self;
    bool turn = true; /* its address's turn at the slots came (handler_slot) */
    if (hashes && !share_take(SHARE_ROUTE, self, &res)) {
        /* answered */
    } else if (bounded && !handler_slot(self, &turn)) {
        res.retry_after = "1";
        if (turn) {
            sb_error(&res, 503, "server busy: %u requests in progress, retry later",
                     atomic_load(&busy));
        } else {
            atomic_fetch_add(&app.share_refused, 1);
            log_limited("refused a request: its address held its %u handler slots "
                        "(--slots-per-ip) for %d ms", slot_cap, SB_QUEUE_WAIT_MS);
            sb_error(&res, 503,
                     "server busy: %u requests from your address in progress, retry later",
                     slot_cap);
        }
        if (hashes)
            share_give(SHARE_ROUTE, self);
    } else {
        atomic_fetch_add(&busy, 1);
        sb_handle(&app, &req, &res);
        atomic_fetch_sub(&busy, 1);
        if (bounded) {
            sem_post(&handler_slots);
            slot_unclaim(self);
        }
        if (hashes)
            share_give(SHARE_ROUTE, self);
    }
    req.method = method;
    return respond(c, &req, &res, st, false);
}

/* Frees a request's state and takes it off the drain's count. */
static void forget_request(struct conn_state *st)
{
    bool counted = st->counted;
    free(st->body);
    free(st);
    if (counted) {
        pthread_mutex_lock(&drain_lock);
        if (--in_flight == 0)
            pthread_cond_broadcast(&drained);
        pthread_mutex_unlock(&drain_lock);
    }
}

/* Takes one of s, waiting until `until` for it. */
static bool sem_wait_until(sem_t *s, const struct timespec *until)
{
    while (sem_clockwait(s, CLOCK_MONOTONIC, until) != 0)
        if (errno != EINTR)
            return false;
    return true;
}

/* Waits up to SB_QUEUE_WAIT_MS for room among the running handlers: for
 * its address's turn (slot_claim), then for a slot, within one bound.
 * *turn says whether the turn came. */
static bool handler_slot(conn_track *self, bool *turn)
{
    struct timespec until = monotonic_in_ms(SB_QUEUE_WAIT_MS);
    *turn = slot_claim(self, &until);
    if (!*turn)
        return false;
    if (sem_wait_until(&handler_slots, &until))
        return true;
    slot_unclaim(self);
    return false;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)why;
    conn_state *st = *state;
    const union MHD_ConnectionInfo *sc =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (sc && sc->socket_context)
        ((conn_track *)sc->socket_context)->pending = NULL;
    if (st) {
        forget_request(st);
        *state = NULL;
    }
    /* a kept-alive connection has the head timeout again for its next request */
    set_phase(c, PHASE_HEAD, SB_HEAD_TIMEOUT_S);
}

/* Waits until no request is in flight, or until deadline_s have passed: a
 * client that never finishes sending its body must not stall the shutdown
 * for ever. Returns the requests still in flight. */
static unsigned drain(int deadline_s)
{
    struct timespec until = monotonic_in_ms(deadline_s * 1000);
    pthread_mutex_lock(&drain_lock);
    /* a loop: wakeups may be spurious, and a request may start and end
     * between the broadcast and our turn at the lock */
    while (in_flight > 0 && pthread_cond_timedwait(&drained, &drain_lock, &until) == 0)
        ;
    unsigned left = in_flight;
    pthread_mutex_unlock(&drain_lock);
    return left;
}

static int parse_listen(const char *arg, struct sockaddr_in *addr)
{
    const char *colon = strrchr(arg, ':');
    if (!colon)
        return -1;
    char host[64];
    size_t hl = (size_t)(colon - arg);
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, arg, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -1;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((uint16_t)port);
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof host, "127.0.0.1");
    return inet_pton(AF_INET, host, &addr->sin_addr) == 1 ? 0 : -1;
}

/* The stop signals, blocked in every thread and taken only by sigwait in
 * main. Blocked before the first thread starts (the pool's housekeeper,
 * libmicrohttpd's workers), since threads inherit the mask: a stop signal
 * can then never land in a thread that would merely set a flag. */
static sigset_t stop_signals;

static void block_stop_signals(void)
{
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    /* a client that hangs up mid-response is a failed write, not a death */
    signal(SIGPIPE, SIG_IGN);
}

/* Creates the schema, retrying for a while when the database is not up yet
 * (a container starting beside it). Returns 0 when done, 1 when a stop
 * signal ended the wait, -1 on failure. */
static int create_schema(void)
{
    dbs_error err;
    int rc = DBS_OK;
    for (int attempt = 0; attempt < 30; attempt++) {
        rc = sb_schema(&app, &err);
        if (rc == DBS_OK || (rc != DBS_ECONNECT && rc != DBS_EUNAVAILABLE &&
                             rc != DBS_ETIMEOUT))
            break;
        fprintf(stderr, "shiftboard: database not reachable yet (%s); retrying\n", err.message);
        struct timespec second = {.tv_sec = 1};
        if (sigtimedwait(&stop_signals, NULL, &second) > 0) {
            fprintf(stderr, "shiftboard: stopped before the schema was ready\n");
            return 1;
        }
    }
    if (rc != DBS_OK) {
        /* DBS_ECONFIG: refused, not failed (a role that bypasses RLS) */
        fprintf(stderr, "shiftboard: %s%s\n", rc == DBS_ECONFIG ? "" : "creating the schema: ",
                err.message);
        return -1;
    }
    return 0;
}

/* Waits until the pool holds its min_idle connections (DB_POOL_MIN_IDLE;
 * at least one), so that the first requests after "listening" do not all
 * connect at once; a second at a time, so that a stop signal is heard.
 * Returns 0 when ready, 1 when a stop signal ended the wait, -1 on
 * failure. */
static int wait_ready(void)
{
    dbs_error err;
    int rc = DBS_OK;
    for (int second = 0; second < SB_READY_TIMEOUT_S; second++) {
        rc = dbs_pool_wait_ready(app.pool, 1000, &err);
        if (rc == DBS_OK || rc == DBS_ECONFIG || rc == DBS_ECLOSED)
            break;
        struct timespec none = {0};
        if (sigtimedwait(&stop_signals, NULL, &none) > 0) {
            fprintf(stderr, "shiftboard: stopped before the pool was ready\n");
            return 1;
        }
    }
    if (rc != DBS_OK) {
        fprintf(stderr, "shiftboard: the pool is not ready: %s\n", err.message);
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: shiftboard [--listen HOST:PORT] [--threads N] [--slots-per-ip N] "
            "[--max-per-ip N] [--max-connections N] [--hash-memory MIB] "
            "[--allow-bypassrls]\n"
            "  DATABASE_URL  sqlite:FILE, postgresql://... or mariadb://... "
            "(default sqlite:shiftboard.db)\n"
            "  DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_MIN_IDLE, DB_POOL_TIMEOUT, ...: see "
            "docs/pool.md\n"
            "  DB_STATEMENT_TIMEOUT_MS (5000), DB_CONNECT_TIMEOUT_MS (3000)\n"
            "  DATABASE_REPLICA_URL  replicas for the GET routes; DB_REPLICA_MAX_LAG_MS (1000)\n");
}

/* The processors this process may run on (its affinity: taskset, a
 * cpuset), at least one. */
static unsigned processors(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return (unsigned)CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* The least memory limit set on cgroup dir (under base, in file) and on
 * its ancestors, in bytes; 0: none set or readable. */
static unsigned long long cgroup_least(const char *base, const char *dir, const char *file)
{
    char path[4400];
    int root = snprintf(path, sizeof path, "%s", base);
    snprintf(path + root, sizeof path - (size_t)root, "%s", dir);
    unsigned long long least = 0;
    for (;;) {
        size_t len = strlen(path);
        snprintf(path + len, sizeof path - len, "/%s", file);
        FILE *m = fopen(path, "re");
        path[len] = '\0';
        char value[64], *end;
        if (m && fgets(value, sizeof value, m)) {
            unsigned long long v = strtoull(value, &end, 10);
            if (end != value && (*end == '\n' || !*end) && v && (!least || v < least))
                least = v;
        }
        if (m)
            fclose(m);
        char *slash = strrchr(path, '/');
        if (!slash || slash - path < root)
            return least;
        *slash = '\0';
    }
}

/* The memory limit of the process's cgroup, v2 (memory.max) or v1
 * (memory.limit_in_bytes), ancestors included, in bytes; 0: none. A
 * container's limit is what the OOM killer enforces, whatever the machine
 * has. */
static unsigned long long cgroup_memory_max(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return 0;
    unsigned long long least = 0;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *ctl = strchr(line, ':'), *dir = ctl ? strchr(ctl + 1, ':') : NULL;
        if (!dir)
            continue;
        *dir++ = '\0';
        unsigned long long v = 0;
        if (!strcmp(ctl, ":"))
            v = cgroup_least("/sys/fs/cgroup", dir, "memory.max");
        else if (strstr(ctl, "memory"))
            v = cgroup_least("/sys/fs/cgroup/memory", dir, "memory.limit_in_bytes");
        if (v && (!least || v < least))
            least = v;
    }
    fclose(f);
    return least;
}

/* How many password hashes of per_hash bytes may be in memory at once:
 * no more than the processors (a hash is all CPU: more at once only take
 * more memory, and finish no sooner), nor than fit in mib MiB (0: an
 * eighth of the memory the process may use, the machine's or its
 * cgroup's; the processors alone if that is unknown); one at least, or
 * nobody could log in. */
static unsigned hash_permit_count(size_t per_hash, unsigned mib)
{
    unsigned long long budget = (unsigned long long)mib << 20;
    if (!mib) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        unsigned long long mem = pages > 0 && page > 0 ? (unsigned long long)pages *
                                                             (unsigned long long)page
                                                       : 0;
        unsigned long long limit = cgroup_memory_max();
        if (limit && (!mem || limit < mem))
            mem = limit;
        budget = mem / 8;
    }
    unsigned n = processors();
    unsigned long long fit = per_hash && budget ? budget / per_hash : n;
    if (fit < n)
        n = (unsigned)fit;
    return n ? n : 1;
}

static bool parse_count(const char *arg, long lo, long hi, unsigned *out)
{
    char *end;
    errno = 0;
    long n = strtol(arg, &end, 10);
    if (!*arg || *end || errno || n < lo || n > hi)
        return false;
    *out = (unsigned)n;
    return true;
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:8080";
    unsigned threads = 8, per_ip = 256, max_conns = 0, slots_per_ip = 0, hash_mib = 0;
    bool slots_given = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
            listen_at = argv[++i];
        } else if (!strcmp(argv[i], "--allow-bypassrls")) {
            app.allow_bypassrls = true;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (!parse_count(argv[++i], 1, 4096, &threads)) {
                fprintf(stderr, "shiftboard: --threads must be 1..4096\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--slots-per-ip") && i + 1 < argc) {
            if (!parse_count(argv[++i], 0, 4096, &slots_per_ip)) {
                fprintf(stderr, "shiftboard: --slots-per-ip must be 0 (no limit) to 4096\n");
                return 2;
            }
            slots_given = true;
        } else if (!strcmp(argv[i], "--max-per-ip") && i + 1 < argc) {
            if (!parse_count(argv[++i], 0, 1000000, &per_ip)) {
                fprintf(stderr, "shiftboard: --max-per-ip must be 0 (no limit) or more\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--hash-memory") && i + 1 < argc) {
            if (!parse_count(argv[++i], 1, 16777216, &hash_mib)) {
                fprintf(stderr, "shiftboard: --hash-memory must be 1..16777216 (MiB), got "
                                "\"%s\"\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--max-connections") && i + 1 < argc) {
            if (!parse_count(argv[++i], 1, 1000000, &max_conns)) {
                fprintf(stderr, "shiftboard: --max-connections must be 1 or more\n");
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    struct sockaddr_in addr;
    if (parse_listen(listen_at, &addr) != 0) {
        fprintf(stderr, "shiftboard: --listen wants HOST:PORT with an IPv4 address, got \"%s\"\n",
                listen_at);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "shiftboard: libsodium failed to initialise\n");
        return 1;
    }
    /* Password hashing cost: argon2id at libsodium's interactive level;
     * SHIFTBOARD_PWHASH=min is for tests under sanitizers only,
     * SHIFTBOARD_PWHASH=slow (seconds a hash, in little memory) for the
     * test that the hashing bound leaves room to the other requests, and
     * SHIFTBOARD_PWHASH=brief (a tenth of a second or so, in little
     * memory) for the test that hashes at once stay within their bound. */
    const char *cost = getenv("SHIFTBOARD_PWHASH");
    bool cheap = cost && !strcmp(cost, "min");
    bool slow = cost && !strcmp(cost, "slow");
    bool brief = cost && !strcmp(cost, "brief");
    app.pwhash_ops = cheap   ? crypto_pwhash_OPSLIMIT_MIN
                     : slow  ? 4000000
                     : brief ? 40000
                             : crypto_pwhash_OPSLIMIT_INTERACTIVE;
    app.pwhash_mem = cheap || slow || brief ? crypto_pwhash_MEMLIMIT_MIN
                                            : crypto_pwhash_MEMLIMIT_INTERACTIVE;
    const char *allow = getenv("SHIFTBOARD_ALLOW_BYPASSRLS");
    if (allow && !strcmp(allow, "1"))
        app.allow_bypassrls = true;
    uint32_t r = randombytes_random();
    snprintf(id_prefix, sizeof id_prefix, "%08x", r);
    block_stop_signals();

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = "sqlite:shiftboard.db";
    cfg.name = "shiftboard";
    /* A web request should fail with 503 in seconds, not hang, when the
     * pool is exhausted or the database is away or silent: these bound
     * the wait for a connection, each connect, and each round trip. */
    cfg.acquire_timeout_ms = 2000;
    cfg.connect_timeout_ms = 3000;
    cfg.statement_timeout_ms = 5000;
    /* SQLite: each wait for another connection's write lock. dbs_transact
     * tries a unit 4 times (retry_max), so a file another process keeps
     * locked costs a write about 4 s of a handler slot, not 4 waits of the
     * library's 5 s; our own writes hold the lock for milliseconds. */
    cfg.busy_timeout_ms = 1000;
    cfg.leak_threshold_ms = 10000;
    /* PostgreSQL: the context as transaction-local settings, which the
     * row-level security policy reads (schema.c) */
    cfg.ctx_request_setting = "app.request_id";
    cfg.ctx_user_setting = "app.user_id";
    /* dbscope's events go to our log in our format (log_event), notices
     * from the database included */
    cfg.on_event = log_event;
    cfg.log_events = 0;
    dbs_error err;
    /* DB_POOL_*, DB_STATEMENT_TIMEOUT_MS, DB_CONNECT_TIMEOUT_MS, ...: the
     * library reads them over the defaults above, and names a bad one */
    if (dbs_config_from_env(&cfg, &err) != DBS_OK) {
        fprintf(stderr, "shiftboard: %s\n", err.message);
        return 2;
    }
    app.mariadb = !strncmp(cfg.url, "mysql://", 8) || !strncmp(cfg.url, "mariadb://", 10);
    app.postgres = strncmp(cfg.url, "sqlite:", 7) != 0 && !app.mariadb;
    unsigned budget = connection_budget(&cfg, app.postgres || app.mariadb);
    if (!max_conns)
        max_conns = budget;
    if (max_conns < 4) {
        fprintf(stderr,
                "shiftboard: room for only %u connections (open-file limit less the pool's "
                "descriptors); raise ulimit -n or lower DB_POOL_SIZE, DB_MAX_OVERFLOW\n",
                max_conns);
        return 1;
    }
    unsigned rl_entries = SB_RL_DEFAULT_ENTRIES;
    const char *rl = getenv("SHIFTBOARD_RATE_LIMIT_ENTRIES");
    if (rl && !parse_count(rl, 64, 16777216, &rl_entries)) {
        fprintf(stderr, "shiftboard: SHIFTBOARD_RATE_LIMIT_ENTRIES must be 64 to 16777216, "
                        "got \"%s\"\n", rl);
        return 2;
    }
    if (sb_rl_init(rl_entries) != 0) {
        fprintf(stderr, "shiftboard: out of memory for the guessing limits' table\n");
        return 1;
    }
    monotonic_conds_init();
    sem_init(&handler_slots, 0, threads);
    /* below the slot count (but one at least): with every permit taken,
     * the other requests still find slots */
    unsigned routes = threads / 2 ? threads / 2 : 1;
    sem_init(&hash_routes.permits, 0, routes);
    hash_routes.cap = routes / 2 ? routes / 2 : 1;
    unsigned permits = hash_permit_count(app.pwhash_mem, hash_mib);
    sem_init(&hash_permits.permits, 0, permits);
    hash_permits.cap = permits / 2 ? permits / 2 : 1;
    app.hash_permits = permits;
    app.hash_enter = hash_enter;
    app.hash_leave = hash_leave;
    /* by default a quarter of the slots (one at least) is always left to
     * the other addresses, and one address alone (a busy office behind
     * NAT) still gets the rest; with one slot there is nothing to share */
    unsigned reserve = threads / 4 ? threads / 4 : 1;
    slot_cap = slots_given ? slots_per_ip : threads > reserve ? threads - reserve : 1;
    /* GET routes read on the replicas, never from one more than
     * DB_REPLICA_MAX_LAG_MS behind (dbscope's default, 0, has no bound) */
    cfg.replica_url = getenv("DATABASE_REPLICA_URL");
    cfg.replica_max_lag_ms = SB_REPLICA_MAX_LAG_MS;
    const char *lag = getenv("DB_REPLICA_MAX_LAG_MS");
    unsigned lag_ms;
    if (lag) {
        /* 0, dbscope's "no bound", would let reads see data of any age */
        if (!parse_count(lag, 1, 60000, &lag_ms)) {
            fprintf(stderr,
                    "shiftboard: DB_REPLICA_MAX_LAG_MS must be milliseconds from 1 to 60000 "
                    "(how far behind a replica may be and still serve reads), got \"%s\"\n",
                    lag);
            return 2;
        }
        cfg.replica_max_lag_ms = (int)lag_ms;
    }
    app.pool = dbs_pool_open(&cfg, &err);
    if (!app.pool) {
        fprintf(stderr, "shiftboard: %s\n", err.message);
        return 1;
    }
    int schema = create_schema();
    if (schema == 0)
        schema = wait_ready();
    if (schema != 0) {
        dbs_pool_close(app.pool);
        return schema > 0 ? 0 : 1;
    }
    if (sb_dash_start(app.pool) != 0) {
        fprintf(stderr, "shiftboard: cannot start the dashboard's sampler thread\n");
        dbs_pool_close(app.pool);
        return 1;
    }

    listen_fd = open_listener(&addr);
    if (listen_fd < 0 || pipe2(stop_pipe, O_CLOEXEC) != 0) {
        fprintf(stderr, "shiftboard: cannot listen on %s: %s\n", listen_at, strerror(errno));
        dbs_pool_close(app.pool);
        return 1;
    }
    /* the acceptor refuses past these, libmicrohttpd never has to */
    max_connections = max_conns;
    max_per_ip = per_ip;
    mhd_limit = 2 * max_conns + 16;
    /* Requests may carry up to SB_MAX_ARGS query arguments and an 8 KiB
     * target: each argument takes room in the connection's memory, which
     * therefore is larger than libmicrohttpd's 32 KiB default. */
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
            MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET,
        0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)SB_BODY_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "shiftboard: cannot start the HTTP server: %s\n", strerror(errno));
        close(listen_fd);
        dbs_pool_close(app.pool);
        return 1;
    }
    pthread_t acc, wd;
    if (pthread_create(&wd, NULL, watchdog, NULL) != 0 ||
        pthread_create(&acc, NULL, acceptor, d) != 0) {
        fprintf(stderr, "shiftboard: cannot start threads\n");
        return 1;
    }
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, host, sizeof host);
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    getsockname(listen_fd, (struct sockaddr *)&bound, &blen);
    printf("shiftboard: listening on http://%s:%u/ (database: %s; at most %u connections, %u "
           "per client address)\n",
           host, ntohs(bound.sin_port),
           app.postgres ? "postgresql" : app.mariadb ? "mariadb" : cfg.url, max_conns, per_ip);
    fflush(stdout);

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;

    /* Stop accepting (closing the listener: new connections are refused),
     * let the requests in flight finish and their answers go out, within
     * bounds; close the pool to new sessions and give the open ones a last
     * bound; then stop the daemon (which closes the idle keep-alive
     * connections and joins its threads) and close the pool. A handler
     * still stuck after all that is stuck in the database beyond every
     * bound: the process leaves without joining it. */
    fprintf(stderr, "shiftboard: %s received, shutting down\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&stopping, true);
    (void)!write(stop_pipe[1], "x", 1);
    pthread_join(acc, NULL);
    close(listen_fd);
    unsigned left = drain(SB_DRAIN_S);
    if (left)
        fprintf(stderr, "shiftboard: %u requests still unfinished after %d s\n", left, SB_DRAIN_S);
    int open_sessions = dbs_pool_shutdown(app.pool, left ? SB_POOL_DRAIN_MS : 0);
    pthread_mutex_lock(&watch_lock);
    watch_stop = true;
    pthread_cond_signal(&watch_wake);
    pthread_mutex_unlock(&watch_lock);
    pthread_join(wd, NULL);
    /* A request that came on a kept-alive connection after the drain is
     * in a handler now, but finds the pool shut down and ends at once
     * (DBS_ECLOSED, answered 503): only a handler still inside after a
     * moment is stuck in the database. (One such late request made the
     * process leave with status 1 under load.) */
    struct timespec late = monotonic_in_ms(SB_LATE_MS), now;
    while (atomic_load(&busy) && clock_gettime(CLOCK_MONOTONIC, &now) == 0 &&
           (now.tv_sec < late.tv_sec || (now.tv_sec == late.tv_sec && now.tv_nsec < late.tv_nsec)))
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    unsigned stuck = atomic_load(&busy);
    if (stuck) {
        fprintf(stderr,
                "shiftboard: stopped with %u requests stuck in the database (%d sessions open); "
                "not waiting for them\n",
                stuck, open_sessions);
        fflush(stderr);
        _exit(1);
    }
    MHD_stop_daemon(d);
    close(stop_pipe[0]);
    close(stop_pipe[1]);
    sb_dash_stop();
    dbs_stats st;
    dbs_pool_stats(app.pool, &st);
    dbs_pool_close(app.pool);
    fprintf(stderr, "shiftboard: stopped; %llu sessions served, %d still out\n",
            (unsigned long long)st.acquired, st.in_use);
    return 0;
}
