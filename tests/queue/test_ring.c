/*
 * Tests for queue/ring.c: the SPSC ring (empty, full, wraparound of the slot
 * index and of the counters themselves, capacities 1 and 2, batches, count),
 * the mesh (routing, fair round-robin, per-producer order, the sleep/notify
 * protocol), q_shard_of(), and stress tests with real threads: SPSC single
 * and batched, an R x W mesh, and consumers that block on an eventfd.
 *
 * The stress tests are built for ThreadSanitizer as much as for their own
 * asserts: items point at payload the producer writes just before the push
 * and the consumer reads (and rewrites) just after the pop, so a missing
 * release/acquire pair is reported as a data race. Worker threads never call
 * cr_assert (it longjmps out of the test); they count errors that the main
 * thread asserts on after joining them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/compiler.h"
#include "queue/ring.h"

/* ThreadSanitizer slows atomics and syscalls by 5-20x: scale the stress tests down. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define SPSC_ITEMS   (UNDER_TSAN ? 1000000u : 4000000u)
#define MESH_ITEMS   (UNDER_TSAN ? 200000u : 1000000u) /* per producer */
#define NOTIFY_ITEMS (UNDER_TSAN ? 50000u : 200000u)   /* per producer */
#define DEADLINE_S   30                                /* a hang fails the test after this */

/* ---- helpers ---- */

static void *
u2p(uintptr_t v)
{
    return (void *)v;
}

static uintptr_t
p2u(const void *p)
{
    return (uintptr_t)p;
}

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t
splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Start every counter at `at`, to test wraparound of the counters themselves. */
static void
ring_set_index(struct q_ring *r, size_t at)
{
    atomic_store(&r->tail, at);
    r->head_cache = at;
    atomic_store(&r->head, at);
    r->tail_cache = at;
}

/* ---- SPSC: single-threaded behaviour ---- */

Test(ring, init_rejects_bad_capacity)
{
    static const size_t bad[] = {
        0, 3, 6, 100, Q_RING_MAX_CAPACITY + 1, Q_RING_MAX_CAPACITY * 2, SIZE_MAX
    };
    static const size_t good[] = { 1, 2, 4, 64, 4096 };
    struct q_ring r;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_eq(q_ring_init(&r, bad[i]), -EINVAL, "capacity %zu", bad[i]);
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        cr_assert_eq(q_ring_init(&r, good[i]), 0, "capacity %zu", good[i]);
        cr_expect_eq(q_ring_capacity(&r), good[i]);
        cr_expect_eq(q_ring_count(&r), 0);
        q_ring_fini(&r);
        cr_expect_null(r.slots);
    }
}

Test(ring, empty_pop_is_eagain_and_leaves_item)
{
    struct q_ring r;
    void *item = u2p(0xdead);

    cr_assert_eq(q_ring_init(&r, 8), 0);
    cr_expect_eq(q_ring_pop(&r, &item), -EAGAIN);
    cr_expect_eq(p2u(item), 0xdead);
    cr_expect_eq(q_ring_pop_n(&r, &item, 1), 0);
    cr_expect_eq(q_ring_count(&r), 0);
    q_ring_fini(&r);
}

Test(ring, full_push_is_eagain_then_fifo)
{
    struct q_ring r;
    void *item;

    cr_assert_eq(q_ring_init(&r, 8), 0);
    for (uintptr_t i = 1; i <= 8; i++)
        cr_assert_eq(q_ring_push(&r, u2p(i)), 0);
    cr_expect_eq(q_ring_count(&r), 8);
    cr_expect_eq(q_ring_push(&r, u2p(9)), -EAGAIN);
    cr_expect_eq(q_ring_count(&r), 8);
    cr_assert_eq(q_ring_pop(&r, &item), 0);
    cr_expect_eq(p2u(item), 1);
    cr_expect_eq(q_ring_push(&r, u2p(9)), 0, "one slot freed");
    cr_expect_eq(q_ring_push(&r, u2p(10)), -EAGAIN);
    for (uintptr_t i = 2; i <= 9; i++) {
        cr_assert_eq(q_ring_pop(&r, &item), 0);
        cr_expect_eq(p2u(item), i);
    }
    cr_expect_eq(q_ring_pop(&r, &item), -EAGAIN);
    q_ring_fini(&r);
}

Test(ring, null_item_goes_through)
{
    struct q_ring r;
    void *item = u2p(1);

    cr_assert_eq(q_ring_init(&r, 2), 0);
    cr_assert_eq(q_ring_push(&r, NULL), 0);
    cr_expect_eq(q_ring_count(&r), 1);
    cr_assert_eq(q_ring_pop(&r, &item), 0);
    cr_expect_null(item);
    q_ring_fini(&r);
}

