/*
 * smtp_server.c: the sans-I/O SMTP server session (contract in smtp_server.h).
 *
 * One session belongs to one thread (its reactor's). The session never reads
 * a clock, a socket or a file. Command lines are parsed in place by
 * core/smtp_parse.c; what a transaction keeps (sender, recipients, HELO
 * name, parameters) is copied into the envelope's one growable buffer, which
 * is reused from transaction to transaction. Body octets are copied once, by
 * core/smtp_data.c, from the input into the driver's body_space().
 *
 * Error accounting: every 4xx/5xx reply caused by the client's input counts
 * against smtpd_hard_error_limit (Postfix); replies caused by our own storage
 * (451/452 4.3.1) do not.
 */
#include "core/smtp_server.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "core/base64.h"
#include "core/compiler.h"
#include "core/dsn.h"
#include "core/log.h"
#include "core/route.h"
#include "core/smtp_parse.h"

#define RECEIVED_MAX  1280 /* our Received: header: helo 255 + host 255 + rcpt 256 + text */
#define PEER_WORD_MAX 64   /* peer text echoed in a reply (a parameter name) */
#define SASL_LINE_MAX 2048 /* longest SASL response line we read (RFC 4954 4: base64) */

/* auth_step: where an AUTH exchange is (s->state == SMTP_S_AUTH) */
enum { AUTH_NONE = 0, AUTH_PLAIN, AUTH_LOGIN_USER, AUTH_LOGIN_PASS };

static const char *const verb_name[] = {
    [SMTP_V_UNKNOWN] = "UNKNOWN", [SMTP_V_HELO] = "HELO",         [SMTP_V_EHLO] = "EHLO",
    [SMTP_V_MAIL] = "MAIL",       [SMTP_V_RCPT] = "RCPT",         [SMTP_V_DATA] = "DATA",
    [SMTP_V_BDAT] = "BDAT",       [SMTP_V_RSET] = "RSET",         [SMTP_V_NOOP] = "NOOP",
    [SMTP_V_QUIT] = "QUIT",       [SMTP_V_VRFY] = "VRFY",         [SMTP_V_HELP] = "HELP",
    [SMTP_V_EXPN] = "EXPN",       [SMTP_V_AUTH] = "AUTH",         [SMTP_V_ETRN] = "ETRN",
    [SMTP_V_TURN] = "TURN",       [SMTP_V_STARTTLS] = "STARTTLS",
};

/* ---- replies ---- */

static bool
tx_ok(const struct smtp_session *s)
{
    return s->ops->tx_room(s->ctx) >= SMTP_REPLY_MAX;
}

/* Format one reply line (CRLF added) into buf; returns its length. */
static size_t PRINTF(3, 0) format_line(char *buf, size_t cap, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, cap - 2, fmt, ap);
    size_t len;

    if (n < 0)
        n = 0;
    len = MIN((size_t)n, cap - 3);
    buf[len++] = '\r';
    buf[len++] = '\n';
    return len;
}

static void PRINTF(2, 3) reply(struct smtp_session *s, const char *fmt, ...)
{
    char buf[SMTP_REPLY_MAX];
    va_list ap;
    size_t len;

    va_start(ap, fmt);
    len = format_line(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    s->ops->reply(s->ctx, buf, len);
}

static void
abort_message(struct smtp_session *s)
{
    if (s->flags & SMTP_F_MSG_OPEN) {
        s->flags &= ~SMTP_F_MSG_OPEN;
        s->ops->msg_abort(s->ctx);
    }
}

/* Forget the transaction (RSET, EHLO, a refused message, a commit). */
static void
reset_transaction(struct smtp_session *s)
{
    abort_message(s);
    env_reset(&s->env);
    s->flags &= ~SMTP_F_MSG_BAD;
    s->msg_error = SMTP_MSG_OK;
    s->bdat_failed = false;
    s->bdat_left = 0;
    s->bdat_last = false;
    s->hdr_pending = false;
    s->hdr_off = 0;
    if (s->state >= SMTP_S_READY && s->state < SMTP_S_QUIT)
        s->state = SMTP_S_READY;
}

static void
close_session(struct smtp_session *s)
{
    abort_message(s);
    s->flags |= SMTP_F_CLOSE;
    s->state = SMTP_S_QUIT;
}

/*
 * A reply to bad client input: counted against smtpd_hard_error_limit. When
 * the limit is reached, the 421 goes out in the same reply() call (both lines
 * fit in SMTP_REPLY_MAX: peer text in replies is cut to PEER_WORD_MAX).
 */
static void PRINTF(3, 4) reply_error(struct smtp_session *s, const char *cmd, const char *fmt, ...)
{
    char buf[SMTP_REPLY_MAX], esc[4 * LOG_PEER_MAX + 1];
    va_list ap;
    size_t len;
    unsigned limit = s->cfg->smtpd_hard_error_limit;

    va_start(ap, fmt);
    len = format_line(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    s->errors++;
    log_escape(esc, sizeof(esc), buf, len - 2);
    log_msg(LOG_INFO, "event=reject client=%s cmd=%s reply=\"%s\"", s->client, cmd, esc);
    if (limit != 0 && s->errors >= limit) {
        int n = snprintf(buf + len, sizeof(buf) - len, "421 4.7.0 %s Error: too many errors\r\n",
                         s->cfg->myhostname);

        /* a long echoed path and a long myhostname do not fit together: the 421 goes
           without the name rather than cut (found by tests/fuzz/fuzz_smtp_server) */
        if (n < 0 || (size_t)n >= sizeof(buf) - len)
            n = snprintf(buf + len, sizeof(buf) - len, "421 4.7.0 Error: too many errors\r\n");
        if (n > 0)
            len = MIN(len + (size_t)n, sizeof(buf));
        log_msg(LOG_INFO, "event=disconnect client=%s reason=too_many_errors errors=%u", s->client,
                s->errors);
        close_session(s);
    }
    s->ops->reply(s->ctx, buf, len);
}

/* ---- body storage ---- */

static void
body_commit(struct smtp_session *s, size_t n)
{
    s->ops->body_commit(s->ctx, n);
    s->env.body_len += n;
}

static void
sync_data(struct smtp_session *s)
{
    const struct smtp_data *d = &s->data;

    /* from every fault seen so far, weightiest first, so that the verdict does not depend
       on how the body was split into reads (found by tests/fuzz/fuzz_smtp_server) */
    if (d->errors != 0) {
        s->flags |= SMTP_F_MSG_BAD;
        if (d->errors & SMTP_DATA_E_TOO_BIG)
            s->msg_error = SMTP_MSG_TOO_BIG;
        else if (d->errors & SMTP_DATA_E_BARE_NEWLINE)
            s->msg_error = SMTP_MSG_BARE_NEWLINE;
        else
            s->msg_error = SMTP_MSG_LINE_TOO_LONG;
    }
}

/* Copy s to out, replacing what must not appear in a header field. */
static size_t
header_safe(char *out, size_t cap, const char *s, size_t n, bool utf8)
{
    size_t o = 0;

    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];

        out[o++] = (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) ? '?' : (char)c;
    }
    out[o] = '\0';
    return o;
}

