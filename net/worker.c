/*
 * worker.c: an outbound delivery thread.
 *
 * Thread affinity: everything runs on the worker's thread except
 * worker_init() (main thread), worker_notify() and worker_stop() (any thread).
 *
 * Loop turn: take deliveries from the reactors (q_mesh_pop_batch), put each
 * on its destination's queue, start sessions or maildir jobs while the
 * destination is under destination_concurrency_limit, then wait in
 * io_uring_submit_and_wait_timeout(). Before sleeping the worker tells the
 * mesh (q_mesh_prepare_sleep), so a reactor that pushes a delivery wakes it
 * through its eventfd. Every 100 ms a tick applies timeouts, retires idle
 * cached connections and requeues deferred deliveries that are due.
 *
 * A session is one upstream connection (SMTP or LMTP) driven by the sans-I/O
 * client in core/smtp_client.c: connect, recv and send go through the ring.
 * A message's body is read from its spool segment with one read per DATA
 * record, each checked against its checksum, and dot-stuffed by the client
 * into the session's output in one copy. A Maildir delivery writes the body
 * into tmp/, fsyncs it and renames it into new/, all through the ring.
 *
 * TLS (smtp_tls_security_level, not for LMTP over a unix socket): when the
 * client reports the 220 to STARTTLS (smtp_client_tls_wanted()), the session
 * gets a struct tls_conn (net/tls.h, memory BIOs) on the process's client
 * context. From then on received octets go through it before the client, in
 * s->rx itself (fed to the BIO, then decrypted back into it), and the
 * plaintext the client wrote into s->tx is encrypted when the ciphertext of
 * the previous batch has left: at most one tx (64 KiB) of plaintext waits in
 * the TLS layer and one in tx, so a large body streams through a bounded
 * amount of memory. The ciphertext is taken out into s->cbuf (allocated once
 * per session, when TLS starts) and sent from there. A cached connection
 * keeps its TLS session.
 */
#define _GNU_SOURCE
#include "net/worker.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/dsn.h"
#include "core/log.h"
#include "core/route.h"
#include "net/tls.h"
#include "net/util.h"

#define W_RING_ENTRIES 2048u
#define W_TICK_MS      100u
#define W_BATCH        64u
#define OS_TX_CAP      (64u * 1024)
#define MAX_SESSIONS   4096u
#define MAX_JOBS       1024u
#define MAX_MAILDIRS   16u
#define OS_CBUF_CAP    (OS_TX_CAP + 1024u) /* a full tx batch's ciphertext: one send */
#define OS_TLS_DESC    64u

enum wop {
    W_NONE = 0,
    W_WAKE,
    W_LOG,
    W_CONNECT, /* index: session */
    W_RECV,
    W_SEND,
    W_CLOSE,
    W_READ,    /* index: session */
    W_MD_READ, /* index: maildir job */
    W_MD_OPEN,
    W_MD_WRITE,
    W_MD_SYNC,
    W_MD_CLOSE,
    W_MD_RENAME,
};

static inline uint64_t
wud(uint32_t gen, uint32_t index, enum wop op)
{
    return (uint64_t)gen << 32 | (uint64_t)(index & 0xffffff) << 8 | (uint64_t)op;
}

#define WSTAT_INC(w, f)                                                                            \
    atomic_store_explicit(&(w)->stats.f,                                                           \
                          atomic_load_explicit(&(w)->stats.f, memory_order_relaxed) + 1,           \
                          memory_order_relaxed)

/* A message body read from the spool: its DATA records back to back. */
struct body {
    char *buf;
    size_t *recoff; /* where record k starts in buf */
    unsigned nrec;  /* reads submitted */
    unsigned nread; /* reads completed */
    int err;        /* -EIO: a read failed or a checksum did not match */
    bool loading, ready;
};

struct dest {
    uint64_t hash;
    const struct route *route;
    struct snapshot *snap;        /* route lives in it (a reference); an older one than the
                                     worker's: retired, freed once nothing works for it */
    struct delivery *q, **q_tail; /* waiting */
    unsigned active;              /* sessions or jobs working for it */
    unsigned mslot;               /* its slot in w->stats.dests (/metrics) */
    struct osess *idle;           /* connected sessions with nothing to do */
    struct dest *next;
};

struct osess {
    struct worker *w;
    uint32_t idx, gen;
    uint16_t inflight;
    struct dest *d;
    unsigned hop;
    int fd;
    bool connected, connect_done, closing, closed, recv_armed, sending, dead, greeted;
    int conn_err;     /* the connect's -errno, when it failed */
    bool send_failed; /* a send failed: nothing more goes out */
    bool send_cipher; /* the send in flight is from cbuf */
    struct smtp_client cl;
    char rx[4096]; /* received octets; with TLS also the plaintext decrypted from them */
    char *tx;      /* what the client wrote: plaintext; with TLS, encrypted at flush */
    size_t tx_len, tx_sending;
    size_t tx_plain; /* octets at the head of tx that go out in clear (written before
                        TLS started: the rest of "STARTTLS\r\n") */
    /* TLS, once STARTTLS got its 220: tls.ssl != NULL */
    struct tls_conn tls;
    char *cbuf; /* ciphertext being sent: [cbuf_off, cbuf_len) (OS_CBUF_CAP) */
    size_t cbuf_off, cbuf_len;
    char tls_desc[OS_TLS_DESC]; /* "TLSv1.3 TLS_AES_256_GCM_SHA384" once established */
    char tls_err[TLS_ERR_MAX];  /* a TLS failure found where the client cannot be told */
    struct delivery *cur;
    struct envelope sub; /* cur's recipients still pending, for the client */
    uint32_t *map;       /* sub's recipient k is cur's recipient map[k] */
    uint32_t map_cap;
    struct body body;
    uint64_t deadline_ms, idle_since_ms;
    uint64_t attempt_us; /* monotonic: when cur was taken (attempt duration) */
    unsigned uses;
    struct osess *next_idle;
};

struct maildir {
    char path[CONFIG_PATH_MAX];
    int tmp_fd, new_fd;
};

struct mdjob {
    struct worker *w;
    uint32_t idx, gen;
    struct dest *d;
    struct delivery *cur;
    const struct maildir *md;
    struct body body;
    int fd;
    char name[CONFIG_NAME_MAX + 96];
    char hdr[512];
    uint64_t attempt_us; /* monotonic: when the job took cur */
    struct iovec *iov;
    int niov;
    size_t expect;
};

/* Maildirs are added by the main thread (start-up, reloads) and never change once
   published: an entry is written, then nmaildirs is raised (release); workers read
   nmaildirs (acquire), then the entries below it. */
static struct maildir maildirs[MAX_MAILDIRS];
static atomic_uint nmaildirs;
static pthread_mutex_t maildirs_lock = PTHREAD_MUTEX_INITIALIZER; /* writers only */

static struct io_uring_sqe *
wsqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

    if (sqe == NULL) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
        BUG_ON(sqe == NULL);
    }
    return sqe;
}

/* ---- hops ---- */

static void
hop_text(const struct config_nexthop *h, char *out, size_t cap)
{
    switch (h->transport) {
    case TRANSPORT_MAILDIR:
        snprintf(out, cap, "maildir:%s", h->path);
        break;
    case TRANSPORT_LMTP:
        if (h->path[0] != '\0')
            snprintf(out, cap, "lmtp:unix:%s", h->path);
        else
            snprintf(out, cap, "lmtp:[%s]:%u", h->host, h->port);
        break;
    case TRANSPORT_SMTP:
    default:
        snprintf(out, cap, "[%s]:%u", h->host, h->port);
        break;
    }
}

static bool
host_is_ip(const char *host)
{
    struct in6_addr a;

    return inet_pton(AF_INET, host, &a) == 1 || inet_pton(AF_INET6, host, &a) == 1;
}

/*
 * The address of a hop. IP literals and "localhost" need no lookup; other
 * names are resolved here, on the worker thread, once per session start: a
 * lookup blocks, so operators are told in docs/configuration.md to name next
 * hops by address.
 */
