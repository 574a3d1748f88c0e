/*
 * reactor.c: the per-core io_uring event loop.
 *
 * Thread affinity: everything here runs on the reactor's own thread, except
 * reactor_listen() (main thread, before the thread starts) and
 * reactor_stop()/reactor_join() (main thread).
 *
 * One loop turn: submit what the last turn queued and wait for at least one
 * completion (io_uring_submit_and_wait_timeout), handle every completion in
 * the CQ, then do the end-of-turn work: feed connections whose input was
 * waiting, queue one send per connection with output (a pipelined batch gets
 * one send), start a group commit for every message written this turn, and
 * write this turn's log lines. No blocking syscall happens inside the loop.
 */
#define _GNU_SOURCE
#include "net/auth.h"
#include "net/reactor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/log.h"
#include "net/util.h"

struct reactor_shared reactor_shared;

#define RING_ENTRIES 4096u
#define CQ_ENTRIES   32768u
#define TICK_MS      100u

/* True when a connection's 220 is due now: the next turn must not sleep. */
static bool
greet_due(const struct reactor *r)
{
    for (const struct conn *c = r->greet; c != NULL; c = c->next_greet) {
        if (r->now_ms >= c->greet_at_ms)
            return true;
    }
    return false;
}

/* ---- buffer pools ---- */

int
buf_pool_init(struct buf_pool *p, size_t size, unsigned keep)
{
    p->items = calloc(keep, sizeof(*p->items));
    if (p->items == NULL)
        return -ENOMEM;
    p->n = 0;
    p->keep = keep;
    p->size = size;
    return 0;
}

void
buf_pool_fini(struct buf_pool *p)
{
    for (unsigned i = 0; i < p->n; i++)
        free(p->items[i]);
    free(p->items);
    p->items = NULL;
    p->n = 0;
}

char *
buf_pool_get(struct buf_pool *p)
{
    if (p->n > 0)
        return p->items[--p->n];
    return malloc(p->size);
}

void
buf_pool_put(struct buf_pool *p, char *buf)
{
    if (buf == NULL)
        return;
    if (p->n < p->keep)
        p->items[p->n++] = buf;
    else
        free(buf);
}

/* ---- submission ---- */

struct io_uring_sqe *
reactor_sqe(struct reactor *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

    if (sqe == NULL) {
        /* SQ full: push what we have to the kernel and take a fresh slot */
        io_uring_submit(&r->ring);
        sqe = io_uring_get_sqe(&r->ring);
        BUG_ON(sqe == NULL);
    }
    return sqe;
}

static void
arm_accept(struct reactor *r, unsigned li)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);

    io_uring_prep_multishot_accept(sqe, r->lis[li].fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud_make(r->lis[li].gen, li, OP_ACCEPT));
}

/* Stop accepting on slot li and close it; a completion already on its way is stale. */
static void
close_listener(struct reactor *r, unsigned li)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);

    io_uring_prep_cancel64(sqe, ud_make(r->lis[li].gen, li, OP_ACCEPT), 0);
    io_uring_sqe_set_data64(sqe, ud_make(0, 0, OP_NONE));
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    /* the accept in flight keeps the file open until its cancel has run: shutdown() stops
       the listener now, so the kernel refuses new connections from this moment */
    (void)shutdown(r->lis[li].fd, SHUT_RDWR);
    close(r->lis[li].fd);
    r->lis[li].fd = -1;
    r->lis[li].gen++;
}

static void
arm_wake(struct reactor *r)
{
    struct io_uring_sqe *sqe = reactor_sqe(r);

    io_uring_prep_read(sqe, r->wake_fd, &r->wake_buf, sizeof(r->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, ud_make(0, 0, OP_WAKE));
}

/* ---- set-up ---- */

int
listen_socket(const struct config_hostport *hp, char *err, size_t errlen)
{
    char t[CONFIG_HOSTPORT_TEXT_MAX];
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1, fd, rc;

    if (hostport_sockaddr(hp, &ss, &sl) < 0) {
        snprintf(err, errlen, "listen %s:%u: not an IP address (names are not resolved)", hp->host,
                 hp->port);
        return -EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    /* accepted sockets inherit TCP_NODELAY: a reply batch is one send anyway */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 4096) == -1)
        goto fail;
    return fd;
fail:
    rc = -errno;
    snprintf(err, errlen, "listen %s: %s", config_hostport_text(hp, t, sizeof(t)), strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

int
reactor_listen(struct reactor *r, struct snapshot *snap, char *err, size_t errlen)
{
    const struct ringmail_config *cfg = &snap->cfg;

    r->snap = snapshot_ref(snap);
    r->cfg = cfg;
    atomic_store_explicit(&r->snap_gen, snap->gen, memory_order_relaxed);
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++)
        r->lis[i].fd = -1;
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        int fd = listen_socket(&cfg->listen[i], err, errlen);

        if (fd < 0)
            return fd;
        r->lis[i].fd = fd;
        r->lis[i].hp = cfg->listen[i];
    }
    return 0;
}

