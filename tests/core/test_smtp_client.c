/*
 * Tests for core/smtp_client.c: the sans-I/O outbound SMTP/LMTP client driven
 * by a fake driver and a scripted fake server. The driver (struct fake)
 * records every send() call and its bytes, serves the body from memory in
 * fixed-size chunks (optionally "not read yet", or failing), lends a limited
 * output room when asked, and logs every callback. Server bytes are fed
 * whole, byte by byte or in seeded random pieces, each piece ending at a
 * PROT_NONE page; the scenarios below must give the same bytes and events
 * in every mode.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/compiler.h"
#include "core/envelope.h"
#include "core/smtp_client.h"
#include "support/guard.h"

#define TX_INIT (1u << 16) /* the output record grows from here */
#define LOG_CAP (1u << 16)
#define RMAX    512

enum feed_mode {
    FEED_WHOLE = 0,
    FEED_BYTES,
    FEED_RANDOM,
};

struct result {
    bool done;
    enum smtp_rcpt_status st;
    unsigned code;
    bool synthetic;
    char enh[SMTP_CLIENT_ENH_MAX];
    char text[SMTP_CLIENT_TEXT_MAX + 1];
};

struct fake {
    struct smtp_client c;
    char *tx; /* everything sent, NUL-terminated */
    size_t txlen, txcap, seen;
    unsigned nsend, nsend_seen;
    size_t last_send; /* octets of the last send() */
    size_t room_cap;  /* room lent until the next drain(); 0: unlimited */
    size_t room_left;
    struct guard bguard;
    const char *body; /* ends at a PROT_NONE page */
    size_t body_len, chunk, avail;
    int body_err;
    size_t body_err_at;
    struct result r[RMAX];
    unsigned nrcpt_done, nmsg, nidle, ndead;
    unsigned ndelivered; /* over all messages */
    struct smtp_msg_summary sum;
    enum smtp_client_end why;
    unsigned dead_code;
    bool dead_null;
    const struct envelope *next; /* handed over from msg_done() */
    int next_rc;
    bool quit_on_idle;
    bool strict; /* assert each recipient is reported once per message */
    enum feed_mode mode;
    uint64_t rng;
    char *log;
    size_t loglen;
};

static const char *const st_name[] = { "DELIVERED", "DEFERRED", "FAILED" };

static void PRINTF(2, 3) logf_(struct fake *f, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(f->log + f->loglen, LOG_CAP - f->loglen, fmt, ap);
    va_end(ap);
    if (n > 0)
        f->loglen = MIN(f->loglen + (size_t)n, LOG_CAP - 1);
}

static char *
fake_tx_space(void *ctx, size_t *room)
{
    struct fake *f = ctx;
    size_t r;

    if (f->txcap - f->txlen < 2 * SMTP_CLIENT_TX_MIN) {
        f->txcap *= 2;
        f->tx = realloc(f->tx, f->txcap);
        cr_assert_not_null(f->tx);
    }
    r = f->txcap - 1 - f->txlen;

    if (f->room_cap != 0)
        r = MIN(r, f->room_left);
    *room = r;
    return r > 0 ? f->tx + f->txlen : NULL;
}

static void
fake_send(void *ctx, const char *p, size_t n)
{
    struct fake *f = ctx;

    cr_assert_eq(p, f->tx + f->txlen, "send() of bytes not at tx_space()");
    cr_assert_gt(n, 0);
    cr_assert_lt(f->txlen + n, f->txcap);
    if (f->room_cap != 0) {
        cr_assert_leq(n, f->room_left, "send() beyond the room lent");
        f->room_left -= n;
    }
    f->txlen += n;
    f->tx[f->txlen] = '\0';
    f->nsend++;
    f->last_send = n;
    logf_(f, "send %zu\n", n);
}

static ssize_t
fake_body(void *ctx, uint64_t off, const char **p)
{
    struct fake *f = ctx;
    size_t end;

    cr_assert_lt(off, f->body_len, "body() past the end");
    if (f->body_err != 0 && off >= f->body_err_at)
        return f->body_err;
    if (off >= f->avail)
        return -EAGAIN;
    end = f->avail;
    if (f->chunk != 0)
        end = MIN(end, (off / f->chunk + 1) * f->chunk);
    *p = f->body + off;
    return (ssize_t)(end - off);
}

static void
fake_rcpt_done(void *ctx, uint32_t idx, enum smtp_rcpt_status st, const struct smtp_reply *r)
{
    struct fake *f = ctx;
    struct result *res;

    cr_assert_lt(idx, RMAX);
    res = &f->r[idx];
    if (f->strict)
        cr_assert(!res->done, "recipient %u reported twice", idx);
    if (st == SMTP_RCPT_DELIVERED) {
        /* never delivered unless the data and its end went out */
        const char *data = NULL;

        for (const char *p = f->tx; (p = strstr(p, "DATA\r\n")) != NULL; p++)
            data = p;
        cr_assert_not_null(data, "delivered without DATA");
        cr_assert_not_null(strstr(data, "\r\n.\r\n"), "delivered without the end of data");
    }
    cr_assert_eq(strlen(r->text), r->len);
    res->done = true;
    res->st = st;
    res->code = r->code;
    res->synthetic = r->synthetic;
    memcpy(res->enh, r->enh, sizeof(res->enh));
    memcpy(res->text, r->text, sizeof(res->text));
    f->nrcpt_done++;
    f->ndelivered += st == SMTP_RCPT_DELIVERED;
    logf_(f, "rcpt %u %s %u %s%s %s\n", idx, st_name[st], r->code, r->synthetic ? "syn " : "",
          r->enh, r->text);
}

static void
fake_msg_done(void *ctx, const struct smtp_msg_summary *s)
{
    struct fake *f = ctx;

    f->nmsg++;
    f->sum = *s;
    logf_(f, "msg %u/%u/%u flags=%x\n", s->ndelivered, s->ndeferred, s->nfailed, s->flags);
    if (f->next != NULL) {
        const struct envelope *e = f->next;

        f->next = NULL;
        memset(f->r, 0, sizeof(f->r));
        f->next_rc = smtp_client_send_message(&f->c, e);
    }
}

static void
fake_idle(void *ctx)
{
    struct fake *f = ctx;

    f->nidle++;
    logf_(f, "idle\n");
    if (f->quit_on_idle)
        smtp_client_quit(&f->c);
}

static void
fake_dead(void *ctx, enum smtp_client_end why, const struct smtp_reply *r)
{
    struct fake *f = ctx;

    f->ndead++;
    cr_assert_eq(f->ndead, 1, "dead() twice");
    f->why = why;
    f->dead_null = r == NULL;
    f->dead_code = r != NULL ? r->code : 0;
    logf_(f, "dead %d %u %s\n", (int)why, f->dead_code, r != NULL ? r->text : "-");
}

static const struct smtp_client_ops fake_ops = {
    .tx_space = fake_tx_space,
    .send = fake_send,
    .body = fake_body,
    .rcpt_done = fake_rcpt_done,
    .msg_done = fake_msg_done,
    .idle = fake_idle,
    .dead = fake_dead,
};

static struct fake *
fake_new_opts(const struct smtp_client_opts *o, enum feed_mode mode, uint64_t seed)
{
    struct fake *f = calloc(1, sizeof(*f));

    cr_assert_not_null(f);
    f->txcap = TX_INIT;
    f->tx = malloc(f->txcap);
    f->log = malloc(LOG_CAP);
    cr_assert(f->tx != NULL && f->log != NULL);
    f->tx[0] = '\0';
    f->log[0] = '\0';
    f->mode = mode;
    f->rng = seed * 0x9e3779b97f4a7c15u + 1;
    f->strict = true;
    cr_assert_eq(smtp_client_init(&f->c, o, &fake_ops, f), 0);
    return f;
}

static struct fake *
fake_new(bool lmtp, enum feed_mode mode, uint64_t seed)
{
    struct smtp_client_opts o = { .lmtp = lmtp, .helo_name = "relay.example" };

    return fake_new_opts(&o, mode, seed);
}

/* A session with a STARTTLS policy, talking to "mx.test". */
static struct fake *
fake_new_tls(bool lmtp, enum smtp_client_tls tls, enum feed_mode mode, uint64_t seed)
{
    struct smtp_client_opts o = {
        .lmtp = lmtp, .helo_name = "relay.example", .tls = (uint8_t)tls, .peer_name = "mx.test"
    };

    return fake_new_opts(&o, mode, seed);
}

static void
fake_free(struct fake *f)
{
    smtp_client_fini(&f->c);
    if (f->bguard.map != NULL)
        guard_release(&f->bguard);
    free(f->tx);
    free(f->log);
    free(f);
}

static uint64_t
rnd(struct fake *f)
{
    f->rng ^= f->rng << 13;
    f->rng ^= f->rng >> 7;
    f->rng ^= f->rng << 17;
    return f->rng;
}

/* The server says s, fed in the fake's mode. */
static void
server_n(struct fake *f, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t k = n - i;

        if (f->mode == FEED_BYTES)
            k = 1;
        else if (f->mode == FEED_RANDOM)
            k = 1 + (size_t)(rnd(f) % MIN(k, (size_t)23));
        smtp_client_input(&f->c, guard_copy(s + i, k), k);
        i += k;
    }
}

static void
server(struct fake *f, const char *s)
{
    server_n(f, s, strlen(s));
}

/* The client sent exactly exp since the last check. */
static void
sent(struct fake *f, const char *exp)
{
    cr_assert_str_eq(f->tx + f->seen, exp, "client sent:\n[%s]\nexpected:\n[%s]", f->tx + f->seen,
                     exp);
    f->seen = f->txlen;
}

static void PRINTF(2, 3) sentf(struct fake *f, const char *fmt, ...)
{
    char exp[8192];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(exp, sizeof(exp), fmt, ap);
    va_end(ap);
    sent(f, exp);
}

/* That many send() calls since the last check. */
static void
sends(struct fake *f, unsigned n)
{
    cr_assert_eq(f->nsend - f->nsend_seen, n, "%u send() calls, expected %u",
                 f->nsend - f->nsend_seen, n);
    f->nsend_seen = f->nsend;
}

