/*
 * desttab.c: a worker's bounded per-destination metrics table (core/desttab.h).
 */
#include "core/desttab.h"

#include <string.h>

unsigned
desttab_slot(struct desttab *t, const char *name)
{
    /* the owner is the only writer of n: a relaxed load sees its own stores */
    unsigned n = atomic_load_explicit(&t->n, memory_order_relaxed);
    size_t len = strnlen(name, DESTTAB_NAME - 1);

    for (unsigned i = 0; i < n; i++) {
        if (strncmp(t->slot[i].name, name, len) == 0 && t->slot[i].name[len] == '\0')
            return i;
    }
    if (n == DESTTAB_MAX)
        return DESTTAB_OTHER;
    memcpy(t->slot[n].name, name, len);
    t->slot[n].name[len] = '\0';
    /* the name before the count: a reader that sees n + 1 sees the whole name */
    atomic_store_explicit(&t->n, n + 1, memory_order_release);
    return n;
}
