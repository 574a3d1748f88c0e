/*
 * ring.c: the SPSC ring of pointers and the R x W mesh built from it.
 *
 * Thread affinity: a q_ring has exactly one producer thread and one consumer
 * thread; q_ring_count() may run anywhere. In a q_mesh, producer p is the only
 * thread that pushes into rings[c * R + p] for every c, and consumer c the only
 * one that pops rings[c * R + 0 .. R). Init, fini and set_notify run while no
 * other thread uses the object.
 *
 * Ownership: the rings move pointers and never look behind them; a pushed
 * object belongs to the consumer from the publishing store on.
 *
 * Memory orders. Each shared index has one writer:
 *
 *   tail  written by the producer (release; seq_cst in a mesh), read by the
 *         consumer (acquire) and by q_ring_count() (relaxed);
 *   head  written by the consumer (release), read by the producer (acquire)
 *         and by q_ring_count() (acquire).
 *
 * Slots are plain pointers, not atomics: every access to a slot is ordered by
 * one of the two release/acquire pairs, which is what ThreadSanitizer checks.
 *  1. producer writes slots[t], then releases tail = t + 1; the consumer
 *     acquires tail > t before reading slots[t] (and the object it points to);
 *  2. consumer reads slots[h], then releases head = h + 1; the producer
 *     acquires head > h before overwriting slots[h] with item h + capacity.
 * A thread's load of its own index is relaxed: it is the only writer.
 * The cached copies (head_cache, tail_cache) are private plain fields; a stale
 * copy only makes the ring look fuller or emptier than it is, which is safe,
 * and it is refreshed exactly when it would cause a false "full" or "empty".
 *
 * The mesh adds one flag per consumer and the Dekker pair described in
 * ring.h: the mesh's producer publishes tail with a seq_cst store, which is
 * also a release, so pair 1 holds unchanged. On x86 a seq_cst store is one
 * xchg instead of a mov; on arm64 it is the same stlr as a release.
 * atomic_thread_fence(seq_cst) would do as well in theory, but
 * ThreadSanitizer does not model fences (GCC warns with -Wtsan, an error
 * here), and the seq_cst store is cheaper than mov + mfence anyway.
 */
#include "queue/ring.h"

#include <errno.h>
#include <stdlib.h>

#include "core/compiler.h"

/* ---- SPSC ring ---- */

int
q_ring_init(struct q_ring *r, size_t capacity)
{
    size_t bytes;
    void **slots;

    if (capacity == 0 || capacity > Q_RING_MAX_CAPACITY || (capacity & (capacity - 1)) != 0)
        return -EINVAL;
    /* aligned_alloc wants a multiple of the alignment (C11 7.22.3.1) */
    bytes = (capacity * sizeof(*slots) + CACHELINE - 1) & ~(size_t)(CACHELINE - 1);
    slots = aligned_alloc(CACHELINE, bytes);
    if (slots == NULL)
        return -ENOMEM;
    r->slots = slots;
    r->mask = capacity - 1;
    atomic_init(&r->tail, 0);
    r->head_cache = 0;
    atomic_init(&r->head, 0);
    r->tail_cache = 0;
    return 0;
}

void
q_ring_fini(struct q_ring *r)
{
    free(r->slots);
    r->slots = NULL;
}

/*
 * Producer: free slots from tail on, at least `want` of them if the ring has
 * that many. The cached head is trusted while it shows enough room; only
 * then is the consumer's line read.
 */
static inline size_t
ring_room(struct q_ring *r, size_t tail, size_t want)
{
    size_t cap = r->mask + 1;
    size_t room = cap - (tail - r->head_cache);

    if (room < want) {
        /*
         * acquire: pairs with the consumer's release store of head in
         * ring_take(): its reads of every slot below head happen before we
         * overwrite them.
         */
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        room = cap - (tail - r->head_cache);
    }
    return room;
}

/*
 * Producer: copy up to n items in and publish them with a single store.
 * seq_cst is for the mesh's sleep protocol (see q_mesh_prepare_sleep()).
 */
static size_t
ring_put(struct q_ring *r, void *const *items, size_t n, bool seq_cst)
{
    /* relaxed: tail is ours, no other thread writes it */
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t room = ring_room(r, t, n); /* not inside MIN(): it would run twice */
    size_t k = MIN(n, room);

    if (k == 0)
        return 0;
    for (size_t i = 0; i < k; i++)
        r->slots[(t + i) & r->mask] = items[i];
    /*
     * release: publishes slots[t .. t + k) and the objects they point to;
     * pairs with the consumer's acquire load of tail in ring_avail() (and
     * with the seq_cst load in q_mesh_prepare_sleep()). The seq_cst variant
     * is a release too, and also takes part in the mesh's Dekker pair with
     * q_mesh_prepare_sleep(): see mesh_wake().
     */
    if (seq_cst)
        atomic_store_explicit(&r->tail, t + k, memory_order_seq_cst);
    else
        atomic_store_explicit(&r->tail, t + k, memory_order_release);
    return k;
}

