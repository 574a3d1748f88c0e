/*
 * Tests for core/envelope.c: the string store and queue id text.
 */
#include <stdio.h>

#include <criterion/criterion.h>

#include "core/envelope.h"

Test(envelope, put_and_get_survive_growth)
{
    struct envelope e;
    struct env_str s[100];
    char word[16];

    env_init(&e);
    for (int i = 0; i < 100; i++) {
        int n = snprintf(word, sizeof(word), "rcpt%d", i);
        cr_assert_eq(env_put(&e, &s[i], word, (size_t)n), 0);
    }
    for (int i = 0; i < 100; i++) {
        struct slice v = env_get(&e, s[i]);
        int n = snprintf(word, sizeof(word), "rcpt%d", i);
        cr_assert_eq(v.len, (size_t)n);
        cr_assert(memcmp(v.p, word, v.len) == 0);
    }
    env_free(&e);
}

Test(envelope, copy_is_deep)
{
    struct envelope a, b;

    env_init(&a);
    cr_assert_eq(env_put(&a, &a.sender, "s@example.org", 13), 0);
    cr_assert_eq(env_add_rcpt(&a, SLICE_LIT("r@example.net"), SLICE_LIT("NOTIFY=NEVER")), 0);
    cr_assert_eq(env_copy(&b, &a), 0);
    env_free(&a);
    cr_assert_eq(b.nrcpt, 1);
    cr_assert(memcmp(env_get(&b, b.rcpt[0].addr).p, "r@example.net", 13) == 0);
    cr_assert(memcmp(env_get(&b, b.rcpt[0].params).p, "NOTIFY=NEVER", 12) == 0);
    cr_assert(memcmp(env_get(&b, b.sender).p, "s@example.org", 13) == 0);
    env_free(&b);
}

Test(envelope, qid_round_trip)
{
    char q[QID_LEN + 1];
    uint64_t id;

    qid_format(0x0123456789abcdefULL, q);
    cr_assert_str_eq(q, "0123456789ABCDEF");
    cr_assert(qid_parse(q, &id));
    cr_assert_eq(id, 0x0123456789abcdefULL);
    cr_assert_not(qid_parse("0123456789ABCDEG", &id));
    cr_assert_not(qid_parse("0123", &id));
}