static int
reactor_init(struct reactor *r)
{
    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
                 IORING_SETUP_SUBMIT_ALL,
        .cq_entries = CQ_ENTRIES,
    };
    const struct ringmail_config *cfg = r->cfg;
    size_t br_size = RX_BUF_COUNT * sizeof(struct io_uring_buf);
    struct io_uring_buf_reg reg = { 0 };
    int rc;

    rc = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
    if (rc < 0) {
        log_msg(LOG_ERR, "event=fatal reactor=%u what=io_uring_setup error=\"%s\"%s", r->index,
                strerror(-rc), uring_hint(rc));
        return rc;
    }
    /* provided-buffer ring: shared by every connection of this reactor */
    r->br = mmap(NULL, br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r->br == MAP_FAILED) {
        rc = -errno;
        goto fail_ring;
    }
    reg.ring_addr = (uint64_t)(uintptr_t)r->br;
    reg.ring_entries = RX_BUF_COUNT;
    reg.bgid = 0;
    rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (rc < 0)
        goto fail_br;
    r->rx_bufs = malloc((size_t)RX_BUF_COUNT * RX_BUF_SIZE);
    if (r->rx_bufs == NULL) {
        rc = -ENOMEM;
        goto fail_br;
    }
    io_uring_buf_ring_init(r->br);
    r->rx_mask = (unsigned)io_uring_buf_ring_mask(RX_BUF_COUNT);
    for (unsigned i = 0; i < RX_BUF_COUNT; i++)
        io_uring_buf_ring_add(r->br, r->rx_bufs + (size_t)i * RX_BUF_SIZE, RX_BUF_SIZE,
                              (unsigned short)i, (int)r->rx_mask, (int)i);
    io_uring_buf_ring_advance(r->br, RX_BUF_COUNT);

    /* connection slots: calloc'd, so slots never used cost no resident memory */
    r->nconns = cfg->max_connections + 64; /* room to answer 421 beyond the limit */
    r->conns = calloc(r->nconns, sizeof(*r->conns));
    r->free_next = malloc(r->nconns * sizeof(uint32_t));
    if (r->conns == NULL || r->free_next == NULL) {
        rc = -ENOMEM;
        goto fail_bufs;
    }
    for (uint32_t i = 0; i < r->nconns; i++)
        r->free_next[i] = i + 1;
    r->free_head = 0;

    if (buf_pool_init(&r->tx_pool, TX_BUF_SIZE, 1024) < 0 ||
        buf_pool_init(&r->tls_pool, TLS_BUF_SIZE, 64) < 0 ||
        buf_pool_init(&r->carry_pool, cfg->command_line_limit + CARRY_EXTRA, 64) < 0 ||
        buf_pool_init(&r->chunk_pool, BODY_CHUNK, 256) < 0) {
        rc = -ENOMEM;
        goto fail_bufs;
    }
    if (logbuf_init(&r->log, ud_make(0, 0, OP_LOG)) < 0) {
        rc = -ENOMEM;
        goto fail_bufs;
    }
    r->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (r->wake_fd == -1) {
        rc = -errno;
        goto fail_bufs;
    }
    return 0;

fail_bufs:
    free(r->rx_bufs);
fail_br:
    munmap(r->br, br_size);
fail_ring:
    io_uring_queue_exit(&r->ring);
    return rc;
}

/* ---- the loop ---- */

