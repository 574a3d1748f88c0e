/*
 * Tests for core/proxy.c: PROXY protocol v1 and v2 headers, whole, at every
 * prefix (each piece ending at a PROT_NONE page, so an over-read faults), the
 * first octet that makes an input BAD, the IPv6 text form, and the v1 address
 * grammar against glibc's inet_pton() on generated strings.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/compiler.h"
#include "core/proxy.h"
#include "support/guard.h"

/* A string literal and its length, NULs inside included. */
#define LIT(s) s, sizeof(s) - 1

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"

struct res {
    enum proxy_result rc;
    struct proxy_info pi;
    size_t used;
    const char *why;
};

/* proxy_parse() on in[0..n) placed against the guard page. */
static struct res
parse(const void *in, size_t n)
{
    struct res r = { .used = (size_t)-1 };

    memset(&r.pi, 0xa5, sizeof(r.pi));
    r.rc = proxy_parse(guard_copy(in, n), n, &r.pi, &r.used, &r.why);
    return r;
}

/* in[0..n) is one whole header: every shorter prefix needs more, then OK. */
static struct res
expect_ok(const void *in, size_t n)
{
    struct res r;

    for (size_t k = 0; k < n; k++) {
        r = parse(in, k);
        cr_assert_eq(r.rc, PROXY_NEED_MORE, "prefix %zu of %zu: rc %d (%s)", k, n, r.rc,
                     r.rc == PROXY_BAD ? r.why : "");
    }
    r = parse(in, n);
    cr_assert_eq(r.rc, PROXY_OK, "whole (%zu): rc %d (%s)", n, r.rc,
                 r.rc == PROXY_BAD ? r.why : "");
    cr_assert_eq(r.used, n);
    cr_assert(memchr(r.pi.src_text, '\0', PROXY_ADDR_MAX) != NULL);
    cr_assert(memchr(r.pi.dst_text, '\0', PROXY_ADDR_MAX) != NULL);
    return r;
}

/* Prefixes shorter than first_bad need more; from first_bad on, BAD with why. */
static void
expect_bad_from(const void *in, size_t n, size_t first_bad, const char *why)
{
    cr_assert(first_bad >= 1 && first_bad <= n);
    for (size_t k = 0; k <= n; k++) {
        struct res r = parse(in, k);

        if (k < first_bad) {
            cr_assert_eq(r.rc, PROXY_NEED_MORE, "prefix %zu (bad from %zu): rc %d (%s)", k,
                         first_bad, r.rc, r.rc == PROXY_BAD ? r.why : "");
        } else {
            cr_assert_eq(r.rc, PROXY_BAD, "prefix %zu (bad from %zu): rc %d", k, first_bad, r.rc);
            cr_assert_str_eq(r.why, why, "prefix %zu", k);
        }
    }
}

static void
expect_local(const struct proxy_info *pi, int version)
{
    static const uint8_t zero[16];

    cr_assert_eq(pi->version, version);
    cr_assert(pi->local);
    cr_assert(!pi->v6 && !pi->dst_v6);
    cr_assert(memcmp(pi->src, zero, 16) == 0 && memcmp(pi->dst, zero, 16) == 0);
    cr_assert(pi->src_port == 0 && pi->dst_port == 0);
    cr_assert_str_eq(pi->src_text, "");
    cr_assert_str_eq(pi->dst_text, "");
}

