/*
 * smtp_parse.c: command lines, paths and ESMTP parameters, parsed in place.
 *
 * Any thread; no state outside the caller's arguments. Output slices point
 * into the caller's input and never outlive it. No <ctype.h>: character
 * classes are spelled out in ASCII, so the locale can never change them.
 */
#include "core/smtp_parse.h"

#include <string.h>

#include "core/compiler.h"

/* ---- character classes (RFC 5321 4.1.2, RFC 6531 3.3) ---- */

static inline bool
is_alpha(unsigned char c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static inline bool
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool
is_alnum(unsigned char c)
{
    return is_alpha(c) || is_digit(c);
}

static inline bool
is_hex(unsigned char c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* atext without the UTF-8 extension */
static bool
is_atext(unsigned char c)
{
    if (is_alnum(c))
        return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '/':
    case '=':
    case '?':
    case '^':
    case '_':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
        return true;
    default:
        return false;
    }
}

/*
 * Length of the well-formed UTF-8 sequence (2..4 octets, no overlongs, no
 * surrogates, at most U+10FFFF) at p, or 0.
 */
static size_t
utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    }
    return n;
}

/* ---- command lines ---- */

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define VERB4(a, b, c, d)                                                                          \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#else
#define VERB4(a, b, c, d)                                                                          \
    ((uint32_t)(d) | (uint32_t)(c) << 8 | (uint32_t)(b) << 16 | (uint32_t)(a) << 24)
#endif

/*
 * The verb of a command word. | 0x20 folds exactly 'A'..'Z' onto 'a'..'z'
 * among the octets that can equal a lower-case letter afterwards, so the
 * folded compare is an exact case-insensitive compare (nginx ngx_str4cmp).
 */
static enum smtp_verb
verb_lookup(const char *p, size_t n)
{
    uint32_t v, v2;

    if (n == 4) {
        memcpy(&v, p, 4);
        switch (v | 0x20202020u) {
        case VERB4('h', 'e', 'l', 'o'):
            return SMTP_V_HELO;
        case VERB4('e', 'h', 'l', 'o'):
            return SMTP_V_EHLO;
        case VERB4('m', 'a', 'i', 'l'):
            return SMTP_V_MAIL;
        case VERB4('r', 'c', 'p', 't'):
            return SMTP_V_RCPT;
        case VERB4('d', 'a', 't', 'a'):
            return SMTP_V_DATA;
        case VERB4('b', 'd', 'a', 't'):
            return SMTP_V_BDAT;
        case VERB4('r', 's', 'e', 't'):
            return SMTP_V_RSET;
        case VERB4('n', 'o', 'o', 'p'):
            return SMTP_V_NOOP;
        case VERB4('q', 'u', 'i', 't'):
            return SMTP_V_QUIT;
        case VERB4('v', 'r', 'f', 'y'):
            return SMTP_V_VRFY;
        case VERB4('h', 'e', 'l', 'p'):
            return SMTP_V_HELP;
        case VERB4('e', 'x', 'p', 'n'):
            return SMTP_V_EXPN;
        case VERB4('a', 'u', 't', 'h'):
            return SMTP_V_AUTH;
        case VERB4('e', 't', 'r', 'n'):
            return SMTP_V_ETRN;
        case VERB4('t', 'u', 'r', 'n'):
            return SMTP_V_TURN;
        default:
            return SMTP_V_UNKNOWN;
        }
    }
    if (n == 8) {
        memcpy(&v, p, 4);
        memcpy(&v2, p + 4, 4);
        if ((v | 0x20202020u) == VERB4('s', 't', 'a', 'r') &&
            (v2 | 0x20202020u) == VERB4('t', 't', 'l', 's'))
            return SMTP_V_STARTTLS;
    }
    return SMTP_V_UNKNOWN;
}

enum smtp_parse_rc
smtp_parse_cmd(const char *buf, size_t len, const struct smtp_limits *lim, size_t *scanned,
               struct smtp_cmd *out, size_t *consumed)
{
    size_t limit = len < lim->max_line ? len : lim->max_line;
    const char *lf, *end, *p, *sp;

