/*
 * http.c: the admin endpoint's HTTP/1.x request-head parser (see http.h).
 *
 * Two passes, as picohttpparser's is_complete(): first find the empty line
 * that ends the head (resuming where the last call stopped), then parse the
 * complete head line by line. Heads are small (the admin server reads at most
 * 8 KiB), so the second pass costs nothing worth keeping state for.
 *
 * Pure: any thread.
 */
#include "core/http.h"

#include <stdint.h>
#include <string.h>

#include "core/compiler.h"

/* RFC 9110 5.6.2 tchar */
static bool
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 9110 5.5 field-vchar, plus the blanks inside a value */
static bool
is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* The end of the head (just past its empty line) in buf[0..len), or 0 when not there yet. */
static size_t
head_end(const char *buf, size_t len, size_t *scanned)
{
    /* an end seen across the last call's boundary starts at most 2 octets before it */
    size_t i = *scanned > 2 ? *scanned - 2 : 0;

    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        size_t k;

        if (lf == NULL)
            break;
        k = (size_t)(lf - buf) + 1;
        if (k < len && buf[k] == '\n')
            return k + 1;
        if (k + 1 < len && buf[k] == '\r' && buf[k + 1] == '\n')
            return k + 2;
        i = k;
    }
    *scanned = len;
    return 0;
}

/* One line of [p, end): its content is [p, *eol), the next line starts at the return value.
   The head's end was found, so every line has its LF. NULL on a bare CR. */
static const char *
next_line(const char *p, const char *end, const char **eol)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *e;

    BUG_ON(lf == NULL);
    e = (lf > p && lf[-1] == '\r') ? lf - 1 : lf;
    if (memchr(p, '\r', (size_t)(e - p)) != NULL)
        return NULL;
    *eol = e;
    return lf + 1;
}

/* method SP request-target SP HTTP-version */
static bool
request_line(const char *p, const char *e, struct http_request *out)
{
    static const char ver[] = "HTTP/1.";
    const char *s = p;

    while (p < e && is_tchar((unsigned char)*p))
        p++;
    if (p == s || p == e || *p != ' ')
        return false;
    out->method = slice_make(s, (size_t)(p - s));
    s = ++p;
    while (p < e && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
        p++;
    if (p == s || p == e || *p != ' ')
        return false;
    out->target = slice_make(s, (size_t)(p - s));
    p++;
    if ((size_t)(e - p) != sizeof(ver) || memcmp(p, ver, sizeof(ver) - 1) != 0)
        return false;
    p += sizeof(ver) - 1;
    if (*p != '0' && *p != '1')
        return false;
    out->minor = (unsigned)(*p - '0');
    return true;
}

/* field-name ":" OWS field-value OWS */
static bool
header_line(const char *p, const char *e, struct http_header *h)
{
    const char *s = p;

    while (p < e && is_tchar((unsigned char)*p))
        p++;
    /* no name, a blank before the colon (RFC 9112 5.1), or an obs-fold line */
    if (p == s || p == e || *p != ':')
        return false;
    h->name = slice_make(s, (size_t)(p - s));
    p++;
    for (const char *q = p; q < e; q++) {
        if (!is_field_char((unsigned char)*q))
            return false;
    }
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    h->value = slice_make(p, (size_t)(e - p));
    return true;
}

enum http_parse
http_parse_request(const char *buf, size_t len, size_t *scanned, struct http_request *out,
                   size_t *consumed)
{
    size_t n = head_end(buf, len, scanned);
    const char *p = buf, *end = buf + n, *eol;

    if (n == 0)
        return HTTP_PARSE_NEED_MORE;
    out->nhdr = 0;
    p = next_line(p, end, &eol);
    if (p == NULL || !request_line(buf, eol, out))
        return HTTP_PARSE_BAD;
    for (;;) {
        const char *s = p;

        p = next_line(s, end, &eol);
        if (p == NULL)
            return HTTP_PARSE_BAD;
        if (eol == s)
            break; /* the empty line */
        if (out->nhdr == HTTP_MAX_HEADERS || !header_line(s, eol, &out->hdr[out->nhdr]))
            return HTTP_PARSE_BAD;
        out->nhdr++;
    }
    BUG_ON(p != end);
    *consumed = n;
    return HTTP_PARSE_OK;
}

bool
http_header_get(const struct http_request *req, const char *name, struct slice *value)
{
    for (unsigned i = 0; i < req->nhdr; i++) {
        if (slice_eq_nocase(req->hdr[i].name, name)) {
            *value = req->hdr[i].value;
            return true;
        }
    }
    return false;
}

struct slice
http_target_path(struct slice target)
{
    const char *q = memchr(target.p, '?', target.len);

    return q == NULL ? target : slice_make(target.p, (size_t)(q - target.p));
}

bool
http_bearer_match(struct slice a, const char *secret, size_t secret_len)
{
    static const char scheme[] = "bearer";
    const unsigned char *given;
    size_t i = sizeof(scheme) - 1, glen;
    volatile unsigned diff = 0; /* volatile: no early exit on the first difference */

    if (secret_len == 0 || a.len <= i || !slice_prefix_nocase(a, scheme) || a.p[i] != ' ')
        return false;
    while (i < a.len && a.p[i] == ' ')
        i++;
    given = (const unsigned char *)a.p + i;
    glen = a.len - i;
    /* as many steps as the secret has octets, whatever was given */
    for (size_t k = 0; k < secret_len; k++)
        diff |= (unsigned)((k < glen ? given[k] : 0) ^ (unsigned char)secret[k]);
    return (diff | (unsigned)(glen != secret_len)) == 0;
}
