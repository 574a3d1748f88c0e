/*
 * stress_limits: THREADS threads calling core/limits.c at once on
 * overlapping client keys; a plain program (exit 0 = pass) so that it runs
 * under ThreadSanitizer, which Criterion cannot start under.
 *
 * Round 1, exact totals: a table big enough for every key, the clock
 * stopped, every limit a rate. Each bucket hands out exactly its capacity,
 * whatever the interleaving: the tokens taken by all threads for a key sum
 * to min(rate, attempts). No client is ever left untracked or evicted.
 *
 * Rounds 2 and 3, eviction and fail open: small tables (one shard of 16
 * entries; 64 shards of 16) for many more keys, each thread with its own
 * clock (so they disagree by seconds), a connection count limit, and
 * connections held open so that shards fill up. The threads keep their own
 * tally of the tracked connections open per key, raised after a tracked
 * limits_connect() and lowered before its limits_disconnect(): it never
 * exceeds conn_count.
 *
 * After every round: every count is back to 0 (a client may open exactly
 * one connection under conn_count = 1) and the stats are consistent.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/limits.h"

#define STRESS_NAME "stress_limits"
#include "stress.h"

#if UNDER_TSAN
enum { OPS = 50000 }; /* per thread; TSan is 5-15x slower */
#else
enum { OPS = 200000 };
#endif
enum { THREADS = 4, HOLD = 8, MAX_KEYS = 4096 };

struct round {
    const char *name;
    unsigned capacity, nkeys;
    struct limits_conf conf;
    bool clock_runs; /* each thread's now_ms advances 1 ms per op, from its own start */
    bool exact;      /* round 1: no eviction, no fail open, exact bucket totals */
};

static struct limits *table;
static const struct round *cur;
static struct limits_key keys[MAX_KEYS];
static _Atomic int open_tracked[MAX_KEYS]; /* the threads' own tally, per key */

struct worker {
    pthread_t th;
    unsigned id;
    uint64_t seed;
    /* per key and bucket (enum limits_event): attempts and tokens granted */
    unsigned tries[MAX_KEYS][4], granted[MAX_KEYS][4];
    unsigned untracked; /* LIMITS_OK connects that were not tracked */
};

static struct worker workers[THREADS];

static uint64_t
rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *
run(void *arg)
{
    struct worker *w = arg;
    const struct limits_conf *c = &cur->conf;
    unsigned held[HOLD], nheld = 0;
    /* a stopped clock is the same for all; running ones disagree by seconds */
    uint64_t now = 100000 + (cur->clock_runs ? (uint64_t)w->id * 7000 : 0);

    for (unsigned op = 0; op < OPS; op++) {
        uint64_t r = rnd(&w->seed);
        unsigned k = (unsigned)(r >> 32) % cur->nkeys, what = (unsigned)(r & 15);
        bool tracked;

        if (cur->clock_runs)
            now++;
        if (what < 6) { /* connect */
            enum limits_verdict v;

            if (nheld == HOLD) { /* hands full: let one go first */
                unsigned h = held[--nheld];

                atomic_fetch_sub_explicit(&open_tracked[h], 1, memory_order_relaxed);
                limits_disconnect(table, &keys[h]);
            }
            v = limits_connect(table, &keys[k], c, now, &tracked);
            CHECK(v == LIMITS_OK || v == LIMITS_CONN_COUNT || v == LIMITS_CONN_RATE, "verdict %d",
                  v);
            CHECK(v == LIMITS_OK || !tracked, "refused yet tracked");
            if (v == LIMITS_CONN_COUNT)
                continue; /* no token taken, not an attempt on the bucket */
            w->tries[k][LIMITS_CONNECT]++;
            if (v != LIMITS_OK)
                continue;
            w->granted[k][LIMITS_CONNECT] += tracked;
            if (!tracked) {
                w->untracked++;
                continue;
            }
            CHECK(atomic_fetch_add_explicit(&open_tracked[k], 1, memory_order_relaxed) <
                          (int)c->conn_count ||
                      c->conn_count == 0,
                  "key %u: more than %u connections open", k, c->conn_count);
            held[nheld++] = k;
        } else if (what < 8) { /* disconnect */
            if (nheld > 0) {
                unsigned i = (unsigned)(r >> 8) % nheld, h = held[i];

                held[i] = held[--nheld];
                atomic_fetch_sub_explicit(&open_tracked[h], 1, memory_order_relaxed);
                limits_disconnect(table, &keys[h]);
            }
        } else { /* an event */
            enum limits_event ev = what < 11   ? LIMITS_MESSAGE
                                   : what < 14 ? LIMITS_RCPT
                                   : what < 15 ? LIMITS_AUTH_FAIL
                                               : LIMITS_CONNECT;
            enum limits_verdict v = limits_event(table, &keys[k], ev, c, now);

            CHECK(v == LIMITS_OK || v == (enum limits_verdict)(LIMITS_CONN_RATE + ev),
                  "event %d: verdict %d", ev, v);
            w->tries[k][ev]++;
            w->granted[k][ev] += v == LIMITS_OK;
        }
    }
    while (nheld > 0) {
        unsigned h = held[--nheld];

        atomic_fetch_sub_explicit(&open_tracked[h], 1, memory_order_relaxed);
        limits_disconnect(table, &keys[h]);
    }
    return NULL;
}

