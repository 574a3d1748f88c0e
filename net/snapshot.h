/*
 * snapshot.h: the configuration in service, as counted, immutable snapshots.
 *
 * SIGHUP loads and checks a new configuration (the main thread); when it is
 * good it becomes a new snapshot and is handed to every reactor and worker,
 * each of which adopts it at the top of its next loop turn. Nothing in a
 * snapshot changes after it is published, so any thread reads it without a
 * lock. Whoever keeps a pointer into a snapshot holds a reference:
 *
 *   - the main thread, on the snapshot in service;
 *   - each reactor and each worker, on the one it adopted last;
 *   - each SMTP session, on the one it started under (it finishes under it);
 *   - each delivery, on the one its route points into (queue/delivery.h);
 *   - each worker destination, on the one its route points into.
 *
 * The last snapshot_put() frees it, from whatever thread: a snapshot is
 * plain memory plus the outbound TLS context built for it. References are
 * taken per connection and per delivery, never per line.
 */
#ifndef RINGMAIL_NET_SNAPSHOT_H
#define RINGMAIL_NET_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/limits.h"

struct ssl_ctx_st;

struct snapshot {
    struct ringmail_config cfg;
    struct limits_conf limits; /* the per-client limits, from cfg */
    struct ssl_ctx_st
        *client_ctx; /* outbound TLS (owned); NULL with smtp_tls_security_level none */
    uint64_t gen;    /* 1 for the start-up configuration, then +1 per reload */
    /* listening sockets for the listeners this snapshot adds (a reload): lfd[listener *
       nreactors + reactor], each taken (set to -1) by its reactor when it adopts the
       snapshot; whatever is left is closed with the snapshot. NULL at start-up. */
    int *lfd;
    unsigned nreactors;
    atomic_uint refs;
};

/*
 * A snapshot of *cfg (copied) with one reference: its limits filled in, the
 * outbound TLS context built when cfg wants one (smtp_tls_CAfile read here:
 * it may block). NULL with a message in err (naming the key) on failure.
 */
struct snapshot *snapshot_new(const struct ringmail_config *cfg, uint64_t gen, char *err,
                              size_t errlen);

/* Another reference (any thread; s may be NULL). Returns s. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* Drop a reference; the last one frees s (any thread; NULL is fine). */
void snapshot_put(struct snapshot *s);

/*
 * The handing over: the main thread puts a new snapshot (with a reference
 * for the receiver) in a thread's slot; the thread takes it at its next turn.
 * A snapshot still waiting in the slot when a newer one comes is dropped.
 */
void snapshot_offer(_Atomic(struct snapshot *) *slot, struct snapshot *s);
static inline struct snapshot *
snapshot_take(_Atomic(struct snapshot *) *slot)
{
    /* relaxed load first: the slot is empty on almost every turn */
    if (atomic_load_explicit(slot, memory_order_relaxed) == NULL)
        return NULL;
    return atomic_exchange_explicit(slot, NULL, memory_order_acq_rel);
}

/* Do a and b route mail the same way (routes, relayhost, default_route)? */
bool snapshot_same_routes(const struct ringmail_config *a, const struct ringmail_config *b);

/*
 * The route of `to` that is the same one as `route` of `from` (same place in
 * the configuration): only meaningful when snapshot_same_routes(from, to).
 */
const void *snapshot_route_in(const struct snapshot *from, const void *route,
                              const struct snapshot *to);

#endif
