/*
 * route.h: where a recipient's mail goes, and who may relay through ringmail.
 *
 * Pure functions over a finished, immutable struct ringmail_config: no
 * allocation, no I/O, no locale; any thread may call them while the
 * configuration lives.
 *
 * A route is one of the configuration's failover lists of next hops: a
 * `routes` entry's, `relayhost`, or the built-in maildir:<maildir_dir>
 * route. struct route is an opaque handle to that list, never defined: a
 * route is the configuration's own storage, not a copy, so two recipients
 * share a route exactly when route_lookup() returns the same pointer, and a
 * route stays valid as long as the configuration it came from. Read it with
 * route_nhops(), route_hop() or route_hops().
 *
 * Resolution order for a recipient domain (case-insensitive):
 *   1. the route whose domain is exactly it ("example.com");
 *   2. the longest ".suffix" route it ends with (".example.com" matches
 *      "a.example.com" and "b.a.example.com", not "example.com");
 *   3. the "*" route;
 *   4. relayhost, when set;
 *   5. maildir:<maildir_dir> (./var/maildir by default).
 */
#ifndef RINGMAIL_CORE_ROUTE_H
#define RINGMAIL_CORE_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/slice.h"

struct route; /* opaque: a struct config_route_hops inside a configuration */

/*
 * The route for a recipient domain (see the order above); never NULL. The
 * domain need not be NUL-terminated and may be empty (an address without
 * '@', such as "postmaster": steps 3..5 decide).
 */
const struct route *route_lookup(const struct ringmail_config *cfg, struct slice domain);

/* The hop list behind a route: the configuration's storage, valid as long as it. */
const struct config_route_hops *route_hops(const struct route *rt);

/* How many next hops rt has: 1..CONFIG_MAX_HOPS. */
unsigned route_nhops(const struct route *rt);

/* Next hop i of rt (0 is tried first); i < route_nhops(rt), else BUG. */
const struct config_nexthop *route_hop(const struct route *rt, unsigned i);

/*
 * A stable 64-bit hash of rt's hops, to pick the worker that serves a
 * destination: the same hops give the same hash in every run, on every
 * machine, whatever the route's domain. It is FNV-1a 64 over each hop's
 * config_nexthop_format() text followed by '\n', then the MurmurHash3 fmix64
 * finalizer so that both the high bits (q_shard_of) and the low bits (hash
 * table masks) are well mixed.
 */
uint64_t route_hash(const struct route *rt);

/*
 * The routes route_lookup() can return for cfg, for start-up work such as
 * creating Maildirs: every `routes` entry in file order, then relayhost if
 * set and no "*" route hides it, then the maildir route if neither a "*"
 * route nor relayhost hides it. route_at(cfg, i) needs i < route_count(cfg).
 */
unsigned route_count(const struct ringmail_config *cfg);
const struct route *route_at(const struct ringmail_config *cfg, unsigned i);

/*
 * Whether the client address (text, as inet_ntop() writes it: "192.0.2.1",
 * "2001:db8::1") is in mynetworks. An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) counts as the IPv4 address. An IPv4 client never matches
 * an IPv6 network nor the reverse (::/0 does not cover IPv4 clients). Text
 * that is not an address (NULL, "", a scope "%eth0") is not trusted.
 */
bool route_client_trusted(const struct ringmail_config *cfg, const char *client_addr_text);
/* The same test against any network list (proxy_trusted_networks, ...). */
bool route_network_match(const struct config_networks *nets, const char *client_addr_text);

/*
 * Whether mail for rcpt_domain may be relayed for anyone: the domain is in
 * relay_domains, exactly or under a ".suffix" entry, case-insensitively. An
 * empty domain never is. The SMTP session accepts a RCPT when the client is
 * trusted or this is true, and answers 554 5.7.1 <rcpt>: Relay access denied
 * otherwise.
 */
bool route_relay_allowed(const struct ringmail_config *cfg, struct slice rcpt_domain);

/*
 * The domain of an address: what follows its last '@' (the local part may be
 * quoted and hold an '@'). Empty (len 0, p at the end of addr) when there is
 * no '@'. The result points into addr and lives as long as addr's buffer.
 */
struct slice route_domain_of(struct slice addr);

#endif
