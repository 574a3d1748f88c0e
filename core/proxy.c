/*
 * proxy.c: the PROXY protocol v1/v2 header parser (see proxy.h).
 *
 * Pure: reads buf[0..len) only, writes only the caller's outputs, keeps no
 * state. Any thread.
 *
 * Every field is checked octet by octet as it arrives, by small state
 * machines (an IPv4 address, an IPv6 address, a port) that reject an octet
 * the moment no continuation could make the field valid. So a prefix is
 * either still viable (NEED_MORE) or BAD at once, and a sender that is not a
 * PROXY-speaking load balancer (a client saying "EHLO") is turned away at its
 * first octet instead of being waited for. Addresses are formatted to text by
 * hand: core/ includes no socket headers, so there is no inet_ntop() here.
 */
#include "core/proxy.h"

#include <string.h>

#include "core/compiler.h"
#include "core/slice.h"

enum sm_rc {
    SM_OK = 0,
    SM_BAD = -1,
};

/* ---- field state machines ---- */

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A decimal number without leading zeros, at most max: a v1 port or an IPv4 octet. */
struct dec_sm {
    unsigned ndig; /* digits seen */
    uint32_t val;
};

static enum sm_rc
dec_feed(struct dec_sm *d, char c, uint32_t max)
{
    if (!is_digit(c))
        return SM_BAD;
    if (d->ndig > 0 && d->val == 0)
        return SM_BAD; /* leading zero: the spec forbids them (octal confusion) */
    d->val = d->val * 10 + (uint32_t)(c - '0');
    if (d->val > max)
        return SM_BAD;
    d->ndig++; /* bounded: val <= max and no leading zero */
    return SM_OK;
}

/* Dotted-quad IPv4: four dec_sm octets separated by single dots. */
struct v4_sm {
    uint8_t out[4];
    unsigned nparts; /* octets completed (followed by a dot) */
    struct dec_sm cur;
};

static enum sm_rc
v4_feed(struct v4_sm *s, char c)
{
    if (c == '.') {
        if (s->cur.ndig == 0 || s->nparts == 3)
            return SM_BAD;
        s->out[s->nparts++] = (uint8_t)s->cur.val;
        s->cur = (struct dec_sm){ 0 };
        return SM_OK;
    }
    return dec_feed(&s->cur, c, 255);
}

static enum sm_rc
v4_finish(struct v4_sm *s)
{
    if (s->cur.ndig == 0 || s->nparts != 3)
        return SM_BAD;
    s->out[3] = (uint8_t)s->cur.val;
    return SM_OK;
}

/*
 * IPv6 text, accepting what inet_pton(AF_INET6) does. Invariants between
 * octets: ng groups are complete; gap is where "::" stands (or -1), and it
 * stands for at least one group, so at most 7 explicit groups go with it;
 * a group is never started that could not fit.
 */
struct v6_sm {
    uint16_t w[8];
    unsigned ng;      /* complete groups in w */
    int gap;          /* index in w where "::" expands, -1 without one */
    unsigned ndig;    /* hex digits of the current group */
    uint32_t hv;      /* the current group's value, read as hex */
    struct dec_sm dv; /* the same digits read as a decimal octet, for an IPv4 tail */
    bool dec_ok;      /* the current digits could still be an IPv4 octet */
    bool colon;       /* the last octet was ':' */
    bool dcolon;      /* the last two octets were "::" */
    bool any;         /* at least one octet seen */
    bool in4;         /* inside the dotted IPv4 tail */
    struct v4_sm v4;
};

static unsigned
v6_max_groups(const struct v6_sm *s)
{
    return s->gap >= 0 ? 7 : 8;
}

