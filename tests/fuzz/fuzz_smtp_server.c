/*
 * fuzz_smtp_server: the sans-I/O server session (core/smtp_server.h) fed
 * arbitrary client bytes in arbitrary chunkings, by a fake driver whose
 * behaviour the input chooses.
 *
 * Input: 8 header octets, then the client's bytes.
 *   h0  configuration: bit 0 bare_newline reject, 1 small message_size_limit
 *       (h6), 2 max_line_length (h7), 3 command_line_limit 512, 4 the client
 *       is in mynetworks, 5 small smtpd_hard_error_limit (h6), 6 small
 *       smtpd_recipient_limit (h7), 7 a 255-octet myhostname
 *   h1  bits 0-1 when a commit completes: inside msg_end(), after the input
 *       call returns, or before the next chunk; bits 2-3 which msg_begin()
 *       calls fail (-EAGAIN / -ENOSPC); bits 4-7 which commits fail (-EIO)
 *   h2  body room per chunk 2^(h2 % 17); bit 7: a full chunk is "flushing"
 *       (body_space() gives NULL) until the driver's next turn
 *   h3  tx buffer: 0 unlimited, else 512 + (h3 % 64) * 64 octets, sent
 *       between input calls only
 *   h4, h5  split seed; h6, h7  limit values
 *
 * The session runs twice on the same bytes: once as the reference (input
 * whole, unlimited output and body room, commits inside msg_end()) and once
 * with the chunking and driver behaviour above. Both must give the same
 * replies, the same stored messages and the same end state: the contract is
 * that the result depends on the bytes only.
 *
 * Invariants checked on the way: input consumed never exceeds what was
 * offered, nothing is consumed once the session closes; every reply() is one
 * or more well-formed reply lines (3 digits, '-' or ' ', CRLF, at most
 * SMTP_REPLY_MAX octets, multiline replies complete) written only when
 * tx_room() had SMTP_REPLY_MAX; msg_begin() only in RCPT state, body space
 * only in DATA/BDAT with a message open, body_commit() within the room given,
 * msg_end()/msg_abort() once per opened message; a stored message is strict
 * CRLF text within message_size_limit and max_line_length, with a sender and
 * recipients that parse back and that this client may relay to; log lines are
 * printable ASCII (peer text escaped); with room and no pending commit, what
 * is left unconsumed is at most a partial command line.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/compiler.h"
#include "core/config.h"
#include "core/log.h"
#include "core/route.h"
#include "core/smtp_parse.h"
#include "core/smtp_server.h"
#include "fuzz.h"

#define ARRIVAL   1700000000u
#define ROOM_BIG  (1u << 20) /* "unlimited" tx room */
#define BODY_BIG  (1u << 16) /* the reference's body chunk */
#define ITER_MAX  100000u    /* driver turns per chunk; a session that never settles is a bug */
#define CLIENT_IP "192.0.2.1"

enum commit_mode {
    COMMIT_IN_END = 0, /* smtp_session_committed() from inside msg_end() */
    COMMIT_AFTER_CALL, /* when smtp_session_input() returns */
    COMMIT_NEXT_CHUNK, /* before the next chunk is offered */
    COMMIT_NEXT_CHUNK2,
};

struct policy {
    enum commit_mode commit;
    uint8_t begin_fail; /* 0 none, 1 every 3rd -EAGAIN, 2 every 2nd -ENOSPC, 3 the first */
    uint8_t commit_fail_mask;
    size_t body_chunk;
    bool body_pause;
    size_t tx_cap;    /* 0: unlimited */
    size_t max_piece; /* 0: the input whole */
    uint64_t seed;
};

struct drv {
    struct smtp_session s;
    char name; /* 'A' the reference run, 'B' the split one (FUZZ_TRACE=1 output) */
    const struct ringmail_config *cfg;
    struct policy pol;

    size_t tx_len; /* replies not "sent" yet */
    struct fuzz_buf replies;
    struct fuzz_buf msgs; /* every ended message: a line of envelope, then the octets */
    struct fuzz_buf body; /* the open message */
    bool msg_open;
    char *space; /* the last body_space() */
    size_t space_room;
    size_t chunk_used;
    bool flushing;
    bool commit_due;
    unsigned nbegin, nend, nabort, next_id;
    struct fuzz_buf carry;
};

