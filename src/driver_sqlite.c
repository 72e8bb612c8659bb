/*
 * The SQLite backend.
 *
 * Files open in WAL mode (readers never block the writer) with a busy
 * timeout and foreign keys on. SQLITE_BUSY and SQLITE_LOCKED are
 * DBS_ERETRYABLE, so dbs_transact retries them; a wait on another
 * connection's lock is bounded by the smaller of busy_timeout_ms and the
 * statement bound, and is DBS_ESTMT_TIMEOUT when the statement bound is
 * what ran out.
 *
 * Durable commits in groups. A commit is acknowledged only once it is on
 * disk (as with synchronous=FULL), but commits do not each pay an fsync of
 * their own: connections run with synchronous=NORMAL (a commit writes its
 * WAL frames and does not sync), and after each write transaction commits
 * the connection waits for one shared sync of the WAL file that began after
 * its COMMIT returned. One waiter (the leader) syncs through its own WAL
 * file object (SQLITE_FCNTL_JOURNAL_POINTER, then the VFS's xSync, which
 * also syncs the directory of a new WAL); every commit written before that
 * sync began is covered by it, whichever connection wrote it, since all
 * connections to a file share the WAL inode (SQLite deletes the WAL only
 * when no connection has the database open). What SQLite does without us
 * is unchanged and keeps this sound (wal.c, pager.c; synchronous=NORMAL):
 *  - a checkpoint syncs the WAL before copying frames into the database,
 *    and syncs the database before recording them as copied, so a commit
 *    checkpointed between its COMMIT and the group sync is durable in the
 *    database file;
 *  - the WAL is restarted (written again from its start, with new salts)
 *    only after every frame was copied and the database synced, and the
 *    new header is synced before the first new frame is written (the
 *    header sync happens at NORMAL too); frames of an older generation
 *    fail the salt and checksum test at recovery, so a torn tail is cut
 *    at the last complete commit;
 *  - truncation (journal_size_limit, wal_checkpoint(TRUNCATE)) cuts only
 *    frames already copied and synced.
 * What triggers the sync is SQLite's own report, not the SQL text: the
 * commit hook fires for every transaction that wrote the main database
 * (dbs_commit, a COMMIT sent as SQL, a write in autocommit mode), and the
 * statement that committed does not return before the sync. The same hook
 * refuses a COMMIT into a database file or WAL that was deleted or replaced
 * while open (SQLITE_FCNTL_HAS_MOVED, and the WAL's identity at open): the
 * transaction is rolled back and the connection discarded instead of
 * acknowledging writes nobody will read. An I/O error after the hook let
 * a COMMIT go ahead leaves its outcome unknown, whichever statement sent it:
 * DBS_ECOMMIT_UNKNOWN (fail). sqlite:FILE?synchronous=full is
 * the default spelled out; ?synchronous=normal skips the group sync.
 *
 * Parameters: SQLite reads "$1" as a named parameter called "$1", and
 * looks each name up in a list while it parses: a statement of n of them
 * costs O(n^2) to prepare (seconds at 65535), and so does "?N", looked up
 * the same way as code is generated. A bare "?" is O(1), so each $N is
 * rewritten where SQLite's own tokenizer would read it as a parameter: its
 * first use to "?", later ones to "?K" (K: the slot of its first use),
 * padded with spaces to its length so that offsets into the text stay the
 * caller's. Each prepared statement keeps a map from SQLite's slots to
 * params[]. A text with anything else SQLite reads as a parameter ("?",
 * ":a", "$a", ...), a "?K" longer than the $N it replaces, or that SQLite
 * reads otherwise than the rewrite did is prepared as the caller wrote it
 * and mapped by the names, as before; so is one whose rewritten form fails
 * with a message that quotes a "?" (the message quotes the caller's text).
 *
 * sqlite::memory: is one database shared by every connection of the pool: a
 * memdb VFS database whose name starts with '/', kept alive by an anchor
 * connection held for the pool's life, so connections may be recycled
 * without losing it.
 *
 * Reset: an authorizer watches every statement as it is prepared; one that
 * changes connection state (anything that writes the temp database, however
 * it is named: objects, rows, its header; ATTACH; setting PRAGMAs) marks the
 * connection dirty as soon as it is prepared, since SQLite applies some
 * PRAGMAs while compiling and dbscope may refuse the statement after that,
 * and again whenever it runs; so does handing out the raw handle. A full
 * reset of a dirty connection reopens it, which is cheap in process and
 * undoes everything; a clean one only rolls back. What reopening cannot
 * undo is refused: PRAGMAs that set a process-wide variable of the library
 * (soft_heap_limit, hard_heap_limit, temp_store_directory,
 * data_store_directory) may be read but not set.
 *
 * Read-only sessions: PRAGMA query_only, which the authorizer refuses to
 * turn off, and only statements sqlite3_stmt_readonly calls read-only. A
 * transaction ended by a statement of the session's (COMMIT sent as SQL) is
 * begun again before the next one (follow_tx, by sqlite3_get_autocommit).
 */
#include "internal.h"

#include <sqlite3.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct sq_stmt {
    char *sql;
    size_t len;
    uint64_t hash;
    const char *src;   /* the caller's text it was last found for (same_text) */
    sqlite3_stmt *stmt;
    int *map;          /* SQLite parameter slot i+1 -> params[map[i]] */
    int nslots;
    int max_param;     /* highest $N used */
    uint64_t used;     /* LRU tick */
    bool busy;         /* open rows are stepping it */
    bool dirty;        /* running it changes connection state */
    bool sets_query_only; /* PRAGMA query_only with a value (authorizer) */
    bool cached;
    bool holds_data;   /* a text or blob is bound (put_stmt clears it) */
} sq_stmt;

typedef struct sq_conn {
    sqlite3 *db;
    const dbs__target *t;
    sq_stmt *cache;    /* stmt_cache_size entries */
    int cache_cap;
    uint64_t tick;
    sqlite3_stmt *begin_st, *commit_st, *rollback_st;
    bool in_tx;
    bool tx_lost;      /* SQLite rolled the transaction back on an error */
    int tx_lost_code;
    bool dirty;        /* connection state changed since the last reset */
    bool preparing_dirty; /* set by the authorizer during one prepare */
    bool preparing_query_only; /* the same, for PRAGMA query_only = ... */
    const char *preparing_global; /* the same: the process-wide PRAGMA the
                                     authorizer refused (its API's name) */
    bool read_only;    /* set_read_only: only statements that write nothing */
    bool opt_ro;       /* the same, by the transaction options (tx_options) */
    bool opt_immediate; /* transactions begin with BEGIN IMMEDIATE */
    bool escaped;      /* since the last reset, a transaction dbscope began
                          ended other than by its COMMIT or ROLLBACK (a
                          COMMIT, END or ROLLBACK sent as SQL) */
    bool broken;
    bool group_sync;   /* commits wait for the shared WAL sync */
    bool sync_owed;    /* the commit hook saw a write transaction commit */
    bool file_moved;   /* the commit hook refused a COMMIT: file replaced */
    bool committing;   /* the commit hook let a write transaction's COMMIT
                          go ahead during the current step */
    bool wal_known;    /* wal_dev/wal_ino: the WAL file this connection has */
    dev_t wal_dev;
    ino_t wal_ino;
    sqlite3_stmt *nochange_st; /* a DELETE that changes nothing: changes()=0 */
    int64_t busy_since_ns; /* when the current wait on a lock began */
    bool busy_bound_hit; /* that wait ended at the statement bound, not at
                            busy_timeout_ms */
    int bound_ms;      /* statement bound (set_timeout; 0: none) */
    int64_t step_since_ns; /* when the current step was first seen running
                              by the progress handler (0: not yet) */
    bool timed_out;    /* the progress handler interrupted a step */
    atomic_bool stopped; /* sq_interrupt was called: every step and lock
                            wait from then on ends (the connection is
                            discarded after) */
    struct sq_rows *spare_rows; /* the last closed result set's memory */
} sq_conn;

typedef struct sq_rows {
    dbs_rows hdr;
    sq_conn *c;
    sq_stmt *st;       /* cached: reset on close; else finalized */
    int ncols;
    bool done;
    bool primed;       /* stepped to its first row in sq_query, not yet read */
    int64_t before;    /* total_changes() when the statement was bound */
    int64_t changes;   /* what it changed, once done (affected) */
    /* Each value's storage class on the current row, noted before its
     * first read (0: not yet; else SQLITE_INTEGER..SQLITE_NULL):
     * sqlite3_column_type is undefined once a value was converted, and a
     * BLOB read as text reports TEXT. In kinds_in unless the statement has
     * more columns than that. */
    unsigned char *kinds;
    unsigned char kinds_in[16];
} sq_rows;

/* Per pool. The file's identity is what the housekeeper compares the path
 * with: a file deleted or replaced under the pool is reported, and its
 * connections, which would go on writing into the old inode, discarded. */
typedef struct sq_shared {
    char name[96];     /* memdb URI of the in-memory database */
    sqlite3 *anchor;
    char *path;        /* file databases: the path, without ?options */
    char *file;        /* once seen: the file SQLite opened (path, or what a
                          file: URI names, decoded and absolute); what is
                          watched, and what later connections open */
    bool sync_normal;  /* ?synchronous=normal: the opt-out */
    pthread_mutex_t mu; /* seen, file, dev, ino: connects may run concurrently */
    bool seen;         /* a connection opened: do not create the file again */
    dev_t dev;         /* identity of the file the pool opened */
    ino_t ino;
    /* Group commit (file databases, unless ?synchronous=normal). Syncs of
     * the WAL are numbered; one runs at a time. */
    pthread_mutex_t gmu;
    pthread_cond_t gcv;
    uint64_t sync_started; /* syncs begun */
    uint64_t sync_done;    /* syncs finished (the last one begun, if none runs) */
    uint64_t sync_failed;  /* the last sync that failed (0: none) */
    bool syncing;
    atomic_bool ckpt_due;  /* a write found the disk full: checkpoint (full_checkpoint) */
} sq_shared;

static const dbs__rows_ops sq_rows_ops;
static inline void step_begins(sq_conn *c);
static int sq_next(dbs_rows *hr, dbs_error *err);
static void sq_rows_close(dbs_rows *hr);

/* ---- errors ---- */

static int map_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return DBS_ERETRYABLE;
    case SQLITE_CONSTRAINT: return DBS_ECONSTRAINT;
    case SQLITE_NOMEM: return DBS_ENOMEM;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN: return DBS_ECONNECT;
    case SQLITE_MISUSE: return DBS_EMISUSE;
    default: return DBS_ESQL;
    }
}

/* SQLite has no SQLSTATE; constraint kinds get the standard ones so portable
 * programs can tell a duplicate from a missing reference. */
static const char *sqlstate_for(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY: return "23505";
    case SQLITE_CONSTRAINT_FOREIGNKEY: return "23503";
    case SQLITE_CONSTRAINT_NOTNULL: return "23502";
    case SQLITE_CONSTRAINT_CHECK: return "23514";
    default: return (rc & 0xff) == SQLITE_CONSTRAINT ? "23000" : "";
    }
}

static bool is_enospc(int sys)
{
#ifdef EDQUOT
    if (sys == EDQUOT)
        return true;
#endif
    return sys == ENOSPC;
}