static enum sm_rc
v6_feed(struct v6_sm *s, char c)
{
    bool first = !s->any;
    int h;

    s->any = true;
    if (s->in4)
        return v4_feed(&s->v4, c);
    if (c == ':') {
        if (s->colon) { /* the second colon of "::" */
            if (s->gap >= 0 || s->dcolon)
                return SM_BAD;
            s->gap = (int)s->ng;
            s->dcolon = true;
            return SM_OK;
        }
        if (s->ndig == 0) {
            if (!first)
                return SM_BAD;
            s->colon = true; /* a leading ':' must be the start of "::" */
            return SM_OK;
        }
        s->w[s->ng++] = (uint16_t)s->hv;
        s->ndig = 0;
        s->hv = 0;
        /* a single ':' promises another group (or "::", which needs room too) */
        if (s->ng >= v6_max_groups(s))
            return SM_BAD;
        s->colon = true;
        return SM_OK;
    }
    if (c == '.') {
        /* the digits so far were the first octet of an IPv4 tail: the last
           two groups, after at least one colon */
        if (s->ndig == 0 || !s->dec_ok)
            return SM_BAD;
        if (s->gap < 0 ? s->ng != 6 : s->ng + 2 > 7)
            return SM_BAD; /* also a bare IPv4 address (no colon at all) */
        s->in4 = true;
        s->v4 = (struct v4_sm){ .nparts = 1, .out = { (uint8_t)s->dv.val } };
        return SM_OK;
    }
    h = hex_digit(c);
    if (h < 0)
        return SM_BAD;
    if (s->ndig == 0) { /* a new group */
        if (s->colon && !s->dcolon && s->ng == 0)
            return SM_BAD; /* ":1": a lone leading colon */
        if (s->ng + 1 > v6_max_groups(s))
            return SM_BAD;
        s->dv = (struct dec_sm){ 0 };
        s->dec_ok = true;
    }
    if (s->ndig == 4)
        return SM_BAD;
    s->ndig++;
    s->hv = s->hv * 16 + (uint32_t)h;
    if (s->dec_ok && dec_feed(&s->dv, c, 255) != SM_OK)
        s->dec_ok = false;
    s->colon = false;
    s->dcolon = false;
    return SM_OK;
}

static enum sm_rc
v6_finish(struct v6_sm *s, uint8_t out[16])
{
    unsigned tail;

    if (s->in4) {
        if (v4_finish(&s->v4) != SM_OK)
            return SM_BAD;
        s->w[s->ng++] = (uint16_t)(s->v4.out[0] << 8 | s->v4.out[1]);
        s->w[s->ng++] = (uint16_t)(s->v4.out[2] << 8 | s->v4.out[3]);
    } else if (s->ndig > 0) {
        s->w[s->ng++] = (uint16_t)s->hv;
    } else if (!s->dcolon) {
        return SM_BAD; /* empty, or a trailing single ':' */
    }
    if (s->gap < 0 && s->ng != 8)
        return SM_BAD;
    /* groups before the gap at the front, those after it at the back */
    memset(out, 0, 16);
    tail = s->gap < 0 ? 0 : s->ng - (unsigned)s->gap;
    for (unsigned i = 0; i < s->ng - tail; i++) {
        out[2 * i] = (uint8_t)(s->w[i] >> 8);
        out[2 * i + 1] = (uint8_t)s->w[i];
    }
    for (unsigned i = 0; i < tail; i++) {
        unsigned k = 8 - tail + i;

        out[2 * k] = (uint8_t)(s->w[s->ng - tail + i] >> 8);
        out[2 * k + 1] = (uint8_t)s->w[s->ng - tail + i];
    }
    return SM_OK;
}

/* ---- text output ---- */