/* An envelope: recipients are "addr" or "addr PARAMS", NULL-terminated. */
static void
mkenv(struct envelope *e, const char *sender, const char *mail_params, uint32_t flags, ...)
{
    const char *r;
    va_list ap;

    env_init(e);
    cr_assert_eq(env_put(e, &e->sender, sender, strlen(sender)), 0);
    cr_assert_eq(env_put(e, &e->mail_params, mail_params, strlen(mail_params)), 0);
    e->flags = flags;
    va_start(ap, flags);
    while ((r = va_arg(ap, const char *)) != NULL) {
        const char *sp = strchr(r, ' ');
        struct slice a = slice_make(r, sp != NULL ? (size_t)(sp - r) : strlen(r));
        struct slice p = sp != NULL ? slice_make(sp + 1, strlen(sp + 1)) : slice_make("", 0);

        cr_assert_eq(env_add_rcpt(e, a, p), 0);
    }
    va_end(ap);
}

static void
set_body_n(struct fake *f, struct envelope *e, const char *body, size_t n)
{
    f->body = guard_place(&f->bguard, body, n);
    f->body_len = n;
    f->avail = n;
    e->body_len = n;
}

static void
set_body(struct fake *f, struct envelope *e, const char *body)
{
    set_body_n(f, e, body, strlen(body));
}

static void
send_msg(struct fake *f, const struct envelope *e)
{
    memset(f->r, 0, sizeof(f->r));
    cr_assert_eq(smtp_client_send_message(&f->c, e), 0);
}

static void
expect_rcpt(const struct fake *f, unsigned i, enum smtp_rcpt_status st, unsigned code,
            const char *enh)
{
    cr_assert(f->r[i].done, "recipient %u has no result", i);
    cr_assert_eq(f->r[i].st, st, "recipient %u: %s, expected %s", i, st_name[f->r[i].st],
                 st_name[st]);
    cr_assert_eq(f->r[i].code, code, "recipient %u: code %u, expected %u", i, f->r[i].code, code);
    cr_assert_str_eq(f->r[i].enh, enh);
}

#define GREETING "220 mx.example ESMTP ready\r\n"
#define EHLO_FULL                                                                                  \
    "250-mx.example Hello relay.example\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n"                \
    "250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250-STARTTLS\r\n"                  \
    "250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_NOPIPE "250-mx.example\r\n250-8BITMIME\r\n250 SIZE\r\n"
#define EHLO_BARE   "250 mx.example\r\n"

static void
hello(struct fake *f, const char *ehlo_reply)
{
    server(f, GREETING);
    sent(f, f->c.lmtp ? "LHLO relay.example\r\n" : "EHLO relay.example\r\n");
    server(f, ehlo_reply);
}

/* ---- scenarios (also replayed in every feed mode) ---- */

static const char body1[] = "Subject: hi\r\n\r\n.leading dot\r\n..two\r\nend.\r\n.\r\nlast\r\n";
static const char body1_stuffed[] =
    "Subject: hi\r\n\r\n..leading dot\r\n...two\r\nend.\r\n..\r\nlast\r\n.\r\n";

/* Pipelined SMTP: 250 / 450 / 550 recipients, dot-stuffed body, QUIT. */
static void
scenario_pipelined(struct fake *f)
{
    struct envelope e;

    mkenv(&e, "alice@example.org", "", ENV_F_8BITMIME, "bob@example.net", "carol@example.net",
          "dave@example.net", NULL);
    set_body(f, &e, body1);
    hello(f, EHLO_FULL);
    cr_assert_eq(f->nidle, 1);
    cr_assert(f->c.ext & SMTP_EXT_PIPELINING);
    cr_assert_eq(f->c.size_max, 10485760);
    sends(f, 1);

    send_msg(f, &e);
    sentf(f,
          "MAIL FROM:<alice@example.org> SIZE=%zu BODY=8BITMIME\r\n"
          "RCPT TO:<bob@example.net>\r\nRCPT TO:<carol@example.net>\r\n"
          "RCPT TO:<dave@example.net>\r\nDATA\r\n",
          sizeof(body1) - 1);
    sends(f, 1); /* RFC 2920: the whole group in one write */
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 300000);

    server(f, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
              "450 4.2.0 <carol@example.net>: Recipient address rejected: greylisted\r\n"
              "550 5.1.1 <dave@example.net>: unknown user\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n");
    sent(f, body1_stuffed);
    sends(f, 1); /* body and final "." in one write */
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 600000);
    cr_assert_eq(f->nmsg, 0);
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 450, "4.2.0");
    expect_rcpt(f, 2, SMTP_RCPT_FAILED, 550, "5.1.1");
    cr_assert(!f->r[0].done);

    server(f, "250 2.0.0 Ok: queued as 4XyZ\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    cr_assert_str_eq(f->r[0].text, "Ok: queued as 4XyZ");
    cr_assert_str_eq(f->r[1].text, "<carol@example.net>: Recipient address rejected: greylisted");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->sum.ndelivered, 1);
    cr_assert_eq(f->sum.ndeferred, 1);
    cr_assert_eq(f->sum.nfailed, 1);
    cr_assert_eq(f->sum.flags, SMTP_MSG_F_PIPELINED | SMTP_MSG_F_DATA_SENT);
    cr_assert_eq(f->nidle, 2);
    sent(f, ""); /* no RSET after a completed transaction */

    smtp_client_quit(&f->c);
    sent(f, "QUIT\r\n");
    server(f, "221 2.0.0 Bye\r\n");
    cr_assert_eq(f->ndead, 1);
    cr_assert_eq(f->why, SMTP_END_QUIT);
    cr_assert_eq(f->dead_code, 221);
    env_free(&e);
}

