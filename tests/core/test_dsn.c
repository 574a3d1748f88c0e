/*
 * Tests for core/dsn.c: DSN parameter parsing, xtext, NOTIFY rules and the
 * generated multipart/report, which every test parses back (boundaries,
 * parts, fields, CRLF only, no line over 998 octets).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <criterion/criterion.h>

#include "core/dsn.h"

#include "core/compiler.h"

#define T_NOW     1795800000ULL /* Fri, 27 Nov 2026 17:20:00 +0000 */
#define T_ARRIVAL (T_NOW - 7200)
#define T_SEED    0x0123456789abcdefULL

static const char orig_msg[] = "Received: from client.example (client.example [192.0.2.7])\r\n"
                               "From: Alice <alice@example.org>\r\n"
                               "To: bob@example.net\r\n"
                               "Subject: hello\r\n"
                               "\r\n"
                               "BODY-LINE-1 secret body\r\n"
                               "BODY-LINE-2\r\n";

/* ------------------------------------------------------------ helpers */

static size_t
hdr_section_len(void)
{
    return (size_t)(strstr(orig_msg, "\r\n\r\n") - orig_msg) + 2;
}

struct rc_in {
    const char *addr, *params;
};

static void
make_env(struct envelope *e, const char *sender, const char *mail_params, const struct rc_in *rc,
         size_t n)
{
    env_init(e);
    e->id = 0xABCDEF0123456789ULL;
    qid_format(e->id, e->qid);
    e->arrival = T_ARRIVAL;
    cr_assert_eq(env_put(e, &e->sender, sender, strlen(sender)), 0);
    cr_assert_eq(env_put(e, &e->mail_params, mail_params, strlen(mail_params)), 0);
    cr_assert_eq(env_put(e, &e->client, "192.0.2.7", 9), 0);
    cr_assert_eq(env_put(e, &e->helo, "client.example", 14), 0);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(env_add_rcpt(e, slice_make(rc[i].addr, strlen(rc[i].addr)),
                                  slice_make(rc[i].params, strlen(rc[i].params))),
                     0);
    }
}

static struct slice
S(const char *s) {
    return slice_make(s, strlen(s));
}

/* NUL-terminated copy of a dsn_buf for the str helpers. */
static char *
to_str(const struct dsn_buf *b)
{
    char *s = malloc(b->len + 1);

    cr_assert_not_null(s);
    memcpy(s, b->p, b->len);
    s[b->len] = '\0';
    return s;
}

/* CRLF only and no line longer than 998 octets (CRLF excluded). */
static void
assert_wire_clean(const char *p, size_t n)
{
    size_t col = 0;

    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r') {
            cr_assert(i + 1 < n && p[i + 1] == '\n', "bare CR at %zu", i);
            cr_assert_leq(col, 998, "line of %zu octets ending at %zu", col, i);
            col = 0;
            i++;
            continue;
        }
        cr_assert_neq(p[i], '\n', "bare LF at %zu", i);
        col++;
    }
    cr_assert_eq(col, 0, "output does not end with CRLF");
}

/*
 * A block of header-like fields (the message header, a part header or a DSN
 * field block), looked up by name; the value is unfolded (CRLF removed).
 * Returns a malloc'd string or NULL.
 */
static char *
field(const char *block, size_t n, const char *name)
{
    size_t nl = strlen(name);
    const char *p = block, *end = block + n;

    while (p < end) {
        const char *eol = strstr(p, "\r\n");

        if (eol == NULL || eol > end)
            eol = end;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *ve = eol;
            char *out;
            size_t len = 0;

            while (ve + 2 < end && (ve[2] == ' ' || ve[2] == '\t')) {
                const char *nx = strstr(ve + 2, "\r\n");
                ve = nx != NULL && nx < end ? nx : end;
            }
            while (v < ve && *v == ' ')
                v++;
            out = malloc((size_t)(ve - v) + 1);
            for (const char *q = v; q < ve; q++) {
                if (*q == '\r' || *q == '\n')
                    continue;
                out[len++] = *q;
            }
            out[len] = '\0';
            return out;
        }
        p = eol + 2;
    }
    return NULL;
}

static void
assert_field(const char *block, size_t n, const char *name, const char *want)
{
    char *v = field(block, n, name);

    cr_assert_not_null(v, "no %s field", name);
    cr_assert_str_eq(v, want, "%s", name);
    free(v);
}

struct part {
    const char *hdr;
    size_t hdr_len;
    const char *body;
    size_t body_len;
};

struct parsed {
    char *text; /* the whole message, NUL-terminated */
    size_t len;
    const char *hdr;
    size_t hdr_len;
    char boundary[128];
    struct part part[3];
};

