/*
 * Tests for core/qfilter.c: the admin endpoint's /queue filters (query
 * parsing, percent-decoding, every refusal), durations, the domain, sender
 * and age matches, and JSON string escaping.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include <stdlib.h>

#include "core/qfilter.h"

static int
parse(struct qfilter *f, const char *q, char *err, size_t errlen)
{
    qfilter_init(f);
    return qfilter_parse(f, slice_make(q, strlen(q)), err, errlen);
}

static bool
dur(const char *s, uint64_t *ms)
{
    return qfilter_duration(slice_make(s, strlen(s)), ms);
}

Test(qfilter, durations)
{
    uint64_t ms = 0;

    cr_assert(dur("30s", &ms));
    cr_assert_eq(ms, 30000);
    cr_assert(dur("10m", &ms));
    cr_assert_eq(ms, 600000);
    cr_assert(dur("2h", &ms));
    cr_assert_eq(ms, 7200000);
    cr_assert(dur("1d", &ms));
    cr_assert_eq(ms, 86400000);
    cr_assert(dur("45", &ms));
    cr_assert_eq(ms, 45000);
    cr_assert(dur("0s", &ms));
    cr_assert_eq(ms, 0);
    cr_assert_not(dur("", &ms));
    cr_assert_not(dur("s", &ms));
    cr_assert_not(dur("5x", &ms));
    cr_assert_not(dur("5ms", &ms));
    cr_assert_not(dur("-5s", &ms));
    cr_assert_not(dur("1.5h", &ms));
    cr_assert_not(dur("99999999999999999999d", &ms));
}

Test(qfilter, defaults)
{
    struct qfilter f;
    char err[256];

    cr_assert_eq(parse(&f, "", err, sizeof(err)), 0);
    cr_assert_eq(f.limit, QFILTER_LIMIT_DEFAULT);
    cr_assert_eq(f.states, QSTATE_ALL);
    cr_assert_eq(f.max_age_ms, UINT64_MAX);
    cr_assert_not(qfilter_narrows(&f));
    cr_assert(qfilter_domain_match(&f, SLICE_LIT("a@b.example")));
    cr_assert(qfilter_sender_match(&f, SLICE_LIT("")));
    cr_assert(qfilter_age_match(&f, 0));
    cr_assert_eq(parse(&f, "limit=5&body=1", err, sizeof(err)), 0);
    cr_assert_not(qfilter_narrows(&f));
    cr_assert_eq(f.limit, 5);
    cr_assert(f.body);
}

Test(qfilter, every_key)
{
    struct qfilter f;
    char err[256];

    cr_assert_eq(parse(&f,
                       "domain=Example.COM&sender=Alice%40&min_age=10m&max_age=2h&state=deferred,"
                       "held&limit=20&",
                       err, sizeof(err)),
                 0, "%s", err);
    cr_assert(qfilter_narrows(&f));
    cr_assert_str_eq(f.domain, "example.com");
    cr_assert_str_eq(f.sender, "alice@");
    cr_assert_eq(f.min_age_ms, 600000);
    cr_assert_eq(f.max_age_ms, 7200000);
    cr_assert_eq(f.states, QSTATE_DEFERRED | QSTATE_HELD);
    cr_assert_eq(f.limit, 20);
    cr_assert(qfilter_age_match(&f, 600000));
    cr_assert(qfilter_age_match(&f, 7200000));
    cr_assert_not(qfilter_age_match(&f, 599999));
    cr_assert_not(qfilter_age_match(&f, 7200001));
}

Test(qfilter, domain_exact_or_suffix)
{
    struct qfilter f;
    char err[256];

    cr_assert_eq(parse(&f, "domain=example.com", err, sizeof(err)), 0);
    cr_assert(qfilter_domain_match(&f, SLICE_LIT("u@example.com")));
    cr_assert(qfilter_domain_match(&f, SLICE_LIT("u@EXAMPLE.Com")));
    cr_assert(qfilter_domain_match(&f, SLICE_LIT("u@mx.example.com")));
    cr_assert_not(qfilter_domain_match(&f, SLICE_LIT("u@badexample.com")));
    cr_assert_not(qfilter_domain_match(&f, SLICE_LIT("u@example.com.evil")));
    cr_assert_not(qfilter_domain_match(&f, SLICE_LIT("postmaster")));
    cr_assert_not(qfilter_domain_match(&f, SLICE_LIT("example.com@other.org")));
    cr_assert_eq(parse(&f, "domain=.example.com", err, sizeof(err)), 0);
    cr_assert_str_eq(f.domain, "example.com");
    cr_assert(qfilter_domain_match(&f, SLICE_LIT("u@a.example.com")));
}

Test(qfilter, sender_substring_and_null)
{
    struct qfilter f;
    char err[256];

    cr_assert_eq(parse(&f, "sender=ALICE", err, sizeof(err)), 0);
    cr_assert(qfilter_sender_match(&f, SLICE_LIT("alice@example.org")));
    cr_assert(qfilter_sender_match(&f, SLICE_LIT("bob.alice@example.org")));
    cr_assert_not(qfilter_sender_match(&f, SLICE_LIT("alic@example.org")));
    cr_assert_not(qfilter_sender_match(&f, SLICE_LIT("")));
    cr_assert_eq(parse(&f, "sender=%3C%3E", err, sizeof(err)), 0);
    cr_assert(f.sender_null);
    cr_assert(qfilter_narrows(&f));
    cr_assert(qfilter_sender_match(&f, SLICE_LIT("")));
    cr_assert_not(qfilter_sender_match(&f, SLICE_LIT("a@b")));
    cr_assert_eq(parse(&f, "sender=a+b", err, sizeof(err)), 0);
    cr_assert_str_eq(f.sender, "a b");
}

Test(qfilter, refusals)
{
    static const char *const bad[] = {
        "colour=red", "min_age=5x",   "max_age=",  "state=gone",   "state=held,",
        "limit=0",    "limit=100001", "limit=ten", "body=yes",     "domain=",
        "sender=",    "sender=%zz",   "sender=%4", "sender=a%00b", "min_age=2h&max_age=1h",
    };
    struct qfilter f;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_eq(parse(&f, bad[i], err, sizeof(err)), -1, "%s", bad[i]);
        cr_assert_neq(err[0], '\0', "%s: no reason", bad[i]);
    }
    {
        char big[600];

        memset(big, 'a', sizeof(big));
        memcpy(big, "sender=", 7);
        big[sizeof(big) - 1] = '\0';
        cr_assert_eq(parse(&f, big, err, sizeof(err)), -1);
    }
    cr_assert_eq(parse(&f, "min_age=5x", err, sizeof(err)), -1);
    cr_assert(strstr(err, "min_age") != NULL, "%s", err);
}

static const char *
esc(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;

    cr_assert(json_escape(out, cap - 1, &o, s, n));
    out[o] = '\0';
    return out;
}

Test(qfilter, json_escape)
{
    char out[128];
    size_t o = 0;

    cr_assert_str_eq(esc("plain", 5, out, sizeof(out)), "plain");
    cr_assert_str_eq(esc("a\"b\\c", 5, out, sizeof(out)), "a\\\"b\\\\c");
    cr_assert_str_eq(esc("\r\n\x01\x7f", 4, out, sizeof(out)), "\\u000d\\u000a\\u0001\\u007f");
    cr_assert_str_eq(esc("caf\xc3\xa9", 5, out, sizeof(out)), "caf\xc3\xa9");
    cr_assert_str_eq(esc("\xe2\x82\xac!", 4, out, sizeof(out)), "\xe2\x82\xac!");
    /* invalid: a lone continuation, an overlong, a surrogate, a truncated sequence */
    cr_assert_str_eq(esc("\x80", 1, out, sizeof(out)), "\\ufffd");
    cr_assert_str_eq(esc("\xc0\xaf", 2, out, sizeof(out)), "\\ufffd\\ufffd");
    cr_assert_str_eq(esc("\xed\xa0\x80", 3, out, sizeof(out)), "\\ufffd\\ufffd\\ufffd");
    cr_assert_str_eq(esc("x\xe2\x82", 3, out, sizeof(out)), "x\\ufffd\\ufffd");
    /* does not fit: false, the offset unchanged */
    cr_assert_not(json_escape(out, 3, &o, "abcd", 4));
    cr_assert_eq(o, 0);
    cr_assert_not(json_escape(out, 5, &o, "\x01", 1));
    cr_assert_eq(o, 0);
}

