/* The credential provider (dbs_config.credential): asked before every
 * physical connect of a backend with a password, its answer used for that
 * connect only and wiped after. Its failure is a configuration error. */
#include "internal.h"

#include <string.h>

void dbs__credential_wipe(char *buf, size_t cap)
{
    /* a plain memset before the buffer dies may be optimised away */
    volatile char *v = buf;
    for (size_t i = 0; i < cap; i++)
        v[i] = 0;
}

int dbs__credential_get(const dbs__target *t, const char *backend, const char *host,
                        const char *port, const char *user, char *buf, size_t cap,
                        dbs_error *err)
{
    if (!t->credential)
        return 1;
    char why[256] = "";
    buf[0] = '\0';
    buf[cap - 1] = '\0';
    dbs_credential cred = {
        .backend = backend,
        .host = host ? host : "",
        .port = port ? port : "",
        .user = user ? user : "",
        .password = buf,
        .password_cap = cap,
        .why = why,
        .why_cap = sizeof why,
    };
    /* a sentinel: a provider that fills the buffer without a NUL leaves it */
    buf[cap - 1] = 'x';
    int rc = t->credential(&cred, t->credential_user);
    why[sizeof why - 1] = '\0';
    bool terminated = memchr(buf, '\0', cap) != NULL;
    /* An empty answer is no password: libpq would skip it and connect
     * with the URL's, which the provider is there to replace. */
    if (rc == 0 && terminated && buf[0])
        return DBS_OK;
    /* whatever the provider wrote must not reach the message */
    if (terminated && buf[0])
        dbs__scrub_text(why, sizeof why, buf, strlen(buf));
    dbs__credential_wipe(buf, cap);
    if (rc == 0 && terminated)
        return dbs__err(err, DBS_ECONFIG,
                        "%s: the credential provider (dbs_config.credential) for host \"%.80s\" "
                        "user \"%.60s\" wrote an empty password: return non-zero (with why) "
                        "when it has none", backend, cred.host, cred.user);
    if (rc == 0)
        return dbs__err(err, DBS_ECONFIG,
                        "%s: the credential provider (dbs_config.credential) for host \"%.80s\" "
                        "user \"%.60s\" wrote no NUL-terminated password within %zu bytes",
                        backend, cred.host, cred.user, cap);
    return dbs__err(err, DBS_ECONFIG,
                    "%s: the credential provider (dbs_config.credential) failed for host "
                    "\"%.80s\" user \"%.60s\" (returned %d): %s",
                    backend, cred.host, cred.user, rc, why[0] ? why : "no reason given");
}