/* Without PIPELINING: one command per write, each after the previous reply. */
static void
scenario_nopipe(struct fake *f)
{
    struct envelope e;

    mkenv(&e, "", "", 0, "bob@example.net", "carol@example.net", NULL);
    set_body(f, &e, "a\r\n");
    hello(f, EHLO_NOPIPE);
    cr_assert_eq(f->c.ext, SMTP_EXT_8BITMIME | SMTP_EXT_SIZE);
    cr_assert_eq(f->c.size_max, 0);
    sends(f, 1);
    send_msg(f, &e);
    sent(f, "MAIL FROM:<> SIZE=3\r\n");
    server(f, "250 ok\r\n");
    sent(f, "RCPT TO:<bob@example.net>\r\n");
    server(f, "550 no such user\r\n");
    sent(f, "RCPT TO:<carol@example.net>\r\n");
    server(f, "250 ok\r\n");
    sent(f, "DATA\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 120000);
    server(f, "354 go ahead\r\n");
    sent(f, "a\r\n.\r\n");
    sends(f, 5);
    server(f, "250 queued\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "");
    expect_rcpt(f, 1, SMTP_RCPT_DELIVERED, 250, "");
    cr_assert_eq(f->sum.flags, SMTP_MSG_F_DATA_SENT);
    cr_assert_eq(f->nidle, 2);
    env_free(&e);
}

/* LMTP: one reply per accepted recipient after the data, in RCPT order. */
static void
scenario_lmtp(struct fake *f)
{
    struct envelope e;

    mkenv(&e, "alice@example.org", "", 0, "a@example.net", "b@example.net", "c@example.net",
          "d@example.net", NULL);
    set_body(f, &e, "hello\r\n");
    hello(f, "250-mx.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
    send_msg(f, &e);
    sent(f, "MAIL FROM:<alice@example.org>\r\nRCPT TO:<a@example.net>\r\n"
            "RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n"
            "RCPT TO:<d@example.net>\r\nDATA\r\n");
    server(f, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n250 2.1.5 ok\r\n"
              "250 2.1.5 ok\r\n354 go\r\n");
    sent(f, "hello\r\n.\r\n");
    cr_assert_eq(f->nmsg, 0);
    server(f, "250 2.0.0 <a> delivered\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    cr_assert(!f->r[2].done);
    server(f, "452 4.2.2 <c> mailbox full\r\n");
    expect_rcpt(f, 2, SMTP_RCPT_DEFERRED, 452, "4.2.2");
    cr_assert_eq(f->nmsg, 0);
    server(f, "552-5.2.2 <d> over quota\r\n552 5.2.2 for good\r\n");
    expect_rcpt(f, 3, SMTP_RCPT_FAILED, 552, "5.2.2");
    cr_assert_str_eq(f->r[3].text, "<d> over quota for good");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "5.1.1");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->nidle, 2);
    sent(f, "");
    env_free(&e);
}

/* Multiline replies everywhere, a two-message session, RSET when needed. */
static void
scenario_reuse(struct fake *f)
{
    struct envelope e1, e2;

    mkenv(&e1, "a@example.org", "", 0, "x@example.net", "y@example.net", NULL);
    mkenv(&e2, "b@example.org", "", 0, "z@example.net", NULL);
    set_body(f, &e1, "one\r\n");
    server(f, "220-mx.example ESMTP\r\n220-no UCE\r\n220 really\r\n");
    sent(f, "EHLO relay.example\r\n");
    server(f, "250-mx.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n");
    send_msg(f, &e1);
    sent(f, "MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.net>\r\nRCPT TO:<y@example.net>\r\n"
            "DATA\r\n");
    /* every recipient refused: DATA gets 554 (RFC 2920), no body, RSET */
    server(f, "250 2.1.0 ok\r\n550-5.1.1 x unknown\r\n550-5.1.1 really\r\n550 5.1.1 unknown\r\n"
              "550 5.7.1 y denied\r\n554 5.5.1 Error: no valid recipients\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->sum.nfailed, 2);
    cr_assert_eq(f->sum.flags, SMTP_MSG_F_PIPELINED);
    cr_assert_str_eq(f->r[0].text, "x unknown really unknown");
    sent(f, "RSET\r\n");
    cr_assert_eq(f->nidle, 1);
    /* handed over while RSET is in flight: starts after its reply */
    set_body(f, &e2, "two\r\n");
    send_msg(f, &e2);
    sent(f, "");
    server(f, "250 2.0.0 ok\r\n");
    sent(f, "MAIL FROM:<b@example.org>\r\nRCPT TO:<z@example.net>\r\nDATA\r\n");
    server(f, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n");
    sent(f, "two\r\n.\r\n");
    server(f, "250-2.0.0 queued\r\n250 2.0.0 as 1234\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    cr_assert_str_eq(f->r[0].text, "queued as 1234");
    cr_assert_eq(f->nmsg, 2);
    cr_assert_eq(f->nidle, 2);
    smtp_client_quit(&f->c);
    sent(f, "QUIT\r\n");
    server(f, "221 bye\r\n");
    cr_assert_eq(f->why, SMTP_END_QUIT);
    env_free(&e1);
    env_free(&e2);
}

#define INJECTED "250-injected\r\n250 PIPELINING\r\n"

/*
 * STARTTLS with `may`: the 220 arrives with replies injected behind it in
 * clear (CVE-2011-0411's mirror), and more plaintext before the handshake is
 * done; none of it is read. After the handshake the first EHLO's extensions
 * are forgotten: its SIZE 3 would refuse this 4-octet message, and the
 * injected PIPELINING would group the commands.
 */
static void
scenario_starttls(struct fake *f)
{
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "hi\r\n");
    send_msg(f, &e); /* handed over before the greeting: it waits for TLS */
    server(f, GREETING);
    sent(f, "EHLO relay.example\r\n");
    server(f, "250-mx.example\r\n250-SIZE 3\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    cr_assert(!smtp_client_tls_wanted(&f->c));
    server(f, "220 2.0.0 Ready to start TLS\r\n" INJECTED);
    cr_assert(smtp_client_tls_wanted(&f->c));
    cr_assert_eq(f->c.tls_dropped, strlen(INJECTED));
    server(f, "354 more plaintext\r\n");
    cr_assert_eq(f->c.tls_dropped, strlen(INJECTED) + 20);
    sent(f, ""); /* nothing in clear after STARTTLS */
    cr_assert_eq(f->nidle, 0);
    cr_assert_eq(f->nrcpt_done, 0);
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 300000); /* the handshake is bounded */
    logf_(f, "tls started, %" PRIu64 " dropped\n", f->c.tls_dropped);
    smtp_client_tls_started(&f->c);
    cr_assert(!smtp_client_tls_wanted(&f->c));
    cr_assert(f->c.tls_active);
    cr_assert_eq(f->c.ext, 0);
    cr_assert_eq(f->c.size_max, 0);
    sent(f, "EHLO relay.example\r\n");
    server(f, "250-mx.example\r\n250 8BITMIME\r\n");
    cr_assert_eq(f->c.ext, SMTP_EXT_8BITMIME);
    sent(f, "MAIL FROM:<a@example.org>\r\n");
    server(f, "250 ok\r\n");
    sent(f, "RCPT TO:<b@example.net>\r\n");
    server(f, "250 ok\r\n");
    sent(f, "RCPT TO:<c@example.net>\r\n");
    server(f, "250 ok\r\n");
    sent(f, "DATA\r\n");
    server(f, "354 go\r\n");
    sent(f, "hi\r\n.\r\n");
    server(f, "250 2.0.0 queued\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    expect_rcpt(f, 1, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    cr_assert_eq(f->nidle, 1);
    cr_assert_eq(f->c.tls_dropped, strlen(INJECTED) + 20); /* nothing dropped in TLS */
    smtp_client_quit(&f->c);
    sent(f, "QUIT\r\n");
    server(f, "221 bye\r\n");
    cr_assert_eq(f->why, SMTP_END_QUIT);
    env_free(&e);
}

/* ---- the tests ---- */

Test(smtp_client, pipelined_conversation)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);

    scenario_pipelined(f);
    fake_free(f);
}

Test(smtp_client, no_pipelining_one_command_at_a_time)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);

    scenario_nopipe(f);
    fake_free(f);
}

Test(smtp_client, lmtp_replies_per_recipient)
{
    struct fake *f = fake_new(true, FEED_WHOLE, 1);

    scenario_lmtp(f);
    fake_free(f);
}

Test(smtp_client, reuse_with_rset_and_multiline)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);

    scenario_reuse(f);
    fake_free(f);
}

typedef void scenario_fn(struct fake *);

/* Every scenario gives the same bytes and events whatever the input split. */
Test(smtp_client, splits_give_identical_results)
{
    static scenario_fn *const sc[] = { scenario_pipelined, scenario_nopipe, scenario_lmtp,
                                       scenario_reuse, scenario_starttls };

    for (size_t s = 0; s < ARRAY_SIZE(sc); s++) {
        bool lmtp = sc[s] == scenario_lmtp;
        enum smtp_client_tls tls =
            sc[s] == scenario_starttls ? SMTP_CLIENT_TLS_MAY : SMTP_CLIENT_TLS_NONE;
        struct fake *ref = fake_new_tls(lmtp, tls, FEED_WHOLE, 1);

        sc[s](ref);
        for (unsigned run = 0; run < 41; run++) {
            struct fake *f = fake_new_tls(lmtp, tls, run == 0 ? FEED_BYTES : FEED_RANDOM, run);

            sc[s](f);
            cr_assert_str_eq(f->tx, ref->tx, "scenario %zu run %u: bytes differ", s, run);
            cr_assert_str_eq(f->log, ref->log, "scenario %zu run %u: events differ", s, run);
            fake_free(f);
        }
        fake_free(ref);
    }
}

Test(smtp_client, helo_fallback_on_5xx)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "RET=HDRS", ENV_F_8BITMIME, "b@example.net NOTIFY=NEVER", NULL);
    set_body(f, &e, "x\r\n");
    server(f, GREETING);
    sent(f, "EHLO relay.example\r\n");
    server(f, "502-5.5.2 what\r\n502 5.5.2 EHLO not understood\r\n");
    sent(f, "HELO relay.example\r\n");
    cr_assert_eq(f->nidle, 0);
    server(f, "250 mx.example\r\n");
    cr_assert_eq(f->nidle, 1);
    cr_assert_eq(f->c.ext, 0);
    send_msg(f, &e);
    sent(f, "MAIL FROM:<a@example.org>\r\n"); /* no SIZE, BODY or DSN without EHLO */
    server(f, "250 ok\r\n");
    sent(f, "RCPT TO:<b@example.net>\r\n");
    server(f, "250 ok\r\n");
    sent(f, "DATA\r\n");
    server(f, "354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 ok\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "");
    cr_assert_eq(f->sum.flags,
                 SMTP_MSG_F_8BIT_NO_EXT | SMTP_MSG_F_DSN_DROPPED | SMTP_MSG_F_DATA_SENT);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, ehlo_4xx_or_helo_5xx_fails_the_session)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    /* a message handed over before the greeting shares the session's fate */
    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    send_msg(f, &e);
    server(f, GREETING);
    sent(f, "EHLO relay.example\r\n");
    server(f, "500 no\r\n");
    sent(f, "HELO relay.example\r\n");
    server(f, "550 5.7.1 go away\r\n");
    sent(f, "QUIT\r\n");
    cr_assert_eq(f->why, SMTP_END_HELO);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.7.1");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "5.7.1");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->nidle, 0);
    fake_free(f);

    f = fake_new(false, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, GREETING);
    server(f, "451 4.3.0 try later\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 451, "4.3.0");
    cr_assert_eq(f->why, SMTP_END_HELO);
    fake_free(f);

    /* LMTP has no HELO: a 5xx to LHLO ends the session */
    f = fake_new(true, FEED_WHOLE, 1);
    server(f, GREETING);
    sent(f, "LHLO relay.example\r\n");
    server(f, "500 5.5.1 what\r\n");
    cr_assert_eq(f->why, SMTP_END_HELO);
    sent(f, "QUIT\r\n");
    fake_free(f);
    env_free(&e);
}

Test(smtp_client, greeting_not_220)
{
    struct envelope e;
    struct fake *f;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    f = fake_new(false, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, "554 5.7.1 no service for you\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 554, "5.7.1");
    cr_assert_eq(f->why, SMTP_END_GREETING);
    cr_assert_eq(f->dead_code, 554);
    sent(f, "QUIT\r\n");
    fake_free(f);

    f = fake_new(false, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, "450 busy\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 450, "");
    fake_free(f);

    f = fake_new(false, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, "421 4.3.2 too many connections\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.3.2");
    cr_assert_eq(f->why, SMTP_END_421);
    sent(f, "");
    fake_free(f);

    /* not a reply at all, or a 2xx that is not 220: protocol error, temporary */
    f = fake_new(false, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, "SSH-2.0-OpenSSH_9.2\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.5.0");
    cr_assert(f->r[0].synthetic);
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);

    f = fake_new(false, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, "250 hi\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.5.0");
    fake_free(f);
    env_free(&e);
}

Test(smtp_client, size_8bitmime_smtputf8_dsn_parameters)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e,
          "al\xc3\xad"
          "ce@example.org",
          "SIZE=99 BODY=8BITMIME RET=FULL ENVID=abc+2Bx XYZ=1", ENV_F_8BITMIME | ENV_F_SMTPUTF8,
          "b@example.net NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x", "c@example.net XFOO=bar", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, EHLO_FULL);
    send_msg(f, &e);
    sent(f, "MAIL FROM:<al\xc3\xad"
            "ce@example.org> SIZE=3 BODY=8BITMIME SMTPUTF8 RET=FULL "
            "ENVID=abc+2Bx\r\n"
            "RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@x\r\n"
            "RCPT TO:<c@example.net>\r\nDATA\r\n");
    env_free(&e);
    fake_free(f);

    /* no 8BITMIME, no DSN offered: sent anyway, flagged, parameters dropped */
    f = fake_new(false, FEED_WHOLE, 1);
    mkenv(&e, "a@example.org", "RET=HDRS", ENV_F_8BITMIME, "b@example.net NOTIFY=SUCCESS", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
    send_msg(f, &e);
    sent(f, "MAIL FROM:<a@example.org> SIZE=3\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 ok\r\n");
    cr_assert_eq(f->sum.flags, SMTP_MSG_F_PIPELINED | SMTP_MSG_F_8BIT_NO_EXT |
                                   SMTP_MSG_F_DSN_DROPPED | SMTP_MSG_F_DATA_SENT);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, smtputf8_needed_but_not_offered_fails_5_6_7)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e1, e2;

    /* needed by the flag, or by a non-ASCII address */
    mkenv(&e1, "a@example.org", "SMTPUTF8", ENV_F_SMTPUTF8, "b@example.net", NULL);
    mkenv(&e2, "a@example.org", "", 0, "b@example.net", "j\xc3\xb6rg@example.net", NULL);
    hello(f, "250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    send_msg(f, &e1);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.6.7");
    cr_assert(f->r[0].synthetic);
    cr_assert_eq(f->nmsg, 1);
    send_msg(f, &e2);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.6.7");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "5.6.7");
    cr_assert_eq(f->nmsg, 2);
    sent(f, ""); /* nothing sent */
    cr_assert_eq(f->nidle, 3);
    env_free(&e1);
    env_free(&e2);
    fake_free(f);
}