/*
 * Our trace field (RFC 5321 4.4). Deterministic for one transaction, so a
 * partly stored header is regenerated and continued at hdr_off.
 */
static size_t
received_header(const struct smtp_session *s, char *buf, size_t cap)
{
    const struct envelope *e = &s->env;
    bool utf8 = e->flags & ENV_F_SMTPUTF8;
    char helo[256], date[64], lit[CONFIG_HOST_MAX + 8];
    const char *proto = utf8 ? "UTF8SMTP" : (s->flags & SMTP_F_ESMTP) ? "ESMTP" : "SMTP";
    char with[24 + SMTP_TLS_DESC_MAX + SMTP_AUTH_USER_MAX + 48];
    int n;

    /* "ESMTPSA (TLSv1.3 TLS_AES_128_GCM_SHA256)\r\n\t(authenticated as user)" (RFC 3848) */
    n = snprintf(with, sizeof(with), "%s%s%s", proto, (s->flags & SMTP_F_TLS) ? "S" : "",
                 (s->flags & SMTP_F_AUTHED) ? "A" : "");
    if (s->tls_desc[0] != '\0' && n > 0)
        n += snprintf(with + n, sizeof(with) - (size_t)n, " (%s)", s->tls_desc);
    if ((s->flags & SMTP_F_AUTHED) && n > 0 && (size_t)n < sizeof(with)) {
        char user[SMTP_AUTH_USER_MAX];

        header_safe(user, sizeof(user), s->auth_user, strlen(s->auth_user), false);
        snprintf(with + n, sizeof(with) - (size_t)n, "\r\n\t(authenticated as %s)", user);
    }
    header_safe(helo, sizeof(helo), s->helo, s->helo_len, utf8);
    if (s->client[0] == '\0')
        snprintf(lit, sizeof(lit), "unknown");
    else if (strchr(s->client, ':') != NULL)
        snprintf(lit, sizeof(lit), "[IPv6:%s]", s->client);
    else
        snprintf(lit, sizeof(lit), "[%s]", s->client);
    rfc5322_date(date, sizeof(date), e->arrival);
    if (e->nrcpt == 1) {
        struct slice r = env_get(e, e->rcpt[0].addr);

        n = snprintf(buf, cap,
                     "Received: from %s (%s)\r\n\tby %s (ringmail) with %s id %s\r\n"
                     "\tfor <%.*s>; %s\r\n",
                     helo, lit, s->cfg->myhostname, with, e->qid, (int)r.len, r.p, date);
    } else {
        n = snprintf(buf, cap,
                     "Received: from %s (%s)\r\n\tby %s (ringmail) with %s id %s;\r\n\t%s\r\n",
                     helo, lit, s->cfg->myhostname, with, e->qid, date);
    }
    return n < 0 ? 0 : MIN((size_t)n, cap - 1);
}

/* Store (the rest of) the Received: header; false when body space ran out. */
static bool
write_received(struct smtp_session *s)
{
    char h[RECEIVED_MAX];
    size_t n = received_header(s, h, sizeof(h));

    while (s->hdr_off < n) {
        size_t room = 0, k;
        char *p = s->ops->body_space(s->ctx, &room);

        if (p == NULL || room == 0)
            return false;
        k = MIN(room, n - s->hdr_off);
        memcpy(p, h + s->hdr_off, k);
        body_commit(s, k);
        s->hdr_off = (uint16_t)(s->hdr_off + k);
    }
    s->hdr_pending = false;
    return true;
}

/* msg_begin(); on failure the reply is sent and the transaction is reset. */
static int
begin_message(struct smtp_session *s, const char *cmd)
{
    int rc;

    s->env.body_len = 0;
    rc = s->ops->msg_begin(s->ctx, &s->env);
    if (rc < 0) {
        if (rc == -EAGAIN)
            reply(s, "451 4.3.1 Insufficient system resources, try again later");
        else
            reply(s, "452 4.3.1 Insufficient system storage");
        log_msg(LOG_INFO, "event=defer client=%s cmd=%s reason=msg_begin err=%d", s->client, cmd,
                -rc);
        reset_transaction(s);
        return rc;
    }
    s->flags |= SMTP_F_MSG_OPEN;
    s->flags &= ~SMTP_F_MSG_BAD;
    s->msg_error = SMTP_MSG_OK;
    s->hdr_pending = true;
    s->hdr_off = 0;
    return 0;
}

/* The message is refused: what was stored is dropped, then the error reply. */
static void
refuse_message(struct smtp_session *s, const char *cmd)
{
    enum smtp_msg_error why = s->msg_error;

    abort_message(s);
    s->nmsg_refused++;
    reset_transaction(s);
    switch (why) {
    case SMTP_MSG_TOO_BIG:
        reply_error(s, cmd, "552 5.3.4 Error: message file too big");
        break;
    case SMTP_MSG_LINE_TOO_LONG:
        reply_error(s, cmd, "552 5.3.4 Error: message line too long");
        break;
    case SMTP_MSG_BARE_NEWLINE:
    case SMTP_MSG_OK:
        reply_error(s, cmd, "550 5.5.2 Error: bare <LF> or <CR> received");
        break;
    }
}

