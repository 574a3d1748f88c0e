/*
 * stress_metrics: the per-thread metrics of /metrics (core/desttab.h,
 * core/histogram.h) written by their owner thread while other threads read
 * them, as a delivery worker and the scraping main thread do; a plain program
 * (exit 0 = pass) so that it runs under ThreadSanitizer.
 *
 * The writer fills ROUNDS fresh destination tables, one after the other, past
 * their bound (so "other" is used), publishing each slot's name before its
 * count; it bumps each slot's deferrals and moves its active gauge up and
 * down, and observes values into a histogram. Readers, meanwhile, read every
 * published slot of the current table and check its name byte for byte
 * against what the writer wrote there (a torn or early read fails here, and
 * TSan reports the race it would be), that counters never go back, and that
 * the histogram's bucket total never goes back and holds at least what the
 * writer said it had observed. At the end the totals are exact.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/desttab.h"
#include "core/histogram.h"

#define STRESS_NAME "stress_metrics"
#include "stress.h"

#if UNDER_TSAN
enum { ROUNDS = 200 };
#else
enum { ROUNDS = 2000 };
#endif
enum { READERS = 2, DESTS = DESTTAB_MAX + 16, BUMPS = 8 };

static struct desttab tabs[ROUNDS];
static struct hist hist;
static _Atomic unsigned cur;      /* the table the writer fills now (release) */
static _Atomic unsigned observed; /* values observed into hist so far (release, after) */
static atomic_bool done;

/* The name of destination i of round k: long and varied, so a torn read shows. */
static void
dest_name(unsigned k, unsigned i, char *out, size_t cap)
{
    int n = snprintf(out, cap, "[10.%u.%u.%u]:%u/", k / 256, k % 256, i, 25 + i);
    size_t len = (size_t)n + (i * 7 + k) % 70;

    if (len >= cap)
        len = cap - 1;
    for (size_t j = (size_t)n; j < len; j++)
        out[j] = (char)('a' + (j + i + k) % 26);
    out[len] = '\0';
}

static void *
writer(void *arg)
{
    (void)arg;
    for (unsigned k = 0; k < ROUNDS; k++) {
        struct desttab *t = &tabs[k];

        atomic_store_explicit(&cur, k, memory_order_release);
        for (unsigned i = 0; i < DESTS; i++) {
            char name[DESTTAB_NAME + 32];
            unsigned s;

            dest_name(k, i, name, sizeof(name));
            s = desttab_slot(t, name);
            CHECK(i < DESTTAB_MAX ? s == i : s == DESTTAB_OTHER, "round %u dest %u: slot %u", k, i,
                  s);
            for (unsigned b = 0; b < BUMPS; b++) {
                desttab_active(t, s, 1);
                desttab_deferred(t, s, 1);
                desttab_active(t, s, -1);
            }
        }
        for (unsigned v = 0; v < 64; v++) {
            hist_observe(&hist, &hist_commit_latency, (uint64_t)v * 997 + k);
            atomic_store_explicit(&observed, k * 64 + v + 1, memory_order_release);
        }
    }
    atomic_store_explicit(&done, true, memory_order_release);
    return NULL;
}

static uint64_t
hist_total(void)
{
    uint64_t n = 0;

    for (unsigned i = 0; i <= hist_commit_latency.n; i++)
        n += atomic_load_explicit(&hist.bucket[i], memory_order_relaxed);
    return n;
}

static void *
reader(void *arg)
{
    uint64_t last_total = 0, reads = 0;

    (void)arg;
    while (!atomic_load_explicit(&done, memory_order_acquire) || reads == 0) {
        unsigned k = atomic_load_explicit(&cur, memory_order_acquire);
        struct desttab *t = &tabs[k];
        unsigned n = desttab_published(t);
        uint64_t seen_obs, total;

        CHECK(n <= DESTTAB_MAX, "published %u", n);
        for (unsigned i = 0; i < n; i++) {
            char want[DESTTAB_NAME + 32];
            uint64_t d1, d2;

            dest_name(k, i, want, sizeof(want));
            want[DESTTAB_NAME - 1] = '\0';
            CHECK(strcmp(t->slot[i].name, want) == 0, "round %u slot %u: \"%s\" != \"%s\"", k, i,
                  t->slot[i].name, want);
            d1 = atomic_load_explicit(&t->slot[i].deferrals, memory_order_relaxed);
            d2 = atomic_load_explicit(&t->slot[i].deferrals, memory_order_relaxed);
            CHECK(d2 >= d1 && d2 <= BUMPS, "round %u slot %u: deferrals %llu then %llu", k, i,
                  (unsigned long long)d1, (unsigned long long)d2);
            CHECK(atomic_load_explicit(&t->slot[i].active, memory_order_relaxed) <= 1,
                  "round %u slot %u: active", k, i);
        }
        /* observed is stored (release) after each observe: once a reader has seen it
           (acquire), the buckets hold at least that many */
        seen_obs = atomic_load_explicit(&observed, memory_order_acquire);
        total = hist_total();
        CHECK(total >= last_total, "histogram total went back: %llu then %llu",
              (unsigned long long)last_total, (unsigned long long)total);
        CHECK(total >= seen_obs && total <= (uint64_t)ROUNDS * 64,
              "histogram total %llu, observed %llu", (unsigned long long)total,
              (unsigned long long)seen_obs);
        last_total = total;
        reads++;
    }
    return NULL;
}

int
main(void)
{
    pthread_t w, r[READERS];

    for (int i = 0; i < READERS; i++)
        CHECK(pthread_create(&r[i], NULL, reader, NULL) == 0, "pthread_create");
    CHECK(pthread_create(&w, NULL, writer, NULL) == 0, "pthread_create");
    pthread_join(w, NULL);
    for (int i = 0; i < READERS; i++)
        pthread_join(r[i], NULL);
    for (unsigned k = 0; k < ROUNDS; k++) {
        CHECK(desttab_published(&tabs[k]) == DESTTAB_MAX, "round %u: %u published", k,
              desttab_published(&tabs[k]));
        for (unsigned i = 0; i < DESTTAB_MAX; i++)
            CHECK(atomic_load(&tabs[k].slot[i].deferrals) == BUMPS &&
                      atomic_load(&tabs[k].slot[i].active) == 0,
                  "round %u slot %u: totals", k, i);
        CHECK(atomic_load(&tabs[k].slot[DESTTAB_OTHER].deferrals) ==
                  (uint64_t)(DESTS - DESTTAB_MAX) * BUMPS,
              "round %u: other", k);
    }
    CHECK(hist_total() == (uint64_t)ROUNDS * 64, "histogram total %llu",
          (unsigned long long)hist_total());
    printf("stress_metrics: %u rounds of %u destinations, %d readers: ok\n", ROUNDS, DESTS,
           READERS);
    return 0;
}
