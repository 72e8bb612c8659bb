/* Power loss on SQLite: every acknowledged commit survives, and the file is
 * intact.
 *
 * A VFS shim in front of SQLite's own (registered as the default, so the
 * pool's connections use it) passes every call through and keeps, per file
 * (like an inode: all open handles of one path share it), the image that is
 * on "disk" as of the last sync and the writes made since. A crash point is
 * the Nth write or sync of the run: there the durable images are frozen;
 * what was written but not synced is dropped (all of it, or a random subset
 * in order: a disk may persist some unsynced writes and not others). Several
 * threads insert rows (through dbs_transact, and through a COMMIT sent as SQL
 * followed by a write and dbs_commit) while another connection runs
 * checkpoints (PASSIVE, RESTART, TRUNCATE) between their commits and their
 * syncs; a row counts as acknowledged when dbs_transact returned 0 before
 * the crash point. The frozen images are then written to fresh files,
 * opened with SQLite's own VFS (which runs WAL recovery), and checked:
 * PRAGMA integrity_check says ok and every acknowledged row is there.
 * Hundreds of crash points, random seeds (DBSCOPE_TEST_SEED to repeat one).
 */
#include "common.h"

#include <sqlite3.h>
#include <sys/stat.h>

#define THREADS 4
#define UNITS 250   /* per thread, per crash point */
#define ROUNDS 200  /* crash points */

/* ---- the shim ---- */

typedef struct pending {
    sqlite3_int64 off;
    int len;            /* -1: truncate to off */
    unsigned char *data;
} pending;

typedef struct node {  /* one file, shared by its handles */
    char *path;
    unsigned char *img; /* durable content */
    size_t len, cap;
    pending *ops;       /* written since the last sync, in order */
    size_t nops, opcap;
    struct node *next;
} node;

typedef struct image {  /* a frozen durable image */
    char *path;
    unsigned char *img;
    size_t len;
} image;

typedef struct shim_file {
    sqlite3_file base;
    node *n;            /* NULL: not tracked (temporary files) */
    sqlite3_file *real; /* follows this struct */
} shim_file;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static node *nodes;
static long ops_seen, crash_at;
static int crashed;
static int keep_some;   /* 1: a random subset of unsynced writes persists */
static unsigned rng;
static image frozen[8];
static int nfrozen;

static unsigned rnd(void)
{
    rng = rng * 1103515245u + 12345u;
    return (rng >> 8) & 0xffffff;
}

/* memcpy with a null pointer is undefined even for zero bytes, and an
 * empty file's image has no buffer yet. */
static void copy_bytes(unsigned char *dst, const unsigned char *src, size_t n)
{
    if (n > 0)
        memcpy(dst, src, n);
}

static void img_set_len(node *n, size_t len)
{
    if (len > n->cap) {
        size_t cap = n->cap ? n->cap : 65536;
        while (cap < len)
            cap *= 2;
        n->img = realloc(n->img, cap);
        CHECK(n->img);
        n->cap = cap;
    }
    if (len > n->len)
        memset(n->img + n->len, 0, len - n->len);
    n->len = len;
}

static void apply(node *n, const pending *p)
{
    if (p->len == 0)
        return;
    if (p->len < 0) {
        if ((size_t)p->off < n->len)
            n->len = (size_t)p->off;
        return;
    }
    if ((size_t)p->off + (size_t)p->len > n->len)
        img_set_len(n, (size_t)p->off + (size_t)p->len);
    memcpy(n->img + p->off, p->data, (size_t)p->len);
}

static void drop_ops(node *n)
{
    for (size_t i = 0; i < n->nops; i++)
        free(n->ops[i].data);
    n->nops = 0;
}

