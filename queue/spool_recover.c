/*
 * spool_recover.c: rebuild the index of pending messages and the list of
 * segments from a spool folder, read a message's body back, and unlink a
 * segment.
 *
 * Blocking file I/O (pread through a window, no mmap: an I/O error must be an
 * -EIO, not a SIGBUS); start-up and the `ringmail queue` tools only, never a
 * reactor. The index and everything in it belong to the caller, freed with
 * spool_index_free().
 *
 * Scan: a segment must start with a valid SEG record (checksum seed 0); its
 * seed then checks every other record of the file (spool.h, "Keyed
 * checksums"). A non-empty segment without one is logged, counted in
 * bad_segments and not read further: none of its records can be trusted. An
 * empty segment was created and never written, and is no error.
 *
 * Records are then read from the end of the SEG record on. A record that does
 * not check (header, bounds, a SEG type, checksum) opens a bad run; the scan
 * moves on 8 octets at a time until a record checks again. A bad run that ends at a
 * valid record is a bad record (writes completed out of order, or damage); a
 * bad run that reaches the end of the file is a torn tail. Bad runs are
 * logged once each, not once per 8 octets.
 *
 * A message is pending when its MSG record checks, each of its extents is a
 * valid DATA record of the same id and length in the same segment, and the
 * DONE records of its id (from every segment, merged) neither include a
 * whole-message one nor list every recipient. The writer puts the MSG record
 * in the same write as the last DATA record and answers 250 only after
 * fdatasync, so an incomplete message was never acknowledged.
 *
 * DONE records are kept as one entry per recipient index (or one for a whole
 * record), sorted by id, and merged per message once every segment is read,
 * since a message's DONE records may come before or after its MSG record in
 * scan order. The same pass notes, for each segment holding DONE records of
 * a message, the segments holding complete copies of it; spool_seg.keep is
 * then the least fixed point of "has pending messages, or holds DONE records
 * of a message with a copy in a kept segment".
 */
#include "queue/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/compiler.h"

#define SEG_WINDOW   (1u << 20) /* octets read at a time */
#define SEG_NAME_LEN (4 + QID_LEN + 4)
#define SLOG_MAX     512

/* Grow an array to hold need elements; the new pointer, or NULL (old one intact). */
static void *
grow(void *p, size_t *cap, size_t need, size_t elem)
{
    size_t n = *cap ? *cap : 16;
    void *np;

    if (need <= *cap)
        return p;
    while (n < need)
        n *= 2;
    np = realloc(p, n * elem);
    if (np != NULL)
        *cap = n;
    return np;
}

/* ---- reading a segment through a window ---- */

struct seg_reader {
    int fd;
    uint64_t size; /* at open: the scan never looks past it */
    char *buf;
    size_t cap;
    uint64_t boff; /* file offset of buf[0] */
    size_t blen;   /* octets of buf that hold file data */
};

/*
 * Make [off, off + n) resident (the caller checked off + n <= size) and point
 * *out at it; valid until the next call. 0 or -errno.
 */
