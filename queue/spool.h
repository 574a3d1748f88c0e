/*
 * spool.h: the on-disk format of ringmail's spool, and its recovery.
 *
 * The spool is a folder of append-only segment files, "seg-<16 hex>.rms",
 * one written by each reactor at a time. A segment is a sequence of records,
 * each 8-byte aligned:
 *
 *   struct spool_rec_hdr (32 octets, little-endian) | payload | zero padding to 8
 *
 *   SPOOL_REC_SEG   the first record of every segment, at offset 0 and nowhere else:
 *                   format version, reactor, creation time, and the segment's seed
 *   SPOOL_REC_DATA  a run of body octets of message `id` (a message has 1..n of them,
 *                   all in the same segment, written before its MSG record)
 *   SPOOL_REC_MSG   the commit record of message `id`: the envelope and the
 *                   list of its DATA records (offset, length). A message exists
 *                   once its MSG record is on disk with a valid checksum and
 *                   every DATA record it lists is valid.
 *   SPOOL_REC_DONE  completion of message `id`, in any segment (usually not the MSG
 *                   record's). Payload empty: the whole message is finished (delivered
 *                   or bounced). Otherwise a list of u32 recipient indices, little-endian,
 *                   count len / 4, into the MSG record's recipient list: those recipients
 *                   are finished. A len that is not a multiple of 4 makes it a bad record.
 *
 * Recovery merges every DONE record of an id from every segment: the message
 * is finished when one of them is whole, or when their indices cover every
 * recipient; otherwise it is pending, with the covered recipients marked
 * (spool_msg.rcpt_done). An index at or above the message's recipient count
 * is ignored (and logged once per recovery). Indices may repeat, within a
 * record or across records; the order of the records does not matter.
 *
 * A segment can be unlinked once nothing in it is still needed: no pending
 * message whose copy recovery lists is in it, and no DONE record in it names
 * a message with a complete copy in a segment that stays (unlinking it would
 * bring those recipients back). spool_seg.keep is that rule; see
 * spool_seg_unlink() for the order of unlinks.
 *
 * The checksum is XXH3-64 over the header (with csum = 0) and the payload.
 * Writes may complete out of order, so recovery never stops at a bad record:
 * it logs it and resynchronises at the next 8-byte boundary that holds a
 * valid record. A torn tail is therefore just bad records at the end.
 *
 * Keyed checksums. A DATA record's payload is a sender's message body, and a
 * body can hold octets that read as a whole record (header, payload, checksum)
 * at an 8-byte boundary. With a fixed hash anyone can compute that checksum,
 * so a resync that walks into a body after a torn write would accept forged
 * records: a DATA and MSG pair with any envelope, or DONE records for other
 * messages. So every record except the SEG record is checksummed with
 * XXH3-64 seeded by the segment's seed: 64 random bits drawn when the segment
 * is created (getrandom(), never 0), stored in its SEG payload, and never
 * sent, logged or shown anywhere else. A sender never sees the seed or any
 * checksum made with it, so a record forged inside a body verifies only by
 * guessing its checksum, one chance in 2^64. (XXH3 is no MAC; it need not be
 * one while nothing computed with the seed leaves the spool.)
 *
 * The SEG record is sealed with seed 0, since it is where the seed is read
 * from; it is trusted only at offset 0, which no body can reach. Recovery
 * reads it first and checks every other record of the file with its seed; a
 * segment without a valid SEG record at offset 0 is not read at all, and a
 * SEG record anywhere else is a bad record.
 *
 * Thread affinity: the encode/seal functions are pure and any thread may call
 * them; recovery does blocking file I/O and runs at start-up or in the
 * `ringmail queue` tools, never on a reactor.
 */
#ifndef RINGMAIL_QUEUE_SPOOL_H
#define RINGMAIL_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "core/envelope.h"

#define SPOOL_MAGIC    0x50534d52u /* "RMSP" little-endian */
#define SPOOL_VERSION  1
#define SPOOL_HDR_SIZE 32
#define SPOOL_ALIGN    8
#define SPOOL_MAX_REC  (64u << 20) /* no record payload is larger */

enum spool_rec_type {
    SPOOL_REC_SEG = 1,
    SPOOL_REC_DATA = 2,
    SPOOL_REC_MSG = 3,
    SPOOL_REC_DONE = 4,
};

struct spool_rec_hdr {
    uint32_t magic;
    uint8_t type;    /* enum spool_rec_type */
    uint8_t version; /* SPOOL_VERSION */
    uint16_t reserved;
    uint32_t len; /* payload octets, padding excluded */
    uint32_t reserved2;
    uint64_t id;   /* message id (queue id); segment id for SEG */
    uint64_t csum; /* XXH3-64, segment seed (0 for SEG), of header (csum = 0) + payload */
};
_Static_assert(sizeof(struct spool_rec_hdr) == SPOOL_HDR_SIZE, "spool header is 32 octets");

struct spool_extent {
    uint64_t off; /* offset of the DATA record's header in the segment */
    uint32_t len; /* payload octets of that record */
};

