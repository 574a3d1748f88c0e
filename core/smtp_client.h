/*
 * smtp_client.h: the sans-I/O outbound SMTP / LMTP client session
 * (RFC 5321, 1870, 2033, 2034/3463, 2920, 3461, 6152, 6531).
 *
 * One session is one connection to one next hop. It delivers a sequence of
 * messages over that connection (RSET between them when a transaction was
 * left open) and sends QUIT when its driver says so. Bytes in, bytes and
 * events out: the session never reads a clock, a socket or a file. Its driver
 * (net/outbound in the gateway, a fake server in tests/core) connects, feeds
 * the server's bytes to smtp_client_input(), serves the callbacks in struct
 * smtp_client_ops and arms the timer that smtp_client_timeout_ms() names.
 * One session belongs to one thread; a worker drives many.
 *
 * Life of a session:
 *
 *   smtp_client_init()                        waiting for the 220 greeting
 *   server: 220 ...       -> EHLO (LHLO for LMTP; HELO when EHLO gets 5xx)
 *   server: 250-...       -> extensions recorded in c->ext, c->size_max
 *   [STARTTLS, per opts.tls (below): 220 -> smtp_client_tls_wanted(); the
 *    driver runs the handshake, then smtp_client_tls_started() -> EHLO again]
 *   ops->idle()           the session can take a message (not called when
 *                         one was handed over before it became ready)
 *   smtp_client_send_message(c, env)
 *                         MAIL, RCPT..., DATA (one batch with PIPELINING,
 *                         one at a time without), the body pulled through
 *                         ops->body() and dot-stuffed into the output,
 *                         ".", then:
 *   ops->rcpt_done()      once per recipient, with its final status
 *   ops->msg_done()       once per message, after its last rcpt_done()
 *   ops->idle()           again, or QUIT after smtp_client_quit()
 *   ops->dead()           last callback: close the connection
 *
 * Output: the client writes into room the driver lends with ops->tx_space()
 * and hands each batch over with exactly one ops->send() call, so that a
 * pipelined MAIL/RCPT/DATA group and a body batch ending with "." each leave
 * in one write. When the room is short (less than SMTP_CLIENT_TX_MIN) or the
 * next body octets are not in memory yet, the session waits: the driver calls
 * smtp_client_resume() when its output drained or the body read completed.
 *
 * Callbacks: any callback may call smtp_client_send_message() or
 * smtp_client_quit(); the session acts on it once the callback returns.
 * No callback may call smtp_client_input(), smtp_client_timeout() or
 * smtp_client_closed(), nor free the session (free it after the API call
 * that led to ops->dead() returned).
 *
 * Results: every recipient of a message gets exactly one rcpt_done(), with
 *   SMTP_RCPT_DELIVERED  2xx to the data (LMTP: its own reply after the data),
 *   SMTP_RCPT_DEFERRED   4xx anywhere, 421, timeout, lost connection,
 *                        protocol error, body read error,
 *   SMTP_RCPT_FAILED     5xx at MAIL, RCPT, DATA or the data, a 5xx
 *                        greeting or HELO, or a local refusal (5.6.7 SMTPUTF8
 *                        not offered, 5.3.4 over the server's SIZE).
 * A session that dies (421, timeout, lost connection, protocol error) defers
 * every recipient of the current message without a final status yet. A
 * transaction left open (every RCPT refused, DATA refused) is closed with
 * RSET at once, so an idle pooled connection never holds one; a completed
 * one needs none. Replies are matched to commands strictly in order: a reply
 * nobody asked for, a code change inside a multiline reply or a line over
 * max_line is a protocol error, never a guess (a wrong guess could report a
 * recipient delivered and lose the message).
 *
 * STARTTLS (RFC 3207): with opts.tls MAY or REQUIRE, an EHLO/LHLO reply
 * offering STARTTLS is followed by STARTTLS. Its 220 makes
 * smtp_client_tls_wanted() true: the session writes nothing more and drops
 * every octet smtp_client_input() is given from then on (bytes a server or
 * an attacker sent in clear behind the 220 would otherwise be read as
 * replies inside TLS: the client side of CVE-2011-0411), counting them in
 * c->tls_dropped. The driver starts the TLS handshake on the connection and
 * calls smtp_client_tls_started() once it completes (the session sends EHLO
 * again and forgets everything the first reply said, RFC 3207 4.2) or
 * smtp_client_tls_failed() when it does not (every pending recipient is
 * deferred, 4.7.5). From then on the driver decrypts what it feeds and
 * encrypts what send() gives it. Without TLS: MAY goes on in plaintext when
 * STARTTLS is not offered or is refused (4xx/5xx), as Postfix's `may` does;
 * REQUIRE ends the session (SMTP_END_TLS, recipients deferred with 4.7.4).
 */