/* A failed fsync: what was written may or may not be on disk. */
static bool is_sync_error(int rc)
{
    return rc == SQLITE_IOERR_FSYNC || rc == SQLITE_IOERR_DIR_FSYNC;
}

static int fail(sq_conn *c, int rc, dbs_error *err, const char *what, const char *sql)
{
    if ((rc & 0xff) == SQLITE_BUSY && c->busy_bound_hit) {
        /* The wait on another connection's lock reached the statement
         * bound before busy_timeout_ms: nothing of the statement was done
         * (a COMMIT that waited committed nothing; sq_commit rolls the
         * transaction back), but the bound's rule stands: discard it. */
        c->busy_bound_hit = false;
        c->broken = true;
        bool commit = strcmp(what, "COMMIT") == 0;
        dbs__err(err, DBS_ESTMT_TIMEOUT,
                 "%s waited for another connection's lock until the statement bound "
                 "(%d ms, before busy_timeout_ms %d ms) and gave up; %s; the connection is "
                 "discarded%s%.120s%s", what, c->bound_ms, c->t->busy_timeout_ms,
                 commit ? "nothing was committed" : "it did nothing",
                 sql ? " (statement: " : "", sql ? sql : "", sql ? ")" : "");
        dbs__err_sqlstate(err, "57014");
        return DBS_ESTMT_TIMEOUT;
    }
    if ((rc & 0xff) == SQLITE_INTERRUPT && c->timed_out) {
        c->broken = true; /* the statement bound's rule: discard it */
        dbs__err(err, DBS_ESTMT_TIMEOUT,
                 "%s ran past the statement bound (%d ms) and was interrupted; the "
                 "connection is discarded%s%.120s%s", what, c->bound_ms,
                 sql ? " (statement: " : "", sql ? sql : "", sql ? ")" : "");
        dbs__err_sqlstate(err, "57014");
        return DBS_ESTMT_TIMEOUT;
    }
    if (c->file_moved) {
        /* the commit hook refused the COMMIT: SQLite rolled it back */
        c->file_moved = false;
        c->broken = true;
        if (c->in_tx && !c->tx_lost) {
            c->tx_lost = true;
            c->tx_lost_code = DBS_ECONNECT;
        }
        return dbs__err(err, DBS_ECONNECT,
                        "SQLite database file \"%s\" or its WAL was deleted or replaced "
                        "while open: the transaction was rolled back rather than committed "
                        "into a file nobody will read, and the connection is discarded",
                        c->t->conninfo);
    }
    int code = map_code(rc);
    /* A full disk is its own class, whichever way SQLite saw it: SQLITE_FULL
     * (the unix VFS's answer to ENOSPC), or an I/O error whose errno was
     * ENOSPC or EDQUOT (other VFSes; SQLite records the errno for a
     * statement's errors, not for COMMIT's). Not a failed sync: see
     * sq_commit. The connection stays usable. */
    int sys = c->db ? sqlite3_system_errno(c->db) : 0;
    if ((rc & 0xff) == SQLITE_FULL ||
        ((rc & 0xff) == SQLITE_IOERR && is_enospc(sys) && !is_sync_error(rc)))
        code = DBS_EFULL;
    if (code == DBS_EFULL && !c->t->memory)
        atomic_store_explicit(&((sq_shared *)c->t->shared)->ckpt_due, true,
                              memory_order_relaxed);
    /* An I/O error or failed sync once the commit hook let a COMMIT go
     * ahead, whatever sent it (dbs_commit, a COMMIT sent as SQL, a write in
     * autocommit mode): the commit record may be on disk, whole or not.
     * Never retried. (SQLITE_FULL wrote no commit record: DBS_EFULL.) */
    bool unknown = c->committing && (code == DBS_ECONNECT || is_sync_error(rc));
    c->committing = false;
    if (unknown)
        code = DBS_ECOMMIT_UNKNOWN;
    if (code == DBS_ECONNECT || code == DBS_ENOMEM || unknown)
        c->broken = true;
    if (c->in_tx && !c->tx_lost && sqlite3_get_autocommit(c->db)) {
        /* SQLite ended the transaction itself (busy, I/O error, ...): the
         * rest of the unit must not run in autocommit mode. */
        c->tx_lost = true;
        c->tx_lost_code = code == DBS_ECONSTRAINT ? DBS_ESQL : code;
    }
    const char *doubt = unknown ? "; the transaction may or may not have been committed" : "";
    if (sql)
        dbs__err(err, code, "%s failed: %s (statement: %.120s)%s", what,
                 sqlite3_errmsg(c->db), sql, doubt);
    else
        dbs__err(err, code, "%s failed: %s%s", what, sqlite3_errmsg(c->db), doubt);
    dbs__err_sqlstate(err, sqlstate_for(sqlite3_extended_errcode(c->db)));
    return code;
}

/* ---- the authorizer: which statements change connection state ---- */

/* PRAGMAs whose value is an argument naming what to read (a table, an
 * index, a count of errors to report): set or not, they change nothing. */
static bool pragma_reads_only(const char *name)
{
    static const char *const ro[] = {
        "table_info", "table_xinfo", "table_list", "index_info", "index_xinfo",
        "index_list", "foreign_key_list", "foreign_key_check", "integrity_check",
        "quick_check", "database_list", "collation_list", "function_list",
        "module_list", "pragma_list", "compile_options"};
    for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++)
        if (sqlite3_stricmp(name, ro[i]) == 0)
            return true;
    return false;
}

/* PRAGMAs whose value writes the database file itself: database state,
 * like any row, when the file is main or an attached one; connection
 * state when it is temp, which the next user of the connection would
 * otherwise inherit. */
static bool pragma_writes_file(const char *name)
{
    static const char *const wf[] = {"user_version", "application_id", "wal_checkpoint",
                                     "optimize", "incremental_vacuum"};
    for (size_t i = 0; i < sizeof wf / sizeof wf[0]; i++)
        if (sqlite3_stricmp(name, wf[i]) == 0)
            return true;
    return false;
}

/* PRAGMAs that set a process-wide variable of the SQLite library: every
 * connection in the process changes, and reopening this one undoes
 * nothing. Returns the C API that sets it at start-up, or NULL. */
static const char *pragma_process_wide(const char *name)
{
    static const char *const pw[][2] = {
        {"soft_heap_limit", "sqlite3_soft_heap_limit64"},
        {"hard_heap_limit", "sqlite3_hard_heap_limit64"},
        {"temp_store_directory", "the sqlite3_temp_directory variable"},
        {"data_store_directory", "the sqlite3_data_directory variable"}};
    for (size_t i = 0; i < sizeof pw / sizeof pw[0]; i++)
        if (sqlite3_stricmp(name, pw[i][0]) == 0)
            return pw[i][1];
    return NULL;
}

/* The temp database is the connection's own: whatever a statement writes
 * there (an object created, dropped or altered, a row of any temp table,
 * dbscope's dbscope_nochange included) is the next user's to see unless
 * the connection is reopened. SQLite reports the database each action
 * touches; an object named temp.x comes as SQLITE_CREATE_TABLE with db
 * "temp", not as SQLITE_CREATE_TEMP_TABLE, so the name is what counts.
 * Reads are the only actions on temp that change nothing. */
static bool writes_temp(int action, const char *db)
{
    return db && sqlite3_stricmp(db, "temp") == 0 && action != SQLITE_READ &&
           action != SQLITE_SELECT && action != SQLITE_FUNCTION &&
           action != SQLITE_RECURSIVE;
}

static int authorizer(void *user, int action, const char *a, const char *b,
                      const char *db, const char *trigger)
{
    (void)trigger;
    sq_conn *c = user;
    switch (action) {
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_TEMP_INDEX:
    case SQLITE_DROP_TEMP_TABLE:
    case SQLITE_DROP_TEMP_TRIGGER:
    case SQLITE_DROP_TEMP_VIEW:
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
    case SQLITE_CREATE_VTABLE:
        c->preparing_dirty = true;
        break;
    case SQLITE_PRAGMA: {
        /* Refused before SQLite applies it (it would, at compile time):
         * a reset cannot undo a change made to every connection. */
        const char *api = b ? pragma_process_wide(a) : NULL;
        if (api) {
            c->preparing_global = api;
            return SQLITE_DENY;
        }
        /* A pragma with a value sets something, except the few whose
         * argument only names what to read, and those that write the file
         * itself (database state, unless the file is temp). */
        bool temp = db && sqlite3_stricmp(db, "temp") == 0;
        if (b && !pragma_reads_only(a) && (temp || !pragma_writes_file(a)))
            c->preparing_dirty = true;
        /* SQLite applies a flag pragma as it compiles it (and again
         * whenever it recompiles): in a read-only session, query_only
         * must be refused here, before it takes effect. */
        if (b && sqlite3_stricmp(a, "query_only") == 0) {
            c->preparing_query_only = true;
            if (c->read_only || c->opt_ro)
                return SQLITE_DENY;
        }
        break;
    }
    default:
        if (writes_temp(action, db))
            c->preparing_dirty = true;
        break;
    }
    return SQLITE_OK;
}

/* ---- statements ---- */

static uint64_t hash_sql(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

static void stmt_free(sq_stmt *st)
{
    sqlite3_finalize(st->stmt);
    free(st->sql);
    free(st->map);
    memset(st, 0, sizeof *st);
}

/* Builds the slot -> params[] map. Only $N names are accepted: one
 * placeholder style on every backend. */
static int map_params(sq_conn *c, sq_stmt *st, const char *sql, dbs_error *err)
{
    int n = sqlite3_bind_parameter_count(st->stmt);
    st->nslots = n;
    st->max_param = 0;
    if (n == 0)
        return DBS_OK;
    st->map = malloc(sizeof(int) * (size_t)n);
    if (!st->map)
        return dbs__err(err, DBS_ENOMEM, "out of memory preparing a statement");
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_bind_parameter_name(st->stmt, i + 1);
        long k = 0;
        const char *q = name ? name + 1 : NULL;
        bool ok = name && name[0] == '$' && q[0] >= '0' && q[0] <= '9';
        for (; ok && *q; q++) {
            if (*q < '0' || *q > '9' || k > 100000) {
                ok = false;
                break;
            }
            k = k * 10 + (*q - '0');
        }
        /* "$01" is $1, as PostgreSQL's server reads it; "$0" is nothing */
        ok = ok && k >= 1;
        if (!ok) {
            (void)c;
            return dbs__err(err, DBS_ESQL,
                            "parameter \"%s\" in statement: write parameters as $1..$n "
                            "(statement: %.120s)", name ? name : "?", sql);
        }
        st->map[i] = (int)k - 1;
        if ((int)k > st->max_param)
            st->max_param = (int)k;
    }
    return DBS_OK;
}

/* The caller's text with its $N rewritten for SQLite (see the top of the
 * file), and what the rewrite read: slot i+1 is params[map[i]], first used
 * at offset first[i] (slots in the order of the text). */
typedef struct numbered {
    char *text;        /* NULL: nothing rewritten; prepare the caller's */
    int *map;
    size_t *first;
    int nslots;
} numbered;

static void numbered_free(numbered *nb)
{
    free(nb->text);
    free(nb->map);
    free(nb->first);
    memset(nb, 0, sizeof *nb);
}

