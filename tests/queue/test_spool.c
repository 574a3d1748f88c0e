/*
 * Tests for queue/spool.c and queue/spool_recover.c: record sealing, the SEG
 * and MSG codecs, queue ids, the queue listing, and recovery of real segment
 * files written into a mkdtemp() folder (torn tails, damaged records, holes,
 * several segments, a disk that fills up half-way through a write, damaged
 * segment headers, records forged inside a message body), per-recipient
 * DONE records, the segment list and spool_seg_unlink().
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "queue/spool.h"

/* ---- helpers ---- */

#define ARRIVAL 1606497667u /* Fri Nov 27 17:21:07 2020 UTC */

static char *
mk_spool_dir(void)
{
    char *d = strdup("/tmp/ringmail-spool-XXXXXX");

    cr_assert_not_null(d);
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void
rm_spool_dir(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    cr_assert_not_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            cr_assert_eq(unlinkat(dirfd(d), de->d_name, 0), 0);
    }
    closedir(d);
    cr_assert_eq(rmdir(dir), 0);
    free(dir);
}

static void
make_env(struct envelope *e, uint64_t id, const char *sender, unsigned nrcpt)
{
    env_init(e);
    e->id = id;
    qid_format(id, e->qid);
    e->arrival = ARRIVAL;
    e->flags = ENV_F_ESMTP | ENV_F_8BITMIME;
    cr_assert_eq(env_put(e, &e->client, "192.0.2.1", 9), 0);
    cr_assert_eq(env_put(e, &e->helo, "mx.example", 10), 0);
    cr_assert_eq(env_put(e, &e->sender, sender, strlen(sender)), 0);
    cr_assert_eq(env_put(e, &e->mail_params, "BODY=8BITMIME", 13), 0);
    for (unsigned i = 0; i < nrcpt; i++) {
        char addr[64];
        int n = snprintf(addr, sizeof(addr), "rcpt%u@example.org", i);

        cr_assert_eq(env_add_rcpt(e, slice_make(addr, (size_t)n),
                                  i % 2 ? SLICE_LIT("NOTIFY=NEVER") : SLICE_LIT("")),
                     0);
    }
}

static bool
str_eq(const struct envelope *a, struct env_str x, const struct envelope *b, struct env_str y)
{
    struct slice s = env_get(a, x), t = env_get(b, y);

    return s.len == t.len && memcmp(s.p, t.p, s.len) == 0;
}

static void
assert_env_eq(const struct envelope *a, const struct envelope *b)
{
    cr_assert_eq(a->id, b->id);
    cr_assert_str_eq(a->qid, b->qid);
    cr_assert_eq(a->arrival, b->arrival);
    cr_assert_eq(a->body_len, b->body_len);
    cr_assert_eq(a->flags, b->flags);
    cr_assert(str_eq(a, a->client, b, b->client));
    cr_assert(str_eq(a, a->helo, b, b->helo));
    cr_assert(str_eq(a, a->sender, b, b->sender));
    cr_assert(str_eq(a, a->mail_params, b, b->mail_params));
    cr_assert_eq(a->nrcpt, b->nrcpt);
    for (uint32_t i = 0; i < a->nrcpt; i++) {
        cr_assert(str_eq(a, a->rcpt[i].addr, b, b->rcpt[i].addr));
        cr_assert(str_eq(a, a->rcpt[i].params, b, b->rcpt[i].params));
    }
}

static char *
make_body(uint64_t id, size_t n)
{
    char *b = malloc(n ? n : 1);

    cr_assert_not_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (i % 64 == 63) ? '\n' : (char)('a' + (char)((i + id) % 26));
    return b;
}

/* A segment built in memory, then written to a file. */
struct sb {
    char *p;
    size_t len, cap;
    uint64_t seed; /* checksum seed of every record but SEG: set by sb_seg() */
};

/* A fixed, non-zero seed per segment id, so that runs repeat (the writer's are random). */
static uint64_t
seg_seed(uint64_t seg_id)
{
    return (seg_id + 1) * 0x9E3779B97F4A7C15ull;
}

/* Where a message's records went: DATA records first, the MSG record last. */
struct span {
    uint64_t start, end;
    unsigned nrec;
    uint64_t roff[16];
    uint32_t rlen[16];
};

static void
sb_reserve(struct sb *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;

        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        cr_assert_not_null(b->p);
        b->cap = cap;
    }
}

static uint64_t
sb_rec(struct sb *b, enum spool_rec_type type, uint64_t id, const void *payload, size_t n)
{
    struct iovec iov = { (void *)(uintptr_t)payload, n };
    struct spool_rec_hdr h;
    size_t size = spool_rec_size(n);
    uint64_t off = b->len;

    sb_reserve(b, size);
    spool_rec_seal(&h, type, id, b->seed, &iov, 1);
    memset(b->p + off, 0, size);
    memcpy(b->p + off, &h, sizeof(h));
    if (n > 0)
        memcpy(b->p + off + SPOOL_HDR_SIZE, payload, n);
    b->len += size;
    return off;
}

/* The SEG record; the records added after it are sealed with its seed. */
static void
sb_seg(struct sb *b, uint64_t seg_id)
{
    struct spool_seg_info info = {
        .seg_id = seg_id, .reactor = 1, .created = ARRIVAL, .seed = seg_seed(seg_id)
    };

    sb_reserve(b, 64);
    b->len += spool_seg_record(b->p + b->len, 64, &info);
    b->seed = info.seed;
}

/* Spool a message the way the writer does: nchunk DATA records, then MSG. */
static struct span
sb_msg(struct sb *b, struct envelope *e, const char *body, size_t n, unsigned nchunk)
{
    struct spool_extent ext[15];
    struct span sp = { .start = b->len };
    size_t pos = 0, psize;
    char *payload;

    cr_assert(nchunk >= 1 && nchunk <= 15);
    e->body_len = n;
    for (unsigned i = 0; i < nchunk; i++) {
        size_t len = i + 1 < nchunk ? n / nchunk : n - pos;

        ext[i].off = sb_rec(b, SPOOL_REC_DATA, e->id, body + pos, len);
        ext[i].len = (uint32_t)len;
        sp.roff[sp.nrec] = ext[i].off;
        sp.rlen[sp.nrec++] = (uint32_t)len;
        pos += len;
    }
    psize = spool_msg_payload_size(e, nchunk);
    payload = malloc(psize);
    cr_assert_not_null(payload);
    cr_assert_eq(spool_msg_encode(payload, psize, e, ext, nchunk), psize);
    sp.roff[sp.nrec] = sb_rec(b, SPOOL_REC_MSG, e->id, payload, psize);
    sp.rlen[sp.nrec++] = (uint32_t)psize;
    free(payload);
    sp.end = b->len;
    return sp;
}

static void
write_file(const char *dir, const char *name, const char *p, size_t n)
{
    char path[512];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert_neq(fd, -1);
    while (n > 0) {
        ssize_t k = write(fd, p, n);

        cr_assert_gt(k, 0);
        p += k;
        n -= (size_t)k;
    }
    close(fd);
}

static void
write_seg(const char *dir, uint64_t seg_id, const char *p, size_t n)
{
    char name[32];

    spool_seg_name(seg_id, name, sizeof(name));
    write_file(dir, name, p, n);
}

struct logcap {
    unsigned n;
    char lines[64][512];
};

static void
cap_log(void *arg, const char *line)
{
    struct logcap *c = arg;

    if (c->n < 64)
        snprintf(c->lines[c->n++], sizeof(c->lines[0]), "%s", line);
}

static bool
log_has(const struct logcap *c, const char *needle)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (strstr(c->lines[i], needle) != NULL)
            return true;
    }
    return false;
}

/* A set of messages with known ids and bodies to spool and find again. */
#define NMSG 4

struct fixture {
    struct envelope env[NMSG];
    char *body[NMSG];
    size_t blen[NMSG];
};

static void
fixture_init(struct fixture *f, uint64_t base)
{
    static const size_t sizes[NMSG] = { 100, 3000, 1, 517 };

    for (unsigned i = 0; i < NMSG; i++) {
        make_env(&f->env[i], base + i, i == 2 ? "" : "sender@example.com", i + 1);
        f->blen[i] = sizes[i];
        f->body[i] = make_body(base + i, sizes[i]);
    }
}

static void
fixture_free(struct fixture *f)
{
    for (unsigned i = 0; i < NMSG; i++) {
        env_free(&f->env[i]);
        free(f->body[i]);
    }
}

static void
assert_body(const char *dir, const struct spool_msg *m, const char *want, size_t n)
{
    char *body;
    size_t len;

    cr_assert_eq(spool_read_body(dir, m, &body, &len), 0);
    cr_assert_eq(len, n);
    cr_assert(memcmp(body, want, n) == 0);
    free(body);
}

/* ---- records ---- */

Test(spool, seal_and_verify)
{
    char buf[256] = { 0 };
    static const char a[] = "hello, ", b[] = "world";
    struct iovec iov[2] = { { (void *)(uintptr_t)a, 7 }, { (void *)(uintptr_t)b, 5 } };
    struct spool_rec_hdr h, got;
    size_t size = spool_rec_size(12);
    const uint64_t seed = 0x0123456789ABCDEFull;

    cr_assert_eq(size, 48);
    spool_rec_seal(&h, SPOOL_REC_DATA, 0x1234, seed, iov, 2);
    cr_assert_eq(h.csum, spool_rec_csum(&h, seed, iov, 2));
    cr_assert_neq(h.csum, spool_rec_csum(&h, 0, iov, 2));
    cr_assert_eq(h.magic, SPOOL_MAGIC);
    cr_assert_eq(h.type, SPOOL_REC_DATA);
    cr_assert_eq(h.version, SPOOL_VERSION);
    cr_assert_eq(h.len, 12);
    cr_assert_eq(h.id, 0x1234);
    cr_assert(memcmp(buf, "RMSP", 4) != 0);
    memcpy(buf, &h, sizeof(h));
    cr_assert(memcmp(buf, "RMSP", 4) == 0, "magic reads RMSP on disk");
    memcpy(buf + SPOOL_HDR_SIZE, "hello, world", 12);
    cr_assert(spool_rec_verify(buf, size, seed, &got));
    cr_assert_eq(got.csum, h.csum);
    cr_assert(spool_rec_verify(buf, SPOOL_HDR_SIZE + 12, seed, &got), "padding is not needed");
    cr_assert_not(spool_rec_verify(buf, SPOOL_HDR_SIZE + 11, seed, &got));
    cr_assert_not(spool_rec_verify(buf, 10, seed, &got));
    /* one flipped bit anywhere in header or payload is caught */
    for (size_t i = 0; i < SPOOL_HDR_SIZE + 12; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] = (char)(buf[i] ^ (1 << bit));
            cr_assert_not(spool_rec_verify(buf, size, seed, &got), "flip at %zu bit %d", i, bit);
            buf[i] = (char)(buf[i] ^ (1 << bit));
        }
    }
    /* and so is any other seed: the unkeyed hash (seed 0), or one bit off */
    cr_assert_not(spool_rec_verify(buf, size, 0, &got));
    for (int bit = 0; bit < 64; bit++)
        cr_assert_not(spool_rec_verify(buf, size, seed ^ (1ull << bit), &got), "bit %d", bit);
    cr_assert(spool_rec_verify(buf, size, seed, &got));
}