Test(ring, capacity_1_holds_one_item)
{
    struct q_ring r;
    void *item;

    cr_assert_eq(q_ring_init(&r, 1), 0);
    for (uintptr_t i = 1; i <= 1000; i++) {
        cr_assert_eq(q_ring_push(&r, u2p(i)), 0);
        cr_assert_eq(q_ring_push(&r, u2p(~i)), -EAGAIN);
        cr_assert_eq(q_ring_count(&r), 1);
        cr_assert_eq(q_ring_pop(&r, &item), 0);
        cr_assert_eq(p2u(item), i);
        cr_assert_eq(q_ring_pop(&r, &item), -EAGAIN);
    }
    q_ring_fini(&r);
}

Test(ring, capacity_2_alternates_slots)
{
    struct q_ring r;
    void *item;
    uintptr_t in = 1, out = 1;

    cr_assert_eq(q_ring_init(&r, 2), 0);
    cr_assert_eq(q_ring_push(&r, u2p(in++)), 0);
    for (int i = 0; i < 1000; i++) {
        /* one item always in flight, so head and tail sit on different slots */
        cr_assert_eq(q_ring_push(&r, u2p(in++)), 0);
        cr_assert_eq(q_ring_push(&r, u2p(0)), -EAGAIN);
        cr_assert_eq(q_ring_count(&r), 2);
        cr_assert_eq(q_ring_pop(&r, &item), 0);
        cr_assert_eq(p2u(item), out++);
    }
    cr_assert_eq(q_ring_pop(&r, &item), 0);
    cr_assert_eq(p2u(item), out);
    cr_expect_eq(q_ring_pop(&r, &item), -EAGAIN);
    q_ring_fini(&r);
}

Test(ring, slot_index_wraps_around)
{
    struct q_ring r;
    void *item;
    uintptr_t in = 1, out = 1;

    cr_assert_eq(q_ring_init(&r, 4), 0);
    /* 3 in, 3 out: the fill position walks every slot many times */
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 3; i++)
            cr_assert_eq(q_ring_push(&r, u2p(in++)), 0);
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(q_ring_pop(&r, &item), 0);
            cr_assert_eq(p2u(item), out++);
        }
    }
    cr_expect_eq(q_ring_count(&r), 0);
    q_ring_fini(&r);
}

Test(ring, counters_wrap_at_size_max)
{
    struct q_ring r;
    void *items[8];
    uintptr_t in = 1, out = 1;

    cr_assert_eq(q_ring_init(&r, 8), 0);
    ring_set_index(&r, SIZE_MAX - 5);
    cr_expect_eq(q_ring_count(&r), 0);
    for (int round = 0; round < 4; round++) {
        /* fill it completely across the wrap, then drain */
        for (int i = 0; i < 8; i++)
            cr_assert_eq(q_ring_push(&r, u2p(in++)), 0);
        cr_assert_eq(q_ring_push(&r, u2p(0)), -EAGAIN);
        cr_assert_eq(q_ring_count(&r), 8);
        cr_assert_eq(q_ring_pop_n(&r, items, 3), 3);
        for (int i = 0; i < 3; i++)
            cr_assert_eq(p2u(items[i]), out++);
        cr_assert_eq(q_ring_count(&r), 5);
        cr_assert_eq(q_ring_pop_n(&r, items, 8), 5);
        for (int i = 0; i < 5; i++)
            cr_assert_eq(p2u(items[i]), out++);
        cr_assert_eq(q_ring_pop(&r, &items[0]), -EAGAIN);
    }
    cr_expect_lt(atomic_load(&r.tail), (size_t)64, "the counters did wrap");
    q_ring_fini(&r);
}

Test(ring, batch_push_and_pop_are_partial_and_fifo)
{
    struct q_ring r;
    void *in[16], *out[16];

    for (uintptr_t i = 0; i < 16; i++)
        in[i] = u2p(i + 1);
    cr_assert_eq(q_ring_init(&r, 8), 0);
    cr_expect_eq(q_ring_push_n(&r, in, 0), 0);
    cr_expect_eq(q_ring_push_n(&r, in, 5), 5);
    cr_expect_eq(q_ring_push_n(&r, in + 5, 5), 3, "only 3 fit");
    cr_expect_eq(q_ring_push_n(&r, in + 8, 1), 0, "full");
    cr_expect_eq(q_ring_count(&r), 8);
    cr_expect_eq(q_ring_pop_n(&r, out, 0), 0);
    cr_assert_eq(q_ring_pop_n(&r, out, 6), 6);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(out[i], in[i]);
    /* this batch crosses the end of the slot array */
    cr_expect_eq(q_ring_push_n(&r, in + 8, 8), 6);
    cr_assert_eq(q_ring_pop_n(&r, out, 16), 8, "pop_n stops at empty");
    for (int i = 0; i < 8; i++)
        cr_expect_eq(out[i], in[i + 6]);
    cr_expect_eq(q_ring_pop_n(&r, out, 16), 0);
    q_ring_fini(&r);
}