static int
hop_addr(const struct config_nexthop *h, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;

    memset(ss, 0, sizeof(*ss));
    if (h->transport == TRANSPORT_LMTP && h->path[0] != '\0') {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        size_t n = strlen(h->path);

        if (n >= sizeof(sun->sun_path))
            return -ENAMETOOLONG;
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, h->path, n + 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        return 0;
    }
    if (inet_pton(AF_INET, h->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(h->port);
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, h->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(h->port);
        *len = sizeof(*sin6);
        return 0;
    }
    if (getaddrinfo(h->host, NULL, &hints, &ai) != 0)
        return -EHOSTUNREACH;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (ss->ss_family == AF_INET)
        sin->sin_port = htons(h->port);
    else
        sin6->sin6_port = htons(h->port);
    return 0;
}

/* ---- completions back to the owner ---- */

static void
give_back(struct worker *w, struct delivery *d)
{
    d->next = NULL;
    if (w->done == NULL && q_mesh_push(w->out, w->index, d->msg->owner, d) == 0)
        return;
    *w->done_tail = d; /* the owner's ring is full: try again next turn */
    w->done_tail = &d->next;
}

static void
give_back_retry(struct worker *w)
{
    while (w->done != NULL) {
        struct delivery *d = w->done;

        if (q_mesh_push(w->out, w->index, d->msg->owner, d) < 0)
            return;
        w->done = d->next;
        if (w->done == NULL)
            w->done_tail = &w->done;
    }
}

/* ---- destinations ---- */

static struct dest *
dest_get(struct worker *w, const struct delivery *d)
{
    unsigned b = (unsigned)(d->route_hash & w->dtab_mask);
    struct dest *x;

    for (x = w->dtab[b]; x != NULL; x = x->next) {
        if (x->hash == d->route_hash && x->route == d->route)
            return x;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->hash = d->route_hash;
    x->route = d->route;
    x->snap = snapshot_ref(d->snap);
    x->q_tail = &x->q;
    {
        char name[CONFIG_PATH_MAX + 16];

        hop_text(route_hop(x->route, 0), name, sizeof(name));
        x->mslot = desttab_slot(&w->stats.dests, name);
    }
    x->next = w->dtab[b];
    w->dtab[b] = x;
    w->ndest++;
    return x;
}

static void
dest_push(struct dest *x, struct delivery *d, bool front)
{
    if (front) {
        d->next = x->q;
        x->q = d;
        if (x->q_tail == &x->q)
            x->q_tail = &d->next;
        return;
    }
    d->next = NULL;
    *x->q_tail = d;
    x->q_tail = &d->next;
}

static struct delivery *
dest_pop(struct dest *x)
{
    struct delivery *d = x->q;

    if (d != NULL) {
        x->q = d->next;
        if (x->q == NULL)
            x->q_tail = &x->q;
        d->next = NULL;
    }
    return d;
}

static void dest_run(struct worker *w, struct dest *x);
static void dest_reap(struct worker *w);

/* ---- held messages ---- */

/* Index of id in the sorted held_ids, or where it would go; *found says which. */
static size_t
held_find(const struct worker *w, uint64_t id, bool *found)
{
    size_t lo = 0, hi = w->nheld;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (w->held_ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < w->nheld && w->held_ids[lo] == id;
    return lo;
}

static bool
is_held(const struct worker *w, uint64_t id)
{
    bool found = false;

    if (w->nheld > 0)
        (void)held_find(w, id, &found);
    return found;
}

/* 0 or -ENOMEM (the message is then not held). */
static int
held_add(struct worker *w, uint64_t id)
{
    bool found;
    size_t at = held_find(w, id, &found);

    if (found)
        return 0;
    if (w->nheld == w->held_cap) {
        size_t cap = MAX(w->held_cap * 2, (size_t)64);
        uint64_t *p = realloc(w->held_ids, cap * sizeof(*p));

        if (p == NULL)
            return -ENOMEM;
        w->held_ids = p;
        w->held_cap = cap;
    }
    memmove(w->held_ids + at + 1, w->held_ids + at, (w->nheld - at) * sizeof(*w->held_ids));
    w->held_ids[at] = id;
    w->nheld++;
    return 0;
}

static void
held_remove(struct worker *w, uint64_t id)
{
    bool found;
    size_t at = held_find(w, id, &found);

    if (!found)
        return;
    memmove(w->held_ids + at, w->held_ids + at + 1, (w->nheld - at - 1) * sizeof(*w->held_ids));
    w->nheld--;
}

/* A delivery of a held message parks on the held list: not tried, not expired. */
static void
hold_park(struct worker *w, struct delivery *d)
{
    d->hop = 0;
    d->next = w->held;
    w->held = d;
}

int
worker_hold_preload(struct worker *w, const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (held_add(w, ids[i]) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* x's sessions and jobs: x->active, mirrored in its /metrics slot. */
static void
dest_active(struct worker *w, struct dest *x, int delta)
{
    x->active = (unsigned)((int)x->active + delta);
    desttab_active(&w->stats.dests, x->mslot, delta);
}

/* One attempt at d is over (start: clock_mono_us() when it began); its result is
   read from the recipients it tried, rcpt[map[k]] for k < n (map NULL: 0..n). */
static void
attempt_observe(struct worker *w, const struct delivery *d, const uint32_t *map, uint32_t n,
                uint64_t start)
{
    enum worker_attempt_result res = WORKER_ATTEMPT_DELIVERED;
    uint64_t now = clock_mono_us();

    for (uint32_t k = 0; k < n && res != WORKER_ATTEMPT_DEFERRED; k++) {
        uint8_t st = d->state[map != NULL ? map[k] : k];

        if (st == DLV_PENDING)
            res = WORKER_ATTEMPT_DEFERRED;
        else if (st == DLV_FAILED)
            res = WORKER_ATTEMPT_FAILED;
    }
    hist_observe(&w->stats.attempt[res], &hist_attempt_duration, now > start ? now - start : 0);
}

/* Log one recipient's outcome, Postfix-style. tls: the session's TLS ("TLSv1.3 ...",
   or "none"); NULL when no session was involved (the field is left out). */
static void
log_rcpt(struct worker *w, const struct delivery *d, uint32_t i, const char *event,
         const char *relay, const char *dsn, const char *text, const char *tls)
{
    const struct envelope *e = &d->msg->env;
    struct slice to = env_get(e, e->rcpt[d->rcpt[i]].addr);
    char toe[LOG_PEER_MAX * 4 + 1], te[LOG_PEER_MAX * 4 + 1];
    uint64_t delay = w->wall_ms > d->msg->arrival_ms ? w->wall_ms - d->msg->arrival_ms : 0;

    bool quote = tls != NULL && strcmp(tls, "none") != 0;

    log_escape(toe, sizeof(toe), to.p, to.len);
    log_escape(te, sizeof(te), text, strlen(text));
    log_msg(LOG_INFO,
            "event=%s qid=%s worker=%u to=<%s> relay=%s delay=%" PRIu64 ".%03" PRIu64
            " attempts=%u dsn=%s%s%s%s%s status=\"%s\"",
            event, e->qid, w->index, toe, relay, delay / 1000, delay % 1000, d->attempts + 1, dsn,
            tls != NULL ? " tls=" : "", quote ? "\"" : "", tls != NULL ? tls : "",
            quote ? "\"" : "", te);
}

/*
 * An attempt at d is over. Recipients still pending were deferred: retry
 * later, or fail them once the message is older than maximal_queue_lifetime.
 * Finished deliveries go back to their owner.
 */
/* Recipient i was delivered: note the success report it may owe (dsn_build() keeps it
   only when its NOTIFY asked for SUCCESS). */
static void
mark_success(struct delivery *d, uint32_t i, enum dsn_action action)
{
    if (!dsn_wanted(&d->msg->env, d->rcpt[i], action))
        return; /* the common case: no NOTIFY=SUCCESS */
    if (d->success == NULL)
        d->success = calloc(d->nrcpt, sizeof(*d->success));
    if (d->success != NULL)
        d->success[i] = (uint8_t)(action + 1);
}

/* The enhanced status code in a reply text ("550 5.1.1 ..."), or dflt. */
static struct slice
enh_of(const char *text, const char *dflt)
{
    const char *p = text ? strchr(text, ' ') : NULL;
    size_t n = 0;

    if (p != NULL && (p[1] == '4' || p[1] == '5' || p[1] == '2') && p[2] == '.') {
        p++;
        while (p[n] != '\0' && p[n] != ' ' && n < 12)
            n++;
        return (struct slice){ p, n };
    }
    return (struct slice){ dflt, strlen(dflt) };
}

/*
 * The delivery has failed recipients owed a bounce (core/dsn.c applies
 * NOTIFY and never bounces to <>): build it now, while the original message
 * is at hand (b, or NULL when its body is not in memory: the report then
 * carries no copy of it). The owner spools it as a new message.
 */
static void
dsn_attach(struct worker *w, struct delivery *d, const struct body *b)
{
    const struct qmsg *m = d->msg;
    struct dsn_rcpt_status *rs;
    char(*diag)[DLV_DIAG_MAX + 16];
    struct dsn_buf out = { 0 };
    struct dsn_report rep = { 0 };
    size_t n = 0;
    int rc;

    for (uint32_t i = 0; i < d->nrcpt && n == 0; i++)
        n = d->state[i] == DLV_FAILED || (d->success != NULL && d->success[i] != 0);
    if (n == 0)
        return; /* nothing to report: the common case */
    n = 0;
    rs = calloc(d->nrcpt, sizeof(*rs));
    diag = calloc(d->nrcpt, sizeof(*diag));
    if (rs == NULL || diag == NULL)
        goto out;
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        if (d->state[i] == DLV_FAILED) {
            rs[n].action = DSN_ACTION_FAILED;
            rs[n].status = enh_of(d->diag[i], "5.0.0");
            snprintf(diag[n], sizeof(diag[n]), "smtp; %s", d->diag[i] ? d->diag[i] : "failed");
        } else if (d->state[i] == DLV_DELIVERED && d->success != NULL && d->success[i] != 0) {
            rs[n].action = (enum dsn_action)(d->success[i] - 1);
            rs[n].status = (struct slice){ "2.0.0", 5 };
            snprintf(diag[n], sizeof(diag[n]), "smtp; %s", d->diag[i] ? d->diag[i] : "delivered");
        } else {
            continue;
        }
        rs[n].rcpt = d->rcpt[i];
        rs[n].diag = (struct slice){ diag[n], strlen(diag[n]) };
        rs[n].last_attempt = w->wall_ms / 1000;
        n++;
    }
    if (n == 0)
        goto out;
    rep.env = &m->env;
    rep.rs = rs;
    rep.nrs = n;
    rep.myhostname = (struct slice){ w->cfg->myhostname, strlen(w->cfg->myhostname) };
    rep.now = w->wall_ms / 1000;
    rep.seed = m->env.id ^ (w->wall_ms << 20) ^ ++w->seq;
    if (b != NULL && b->ready && m->nextent > 0) {
        /* the first record holds the headers; a longer message is returned as headers only */
        rep.msg = (struct slice){ b->buf + b->recoff[0] + SPOOL_HDR_SIZE, m->ext[0].len };
        if (m->nextent > 1)
            rep.flags |= DSN_BUILD_F_HEADERS_ONLY;
    }
    rc = dsn_build(&rep, &out, &d->dsn_flags);
    if (rc == 0) {
        d->dsn = out.p;
        d->dsn_len = out.len;
        out.p = NULL;
    } else if (rc != -ENODATA) {
        log_msg(LOG_ERR, "event=bounce_error qid=%s error=\"%s\"", m->env.qid, strerror(-rc));
    }
out:
    dsn_buf_free(&out);
    free(rs);
    free(diag);
}

static void
attempt_done(struct worker *w, struct dest *x, struct delivery *d, bool conn_failed,
             const struct body *b)
{
    const struct ringmail_config *cfg = w->cfg;
    uint64_t age = w->wall_ms > d->msg->arrival_ms ? w->wall_ms - d->msg->arrival_ms : 0;
    uint64_t life =
        d->msg->env.sender.len == 0 ? cfg->bounce_queue_lifetime : cfg->maximal_queue_lifetime;

    if (delivery_pending(d) == 0 || w->stopping) {
        if (delivery_pending(d) == 0) /* delivered or bounced: not a release at shutdown */
            hist_observe(&w->stats.residence, &hist_queue_residence, age * 1000);
        dsn_attach(w, d, b);
        give_back(w, d);
        return;
    }
    if (conn_failed && d->hop + 1 < route_nhops(x->route)) {
        d->hop++; /* the next hop of the list, now (relayhost failover) */
        dest_push(x, d, true);
        return;
    }
    if (conn_failed) {
        /* every hop of the route failed to connect or greet: now it is a deferral */
        char relay[CONFIG_PATH_MAX + 16];

        hop_text(route_hop(x->route, d->hop), relay, sizeof(relay));
        for (uint32_t i = 0; i < d->nrcpt; i++) {
            struct slice e = enh_of(d->diag[i], "4.4.1");
            char dsn[16];

            if (d->state[i] != DLV_PENDING)
                continue;
            snprintf(dsn, sizeof(dsn), "%.*s", (int)MIN(e.len, 12), e.p);
            log_rcpt(w, d, i, "deferred", relay, dsn,
                     d->diag[i] ? d->diag[i] : "4.4.1 no connection", NULL);
            WSTAT_INC(w, deferred);
            desttab_deferred(&w->stats.dests, x->mslot, 1);
        }
    }
    d->hop = 0;
    d->attempts++;
    if (w->nheld > 0 && is_held(w, d->msg->env.id)) {
        hold_park(w, d); /* put on hold during its attempt: not retried, not expired */
        return;
    }
    if (age >= life) {
        for (uint32_t i = 0; i < d->nrcpt; i++) {
            if (d->state[i] != DLV_PENDING)
                continue;
            d->state[i] = DLV_FAILED;
            log_rcpt(w, d, i, "bounced", "none", "4.4.7",
                     d->diag[i] ? d->diag[i] : "message expired", NULL);
            WSTAT_INC(w, failed);
        }
        hist_observe(&w->stats.residence, &hist_queue_residence, age * 1000);
        dsn_attach(w, d, b);
        give_back(w, d);
        return;
    }
    d->next_ms = w->now_ms + delivery_backoff(d->attempts, cfg->minimal_backoff_time,
                                              cfg->maximal_backoff_time);
    /* sorted insert: the retry list is short-lived and small next to the queues */
    struct delivery **pp = &w->retry;

    while (*pp != NULL && (*pp)->next_ms <= d->next_ms)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
}

/* ---- bodies ---- */

static size_t
body_size(const struct qmsg *m)
{
    size_t n = 0;

    for (unsigned k = 0; k < m->nextent; k++)
        n += spool_rec_size(m->ext[k].len);
    return n;
}

static int
body_load(struct worker *w, struct body *b, const struct qmsg *m, uint32_t gen, uint32_t idx,
          enum wop op)
{
    size_t off = 0;

    memset(b, 0, sizeof(*b));
    b->buf = malloc(body_size(m) + 1);
    b->recoff = malloc((m->nextent + 1) * sizeof(*b->recoff));
    if (b->buf == NULL || b->recoff == NULL) {
        free(b->buf);
        free(b->recoff);
        memset(b, 0, sizeof(*b));
        return -ENOMEM;
    }
    for (unsigned k = 0; k < m->nextent; k++) {
        struct io_uring_sqe *sqe = wsqe(w);

        b->recoff[k] = off;
        io_uring_prep_read(sqe, m->fd, b->buf + off, SPOOL_HDR_SIZE + m->ext[k].len, m->ext[k].off);
        io_uring_sqe_set_data64(sqe, wud(gen, idx, op));
        off += spool_rec_size(m->ext[k].len);
    }
    b->nrec = m->nextent;
    b->loading = b->nrec > 0;
    return 0;
}

/* One read completed; true when it was the last one. */
static bool
body_read_done(struct body *b, int res)
{
    if (res < 0 && b->err == 0)
        b->err = res;
    if (++b->nread < b->nrec)
        return false;
    b->loading = false;
    return true;
}

/* Every read is in: check each record against its checksum, id and length. */
static void
body_verify(struct body *b, const struct qmsg *m)
{
    for (unsigned k = 0; k < m->nextent && b->err == 0; k++) {
        struct spool_rec_hdr h;

        if (!spool_rec_verify(b->buf + b->recoff[k], SPOOL_HDR_SIZE + m->ext[k].len, m->seed, &h) ||
            h.id != m->env.id || h.type != SPOOL_REC_DATA || h.len != m->ext[k].len)
            b->err = -EIO;
    }
    if (b->err != 0)
        log_msg(LOG_ERR, "event=spool_error what=read qid=%s error=\"%s\"", m->env.qid,
                strerror(-b->err));
    b->ready = b->err == 0;
}

static void
body_free(struct body *b)
{
    free(b->buf);
    free(b->recoff);
    memset(b, 0, sizeof(*b));
}

/* Body octets from off: a pointer into the record holding them. */
static ssize_t
body_at(const struct body *b, const struct qmsg *m, uint64_t off, const char **p)
{
    uint64_t base = 0;

    if (b->err)
        return b->err;
    if (!b->ready)
        return -EAGAIN;
    for (unsigned k = 0; k < m->nextent; k++) {
        if (off < base + m->ext[k].len) {
            *p = b->buf + b->recoff[k] + SPOOL_HDR_SIZE + (off - base);
            return (ssize_t)(base + m->ext[k].len - off);
        }
        base += m->ext[k].len;
    }
    return -EIO;
}

/* ---- outbound sessions ---- */

static void os_flush(struct osess *s);

static char *
os_tx_space(void *ctx, size_t *room)
{
    struct osess *s = ctx;

    *room = OS_TX_CAP - s->tx_len;
    return *room > 0 ? s->tx + s->tx_len : NULL;
}

static void
os_send(void *ctx, const char *p, size_t n)
{
    struct osess *s = ctx;

    (void)p;
    s->tx_len += n;
    os_flush(s);
}

static ssize_t
os_body(void *ctx, uint64_t off, const char **p)
{
    struct osess *s = ctx;

    return body_at(&s->body, s->cur->msg, off, p);
}

static void
os_relay_text(const struct osess *s, char *out, size_t cap)
{
    hop_text(route_hop(s->d->route, s->hop), out, cap);
}

static void
os_rcpt_done(void *ctx, uint32_t k, enum smtp_rcpt_status st, const struct smtp_reply *r)
{
    struct osess *s = ctx;
    struct worker *w = s->w;
    struct delivery *d = s->cur;
    uint32_t i = s->map[k];
    char relay[CONFIG_PATH_MAX + 16], text[SMTP_CLIENT_TEXT_MAX + SMTP_CLIENT_ENH_MAX + 16];
    const char *tls = s->tls.done ? s->tls_desc : "none";
    const char *dsn = r->enh[0] ? r->enh
                                : (st == SMTP_RCPT_DELIVERED ? "2.0.0"
                                   : st == SMTP_RCPT_FAILED  ? "5.0.0"
                                                             : "4.0.0");

    os_relay_text(s, relay, sizeof(relay));
    snprintf(text, sizeof(text), "%u %s%s%s", r->code, r->enh, r->enh[0] ? " " : "", r->text);
    switch (st) {
    case SMTP_RCPT_DELIVERED:
        d->state[i] = DLV_DELIVERED;
        /* RFC 3461 4.2: LMTP is final delivery; an SMTP next hop without DSN takes no
           responsibility for reporting, so ringmail reports "relayed" */
        if (s->cl.lmtp)
            mark_success(d, i, DSN_ACTION_DELIVERED);
        else if (!(s->cl.ext & SMTP_EXT_DSN))
            mark_success(d, i, DSN_ACTION_RELAYED);
        log_rcpt(w, d, i, "sent", relay, dsn, text, tls);
        WSTAT_INC(w, delivered);
        break;
    case SMTP_RCPT_FAILED:
        d->state[i] = DLV_FAILED;
        delivery_set_diag(d, i, text);
        log_rcpt(w, d, i, "bounced", relay, dsn, text, tls);
        WSTAT_INC(w, failed);
        break;
    case SMTP_RCPT_DEFERRED:
        if (s->conn_err != 0) {
            snprintf(text, sizeof(text), "4.4.1 connect to %.200s failed: %s", relay,
                     strerror(-s->conn_err));
        }
        delivery_set_diag(d, i, text);
        if (!s->greeted)
            break; /* the connection never got going: attempt_done() fails over or logs it */
        log_rcpt(w, d, i, "deferred", relay, dsn, text, tls);
        WSTAT_INC(w, deferred);
        desttab_deferred(&w->stats.dests, s->d->mslot, 1);
        break;
    }
}

static void
os_release_cur(struct osess *s, bool conn_failed)
{
    struct delivery *d = s->cur;

    if (d == NULL)
        return;
    s->cur = NULL;
    attempt_observe(s->w, d, s->map, s->sub.nrcpt, s->attempt_us);
    env_reset(&s->sub);
    attempt_done(s->w, s->d, d, conn_failed, &s->body);
    if (!s->body.loading)
        body_free(&s->body); /* else freed when its last read completes */
}

static void
os_msg_done(void *ctx, const struct smtp_msg_summary *sum)
{
    struct osess *s = ctx;

    (void)sum;
    s->uses++;
    os_release_cur(s, !s->greeted);
}

/* Hand d to session s: the client gets an envelope of d's pending recipients. */
static int
os_start(struct osess *s, struct delivery *d)
{
    struct worker *w = s->w;
    const struct envelope *e = &d->msg->env;
    uint32_t n = 0;
    int rc;

    env_reset(&s->sub);
    if (s->map_cap < d->nrcpt) {
        uint32_t *m = realloc(s->map, d->nrcpt * sizeof(*m));

        if (m == NULL)
            return -ENOMEM;
        s->map = m;
        s->map_cap = d->nrcpt;
    }
    s->sub.id = e->id;
    memcpy(s->sub.qid, e->qid, sizeof(e->qid));
    s->sub.arrival = e->arrival;
    s->sub.body_len = e->body_len;
    s->sub.flags = e->flags;
    if (env_put(&s->sub, &s->sub.sender, env_get(e, e->sender).p, e->sender.len) < 0 ||
        env_put(&s->sub, &s->sub.mail_params, env_get(e, e->mail_params).p, e->mail_params.len) < 0)
        return -ENOMEM;
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        const struct env_rcpt *r = &e->rcpt[d->rcpt[i]];

        if (d->state[i] != DLV_PENDING)
            continue;
        if (env_add_rcpt(&s->sub, env_get(e, r->addr), env_get(e, r->params)) < 0)
            return -ENOMEM;
        s->map[n++] = i;
    }
    s->cur = d;
    s->attempt_us = clock_mono_us();
    rc = body_load(w, &s->body, d->msg, s->gen, s->idx, W_READ);
    if (rc == 0) {
        s->inflight = (uint16_t)(s->inflight + d->msg->nextent);
        rc = smtp_client_send_message(&s->cl, &s->sub);
    }
    if (rc < 0) {
        s->cur = NULL;
        body_free(&s->body);
        return rc;
    }
    return 0;
}

static void
os_idle(void *ctx)
{
    struct osess *s = ctx;
    struct dest *x = s->d;
    struct delivery *d;

    if (s->w->stopping || s->body.loading) {
        /* stopping, or the last message's body reads are still in flight */
        smtp_client_quit(&s->cl);
        return;
    }
    if (s->w->cfg->smtp_connection_reuse_count_limit != 0 &&
        s->uses >= s->w->cfg->smtp_connection_reuse_count_limit) {
        smtp_client_quit(&s->cl);
        return;
    }
    d = dest_pop(x);
    if (d != NULL) {
        if (os_start(s, d) < 0) {
            dest_push(x, d, true);
            smtp_client_quit(&s->cl);
        }
        return;
    }
    /* cached for the next message to this destination */
    s->idle_since_ms = s->w->now_ms;
    s->next_idle = x->idle;
    x->idle = s;
}

static void
os_unidle(struct osess *s)
{
    for (struct osess **pp = &s->d->idle; *pp != NULL; pp = &(*pp)->next_idle) {
        if (*pp == s) {
            *pp = s->next_idle;
            break;
        }
    }
    s->next_idle = NULL;
}

static void os_close(struct osess *s);

static void
os_dead(void *ctx, enum smtp_client_end why, const struct smtp_reply *r)
{
    struct osess *s = ctx;
    char relay[CONFIG_PATH_MAX + 16];

    s->dead = true;
    os_unidle(s);
    if (why != SMTP_END_QUIT && r != NULL) {
        os_relay_text(s, relay, sizeof(relay));
        log_msg(LOG_INFO, "event=session_end worker=%u relay=%s why=%s status=\"%u %s %.200s\"",
                s->w->index, relay, smtp_client_end_str(why), r->code, r->enh, r->text);
    }
    os_release_cur(s, !s->greeted);
    os_close(s);
}

static const struct smtp_client_ops os_ops = {
    .tx_space = os_tx_space,
    .send = os_send,
    .body = os_body,
    .rcpt_done = os_rcpt_done,
    .msg_done = os_msg_done,
    .idle = os_idle,
    .dead = os_dead,
};

/*
 * TLS failed inside one of the client's callbacks (an encryption error at
 * flush), where the client cannot be told: nothing more is sent and the
 * socket is shut down, so the armed recv ends and reports s->tls_err.
 */
static void
os_tls_broken(struct osess *s)
{
    char relay[CONFIG_PATH_MAX + 16];

    os_relay_text(s, relay, sizeof(relay));
    log_msg(LOG_INFO, "event=tls_error worker=%u relay=%s reason=\"%s\"", s->w->index, relay,
            s->tls_err);
    WSTAT_INC(s->w, tls_failures);
    s->send_failed = true;
    s->tx_len = s->tx_plain = 0;
    s->cbuf_off = s->cbuf_len = 0;
    (void)shutdown(s->fd, SHUT_RDWR);
}

/*
 * Send what is due, one send at a time: without TLS (or what was written
 * before it started) the plaintext in tx; with TLS the ciphertext in cbuf,
 * refilled from the TLS layer once it has left, after encrypting tx.
 */
static void
os_flush(struct osess *s)
{
    struct io_uring_sqe *sqe;
    const char *p;
    size_t n;

    if (s->sending || s->closed || !s->connected || s->send_failed)
        return;
    if (s->tls.ssl == NULL || s->tx_plain > 0) {
        p = s->tx;
        n = s->tls.ssl == NULL ? s->tx_len : s->tx_plain;
        s->send_cipher = false;
    } else {
        if (s->cbuf_off == s->cbuf_len) {
            s->cbuf_off = s->cbuf_len = 0;
            /* encrypt only when the TLS layer is empty: it never holds more than a tx */
            if (s->tx_len > 0 && s->tls.done && tls_conn_out_pending(&s->tls) == 0) {
                if (tls_conn_write(&s->tls, s->tx, s->tx_len, s->tls_err, sizeof(s->tls_err)) < 0) {
                    os_tls_broken(s);
                    return;
                }
                s->tx_len = 0;
            }
            s->cbuf_len = tls_conn_out_take(&s->tls, s->cbuf, OS_CBUF_CAP);
        }
        p = s->cbuf + s->cbuf_off;
        n = s->cbuf_len - s->cbuf_off;
        s->send_cipher = true;
    }
    if (n == 0)
        return;
    sqe = wsqe(s->w);
    io_uring_prep_send(sqe, s->fd, p, n, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, wud(s->gen, s->idx, W_SEND));
    s->sending = true;
    s->tx_sending = n;
    s->inflight++;
}

/* A TLS failure the client can be told about (not inside its callbacks). */
static void
os_tls_fail(struct osess *s, const char *why)
{
    char relay[CONFIG_PATH_MAX + 16];

    os_relay_text(s, relay, sizeof(relay));
    log_msg(LOG_INFO, "event=tls_error worker=%u relay=%s reason=\"%s\"", s->w->index, relay, why);
    WSTAT_INC(s->w, tls_failures);
    /* "handshake: " (net/tls.c's what) says again what the client's text says */
    if (!s->tls.done && strncmp(why, "handshake: ", 11) == 0)
        why += 11;
    smtp_client_tls_failed(&s->cl, why);
    os_flush(s); /* an alert may be waiting: sent before the close */
}

/* Drive the handshake, then hand what the TLS layer decrypts to the client (in s->rx). */
static void
os_tls_pump(struct osess *s)
{
    char err[TLS_ERR_MAX];

    if (!s->tls.done) {
        int rc = tls_conn_handshake(&s->tls, err, sizeof(err));
        char relay[CONFIG_PATH_MAX + 16];

        if (rc < 0) {
            os_tls_fail(s, err);
            return;
        }
        os_flush(s); /* handshake records */
        if (rc == 0)
            return;
        tls_conn_describe(&s->tls, s->tls_desc, sizeof(s->tls_desc));
        WSTAT_INC(s->w, tls_handshakes);
        os_relay_text(s, relay, sizeof(relay));
        log_msg(LOG_INFO, "event=tls worker=%u relay=%s tls=\"%s\" verified=%s", s->w->index, relay,
                s->tls_desc, s->w->cfg->smtp_tls_security_level == SMTP_TLS_VERIFY ? "yes" : "no");
        smtp_client_tls_started(&s->cl); /* EHLO again, encrypted by os_flush() */
    }
    while (!s->closing && !smtp_client_dead(&s->cl)) {
        long n = tls_conn_read(&s->tls, s->rx, sizeof(s->rx), err, sizeof(err));

        if (n == 0)
            break;
        if (n < 0) {
            if (s->tls.eof)
                smtp_client_closed(&s->cl); /* close_notify: as an EOF */
            else
                os_tls_fail(s, err);
            break;
        }
        smtp_client_input(&s->cl, s->rx, (size_t)n);
    }
    os_flush(s);
}

/* STARTTLS got its 220: the client side of TLS starts on this connection. */
static void
os_tls_begin(struct osess *s)
{
    const struct config_nexthop *h = route_hop(s->d->route, s->hop);
    bool verify = s->w->cfg->smtp_tls_security_level == SMTP_TLS_VERIFY;
    char relay[CONFIG_PATH_MAX + 16], err[TLS_ERR_MAX];

    if (s->cl.tls_dropped > 0) {
        os_relay_text(s, relay, sizeof(relay));
        log_msg(LOG_WARN, "event=starttls_injection worker=%u relay=%s discarded=%" PRIu64,
                s->w->index, relay, s->cl.tls_dropped);
    }
    if (s->cbuf == NULL && (s->cbuf = malloc(OS_CBUF_CAP)) == NULL) {
        os_tls_fail(s, "out of memory");
        return;
    }
    /* SNI for a name only (RFC 6066 3); verify: the hop's name, or its address for an
       IP literal, must be in the certificate */
    if (tls_conn_client(&s->tls, s->w->tls_ctx, host_is_ip(h->host) ? NULL : h->host,
                        verify ? h->host : NULL, err, sizeof(err)) < 0) {
        os_tls_fail(s, err);
        return;
    }
    s->tx_plain = s->tx_len; /* "STARTTLS\r\n", when its send has not completed yet */
    s->cbuf_off = s->cbuf_len = 0;
    os_tls_pump(s); /* the ClientHello */
}

static void
os_arm_recv(struct osess *s)
{
    struct io_uring_sqe *sqe = wsqe(s->w);

    io_uring_prep_recv(sqe, s->fd, s->rx, sizeof(s->rx), 0);
    io_uring_sqe_set_data64(sqe, wud(s->gen, s->idx, W_RECV));
    s->recv_armed = true;
    s->inflight++;
}

/*
 * No more I/O: cancel what is pending (once), close once the output went out
 * (QUIT, a TLS alert or close_notify); called again when a send or a body
 * read completes.
 */
static void
os_close(struct osess *s)
{
    struct io_uring_sqe *sqe;

    if (!s->closing) {
        s->closing = true;
        if (!s->connected && s->fd >= 0 && !s->connect_done) {
            sqe = wsqe(s->w);
            io_uring_prep_cancel64(sqe, wud(s->gen, s->idx, W_CONNECT), 0);
            io_uring_sqe_set_data64(sqe, wud(0, 0, W_NONE));
            io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
        }
        if (s->recv_armed) {
            sqe = wsqe(s->w);
            io_uring_prep_cancel64(sqe, wud(s->gen, s->idx, W_RECV), 0);
            io_uring_sqe_set_data64(sqe, wud(0, 0, W_NONE));
            io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
        }
        if (s->tls.done && !s->send_failed)
            tls_conn_shutdown(&s->tls); /* close_notify, sent with what is left */
    }
    if (s->closed)
        return;
    os_flush(s);
    if (s->sending)
        return;
    if (s->body.loading)
        return; /* its reads finish first: they write into body.buf */
    s->closed = true;
    if (s->fd < 0)
        return; /* never had a socket */
    sqe = wsqe(s->w);
    io_uring_prep_close(sqe, s->fd);
    io_uring_sqe_set_data64(sqe, wud(s->gen, s->idx, W_CLOSE));
    s->inflight++;
}

static void
os_free(struct osess *s)
{
    struct worker *w = s->w;

    os_unidle(s);
    if (s->cur != NULL)
        os_release_cur(s, true);
    smtp_client_fini(&s->cl);
    env_free(&s->sub);
    free(s->map);
    free(s->tx);
    tls_conn_free(&s->tls);
    free(s->cbuf);
    body_free(&s->body);
    struct dest *x = s->d;

    dest_active(w, x, -1);
    w->sess[s->idx] = NULL;
    w->sess_used--;
    free(s);
    dest_run(w, x); /* a slot under the concurrency limit is free again */
}

/* Open a session for d; false when no slot or memory is left (d stays with the caller). */
static bool
os_new(struct worker *w, struct dest *x, struct delivery *d)
{
    const struct config_nexthop *h = route_hop(x->route, d->hop);
    bool unix_lmtp = h->transport == TRANSPORT_LMTP && h->path[0] != '\0';
    struct smtp_client_opts o = {
        .lmtp = h->transport == TRANSPORT_LMTP,
        .helo_name = w->cfg->myhostname,
        /* not over a unix socket: nothing to protect, nothing to name in a certificate */
        .tls =
            (uint8_t)(w->tls_ctx == NULL || unix_lmtp                   ? SMTP_CLIENT_TLS_NONE
                      : w->cfg->smtp_tls_security_level == SMTP_TLS_MAY ? SMTP_CLIENT_TLS_MAY
                                                                        : SMTP_CLIENT_TLS_REQUIRE),
        .peer_name = h->host,
        .timeout_cmd_ms = (uint32_t)MIN(w->cfg->smtp_helo_timeout, UINT32_MAX),
        .timeout_data_ms = (uint32_t)MIN(w->cfg->smtp_helo_timeout, UINT32_MAX),
        .timeout_block_ms = (uint32_t)MIN(w->cfg->smtp_helo_timeout, UINT32_MAX),
        .timeout_data_end_ms = (uint32_t)MIN(w->cfg->smtp_data_done_timeout, UINT32_MAX),
    };
    struct sockaddr_storage ss;
    socklen_t sl;
    struct io_uring_sqe *sqe;
    struct osess *s;
    uint32_t idx;
    int one = 1, rc;

    for (idx = 0; idx < w->nsess && w->sess[idx] != NULL; idx++)
        ;
    if (idx == w->nsess)
        return false;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return false;
    s->tx = malloc(OS_TX_CAP);
    if (s->tx == NULL || smtp_client_init(&s->cl, &o, &os_ops, s) < 0) {
        free(s->tx);
        free(s);
        return false;
    }
    env_init(&s->sub);
    s->w = w;
    s->idx = idx;
    s->gen = (uint32_t)(++w->seq);
    s->d = x;
    s->hop = d->hop;
    s->fd = -1;
    w->sess[idx] = s;
    w->sess_used++;
    dest_active(w, x, 1);
    WSTAT_INC(w, sessions);

    rc = hop_addr(h, &ss, &sl);
    if (rc == 0) {
        s->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s->fd == -1)
            rc = -errno;
    }
    if (rc < 0) {
        char relay[CONFIG_PATH_MAX + 16];

        hop_text(h, relay, sizeof(relay));
        log_msg(LOG_INFO, "event=connect_error worker=%u relay=%s error=\"%s\"", w->index, relay,
                strerror(-rc));
        /* no socket: the delivery is deferred (or fails over) at once */
        w->sess[idx] = NULL;
        w->sess_used--;
        dest_active(w, x, -1);
        smtp_client_fini(&s->cl);
        env_free(&s->sub);
        free(s->tx);
        free(s);
        for (uint32_t i = 0; i < d->nrcpt; i++) {
            if (d->state[i] == DLV_PENDING)
                delivery_set_diag(d, i, "4.4.1 cannot connect to the next hop");
        }
        attempt_observe(w, d, NULL, d->nrcpt, clock_mono_us()); /* over at once */
        attempt_done(w, x, d, true, NULL);
        return true;
    }
    if (ss.ss_family != AF_UNIX)
        (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sqe = wsqe(w);
    io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&ss, sl);
    io_uring_sqe_set_data64(sqe, wud(s->gen, idx, W_CONNECT));
    s->inflight++;
    /* the connect copies the address when it is issued, before this returns to the loop */
    io_uring_submit(&w->ring);
    s->deadline_ms = w->now_ms + w->cfg->smtp_connect_timeout;
    if (os_start(s, d) < 0) {
        dest_push(x, d, true);
        smtp_client_quit(&s->cl);
    }
    return true;
}

static void
os_event(struct worker *w, struct osess *s, enum wop op, int res)
{
    s->inflight--;
    switch (op) {
    case W_CONNECT:
        s->connect_done = true;
        if (s->closing)
            break;
        if (res < 0) {
            char relay[CONFIG_PATH_MAX + 16];

            os_relay_text(s, relay, sizeof(relay));
            log_msg(LOG_INFO, "event=connect_error worker=%u relay=%s error=\"%s\"", w->index,
                    relay, strerror(-res));
            WSTAT_INC(w, connect_errors);
            s->conn_err = res;
            smtp_client_closed(&s->cl);
            break;
        }
        s->connected = true;
        s->deadline_ms = w->now_ms + smtp_client_timeout_ms(&s->cl);
        os_arm_recv(s);
        os_flush(s);
        break;
    case W_RECV:
        s->recv_armed = false;
        if (s->closing)
            break;
        if (res <= 0) {
            if (s->tls_err[0] != '\0')
                smtp_client_tls_failed(&s->cl, s->tls_err); /* os_tls_broken() shut it */
            else
                smtp_client_closed(&s->cl);
            break;
        }
        s->greeted = true;
        if (s->tls.ssl != NULL) {
            tls_conn_feed(&s->tls, s->rx, (size_t)res);
            os_tls_pump(s);
        } else {
            smtp_client_input(&s->cl, s->rx, (size_t)res);
            /* what followed the 220 in this read was dropped by the client */
            if (smtp_client_tls_wanted(&s->cl))
                os_tls_begin(s);
        }
        if (!smtp_client_dead(&s->cl) && !s->closing) {
            uint32_t t = smtp_client_timeout_ms(&s->cl);

            s->deadline_ms = t ? w->now_ms + t : 0;
            os_arm_recv(s);
        }
        break;
    case W_SEND:
        s->sending = false;
        if (res < 0) {
            s->send_failed = true;
            s->tx_len = s->tx_plain = 0;
            s->cbuf_off = s->cbuf_len = 0;
            if (!smtp_client_dead(&s->cl))
                smtp_client_closed(&s->cl);
            if (s->closing)
                os_close(s); /* the close waited for this send */
            break;
        }
        if (s->send_cipher) {
            s->cbuf_off += (size_t)res;
        } else {
            memmove(s->tx, s->tx + res, s->tx_len - (size_t)res);
            s->tx_len -= (size_t)res;
            s->tx_plain -= MIN(s->tx_plain, (size_t)res);
        }
        if (s->closing) {
            os_close(s); /* sends what is left first */
            break;
        }
        os_flush(s);
        if (!smtp_client_dead(&s->cl))
            smtp_client_resume(&s->cl);
        break;
    case W_READ:
        if (!body_read_done(&s->body, res))
            break;
        if (s->cur == NULL) {
            body_free(&s->body); /* its message is over */
            if (s->closing)
                os_close(s);
            break;
        }
        body_verify(&s->body, s->cur->msg);
        if (s->closing)
            os_close(s);
        else if (!smtp_client_dead(&s->cl))
            smtp_client_resume(&s->cl);
        break;
    case W_CLOSE:
        break;
    default:
        BUG_ON(1);
    }
    if (s->closed && s->inflight == 0)
        os_free(s);
}

/* ---- maildir ---- */

static const struct maildir *
maildir_find(const char *path)
{
    unsigned n = atomic_load_explicit(&nmaildirs, memory_order_acquire);

    for (unsigned i = 0; i < n; i++) {
        if (strcmp(maildirs[i].path, path) == 0)
            return &maildirs[i];
    }
    return NULL;
}

/* Create and open a Maildir's folders (start-up, blocking). */
static int
maildir_open(const char *path)
{
    char sub[CONFIG_PATH_MAX + 8];
    struct maildir *m;
    int rc;

    if (maildir_find(path) != NULL)
        return 0;
    if (atomic_load_explicit(&nmaildirs, memory_order_relaxed) == MAX_MAILDIRS)
        return -ENFILE;
    m = &maildirs[atomic_load_explicit(&nmaildirs, memory_order_relaxed)];
    snprintf(m->path, sizeof(m->path), "%s", path);
    for (int i = 0; i < 3; i++) {
        static const char *const names[] = { "tmp", "new", "cur" };

        snprintf(sub, sizeof(sub), "%s/%s", path, names[i]);
        rc = mkdir_p(sub, 0700);
        if (rc < 0)
            return rc;
    }
    snprintf(sub, sizeof(sub), "%s/tmp", path);
    m->tmp_fd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(sub, sizeof(sub), "%s/new", path);
    m->new_fd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (m->tmp_fd == -1 || m->new_fd == -1) {
        rc = -errno;
        if (m->tmp_fd != -1)
            close(m->tmp_fd);
        if (m->new_fd != -1)
            close(m->new_fd);
        return rc;
    }
    /* release: the entry is complete before a worker can see it */
    atomic_fetch_add_explicit(&nmaildirs, 1, memory_order_release);
    return 0;
}

int
worker_maildirs(const struct ringmail_config *cfg, char *err, size_t errlen)
{
    int rc = 0;

    pthread_mutex_lock(&maildirs_lock);
    for (unsigned r = 0; r < route_count(cfg) && rc == 0; r++) {
        const struct route *rt = route_at(cfg, r);

        for (unsigned h = 0; h < route_nhops(rt) && rc == 0; h++) {
            const struct config_nexthop *hop = route_hop(rt, h);

            if (hop->transport == TRANSPORT_MAILDIR) {
                rc = maildir_open(hop->path);
                if (rc < 0)
                    snprintf(err, errlen, "maildir %s: %s", hop->path,
                             rc == -ENFILE ? "more Maildirs than ringmail serves (16)"
                                           : strerror(-rc));
            }
        }
    }
    pthread_mutex_unlock(&maildirs_lock);
    return rc;
}

static void
md_finish(struct mdjob *j, int err)
{
    struct worker *w = j->w;
    struct delivery *d = j->cur;
    char relay[CONFIG_PATH_MAX + 16], text[64];
    uint64_t now;

    snprintf(relay, sizeof(relay), "maildir:%s", j->md ? j->md->path : "?");
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        if (d->state[i] != DLV_PENDING)
            continue;
        if (err == 0) {
            d->state[i] = DLV_DELIVERED;
            mark_success(d, i, DSN_ACTION_DELIVERED);
            snprintf(text, sizeof(text), "delivered to maildir");
            log_rcpt(w, d, i, "sent", relay, "2.0.0", text, NULL);
            WSTAT_INC(w, delivered);
        } else {
            snprintf(text, sizeof(text), "maildir delivery failed: %s", strerror(-err));
            delivery_set_diag(d, i, text);
            log_rcpt(w, d, i, "deferred", relay, "4.3.0", text, NULL);
            WSTAT_INC(w, deferred);
            desttab_deferred(&w->stats.dests, j->d->mslot, 1);
        }
    }
    now = clock_mono_us();
    hist_observe(&w->stats.attempt[err == 0 ? WORKER_ATTEMPT_DELIVERED : WORKER_ATTEMPT_DEFERRED],
                 &hist_attempt_duration, now > j->attempt_us ? now - j->attempt_us : 0);
    w->jobs[j->idx] = NULL;
    dest_active(w, j->d, -1);
    attempt_done(w, j->d, d, false, &j->body);
    body_free(&j->body);
    free(j->iov);
    dest_run(w, j->d);
    free(j);
}

static void
md_step(struct mdjob *j, enum wop op, int res)
{
    struct worker *w = j->w;
    const struct qmsg *m = j->cur->msg;
    struct io_uring_sqe *sqe;
    char newname[CONFIG_PATH_MAX];

    switch (op) {
    case W_MD_READ:
        if (!body_read_done(&j->body, res))
            return;
        body_verify(&j->body, m);
        if (j->body.err) {
            md_finish(j, j->body.err);
            return;
        }
        sqe = wsqe(w);
        io_uring_prep_openat(sqe, j->md->tmp_fd, j->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                             0600);
        io_uring_sqe_set_data64(sqe, wud(j->gen, j->idx, W_MD_OPEN));
        return;
    case W_MD_OPEN:
        if (res < 0) {
            md_finish(j, res);
            return;
        }
        j->fd = res;
        j->niov = (int)m->nextent + 1;
        j->iov = calloc((size_t)j->niov, sizeof(*j->iov));
        if (j->iov == NULL) {
            res = -ENOMEM;
            goto fail_close;
        }
        {
            struct slice from = env_get(&m->env, m->env.sender);
            int n = snprintf(j->hdr, sizeof(j->hdr), "Return-Path: <%.*s>\r\n",
                             (int)MIN(from.len, 400), from.p);

            j->iov[0].iov_base = j->hdr;
            j->iov[0].iov_len = (size_t)n;
            j->expect = (size_t)n;
        }
        for (unsigned k = 0; k < m->nextent; k++) {
            j->iov[k + 1].iov_base = j->body.buf + j->body.recoff[k] + SPOOL_HDR_SIZE;
            j->iov[k + 1].iov_len = m->ext[k].len;
            j->expect += m->ext[k].len;
        }
        sqe = wsqe(w);
        io_uring_prep_writev(sqe, j->fd, j->iov, (unsigned)j->niov, 0);
        io_uring_sqe_set_data64(sqe, wud(j->gen, j->idx, W_MD_WRITE));
        return;
    case W_MD_WRITE:
        if (res < 0 || (size_t)res != j->expect) {
            res = res < 0 ? res : -ENOSPC;
            goto fail_close;
        }
        sqe = wsqe(w);
        io_uring_prep_fsync(sqe, j->fd, 0);
        io_uring_sqe_set_data64(sqe, wud(j->gen, j->idx, W_MD_SYNC));
        return;
    case W_MD_SYNC:
        if (res < 0)
            goto fail_close;
        sqe = wsqe(w);
        io_uring_prep_close(sqe, j->fd);
        io_uring_sqe_set_data64(sqe, wud(j->gen, j->idx, W_MD_CLOSE));
        j->fd = -1;
        return;
    case W_MD_CLOSE:
        if (j->fd >= 0) { /* closing after a failure */
            j->fd = -1;
            md_finish(j, -EIO);
            return;
        }
        snprintf(newname, sizeof(newname), "%s", j->name);
        sqe = wsqe(w);
        io_uring_prep_renameat(sqe, j->md->tmp_fd, j->name, j->md->new_fd, j->name, 0);
        io_uring_sqe_set_data64(sqe, wud(j->gen, j->idx, W_MD_RENAME));
        return;
    case W_MD_RENAME:
        md_finish(j, res < 0 ? res : 0);
        return;
    default:
        BUG_ON(1);
    }
    return;

fail_close:
    log_msg(LOG_ERR, "event=maildir_error worker=%u file=%s error=\"%s\"", w->index, j->name,
            strerror(-res));
    sqe = wsqe(w);
    io_uring_prep_close(sqe, j->fd);
    io_uring_sqe_set_data64(sqe, wud(j->gen, j->idx, W_MD_CLOSE));
}

static bool
md_new(struct worker *w, struct dest *x, struct delivery *d)
{
    const struct config_nexthop *h = route_hop(x->route, 0);
    struct mdjob *j;
    uint32_t idx;

    for (idx = 0; idx < w->njobs && w->jobs[idx] != NULL; idx++)
        ;
    if (idx == w->njobs)
        return false;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return false;
    j->w = w;
    j->idx = idx;
    j->gen = (uint32_t)(++w->seq);
    j->d = x;
    j->cur = d;
    j->fd = -1;
    j->md = maildir_find(h->path);
    snprintf(j->name, sizeof(j->name), "%" PRIu64 ".M%" PRIu64 "R%uQ%s.%s", w->wall_ms / 1000,
             w->wall_ms % 1000, w->index, d->msg->env.qid, w->cfg->myhostname);
    j->attempt_us = clock_mono_us();
    w->jobs[idx] = j;
    dest_active(w, x, 1);
    if (j->md == NULL || body_load(w, &j->body, d->msg, j->gen, idx, W_MD_READ) < 0) {
        md_finish(j, -ENOENT);
        return true;
    }
    if (d->msg->nextent == 0) {
        /* no body record at all cannot happen (the Received: header is always there) */
        md_finish(j, -EIO);
    }
    return true;
}

/* ---- scheduling ---- */

/* Start work for x's queue while it is under its concurrency limit. */
static void
dest_run(struct worker *w, struct dest *x)
{
    if (x == NULL || w->stopping)
        return;
    while (x->q != NULL) {
        struct delivery *d;

        if (x->idle != NULL) {
            struct osess *s = x->idle;

            x->idle = s->next_idle;
            s->next_idle = NULL;
            d = dest_pop(x);
            if (os_start(s, d) < 0) {
                dest_push(x, d, true);
                smtp_client_quit(&s->cl);
                return;
            }
            continue;
        }
        if (x->active >= w->cfg->destination_concurrency_limit)
            return;
        d = x->q;
        if (route_hop(x->route, d->hop)->transport == TRANSPORT_MAILDIR) {
            dest_pop(x);
            if (!md_new(w, x, d)) {
                dest_push(x, d, true);
                return;
            }
        } else {
            dest_pop(x);
            if (!os_new(w, x, d)) {
                dest_push(x, d, true);
                return;
            }
        }
    }
}

/*
 * A delivery routed under an older configuration than the worker's (it
 * waited through a reload): when the reload left the routes as they were,
 * it moves to the same route of the new snapshot; otherwise its owner routes
 * it again (handoff.c). False when it was given back. One routed under a
 * newer snapshot than the worker's (the reactors adopt a reload first) is
 * fine as it is: its destination holds that snapshot.
 */
static bool
settle(struct worker *w, struct delivery *d)
{
    struct snapshot *ds = d->snap;

    if (ds == w->snap || ds->gen > w->snap->gen)
        return true;
    if (snapshot_same_routes(&ds->cfg, w->cfg)) {
        d->route = snapshot_route_in(ds, d->route, w->snap);
        d->snap = snapshot_ref(w->snap);
        snapshot_put(ds);
        return true;
    }
    dsn_attach(w, d, NULL); /* reports owed for what is finished: they go with it */
    d->reroute = true;
    give_back(w, d);
    return false;
}

static void
take(struct worker *w, struct delivery *d)
{
    struct dest *x;

    if (!settle(w, d))
        return;
    if (w->nheld > 0 && is_held(w, d->msg->env.id)) {
        hold_park(w, d);
        return;
    }
    x = dest_get(w, d);
    if (x == NULL) {
        give_back(w, d); /* no memory: its owner keeps it pending */
        return;
    }
    dest_push(x, d, false);
    dest_run(w, x);
}

static void
tick(struct worker *w)
{
    dest_reap(w);
    /* deferred deliveries that are due */
    while (w->retry != NULL && w->retry->next_ms <= w->now_ms) {
        struct delivery *d = w->retry;

        w->retry = d->next;
        take(w, d);
    }
    for (uint32_t i = 0; i < w->nsess; i++) {
        struct osess *s = w->sess[i];

        if (s == NULL || s->closing)
            continue;
        if (s->next_idle != NULL || s->d->idle == s) {
            if (w->now_ms - s->idle_since_ms >= w->cfg->smtp_connection_cache_time_limit) {
                os_unidle(s);
                smtp_client_quit(&s->cl);
                s->deadline_ms = w->now_ms + smtp_client_timeout_ms(&s->cl);
            }
            continue;
        }
        if (s->deadline_ms != 0 && w->now_ms >= s->deadline_ms && !smtp_client_dead(&s->cl)) {
            if (!s->connected)
                smtp_client_closed(&s->cl); /* connect timeout */
            else
                smtp_client_timeout(&s->cl);
        }
    }
}

/* ---- reloads ---- */

/* Is x of an older snapshot, with nothing and nobody left working for it? */
static bool
dest_retired(const struct worker *w, const struct dest *x)
{
    if (x->q != NULL || x->active > 0 || x->idle != NULL)
        return false;
    for (uint32_t i = 0; i < w->nsess; i++) {
        if (w->sess[i] != NULL && w->sess[i]->d == x)
            return false;
    }
    for (uint32_t i = 0; i < w->njobs; i++) {
        if (w->jobs[i] != NULL && w->jobs[i]->d == x)
            return false;
    }
    return true;
}

/* Free the destinations of older snapshots that nothing uses any more (tick). */
static void
dest_reap(struct worker *w)
{
    unsigned busy = 0;

    if (w->nretired == 0)
        return;
    for (unsigned b = 0; b <= w->dtab_mask; b++) {
        for (struct dest **pp = &w->dtab[b]; *pp != NULL;) {
            struct dest *x = *pp;

            if (x->snap->gen >= w->snap->gen) {
                pp = &x->next;
            } else if (!dest_retired(w, x)) {
                busy++;
                pp = &x->next;
            } else {
                *pp = x->next;
                snapshot_put(x->snap);
                free(x);
                w->ndest--;
            }
        }
    }
    w->nretired = busy;
}

/*
 * A reload: from now on deliveries go to destinations of s. Those waiting on
 * an older destination move now (settle()); idle connections of older
 * destinations close; sessions at work finish their delivery first. The
 * retry list keeps its schedule and is settled as each delivery comes due.
 */
static void
adopt(struct worker *w, struct snapshot *s)
{
    struct snapshot *old = w->snap;
    struct delivery *moved = NULL, **tail = &moved;

    w->snap = s;
    w->cfg = &s->cfg;
    w->tls_ctx = s->client_ctx;
    w->nretired = 0;
    for (unsigned b = 0; b <= w->dtab_mask; b++) {
        for (struct dest *x = w->dtab[b]; x != NULL; x = x->next) {
            struct delivery *d;

            if (x->snap->gen >= s->gen)
                continue;
            w->nretired++;
            while ((d = dest_pop(x)) != NULL) {
                *tail = d;
                tail = &d->next;
            }
            for (struct osess *o = x->idle; o != NULL; o = o->next_idle)
                smtp_client_quit(&o->cl);
        }
    }
    /* held deliveries too: take() parks them again, under s */
    *tail = w->held;
    w->held = NULL;
    while (moved != NULL) {
        struct delivery *d = moved;

        moved = d->next;
        d->next = NULL;
        take(w, d);
    }
    snapshot_put(old);
    /* release: main reads it to know every worker has moved on */
    atomic_store_explicit(&w->snap_gen, s->gen, memory_order_release);
}

/* ---- control (the admin endpoint's /queue: net/queue_ctl.c) ---- */

/* The worker's answer buffer, while a LIST fills it. */
struct lbuf {
    char *p;
    size_t len, cap;
    bool full;
};

static void
lb_raw(struct lbuf *b, const char *s, size_t n)
{
    if (b->full || b->len + n > b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void lb_printf(struct lbuf *b, const char *fmt, ...) PRINTF(2, 3);

static void
lb_printf(struct lbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->full)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->full = true;
        return;
    }
    b->len += (size_t)n;
}

/* A JSON string, quotes included. */
static void
lb_str(struct lbuf *b, struct slice s)
{
    lb_raw(b, "\"", 1);
    if (!b->full && !json_escape(b->p, b->cap, &b->len, s.p, s.len))
        b->full = true;
    lb_raw(b, "\"", 1);
}

static uint64_t
msg_age(const struct worker *w, const struct qmsg *m)
{
    return w->wall_ms > m->arrival_ms ? w->wall_ms - m->arrival_ms : 0;
}

/* Whether message m passes the filter's sender and age (its recipients are checked apart). */
static bool
msg_match(const struct worker *w, const struct worker_req *rq, const struct qmsg *m)
{
    if (rq->id != 0 && m->env.id != rq->id)
        return false;
    return qfilter_sender_match(&rq->filter, env_get(&m->env, m->env.sender)) &&
           qfilter_age_match(&rq->filter, msg_age(w, m));
}

/* Whether d has a pending recipient in state st passing the filter. */
static bool
dlv_match(const struct worker *w, const struct worker_req *rq, const struct delivery *d,
          unsigned st)
{
    if (!(rq->filter.states & st) || !msg_match(w, rq, d->msg))
        return false;
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        if (d->state[i] == DLV_PENDING &&
            qfilter_domain_match(&rq->filter,
                                 env_get(&d->msg->env, d->msg->env.rcpt[d->rcpt[i]].addr)))
            return true;
    }
    return false;
}

