/*
 * fuzz.h: what the libFuzzer harnesses in tests/fuzz share.
 *
 * A harness reads its driver choices (limits, split points, callback
 * behaviour) from the first octets of the input with struct fuzz_in, so that
 * libFuzzer mutates the driver together with the protocol bytes, and treats
 * the rest as the peer's bytes. A broken invariant is a FUZZ_CHECK(): it
 * prints what was wrong and aborts, which libFuzzer reports as a crash and
 * saves as a reproducer.
 *
 * Test-only; one thread (libFuzzer runs one input at a time).
 */
#ifndef RINGMAIL_TESTS_FUZZ_FUZZ_H
#define RINGMAIL_TESTS_FUZZ_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The input as a cursor: header octets first, then the rest as peer bytes. */
struct fuzz_in {
    const uint8_t *p;
    size_t len;
};

/* The next octet, or 0 once the input is used up (a short input is still a valid one). */
static inline uint8_t
fuzz_u8(struct fuzz_in *in)
{
    uint8_t v = 0;

    if (in->len > 0) {
        v = in->p[0];
        in->p++;
        in->len--;
    }
    return v;
}

static inline uint16_t
fuzz_u16(struct fuzz_in *in)
{
    uint16_t lo = fuzz_u8(in);

    return (uint16_t)(lo | (uint16_t)(fuzz_u8(in) << 8));
}

/* xorshift64: split points and callback choices that follow the header's seed, so that a
   mutation of the peer bytes does not move every split point. */
static inline uint64_t
fuzz_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15u;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* A malloc'd copy of p[0..n) with nothing after it, so that AddressSanitizer reports a read
   of even one octet past the end. Never NULL (aborts on allocation failure). */
static inline char *
fuzz_dup(const void *p, size_t n)
{
    char *c = malloc(n ? n : 1);

    FUZZ_CHECK(c != NULL, "out of memory");
    if (n > 0)
        memcpy(c, p, n);
    return c;
}

/*
 * Make a folder for this process's scratch files: under $TMPDIR when it is
 * set (tests/fuzz/run.sh points it into its own work folder, removed however
 * the harness ends), else /dev/shm when there is one, else /tmp. The harness
 * removes it at a normal exit; after a crash run.sh's cleanup does.
 */
static inline void
fuzz_mkdtemp(char *out, size_t cap, const char *tag)
{
    const char *base = getenv("TMPDIR");
    struct stat st;

    if (base == NULL || base[0] == '\0')
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    FUZZ_CHECK((size_t)snprintf(out, cap, "%s/ringmail-fuzz-%s-XXXXXX", base, tag) < cap,
               "temporary folder name too long");
    FUZZ_CHECK(mkdtemp(out) != NULL, "mkdtemp %s", out);
}

/* A growable byte buffer for transcripts. */
struct fuzz_buf {
    char *p;
    size_t len, cap;
};

static inline void
fuzz_buf_put(struct fuzz_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;

        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        FUZZ_CHECK(b->p != NULL, "out of memory");
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void
fuzz_buf_free(struct fuzz_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

#endif
