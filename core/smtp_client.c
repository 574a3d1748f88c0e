/*
 * smtp_client.c: the sans-I/O outbound SMTP / LMTP client session (contract
 * in smtp_client.h).
 *
 * One session belongs to one thread (its worker's). No clock, socket or file:
 * bytes come in through smtp_client_input(), commands and body batches go out
 * through ops->send() into room the driver lends.
 *
 * How replies are matched to commands: every command written is appended to
 * a small run-length FIFO (pend[]): (GREETING,1) (MAIL,1) (RCPT,n) (DATA,1)
 * (DOT,1 or one per accepted recipient for LMTP) (RSET,1) (QUIT,1). A reply
 * pops the front. A reply with nothing pending is a protocol error (except
 * 421, which a server may send at any time), so a desynchronised server can
 * never make a recipient look delivered: that would lose mail.
 *
 * Writing is a separate step (c->wr, run()): a reply only decides what is to
 * be written next; run() writes it when the driver has room. Because run()
 * follows every complete reply, the result depends on the bytes only, never
 * on how the input was split.
 *
 * STARTTLS: the EHLO reply decides (on_hello); the 220 parks the session in
 * CS_STARTTLS, where smtp_client_input() drops everything (what follows the
 * 220 in the same read, and what the driver might feed before the handshake
 * is done), until the driver reports the handshake's outcome.
 *
 * Ownership: the envelope is the driver's, read until ops->msg_done(); the
 * per-recipient state array (rstate) is the session's, grown by realloc only
 * in smtp_client_send_message() and reused for later messages.
 */
#include "core/smtp_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/compiler.h"

/* Session phase (c->state). */
enum client_state {
    CS_GREETING = 0, /* waiting for the 220 */
    CS_HELLO,        /* EHLO/LHLO/HELO (or STARTTLS) to write or answered */
    CS_STARTTLS,     /* STARTTLS got 220: the driver's TLS handshake runs */
    CS_READY,        /* no transaction: start the handed-over message, or idle */
    CS_TXN,          /* a transaction's commands or replies are in flight */
    CS_QUIT,         /* QUIT planned or written */
    CS_DEAD,         /* ops->dead() was called */
};

/* What run() writes next (c->wr). */
enum client_write {
    W_NONE = 0,  /* nothing: waiting for replies or for the driver */
    W_EHLO,      /* EHLO, or LHLO for LMTP */
    W_HELO,      /* HELO after EHLO got 5xx */
    W_STARTTLS,  /* STARTTLS after the EHLO reply offered it */
    W_MAIL,      /* MAIL, then W_RCPT */
    W_RCPT,      /* RCPT for recipient w_rcpt onwards */
    W_DATA,      /* DATA (pipelined: at the end of the group) */
    W_BODY,      /* body batches, then the final "." */
    W_DOT_EMPTY, /* a lone "." after a 354 that should not have come */
    W_RSET,
    W_QUIT,
};

/* Commands awaiting a reply (pend[].kind). */
enum client_pend {
    K_GREETING = 0,
    K_EHLO, /* EHLO or LHLO */
    K_HELO,
    K_STARTTLS,
    K_MAIL,
    K_RCPT,
    K_DATA,
    K_DOT,        /* the final "."; LMTP: one entry per accepted recipient */
    K_DOT_IGNORE, /* "." after a 354 with no accepted recipient: reply ignored */
    K_RSET,
    K_QUIT,
};

/* Per-recipient state (c->rstate[]). */
enum rcpt_state {
    RS_WAIT = 0, /* RCPT to write or answered not yet */
    RS_ACCEPTED, /* 2xx at RCPT: waits for the data's reply */
    RS_FINAL,    /* rcpt_done() called */
    RS_UNSENT,   /* refused locally before RCPT (rcpt_done() called) */
};

#define RESERVE_END 5 /* room kept for "\r\n.\r\n" after the last body octets */

/* ---- small helpers ---- */

static bool
is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool
is_ctl(char ch)
{
    unsigned char u = (unsigned char)ch;

    return u < 0x20 || u == 0x7f;
}