Test(ring, batch_push_is_seen_by_single_pop)
{
    struct q_ring r;
    void *in[4] = { u2p(1), u2p(2), u2p(3), u2p(4) }, *item;

    cr_assert_eq(q_ring_init(&r, 4), 0);
    cr_assert_eq(q_ring_push_n(&r, in, 4), 4);
    for (uintptr_t i = 1; i <= 4; i++) {
        cr_assert_eq(q_ring_pop(&r, &item), 0);
        cr_expect_eq(p2u(item), i);
        cr_expect_eq(q_ring_count(&r), 4 - i);
    }
    q_ring_fini(&r);
}

Test(ring, layout_keeps_sides_on_separate_lines)
{
    cr_expect_eq(_Alignof(struct q_ring), CACHELINE);
    cr_expect_geq(offsetof(struct q_ring, tail) - offsetof(struct q_ring, mask), sizeof(size_t));
    cr_expect_eq(offsetof(struct q_ring, tail) % CACHELINE, 0);
    cr_expect_eq(offsetof(struct q_ring, head) % CACHELINE, 0);
    cr_expect_neq(offsetof(struct q_ring, tail) / CACHELINE,
                  offsetof(struct q_ring, head) / CACHELINE);
    cr_expect_eq(offsetof(struct q_ring, head_cache) / CACHELINE,
                 offsetof(struct q_ring, tail) / CACHELINE);
    cr_expect_eq(offsetof(struct q_ring, tail_cache) / CACHELINE,
                 offsetof(struct q_ring, head) / CACHELINE);
    cr_expect_neq(offsetof(struct q_mesh_consumer, sleeping) / CACHELINE,
                  offsetof(struct q_mesh_consumer, next) / CACHELINE);
}

/* ---- mesh: single-threaded behaviour ---- */

Test(ring, mesh_init_rejects_bad_sizes)
{
    struct q_mesh m;

    cr_expect_eq(q_mesh_init(&m, 0, 2, 8), -EINVAL);
    cr_expect_eq(q_mesh_init(&m, 2, 0, 8), -EINVAL);
    cr_expect_eq(q_mesh_init(&m, Q_MESH_MAX_THREADS + 1, 1, 8), -EINVAL);
    cr_expect_eq(q_mesh_init(&m, 1, Q_MESH_MAX_THREADS + 1, 8), -EINVAL);
    cr_expect_eq(q_mesh_init(&m, 2, 2, 12), -EINVAL);
    cr_expect_null(m.rings, "nothing left allocated");
    cr_assert_eq(q_mesh_init(&m, 3, 2, 1), 0);
    cr_expect_eq((uintptr_t)m.rings % CACHELINE, 0);
    cr_expect_eq((uintptr_t)m.cons % CACHELINE, 0);
    q_mesh_fini(&m);
    cr_expect_null(m.rings);
    cr_expect_null(m.cons);
}

Test(ring, mesh_routes_to_its_consumer_only)
{
    struct q_mesh m;
    void *items[8];

    cr_assert_eq(q_mesh_init(&m, 2, 3, 4), 0);
    cr_assert_eq(q_mesh_push(&m, 1, 2, u2p(12)), 0);
    cr_assert_eq(q_mesh_push(&m, 0, 2, u2p(2)), 0);
    cr_expect_eq(q_mesh_count(&m, 0), 0);
    cr_expect_eq(q_mesh_count(&m, 1), 0);
    cr_expect_eq(q_mesh_count(&m, 2), 2);
    cr_expect_eq(q_mesh_pop_batch(&m, 0, items, 8), 0);
    cr_expect_eq(q_mesh_pop_batch(&m, 1, items, 8), 0);
    cr_assert_eq(q_mesh_pop_batch(&m, 2, items, 8), 2);
    cr_expect_eq(p2u(items[0]) + p2u(items[1]), 14);
    cr_expect_eq(q_mesh_count(&m, 2), 0);
    /* each (producer, consumer) ring is full on its own */
    for (uintptr_t i = 0; i < 4; i++)
        cr_assert_eq(q_mesh_push(&m, 0, 1, u2p(i)), 0);
    cr_expect_eq(q_mesh_push(&m, 0, 1, u2p(9)), -EAGAIN);
    cr_expect_eq(q_mesh_push(&m, 1, 1, u2p(9)), 0, "another producer's ring has room");
    cr_expect_eq(q_mesh_push(&m, 0, 0, u2p(9)), 0, "another consumer's ring has room");
    q_mesh_fini(&m);
}

Test(ring, mesh_pop_shares_batch_equally)
{
    struct q_mesh m;
    void *items[9];
    unsigned per[3] = { 0 };

    cr_assert_eq(q_mesh_init(&m, 3, 1, 64), 0);
    for (unsigned p = 0; p < 3; p++) {
        for (uintptr_t i = 0; i < 30; i++)
            cr_assert_eq(q_mesh_push(&m, p, 0, u2p(p << 8 | i)), 0);
    }
    cr_assert_eq(q_mesh_pop_batch(&m, 0, items, 9), 9);
    for (int i = 0; i < 9; i++)
        per[p2u(items[i]) >> 8]++;
    for (unsigned p = 0; p < 3; p++)
        cr_expect_eq(per[p], 3, "producer %u got %u of 9", p, per[p]);
    q_mesh_fini(&m);
}

