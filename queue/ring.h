/*
 * ring.h: the lock-free queues between threads (DESIGN.md "queue/ring i->j").
 *
 * struct q_ring  a bounded single-producer/single-consumer ring of pointers.
 * struct q_mesh  R producers x W consumers, one q_ring per (producer, consumer)
 *                pair, with a sleep/notify protocol so that a consumer may block
 *                (on an eventfd, or in io_uring_enter) without missing an item.
 *
 * Direction: reactors push message handles to outbound workers through one
 * q_mesh (producers = reactors, consumers = workers); workers push completion
 * notices back through a second q_mesh (producers = workers, consumers =
 * reactors). Nothing else is needed for the way back.
 *
 * Ownership: a successful push moves the pointed-to object to the consumer;
 * after -EAGAIN (ring full) the caller still owns it and must answer
 * 451 4.3.x or stop reading (back-pressure), never block or spin. The rings
 * store pointers only and never dereference them; any value, NULL included,
 * goes through unchanged.
 *
 * Memory orders, in short (ring.c has the full reasoning):
 *  - a slot is written by the producer before its release store of `tail`,
 *    and read by the consumer after its acquire load of `tail`;
 *  - a slot is read by the consumer before its release store of `head`, and
 *    overwritten by the producer only after its acquire load of `head`;
 *  - each side keeps a private copy of the other side's index and reloads it
 *    only when the copy says full (producer) or empty (consumer), so in the
 *    steady state neither side reads the other's cache line;
 *  - the mesh sleep protocol is a Dekker pair made of four seq_cst accesses:
 *    consumer `sleeping = 1; load tail`, producer `store tail; load sleeping`.
 *
 * Thread affinity is stated on every function. "Producer thread" means the
 * one thread that pushes into that ring (for a mesh: producer index p);
 * "consumer thread" the one that pops from it.
 */
#ifndef RINGMAIL_QUEUE_RING_H
#define RINGMAIL_QUEUE_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/compiler.h"

#define Q_RING_MAX_CAPACITY ((size_t)1 << 24) /* 16 Mi slots, 128 MiB of pointers */
#define Q_MESH_MAX_THREADS  256u              /* per side */

/*
 * head and tail are free-running counters (they are never masked in place),
 * so tail - head is the fill level even after they wrap around SIZE_MAX, and
 * a full ring needs no sacrificed slot: capacity 1 holds one item.
 *
 * Invariants: 0 <= tail - head <= mask + 1; slots[i & mask] for head <= i <
 * tail hold the items in FIFO order; head_cache <= head and tail_cache <= tail
 * (modulo the wrap), each a value the other side once published.
 *
 * Layout: three cache lines, so the producer's stores (tail) never invalidate
 * the line the consumer writes (head) and vice versa; the first line is
 * read-only after q_ring_init() and is shared by both without traffic.
 * Anything that allocates a struct q_ring must honour its 64-byte alignment
 * (aligned_alloc(), not malloc(): q_mesh_init() does).
 */
struct q_ring {
    alignas(CACHELINE) void **slots; /* capacity pointers; read-only after init */
    size_t mask;                     /* capacity - 1; capacity is a power of two */

    /* producer's line: written only by the producer thread */
    alignas(CACHELINE) atomic_size_t tail; /* next slot to fill; read by the consumer */
    size_t head_cache;                     /* producer's last view of head */

    /* consumer's line: written only by the consumer thread */
    alignas(CACHELINE) atomic_size_t head; /* next slot to take; read by the producer */
    size_t tail_cache;                     /* consumer's last view of tail */
};

/*
 * Set up an empty ring of `capacity` slots. Returns 0, -EINVAL if capacity
 * is 0, not a power of two or above Q_RING_MAX_CAPACITY, or -ENOMEM.
 * Call before the ring is shared; starting the threads (pthread_create)
 * publishes the initialised ring to them.
 */
int q_ring_init(struct q_ring *r, size_t capacity);

/*
 * Free the slot array. Items still in the ring are not freed: drain it
 * first if they own memory. Call after both threads have stopped using it.
 */
