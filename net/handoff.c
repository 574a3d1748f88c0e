/*
 * handoff.c: a reactor's side of delivery. Thread affinity: the reactor.
 *
 * When a message is durable (its 250 is going out), the reactor routes its
 * recipients (core/route.c), makes one delivery per route and pushes each to
 * the worker that serves that route (q_shard_of(route hash)), through the
 * reactor x worker mesh. A delivery comes back once each of its recipients
 * is delivered or failed: the reactor appends a DONE record naming those
 * recipients to the message's own segment (so a DONE record lives and dies
 * with the message it finishes), and drops the delivery. A segment that is
 * no longer current and holds nothing pending is unlinked.
 *
 * A push the worker's ring has no room for waits on the reactor's handoff
 * list; while that list is long, new messages get 451 4.3.1 (back-pressure,
 * spool_io_msg_begin()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/log.h"
#include "core/route.h"
#include "net/reactor.h"

static void
push_or_hold(struct reactor *r, struct delivery *d)
{
    unsigned wk = q_shard_of(d->route_hash, r->nworkers);

    d->next = NULL;
    if (r->handoff == NULL && q_mesh_push(r->to_workers, r->index, wk, d) == 0)
        return;
    *r->handoff_tail = d;
    r->handoff_tail = &d->next;
    r->nhandoff++;
}

/*
 * The queue gauges: a message counts from its hand-off (new, bounce or
 * recovered) until handoff_release() frees it, on its owner reactor. The live
 * list keeps them in arrival order, so the oldest is its head: new messages
 * go at the tail (O(1)); recovered ones, whose arrivals are older and almost
 * in order, are placed from the tail back (start-up only). With `delivery:
 * hold` a message is released at once: it stays in the spool but is not
 * counted (no object is kept for it; ringmail_spool_* and `ringmail queue
 * list` show it).
 */
static void
live_publish(struct reactor *r)
{
    uint64_t oldest = r->live_head != NULL ? MAX(r->live_head->arrival_ms, (uint64_t)1) : 0;

    atomic_store_explicit(&r->stats.queue_oldest_ms, oldest, memory_order_relaxed);
}

static void
live_add(struct reactor *r, struct qmsg *q)
{
    struct qmsg *after = r->live_tail;

    while (after != NULL && after->arrival_ms > q->arrival_ms)
        after = after->live_prev;
    q->live_prev = after;
    q->live_next = after != NULL ? after->live_next : r->live_head;
    if (q->live_next != NULL)
        q->live_next->live_prev = q;
    else
        r->live_tail = q;
    if (after != NULL)
        after->live_next = q;
    else
        r->live_head = q;
    STAT_INC(r, queue_messages, 1);
    if (r->live_head == q)
        live_publish(r);
}

static void
live_del(struct reactor *r, struct qmsg *q)
{
    bool head = r->live_head == q;

    if (q->live_prev != NULL)
        q->live_prev->live_next = q->live_next;
    else
        r->live_head = q->live_next;
    if (q->live_next != NULL)
        q->live_next->live_prev = q->live_prev;
    else
        r->live_tail = q->live_prev;
    q->live_prev = q->live_next = NULL;
    STAT_DEC(r, queue_messages, 1);
    if (head)
        live_publish(r);
}

/* Route env's recipients (those not finished yet) and hand the message to the workers. */
int
handoff_message(struct reactor *r, struct qmsg *q, const uint8_t *rcpt_done)
{
    const struct envelope *e = &q->env;
    const struct route **rt;
    uint32_t *idx, n = 0;
    int rc = 0;

    live_add(r, q); /* until handoff_release() */
    if (r->to_workers == NULL || r->cfg->delivery == DELIVERY_HOLD) {
        /* delivery: hold, or no workers (an inbound-only test harness): the message stays
           pending in the spool */
        q->nleft = e->nrcpt;
        if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) == 1)
            handoff_release(r, q);
        return 0;
    }
    rt = malloc(e->nrcpt * sizeof(*rt));
    idx = malloc(e->nrcpt * sizeof(*idx));
    if (rt == NULL || idx == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    q->nleft = 0;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        rt[i] = NULL;
        if (rcpt_done == NULL || !rcpt_done[i]) {
            rt[i] = route_lookup(r->cfg, route_domain_of(env_get(e, e->rcpt[i].addr)));
            q->nleft++;
        }
    }
    /* one delivery per distinct route, its recipients in their original order */
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        const struct route *cur = rt[i];
        struct delivery *d;

        if (cur == NULL)
            continue;
        n = 0;
        for (uint32_t k = i; k < e->nrcpt; k++) {
            if (rt[k] == cur) {
                idx[n++] = k;
                rt[k] = NULL;
            }
        }
        d = delivery_new(q, cur, route_hash(cur), idx, n);
        if (d == NULL) {
            rc = -ENOMEM; /* those recipients wait for the next start */
            continue;
        }
        d->snap = snapshot_ref(r->snap);
        push_or_hold(r, d);
    }
out:
    free(rt);
    free(idx);
    /* the routing reference: the deliveries hold their own now */
    if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) == 1)
        handoff_release(r, q);
    if (rc < 0)
        log_msg(LOG_ERR, "event=handoff_error reactor=%u qid=%s error=\"%s\"", r->index, e->qid,
                strerror(-rc));
    return rc;
}

