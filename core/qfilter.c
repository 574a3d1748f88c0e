/*
 * qfilter.c: queue filters, durations and JSON strings for the admin
 * endpoint's /queue requests. See qfilter.h.
 */
#include "core/qfilter.h"

#include <stdio.h>
#include <string.h>

#include "core/compiler.h"

void
qfilter_init(struct qfilter *f)
{
    memset(f, 0, sizeof(*f));
    f->max_age_ms = UINT64_MAX;
    f->states = QSTATE_ALL;
    f->limit = QFILTER_LIMIT_DEFAULT;
}

bool
qfilter_narrows(const struct qfilter *f)
{
    return f->domain_len > 0 || f->sender_len > 0 || f->sender_null || f->min_age_ms > 0 ||
           f->max_age_ms != UINT64_MAX || f->states != QSTATE_ALL;
}

bool
qfilter_duration(struct slice s, uint64_t *ms)
{
    uint64_t n = 0, unit = 1000;
    size_t i = 0;

    while (i < s.len && s.p[i] >= '0' && s.p[i] <= '9') {
        if (n > 1000000000ull) /* over 30 years in seconds: refused before it overflows */
            return false;
        n = n * 10 + (uint64_t)(s.p[i] - '0');
        i++;
    }
    if (i == 0)
        return false;
    if (i + 1 == s.len) {
        switch (s.p[i]) {
        case 's':
            unit = 1000;
            break;
        case 'm':
            unit = 60000;
            break;
        case 'h':
            unit = 3600000;
            break;
        case 'd':
            unit = 86400000;
            break;
        default:
            return false;
        }
    } else if (i != s.len) {
        return false;
    }
    *ms = n * unit;
    return true;
}

/* Percent-decode v into out (lower-cased when fold); its length, or -1 (bad escape, too long,
   or a NUL). */
