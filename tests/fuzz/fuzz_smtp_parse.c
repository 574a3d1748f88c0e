/*
 * fuzz_smtp_parse: every function of core/smtp_parse.h on arbitrary octets.
 *
 * Input: 5 header octets (command line limit, path limit, parameter limit,
 * split seed), then a stream of command lines. The stream is cut into lines
 * with smtp_parse_cmd() the way the session does, and every line is parsed
 * again incrementally (growing prefixes, each in a buffer of its own exact
 * size, the cursor kept between calls) and must give the same verdict. Every
 * argument goes through smtp_parse_path() (FROM: and TO:, every flag) and
 * smtp_parse_u64() (against a reference).
 *
 * Invariants: slices stay inside the input; a verdict agrees with the octets
 * (an LF where one was found, none where NEED_MORE or TOO_LONG was said, a
 * NUL where NUL was said); verbs match their text; a parsed path's mailbox
 * and parameters are well formed, and the mailbox written back as "<mailbox>"
 * (what the client sends the next hop) parses to the same mailbox.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/compiler.h"
#include "core/smtp_parse.h"
#include "fuzz.h"

static const char *const verb_names[] = {
    [SMTP_V_UNKNOWN] = NULL, [SMTP_V_HELO] = "HELO",         [SMTP_V_EHLO] = "EHLO",
    [SMTP_V_MAIL] = "MAIL",  [SMTP_V_RCPT] = "RCPT",         [SMTP_V_DATA] = "DATA",
    [SMTP_V_BDAT] = "BDAT",  [SMTP_V_RSET] = "RSET",         [SMTP_V_NOOP] = "NOOP",
    [SMTP_V_QUIT] = "QUIT",  [SMTP_V_VRFY] = "VRFY",         [SMTP_V_HELP] = "HELP",
    [SMTP_V_EXPN] = "EXPN",  [SMTP_V_AUTH] = "AUTH",         [SMTP_V_ETRN] = "ETRN",
    [SMTP_V_TURN] = "TURN",  [SMTP_V_STARTTLS] = "STARTTLS",
};

static bool
inside(struct slice s, const char *base, size_t len)
{
    return s.p >= base && s.p <= base + len && s.len <= (size_t)(base + len - s.p);
}

static bool
is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

static bool
has_8bit(struct slice s)
{
    for (size_t i = 0; i < s.len; i++) {
        if ((unsigned char)s.p[i] >= 0x80)
            return true;
    }
    return false;
}

/* smtp_parse_u64() against the obvious reference. */
static void
check_u64(struct slice s)
{
    uint64_t got = 0, want = 0;
    bool ok = s.len >= 1 && s.len <= 20, r;

    for (size_t i = 0; ok && i < s.len; i++) {
        unsigned d = (unsigned char)s.p[i] - (unsigned)'0';

        if (d > 9 || want > (UINT64_MAX - d) / 10)
            ok = false;
        else
            want = want * 10 + d;
    }
    r = smtp_parse_u64(s, &got);
    FUZZ_CHECK(r == ok, "smtp_parse_u64(\"%.*s\") = %d", (int)s.len, s.p, r);
    FUZZ_CHECK(!ok || got == want, "smtp_parse_u64(\"%.*s\") = %llu", (int)s.len, s.p,
               (unsigned long long)got);
}

static void check_path(struct slice arg, const char *kw, unsigned flags,
                       const struct smtp_limits *lim, bool again);