static bool trace; /* FUZZ_TRACE=1 in the environment: every input call on stderr */

/* ---- checks ---- */

static void
check_reply(const char *p, size_t n)
{
    size_t i = 0;
    int cont = -1;

    FUZZ_CHECK(n >= 6 && n <= SMTP_REPLY_MAX, "reply of %zu octets", n);
    while (i < n) {
        const char *l = p + i, *lf = memchr(l, '\n', n - i);
        size_t len;
        int code;

        FUZZ_CHECK(lf != NULL, "reply without a final LF: %.*s", (int)n, p);
        len = (size_t)(lf - l) + 1;
        FUZZ_CHECK(len >= 6 && lf[-1] == '\r', "short or bare-LF reply line: %.*s", (int)n, p);
        FUZZ_CHECK(l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' &&
                       l[2] <= '9' && (l[3] == ' ' || l[3] == '-'),
                   "malformed reply line: %.*s", (int)len, l);
        code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        for (size_t k = 4; k < len - 2; k++) {
            unsigned char c = (unsigned char)l[k];

            FUZZ_CHECK(c >= 0x20 && c != 0x7f, "octet %#x in reply %.*s", c, (int)len, l);
        }
        FUZZ_CHECK(cont < 0 || code == cont, "code changes in a multiline reply: %.*s", (int)n, p);
        cont = l[3] == '-' ? code : -1;
        i += len;
    }
    FUZZ_CHECK(cont < 0, "a multiline reply left unfinished: %.*s", (int)n, p);
}

static void
log_sink(void *arg, const char *line, size_t len)
{
    (void)arg;
    FUZZ_CHECK(len > 0 && line[len - 1] == '\n', "log line without its newline");
    for (size_t i = 0; i + 1 < len; i++) {
        unsigned char c = (unsigned char)line[i];

        FUZZ_CHECK(c >= 0x20 && c < 0x7f, "octet %#x in log line %.*s", c, (int)len, line);
    }
}

static bool
path_parses(struct slice addr, const char *kw, unsigned flags)
{
    struct smtp_limits lim = { .max_line = 2048 };
    size_t kl = strlen(kw), n = kl + addr.len + 2;
    char *line = malloc(n);
    struct smtp_path p;
    bool ok;

    FUZZ_CHECK(line != NULL, "out of memory");
    memcpy(line, kw, kl);
    line[kl] = '<';
    memcpy(line + kl + 1, addr.p, addr.len);
    line[n - 1] = '>';
    ok = smtp_parse_path(slice_make(line, n), kw, flags, &lim, &p) == SMTP_PATH_OK &&
         p.mailbox.len == addr.len && memcmp(p.mailbox.p, addr.p, addr.len) == 0;
    free(line);
    return ok;
}