/* Split the report into its header and exactly three MIME parts. */
static void
parse_report(const struct dsn_buf *b, struct parsed *r)
{
    const char *body, *bp, *p;
    char delim[160], *ct;
    int dl;

    memset(r, 0, sizeof(*r));
    assert_wire_clean(b->p, b->len);
    r->text = to_str(b);
    r->len = b->len;
    body = strstr(r->text, "\r\n\r\n");
    cr_assert_not_null(body);
    r->hdr = r->text;
    r->hdr_len = (size_t)(body - r->text) + 2;
    body += 4;

    ct = field(r->hdr, r->hdr_len, "Content-Type");
    cr_assert_not_null(ct);
    cr_assert(strncmp(ct, "multipart/report; report-type=delivery-status;", 46) == 0 ||
                  strncmp(ct, "multipart/report; report-type=global-delivery-status;", 53) == 0,
              "%s", ct);
    bp = strstr(ct, "boundary=\"");
    cr_assert_not_null(bp);
    bp += 10;
    p = strchr(bp, '"');
    cr_assert_not_null(p);
    cr_assert_lt((size_t)(p - bp), sizeof(r->boundary));
    memcpy(r->boundary, bp, (size_t)(p - bp));
    r->boundary[p - bp] = '\0';
    cr_assert_leq(strlen(r->boundary), 70);
    free(ct);

    /* first delimiter at the start of a line after the preamble */
    dl = snprintf(delim, sizeof(delim), "\r\n--%s", r->boundary);
    p = strstr(body - 2, delim);
    cr_assert_not_null(p);
    for (int i = 0; i < 3; i++) {
        const char *start = p + dl, *next, *sep;

        cr_assert(strncmp(start, "\r\n", 2) == 0, "delimiter %d not followed by CRLF", i);
        start += 2;
        next = strstr(start - 2, delim);
        cr_assert_not_null(next, "part %d not closed", i);
        if (next < start)
            next = start; /* empty part header and body cannot happen here */
        sep = strstr(start, "\r\n\r\n");
        cr_assert(sep != NULL && sep + 2 <= next, "part %d has no header/body separator", i);
        r->part[i].hdr = start;
        r->part[i].hdr_len = (size_t)(sep - start) + 2;
        r->part[i].body = sep + 4;
        r->part[i].body_len = sep + 4 <= next ? (size_t)(next - (sep + 4)) : 0;
        p = next;
    }
    /* close delimiter, then nothing but the final CRLF */
    cr_assert(strncmp(p + dl, "--\r\n", 4) == 0, "no close delimiter");
    cr_assert_eq((size_t)(p + dl + 4 - r->text), r->len, "text after the close delimiter");
    /* the boundary never occurs inside a part */
    for (int i = 0; i < 3; i++) {
        char *copy = strndup(r->part[i].body, r->part[i].body_len);

        cr_assert_null(strstr(copy, r->boundary));
        free(copy);
    }
}

static void
parsed_free(struct parsed *r)
{
    free(r->text);
}

/*
 * The delivery-status body as blocks separated by empty lines:
 * blk[0] per-message, blk[1..] per-recipient. Returns the count.
 */
static size_t
status_blocks(const struct part *pt, const char *blk[8], size_t len[8])
{
    const char *p = pt->body, *end = pt->body + pt->body_len;
    size_t n = 0;

    while (p < end && n < 8) {
        const char *e = strstr(p, "\r\n\r\n");

        if (e == NULL || e + 2 > end)
            e = end - 2;
        cr_assert(strncmp(p, "\r\n", 2) != 0, "empty field block");
        blk[n] = p;
        len[n] = (size_t)(e - p) + 2;
        n++;
        p = e + 4;
    }
    return n;
}

static bool
has_line_prefix(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);

    if (strncmp(text, prefix, n) == 0)
        return true;
    for (const char *p = strstr(text, "\r\n"); p != NULL; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, prefix, n) == 0)
            return true;
    }
    return false;
}

static const struct rc_in three[] = {
    { "bob@example.net", "" },
    { "carol@example.net", "NOTIFY=SUCCESS,FAILURE" },
    { "dave@example.com", "NOTIFY=FAILURE ORCPT=rfc822;dave+2Bold@example.com" },
};

static int
build(const struct envelope *e, const struct dsn_rcpt_status *rs, size_t n, struct slice msg,
      unsigned flags, struct dsn_buf *out, unsigned *oflags)
{
    struct dsn_report r = {
        .env = e,
        .rs = rs,
        .nrs = n,
        .myhostname = SLICE_LIT("mx1.example.org"),
        .now = T_NOW,
        .seed = T_SEED,
        .msg = msg,
        .flags = flags,
    };

    return dsn_build(&r, out, oflags);
}

/* ---------------------------------------------------- the report itself */

