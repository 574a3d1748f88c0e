/*
 * smtp_parse.h: the zero-copy SMTP command-line parser and the RFC 5321
 * path / ESMTP parameter parser (RFC 5321 4.1.2, 4.1.3, 4.5.3.1; RFC 6531).
 *
 * Pure functions: no allocation, no globals, no locale, no writes to the
 * input. Every struct slice returned points into the caller's buffer and is
 * valid exactly as long as that buffer is (the session uses them within one
 * smtp_session_input() call and copies what it keeps into the envelope).
 * Any thread.
 */
#ifndef RINGMAIL_CORE_SMTP_PARSE_H
#define RINGMAIL_CORE_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define SMTP_PATH_MAX  256 /* RFC 5321 4.5.3.1.3, '<' and '>' included */
#define SMTP_PARAM_MAX 16  /* ESMTP parameters on one MAIL/RCPT */

struct smtp_limits {
    size_t max_line;     /* command line octets including CRLF (>= 512) */
    size_t max_path;     /* reverse/forward-path octets incl. brackets; 0 = SMTP_PATH_MAX */
    unsigned max_params; /* ESMTP parameters; 0 or > SMTP_PARAM_MAX = SMTP_PARAM_MAX */
};

enum smtp_verb {
    SMTP_V_UNKNOWN = 0,
    SMTP_V_HELO,
    SMTP_V_EHLO,
    SMTP_V_MAIL,
    SMTP_V_RCPT,
    SMTP_V_DATA,
    SMTP_V_BDAT,
    SMTP_V_RSET,
    SMTP_V_NOOP,
    SMTP_V_QUIT,
    SMTP_V_VRFY,
    SMTP_V_HELP,
    SMTP_V_EXPN,
    SMTP_V_AUTH,
    SMTP_V_ETRN,
    SMTP_V_TURN,
    SMTP_V_STARTTLS,
};

struct smtp_cmd {
    enum smtp_verb verb;
    struct slice verb_text; /* the first word as sent */
    struct slice arg;       /* after the verb and its spaces, trailing SP/HT trimmed */
    bool crlf;              /* the line ended in CR LF (false: bare LF) */
};

enum smtp_parse_rc {
    SMTP_PARSE_OK = 0,         /* *out filled, *consumed octets used (through the LF) */
    SMTP_PARSE_NEED_MORE = -1, /* no LF yet; nothing consumed, *scanned advanced */
    SMTP_PARSE_TOO_LONG = -2,  /* no LF within lim->max_line; *consumed = max_line octets */
    SMTP_PARSE_BARE_LF = -3,   /* line ends in a bare LF; *out filled, line consumed */
    SMTP_PARSE_NUL = -4,       /* the line holds a NUL octet; line consumed */
};

/*
 * Parse one command line from buf[0..len). *scanned is the caller's cursor:
 * 0 for a new line, kept between calls while the result is NEED_MORE (the same
 * prefix of buf plus new bytes), reset to 0 by every other result, so trickled
 * input is scanned once. The LF is found with memchr; verbs are matched with a
 * 4-octet load folded with | 0x20202020.
 *
 * BARE_LF fills *out like OK: whether a bare-LF line is acceptable is the
 * caller's policy (bare_newline). Slices in *out point into buf.
 */
enum smtp_parse_rc smtp_parse_cmd(const char *buf, size_t len, const struct smtp_limits *lim,
                                  size_t *scanned, struct smtp_cmd *out, size_t *consumed);

struct smtp_param {
    struct slice key;   /* esmtp-keyword */
    struct slice value; /* esmtp-value; .p == NULL when there is no "=" */
};

struct smtp_path {
    struct slice mailbox; /* local-part@domain: no brackets, no source route; "" for <> */
    struct slice params;  /* the parameter text after the path, as sent ("" if none) */
    struct smtp_param param[SMTP_PARAM_MAX];
    unsigned nparam;
    bool null;       /* the path was <> */
    bool postmaster; /* the path was <postmaster> without a domain */
    bool utf8;       /* the mailbox holds non-ASCII (UTF-8) octets: needs SMTPUTF8 */
};

enum smtp_path_flag {
    SMTP_PATH_F_NULL_OK = 1u << 0,       /* <> accepted (MAIL FROM) */
    SMTP_PATH_F_POSTMASTER_OK = 1u << 1, /* <postmaster> accepted (RCPT TO) */
};

enum smtp_path_rc {
    SMTP_PATH_OK = 0,
    SMTP_PATH_SYNTAX = -1,          /* not "KEYWORD<...>": 501 5.5.4 Syntax */
    SMTP_PATH_BAD_ADDR = -2,        /* the path is not an RFC 5321 path: 501 5.1.x */
    SMTP_PATH_TOO_LONG = -3,        /* the path is longer than lim->max_path: 501 5.1.x */
    SMTP_PATH_BAD_PARAM = -4,       /* a parameter is not esmtp-keyword[=esmtp-value] */
    SMTP_PATH_TOO_MANY_PARAMS = -5, /* more than lim->max_params parameters */
};

/*
 * Parse a MAIL or RCPT argument: `keyword` ("FROM:" or "TO:", matched without
 * regard to case), optional spaces (lenient, as Postfix), "<" path ">", then
 * SP-separated ESMTP parameters. A source route (@a,@b:) is accepted and
 * dropped. Local parts are dot-strings or quoted-strings; domains are
 * sub-domains or address literals ([192.0.2.1], [IPv6:2001:db8::1], or a
 * general tag:content literal). UTF-8 is accepted in the mailbox and flagged
 * in out->utf8: the caller refuses it unless SMTPUTF8 was declared.
 * Slices in *out point into arg.
 */
enum smtp_path_rc smtp_parse_path(struct slice arg, const char *keyword, unsigned flags,
                                  const struct smtp_limits *lim, struct smtp_path *out);

/* Parse a decimal number of at most 20 digits that fits in uint64_t; true on success. */
bool smtp_parse_u64(struct slice s, uint64_t *out);

#endif
