/*
 * limits.h: the per-client anti-abuse table (Postfix's anvil, in-process).
 *
 * One table is shared by every reactor thread. Per client key it keeps the
 * number of open connections and four token buckets: connection rate,
 * message rate (one token per MAIL FROM accepted), recipient rate (one per
 * RCPT accepted) and AUTH failures. A bucket of rate N holds at most N tokens
 * and refills continuously at N per minute (N/60000 per millisecond, exact:
 * no rounding is lost between calls), so a client gets a burst of N and then
 * N per minute.
 *
 * Time is the caller's: every call that refills takes now_ms, monotonic
 * milliseconds (CLOCK_MONOTONIC). A now_ms older than what an entry has
 * already seen (two reactors' clocks read a moment apart) refills nothing
 * and never moves the entry back in time.
 *
 * Memory is bounded: limits_new() allocates `capacity` entries of 64 octets
 * (one cache line each) plus a small index, once; nothing is allocated
 * afterwards. An entry whose client has no connection open and whose buckets
 * are full again (at most 60 s after its last use: any bucket refills
 * completely in one minute) is equivalent to no entry and is reclaimed. When
 * a client needs an entry and its shard has none free, the least recently
 * used entry without open connections is evicted (its client's buckets
 * start full again: the table was too small, see `evicted`). When every entry
 * of the shard has connections open, the client is not tracked and gets
 * LIMITS_OK: a limit table never refuses a client because of other clients'
 * entries (fail open, counted in `untracked`).
 *
 * Exemptions (mynetworks, authenticated clients) are the caller's business.
 *
 * Threads: every function except limits_new()/limits_free() may be called by
 * any thread at any time while the table lives. The table is split into up
 * to 64 shards by a keyed hash of the client key, each behind its own
 * spinlock held for a few dozen instructions (see limits.c).
 */
#ifndef RINGMAIL_CORE_LIMITS_H
#define RINGMAIL_CORE_LIMITS_H

#include <stdbool.h>
#include <stdint.h>

/* IPv6 clients are keyed by their first v6_prefix bits; 0 in a conf means this. */
#define LIMITS_V6_PREFIX_DEFAULT 64
/* Most entries limits_new() accepts: 64 shards of at most 65535 entries. */
#define LIMITS_MAX_CAPACITY      (64u * 65535u)

/*
 * The limits, per client key; 0 means unlimited for each. Rates are per
 * minute. The caller may pass a different conf on each call (a reloaded
 * configuration): buckets keep what they owe and refill at the new rate; a
 * bucket whose rate was lowered owes at most its new capacity (it is empty,
 * not in debt for many minutes).
 */
struct limits_conf {
    unsigned conn_count;     /* connections open at once */
    unsigned conn_rate;      /* connections per minute */
    unsigned msg_rate;       /* messages (MAIL FROM accepted) per minute */
    unsigned rcpt_rate;      /* recipients (RCPT accepted) per minute */
    unsigned auth_fail_rate; /* failed AUTH attempts per minute */
    unsigned v6_prefix;      /* for limits_key(): 1..128, 0 = LIMITS_V6_PREFIX_DEFAULT */
};

/* What happened; each takes one token from its own bucket. */
enum limits_event {
    LIMITS_CONNECT = 0, /* a connection-rate token (limits_connect() takes it too) */
    LIMITS_MESSAGE,     /* a MAIL FROM accepted */
    LIMITS_RCPT,        /* a RCPT accepted */
    LIMITS_AUTH_FAIL,   /* an AUTH attempt failed */
};

/* Which limit refused; LIMITS_OK (0) when none did. */
enum limits_verdict {
    LIMITS_OK = 0,
    LIMITS_CONN_COUNT,     /* conn_count connections already open */
    LIMITS_CONN_RATE,      /* conn_rate bucket empty */
    LIMITS_MSG_RATE,       /* msg_rate bucket empty */
    LIMITS_RCPT_RATE,      /* rcpt_rate bucket empty */
    LIMITS_AUTH_FAIL_RATE, /* auth_fail_rate bucket empty */
};