Test(spool, empty_payload_record)
{
    char buf[SPOOL_HDR_SIZE];
    struct spool_rec_hdr h, got;

    spool_rec_seal(&h, SPOOL_REC_DONE, 77, 5, NULL, 0);
    memcpy(buf, &h, sizeof(h));
    cr_assert_eq(spool_rec_size(0), SPOOL_HDR_SIZE);
    cr_assert(spool_rec_verify(buf, sizeof(buf), 5, &got));
    cr_assert_not(spool_rec_verify(buf, sizeof(buf), 6, &got), "the seed keys empty records too");
    cr_assert_eq(got.type, SPOOL_REC_DONE);
    cr_assert_eq(got.len, 0);
}

Test(spool, seg_record_round_trip)
{
    char out[64], p[SPOOL_SEG_PAYLOAD];
    struct spool_seg_info info = { 0x0123456789ABCDEFull, 7, ARRIVAL, 0xFEDCBA9876543210ull };
    struct spool_seg_info back;
    struct spool_rec_hdr h;
    size_t n = spool_seg_record(out, sizeof(out), &info);

    cr_assert_eq(n, spool_rec_size(SPOOL_SEG_PAYLOAD));
    cr_assert_eq(n, 64);
    cr_assert_eq(spool_seg_record(out, n - 1, &info), 0);
    /* the SEG record's own checksum is unkeyed: it is where the seed is read from */
    cr_assert(spool_rec_verify(out, n, 0, &h));
    cr_assert_not(spool_rec_verify(out, n, info.seed, &h));
    cr_assert_eq(h.type, SPOOL_REC_SEG);
    cr_assert_eq(h.id, info.seg_id);
    cr_assert_eq(spool_seg_decode(out + SPOOL_HDR_SIZE, h.len, &back), 0);
    cr_assert_eq(back.seg_id, info.seg_id);
    cr_assert_eq(back.reactor, 7);
    cr_assert_eq(back.created, ARRIVAL);
    cr_assert_eq(back.seed, info.seed);
    cr_assert_eq(spool_seg_decode(out + SPOOL_HDR_SIZE, h.len - 1, &back), -EINVAL);
    /* another version, or no seed: not a segment recovery can check */
    memcpy(p, out + SPOOL_HDR_SIZE, sizeof(p));
    p[20] = 2;
    cr_assert_eq(spool_seg_decode(p, sizeof(p), &back), -EINVAL);
    p[20] = 1;
    memset(p + 24, 0, 8);
    cr_assert_eq(spool_seg_decode(p, sizeof(p), &back), -EINVAL);
    p[31] = 1;
    cr_assert_eq(spool_seg_decode(p, sizeof(p), &back), 0);
    cr_assert_eq(back.seed, 1ull << 56);
}

/* A segment that would check records with the public hash is a writer bug. */
Test(spool, seg_record_without_seed_aborts, .signal = SIGABRT)
{
    char out[64];
    struct spool_seg_info info = { .seg_id = 1, .reactor = 0, .created = ARRIVAL };

    spool_seg_record(out, sizeof(out), &info);
}

Test(spool, seg_name)
{
    char name[32];

    spool_seg_name(0x01A2B3C4D5E6F708ull, name, sizeof(name));
    cr_assert_str_eq(name, "seg-01A2B3C4D5E6F708.rms");
}

/* ---- MSG codec ---- */

static char *
encode(const struct envelope *e, const struct spool_extent *ext, unsigned n, size_t *len)
{
    size_t size = spool_msg_payload_size(e, n);
    char *p = malloc(size);

    cr_assert_not_null(p);
    cr_assert_eq(spool_msg_encode(p, size, e, ext, n), size);
    cr_assert_eq(spool_msg_encode(p, size - 1, e, ext, n), 0);
    *len = size;
    return p;
}

Test(spool, msg_round_trip_many_recipients)
{
    struct envelope e, d;
    struct spool_extent ext[3] = { { 64, 100 }, { 200, 4096 }, { 1ull << 40, UINT32_MAX } };
    struct spool_extent *dext;
    unsigned dn;
    size_t len;
    char *p;

    make_env(&e, 0x5F5E1234010000AAull, "sender@example.com", 1000);
    e.body_len = 12345;
    p = encode(&e, ext, 3, &len);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), 0);
    assert_env_eq(&e, &d);
    cr_assert_str_eq(d.qid, "5F5E1234010000AA");
    cr_assert_eq(dn, 3);
    for (unsigned i = 0; i < 3; i++) {
        cr_assert_eq(dext[i].off, ext[i].off);
        cr_assert_eq(dext[i].len, ext[i].len);
    }
    free(dext);
    env_free(&d);
    env_free(&e);
    free(p);
}

Test(spool, msg_round_trip_empty_strings_null_sender)
{
    struct envelope e, d;
    struct spool_extent *dext;
    unsigned dn;
    size_t len;
    char *p;

    env_init(&e); /* every string empty, no recipient, no extent */
    qid_format(0, e.qid);
    p = encode(&e, NULL, 0, &len);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), 0);
    assert_env_eq(&e, &d);
    cr_assert_eq(dn, 0);
    cr_assert_null(dext);
    env_free(&d);
    free(p);

    make_env(&e, 9, "", 2);
    cr_assert_eq(env_add_rcpt(&e, SLICE_LIT(""), SLICE_LIT("")), 0);
    p = encode(&e, NULL, 0, &len);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), 0);
    assert_env_eq(&e, &d);
    cr_assert_eq(env_get(&d, d.sender).len, 0);
    cr_assert_eq(d.nrcpt, 3);
    env_free(&d);
    env_free(&e);
    free(p);
}

Test(spool, msg_decode_rejects_every_truncation)
{
    struct envelope e, d;
    struct spool_extent ext[2] = { { 64, 10 }, { 128, 20 } }, *dext;
    unsigned dn;
    size_t len;
    char *p;

    make_env(&e, 42, "s@example.net", 5);
    p = encode(&e, ext, 2, &len);
    for (size_t k = 0; k < len; k++) {
        char *q = malloc(k ? k : 1); /* exact size: ASan sees any over-read */

        cr_assert_not_null(q);
        memcpy(q, p, k);
        cr_assert_eq(spool_msg_decode(q, k, &d, &dext, &dn), -EINVAL, "length %zu", k);
        cr_assert_null(dext);
        free(q);
    }
    /* and trailing octets */
    p = realloc(p, len + 1);
    cr_assert_not_null(p);
    p[len] = 0;
    cr_assert_eq(spool_msg_decode(p, len + 1, &d, &dext, &dn), -EINVAL);
    env_free(&e);
    free(p);
}

Test(spool, msg_decode_rejects_absurd_counts)
{
    struct envelope e, d;
    struct spool_extent ext[1] = { { 64, 10 } }, *dext;
    unsigned dn;
    size_t len, nrcpt_at, next_at;
    char *p;

    make_env(&e, 42, "s@example.net", 0);
    p = encode(&e, ext, 1, &len);
    next_at = len - 12 - 4;
    nrcpt_at = next_at - 4;
    memcpy(p + nrcpt_at, "\xff\xff\xff\xff", 4);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), -EINVAL);
    memcpy(p + nrcpt_at, "\0\0\0\0", 4);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), 0);
    free(dext);
    env_free(&d);
    memcpy(p + next_at, "\xff\xff\xff\x7f", 4);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), -EINVAL);
    memcpy(p + next_at, "\x02\0\0\0", 4);
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), -EINVAL);
    memcpy(p + next_at, "\x01\0\0\0", 4);
    p[0] = 2; /* unknown format */
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), -EINVAL);
    p[0] = 1;
    memcpy(p + 32, "\0\0\0\x80", 4); /* client string of 2 GiB */
    cr_assert_eq(spool_msg_decode(p, len, &d, &dext, &dn), -EINVAL);
    env_free(&e);
    free(p);
}

Test(spool, msg_decode_survives_random_flips)
{
    struct envelope e, d;
    struct spool_extent ext[3] = { { 64, 10 }, { 128, 20 }, { 256, 30 } }, *dext;
    unsigned dn, seed = 12345;
    size_t len;
    char *p, *q;
    int ok = 0;

    make_env(&e, 42, "s@example.net", 7);
    p = encode(&e, ext, 3, &len);
    q = malloc(len);
    cr_assert_not_null(q);
    for (int iter = 0; iter < 20000; iter++) {
        int rc;

        memcpy(q, p, len);
        for (int k = 0; k < 1 + iter % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            q[(seed >> 8) % len] ^= (char)(1 + ((seed >> 20) % 255));
        }
        rc = spool_msg_decode(q, len, &d, &dext, &dn);
        cr_assert(rc == 0 || rc == -EINVAL);
        if (rc == 0) {
            ok++;
            free(dext);
            env_free(&d);
        }
    }
    cr_assert_gt(ok, 0, "flips inside string octets still decode");
    free(q);
    env_free(&e);
    free(p);
}

/* ---- queue ids ---- */

