/* SQLite's storage failures, for real.
 *
 *   test_sqlite_full disk    a full file system (a small tmpfs, mounted in
 *                            a mount namespace of the test's own; root
 *                            only, else skipped): a write is DBS_EFULL,
 *                            retried by dbs_transact, nothing of it is
 *                            stored, and the same connection works again
 *                            once space is freed.
 *   test_sqlite_full commit  a VFS shim over the real one fails the
 *                            COMMIT's sync or write on demand: an I/O
 *                            error or failed sync is DBS_ECOMMIT_UNKNOWN,
 *                            never retried; a write finding the disk full
 *                            (SQLITE_FULL, as the unix VFS reports ENOSPC)
 *                            is DBS_EFULL, retried.
 *   test_sqlite_full wal     a WAL that fills a small file system before
 *                            SQLite's checkpoint threshold (1000 pages),
 *                            with space freed after, and with a reader
 *                            holding checkpoints back (root, else
 *                            skipped): the pool recovers by itself, by
 *                            dbs_transact and through event-loop units,
 *                            and every acknowledged commit is there. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <sched.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>

static atomic_int work_calls;
static int64_t next_id = 1;

static int insert_blob(dbs_session *s, void *arg, dbs_error *err)
{
    atomic_fetch_add(&work_calls, 1);
    size_t n = *(size_t *)arg;
    static char buf[1 << 20];
    memset(buf, 'x', n < sizeof buf ? n : sizeof buf);
    dbs_value v[2] = {DBS_INT(next_id), DBS_BLOB(buf, n)};
    int64_t rc = dbs_exec(s, "INSERT INTO t(id, b) VALUES ($1, $2)", v, 2, err);
    return rc < 0 ? (int)rc : 0;
}

static int64_t count_rows(dbs_pool *p)
{
    dbs_session *s = open_ok(p);
    int64_t n = query_int(s, "SELECT count(*) FROM t", NULL, 0);
    dbs_session_close(s);
    return n;
}

/* ---- disk ---- */

static char full_dir[] = "/tmp/dbscope-full-XXXXXX";

/* The tmpfs lives in this process's mount namespace; the directory under
 * it does not: removed however the test ends. */
static void full_cleanup(void)
{
    umount2(full_dir, MNT_DETACH);
    rmdir(full_dir);
}

static int part_disk(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: mounting a tmpfs needs root\n");
        return 77;
    }
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        fprintf(stderr, "skipped: no mount namespace (%s)\n", strerror(errno));
        return 77;
    }
    char *dir = full_dir;
    CHECK(mkdtemp(dir) != NULL);
    atexit(full_cleanup);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0)
        CHECK_FAIL("mount tmpfs on %s: %s", dir, strerror(errno));
    char url[256], filler[256];
    snprintf(url, sizeof url, "sqlite://%s/full.db", dir);
    snprintf(filler, sizeof filler, "%s/filler", dir);

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 1;
    cfg.max_overflow = 0;
    cfg.retry_max = 2;
    cfg.retry_base_ms = 1;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    run_sql(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
    size_t small = 1000;
    CHECK_EQ(dbs_transact(p, NULL, insert_blob, &small, &err), DBS_OK);
    next_id++;

    /* Fill the file system to the last byte. */
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    static char chunk[4096];
    memset(chunk, 'f', sizeof chunk);
    for (;;) {
        ssize_t w = write(fd, chunk, sizeof chunk);
        if (w <= 0)
            break;
    }
    for (;;) { /* and the last partial block */
        ssize_t w = write(fd, chunk, 1);
        if (w <= 0)
            break;
    }
    close(fd);

    int64_t before = count_rows(p);
    dbs_stats st0 = stats_of(p);
    size_t big = 200000;
    atomic_store(&work_calls, 0);
    memset(&err, 0, sizeof err);
    int rc = dbs_transact(p, NULL, insert_blob, &big, &err);
    fprintf(stderr, "full disk: %d %s\n", rc, err.message);
    CHECK_EQ(rc, DBS_EFULL);
    CHECK_EQ(err.code, DBS_EFULL);
    CHECK(dbs_error_is_transient(&err));
    CHECK_EQ(atomic_load(&work_calls), 3); /* retried like DBS_ERETRYABLE */
    dbs_stats st1 = stats_of(p);
    CHECK_EQ(st1.retries - st0.retries, 2);
    /* Nothing of it was stored. */
    CHECK_EQ(count_rows(p), before);
    dbs_session *s = open_ok(p);
    dbs_value id = DBS_INT(next_id);
    CHECK_EQ(query_int(s, "SELECT count(*) FROM t WHERE id = $1", &id, 1), 0);
    CHECK_STR(text_of(s, "PRAGMA integrity_check", (char[64]){0}, 64), "ok");
    dbs_session_close(s);

    /* Space freed: the same connection writes again. */
    CHECK(unlink(filler) == 0);
    CHECK_EQ(dbs_transact(p, NULL, insert_blob, &big, &err), DBS_OK);
    CHECK_EQ(count_rows(p), before + 1);
    dbs_stats st2 = stats_of(p);
    CHECK_EQ(st2.created, st0.created);
    CHECK_EQ(st2.closed, st0.closed);
    dbs_pool_close(p);
    return 0;
}

