/*
 * spool_io.c: a reactor's spool writes and group commit, through its io_uring.
 *
 * Thread affinity: the owning reactor's thread; spool_io_init() runs on that
 * thread before the loop starts (its blocking open/fsync are start-up work).
 *
 * A message's body is copied once, from the receive buffer into a 64 KiB
 * chunk whose first 32 octets are left free for the DATA record header; a
 * full chunk is sealed and written at once, so memory per message is bounded
 * (once BODY_INFLIGHT chunk writes are in flight the connection stops
 * reading, so only what the kernel already queued arrives meanwhile). At the
 * end of the message its last DATA record and its MSG (commit) record go out
 * in one writev at consecutive offsets. Offsets are reserved at submission,
 * so writes may complete in any order; recovery copes with the holes a crash
 * leaves (queue/spool.h).
 *
 * Group commit: a message whose writes have all completed waits on the
 * `ready` list. At the end of a loop turn, when no fdatasync is in flight,
 * one fdatasync per dirty segment (and an fsync of the spool folder after a
 * segment was created) covers every ready message; when they complete, each
 * of those messages gets its 250. This is ringmail's durability point.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/dsn.h"
#include "core/log.h"
#include "net/reactor.h"
#include "net/util.h"

#define SPOOL_WRITE_SLOTS 8192u

/* ---- segments ---- */