Test(ring, mesh_pop_gives_unused_room_to_busy_ring)
{
    struct q_mesh m;
    void *items[9];
    unsigned per[3] = { 0 };

    cr_assert_eq(q_mesh_init(&m, 3, 1, 64), 0);
    for (uintptr_t i = 0; i < 20; i++)
        cr_assert_eq(q_mesh_push(&m, 0, 0, u2p(i)), 0);
    cr_assert_eq(q_mesh_push(&m, 1, 0, u2p(1u << 8)), 0);
    cr_assert_eq(q_mesh_push(&m, 2, 0, u2p(2u << 8)), 0);
    cr_assert_eq(q_mesh_pop_batch(&m, 0, items, 9), 9, "a full batch");
    for (int i = 0; i < 9; i++)
        per[p2u(items[i]) >> 8]++;
    cr_expect_eq(per[0], 7);
    cr_expect_eq(per[1], 1);
    cr_expect_eq(per[2], 1);
    q_mesh_fini(&m);
}

Test(ring, mesh_pop_rotates_first_ring)
{
    struct q_mesh m;
    void *item;

    cr_assert_eq(q_mesh_init(&m, 3, 1, 16), 0);
    for (unsigned p = 0; p < 3; p++) {
        for (uintptr_t i = 0; i < 4; i++)
            cr_assert_eq(q_mesh_push(&m, p, 0, u2p(p << 8 | i)), 0);
    }
    /* one item per call: producers take turns, each in its own order */
    for (uintptr_t round = 0; round < 4; round++) {
        for (uintptr_t p = 0; p < 3; p++) {
            cr_assert_eq(q_mesh_pop_batch(&m, 0, &item, 1), 1);
            cr_expect_eq(p2u(item), p << 8 | round);
        }
    }
    cr_expect_eq(q_mesh_pop_batch(&m, 0, &item, 1), 0);
    q_mesh_fini(&m);
}

Test(ring, mesh_keeps_per_producer_order)
{
    struct q_mesh m;
    void *items[5];
    uintptr_t next[2] = { 0, 0 };
    size_t n, total = 0;

    cr_assert_eq(q_mesh_init(&m, 2, 1, 32), 0);
    for (uintptr_t i = 0; i < 20; i++) {
        cr_assert_eq(q_mesh_push(&m, 0, 0, u2p(i)), 0);
        if (i % 3 == 0)
            cr_assert_eq(q_mesh_push(&m, 1, 0, u2p(1u << 8 | i / 3)), 0);
    }
    while ((n = q_mesh_pop_batch(&m, 0, items, 5)) > 0) {
        for (size_t i = 0; i < n; i++) {
            uintptr_t p = p2u(items[i]) >> 8, seq = p2u(items[i]) & 0xff;

            cr_assert_eq(seq, next[p]++, "producer %ju out of order", (uintmax_t)p);
        }
        total += n;
    }
    cr_expect_eq(total, 27);
    q_mesh_fini(&m);
}

Test(ring, mesh_push_bad_index_is_a_bug, .signal = SIGABRT)
{
    struct q_mesh m;

    cr_assert_eq(q_mesh_init(&m, 2, 2, 4), 0);
    q_mesh_push(&m, 2, 0, NULL);
}

/* ---- the notify protocol, single-threaded ---- */

static void
count_notify(void *arg)
{
    (*(unsigned *)arg)++;
}

Test(ring, notify_only_when_consumer_sleeps)
{
    struct q_mesh m;
    unsigned calls = 0;
    void *items[4];

    cr_assert_eq(q_mesh_init(&m, 2, 1, 4), 0);
    q_mesh_set_notify(&m, 0, count_notify, &calls);

    cr_assert_eq(q_mesh_push(&m, 0, 0, u2p(1)), 0);
    cr_expect_eq(calls, 0, "consumer awake: no notify");
    cr_expect_not(q_mesh_prepare_sleep(&m, 0), "an item is pending: do not sleep");
    cr_expect_eq(atomic_load(&m.cons[0].sleeping), 0, "flag cleared again");
    cr_assert_eq(q_mesh_pop_batch(&m, 0, items, 4), 1);

    cr_expect(q_mesh_prepare_sleep(&m, 0), "all empty: may sleep");
    cr_assert_eq(q_mesh_push(&m, 1, 0, u2p(2)), 0);
    cr_expect_eq(calls, 1, "first push after the sleep notifies");
    cr_assert_eq(q_mesh_push(&m, 0, 0, u2p(3)), 0);
    cr_expect_eq(calls, 1, "one notify per sleep");
    q_mesh_end_sleep(&m, 0);
    cr_assert_eq(q_mesh_pop_batch(&m, 0, items, 4), 2);

    /* a consumer that woke for another reason: end_sleep stops the notifies */
    cr_expect(q_mesh_prepare_sleep(&m, 0));
    q_mesh_end_sleep(&m, 0);
    cr_assert_eq(q_mesh_push(&m, 0, 0, u2p(4)), 0);
    cr_expect_eq(calls, 1);

    /* a failed push publishes nothing and wakes nobody */
    cr_assert_eq(q_mesh_pop_batch(&m, 0, items, 4), 1);
    cr_expect(q_mesh_prepare_sleep(&m, 0));
    for (uintptr_t i = 0; i < 4; i++)
        cr_assert_eq(q_mesh_push(&m, 1, 0, u2p(i)), 0);
    cr_expect_eq(calls, 2);
    cr_expect(q_mesh_prepare_sleep(&m, 0) == false);
    cr_assert_eq(q_mesh_push(&m, 1, 0, u2p(9)), -EAGAIN);
    cr_expect_eq(q_mesh_push_n(&m, 1, 0, items, 0), 0);
    cr_expect_eq(calls, 2);
    q_mesh_fini(&m);
}

