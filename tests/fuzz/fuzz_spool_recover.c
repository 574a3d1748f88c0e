/*
 * fuzz_spool_recover: spool recovery (queue/spool.h, queue/spool_recover.c)
 * on arbitrary segment octets.
 *
 * Each input is recovered three ways, in a spool folder made once per
 * process (fuzz_mkdtemp(): $TMPDIR, else /dev/shm, else /tmp; removed at exit):
 *   1. as it is, one segment file (seg-<16 HEX>.rms);
 *   2. resealed: every record header that checks at an 8-octet boundary gets
 *      the checksum its segment's seed gives it, so that mutated payloads
 *      (MSG envelopes and extents, DONE lists) reach the decoders and the
 *      merge instead of stopping at the keyed checksum;
 *   3. resealed and cut at a record boundary into two segments (the second
 *      gets a SEG record of its own), so that DONE records and MSG records
 *      meet across segments.
 * The seeds are segments written by the real server (tests/fuzz/README.md).
 *
 * Invariants: recovery returns 0 and never crashes; its counts add up (every
 * file listed once, by id, with its size; pending messages counted in their
 * segments, kept segments include every one with pending messages; bad
 * segments contribute nothing); pending messages are sorted by unique id, in
 * a good segment, with the segment's seed, every extent an 8-aligned DATA
 * record inside the file after the SEG record, spool_read_body() reading
 * exactly the extents back, rcpt_done either NULL or a proper mix; recovery
 * log lines are one line of printable text; spool_print_queue() lists the
 * index; and every MSG payload that decodes encodes back to the same octets.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/compiler.h"
#include "queue/spool.h"
#include "fuzz.h"

#define SEG_FIRST 1u /* seg-0000000000000001.rms, then ...02 */

static char dir[256];
static FILE *devnull;

struct seg_file {
    uint64_t id;
    const char *p;
    size_t len;
};

static void
seg_path(uint64_t id, char *out, size_t cap)
{
    char name[32];

    spool_seg_name(id, name, sizeof(name));
    snprintf(out, cap, "%s/%s", dir, name);
}

static void
cleanup(void)
{
    char path[320];

    for (unsigned i = 0; i < 2; i++) {
        seg_path(SEG_FIRST + i, path, sizeof(path));
        unlink(path);
    }
    rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_mkdtemp(dir, sizeof(dir), "spool");
    atexit(cleanup);
    devnull = fopen("/dev/null", "w");
    FUZZ_CHECK(devnull != NULL, "/dev/null: %s", strerror(errno));
    return 0;
}

static void
recovery_log(void *arg, const char *line)
{
    (void)arg;
    for (const char *p = line; *p != '\0'; p++)
        FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "octet %#x in log line %s",
                   (unsigned char)*p, line);
}

/* decode(p) == OK implies encode(decode(p)) == p: the MSG format is canonical. */
static void
check_msg_codec(const char *p, size_t len)
{
    struct envelope env;
    struct spool_extent *ext;
    unsigned n;
    char *out;
    size_t size;

    if (spool_msg_decode(p, len, &env, &ext, &n) != 0)
        return;
    size = spool_msg_payload_size(&env, n);
    FUZZ_CHECK(size == len, "a %zu-octet MSG payload decodes to one of %zu", len, size);
    out = malloc(size);
    FUZZ_CHECK(out != NULL, "out of memory");
    FUZZ_CHECK(spool_msg_encode(out, size, &env, ext, n) == size, "encode");
    FUZZ_CHECK(memcmp(out, p, len) == 0, "MSG payload does not encode back to itself");
    free(out);
    free(ext);
    env_free(&env);
}

/* Write a checksum in place: the header's own, with the seed given. */
static void
reseal(char *p, uint64_t seed, const struct spool_rec_hdr *h)
{
    struct iovec iov = { p + SPOOL_HDR_SIZE, h->len };
    uint64_t c = spool_rec_csum(h, seed, &iov, 1);

    for (int i = 0; i < 8; i++)
        p[24 + i] = (char)(c >> (8 * i));
}

