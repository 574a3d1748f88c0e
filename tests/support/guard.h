/*
 * guard.h: test buffers that end exactly at a PROT_NONE page
 * (picohttpparser's test.c), so that reading even one octet past the end
 * faults instead of silently reading neighbouring heap memory.
 *
 * Test-only; one thread. A region is reused (and its previous contents are
 * invalid) on every guard_place() with the same struct guard.
 */
#ifndef RINGMAIL_TESTS_SUPPORT_GUARD_H
#define RINGMAIL_TESTS_SUPPORT_GUARD_H

#include <stddef.h>

struct guard {
    char *map;     /* mmap'd: data pages, then one PROT_NONE page */
    size_t maplen; /* bytes mapped, guard page included */
};

/*
 * Copy src[0..n) so that its last octet is the last octet before the guard
 * page; returns the copy (writable; valid until the next guard_place() or
 * guard_release() on g). n may be 0: the result then points at the guard page.
 * Aborts the test process when mmap fails.
 */
char *guard_place(struct guard *g, const void *src, size_t n);
void guard_release(struct guard *g);

/* guard_place() on one process-wide region: valid until the next guard_copy(). */
const char *guard_copy(const void *src, size_t n);

#endif
