/*
 * reactor.h: one io_uring event loop per core, and the objects it owns.
 *
 * A reactor owns its ring, its provided-buffer ring, its listening sockets
 * (SO_REUSEPORT: the kernel spreads connections), its connections and its
 * spool segment. Nothing here is shared with another thread except the
 * fields marked "any thread". Every io_uring operation a reactor submits
 * carries user_data = gen:32 | index:24 | op:8 (no raw pointers), and a
 * completion whose generation no longer matches is dropped after its
 * provided buffer, if any, has been returned.
 */
#ifndef RINGMAIL_NET_REACTOR_H
#define RINGMAIL_NET_REACTOR_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/histogram.h"
#include "core/limits.h"
#include "core/smtp_server.h"
#include "net/logbuf.h"
#include "net/snapshot.h"
#include "net/tls.h"
#include "queue/delivery.h"
#include "queue/ring.h"
#include "queue/spool.h"

#define RX_BUF_SIZE   4096u  /* provided buffer size */
#define RX_BUF_COUNT  1024u  /* provided buffers per reactor (power of two) */
#define TX_BUF_SIZE   4096u  /* a connection's reply buffer, lent while it holds replies */
#define TLS_BUF_SIZE  16384u /* ciphertext on its way out, lent while it holds octets */
#define BODY_CHUNK    65536u /* body chunk: one DATA record, header included */
#define SYNC_BATCHES  4      /* group commits in flight at once per reactor */
#define BODY_INFLIGHT 2      /* chunk writes in flight per message before reading pauses */
#define CARRY_EXTRA   32768u /* pooled carry room beyond command_line_limit */
#define CARRY_MAX     (RX_BUF_COUNT * RX_BUF_SIZE) /* growth bound: what one CQ batch can hold */

enum op {
    OP_NONE = 0,
    OP_ACCEPT,   /* index: listener */
    OP_RECV,     /* index: connection */
    OP_SEND,     /* index: connection */
    OP_CANCEL,   /* index: connection */
    OP_CLOSE,    /* index: connection */
    OP_WRITE,    /* index: spool write slot */
    OP_SYNC,     /* index: unused */
    OP_SEGOPEN,  /* index: unused */
    OP_SEGCLOSE, /* index: unused */
    OP_WAKE,     /* index: unused (eventfd read) */
    OP_LOG,      /* index: unused (stderr write) */
};

static inline uint64_t
ud_make(uint32_t gen, uint32_t index, enum op op)
{
    return (uint64_t)gen << 32 | (uint64_t)(index & 0xffffff) << 8 | (uint64_t)op;
}

enum conn_flag {
    CONN_F_USED = 1u << 0,
    CONN_F_RECV = 1u << 1,      /* a multishot recv is armed */
    CONN_F_SENDING = 1u << 2,   /* a send is in flight */
    CONN_F_CLOSING = 1u << 3,   /* no more input; close once output is flushed */
    CONN_F_CLOSED = 1u << 4,    /* close submitted */
    CONN_F_GREETED = 1u << 5,   /* 220 queued */
    CONN_F_RX_PAUSED = 1u << 6, /* recv cancelled for back-pressure */
    CONN_F_DIRTY = 1u << 7,     /* on the reactor's flush list */
    CONN_F_COUNTED = 1u << 8,   /* counted against max_connections */
    CONN_F_EOF = 1u << 9,       /* the client closed its side */
    CONN_F_TX_TLS = 1u << 10,   /* the send in flight carries ciphertext (tls_out) */
    CONN_F_TLS_BYE = 1u << 11,  /* close_notify queued */
    CONN_F_PROXY = 1u << 12,    /* waiting for the PROXY protocol header */
};

struct segment;
struct msg_io;
struct auth_pool;

/* Fixed-size buffers recycled within one reactor: no malloc on the steady path. */
struct buf_pool {
    char **items;
    unsigned n, keep; /* free buffers held, and at most this many */
    size_t size;
};

struct conn {
    uint32_t gen;
    uint32_t flags; /* CONN_F_* */
    int fd;
    uint16_t inflight;    /* operations in flight that name this slot */
    uint64_t deadline_ms; /* monotonic; 0 = none */
    uint64_t greet_at_ms; /* when to send the 220 (greeting delay) */
    uint64_t sid;         /* session id for the logs */
    struct conn *next_dirty;
    struct conn *next_greet; /* on the reactor's list of connections owed a 220 */
    uint64_t greet_loop;     /* loop turn of the accept */

    char *carry; /* unconsumed input; NULL when empty */
    uint32_t carry_len, carry_cap;

