/*
 * Tests for core/smtp_data.c: the DATA / BDAT body scanner. Every input is
 * fed whole, split at every offset and byte by byte, each piece ending at a
 * PROT_NONE page, and the output space is a guarded buffer of 1..n octets, so
 * over-reads and over-writes fault. All ways must give the same octets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/compiler.h"
#include "core/smtp_data.h"
#include "support/guard.h"

#define OUT_MAX 65536

struct result {
    char out[OUT_MAX];
    size_t len;
    size_t consumed; /* input octets used when END came (or all) */
    bool end;
    uint8_t errors;
    uint64_t size;
};

struct scan_opts {
    enum smtp_data_mode mode;
    bool reject;
    bool strict;
    uint64_t max_size, max_line;
};

/*
 * Scan in[0..n) in pieces of `piece` octets (0: whole) with output rooms of
 * `room` octets. Input pieces are fed the way the session does: unconsumed
 * bytes are offered again together with the next piece.
 */
static void
run(const struct scan_opts *o, const char *in, size_t n, size_t piece, size_t room,
    struct result *r)
{
    static struct guard gin, gout;
    struct smtp_data d;
    size_t fed = 0, off = 0;

    memset(r, 0, sizeof(*r));
    smtp_data_init(&d, o->mode, o->max_size, o->max_line, o->reject, o->strict);
    while (!r->end) {
        size_t avail, used = 0, made = 0;
        const char *p;
        char *out = NULL;
        enum smtp_data_rc rc;

        if (piece == 0)
            fed = n;
        else if (fed - off < piece && fed < n)
            fed = MIN(n, fed + piece);
        avail = fed - off;
        p = guard_place(&gin, in + off, avail);
        if (d.errors == 0)
            out = guard_place(&gout, "", 0) - room; /* room octets before the guard page */
        rc = smtp_data_scan(&d, p, avail, &used, out, d.errors == 0 ? room : 0, &made);
        cr_assert_leq(used, avail);
        cr_assert_lt(r->len + made, OUT_MAX);
        if (made > 0)
            memcpy(r->out + r->len, out, made);
        r->len += made;
        off += used;
        if (rc == SMTP_DATA_END) {
            r->end = true;
            break;
        }
        if (off == n && used == 0 && made == 0 && d.npend == 0) {
            if (o->mode == SMTP_DATA_M_RAW && d.state != SMTP_DATA_S_DONE) {
                smtp_data_finish(&d);
                continue;
            }
            break;
        }
    }
    r->out[r->len] = '\0';
    r->consumed = off;
    r->errors = d.errors;
    r->size = d.size;
}

/* Every split and room size gives the same result as the whole input. */
static void
check_all_ways(const struct scan_opts *o, const char *in, size_t n, struct result *whole)
{
    static struct result r;
    static const size_t rooms[] = { 1, 2, 3, 5, 8, 64, 4096 };

    run(o, in, n, 0, 4096, whole);
    for (size_t piece = 1; piece <= n; piece++) {
        for (size_t i = 0; i < ARRAY_SIZE(rooms); i++) {
            if (piece > 16 && piece != n && i != 0 && i != 6)
                continue; /* keep the run time sane: the small pieces see every room */
            run(o, in, n, piece, rooms[i], &r);
            cr_assert_eq(r.end, whole->end, "piece %zu room %zu", piece, rooms[i]);
            if (whole->errors == 0) {
                /* a refused message keeps what was stored before the error was seen: the
                   session aborts it, so only accepted output must match */
                cr_assert_eq(r.len, whole->len, "piece %zu room %zu", piece, rooms[i]);
                cr_assert(memcmp(r.out, whole->out, r.len) == 0, "piece %zu room %zu: %s", piece,
                          rooms[i], r.out);
            }
            cr_assert_eq(r.consumed, whole->consumed, "piece %zu room %zu", piece, rooms[i]);
            cr_assert_eq(r.errors, whole->errors, "piece %zu room %zu", piece, rooms[i]);
            cr_assert_eq(r.size, whole->size);
        }
    }
}

static const struct scan_opts dot_norm = { SMTP_DATA_M_DOT, false, true, 0, 0 };
static const struct scan_opts dot_reject = { SMTP_DATA_M_DOT, true, true, 0, 0 };
static const struct scan_opts raw_norm = { SMTP_DATA_M_RAW, false, true, 0, 0 };
static const struct scan_opts raw_reject = { SMTP_DATA_M_RAW, true, true, 0, 0 };