Test(smtp_client, over_server_size_fails_5_3_4_without_sending)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "0123456789\r\n");
    hello(f, "250-mx\r\n250 SIZE 10\r\n");
    send_msg(f, &e);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 552, "5.3.4");
    sent(f, "");
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, unusable_addresses_are_refused_locally)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;
    char longaddr[SMTP_CLIENT_CMD_MAX + 10];

    memset(longaddr, 'x', sizeof(longaddr) - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    longaddr[5] = '@';
    mkenv(&e, "a@example.org", "", 0, "evil@x>\r\nRSET", longaddr, "ok@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.3");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "5.1.3");
    sent(f, "MAIL FROM:<a@example.org>\r\nRCPT TO:<ok@example.net>\r\nDATA\r\n");
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n");
    expect_rcpt(f, 2, SMTP_RCPT_DELIVERED, 250, "");
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, all_rcpts_rejected_without_pipelining_no_data)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "secret body\r\n");
    hello(f, EHLO_BARE);
    send_msg(f, &e);
    sent(f, "MAIL FROM:<a@example.org>\r\n");
    server(f, "250 ok\r\n");
    sent(f, "RCPT TO:<b@example.net>\r\n");
    server(f, "550 5.1.1 no\r\n");
    sent(f, "RCPT TO:<c@example.net>\r\n");
    server(f, "451 4.3.0 later\r\n");
    sent(f, "RSET\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.1");
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 451, "4.3.0");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->nidle, 1);
    server(f, "250 ok\r\n");
    cr_assert_eq(f->nidle, 2);
    cr_assert_null(strstr(f->tx, "secret"));
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, all_rcpts_rejected_pipelined_354_anyway)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "secret body\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    sent(f, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    /* a broken server says 354 with no valid recipient: an empty message */
    server(f, "250 ok\r\n550 no\r\n354 go\r\n");
    sent(f, ".\r\n");
    cr_assert_eq(f->nmsg, 1);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "");
    cr_assert_eq(f->nidle, 1);
    server(f, "554 no valid recipients\r\n"); /* ignored; the transaction is over: no RSET */
    sent(f, "");
    cr_assert_eq(f->nidle, 2);
    cr_assert_null(strstr(f->tx, "secret"));
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, mail_refused_pipelined)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    sent(f, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\n"
            "DATA\r\n");
    server(f, "451 4.3.5 sender check failed\r\n");
    /* the 503s that follow must not fail the recipients permanently */
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 451, "4.3.5");
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 451, "4.3.5");
    cr_assert_eq(f->nmsg, 1);
    server(f, "503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 451, "4.3.5");
    sent(f, ""); /* no transaction was opened: no RSET */
    cr_assert_eq(f->nidle, 2);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, data_refused_then_rset)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    f->seen = f->txlen;
    server(f, "250 ok\r\n250 ok\r\n550 c no\r\n554 5.6.0 DATA refused\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 554, "5.6.0");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "");
    sent(f, "RSET\r\n");
    server(f, "250 ok\r\n");
    cr_assert_eq(f->nidle, 2);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, next_message_handed_over_from_msg_done)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e1, e2;

    mkenv(&e1, "a@example.org", "", 0, "b@example.net", NULL);
    mkenv(&e2, "c@example.org", "", 0, "d@example.net", NULL);
    set_body(f, &e1, "x\r\n");
    e2.body_len = e1.body_len;
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e1);
    f->next = &e2;
    f->seen = f->txlen;
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 queued\r\n");
    cr_assert_eq(f->next_rc, 0);
    /* started at once, no RSET, no idle in between */
    sent(f, "MAIL FROM:<c@example.org>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n");
    cr_assert_eq(f->nidle, 1);
    cr_assert_eq(smtp_client_send_message(&f->c, &e1), -EBUSY);
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 queued\r\n");
    cr_assert_eq(f->nmsg, 2);
    cr_assert_eq(f->nidle, 2);
    env_free(&e1);
    env_free(&e2);
    fake_free(f);
}

Test(smtp_client, send_message_errors)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e, none;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    mkenv(&none, "a@example.org", "", 0, NULL);
    cr_assert_eq(smtp_client_send_message(&f->c, &none), -EINVAL);
    hello(f, EHLO_BARE);
    f->quit_on_idle = false;
    smtp_client_quit(&f->c);
    sent(f, "QUIT\r\n");
    cr_assert_eq(smtp_client_send_message(&f->c, &e), -EPIPE);
    server(f, "221 bye\r\n");
    cr_assert_eq(f->why, SMTP_END_QUIT);
    cr_assert_eq(smtp_client_send_message(&f->c, &e), -EPIPE);
    cr_assert(smtp_client_dead(&f->c));
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 0);
    server(f, "250 more after death\r\n"); /* ignored */
    smtp_client_closed(&f->c);
    cr_assert_eq(f->ndead, 1);
    env_free(&e);
    env_free(&none);
    fake_free(f);
}

Test(smtp_client, init_rejects_bad_options)
{
    struct smtp_client c;
    struct smtp_client_opts o = { .helo_name = "has space" };

    cr_assert_eq(smtp_client_init(&c, &o, &fake_ops, NULL), -EINVAL);
    o.helo_name = "";
    cr_assert_eq(smtp_client_init(&c, &o, &fake_ops, NULL), -EINVAL);
    o.helo_name = "a\r\nb";
    cr_assert_eq(smtp_client_init(&c, &o, &fake_ops, NULL), -EINVAL);
    o.helo_name = "ok.example";
    o.max_line = 100;
    cr_assert_eq(smtp_client_init(&c, &o, &fake_ops, NULL), -EINVAL);
    o.max_line = 512;
    o.tls = SMTP_CLIENT_TLS_REQUIRE + 1;
    cr_assert_eq(smtp_client_init(&c, &o, &fake_ops, NULL), -EINVAL);
    o.tls = SMTP_CLIENT_TLS_REQUIRE;
    cr_assert_eq(smtp_client_init(&c, &o, &fake_ops, NULL), 0);
    smtp_client_fini(&c);
}

Test(smtp_client, quit_after_the_current_message)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    smtp_client_quit(&f->c);
    f->seen = f->txlen;
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 ok\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "");
    sent(f, "QUIT\r\n");
    cr_assert_eq(f->nidle, 1);
    /* the server closes without answering QUIT: a normal end */
    smtp_client_closed(&f->c);
    cr_assert_eq(f->why, SMTP_END_QUIT);
    cr_assert(f->dead_null);
    env_free(&e);
    fake_free(f);
}

/* ---- dot-stuffing ---- */

static void
stuff_all(const char *const *chunks, size_t room, char *out, size_t *olen)
{
    bool mid = false;
    size_t o = 0;

    for (size_t c = 0; chunks[c] != NULL; c++) {
        const char *in = chunks[c];
        size_t len = strlen(in), i = 0;

        while (i < len) {
            size_t used, w;

            w = smtp_dotstuff(&mid, in + i, len - i, &used, out + o, room);
            cr_assert(used > 0 || w > 0, "no progress");
            i += used;
            o += w;
        }
    }
    memcpy(out + o, smtp_dotstuff_end(mid).p, smtp_dotstuff_end(mid).len);
    o += smtp_dotstuff_end(mid).len;
    out[o] = '\0';
    *olen = o;
}

Test(smtp_client, dotstuff_lines_and_chunk_boundaries)
{
    static const struct {
        const char *chunks[6];
        const char *out;
    } cases[] = {
        { { "", NULL }, ".\r\n" },
        { { "a\r\n", NULL }, "a\r\n.\r\n" },
        { { "a", NULL }, "a\r\n.\r\n" }, /* not ending in CRLF */
        { { ".\r\n", NULL }, "..\r\n.\r\n" },
        { { ".a\r\nb.\r\n..\r\n", NULL }, "..a\r\nb.\r\n...\r\n.\r\n" },
        { { "a\r\n", ".b\r\n", NULL }, "a\r\n..b\r\n.\r\n" },     /* '.' starts a chunk */
        { { "a\r", "\n.", "b\r\n", NULL }, "a\r\n..b\r\n.\r\n" }, /* LF ends a chunk */
        { { "a.", "\r\n", NULL }, "a.\r\n.\r\n" },                /* '.' ends a chunk, mid-line */
        { { "x\r\n.", NULL }, "x\r\n..\r\n.\r\n" },               /* ends with a lone '.' */
        { { ".", ".", ".", "\r\n", NULL }, "....\r\n.\r\n" },
    };
    char out[256];
    size_t olen;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        stuff_all(cases[i].chunks, 200, out, &olen);
        cr_assert_str_eq(out, cases[i].out, "case %zu", i);
        /* a tiny output room gives the same result */
        stuff_all(cases[i].chunks, 2, out, &olen);
        cr_assert_str_eq(out, cases[i].out, "case %zu with room 2", i);
    }
}