/*
 * Reseal every record of buf[0..len) as recovery would walk it; returns the
 * offsets where records start (after the SEG record) in *starts, how many in
 * *nstarts. False when there is no SEG record at offset 0.
 */
static bool
reseal_all(char *buf, size_t len, size_t *starts, size_t *nstarts, size_t max)
{
    struct spool_rec_hdr h;
    struct spool_seg_info info;
    uint64_t seed = 0;
    size_t off;

    *nstarts = 0;
    if (len < SPOOL_HDR_SIZE || !spool_rec_hdr_check(buf, &h) || h.type != SPOOL_REC_SEG ||
        h.len > len - SPOOL_HDR_SIZE)
        return false;
    reseal(buf, 0, &h);
    if (spool_seg_decode(buf + SPOOL_HDR_SIZE, h.len, &info) == 0)
        seed = info.seed;
    off = spool_rec_size(h.len);
    while (off < len && len - off >= SPOOL_HDR_SIZE) {
        if (!spool_rec_hdr_check(buf + off, &h) || h.len > len - off - SPOOL_HDR_SIZE ||
            h.type == SPOOL_REC_SEG) {
            off += SPOOL_ALIGN;
            continue;
        }
        reseal(buf + off, seed, &h);
        if (h.type == SPOOL_REC_MSG)
            check_msg_codec(buf + off + SPOOL_HDR_SIZE, h.len);
        if (*nstarts < max)
            starts[(*nstarts)++] = off;
        off += spool_rec_size(h.len);
    }
    return true;
}

static void
check_index(const struct spool_index *idx, const struct seg_file *f, size_t nf)
{
    uint64_t bytes = 0, pending = 0;

    FUZZ_CHECK(idx->nseg == nf && idx->nsegments == nf, "%zu segments listed, %zu files", idx->nseg,
               nf);
    for (size_t i = 0; i < nf; i++) {
        const struct spool_seg *s = &idx->seg[i];

        bytes += f[i].len;
        FUZZ_CHECK(s->seg_id == f[i].id && s->size == f[i].len, "segment %zu listed wrongly", i);
        FUZZ_CHECK(!s->bad || (s->pending == 0 && s->seed == 0 && s->reactor == 0),
                   "a bad segment contributes");
        FUZZ_CHECK(s->pending == 0 || s->keep, "a segment with pending mail is not kept");
        FUZZ_CHECK(!(s->bad || f[i].len == 0) || s->seed == 0, "seed of an unread segment");
        pending += s->pending;
    }
    FUZZ_CHECK(idx->spool_bytes == bytes, "spool_bytes %llu, files %llu",
               (unsigned long long)idx->spool_bytes, (unsigned long long)bytes);
    FUZZ_CHECK(pending == idx->nmsg, "%llu pending in segments, %zu listed",
               (unsigned long long)pending, idx->nmsg);
    for (size_t i = 0; i < idx->nmsg; i++) {
        const struct spool_msg *m = &idx->msg[i];
        const struct spool_seg *s = NULL;
        uint64_t total = 0;
        char qid[QID_LEN + 1], *body = NULL;
        size_t blen = 0;
        int rc;

        FUZZ_CHECK(i == 0 || idx->msg[i - 1].env.id < m->env.id, "messages not sorted by id");
        FUZZ_CHECK(m->env.id <= idx->max_id, "id above max_id");
        qid_format(m->env.id, qid);
        FUZZ_CHECK(strcmp(qid, m->env.qid) == 0, "qid text %s for %s", m->env.qid, qid);
        for (size_t k = 0; k < idx->nseg; k++) {
            if (idx->seg[k].seg_id == m->seg_id)
                s = &idx->seg[k];
        }
        FUZZ_CHECK(s != NULL && !s->bad && s->seed == m->seed, "message in an unknown segment");
        for (unsigned k = 0; k < m->nextent; k++) {
            const struct spool_extent *e = &m->ext[k];

            FUZZ_CHECK(e->off % SPOOL_ALIGN == 0 && e->off >= spool_rec_size(SPOOL_SEG_PAYLOAD),
                       "extent at %llu", (unsigned long long)e->off);
            FUZZ_CHECK(e->off <= s->size && SPOOL_HDR_SIZE + (uint64_t)e->len <= s->size - e->off,
                       "extent %llu+%u outside the %llu-octet file", (unsigned long long)e->off,
                       e->len, (unsigned long long)s->size);
            total += e->len;
        }
        if (m->rcpt_done != NULL) {
            unsigned done = 0;

            for (uint32_t k = 0; k < m->env.nrcpt; k++) {
                FUZZ_CHECK(m->rcpt_done[k] <= 1, "rcpt_done value");
                done += m->rcpt_done[k];
            }
            FUZZ_CHECK(done > 0 && done < m->env.nrcpt, "rcpt_done with %u of %u", done,
                       m->env.nrcpt);
        }
        rc = spool_read_body(dir, m, &body, &blen);
        FUZZ_CHECK(rc == 0 && blen == total, "read_body: %d, %zu of %llu octets", rc, blen,
                   (unsigned long long)total);
        free(body);
    }
}

