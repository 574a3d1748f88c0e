/*
 * auth.c: the SASL password database and the crypt(3) verifier pool.
 *
 * Thread affinity. auth_db_load() runs on the main thread (blocking file
 * I/O); a loaded database is immutable and shared by reference count. In the
 * pool, submit and poll for reactor r run on reactor r's thread only; the
 * verifier threads do the lookups and the hashing; new, set_db and free run
 * on the main thread.
 *
 * Per reactor (a "lane"): AUTH_POOL_SLOTS request slots, allocated once.
 *  - A free slot belongs to the reactor, on its private free list.
 *  - submit fills one and pushes it into the lane's q_ring (the reactor is
 *    its only producer), then posts the pool's semaphore.
 *  - A verifier takes a unit of the semaphore, then one slot from some lane's
 *    ring under the `claim` mutex (only verifiers take it: the consumer side
 *    of every ring is serialised by it, so the verifiers act as the ring's
 *    one consumer thread, each handing over to the next through the mutex).
 *    The slot is the verifier's until it publishes the verdict.
 *  - The verifier pushes the slot on the lane's done stack (a Treiber stack:
 *    CAS on one pointer), and calls the lane's notify hook if the stack was
 *    empty before its push.
 *  - poll takes the whole stack with one exchange (no ABA: nothing ever pops
 *    a single element), reverses it to publication order, puts each slot
 *    back on the free list and runs the callback.
 * The ring can never be full when submit has a free slot: the ring holds
 * only slots that are not free, at most AUTH_POOL_SLOTS - 1 of them then.
 * So the only "full" a reactor sees is an empty free list: -EAGAIN.
 *
 * Why the semaphore never lets a verifier find every ring empty: each post
 * follows its push (and sem_post/sem_wait are a release/acquire pair), and a
 * verifier that got a unit finds under the mutex every push whose post was
 * counted before its own wait, minus the slots taken by those before it in
 * the mutex's order, each of which spent a unit of its own: at least one
 * slot is left for it. (An empty scan is still handled: the unit is lost,
 * nothing else.)
 *
 * Timing. An unknown user, an over-long credential or a password with a NUL
 * costs the same crypt(3) as a known user, against the first entry's own
 * hash (same method, same cost) or, in an empty database, a fixed yescrypt
 * hash; its verdict is false whatever the comparison says. The comparison is
 * CRYPTO_memcmp() over the full length (the length of crypt's output is set
 * by the stored setting, not by the password). What still shows: users with
 * a slower method take longer, as in any crypt(3)-based store.
 *
 * Secrets. A password copy lives in its slot from submit until the verifier
 * has hashed it, then it is wiped (explicit_bzero), as is crypt's output
 * buffer; a slot dropped at shutdown is wiped by auth_pool_free(). The file
 * contents (with the hashes) are wiped when the database is freed. No error
 * message ever contains a hash.
 */
#define _GNU_SOURCE
#include "net/auth.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/mem.h>

#include "core/compiler.h"
#include "queue/ring.h"

/* ---- the database ---- */

struct auth_entry {
    const char *user; /* NUL-terminated, inside db->buf */
    const char *hash; /* NUL-terminated, inside db->buf */
    uint32_t ulen, hlen;
    uint32_t line; /* where it was defined, for the duplicate message */
};

/* Immutable after auth_db_load() returns, except refs. */
struct auth_db {
    atomic_uint refs;
    uint32_t count;
    struct auth_entry *entries; /* count used */
    uint32_t *table;            /* mask + 1 cells: entry index + 1, 0 = empty; load <= 1/2 */
    size_t mask;
    char *buf; /* the file's contents, every string points here; wiped when freed */
    size_t buflen;
    const char *dummy; /* the setting hashed for unknown users */
    uint32_t dummy_len;
};

/* For an empty database: a yescrypt hash (default cost); its verdict is false anyway. */
static const char dummy_yescrypt[] =
    "$y$j9T$k2XAnEHBqQ1Ct2aMXFKNa/$5Dhj9CFJAan/x9XCJ10MyOmpce2LDHg//3FMyevTOu3";