/* Consumer: items available from head on, refreshing the cached tail if it shows fewer than want.
 */
static inline size_t
ring_avail(struct q_ring *r, size_t head, size_t want)
{
    size_t avail = r->tail_cache - head;

    if (avail < want) {
        /*
         * acquire: pairs with the producer's release (or seq_cst) store of
         * tail in ring_put(): the slots below tail, and what they point to,
         * were written before it.
         */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        avail = r->tail_cache - head;
    }
    return avail;
}

/* Consumer: take up to n items and free their slots with a single store. */
static size_t
ring_take(struct q_ring *r, void **items, size_t n)
{
    /* relaxed: head is ours, no other thread writes it */
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t avail = ring_avail(r, h, n); /* not inside MIN(): it would run twice */
    size_t k = MIN(n, avail);

    if (k == 0)
        return 0;
    for (size_t i = 0; i < k; i++)
        items[i] = r->slots[(h + i) & r->mask];
    /*
     * release: our reads of slots[h .. h + k) happen before the producer
     * reuses them; pairs with its acquire load of head in ring_room() (and
     * with the acquire load in q_ring_count()).
     */
    atomic_store_explicit(&r->head, h + k, memory_order_release);
    return k;
}

int
q_ring_push(struct q_ring *r, void *item)
{
    return ring_put(r, &item, 1, false) == 1 ? 0 : -EAGAIN;
}

size_t
q_ring_push_n(struct q_ring *r, void *const *items, size_t n)
{
    return ring_put(r, items, n, false);
}

int
q_ring_pop(struct q_ring *r, void **item)
{
    return ring_take(r, item, 1) == 1 ? 0 : -EAGAIN;
}

size_t
q_ring_pop_n(struct q_ring *r, void **items, size_t n)
{
    return ring_take(r, items, n);
}

size_t
q_ring_count(const struct q_ring *r)
{
    /*
     * acquire: pairs with the consumer's release store of head in
     * ring_take(). The consumer had seen tail >= h before storing head = h,
     * so after synchronising with that store our tail load cannot return
     * less (read-read coherence): t - h never underflows. It can exceed the
     * capacity (the producer may have seen a newer head than ours), hence
     * the clamp.
     */
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    /* relaxed: only a number is read, no slot behind it */
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);

    return MIN(t - h, r->mask + 1);
}

/* ---- mesh ---- */

static inline struct q_ring *
mesh_ring(const struct q_mesh *m, unsigned producer, unsigned consumer)
{
    return &m->rings[(size_t)consumer * m->producers + producer];
}

int
q_mesh_init(struct q_mesh *m, unsigned producers, unsigned consumers, size_t capacity)
{
    size_t nrings = (size_t)producers * consumers;
    size_t i;
    int rc;

    if (producers == 0 || consumers == 0 || producers > Q_MESH_MAX_THREADS ||
        consumers > Q_MESH_MAX_THREADS)
        return -EINVAL;
    /* sizes are multiples of CACHELINE: both structs are 64-byte aligned */
    m->rings = aligned_alloc(CACHELINE, nrings * sizeof(*m->rings));
    if (m->rings == NULL)
        return -ENOMEM;
    m->cons = aligned_alloc(CACHELINE, consumers * sizeof(*m->cons));
    if (m->cons == NULL) {
        rc = -ENOMEM;
        goto fail_rings;
    }
    m->producers = producers;
    m->consumers = consumers;
    for (i = 0; i < nrings; i++) {
        rc = q_ring_init(&m->rings[i], capacity);
        if (rc < 0)
            goto fail_ring_init;
    }
    for (unsigned c = 0; c < consumers; c++) {
        atomic_init(&m->cons[c].sleeping, 0);
        m->cons[c].notify = NULL;
        m->cons[c].notify_arg = NULL;
        m->cons[c].next = 0;
    }
    return 0;

fail_ring_init:
    while (i-- > 0)
        q_ring_fini(&m->rings[i]);
    free(m->cons);
    m->cons = NULL;
fail_rings:
    free(m->rings);
    m->rings = NULL;
    return rc;
}

void
q_mesh_fini(struct q_mesh *m)
{
    size_t nrings = (size_t)m->producers * m->consumers;

    if (m->rings != NULL) {
        for (size_t i = 0; i < nrings; i++)
            q_ring_fini(&m->rings[i]);
    }
    free(m->rings);
    m->rings = NULL;
    free(m->cons);
    m->cons = NULL;
}

void
q_mesh_set_notify(struct q_mesh *m, unsigned consumer, q_mesh_notify_fn *fn, void *arg)
{
    BUG_ON(consumer >= m->consumers);
    m->cons[consumer].notify = fn;
    m->cons[consumer].notify_arg = arg;
}