/* LIST: one record for d (state st) into b; false once b or the limit is full. */
static bool
list_one(struct worker *w, struct lbuf *b, const struct worker_req *rq, const struct delivery *d,
         unsigned st)
{
    const struct qmsg *m = d->msg;
    const struct envelope *e = &m->env;
    struct worker_rec rec = { e->id, m->arrival_ms, 0, 0, st, 0 };
    size_t at = b->len, mark;
    bool first = true;

    if (!dlv_match(w, rq, d, st))
        return true;
    if (w->ctl_ans.affected >= rq->filter.limit) {
        w->ctl_ans.truncated = true;
        return false;
    }
    lb_raw(b, (const char *)&rec, sizeof(rec));
    mark = b->len;
    lb_printf(b,
              "\"qid\":\"%s\",\"arrival_time\":%" PRIu64 ".%03u,\"size\":%" PRIu64 ",\"sender\":",
              e->qid, m->arrival_ms / 1000, (unsigned)(m->arrival_ms % 1000), e->body_len);
    lb_str(b, env_get(e, e->sender));
    lb_raw(b, ",\"client\":", 10);
    lb_str(b, env_get(e, e->client));
    lb_raw(b, ",\"helo\":", 8);
    lb_str(b, env_get(e, e->helo));
    rec.head_len = (uint32_t)(b->len - mark);
    mark = b->len;
    for (uint32_t i = 0; i < d->nrcpt && !b->full; i++) {
        struct slice addr = env_get(e, e->rcpt[d->rcpt[i]].addr);

        if (d->state[i] != DLV_PENDING || !qfilter_domain_match(&rq->filter, addr))
            continue;
        lb_printf(b, "%s{\"address\":", first ? "" : ",");
        first = false;
        lb_str(b, addr);
        lb_printf(b, ",\"state\":\"%s\",\"attempts\":%u,\"next_attempt\":", qstate_name(st),
                  d->attempts);
        if (st == QSTATE_DEFERRED) {
            uint64_t t = w->wall_ms + (d->next_ms > w->now_ms ? d->next_ms - w->now_ms : 0);

            lb_printf(b, "%" PRIu64 ".%03u", t / 1000, (unsigned)(t % 1000));
        } else {
            lb_raw(b, "null", 4);
        }
        lb_raw(b, ",\"last_reply\":", 14);
        if (d->diag != NULL && d->diag[i] != NULL)
            lb_str(b, slice_make(d->diag[i], strlen(d->diag[i])));
        else
            lb_raw(b, "null", 4);
        lb_raw(b, "}", 1);
    }
    rec.rcpt_len = (uint32_t)(b->len - mark);
    if (b->full) {
        b->len = at; /* never half a record */
        w->ctl_ans.truncated = true;
        return false;
    }
    memcpy(b->p + at, &rec, sizeof(rec));
    w->ctl_ans.affected++;
    return true;
}