/* The mailbox written back the way the client sends it must parse to itself. */
static void
check_round_trip(const struct smtp_path *p, const char *kw, unsigned flags,
                 const struct smtp_limits *lim)
{
    size_t kl = strlen(kw), n = kl + p->mailbox.len + 2;
    char *line = malloc(n);
    struct smtp_path q;
    enum smtp_path_rc rc;

    FUZZ_CHECK(line != NULL, "out of memory");
    memcpy(line, kw, kl);
    line[kl] = '<';
    memcpy(line + kl + 1, p->mailbox.p, p->mailbox.len);
    line[n - 1] = '>';
    rc = smtp_parse_path(slice_make(line, n), kw, flags, lim, &q);
    FUZZ_CHECK(rc == SMTP_PATH_OK, "<%.*s> parsed once, not again (%d)", (int)p->mailbox.len,
               p->mailbox.p, rc);
    FUZZ_CHECK(q.mailbox.len == p->mailbox.len &&
                   memcmp(q.mailbox.p, p->mailbox.p, p->mailbox.len) == 0,
               "<%.*s> parsed again as <%.*s>", (int)p->mailbox.len, p->mailbox.p,
               (int)q.mailbox.len, q.mailbox.p);
    FUZZ_CHECK(q.null == p->null && q.postmaster == p->postmaster && q.nparam == 0,
               "round trip flags");
    FUZZ_CHECK(q.utf8 == has_8bit(q.mailbox), "utf8 flag of a plain mailbox");
    free(line);
}

static void
check_path(struct slice arg, const char *kw, unsigned flags, const struct smtp_limits *lim,
           bool again)
{
    unsigned max_params = lim->max_params;
    struct smtp_path p;
    enum smtp_path_rc rc;

    if (max_params == 0 || max_params > SMTP_PARAM_MAX)
        max_params = SMTP_PARAM_MAX;
    memset(&p, 0xa5, sizeof(p));
    rc = smtp_parse_path(arg, kw, flags, lim, &p);
    FUZZ_CHECK(rc <= SMTP_PATH_OK && rc >= SMTP_PATH_TOO_MANY_PARAMS, "rc %d", rc);
    FUZZ_CHECK(p.nparam <= max_params, "%u parameters, limit %u", p.nparam, max_params);
    if (rc != SMTP_PATH_OK)
        return;
    FUZZ_CHECK(inside(p.mailbox, arg.p, arg.len), "mailbox outside the argument");
    FUZZ_CHECK(inside(p.params, arg.p, arg.len), "params outside the argument");
    FUZZ_CHECK(p.params.p + p.params.len == arg.p + arg.len, "params do not end the argument");
    FUZZ_CHECK(p.mailbox.len + 2 <= (lim->max_path ? lim->max_path : SMTP_PATH_MAX),
               "mailbox of %zu octets past the path limit", p.mailbox.len);
    FUZZ_CHECK(p.null == (p.mailbox.len == 0), "null path and empty mailbox disagree");
    FUZZ_CHECK(!p.null || (flags & SMTP_PATH_F_NULL_OK), "<> without NULL_OK");
    FUZZ_CHECK(!p.postmaster || ((flags & SMTP_PATH_F_POSTMASTER_OK) &&
                                 slice_eq_nocase(p.mailbox, "postmaster")),
               "postmaster flag");
    FUZZ_CHECK(!has_8bit(p.mailbox) || p.utf8, "non-ASCII mailbox without the utf8 flag");
    for (size_t i = 0; i < p.mailbox.len; i++) {
        unsigned char c = (unsigned char)p.mailbox.p[i];

        FUZZ_CHECK(c >= 0x20 && c != 0x7f, "control octet %#x in mailbox <%.*s>", c,
                   (int)p.mailbox.len, p.mailbox.p);
    }
    for (unsigned i = 0; i < p.nparam; i++) {
        const struct smtp_param *m = &p.param[i];

        FUZZ_CHECK(inside(m->key, p.params.p, p.params.len), "key outside the params");
        FUZZ_CHECK(m->key.len >= 1 && is_alnum((unsigned char)m->key.p[0]), "bad key start");
        for (size_t k = 0; k < m->key.len; k++)
            FUZZ_CHECK(is_alnum((unsigned char)m->key.p[k]) || m->key.p[k] == '-', "bad key");
        if (m->value.p == NULL) {
            FUZZ_CHECK(m->value.len == 0, "NULL value with a length");
            continue;
        }
        FUZZ_CHECK(inside(m->value, p.params.p, p.params.len), "value outside the params");
        FUZZ_CHECK(m->value.len >= 1, "empty value");
        for (size_t k = 0; k < m->value.len; k++) {
            unsigned char c = (unsigned char)m->value.p[k];

            FUZZ_CHECK(c > ' ' && c != '=' && c != 0x7f, "octet %#x in a value", c);
        }
    }
    if (again)
        check_round_trip(&p, kw, flags, lim);
}

