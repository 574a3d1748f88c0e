/*
 * spool.c: the spool's record format: sealing and checking records, the SEG
 * and MSG payload codecs, DONE records, segment names, queue ids and the queue listing.
 * Recovery (the scan of a spool folder) is in spool_recover.c.
 *
 * Everything here is pure apart from spool_print_queue()'s stdio, so any
 * thread may call it; decoded envelopes and extent arrays belong to the
 * caller.
 *
 * Byte order: payloads are encoded with the explicit little-endian helpers
 * below. The record header is the exception: writers put struct
 * spool_rec_hdr on disk as it is in memory (it is one iovec of the write),
 * so the host must be little-endian, which the assertion below checks.
 */
#include "queue/spool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Inline XXH3 into this file: spool_rec_seal() is on the reactors' write path. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/compiler.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "struct spool_rec_hdr is written as-is: little-endian hosts only");
_Static_assert(sizeof(struct spool_extent) == 16, "extent is 16 octets in memory");
_Static_assert(SPOOL_MAGIC == ('R' | 'M' << 8 | 'S' << 16 | (uint32_t)'P' << 24), "RMSP");

/* ---- little-endian helpers ---- */

static inline void
put_le16(char *p, uint16_t v)
{
    p[0] = (char)(v & 0xff);
    p[1] = (char)(v >> 8);
}

static inline void
put_le32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)((v >> (8 * i)) & 0xff);
}

static inline void
put_le64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)((v >> (8 * i)) & 0xff);
}

static inline uint16_t
get_le16(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;

    return (uint16_t)(u[0] | u[1] << 8);
}

static inline uint32_t
get_le32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--)
        v = v << 8 | u[i];
    return v;
}

static inline uint64_t
get_le64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | u[i];
    return v;
}

/* ---- records ---- */

uint64_t
spool_rec_csum(const struct spool_rec_hdr *hdr, uint64_t seed, const struct iovec *payload,
               int niov)
{
    struct spool_rec_hdr h = *hdr;
    XXH3_state_t st;

    h.csum = 0;
    /* a state on the stack must be initialised before the reset: reset_withSeed() skips
       deriving the secret when the stale st.seed happens to equal seed (xxhash.h) */
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset_withSeed(&st, seed);
    XXH3_64bits_update(&st, &h, sizeof(h));
    for (int i = 0; i < niov; i++) {
        if (payload[i].iov_len > 0)
            XXH3_64bits_update(&st, payload[i].iov_base, payload[i].iov_len);
    }
    return XXH3_64bits_digest(&st);
}

void
spool_rec_seal(struct spool_rec_hdr *hdr, enum spool_rec_type type, uint64_t id, uint64_t seed,
               const struct iovec *payload, int niov)
{
    size_t len = 0;

    for (int i = 0; i < niov; i++)
        len += payload[i].iov_len;
    BUG_ON(len > SPOOL_MAX_REC);
    memset(hdr, 0, sizeof(*hdr));
    hdr->magic = SPOOL_MAGIC;
    hdr->type = (uint8_t)type;
    hdr->version = SPOOL_VERSION;
    hdr->len = (uint32_t)len;
    hdr->id = id;
    hdr->csum = spool_rec_csum(hdr, seed, payload, niov);
}

/* Decode a header from disk octets (explicit LE, so this part needs no host assumption). */
static void
hdr_load(const char *p, struct spool_rec_hdr *h)
{
    h->magic = get_le32(p);
    h->type = (uint8_t)p[4];
    h->version = (uint8_t)p[5];
    h->reserved = get_le16(p + 6);
    h->len = get_le32(p + 8);
    h->reserved2 = get_le32(p + 12);
    h->id = get_le64(p + 16);
    h->csum = get_le64(p + 24);
}

bool
spool_rec_hdr_check(const char *p, struct spool_rec_hdr *hdr)
{
    hdr_load(p, hdr);
    if (hdr->magic != SPOOL_MAGIC || hdr->version != SPOOL_VERSION)
        return false;
    if (hdr->type < SPOOL_REC_SEG || hdr->type > SPOOL_REC_DONE)
        return false;
    return hdr->len <= SPOOL_MAX_REC;
}