/* The power goes: freeze what is on disk (mu held). */
static void freeze(void)
{
    nfrozen = 0;
    for (node *n = nodes; n; n = n->next) {
        CHECK(nfrozen < 8);
        image *im = &frozen[nfrozen++];
        im->path = strdup(n->path);
        im->img = malloc(n->len + 1);
        CHECK(im->path && im->img);
        copy_bytes(im->img, n->img, n->len);
        im->len = n->len;
        if (keep_some) {
            /* some unsynced writes reached the disk anyway, in order */
            node tmp = {.img = NULL};
            tmp.len = 0;
            img_set_len(&tmp, im->len);
            copy_bytes(tmp.img, im->img, im->len);
            for (size_t i = 0; i < n->nops; i++)
                if (rnd() % 2)
                    apply(&tmp, &n->ops[i]);
            free(im->img);
            im->img = tmp.img ? tmp.img : malloc(1);
            CHECK(im->img);
            im->len = tmp.len;
        }
    }
    crashed = 1;
}

static void tick(void) /* mu held: one more write or sync */
{
    if (!crashed && ++ops_seen == crash_at)
        freeze();
}

static int s_close(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    int rc = s->real->pMethods ? s->real->pMethods->xClose(s->real) : SQLITE_OK;
    return rc;
}

static int s_read(sqlite3_file *f, void *b, int n, sqlite3_int64 off)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xRead(s->real, b, n, off);
}

static int s_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 off)
{
    shim_file *s = (shim_file *)f;
    int rc = s->real->pMethods->xWrite(s->real, b, n, off);
    if (rc != SQLITE_OK || !s->n)
        return rc;
    pthread_mutex_lock(&mu);
    node *nd = s->n;
    if (nd->nops == nd->opcap) {
        nd->opcap = nd->opcap ? nd->opcap * 2 : 64;
        nd->ops = realloc(nd->ops, nd->opcap * sizeof *nd->ops);
        CHECK(nd->ops);
    }
    pending *p = &nd->ops[nd->nops++];
    p->off = off;
    p->len = n;
    p->data = malloc((size_t)n + 1);
    CHECK(p->data);
    memcpy(p->data, b, (size_t)n);
    tick();
    pthread_mutex_unlock(&mu);
    return rc;
}

static int s_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    shim_file *s = (shim_file *)f;
    int rc = s->real->pMethods->xTruncate(s->real, size);
    if (rc != SQLITE_OK || !s->n)
        return rc;
    pthread_mutex_lock(&mu);
    node *nd = s->n;
    if (nd->nops == nd->opcap) {
        nd->opcap = nd->opcap ? nd->opcap * 2 : 64;
        nd->ops = realloc(nd->ops, nd->opcap * sizeof *nd->ops);
        CHECK(nd->ops);
    }
    nd->ops[nd->nops++] = (pending){size, -1, NULL};
    pthread_mutex_unlock(&mu);
    return rc;
}

/* A sync makes everything written to the file (through any handle) durable;
 * the real fsync is skipped: the real file's content is never used. */
static int s_sync(sqlite3_file *f, int flags)
{
    (void)flags;
    shim_file *s = (shim_file *)f;
    if (!s->n)
        return SQLITE_OK;
    pthread_mutex_lock(&mu);
    if (!crashed) {
        for (size_t i = 0; i < s->n->nops; i++)
            apply(s->n, &s->n->ops[i]);
        drop_ops(s->n);
    }
    tick();
    pthread_mutex_unlock(&mu);
    return SQLITE_OK;
}

static int s_size(sqlite3_file *f, sqlite3_int64 *size)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xFileSize(s->real, size);
}

static int s_lock(sqlite3_file *f, int l)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xLock(s->real, l);
}

static int s_unlock(sqlite3_file *f, int l)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xUnlock(s->real, l);
}

static int s_reserved(sqlite3_file *f, int *out)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xCheckReservedLock(s->real, out);
}

static int s_fcntl(sqlite3_file *f, int op, void *arg)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xFileControl(s->real, op, arg);
}

static int s_sector(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xSectorSize(s->real);
}

static int s_devchar(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xDeviceCharacteristics(s->real);
}

static int s_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xShmMap(s->real, pg, sz, ext, pp);
}

static int s_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xShmLock(s->real, off, n, flags);
}