#ifndef RINGMAIL_CORE_SMTP_CLIENT_H
#define RINGMAIL_CORE_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/envelope.h"
#include "core/slice.h"

#define SMTP_CLIENT_TEXT_MAX  512  /* octets of reply text kept for logs and DSNs */
#define SMTP_CLIENT_LINE_MAX  4096 /* default longest reply line, CRLF excluded */
#define SMTP_CLIENT_LINES_MAX 1000 /* lines in one multiline reply */
#define SMTP_CLIENT_CMD_MAX   2048 /* longest command the client writes, CRLF included */
#define SMTP_CLIENT_TX_MIN    4096 /* room tx_space() must offer when the output is empty */
#define SMTP_CLIENT_HELO_MAX  255  /* our EHLO name */
#define SMTP_CLIENT_ENH_MAX   12   /* "5.123.456" and its NUL, rounded up */
#define SMTP_CLIENT_PEER_MAX  128  /* the next hop's name kept for synthetic replies */

/* Extensions the server announced in its EHLO/LHLO reply (c->ext). */
enum smtp_ext {
    SMTP_EXT_PIPELINING = 1u << 0,          /* RFC 2920 */
    SMTP_EXT_SIZE = 1u << 1,                /* RFC 1870; limit in c->size_max */
    SMTP_EXT_8BITMIME = 1u << 2,            /* RFC 6152 */
    SMTP_EXT_SMTPUTF8 = 1u << 3,            /* RFC 6531 */
    SMTP_EXT_DSN = 1u << 4,                 /* RFC 3461 */
    SMTP_EXT_CHUNKING = 1u << 5,            /* RFC 3030 (recorded, BDAT not used yet) */
    SMTP_EXT_ENHANCEDSTATUSCODES = 1u << 6, /* RFC 2034 */
    SMTP_EXT_STARTTLS = 1u << 7,            /* RFC 3207 (used per opts.tls) */
};

enum smtp_rcpt_status {
    SMTP_RCPT_DELIVERED = 0, /* the next hop took responsibility */
    SMTP_RCPT_DEFERRED,      /* try again later */
    SMTP_RCPT_FAILED,        /* permanent: bounce */
};

/* Why a session ended (ops->dead()). */
enum smtp_client_end {
    SMTP_END_QUIT = 0,   /* QUIT was sent and answered, or the server closed after it */
    SMTP_END_GREETING,   /* the greeting was not 220 (reply: the server's) */
    SMTP_END_HELO,       /* EHLO/LHLO/HELO refused (reply: the server's) */
    SMTP_END_421,        /* the server said 421 (reply: the server's) */
    SMTP_END_PROTOCOL,   /* a malformed, over-long or unexpected reply (reply: synthetic) */
    SMTP_END_TIMEOUT,    /* smtp_client_timeout() (reply: synthetic 4.4.1) */
    SMTP_END_LOST,       /* smtp_client_closed() before QUIT (reply: synthetic 4.4.2) */
    SMTP_END_BODY_ERROR, /* ops->body() failed mid-data (reply: synthetic 4.3.0) */
    SMTP_END_RSET,       /* RSET refused (reply: the server's) */
    SMTP_END_TLS,        /* TLS required but not offered or refused (synthetic 4.7.4), or
                            smtp_client_tls_failed() (synthetic 4.7.5) */
};

/* STARTTLS policy (smtp_client_opts.tls). */
enum smtp_client_tls {
    SMTP_CLIENT_TLS_NONE = 0, /* never STARTTLS */
    SMTP_CLIENT_TLS_MAY,      /* STARTTLS when offered; not offered or refused: plaintext */
    SMTP_CLIENT_TLS_REQUIRE,  /* STARTTLS, or the session ends (SMTP_END_TLS, 4.7.4) */
};

