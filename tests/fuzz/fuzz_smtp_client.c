/*
 * fuzz_smtp_client: the sans-I/O SMTP/LMTP client (core/smtp_client.h) fed
 * arbitrary server bytes, by a fake driver whose behaviour the input chooses.
 *
 * Input: 8 header octets, then the server's bytes.
 *   c0  bit 0 LMTP, 1 max_line 512, 2 QUIT when idle with nothing left,
 *       3-4 messages to send (1..4), 5 the first message is handed over
 *       before the greeting, 6 the session ends with a timeout (else the
 *       connection closes), 7 the next message is handed over from msg_done()
 *       (else from idle())
 *   c1  recipients of message k: 1 + ((c1 >> 2k) & 3)
 *   c2  envelopes: bit 0 BODY=8BITMIME, 1 SMTPUTF8, 2 a UTF-8 sender, 3 DSN
 *       parameters, 4 a recipient with a CR in it, 5 an over-long recipient,
 *       6 the null sender, 7 a recipient with a space in its parameters
 *   c3  bodies: low 3 bits pick the first message's body (the next ones
 *       follow), bits 3-5 the octets body() gives per call
 *   c4  output: 0 unlimited, else 4096 + (c4 & 63) * 64 octets lent per
 *       turn; bit 6 body octets arrive late (-EAGAIN until the next turn),
 *       bit 7 body() fails (-EIO) at an offset
 *   c5  the failing offset; c6, c7  split seed and piece size
 *
 * Invariants: every send() is from the room lent, never after dead(); the
 * commands sent are CRLF lines of known verbs with no control octets (an
 * envelope cannot inject commands), one per batch without PIPELINING, none
 * longer than SMTP_CLIENT_CMD_MAX; each data stream is exactly the body
 * dot-stuffed plus the end marker, and core/smtp_data.c's DATA scanner reads
 * it back as the body ending exactly at the marker (or is a lone "." when no
 * body was read); every recipient of a handed-over message gets exactly one
 * rcpt_done() and then the message one msg_done() with matching counts;
 * DELIVERED only after the whole data stream went out and with the server's
 * 2xx, FAILED only with a 5xx, DEFERRED never with a 2xx; reply text is
 * NUL-terminated, control-free, its enhanced code matches its class; dead()
 * comes once, last, with no message left unfinished; the timeout to arm is
 * one of the four configured.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "core/compiler.h"
#include "core/envelope.h"
#include "core/smtp_client.h"
#include "core/smtp_data.h"
#include "fuzz.h"

#define MSG_MAX  4
#define RCPT_MAX 5
#define TMO_CMD  1001u
#define TMO_DATA 1002u
#define TMO_BLK  1003u
#define TMO_END  1004u
#define BIG_BODY 70000u

struct msg {
    struct envelope env;
    char *body; /* strict CRLF text (the spool's bodies are) */
    size_t len;
    bool handed, done, data_done;
    bool reported[RCPT_MAX];
    struct smtp_msg_summary tally;
};

struct drv {
    struct smtp_client c;
    uint8_t h[8];
    struct msg m[MSG_MAX];
    unsigned nmsg, next; /* messages, and the next to hand over */
    int active;          /* the message handed over and not done, or -1 */
    bool quit_on_idle, handover_in_done;

    /* output */
    size_t cap;         /* octets lent per turn; 0: unlimited */
    struct fuzz_buf tx; /* everything sent */
    size_t turn_sent;   /* octets sent this turn */
    char *lent;         /* the last tx_space() */
    size_t lent_room;
    struct fuzz_buf data; /* the data stream being sent */
    unsigned body_calls;  /* body() calls since the last data stream ended */

    /* body() */
    size_t chunk;   /* octets per call; 0: as many as asked */
    bool late;      /* octets beyond `avail` are not read yet */
    uint64_t avail; /* of the active message */
    bool want;      /* body() said -EAGAIN */
    bool fail;      /* -EIO at fail_at */
    uint64_t fail_at;
    unsigned ndead;
};

/* ---- checks ---- */

