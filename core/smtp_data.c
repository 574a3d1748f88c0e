/*
 * smtp_data.c: the DATA / BDAT body scanner (see smtp_data.h for the rules).
 *
 * One owner thread; no allocation. The only copy of a body octet is the
 * memcpy from the input into the caller's output space; what does not fit
 * (at most a few octets of one line ending) waits in d->pend.
 */
#include "core/smtp_data.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/compiler.h"

struct out {
    char *p;
    size_t room, o;
};

/* First CR or LF in [p, end), or end. Never reads outside [p, end). */
static const char *
find_eol(const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');

    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));

        if (m != 0)
            return p + __builtin_ctz((unsigned)m);
        p += 16;
    }
    while (p < end && *p != '\r' && *p != '\n')
        p++; /* fewer than 16 octets left */
    return p;
#else
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *stop = lf != NULL ? lf : end;
    const char *cr = memchr(p, '\r', (size_t)(stop - p));

    return cr != NULL ? cr : stop;
#endif
}

/* Store n octets (or count them only, once the message is refused). */
static void
put(struct smtp_data *d, struct out *w, const char *s, size_t n)
{
    size_t k;

    d->size += n;
    if (d->max_size != 0 && d->size > d->max_size)
        d->errors |= SMTP_DATA_E_TOO_BIG;
    if (d->errors != 0) {
        d->npend = 0;
        return;
    }
    k = MIN(n, w->room - w->o);
    if (k > 0) {
        memcpy(w->p + w->o, s, k);
        w->o += k;
    }
    if (k < n) {
        BUG_ON(d->npend + (n - k) > sizeof(d->pend));
        memcpy(d->pend + d->npend, s + k, n - k);
        d->npend = (uint8_t)(d->npend + (n - k));
    }
}

static void
text(struct smtp_data *d, struct out *w, const char *s, size_t n)
{
    d->line_len += n;
    if (d->max_line != 0 && d->line_len + 2 > d->max_line)
        d->errors |= SMTP_DATA_E_LINE_TOO_LONG;
    put(d, w, s, n);
}

static void
eol(struct smtp_data *d, struct out *w)
{
    put(d, w, "\r\n", 2);
    d->line_len = 0;
}

/* A bare CR or LF ended the line: stored as CR LF, or the message is refused. */
static void
bare_newline(struct smtp_data *d, struct out *w)
{
    if (d->reject_bare) {
        d->errors |= SMTP_DATA_E_BARE_NEWLINE;
        d->npend = 0;
        d->line_len = 0;
        return;
    }
    eol(d, w);
}

void
smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, uint64_t max_size, uint64_t max_line,
               bool reject_bare, bool strict_bol)
{
    memset(d, 0, sizeof(*d));
    d->max_size = max_size;
    d->max_line = max_line;
    d->mode = (uint8_t)mode;
    d->state = SMTP_DATA_S_BOL;
    d->reject_bare = reject_bare;
    d->strict_bol = strict_bol;
}

enum smtp_data_rc
smtp_data_scan(struct smtp_data *d, const char *in, size_t len, size_t *consumed, char *out,
               size_t room, size_t *produced)
{
    const char *p = in, *end = in + len;
    struct out w = { out, out != NULL ? room : 0, 0 };

    if (d->npend > 0) {
        size_t k = MIN((size_t)d->npend, w.room);

        if (k > 0) {
            memcpy(w.p, d->pend, k);
            memmove(d->pend, d->pend + k, d->npend - k);
            d->npend = (uint8_t)(d->npend - k);
            w.o = k;
        }
    }
    while (d->npend == 0 && d->state != SMTP_DATA_S_DONE && p < end) {
        if (d->errors == 0 && w.o == w.room)
            break; /* output full */
        switch ((enum smtp_data_state)d->state) {
        case SMTP_DATA_S_BOL:
            if (d->mode == SMTP_DATA_M_DOT && *p == '.') {
                p++;
                d->state = SMTP_DATA_S_DOT;
                break;
            }
            d->state = SMTP_DATA_S_TEXT;
            FALLTHROUGH;
        case SMTP_DATA_S_TEXT: {
            const char *q = find_eol(p, end);

            if (q > p) {
                size_t n = (size_t)(q - p);

                if (d->errors == 0 && n > w.room - w.o)
                    n = w.room - w.o;
                text(d, &w, p, n);
                p += n;
                break;
            }
            if (*p++ == '\r') {
                d->state = SMTP_DATA_S_CR;
                break;
            }
            bare_newline(d, &w); /* bare LF */
            d->state = SMTP_DATA_S_BOL;
            d->strict_bol = false;
            break;
        }
        case SMTP_DATA_S_CR:
            d->state = SMTP_DATA_S_BOL;
            if (*p == '\n') {
                p++;
                eol(d, &w);
                d->strict_bol = true;
                break;
            }
            bare_newline(d, &w); /* bare CR; *p begins the next line */
            d->strict_bol = false;
            break;
        case SMTP_DATA_S_DOT:
            if (*p == '\r') {
                p++;
                d->state = SMTP_DATA_S_DOT_CR;
                break;
            }
            if (*p == '\n') {
                /* ".\n" is never the end: the content line "." */
                p++;
                text(d, &w, ".", 1);
                bare_newline(d, &w);
                d->state = SMTP_DATA_S_BOL;
                d->strict_bol = false;
                break;
            }
            d->state = SMTP_DATA_S_TEXT; /* the stuffing dot is dropped */
            break;
        case SMTP_DATA_S_DOT_CR:
            if (*p == '\n' && d->strict_bol) {
                p++;
                d->state = SMTP_DATA_S_DONE; /* CRLF.CRLF */
                break;
            }
            /* "." after a bare newline, or ".\r" + not LF: the content line "." */
            text(d, &w, ".", 1);
            if (*p == '\n') {
                p++;
                eol(d, &w);
                d->strict_bol = true;
            } else {
                bare_newline(d, &w);
                d->strict_bol = false;
            }
            d->state = SMTP_DATA_S_BOL;
            break;
        case SMTP_DATA_S_DONE:
            break;
        }
    }
    *consumed = (size_t)(p - in);
    *produced = w.o;
    return d->state == SMTP_DATA_S_DONE && d->npend == 0 ? SMTP_DATA_END : SMTP_DATA_MORE;
}

void
smtp_data_finish(struct smtp_data *d)
{
    struct out w = { NULL, 0, 0 };

    if (d->state == SMTP_DATA_S_CR)
        bare_newline(d, &w); /* into pend: the next scan writes it */
    d->state = SMTP_DATA_S_DONE;
}
