/*
 * qfilter.h: the queue selection of the admin endpoint's /queue requests
 * (net/queue_ctl.c): the query string's filters, durations ("30s", "10m",
 * "2h"), matching a recipient, a sender and an age against them, and JSON
 * string escaping for the answers.
 *
 * Filters (all optional; a message or delivery must pass every one given):
 *
 *   domain=D     a recipient's domain is D, or ends in ".D" (case-insensitive)
 *   sender=S     the sender contains S (case-insensitive substring);
 *                sender=<> matches the null sender only (bounces)
 *   min_age=T    arrived at least T ago     (T: N, Ns, Nm, Nh or Nd; N alone = seconds)
 *   max_age=T    arrived at most T ago
 *   state=X      a recipient's state is X: active, deferred, held or waiting;
 *                several may be given, comma-separated (state=deferred,held)
 *   limit=N      at most N messages in a list (1..100000, default 1000)
 *   body=0|1     /queue/QID only: include the stored message
 *
 * Values are percent-decoded ("sender=a%40b" is "a@b"; '+' is a space).
 * Pure: any thread, no clock, no I/O.
 */
#ifndef RINGMAIL_CORE_QFILTER_H
#define RINGMAIL_CORE_QFILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define QFILTER_TEXT_MAX      256
#define QFILTER_LIMIT_DEFAULT 1000u
#define QFILTER_LIMIT_MAX     100000u

/* A recipient's state in the queue, as a bit (filters take a set of them). */
enum qstate {
    QSTATE_ACTIVE = 1u << 0,   /* in a delivery attempt right now */
    QSTATE_DEFERRED = 1u << 1, /* failed an attempt; waiting for its next one */
    QSTATE_HELD = 1u << 2,     /* on hold (POST /queue/QID/hold) until released */
    QSTATE_WAITING = 1u << 3,  /* queued for its destination, not in an attempt yet */
};
#define QSTATE_ALL (QSTATE_ACTIVE | QSTATE_DEFERRED | QSTATE_HELD | QSTATE_WAITING)

struct qfilter {
    char domain[QFILTER_TEXT_MAX]; /* lower case; "" = any */
    size_t domain_len;
    char sender[QFILTER_TEXT_MAX]; /* lower case; "" = any */
    size_t sender_len;
    bool sender_null;    /* sender=<>: the null sender only */
    uint64_t min_age_ms; /* 0 = none */
    uint64_t max_age_ms; /* UINT64_MAX = none */
    unsigned states;     /* QSTATE_* bits; QSTATE_ALL = any */
    unsigned limit;      /* messages in a list */
    bool body;           /* body=1 */
};

/* Every message passes; limit = QFILTER_LIMIT_DEFAULT. */
void qfilter_init(struct qfilter *f);

/* Whether f selects more than everything (a filter other than limit and body is set). */
bool qfilter_narrows(const struct qfilter *f);

/*
 * Parse a query string (what follows '?', without it; may be empty) into f
 * (qfilter_init() first). 0, or -1 with a one-line reason in err ("min_age:
 * '5x' is not a duration (30s, 10m, 2h, 1d)") for an unknown key, a bad or
 * too long value, or min_age > max_age.
 */
int qfilter_parse(struct qfilter *f, struct slice query, char *err, size_t errlen);

/* "30s" "10m" "2h" "1d" "45" (seconds) -> milliseconds; false when malformed or too large. */
bool qfilter_duration(struct slice s, uint64_t *ms);

/* Whether the address's domain (what follows its last '@') passes domain=. */
bool qfilter_domain_match(const struct qfilter *f, struct slice addr);
/* Whether the sender ("" is the null sender) passes sender=. */
bool qfilter_sender_match(const struct qfilter *f, struct slice sender);
/* Whether a message of this age passes min_age= and max_age=. */
bool qfilter_age_match(const struct qfilter *f, uint64_t age_ms);

/* "active", "deferred", "held", "waiting" for one QSTATE_* bit. */
const char *qstate_name(unsigned state);

/*
 * Append s[0..n) to out[*o..cap) as the inside of a JSON string (no quotes):
 * '"' '\\' and control octets escaped, valid UTF-8 kept, every octet of an
 * invalid sequence written as \ufffd. false (and *o unchanged) when it does
 * not fit; out is then not terminated.
 */
bool json_escape(char *out, size_t cap, size_t *o, const char *s, size_t n);

#endif
