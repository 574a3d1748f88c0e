/*
 * fuzz_admin_request.c: libFuzzer entry point for what the admin endpoint
 * reads from its clients: the HTTP request head (core/http.c), the target's
 * path and query, the /queue filters parsed from the query (core/qfilter.c),
 * the bearer token check, and the JSON escaping of whatever text a filter
 * or a message carries. Invariants are checked with abort(), so that they
 * hold in an NDEBUG build too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/http.h"
#include "core/qfilter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The parse must not depend on how the head arrived: fed in two parts, the same result. */
static enum http_parse
parse_split(const char *buf, size_t size, size_t cut, struct http_request *req, size_t *consumed)
{
    size_t scanned = 0;
    enum http_parse rc = http_parse_request(buf, cut, &scanned, req, consumed);

    if (rc != HTTP_PARSE_NEED_MORE || cut == size)
        return rc;
    if (scanned > cut)
        abort();
    return http_parse_request(buf, size, &scanned, req, consumed);
}

static void
check_escape(const char *s, size_t n)
{
    char out[4096];
    size_t o = 0;

    if (n > 512)
        n = 512; /* at most 6 octets out per octet in: always fits */
    if (!json_escape(out, sizeof(out), &o, s, n) || o > sizeof(out))
        abort();
    for (size_t i = 0; i < o; i++) {
        unsigned char c = (unsigned char)out[i];

        /* nothing a JSON string may not hold raw */
        if (c < 0x20)
            abort();
        if (c == '"' && (i == 0 || out[i - 1] != '\\'))
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct http_request req, again;
    size_t consumed = 0, consumed2 = 0, scanned = 0;
    enum http_parse rc;

    if (size > 16384)
        return 0; /* the endpoint reads at most ADMIN_REQ_MAX (8 KiB) of head */
    rc = http_parse_request(buf, size, &scanned, &req, &consumed);
    if (rc != parse_split(buf, size, size / 2, &again, &consumed2))
        abort();
    if (rc != HTTP_PARSE_OK)
        return 0;
    if (consumed == 0 || consumed > size || consumed2 != consumed || req.nhdr > HTTP_MAX_HEADERS)
        abort();
    if (req.method.len == 0 || req.method.p < buf || req.target.p + req.target.len > buf + size)
        abort();
    {
        struct slice path = http_target_path(req.target), query = { NULL, 0 }, auth;
        struct qfilter f;
        char err[256] = "";

        if (path.len > req.target.len || path.p != req.target.p)
            abort();
        if (path.len < req.target.len) {
            query.p = req.target.p + path.len + 1;
            query.len = req.target.len - path.len - 1;
        }
        qfilter_init(&f);
        if (qfilter_parse(&f, query, err, sizeof(err)) < 0) {
            if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
                abort();
        } else {
            if (f.domain_len >= sizeof(f.domain) || f.sender_len >= sizeof(f.sender))
                abort();
            if (f.min_age_ms > f.max_age_ms || (f.states & ~(unsigned)QSTATE_ALL) != 0)
                abort();
            /* what the filters match against, from the same bytes */
            (void)qfilter_domain_match(&f, query);
            (void)qfilter_sender_match(&f, query);
            (void)qfilter_age_match(&f, consumed);
        }
        if (http_header_get(&req, "Authorization", &auth))
            (void)http_bearer_match(auth, "s3cret-token", 12);
        check_escape(req.target.p, req.target.len);
        for (unsigned i = 0; i < req.nhdr; i++)
            check_escape(req.hdr[i].value.p, req.hdr[i].value.len);
    }
    return 0;
}