/* ---- wal: the WAL fills the disk below the checkpoint threshold ---- */

/* One row rewritten by every commit: each appends about one page to the
 * WAL, so the data stays a page while the WAL grows by 4 KB a commit. */
static int bump(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    int64_t rc = dbs_exec(s, "UPDATE c SET n = n + 1, b = randomblob(3000) WHERE id = 1",
                          NULL, 0, err);
    return rc < 0 ? (int)rc : 0;
}

typedef struct wal_res {
    int calls;
    int rc;
    char msg[sizeof ((dbs_error *)0)->message];
} wal_res;

static void wal_done(dbs_unit *u, int rc, const dbs_error *err, void *arg)
{
    (void)u;
    wal_res *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", err ? err->message : "");
}

/* Runs one bump as an event-loop unit to its end. */
static int bump_unit(dbs_loop *l)
{
    dbs_error err;
    dbs_unit *u = dbs_unit_new(l, NULL, 0, &err);
    CHECK(u != NULL);
    CHECK(dbs_unit_add(u, "UPDATE c SET n = n + 1, b = randomblob(3000) WHERE id = 1", NULL,
                       0, &err) >= 0);
    wal_res r = {0};
    CHECK_EQ(dbs_unit_submit(u, wal_done, &r, &err), DBS_OK);
    while (r.calls == 0) {
        struct pollfd pf = {.fd = dbs_loop_fd(l), .events = POLLIN};
        poll(&pf, 1, dbs_loop_timeout_ms(l));
        CHECK(dbs_loop_run(l) >= 0);
    }
    if (r.rc != DBS_OK)
        fprintf(stderr, "unit: %d %s\n", r.rc, r.msg);
    return r.rc;
}