static void
ctl_list(struct worker *w, const struct worker_req *rq)
{
    struct lbuf b = { w->ctl_buf, 0, WORKER_CTL_BUF, false };
    bool more = true;

    if (b.p == NULL) {
        w->ctl_buf = b.p = malloc(WORKER_CTL_BUF);
        if (b.p == NULL) {
            w->ctl_ans.truncated = true;
            return;
        }
    }
    for (uint32_t i = 0; i < w->nsess && more; i++) {
        if (w->sess[i] != NULL && w->sess[i]->cur != NULL)
            more = list_one(w, &b, rq, w->sess[i]->cur, QSTATE_ACTIVE);
    }
    for (uint32_t i = 0; i < w->njobs && more; i++) {
        if (w->jobs[i] != NULL && w->jobs[i]->cur != NULL)
            more = list_one(w, &b, rq, w->jobs[i]->cur, QSTATE_ACTIVE);
    }
    for (unsigned k = 0; k <= w->dtab_mask && more; k++) {
        for (struct dest *x = w->dtab[k]; x != NULL && more; x = x->next) {
            for (struct delivery *d = x->q; d != NULL && more; d = d->next)
                more = list_one(w, &b, rq, d, QSTATE_WAITING);
        }
    }
    for (struct delivery *d = w->retry; d != NULL && more; d = d->next)
        more = list_one(w, &b, rq, d, QSTATE_DEFERRED);
    for (struct delivery *d = w->held; d != NULL && more; d = d->next)
        more = list_one(w, &b, rq, d, QSTATE_HELD);
    w->ctl_ans.len = b.len;
}