static void
check_reply(const struct smtp_reply *r)
{
    size_t e = strlen(r->enh);

    FUZZ_CHECK(r->code >= 200 && r->code <= 599, "reply code %u", r->code);
    FUZZ_CHECK(r->len <= SMTP_CLIENT_TEXT_MAX && strlen(r->text) == r->len, "reply text length");
    for (size_t i = 0; i < r->len; i++) {
        unsigned char ch = (unsigned char)r->text[i];

        FUZZ_CHECK(ch >= 0x20 && ch != 0x7f, "control octet %#x in reply text", ch);
    }
    FUZZ_CHECK(e < SMTP_CLIENT_ENH_MAX, "enhanced code length");
    if (e > 0) {
        unsigned dots = 0;

        FUZZ_CHECK(r->enh[0] == (char)('0' + r->code / 100) && r->enh[1] == '.',
                   "enhanced code %s for %u", r->enh, r->code);
        for (size_t i = 0; i < e; i++) {
            FUZZ_CHECK((r->enh[i] >= '0' && r->enh[i] <= '9') || r->enh[i] == '.',
                       "enhanced code %s", r->enh);
            dots += r->enh[i] == '.';
        }
        FUZZ_CHECK(dots == 2 && r->enh[e - 1] != '.', "enhanced code %s", r->enh);
    }
}

/* A batch of commands: CRLF lines of known verbs, no control octets, bounded. */
static void
check_commands(const struct drv *d, const char *p, size_t n)
{
    static const char *const verbs[] = { "EHLO ",     "LHLO ",    "HELO ",    "MAIL FROM:<",
                                         "RCPT TO:<", "DATA\r\n", "RSET\r\n", "QUIT\r\n" };
    size_t i = 0;
    unsigned lines = 0;

    while (i < n) {
        const char *l = p + i, *lf = memchr(l, '\n', n - i);
        size_t len;
        bool known = false;

        FUZZ_CHECK(lf != NULL, "a command without its LF: %.*s", (int)(n - i), l);
        len = (size_t)(lf - l) + 1;
        FUZZ_CHECK(len >= 6 && lf[-1] == '\r', "a command without CRLF: %.*s", (int)len, l);
        FUZZ_CHECK(len <= SMTP_CLIENT_CMD_MAX, "a command of %zu octets", len);
        for (size_t k = 0; k + 2 < len; k++) {
            unsigned char ch = (unsigned char)l[k];

            FUZZ_CHECK(ch >= 0x20 && ch != 0x7f, "control octet %#x in command %.*s", ch, (int)len,
                       l);
        }
        for (size_t k = 0; k < ARRAY_SIZE(verbs); k++)
            known =
                known || (len >= strlen(verbs[k]) && memcmp(l, verbs[k], strlen(verbs[k])) == 0);
        FUZZ_CHECK(known, "unknown command %.*s", (int)len, l);
        lines++;
        i += len;
    }
    FUZZ_CHECK(lines == 1 || (d->c.ext & SMTP_EXT_PIPELINING),
               "%u commands in one batch "
               "without PIPELINING",
               lines);
}

/* The body dot-stuffed, as RFC 5321 4.5.2 says, plus the end marker. */
static void
reference_stream(const char *b, size_t n, struct fuzz_buf *out)
{
    bool bol = true;

    out->len = 0;
    fuzz_buf_put(out, "", 0);
    for (size_t i = 0; i < n; i++) {
        if (bol && b[i] == '.')
            fuzz_buf_put(out, ".", 1);
        fuzz_buf_put(out, b + i, 1);
        bol = b[i] == '\n';
    }
    if (bol)
        fuzz_buf_put(out, ".\r\n", 3);
    else
        fuzz_buf_put(out, "\r\n.\r\n", 5);
}

