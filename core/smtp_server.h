/*
 * smtp_server.h: the sans-I/O SMTP server session (RFC 5321, 1870, 2920,
 * 3030, 6152, 6531, 2034/3463).
 *
 * Bytes in, replies and message events out. The session never reads a clock,
 * a socket or a file: its driver (net/conn.c in the server, a test in
 * tests/core) feeds it input and serves the callbacks in struct
 * smtp_server_ops. One session belongs to one thread.
 *
 * Security (RFC 3207 STARTTLS, RFC 4954 AUTH): the driver says what it can
 * do with flags before the greeting (SMTP_F_CAN_TLS, SMTP_F_CAN_AUTH,
 * SMTP_F_SUBMISSION, SMTP_F_TLS for implicit TLS). After "220 2.0.0 Ready to
 * start TLS" the session consumes nothing more (SMTP_F_STARTTLS): the driver
 * must throw away every input octet it holds or receives before the
 * handshake (command injection, CVE-2011-0411), run the handshake, and call
 * smtp_session_tls_started(), which restarts the session at EHLO. AUTH
 * credentials go to ops->auth_verify(); the session waits (SMTP_F_WAIT_AUTH)
 * until smtp_session_auth_done().
 *
 * Input: smtp_session_input() consumes as much of (buf, len) as it can and
 * returns how many bytes it used. It stops early, leaving the rest for a later
 * call, when:
 *   - the rest is an incomplete command line (no LF yet);
 *   - a message ended and its commit is pending (SMTP_F_WAIT_COMMIT): the
 *     replies to later pipelined commands must follow the 250;
 *   - the output has no room for another reply (ops->tx_room() < SMTP_REPLY_MAX);
 *   - the body store has no room (ops->body_space() gave no room);
 *   - the session is closing (SMTP_F_CLOSE).
 * The driver keeps the unconsumed bytes and calls again when the reason is
 * gone. Body bytes are copied exactly once, from buf into ops->body_space(),
 * dot-unstuffed and newline-normalised during that copy.
 *
 * Slices into buf are never kept past the call.
 */
#ifndef RINGMAIL_CORE_SMTP_SERVER_H
#define RINGMAIL_CORE_SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/envelope.h"
#include "core/smtp_data.h"

#define SMTP_REPLY_MAX 512 /* longest single reply the session writes, EHLO's included */

struct smtp_server_ops {
    /* Append reply bytes to the output. Called only after tx_room() said
       there is room for SMTP_REPLY_MAX bytes. */
    void (*reply)(void *ctx, const char *p, size_t n);
    size_t (*tx_room)(void *ctx);

    /* A transaction reached DATA or its first BDAT. The driver assigns the
       queue id (env->id, env->qid) and arrival time (env->arrival) and
       prepares body storage. Returns 0; -EAGAIN when the queue applies
       back-pressure (the session answers 451 4.3.1); any other -errno
       (-ENOSPC, -EIO) when storage failed (452 4.3.1). */
    int (*msg_begin)(void *ctx, struct envelope *env);

    /* Room for body bytes: a pointer and *room > 0, or NULL and *room = 0
       when the driver is flushing and the session must pause. */
    char *(*body_space)(void *ctx, size_t *room);
    /* n bytes were written at the pointer body_space() returned. */
    void (*body_commit)(void *ctx, size_t n);

    /* The message is complete and acceptable; env->body_len is final. The
       driver stores the envelope and the body durably and then calls
       smtp_session_committed(). The session waits (SMTP_F_WAIT_COMMIT). */
    void (*msg_end)(void *ctx, struct envelope *env);
    /* The message is refused or the session ended mid-message: what was
       stored must never be delivered. */
    void (*msg_abort)(void *ctx);

    /* Check AUTH credentials: user[0..ulen) (no NUL, no control octets) and
       pass[0..plen) (any octet but NUL); neither is kept past the call. The
       driver answers with smtp_session_auth_done(), later. NULL when the
       driver has no AUTH (SMTP_F_CAN_AUTH must then stay clear). */
    void (*auth_verify)(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen);
    /* A per-client rate event (enum smtp_limit_event): true when allowed, and
       counted; false when the client is over its limit. NULL: no limits. */
    bool (*limit)(void *ctx, int event);
};

