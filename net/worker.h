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
#include "core/smtp_client.h"
#include "net/logbuf.h"
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

struct worker {
    unsigned index;
    const struct ringmail_config *cfg;
    struct q_mesh *in;  /* reactors -> workers: this worker is consumer `index` */
    struct q_mesh *out; /* workers -> reactors: this worker is producer `index` */
    pthread_t thread;
    atomic_bool stop;
    atomic_int started; /* 0 starting, 1 running, -errno failed */
    int wake_fd;        /* eventfd: producers' notify hook and stop write to it */
    uint64_t wake_buf;

    struct io_uring ring;
    struct logbuf log;
    uint64_t now_ms, wall_ms;
    bool stopping;

    /* the delivery side's TLS context (NULL: smtp_tls_security_level none), one for the
       process, shared read-only by every worker (SSL_new takes its own reference) */
    struct ssl_ctx_st *tls_ctx;

    struct dest **dtab; /* destinations by route hash */
    unsigned dtab_mask;
    unsigned ndest;

    struct osess **sess; /* session slots, user_data index */
    uint32_t nsess, sess_used;
    struct mdjob **jobs; /* maildir job slots */
    uint32_t njobs;

    struct delivery *retry;             /* deferred deliveries, by due time */
    struct delivery *done, **done_tail; /* completions the owner's ring had no room for */
    uint64_t next_tick_ms;
    uint64_t seq; /* maildir file names */

    /* control requests from the main thread (ringmail queue flush|delete): main writes
       ctl_op/ctl_id, then publishes ctl_req (release); the worker answers in ctl_result
       and publishes ctl_ack = ctl_req (release) */
    int ctl_op; /* enum worker_ctl */
    uint64_t ctl_id;
    atomic_uint ctl_req, ctl_ack;
    atomic_uint ctl_result;
    unsigned ctl_seen;

    struct worker_stats stats;
    /* the next worker of the array (calloc'd, not cache-line aligned) starts at least a cache
       line past our counters, so no line holds both this thread's counters and fields the
       next thread writes */
    char stats_pad[64];
};

enum worker_ctl {
    WORKER_CTL_FLUSH = 0, /* retry every deferred delivery now; result: how many */
    WORKER_CTL_DELETE,    /* drop message ctl_id's waiting deliveries; result: how many */
};

/* Main thread: run a control request on w and wait (bounded) for its result; -ETIMEDOUT. */
int worker_control(struct worker *w, enum worker_ctl op, uint64_t id, unsigned *result);

/* Prepare a worker (main thread): tables, the Maildirs of every route, the TLS client
   context (smtp_tls_CAfile). 0 or -errno; the reason is logged here (event=fatal). */
int worker_init(struct worker *w, unsigned index, const struct ringmail_config *cfg,
                struct q_mesh *in, struct q_mesh *out);
/* Start its thread and wait until its ring is set up. 0 or -errno. */
int worker_start(struct worker *w);
/* Ask it to stop once it holds nothing in flight (any thread), then join it. */
void worker_stop(struct worker *w);
void worker_join(struct worker *w);
/* The in-mesh notify hook: wakes a sleeping worker (any thread). */
void worker_notify(void *arg);

#endif