/* The end of the body: hand the message over, or refuse it. */
static void
end_of_message(struct smtp_session *s, const char *cmd)
{
    sync_data(s);
    if (s->flags & SMTP_F_MSG_BAD) {
        refuse_message(s, cmd);
        return;
    }
    s->flags &= ~SMTP_F_MSG_OPEN;
    s->flags |= SMTP_F_WAIT_COMMIT;
    s->state = SMTP_S_READY;
    /* last: the driver may call smtp_session_committed() from inside */
    s->ops->msg_end(s->ctx, &s->env);
}

/* A non-last BDAT chunk is fully read. */
static void
bdat_chunk_done(struct smtp_session *s)
{
    sync_data(s);
    if (s->flags & SMTP_F_MSG_BAD) {
        refuse_message(s, "BDAT");
        return;
    }
    s->state = SMTP_S_RCPT;
    reply(s, "250 2.0.0 %" PRIu64 " octets received", s->bdat_size);
}

/*
 * DATA body or BDAT chunk input. Returns octets consumed; the caller stops
 * when the state is still DATA/BDAT afterwards (need input, output or room).
 */
static size_t
data_input(struct smtp_session *s, const char *buf, size_t len)
{
    size_t off = 0;

    if (s->state == SMTP_S_BDAT && s->bdat_failed) {
        /* skipping a refused chunk replies nothing: no tx room needed (a refused
           BDAT 0 is over at once; found by tests/fuzz/fuzz_smtp_server) */
        size_t n = (size_t)MIN((uint64_t)len, s->bdat_left);

        s->bdat_left -= n;
        if (s->bdat_left == 0) {
            s->bdat_failed = false;
            s->state = s->bdat_resume;
        }
        return n;
    }
    if (!tx_ok(s))
        return 0; /* room for the reply at the end first */
    if (s->hdr_pending && !write_received(s))
        return 0;
    for (;;) {
        size_t avail = len - off, used = 0, made = 0, room = 0;
        char *out = NULL;
        enum smtp_data_rc rc;

        if (s->state == SMTP_S_BDAT) {
            if (s->bdat_left == 0) {
                if (!s->bdat_last) {
                    bdat_chunk_done(s);
                    return off;
                }
                smtp_data_finish(&s->data); /* idempotent */
            }
            avail = (size_t)MIN((uint64_t)avail, s->bdat_left);
        }
        if (s->data.errors == 0) {
            out = s->ops->body_space(s->ctx, &room);
            if (out == NULL || room == 0)
                return off;
        }
        rc = smtp_data_scan(&s->data, avail > 0 ? buf + off : "", avail, &used, out, room, &made);
        if (made > 0)
            body_commit(s, made);
        off += used;
        if (s->state == SMTP_S_BDAT)
            s->bdat_left -= used;
        sync_data(s);
        if (rc == SMTP_DATA_END) {
            end_of_message(s, s->state == SMTP_S_BDAT ? "BDAT" : "DATA");
            return off;
        }
        if (s->data.npend > 0 || used < avail)
            continue; /* output full: more body space, or pause */
        if (s->state == SMTP_S_BDAT && s->bdat_left == 0)
            continue; /* chunk end */
        return off;   /* input used up */
    }
}

/* ---- commands ---- */

static bool
starttls_offered(const struct smtp_session *s)
{
    return (s->flags & (SMTP_F_CAN_TLS | SMTP_F_TLS)) == SMTP_F_CAN_TLS;
}

/* AUTH is offered over TLS, or to mynetworks over plaintext when smtpd_tls_auth_only is off. */
static bool
auth_offered(const struct smtp_session *s)
{
    if ((s->flags & (SMTP_F_CAN_AUTH | SMTP_F_AUTHED)) != SMTP_F_CAN_AUTH)
        return false;
    return (s->flags & SMTP_F_TLS) ||
           (!s->cfg->smtpd_tls_auth_only && (s->flags & SMTP_F_TRUSTED) &&
            s->cfg->smtpd_tls_security_level != SMTPD_TLS_ENCRYPT);
}

/* smtpd_tls_security_level: encrypt and no TLS yet: MAIL and AUTH are refused. */
static bool
tls_required(struct smtp_session *s, const char *cmd)
{
    if (s->cfg->smtpd_tls_security_level != SMTPD_TLS_ENCRYPT || (s->flags & SMTP_F_TLS))
        return false;
    reply_error(s, cmd, "530 5.7.0 Must issue a STARTTLS command first");
    return true;
}

static void
cmd_helo(struct smtp_session *s, const struct smtp_cmd *c, bool ehlo)
{
    const struct ringmail_config *cfg = s->cfg;
    size_t n;

    if (c->arg.len == 0) {
        reply_error(s, ehlo ? "EHLO" : "HELO", "501 5.5.4 Syntax: %s hostname",
                    ehlo ? "EHLO" : "HELO");
        return;
    }
    if (s->state == SMTP_S_CONNECTED)
        s->state = SMTP_S_READY;
    reset_transaction(s);
    n = MIN(c->arg.len, sizeof(s->helo) - 1);
    memcpy(s->helo, c->arg.p, n);
    s->helo[n] = '\0';
    s->helo_len = (uint8_t)n;
    if (!ehlo) {
        s->flags &= ~SMTP_F_ESMTP;
        reply(s, "250 %s", cfg->myhostname);
        return;
    }
    s->flags |= SMTP_F_ESMTP;
    char size[32] = "";

    if (cfg->message_size_limit != 0)
        snprintf(size, sizeof(size), " %" PRIu64, cfg->message_size_limit);
    reply(s,
          "250-%s\r\n250-PIPELINING\r\n250-SIZE%s\r\n250-8BITMIME\r\n%s%s"
          "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING",
          cfg->myhostname, size, starttls_offered(s) ? "250-STARTTLS\r\n" : "",
          auth_offered(s) ? "250-AUTH PLAIN LOGIN\r\n" : "");
}

