/* A program of a dbscope user, built against the installed package only
 * (tests/install/check.sh): pkg-config, shared and static, and CMake's
 * find_package. Usage: consumer sqlite:FILE. Prints the library version,
 * the rows it wrote, and "consumer: ok"; exits non-zero on any error. */
#include <dbscope.h>

#include <stdio.h>
#include <string.h>

static int fill(dbs_session *s, void *arg, dbs_error *err)
{
    (void)arg;
    if (dbs_exec(s, "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)", NULL, 0,
                 err) < 0)
        return err->code;
    const char *names[] = {"alpha", "beta", "gamma"};
    for (int i = 0; i < 3; i++) {
        dbs_value v[] = {DBS_INT(i + 1), DBS_TEXT(names[i])};
        if (dbs_exec(s, "INSERT INTO item (id, name) VALUES ($1, $2)", v, 2, err) < 0)
            return err->code;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: consumer sqlite:FILE\n");
        return 2;
    }
    printf("consumer: dbscope %s\n", dbs_version_string());
    dbs_config cfg;
    dbs_config_init(&cfg);
    cfg.url = argv[1];
    dbs_error err;
    dbs_pool *pool = dbs_pool_open(&cfg, &err);
    if (!pool) {
        fprintf(stderr, "consumer: open: %s\n", err.message);
        return 1;
    }
    int rc = dbs_transact(pool, NULL, fill, NULL, &err);
    if (rc != DBS_OK) {
        fprintf(stderr, "consumer: fill: %s\n", err.message);
        dbs_pool_close(pool);
        return 1;
    }
    int status = 1, rows = 0;
    {
        DBS_SCOPED dbs_session *s = dbs_session_open(pool, NULL, &err);
        dbs_rows *r = s ? dbs_query(s, "SELECT id, name FROM item ORDER BY id", NULL, 0, &err)
                        : NULL;
        int n = r ? 1 : -1;
        while (r && (n = dbs_rows_next(r, &err)) == 1) {
            printf("consumer: %lld %s\n", (long long)dbs_rows_int(r, 0),
                   dbs_rows_text(r, 1, NULL));
            rows++;
        }
        dbs_rows_close(r);
        if (n < 0)
            fprintf(stderr, "consumer: select: %s\n", err.message);
        else if (rows == 3)
            status = 0;
    }
    dbs_pool_close(pool);
    if (status == 0)
        puts("consumer: ok");
    return status;
}