/* IdChar of SQLite's tokenizer: a name, keyword or number goes on through
 * these, '$' included ("a$1" is a name). */
static bool id_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '$' || ch >= 0x80;
}

/* End of the quoted token opening at s[i] and closed by q, a doubled q
 * standing for itself ('...', "...", `...`; [...] has no escape). */
static size_t quoted_end(const char *s, size_t len, size_t i, char q)
{
    for (i++; i < len; i++) {
        if (s[i] == q) {
            if (q == ']' || i + 1 >= len || s[i + 1] != q)
                return i + 1;
            i++;
        }
    }
    return len;
}

/* Rewrites sql's $N as SQLite's tokenizer (tokenize.c) splits the text:
 * quoted strings and names, comments, names that contain '$' and numbers
 * are left whole. 0 with nb->text NULL: nothing to rewrite, or something
 * the rewrite leaves to the named path; < 0: out of memory. */
static int number_params(const char *sql, size_t len, numbered *nb)
{
    memset(nb, 0, sizeof *nb);
    if (!memchr(sql, '$', len))
        return 0;
    int *slot_of = NULL; /* $N -> its slot, 0: not yet used */
    size_t slot_cap = 0, cap = 0;
    bool named = false;
    if (!(nb->text = malloc(len + 1)))
        return -1;
    memcpy(nb->text, sql, len);
    nb->text[len] = '\0';
    char *z = nb->text;
    for (size_t i = 0; i < len && !named;) {
        unsigned char ch = (unsigned char)z[i];
        if (ch == '\'' || ch == '"' || ch == '`' || ch == '[') {
            i = quoted_end(z, len, i, ch == '[' ? ']' : (char)ch);
        } else if (ch == '-' && i + 1 < len && z[i + 1] == '-') {
            const char *nl = memchr(z + i, '\n', len - i);
            i = nl ? (size_t)(nl - z) + 1 : len;
        } else if (ch == '/' && i + 1 < len && z[i + 1] == '*') {
            size_t j = i + 2;
            while (j < len && !(z[j] == '*' && j + 1 < len && z[j + 1] == '/'))
                j++;
            i = j < len ? j + 2 : len;
        } else if (ch == '?' || ch == ':' || ch == '@' || ch == '#') {
            named = true; /* a parameter in another style, or SQLite's error */
        } else if (ch == '$') {
            size_t j = i + 1;
            long k = 0;
            while (j < len && z[j] >= '0' && z[j] <= '9' && k <= 65535)
                k = k * 10 + (z[j++] - '0');
            /* a name, "$1(...)" or "$1::x" (Tcl's forms), $0, or past
             * what any statement may be given: as the caller wrote it
             * ("$01" is $1 and shares its slot) */
            if (j == i + 1 || k == 0 || k > 65535 ||
                (j < len && (id_char((unsigned char)z[j]) || z[j] == '(' ||
                             (z[j] == ':' && j + 1 < len && z[j + 1] == ':')))) {
                named = true;
                break;
            }
            if ((size_t)k >= slot_cap) {
                size_t nc = slot_cap ? slot_cap : 16;
                while (nc <= (size_t)k)
                    nc *= 2;
                int *ns = realloc(slot_of, nc * sizeof *ns);
                if (!ns)
                    goto nomem;
                memset(ns + slot_cap, 0, (nc - slot_cap) * sizeof *ns);
                slot_of = ns;
                slot_cap = nc;
            }
            if (!slot_of[k]) {
                if ((size_t)nb->nslots == cap) {
                    size_t nc = cap ? cap * 2 : 16;
                    int *nm = realloc(nb->map, nc * sizeof *nm);
                    if (nm)
                        nb->map = nm;
                    size_t *nf = nm ? realloc(nb->first, nc * sizeof *nf) : NULL;
                    if (!nf)
                        goto nomem;
                    nb->first = nf;
                    cap = nc;
                }
                nb->map[nb->nslots] = (int)k - 1;
                nb->first[nb->nslots] = i;
                slot_of[k] = ++nb->nslots;
                z[i] = '?';
                memset(z + i + 1, ' ', j - i - 1);
            } else {
                char num[16];
                int w = snprintf(num, sizeof num, "?%d", slot_of[k]);
                if ((size_t)w > j - i) {
                    named = true; /* does not fit: the named path */
                    break;
                }
                memcpy(z + i, num, (size_t)w);
                memset(z + i + w, ' ', j - i - (size_t)w);
            }
            i = j;
        } else if (id_char(ch)) {
            while (i < len && id_char((unsigned char)z[i]))
                i++;
        } else {
            i++;
        }
    }
    free(slot_of);
    if (named || nb->nslots == 0)
        numbered_free(nb);
    return 0;
nomem:
    free(slot_of);
    numbered_free(nb);
    return -1;
}

/* Whether SQLite read the rewritten statement (up to toff) as the rewrite
 * did: the slots first used before its end, and no others. */
static bool slots_agree(const numbered *nb, sqlite3_stmt *stmt, size_t toff)
{
    int n = sqlite3_bind_parameter_count(stmt);
    return n <= nb->nslots && (n == 0 || nb->first[n - 1] < toff) &&
           (n == nb->nslots || nb->first[n] >= toff);
}

/* Prepares one statement of sql (the first; *tail gets the rest). */
static int prepare(sq_conn *c, const char *sql, size_t len, sq_stmt *st, bool persistent,
                   const char **tail, dbs_error *err)
{
    memset(st, 0, sizeof *st);
    numbered nb;
    if (number_params(sql, len, &nb) < 0)
        return dbs__err(err, DBS_ENOMEM, "out of memory preparing a statement");
    c->preparing_dirty = false;
    step_begins(c);
    c->preparing_query_only = false;
    c->preparing_global = NULL;
    unsigned flags = persistent ? SQLITE_PREPARE_PERSISTENT : 0;
    const char *text = nb.text ? nb.text : sql, *t = NULL;
    int rc = sqlite3_prepare_v3(c->db, text, (int)len, flags, &st->stmt, &t);
    if (nb.text && (rc == SQLITE_OK ? !slots_agree(&nb, st->stmt, (size_t)(t - text))
                                    : (rc & 0xff) == SQLITE_ERROR &&
                                          strchr(sqlite3_errmsg(c->db), '?'))) {
        sqlite3_finalize(st->stmt);
        st->stmt = NULL;
        numbered_free(&nb);
        text = sql;
        step_begins(c);
        rc = sqlite3_prepare_v3(c->db, sql, (int)len, flags, &st->stmt, &t);
    }
    if (tail)
        *tail = t ? sql + (t - text) : NULL;
    if (rc != SQLITE_OK)
        numbered_free(&nb);
    /* SQLite applies some statements as it compiles them (flag PRAGMAs,
     * cache_size, busy_timeout, which replaces dbscope's busy handler),
     * and a statement may be refused after this (parameters, a second
     * statement, the read-only check, binding) or fail to prepare after
     * part of it took effect: the connection is dirty from here, not only
     * once the statement runs. */
    if (c->preparing_dirty)
        c->dirty = true;
    if (rc != SQLITE_OK && c->preparing_global) {
        rc = dbs__err(err, DBS_ESQL,
                      "this PRAGMA changes a process-wide SQLite setting, shared by every "
                      "connection in the process, which no reset can undo: refused (reading "
                      "it, without a value, is allowed); set it with %s at start-up "
                      "(statement: %.120s)", c->preparing_global, sql);
        return rc;
    }
    if (rc != SQLITE_OK && c->preparing_query_only && c->read_only) {
        rc = dbs__err(err, DBS_ESQL,
                      "a read-only session (dbs_session_open_ro) cannot change query_only "
                      "(statement: %.120s); use dbs_session_open to write", sql);
        dbs__err_sqlstate(err, "25006");
        return rc;
    }
    if (rc != SQLITE_OK)
        return fail(c, rc, err, "preparing the statement", sql);
    st->dirty = c->preparing_dirty;
    st->sets_query_only = c->preparing_query_only;
    if (!st->stmt) {
        numbered_free(&nb);
        return DBS_OK; /* only whitespace or comments */
    }
    if (nb.text) {
        /* the caller's text, for messages about a step (sq_next) */
        size_t used = (size_t)(t - text);
        st->sql = malloc(used + 1);
        if (!st->sql) {
            numbered_free(&nb);
            stmt_free(st);
            return dbs__err(err, DBS_ENOMEM, "out of memory preparing a statement");
        }
        memcpy(st->sql, sql, used);
        st->sql[used] = '\0';
        st->nslots = sqlite3_bind_parameter_count(st->stmt);
        st->map = nb.map;
        nb.map = NULL;
        for (int i = 0; i < st->nslots; i++)
            if (st->map[i] + 1 > st->max_param)
                st->max_param = st->map[i] + 1;
        numbered_free(&nb);
        return DBS_OK;
    }
    int r = map_params(c, st, sql, err);
    if (r != DBS_OK) {
        stmt_free(st);
        return r;
    }
    return DBS_OK;
}

/* Whether a statement's tail holds no other statement: only what SQLite's
 * tokenizer skips (its blanks, "--" and C-style comments, an unclosed one
 * running to the end) and semicolons. */
static bool blank(const char *s)
{
    while (s && *s) {
        if (*s == ';' || *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f') {
            s++;
        } else if (s[0] == '-' && s[1] == '-') {
            s += strcspn(s, "\n");
        } else if (s[0] == '/' && s[1] == '*') {
            const char *e = strstr(s + 2, "*/");
            s = e ? e + 2 : s + strlen(s);
        } else {
            return false;
        }
    }
    return true;
}

/* The idle cached statement last found for this very pointer, if its text
 * is still the same: a program passing the same literal skips hashing. */
static sq_stmt *same_text(sq_conn *c, const char *sql)
{
    for (int i = 0; i < c->cache_cap; i++) {
        sq_stmt *e = &c->cache[i];
        /* strncmp stops at the caller's terminator: never reads past it */
        if (e->src == sql && e->stmt && !e->busy && strncmp(e->sql, sql, e->len + 1) == 0)
            return e;
    }
    return NULL;
}

/* A statement for sql: from the cache, or freshly prepared (st_out owned by
 * the caller when not cached: st_out->cached is false). */
static int get_stmt(sq_conn *c, const char *sql, sq_stmt **out, sq_stmt *scratch,
                    const char **tail, dbs_error *err)
{
    size_t len = strlen(sql);
    uint64_t h = hash_sql(sql, len);
    sq_stmt *free_slot = NULL, *lru = NULL;
    bool busy_twin = false;
    for (int i = 0; i < c->cache_cap; i++) {
        sq_stmt *e = &c->cache[i];
        if (!e->stmt) {
            if (!free_slot)
                free_slot = e;
            continue;
        }
        if (e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            if (e->busy) {
                busy_twin = true; /* open rows step it: use a private copy */
                break;
            }
            e->used = ++c->tick;
            e->src = sql;
            *out = e;
            *tail = "";
            return DBS_OK;
        }
        if (!e->busy && (!lru || e->used < lru->used))
            lru = e;
    }
    int rc = prepare(c, sql, len, scratch, c->cache_cap > 0, tail, err);
    if (rc != DBS_OK)
        return rc;
    scratch->cached = false;
    sq_stmt *slot = busy_twin ? NULL : free_slot ? free_slot : lru;
    if (slot && scratch->stmt && blank(*tail)) {
        char *copy = malloc(len + 1);
        if (copy) {
            if (slot->stmt)
                stmt_free(slot);
            *slot = *scratch;
            free(slot->sql); /* prepare's, for an uncached statement */
            memcpy(copy, sql, len + 1);
            slot->sql = copy;
            slot->len = len;
            slot->hash = h;
            slot->src = sql;
            slot->used = ++c->tick;
            slot->cached = true;
            memset(scratch, 0, sizeof *scratch);
            *out = slot;
            return DBS_OK;
        }
    }
    *out = scratch;
    return DBS_OK;
}