    char *tx; /* NULL when nothing is queued */
    uint32_t tx_len, tx_off, tx_sending;
    uint32_t tx_plain; /* octets at the front of tx that go out in clear (the 220 to STARTTLS) */
    uint8_t kind;      /* enum config_listen_kind of the listener that accepted it */

    /* per-client limits (core/limits.h) */
    struct limits_key lkey;
    bool ltracked; /* limits_connect() counted it: limits_disconnect() at the end */
    bool lexempt;  /* mynetworks or smtpd_client_event_limit_exceptions */

    uint64_t auth_due_ms; /* a failed AUTH's reply waits until then (smtpd_auth_failure_delay) */

    /* smtpd_min_data_rate: octets received, and a mark at the start of the window */
    uint64_t bytes_in, rate_mark_ms, rate_mark_bytes;

    /* TLS: tls.ssl == NULL on a plaintext connection */
    struct tls_conn tls;
    char *tls_out; /* ciphertext being sent, lent from tls_pool; NULL when none */
    uint32_t tls_out_len, tls_out_off;

    struct msg_io *msg; /* message being received, NULL if none */
    struct reactor *r;
    struct snapshot *snap; /* the configuration the session started under (a reference) */
    struct smtp_session sess;
};

/* A message being received: its body chunks and its place in the spool. */
struct msg_io {
    struct conn *conn;   /* NULL once the connection let go of it */
    struct segment *seg; /* where all its records go */
    char *chunk;         /* current chunk buffer (BODY_CHUNK), header room first */
    uint32_t chunk_len;  /* payload octets in chunk */
    uint16_t writes;     /* writes in flight */
    bool ended;          /* msg_end called: commit record written or being written */
    bool aborted;        /* never to be delivered */
    uint64_t end_us;     /* monotonic: its client's end of data (0: a bounce) */
    int err;             /* first write error, -errno */
    struct spool_extent *ext;
    uint32_t nextent, ext_cap; /* extents used and allocated */
    struct qmsg *q;            /* the message for the workers, made at its end */
    struct qmsg *orig;         /* a bounce: the message whose failed recipients it reports */
    uint32_t *orig_rcpt;       /* those recipients: finished once the bounce is durable */
    uint32_t orig_n;
    struct msg_io *next; /* on the reactor's ready or syncing list */
};

struct segment {
    int fd;
    uint64_t id;
    uint64_t seed;    /* keys every record checksum in this segment (queue/spool.h) */
    uint64_t end;     /* next free offset */
    uint32_t refs;    /* messages and writes still using it */
    uint32_t pending; /* messages committed to it and not finished: kept on disk while > 0 */
    bool dirty;       /* written since the last fdatasync */
    bool current;
    struct segment *next;
};

/* One spool write in flight: its buffers stay alive until its completion. */
struct spool_write {
    uint32_t gen;
    bool used;
    struct msg_io *msg; /* NULL for a segment header write */
    struct segment *seg;
    char *chunk;   /* a body chunk to recycle on completion, or NULL */
    char *extra;   /* a buffer to free on completion, or NULL */
    size_t expect; /* octets the write must write */
    struct iovec iov[2];
};

struct reactor_stats {
    /* written by the owning reactor only (relaxed), read by anyone */
    _Atomic uint64_t accepted, refused_busy, closed, msgs_accepted, msgs_refused, commit_errors,
        fsyncs, enobufs, bytes_in, loops, cqes, bounces, segments_unlinked, tls_handshakes,
        tls_failures, tls_resumed, refused_limit, refused_proxy, too_slow, auth_ok, auth_failed,
        auth_tempfail;
    /* gauges, same rule (the owner adds and subtracts): messages queued here (a qmsg
       exists: handed off, not yet released), the wall-clock arrival (ms) of the oldest of
       them (0: none), and the spool segment files this reactor owns and their octets */
    _Atomic uint64_t queue_messages, queue_oldest_ms, spool_segments, spool_bytes;
    /* end of DATA/BDAT LAST to the 250 being queued (the group commit), per message */
    struct hist commit_latency;
};

struct reactor {
    unsigned index;
    const struct ringmail_config *cfg;    /* &snap->cfg: the configuration new sessions get */
    struct snapshot *snap;                /* a reference, swapped at a reload (snapshot.h) */
    _Atomic(struct snapshot *) next_snap; /* any thread: the main thread offers a reload here */
    _Atomic uint64_t snap_gen;            /* any thread reads: the generation adopted */
    struct io_uring ring;
    pthread_t thread;
    int wake_fd; /* eventfd: the main thread writes to stop us */
    uint64_t wake_buf;
    atomic_bool stop;   /* any thread */
    atomic_int started; /* 0 while starting, 1 running, -errno when start-up failed */
    atomic_bool exited; /* the loop is over (any thread reads it) */
    bool stopping;

