/*
 * Tests for core/limits.c: the address parser (against glibc's inet_pton),
 * client keys (IPv4, IPv4-mapped, IPv6 prefixes, text that is no address),
 * the connection count, the token buckets and their refill, eviction within
 * bounded memory, expiry, fail open, and the caller-bug checks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/limits.h"

static struct limits_key
key_of(const char *text)
{
    struct limits_key k;

    limits_key(&k, text, LIMITS_V6_PREFIX_DEFAULT);
    return k;
}

static bool
key_eq(struct limits_key a, struct limits_key b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static uint64_t
used_of(const struct limits *t)
{
    uint64_t u;

    limits_stats(t, &u, NULL, NULL);
    return u;
}

/* limits_addr_parse() must agree with inet_pton(): true, and the same octets. */
static void
check_parse(const char *text)
{
    uint8_t ours[16], ref[16] = { 0 };
    bool v4 = false, ok = limits_addr_parse(text, ours, &v4), ref_v4 = false, ref_ok = false;

    if (inet_pton(AF_INET, text, ref + 12) == 1) {
        ref[10] = ref[11] = 0xff;
        ref_ok = ref_v4 = true;
    } else if (inet_pton(AF_INET6, text, ref) == 1) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        ref_ok = true;
        ref_v4 = memcmp(ref, mapped, sizeof(mapped)) == 0;
    }
    cr_assert_eq(ok, ref_ok, "\"%s\": ours %d, inet_pton %d", text, ok, ref_ok);
    if (ok) {
        cr_assert(memcmp(ours, ref, 16) == 0, "\"%s\": octets differ", text);
        cr_assert_eq(v4, ref_v4, "\"%s\": is_v4 differs", text);
    }
}

/* ---- addresses and keys ---- */