Test(smtp_client, dotstuff_room_one_waits_for_two)
{
    bool mid = false;
    size_t used;
    char out[4];

    cr_assert_eq(smtp_dotstuff(&mid, ".x", 2, &used, out, 1), 0);
    cr_assert_eq(used, 0);
    cr_assert_eq(smtp_dotstuff(&mid, "x.", 2, &used, out, 1), 1);
    cr_assert_eq(used, 1);
    cr_assert(mid);
}

/* Body pulled in small chunks, "." at chunk boundaries, reads that lag, a small output room. */
Test(smtp_client, body_chunks_async_reads_and_flow_control)
{
    static char body[300000];
    static char stuffed[sizeof(body) * 2];
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;
    size_t n = 0, sn = 0, bodystart;
    unsigned drains = 0;

    /* lines of varied length, many starting with '.', some at chunk boundaries */
    while (n < sizeof(body) - 200) {
        size_t len = (n * 7 + 13) % 97;

        if ((n / 3) % 2 == 0) {
            body[n++] = '.';
            stuffed[sn++] = '.';
            stuffed[sn++] = '.';
        }
        for (size_t i = 0; i < len; i++) {
            body[n++] = (char)('a' + i % 26);
            stuffed[sn++] = (char)('a' + i % 26);
        }
        memcpy(body + n, "\r\n", 2);
        memcpy(stuffed + sn, "\r\n", 2);
        n += 2;
        sn += 2;
    }
    memcpy(stuffed + sn, ".\r\n", 4);
    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body_n(f, &e, body, n);
    f->chunk = 4099;
    f->avail = 10000; /* the spool read lags behind */
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    f->seen = f->txlen;
    f->room_cap = SMTP_CLIENT_TX_MIN + 1000;
    f->room_left = f->room_cap;
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    bodystart = f->seen;
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 180000);
    while (drains < 100000 && !(f->txlen >= 3 && memcmp(f->tx + f->txlen - 3, ".\r\n", 3) == 0 &&
                                f->txlen - bodystart == strlen(stuffed))) {
        /* alternately: more body read, or the output drained */
        if (drains++ % 2 == 0) {
            f->avail = MIN(f->avail + 7777, f->body_len);
        } else {
            f->room_left = f->room_cap;
        }
        smtp_client_resume(&f->c);
    }
    cr_assert_eq(f->txlen - bodystart, strlen(stuffed));
    cr_assert(memcmp(f->tx + bodystart, stuffed, strlen(stuffed)) == 0, "stuffed body differs");
    /* batched: far fewer writes than lines, and the last batch holds the end of data */
    cr_assert_lt(f->nsend, 300);
    server(f, "250 ok\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "");
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, final_dot_in_the_same_write_as_the_last_body_bytes)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;
    char body[SMTP_CLIENT_TX_MIN * 3];
    size_t before;

    memset(body, 'a', sizeof(body));
    for (size_t i = 78; i < sizeof(body); i += 80) {
        body[i - 1] = '\r';
        body[i] = '\n';
    }
    body[sizeof(body) - 2] = '\r';
    body[sizeof(body) - 1] = '\n';
    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body_n(f, &e, body, sizeof(body));
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    /* room for exactly the body in one write but not its end marker */
    f->room_cap = sizeof(body);
    f->room_left = f->room_cap;
    f->seen = f->txlen;
    before = f->nsend;
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    cr_assert_eq(f->nsend - before, 1);
    f->room_left = f->room_cap;
    smtp_client_resume(&f->c);
    cr_assert_eq(f->nsend - before, 2);
    /* the second write is the body's tail plus ".\r\n", never the marker alone */
    cr_assert_eq(f->last_send, 5 + 3);
    cr_assert(memcmp(f->tx + f->txlen - 5, "\r\n.\r\n", 5) == 0);
    cr_assert_eq(f->txlen - f->seen, sizeof(body) + 3);
    env_free(&e);
    fake_free(f);
}

/* ---- failures mid-session ---- */

Test(smtp_client, reply_421_mid_transaction)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", "d@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    f->seen = f->txlen;
    server(f, "250 ok\r\n550 5.1.1 b unknown\r\n250 ok\r\n421 4.3.2 shutting down\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.1");
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 421, "4.3.2");
    expect_rcpt(f, 2, SMTP_RCPT_DEFERRED, 421, "4.3.2");
    cr_assert(!f->r[1].synthetic);
    cr_assert_eq(f->why, SMTP_END_421);
    cr_assert_eq(f->nmsg, 1);
    sent(f, "");
    server(f, "250 too late\r\n");
    cr_assert_eq(f->ndead, 1);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, reply_421_while_idle)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);

    hello(f, EHLO_BARE);
    server(f, "421 4.4.2 idle timeout\r\n");
    cr_assert_eq(f->why, SMTP_END_421);
    cr_assert_eq(f->nmsg, 0);
    fake_free(f);
}

Test(smtp_client, connection_lost_mid_body)
{
    struct fake *f = fake_new(true, FEED_WHOLE, 1);
    struct envelope e;
    char body[20000];

    memset(body, 'z', sizeof(body));
    memcpy(body + sizeof(body) - 2, "\r\n", 2);
    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body_n(f, &e, body, sizeof(body));
    f->avail = 5000;
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    server(f, "250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n");
    cr_assert_eq(f->nmsg, 0);
    smtp_client_closed(&f->c);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.4.2");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "");
    cr_assert(f->r[0].synthetic);
    cr_assert_not_null(strstr(f->r[0].text, "lost connection"));
    cr_assert_not_null(strstr(f->r[0].text, "body"));
    cr_assert_eq(f->why, SMTP_END_LOST);
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->sum.flags, SMTP_MSG_F_PIPELINED | SMTP_MSG_F_DATA_SENT);
    f->avail = f->body_len;
    smtp_client_resume(&f->c); /* nothing more */
    cr_assert_eq(f->txlen - f->seen, 5000 + strlen("MAIL FROM:<a@example.org>\r\n"
                                                   "RCPT TO:<b@example.net>\r\n"
                                                   "RCPT TO:<c@example.net>\r\nDATA\r\n"));
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, lmtp_lost_between_data_replies)
{
    struct fake *f = fake_new(true, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    server(f, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 b done\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    smtp_client_closed(&f->c);
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 421, "4.4.2");
    cr_assert_eq(f->sum.ndelivered, 1);
    cr_assert_eq(f->sum.ndeferred, 1);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, timeout_waiting_for_end_of_data_reply)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "x\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 300000); /* the greeting */
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 0); /* idle: the driver's pool decides */
    send_msg(f, &e);
    server(f, "250 ok\r\n250 ok\r\n450 4.2.1 later\r\n354 go\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 600000);
    smtp_client_timeout(&f->c);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.4.1");
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 450, "4.2.1");
    cr_assert_not_null(strstr(f->r[0].text, "end of data"));
    cr_assert_eq(f->why, SMTP_END_TIMEOUT);
    smtp_client_timeout(&f->c); /* no second dead() */
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, timeouts_follow_rfc5321_and_options)
{
    struct smtp_client_opts o = { .helo_name = "r.example",
                                  .timeout_cmd_ms = 1000,
                                  .timeout_data_ms = 2000,
                                  .timeout_block_ms = 3000,
                                  .timeout_data_end_ms = 4000 };
    struct fake *f = fake_new_opts(&o, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "x\r\n");
    f->avail = 0;
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 1000);
    server(f, GREETING);
    server(f, EHLO_BARE);
    send_msg(f, &e);
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 1000);
    server(f, "250 ok\r\n");
    server(f, "250 ok\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 2000);
    server(f, "354 go\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 3000); /* the body read lags */
    f->avail = f->body_len;
    smtp_client_resume(&f->c);
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 4000);
    server(f, "250 ok\r\n");
    smtp_client_quit(&f->c);
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 1000);
    smtp_client_timeout(&f->c);
    cr_assert_eq(f->why, SMTP_END_QUIT);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, body_read_error)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "0123456789\r\n");
    f->chunk = 4;
    f->body_err = -EIO;
    f->body_err_at = 8;
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.3.0");
    cr_assert_eq(f->why, SMTP_END_BODY_ERROR);
    /* no end-of-data marker went out: the server never accepts a truncated message */
    cr_assert_null(strstr(f->tx, "\r\n.\r\n"));
    env_free(&e);
    fake_free(f);
}

/* ---- malformed replies ---- */

Test(smtp_client, overlong_reply_line_is_a_protocol_error)
{
    struct smtp_client_opts o = { .helo_name = "r.example", .max_line = 512 };
    struct fake *f = fake_new_opts(&o, FEED_WHOLE, 1);
    struct envelope e;
    char line[1200];

    /* exactly max_line octets before CRLF: fine */
    memset(line, 'x', sizeof(line));
    memcpy(line, "220 ", 4);
    memcpy(line + 512, "\r\n", 3);
    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    send_msg(f, &e);
    server(f, line);
    sent(f, "EHLO r.example\r\n");
    cr_assert_eq(strlen(f->c.reply.text), 508);
    /* one more: protocol error, without waiting for the LF */
    memcpy(line, "250-", 4);
    memset(line + 4, 'y', 600);
    line[514] = '\0'; /* 514: past 512 octets and a CR */
    server(f, line);
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.5.0");
    cr_assert_not_null(strstr(f->r[0].text, "longer than 512"));
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, multiline_code_change_and_unexpected_replies)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);

    server(f, GREETING);
    server(f, "250-mx\r\n251 PIPELINING\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);

    f = fake_new(false, FEED_WHOLE, 1);
    hello(f, EHLO_BARE);
    server(f, "250 nobody asked\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);

    /* a reply to a command written meanwhile is fine, one nobody asked for is not */
    f = fake_new(false, FEED_WHOLE, 1);
    server(f, GREETING "250 early\r\n");
    cr_assert_eq(f->ndead, 0);
    server(f, "250 extra\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);

    /* separators other than ' ' and '-' and codes out of range */
    static const char *const bad[] = { "220x\r\n",  "22\r\n", "620 x\r\n", "120 x\r\n",
                                       "2a0 x\r\n", "\r\n",   "\n" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        f = fake_new(false, FEED_WHOLE, 1);
        server(f, bad[i]);
        cr_assert_eq(f->why, SMTP_END_PROTOCOL, "case %zu", i);
        fake_free(f);
    }

    /* bare LF line ends and "250" with no text are accepted */
    f = fake_new(false, FEED_WHOLE, 1);
    server(f, "220\n");
    sent(f, "EHLO relay.example\r\n");
    server(f, "250-mx\n250 pipelining\n");
    cr_assert_eq(f->c.ext, SMTP_EXT_PIPELINING);
    cr_assert_eq(f->nidle, 1);
    fake_free(f);
}

Test(smtp_client, reply_text_is_sanitised_and_bounded)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;
    static const char bin[] = "550 5.1.1 a\0b\x01\x7f\xff\r\n";
    char big[3000];

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    server(f, "250 ok\r\n");
    server_n(f, bin, sizeof(bin) - 1);
    cr_assert_eq(f->r[0].code, 550);
    cr_assert_eq(memcmp(f->r[0].text, "a b  \xff", 7), 0);
    memset(big, 'q', sizeof(big));
    memcpy(big, "450-4.7.1 ", 10);
    memcpy(big + 1000, "\r\n450 4.7.1 tail\r\n", 19);
    server(f, big);
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 450, "4.7.1");
    cr_assert_eq(strlen(f->r[1].text), SMTP_CLIENT_TEXT_MAX);
    env_free(&e);
    fake_free(f);
}

