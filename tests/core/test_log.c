/*
 * Tests for core/log.c: the JSON form of a key=value line.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "core/log.h"

static const char *
json(const char *kv, size_t cap)
{
    static char out[4096];

    log_kv_to_json(out, cap, kv, strlen(kv));
    return out;
}

Test(log, kv_to_json_fields_and_quotes)
{
    cr_assert_str_eq(json("ts=2026-11-27T17:21:07.123Z level=info event=received qid=ABC "
                          "client=192.0.2.1 note=\"two words\"\n",
                          4096),
                     "{\"ts\":\"2026-11-27T17:21:07.123Z\",\"level\":\"info\",\"event\":"
                     "\"received\",\"qid\":\"ABC\",\"client\":\"192.0.2.1\",\"note\":"
                     "\"two words\"}");
}

Test(log, kv_to_json_escapes)
{
    /* log_escape()'s \xHH becomes \u00HH; a stray backslash or quote is escaped */
    cr_assert_str_eq(json("event=x helo=\"a\\x22b\\x0d\" path=C:\\dir", 4096),
                     "{\"event\":\"x\",\"helo\":\"a\\u0022b\\u000d\",\"path\":\"C:\\\\dir\"}");
    cr_assert_str_eq(json("event=x free text here", 4096),
                     "{\"event\":\"x\",\"msg\":\"free text here\"}");
    cr_assert_str_eq(json("", 4096), "{}");
}

Test(log, kv_to_json_cut_stays_valid)
{
    const char *line = "event=received qid=0123456789ABCDEF client=192.0.2.1 from=<a@b.example>";

    for (size_t cap = 3; cap < 100; cap++) {
        const char *j = json(line, cap);
        size_t n = strlen(j);

        cr_assert_lt(n, cap, "cap %zu: %s", cap, j);
        cr_assert_eq(j[0], '{', "cap %zu: %s", cap, j);
        cr_assert_eq(j[n - 1], '}', "cap %zu: %s", cap, j);
        /* whole fields only: an even number of quotes */
        size_t q = 0;
        for (size_t i = 0; i < n; i++)
            q += j[i] == '"';
        cr_assert_eq(q % 4, 0, "cap %zu: %s", cap, j);
    }
}
