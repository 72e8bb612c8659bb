/* Limits on guessing (shiftboard.h): failed logins and failed bearer
 * tokens counted per client address and per account name, and accounts
 * registered per client address, in fixed windows, in a table of fixed
 * size.
 *
 * The table: capacity slots (a power of two), each a keyed hash of what it
 * counts (SipHash via crypto_shorthash, with a key drawn at start, so a
 * client cannot choose names that collide), found by probing SB_RL_PROBE
 * slots from its hash. A new key takes an empty or expired slot among
 * those, else the least recently used one that is not blocking anybody,
 * else the least recently used one: memory never grows, whatever the
 * number of addresses and names, at the price that a flood of new keys can
 * make the table forget an old one sooner. */
#include "shiftboard.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    SB_RL_PROBE = 8,
    SB_RL_KNOWN_S = 7 * 24 * 3600, /* an address an account logged in from */
};

enum kind { KIND_ADDRESS = 1, KIND_ACCOUNT = 2, KIND_KNOWN = 3, KIND_REGISTERED = 4 };

typedef struct slot {
    uint64_t key;          /* 0: empty */
    int64_t window_start;  /* seconds, monotonic */
    int64_t last;          /* last touched */
    uint32_t failures;     /* in the window that began at window_start */
    uint8_t kind;
} slot;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static slot *table;
static size_t capacity, used;
static unsigned long evictions, refusals;
static unsigned char hash_key[crypto_shorthash_KEYBYTES];

static int64_t now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec;
}

/* Called with lock held. */
static int init_locked(size_t entries)
{
    if (table)
        return 0;
    size_t cap = SB_RL_PROBE;
    while (cap < entries)
        cap *= 2;
    table = calloc(cap, sizeof *table);
    if (!table)
        return -1;
    capacity = cap;
    randombytes_buf(hash_key, sizeof hash_key);
    return 0;
}

int sb_rl_init(size_t entries)
{
    pthread_mutex_lock(&lock);
    int rc = init_locked(entries);
    pthread_mutex_unlock(&lock);
    return rc;
}

/* The table, made at the default size if sb_rl_init was not called; false
 * out of memory. Called with lock held. */
static bool ready(void)
{
    return init_locked(SB_RL_DEFAULT_ENTRIES) == 0;
}

static uint64_t key_of(enum kind kind, const char *a, const char *b)
{
    unsigned char buf[1 + 2 * 256 + 1];
    size_t n = 0;
    buf[n++] = (unsigned char)kind;
    size_t la = strlen(a) < 256 ? strlen(a) : 256;
    memcpy(buf + n, a, la);
    n += la;
    if (b) {
        buf[n++] = 0; /* names hold no NUL: (a, b) pairs cannot collide by shifting */
        size_t lb = strlen(b) < 256 ? strlen(b) : 256;
        memcpy(buf + n, b, lb);
        n += lb;
    }
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, buf, n, hash_key);
    uint64_t k;
    memcpy(&k, h, sizeof k);
    return k ? k : 1;
}

/* The window a slot counts in. */
static int64_t window_of(const slot *s)
{
    return s->kind == KIND_REGISTERED ? SB_RL_REGISTER_WINDOW_S : SB_RL_WINDOW_S;
}

static int64_t lifetime(const slot *s)
{
    return s->kind == KIND_KNOWN ? SB_RL_KNOWN_S : window_of(s);
}

static uint32_t limit_of(const slot *s)
{
    return s->kind == KIND_ADDRESS      ? SB_RL_ADDRESS_MAX
           : s->kind == KIND_REGISTERED ? SB_RL_REGISTER_MAX
                                        : SB_RL_ACCOUNT_MAX;
}

/* Whether s refuses attempts at now. */
static bool blocking(const slot *s, int64_t now)
{
    return s->key && s->kind != KIND_KNOWN && now - s->window_start < window_of(s) &&
           s->failures >= limit_of(s);
}

/* The slot of key, or NULL; with make, a slot made for it (never NULL
 * then). Called with lock held. */
static slot *find(uint64_t key, enum kind kind, bool make, int64_t now)
{
    size_t at = (size_t)key & (capacity - 1);
    slot *free_slot = NULL, *old = NULL, *oldest = NULL;
    for (size_t i = 0; i < SB_RL_PROBE; i++) {
        slot *s = &table[(at + i) & (capacity - 1)];
        if (s->key == key)
            return s;
        if (!make)
            continue;
        if (!s->key || now - s->last >= lifetime(s)) {
            if (!free_slot)
                free_slot = s;
        } else {
            if (!blocking(s, now) && (!old || s->last < old->last))
                old = s;
            if (!oldest || s->last < oldest->last)
                oldest = s;
        }
    }
    if (!make)
        return NULL;
    slot *s = free_slot ? free_slot : old ? old : oldest;
    if (!free_slot)
        evictions++;
    if (!s->key)
        used++;
    *s = (slot){.key = key, .kind = (uint8_t)kind, .window_start = now, .last = now};
    return s;
}