Test(qfilter, state_names)
{
    cr_assert_str_eq(qstate_name(QSTATE_ACTIVE), "active");
    cr_assert_str_eq(qstate_name(QSTATE_DEFERRED), "deferred");
    cr_assert_str_eq(qstate_name(QSTATE_HELD), "held");
    cr_assert_str_eq(qstate_name(QSTATE_WAITING), "waiting");
}

/* A key without '=' has an empty value (found by fuzz_admin_request: "domain" alone once
   read past the query, the value's length computed from a missing '='). The query is a
   heap copy of exactly its length, so ASan sees any over-read. */
Test(qfilter, key_without_value)
{
    static const char *const qs[] = { "domain", "sender", "domain&sender",
                                      "limit",  "state",  "min_age" };
    struct qfilter f;
    char err[256];

    for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
        size_t n = strlen(qs[k]);
        char *q = malloc(n);

        cr_assert_not_null(q);
        memcpy(q, qs[k], n);
        qfilter_init(&f);
        err[0] = '\0';
        cr_assert_eq(qfilter_parse(&f, slice_make(q, n), err, sizeof(err)), -1, "%s", qs[k]);
        cr_assert_neq(err[0], '\0', "%s: a reason", qs[k]);
        free(q);
    }
    cr_assert_eq(parse(&f, "domain=", err, sizeof(err)), -1);
    cr_assert_str_eq(err, "domain: empty");
}
