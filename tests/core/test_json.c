/*
 * Tests for core/json.c, the reader `ringmail queue` prints the admin
 * endpoint's answers with: tokens of nested values, lookups, unescaping,
 * numbers, and malformed text refused.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "core/json.h"

static long
parse(const char *s, struct json_tok *t, size_t n)
{
    return json_parse(s, strlen(s), t, n);
}

Test(json, nested_lookup)
{
    const char *s = " {\"messages\":[{\"qid\":\"00AB\",\"size\":123,\"held\":true,"
                    "\"recipients\":[{\"address\":\"a@b\",\"last_reply\":null}]},"
                    "{\"qid\":\"00AC\",\"size\":0,\"held\":false,\"recipients\":[]}],"
                    "\"count\":2,\"truncated\":false} ";
    struct json_tok t[64];
    long n = parse(s, t, 64), msgs, m, v, r;
    char buf[64];
    uint64_t u;

    cr_assert_gt(n, 0);
    cr_assert_eq(t[0].type, JSON_OBJECT);
    cr_assert_eq(t[0].size, 3);
    msgs = json_get(s, t, 0, "messages");
    cr_assert_geq(msgs, 0);
    cr_assert_eq(t[msgs].type, JSON_ARRAY);
    cr_assert_eq(t[msgs].size, 2);
    m = msgs + 1;
    v = json_get(s, t, (size_t)m, "qid");
    json_str(s, &t[v], buf, sizeof(buf));
    cr_assert_str_eq(buf, "00AB");
    v = json_get(s, t, (size_t)m, "size");
    cr_assert(json_u64(s, &t[v], &u));
    cr_assert_eq(u, 123);
    cr_assert_eq(t[json_get(s, t, (size_t)m, "held")].type, JSON_TRUE);
    r = json_get(s, t, (size_t)m, "recipients");
    cr_assert_eq(t[r].size, 1);
    cr_assert_eq(t[json_get(s, t, (size_t)r + 1, "last_reply")].type, JSON_NULL);
    m = (long)json_skip(t, (size_t)m);
    v = json_get(s, t, (size_t)m, "qid");
    json_str(s, &t[v], buf, sizeof(buf));
    cr_assert_str_eq(buf, "00AC");
    cr_assert_eq(json_skip(t, 0), (size_t)n);
    cr_assert_eq(json_get(s, t, 0, "nope"), -1);
    v = json_get(s, t, 0, "count");
    cr_assert(json_u64(s, &t[v], &u));
    cr_assert_eq(u, 2);
}

Test(json, unescape)
{
    const char *s = "[\"a\\\"b\\\\c\\/\\n\\u00e9\\u20ac\\ud83d\\ude00\\udc00x\"]";
    struct json_tok t[4];
    char buf[64];

    cr_assert_eq(parse(s, t, 4), 2);
    json_str(s, &t[1], buf, sizeof(buf));
    cr_assert_str_eq(buf, "a\"b\\c/\n\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbdx");
    json_str(s, &t[1], buf, 4); /* cut, terminated */
    cr_assert_str_eq(buf, "a\"b");
}

Test(json, numbers_and_literals)
{
    struct json_tok t[8];
    uint64_t u;

    cr_assert_eq(parse("[0,-1,1.5,2e3,true,false,null]", t, 8), 8);
    cr_assert(json_u64("[0", &t[1], &u));
    cr_assert_eq(t[2].type, JSON_NUMBER);
    cr_assert_not(json_u64("[0,-1", &t[2], &u));
    cr_assert_eq(t[5].type, JSON_TRUE);
    cr_assert_eq(t[7].type, JSON_NULL);
}

Test(json, malformed)
{
    static const char *const bad[] = {
        "",          "{",           "[1,]", "{\"a\"}", "{\"a\":1,}", "[01]",       "[1.]", "[\"a]",
        "[\"\\x\"]", "[\"\\u12\"]", "tru",  "[1] 2",   "{a:1}",      "[\"\x01\"]", "[-]",  "[1e]",
    };
    struct json_tok t[16];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(parse(bad[i], t, 16), -1, "%s", bad[i]);
    cr_assert_eq(parse("[1,2,3]", t, 3), -1); /* too few tokens */
    {
        char deep[80];

        memset(deep, '[', 40);
        memset(deep + 40, ']', 40);
        cr_assert_eq(json_parse(deep, 80, t, 16), -1);
    }
}