/* Flags in struct smtp_msg_summary. */
enum smtp_msg_flag {
    SMTP_MSG_F_PIPELINED = 1u << 0,   /* MAIL/RCPT/DATA went as one group */
    SMTP_MSG_F_8BIT_NO_EXT = 1u << 1, /* an 8BITMIME message went to a server without
                                         8BITMIME, unconverted (RFC 6152 3: log it) */
    SMTP_MSG_F_DSN_DROPPED = 1u << 2, /* DSN parameters were not passed: the server has
                                         no DSN (RFC 3461 4.1: a "relayed" DSN is due
                                         where NOTIFY=SUCCESS was asked) */
    SMTP_MSG_F_DATA_SENT = 1u << 3,   /* the body went out (a duplicate is possible if
                                         a recipient is deferred) */
};

/*
 * A server reply, or a synthetic one made by the client (timeout, lost
 * connection, local refusal). Multiline replies are joined with single
 * spaces; the enhanced status code (RFC 3463) of the first line is moved to
 * enh and stripped from every line. text holds the first SMTP_CLIENT_TEXT_MAX
 * octets, NUL-terminated, with control octets replaced by spaces (it goes
 * into logs and DSNs); other octets are the peer's, unescaped.
 */
struct smtp_reply {
    uint16_t code;                 /* 200..599 */
    bool synthetic;                /* made by the client, not sent by the server */
    char enh[SMTP_CLIENT_ENH_MAX]; /* "5.1.1", or "" when the server gave none */
    uint16_t len;                  /* octets in text */
    char text[SMTP_CLIENT_TEXT_MAX + 1];
};

struct smtp_msg_summary {
    uint32_t ndelivered, ndeferred, nfailed;
    uint32_t flags; /* SMTP_MSG_F_* */
};

struct smtp_client_ops {
    /* Room for output: a pointer and *room, or NULL when there is none now.
       When nothing is waiting in the driver's output, *room must be at least
       SMTP_CLIENT_TX_MIN; a smaller room makes the session wait for
       smtp_client_resume(). */
    char *(*tx_space)(void *ctx, size_t *room);
    /* n > 0 octets were written at p, the pointer tx_space() returned: send
       them after everything sent before, in one write. */
    void (*send)(void *ctx, const char *p, size_t n);

    /* Body octets of the current message from offset off (< env->body_len):
       set *p and return how many are readable there (> 0; octets past
       body_len are ignored); -EAGAIN when they are not in memory yet (call
       smtp_client_resume() when they are); another -errno when the read
       failed (the session dies: SMTP_END_BODY_ERROR). *p needs to stay valid
       only until the callback is called again or the API call returns. */
    ssize_t (*body)(void *ctx, uint64_t off, const char **p);

    /* Final status of recipient idx (index into env->rcpt). r is valid
       during the call only. */
    void (*rcpt_done)(void *ctx, uint32_t idx, enum smtp_rcpt_status st,
                      const struct smtp_reply *r);
    /* Every recipient of the message has its status; the envelope is no
       longer used and may be freed or changed. */
    void (*msg_done)(void *ctx, const struct smtp_msg_summary *sum);
    /* The session is ready and has no message: send one, quit, or keep the
       connection for later (a connection pool). Called once per idle period. */
    void (*idle)(void *ctx);
    /* The session is over: flush what send() was given, then close the
       connection. r (valid during the call only) is the reply that ended it,
       server's or synthetic; NULL for a plain close after QUIT. The last
       callback. */
    void (*dead)(void *ctx, enum smtp_client_end why, const struct smtp_reply *r);
};

struct smtp_client_opts {
    bool lmtp;                    /* LHLO and per-recipient data replies (RFC 2033) */
    const char *helo_name;        /* our name for EHLO/LHLO/HELO; copied */
    uint32_t max_line;            /* longest reply line; 0: SMTP_CLIENT_LINE_MAX, min 512 */
    uint32_t timeout_cmd_ms;      /* greeting, EHLO, MAIL, RCPT, RSET, QUIT; 0: 300 s */
    uint32_t timeout_data_ms;     /* the DATA command; 0: 120 s */
    uint32_t timeout_block_ms;    /* each body batch written; 0: 180 s */
    uint32_t timeout_data_end_ms; /* the reply(s) to the final "."; 0: 600 s */
    uint8_t tls;                  /* enum smtp_client_tls; 0: never STARTTLS */
    const char *peer_name;        /* "host X" in synthetic TLS replies; copied (cut to
                                     SMTP_CLIENT_PEER_MAX); NULL: "the next hop" */
};