static unsigned
rate_of(const struct limits_conf *c, unsigned b)
{
    const unsigned r[4] = { c->conn_rate, c->msg_rate, c->rcpt_rate, c->auth_fail_rate };

    return r[b];
}

static void
make_keys(unsigned n)
{
    char text[64];

    for (unsigned i = 0; i < n; i++) {
        switch (i % 4) {
        case 0:
            snprintf(text, sizeof(text), "192.0.%u.%u", i >> 8, i & 255);
            break;
        case 1: /* each its own /64 */
            snprintf(text, sizeof(text), "2001:db8:%x:%x::%x", i >> 16, i & 0xffff, i);
            break;
        case 2:
            snprintf(text, sizeof(text), "::ffff:198.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255,
                     i & 255);
            break;
        default:
            snprintf(text, sizeof(text), "unix-%u", i);
            break;
        }
        limits_key(&keys[i], text, 64);
    }
}

static void
round_run(const struct round *rd)
{
    const struct limits_conf probe = { .conn_count = 1 };
    uint64_t used, evicted, untracked, conn_untracked = 0;

    cur = rd;
    table = limits_new(rd->capacity);
    CHECK(table != NULL, "limits_new(%u)", rd->capacity);
    make_keys(rd->nkeys);
    memset(workers, 0, sizeof(workers));
    for (unsigned i = 0; i < THREADS; i++) {
        workers[i].id = i;
        workers[i].seed = 0x9e3779b97f4a7c15ULL * (i + 1) + rd->capacity;
        CHECK(pthread_create(&workers[i].th, NULL, run, &workers[i]) == 0, "pthread_create");
    }
    for (unsigned i = 0; i < THREADS; i++)
        pthread_join(workers[i].th, NULL);

    limits_stats(table, &used, &evicted, &untracked);
    CHECK(used <= rd->capacity, "%s: %lu entries used of %u", rd->name, (unsigned long)used,
          rd->capacity);
    for (unsigned i = 0; i < THREADS; i++)
        conn_untracked += workers[i].untracked;
    CHECK(conn_untracked <= untracked, "%s: %lu connects untracked, the table counted %lu",
          rd->name, (unsigned long)conn_untracked, (unsigned long)untracked);
    if (rd->exact) {
        CHECK(evicted == 0 && untracked == 0, "%s: evicted %lu untracked %lu", rd->name,
              (unsigned long)evicted, (unsigned long)untracked);
        for (unsigned k = 0; k < rd->nkeys; k++) {
            for (unsigned b = 0; b < 4; b++) {
                unsigned tries = 0, granted = 0, rate = rate_of(&rd->conf, b);
                unsigned want;

                for (unsigned i = 0; i < THREADS; i++) {
                    tries += workers[i].tries[k][b];
                    granted += workers[i].granted[k][b];
                }
                want = tries < rate ? tries : rate;
                CHECK(granted == want, "%s: key %u bucket %u: %u granted of %u tries, rate %u",
                      rd->name, k, b, granted, tries, rate);
            }
        }
    }
    /* every count is back to 0: one connection each under conn_count = 1 */
    for (unsigned k = 0; k < rd->nkeys; k++) {
        bool tracked;

        CHECK(atomic_load(&open_tracked[k]) == 0, "%s: key %u tally", rd->name, k);
        CHECK(limits_connect(table, &keys[k], &probe, 1, &tracked) == LIMITS_OK && tracked,
              "%s: key %u: a connection still counted", rd->name, k);
        CHECK(limits_connect(table, &keys[k], &probe, 1, &tracked) == LIMITS_CONN_COUNT,
              "%s: key %u: count lost", rd->name, k);
        limits_disconnect(table, &keys[k]);
    }
    printf("stress_limits: %s: %d threads x %d ops, %u keys into %u entries: used %lu, "
           "evicted %lu, untracked %lu\n",
           rd->name, THREADS, OPS, rd->nkeys, rd->capacity, (unsigned long)used,
           (unsigned long)evicted, (unsigned long)untracked);
    limits_free(table);
    table = NULL;
}

int
main(void)
{
    static const struct round rounds[] = {
        { .name = "exact",
          .capacity = 4096,
          .nkeys = 16,
          /*
           * OPS / 4 operations per key: about OPS / 9 on the connection
           * bucket (7 in 16), OPS / 21 on each of message and recipient
           * (3 in 16), OPS / 64 on AUTH failures (1 in 16). Each rate is
           * about half of that: every bucket runs dry midway.
           */
          .conf = { .conn_rate = OPS / 20,
                    .msg_rate = OPS / 40,
                    .rcpt_rate = OPS / 40,
                    .auth_fail_rate = OPS / 128 },
          .exact = true },
        { .name = "one shard",
          .capacity = 16,
          .nkeys = 64,
          .conf = { .conn_count = 2,
                    .conn_rate = 600,
                    .msg_rate = 300,
                    .rcpt_rate = 600,
                    .auth_fail_rate = 60 },
          .clock_runs = true },
        { .name = "64 shards",
          .capacity = 1024,
          .nkeys = MAX_KEYS,
          .conf = { .conn_count = 1,
                    .conn_rate = 60,
                    .msg_rate = 30,
                    .rcpt_rate = 60,
                    .auth_fail_rate = 6 },
          .clock_runs = true },
    };

    for (size_t i = 0; i < sizeof(rounds) / sizeof(rounds[0]); i++)
        round_run(&rounds[i]);
    return 0;
}
