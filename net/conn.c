/*
 * conn.c: a client connection on a reactor, gluing io_uring to the sans-I/O
 * SMTP session (core/smtp_server.c).
 *
 * Thread affinity: the owning reactor's thread only.
 *
 * Input: a multishot recv fills provided buffers; each buffer is fed to the
 * session and given back to the ring before the handler returns. Bytes the
 * session could not take yet (a partial command line, or pipelined commands
 * behind a message whose commit is pending) are copied once into the
 * connection's carry buffer, lent from the reactor's pool only while it holds
 * bytes. When the carry fills past its threshold the recv is cancelled (TCP
 * flow control then holds the client back) and re-armed once drained.
 *
 * Output: replies gather in a 4 KiB tx buffer lent from the pool; at the end
 * of the loop turn one send carries the whole batch.
 *
 * TLS (net/tls.h) is a filter between the two: received octets go into the
 * connection's memory BIO and the plaintext that SSL_read gives back goes to
 * conn_input(), only while the session can take more (what is not decrypted
 * yet waits in the BIO, bounded like the carry by the paused recv); replies
 * are encrypted at flush time and the ciphertext is sent from tls_out.
 *
 * STARTTLS: once the session has sent its 220 (SMTP_F_STARTTLS), every octet
 * received in plaintext after the command, in the carry or in the same
 * buffer, is thrown away (CVE-2011-0411), the 220 and the replies before it
 * go out in clear (tx_plain), and what arrives next is the handshake.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "core/compiler.h"
#include "core/log.h"
#include "core/proxy.h"
#include "core/route.h"
#include "net/auth.h"
#include "net/reactor.h"

static void conn_close(struct reactor *r, struct conn *c, bool drop_output);
static void starttls_begin(struct reactor *r, struct conn *c, size_t dropped);

/* ---- session ops ---- */

static void
op_reply(void *ctx, const char *p, size_t n)
{
    struct conn *c = ctx;

    if (c->tx == NULL) {
        c->tx = buf_pool_get(&c->r->tx_pool);
        if (c->tx == NULL) {
            conn_close(c->r, c, true);
            return;
        }
        c->tx_len = c->tx_off = 0;
    }
    BUG_ON(c->tx_len + n > TX_BUF_SIZE);
    memcpy(c->tx + c->tx_len, p, n);
    c->tx_len += (uint32_t)n;
    conn_mark_dirty(c->r, c);
}

static size_t
op_tx_room(void *ctx)
{
    struct conn *c = ctx;

    if (c->flags & CONN_F_CLOSING)
        return 0;
    return c->tx == NULL ? TX_BUF_SIZE : TX_BUF_SIZE - c->tx_len;
}

static int
op_msg_begin(void *ctx, struct envelope *env)
{
    struct conn *c = ctx;

    return spool_io_msg_begin(c->r, c, env);
}

static char *
op_body_space(void *ctx, size_t *room)
{
    struct conn *c = ctx;

    return spool_io_body_space(c->r, c, room);
}

static void
op_body_commit(void *ctx, size_t n)
{
    struct conn *c = ctx;

    spool_io_body_commit(c->r, c, n);
}

static void
op_msg_end(void *ctx, struct envelope *env)
{
    struct conn *c = ctx;

    spool_io_msg_end(c->r, c, env);
}

static void
op_msg_abort(void *ctx)
{
    struct conn *c = ctx;

    spool_io_msg_abort(c->r, c);
}

/* A refusal's name for the log lines. */
static const char *
verdict_name(enum limits_verdict v)
{
    switch (v) {
    case LIMITS_CONN_COUNT:
        return "connection_count";
    case LIMITS_CONN_RATE:
        return "connection_rate";
    case LIMITS_MSG_RATE:
        return "message_rate";
    case LIMITS_RCPT_RATE:
        return "recipient_rate";
    case LIMITS_AUTH_FAIL_RATE:
        return "auth_failure_rate";
    case LIMITS_OK:
        break;
    }
    return "none";
}

static bool
op_limit(void *ctx, int event)
{
    static const enum limits_event ev[] = {
        [SMTP_LIMIT_MESSAGE] = LIMITS_MESSAGE,
        [SMTP_LIMIT_RCPT] = LIMITS_RCPT,
        [SMTP_LIMIT_AUTH_FAIL] = LIMITS_AUTH_FAIL,
    };
    struct conn *c = ctx;
    enum limits_verdict v;

    if (c->lexempt || reactor_shared.limits == NULL)
        return true;
    BUG_ON(event < 0 || (size_t)event >= ARRAY_SIZE(ev));
    v = limits_event(reactor_shared.limits, &c->lkey, ev[event], &c->snap->limits, c->r->now_ms);
    if (v != LIMITS_OK) {
        STAT_INC(c->r, refused_limit, 1);
        log_msg(LOG_INFO, "event=limit reactor=%u sid=%016" PRIx64 " client=%s limit=%s",
                c->r->index, c->sid, c->sess.client, verdict_name(v));
    }
    return v == LIMITS_OK;
}

