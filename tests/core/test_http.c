/*
 * Tests for core/http.c: request heads whole, at every prefix and fed octet by
 * octet (each piece ending at a PROT_NONE page, so an over-read faults), the
 * malformed heads the admin server answers 400, header lookup, the path of a
 * target, and the bearer-token check.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/compiler.h"
#include "core/http.h"
#include "support/guard.h"

static bool
slice_is(struct slice s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

/* in is one whole head (maybe followed by more octets): every shorter prefix needs more. */
static void
expect_ok(const char *in, size_t head_len, struct http_request *req)
{
    size_t n = strlen(in), used = 0, scanned;

    for (size_t k = 0; k < head_len; k++) {
        scanned = 0;
        cr_assert_eq(http_parse_request(guard_copy(in, k), k, &scanned, req, &used),
                     HTTP_PARSE_NEED_MORE, "prefix %zu of %zu", k, head_len);
        cr_assert_eq(scanned, k);
    }
    scanned = 0;
    cr_assert_eq(http_parse_request(guard_copy(in, n), n, &scanned, req, &used), HTTP_PARSE_OK,
                 "whole: %s", in);
    cr_assert_eq(used, head_len);
}

Test(http, get_with_headers)
{
    static const char in[] = "GET /metrics?x=1 HTTP/1.1\r\n"
                             "Host: 127.0.0.1:9025\r\n"
                             "User-Agent:  Prometheus/2.42.0 \r\n"
                             "Accept: text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
                             "X-Empty:\r\n"
                             "\r\n";
    struct http_request req;
    struct slice v;

    expect_ok(in, sizeof(in) - 1, &req);
    cr_assert(slice_is(req.method, "GET"));
    cr_assert(slice_is(req.target, "/metrics?x=1"));
    cr_assert(slice_is(http_target_path(req.target), "/metrics"));
    cr_assert_eq(req.minor, 1);
    cr_assert_eq(req.nhdr, 4);
    cr_assert(http_header_get(&req, "user-agent", &v));
    cr_assert(slice_is(v, "Prometheus/2.42.0"), "%.*s", (int)v.len, v.p);
    cr_assert(http_header_get(&req, "X-EMPTY", &v));
    cr_assert_eq(v.len, 0);
    cr_assert_not(http_header_get(&req, "Authorization", &v));
}

Test(http, bare_lf_and_http10)
{
    static const char in[] = "HEAD /healthz HTTP/1.0\nHost: x\n\n";
    struct http_request req;

    expect_ok(in, sizeof(in) - 1, &req);
    cr_assert(slice_is(req.method, "HEAD"));
    cr_assert(slice_is(req.target, "/healthz"));
    cr_assert_eq(req.minor, 0);
    cr_assert_eq(req.nhdr, 1);
}

Test(http, no_headers_and_octets_after_the_head)
{
    static const char in[] = "GET / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n";
    struct http_request req;

    expect_ok(in, 18, &req);
    cr_assert(slice_is(req.target, "/"));
    cr_assert_eq(req.nhdr, 0);
}

/* Octet by octet into one growing buffer, as the server reads: scanned resumes the search. */
Test(http, fed_octet_by_octet)
{
    static const char in[] =
        "GET /readyz HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\r\n";
    const size_t n = sizeof(in) - 1;
    struct http_request req;
    size_t scanned = 0, used = 0;

    for (size_t k = 1; k < n; k++) {
        cr_assert_eq(http_parse_request(guard_copy(in, k), k, &scanned, &req, &used),
                     HTTP_PARSE_NEED_MORE, "at %zu", k);
        cr_assert_eq(scanned, k);
    }
    cr_assert_eq(http_parse_request(guard_copy(in, n), n, &scanned, &req, &used), HTTP_PARSE_OK);
    cr_assert_eq(used, n);
    cr_assert(slice_is(http_target_path(req.target), "/readyz"));
}

/* An end split across calls right at the CR LF CR | LF boundary is still found. */
Test(http, end_found_across_calls)
{
    static const char in[] = "GET / HTTP/1.1\r\nA: b\r\n\r\n";
    const size_t n = sizeof(in) - 1;
    struct http_request req;

    for (size_t cut = 1; cut < n; cut++) {
        size_t scanned = 0, used = 0;

        cr_assert_eq(http_parse_request(in, cut, &scanned, &req, &used), HTTP_PARSE_NEED_MORE);
        cr_assert_eq(http_parse_request(in, n, &scanned, &req, &used), HTTP_PARSE_OK, "cut %zu",
                     cut);
        cr_assert_eq(used, n);
    }
}

struct bad_case {
    char in[160];
    size_t len; /* 0: strlen(in) */
};