/* Reply text kept while a reply line is assembled (first octets of a line). */
#define SMTP_CLIENT_KEEP (4 + SMTP_CLIENT_ENH_MAX + SMTP_CLIENT_TEXT_MAX + 16)
#define SMTP_CLIENT_PEND 8 /* kinds of commands awaiting replies, run-length coded */

/* Command kinds awaiting a reply, in the order they were written. */
struct smtp_client_pend {
    uint8_t kind;
    uint32_t n;
};

/*
 * The session. The driver may read ext and size_max (after the EHLO reply),
 * tls_active and tls_dropped; everything else is private. About 2 KiB plus one octet per recipient
 * of the largest message, allocated once and reused (the only allocation; -ENOMEM from
 * smtp_client_send_message() when it fails).
 */
struct smtp_client {
    const struct smtp_client_ops *ops;
    void *ctx;
    bool lmtp;
    uint8_t helo_len;
    char helo[SMTP_CLIENT_HELO_MAX + 1];
    uint32_t max_line;
    uint32_t tmo_cmd, tmo_data, tmo_block, tmo_data_end;
    uint8_t tls_policy; /* enum smtp_client_tls */
    char peer[SMTP_CLIENT_PEER_MAX + 1];

    uint8_t state;        /* session phase (private enum in smtp_client.c) */
    uint8_t wr;           /* what is to be written next (private enum) */
    uint32_t ext;         /* SMTP_EXT_* */
    uint64_t size_max;    /* the server's SIZE; 0: none announced or no limit */
    bool tls_active;      /* smtp_client_tls_started() was called: the session runs in TLS */
    uint64_t tls_dropped; /* octets given to smtp_client_input() after the 220 to
                             STARTTLS and before smtp_client_tls_started(), dropped */

    /* commands written and not answered yet: a FIFO of (kind, count) */
    struct smtp_client_pend pend[SMTP_CLIENT_PEND];
    uint8_t pend_head, pend_len;

    /* reply assembly; invariant: llen <= max_line, keep_len = min(llen, KEEP) */
    char keep[SMTP_CLIENT_KEEP];
    size_t llen;             /* octets of the current line before its LF */
    char lastc;              /* the last of those octets */
    uint32_t rlines;         /* lines of the current reply so far */
    struct smtp_reply reply; /* the reply being assembled / just completed */
    struct smtp_reply syn;   /* synthetic replies */

    /* the current message (NULL: none); valid until msg_done() */
    const struct envelope *env;
    bool msg_started;   /* MAIL planned or written, or refused locally */
    bool mail_ok;       /* MAIL got 2xx */
    bool mail_failed;   /* MAIL got 4xx/5xx: later RCPT/DATA replies are ignored */
    bool need_rset;     /* a transaction is open on the server */
    bool utf8;          /* the message needs SMTPUTF8 */
    uint32_t msg_flags; /* SMTP_MSG_F_* */
    uint32_t w_rcpt;    /* next recipient whose RCPT is to be written */
    uint32_t r_rcpt;    /* next recipient whose RCPT reply is expected */
    uint32_t lmtp_next; /* LMTP: next recipient owed a data reply */
    uint32_t naccepted, nfinal;
    struct smtp_msg_summary sum;
    uint64_t body_off;  /* body octets already written */
    bool body_mid_line; /* dot-stuffing state across batches */
    uint8_t *rstate;    /* per recipient (private enum); rstate_cap entries */
    uint32_t rstate_cap;

    /* driver interplay */
    bool quit_req;  /* QUIT once the current message is done */
    bool idle_told; /* ops->idle() called for this idle period */
    bool busy;      /* inside an API call: nested calls only set intent */
};

/*
 * Start a session on a connection that was just established: nothing is
 * written until the greeting arrives. Returns 0, or -EINVAL when the options
 * are unusable (no or over-long helo_name, one with control octets or
 * spaces, max_line below 512). No allocation.
 */
int smtp_client_init(struct smtp_client *c, const struct smtp_client_opts *o,
                     const struct smtp_client_ops *ops, void *ctx);
/* Release the session's memory. No callback is called, even mid-message. */
void smtp_client_fini(struct smtp_client *c);

/*
 * Bytes from the server. All of buf is consumed (partial lines are kept in
 * the session, at most the first SMTP_CLIENT_KEEP octets of a line), so buf
 * can go back to its buffer ring when this returns. Callbacks happen during
 * the call. Bytes after the session died are ignored.
 */
void smtp_client_input(struct smtp_client *c, const char *buf, size_t len);

