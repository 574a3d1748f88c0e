/*
 * limits.c: the per-client anti-abuse table: keys, token buckets, shards.
 *
 * Any thread (see limits.h). Layout: one allocation made by limits_new()
 * holds up to 64 shards; a client key goes to one shard by a keyed hash.
 * Each shard owns a fixed array of 64-octet entries, an open-addressing
 * index (linear probing, at most half full, backward-shift deletion, no
 * tombstones), a free list, and an LRU list of its "idle" entries (no
 * connection open) in the order they were last used. Entries with
 * connections open are on no list and are never evicted.
 *
 * Locking: a shard is guarded by a test-and-set spinlock (atomic_flag).
 * Every critical section is bounded: one probe sequence in an index kept at
 * most half full, at most two expired entries reclaimed and one evicted,
 * four bucket refills; no allocation, no system call, no callback. A plain
 * spin (no pause, no yield) suits sections this short taken by reactors
 * pinned one per CPU; the cost is that a holder descheduled by a noisy
 * neighbour makes the other reactors of that shard spin until it runs
 * again. Rule zero: STYLE.md §6 keeps atomics to queue/ and two helpers and
 * says reactors never spin; the table is shared by every reactor by design
 * (a per-reactor table would let a client multiply its limits by the number
 * of CPUs), so this file is the third core/ user of atomics and the one
 * place a reactor waits, for a few dozen instructions.
 *
 * Memory orderings:
 *   - shard_lock()'s test-and-set is acquire and shard_unlock()'s clear is
 *     release: every write a holder made to its shard (entries, index, lists,
 *     stats) happens-before every read of the next holder. Nothing in a
 *     shard is read or written outside its lock except the stats.
 *   - The stats (used, evicted, untracked) are _Atomic only so that
 *     limits_stats() may read them without the lock: written under the lock
 *     by load + store (the lock makes the holder the only writer), read with
 *     relaxed loads. They order nothing.
 *
 * Token buckets are kept as a debt, in units of 1/60000 token: a bucket of
 * rate N holds N tokens (N * 60000 units) when full and refills N units per
 * millisecond, exactly. Debt 0 is a full bucket, so a zeroed entry is a
 * fresh client, a debt survives a change of N (a reloaded configuration),
 * and any bucket is full again at most 60000 ms after its last refill,
 * whatever its rate: that is how an entry is known to be expired without a
 * configuration (limits_disconnect() has none).
 */
#include "core/limits.h"

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>

#include "core/compiler.h"
#include "core/hash.h"
#include "core/slice.h"

enum {
    LIMITS_SHARDS = 64,          /* most shards; a power of two */
    LIMITS_SHARD_MIN = 16,       /* fewer shards rather than shards below this */
    LIMITS_NBUCKETS = 4,         /* indexed by enum limits_event */
    LIMITS_RECLAIM_PER_CALL = 2, /* expired idle entries freed per call, at most */
};

#define WINDOW_MS 60000u          /* a bucket's rate is per minute */
#define UNIT      UINT64_C(60000) /* one token, in debt units */
#define NIL       UINT16_MAX      /* no entry: end of a list, or not found */

_Static_assert(LIMITS_CONNECT == 0 && LIMITS_MESSAGE == 1 && LIMITS_RCPT == 2 &&
                   LIMITS_AUTH_FAIL == 3,
               "buckets are indexed by enum limits_event");
_Static_assert(LIMITS_MSG_RATE == LIMITS_CONN_RATE + LIMITS_MESSAGE &&
                   LIMITS_RCPT_RATE == LIMITS_CONN_RATE + LIMITS_RCPT &&
                   LIMITS_AUTH_FAIL_RATE == LIMITS_CONN_RATE + LIMITS_AUTH_FAIL,
               "a bucket's verdict is LIMITS_CONN_RATE + its event");

struct limits_entry {
    struct limits_key key;
    uint64_t last_ms;               /* the now_ms debt[] was refilled to; never decreases */
    uint64_t debt[LIMITS_NBUCKETS]; /* units owed per bucket, <= rate * UNIT; 0 = full */
    uint32_t count;                 /* connections open; > 0: on no list, never evicted */
    uint16_t prev, next;            /* idle LRU list (count == 0); next also chains free */
};
_Static_assert(sizeof(struct limits_entry) == 64, "an entry is one cache line");