/* Every field of two results equal, slices compared by offset from their bases. */
static void
same_cmd(enum smtp_parse_rc a_rc, const struct smtp_cmd *a, size_t a_used, const char *a_base,
         enum smtp_parse_rc b_rc, const struct smtp_cmd *b, size_t b_used, const char *b_base)
{
    FUZZ_CHECK(a_rc == b_rc, "incremental parse says %d, one call %d", b_rc, a_rc);
    if (a_rc == SMTP_PARSE_NEED_MORE)
        return;
    FUZZ_CHECK(a_used == b_used, "consumed %zu vs %zu", b_used, a_used);
    if (a_rc != SMTP_PARSE_OK && a_rc != SMTP_PARSE_BARE_LF)
        return;
    FUZZ_CHECK(a->verb == b->verb && a->crlf == b->crlf, "verb or crlf differ");
    FUZZ_CHECK(a->verb_text.p - a_base == b->verb_text.p - b_base &&
                   a->verb_text.len == b->verb_text.len,
               "verb text differs");
    FUZZ_CHECK(a->arg.p - a_base == b->arg.p - b_base && a->arg.len == b->arg.len,
               "argument differs");
}

/* One line at buf[0..len): check the verdict, return it (and *used). */
static enum smtp_parse_rc
check_line(const char *buf, size_t len, const struct smtp_limits *lim, struct smtp_cmd *cmd,
           size_t *used)
{
    size_t scanned = 0, limit = len < lim->max_line ? len : lim->max_line;
    const char *lf = memchr(buf, '\n', limit);
    enum smtp_parse_rc rc;

    *used = SIZE_MAX;
    rc = smtp_parse_cmd(buf, len, lim, &scanned, cmd, used);
    switch (rc) {
    case SMTP_PARSE_NEED_MORE:
        FUZZ_CHECK(lf == NULL && len < lim->max_line, "NEED_MORE with an LF or a full line");
        FUZZ_CHECK(scanned == len, "cursor %zu after NEED_MORE on %zu octets", scanned, len);
        return rc;
    case SMTP_PARSE_TOO_LONG:
        FUZZ_CHECK(lf == NULL && len >= lim->max_line, "TOO_LONG with an LF in the limit");
        FUZZ_CHECK(*used == lim->max_line && scanned == 0, "TOO_LONG consumed %zu", *used);
        return rc;
    case SMTP_PARSE_NUL:
    case SMTP_PARSE_OK:
    case SMTP_PARSE_BARE_LF:
        break;
    default:
        FUZZ_CHECK(0, "unknown rc %d", rc);
    }
    FUZZ_CHECK(lf != NULL && *used == (size_t)(lf - buf) + 1 && scanned == 0,
               "a line must end at its first LF (consumed %zu)", *used);
    if (rc == SMTP_PARSE_NUL) {
        FUZZ_CHECK(memchr(buf, '\0', *used) != NULL, "NUL said, none there");
        return rc;
    }
    FUZZ_CHECK(memchr(buf, '\0', *used) == NULL, "a NUL in a parsed line");
    FUZZ_CHECK(cmd->crlf == (*used >= 2 && buf[*used - 2] == '\r'), "crlf flag");
    FUZZ_CHECK((rc == SMTP_PARSE_OK) == cmd->crlf, "OK iff CRLF");
    {
        size_t end = *used - 1 - (cmd->crlf ? 1 : 0);
        const char *vn = verb_names[cmd->verb];

        FUZZ_CHECK(cmd->verb_text.p == buf && cmd->verb_text.len <= end, "verb text");
        FUZZ_CHECK(memchr(cmd->verb_text.p, ' ', cmd->verb_text.len) == NULL, "space in verb");
        FUZZ_CHECK(inside(cmd->arg, buf, end), "argument outside the line");
        FUZZ_CHECK(cmd->arg.len == 0 ||
                       (cmd->arg.p[0] != ' ' && cmd->arg.p[cmd->arg.len - 1] != ' ' &&
                        cmd->arg.p[cmd->arg.len - 1] != '\t'),
                   "argument not trimmed");
        for (const char *q = cmd->arg.p + cmd->arg.len; q < buf + end; q++)
            FUZZ_CHECK(*q == ' ' || *q == '\t', "argument cut before its end");
        if (vn != NULL) {
            FUZZ_CHECK(slice_eq_nocase(cmd->verb_text, vn), "verb %s for \"%.*s\"", vn,
                       (int)cmd->verb_text.len, cmd->verb_text.p);
        } else {
            for (size_t i = 1; i < ARRAY_SIZE(verb_names); i++)
                FUZZ_CHECK(!slice_eq_nocase(cmd->verb_text, verb_names[i]), "%s not recognised",
                           verb_names[i]);
        }
    }
    return rc;
}