static int part_wal(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: mounting a tmpfs needs root\n");
        return 77;
    }
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        fprintf(stderr, "skipped: no mount namespace (%s)\n", strerror(errno));
        return 77;
    }
    CHECK(mkdtemp(full_dir) != NULL);
    atexit(full_cleanup);
    /* 3 MB: a WAL of 1000 pages (4 MB) cannot fit, so SQLite's own
     * checkpoint never runs. */
    if (mount("tmpfs", full_dir, "tmpfs", 0, "size=3m") != 0)
        CHECK_FAIL("mount tmpfs on %s: %s", full_dir, strerror(errno));
    char url[256], filler[256];
    snprintf(url, sizeof url, "sqlite://%s/wal.db", full_dir);
    snprintf(filler, sizeof filler, "%s/filler", full_dir);

    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = url;
    cfg.pool_size = 2;
    cfg.max_overflow = 0;
    cfg.retry_max = 3;
    cfg.retry_base_ms = 1;
    cfg.log_events = 0;
    dbs_error err;
    dbs_pool *p = dbs_pool_open(&cfg, &err);
    if (!p)
        CHECK_FAIL("open: %s", err.message);
    run_sql(p, "CREATE TABLE c(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, b BLOB)");
    run_sql(p, "INSERT INTO c VALUES (1, 0, NULL)");
    int64_t acked = 0;

    /* The disk fills with something else while the WAL is small. */
    int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    static char chunk[4096];
    memset(chunk, 'f', sizeof chunk);
    for (size_t i = 0; i < 512 && write(fd, chunk, sizeof chunk) == (ssize_t)sizeof chunk; i++) {
    }
    close(fd);
    int rc = DBS_OK;
    for (int i = 0; i < 2000 && rc == DBS_OK; i++) {
        memset(&err, 0, sizeof err);
        rc = dbs_transact(p, NULL, bump, NULL, &err);
        if (rc == DBS_OK)
            acked++;
    }
    fprintf(stderr, "filled after %lld commits: %d %s\n", (long long)acked, rc, err.message);
    CHECK_EQ(rc, DBS_EFULL);

    /* Space comes back: every later commit of the one row succeeds, by
     * dbs_transact (retries included) ... */
    CHECK(unlink(filler) == 0);
    for (int i = 0; i < 1500; i++) {
        memset(&err, 0, sizeof err);
        rc = dbs_transact(p, NULL, bump, NULL, &err);
        if (rc != DBS_OK)
            CHECK_FAIL("commit %d after space came back: %d %s", i, rc, err.message);
        acked++;
    }
    /* ... and through event-loop units. */
    dbs_loop *l = dbs_loop_open(p, NULL, &err);
    if (!l)
        CHECK_FAIL("dbs_loop_open: %s", err.message);
    for (int i = 0; i < 1500; i++) {
        rc = bump_unit(l);
        if (rc != DBS_OK)
            CHECK_FAIL("unit %d after space came back: %d", i, rc);
        acked++;
    }

    /* A reader holds checkpoints back until the WAL fills the disk; once
     * it ends, writes recover by themselves. */
    dbs_session *reader = open_ok(p);
    CHECK_EQ(query_int(reader, "SELECT count(*) FROM c", NULL, 0), 1);
    rc = DBS_OK;
    int held = 0;
    for (; held < 2000 && rc == DBS_OK; held++) {
        rc = bump_unit(l);
        if (rc == DBS_OK)
            acked++;
    }
    fprintf(stderr, "reader held, filled after %d commits: %d\n", held, rc);
    CHECK_EQ(rc, DBS_EFULL);
    dbs_session_close(reader);
    for (int i = 0; i < 1500; i++) {
        rc = bump_unit(l);
        if (rc != DBS_OK)
            CHECK_FAIL("unit %d after the reader ended: %d", i, rc);
        acked++;
        memset(&err, 0, sizeof err);
        rc = dbs_transact(p, NULL, bump, NULL, &err);
        if (rc != DBS_OK)
            CHECK_FAIL("commit %d after the reader ended: %d %s", i, rc, err.message);
        acked++;
    }
    dbs_loop_close(l);

    /* Every acknowledged commit is there, none that failed, nothing torn. */
    dbs_session *s = open_ok(p);
    CHECK_EQ(query_int(s, "SELECT n FROM c WHERE id = 1", NULL, 0), acked);
    CHECK_EQ(query_int(s, "SELECT length(b) FROM c WHERE id = 1", NULL, 0), 3000);
    CHECK_STR(text_of(s, "PRAGMA integrity_check", (char[64]){0}, 64), "ok");
    dbs_session_close(s);
    dbs_pool_close(p);
    return 0;
}

/* ---- commit: a VFS shim that fails on demand ---- */

enum { FAIL_NONE, FAIL_SYNC, FAIL_WRITE_EIO, FAIL_WRITE_ENOSPC };
static atomic_int fail_mode;   /* armed by the unit, one shot */
static atomic_int fail_hits;
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static int last_errno;

typedef struct shim_file {
    sqlite3_file base;
    sqlite3_file *real; /* follows this struct */
} shim_file;