static void
recover(const struct seg_file *f, size_t nf)
{
    struct spool_index idx;
    char path[320];
    int rc;

    for (size_t i = 0; i < nf; i++) {
        FILE *fp;

        seg_path(f[i].id, path, sizeof(path));
        fp = fopen(path, "w");
        FUZZ_CHECK(fp != NULL, "%s: %s", path, strerror(errno));
        FUZZ_CHECK(f[i].len == 0 || fwrite(f[i].p, 1, f[i].len, fp) == f[i].len, "write");
        FUZZ_CHECK(fclose(fp) == 0, "close");
    }
    rc = spool_recover(dir, &idx, recovery_log, NULL);
    FUZZ_CHECK(rc == 0, "spool_recover: %d", rc);
    check_index(&idx, f, nf);
    spool_print_queue(&idx, devnull);
    spool_index_free(&idx);
    for (size_t i = 0; i < nf; i++) {
        seg_path(f[i].id, path, sizeof(path));
        unlink(path);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct seg_file f[2];
    size_t starts[4096], nstarts = 0;
    char *buf;

    /* 1. as it is */
    f[0] = (struct seg_file){ SEG_FIRST, (const char *)data, size };
    recover(f, 1);

    /* 2. resealed */
    buf = fuzz_dup(data, size);
    if (reseal_all(buf, size, starts, &nstarts, ARRAY_SIZE(starts))) {
        struct spool_rec_hdr h;
        size_t seg_len, cut = 0;

        f[0].p = buf;
        recover(f, 1);

        /* 3. cut in two at the record boundary nearest the middle */
        for (size_t i = 0; i < nstarts; i++) {
            if (cut == 0 || (starts[i] > size / 2 ? starts[i] - size / 2 : size / 2 - starts[i]) <
                                (cut > size / 2 ? cut - size / 2 : size / 2 - cut))
                cut = starts[i];
        }
        FUZZ_CHECK(spool_rec_hdr_check(buf, &h), "SEG header");
        seg_len = spool_rec_size(h.len);
        if (nstarts >= 2 && cut > 0 && seg_len <= size && cut >= seg_len) {
            size_t len2 = seg_len + (size - cut);
            char *second = malloc(len2);

            FUZZ_CHECK(second != NULL, "out of memory");
            /* the second segment: the same SEG record (same seed), then the tail */
            memcpy(second, buf, seg_len);
            memcpy(second + seg_len, buf + cut, size - cut);
            f[0].len = cut;
            f[1] = (struct seg_file){ SEG_FIRST + 1, second, len2 };
            recover(f, 2);
            free(second);
        }
    }
    free(buf);
    return 0;
}