/* The receiving side's scanner must read the stream back as the body, ending at the end. */
static void
check_scan_back(const char *s, size_t n, const char *body, size_t blen)
{
    struct smtp_data sd;
    size_t used = 0, made = 0, want = blen;
    char *out = malloc(n + 8);
    enum smtp_data_rc rc;

    FUZZ_CHECK(out != NULL, "out of memory");
    smtp_data_init(&sd, SMTP_DATA_M_DOT, 0, 0, true, true);
    rc = smtp_data_scan(&sd, s, n, &used, out, n + 8, &made);
    FUZZ_CHECK(rc == SMTP_DATA_END && used == n && sd.errors == 0,
               "the data stream does not end at its end (rc %d, %zu of %zu, errors %u)", rc, used,
               n, sd.errors);
    if (blen > 0 && body[blen - 1] != '\n')
        want += 2; /* the end marker's CRLF ends the last line */
    FUZZ_CHECK(made == want && memcmp(out, body, blen) == 0, "read back %zu octets, sent %zu", made,
               blen);
    free(out);
}

/* ---- the fake driver ---- */

static void
hand_over(struct drv *d)
{
    int rc;

    if (d->next >= d->nmsg || d->active >= 0)
        return;
    rc = smtp_client_send_message(&d->c, &d->m[d->next].env);
    FUZZ_CHECK(rc == 0 || rc == -EPIPE, "send_message: %d", rc);
    FUZZ_CHECK(rc != -EPIPE || smtp_client_dead(&d->c) || d->c.quit_req, "-EPIPE while alive");
    if (rc != 0)
        return;
    d->m[d->next].handed = true;
    d->active = (int)d->next++;
    d->avail = d->late ? 0 : UINT64_MAX;
}

static char *
fake_tx_space(void *ctx, size_t *room)
{
    struct drv *d = ctx;
    size_t r = d->cap == 0 ? 1u << 16 : d->cap - d->turn_sent;

    FUZZ_CHECK(d->ndead == 0, "tx_space() after dead()");
    if (d->lent == NULL || d->lent_room != r) {
        free(d->lent);
        d->lent = malloc(r ? r : 1); /* exactly the room: ASan sees an overflow */
        FUZZ_CHECK(d->lent != NULL, "out of memory");
        d->lent_room = r;
    }
    *room = r;
    return r > 0 ? d->lent : NULL;
}

static void
fake_send(void *ctx, const char *p, size_t n)
{
    struct drv *d = ctx;
    uint32_t tmo = smtp_client_timeout_ms(&d->c);

    FUZZ_CHECK(d->ndead == 0, "send() after dead()");
    FUZZ_CHECK(p == d->lent && n > 0 && n <= d->lent_room, "send(%zu) outside the room lent (%zu)",
               n, d->lent_room);
    fuzz_buf_put(&d->tx, p, n);
    d->turn_sent += n;
    /* the phase, from the timeout the session wants armed now */
    if (tmo == TMO_BLK || tmo == TMO_END) {
        fuzz_buf_put(&d->data, p, n);
        if (tmo == TMO_END) {
            if (d->body_calls == 0) {
                /* no body read: a lone "." (after a 354 nobody asked for), or an empty body */
                FUZZ_CHECK(d->data.len == 3 && memcmp(d->data.p, ".\r\n", 3) == 0,
                           "data without reading the body: %.*s", (int)d->data.len, d->data.p);
                if (d->active >= 0 && d->m[d->active].len == 0)
                    d->m[d->active].data_done = true;
            } else {
                struct msg *m;
                struct fuzz_buf ref = { 0 };

                FUZZ_CHECK(d->active >= 0, "body read without a message");
                m = &d->m[d->active];
                reference_stream(m->body, m->len, &ref);
                FUZZ_CHECK(ref.len == d->data.len && memcmp(ref.p, d->data.p, ref.len) == 0,
                           "data stream of %zu octets is not the body dot-stuffed (%zu)",
                           d->data.len, ref.len);
                check_scan_back(d->data.p, d->data.len, m->body, m->len);
                fuzz_buf_free(&ref);
                m->data_done = true;
            }
            d->data.len = 0;
            d->body_calls = 0;
        }
    } else {
        FUZZ_CHECK(tmo == TMO_CMD || tmo == TMO_DATA || tmo == 0, "timeout %u", tmo);
        FUZZ_CHECK(d->data.len == 0, "a command in the middle of the data");
        check_commands(d, p, n);
    }
}