static void
op_auth_verify(void *ctx, const char *user, size_t ulen, const char *pass, size_t plen)
{
    struct conn *c = ctx;
    struct reactor *r = c->r;
    uint64_t token = (uint64_t)c->gen << 32 | (uint32_t)(c - r->conns);

    if (reactor_shared.auth == NULL ||
        auth_pool_submit(reactor_shared.auth, r->index, token, user, ulen, pass, plen) < 0) {
        STAT_INC(r, auth_tempfail, 1);
        smtp_session_auth_done(&c->sess, SMTP_AUTH_TEMPFAIL); /* the verifiers are saturated */
    }
}

static const struct smtp_server_ops conn_ops = {
    .auth_verify = op_auth_verify,
    .limit = op_limit,
    .reply = op_reply,
    .tx_room = op_tx_room,
    .msg_begin = op_msg_begin,
    .body_space = op_body_space,
    .body_commit = op_body_commit,
    .msg_end = op_msg_end,
    .msg_abort = op_msg_abort,
};

/* ---- helpers ---- */

void
conn_mark_dirty(struct reactor *r, struct conn *c)
{
    if (c->flags & CONN_F_DIRTY)
        return;
    c->flags |= CONN_F_DIRTY;
    c->next_dirty = r->dirty;
    r->dirty = c;
}

static void
arm_recv(struct reactor *r, struct conn *c)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);

    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 0;
    io_uring_sqe_set_data64(sqe, ud_make(c->gen, (uint32_t)(c - r->conns), OP_RECV));
    c->flags |= CONN_F_RECV;
    c->flags &= ~CONN_F_RX_PAUSED;
    c->inflight++;
}

static void
cancel_recv(struct reactor *r, struct conn *c)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);
    uint32_t idx = (uint32_t)(c - r->conns);

    io_uring_prep_cancel64(sqe, ud_make(c->gen, idx, OP_RECV), 0);
    io_uring_sqe_set_data64(sqe, ud_make(c->gen, idx, OP_CANCEL));
    c->inflight++;
}

static void
carry_release(struct reactor *r, struct conn *c)
{
    if (c->carry != NULL && c->carry_len == 0) {
        if (c->carry_cap == r->carry_pool.size)
            buf_pool_put(&r->carry_pool, c->carry);
        else
            free(c->carry);
        c->carry = NULL;
        c->carry_cap = 0;
    }
}

/*
 * Keep n more octets. The carry starts as a pooled buffer; it grows only for
 * the completions already queued when a pause began (the kernel cannot post
 * more than the provided-buffer ring holds), so CARRY_MAX bounds it.
 */
static bool
carry_append(struct reactor *r, struct conn *c, const char *p, size_t n)
{
    size_t need = c->carry_len + n;

    if (c->carry == NULL) {
        c->carry = buf_pool_get(&r->carry_pool);
        if (c->carry == NULL)
            return false;
        c->carry_len = 0;
        c->carry_cap = (uint32_t)r->carry_pool.size;
    }
    if (need > c->carry_cap) {
        size_t cap = MAX((size_t)c->carry_cap * 2, need);
        char *nb;

        if (need > r->carry_pool.size + CARRY_MAX)
            return false;
        nb = malloc(cap);
        if (nb == NULL)
            return false;
        memcpy(nb, c->carry, c->carry_len);
        if (c->carry_cap == r->carry_pool.size)
            buf_pool_put(&r->carry_pool, c->carry);
        else
            free(c->carry);
        c->carry = nb;
        c->carry_cap = (uint32_t)cap;
    }
    memcpy(c->carry + c->carry_len, p, n);
    c->carry_len += (uint32_t)n;
    return true;
}

/* True when the connection may read more: little carried input, few body writes in flight. */
static bool
can_read(const struct reactor *r, const struct conn *c)
{
    return c->carry_len <= r->carry_pool.size / 2 &&
           (c->msg == NULL || c->msg->writes < BODY_INFLIGHT);
}

/* Stop reading: TCP flow control holds the client back until conn_resume(). */
void
conn_pause(struct reactor *r, struct conn *c)
{
    if ((c->flags & (CONN_F_RECV | CONN_F_RX_PAUSED | CONN_F_CLOSING)) != CONN_F_RECV)
        return;
    c->flags |= CONN_F_RX_PAUSED;
    cancel_recv(r, c);
}