enum smtp_limit_event {
    SMTP_LIMIT_MESSAGE = 0, /* a MAIL FROM about to be accepted */
    SMTP_LIMIT_RCPT,        /* a RCPT TO about to be accepted */
    SMTP_LIMIT_AUTH_FAIL,   /* an AUTH failed */
};

enum smtp_state {
    SMTP_S_PREGREET = 0, /* accepted, 220 not sent yet: input here is early talk */
    SMTP_S_CONNECTED,    /* 220 sent, no EHLO/HELO yet */
    SMTP_S_READY,        /* EHLO/HELO done, no transaction */
    SMTP_S_MAIL,         /* MAIL accepted */
    SMTP_S_RCPT,         /* at least one RCPT accepted */
    SMTP_S_DATA,         /* reading DATA body */
    SMTP_S_BDAT,         /* reading a BDAT chunk */
    SMTP_S_AUTH,         /* AUTH in progress: the next line is a SASL response */
    SMTP_S_QUIT,         /* closing */
};

enum smtp_session_flag {
    SMTP_F_CLOSE = 1u << 0,       /* flush the output, then close the connection */
    SMTP_F_WAIT_COMMIT = 1u << 1, /* msg_end() called, smtp_session_committed() not yet */
    SMTP_F_ESMTP = 1u << 2,       /* the client said EHLO */
    SMTP_F_SKIP_LINE = 1u << 3,   /* discarding the rest of an over-long command line */
    SMTP_F_MSG_OPEN = 1u << 4,    /* msg_begin() succeeded, msg_end/abort not yet called */
    SMTP_F_MSG_BAD = 1u << 5,     /* the message will be refused at its end */
    SMTP_F_TLS = 1u << 6,         /* the transport is TLS (set by the driver) */
    SMTP_F_TRUSTED = 1u << 7,     /* the client is in mynetworks: it may relay anywhere */
    SMTP_F_CAN_TLS = 1u << 8,     /* the driver can start TLS: STARTTLS is offered (driver) */
    SMTP_F_CAN_AUTH = 1u << 9,    /* the driver can check passwords: AUTH may be offered */
    SMTP_F_SUBMISSION = 1u << 10, /* a submission listener: AUTH before MAIL (driver) */
    SMTP_F_STARTTLS = 1u << 11,   /* 220 to STARTTLS sent: input stops until tls_started */
    SMTP_F_WAIT_AUTH = 1u << 12,  /* auth_verify() called, auth_done() not yet */
    SMTP_F_AUTHED = 1u << 13,     /* authenticated as auth_user: may relay anywhere */
};

#define SMTP_AUTH_USER_MAX 128 /* longest user name, NUL included */
#define SMTP_TLS_DESC_MAX  64  /* "TLSv1.3 TLS_AES_256_GCM_SHA384", NUL included */

/* Reasons a message in DATA/BDAT is refused at its end (SMTP_F_MSG_BAD). */
enum smtp_msg_error {
    SMTP_MSG_OK = 0,
    SMTP_MSG_TOO_BIG,       /* 552 5.3.4 message_size_limit */
    SMTP_MSG_LINE_TOO_LONG, /* 552 5.3.4 max_line_length */
    SMTP_MSG_BARE_NEWLINE,  /* 550 5.5.2 bare_newline: reject */
};

struct smtp_session {
    const struct ringmail_config *cfg;
    const struct smtp_server_ops *ops;
    void *ctx;

    enum smtp_state state;
    uint32_t flags;               /* SMTP_F_* */
    unsigned errors;              /* protocol errors so far, against smtpd_hard_error_limit */
    char client[CONFIG_HOST_MAX]; /* client address text */
    char helo[256];               /* last EHLO/HELO argument */
    uint8_t helo_len;

    struct envelope env; /* the transaction in progress */