/* ---- q_shard_of ---- */

Test(ring, shard_of_is_stable_in_range_and_uniform)
{
    enum { W = 7, N = 70000 };
    unsigned hits[W] = { 0 };

    for (uint64_t i = 0; i < N; i++) {
        uint64_t h = splitmix(i);
        unsigned s = q_shard_of(h, W);

        cr_assert_lt(s, W);
        cr_assert_eq(s, q_shard_of(h, W), "stable");
        cr_assert_eq(q_shard_of(h, 1), 0);
        hits[s]++;
    }
    for (unsigned s = 0; s < W; s++)
        cr_expect(hits[s] > N / W * 95 / 100 && hits[s] < N / W * 105 / 100, "shard %u: %u hits", s,
                  hits[s]);
    cr_expect_eq(q_shard_of(0, 4), 0);
    cr_expect_eq(q_shard_of(UINT64_MAX, 4), 3);
    cr_expect_eq(q_shard_of(UINT64_MAX, Q_MESH_MAX_THREADS), Q_MESH_MAX_THREADS - 1);
}

Test(ring, shard_of_zero_workers_is_a_bug, .signal = SIGABRT)
{
    volatile unsigned w = 0;

    (void)q_shard_of(1, w);
}

/* ---- SPSC stress: one producer, one consumer, a small ring ---- */

struct spsc {
    struct q_ring r;
    uint64_t *payload; /* payload[i] is written before item i is pushed */
    uint32_t n;
    bool batch;
    uint64_t errors;     /* consumer's */
    uint64_t first_bad;  /* consumer's: index where the first error was seen */
    uint64_t push_fails; /* producer's: -EAGAIN count, the ring was really full */
};

static void *
spsc_producer(void *arg)
{
    struct spsc *s = arg;
    uint64_t rng = 0x1234567;
    void *batch[16];
    uint32_t i = 0;

    while (i < s->n) {
        if (!s->batch) {
            s->payload[i] = splitmix(i);
            if (q_ring_push(&s->r, &s->payload[i]) == 0) {
                i++;
                continue;
            }
        } else {
            uint32_t rnd = (uint32_t)(xorshift(&rng) % 16) + 1;
            uint32_t want = MIN(rnd, s->n - i);
            size_t k;

            for (uint32_t j = 0; j < want; j++) {
                s->payload[i + j] = splitmix(i + j);
                batch[j] = &s->payload[i + j];
            }
            k = q_ring_push_n(&s->r, batch, want);
            i += (uint32_t)k;
            if (k == want)
                continue;
        }
        s->push_fails++;
        sched_yield();
    }
    return NULL;
}

static void *
spsc_consumer(void *arg)
{
    struct spsc *s = arg;
    uint64_t rng = 0x7654321;
    void *batch[16];
    uint32_t i = 0;

    while (i < s->n) {
        size_t k;

        if (!s->batch)
            k = q_ring_pop(&s->r, &batch[0]) == 0 ? 1 : 0;
        else
            k = q_ring_pop_n(&s->r, batch, (size_t)(xorshift(&rng) % 16) + 1);
        if (k == 0) {
            sched_yield();
            continue;
        }
        for (size_t j = 0; j < k; j++, i++) {
            uint64_t *p = batch[j];

            if (p != &s->payload[i] || *p != splitmix(i)) {
                if (s->errors++ == 0)
                    s->first_bad = i;
            }
            *p = 0; /* the consumer owns it now: a write TSan checks against the producer's */
        }
    }
    return NULL;
}