/* in must end DATA; want is the stored body; trailing text after the end is left unconsumed */
static void
expect_dot(const struct scan_opts *o, const char *in, const char *want, const char *rest,
           uint8_t errors)
{
    static struct result r;
    size_t n = strlen(in), nrest = strlen(rest);

    check_all_ways(o, in, n, &r);
    cr_assert(r.end, "no end of data in %s", in);
    cr_assert_eq(r.consumed, n - nrest, "consumed %zu of %zu", r.consumed, n);
    cr_assert_str_eq(in + r.consumed, rest);
    cr_assert_eq(r.errors, errors, "errors %u want %u", r.errors, errors);
    if (errors == 0)
        cr_assert_str_eq(r.out, want);
}

Test(smtp_data, plain_and_end_exact)
{
    expect_dot(&dot_norm, "Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b>\r\n",
               "Subject: x\r\n\r\nbody\r\n", "MAIL FROM:<a@b>\r\n", 0);
}

Test(smtp_data, empty_message)
{
    expect_dot(&dot_norm, ".\r\n", "", "", 0);
    expect_dot(&dot_norm, ".\r\nQUIT\r\n", "", "QUIT\r\n", 0);
}

Test(smtp_data, dot_unstuffing)
{
    expect_dot(&dot_norm, "..\r\n...\r\n.x\r\nx.\r\n. \r\n.\r\n", ".\r\n..\r\nx\r\nx.\r\n \r\n", "",
               0);
}

Test(smtp_data, long_runs_use_the_simd_path)
{
    static char in[4096], want[4096];
    size_t n = 0, w = 0;

    for (int line = 0; line < 20; line++) {
        for (int i = 0; i < 37 + line * 5; i++) {
            in[n++] = (char)('a' + (i % 26));
            want[w++] = (char)('a' + (i % 26));
        }
        memcpy(in + n, "\r\n", 2);
        memcpy(want + w, "\r\n", 2);
        n += 2;
        w += 2;
    }
    memcpy(in + n, ".\r\n", 4);
    want[w] = '\0';
    expect_dot(&dot_norm, in, want, "", 0);
}

Test(smtp_data, bare_lf_and_cr_normalised)
{
    expect_dot(&dot_norm, "a\nb\rc\r\r\nd\n\n\r\n.\r\n", "a\r\nb\r\nc\r\n\r\nd\r\n\r\n\r\n", "", 0);
    /* after a bare LF, "." CRLF is the content line ".", not the end */
    expect_dot(&dot_norm, "d\n.\r\n\r\n.\r\n", "d\r\n.\r\n\r\n", "", 0);
}

Test(smtp_data, bare_newline_rejected_but_in_sync)
{
    expect_dot(&dot_reject, "a\nb\r\n.\r\nNEXT", "", "NEXT", SMTP_DATA_E_BARE_NEWLINE);
    expect_dot(&dot_reject, "a\rb\r\n.\r\nNEXT", "", "NEXT", SMTP_DATA_E_BARE_NEWLINE);
}

/*
 * SMTP smuggling (CVE-2023-51764 class): none of these end the data, in
 * either mode; only the final real CRLF.CRLF does.
 */
static const char *const smuggle[] = { "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n.\n", ".\r\n" };

Test(smtp_data, smuggling_never_ends_data)
{
    static char in[512], want[512];

    for (size_t i = 0; i < ARRAY_SIZE(smuggle); i++) {
        bool bare = i < 5;
        const char *nl = bare ? "\r\n.\r\n" : ".\r\n";

        snprintf(in, sizeof(in), "foo%sMAIL FROM:<e@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil%s\r\n.\r\n",
                 smuggle[i], smuggle[i]);
        snprintf(want, sizeof(want), "foo%sMAIL FROM:<e@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil%s\r\n",
                 nl, nl);
        expect_dot(&dot_norm, in, want, "", 0);
        expect_dot(&dot_reject, in, want, "", bare ? SMTP_DATA_E_BARE_NEWLINE : 0);
    }
}

Test(smtp_data, dot_line_after_bare_newline_is_content)
{
    /* "\n.\r\n" then the real end */
    expect_dot(&dot_norm, "a\n.\r\n.\r\n", "a\r\n.\r\n", "", 0);
    /* the DATA line itself ended in a bare LF: a first "." line is content */
    static const struct scan_opts loose = { SMTP_DATA_M_DOT, false, false, 0, 0 };
    expect_dot(&loose, ".\r\n.\r\n", ".\r\n", "", 0);
}

Test(smtp_data, cr_cr_lf_dot)
{
    /* "\r\r\n.\r\n": the first CR is bare, then a real CRLF, then the end */
    expect_dot(&dot_norm, "a\r\r\n.\r\n", "a\r\n\r\n", "", 0);
    expect_dot(&dot_reject, "a\r\r\n.\r\n", "", "", SMTP_DATA_E_BARE_NEWLINE);
}