Test(spool, next_id_layout_and_order)
{
    uint64_t last = 0, id, prev;

    id = spool_next_id(&last, 3, 1000);
    cr_assert_eq(id, (1000ull << 32) | (3u << 24));
    cr_assert_eq(last, id);
    prev = id;
    for (int i = 0; i < 1000; i++) {
        id = spool_next_id(&last, 3, 1000);
        cr_assert_gt(id, prev);
        cr_assert_eq((id >> 24) & 0xff, 3);
        prev = id;
    }
    cr_assert_eq(id & 0xffffff, 1000);
    /* a clock that went back keeps counting from last */
    id = spool_next_id(&last, 3, 10);
    cr_assert_eq(id, prev + 1);
    /* the next second starts at sequence 0 */
    id = spool_next_id(&last, 3, 1001);
    cr_assert_eq(id, (1001ull << 32) | (3u << 24));
    /* sequence exhausted: borrow the next second */
    last = (1001ull << 32) | (3u << 24) | 0xffffff;
    id = spool_next_id(&last, 3, 1001);
    cr_assert_eq(id, (1002ull << 32) | (3u << 24));
    /* reactor bits are masked to 8 */
    last = 0;
    id = spool_next_id(&last, 0x105, 7);
    cr_assert_eq((id >> 24) & 0xff, 5);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

Test(spool, next_id_reactors_never_collide)
{
    /* seeds from one recovered max id, in the same second as "now" */
    static const uint64_t seeds[] = {
        (5000ull << 32) | (0u << 24) | 17,       (5000ull << 32) | (1u << 24) | 17,
        (5000ull << 32) | (0xffu << 24) | 17,    (5000ull << 32) | (1u << 24) | 0xffffff,
        (5000ull << 32) | (0u << 24) | 0xfffffe,
    };
    enum { N = 50000 };
    static uint64_t all[2 * N];

    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        uint64_t l0 = seeds[s], l1 = seeds[s], p0 = seeds[s], p1 = seeds[s];
        size_t n = 0;

        for (int i = 0; i < N; i++) {
            uint64_t now = 5000 + (uint64_t)i / 20000; /* the clock moves now and then */
            uint64_t a = spool_next_id(&l0, 0, now), b = spool_next_id(&l1, 1, now);

            cr_assert_gt(a, p0);
            cr_assert_gt(b, p1);
            cr_assert_eq((a >> 24) & 0xff, 0);
            cr_assert_eq((b >> 24) & 0xff, 1);
            cr_assert_neq(a, b);
            p0 = a;
            p1 = b;
            all[n++] = a;
            all[n++] = b;
        }
        /* no id handed out twice across the two reactors */
        qsort(all, n, sizeof(all[0]), cmp_u64);
        for (size_t i = 1; i < n; i++)
            cr_assert_neq(all[i - 1], all[i]);
    }
}

/* ---- recovery ---- */

Test(spool, recover_several_messages)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };
    struct span sp[NMSG];

    fixture_init(&f, 0x100);
    sb_seg(&b, 0x50);
    for (unsigned i = 0; i < NMSG; i++)
        sp[i] = sb_msg(&b, &f.env[i], f.body[i], f.blen[i], i == 1 ? 5 : 1);
    /* written in a different order than their ids */
    write_seg(dir, 0x50, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, NMSG);
    cr_assert_eq(idx.nsegments, 1);
    cr_assert_eq(idx.spool_bytes, b.len);
    cr_assert_eq(idx.bad_segments, 0);
    cr_assert_eq(idx.bad_records, 0);
    cr_assert_eq(idx.torn_bytes, 0);
    cr_assert_eq(idx.incomplete, 0);
    cr_assert_eq(idx.done, 0);
    cr_assert_eq(idx.max_id, 0x100 + NMSG - 1);
    cr_assert_eq(lc.n, 0);
    for (unsigned i = 0; i < NMSG; i++) {
        const struct spool_msg *m = &idx.msg[i];

        assert_env_eq(&m->env, &f.env[i]);
        cr_assert_eq(m->seg_id, 0x50);
        cr_assert_eq(m->seed, seg_seed(0x50));
        cr_assert_eq(m->nextent, sp[i].nrec - 1);
        for (unsigned k = 0; k < m->nextent; k++)
            cr_assert_eq(m->ext[k].off, sp[i].roff[k]);
        assert_body(dir, m, f.body[i], f.blen[i]);
    }
    spool_index_free(&idx);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_null(idx.msg);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, recover_sorts_by_id)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (int i = NMSG - 1; i >= 0; i--)
        sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 2);
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, NMSG);
    for (unsigned i = 0; i < NMSG; i++)
        cr_assert_eq(idx.msg[i].env.id, 0x100 + i);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, done_record_removes_message)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < NMSG; i++)
        sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 1);
    sb_rec(&b, SPOOL_REC_DONE, 0x101, NULL, 0);
    sb_rec(&b, SPOOL_REC_DONE, 0x101, NULL, 0); /* twice: counted once */
    sb_rec(&b, SPOOL_REC_DONE, 0x999, NULL, 0); /* its segment is gone already */
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, NMSG - 1);
    cr_assert_eq(idx.done, 1);
    cr_assert_eq(idx.max_id, 0x999);
    cr_assert_eq(idx.msg[0].env.id, 0x100);
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    cr_assert_eq(idx.msg[2].env.id, 0x103);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

/* Truncate the file at every offset inside the last message's records. */
Test(spool, torn_tail_at_every_offset)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct span last;
    uint64_t msg_end;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[0], f.body[0], f.blen[0], 1);
    sb_msg(&b, &f.env[2], f.body[2], f.blen[2], 1);
    last = sb_msg(&b, &f.env[3], f.body[3], f.blen[3], 4);
    msg_end = last.roff[last.nrec - 1] + SPOOL_HDR_SIZE + last.rlen[last.nrec - 1];

    for (uint64_t cut = last.start; cut <= last.end; cut++) {
        struct spool_index idx;
        struct logcap lc = { 0 };
        uint64_t torn = 0;
        int rc;

        /* the record the cut falls in loses its payload, or only its padding */
        for (unsigned r = 0; r < last.nrec; r++) {
            if (cut >= last.roff[r] && cut < last.roff[r] + spool_rec_size(last.rlen[r]) &&
                cut < last.roff[r] + SPOOL_HDR_SIZE + last.rlen[r])
                torn = cut - last.roff[r];
        }
        write_seg(dir, 1, b.p, (size_t)cut);
        rc = spool_recover(dir, &idx, cap_log, &lc);
        cr_assert_eq(rc, 0, "cut at %" PRIu64 ": %d", cut, rc);
        cr_assert_eq(idx.nmsg, cut >= msg_end ? 3u : 2u, "cut at %" PRIu64, cut);
        cr_assert_eq(idx.msg[0].env.id, 0x100);
        cr_assert_eq(idx.msg[1].env.id, 0x102);
        cr_assert_eq(idx.torn_bytes, torn, "cut at %" PRIu64, cut);
        cr_assert_eq(idx.bad_records, 0);
        cr_assert_eq(idx.incomplete, 0);
        cr_assert_eq(idx.spool_bytes, cut);
        if (torn > 0)
            cr_assert(log_has(&lc, "torn tail of"), "cut at %" PRIu64, cut);
        else
            cr_assert_eq(lc.n, 0);
        assert_body(dir, &idx.msg[1], f.body[2], f.blen[2]);
        spool_index_free(&idx);
    }
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, corrupt_msg_record_resyncs)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };
    struct span sp[3];
    char want[128];

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < 3; i++)
        sp[i] = sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 2);
    /* one octet of the middle message's MSG record */
    b.p[sp[1].roff[2] + SPOOL_HDR_SIZE + 5] ^= 0x40;
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.msg[0].env.id, 0x100);
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    cr_assert_eq(idx.bad_records, 1);
    cr_assert_eq(idx.torn_bytes, 0);
    snprintf(want, sizeof(want), "bad record at offset %" PRIu64 ", resynchronising",
             sp[1].roff[2]);
    cr_assert(log_has(&lc, want), "%s", lc.n ? lc.lines[0] : "(no log)");
    assert_body(dir, &idx.msg[1], f.body[2], f.blen[2]);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, corrupt_data_record_makes_message_incomplete)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };
    struct span sp[3];

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < 3; i++)
        sp[i] = sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 3);
    b.p[sp[1].roff[1] + SPOOL_HDR_SIZE + 7] ^= 0x01; /* body octet of its 2nd DATA record */
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.msg[0].env.id, 0x100);
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    cr_assert_eq(idx.bad_records, 1);
    cr_assert_eq(idx.incomplete, 1);
    cr_assert(log_has(&lc, "message 0000000000000101 incomplete"));
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, corrupt_header_length_resyncs)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct span sp[3];

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < 3; i++)
        sp[i] = sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 1);
    /* the middle DATA record claims to run past the file: skipped 8 octets at a time */
    memcpy(b.p + sp[1].roff[0] + 8, "\xff\xff\xff\x00", 4);
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    cr_assert_eq(idx.incomplete, 1);
    cr_assert_eq(idx.bad_records, 1);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, hole_of_zeros_is_skipped)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };
    struct span sp[3];

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < 3; i++)
        sp[i] = sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 2);
    /* the middle message's write had not reached the disk when the later one did */
    memset(b.p + sp[1].start, 0, sp[1].end - sp[1].start);
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.msg[0].env.id, 0x100);
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    cr_assert_eq(idx.bad_records, 1);
    cr_assert_eq(idx.torn_bytes, 0);
    cr_assert_eq(idx.incomplete, 0);
    cr_assert_eq(lc.n, 1);
    cr_assert(log_has(&lc, "resynchronising"));
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, sparse_hole_written_with_pwrite)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb a = { 0 }, c = { 0 };
    struct spool_index idx;
    char path[512], name[32];
    int fd;

    fixture_init(&f, 0x100);
    sb_seg(&a, 1);
    sb_msg(&a, &f.env[0], f.body[0], f.blen[0], 1);
    c.seed = a.seed; /* written into the same segment */
    sb_msg(&c, &f.env[1], f.body[1], f.blen[1], 1);
    spool_seg_name(1, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_neq(fd, -1);
    cr_assert_eq(pwrite(fd, a.p, a.len, 0), (ssize_t)a.len);
    cr_assert_eq(pwrite(fd, c.p, c.len, 65536), (ssize_t)c.len);
    close(fd);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1, "extents are segment offsets: the moved copy does not match");
    cr_assert_eq(idx.incomplete, 1);
    cr_assert_eq(idx.bad_records, 1);
    spool_index_free(&idx);

    /* the same, with the second message encoded for where it really lands */
    c.len = 0;
    sb_reserve(&c, 65536);
    memset(c.p, 0, 65536);
    c.len = 65536;
    sb_msg(&c, &f.env[1], f.body[1], f.blen[1], 1);
    fd = open(path, O_WRONLY);
    cr_assert_neq(fd, -1);
    cr_assert_eq(pwrite(fd, c.p + 65536, c.len - 65536, 65536), (ssize_t)(c.len - 65536));
    close(fd);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.bad_records, 1);
    assert_body(dir, &idx.msg[1], f.body[1], f.blen[1]);
    spool_index_free(&idx);
    fixture_free(&f);
    free(a.p);
    free(c.p);
    rm_spool_dir(dir);
}