static char *
put_dec(char *p, unsigned v)
{
    char tmp[10];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

static void
format_v4(char out[PROXY_ADDR_MAX], const uint8_t a[4])
{
    char *p = out;

    for (int i = 0; i < 4; i++) {
        if (i > 0)
            *p++ = '.';
        p = put_dec(p, a[i]);
    }
    *p = '\0';
}

/* RFC 5952 section 4: lower case, no leading zeros, the longest run of two or
   more zero groups (the first of equal runs) compressed to "::". */
static void
format_v6(char out[PROXY_ADDR_MAX], const uint8_t a[16])
{
    static const char hex[] = "0123456789abcdef";
    unsigned w[8];
    int best = -1, best_len = 0, run = 0;
    char *p = out;

    for (int i = 0; i < 8; i++) {
        w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        run = w[i] == 0 ? run + 1 : 0;
        if (run > best_len) {
            best_len = run;
            best = i - run + 1;
        }
    }
    if (best_len < 2)
        best = -1;
    for (int i = 0; i < 8; i++) {
        if (best >= 0 && i >= best && i < best + best_len) {
            if (i == best)
                *p++ = ':';
            continue;
        }
        if (i > 0)
            *p++ = ':';
        for (int shift = 12; shift >= 0; shift -= 4) {
            if ((w[i] >> shift) != 0 || shift == 0)
                *p++ = hex[(w[i] >> shift) & 0xf];
        }
    }
    if (best >= 0 && best + best_len == 8)
        *p++ = ':';
    *p = '\0';
}

/*
 * Store one address into its[16], *is_v6 and text: an IPv4-mapped IPv6
 * address becomes the IPv4 address.
 */
static void
store_addr(uint8_t its[16], bool *is_v6, char text[PROXY_ADDR_MAX], const uint8_t *raw, bool v6)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    memset(its, 0, 16);
    if (v6 && memcmp(raw, mapped, sizeof(mapped)) == 0) {
        raw += sizeof(mapped);
        v6 = false;
    }
    memcpy(its, raw, v6 ? 16 : 4);
    *is_v6 = v6;
    if (v6)
        format_v6(text, its);
    else
        format_v4(text, its);
}

/* ---- version 1 ---- */

/*
 * Match buf[*i..) against lit, advancing *i. NEED_MORE when buf ends inside
 * a matching prefix.
 */
static enum proxy_result
match_lit(const char *buf, size_t len, size_t *i, const char *lit)
{
    for (; *lit != '\0'; lit++, (*i)++) {
        if (*i >= len)
            return PROXY_NEED_MORE;
        if (buf[*i] != *lit)
            return PROXY_BAD;
    }
    return PROXY_OK;
}

enum v1_field {
    V1_SRC = 0,
    V1_DST,
    V1_SPORT,
    V1_DPORT,
};

