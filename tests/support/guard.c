/*
 * guard.c: buffers ending at a PROT_NONE page, for over-read tests.
 * Test-only, one thread.
 */
#include "support/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t
page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);

    return ps > 0 ? (size_t)ps : 4096;
}

char *
guard_place(struct guard *g, const void *src, size_t n)
{
    size_t ps = page_size();
    size_t data = (n + ps - 1) / ps * ps;
    size_t need = (data > 0 ? data : ps) + ps;
    char *end;

    if (g->map == NULL || g->maplen < need) {
        guard_release(g);
        g->map = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (g->map == MAP_FAILED) {
            perror("guard: mmap");
            abort();
        }
        g->maplen = need;
        if (mprotect(g->map + need - ps, ps, PROT_NONE) == -1) {
            perror("guard: mprotect");
            abort();
        }
    }
    end = g->map + g->maplen - ps;
    if (n > 0)
        memcpy(end - n, src, n);
    return end - n;
}

void
guard_release(struct guard *g)
{
    if (g->map != NULL)
        munmap(g->map, g->maplen);
    g->map = NULL;
    g->maplen = 0;
}

const char *
guard_copy(const void *src, size_t n)
{
    static struct guard g;

    return guard_place(&g, src, n);
}