static void s_shm_barrier(sqlite3_file *f)
{
    shim_file *s = (shim_file *)f;
    s->real->pMethods->xShmBarrier(s->real);
}

static int s_shm_unmap(sqlite3_file *f, int del)
{
    shim_file *s = (shim_file *)f;
    return s->real->pMethods->xShmUnmap(s->real, del);
}

static int s_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    (void)f;
    (void)off;
    (void)n;
    *pp = NULL; /* no memory mapping: every read goes through xRead */
    return SQLITE_OK;
}

static int s_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    (void)f;
    (void)off;
    (void)p;
    return SQLITE_OK;
}

static const sqlite3_io_methods shim_io = {
    3, s_close, s_read, s_write, s_truncate, s_sync, s_size, s_lock, s_unlock,
    s_reserved, s_fcntl, s_sector, s_devchar, s_shm_map, s_shm_lock,
    s_shm_barrier, s_shm_unmap, s_fetch, s_unfetch};

static node *node_for(const char *path) /* mu held */
{
    for (node *n = nodes; n; n = n->next)
        if (strcmp(n->path, path) == 0)
            return n;
    node *n = calloc(1, sizeof *n);
    CHECK(n);
    n->path = strdup(path);
    CHECK(n->path);
    /* a file that exists already is on disk as it is */
    FILE *fp = fopen(path, "rb");
    if (fp) {
        unsigned char buf[65536];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, fp)) > 0) {
            size_t at = n->len;
            img_set_len(n, at + k);
            memcpy(n->img + at, buf, k);
        }
        fclose(fp);
    }
    n->next = nodes;
    nodes = n;
    return n;
}

static int s_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                  int *out_flags)
{
    (void)vfs;
    shim_file *s = (shim_file *)f;
    memset(s, 0, sizeof *s);
    s->real = (sqlite3_file *)(s + 1);
    int rc = real_vfs->xOpen(real_vfs, name, s->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        s->base.pMethods = s->real->pMethods ? &shim_io : NULL;
        return rc;
    }
    if (name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL))) {
        pthread_mutex_lock(&mu);
        s->n = node_for(name);
        pthread_mutex_unlock(&mu);
    }
    s->base.pMethods = &shim_io;
    return SQLITE_OK;
}

static int s_delete(sqlite3_vfs *vfs, const char *name, int dirsync)
{
    (void)vfs;
    pthread_mutex_lock(&mu);
    for (node *n = nodes; n; n = n->next)
        if (strcmp(n->path, name) == 0 && !crashed) {
            drop_ops(n);
            n->len = 0; /* gone: an empty file is what recovery would see */
        }
    pthread_mutex_unlock(&mu);
    return real_vfs->xDelete(real_vfs, name, dirsync);
}

static int s_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int s_fullpath(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static int s_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int s_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return real_vfs->xSleep(real_vfs, us);
}

