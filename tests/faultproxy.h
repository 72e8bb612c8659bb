/* A fault-injecting TCP proxy for tests, in-process: listens on 127.0.0.1
 * (a free port), forwards each connection to 127.0.0.1:target_port, and
 * misbehaves on demand, as a real network does. One thread, poll(). */
#ifndef DBS_TEST_FAULTPROXY_H
#define DBS_TEST_FAULTPROXY_H

#include <stddef.h>

enum fp_mode {
    FP_PASS,    /* forward bytes as they come */
    FP_SILENT,  /* keep every socket open, drop the bytes */
    FP_RESET,   /* reset (RST) every connection, old and new */
    FP_LATENCY, /* forward after latency_ms */
    FP_STALL,   /* read nothing: bytes wait in the kernel's buffers until
                   the sender's write blocks, as on a network that lets
                   no packet through */
    FP_TRICKLE  /* forward one byte every latency_ms: a peer that keeps
                   answering, each byte well within any read timeout, and
                   never finishes an answer in time */
};

/* Directions a mode applies to; the other direction passes. */
enum { FP_UP = 1 /* client to server */, FP_DOWN = 2, FP_BOTH = 3 };

typedef struct faultproxy faultproxy;

/* Starts the proxy; exits the test on failure. */
faultproxy *fp_start(int target_port);
/* The port it listens on. */
int fp_port(const faultproxy *fp);
/* Changes the mode for existing and new connections. */
void fp_set(faultproxy *fp, enum fp_mode mode, int dirs, int latency_ms);
/* Forwards as FP_PASS until the bytes pat (n of them, at most 64) pass in
 * one of dirs within one read, then turns to FP_SILENT for dirs: the bytes
 * up to the end of pat go through, the rest is dropped, as when a network
 * stops at an exact point of a conversation (after one message of an
 * answer that carries several). */
void fp_silent_after(faultproxy *fp, int dirs, const void *pat, size_t n);
/* 1: new connections are accepted and never answered (nothing forwarded,
 * no server behind them); 0: back to forwarding. */
void fp_blackhole(faultproxy *fp, int on);
/* Connections accepted so far. */
int fp_accepted(faultproxy *fp);
/* Closes every socket and stops the thread. */
void fp_stop(faultproxy *fp);

/* A port where nothing answers a connect, as on a host that is down: a
 * listener on each of the n loopback addresses addrs (127.0.0.x), all on
 * that port, whose accept queue is already full, so the SYN of a connect
 * gets no answer and the connect runs until its own timeout. fds (3 * n)
 * receives the sockets to give to fp_dead_close. Exits the test on
 * failure. */
int fp_dead_port(const char *const *addrs, int n, int *fds);
void fp_dead_close(int *fds, int n);

#endif