Test(spool, two_segments)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s1 = { 0 }, s2 = { 0 };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    sb_seg(&s1, 0x10);
    sb_msg(&s1, &f.env[0], f.body[0], f.blen[0], 1);
    sb_msg(&s1, &f.env[1], f.body[1], f.blen[1], 3);
    sb_seg(&s2, 0x2000);
    sb_msg(&s2, &f.env[2], f.body[2], f.blen[2], 1);
    sb_msg(&s2, &f.env[3], f.body[3], f.blen[3], 2);
    sb_rec(&s2, SPOOL_REC_DONE, 0x100, NULL, 0); /* finished a message of the other segment */
    write_seg(dir, 0x10, s1.p, s1.len);
    write_seg(dir, 0x2000, s2.p, s2.len);
    write_file(dir, "seg-notanumber000000.rms", "junk", 4); /* not a segment name: ignored */
    write_file(dir, "README", "junk", 4);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nsegments, 2);
    cr_assert_eq(idx.spool_bytes, s1.len + s2.len);
    cr_assert_eq(idx.max_id, 0x2000);
    cr_assert_eq(idx.done, 1);
    cr_assert_eq(idx.nmsg, 3);
    cr_assert_eq(idx.msg[0].env.id, 0x101);
    cr_assert_eq(idx.msg[0].seg_id, 0x10);
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    cr_assert_eq(idx.msg[1].seg_id, 0x2000);
    cr_assert_eq(idx.msg[2].seg_id, 0x2000);
    for (unsigned i = 0; i < 3; i++)
        assert_body(dir, &idx.msg[i], f.body[i + 1], f.blen[i + 1]);
    spool_index_free(&idx);
    fixture_free(&f);
    free(s1.p);
    free(s2.p);
    rm_spool_dir(dir);
}

Test(spool, extent_in_another_segment_is_incomplete)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s1 = { 0 };
    struct spool_index idx;
    struct span sp;
    struct spool_seg_info info = { .seg_id = 2, .reactor = 1, .created = ARRIVAL };

    /* s1 holds only the DATA record; s2 the same octets with that record damaged,
       then the MSG record: extents name records of their own segment only (both
       segments have the same seed here, so only the damage tells them apart) */
    fixture_init(&f, 0x100);
    sb_seg(&s1, 1);
    sp = sb_msg(&s1, &f.env[1], f.body[1], f.blen[1], 1);
    write_seg(dir, 1, s1.p, (size_t)sp.roff[1]);
    info.seed = s1.seed;
    cr_assert_eq(spool_seg_record(s1.p, 64, &info), 64);
    memset(s1.p + sp.roff[0], 0, SPOOL_HDR_SIZE);
    write_seg(dir, 2, s1.p, s1.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.incomplete, 1);
    cr_assert_eq(idx.bad_records, 1);
    spool_index_free(&idx);
    fixture_free(&f);
    free(s1.p);
    rm_spool_dir(dir);
}

/* An extent at offset UINT64_MAX names no record: the message is incomplete, not listed with
   it (UINT64_MAX once meant "every extent checks"; found by tests/fuzz/fuzz_spool_recover). */
Test(spool, extent_at_uint64_max_is_incomplete)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s = { 0 };
    struct spool_index idx;
    struct spool_extent ext[2];
    size_t psize;
    char *payload;

    fixture_init(&f, 0x200);
    sb_seg(&s, 1);
    f.env[0].body_len = f.blen[0];
    ext[0].off = sb_rec(&s, SPOOL_REC_DATA, f.env[0].id, f.body[0], f.blen[0]);
    ext[0].len = (uint32_t)f.blen[0];
    ext[1] = (struct spool_extent){ UINT64_MAX, 0 };
    psize = spool_msg_payload_size(&f.env[0], 2);
    payload = malloc(psize);
    cr_assert_not_null(payload);
    cr_assert_eq(spool_msg_encode(payload, psize, &f.env[0], ext, 2), psize);
    sb_rec(&s, SPOOL_REC_MSG, f.env[0].id, payload, psize);
    write_seg(dir, 1, s.p, s.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.incomplete, 1);
    spool_index_free(&idx);
    free(payload);
    fixture_free(&f);
    free(s.p);
    rm_spool_dir(dir);
}

Test(spool, duplicate_copies_listed_once)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s1 = { 0 }, s2 = { 0 };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    sb_seg(&s1, 1);
    sb_seg(&s2, 2);
    sb_msg(&s1, &f.env[1], f.body[1], f.blen[1], 2);
    sb_msg(&s2, &f.env[1], f.body[1], f.blen[1], 3); /* e.g. a compaction copy */
    write_seg(dir, 1, s1.p, s1.len);
    write_seg(dir, 2, s2.p, s2.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_eq(idx.msg[0].seg_id, 1);
    cr_assert_eq(idx.msg[0].seed, seg_seed(1));
    assert_body(dir, &idx.msg[0], f.body[1], f.blen[1]);
    spool_index_free(&idx);
    fixture_free(&f);
    free(s1.p);
    free(s2.p);
    rm_spool_dir(dir);
}

Test(spool, large_records_cross_read_windows)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    size_t big = 3u << 20;
    char *body = make_body(7, big);

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[0], body, big, 2); /* two records of 1.5 MiB: larger than a window */
    sb_msg(&b, &f.env[1], f.body[1], f.blen[1], 1);
    memset(b.p + b.len - 100, 0, 100); /* and a torn MSG record at the end */
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_gt(idx.torn_bytes, 0);
    assert_body(dir, &idx.msg[0], body, big);
    spool_index_free(&idx);
    free(body);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, empty_and_missing_folder)
{
    char *dir = mk_spool_dir();
    char missing[600];
    struct spool_index idx;

    snprintf(missing, sizeof(missing), "%s/nope", dir);
    cr_assert_eq(spool_recover(missing, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.nsegments, 0);
    spool_index_free(&idx);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.nsegments, 0);
    spool_index_free(&idx);

    write_seg(dir, 5, "", 0); /* a segment just created: nothing lost, no error */
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nsegments, 1);
    cr_assert_eq(idx.bad_segments, 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.torn_bytes, 0);
    cr_assert_eq(idx.max_id, 5);
    spool_index_free(&idx);

    write_seg(dir, 5, "RMSP\1\1", 6); /* shorter than a header: its SEG record is torn */
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nsegments, 1);
    cr_assert_eq(idx.bad_segments, 1);
    cr_assert_eq(idx.torn_bytes, 0);
    cr_assert_eq(idx.spool_bytes, 6);
    cr_assert_eq(idx.max_id, 5);
    spool_index_free(&idx);

    snprintf(missing, sizeof(missing), "%s/seg-0000000000000005.rms", dir);
    cr_assert_eq(spool_recover(missing, &idx, NULL, NULL), -ENOTDIR);
    rm_spool_dir(dir);
}

/*
 * The disk fills up in the middle of a message: the child writes each
 * message as one write() the way the spool writer does, under an
 * RLIMIT_FSIZE that ends inside the third; the half-written message never
 * comes back.
 */
Test(spool, out_of_space_half_write)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct span sp[3];
    struct spool_index idx;
    char path[512], name[32];
    pid_t pid;
    int status;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < 3; i++)
        sp[i] = sb_msg(&b, &f.env[i + 1], f.body[i + 1], f.blen[i + 1], 1);
    spool_seg_name(1, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", dir, name);

    pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        /* all of message 2's DATA records fit, its MSG record does not */
        struct rlimit rl = { sp[1].roff[1] + 40, sp[1].roff[1] + 40 };
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        bool efbig = false;

        signal(SIGXFSZ, SIG_IGN);
        if (fd == -1 || setrlimit(RLIMIT_FSIZE, &rl) == -1)
            _exit(2);
        for (unsigned i = 0; i < 3 && !efbig; i++) {
            const char *p = b.p + (i == 0 ? 0 : sp[i].start);
            size_t n = sp[i].end - (i == 0 ? 0 : sp[i].start);

            while (n > 0) {
                ssize_t k = write(fd, p, n);

                if (k == -1) {
                    efbig = errno == EFBIG;
                    break;
                }
                p += k;
                n -= (size_t)k;
            }
        }
        _exit(efbig ? 0 : 1);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child saw EFBIG");

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.spool_bytes, sp[1].roff[1] + 40);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_eq(idx.msg[0].env.id, 0x101);
    cr_assert_eq(idx.torn_bytes, 40);
    assert_body(dir, &idx.msg[0], f.body[1], f.blen[1]);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, read_body_detects_damage)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct span sp;
    char *body;
    size_t len;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    sp = sb_msg(&b, &f.env[1], f.body[1], f.blen[1], 3);
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    assert_body(dir, &idx.msg[0], f.body[1], f.blen[1]);

    /* the records are checked with the segment's seed, not another */
    idx.msg[0].seed ^= 1;
    cr_assert_eq(spool_read_body(dir, &idx.msg[0], &body, &len), -EIO);
    cr_assert_null(body);
    idx.msg[0].seed ^= 1;

    /* damaged after recovery: the body read checks the records again */
    b.p[sp.roff[2] + SPOOL_HDR_SIZE] ^= 0x20;
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_read_body(dir, &idx.msg[0], &body, &len), -EIO);
    cr_assert_null(body);
    /* and gone */
    write_seg(dir, 1, b.p, (size_t)sp.roff[2]);
    cr_assert_eq(spool_read_body(dir, &idx.msg[0], &body, &len), -EIO);
    idx.msg[0].seg_id = 99;
    cr_assert_eq(spool_read_body(dir, &idx.msg[0], &body, &len), -ENOENT);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

