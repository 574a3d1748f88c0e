/*
 * envelope.h: one message's envelope, as the SMTP session builds it and the
 * spool stores and recovers it.
 *
 * Strings live in one growable buffer (buf) and are named by offset and
 * length, so an envelope is two allocations however many recipients it has
 * and moves between owners with a plain struct copy. An envelope is owned by
 * one thread at a time; env_free() releases both allocations.
 */
#ifndef RINGMAIL_CORE_ENVELOPE_H
#define RINGMAIL_CORE_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define QID_LEN 16 /* 16 upper-case hex digits */

enum env_flag {
    ENV_F_8BITMIME = 1u << 0, /* MAIL ... BODY=8BITMIME */
    ENV_F_SMTPUTF8 = 1u << 1, /* MAIL ... SMTPUTF8 */
    ENV_F_ESMTP = 1u << 2,    /* the client said EHLO */
};

struct env_str {
    uint32_t off, len;
};

struct env_rcpt {
    struct env_str addr;   /* without angle brackets */
    struct env_str params; /* the RCPT's ESMTP parameters as given, "" if none */
};

struct envelope {
    uint64_t id; /* queue id; text form in qid */
    char qid[QID_LEN + 1];
    uint64_t arrival;      /* unix time, seconds */
    uint64_t body_len;     /* octets stored, Received: header included */
    uint32_t flags;        /* ENV_F_* */
    struct env_str client; /* client address text, "192.0.2.1" or "2001:db8::1" */
    struct env_str helo;   /* the client's EHLO/HELO argument */
    struct env_str sender; /* "" for the null sender <> */
    struct env_str mail_params;
    struct env_rcpt *rcpt;
    uint32_t nrcpt, rcpt_cap;
    char *buf;
    uint32_t len, cap;
};

void env_init(struct envelope *e);
/* Forget the transaction but keep the allocations for the next one. */
void env_reset(struct envelope *e);
void env_free(struct envelope *e);

/* Copy p[0..n) into the envelope's buffer; 0 or -ENOMEM. */
int env_put(struct envelope *e, struct env_str *out, const char *p, size_t n);
/* Append a recipient (address and raw parameters); 0 or -ENOMEM. */
int env_add_rcpt(struct envelope *e, struct slice addr, struct slice params);

/* Valid until the envelope is changed, reset or freed. */
static inline struct slice
env_get(const struct envelope *e, struct env_str s)
{
    return (struct slice){ e->buf ? e->buf + s.off : "", s.len };
}

/* Deep copy (for handing an envelope to another owner); 0 or -ENOMEM. */
int env_copy(struct envelope *dst, const struct envelope *src);

/* Queue id text: 16 upper-case hex digits of id into out[QID_LEN + 1]. */
void qid_format(uint64_t id, char out[QID_LEN + 1]);
/* Parse a queue id; true on success. */
bool qid_parse(const char *s, uint64_t *id);

#endif