/*
 * Random bytes and shuffled reply fragments in every state: no crash (ASan,
 * UBSan), every recipient reported exactly once, one msg_done, one dead.
 */
Test(smtp_client, garbage_never_crashes)
{
    static const char *const frag[] = {
        "250 ok\r\n",
        "354 go\r\n",
        "250-",
        "421 bye\r\n",
        "550 no\r\n",
        "450 later\r\n",
        "\r\n",
        "\n",
        "2",
        "220 hi\r\n",
        "250-PIPELINING\r\n",
        "503 seq\r\n",
        "250 5.1.1\r\n",
        "552-5.2.2 x\r\n",
        "250-SIZE 5\r\n",
        "250-SIZE 99999999999999999999999\r\n",
    };
    char buf[700];

    for (uint64_t seed = 1; seed <= 3000; seed++) {
        struct fake *f = fake_new(seed % 3 == 0, FEED_RANDOM, seed);
        struct envelope e;
        unsigned steps = (unsigned)(rnd(f) % 40);

        f->strict = true;
        mkenv(&e, "a@example.org", "RET=FULL", ENV_F_8BITMIME, "b@example.net NOTIFY=SUCCESS",
              "c@example.net", "d@example.net", NULL);
        set_body(f, &e, ".a\r\nb\r\n");
        f->chunk = 1 + (size_t)(rnd(f) % 4);
        if (rnd(f) % 2) {
            f->room_cap = SMTP_CLIENT_TX_MIN + rnd(f) % 100;
            f->room_left = f->room_cap;
        }
        if (rnd(f) % 4 != 0) {
            server(f, GREETING);
            server(f, rnd(f) % 2 ? EHLO_FULL : EHLO_NOPIPE);
        }
        send_msg(f, &e);
        for (unsigned s = 0; s < steps && f->ndead == 0; s++) {
            uint64_t k = rnd(f) % 10;

            if (k < 5) {
                server(f, frag[rnd(f) % ARRAY_SIZE(frag)]);
            } else if (k < 8) {
                size_t n = (size_t)(rnd(f) % sizeof(buf));

                for (size_t i = 0; i < n; i++)
                    buf[i] = (char)rnd(f);
                server_n(f, buf, n);
            } else if (k == 8) {
                f->room_left = f->room_cap;
                smtp_client_resume(&f->c);
            } else if (rnd(f) % 8 == 0) {
                smtp_client_quit(&f->c);
            }
        }
        if (rnd(f) % 2)
            smtp_client_timeout(&f->c);
        else
            smtp_client_closed(&f->c);
        cr_assert_eq(f->ndead, 1, "seed %" PRIu64, seed);
        cr_assert_eq(f->nmsg, 1, "seed %" PRIu64, seed);
        cr_assert_eq(f->nrcpt_done, 3, "seed %" PRIu64, seed);
        cr_assert_eq(f->sum.ndelivered + f->sum.ndeferred + f->sum.nfailed, 3);
        env_free(&e);
        fake_free(f);
    }
}

/* A pipelined group larger than the room: written in several batches, replies interleaved. */
Test(smtp_client, pipelined_group_split_by_room)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;
    char addr[64], exp[RMAX * 64];
    size_t el = 0, first;
    unsigned nfirst = 0;

    mkenv(&e, "a@example.org", "", 0, NULL);
    for (unsigned i = 0; i < 400; i++) {
        int n = snprintf(addr, sizeof(addr), "recipient-number-%03u@example.net", i);

        cr_assert_eq(env_add_rcpt(&e, slice_make(addr, (size_t)n), slice_make("", 0)), 0);
    }
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    f->room_cap = SMTP_CLIENT_TX_MIN;
    f->room_left = f->room_cap;
    f->nsend_seen = f->nsend;
    send_msg(f, &e);
    sends(f, 1);
    first = f->txlen - f->seen;
    cr_assert_leq(first, SMTP_CLIENT_TX_MIN);
    cr_assert_null(strstr(f->tx + f->seen, "DATA"));
    for (const char *p = f->tx + f->seen; (p = strstr(p, "RCPT TO:")) != NULL; p++)
        nfirst++;
    cr_assert(nfirst > 10 && nfirst < 400);
    /* the server answers what it got so far: MAIL and the first RCPTs */
    server(f, "250 ok\r\n");
    for (unsigned i = 0; i < nfirst; i++)
        server(f, i % 2 ? "250 ok\r\n" : "550 5.1.1 no\r\n");
    for (unsigned k = 0; strstr(f->tx + f->seen, "DATA\r\n") == NULL; k++) {
        cr_assert_lt(k, 100, "DATA never written");
        f->room_left = f->room_cap;
        smtp_client_resume(&f->c);
    }
    el = (size_t)snprintf(exp, sizeof(exp), "MAIL FROM:<a@example.org>\r\n");
    for (unsigned i = 0; i < 400; i++)
        el += (size_t)snprintf(exp + el, sizeof(exp) - el,
                               "RCPT TO:<recipient-number-%03u@example.net>\r\n", i);
    snprintf(exp + el, sizeof(exp) - el, "DATA\r\n");
    sent(f, exp);
    cr_assert_geq(f->nsend - f->nsend_seen, 4);
    f->nsend_seen = f->nsend;
    for (unsigned i = nfirst; i < 400; i++)
        server(f, i % 2 ? "250 ok\r\n" : i < 200 ? "550 5.1.1 no\r\n" : "450 4.2.1 later\r\n");
    f->room_left = f->room_cap;
    server(f, "354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 2.0.0 ok\r\n");
    cr_assert_eq(f->sum.ndelivered, 200);
    cr_assert_eq(f->sum.nfailed, 100);
    cr_assert_eq(f->sum.ndeferred, 100);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.1");
    expect_rcpt(f, 1, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    expect_rcpt(f, 398, SMTP_RCPT_DEFERRED, 450, "4.2.1");
    expect_rcpt(f, 399, SMTP_RCPT_DELIVERED, 250, "2.0.0");
    env_free(&e);
    fake_free(f);
}

/* MAIL refused while the rest of the group waits for room: the rest is never written. */
Test(smtp_client, mail_refused_mid_group)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;
    char addr[64];
    unsigned written;

    mkenv(&e, "a@example.org", "", 0, NULL);
    for (unsigned i = 0; i < 300; i++) {
        int n = snprintf(addr, sizeof(addr), "recipient-number-%03u@example.net", i);

        cr_assert_eq(env_add_rcpt(&e, slice_make(addr, (size_t)n), slice_make("", 0)), 0);
    }
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    f->room_cap = SMTP_CLIENT_TX_MIN;
    f->room_left = f->room_cap;
    send_msg(f, &e);
    written = 0;
    for (const char *p = f->tx + f->seen; (p = strstr(p, "RCPT TO:")) != NULL; p++)
        written++;
    cr_assert(written > 10 && written < 300);
    f->seen = f->txlen;
    server(f, "550 5.7.1 sender refused\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->sum.nfailed, 300);
    expect_rcpt(f, 299, SMTP_RCPT_FAILED, 550, "5.7.1");
    f->room_left = f->room_cap;
    smtp_client_resume(&f->c);
    sent(f, "");
    for (unsigned i = 0; i < written; i++)
        server(f, "503 5.5.1 need MAIL\r\n");
    cr_assert_eq(f->ndead, 0);
    sent(f, ""); /* no DATA, no RSET */
    cr_assert_eq(f->nidle, 2);
    server(f, "503 one too many\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    env_free(&e);
    fake_free(f);
}

Test(smtp_client, protocol_errors_by_stage)
{
    static const char *const cases[] = {
        "250 ok\r\n250 ok\r\n250 what\r\n",            /* 2xx to DATA */
        "354 ok\r\n",                                  /* 3xx to MAIL */
        "250 ok\r\n354 ok\r\n",                        /* 3xx to RCPT */
        "250 ok\r\n250 ok\r\n354 go\r\n354 again\r\n", /* 3xx to "." */
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct fake *f = fake_new(false, FEED_WHOLE, 1);
        struct envelope e;

        mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
        set_body(f, &e, "x\r\n");
        hello(f, "250-mx\r\n250 PIPELINING\r\n");
        send_msg(f, &e);
        server(f, cases[i]);
        cr_assert_eq(f->why, SMTP_END_PROTOCOL, "case %zu", i);
        expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.5.0");
        env_free(&e);
        fake_free(f);
    }
}

Test(smtp_client, rset_refused_ends_the_session)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e);
    f->seen = f->txlen;
    server(f, "250 ok\r\n250 ok\r\n451 4.3.0 no DATA now\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 451, "4.3.0");
    sent(f, "RSET\r\n");
    server(f, "500 5.5.1 RSET? never heard of it\r\n");
    cr_assert_eq(f->why, SMTP_END_RSET);
    cr_assert_eq(f->dead_code, 500);
    sent(f, "QUIT\r\n");
    env_free(&e);
    fake_free(f);
}