/* Random damage anywhere: recovery never fails or crashes, and what it returns is intact. */
Test(spool, recover_survives_random_damage)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    unsigned seed = 99;
    char *copy;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    for (unsigned i = 0; i < NMSG; i++)
        sb_msg(&b, &f.env[i], f.body[i], f.blen[i], 1 + i % 3);
    copy = malloc(b.len);
    cr_assert_not_null(copy);
    for (int iter = 0; iter < 300; iter++) {
        struct spool_index idx;
        size_t at, n;

        memcpy(copy, b.p, b.len);
        seed = seed * 1103515245u + 12345u;
        at = (seed >> 4) % b.len;
        n = iter % 2 ? 1 : 1 + (seed >> 20) % 200;
        for (size_t k = at; k < at + n && k < b.len; k++)
            copy[k] = iter % 2 ? (char)(copy[k] ^ (char)(1 + (seed >> 12) % 255)) : 0;
        write_seg(dir, 1, copy, b.len);
        cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
        cr_assert_leq(idx.nmsg, NMSG);
        for (size_t m = 0; m < idx.nmsg; m++) {
            unsigned i = (unsigned)(idx.msg[m].env.id - 0x100);

            cr_assert_lt(i, NMSG);
            assert_env_eq(&idx.msg[m].env, &f.env[i]);
            assert_body(dir, &idx.msg[m], f.body[i], f.blen[i]);
        }
        spool_index_free(&idx);
    }
    free(copy);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

/* ---- segment headers and forged records ---- */

/* Seal one record into out (spool_rec_size(n) octets, padding included). */
static void
put_rec(char *out, enum spool_rec_type type, uint64_t id, uint64_t seed, const void *payload,
        size_t n)
{
    struct sb t = { .seed = seed };

    sb_rec(&t, type, id, payload, n);
    memcpy(out, t.p, t.len);
    free(t.p);
}

/* Segment 1 (n1 octets) has no valid SEG record: only segment 2's messages come back. */
static void
assert_seg1_bad(const char *dir, size_t n1, size_t n2, const char *what)
{
    struct spool_index idx;
    struct logcap lc = { 0 };
    char want[600];

    snprintf(want, sizeof(want),
             "spool: %s/seg-0000000000000001.rms: no valid segment header, %zu octets not read",
             dir, n1);
    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nsegments, 2);
    cr_assert_eq(idx.bad_segments, 1, "%s", what);
    cr_assert_eq(idx.spool_bytes, n1 + n2);
    cr_assert_eq(idx.nmsg, 2, "%s", what);
    cr_assert_eq(idx.msg[0].env.id, 0x102, "%s: the bad segment's DONE record is not read", what);
    cr_assert_eq(idx.msg[1].env.id, 0x103);
    cr_assert_eq(idx.msg[0].seg_id, 2);
    cr_assert_eq(idx.done, 0);
    cr_assert_eq(idx.bad_records, 0);
    cr_assert_eq(idx.torn_bytes, 0);
    cr_assert_eq(idx.incomplete, 0);
    cr_assert_eq(idx.max_id, 0x103);
    cr_assert_eq(lc.n, 1, "%s", what);
    cr_assert_str_eq(lc.lines[0], want, "%s", what);
    spool_index_free(&idx);
}

/*
 * Every way a segment's SEG record can be damaged or missing: the segment is
 * logged and counted and contributes nothing, not even the DONE record it
 * holds for a message of another segment; the other segment reads as usual.
 */
Test(spool, bad_segment_header_lists_nothing)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s1 = { 0 }, s2 = { 0 };
    struct spool_index idx;
    char good[64], pl[SPOOL_SEG_PAYLOAD], other[SPOOL_SEG_PAYLOAD];

    fixture_init(&f, 0x100);
    sb_seg(&s1, 1);
    sb_msg(&s1, &f.env[0], f.body[0], f.blen[0], 1);
    sb_msg(&s1, &f.env[1], f.body[1], f.blen[1], 2);
    sb_rec(&s1, SPOOL_REC_DONE, 0x102, NULL, 0);
    sb_seg(&s2, 2);
    sb_msg(&s2, &f.env[2], f.body[2], f.blen[2], 1);
    sb_msg(&s2, &f.env[3], f.body[3], f.blen[3], 1);
    write_seg(dir, 2, s2.p, s2.len);
    memcpy(good, s1.p, sizeof(good));
    memcpy(pl, good + SPOOL_HDR_SIZE, sizeof(pl));

    /* intact, for reference: the DONE record in segment 1 finishes 0x102 */
    write_seg(dir, 1, s1.p, s1.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.bad_segments, 0);
    cr_assert_eq(idx.nmsg, 3);
    cr_assert_eq(idx.done, 1);
    spool_index_free(&idx);

    /* one flipped bit anywhere in the SEG record: header, seed or any other payload field */
    for (size_t i = 0; i < sizeof(good); i++) {
        for (int bit = 0; bit < 8; bit++) {
            char what[64];

            snprintf(what, sizeof(what), "flip at %zu bit %d", i, bit);
            s1.p[i] = (char)(s1.p[i] ^ (1 << bit));
            write_seg(dir, 1, s1.p, s1.len);
            s1.p[i] = (char)(s1.p[i] ^ (1 << bit));
            assert_seg1_bad(dir, s1.len, s2.len, what);
        }
    }

    /* a whole record at offset 0 that checks, but is not this segment's SEG record */
    put_rec(s1.p, SPOOL_REC_SEG, 1, s1.seed, pl, sizeof(pl));
    write_seg(dir, 1, s1.p, s1.len);
    assert_seg1_bad(dir, s1.len, s2.len, "SEG sealed with the segment's seed");
    put_rec(s1.p, SPOOL_REC_DATA, 1, s1.seed, pl, sizeof(pl));
    write_seg(dir, 1, s1.p, s1.len);
    assert_seg1_bad(dir, s1.len, s2.len, "DATA record at offset 0");
    memcpy(other, pl, sizeof(other));
    memset(other + 24, 0, 8);
    put_rec(s1.p, SPOOL_REC_SEG, 1, 0, other, sizeof(other));
    write_seg(dir, 1, s1.p, s1.len);
    assert_seg1_bad(dir, s1.len, s2.len, "SEG record without a seed");
    memcpy(other, pl, sizeof(other));
    other[20] = 2;
    put_rec(s1.p, SPOOL_REC_SEG, 1, 0, other, sizeof(other));
    write_seg(dir, 1, s1.p, s1.len);
    assert_seg1_bad(dir, s1.len, s2.len, "SEG record of another version");
    /* never written (the records follow a hole), or torn inside it */
    memset(s1.p, 0, sizeof(good));
    write_seg(dir, 1, s1.p, s1.len);
    assert_seg1_bad(dir, s1.len, s2.len, "hole");
    memcpy(s1.p, good, sizeof(good));
    for (size_t n = 1; n < sizeof(good); n++) {
        char what[32];

        snprintf(what, sizeof(what), "cut at %zu", n);
        write_seg(dir, 1, s1.p, n);
        assert_seg1_bad(dir, n, s2.len, what);
    }
    fixture_free(&f);
    free(s1.p);
    free(s2.p);
    rm_spool_dir(dir);
}

/* A second SEG record, even a genuine one, is trusted nowhere but at offset 0. */
Test(spool, seg_record_after_offset_0_is_bad)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };
    struct span sp;
    uint64_t at;

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[0], f.body[0], f.blen[0], 1);
    at = b.len;
    sb_seg(&b, 0xFFFFFFFF00000000ull); /* seed 0, as at offset 0; sets b.seed to its own */
    b.seed = seg_seed(1);
    sp = sb_msg(&b, &f.env[1], f.body[1], f.blen[1], 1);
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.bad_records, 1);
    cr_assert_eq(idx.bad_segments, 0);
    cr_assert_eq(idx.max_id, 0x101, "the second SEG record's id is not seen");
    cr_assert_eq(lc.n, 1);
    cr_assert(log_has(&lc, "bad record at offset"));
    cr_assert_eq(sp.start, at + 64);

    /* sealed with the segment's seed instead: still bad */
    put_rec(b.p + at, SPOOL_REC_SEG, 0xFFFFFFFF00000000ull, seg_seed(1), b.p + at + SPOOL_HDR_SIZE,
            SPOOL_SEG_PAYLOAD);
    write_seg(dir, 1, b.p, b.len);
    spool_index_free(&idx);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.bad_records, 1);
    cr_assert_eq(idx.max_id, 0x101);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

#define FORGED_ID  0x7FFFFFFF00000001ull
#define FORGED_SEG 0xFFFFFFFF00000000ull

/*
 * Segment 1: message 0x100 (A); then 0x101 (B), whose DATA record is torn
 * (its header never reached the disk) and whose body is a sender's: some
 * text, then, 8-aligned and laid out for the offsets they land at, a DATA and
 * MSG pair for message FORGED_ID, a DONE record for A, and two SEG records
 * (one sealed with forge_seed, one with 0 like a real one), all sealed with
 * forge_seed; then 0x102 (C). Recovery resynchronises from B's torn header
 * through B's body 8 octets at a time, so it reads every forged record.
 */
