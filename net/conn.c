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
 * This file is the place where a TLS filter slots in: conn_input() would take
 * plaintext from SSL_read over a memory BIO fed by conn_on_recv(), and
 * conn_flush() would send SSL_write's ciphertext instead of tx.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/log.h"
#include "net/reactor.h"

static void conn_close(struct reactor *r, struct conn *c, bool drop_output);

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

static const struct smtp_server_ops conn_ops = {
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

        if (used == 0)
            break;
        memmove(c->carry, c->carry + used, c->carry_len - used);
        c->carry_len -= (uint32_t)used;
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

/* ---- events ---- */

void
conn_accepted(struct reactor *r, int fd)
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
    r->conns_used++;
    smtp_session_init(&c->sess, r->cfg, &conn_ops, c, addr);

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
    arm_recv(r, c);
    /* the 220 goes out at the end of the next turn, once what the client may have
       sent before it (early talk) has had its completion */
    c->greet_at_ms = r->now_ms + r->cfg->smtpd_greeting_delay;
    c->greet_loop = atomic_load_explicit(&r->stats.loops, memory_order_relaxed);
    c->deadline_ms = r->now_ms + r->cfg->smtpd_timeout;
    c->next_greet = r->greet;
    r->greet = c;
    r->greet_pending++;
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
            conn_input(r, c, buf, (size_t)cqe->res);
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
    c->flags &= ~CONN_F_SENDING;
    if (res < 0) {
        c->tx_off = c->tx_len;
        conn_close(r, c, true);
        conn_mark_dirty(r, c);
        return;
    }
    c->tx_off += (uint32_t)res;
    if (c->tx_off == c->tx_len)
        c->tx_off = c->tx_len = 0;
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
        if (r->stopping && !(c->sess.flags & SMTP_F_WAIT_COMMIT))
            conn_close(r, c, false);
        if ((c->flags & CONN_F_RX_PAUSED) && !(c->flags & CONN_F_RECV) && can_read(r, c))
            arm_recv(r, c);
    }
    conn_mark_dirty(r, c);
}

void
conn_flush(struct reactor *r, struct conn *c)
{
    struct io_uring_sqe *sqe;

    if (c->flags & (CONN_F_SENDING | CONN_F_CLOSED))
        return;
    if (c->tx != NULL && c->tx_len > c->tx_off) {
        if (c->tx_off > 0) {
            memmove(c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
            c->tx_len -= c->tx_off;
            c->tx_off = 0;
        }
        sqe = reactor_sqe(r);
        io_uring_prep_send(sqe, c->fd, c->tx, c->tx_len, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, ud_make(c->gen, (uint32_t)(c - r->conns), OP_SEND));
        c->flags |= CONN_F_SENDING;
        c->inflight++;
        return;
    }
    if (c->tx != NULL) {
        buf_pool_put(&r->tx_pool, c->tx);
        c->tx = NULL;
        c->tx_len = c->tx_off = 0;
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

void
conn_tick(struct reactor *r, struct conn *c)
{
    if ((c->flags & CONN_F_CLOSING) || c->deadline_ms == 0 || r->now_ms < c->deadline_ms)
        return;
    if (c->sess.flags & SMTP_F_WAIT_COMMIT)
        return; /* the spool is slow, not the client */
    log_msg(LOG_INFO, "event=timeout reactor=%u sid=%016" PRIx64 " client=%s state=%d", r->index,
            c->sid, c->sess.client, (int)c->sess.state);
    if (op_tx_room(c) >= SMTP_REPLY_MAX)
        smtp_session_timeout(&c->sess);
    conn_close(r, c, false);
}

void
conn_shutdown(struct reactor *r, struct conn *c)
{
    if (c->sess.flags & SMTP_F_WAIT_COMMIT)
        return; /* its 250 is on the way; the client closes or times out after it */
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
    c->carry_len = 0;
    carry_release(r, c);
    if (c->flags & CONN_F_COUNTED)
        atomic_fetch_sub_explicit(&reactor_shared.connections, 1, memory_order_relaxed);
    log_msg(LOG_DEBUG, "event=disconnect reactor=%u sid=%016" PRIx64 " client=%s", r->index, c->sid,
            c->sess.client);
    STAT_INC(r, closed, 1);
    c->flags = 0;
    c->gen++;
    r->free_next[idx] = r->free_head;
    r->free_head = idx;
    r->conns_used--;
}
