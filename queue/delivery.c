/*
 * delivery.c: message and delivery objects. Any thread; see delivery.h for
 * which thread owns what when.
 */
#include "queue/delivery.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/compiler.h"

struct qmsg *
qmsg_new(unsigned owner, void *seg, int fd, uint64_t seed, const struct envelope *env,
         const struct spool_extent *ext, unsigned nextent, uint64_t arrival_ms)
{
    struct qmsg *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    if (env_copy(&m->env, env) < 0)
        goto fail;
    m->ext = malloc((nextent ? nextent : 1) * sizeof(*ext));
    if (m->ext == NULL)
        goto fail_env;
    if (nextent > 0)
        memcpy(m->ext, ext, nextent * sizeof(*ext));
    m->nextent = nextent;
    m->owner = owner;
    m->seg = seg;
    m->fd = fd;
    m->seed = seed;
    m->arrival_ms = arrival_ms;
    atomic_init(&m->refs, 1);
    return m;

fail_env:
    env_free(&m->env);
fail:
    free(m);
    return NULL;
}

void
qmsg_free(struct qmsg *m)
{
    if (m == NULL)
        return;
    env_free(&m->env);
    free(m->ext);
    free(m);
}

struct delivery *
delivery_new(struct qmsg *msg, const void *route, uint64_t route_hash, const uint32_t *rcpt,
             uint32_t n)
{
    struct delivery *d = calloc(1, sizeof(*d));

    if (d == NULL)
        return NULL;
    d->rcpt = malloc(n * sizeof(*d->rcpt));
    d->state = calloc(n, sizeof(*d->state));
    d->diag = calloc(n, sizeof(*d->diag));
    if (d->rcpt == NULL || d->state == NULL || d->diag == NULL) {
        free(d->rcpt);
        free(d->state);
        free(d->diag);
        free(d);
        return NULL;
    }
    memcpy(d->rcpt, rcpt, n * sizeof(*rcpt));
    d->nrcpt = n;
    d->msg = msg;
    d->route = route;
    d->route_hash = route_hash;
    /* relaxed: the reference is taken by a thread that already holds one */
    atomic_fetch_add_explicit(&msg->refs, 1, memory_order_relaxed);
    return d;
}

bool
delivery_free(struct delivery *d)
{
    bool last;

    for (uint32_t i = 0; i < d->nrcpt; i++)
        free(d->diag[i]);
    free(d->diag);
    free(d->dsn);
    free(d->success);
    free(d->rcpt);
    free(d->state);
    /* acq_rel: the thread that sees the count reach zero frees the message and must
       see every other owner's writes to it (pairs with the other owners' releases) */
    last = atomic_fetch_sub_explicit(&d->msg->refs, 1, memory_order_acq_rel) == 1;
    free(d);
    return last;
}

void
delivery_set_diag(struct delivery *d, uint32_t i, const char *text)
{
    size_t n = strnlen(text, DLV_DIAG_MAX);
    char *p = realloc(d->diag[i], n + 1);

    if (p == NULL)
        return;
    memcpy(p, text, n);
    p[n] = '\0';
    d->diag[i] = p;
}

uint32_t
delivery_pending(const struct delivery *d)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < d->nrcpt; i++)
        n += d->state[i] == DLV_PENDING;
    return n;
}

uint64_t
delivery_backoff(unsigned attempts, uint64_t min_ms, uint64_t max_ms)
{
    uint64_t t = min_ms;

    for (unsigned i = 1; i < attempts && t < max_ms; i++)
        t *= 2;
    return MIN(t, max_ms);
}