bool
spool_rec_verify(const char *p, size_t avail, uint64_t seed, struct spool_rec_hdr *hdr)
{
    struct spool_rec_hdr h;
    struct iovec iov;

    if (avail < SPOOL_HDR_SIZE || !spool_rec_hdr_check(p, &h))
        return false;
    if (h.len > avail - SPOOL_HDR_SIZE)
        return false;
    iov.iov_base = (void *)(uintptr_t)(p + SPOOL_HDR_SIZE); /* read only: iovec has no const */
    iov.iov_len = h.len;
    if (spool_rec_csum(&h, seed, &iov, 1) != h.csum)
        return false;
    *hdr = h;
    return true;
}

/* ---- SEG ---- */

size_t
spool_seg_record(char *out, size_t cap, const struct spool_seg_info *info)
{
    size_t size = spool_rec_size(SPOOL_SEG_PAYLOAD);
    char payload[SPOOL_SEG_PAYLOAD];
    struct spool_rec_hdr hdr;
    struct iovec iov = { payload, sizeof(payload) };

    /* a segment sealed with seed 0 would verify records forged with the public hash */
    BUG_ON(info->seed == 0);
    if (cap < size)
        return 0;
    put_le64(payload, info->seg_id);
    put_le32(payload + 8, info->reactor);
    put_le64(payload + 12, info->created);
    put_le32(payload + 20, SPOOL_VERSION);
    put_le64(payload + 24, info->seed);
    /* seed 0: the seed is what this record carries (spool.h, "Keyed checksums") */
    spool_rec_seal(&hdr, SPOOL_REC_SEG, info->seg_id, 0, &iov, 1);
    memset(out, 0, size);
    memcpy(out, &hdr, sizeof(hdr));
    memcpy(out + SPOOL_HDR_SIZE, payload, sizeof(payload));
    return size;
}

int
spool_seg_decode(const char *p, size_t len, struct spool_seg_info *info)
{
    if (len != SPOOL_SEG_PAYLOAD || get_le32(p + 20) != SPOOL_VERSION || get_le64(p + 24) == 0)
        return -EINVAL;
    info->seg_id = get_le64(p);
    info->reactor = get_le32(p + 8);
    info->created = get_le64(p + 12);
    info->seed = get_le64(p + 24);
    return 0;
}

void
spool_seg_name(uint64_t seg_id, char *out, size_t cap)
{
    char hex[QID_LEN + 1];

    qid_format(seg_id, hex);
    snprintf(out, cap, "seg-%s.rms", hex);
}

/* ---- DONE ---- */

size_t
spool_done_record_size(unsigned nrcpt)
{
    return spool_rec_size((size_t)nrcpt * 4);
}

size_t
spool_done_record(char *out, size_t cap, uint64_t id, uint64_t seed, const uint32_t *rcpt,
                  unsigned nrcpt)
{
    size_t size = spool_done_record_size(nrcpt), len = (size_t)nrcpt * 4;
    struct spool_rec_hdr hdr;
    struct iovec iov = { out + SPOOL_HDR_SIZE, len };

    /* recovery checks every record but SEG with the segment's seed, which is never 0 */
    BUG_ON(seed == 0);
    /* an index names one of at most SPOOL_MAX_RCPT recipients: more is a caller bug */
    BUG_ON(nrcpt > SPOOL_MAX_RCPT);
    if (cap < size)
        return 0;
    memset(out, 0, size);
    for (unsigned i = 0; i < nrcpt; i++)
        put_le32(out + SPOOL_HDR_SIZE + (size_t)i * 4, rcpt[i]);
    spool_rec_seal(&hdr, SPOOL_REC_DONE, id, seed, &iov, 1);
    memcpy(out, &hdr, sizeof(hdr));
    return size;
}

/* ---- MSG ---- */

#define MSG_FIXED    (2 + 2 + 8 + 8 + 8 + 4) /* format, reserved, id, arrival, body_len, flags */
#define MSG_STR_HDR  4
#define MSG_EXT_SIZE 12

size_t
spool_msg_payload_size(const struct envelope *env, unsigned nextent)
{
    size_t n = MSG_FIXED;

    n += 4 * MSG_STR_HDR + (size_t)env->client.len + env->helo.len + env->sender.len +
         env->mail_params.len;
    n += 4;
    for (uint32_t i = 0; i < env->nrcpt; i++)
        n += 2 * MSG_STR_HDR + (size_t)env->rcpt[i].addr.len + env->rcpt[i].params.len;
    n += 4 + (size_t)nextent * MSG_EXT_SIZE;
    return n;
}