    if (*scanned > limit)
        *scanned = 0; /* not the buffer the cursor belonged to: rescan */
    lf = memchr(buf + *scanned, '\n', limit - *scanned);
    if (lf == NULL) {
        if (len >= lim->max_line) {
            *scanned = 0;
            *consumed = lim->max_line;
            return SMTP_PARSE_TOO_LONG;
        }
        *scanned = limit; /* resume here next call */
        return SMTP_PARSE_NEED_MORE;
    }
    *scanned = 0;
    *consumed = (size_t)(lf - buf) + 1;
    if (memchr(buf, '\0', (size_t)(lf - buf)) != NULL)
        return SMTP_PARSE_NUL;
    out->crlf = lf > buf && lf[-1] == '\r';
    end = out->crlf ? lf - 1 : lf;
    while (end > buf && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    sp = memchr(buf, ' ', (size_t)(end - buf));
    if (sp == NULL)
        sp = end;
    out->verb = verb_lookup(buf, (size_t)(sp - buf));
    out->verb_text = slice_make(buf, (size_t)(sp - buf));
    p = sp;
    while (p < end && *p == ' ')
        p++;
    out->arg = slice_make(p, (size_t)(end - p));
    return out->crlf ? SMTP_PARSE_OK : SMTP_PARSE_BARE_LF;
}

bool
smtp_parse_u64(struct slice s, uint64_t *out)
{
    uint64_t v = 0;

    if (s.len == 0 || s.len > 20)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        uint64_t d;

        if (!is_digit(c))
            return false;
        d = (uint64_t)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- paths (RFC 5321 4.1.2) ---- */

struct cursor {
    const unsigned char *p, *end;
    bool utf8;
};

/* sub-domain = Let-dig [Ldh-str]; a UTF-8 sequence counts as a Let-dig (U-label) */
static bool
parse_subdomain(struct cursor *c)
{
    bool last_hyphen = false;
    size_t n = 0;

    while (c->p < c->end) {
        unsigned char ch = *c->p;

        if (is_alnum(ch)) {
            c->p++;
            last_hyphen = false;
        } else if (ch == '-' && n > 0) {
            c->p++;
            last_hyphen = true;
        } else if (ch >= 0x80) {
            size_t k = utf8_len(c->p, c->end);

            if (k == 0)
                return false;
            c->p += k;
            c->utf8 = true;
            last_hyphen = false;
        } else {
            break;
        }
        n++;
    }
    return n > 0 && !last_hyphen;
}

static bool
parse_domain_name(struct cursor *c)
{
    if (!parse_subdomain(c))
        return false;
    while (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!parse_subdomain(c))
            return false;
    }
    return true;
}

/* Snum "." Snum "." Snum "." Snum over exactly [p, end) */
static bool
valid_ipv4(const unsigned char *p, const unsigned char *end)
{
    for (int i = 0; i < 4; i++) {
        unsigned v = 0, nd = 0;

        if (i > 0) {
            if (p >= end || *p != '.')
                return false;
            p++;
        }
        while (p < end && is_digit(*p) && nd < 3) {
            v = v * 10 + (unsigned)(*p - '0');
            p++;
            nd++;
        }
        if (nd == 0 || v > 255)
            return false;
    }
    return p == end;
}

/*
 * IPv6-addr over exactly [p, end): IPv6-full, IPv6-comp, IPv6v4-full or
 * IPv6v4-comp. With "::", at most 6 groups besides it (4 with an IPv4 tail).
 */
static bool
valid_ipv6(const unsigned char *p, const unsigned char *end)
{
    unsigned groups = 0;
    bool compressed = false;

    if (end - p >= 2 && p[0] == ':' && p[1] == ':') {
        compressed = true;
        p += 2;
        if (p == end)
            return true;
    } else if (p < end && *p == ':') {
        return false;
    }
    while (p < end) {
        const unsigned char *g = p;
        unsigned nd = 0;

        while (p < end && is_hex(*p) && nd < 5) {
            p++;
            nd++;
        }
        if (p < end && *p == '.') {
            /* an IPv4 tail: two groups' worth, and the end */
            if (!valid_ipv4(g, end))
                return false;
            groups += 2;
            p = end;
            break;
        }
        if (nd == 0 || nd > 4)
            return false;
        groups++;
        if (p == end)
            break;
        if (*p != ':')
            return false;
        p++;
        if (p < end && *p == ':') {
            if (compressed)
                return false;
            compressed = true;
            p++;
            if (p == end)
                break;
        } else if (p == end) {
            return false; /* trailing single ':' */
        }
    }
    return compressed ? groups <= 6 : groups == 8;
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General-address-literal ) "]" */
static bool
parse_addr_literal(struct cursor *c)
{
    const unsigned char *start = c->p + 1, *close, *colon, *q;

    close = memchr(start, ']', (size_t)(c->end - start));
    if (close == NULL)
        return false;
    c->p = close + 1;
    if (valid_ipv4(start, close))
        return true;
    colon = memchr(start, ':', (size_t)(close - start));
    if (colon == NULL || colon == start)
        return false;
    /* Standardized-tag = Ldh-str */
    for (q = start; q < colon; q++) {
        if (!is_alnum(*q) && !(*q == '-' && q > start && q + 1 < colon))
            return false;
    }
    if (colon - start == 4 && slice_eq_nocase(slice_make((const char *)start, 4), "ipv6"))
        return valid_ipv6(colon + 1, close);
    if (colon + 1 == close)
        return false;
    for (q = colon + 1; q < close; q++) {
        if (*q < 33 || *q > 126 || *q == '[' || *q == '\\')
            return false; /* dcontent = %d33-90 / %d94-126 */
    }
    return true;
}

static bool
parse_domain(struct cursor *c)
{
    if (c->p < c->end && *c->p == '[')
        return parse_addr_literal(c);
    return parse_domain_name(c);
}

/* Dot-string = Atom *("." Atom) */
static bool
parse_dot_string(struct cursor *c)
{
    bool need_atom = true;

    while (c->p < c->end) {
        unsigned char ch = *c->p;

        if (is_atext(ch)) {
            c->p++;
            need_atom = false;
        } else if (ch == '.' && !need_atom) {
            c->p++;
            need_atom = true;
        } else if (ch >= 0x80) {
            size_t k = utf8_len(c->p, c->end);

            if (k == 0)
                return false;
            c->p += k;
            c->utf8 = true;
            need_atom = false;
        } else {
            break;
        }
    }
    return !need_atom;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE */
static bool
parse_quoted_string(struct cursor *c)
{
    c->p++; /* the opening quote */
    while (c->p < c->end) {
        unsigned char ch = *c->p;

        if (ch == '"') {
            c->p++;
            return true;
        }
        if (ch == '\\') {
            if (c->p + 1 >= c->end || c->p[1] < 32 || c->p[1] > 126)
                return false;
            c->p += 2;
        } else if (ch >= 32 && ch <= 126) {
            c->p++;
        } else if (ch >= 0x80) {
            size_t k = utf8_len(c->p, c->end);

            if (k == 0)
                return false;
            c->p += k;
            c->utf8 = true;
        } else {
            return false;
        }
    }
    return false;
}

/* A-d-l = At-domain *( "," At-domain ) ":" */
static bool
parse_source_route(struct cursor *c)
{
    for (;;) {
        if (c->p >= c->end || *c->p != '@')
            return false;
        c->p++;
        if (!parse_domain(c))
            return false;
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == ':') {
            c->p++;
            return true;
        }
        return false;
    }
}

static enum smtp_path_rc
parse_params(struct slice s, unsigned max, struct smtp_path *out)
{
    const unsigned char *p = (const unsigned char *)s.p, *end = p + s.len;

    while (p < end) {
        struct smtp_param *prm;
        const unsigned char *k = p;

        if (out->nparam == max)
            return SMTP_PATH_TOO_MANY_PARAMS;
        if (!is_alnum(*p))
            return SMTP_PATH_BAD_PARAM;
        while (p < end && (is_alnum(*p) || *p == '-'))
            p++;
        prm = &out->param[out->nparam];
        prm->key = slice_make((const char *)k, (size_t)(p - k));
        prm->value = slice_make(NULL, 0);
        if (p < end && *p == '=') {
            const unsigned char *v = ++p;

            /* esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 too (RFC 6531) */
            while (p < end && *p != ' ') {
                if (*p == '=' || *p < 33 || *p == 127)
                    return SMTP_PATH_BAD_PARAM;
                p++;
            }
            if (p == v)
                return SMTP_PATH_BAD_PARAM;
            prm->value = slice_make((const char *)v, (size_t)(p - v));
        }
        out->nparam++;
        if (p < end && *p != ' ')
            return SMTP_PATH_BAD_PARAM;
        while (p < end && *p == ' ')
            p++;
    }
    return SMTP_PATH_OK;
}

enum smtp_path_rc
smtp_parse_path(struct slice arg, const char *keyword, unsigned flags,
                const struct smtp_limits *lim, struct smtp_path *out)
{
    size_t klen = strlen(keyword);
    size_t max_path = lim->max_path ? lim->max_path : SMTP_PATH_MAX;
    unsigned max_params = lim->max_params;
    struct cursor c;
    const unsigned char *lt, *mb;

    if (max_params == 0 || max_params > SMTP_PARAM_MAX)
        max_params = SMTP_PARAM_MAX;
    out->mailbox = slice_make(arg.p, 0);
    out->params = slice_make(arg.p + arg.len, 0);
    out->nparam = 0;
    out->null = out->postmaster = out->utf8 = false;

    if (!slice_prefix_nocase(arg, keyword))
        return SMTP_PATH_SYNTAX;
    c.p = (const unsigned char *)arg.p + klen;
    c.end = (const unsigned char *)arg.p + arg.len;
    c.utf8 = false;
    while (c.p < c.end && *c.p == ' ')
        c.p++; /* "MAIL FROM: <a@b>": lenient, as Postfix */
    if (c.p >= c.end || *c.p != '<')
        return SMTP_PATH_SYNTAX;
    lt = c.p++;

    if (c.p < c.end && *c.p == '>') {
        if (!(flags & SMTP_PATH_F_NULL_OK))
            return SMTP_PATH_BAD_ADDR;
        c.p++;
        out->null = true;
        mb = c.p - 1;
        out->mailbox = slice_make((const char *)mb, 0);
    } else {
        if (c.p < c.end && *c.p == '@' && !parse_source_route(&c))
            return SMTP_PATH_BAD_ADDR;
        mb = c.p;
        if (c.p < c.end && *c.p == '"') {
            if (!parse_quoted_string(&c))
                return SMTP_PATH_BAD_ADDR;
        } else if (!parse_dot_string(&c)) {
            return SMTP_PATH_BAD_ADDR;
        }
        if (c.p < c.end && *c.p == '>' && (flags & SMTP_PATH_F_POSTMASTER_OK) &&
            slice_eq_nocase(slice_make((const char *)mb, (size_t)(c.p - mb)), "postmaster")) {
            out->postmaster = true;
        } else {
            if (c.p >= c.end || *c.p != '@')
                return SMTP_PATH_BAD_ADDR;
            c.p++;
            if (!parse_domain(&c))
                return SMTP_PATH_BAD_ADDR;
        }
        if (c.p >= c.end || *c.p != '>')
            return SMTP_PATH_BAD_ADDR;
        out->mailbox = slice_make((const char *)mb, (size_t)(c.p - mb));
        c.p++;
    }
    if ((size_t)(c.p - lt) > max_path)
        return SMTP_PATH_TOO_LONG;
    out->utf8 = c.utf8;
    if (c.p < c.end && *c.p != ' ')
        return SMTP_PATH_BAD_ADDR; /* "<a@b>junk" */
    while (c.p < c.end && *c.p == ' ')
        c.p++;
    out->params = slice_make((const char *)c.p, (size_t)(c.end - c.p));
    return parse_params(out->params, max_params, out);
}