static ssize_t
fake_body(void *ctx, uint64_t off, const char **p)
{
    struct drv *d = ctx;
    const struct msg *m;
    size_t n;

    FUZZ_CHECK(d->active >= 0, "body() without a message");
    m = &d->m[d->active];
    FUZZ_CHECK(off < m->len, "body(%llu) past the end (%zu)", (unsigned long long)off, m->len);
    d->body_calls++;
    if (d->fail && off >= d->fail_at)
        return -EIO;
    if (off >= d->avail) {
        d->want = true;
        return -EAGAIN;
    }
    n = (size_t)MIN((uint64_t)m->len, d->avail) - (size_t)off;
    if (d->chunk != 0 && n > d->chunk)
        n = d->chunk;
    *p = m->body + off;
    return (ssize_t)n;
}

static void
fake_rcpt_done(void *ctx, uint32_t idx, enum smtp_rcpt_status st, const struct smtp_reply *r)
{
    struct drv *d = ctx;
    struct msg *m;

    FUZZ_CHECK(d->ndead == 0, "rcpt_done() after dead()");
    FUZZ_CHECK(d->active >= 0, "rcpt_done() without a message");
    m = &d->m[d->active];
    FUZZ_CHECK(idx < m->env.nrcpt, "recipient %u of %u", idx, m->env.nrcpt);
    FUZZ_CHECK(!m->reported[idx], "recipient %u reported twice", idx);
    m->reported[idx] = true;
    check_reply(r);
    switch (st) {
    case SMTP_RCPT_DELIVERED:
        FUZZ_CHECK(r->code / 100 == 2 && !r->synthetic, "delivered with %u", r->code);
        FUZZ_CHECK(m->data_done, "delivered before the data went out");
        m->tally.ndelivered++;
        break;
    case SMTP_RCPT_DEFERRED:
        FUZZ_CHECK(r->code / 100 == 4 || r->code / 100 == 5, "deferred with %u", r->code);
        m->tally.ndeferred++;
        break;
    case SMTP_RCPT_FAILED:
        FUZZ_CHECK(r->code / 100 == 5, "failed with %u", r->code);
        m->tally.nfailed++;
        break;
    default:
        FUZZ_CHECK(0, "status %d", st);
    }
}

static void
fake_msg_done(void *ctx, const struct smtp_msg_summary *sum)
{
    struct drv *d = ctx;
    struct msg *m;

    FUZZ_CHECK(d->ndead == 0, "msg_done() after dead()");
    FUZZ_CHECK(d->active >= 0, "msg_done() without a message");
    m = &d->m[d->active];
    for (uint32_t i = 0; i < m->env.nrcpt; i++)
        FUZZ_CHECK(m->reported[i], "msg_done() before recipient %u", i);
    FUZZ_CHECK(sum->ndelivered == m->tally.ndelivered && sum->ndeferred == m->tally.ndeferred &&
                   sum->nfailed == m->tally.nfailed,
               "summary %u/%u/%u, reported %u/%u/%u", sum->ndelivered, sum->ndeferred, sum->nfailed,
               m->tally.ndelivered, m->tally.ndeferred, m->tally.nfailed);
    FUZZ_CHECK(!(sum->ndelivered > 0) || (sum->flags & SMTP_MSG_F_DATA_SENT),
               "delivered without DATA_SENT");
    m->done = true;
    d->active = -1;
    if (d->handover_in_done)
        hand_over(d);
}

static void
fake_idle(void *ctx)
{
    struct drv *d = ctx;

    FUZZ_CHECK(d->ndead == 0 && d->active < 0, "idle() with a message or after dead()");
    if (d->next < d->nmsg)
        hand_over(d);
    else if (d->quit_on_idle)
        smtp_client_quit(&d->c);
}

