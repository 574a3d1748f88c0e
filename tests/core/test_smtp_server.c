/*
 * Tests for core/smtp_server.c: the sans-I/O session driven by a fake driver
 * (struct fake below) that collects replies and stored message bodies, feeds
 * input whole, byte by byte or in seeded random pieces, keeps unconsumed
 * bytes like net/conn.c does, and places every input at a PROT_NONE page.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/log.h"
#include "core/smtp_server.h"
#include "support/guard.h"

#define TX_CAP   (1u << 20)
#define BODY_CAP (1u << 24)
#define MSG_MAX  32
#define ARRIVAL  1700000000u /* Tue, 14 Nov 2023 22:13:20 +0000 */

struct fake_msg {
    char *data; /* as stored, Received: header included */
    size_t len;
    char sender[320];
    char rcpt[4][320];
    char helo[256];
    char client[64];
    char mail_params[256];
    unsigned nrcpt;
    uint32_t flags;
    char qid[QID_LEN + 1];
};

struct fake {
    struct smtp_session s;
    struct ringmail_config cfg;
    char *tx;
    size_t txlen;
    size_t tx_room; /* room reported; SIZE_MAX: TX_CAP - txlen */
    char *body;
    size_t body_len, msg_start;
    size_t space_chunk; /* room per body_space() call */
    bool space_none;    /* body_space() says "flushing" */
    int begin_rc, commit_rc;
    bool auto_commit, commit_in_end;
    unsigned nbegin, nend, nabort;
    struct fake_msg msg[MSG_MAX];
    unsigned nmsg;
    uint64_t next_id;
    char *carry;
    size_t carry_len;
    /* AUTH and limits */
    char auth_user[256], auth_pass[256];
    size_t auth_plen;
    unsigned nverify;
    bool deny[3]; /* per enum smtp_limit_event: limit() says no */
    unsigned nlimit[3];
};

static void
fake_reply(void *ctx, const char *p, size_t n)
{
    struct fake *f = ctx;

    cr_assert_leq(n, SMTP_REPLY_MAX);
    cr_assert_geq(f->tx_room == SIZE_MAX ? TX_CAP - f->txlen : f->tx_room, SMTP_REPLY_MAX,
                  "reply() without tx room");
    cr_assert_lt(f->txlen + n, TX_CAP);
    memcpy(f->tx + f->txlen, p, n);
    f->txlen += n;
    f->tx[f->txlen] = '\0';
}

static size_t
fake_tx_room(void *ctx)
{
    struct fake *f = ctx;

    return f->tx_room == SIZE_MAX ? TX_CAP - f->txlen : f->tx_room;
}

static int
fake_msg_begin(void *ctx, struct envelope *env)
{
    struct fake *f = ctx;

    f->nbegin++;
    if (f->begin_rc != 0)
        return f->begin_rc;
    env->id = ++f->next_id + 0xABC000;
    qid_format(env->id, env->qid);
    env->arrival = ARRIVAL;
    f->msg_start = f->body_len;
    return 0;
}

static char *
fake_body_space(void *ctx, size_t *room)
{
    struct fake *f = ctx;

    if (f->space_none) {
        *room = 0;
        return NULL;
    }
    cr_assert_lt(f->body_len, BODY_CAP);
    *room = MIN(f->space_chunk, BODY_CAP - f->body_len);
    return f->body + f->body_len;
}

static void
fake_body_commit(void *ctx, size_t n)
{
    struct fake *f = ctx;

    cr_assert_leq(f->body_len + n, BODY_CAP);
    f->body_len += n;
}

static void
copy_str(char *out, size_t cap, struct slice v)
{
    snprintf(out, cap, "%.*s", (int)v.len, v.p);
}

static void
fake_msg_end(void *ctx, struct envelope *env)
{
    struct fake *f = ctx;
    struct fake_msg *m;

    f->nend++;
    cr_assert_lt(f->nmsg, MSG_MAX);
    m = &f->msg[f->nmsg++];
    m->len = f->body_len - f->msg_start;
    cr_assert_eq(env->body_len, m->len, "env->body_len %llu, stored %zu",
                 (unsigned long long)env->body_len, m->len);
    m->data = malloc(m->len + 1);
    memcpy(m->data, f->body + f->msg_start, m->len);
    m->data[m->len] = '\0';
    copy_str(m->sender, sizeof(m->sender), env_get(env, env->sender));
    copy_str(m->helo, sizeof(m->helo), env_get(env, env->helo));
    copy_str(m->client, sizeof(m->client), env_get(env, env->client));
    copy_str(m->mail_params, sizeof(m->mail_params), env_get(env, env->mail_params));
    m->nrcpt = env->nrcpt;
    for (unsigned i = 0; i < env->nrcpt && i < 4; i++)
        copy_str(m->rcpt[i], sizeof(m->rcpt[i]), env_get(env, env->rcpt[i].addr));
    m->flags = env->flags;
    memcpy(m->qid, env->qid, sizeof(m->qid));
    if (f->commit_in_end)
        smtp_session_committed(&f->s, f->commit_rc);
}

static void
fake_msg_abort(void *ctx)
{
    struct fake *f = ctx;

    f->nabort++;
    f->body_len = f->msg_start;
}

static void
fake_auth_verify(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen)
{
    struct fake *f = ctx;

    cr_assert_lt(ulen, sizeof(f->auth_user));
    cr_assert_lt(plen, sizeof(f->auth_pass));
    cr_assert(f->s.flags & SMTP_F_WAIT_AUTH);
    memcpy(f->auth_user, user, ulen);
    f->auth_user[ulen] = '\0';
    memcpy(f->auth_pass, pass, plen);
    f->auth_plen = plen;
    f->nverify++;
}

static bool
fake_limit(void *ctx, int event)
{
    struct fake *f = ctx;

    cr_assert(event >= 0 && event < 3);
    f->nlimit[event]++;
    return !f->deny[event];
}

static const struct smtp_server_ops fake_ops = {
    .auth_verify = fake_auth_verify,
    .limit = fake_limit,
    .reply = fake_reply,
    .tx_room = fake_tx_room,
    .msg_begin = fake_msg_begin,
    .body_space = fake_body_space,
    .body_commit = fake_body_commit,
    .msg_end = fake_msg_end,
    .msg_abort = fake_msg_abort,
};

static void
test_config(struct ringmail_config *c)
{
    char err[CONFIG_ERR_MAX];

    memset(c, 0, sizeof(*c));
    snprintf(c->myhostname, sizeof(c->myhostname), "mx.test");
    c->message_size_limit = 10240000;
    c->max_line_length = 0;
    c->command_line_limit = 2048;
    c->smtpd_recipient_limit = 1000;
    c->smtpd_hard_error_limit = 20;
    c->bare_newline = BARE_NEWLINE_NORMALIZE;
    c->smtpd_timeout = 300000;
    c->smtpd_data_timeout = 180000;
    /* every test client may relay, except where a test says otherwise */
    cr_assert_eq(config_set(c, "mynetworks=0.0.0.0/0,::/0", err, sizeof(err)), 0, "%s", err);
}

static struct fake *
fake_new(void)
{
    struct fake *f = calloc(1, sizeof(*f));

    log_set_level(LOG_WARN);
    test_config(&f->cfg);
    f->tx = malloc(TX_CAP + 1);
    f->tx[0] = '\0';
    f->tx_room = SIZE_MAX;
    f->body = malloc(BODY_CAP);
    f->carry = malloc(BODY_CAP);
    f->space_chunk = 4096;
    f->auto_commit = true;
    return f;
}

/* Start the session (after changing f->cfg). */
static void
fake_start(struct fake *f, bool greet)
{
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "192.0.2.1");
    if (greet)
        smtp_session_greet(&f->s);
}