/* Octets a record with `payload` octets takes on disk (header and padding included). */
static inline size_t
spool_rec_size(size_t payload)
{
    return SPOOL_HDR_SIZE + ((payload + SPOOL_ALIGN - 1) & ~(size_t)(SPOOL_ALIGN - 1));
}

/* XXH3-64 seeded with seed (the segment's, or 0 for a SEG record) of the header with csum
   taken as 0, then the payload iovecs in order. Pure; any thread. */
uint64_t spool_rec_csum(const struct spool_rec_hdr *hdr, uint64_t seed, const struct iovec *payload,
                        int niov);

/*
 * Decode the 32 header octets at p and check the fields that need no payload:
 * magic, version, known type, len <= SPOOL_MAX_REC. Pure; any thread.
 */
bool spool_rec_hdr_check(const char *p, struct spool_rec_hdr *hdr);

/*
 * Check one record held in memory: p[0..avail) starts with a header, and the
 * record is valid when its magic, version and type are known, len <=
 * SPOOL_MAX_REC, header and payload fit in avail (padding need not), and the
 * checksum made with seed matches (the segment's seed; 0 for its SEG record).
 * On success *hdr is the decoded header and the payload is p + SPOOL_HDR_SIZE.
 * The record's type is not checked against the seed: the caller knows where
 * a SEG record may be. Pure; any thread.
 */
bool spool_rec_verify(const char *p, size_t avail, uint64_t seed, struct spool_rec_hdr *hdr);

/*
 * Fill the header at hdr for a record whose payload is the iovecs (in order,
 * padding not included) and compute its checksum. The caller writes the
 * header, the payload and spool_rec_size(len) - SPOOL_HDR_SIZE - len zero
 * octets of padding. seed is the seed of the segment the record goes into
 * (spool_seg_info.seed); only spool_seg_record() seals with 0.
 */
void spool_rec_seal(struct spool_rec_hdr *hdr, enum spool_rec_type type, uint64_t id, uint64_t seed,
                    const struct iovec *payload, int niov);

/* SEG payload, written by spool_seg_record(): what a new segment starts with. */
struct spool_seg_info {
    uint64_t seg_id;
    uint32_t reactor;
    uint64_t created; /* unix seconds */
    uint64_t seed;    /* from getrandom() when the segment is created; never 0, never logged */
};
/* Encode a whole SEG record (header, payload, padding) into out (>= 64 octets), its payload
   carrying info->seed and its own checksum made with seed 0; returns its size,
   spool_rec_size(SPOOL_SEG_PAYLOAD), or 0 if cap is too small. info->seed == 0 is a bug
   (BUG_ON): recovery would reject the segment. */
size_t spool_seg_record(char *out, size_t cap, const struct spool_seg_info *info);
#define SPOOL_SEG_PAYLOAD 32 /* seg_id u64, reactor u32, created u64, version u32, seed u64 */
/* Decode a SEG payload; 0, or -EINVAL when malformed, of another version or with seed 0. */
int spool_seg_decode(const char *p, size_t len, struct spool_seg_info *info);
/* Segment file name for seg_id: "seg-<16 hex>.rms" into out (>= 32 octets). */
void spool_seg_name(uint64_t seg_id, char *out, size_t cap);

/*
 * MSG payload: the envelope and its extents, little-endian, no padding:
 *
 *   u16 format (SPOOL_MSG_FORMAT)  u16 reserved (0)
 *   u64 id  u64 arrival  u64 body_len  u32 flags
 *   str client  str helo  str sender  str mail_params      str = u32 length + octets
 *   u32 nrcpt    nrcpt x (str addr, str params)
 *   u32 nextent  nextent x (u64 off, u32 len)
 *
 * The decoder rejects anything else: a short field, a count above the limits
 * below or above what the remaining octets can hold, trailing octets.
 */
#define SPOOL_MSG_FORMAT  1
#define SPOOL_MAX_RCPT    (1u << 20)
#define SPOOL_MAX_EXTENTS (1u << 22)
/* MSG payload size for env and nextent extents. */
size_t spool_msg_payload_size(const struct envelope *env, unsigned nextent);
/* Encode into out (cap >= spool_msg_payload_size()); returns the octets written, 0 if cap
   is too small. */
size_t spool_msg_encode(char *out, size_t cap, const struct envelope *env,
                        const struct spool_extent *ext, unsigned nextent);
/* Decode a MSG payload; env is initialised and owns its strings, *ext is
   malloc'd. 0, or -EINVAL for a malformed payload, -ENOMEM. */
int spool_msg_decode(const char *p, size_t len, struct envelope *env, struct spool_extent **ext,
                     unsigned *nextent);

/*
 * DONE record: encode a whole record (header, payload, padding) for message id
 * into out, sealed with seed (the seed of the segment it goes into; 0 is a
 * bug, BUG_ON: recovery would never accept it). nrcpt == 0 (rcpt may then be
 * NULL): the whole message is finished; otherwise rcpt[0..nrcpt) are the
 * indices of the finished recipients, nrcpt <= SPOOL_MAX_RCPT (BUG_ON).
 * Returns the record's size, spool_done_record_size(nrcpt), or 0 if cap is
 * too small. Pure; any thread.
 */