static void
handle_cqe(struct reactor *r, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    enum op op = (enum op)(ud & 0xff);
    uint32_t index = (uint32_t)(ud >> 8) & 0xffffff;
    uint32_t gen = (uint32_t)(ud >> 32);
    struct conn *c;

    switch (op) {
    case OP_ACCEPT: {
        /* a slot closed by a reload (or the stop) may still deliver one */
        bool live = index < CONFIG_MAX_LISTEN && r->lis[index].fd >= 0 &&
                    r->lis[index].gen == gen && !r->stopping;

        if (cqe->res >= 0) {
            if (!live)
                close(cqe->res);
            else
                conn_accepted(r, cqe->res, index);
        } else if (cqe->res != -ECANCELED && live) {
            log_msg(LOG_WARN, "event=accept_error reactor=%u error=\"%s\"", r->index,
                    strerror(-cqe->res));
        }
        if (!(cqe->flags & IORING_CQE_F_MORE) && live)
            arm_accept(r, index);
        return;
    }
    case OP_RECV:
    case OP_SEND:
    case OP_CANCEL:
    case OP_CLOSE:
        c = &r->conns[index];
        if (c->gen != gen || !(c->flags & CONN_F_USED)) {
            /* stale: only give back a provided buffer it may carry */
            if (cqe->flags & IORING_CQE_F_BUFFER) {
                unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

                io_uring_buf_ring_add(r->br, r->rx_bufs + (size_t)bid * RX_BUF_SIZE, RX_BUF_SIZE,
                                      (unsigned short)bid, (int)r->rx_mask, 0);
                io_uring_buf_ring_advance(r->br, 1);
            }
            return;
        }
        if (op == OP_RECV) {
            conn_on_recv(r, c, cqe);
        } else if (op == OP_SEND) {
            c->inflight--;
            conn_on_send(r, c, cqe->res);
        } else if (op == OP_CANCEL) {
            c->inflight--;
        } else {
            c->inflight--;
            conn_on_close(r, c);
        }
        if ((c->flags & CONN_F_CLOSED) && c->inflight == 0)
            conn_put(r, c);
        return;
    case OP_WRITE:
        spool_io_on_write(r, index, gen, cqe->res);
        return;
    case OP_SYNC:
        spool_io_on_sync(r, index, cqe->res);
        return;
    case OP_SEGOPEN:
        spool_io_on_segopen(r, cqe->res);
        return;
    case OP_SEGCLOSE:
        r->spool_inflight--;
        return;
    case OP_WAKE:
        if (!atomic_load_explicit(&r->stop, memory_order_acquire))
            arm_wake(r);
        return;
    case OP_LOG:
        logbuf_done(&r->log, &r->ring, cqe->res);
        return;
    case OP_NONE:
        break;
    }
    BUG_ON(1);
}

static void
begin_stop(struct reactor *r)
{
    r->stopping = true;
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++) {
        if (r->lis[i].fd >= 0)
            close_listener(r, i);
    }
    for (uint32_t i = 0; i < r->nconns; i++) {
        if (r->conns[i].flags & CONN_F_USED)
            conn_shutdown(r, &r->conns[i], false);
    }
}

static void
end_of_turn(struct reactor *r)
{
    struct conn *c;

    if (r->greet_pending > 0)
        conn_greet_check(r);
    if (r->to_workers != NULL)
        handoff_turn(r);
    if (reactor_shared.auth != NULL)
        auth_pool_poll(reactor_shared.auth, r->index, conn_auth_result, r);
    /* connections with input to resume or output to send */
    while ((c = r->dirty) != NULL) {
        r->dirty = c->next_dirty;
        c->next_dirty = NULL;
        c->flags &= ~CONN_F_DIRTY;
        conn_flush(r, c);
        if ((c->flags & CONN_F_CLOSED) && c->inflight == 0)
            conn_put(r, c);
    }
    spool_io_end_of_turn(r);
    logbuf_flush(&r->log, &r->ring);
}

static void
tick(struct reactor *r)
{
    for (uint32_t i = 0; i < r->nconns && r->conns_used > 0; i++) {
        struct conn *c = &r->conns[i];

        if (c->flags & CONN_F_USED)
            conn_tick(r, c);
    }
}

/* Release what reactor_init() and the loop allocated; the loop is over. */
static void
reactor_fini(struct reactor *r)
{
    for (uint32_t i = 0; i < r->nconns; i++) {
        struct conn *c = &r->conns[i];

        if (c->flags & CONN_F_USED) {
            if (c->fd >= 0)
                close(c->fd);
            c->flags |= CONN_F_CLOSED;
            conn_put(r, c);
        }
    }
    while (r->handoff != NULL) { /* never pushed: pending in the spool for the next start */
        struct delivery *d = r->handoff;
        struct qmsg *q = d->msg;

        r->handoff = d->next;
        if (handoff_delivery_free(d))
            qmsg_free(q);
    }
    buf_pool_fini(&r->tx_pool);
    buf_pool_fini(&r->tls_pool);
    buf_pool_fini(&r->carry_pool);
    buf_pool_fini(&r->chunk_pool);
    free(r->conns);
    free(r->free_next);
    logbuf_fini(&r->log);
    free(r->rx_bufs);
    io_uring_queue_exit(&r->ring);
    munmap(r->br, RX_BUF_COUNT * sizeof(struct io_uring_buf));
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++) {
        if (r->lis[i].fd >= 0)
            close(r->lis[i].fd);
        r->lis[i].fd = -1;
    }
    r->conns = NULL;
}

