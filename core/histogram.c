/*
 * histogram.c: the bucket layouts of ringmail's histograms (core/histogram.h).
 *
 * Log-spaced, 1-2.5-5 per decade where the range is short, coarser where it
 * is long; the values are what an operator wants to tell apart:
 * - commit latency (end of DATA to the 250: one group-commit fdatasync):
 *   100 us (NVMe with a write cache) to 10 s (a disk in trouble);
 * - queue residence (arrival to delivered or bounced): 10 ms (relayed at
 *   once) to 7 days (maximal_queue_lifetime's range);
 * - one delivery attempt (a session's message, or a Maildir job): 1 ms to
 *   10 min (smtp_data_done_timeout's range).
 */
#include "core/histogram.h"

#include <inttypes.h>
#include <stdio.h>

#define MS  ((uint64_t)1000)
#define SEC ((uint64_t)1000000)

static const uint64_t commit_le[] = {
    100,     250,      500,      1 * MS,   2500,    5 * MS,    10 * MS, 25 * MS,
    50 * MS, 100 * MS, 250 * MS, 500 * MS, 1 * SEC, 2500 * MS, 5 * SEC, 10 * SEC,
};

static const uint64_t residence_le[] = {
    10 * MS,     100 * MS,    500 * MS,    1 * SEC,      5 * SEC,
    15 * SEC,    60 * SEC,    300 * SEC,   900 * SEC,    3600 * SEC,
    14400 * SEC, 43200 * SEC, 86400 * SEC, 259200 * SEC, 604800 * SEC,
};

static const uint64_t attempt_le[] = {
    1 * MS,  2500,      5 * MS,  10 * MS,  25 * MS,  50 * MS,  100 * MS,  250 * MS,  500 * MS,
    1 * SEC, 2500 * MS, 5 * SEC, 10 * SEC, 30 * SEC, 60 * SEC, 300 * SEC, 600 * SEC,
};

_Static_assert(sizeof(commit_le) / sizeof(commit_le[0]) < HIST_SLOTS, "commit buckets");
_Static_assert(sizeof(residence_le) / sizeof(residence_le[0]) < HIST_SLOTS, "residence buckets");
_Static_assert(sizeof(attempt_le) / sizeof(attempt_le[0]) < HIST_SLOTS, "attempt buckets");

const struct hist_layout hist_commit_latency = { commit_le,
                                                 sizeof(commit_le) / sizeof(commit_le[0]) };
const struct hist_layout hist_queue_residence = { residence_le,
                                                  sizeof(residence_le) / sizeof(residence_le[0]) };
const struct hist_layout hist_attempt_duration = { attempt_le,
                                                   sizeof(attempt_le) / sizeof(attempt_le[0]) };

size_t
hist_seconds_text(uint64_t us, char *out, size_t cap)
{
    char buf[48];
    uint64_t frac = us % SEC;
    int n;

    if (frac == 0) {
        n = snprintf(buf, sizeof(buf), "%" PRIu64, us / SEC);
    } else {
        n = snprintf(buf, sizeof(buf), "%" PRIu64 ".%06" PRIu64, us / SEC, frac);
        while (n > 0 && buf[n - 1] == '0')
            n--;
        buf[n] = '\0';
    }
    if (cap == 0)
        return 0;
    if ((size_t)n >= cap)
        n = (int)(cap - 1);
    for (int i = 0; i < n; i++)
        out[i] = buf[i];
    out[n] = '\0';
    return (size_t)n;
}
