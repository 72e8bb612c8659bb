/* What the dashboard shows beyond the pool's snapshot: a ring of
 * one-second samples the server keeps from its start (so a page opened
 * during an incident shows what led to it), windowed acquire-wait
 * percentiles from the pool's histogram, the HTTP answers by class, and
 * the sessions held right now, longest first. */
#include "shiftboard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 600    /* ten minutes of one-second samples */
#define WINDOWS 61  /* wait histograms of the last minute, a second apart */
#define HELD_MAX 100

typedef struct sample {
    long long seq;
    long long t_ms;          /* wall clock, ms since the epoch: the time axis */
    double dt_s;             /* seconds since the sample before */
    unsigned long long acquired;   /* cumulative, the pool's */
    unsigned long long sessions;   /* acquired since the sample before */
    long long wait_p50_us, wait_p99_us, wait_max_us; /* this second's; -1: none */
    int size, in_use, idle, waiting;
    unsigned long long errors, timeouts, unavailable; /* since the sample before */
    unsigned long long http, http_5xx, http_503;      /* since the sample before */
    int circuit;
    long long replica_lag_ms;
    /* the sample as JSON, rendered once when taken: a request for the
     * history copies these, where building and printing 600 objects each
     * time cost about 15 ms of CPU on routes that take no handler slot */
    size_t text_len; /* 0: could not be rendered, left out */
    char text[1024]; /* its longest spelling (every number at its widest) is under 700 bytes */
} sample;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, started;
    pthread_t thread;
    dbs_pool *pool;
    sample ring[RING];
    long long next_seq; /* seq of the next sample; ring[seq % RING] */
    dbs_histogram win[WINDOWS]; /* win[seq % WINDOWS]: the wait histogram at sample seq */
} d = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_ullong http_all, http_5xx, http_503;

void sb_dash_http(int status)
{
    atomic_fetch_add(&http_all, 1);
    if (status >= 500)
        atomic_fetch_add(&http_5xx, 1);
    if (status == 503)
        atomic_fetch_add(&http_503, 1);
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The sampler's previous readings. */
typedef struct prev {
    double t;
    unsigned long long acquired, errors, timeouts, unavailable, http, h5xx, h503;
} prev;

static json_t *sample_json(const sample *s);

static void take(prev *pv, dbs_histogram *h)
{
    dbs_stats st;
    dbs_pool_stats(d.pool, &st);
    int hrc = dbs_pool_histogram(d.pool, DBS_HIST_WAIT, h);
    double now = mono_s();
    unsigned long long errors = dbs_pool_errors(d.pool, 0, NULL);
    unsigned long long all = atomic_load(&http_all), h5 = atomic_load(&http_5xx),
                       h503 = atomic_load(&http_503);
    pthread_mutex_lock(&d.mu);
    long long seq = d.next_seq++;
    sample *s = &d.ring[seq % RING];
    memset(s, 0, sizeof *s);
    s->seq = seq;
    s->t_ms = wall_ms();
    s->dt_s = seq ? now - pv->t : 0;
    s->acquired = st.acquired;
    s->sessions = seq ? st.acquired - pv->acquired : 0;
    const dbs_histogram *before = seq ? &d.win[(seq - 1) % WINDOWS] : NULL;
    s->wait_p50_us = seq && hrc == DBS_OK ? dbs_histogram_percentile(h, before, 0.50) : -1;
    s->wait_p99_us = seq && hrc == DBS_OK ? dbs_histogram_percentile(h, before, 0.99) : -1;
    s->wait_max_us = seq && hrc == DBS_OK ? dbs_histogram_percentile(h, before, 1.0) : -1;
    s->size = st.size;
    s->in_use = st.in_use;
    s->idle = st.idle;
    s->waiting = st.waiting;
    if (seq) {
        s->errors = errors - pv->errors;
        s->timeouts = st.timeouts - pv->timeouts;
        s->unavailable = st.unavailable - pv->unavailable;
        s->http = all - pv->http;
        s->http_5xx = h5 - pv->h5xx;
        s->http_503 = h503 - pv->h503;
    }
    s->circuit = dbs_pool_circuit(d.pool);
    s->replica_lag_ms = st.replica_lag_ms;
    json_t *j = sample_json(s);
    size_t n = j ? json_dumpb(j, s->text, sizeof s->text, JSON_COMPACT) : 0;
    json_decref(j);
    s->text_len = n <= sizeof s->text ? n : 0;
    d.win[seq % WINDOWS] = *h;
    pthread_mutex_unlock(&d.mu);
    *pv = (prev){now, st.acquired, errors, st.timeouts, st.unavailable, all, h5, h503};
}

static void *sampler(void *arg)
{
    (void)arg;
    /* SHIFTBOARD_SAMPLE_MS: another interval, for the test that fills the
     * ring in seconds only */
    const char *every = getenv("SHIFTBOARD_SAMPLE_MS");
    long step_ms = every && atol(every) > 0 && atol(every) <= 1000 ? atol(every) : 1000;
    prev pv = {0};
    dbs_histogram *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&d.mu);
    while (!d.stop) {
        pthread_mutex_unlock(&d.mu);
        take(&pv, h);
        pthread_mutex_lock(&d.mu);
        next.tv_nsec += step_ms * 1000000L;
        next.tv_sec += next.tv_nsec / 1000000000L;
        next.tv_nsec %= 1000000000L;
        while (!d.stop && pthread_cond_timedwait(&d.cv, &d.mu, &next) == 0)
            ;
    }
    pthread_mutex_unlock(&d.mu);
    free(h);
    return NULL;
}