static void
write_forged_seg(const char *dir, struct fixture *f, struct envelope *forged, const char *body,
                 size_t len, uint64_t forge_seed)
{
    static const char text[] = "Hello,\r\nplease find below the invoice.\r\n\r\n";
    struct spool_seg_info info = {
        .seg_id = FORGED_SEG, .reactor = 1, .created = ARRIVAL, .seed = 0x5EED
    };
    struct sb b = { 0 }, fg = { .seed = forge_seed };
    char segrec[64];
    struct span sp;
    size_t base;

    sb_seg(&b, 1);
    sb_msg(&b, &f->env[0], f->body[0], f->blen[0], 1);
    base = b.len + SPOOL_HDR_SIZE; /* where B's body will land */
    sb_reserve(&fg, base + 64);
    memset(fg.p, 0, base);
    memset(fg.p + base, ' ', 64);
    memcpy(fg.p + base, text, sizeof(text) - 1);
    fg.len = base + 64;
    sb_msg(&fg, forged, body, len, 1);
    sb_rec(&fg, SPOOL_REC_DONE, f->env[0].id, NULL, 0);
    cr_assert_eq(spool_seg_record(segrec, sizeof(segrec), &info), 64);
    sb_rec(&fg, SPOOL_REC_SEG, FORGED_SEG, segrec + SPOOL_HDR_SIZE, SPOOL_SEG_PAYLOAD);
    sb_reserve(&fg, 64 + 11);
    memcpy(fg.p + fg.len, segrec, 64);
    memcpy(fg.p + fg.len + 64, "\r\nRegards\r\n", 11);
    fg.len += 64 + 11;

    sp = sb_msg(&b, &f->env[1], fg.p + base, fg.len - base, 1);
    cr_assert_eq(sp.roff[0] + SPOOL_HDR_SIZE, base);
    memset(b.p + sp.roff[0], 0, SPOOL_HDR_SIZE); /* the torn record */
    sb_msg(&b, &f->env[2], f->body[2], f->blen[2], 1);
    write_seg(dir, 1, b.p, b.len);
    free(fg.p);
    free(b.p);
}

/* Records forged in a body with any seed but the segment's never come back. */
Test(spool, forged_records_in_a_body_are_never_recovered)
{
    static const char body[] = "Wire the money today.\r\n";
    char *dir = mk_spool_dir();
    struct fixture f;
    struct envelope forged;
    const uint64_t right = seg_seed(1);
    const uint64_t wrong[] = {
        0, /* the unkeyed XXH3-64 of the old format: anyone can compute it */
        right ^ 1, right ^ (1ull << 63), right + 1, ~right, seg_seed(2), 0x5EED,
    };

    fixture_init(&f, 0x100);
    make_env(&forged, FORGED_ID, "ceo@victim.example", 2);
    for (size_t w = 0; w < sizeof(wrong) / sizeof(wrong[0]); w++) {
        struct spool_index idx;
        struct logcap lc = { 0 };

        write_forged_seg(dir, &f, &forged, body, sizeof(body) - 1, wrong[w]);
        cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
        cr_assert_eq(idx.nmsg, 2, "seed %zu", w);
        cr_assert_eq(idx.msg[0].env.id, 0x100, "no forged DONE record took A away");
        cr_assert_eq(idx.msg[1].env.id, 0x102);
        cr_assert_eq(idx.done, 0);
        cr_assert_eq(idx.incomplete, 1, "B, whose DATA record is torn");
        cr_assert_eq(idx.bad_records, 1, "one bad run: from B's torn header to its MSG record");
        cr_assert_eq(idx.bad_segments, 0);
        cr_assert_eq(idx.torn_bytes, 0);
        cr_assert_eq(idx.max_id, 0x102, "no forged id is seen");
        cr_assert_eq(lc.n, 2);
        cr_assert(log_has(&lc, "message 0000000000000101 incomplete"));
        assert_body(dir, &idx.msg[0], f.body[0], f.blen[0]);
        assert_body(dir, &idx.msg[1], f.body[2], f.blen[2]);
        spool_index_free(&idx);
    }
    env_free(&forged);
    fixture_free(&f);
    rm_spool_dir(dir);
}

/*
 * The same forged records sealed with the segment's own seed do come back:
 * the resynchronisation really walks through them, so the test above proves
 * something. Only the seed, which never leaves the spool, stops them.
 */
Test(spool, forged_records_with_the_segment_seed_are_recovered)
{
    static const char body[] = "Wire the money today.\r\n";
    char *dir = mk_spool_dir();
    struct fixture f;
    struct envelope forged;
    struct spool_index idx;
    struct logcap lc = { 0 };

    fixture_init(&f, 0x100);
    make_env(&forged, FORGED_ID, "ceo@victim.example", 2);
    write_forged_seg(dir, &f, &forged, body, sizeof(body) - 1, seg_seed(1));
    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.msg[0].env.id, 0x102);
    cr_assert_eq(idx.msg[1].env.id, FORGED_ID);
    assert_env_eq(&idx.msg[1].env, &forged);
    assert_body(dir, &idx.msg[1], body, sizeof(body) - 1);
    cr_assert_eq(idx.done, 1, "the forged DONE record took A away");
    cr_assert_eq(idx.incomplete, 1);
    /* the torn header's run, and the run of the two SEG records: not at offset 0, so bad */
    cr_assert_eq(idx.bad_records, 2);
    cr_assert_eq(idx.max_id, FORGED_ID, "the forged SEG records' id is not seen");
    cr_assert_eq(lc.n, 3);
    spool_index_free(&idx);
    env_free(&forged);
    fixture_free(&f);
    rm_spool_dir(dir);
}

/* ---- per-recipient completion ---- */

/* A DONE record for id listing rcpt[0..n) (n == 0: the whole message), sealed with b's seed. */
static void
sb_done(struct sb *b, uint64_t id, const uint32_t *rcpt, unsigned n)
{
    size_t size = spool_done_record_size(n);

    sb_reserve(b, size);
    cr_assert_eq(spool_done_record(b->p + b->len, size, id, b->seed, rcpt, n), size);
    b->len += size;
}

static const struct spool_seg *
find_seg(const struct spool_index *idx, uint64_t seg_id)
{
    for (size_t i = 0; i < idx->nseg; i++) {
        if (idx->seg[i].seg_id == seg_id)
            return &idx->seg[i];
    }
    cr_assert_fail("segment %" PRIx64 " not listed", seg_id);
    return NULL;
}

static void
assert_marks(const struct spool_msg *m, const char *want)
{
    cr_assert_eq(strlen(want), m->env.nrcpt);
    cr_assert_not_null(m->rcpt_done);
    for (uint32_t k = 0; k < m->env.nrcpt; k++)
        cr_assert_eq(m->rcpt_done[k], want[k] == '1', "recipient %u of %s", k, want);
}

Test(spool, done_record_encoding)
{
    static const uint32_t rcpt[3] = { 0, 0x01020304, 7 };
    char out[128];
    struct spool_rec_hdr h;
    struct sb ref = { .seed = 99 };
    const char *pl = out + SPOOL_HDR_SIZE;

    cr_assert_eq(spool_done_record_size(0), SPOOL_HDR_SIZE);
    cr_assert_eq(spool_done_record_size(1), SPOOL_HDR_SIZE + 8);
    cr_assert_eq(spool_done_record_size(2), SPOOL_HDR_SIZE + 8);
    cr_assert_eq(spool_done_record_size(3), SPOOL_HDR_SIZE + 16);

    /* whole message: the same octets as an empty DONE record sealed by hand */
    memset(out, 0x55, sizeof(out));
    cr_assert_eq(spool_done_record(out, SPOOL_HDR_SIZE - 1, 42, 99, NULL, 0), 0);
    cr_assert_eq(spool_done_record(out, sizeof(out), 42, 99, NULL, 0), SPOOL_HDR_SIZE);
    sb_rec(&ref, SPOOL_REC_DONE, 42, NULL, 0);
    cr_assert(memcmp(out, ref.p, SPOOL_HDR_SIZE) == 0);
    free(ref.p);

    /* three indices: 12 octets little-endian, 4 of padding */
    memset(out, 0x55, sizeof(out));
    cr_assert_eq(spool_done_record(out, 47, 42, 99, rcpt, 3), 0);
    cr_assert_eq(out[0], 0x55, "nothing written when cap is too small");
    cr_assert_eq(spool_done_record(out, 48, 42, 99, rcpt, 3), 48);
    cr_assert(spool_rec_verify(out, 48, 99, &h));
    cr_assert_not(spool_rec_verify(out, 48, 98, &h));
    cr_assert_eq(h.type, SPOOL_REC_DONE);
    cr_assert_eq(h.id, 42);
    cr_assert_eq(h.len, 12);
    cr_assert(memcmp(pl, "\0\0\0\0\x04\x03\x02\x01\x07\0\0\0\0\0\0\0", 16) == 0);
    cr_assert_eq(out[48], 0x55, "nothing written past the record");
}

Test(spool, done_record_without_seed_aborts, .signal = SIGABRT)
{
    char out[64];

    spool_done_record(out, sizeof(out), 1, 0, NULL, 0);
}

/* Two of three recipients finished: pending, marked; then the third: finished. */
Test(spool, partial_done_then_the_rest)
{
    static const uint32_t first[] = { 2, 0, 2 }, rest[] = { 1 };
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };

    fixture_init(&f, 0x100); /* env[2] has 3 recipients, env[1] 2 */
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[1], f.body[1], f.blen[1], 1);
    sb_msg(&b, &f.env[2], f.body[2], f.blen[2], 1);
    sb_done(&b, 0x102, first, 3); /* a repeated index counts once */
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(lc.n, 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.done, 0);
    cr_assert_eq(idx.bad_records, 0);
    cr_assert_null(idx.msg[0].rcpt_done, "no DONE record: nothing marked");
    cr_assert_eq(idx.msg[1].env.id, 0x102);
    assert_marks(&idx.msg[1], "101");
    assert_body(dir, &idx.msg[1], f.body[2], f.blen[2]);
    spool_index_free(&idx);

    sb_done(&b, 0x102, rest, 1);
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_eq(idx.msg[0].env.id, 0x101);
    cr_assert_eq(idx.done, 1, "every recipient listed: finished");
    spool_index_free(&idx);

    /* a whole DONE record finishes it whatever else is listed */
    b.len = 0;
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[2], f.body[2], f.blen[2], 1);
    sb_done(&b, 0x102, rest, 1);
    sb_done(&b, 0x102, NULL, 0);
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.done, 1);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

