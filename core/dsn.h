/*
 * dsn.h: delivery status notifications (RFC 3461 SMTP DSN extension,
 * RFC 3464 message/delivery-status, RFC 6522 multipart/report).
 *
 * Three pieces, all pure (no I/O, no clock reads: time comes in as unix
 * seconds), callable from any thread:
 *
 *   - parameter parsing: RET=, ENVID= (MAIL) and NOTIFY=, ORCPT= (RCPT),
 *     with xtext decoding and encoding (RFC 3461 section 4);
 *   - dsn_wanted(): whether a recipient's NOTIFY= asks for a report on a
 *     given outcome;
 *   - dsn_build(): the report message itself, appended to a growable buffer.
 *
 * Policy choices, in one place:
 *   - no DSN of any kind when the original sender is the null sender <>;
 *   - failure reports unless NOTIFY=NEVER or NOTIFY without FAILURE
 *     (absent NOTIFY means FAILURE, RFC 3461 4.1);
 *   - no delay report unless NOTIFY includes DELAY explicitly (RFC 3461
 *     leaves the absent case to the MTA; like Postfix without
 *     delay_warning_time we stay quiet);
 *   - success (delivered, relayed, expanded) only with NOTIFY=SUCCESS;
 *   - the original message is returned in full only when RET=FULL was given
 *     and the report contains a failure (RET governs failed DSNs only, RFC
 *     3461 4.3) and it fits in max_full octets (Postfix bounce_size_limit);
 *     otherwise its header section is returned as text/rfc822-headers.
 */
#ifndef RINGMAIL_CORE_DSN_H
#define RINGMAIL_CORE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/envelope.h"
#include "core/slice.h"

#define DSN_ENVID_MAX    100   /* ENVID xtext octets as sent (RFC 3461 4.4) */
#define DSN_ORCPT_MAX    500   /* ORCPT value octets as sent (RFC 3461 5) */
#define DSN_FULL_MAX_DEF 50000 /* returned-message octets: Postfix bounce_size_limit */

/* ---------------------------------------------------------------- params */

enum dsn_ret {
    DSN_RET_NONE = 0, /* no RET= given */
    DSN_RET_HDRS,
    DSN_RET_FULL,
};

enum dsn_notify_flag {
    DSN_NOTIFY_F_SUCCESS = 1u << 0,
    DSN_NOTIFY_F_FAILURE = 1u << 1,
    DSN_NOTIFY_F_DELAY = 1u << 2,
    DSN_NOTIFY_F_NEVER = 1u << 3, /* never combined with the others */
};

/*
 * DSN parameters of one MAIL command. Slices point into the text parsed and
 * are valid as long as it is. envid is the xtext as sent (validated:
 * decodable, printable US-ASCII once decoded, <= DSN_ENVID_MAX octets).
 */
struct dsn_mail {
    enum dsn_ret ret;
    struct slice envid; /* .p == NULL: no ENVID= */
};

/*
 * DSN parameters of one RCPT command. notify == 0: no NOTIFY= given.
 * orcpt_type is the addr-type atom ("rfc822"); orcpt is its xtext as sent
 * (validated like envid, non-empty, whole value <= DSN_ORCPT_MAX octets).
 */
struct dsn_rcpt {
    unsigned notify;         /* DSN_NOTIFY_F_* */
    struct slice orcpt_type; /* .p == NULL: no ORCPT= */
    struct slice orcpt;
};

enum dsn_param_rc {
    DSN_PARAM_OK = 0,
    DSN_PARAM_BAD_RET = -1,    /* RET not FULL or HDRS */
    DSN_PARAM_BAD_ENVID = -2,  /* missing/empty value, bad xtext, not printable */
    DSN_PARAM_ENVID_LONG = -3, /* more than DSN_ENVID_MAX octets */
    DSN_PARAM_BAD_NOTIFY = -4, /* unknown keyword, empty item, NEVER with others */
    DSN_PARAM_BAD_ORCPT = -5,  /* not atom ";" xtext, bad xtext, not printable */
    DSN_PARAM_ORCPT_LONG = -6, /* more than DSN_ORCPT_MAX octets */
    DSN_PARAM_DUPLICATE = -7,  /* the same DSN keyword twice on one command */
    DSN_PARAM_BAD_SYNTAX = -8, /* the parameter text is not keyword[=value] SP ... */
};

/*
 * The SMTP reply for a parse error ("501 5.5.4 Bad NOTIFY parameter syntax"),
 * a static string without CRLF; "" for DSN_PARAM_OK.
 */
const char *dsn_param_reply(enum dsn_param_rc rc);

/*
 * Single-value parsers, for a server walking its parsed parameter list
 * (value is the text after "="; value.p == NULL means there was no "=").
 * Each fills its field of *out and returns DSN_PARAM_OK or an error, leaving
 * *out's other fields alone. They do not detect duplicates: the caller does,
 * or uses dsn_parse_mail_params()/dsn_parse_rcpt_params().
 */
enum dsn_param_rc dsn_parse_ret(struct slice value, struct dsn_mail *out);
enum dsn_param_rc dsn_parse_envid(struct slice value, struct dsn_mail *out);
enum dsn_param_rc dsn_parse_notify(struct slice value, struct dsn_rcpt *out);
enum dsn_param_rc dsn_parse_orcpt(struct slice value, struct dsn_rcpt *out);