Test(smtp_data, max_line_length_at_and_over)
{
    struct scan_opts o = dot_norm;

    o.max_line = 8; /* 6 octets + CRLF = 8 */
    expect_dot(&o, "123456\r\n.\r\n", "123456\r\n", "", 0);
    expect_dot(&o, "1234567\r\nok\r\n.\r\nX", "", "X", SMTP_DATA_E_LINE_TOO_LONG);
    /* the stuffing dot is not part of the line */
    expect_dot(&o, "..23456\r\n.\r\n", ".23456\r\n", "", 0);
    o.mode = SMTP_DATA_M_RAW;
    {
        static struct result r;

        check_all_ways(&o, "123456\r\n1234567\r\n", 17, &r);
        cr_assert_eq(r.errors, SMTP_DATA_E_LINE_TOO_LONG);
        check_all_ways(&o, "123456\r\n123456\r\n", 16, &r);
        cr_assert_eq(r.errors, 0);
    }
}

Test(smtp_data, message_size_at_and_over)
{
    struct scan_opts o = dot_norm;

    o.max_size = 10; /* "12345678\r\n" */
    expect_dot(&o, "12345678\r\n.\r\n", "12345678\r\n", "", 0);
    expect_dot(&o, "123456789\r\nmore\r\n.\r\nNEXT", "", "NEXT", SMTP_DATA_E_TOO_BIG);
    /* a bare LF stored as CRLF counts as two */
    expect_dot(&o, "123456789\n\r\n.\r\n", "", "", SMTP_DATA_E_TOO_BIG);
}

Test(smtp_data, bdat_raw_no_dot_handling)
{
    static struct result r;
    static const char in[] = "..\r\n.\r\nx\ny\rz";

    check_all_ways(&raw_norm, in, sizeof(in) - 1, &r);
    cr_assert(r.end);
    cr_assert_eq(r.consumed, sizeof(in) - 1);
    cr_assert_str_eq(r.out, "..\r\n.\r\nx\r\ny\r\nz");
    check_all_ways(&raw_reject, in, sizeof(in) - 1, &r);
    cr_assert_eq(r.errors, SMTP_DATA_E_BARE_NEWLINE);
}

Test(smtp_data, bdat_crlf_split_across_chunks)
{
    struct smtp_data d;
    char out[16];
    size_t used, made;

    smtp_data_init(&d, SMTP_DATA_M_RAW, 0, 0, true, true);
    cr_assert_eq(smtp_data_scan(&d, "ab\r", 3, &used, out, sizeof(out), &made), SMTP_DATA_MORE);
    cr_assert_eq(used, 3);
    cr_assert_eq(made, 2);
    cr_assert_eq(d.state, SMTP_DATA_S_CR);
    cr_assert_eq(smtp_data_scan(&d, "\ncd", 3, &used, out + made, sizeof(out) - made, &made),
                 SMTP_DATA_MORE);
    cr_assert_eq(d.errors, 0, "CR | LF across chunks is one CRLF");
    smtp_data_finish(&d);
    cr_assert_eq(smtp_data_scan(&d, "", 0, &used, out, sizeof(out), &made), SMTP_DATA_END);
    cr_assert_eq(d.size, 6);
}

Test(smtp_data, bdat_trailing_cr)
{
    static struct result r;

    check_all_ways(&raw_norm, "ab\r", 3, &r);
    cr_assert_str_eq(r.out, "ab\r\n");
    check_all_ways(&raw_reject, "ab\r", 3, &r);
    cr_assert_eq(r.errors, SMTP_DATA_E_BARE_NEWLINE);
}

Test(smtp_data, random_bodies_split_anywhere)
{
    static char in[300];
    static struct result r;
    static const char alphabet[] = "ab.\r\n\r\n..x";

    srand(12345);
    for (int iter = 0; iter < 60; iter++) {
        size_t n = (size_t)(rand() % 120);

        for (size_t i = 0; i < n; i++)
            in[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        memcpy(in + n, "\r\n.\r\n", 5);
        n += 5;
        check_all_ways(&dot_norm, in, n, &r);
        cr_assert(r.end);
        /* never past the first real CRLF.CRLF (or a leading ".\r\n") */
        for (size_t i = 0; i + 5 <= r.consumed; i++)
            cr_assert(memcmp(in + i, "\r\n.\r\n", 5) != 0 || i + 5 == r.consumed);
        /* the stored text is strict CRLF: no bare CR, no bare LF */
        for (size_t i = 0; i < r.len; i++) {
            if (r.out[i] == '\r')
                cr_assert(i + 1 < r.len && r.out[i + 1] == '\n');
            if (r.out[i] == '\n')
                cr_assert(i > 0 && r.out[i - 1] == '\r');
        }
        check_all_ways(&dot_reject, in, n, &r);
        cr_assert(r.end);
    }
}