/* DONE records merge across segments, before or after the MSG record in scan order. */
Test(spool, partial_done_in_other_segments)
{
    static const uint32_t r0[] = { 0 }, r1[] = { 1 }, r2[] = { 2 };
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    sb_seg(&s1, 1);
    sb_done(&s1, 0x102, r2, 1); /* written by another reactor into its older segment */
    sb_seg(&s2, 2);
    sb_msg(&s2, &f.env[2], f.body[2], f.blen[2], 2);
    sb_msg(&s2, &f.env[3], f.body[3], f.blen[3], 1);
    sb_seg(&s3, 3);
    sb_done(&s3, 0x102, r0, 1);
    write_seg(dir, 1, s1.p, s1.len);
    write_seg(dir, 2, s2.p, s2.len);
    write_seg(dir, 3, s3.p, s3.len);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.done, 0);
    assert_marks(&idx.msg[0], "101");
    cr_assert_null(idx.msg[1].rcpt_done);
    cr_assert_eq(idx.nseg, 3);
    cr_assert_eq(find_seg(&idx, 2)->pending, 2);
    cr_assert_eq(find_seg(&idx, 1)->pending, 0);
    cr_assert_eq(find_seg(&idx, 3)->pending, 0);
    cr_assert(find_seg(&idx, 1)->keep, "its DONE record matters while segment 2 stays");
    cr_assert(find_seg(&idx, 3)->keep);
    spool_index_free(&idx);

    sb_done(&s3, 0x102, r1, 1);
    write_seg(dir, 3, s3.p, s3.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_eq(idx.msg[0].env.id, 0x103);
    cr_assert_eq(idx.done, 1);
    cr_assert_eq(find_seg(&idx, 2)->pending, 1);
    cr_assert(find_seg(&idx, 1)->keep && find_seg(&idx, 3)->keep, "0x103 keeps segment 2");
    spool_index_free(&idx);

    sb_done(&s3, 0x103, NULL, 0);
    write_seg(dir, 3, s3.p, s3.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    cr_assert_eq(idx.done, 2);
    for (size_t i = 0; i < idx.nseg; i++) {
        cr_assert_eq(idx.seg[i].pending, 0);
        cr_assert_not(idx.seg[i].keep, "segment %zu", i);
    }
    spool_index_free(&idx);
    fixture_free(&f);
    free(s1.p);
    free(s2.p);
    free(s3.p);
    rm_spool_dir(dir);
}

/* A DONE record whose length is not a multiple of 4 checks but is bad: skipped whole. */
Test(spool, done_with_bad_length_is_a_bad_record)
{
    static const uint32_t r0[] = { 0 };
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };
    uint64_t at5, at2;
    char want[128];

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[1], f.body[1], f.blen[1], 1);
    sb_msg(&b, &f.env[2], f.body[2], f.blen[2], 1);
    at5 = sb_rec(&b, SPOOL_REC_DONE, 0x101, "\0\0\0\0\1", 5); /* would list 0, then junk */
    at2 = sb_rec(&b, SPOOL_REC_DONE, 0x102, "\0\0", 2);
    sb_done(&b, 0x102, r0, 1); /* read: the bad records were skipped whole, no resync */
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.bad_records, 2);
    cr_assert_eq(idx.torn_bytes, 0);
    cr_assert_eq(idx.done, 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_null(idx.msg[0].rcpt_done, "nothing of the bad record is used");
    assert_marks(&idx.msg[1], "100");
    cr_assert_eq(lc.n, 2);
    snprintf(want, sizeof(want), "DONE record at offset %" PRIu64 " has a bad length (5), skipped",
             at5);
    cr_assert(log_has(&lc, want), "%s", lc.lines[0]);
    snprintf(want, sizeof(want), "DONE record at offset %" PRIu64 " has a bad length (2)", at2);
    cr_assert(log_has(&lc, want), "%s", lc.lines[1]);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

/* Indices at or above the recipient count are ignored, with one log line per recovery. */
Test(spool, done_index_out_of_range_is_ignored)
{
    static const uint32_t a[] = { 0, 2, 1000000 }, b2[] = { UINT32_MAX }, c[] = { 1, 0, 3 };
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    struct spool_index idx;
    struct logcap lc = { 0 };

    fixture_init(&f, 0x100); /* recipients: env[1] 2, env[2] 3, env[3] 4 */
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[1], f.body[1], f.blen[1], 1);
    sb_msg(&b, &f.env[2], f.body[2], f.blen[2], 1);
    sb_msg(&b, &f.env[3], f.body[3], f.blen[3], 1);
    sb_done(&b, 0x101, a, 3);  /* 0 in range; 2 and 1000000 not */
    sb_done(&b, 0x102, b2, 1); /* nothing in range: nothing marked */
    sb_done(&b, 0x103, c, 3);  /* 3 of 4: pending */
    write_seg(dir, 1, b.p, b.len);

    cr_assert_eq(spool_recover(dir, &idx, cap_log, &lc), 0);
    cr_assert_eq(idx.nmsg, 3);
    cr_assert_eq(idx.done, 0);
    cr_assert_eq(idx.bad_records, 0);
    assert_marks(&idx.msg[0], "10");
    cr_assert_null(idx.msg[1].rcpt_done);
    assert_marks(&idx.msg[2], "1101");
    cr_assert_eq(lc.n, 1, "logged once");
    cr_assert(log_has(&lc, "3 recipient index(es) in DONE records out of range, ignored (first: "
                           "message 0000000000000101 index 2 of 2 recipients)"),
              "%s", lc.lines[0]);
    spool_index_free(&idx);

    /* out-of-range indices do not stand in for a missing one, nor keep a listed set open */
    sb_done(&b, 0x101, c, 1); /* index 1: now both of its recipients */
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 2);
    cr_assert_eq(idx.msg[0].env.id, 0x102);
    cr_assert_eq(idx.done, 1);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

/* The segment list: ids, SEG fields, sizes, pending counts, bad and empty segments. */
Test(spool, segment_list)
{
    char *dir = mk_spool_dir();
    struct fixture f;
    struct sb s1 = { 0 }, s2 = { 0 }, s3 = { 0 }, s5 = { 0 };
    struct spool_index idx;
    const struct spool_seg *g;

    fixture_init(&f, 0x100);
    sb_seg(&s1, 0x10);
    sb_msg(&s1, &f.env[0], f.body[0], f.blen[0], 1);
    sb_msg(&s1, &f.env[1], f.body[1], f.blen[1], 2);
    sb_seg(&s2, 0x20); /* every message done: pending 0 */
    sb_msg(&s2, &f.env[2], f.body[2], f.blen[2], 1);
    sb_done(&s2, 0x102, NULL, 0);
    sb_seg(&s3, 0x30); /* a duplicate copy of 0x101: the index lists segment 0x10's */
    sb_msg(&s3, &f.env[1], f.body[1], f.blen[1], 1);
    sb_msg(&s3, &f.env[3], f.body[3], f.blen[3], 1);
    sb_seg(&s5, 0x50); /* bad: its SEG record damaged */
    sb_msg(&s5, &f.env[3], f.body[3], f.blen[3], 1);
    s5.p[40] ^= 1;
    write_seg(dir, 0x50, s5.p, s5.len);
    write_seg(dir, 0x30, s3.p, s3.len);
    write_seg(dir, 0x40, "", 0); /* empty: not bad */
    write_seg(dir, 0x20, s2.p, s2.len);
    write_seg(dir, 0x10, s1.p, s1.len);
    write_file(dir, "seg-00000000000000aa.rms", s1.p, s1.len); /* not spool_seg_name()'s */
    {
        char path[600];

        snprintf(path, sizeof(path), "%s/seg-0000000000000060.rms", dir);
        cr_assert_eq(mkdir(path, 0700), 0); /* not a regular file: not listed */
        cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
        cr_assert_eq(rmdir(path), 0);
    }

    cr_assert_eq(idx.nseg, 5);
    cr_assert_eq(idx.nsegments, 5);
    cr_assert_eq(idx.bad_segments, 1);
    for (size_t i = 0; i < idx.nseg; i++)
        cr_assert_eq(idx.seg[i].seg_id, 0x10 * (i + 1), "sorted by seg_id");
    cr_assert_eq(idx.nmsg, 3);
    cr_assert_eq(idx.done, 1);

    g = &idx.seg[0];
    cr_assert_eq(g->reactor, 1);
    cr_assert_eq(g->seed, seg_seed(0x10));
    cr_assert_eq(g->size, s1.len);
    cr_assert_eq(g->pending, 2);
    cr_assert_not(g->bad);
    cr_assert(g->keep);
    g = &idx.seg[1];
    cr_assert_eq(g->seed, seg_seed(0x20));
    cr_assert_eq(g->size, s2.len);
    cr_assert_eq(g->pending, 0, "all its messages are done");
    cr_assert_not(g->bad);
    cr_assert_not(g->keep);
    g = &idx.seg[2];
    cr_assert_eq(g->pending, 1, "0x103; its copy of 0x101 is not the listed one");
    cr_assert(g->keep);
    g = &idx.seg[3];
    cr_assert_eq(g->size, 0);
    cr_assert_eq(g->pending, 0);
    cr_assert_not(g->bad);
    cr_assert_not(g->keep);
    cr_assert_eq(g->seed, 0);
    g = &idx.seg[4];
    cr_assert_eq(g->size, s5.len);
    cr_assert_eq(g->pending, 0);
    cr_assert(g->bad);
    cr_assert_not(g->keep);
    cr_assert_eq(g->seed, 0);
    cr_assert_eq(g->reactor, 0);
    spool_index_free(&idx);
    cr_assert_null(idx.seg);
    cr_assert_eq(idx.nseg, 0);
    fixture_free(&f);
    free(s1.p);
    free(s2.p);
    free(s3.p);
    free(s5.p);
    rm_spool_dir(dir);
}

/*
 * keep follows DONE records to the segments they matter for, through
 * chains: segment 1 holds the DONE record of a message in segment 2, which
 * holds the DONE record of a finished message in segment 3, which still has
 * a pending message. Segments 4 and 5 hold each other's DONE records and no
 * pending message: neither is kept.
 */