/* A 3xx to RSET is a protocol error, never a recipient's status (found by
   tests/fuzz/fuzz_smtp_client: the waiting message's recipients were deferred with "354"). */
Test(smtp_client, rset_answered_3xx_is_a_protocol_error)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e1, e2;

    mkenv(&e1, "a@example.org", "", 0, "b@example.net", NULL);
    mkenv(&e2, "c@example.org", "", 0, "d@example.net", NULL);
    set_body(f, &e1, "x\r\n");
    hello(f, "250-mx\r\n250 PIPELINING\r\n");
    send_msg(f, &e1);
    f->seen = f->txlen;
    server(f, "250 ok\r\n250 ok\r\n451 4.3.0 no DATA now\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 451, "4.3.0");
    sent(f, "RSET\r\n");
    /* handed over while RSET is in flight */
    send_msg(f, &e2);
    server(f, "354 go ahead\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.5.0");
    cr_assert(f->r[0].synthetic);
    cr_assert_eq(f->nmsg, 2);
    sent(f, "");
    env_free(&e1);
    env_free(&e2);
    fake_free(f);
}

Test(smtp_client, line_limits_exactly)
{
    struct smtp_client_opts o = { .helo_name = "r.example", .max_line = 512 };
    struct fake *f = fake_new_opts(&o, FEED_WHOLE, 1);
    char line[600];

    /* 513 octets then a bare LF: over the limit, caught at the LF */
    memset(line, 'x', sizeof(line));
    memcpy(line, "220 ", 4);
    memcpy(line + 513, "\n", 2);
    server(f, line);
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);

    /* too many lines in one reply */
    f = fake_new(false, FEED_WHOLE, 1);
    for (unsigned i = 0; i < SMTP_CLIENT_LINES_MAX; i++)
        server(f, "220-more\r\n");
    cr_assert_eq(f->ndead, 0);
    server(f, "220 last\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);
}

Test(smtp_client, unusable_sender_or_all_recipients)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e1, e2;

    mkenv(&e1, "a@x>\r\nRCPT TO:<victim@example.net", "", 0, "b@example.net", NULL);
    mkenv(&e2, "a@example.org", "ENVID=\x01", 0, "b@example.net NOTIFY=\r\n", NULL);
    hello(f, EHLO_FULL);
    send_msg(f, &e1);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.7");
    send_msg(f, &e2);
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.7");
    sent(f, "");
    cr_assert_eq(f->nmsg, 2);
    smtp_client_closed(&f->c);
    smtp_client_quit(&f->c); /* after death: nothing */
    cr_assert_eq(f->why, SMTP_END_LOST);
    env_free(&e1);
    env_free(&e2);
    fake_free(f);
}

Test(smtp_client, names_for_logs)
{
    cr_assert_str_eq(smtp_client_end_str(SMTP_END_TIMEOUT), "timeout");
    cr_assert_str_eq(smtp_client_end_str(SMTP_END_RSET), "rset");
    cr_assert_str_eq(smtp_client_end_str(SMTP_END_TLS), "tls");
    cr_assert_str_eq(smtp_client_end_str((enum smtp_client_end)99), "unknown");
    cr_assert_str_eq(smtp_rcpt_status_str(SMTP_RCPT_DEFERRED), "deferred");
}

Test(smtp_client, odd_ehlo_and_status_codes)
{
    struct fake *f = fake_new(false, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@x\r\n", NULL);
    hello(f, "250-mx\r\n250-SIZE 99999999999999999999999\r\n250 PIPELINING\r\n");
    cr_assert_eq(f->c.size_max, 0); /* absurd: no limit */
    cr_assert(f->c.ext & SMTP_EXT_SIZE);
    send_msg(f, &e); /* no usable recipient: nothing sent */
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "5.1.3");
    sent(f, "");
    env_free(&e);
    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", "d@example.net",
          "e@example.net", NULL);
    set_body(f, &e, "x\r\n");
    send_msg(f, &e);
    /* not enhanced codes: wrong class, too many digits, no detail, no space after */
    server(f, "250 ok\r\n550 4.1.1 wrong class\r\n550 5.1234.1 long\r\n550 5.1 short\r\n"
              "550 5.1.1x glued\r\n554 no recipients\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_FAILED, 550, "");
    cr_assert_str_eq(f->r[0].text, "4.1.1 wrong class");
    expect_rcpt(f, 1, SMTP_RCPT_FAILED, 550, "");
    expect_rcpt(f, 2, SMTP_RCPT_FAILED, 550, "");
    expect_rcpt(f, 3, SMTP_RCPT_FAILED, 550, "");
    cr_assert_str_eq(f->r[3].text, "5.1.1x glued");
    env_free(&e);
    fake_free(f);

    f = fake_new(false, FEED_WHOLE, 1);
    server(f, GREETING);
    server(f, "354 what\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    fake_free(f);
}

/*
 * A random but well-formed server: each step answers with a random code
 * (sometimes multiline), or the driver resumes, hands over a message or
 * quits. Invariants: every recipient reported exactly once per message, one
 * msg_done per message, one dead, and "delivered" only after the end of data
 * went out (checked in fake_rcpt_done).
 */
Test(smtp_client, random_server_keeps_the_invariants)
{
    static const char *const codes[] = { "220", "221", "250", "251", "354", "421", "450",
                                         "451", "452", "500", "503", "550", "552", "554" };
    static const char *const ehlo[] = { EHLO_FULL, EHLO_NOPIPE, EHLO_BARE,
                                        "250-mx\r\n250 PIPELINING\r\n", "502 no\r\n" };
    unsigned delivered = 0, sessions_with_data = 0;

    for (uint64_t seed = 1; seed <= 2000; seed++) {
        struct fake *f = fake_new(seed % 4 == 0, FEED_RANDOM, seed);
        struct envelope env[2];
        unsigned handed = 0, nrcpt[2];
        unsigned steps = 10 + (unsigned)(rnd(f) % 60);

        for (int m = 0; m < 2; m++) {
            char addr[8][32];
            const char *a[8] = { NULL };

            nrcpt[m] = 1 + (unsigned)(rnd(f) % 6);
            for (unsigned i = 0; i < nrcpt[m]; i++) {
                snprintf(addr[i], sizeof(addr[i]), "r%u@example.net", i);
                a[i] = addr[i];
            }
            mkenv(&env[m], "a@example.org", "", 0, a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
        }
        set_body(f, &env[0], "line one\r\n.dot\r\nthree\r\n");
        env[1].body_len = env[0].body_len;
        f->chunk = 1 + (size_t)(rnd(f) % 9);
        f->avail = (size_t)(rnd(f) % (f->body_len + 1)); /* the spool read may lag */
        if (rnd(f) % 2 != 0) {
            f->room_cap = SMTP_CLIENT_TX_MIN + (size_t)(rnd(f) % 64);
            f->room_left = f->room_cap;
        }
        if (rnd(f) % 3 == 0) {
            send_msg(f, &env[0]);
            handed++;
        }
        server(f, rnd(f) % 10 ? GREETING : "554 go away\r\n");
        server(f, ehlo[rnd(f) % ARRAY_SIZE(ehlo)]);
        for (unsigned s = 0; s < steps && f->ndead == 0; s++) {
            uint64_t k = rnd(f) % 12;

            if (k < 8 && (f->c.pend_len > 0 || rnd(f) % 16 == 0)) {
                char line[128];
                uint64_t pick = rnd(f) % 8;
                const char *code = pick < 4   ? "250"
                                   : pick < 5 ? "354"
                                              : codes[rnd(f) % ARRAY_SIZE(codes)];
                int n = 0;

                if (rnd(f) % 5 == 0)
                    n = snprintf(line, sizeof(line), "%s-first\r\n", code);
                snprintf(line + n, sizeof(line) - (size_t)n, "%s %c.1.1 text\r\n", code, code[0]);
                server(f, line);
            } else if (k >= 8 && k < 10) {
                f->room_left = f->room_cap;
                f->avail = f->body_len;
                smtp_client_resume(&f->c);
            } else if (f->c.env == NULL && handed < 2 && !f->c.quit_req && rnd(f) % 2 == 0) {
                memset(f->r, 0, sizeof(f->r));
                cr_assert_eq(smtp_client_send_message(&f->c, &env[handed]), 0);
                handed++;
            } else if (k == 11 && rnd(f) % 8 == 0) {
                smtp_client_quit(&f->c);
            }
        }
        if (rnd(f) % 2)
            smtp_client_timeout(&f->c);
        else
            smtp_client_closed(&f->c);
        cr_assert_eq(f->ndead, 1, "seed %" PRIu64, seed);
        cr_assert_eq(f->nmsg, handed, "seed %" PRIu64, seed);
        cr_assert_eq(f->nrcpt_done, (handed > 0 ? nrcpt[0] : 0) + (handed > 1 ? nrcpt[1] : 0),
                     "seed %" PRIu64, seed);
        delivered += f->ndelivered;
        sessions_with_data += strstr(f->tx, "\r\n.\r\n") != NULL;
        env_free(&env[0]);
        env_free(&env[1]);
        fake_free(f);
    }
    /* the random server reaches deep enough to matter */
    cr_log_info("delivered %u, sessions with data %u", delivered, sessions_with_data);
    cr_assert_gt(delivered, 40);
    cr_assert_gt(sessions_with_data, 40);
}

/* ---- STARTTLS (RFC 3207) ---- */

Test(smtp_client, starttls_may_in_every_split)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);

    scenario_starttls(f);
    fake_free(f);
}

