/*
 * Tests for core/histogram.h and core/desttab.h: bucket choice at and around
 * every bound (le is inclusive), the layouts' order and ranges, the seconds
 * text of le and _sum, and the per-destination table's sharing, bound and
 * "other" slot.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "core/desttab.h"
#include "core/histogram.h"

static const struct hist_layout *const layouts[] = {
    &hist_commit_latency,
    &hist_queue_residence,
    &hist_attempt_duration,
};

Test(histogram, layouts_ascending_and_bounded)
{
    for (size_t k = 0; k < sizeof(layouts) / sizeof(layouts[0]); k++) {
        const struct hist_layout *l = layouts[k];

        cr_assert(l->n >= 8 && l->n < HIST_SLOTS, "layout %zu has %u bounds", k, l->n);
        for (unsigned i = 1; i < l->n; i++) {
            cr_assert_gt(l->le_us[i], l->le_us[i - 1], "layout %zu bound %u", k, i);
            /* log-spaced: each bound at most 10x the previous one */
            cr_assert_leq(l->le_us[i], l->le_us[i - 1] * 10, "layout %zu bound %u", k, i);
        }
    }
    /* the ranges each measure needs */
    cr_assert_eq(hist_commit_latency.le_us[0], 100);
    cr_assert_eq(hist_commit_latency.le_us[hist_commit_latency.n - 1], 10000000);
    cr_assert_eq(hist_queue_residence.le_us[0], 10000);
    cr_assert_eq(hist_queue_residence.le_us[hist_queue_residence.n - 1], 7ull * 86400 * 1000000);
    cr_assert_eq(hist_attempt_duration.le_us[0], 1000);
    cr_assert_eq(hist_attempt_duration.le_us[hist_attempt_duration.n - 1], 600000000);
}

Test(histogram, bucket_choice_le_inclusive)
{
    for (size_t k = 0; k < sizeof(layouts) / sizeof(layouts[0]); k++) {
        const struct hist_layout *l = layouts[k];

        cr_assert_eq(hist_bucket(l, 0), 0);
        for (unsigned i = 0; i < l->n; i++) {
            cr_assert_eq(hist_bucket(l, l->le_us[i]), i, "layout %zu: v = le[%u]", k, i);
            cr_assert_eq(hist_bucket(l, l->le_us[i] - 1), i, "layout %zu: v = le[%u] - 1", k, i);
            cr_assert_eq(hist_bucket(l, l->le_us[i] + 1), i + 1, "layout %zu: le[%u] + 1", k, i);
        }
        cr_assert_eq(hist_bucket(l, UINT64_MAX), l->n, "layout %zu: +Inf", k);
    }
    /* a few real values */
    cr_assert_eq(hist_bucket(&hist_commit_latency, 180), 1);             /* 180 us: le 0.00025 */
    cr_assert_eq(hist_bucket(&hist_commit_latency, 3000), 5);            /* 3 ms: le 0.005 */
    cr_assert_eq(hist_bucket(&hist_commit_latency, 60000000), 16);       /* 1 min: +Inf */
    cr_assert_eq(hist_bucket(&hist_queue_residence, 7200000000ull), 10); /* 2 h: le 14400 */
}

Test(histogram, observe_counts_and_sums)
{
    struct hist h;
    const struct hist_layout *l = &hist_commit_latency;
    uint64_t total = 0;

    memset(&h, 0, sizeof(h));
    hist_observe(&h, l, 50);
    hist_observe(&h, l, 100);
    hist_observe(&h, l, 101);
    hist_observe(&h, l, 20000000);
    cr_assert_eq(atomic_load(&h.bucket[0]), 2);
    cr_assert_eq(atomic_load(&h.bucket[1]), 1);
    cr_assert_eq(atomic_load(&h.bucket[l->n]), 1);
    for (unsigned i = 0; i <= l->n; i++)
        total += atomic_load(&h.bucket[i]);
    cr_assert_eq(total, 4);
    cr_assert_eq(atomic_load(&h.sum_us), 50 + 100 + 101 + 20000000);
}

Test(histogram, seconds_text)
{
    static const struct {
        uint64_t us;
        const char *text;
    } v[] = {
        { 0, "0" },         { 100, "0.0001" },          { 250, "0.00025" },
        { 1000, "0.001" },  { 2500000, "2.5" },         { 1000000, "1" },
        { 10000000, "10" }, { 604800000000, "604800" }, { 1234567, "1.234567" },
        { 1, "0.000001" },
    };
    char buf[32];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        cr_assert_eq(hist_seconds_text(v[i].us, buf, sizeof(buf)), strlen(v[i].text));
        cr_assert_str_eq(buf, v[i].text);
    }
    cr_assert_eq(hist_seconds_text(2500000, buf, 3), 2);
    cr_assert_str_eq(buf, "2.");
}

Test(desttab, slots_shared_bounded_other)
{
    static struct desttab t; /* zero: nothing published */
    char name[DESTTAB_NAME + 32];
    unsigned a, b;

    cr_assert_eq(desttab_published(&t), 0);
    a = desttab_slot(&t, "[192.0.2.1]:25");
    b = desttab_slot(&t, "[192.0.2.2]:25");
    cr_assert_eq(a, 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(desttab_slot(&t, "[192.0.2.1]:25"), 0, "a name has one slot");
    cr_assert_eq(desttab_published(&t), 2);
    desttab_active(&t, a, 1);
    desttab_active(&t, a, 1);
    desttab_active(&t, a, -1);
    desttab_deferred(&t, b, 3);
    cr_assert_eq(atomic_load(&t.slot[a].active), 1);
    cr_assert_eq(atomic_load(&t.slot[b].deferrals), 3);

    /* a name longer than a slot holds is truncated, and found again by its truncation */
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    a = desttab_slot(&t, name);
    cr_assert_eq(a, 2);
    cr_assert_eq(strlen(t.slot[a].name), DESTTAB_NAME - 1);
    cr_assert_eq(desttab_slot(&t, name), a);

    for (unsigned i = desttab_published(&t); i < DESTTAB_MAX; i++) {
        snprintf(name, sizeof(name), "[10.0.0.%u]:25", i);
        cr_assert_eq(desttab_slot(&t, name), i);
    }
    cr_assert_eq(desttab_published(&t), DESTTAB_MAX);
    cr_assert_eq(desttab_slot(&t, "lmtp:unix:/run/dovecot/lmtp"), DESTTAB_OTHER, "full: other");
    cr_assert_eq(desttab_slot(&t, "[192.0.2.2]:25"), 1, "full: known names keep their slot");
    desttab_deferred(&t, DESTTAB_OTHER, 2);
    cr_assert_eq(atomic_load(&t.slot[DESTTAB_OTHER].deferrals), 2);
    cr_assert_eq(desttab_published(&t), DESTTAB_MAX);
}