static long
decode(struct slice v, char *out, size_t cap, bool fold)
{
    size_t o = 0;

    for (size_t i = 0; i < v.len; i++) {
        char c = v.p[i];

        if (c == '%') {
            int hi = i + 2 < v.len ? hex_digit(v.p[i + 1]) : -1;
            int lo = i + 2 < v.len ? hex_digit(v.p[i + 2]) : -1;

            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (c == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = fold ? ascii_lower(c) : c;
    }
    out[o] = '\0';
    return (long)o;
}

static int
parse_states(struct slice v, unsigned *out)
{
    unsigned set = 0;
    size_t i = 0;

    while (i <= v.len) {
        size_t j = i;
        struct slice one;

        while (j < v.len && v.p[j] != ',')
            j++;
        one = slice_make(v.p + i, j - i);
        if (slice_eq(one, "active"))
            set |= QSTATE_ACTIVE;
        else if (slice_eq(one, "deferred"))
            set |= QSTATE_DEFERRED;
        else if (slice_eq(one, "held"))
            set |= QSTATE_HELD;
        else if (slice_eq(one, "waiting"))
            set |= QSTATE_WAITING;
        else
            return -1;
        i = j + 1;
    }
    *out = set;
    return 0;
}

int
qfilter_parse(struct qfilter *f, struct slice q, char *err, size_t errlen)
{
    size_t i = 0;

    while (i < q.len) {
        size_t j = i, eq;
        struct slice key, raw, val;
        char buf[QFILTER_TEXT_MAX];
        long n;

        while (j < q.len && q.p[j] != '&')
            j++;
        for (eq = i; eq < j && q.p[eq] != '='; eq++)
            ;
        key = slice_make(q.p + i, eq - i);
        /* "key" without '=' has an empty value */
        raw = eq < j ? slice_make(q.p + eq + 1, j - eq - 1) : slice_make(q.p + j, 0);
        i = j + 1;
        if (key.len == 0)
            continue; /* "a=1&&b=2", or a trailing '&' */
        n = decode(raw, buf, sizeof(buf), false);
        if (n < 0) {
            snprintf(err, errlen, "%.*s: bad value (a bad %%-escape, or over %d octets)",
                     (int)MIN(key.len, 32), key.p, QFILTER_TEXT_MAX - 1);
            return -1;
        }
        val = slice_make(buf, (size_t)n);
        if (slice_eq(key, "domain")) {
            n = decode(raw, f->domain, sizeof(f->domain), true);
            f->domain_len = (size_t)n;
            if (f->domain_len > 0 && f->domain[0] == '.') { /* domain=.example.com: the same */
                memmove(f->domain, f->domain + 1, f->domain_len);
                f->domain_len--;
            }
            if (f->domain_len == 0) {
                snprintf(err, errlen, "domain: empty");
                return -1;
            }
        } else if (slice_eq(key, "sender")) {
            if (slice_eq(val, "<>")) {
                f->sender_null = true;
                f->sender_len = 0;
            } else if (val.len == 0) {
                snprintf(err, errlen, "sender: empty (sender=<> selects the null sender)");
                return -1;
            } else {
                n = decode(raw, f->sender, sizeof(f->sender), true);
                f->sender_len = (size_t)n;
                f->sender_null = false;
            }
        } else if (slice_eq(key, "min_age") || slice_eq(key, "max_age")) {
            uint64_t ms;

            if (!qfilter_duration(val, &ms)) {
                snprintf(err, errlen, "%.*s: '%.*s' is not a duration (30s, 10m, 2h, 1d)",
                         (int)key.len, key.p, (int)MIN(val.len, 64), val.p);
                return -1;
            }
            if (key.p[1] == 'i')
                f->min_age_ms = ms;
            else
                f->max_age_ms = ms;
        } else if (slice_eq(key, "state")) {
            if (parse_states(val, &f->states) < 0) {
                snprintf(err, errlen,
                         "state: '%.*s' is not active, deferred, held or waiting (or a "
                         "comma-separated list of them)",
                         (int)MIN(val.len, 64), val.p);
                return -1;
            }
        } else if (slice_eq(key, "limit")) {
            uint64_t v = 0;
            size_t k;

            for (k = 0; k < val.len && val.p[k] >= '0' && val.p[k] <= '9' && v <= 1000000; k++)
                v = v * 10 + (uint64_t)(val.p[k] - '0');
            if (val.len == 0 || k != val.len || v < 1 || v > QFILTER_LIMIT_MAX) {
                snprintf(err, errlen, "limit: '%.*s' is not a number from 1 to %u",
                         (int)MIN(val.len, 64), val.p, QFILTER_LIMIT_MAX);
                return -1;
            }
            f->limit = (unsigned)v;
        } else if (slice_eq(key, "body")) {
            if (!slice_eq(val, "0") && !slice_eq(val, "1")) {
                snprintf(err, errlen, "body: expected 0 or 1");
                return -1;
            }
            f->body = val.p[0] == '1';
        } else {
            snprintf(err, errlen,
                     "unknown filter '%.*s' (domain, sender, min_age, max_age, state, limit, "
                     "body)",
                     (int)MIN(key.len, 64), key.p);
            return -1;
        }
    }
    if (f->min_age_ms > f->max_age_ms) {
        snprintf(err, errlen, "min_age is larger than max_age: nothing can match");
        return -1;
    }
    return 0;
}

bool
qfilter_domain_match(const struct qfilter *f, struct slice addr)
{
    size_t at = addr.len, dl;
    const char *d;

    if (f->domain_len == 0)
        return true;
    while (at > 0 && addr.p[at - 1] != '@')
        at--;
    if (at == 0)
        return false; /* no domain (postmaster) */
    d = addr.p + at;
    dl = addr.len - at;
    if (dl < f->domain_len)
        return false;
    for (size_t k = 0; k < f->domain_len; k++) {
        if (ascii_lower(d[dl - f->domain_len + k]) != f->domain[k])
            return false;
    }
    return dl == f->domain_len || d[dl - f->domain_len - 1] == '.';
}

bool
qfilter_sender_match(const struct qfilter *f, struct slice s)
{
    if (f->sender_null)
        return s.len == 0;
    if (f->sender_len == 0)
        return true;
    for (size_t i = 0; i + f->sender_len <= s.len; i++) {
        size_t k = 0;

        while (k < f->sender_len && ascii_lower(s.p[i + k]) == f->sender[k])
            k++;
        if (k == f->sender_len)
            return true;
    }
    return false;
}

bool
qfilter_age_match(const struct qfilter *f, uint64_t age_ms)
{
    return age_ms >= f->min_age_ms && age_ms <= f->max_age_ms;
}

const char *
qstate_name(unsigned state)
{
    switch (state) {
    case QSTATE_ACTIVE:
        return "active";
    case QSTATE_DEFERRED:
        return "deferred";
    case QSTATE_HELD:
        return "held";
    case QSTATE_WAITING:
        return "waiting";
    default:
        return "unknown";
    }
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 (RFC 3629: no overlongs, surrogates). */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++) {
        if (s[k] < 0x80 || s[k] > 0xbf)
            return 0;
    }
    return len;
}

bool
json_escape(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t w = *o;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\') {
            if (w + 2 > cap)
                return false;
            out[w++] = '\\';
            out[w++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            if (w + 6 > cap)
                return false;
            memcpy(out + w, "\\u00", 4);
            out[w + 4] = hex[c >> 4];
            out[w + 5] = hex[c & 15];
            w += 6;
        } else if (c < 0x80) {
            if (w + 1 > cap)
                return false;
            out[w++] = (char)c;
        } else {
            size_t len = utf8_len((const unsigned char *)s + i, n - i);

            if (len == 0) {
                if (w + 6 > cap)
                    return false;
                memcpy(out + w, "\\ufffd", 6);
                w += 6;
                continue;
            }
            if (w + len > cap)
                return false;
            memcpy(out + w, s + i, len);
            w += len;
            i += len - 1;
        }
    }
    *o = w;
    return true;
}