/*
 * Producer, after a publishing seq_cst store of tail (ring_put()).
 *
 * The load is the producer's half of the Dekker pair: [store tail (seq_cst);
 * load sleeping (seq_cst)] against the consumer's [store sleeping = 1
 * (seq_cst); load tail (seq_cst)] in q_mesh_prepare_sleep(). If our load
 * returns 0, it precedes the consumer's store of 1 in the seq_cst total
 * order S, so our tail store does too, and the consumer's later tail load
 * sees it: that consumer will not sleep on our item. (A 0 written by the
 * consumer's q_mesh_end_sleep() means it is awake and will look again
 * before its next sleep, the same way.) The plain load is the fast path: in
 * the steady state the flag's line stays shared in every cache.
 *
 * If it returns 1, the exchange (seq_cst, so it is ordered in S with the
 * consumer's stores of the flag) elects one notifier per sleep: a producer
 * that gets 0 back lost to another producer, which notifies, or to the
 * consumer's own q_mesh_end_sleep() or failed q_mesh_prepare_sleep(); the
 * consumer is then awake and will look at our ring again before it sleeps,
 * since its next store of 1 comes after that 0 and so after our tail store
 * in S.
 */
static inline void
mesh_wake(struct q_mesh_consumer *mc)
{
    if (atomic_load_explicit(&mc->sleeping, memory_order_seq_cst) == 0)
        return;
    if (atomic_exchange_explicit(&mc->sleeping, 0, memory_order_seq_cst) == 0)
        return;
    if (mc->notify != NULL)
        mc->notify(mc->notify_arg);
}

int
q_mesh_push(struct q_mesh *m, unsigned producer, unsigned consumer, void *item)
{
    return q_mesh_push_n(m, producer, consumer, &item, 1) == 1 ? 0 : -EAGAIN;
}

size_t
q_mesh_push_n(struct q_mesh *m, unsigned producer, unsigned consumer, void *const *items, size_t n)
{
    size_t k;

    BUG_ON(producer >= m->producers || consumer >= m->consumers);
    k = ring_put(mesh_ring(m, producer, consumer), items, n, true);
    if (k > 0)
        mesh_wake(&m->cons[consumer]);
    return k;
}

size_t
q_mesh_pop_batch(struct q_mesh *m, unsigned consumer, void **items, size_t max)
{
    struct q_mesh_consumer *mc;
    struct q_ring *rings;
    unsigned nr = m->producers;
    unsigned start;
    size_t got = 0;
    bool more;

    BUG_ON(consumer >= m->consumers);
    mc = &m->cons[consumer];
    rings = mesh_ring(m, 0, consumer);
    start = mc->next;
    mc->next = start + 1 == nr ? 0 : start + 1;
    /*
     * Each pass offers every ring an equal share of the room left, starting
     * at `start`; a ring that filled its share may have more, so another
     * pass hands the room the quieter rings left to the busy ones. Each pass
     * that continues took at least one item, so this ends within max passes,
     * in practice two or three.
     */
    do {
        size_t share = (max - got + nr - 1) / nr;
        unsigned i = start;

        more = false;
        for (unsigned left = nr; left > 0 && got < max; left--) {
            size_t want = MIN(share, max - got);
            size_t k = ring_take(&rings[i], items + got, want);

            got += k;
            if (k == want)
                more = true; /* this ring may hold more */
            i = i + 1 == nr ? 0 : i + 1;
        }
    } while (more && got < max);
    return got;
}

bool
q_mesh_prepare_sleep(struct q_mesh *m, unsigned consumer)
{
    struct q_mesh_consumer *mc;
    struct q_ring *rings;

    BUG_ON(consumer >= m->consumers);
    mc = &m->cons[consumer];
    rings = mesh_ring(m, 0, consumer);
    /*
     * seq_cst: the consumer's half of the Dekker pair with mesh_wake(). This
     * store precedes the tail loads below in S, so a producer whose tail
     * store comes later in S reads sleeping = 1 and notifies; one whose
     * tail store comes earlier is seen by the loads below.
     */
    atomic_store_explicit(&mc->sleeping, 1, memory_order_seq_cst);
    for (unsigned p = 0; p < m->producers; p++) {
        struct q_ring *r = &rings[p];
        /* relaxed: head is ours */
        size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        /*
         * seq_cst: the Dekker load (see above); also an acquire pairing with
         * the producer's store in ring_put(), so it may refresh the cache.
         */
        size_t t = atomic_load_explicit(&r->tail, memory_order_seq_cst);

        if (t != h) {
            r->tail_cache = t;
            /* seq_cst: keeps the flag's stores in S, see mesh_wake() */
            atomic_store_explicit(&mc->sleeping, 0, memory_order_seq_cst);
            return false;
        }
    }
    return true;
}

void
q_mesh_end_sleep(struct q_mesh *m, unsigned consumer)
{
    BUG_ON(consumer >= m->consumers);
    /* seq_cst: keeps the flag's stores in S, see mesh_wake() */
    atomic_store_explicit(&m->cons[consumer].sleeping, 0, memory_order_seq_cst);
}

size_t
q_mesh_count(const struct q_mesh *m, unsigned consumer)
{
    const struct q_ring *rings;
    size_t n = 0;

    BUG_ON(consumer >= m->consumers);
    rings = mesh_ring(m, 0, consumer);
    for (unsigned p = 0; p < m->producers; p++)
        n += q_ring_count(&rings[p]);
    return n;
}