/* The 220 alone, then the injection in a later read: dropped just the same. */
Test(smtp_client, starttls_drops_plaintext_in_later_reads)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);

    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "220-go\r\n220 ahead\r\n");
    cr_assert(smtp_client_tls_wanted(&f->c));
    cr_assert_eq(f->c.tls_dropped, 0);
    server(f, "421 4.7.0 injected, must not end the session\r\n");
    cr_assert_eq(f->ndead, 0);
    cr_assert(smtp_client_tls_wanted(&f->c));
    cr_assert_eq(f->c.tls_dropped, strlen("421 4.7.0 injected, must not end the session\r\n"));
    /* a partial line in the same read as the 220 is not kept for later either */
    fake_free(f);

    f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "220 go\r\n250-mx.ex");
    cr_assert_eq(f->c.tls_dropped, 9);
    smtp_client_tls_started(&f->c);
    sent(f, "EHLO relay.example\r\n");
    server(f, "250 mx.example\r\n"); /* would be "250-mx.ex250 mx.example" if kept */
    cr_assert_eq(f->nidle, 1);
    cr_assert_eq(f->ndead, 0);
    fake_free(f);
}

Test(smtp_client, starttls_never_with_policy_none)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_NONE, FEED_WHOLE, 1);

    hello(f, EHLO_FULL);
    cr_assert(f->c.ext & SMTP_EXT_STARTTLS);
    sent(f, "");
    cr_assert_eq(f->nidle, 1);
    cr_assert(!f->c.tls_active);
    fake_free(f);
}

Test(smtp_client, starttls_not_offered_may_goes_on_in_plaintext)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "x\r\n");
    hello(f, "250-mx.example\r\n250 PIPELINING\r\n");
    cr_assert_eq(f->nidle, 1);
    send_msg(f, &e);
    sent(f, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 ok\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "");
    cr_assert(!f->c.tls_active);
    env_free(&e);
    fake_free(f);

    /* after the HELO fallback there is no STARTTLS to offer */
    f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    server(f, GREETING);
    sent(f, "EHLO relay.example\r\n");
    server(f, "502 5.5.2 what\r\n");
    sent(f, "HELO relay.example\r\n");
    server(f, "250 mx.example\r\n");
    cr_assert_eq(f->nidle, 1);
    sent(f, "");
    fake_free(f);
}

Test(smtp_client, starttls_required_but_not_offered_defers_4_7_4)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_REQUIRE, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", "c@example.net", NULL);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 PIPELINING\r\n");
    sent(f, "QUIT\r\n"); /* nothing of the message in clear */
    cr_assert_eq(f->why, SMTP_END_TLS);
    cr_assert_eq(f->nidle, 0);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.7.4");
    expect_rcpt(f, 1, SMTP_RCPT_DEFERRED, 421, "4.7.4");
    cr_assert(f->r[0].synthetic);
    cr_assert_str_eq(f->r[0].text, "TLS is required, but was not offered by host mx.test");
    cr_assert_eq(f->nmsg, 1);
    fake_free(f);

    /* HELO fallback: not offered either */
    f = fake_new_tls(false, SMTP_CLIENT_TLS_REQUIRE, FEED_WHOLE, 1);
    send_msg(f, &e);
    server(f, GREETING);
    sent(f, "EHLO relay.example\r\n");
    server(f, "500 what\r\n");
    sent(f, "HELO relay.example\r\n");
    server(f, "250 mx.example\r\n");
    sent(f, "QUIT\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.7.4");
    cr_assert_eq(f->why, SMTP_END_TLS);
    fake_free(f);

    /* no peer name: the diagnostic still reads */
    {
        struct smtp_client_opts o = { .helo_name = "relay.example",
                                      .tls = SMTP_CLIENT_TLS_REQUIRE };

        f = fake_new_opts(&o, FEED_WHOLE, 1);
        send_msg(f, &e);
        hello(f, EHLO_BARE);
        cr_assert_str_eq(f->r[0].text, "TLS is required, but was not offered by the next hop");
        fake_free(f);
    }
    env_free(&e);
}

Test(smtp_client, starttls_refused_may_plaintext_require_defers)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    set_body(f, &e, "x\r\n");
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "454 4.7.0 TLS not available due to temporary reason\r\n");
    /* Postfix `may`: this session goes on in clear, with the EHLO reply it has */
    sent(f, "MAIL FROM:<a@example.org> SIZE=3\r\nRCPT TO:<b@example.net>\r\nDATA\r\n");
    server(f, "250 ok\r\n250 ok\r\n354 go\r\n");
    sent(f, "x\r\n.\r\n");
    server(f, "250 ok\r\n");
    expect_rcpt(f, 0, SMTP_RCPT_DELIVERED, 250, "");
    cr_assert(!f->c.tls_active);
    fake_free(f);

    f = fake_new_tls(false, SMTP_CLIENT_TLS_REQUIRE, FEED_WHOLE, 1);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "554 5.5.1 Error: TLS already active\r\n");
    sent(f, "QUIT\r\n");
    cr_assert_eq(f->why, SMTP_END_TLS);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.7.4"); /* deferred, never failed */
    cr_assert_str_eq(f->r[0].text, "TLS is required, but host mx.test refused STARTTLS: 554 "
                                   "5.5.1 Error: TLS already active");
    fake_free(f);

    /* 421 to STARTTLS: the usual end; an odd code is a protocol error */
    f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "421 4.3.2 shutting down\r\n");
    cr_assert_eq(f->why, SMTP_END_421);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.3.2");
    fake_free(f);

    f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "250 sure\r\n");
    cr_assert_eq(f->why, SMTP_END_PROTOCOL);
    cr_assert(!smtp_client_tls_wanted(&f->c));
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.5.0");
    cr_assert_not_null(strstr(f->r[0].text, "250 to STARTTLS"));
    fake_free(f);
    env_free(&e);
}

Test(smtp_client, starttls_handshake_failure_defers_4_7_5)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "220 go\r\n");
    smtp_client_tls_failed(&f->c, "handshake: certificate verification failed: Hostname mismatch");
    sent(f, ""); /* no QUIT in clear into a half-made TLS session */
    cr_assert_eq(f->why, SMTP_END_TLS);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.7.5");
    cr_assert_str_eq(f->r[0].text, "TLS handshake failed: handshake: certificate verification "
                                   "failed: Hostname mismatch");
    cr_assert(smtp_client_dead(&f->c));
    cr_assert(!smtp_client_tls_wanted(&f->c));
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 0);
    smtp_client_tls_failed(&f->c, "again"); /* no second dead() */
    fake_free(f);

    /* a TLS error later on, mid-transaction */
    f = fake_new_tls(false, SMTP_CLIENT_TLS_REQUIRE, FEED_WHOLE, 1);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    server(f, "220 go\r\n");
    sent(f, "STARTTLS\r\n");
    smtp_client_tls_started(&f->c);
    sent(f, "EHLO relay.example\r\n");
    server(f, "250 mx.example\r\n"); /* no STARTTLS now: fine, TLS is on */
    sent(f, "MAIL FROM:<a@example.org>\r\n");
    smtp_client_tls_failed(&f->c, "read: bad record mac");
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.7.5");
    cr_assert_str_eq(f->r[0].text, "TLS error after MAIL FROM: read: bad record mac");
    cr_assert_eq(f->why, SMTP_END_TLS);
    fake_free(f);

    /* after QUIT went out a TLS error is just the close */
    f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    server(f, "220 go\r\n");
    smtp_client_tls_started(&f->c);
    server(f, "250 mx.example\r\n");
    smtp_client_quit(&f->c);
    cr_assert_not_null(strstr(f->tx, "QUIT\r\n"));
    smtp_client_tls_failed(&f->c, "closed by the peer");
    cr_assert_eq(f->why, SMTP_END_QUIT);
    fake_free(f);
    env_free(&e);
}

Test(smtp_client, starttls_timeout_or_lost_during_handshake)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    struct envelope e;

    mkenv(&e, "a@example.org", "", 0, "b@example.net", NULL);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    server(f, "220 go\r\n");
    cr_assert_eq(smtp_client_timeout_ms(&f->c), 300000);
    smtp_client_timeout(&f->c);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.4.1");
    cr_assert_str_eq(f->r[0].text, "timeout during the TLS handshake");
    cr_assert_eq(f->why, SMTP_END_TIMEOUT);
    fake_free(f);

    f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);
    send_msg(f, &e);
    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    server(f, "220 go\r\n");
    smtp_client_closed(&f->c);
    expect_rcpt(f, 0, SMTP_RCPT_DEFERRED, 421, "4.4.2");
    cr_assert_str_eq(f->r[0].text, "lost connection during the TLS handshake");
    cr_assert_eq(f->why, SMTP_END_LOST);
    fake_free(f);
    env_free(&e);
}

/* LMTP over TCP: LHLO, STARTTLS, LHLO again. A quit asked for during the
   handshake waits for the second LHLO's reply. */
Test(smtp_client, starttls_lmtp_and_quit_during_handshake)
{
    struct fake *f = fake_new_tls(true, SMTP_CLIENT_TLS_REQUIRE, FEED_WHOLE, 1);

    hello(f, "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    sent(f, "STARTTLS\r\n");
    server(f, "220 go\r\n");
    smtp_client_quit(&f->c);
    sent(f, "");
    smtp_client_tls_started(&f->c);
    sent(f, "LHLO relay.example\r\n");
    server(f, "250-mx.example\r\n250 PIPELINING\r\n");
    sent(f, "QUIT\r\n");
    cr_assert_eq(f->nidle, 0);
    server(f, "221 bye\r\n");
    cr_assert_eq(f->why, SMTP_END_QUIT);
    fake_free(f);
}

Test(smtp_client, starttls_started_only_when_wanted, .signal = SIGABRT)
{
    struct fake *f = fake_new_tls(false, SMTP_CLIENT_TLS_MAY, FEED_WHOLE, 1);

    hello(f, "250-mx.example\r\n250 STARTTLS\r\n");
    smtp_client_tls_started(&f->c); /* STARTTLS has no 220 yet: a driver bug */
}