static void
fake_dead(void *ctx, enum smtp_client_end why, const struct smtp_reply *r)
{
    struct drv *d = ctx;

    FUZZ_CHECK(d->ndead++ == 0, "dead() twice");
    FUZZ_CHECK(why <= SMTP_END_RSET, "end %d", why);
    FUZZ_CHECK(r != NULL || why == SMTP_END_QUIT, "no reply for end %d", why);
    if (r != NULL)
        check_reply(r);
    FUZZ_CHECK(d->active < 0, "dead() with message %d unfinished", d->active);
    FUZZ_CHECK(strcmp(smtp_client_end_str(why), "unknown") != 0, "end name");
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

/* ---- messages ---- */

static char big_body[BIG_BODY];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t o = 0;

    (void)argc;
    (void)argv;
    /* lines of varying length, every third one starting with a dot */
    for (unsigned i = 0; o + 100 < sizeof(big_body); i++) {
        int n = snprintf(big_body + o, sizeof(big_body) - o, "%s%.*s\r\n", i % 3 ? "" : ".",
                         (int)(i * 7 % 90),
                         "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij"
                         "klmnopqrstuvwxyz0123456789abcdefghijklmn");

        o += (size_t)n;
    }
    memset(big_body + o, 0, sizeof(big_body) - o);
    return 0;
}

/* Body k for message i: fixed texts, a long one, or the server bytes made strict CRLF. */
static void
make_body(struct msg *m, unsigned k, const uint8_t *in, size_t inlen)
{
    static const char *const fixed[] = {
        "",
        "Subject: hi\r\n\r\nHello\r\n",
        ".leading dot\r\n..two\r\nend.\r\n.\r\nlast",
        "a\r\n.\r\nb\r\n.\r\n",
        ".",
        "\xc3\xa9t\xc3\xa9\r\n\r\n",
    };
    struct fuzz_buf b = { 0 };

    if (k < ARRAY_SIZE(fixed)) {
        fuzz_buf_put(&b, fixed[k], strlen(fixed[k]));
    } else if (k == ARRAY_SIZE(fixed)) {
        fuzz_buf_put(&b, big_body, strlen(big_body));
    } else {
        size_t n = MIN(inlen, (size_t)600);

        for (size_t i = 0; i < n; i++) {
            if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
                fuzz_buf_put(&b, "\r", 1);
            fuzz_buf_put(&b, in + i, 1);
            if (in[i] == '\r' && (i + 1 == n || in[i + 1] != '\n'))
                fuzz_buf_put(&b, "\n", 1);
        }
    }
    fuzz_buf_put(&b, "", 0);
    m->body = b.p;
    m->len = b.len;
}

static void
make_env(struct envelope *e, uint8_t c2, unsigned i, unsigned nrcpt, size_t body_len)
{
    static const char over_long[] = "x@";
    const char *sender = (c2 & 64)  ? ""
                         : (c2 & 4) ? "j\xc3\xb8rn@example.org"
                                    : "alice@example.org";
    const char *mp = (c2 & 8) ? "RET=HDRS ENVID=QQ314159" : "";
    char addr[64];

    env_init(e);
    e->id = 0x1000u + i;
    qid_format(e->id, e->qid);
    e->body_len = body_len;
    e->flags = ((c2 & 1) ? ENV_F_8BITMIME : 0) | ((c2 & 2) ? ENV_F_SMTPUTF8 : 0) | ENV_F_ESMTP;
    FUZZ_CHECK(env_put(e, &e->sender, sender, strlen(sender)) == 0, "env_put");
    FUZZ_CHECK(env_put(e, &e->mail_params, mp, strlen(mp)) == 0, "env_put");
    for (unsigned r = 0; r < nrcpt; r++) {
        const char *params = (c2 & 8) ? "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@example.net" : "";
        int n = snprintf(addr, sizeof(addr), "r%u.%u@example.net", i, r);
        struct fuzz_buf big = { 0 };
        struct slice a = slice_make(addr, (size_t)n);

        if ((c2 & 16) && r == 1) {
            a = SLICE_LIT("evil@example.net>\r\nRCPT TO:<x@example.net");
        } else if ((c2 & 32) && r == 2) {
            fuzz_buf_put(&big, over_long, 2);
            for (unsigned k = 0; k < 260; k++)
                fuzz_buf_put(&big, "abcdefgh", 8);
            a = slice_make(big.p, big.len);
        }
        if ((c2 & 128) && r == 0)
            params = "NOTIFY=NEVER\r\nQUIT";
        FUZZ_CHECK(env_add_rcpt(e, a, slice_make(params, strlen(params))) == 0, "env_add_rcpt");
        fuzz_buf_free(&big);
    }
}