/* Seconds until s stops blocking, 0 if it does not. */
static int wait_of(const slot *s, int64_t now)
{
    if (!s || !blocking(s, now))
        return 0;
    int64_t w = s->window_start + window_of(s) - now;
    return w < 1 ? 1 : (int)w;
}

/* sb_rl_check's answer. Called with lock held. */
static int check_locked(const char *address, const char *account, int64_t now)
{
    uint64_t ka = key_of(KIND_ADDRESS, address, NULL);
    uint64_t kn = account ? key_of(KIND_ACCOUNT, account, NULL) : 0;
    uint64_t kk = account ? key_of(KIND_KNOWN, account, address) : 0;
    int wait = wait_of(find(ka, KIND_ADDRESS, false, now), now);
    if (!wait && account) {
        /* an account under attack stays open to the addresses it logged
         * in from before */
        slot *known = find(kk, KIND_KNOWN, false, now);
        if (!known || now - known->last >= SB_RL_KNOWN_S)
            wait = wait_of(find(kn, KIND_ACCOUNT, false, now), now);
    }
    if (wait)
        refusals++;
    return wait;
}

static void count(slot *s, int64_t now)
{
    if (now - s->window_start >= window_of(s)) {
        s->window_start = now;
        s->failures = 0;
    }
    if (s->failures < UINT32_MAX)
        s->failures++;
    s->last = now;
}

/* Called with lock held. */
static void failed_locked(const char *address, const char *account, int64_t now)
{
    uint64_t ka = key_of(KIND_ADDRESS, address, NULL);
    uint64_t kn = account ? key_of(KIND_ACCOUNT, account, NULL) : 0;
    count(find(ka, KIND_ADDRESS, true, now), now);
    if (account)
        count(find(kn, KIND_ACCOUNT, true, now), now);
}

/* The check, and with claim the attempt counted as a failure in the same
 * hold of the lock: attempts running at once each see the others' counts
 * (sb_rl_refund takes it back when the attempt succeeds). */
static int check_or_claim(const char *address, const char *account, bool claim)
{
    int64_t now = now_s();
    pthread_mutex_lock(&lock);
    if (!ready()) {
        /* out of memory: refused, not unlimited */
        pthread_mutex_unlock(&lock);
        return 1;
    }
    int wait = check_locked(address, account, now);
    if (claim && !wait)
        failed_locked(address, account, now);
    pthread_mutex_unlock(&lock);
    return wait;
}

int sb_rl_check(const char *address, const char *account)
{
    return check_or_claim(address, account, false);
}

int sb_rl_claim(const char *address, const char *account)
{
    return check_or_claim(address, account, true);
}

/* Takes one failure back from the slot of key, if it is still counting in
 * the window. Called with lock held. */
static void uncount(uint64_t key, enum kind kind, int64_t now)
{
    slot *s = find(key, kind, false, now);
    if (s && now - s->window_start < window_of(s) && s->failures > 0)
        s->failures--;
}

void sb_rl_refund(const char *address, const char *account)
{
    int64_t now = now_s();
    pthread_mutex_lock(&lock);
    if (ready()) {
        uncount(key_of(KIND_ADDRESS, address, NULL), KIND_ADDRESS, now);
        if (account)
            uncount(key_of(KIND_ACCOUNT, account, NULL), KIND_ACCOUNT, now);
    }
    pthread_mutex_unlock(&lock);
}

void sb_rl_succeeded(const char *address, const char *account)
{
    int64_t now = now_s();
    pthread_mutex_lock(&lock);
    if (!ready()) {
        pthread_mutex_unlock(&lock);
        return;
    }
    uint64_t kk = key_of(KIND_KNOWN, account, address);
    find(kk, KIND_KNOWN, true, now)->last = now;
    pthread_mutex_unlock(&lock);
}

/* Registrations are counted like failures: "failures" is the accounts
 * made from the address in the window. */
int sb_rl_register_claim(const char *address)
{
    int64_t now = now_s();
    pthread_mutex_lock(&lock);
    if (!ready()) {
        pthread_mutex_unlock(&lock);
        return 1;
    }
    uint64_t k = key_of(KIND_REGISTERED, address, NULL);
    int wait = wait_of(find(k, KIND_REGISTERED, false, now), now);
    if (wait)
        refusals++;
    else
        count(find(k, KIND_REGISTERED, true, now), now);
    pthread_mutex_unlock(&lock);
    return wait;
}

void sb_rl_register_refund(const char *address)
{
    int64_t now = now_s();
    pthread_mutex_lock(&lock);
    if (ready())
        uncount(key_of(KIND_REGISTERED, address, NULL), KIND_REGISTERED, now);
    pthread_mutex_unlock(&lock);
}

void sb_rl_stats(size_t *entries, size_t *cap, unsigned long *evicted, unsigned long *refused)
{
    pthread_mutex_lock(&lock);
    *entries = used;
    *cap = capacity;
    *evicted = evictions;
    *refused = refusals;
    pthread_mutex_unlock(&lock);
}