/* Count message id's deliveries by where they are (ans.active, waiting, held). */
static void
ctl_count(struct worker *w, uint64_t id)
{
    for (uint32_t i = 0; i < w->nsess; i++) {
        if (w->sess[i] != NULL && w->sess[i]->cur != NULL && w->sess[i]->cur->msg->env.id == id)
            w->ctl_ans.active++;
    }
    for (uint32_t i = 0; i < w->njobs; i++) {
        if (w->jobs[i] != NULL && w->jobs[i]->cur != NULL && w->jobs[i]->cur->msg->env.id == id)
            w->ctl_ans.active++;
    }
    for (unsigned k = 0; k <= w->dtab_mask; k++) {
        for (struct dest *x = w->dtab[k]; x != NULL; x = x->next) {
            for (struct delivery *d = x->q; d != NULL; d = d->next)
                w->ctl_ans.waiting += d->msg->env.id == id;
        }
    }
    for (struct delivery *d = w->retry; d != NULL; d = d->next)
        w->ctl_ans.waiting += d->msg->env.id == id;
    for (struct delivery *d = w->held; d != NULL; d = d->next)
        w->ctl_ans.held += d->msg->env.id == id;
}

/* Unlink message id's deliveries from the list at *pp (a destination's queue when x) and
   hand each to fn; how many. */
