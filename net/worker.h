/*
 * worker.h: outbound delivery threads.
 *
 * A worker owns an io_uring event loop carrying many upstream sessions at
 * once, the destinations routed to it (a route's hash picks its worker, so
 * one destination's connections are pooled and reused on one thread), their
 * queues, a retry list, and its maildir jobs. It takes deliveries from the
 * reactor x worker mesh and gives each back to its owner reactor once every
 * one of its recipients is delivered or failed. Nothing else is shared.
 */
#ifndef RINGMAIL_NET_WORKER_H
#define RINGMAIL_NET_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/desttab.h"
#include "core/histogram.h"
#include "core/qfilter.h"
#include "core/smtp_client.h"
#include "net/logbuf.h"
#include "net/snapshot.h"
#include "queue/delivery.h"
#include "queue/ring.h"

struct worker;
struct dest;
struct ssl_ctx_st;

/* The result label of ringmail_delivery_attempt_duration_seconds. */
enum worker_attempt_result {
    WORKER_ATTEMPT_DELIVERED = 0, /* every recipient tried got 2xx (or into the Maildir) */
    WORKER_ATTEMPT_DEFERRED,      /* at least one recipient is still pending */
    WORKER_ATTEMPT_FAILED,        /* none pending, at least one failed (5xx) */
    WORKER_ATTEMPT_RESULTS
};

struct worker_stats {
    /* written by the owning worker only (relaxed), read by anyone */
    _Atomic uint64_t delivered, deferred, failed, sessions, connect_errors, loops;
    _Atomic uint64_t tls_handshakes, tls_failures;
    /* arrival to delivered or bounced, per delivery (net/worker.c attempt_done) */
    struct hist residence;
    /* one attempt: the delivery taken into a session or Maildir job, to its result */
    struct hist attempt[WORKER_ATTEMPT_RESULTS];
    /* per destination: active sessions, deferred recipients (bounded, core/desttab.h) */
    struct desttab dests;
};

/* Control operations: each acts on the deliveries the worker holds now (waiting in a
   destination's queue, deferred in its retry list, held; "active" ones, in an attempt, are
   counted but not touched, except that a hold applies to them when the attempt ends). */
enum worker_ctl {
    WORKER_CTL_LIST = 0, /* describe the deliveries passing filter (of id, when not 0) */
    WORKER_CTL_FLUSH,    /* retry the deferred ones passing filter (of id) now */
    WORKER_CTL_DELETE,   /* drop message id's waiting, deferred and held deliveries */
    WORKER_CTL_HOLD,     /* put message id on hold: its deliveries go to the held list */
    WORKER_CTL_RELEASE,  /* take message id off hold: its held deliveries are queued again */
};

struct worker_req {
    enum worker_ctl op;
    uint64_t id; /* a message, or 0 (LIST, FLUSH: every message the filter passes) */
    struct qfilter filter;
};

struct worker_ans {
    unsigned affected; /* deliveries listed, retried, deleted, held or released */
    unsigned active;   /* deliveries of id (LIST: passing the filter) in an attempt now */
    unsigned waiting;  /* ... in a destination's queue or the retry list */
    unsigned held;     /* ... on the held list (before the operation) */
    size_t len;        /* LIST: octets of records in the worker's ctl_buf */
    bool truncated;    /* LIST: the filter's limit or the buffer stopped the list */
    int err;           /* HOLD: -ENOMEM, not held */
};

/*
 * LIST records in ctl_buf, back to back, one per delivery (a message routed
 * two ways has two, possibly on two workers): a struct worker_rec (memcpy
 * it out: records are not aligned), head_len octets of JSON members
 * ("qid":"...","arrival_time":...,"size":...,"sender":"...","client":"...",
 * "helo":"...") and rcpt_len octets of JSON objects, comma-separated, one
 * per recipient of the delivery that is still to be delivered and passes
 * the filter ({"address":...,"state":...,"attempts":...,"next_attempt":...,
 * "last_reply":...}).
 */
struct worker_rec {
    uint64_t id;
    uint64_t arrival_ms; /* wall clock */
    uint32_t head_len, rcpt_len;
    uint32_t state; /* the delivery's QSTATE_* (core/qfilter.h) */
    uint32_t pad;
};

#define WORKER_CTL_BUF (2u << 20) /* octets of LIST records a worker gives at most */