static int take(int mode)
{
    int want = mode;
    if (atomic_compare_exchange_strong(&fail_mode, &want, FAIL_NONE)) {
        atomic_fetch_add(&fail_hits, 1);
        return 1;
    }
    return 0;
}

#define REAL(f) (((shim_file *)(f))->real)
static int s_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int s_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int s_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (take(FAIL_WRITE_EIO)) {
        last_errno = EIO;
        return SQLITE_IOERR_WRITE;
    }
    if (take(FAIL_WRITE_ENOSPC)) {
        /* what the unix VFS answers for a write() failing with ENOSPC */
        last_errno = ENOSPC;
        return SQLITE_FULL;
    }
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int s_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), n);
}
static int s_sync(sqlite3_file *f, int flags)
{
    if (take(FAIL_SYNC)) {
        last_errno = EIO;
        return SQLITE_IOERR_FSYNC;
    }
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int s_size(sqlite3_file *f, sqlite3_int64 *n)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), n);
}
static int s_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int s_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int s_check(sqlite3_file *f, int *r)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r);
}
static int s_fcntl(sqlite3_file *f, int op, void *a)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
static int s_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int s_dev(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int s_shmmap(sqlite3_file *f, int i, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), i, sz, ext, pp);
}
static int s_shmlock(sqlite3_file *f, int o, int n, int fl)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), o, n, fl);
}
static void s_shmbarrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int s_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int s_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, pp);
}
static int s_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}

static const sqlite3_io_methods shim_io = {
    3, s_close, s_read, s_write, s_truncate, s_sync, s_size, s_lock, s_unlock,
    s_check, s_fcntl, s_sector, s_dev, s_shmmap, s_shmlock, s_shmbarrier, s_shmunmap,
    s_fetch, s_unfetch,
};

static int v_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)v;
    shim_file *sf = (shim_file *)f;
    sf->real = (sqlite3_file *)(sf + 1);
    int rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out);
    sf->base.pMethods = sf->real->pMethods ? &shim_io : NULL;
    return rc;
}
static int v_get_last_error(sqlite3_vfs *v, int n, char *buf)
{
    (void)v;
    (void)n;
    (void)buf;
    return last_errno;
}

