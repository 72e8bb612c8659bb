/* The MariaDB/MySQL backend's two parsers of outside input, reached by
 * compiling the driver into this target (both are static): the URL parser
 * and the $n to '?' rewriter. Checks: a URL is accepted or refused with
 * DBS_ECONFIG (or DBS_ENOMEM), and a refusal never quotes the password
 * that stands before the input, in the userinfo or under a secret key; a rewrite keeps every $n's number in
 * 1..max and counts as many '?' as it maps. */
#include "../../src/driver_mysql.c"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';

    /* the input as what follows "mysql://u:<password>@" */
    static const char secret[] = "Zq9SecretPw";
    char *url = malloc(size + 64);
    snprintf(url, size + 64, "mysql://u:%s@%s", secret, text);
    my_target *m = calloc(1, sizeof *m);
    dbs_error err;
    int rc = parse_url(url, m, &err);
    if (rc != DBS_OK) {
        CHECK(rc == DBS_ECONFIG || rc == DBS_ENOMEM);
        CHECK(err.code == rc);
        /* (unless the rest of the URL spells it out too) */
        CHECK(strstr(err.message, secret) == NULL || strstr(text, secret) != NULL);
    }
    target_free(m);
    free(url);

    /* the input after a secret query parameter, under each secret key of
     * Connector/C, spelled as a URL may spell it */
    static const char *const keys[] = {"password", "PassWd", "ssl-passphrase",
                                       "tls_passphrase", "ss%6Cpassword"};
    url = malloc(size + 96);
    snprintf(url, size + 96, "mysql://u@h/db?%s=%s&%s", keys[size % 5], secret, text);
    m = calloc(1, sizeof *m);
    rc = parse_url(url, m, &err);
    if (rc != DBS_OK)
        CHECK(strstr(err.message, secret) == NULL || strstr(text, secret) != NULL);
    target_free(m);
    free(url);

    /* the input as a URL of its own: refused or accepted, never a crash */
    m = calloc(1, sizeof *m);
    rc = parse_url(text, m, &err);
    CHECK(rc == DBS_OK || rc == DBS_ECONFIG || rc == DBS_ENOMEM);
    target_free(m);

    /* the input as SQL */
    char *out = NULL;
    int *map = NULL, nmap = 0, maxp = 0;
    /* with and without backslash escapes (NO_BACKSLASH_ESCAPES), on
     * MariaDB and MySQL of several versions, in utf8mb4 and in gbk (whose
     * second bytes may be a backslash or a backtick) */
    static const unsigned long versions[] = {50744, 80036, 100611, 110402};
    my_lex lx = {.backslash = size % 2 == 0,
                 .maria = size % 3 != 0,
                 .version = versions[size % 4],
                 .cs = mariadb_get_charset_by_name(size % 5 ? "utf8mb4" : "gbk")};
    if (translate(text, &lx, &out, &map, &nmap, &maxp, &err) == DBS_OK) {
        CHECK(nmap >= 0 && maxp >= 0 && maxp <= MY_MAXP);
        for (int i = 0; i < nmap; i++)
            CHECK(map[i] >= 0 && map[i] < maxp);
        CHECK(strlen(out) <= size);
        free(out);
        free(map);
    }
    free(text);
    return 0;
}
