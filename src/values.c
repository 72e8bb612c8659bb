/* Values as text: ISO 8601 timestamps and UUIDs both ways, the strict
 * number parsing of the checked row accessors, and doubles to and from
 * text for the backends. No allocation, no locale: the same text on every
 * machine, whatever setlocale the program called. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int dbs__ts_fields(struct timespec ts, dbs__ts *out)
{
    if (ts.tv_nsec < 0 || ts.tv_nsec > 999999999)
        return DBS_EMISUSE;
    int64_t s = (int64_t)ts.tv_sec;
    /* 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, checked first: the
     * arithmetic below would overflow far outside it (INT64_MIN) */
    if (s < -62135596800LL || s > 253402300799LL)
        return DBS_EMISUSE;
    int64_t days = s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
    int64_t secs = s - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 1 || y > 9999)
        return DBS_EMISUSE;
    out->year = (int)y;
    out->month = (int)m;
    out->day = (int)d;
    out->hour = (int)(secs / 3600);
    out->minute = (int)(secs / 60 % 60);
    out->second = (int)(secs % 60);
    out->usec = (int)(ts.tv_nsec / 1000);
    return DBS_OK;
}

int dbs_timestamp_format(struct timespec ts, char out[DBS_TIMESTAMP_TEXT_LEN])
{
    dbs__ts f;
    if (!out)
        return DBS_EMISUSE;
    out[0] = '\0';
    if (dbs__ts_fields(ts, &f) != DBS_OK)
        return DBS_EMISUSE;
    return snprintf(out, DBS_TIMESTAMP_TEXT_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", f.year,
                    f.month, f.day, f.hour, f.minute, f.second, f.usec);
}

/* Reads exactly n digits at *p (within end) as a number; -1 if not. */
static int digits(const char **p, const char *end, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= end || **p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    return v;
}

static int bad_ts(dbs_error *err, const char *what)
{
    return dbs__err(err, DBS_ETYPE,
                    "not an ISO 8601 timestamp: %s (expected YYYY-MM-DD[THH:MM[:SS[.f]]][Z|+HH:MM])",
                    what);
}