/* A v2 header: signature, ver_cmd, fam, the length of body, body. */
static size_t
v2_make(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t body_len)
{
    memcpy(out, V2SIG, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(body_len >> 8);
    out[15] = (uint8_t)body_len;
    if (body_len > 0)
        memcpy(out + 16, body, body_len);
    return 16 + body_len;
}

/* ---- v1 ---- */

Test(proxy, empty_needs_more)
{
    struct res r = parse("", 0);

    cr_assert_eq(r.rc, PROXY_NEED_MORE);
}

Test(proxy, v1_tcp4)
{
    static const char in[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    static const uint8_t src[4] = { 192, 168, 0, 1 }, dst[4] = { 192, 168, 0, 11 };
    struct res r = expect_ok(LIT(in));

    cr_assert_eq(r.pi.version, 1);
    cr_assert(!r.pi.local && !r.pi.v6 && !r.pi.dst_v6);
    cr_assert(memcmp(r.pi.src, src, 4) == 0 && memcmp(r.pi.dst, dst, 4) == 0);
    cr_assert_eq(r.pi.src[4], 0);
    cr_assert_eq(r.pi.src_port, 56324);
    cr_assert_eq(r.pi.dst_port, 443);
    cr_assert_str_eq(r.pi.src_text, "192.168.0.1");
    cr_assert_str_eq(r.pi.dst_text, "192.168.0.11");
}

Test(proxy, v1_tcp4_edges)
{
    struct res r = expect_ok(LIT("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"));

    cr_assert_str_eq(r.pi.src_text, "0.0.0.0");
    cr_assert_str_eq(r.pi.dst_text, "255.255.255.255");
    cr_assert_eq(r.pi.src_port, 0);
    cr_assert_eq(r.pi.dst_port, 65535);
}

Test(proxy, v1_tcp6)
{
    static const uint8_t src[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
    struct res r = expect_ok(LIT("PROXY TCP6 2001:DB8::1 2001:db8:0:0:1:0:0:1 1025 25\r\n"));

    cr_assert_eq(r.pi.version, 1);
    cr_assert(!r.pi.local && r.pi.v6 && r.pi.dst_v6);
    cr_assert(memcmp(r.pi.src, src, 16) == 0);
    cr_assert_str_eq(r.pi.src_text, "2001:db8::1");
    cr_assert_str_eq(r.pi.dst_text, "2001:db8::1:0:0:1");
    cr_assert_eq(r.pi.src_port, 1025);
    cr_assert_eq(r.pi.dst_port, 25);
}

Test(proxy, v1_tcp6_mapped_is_ipv4)
{
    static const uint8_t src[16] = { 1, 2, 3, 4 };
    struct res r = expect_ok(LIT("PROXY TCP6 ::ffff:1.2.3.4 ::FFFF:102:304 1 2\r\n"));

    cr_assert(!r.pi.local && !r.pi.v6 && !r.pi.dst_v6);
    cr_assert(memcmp(r.pi.src, src, 16) == 0 && memcmp(r.pi.dst, src, 16) == 0);
    cr_assert_str_eq(r.pi.src_text, "1.2.3.4");
    cr_assert_str_eq(r.pi.dst_text, "1.2.3.4");
}

Test(proxy, v1_tcp6_mixed_families)
{
    struct res r = expect_ok(LIT("PROXY TCP6 ::ffff:10.0.0.1 fe80::1 1 2\r\n"));

    cr_assert(!r.pi.v6 && r.pi.dst_v6);
    cr_assert_str_eq(r.pi.src_text, "10.0.0.1");
    cr_assert_str_eq(r.pi.dst_text, "fe80::1");
}

Test(proxy, v1_unknown)
{
    struct res r = expect_ok(LIT("PROXY UNKNOWN\r\n"));

    expect_local(&r.pi, 1);
    r = expect_ok(LIT("PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"));
    expect_local(&r.pi, 1);
    r = expect_ok(LIT("PROXY UNKNOWN whatever\x01\xff\r\n")); /* ignored, whatever it is */
    expect_local(&r.pi, 1);
}

/* The spec's longest lines: TCP6 (104 octets) and UNKNOWN's worst case (107). */
Test(proxy, v1_longest_lines)
{
    static const char tcp6[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    static const char unknown[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    struct res r;

    cr_assert_eq(sizeof(tcp6) - 1, 104);
    cr_assert_eq(sizeof(unknown) - 1, PROXY_V1_MAX);
    r = expect_ok(LIT(tcp6));
    cr_assert_str_eq(r.pi.src_text, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    expect_ok(LIT(unknown));
}

Test(proxy, v1_over_long)
{
    /* 108 octets: no CR LF within the first 107 */
    static const char unknown[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n";
    /* both addresses valid (45 octets each), but the line is 116 octets */
    static const char tcp6[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
                               "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n";

    cr_assert_eq(sizeof(unknown) - 1, PROXY_V1_MAX + 1);
    expect_bad_from(LIT(unknown), PROXY_V1_MAX, "v1 line too long");
    expect_bad_from(LIT(tcp6), PROXY_V1_MAX, "v1 line too long");
}

struct bad_case {
    const char *in;
    size_t len;
    size_t first_bad; /* the length of the shortest BAD prefix */
    const char *why;
};

Test(proxy, v1_bad_at_the_first_wrong_octet)
{
    static const struct bad_case t[] = {
        { LIT("EHLO mx.example\r\n"), 1, "not a PROXY header" },
        { LIT("GET / HTTP/1.1\r\n"), 1, "not a PROXY header" },
        { LIT("\n"), 1, "not a PROXY header" },
        { LIT("PROXZ TCP4"), 5, "bad v1 signature" },
        { LIT("proxy TCP4"), 1, "not a PROXY header" },
        { LIT("PROXY  TCP4"), 7, "bad v1 protocol" },
        { LIT("PROXY tcp4 "), 7, "bad v1 protocol" },
        { LIT("PROXY TCP5 "), 10, "bad v1 protocol" },
        { LIT("PROXY TCP4\r\n"), 11, "bad v1 protocol" },
        { LIT("PROXY UDP4 "), 8, "bad v1 protocol" }, /* U of UNKNOWN */
        { LIT("PROXY UNKNOWNX\r\n"), 14, "bad v1 protocol" },
        { LIT("PROXY UNKNOWN\n"), 14, "bad v1 line end" },
        { LIT("PROXY UNKNOWN foo\nbar\r\n"), 18, "bad v1 line end" },
        { LIT("PROXY UNKNOWN\rX"), 15, "bad v1 line end" },
        /* IPv4 */
        { LIT("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), 20, "bad v1 source address" },
        { LIT("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), 13, "bad v1 source address" },
        { LIT("PROXY TCP4 1.2.3.00 5.6.7.8 1 2\r\n"), 19, "bad v1 source address" },
        { LIT("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), 17, "bad v1 source address" },
        { LIT("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"), 19, "bad v1 source address" },
        { LIT("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n"), 14, "bad v1 source address" },
        { LIT("PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n"), 12, "bad v1 source address" },
        { LIT("PROXY TCP4 ::1 ::1 1 2\r\n"), 12, "bad v1 source address" },
        { LIT("PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n"), 20, "bad v1 destination address" },
        { LIT("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), 20, "bad v1 destination address" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8\r\n"), 27, "bad v1 line end" },
        { LIT("PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n"), 13, "bad v1 source address" },
        /* IPv6 */
        { LIT("PROXY TCP6 1.2.3.4 ::1 1 2\r\n"), 13, "bad v1 source address" },
        { LIT("PROXY TCP6 1::2::3 ::1 1 2\r\n"), 17, "bad v1 source address" },
        { LIT("PROXY TCP6 ::: ::1 1 2\r\n"), 14, "bad v1 source address" },
        { LIT("PROXY TCP6 :1 ::1 1 2\r\n"), 13, "bad v1 source address" },
        { LIT("PROXY TCP6 1: ::1 1 2\r\n"), 14, "bad v1 source address" },
        { LIT("PROXY TCP6 12345:: ::1 1 2\r\n"), 16, "bad v1 source address" },
        { LIT("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), 27, "bad v1 source address" },
        { LIT("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"), 25, "bad v1 source address" },
        { LIT("PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n"), 27, "bad v1 source address" },
        { LIT("PROXY TCP6 ::1:2:3:4:5:6:7:8 ::1 1 2\r\n"), 27, "bad v1 source address" },
        { LIT("PROXY TCP6 g::1 ::1 1 2\r\n"), 12, "bad v1 source address" },
        { LIT("PROXY TCP6 ::ffff:1.2.3 ::1 1 2\r\n"), 24, "bad v1 source address" },
        { LIT("PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n"), 26, "bad v1 source address" },
        { LIT("PROXY TCP6 ::ffff:a.2.3.4 ::1 1 2\r\n"), 20, "bad v1 source address" },
        { LIT("PROXY TCP6 ::1.2.3.4:5 ::1 1 2\r\n"), 21, "bad v1 source address" },
        { LIT("PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n"), 27, "bad v1 source address" },
        { LIT("PROXY TCP6 1:2:3:4:5:6::1.2.3.4 ::1 1 2\r\n"), 26, "bad v1 source address" },
        { LIT("PROXY TCP6 [::1] ::1 1 2\r\n"), 12, "bad v1 source address" },
        { LIT("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), 19, "bad v1 source address" },
        /* ports */
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), 32, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n"), 32, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), 29, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n"), 29, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n"), 30, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n"), 28, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), 31, "bad v1 port" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n"), 30, "bad v1 port" },
        /* the line end */
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), 31, "bad v1 line end" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"), 32, "bad v1 line end" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), 32, "bad v1 line end" },
        { LIT("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), 29, "bad v1 line end" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        cr_log_info("case %zu: %.*s", i, (int)t[i].len, t[i].in);
        expect_bad_from(t[i].in, t[i].len, t[i].first_bad, t[i].why);
    }
}

/* Every octet value but the two signatures' first octets is BAD at once. */
Test(proxy, any_other_first_octet_is_bad)
{
    for (unsigned c = 0; c < 256; c++) {
        char in[1] = { (char)c };
        struct res r = parse(in, 1);

        if (c == 'P' || c == '\r') {
            cr_assert_eq(r.rc, PROXY_NEED_MORE);
        } else {
            cr_assert_eq(r.rc, PROXY_BAD, "octet %u", c);
            cr_assert_str_eq(r.why, "not a PROXY header");
        }
    }
}

/* ---- IPv6 text ---- */

Test(proxy, v6_text_is_rfc5952)
{
    static const struct {
        const char *in, *want;
    } t[] = {
        { "::1", "::1" },
        { "::", "::" },
        { "1::", "1::" },
        { "2001:db8::1", "2001:db8::1" },
        { "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1" },
        { "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },    /* the first of equal runs */
        { "2001:0:0:1:0:0:0:1", "2001:0:0:1::1" },          /* the longest run */
        { "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1" }, /* one zero group stays */
        { "1:0:0:0:0:0:0:0", "1::" },
        { "0:0:0:0:0:0:0:1", "::1" },
        { "1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0" },
        { "ABCD:EF01:2345:6789:abcd:ef01:2345:6789", "abcd:ef01:2345:6789:abcd:ef01:2345:6789" },
        { "fe80::0001:0010:0100:1000", "fe80::1:10:100:1000" },
        { "::ffff:1.2.3.4", "1.2.3.4" }, /* mapped: plain IPv4 */
        { "::ffff:0.0.0.0", "0.0.0.0" },
        { "0:0:0:0:0:ffff:c000:0201", "192.0.2.1" },
        { "::1.2.3.4", "::102:304" },               /* IPv4-compatible: hex */
        { "::ffff:0:1.2.3.4", "::ffff:0:102:304" }, /* IPv4-translated */
        { "64:ff9b::192.0.2.33", "64:ff9b::c000:221" },
        { "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304" },
        { "1::2:3:4:5:6:7", "1:0:2:3:4:5:6:7" }, /* "::" for one group, expanded */
        { "1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        char line[128];
        int n = snprintf(line, sizeof(line), "PROXY TCP6 %s %s 1 2\r\n", t[i].in, t[i].in);
        struct res r = parse(line, (size_t)n);

        cr_assert_eq(r.rc, PROXY_OK, "%s: %s", t[i].in, r.rc == PROXY_BAD ? r.why : "need more");
        cr_assert_str_eq(r.pi.src_text, t[i].want, "%s", t[i].in);
        cr_assert_str_eq(r.pi.dst_text, t[i].want, "%s", t[i].in);
    }
}

/* ---- the v1 address grammar against inet_pton() ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static unsigned
rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

/* A string that looks like an address and often is one (at most ~80 octets). */
static void
gen_addr(char out[static 128], bool v6)
{
    const size_t cap = 128;
    static const char noise[] = ":.0123456789abcdefABCDEFgx/% ";
    size_t n = 0;

    if (v6) {
        unsigned groups = rnd(10), gap = rnd(3) == 0 ? rnd(groups + 1) : 99;

        for (unsigned g = 0; g < groups; g++) {
            unsigned digits = rnd(8) == 0 ? rnd(6) : 1 + rnd(4);

            if (g == gap)
                out[n++] = ':';
            if (g > 0 || g == gap)
                out[n++] = ':';
            for (unsigned d = 0; d < digits; d++)
                out[n++] = "0123456789abcdefABCDEF"[rnd(rnd(3) == 0 ? 22 : 10)];
        }
        if (gap == groups) {
            out[n++] = ':';
            out[n++] = ':';
        }
        if (rnd(3) == 0) { /* a dotted tail */
            if (n > 0 && out[n - 1] != ':')
                out[n++] = ':';
            for (unsigned o = 0, parts = 3 + rnd(3); o < parts; o++) {
                n += (size_t)snprintf(out + n, cap - n, o ? ".%u" : "%u",
                                      rnd(4) == 0 ? rnd(300) : rnd(256));
            }
        }
    } else {
        for (unsigned o = 0, parts = 3 + rnd(3); o < parts; o++) {
            unsigned v = rnd(8) == 0 ? rnd(1000) : rnd(256);

            n += (size_t)snprintf(out + n, cap - n, o ? ".%u" : "%u", v);
            if (rnd(16) == 0)
                out[n++] = '0';
        }
    }
    out[n] = '\0';
    /* a few edits */
    for (unsigned e = rnd(4) == 0 ? 1 + rnd(2) : 0; e > 0; e--) {
        size_t at = n > 0 ? rnd((unsigned)n) : 0;
        unsigned op = rnd(3);

        if (op == 0 && n > 0) { /* delete */
            memmove(out + at, out + at + 1, n - at);
            n--;
        } else if (op == 1 && n + 1 < cap) { /* insert */
            memmove(out + at + 1, out + at, n - at + 1);
            out[at] = noise[rnd(sizeof(noise) - 1)];
            n++;
        } else if (n > 0) { /* replace */
            out[at] = noise[rnd(sizeof(noise) - 1)];
        }
    }
}

static void
check_against_inet_pton(bool v6, unsigned rounds)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    unsigned accepted = 0, rejected = 0;

    for (unsigned i = 0; i < rounds; i++) {
        char a[128], line[192], ntop[INET6_ADDRSTRLEN];
        uint8_t want[16] = { 0 };
        bool ok, is_mapped;
        struct res r;
        int n;

        gen_addr(a, v6);
        /* longer than any address; a space would split the field */
        if (a[0] == '\0' || strlen(a) > 45 || strchr(a, ' ') != NULL)
            continue;
        n = snprintf(line, sizeof(line), "PROXY %s %s %s 1 2\r\n", v6 ? "TCP6" : "TCP4", a,
                     v6 ? "::1" : "1.2.3.4");
        ok = inet_pton(v6 ? AF_INET6 : AF_INET, a, want) == 1;
        r = parse(line, (size_t)n);
        if (!ok) {
            cr_assert_eq(r.rc, PROXY_BAD, "\"%s\": inet_pton rejects it, rc %d", a, r.rc);
            rejected++;
            continue;
        }
        accepted++;
        cr_assert_eq(r.rc, PROXY_OK, "\"%s\": inet_pton accepts it, %s", a,
                     r.rc == PROXY_BAD ? r.why : "need more");
        /* and no prefix of it is turned away early */
        for (size_t k = 11; k <= 11 + strlen(a); k++)
            cr_assert_eq(parse(line, k).rc, PROXY_NEED_MORE, "\"%s\" cut at %zu", a, k);
        is_mapped = v6 && memcmp(want, mapped, 12) == 0;
        cr_assert_eq(r.pi.v6, v6 && !is_mapped, "%s", a);
        if (is_mapped) {
            cr_assert(memcmp(r.pi.src, want + 12, 4) == 0, "%s", a);
            inet_ntop(AF_INET, want + 12, ntop, sizeof(ntop));
        } else {
            cr_assert(memcmp(r.pi.src, want, v6 ? 16 : 4) == 0, "%s", a);
            inet_ntop(v6 ? AF_INET6 : AF_INET, want, ntop, sizeof(ntop));
        }
        /* glibc writes ::a.b.c.d (and ::0.0.0.2) where RFC 5952 says hex */
        if (v6 && !is_mapped && memcmp(want, mapped, 10) == 0)
            continue;
        cr_assert_str_eq(r.pi.src_text, ntop, "%s", a);
    }
    cr_log_info("%s: %u accepted, %u rejected", v6 ? "IPv6" : "IPv4", accepted, rejected);
    cr_assert(accepted > rounds / 10 && rejected > rounds / 10, "a useful mix");
}

Test(proxy, v6_grammar_matches_inet_pton)
{
    check_against_inet_pton(true, 200000);
}

Test(proxy, v4_grammar_matches_inet_pton)
{
    check_against_inet_pton(false, 100000);
}

/* ---- v2 ---- */

Test(proxy, v2_ipv4)
{
    static const uint8_t body[] = { 192, 0, 2, 1, 198, 51, 100, 7, 0xc3, 0x50, 0, 25 };
    uint8_t in[64];
    size_t n = v2_make(in, 0x21, 0x11, body, sizeof(body));
    struct res r = expect_ok(in, n);

    cr_assert_eq(n, 28);
    cr_assert_eq(r.pi.version, 2);
    cr_assert(!r.pi.local && !r.pi.v6 && !r.pi.dst_v6);
    cr_assert(memcmp(r.pi.src, body, 4) == 0 && memcmp(r.pi.dst, body + 4, 4) == 0);
    cr_assert_eq(r.pi.src_port, 50000);
    cr_assert_eq(r.pi.dst_port, 25);
    cr_assert_str_eq(r.pi.src_text, "192.0.2.1");
    cr_assert_str_eq(r.pi.dst_text, "198.51.100.7");
}

Test(proxy, v2_ipv4_with_tlvs)
{
    static const uint8_t body[] = {
        10,   0,    0,    1,    10,   0,    0,    2,   0x04, 0xd2, 0x00, 0x19, /* addresses, 1234 ->
                                                                                  25 */
        0x01, 0x00, 0x04, 's',  'm',  't',  'p',                               /* ALPN */
        0x02, 0x00, 0x0b, 'm',  'x',  '.',  'e',  'x', 'a',  'm',  'p',  'l',  'e',
        '.',                                         /* AUTHORITY */
        0x20, 0x00, 0x0c, 0x01, 0,    0,    0,    0, /* SSL: client, verify */
        0x21, 0x00, 0x04, 'T',  'L',  'S',  '1',     /*   sub-TLV VERSION */
        0x04, 0x00, 0x00,                            /* NOOP, empty */
        0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,    /* CRC32C: not checked */
    };
    uint8_t in[128];
    size_t n = v2_make(in, 0x21, 0x11, body, sizeof(body));
    struct res r = expect_ok(in, n);

    cr_assert(!r.pi.local);
    cr_assert_str_eq(r.pi.src_text, "10.0.0.1");
    cr_assert_str_eq(r.pi.dst_text, "10.0.0.2");
    cr_assert_eq(r.pi.src_port, 1234);
    cr_assert_eq(r.pi.dst_port, 25);
}

Test(proxy, v2_ipv6)
{
    static const uint8_t body[] = {
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, /* 2001:db8::1:0:0:1 */
        0,    0,    0,    0,    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* ::1 */
        0xff, 0xff, 0x00, 0x00,
    };
    uint8_t in[64];
    size_t n = v2_make(in, 0x21, 0x21, body, sizeof(body));
    struct res r = expect_ok(in, n);

    cr_assert_eq(n, 52);
    cr_assert(!r.pi.local && r.pi.v6 && r.pi.dst_v6);
    cr_assert(memcmp(r.pi.src, body, 16) == 0 && memcmp(r.pi.dst, body + 16, 16) == 0);
    cr_assert_str_eq(r.pi.src_text, "2001:db8::1:0:0:1");
    cr_assert_str_eq(r.pi.dst_text, "::1");
    cr_assert_eq(r.pi.src_port, 65535);
    cr_assert_eq(r.pi.dst_port, 0);
}

Test(proxy, v2_ipv6_mapped_with_tlv)
{
    static const uint8_t body[] = {
        0,    0,    0,    0,    0,   0,   0,   0,
        0,    0,    0xff, 0xff, 203, 0,   113, 9, /* ::ffff:203.0.113.9 */
        0xfe, 0x80, 0,    0,    0,   0,   0,   0,
        0,    0,    0,    0,    0,   0,   0,   0x25, /* fe80::25 */
        0x12, 0x34, 0x00, 0x19,                      /* 4660 -> 25 */
        0x05, 0x00, 0x03, 'i',  'd', '1',            /* UNIQUE_ID */
    };
    uint8_t in[64];
    struct res r = expect_ok(in, v2_make(in, 0x21, 0x21, body, sizeof(body)));

    cr_assert(!r.pi.v6 && r.pi.dst_v6);
    cr_assert_str_eq(r.pi.src_text, "203.0.113.9");
    cr_assert(r.pi.src[0] == 203 && r.pi.src[3] == 9 && r.pi.src[4] == 0 && r.pi.src[15] == 0);
    cr_assert_str_eq(r.pi.dst_text, "fe80::25");
    cr_assert_eq(r.pi.src_port, 0x1234);
}

Test(proxy, v2_local)
{
    static const uint8_t addrs[] = { 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2 };
    static const uint8_t junk[] = { 0xff, 0xff, 0xff }; /* not walked: the family is ignored */
    uint8_t in[64];
    struct res r;

    /* what HAProxy sends for its health checks */
    r = expect_ok(in, v2_make(in, 0x20, 0x00, NULL, 0));
    expect_local(&r.pi, 2);
    /* LOCAL with addresses: still local; with any family byte; the length is skipped */
    r = expect_ok(in, v2_make(in, 0x20, 0x11, addrs, sizeof(addrs)));
    expect_local(&r.pi, 2);
    r = expect_ok(in, v2_make(in, 0x20, 0xff, junk, sizeof(junk)));
    expect_local(&r.pi, 2);
}

Test(proxy, v2_other_families_are_local)
{
    static const uint8_t tlv[] = { 0x04, 0x00, 0x01, 0x00 };
    uint8_t body[216 + sizeof(tlv)] = { 0 }, in[16 + sizeof(body)];
    struct res r;

    r = expect_ok(in, v2_make(in, 0x21, 0x00, NULL, 0)); /* AF_UNSPEC */
    expect_local(&r.pi, 2);
    r = expect_ok(in, v2_make(in, 0x21, 0x00, tlv, sizeof(tlv))); /* AF_UNSPEC with a TLV */
    expect_local(&r.pi, 2);
    memcpy(body + 216, tlv, sizeof(tlv));
    r = expect_ok(in, v2_make(in, 0x21, 0x31, body, sizeof(body))); /* AF_UNIX stream */
    expect_local(&r.pi, 2);
    r = expect_ok(in, v2_make(in, 0x21, 0x10, body, 12)); /* AF_INET, UNSPEC transport */
    expect_local(&r.pi, 2);
}

Test(proxy, v2_longest_header)
{
    uint8_t body[PROXY_V2_MAX - 16] = { 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2 };
    uint8_t in[PROXY_V2_MAX + 1];
    size_t tl = sizeof(body) - 12 - 3;
    struct res r;

    body[12] = 0x04; /* one NOOP TLV filling the rest */
    body[13] = (uint8_t)(tl >> 8);
    body[14] = (uint8_t)tl;
    cr_assert_eq(v2_make(in, 0x21, 0x11, body, sizeof(body)), PROXY_V2_MAX);
    r = expect_ok(in, PROXY_V2_MAX);
    cr_assert_str_eq(r.pi.dst_text, "10.0.0.2");
}

Test(proxy, v2_bad_at_the_first_wrong_octet)
{
    static const struct bad_case t[] = {
        { LIT("\r\n\r\n\x01"), 5, "bad v2 signature" },
        { LIT("\r\r"), 2, "bad v2 signature" },
        { LIT(V2SIG "\x11\x11\x00\x0c"), 13, "bad v2 version" },
        { LIT(V2SIG "\x31\x11\x00\x0c"), 13, "bad v2 version" },
        { LIT(V2SIG "\x22\x11\x00\x0c"), 13, "bad v2 command" },
        { LIT(V2SIG "\x2f\x11\x00\x0c"), 13, "bad v2 command" },
        { LIT(V2SIG "\x21\x41\x00\x0c"), 14, "bad v2 family" },
        { LIT(V2SIG "\x21\x13\x00\x0c"), 14, "bad v2 family" },
        { LIT(V2SIG "\x21\x12\x00\x0c"), 14, "v2 datagram transport" },
        { LIT(V2SIG "\x21\x22\x00\x24"), 14, "v2 datagram transport" },
        { LIT(V2SIG "\x21\x32\x00\xd8"), 14, "v2 datagram transport" },
        { LIT(V2SIG "\x21\x02\x00\x00"), 14, "v2 datagram transport" },
        /* length: over 1024 from its high octet, or exactly 1025 */
        { LIT(V2SIG "\x21\x11\x05\x00"), 15, "v2 header too long" },
        { LIT(V2SIG "\x21\x11\xff\xff"), 15, "v2 header too long" },
        { LIT(V2SIG "\x20\x00\x04\x01"), 16, "v2 header too long" },
        { LIT(V2SIG "\x21\x11\x04\x01"), 16, "v2 header too long" },
        /* too short for the family's addresses */
        { LIT(V2SIG "\x21\x11\x00\x0b"), 16, "v2 length too short for the addresses" },
        { LIT(V2SIG "\x21\x21\x00\x0c"), 16, "v2 length too short for the addresses" },
        { LIT(V2SIG "\x21\x31\x00\xd7"), 16, "v2 length too short for the addresses" },
        /* TLVs: 1 or 2 octets left over, a value crossing the end (known from the
           TLV's header, before its value or the addresses arrive) */
        { LIT(V2SIG "\x21\x11\x00\x0d"
                    "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
                    "\x04"),
          16, "truncated v2 TLV" },
        { LIT(V2SIG "\x21\x11\x00\x0e"
                    "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
                    "\x04\x00"),
          16, "truncated v2 TLV" },
        { LIT(V2SIG "\x21\x11\x00\x10"
                    "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
                    "\x04\x00\x02\x00"),
          31, "bad v2 TLV length" },
        { LIT(V2SIG "\x21\x11\x00\x12"
                    "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
                    "\x04\x00\x01\x00"
                    "\x04\x00\x00"),
          31, "truncated v2 TLV" },
        { LIT(V2SIG "\x21\x11\x00\x14"
                    "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
                    "\x01\x00\x01\x00"
                    "\x04\x01\x00\x00"),
          35, "bad v2 TLV length" },
        { LIT(V2SIG "\x21\x11\x04\x00"
                    "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"
                    "\x04\x03\xf3"),
          31, "bad v2 TLV length" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        cr_log_info("case %zu", i);
        expect_bad_from(t[i].in, t[i].len, t[i].first_bad, t[i].why);
    }
}

/* ---- the header's length exactly; what follows is the client's ---- */

Test(proxy, used_is_the_header_only)
{
    static const char smtp[] = "EHLO client.example\r\nMAIL FROM:<a@b>\r\n";
    static const uint8_t body[] = { 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x04, 0x00, 0x00 };
    static const char *const v1[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP6 ::1 ::2 1 2\r\n",
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN ::1 ::2 1 2\r\n",
    };
    uint8_t in[256];
    size_t hl;

    for (size_t i = 0; i < ARRAY_SIZE(v1); i++) {
        hl = strlen(v1[i]);
        memcpy(in, v1[i], hl);
        memcpy(in + hl, smtp, sizeof(smtp) - 1);
        for (size_t extra = 0; extra < sizeof(smtp); extra++) {
            struct res r = parse(in, hl + extra);

            cr_assert_eq(r.rc, PROXY_OK, "%s + %zu", v1[i], extra);
            cr_assert_eq(r.used, hl);
        }
    }
    /* v2: trailing bytes that would look like a TLV are not one */
    for (int local = 0; local < 2; local++) {
        hl = v2_make(in, local ? 0x20 : 0x21, 0x11, body, sizeof(body));
        memcpy(in + hl, "\x01\xff\xff", 3);
        memcpy(in + hl + 3, smtp, sizeof(smtp) - 1);
        for (size_t extra = 0; extra < sizeof(smtp) + 3; extra++) {
            struct res r = parse(in, hl + extra);

            cr_assert_eq(r.rc, PROXY_OK, "v2 + %zu", extra);
            cr_assert_eq(r.used, hl);
            cr_assert_eq(r.pi.local, local == 1);
        }
    }
}

/* Flipping any octet of a valid header never reads past it and never
   yields an OK header that claims more than what was given. */
Test(proxy, single_octet_mutations)
{
    static const uint8_t body[] = { 0xfe, 0x80, 0, 0, 0, 0, 0,    0,    0,    0, 0, 0, 0, 0, 0,
                                    1,    0,    0, 0, 0, 0, 0,    0,    0,    0, 0, 0, 0, 0, 0,
                                    0,    2,    0, 1, 0, 2, 0x20, 0x00, 0x05, 1, 0, 0, 0, 0 };
    static const char v1[] = "PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 65535 0\r\n";
    uint8_t in[2][128];
    size_t n[2];

    n[0] = v2_make(in[0], 0x21, 0x21, body, sizeof(body));
    n[1] = sizeof(v1) - 1;
    memcpy(in[1], v1, n[1]);
    for (int h = 0; h < 2; h++) {
        for (size_t at = 0; at < n[h]; at++) {
            for (unsigned v = 0; v < 256; v++) {
                uint8_t m[128];
                struct res r;

                const size_t ks[2] = { at + 1, n[h] };

                memcpy(m, in[h], n[h]);
                m[at] = (uint8_t)v;
                for (int j = 0; j < 2; j++) {
                    r = parse(m, ks[j]);
                    if (r.rc == PROXY_OK) {
                        cr_assert(r.used <= ks[j]);
                        cr_assert(memchr(r.pi.src_text, '\0', PROXY_ADDR_MAX) != NULL);
                    } else if (r.rc == PROXY_BAD) {
                        cr_assert(r.why != NULL && r.why[0] != '\0');
                    }
                }
            }
        }
    }
}