Test(limits, parse_agrees_with_inet_pton)
{
    static const char *const cases[] = {
        "0.0.0.0",
        "192.0.2.1",
        "255.255.255.255",
        "256.0.0.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3.0",
        "1..2.3",
        ".1.2.3",
        "1.2.3.",
        "1.2.3.4 ",
        " 1.2.3.4",
        "1.2.3.-4",
        "1234.1.1.1",
        "",
        "::",
        "::1",
        "1::",
        ":",
        ":::",
        "1:::2",
        ":1::",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        "1::2::3",
        "2001:db8::1",
        "2001:DB8::A",
        "2001:db8:0:1::1",
        "12345::",
        "fffff::",
        "g::",
        "1:",
        "1:2",
        "::ffff:1.2.3.4",
        "::ffff:102:304",
        "::1.2.3.4",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "1:2:3:4:5::1.2.3.4",
        "1:2:3:4:5:6::1.2.3.4",
        "::ffff:1.2.3",
        "::ffff:1.2.3.4.5",
        "::ffff:01.2.3.4",
        "::ffff:a.2.3.4",
        "::.1.2.3",
        "1:.2.3.4",
        "1.2.3.4::",
        "::1.2.3.4:5",
        "fe80::1%eth0",
        "[::1]",
        "::ffff:0:0",
        "0:0:0:0:0:ffff:0.0.0.0",
        "::fffe:1.2.3.4",
        "0::0",
        "00000::",
        "0000::",
        "::ffff:1.2.3.4%x",
        "1.2.3.4:25",
        "localhost",
        "unix:/run/x",
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_parse(cases[i]);
    cr_assert_not(limits_addr_parse(NULL, (uint8_t[16]){ 0 }, NULL));
}

Test(limits, parse_agrees_with_inet_pton_on_random_text)
{
    static const char alphabet[] = "0123456789abcdefABCDEF:.:.:0f1%g ";
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    char text[24];

    for (int i = 0; i < 300000; i++) {
        size_t n;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n = (size_t)(x % 20);
        for (size_t j = 0; j < n; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* mostly hex digits, ':' and '.', now and then anything else */
            text[j] = alphabet[(x >> 20) % (sizeof(alphabet) - 1)];
        }
        text[n] = '\0';
        check_parse(text);
    }
}

Test(limits, mapped_ipv4_is_ipv4)
{
    cr_assert(key_eq(key_of("1.2.3.4"), key_of("::ffff:1.2.3.4")));
    cr_assert(key_eq(key_of("1.2.3.4"), key_of("::FFFF:102:304")));
    cr_assert(key_eq(key_of("1.2.3.4"), key_of("0:0:0:0:0:ffff:1.2.3.4")));
    /* the full IPv4 address, whatever v6_prefix says */
    cr_assert_not(key_eq(key_of("1.2.3.4"), key_of("1.2.3.5")));
    /* IPv4-compatible (deprecated) and NAT64 addresses are IPv6 */
    cr_assert_not(key_eq(key_of("1.2.3.4"), key_of("::1.2.3.4")));
    cr_assert_not(key_eq(key_of("1.2.3.4"), key_of("64:ff9b::1.2.3.4")));
}

Test(limits, ipv6_keyed_by_prefix)
{
    struct limits_key a, b;

    cr_assert(key_eq(key_of("2001:db8::1"), key_of("2001:db8::2")));
    cr_assert(key_eq(key_of("2001:db8::1"), key_of("2001:db8:0:0:ffff:ffff:ffff:ffff")));
    cr_assert_not(key_eq(key_of("2001:db8::1"), key_of("2001:db8:0:1::1")));
    /* 0 is the default /64 */
    limits_key(&a, "2001:db8::1", 0);
    cr_assert(key_eq(a, key_of("2001:db8::2")));
    /* /48 */
    limits_key(&a, "2001:db8:0:1::1", 48);
    limits_key(&b, "2001:db8:0:2::1", 48);
    cr_assert(key_eq(a, b));
    limits_key(&b, "2001:db8:1::1", 48);
    cr_assert_not(key_eq(a, b));
    /* /60: a prefix inside an octet */
    limits_key(&a, "2001:db8:0:f::1", 60);
    limits_key(&b, "2001:db8:0:0::1", 60);
    cr_assert(key_eq(a, b));
    limits_key(&b, "2001:db8:0:10::1", 60);
    cr_assert_not(key_eq(a, b));
    /* /128 and above: the whole address */
    limits_key(&a, "2001:db8::1", 128);
    limits_key(&b, "2001:db8::2", 500);
    cr_assert_not(key_eq(a, b));
    limits_key(&b, "2001:db8::1", 500);
    cr_assert(key_eq(a, b));
    /* the key is the masked address: callers may print it */
    limits_key(&a, "2001:db8:aaaa:bbbb:cccc::1", 64);
    cr_assert(memcmp(a.b, "\x20\x01\x0d\xb8\xaa\xaa\xbb\xbb\0\0\0\0\0\0\0\0", 16) == 0);
}

Test(limits, text_that_is_no_address_is_hashed)
{
    struct limits_key k = key_of("unix:/run/ringmail.sock");

    cr_assert(key_eq(k, key_of("unix:/run/ringmail.sock")));
    cr_assert_not(key_eq(k, key_of("unix:/run/other.sock")));
    cr_assert(key_eq(key_of(NULL), key_of("")));
    cr_assert_not(key_eq(key_of(""), key_of("::")));
    cr_assert_not(key_eq(key_of("fe80::1%eth0"), key_of("fe80::1%eth1")));
    /* inside 100::/64, where no client connects from */
    cr_assert(memcmp(k.b, "\x01\0\0\0\0\0\0\0", 8) == 0);
}

/* ---- the table ---- */

Test(limits, new_rejects_bad_capacity)
{
    errno = 0;
    cr_assert_null(limits_new(0));
    cr_assert_eq(errno, EINVAL);
    errno = 0;
    cr_assert_null(limits_new(LIMITS_MAX_CAPACITY + 1));
    cr_assert_eq(errno, EINVAL);
}

Test(limits, count_limit_hit_at_n_plus_one_and_released_by_disconnect)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = { .conn_count = 3 };
    struct limits_key k = key_of("192.0.2.1"), other = key_of("192.0.2.2");
    bool tracked;

    cr_assert_not_null(t);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
        cr_assert(tracked);
    }
    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_CONN_COUNT);
    cr_assert_not(tracked);
    /* time does not release a count; another client is not affected */
    cr_assert_eq(limits_connect(t, &k, &c, 3600000, &tracked), LIMITS_CONN_COUNT);
    cr_assert_eq(limits_connect(t, &other, &c, 0, &tracked), LIMITS_OK);
    limits_disconnect(t, &other);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
    cr_assert(tracked);
    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_CONN_COUNT);
    for (int i = 0; i < 3; i++)
        limits_disconnect(t, &k);
    /* nothing owed (no rate limits): the entries are gone at once */
    cr_assert_eq(used_of(t), 0);
    limits_free(t);
}