int dbs_timestamp_parse(const char *text, size_t len, struct timespec *out, dbs_error *err)
{
    if (!text || !out)
        return dbs__err(err, DBS_EMISUSE, "dbs_timestamp_parse: text or out is NULL");
    if (len == SIZE_MAX)
        len = strlen(text);
    const char *p = text, *end = text + len;
    int y = digits(&p, end, 4);
    if (y < 1)
        return bad_ts(err, "no four-digit year from 0001");
    if (p >= end || *p++ != '-')
        return bad_ts(err, "no '-' after the year");
    int mo = digits(&p, end, 2);
    if (mo < 1 || mo > 12)
        return bad_ts(err, "no month 01..12");
    if (p >= end || *p++ != '-')
        return bad_ts(err, "no '-' after the month");
    int d = digits(&p, end, 2);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
        return bad_ts(err, "no valid day of the month");
    int h = 0, mi = 0, s = 0;
    long ns = 0;
    if (p < end && (*p == 'T' || *p == 't' || *p == ' ')) {
        p++;
        h = digits(&p, end, 2);
        if (h < 0 || h > 23)
            return bad_ts(err, "no hour 00..23");
        if (p >= end || *p++ != ':')
            return bad_ts(err, "no ':' after the hour");
        mi = digits(&p, end, 2);
        if (mi < 0 || mi > 59)
            return bad_ts(err, "no minute 00..59");
        if (p < end && *p == ':') {
            p++;
            s = digits(&p, end, 2);
            if (s < 0 || s > 60) /* 60: a leap second, read as the next */
                return bad_ts(err, "no second 00..59");
            if (p < end && (*p == '.' || *p == ',')) {
                p++;
                int nd = 0;
                long scale = 100000000;
                while (p < end && *p >= '0' && *p <= '9') {
                    if (nd < 9)
                        ns += (*p - '0') * scale;
                    scale /= 10;
                    nd++;
                    p++;
                }
                if (nd == 0)
                    return bad_ts(err, "no digits after the decimal point");
            }
        }
    }
    int off = 0; /* seconds east of UTC */
    if (p < end && (*p == 'Z' || *p == 'z')) {
        p++;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1;
        int oh = digits(&p, end, 2), om = 0, os = 0;
        if (oh < 0 || oh > 15)
            return bad_ts(err, "no zone hour 00..15 after the sign");
        if (p < end && *p == ':') {
            p++;
            om = digits(&p, end, 2);
            if (om < 0 || om > 59)
                return bad_ts(err, "no zone minutes after ':'");
            if (p < end && *p == ':') {
                p++;
                os = digits(&p, end, 2);
                if (os < 0 || os > 59)
                    return bad_ts(err, "no zone seconds after ':'");
            }
        } else if (p < end && *p >= '0' && *p <= '9') {
            om = digits(&p, end, 2);
            if (om < 0 || om > 59)
                return bad_ts(err, "no zone minutes");
        }
        off = sign * (oh * 3600 + om * 60 + os);
    }
    if (p != end)
        return bad_ts(err, "text after the timestamp (a PostgreSQL 'BC' or 'infinity' "
                           "has no struct timespec)");
    int64_t t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + s -
                off;
    /* A zone (or a leap second) can carry the calendar's first and last
     * days out of it; dbs_timestamp_format, DBS_TIMESTAMP and
     * dbs_rows_get_timestamp refuse that instant, so reading it here only
     * deferred the error to a caller who could do nothing with it. */
    dbs__ts f;
    if (dbs__ts_fields((struct timespec){.tv_sec = (time_t)t, .tv_nsec = ns}, &f) != DBS_OK)
        return dbs__err(err, DBS_ETYPE,
                        "timestamp outside years 0001..9999 (UTC) once its zone is applied");
    out->tv_sec = (time_t)t;
    out->tv_nsec = ns;
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

void dbs_uuid_format(const unsigned char uuid[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    if (!out)
        return;
    if (!uuid) {
        out[0] = '\0'; /* the header's promise: nothing to format */
        return;
    }
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[uuid[i] >> 4];
        *o++ = hex[uuid[i] & 15];
    }
    *o = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int dbs_uuid_parse(const char *text, size_t len, unsigned char out[16], dbs_error *err)
{
    if (!text || !out)
        return dbs__err(err, DBS_EMISUSE, "dbs_uuid_parse: text or out is NULL");
    if (len == SIZE_MAX)
        len = strlen(text);
    const char *p = text, *end = text + len;
    if (len >= 2 && *p == '{' && end[-1] == '}') {
        p++;
        end--;
    }
    bool hyphens = end - p == 36;
    if (!hyphens && end - p != 32)
        return dbs__err(err, DBS_ETYPE,
                        "not a UUID: %zu characters (expected 36, as "
                        "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, or 32 hex digits)",
                        (size_t)(end - p));
    unsigned char b[16];
    for (int i = 0; i < 16; i++) {
        if (hyphens && (i == 4 || i == 6 || i == 8 || i == 10) && *p++ != '-')
            return dbs__err(err, DBS_ETYPE,
                            "not a UUID: expected '-' after hex digit %d", i * 2);
        int hi = hexval(p[0]), lo = hexval(p[1]);
        if (hi < 0 || lo < 0)
            return dbs__err(err, DBS_ETYPE, "not a UUID: a character that is not a hex digit");
        b[i] = (unsigned char)(hi << 4 | lo);
        p += 2;
    }
    memcpy(out, b, 16);
    if (err)
        err->code = DBS_OK;
    return DBS_OK;
}

/* Read from the digits themselves, not through a double, whose rounding
 * made '-9223372036854775809' INT64_MIN and '12.0000000000000001' 12:
 * [+-]digits[.digits][e[+-]digits], whole and within int64_t. Never reads
 * past n (the bytes may hold a NUL, which is no number). */
int dbs__parse_int64(const char *s, size_t n, int64_t *out)
{
    const char *p = s, *end = s + n;
    bool neg = false;
    if (p < end && (*p == '+' || *p == '-'))
        neg = *p++ == '-';
    const char *ip = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    size_t ni = (size_t)(p - ip), nf = 0;
    const char *fp = p;
    if (p < end && *p == '.') {
        fp = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        nf = (size_t)(p - fp);
    }
    if (ni + nf == 0)
        return -1;
    long ex = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        bool eneg = p < end && *p == '-';
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return -1;
        for (; p < end && *p >= '0' && *p <= '9'; p++)
            if (ex < 100000)
                ex = ex * 10 + (*p - '0');
        if (eneg)
            ex = -ex;
    }
    if (p != end)
        return -1;
    /* The digits are ip[0..ni) then fp[0..nf); the point falls after
     * ni + ex of them. Those before it make the number, those after it
     * must all be zeros. */
    long point = (long)ni + ex;
    uint64_t v = 0;
    for (long k = 0; k < point; k++) {
        size_t at = (size_t)k;
        unsigned dg = at < ni ? (unsigned)(ip[at] - '0')
                    : at < ni + nf ? (unsigned)(fp[at - ni] - '0') : 0;
        if (v > (UINT64_MAX - dg) / 10)
            return -1;
        v = v * 10 + dg;
    }
    for (size_t at = point > 0 ? (size_t)point : 0; at < ni + nf; at++)
        if ((at < ni ? ip[at] : fp[at - ni]) != '0')
            return -1;
    if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0))
        return -1;
    *out = !neg ? (int64_t)v : v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
    return 0;
}

