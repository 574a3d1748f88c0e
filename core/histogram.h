/*
 * histogram.h: fixed-bucket latency histograms for /metrics, one per thread.
 *
 * A layout is a list of ascending finite upper bounds in microseconds (the
 * Prometheus `le` values), log-spaced to suit what it measures; a struct hist
 * holds one counter per bucket (not cumulative: bucket i counts values v with
 * le[i-1] < v <= le[i], the last one counts v > le[n-1], Prometheus' +Inf)
 * and the sum of the observed values.
 *
 * Threads: a struct hist has one writer, the thread that owns it, which
 * updates it with relaxed loads and stores (no locked instruction, no shared
 * cache line); anyone may read it with relaxed loads (net/admin.c sums the
 * threads' histograms at scrape time and makes the buckets cumulative; the
 * count is the sum of the buckets, so _count always equals the +Inf bucket).
 * core/: no clock is read here; the caller measures.
 */
#ifndef RINGMAIL_CORE_HISTOGRAM_H
#define RINGMAIL_CORE_HISTOGRAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_SLOTS 20 /* buckets of a struct hist: at most HIST_SLOTS - 1 finite bounds + +Inf */

struct hist_layout {
    const uint64_t *le_us; /* finite upper bounds, ascending, microseconds */
    unsigned n;            /* how many (< HIST_SLOTS) */
};

struct hist {
    _Atomic uint64_t bucket[HIST_SLOTS]; /* [0, n]: n is +Inf */
    _Atomic uint64_t sum_us;
};

/* ringmail_commit_latency_seconds: 100 us .. 10 s */
extern const struct hist_layout hist_commit_latency;
/* ringmail_queue_residence_seconds: 10 ms .. 7 days */
extern const struct hist_layout hist_queue_residence;
/* ringmail_delivery_attempt_duration_seconds: 1 ms .. 10 min */
extern const struct hist_layout hist_attempt_duration;

/* The bucket of a value: the first bound >= v_us, or n (+Inf). */
static inline unsigned
hist_bucket(const struct hist_layout *l, uint64_t v_us)
{
    unsigned lo = 0, hi = l->n;

    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;

        if (v_us <= l->le_us[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Count one value (its owner thread only: a relaxed load and store, no locked add). */
static inline void
hist_observe(struct hist *h, const struct hist_layout *l, uint64_t v_us)
{
    _Atomic uint64_t *b = &h->bucket[hist_bucket(l, v_us)];

    atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_us, atomic_load_explicit(&h->sum_us, memory_order_relaxed) + v_us,
                          memory_order_relaxed);
}

/* A microsecond count as seconds in the shortest decimal form ("0.00025", "1", "86400"),
   the form the `le` label and _sum take. Returns the length (truncated to cap - 1). */
size_t hist_seconds_text(uint64_t us, char *out, size_t cap);

#endif