static unsigned
ctl_take_list(struct worker *w, struct delivery **pp, uint64_t id, struct dest *x,
              void (*fn)(struct worker *, struct delivery *))
{
    unsigned n = 0;

    while (*pp != NULL) {
        struct delivery *d = *pp;

        if (d->msg->env.id != id) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        if (x != NULL && x->q_tail == &d->next)
            x->q_tail = pp;
        d->next = NULL;
        fn(w, d);
        n++;
    }
    return n;
}

/* Delete: the pending recipients are finished without a bounce; the owner writes their DONE
   record. */
static void
ctl_delete_one(struct worker *w, struct delivery *d)
{
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        if (d->state[i] == DLV_PENDING) {
            d->state[i] = DLV_FAILED;
            log_rcpt(w, d, i, "deleted", "none", "5.0.0", "deleted by the operator", NULL);
        }
    }
    give_back(w, d);
}

/* Every list a waiting delivery can be on; fn for message id's. */
static unsigned
ctl_take_all(struct worker *w, uint64_t id, bool with_held,
             void (*fn)(struct worker *, struct delivery *))
{
    unsigned n = ctl_take_list(w, &w->retry, id, NULL, fn);

    for (unsigned k = 0; k <= w->dtab_mask; k++) {
        for (struct dest *x = w->dtab[k]; x != NULL; x = x->next)
            n += ctl_take_list(w, &x->q, id, x, fn);
    }
    if (with_held)
        n += ctl_take_list(w, &w->held, id, NULL, fn);
    return n;
}