static int s_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int s_lasterr(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int s_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static void shim_install(void)
{
    real_vfs = sqlite3_vfs_find("unix");
    CHECK(real_vfs);
    shim_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(shim_file) + real_vfs->szOsFile,
        .mxPathname = real_vfs->mxPathname,
        .zName = "crashsim",
        .xOpen = s_open,
        .xDelete = s_delete,
        .xAccess = s_access,
        .xFullPathname = s_fullpath,
        .xRandomness = s_random,
        .xSleep = s_sleep,
        .xCurrentTime = s_time,
        .xGetLastError = s_lasterr,
        .xCurrentTimeInt64 = s_time64,
    };
    CHECK_EQ(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
}

static void shim_forget(void) /* between crash points */
{
    pthread_mutex_lock(&mu);
    while (nodes) {
        node *n = nodes;
        nodes = n->next;
        drop_ops(n);
        free(n->ops);
        free(n->img);
        free(n->path);
        free(n);
    }
    for (int i = 0; i < nfrozen; i++) {
        free(frozen[i].path);
        free(frozen[i].img);
    }
    nfrozen = 0;
    crashed = 0;
    ops_seen = 0;
    pthread_mutex_unlock(&mu);
}

/* ---- the workload ---- */

static char db_path[512];
static unsigned char *acked; /* acked[id]: acknowledged before the crash */

typedef struct writer {
    dbs_pool *pool;
    int t;
    unsigned seed;
} writer;

typedef struct row {
    int64_t id;
    int size;
} row;

static int insert_unit(dbs_session *s, void *arg, dbs_error *err)
{
    row *r = arg;
    static const char pad[6000];
    dbs_value v[2] = {DBS_INT(r->id), DBS_BLOB(pad, r->size)};
    return dbs_exec(s, "INSERT INTO acked_rows (id, pad) VALUES ($1, $2)", v, 2, err) < 0
               ? err->code : 0;
}

static void ack(int64_t id)
{
    pthread_mutex_lock(&mu);
    if (!crashed)
        acked[id] = 1;
    pthread_mutex_unlock(&mu);
}

static void *write_thread(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < UNITS; i++) {
        pthread_mutex_lock(&mu);
        int stop = crashed;
        pthread_mutex_unlock(&mu);
        if (stop)
            break;
        w->seed = w->seed * 1103515245u + 12345u;
        /* mostly one page, sometimes several (overflow pages) */
        row r = {(int64_t)w->t * UNITS + i, (int)((w->seed >> 8) % 8 == 0 ? 5000 : 40)};
        dbs_error err;
        if ((w->seed >> 12) % 4 != 0) {
            int rc = dbs_transact(w->pool, NULL, insert_unit, &r, &err);
            if (rc != 0)
                CHECK_FAIL("insert %lld: %s", (long long)r.id, err.message);
            ack(r.id); /* its sync finished before the crash point */
            continue;
        }
        /* A COMMIT sent as SQL, acknowledged when its dbs_exec returns;
         * then a write, which runs in the new transaction dbscope begins
         * after it, acknowledged by dbs_commit. */
        dbs_session *s = open_ok(w->pool);
        if (insert_unit(s, &r, &err) != 0 || dbs_exec(s, "COMMIT", NULL, 0, &err) < 0)
            CHECK_FAIL("insert %lld, COMMIT: %s", (long long)r.id, err.message);
        ack(r.id);
        if (++i < UNITS) {
            r.id++;
            if (insert_unit(s, &r, &err) != 0 || dbs_commit(s, &err) != DBS_OK)
                CHECK_FAIL("insert %lld after a COMMIT sent as SQL: %s", (long long)r.id,
                           err.message);
            ack(r.id);
        }
        dbs_session_close(s);
    }
    return NULL;
}

static atomic_int stop_ckpt;

/* Another connection checkpointing between the writers' commits and their
 * syncs, and restarting or truncating the WAL under them. */
static void *checkpointer(void *arg)
{
    (void)arg;
    sqlite3 *db = NULL;
    CHECK_EQ(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5);
    CHECK_EQ(sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL), SQLITE_OK);
    static const int modes[3] = {SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_RESTART,
                                 SQLITE_CHECKPOINT_TRUNCATE};
    for (int k = 0; !atomic_load(&stop_ckpt); k++) {
        sqlite3_wal_checkpoint_v2(db, "main", modes[k % 3], NULL, NULL);
        struct timespec ts = {0, 300000};
        nanosleep(&ts, NULL);
    }
    sqlite3_close(db);
    return NULL;
}

static void write_file(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f);
    CHECK_EQ(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void remove_files(const char *base)
{
    static const char *const ends[] = {"", "-wal", "-shm", "-journal"};
    char p[600];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", base, ends[i]);
        unlink(p);
    }
}