struct limits_shard {
    alignas(CACHELINE) atomic_flag lock; /* a shard per cache line: no false sharing */
    uint16_t free_head;                  /* unused entries, chained by next */
    uint16_t idle_head;                  /* idle entries, most recently used first */
    uint16_t idle_tail;                  /* the least recently used idle entry: evicted first */
    uint32_t mask;                       /* index slots - 1; slots >= 2 * entries, a power of 2 */
    struct limits_entry *e;              /* <= 65535 entries: indexes are uint16_t, NIL excluded */
    uint16_t *idx;                       /* entry + 1 per slot, 0 = empty */
    _Atomic uint64_t used, evicted, untracked; /* see limits_stats() */
};

_Static_assert(sizeof(struct limits_shard) == CACHELINE, "a shard is one cache line");

struct limits {
    uint64_t k0, k1;  /* hash key: clusters in an index cannot be planned offline */
    unsigned nshards; /* a power of two, 1..LIMITS_SHARDS */
    alignas(CACHELINE) struct limits_shard shard[LIMITS_SHARDS];
    /* then the entries of every shard, then their indexes */
};

/* ---- address text ---- */

/* A dotted quad filling p[0..n) exactly; no leading zeros (glibc inet_pton4). */
static bool
parse_v4(const char *p, size_t n, uint8_t out[4])
{
    size_t i = 0;

    for (unsigned part = 0; part < 4; part++) {
        unsigned v = 0, digits = 0;

        if (part > 0) {
            if (i >= n || p[i] != '.')
                return false;
            i++;
        }
        for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
            if (digits > 0 && v == 0)
                return false; /* leading zero: "01" */
            v = v * 10 + (unsigned)(p[i] - '0');
            if (v > 255)
                return false;
        }
        if (digits == 0)
            return false;
        out[part] = (uint8_t)v;
    }
    return i == n;
}

/* RFC 4291 2.2 text filling p[0..n) exactly; the algorithm of glibc's inet_pton6. */
static bool
parse_v6(const char *p, size_t n, uint8_t out[16])
{
    const char *end = p + n, *curtok;
    uint8_t tmp[16] = { 0 };
    size_t tp = 0, gap = SIZE_MAX, xdigits = 0;
    unsigned val = 0;

    if (n == 0)
        return false;
    if (p[0] == ':') { /* a leading ':' only as "::"; the loop sees its second ':' */
        if (n < 2 || p[1] != ':')
            return false;
        p++;
    }
    curtok = p;
    while (p < end) {
        char ch = *p++;
        int d = hex_digit(ch);

        if (d >= 0) {
            if (xdigits == 4)
                return false;
            val = val << 4 | (unsigned)d;
            xdigits++;
            continue;
        }
        if (ch == ':') {
            curtok = p;
            if (xdigits == 0) { /* the second ':' of "::" */
                if (gap != SIZE_MAX)
                    return false;
                gap = tp;
                continue;
            }
            if (p == end || tp + 2 > sizeof(tmp))
                return false; /* a trailing single ':', or a ninth group */
            tmp[tp++] = (uint8_t)(val >> 8);
            tmp[tp++] = (uint8_t)val;
            xdigits = 0;
            val = 0;
            continue;
        }
        if (ch == '.' && tp + 4 <= sizeof(tmp) &&
            parse_v4(curtok, (size_t)(end - curtok), tmp + tp)) {
            tp += 4; /* a dotted quad ends the text */
            xdigits = 0;
            break;
        }
        return false;
    }
    if (xdigits > 0) {
        if (tp + 2 > sizeof(tmp))
            return false;
        tmp[tp++] = (uint8_t)(val >> 8);
        tmp[tp++] = (uint8_t)val;
    }
    if (gap != SIZE_MAX) {
        size_t tail = tp - gap;

        if (tp == sizeof(tmp))
            return false; /* "::" must stand for at least one group */
        memmove(tmp + sizeof(tmp) - tail, tmp + gap, tail);
        memset(tmp + gap, 0, sizeof(tmp) - tail - gap);
        tp = sizeof(tmp);
    }
    if (tp != sizeof(tmp))
        return false;
    memcpy(out, tmp, sizeof(tmp));
    return true;
}

