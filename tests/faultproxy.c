/* See faultproxy.h. The thread owns every socket; the test thread only sets
 * the mode (under mu) and wakes the thread through a pipe. */
#define _GNU_SOURCE /* memmem */
#include "faultproxy.h"

#include "check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#define FP_MAXCONN 64

typedef struct fp_chunk {
    struct fp_chunk *next;
    long long due_ms;
    size_t n;
    char data[];
} fp_chunk;

typedef struct fp_pair {
    int fd[2];               /* 0 client, 1 server (-1: blackholed) */
    fp_chunk *q[2], *tail[2]; /* delayed bytes, by direction of travel */
} fp_pair;

struct faultproxy {
    int listen_fd, wake[2], port, target_port;
    pthread_t th;
    pthread_mutex_t mu;
    /* [mu] */
    enum fp_mode mode;
    int dirs, latency_ms, blackhole, stop, accepted;
    int after_dirs;          /* fp_silent_after: armed while > 0 */
    size_t after_n;
    char after_pat[64];
    /* the thread's own */
    fp_pair pairs[FP_MAXCONN];
    int n_pairs;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rst_close(int fd)
{
    if (fd < 0)
        return;
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        /* MSG_NOSIGNAL: a peer that went away is EPIPE, not SIGPIPE */
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the peer went: the read side notices */
        p += w;
        n -= (size_t)w;
    }
}

static void pair_close(faultproxy *fp, int i, int rst)
{
    fp_pair *pr = &fp->pairs[i];
    for (int d = 0; d < 2; d++) {
        if (rst)
            rst_close(pr->fd[d]);
        else if (pr->fd[d] >= 0)
            close(pr->fd[d]);
        while (pr->q[d]) {
            fp_chunk *c = pr->q[d];
            pr->q[d] = c->next;
            free(c);
        }
    }
    fp->pairs[i] = fp->pairs[--fp->n_pairs];
}