static void
spsc_run(bool batch)
{
    struct spsc *s = calloc(1, sizeof(*s));
    pthread_t prod, cons;
    double t0;
    void *item;

    cr_assert_not_null(s);
    s->n = SPSC_ITEMS;
    s->batch = batch;
    s->payload = calloc(s->n, sizeof(*s->payload));
    cr_assert_not_null(s->payload);
    cr_assert_eq(q_ring_init(&s->r, 64), 0);
    t0 = now_s();
    cr_assert_eq(pthread_create(&cons, NULL, spsc_consumer, s), 0);
    cr_assert_eq(pthread_create(&prod, NULL, spsc_producer, s), 0);
    cr_assert_eq(pthread_join(prod, NULL), 0);
    cr_assert_eq(pthread_join(cons, NULL), 0);
    cr_log_info("spsc %s: %u items in %.2f s, %" PRIu64 " full pushes", batch ? "batch" : "single",
                s->n, now_s() - t0, s->push_fails);
    cr_expect_eq(s->errors, 0, "%" PRIu64 " items wrong or out of order, first at %" PRIu64,
                 s->errors, s->first_bad);
    cr_expect_eq(q_ring_pop(&s->r, &item), -EAGAIN, "nothing left over");
    for (uint32_t i = 0; i < s->n; i++)
        cr_assert_eq(s->payload[i], 0, "item %u never consumed", i);
    q_ring_fini(&s->r);
    free(s->payload);
    free(s);
}

Test(ring, spsc_stress_single, .timeout = 120)
{
    spsc_run(false);
}

Test(ring, spsc_stress_batch, .timeout = 120)
{
    spsc_run(true);
}

/* ---- mesh stress: R producers x W consumers ---- */

#define MR 3
#define MW 3

struct mesh_stress;

struct mesh_cons {
    struct mesh_stress *s;
    unsigned id;
    uint64_t got[MR];  /* items from each producer */
    uint64_t last[MR]; /* last sequence number from each producer (they start at 1) */
    uint64_t errors;
};

struct mesh_prod {
    struct mesh_stress *s;
    unsigned id;
    uint64_t sent[MW]; /* items to each consumer */
    uint64_t *payload; /* payload[seq - 1], as in the SPSC test */
};

struct mesh_stress {
    struct q_mesh m;
    uint32_t n; /* per producer */
    atomic_uint producers_done;
    struct mesh_prod prod[MR];
    struct mesh_cons cons[MW];
};

/* The route of (producer, seq): a hash kept on one consumer by q_shard_of(). */
static unsigned
mesh_route(unsigned p, uint64_t seq)
{
    return q_shard_of(splitmix((uint64_t)p << 32 | seq), MW);
}

static void *
mesh_producer(void *arg)
{
    struct mesh_prod *pr = arg;
    struct mesh_stress *s = pr->s;
    uint64_t rng = 0x9e37 + pr->id;
    void *pend[MW][8];
    size_t npend[MW] = { 0 }, flush_at[MW];

    for (unsigned c = 0; c < MW; c++)
        flush_at[c] = 1 + xorshift(&rng) % 8;
    /* items are gathered per consumer and pushed in batches of 1..8, as a reactor does */
    for (uint64_t seq = 1; seq <= s->n; seq++) {
        unsigned c = mesh_route(pr->id, seq);
        uint64_t *p = &pr->payload[seq - 1];

        *p = (uint64_t)pr->id << 48 | seq;
        pend[c][npend[c]++] = p;
        pr->sent[c]++;
        while (npend[c] >= flush_at[c] || (seq == s->n && npend[c] > 0)) {
            size_t k = q_mesh_push_n(&s->m, pr->id, c, pend[c], npend[c]);

            memmove(pend[c], pend[c] + k, (npend[c] - k) * sizeof(void *));
            npend[c] -= k;
            if (npend[c] > 0)
                sched_yield();
            else
                flush_at[c] = 1 + xorshift(&rng) % 8;
        }
    }
    /* the last items may wait in other consumers' buffers */
    for (unsigned c = 0; c < MW; c++) {
        while (npend[c] > 0) {
            size_t k = q_mesh_push_n(&s->m, pr->id, c, pend[c], npend[c]);

            memmove(pend[c], pend[c] + k, (npend[c] - k) * sizeof(void *));
            npend[c] -= k;
            if (npend[c] > 0)
                sched_yield();
        }
    }
    /* release: every push above happens before a consumer that sees the count */
    atomic_fetch_add_explicit(&s->producers_done, 1, memory_order_release);
    return NULL;
}

static void
mesh_take(struct mesh_cons *co, void **items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t *p = items[i];
        uint64_t v = *p, seq = v & 0xffffffffu;
        unsigned prod = (unsigned)(v >> 48);

        if (prod >= MR || seq <= co->last[prod] || mesh_route(prod, seq) != co->id) {
            co->errors++;
            continue;
        }
        co->last[prod] = seq;
        co->got[prod]++;
        *p = 0;
    }
}