static void shim_install(void)
{
    real_vfs = sqlite3_vfs_find("unix");
    CHECK(real_vfs != NULL);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "dbscope_test_shim";
    shim_vfs.szOsFile = (int)sizeof(shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = v_open;
    shim_vfs.xGetLastError = v_get_last_error;
    shim_vfs.pNext = NULL;
    /* The default VFS: every connection dbscope opens goes through it. */
    CHECK_EQ(sqlite3_vfs_register(&shim_vfs, 1), SQLITE_OK);
}

static int arm_mode;

/* Inserts a row and arms the failure: the next sync or write is the
 * COMMIT's (a small row stays in the page cache until then). */
static int insert_armed(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    atomic_fetch_add(&work_calls, 1);
    dbs_value v = DBS_INT(next_id);
    int64_t rc = dbs_exec(s, "INSERT INTO t(id, b) VALUES ($1, 'x')", &v, 1, err);
    if (rc < 0)
        return (int)rc;
    atomic_store(&fail_mode, arm_mode);
    return 0;
}

/* The same, ending with a COMMIT the unit sends as SQL: through dbs_exec,
 * or through dbs_query and dbs_rows_next (arg non-NULL). */
static int insert_armed_sql_commit(dbs_session *s, void *arg, dbs_error *err)
{
    int rc = insert_armed(s, NULL, err);
    if (rc != 0)
        return rc;
    if (!arg)
        return dbs_exec(s, "COMMIT", NULL, 0, err) < 0 ? err->code : 0;
    dbs_rows *r = dbs_query(s, "COMMIT", NULL, 0, err);
    if (!r)
        return err->code;
    rc = dbs_rows_next(r, err);
    dbs_rows_close(r);
    return rc;
}

static void commit_case_with(dbs_pool *p, dbs_work_fn work, void *arg, int mode, int want,
                             int runs)
{
    arm_mode = mode;
    atomic_store(&work_calls, 0);
    atomic_store(&fail_hits, 0);
    dbs_error err;
    memset(&err, 0, sizeof err);
    int rc = dbs_transact(p, NULL, work, arg, &err);
    atomic_store(&fail_mode, FAIL_NONE);
    fprintf(stderr, "mode %d: %d %s\n", mode, rc, err.message);
    CHECK_EQ(atomic_load(&fail_hits), 1);
    CHECK_EQ(rc, want);
    CHECK_EQ(err.code, want);
    CHECK_EQ(atomic_load(&work_calls), runs);
    next_id++;
    /* The pool goes on working. */
    size_t small = 10;
    CHECK_EQ(dbs_transact(p, NULL, insert_blob, &small, &err), DBS_OK);
    next_id++;
}

static void commit_case(dbs_pool *p, int mode, int want, int runs)
{
    commit_case_with(p, insert_armed, NULL, mode, want, runs);
}

static int part_commit(void)
{
    shim_install();
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.pool_size = 1;
    cfg.retry_max = 3;
    cfg.retry_base_ms = 1;
    cfg.log_events = 0;
    dbs_pool *p = open_pool("sqlite_full", &cfg);
    run_sql(p, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
    /* A failed sync of the COMMIT: it may be on disk or not. */
    commit_case(p, FAIL_SYNC, DBS_ECOMMIT_UNKNOWN, 1);
    /* An I/O error writing the COMMIT: unknown too, never retried. */
    commit_case(p, FAIL_WRITE_EIO, DBS_ECOMMIT_UNKNOWN, 1);
    /* The same for a COMMIT sent as SQL (SQLite's commit hook saw it
     * begin): unknown, never retried, by dbs_exec or by dbs_rows_next. */
    static int by_query = 1;
    commit_case_with(p, insert_armed_sql_commit, NULL, FAIL_WRITE_EIO, DBS_ECOMMIT_UNKNOWN, 1);
    commit_case_with(p, insert_armed_sql_commit, &by_query, FAIL_WRITE_EIO,
                     DBS_ECOMMIT_UNKNOWN, 1);
    commit_case_with(p, insert_armed_sql_commit, NULL, FAIL_SYNC, DBS_ECOMMIT_UNKNOWN, 1);
    /* A write that found the disk full: nothing committed, retried (and
     * the retry, the failure being one shot, commits). */
    arm_mode = FAIL_WRITE_ENOSPC;
    atomic_store(&work_calls, 0);
    atomic_store(&fail_hits, 0);
    dbs_error err;
    dbs_stats st0 = stats_of(p);
    int rc = dbs_transact(p, NULL, insert_armed, NULL, &err);
    /* the retry re-armed it; the last run's failure is the last COMMIT */
    atomic_store(&fail_mode, FAIL_NONE);
    fprintf(stderr, "enospc: %d %s (runs %d)\n", rc, err.message, atomic_load(&work_calls));
    CHECK_EQ(rc, DBS_EFULL);
    CHECK_EQ(atomic_load(&work_calls), 4); /* retry_max = 3 */
    CHECK_EQ(stats_of(p).retries - st0.retries, 3);
    dbs_session *s = open_ok(p);
    dbs_value id = DBS_INT(next_id);
    CHECK_EQ(query_int(s, "SELECT count(*) FROM t WHERE id = $1", &id, 1), 0);
    dbs_session_close(s);
    dbs_pool_close(p);
    return 0;
}

int main(int argc, char **argv)
{
    const char *part = argc > 1 ? argv[1] : "";
    int rc;
    if (!strcmp(part, "disk"))
        rc = part_disk();
    else if (!strcmp(part, "commit"))
        rc = part_commit();
    else if (!strcmp(part, "wal"))
        rc = part_wal();
    else
        CHECK_FAIL("usage: test_sqlite_full disk|commit|wal");
    if (rc == 0)
        fprintf(stderr, "ok\n");
    return rc;
}