/* A stored message: Received: header (3 lines), then the content. */
static void
check_message(const struct drv *d, const struct envelope *env)
{
    const struct ringmail_config *cfg = d->cfg;
    const char *m = d->body.p, *content = m;
    size_t len = d->body.len, line = 0;

    FUZZ_CHECK(len >= 10 && memcmp(m, "Received: ", 10) == 0, "no Received: header");
    for (int i = 0; i < 3; i++) {
        const char *lf = memchr(content, '\n', len - (size_t)(content - m));

        FUZZ_CHECK(lf != NULL, "Received: header cut short");
        content = lf + 1;
    }
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\n')
            FUZZ_CHECK(i > 0 && m[i - 1] == '\r', "bare LF stored at %zu", i);
        if (m[i] == '\r')
            FUZZ_CHECK(i + 1 < len && m[i + 1] == '\n', "bare CR stored at %zu", i);
    }
    if (cfg->message_size_limit != 0)
        FUZZ_CHECK(len - (size_t)(content - m) <= cfg->message_size_limit,
                   "%zu octets stored, limit %llu", len - (size_t)(content - m),
                   (unsigned long long)cfg->message_size_limit);
    for (const char *c = content; c < m + len; c++) {
        line++;
        if (*c == '\n') {
            FUZZ_CHECK(cfg->max_line_length == 0 || line <= cfg->max_line_length,
                       "a line of %zu octets stored, limit %llu", line,
                       (unsigned long long)cfg->max_line_length);
            line = 0;
        }
    }
    FUZZ_CHECK(env->nrcpt >= 1, "a message without recipients");
    FUZZ_CHECK(cfg->smtpd_recipient_limit == 0 || env->nrcpt <= cfg->smtpd_recipient_limit,
               "%u recipients, limit %u", env->nrcpt, cfg->smtpd_recipient_limit);
    FUZZ_CHECK(path_parses(env_get(env, env->sender), "FROM:", SMTP_PATH_F_NULL_OK),
               "sender <%.*s> does not parse back", (int)env->sender.len,
               env_get(env, env->sender).p);
    for (uint32_t i = 0; i < env->nrcpt; i++) {
        struct slice a = env_get(env, env->rcpt[i].addr);

        FUZZ_CHECK(path_parses(a, "TO:", SMTP_PATH_F_POSTMASTER_OK),
                   "recipient <%.*s> does not parse back", (int)a.len, a.p);
        FUZZ_CHECK((d->s.flags & SMTP_F_TRUSTED) || slice_eq_nocase(a, "postmaster") ||
                       route_relay_allowed(cfg, route_domain_of(a)),
                   "relayed for an untrusted client to <%.*s>", (int)a.len, a.p);
    }
}

/* ---- the fake driver ---- */

static size_t
fake_tx_room(void *ctx)
{
    struct drv *d = ctx;

    if (d->pol.tx_cap == 0)
        return ROOM_BIG;
    FUZZ_CHECK(d->tx_len <= d->pol.tx_cap, "tx overflow");
    return d->pol.tx_cap - d->tx_len;
}

static void
fake_reply(void *ctx, const char *p, size_t n)
{
    struct drv *d = ctx;

    FUZZ_CHECK(fake_tx_room(d) >= SMTP_REPLY_MAX, "reply() without tx room (%zu)", fake_tx_room(d));
    check_reply(p, n);
    fuzz_buf_put(&d->replies, p, n);
    d->tx_len += n;
}

static int
fake_msg_begin(void *ctx, struct envelope *env)
{
    struct drv *d = ctx;
    unsigned k = d->nbegin++;

    FUZZ_CHECK(d->s.state == SMTP_S_RCPT, "msg_begin() in state %d", d->s.state);
    FUZZ_CHECK(!d->msg_open && !(d->s.flags & SMTP_F_MSG_OPEN), "msg_begin() twice");
    FUZZ_CHECK(env->nrcpt >= 1, "msg_begin() without recipients");
    switch (d->pol.begin_fail) {
    case 1:
        if (k % 3 == 2)
            return -EAGAIN;
        break;
    case 2:
        if (k % 2 == 1)
            return -ENOSPC;
        break;
    case 3:
        if (k == 0)
            return -EAGAIN;
        break;
    default:
        break;
    }
    env->id = 0xABC000u + ++d->next_id;
    qid_format(env->id, env->qid);
    env->arrival = ARRIVAL;
    d->msg_open = true;
    d->body.len = 0;
    d->chunk_used = 0;
    return 0;
}

static char *
fake_body_space(void *ctx, size_t *room)
{
    struct drv *d = ctx;

    FUZZ_CHECK(d->s.state == SMTP_S_DATA || d->s.state == SMTP_S_BDAT, "body_space() in state %d",
               d->s.state);
    FUZZ_CHECK(d->msg_open && (d->s.flags & SMTP_F_MSG_OPEN), "body_space() without a message");
    free(d->space);
    d->space = NULL;
    d->space_room = 0;
    if (d->flushing) {
        *room = 0;
        return NULL;
    }
    d->space_room = d->pol.body_chunk - d->chunk_used;
    d->space = malloc(d->space_room); /* exactly the room: ASan sees an overflow */
    FUZZ_CHECK(d->space != NULL, "out of memory");
    *room = d->space_room;
    return d->space;
}