static void
after_session(struct reactor *r, struct conn *c)
{
    if ((c->sess.flags & SMTP_F_CLOSE) && !(c->flags & CONN_F_CLOSING))
        conn_close(r, c, false);
    conn_mark_dirty(r, c);
}

/* Feed the carry to the session while it takes bytes. */
static void
drain_carry(struct reactor *r, struct conn *c)
{
    while (c->carry_len > 0 && !(c->flags & CONN_F_CLOSING) && smtp_session_wants_input(&c->sess)) {
        size_t used = smtp_session_input(&c->sess, c->carry, c->carry_len);

        if (used == 0 && !(c->sess.flags & SMTP_F_STARTTLS))
            break;
        memmove(c->carry, c->carry + used, c->carry_len - used);
        c->carry_len -= (uint32_t)used;
        if ((c->sess.flags & SMTP_F_STARTTLS) && c->tls.ssl == NULL) {
            size_t dropped = c->carry_len;

            c->carry_len = 0;
            starttls_begin(r, c, dropped);
            break;
        }
    }
    carry_release(r, c);
    after_session(r, c);
}

static void
conn_input(struct reactor *r, struct conn *c, const char *p, size_t n)
{
    size_t used = 0;

    c->deadline_ms = r->now_ms + smtp_session_timeout_ms(&c->sess);
    if (c->carry_len == 0 && smtp_session_wants_input(&c->sess))
        used = smtp_session_input(&c->sess, p, n);
    if ((c->sess.flags & SMTP_F_STARTTLS) && c->tls.ssl == NULL) {
        /* nothing sent behind STARTTLS in plaintext is ever read as a command */
        starttls_begin(r, c, n - used + c->carry_len);
        c->carry_len = 0;
        carry_release(r, c);
        after_session(r, c);
        return;
    }
    if (used < n && !(c->flags & CONN_F_CLOSING)) {
        if (!carry_append(r, c, p + used, n - used)) {
            /* only a client that keeps sending while we told TCP to hold it back gets here */
            log_msg(LOG_INFO, "event=input_overflow reactor=%u sid=%016" PRIx64 " client=%s",
                    r->index, c->sid, c->sess.client);
            conn_close(r, c, true);
            return;
        }
        drain_carry(r, c);
        if (!can_read(r, c))
            conn_pause(r, c);
        return;
    }
    after_session(r, c);
}

/* ---- TLS ---- */

static void
tls_failed(struct reactor *r, struct conn *c, const char *why)
{
    STAT_INC(r, tls_failures, 1);
    log_msg(LOG_INFO, "event=tls_error reactor=%u sid=%016" PRIx64 " client=%s reason=\"%s\"",
            r->index, c->sid, c->sess.client, why);
    conn_close(r, c, true); /* an alert may wait in the BIO: conn_flush() sends it */
}

static void
tls_established(struct reactor *r, struct conn *c)
{
    char desc[SMTP_TLS_DESC_MAX];
    bool resumed = tls_conn_resumed(&c->tls);

    tls_conn_describe(&c->tls, desc, sizeof(desc));
    STAT_INC(r, tls_handshakes, 1);
    if (resumed)
        STAT_INC(r, tls_resumed, 1);
    log_msg(LOG_INFO, "event=tls reactor=%u sid=%016" PRIx64 " client=%s tls=\"%s\" resumed=%s",
            r->index, c->sid, c->sess.client, desc, resumed ? "yes" : "no");
    smtp_session_tls_started(&c->sess, desc);
    if (c->kind == LISTEN_SMTPS) {
        /* implicit TLS: the greeting is the first thing the client reads inside TLS */
        c->flags |= CONN_F_GREETED;
        smtp_session_greet(&c->sess);
    }
    c->deadline_ms = r->now_ms + smtp_session_timeout_ms(&c->sess);
}

/* Decrypt what the BIO holds while the session can take it; drive the handshake first. */
static void
tls_pump(struct reactor *r, struct conn *c)
{
    char plain[16384], err[TLS_ERR_MAX];

    if (!c->tls.done) {
        int rc = tls_conn_handshake(&c->tls, err, sizeof(err));

        if (rc < 0) {
            tls_failed(r, c, err);
            return;
        }
        conn_mark_dirty(r, c); /* handshake records to send */
        if (rc == 0)
            return;
        tls_established(r, c);
    }
    while (!(c->flags & CONN_F_CLOSING) && can_read(r, c)) {
        long n = tls_conn_read(&c->tls, plain, sizeof(plain), err, sizeof(err));

        if (n == 0)
            break;
        if (n < 0) {
            if (c->tls.eof) {
                c->flags |= CONN_F_EOF;
                conn_close(r, c, true);
            } else {
                tls_failed(r, c, err);
            }
            break;
        }
        conn_input(r, c, plain, (size_t)n);
    }
    conn_mark_dirty(r, c);
}