    /* listening sockets (owned), one slot per listener; a reload opens and closes slots */
    struct rlisten {
        int fd;                    /* -1: the slot is free */
        uint32_t gen;              /* in the accept's user_data: a closed slot's is stale */
        struct config_hostport hp; /* the listener (kind, proxy: read at each accept) */
    } lis[CONFIG_MAX_LISTEN];

    /* provided buffers */
    struct io_uring_buf_ring *br;
    char *rx_bufs;
    unsigned rx_mask;

    /* connections */
    struct conn *conns;
    uint32_t nconns, conns_used, free_head;
    uint32_t *free_next;
    struct conn *dirty; /* connections with output or input to process this turn */
    struct conn *greet; /* connections owed a 220 */
    unsigned greet_pending;
    uint64_t now_ms;  /* monotonic, read once per loop turn */
    uint64_t wall_ms; /* wall clock, read once per loop turn */
    uint64_t next_tick_ms;
    uint64_t next_sid;

    /* buffers recycled within this reactor */
    struct buf_pool tx_pool, carry_pool, chunk_pool, tls_pool;

    /* spool */
    int spool_dir_fd;
    bool dir_dirty;
    struct segment *seg;      /* current segment */
    struct segment *seg_next; /* created, its SEG record not yet written */
    struct segment *segs;     /* every open segment */
    bool seg_opening;
    uint64_t seg_open_id;
    char seg_open_name[64];
    uint64_t last_id; /* last message or segment id handed out */
    struct spool_write *writes;
    uint32_t nwrites, writes_used;
    struct msg_io *ready, **ready_tail; /* written, waiting for fdatasync */
    /* fdatasyncs in flight, each with the messages it makes durable; batches overlap so
       that a message ready while one runs need not wait for it to finish */
    struct sync_batch {
        struct msg_io *msgs;
        unsigned ops; /* fsyncs of this batch still in flight */
        int err;
    } sync[SYNC_BATCHES];
    int sync_last;           /* the batch submitted last, or -1 */
    unsigned spool_inflight; /* writes + syncs + opens */

    struct logbuf log; /* this thread's log lines, written through the ring */

    /* delivery: the meshes to and from the workers (net/handoff.c) */
    struct q_mesh *to_workers, *from_workers;
    unsigned nworkers;
    struct delivery *handoff, **handoff_tail; /* pushes waiting for room */
    unsigned nhandoff;
    struct qmsg *live_head, *live_tail;  /* queued messages (handed off, not released), oldest
                                            arrival first: ringmail_queue_* (net/handoff.c) */
    const struct spool_index *recovered; /* start-up: messages to deliver, NULL after */
    unsigned nreactors;

    char discard[4096]; /* where the body of a message whose storage failed goes */

    struct reactor_stats stats;
    /* the next reactor of the array (calloc'd, not cache-line aligned) starts at least a cache
       line past our counters, so no line holds both this thread's counters and fields the
       next thread writes */
    char stats_pad[64];
};

#define HANDOFF_MAX 4096u /* deliveries waiting for a worker's ring before new mail gets 451 */

/* Counters have one writer, their reactor: a relaxed load and store, no locked add. */
#define STAT_INC(r, f, n)                                                                          \
    atomic_store_explicit(&(r)->stats.f,                                                           \
                          atomic_load_explicit(&(r)->stats.f, memory_order_relaxed) + (n),         \
                          memory_order_relaxed)

#define STAT_DEC(r, f, n)                                                                          \
    atomic_store_explicit(&(r)->stats.f,                                                           \
                          atomic_load_explicit(&(r)->stats.f, memory_order_relaxed) - (n),         \
                          memory_order_relaxed)

/* Process-wide state the reactors share (any thread; relaxed atomics). */
struct reactor_shared {
    _Atomic unsigned connections; /* open client connections, all reactors */
    struct limits *limits;        /* per-client limits; set before the reactors start */
    struct auth_pool *auth;       /* AUTH verifiers (net/auth.h), NULL without a password file */
};

extern struct reactor_shared reactor_shared;

/* Create the reactor's listening sockets for snap's listeners and take a reference on snap
   (start-up, main thread; blocking is fine). 0, or -errno with a message in err naming
   the address. */