struct worker {
    unsigned index;
    const struct ringmail_config *cfg;    /* &snap->cfg */
    struct snapshot *snap;                /* a reference, swapped at a reload (snapshot.h) */
    _Atomic(struct snapshot *) next_snap; /* any thread: the main thread offers a reload here */
    _Atomic uint64_t snap_gen;            /* any thread reads: the generation adopted */
    struct q_mesh *in;                    /* reactors -> workers: this worker is consumer `index` */
    struct q_mesh *out;                   /* workers -> reactors: this worker is producer `index` */
    pthread_t thread;
    atomic_bool stop;
    atomic_int started; /* 0 starting, 1 running, -errno failed */
    int wake_fd;        /* eventfd: producers' notify hook and stop write to it */
    uint64_t wake_buf;

    struct io_uring ring;
    struct logbuf log;
    uint64_t now_ms, wall_ms;
    bool stopping;

    /* the delivery side's TLS context: snap->client_ctx (NULL: smtp_tls_security_level
       none), shared read-only by every worker (SSL_new takes its own reference) */
    struct ssl_ctx_st *tls_ctx;

    struct dest **dtab; /* destinations by route hash */
    unsigned dtab_mask;
    unsigned ndest;
    unsigned nretired; /* destinations of older snapshots still in the table */

    struct osess **sess; /* session slots, user_data index */
    uint32_t nsess, sess_used;
    struct mdjob **jobs; /* maildir job slots */
    uint32_t njobs;

    struct delivery *retry;             /* deferred deliveries, by due time */
    struct delivery *done, **done_tail; /* completions the owner's ring had no room for */
    uint64_t next_tick_ms;
    uint64_t seq; /* maildir file names */

    /* messages on hold (POST /queue/QID/hold): their ids, sorted, and their deliveries
       here, which are neither tried nor expired until released (worker thread only, after
       worker_start(); worker_hold_preload() before it) */
    uint64_t *held_ids;
    size_t nheld, held_cap;
    struct delivery *held;

    /* control requests from the main thread (the admin endpoint's /queue, net/queue_ctl.c):
       main writes ctl_in, then publishes ctl_req (release); the worker answers in
       ctl_ans (and ctl_buf for a list) and publishes ctl_ack = ctl_req (release). Main never
       writes a request while the previous one is unanswered (ctl_ack != ctl_req), so the
       worker never reads a request, nor writes an answer, that main is touching. */
    struct worker_req ctl_in;
    struct worker_ans ctl_ans;
    char *ctl_buf; /* the list's records (worker-owned, WORKER_CTL_BUF octets, lazily) */
    atomic_uint ctl_req, ctl_ack;
    unsigned ctl_seen;

    struct worker_stats stats;
    /* the next worker of the array (calloc'd, not cache-line aligned) starts at least a cache
       line past our counters, so no line holds both this thread's counters and fields the
       next thread writes */
    char stats_pad[64];
};

/* Main thread: has w answered every request sent to it (may one be sent now)? */
bool worker_control_idle(const struct worker *w);
/* Main thread: post req to w; -EBUSY while w has not answered the previous one. */
int worker_control_send(struct worker *w, const struct worker_req *req);
/* Main thread: wait until monotonic deadline_ms for the answer to the last request sent; 0
   and *ans (and, for LIST, the records at w->ctl_buf[0..ans->len), readable until the next
   request), or -ETIMEDOUT. */
int worker_control_wait(struct worker *w, uint64_t deadline_ms, struct worker_ans *ans);

/* Main thread, before worker_start(): the messages on hold at start-up (sorted or not). */
int worker_hold_preload(struct worker *w, const uint64_t *ids, size_t n);

/* Prepare a worker (main thread): tables, the Maildirs of every route of snap; takes a
   reference on snap. 0 or -errno; the reason is logged here (event=fatal). */
int worker_init(struct worker *w, unsigned index, struct snapshot *snap, struct q_mesh *in,
                struct q_mesh *out);
/* Create and open the Maildirs cfg's routes name that are not open yet (main thread, at
   start-up and before a reload is offered; may block). 0, or -errno with err naming it. */
int worker_maildirs(const struct ringmail_config *cfg, char *err, size_t errlen);
/* Start its thread and wait until its ring is set up. 0 or -errno. */
int worker_start(struct worker *w);
/* Ask it to stop once it holds nothing in flight (any thread), then join it. */
void worker_stop(struct worker *w);
void worker_join(struct worker *w);
/* The in-mesh notify hook: wakes a sleeping worker (any thread). */
void worker_notify(void *arg);

#endif