static struct smtp_limits
session_limits(const struct smtp_session *s)
{
    struct smtp_limits lim = {
        .max_line = s->cfg->command_line_limit ? s->cfg->command_line_limit : 2048,
        .max_path = SMTP_PATH_MAX,
        .max_params = SMTP_PARAM_MAX,
    };

    if (lim.max_line < 512)
        lim.max_line = 512; /* RFC 5321 4.5.3.1.4 */
    return lim;
}

/* Shared by MAIL and RCPT: the parse verdict as a reply; true when OK. */
static bool
path_ok(struct smtp_session *s, enum smtp_path_rc rc, bool mail)
{
    const char *cmd = mail ? "MAIL" : "RCPT";

    switch (rc) {
    case SMTP_PATH_OK:
        return true;
    case SMTP_PATH_SYNTAX:
        reply_error(s, cmd,
                    mail ? "501 5.5.4 Syntax: MAIL FROM:<address>"
                         : "501 5.5.4 Syntax: RCPT TO:<address>");
        break;
    case SMTP_PATH_BAD_ADDR:
    case SMTP_PATH_TOO_LONG:
        reply_error(s, cmd,
                    mail ? "501 5.1.7 Bad sender address syntax"
                         : "501 5.1.3 Bad recipient address syntax");
        break;
    case SMTP_PATH_BAD_PARAM:
        reply_error(s, cmd, "501 5.5.4 Syntax: bad parameter syntax");
        break;
    case SMTP_PATH_TOO_MANY_PARAMS:
        reply_error(s, cmd, "501 5.5.4 Error: too many parameters");
        break;
    }
    return false;
}

static void
unsupported_option(struct smtp_session *s, const char *cmd, const struct smtp_param *p)
{
    reply_error(s, cmd, "555 5.5.4 Unsupported option: %.*s", (int)MIN(p->key.len, PEER_WORD_MAX),
                p->key.p);
}

