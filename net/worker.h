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
#include "core/smtp_client.h"
#include "net/logbuf.h"
#include "net/snapshot.h"
#include "queue/delivery.h"
#include "queue/ring.h"

struct worker;
struct dest;
struct ssl_ctx_st;

struct worker_stats {
    /* written by the owning worker only (relaxed), read by anyone */
    _Atomic uint64_t delivered, deferred, failed, sessions, connect_errors, loops;
    _Atomic uint64_t tls_handshakes, tls_failures;
};

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

    /* control requests from the main thread (ringmail queue flush|delete): main writes
       ctl_op/ctl_id, then publishes ctl_req (release); the worker answers in ctl_result
       and publishes ctl_ack = ctl_req (release) */
    int ctl_op; /* enum worker_ctl */
    uint64_t ctl_id;
    atomic_uint ctl_req, ctl_ack;
    atomic_uint ctl_result;
    unsigned ctl_seen;

    struct worker_stats stats;
};

enum worker_ctl {
    WORKER_CTL_FLUSH = 0, /* retry every deferred delivery now; result: how many */
    WORKER_CTL_DELETE,    /* drop message ctl_id's waiting deliveries; result: how many */
};

/* Main thread: run a control request on w and wait (bounded) for its result; -ETIMEDOUT. */
int worker_control(struct worker *w, enum worker_ctl op, uint64_t id, unsigned *result);

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