static int connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void *fp_main(void *arg)
{
    faultproxy *fp = arg;
    char buf[65536];
    for (;;) {
        pthread_mutex_lock(&fp->mu);
        enum fp_mode mode = fp->mode;
        int dirs = fp->dirs, latency = fp->latency_ms, hole = fp->blackhole;
        int stop = fp->stop;
        int after_dirs = fp->after_dirs;
        size_t after_n = fp->after_n;
        char after_pat[64];
        memcpy(after_pat, fp->after_pat, sizeof after_pat);
        pthread_mutex_unlock(&fp->mu);
        if (stop)
            break;
        if (mode == FP_RESET)
            while (fp->n_pairs > 0)
                pair_close(fp, 0, 1);
        /* deliver delayed bytes that are due */
        long long now = mono_ms(), next_due = -1;
        for (int i = 0; i < fp->n_pairs; i++)
            for (int d = 0; d < 2; d++) {
                fp_pair *pr = &fp->pairs[i];
                while (pr->q[d] && pr->q[d]->due_ms <= now) {
                    fp_chunk *c = pr->q[d];
                    pr->q[d] = c->next;
                    if (pr->fd[1 - d] >= 0)
                        write_all(pr->fd[1 - d], c->data, c->n);
                    free(c);
                }
                if (pr->q[d] && (next_due < 0 || pr->q[d]->due_ms < next_due))
                    next_due = pr->q[d]->due_ms;
            }
        struct pollfd pfd[2 + 2 * FP_MAXCONN];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = fp->wake[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = fp->listen_fd, .events = POLLIN};
        for (int i = 0; i < fp->n_pairs; i++)
            for (int d = 0; d < 2; d++) {
                int stalled = mode == FP_STALL && (dirs & (d == 0 ? FP_UP : FP_DOWN));
                /* a stalled side is not polled at all: a hang-up there
                 * is not read either */
                pfd[n++] = (struct pollfd){.fd = stalled ? -1 : fp->pairs[i].fd[d],
                                           .events = POLLIN};
            }
        int timeout = next_due < 0 ? -1 : (int)(next_due - now > 0 ? next_due - now : 0);
        if (poll(pfd, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char x[64];
            (void)!read(fp->wake[0], x, sizeof x);
        }
        /* Existing connections first: pfd indexes match pairs until one
         * closes, so stop at the first close and poll again. */
        int closed = 0;
        for (int i = 0; i < fp->n_pairs && !closed; i++)
            for (int d = 0; d < 2 && !closed; d++) {
                short re = pfd[2 + 2 * i + d].revents;
                if (!(re & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                fp_pair *pr = &fp->pairs[i];
                ssize_t r = read(pr->fd[d], buf, sizeof buf);
                if (r <= 0) {
                    pair_close(fp, i, 0);
                    closed = 1;
                    break;
                }
                int dir = d == 0 ? FP_UP : FP_DOWN;
                int applies = (dirs & dir) != 0;
                if (pr->fd[1 - d] < 0 || (applies && mode == FP_SILENT))
                    continue; /* dropped */
                const char *hit = (after_dirs & dir) && mode == FP_PASS
                                      ? memmem(buf, (size_t)r, after_pat, after_n)
                                      : NULL;
                if (hit) {
                    /* this far, then silence, for this read's rest too */
                    write_all(pr->fd[1 - d], buf, (size_t)(hit - buf) + after_n);
                    pthread_mutex_lock(&fp->mu);
                    fp->mode = mode = FP_SILENT;
                    fp->dirs = dirs = after_dirs;
                    fp->after_dirs = after_dirs = 0;
                    pthread_mutex_unlock(&fp->mu);
                    continue;
                }
                if (applies && mode == FP_TRICKLE && latency > 0) {
                    /* a chunk per byte, each latency_ms after the last */
                    long long due = pr->q[d] ? pr->tail[d]->due_ms : mono_ms();
                    for (ssize_t k = 0; k < r; k++) {
                        fp_chunk *c = malloc(sizeof *c + 1);
                        if (!c)
                            break;
                        c->next = NULL;
                        c->due_ms = due += latency;
                        c->n = 1;
                        c->data[0] = buf[k];
                        if (pr->q[d])
                            pr->tail[d]->next = c;
                        else
                            pr->q[d] = c;
                        pr->tail[d] = c;
                    }
                    continue;
                }
                if (applies && mode == FP_LATENCY && latency > 0) {
                    fp_chunk *c = malloc(sizeof *c + (size_t)r);
                    if (!c)
                        continue;
                    c->next = NULL;
                    c->due_ms = mono_ms() + latency;
                    c->n = (size_t)r;
                    memcpy(c->data, buf, (size_t)r);
                    if (pr->q[d])
                        pr->tail[d]->next = c;
                    else
                        pr->q[d] = c;
                    pr->tail[d] = c;
                    continue;
                }
                write_all(pr->fd[1 - d], buf, (size_t)r);
            }
        if (!closed && (pfd[1].revents & POLLIN)) {
            int cfd = accept(fp->listen_fd, NULL, NULL);
            if (cfd >= 0) {
                /* the mode as of now, not as of the poll */
                pthread_mutex_lock(&fp->mu);
                fp->accepted++;
                mode = fp->mode;
                hole = fp->blackhole;
                pthread_mutex_unlock(&fp->mu);
                if (mode == FP_RESET || fp->n_pairs == FP_MAXCONN) {
                    rst_close(cfd);
                } else {
                    int sfd = hole ? -1 : connect_target(fp->target_port);
                    if (!hole && sfd < 0) {
                        rst_close(cfd);
                    } else {
                        fp->pairs[fp->n_pairs++] =
                            (fp_pair){.fd = {cfd, sfd}, .q = {NULL, NULL}};
                    }
                }
            }
        }
    }
    while (fp->n_pairs > 0)
        pair_close(fp, 0, 0);
    return NULL;
}

faultproxy *fp_start(int target_port)
{
    faultproxy *fp = calloc(1, sizeof *fp);
    CHECK(fp != NULL);
    fp->target_port = target_port;
    fp->mode = FP_PASS;
    fp->dirs = FP_BOTH;
    pthread_mutex_init(&fp->mu, NULL);
    CHECK(pipe(fp->wake) == 0);
    fcntl(fp->wake[0], F_SETFL, O_NONBLOCK);
    fp->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fp->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fp->listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fp->listen_fd, 16) == 0);
    socklen_t al = sizeof a;
    CHECK(getsockname(fp->listen_fd, (struct sockaddr *)&a, &al) == 0);
    fp->port = ntohs(a.sin_port);
    CHECK(pthread_create(&fp->th, NULL, fp_main, fp) == 0);
    return fp;
}

int fp_port(const faultproxy *fp)
{
    return fp->port;
}

static void wake(faultproxy *fp)
{
    (void)!write(fp->wake[1], "x", 1);
}

void fp_set(faultproxy *fp, enum fp_mode mode, int dirs, int latency_ms)
{
    pthread_mutex_lock(&fp->mu);
    fp->mode = mode;
    fp->dirs = dirs;
    fp->latency_ms = latency_ms;
    fp->after_dirs = 0;
    pthread_mutex_unlock(&fp->mu);
    wake(fp);
}

void fp_silent_after(faultproxy *fp, int dirs, const void *pat, size_t n)
{
    CHECK(n > 0 && n <= sizeof fp->after_pat);
    pthread_mutex_lock(&fp->mu);
    fp->mode = FP_PASS;
    memcpy(fp->after_pat, pat, n);
    fp->after_n = n;
    fp->after_dirs = dirs;
    pthread_mutex_unlock(&fp->mu);
    wake(fp);
}

void fp_blackhole(faultproxy *fp, int on)
{
    pthread_mutex_lock(&fp->mu);
    fp->blackhole = on;
    pthread_mutex_unlock(&fp->mu);
    wake(fp);
}

int fp_accepted(faultproxy *fp)
{
    pthread_mutex_lock(&fp->mu);
    int n = fp->accepted;
    pthread_mutex_unlock(&fp->mu);
    return n;
}

void fp_stop(faultproxy *fp)
{
    pthread_mutex_lock(&fp->mu);
    fp->stop = 1;
    pthread_mutex_unlock(&fp->mu);
    wake(fp);
    pthread_join(fp->th, NULL);
    close(fp->listen_fd);
    close(fp->wake[0]);
    close(fp->wake[1]);
    pthread_mutex_destroy(&fp->mu);
    free(fp);
}

/* Binds addrs[i]:port (port 0: any) into fds[i]; false when one is taken. */
static int dead_bind(const char *const *addrs, int n, int port, int *fds)
{
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(fds[i] >= 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        CHECK(inet_pton(AF_INET, addrs[i], &a.sin_addr) == 1);
        if (bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0) {
            CHECK(errno == EADDRINUSE);
            for (int j = 0; j <= i; j++)
                close(fds[j]);
            return 0;
        }
        /* backlog 0: the queue is full with its first connection */
        CHECK(listen(fds[i], 0) == 0);
        if (port == 0) {
            socklen_t al = sizeof a;
            CHECK(getsockname(fds[i], (struct sockaddr *)&a, &al) == 0);
            port = ntohs(a.sin_port);
        }
    }
    return port;
}

int fp_dead_port(const char *const *addrs, int n, int *fds)
{
    int port = 0;
    for (int tries = 0; tries < 50 && !port; tries++)
        port = dead_bind(addrs, n, 0, fds);
    CHECK(port != 0);
    /* Two connects of our own that nobody accepts fill each queue (the
     * second waits for a SYN-ACK that never comes, as the caller's will). */
    for (int i = 0; i < n; i++)
        for (int k = 1; k <= 2; k++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            CHECK(fd >= 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
            CHECK(inet_pton(AF_INET, addrs[i], &a.sin_addr) == 1);
            CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0 || errno == EINPROGRESS);
            if (k == 1) { /* established before the second one's SYN */
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                CHECK(poll(&p, 1, 10000) == 1);
            }
            fds[k * n + i] = fd;
        }
    return port;
}

void fp_dead_close(int *fds, int n)
{
    for (int i = 0; i < 3 * n; i++)
        close(fds[i]);
}