static void
fake_free(struct fake *f)
{
    smtp_session_fini(&f->s);
    for (unsigned i = 0; i < f->nmsg; i++)
        free(f->msg[i].data);
    free(f->tx);
    free(f->body);
    free(f->carry);
    free(f);
}

/* Give the session what it has not consumed yet, as a driver would. */
static void
pump(struct fake *f)
{
    for (;;) {
        const char *g = guard_copy(f->carry, f->carry_len);
        size_t used = smtp_session_input(&f->s, g, f->carry_len);

        cr_assert_leq(used, f->carry_len);
        memmove(f->carry, f->carry + used, f->carry_len - used);
        f->carry_len -= used;
        if (f->s.flags & SMTP_F_WAIT_COMMIT) {
            if (!f->auto_commit)
                return;
            smtp_session_committed(&f->s, f->commit_rc);
            continue;
        }
        if ((f->s.flags & SMTP_F_CLOSE) || used == 0)
            return;
    }
}

static void
feed_piece(struct fake *f, const char *p, size_t n)
{
    cr_assert_lt(f->carry_len + n, BODY_CAP);
    memcpy(f->carry + f->carry_len, p, n);
    f->carry_len += n;
    pump(f);
}

enum split { SPLIT_WHOLE = 0, SPLIT_BYTES, SPLIT_RANDOM };

static void
feed_split(struct fake *f, const char *p, size_t n, enum split how, unsigned seed)
{
    size_t off = 0;

    srand(seed);
    while (off < n) {
        size_t k = n - off, r = (size_t)(rand() % 97) + 1; /* MIN() evaluates twice */

        if (how == SPLIT_BYTES)
            k = 1;
        else if (how == SPLIT_RANDOM)
            k = MIN(k, r);
        feed_piece(f, p + off, k);
        off += k;
    }
}

static void
feed(struct fake *f, const char *s)
{
    feed_piece(f, s, strlen(s));
}

/* The replies so far, then forget them. Valid until the next call. */
static const char *
take(struct fake *f)
{
    static char out[TX_CAP + 1];

    memcpy(out, f->tx, f->txlen + 1);
    f->txlen = 0;
    f->tx[0] = '\0';
    return out;
}

#define expect(f, in, want)                                                                        \
    do {                                                                                           \
        feed((f), (in));                                                                           \
        const char *got_ = take(f);                                                                \
        cr_assert_str_eq(got_, (want), "after input %s: got %s", (in), got_);                      \
    } while (0)

/* A message's content after our 3-line Received: header. */
static const char *
content(const struct fake_msg *m)
{
    const char *p = m->data;

    cr_assert(strncmp(p, "Received: ", 10) == 0, "no Received: header in %s", p);
    for (int i = 0; i < 3; i++) {
        p = strstr(p, "\r\n");
        cr_assert_not_null(p);
        p += 2;
    }
    return p;
}

#define EHLO_REPLY                                                                                 \
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"                       \
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING\r\n"

/* ---- basics ---- */

Test(smtp_server, greeting_ehlo_and_one_message)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    cr_assert_str_eq(take(f), "220 mx.test ESMTP ringmail\r\n");
    expect(f, "EHLO client.example\r\n", EHLO_REPLY);
    expect(f, "MAIL FROM:<alice@example.org>\r\n", "250 2.1.0 Ok\r\n");
    expect(f, "RCPT TO:<bob@example.net>\r\n", "250 2.1.5 Ok\r\n");
    expect(f, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
    expect(f, "Subject: hi\r\n\r\nHello\r\n..dot\r\n.\r\n",
           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    expect(f, "QUIT\r\n", "221 2.0.0 Bye\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    cr_assert_eq(f->nmsg, 1);
    cr_assert_str_eq(content(&f->msg[0]), "Subject: hi\r\n\r\nHello\r\n.dot\r\n");
    cr_assert_str_eq(f->msg[0].sender, "alice@example.org");
    cr_assert_str_eq(f->msg[0].rcpt[0], "bob@example.net");
    cr_assert_str_eq(f->msg[0].helo, "client.example");
    cr_assert_str_eq(f->msg[0].client, "192.0.2.1");
    cr_assert_eq(f->msg[0].flags, ENV_F_ESMTP);
    fake_free(f);
}

Test(smtp_server, received_header_exact)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    feed(f, "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
            "DATA\r\n");
    feed(f, "x\r\n.\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_str_eq(f->msg[0].data, "Received: from client.example ([192.0.2.1])\r\n"
                                     "\tby mx.test (ringmail) with ESMTP id 0000000000ABC001\r\n"
                                     "\tfor <b@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
                                     "x\r\n");
    fake_free(f);
}

Test(smtp_server, helo_pipelined_batch)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    take(f);
    expect(f,
           "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<x@y.z>\r\nNOOP\r\n"
           "RSET\r\nVRFY x\r\nHELP\r\n",
           "250 mx.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n"
           "250 2.0.0 Ok\r\n"
           "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
           "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n");
    fake_free(f);
}

Test(smtp_server, bdat_basic)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    take(f);
    expect(f,
           "EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 4\r\nab\r\nBDAT 3 LAST\r\ncd\n",
           EHLO_REPLY "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 4 octets received\r\n"
                      "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_str_eq(content(&f->msg[0]), "ab\r\ncd\r\n");
    fake_free(f);
}

/* ---- helpers for the tests below ---- */

static struct fake *
ready(void (*tweak)(struct ringmail_config *))
{
    struct fake *f = fake_new();

    if (tweak != NULL)
        tweak(&f->cfg);
    fake_start(f, true);
    feed(f, "EHLO c.example\r\n");
    take(f);
    return f;
}

/* ---- every reply ---- */

static void
no_size_limit(struct ringmail_config *c)
{
    c->message_size_limit = 0;
}

Test(smtp_server, ehlo_size_without_limit_and_helo_syntax)
{
    struct fake *f = fake_new();

    no_size_limit(&f->cfg);
    fake_start(f, true);
    take(f);
    expect(f, "EHLO x\r\n",
           "250-mx.test\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
           "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING\r\n");
    expect(f, "EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n");
    expect(f, "HELO   \r\n", "501 5.5.4 Syntax: HELO hostname\r\n");
    fake_free(f);
}