static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

bool
limits_addr_parse(const char *addr_text, uint8_t a16[16], bool *is_v4)
{
    size_t n;
    bool v4;

    if (addr_text == NULL)
        return false;
    n = strlen(addr_text);
    if (parse_v4(addr_text, n, a16 + 12)) {
        memcpy(a16, v4_mapped, sizeof(v4_mapped));
        v4 = true;
    } else if (parse_v6(addr_text, n, a16)) {
        v4 = memcmp(a16, v4_mapped, sizeof(v4_mapped)) == 0;
    } else {
        return false;
    }
    if (is_v4 != NULL)
        *is_v4 = v4;
    return true;
}

void
limits_key(struct limits_key *k, const char *addr_text, unsigned v6_prefix)
{
    uint8_t a[16];
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a 64 */
    bool v4;

    if (limits_addr_parse(addr_text, a, &v4)) {
        if (!v4) {
            unsigned bits = v6_prefix == 0 ? LIMITS_V6_PREFIX_DEFAULT : MIN(v6_prefix, 128u);
            unsigned whole = bits / 8;

            if (bits % 8 != 0)
                a[whole++] &= (uint8_t)(0xffu << (8 - bits % 8));
            memset(a + whole, 0, sizeof(a) - whole);
        }
        memcpy(k->b, a, sizeof(k->b));
        return;
    }
    /* not an address: 100::/64 (RFC 6666, discard only) + a hash of the text */
    for (const char *p = addr_text != NULL ? addr_text : ""; *p != '\0'; p++) {
        h ^= (uint8_t)*p;
        h *= UINT64_C(0x100000001b3);
    }
    h = fmix64(h);
    memset(k->b, 0, sizeof(k->b));
    k->b[0] = 0x01;
    memcpy(k->b + 8, &h, sizeof(h));
}

/* ---- shards ---- */

/*
 * Keyed, so that which keys share a shard or a probe cluster depends on a
 * secret drawn at limits_new(): an IPv6 client choosing among the /64s of
 * its /48 cannot plan a long probe sequence offline. Not a cryptographic
 * PRF; the table never answers with hash values, only with timing.
 */
static uint64_t
key_hash(const struct limits *t, const struct limits_key *k)
{
    uint64_t lo, hi;

    memcpy(&lo, k->b, 8);
    memcpy(&hi, k->b + 8, 8);
    return fmix64(fmix64(lo ^ t->k0) + (hi ^ t->k1));
}

/* Bits 40.. pick the shard, bits 0..16 the index slot: independent. */
static struct limits_shard *
shard_of(struct limits *t, uint64_t h)
{
    return &t->shard[(unsigned)(h >> 40) & (t->nshards - 1)];
}

static void
shard_lock(struct limits_shard *s)
{
    /* acquire: pairs with the release in shard_unlock() of the previous holder */
    while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire))
        ;
}

