/*
 * reload.h: handing a new configuration snapshot to the running threads.
 */
#ifndef RINGMAIL_NET_RELOAD_H
#define RINGMAIL_NET_RELOAD_H

#include "net/reactor.h"
#include "net/snapshot.h"
#include "net/worker.h"

/*
 * Offer s to every reactor (each takes a reference) and wait until each has
 * adopted it (bounded: RELOAD_WAIT_MS), then to every worker, and wait for
 * them too. Reactors go first so that a delivery a worker gives back to be
 * routed again is routed under the new configuration. 0, or -ETIMEDOUT when
 * a thread did not adopt it in time (it does at its next turn). Main thread:
 * the admin endpoint waits meanwhile, RELOAD_WAIT_MS at most in all (a
 * thread adopts within one loop turn, 100 ms at most when idle).
 */
#define RELOAD_WAIT_MS 2000
int reload_publish(struct reactor *r, unsigned n, struct worker *w, unsigned nw,
                   struct snapshot *s);

#endif