static void
log_addr(const char *event, const struct config_hostport *hp)
{
    char t[CONFIG_HOSTPORT_TEXT_MAX];

    log_msg(LOG_INFO, "event=%s addr=%s", event, config_hostport_text(hp, t, sizeof(t)));
}

/* A reload: listeners gone from s close, listeners s adds open (main bound them). */
static void
adopt_listeners(struct reactor *r, struct snapshot *s)
{
    char t[CONFIG_HOSTPORT_TEXT_MAX];
    const struct ringmail_config *cfg = &s->cfg;

    for (unsigned li = 0; li < CONFIG_MAX_LISTEN; li++) {
        bool kept = false;

        if (r->lis[li].fd < 0)
            continue;
        for (unsigned j = 0; j < cfg->nlisten && !kept; j++) {
            if (config_hostport_same(&r->lis[li].hp, &cfg->listen[j])) {
                r->lis[li].hp = cfg->listen[j]; /* its kind or proxy may have changed */
                kept = true;
            }
        }
        if (!kept) {
            if (r->index == 0)
                log_addr("listener_closed", &r->lis[li].hp);
            close_listener(r, li);
        }
    }
    for (unsigned j = 0; j < cfg->nlisten; j++) {
        const struct config_hostport *hp = &cfg->listen[j];
        unsigned li, free_li = CONFIG_MAX_LISTEN;
        int *fd =
            s->lfd != NULL && r->index < s->nreactors ? &s->lfd[j * s->nreactors + r->index] : NULL;

        for (li = 0; li < CONFIG_MAX_LISTEN; li++) {
            if (r->lis[li].fd >= 0 && config_hostport_same(&r->lis[li].hp, hp))
                break;
            if (r->lis[li].fd < 0 && free_li == CONFIG_MAX_LISTEN)
                free_li = li;
        }
        if (li < CONFIG_MAX_LISTEN)
            continue; /* open already */
        if (fd == NULL || *fd < 0 || free_li == CONFIG_MAX_LISTEN) {
            log_msg(LOG_ERR,
                    "event=listen_error reactor=%u addr=%s note=\"no socket for this listener "
                    "on this reactor: restart to open it\"",
                    r->index, config_hostport_text(hp, t, sizeof(t)));
            continue;
        }
        r->lis[free_li].fd = *fd;
        r->lis[free_li].hp = *hp;
        *fd = -1; /* ours now */
        arm_accept(r, free_li);
        if (r->index == 0)
            log_addr("listening", hp);
    }
}

/* A reload: sessions already open keep theirs; new ones (and new mail's routes) get this. */
static void
adopt(struct reactor *r, struct snapshot *s)
{
    struct snapshot *old = r->snap;

    if (!r->stopping)
        adopt_listeners(r, s);
    r->snap = s;
    r->cfg = &s->cfg;
    snapshot_put(old);
    /* release: main reads it to know every reactor has moved on */
    atomic_store_explicit(&r->snap_gen, s->gen, memory_order_release);
}

