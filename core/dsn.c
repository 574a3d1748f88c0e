/*
 * dsn.c: DSN parameters, NOTIFY rules and report generation (contract and
 * policy in dsn.h).
 *
 * Pure code, any thread: the caller passes time, randomness and the
 * original message in. The only allocations are the caller's output buffer
 * and one scratch buffer per dsn_build() call, both freed or handed back
 * before it returns.
 *
 * Untrusted text (addresses, HELO, remote replies, diagnostics) reaches the
 * report only through clean_put(), which turns every control character
 * (CR and LF included) into a space, and then through wrap_line(), which
 * re-folds the result: so no input can end a header line early or start a
 * field of its own, and no generated line is longer than LINE_MAX.
 */
#include "core/dsn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "core/compiler.h"
#include "core/log.h"

#define LINE_MAX_OCTETS 998 /* RFC 5322 2.1.1, CRLF excluded */
#define HDR_SOFT        78  /* RFC 5322 2.1.1 SHOULD */
#define TEXT_SOFT       76  /* the human-readable part */
#define HOST_MAX        253
#define FMT_MAX         512

/* ================================================================ params */

static bool
is_xchar(char c)
{
    return c >= '!' && c <= '~' && c != '+' && c != '=';
}

/*
 * Decode the xtext octet at in.p[*i], advancing *i; -1 on bad xtext.
 * The one decoder behind dsn_xtext_decode() and the validators.
 */