static void
cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct smtp_limits lim = session_limits(s);
    struct smtp_path path;
    uint32_t eflags = 0;
    struct envelope *e = &s->env;

    if (s->state < SMTP_S_READY) {
        reply_error(s, "MAIL", "503 5.5.1 Error: send HELO/EHLO first");
        return;
    }
    if (s->state != SMTP_S_READY || (s->flags & SMTP_F_MSG_OPEN)) {
        reply_error(s, "MAIL", "503 5.5.1 Error: nested MAIL command");
        return;
    }
    if (tls_required(s, "MAIL"))
        return;
    if ((s->flags & SMTP_F_SUBMISSION) && !(s->flags & SMTP_F_AUTHED)) {
        reply_error(s, "MAIL", "530 5.7.0 Authentication required");
        return;
    }
    if (!path_ok(s, smtp_parse_path(c->arg, "FROM:", SMTP_PATH_F_NULL_OK, &lim, &path), true))
        return;
    for (unsigned i = 0; i < path.nparam; i++) {
        const struct smtp_param *p = &path.param[i];

        if (!(s->flags & SMTP_F_ESMTP)) {
            unsupported_option(s, "MAIL", p);
            return;
        }
        if (slice_eq_nocase(p->key, "SIZE")) {
            uint64_t size;

            if (p->value.p == NULL || !smtp_parse_u64(p->value, &size)) {
                reply_error(s, "MAIL", "501 5.5.4 Bad message size syntax");
                return;
            }
            if (s->cfg->message_size_limit != 0 && size > s->cfg->message_size_limit) {
                reply_error(s, "MAIL", "552 5.3.4 Message size exceeds fixed limit");
                return;
            }
        } else if (slice_eq_nocase(p->key, "BODY")) {
            if (p->value.p != NULL && slice_eq_nocase(p->value, "8BITMIME")) {
                eflags |= ENV_F_8BITMIME;
            } else if (p->value.p == NULL || !slice_eq_nocase(p->value, "7BIT")) {
                reply_error(s, "MAIL", "501 5.5.4 Syntax: BODY=7BIT|8BITMIME");
                return;
            }
        } else if (slice_eq_nocase(p->key, "SMTPUTF8")) {
            if (p->value.p != NULL) {
                reply_error(s, "MAIL", "501 5.5.4 Syntax: SMTPUTF8 takes no value");
                return;
            }
            eflags |= ENV_F_SMTPUTF8;
        } else if (slice_eq_nocase(p->key, "RET") || slice_eq_nocase(p->key, "ENVID")) {
            continue; /* DSN (RFC 3461): checked together below */
        } else if (slice_eq_nocase(p->key, "AUTH") && (s->flags & SMTP_F_CAN_AUTH) &&
                   p->value.p != NULL) {
            continue; /* RFC 4954 5: accepted; ringmail does not pass it on */
        } else {
            unsupported_option(s, "MAIL", p);
            return;
        }
    }
    {
        struct dsn_mail dm;
        enum dsn_param_rc rc = dsn_parse_mail_params(path.params, &dm);

        if (rc != DSN_PARAM_OK) {
            reply_error(s, "MAIL", "%s", dsn_param_reply(rc));
            return;
        }
    }
    if (path.utf8 && !(eflags & ENV_F_SMTPUTF8)) {
        reply_error(s, "MAIL", "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
        return;
    }
    if (s->ops->limit != NULL && !s->ops->limit(s->ctx, SMTP_LIMIT_MESSAGE)) {
        reply_error(s, "MAIL", "450 4.7.1 Error: too much mail from %s", s->client);
        return;
    }
    env_reset(e);
    if (env_put(e, &e->client, s->client, strlen(s->client)) < 0 ||
        env_put(e, &e->helo, s->helo, s->helo_len) < 0 ||
        env_put(e, &e->sender, path.mailbox.p, path.mailbox.len) < 0 ||
        env_put(e, &e->mail_params, path.params.p, path.params.len) < 0) {
        env_reset(e);
        reply(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    e->flags = eflags | ((s->flags & SMTP_F_ESMTP) ? ENV_F_ESMTP : 0);
    s->state = SMTP_S_MAIL;
    reply(s, "250 2.1.0 Ok");
}

static void
cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct smtp_limits lim = session_limits(s);
    struct smtp_path path;
    unsigned limit = s->cfg->smtpd_recipient_limit;

    if (s->state != SMTP_S_MAIL && s->state != SMTP_S_RCPT) {
        reply_error(s, "RCPT", "503 5.5.1 Error: need MAIL command");
        return;
    }
    if (s->flags & SMTP_F_MSG_OPEN) {
        reply_error(s, "RCPT", "503 5.5.1 Error: RCPT after BDAT");
        return;
    }
    if (!path_ok(s, smtp_parse_path(c->arg, "TO:", SMTP_PATH_F_POSTMASTER_OK, &lim, &path),
                 false)) {
        s->nrcpt_refused++;
        return;
    }
    for (unsigned i = 0; i < path.nparam; i++) {
        const struct smtp_param *p = &path.param[i];

        /* only DSN's are advertised for RCPT (RFC 5321 4.1.1.11) */
        if (!(s->flags & SMTP_F_ESMTP) ||
            (!slice_eq_nocase(p->key, "NOTIFY") && !slice_eq_nocase(p->key, "ORCPT"))) {
            s->nrcpt_refused++;
            unsupported_option(s, "RCPT", p);
            return;
        }
    }
    if (path.nparam > 0) {
        struct dsn_rcpt dr;
        enum dsn_param_rc rc = dsn_parse_rcpt_params(path.params, &dr);

        if (rc != DSN_PARAM_OK) {
            s->nrcpt_refused++;
            reply_error(s, "RCPT", "%s", dsn_param_reply(rc));
            return;
        }
    }
    if (path.utf8 && !(s->env.flags & ENV_F_SMTPUTF8)) {
        s->nrcpt_refused++;
        reply_error(s, "RCPT", "553 5.6.7 Must declare SMTPUTF8 to send unicode address");
        return;
    }
    if (!(s->flags & (SMTP_F_TRUSTED | SMTP_F_AUTHED)) &&
        !slice_eq_nocase(path.mailbox, "postmaster") &&
        !route_relay_allowed(s->cfg, route_domain_of(path.mailbox))) {
        /* never an open relay: mynetworks and authenticated clients may send anywhere,
           others only to relay_domains */
        s->nrcpt_refused++;
        reply_error(s, "RCPT", "554 5.7.1 <%.*s>: Relay access denied",
                    (int)MIN(path.mailbox.len, 256), path.mailbox.p);
        return;
    }
    if (limit != 0 && s->env.nrcpt >= limit) {
        s->nrcpt_refused++;
        reply_error(s, "RCPT", "452 4.5.3 Error: too many recipients");
        return;
    }
    if (s->ops->limit != NULL && !s->ops->limit(s->ctx, SMTP_LIMIT_RCPT)) {
        s->nrcpt_refused++;
        reply_error(s, "RCPT", "450 4.7.1 Error: too many recipients from %s", s->client);
        return;
    }
    if (env_add_rcpt(&s->env, path.mailbox, path.params) < 0) {
        reply(s, "452 4.3.1 Insufficient system storage");
        return;
    }
    s->state = SMTP_S_RCPT;
    reply(s, "250 2.1.5 Ok");
}

static void
cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
    const struct ringmail_config *cfg = s->cfg;

    if (c->arg.len != 0) {
        reply_error(s, "DATA", "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->flags & SMTP_F_MSG_OPEN) {
        reply_error(s, "DATA", "503 5.5.1 Error: DATA after BDAT");
        return;
    }
    if (s->state != SMTP_S_RCPT) {
        reply_error(s, "DATA", "503 5.5.1 Error: need RCPT command");
        return;
    }
    /*
     * msg_begin() before the 354, not after: a refusal is then a plain
     * 451/452 to DATA and the client never sends a body we would have to
     * read and throw away (RFC 2920 makes DATA the last command of a batch).
     */
    if (begin_message(s, "DATA") < 0)
        return;
    /* a DATA line ending in bare LF (normalize) does not make a "." first line the end */
    smtp_data_init(&s->data, SMTP_DATA_M_DOT, cfg->message_size_limit, cfg->max_line_length,
                   cfg->bare_newline == BARE_NEWLINE_REJECT, c->crlf);
    sync_data(s);
    s->state = SMTP_S_DATA;
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* Read and drop a refused chunk's octets (RFC 3030 3: they are sent anyway). */
static void
skip_chunk(struct smtp_session *s, uint64_t size)
{
    if (s->state == SMTP_S_QUIT)
        return; /* the error limit closed the session */
    s->bdat_resume = s->state;
    s->bdat_failed = true;
    s->bdat_left = size;
    s->bdat_last = false;
    s->state = SMTP_S_BDAT;
}

static void
cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
    const struct ringmail_config *cfg = s->cfg;
    const char *sp = memchr(c->arg.p, ' ', c->arg.len);
    struct slice num = slice_make(c->arg.p, sp ? (size_t)(sp - c->arg.p) : c->arg.len);
    struct slice rest = slice_make(c->arg.p + num.len, c->arg.len - num.len);
    uint64_t size;
    bool last = false;

    while (rest.len > 0 && rest.p[0] == ' ') {
        rest.p++;
        rest.len--;
    }
    if (rest.len > 0) {
        if (!slice_eq_nocase(rest, "LAST"))
            num.len = 0; /* fail below */
        last = true;
    }
    if (!smtp_parse_u64(num, &size)) {
        /* the chunk size is unknown: nothing can be skipped */
        reply_error(s, "BDAT", "501 5.5.4 Syntax: BDAT size [LAST]");
        return;
    }
    if (s->state != SMTP_S_RCPT) {
        reply_error(s, "BDAT", "503 5.5.1 Error: need RCPT command");
        skip_chunk(s, size);
        return;
    }
    if (!(s->flags & SMTP_F_MSG_OPEN)) {
        if (begin_message(s, "BDAT") < 0) {
            skip_chunk(s, size);
            return;
        }
        smtp_data_init(&s->data, SMTP_DATA_M_RAW, cfg->message_size_limit, cfg->max_line_length,
                       cfg->bare_newline == BARE_NEWLINE_REJECT, true);
        sync_data(s);
    }
    s->bdat_failed = false;
    s->bdat_left = size;
    s->bdat_size = size;
    s->bdat_last = last;
    s->state = SMTP_S_BDAT;
}

static void
cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->flags & SMTP_F_TLS) {
        reply_error(s, "STARTTLS", "554 5.5.1 Error: TLS already active");
        return;
    }
    if (!(s->flags & SMTP_F_CAN_TLS)) {
        reply_error(s, "STARTTLS", "502 5.5.1 Error: command not implemented");
        return;
    }
    if (c->arg.len != 0) {
        reply_error(s, "STARTTLS", "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    if (s->state < SMTP_S_READY) {
        reply_error(s, "STARTTLS", "503 5.5.1 Error: send EHLO first");
        return;
    }
    if (s->state != SMTP_S_READY || (s->flags & SMTP_F_MSG_OPEN)) {
        reply_error(s, "STARTTLS", "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    s->flags |= SMTP_F_STARTTLS; /* nothing more is read in plaintext */
}

/* ---- AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN ---- */

static void
auth_end(struct smtp_session *s)
{
    s->auth_step = AUTH_NONE;
    if (s->state == SMTP_S_AUTH)
        s->state = SMTP_S_READY;
    if (!(s->flags & SMTP_F_AUTHED))
        s->auth_user[0] = '\0';
}

/* A user name we keep and log: 1..SMTP_AUTH_USER_MAX-1 octets, no control characters. */
static bool
auth_user_ok(const unsigned char *u, size_t n)
{
    if (n == 0 || n >= SMTP_AUTH_USER_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return false;
    }
    return true;
}

/* A failed AUTH: 535, and past smtpd_auth_failure_limit or the client's failure rate, 421. */
static void
auth_fail(struct smtp_session *s, const char *why)
{
    log_msg(LOG_INFO, "event=auth client=%s result=fail reason=%s", s->client, why);
    auth_end(s);
    s->auth_failures++;
    reply_error(s, "AUTH", "535 5.7.8 Error: authentication failed");
    if (s->flags & SMTP_F_CLOSE)
        return; /* smtpd_hard_error_limit */
    if (s->auth_failures >= s->cfg->smtpd_auth_failure_limit ||
        (s->ops->limit != NULL && !s->ops->limit(s->ctx, SMTP_LIMIT_AUTH_FAIL))) {
        reply(s, "421 4.7.0 %s Error: too many authentication failures", s->cfg->myhostname);
        log_msg(LOG_INFO, "event=disconnect client=%s reason=auth_failures failures=%u", s->client,
                (unsigned)s->auth_failures);
        close_session(s);
    }
}

/* Hand the credentials to the driver; they live only on the caller's stack. */
static void
auth_verify(struct smtp_session *s, const unsigned char *user, size_t ulen,
            const unsigned char *pass, size_t plen)
{
    if (!auth_user_ok(user, ulen) || memchr(pass, '\0', plen) != NULL) {
        auth_fail(s, "bad_user_name");
        return;
    }
    memcpy(s->auth_user, user, ulen);
    s->auth_user[ulen] = '\0';
    s->auth_step = AUTH_NONE;
    s->state = SMTP_S_READY;
    s->flags |= SMTP_F_WAIT_AUTH;
    s->ops->auth_verify(s->ctx, (const char *)user, ulen, (const char *)pass, plen);
}

/* One SASL response (base64 text, no CRLF) for the current step. */
static void
auth_response(struct smtp_session *s, const char *b64, size_t n)
{
    unsigned char raw[BASE64_DECODED_MAX(SASL_LINE_MAX)];
    long len;

    if (n == 1 && b64[0] == '*') {
        auth_end(s);
        reply_error(s, "AUTH", "501 5.7.0 Authentication aborted");
        return;
    }
    if (n == 1 && b64[0] == '=')
        len = 0; /* RFC 4954 4: an empty initial response */
    else if (n > SASL_LINE_MAX || (len = base64_decode(b64, n, raw)) < 0) {
        auth_end(s);
        reply_error(s, "AUTH", "501 5.5.2 Error: cannot decode response");
        return;
    }
    switch (s->auth_step) {
    case AUTH_PLAIN: {
        /* authzid NUL authcid NUL passwd; authzid empty or the same as authcid */
        const unsigned char *z = raw, *u, *p, *end = raw + len;
        const unsigned char *nul1 = memchr(z, '\0', (size_t)len), *nul2;

        if (nul1 == NULL || (nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1))) == NULL) {
            explicit_bzero(raw, sizeof(raw));
            auth_end(s);
            reply_error(s, "AUTH", "501 5.5.2 Error: malformed PLAIN response");
            return;
        }
        u = nul1 + 1;
        p = nul2 + 1;
        if (nul1 != z &&
            ((size_t)(nul1 - z) != (size_t)(nul2 - u) || memcmp(z, u, (size_t)(nul2 - u)) != 0))
            auth_fail(s, "authzid_differs");
        else
            auth_verify(s, u, (size_t)(nul2 - u), p, (size_t)(end - p));
        break;
    }
    case AUTH_LOGIN_USER:
        if (!auth_user_ok(raw, (size_t)len)) {
            auth_fail(s, "bad_user_name");
            break;
        }
        memcpy(s->auth_user, raw, (size_t)len);
        s->auth_user[len] = '\0';
        s->auth_step = AUTH_LOGIN_PASS;
        reply(s, "334 UGFzc3dvcmQ6"); /* "Password:" */
        break;
    case AUTH_LOGIN_PASS: {
        char user[SMTP_AUTH_USER_MAX];
        size_t ulen = strlen(s->auth_user);

        memcpy(user, s->auth_user, ulen + 1);
        auth_verify(s, (const unsigned char *)user, ulen, raw, (size_t)len);
        break;
    }
    default:
        BUG_ON(1);
    }
    explicit_bzero(raw, sizeof(raw));
}