static void
seg_unref(struct reactor *r, struct segment *s)
{
    BUG_ON(s->refs == 0);
    if (--s->refs > 0 || s->current)
        return;
    /* unlink from the open list and close it through the ring */
    for (struct segment **pp = &r->segs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    /*
     * Nothing holds it and it takes no new messages. When none of its
     * messages is pending either (each was delivered or bounced and its DONE
     * record went to this same segment), the file goes.
     */
    struct io_uring_sqe *sqe;
    char name[64];

    if (s->pending == 0) {
        sqe = reactor_sqe(r);
        spool_seg_name(s->id, name, sizeof(name));
        io_uring_prep_unlinkat(sqe, r->spool_dir_fd, name, 0);
        io_uring_sqe_set_data64(sqe, ud_make(0, 0, OP_SEGCLOSE));
        /* the unlink copies the name when it is issued: submit before name goes away */
        io_uring_submit(&r->ring);
        r->spool_inflight++;
        STAT_INC(r, segments_unlinked, 1);
        STAT_DEC(r, spool_segments, 1);
        STAT_DEC(r, spool_bytes, s->end);
        log_msg(LOG_INFO, "event=segment_removed reactor=%u segment=%s", r->index, name);
    }
    sqe = reactor_sqe(r);
    io_uring_prep_close(sqe, s->fd);
    io_uring_sqe_set_data64(sqe, ud_make(0, 0, OP_SEGCLOSE));
    r->spool_inflight++;
    free(s);
}

void
spool_io_seg_put(struct reactor *r, struct segment *seg, bool finished)
{
    if (finished) {
        BUG_ON(seg->pending == 0);
        seg->pending--;
    }
    seg_unref(r, seg);
}

/* A random non-zero seed: getrandom() never blocks once the pool is initialised. */
static uint64_t
seg_seed(void)
{
    uint64_t v = 0;

    while (v == 0) {
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
            return 0;
    }
    return v;
}

static struct segment *
seg_new(struct reactor *r, int fd, uint64_t id, uint64_t seed)
{
    struct segment *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->fd = fd;
    s->id = id;
    s->seed = seed;
    s->refs = 1; /* the reactor's, while current or becoming current */
    s->current = true;
    s->next = r->segs;
    r->segs = s;
    STAT_INC(r, spool_segments, 1); /* its octets are counted as they are written */
    return s;
}

static int
write_slot_get(struct reactor *r, uint32_t *idx)
{
    if (r->writes_used >= r->nwrites)
        return -EAGAIN;
    for (uint32_t i = 0; i < r->nwrites; i++) {
        uint32_t k = (r->writes_used + i) % r->nwrites;

        if (!r->writes[k].used) {
            r->writes[k].used = true;
            r->writes[k].gen++;
            r->writes_used++;
            *idx = k;
            return 0;
        }
    }
    return -EAGAIN;
}

/* Submit a write of iov[0..n) at seg's next offset; the slot keeps the buffers alive. */
static int
submit_write(struct reactor *r, struct segment *seg, struct msg_io *m, char *chunk, char *extra,
             const struct iovec *iov, int n)
{
    struct spool_write *w;
    struct io_uring_sqe *sqe;
    uint32_t idx;
    size_t len = 0;

    if (write_slot_get(r, &idx) < 0)
        return -EAGAIN;
    w = &r->writes[idx];
    w->msg = m;
    w->seg = seg;
    w->chunk = chunk;
    w->extra = extra;
    for (int i = 0; i < n; i++) {
        w->iov[i] = iov[i];
        len += iov[i].iov_len;
    }
    w->expect = len;
    seg->refs++;
    sqe = reactor_sqe(r);
    io_uring_prep_writev(sqe, seg->fd, w->iov, (unsigned)n, seg->end);
    io_uring_sqe_set_data64(sqe, ud_make(w->gen, idx, OP_WRITE));
    seg->end += len;
    STAT_INC(r, spool_bytes, len);
    r->spool_inflight++;
    if (m != NULL)
        m->writes++;
    return 0;
}

static int
seg_open_sync(struct reactor *r)
{
    char name[64], rec[128];
    uint64_t id = spool_next_id(&r->last_id, r->index, r->wall_ms / 1000);
    struct spool_seg_info info = {
        .seg_id = id, .reactor = r->index, .created = r->wall_ms / 1000, .seed = seg_seed()
    };
    size_t n;
    int fd;

    if (info.seed == 0)
        return -EAGAIN; /* the kernel's random pool is not ready */
    spool_seg_name(id, name, sizeof(name));
    fd = openat(r->spool_dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    n = spool_seg_record(rec, sizeof(rec), &info);
    if (pwrite(fd, rec, n, 0) != (ssize_t)n || fdatasync(fd) == -1 ||
        fsync(r->spool_dir_fd) == -1) {
        int rc = -errno;

        close(fd);
        return rc ? rc : -EIO;
    }
    r->seg = seg_new(r, fd, id, info.seed);
    if (r->seg == NULL) {
        close(fd);
        return -ENOMEM;
    }
    r->seg->end = n;
    STAT_INC(r, spool_bytes, n);
    return 0;
}

/* Start creating the next segment through the ring; writes go on to the current one. */
static void
seg_rotate(struct reactor *r)
{
    struct io_uring_sqe *sqe;

    if (r->seg_opening)
        return;
    r->seg_open_id = spool_next_id(&r->last_id, r->index, r->wall_ms / 1000);
    spool_seg_name(r->seg_open_id, r->seg_open_name, sizeof(r->seg_open_name));
    sqe = reactor_sqe(r);
    io_uring_prep_openat(sqe, r->spool_dir_fd, r->seg_open_name,
                         O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    io_uring_sqe_set_data64(sqe, ud_make(0, 0, OP_SEGOPEN));
    r->seg_opening = true;
    r->spool_inflight++;
}

void
spool_io_on_segopen(struct reactor *r, int res)
{
    struct spool_seg_info info = { .seg_id = r->seg_open_id,
                                   .reactor = r->index,
                                   .created = r->wall_ms / 1000,
                                   .seed = seg_seed() };
    struct segment *s;
    struct iovec iov;
    char *rec;

    r->spool_inflight--;
    if (res < 0 || info.seed == 0) {
        r->seg_opening = false;
        log_msg(LOG_ERR, "event=spool_error reactor=%u what=create file=%s error=\"%s\"", r->index,
                r->seg_open_name, strerror(res < 0 ? -res : EAGAIN));
        if (res >= 0)
            close(res);
        return; /* the current segment goes on; the next message tries again */
    }
    rec = malloc(128);
    s = rec ? seg_new(r, res, r->seg_open_id, info.seed) : NULL;
    if (s == NULL) {
        r->seg_opening = false;
        free(rec);
        close(res);
        return;
    }
    s->current = false;
    iov.iov_base = rec;
    iov.iov_len = spool_seg_record(rec, 128, &info);
    if (submit_write(r, s, NULL, NULL, rec, &iov, 1) < 0) {
        r->seg_opening = false;
        free(rec);
        seg_unref(r, s); /* holds nothing: closed */
        return;
    }
    /* messages move to it once its SEG record is written (spool_io_on_write) */
    r->seg_next = s;
    r->dir_dirty = true; /* the new name must be durable before a 250 depends on it */
}

/* The next segment's SEG record is written: make it current. */
static void
seg_switch(struct reactor *r, struct segment *s, bool ok)
{
    struct segment *old = r->seg;

    r->seg_next = NULL;
    r->seg_opening = false;
    if (!ok) {
        seg_unref(r, s); /* dropped: the current segment goes on */
        return;
    }
    s->current = true;
    r->seg = s;
    if (old != NULL) {
        old->current = false;
        seg_unref(r, old); /* the reactor's reference; closed once nothing else holds it */
    }
    log_msg(LOG_INFO, "event=segment_rotated reactor=%u segment=%s", r->index, r->seg_open_name);
}

/* ---- messages ---- */

/* A bounce lets go of the message it reports on; finished: its DONE record is written. */
static void
orig_put(struct reactor *r, struct msg_io *m, bool finished)
{
    struct qmsg *oq = m->orig;

    if (oq == NULL)
        return;
    if (finished && m->orig_n > 0) {
        spool_io_done(r, oq->seg, oq->env.id, m->orig_rcpt, m->orig_n);
        oq->nleft -= MIN(m->orig_n, oq->nleft);
    }
    m->orig = NULL;
    free(m->orig_rcpt);
    m->orig_rcpt = NULL;
    if (atomic_fetch_sub_explicit(&oq->refs, 1, memory_order_acq_rel) == 1)
        handoff_release(r, oq);
}

static void
msg_free(struct reactor *r, struct msg_io *m)
{
    orig_put(r, m, false); /* the bounce failed: those recipients stay pending */
    if (m->q != NULL) {
        qmsg_free(m->q); /* never handed off: its segment reference goes too */
        seg_unref(r, m->seg);
    }
    buf_pool_put(&r->chunk_pool, m->chunk);
    free(m->ext);
    seg_unref(r, m->seg);
    free(m);
}

static void
log_queued(struct reactor *r, const struct conn *c, const struct envelope *env)
{
    char from[LOG_PEER_MAX * 4 + 1];
    struct slice s = env_get(env, env->sender);

    char extra[SMTP_AUTH_USER_MAX * 4 + SMTP_TLS_DESC_MAX + 32] = "";

    log_escape(from, sizeof(from), s.p, s.len);
    if (c->sess.flags & (SMTP_F_TLS | SMTP_F_AUTHED)) {
        char user[SMTP_AUTH_USER_MAX * 4 + 1];

        log_escape(user, sizeof(user), c->sess.auth_user, strlen(c->sess.auth_user));
        snprintf(extra, sizeof(extra), " tls=\"%s\" user=%s",
                 c->sess.tls_desc[0] ? c->sess.tls_desc : "none", user[0] ? user : "-");
    }
    log_msg(LOG_INFO,
            "event=received qid=%s reactor=%u sid=%016" PRIx64 " client=%s from=<%s> size=%" PRIu64
            " nrcpt=%u%s",
            env->qid, r->index, c->sid, c->sess.client, from, env->body_len, env->nrcpt, extra);
}

/* The message's fate is known: tell the session (if its client is still there), free it. */
static void
msg_finish(struct reactor *r, struct msg_io *m, int rc)
{
    struct conn *c = m->conn;

    if (rc == 0) {
        struct qmsg *q = m->q;

        STAT_INC(r, msgs_accepted, 1);
        if (m->end_us != 0) {
            uint64_t now = clock_mono_us();

            hist_observe(&r->stats.commit_latency, &hist_commit_latency,
                         now > m->end_us ? now - m->end_us : 0);
        }
        m->q = NULL;
        orig_put(r, m, true);
        m->seg->pending++; /* even without q (no memory): the file stays for the next start */
        /* durable: the workers take it from here (its segment reference goes with it) */
        if (q != NULL)
            handoff_message(r, q, NULL);
    } else {
        STAT_INC(r, commit_errors, 1);
    }
    if (c != NULL) {
        c->msg = NULL;
        if (rc == 0)
            log_queued(r, c, &c->sess.env);
        else
            log_msg(LOG_WARN, "event=spool_error reactor=%u sid=%016" PRIx64 " qid=%s error=\"%s\"",
                    r->index, c->sid, c->sess.env.qid, strerror(-rc));
        smtp_session_committed(&c->sess, rc);
        conn_resume(r, c);
    }
    msg_free(r, m);
}

static void
msg_ready(struct reactor *r, struct msg_io *m)
{
    m->next = NULL;
    *r->ready_tail = m;
    r->ready_tail = &m->next;
}

int
spool_io_msg_begin(struct reactor *r, struct conn *c, struct envelope *env)
{
    struct msg_io *m;

    if (r->stopping || r->nhandoff > HANDOFF_MAX)
        return -EAGAIN; /* 451 4.3.1: the workers' rings are full, memory does not grow */
    if (r->seg == NULL) {
        seg_rotate(r); /* no segment could be made yet (disk full at start): try again */
        return -ENOSPC;
    }
    if (r->seg->end >= r->cfg->spool_segment_size)
        seg_rotate(r);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -EAGAIN;
    m->conn = c;
    m->seg = r->seg;
    m->seg->refs++;
    env->id = spool_next_id(&r->last_id, r->index, r->wall_ms / 1000);
    qid_format(env->id, env->qid);
    env->arrival = r->wall_ms / 1000;
    c->msg = m;
    return 0;
}

/* Seal the current chunk as a DATA record and note its extent; returns its on-disk size. */
static size_t
chunk_seal(struct msg_io *m, uint64_t id)
{
    struct spool_rec_hdr *h = (struct spool_rec_hdr *)(void *)m->chunk;
    struct iovec pl = { m->chunk + SPOOL_HDR_SIZE, m->chunk_len };
    size_t size = spool_rec_size(m->chunk_len);

    memset(m->chunk + SPOOL_HDR_SIZE + m->chunk_len, 0, size - SPOOL_HDR_SIZE - m->chunk_len);
    spool_rec_seal(h, SPOOL_REC_DATA, id, m->seg->seed, &pl, 1);
    return size;
}

static int
ext_add(struct msg_io *m, uint64_t off, uint32_t len)
{
    if (m->nextent == m->ext_cap) {
        uint32_t cap = m->ext_cap ? m->ext_cap * 2 : 4;
        struct spool_extent *e = realloc(m->ext, cap * sizeof(*e));

        if (e == NULL)
            return -ENOMEM;
        m->ext = e;
        m->ext_cap = cap;
    }
    m->ext[m->nextent].off = off;
    m->ext[m->nextent].len = len;
    m->nextent++;
    return 0;
}

char *
spool_io_body_space(struct reactor *r, struct conn *c, size_t *room)
{
    struct msg_io *m = c->msg;
    const size_t cap = BODY_CHUNK - SPOOL_HDR_SIZE - SPOOL_ALIGN;

    *room = 0;
    if (m == NULL)
        return NULL;
    if (m->err)
        goto discard;
    if (m->chunk != NULL && m->chunk_len == cap) {
        /* full: write it out and carry on in a fresh chunk */
        struct iovec iov;
        uint64_t off = m->seg->end;

        iov.iov_base = m->chunk;
        iov.iov_len = chunk_seal(m, c->sess.env.id);
        if (ext_add(m, off, m->chunk_len) < 0 ||
            submit_write(r, m->seg, m, m->chunk, NULL, &iov, 1) < 0) {
            m->err = -ENOMEM;
            goto discard;
        }
        m->chunk = NULL;
        if (m->writes >= BODY_INFLIGHT)
            conn_pause(r, c); /* the writes' completions resume reading */
    }
    if (m->chunk == NULL) {
        m->chunk = buf_pool_get(&r->chunk_pool);
        if (m->chunk == NULL) {
            m->err = -ENOMEM;
            goto discard;
        }
        m->chunk_len = 0;
    }
    *room = cap - m->chunk_len;
    return m->chunk + SPOOL_HDR_SIZE + m->chunk_len;

discard:
    /* storage failed: the rest of the body is read into the void (the session stays in
       sync) and the message gets 452 4.3.1 at its end */
    *room = sizeof(r->discard);
    return r->discard;
}

void
spool_io_body_commit(struct reactor *r, struct conn *c, size_t n)
{
    (void)r;
    if (c->msg->err == 0)
        c->msg->chunk_len += (uint32_t)n;
}

/*
 * Write message m's commit record (envelope and extents), after the DATA
 * record in *data when there is one (both in one writev), and make the
 * message object the workers will get once it is durable. 0 or -errno.
 */
static int
commit_write(struct reactor *r, struct msg_io *m, const struct envelope *env,
             const struct iovec *data)
{
    struct spool_rec_hdr *h;
    struct iovec iov[2], pl;
    size_t plen = spool_msg_payload_size(env, m->nextent), rsize = spool_rec_size(plen);
    char *rec = malloc(rsize);
    int n = 0;

    if (rec == NULL)
        return -ENOMEM;
    if (data != NULL)
        iov[n++] = *data;
    h = (struct spool_rec_hdr *)(void *)rec;
    pl.iov_base = rec + SPOOL_HDR_SIZE;
    pl.iov_len = spool_msg_encode(rec + SPOOL_HDR_SIZE, plen, env, m->ext, m->nextent);
    memset(rec + SPOOL_HDR_SIZE + pl.iov_len, 0, rsize - SPOOL_HDR_SIZE - pl.iov_len);
    spool_rec_seal(h, SPOOL_REC_MSG, env->id, m->seg->seed, &pl, 1);
    iov[n].iov_base = rec;
    iov[n].iov_len = rsize;
    n++;
    if (submit_write(r, m->seg, m, data != NULL ? m->chunk : NULL, rec, iov, n) < 0) {
        free(rec);
        return -EAGAIN;
    }
    if (data != NULL)
        m->chunk = NULL; /* now the write slot's, recycled on completion */
    /* what the workers will need once it is durable: a copy that outlives the session */
    m->q =
        qmsg_new(r->index, m->seg, m->seg->fd, m->seg->seed, env, m->ext, m->nextent, r->wall_ms);
    if (m->q != NULL)
        m->seg->refs++;
    else
        log_msg(LOG_ERR,
                "event=handoff_error reactor=%u qid=%s error=\"%s\" note=\"delivered after the "
                "next start\"",
                r->index, env->qid, strerror(ENOMEM));
    return 0;
}

void
spool_io_msg_end(struct reactor *r, struct conn *c, struct envelope *env)
{
    struct msg_io *m = c->msg;
    struct iovec data;
    bool have = false;
    int rc;

    m->ended = true;
    m->end_us = clock_mono_us(); /* ringmail_commit_latency_seconds starts here */
    if (m->err)
        goto fail;
    if (m->chunk != NULL && m->chunk_len > 0) {
        data.iov_base = m->chunk;
        data.iov_len = chunk_seal(m, env->id);
        if (ext_add(m, m->seg->end, m->chunk_len) < 0) {
            m->err = -ENOMEM;
            goto fail;
        }
        have = true;
    }
    rc = commit_write(r, m, env, have ? &data : NULL);
    if (rc < 0) {
        m->err = rc;
        goto fail;
    }
    return;

fail:
    /* never answer from inside the session's callback: the end of the turn does */
    if (m->writes == 0)
        msg_ready(r, m);
}

/*
 * Spool a message made here, a bounce: from <> to the original sender, its
 * body the report. It is committed and handed to the workers like any other.
 */
void
spool_io_inject(struct reactor *r, struct qmsg *oq, const uint32_t *failed, uint32_t nfailed,
                const char *body, size_t len, unsigned dsn_flags)
{
    const struct envelope *orig = &oq->env;
    const size_t cap = BODY_CHUNK - SPOOL_HDR_SIZE - SPOOL_ALIGN;
    struct envelope env;
    struct msg_io *m = NULL;
    struct slice to = env_get(orig, orig->sender);
    int rc = -ENOMEM;

    env_init(&env);
    if (r->seg == NULL) {
        rc = -ENOSPC;
        goto fail;
    }
    if (env_put(&env, &env.sender, "", 0) < 0 ||
        env_put(&env, &env.helo, r->cfg->myhostname, strlen(r->cfg->myhostname)) < 0 ||
        env_put(&env, &env.client, "", 0) < 0 || env_put(&env, &env.mail_params, "", 0) < 0 ||
        env_add_rcpt(&env, to, SLICE_LIT("")) < 0)
        goto fail;
    env.flags = ENV_F_ESMTP | ((dsn_flags & DSN_OUT_F_8BIT) ? ENV_F_8BITMIME : 0) |
                ((dsn_flags & DSN_OUT_F_SMTPUTF8) ? ENV_F_SMTPUTF8 : 0);
    env.id = spool_next_id(&r->last_id, r->index, r->wall_ms / 1000);
    qid_format(env.id, env.qid);
    env.arrival = r->wall_ms / 1000;
    env.body_len = len;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto fail;
    m->seg = r->seg;
    m->seg->refs++;
    /* the failed recipients are finished only once their bounce is durable (msg_finish) */
    m->orig_rcpt = malloc((nfailed + 1) * sizeof(*m->orig_rcpt));
    if (m->orig_rcpt == NULL)
        goto fail_msg;
    if (nfailed > 0)
        memcpy(m->orig_rcpt, failed, nfailed * sizeof(*failed));
    m->orig_n = nfailed;
    m->orig = oq;
    atomic_fetch_add_explicit(&oq->refs, 1, memory_order_relaxed); /* we hold one already */
    for (size_t off = 0; off < len;) {
        size_t n = MIN(cap, len - off);
        struct iovec iov;
        uint64_t at = m->seg->end;

        m->chunk = buf_pool_get(&r->chunk_pool);
        if (m->chunk == NULL)
            goto fail_msg;
        memcpy(m->chunk + SPOOL_HDR_SIZE, body + off, n);
        m->chunk_len = (uint32_t)n;
        iov.iov_base = m->chunk;
        iov.iov_len = chunk_seal(m, env.id);
        if (ext_add(m, at, m->chunk_len) < 0 ||
            submit_write(r, m->seg, m, m->chunk, NULL, &iov, 1) < 0)
            goto fail_msg;
        m->chunk = NULL;
        off += n;
    }
    m->ended = true;
    rc = commit_write(r, m, &env, NULL);
    if (rc < 0)
        goto fail_msg;
    /* Postfix's "sender non-delivery notification" / "sender delivery status notification" */
    log_msg(LOG_INFO, "event=dsn kind=%s qid=%s reactor=%u dsn_qid=%s to=<%.*s> size=%zu",
            nfailed > 0 ? "failure" : "success", orig->qid, r->index, env.qid,
            (int)MIN(to.len, LOG_PEER_MAX), to.p, len);
    env_free(&env);
    return;

fail_msg:
    /* what was written is never committed: recovery ignores it */
    m->aborted = true;
    if (m->writes == 0)
        msg_free(r, m);
fail:
    log_msg(LOG_ERR, "event=bounce_error qid=%s reactor=%u error=\"%s\"", orig->qid, r->index,
            strerror(-rc));
    env_free(&env);
}

void
spool_io_msg_abort(struct reactor *r, struct conn *c)
{
    struct msg_io *m = c->msg;

    if (m == NULL)
        return;
    c->msg = NULL;
    m->conn = NULL;
    m->aborted = true;
    STAT_INC(r, msgs_refused, 1);
    if (m->writes == 0)
        msg_free(r, m);
}

void
spool_io_msg_detach(struct reactor *r, struct conn *c)
{
    (void)r;
    if (c->msg != NULL)
        c->msg->conn = NULL;
    c->msg = NULL;
}

void
spool_io_on_write(struct reactor *r, uint32_t index, uint32_t gen, int res)
{
    struct spool_write *w = &r->writes[index];
    struct msg_io *m = w->msg;
    struct segment *seg = w->seg;
    bool ok = res >= 0 && (size_t)res == w->expect;

    BUG_ON(!w->used || w->gen != gen);
    r->spool_inflight--;
    w->used = false;
    r->writes_used--;
    buf_pool_put(&r->chunk_pool, w->chunk);
    free(w->extra);
    w->chunk = w->extra = NULL;
    w->msg = NULL;
    w->seg = NULL;
    seg->dirty = true;
    if (!ok) {
        int err = res < 0 ? res : -ENOSPC; /* a short write: the file system is full */

        log_msg(LOG_ERR,
                "event=spool_error reactor=%u what=write segment=%016" PRIx64 " error=\"%s\"",
                r->index, seg->id, strerror(-err));
        if (m != NULL && m->err == 0)
            m->err = err;
    }
    if (m == NULL && seg == r->seg_next)
        seg_switch(r, seg, ok);
    seg_unref(r, seg); /* the write's reference */
    if (m == NULL)
        return;
    m->writes--;
    if (m->writes > 0)
        return;
    if (m->aborted) {
        msg_free(r, m);
    } else if (m->ended) {
        if (m->err)
            msg_finish(r, m, m->err);
        else
            msg_ready(r, m);
    } else if (m->conn != NULL) {
        conn_resume(r, m->conn); /* room to read more body */
    }
}

void
spool_io_on_sync(struct reactor *r, uint32_t batch, int res)
{
    struct sync_batch *b = &r->sync[batch];
    struct msg_io *m, *next;

    r->spool_inflight--;
    if (res < 0 && b->err == 0) {
        b->err = res;
        log_msg(LOG_ERR, "event=spool_error reactor=%u what=fdatasync error=\"%s\"", r->index,
                strerror(-res));
    }
    BUG_ON(b->ops == 0);
    if (--b->ops > 0)
        return;
    STAT_INC(r, fsyncs, 1);
    m = b->msgs;
    b->msgs = NULL;
    res = b->err;
    b->err = 0;
    for (; m != NULL; m = next) {
        next = m->next;
        msg_finish(r, m, res);
    }
}

static void
finish_list(struct reactor *r, struct msg_io *m, bool use_own_err)
{
    struct msg_io *next;

    for (; m != NULL; m = next) {
        next = m->next;
        msg_finish(r, m, use_own_err ? m->err : 0);
    }
}

/* Put a list at the end of batch b's messages. */
static void
batch_add(struct sync_batch *b, struct msg_io *list)
{
    struct msg_io **pp = &b->msgs;

    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = list;
}

/*
 * Group commit, once per loop turn: every message whose writes completed is
 * covered by one fdatasync per segment written since the last one (and an
 * fsync of the folder after a segment was created). A sync covers the writes
 * that completed before it started, so batches may overlap: a message need not
 * wait for a sync that started before its own writes were done.
 */
void
spool_io_end_of_turn(struct reactor *r)
{
    struct io_uring_sqe *sqe;
    struct msg_io *m, *list;
    int b = -1;
    unsigned ops = 0;

    if (r->ready == NULL)
        return;
    if (r->cfg->durability == DURABILITY_NONE) {
        list = r->ready;
        r->ready = NULL;
        r->ready_tail = &r->ready;
        finish_list(r, list, true);
        return;
    }
    /* failed messages get their 452 now; the rest wait for a sync */
    for (struct msg_io **pp = &r->ready; (m = *pp) != NULL;) {
        if (m->err) {
            *pp = m->next;
            msg_finish(r, m, m->err);
        } else {
            pp = &m->next;
        }
    }
    r->ready_tail = &r->ready;
    for (m = r->ready; m != NULL; m = m->next)
        r->ready_tail = &m->next;
    if (r->ready == NULL)
        return;
    bool dirty = r->dir_dirty;

    for (struct segment *s = r->segs; s != NULL && !dirty; s = s->next)
        dirty = s->dirty;
    if (!dirty) {
        /* no write completed since the last sync was submitted: that sync, if still in
           flight, covers these messages; if it is done, they are durable already */
        list = r->ready;
        r->ready = NULL;
        r->ready_tail = &r->ready;
        if (r->sync_last >= 0 && r->sync[r->sync_last].ops > 0)
            batch_add(&r->sync[r->sync_last], list);
        else
            finish_list(r, list, false);
        return;
    }
    for (int i = 0; i < SYNC_BATCHES; i++) {
        if (r->sync[i].ops == 0 && r->sync[i].msgs == NULL) {
            b = i;
            break;
        }
    }
    if (b < 0)
        return; /* every batch is in flight: these wait for the next turn */
    for (struct segment *s = r->segs; s != NULL; s = s->next) {
        if (!s->dirty)
            continue;
        s->dirty = false;
        sqe = reactor_sqe(r);
        io_uring_prep_fsync(sqe, s->fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, ud_make(0, (uint32_t)b, OP_SYNC));
        ops++;
    }
    if (r->dir_dirty) {
        r->dir_dirty = false;
        sqe = reactor_sqe(r);
        io_uring_prep_fsync(sqe, r->spool_dir_fd, 0);
        io_uring_sqe_set_data64(sqe, ud_make(0, (uint32_t)b, OP_SYNC));
        ops++;
    }
    r->spool_inflight += ops;
    r->sync[b].ops = ops;
    r->sync[b].msgs = r->ready;
    r->sync_last = b;
    r->ready = NULL;
    r->ready_tail = &r->ready;
}

bool
spool_io_idle(const struct reactor *r)
{
    for (int i = 0; i < SYNC_BATCHES; i++) {
        if (r->sync[i].msgs != NULL)
            return false;
    }
    return r->spool_inflight == 0 && r->ready == NULL;
}

int
spool_io_init(struct reactor *r, uint64_t last_id)
{
    int rc;

    r->last_id = last_id;
    r->ready = NULL;
    r->ready_tail = &r->ready;
    r->sync_last = -1;
    r->nwrites = SPOOL_WRITE_SLOTS;
    r->writes = calloc(r->nwrites, sizeof(*r->writes));
    if (r->writes == NULL)
        return -ENOMEM;
    r->spool_dir_fd = open(r->cfg->spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->spool_dir_fd == -1) {
        rc = -errno;
        log_msg(LOG_ERR, "event=fatal reactor=%u what=spool_dir dir=%s error=\"%s\"", r->index,
                r->cfg->spool_dir, strerror(errno));
        free(r->writes);
        r->writes = NULL;
        return rc;
    }
    rc = seg_open_sync(r);
    if (rc < 0) {
        /* a full disk at start is not fatal: messages get 452 until a segment can be made */
        log_msg(LOG_ERR,
                "event=spool_error reactor=%u what=segment dir=%s error=\"%s\" "
                "note=\"retried at the next message\"",
                r->index, r->cfg->spool_dir, strerror(-rc));
    }
    return 0;
}

void
spool_io_fini(struct reactor *r)
{
    struct segment *s, *next;

    for (s = r->segs; s != NULL; s = next) {
        next = s->next;
        if (s->fd >= 0)
            close(s->fd);
        free(s);
    }
    r->segs = r->seg = NULL;
    if (r->spool_dir_fd >= 0)
        close(r->spool_dir_fd);
    free(r->writes);
    r->writes = NULL;
}

void
spool_io_done(struct reactor *r, struct segment *seg, uint64_t id, const uint32_t *rcpt, unsigned n)
{
    size_t size = spool_done_record_size(n);
    char *rec = malloc(size);
    struct iovec iov;

    if (rec == NULL || (iov.iov_len = spool_done_record(rec, size, id, seg->seed, rcpt, n)) == 0 ||
        (iov.iov_base = rec, submit_write(r, seg, NULL, NULL, rec, &iov, 1)) < 0) {
        /* without its DONE record the message is delivered again after a restart */
        log_msg(LOG_WARN, "event=spool_error reactor=%u what=done id=%016" PRIx64, r->index, id);
        free(rec);
    }
}

/* Start-up: this reactor's recovered segments, re-opened for reading and appending. */
int
spool_io_requeue(struct reactor *r)
{
    const struct spool_index *idx = r->recovered;
    size_t queued = 0;

    if (idx == NULL)
        return 0;
    for (size_t k = 0; k < idx->nseg; k++) {
        const struct spool_seg *ss = &idx->seg[k];
        struct segment *seg;
        struct stat st;
        char name[64];
        int fd;

        if (ss->reactor % r->nreactors != r->index)
            continue;
        spool_seg_name(ss->seg_id, name, sizeof(name));
        if (ss->pending == 0) {
            if (!ss->keep && !ss->bad && spool_seg_unlink(r->cfg->spool_dir, ss->seg_id) == 0) {
                STAT_INC(r, segments_unlinked, 1);
            } else if (fstatat(r->spool_dir_fd, name, &st, 0) == 0) {
                /* left on disk (kept, or unreadable): counted until the next start */
                STAT_INC(r, spool_segments, 1);
                STAT_INC(r, spool_bytes, (uint64_t)st.st_size);
            }
            continue;
        }
        fd = openat(r->spool_dir_fd, name, O_RDWR | O_CLOEXEC);
        if (fd == -1 || fstat(fd, &st) == -1) {
            log_msg(LOG_ERR, "event=spool_error reactor=%u what=reopen segment=%s error=\"%s\"",
                    r->index, name, strerror(errno));
            if (fd != -1)
                close(fd);
            continue;
        }
        seg = seg_new(r, fd, ss->seg_id, ss->seed);
        if (seg == NULL) {
            close(fd);
            continue;
        }
        seg->current = false;
        seg->refs = 1;              /* held while its messages are queued below */
        seg->pending = ss->pending; /* one that fails to requeue keeps the file */
        /* DONE records go after whatever the file ends with, torn tail included */
        seg->end = ((uint64_t)st.st_size + SPOOL_ALIGN - 1) & ~(uint64_t)(SPOOL_ALIGN - 1);
        STAT_INC(r, spool_bytes, seg->end);
        for (size_t i = 0; i < idx->nmsg; i++) {
            const struct spool_msg *m = &idx->msg[i];
            struct qmsg *q;

            if (m->seg_id != ss->seg_id)
                continue;
            q = qmsg_new(r->index, seg, fd, ss->seed, &m->env, m->ext, m->nextent,
                         m->env.arrival * 1000);
            if (q == NULL)
                continue;
            seg->refs++;
            handoff_message(r, q, m->rcpt_done);
            queued++;
        }
        seg_unref(r, seg);
    }
    if (queued > 0)
        log_msg(LOG_INFO, "event=requeued reactor=%u messages=%zu", r->index, queued);
    return 0;
}
