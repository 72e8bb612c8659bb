/* Name lookups within a bound. getaddrinfo has no timeout of its own (the
 * resolver's, from resolv.conf, can reach tens of seconds), and libpq and
 * Connector/C call it inside their connects: so the drivers resolve names
 * here first, within what is left of connect_timeout_ms, and connect by
 * address. Each lookup runs on a detached thread; a caller whose bound
 * passes returns and leaves the lookup behind, which finishes and frees
 * its state on its own (the last of its thread and its callers to let go
 * frees it).
 *
 * A lookup left behind keeps its thread until the resolver gives up, so
 * with DNS silent, one lookup per connect would add a thread per request.
 * The lookups in flight are therefore shared: a connect joins the newest
 * lookup of its host and port; a second one starts beside it only once
 * that one is FRESH_MS old (the DNS may have come back since it was
 * sent), and never more than PER_HOST. Past MAX_LOOKUPS in flight in the
 * process, a connect that would start another fails at once. Results are
 * not kept once a lookup ends: the next connect asks again, as the
 * resolver's own caching allows. */
#include "internal.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

enum { MAX_LOOKUPS = 64, PER_HOST = 2, FRESH_MS = 1000 };

typedef struct lookup {
    struct lookup *next; /* [reg_mu] in flight, in reg */
    pthread_cond_t cv;   /* [reg_mu] broadcast when done */
    int refs;            /* [reg_mu] its thread and its callers */
    bool done;           /* [reg_mu] */
    int rc;              /* getaddrinfo's */
    int sys;             /* errno, for EAI_SYSTEM */
    struct addrinfo *res;
    int64_t started_ns;
    char *host, *port;   /* port: "" for none */
} lookup;

/* One lock for every lookup: held to find, start, join, finish or let go
 * of one, and by the waits on their condition variables; never across
 * getaddrinfo, and no other lock of dbscope is taken under it. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static lookup *reg; /* [reg_mu] in flight, newest first */
static int reg_n;   /* [reg_mu] */
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

/* A child of fork() has none of the lookup threads: what it inherited
 * would be waited on for nothing, and count against MAX_LOOKUPS for good.
 * It starts with none (their memory is left: its waiters are the parent's
 * threads, which the child does not have), and with the lock made anew,
 * since a thread of the parent may have held it. */
static void reg_child(void)
{
    pthread_mutex_init(&reg_mu, NULL);
    reg = NULL;
    reg_n = 0;
}

static void reg_register(void)
{
    pthread_atfork(NULL, NULL, reg_child);
}

static void lookup_free(lookup *l)
{
    if (l->res)
        freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cv);
    free(l->host);
    free(l->port);
    free(l);
}

/* [reg_mu]; true when l is to be freed (after the lock is let go). */
static bool lookup_unref(lookup *l)
{
    return --l->refs == 0;
}

static void *lookup_main(void *arg)
{
    lookup *l = arg;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(l->host, *l->port ? l->port : NULL, &hints, &res);
    int sys = errno;
    pthread_mutex_lock(&reg_mu);
    l->rc = rc;
    l->sys = sys;
    l->res = res;
    l->done = true;
    /* out of reg: a connect from now on asks again */
    for (lookup **pp = &reg; *pp; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            reg_n--;
            break;
        }
    }
    pthread_cond_broadcast(&l->cv);
    bool last = lookup_unref(l);
    pthread_mutex_unlock(&reg_mu);
    if (last)
        lookup_free(l);
    return NULL;
}

/* Sets *out to the lookup of host and port to wait for, with a reference
 * for the caller: the newest in flight, or a new one (see the top of the
 * file). DBS_ECONNECT when MAX_LOOKUPS are in flight. [reg_mu] */