static void
cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct slice mech = c->arg, initial = { NULL, 0 };
    const char *sp = memchr(c->arg.p, ' ', c->arg.len);

    if (!(s->flags & SMTP_F_CAN_AUTH)) {
        reply_error(s, "AUTH", "502 5.5.1 Error: command not implemented");
        return;
    }
    if (!(s->flags & SMTP_F_ESMTP) || s->state < SMTP_S_READY) {
        reply_error(s, "AUTH", "503 5.5.1 Error: send EHLO first");
        return;
    }
    if (s->flags & SMTP_F_AUTHED) {
        reply_error(s, "AUTH", "503 5.5.1 Error: already authenticated");
        return;
    }
    if (s->state != SMTP_S_READY || (s->flags & SMTP_F_MSG_OPEN)) {
        reply_error(s, "AUTH", "503 5.5.1 Error: MAIL transaction in progress");
        return;
    }
    if (tls_required(s, "AUTH"))
        return;
    if (!auth_offered(s)) {
        reply_error(s, "AUTH",
                    "538 5.7.11 Encryption required for requested authentication "
                    "mechanism");
        return;
    }
    if (sp != NULL) {
        mech = slice_make(c->arg.p, (size_t)(sp - c->arg.p));
        initial = slice_make(sp + 1, c->arg.len - mech.len - 1);
    }
    if (slice_eq_nocase(mech, "PLAIN")) {
        s->auth_step = AUTH_PLAIN;
    } else if (slice_eq_nocase(mech, "LOGIN")) {
        s->auth_step = AUTH_LOGIN_USER;
    } else if (mech.len == 0) {
        reply_error(s, "AUTH", "501 5.5.4 Syntax: AUTH mechanism");
        return;
    } else {
        reply_error(s, "AUTH", "504 5.5.4 Unrecognized authentication type");
        return;
    }
    s->state = SMTP_S_AUTH;
    if (initial.p != NULL) {
        auth_response(s, initial.p, initial.len);
        return;
    }
    if (s->auth_step == AUTH_PLAIN)
        reply(s, "334 ");
    else
        reply(s, "334 VXNlcm5hbWU6"); /* "Username:" */
}