static void put_stmt(sq_stmt *st)
{
    if (st->cached && st->stmt) {
        sqlite3_reset(st->stmt);
        /* Every slot is bound again before the next step (bind), so only
         * a bound text or blob is worth letting go of: SQLite's copy of
         * it, or a pointer into the caller's memory. */
        if (st->holds_data) {
            sqlite3_clear_bindings(st->stmt);
            st->holds_data = false;
        }
        st->busy = false;
    } else {
        stmt_free(st);
    }
}

static int bind(sq_conn *c, sq_stmt *st, const dbs_value *params, size_t n, bool copy,
                const char *sql, dbs_error *err)
{
    if ((size_t)st->max_param > n)
        return dbs__err(err, DBS_ESQL,
                        "statement uses $%d but only %zu parameter%s given (statement: %.120s)",
                        st->max_param, n, n == 1 ? " was" : "s were", sql);
    sqlite3_destructor_type how = copy ? SQLITE_TRANSIENT : SQLITE_STATIC;
    for (int i = 0; i < st->nslots; i++) {
        const dbs_value *v = &params[st->map[i]];
        int rc;
        switch (v->type) {
        case DBS_TYPE_NULL: rc = sqlite3_bind_null(st->stmt, i + 1); break;
        case DBS_TYPE_INT: rc = sqlite3_bind_int64(st->stmt, i + 1, v->i); break;
        case DBS_TYPE_REAL:
            /* SQLite stores a NaN as NULL: refused rather than lost. */
            if (v->r != v->r)
                return dbs__err(err, DBS_ESQL,
                                "parameter $%d is NaN, which SQLite cannot store (it "
                                "would be NULL)", st->map[i] + 1);
            rc = sqlite3_bind_double(st->stmt, i + 1, v->r);
            break;
        case DBS_TYPE_TEXT:
        case DBS_TYPE_JSON: /* text to SQLite's json functions */
            if (!v->b.p)
                rc = sqlite3_bind_null(st->stmt, i + 1);
            else
                rc = sqlite3_bind_text64(st->stmt, i + 1, v->b.p,
                                         v->b.n == SIZE_MAX ? strlen(v->b.p) : v->b.n,
                                         how, SQLITE_UTF8);
            break;
        case DBS_TYPE_BLOB:
            if (!v->b.p)
                rc = sqlite3_bind_null(st->stmt, i + 1);
            else
                rc = sqlite3_bind_blob64(st->stmt, i + 1, v->b.p, v->b.n, how);
            break;
        /* SQLite has no such types: booleans are the integers 0 and 1,
         * the rest text that its own functions read. */
        case DBS_TYPE_BOOL: rc = sqlite3_bind_int64(st->stmt, i + 1, v->i ? 1 : 0); break;
        case DBS_TYPE_TIMESTAMP: {
            char t[DBS_TIMESTAMP_TEXT_LEN];
            int tn = dbs_timestamp_format(v->ts, t);
            if (tn < 0)
                return dbs__err(err, DBS_EMISUSE, "parameter $%d: timestamp out of range",
                                st->map[i] + 1);
            rc = sqlite3_bind_text64(st->stmt, i + 1, t, (sqlite3_uint64)tn, SQLITE_TRANSIENT,
                                     SQLITE_UTF8);
            break;
        }
        case DBS_TYPE_UUID: {
            char t[37];
            if (!v->b.p) {
                rc = sqlite3_bind_null(st->stmt, i + 1);
                break;
            }
            dbs_uuid_format(v->b.p, t);
            rc = sqlite3_bind_text64(st->stmt, i + 1, t, 36, SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        }
        default:
            return dbs__err(err, DBS_EMISUSE, "parameter $%d has unknown type %d",
                            st->map[i] + 1, (int)v->type);
        }
        if (rc != SQLITE_OK)
            return fail(c, rc, err, "binding a parameter", sql);
        /* a number or a NULL holds nothing that outlives the unit */
        if (v->type != DBS_TYPE_INT && v->type != DBS_TYPE_BOOL && v->type != DBS_TYPE_NULL &&
            v->type != DBS_TYPE_REAL)
            st->holds_data = true;
    }
    return DBS_OK;
}

/* A read-only session runs only statements that SQLite itself says write
 * nothing (sqlite3_stmt_readonly, checked before the first step, cached
 * statements included), and never turns query_only off: read-only holds
 * whatever the caller sends. */
static int ro_check(const sq_conn *c, const sq_stmt *st, const char *sql, dbs_error *err)
{
    if ((!c->read_only && !c->opt_ro) ||
        (sqlite3_stmt_readonly(st->stmt) && !st->sets_query_only))
        return DBS_OK;
    int rc = dbs__err(err, DBS_ESQL,
                      "a read-only session (dbs_session_open_ro) cannot run a statement "
                      "that writes or changes query_only (statement: %.120s); use "
                      "dbs_session_open to write", sql);
    dbs__err_sqlstate(err, "25006");
    return rc;
}

static int step_simple(sq_conn *c, sqlite3_stmt *st, const char *what, dbs_error *err);
static int run_simple(sq_conn *c, const char *sql, dbs_error *err);

/* BEGIN, or BEGIN IMMEDIATE by the transaction options. */
static int begin_now(sq_conn *c, dbs_error *err)
{
    if (c->opt_immediate)
        return run_simple(c, "BEGIN IMMEDIATE", err);
    return step_simple(c, c->begin_st, "BEGIN", err);
}

/* Before and after each statement: SQLite's own report of the transaction
 * dbscope began. A COMMIT, END or ROLLBACK sent as SQL puts the connection
 * back in autocommit mode: something may have committed (escaped), and a
 * new transaction begins at once, so no later statement of the session
 * runs outside one. (A transaction SQLite ended itself on an error is
 * tx_lost, refused until rollback.) */
static int escaped_tx(sq_conn *c, dbs_error *err)
{
    c->escaped = true;
    return begin_now(c, err);
}

/* Inline: every statement asks twice, and nearly always the answer is
 * that the transaction is still there. */
static inline int follow_tx(sq_conn *c, dbs_error *err)
{
    if (!c->in_tx || c->tx_lost || c->broken || !c->db || !sqlite3_get_autocommit(c->db))
        return DBS_OK;
    return escaped_tx(c, err);
}

static int lost_tx(sq_conn *c, dbs_error *err)
{
    return dbs__err(err, c->tx_lost_code,
                    "the transaction was rolled back by SQLite after an earlier error; "
                    "roll back and run the unit of work again");
}

/* ---- the method table ---- */

static int sq_target_open(dbs__target *t, dbs_error *err)
{
    static atomic_uint serial;
    sq_shared *sh = calloc(1, sizeof *sh);
    if (!sh)
        return dbs__err(err, DBS_ENOMEM, "out of memory");
    if (!t->memory) {
        /* config.c accepted only ?synchronous=full|normal after the path */
        const char *q = strchr(t->conninfo, '?');
        size_t n = q ? (size_t)(q - t->conninfo) : strlen(t->conninfo);
        /* A relative path is made absolute once, here: a program that
         * changes directory later (a daemon's chdir("/")) must not have its
         * next connections open, or the housekeeper look for, another file.
         * So is an SQLite URI's (file:rel.db), which SQLite would resolve at
         * the first connect, late with lazy_open: it becomes file:// and
         * the directory, escaped where a URI would read it otherwise. */
        bool uri = strncmp(t->conninfo, "file:", 5) == 0;
        bool rel = uri ? t->conninfo[5] != '/' && n > 5 : t->conninfo[0] != '/';
        char cwd[4096] = "", pre[3 * 4096 + 16] = "";
        if (rel && !getcwd(cwd, sizeof cwd)) {
            free(sh);
            return dbs__err(err, DBS_ECONFIG,
                            "cannot resolve the relative SQLite path \"%.*s\": the current "
                            "directory is unknown; use sqlite:///abs/path.db", (int)n,
                            t->conninfo);
        }
        size_t cl = 0, skip = uri && rel ? 5 : 0;
        if (uri && rel)
            cl = (size_t)snprintf(pre, sizeof pre, "file://");
        for (const char *d = cwd; *d; d++)
            cl += (size_t)snprintf(pre + cl, sizeof pre - cl,
                                   uri && strchr("%?#", *d) ? "%%%02X" : "%c",
                                   (unsigned char)*d);
        if (rel)
            pre[cl++] = '/';
        sh->path = malloc(cl + n - skip + 1);
        if (!sh->path) {
            free(sh);
            return dbs__err(err, DBS_ENOMEM, "out of memory");
        }
        memcpy(sh->path, pre, cl);
        memcpy(sh->path + cl, t->conninfo + skip, n - skip);
        sh->path[cl + n - skip] = '\0';
        sh->sync_normal = q && strcmp(q, "?synchronous=normal") == 0;
        pthread_mutex_init(&sh->mu, NULL);
        pthread_mutex_init(&sh->gmu, NULL);
        pthread_cond_init(&sh->gcv, NULL);
        t->shared = sh;
        return DBS_OK;
    }
    snprintf(sh->name, sizeof sh->name, "file:/dbscope-mem-%ld-%u?vfs=memdb",
             (long)getpid(), atomic_fetch_add(&serial, 1));
    int rc = sqlite3_open_v2(sh->name, &sh->anchor,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                 SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        dbs__err(err, DBS_ECONNECT, "cannot create the in-memory SQLite database: %s",
                 sh->anchor ? sqlite3_errmsg(sh->anchor) : sqlite3_errstr(rc));
        sqlite3_close(sh->anchor);
        free(sh);
        return DBS_ECONNECT;
    }
    t->shared = sh;
    return DBS_OK;
}

static void sq_target_close(dbs__target *t)
{
    sq_shared *sh = t->shared;
    if (!sh)
        return;
    sqlite3_close(sh->anchor);
    if (sh->file != sh->path)
        free(sh->file);
    if (sh->path) {
        pthread_mutex_destroy(&sh->mu);
        pthread_mutex_destroy(&sh->gmu);
        pthread_cond_destroy(&sh->gcv);
    }
    free(sh->path);
    free(sh);
    t->shared = NULL;
}

static int run_simple(sq_conn *c, const char *sql, dbs_error *err)
{
    step_begins(c);
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK)
        return fail(c, rc, err, sql, NULL);
    return DBS_OK;
}