Test(spool, segment_keep_follows_done_records)
{
    static const uint32_t r0[] = { 0 };
    char *dir = mk_spool_dir();
    struct fixture f, g;
    struct sb s[5] = { { 0 } };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    fixture_init(&g, 0x200);
    for (unsigned i = 0; i < 5; i++)
        sb_seg(&s[i], i + 1);
    sb_msg(&s[2], &f.env[0], f.body[0], f.blen[0], 1); /* 0x100: pending, in 3 */
    sb_msg(&s[2], &f.env[1], f.body[1], f.blen[1], 1); /* 0x101: finished by 2 */
    sb_done(&s[1], 0x101, NULL, 0);
    sb_msg(&s[1], &f.env[2], f.body[2], f.blen[2], 1); /* 0x102: finished by 1 */
    sb_done(&s[0], 0x102, NULL, 0);
    sb_msg(&s[3], &g.env[0], g.body[0], g.blen[0], 1); /* 0x200 in 4, done in 5 */
    sb_done(&s[4], 0x200, r0, 1);
    sb_msg(&s[4], &g.env[1], g.body[1], g.blen[1], 1); /* 0x201 in 5, done in 4 */
    sb_done(&s[3], 0x201, NULL, 0);
    for (unsigned i = 0; i < 5; i++)
        write_seg(dir, i + 1, s[i].p, s[i].len);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_eq(idx.msg[0].env.id, 0x100);
    cr_assert_eq(idx.done, 4);
    cr_assert_eq(idx.nseg, 5);
    cr_assert(idx.seg[2].keep && idx.seg[2].pending == 1);
    cr_assert(idx.seg[1].keep && idx.seg[1].pending == 0);
    cr_assert(idx.seg[0].keep && idx.seg[0].pending == 0);
    cr_assert_not(idx.seg[3].keep);
    cr_assert_not(idx.seg[4].keep);
    spool_index_free(&idx);

    /* 0x100 finished too: nothing is kept */
    sb_done(&s[0], 0x100, NULL, 0);
    write_seg(dir, 1, s[0].p, s[0].len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 0);
    for (size_t i = 0; i < idx.nseg; i++)
        cr_assert_not(idx.seg[i].keep, "segment %zu", i + 1);
    spool_index_free(&idx);
    for (unsigned i = 0; i < 5; i++)
        free(s[i].p);
    fixture_free(&f);
    fixture_free(&g);
    rm_spool_dir(dir);
}

Test(spool, seg_unlink)
{
    char *dir = mk_spool_dir();
    char missing[600];
    struct fixture f;
    struct sb s1 = { 0 }, s2 = { 0 };
    struct spool_index idx;

    fixture_init(&f, 0x100);
    sb_seg(&s1, 1);
    sb_msg(&s1, &f.env[0], f.body[0], f.blen[0], 1);
    sb_seg(&s2, 2);
    sb_msg(&s2, &f.env[1], f.body[1], f.blen[1], 1);
    sb_done(&s2, 0x101, NULL, 0);
    write_seg(dir, 1, s1.p, s1.len);
    write_seg(dir, 2, s2.p, s2.len);
    write_file(dir, "README", "x", 1);

    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nseg, 2);
    cr_assert_not(idx.seg[1].keep);
    cr_assert_eq(spool_seg_unlink(dir, idx.seg[1].seg_id), 0);
    spool_index_free(&idx);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nseg, 1);
    cr_assert_eq(idx.seg[0].seg_id, 1);
    cr_assert_eq(idx.nmsg, 1);
    spool_index_free(&idx);

    cr_assert_eq(spool_seg_unlink(dir, 2), -ENOENT);
    cr_assert_eq(spool_seg_unlink(dir, 1), 0);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nseg, 0);
    cr_assert_null(idx.seg);
    spool_index_free(&idx);
    cr_assert_eq(access(dir, F_OK), 0, "other files stay");
    snprintf(missing, sizeof(missing), "%s/nope", dir);
    cr_assert_eq(spool_seg_unlink(missing, 1), -ENOENT);
    fixture_free(&f);
    free(s1.p);
    free(s2.p);
    rm_spool_dir(dir);
}

/* ---- listing ---- */

static char *
print_queue(const struct spool_index *idx)
{
    char *out = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&out, &n);

    cr_assert_not_null(fp);
    spool_print_queue(idx, fp);
    fclose(fp);
    return out;
}

Test(spool, print_queue_format)
{
    struct spool_index idx = { 0 };
    struct spool_msg m[2] = { 0 };
    char *out;

    make_env(&m[0].env, 0x01A2B3C4D5E6F708ull, "sender@example.com", 0);
    m[0].env.body_len = 1234;
    cr_assert_eq(env_add_rcpt(&m[0].env, SLICE_LIT("rcpt1@example.org"), SLICE_LIT("")), 0);
    cr_assert_eq(env_add_rcpt(&m[0].env, SLICE_LIT("rcpt2@example.org"), SLICE_LIT("")), 0);
    idx.msg = m;
    idx.nmsg = 1;
    out = print_queue(&idx);
    cr_assert_str_eq(out,
                     "-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
                     "01A2B3C4D5E6F708     1234 Fri Nov 27 17:21:07  sender@example.com\n"
                     "                                               rcpt1@example.org\n"
                     "                                               rcpt2@example.org\n"
                     "\n"
                     "-- 2 Kbytes in 1 Request.\n");
    free(out);

    make_env(&m[1].env, 0x0200000000000001ull, "", 1);
    m[1].env.arrival = 1794020645; /* Sat Nov  7 03:04:05 2026 */
    m[1].env.body_len = 2048 - 1234;
    idx.nmsg = 2;
    out = print_queue(&idx);
    cr_assert_str_eq(out,
                     "-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
                     "01A2B3C4D5E6F708     1234 Fri Nov 27 17:21:07  sender@example.com\n"
                     "                                               rcpt1@example.org\n"
                     "                                               rcpt2@example.org\n"
                     "\n"
                     "0200000000000001      814 Sat Nov  7 03:04:05  MAILER-DAEMON\n"
                     "                                               rcpt0@example.org\n"
                     "\n"
                     "-- 2 Kbytes in 2 Requests.\n");
    free(out);
    env_free(&m[0].env);
    env_free(&m[1].env);

    idx.nmsg = 0;
    out = print_queue(&idx);
    cr_assert_str_eq(out, "Mail queue is empty\n");
    free(out);
}

/* Finished recipients are not listed, in a hand-built index and in a recovered one. */
Test(spool, print_queue_skips_finished_recipients)
{
    static const uint32_t r[] = { 0, 2 };
    struct spool_index idx = { 0 };
    struct spool_msg m = { 0 };
    uint8_t marks[3] = { 1, 0, 1 };
    char *out, *dir = mk_spool_dir();
    struct fixture f;
    struct sb b = { 0 };
    static const char want[] =
        "-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
        "0000000000000102        1 Fri Nov 27 17:21:07  MAILER-DAEMON\n"
        "                                               rcpt1@example.org\n"
        "\n"
        "-- 1 Kbytes in 1 Request.\n";

    make_env(&m.env, 0x102, "", 3);
    m.env.body_len = 1;
    m.rcpt_done = marks;
    idx.msg = &m;
    idx.nmsg = 1;
    out = print_queue(&idx);
    cr_assert_str_eq(out, want);
    free(out);
    env_free(&m.env);

    fixture_init(&f, 0x100);
    sb_seg(&b, 1);
    sb_msg(&b, &f.env[2], f.body[2], f.blen[2], 1);
    sb_done(&b, 0x102, r, 2);
    write_seg(dir, 1, b.p, b.len);
    cr_assert_eq(spool_recover(dir, &idx, NULL, NULL), 0);
    out = print_queue(&idx);
    cr_assert_str_eq(out, want);
    free(out);
    spool_index_free(&idx);
    fixture_free(&f);
    free(b.p);
    rm_spool_dir(dir);
}

Test(spool, print_queue_dates_and_control_octets)
{
    struct spool_index idx = { 0 };
    struct spool_msg m = { 0 };
    char *out;

    make_env(&m.env, 1, "a\033[2Jb@example.com", 0);
    m.env.arrival = 4107542400u; /* Mon Mar  1 00:00:00 2100: not a leap year */
    m.env.body_len = 0;
    idx.msg = &m;
    idx.nmsg = 1;
    out = print_queue(&idx);
    cr_assert_str_eq(out,
                     "-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
                     "0000000000000001        0 Mon Mar  1 00:00:00  a?[2Jb@example.com\n"
                     "\n"
                     "-- 0 Kbytes in 1 Request.\n");
    free(out);
    env_free(&m.env);
}

/*
 * spool_rec_csum() is the one-shot XXH3-64 of header and payload, called here
 * from several stack depths over scribbled stack. (The stale-state bug this
 * guards against, an XXH3 state on the stack used without XXH3_INITSTATE, is
 * timing- and layout-dependent: the release-build kill -9 integration test is
 * what caught it; this test pins the reference value.)
 */
static uint64_t __attribute__((noinline))
csum_after_scribble(unsigned depth, const struct spool_rec_hdr *h, uint64_t seed,
                    const struct iovec *iov)
{
    volatile unsigned char junk[512];

    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 7 + depth);
    if (depth > 0)
        return csum_after_scribble(depth - 1, h, seed, iov) + junk[depth % sizeof(junk)] * 0;
    return spool_rec_csum(h, seed, iov, 1);
}

Test(spool_csum, equals_one_shot_reference_whatever_the_stack)
{
    char buf[SPOOL_HDR_SIZE + 256];
    uint64_t seed = 0x9e3779b97f4a7c15ULL;

    for (unsigned round = 0; round < 200; round++) {
        struct spool_rec_hdr h = { .magic = SPOOL_MAGIC,
                                   .type = SPOOL_REC_DATA,
                                   .version = SPOOL_VERSION,
                                   .len = 200,
                                   .id = round };
        struct iovec iov = { buf + SPOOL_HDR_SIZE, 200 };
        uint64_t want;

        for (int i = 0; i < 200; i++)
            buf[SPOOL_HDR_SIZE + i] = (char)(i ^ round);
        memcpy(buf, &h, sizeof(h)); /* csum is 0 in h */
        want = XXH3_64bits_withSeed(buf, SPOOL_HDR_SIZE + 200, seed);
        cr_assert_eq(csum_after_scribble(round % 7, &h, seed, &iov), want, "round %u", round);
        cr_assert_eq(spool_rec_csum(&h, seed, &iov, 1), want, "round %u", round);
    }
}