static int
seg_view(struct seg_reader *r, uint64_t off, size_t n, const char **out)
{
    size_t want, got = 0;

    if (off >= r->boff && off - r->boff <= r->blen && n <= r->blen - (off - r->boff)) {
        *out = r->buf + (off - r->boff);
        return 0;
    }
    want = MAX(n, (size_t)SEG_WINDOW);
    if (want > r->size - off)
        want = (size_t)(r->size - off);
    if (want > r->cap) {
        free(r->buf);
        r->blen = 0;
        r->cap = 0;
        r->buf = malloc(want);
        if (r->buf == NULL)
            return -ENOMEM;
        r->cap = want;
    }
    r->blen = 0;
    while (got < want) {
        ssize_t k = pread(r->fd, r->buf + got, want - got, (off_t)(off + got));

        if (k == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO; /* shorter than fstat() said: truncated under us */
        got += (size_t)k;
    }
    r->boff = off;
    r->blen = got;
    *out = r->buf;
    return 0;
}

/*
 * Check the record at off with the segment's seed (0 for the SEG record at
 * offset 0): 1 and *h, *payload (valid until the next seg_view()) when it is
 * valid, 0 when not, or -errno.
 */
static int
seg_record_at(struct seg_reader *r, uint64_t off, uint64_t seed, struct spool_rec_hdr *h,
              const char **payload)
{
    const char *p;
    int rc;

    rc = seg_view(r, off, SPOOL_HDR_SIZE, &p);
    if (rc < 0)
        return rc;
    /* resync steps through whole bodies 8 octets at a time: reject on the magic first */
    if (memcmp(p, "RMSP", 4) != 0)
        return 0;
    if (!spool_rec_hdr_check(p, h) || h->len > r->size - off - SPOOL_HDR_SIZE)
        return 0;
    /* sealed with the public seed 0, a SEG record is trusted only at offset 0: no body is there */
    if ((h->type == SPOOL_REC_SEG) != (off == 0))
        return 0;
    rc = seg_view(r, off, SPOOL_HDR_SIZE + h->len, &p);
    if (rc < 0)
        return rc;
    if (!spool_rec_verify(p, SPOOL_HDR_SIZE + h->len, seed, h))
        return 0;
    *payload = p + SPOOL_HDR_SIZE;
    return 1;
}

static inline uint32_t
le32_at(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;

    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

/* ---- scan state ---- */

/* One recipient index of a DONE record, or a whole-message DONE record. */
struct done_ref {
    uint64_t id;
    uint32_t rcpt; /* index into the message's recipients; 0 when whole */
    uint32_t seg;  /* the segment holding the record: index in spool_index.seg */
    bool whole;
};

/* Segment `from` must stay while segment `to` stays: it holds DONE records of a message with a
   complete copy in `to`. Indices in spool_index.seg. */
struct keep_edge {
    uint32_t from, to;
};

struct data_ref {
    uint64_t off; /* of the DATA record's header */
    uint64_t id;
    uint32_t len;
};

struct cand {
    struct spool_msg m;
    uint32_t seg;     /* index in spool_index.seg */
    size_t seq;       /* discovery order: ties keep the first copy */
    bool incomplete;  /* an extent did not check */
    uint64_t bad_ext; /* offset of the first one (any value: UINT64_MAX is no sentinel) */
};

struct scan {
    const char *dir;
    spool_log_fn *log;
    void *arg;
    struct spool_index *idx;
    struct cand *c; /* every decoded MSG record */
    size_t nc, ccap;
    struct done_ref *done; /* every DONE record's entries */
    size_t ndone, donecap;
    struct keep_edge *edge;
    size_t nedge, edgecap;
    uint64_t oor;    /* recipient indices out of range, ignored */
    uint64_t oor_id; /* the first one: message, index and recipients */
    uint32_t oor_rcpt, oor_nrcpt;
    struct data_ref *data; /* DATA records of the segment being scanned, by offset */
    size_t ndata, datacap;
};

static void slog(const struct scan *s, const char *fmt, ...) PRINTF(2, 3);

static void
slog(const struct scan *s, const char *fmt, ...)
{
    char line[SLOG_MAX];
    va_list ap;

    if (s->log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    s->log(s->arg, line);
}

static void
see_id(struct scan *s, uint64_t id)
{
    if (id > s->idx->max_id)
        s->idx->max_id = id;
}

static void
cand_free(struct cand *c)
{
    env_free(&c->m.env);
    free(c->m.ext);
    c->m.ext = NULL;
}

/* A DONE record: one entry per recipient index, or one whole entry. 0 or -ENOMEM. */
static int
scan_done(struct scan *s, const char *name, uint32_t seg, uint64_t off,
          const struct spool_rec_hdr *h, const char *payload)
{
    size_t n = h->len / 4;
    void *np;

    if (h->len % 4 != 0) {
        /* the checksum holds, the content does not: a writer bug or another format */
        s->idx->bad_records++;
        slog(s,
             "spool: %s/%s: DONE record at offset %" PRIu64 " has a bad length (%" PRIu32
             "), skipped",
             s->dir, name, off, h->len);
        return 0;
    }
    np = grow(s->done, &s->donecap, s->ndone + MAX(n, (size_t)1), sizeof(*s->done));
    if (np == NULL)
        return -ENOMEM;
    s->done = np;
    if (n == 0) {
        s->done[s->ndone++] = (struct done_ref){ .id = h->id, .seg = seg, .whole = true };
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        s->done[s->ndone++] =
            (struct done_ref){ .id = h->id, .rcpt = le32_at(payload + i * 4), .seg = seg };
    }
    return 0;
}

/* A valid record at off > 0 of segment seg (index in idx->seg): file it by type. 0 or -ENOMEM. */
static int
scan_record(struct scan *s, const char *name, uint32_t seg, uint64_t off,
            const struct spool_rec_hdr *h, const char *payload)
{
    const struct spool_seg *sg = &s->idx->seg[seg];
    struct cand *c;
    void *np;
    int rc;

    see_id(s, h->id);
    switch ((enum spool_rec_type)h->type) {
    case SPOOL_REC_SEG:
        return 0; /* seg_record_at() takes one at offset 0 only, for seg_read_header() */
    case SPOOL_REC_DATA:
        np = grow(s->data, &s->datacap, s->ndata + 1, sizeof(*s->data));
        if (np == NULL)
            return -ENOMEM;
        s->data = np;
        s->data[s->ndata++] = (struct data_ref){ off, h->id, h->len };
        return 0;
    case SPOOL_REC_DONE:
        return scan_done(s, name, seg, off, h, payload);
    case SPOOL_REC_MSG:
        break;
    }
    np = grow(s->c, &s->ccap, s->nc + 1, sizeof(*s->c));
    if (np == NULL)
        return -ENOMEM;
    s->c = np;
    c = &s->c[s->nc];
    memset(c, 0, sizeof(*c));
    rc = spool_msg_decode(payload, h->len, &c->m.env, &c->m.ext, &c->m.nextent);
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0 || c->m.env.id != h->id) {
        /* the checksum holds, the content does not: a writer bug or another format */
        if (rc == 0)
            cand_free(c);
        s->idx->bad_records++;
        slog(s, "spool: %s/%s: MSG record at offset %" PRIu64 " does not decode, skipped", s->dir,
             name, off);
        return 0;
    }
    c->m.seg_id = sg->seg_id;
    c->m.seed = sg->seed;
    c->seg = seg;
    c->seq = s->nc;
    c->incomplete = false;
    c->bad_ext = 0;
    s->nc++;
    return 0;
}

static const struct data_ref *
data_find(const struct scan *s, uint64_t off)
{
    size_t lo = 0, hi = s->ndata;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->data[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->ndata && s->data[lo].off == off ? &s->data[lo] : NULL;
}

/* Check the extents of the messages found in this segment against its DATA records. */
static void
check_extents(struct scan *s, size_t first)
{
    for (size_t i = first; i < s->nc; i++) {
        struct cand *c = &s->c[i];

        for (unsigned k = 0; k < c->m.nextent; k++) {
            const struct data_ref *d = data_find(s, c->m.ext[k].off);

            if (d == NULL || d->id != c->m.env.id || d->len != c->m.ext[k].len) {
                c->incomplete = true;
                c->bad_ext = c->m.ext[k].off;
                break;
            }
        }
    }
}

static void
close_bad_run(struct scan *s, const char *name, uint64_t start, uint64_t end)
{
    s->idx->bad_records++;
    slog(s,
         "spool: %s/%s: bad record at offset %" PRIu64 ", resynchronising (%" PRIu64
         " octets skipped)",
         s->dir, name, start, end - start);
}

/*
 * Read the SEG record at offset 0 of a non-empty segment: 1 with *info and
 * *off (the offset just past the record) when it is valid; 0 when it is
 * missing or bad, logged and counted; or -errno.
 */
static int
seg_read_header(struct scan *s, struct seg_reader *r, const char *name, struct spool_seg_info *info,
                uint64_t *off)
{
    struct spool_rec_hdr h;
    const char *payload;
    int rc;

    if (r->size >= SPOOL_HDR_SIZE) {
        rc = seg_record_at(r, 0, 0, &h, &payload);
        if (rc < 0)
            return rc;
        if (rc == 1 && spool_seg_decode(payload, h.len, info) == 0) {
            see_id(s, h.id);
            see_id(s, info->seg_id);
            *off = spool_rec_size(h.len);
            return 1;
        }
    }
    s->idx->bad_segments++;
    slog(s, "spool: %s/%s: no valid segment header, %" PRIu64 " octets not read", s->dir, name,
         r->size);
    return 0;
}

/* Scan one segment file and list it in idx->seg (which has room for it). 0 or -errno. */
static int
scan_segment(struct scan *s, int dfd, const char *name, uint64_t seg_id)
{
    struct seg_reader r = { .fd = -1 };
    uint64_t off = 0, bad = UINT64_MAX, tail = 0;
    size_t first = s->nc;
    struct spool_seg_info info;
    struct spool_seg *sg;
    uint32_t seg;
    struct stat st;
    int rc = 0;

    r.fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (r.fd == -1) {
        /* freed (unlinked) between readdir() and here: nothing left in it */
        return errno == ENOENT ? 0 : -errno;
    }
    if (fstat(r.fd, &st) == -1) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode))
        goto out;
    r.size = (uint64_t)st.st_size;
    seg = (uint32_t)s->idx->nseg++;
    sg = &s->idx->seg[seg];
    *sg = (struct spool_seg){ .seg_id = seg_id, .size = r.size };
    s->idx->nsegments++;
    s->idx->spool_bytes += r.size;
    see_id(s, seg_id);
    if (r.size == 0)
        goto out; /* created, never written: nothing lost */
    (void)posix_fadvise(r.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    s->ndata = 0;
    rc = seg_read_header(s, &r, name, &info, &off);
    if (rc <= 0) {
        sg->bad = rc == 0;
        goto out;
    }
    sg->reactor = info.reactor;
    sg->seed = info.seed;

    /* off passes size when the last record's padding is missing */
    while (off < r.size && r.size - off >= SPOOL_HDR_SIZE) {
        struct spool_rec_hdr h;
        const char *payload;

        rc = seg_record_at(&r, off, sg->seed, &h, &payload);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            if (bad == UINT64_MAX)
                bad = off;
            off += SPOOL_ALIGN;
            continue;
        }
        if (bad != UINT64_MAX) {
            close_bad_run(s, name, bad, off);
            bad = UINT64_MAX;
        }
        rc = scan_record(s, name, seg, off, &h, payload);
        if (rc < 0)
            goto out;
        off += spool_rec_size(h.len);
    }
    rc = 0;
    if (bad != UINT64_MAX)
        tail = r.size - bad;
    else if (off < r.size)
        tail = r.size - off; /* less than a header after the last record */
    if (tail > 0) {
        s->idx->torn_bytes += tail;
        slog(s, "spool: %s/%s: torn tail of %" PRIu64 " octets discarded", s->dir, name, tail);
    }
    check_extents(s, first);

out:
    free(r.buf);
    close(r.fd);
    return rc;
}

/* ---- the folder ---- */

struct seg_name {
    uint64_t id;
    char name[SEG_NAME_LEN + 1];
};

/*
 * "seg-<16 hex>.rms" exactly as spool_seg_name() writes it (upper case);
 * anything else in the folder is not ours to read. Lower-case hex would name
 * a second file for the same seg_id, one that spool_read_body() and
 * spool_seg_unlink() could never open.
 */
static bool
parse_seg_name(const char *name, uint64_t *id)
{
    char hex[QID_LEN + 1], canon[QID_LEN + 1];

    if (strlen(name) != SEG_NAME_LEN || memcmp(name, "seg-", 4) != 0 ||
        memcmp(name + 4 + QID_LEN, ".rms", 4) != 0)
        return false;
    memcpy(hex, name + 4, QID_LEN);
    hex[QID_LEN] = '\0';
    if (!qid_parse(hex, id))
        return false;
    qid_format(*id, canon);
    return memcmp(hex, canon, QID_LEN) == 0;
}

static int
cmp_seg_name(const void *a, const void *b)
{
    const struct seg_name *x = a, *y = b;

    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int
cmp_done(const void *a, const void *b)
{
    const struct done_ref *x = a, *y = b;

    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (x->seg != y->seg)
        return x->seg < y->seg ? -1 : 1;
    return x->rcpt < y->rcpt ? -1 : x->rcpt > y->rcpt;
}

static int
cmp_edge(const void *a, const void *b)
{
    const struct keep_edge *x = a, *y = b;

    if (x->from != y->from)
        return x->from < y->from ? -1 : 1;
    return x->to < y->to ? -1 : x->to > y->to;
}

static int
cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;

    if (x->m.env.id != y->m.env.id)
        return x->m.env.id < y->m.env.id ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The first DONE entry of id (s->done sorted by id), or s->ndone. */
static size_t
done_first(const struct scan *s, uint64_t id)
{
    size_t lo = 0, hi = s->ndone;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->done[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * Merge the DONE entries d[0..n) of message env: 1 when it is finished (a
 * whole entry, or every recipient listed; a message without recipients is
 * finished by any DONE record), else 0 with *marks (env->nrcpt entries, NULL
 * when none is listed), or -ENOMEM. Out-of-range indices are counted and the
 * first one remembered, for one log line per recovery.
 */
static int
done_merge(struct scan *s, const struct envelope *env, const struct done_ref *d, size_t n,
           uint8_t **marks)
{
    uint8_t *m = NULL;
    uint32_t covered = 0;

    *marks = NULL;
    if (n == 0)
        return 0;
    for (size_t k = 0; k < n; k++) {
        if (d[k].whole)
            return 1;
    }
    if (env->nrcpt > 0) {
        m = calloc(env->nrcpt, sizeof(*m));
        if (m == NULL)
            return -ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        if (d[k].rcpt >= env->nrcpt) {
            if (s->oor++ == 0) {
                s->oor_id = env->id;
                s->oor_rcpt = d[k].rcpt;
                s->oor_nrcpt = env->nrcpt;
            }
        } else if (m[d[k].rcpt] == 0) {
            m[d[k].rcpt] = 1;
            covered++;
        }
    }
    if (covered == env->nrcpt || covered == 0) {
        free(m);
        return covered == env->nrcpt;
    }
    *marks = m;
    return 0;
}

/*
 * The DONE entries d[0..n) of one id (sorted by segment) and its candidates
 * c[0..nc): each segment holding DONE entries must stay while a segment
 * holding a complete copy does. 0 or -ENOMEM.
 */
static int
add_keep_edges(struct scan *s, const struct done_ref *d, size_t n, const struct cand *c, size_t nc)
{
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && d[k].seg == d[k - 1].seg)
            continue;
        for (size_t i = 0; i < nc; i++) {
            void *np;

            if (c[i].incomplete || c[i].seg == d[k].seg)
                continue; /* an incomplete copy never comes back; one segment goes as a whole */
            np = grow(s->edge, &s->edgecap, s->nedge + 1, sizeof(*s->edge));
            if (np == NULL)
                return -ENOMEM;
            s->edge = np;
            s->edge[s->nedge++] = (struct keep_edge){ d[k].seg, c[i].seg };
        }
    }
    return 0;
}

/* spool_seg.keep: pending > 0, or DONE records of a message with a copy in a kept segment. */
static void
seg_keep(struct scan *s)
{
    struct spool_seg *seg = s->idx->seg;
    size_t n = 0;
    bool changed = true;

    for (size_t i = 0; i < s->idx->nseg; i++)
        seg[i].keep = seg[i].pending > 0;
    if (s->nedge > 1)
        qsort(s->edge, s->nedge, sizeof(*s->edge), cmp_edge);
    for (size_t i = 0; i < s->nedge; i++) { /* unique: at most nseg^2 edges are left */
        if (n == 0 || cmp_edge(&s->edge[n - 1], &s->edge[i]) != 0)
            s->edge[n++] = s->edge[i];
    }
    s->nedge = n;
    /* each round that changes something keeps one more segment: at most nseg rounds */
    while (changed) {
        changed = false;
        for (size_t i = 0; i < s->nedge; i++) {
            if (seg[s->edge[i].to].keep && !seg[s->edge[i].from].keep) {
                seg[s->edge[i].from].keep = true;
                changed = true;
            }
        }
    }
}

/*
 * Turn the candidates into the index: per id, merge its DONE records; drop it
 * when they finish it, else keep the first complete copy (a message may be
 * written twice, e.g. by a compaction interrupted by a crash) with its
 * finished recipients marked, else count it incomplete. Counts each kept
 * copy in its segment's pending.
 */
static int
build_index(struct scan *s)
{
    struct spool_index *idx = s->idx;
    size_t i = 0;

    /* qsort() wants a non-null base even for 0 elements */
    if (s->ndone > 1)
        qsort(s->done, s->ndone, sizeof(*s->done), cmp_done);
    if (s->nc > 1)
        qsort(s->c, s->nc, sizeof(*s->c), cmp_cand);
    while (i < s->nc) {
        uint64_t id = s->c[i].m.env.id;
        size_t j = i, keep = SIZE_MAX, d0, d1;
        const struct done_ref *dref;
        uint8_t *marks;
        int fin, rc;

        while (j < s->nc && s->c[j].m.env.id == id) {
            if (keep == SIZE_MAX && !s->c[j].incomplete)
                keep = j;
            j++;
        }
        d0 = d1 = done_first(s, id);
        while (d1 < s->ndone && s->done[d1].id == id)
            d1++;
        /* s->done is NULL when no segment holds a DONE record, and NULL + 0 is undefined */
        dref = d1 > d0 ? s->done + d0 : NULL;
        /* every copy holds the same envelope: any one gives the recipient count */
        fin = done_merge(s, &s->c[keep != SIZE_MAX ? keep : i].m.env, dref, d1 - d0, &marks);
        if (fin < 0)
            return fin;
        rc = add_keep_edges(s, dref, d1 - d0, s->c + i, j - i);
        if (rc < 0) {
            free(marks);
            return rc;
        }
        if (fin == 1) {
            idx->done++;
            keep = SIZE_MAX;
        } else if (keep == SIZE_MAX) {
            char seg[SEG_NAME_LEN + 1];

            idx->incomplete++;
            spool_seg_name(s->c[i].m.seg_id, seg, sizeof(seg));
            slog(s,
                 "spool: %s/%s: message %s incomplete (DATA record at offset %" PRIu64
                 " missing or bad), discarded",
                 s->dir, seg, s->c[i].m.env.qid, s->c[i].bad_ext);
            free(marks);
        } else {
            void *np = grow(idx->msg, &idx->cap, idx->nmsg + 1, sizeof(*idx->msg));

            if (np == NULL) {
                free(marks);
                return -ENOMEM;
            }
            idx->msg = np;
            s->c[keep].m.rcpt_done = marks;
            idx->msg[idx->nmsg++] = s->c[keep].m; /* ownership moves to the index */
            memset(&s->c[keep].m, 0, sizeof(s->c[keep].m));
            idx->seg[s->c[keep].seg].pending++;
        }
        for (size_t k = i; k < j; k++) {
            if (k != keep)
                cand_free(&s->c[k]);
        }
        i = j;
    }
    s->nc = 0;
    if (s->oor > 0) {
        char qid[QID_LEN + 1];

        qid_format(s->oor_id, qid);
        slog(s,
             "spool: %s: %" PRIu64 " recipient index(es) in DONE records out of range, ignored"
             " (first: message %s index %" PRIu32 " of %" PRIu32 " recipients)",
             s->dir, s->oor, qid, s->oor_rcpt, s->oor_nrcpt);
    }
    seg_keep(s);
    return 0;
}

int
spool_recover(const char *dir, struct spool_index *idx, spool_log_fn *log, void *arg)
{
    struct scan s = { .dir = dir, .log = log, .arg = arg, .idx = idx };
    struct seg_name *names = NULL;
    size_t nnames = 0, namecap = 0;
    struct dirent *de;
    DIR *d;
    int rc = 0;

    memset(idx, 0, sizeof(*idx));
    d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    for (;;) {
        uint64_t id;
        void *np;

        errno = 0;
        de = readdir(d);
        if (de == NULL) {
            rc = -errno; /* 0 at the end */
            break;
        }
        if (!parse_seg_name(de->d_name, &id))
            continue;
        np = grow(names, &namecap, nnames + 1, sizeof(*names));
        if (np == NULL) {
            rc = -ENOMEM;
            break;
        }
        names = np;
        names[nnames].id = id;
        memcpy(names[nnames].name, de->d_name, SEG_NAME_LEN + 1);
        nnames++;
    }
    if (rc < 0)
        goto out;
    /* segment order makes the scan (and its log) the same on every run */
    if (nnames > 1)
        qsort(names, nnames, sizeof(*names), cmp_seg_name);
    if (nnames > 0) {
        idx->seg = calloc(nnames, sizeof(*idx->seg)); /* names sorted: so is the list */
        if (idx->seg == NULL) {
            rc = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < nnames; i++) {
        rc = scan_segment(&s, dirfd(d), names[i].name, names[i].id);
        if (rc < 0)
            goto out;
    }
    rc = build_index(&s);

out:
    for (size_t i = 0; i < s.nc; i++)
        cand_free(&s.c[i]);
    free(s.c);
    free(s.done);
    free(s.edge);
    free(s.data);
    free(names);
    closedir(d);
    if (rc < 0)
        spool_index_free(idx);
    return rc;
}

void
spool_index_free(struct spool_index *idx)
{
    for (size_t i = 0; i < idx->nmsg; i++) {
        env_free(&idx->msg[i].env);
        free(idx->msg[i].ext);
        free(idx->msg[i].rcpt_done);
    }
    free(idx->msg);
    free(idx->seg);
    memset(idx, 0, sizeof(*idx));
}

int
spool_seg_unlink(const char *dir, uint64_t seg_id)
{
    char name[SEG_NAME_LEN + 1];
    int dfd, rc = 0;

    spool_seg_name(seg_id, name, sizeof(name));
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd == -1)
        return -errno;
    if (unlinkat(dfd, name, 0) == -1)
        rc = -errno;
    else if (fsync(dfd) == -1)
        rc = -errno; /* the unlink may not survive a crash: the caller must not go on */
    close(dfd);
    return rc;
}

/* ---- reading a body back ---- */

static int
pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;

    while (got < n) {
        ssize_t k = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));

        if (k == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO; /* the record the index names is not there */
        got += (size_t)k;
    }
    return 0;
}

