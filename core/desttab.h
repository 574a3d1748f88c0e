/*
 * desttab.h: a thread's per-destination metrics, published for /metrics.
 *
 * A delivery worker owns its destinations (net/worker.c struct dest) and
 * publishes, for each, a slot with the destination's name (the route's first
 * next hop, as the log's relay= shows it), its active sessions (a gauge) and
 * its deferred recipients (a counter). The table is bounded: DESTTAB_MAX
 * named slots; destinations beyond them share the `other` slot. Two
 * destinations whose names are equal (or equal once truncated to
 * DESTTAB_NAME - 1 octets) share one slot, so a name appears once per table.
 *
 * Threads: one writer, the owner, for everything. A slot's name is written
 * once, before the slot is published by a release store of `n`, and never
 * rewritten; a reader (the scrape, on the main thread) loads `n` with acquire
 * and reads the names of slots [0, n) without tearing. The counters are
 * relaxed atomics updated with a load and a store (no locked instruction).
 * A slot is never taken back: a destination that goes away leaves its slot
 * (its gauge back at 0, its counter where it was).
 */
#ifndef RINGMAIL_CORE_DESTTAB_H
#define RINGMAIL_CORE_DESTTAB_H

#include <stdatomic.h>
#include <stdint.h>

#define DESTTAB_MAX   64u
#define DESTTAB_NAME  96u
#define DESTTAB_OTHER DESTTAB_MAX /* the slot index of "other" */

struct desttab_slot {
    char name[DESTTAB_NAME];    /* immutable once published */
    _Atomic uint64_t active;    /* sessions (or Maildir jobs) working for it now */
    _Atomic uint64_t deferrals; /* recipients deferred */
};

struct desttab {
    _Atomic unsigned n;                        /* slots published */
    struct desttab_slot slot[DESTTAB_MAX + 1]; /* [DESTTAB_OTHER] is "other" */
};

/* Owner: the slot for name: the published one with that name, a new one, or
   DESTTAB_OTHER when the table is full. Costs a scan of the names: call it when a
   destination is made, not per message. */
unsigned desttab_slot(struct desttab *t, const char *name);

/* Owner: active += delta (delta may be negative). */
static inline void
desttab_active(struct desttab *t, unsigned i, int delta)
{
    _Atomic uint64_t *p = &t->slot[i].active;

    atomic_store_explicit(p,
                          atomic_load_explicit(p, memory_order_relaxed) + (uint64_t)(int64_t)delta,
                          memory_order_relaxed);
}

/* Owner: deferrals += n. */
static inline void
desttab_deferred(struct desttab *t, unsigned i, uint64_t n)
{
    _Atomic uint64_t *p = &t->slot[i].deferrals;

    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Any thread: how many named slots may be read ([0, n): names stable). */
static inline unsigned
desttab_published(const struct desttab *t)
{
    return atomic_load_explicit(&t->n, memory_order_acquire);
}

#endif