static void *
mesh_consumer(void *arg)
{
    struct mesh_cons *co = arg;
    struct mesh_stress *s = co->s;
    void *items[32];

    for (;;) {
        size_t n = q_mesh_pop_batch(&s->m, co->id, items, ARRAY_SIZE(items));

        if (n > 0) {
            mesh_take(co, items, n);
            continue;
        }
        /* acquire: pairs with the producers' release increments */
        if (atomic_load_explicit(&s->producers_done, memory_order_acquire) == MR) {
            while ((n = q_mesh_pop_batch(&s->m, co->id, items, ARRAY_SIZE(items))) > 0)
                mesh_take(co, items, n);
            return NULL;
        }
        sched_yield();
    }
}

Test(ring, mesh_stress, .timeout = 120)
{
    struct mesh_stress *s = calloc(1, sizeof(*s));
    pthread_t pt[MR], ct[MW];
    double t0;

    cr_assert_not_null(s);
    s->n = MESH_ITEMS;
    atomic_init(&s->producers_done, 0);
    cr_assert_eq(q_mesh_init(&s->m, MR, MW, 64), 0);
    for (unsigned c = 0; c < MW; c++)
        s->cons[c] = (struct mesh_cons){ .s = s, .id = c };
    for (unsigned p = 0; p < MR; p++) {
        s->prod[p] = (struct mesh_prod){ .s = s, .id = p };
        s->prod[p].payload = calloc(s->n, sizeof(uint64_t));
        cr_assert_not_null(s->prod[p].payload);
    }
    t0 = now_s();
    for (unsigned c = 0; c < MW; c++)
        cr_assert_eq(pthread_create(&ct[c], NULL, mesh_consumer, &s->cons[c]), 0);
    for (unsigned p = 0; p < MR; p++)
        cr_assert_eq(pthread_create(&pt[p], NULL, mesh_producer, &s->prod[p]), 0);
    for (unsigned p = 0; p < MR; p++)
        cr_assert_eq(pthread_join(pt[p], NULL), 0);
    for (unsigned c = 0; c < MW; c++)
        cr_assert_eq(pthread_join(ct[c], NULL), 0);
    cr_log_info("mesh %ux%u: %u items in %.2f s", MR, MW, MR * s->n, now_s() - t0);

    for (unsigned c = 0; c < MW; c++) {
        cr_expect_eq(s->cons[c].errors, 0, "consumer %u: %" PRIu64 " bad items", c,
                     s->cons[c].errors);
        cr_expect_eq(q_mesh_count(&s->m, c), 0);
    }
    for (unsigned p = 0; p < MR; p++) {
        uint64_t total = 0;

        for (unsigned c = 0; c < MW; c++) {
            cr_expect_eq(s->cons[c].got[p], s->prod[p].sent[c],
                         "producer %u -> consumer %u: sent %" PRIu64 ", got %" PRIu64, p, c,
                         s->prod[p].sent[c], s->cons[c].got[p]);
            total += s->cons[c].got[p];
        }
        cr_expect_eq(total, s->n, "producer %u: %" PRIu64 " of %u items arrived", p, total, s->n);
        for (uint32_t i = 0; i < s->n; i++)
            cr_assert_eq(s->prod[p].payload[i], 0, "producer %u item %u never consumed", p, i);
        free(s->prod[p].payload);
    }
    q_mesh_fini(&s->m);
    free(s);
}

/* ---- notify stress: consumers block in read() on an eventfd ---- */

#define NR 2
#define NW 2

struct notify_stress;

struct notify_cons {
    struct notify_stress *s;
    unsigned id;
    int efd;
    uint64_t expected;
    atomic_uint_least64_t got; /* read by the main thread's diagnostics */
    uint64_t last[NR];
    uint64_t errors;
    uint64_t sleeps; /* prepare_sleep() said yes and read() blocked or returned */
};

struct notify_stress {
    struct q_mesh m;
    uint32_t n; /* per producer */
    struct notify_cons cons[NW];
    atomic_uint finished; /* consumers that got every item */
};

static void
notify_eventfd(void *arg)
{
    const int *efd = arg;
    uint64_t one = 1;

    /* a failed wake-up would hang the consumer: make it loud instead */
    BUG_ON(write(*efd, &one, sizeof(one)) != (ssize_t)sizeof(one));
}

struct notify_prod {
    struct notify_stress *s;
    unsigned id;
};

static void *
notify_producer(void *arg)
{
    struct notify_prod *np = arg;
    struct notify_stress *s = np->s;
    uint64_t rng = 0xabcdef + np->id;

    for (uint64_t seq = 1; seq <= s->n; seq++) {
        unsigned c = (unsigned)(seq % NW);
        void *item = (void *)(uintptr_t)((uint64_t)np->id << 32 | seq);
        uint64_t r;

        while (q_mesh_push(&s->m, np->id, c, item) == -EAGAIN)
            sched_yield();
        /*
         * Irregular pauses make the consumers run dry and go to sleep often,
         * so pushes keep landing in the window between a consumer's last
         * empty pop and its sleep, the window the protocol must cover.
         */
        r = xorshift(&rng);
        if ((r & 7) == 0) {
            sched_yield();
        } else if ((r & 0x3f) == 1) {
            for (volatile unsigned spin = (unsigned)(r >> 40) & 0xfff; spin > 0; spin--)
                ;
        }
    }
    return NULL;
}