/* Start the server side of TLS on c (implicit TLS, or after the 220 to STARTTLS). */
static bool
tls_start(struct reactor *r, struct conn *c)
{
    SSL_CTX *ctx = atomic_load_explicit(&tls_server_ctx, memory_order_acquire);
    char err[TLS_ERR_MAX];

    if (ctx == NULL || tls_conn_server(&c->tls, ctx, err, sizeof(err)) < 0) {
        tls_failed(r, c, ctx == NULL ? "no certificate loaded" : err);
        return false;
    }
    return true;
}

static void
starttls_begin(struct reactor *r, struct conn *c, size_t dropped)
{
    if (dropped > 0)
        log_msg(LOG_WARN,
                "event=starttls_injection reactor=%u sid=%016" PRIx64 " client=%s discarded=%zu",
                r->index, c->sid, c->sess.client, dropped);
    c->tx_plain = c->tx_len - c->tx_off; /* the 220 and what precedes it go out in clear */
    tls_start(r, c);
}

/* ---- the client is known: limits, TLS, greeting ---- */

/* After accept, or after the PROXY header named the real client. False: refused. */
static bool
conn_start(struct reactor *r, struct conn *c)
{
    const struct ringmail_config *cfg = &c->snap->cfg;
    const char *client = c->sess.client;

    c->lexempt = (cfg->smtpd_client_limit_exempt_mynetworks && (c->sess.flags & SMTP_F_TRUSTED)) ||
                 route_network_match(&cfg->smtpd_client_event_limit_exceptions, client);
    if (!c->lexempt && reactor_shared.limits != NULL) {
        enum limits_verdict v;

        limits_key(&c->lkey, client, cfg->smtpd_client_ipv6_prefix_length);
        v = limits_connect(reactor_shared.limits, &c->lkey, &c->snap->limits, r->now_ms,
                           &c->ltracked);
        if (v != LIMITS_OK) {
            STAT_INC(r, refused_limit, 1);
            log_msg(LOG_INFO, "event=refused reason=%s reactor=%u sid=%016" PRIx64 " client=%s",
                    verdict_name(v), r->index, c->sid, client);
            if (c->kind == LISTEN_SMTPS) {
                conn_close(r, c, true); /* no TLS for a refused client: just close */
            } else {
                smtp_session_client_limit(&c->sess);
                after_session(r, c);
            }
            return false;
        }
    }
    if (c->kind != LISTEN_SMTPS && cfg->tls_cert_file[0] != '\0' &&
        atomic_load_explicit(&tls_server_ctx, memory_order_relaxed))
        c->sess.flags |= SMTP_F_CAN_TLS;
    if (c->kind != LISTEN_SMTP)
        c->sess.flags |= SMTP_F_SUBMISSION;
    if (reactor_shared.auth != NULL && cfg->smtpd_sasl_password_file[0] != '\0')
        c->sess.flags |= SMTP_F_CAN_AUTH;
    c->deadline_ms = r->now_ms + cfg->smtpd_timeout;
    if (c->kind == LISTEN_SMTPS)
        return tls_start(r, c); /* the greeting follows the handshake */
    /* the 220 goes out at the end of the next turn, once what the client may have
       sent before it (early talk) has had its completion */
    c->greet_at_ms = r->now_ms + cfg->smtpd_greeting_delay;
    c->greet_loop = atomic_load_explicit(&r->stats.loops, memory_order_relaxed);
    c->next_greet = r->greet;
    r->greet = c;
    r->greet_pending++;
    return true;
}

/* Octets on a connection still waiting for its PROXY header; they collect in the carry. */
static void
proxy_input(struct reactor *r, struct conn *c, const char *p, size_t n)
{
    struct proxy_info pi;
    const char *why = "";
    size_t used = 0, rest;
    enum proxy_result rc;

    if (!carry_append(r, c, p, n)) {
        conn_close(r, c, true);
        return;
    }
    rc = proxy_parse(c->carry, c->carry_len, &pi, &used, &why);
    if (rc == PROXY_NEED_MORE)
        return;
    if (rc == PROXY_BAD) {
        STAT_INC(r, refused_proxy, 1);
        log_msg(LOG_INFO,
                "event=refused reason=proxy_header reactor=%u sid=%016" PRIx64
                " peer=%s error=\"%s\"",
                r->index, c->sid, c->sess.client, why);
        conn_close(r, c, true);
        return;
    }
    c->flags &= ~CONN_F_PROXY;
    if (!pi.local) {
        log_msg(LOG_DEBUG, "event=proxy reactor=%u sid=%016" PRIx64 " peer=%s client=%s v=%d",
                r->index, c->sid, c->sess.client, pi.src_text, pi.version);
        smtp_session_set_client(&c->sess, pi.src_text);
    }
    rest = c->carry_len - used;
    memmove(c->carry, c->carry + used, rest);
    c->carry_len = (uint32_t)rest;
    if (!conn_start(r, c))
        return;
    if (rest > 0 && c->tls.ssl != NULL) {
        /* implicit TLS: the ClientHello may follow the header in the same segment */
        tls_conn_feed(&c->tls, c->carry, rest);
        c->carry_len = 0;
        carry_release(r, c);
        tls_pump(r, c);
        return;
    }
    carry_release(r, c);
    after_session(r, c); /* plaintext behind the header is early talk: the session sees it */
}