static int lookup_get(const char *host, const char *port, lookup **out, dbs_error *err)
{
    lookup *l = NULL;
    int same = 0;
    for (lookup *x = reg; x; x = x->next) {
        if (strcmp(x->host, host) != 0 || strcmp(x->port, port) != 0)
            continue;
        if (!l)
            l = x;
        same++;
    }
    if (l && same < PER_HOST && dbs__now_ns() - l->started_ns >= (int64_t)FRESH_MS * 1000000)
        l = NULL;
    if (l) {
        l->refs++;
        *out = l;
        return DBS_OK;
    }
    if (reg_n >= MAX_LOOKUPS) {
        /* a few of them, so that the message says which DNS is silent */
        char names[300];
        size_t w = 0;
        int k = 0;
        names[0] = '\0';
        for (lookup *x = reg; x && k < 3 && w < sizeof names; x = x->next, k++)
            w += (size_t)snprintf(names + w, sizeof names - w, "%s\"%.60s\"", k ? ", " : "",
                                  x->host);
        return dbs__err(err, DBS_ECONNECT,
                        "host \"%.200s\" was not looked up: %d name lookups are pending "
                        "already (%s%s), each waiting for the DNS servers' answer; check the "
                        "DNS servers or use addresses", host, reg_n, names,
                        reg_n > k ? ", ..." : "");
    }
    l = calloc(1, sizeof *l);
    if (l) {
        l->host = strdup(host);
        l->port = strdup(port);
    }
    if (!l || !l->host || !l->port) {
        if (l) {
            free(l->host);
            free(l->port);
        }
        free(l);
        return dbs__err(err, DBS_ENOMEM, "out of memory resolving \"%.200s\"", host);
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    l->started_ns = dbs__now_ns();
    l->refs = 2;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t th;
    /* In reg before the thread starts: it takes itself out when done,
     * which waits for reg_mu, held here. */
    l->next = reg;
    reg = l;
    reg_n++;
    int trc = pthread_create(&th, &attr, lookup_main, l);
    pthread_attr_destroy(&attr);
    if (trc != 0) {
        reg = l->next;
        reg_n--;
        lookup_free(l);
        return dbs__err(err, DBS_ENOMEM, "cannot start a thread to resolve \"%.200s\"",
                        host);
    }
    *out = l;
    return DBS_OK;
}

static int no_answer(const char *host, dbs_error *err)
{
    return dbs__err(err, DBS_ECONNECT,
                    "the name lookup of host \"%.200s\" got no answer within the connect "
                    "bound (connect_timeout_ms); check the DNS servers or use an address",
                    host);
}

/* A numeric address needs no lookup and no thread. */
static bool numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int dbs__resolve(const char *host, const char *port, int64_t deadline_ns, char *out,
                 size_t cap, int max_addrs, dbs_error *err)
{
    if (cap == 0)
        return dbs__err(err, DBS_EMISUSE, "dbs__resolve: no room");
    out[0] = '\0';
    if (numeric(host)) {
        snprintf(out, cap, "%s", host);
        return strlen(host) < cap ? DBS_OK
                                  : dbs__err(err, DBS_ECONFIG, "host address too long");
    }
    /* the bound spent (by the hosts before this one): no thread for it */
    if (deadline_ns > 0 && dbs__now_ns() >= deadline_ns)
        return no_answer(host, err);
    pthread_once(&reg_once, reg_register);
    pthread_mutex_lock(&reg_mu);
    lookup *l = NULL;
    int grc = lookup_get(host, port ? port : "", &l, err);
    if (grc != DBS_OK || !l) {
        pthread_mutex_unlock(&reg_mu);
        return grc != DBS_OK ? grc : dbs__err(err, DBS_ENOMEM, "no lookup for \"%.200s\"", host);
    }
    /* On a pool's own thread, the wait also ends when the pool shuts down
     * (dbs__stopping), looked at every DBS__STOP_SLICE_MS. */
    const bool stoppable = dbs__thread_stop != NULL;
    bool stopped = false;
    while (!l->done) {
        if (stoppable && dbs__stopping()) {
            stopped = true;
            break;
        }
        if (deadline_ns <= 0 && !stoppable) {
            pthread_cond_wait(&l->cv, &reg_mu);
            continue;
        }
        int64_t until = deadline_ns;
        if (stoppable) {
            int64_t slice = dbs__now_ns() + (int64_t)DBS__STOP_SLICE_MS * 1000000;
            if (until <= 0 || slice < until)
                until = slice;
        }
        struct timespec ts = dbs__timespec(until);
        if (pthread_cond_timedwait(&l->cv, &reg_mu, &ts) == ETIMEDOUT && !l->done &&
            until == deadline_ns)
            break;
    }
    bool done = l->done;
    int rc = l->rc, sys = l->sys;
    size_t w = 0;
    int n = 0;
    for (struct addrinfo *a = done ? l->res : NULL; a && n < max_addrs; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *src = a->ai_family == AF_INET
                              ? (const void *)&((struct sockaddr_in *)(void *)a->ai_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)(void *)a->ai_addr)->sin6_addr;
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            !inet_ntop(a->ai_family, src, ip, sizeof ip))
            continue;
        /* the same address once (one per socket type asked is one) */
        bool seen = false;
        for (const char *p = out; *p && !seen;) {
            const char *q = strchr(p, ',');
            size_t pl = q ? (size_t)(q - p) : strlen(p);
            seen = pl == strlen(ip) && !strncmp(p, ip, pl);
            p = q ? q + 1 : p + pl;
        }
        if (seen)
            continue;
        size_t il = strlen(ip);
        if (w + il + 2 > cap)
            break;
        if (w)
            out[w++] = ',';
        memcpy(out + w, ip, il + 1);
        w += il;
        n++;
    }
    bool last = lookup_unref(l);
    pthread_mutex_unlock(&reg_mu);
    if (last)
        lookup_free(l);
    if (!done && stopped)
        return dbs__err(err, DBS_ECLOSED,
                        "the name lookup of host \"%.200s\" was abandoned: the pool shut down",
                        host);
    if (!done)
        return no_answer(host, err);
    if (rc != 0)
        return dbs__err(err, DBS_ECONNECT,
                        "cannot resolve host \"%.200s\": %s (check the host name and the "
                        "DNS)", host, rc == EAI_SYSTEM ? strerror(sys) : gai_strerror(rc));
    if (n == 0)
        return dbs__err(err, DBS_ECONNECT, "host \"%.200s\" has no usable address", host);
    return DBS_OK;
}