static void *
notify_consumer(void *arg)
{
    struct notify_cons *co = arg;
    struct notify_stress *s = co->s;
    void *items[16];
    uint64_t got = 0;

    while (got < co->expected) {
        size_t n = q_mesh_pop_batch(&s->m, co->id, items, ARRAY_SIZE(items));
        uint64_t v;

        if (n > 0) {
            for (size_t i = 0; i < n; i++) {
                uint64_t x = p2u(items[i]), seq = x & 0xffffffffu;
                unsigned p = (unsigned)(x >> 32);

                if (p >= NR || seq <= co->last[p] || seq % NW != co->id)
                    co->errors++;
                else
                    co->last[p] = seq;
            }
            got += n;
            atomic_store_explicit(&co->got, got, memory_order_relaxed);
            continue;
        }
        if (!q_mesh_prepare_sleep(&s->m, co->id))
            continue;
        co->sleeps++;
        /* blocks until a producer's notify: a missed wake-up hangs here */
        BUG_ON(read(co->efd, &v, sizeof(v)) != (ssize_t)sizeof(v));
        q_mesh_end_sleep(&s->m, co->id);
    }
    atomic_fetch_add_explicit(&s->finished, 1, memory_order_release);
    return NULL;
}

Test(ring, notify_stress_never_misses_a_wakeup, .timeout = 120)
{
    struct notify_stress *s = calloc(1, sizeof(*s));
    struct notify_prod np[NR];
    pthread_t pt[NR], ct[NW];
    double t0;
    uint64_t sleeps = 0;

    cr_assert_not_null(s);
    s->n = NOTIFY_ITEMS;
    atomic_init(&s->finished, 0);
    cr_assert_eq(q_mesh_init(&s->m, NR, NW, 8), 0);
    for (unsigned c = 0; c < NW; c++) {
        struct notify_cons *co = &s->cons[c];

        co->s = s;
        co->id = c;
        co->efd = eventfd(0, EFD_CLOEXEC);
        cr_assert_neq(co->efd, -1);
        atomic_init(&co->got, 0);
        for (uint64_t seq = 1; seq <= s->n; seq++)
            co->expected += seq % NW == c ? NR : 0;
        q_mesh_set_notify(&s->m, c, notify_eventfd, &co->efd);
    }
    t0 = now_s();
    for (unsigned c = 0; c < NW; c++)
        cr_assert_eq(pthread_create(&ct[c], NULL, notify_consumer, &s->cons[c]), 0);
    /*
     * Start the producers only once every consumer has announced its first
     * sleep, so that the wake-up path runs at least once per consumer.
     */
    for (unsigned c = 0; c < NW; c++) {
        while (atomic_load(&s->m.cons[c].sleeping) == 0) {
            cr_assert_lt(now_s() - t0, DEADLINE_S, "consumer %u never went to sleep", c);
            usleep(100);
        }
    }
    for (unsigned p = 0; p < NR; p++) {
        np[p] = (struct notify_prod){ .s = s, .id = p };
        cr_assert_eq(pthread_create(&pt[p], NULL, notify_producer, &np[p]), 0);
    }
    for (unsigned p = 0; p < NR; p++)
        cr_assert_eq(pthread_join(pt[p], NULL), 0);

    /* a consumer stuck in read() with items queued is a lost wake-up */
    while (atomic_load_explicit(&s->finished, memory_order_acquire) < NW) {
        if (now_s() - t0 > DEADLINE_S) {
            for (unsigned c = 0; c < NW; c++)
                cr_log_error("consumer %u: got %" PRIu64 " of %" PRIu64 ", %zu queued, "
                             "sleeping=%u",
                             c, atomic_load(&s->cons[c].got), s->cons[c].expected,
                             q_mesh_count(&s->m, c), atomic_load(&s->m.cons[c].sleeping));
            cr_assert_fail("a consumer missed its wake-up and hung (deadline %d s)", DEADLINE_S);
        }
        usleep(1000);
    }
    for (unsigned c = 0; c < NW; c++) {
        cr_assert_eq(pthread_join(ct[c], NULL), 0);
        cr_expect_eq(s->cons[c].errors, 0, "consumer %u: %" PRIu64 " bad items", c,
                     s->cons[c].errors);
        cr_expect_eq(atomic_load(&s->cons[c].got), s->cons[c].expected);
        cr_expect_geq(s->cons[c].sleeps, 1, "consumer %u never slept", c);
        sleeps += s->cons[c].sleeps;
        close(s->cons[c].efd);
    }
    cr_log_info("notify %ux%u: %u items, %" PRIu64 " sleeps in %.2f s", NR, NW, NR * s->n, sleeps,
                now_s() - t0);
    q_mesh_fini(&s->m);
    free(s);
}