static void *
reactor_main(void *arg)
{
    struct reactor *r = arg;
    uint64_t stop_deadline = 0, drain_deadline = 0;
    bool forced = false;
    int rc;

    log_set_thread_sink(logbuf_sink, &r->log);
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++) {
        if (r->lis[i].fd >= 0)
            arm_accept(r, i);
    }
    arm_wake(r);
    r->now_ms = clock_mono_ms();
    r->wall_ms = clock_wall_ms();
    r->next_tick_ms = r->now_ms + TICK_MS;

    for (;;) {
        struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = TICK_MS * 1000000ll };
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;

        if (greet_due(r) ||
            (r->from_workers != NULL && !q_mesh_prepare_sleep(r->from_workers, r->index))) {
            /* a 220 is owed, or deliveries came back: do not sleep */
            rc = io_uring_submit_and_get_events(&r->ring);
        } else {
            rc = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
        }
        if (r->from_workers != NULL)
            q_mesh_end_sleep(r->from_workers, r->index);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            log_msg(LOG_ERR, "event=fatal reactor=%u what=io_uring_enter error=\"%s\"", r->index,
                    strerror(-rc));
            break;
        }
        r->now_ms = clock_mono_ms();
        r->wall_ms = clock_wall_ms();
        io_uring_for_each_cqe(&r->ring, head, cqe)
        {
            handle_cqe(r, cqe);
            n++;
        }
        io_uring_cq_advance(&r->ring, n);
        STAT_INC(r, cqes, n);
        STAT_INC(r, loops, 1);
        {
            struct snapshot *s = snapshot_take(&r->next_snap);

            if (s != NULL)
                adopt(r, s);
        }

        if (!r->stopping && atomic_load_explicit(&r->stop, memory_order_acquire)) {
            begin_stop(r);
            drain_deadline = r->now_ms + r->cfg->shutdown_timeout;
            stop_deadline = drain_deadline + 5000; /* then whatever is left is abandoned */
        }
        if (r->now_ms >= r->next_tick_ms) {
            r->next_tick_ms = r->now_ms + TICK_MS;
            tick(r);
        }
        end_of_turn(r);
        if (r->stopping && r->conns_used == 0 && spool_io_idle(r) && logbuf_idle(&r->log) &&
            r->nhandoff == 0 &&
            (r->from_workers == NULL || q_mesh_count(r->from_workers, r->index) == 0))
            break;
        if (r->stopping && !forced && r->now_ms >= drain_deadline) {
            forced = true;
            if (r->conns_used > 0)
                log_msg(LOG_INFO, "event=drain_timeout reactor=%u connections=%u", r->index,
                        r->conns_used);
            for (uint32_t i = 0; i < r->nconns; i++) {
                if (r->conns[i].flags & CONN_F_USED)
                    conn_shutdown(r, &r->conns[i], true);
            }
            end_of_turn(r);
        }
        if (r->stopping && r->now_ms > stop_deadline) {
            log_msg(LOG_WARN, "event=stop_timeout reactor=%u connections=%u", r->index,
                    r->conns_used);
            break;
        }
    }
    log_set_thread_sink(NULL, NULL);
    logbuf_drain_sync(&r->log); /* the loop is over: what is left goes out synchronously */
    reactor_fini(r);
    spool_io_fini(r);
    snapshot_put(snapshot_take(&r->next_snap));
    snapshot_put(r->snap);
    r->snap = NULL;
    r->cfg = NULL;
    return NULL;
}

static void *
reactor_thread(void *arg)
{
    struct reactor *r = arg;

    int rc;

    /* the ring is created here: SINGLE_ISSUER binds it to its creating thread */
    rc = reactor_init(r);
    r->now_ms = clock_mono_ms();
    r->wall_ms = clock_wall_ms();
    r->handoff_tail = &r->handoff;
    if (rc == 0)
        rc = spool_io_init(r, r->last_id);
    if (rc == 0)
        rc = spool_io_requeue(r);
    r->recovered = NULL; /* main frees the index once every reactor has started */
    /* release: pairs with the acquire in reactor_start() */
    atomic_store_explicit(&r->started, rc < 0 ? rc : 1, memory_order_release);
    if (rc < 0)
        return NULL;
    reactor_main(r);
    /* release: the main thread joins once it sees this */
    atomic_store_explicit(&r->exited, true, memory_order_release);
    return NULL;
}

int
reactor_start(struct reactor *r, int cpu)
{
    pthread_attr_t attr;
    int rc;

    pthread_attr_init(&attr);
    if (cpu >= 0) {
        cpu_set_t set;

        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        (void)pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
    }
    rc = pthread_create(&r->thread, &attr, reactor_thread, r);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        return -rc;
    /* start-up only: the main thread waits for the reactor to report */
    while ((rc = atomic_load_explicit(&r->started, memory_order_acquire)) == 0) {
        struct timespec ts = { 0, 1000000 };

        nanosleep(&ts, NULL);
    }
    if (rc < 0) {
        pthread_join(r->thread, NULL);
        return rc;
    }
    return 0;
}

void
reactor_stop(struct reactor *r)
{
    uint64_t one = 1;

    /* release: pairs with the acquire loads in reactor_main() */
    atomic_store_explicit(&r->stop, true, memory_order_release);
    if (r->wake_fd > 0 && write(r->wake_fd, &one, sizeof(one)) == -1)
        return;
}

void
reactor_join(struct reactor *r)
{
    pthread_join(r->thread, NULL);
}