void q_ring_fini(struct q_ring *r);

static inline size_t
q_ring_capacity(const struct q_ring *r)
{
    return r->mask + 1;
}

/*
 * Producer thread only. Returns 0 (ownership of *item moves to the consumer)
 * or -EAGAIN if the ring is full (the caller keeps it). Never blocks, never
 * spins, never allocates.
 */
int q_ring_push(struct q_ring *r, void *item);

/*
 * Producer thread only. Pushes items[0..k) for the largest k <= n that fits
 * and returns k (0 when full); the caller keeps items[k..n). The batch is
 * published with one store, so the consumer sees all k or none of them.
 */
size_t q_ring_push_n(struct q_ring *r, void *const *items, size_t n);

/*
 * Consumer thread only. Returns 0 and the oldest item in *item (now owned by
 * the caller), or -EAGAIN if the ring is empty (*item untouched).
 */
int q_ring_pop(struct q_ring *r, void **item);

/*
 * Consumer thread only. Takes up to n of the oldest items into items[], in
 * FIFO order, and returns how many (0 when empty); one release store frees
 * all their slots.
 */
size_t q_ring_pop_n(struct q_ring *r, void **items, size_t n);

/*
 * Any thread. The fill level at some instant during the call, clamped to the
 * capacity: approximate as soon as the other threads move, so use it for
 * metrics and heuristics, never to decide that a push or pop will succeed.
 */
size_t q_ring_count(const struct q_ring *r);

/* ---- mesh: R producers x W consumers ---- */

/*
 * Wake-up hook, run on a producer's thread (see q_mesh_set_notify()). It must
 * not block and must tolerate concurrent calls from several producers, e.g.
 * write(2) to an eventfd, or io_uring_prep_msg_ring() on the calling
 * thread's own ring.
 */
typedef void q_mesh_notify_fn(void *arg);

/* One per consumer. */
struct q_mesh_consumer {
    /*
     * Read by every producer after every push, written by the consumer only
     * around a sleep and cleared by the producer that wakes it: read-mostly,
     * so sharing it costs nothing in the steady state.
     */
    alignas(CACHELINE) atomic_uint sleeping;
    q_mesh_notify_fn *notify; /* NULL: the consumer never sleeps; set before start */
    void *notify_arg;

    /* consumer-private, on its own line so its stores do not disturb `sleeping` */
    alignas(CACHELINE) unsigned next; /* round-robin cursor: the ring served first */
};

/*
 * rings[c * producers + p] carries producer p's items to consumer c, so one
 * consumer's rings are contiguous. Every field here is read-only after init.
 */
struct q_mesh {
    struct q_ring *rings;
    struct q_mesh_consumer *cons;
    unsigned producers;
    unsigned consumers;
};

/*
 * Set up `producers` x `consumers` empty rings of `capacity` slots each.
 * Returns 0, -EINVAL (a count is 0 or above Q_MESH_MAX_THREADS, or the
 * capacity is invalid, see q_ring_init()) or -ENOMEM. On error nothing is
 * left allocated. Call before the threads start.
 */
int q_mesh_init(struct q_mesh *m, unsigned producers, unsigned consumers, size_t capacity);

/* Free everything (not the items still queued). Call after every thread has stopped. */
void q_mesh_fini(struct q_mesh *m);

/*
 * Register consumer c's wake-up hook; fn may be NULL (no wake-ups: the
 * consumer polls). Setup time only: call before the producer threads start
 * (thread creation publishes it), never while they run; the field is
 * deliberately plain, not atomic, so the push path does not pay for it.
 */
void q_mesh_set_notify(struct q_mesh *m, unsigned consumer, q_mesh_notify_fn *fn, void *arg);

/*
 * Producer thread `producer` only. Pushes item to consumer `consumer`:
 * returns 0 (ownership moves) or -EAGAIN when that ring is full (the caller
 * keeps it). If the consumer announced it is going to sleep, the push clears
 * its flag and calls its notify hook, once per sleep whichever producer
 * gets there first. An index out of range is a bug: BUG_ON.
 */