size_t spool_done_record(char *out, size_t cap, uint64_t id, uint64_t seed, const uint32_t *rcpt,
                         unsigned nrcpt);
/* Octets spool_done_record() writes for nrcpt indices (0: a whole-message record). */
size_t spool_done_record_size(unsigned nrcpt);

/* One message found by recovery. */
struct spool_msg {
    struct envelope env;
    uint64_t seg_id;
    uint64_t seed; /* the segment's seed, for spool_read_body(); never print it */
    struct spool_extent *ext;
    unsigned nextent;
    /* env.nrcpt entries, 1 = that recipient is finished (a DONE record lists it), 0 = still
       to deliver; NULL when none is finished. malloc'd, owned by the index, freed by
       spool_index_free(). A pending message never has every entry at 1. */
    uint8_t *rcpt_done;
};

/* One segment file of the folder, listed by recovery. */
struct spool_seg {
    uint64_t seg_id;  /* from the file name (spool_seg_name()) */
    uint32_t reactor; /* from its SEG record; 0 when bad or empty */
    uint64_t seed;    /* from its SEG record, to append to it; 0 when bad or empty; never print */
    uint64_t size;    /* octets, at recovery */
    uint32_t pending; /* messages of this segment still pending (the copies spool_index.msg
                         lists; a duplicate copy elsewhere is not counted) */
    bool bad;         /* no valid SEG header: nothing in it was read (an empty file is not bad) */
    /* Still needed: pending > 0, or it holds a DONE record for a message with a complete copy
       in a segment that is kept (unlinking it would bring finished recipients back). A
       segment with keep == false can be unlinked, bad ones included (nothing of them is
       read); pending == 0 alone is not enough. */
    bool keep;
};

struct spool_index {
    struct spool_msg *msg; /* pending messages, by id ascending */
    size_t nmsg, cap;
    struct spool_seg *seg; /* every segment file found (regular, canonical name), by seg_id */
    size_t nseg;
    uint64_t max_id; /* largest message or segment id seen, for unique ids after restart */
    uint64_t nsegments;
    uint64_t bad_segments; /* non-empty segments without a valid SEG record at 0: not read */
    uint64_t bad_records;  /* records skipped: bad checksum or header, MSG that does not decode,
                              DONE whose length is not a multiple of 4 */
    uint64_t torn_bytes;   /* octets skipped at segment tails */
    uint64_t incomplete;   /* MSG records whose DATA records were missing or bad */
    uint64_t done;         /* messages finished: a whole DONE record, or every recipient listed */
    uint64_t spool_bytes;  /* total segment octets */
};

/* Log callback for recovery findings (bad segment, torn tail, bad record): one line, no
   newline. */
typedef void spool_log_fn(void *arg, const char *line);

/*
 * Scan every segment in dir and rebuild the index of pending messages (with
 * their finished recipients) and the list of segments. A segment whose SEG
 * record is missing or bad is logged, counted in bad_segments, listed with
 * bad = true and contributes nothing (no message, no DONE record). Only
 * files named exactly as spool_seg_name() names them are segments.
 * Missing dir: 0 and an empty index. Returns 0 or -errno (unreadable folder,
 * -ENOMEM); on error the index is empty. Blocking I/O: start-up and tools only.
 */
int spool_recover(const char *dir, struct spool_index *idx, spool_log_fn *log, void *arg);
void spool_index_free(struct spool_index *idx);

/*
 * Unlink segment seg_id of dir ("seg-<16 hex>.rms") and fsync dir, so the
 * unlink is durable when it returns. 0 or -errno (-ENOENT: no such segment).
 * Unlink only segments with keep == false, those holding MSG records before
 * those holding their DONE records: a crash between the two would bring the
 * messages back. When two segments hold DONE records of each other's
 * messages no order closes that window; the messages are then delivered
 * again (at least once, never lost). Blocking: start-up and tools only, never
 * a reactor.
 */
int spool_seg_unlink(const char *dir, uint64_t seg_id);

/* Read a message's body (the payloads of its DATA records in order, each checked again with
   m->seed) into a malloc'd buffer; 0 or -errno (-EIO when a record does not check). Blocking:
   tools and tests. */
int spool_read_body(const char *dir, const struct spool_msg *m, char **body, size_t *len);

/*
 * `ringmail queue list`: print the index the way `postqueue -p` does, one
 * message per entry (ID, size, arrival, sender, then the recipients not yet
 * finished, per rcpt_done), and a final
 * line "-- N Kbytes in M Requests." (or "Mail queue is empty").
 */
void spool_print_queue(const struct spool_index *idx, FILE *out);

/* Message and segment ids: 32 bits of unix seconds, 8 bits of reactor,
   24 bits of sequence; strictly increasing per reactor, and above *last
   (seed it with spool_index.max_id so ids stay unique across restarts). */
uint64_t spool_next_id(uint64_t *last, unsigned reactor, uint64_t now_sec);

#endif