static int
xtext_next(struct slice in, size_t *i)
{
    char c = in.p[*i];
    int hi, lo;

    if (c != '+') {
        if (!is_xchar(c))
            return -1;
        (*i)++;
        return (unsigned char)c;
    }
    if (in.len - *i < 3)
        return -1;
    hi = hex_digit(in.p[*i + 1]);
    lo = hex_digit(in.p[*i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    *i += 3;
    return hi << 4 | lo;
}

ssize_t
dsn_xtext_decode(struct slice in, char *out, size_t cap)
{
    size_t i = 0, n = 0;

    while (i < in.len) {
        int c = xtext_next(in, &i);

        if (c < 0)
            return -EINVAL;
        if (n == cap)
            return -ENOSPC;
        out[n++] = (char)c;
    }
    return (ssize_t)n;
}

ssize_t
dsn_xtext_encode(struct slice in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (size_t i = 0; i < in.len; i++) {
        unsigned char c = (unsigned char)in.p[i];

        if (is_xchar((char)c)) {
            if (out != NULL && n + 1 <= cap)
                out[n] = (char)c;
            n += 1;
        } else {
            if (out != NULL && n + 3 <= cap) {
                out[n] = '+';
                out[n + 1] = hex[c >> 4];
                out[n + 2] = hex[c & 0xf];
            }
            n += 3;
        }
    }
    if (out != NULL && n > cap)
        return -ENOSPC;
    return (ssize_t)n;
}

/* Valid xtext whose decoded octets are printable US-ASCII (RFC 3461 4.2, 4.4). */
static bool
xtext_printable(struct slice x)
{
    size_t i = 0;

    while (i < x.len) {
        int c = xtext_next(x, &i);

        if (c < 0 || ((c < 0x20 || c > 0x7e) && c != '\t'))
            return false;
    }
    return true;
}

/* RFC 5322 atext, for the ORCPT addr-type atom. */
static bool
is_atext(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

enum dsn_param_rc
dsn_parse_ret(struct slice value, struct dsn_mail *out)
{
    if (value.p == NULL)
        return DSN_PARAM_BAD_RET;
    if (slice_eq_nocase(value, "FULL"))
        out->ret = DSN_RET_FULL;
    else if (slice_eq_nocase(value, "HDRS"))
        out->ret = DSN_RET_HDRS;
    else
        return DSN_PARAM_BAD_RET;
    return DSN_PARAM_OK;
}

enum dsn_param_rc
dsn_parse_envid(struct slice value, struct dsn_mail *out)
{
    if (value.p == NULL || value.len == 0)
        return DSN_PARAM_BAD_ENVID;
    if (value.len > DSN_ENVID_MAX)
        return DSN_PARAM_ENVID_LONG;
    if (!xtext_printable(value))
        return DSN_PARAM_BAD_ENVID;
    out->envid = value;
    return DSN_PARAM_OK;
}

enum dsn_param_rc
dsn_parse_notify(struct slice value, struct dsn_rcpt *out)
{
    unsigned flags = 0;
    size_t i = 0;

    if (value.p == NULL || value.len == 0)
        return DSN_PARAM_BAD_NOTIFY;
    while (i <= value.len) {
        size_t j = i;
        struct slice item;
        unsigned f;

        while (j < value.len && value.p[j] != ',')
            j++;
        item = slice_make(value.p + i, j - i);
        if (slice_eq_nocase(item, "NEVER"))
            f = DSN_NOTIFY_F_NEVER;
        else if (slice_eq_nocase(item, "SUCCESS"))
            f = DSN_NOTIFY_F_SUCCESS;
        else if (slice_eq_nocase(item, "FAILURE"))
            f = DSN_NOTIFY_F_FAILURE;
        else if (slice_eq_nocase(item, "DELAY"))
            f = DSN_NOTIFY_F_DELAY;
        else
            return DSN_PARAM_BAD_NOTIFY; /* unknown word or empty item */
        /* NEVER stands alone (RFC 3461 4.1), even next to another NEVER */
        if ((f == DSN_NOTIFY_F_NEVER && flags != 0) || (flags & DSN_NOTIFY_F_NEVER))
            return DSN_PARAM_BAD_NOTIFY;
        flags |= f;
        i = j + 1;
    }
    out->notify = flags;
    return DSN_PARAM_OK;
}

enum dsn_param_rc
dsn_parse_orcpt(struct slice value, struct dsn_rcpt *out)
{
    size_t i = 0;
    struct slice addr;

    if (value.p == NULL)
        return DSN_PARAM_BAD_ORCPT;
    if (value.len > DSN_ORCPT_MAX)
        return DSN_PARAM_ORCPT_LONG;
    while (i < value.len && is_atext(value.p[i]))
        i++;
    if (i == 0 || i == value.len || value.p[i] != ';')
        return DSN_PARAM_BAD_ORCPT;
    addr = slice_make(value.p + i + 1, value.len - i - 1);
    if (addr.len == 0 || !xtext_printable(addr))
        return DSN_PARAM_BAD_ORCPT;
    out->orcpt_type = slice_make(value.p, i);
    out->orcpt = addr;
    return DSN_PARAM_OK;
}

/* Iterate SP-separated keyword[=value] items of a raw parameter text. */
struct param_iter {
    struct slice text;
    size_t pos;
};

/* 1 with *key and *value filled, 0 at the end, -1 on "=value" without keyword. */
static int
param_next(struct param_iter *it, struct slice *key, struct slice *value)
{
    size_t i = it->pos, j, eq;

    while (i < it->text.len && (it->text.p[i] == ' ' || it->text.p[i] == '\t'))
        i++;
    if (i == it->text.len)
        return 0;
    j = i;
    while (j < it->text.len && it->text.p[j] != ' ' && it->text.p[j] != '\t')
        j++;
    it->pos = j;
    eq = i;
    while (eq < j && it->text.p[eq] != '=')
        eq++;
    if (eq == i)
        return -1;
    *key = slice_make(it->text.p + i, eq - i);
    *value = eq < j ? slice_make(it->text.p + eq + 1, j - eq - 1) : slice_make(NULL, 0);
    return 1;
}

enum dsn_param_rc
dsn_parse_mail_params(struct slice params, struct dsn_mail *out)
{
    struct param_iter it = { params, 0 };
    struct slice key, value;
    bool seen_ret = false, seen_envid = false;
    enum dsn_param_rc rc;
    int more;

    memset(out, 0, sizeof(*out));
    while ((more = param_next(&it, &key, &value)) > 0) {
        if (slice_eq_nocase(key, "RET")) {
            if (seen_ret)
                return DSN_PARAM_DUPLICATE;
            seen_ret = true;
            rc = dsn_parse_ret(value, out);
        } else if (slice_eq_nocase(key, "ENVID")) {
            if (seen_envid)
                return DSN_PARAM_DUPLICATE;
            seen_envid = true;
            rc = dsn_parse_envid(value, out);
        } else {
            continue;
        }
        if (rc != DSN_PARAM_OK)
            return rc;
    }
    return more < 0 ? DSN_PARAM_BAD_SYNTAX : DSN_PARAM_OK;
}

enum dsn_param_rc
dsn_parse_rcpt_params(struct slice params, struct dsn_rcpt *out)
{
    struct param_iter it = { params, 0 };
    struct slice key, value;
    bool seen_notify = false, seen_orcpt = false;
    enum dsn_param_rc rc;
    int more;

    memset(out, 0, sizeof(*out));
    while ((more = param_next(&it, &key, &value)) > 0) {
        if (slice_eq_nocase(key, "NOTIFY")) {
            if (seen_notify)
                return DSN_PARAM_DUPLICATE;
            seen_notify = true;
            rc = dsn_parse_notify(value, out);
        } else if (slice_eq_nocase(key, "ORCPT")) {
            if (seen_orcpt)
                return DSN_PARAM_DUPLICATE;
            seen_orcpt = true;
            rc = dsn_parse_orcpt(value, out);
        } else {
            continue;
        }
        if (rc != DSN_PARAM_OK)
            return rc;
    }
    return more < 0 ? DSN_PARAM_BAD_SYNTAX : DSN_PARAM_OK;
}

const char *
dsn_param_reply(enum dsn_param_rc rc)
{
    switch (rc) {
    case DSN_PARAM_OK:
        return "";
    case DSN_PARAM_BAD_RET:
        return "501 5.5.4 Bad RET parameter syntax";
    case DSN_PARAM_BAD_ENVID:
        return "501 5.5.4 Bad ENVID parameter syntax";
    case DSN_PARAM_ENVID_LONG:
        return "501 5.5.4 ENVID parameter too long";
    case DSN_PARAM_BAD_NOTIFY:
        return "501 5.5.4 Bad NOTIFY parameter syntax";
    case DSN_PARAM_BAD_ORCPT:
        return "501 5.5.4 Bad ORCPT parameter syntax";
    case DSN_PARAM_ORCPT_LONG:
        return "501 5.5.4 ORCPT parameter too long";
    case DSN_PARAM_DUPLICATE:
        return "501 5.5.4 Duplicate DSN parameter";
    case DSN_PARAM_BAD_SYNTAX:
        return "501 5.5.4 Bad parameter syntax";
    }
    return "501 5.5.4 Bad parameter syntax";
}

/* ============================================================ dsn_wanted */

const char *
dsn_action_str(enum dsn_action a)
{
    switch (a) {
    case DSN_ACTION_FAILED:
        return "failed";
    case DSN_ACTION_DELAYED:
        return "delayed";
    case DSN_ACTION_DELIVERED:
        return "delivered";
    case DSN_ACTION_RELAYED:
        return "relayed";
    case DSN_ACTION_EXPANDED:
        return "expanded";
    }
    return "failed";
}

static unsigned
rcpt_notify(const struct envelope *env, uint32_t i)
{
    struct dsn_rcpt p;

    if (dsn_parse_rcpt_params(env_get(env, env->rcpt[i].params), &p) != DSN_PARAM_OK)
        return 0;
    return p.notify;
}

bool
dsn_wanted(const struct envelope *env, uint32_t rcpt_index, enum dsn_action action)
{
    unsigned notify;

    if (env->sender.len == 0 || rcpt_index >= env->nrcpt)
        return false;
    notify = rcpt_notify(env, rcpt_index);
    switch (action) {
    case DSN_ACTION_FAILED:
        return notify == 0 || (notify & DSN_NOTIFY_F_FAILURE);
    case DSN_ACTION_DELAYED:
        return (notify & DSN_NOTIFY_F_DELAY) != 0;
    case DSN_ACTION_DELIVERED:
    case DSN_ACTION_RELAYED:
    case DSN_ACTION_EXPANDED:
        return (notify & DSN_NOTIFY_F_SUCCESS) != 0;
    }
    return false;
}

/* ============================================================= dsn_build */

void
dsn_buf_free(struct dsn_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Appends with a sticky out-of-memory flag, checked once at the end. */
struct writer {
    struct dsn_buf *b;
    bool oom;
};

static void
w_put(struct writer *w, const char *p, size_t n)
{
    struct dsn_buf *b = w->b;

    if (w->oom || n == 0)
        return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        char *np;

        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->oom = true;
                return;
            }
            cap *= 2;
        }
        np = realloc(b->p, cap);
        if (np == NULL) {
            w->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void
w_str(struct writer *w, const char *s)
{
    w_put(w, s, strlen(s));
}

static void
w_slice(struct writer *w, struct slice s)
{
    w_put(w, s.p, s.len);
}

/* Only for our own bounded text (host names, dates, ids): FMT_MAX is ample. */
static void PRINTF(2, 3) w_fmt(struct writer *w, const char *fmt, ...)
{
    char buf[FMT_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    BUG_ON(n < 0 || (size_t)n >= sizeof(buf));
    w_put(w, buf, (size_t)n);
}

/*
 * Append untrusted text: controls (CR, LF, NUL, DEL ...) become a space,
 * octets >= 0x80 are kept only when keep_8bit (a UTF-8 address in a
 * SMTPUTF8 report), '?' otherwise.
 */
static void
clean_put(struct writer *w, struct slice s, bool keep_8bit)
{
    size_t i = 0;

    while (i < s.len) {
        size_t j = i;
        unsigned char c;

        while (j < s.len) {
            c = (unsigned char)s.p[j];
            if (c < 0x20 || c == 0x7f || (c >= 0x80 && !keep_8bit))
                break;
            j++;
        }
        w_put(w, s.p + i, j - i);
        if (j == s.len)
            break;
        c = (unsigned char)s.p[j];
        w_put(w, c >= 0x80 ? "?" : " ", 1);
        i = j + 1;
    }
}

/*
 * Write text[0..n) (already cleaned: no CR, LF or controls) as one logical
 * line ending in CRLF: words joined by single spaces, a fold (CRLF + cont)
 * before a word that would pass `soft`, and a word too long for what is left
 * of LINE_MAX_OCTETS split across lines. Runs of spaces collapse to one,
 * which unfolding would do anyway.
 */
static void
wrap_line(struct writer *w, const char *p, size_t n, const char *cont, size_t soft)
{
    size_t contlen = strlen(cont), col = 0, i = 0;
    bool sep = false;

    while (i < n) {
        size_t j, len;

        while (i < n && p[i] == ' ')
            i++;
        if (i == n)
            break;
        for (j = i; j < n && p[j] != ' '; j++)
            ;
        len = j - i;
        if (sep) {
            if (col + 1 + len > soft) {
                w_put(w, "\r\n", 2);
                w_str(w, cont);
                col = contlen;
            } else {
                w_put(w, " ", 1);
                col++;
            }
        }
        while (len > 0) {
            size_t k = MIN(LINE_MAX_OCTETS - col, len);

            if (k == 0) {
                w_put(w, "\r\n", 2);
                w_str(w, cont);
                col = contlen;
                continue;
            }
            w_put(w, p + i, k);
            col += k;
            i += k;
            len -= k;
        }
        sep = true;
    }
    w_put(w, "\r\n", 2);
}

/* Build a line in the scratch buffer, then wrap it into the output. */
static void
scratch_flush(struct writer *out, struct writer *s, const char *cont, size_t soft)
{
    if (s->oom) {
        out->oom = true;
    } else {
        wrap_line(out, s->b->p, s->b->len, cont, soft);
    }
    s->b->len = 0;
}

/* "class.subject.detail" (RFC 3463): [245] "." 1*3digit "." 1*3digit */
static bool
status_ok(struct slice s)
{
    size_t i = 0;

    if (s.len < 5 || (s.p[0] != '2' && s.p[0] != '4' && s.p[0] != '5') || s.p[1] != '.')
        return false;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;

        while (i < s.len && s.p[i] >= '0' && s.p[i] <= '9' && d < 3) {
            i++;
            d++;
        }
        if (d == 0)
            return false;
        if (part == 0) {
            if (i == s.len || s.p[i] != '.')
                return false;
            i++;
        }
    }
    return i == s.len;
}

/* Length of a leading "diagnostic-type;" atom (0 if none). */
static size_t
diag_type_len(struct slice d)
{
    size_t i = 0;

    while (i < d.len && is_atext(d.p[i]) && d.p[i] != ';')
        i++;
    return (i > 0 && i < d.len && d.p[i] == ';') ? i : 0;
}

/* The diagnostic's text without its "type;" and the spaces after it. */
static struct slice
diag_text(struct slice d)
{
    size_t t = diag_type_len(d), i;

    if (t == 0)
        return d;
    i = t + 1;
    while (i < d.len && (d.p[i] == ' ' || d.p[i] == '\t'))
        i++;
    return slice_make(d.p + i, d.len - i);
}

static bool
has_8bit(struct slice s)
{
    for (size_t i = 0; i < s.len; i++) {
        if ((unsigned char)s.p[i] >= 0x80)
            return true;
    }
    return false;
}

/* Header section of a message: up to (not including) the first empty line. */
static size_t
header_len(struct slice m)
{
    size_t i = 0;

    while (i < m.len) {
        const char *nl;

        if (m.p[i] == '\n' || (m.p[i] == '\r' && i + 1 < m.len && m.p[i + 1] == '\n'))
            return i;
        nl = memchr(m.p + i, '\n', m.len - i);
        if (nl == NULL)
            return m.len;
        i = (size_t)(nl - m.p) + 1;
    }
    return m.len;
}

static bool
contains(struct slice hay, const char *needle, size_t n)
{
    const char *p = hay.p, *end = hay.p + hay.len;

    if (n == 0)
        return true;
    while ((size_t)(end - p) >= n) {
        const char *q = memchr(p, needle[0], (size_t)(end - p) - n + 1);

        if (q == NULL)
            return false;
        if (memcmp(q, needle, n) == 0)
            return true;
        p = q + 1;
    }
    return false;
}

/*
 * Copy the returned message: bare CR, bare LF and CRLF all become CRLF, a
 * line longer than LINE_MAX_OCTETS is broken with CRLF SP (as Postfix's
 * smtp_line_length_limit), and the copy ends with CRLF.
 */
static void
w_content(struct writer *w, struct slice m)
{
    size_t i = 0, col = 0;

    while (i < m.len) {
        size_t j = i;

        while (j < m.len && m.p[j] != '\r' && m.p[j] != '\n')
            j++;
        while (i < j) {
            size_t k = MIN(LINE_MAX_OCTETS - col, j - i);

            if (k == 0) {
                w_put(w, "\r\n ", 3);
                col = 1;
                continue;
            }
            w_put(w, m.p + i, k);
            col += k;
            i += k;
        }
        if (j == m.len)
            break;
        w_put(w, "\r\n", 2);
        col = 0;
        i = j + 1;
        if (m.p[j] == '\r' && i < m.len && m.p[i] == '\n')
            i++;
    }
    if (col > 0)
        w_put(w, "\r\n", 2);
}

/* Host name for our own fields: DNS-ish characters only, never empty. */
static void
clean_host(char out[HOST_MAX + 1], struct slice h)
{
    size_t n = 0;

    for (size_t i = 0; i < h.len && n < HOST_MAX; i++) {
        char c = h.p[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '-' || c == '_' || c == '[' || c == ']' || c == ':')
            out[n++] = c;
    }
    if (n == 0) {
        memcpy(out, "localhost", 9);
        n = 9;
    }
    out[n] = '\0';
}

enum kind {
    KIND_FAILED = 0,
    KIND_DELAYED,
    KIND_SUCCESS,
};

static enum kind
action_kind(enum dsn_action a)
{
    return a == DSN_ACTION_FAILED    ? KIND_FAILED
           : a == DSN_ACTION_DELAYED ? KIND_DELAYED
                                     : KIND_SUCCESS;
}

static bool
owed(const struct dsn_report *r, const struct dsn_rcpt_status *s)
{
    return (r->flags & DSN_BUILD_F_ALL) || dsn_wanted(r->env, s->rcpt, s->action);
}

/* Everything dsn_build() decides before writing. */
struct plan {
    enum kind kind;
    bool utf8;  /* a reported address is non-ASCII: RFC 6533 types */
    bool full;  /* return the whole message */
    bool body8; /* the returned content has 8-bit octets */
    struct slice content;
    struct slice to;
    struct dsn_mail mail;
    char host[HOST_MAX + 1];
    char boundary[64];
    uint64_t retry_until; /* latest Will-Retry-Until among delayed outcomes */
};

static int
plan_report(const struct dsn_report *r, struct plan *pl)
{
    const struct envelope *env = r->env;
    size_t max_full = r->max_full ? r->max_full : DSN_FULL_MAX_DEF;
    size_t nowed = 0, hlen;
    uint64_t seed = r->seed;

    memset(pl, 0, sizeof(*pl));
    pl->kind = KIND_SUCCESS;
    for (size_t i = 0; i < r->nrs; i++) {
        const struct dsn_rcpt_status *s = &r->rs[i];

        if (s->rcpt >= env->nrcpt)
            return -EINVAL;
        if (!owed(r, s))
            continue;
        nowed++;
        pl->kind = MIN(pl->kind, action_kind(s->action));
        if (has_8bit(env_get(env, env->rcpt[s->rcpt].addr)))
            pl->utf8 = true;
        if (s->action == DSN_ACTION_DELAYED)
            pl->retry_until = MAX(pl->retry_until, s->will_retry_until);
    }
    if (nowed == 0)
        return -ENODATA;
    pl->to = r->to.p != NULL ? r->to : env_get(env, env->sender);
    if (pl->to.len == 0)
        return -EINVAL;
    if (has_8bit(pl->to) || has_8bit(env_get(env, env->sender)))
        pl->utf8 = true;

    /* a stored MAIL parameter text that no longer parses counts as absent */
    if (dsn_parse_mail_params(env_get(env, env->mail_params), &pl->mail) != DSN_PARAM_OK)
        memset(&pl->mail, 0, sizeof(pl->mail));

    pl->full = pl->mail.ret == DSN_RET_FULL && pl->kind == KIND_FAILED &&
               !(r->flags & DSN_BUILD_F_HEADERS_ONLY) && r->msg.len <= max_full;
    if (pl->full) {
        pl->content = r->msg;
    } else {
        hlen = header_len(r->msg);
        if (hlen > max_full) {
            /* keep whole lines where there is a line end to cut at */
            const char *p = r->msg.p;
            size_t cut = max_full;

            while (cut > 0 && p[cut - 1] != '\n')
                cut--;
            hlen = cut > 0 ? cut : max_full;
        }
        pl->content = slice_make(r->msg.p, hlen);
    }
    pl->body8 = has_8bit(pl->content);

    clean_host(pl->host, r->myhostname);
    /* "=_" cannot occur in quoted-printable or base64 text; the seed makes
       a collision with the returned content unlikely and the loop makes it
       impossible */
    for (;;) {
        int n = snprintf(pl->boundary, sizeof(pl->boundary), "=_ringmail_%016" PRIx64 "_%s", seed,
                         env->qid);

        BUG_ON(n < 0 || (size_t)n >= sizeof(pl->boundary));
        if (!contains(pl->content, pl->boundary, (size_t)n))
            break;
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    return 0;
}

static void
write_header(struct writer *w, struct writer *s, const struct dsn_report *r, const struct plan *pl)
{
    static const char *const subject[] = {
        [KIND_FAILED] = "Undelivered Mail Returned to Sender",
        [KIND_DELAYED] = "Delayed Mail (still being retried)",
        [KIND_SUCCESS] = "Successful Mail Delivery Report",
    };
    char date[64];

    w_fmt(w, "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\r\n", pl->host);
    w_str(s, "To: <");
    clean_put(s, pl->to, pl->utf8);
    w_str(s, ">");
    scratch_flush(w, s, " ", HDR_SOFT);
    w_fmt(w, "Subject: %s\r\n", subject[pl->kind]);
    rfc5322_date(date, sizeof(date), r->now);
    w_fmt(w, "Date: %s\r\n", date);
    w_fmt(w, "Message-ID: <%" PRIu64 ".%016" PRIx64 ".%s@%s>\r\n", r->now, r->seed,
          r->env->qid[0] ? r->env->qid : "dsn", pl->host);
    w_str(w, "Auto-Submitted: auto-replied\r\n");
    w_str(w, "MIME-Version: 1.0\r\n");
    w_fmt(w, "Content-Type: multipart/report; report-type=%s;\r\n\tboundary=\"%s\"\r\n",
          pl->utf8 ? "global-delivery-status" : "delivery-status", pl->boundary);
    if (pl->body8 || pl->utf8)
        w_str(w, "Content-Transfer-Encoding: 8bit\r\n");
    w_str(w, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
}

/* One recipient's line in the human-readable part, built in s. */
static void
text_rcpt(struct writer *s, const struct dsn_report *r, const struct plan *pl,
          const struct dsn_rcpt_status *rs)
{
    struct slice diag = diag_text(rs->diag);
    bool remote = rs->remote_mta.len > 0;

    w_str(s, "<");
    clean_put(s, env_get(r->env, r->env->rcpt[rs->rcpt].addr), pl->utf8);
    w_str(s, ">: ");
    if (action_kind(rs->action) != pl->kind) {
        w_str(s, "(");
        w_str(s, dsn_action_str(rs->action));
        w_str(s, ") ");
    }
    switch (rs->action) {
    case DSN_ACTION_FAILED:
    case DSN_ACTION_DELAYED:
        if (remote) {
            w_str(s, "host ");
            clean_put(s, rs->remote_mta, false);
            w_str(s, " said: ");
        }
        if (diag.len > 0) {
            clean_put(s, diag, false);
        } else {
            w_str(s, rs->action == DSN_ACTION_FAILED ? "delivery failed, status "
                                                     : "delivery temporarily failed, status ");
            clean_put(s, rs->status, false);
        }
        return;
    case DSN_ACTION_DELIVERED:
        w_str(s, remote ? "delivery via " : "delivered");
        break;
    case DSN_ACTION_RELAYED:
        w_str(s, remote ? "relayed to " : "relayed to a mail system that does not report status");
        break;
    case DSN_ACTION_EXPANDED:
        w_str(s, "alias expanded");
        remote = false;
        break;
    }
    if (remote)
        clean_put(s, rs->remote_mta, false);
    if (diag.len > 0) {
        w_str(s, ": ");
        clean_put(s, diag, false);
    }
}

static void
write_text_part(struct writer *w, struct writer *s, const struct dsn_report *r,
                const struct plan *pl)
{
    w_fmt(w, "--%s\r\n", pl->boundary);
    w_str(w, "Content-Description: Notification\r\n");
    if (pl->utf8)
        w_str(w, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n");
    else
        w_str(w, "Content-Type: text/plain; charset=us-ascii\r\n");
    w_fmt(w, "\r\nThis is the mail system at host %s.\r\n\r\n", pl->host);
    switch (pl->kind) {
    case KIND_FAILED:
        w_str(w, "I'm sorry to have to inform you that your message could not\r\n"
                 "be delivered to one or more recipients. It's attached below.\r\n\r\n");
        break;
    case KIND_DELAYED: {
        uint64_t hours = r->now > r->env->arrival ? (r->now - r->env->arrival) / 3600 : 0;

        w_str(w, "####################################################################\r\n"
                 "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
                 "####################################################################\r\n\r\n");
        if (hours > 0)
            w_fmt(w, "Your message could not be delivered for more than %" PRIu64 " hour(s).\r\n",
                  hours);
        else
            w_str(w, "Your message could not be delivered yet.\r\n");
        if (pl->retry_until > 0) {
            char date[64];

            rfc5322_date(date, sizeof(date), pl->retry_until);
            w_fmt(w, "It will be retried until %s.\r\n", date);
        }
        w_str(w, "\r\n");
        break;
    }
    case KIND_SUCCESS:
        w_str(w, "Your message was successfully delivered to the destination(s)\r\n"
                 "listed below. If the message was delivered to mailbox you will\r\n"
                 "receive no further notifications. Otherwise you may still receive\r\n"
                 "notifications of mail delivery errors from other systems.\r\n\r\n");
        break;
    }
    if (pl->kind != KIND_SUCCESS) {
        w_str(w, "For further assistance, please send mail to postmaster.\r\n\r\n"
                 "If you do so, please include this problem report. You can\r\n"
                 "delete your own text from the attached returned message.\r\n\r\n");
    }
    w_str(w, "                   The mail system\r\n");
    for (size_t i = 0; i < r->nrs; i++) {
        if (!owed(r, &r->rs[i]))
            continue;
        w_str(w, "\r\n");
        text_rcpt(s, r, pl, &r->rs[i]);
        scratch_flush(w, s, "    ", TEXT_SOFT);
    }
}

static void
write_rcpt_fields(struct writer *w, struct writer *s, const struct dsn_report *r,
                  const struct plan *pl, const struct dsn_rcpt_status *rs)
{
    static const char *const fallback[] = {
        [KIND_FAILED] = "5.0.0",
        [KIND_DELAYED] = "4.0.0",
        [KIND_SUCCESS] = "2.0.0",
    };
    const struct envelope *env = r->env;
    struct dsn_rcpt p;
    char date[64];

    w_str(s, pl->utf8 ? "Final-Recipient: utf-8; " : "Final-Recipient: rfc822; ");
    clean_put(s, env_get(env, env->rcpt[rs->rcpt].addr), pl->utf8);
    scratch_flush(w, s, " ", HDR_SOFT);

    if (dsn_parse_rcpt_params(env_get(env, env->rcpt[rs->rcpt].params), &p) == DSN_PARAM_OK &&
        p.orcpt_type.p != NULL) {
        char dec[DSN_ORCPT_MAX];
        ssize_t n = dsn_xtext_decode(p.orcpt, dec, sizeof(dec));

        if (n > 0) {
            w_str(s, "Original-Recipient: ");
            clean_put(s, p.orcpt_type, false);
            w_str(s, ";");
            clean_put(s, slice_make(dec, (size_t)n), false);
            scratch_flush(w, s, " ", HDR_SOFT);
        }
    }
    w_fmt(w, "Action: %s\r\n", dsn_action_str(rs->action));
    w_str(w, "Status: ");
    if (status_ok(rs->status))
        w_slice(w, rs->status);
    else
        w_str(w, fallback[action_kind(rs->action)]);
    w_str(w, "\r\n");
    if (rs->remote_mta.len > 0) {
        w_str(s, "Remote-MTA: dns; ");
        clean_put(s, rs->remote_mta, false);
        scratch_flush(w, s, " ", HDR_SOFT);
    }
    if (rs->diag.len > 0) {
        w_str(s, "Diagnostic-Code: ");
        if (diag_type_len(rs->diag) == 0)
            w_str(s, "X-ringmail; ");
        clean_put(s, rs->diag, false);
        scratch_flush(w, s, " ", HDR_SOFT);
    }
    if (rs->last_attempt > 0) {
        rfc5322_date(date, sizeof(date), rs->last_attempt);
        w_fmt(w, "Last-Attempt-Date: %s\r\n", date);
    }
    if (rs->action == DSN_ACTION_DELAYED && rs->will_retry_until > 0) {
        rfc5322_date(date, sizeof(date), rs->will_retry_until);
        w_fmt(w, "Will-Retry-Until: %s\r\n", date);
    }
}

static void
write_status_part(struct writer *w, struct writer *s, const struct dsn_report *r,
                  const struct plan *pl)
{
    const struct envelope *env = r->env;
    char date[64];

    w_fmt(w, "\r\n--%s\r\n", pl->boundary);
    w_str(w, "Content-Description: Delivery report\r\n");
    if (pl->utf8)
        w_str(w, "Content-Type: message/global-delivery-status\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n");
    else
        w_str(w, "Content-Type: message/delivery-status\r\n\r\n");

    w_fmt(w, "Reporting-MTA: dns; %s\r\n", pl->host);
    if (env->qid[0])
        w_fmt(w, "X-Ringmail-Queue-ID: %.16s\r\n", env->qid);
    if (env->sender.len > 0) {
        w_str(s, pl->utf8 ? "X-Ringmail-Sender: utf-8; " : "X-Ringmail-Sender: rfc822; ");
        clean_put(s, env_get(env, env->sender), pl->utf8);
        scratch_flush(w, s, " ", HDR_SOFT);
    }
    if (pl->mail.envid.p != NULL) {
        char dec[DSN_ENVID_MAX];
        ssize_t n = dsn_xtext_decode(pl->mail.envid, dec, sizeof(dec));

        if (n > 0) {
            w_str(s, "Original-Envelope-Id: ");
            clean_put(s, slice_make(dec, (size_t)n), false);
            scratch_flush(w, s, " ", HDR_SOFT);
        }
    }
    if (env->helo.len > 0) {
        w_str(s, "Received-From-MTA: dns; ");
        clean_put(s, env_get(env, env->helo), false);
        if (env->client.len > 0) {
            w_str(s, " (");
            clean_put(s, env_get(env, env->client), false);
            w_str(s, ")");
        }
        scratch_flush(w, s, " ", HDR_SOFT);
    }
    if (env->arrival > 0) {
        rfc5322_date(date, sizeof(date), env->arrival);
        w_fmt(w, "Arrival-Date: %s\r\n", date);
    }
    for (size_t i = 0; i < r->nrs; i++) {
        if (!owed(r, &r->rs[i]))
            continue;
        w_str(w, "\r\n");
        write_rcpt_fields(w, s, r, pl, &r->rs[i]);
    }
}

static void
write_message_part(struct writer *w, const struct plan *pl)
{
    bool global = pl->utf8 && pl->body8;

    w_fmt(w, "\r\n--%s\r\n", pl->boundary);
    if (pl->full) {
        w_str(w, "Content-Description: Undelivered Message\r\n");
        w_str(w, global ? "Content-Type: message/global\r\n" : "Content-Type: message/rfc822\r\n");
    } else {
        w_str(w, "Content-Description: Undelivered Message Headers\r\n");
        w_str(w, global ? "Content-Type: message/global-headers\r\n"
                        : "Content-Type: text/rfc822-headers\r\n");
    }
    if (pl->body8)
        w_str(w, "Content-Transfer-Encoding: 8bit\r\n");
    w_str(w, "\r\n");
    if (pl->content.len > 0)
        w_content(w, pl->content);
    else
        w_str(w, "\r\n"); /* the delimiter's own CRLF must follow the blank line */
    w_fmt(w, "--%s--\r\n", pl->boundary);
}

int
dsn_build(const struct dsn_report *r, struct dsn_buf *out, unsigned *out_flags)
{
    struct dsn_buf scratch = { 0 };
    struct writer w = { out, false }, s = { &scratch, false };
    size_t start = out->len;
    struct plan pl;
    int rc;

    rc = plan_report(r, &pl);
    if (rc < 0)
        return rc;
    write_header(&w, &s, r, &pl);
    write_text_part(&w, &s, r, &pl);
    write_status_part(&w, &s, r, &pl);
    write_message_part(&w, &pl);
    dsn_buf_free(&scratch);
    if (w.oom || s.oom) {
        out->len = start;
        return -ENOMEM;
    }
    if (out_flags != NULL) {
        *out_flags = 0;
        if (pl.body8 || pl.utf8)
            *out_flags |= DSN_OUT_F_8BIT;
        if (pl.utf8)
            *out_flags |= DSN_OUT_F_SMTPUTF8;
    }
    return 0;
}