static void close_db(sq_conn *c)
{
    for (int i = 0; i < c->cache_cap; i++)
        if (c->cache[i].stmt)
            stmt_free(&c->cache[i]);
    sqlite3_finalize(c->begin_st);
    sqlite3_finalize(c->commit_st);
    sqlite3_finalize(c->rollback_st);
    sqlite3_finalize(c->nochange_st);
    c->begin_st = c->commit_st = c->rollback_st = c->nochange_st = NULL;
    sqlite3_close(c->db); /* no statement is left, so this cannot be busy */
    c->db = NULL;
}

/* Waiting on another connection's lock. SQLite's own busy handler sleeps in
 * steps that grow to 100 ms, so a writer that goes to sleep just before the
 * lock is freed loses it to others again and again: under write contention
 * its wait reaches seconds. Short steps (50 us, doubling to at most 1 ms)
 * keep every waiter close to the front, for a little more polling. The wait
 * ends at the earlier of busy_timeout_ms from its start (SQLITE_BUSY:
 * DBS_ERETRYABLE) and the statement bound, counted from the start of the
 * step (SQLITE_BUSY with busy_bound_hit: DBS_ESTMT_TIMEOUT, see fail). */
static int on_busy(void *arg, int count)
{
    sq_conn *c = arg;
    if (atomic_load_explicit(&c->stopped, memory_order_relaxed))
        return 0; /* interrupted: sqlite3_interrupt does not end this wait */
    int64_t now = dbs__now_ns();
    if (count == 0) {
        c->busy_since_ns = now;
        c->busy_bound_hit = false;
        if (c->step_since_ns == 0)
            c->step_since_ns = now; /* the statement bound counts the wait */
    }
    int64_t busy_end = c->busy_since_ns + (int64_t)c->t->busy_timeout_ms * 1000000;
    int64_t end = busy_end;
    if (c->bound_ms > 0 && c->step_since_ns + (int64_t)c->bound_ms * 1000000 < busy_end)
        end = c->step_since_ns + (int64_t)c->bound_ms * 1000000;
    if (now >= end) {
        c->busy_bound_hit = end < busy_end;
        return 0;
    }
    int64_t step_us = count < 10 ? 50LL << (count / 2) : 1000;
    if (step_us > 1000)
        step_us = 1000;
    if (step_us * 1000 > end - now)
        step_us = (end - now + 999) / 1000;
    struct timespec ts = {0, (long)(step_us * 1000)};
    nanosleep(&ts, NULL);
    return 1;
}

/* The statement bound: SQLite calls this every few thousand VM steps of a
 * running statement. The first call of a step notes the time, so a short
 * statement costs no clock read; one that runs past the bound is
 * interrupted (SQLITE_INTERRUPT, then DBS_ESTMT_TIMEOUT). */
static int on_progress(void *arg)
{
    sq_conn *c = arg;
    /* an interrupt that came while no statement ran was a no-op for
     * SQLite (it forgets one once none is active): the statement begun
     * since ends here instead of running to its bound */
    if (atomic_load_explicit(&c->stopped, memory_order_relaxed))
        return 1;
    if (c->bound_ms <= 0)
        return 0;
    int64_t now = dbs__now_ns();
    if (c->step_since_ns == 0) {
        c->step_since_ns = now;
        return 0;
    }
    if (now - c->step_since_ns < (int64_t)c->bound_ms * 1000000)
        return 0;
    c->timed_out = true;
    return 1;
}

/* Before each sqlite3_step (and each prepare, which may wait on a lock to
 * read the schema): a new round of the statement bound. */
static inline void step_begins(sq_conn *c)
{
    c->step_since_ns = 0;
    c->busy_bound_hit = false;
    c->committing = false;
}

/* Why a file could not be opened or set up, by what the OS reported: a
 * path that cannot work (its directory missing or a file, permission
 * denied, a directory where the file should be) is DBS_ECONFIG, permanent, not an
 * outage; anything else DBS_ECONNECT. creating: the pool's first connect,
 * allowed to create the file (later, a missing file was deleted under the
 * pool: DBS_ECONNECT, see target_check). Fills err when given. */
/* The read-only refusals that end by themselves: another connection is
 * recovering the WAL or holds the lock that recovery needs, a hot journal
 * waits for a writer to roll it back, the file was moved while opening.
 * Outages (DBS_ECONNECT), not a file this process may never write. */
static bool readonly_for_now(int rc)
{
    return rc == SQLITE_READONLY_RECOVERY || rc == SQLITE_READONLY_CANTLOCK ||
           rc == SQLITE_READONLY_ROLLBACK || rc == SQLITE_READONLY_DBMOVED;
}

