/*
 * delivery.h: the objects that cross from reactors to outbound workers.
 *
 * A message that got its 250 becomes a struct qmsg, owned by the reactor
 * that spooled it (its "owner"), and one struct delivery per route its
 * recipients need (a message whose recipients go to two routes is delivered
 * twice, once per route). A delivery moves to the worker that serves its
 * route through the reactor x worker mesh (queue/ring.h), stays there until
 * every one of its recipients is delivered or failed (deferred ones are
 * retried there), and then moves back to the owner through the worker x
 * reactor mesh, which writes the DONE record and drops its reference.
 *
 * Ownership: one thread at a time owns a delivery (whoever popped it last).
 * The qmsg is shared read-only by its deliveries; its reference count is the
 * only field written by more than one thread, and only the owner frees it
 * (the last reference always comes back to the owner with a completion).
 */
#ifndef RINGMAIL_QUEUE_DELIVERY_H
#define RINGMAIL_QUEUE_DELIVERY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/envelope.h"
#include "queue/spool.h"

struct qmsg {
    atomic_uint refs;         /* deliveries not yet completed, plus the owner's while routing */
    unsigned owner;           /* index of the reactor that spooled it */
    void *seg;                /* the owner's segment object (opaque outside the owner) */
    int fd;                   /* that segment's file, open for reading while refs > 0 */
    uint64_t seed;            /* that segment's checksum seed */
    struct envelope env;      /* deep copy; immutable once the message is routed */
    struct spool_extent *ext; /* its DATA records */
    unsigned nextent;
    uint64_t arrival_ms;                /* wall clock */
    uint32_t nleft;                     /* recipients not finished yet (the owner's thread only) */
    struct qmsg *live_prev, *live_next; /* on the owner's list of queued messages (its thread
                                           only; net/handoff.c) */
};

enum dlv_state {
    DLV_PENDING = 0, /* not tried, or deferred and due again */
    DLV_DELIVERED,   /* the next hop took it */
    DLV_FAILED,      /* permanent failure: a bounce is owed */
};

#define DLV_DIAG_MAX 512

struct delivery {
    struct qmsg *msg;
    const void *route; /* the route (core/route.h), inside the configuration snapshot... */
    void *snap;        /* ...held here: a counted reference (net/snapshot.h) that whoever
                          frees the delivery drops */
    uint64_t route_hash;
    uint32_t nrcpt;
    uint32_t *rcpt;   /* indices into msg->env.rcpt */
    uint8_t *state;   /* enum dlv_state per recipient of this delivery */
    char **diag;      /* the last reply for a deferred or failed recipient, or NULL */
    uint8_t *success; /* per recipient: 0, or 1 + the DSN action (core/dsn.h) of a delivery
                         that may owe a success report (NOTIFY=SUCCESS); NULL when none */
    char *dsn;        /* the report (failures, successes), made by the worker (malloc'd) */
    size_t dsn_len;
    unsigned dsn_flags; /* DSN_OUT_F_* (core/dsn.h) */
    unsigned attempts;
    unsigned hop;     /* the route's next hop to try in this attempt (failover) */
    bool reroute;     /* given back unfinished after a reload changed the routes: the owner
                         routes its pending recipients again */
    uint64_t next_ms; /* monotonic: when a deferred delivery is due again */
    struct delivery *next;
};

/* A new message object holding a deep copy of env and ext (one reference). NULL on ENOMEM. */
struct qmsg *qmsg_new(unsigned owner, void *seg, int fd, uint64_t seed, const struct envelope *env,
                      const struct spool_extent *ext, unsigned nextent, uint64_t arrival_ms);
void qmsg_free(struct qmsg *m);

/* A delivery of msg's recipients rcpt[0..n) along route; takes a reference on msg. */
struct delivery *delivery_new(struct qmsg *msg, const void *route, uint64_t route_hash,
                              const uint32_t *rcpt, uint32_t n);
/* Frees the delivery, not the message; returns true when it held msg's last reference. */
bool delivery_free(struct delivery *d);

/* Record recipient i's reply text (copied, bounded) for logs and bounces. */
void delivery_set_diag(struct delivery *d, uint32_t i, const char *text);
/* Recipients still pending. */
uint32_t delivery_pending(const struct delivery *d);

/* Exponential backoff after `attempts` failed attempts, between min and max (ms). */
uint64_t delivery_backoff(unsigned attempts, uint64_t min_ms, uint64_t max_ms);

#endif