/*
 * Whole-line parsers over raw parameter text as stored in the envelope
 * ("RET=HDRS ENVID=abc BODY=8BITMIME"): SP-separated keyword[=value] items,
 * keywords matched without regard to case; non-DSN keywords are ignored.
 * *out is zeroed first. Slices point into params.
 */
enum dsn_param_rc dsn_parse_mail_params(struct slice params, struct dsn_mail *out);
enum dsn_param_rc dsn_parse_rcpt_params(struct slice params, struct dsn_rcpt *out);

/*
 * xtext (RFC 3461 4): xchar is "!" through "~" except "+" and "=";
 * anything else is "+" and two hex digits.
 *
 * dsn_xtext_encode() writes the xtext of in into out[0..cap) with upper-case
 * hex and returns its length, or -ENOSPC when it does not fit (out may be
 * NULL with cap 0 to learn the length). No NUL is written.
 *
 * dsn_xtext_decode() writes the decoded octets into out[0..cap) and returns
 * their count, -EINVAL for bad xtext (a character outside xchar, "+" not
 * followed by two hex digits), or -ENOSPC. Lower-case hex digits are
 * accepted when decoding (Postfix does too); the encoder never emits them.
 */
ssize_t dsn_xtext_encode(struct slice in, char *out, size_t cap);
ssize_t dsn_xtext_decode(struct slice in, char *out, size_t cap);

/* ------------------------------------------------------------ dsn_wanted */

enum dsn_action {
    DSN_ACTION_FAILED = 0,
    DSN_ACTION_DELAYED,
    DSN_ACTION_DELIVERED,
    DSN_ACTION_RELAYED,
    DSN_ACTION_EXPANDED,
};

/* "failed", "delayed", ... as in the Action: field. */
const char *dsn_action_str(enum dsn_action a);

/*
 * Whether the sender is owed a DSN for env->rcpt[rcpt_index] having reached
 * `action`, under the rules at the top of this file. False for the null
 * sender and for an index out of range. A NOTIFY= that does not parse (the
 * server never stores one) counts as absent.
 */
bool dsn_wanted(const struct envelope *env, uint32_t rcpt_index, enum dsn_action action);

/* ------------------------------------------------------------- dsn_build */

/*
 * Growable output buffer: p[0..len) is the text, cap its allocation (malloc).
 * Start from all zero; dsn_buf_free() releases it and zeroes it again.
 */
struct dsn_buf {
    char *p;
    size_t len, cap;
};

void dsn_buf_free(struct dsn_buf *b);

/* One recipient's outcome. Slices are borrowed for the dsn_build() call. */
struct dsn_rcpt_status {
    uint32_t rcpt; /* index into env->rcpt */
    enum dsn_action action;
    struct slice status;       /* "5.1.1"; if not class.subject.detail, one is
                                  derived from the action (5.0.0/4.0.0/2.0.0) */
    struct slice diag;         /* "smtp; 550 5.1.1 <x>: user unknown" or empty;
                                  without a "type;" prefix "X-ringmail; " is added */
    struct slice remote_mta;   /* host name of the remote MTA, empty if none */
    uint64_t last_attempt;     /* unix seconds; 0: no Last-Attempt-Date */
    uint64_t will_retry_until; /* unix seconds, delayed only; 0: none */
};

enum dsn_build_flag {
    /* Report every outcome given, ignore NOTIFY= and allow the null sender
       (a copy for the postmaster): the caller must then set to. */
    DSN_BUILD_F_ALL = 1u << 0,
    /* msg holds only the original's header section (RET=FULL degrades). */
    DSN_BUILD_F_HEADERS_ONLY = 1u << 1,
};

enum dsn_out_flag {
    DSN_OUT_F_8BIT = 1u << 0,     /* 8-bit octets in the body: send BODY=8BITMIME */
    DSN_OUT_F_SMTPUTF8 = 1u << 1, /* non-ASCII addresses/headers: send SMTPUTF8 */
};

struct dsn_report {
    const struct envelope *env;       /* the original message's envelope */
    const struct dsn_rcpt_status *rs; /* outcomes to report, in order */
    size_t nrs;
    struct slice myhostname; /* Reporting-MTA and MAILER-DAEMON@ */
    uint64_t now;            /* unix seconds: Date: */
    uint64_t seed;           /* fresh random value: Message-ID, boundary */
    struct slice msg;        /* the original message (or its headers) */
    size_t max_full;         /* 0: DSN_FULL_MAX_DEF */
    struct slice to;         /* To: override; .p == NULL: env->sender */
    unsigned flags;          /* DSN_BUILD_F_* */
};

/*
 * Append the report message (RFC 5322 header, then a multipart/report with
 * text/plain, message/delivery-status and message/rfc822 or
 * text/rfc822-headers) to out, strict CRLF, no line longer than 998 octets.
 * Outcomes for which dsn_wanted() is false are left out (unless
 * DSN_BUILD_F_ALL). The subject follows the most severe action present:
 * failed, then delayed, then success. Text copied from the envelope or the
 * outcomes into header fields has its control characters replaced, so a
 * diagnostic cannot start a field of its own; the returned original message
 * is copied with bare CR/LF made CRLF and lines over 998 octets broken.
 *
 * Returns 0 with *out_flags (if not NULL) set to DSN_OUT_F_*, -ENODATA when
 * no outcome is owed a report (nothing written), -EINVAL when the report
 * would have no recipient (null sender and no `to`) or an rcpt index is out
 * of range, -ENOMEM. On error out->len is what it was on entry.
 */
int dsn_build(const struct dsn_report *r, struct dsn_buf *out, unsigned *out_flags);

#endif