static const char *const methods[] = { "$y$", "$gy$", "$7$", "$6$", "$5$", "$2b$", "$2y$" };

#define EXPECT_HASH                                                                                \
    "expected a crypt(3) hash: $y$ (yescrypt), $6$ (SHA-512, openssl passwd -6), $5$ (SHA-256), "  \
    "$2b$ or $2y$ (bcrypt), $gy$ or $7$"
#define QUOTE_SHOWN 48u                     /* user octets quoted in a message */
#define QUOTE_MAX   (QUOTE_SHOWN * 4u + 4u) /* each as \xHH at worst, then "..." */

static uint64_t
fnv1a(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool
is_ctl(uint8_t c)
{
    return c < 0x20 || c == 0x7f;
}

/* A user name as it can go into a log line: printable ASCII, the rest as \xHH. */
static void
quote_user(char dst[QUOTE_MAX], const char *u, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, shown = MIN(len, QUOTE_SHOWN);

    for (size_t i = 0; i < shown; i++) {
        uint8_t c = (uint8_t)u[i];

        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (len > shown) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

static int PRINTF(4, 5) load_error(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/*
 * The whole file, NUL-terminated, in *bufp (bounded by AUTH_FILE_MAX; the
 * bound is checked on what is read, so a file growing meanwhile is caught).
 */
static int
read_file(const char *path, char **bufp, size_t *lenp, char *err, size_t errlen)
{
    struct stat st;
    size_t cap, len = 0;
    char *buf = NULL;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        rc = -errno;
        return load_error(err, errlen, rc, "%s: %s", path, strerror(-rc));
    }
    if (fstat(fd, &st) == -1) {
        rc = -errno;
        load_error(err, errlen, rc, "%s: %s", path, strerror(-rc));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = load_error(err, errlen, -EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > AUTH_FILE_MAX)
        goto too_big;
    cap = MAX((size_t)st.st_size + 1, (size_t)4096);
    for (;;) {
        ssize_t n;

        if (buf == NULL || len + 1 >= cap) {
            char *nb;

            if (buf != NULL)
                cap *= 2;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                rc = load_error(err, errlen, -ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
        }
        n = read(fd, buf + len, cap - 1 - len);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            load_error(err, errlen, rc, "%s: %s", path, strerror(-rc));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > AUTH_FILE_MAX)
            goto too_big;
    }
    close(fd);
    buf[len] = '\0';
    *bufp = buf;
    *lenp = len;
    return 0;
too_big:
    rc = load_error(err, errlen, -EFBIG, "%s: larger than %zu MiB; expected a password file", path,
                    AUTH_FILE_MAX >> 20);
fail:
    if (buf != NULL) {
        explicit_bzero(buf, len);
        free(buf);
    }
    close(fd);
    return rc;
}

/* The next line of buf[0..len) from *pos: its start and length without the LF. */
static bool
next_line(const char *buf, size_t len, size_t *pos, size_t *llen)
{
    const char *lf;

    if (*pos >= len)
        return false;
    lf = memchr(buf + *pos, '\n', len - *pos);
    *llen = (lf != NULL ? (size_t)(lf - buf) : len) - *pos;
    return true;
}

/* An empty line, a line of blanks, or a comment: not an entry. */
static bool
skip_line(const char *s, size_t n)
{
    if (n > 0 && s[0] == '#')
        return true;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    }
    return true;
}

static bool
hash_supported(const char *hash)
{
    bool known = false;

    for (size_t i = 0; i < ARRAY_SIZE(methods); i++) {
        if (strncmp(hash, methods[i], strlen(methods[i])) == 0)
            known = true;
    }
    if (!known)
        return false;
#ifdef CRYPT_CHECKSALT_AVAILABLE
    /* libxcrypt 4.4 calls $5$ "legacy" but computes it; INVALID means a bad
       character or a method this libcrypt was built without */
    switch (crypt_checksalt(hash)) {
    case CRYPT_SALT_OK:
    case CRYPT_SALT_METHOD_LEGACY:
        return true;
    default:
        return false;
    }
#else
    return true;
#endif
}

static const struct auth_entry *
db_lookup(const struct auth_db *db, const char *user, size_t ulen)
{
    size_t i = (size_t)fnv1a(user, ulen) & db->mask;

    /* the table is at most half full: the probe ends at an empty cell */
    for (;; i = (i + 1) & db->mask) {
        uint32_t c = db->table[i];
        const struct auth_entry *e;

        if (c == 0)
            return NULL;
        e = &db->entries[c - 1];
        if (e->ulen == ulen && memcmp(e->user, user, ulen) == 0)
            return e;
    }
}

/* One entry line, s[0..n) (CR stripped), checked and added; 0 or -EINVAL with err set. */
static int
parse_entry(struct auth_db *db, const char *path, uint32_t lineno, char *s, size_t n, char *err,
            size_t errlen)
{
    char q[QUOTE_MAX];
    char *colon = memchr(s, ':', n), *hash;
    size_t ulen, hlen, i;
    const struct auth_entry *dup;
    struct auth_entry *e;

    if (colon == NULL)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: no ':' in the line; expected user:hash, one per line", path,
                          lineno);
    ulen = (size_t)(colon - s);
    hash = colon + 1;
    hlen = n - ulen - 1;
    quote_user(q, s, ulen);
    if (ulen == 0)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: empty user name before ':'; expected user:hash with a user of "
                          "1 to %u octets",
                          path, lineno, AUTH_USER_MAX);
    if (ulen > AUTH_USER_MAX)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': %zu octets long; expected at most %u", path, lineno, q,
                          ulen, AUTH_USER_MAX);
    for (i = 0; i < ulen && !is_ctl((uint8_t)s[i]); i++)
        ;
    if (i < ulen)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': control character at octet %zu of the user name; "
                          "expected printable characters",
                          path, lineno, q, i + 1);
    if (hlen == 0)
        return load_error(err, errlen, -EINVAL, "%s:%u: user '%s': empty hash; " EXPECT_HASH, path,
                          lineno, q);
    if (memchr(hash, ':', hlen) != NULL)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': more than one ':' (a passwd or shadow line?); "
                          "expected user:hash",
                          path, lineno, q);
    for (i = 0; i < hlen && !is_ctl((uint8_t)hash[i]) && hash[i] != ' '; i++)
        ;
    if (i < hlen)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': space or control character in the hash; " EXPECT_HASH,
                          path, lineno, q);
    if (hlen >= CRYPT_OUTPUT_SIZE)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': hash of %zu octets; expected at most %d", path, lineno,
                          q, hlen, CRYPT_OUTPUT_SIZE - 1);
    /* the strings end in place: the line's ':' and its CR, LF or the buffer's final NUL */
    *colon = '\0';
    hash[hlen] = '\0';
    if (!hash_supported(hash))
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': unknown or unsupported hash method; " EXPECT_HASH,
                          path, lineno, q);
    dup = db_lookup(db, s, ulen);
    if (dup != NULL)
        return load_error(err, errlen, -EINVAL,
                          "%s:%u: user '%s': listed again (first on line %u); expected each "
                          "user once",
                          path, lineno, q, dup->line);
    e = &db->entries[db->count];
    *e = (struct auth_entry){
        .user = s, .hash = hash, .ulen = (uint32_t)ulen, .hlen = (uint32_t)hlen, .line = lineno
    };
    for (i = (size_t)fnv1a(s, ulen) & db->mask; db->table[i] != 0; i = (i + 1) & db->mask)
        ;
    db->table[i] = ++db->count;
    return 0;
}