static int open_failed(sq_conn *c, int rc, bool creating, dbs_error *err)
{
    const dbs__target *t = c->t;
    sq_shared *sh = t->shared;
    int sys = c->db ? sqlite3_system_errno(c->db) : 0;
    const char *sqmsg = c->db && sqlite3_errcode(c->db) != SQLITE_OK ? sqlite3_errmsg(c->db)
                                                                     : sqlite3_errstr(rc);
    if (t->memory || !sh->path)
        return dbs__err(err, DBS_ECONNECT, "cannot open SQLite database \"%s\": %s",
                        t->conninfo, sqmsg);
    /* The directory the file is in: the file SQLite made of the URL once
     * one connection opened it, else the URL's own path (a file: URI's
     * without its authority, query and fragment, escapes decoded, as
     * SQLite reads it), not its spelling. */
    char dir[4096], upath[4096];
    const char *path = sh->path;
    pthread_mutex_lock(&sh->mu);
    if (sh->seen)
        path = sh->file; /* set once, before seen */
    pthread_mutex_unlock(&sh->mu);
    if (strncmp(path, "file:", 5) == 0) {
        const char *u = path + 5;
        if (u[0] == '/' && u[1] == '/')
            u += 2 + strcspn(u + 2, "/");
        size_t n = 0;
        for (; *u && *u != '?' && *u != '#' && n < sizeof upath - 1; u++) {
            if (u[0] == '%' && isxdigit((unsigned char)u[1]) && isxdigit((unsigned char)u[2])) {
                char hex[3] = {u[1], u[2], '\0'};
                upath[n++] = (char)strtol(hex, NULL, 16);
                u += 2;
            } else {
                upath[n++] = *u;
            }
        }
        upath[n] = '\0';
        path = upath;
    }
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 0;
    if (dl == 0 || dl >= sizeof dir)
        snprintf(dir, sizeof dir, "%s", slash ? "/" : ".");
    else {
        memcpy(dir, path, dl);
        dir[dl] = '\0';
    }
    struct stat st;
    int code = DBS_ECONNECT;
    const char *fix = "";
    int dir_rc = stat(dir, &st);
    int dir_errno = dir_rc != 0 ? errno : 0;
    if (sys == ENAMETOOLONG || sys == ELOOP || dir_errno == ENAMETOOLONG ||
        dir_errno == ELOOP) {
        /* SQLite follows symbolic links itself and reports a loop as a
         * name too long: either way, no connect will ever get past it */
        code = DBS_ECONFIG;
        fix = "the path is too long (a name over 255 bytes) or loops through a symbolic "
              "link: fix the path in the URL";
    } else if (dir_rc != 0 && (dir_errno == ENOENT || dir_errno == ENOTDIR)) {
        code = DBS_ECONFIG;
        fix = "its directory does not exist: create it or fix the path in the URL";
    } else if (dir_rc == 0 && !S_ISDIR(st.st_mode)) {
        code = DBS_ECONFIG;
        fix = "its directory is not a directory (a file stands in its place): fix the path "
              "in the URL";
    } else if (sys == EACCES || sys == EPERM || sys == EROFS ||
               ((rc & 0xff) == SQLITE_READONLY && !readonly_for_now(rc))) {
        code = DBS_ECONFIG;
        fix = "permission denied: the file and its directory must be readable and "
              "writable by this process (or fix the path in the URL)";
    } else if (sys == EISDIR || sys == ENOTDIR || (stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
        code = DBS_ECONFIG;
        fix = "the path names a directory: name a file in the URL";
    } else if ((rc & 0xff) == SQLITE_NOTADB) {
        /* no connect will ever read it: not an outage */
        code = DBS_ECONFIG;
        fix = "the file is not an SQLite database (or is encrypted): fix the path in the URL";
    } else if (creating && sys == ENOENT) {
        /* Allowed to create it, and still "no such file": a component
         * of the path is missing or unreadable. */
        code = DBS_ECONFIG;
        fix = "the path cannot be created: check its directory and permissions";
    }
    if (code == DBS_ECONFIG)
        return dbs__err(err, code, "cannot open SQLite database \"%s\": %s (%s)",
                        t->conninfo, fix, sqmsg);
    return dbs__err(err, code, "cannot open SQLite database \"%s\": %s", t->conninfo,
                    sqmsg);
}

/* The identity of the file at path, as (dev, ino); false if there is none. */
static bool file_id(const char *path, dev_t *dev, ino_t *ino)
{
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return false;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return true;
}

/* SQLite calls this as a transaction commits, before the commit is done;
 * nonzero turns the COMMIT into a ROLLBACK. Only transactions that wrote
 * the main database matter here (a temp-only write needs no sync). */
static int on_commit(void *arg)
{
    sq_conn *c = arg;
    if (sqlite3_txn_state(c->db, "main") != SQLITE_TXN_WRITE)
        return 0;
    /* Still the files this connection opened? A commit into an unlinked
     * inode would be acknowledged and then lost. One stat each. */
    int moved = 0;
    dev_t dev;
    ino_t ino;
    if ((sqlite3_file_control(c->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK &&
         moved) ||
        (c->wal_known &&
         (!file_id(sqlite3_filename_wal(sqlite3_db_filename(c->db, "main")), &dev, &ino) ||
          dev != c->wal_dev || ino != c->wal_ino))) {
        c->file_moved = true;
        return 1;
    }
    c->sync_owed = c->group_sync;
    c->committing = true;
    return 0;
}

/* Makes the commits this connection made durable: waits for a sync of the
 * WAL that begins after now, running it if no other thread is (the
 * leader). Every commit written before a sync begins is covered by it. */
static int group_sync(sq_conn *c, dbs_error *err)
{
    sq_shared *sh = c->t->shared;
    c->sync_owed = false;
    pthread_mutex_lock(&sh->gmu);
    uint64_t need = sh->sync_started + 1;
    while (sh->sync_done < need) {
        if (sh->syncing) {
            pthread_cond_wait(&sh->gcv, &sh->gmu);
            continue;
        }
        sh->syncing = true;
        uint64_t gen = ++sh->sync_started;
        pthread_mutex_unlock(&sh->gmu);
        sqlite3_file *wal = NULL;
        int rc = sqlite3_file_control(c->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
        if (rc == SQLITE_OK)
            rc = wal && wal->pMethods ? wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL)
                                      : SQLITE_IOERR_FSYNC;
        pthread_mutex_lock(&sh->gmu);
        sh->syncing = false;
        sh->sync_done = gen;
        if (rc != SQLITE_OK)
            sh->sync_failed = gen;
        pthread_cond_broadcast(&sh->gcv);
    }
    /* A failed sync may have dropped what it was to write (the kernel
     * marks the pages clean): every commit it covered is in doubt. */
    bool failed = sh->sync_failed >= need;
    pthread_mutex_unlock(&sh->gmu);
    if (!failed)
        return DBS_OK;
    c->broken = true;
    return dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                    "the commit to SQLite database \"%s\" could not be made durable: "
                    "syncing its WAL failed (other connections may already see it, a "
                    "power loss may undo it); the connection is discarded",
                    c->t->conninfo);
}

/* After a statement finished: a write transaction that it committed is
 * acknowledged only once it is durable. */
static inline int settle(sq_conn *c, dbs_error *err)
{
    return c->sync_owed ? group_sync(c, err) : DBS_OK;
}

static int open_db(sq_conn *c, dbs_error *err)
{
    const dbs__target *t = c->t;
    sq_shared *sh = t->shared;
    const char *name = t->memory ? sh->name : sh->path;
    /* The file is created by the pool's first connection only: once it
     * existed, a missing file means it was deleted, and a new empty one
     * would take writes in silence. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    bool seen = true;
    if (!t->memory) {
        pthread_mutex_lock(&sh->mu);
        seen = sh->seen;
        if (seen)
            name = sh->file; /* set once, before seen */
        pthread_mutex_unlock(&sh->mu);
    }
    if (!seen)
        flags |= SQLITE_OPEN_CREATE;
    if (t->memory || strncmp(name, "file:", 5) == 0)
        flags |= SQLITE_OPEN_URI;
    int rc = sqlite3_open_v2(name, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        int code = open_failed(c, rc, !seen, err);
        sqlite3_close(c->db);
        c->db = NULL;
        return code;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_handler(c->db, on_busy, c);
    c->bound_ms = t->statement_timeout_ms;
    c->timed_out = false;
    sqlite3_progress_handler(c->db, 4000, on_progress, c);
    /* synchronous=NORMAL: a commit writes the WAL without syncing it; by
     * default the group sync (group_sync) then makes it durable before it
     * is acknowledged, as FULL would. ?synchronous=normal (the opt-out)
     * leaves it to the checkpoints and may lose the last commits.
     * PRAGMA schema_version reads the file, which opens the WAL: its
     * identity is then the one this connection writes to. The temp table
     * is where a DELETE that changes nothing runs at reset. */
    const char *setup = t->memory
                            ? "PRAGMA foreign_keys=ON; CREATE TEMP TABLE dbscope_nochange (x)"
                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                              "PRAGMA foreign_keys=ON; PRAGMA schema_version; "
                              "CREATE TEMP TABLE dbscope_nochange (x)";
    char *msg = NULL;
    rc = sqlite3_exec(c->db, setup, NULL, NULL, &msg);
    c->group_sync = !t->memory && !sh->sync_normal;
    c->wal_known = !t->memory &&
                   file_id(sqlite3_filename_wal(sqlite3_db_filename(c->db, "main")), &c->wal_dev,
                           &c->wal_ino);
    /* A file this process may only read opens read-only without a word
     * (and, once in WAL mode, gets past the setup): every write would
     * fail later, as a statement's error. */
    if (rc == SQLITE_OK && !t->memory && sqlite3_db_readonly(c->db, "main") == 1)
        rc = SQLITE_READONLY;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(c->db, "DELETE FROM temp.dbscope_nochange WHERE 0", -1,
                                SQLITE_PREPARE_PERSISTENT, &c->nochange_st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(c->db, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &c->begin_st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(c->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &c->commit_st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(c->db, "ROLLBACK", -1, SQLITE_PREPARE_PERSISTENT,
                                &c->rollback_st, NULL);
    if (rc != SQLITE_OK) {
        int code = map_code(rc) == DBS_ENOMEM
                       ? dbs__err(err, DBS_ENOMEM, "cannot set up SQLite database \"%s\": %s",
                                  t->conninfo, msg ? msg : sqlite3_errmsg(c->db))
                       : open_failed(c, rc, !seen, err);
        sqlite3_free(msg);
        close_db(c);
        return code;
    }
    sqlite3_set_authorizer(c->db, authorizer, c);
    sqlite3_commit_hook(c->db, on_commit, c);
    c->dirty = c->in_tx = c->tx_lost = c->broken = false;
    c->sync_owed = c->file_moved = false;
    if (!seen) {
        /* A file: URI is watched, and opened from now on, as the file
         * SQLite made of it: the URI itself names nothing stat() finds. */
        bool uri = strncmp(name, "file:", 5) == 0;
        const char *real = uri ? sqlite3_db_filename(c->db, "main") : sh->path;
        if (!real || !*real) {
            /* SQLite's private temporary database: one per connection */
            close_db(c);
            return dbs__err(err, DBS_ECONFIG,
                            "SQLite URL \"%s\" names no file (SQLite would give each "
                            "connection a temporary database of its own): name a file, "
                            "sqlite:///abs/path.db", t->conninfo);
        }
        char *keep = uri ? strdup(real) : sh->path;
        if (!keep) {
            close_db(c);
            return dbs__err(err, DBS_ENOMEM, "out of memory");
        }
        struct stat st;
        pthread_mutex_lock(&sh->mu);
        if (!sh->seen && stat(keep, &st) == 0) {
            sh->file = keep;
            keep = NULL;
            sh->dev = st.st_dev;
            sh->ino = st.st_ino;
            sh->seen = true;
        }
        pthread_mutex_unlock(&sh->mu);
        if (keep != sh->path)
            free(keep);
    }
    return DBS_OK;
}

static void *sq_connect(const dbs__target *t, dbs_error *err)
{
    sq_conn *c = calloc(1, sizeof *c);
    if (!c) {
        dbs__err(err, DBS_ENOMEM, "out of memory");
        return NULL;
    }
    c->t = t;
    c->cache_cap = t->stmt_cache_size;
    if (c->cache_cap > 0) {
        c->cache = calloc((size_t)c->cache_cap, sizeof *c->cache);
        if (!c->cache) {
            free(c);
            dbs__err(err, DBS_ENOMEM, "out of memory");
            return NULL;
        }
    }
    if (open_db(c, err) != DBS_OK) {
        free(c->cache);
        free(c);
        return NULL;
    }
    return c;
}

static void sq_close(void *vc)
{
    sq_conn *c = vc;
    if (!c)
        return;
    if (c->db)
        close_db(c);
    free(c->spare_rows);
    free(c->cache);
    free(c);
}

static int step_simple(sq_conn *c, sqlite3_stmt *st, const char *what, dbs_error *err)
{
    step_begins(c);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return fail(c, rc, err, what, NULL);
    return DBS_OK;
}

/* Whether the pool's path still names the file this connection has open.
 * SQLite resolves symbolic links when it opens a file, and its own check
 * (SQLITE_FCNTL_HAS_MOVED) looks at the file it resolved: a link on the
 * way (a deployment's "current" link to the file or its directory)
 * switched to another database leaves that file in place, and the
 * connection would go on reading and committing there while new ones
 * open the other. */
static bool on_pool_path(sq_conn *c)
{
    sq_shared *sh = c->t->shared;
    const char *path = NULL;
    pthread_mutex_lock(&sh->mu);
    if (sh->seen)
        path = sh->file; /* set once, before seen */
    pthread_mutex_unlock(&sh->mu);
    dev_t d1, d2;
    ino_t i1, i2;
    return !path || (file_id(sqlite3_db_filename(c->db, "main"), &d1, &i1) &&
                     file_id(path, &d2, &i2) && d1 == d2 && i1 == i2);
}

static int sq_ping(void *vc, dbs_error *err)
{
    sq_conn *c = vc;
    if (c->broken || !c->db)
        return dbs__err(err, DBS_ECONNECT, "SQLite connection is broken");
    /* A file unlinked or renamed under the connection: SQLite would go on
     * writing into the old inode, which nobody will ever read. */
    int moved = 0;
    if (!c->t->memory &&
        ((sqlite3_file_control(c->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK &&
          moved) ||
         !on_pool_path(c))) {
        c->broken = true;
        return dbs__err(err, DBS_ECONNECT,
                        "SQLite database file \"%s\" was deleted or replaced while open; "
                        "the connection is discarded", c->t->conninfo);
    }
    /* Reads the file header: fails if the file went away or is corrupt. */
    int rc = run_simple(c, "PRAGMA schema_version", err);
    if (rc != DBS_OK)
        c->broken = true;
    return rc;
}

/* For the housekeeper: has the file at the path changed since the pool
 * opened it (deleted, or replaced by another file)? Reported once per
 * change: the identity then follows the file now at the path. */
static int target_check_locked(sq_shared *sh, dbs_error *err);

static int sq_target_check(dbs__target *t, dbs_error *err)
{
    sq_shared *sh = t->shared;
    if (t->memory || !sh)
        return DBS_OK;
    pthread_mutex_lock(&sh->mu);
    int rc = target_check_locked(sh, err);
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static int target_check_locked(sq_shared *sh, dbs_error *err)
{
    if (!sh->seen)
        return DBS_OK;
    struct stat st;
    if (stat(sh->file, &st) != 0) {
        if (sh->ino == 0)
            return DBS_OK; /* reported already */
        sh->ino = 0;
        return dbs__err(err, DBS_ECONNECT,
                        "SQLite database file \"%s\" was deleted while the pool had it "
                        "open; open connections are discarded and none is opened until "
                        "it is back", sh->file);
    }
    if (st.st_dev == sh->dev && st.st_ino == sh->ino)
        return DBS_OK;
    sh->dev = st.st_dev;
    sh->ino = st.st_ino;
    return dbs__err(err, DBS_ECONNECT,
                    "SQLite database file \"%s\" was replaced while the pool had it open; "
                    "connections to the old file are discarded", sh->file);
}

/* A write found the disk full. SQLite checkpoints by itself only after a
 * commit that leaves 1000 pages in the WAL (4 MB): a WAL that filled the
 * disk below that, or while a reader held checkpoints back, is never
 * copied into the database and restarted, and every write fails from then
 * on, even once space is freed (the WAL grows into it). So until one
 * checkpoint has copied the whole WAL, each connection tries one outside
 * a transaction, before it begins one and as it is released: PASSIVE, it
 * waits for nobody, and fails harmlessly while the disk is still full.
 * Once the WAL is copied, the next write restarts it from its start, in
 * space the file already has. Checkpoints by any connection keep the group
 * sync sound (see the top of this file). */
static void full_checkpoint(sq_conn *c)
{
    sq_shared *sh = c->t->shared;
    /* the flag first: it is up only after a write found the disk full */
    if (!atomic_load_explicit(&sh->ckpt_due, memory_order_relaxed) || c->t->memory ||
        !c->db || c->broken || !sqlite3_get_autocommit(c->db))
        return;
    int log = 0, copied = 0;
    if (sqlite3_wal_checkpoint_v2(c->db, "main", SQLITE_CHECKPOINT_PASSIVE, &log, &copied) ==
            SQLITE_OK &&
        copied >= log)
        atomic_store_explicit(&sh->ckpt_due, false, memory_order_relaxed);
}

static int sq_begin(void *vc, const dbs_context *ctx, dbs_error *err)
{
    (void)ctx; /* SQLite has no per-transaction settings to carry it */
    sq_conn *c = vc;
    full_checkpoint(c);
    int rc = begin_now(c, err);
    if (rc == DBS_OK) {
        c->in_tx = true;
        c->tx_lost = false;
    }
    return rc;
}

static int64_t sq_exec(void *vc, const char *sql, const dbs_value *params, size_t n,
                       dbs_error *err)
{
    sq_conn *c = vc;
    if (c->tx_lost)
        return lost_tx(c, err);
    const char *cur = sql;
    int64_t changes = 0;
    int max_param = 0;
    bool any = false;
    /* A text of several statements (a migration script) runs them in order;
     * each binds the $N it uses. */
    while (cur && *cur) {
        sq_stmt scratch, *st;
        const char *tail = NULL;
        int rc = get_stmt(c, cur, &st, &scratch, &tail, err);
        if (rc != DBS_OK)
            return rc;
        if (!st->stmt) {
            put_stmt(st);
            cur = tail;
            continue;
        }
        any = true;
        if (st->max_param > max_param)
            max_param = st->max_param;
        rc = ro_check(c, st, sql, err);
        /* One parameter too many is refused before the last statement
         * runs (the only one of a single statement), as the other
         * backends refuse it before sending: not after it wrote. */
        if (rc == DBS_OK && blank(tail) && (size_t)max_param < n)
            rc = dbs__err(err, DBS_ESQL,
                          "%zu parameters given but the statement uses only up to $%d "
                          "(statement: %.120s)", n, max_param, sql);
        if (rc == DBS_OK)
            rc = bind(c, st, params, n, false, sql, err);
        if (rc != DBS_OK) {
            put_stmt(st);
            return rc;
        }
        if (st->dirty)
            c->dirty = true;
        int64_t before = sqlite3_total_changes64(c->db);
        int s;
        step_begins(c);
        while ((s = sqlite3_step(st->stmt)) == SQLITE_ROW) {
        }
        if (s != SQLITE_DONE) {
            rc = fail(c, sqlite3_extended_errcode(c->db), err, "statement", sql);
            put_stmt(st);
            return rc;
        }
        changes = sqlite3_total_changes64(c->db) != before ? sqlite3_changes64(c->db) : 0;
        put_stmt(st);
        /* a COMMIT sent as SQL, or a write in autocommit mode */
        rc = settle(c, err);
        if (rc == DBS_OK) /* and a new transaction after such a COMMIT */
            rc = follow_tx(c, err);
        if (rc != DBS_OK)
            return rc;
        cur = tail;
    }
    if (!any)
        return dbs__err(err, DBS_ESQL, "empty statement");
    if ((size_t)max_param < n)
        return dbs__err(err, DBS_ESQL,
                        "%zu parameters given but the statement uses only up to $%d "
                        "(statement: %.120s)", n, max_param, sql);
    return changes;
}

static dbs_rows *sq_query(void *vc, const char *sql, const dbs_value *params, size_t n,
                          dbs_error *err)
{
    sq_conn *c = vc;
    if (c->tx_lost) {
        lost_tx(c, err);
        return NULL;
    }
    if (follow_tx(c, err) != DBS_OK)
        return NULL;
    sq_rows *r = c->spare_rows;
    if (r) {
        /* Only what is read before it is set below: kinds_in is cleared
         * by each step that gives a row, before anything reads it. */
        c->spare_rows = NULL;
        r->hdr = (dbs_rows){0};
        r->done = r->primed = false;
        r->changes = 0;
    } else if (!(r = calloc(1, sizeof *r))) {
        dbs__err(err, DBS_ENOMEM, "out of memory");
        return NULL;
    }
    sq_stmt scratch, *st = same_text(c, sql);
    const char *tail = "";
    if (st) {
        st->used = ++c->tick;
    } else if (get_stmt(c, sql, &st, &scratch, &tail, err) != DBS_OK) {
        free(r);
        return NULL;
    }
    int rc = DBS_OK;
    if (!st->stmt)
        rc = dbs__err(err, DBS_ESQL, "empty query");
    else if (*tail && !blank(tail)) /* "" for a cached statement */
        rc = dbs__err(err, DBS_ESQL,
                      "dbs_query runs one statement; this text has more (statement: %.120s)", sql);
    else if ((size_t)st->max_param < n)
        rc = dbs__err(err, DBS_ESQL,
                      "%zu parameters given but the query uses only up to $%d (statement: %.120s)",
                      n, st->max_param, sql);
    else if ((rc = ro_check(c, st, sql, err)) == DBS_OK)
        rc = bind(c, st, params, n, true, sql, err);
    if (rc != DBS_OK) {
        put_stmt(st);
        free(r);
        return NULL;
    }
    if (!st->cached) {
        /* the scratch lives on this stack frame: move it to the heap */
        sq_stmt *own = malloc(sizeof *own);
        if (!own) {
            put_stmt(st);
            free(r);
            dbs__err(err, DBS_ENOMEM, "out of memory");
            return NULL;
        }
        *own = *st;
        st = own;
    }
    if (st->dirty)
        c->dirty = true;
    st->busy = true;
    r->hdr.ops = &sq_rows_ops;
    r->c = c;
    r->st = st;
    r->ncols = sqlite3_column_count(st->stmt);
    r->kinds = r->kinds_in;
    if ((size_t)r->ncols > sizeof r->kinds_in &&
        !(r->kinds = calloc((size_t)r->ncols, 1))) {
        r->kinds = r->kinds_in;
        sq_rows_close(&r->hdr);
        dbs__err(err, DBS_ENOMEM, "out of memory");
        return NULL;
    }
    r->before = sqlite3_total_changes64(c->db);
    /* Run up to the first row now, as the other backends run the whole
     * statement: a write whose rows are closed unread is done (SQLite makes
     * all of a RETURNING statement's changes in its first step), and its
     * failure is dbs_query's. The row is handed out by the first sq_next. */
    rc = sq_next(&r->hdr, err);
    if (rc < 0) {
        sq_rows_close(&r->hdr);
        return NULL;
    }
    r->primed = rc == 1;
    return &r->hdr;
}

static int sq_commit(void *vc, dbs_error *err)
{
    sq_conn *c = vc;
    if (!c->in_tx)
        return DBS_OK;
    if (c->tx_lost) {
        c->in_tx = c->tx_lost = false;
        return lost_tx(c, err);
    }
    if (sqlite3_get_autocommit(c->db)) {
        /* ended by a statement of the session's (follow_tx) */
        c->escaped = true;
        c->in_tx = false;
        return DBS_OK;
    }
    step_begins(c);
    int src = sqlite3_step(c->commit_st);
    sqlite3_reset(c->commit_st);
    if (src == SQLITE_DONE) {
        c->in_tx = false;
        return settle(c, err); /* DBS_ECOMMIT_UNKNOWN if the sync fails */
    }
    bool moved = c->file_moved; /* refused by the commit hook: rolled back */
    c->sync_owed = false;
    int rc = fail(c, src, err, "COMMIT", NULL);
    /* A bound that ran out while waiting for a lock (SQLITE_BUSY) committed
     * nothing: that is a refusal, not an unknown outcome. */
    bool refused = (src & 0xff) == SQLITE_BUSY || (src & 0xff) == SQLITE_LOCKED;
    if (rc == DBS_ECOMMIT_UNKNOWN) {
        /* fail() saw the commit hook let it go ahead: said so already */
    } else if (!moved && !refused &&
        (rc == DBS_ECONNECT || rc == DBS_ESTMT_TIMEOUT || is_sync_error(src))) {
        /* An I/O error, corruption or a failed sync during COMMIT: the
         * commit record may be on disk, whole or not. Nobody can tell
         * whether the transaction committed; the connection is discarded.
         * (A refusal, SQLITE_BUSY, SQLITE_FULL or a deferred constraint,
         * proves nothing was committed.) */
        c->broken = true;
        char m[sizeof err->message];
        snprintf(m, sizeof m, "%s", err ? err->message : "");
        rc = dbs__err(err, DBS_ECOMMIT_UNKNOWN,
                      "%s: the transaction may or may not have been committed", m);
    } else if (!sqlite3_get_autocommit(c->db)) {
        /* A refused COMMIT (busy) leaves the transaction open: end it, so
         * the unit can be retried from the start. Nothing was committed. */
        sqlite3_step(c->rollback_st);
        sqlite3_reset(c->rollback_st);
    }
    c->in_tx = false;
    return rc;
}

static int sq_rollback(void *vc, dbs_error *err)
{
    sq_conn *c = vc;
    int rc = DBS_OK;
    if (!sqlite3_get_autocommit(c->db))
        rc = step_simple(c, c->rollback_st, "ROLLBACK", err);
    c->in_tx = c->tx_lost = false;
    return rc;
}

static int set_query_only(sq_conn *c, bool on, dbs_error *err);

static int sq_reset(void *vc, enum dbs_reset_mode mode, dbs_error *err)
{
    sq_conn *c = vc;
    int rc = sq_rollback(c, err);
    c->escaped = false;
    c->opt_immediate = false;
    if (c->opt_ro) {
        c->opt_ro = false;
        if (rc == DBS_OK && !c->read_only)
            rc = set_query_only(c, false, err);
    }
    if (rc == DBS_OK && c->sync_owed)
        rc = group_sync(c, err); /* a commit whose result nobody read */
    if (rc != DBS_OK)
        return rc;
    full_checkpoint(c);
    if (mode != DBS_RESET_ROLLBACK && c->dirty) {
        close_db(c);
        return open_db(c, err);
    }
    if (mode != DBS_RESET_ROLLBACK) {
        /* What the connection reports about the last statement: the next
         * user must not read the previous one's last_insert_rowid() or
         * changes(). changes() is set by every INSERT, UPDATE or DELETE
         * that completes, so one that changes nothing sets it to 0.
         * (total_changes() counts since the connection opened and cannot
         * be reset: dbscope.h says so.) */
        if (sqlite3_last_insert_rowid(c->db) != 0)
            sqlite3_set_last_insert_rowid(c->db, 0); /* which takes SQLite's lock */
        if (sqlite3_changes64(c->db) != 0) {
            int s = sqlite3_step(c->nochange_st);
            sqlite3_reset(c->nochange_st);
            if (s != SQLITE_DONE) {
                /* the table was dropped: a fresh connection */
                close_db(c);
                return open_db(c, err);
            }
        }
    }
    return DBS_OK;
}

/* query_only is the connection's own switch: dbscope's toggling is not the
 * session's state, so the authorizer's verdict on it is set aside (a
 * session's own PRAGMA still marks the connection dirty). */
static int set_query_only(sq_conn *c, bool on, dbs_error *err)
{
    if (c->broken || !c->db)
        return dbs__err(err, DBS_ECONNECT, "SQLite connection is broken");
    bool was = c->preparing_dirty, ro = c->read_only, oro = c->opt_ro;
    /* the authorizer lets dbscope's own switch through */
    c->read_only = c->opt_ro = false;
    int rc = run_simple(c, on ? "PRAGMA query_only=1" : "PRAGMA query_only=0", err);
    c->preparing_dirty = was;
    c->read_only = ro;
    c->opt_ro = oro;
    return rc;
}

static int sq_set_read_only(void *vc, int on, dbs_error *err)
{
    sq_conn *c = vc;
    int rc = DBS_OK;
    if (!c->opt_ro || c->broken || !c->db)
        rc = set_query_only(c, on, err);
    c->read_only = rc == DBS_OK && on;
    return rc;
}

/* SQLite has one isolation level, SERIALIZABLE; read-only is the
 * read-only session's switch (query_only and sqlite3_stmt_readonly), for
 * the session's transactions; immediate is BEGIN IMMEDIATE. */
static int sq_tx_options_check(const dbs_tx_options *o, bool ro, dbs_error *err)
{
    if (o && (o->isolation == DBS_ISOLATION_READ_COMMITTED ||
              o->isolation == DBS_ISOLATION_REPEATABLE_READ))
        return dbs__err(err, DBS_ECONFIG,
                        "sqlite: SQLite runs every transaction SERIALIZABLE, its only "
                        "isolation level; ask for DBS_ISOLATION_SERIALIZABLE or "
                        "DBS_ISOLATION_DEFAULT");
    if (o && o->deferrable)
        return dbs__err(err, DBS_ECONFIG,
                        "sqlite: DEFERRABLE is PostgreSQL's; SQLite has no such transaction "
                        "mode: leave deferrable 0 (a SQLite reader never fails to serialize)");
    if (o && o->immediate && (ro || o->read_only))
        /* BEGIN IMMEDIATE takes the write lock, which query_only refuses:
         * every transaction would fail at its start */
        return dbs__err(err, DBS_ECONFIG,
                        "sqlite: the immediate option takes the write lock when the "
                        "transaction begins, which a read-only transaction cannot take: "
                        "leave immediate 0 with read_only or on a read-only session");
    return DBS_OK;
}

static int sq_tx_options(void *vc, const dbs_tx_options *o, dbs_error *err)
{
    sq_conn *c = vc;
    int rc = sq_tx_options_check(o, c->read_only, err);
    if (rc != DBS_OK)
        return rc;
    bool ro = o && o->read_only;
    if (ro != c->opt_ro && !c->read_only) {
        rc = set_query_only(c, ro, err);
        if (rc != DBS_OK)
            return rc;
    }
    c->opt_ro = ro;
    c->opt_immediate = o && o->immediate;
    return DBS_OK;
}

static int sq_tx_escaped(void *vc)
{
    return ((sq_conn *)vc)->escaped;
}

static void sq_set_timeout(void *vc, int ms)
{
    sq_conn *c = vc;
    c->bound_ms = ms < 0 ? c->t->statement_timeout_ms : ms;
}

static int sq_is_broken(void *vc)
{
    const sq_conn *c = vc;
    return c->broken || !c->db;
}

/* sqlite3_interrupt is safe from any thread while the handle is open; a
 * statement it stops fails with SQLITE_INTERRUPT (the transaction is
 * rolled back by the session's close). It neither ends a wait on another
 * connection's lock nor reaches a statement that begins after it: the
 * stopped mark, which the busy and progress handlers read, does both, for
 * good (the caller discards the connection). */
static void sq_interrupt(void *vc)
{
    sq_conn *c = vc;
    atomic_store_explicit(&c->stopped, true, memory_order_relaxed);
    if (c->db)
        sqlite3_interrupt(c->db);
}

static void *sq_native(void *vc)
{
    sq_conn *c = vc;
    c->dirty = true;
    return c->db;
}

/* ---- rows ---- */

static int sq_next(dbs_rows *hr, dbs_error *err)
{
    sq_rows *r = (sq_rows *)hr;
    if (r->primed) {
        r->primed = false;
        return 1;
    }
    if (r->done)
        return 0;
    dbs__cancel_defer(); /* a step may read, lock, commit or wait for the sync */
    step_begins(r->c);
    int rc = sqlite3_step(r->st->stmt);
    if (rc == SQLITE_ROW) {
        /* a constant size where it fits: two stores, not a call */
        if (r->kinds == r->kinds_in)
            memset(r->kinds_in, 0, sizeof r->kinds_in);
        else
            memset(r->kinds, 0, (size_t)r->ncols);
        return 1;
    }
    r->done = true;
    if (rc == SQLITE_DONE) {
        /* as sq_exec counts them: changes() is the last completed write's */
        r->changes = sqlite3_total_changes64(r->c->db) != r->before
                         ? sqlite3_changes64(r->c->db)
                         : 0;
        int frc = settle(r->c, err);
        if (frc == DBS_OK)
            frc = follow_tx(r->c, err);
        return frc; /* DBS_OK is 0 */
    }
    /* the caller's text: SQLite's may be the rewritten one (prepare) */
    return fail(r->c, sqlite3_extended_errcode(r->c->db), err, "fetching a row",
                r->st->sql ? r->st->sql : sqlite3_sql(r->st->stmt));
}

static int sq_count_cols(dbs_rows *hr)
{
    return ((sq_rows *)hr)->ncols;
}

static const char *sq_name(dbs_rows *hr, int col)
{
    return sqlite3_column_name(((sq_rows *)hr)->st->stmt, col);
}

/* The statement to read the current row from: none (SQLite's answers for
 * no row) while the first row, stepped to by sq_query, is not handed out,
 * and after the last. */
static sqlite3_stmt *row_of(dbs_rows *hr)
{
    sq_rows *r = (sq_rows *)hr;
    return r->primed || r->done ? NULL : r->st->stmt;
}

/* The value's storage class as the step left it; read before any
 * conversion of the value, which makes sqlite3_column_type undefined. */
static int kind(dbs_rows *hr, int col)
{
    sq_rows *r = (sq_rows *)hr;
    sqlite3_stmt *st = row_of(hr);
    if (!st)
        return SQLITE_NULL;
    if (!r->kinds[col])
        r->kinds[col] = (unsigned char)sqlite3_column_type(st, col);
    return r->kinds[col];
}

static int sq_is_null(dbs_rows *hr, int col)
{
    return kind(hr, col) == SQLITE_NULL;
}

/* Reading a value as a number converts nothing (SQLite parses a text or
 * blob in place), so the type need not be noted first, which saves a
 * sqlite3_column_type call on every number read; text and blob reads do
 * convert, and note it. */
static int64_t sq_int(dbs_rows *hr, int col)
{
    return sqlite3_column_int64(row_of(hr), col);
}

static double sq_real(dbs_rows *hr, int col)
{
    return sqlite3_column_double(row_of(hr), col);
}

static const char *sq_text(dbs_rows *hr, int col, size_t *len)
{
    (void)kind(hr, col);
    sqlite3_stmt *st = row_of(hr);
    const unsigned char *t = sqlite3_column_text(st, col);
    if (len)
        *len = t ? (size_t)sqlite3_column_bytes(st, col) : 0;
    return (const char *)t;
}

static const void *sq_blob(dbs_rows *hr, int col, size_t *len)
{
    sqlite3_stmt *st = row_of(hr);
    int t = kind(hr, col);
    const void *b = t == SQLITE_NULL ? NULL : sqlite3_column_blob(st, col);
    /* A number's bytes are its text, which takes memory, and is never
     * empty: NULL then is out of memory (dbs_rows_get_blob's DBS_ENOMEM),
     * not an empty value. */
    if (t == SQLITE_NULL || (!b && (t == SQLITE_INTEGER || t == SQLITE_FLOAT))) {
        if (len)
            *len = 0;
        return NULL;
    }
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    if (len)
        *len = n;
    return b ? b : ""; /* an empty value is not NULL */
}

/* The type a declared column type names: SQLite's affinity rules
 * (section 3.1 of its datatype page) after the names dbscope gives a type
 * of its own. */
static int decl_type(const char *d)
{
    char u[64];
    size_t n = 0;
    for (; d[n] && n < sizeof u - 1; n++)
        u[n] = (char)toupper((unsigned char)d[n]);
    u[n] = '\0';
    if (strstr(u, "BOOL"))
        return DBS_TYPE_BOOL;
    if (strstr(u, "TIMESTAMP") || strstr(u, "DATETIME"))
        return DBS_TYPE_TIMESTAMP;
    if (strstr(u, "UUID"))
        return DBS_TYPE_UUID;
    if (strstr(u, "JSON"))
        return DBS_TYPE_JSON;
    if (strstr(u, "INT"))
        return DBS_TYPE_INT;
    if (strstr(u, "CHAR") || strstr(u, "CLOB") || strstr(u, "TEXT"))
        return DBS_TYPE_TEXT;
    if (strstr(u, "BLOB") || !u[0])
        return DBS_TYPE_BLOB;
    if (strstr(u, "REAL") || strstr(u, "FLOA") || strstr(u, "DOUB"))
        return DBS_TYPE_REAL;
    /* NUMERIC affinity: decimals, and names such as DATE that hold text. */
    return strstr(u, "DEC") || strstr(u, "NUM") ? DBS_TYPE_DECIMAL : DBS_TYPE_TEXT;
}

static int sq_val_type(dbs_rows *hr, int col)
{
    switch (kind(hr, col)) {
    case SQLITE_INTEGER: return DBS_TYPE_INT;
    case SQLITE_FLOAT: return DBS_TYPE_REAL;
    case SQLITE_TEXT: return DBS_TYPE_TEXT;
    case SQLITE_BLOB: return DBS_TYPE_BLOB;
    default: return DBS_TYPE_NULL;
    }
}

static int sq_col_type(dbs_rows *hr, int col)
{
    const char *d = sqlite3_column_decltype(((sq_rows *)hr)->st->stmt, col);
    if (d)
        return decl_type(d);
    /* An expression: the current value's storage class. */
    return hr->on_row ? sq_val_type(hr, col) : DBS_TYPE_NULL;
}

static int64_t sq_affected(dbs_rows *hr)
{
    return ((sq_rows *)hr)->changes;
}

static void sq_rows_close(dbs_rows *hr)
{
    dbs__cancel_defer(); /* resets or finalizes a statement, may sync */
    sq_rows *r = (sq_rows *)hr;
    sq_stmt *st = r->st;
    bool own = !st->cached;
    if (r->kinds != r->kinds_in)
        free(r->kinds);
    put_stmt(st); /* may end a write in autocommit mode */
    if (own)
        free(st);
    if (r->c->sync_owed && group_sync(r->c, NULL) != DBS_OK)
        r->c->broken = true;
    if (!r->c->spare_rows)
        r->c->spare_rows = r; /* a unit's next query needs no allocation */
    else
        free(r);
}

static const dbs__rows_ops sq_rows_ops = {
    .next = sq_next, .count_cols = sq_count_cols, .name = sq_name,
    .is_null = sq_is_null, .get_int = sq_int, .get_real = sq_real,
    .get_text = sq_text, .get_blob = sq_blob, .close = sq_rows_close,
    .col_type = sq_col_type, .val_type = sq_val_type, .affected = sq_affected,
};

const dbs__driver dbs__driver_sqlite = {
    .name = "sqlite",
    .target_open = sq_target_open,
    .target_close = sq_target_close,
    .target_check = sq_target_check,
    .connect = sq_connect,
    .ping = sq_ping,
    .begin = sq_begin,
    .exec = sq_exec,
    .query = sq_query,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .reset = sq_reset,
    .is_broken = sq_is_broken,
    .set_timeout = sq_set_timeout,
    .native = sq_native,
    .close = sq_close,
    .set_read_only = sq_set_read_only,
    .tx_escaped = sq_tx_escaped,
    .tx_options = sq_tx_options,
    .tx_options_check = sq_tx_options_check,
    .interrupt = sq_interrupt,
};