static void
fake_body_commit(void *ctx, size_t n)
{
    struct drv *d = ctx;

    FUZZ_CHECK(d->space != NULL && n > 0 && n <= d->space_room, "body_commit(%zu) with room %zu", n,
               d->space_room);
    FUZZ_CHECK(d->msg_open, "body_commit() without a message");
    fuzz_buf_put(&d->body, d->space, n);
    free(d->space);
    d->space = NULL;
    d->space_room = 0;
    d->chunk_used += n;
    if (d->chunk_used == d->pol.body_chunk) {
        d->chunk_used = 0;
        d->flushing = d->pol.body_pause;
    }
}

static void
fake_msg_end(void *ctx, struct envelope *env)
{
    struct drv *d = ctx;
    char head[128];
    int n;

    FUZZ_CHECK(d->msg_open, "msg_end() without msg_begin()");
    FUZZ_CHECK((d->s.flags & SMTP_F_WAIT_COMMIT) && !(d->s.flags & SMTP_F_MSG_OPEN) &&
                   d->s.state == SMTP_S_READY,
               "msg_end() in state %d flags %#x", d->s.state, d->s.flags);
    FUZZ_CHECK(env->body_len == d->body.len, "body_len %llu, %zu stored",
               (unsigned long long)env->body_len, d->body.len);
    check_message(d, env);
    n = snprintf(head, sizeof(head), "\n-- %s flags=%#x nrcpt=%u len=%zu\n", env->qid, env->flags,
                 env->nrcpt, d->body.len);
    fuzz_buf_put(&d->msgs, head, (size_t)n);
    fuzz_buf_put(&d->msgs, env_get(env, env->sender).p, env->sender.len);
    for (uint32_t i = 0; i < env->nrcpt; i++) {
        fuzz_buf_put(&d->msgs, " ", 1);
        fuzz_buf_put(&d->msgs, env_get(env, env->rcpt[i].addr).p, env->rcpt[i].addr.len);
    }
    fuzz_buf_put(&d->msgs, "\n", 1);
    fuzz_buf_put(&d->msgs, d->body.p, d->body.len);
    d->msg_open = false;
    d->nend++;
    if (d->pol.commit == COMMIT_IN_END)
        smtp_session_committed(&d->s,
                               (d->pol.commit_fail_mask >> ((d->nend - 1) % 4)) & 1 ? -EIO : 0);
    else
        d->commit_due = true;
}

static void
fake_msg_abort(void *ctx)
{
    struct drv *d = ctx;

    FUZZ_CHECK(d->msg_open, "msg_abort() without an open message");
    d->msg_open = false;
    d->body.len = 0;
    d->nabort++;
}

static const struct smtp_server_ops fake_ops = {
    .reply = fake_reply,
    .tx_room = fake_tx_room,
    .msg_begin = fake_msg_begin,
    .body_space = fake_body_space,
    .body_commit = fake_body_commit,
    .msg_end = fake_msg_end,
    .msg_abort = fake_msg_abort,
};

static void
commit_now(struct drv *d)
{
    d->commit_due = false;
    smtp_session_committed(&d->s, (d->pol.commit_fail_mask >> ((d->nend - 1) % 4)) & 1 ? -EIO : 0);
}

/* One call with what the driver holds, as net/conn.c makes it. */
static size_t
call_input(struct drv *d)
{
    bool closed = d->s.flags & SMTP_F_CLOSE;
    size_t before = d->replies.len, used;
    char *p = fuzz_dup(d->carry.p, d->carry.len);

    used = smtp_session_input(&d->s, p, d->carry.len);
    free(p);
    if (trace)
        fprintf(stderr, "%c: input %zu -> %zu, state %d flags %#x\n", d->name, d->carry.len, used,
                d->s.state, d->s.flags);
    FUZZ_CHECK(used <= d->carry.len, "consumed %zu of %zu", used, d->carry.len);
    if (closed)
        FUZZ_CHECK(used == 0 && d->replies.len == before, "input taken after close");
    memmove(d->carry.p, d->carry.p + used, d->carry.len - used);
    d->carry.len -= used;
    return used;
}

/*
 * The driver's turns after bytes arrived: feed the session while it takes
 * bytes, then do what a reactor does between calls (send the output, finish
 * a commit, end a flush), and go on while anything changed.
 */