/* The next line of an AUTH exchange; returns the octets used, 0 when incomplete. */
static size_t
auth_input(struct smtp_session *s, const char *buf, size_t len)
{
    const char *lf = memchr(buf, '\n', MIN(len, (size_t)SASL_LINE_MAX + 2));
    size_t n;

    if (lf == NULL) {
        if (len < SASL_LINE_MAX + 2)
            return 0;
        auth_end(s);
        s->flags |= SMTP_F_SKIP_LINE;
        reply_error(s, "AUTH", "500 5.5.6 Error: line too long");
        return len;
    }
    n = (size_t)(lf - buf);
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    auth_response(s, buf, n);
    return (size_t)(lf - buf) + 1;
}

static void
dispatch(struct smtp_session *s, const struct smtp_cmd *c)
{
    switch (c->verb) {
    case SMTP_V_EHLO:
        cmd_helo(s, c, true);
        break;
    case SMTP_V_HELO:
        cmd_helo(s, c, false);
        break;
    case SMTP_V_MAIL:
        cmd_mail(s, c);
        break;
    case SMTP_V_RCPT:
        cmd_rcpt(s, c);
        break;
    case SMTP_V_DATA:
        cmd_data(s, c);
        break;
    case SMTP_V_BDAT:
        cmd_bdat(s, c);
        break;
    case SMTP_V_RSET:
        if (c->arg.len != 0) {
            reply_error(s, "RSET", "501 5.5.4 Syntax: RSET");
            break;
        }
        reset_transaction(s);
        reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_V_NOOP:
        reply(s, "250 2.0.0 Ok");
        break;
    case SMTP_V_QUIT:
        reply(s, "221 2.0.0 Bye");
        reset_transaction(s);
        close_session(s);
        break;
    case SMTP_V_VRFY:
        if (c->arg.len == 0) {
            reply_error(s, "VRFY", "501 5.5.4 Syntax: VRFY address");
            break;
        }
        reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
        break;
    case SMTP_V_HELP:
        reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
        break;
    case SMTP_V_STARTTLS:
        cmd_starttls(s, c);
        break;
    case SMTP_V_AUTH:
        cmd_auth(s, c);
        break;
    case SMTP_V_EXPN:
    case SMTP_V_ETRN:
    case SMTP_V_TURN:
        reply_error(s, verb_name[c->verb], "502 5.5.1 Error: command not implemented");
        break;
    case SMTP_V_UNKNOWN:
        reply_error(s, "UNKNOWN", "500 5.5.2 Error: command not recognized");
        break;
    }
}

/* ---- the public interface ---- */

void
smtp_session_init(struct smtp_session *s, const struct ringmail_config *cfg,
                  const struct smtp_server_ops *ops, void *ctx, const char *client)
{
    memset(s, 0, sizeof(*s));
    s->cfg = cfg;
    s->ops = ops;
    s->ctx = ctx;
    s->state = SMTP_S_PREGREET;
    smtp_session_set_client(s, client);
    env_init(&s->env);
}

void
smtp_session_fini(struct smtp_session *s)
{
    abort_message(s);
    env_free(&s->env);
}

void
smtp_session_greet(struct smtp_session *s)
{
    if (s->state != SMTP_S_PREGREET || (s->flags & SMTP_F_CLOSE))
        return;
    s->state = SMTP_S_CONNECTED;
    reply(s, "220 %s ESMTP ringmail", s->cfg->myhostname);
}