/* ---- events ---- */

void
conn_accepted(struct reactor *r, int fd, unsigned listener)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char addr[INET6_ADDRSTRLEN] = "unknown";
    unsigned open;
    struct conn *c;
    uint32_t idx;

    STAT_INC(r, accepted, 1);
    if (r->free_head >= r->nconns) {
        struct io_uring_sqe *sqe = reactor_sqe(r);

        io_uring_prep_close(sqe, fd);
        io_uring_sqe_set_data64(sqe, ud_make(0, 0, OP_NONE));
        io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
        STAT_INC(r, refused_busy, 1);
        return;
    }
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof(addr));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, sizeof(addr));
    }
    idx = r->free_head;
    r->free_head = r->free_next[idx];
    c = &r->conns[idx];
    c->gen++;
    c->flags = CONN_F_USED;
    c->fd = fd;
    c->inflight = 0;
    c->r = r;
    c->sid = ((uint64_t)r->index << 56) | ++r->next_sid;
    c->carry = c->tx = NULL;
    c->carry_cap = 0;
    c->carry_len = c->tx_len = c->tx_off = c->tx_sending = 0;
    c->msg = NULL;
    c->next_dirty = NULL;
    c->tx_plain = 0;
    c->tls_out = NULL;
    c->tls_out_len = c->tls_out_off = 0;
    c->kind = r->lis[listener].hp.kind;
    r->conns_used++;
    c->snap = snapshot_ref(r->snap);
    smtp_session_init(&c->sess, r->cfg, &conn_ops, c, addr);
    c->ltracked = c->lexempt = false;
    c->auth_due_ms = 0;
    c->bytes_in = c->rate_mark_ms = c->rate_mark_bytes = 0;

    open = atomic_fetch_add_explicit(&reactor_shared.connections, 1, memory_order_relaxed);
    c->flags |= CONN_F_COUNTED;
    log_msg(LOG_DEBUG, "event=connect reactor=%u sid=%016" PRIx64 " client=%s", r->index, c->sid,
            addr);
    if (open >= r->cfg->max_connections) {
        STAT_INC(r, refused_busy, 1);
        log_msg(LOG_INFO, "event=refused reason=max_connections reactor=%u client=%s", r->index,
                addr);
        smtp_session_busy(&c->sess);
        after_session(r, c);
        return;
    }
    if (config_listen_proxy(r->cfg, &r->lis[listener].hp)) {
        if (!route_network_match(&r->cfg->proxy_trusted_networks, addr)) {
            STAT_INC(r, refused_proxy, 1);
            log_msg(LOG_WARN,
                    "event=refused reason=proxy_untrusted reactor=%u peer=%s note=\"not in "
                    "proxy_trusted_networks\"",
                    r->index, addr);
            conn_close(r, c, true);
            return;
        }
        c->flags |= CONN_F_PROXY;
        c->deadline_ms = r->now_ms + r->cfg->smtpd_upstream_proxy_timeout;
        arm_recv(r, c);
        return;
    }
    if (conn_start(r, c))
        arm_recv(r, c);
}

void
conn_greet_check(struct reactor *r)
{
    struct conn **pp = &r->greet;
    uint64_t loops = atomic_load_explicit(&r->stats.loops, memory_order_relaxed);

    while (*pp != NULL) {
        struct conn *c = *pp;

        if ((c->flags & CONN_F_CLOSING) || (loops > c->greet_loop && r->now_ms >= c->greet_at_ms)) {
            *pp = c->next_greet;
            c->next_greet = NULL;
            r->greet_pending--;
            if (!(c->flags & CONN_F_CLOSING)) {
                c->flags |= CONN_F_GREETED;
                smtp_session_greet(&c->sess);
                after_session(r, c);
            }
            continue;
        }
        pp = &c->next_greet;
    }
}