Test(limits, conn_rate_bucket_refills_with_time)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = { .conn_rate = 2 }; /* 2 per minute: one per 30 s */
    struct limits_key k = key_of("198.51.100.7");
    bool tracked;

    cr_assert_eq(limits_connect(t, &k, &c, 1000, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 1000, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 1000, &tracked), LIMITS_CONN_RATE);
    cr_assert_not(tracked);
    cr_assert_eq(limits_connect(t, &k, &c, 1000 + 29999, &tracked), LIMITS_CONN_RATE);
    cr_assert_eq(limits_connect(t, &k, &c, 1000 + 30000, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 1000 + 30000, &tracked), LIMITS_CONN_RATE);
    /* an hour later: full again, but a bucket holds at most its rate */
    cr_assert_eq(limits_connect(t, &k, &c, 3600000, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 3600000, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 3600000, &tracked), LIMITS_CONN_RATE);
    limits_free(t);
}

Test(limits, refill_is_continuous_and_exact)
{
    struct limits *t = limits_new(64);
    const struct limits_conf c = { .msg_rate = 7 }; /* one token per 8571.43 ms */
    struct limits_key k = key_of("203.0.113.9");
    uint64_t now = 5000, ok = 0;

    /* demand every ms for a minute: the burst of 7, then what 59999 ms refill (6.9999) */
    for (uint64_t ms = 0; ms < 60000; ms++)
        ok += limits_event(t, &k, LIMITS_MESSAGE, &c, now + ms) == LIMITS_OK;
    cr_assert_eq(ok, 7 + 6, "got %lu", (unsigned long)ok);
    /* and the 7th at 60000 ms: no fraction of a token was lost on the way */
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, now + 60000), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, now + 60000), LIMITS_MSG_RATE);
    limits_free(t);
}

Test(limits, refused_connect_takes_nothing)
{
    struct limits *t = limits_new(64);
    const struct limits_conf c = { .conn_count = 1, .conn_rate = 2 };
    struct limits_key k = key_of("192.0.2.50");
    bool tracked;

    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_CONN_COUNT);
    limits_disconnect(t, &k);
    /* the refusals cost no token: the second of the burst is still there */
    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_CONN_RATE);
    limits_free(t);
}

Test(limits, event_buckets_are_independent)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = {
        .conn_rate = 1, .msg_rate = 1, .rcpt_rate = 2, .auth_fail_rate = 1
    };
    struct limits_key k = key_of("2001:db8::25");
    bool tracked;

    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, 0), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, 0), LIMITS_MSG_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 0), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 0), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 0), LIMITS_RCPT_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_AUTH_FAIL, &c, 0), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_AUTH_FAIL, &c, 0), LIMITS_AUTH_FAIL_RATE);
    /* none of that cost a connection token */
    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
    cr_assert(tracked);
    /* LIMITS_CONNECT as an event is the connection-rate bucket */
    cr_assert_eq(limits_event(t, &k, LIMITS_CONNECT, &c, 0), LIMITS_CONN_RATE);
    limits_disconnect(t, &k);
    /* a refused one takes nothing: the rcpt bucket refills one token in 30 s */
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 29999), LIMITS_RCPT_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 30000), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, 30000), LIMITS_MSG_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, 60000), LIMITS_OK);
    limits_free(t);
}

Test(limits, zero_is_unlimited_and_keeps_nothing)
{
    struct limits *t = limits_new(64);
    const struct limits_conf off = { 0 }, conn_only = { .conn_count = 5 };
    struct limits_key k = key_of("192.0.2.77");
    bool tracked = true;

    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(limits_connect(t, &k, &off, 0, &tracked), LIMITS_OK);
        cr_assert_not(tracked); /* so no limits_disconnect() */
        cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &conn_only, 0), LIMITS_OK);
        cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &off, 0), LIMITS_OK);
    }
    cr_assert_eq(used_of(t), 0);
    limits_free(t);
}

Test(limits, ipv6_prefix_aggregates_clients)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = { .conn_count = 1 };
    struct limits_key a = key_of("2001:db8::1"), b = key_of("2001:db8::2"),
                      other = key_of("2001:db8:0:1::1");
    bool tracked;

    cr_assert_eq(limits_connect(t, &a, &c, 0, &tracked), LIMITS_OK);
    cr_assert_eq(limits_connect(t, &b, &c, 0, &tracked), LIMITS_CONN_COUNT);
    cr_assert_eq(limits_connect(t, &other, &c, 0, &tracked), LIMITS_OK);
    /* the connection a opened is released under b's key: the same client */
    limits_disconnect(t, &b);
    cr_assert_eq(limits_connect(t, &b, &c, 0, &tracked), LIMITS_OK);
    limits_disconnect(t, &a);
    limits_disconnect(t, &other);
    limits_free(t);
}