static const struct bad_case bad_cases[] = {
    { .in = "GET /\r\n\r\n" },                                  /* HTTP/0.9 */
    { .in = "GET / HTTP/2.0\r\n\r\n" },                         /* not 1.x */
    { .in = "GET / HTTP/1.2\r\n\r\n" },                         /* no such minor */
    { .in = "GET / http/1.1\r\n\r\n" },                         /* the version is case-sensitive */
    { .in = "GET / HTTP/1.1 \r\n\r\n" },                        /* a blank after the version */
    { .in = "GET  / HTTP/1.1\r\n\r\n" },                        /* two blanks */
    { .in = " GET / HTTP/1.1\r\n\r\n" },                        /* a blank first */
    { .in = "\r\nGET / HTTP/1.1\r\n\r\n" },                     /* an empty line first */
    { .in = "G(T / HTTP/1.1\r\n\r\n" },                         /* not a token */
    { .in = "GET /a\x01 HTTP/1.1\r\n\r\n" },                    /* a control octet in the target */
    { .in = "GET /\xc3\xa9 HTTP/1.1\r\n\r\n" },                 /* a raw non-ASCII target */
    { .in = "GET / HTTP/1.1\rX\r\n\r\n" },                      /* a bare CR */
    { .in = "GET / HTTP/1.1\r\nHost : x\r\n\r\n" },             /* a blank before the colon */
    { .in = "GET / HTTP/1.1\r\nHost x\r\n\r\n" },               /* no colon */
    { .in = "GET / HTTP/1.1\r\n: x\r\n\r\n" },                  /* no name */
    { .in = "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n" },           /* obs-fold */
    { .in = "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n" },             /* DEL in a value */
    { .in = "GET / HTTP/1.1\r\nA: b\x00x\r\n\r\n", .len = 26 }, /* NUL in a value */
    { .in = "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n" },              /* a bare CR in a value */
    { .in = "GET / HTTP/1.1\r\nA\x80: b\r\n\r\n" },             /* not a token in a name */
    { .in = "\r\n\r\n" },                                       /* nothing but the end */
};

/* Each whole malformed head is BAD (as the server reads it: all at once). */
Test(http, bad)
{
    for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
        const struct bad_case *c = &bad_cases[i];
        size_t n = c->len != 0 ? c->len : strlen(c->in), scanned = 0, used = 0;
        struct http_request req;

        cr_assert(n >= 4 && memcmp(c->in + n - 4, "\r\n\r\n", 4) == 0, "case %zu", i);
        cr_assert_eq(http_parse_request(guard_copy(c->in, n), n, &scanned, &req, &used),
                     HTTP_PARSE_BAD, "case %zu: %s", i, c->in);
    }
}

Test(http, header_count_limit)
{
    char in[2048];
    size_t n, scanned, used;
    struct http_request req;

    n = (size_t)snprintf(in, sizeof(in), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "H%d: v\r\n", i);
    memcpy(in + n, "\r\n", 3);
    scanned = 0;
    cr_assert_eq(http_parse_request(in, n + 2, &scanned, &req, &used), HTTP_PARSE_OK);
    cr_assert_eq(req.nhdr, HTTP_MAX_HEADERS);
    n += (size_t)snprintf(in + n, sizeof(in) - n, "One-More: v\r\n\r\n");
    scanned = 0;
    cr_assert_eq(http_parse_request(in, n, &scanned, &req, &used), HTTP_PARSE_BAD);
}

Test(http, target_path)
{
    cr_assert(slice_is(http_target_path(SLICE_LIT("/metrics")), "/metrics"));
    cr_assert(slice_is(http_target_path(SLICE_LIT("/metrics?")), "/metrics"));
    cr_assert(slice_is(http_target_path(SLICE_LIT("/a?b?c")), "/a"));
    cr_assert(slice_is(http_target_path(SLICE_LIT("?x")), ""));
}

Test(http, bearer)
{
    static const char s[] = "s3cret-token";
    const size_t n = sizeof(s) - 1;

    cr_assert(http_bearer_match(SLICE_LIT("Bearer s3cret-token"), s, n));
    cr_assert(http_bearer_match(SLICE_LIT("bearer s3cret-token"), s, n));
    cr_assert(http_bearer_match(SLICE_LIT("BEARER   s3cret-token"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearer s3cret-toke"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearer s3cret-tokenX"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearer S3cret-token"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearer "), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearer"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearers3cret-token"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("Basic s3cret-token"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT("s3cret-token"), s, n));
    cr_assert_not(http_bearer_match(SLICE_LIT(""), s, n));
    /* an empty secret never matches */
    cr_assert_not(http_bearer_match(SLICE_LIT("Bearer "), "", 0));
}