void
conn_on_recv(struct reactor *r, struct conn *c, const struct io_uring_cqe *cqe)
{
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        const char *buf = r->rx_bufs + (size_t)bid * RX_BUF_SIZE;

        if (cqe->res > 0 && !(c->flags & CONN_F_CLOSING)) {
            STAT_INC(r, bytes_in, (uint64_t)cqe->res);
            c->bytes_in += (uint64_t)cqe->res;
            if (c->flags & CONN_F_PROXY) {
                proxy_input(r, c, buf, (size_t)cqe->res);
            } else if (c->tls.ssl != NULL) {
                tls_conn_feed(&c->tls, buf, (size_t)cqe->res);
                tls_pump(r, c);
            } else {
                conn_input(r, c, buf, (size_t)cqe->res);
            }
        }
        /* always, before returning: a slow client never holds a provided buffer */
        io_uring_buf_ring_add(r->br, (void *)(uintptr_t)buf, RX_BUF_SIZE, (unsigned short)bid,
                              (int)r->rx_mask, 0);
        io_uring_buf_ring_advance(r->br, 1);
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    /* the multishot recv has ended */
    c->flags &= ~CONN_F_RECV;
    c->inflight--;
    if (c->flags & CONN_F_CLOSING) {
        conn_mark_dirty(r, c); /* conn_flush() was waiting for this to close */
        return;
    }
    if (cqe->res == -ENOBUFS) {
        STAT_INC(r, enobufs, 1);
        arm_recv(r, c);
    } else if (cqe->res == -ECANCELED && (c->flags & CONN_F_RX_PAUSED)) {
        /* paused for back-pressure: conn_resume() re-arms, unless it already ran */
        if (can_read(r, c))
            arm_recv(r, c);
    } else if (cqe->res == 0) {
        c->flags |= CONN_F_EOF;
        /* a commit in progress still completes; there is no one left to tell */
        conn_close(r, c, true);
    } else if (cqe->res < 0) {
        conn_close(r, c, true);
    } else {
        arm_recv(r, c);
    }
}

void
conn_on_send(struct reactor *r, struct conn *c, int res)
{
    bool cipher = c->flags & CONN_F_TX_TLS;

    c->flags &= ~(CONN_F_SENDING | CONN_F_TX_TLS);
    if (res < 0) {
        c->tx_off = c->tx_len;
        c->tls_out_off = c->tls_out_len;
        conn_close(r, c, true);
        conn_mark_dirty(r, c);
        return;
    }
    if (cipher) {
        c->tls_out_off += (uint32_t)res;
        if (c->tls_out_off == c->tls_out_len)
            c->tls_out_off = c->tls_out_len = 0;
    } else {
        c->tx_off += (uint32_t)res;
        c->tx_plain -= MIN(c->tx_plain, (uint32_t)res);
        if (c->tx_off == c->tx_len)
            c->tx_off = c->tx_len = 0;
    }
    conn_resume(r, c);
}

void
conn_on_close(struct reactor *r, struct conn *c)
{
    (void)r;
    c->fd = -1;
}

/* Something the session waited for is there (commit done, output room, body room). */
void
conn_resume(struct reactor *r, struct conn *c)
{
    if (!(c->flags & CONN_F_CLOSING)) {
        c->deadline_ms = r->now_ms + smtp_session_timeout_ms(&c->sess);
        drain_carry(r, c);
        if (c->tls.ssl != NULL && c->carry_len == 0 && !(c->flags & CONN_F_CLOSING))
            tls_pump(r, c); /* plaintext that waited in the BIO while the session was busy */
        if (r->stopping && !(c->flags & CONN_F_CLOSING))
            conn_shutdown(r, c, false); /* its transaction may have just ended */
        if ((c->flags & CONN_F_RX_PAUSED) && !(c->flags & CONN_F_RECV) && can_read(r, c))
            arm_recv(r, c);
    }
    conn_mark_dirty(r, c);
}

static void
send_buf(struct reactor *r, struct conn *c, const char *p, size_t n, bool cipher)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);

    io_uring_prep_send(sqe, c->fd, p, n, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_make(c->gen, (uint32_t)(c - r->conns), OP_SEND));
    c->flags |= CONN_F_SENDING | (cipher ? CONN_F_TX_TLS : 0);
    c->inflight++;
}

