/*
 * Tests for core/smtp_parse.c: command lines (whole, at every split, byte by
 * byte, each piece ending at a PROT_NONE page), paths and ESMTP parameters.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "core/compiler.h"
#include "core/smtp_parse.h"
#include "support/guard.h"

static const struct smtp_limits lim512 = { .max_line = 512, .max_path = 256, .max_params = 16 };

/* ---- command lines ---- */

Test(smtp_parse, need_more_at_every_split)
{
    static const char in[] = "EHLO mx.example\r\n";

    for (size_t k = 0; k < sizeof(in) - 1; k++) {
        size_t scanned = 0, used = 0;
        struct smtp_cmd cmd;
        const char *p = guard_copy(in, k);

        cr_assert_eq(smtp_parse_cmd(p, k, &lim512, &scanned, &cmd, &used), SMTP_PARSE_NEED_MORE);
        cr_assert_eq(scanned, k);
    }
}

Test(smtp_parse, trickled_input_scans_once)
{
    static const char in[] = "MAIL FROM:<a@b.c> SIZE=10\r\nRCPT";
    size_t scanned = 0, used = 0, k;
    struct smtp_cmd cmd;
    enum smtp_parse_rc rc = SMTP_PARSE_NEED_MORE;

    for (k = 1; k <= sizeof(in) - 1 && rc == SMTP_PARSE_NEED_MORE; k++) {
        const char *p = guard_copy(in, k);

        rc = smtp_parse_cmd(p, k, &lim512, &scanned, &cmd, &used);
        if (rc == SMTP_PARSE_NEED_MORE)
            cr_assert_eq(scanned, k, "the cursor remembers what was scanned");
    }
    cr_assert_eq(rc, SMTP_PARSE_OK);
    cr_assert_eq(used, 27);
    cr_assert_eq(scanned, 0);
    cr_assert_eq(cmd.verb, SMTP_V_MAIL);
    cr_assert(cmd.arg.len == 20 && memcmp(cmd.arg.p, "FROM:<a@b.c> SIZE=10", 20) == 0);
}

Test(smtp_parse, verbs_case_insensitive)
{
    static const struct {
        const char *line;
        enum smtp_verb verb;
    } t[] = {
        { "helo x\r\n", SMTP_V_HELO },        { "EhLo x\r\n", SMTP_V_EHLO },
        { "mail FROM:<>\r\n", SMTP_V_MAIL },  { "RCPT TO:<a@b>\r\n", SMTP_V_RCPT },
        { "data\r\n", SMTP_V_DATA },          { "bdat 0 last\r\n", SMTP_V_BDAT },
        { "RSET\r\n", SMTP_V_RSET },          { "noop\r\n", SMTP_V_NOOP },
        { "QuIt\r\n", SMTP_V_QUIT },          { "VRFY a\r\n", SMTP_V_VRFY },
        { "help\r\n", SMTP_V_HELP },          { "EXPN a\r\n", SMTP_V_EXPN },
        { "auth plain\r\n", SMTP_V_AUTH },    { "ETRN x\r\n", SMTP_V_ETRN },
        { "TURN\r\n", SMTP_V_TURN },          { "starttls\r\n", SMTP_V_STARTTLS },
        { "MAILX\r\n", SMTP_V_UNKNOWN },      { "MAI\r\n", SMTP_V_UNKNOWN },
        { "M@IL x\r\n", SMTP_V_UNKNOWN },     { "\r\n", SMTP_V_UNKNOWN },
        { "mail\x01 x\r\n", SMTP_V_UNKNOWN }, { "STARTTLSX\r\n", SMTP_V_UNKNOWN },
        { "DATA \r\n", SMTP_V_DATA },
    };

    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        size_t n = strlen(t[i].line), scanned = 0, used = 0;
        struct smtp_cmd cmd;
        const char *p = guard_copy(t[i].line, n);

        cr_assert_eq(smtp_parse_cmd(p, n, &lim512, &scanned, &cmd, &used), SMTP_PARSE_OK, "%s",
                     t[i].line);
        cr_assert_eq(cmd.verb, t[i].verb, "%s", t[i].line);
        cr_assert_eq(used, n);
    }
}