Test(limits, mapped_ipv4_shares_the_ipv4_entry)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = { .msg_rate = 1 };
    struct limits_key v4 = key_of("192.0.2.1"), mapped = key_of("::ffff:192.0.2.1");

    cr_assert_eq(limits_event(t, &v4, LIMITS_MESSAGE, &c, 0), LIMITS_OK);
    cr_assert_eq(limits_event(t, &mapped, LIMITS_MESSAGE, &c, 0), LIMITS_MSG_RATE);
    limits_free(t);
}

Test(limits, eviction_keeps_memory_bounded)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = { .conn_count = 10, .conn_rate = 10, .msg_rate = 1 };
    struct limits_key k;
    uint64_t used, evicted, untracked;
    char addr[64];
    bool tracked;

    /* 100k clients, 1 ms apart: none expires before the table is full */
    for (unsigned i = 0; i < 100000; i++) {
        if (i % 2 == 0) /* half IPv4, half the /64s 2001:db8:X:Y::/64 */
            snprintf(addr, sizeof(addr), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
        else
            snprintf(addr, sizeof(addr), "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
        limits_key(&k, addr, 64);
        cr_assert_eq(limits_connect(t, &k, &c, i, &tracked), LIMITS_OK, "%s", addr);
        cr_assert(tracked);
        cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, i), LIMITS_OK, "%s", addr);
        cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, i), LIMITS_MSG_RATE, "%s", addr);
        limits_disconnect(t, &k);
        limits_stats(t, &used, NULL, NULL);
        cr_assert_leq(used, 1024);
    }
    limits_stats(t, &used, &evicted, &untracked);
    cr_assert_eq(untracked, 0);
    cr_assert_gt(evicted, 90000, "evicted %lu", (unsigned long)evicted);
    cr_assert_eq(used + evicted, 100000); /* nothing expired: 1 ms apart */
    /* the most recent client is still remembered */
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, 99999), LIMITS_MSG_RATE);
    limits_free(t);
}

Test(limits, expired_entries_are_reclaimed_not_evicted)
{
    struct limits *t = limits_new(16); /* one shard */
    const struct limits_conf c = { .conn_rate = 5, .rcpt_rate = 100 };
    struct limits_key k, x = key_of("192.0.2.200");
    uint64_t used, evicted;
    char addr[32];
    bool tracked;

    for (unsigned i = 0; i < 16; i++) {
        snprintf(addr, sizeof(addr), "192.0.2.%u", i);
        limits_key(&k, addr, 64);
        cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
        limits_disconnect(t, &k); /* a token owed: the entry stays */
    }
    cr_assert_eq(used_of(t), 16);
    /* 59999 ms later nothing has expired: x's entry takes the oldest's */
    cr_assert_eq(limits_event(t, &x, LIMITS_CONNECT, &c, 59999), LIMITS_OK);
    limits_stats(t, &used, &evicted, NULL);
    cr_assert_eq(used, 16);
    cr_assert_eq(evicted, 1);
    /* at 60000 ms all but x are full again: reclaimed two per call */
    for (int i = 0; i < 8; i++)
        cr_assert_eq(limits_event(t, &x, LIMITS_RCPT, &c, 60000), LIMITS_OK);
    limits_stats(t, &used, &evicted, NULL);
    cr_assert_eq(used, 1);
    cr_assert_eq(evicted, 1);
    limits_free(t);
}

Test(limits, fail_open_when_every_entry_has_connections)
{
    struct limits *t = limits_new(16); /* one shard of 16 */
    const struct limits_conf c = { .conn_count = 1, .msg_rate = 1 };
    struct limits_key k[16], late = key_of("203.0.113.1");
    uint64_t used, evicted, untracked;
    char addr[32];
    bool tracked;

    for (unsigned i = 0; i < 16; i++) {
        snprintf(addr, sizeof(addr), "192.0.2.%u", i);
        limits_key(&k[i], addr, 64);
        cr_assert_eq(limits_connect(t, &k[i], &c, 0, &tracked), LIMITS_OK);
        cr_assert(tracked);
    }
    /* a 17th client is let through, untracked, as often as it comes */
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(limits_connect(t, &late, &c, 0, &tracked), LIMITS_OK);
        cr_assert_not(tracked);
        cr_assert_eq(limits_event(t, &late, LIMITS_MESSAGE, &c, 0), LIMITS_OK);
    }
    limits_stats(t, &used, &evicted, &untracked);
    cr_assert_eq(used, 16);
    cr_assert_eq(evicted, 0);
    cr_assert_eq(untracked, 6);
    /* the tracked clients are still limited */
    for (unsigned i = 0; i < 16; i++)
        cr_assert_eq(limits_connect(t, &k[i], &c, 0, &tracked), LIMITS_CONN_COUNT);
    /* one leaves: its entry (idle, nothing owed) is free for the 17th */
    limits_disconnect(t, &k[3]);
    cr_assert_eq(limits_connect(t, &late, &c, 0, &tracked), LIMITS_OK);
    cr_assert(tracked);
    cr_assert_eq(limits_connect(t, &late, &c, 0, &tracked), LIMITS_CONN_COUNT);
    limits_stats(t, NULL, &evicted, NULL);
    cr_assert_eq(evicted, 0);
    limits_disconnect(t, &late);
    for (unsigned i = 0; i < 16; i++) {
        if (i != 3)
            limits_disconnect(t, &k[i]);
    }
    limits_free(t);
}

