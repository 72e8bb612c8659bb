/* Name lookups within a bound. getaddrinfo has no timeout of its own (the
 * resolver's, from resolv.conf, can reach tens of seconds), and libpq and
 * Connector/C call it inside their connects: so the drivers resolve names
 * here first, within what is left of connect_timeout_ms, and connect by
 * address. Each lookup runs on a detached thread; a caller whose bound
 * passes returns and leaves the lookup behind, which finishes and frees
 * its state on its own (the last of the two to let go frees it). */
#include "internal.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

typedef struct lookup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;          /* the caller and the thread */
    bool done;
    int rc;            /* getaddrinfo's */
    int sys;           /* errno, for EAI_SYSTEM */
    struct addrinfo *res;
    char *host, *port;
} lookup;

static void lookup_unref(lookup *l)
{
    pthread_mutex_lock(&l->mu);
    bool last = --l->refs == 0;
    pthread_mutex_unlock(&l->mu);
    if (!last)
        return;
    if (l->res)
        freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->host);
    free(l->port);
    free(l);
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
    int rc = getaddrinfo(l->host, l->port, &hints, &res);
    int sys = errno;
    pthread_mutex_lock(&l->mu);
    l->rc = rc;
    l->sys = sys;
    l->res = res;
    l->done = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    return NULL;
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
    lookup *l = calloc(1, sizeof *l);
    if (!l)
        return dbs__err(err, DBS_ENOMEM, "out of memory resolving \"%.200s\"", host);
    l->host = strdup(host);
    l->port = port && *port ? strdup(port) : NULL;
    if (!l->host || (port && *port && !l->port)) {
        free(l->host);
        free(l->port);
        free(l);
        return dbs__err(err, DBS_ENOMEM, "out of memory resolving \"%.200s\"", host);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    l->refs = 2;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t th;
    int trc = pthread_create(&th, &attr, lookup_main, l);
    pthread_attr_destroy(&attr);
    if (trc != 0) {
        l->refs = 1;
        lookup_unref(l);
        return dbs__err(err, DBS_ENOMEM, "cannot start a thread to resolve \"%.200s\"", host);
    }
    /* On a pool's own thread, the wait also ends when the pool shuts down
     * (dbs__stopping), looked at every DBS__STOP_SLICE_MS. */
    const bool stoppable = dbs__thread_stop != NULL;
    bool stopped = false;
    pthread_mutex_lock(&l->mu);
    while (!l->done) {
        if (stoppable && dbs__stopping()) {
            stopped = true;
            break;
        }
        if (deadline_ns <= 0 && !stoppable) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        int64_t until = deadline_ns;
        if (stoppable) {
            int64_t slice = dbs__now_ns() + (int64_t)DBS__STOP_SLICE_MS * 1000000;
            if (until <= 0 || slice < until)
                until = slice;
        }
        struct timespec ts = dbs__timespec(until);
        if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT && !l->done &&
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
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    if (!done && stopped)
        return dbs__err(err, DBS_ECLOSED,
                        "the name lookup of host \"%.200s\" was abandoned: the pool shut down",
                        host);
    if (!done)
        return dbs__err(err, DBS_ECONNECT,
                        "the name lookup of host \"%.200s\" got no answer within the "
                        "connect bound (connect_timeout_ms); check the DNS servers or use "
                        "an address", host);
    if (rc != 0)
        return dbs__err(err, DBS_ECONNECT,
                        "cannot resolve host \"%.200s\": %s (check the host name and the "
                        "DNS)", host, rc == EAI_SYSTEM ? strerror(sys) : gai_strerror(rc));
    if (n == 0)
        return dbs__err(err, DBS_ECONNECT, "host \"%.200s\" has no usable address", host);
    return DBS_OK;
}
