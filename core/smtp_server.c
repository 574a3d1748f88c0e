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

#include "core/compiler.h"
#include "core/dsn.h"
#include "core/log.h"
#include "core/route.h"
#include "core/smtp_parse.h"

#define RECEIVED_MAX  1280 /* our Received: header: helo 255 + host 255 + rcpt 256 + text */
#define PEER_WORD_MAX 64   /* peer text echoed in a reply (a parameter name) */

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

    if (d->errors != 0 && s->msg_error == SMTP_MSG_OK) {
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
    const char *tls = (s->flags & SMTP_F_TLS) ? "S" : "";
    int n;

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
                     "Received: from %s (%s)\r\n\tby %s (ringmail) with %s%s id %s\r\n"
                     "\tfor <%.*s>; %s\r\n",
                     helo, lit, s->cfg->myhostname, proto, tls, e->qid, (int)r.len, r.p, date);
    } else {
        n = snprintf(buf, cap,
                     "Received: from %s (%s)\r\n\tby %s (ringmail) with %s%s id %s;\r\n\t%s\r\n",
                     helo, lit, s->cfg->myhostname, proto, tls, e->qid, date);
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

    if (!tx_ok(s))
        return 0; /* room for the reply at the end first */
    if (s->state == SMTP_S_BDAT && s->bdat_failed) {
        size_t n = (size_t)MIN((uint64_t)len, s->bdat_left);

        s->bdat_left -= n;
        if (s->bdat_left == 0) {
            s->bdat_failed = false;
            s->state = s->bdat_resume;
        }
        return n;
    }
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
    if (cfg->message_size_limit != 0) {
        reply(s,
              "250-%s\r\n250-PIPELINING\r\n250-SIZE %" PRIu64 "\r\n250-8BITMIME\r\n"
              "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING",
              cfg->myhostname, cfg->message_size_limit);
    } else {
        reply(s,
              "250-%s\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
              "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING",
              cfg->myhostname);
    }
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
    if (!(s->flags & SMTP_F_TRUSTED) && !slice_eq_nocase(path.mailbox, "postmaster") &&
        !route_relay_allowed(s->cfg, route_domain_of(path.mailbox))) {
        /* never an open relay: mynetworks may send anywhere, others only to relay_domains */
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
    case SMTP_V_EXPN:
    case SMTP_V_AUTH:
    case SMTP_V_ETRN:
    case SMTP_V_TURN:
    case SMTP_V_STARTTLS:
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
    snprintf(s->client, sizeof(s->client), "%s", client != NULL ? client : "");
    if (route_client_trusted(cfg, s->client))
        s->flags |= SMTP_F_TRUSTED;
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

        if (s->flags & (SMTP_F_CLOSE | SMTP_F_WAIT_COMMIT))
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
    return !(s->flags & (SMTP_F_CLOSE | SMTP_F_WAIT_COMMIT));
}
