/*
 * smtp_data.h: the message body scanner for DATA (RFC 5321 4.1.1.4, 4.5.2)
 * and BDAT chunks (RFC 3030).
 *
 * A byte-level state machine whose whole state lives in struct smtp_data, so
 * it survives any split of the input: feeding a body whole, byte by byte or
 * in any chunking gives the same output octets and the same verdict. Input
 * octets are copied exactly once, into the caller's output space, and during
 * that copy:
 *   - DATA mode removes the leading dot of dot-stuffed lines and finds the end
 *     of data, which is ONLY "." on a line that began after a real CR LF and
 *     that itself ends in a real CR LF (CRLF.CRLF; the SMTP-smuggling
 *     defence, CVE-2023-51764 class). The DATA command's own CRLF counts.
 *   - A bare LF or a bare CR (not part of CR LF) is, with normalize, stored as
 *     CR LF, so that the stored message is strict CRLF text. A dot line that
 *     follows a bare newline, or that ends in one, is never the end of data:
 *     it is stored as the content line ".". With reject the same octets are
 *     read and the message is marked SMTP_DATA_E_BARE_NEWLINE (550 5.5.2 at
 *     its end: we refuse the whole message and the session stays in sync,
 *     since the end is found by the same rules).
 *   - BDAT (raw) mode has no dot handling and no end marker; newline
 *     normalisation, line length and size are checked the same way, and a CR
 *     that ends one chunk pairs with an LF that starts the next.
 *
 * Sizes count octets as stored (after unstuffing and normalisation). Lines are
 * counted with their CR LF. Once an error is set nothing more is stored; the
 * scan goes on to the end so the session stays in sync.
 *
 * Runs of ordinary text are found with SSE2 (16 octets per step, never
 * reading past the input) or a short scalar tail, and copied with memcpy.
 * One owner thread; no allocation.
 */
#ifndef RINGMAIL_CORE_SMTP_DATA_H
#define RINGMAIL_CORE_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_data_state {
    SMTP_DATA_S_BOL = 0, /* at the start of a line */
    SMTP_DATA_S_TEXT,    /* inside a line */
    SMTP_DATA_S_CR,      /* after a CR not yet known to be part of CR LF */
    SMTP_DATA_S_DOT,     /* after a "." that began a line (DATA mode) */
    SMTP_DATA_S_DOT_CR,  /* after "." CR at the start of a line (DATA mode) */
    SMTP_DATA_S_DONE,    /* end of data consumed (DATA) / finished (BDAT) */
};

enum smtp_data_mode {
    SMTP_DATA_M_DOT = 0, /* DATA: dot-stuffed, ends at CRLF.CRLF */
    SMTP_DATA_M_RAW,     /* BDAT chunks: raw octets */
};

enum smtp_data_error {
    SMTP_DATA_E_TOO_BIG = 1u << 0,       /* more than max_size octets */
    SMTP_DATA_E_LINE_TOO_LONG = 1u << 1, /* a line longer than max_line (CRLF included) */
    SMTP_DATA_E_BARE_NEWLINE = 1u << 2,  /* a bare CR or LF with reject */
};

enum smtp_data_rc {
    SMTP_DATA_MORE = 0, /* input used up, or output full: call again */
    SMTP_DATA_END = 1,  /* the end is consumed and every output octet was written */
};

#define SMTP_DATA_PEND_MAX 8

struct smtp_data {
    uint64_t max_size; /* 0 = no limit */
    uint64_t max_line; /* 0 = no limit; octets including CR LF */
    uint64_t size;     /* octets of body so far, as stored (counted even once refused) */
    uint64_t line_len; /* octets of the current line so far, without its CR LF */
    uint8_t state;     /* enum smtp_data_state */
    uint8_t mode;      /* enum smtp_data_mode */
    uint8_t errors;    /* enum smtp_data_error bits; nothing is stored once set */
    uint8_t npend;     /* octets in pend not yet written out */
    bool reject_bare;  /* bare_newline: reject */
    bool strict_bol;   /* the current line began after a real CR LF */
    char pend[SMTP_DATA_PEND_MAX]; /* output owed when the output space ran out */
};

/*
 * Start a body. strict_bol says whether the line that started it (the DATA
 * command) ended in a real CR LF: if not, a "." first line is not the end.
 */
void smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, uint64_t max_size,
                    uint64_t max_line, bool reject_bare, bool strict_bol);

/*
 * Scan in[0..len) and write the body octets into out[0..room). *consumed and
 * *produced report what was used and written. out may be NULL (room 0) when
 * d->errors is set: nothing is stored any more. Returns SMTP_DATA_END when
 * the end of data was consumed (DATA mode: *consumed ends right after its LF;
 * BDAT: after smtp_data_finish()) and everything owed was written.
 */
enum smtp_data_rc smtp_data_scan(struct smtp_data *d, const char *in, size_t len, size_t *consumed,
                                 char *out, size_t room, size_t *produced);

/* BDAT: the last chunk is consumed. A trailing CR is a bare CR; the scanner is
   DONE and the next smtp_data_scan() writes what is owed and returns END. */
void smtp_data_finish(struct smtp_data *d);

#endif