static void
db_free(struct auth_db *db)
{
    if (db->buf != NULL)
        explicit_bzero(db->buf, db->buflen);
    free(db->buf);
    free(db->entries);
    free(db->table);
    free(db);
}

int
auth_db_load(const char *path, struct auth_db **out, char *err, size_t errlen)
{
    struct auth_db *db;
    size_t pos, n, candidates = 0, cells = 8;
    uint32_t lineno = 0;
    int rc;

    *out = NULL;
    db = calloc(1, sizeof(*db));
    if (db == NULL)
        return load_error(err, errlen, -ENOMEM, "%s: out of memory", path);
    rc = read_file(path, &db->buf, &db->buflen, err, errlen);
    if (rc < 0)
        goto fail;

    /* first pass: an upper bound on the entries, to size the arrays once */
    for (pos = 0; next_line(db->buf, db->buflen, &pos, &n); pos += n + 1)
        candidates += !skip_line(db->buf + pos, n);
    while (cells < 2 * candidates)
        cells *= 2;
    db->entries = calloc(MAX(candidates, (size_t)1), sizeof(*db->entries));
    db->table = calloc(cells, sizeof(*db->table));
    if (db->entries == NULL || db->table == NULL) {
        rc = load_error(err, errlen, -ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    db->mask = cells - 1;

    /* second pass: every line checked in order, so the first bad line is the one reported */
    for (pos = 0; next_line(db->buf, db->buflen, &pos, &n); pos += n + 1) {
        char *s = db->buf + pos;

        lineno++;
        if (n > AUTH_LINE_MAX) {
            rc = load_error(err, errlen, -EINVAL,
                            "%s:%u: line longer than %u octets; expected user:hash", path, lineno,
                            AUTH_LINE_MAX);
            goto fail;
        }
        if (skip_line(s, n))
            continue;
        rc = parse_entry(db, path, lineno, s, n > 0 && s[n - 1] == '\r' ? n - 1 : n, err, errlen);
        if (rc < 0)
            goto fail;
    }
    if (db->count > 0) {
        db->dummy = db->entries[0].hash;
        db->dummy_len = db->entries[0].hlen;
    } else {
        db->dummy = dummy_yescrypt;
        db->dummy_len = (uint32_t)strlen(dummy_yescrypt);
    }
    /* published to other threads by the mutex or thread creation that hands it over */
    atomic_init(&db->refs, 1);
    *out = db;
    return 0;
fail:
    db_free(db);
    return rc;
}

void
auth_db_get(struct auth_db *db)
{
    /* relaxed: the caller already holds a reference, so db stays alive; nothing is published */
    atomic_fetch_add_explicit(&db->refs, 1, memory_order_relaxed);
}

void
auth_db_put(struct auth_db *db)
{
    if (db == NULL)
        return;
    /* release: this thread's reads of db happen before the free by whoever drops the last
       reference; acquire (for that last one): every other holder's reads happen before
       its free. acq_rel on the RMW rather than a fence, which ThreadSanitizer cannot see. */
    if (atomic_fetch_sub_explicit(&db->refs, 1, memory_order_acq_rel) == 1)
        db_free(db);
}

size_t
auth_db_count(const struct auth_db *db)
{
    return db->count;
}

/* ---- the verifier pool ---- */

/* A request slot. Owner: the reactor while free or filled and not yet queued, a verifier
   from its claim to its publication, the reactor again from poll's exchange on. */
struct auth_req {
    struct auth_req *next; /* the free list (reactor) or the done stack */
    uint64_t token;
    uint32_t ulen, plen; /* octets copied */
    bool bad;            /* answered false whatever the hash says */
    bool ok;             /* the verdict, set before publication */
    char user[AUTH_USER_MAX + 1];
    char pass[AUTH_PASS_MAX + 1]; /* wiped once hashed */
};

/* One reactor's side of the pool. */
struct auth_lane {
    struct q_ring req; /* queued slots: the reactor produces, verifiers consume under `claim` */

    /* verifiers push (CAS), the reactor reads and takes all (exchange) */
    alignas(CACHELINE) _Atomic(struct auth_req *) done; /* newest first; NULL = empty */
    auth_notify_fn *notify; /* plain: set before the reactor's first submit, read by verifiers */
    void *notify_arg;

    /* reactor-private */
    alignas(CACHELINE) struct auth_req *free;
    struct auth_req *slots; /* AUTH_POOL_SLOTS, for the final wipe */
};

struct auth_verifier {
    pthread_t thread;
    struct auth_pool *pool;
    unsigned index;
    struct crypt_data *cd; /* crypt_rn's 32 KiB work area, this thread's */
};

struct auth_pool {
    unsigned nreactors;
    unsigned nthreads; /* started */
    struct auth_lane *lanes;
    struct auth_verifier *verifiers;
    sem_t work;       /* one unit per queued request, plus one per thread at stop */
    atomic_bool stop; /* set once, by auth_pool_free() */

    pthread_mutex_t claim; /* verifiers only: the consumer side of every lane's ring */
    unsigned claim_next;   /* under claim: the lane looked at first next time */

    pthread_mutex_t db_lock; /* verifiers and set_db (main thread); never a reactor */
    struct auth_db *db;      /* under db_lock; the pool's reference */
};

/* A verifier: take one queued slot from some lane, or NULL. */
static struct auth_req *
claim(struct auth_pool *p, struct auth_lane **lanep)
{
    struct auth_req *s = NULL;

    pthread_mutex_lock(&p->claim);
    for (unsigned k = 0; k < p->nreactors; k++) {
        unsigned i = (p->claim_next + k) % p->nreactors;
        void *item;

        /* q_ring_pop's acquire load of tail pairs with submit's release (q_ring_push): the
           slot's contents are visible. The mutex passes the consumer role, with its private
           tail cache, from one verifier to the next. */
        if (q_ring_pop(&p->lanes[i].req, &item) == 0) {
            s = item;
            *lanep = &p->lanes[i];
            p->claim_next = (i + 1) % p->nreactors; /* fair: round-robin across reactors */
            break;
        }
    }
    pthread_mutex_unlock(&p->claim);
    return s;
}

static void
verify(struct auth_pool *p, struct crypt_data *cd, struct auth_req *s)
{
    const struct auth_entry *e;
    struct auth_db *db;
    const char *ref, *out;
    size_t rlen;
    bool same = false;

    /* a reference of our own: set_db may drop the pool's meanwhile */
    pthread_mutex_lock(&p->db_lock);
    db = p->db;
    auth_db_get(db);
    pthread_mutex_unlock(&p->db_lock);

    e = s->bad ? NULL : db_lookup(db, s->user, s->ulen);
    ref = e != NULL ? e->hash : db->dummy;
    rlen = e != NULL ? e->hlen : db->dummy_len;
    /* the same work whether the user exists or not */
    out = crypt_rn(s->pass, ref, cd, (int)sizeof(*cd));
    if (out != NULL && strnlen(out, CRYPT_OUTPUT_SIZE) == rlen)
        same = CRYPTO_memcmp(out, ref, rlen) == 0;
    s->ok = same && e != NULL && !s->bad;
    explicit_bzero(s->pass, s->plen + 1u);
    explicit_bzero(cd->output, sizeof(cd->output));
    auth_db_put(db);
}

static void
publish(struct auth_lane *lane, struct auth_req *s)
{
    /* relaxed: only a guess for the CAS, which reloads it on failure */
    struct auth_req *old = atomic_load_explicit(&lane->done, memory_order_relaxed);

    do {
        s->next = old;
        /* release (success): publishes s->next, s->ok and the wiped slot; pairs with the
           acquire exchange in auth_pool_poll(). Later pushes are RMWs, so they continue
           this release sequence and the exchange synchronizes with every push it takes.
           relaxed (failure): old is only stored, never dereferenced. */
    } while (!atomic_compare_exchange_weak_explicit(&lane->done, &old, s, memory_order_release,
                                                    memory_order_relaxed));
    /*
     * A push onto a non-empty stack needs no wake-up: the push that made it non-empty
     * comes before ours in the pointer's modification order, its verifier calls notify
     * after that push, and the reactor's next exchange, which follows both, takes ours
     * too. Only the first push after an exchange (old == NULL) notifies, after its CAS.
     */
    if (old == NULL && lane->notify != NULL)
        lane->notify(lane->notify_arg);
}

static void *
verifier_main(void *arg)
{
    struct auth_verifier *v = arg;
    struct auth_pool *p = v->pool;
    char name[16];

    snprintf(name, sizeof(name), "rm-auth-%u", v->index);
    (void)pthread_setname_np(pthread_self(), name);
    for (;;) {
        struct auth_lane *lane = NULL;
        struct auth_req *s;

        if (sem_wait(&p->work) == -1)
            continue; /* EINTR */
        /* acquire: pairs with the release store in auth_pool_free() (the sem_post after it
           orders it too, for the unit this thread took) */
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            break;
        s = claim(p, &lane);
        if (s == NULL)
            continue; /* cannot happen (see the top of the file): the unit is spent */
        verify(p, v->cd, s);
        publish(lane, s);
    }
    return NULL;
}

static void
pool_fini(struct auth_pool *p)
{
    for (unsigned i = 0; p->lanes != NULL && i < p->nreactors; i++) {
        struct auth_lane *lane = &p->lanes[i];

        if (lane->slots != NULL) {
            /* requests dropped unanswered: no password copy survives the pool */
            explicit_bzero(lane->slots, AUTH_POOL_SLOTS * sizeof(*lane->slots));
            free(lane->slots);
        }
        q_ring_fini(&lane->req);
    }
    free(p->lanes);
    for (unsigned i = 0; p->verifiers != NULL && i < p->nthreads; i++)
        free(p->verifiers[i].cd);
    free(p->verifiers);
    sem_destroy(&p->work);
    pthread_mutex_destroy(&p->claim);
    pthread_mutex_destroy(&p->db_lock);
    auth_db_put(p->db);
    free(p);
}

struct auth_pool *
auth_pool_new(unsigned nthreads, unsigned nreactors, struct auth_db *db)
{
    struct auth_pool *p;
    sigset_t all, old;
    unsigned want = nthreads;
    int rc = 0;

    BUG_ON(db == NULL);
    if (nreactors == 0 || nreactors > AUTH_POOL_MAX_REACTORS || nthreads > AUTH_POOL_MAX_THREADS) {
        errno = EINVAL;
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->nreactors = nreactors;
    p->nthreads = nthreads; /* for pool_fini(): the crypt areas to free */
    atomic_init(&p->stop, false);
    sem_init(&p->work, 0, 0);
    pthread_mutex_init(&p->claim, NULL);
    pthread_mutex_init(&p->db_lock, NULL);
    auth_db_get(db);
    p->db = db;

    /* struct auth_lane is cache-line aligned (its fields are): so is its size */
    p->lanes = aligned_alloc(CACHELINE, nreactors * sizeof(*p->lanes));
    if (p->lanes == NULL)
        goto nomem;
    memset(p->lanes, 0, nreactors * sizeof(*p->lanes));
    p->verifiers = calloc(MAX(nthreads, 1u), sizeof(*p->verifiers));
    if (p->verifiers == NULL)
        goto nomem;
    for (unsigned i = 0; i < nreactors; i++) {
        struct auth_lane *lane = &p->lanes[i];

        atomic_init(&lane->done, NULL);
        lane->slots = calloc(AUTH_POOL_SLOTS, sizeof(*lane->slots));
        if (lane->slots == NULL || q_ring_init(&lane->req, AUTH_POOL_SLOTS) < 0)
            goto nomem;
        for (unsigned k = AUTH_POOL_SLOTS; k-- > 0;) {
            lane->slots[k].next = lane->free;
            lane->free = &lane->slots[k];
        }
    }
    for (unsigned i = 0; i < nthreads; i++) {
        p->verifiers[i].cd = calloc(1, sizeof(*p->verifiers[i].cd));
        if (p->verifiers[i].cd == NULL)
            goto nomem;
    }

    /* the verifiers inherit a full mask: signals stay with the main thread's sigwait */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    p->nthreads = 0;
    for (unsigned i = 0; i < want; i++) {
        struct auth_verifier *v = &p->verifiers[i];

        v->pool = p;
        v->index = i;
        rc = pthread_create(&v->thread, NULL, verifier_main, v);
        if (rc != 0)
            break;
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        /* the areas of the threads that did not start are freed here, the rest by free() */
        for (unsigned i = p->nthreads; i < want; i++)
            free(p->verifiers[i].cd);
        auth_pool_free(p);
        errno = rc;
        return NULL;
    }
    return p;
nomem:
    pool_fini(p);
    errno = ENOMEM;
    return NULL;
}

void
auth_pool_set_db(struct auth_pool *p, struct auth_db *db)
{
    struct auth_db *old;

    BUG_ON(db == NULL);
    auth_db_get(db);
    pthread_mutex_lock(&p->db_lock);
    old = p->db;
    p->db = db;
    pthread_mutex_unlock(&p->db_lock);
    /* a verifier still hashing against old holds its own reference */
    auth_db_put(old);
}

void
auth_pool_free(struct auth_pool *p)
{
    if (p == NULL)
        return;
    /* release: pairs with the verifiers' acquire load after sem_wait */
    atomic_store_explicit(&p->stop, true, memory_order_release);
    for (unsigned i = 0; i < p->nthreads; i++)
        sem_post(&p->work);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->verifiers[i].thread, NULL);
    pool_fini(p);
}

void
auth_pool_set_notify(struct auth_pool *p, unsigned reactor, auth_notify_fn *fn, void *arg)
{
    BUG_ON(reactor >= p->nreactors);
    /* plain stores: the reactor's first submit (its release in q_ring_push) publishes them
       to the verifier that takes that request */
    p->lanes[reactor].notify = fn;
    p->lanes[reactor].notify_arg = arg;
}

int
auth_pool_submit(struct auth_pool *p, unsigned reactor, uint64_t token, const char *user,
                 size_t ulen, const char *pass, size_t plen)
{
    struct auth_lane *lane;
    struct auth_req *s;
    int rc;

    BUG_ON(reactor >= p->nreactors);
    lane = &p->lanes[reactor];
    s = lane->free;
    if (s == NULL)
        return -EAGAIN;
    lane->free = s->next;
    s->next = NULL;
    s->token = token;
    s->ok = false;
    s->bad = ulen == 0 || ulen > AUTH_USER_MAX || plen > AUTH_PASS_MAX ||
             (plen > 0 && memchr(pass, '\0', plen) != NULL);
    s->ulen = (uint32_t)MIN(ulen, (size_t)AUTH_USER_MAX);
    s->plen = (uint32_t)MIN(plen, (size_t)AUTH_PASS_MAX);
    if (s->ulen > 0)
        memcpy(s->user, user, s->ulen);
    s->user[s->ulen] = '\0';
    if (s->plen > 0)
        memcpy(s->pass, pass, s->plen);
    s->pass[s->plen] = '\0';
    /* release (inside q_ring_push, its store of tail): publishes the slot's contents;
       pairs with the acquire in claim()'s q_ring_pop. Never full: the ring holds only
       slots that are not free, and this one was free. */
    rc = q_ring_push(&lane->req, s);
    BUG_ON(rc != 0);
    /* an atomic add, and a futex wake only when a verifier sleeps: never blocks */
    (void)sem_post(&p->work);
    return 0;
}

unsigned
auth_pool_poll(struct auth_pool *p, unsigned reactor, auth_result_fn *cb, void *arg)
{
    struct auth_lane *lane;
    struct auth_req *s, *next, *fifo = NULL;
    unsigned n = 0;

    BUG_ON(reactor >= p->nreactors);
    lane = &p->lanes[reactor];
    /* relaxed: an emptiness check only, no slot is read on its word. It cannot miss a push
       whose notify this thread has already read: the eventfd write follows the CAS on the
       verifier's side and the read precedes this load on ours, and the kernel's eventfd
       lock orders the two, so coherence makes this load see that push or a later value. */
    if (atomic_load_explicit(&lane->done, memory_order_relaxed) == NULL)
        return 0;
    /* acquire: pairs with the release CAS of every push on the stack (publish()): the
       slots' next, ok and token are visible */
    s = atomic_exchange_explicit(&lane->done, NULL, memory_order_acquire);
    for (; s != NULL; s = next) {
        next = s->next;
        s->next = fifo;
        fifo = s;
    }
    for (s = fifo; s != NULL; s = next) {
        uint64_t token = s->token;
        bool ok = s->ok;

        next = s->next;
        /* free before the callback: it may submit again */
        s->next = lane->free;
        lane->free = s;
        cb(arg, token, ok);
        n++;
    }
    return n;
}