static char *
put_str(char *p, const struct envelope *env, struct env_str s)
{
    struct slice v = env_get(env, s);

    put_le32(p, (uint32_t)v.len);
    if (v.len > 0)
        memcpy(p + MSG_STR_HDR, v.p, v.len);
    return p + MSG_STR_HDR + v.len;
}

size_t
spool_msg_encode(char *out, size_t cap, const struct envelope *env, const struct spool_extent *ext,
                 unsigned nextent)
{
    size_t size = spool_msg_payload_size(env, nextent);
    char *p = out;

    if (cap < size)
        return 0;
    put_le16(p, SPOOL_MSG_FORMAT);
    put_le16(p + 2, 0);
    put_le64(p + 4, env->id);
    put_le64(p + 12, env->arrival);
    put_le64(p + 20, env->body_len);
    put_le32(p + 28, env->flags);
    p += MSG_FIXED;
    p = put_str(p, env, env->client);
    p = put_str(p, env, env->helo);
    p = put_str(p, env, env->sender);
    p = put_str(p, env, env->mail_params);
    put_le32(p, env->nrcpt);
    p += 4;
    for (uint32_t i = 0; i < env->nrcpt; i++) {
        p = put_str(p, env, env->rcpt[i].addr);
        p = put_str(p, env, env->rcpt[i].params);
    }
    put_le32(p, nextent);
    p += 4;
    for (unsigned i = 0; i < nextent; i++) {
        put_le64(p, ext[i].off);
        put_le32(p + 8, ext[i].len);
        p += MSG_EXT_SIZE;
    }
    BUG_ON((size_t)(p - out) != size);
    return size;
}

/* A bounds-checked read cursor over an untrusted payload. */
struct rd {
    const char *p;
    size_t len, off;
};

static bool
rd_u32(struct rd *r, uint32_t *v)
{
    if (r->len - r->off < 4)
        return false;
    *v = get_le32(r->p + r->off);
    r->off += 4;
    return true;
}

/* A length-prefixed string: a slice into the payload, valid as long as it. */
static bool
rd_str(struct rd *r, struct slice *s)
{
    uint32_t n;

    if (!rd_u32(r, &n) || n > r->len - r->off)
        return false;
    *s = slice_make(r->p + r->off, n);
    r->off += n;
    return true;
}

static int
rd_env_str(struct rd *r, struct envelope *env, struct env_str *out)
{
    struct slice s;

    if (!rd_str(r, &s))
        return -EINVAL;
    return env_put(env, out, s.p, s.len);
}