int sb_dash_start(dbs_pool *pool)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d.cv, &ca);
    pthread_condattr_destroy(&ca);
    d.pool = pool;
    if (pthread_create(&d.thread, NULL, sampler, NULL) != 0)
        return -1;
    d.started = true;
    return 0;
}

void sb_dash_stop(void)
{
    if (!d.started)
        return;
    pthread_mutex_lock(&d.mu);
    d.stop = true;
    pthread_cond_signal(&d.cv);
    pthread_mutex_unlock(&d.mu);
    pthread_join(d.thread, NULL);
    d.started = false;
}

static const char *circuit_name(int c)
{
    return c == DBS_CIRCUIT_OPEN ? "open" : c == DBS_CIRCUIT_HALF_OPEN ? "half_open" : "closed";
}

static json_t *ms_or_null(long long us)
{
    return us < 0 ? json_null() : json_real((double)us / 1000.0);
}

static json_t *sample_json(const sample *s)
{
    return json_pack(
        "{sI sI sf sI sI sf so so so si si si si sI sI sI sI sI sI ss sI}", "seq",
        (json_int_t)s->seq, "t", (json_int_t)s->t_ms, "dt", s->dt_s, "acquired",
        (json_int_t)s->acquired, "sessions", (json_int_t)s->sessions, "rate",
        s->dt_s > 0 ? (double)s->sessions / s->dt_s : -1.0, "wait_p50_ms",
        ms_or_null(s->wait_p50_us), "wait_p99_ms", ms_or_null(s->wait_p99_us), "wait_max_ms",
        ms_or_null(s->wait_max_us), "size", s->size, "in_use", s->in_use, "idle", s->idle,
        "waiting", s->waiting, "errors", (json_int_t)s->errors, "timeouts",
        (json_int_t)s->timeouts, "unavailable", (json_int_t)s->unavailable, "answers",
        (json_int_t)s->http, "answers_5xx", (json_int_t)s->http_5xx, "answers_503",
        (json_int_t)s->http_503, "circuit", circuit_name(s->circuit), "replica_lag_ms",
        (json_int_t)s->replica_lag_ms);
}

static void held_one(const dbs_session_info *in, void *user)
{
    json_t *arr = user;
    if (json_array_size(arr) >= HELD_MAX)
        return;
    char site[300];
    snprintf(site, sizeof site, "%s:%d", in->file ? in->file : "?", in->line);
    /* the file as the compiler named it: keep its last two parts */
    const char *short_site = site;
    int slashes = 0;
    for (const char *q = site + strlen(site); q > site; q--)
        if (q[-1] == '/' && ++slashes == 2) {
            short_site = q;
            break;
        }
    /* No user_id: these routes answer anyone who can reach the service,
     * and who is using it now is no one else's business; the request id
     * leads an operator to the log line, which names the user. */
    json_t *o = json_pack("{sI ss ss ss? si si ss}", "age_ms", (json_int_t)in->age_ms, "site",
                          short_site, "func", in->func ? in->func : "?", "request_id",
                          in->ctx.request_id, "in_transaction", in->in_transaction,
                          "leak_reported", in->leak_reported, "target",
                          in->target ? in->target : "primary");
    if (o)
        json_array_append_new(arr, o);
}

json_t *sb_dash_json(dbs_pool *pool, long long after, char **history)
{
    *history = NULL;
    json_t *o = json_object();
    json_t *held = json_array();
    char *hist = malloc(2 + RING * (sizeof d.ring[0].text + 1));
    if (!o || !held || !hist) {
        json_decref(o);
        json_decref(held);
        free(hist);
        return NULL;
    }
    long long p10 = -1, p60 = -1;
    pthread_mutex_lock(&d.mu);
    long long last = d.next_seq - 1;
    /* after is the client's number: compare without adding to it */
    long long first = last - RING + 1;
    if (after >= last)
        first = last + 1;
    else if (after >= first)
        first = after + 1;
    if (first < 0)
        first = 0;
    size_t len = 0;
    hist[len++] = '[';
    for (long long q = first; q <= last; q++) {
        const sample *sm = &d.ring[q % RING];
        if (!sm->text_len)
            continue;
        if (len > 1)
            hist[len++] = ',';
        memcpy(hist + len, sm->text, sm->text_len);
        len += sm->text_len;
    }
    hist[len++] = ']';
    hist[len] = '\0';
    /* windowed percentiles: the last 10 and 60 seconds */
    if (last >= 1) {
        long long b10 = last >= 10 ? last - 10 : 0, b60 = last >= 60 ? last - 60 : 0;
        p10 = dbs_histogram_percentile(&d.win[last % WINDOWS], &d.win[b10 % WINDOWS], 0.99);
        p60 = dbs_histogram_percentile(&d.win[last % WINDOWS], &d.win[b60 % WINDOWS], 0.99);
    }
    pthread_mutex_unlock(&d.mu);
    int n = dbs_pool_sessions(pool, held_one, held);
    json_object_set_new(o, "seq", json_integer(last));
    json_object_set_new(o, "wait_p99_10s_ms", ms_or_null(p10));
    json_object_set_new(o, "wait_p99_60s_ms", ms_or_null(p60));
    json_object_set_new(o, "held", held);
    json_object_set_new(o, "held_total", json_integer(n < 0 ? 0 : n));
    json_object_set_new(o, "answers",
                        json_pack("{sI sI sI}", "all", (json_int_t)atomic_load(&http_all),
                                  "5xx", (json_int_t)atomic_load(&http_5xx), "503",
                                  (json_int_t)atomic_load(&http_503)));
    *history = hist;
    return o;
}