Test(limits, fail_open_in_a_sharded_table)
{
    struct limits *t = limits_new(1024);
    const struct limits_conf c = { .conn_count = 1 };
    struct limits_key k;
    uint64_t used, untracked;
    char addr[32];
    bool tracked;
    unsigned i;

    /* connections that stay open: some shard fills first, then all do */
    for (i = 0; i < 4096; i++) {
        snprintf(addr, sizeof(addr), "10.0.%u.%u", i >> 8, i & 255);
        limits_key(&k, addr, 64);
        cr_assert_eq(limits_connect(t, &k, &c, i, &tracked), LIMITS_OK);
    }
    limits_stats(t, &used, NULL, &untracked);
    cr_assert_eq(used, 1024);
    cr_assert_eq(untracked, 4096 - 1024);
    limits_free(t);
}

Test(limits, clock_going_back_refills_nothing)
{
    struct limits *t = limits_new(64);
    const struct limits_conf c = { .rcpt_rate = 1 };
    struct limits_key k = key_of("192.0.2.9");

    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 100000), LIMITS_OK);
    /* another reactor read its clock a moment earlier */
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 99000), LIMITS_RCPT_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 0), LIMITS_RCPT_RATE);
    /* the entry's time did not move back: full one minute after 100000 */
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 159999), LIMITS_RCPT_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_RCPT, &c, 160000), LIMITS_OK);
    limits_free(t);
}

Test(limits, lower_rate_caps_what_is_owed)
{
    struct limits *t = limits_new(64);
    const struct limits_conf hi = { .msg_rate = 100 }, lo = { .msg_rate = 1 };
    struct limits_key k = key_of("192.0.2.10");

    for (int i = 0; i < 100; i++)
        cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &hi, 0), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &hi, 0), LIMITS_MSG_RATE);
    /*
     * Reloaded at 1 per minute: 100 minutes owed become an empty bucket, so
     * the client gets a token one minute after the reload (10 ms), not 100.
     */
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &lo, 10), LIMITS_MSG_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &lo, 60009), LIMITS_MSG_RATE);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &lo, 60010), LIMITS_OK);
    /* raised again: what is owed stays (one token), the room is the new rate */
    for (int i = 0; i < 99; i++)
        cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &hi, 60010), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &hi, 60010), LIMITS_MSG_RATE);
    limits_free(t);
}

Test(limits, large_rates_do_not_overflow)
{
    struct limits *t = limits_new(64);
    const struct limits_conf c = { .conn_count = UINT32_MAX, .msg_rate = UINT32_MAX };
    struct limits_key k = key_of("192.0.2.11");
    bool tracked;

    for (int i = 0; i < 1000; i++)
        cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, UINT64_MAX - 1000 + (uint64_t)i),
                     LIMITS_OK);
    cr_assert_eq(limits_connect(t, &k, &c, UINT64_MAX, &tracked), LIMITS_OK);
    limits_disconnect(t, &k);
    limits_free(t);
}

Test(limits, disconnect_without_connect_is_a_bug, .signal = SIGABRT)
{
    struct limits *t = limits_new(64);
    struct limits_key k = key_of("192.0.2.12");

    limits_disconnect(t, &k);
}

Test(limits, disconnect_twice_is_a_bug, .signal = SIGABRT)
{
    struct limits *t = limits_new(64);
    const struct limits_conf c = { .conn_count = 2, .msg_rate = 1 };
    struct limits_key k = key_of("192.0.2.13");
    bool tracked;

    cr_assert_eq(limits_connect(t, &k, &c, 0, &tracked), LIMITS_OK);
    cr_assert_eq(limits_event(t, &k, LIMITS_MESSAGE, &c, 0), LIMITS_OK); /* keeps the entry */
    limits_disconnect(t, &k);
    limits_disconnect(t, &k);
}
