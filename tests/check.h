/* Test helpers: typed assertions that print both sides, and the database URL
 * a test runs against. Each test is one program; a failed check exits 1. */
#ifndef DBS_TEST_CHECK_H
#define DBS_TEST_CHECK_H

#include "dbscope.h"

#include <inttypes.h>
#include <locale.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK_FAIL(...)                                                        \
    do {                                                                       \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        exit(1);                                                               \
    } while (0)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            CHECK_FAIL("CHECK(%s) failed", #cond);                             \
    } while (0)

#define CHECK_INT(a, op, b)                                                    \
    do {                                                                       \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);        \
        if (!(check_a_ op check_b_))                                           \
            CHECK_FAIL("CHECK_INT(%s %s %s): %lld vs %lld", #a, #op, #b,       \
                       check_a_, check_b_);                                    \
    } while (0)
#define CHECK_EQ(a, b) CHECK_INT(a, ==, b)

#define CHECK_STR(a, b)                                                        \
    do {                                                                       \
        const char *check_a_ = (a), *check_b_ = (b);                           \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0)         \
            CHECK_FAIL("CHECK_STR(%s, %s): \"%s\" vs \"%s\"", #a, #b,          \
                       check_a_ ? check_a_ : "(null)",                         \
                       check_b_ ? check_b_ : "(null)");                        \
    } while (0)

#define CHECK_CONTAINS(hay, needle)                                            \
    do {                                                                       \
        const char *check_h_ = (hay), *check_n_ = (needle);                    \
        if (!check_h_ || !strstr(check_h_, check_n_))                          \
            CHECK_FAIL("CHECK_CONTAINS(%s, %s): \"%s\" lacks \"%s\"", #hay,    \
                       #needle, check_h_ ? check_h_ : "(null)", check_n_);     \
    } while (0)

/* A dbscope call that must succeed: on failure prints the error. */
#define CHECK_OK(call, errp)                                                   \
    do {                                                                       \
        long long check_rc_ = (long long)(call);                               \
        const dbs_error *check_e_ = (errp);                                    \
        if (check_rc_ < 0)                                                     \
            CHECK_FAIL("%s failed: %lld %s", #call, check_rc_,                 \
                       check_e_ ? check_e_->message : "");                     \
    } while (0)

/* The database a backend-neutral test runs against:
 *   DBSCOPE_TEST_URL_FILE: a file whose first line is the URL (written by
 *     the PostgreSQL fixture), else
 *   DBSCOPE_TEST_URL, else
 *   a fresh SQLite file under TMPDIR named after the test.
 * The result is static storage. */
static char test_db_path[900];

/* Tests leave no database files behind in TMPDIR. */
static inline void test_db_remove(void)
{
    char side[920];
    unlink(test_db_path);
    snprintf(side, sizeof side, "%s-wal", test_db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", test_db_path);
    unlink(side);
}

static inline const char *test_url(const char *name)
{
    static char url[1024];
    const char *file = getenv("DBSCOPE_TEST_URL_FILE");
    if (file && *file) {
        FILE *f = fopen(file, "r");
        if (!f)
            CHECK_FAIL("cannot read DBSCOPE_TEST_URL_FILE %s", file);
        if (!fgets(url, sizeof url, f))
            CHECK_FAIL("empty DBSCOPE_TEST_URL_FILE %s", file);
        fclose(f);
        url[strcspn(url, "\r\n")] = '\0';
        return url;
    }
    const char *env = getenv("DBSCOPE_TEST_URL");
    if (env && *env) {
        snprintf(url, sizeof url, "%s", env);
        return url;
    }
    const char *tmp = getenv("TMPDIR");
    bool first = test_db_path[0] == '\0';
    snprintf(test_db_path, sizeof test_db_path, "%s/dbscope-%s-%ld.db", tmp ? tmp : "/tmp",
             name, (long)getpid());
    test_db_remove();
    if (first)
        atexit(test_db_remove);
    snprintf(url, sizeof url, "sqlite://%s", test_db_path);
    return url;
}

static inline int test_is_mysql(const char *url)
{
    return strncmp(url, "mysql://", 8) == 0 || strncmp(url, "mariadb://", 10) == 0;
}

static inline int test_is_pg(const char *url)
{
    return strncmp(url, "sqlite:", 7) != 0 && !test_is_mysql(url);
}

/* Sets LC_NUMERIC to a locale whose decimal point is a comma, as a
 * program that calls setlocale(LC_ALL, "") may run under (de_DE): one
 * installed, else one localedef builds in a temporary directory. false
 * (with a note on stdout) when neither works; setlocale(LC_NUMERIC, "C")
 * undoes it. */
static inline bool test_comma_locale_set(void)
{
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8",
                                        "fr_FR.utf8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char buf[16];
        if (setlocale(LC_NUMERIC, names[i]) && snprintf(buf, sizeof buf, "%.1f", 2.5) &&
            strcmp(buf, "2,5") == 0)
            return true;
    }
    setlocale(LC_NUMERIC, "C");
    return false;
}

static inline bool test_comma_locale(void)
{
    if (test_comma_locale_set())
        return true;
    const char *tmp = getenv("TMPDIR");
    char dir[512], cmd[1200];
    snprintf(dir, sizeof dir, "%s/dbs_locale_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    bool ok = false;
    if (mkdtemp(dir)) {
        snprintf(cmd, sizeof cmd,
                 "localedef -i de_DE -f UTF-8 '%s/de_DE.UTF-8' >/dev/null 2>&1", dir);
        if (system(cmd) == 0) {
            setenv("LOCPATH", dir, 1);
            ok = test_comma_locale_set(); /* loaded: the files may go */
        }
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "note: could not remove %s\n", dir);
    }
    if (!ok)
        puts("note: no locale with a decimal comma; that part is not run");
    return ok;
}

#endif