int64_t dbs__int64_cut(double d)
{
    if (d != d)
        return 0;
    if (d >= 9223372036854775808.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

/* Numbers as the databases spell them, whatever the program's locale: a
 * program that called setlocale(LC_ALL, "") under de_DE reads and prints
 * "2,5", which PostgreSQL refuses as a float8 and strtod stops short of in
 * "2.5" (a silent 2). The C locale is made once and put in place only for
 * the one call, on the calling thread (uselocale), so no other thread's
 * locale changes and none of it is ever the program's to see. */
static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;

static void c_numeric_init(void)
{
    c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

locale_t dbs__c_numeric_enter(void)
{
    pthread_once(&c_numeric_once, c_numeric_init);
    /* (without it, which only memory can refuse, the program's locale) */
    return c_numeric ? uselocale(c_numeric) : (locale_t)0;
}

void dbs__c_numeric_leave(locale_t old)
{
    if (old)
        uselocale(old);
}

double dbs__strtod(const char *s, char **end)
{
    locale_t old = dbs__c_numeric_enter();
    double v = strtod(s, end);
    int e = errno; /* strtod's, kept across the switch back */
    dbs__c_numeric_leave(old);
    errno = e;
    return v;
}

/* The fewest significant digits from lo to hi whose text strtod reads
 * back as v (as a float when single), written to out; hi's at worst. */
static int fmt_shortest(char *out, size_t cap, double v, int lo, int hi, bool single)
{
    int n = 0, e = errno; /* the caller's: strtod may set ERANGE */
    for (int p = lo; p <= hi; p++) {
        n = snprintf(out, cap, "%.*g", p, v);
        double back = strtod(out, NULL);
        if (single ? (float)back == (float)v : back == v)
            break;
    }
    errno = e;
    return n;
}

int dbs__fmt_double(char *out, size_t cap, double v)
{
    locale_t old = dbs__c_numeric_enter();
    /* the shortest text that reads back exactly, as the databases spell
     * a double: 19.99, not "%.17g"'s 19.989999999999998 */
    int n = fmt_shortest(out, cap, v, 15, 17, false);
    dbs__c_numeric_leave(old);
    return n;
}

double dbs__float_spelled(double v)
{
    if (v != v || v - v != 0) /* NaN, infinities: as they are */
        return v;
    char t[40];
    locale_t old = dbs__c_numeric_enter();
    (void)fmt_shortest(t, sizeof t, v, 1, 9, true);
    double d = strtod(t, NULL);
    dbs__c_numeric_leave(old);
    return d;
}

int dbs__parse_double(const char *s, size_t n, double *out)
{
    /* strtod skips every isspace byte ('\r', '\v', '\f' too): leading
     * space of any kind is refused here, not read past */
    if (n == 0 || isspace((unsigned char)s[0]))
        return -1;
    /* Text a row accessor read is NUL-terminated: strtod reads it in
     * place, whatever its length (a DECIMAL of wide scale); other bytes
     * are copied to fit a terminator. */
    char buf[512];
    const char *p = s;
    if (s[n] != '\0') {
        if (n >= sizeof buf)
            return -1;
        memcpy(buf, s, n);
        buf[n] = '\0';
        p = buf;
    }
    char *e;
    errno = 0;
    double v = dbs__strtod(p, &e);
    if (e != p + n /* a NUL inside the bytes */ || (errno == ERANGE && (v > 1 || v < -1)))
        return -1;
    *out = v;
    return 0;
}