static void
shard_unlock(struct limits_shard *s)
{
    /* release: publishes this holder's writes; pairs with shard_lock()'s acquire */
    atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

/* Only the lock holder writes a stat: a load and a store, no read-modify-write. */
static void
stat_add(_Atomic uint64_t *c, int64_t d)
{
    uint64_t v = atomic_load_explicit(c, memory_order_relaxed);

    atomic_store_explicit(c, v + (uint64_t)d, memory_order_relaxed);
}

/* The index slot holding key k, or the empty slot where it would go (*found false). */
static uint32_t
index_find(const struct limits_shard *s, const struct limits_key *k, uint64_t h, uint16_t *found)
{
    uint32_t pos = (uint32_t)h & s->mask;

    /* ends: the index is at most half full, so an empty slot exists */
    for (;; pos = (pos + 1) & s->mask) {
        uint16_t v = s->idx[pos];

        if (v == 0) {
            *found = NIL;
            return pos;
        }
        if (memcmp(&s->e[v - 1].key, k, sizeof(*k)) == 0) {
            *found = (uint16_t)(v - 1);
            return pos;
        }
    }
}

/*
 * Empty slot `hole` without breaking any probe sequence: each entry after it
 * in the cluster moves back into the hole unless its home slot lies
 * (cyclically) after the hole, up to where it sits (Knuth 6.4 Algorithm R).
 */
static void
index_delete(const struct limits *t, struct limits_shard *s, uint32_t hole)
{
    for (uint32_t j = (hole + 1) & s->mask; s->idx[j] != 0; j = (j + 1) & s->mask) {
        uint16_t v = s->idx[j];
        uint32_t home = (uint32_t)key_hash(t, &s->e[v - 1].key) & s->mask;

        if (((j - home) & s->mask) >= ((j - hole) & s->mask)) {
            s->idx[hole] = v;
            hole = j;
        }
    }
    s->idx[hole] = 0;
}

static void
idle_unlink(struct limits_shard *s, uint16_t i)
{
    struct limits_entry *e = &s->e[i];

    if (e->prev != NIL)
        s->e[e->prev].next = e->next;
    else
        s->idle_head = e->next;
    if (e->next != NIL)
        s->e[e->next].prev = e->prev;
    else
        s->idle_tail = e->prev;
}

static void
idle_push(struct limits_shard *s, uint16_t i)
{
    struct limits_entry *e = &s->e[i];

    e->prev = NIL;
    e->next = s->idle_head;
    if (s->idle_head != NIL)
        s->e[s->idle_head].prev = i;
    else
        s->idle_tail = i;
    s->idle_head = i;
}

/* An idle entry was used: it becomes the most recently used. */
static void
idle_touch(struct limits_shard *s, uint16_t i)
{
    if (s->idle_head != i) {
        idle_unlink(s, i);
        idle_push(s, i);
    }
}

static bool
buckets_full(const struct limits_entry *e)
{
    return (e->debt[0] | e->debt[1] | e->debt[2] | e->debt[3]) == 0;
}

/* No connection open and every bucket full at now_ms: the same as no entry. */
static bool
expired(const struct limits_entry *e, uint64_t now_ms)
{
    return e->count == 0 &&
           (buckets_full(e) || (now_ms > e->last_ms && now_ms - e->last_ms >= WINDOW_MS));
}

/* Drop idle entry i: out of the index and the idle list, onto the free list. */
static void
entry_remove(const struct limits *t, struct limits_shard *s, uint16_t i)
{
    struct limits_entry *e = &s->e[i];
    uint16_t found;
    uint32_t pos = index_find(s, &e->key, key_hash(t, &e->key), &found);

    BUG_ON(found != i || e->count != 0);
    index_delete(t, s, pos);
    idle_unlink(s, i);
    e->next = s->free_head;
    s->free_head = i;
    stat_add(&s->used, -1);
}

/* Free up to LIMITS_RECLAIM_PER_CALL expired entries from the idle tail. */
static void
reclaim(const struct limits *t, struct limits_shard *s, uint64_t now_ms)
{
    for (unsigned n = 0; n < LIMITS_RECLAIM_PER_CALL; n++) {
        uint16_t i = s->idle_tail;

        if (i == NIL || !expired(&s->e[i], now_ms))
            return;
        entry_remove(t, s, i);
    }
}

/*
 * k's entry, made if it has none (idle, full buckets, at the head of the
 * idle list); NIL when the shard is full of entries with connections open.
 */
static uint16_t
entry_get(const struct limits *t, struct limits_shard *s, const struct limits_key *k, uint64_t h,
          uint64_t now_ms)
{
    struct limits_entry *e;
    uint16_t i;
    uint32_t pos = index_find(s, k, h, &i);

    if (i != NIL)
        return i;
    if (s->free_head == NIL) {
        uint16_t victim = s->idle_tail;

        if (victim == NIL)
            return NIL;
        if (!expired(&s->e[victim], now_ms))
            stat_add(&s->evicted, 1);
        entry_remove(t, s, victim);
        pos = index_find(s, k, h, &i); /* the deletion may have moved k's slot */
    }
    i = s->free_head;
    e = &s->e[i];
    s->free_head = e->next;
    *e = (struct limits_entry){ .key = *k, .last_ms = now_ms };
    s->idx[pos] = (uint16_t)(i + 1);
    idle_push(s, i);
    stat_add(&s->used, 1);
    return i;
}

static unsigned
conf_rate(const struct limits_conf *c, unsigned bucket)
{
    switch (bucket) {
    case LIMITS_CONNECT:
        return c->conn_rate;
    case LIMITS_MESSAGE:
        return c->msg_rate;
    case LIMITS_RCPT:
        return c->rcpt_rate;
    case LIMITS_AUTH_FAIL:
        return c->auth_fail_rate;
    }
    BUG_ON(bucket >= LIMITS_NBUCKETS);
    return 0;
}

/* Bring every bucket of e to now_ms at c's rates; capped at their capacity. */
static void
refill(struct limits_entry *e, const struct limits_conf *c, uint64_t now_ms)
{
    uint64_t elapsed = 0;

    if (now_ms > e->last_ms) {
        elapsed = MIN(now_ms - e->last_ms, (uint64_t)WINDOW_MS); /* a full refill */
        e->last_ms = now_ms;
    }
    for (unsigned b = 0; b < LIMITS_NBUCKETS; b++) {
        uint64_t rate = conf_rate(c, b), gain = elapsed * rate; /* <= 60000 * UINT_MAX */

        e->debt[b] = e->debt[b] > gain ? MIN(e->debt[b] - gain, rate * UNIT) : 0;
    }
}

/* One token from bucket b, refilled, of rate (> 0): false when it has none. */
static bool
take(struct limits_entry *e, unsigned b, unsigned rate)
{
    if (e->debt[b] + UNIT > (uint64_t)rate * UNIT)
        return false;
    e->debt[b] += UNIT;
    return true;
}

/* ---- the API ---- */

struct limits *
limits_new(unsigned capacity)
{
    struct limits *t;
    struct limits_entry *entries;
    uint16_t *idx;
    unsigned nshards = LIMITS_SHARDS;
    size_t slots = 0, bytes;
    uint64_t seed[2];

    if (capacity == 0 || capacity > LIMITS_MAX_CAPACITY) {
        errno = EINVAL;
        return NULL;
    }
    while (nshards > 1 && capacity / nshards < LIMITS_SHARD_MIN)
        nshards /= 2;
    for (unsigned i = 0; i < nshards; i++) {
        size_t n = capacity / nshards + (i < capacity % nshards), sz = 2;

        while (sz < 2 * n)
            sz *= 2;
        slots += sz;
    }
    bytes = sizeof(*t) + (size_t)capacity * sizeof(struct limits_entry) + slots * sizeof(*idx);
    bytes = (bytes + CACHELINE - 1) / CACHELINE * CACHELINE; /* aligned_alloc (C11 7.22.3.1) */
    t = aligned_alloc(CACHELINE, bytes);
    if (t == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(t, 0, bytes); /* touch it all now: the table's memory is its capacity */
    /*
     * Rule zero: a system call in core/, once, at start-up. The key is not
     * an input anyone could choose; without getrandom() (seccomp), the
     * table's and the stack's randomised addresses stand in.
     */
    if (getrandom(seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        seed[0] = fmix64((uint64_t)(uintptr_t)t);
        seed[1] = fmix64((uint64_t)(uintptr_t)&seed ^ seed[0]);
    }
    t->k0 = seed[0];
    t->k1 = seed[1];
    t->nshards = nshards;
    entries = (struct limits_entry *)(t + 1);
    idx = (uint16_t *)(entries + capacity);
    for (unsigned i = 0; i < nshards; i++) {
        struct limits_shard *s = &t->shard[i];
        unsigned n = capacity / nshards + (i < capacity % nshards), sz = 2;

        while (sz < 2 * n)
            sz *= 2;
        atomic_flag_clear_explicit(&s->lock, memory_order_relaxed); /* before any thread */
        s->e = entries;
        s->idx = idx;
        s->mask = sz - 1;
        s->idle_head = s->idle_tail = NIL;
        s->free_head = 0;
        for (unsigned j = 0; j < n; j++)
            s->e[j].next = j + 1 < n ? (uint16_t)(j + 1) : NIL;
        entries += n;
        idx += sz;
    }
    return t;
}

void
limits_free(struct limits *t)
{
    free(t);
}

/*
 * Lock k's shard and find or make its entry, its buckets refilled to now_ms.
 * false (shard unlocked, counted as untracked) when the shard has no room.
 */
static bool
entry_locked(struct limits *t, const struct limits_key *k, const struct limits_conf *c,
             uint64_t now_ms, struct limits_shard **sp, uint16_t *ip)
{
    uint64_t h = key_hash(t, k);
    struct limits_shard *s = shard_of(t, h);
    uint16_t i;

    shard_lock(s);
    reclaim(t, s, now_ms);
    i = entry_get(t, s, k, h, now_ms);
    if (i == NIL) {
        stat_add(&s->untracked, 1);
        shard_unlock(s);
        return false;
    }
    refill(&s->e[i], c, now_ms);
    *sp = s;
    *ip = i;
    return true;
}

enum limits_verdict
limits_connect(struct limits *t, const struct limits_key *k, const struct limits_conf *c,
               uint64_t now_ms, bool *tracked)
{
    enum limits_verdict v = LIMITS_OK;
    struct limits_shard *s;
    struct limits_entry *e;
    uint16_t i;

    *tracked = false;
    /*
     * With every limit off there is nothing to keep. With only event limits
     * on, the connection is still counted: an entry with a connection open
     * is never evicted, so its client's buckets last as long as it does.
     */
    if ((c->conn_count | c->conn_rate | c->msg_rate | c->rcpt_rate | c->auth_fail_rate) == 0)
        return LIMITS_OK;
    if (!entry_locked(t, k, c, now_ms, &s, &i))
        return LIMITS_OK; /* fail open */
    e = &s->e[i];
    if (c->conn_count != 0 && e->count >= c->conn_count) {
        v = LIMITS_CONN_COUNT;
    } else if (c->conn_rate != 0 && !take(e, LIMITS_CONNECT, c->conn_rate)) {
        v = LIMITS_CONN_RATE;
    } else {
        BUG_ON(e->count == UINT32_MAX);
        if (e->count++ == 0)
            idle_unlink(s, i); /* connections open: never evicted */
        *tracked = true;
    }
    if (e->count == 0)
        idle_touch(s, i);
    shard_unlock(s);
    return v;
}

void
limits_disconnect(struct limits *t, const struct limits_key *k)
{
    uint64_t h = key_hash(t, k);
    struct limits_shard *s = shard_of(t, h);
    struct limits_entry *e;
    uint16_t i;

    shard_lock(s);
    (void)index_find(s, k, h, &i);
    /* a tracked connection's entry cannot have gone: count > 0 is never evicted */
    BUG_ON(i == NIL || s->e[i].count == 0);
    e = &s->e[i];
    if (--e->count == 0) {
        idle_push(s, i);
        if (buckets_full(e))
            entry_remove(t, s, i); /* nothing owed: free it now */
    }
    shard_unlock(s);
}

enum limits_verdict
limits_event(struct limits *t, const struct limits_key *k, enum limits_event ev,
             const struct limits_conf *c, uint64_t now_ms)
{
    unsigned rate = conf_rate(c, (unsigned)ev);
    struct limits_shard *s;
    struct limits_entry *e;
    uint16_t i;
    bool ok;

    if (rate == 0)
        return LIMITS_OK;
    if (!entry_locked(t, k, c, now_ms, &s, &i))
        return LIMITS_OK; /* fail open */
    e = &s->e[i];
    ok = take(e, (unsigned)ev, rate);
    if (e->count == 0)
        idle_touch(s, i);
    shard_unlock(s);
    return ok ? LIMITS_OK : (enum limits_verdict)(LIMITS_CONN_RATE + ev);
}

void
limits_stats(const struct limits *t, uint64_t *used, uint64_t *evicted, uint64_t *untracked)
{
    uint64_t u = 0, ev = 0, un = 0;

    for (unsigned i = 0; i < t->nshards; i++) {
        const struct limits_shard *s = &t->shard[i];

        u += atomic_load_explicit(&s->used, memory_order_relaxed);
        ev += atomic_load_explicit(&s->evicted, memory_order_relaxed);
        un += atomic_load_explicit(&s->untracked, memory_order_relaxed);
    }
    if (used != NULL)
        *used = u;
    if (evicted != NULL)
        *evicted = ev;
    if (untracked != NULL)
        *untracked = un;
}