/* The same line parsed from growing prefixes, each in an exact-size buffer. */
static void
check_incremental(const char *buf, size_t len, const struct smtp_limits *lim, uint64_t *rng,
                  enum smtp_parse_rc rc, const struct smtp_cmd *cmd, size_t used)
{
    size_t scanned = 0, k = 0;

    if (len > 8192)
        return; /* quadratic copying: long lines are covered by the one-call check */
    for (;;) {
        struct smtp_cmd c2;
        size_t u2 = 0;
        enum smtp_parse_rc r2;
        char *p;

        k += 1 + (size_t)(fuzz_rand(rng) % 64);
        if (k > len)
            k = len;
        p = fuzz_dup(buf, k);
        r2 = smtp_parse_cmd(p, k, lim, &scanned, &c2, &u2);
        if (r2 != SMTP_PARSE_NEED_MORE || k == len) {
            if (k < len && r2 != SMTP_PARSE_NEED_MORE) {
                /* the line ended within the prefix: the rest cannot matter */
                FUZZ_CHECK(u2 <= k, "consumed past the prefix");
            }
            same_cmd(rc, cmd, used, buf, r2, &c2, u2, p);
            free(p);
            return;
        }
        FUZZ_CHECK(scanned == k, "cursor %zu after NEED_MORE on %zu", scanned, k);
        free(p);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = { data, size };
    struct smtp_limits lim;
    uint64_t rng;
    char *buf;
    size_t len, off = 0;

    lim.max_line = 512 + fuzz_u16(&in) % 3585;
    lim.max_path = fuzz_u8(&in);
    if (lim.max_path != 0)
        lim.max_path = 2 + lim.max_path * 2; /* 4..512 */
    lim.max_params = fuzz_u8(&in) % 21;
    rng = fuzz_u8(&in) + 1;
    buf = fuzz_dup(in.p, in.len);
    len = in.len;

    check_u64(slice_make(buf, len < 24 ? len : 24));
    while (off < len) {
        struct smtp_cmd cmd;
        size_t used;
        enum smtp_parse_rc rc = check_line(buf + off, len - off, &lim, &cmd, &used);

        check_incremental(buf + off, len - off, &lim, &rng, rc, &cmd, used);
        if (rc == SMTP_PARSE_NEED_MORE)
            break;
        if (rc == SMTP_PARSE_TOO_LONG) {
            /* the session skips to the next LF */
            const char *lf = memchr(buf + off + used, '\n', len - off - used);

            off = lf != NULL ? (size_t)(lf - buf) + 1 : len;
            continue;
        }
        if (rc == SMTP_PARSE_OK || rc == SMTP_PARSE_BARE_LF) {
            const char *sp = memchr(cmd.arg.p, ' ', cmd.arg.len);

            check_path(cmd.arg, "FROM:", SMTP_PATH_F_NULL_OK, &lim, true);
            check_path(cmd.arg, "TO:", SMTP_PATH_F_POSTMASTER_OK, &lim, true);
            check_path(cmd.arg, "FROM:", 0, &lim, false);
            check_path(cmd.arg, "TO:", SMTP_PATH_F_NULL_OK | SMTP_PATH_F_POSTMASTER_OK, &lim, true);
            check_u64(cmd.arg);
            check_u64(slice_make(cmd.arg.p, sp ? (size_t)(sp - cmd.arg.p) : cmd.arg.len));
        }
        off += used;
    }
    free(buf);
    return 0;
}