int reactor_listen(struct reactor *r, struct snapshot *snap, char *err, size_t errlen);
/* One listening socket for hp (SO_REUSEPORT: each reactor has its own). The descriptor,
   or -errno with a message in err naming the address. Main thread. */
int listen_socket(const struct config_hostport *hp, char *err, size_t errlen);

/* Start the thread (pinned to CPU `cpu` when cpu >= 0) and wait until its ring and
   spool segment are set up. 0 or -errno. */
int reactor_start(struct reactor *r, int cpu);
/* Ask the reactor to stop (any thread), then join it. */
void reactor_stop(struct reactor *r);
void reactor_join(struct reactor *r);

/* --- internal to net/: connection glue (conn.c) and spool I/O (spool_io.c) --- */
struct io_uring_sqe *reactor_sqe(struct reactor *r);
void conn_accepted(struct reactor *r, int fd, unsigned listener);
void conn_on_recv(struct reactor *r, struct conn *c, const struct io_uring_cqe *cqe);
void conn_on_send(struct reactor *r, struct conn *c, int res);
void conn_on_close(struct reactor *r, struct conn *c);
void conn_flush(struct reactor *r, struct conn *c);
void conn_mark_dirty(struct reactor *r, struct conn *c);
void conn_tick(struct reactor *r, struct conn *c);
/* Stopping: an idle session gets 421 4.3.2 and is closed; a busy one is left to finish
   its transaction (conn_resume() closes it then), unless force (shutdown_timeout passed). */
void conn_shutdown(struct reactor *r, struct conn *c, bool force);
void conn_put(struct reactor *r, struct conn *c);
void conn_resume(struct reactor *r, struct conn *c);
void conn_pause(struct reactor *r, struct conn *c);
void conn_greet_check(struct reactor *r);
/* A verdict from the AUTH verifiers (net/auth.h auth_result_fn; arg is the reactor). */
void conn_auth_result(void *arg, uint64_t token, bool ok);

int spool_io_init(struct reactor *r, uint64_t last_id);
void spool_io_fini(struct reactor *r);
void spool_io_on_write(struct reactor *r, uint32_t index, uint32_t gen, int res);
void spool_io_on_sync(struct reactor *r, uint32_t batch, int res);
void spool_io_on_segopen(struct reactor *r, int res);
void spool_io_end_of_turn(struct reactor *r);
bool spool_io_idle(const struct reactor *r);

/* session ops that touch the spool (conn.c's ops call these) */
int spool_io_msg_begin(struct reactor *r, struct conn *c, struct envelope *env);
char *spool_io_body_space(struct reactor *r, struct conn *c, size_t *room);
void spool_io_body_commit(struct reactor *r, struct conn *c, size_t n);
void spool_io_msg_end(struct reactor *r, struct conn *c, struct envelope *env);
void spool_io_msg_abort(struct reactor *r, struct conn *c);
/* The connection goes away while its message commits: the commit goes on alone. */
void spool_io_msg_detach(struct reactor *r, struct conn *c);

/* delivery (handoff.c) */
int handoff_message(struct reactor *r, struct qmsg *q, const uint8_t *rcpt_done);
void handoff_release(struct reactor *r, struct qmsg *q);
void handoff_turn(struct reactor *r);
void handoff_notify(void *arg);
/* Free a delivery and drop its snapshot reference; true when it held its message's last. */
bool handoff_delivery_free(struct delivery *d);
/* Append a DONE record for recipients rcpt[0..n) of message id to segment seg. */
void spool_io_done(struct reactor *r, struct segment *seg, uint64_t id, const uint32_t *rcpt,
                   unsigned n);
/* Spool a bounce (from <> to orig's sender) and hand it to the workers. */
void spool_io_inject(struct reactor *r, struct qmsg *orig, const uint32_t *failed, uint32_t nfailed,
                     const char *body, size_t len, unsigned dsn_flags);
/* Drop a message's reference to seg; finished: the message needs nothing more from the
   spool. A segment that is not current is closed once nothing holds it, and unlinked when
   none of its messages is pending. */
void spool_io_seg_put(struct reactor *r, struct segment *seg, bool finished);
/* Start-up, on the reactor's thread: re-open the recovered segments this reactor owns and
   hand their pending messages to the workers. */
int spool_io_requeue(struct reactor *r);

int buf_pool_init(struct buf_pool *p, size_t size, unsigned keep);
void buf_pool_fini(struct buf_pool *p);
/* A buffer of p->size octets, or NULL when memory is exhausted. */
char *buf_pool_get(struct buf_pool *p);
void buf_pool_put(struct buf_pool *p, char *buf);

#endif