int
spool_read_body(const char *dir, const struct spool_msg *m, char **body, size_t *len)
{
    char path[4096], seg[SEG_NAME_LEN + 1];
    size_t total = 0, pos = 0;
    char *b = NULL;
    int fd, rc = 0;

    *body = NULL;
    *len = 0;
    for (unsigned i = 0; i < m->nextent; i++)
        total += m->ext[i].len;
    spool_seg_name(m->seg_id, seg, sizeof(seg));
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, seg) >= sizeof(path))
        return -ENAMETOOLONG;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return -errno;
    b = malloc(total ? total : 1);
    if (b == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < m->nextent; i++) {
        const struct spool_extent *e = &m->ext[i];
        char raw[SPOOL_HDR_SIZE];
        struct spool_rec_hdr h;
        struct iovec iov = { b + pos, e->len };

        rc = pread_full(fd, raw, sizeof(raw), e->off);
        if (rc == 0)
            rc = pread_full(fd, b + pos, e->len, e->off + SPOOL_HDR_SIZE);
        if (rc < 0)
            goto fail;
        if (!spool_rec_hdr_check(raw, &h) || h.type != SPOOL_REC_DATA || h.id != m->env.id ||
            h.len != e->len || spool_rec_csum(&h, m->seed, &iov, 1) != h.csum) {
            rc = -EIO;
            goto fail;
        }
        pos += e->len;
    }
    close(fd);
    *body = b;
    *len = total;
    return 0;

fail:
    free(b);
    close(fd);
    return rc;
}