int q_mesh_push(struct q_mesh *m, unsigned producer, unsigned consumer, void *item);

/*
 * Producer thread `producer` only. As q_ring_push_n(): pushes items[0..k),
 * returns k, the caller keeps the rest; one publication and at most one
 * notify for the whole batch.
 */
size_t q_mesh_push_n(struct q_mesh *m, unsigned producer, unsigned consumer, void *const *items,
                     size_t n);

/*
 * Consumer thread `consumer` only. Takes up to max items from the consumer's
 * R rings and returns how many (0: all of them were empty when looked at).
 * Fair: each ring gets an equal share of the batch first, in round-robin
 * order starting one ring later on every call, and only room the others left
 * unused goes to the busier rings, so one busy producer cannot starve the
 * others. Items from one producer come out in the order it pushed them;
 * items from different producers have no defined order.
 */
size_t q_mesh_pop_batch(struct q_mesh *m, unsigned consumer, void **items, size_t max);

/*
 * The sleep protocol (consumer thread `consumer` only):
 *
 *     for (;;) {
 *         n = q_mesh_pop_batch(m, c, items, max);
 *         if (n > 0) { handle(items, n); continue; }
 *         if (!q_mesh_prepare_sleep(m, c))
 *             continue;                    // an item raced in: pop it
 *         block until notified;            // read(eventfd), io_uring_enter, ...
 *         q_mesh_end_sleep(m, c);
 *     }
 *
 * q_mesh_prepare_sleep() stores sleeping = 1, then looks at every ring once
 * more. It returns true if all were empty: from then on the next push to
 * this consumer calls its notify hook, so it may block. It returns false
 * (and clears the flag) if an item is pending: pop again instead.
 *
 * Why no item is missed: the consumer does [store sleeping = 1; load tail]
 * and the producer [store tail; load sleeping], all seq_cst. In the single
 * total order of seq_cst operations one of the two stores comes first, so
 * either the consumer's load sees the new tail (it does not sleep) or the
 * producer's load sees sleeping = 1 (it notifies). Both missing each other
 * is the store-buffering outcome that seq_cst forbids and release/acquire
 * alone allows, which is why these four accesses are seq_cst.
 *
 * A notify may arrive for an item the consumer already took (a spurious
 * wake-up): it then finds nothing and sleeps again. Wake-ups are never lost,
 * and never more than one per sleep per consumer unless the consumer woke
 * for another reason first. An eventfd, whose counter remembers a write made
 * before the read, fits; a plain condition variable needs its own lock.
 */
bool q_mesh_prepare_sleep(struct q_mesh *m, unsigned consumer);

/*
 * Consumer thread only: after waking, for whatever reason. Clears the flag so
 * that producers stop notifying a consumer that is awake (the producer that
 * woke it has already cleared it; this covers the other wake-up causes).
 * Optional for correctness, it only saves needless notifies.
 */
void q_mesh_end_sleep(struct q_mesh *m, unsigned consumer);

/* Any thread: the approximate number of items waiting for consumer c (see q_ring_count()). */
size_t q_mesh_count(const struct q_mesh *m, unsigned consumer);

/*
 * The consumer (worker) that owns a route: a stable map from a 64-bit hash
 * to [0, workers), uniform for a well-mixed hash (XXH3 of the route's
 * destination), without a division. Stable means that for a given hash and
 * worker count the answer never changes, so every message for one
 * destination goes to the same worker, whose connection pool and
 * concurrency limit for that destination then live in one place and are
 * reused. Changing `workers` (a restart or reload with another count) remaps
 * most routes. workers must be >= 1.
 */
static inline unsigned
q_shard_of(uint64_t hash, unsigned workers)
{
    BUG_ON(workers == 0);
    /* Lemire's multiply-shift on the top 32 bits: (h / 2^32) * workers < 2^64 */
    return (unsigned)(((hash >> 32) * (uint64_t)workers) >> 32);
}

#endif
