/*
 * route.c: recipient domain -> route, route hash, mynetworks and
 * relay_domains checks.
 *
 * Pure: reads an immutable configuration, allocates nothing, keeps no state;
 * any thread. Routes are linear scans: at most CONFIG_MAX_ROUTES entries,
 * compared once per recipient when a message is handed to the workers, which
 * is cheaper than keeping an index in a configuration that must stay a plain
 * copyable value.
 *
 * A struct route is never defined: its pointers are struct config_route_hops
 * pointers converted for the caller and converted back here (C17 6.3.2.3p7
 * allows the round trip; no object is accessed through the opaque type).
 */
#include "core/route.h"

#include <arpa/inet.h>
#include <string.h>

#include "core/compiler.h"
#include "core/hash.h"

static const struct route *
as_route(const struct config_route_hops *hl)
{
    return (const struct route *)(const void *)hl;
}

const struct config_route_hops *
route_hops(const struct route *rt)
{
    return (const struct config_route_hops *)(const void *)rt;
}

unsigned
route_nhops(const struct route *rt)
{
    return route_hops(rt)->nhops;
}

const struct config_nexthop *
route_hop(const struct route *rt, unsigned i)
{
    const struct config_route_hops *hl = route_hops(rt);

    BUG_ON(i >= hl->nhops);
    return &hl->hop[i];
}

/* d equals the lower-case pattern pat[0..plen), ignoring d's case. */
static bool
eq_lower(const char *d, const char *pat, size_t plen)
{
    for (size_t i = 0; i < plen; i++) {
        if (ascii_lower(d[i]) != pat[i])
            return false;
    }
    return true;
}

/* d is exactly pat (plain) or, for a ".suffix" pat, a name below it; pat is lower case. */
static bool
domain_matches(struct slice d, const char *pat, size_t plen)
{
    if (pat[0] == '.')
        return d.len > plen && eq_lower(d.p + d.len - plen, pat, plen);
    return d.len == plen && eq_lower(d.p, pat, plen);
}

static bool
is_star(const struct config_route *r)
{
    return r->domain[0] == '*' && r->domain[1] == '\0';
}

const struct route *
route_lookup(const struct ringmail_config *cfg, struct slice domain)
{
    const struct config_route_hops *suffix = NULL, *star = NULL;
    size_t suffix_len = 0;

    for (unsigned i = 0; i < cfg->nroutes; i++) {
        const struct config_route *r = &cfg->routes[i];
        size_t plen = strlen(r->domain);

        if (is_star(r)) {
            star = &r->hops;
        } else if (r->domain[0] == '.') {
            if (plen > suffix_len && domain_matches(domain, r->domain, plen)) {
                suffix = &r->hops;
                suffix_len = plen;
            }
        } else if (domain_matches(domain, r->domain, plen)) {
            return as_route(&r->hops); /* exact: nothing beats it */
        }
    }
    if (suffix != NULL)
        return as_route(suffix);
    if (star != NULL)
        return as_route(star);
    if (cfg->relayhost.nhops > 0)
        return as_route(&cfg->relayhost);
    BUG_ON(cfg->default_route.nhops != 1);
    return as_route(&cfg->default_route);
}

static bool
has_star(const struct ringmail_config *cfg)
{
    for (unsigned i = 0; i < cfg->nroutes; i++) {
        if (is_star(&cfg->routes[i]))
            return true;
    }
    return false;
}

unsigned
route_count(const struct ringmail_config *cfg)
{
    /* without "*", exactly one of relayhost and the maildir route is reachable */
    return cfg->nroutes + (has_star(cfg) ? 0 : 1);
}

const struct route *
route_at(const struct ringmail_config *cfg, unsigned i)
{
    BUG_ON(i >= route_count(cfg));
    if (i < cfg->nroutes)
        return as_route(&cfg->routes[i].hops);
    if (cfg->relayhost.nhops > 0)
        return as_route(&cfg->relayhost);
    return as_route(&cfg->default_route);
}

#define FNV64_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV64_PRIME  UINT64_C(0x100000001b3)

static uint64_t
fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV64_PRIME;
    }
    return h;
}

uint64_t
route_hash(const struct route *rt)
{
    const struct config_route_hops *hl = route_hops(rt);
    char text[CONFIG_NEXTHOP_TEXT_MAX];
    uint64_t h = FNV64_OFFSET;

    for (unsigned i = 0; i < hl->nhops; i++) {
        int len = config_nexthop_format(&hl->hop[i], text, sizeof(text));

        BUG_ON(len < 0 || (size_t)len >= sizeof(text));
        h = fnv1a(h, text, (size_t)len);
        h = fnv1a(h, "\n", 1);
    }
    /* fmix64: FNV's low bits depend only on the inputs' low bits */
    return fmix64(h);
}

/* The first prefix bits of a and b are equal. */
static bool
prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(a, b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((a[whole] ^ b[whole]) & (uint8_t)(0xffu << (8 - rest))) == 0;
}

bool
route_network_match(const struct config_networks *nets, const char *client_addr_text)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    uint8_t a[16] = { 0 };
    bool v6;

    if (client_addr_text == NULL)
        return false;
    if (inet_pton(AF_INET, client_addr_text, a) == 1) {
        v6 = false;
    } else if (inet_pton(AF_INET6, client_addr_text, a) == 1) {
        v6 = true;
        if (memcmp(a, mapped, sizeof(mapped)) == 0) {
            memmove(a, a + 12, 4);
            v6 = false;
        }
    } else {
        return false;
    }
    for (unsigned i = 0; i < nets->n; i++) {
        const struct config_network *net = &nets->a[i];

        if (net->v6 == v6 && prefix_equal(a, net->addr, net->prefix))
            return true;
    }
    return false;
}

bool
route_client_trusted(const struct ringmail_config *cfg, const char *client_addr_text)
{
    return route_network_match(&cfg->mynetworks, client_addr_text);
}

bool
route_relay_allowed(const struct ringmail_config *cfg, struct slice rcpt_domain)
{
    if (rcpt_domain.len == 0)
        return false;
    for (unsigned i = 0; i < cfg->nrelay_domains; i++) {
        const char *pat = cfg->relay_domains[i];

        if (domain_matches(rcpt_domain, pat, strlen(pat)))
            return true;
    }
    return false;
}

struct slice
route_domain_of(struct slice addr)
{
    for (size_t i = addr.len; i > 0; i--) {
        if (addr.p[i - 1] == '@')
            return slice_make(addr.p + i, addr.len - i);
    }
    if (addr.len == 0)
        return addr; /* addr.p may be NULL: no arithmetic on it */
    return slice_make(addr.p + addr.len, 0);
}