/*
 * The message's last reference is gone: free it and let go of its segment.
 * Only a message whose every recipient is finished stops counting as pending
 * in its segment; one released unfinished (at shutdown) keeps the segment on
 * disk for the next start.
 */
void
handoff_release(struct reactor *r, struct qmsg *q)
{
    struct segment *seg = q->seg;
    bool finished = q->nleft == 0;

    live_del(r, q);
    qmsg_free(q);
    spool_io_seg_put(r, seg, finished);
}

bool
handoff_delivery_free(struct delivery *d)
{
    snapshot_put(d->snap);
    return delivery_free(d);
}

/*
 * A reload changed the routes while d waited on a worker: route its pending
 * recipients again under this reactor's configuration, keeping their attempt
 * count and retry time, so a route changed by the operator applies to mail
 * already queued (at its next attempt, as after `postfix reload`).
 */
static void
reroute(struct reactor *r, const struct delivery *d)
{
    struct qmsg *q = d->msg;
    const struct envelope *e = &q->env;
    const struct route **rt = malloc(d->nrcpt * sizeof(*rt));
    uint32_t *idx = malloc(d->nrcpt * sizeof(*idx));
    unsigned made = 0;

    if (rt == NULL || idx == NULL) {
        free(rt);
        free(idx);
        log_msg(LOG_ERR,
                "event=handoff_error reactor=%u qid=%s error=\"out of memory\" "
                "note=\"pending until the next start\"",
                r->index, e->qid);
        return;
    }
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        rt[i] = d->state[i] == DLV_PENDING
                    ? route_lookup(r->cfg, route_domain_of(env_get(e, e->rcpt[d->rcpt[i]].addr)))
                    : NULL;
    }
    for (uint32_t i = 0; i < d->nrcpt; i++) {
        const struct route *cur = rt[i];
        struct delivery *nd;
        uint32_t n = 0;

        if (cur == NULL)
            continue;
        for (uint32_t k = i; k < d->nrcpt; k++) {
            if (rt[k] == cur) {
                idx[n++] = d->rcpt[k];
                rt[k] = NULL;
            }
        }
        nd = delivery_new(q, cur, route_hash(cur), idx, n);
        if (nd == NULL)
            continue; /* those recipients wait for the next start */
        nd->snap = snapshot_ref(r->snap);
        nd->attempts = d->attempts;
        nd->next_ms = d->next_ms;
        push_or_hold(r, nd);
        made++;
    }
    log_msg(LOG_INFO, "event=rerouted reactor=%u qid=%s deliveries=%u", r->index, e->qid, made);
    free(rt);
    free(idx);
}

/*
 * A delivery is back: record its finished recipients, drop it. Failed
 * recipients owed a bounce are finished by the bounce itself, once it is
 * durable (spool_io_inject), so a crash never loses both.
 */
static void
complete(struct reactor *r, struct delivery *d)
{
    struct qmsg *q = d->msg;
    uint32_t *fin = NULL, *bounced = NULL, nfin = 0, nb = 0;

    if (d->nrcpt > 0) {
        fin = malloc(d->nrcpt * sizeof(*fin));
        bounced = malloc(d->nrcpt * sizeof(*bounced));
    }
    for (uint32_t i = 0; fin != NULL && bounced != NULL && i < d->nrcpt; i++) {
        if (d->state[i] == DLV_DELIVERED || (d->state[i] == DLV_FAILED && d->dsn == NULL))
            fin[nfin++] = d->rcpt[i];
        else if (d->state[i] == DLV_FAILED)
            bounced[nb++] = d->rcpt[i];
    }
    if (nfin > 0) {
        spool_io_done(r, q->seg, q->env.id, fin, nfin);
        q->nleft -= MIN(nfin, q->nleft);
    }
    if (d->dsn != NULL) {
        /* failures, and successes whose NOTIFY asked for a report */
        spool_io_inject(r, q, bounced, nb, d->dsn, d->dsn_len, d->dsn_flags);
        STAT_INC(r, bounces, 1);
    }
    free(fin);
    free(bounced);
    if (d->reroute)
        reroute(r, d); /* before d lets go of q: the new deliveries hold it */
    if (handoff_delivery_free(d))
        handoff_release(r, q);
}

void
handoff_turn(struct reactor *r)
{
    void *items[64];
    size_t n;

    /* pushes that found a worker's ring full */
    while (r->handoff != NULL) {
        struct delivery *d = r->handoff;

        if (q_mesh_push(r->to_workers, r->index, q_shard_of(d->route_hash, r->nworkers), d) < 0)
            break;
        r->handoff = d->next;
        r->nhandoff--;
        if (r->handoff == NULL)
            r->handoff_tail = &r->handoff;
    }
    /* deliveries coming back */
    do {
        n = q_mesh_pop_batch(r->from_workers, r->index, items, ARRAY_SIZE(items));
        for (size_t i = 0; i < n; i++)
            complete(r, items[i]);
    } while (n == ARRAY_SIZE(items));
}

/* Wake-up hook of the workers -> reactors mesh (a worker's thread). */
void
handoff_notify(void *arg)
{
    struct reactor *r = arg;
    uint64_t one = 1;

    if (write(r->wake_fd, &one, sizeof(one)) == -1)
        return;
}