struct limits; /* opaque: the shards, their entries and indexes, one allocation */

/*
 * A client key, from limits_key(): compare keys with memcmp(). IPv4 clients
 * (and IPv4-mapped IPv6 ones, ::ffff:a.b.c.d) are the IPv4-mapped address
 * ::ffff:a.b.c.d, so each IPv4 address is its own client; IPv6 clients are
 * their address with every bit past the prefix cleared. Text that is not an
 * address is a hash of the text inside 100::/64, the discard-only prefix
 * (RFC 6666) that no client connects from.
 */
struct limits_key {
    uint8_t b[16];
};

/*
 * Parse addr_text ("192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1": what
 * inet_ntop() writes; NUL-terminated) into the 16 octets of an IPv6 address,
 * an IPv4 address as its IPv4-mapped form. Accepts exactly what glibc's
 * inet_pton() accepts for AF_INET (dotted quad, no leading zeros) or
 * AF_INET6, without <arpa/inet.h>. Returns false, a16 unspecified, for
 * anything else (NULL, "", a zone "%eth0", a port). *is_v4 says whether the
 * address is IPv4 or IPv4-mapped; is_v4 may be NULL. Pure, any thread.
 */
bool limits_addr_parse(const char *addr_text, uint8_t a16[16], bool *is_v4);

/*
 * The key of the client at addr_text (see struct limits_key), IPv6 clients
 * aggregated by their first v6_prefix bits (0 = LIMITS_V6_PREFIX_DEFAULT;
 * above 128 = 128). addr_text may be NULL (keyed as ""). Pure, any thread;
 * compute it once per connection and keep it with the connection.
 */
void limits_key(struct limits_key *k, const char *addr_text, unsigned v6_prefix);

/*
 * A table of `capacity` entries (1..LIMITS_MAX_CAPACITY), all allocated and
 * touched now. Returns NULL with errno ENOMEM, or EINVAL for a capacity out
 * of range. Call before the threads that use it start; free it after they
 * stopped.
 */
struct limits *limits_new(unsigned capacity);
void limits_free(struct limits *t);

/*
 * A connection from k opens. Checks conn_count, then conn_rate.
 *
 * LIMITS_OK with *tracked true: the connection is counted (and took a
 * conn_rate token); the caller must call limits_disconnect(t, k) exactly
 * once when it closes. LIMITS_OK with *tracked false: nothing was counted
 * (every limit in c is 0, or the fail-open case above); the caller must NOT
 * call limits_disconnect() for it. Any other verdict: refused, nothing was
 * counted and no token was taken, *tracked is false.
 */
enum limits_verdict limits_connect(struct limits *t, const struct limits_key *k,
                                   const struct limits_conf *c, uint64_t now_ms, bool *tracked);

/*
 * A connection that limits_connect() tracked closes. Calling it for a key
 * with no tracked connection open is a caller bug: BUG_ON (abort).
 */
void limits_disconnect(struct limits *t, const struct limits_key *k);

/*
 * One event of client k: takes one token from ev's bucket. LIMITS_OK when
 * it had one (or its rate in c is 0, or the client is not tracked: fail
 * open); else the verdict of that bucket (LIMITS_MSG_RATE for
 * LIMITS_MESSAGE, ...) and nothing was taken. Buckets are independent: a
 * refused RCPT does not cost a message token.
 */
enum limits_verdict limits_event(struct limits *t, const struct limits_key *k, enum limits_event ev,
                                 const struct limits_conf *c, uint64_t now_ms);

/*
 * Counters for metrics, each optional (NULL):
 *   *used, entries holding state (an expired one until a call in its shard
 *     reclaims it);
 *   *evicted, entries dropped before their buckets were full again, since
 *     limits_new(): the table is too small, raise its capacity;
 *   *untracked, connections and events let through untracked because their
 *     shard was full of clients with connections open (fail open).
 * Read without locks, one shard at a time: exact when no other thread is
 * calling, a moment's estimate otherwise.
 */
void limits_stats(const struct limits *t, uint64_t *used, uint64_t *evicted, uint64_t *untracked);

#endif
