/* Row-level security on shiftboard's PostgreSQL schema, seen through
 * dbscope the way the service uses it: units of work run by dbs_transact
 * with a context whose user id dbscope turns into app.user_id. Every query
 * here "forgot" its WHERE clause; the policy alone must keep users apart.
 *
 *   shiftboard_rls_probe URL USER_ID...
 *
 * Eight threads share a pool of two connections, so each connection serves
 * many users in turn and a setting left behind by one would show in the
 * next. Prints, for test_shiftboard.py to compare with the API:
 *
 *   user U reads N foreign F unstable S ids I1 I2 ...
 *   nocontext reads N rows R
 *   forged code C sqlstate SSSSS
 *   update_all user U affected N
 *
 * and exits 0 when every read saw only its user's rows (F = 0, S = 0, R = 0)
 * and the forged insert was refused. */
#include "dbscope.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 8, ROUNDS = 60, MAX_USERS = 64, MAX_IDS = 4096 };

typedef struct user_view {
    const char *id;
    pthread_mutex_t lock; /* guards the fields below */
    int reads, foreign, unstable;
    int64_t ids[MAX_IDS];
    int n_ids; /* from the first read; -1 before it */
} user_view;

static dbs_pool *pool;
static user_view users[MAX_USERS];
static int n_users;
static pthread_mutex_t nocontext_lock = PTHREAD_MUTEX_INITIALIZER;
static int nocontext_reads, nocontext_rows;

typedef struct read_out {
    const char *user; /* NULL: no context */
    int64_t ids[MAX_IDS];
    int n, foreign;
} read_out;

/* SELECT with no WHERE: whatever the policy lets through. */
static int read_all(dbs_session *s, void *arg, dbs_error *err)
{
    read_out *out = arg;
    out->n = 0; /* a retried unit starts over */
    out->foreign = 0;
    dbs_rows *r = dbs_query(s, "SELECT id, user_id FROM shifts ORDER BY id", NULL, 0, err);
    if (!r)
        return err->code;
    int rc;
    int64_t want = out->user ? strtoll(out->user, NULL, 10) : -1;
    while ((rc = dbs_rows_next(r, err)) == 1) {
        if (dbs_rows_int(r, 1) != want)
            out->foreign++;
        if (out->n < MAX_IDS)
            out->ids[out->n++] = dbs_rows_int(r, 0);
    }
    dbs_rows_close(r);
    return rc < 0 ? rc : 0;
}

static void record(user_view *u, const read_out *out)
{
    pthread_mutex_lock(&u->lock);
    u->reads++;
    u->foreign += out->foreign;
    if (u->n_ids < 0) {
        memcpy(u->ids, out->ids, (size_t)out->n * sizeof out->ids[0]);
        u->n_ids = out->n;
    } else if (u->n_ids != out->n ||
               memcmp(u->ids, out->ids, (size_t)out->n * sizeof out->ids[0]) != 0) {
        u->unstable++; /* nothing writes meanwhile: every read must agree */
    }
    pthread_mutex_unlock(&u->lock);
}

static void *worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    read_out *out = malloc(sizeof *out);
    if (!out)
        return (void *)1;
    for (int round = 0; round < ROUNDS; round++) {
        /* every third unit has no user: it must see nothing, even on a
         * connection that just served someone */
        int k = (t + round) % n_users;
        out->user = round % 3 == 2 ? NULL : users[k].id;
        char rid[32];
        snprintf(rid, sizeof rid, "probe-%d-%d", t, round);
        dbs_context ctx = {.request_id = rid, .user_id = out->user};
        dbs_error err;
        if (dbs_transact(pool, &ctx, read_all, out, &err) != DBS_OK) {
            fprintf(stderr, "rls_probe: read failed: %s\n", err.message);
            free(out);
            return (void *)1;
        }
        if (out->user) {
            record(&users[k], out);
        } else {
            pthread_mutex_lock(&nocontext_lock);
            nocontext_reads++;
            nocontext_rows += out->n;
            pthread_mutex_unlock(&nocontext_lock);
        }
    }
    free(out);
    return NULL;
}

/* A row written for another user: the policy's WITH CHECK must refuse. */
static int forge(dbs_session *s, void *arg, dbs_error *err)
{
    const user_view *victim = arg;
    dbs_value v[] = {DBS_INT(strtoll(victim->id, NULL, 10))};
    int64_t n = dbs_exec(s,
                         "INSERT INTO shifts (user_id, title, starts_at, ends_at, starts_epoch, "
                         "ends_epoch, created_at) VALUES ($1, 'forged', 'a', 'b', 0, 1, 0)",
                         v, 1, err);
    return n < 0 ? (int)n : 0;
}

/* An UPDATE with no WHERE touches only the caller's rows; rolled back. */
static int update_all(dbs_session *s, void *arg, dbs_error *err)
{
    int64_t *affected = arg;
    *affected = dbs_exec(s, "UPDATE shifts SET title = title || ' (touched)'", NULL, 0, err);
    if (*affected < 0)
        return (int)*affected;
    return 1; /* not 0: dbs_transact rolls back */
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc - 2 > MAX_USERS) {
        fprintf(stderr, "usage: shiftboard_rls_probe URL USER_ID... (1..%d users)\n", MAX_USERS);
        return 2;
    }
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = argv[1];
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.ctx_request_setting = "app.request_id";
    cfg.ctx_user_setting = "app.user_id";
    dbs_error err;
    pool = dbs_pool_open(&cfg, &err);
    if (!pool) {
        fprintf(stderr, "rls_probe: %s\n", err.message);
        return 1;
    }
    n_users = argc - 2;
    for (int i = 0; i < n_users; i++) {
        users[i].id = argv[i + 2];
        users[i].n_ids = -1;
        pthread_mutex_init(&users[i].lock, NULL);
    }
    pthread_t th[THREADS];
    int failed = 0;
    for (int t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) != 0)
            return 1;
    for (int t = 0; t < THREADS; t++) {
        void *rv;
        pthread_join(th[t], &rv);
        failed |= rv != NULL;
    }
    for (int i = 0; i < n_users; i++) {
        user_view *u = &users[i];
        printf("user %s reads %d foreign %d unstable %d ids", u->id, u->reads, u->foreign,
               u->unstable);
        for (int k = 0; k < u->n_ids; k++)
            printf(" %lld", (long long)u->ids[k]);
        printf("\n");
        failed |= u->foreign != 0 || u->unstable != 0;
    }
    printf("nocontext reads %d rows %d\n", nocontext_reads, nocontext_rows);
    failed |= nocontext_rows != 0;

    if (n_users >= 2) {
        dbs_context ctx = {.request_id = "probe-forge", .user_id = users[0].id};
        int rc = dbs_transact(pool, &ctx, forge, &users[1], &err);
        printf("forged code %s sqlstate %s\n", dbs_strerror(rc), rc ? err.sqlstate : "-");
        failed |= rc == DBS_OK || strcmp(err.sqlstate, "42501") != 0;
    }
    dbs_context ctx = {.request_id = "probe-update", .user_id = users[0].id};
    int64_t affected = -1;
    dbs_transact(pool, &ctx, update_all, &affected, &err);
    printf("update_all user %s affected %lld\n", users[0].id, (long long)affected);
    failed |= affected != users[0].n_ids;

    dbs_pool_close(pool);
    for (int i = 0; i < n_users; i++)
        pthread_mutex_destroy(&users[i].lock);
    return failed ? 1 : 0;
}