    /* DATA/BDAT state; the byte-level scanner state is in `data` below */
    enum smtp_msg_error msg_error;
    uint64_t bdat_left; /* octets of the current BDAT chunk still to read */
    bool bdat_last;     /* the current chunk is BDAT ... LAST */
    bool bdat_failed;   /* skipping the bytes of a refused chunk */

    /* counters for the connection's log line */
    uint32_t nmsg_accepted, nmsg_refused, nrcpt_refused;

    /* AUTH: the mechanism's step, the user (during LOGIN, then once authenticated) */
    uint8_t auth_step; /* 0 none; see smtp_server.c */
    uint8_t auth_failures;
    char auth_user[SMTP_AUTH_USER_MAX];
    char tls_desc[SMTP_TLS_DESC_MAX]; /* protocol and cipher, "" before TLS */

    struct smtp_data data;       /* the DATA/BDAT body scanner (core/smtp_data.h) */
    size_t scanned;              /* command parser cursor into the unconsumed input */
    uint16_t hdr_off;            /* octets of our Received: header already stored */
    bool hdr_pending;            /* the Received: header is not fully stored yet */
    enum smtp_state bdat_resume; /* state to return to after skipping a refused chunk */
    uint64_t bdat_size;          /* octets of the current BDAT chunk, for its 250 reply */
};

/* Start a session for a client at address text `client`. No output yet. */
void smtp_session_init(struct smtp_session *s, const struct ringmail_config *cfg,
                       const struct smtp_server_ops *ops, void *ctx, const char *client);
/* Release what the session holds (an open message is aborted). */
void smtp_session_fini(struct smtp_session *s);

/* The client's address changed (a PROXY protocol header): relay trust follows. Before the
   greeting only. */
void smtp_session_set_client(struct smtp_session *s, const char *client);

/* TLS is up (after STARTTLS, or before the greeting for implicit TLS): desc names the
   protocol and cipher for Received: ("TLSv1.3 TLS_AES_128_GCM_SHA256"). After STARTTLS the
   session starts again from EHLO, forgetting HELO, transaction and AUTH state. */
void smtp_session_tls_started(struct smtp_session *s, const char *desc);

enum smtp_auth_result {
    SMTP_AUTH_FAIL = 0,     /* 535 5.7.8 */
    SMTP_AUTH_OK = 1,       /* 235 2.7.0 */
    SMTP_AUTH_TEMPFAIL = 2, /* 454 4.7.0: the verifier could not take the request */
};

/* The answer to ops->auth_verify() (enum smtp_auth_result); may be called from within
   auth_verify(). Resumes input. */
void smtp_session_auth_done(struct smtp_session *s, int result);

/* Refuse a connection over a per-client limit: 421 4.7.0 and close. */
void smtp_session_client_limit(struct smtp_session *s);

/* Send the 220 greeting. Input before this call is early talk: 554 5.5.0 and close. */
void smtp_session_greet(struct smtp_session *s);

/* Feed input; returns the octets consumed (see the top of this file). */
size_t smtp_session_input(struct smtp_session *s, const char *buf, size_t len);

/* The pending message's commit finished: 0 gives 250 2.0.0 Ok: queued as ID,
   a -errno gives 452 4.3.1. The session resumes; call input again. */
void smtp_session_committed(struct smtp_session *s, int rc);

/* The driver's timeout fired: 421 4.4.2 and close. */
void smtp_session_timeout(struct smtp_session *s);
/* The server is stopping: 421 4.3.2 and close. */
void smtp_session_shutdown(struct smtp_session *s);
/* No transaction, AUTH or commit in progress: the session may be closed without loss. */
bool smtp_session_idle(const struct smtp_session *s);
/* The client sends its message slower than smtpd_min_data_rate: 421 4.4.2 and close. */
void smtp_session_too_slow(struct smtp_session *s);
/* Refuse a connection over max_connections: 421 4.3.2 and close. */
void smtp_session_busy(struct smtp_session *s);

/* Which timeout applies now, in milliseconds (data block or command). */
uint64_t smtp_session_timeout_ms(const struct smtp_session *s);

/* True when input would be consumed now (no commit pending, not closing). */
bool smtp_session_wants_input(const struct smtp_session *s);

#endif
