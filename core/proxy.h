/*
 * proxy.h: the PROXY protocol header parser, versions 1 (text) and 2
 * (binary), as HAProxy's doc/proxy-protocol.txt specifies them.
 *
 * Pure and zero-copy: no allocation, no globals, no locale, no writes to the
 * input, and no read at or past buf[len]. No state is kept between calls: the
 * caller hands the whole prefix received so far each time (a header is at most
 * PROXY_V2_MAX octets, so re-reading it while it trickles in is cheap). Any
 * thread.
 *
 * Strictness (the spec's "any sequence which does not exactly match the
 * protocol must be discarded"):
 *  - v1: "PROXY TCP4|TCP6 src dst sport dport\r\n" with single spaces; IPv4
 *    as four decimal octets without leading zeros ("01.2.3.4" is BAD, as the
 *    spec says); IPv6 as inet_pton() accepts it (1-4 hex digits a group, upper
 *    or lower case, one "::" standing for at least one group, an optional
 *    dotted IPv4 tail); ports 0..65535 without leading zeros; CR LF only; the
 *    line, CR LF included, at most PROXY_V1_MAX octets. "PROXY UNKNOWN" is
 *    followed by CR LF or by a space and anything but CR and LF up to CR LF.
 *  - v2: the 12-octet signature, version 2, command LOCAL or PROXY. With
 *    PROXY, the family must be one the spec defines: TCP over IPv4 or IPv6
 *    gives addresses; AF_UNSPEC, AF_UNIX and an UNSPEC transport are accepted
 *    as local; any DGRAM transport is BAD (SMTP is a stream). The length must
 *    cover the family's address block (0, 12, 36 or 216 octets) and be at most
 *    PROXY_V2_MAX - 16; the TLVs after the block are walked with bounds checks
 *    (one crossing the header's end is BAD) and otherwise ignored, CRC32C
 *    included (the spec lets a receiver that does not support it skip it).
 *    With LOCAL, the family is ignored (spec 2.2) and so is everything after
 *    the 16 fixed octets: their layout depends on that family.
 */
#ifndef RINGMAIL_CORE_PROXY_H
#define RINGMAIL_CORE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXY_V1_MAX   107         /* longest v1 line incl. CRLF */
#define PROXY_V2_MAX   (16 + 1024) /* we refuse v2 headers with more TLV bytes than this */
#define PROXY_ADDR_MAX 64          /* text form, NUL included (== CONFIG_HOST_MAX) */

enum proxy_result {
    PROXY_NEED_MORE = 0, /* a valid prefix of a header: call again with more octets */
    PROXY_OK = 1,        /* *pi filled, *used = the header's length */
    PROXY_BAD = -1,      /* not a header, nor the start of one: *why says why */
};

/*
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is stored and written as the
 * IPv4 address, as the rest of ringmail treats it (route_client_trusted()).
 * IPv6 text is RFC 5952's: lower case, no leading zeros, the longest run of
 * two or more zero groups (the first of equals) as "::". An IPv4-compatible
 * address (::a.b.c.d, deprecated by RFC 4291) is written in hex ("::102:304"),
 * where glibc's inet_ntop() writes "::1.2.3.4"; both parse to the same octets.
 */
struct proxy_info {
    int version; /* 1 or 2 */
    bool local;  /* v2 LOCAL command, or v1 "UNKNOWN"/v2 AF_UNSPEC: keep the connection's own
                    addresses. Then everything below is zero and the texts are "". */
    bool v6;     /* the source is IPv6 (not mapped v4) */
    bool dst_v6; /* the destination is IPv6 (not mapped v4) */
    uint8_t src[16], dst[16]; /* network byte order; IPv4 in [0..4), the rest zero */
    uint16_t src_port, dst_port;
    char src_text[PROXY_ADDR_MAX], dst_text[PROXY_ADDR_MAX]; /* NUL-terminated */
};

/*
 * Parse a PROXY header at the start of buf[0..len).
 *  PROXY_OK: *used = the header's length (octets after it, the client's first
 *   SMTP bytes, are not looked at), *pi filled.
 *  PROXY_NEED_MORE: buf[0..len) is a valid prefix of a header (len 0 included);
 *   call again with more octets. Never returned once len >= PROXY_V2_MAX.
 *  PROXY_BAD: buf[0..len) is not a valid header nor the prefix of one. It is
 *   decided at the first octet that breaks the grammar (for v1 also: at octet
 *   PROXY_V1_MAX without CR LF; for v2 at the TLV header that crosses the end,
 *   before its value arrives), and a longer buffer with the same start is BAD
 *   too. *why = a short static reason for the log, one of: "not a PROXY
 *   header", "bad v1 signature", "bad v1 protocol", "bad v1 source address",
 *   "bad v1 destination address", "bad v1 port", "bad v1 line end", "v1 line
 *   too long", "bad v2 signature", "bad v2 version", "bad v2 command", "bad v2
 *   family", "v2 datagram transport", "v2 header too long", "v2 length too
 *   short for the addresses", "truncated v2 TLV", "bad v2 TLV length".
 *   (Strings rather than an enum ringmail_err, so the caller logs them as is.)
 * *pi and *used are written only on PROXY_OK, *why only on PROXY_BAD. No
 * pointer into buf is kept.
 */
enum proxy_result proxy_parse(const char *buf, size_t len, struct proxy_info *pi, size_t *used,
                              const char **why);

#endif
