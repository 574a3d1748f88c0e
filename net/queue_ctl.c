/*
 * queue_ctl.c: the admin endpoint's /queue requests and the hold markers.
 * See queue_ctl.h.
 *
 * Thread affinity: the main thread (start-up, then the admin endpoint inside
 * its poll loop). A request posts one worker_req to every worker, then waits
 * for all of them with one deadline (QUEUE_CTL_WAIT_MS): the workers work in
 * parallel and the main thread blocks for at most that long. A worker that
 * did not answer keeps its request: the next one to it is refused (-EBUSY,
 * 503) until it has, so its answer buffer is never read while it writes.
 */
#define _GNU_SOURCE
#include "net/queue_ctl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/http.h"
#include "core/log.h"
#include "core/qfilter.h"
#include "net/admin.h"
#include "net/util.h"
#include "net/worker.h"

#define JB_MAX (64u << 20) /* a /queue answer larger than this is refused (500) */

/* ---- a growing JSON buffer ---- */

struct jbuf {
    char *p;
    size_t len, cap;
    bool bad;
};

static bool
jb_room(struct jbuf *b, size_t n)
{
    size_t cap;
    char *p;

    if (b->bad)
        return false;
    if (b->len + n <= b->cap)
        return true;
    cap = MAX(MAX(b->cap * 2, b->len + n), (size_t)4096);
    p = cap > JB_MAX ? NULL : realloc(b->p, cap);
    if (p == NULL) {
        b->bad = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void
jb_raw(struct jbuf *b, const char *s, size_t n)
{
    if (jb_room(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void
jb_lit(struct jbuf *b, const char *s)
{
    jb_raw(b, s, strlen(s));
}

static void jb_printf(struct jbuf *b, const char *fmt, ...) PRINTF(2, 3);

static void
jb_printf(struct jbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->bad = true;
        return;
    }
    jb_raw(b, tmp, (size_t)n);
}

/* A JSON string, quotes included; escaped 64 KiB at a time (never splitting a UTF-8
   sequence), each piece with room for its worst case, 6 octets out per octet in. */
static void
jb_str(struct jbuf *b, const char *s, size_t n)
{
    jb_raw(b, "\"", 1);
    for (size_t off = 0; off < n && !b->bad;) {
        size_t end = MIN(n, off + 65536);

        for (int k = 0; k < 3 && end < n && end > off + 1 && (s[end] & 0xc0) == 0x80; k++)
            end--;
        if (jb_room(b, (end - off) * 6) && !json_escape(b->p, b->cap, &b->len, s + off, end - off))
            b->bad = true;
        off = end;
    }
    jb_raw(b, "\"", 1);
}

struct answer {
    int status;
    struct jbuf b;
    const char *allow;
};

static int error_json(struct answer *a, int status, const char *fmt, ...) PRINTF(3, 4);

static int
error_json(struct answer *a, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    a->b.len = 0;
    a->b.bad = false;
    jb_raw(&a->b, "{\"error\":", 9);
    jb_str(&a->b, msg, strlen(msg));
    jb_raw(&a->b, "}\n", 2);
    a->status = status;
    return status;
}

/* ---- the workers ---- */

struct ctx {
    const struct ringmail_config *cfg;
    struct worker *w;
    unsigned nw;
    struct worker_ans *ans; /* one per worker, of the last ask() */
};

/* Post rq to every worker and wait for every answer (one deadline); 0, or an error answered. */
static int
ask(struct ctx *c, const struct worker_req *rq, struct answer *a, struct worker_ans *sum)
{
    uint64_t deadline = clock_mono_ms() + QUEUE_CTL_WAIT_MS;
    unsigned sent = 0, late = 0;

    memset(sum, 0, sizeof(*sum));
    if (admin_draining())
        return error_json(a, 503, "ringmail is stopping");
    /* all or none: a request sent to some workers only would be half done */
    for (unsigned i = 0; i < c->nw; i++) {
        if (!worker_control_idle(&c->w[i]))
            return error_json(a, 503, "worker %u has not answered an earlier request yet", i);
    }
    for (unsigned i = 0; i < c->nw; i++) {
        if (worker_control_send(&c->w[i], rq) < 0) {
            late++;
            break;
        }
        sent++;
    }
    for (unsigned i = 0; i < sent; i++) {
        struct worker_ans *x = &c->ans[i];

        if (worker_control_wait(&c->w[i], deadline, x) < 0) {
            late++;
            continue;
        }
        sum->affected += x->affected;
        sum->active += x->active;
        sum->waiting += x->waiting;
        sum->held += x->held;
        sum->truncated |= x->truncated;
        if (x->err != 0)
            sum->err = x->err;
    }
    if (late > 0) {
        log_msg(LOG_WARN,
                "event=queue_control_timeout workers=%u note=\"a worker did not "
                "answer in time\"",
                late);
        return error_json(a, 503, "a delivery worker did not answer within %u ms; try again",
                          QUEUE_CTL_WAIT_MS);
    }
    return 0;
}

/* ---- hold markers ---- */

static int
hold_path(const struct ringmail_config *cfg, uint64_t id, char *out, size_t cap)
{
    char qid[QID_LEN + 1];
    int n;

    if (id == 0) {
        n = snprintf(out, cap, "%s/%s", cfg->spool_dir, QUEUE_HOLD_DIR);
    } else {
        qid_format(id, qid);
        n = snprintf(out, cap, "%s/%s/%s", cfg->spool_dir, QUEUE_HOLD_DIR, qid);
    }
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int
fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd == -1)
        return -errno;
    if (fsync(fd) == -1)
        rc = -errno;
    close(fd);
    return rc;
}

static bool
marker_exists(const struct ringmail_config *cfg, uint64_t id)
{
    char p[CONFIG_PATH_MAX + 64];

    return hold_path(cfg, id, p, sizeof(p)) == 0 && access(p, F_OK) == 0;
}

/* Write spool_dir/hold/QID durably; 0 or -errno. */
static int
marker_write(const struct ringmail_config *cfg, uint64_t id)
{
    char p[CONFIG_PATH_MAX + 64], dir[CONFIG_PATH_MAX + 64], line[QID_LEN + 2];
    int fd, rc = 0;

    if (hold_path(cfg, id, p, sizeof(p)) < 0 || hold_path(cfg, 0, dir, sizeof(dir)) < 0)
        return -ENAMETOOLONG;
    qid_format(id, line);
    line[QID_LEN] = '\n';
    line[QID_LEN + 1] = '\0';
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -errno;
    if (write(fd, line, QID_LEN + 1) != QID_LEN + 1 || fsync(fd) == -1)
        rc = errno != 0 ? -errno : -EIO;
    close(fd);
    if (rc == 0)
        rc = fsync_path(dir);
    if (rc < 0)
        (void)unlink(p);
    return rc;
}

/* Remove spool_dir/hold/QID durably; 1 removed, 0 there was none, or -errno. */
static int
marker_remove(const struct ringmail_config *cfg, uint64_t id)
{
    char p[CONFIG_PATH_MAX + 64], dir[CONFIG_PATH_MAX + 64];
    int rc;

    if (hold_path(cfg, id, p, sizeof(p)) < 0 || hold_path(cfg, 0, dir, sizeof(dir)) < 0)
        return -ENAMETOOLONG;
    if (unlink(p) == -1)
        return errno == ENOENT ? 0 : -errno;
    rc = fsync_path(dir);
    return rc < 0 ? rc : 1;
}

static bool
index_has(const struct spool_index *idx, uint64_t id)
{
    size_t lo = 0, hi = idx->nmsg;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (idx->msg[mid].env.id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < idx->nmsg && idx->msg[lo].env.id == id;
}

int
queue_ctl_start(const struct ringmail_config *cfg, const struct spool_index *idx,
                struct worker *workers, unsigned nworkers)
{
    char dir[CONFIG_PATH_MAX + 64];
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0, stale = 0;
    struct dirent *de;
    DIR *d = NULL;
    int rc;

    rc = hold_path(cfg, 0, dir, sizeof(dir));
    if (rc == 0)
        rc = mkdir_p(dir, 0700);
    if (rc == 0 && (d = opendir(dir)) == NULL)
        rc = -errno;
    if (rc < 0) {
        log_msg(LOG_ERR, "event=fatal what=hold dir=%s error=\"%s\"", dir, strerror(-rc));
        return rc;
    }
    while ((de = readdir(d)) != NULL) {
        uint64_t id;

        if (de->d_name[0] == '.')
            continue;
        if (!qid_parse(de->d_name, &id)) {
            log_msg(LOG_WARN, "event=hold_marker file=%s/%s note=\"not a queue id; ignored\"", dir,
                    de->d_name);
            continue;
        }
        if (!index_has(idx, id)) {
            rc = marker_remove(cfg, id);
            log_msg(rc < 0 ? LOG_WARN : LOG_INFO,
                    "event=hold_marker qid=%s result=%s note=\"the message is no longer in the "
                    "queue\"",
                    de->d_name, rc < 0 ? "not_removed" : "removed");
            stale++;
            continue;
        }
        if (n == cap) {
            uint64_t *p = realloc(ids, (cap = MAX(cap * 2, (size_t)64)) * sizeof(*ids));

            if (p == NULL) {
                closedir(d);
                free(ids);
                log_msg(LOG_ERR, "event=fatal what=hold error=\"out of memory\"");
                return -ENOMEM;
            }
            ids = p;
        }
        ids[n++] = id;
    }
    closedir(d);
    rc = 0;
    for (unsigned i = 0; i < nworkers && rc == 0; i++)
        rc = worker_hold_preload(&workers[i], ids, n);
    free(ids);
    if (rc < 0) {
        log_msg(LOG_ERR, "event=fatal what=hold error=\"out of memory\"");
        return rc;
    }
    if (n > 0 || stale > 0)
        log_msg(LOG_INFO, "event=hold_recovered held=%zu stale_removed=%zu", n, stale);
    return 0;
}

static int spool_list(struct ctx *c, const struct qfilter *f, uint64_t id, struct answer *a);

/* ---- the list ---- */

struct ent {
    uint64_t id, arrival_ms;
    const char *head, *rcpt;
    uint32_t head_len, rcpt_len, state;
    unsigned worker;
};

static int
ent_cmp(const void *a, const void *b)
{
    const struct ent *x = a, *y = b;

    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->worker < y->worker ? -1 : x->worker > y->worker;
}

/* The records of the last LIST, sorted by message; *n of them (malloc'd), or NULL. */
static struct ent *
collect(struct ctx *c, size_t *n)
{
    size_t total = 0, k = 0;
    struct ent *e;

    for (unsigned i = 0; i < c->nw; i++)
        total += c->ans[i].affected;
    e = calloc(MAX(total, (size_t)1), sizeof(*e));
    if (e == NULL)
        return NULL;
    for (unsigned i = 0; i < c->nw; i++) {
        const char *p = c->w[i].ctl_buf, *end = p + c->ans[i].len;

        while (p != NULL && p + sizeof(struct worker_rec) <= end && k < total) {
            struct worker_rec r;

            memcpy(&r, p, sizeof(r));
            p += sizeof(r);
            BUG_ON((size_t)(end - p) < (size_t)r.head_len + r.rcpt_len);
            e[k] = (struct ent){ r.id,       r.arrival_ms, p,       p + r.head_len,
                                 r.head_len, r.rcpt_len,   r.state, i };
            p += r.head_len + r.rcpt_len;
            k++;
        }
    }
    qsort(e, k, sizeof(*e), ent_cmp);
    *n = k;
    return e;
}

/* One message's JSON object from its records e[0..n) (one message id), without the closing
   brace. */
static void
message_json(struct jbuf *b, const struct ent *e, size_t n, uint64_t now_ms)
{
    bool held = false, first = true;

    jb_raw(b, "{", 1);
    jb_raw(b, e[0].head, e[0].head_len);
    for (size_t i = 0; i < n; i++)
        held |= e[i].state == QSTATE_HELD;
    jb_printf(b, ",\"age\":%" PRIu64 ",\"held\":%s,\"recipients\":[",
              now_ms > e[0].arrival_ms ? (now_ms - e[0].arrival_ms) / 1000 : 0,
              held ? "true" : "false");
    for (size_t i = 0; i < n; i++) {
        if (e[i].rcpt_len == 0)
            continue;
        if (!first)
            jb_raw(b, ",", 1);
        first = false;
        jb_raw(b, e[i].rcpt, e[i].rcpt_len);
    }
    jb_raw(b, "]", 1);
}

static size_t
group_end(const struct ent *e, size_t n, size_t i)
{
    size_t j = i + 1;

    while (j < n && e[j].id == e[i].id)
        j++;
    return j;
}

static int
do_list(struct ctx *c, const struct qfilter *f, struct answer *a)
{
    struct worker_req rq = { WORKER_CTL_LIST, 0, *f };
    struct worker_ans sum;
    uint64_t now = clock_wall_ms();
    size_t n = 0, shown = 0, i = 0;
    struct ent *e;
    bool truncated;

    if (c->cfg->delivery == DELIVERY_HOLD)
        return spool_list(c, f, 0, a);
    if (ask(c, &rq, a, &sum) != 0)
        return a->status;
    e = collect(c, &n);
    if (e == NULL)
        return error_json(a, 500, "out of memory");
    truncated = sum.truncated;
    jb_raw(&a->b, "{\"messages\":[", 13);
    while (i < n) {
        size_t j = group_end(e, n, i);

        if (shown == f->limit) {
            truncated = true;
            break;
        }
        if (shown > 0)
            jb_raw(&a->b, ",", 1);
        message_json(&a->b, e + i, j - i, now);
        jb_raw(&a->b, "}", 1);
        shown++;
        i = j;
    }
    jb_printf(&a->b, "],\"count\":%zu,\"truncated\":%s}\n", shown, truncated ? "true" : "false");
    free(e);
    a->status = 200;
    return 200;
}

/* ---- one message ---- */

static void
no_log(void *arg, const char *line)
{
    (void)arg;
    (void)line;
}

/* The stored content of message id, as a JSON member ("body":...); from the spool. */
static int
body_json(struct ctx *c, uint64_t id, struct answer *a)
{
    struct spool_index idx = { 0 };
    char *body = NULL;
    size_t len = 0;
    int rc = spool_recover(c->cfg->spool_dir, &idx, no_log, NULL);

    if (rc < 0)
        return error_json(a, 500, "the spool cannot be read: %s", strerror(-rc));
    rc = -ENOENT;
    for (size_t i = 0; i < idx.nmsg; i++) {
        if (idx.msg[i].env.id == id) {
            rc = spool_read_body(c->cfg->spool_dir, &idx.msg[i], &body, &len);
            break;
        }
    }
    spool_index_free(&idx);
    if (rc == -ENOENT)
        return error_json(a, 404, "the message is no longer in the spool");
    if (rc < 0)
        return error_json(a, 500, "the stored message cannot be read: %s", strerror(-rc));
    jb_raw(&a->b, ",\"body\":", 8);
    jb_str(&a->b, body, MIN(len, (size_t)QUEUE_CTL_BODY_MAX));
    jb_printf(&a->b, ",\"body_truncated\":%s", len > QUEUE_CTL_BODY_MAX ? "true" : "false");
    free(body);
    return 0;
}

static int
do_show(struct ctx *c, uint64_t id, const struct qfilter *f, struct answer *a)
{
    struct worker_req rq = { .op = WORKER_CTL_LIST, .id = id };
    struct worker_ans sum;
    char qid[QID_LEN + 1];
    size_t n = 0;
    struct ent *e;

    qfilter_init(&rq.filter);
    if (c->cfg->delivery == DELIVERY_HOLD) {
        if (spool_list(c, f, id, a) != 200)
            return a->status;
        if (f->body && body_json(c, id, a) != 0)
            return a->status;
        jb_raw(&a->b, "}\n", 2);
        return 200;
    }
    if (ask(c, &rq, a, &sum) != 0)
        return a->status;
    qid_format(id, qid);
    e = collect(c, &n);
    if (e == NULL)
        return error_json(a, 500, "out of memory");
    if (n == 0) {
        free(e);
        return error_json(a, 404, "%s is not in the queue", qid);
    }
    message_json(&a->b, e, n, clock_wall_ms());
    free(e); /* the records stay in the workers' buffers until the next request */
    if (f->body && body_json(c, id, a) != 0)
        return a->status;
    jb_raw(&a->b, "}\n", 2);
    a->status = 200;
    return 200;
}

/* ---- delivery: hold: the spool is the queue ---- */

/*
 * With `delivery: hold` nothing reaches the workers: the list and the
 * messages come from the spool (recovery's scan, on the main thread), every
 * recipient "waiting", no attempt made. id != 0: that message only.
 */
static int
spool_list(struct ctx *c, const struct qfilter *f, uint64_t id, struct answer *a)
{
    struct spool_index idx = { 0 };
    uint64_t now = clock_wall_ms();
    size_t shown = 0;
    bool truncated = false;
    int rc = spool_recover(c->cfg->spool_dir, &idx, no_log, NULL);

    if (rc < 0)
        return error_json(a, 500, "the spool cannot be read: %s", strerror(-rc));
    if (id == 0)
        jb_raw(&a->b, "{\"messages\":[", 13);
    for (size_t i = 0; i < idx.nmsg; i++) {
        const struct spool_msg *m = &idx.msg[i];
        const struct envelope *e = &m->env;
        uint64_t arrival_ms = e->arrival * 1000;
        struct slice v = env_get(e, e->sender);
        bool first = true;

        if (id != 0 && e->id != id)
            continue;
        if (id == 0 && (!(f->states & QSTATE_WAITING) || !qfilter_sender_match(f, v) ||
                        !qfilter_age_match(f, now > arrival_ms ? now - arrival_ms : 0)))
            continue;
        if (id == 0) {
            bool any = false;

            for (uint32_t k = 0; k < e->nrcpt && !any; k++)
                any = !(m->rcpt_done && m->rcpt_done[k]) &&
                      qfilter_domain_match(f, env_get(e, e->rcpt[k].addr));
            if (!any)
                continue;
            if (shown == f->limit) {
                truncated = true;
                break;
            }
            if (shown > 0)
                jb_raw(&a->b, ",", 1);
        }
        jb_printf(&a->b,
                  "{\"qid\":\"%s\",\"arrival_time\":%" PRIu64 ".000,\"size\":%" PRIu64
                  ",\"sender\":",
                  e->qid, e->arrival, e->body_len);
        jb_str(&a->b, v.p, v.len);
        v = env_get(e, e->client);
        jb_raw(&a->b, ",\"client\":", 10);
        jb_str(&a->b, v.p, v.len);
        v = env_get(e, e->helo);
        jb_raw(&a->b, ",\"helo\":", 8);
        jb_str(&a->b, v.p, v.len);
        jb_printf(&a->b, ",\"age\":%" PRIu64 ",\"held\":false,\"recipients\":[",
                  now > arrival_ms ? (now - arrival_ms) / 1000 : 0);
        for (uint32_t k = 0; k < e->nrcpt; k++) {
            v = env_get(e, e->rcpt[k].addr);
            if ((m->rcpt_done && m->rcpt_done[k]) || (id == 0 && !qfilter_domain_match(f, v)))
                continue;
            jb_lit(&a->b, first ? "{\"address\":" : ",{\"address\":");
            first = false;
            jb_str(&a->b, v.p, v.len);
            jb_lit(&a->b, ",\"state\":\"waiting\",\"attempts\":0,\"next_attempt\":null,"
                          "\"last_reply\":null}");
        }
        jb_raw(&a->b, "]", 1);
        if (id != 0)
            break;
        jb_raw(&a->b, "}", 1);
        shown++;
    }
    spool_index_free(&idx);
    if (id == 0) {
        jb_printf(&a->b, "],\"count\":%zu,\"truncated\":%s}\n", shown,
                  truncated ? "true" : "false");
    } else if (a->b.len == 0) {
        char qid[QID_LEN + 1];

        qid_format(id, qid);
        return error_json(a, 404, "%s is not in the queue", qid);
    }
    a->status = 200;
    return 200;
}

/* ---- actions ---- */

enum action { ACT_FLUSH, ACT_HOLD, ACT_RELEASE, ACT_DELETE };

static const char *const act_name[] = { "flush", "hold", "release", "delete" };

struct tally {
    unsigned messages, deliveries, active;
};

/*
 * One message: the status (200, or an error answered in a) and what it did.
 * quiet: part of a filtered action (a message that cannot be acted on is
 * skipped, not an error, except for 500 and 503).
 */
static int
act_one(struct ctx *c, enum action act, uint64_t id, struct tally *t, struct answer *a, bool quiet)
{
    struct worker_req rq = { .op = WORKER_CTL_FLUSH, .id = id };
    struct worker_ans s;
    char qid[QID_LEN + 1];
    bool marker = false;
    int rc;

    qfilter_init(&rq.filter);
    qid_format(id, qid);
    if (c->cfg->delivery == DELIVERY_HOLD)
        return error_json(a, 409,
                          "delivery is hold in the configuration: nothing is delivered, so "
                          "there is nothing to %s",
                          act_name[act]);
    switch (act) {
    case ACT_FLUSH:
        rq.op = WORKER_CTL_FLUSH;
        if (ask(c, &rq, a, &s) != 0)
            return a->status;
        if (s.active + s.waiting + s.held == 0)
            return quiet ? 200 : error_json(a, 404, "%s is not in the queue", qid);
        if (s.held > 0 && !quiet)
            return error_json(a, 409, "%s is on hold: release it to deliver it", qid);
        break;
    case ACT_HOLD:
        /* the marker first: once a worker parks the message, a restart must keep it held */
        marker = marker_exists(c->cfg, id);
        if (!marker && (rc = marker_write(c->cfg, id)) < 0)
            return error_json(a, 500, "%s: the hold marker cannot be written: %s", qid,
                              strerror(-rc));
        rq.op = WORKER_CTL_HOLD;
        if (ask(c, &rq, a, &s) != 0)
            return a->status;
        if (s.err != 0 || s.active + s.waiting + s.held == 0) {
            /* unknown (or no memory): undo */
            struct worker_ans u;
            struct answer tmp = { 0 };

            rq.op = WORKER_CTL_RELEASE;
            (void)ask(c, &rq, &tmp, &u);
            free(tmp.b.p);
            if (!marker)
                (void)marker_remove(c->cfg, id);
            if (s.err != 0)
                return error_json(a, 500, "%s: out of memory", qid);
            return quiet ? 200 : error_json(a, 404, "%s is not in the queue", qid);
        }
        break;
    case ACT_RELEASE:
        rq.op = WORKER_CTL_RELEASE;
        if (ask(c, &rq, a, &s) != 0)
            return a->status; /* the marker stays: still held after a restart */
        rc = marker_remove(c->cfg, id);
        if (rc < 0)
            return error_json(a, 500, "%s: the hold marker cannot be removed: %s", qid,
                              strerror(-rc));
        marker = rc == 1;
        if (s.active + s.waiting + s.held == 0)
            return quiet ? 200 : error_json(a, 404, "%s is not in the queue", qid);
        if (s.held == 0 && !marker)
            return quiet ? 200 : error_json(a, 409, "%s is not on hold", qid);
        break;
    case ACT_DELETE:
        rq.op = WORKER_CTL_DELETE;
        if (ask(c, &rq, a, &s) != 0)
            return a->status;
        if (s.affected == 0 && s.active == 0)
            return quiet ? 200 : error_json(a, 404, "%s is not in the queue", qid);
        if (s.affected == 0)
            return quiet ? 200
                         : error_json(a, 409,
                                      "%s is being delivered right now; try again when the "
                                      "attempt is over",
                                      qid);
        if (s.active == 0 && (rc = marker_remove(c->cfg, id)) < 0)
            log_msg(LOG_WARN, "event=hold_marker qid=%s error=\"%s\"", qid, strerror(-rc));
        break;
    }
    log_msg(LOG_INFO, "event=queue_%s qid=%s deliveries=%u active=%u", act_name[act], qid,
            s.affected, s.active);
    t->messages++;
    t->deliveries += s.affected;
    t->active += s.active;
    return 200;
}

static int
tally_json(struct answer *a, enum action act, const char *qid, const struct tally *t)
{
    jb_printf(&a->b, "{\"action\":\"%s\",", act_name[act]);
    if (qid != NULL)
        jb_printf(&a->b, "\"qid\":\"%s\",", qid);
    jb_printf(&a->b, "\"messages\":%u,\"deliveries\":%u,\"active\":%u}\n", t->messages,
              t->deliveries, t->active);
    a->status = 200;
    return 200;
}

/* POST /queue/ACTION?filters: flush in the workers; the others message by message. */
static int
act_filtered(struct ctx *c, enum action act, const struct qfilter *f, struct slice query,
             struct answer *a)
{
    struct worker_req rq = { WORKER_CTL_FLUSH, 0, *f };
    struct tally t = { 0 };
    char q[512];
    uint64_t *ids;
    size_t n = 0, k = 0;
    struct ent *e;

    log_escape(q, sizeof(q), query.p, query.len);
    if (c->cfg->delivery == DELIVERY_HOLD)
        return error_json(a, 409,
                          "delivery is hold in the configuration: nothing is delivered, so "
                          "there is nothing to %s",
                          act_name[act]);
    if (act == ACT_FLUSH) {
        struct worker_ans s;

        if (ask(c, &rq, a, &s) != 0)
            return a->status;
        t.deliveries = s.affected;
        log_msg(LOG_INFO, "event=queue_flush deliveries=%u filter=\"%s\"", s.affected, q);
        return tally_json(a, act, NULL, &t);
    }
    if (!qfilter_narrows(f))
        return error_json(a, 400,
                          "%s of the whole queue: give at least one filter (domain, sender, "
                          "min_age, max_age, state)",
                          act_name[act]);
    rq.op = WORKER_CTL_LIST;
    if (act == ACT_RELEASE)
        rq.filter.states &= QSTATE_HELD;
    if (ask(c, &rq, a, &(struct worker_ans){ 0 }) != 0)
        return a->status;
    e = collect(c, &n);
    ids = calloc(MAX(n, (size_t)1), sizeof(*ids));
    if (e == NULL || ids == NULL) {
        free(e);
        free(ids);
        return error_json(a, 500, "out of memory");
    }
    for (size_t i = 0; i < n && k < f->limit; i = group_end(e, n, i))
        ids[k++] = e[i].id;
    free(e); /* the next request reuses the workers' buffers */
    for (size_t i = 0; i < k; i++) {
        int st = act_one(c, act, ids[i], &t, a, true);

        if (st != 200) {
            free(ids);
            return st;
        }
    }
    free(ids);
    log_msg(LOG_INFO, "event=queue_%s messages=%u deliveries=%u filter=\"%s\"", act_name[act],
            t.messages, t.deliveries, q);
    return tally_json(a, act, NULL, &t);
}

/* ---- routing ---- */

static bool
action_of(struct slice s, enum action *act)
{
    for (unsigned i = 0; i < ARRAY_SIZE(act_name); i++) {
        if (slice_eq(s, act_name[i])) {
            *act = (enum action)i;
            return true;
        }
    }
    return false;
}

static int
route(struct ctx *c, struct slice method, struct slice target, struct answer *a)
{
    struct slice path = http_target_path(target), query = slice_make("", 0), seg1, seg2;
    struct qfilter f;
    enum action act;
    char err[512], qtext[QID_LEN + 1];
    uint64_t id = 0;
    const char *slash;

    if (path.len < target.len)
        query = slice_make(target.p + path.len + 1, target.len - path.len - 1);
    qfilter_init(&f);
    if (qfilter_parse(&f, query, err, sizeof(err)) < 0)
        return error_json(a, 400, "%s", err);
    /* path: /queue, /queue/SEG1, /queue/SEG1/SEG2 */
    if (slice_eq(path, "/queue") || slice_eq(path, "/queue/")) {
        if (!slice_eq(method, "GET")) {
            a->allow = "GET";
            return error_json(a, 405, "GET /queue lists the queue");
        }
        return do_list(c, &f, a);
    }
    seg1 = slice_make(path.p + 7, path.len - 7);
    slash = memchr(seg1.p, '/', seg1.len);
    seg2 = slice_make("", 0);
    if (slash != NULL) {
        seg2 = slice_make(slash + 1, seg1.len - (size_t)(slash - seg1.p) - 1);
        seg1.len = (size_t)(slash - seg1.p);
    }
    if (slash == NULL && action_of(seg1, &act)) { /* /queue/flush?filters */
        if (!slice_eq(method, "POST")) {
            a->allow = "POST";
            return error_json(a, 405, "POST /queue/%s", act_name[act]);
        }
        return act_filtered(c, act, &f, query, a);
    }
    if (seg1.len == QID_LEN) {
        memcpy(qtext, seg1.p, QID_LEN);
        qtext[QID_LEN] = '\0';
    }
    if (seg1.len != QID_LEN || !qid_parse(qtext, &id) || id == 0)
        return error_json(a, 404,
                          "not found: /queue, /queue/QID (16 hex digits), "
                          "/queue/QID/{flush,hold,release,delete}, "
                          "/queue/{flush,hold,release,delete}");
    qid_format(id, qtext);
    if (slash == NULL) {
        if (slice_eq(method, "GET") && (qfilter_narrows(&f) || f.limit != QFILTER_LIMIT_DEFAULT))
            return error_json(a, 400, "GET /queue/QID takes body= only");
        if (slice_eq(method, "GET"))
            return do_show(c, id, &f, a);
        if (slice_eq(method, "DELETE"))
            act = ACT_DELETE;
        else {
            a->allow = "GET, DELETE";
            return error_json(a, 405, "GET or DELETE /queue/QID");
        }
    } else if (!action_of(seg2, &act)) {
        return error_json(a, 404, "not found: /queue/QID/{flush,hold,release,delete}");
    } else if (!slice_eq(method, "POST")) {
        a->allow = "POST";
        return error_json(a, 405, "POST /queue/QID/%s", act_name[act]);
    }
    if (qfilter_narrows(&f) || f.body || f.limit != QFILTER_LIMIT_DEFAULT)
        return error_json(a, 400, "an action on one message takes no filter");
    {
        struct tally t = { 0 };
        int st = act_one(c, act, id, &t, a, false);

        return st != 200 ? st : tally_json(a, act, qtext, &t);
    }
}

/* Whether the request's Ringmail-Spool-Dir (if any) names this instance's spool_dir. */
static bool
same_spool(const struct ringmail_config *cfg, const struct http_request *req)
{
    struct slice v;
    struct stat a, b;
    char path[CONFIG_PATH_MAX];

    if (!http_header_get(req, "Ringmail-Spool-Dir", &v))
        return true;
    if (v.len == 0 || v.len >= sizeof(path))
        return false;
    memcpy(path, v.p, v.len);
    path[v.len] = '\0';
    return stat(path, &a) == 0 && stat(cfg->spool_dir, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

int
queue_ctl_http(const struct ringmail_config *cfg, struct worker *workers, unsigned nworkers,
               const struct http_request *req, char **body, size_t *len, const char **allow)
{
    struct worker_ans *ans = calloc(MAX(nworkers, 1u), sizeof(*ans));
    struct ctx c = { cfg, workers, nworkers, ans };
    struct answer a = { 0 };

    *body = NULL;
    *len = 0;
    *allow = NULL;
    if (ans == NULL)
        return 500;
    if (!same_spool(cfg, req))
        (void)error_json(&a, 421, "this ringmail's spool_dir is not the one the request names");
    else
        (void)route(&c, req->method, req->target, &a);
    free(ans);
    if (a.b.bad) {
        free(a.b.p);
        a = (struct answer){ 0 };
        if (error_json(&a, 500, "the answer does not fit in memory") && a.b.bad) {
            free(a.b.p);
            return 500;
        }
    }
    *body = a.b.p;
    *len = a.b.len;
    *allow = a.allow;
    return a.status;
}