void
conn_flush(struct reactor *r, struct conn *c)
{
    struct io_uring_sqe *sqe;

    if (c->flags & (CONN_F_SENDING | CONN_F_CLOSED))
        return;
    /* ciphertext already taken out of the BIO, partly sent */
    if (c->tls_out != NULL && c->tls_out_len > c->tls_out_off) {
        send_buf(r, c, c->tls_out + c->tls_out_off, c->tls_out_len - c->tls_out_off, true);
        return;
    }
    if (c->tx != NULL && c->tx_len > c->tx_off) {
        if (c->tx_off > 0) {
            memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
            c->tx_len -= c->tx_off;
            c->tx_off = 0;
        }
        if (c->tls.ssl == NULL || c->tx_plain > 0) {
            send_buf(r, c, c->tx, c->tls.ssl == NULL ? c->tx_len : MIN(c->tx_len, c->tx_plain),
                     false);
            return;
        }
        if (c->tls.done) {
            char err[TLS_ERR_MAX];

            if (tls_conn_write(&c->tls, c->tx, c->tx_len, err, sizeof(err)) < 0) {
                c->tx_off = c->tx_len = 0;
                tls_failed(r, c, err);
            }
            c->tx_off = c->tx_len = 0;
        }
    }
    if (c->tls.ssl != NULL && c->tls.done && (c->flags & CONN_F_CLOSING) &&
        !(c->flags & CONN_F_TLS_BYE) && c->tx_len == 0) {
        c->flags |= CONN_F_TLS_BYE;
        tls_conn_shutdown(&c->tls);
    }
    if (c->tls.ssl != NULL && tls_conn_out_pending(&c->tls) > 0) {
        if (c->tls_out == NULL && (c->tls_out = buf_pool_get(&r->tls_pool)) == NULL) {
            conn_close(r, c, true);
            return;
        }
        c->tls_out_len = (uint32_t)tls_conn_out_take(&c->tls, c->tls_out, TLS_BUF_SIZE);
        c->tls_out_off = 0;
        send_buf(r, c, c->tls_out, c->tls_out_len, true);
        return;
    }
    if (c->tx != NULL && c->tx_len == 0) {
        buf_pool_put(&r->tx_pool, c->tx);
        c->tx = NULL;
        c->tx_len = c->tx_off = 0;
    }
    if (c->tls_out != NULL) {
        buf_pool_put(&r->tls_pool, c->tls_out);
        c->tls_out = NULL;
        c->tls_out_len = c->tls_out_off = 0;
    }
    if ((c->flags & CONN_F_CLOSING) && c->msg == NULL) {
        if (c->flags & CONN_F_RECV)
            return; /* the cancelled recv's last completion comes first */
        sqe = reactor_sqe(r);
        io_uring_prep_close(sqe, c->fd);
        io_uring_sqe_set_data64(sqe, ud_make(c->gen, (uint32_t)(c - r->conns), OP_CLOSE));
        c->flags |= CONN_F_CLOSED;
        c->inflight++;
    }
}

static void
conn_close(struct reactor *r, struct conn *c, bool drop_output)
{
    if (c->flags & CONN_F_CLOSING) {
        if (drop_output && !(c->flags & CONN_F_SENDING))
            c->tx_off = c->tx_len = 0;
        return;
    }
    c->flags |= CONN_F_CLOSING;
    if (drop_output && !(c->flags & CONN_F_SENDING))
        c->tx_off = c->tx_len = 0;
    if (c->msg != NULL && !(c->sess.flags & SMTP_F_WAIT_COMMIT))
        spool_io_msg_abort(r, c); /* a message cut off mid-body is never delivered */
    if ((c->flags & CONN_F_RECV) && !(c->flags & CONN_F_RX_PAUSED))
        cancel_recv(r, c);
    conn_mark_dirty(r, c);
}

/* smtpd_min_data_rate: measured over windows of DATA_RATE_WINDOW_MS, the first one free. */
#define DATA_RATE_WINDOW_MS 10000u

static bool
too_slow(struct reactor *r, struct conn *c)
{
    uint64_t rate = c->snap->cfg.smtpd_min_data_rate;

    if (rate == 0 || (c->sess.state != SMTP_S_DATA && c->sess.state != SMTP_S_BDAT) ||
        (c->sess.flags & SMTP_F_WAIT_COMMIT) || (c->flags & CONN_F_RX_PAUSED)) {
        c->rate_mark_ms = 0;
        return false;
    }
    if (c->rate_mark_ms == 0) {
        c->rate_mark_ms = r->now_ms + DATA_RATE_WINDOW_MS; /* grace: the first window */
        c->rate_mark_bytes = c->bytes_in;
        return false;
    }
    if (r->now_ms < c->rate_mark_ms + DATA_RATE_WINDOW_MS)
        return false;
    if ((c->bytes_in - c->rate_mark_bytes) * 1000 < rate * (r->now_ms - c->rate_mark_ms))
        return true;
    c->rate_mark_ms = r->now_ms;
    c->rate_mark_bytes = c->bytes_in;
    return false;
}

