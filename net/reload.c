/*
 * reload.c: handing a new configuration snapshot to the running threads
 * (see reload.h and snapshot.h). Thread affinity: the main thread.
 */
#include <errno.h>
#include <time.h>

#include "net/reload.h"

/* Wait, until *left_ms runs out (shared by every wait of one reload), for a thread to adopt
   generation want. */
static int
wait_gen(_Atomic uint64_t *gen, uint64_t want, unsigned *left_ms)
{
    for (;;) {
        struct timespec ts = { 0, 1000000 };

        /* acquire: pairs with the release of the thread's adopt() */
        if (atomic_load_explicit(gen, memory_order_acquire) >= want)
            return 0;
        if (*left_ms == 0)
            return -ETIMEDOUT;
        nanosleep(&ts, NULL);
        (*left_ms)--;
    }
}

int
reload_publish(struct reactor *r, unsigned n, struct worker *w, unsigned nw, struct snapshot *s)
{
    unsigned left = RELOAD_WAIT_MS; /* the main thread's whole wait, not each thread's */
    int rc = 0;

    for (unsigned i = 0; i < n; i++) {
        snapshot_offer(&r[i].next_snap, snapshot_ref(s));
        handoff_notify(&r[i]);
    }
    for (unsigned i = 0; i < n; i++) {
        if (wait_gen(&r[i].snap_gen, s->gen, &left) < 0)
            rc = -ETIMEDOUT;
    }
    for (unsigned i = 0; i < nw; i++) {
        snapshot_offer(&w[i].next_snap, snapshot_ref(s));
        worker_notify(&w[i]);
    }
    for (unsigned i = 0; i < nw; i++) {
        if (wait_gen(&w[i].snap_gen, s->gen, &left) < 0)
            rc = -ETIMEDOUT;
    }
    return rc;
}