Test(smtp_server, bad_sequence)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    take(f);
    expect(f, "MAIL FROM:<a@b.c>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
    expect(f, "RCPT TO:<a@b.c>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
    expect(f, "DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n");
    expect(f, "BDAT 4 LAST\r\nQUITNOOP\r\n",
           "503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n");
    expect(f, "HELO x\r\nDATA\r\n", "250 mx.test\r\n503 5.5.1 Error: need RCPT command\r\n");
    expect(f, "MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n"
           "503 5.5.1 Error: need RCPT command\r\n");
    expect(f, "DATA x\r\n", "501 5.5.4 Syntax: DATA\r\n");
    expect(f, "RSET x\r\n", "501 5.5.4 Syntax: RSET\r\n");
    expect(f, "VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n");
    expect(f, "BOGUS\r\nEXPN x\r\nSTARTTLS\r\n",
           "500 5.5.2 Error: command not recognized\r\n502 5.5.1 Error: command not implemented\r\n"
           "502 5.5.1 Error: command not implemented\r\n");
    cr_assert_eq(f->s.errors, 13);
    fake_free(f);
}

Test(smtp_server, mail_rcpt_errors)
{
    struct fake *f = ready(NULL);

    expect(f, "MAIL FROM:a@b.c\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    expect(f, "MAIL TO:<a@b.c>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
    expect(f, "MAIL FROM:<a@@b>\r\n", "501 5.1.7 Bad sender address syntax\r\n");
    expect(f, "MAIL FROM:<a@b> FOO=1\r\n", "555 5.5.4 Unsupported option: FOO\r\n");
    expect(f, "MAIL FROM:<a@b> BODY=BINARYMIME\r\n", "501 5.5.4 Syntax: BODY=7BIT|8BITMIME\r\n");
    expect(f, "MAIL FROM:<a@b> SIZE=x\r\n", "501 5.5.4 Bad message size syntax\r\n");
    expect(f, "MAIL FROM:<a@b> SIZE=10240001\r\n",
           "552 5.3.4 Message size exceeds fixed limit\r\n");
    expect(f, "MAIL FROM:<\xc3\xbc@b>\r\n",
           "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n");
    expect(f, "MAIL FROM: <a@b> SIZE=10240000\r\n", "250 2.1.0 Ok\r\n");
    expect(f, "RCPT TO:b@c\r\n", "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
    expect(f, "RCPT TO:<b@>\r\n", "501 5.1.3 Bad recipient address syntax\r\n");
    expect(f, "RCPT TO:<b@c> FOO=1\r\n", "555 5.5.4 Unsupported option: FOO\r\n");
    expect(f, "RCPT TO:<b@c> NOTIFY=NEVER,SUCCESS\r\n",
           "501 5.5.4 Bad NOTIFY parameter syntax\r\n");
    expect(f, "RCPT TO:<\xc3\xbc@c>\r\n",
           "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n");
    expect(f, "RCPT TO: <b@c>\r\n", "250 2.1.5 Ok\r\n");
    cr_assert_eq(f->s.nrcpt_refused, 5);
    fake_free(f);
}

/* Never an open relay: outside mynetworks only relay_domains are accepted, postmaster always. */
Test(smtp_server, relay_control)
{
    struct fake *f = fake_new();
    char err[CONFIG_ERR_MAX];

    cr_assert_eq(config_set(&f->cfg, "mynetworks=127.0.0.0/8", err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(config_set(&f->cfg, "relay_domains=example.net,.example.org", err, sizeof(err)), 0,
                 "%s", err);
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "198.51.100.7");
    smtp_session_greet(&f->s);
    take(f);
    expect(f, "EHLO outside.example\r\n", EHLO_REPLY);
    expect(f, "MAIL FROM:<spammer@example.com>\r\n", "250 2.1.0 Ok\r\n");
    expect(f, "RCPT TO:<victim@elsewhere.example>\r\n",
           "554 5.7.1 <victim@elsewhere.example>: Relay access denied\r\n");
    expect(f, "RCPT TO:<x@sub.example.net>\r\n",
           "554 5.7.1 <x@sub.example.net>: Relay access denied\r\n");
    expect(f, "RCPT TO:<bob@EXAMPLE.net>\r\n", "250 2.1.5 Ok\r\n");
    expect(f, "RCPT TO:<carol@mx.example.org>\r\n", "250 2.1.5 Ok\r\n");
    expect(f, "RCPT TO:<postmaster>\r\n", "250 2.1.5 Ok\r\n");
    cr_assert_eq(f->s.env.nrcpt, 3);
    cr_assert_eq(f->s.nrcpt_refused, 2);
    fake_free(f);

    /* the same recipient from inside mynetworks */
    f = fake_new();
    cr_assert_eq(config_set(&f->cfg, "mynetworks=127.0.0.0/8", err, sizeof(err)), 0, "%s", err);
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "127.0.0.1");
    smtp_session_greet(&f->s);
    take(f);
    expect(f, "HELO inside\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<victim@elsewhere.example>\r\n",
           "250 mx.test\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    fake_free(f);
}

/* RFC 3461: DSN's parameters are taken, checked, and kept in the envelope as given. */
Test(smtp_server, dsn_parameters_are_kept)
{
    struct fake *f = ready(NULL);
    struct slice v;

    expect(f, "MAIL FROM:<a@b> RET=BOGUS\r\n", "501 5.5.4 Bad RET parameter syntax\r\n");
    expect(f, "MAIL FROM:<a@b> RET=HDRS ENVID=QQ+2Bx\r\n", "250 2.1.0 Ok\r\n");
    expect(f, "RCPT TO:<b@c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40c\r\n", "250 2.1.5 Ok\r\n");
    cr_assert_eq(f->s.env.nrcpt, 1);
    v = env_get(&f->s.env, f->s.env.mail_params);
    cr_assert(v.len == 21 && memcmp(v.p, "RET=HDRS ENVID=QQ+2Bx", 21) == 0, "%.*s", (int)v.len,
              v.p);
    v = env_get(&f->s.env, f->s.env.rcpt[0].params);
    cr_assert(v.len > 0 && memcmp(v.p, "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40c", v.len) == 0,
              "%.*s", (int)v.len, v.p);
    fake_free(f);
}

Test(smtp_server, esmtp_params_need_ehlo)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    take(f);
    expect(f, "HELO x\r\nMAIL FROM:<a@b> SIZE=1\r\n",
           "250 mx.test\r\n555 5.5.4 Unsupported option: SIZE\r\n");
    fake_free(f);
}

Test(smtp_server, smtputf8_and_8bitmime)
{
    struct fake *f = ready(NULL);

    expect(f,
           "MAIL FROM:<\xc3\xbc@b\xc3\xbc.example> SMTPUTF8 BODY=8BITMIME\r\n"
           "RCPT TO:<\xe2\x82\xac@x.example>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    expect(f, "caf\xc3\xa9\r\n.\r\n", "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_eq(f->msg[0].flags, ENV_F_ESMTP | ENV_F_SMTPUTF8 | ENV_F_8BITMIME);
    cr_assert_str_eq(f->msg[0].sender, "\xc3\xbc@b\xc3\xbc.example");
    cr_assert_str_eq(f->msg[0].mail_params, "SMTPUTF8 BODY=8BITMIME");
    cr_assert(strstr(f->msg[0].data, "with UTF8SMTP id") != NULL);
    cr_assert(strstr(f->msg[0].data, "for <\xe2\x82\xac@x.example>") != NULL);
    cr_assert_str_eq(content(&f->msg[0]), "caf\xc3\xa9\r\n");
    fake_free(f);
}

Test(smtp_server, received_header_variants)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    f->s.flags |= SMTP_F_TLS;
    smtp_session_fini(&f->s);
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "2001:db8::1");
    f->s.flags |= SMTP_F_TLS;
    smtp_session_greet(&f->s);
    /* HELO, two recipients, TLS, IPv6 client, a control octet in the HELO name */
    feed(f, "HELO bad\x01name\r\nMAIL FROM:<>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"
            ".\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_str_eq(f->msg[0].data, "Received: from bad?name ([IPv6:2001:db8::1])\r\n"
                                     "\tby mx.test (ringmail) with SMTPS id 0000000000ABC001;\r\n"
                                     "\tTue, 14 Nov 2023 22:13:20 +0000\r\n");
    cr_assert_str_eq(f->msg[0].sender, "");
    cr_assert_eq(f->msg[0].nrcpt, 2);
    cr_assert_eq(f->msg[0].flags, 0);
    fake_free(f);
}

static void
three_rcpts(struct ringmail_config *c)
{
    c->smtpd_recipient_limit = 3;
}

Test(smtp_server, recipient_limit)
{
    struct fake *f = ready(three_rcpts);

    expect(
        f,
        "MAIL FROM:<a@b>\r\nRCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\nRCPT TO:<4@x>\r\n",
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
        "452 4.5.3 Error: too many recipients\r\n");
    expect(f, "DATA\r\nx\r\n.\r\n",
           "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_eq(f->msg[0].nrcpt, 3);
    fake_free(f);
}

Test(smtp_server, path_256_and_16_params)
{
    static char line[1024];
    struct fake *f = ready(NULL);
    int n;

    /* <u@ddd...> of exactly 256 octets */
    n = snprintf(line, sizeof(line), "RCPT TO:<u@");
    for (int i = 0; i < 252; i++)
        line[n++] = (i % 60 == 59) ? '.' : 'd';
    memcpy(line + n, ">\r\n", 4);
    expect(f, "MAIL FROM:<a@b>\r\n", "250 2.1.0 Ok\r\n");
    expect(f, line, "250 2.1.5 Ok\r\n");
    memcpy(line + n, "d>\r\n", 5);
    expect(f, line, "501 5.1.3 Bad recipient address syntax\r\n");
    expect(f, "RSET\r\n", "250 2.0.0 Ok\r\n");
    n = snprintf(line, sizeof(line), "MAIL FROM:<a@b>");
    for (int i = 0; i < 16; i++)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " BODY=7BIT");
    memcpy(line + n, "\r\n", 3);
    expect(f, line, "250 2.1.0 Ok\r\n");
    expect(f, "RSET\r\n", "250 2.0.0 Ok\r\n");
    memcpy(line + n, " BODY=7BIT\r\n", 13);
    expect(f, line, "501 5.5.4 Error: too many parameters\r\n");
    fake_free(f);
}

Test(smtp_server, rset_noop_quit_vrfy)
{
    struct fake *f = ready(NULL);

    expect(f, "MAIL FROM:<a@b>\r\nRSET\r\nRCPT TO:<c@d>\r\n",
           "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n503 5.5.1 Error: need MAIL command\r\n");
    expect(f, "NOOP anything\r\nQUIT\r\nNOOP\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    cr_assert_not(smtp_session_wants_input(&f->s));
    cr_assert_eq(f->carry_len, 6, "nothing after QUIT is consumed");
    fake_free(f);
}

Test(smtp_server, ehlo_resets_transaction)
{
    struct fake *f = ready(NULL);

    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nEHLO again\r\nRCPT TO:<c@d>\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n" EHLO_REPLY "503 5.5.1 Error: need MAIL command\r\n");
    fake_free(f);
}

/* ---- command line limits, bare LF, NUL ---- */

static void
line_512(struct ringmail_config *c)
{
    c->command_line_limit = 512;
}

static void
noop_line(char *buf, size_t total, const char *end)
{
    size_t e = strlen(end);

    memcpy(buf, "NOOP ", 5);
    memset(buf + 5, 'x', total - 5 - e);
    memcpy(buf + total - e, end, e + 1);
}

Test(smtp_server, command_line_limit_exact_and_over)
{
    static char line[2100];
    static const enum split ways[] = { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

    for (size_t w = 0; w < ARRAY_SIZE(ways); w++) {
        struct fake *f = ready(NULL);

        noop_line(line, 2048, "\r\n");
        feed_split(f, line, 2048, ways[w], 7);
        cr_assert_str_eq(take(f), "250 2.0.0 Ok\r\n");
        noop_line(line, 2049, "\r\n");
        feed_split(f, line, 2049, ways[w], 7);
        cr_assert_str_eq(take(f), "500 5.5.6 Error: line too long\r\n");
        cr_assert_eq(f->carry_len, 0, "way %zu: %zu left, flags %x", w, f->carry_len, f->s.flags);
        expect(f, "NOOP\r\n", "250 2.0.0 Ok\r\n");
        /* a much longer line: still one error, then in sync */
        noop_line(line, 2099, "\r\n");
        feed_split(f, line, 2099, ways[w], 9);
        feed(f, "NOOP\r\n");
        cr_assert_str_eq(take(f), "500 5.5.6 Error: line too long\r\n250 2.0.0 Ok\r\n");
        cr_assert_eq(f->s.errors, 2);
        fake_free(f);
    }
}

Test(smtp_server, command_line_limit_512)
{
    static char line[600];
    struct fake *f = ready(line_512);

    noop_line(line, 512, "\r\n");
    expect(f, line, "250 2.0.0 Ok\r\n");
    noop_line(line, 513, "\r\n");
    expect(f, line, "500 5.5.6 Error: line too long\r\n");
    fake_free(f);
}

static void
reject_bare(struct ringmail_config *c)
{
    c->bare_newline = BARE_NEWLINE_REJECT;
}

Test(smtp_server, bare_lf_command)
{
    struct fake *f = ready(NULL);

    expect(f, "NOOP\nMAIL FROM:<a@b>\n", "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
    fake_free(f);
    f = ready(reject_bare);
    expect(f, "MAIL FROM:<a@b>\nNOOP\r\n",
           "500 5.5.2 Error: bare <LF> received\r\n250 2.0.0 Ok\r\n");
    expect(f, "RCPT TO:<a@b>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
    cr_assert_eq(f->s.errors, 2);
    fake_free(f);
}

Test(smtp_server, nul_in_command)
{
    struct fake *f = ready(NULL);

    feed_piece(f, "NO\0OP\r\nNOOP\r\n", 13);
    cr_assert_str_eq(take(f), "500 5.5.2 Error: NUL character in command\r\n250 2.0.0 Ok\r\n");
    fake_free(f);
}

/* ---- body limits ---- */

static void
size_20(struct ringmail_config *c)
{
    c->message_size_limit = 20;
    c->max_line_length = 0;
}

Test(smtp_server, message_size_exact_and_over)
{
    struct fake *f = ready(size_20);

    /* 20 octets of body exactly */
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n123456789012345678\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_str_eq(content(&f->msg[0]), "123456789012345678\r\n");
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n1234567890123456789\r\nmore\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "552 5.3.4 Error: message file too big\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert_eq(f->nabort, 1);
    cr_assert_eq(f->body_len, f->msg[0].len, "nothing of the refused message is kept");
    expect(f, "RCPT TO:<c@d>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
    fake_free(f);
}

static void
line_10(struct ringmail_config *c)
{
    c->max_line_length = 10;
}

Test(smtp_server, max_line_length_exact_and_over)
{
    struct fake *f = ready(line_10);

    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n12345678\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n123456789\r\n.\r\nNOOP\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "552 5.3.4 Error: message line too long\r\n250 2.0.0 Ok\r\n");
    cr_assert_eq(f->nmsg, 1);
    fake_free(f);
}

Test(smtp_server, bare_newline_in_body_rejected)
{
    struct fake *f = ready(reject_bare);

    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\na\nb\r\n.\r\nNOOP\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "550 5.5.2 Error: bare <LF> or <CR> received\r\n250 2.0.0 Ok\r\n");
    cr_assert_eq(f->nmsg, 0);
    cr_assert_eq(f->nabort, 1);
    fake_free(f);
}

/* ---- storage results ---- */

Test(smtp_server, msg_begin_and_commit_failures)
{
    struct fake *f = ready(NULL);

    f->begin_rc = -EAGAIN;
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
           "451 4.3.1 Insufficient system resources, try again later\r\n");
    f->begin_rc = -ENOSPC;
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n452 4.3.1 Insufficient system storage\r\n");
    f->begin_rc = 0;
    f->commit_rc = -EIO;
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "452 4.3.1 Insufficient system storage\r\n");
    cr_assert_eq(f->s.errors, 0, "storage failures are not client errors");
    cr_assert_eq(f->s.nmsg_refused, 1);
    fake_free(f);
}

Test(smtp_server, commit_inside_msg_end)
{
    struct fake *f = ready(NULL);

    f->commit_in_end = true;
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n250 2.0.0 Ok\r\n");
    fake_free(f);
}

/* ---- pipelining and waiting for the commit ---- */

Test(smtp_server, pipelined_data_waits_for_commit)
{
    static const char in[] = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\r\n.\r\n"
                             "MAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\n";
    struct fake *f = ready(NULL);
    const char *g = guard_copy(in, sizeof(in) - 1);
    size_t used;

    used = smtp_session_input(&f->s, g, sizeof(in) - 1);
    cr_assert_eq(used, (size_t)(strstr(in, ".\r\n") + 3 - in), "stops right after the end");
    cr_assert(f->s.flags & SMTP_F_WAIT_COMMIT);
    cr_assert_not(smtp_session_wants_input(&f->s));
    cr_assert_eq(smtp_session_input(&f->s, g + used, sizeof(in) - 1 - used), 0);
    cr_assert_str_eq(take(f),
                     "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    smtp_session_committed(&f->s, 0);
    cr_assert(smtp_session_wants_input(&f->s));
    cr_assert_str_eq(take(f), "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    g = guard_copy(in + used, sizeof(in) - 1 - used);
    cr_assert_eq(smtp_session_input(&f->s, g, sizeof(in) - 1 - used), sizeof(in) - 1 - used);
    cr_assert_str_eq(take(f),
                     "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    cr_assert_str_eq(content(&f->msg[0]), "hello\r\n");
    fake_free(f);
}

Test(smtp_server, tx_room_and_body_space_pauses)
{
    static const char in[] = "NOOP\r\nNOOP\r\n";
    struct fake *f = ready(NULL);

    f->tx_room = SMTP_REPLY_MAX - 1;
    cr_assert_eq(smtp_session_input(&f->s, guard_copy(in, 12), 12), 0);
    f->tx_room = SIZE_MAX;
    cr_assert_eq(smtp_session_input(&f->s, guard_copy(in, 12), 12), 12);
    cr_assert_str_eq(take(f), "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");

    f->space_none = true;
    feed(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nbody\r\n.\r\n");
    cr_assert_str_eq(take(f), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                              "354 End data with <CR><LF>.<CR><LF>\r\n");
    cr_assert_eq(f->carry_len, 9, "the body waits for space");
    f->space_none = false;
    feed(f, "");
    cr_assert_str_eq(take(f), "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_str_eq(content(&f->msg[0]), "body\r\n");
    fake_free(f);
}

/* ---- session-level events ---- */

Test(smtp_server, early_talker)
{
    struct fake *f = fake_new();

    fake_start(f, false);
    feed(f, "EHLO x\r\n");
    cr_assert_str_eq(take(f), "554 5.5.0 Error: SMTP protocol synchronization\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    smtp_session_greet(&f->s);
    cr_assert_str_eq(take(f), "");
    fake_free(f);
}

Test(smtp_server, timeouts)
{
    struct fake *f = ready(NULL);

    cr_assert_eq(smtp_session_timeout_ms(&f->s), 300000);
    feed(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial");
    cr_assert_eq(smtp_session_timeout_ms(&f->s), 180000);
    take(f);
    smtp_session_timeout(&f->s);
    cr_assert_str_eq(take(f), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    cr_assert_eq(f->nabort, 1, "the open message is aborted");
    cr_assert_not(f->s.flags & SMTP_F_MSG_OPEN);
    fake_free(f);
}

Test(smtp_server, busy)
{
    struct fake *f = fake_new();

    fake_start(f, false);
    smtp_session_busy(&f->s);
    cr_assert_str_eq(take(f), "421 4.3.2 mx.test Error: too many connections\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    fake_free(f);
}

static void
three_errors(struct ringmail_config *c)
{
    c->smtpd_hard_error_limit = 3;
}

Test(smtp_server, hard_error_limit)
{
    struct fake *f = ready(three_errors);

    expect(
        f, "X\r\nY\r\nZ\r\nNOOP\r\n",
        "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n"
        "500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.test Error: too many errors\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    cr_assert_eq(f->carry_len, 6);
    fake_free(f);
}

Test(smtp_server, fini_aborts_open_message)
{
    struct fake *f = ready(NULL);

    feed(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhalf a mess");
    cr_assert(f->s.flags & SMTP_F_MSG_OPEN);
    smtp_session_fini(&f->s);
    cr_assert_eq(f->nabort, 1);
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "x"); /* for fake_free */
    fake_free(f);
}

/* ---- BDAT ---- */

Test(smtp_server, bdat_errors)
{
    struct fake *f = ready(NULL);

    /* no transaction: the chunk is consumed, then 503 */
    expect(f, "BDAT 6\r\nQUIT\r\nNOOP\r\n",
           "503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n");
    expect(f, "BDAT x\r\nBDAT 1 LASTX\r\nBDAT\r\nBDAT -1\r\n",
           "501 5.5.4 Syntax: BDAT size [LAST]\r\n501 5.5.4 Syntax: BDAT size [LAST]\r\n"
           "501 5.5.4 Syntax: BDAT size [LAST]\r\n501 5.5.4 Syntax: BDAT size [LAST]\r\n");
    /* DATA after BDAT, RCPT after BDAT */
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcDATA\r\nRCPT TO:<e@f>\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n"
           "503 5.5.1 Error: DATA after BDAT\r\n503 5.5.1 Error: RCPT after BDAT\r\n");
    expect(f, "BDAT 0 LAST\r\n", "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_str_eq(content(&f->msg[0]), "abc");
    fake_free(f);
}

Test(smtp_server, bdat_zero_last_and_rset)
{
    struct fake *f = ready(NULL);

    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 0 LAST\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_str_eq(content(&f->msg[0]), "");
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nxyRSET\r\nBDAT 0 LAST\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 2 octets received\r\n250 2.0.0 Ok\r\n"
           "503 5.5.1 Error: need RCPT command\r\n");
    cr_assert_eq(f->nabort, 1);
    cr_assert_eq(f->nmsg, 1);
    fake_free(f);
}

Test(smtp_server, bdat_crlf_split_across_chunks)
{
    struct fake *f = ready(reject_bare);

    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nab\rBDAT 3 last\r\n\ncd",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n"
           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_str_eq(content(&f->msg[0]), "ab\r\ncd");
    /* a CR at the end of the last chunk is bare */
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2 LAST\r\na\rNOOP\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.5.2 Error: bare <LF> or <CR> received\r\n"
           "250 2.0.0 Ok\r\n");
    fake_free(f);
}

Test(smtp_server, bdat_too_big_refused_at_chunk_end)
{
    struct fake *f = ready(size_20);

    expect(f,
           "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 25\r\n1234567890123456789012345"
           "BDAT 3 LAST\r\nabcNOOP\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n552 5.3.4 Error: message file too big\r\n"
           "503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n");
    cr_assert_eq(f->nmsg, 0);
    cr_assert_eq(f->nabort, 1);
    fake_free(f);
}

Test(smtp_server, bdat_begin_failure_skips_chunk)
{
    struct fake *f = ready(NULL);

    f->begin_rc = -EAGAIN;
    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 4 LAST\r\nNOOPNOOP\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
           "451 4.3.1 Insufficient system resources, try again later\r\n250 2.0.0 Ok\r\n");
    fake_free(f);
}

/* ---- SMTP smuggling: both bare_newline modes, every split ---- */

static const char *const smuggle[] = { "\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r\n.\n", ".\r\n" };

Test(smtp_server, smuggling_never_splits_the_envelope)
{
    static char in[1024], want[1024];
    static const enum split ways[] = { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

    for (size_t v = 0; v < ARRAY_SIZE(smuggle); v++) {
        bool bare = v < 5;
        const char *nl = bare ? "\r\n.\r\n" : ".\r\n";
        int n = snprintf(in, sizeof(in),
                         "MAIL FROM:<good@a.example>\r\nRCPT TO:<rcpt@b.example>\r\nDATA\r\n"
                         "foo%sMAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\n"
                         "DATA\r\nevil%s\r\n.\r\nQUIT\r\n",
                         smuggle[v], smuggle[v]);

        snprintf(want, sizeof(want),
                 "foo%sMAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\n"
                 "DATA\r\nevil%s\r\n",
                 nl, nl);
        for (int mode = 0; mode < 2; mode++) {
            for (size_t w = 0; w < ARRAY_SIZE(ways); w++) {
                struct fake *f = ready(mode ? reject_bare : NULL);
                bool refused = mode == 1 && bare;

                feed_split(f, in, (size_t)n, ways[w], (unsigned)(v * 10 + w));
                cr_assert_str_eq(take(f),
                                 refused ? "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                           "354 End data with <CR><LF>.<CR><LF>\r\n"
                                           "550 5.5.2 Error: bare <LF> or <CR> received\r\n"
                                           "221 2.0.0 Bye\r\n"
                                         : "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                           "354 End data with <CR><LF>.<CR><LF>\r\n"
                                           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n"
                                           "221 2.0.0 Bye\r\n",
                                 "variant %zu mode %d split %zu", v, mode, w);
                cr_assert_eq(f->nbegin, 1, "never a second message");
                cr_assert_eq(f->nmsg, refused ? 0 : 1);
                if (!refused) {
                    cr_assert_eq(f->msg[0].nrcpt, 1);
                    cr_assert_str_eq(f->msg[0].rcpt[0], "rcpt@b.example");
                    cr_assert_str_eq(f->msg[0].sender, "good@a.example");
                    cr_assert_str_eq(content(&f->msg[0]), want, "variant %zu", v);
                }
                fake_free(f);
            }
        }
    }
}

Test(smtp_server, data_line_with_bare_lf_does_not_make_dot_the_end)
{
    struct fake *f = ready(NULL);

    expect(f, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\n.\r\nx\r\n.\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
           "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_str_eq(content(&f->msg[0]), ".\r\nx\r\n");
    fake_free(f);
}

/* ---- the same conversation, any chunking: same replies, same octets ---- */

static const char conversation[] =
    "EHLO client.example\r\n"
    "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@example.net>\r\n"
    "RCPT TO:<bad@>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
    "Subject: one\r\n\r\n..stuffed\r\nbare\nlf and bare\rcr\r\n.\r\n"
    "NOOP\r\nBOGUS\r\n"
    "MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nBDAT 7\r\nchunk\r\rBDAT 6\r\n\nmore\rBDAT 0 LAST\r\n"
    "MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nDATA\r\nshort\r\n.\r\n"
    "RSET\r\nVRFY someone\r\nQUIT\r\n";

struct outcome {
    char tx[8192];
    char bodies[4][512];
    unsigned nmsg;
};

/* Copy a NUL-terminated string that must fit whole: a cut copy would weaken the comparison. */
static void
copy_whole(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);

    cr_assert_lt(n, cap, "outcome of %zu octets does not fit in %zu", n, cap);
    memcpy(dst, src, n + 1);
}

static void
run_conversation(enum split how, unsigned seed, size_t space, struct outcome *o)
{
    struct fake *f = fake_new();

    fake_start(f, true);
    f->space_chunk = space;
    feed_split(f, conversation, sizeof(conversation) - 1, how, seed);
    copy_whole(o->tx, sizeof(o->tx), take(f));
    o->nmsg = f->nmsg;
    for (unsigned i = 0; i < f->nmsg && i < 4; i++)
        copy_whole(o->bodies[i], sizeof(o->bodies[i]), f->msg[i].data);
    cr_assert_eq(f->carry_len, 0);
    fake_free(f);
}

Test(smtp_server, any_chunking_same_result)
{
    static struct outcome whole, other;

    run_conversation(SPLIT_WHOLE, 0, 4096, &whole);
    cr_assert_eq(whole.nmsg, 3);
    cr_assert_str_eq(whole.tx,
                     "220 mx.test ESMTP ringmail\r\n" EHLO_REPLY "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                     "501 5.1.3 Bad recipient address syntax\r\n250 2.1.5 Ok\r\n"
                     "354 End data with <CR><LF>.<CR><LF>\r\n"
                     "250 2.0.0 Ok: queued as 0000000000ABC001\r\n"
                     "250 2.0.0 Ok\r\n500 5.5.2 Error: command not recognized\r\n"
                     "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 7 octets received\r\n"
                     "250 2.0.0 6 octets received\r\n"
                     "250 2.0.0 Ok: queued as 0000000000ABC002\r\n"
                     "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                     "250 2.0.0 Ok: queued as 0000000000ABC003\r\n"
                     "250 2.0.0 Ok\r\n"
                     "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
                     "221 2.0.0 Bye\r\n");
    cr_assert(strstr(whole.bodies[0], "\r\n\r\n.stuffed\r\nbare\r\nlf and bare\r\ncr\r\n") != NULL);
    cr_assert(strstr(whole.bodies[1], "\r\nchunk\r\n\r\nmore\r\n") != NULL);
    for (unsigned seed = 0; seed < 40; seed++) {
        static const size_t spaces[] = { 1, 2, 3, 7, 64, 4096 };
        enum split how = seed == 0 ? SPLIT_BYTES : SPLIT_RANDOM;

        run_conversation(how, seed, spaces[seed % ARRAY_SIZE(spaces)], &other);
        cr_assert_str_eq(other.tx, whole.tx, "seed %u", seed);
        cr_assert_eq(other.nmsg, whole.nmsg);
        for (unsigned i = 0; i < whole.nmsg; i++)
            cr_assert_str_eq(other.bodies[i], whole.bodies[i], "seed %u message %u", seed, i);
    }
}

/* ---- STARTTLS (RFC 3207), AUTH (RFC 4954), submission, per-client limits ---- */

#define EHLO_TLS                                                                                   \
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-STARTTLS\r\n"       \
    "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING\r\n"
#define EHLO_AUTH                                                                                  \
    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"                       \
    "250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n"               \
    "250 CHUNKING\r\n"

/* A session from an outside client (not in mynetworks) with the given driver flags. */
static struct fake *
secure_start(uint32_t flags, const char *client)
{
    struct fake *f = fake_new();
    char err[CONFIG_ERR_MAX];

    cr_assert_eq(config_set(&f->cfg, "mynetworks=127.0.0.0/8", err, sizeof(err)), 0, "%s", err);
    f->cfg.smtpd_tls_auth_only = true;
    f->cfg.smtpd_auth_failure_limit = 3;
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, client);
    f->s.flags |= flags;
    smtp_session_greet(&f->s);
    take(f);
    return f;
}

Test(smtp_server, starttls_offered_and_restarts_the_session)
{
    struct fake *f = secure_start(SMTP_F_CAN_TLS | SMTP_F_CAN_AUTH, "198.51.100.7");

    expect(f, "STARTTLS\r\n", "503 5.5.1 Error: send EHLO first\r\n");
    /* no AUTH over plaintext for an outside client */
    expect(f, "EHLO c.example\r\n", EHLO_TLS);
    expect(f, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
           "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
    expect(f, "STARTTLS now\r\n", "501 5.5.4 Syntax: STARTTLS\r\n");
    expect(f, "MAIL FROM:<a@b.example>\r\nSTARTTLS\r\n",
           "250 2.1.0 Ok\r\n503 5.5.1 Error: MAIL transaction in progress\r\n");
    expect(f, "RSET\r\n", "250 2.0.0 Ok\r\n");

    /* the injection: commands pipelined behind STARTTLS are never consumed */
    const char *inj = "STARTTLS\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<x@y.example>\r\n";
    size_t used = smtp_session_input(&f->s, inj, strlen(inj));

    cr_assert_eq(used, strlen("STARTTLS\r\n"));
    cr_assert_str_eq(take(f), "220 2.0.0 Ready to start TLS\r\n");
    cr_assert(f->s.flags & SMTP_F_STARTTLS);
    cr_assert_not(smtp_session_wants_input(&f->s));
    cr_assert_eq(smtp_session_input(&f->s, inj + used, strlen(inj) - used), 0);
    cr_assert_str_eq(take(f), "");

    smtp_session_tls_started(&f->s, "TLSv1.3 TLS_AES_128_GCM_SHA256");
    cr_assert(smtp_session_wants_input(&f->s));
    /* the session forgot the EHLO: MAIL needs a new one */
    expect(f, "MAIL FROM:<a@b.example>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
    expect(f, "EHLO c.example\r\n", EHLO_AUTH);
    expect(f, "STARTTLS\r\n", "554 5.5.1 Error: TLS already active\r\n");
    fake_free(f);
}

Test(smtp_server, received_header_names_tls_and_user)
{
    struct fake *f = secure_start(SMTP_F_CAN_AUTH, "198.51.100.7");

    smtp_session_tls_started(&f->s, "TLSv1.3 TLS_AES_128_GCM_SHA256");
    expect(f, "EHLO c.example\r\n", EHLO_AUTH);
    expect(f, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", "");
    cr_assert_eq(f->nverify, 1);
    cr_assert_str_eq(f->auth_user, "alice");
    smtp_session_auth_done(&f->s, true);
    cr_assert_str_eq(take(f), "235 2.7.0 Authentication successful\r\n");
    expect(f, "MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@elsewhere.example>\r\nDATA\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    expect(f, "Hi\r\n.\r\n", "250 2.0.0 Ok: queued as 0000000000ABC001\r\n");
    cr_assert_eq(f->nmsg, 1);
    cr_assert(strstr(f->msg[0].data, "with ESMTPSA (TLSv1.3 TLS_AES_128_GCM_SHA256)\r\n"
                                     "\t(authenticated as alice) id 0000000000ABC001\r\n") != NULL,
              "%s", f->msg[0].data);
    fake_free(f);
}

Test(smtp_server, auth_plain_and_login_exchanges)
{
    struct fake *f = secure_start(SMTP_F_CAN_AUTH | SMTP_F_TLS, "198.51.100.7");

    expect(f, "AUTH PLAIN\r\n", "503 5.5.1 Error: send EHLO first\r\n");
    expect(f, "EHLO c\r\n", EHLO_AUTH);
    expect(f, "AUTH\r\n", "501 5.5.4 Syntax: AUTH mechanism\r\n");
    expect(f, "AUTH CRAM-MD5\r\n", "504 5.5.4 Unrecognized authentication type\r\n");
    /* PLAIN without an initial response: 334, then the response */
    expect(f, "AUTH PLAIN\r\n", "334 \r\n");
    expect(f, "AGJvYgBwYXNz\r\n", "");
    cr_assert_str_eq(f->auth_user, "bob");
    cr_assert_eq(f->auth_plen, 4);
    cr_assert_eq(memcmp(f->auth_pass, "pass", 4), 0);
    /* input waits while the password is checked */
    cr_assert_eq(smtp_session_input(&f->s, "NOOP\r\n", 6), 0);
    smtp_session_auth_done(&f->s, false);
    cr_assert_str_eq(take(f), "535 5.7.8 Error: authentication failed\r\n");
    cr_assert_eq(f->nlimit[SMTP_LIMIT_AUTH_FAIL], 1);
    /* aborted, undecodable, malformed */
    expect(f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
    expect(f, "*\r\n", "501 5.7.0 Authentication aborted\r\n");
    expect(f, "AUTH PLAIN !!!!\r\n", "501 5.5.2 Error: cannot decode response\r\n");
    expect(f, "AUTH PLAIN YWJj\r\n", "501 5.5.2 Error: malformed PLAIN response\r\n");
    /* authzid must be empty or the user itself */
    expect(f, "AUTH PLAIN bWFsbG9yeQBib2IAcGFzcw==\r\n",
           "535 5.7.8 Error: authentication failed\r\n");
    cr_assert_eq(f->nverify, 1);
    /* LOGIN, with a pipelined NOOP that waits for the verdict */
    expect(f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
    expect(f, "Y2Fyb2w=\r\n", "334 UGFzc3dvcmQ6\r\n");
    expect(f, "czNjcjN0\r\nNOOP\r\n", "");
    cr_assert_str_eq(f->auth_user, "carol");
    cr_assert_eq(memcmp(f->auth_pass, "s3cr3t", 6), 0);
    smtp_session_auth_done(&f->s, true);
    cr_assert_str_eq(take(f), "235 2.7.0 Authentication successful\r\n");
    pump(f);
    cr_assert_str_eq(take(f), "250 2.0.0 Ok\r\n");
    expect(f, "AUTH PLAIN =\r\n", "503 5.5.1 Error: already authenticated\r\n");
    /* RFC 3207: a new EHLO keeps AUTH; it is not offered again */
    cr_assert(f->s.flags & SMTP_F_AUTHED);
    fake_free(f);
}

Test(smtp_server, auth_failures_cut_the_client_off)
{
    struct fake *f = secure_start(SMTP_F_CAN_AUTH | SMTP_F_TLS, "198.51.100.7");

    expect(f, "EHLO c\r\n", EHLO_AUTH);
    for (int i = 0; i < 2; i++) {
        expect(f, "AUTH PLAIN AGJvYgB4\r\n", "");
        smtp_session_auth_done(&f->s, false);
        cr_assert_str_eq(take(f), "535 5.7.8 Error: authentication failed\r\n");
    }
    expect(f, "AUTH PLAIN AGJvYgB4\r\n", "");
    smtp_session_auth_done(&f->s, false);
    cr_assert_str_eq(take(f), "535 5.7.8 Error: authentication failed\r\n"
                              "421 4.7.0 mx.test Error: too many authentication failures\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    fake_free(f);

    /* the client's failure rate across sessions (the driver's limit) cuts off at once */
    f = secure_start(SMTP_F_CAN_AUTH | SMTP_F_TLS, "198.51.100.7");
    f->deny[SMTP_LIMIT_AUTH_FAIL] = true;
    expect(f, "EHLO c\r\nAUTH PLAIN AGJvYgB4\r\n", EHLO_AUTH);
    smtp_session_auth_done(&f->s, false);
    cr_assert_str_eq(take(f), "535 5.7.8 Error: authentication failed\r\n"
                              "421 4.7.0 mx.test Error: too many authentication failures\r\n");
    fake_free(f);
}

Test(smtp_server, auth_over_plaintext_only_for_mynetworks_when_allowed)
{
    struct fake *f = fake_new();
    char err[CONFIG_ERR_MAX];

    cr_assert_eq(config_set(&f->cfg, "mynetworks=127.0.0.0/8", err, sizeof(err)), 0, "%s", err);
    f->cfg.smtpd_tls_auth_only = false;
    f->cfg.smtpd_auth_failure_limit = 3;
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "127.0.0.1");
    f->s.flags |= SMTP_F_CAN_AUTH;
    smtp_session_greet(&f->s);
    take(f);
    expect(f, "EHLO c\r\n", EHLO_AUTH);
    fake_free(f);

    f = fake_new();
    cr_assert_eq(config_set(&f->cfg, "mynetworks=127.0.0.0/8", err, sizeof(err)), 0, "%s", err);
    f->cfg.smtpd_tls_auth_only = false;
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "198.51.100.7");
    f->s.flags |= SMTP_F_CAN_AUTH;
    smtp_session_greet(&f->s);
    take(f);
    expect(f, "EHLO c\r\n", EHLO_REPLY);
    fake_free(f);
}

Test(smtp_server, submission_requires_auth_and_authenticated_may_relay)
{
    struct fake *f = secure_start(SMTP_F_CAN_AUTH | SMTP_F_TLS | SMTP_F_SUBMISSION, "127.0.0.1");

    /* even mynetworks must authenticate on submission */
    expect(f, "EHLO c\r\nMAIL FROM:<a@b.example>\r\n",
           EHLO_AUTH "530 5.7.0 Authentication required\r\n");
    expect(f, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", "");
    smtp_session_auth_done(&f->s, true);
    take(f);
    expect(f, "MAIL FROM:<alice@b.example> AUTH=<>\r\nRCPT TO:<x@anywhere.example>\r\n",
           "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    fake_free(f);

    /* an outside client that is not authenticated cannot relay */
    f = secure_start(SMTP_F_CAN_AUTH | SMTP_F_TLS, "198.51.100.7");
    expect(f, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@anywhere.example>\r\n",
           EHLO_AUTH "250 2.1.0 Ok\r\n554 5.7.1 <x@anywhere.example>: Relay access denied\r\n");
    fake_free(f);
}

Test(smtp_server, tls_security_level_encrypt)
{
    struct fake *f = fake_new();

    f->cfg.smtpd_tls_security_level = SMTPD_TLS_ENCRYPT;
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "192.0.2.1");
    f->s.flags |= SMTP_F_CAN_TLS | SMTP_F_CAN_AUTH;
    smtp_session_greet(&f->s);
    take(f);
    expect(f, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nAUTH PLAIN =\r\n",
           EHLO_TLS "530 5.7.0 Must issue a STARTTLS command first\r\n"
                    "530 5.7.0 Must issue a STARTTLS command first\r\n");
    fake_free(f);
}

Test(smtp_server, client_rate_limits)
{
    struct fake *f = ready(NULL);

    f->deny[SMTP_LIMIT_MESSAGE] = true;
    expect(f, "MAIL FROM:<a@b.example>\r\n", "450 4.7.1 Error: too much mail from 192.0.2.1\r\n");
    f->deny[SMTP_LIMIT_MESSAGE] = false;
    f->deny[SMTP_LIMIT_RCPT] = true;
    expect(f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
           "250 2.1.0 Ok\r\n450 4.7.1 Error: too many recipients from 192.0.2.1\r\n");
    cr_assert_eq(f->nlimit[SMTP_LIMIT_MESSAGE], 2);
    cr_assert_eq(f->nlimit[SMTP_LIMIT_RCPT], 1);
    fake_free(f);

    f = fake_new();
    fake_start(f, false);
    smtp_session_client_limit(&f->s);
    cr_assert_str_eq(take(f), "421 4.7.0 mx.test Error: too many connections from 192.0.2.1\r\n");
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    fake_free(f);
}

Test(smtp_server, proxy_address_sets_trust)
{
    struct fake *f = fake_new();
    char err[CONFIG_ERR_MAX];

    cr_assert_eq(config_set(&f->cfg, "mynetworks=127.0.0.0/8", err, sizeof(err)), 0, "%s", err);
    smtp_session_init(&f->s, &f->cfg, &fake_ops, f, "127.0.0.1");
    cr_assert(f->s.flags & SMTP_F_TRUSTED);
    smtp_session_set_client(&f->s, "203.0.113.9");
    cr_assert_not(f->s.flags & SMTP_F_TRUSTED);
    cr_assert_str_eq(f->s.client, "203.0.113.9");
    fake_free(f);
}

Test(smtp_server, auth_temporary_failure)
{
    struct fake *f = secure_start(SMTP_F_CAN_AUTH | SMTP_F_TLS, "198.51.100.7");

    expect(f, "EHLO c\r\nAUTH PLAIN AGJvYgB4\r\n", EHLO_AUTH);
    smtp_session_auth_done(&f->s, SMTP_AUTH_TEMPFAIL);
    cr_assert_str_eq(take(f), "454 4.7.0 Temporary authentication failure\r\n");
    cr_assert_eq(f->s.auth_failures, 0);
    cr_assert_not(f->s.flags & SMTP_F_AUTHED);
    expect(f, "AUTH PLAIN AGJvYgB4\r\n", "");
    cr_assert_eq(f->nverify, 2);
    fake_free(f);
}

/* A message with several faults gets the same refusal however its body is split
   (found by tests/fuzz/fuzz_smtp_server: the first fault seen used to win). */
static void
strict_small(struct ringmail_config *c)
{
    c->bare_newline = BARE_NEWLINE_REJECT;
    c->message_size_limit = 64;
}

Test(smtp_server, verdict_independent_of_the_split)
{
    static const char body[] = "bare\nnewline first\r\n"
                               "then far too much text for a sixty-four octet limit......\r\n"
                               ".\r\n";
    char *want = NULL;

    for (int how = SPLIT_WHOLE; how <= SPLIT_RANDOM; how++) {
        for (unsigned seed = 1; seed <= (how == SPLIT_RANDOM ? 20u : 1u); seed++) {
            struct fake *f = ready(strict_small);
            const char *got;

            expect(f, "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
                   "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
            feed_split(f, body, sizeof(body) - 1, (enum split)how, seed);
            got = take(f);
            if (want == NULL)
                want = strdup(got);
            cr_assert_str_eq(got, want, "split %d seed %u", how, seed);
            fake_free(f);
        }
    }
    cr_assert(strncmp(want, "552 5.3.4 ", 10) == 0, "%s", want);
    free(want);
}

/* A refused BDAT 0 ends at once, even with no room for replies (fuzz finding). */
Test(smtp_server, refused_bdat0_without_tx_room)
{
    struct fake *f = ready(NULL);

    f->tx_room = SMTP_REPLY_MAX; /* room for exactly one reply */
    feed(f, "BDAT 0\r\n");
    cr_assert(strncmp(take(f), "503 5.5.1 ", 10) == 0);
    cr_assert_eq(f->s.state, SMTP_S_READY);
    fake_free(f);
}

/* The error that reaches smtpd_hard_error_limit and its 421 stay whole even with the
   longest echoed path and myhostname (fuzz finding: the 421 line used to be cut). */
static void
long_name_one_error(struct ringmail_config *c)
{
    char err[CONFIG_ERR_MAX];

    memset(c->myhostname, 0, sizeof(c->myhostname));
    for (size_t i = 0; i < 250; i++)
        c->myhostname[i] = i % 10 == 9 ? '.' : 'h';
    c->smtpd_hard_error_limit = 1;
    cr_assert_eq(config_set(c, "mynetworks=10.0.0.0/8", err, sizeof(err)), 0, "%s", err);
}

Test(smtp_server, hard_limit_421_never_cut)
{
    struct fake *f = ready(long_name_one_error);
    char rcpt[300];
    const char *got;

    memset(rcpt, 'x', 200);
    snprintf(rcpt + 200, sizeof(rcpt) - 200, "@elsewhere.example");
    feed(f, "MAIL FROM:<a@b.example>\r\n");
    take(f);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>\r\n", rcpt);
    feed(f, cmd);
    got = take(f);
    cr_assert(strncmp(got, "554 5.7.1 <", 11) == 0, "%s", got);
    cr_assert(strstr(got, ">: Relay access denied\r\n421 4.7.0 Error: too many errors\r\n") != NULL,
              "%s", got);
    cr_assert(f->s.flags & SMTP_F_CLOSE);
    fake_free(f);
}