void
conn_auth_result(void *arg, uint64_t token, bool ok)
{
    struct reactor *r = arg;
    uint32_t idx = (uint32_t)token, gen = (uint32_t)(token >> 32);
    struct conn *c;
    uint64_t delay;

    if (idx >= r->nconns)
        return;
    c = &r->conns[idx];
    if (c->gen != gen || !(c->flags & CONN_F_USED) || (c->flags & CONN_F_CLOSING))
        return; /* the client went away while its password was checked */
    if (ok)
        STAT_INC(r, auth_ok, 1);
    else
        STAT_INC(r, auth_failed, 1);
    delay = (uint64_t)(c->sess.auth_failures + 1u) * c->snap->cfg.smtpd_auth_failure_delay;
    if (!ok && delay > 0) {
        c->auth_due_ms = r->now_ms + delay; /* conn_tick() answers */
        return;
    }
    smtp_session_auth_done(&c->sess, ok ? SMTP_AUTH_OK : SMTP_AUTH_FAIL);
    conn_resume(r, c);
}

void
conn_tick(struct reactor *r, struct conn *c)
{
    if (c->auth_due_ms != 0 && r->now_ms >= c->auth_due_ms && !(c->flags & CONN_F_CLOSING)) {
        c->auth_due_ms = 0;
        smtp_session_auth_done(&c->sess, SMTP_AUTH_FAIL);
        conn_resume(r, c);
    }
    if (!(c->flags & CONN_F_CLOSING) && too_slow(r, c)) {
        STAT_INC(r, too_slow, 1);
        log_msg(LOG_INFO,
                "event=too_slow reactor=%u sid=%016" PRIx64 " client=%s min_rate=%" PRIu64,
                r->index, c->sid, c->sess.client, c->snap->cfg.smtpd_min_data_rate);
        if (op_tx_room(c) >= SMTP_REPLY_MAX)
            smtp_session_too_slow(&c->sess);
        conn_close(r, c, false);
        return;
    }
    if ((c->flags & CONN_F_CLOSING) || c->deadline_ms == 0 || r->now_ms < c->deadline_ms)
        return;
    if (c->flags & CONN_F_PROXY) {
        log_msg(LOG_INFO, "event=refused reason=proxy_timeout reactor=%u peer=%s", r->index,
                c->sess.client);
        conn_close(r, c, true);
        return;
    }
    if (c->sess.flags & (SMTP_F_WAIT_COMMIT | SMTP_F_WAIT_AUTH))
        return; /* the spool or the verifiers are slow, not the client */
    log_msg(LOG_INFO, "event=timeout reactor=%u sid=%016" PRIx64 " client=%s state=%d", r->index,
            c->sid, c->sess.client, (int)c->sess.state);
    if (op_tx_room(c) >= SMTP_REPLY_MAX)
        smtp_session_timeout(&c->sess);
    conn_close(r, c, false);
}

void
conn_shutdown(struct reactor *r, struct conn *c, bool force)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    if (c->sess.flags & SMTP_F_WAIT_COMMIT)
        return; /* its 250 is on the way; conn_resume() comes back here after it */
    if (!force && !(c->flags & CONN_F_PROXY) && (!smtp_session_idle(&c->sess) || c->carry_len > 0))
        return; /* a transaction in progress may finish until shutdown_timeout */
    if (!(c->flags & CONN_F_PROXY) && op_tx_room(c) >= SMTP_REPLY_MAX &&
        (c->tls.ssl == NULL || c->tls.done))
        smtp_session_shutdown(&c->sess);
    conn_close(r, c, false);
}

void
conn_put(struct reactor *r, struct conn *c)
{
    uint32_t idx = (uint32_t)(c - r->conns);

    if (c->msg != NULL)
        spool_io_msg_detach(r, c);
    smtp_session_fini(&c->sess);
    buf_pool_put(&r->tx_pool, c->tx);
    c->tx = NULL;
    buf_pool_put(&r->tls_pool, c->tls_out);
    c->tls_out = NULL;
    tls_conn_free(&c->tls);
    c->carry_len = 0;
    carry_release(r, c);
    if (c->flags & CONN_F_COUNTED)
        atomic_fetch_sub_explicit(&reactor_shared.connections, 1, memory_order_relaxed);
    if (c->ltracked) {
        limits_disconnect(reactor_shared.limits, &c->lkey);
        c->ltracked = false;
    }
    log_msg(LOG_DEBUG, "event=disconnect reactor=%u sid=%016" PRIx64 " client=%s", r->index, c->sid,
            c->sess.client);
    STAT_INC(r, closed, 1);
    snapshot_put(c->snap);
    c->snap = NULL;
    c->flags = 0;
    c->gen++;
    r->free_next[idx] = r->free_head;
    r->free_head = idx;
    r->conns_used--;
}