/* The disk after the power loss: opened with SQLite's own VFS. */
static void check_after_crash(int round, unsigned seed)
{
    char base[600];
    snprintf(base, sizeof base, "%s.after", db_path);
    remove_files(base);
    size_t dblen = strlen(db_path);
    for (int i = 0; i < nfrozen; i++) {
        const char *suffix = frozen[i].path + dblen;
        CHECK(strncmp(frozen[i].path, db_path, dblen) == 0);
        char p[700];
        snprintf(p, sizeof p, "%s%s", base, suffix);
        write_file(p, frozen[i].img, frozen[i].len);
    }
    sqlite3 *db = NULL;
    CHECK_EQ(sqlite3_open_v2(base, &db, SQLITE_OPEN_READWRITE, "unix"), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CHECK_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_step(st), SQLITE_ROW);
    const char *ok = (const char *)sqlite3_column_text(st, 0);
    if (!ok || strcmp(ok, "ok") != 0)
        CHECK_FAIL("round %d (seed %u): integrity_check: %s", round, seed, ok ? ok : "?");
    sqlite3_finalize(st);
    static unsigned char found[THREADS * UNITS];
    memset(found, 0, sizeof found);
    int rc = sqlite3_prepare_v2(db, "SELECT id FROM acked_rows", -1, &st, NULL);
    int nacked = 0;
    for (int i = 0; i < THREADS * UNITS; i++)
        nacked += acked[i];
    if (rc != SQLITE_OK) {
        /* the table itself was acknowledged before any crash point */
        CHECK_FAIL("round %d (seed %u): the acknowledged table is missing: %s", round,
                   seed, sqlite3_errmsg(db));
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        CHECK(id >= 0 && id < THREADS * UNITS);
        found[id] = 1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    for (int i = 0; i < THREADS * UNITS; i++)
        if (acked[i] && !found[i])
            CHECK_FAIL("round %d (seed %u, crash at op %ld of the run, %s): row %d was "
                       "acknowledged and is lost (%d acknowledged)",
                       round, seed, crash_at, keep_some ? "some unsynced writes kept" :
                       "unsynced writes dropped", i, nacked);
    remove_files(base);
}

static void one_round(int round, unsigned seed)
{
    rng = seed;
    keep_some = (int)(rnd() % 2);
    /* writes and syncs of a full run are about 4 per commit */
    crash_at = 1 + (long)(rnd() % (THREADS * UNITS * 4));
    remove_files(db_path);
    shim_forget();
    memset(acked, 0, THREADS * UNITS);
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s", db_path);
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = THREADS;
    cfg.log_events = 0;
    dbs_error err;
    /* the table is made before the crash window opens */
    long saved = crash_at;
    crash_at = -1;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("dbs_pool_open: %s", err.message);
    run_sql(p, "CREATE TABLE acked_rows (id INTEGER PRIMARY KEY, pad BLOB)");
    pthread_mutex_lock(&mu);
    ops_seen = 0;
    crash_at = saved;
    pthread_mutex_unlock(&mu);
    atomic_store(&stop_ckpt, 0);
    pthread_t ck, th[THREADS];
    writer w[THREADS];
    pthread_create(&ck, NULL, checkpointer, NULL);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (writer){p, i, seed + (unsigned)i * 7919u};
        pthread_create(&th[i], NULL, write_thread, &w[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_lock(&mu);
    if (!crashed)
        freeze(); /* the run ended first: the power goes now */
    pthread_mutex_unlock(&mu);
    atomic_store(&stop_ckpt, 1);
    pthread_join(ck, NULL);
    dbs_pool_close(p);
    check_after_crash(round, seed);
    remove_files(db_path);
}

int main(void)
{
    shim_install();
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(db_path, sizeof db_path, "%s/dbscope-crash-%ld.db", dir, (long)getpid());
    acked = calloc(THREADS * UNITS, 1);
    CHECK(acked);
    const char *env = getenv("DBSCOPE_TEST_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    int rounds = env ? 1 : ROUNDS;
    printf("test_sqlite_crash: seed %u (DBSCOPE_TEST_SEED=<a round's seed> repeats that round)\n", seed);
    for (int r = 0; r < rounds; r++)
        one_round(r, seed + (unsigned)r * 2654435761u);
    shim_forget();
    free(acked);
    puts("test_sqlite_crash: ok");
    return 0;
}