size_t
smtp_session_input(struct smtp_session *s, const char *buf, size_t len)
{
    struct smtp_limits lim = session_limits(s);
    size_t off = 0;

    if (s->state == SMTP_S_PREGREET) {
        if (len > 0 && !(s->flags & SMTP_F_CLOSE)) {
            reply(s, "554 5.5.0 Error: SMTP protocol synchronization");
            log_msg(LOG_INFO, "event=disconnect client=%s reason=early_talker", s->client);
            close_session(s);
        }
        return 0;
    }
    for (;;) {
        struct smtp_cmd cmd;
        size_t used = 0;
        enum smtp_parse_rc rc;

        if (s->flags & (SMTP_F_CLOSE | SMTP_F_WAIT_COMMIT | SMTP_F_WAIT_AUTH | SMTP_F_STARTTLS))
            break;
        if (s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT) {
            off += data_input(s, buf + off, len - off);
            if (s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT)
                break; /* needs input, body space or tx room */
            continue;
        }
        if (off == len)
            break;
        if (s->flags & SMTP_F_SKIP_LINE) {
            const char *lf = memchr(buf + off, '\n', len - off);

            if (lf == NULL) {
                off = len;
                break;
            }
            off = (size_t)(lf - buf) + 1;
            s->flags &= ~SMTP_F_SKIP_LINE;
            continue;
        }
        if (!tx_ok(s))
            break;
        if (s->state == SMTP_S_AUTH) {
            used = auth_input(s, buf + off, len - off);
            if (used == 0)
                break;
            off += used;
            continue;
        }
        rc = smtp_parse_cmd(buf + off, len - off, &lim, &s->scanned, &cmd, &used);
        switch (rc) {
        case SMTP_PARSE_NEED_MORE:
            return off;
        case SMTP_PARSE_TOO_LONG:
            off += used;
            s->flags |= SMTP_F_SKIP_LINE;
            reply_error(s, "UNKNOWN", "500 5.5.6 Error: line too long");
            break;
        case SMTP_PARSE_NUL:
            off += used;
            reply_error(s, "UNKNOWN", "500 5.5.2 Error: NUL character in command");
            break;
        case SMTP_PARSE_BARE_LF:
            off += used;
            if (s->cfg->bare_newline == BARE_NEWLINE_REJECT) {
                reply_error(s, verb_name[cmd.verb], "500 5.5.2 Error: bare <LF> received");
                break;
            }
            dispatch(s, &cmd);
            break;
        case SMTP_PARSE_OK:
            off += used;
            dispatch(s, &cmd);
            break;
        }
    }
    return off;
}

void
smtp_session_committed(struct smtp_session *s, int rc)
{
    if (!(s->flags & SMTP_F_WAIT_COMMIT))
        return;
    s->flags &= ~SMTP_F_WAIT_COMMIT;
    if (rc == 0) {
        s->nmsg_accepted++;
        reply(s, "250 2.0.0 Ok: queued as %s", s->env.qid);
    } else {
        s->nmsg_refused++;
        reply(s, "452 4.3.1 Insufficient system storage");
    }
    reset_transaction(s);
}

void
smtp_session_timeout(struct smtp_session *s)
{
    if (s->flags & SMTP_F_CLOSE)
        return;
    reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->myhostname);
    log_msg(LOG_INFO, "event=disconnect client=%s reason=timeout state=%d", s->client,
            (int)s->state);
    close_session(s);
}

void
smtp_session_shutdown(struct smtp_session *s)
{
    if (s->flags & SMTP_F_CLOSE)
        return;
    reply(s, "421 4.3.2 %s Service shutting down, closing transmission channel",
          s->cfg->myhostname);
    log_msg(LOG_INFO, "event=disconnect client=%s reason=shutdown state=%d", s->client,
            (int)s->state);
    close_session(s);
}

bool
smtp_session_idle(const struct smtp_session *s)
{
    return s->state <= SMTP_S_READY && !(s->flags & (SMTP_F_MSG_OPEN | SMTP_F_WAIT_COMMIT |
                                                     SMTP_F_WAIT_AUTH | SMTP_F_STARTTLS));
}

void
smtp_session_too_slow(struct smtp_session *s)
{
    if (s->flags & SMTP_F_CLOSE)
        return;
    reply(s, "421 4.4.2 %s Error: data rate too low", s->cfg->myhostname);
    close_session(s);
}

void
smtp_session_busy(struct smtp_session *s)
{
    reply(s, "421 4.3.2 %s Error: too many connections", s->cfg->myhostname);
    close_session(s);
}

uint64_t
smtp_session_timeout_ms(const struct smtp_session *s)
{
    if (s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT)
        return s->cfg->smtpd_data_timeout;
    return s->cfg->smtpd_timeout;
}

bool
smtp_session_wants_input(const struct smtp_session *s)
{
    return !(s->flags & (SMTP_F_CLOSE | SMTP_F_WAIT_COMMIT | SMTP_F_WAIT_AUTH | SMTP_F_STARTTLS));
}

void
smtp_session_set_client(struct smtp_session *s, const char *client)
{
    snprintf(s->client, sizeof(s->client), "%s", client != NULL ? client : "");
    s->flags &= ~SMTP_F_TRUSTED;
    if (route_client_trusted(s->cfg, s->client))
        s->flags |= SMTP_F_TRUSTED;
}

void
smtp_session_tls_started(struct smtp_session *s, const char *desc)
{
    snprintf(s->tls_desc, sizeof(s->tls_desc), "%s", desc != NULL ? desc : "");
    s->flags |= SMTP_F_TLS;
    if (!(s->flags & SMTP_F_STARTTLS))
        return; /* implicit TLS, before the greeting */
    /* RFC 3207 4.2: discard all knowledge obtained from the client */
    s->flags &= ~(SMTP_F_STARTTLS | SMTP_F_ESMTP | SMTP_F_AUTHED);
    reset_transaction(s);
    s->state = SMTP_S_CONNECTED;
    s->helo[0] = '\0';
    s->helo_len = 0;
    s->auth_user[0] = '\0';
    s->scanned = 0;
}

void
smtp_session_auth_done(struct smtp_session *s, int result)
{
    if (!(s->flags & SMTP_F_WAIT_AUTH))
        return;
    s->flags &= ~SMTP_F_WAIT_AUTH;
    if (result == SMTP_AUTH_TEMPFAIL) {
        log_msg(LOG_WARN, "event=auth client=%s result=tempfail user=%s", s->client, s->auth_user);
        s->auth_user[0] = '\0';
        reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    if (result == SMTP_AUTH_OK) {
        s->flags |= SMTP_F_AUTHED;
        log_msg(LOG_INFO, "event=auth client=%s result=ok user=%s", s->client, s->auth_user);
        reply(s, "235 2.7.0 Authentication successful");
        return;
    }
    auth_fail(s, "bad_password");
}

void
smtp_session_client_limit(struct smtp_session *s)
{
    reply(s, "421 4.7.0 %s Error: too many connections from %s", s->cfg->myhostname, s->client);
    close_session(s);
}