static void
ctl_flush(struct worker *w, const struct worker_req *rq)
{
    struct delivery **pp = &w->retry;

    while (*pp != NULL) {
        struct delivery *d = *pp;

        if (!dlv_match(w, rq, d, QSTATE_DEFERRED)) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        w->ctl_ans.affected++;
        take(w, d);
    }
}

static void
control(struct worker *w)
{
    /* acquire: pairs with the release in worker_control_send(), so ctl_in is visible */
    unsigned req = atomic_load_explicit(&w->ctl_req, memory_order_acquire);
    const struct worker_req *rq = &w->ctl_in;

    if (req == w->ctl_seen)
        return;
    w->ctl_seen = req;
    memset(&w->ctl_ans, 0, sizeof(w->ctl_ans));
    if (rq->id != 0)
        ctl_count(w, rq->id);
    switch (rq->op) {
    case WORKER_CTL_LIST:
        ctl_list(w, rq);
        break;
    case WORKER_CTL_FLUSH:
        ctl_flush(w, rq);
        break;
    case WORKER_CTL_DELETE:
        /* a held message in an attempt here stays held: the delete is refused (409), and the
           attempt's end parks it again if undelivered */
        if (w->ctl_ans.active == 0)
            held_remove(w, rq->id);
        w->ctl_ans.affected = ctl_take_all(w, rq->id, true, ctl_delete_one);
        break;
    case WORKER_CTL_HOLD:
        if (held_add(w, rq->id) < 0) {
            w->ctl_ans.err = -ENOMEM; /* not held */
            break;
        }
        w->ctl_ans.affected = ctl_take_all(w, rq->id, false, hold_park);
        break;
    case WORKER_CTL_RELEASE:
        held_remove(w, rq->id);
        w->ctl_ans.affected = ctl_take_list(w, &w->held, rq->id, NULL, take);
        break;
    }
    /* release: publishes ctl_ans and ctl_buf; pairs with the acquire in worker_control_wait() */
    atomic_store_explicit(&w->ctl_ack, req, memory_order_release);
}

