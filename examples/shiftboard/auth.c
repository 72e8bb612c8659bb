/* Passwords and tokens, with libsodium: argon2id password hashes, random
 * bearer tokens of which only a BLAKE2b hash is stored, so a copy of the
 * database lets nobody log in. */
#include "shiftboard.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>

/* Hashes in memory now, and the most there were at once since the start:
 * counted around each argon2id call itself, whoever bounds them, so that
 * /metrics shows what the bound on their memory (server.c) really held. */
static atomic_uint hashes_now, hashes_peak;
/* Hashes computed since the start (made and verified): what a request that
 * should cost none (a taken name) is checked against. */
static atomic_ulong hashes_total;

static void hash_began(void)
{
    atomic_fetch_add(&hashes_total, 1);
    unsigned now = atomic_fetch_add(&hashes_now, 1) + 1;
    unsigned peak = atomic_load(&hashes_peak);
    while (now > peak && !atomic_compare_exchange_weak(&hashes_peak, &peak, now))
        ;
}

static void hash_ended(void)
{
    atomic_fetch_sub(&hashes_now, 1);
}

void sb_hash_counts(unsigned *now, unsigned *peak, unsigned long *total)
{
    *now = atomic_load(&hashes_now);
    *peak = atomic_load(&hashes_peak);
    *total = atomic_load(&hashes_total);
}

int sb_password_hash(const sb_app *app, const char *password, char *out, size_t len)
{
    if (len < crypto_pwhash_STRBYTES)
        return -1;
    hash_began();
    int rc = crypto_pwhash_str_alg(out, password, strlen(password), app->pwhash_ops,
                                   app->pwhash_mem, crypto_pwhash_ALG_ARGON2ID13);
    hash_ended();
    return rc;
}

static bool verify(const char *hash, const char *password)
{
    hash_began();
    bool ok = crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
    hash_ended();
    return ok;
}

/* The decoy hash, made on first need; guarded by dummy_lock until made,
 * immutable after. */
static pthread_mutex_t dummy_lock = PTHREAD_MUTEX_INITIALIZER;
static char dummy_hash[crypto_pwhash_STRBYTES];
static bool dummy_made, dummy_ready;

bool sb_password_check(const sb_app *app, const char *hash, const char *password)
{
    /* An unknown name costs a verification too, so response times do not
     * reveal which names exist; the decoy costs what a stored hash costs
     * (the service's cost setting). */
    if (!hash) {
        pthread_mutex_lock(&dummy_lock);
        if (!dummy_made) {
            dummy_ready = sb_password_hash(app, "not a password", dummy_hash,
                                           sizeof dummy_hash) == 0;
            dummy_made = true;
        }
        bool ready = dummy_ready;
        pthread_mutex_unlock(&dummy_lock);
        if (ready && verify(dummy_hash, password))
            return false; /* matched the decoy: still no such user */
        return false;
    }
    return verify(hash, password);
}

void sb_token_hash(const char *token, char hash[65])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof h, (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(hash, 65, h, sizeof h);
}

void sb_token_new(char token[65], char hash[65])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(token, 65, raw, sizeof raw);
    sb_token_hash(token, hash);
}