int
spool_msg_decode(const char *p, size_t len, struct envelope *env, struct spool_extent **ext,
                 unsigned *nextent)
{
    struct rd r = { p, len, 0 };
    struct spool_extent *e = NULL;
    uint32_t nrcpt, n;
    int rc = -EINVAL;

    env_init(env);
    *ext = NULL;
    *nextent = 0;
    if (len > SPOOL_MAX_REC || len < MSG_FIXED)
        return -EINVAL;
    if (get_le16(p) != SPOOL_MSG_FORMAT || get_le16(p + 2) != 0)
        return -EINVAL;
    env->id = get_le64(p + 4);
    env->arrival = get_le64(p + 12);
    env->body_len = get_le64(p + 20);
    env->flags = get_le32(p + 28);
    qid_format(env->id, env->qid);
    r.off = MSG_FIXED;

    if ((rc = rd_env_str(&r, env, &env->client)) < 0 ||
        (rc = rd_env_str(&r, env, &env->helo)) < 0 ||
        (rc = rd_env_str(&r, env, &env->sender)) < 0 ||
        (rc = rd_env_str(&r, env, &env->mail_params)) < 0)
        goto fail;

    rc = -EINVAL;
    /* every recipient takes at least two empty strings: 8 octets */
    if (!rd_u32(&r, &nrcpt) || nrcpt > SPOOL_MAX_RCPT || nrcpt > (r.len - r.off) / 8)
        goto fail;
    for (uint32_t i = 0; i < nrcpt; i++) {
        struct slice addr, params;

        rc = -EINVAL;
        if (!rd_str(&r, &addr) || !rd_str(&r, &params))
            goto fail;
        rc = env_add_rcpt(env, addr, params);
        if (rc < 0)
            goto fail;
    }

    rc = -EINVAL;
    if (!rd_u32(&r, &n) || n > SPOOL_MAX_EXTENTS || (size_t)n * MSG_EXT_SIZE != r.len - r.off)
        goto fail; /* exactly the extents, nothing after them */
    if (n > 0) {
        e = malloc((size_t)n * sizeof(*e));
        if (e == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
        /* the length check above covers every extent */
        for (uint32_t i = 0; i < n; i++) {
            const char *q = r.p + r.off + (size_t)i * MSG_EXT_SIZE;

            e[i].off = get_le64(q);
            e[i].len = get_le32(q + 8);
        }
    }
    *ext = e;
    *nextent = n;
    return 0;

fail:
    free(e);
    env_free(env);
    return rc;
}

/* ---- queue ids ---- */

uint64_t
spool_next_id(uint64_t *last, unsigned reactor, uint64_t now_sec)
{
    uint64_t r = reactor & 0xffu;
    uint64_t l = *last;
    uint64_t cand = now_sec << 32 | r << 24;

    if (cand > l) {
        /* a new second (or a clock ahead of *last): sequence 0 */
    } else if (((l >> 24) & 0xff) == r && (l & 0xffffff) < 0xffffff)
        cand = l + 1;
    else if (((l >> 24) & 0xff) < r)
        cand = (l >> 32) << 32 | r << 24; /* same second, our reactor's range is above */
    else
        cand = ((l >> 32) + 1) << 32 | r << 24; /* borrow the next second */
    *last = cand;
    return cand;
}

/* ---- listing ---- */

/* Civil date from days since 1970-01-01 (H. Hinnant's algorithm), proleptic Gregorian. */
static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era, yy;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    yy = (int64_t)yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

/* asctime()'s first 20 columns in UTC: "Fri Nov 27 17:21:07 " (day padded as "Nov  7"). */
static void
format_arrival(uint64_t t, char out[21])
{
    static const char wday[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
    static const char mon[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    int64_t days = (int64_t)(t / 86400), y;
    unsigned secs = (unsigned)(t % 86400), m, d;

    civil_from_days(days, &y, &m, &d);
    snprintf(out, 21, "%s %s %2u %02u:%02u:%02u ", wday[days % 7], mon[m - 1], d, secs / 3600,
             secs / 60 % 60, secs % 60);
}

/* Envelope text is printed with control octets as '?': no terminal escapes from a spool. */
static void
put_text(FILE *out, struct slice s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];

        fputc(c < 0x20 || c == 0x7f ? '?' : c, out);
    }
}

void
spool_print_queue(const struct spool_index *idx, FILE *out)
{
    uint64_t total = 0;

    if (idx->nmsg == 0) {
        fputs("Mail queue is empty\n", out);
        return;
    }
    fputs("-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n", out);
    for (size_t i = 0; i < idx->nmsg; i++) {
        const struct envelope *e = &idx->msg[i].env;
        char qid[QID_LEN + 1], when[21];
        struct slice sender = env_get(e, e->sender);

        qid_format(e->id, qid);
        format_arrival(e->arrival, when);
        fprintf(out, "%-16s %8" PRIu64 " %s ", qid, e->body_len, when);
        put_text(out, sender.len > 0 ? sender : SLICE_LIT("MAILER-DAEMON"));
        fputc('\n', out);
        for (uint32_t k = 0; k < e->nrcpt; k++) {
            if (idx->msg[i].rcpt_done != NULL && idx->msg[i].rcpt_done[k])
                continue; /* finished: not in the queue any more */
            fprintf(out, "%47s", "");
            put_text(out, env_get(e, e->rcpt[k].addr));
            fputc('\n', out);
        }
        fputc('\n', out);
        total += e->body_len;
    }
    fprintf(out, "-- %" PRIu64 " Kbytes in %zu Request%s.\n", (total + 1023) / 1024, idx->nmsg,
            idx->nmsg == 1 ? "" : "s");
}