Test(smtp_parse, arg_trimmed)
{
    static const char in[] = "MAIL   FROM:<a@b>  \t \r\n";
    size_t scanned = 0, used;
    struct smtp_cmd cmd;

    cr_assert_eq(smtp_parse_cmd(guard_copy(in, sizeof(in) - 1), sizeof(in) - 1, &lim512, &scanned,
                                &cmd, &used),
                 SMTP_PARSE_OK);
    cr_assert_eq(cmd.arg.len, 10);
    cr_assert(memcmp(cmd.arg.p, "FROM:<a@b>", 10) == 0);
    cr_assert(cmd.crlf);
}

static void
line_of(char *buf, size_t total, const char *end)
{
    size_t e = strlen(end);

    memcpy(buf, "NOOP ", 5);
    memset(buf + 5, 'x', total - 5 - e);
    memcpy(buf + total - e, end, e);
}

Test(smtp_parse, line_limit_exact_and_one_over)
{
    static char buf[600];
    size_t scanned = 0, used = 0;
    struct smtp_cmd cmd;

    line_of(buf, 512, "\r\n");
    cr_assert_eq(smtp_parse_cmd(guard_copy(buf, 512), 512, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_OK);
    cr_assert_eq(used, 512);
    line_of(buf, 513, "\r\n");
    /* 512 octets without LF: too long already */
    cr_assert_eq(smtp_parse_cmd(guard_copy(buf, 512), 512, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_TOO_LONG);
    cr_assert_eq(used, 512);
    cr_assert_eq(smtp_parse_cmd(guard_copy(buf, 511), 511, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_NEED_MORE);
    cr_assert_eq(smtp_parse_cmd(guard_copy(buf, 513), 513, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_TOO_LONG);
    cr_assert_eq(used, 512);
    /* a bare LF line of exactly the limit */
    line_of(buf, 512, "\n");
    scanned = 0;
    cr_assert_eq(smtp_parse_cmd(guard_copy(buf, 512), 512, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_BARE_LF);
}

Test(smtp_parse, bare_lf_and_nul)
{
    size_t scanned = 0, used = 0;
    struct smtp_cmd cmd;

    cr_assert_eq(smtp_parse_cmd(guard_copy("QUIT\n", 5), 5, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_BARE_LF);
    cr_assert_eq(cmd.verb, SMTP_V_QUIT);
    cr_assert_not(cmd.crlf);
    cr_assert_eq(used, 5);
    cr_assert_eq(smtp_parse_cmd(guard_copy("\n", 1), 1, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_BARE_LF);
    cr_assert_eq(smtp_parse_cmd(guard_copy("NO\0OP\r\nX", 8), 8, &lim512, &scanned, &cmd, &used),
                 SMTP_PARSE_NUL);
    cr_assert_eq(used, 7);
}

Test(smtp_parse, u64)
{
    uint64_t v;

    cr_assert(smtp_parse_u64(SLICE_LIT("0"), &v) && v == 0);
    cr_assert(smtp_parse_u64(SLICE_LIT("18446744073709551615"), &v) && v == UINT64_MAX);
    cr_assert_not(smtp_parse_u64(SLICE_LIT("18446744073709551616"), &v));
    cr_assert_not(smtp_parse_u64(SLICE_LIT("000000000000000000001"), &v));
    cr_assert_not(smtp_parse_u64(SLICE_LIT(""), &v));
    cr_assert_not(smtp_parse_u64(SLICE_LIT("-1"), &v));
    cr_assert_not(smtp_parse_u64(SLICE_LIT("1x"), &v));
}

/* ---- paths ---- */

struct path_case {
    char arg[320];
    char keyword[8];
    unsigned flags;
    int rc;
    char mailbox[300];
    bool utf8;
};

#define F_MAIL SMTP_PATH_F_NULL_OK
#define F_RCPT SMTP_PATH_F_POSTMASTER_OK

ParameterizedTestParameters(smtp_parse, paths)
{
    static struct path_case cases[] = {
        { "FROM:<alice@example.org>", "FROM:", F_MAIL, SMTP_PATH_OK, "alice@example.org", false },
        { "from:<alice@example.org>", "FROM:", F_MAIL, SMTP_PATH_OK, "alice@example.org", false },
        { "FROM: <a@b>", "FROM:", F_MAIL, SMTP_PATH_OK, "a@b", false },
        { "FROM:   <a@b>", "FROM:", F_MAIL, SMTP_PATH_OK, "a@b", false },
        { "FROM:<>", "FROM:", F_MAIL, SMTP_PATH_OK, "", false },
        { "TO:<>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<postmaster>", "TO:", F_RCPT, SMTP_PATH_OK, "postmaster", false },
        { "TO:<PostMaster>", "TO:", F_RCPT, SMTP_PATH_OK, "PostMaster", false },
        { "FROM:<postmaster>", "FROM:", F_MAIL, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<user>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a.b-c+d_e!#$%&'*/=?^`{|}~@x.example>", "TO:", F_RCPT, SMTP_PATH_OK,
          "a.b-c+d_e!#$%&'*/=?^`{|}~@x.example", false },
        { "TO:<\"a b>c\\\"d\"@example.org>", "TO:", F_RCPT, SMTP_PATH_OK,
          "\"a b>c\\\"d\"@example.org", false },
        { "TO:<\"\"@example.org>", "TO:", F_RCPT, SMTP_PATH_OK, "\"\"@example.org", false },
        { "TO:<a@[192.0.2.1]>", "TO:", F_RCPT, SMTP_PATH_OK, "a@[192.0.2.1]", false },
        { "TO:<a@[IPv6:2001:db8::1]>", "TO:", F_RCPT, SMTP_PATH_OK, "a@[IPv6:2001:db8::1]", false },
        { "TO:<a@[ipv6:1:2:3:4:5:6:7:8]>", "TO:", F_RCPT, SMTP_PATH_OK, "a@[ipv6:1:2:3:4:5:6:7:8]",
          false },
        { "TO:<a@[IPv6:::ffff:192.0.2.1]>", "TO:", F_RCPT, SMTP_PATH_OK,
          "a@[IPv6:::ffff:192.0.2.1]", false },
        { "TO:<a@[IPv6:1:2:3:4:5:6:192.0.2.1]>", "TO:", F_RCPT, SMTP_PATH_OK,
          "a@[IPv6:1:2:3:4:5:6:192.0.2.1]", false },
        { "TO:<a@[IPv6:::]>", "TO:", F_RCPT, SMTP_PATH_OK, "a@[IPv6:::]", false },
        { "TO:<a@[x-tag:content]>", "TO:", F_RCPT, SMTP_PATH_OK, "a@[x-tag:content]", false },
        { "TO:<@a.example,@b.example:u@d.example>", "TO:", F_RCPT, SMTP_PATH_OK, "u@d.example",
          false },
        { "TO:<@a.example:u@d.example>", "TO:", F_RCPT, SMTP_PATH_OK, "u@d.example", false },
        { "TO:<\xc3\xbc@example.org>", "TO:", F_RCPT, SMTP_PATH_OK, "\xc3\xbc@example.org", true },
        { "TO:<u@b\xc3\xbc"
          "cher.example>",
          "TO:", F_RCPT, SMTP_PATH_OK,
          "u@b\xc3\xbc"
          "cher.example",
          true },
        { "TO:<\"\xe2\x82\xac\"@x>", "TO:", F_RCPT, SMTP_PATH_OK, "\"\xe2\x82\xac\"@x", true },
        /* syntax: not KEYWORD<...> */
        { "FROM:a@b", "FROM:", F_MAIL, SMTP_PATH_SYNTAX, "", false },
        { "TO:<a@b>", "FROM:", F_MAIL, SMTP_PATH_SYNTAX, "", false },
        { "FROM <a@b>", "FROM:", F_MAIL, SMTP_PATH_SYNTAX, "", false },
        { "", "FROM:", F_MAIL, SMTP_PATH_SYNTAX, "", false },
        /* bad addresses */
        { "TO:<a@b", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<.a@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a.@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a..b@c>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a b@c>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@-b.c>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@b-.c>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@b..c>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@b.>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@b_c>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[256.0.0.1]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[1.2.3]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[IPv6:1::2::3]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[IPv6:1:2:3:4:5:6:7]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[IPv6:1:2:3:4:5:6:7::8]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[IPv6:12345::1]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[IPv6:1:]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[1.2.3.4>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@[]>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<\"a@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<\"a\x01\"@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a\x7f@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<\xc0\x80@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<\xff@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<\xed\xa0\x80@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<\xe2\x82@b>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@b>junk", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<@a:>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<@a,b:u@d>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
        { "TO:<a@b\r>", "TO:", F_RCPT, SMTP_PATH_BAD_ADDR, "", false },
    };

    return cr_make_param_array(struct path_case, cases, ARRAY_SIZE(cases));
}

ParameterizedTest(struct path_case *c, smtp_parse, paths)
{
    struct smtp_path path;
    size_t n = strlen(c->arg);
    struct slice arg = slice_make(guard_copy(c->arg, n), n);
    enum smtp_path_rc rc = smtp_parse_path(arg, c->keyword, c->flags, &lim512, &path);

    cr_assert_eq(rc, c->rc, "%s: rc %d, want %d", c->arg, rc, c->rc);
    if (rc != SMTP_PATH_OK)
        return;
    cr_assert_eq(path.mailbox.len, strlen(c->mailbox), "%s", c->arg);
    cr_assert(memcmp(path.mailbox.p, c->mailbox, path.mailbox.len) == 0, "%s", c->arg);
    cr_assert_eq(path.utf8, c->utf8, "%s", c->arg);
    cr_assert_eq(path.nparam, 0);
}

static size_t
make_path(char *buf, const char *kw, size_t path_len)
{
    /* "<" + local + "@" + domain labels + ">" of exactly path_len octets */
    size_t n = (size_t)snprintf(buf, 16, "%s<u@", kw), need = path_len - 4; /* "<u@" ">" */
    size_t label = 0;

    for (size_t i = 0; i < need; i++) {
        bool dot = label == 60 && i + 1 < need;

        buf[n++] = dot ? '.' : 'd';
        label = dot ? 0 : label + 1;
    }
    buf[n++] = '>';
    buf[n] = '\0';
    return n;
}

Test(smtp_parse, path_256_octets)
{
    static char buf[400];
    struct smtp_path path;
    size_t n;

    n = make_path(buf, "TO:", 256);
    cr_assert_eq(smtp_parse_path(slice_make(guard_copy(buf, n), n), "TO:", 0, &lim512, &path),
                 SMTP_PATH_OK);
    cr_assert_eq(path.mailbox.len, 254);
    n = make_path(buf, "TO:", 257);
    cr_assert_eq(smtp_parse_path(slice_make(guard_copy(buf, n), n), "TO:", 0, &lim512, &path),
                 SMTP_PATH_TOO_LONG);
}

Test(smtp_parse, params)
{
    static const char in[] = "FROM:<a@b>  SIZE=100 BODY=8BITMIME  SMTPUTF8 X-Y=z";
    struct smtp_path path;

    cr_assert_eq(smtp_parse_path(slice_make(guard_copy(in, sizeof(in) - 1), sizeof(in) - 1),
                                 "FROM:", F_MAIL, &lim512, &path),
                 SMTP_PATH_OK);
    cr_assert_eq(path.nparam, 4);
    cr_assert(slice_eq_nocase(path.param[0].key, "SIZE"));
    cr_assert(slice_eq_nocase(path.param[0].value, "100"));
    cr_assert(slice_eq_nocase(path.param[1].value, "8BITMIME"));
    cr_assert(slice_eq_nocase(path.param[2].key, "SMTPUTF8"));
    cr_assert_null(path.param[2].value.p);
    cr_assert(slice_eq_nocase(path.param[3].key, "X-Y"));
    cr_assert(slice_eq_nocase(path.params, "SIZE=100 BODY=8BITMIME  SMTPUTF8 X-Y=z"));
}

Test(smtp_parse, bad_params)
{
    static const char *const bad[] = {
        "FROM:<a@b> SIZE=", "FROM:<a@b> =1",     "FROM:<a@b> -X",
        "FROM:<a@b> A=b=c", "FROM:<a@b> A=\x01", "FROM:<a@b> A_B",
    };
    struct smtp_path path;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        size_t n = strlen(bad[i]);

        cr_assert_eq(
            smtp_parse_path(slice_make(guard_copy(bad[i], n), n), "FROM:", F_MAIL, &lim512, &path),
            SMTP_PATH_BAD_PARAM, "%s", bad[i]);
    }
}

Test(smtp_parse, sixteen_params_and_one_more)
{
    static char buf[512];
    struct smtp_path path;
    size_t n = (size_t)snprintf(buf, sizeof(buf), "FROM:<a@b>");

    for (int i = 0; i < 16; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, " P%d=v", i);
    cr_assert_eq(
        smtp_parse_path(slice_make(guard_copy(buf, n), n), "FROM:", F_MAIL, &lim512, &path),
        SMTP_PATH_OK);
    cr_assert_eq(path.nparam, 16);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, " P16");
    cr_assert_eq(
        smtp_parse_path(slice_make(guard_copy(buf, n), n), "FROM:", F_MAIL, &lim512, &path),
        SMTP_PATH_TOO_MANY_PARAMS);
}