static enum proxy_result
parse_v1(const char *buf, size_t len, struct proxy_info *pi, size_t *used, const char **why)
{
    static const char *const protos[] = { "TCP4 ", "TCP6 ", "UNKNOWN" };
    static const char *const field_why[] = {
        [V1_SRC] = "bad v1 source address",
        [V1_DST] = "bad v1 destination address",
        [V1_SPORT] = "bad v1 port",
        [V1_DPORT] = "bad v1 port",
    };
    struct proxy_info out = { .version = 1 };
    uint8_t raw[2][16] = { { 0 } };
    uint16_t port[2] = { 0, 0 };
    enum proxy_result rc, best = PROXY_BAD;
    size_t i = 0, at = 0;
    unsigned proto = 0;
    bool v6;

    rc = match_lit(buf, len, &i, "PROXY ");
    if (rc != PROXY_OK) {
        *why = "bad v1 signature";
        return rc;
    }
    /* the three names differ by their first octets: at most one can match */
    for (unsigned k = 0; k < ARRAY_SIZE(protos); k++) {
        size_t j = i;

        rc = match_lit(buf, len, &j, protos[k]);
        if (rc == PROXY_OK) {
            proto = k;
            at = j;
            best = PROXY_OK;
            break;
        }
        if (rc == PROXY_NEED_MORE)
            best = PROXY_NEED_MORE;
    }
    if (best != PROXY_OK) {
        *why = "bad v1 protocol";
        return best;
    }
    i = at;

    if (proto == 2) { /* UNKNOWN: anything up to CR LF is ignored */
        for (bool first = true;; first = false, i++) {
            if (i >= PROXY_V1_MAX)
                goto too_long;
            if (i >= len)
                return PROXY_NEED_MORE;
            if (buf[i] == '\r')
                break;
            if (buf[i] == '\n')
                goto bad_eol;
            if (first && buf[i] != ' ') {
                *why = "bad v1 protocol"; /* "UNKNOWNX" */
                return PROXY_BAD;
            }
        }
        i++;
        if (i >= PROXY_V1_MAX)
            goto too_long;
        if (i >= len)
            return PROXY_NEED_MORE;
        if (buf[i] != '\n')
            goto bad_eol;
        out.local = true;
        goto done;
    }

    v6 = proto == 1;
    for (enum v1_field f = V1_SRC; f <= V1_DPORT; f++) {
        const char delim = f == V1_DPORT ? '\r' : ' ';
        struct v4_sm s4 = { { 0 }, 0, { 0, 0 } };
        struct v6_sm s6 = { .gap = -1 };
        struct dec_sm sp = { 0, 0 };
        enum sm_rc r;

        for (;; i++) {
            char c;

            if (i >= PROXY_V1_MAX)
                goto too_long;
            if (i >= len)
                return PROXY_NEED_MORE;
            c = buf[i];
            if (c == delim)
                break;
            if (f >= V1_SPORT)
                r = dec_feed(&sp, c, 65535);
            else if (v6)
                r = v6_feed(&s6, c);
            else
                r = v4_feed(&s4, c);
            if (r != SM_OK) {
                if (c == '\r' || c == '\n')
                    goto bad_eol;
                *why = field_why[f];
                return PROXY_BAD;
            }
        }
        i++; /* the delimiter */
        if (f >= V1_SPORT) {
            r = sp.ndig > 0 ? SM_OK : SM_BAD;
            port[f - V1_SPORT] = (uint16_t)sp.val;
        } else if (v6) {
            r = v6_finish(&s6, raw[f]);
        } else {
            r = v4_finish(&s4);
            memcpy(raw[f], s4.out, 4);
        }
        if (r != SM_OK) {
            *why = field_why[f];
            return PROXY_BAD;
        }
    }
    if (i >= PROXY_V1_MAX)
        goto too_long;
    if (i >= len)
        return PROXY_NEED_MORE;
    if (buf[i] != '\n')
        goto bad_eol;
    store_addr(out.src, &out.v6, out.src_text, raw[0], v6);
    store_addr(out.dst, &out.dst_v6, out.dst_text, raw[1], v6);
    out.src_port = port[0];
    out.dst_port = port[1];

done:
    *used = i + 1;
    *pi = out;
    return PROXY_OK;

too_long:
    *why = "v1 line too long";
    return PROXY_BAD;

bad_eol:
    *why = "bad v1 line end";
    return PROXY_BAD;
}

/* ---- version 2 ---- */

static const uint8_t v2_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

#define V2_HDR       16
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_AF_UNSPEC 0x0
#define V2_AF_INET   0x1
#define V2_AF_INET6  0x2
#define V2_AF_UNIX   0x3
#define V2_TP_UNSPEC 0x0
#define V2_TP_STREAM 0x1
#define V2_TP_DGRAM  0x2