/*
 * Hand over the next message. env (sender, recipients and their raw ESMTP
 * parameters, flags, body_len) must stay valid and unchanged until
 * ops->msg_done(). The message starts when the session is ready (now, or
 * after the greeting and EHLO, or after the previous message's RSET).
 * Parameters passed on: SIZE=body_len when SIZE is offered; BODY=8BITMIME
 * for ENV_F_8BITMIME when offered (else sent anyway, SMTP_MSG_F_8BIT_NO_EXT);
 * SMTPUTF8 when the message needs it (ENV_F_SMTPUTF8 or a non-ASCII address)
 * and it is offered (else every recipient fails 5.6.7 with nothing sent);
 * RET=/ENVID= from mail_params and NOTIFY=/ORCPT= from each recipient's
 * params only when DSN is offered. Other raw parameters are dropped.
 * Returns 0 (callbacks follow, maybe before this returns); -EBUSY when a
 * message is still active; -EPIPE when the session is dead or quitting;
 * -EINVAL when env has no recipients; -ENOMEM.
 */
int smtp_client_send_message(struct smtp_client *c, const struct envelope *env);

/* Send QUIT once the current message, if any, is done. The session ends with
   ops->dead(SMTP_END_QUIT) when the server answers or closes. */
void smtp_client_quit(struct smtp_client *c);

/* The driver's output drained or body octets arrived: carry on writing. */
void smtp_client_resume(struct smtp_client *c);

/*
 * True from the 220 to STARTTLS until one of the two calls below: start the
 * TLS handshake now. Meanwhile nothing is sent in clear and input is dropped
 * (counted in c->tls_dropped).
 */
bool smtp_client_tls_wanted(const struct smtp_client *c);

/* The handshake completed: from now on the driver feeds decrypted octets and
   encrypts what send() gives it. The session sends EHLO/LHLO again, with the
   extensions of the first reply forgotten (RFC 3207 4.2). Only while
   smtp_client_tls_wanted(). */
void smtp_client_tls_started(struct smtp_client *c);

/* TLS failed: the handshake (while smtp_client_tls_wanted(); why is the TLS
   library's reason, e.g. a certificate verification failure) or a record
   later on. Pending recipients are deferred (synthetic 4.7.5 "TLS handshake
   failed: <why>" or "TLS error <stage>: <why>"), the
   session dies (SMTP_END_TLS) without sending anything more: the driver sends
   what the TLS layer queued (an alert) and closes. */
void smtp_client_tls_failed(struct smtp_client *c, const char *why);

/* The timer armed for smtp_client_timeout_ms() fired: pending recipients
   are deferred (4.4.1), the session dies (SMTP_END_TIMEOUT; SMTP_END_QUIT
   while waiting for QUIT's reply). */
void smtp_client_timeout(struct smtp_client *c);

/* The connection is gone (EOF, reset, write error): pending recipients are
   deferred (4.4.2), the session dies (SMTP_END_LOST, or SMTP_END_QUIT after
   QUIT was written). */
void smtp_client_closed(struct smtp_client *c);

/* The timeout to arm now, in milliseconds (RFC 5321 4.5.3.2 defaults);
   0 when the session waits for its driver (idle, or dead). */
uint32_t smtp_client_timeout_ms(const struct smtp_client *c);

/* True once ops->dead() was called. */
bool smtp_client_dead(const struct smtp_client *c);

/* Names for log lines ("quit", "timeout", ...; "delivered", "deferred",
   "failed"); static storage. */
const char *smtp_client_end_str(enum smtp_client_end why);
const char *smtp_rcpt_status_str(enum smtp_rcpt_status st);

/*
 * Dot-stuffing (RFC 5321 4.5.2) as one copy, resumable across chunks.
 * Copies in[0..inlen) to out[0..room), doubling a '.' that begins a line (a
 * line begins at the start of the data and after each LF). Returns the octets
 * written and sets *used to the octets of in consumed; stops when out is
 * full. Progress is guaranteed when room >= 2 and inlen > 0. Start with
 * *mid_line = false; it carries the state to the next call.
 */
size_t smtp_dotstuff(bool *mid_line, const char *in, size_t inlen, size_t *used, char *out,
                     size_t room);
/* The end-of-data marker after dot-stuffed data: ".\r\n" at a line start,
   "\r\n.\r\n" otherwise (so data not ending in CRLF still ends cleanly).
   Static storage. */
struct slice smtp_dotstuff_end(bool mid_line);

#endif