Test(dsn, failure_two_of_three_structure)
{
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0,
          .action = DSN_ACTION_FAILED,
          .status = SLICE_LIT("5.1.1"),
          .diag = SLICE_LIT("smtp; 550 5.1.1 <bob@example.net>: user unknown"),
          .remote_mta = SLICE_LIT("mx.example.net"),
          .last_attempt = T_NOW - 60 },
        { .rcpt = 2,
          .action = DSN_ACTION_FAILED,
          .status = SLICE_LIT("5.2.2"),
          .diag = SLICE_LIT("smtp; 552 5.2.2 mailbox full"),
          .last_attempt = T_NOW - 30 },
    };
    const char *blk[8];
    size_t blen[8], nb;
    unsigned oflags = 99;
    char *v;

    make_env(&e, "alice@example.org", "", three, 3);
    cr_assert_eq(build(&e, rs, 2, S(orig_msg), 0, &out, &oflags), 0);
    cr_assert_eq(oflags, 0);
    parse_report(&out, &r);

    /* RFC 5322 header */
    assert_field(r.hdr, r.hdr_len, "From",
                 "\"Mail Delivery System\" <MAILER-DAEMON@mx1.example.org>");
    assert_field(r.hdr, r.hdr_len, "To", "<alice@example.org>");
    assert_field(r.hdr, r.hdr_len, "Subject", "Undelivered Mail Returned to Sender");
    assert_field(r.hdr, r.hdr_len, "Date", "Fri, 27 Nov 2026 17:20:00 +0000");
    assert_field(r.hdr, r.hdr_len, "Auto-Submitted", "auto-replied");
    assert_field(r.hdr, r.hdr_len, "MIME-Version", "1.0");
    v = field(r.hdr, r.hdr_len, "Message-ID");
    cr_assert_not_null(v);
    cr_assert(v[0] == '<' && v[strlen(v) - 1] == '>' && strstr(v, "@mx1.example.org>") != NULL);
    free(v);
    cr_assert_null(field(r.hdr, r.hdr_len, "Content-Transfer-Encoding"));

    /* part 1: human-readable */
    assert_field(r.part[0].hdr, r.part[0].hdr_len, "Content-Type", "text/plain; charset=us-ascii");
    cr_assert_not_null(strstr(r.part[0].body, "This is the mail system at host mx1.example.org."));
    cr_assert_not_null(strstr(r.part[0].body, "could not\r\nbe delivered to one or more"));
    /* wrapped at 76 columns, continuation indented by four spaces */
    cr_assert_not_null(strstr(r.part[0].body,
                              "\r\n<bob@example.net>: host mx.example.net said: 550 5.1.1 "
                              "<bob@example.net>:\r\n    user unknown\r\n"));
    cr_assert_not_null(strstr(r.part[0].body, "<dave@example.com>: 552 5.2.2 mailbox full"));
    cr_assert_null(strstr(r.part[0].body, "carol"));

    /* part 2: delivery-status, one per-message block and two recipients */
    assert_field(r.part[1].hdr, r.part[1].hdr_len, "Content-Type", "message/delivery-status");
    nb = status_blocks(&r.part[1], blk, blen);
    cr_assert_eq(nb, 3);
    assert_field(blk[0], blen[0], "Reporting-MTA", "dns; mx1.example.org");
    assert_field(blk[0], blen[0], "X-Ringmail-Queue-ID", "ABCDEF0123456789");
    assert_field(blk[0], blen[0], "X-Ringmail-Sender", "rfc822; alice@example.org");
    assert_field(blk[0], blen[0], "Arrival-Date", "Fri, 27 Nov 2026 15:20:00 +0000");
    assert_field(blk[0], blen[0], "Received-From-MTA", "dns; client.example (192.0.2.7)");
    cr_assert_null(field(blk[0], blen[0], "Original-Envelope-Id"));

    assert_field(blk[1], blen[1], "Final-Recipient", "rfc822; bob@example.net");
    cr_assert_null(field(blk[1], blen[1], "Original-Recipient"));
    assert_field(blk[1], blen[1], "Action", "failed");
    assert_field(blk[1], blen[1], "Status", "5.1.1");
    assert_field(blk[1], blen[1], "Remote-MTA", "dns; mx.example.net");
    assert_field(blk[1], blen[1], "Diagnostic-Code",
                 "smtp; 550 5.1.1 <bob@example.net>: user unknown");
    assert_field(blk[1], blen[1], "Last-Attempt-Date", "Fri, 27 Nov 2026 17:19:00 +0000");
    cr_assert_null(field(blk[1], blen[1], "Will-Retry-Until"));

    assert_field(blk[2], blen[2], "Final-Recipient", "rfc822; dave@example.com");
    assert_field(blk[2], blen[2], "Original-Recipient", "rfc822;dave+old@example.com");
    assert_field(blk[2], blen[2], "Action", "failed");
    assert_field(blk[2], blen[2], "Status", "5.2.2");
    cr_assert_null(field(blk[2], blen[2], "Remote-MTA"));
    assert_field(blk[2], blen[2], "Diagnostic-Code", "smtp; 552 5.2.2 mailbox full");

    /* part 3: headers only (no RET) */
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Type", "text/rfc822-headers");
    /* the header section, its last CRLF being the delimiter's */
    cr_assert_eq(r.part[2].body_len, hdr_section_len() - 2);
    cr_assert(memcmp(r.part[2].body, orig_msg, r.part[2].body_len) == 0);
    cr_assert_null(strstr(r.part[2].body, "BODY-LINE"));

    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, ret_full_returns_the_message_ret_hdrs_the_header)
{
    const struct rc_in one[] = { { "bob@example.net", "" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.0.0") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;

    /* RET=FULL: message/rfc822 with the body, byte for byte */
    make_env(&e, "alice@example.org", "RET=FULL ENVID=x", one, 1);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Type", "message/rfc822");
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Description", "Undelivered Message");
    cr_assert_eq(r.part[2].body_len, strlen(orig_msg) - 2); /* last CRLF is the delimiter's */
    cr_assert(memcmp(r.part[2].body, orig_msg, r.part[2].body_len) == 0);
    parsed_free(&r);
    dsn_buf_free(&out);

    /* RET=FULL, but the caller only has the headers */
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), DSN_BUILD_F_HEADERS_ONLY, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Type", "text/rfc822-headers");
    cr_assert_null(strstr(r.part[2].body, "BODY-LINE"));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);

    /* RET=HDRS: text/rfc822-headers, header section only */
    make_env(&e, "alice@example.org", "RET=HDRS", one, 1);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Type", "text/rfc822-headers");
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Description",
                 "Undelivered Message Headers");
    cr_assert_not_null(strstr(r.part[2].body, "Subject: hello\r\n"));
    cr_assert_null(strstr(r.part[2].body, "BODY-LINE"));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, ret_full_larger_than_max_full_returns_headers)
{
    const struct rc_in one[] = { { "bob@example.net", "" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.0.0") },
    };
    struct dsn_report rep = {
        .rs = rs,
        .nrs = 1,
        .myhostname = SLICE_LIT("mx1.example.org"),
        .now = T_NOW,
        .seed = T_SEED,
        .msg = S(orig_msg),
        .max_full = 100,
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;

    make_env(&e, "alice@example.org", "RET=FULL", one, 1);
    rep.env = &e;
    cr_assert_eq(dsn_build(&rep, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Type", "text/rfc822-headers");
    /* the header section is cut at the last line end within 100 octets */
    cr_assert_gt(hdr_section_len(), 100);
    cr_assert_eq(r.part[2].body_len, (size_t)(strstr(orig_msg, "To:") - orig_msg) - 2);
    cr_assert(memcmp(r.part[2].body, orig_msg, r.part[2].body_len) == 0);
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, envid_and_orcpt_decoded_into_report)
{
    const struct rc_in one[] = { { "bob@example.net",
                                   "ORCPT=rfc822;Bob+2BTag+3D1@Example.NET NOTIFY=FAILURE" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.1.1") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    const char *blk[8];
    size_t blen[8];

    make_env(&e, "alice@example.org", "ENVID=QQ+2B314+20x BODY=8BITMIME", one, 1);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), 0);
    parse_report(&out, &r);
    cr_assert_eq(status_blocks(&r.part[1], blk, blen), 2);
    assert_field(blk[0], blen[0], "Original-Envelope-Id", "QQ+314 x");
    assert_field(blk[1], blen[1], "Original-Recipient", "rfc822;Bob+Tag=1@Example.NET");
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, header_injection_is_neutralised)
{
    const struct rc_in one[] = { { "bob@example.net", "" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0,
          .action = DSN_ACTION_FAILED,
          .status = SLICE_LIT("5.7.1\r\nBcc: status@evil"),
          .diag = SLICE_LIT("smtp; 550 no\r\nBcc: x@evil.example\r\n\r\nbody\nX-A: 1\rX-B: 2\0Z"),
          .remote_mta = SLICE_LIT("mx.evil\r\nBcc: y@evil.example") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    const char *blk[8];
    size_t blen[8];
    char *v;

    make_env(&e, "alice@example.org", "", one, 1);
    /* helo from the peer, too */
    cr_assert_eq(env_put(&e, &e.helo, "h\r\nBcc: z@evil.example", 23), 0);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), 0);
    parse_report(&out, &r);
    cr_assert_not(has_line_prefix(r.text, "Bcc:"));
    cr_assert_not(has_line_prefix(r.text, "X-A:"));
    cr_assert_not(has_line_prefix(r.text, "X-B:"));
    cr_assert_not(has_line_prefix(r.text, "body"));
    cr_assert_eq(status_blocks(&r.part[1], blk, blen), 2);
    /* the text survives as one field value */
    v = field(blk[1], blen[1], "Diagnostic-Code");
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "smtp; 550 no Bcc: x@evil.example body X-A: 1 X-B: 2 Z");
    free(v);
    assert_field(blk[1], blen[1], "Status", "5.0.0"); /* not a status code: derived */
    assert_field(blk[1], blen[1], "Remote-MTA", "dns; mx.evil Bcc: y@evil.example");
    assert_field(blk[0], blen[0], "Received-From-MTA", "dns; h Bcc: z@evil.example (192.0.2.7)");
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, long_lines_are_folded_or_broken)
{
    const struct rc_in one[] = { { "bob@example.net", "RET=FULL" } };
    struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.0.0") },
    };
    static char diag[8192], msg[6000];
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    size_t n = 0;
    char *v;

    /* a 3000-octet word and many short ones */
    n = (size_t)snprintf(diag, sizeof(diag), "smtp; 550 ");
    memset(diag + n, 'w', 3000);
    n += 3000;
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(diag + n, sizeof(diag) - n, " word%d", i);
    rs[0].diag = slice_make(diag, n);

    /* the original: a 2500-octet header line, bare LF, bare CR, no final newline */
    n = (size_t)snprintf(msg, sizeof(msg), "X-Long: ");
    memset(msg + n, 'h', 2500);
    n += 2500;
    n += (size_t)snprintf(msg + n, sizeof(msg) - n, "\nSubject: x\r\rbody\r\nlast");

    make_env(&e, "alice@example.org", "RET=FULL", one, 1);
    cr_assert_eq(build(&e, rs, 1, slice_make(msg, n), 0, &out, NULL), 0);
    parse_report(&out, &r); /* asserts CRLF only and lines <= 998 */

    v = field(r.part[1].body, r.part[1].body_len, "Diagnostic-Code");
    cr_assert_not_null(v);
    cr_assert(strncmp(v, "smtp; 550 www", 13) == 0);
    cr_assert_not_null(strstr(v, "word0 word1"));
    cr_assert_not_null(strstr(v, "word299"));
    free(v);
    /* the long header was broken with CRLF SP and is still one field */
    v = field(r.part[2].body, r.part[2].body_len, "X-Long");
    cr_assert_not_null(v);
    cr_assert_eq(strlen(v), 2500 + 2); /* two SP inserted for the two breaks */
    free(v);
    cr_assert_not_null(strstr(r.part[2].body, "\r\nSubject: x\r\n\r\nbody\r\nlast"));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, delay_report_only_with_notify_delay)
{
    const struct rc_in two[] = { { "bob@example.net", "NOTIFY=DELAY,FAILURE" },
                                 { "carol@example.net", "" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0,
          .action = DSN_ACTION_DELAYED,
          .status = SLICE_LIT("4.4.1"),
          .diag = SLICE_LIT("X-ringmail; connect to mx.example.net: timed out"),
          .last_attempt = T_NOW,
          .will_retry_until = T_ARRIVAL + 5 * 86400 },
        { .rcpt = 1, .action = DSN_ACTION_DELAYED, .status = SLICE_LIT("4.4.1") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    const char *blk[8];
    size_t blen[8];

    make_env(&e, "alice@example.org", "RET=FULL", two, 2);
    cr_assert_eq(build(&e, rs, 2, S(orig_msg), 0, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.hdr, r.hdr_len, "Subject", "Delayed Mail (still being retried)");
    cr_assert_not_null(strstr(r.part[0].body, "THIS IS A WARNING ONLY"));
    cr_assert_not_null(strstr(r.part[0].body, "for more than 2 hour(s)"));
    cr_assert_null(strstr(r.part[0].body, "carol"));
    cr_assert_eq(status_blocks(&r.part[1], blk, blen), 2);
    assert_field(blk[1], blen[1], "Action", "delayed");
    assert_field(blk[1], blen[1], "Status", "4.4.1");
    assert_field(blk[1], blen[1], "Will-Retry-Until", "Wed, 2 Dec 2026 15:20:00 +0000");
    /* RET=FULL governs failure reports only */
    assert_field(r.part[2].hdr, r.part[2].hdr_len, "Content-Type", "text/rfc822-headers");
    parsed_free(&r);
    dsn_buf_free(&out);

    /* carol alone (no NOTIFY): no delay report */
    cr_assert_eq(build(&e, rs + 1, 1, S(orig_msg), 0, &out, NULL), -ENODATA);
    cr_assert_eq(out.len, 0);
    env_free(&e);
}

Test(dsn, success_report)
{
    const struct rc_in one[] = { { "bob@example.net", "NOTIFY=SUCCESS" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0,
          .action = DSN_ACTION_RELAYED,
          .status = SLICE_LIT("2.0.0"),
          .diag = SLICE_LIT("smtp; 250 2.0.0 Ok: queued as 4Xyz"),
          .remote_mta = SLICE_LIT("mx.example.net") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;

    make_env(&e, "alice@example.org", "", one, 1);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.hdr, r.hdr_len, "Subject", "Successful Mail Delivery Report");
    cr_assert_not_null(strstr(r.part[0].body, "successfully delivered"));
    cr_assert_not_null(strstr(r.part[0].body, "<bob@example.net>: relayed to mx.example.net: 250"));
    cr_assert_not_null(strstr(r.part[1].body, "Action: relayed\r\n"));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, null_sender_gets_nothing)
{
    const struct rc_in one[] = { { "bob@example.net", "NOTIFY=SUCCESS,FAILURE,DELAY" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.1.1") },
    };
    struct dsn_report rep = {
        .rs = rs,
        .nrs = 1,
        .myhostname = SLICE_LIT("mx1.example.org"),
        .now = T_NOW,
        .seed = T_SEED,
        .msg = S(orig_msg),
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;

    make_env(&e, "", "", one, 1);
    rep.env = &e;
    for (int a = DSN_ACTION_FAILED; a <= DSN_ACTION_EXPANDED; a++)
        cr_assert_not(dsn_wanted(&e, 0, (enum dsn_action)a));
    cr_assert_eq(dsn_build(&rep, &out, NULL), -ENODATA);
    /* a postmaster copy must name its recipient */
    rep.flags = DSN_BUILD_F_ALL;
    cr_assert_eq(dsn_build(&rep, &out, NULL), -EINVAL);
    rep.to = SLICE_LIT("postmaster@example.org");
    cr_assert_eq(dsn_build(&rep, &out, NULL), 0);
    parse_report(&out, &r);
    assert_field(r.hdr, r.hdr_len, "To", "<postmaster@example.org>");
    cr_assert_null(field(r.part[1].body, r.part[1].body_len, "X-Ringmail-Sender"));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, appends_and_rejects_bad_index)
{
    const struct rc_in one[] = { { "bob@example.net", "" } };
    struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.1.1") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 }, alone = { 0 };

    make_env(&e, "alice@example.org", "", one, 1);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &alone, NULL), 0);
    out.p = malloc(4);
    out.cap = 4;
    memcpy(out.p, "PRE:", 4);
    out.len = 4;
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), 0);
    cr_assert_eq(out.len, alone.len + 4);
    cr_assert(memcmp(out.p, "PRE:", 4) == 0);
    cr_assert(memcmp(out.p + 4, alone.p, alone.len) == 0);
    rs[0].rcpt = 1;
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, NULL), -EINVAL);
    cr_assert_eq(out.len, alone.len + 4);
    dsn_buf_free(&out);
    dsn_buf_free(&alone);
    cr_assert_null(out.p);
    env_free(&e);
}

Test(dsn, boundary_avoids_returned_content)
{
    const struct rc_in one[] = { { "bob@example.net", "RET=FULL" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.1.1") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    char msg[512], b[64];
    int n;

    make_env(&e, "alice@example.org", "RET=FULL", one, 1);
    /* the boundary the seed would give, planted in the body */
    snprintf(b, sizeof(b), "=_ringmail_%016" PRIx64 "_%s", (uint64_t)T_SEED, e.qid);
    n = snprintf(msg, sizeof(msg), "Subject: x\r\n\r\n--%s\r\n--%s--\r\n", b, b);
    cr_assert_eq(build(&e, rs, 1, slice_make(msg, (size_t)n), 0, &out, NULL), 0);
    parse_report(&out, &r); /* asserts the boundary is absent from every part */
    cr_assert_str_neq(r.boundary, b);
    cr_assert_not_null(strstr(r.part[2].body, b));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

Test(dsn, utf8_address_uses_global_types)
{
    const struct rc_in one[] = { { "j\xc3\xb6rg@example.de", "" } };
    const struct dsn_rcpt_status rs[] = {
        { .rcpt = 0, .action = DSN_ACTION_FAILED, .status = SLICE_LIT("5.1.1") },
    };
    struct envelope e;
    struct dsn_buf out = { 0 };
    struct parsed r;
    unsigned oflags = 0;

    make_env(&e, "alice@example.org", "", one, 1);
    cr_assert_eq(build(&e, rs, 1, S(orig_msg), 0, &out, &oflags), 0);
    cr_assert_eq(oflags, DSN_OUT_F_8BIT | DSN_OUT_F_SMTPUTF8);
    parse_report(&out, &r);
    assert_field(r.part[1].hdr, r.part[1].hdr_len, "Content-Type",
                 "message/global-delivery-status");
    cr_assert_not_null(
        strstr(r.part[1].body, "Final-Recipient: utf-8; j\xc3\xb6rg@example.de\r\n"));
    parsed_free(&r);
    dsn_buf_free(&out);
    env_free(&e);
}

/* --------------------------------------------------------- dsn_wanted */

Test(dsn, wanted_follows_notify)
{
    static const struct {
        const char *params;
        bool failed, delayed, delivered;
    } t[] = {
        { "", true, false, false },
        { "NOTIFY=NEVER", false, false, false },
        { "NOTIFY=SUCCESS", false, false, true },
        { "NOTIFY=FAILURE", true, false, false },
        { "NOTIFY=DELAY", false, true, false },
        { "NOTIFY=FAILURE,DELAY", true, true, false },
        { "notify=success,failure,delay", true, true, true },
        { "ORCPT=rfc822;x@y NOTIFY=SUCCESS", false, false, true },
        { "NOTIFY=BOGUS", true, false, false }, /* unparseable counts as absent */
    };

    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        const struct rc_in one[] = { { "bob@example.net", t[i].params } };
        struct envelope e;

        make_env(&e, "alice@example.org", "", one, 1);
        cr_assert_eq(dsn_wanted(&e, 0, DSN_ACTION_FAILED), t[i].failed, "%s", t[i].params);
        cr_assert_eq(dsn_wanted(&e, 0, DSN_ACTION_DELAYED), t[i].delayed, "%s", t[i].params);
        cr_assert_eq(dsn_wanted(&e, 0, DSN_ACTION_DELIVERED), t[i].delivered, "%s", t[i].params);
        cr_assert_eq(dsn_wanted(&e, 0, DSN_ACTION_RELAYED), t[i].delivered, "%s", t[i].params);
        cr_assert_eq(dsn_wanted(&e, 0, DSN_ACTION_EXPANDED), t[i].delivered, "%s", t[i].params);
        cr_assert_not(dsn_wanted(&e, 1, DSN_ACTION_FAILED)); /* out of range */
        env_free(&e);
    }
}

/* ------------------------------------------------------ params, xtext */

Test(dsn, xtext_round_trip)
{
    static const char raw[] = "a+b=c d\x01\xff~!";
    char enc[64], dec[64];
    ssize_t n, m;

    n = dsn_xtext_encode(slice_make(raw, sizeof(raw) - 1), enc, sizeof(enc));
    cr_assert_eq(n, 21);
    enc[n] = '\0';
    cr_assert_str_eq(enc, "a+2Bb+3Dc+20d+01+FF~!");
    cr_assert_eq(dsn_xtext_encode(slice_make(raw, sizeof(raw) - 1), NULL, 0), n);
    cr_assert_eq(dsn_xtext_encode(slice_make(raw, sizeof(raw) - 1), enc, 5), -ENOSPC);
    m = dsn_xtext_decode(slice_make(enc, (size_t)n), dec, sizeof(dec));
    cr_assert_eq(m, (ssize_t)sizeof(raw) - 1);
    cr_assert(memcmp(dec, raw, sizeof(raw) - 1) == 0);
    cr_assert_eq(dsn_xtext_decode(S("+2b"), dec, sizeof(dec)), 1); /* lower case accepted */
    cr_assert_eq(dec[0], '+');
    cr_assert_eq(dsn_xtext_decode(S("abc"), dec, 2), -ENOSPC);
    cr_assert_eq(dsn_xtext_decode(S("+4"), dec, sizeof(dec)), -EINVAL);
    cr_assert_eq(dsn_xtext_decode(S("+G1"), dec, sizeof(dec)), -EINVAL);
    cr_assert_eq(dsn_xtext_decode(S("a=b"), dec, sizeof(dec)), -EINVAL);
    cr_assert_eq(dsn_xtext_decode(S("a b"), dec, sizeof(dec)), -EINVAL);
    cr_assert_eq(dsn_xtext_decode(S("a+"), dec, sizeof(dec)), -EINVAL);
}

Test(dsn, mail_params_accept_and_reject)
{
    struct dsn_mail m;
    char envid[128];

    cr_assert_eq(dsn_parse_mail_params(S(""), &m), DSN_PARAM_OK);
    cr_assert_eq(m.ret, DSN_RET_NONE);
    cr_assert_null(m.envid.p);
    cr_assert_eq(dsn_parse_mail_params(S("SIZE=100 ret=full ENVID=QQ314159 BODY=8BITMIME"), &m),
                 DSN_PARAM_OK);
    cr_assert_eq(m.ret, DSN_RET_FULL);
    cr_assert_eq(m.envid.len, 8);
    cr_assert(memcmp(m.envid.p, "QQ314159", 8) == 0);
    cr_assert_eq(dsn_parse_mail_params(S("RET=HDRS"), &m), DSN_PARAM_OK);
    cr_assert_eq(m.ret, DSN_RET_HDRS);

    cr_assert_eq(dsn_parse_mail_params(S("RET=BODY"), &m), DSN_PARAM_BAD_RET);
    cr_assert_eq(dsn_parse_mail_params(S("RET"), &m), DSN_PARAM_BAD_RET);
    cr_assert_eq(dsn_parse_mail_params(S("RET=FULL RET=HDRS"), &m), DSN_PARAM_DUPLICATE);
    cr_assert_eq(dsn_parse_mail_params(S("ENVID="), &m), DSN_PARAM_BAD_ENVID);
    cr_assert_eq(dsn_parse_mail_params(S("ENVID=a+4"), &m), DSN_PARAM_BAD_ENVID);
    cr_assert_eq(dsn_parse_mail_params(S("ENVID=a=b"), &m), DSN_PARAM_BAD_ENVID);
    cr_assert_eq(dsn_parse_mail_params(S("ENVID=a+0D+0ABcc:x"), &m), DSN_PARAM_BAD_ENVID);
    cr_assert_eq(dsn_parse_mail_params(S("ENVID=x ENVID=y"), &m), DSN_PARAM_DUPLICATE);
    cr_assert_eq(dsn_parse_mail_params(S("=x"), &m), DSN_PARAM_BAD_SYNTAX);

    /* ENVID: 100 octets as sent is the limit */
    memcpy(envid, "ENVID=", 6);
    memset(envid + 6, 'e', 100);
    cr_assert_eq(dsn_parse_mail_params(slice_make(envid, 106), &m), DSN_PARAM_OK);
    envid[106] = 'e';
    cr_assert_eq(dsn_parse_mail_params(slice_make(envid, 107), &m), DSN_PARAM_ENVID_LONG);
    cr_assert_str_eq(dsn_param_reply(DSN_PARAM_ENVID_LONG), "501 5.5.4 ENVID parameter too long");

    /* single-value parser as the server uses it */
    memset(&m, 0, sizeof(m));
    cr_assert_eq(dsn_parse_ret(S("Hdrs"), &m), DSN_PARAM_OK);
    cr_assert_eq(m.ret, DSN_RET_HDRS);
    cr_assert_eq(dsn_parse_envid(slice_make(NULL, 0), &m), DSN_PARAM_BAD_ENVID);
}

Test(dsn, rcpt_params_accept_and_reject)
{
    struct dsn_rcpt p;
    char orcpt[600];

    cr_assert_eq(dsn_parse_rcpt_params(S(""), &p), DSN_PARAM_OK);
    cr_assert_eq(p.notify, 0);
    cr_assert_null(p.orcpt_type.p);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=NEVER"), &p), DSN_PARAM_OK);
    cr_assert_eq(p.notify, DSN_NOTIFY_F_NEVER);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=Failure,delay ORCPT=rfc822;a+40b@c"), &p),
                 DSN_PARAM_OK);
    cr_assert_eq(p.notify, DSN_NOTIFY_F_FAILURE | DSN_NOTIFY_F_DELAY);
    cr_assert_eq(p.orcpt_type.len, 6);
    cr_assert(memcmp(p.orcpt_type.p, "rfc822", 6) == 0);
    cr_assert_eq(p.orcpt.len, 7);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=SUCCESS,FAILURE,DELAY"), &p), DSN_PARAM_OK);
    cr_assert_eq(p.notify, DSN_NOTIFY_F_SUCCESS | DSN_NOTIFY_F_FAILURE | DSN_NOTIFY_F_DELAY);

    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=NEVER,SUCCESS"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=FAILURE,NEVER"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=NEVER,NEVER"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=SOMETIMES"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=FAILURE,"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=,FAILURE"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY="), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY"), &p), DSN_PARAM_BAD_NOTIFY);
    cr_assert_eq(dsn_parse_rcpt_params(S("NOTIFY=DELAY NOTIFY=DELAY"), &p), DSN_PARAM_DUPLICATE);

    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=rfc822"), &p), DSN_PARAM_BAD_ORCPT);
    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=;a@b"), &p), DSN_PARAM_BAD_ORCPT);
    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=rfc822;"), &p), DSN_PARAM_BAD_ORCPT);
    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=rfc822;a+4x@b"), &p), DSN_PARAM_BAD_ORCPT);
    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=rfc822;a+0A@b"), &p), DSN_PARAM_BAD_ORCPT);
    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=rfc(822;a@b"), &p), DSN_PARAM_BAD_ORCPT);
    cr_assert_eq(dsn_parse_rcpt_params(S("ORCPT=rfc822;a@b ORCPT=rfc822;c@d"), &p),
                 DSN_PARAM_DUPLICATE);
    memcpy(orcpt, "ORCPT=rfc822;", 13);
    memset(orcpt + 13, 'a', 500 - 7);
    cr_assert_eq(dsn_parse_rcpt_params(slice_make(orcpt, 506), &p), DSN_PARAM_OK);
    orcpt[506] = 'a';
    cr_assert_eq(dsn_parse_rcpt_params(slice_make(orcpt, 507), &p), DSN_PARAM_ORCPT_LONG);
    cr_assert_str_eq(dsn_param_reply(DSN_PARAM_BAD_NOTIFY),
                     "501 5.5.4 Bad NOTIFY parameter syntax");
}