static void
pump(struct drv *d)
{
    for (unsigned it = 0;; it++) {
        bool progress = false, unflushed = false;

        FUZZ_CHECK(it < ITER_MAX, "the session does not settle");
        if (d->carry.len > 0 && smtp_session_wants_input(&d->s))
            progress = call_input(d) > 0;
        if (d->commit_due && d->pol.commit == COMMIT_AFTER_CALL) {
            commit_now(d);
            progress = true;
        }
        if (d->tx_len > 0 && d->pol.tx_cap != 0 && fake_tx_room(d) < SMTP_REPLY_MAX) {
            d->tx_len = 0; /* sent */
            progress = true;
        }
        if (d->flushing) {
            d->flushing = false;
            unflushed = true;
            progress = true;
        }
        /* the contract: call again when the reason is gone, bytes or not */
        if (unflushed && d->carry.len == 0 && smtp_session_wants_input(&d->s))
            call_input(d);
        if (!progress)
            break;
    }
    d->tx_len = 0; /* end of turn: everything is sent */
}

static void
drv_init(struct drv *d, const struct ringmail_config *cfg, const struct policy *pol)
{
    memset(d, 0, sizeof(*d));
    d->cfg = cfg;
    d->pol = *pol;
    smtp_session_init(&d->s, cfg, &fake_ops, d, CLIENT_IP);
    smtp_session_greet(&d->s);
}

static void
drv_run(struct drv *d, const char *in, size_t len)
{
    uint64_t rng = d->pol.seed;
    size_t off = 0;

    while (off < len) {
        size_t k = len - off;

        if (d->pol.max_piece != 0) {
            size_t r = 1 + (size_t)(fuzz_rand(&rng) % d->pol.max_piece); /* MIN() twice */

            k = MIN(k, r);
        }
        if (d->commit_due && d->pol.commit >= COMMIT_NEXT_CHUNK)
            commit_now(d);
        fuzz_buf_put(&d->carry, in + off, k);
        off += k;
        pump(d);
    }
    /* no more bytes: commits complete one after the other */
    for (unsigned it = 0; d->commit_due; it++) {
        FUZZ_CHECK(it < ITER_MAX, "commits do not settle");
        commit_now(d);
        pump(d);
    }
    FUZZ_CHECK(!d->commit_due && !(d->s.flags & SMTP_F_WAIT_COMMIT), "a commit left pending");
}

static void
drv_free(struct drv *d)
{
    smtp_session_fini(&d->s);
    FUZZ_CHECK(!d->msg_open, "an open message was not aborted by fini");
    free(d->space);
    fuzz_buf_free(&d->replies);
    fuzz_buf_free(&d->msgs);
    fuzz_buf_free(&d->body);
    fuzz_buf_free(&d->carry);
}

/* ---- comparing the two runs ---- */

/* ---- configuration ---- */

static struct ringmail_config cfg_base[2]; /* [1]: the client is in mynetworks */

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[CONFIG_ERR_MAX];

    (void)argc;
    (void)argv;
    config_defaults(&cfg_base[0]);
    if (config_set(&cfg_base[0], "relay_domains=example.net,.example.org", err, sizeof(err)) < 0)
        FUZZ_CHECK(0, "%s", err);
    cfg_base[1] = cfg_base[0];
    if (config_set(&cfg_base[1], "mynetworks=0.0.0.0/0,::/0", err, sizeof(err)) < 0)
        FUZZ_CHECK(0, "%s", err);
    log_set_thread_sink(log_sink, NULL);
    log_set_level(LOG_DEBUG);
    trace = getenv("FUZZ_TRACE") != NULL;
    return 0;
}