int
worker_control_send(struct worker *w, const struct worker_req *rq)
{
    unsigned req = atomic_load_explicit(&w->ctl_req, memory_order_relaxed);

    /* acquire: the worker is done with ctl_in and ctl_buf before main touches them again */
    if (atomic_load_explicit(&w->ctl_ack, memory_order_acquire) != req)
        return -EBUSY;
    w->ctl_in = *rq;
    /* release: publishes ctl_in; pairs with the acquire in control() */
    atomic_store_explicit(&w->ctl_req, req + 1, memory_order_release);
    worker_notify(w);
    return 0;
}

bool
worker_control_idle(const struct worker *w)
{
    /* acquire: as in worker_control_send() */
    return atomic_load_explicit(&w->ctl_ack, memory_order_acquire) ==
           atomic_load_explicit(&w->ctl_req, memory_order_relaxed);
}

int
worker_control_wait(struct worker *w, uint64_t deadline_ms, struct worker_ans *ans)
{
    unsigned req = atomic_load_explicit(&w->ctl_req, memory_order_relaxed);

    for (;;) {
        struct timespec ts = { 0, 500000 };

        if (atomic_load_explicit(&w->ctl_ack, memory_order_acquire) == req) {
            *ans = w->ctl_ans;
            return 0;
        }
        if (clock_mono_ms() >= deadline_ms)
            return -ETIMEDOUT;
        nanosleep(&ts, NULL); /* the main thread, never a reactor: a short bounded wait */
    }
}

/* ---- the loop ---- */

static void
handle(struct worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    enum wop op = (enum wop)(ud & 0xff);
    uint32_t idx = (uint32_t)(ud >> 8) & 0xffffff;
    uint32_t gen = (uint32_t)(ud >> 32);

    switch (op) {
    case W_NONE:
        return;
    case W_WAKE: {
        struct io_uring_sqe *sqe = wsqe(w);

        io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
        io_uring_sqe_set_data64(sqe, wud(0, 0, W_WAKE));
        return;
    }
    case W_LOG:
        logbuf_done(&w->log, &w->ring, cqe->res);
        return;
    case W_CONNECT:
    case W_RECV:
    case W_SEND:
    case W_CLOSE:
    case W_READ: {
        struct osess *s = idx < w->nsess ? w->sess[idx] : NULL;

        if (s != NULL && s->gen == gen)
            os_event(w, s, op, cqe->res);
        return;
    }
    default: {
        struct mdjob *j = idx < w->njobs ? w->jobs[idx] : NULL;

        if (j != NULL && j->gen == gen)
            md_step(j, op, cqe->res);
        return;
    }
    }
}

static bool
worker_idle(const struct worker *w)
{
    if (w->sess_used > 0 || w->done != NULL || !logbuf_idle(&w->log))
        return false;
    for (uint32_t i = 0; i < w->njobs; i++) {
        if (w->jobs[i] != NULL)
            return false;
    }
    return true;
}

/* Stop: every delivery still held goes back to its owner unfinished (still pending in the spool).
 */
static void
hand_back_all(struct worker *w)
{
    for (unsigned b = 0; b <= w->dtab_mask; b++) {
        for (struct dest *x = w->dtab[b]; x != NULL; x = x->next) {
            struct delivery *d;

            while ((d = dest_pop(x)) != NULL) {
                dsn_attach(w, d, NULL); /* failed recipients of an earlier attempt */
                give_back(w, d);
            }
            for (struct osess *s = x->idle; s != NULL; s = s->next_idle)
                smtp_client_quit(&s->cl);
        }
    }
    while (w->retry != NULL) {
        struct delivery *d = w->retry;

        w->retry = d->next;
        dsn_attach(w, d, NULL);
        give_back(w, d);
    }
    while (w->held != NULL) { /* still pending in the spool; held again at the next start */
        struct delivery *d = w->held;

        w->held = d->next;
        give_back(w, d);
    }
    for (uint32_t i = 0; i < w->nsess; i++) {
        if (w->sess[i] != NULL && !w->sess[i]->closing)
            smtp_client_closed(&w->sess[i]->cl); /* pending recipients: deferred, given back */
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    void *items[W_BATCH];
    struct io_uring_sqe *sqe;
    int rc;

    rc = io_uring_queue_init(W_RING_ENTRIES, &w->ring,
                             IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    if (rc < 0)
        log_msg(LOG_ERR, "event=fatal worker=%u what=io_uring_setup error=\"%s\"%s", w->index,
                strerror(-rc), uring_hint(rc));
    if (rc == 0 && logbuf_init(&w->log, wud(0, 0, W_LOG)) < 0) {
        io_uring_queue_exit(&w->ring);
        rc = -ENOMEM;
    }
    atomic_store_explicit(&w->started, rc < 0 ? rc : 1, memory_order_release);
    if (rc < 0)
        return NULL;
    log_set_thread_sink(logbuf_sink, &w->log);
    sqe = wsqe(w);
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof(w->wake_buf), 0);
    io_uring_sqe_set_data64(sqe, wud(0, 0, W_WAKE));
    w->now_ms = clock_mono_ms();
    w->wall_ms = clock_wall_ms();
    w->next_tick_ms = w->now_ms + W_TICK_MS;

    for (;;) {
        struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = W_TICK_MS * 1000000ll };
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        size_t got;

        {
            struct snapshot *s = snapshot_take(&w->next_snap);

            if (s != NULL)
                adopt(w, s);
        }
        got = w->stopping ? 0 : q_mesh_pop_batch(w->in, w->index, items, W_BATCH);
        for (size_t i = 0; i < got; i++)
            take(w, items[i]);
        control(w);
        give_back_retry(w);
        logbuf_flush(&w->log, &w->ring);
        if (!w->stopping && atomic_load_explicit(&w->stop, memory_order_acquire)) {
            w->stopping = true;
            hand_back_all(w);
        }
        if (w->stopping && worker_idle(w))
            break;
        if (got == W_BATCH || w->done != NULL) {
            rc = io_uring_submit_and_get_events(&w->ring);
        } else if (q_mesh_prepare_sleep(w->in, w->index)) {
            rc = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
            q_mesh_end_sleep(w->in, w->index);
        } else {
            rc = io_uring_submit_and_get_events(&w->ring);
        }
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            log_msg(LOG_ERR, "event=fatal worker=%u what=io_uring_enter error=\"%s\"", w->index,
                    strerror(-rc));
            break;
        }
        w->now_ms = clock_mono_ms();
        w->wall_ms = clock_wall_ms();
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            handle(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        WSTAT_INC(w, loops);
        if (w->now_ms >= w->next_tick_ms) {
            w->next_tick_ms = w->now_ms + W_TICK_MS;
            tick(w);
        }
    }
    log_set_thread_sink(NULL, NULL);
    logbuf_drain_sync(&w->log);
    logbuf_fini(&w->log);
    io_uring_queue_exit(&w->ring);
    return NULL;
}

int
worker_init(struct worker *w, unsigned index, struct snapshot *snap, struct q_mesh *in,
            struct q_mesh *out)
{
    char err[CONFIG_ERR_MAX];
    int rc;

    memset(w, 0, sizeof(*w));
    w->index = index;
    w->snap = snapshot_ref(snap);
    w->cfg = &snap->cfg;
    w->tls_ctx = snap->client_ctx;
    atomic_store_explicit(&w->snap_gen, snap->gen, memory_order_relaxed);
    w->in = in;
    w->out = out;
    w->done_tail = &w->done;
    w->dtab_mask = 255;
    w->dtab = calloc(w->dtab_mask + 1, sizeof(*w->dtab));
    w->nsess = MAX_SESSIONS;
    w->sess = calloc(w->nsess, sizeof(*w->sess));
    w->njobs = MAX_JOBS;
    w->jobs = calloc(w->njobs, sizeof(*w->jobs));
    w->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (w->dtab == NULL || w->sess == NULL || w->jobs == NULL || w->wake_fd == -1)
        return -ENOMEM;
    /* the Maildirs every route may need, created now: start-up may block */
    rc = worker_maildirs(w->cfg, err, sizeof(err));
    if (rc < 0) {
        log_msg(LOG_ERR, "event=fatal what=maildir error=\"%s\"", err);
        return rc;
    }
    q_mesh_set_notify(in, index, worker_notify, w);
    return 0;
}

int
worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);

    if (rc != 0)
        return -rc;
    while ((rc = atomic_load_explicit(&w->started, memory_order_acquire)) == 0) {
        struct timespec ts = { 0, 1000000 };

        nanosleep(&ts, NULL);
    }
    if (rc < 0) {
        pthread_join(w->thread, NULL);
        return rc;
    }
    return 0;
}

void
worker_notify(void *arg)
{
    struct worker *w = arg;
    uint64_t one = 1;

    /* an eventfd write never blocks here: the counter cannot reach its maximum */
    if (write(w->wake_fd, &one, sizeof(one)) == -1)
        return;
}

void
worker_stop(struct worker *w)
{
    /* release: pairs with the acquire in worker_main() */
    atomic_store_explicit(&w->stop, true, memory_order_release);
    worker_notify(w);
}

void
worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
    for (unsigned b = 0; b <= w->dtab_mask; b++) {
        struct dest *x = w->dtab[b], *next;

        for (; x != NULL; x = next) {
            next = x->next;
            snapshot_put(x->snap);
            free(x);
        }
    }
    free(w->dtab);
    free(w->sess);
    free(w->jobs);
    free(w->held_ids);
    free(w->ctl_buf);
    close(w->wake_fd);
    w->tls_ctx = NULL;
    w->cfg = NULL;
    snapshot_put(snapshot_take(&w->next_snap));
    snapshot_put(w->snap);
    w->snap = NULL;
}