/* ---- the run ---- */

static void
driver_turn(struct drv *d)
{
    d->turn_sent = 0; /* the output went out */
    if (d->want) {
        d->want = false;
        d->avail = UINT64_MAX; /* the reads completed */
    }
    smtp_client_resume(&d->c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[] = { 0, 1, 2, 7, 64, 1000, 4096, 65536 };
    static const size_t pieces[] = { 1, 2, 3, 5, 16, 64, 512, 65536 };
    struct fuzz_in in = { data, size };
    struct smtp_client_opts o = {
        .helo_name = "relay.example",
        .timeout_cmd_ms = TMO_CMD,
        .timeout_data_ms = TMO_DATA,
        .timeout_block_ms = TMO_BLK,
        .timeout_data_end_ms = TMO_END,
    };
    static struct drv d;
    uint64_t rng;
    size_t off = 0, max_piece;

    memset(&d, 0, sizeof(d));
    for (size_t i = 0; i < sizeof(d.h); i++)
        d.h[i] = fuzz_u8(&in);
    o.lmtp = d.h[0] & 1;
    o.max_line = (d.h[0] & 2) ? 512 : 0;
    d.quit_on_idle = d.h[0] & 4;
    d.nmsg = 1 + ((d.h[0] >> 3) & 3);
    d.handover_in_done = d.h[0] & 128;
    d.chunk = chunks[(d.h[3] >> 3) & 7];
    d.cap = d.h[4] & 63 ? 4096 + (size_t)(d.h[4] & 63) * 64 : 0;
    d.late = d.h[4] & 64;
    d.fail = d.h[4] & 128;
    d.fail_at = (uint64_t)d.h[5] * 37;
    d.active = -1;
    rng = (uint64_t)d.h[6] << 8 | d.h[7] | 0x10000u;
    max_piece = pieces[d.h[7] >> 5];
    for (unsigned i = 0; i < d.nmsg; i++) {
        unsigned nrcpt = 1 + ((d.h[1] >> (2 * i)) & 3);

        make_body(&d.m[i], (d.h[3] + i) % 8, in.p, in.len);
        make_env(&d.m[i].env, d.h[2], i, nrcpt, d.m[i].len);
    }

    FUZZ_CHECK(smtp_client_init(&d.c, &o, &fake_ops, &d) == 0, "init");
    if (d.h[0] & 32)
        hand_over(&d);
    while (off < in.len && !smtp_client_dead(&d.c)) {
        size_t k = in.len - off, r = 1 + (size_t)(fuzz_rand(&rng) % max_piece);
        char *p;
        uint32_t tmo;

        k = MIN(k, r);
        p = fuzz_dup(in.p + off, k);
        smtp_client_input(&d.c, p, k);
        free(p);
        off += k;
        driver_turn(&d);
        tmo = smtp_client_timeout_ms(&d.c);
        FUZZ_CHECK(tmo == 0 || (tmo >= TMO_CMD && tmo <= TMO_END), "timeout %u", tmo);
    }
    /* the server is silent now: the driver's output drains while the session writes */
    for (unsigned it = 0; it < 1000 && !smtp_client_dead(&d.c); it++) {
        size_t sent = d.tx.len;

        driver_turn(&d);
        if (d.tx.len == sent)
            break;
    }
    if (!smtp_client_dead(&d.c)) {
        if (d.h[0] & 64)
            smtp_client_timeout(&d.c);
        else
            smtp_client_closed(&d.c);
    }
    FUZZ_CHECK(d.ndead == 1 && smtp_client_dead(&d.c), "the session did not end");
    FUZZ_CHECK(d.active < 0, "a message left unfinished");
    for (unsigned i = 0; i < d.nmsg; i++) {
        FUZZ_CHECK(d.m[i].handed == d.m[i].done, "message %u handed over, not done", i);
        env_free(&d.m[i].env);
        free(d.m[i].body);
    }
    smtp_client_fini(&d.c);
    free(d.lent);
    fuzz_buf_free(&d.tx);
    fuzz_buf_free(&d.data);
    return 0;
}