static struct ringmail_config *
set_config(uint8_t h0, uint8_t h6, uint8_t h7)
{
    struct ringmail_config *c = &cfg_base[(h0 >> 4) & 1];

    c->bare_newline = (h0 & 1) ? BARE_NEWLINE_REJECT : BARE_NEWLINE_NORMALIZE;
    c->message_size_limit = (h0 & 2) ? 1u + h6 * 37u : 10240000u;
    c->max_line_length = (h0 & 4) ? 3u + h7 : 0;
    c->command_line_limit = (h0 & 8) ? 512 : 2048;
    c->smtpd_hard_error_limit = (h0 & 32) ? h6 % 5u : 20u;
    c->smtpd_recipient_limit = (h0 & 64) ? 1u + h7 % 3u : 1000u;
    memset(c->myhostname, 0, sizeof(c->myhostname));
    if (h0 & 128) {
        memset(c->myhostname, 'h', CONFIG_NAME_MAX - 9);
        memcpy(c->myhostname + CONFIG_NAME_MAX - 9, ".example", 8);
    } else {
        memcpy(c->myhostname, "mx.test", 7);
    }
    return c;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t pieces[] = { 1, 2, 3, 7, 17, 64, 512, 4096 };
    struct fuzz_in in = { data, size };
    uint8_t h[8];
    struct policy ref = { 0 }, pol = { 0 };
    static struct drv a, b;
    const struct ringmail_config *cfg;

    for (size_t i = 0; i < sizeof(h); i++)
        h[i] = fuzz_u8(&in);
    cfg = set_config(h[0], h[6], h[7]);

    pol.commit = (enum commit_mode)(h[1] & 3);
    pol.begin_fail = (h[1] >> 2) & 3;
    pol.commit_fail_mask = h[1] >> 4;
    pol.body_chunk = (size_t)1 << (h[2] % 17);
    pol.body_pause = h[2] & 0x80;
    pol.tx_cap = h[3] == 0 ? 0 : 512 + (size_t)(h[3] % 64) * 64;
    pol.seed = (uint64_t)h[4] | (uint64_t)h[5] << 8 | 0x10000u;
    pol.max_piece = pieces[h[5] >> 5];

    ref = pol;
    ref.commit = COMMIT_IN_END;
    ref.body_chunk = BODY_BIG;
    ref.body_pause = false;
    ref.tx_cap = 0;
    ref.max_piece = 0;

    drv_init(&a, cfg, &ref);
    a.name = 'A';
    drv_run(&a, (const char *)in.p, in.len);
    /* with room and no commit pending, only a partial command line may be left */
    if (!(a.s.flags & SMTP_F_CLOSE)) {
        FUZZ_CHECK(a.carry.len == 0 || (a.s.state != SMTP_S_DATA && a.s.state != SMTP_S_BDAT &&
                                        memchr(a.carry.p, '\n', a.carry.len) == NULL &&
                                        a.carry.len < cfg->command_line_limit),
                   "%zu octets left unconsumed in state %d", a.carry.len, a.s.state);
    }

    drv_init(&b, cfg, &pol);
    b.name = 'B';
    drv_run(&b, (const char *)in.p, in.len);

    FUZZ_CHECK(a.replies.len == b.replies.len &&
                   (a.replies.len == 0 || memcmp(a.replies.p, b.replies.p, a.replies.len) == 0),
               "replies depend on the chunking:\n--- whole\n%.*s\n--- split\n%.*s",
               (int)a.replies.len, a.replies.p, (int)b.replies.len, b.replies.p);
    FUZZ_CHECK(a.msgs.len == b.msgs.len &&
                   (a.msgs.len == 0 || memcmp(a.msgs.p, b.msgs.p, a.msgs.len) == 0),
               "stored messages depend on the chunking");
    FUZZ_CHECK(a.nbegin == b.nbegin && a.nend == b.nend && a.nabort == b.nabort,
               "begin/end/abort %u/%u/%u vs %u/%u/%u", a.nbegin, a.nend, a.nabort, b.nbegin, b.nend,
               b.nabort);
    FUZZ_CHECK(a.s.state == b.s.state && a.s.errors == b.s.errors &&
                   (a.s.flags & SMTP_F_CLOSE) == (b.s.flags & SMTP_F_CLOSE),
               "end state differs: %d/%u vs %d/%u", a.s.state, a.s.errors, b.s.state, b.s.errors);
    FUZZ_CHECK(a.carry.len == b.carry.len, "left over %zu vs %zu", a.carry.len, b.carry.len);

    drv_free(&a);
    drv_free(&b);
    return 0;
}
