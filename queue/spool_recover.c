/*
 * spool_recover.c: rebuild the index of pending messages from a spool folder,
 * and read a message's body back.
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
 * valid DATA record of the same id and length in the same segment, and no
 * segment holds a DONE record for its id. The writer puts the MSG record in
 * the same write as the last DATA record and answers 250 only after
 * fdatasync, so an incomplete message was never acknowledged.
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

/* ---- scan state ---- */

struct data_ref {
    uint64_t off; /* of the DATA record's header */
    uint64_t id;
    uint32_t len;
};

struct cand {
    struct spool_msg m;
    size_t seq;       /* discovery order: ties keep the first copy */
    uint64_t bad_ext; /* offset of the first extent that did not check, or UINT64_MAX */
};

struct scan {
    const char *dir;
    spool_log_fn *log;
    void *arg;
    struct spool_index *idx;
    struct cand *c; /* every decoded MSG record */
    size_t nc, ccap;
    uint64_t *done; /* ids of DONE records */
    size_t ndone, donecap;
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

/* A valid record at off > 0 of a segment with this seed: file it by type. 0 or -ENOMEM. */
static int
scan_record(struct scan *s, const char *name, uint64_t seg_id, uint64_t seed, uint64_t off,
            const struct spool_rec_hdr *h, const char *payload)
{
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
        np = grow(s->done, &s->donecap, s->ndone + 1, sizeof(*s->done));
        if (np == NULL)
            return -ENOMEM;
        s->done = np;
        s->done[s->ndone++] = h->id;
        return 0;
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
    c->m.seg_id = seg_id;
    c->m.seed = seed;
    c->seq = s->nc;
    c->bad_ext = UINT64_MAX;
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
 * Read the SEG record at offset 0 of a non-empty segment: 1 with *seed and
 * *off (the offset just past the record) when it is valid; 0 when it is
 * missing or bad, logged and counted; or -errno.
 */
static int
seg_read_header(struct scan *s, struct seg_reader *r, const char *name, uint64_t *seed,
                uint64_t *off)
{
    struct spool_seg_info info;
    struct spool_rec_hdr h;
    const char *payload;
    int rc;

    if (r->size >= SPOOL_HDR_SIZE) {
        rc = seg_record_at(r, 0, 0, &h, &payload);
        if (rc < 0)
            return rc;
        if (rc == 1 && spool_seg_decode(payload, h.len, &info) == 0) {
            see_id(s, h.id);
            see_id(s, info.seg_id);
            *seed = info.seed;
            *off = spool_rec_size(h.len);
            return 1;
        }
    }
    s->idx->bad_segments++;
    slog(s, "spool: %s/%s: no valid segment header, %" PRIu64 " octets not read", s->dir, name,
         r->size);
    return 0;
}

static int
scan_segment(struct scan *s, int dfd, const char *name, uint64_t seg_id)
{
    struct seg_reader r = { .fd = -1 };
    uint64_t off = 0, bad = UINT64_MAX, tail = 0, seed = 0;
    size_t first = s->nc;
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
    s->idx->nsegments++;
    s->idx->spool_bytes += r.size;
    see_id(s, seg_id);
    if (r.size == 0)
        goto out; /* created, never written: nothing lost */
    (void)posix_fadvise(r.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    s->ndata = 0;
    rc = seg_read_header(s, &r, name, &seed, &off);
    if (rc <= 0)
        goto out;

    /* off passes size when the last record's padding is missing */
    while (off < r.size && r.size - off >= SPOOL_HDR_SIZE) {
        struct spool_rec_hdr h;
        const char *payload;

        rc = seg_record_at(&r, off, seed, &h, &payload);
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
        rc = scan_record(s, name, seg_id, seed, off, &h, payload);
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

/* "seg-<16 hex>.rms" exactly; anything else in the folder is not ours to read. */
static bool
parse_seg_name(const char *name, uint64_t *id)
{
    char hex[QID_LEN + 1];

    if (strlen(name) != SEG_NAME_LEN || memcmp(name, "seg-", 4) != 0 ||
        memcmp(name + 4 + QID_LEN, ".rms", 4) != 0)
        return false;
    memcpy(hex, name + 4, QID_LEN);
    hex[QID_LEN] = '\0';
    return qid_parse(hex, id);
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
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int
cmp_cand(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;

    if (x->m.env.id != y->m.env.id)
        return x->m.env.id < y->m.env.id ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool
is_done(const struct scan *s, uint64_t id)
{
    return s->ndone > 0 && bsearch(&id, s->done, s->ndone, sizeof(*s->done), cmp_u64) != NULL;
}

/*
 * Turn the candidates into the index: per id, drop it if a DONE record names
 * it, else keep the first complete copy (a message may be written twice, e.g.
 * by a compaction interrupted by a crash), else count it incomplete.
 */
static int
build_index(struct scan *s)
{
    struct spool_index *idx = s->idx;
    size_t i = 0;

    /* qsort() and bsearch() want a non-null base even for 0 elements */
    if (s->ndone > 1)
        qsort(s->done, s->ndone, sizeof(*s->done), cmp_u64);
    if (s->nc > 1)
        qsort(s->c, s->nc, sizeof(*s->c), cmp_cand);
    while (i < s->nc) {
        uint64_t id = s->c[i].m.env.id;
        size_t j = i, keep = SIZE_MAX;

        while (j < s->nc && s->c[j].m.env.id == id) {
            if (keep == SIZE_MAX && s->c[j].bad_ext == UINT64_MAX)
                keep = j;
            j++;
        }
        if (is_done(s, id)) {
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
        } else {
            void *np = grow(idx->msg, &idx->cap, idx->nmsg + 1, sizeof(*idx->msg));

            if (np == NULL)
                return -ENOMEM;
            idx->msg = np;
            idx->msg[idx->nmsg++] = s->c[keep].m; /* ownership moves to the index */
            memset(&s->c[keep].m, 0, sizeof(s->c[keep].m));
        }
        for (size_t k = i; k < j; k++) {
            if (k != keep)
                cand_free(&s->c[k]);
        }
        i = j;
    }
    s->nc = 0;
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
    }
    free(idx->msg);
    memset(idx, 0, sizeof(*idx));
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