static enum proxy_result
parse_v2(const char *buf, size_t len, struct proxy_info *pi, size_t *used, const char **why)
{
    static const size_t block_len[] = {
        [V2_AF_UNSPEC] = 0,
        [V2_AF_INET] = 12,
        [V2_AF_INET6] = 36,
        [V2_AF_UNIX] = 216,
    };
    const uint8_t *b = (const uint8_t *)buf;
    struct proxy_info out = { .version = 2 };
    unsigned cmd, af = 0, tp = 0;
    size_t total, block = 0, pos;

    if (memcmp(b, v2_sig, MIN(len, sizeof(v2_sig))) != 0) {
        *why = "bad v2 signature";
        return PROXY_BAD;
    }
    if (len <= 12)
        return PROXY_NEED_MORE;
    if (b[12] >> 4 != 2) {
        *why = "bad v2 version";
        return PROXY_BAD;
    }
    cmd = b[12] & 0xfu;
    if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY) {
        *why = "bad v2 command";
        return PROXY_BAD;
    }
    if (len <= 13)
        return PROXY_NEED_MORE;
    if (cmd == V2_CMD_PROXY) {
        af = b[13] >> 4;
        tp = b[13] & 0xfu;
        if (af > V2_AF_UNIX || tp > V2_TP_DGRAM) {
            *why = "bad v2 family";
            return PROXY_BAD;
        }
        if (tp == V2_TP_DGRAM) {
            *why = "v2 datagram transport";
            return PROXY_BAD;
        }
        block = block_len[af];
    }
    /* the length's high octet alone can already be too big */
    if (len == 14 + 1 && b[14] > (PROXY_V2_MAX - V2_HDR) >> 8)
        goto too_long;
    if (len < V2_HDR)
        return PROXY_NEED_MORE;
    total = (size_t)b[14] << 8 | b[15];
    if (total > PROXY_V2_MAX - V2_HDR)
        goto too_long;
    if (total < block) {
        *why = "v2 length too short for the addresses";
        return PROXY_BAD;
    }
    total += V2_HDR;

    /* LOCAL: the family, and so the layout of the rest, is to be ignored */
    if (cmd == V2_CMD_PROXY) {
        /* Walk the TLVs in what has arrived: one that crosses the header's
           end is BAD without waiting for its value. */
        for (pos = V2_HDR + block; pos < total;) {
            size_t vlen;

            if (total - pos < 3) {
                *why = "truncated v2 TLV";
                return PROXY_BAD;
            }
            if (len < pos + 3)
                return PROXY_NEED_MORE; /* pos may be past len: the block is still coming */
            vlen = (size_t)b[pos + 1] << 8 | b[pos + 2];
            if (vlen > total - pos - 3) {
                *why = "bad v2 TLV length";
                return PROXY_BAD;
            }
            pos += 3 + vlen;
        }
    }
    if (len < total)
        return PROXY_NEED_MORE;

    if (cmd == V2_CMD_PROXY && tp == V2_TP_STREAM && (af == V2_AF_INET || af == V2_AF_INET6)) {
        const uint8_t *a = b + V2_HDR;
        size_t alen = af == V2_AF_INET ? 4 : 16;

        store_addr(out.src, &out.v6, out.src_text, a, af == V2_AF_INET6);
        store_addr(out.dst, &out.dst_v6, out.dst_text, a + alen, af == V2_AF_INET6);
        out.src_port = (uint16_t)(a[2 * alen] << 8 | a[2 * alen + 1]);
        out.dst_port = (uint16_t)(a[2 * alen + 2] << 8 | a[2 * alen + 3]);
    } else {
        out.local = true; /* LOCAL, AF_UNSPEC, AF_UNIX or an UNSPEC transport */
    }
    *used = total;
    *pi = out;
    return PROXY_OK;

too_long:
    *why = "v2 header too long";
    return PROXY_BAD;
}

/* ---- entry point ---- */

enum proxy_result
proxy_parse(const char *buf, size_t len, struct proxy_info *pi, size_t *used, const char **why)
{
    /* The two signatures differ at their first octet: 'P' or CR. */
    if (len == 0)
        return PROXY_NEED_MORE;
    if (buf[0] == 'P')
        return parse_v1(buf, len, pi, used, why);
    if (buf[0] == '\r')
        return parse_v2(buf, len, pi, used, why);
    *why = "not a PROXY header";
    return PROXY_BAD;
}