static bool
has_ctl(struct slice s)
{
    for (size_t i = 0; i < s.len; i++) {
        if (is_ctl(s.p[i]))
            return true;
    }
    return false;
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

static bool
pipelining(const struct smtp_client *c)
{
    return (c->ext & SMTP_EXT_PIPELINING) != 0;
}

/* Reply class as a status: 2 delivered, 4 deferred, 5 failed; -1 otherwise. */
static int
status_of(unsigned code)
{
    switch (code / 100) {
    case 2:
        return SMTP_RCPT_DELIVERED;
    case 4:
        return SMTP_RCPT_DEFERRED;
    case 5:
        return SMTP_RCPT_FAILED;
    default:
        return -1;
    }
}

static enum smtp_rcpt_status
status_by_digit(unsigned code)
{
    return code / 100 == 5 ? SMTP_RCPT_FAILED : SMTP_RCPT_DEFERRED;
}

/* ---- the FIFO of commands awaiting replies ---- */

static void
pend_push(struct smtp_client *c, enum client_pend kind, uint32_t n)
{
    if (c->pend_len > 0) {
        struct smtp_client_pend *last =
            &c->pend[(c->pend_head + c->pend_len - 1) % SMTP_CLIENT_PEND];

        if (last->kind == kind) {
            last->n += n;
            return;
        }
    }
    /* at most GREETING/EHLO/HELO or MAIL,RCPT,DATA or DOT,RSET,QUIT are in flight */
    BUG_ON(c->pend_len == SMTP_CLIENT_PEND);
    c->pend[(c->pend_head + c->pend_len) % SMTP_CLIENT_PEND] =
        (struct smtp_client_pend){ .kind = (uint8_t)kind, .n = n };
    c->pend_len++;
}

static enum client_pend
pend_front(const struct smtp_client *c)
{
    return (enum client_pend)c->pend[c->pend_head].kind;
}

static enum client_pend
pend_pop(struct smtp_client *c)
{
    struct smtp_client_pend *f = &c->pend[c->pend_head];
    enum client_pend kind = (enum client_pend)f->kind;

    if (--f->n == 0) {
        c->pend_head = (uint8_t)((c->pend_head + 1) % SMTP_CLIENT_PEND);
        c->pend_len--;
    }
    return kind;
}

/* ---- replies ---- */

/* Append peer text to r->text (bounded; control octets become spaces). */
static void
reply_append(struct smtp_reply *r, const char *p, size_t n)
{
    size_t room;

    if (n == 0)
        return;
    if (r->len > 0 && r->len < SMTP_CLIENT_TEXT_MAX)
        r->text[r->len++] = ' ';
    room = SMTP_CLIENT_TEXT_MAX - r->len;
    n = MIN(n, room);
    for (size_t i = 0; i < n; i++)
        r->text[r->len + i] = is_ctl(p[i]) ? ' ' : p[i];
    r->len = (uint16_t)(r->len + n);
    r->text[r->len] = '\0';
}

static void PRINTF(4, 5)
    syn_set(struct smtp_client *c, unsigned code, const char *enh, const char *fmt, ...)
{
    struct smtp_reply *r = &c->syn;
    va_list ap;
    int n;

    r->code = (uint16_t)code;
    r->synthetic = true;
    snprintf(r->enh, sizeof(r->enh), "%s", enh);
    va_start(ap, fmt);
    n = vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
    r->len = (uint16_t)(n < 0 ? 0 : MIN((size_t)n, SMTP_CLIENT_TEXT_MAX));
    for (size_t i = 0; i < r->len; i++) {
        if (is_ctl(r->text[i]))
            r->text[i] = ' ';
    }
}

/*
 * Length of an RFC 3463 status code (class.subject.detail, class matching the
 * reply's first digit, 1-3 digits each) at the start of p, followed by a
 * space or the end of the line; 0 when there is none.
 */
static size_t
enh_len(const char *p, size_t n, unsigned cls)
{
    size_t i = 2;

    if (n < 5 || p[0] != (char)('0' + cls) || p[1] != '.')
        return 0;
    for (int part = 0; part < 2; part++) {
        size_t start = i;

        while (i < n && i - start < 4 && is_digit(p[i]))
            i++;
        if (i == start || i - start > 3)
            return 0;
        if (part == 0) {
            if (i >= n || p[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < n && p[i] != ' ')
        return 0;
    return i;
}

/* What the stage of the session is called in synthetic replies. */
static const char *
stage_name(const struct smtp_client *c)
{
    static const char *const pend_stage[] = {
        [K_GREETING] = "waiting for the greeting",
        [K_EHLO] = "after EHLO",
        [K_HELO] = "after HELO",
        [K_STARTTLS] = "after STARTTLS",
        [K_MAIL] = "after MAIL FROM",
        [K_RCPT] = "after RCPT TO",
        [K_DATA] = "after DATA",
        [K_DOT] = "after end of data",
        [K_DOT_IGNORE] = "after end of data",
        [K_RSET] = "after RSET",
        [K_QUIT] = "after QUIT",
    };

    if (c->state == CS_STARTTLS)
        return "during the TLS handshake";
    if (c->pend_len > 0)
        return pend_stage[pend_front(c)];
    if (c->wr == W_BODY)
        return "while sending the message body";
    if (c->wr != W_NONE)
        return "while sending commands";
    return "while idle";
}

/* ---- results ---- */

static void
rcpt_final(struct smtp_client *c, uint32_t i, enum smtp_rcpt_status st, const struct smtp_reply *r,
           uint8_t rs)
{
    c->rstate[i] = rs;
    c->nfinal++;
    switch (st) {
    case SMTP_RCPT_DELIVERED:
        c->sum.ndelivered++;
        break;
    case SMTP_RCPT_DEFERRED:
        c->sum.ndeferred++;
        break;
    case SMTP_RCPT_FAILED:
        c->sum.nfailed++;
        break;
    }
    c->ops->rcpt_done(c->ctx, i, st, r);
}

/* Every recipient of the current message not final yet gets (st, r). */
static void
rcpt_final_all(struct smtp_client *c, enum smtp_rcpt_status st, const struct smtp_reply *r)
{
    uint32_t n = c->env->nrcpt;

    for (uint32_t i = 0; i < n; i++) {
        if (c->rstate[i] == RS_WAIT || c->rstate[i] == RS_ACCEPTED)
            rcpt_final(c, i, st, r, RS_FINAL);
    }
}

/* Recipients accepted at RCPT get the data's reply (st, r). */
static void
rcpt_final_accepted(struct smtp_client *c, enum smtp_rcpt_status st, const struct smtp_reply *r)
{
    uint32_t n = c->env->nrcpt;

    for (uint32_t i = 0; i < n; i++) {
        if (c->rstate[i] == RS_ACCEPTED)
            rcpt_final(c, i, st, r, RS_FINAL);
    }
}

/* Called where no loop over rstate is active: msg_done() may hand over the next message. */
static void
check_msg_done(struct smtp_client *c)
{
    struct smtp_msg_summary sum;

    if (c->env == NULL || c->nfinal < c->env->nrcpt)
        return;
    sum = c->sum;
    sum.flags = c->msg_flags;
    c->env = NULL;
    c->msg_started = false;
    c->ops->msg_done(c->ctx, &sum);
}

/* ---- session end ---- */

static void
die(struct smtp_client *c, enum smtp_client_end why, const struct smtp_reply *r)
{
    c->state = CS_DEAD;
    c->wr = W_NONE;
    c->pend_len = 0;
    c->ops->dead(c->ctx, why, r);
}

/*
 * The session fails: the current message's recipients without a final status
 * get (st, r), QUIT goes out when the server is still talking sensibly
 * (polite), and the session dies.
 */
static void
session_fail(struct smtp_client *c, enum smtp_client_end why, enum smtp_rcpt_status st,
             const struct smtp_reply *r, bool polite)
{
    if (c->state == CS_DEAD)
        return;
    c->state = CS_DEAD; /* early: calls from the callbacks below get -EPIPE */
    if (c->env != NULL) {
        rcpt_final_all(c, st, r);
        check_msg_done(c);
    }
    if (polite) {
        size_t room = 0;
        char *p = c->ops->tx_space(c->ctx, &room);

        if (p != NULL && room >= 6) {
            memcpy(p, "QUIT\r\n", 6);
            c->ops->send(c->ctx, p, 6);
        }
    }
    die(c, why, r);
}

static void PRINTF(2, 3) proto_error(struct smtp_client *c, const char *fmt, ...)
{
    char what[SMTP_CLIENT_TEXT_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    syn_set(c, 421, "4.5.0", "protocol error %s: %s", stage_name(c), what);
    session_fail(c, SMTP_END_PROTOCOL, SMTP_RCPT_DEFERRED, &c->syn, false);
}

/* ---- EHLO keywords ---- */

static void
ehlo_keyword(struct smtp_client *c, const char *p, size_t n)
{
    static const struct {
        const char *kw;
        uint32_t bit;
    } kws[] = {
        { "PIPELINING", SMTP_EXT_PIPELINING },
        { "SIZE", SMTP_EXT_SIZE },
        { "8BITMIME", SMTP_EXT_8BITMIME },
        { "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
        { "DSN", SMTP_EXT_DSN },
        { "CHUNKING", SMTP_EXT_CHUNKING },
        { "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES },
        { "STARTTLS", SMTP_EXT_STARTTLS },
    };
    size_t k = 0;
    struct slice kw;

    while (k < n && p[k] != ' ')
        k++;
    kw = slice_make(p, k);
    for (size_t i = 0; i < ARRAY_SIZE(kws); i++) {
        if (!slice_eq_nocase(kw, kws[i].kw))
            continue;
        c->ext |= kws[i].bit;
        if (kws[i].bit == SMTP_EXT_SIZE) {
            uint64_t v = 0;
            size_t j = k;

            while (j < n && p[j] == ' ')
                j++;
            /* "SIZE" alone or "SIZE 0": no fixed limit; an absurd number: none either */
            for (; j < n && is_digit(p[j]); j++) {
                if (v > (UINT64_MAX - 9) / 10) {
                    v = 0;
                    break;
                }
                v = v * 10 + (uint64_t)(p[j] - '0');
            }
            c->size_max = v;
        }
        return;
    }
}

/* ---- reply assembly ---- */

/*
 * One complete line is in keep[] (its first SMTP_CLIENT_KEEP octets; the
 * whole line was llen octets before the LF). Returns true when it ended a
 * reply (c->reply is complete); false for a continuation line or when the
 * line was a protocol error (the session is dead then).
 */
static bool
line_done(struct smtp_client *c)
{
    const char *l = c->keep;
    size_t len = c->llen, kept, tlen, e;
    const char *text;
    unsigned code;
    bool last;

    if (len > 0 && c->lastc == '\r')
        len--;
    c->llen = 0;
    c->lastc = 0;
    if (len > c->max_line) {
        proto_error(c, "reply line longer than %" PRIu32 " octets", c->max_line);
        return false;
    }
    kept = MIN(len, SMTP_CLIENT_KEEP);
    if (len < 3 || l[0] < '2' || l[0] > '5' || !is_digit(l[1]) || !is_digit(l[2])) {
        proto_error(c, "malformed reply line");
        return false;
    }
    code = (unsigned)(l[0] - '0') * 100 + (unsigned)(l[1] - '0') * 10 + (unsigned)(l[2] - '0');
    if (len == 3 || l[3] == ' ') {
        last = true;
    } else if (l[3] == '-') {
        last = false;
    } else {
        proto_error(c, "malformed reply line");
        return false;
    }
    if (c->rlines == 0) {
        c->reply.code = (uint16_t)code;
        c->reply.synthetic = false;
        c->reply.enh[0] = '\0';
        c->reply.len = 0;
        c->reply.text[0] = '\0';
        if (c->pend_len > 0 && pend_front(c) == K_EHLO) {
            c->ext = 0;
            c->size_max = 0;
        }
    } else if (code != c->reply.code) {
        /* a desynchronised server: never guess which command a line answers */
        proto_error(c, "reply code changed within a multiline reply");
        return false;
    }
    if (++c->rlines > SMTP_CLIENT_LINES_MAX) {
        proto_error(c, "more than %d lines in one reply", SMTP_CLIENT_LINES_MAX);
        return false;
    }
    text = l + MIN(kept, (size_t)4);
    tlen = kept - MIN(kept, (size_t)4);
    e = enh_len(text, tlen, code / 100);
    if (e > 0) {
        if (c->rlines == 1) {
            memcpy(c->reply.enh, text, e);
            c->reply.enh[e] = '\0';
        }
        text += e;
        tlen -= e;
        while (tlen > 0 && *text == ' ') {
            text++;
            tlen--;
        }
    }
    if (c->rlines > 1 && code / 100 == 2 && c->pend_len > 0 && pend_front(c) == K_EHLO)
        ehlo_keyword(c, text, tlen);
    reply_append(&c->reply, text, tlen);
    if (last)
        c->rlines = 0;
    return last;
}

/*
 * Take input up to and including the next LF (or all of it). Sets *eol when
 * a line ended. Only the first SMTP_CLIENT_KEEP octets of a line are kept.
 */
static size_t
feed(struct smtp_client *c, const char *buf, size_t len, bool *eol)
{
    const char *lf = memchr(buf, '\n', len);
    size_t n = lf != NULL ? (size_t)(lf - buf) : len;

    if (c->llen < SMTP_CLIENT_KEEP)
        memcpy(c->keep + c->llen, buf, MIN(n, SMTP_CLIENT_KEEP - c->llen));
    if (n > 0)
        c->lastc = buf[n - 1];
    c->llen += n;
    /* +1: the CR before the LF is not part of the limit; decided exactly at the LF */
    if (c->llen > (size_t)c->max_line + 1) {
        proto_error(c, "reply line longer than %" PRIu32 " octets", c->max_line);
        return len;
    }
    *eol = lf != NULL;
    return lf != NULL ? n + 1 : n;
}

/* ---- the reply's meaning, by the command it answers ---- */

static uint32_t
next_sent(const struct smtp_client *c, uint32_t i)
{
    while (i < c->env->nrcpt && c->rstate[i] == RS_UNSENT)
        i++;
    return i;
}

static void
on_greeting(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code == 220) {
        c->state = CS_HELLO;
        c->wr = W_EHLO;
    } else if (r->code / 100 == 4 || r->code / 100 == 5) {
        session_fail(c, SMTP_END_GREETING, status_by_digit(r->code), r, true);
    } else {
        proto_error(c, "greeting %u", r->code);
    }
}

static void
on_hello(struct smtp_client *c, enum client_pend kind, const struct smtp_reply *r)
{
    switch (r->code / 100) {
    case 2:
        if (kind == K_HELO)
            c->ext = 0;
        if (c->tls_policy != SMTP_CLIENT_TLS_NONE && !c->tls_active) {
            if (c->ext & SMTP_EXT_STARTTLS) {
                c->wr = W_STARTTLS; /* the session stays in CS_HELLO until TLS is up */
                break;
            }
            if (c->tls_policy == SMTP_CLIENT_TLS_REQUIRE) {
                syn_set(c, 421, "4.7.4", "TLS is required, but was not offered by %s", c->peer);
                session_fail(c, SMTP_END_TLS, SMTP_RCPT_DEFERRED, &c->syn, true);
                break;
            }
        }
        c->state = CS_READY;
        break;
    case 5:
        if (kind == K_EHLO && !c->lmtp) {
            c->ext = 0;
            c->size_max = 0;
            c->wr = W_HELO;
            break;
        }
        FALLTHROUGH;
    case 4:
        session_fail(c, SMTP_END_HELO, status_by_digit(r->code), r, true);
        break;
    default:
        proto_error(c, "%u to %s", r->code, kind == K_HELO ? "HELO" : c->lmtp ? "LHLO" : "EHLO");
        break;
    }
}

static void
on_starttls(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code == 220) {
        c->state = CS_STARTTLS; /* input is dropped from here: see smtp_client_input() */
    } else if (r->code / 100 == 4 || r->code / 100 == 5) {
        if (c->tls_policy == SMTP_CLIENT_TLS_MAY) {
            c->state = CS_READY; /* Postfix `may`: this session goes on in plaintext */
            return;
        }
        syn_set(c, 421, "4.7.4", "TLS is required, but %s refused STARTTLS: %u %s%s%.200s", c->peer,
                r->code, r->enh, r->enh[0] ? " " : "", r->text);
        session_fail(c, SMTP_END_TLS, SMTP_RCPT_DEFERRED, &c->syn, true);
    } else {
        proto_error(c, "%u to STARTTLS", r->code);
    }
}

static void
on_mail(struct smtp_client *c, const struct smtp_reply *r)
{
    int st = status_of(r->code);

    if (c->env == NULL || !c->msg_started)
        return;
    if (st == SMTP_RCPT_DELIVERED) {
        c->mail_ok = true;
        c->need_rset = true;
    } else if (st > 0) {
        c->mail_failed = true;
        /* pipelined: RCPTs and DATA not written yet never will be; the
           replies to those written (503 need MAIL) are read and ignored */
        if (c->wr == W_RCPT || c->wr == W_DATA)
            c->wr = W_NONE;
        rcpt_final_all(c, (enum smtp_rcpt_status)st, r);
    } else {
        proto_error(c, "%u to MAIL", r->code);
    }
}

static void
on_rcpt(struct smtp_client *c, const struct smtp_reply *r)
{
    int st = status_of(r->code);
    uint32_t i;

    if (st < 0) {
        proto_error(c, "%u to RCPT", r->code);
        return;
    }
    if (c->env == NULL || !c->msg_started || c->mail_failed)
        return;
    i = next_sent(c, c->r_rcpt);
    BUG_ON(i >= c->env->nrcpt); /* the FIFO says an RCPT was written */
    if (st == SMTP_RCPT_DELIVERED) {
        c->rstate[i] = RS_ACCEPTED;
        c->naccepted++;
    } else {
        rcpt_final(c, i, (enum smtp_rcpt_status)st, r, RS_FINAL);
    }
    c->r_rcpt = next_sent(c, i + 1);
    if (!pipelining(c) && c->r_rcpt >= c->env->nrcpt)
        c->wr = c->naccepted > 0 ? W_DATA : W_NONE; /* W_NONE: the transaction ends, RSET */
}

static void
on_data(struct smtp_client *c, const struct smtp_reply *r)
{
    int st = status_of(r->code);
    bool nobody = c->env == NULL || !c->msg_started || c->mail_failed || c->naccepted == 0;

    if (nobody) {
        /* RFC 2920 3.1: with no valid recipient DATA must get 503/554; a
           server that says 354 anyway gets an empty message it must drop */
        if (r->code / 100 == 3)
            c->wr = W_DOT_EMPTY;
        return;
    }
    if (r->code / 100 == 3) {
        c->wr = W_BODY;
        c->body_off = 0;
        c->body_mid_line = false;
        c->msg_flags |= SMTP_MSG_F_DATA_SENT;
    } else if (st == SMTP_RCPT_DEFERRED || st == SMTP_RCPT_FAILED) {
        rcpt_final_accepted(c, (enum smtp_rcpt_status)st, r); /* transaction open: RSET */
    } else {
        proto_error(c, "%u to DATA", r->code);
    }
}

static void
on_dot(struct smtp_client *c, const struct smtp_reply *r)
{
    int st = status_of(r->code);

    if (st < 0) {
        proto_error(c, "%u to end of data", r->code);
        return;
    }
    if (c->pend_len == 0 || pend_front(c) != K_DOT)
        c->need_rset = false; /* the last reply to the data: the transaction is over */
    if (c->env == NULL || !c->msg_started)
        return;
    if (!c->lmtp) {
        rcpt_final_accepted(c, (enum smtp_rcpt_status)st, r);
        return;
    }
    /* RFC 2033 4.2: one reply per accepted recipient, in RCPT order */
    while (c->lmtp_next < c->env->nrcpt && c->rstate[c->lmtp_next] != RS_ACCEPTED)
        c->lmtp_next++;
    BUG_ON(c->lmtp_next >= c->env->nrcpt); /* one K_DOT was pushed per accepted recipient */
    rcpt_final(c, c->lmtp_next++, (enum smtp_rcpt_status)st, r, RS_FINAL);
}

static void
handle_reply(struct smtp_client *c)
{
    const struct smtp_reply *r = &c->reply;
    enum client_pend kind;

    if (c->pend_len > 0 && pend_front(c) == K_QUIT) {
        pend_pop(c);
        die(c, SMTP_END_QUIT, r);
        return;
    }
    /* 421 may come at any time, unasked too (an idle connection timed out) */
    if (r->code == 421) {
        session_fail(c, SMTP_END_421, SMTP_RCPT_DEFERRED, r, false);
        return;
    }
    if (c->pend_len == 0) {
        proto_error(c, "unexpected reply %u %.*s", r->code, (int)MIN(r->len, 100), r->text);
        return;
    }
    kind = pend_pop(c);
    switch (kind) {
    case K_GREETING:
        on_greeting(c, r);
        break;
    case K_EHLO:
    case K_HELO:
        on_hello(c, kind, r);
        break;
    case K_STARTTLS:
        on_starttls(c, r);
        break;
    case K_MAIL:
        on_mail(c, r);
        break;
    case K_RCPT:
        on_rcpt(c, r);
        break;
    case K_DATA:
        on_data(c, r);
        break;
    case K_DOT:
        on_dot(c, r);
        break;
    case K_DOT_IGNORE:
        c->need_rset = false;
        break;
    case K_RSET:
        if (r->code / 100 == 2)
            c->need_rset = false;
        else if (r->code / 100 == 3)
            proto_error(c, "%u to RSET", r->code); /* never a recipient's status */
        else
            session_fail(c, SMTP_END_RSET, SMTP_RCPT_DEFERRED, r, true);
        break;
    case K_QUIT:
        break; /* handled above */
    }
    if (c->state != CS_DEAD)
        check_msg_done(c);
}

/* ---- commands ---- */

/* Output being built: p == NULL counts only (to check the room first). */
struct wbuf {
    char *p;
    size_t len;
};

static void
wb_put(struct wbuf *w, const char *s, size_t n)
{
    if (w->p != NULL)
        memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void
wb_str(struct wbuf *w, const char *s)
{
    wb_put(w, s, strlen(s));
}

/*
 * Pass on the parameters of raw (SP-separated keyword[=value]) whose keyword
 * is one of kw[0..nkw). Returns whether one was found.
 */
static bool
pass_params(struct wbuf *w, struct slice raw, const char *const *kw, size_t nkw)
{
    size_t i = 0;
    bool found = false;

    while (i < raw.len) {
        size_t start, k;
        struct slice key;

        while (i < raw.len && raw.p[i] == ' ')
            i++;
        start = i;
        while (i < raw.len && raw.p[i] != ' ')
            i++;
        if (i == start)
            break;
        k = start;
        while (k < i && raw.p[k] != '=')
            k++;
        key = slice_make(raw.p + start, k - start);
        for (size_t j = 0; j < nkw; j++) {
            if (slice_eq_nocase(key, kw[j])) {
                if (w != NULL) {
                    wb_put(w, " ", 1);
                    wb_put(w, raw.p + start, i - start);
                }
                found = true;
                break;
            }
        }
    }
    return found;
}

static const char *const mail_dsn[] = { "RET", "ENVID" };
static const char *const rcpt_dsn[] = { "NOTIFY", "ORCPT" };

static void
build_mail(const struct smtp_client *c, struct wbuf *w)
{
    const struct envelope *e = c->env;
    struct slice s = env_get(e, e->sender);

    wb_str(w, "MAIL FROM:<");
    wb_put(w, s.p, s.len);
    wb_put(w, ">", 1);
    if (c->ext & SMTP_EXT_SIZE) {
        char num[32];
        int n = snprintf(num, sizeof(num), " SIZE=%" PRIu64, e->body_len);

        wb_put(w, num, (size_t)MAX(n, 0));
    }
    if ((e->flags & ENV_F_8BITMIME) && (c->ext & SMTP_EXT_8BITMIME))
        wb_str(w, " BODY=8BITMIME");
    if (c->utf8 && (c->ext & SMTP_EXT_SMTPUTF8))
        wb_str(w, " SMTPUTF8");
    if (c->ext & SMTP_EXT_DSN)
        pass_params(w, env_get(e, e->mail_params), mail_dsn, ARRAY_SIZE(mail_dsn));
    wb_put(w, "\r\n", 2);
}

static void
build_rcpt(const struct smtp_client *c, uint32_t i, struct wbuf *w)
{
    const struct envelope *e = c->env;
    struct slice a = env_get(e, e->rcpt[i].addr);

    wb_str(w, "RCPT TO:<");
    wb_put(w, a.p, a.len);
    wb_put(w, ">", 1);
    if (c->ext & SMTP_EXT_DSN)
        pass_params(w, env_get(e, e->rcpt[i].params), rcpt_dsn, ARRAY_SIZE(rcpt_dsn));
    wb_put(w, "\r\n", 2);
}

/* Write the next of MAIL, RCPT..., DATA that fit; one command without PIPELINING. */
static size_t
write_txn(struct smtp_client *c, char *p, size_t room)
{
    size_t o = 0;
    bool pipe = pipelining(c);

    for (;;) {
        struct wbuf w = { NULL, 0 };

        if (c->wr == W_MAIL) {
            build_mail(c, &w);
            if (w.len > room - o)
                break;
            w = (struct wbuf){ p + o, 0 };
            build_mail(c, &w);
            o += w.len;
            pend_push(c, K_MAIL, 1);
            c->wr = W_RCPT;
            c->w_rcpt = next_sent(c, 0);
        } else if (c->wr == W_RCPT) {
            if (c->w_rcpt >= c->env->nrcpt) {
                c->wr = pipe ? W_DATA : W_NONE; /* not reached without PIPELINING */
                continue;
            }
            build_rcpt(c, c->w_rcpt, &w);
            if (w.len > room - o)
                break;
            w = (struct wbuf){ p + o, 0 };
            build_rcpt(c, c->w_rcpt, &w);
            o += w.len;
            pend_push(c, K_RCPT, 1);
            c->w_rcpt = next_sent(c, c->w_rcpt + 1);
            if (!pipe && c->w_rcpt >= c->env->nrcpt)
                c->wr = W_NONE; /* the last RCPT reply decides: DATA or RSET */
        } else if (c->wr == W_DATA) {
            if (6 > room - o)
                break;
            memcpy(p + o, "DATA\r\n", 6);
            o += 6;
            pend_push(c, K_DATA, 1);
            c->wr = W_NONE;
        } else {
            break;
        }
        if (!pipe)
            break;
    }
    return o;
}

/*
 * Body octets, dot-stuffed in their one copy from the driver's memory into
 * the output, then the final "." in the same batch. *err < 0 when ops->body()
 * failed.
 */
static size_t
write_body(struct smtp_client *c, char *p, size_t room, int *err)
{
    uint64_t total = c->env->body_len;
    size_t o = 0;

    /* room - o - RESERVE_END >= 2 guarantees progress in smtp_dotstuff() */
    while (c->body_off < total && room - o >= RESERVE_END + 2) {
        const char *src = NULL;
        ssize_t n = c->ops->body(c->ctx, c->body_off, &src);
        size_t avail, used;

        if (n == -EAGAIN)
            break;
        if (n <= 0 || src == NULL) {
            *err = n < 0 ? (int)n : -EIO;
            return o;
        }
        avail = (size_t)MIN((uint64_t)n, total - c->body_off);
        o += smtp_dotstuff(&c->body_mid_line, src, avail, &used, p + o, room - o - RESERVE_END);
        c->body_off += used;
    }
    if (c->body_off == total) {
        struct slice end = smtp_dotstuff_end(c->body_mid_line);

        memcpy(p + o, end.p, end.len);
        o += end.len;
        pend_push(c, K_DOT, c->lmtp ? c->naccepted : 1);
        c->wr = W_NONE;
    }
    return o;
}

/* One batch of output. Returns true when something changed (run() goes on). */
static bool
write_step(struct smtp_client *c)
{
    bool group = pipelining(c) && (c->wr == W_MAIL || c->wr == W_RCPT || c->wr == W_DATA);
    uint8_t wr0 = c->wr;
    size_t room = 0, o = 0;
    int err = 0;
    char *p;

    /* without PIPELINING (and always outside a MAIL/RCPT/DATA group) one
       command at a time: the previous one must have been answered */
    if (c->pend_len > 0 && !group)
        return false;
    p = c->ops->tx_space(c->ctx, &room);
    if (p == NULL || room < SMTP_CLIENT_TX_MIN)
        return false;
    switch (c->wr) {
    case W_EHLO:
    case W_HELO: {
        const char *verb = c->wr == W_HELO ? "HELO " : c->lmtp ? "LHLO " : "EHLO ";

        memcpy(p, verb, 5);
        memcpy(p + 5, c->helo, c->helo_len);
        memcpy(p + 5 + c->helo_len, "\r\n", 2);
        o = 5u + c->helo_len + 2u;
        pend_push(c, c->wr == W_HELO ? K_HELO : K_EHLO, 1);
        c->wr = W_NONE;
        break;
    }
    case W_MAIL:
    case W_RCPT:
    case W_DATA:
        o = write_txn(c, p, room);
        break;
    case W_BODY:
        o = write_body(c, p, room, &err);
        break;
    case W_STARTTLS:
        memcpy(p, "STARTTLS\r\n", 10);
        o = 10;
        pend_push(c, K_STARTTLS, 1);
        c->wr = W_NONE;
        break;
    case W_DOT_EMPTY:
        memcpy(p, ".\r\n", 3);
        o = 3;
        pend_push(c, K_DOT_IGNORE, 1);
        c->wr = W_NONE;
        break;
    case W_RSET:
        memcpy(p, "RSET\r\n", 6);
        o = 6;
        pend_push(c, K_RSET, 1);
        c->wr = W_NONE;
        break;
    case W_QUIT:
        memcpy(p, "QUIT\r\n", 6);
        o = 6;
        pend_push(c, K_QUIT, 1);
        c->wr = W_NONE;
        break;
    default:
        return false;
    }
    if (err < 0) {
        syn_set(c, 421, "4.3.0", "local error reading the message body (errno %d)", -err);
        session_fail(c, SMTP_END_BODY_ERROR, SMTP_RCPT_DEFERRED, &c->syn, false);
        return false;
    }
    if (o > 0)
        c->ops->send(c->ctx, p, o);
    return o > 0 || c->wr != wr0;
}

/* ---- messages ---- */

/* Refuse the whole message locally: every recipient gets r. */
static void
msg_refuse(struct smtp_client *c, const struct smtp_reply *r)
{
    uint32_t n = c->env->nrcpt;

    for (uint32_t i = 0; i < n; i++) {
        if (c->rstate[i] == RS_WAIT)
            rcpt_final(c, i, status_by_digit(r->code), r, RS_UNSENT);
    }
}

/* The handed-over message starts: checks that need no round trip, then MAIL. */
static void
msg_start(struct smtp_client *c)
{
    const struct envelope *e = c->env;
    struct slice sender = env_get(e, e->sender);
    bool dsn_params = false;
    struct wbuf w = { NULL, 0 };
    uint32_t nsend = 0;

    c->msg_started = true;
    c->idle_told = false;
    c->mail_ok = c->mail_failed = false;
    c->w_rcpt = c->r_rcpt = c->lmtp_next = 0;
    c->naccepted = c->nfinal = 0;
    c->sum = (struct smtp_msg_summary){ 0 };
    c->msg_flags = pipelining(c) ? SMTP_MSG_F_PIPELINED : 0;
    c->body_off = 0;
    c->body_mid_line = false;

    c->utf8 = (e->flags & ENV_F_SMTPUTF8) || has_8bit(sender);
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        struct slice params = env_get(e, e->rcpt[i].params);

        c->utf8 = c->utf8 || has_8bit(env_get(e, e->rcpt[i].addr));
        dsn_params = dsn_params || pass_params(NULL, params, rcpt_dsn, ARRAY_SIZE(rcpt_dsn));
    }
    dsn_params =
        dsn_params || pass_params(NULL, env_get(e, e->mail_params), mail_dsn, ARRAY_SIZE(mail_dsn));

    if (c->utf8 && !(c->ext & SMTP_EXT_SMTPUTF8)) {
        syn_set(c, 550, "5.6.7", "SMTPUTF8 is required, but was not offered by the next hop");
        msg_refuse(c, &c->syn);
        return;
    }
    if ((c->ext & SMTP_EXT_SIZE) && c->size_max > 0 && e->body_len > c->size_max) {
        syn_set(c, 552, "5.3.4", "message size %" PRIu64 " exceeds the next hop's limit %" PRIu64,
                e->body_len, c->size_max);
        msg_refuse(c, &c->syn);
        return;
    }
    build_mail(c, &w);
    /* control octets would let envelope text inject commands */
    if (w.len > SMTP_CLIENT_CMD_MAX || has_ctl(sender) || has_ctl(env_get(e, e->mail_params))) {
        syn_set(c, 550, "5.1.7", "sender address or parameters not usable in SMTP");
        msg_refuse(c, &c->syn);
        return;
    }
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        w = (struct wbuf){ NULL, 0 };
        build_rcpt(c, i, &w);
        if (w.len > SMTP_CLIENT_CMD_MAX || has_ctl(env_get(e, e->rcpt[i].addr)) ||
            has_ctl(env_get(e, e->rcpt[i].params))) {
            syn_set(c, 550, "5.1.3", "recipient address or parameters not usable in SMTP");
            rcpt_final(c, i, SMTP_RCPT_FAILED, &c->syn, RS_UNSENT);
        } else {
            nsend++;
        }
    }
    if (nsend == 0)
        return;
    if ((e->flags & ENV_F_8BITMIME) && !(c->ext & SMTP_EXT_8BITMIME))
        c->msg_flags |= SMTP_MSG_F_8BIT_NO_EXT;
    if (dsn_params && !(c->ext & SMTP_EXT_DSN))
        c->msg_flags |= SMTP_MSG_F_DSN_DROPPED;
    c->state = CS_TXN;
    c->wr = W_MAIL;
}

/* ---- the driving loop ---- */

/* Write what is due and move between phases until the session must wait. */
static void
run(struct smtp_client *c)
{
    for (;;) {
        if (c->state == CS_DEAD)
            return;
        if (c->wr != W_NONE) {
            if (!write_step(c))
                return;
            continue;
        }
        if (c->pend_len > 0)
            return;
        switch (c->state) {
        case CS_TXN:
            if (c->need_rset) {
                c->wr = W_RSET;
                c->need_rset = false; /* set again if RSET is refused: the session dies then */
                continue;
            }
            c->state = CS_READY;
            continue;
        case CS_READY:
            if (c->env != NULL && !c->msg_started) {
                msg_start(c);
                check_msg_done(c);
                continue;
            }
            if (c->env == NULL && c->quit_req) {
                c->state = CS_QUIT;
                c->wr = W_QUIT;
                continue;
            }
            if (c->env == NULL && !c->idle_told) {
                c->idle_told = true;
                c->ops->idle(c->ctx);
                continue;
            }
            return;
        default:
            return;
        }
    }
}

/* Entry from the driver: run now, unless this is a call from a callback
   (the outer call runs when the callback returns). */
static void
kick(struct smtp_client *c)
{
    if (c->busy)
        return;
    c->busy = true;
    run(c);
    c->busy = false;
}

/* ---- API ---- */

int
smtp_client_init(struct smtp_client *c, const struct smtp_client_opts *o,
                 const struct smtp_client_ops *ops, void *ctx)
{
    size_t hl = o->helo_name != NULL ? strlen(o->helo_name) : 0;

    if (hl == 0 || hl > SMTP_CLIENT_HELO_MAX || (o->max_line != 0 && o->max_line < 512) ||
        o->tls > SMTP_CLIENT_TLS_REQUIRE)
        return -EINVAL;
    for (size_t i = 0; i < hl; i++) {
        if (is_ctl(o->helo_name[i]) || o->helo_name[i] == ' ')
            return -EINVAL;
    }
    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->ctx = ctx;
    c->lmtp = o->lmtp;
    memcpy(c->helo, o->helo_name, hl);
    c->helo_len = (uint8_t)hl;
    c->max_line = o->max_line != 0 ? o->max_line : SMTP_CLIENT_LINE_MAX;
    c->tmo_cmd = o->timeout_cmd_ms != 0 ? o->timeout_cmd_ms : 300000;
    c->tmo_data = o->timeout_data_ms != 0 ? o->timeout_data_ms : 120000;
    c->tmo_block = o->timeout_block_ms != 0 ? o->timeout_block_ms : 180000;
    c->tmo_data_end = o->timeout_data_end_ms != 0 ? o->timeout_data_end_ms : 600000;
    c->tls_policy = o->tls;
    if (o->peer_name != NULL && o->peer_name[0] != '\0') {
        size_t n = MIN(strlen(o->peer_name), SMTP_CLIENT_PEER_MAX - 5);

        memcpy(c->peer, "host ", 5);
        for (size_t i = 0; i < n; i++)
            c->peer[5 + i] = is_ctl(o->peer_name[i]) ? ' ' : o->peer_name[i];
    } else {
        memcpy(c->peer, "the next hop", sizeof("the next hop"));
    }
    c->state = CS_GREETING;
    c->wr = W_NONE;
    pend_push(c, K_GREETING, 1);
    return 0;
}

void
smtp_client_fini(struct smtp_client *c)
{
    free(c->rstate);
    c->rstate = NULL;
    c->rstate_cap = 0;
    c->env = NULL;
}

void
smtp_client_input(struct smtp_client *c, const char *buf, size_t len)
{
    BUG_ON(c->busy); /* never from a callback */
    c->busy = true;
    while (len > 0 && c->state != CS_DEAD && c->state != CS_STARTTLS) {
        bool eol = false;
        size_t n = feed(c, buf, len, &eol);

        buf += n;
        len -= n;
        if (eol && c->state != CS_DEAD && line_done(c)) {
            handle_reply(c);
            run(c);
        }
    }
    /* behind the 220 to STARTTLS: sent in clear, never read as a reply in TLS */
    if (c->state == CS_STARTTLS)
        c->tls_dropped += len;
    c->busy = false;
}

int
smtp_client_send_message(struct smtp_client *c, const struct envelope *env)
{
    if (c->state == CS_DEAD || c->state == CS_QUIT || c->quit_req)
        return -EPIPE;
    if (c->env != NULL)
        return -EBUSY;
    if (env->nrcpt == 0)
        return -EINVAL;
    if (env->nrcpt > c->rstate_cap) {
        uint8_t *rs = realloc(c->rstate, env->nrcpt);

        if (rs == NULL)
            return -ENOMEM;
        c->rstate = rs;
        c->rstate_cap = env->nrcpt;
    }
    memset(c->rstate, RS_WAIT, env->nrcpt);
    c->env = env;
    c->msg_started = false;
    c->nfinal = 0;
    c->sum = (struct smtp_msg_summary){ 0 };
    c->msg_flags = 0;
    kick(c);
    return 0;
}

void
smtp_client_quit(struct smtp_client *c)
{
    if (c->state == CS_DEAD)
        return;
    c->quit_req = true;
    kick(c);
}

void
smtp_client_resume(struct smtp_client *c)
{
    kick(c);
}

void
smtp_client_timeout(struct smtp_client *c)
{
    BUG_ON(c->busy);
    if (c->state == CS_DEAD)
        return;
    if (c->state == CS_QUIT && c->wr == W_NONE) {
        die(c, SMTP_END_QUIT, NULL);
        return;
    }
    c->busy = true;
    syn_set(c, 421, "4.4.1", "timeout %s", stage_name(c));
    session_fail(c, SMTP_END_TIMEOUT, SMTP_RCPT_DEFERRED, &c->syn, false);
    c->busy = false;
}

void
smtp_client_closed(struct smtp_client *c)
{
    BUG_ON(c->busy);
    if (c->state == CS_DEAD)
        return;
    if (c->state == CS_QUIT && c->wr == W_NONE) {
        die(c, SMTP_END_QUIT, NULL);
        return;
    }
    c->busy = true;
    syn_set(c, 421, "4.4.2", "lost connection %s", stage_name(c));
    session_fail(c, SMTP_END_LOST, SMTP_RCPT_DEFERRED, &c->syn, false);
    c->busy = false;
}

bool
smtp_client_tls_wanted(const struct smtp_client *c)
{
    return c->state == CS_STARTTLS;
}

void
smtp_client_tls_started(struct smtp_client *c)
{
    BUG_ON(c->busy || c->state != CS_STARTTLS);
    /* RFC 3207 4.2: forget what the server said before TLS, then EHLO again */
    c->tls_active = true;
    c->ext = 0;
    c->size_max = 0;
    c->llen = 0;
    c->rlines = 0;
    c->state = CS_HELLO;
    c->wr = W_EHLO;
    kick(c);
}

void
smtp_client_tls_failed(struct smtp_client *c, const char *why)
{
    BUG_ON(c->busy);
    if (c->state == CS_DEAD)
        return;
    if (c->state == CS_QUIT && c->wr == W_NONE) {
        die(c, SMTP_END_QUIT, NULL); /* QUIT went out: as good as its reply */
        return;
    }
    c->busy = true;
    /* the reason first: log lines keep the first 100 octets of a status */
    if (c->state == CS_STARTTLS)
        syn_set(c, 421, "4.7.5", "TLS handshake failed: %.300s", why);
    else
        syn_set(c, 421, "4.7.5", "TLS error %s: %.300s", stage_name(c), why);
    session_fail(c, SMTP_END_TLS, SMTP_RCPT_DEFERRED, &c->syn, false);
    c->busy = false;
}

uint32_t
smtp_client_timeout_ms(const struct smtp_client *c)
{
    if (c->state == CS_DEAD)
        return 0;
    if (c->state == CS_STARTTLS)
        return c->tmo_cmd; /* the handshake, like any command */
    if (c->pend_len > 0) {
        switch (pend_front(c)) {
        case K_DATA:
            return c->tmo_data;
        case K_DOT:
        case K_DOT_IGNORE:
            return c->tmo_data_end;
        default:
            return c->tmo_cmd;
        }
    }
    if (c->wr == W_BODY)
        return c->tmo_block;
    if (c->wr != W_NONE)
        return c->tmo_cmd;
    return 0;
}

bool
smtp_client_dead(const struct smtp_client *c)
{
    return c->state == CS_DEAD;
}

const char *
smtp_client_end_str(enum smtp_client_end why)
{
    static const char *const name[] = {
        [SMTP_END_QUIT] = "quit",         [SMTP_END_GREETING] = "greeting",
        [SMTP_END_HELO] = "helo",         [SMTP_END_421] = "421",
        [SMTP_END_PROTOCOL] = "protocol", [SMTP_END_TIMEOUT] = "timeout",
        [SMTP_END_LOST] = "lost",         [SMTP_END_BODY_ERROR] = "body_error",
        [SMTP_END_RSET] = "rset",         [SMTP_END_TLS] = "tls",
    };

    return (size_t)why < ARRAY_SIZE(name) && name[why] != NULL ? name[why] : "unknown";
}

const char *
smtp_rcpt_status_str(enum smtp_rcpt_status st)
{
    static const char *const name[] = {
        [SMTP_RCPT_DELIVERED] = "delivered",
        [SMTP_RCPT_DEFERRED] = "deferred",
        [SMTP_RCPT_FAILED] = "failed",
    };

    return (size_t)st < ARRAY_SIZE(name) ? name[st] : "unknown";
}

/* ---- dot-stuffing ---- */

size_t
smtp_dotstuff(bool *mid_line, const char *in, size_t inlen, size_t *used, char *out, size_t room)
{
    size_t i = 0, o = 0;

    while (i < inlen && o < room) {
        const char *lf;
        size_t run_len, k;

        if (!*mid_line && in[i] == '.') {
            if (room - o < 2)
                break; /* the doubled dot and the original go out together */
            out[o++] = '.';
        }
        lf = memchr(in + i, '\n', inlen - i);
        run_len = lf != NULL ? (size_t)(lf - (in + i)) + 1 : inlen - i;
        k = MIN(run_len, room - o);
        memcpy(out + o, in + i, k);
        o += k;
        i += k;
        *mid_line = !(lf != NULL && k == run_len);
    }
    *used = i;
    return o;
}

struct slice
smtp_dotstuff_end(bool mid_line)
{
    return mid_line ? SLICE_LIT("\r\n.\r\n") : SLICE_LIT(".\r\n");
}
