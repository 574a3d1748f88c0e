/*
 * admin.c: the admin HTTP endpoint: /healthz, /readyz, /metrics.
 *
 * Thread affinity: the main thread, from its poll loop (net/main.c), except
 * admin_set_draining()/admin_draining() (any thread). Never on a reactor.
 *
 * A small HTTP/1.1 server with no I/O that can block: a non-blocking
 * listening socket and at most ADMIN_MAX_CONNS non-blocking connections, each
 * in one of three states: READ (the request head, into its own
 * ADMIN_REQ_MAX-octet buffer, within ADMIN_READ_TIMEOUT_MS of the accept),
 * WRITE (the response, within ADMIN_WRITE_TIMEOUT_MS) and DRAIN (our side is
 * shut down; what the client still sends is read and dropped until it closes,
 * for at most ADMIN_DRAIN_MS, so that closing with unread input does not
 * reset the connection before the client has read the response). One
 * response per connection, `Connection: close`.
 *
 * Ownership: struct admin owns the sockets and the request buffers (inside
 * it); a response is malloc'd when the request is answered and freed when it
 * has been sent. The reactors' and workers' stats are only read, with relaxed
 * loads: each counter has one writer, its thread, so a scrape costs the hot
 * paths nothing.
 */
#define _GNU_SOURCE
#include "net/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/http.h"
#include "core/log.h"
#include "net/queue_ctl.h"
#include "net/reactor.h"
#include "net/util.h"
#include "net/worker.h"

#define ADMIN_DRAIN_MS        1000       /* lingering close: the client's leftovers, then close */
#define ADMIN_ACCEPT_PAUSE_MS 100        /* accept() failed for want of descriptors: wait */
#define ADMIN_OUT_MAX         (4u << 20) /* a response larger than this is refused (500) */
#define ADMIN_BACKLOG         64

enum aconn_state {
    AC_FREE = 0,
    AC_READ,  /* reading the request head */
    AC_WRITE, /* sending the response */
    AC_DRAIN, /* response sent, our side shut down: waiting for the client's close */
};

struct aconn {
    int fd; /* -1 when free */
    enum aconn_state state;
    uint64_t deadline_ms; /* monotonic: the connection is closed then, whatever its state */
    size_t len, scanned;  /* request octets in req; where the parser resumes */
    char *out;            /* the response (AC_WRITE), malloc'd */
    size_t out_len, out_off;
    char peer[INET6_ADDRSTRLEN];
    char req[ADMIN_REQ_MAX];
};

struct admin {
    int lfd;
    const struct ringmail_config *cfg;
    struct admin_sources src;
    char addr[CONFIG_HOST_MAX + 16]; /* admin_listen as text, for messages */
    char token[ADMIN_TOKEN_MAX];
    size_t token_len;         /* 0: no token required */
    uint64_t start_ms;        /* wall clock, for ringmail_start_time_seconds */
    uint64_t accept_after_ms; /* monotonic: accept() paused until then */
    /* the pollfds of the last admin_poll_fds(): -1 the listener, else a connection index */
    int map[ADMIN_POLLFDS];
    unsigned nmap;
    unsigned nconns;
    struct aconn c[ADMIN_MAX_CONNS];
};

/* any thread: the drain work sets it, /readyz reads it */
static atomic_bool draining;

void
admin_set_draining(bool on)
{
    atomic_store_explicit(&draining, on, memory_order_relaxed);
}

bool
admin_draining(void)
{
    return atomic_load_explicit(&draining, memory_order_relaxed);
}

/* ---- a growing output buffer (main thread; bounded by ADMIN_OUT_MAX) ---- */

struct obuf {
    char *p;
    size_t len, cap;
    bool bad; /* out of memory or over ADMIN_OUT_MAX: the text is incomplete */
};

static void ob_printf(struct obuf *o, const char *fmt, ...) PRINTF(2, 3);

static void
ob_printf(struct obuf *o, const char *fmt, ...)
{
    va_list ap;

    for (int tries = 0; tries < 2 && !o->bad; tries++) {
        size_t room = o->cap - o->len, cap;
        char *p;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(o->p == NULL ? NULL : o->p + o->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->bad = true;
            return;
        }
        if ((size_t)n < room) {
            o->len += (size_t)n;
            return;
        }
        cap = MAX(MAX(o->cap * 2, o->len + (size_t)n + 1), (size_t)16384);
        p = cap > ADMIN_OUT_MAX ? NULL : realloc(o->p, cap);
        if (p == NULL) {
            o->bad = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

/* ---- start-up ---- */

static bool
is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

int
admin_token_read(char token[ADMIN_TOKEN_MAX], size_t *token_len, const char *path, char *err,
                 size_t errlen)
{
    char buf[ADMIN_TOKEN_MAX + 1];
    size_t len = 0;
    struct stat st;
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), rc = -1;

    if (fd == -1) {
        snprintf(err, errlen, "key 'admin_token_file': %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        /* a FIFO or a device would block, or never end */
        snprintf(err, errlen, "key 'admin_token_file': %s: not a regular file", path);
        close(fd);
        return -1;
    }
    if ((st.st_mode & 077) != 0)
        log_msg(LOG_WARN,
                "event=config key=admin_token_file file=%s note=\"readable by others than its "
                "owner; chmod 600\"",
                path);
    while (len < sizeof(buf) &&
           ((n = read(fd, buf + len, sizeof(buf) - len)) > 0 || (n < 0 && errno == EINTR)))
        len += n > 0 ? (size_t)n : 0;
    close(fd);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        len--;
    if (n < 0) {
        snprintf(err, errlen, "key 'admin_token_file': %s: %s", path, strerror(errno));
    } else if (len > ADMIN_TOKEN_MAX) {
        snprintf(err, errlen, "key 'admin_token_file': %s: longer than %d octets", path,
                 ADMIN_TOKEN_MAX);
    } else if (len == 0) {
        snprintf(err, errlen, "key 'admin_token_file': %s: empty; expected the token", path);
    } else {
        rc = 0;
        for (size_t i = 0; i < len && rc == 0; i++) {
            if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
                snprintf(err, errlen,
                         "key 'admin_token_file': %s: the token holds a blank, a control or a "
                         "non-ASCII octet; expected one line of printable ASCII",
                         path);
                rc = -1;
            }
        }
    }
    if (rc == 0) {
        memcpy(token, buf, len);
        *token_len = len;
    }
    explicit_bzero(buf, sizeof(buf)); /* on every path: the secret does not stay on the stack */
    return rc;
}

int
admin_open(const struct ringmail_config *cfg, const struct admin_sources *src, struct admin **out,
           char *err, size_t errlen)
{
    const struct config_hostport *hp = &cfg->admin_listen;
    struct sockaddr_storage ss;
    socklen_t sl;
    struct admin *a;
    int one = 1;

    *out = NULL;
    if (hp->port == 0)
        return 0;
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, errlen, "key 'admin_listen': out of memory");
        return -1;
    }
    a->lfd = -1;
    a->cfg = cfg;
    a->src = *src;
    for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++)
        a->c[i].fd = -1;
    config_hostport_text(hp, a->addr, sizeof(a->addr));
    if (cfg->admin_token_file[0] != '\0' &&
        admin_token_read(a->token, &a->token_len, cfg->admin_token_file, err, errlen) < 0)
        goto fail;
    if (hostport_sockaddr(hp, &ss, &sl) < 0) {
        snprintf(err, errlen, "key 'admin_listen': %s: not an IP address (names are not resolved)",
                 a->addr);
        goto fail;
    }
    a->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->lfd == -1 || setsockopt(a->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(a->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1) ||
        bind(a->lfd, (struct sockaddr *)&ss, sl) == -1 || listen(a->lfd, ADMIN_BACKLOG) == -1) {
        snprintf(err, errlen, "key 'admin_listen': %s: %s", a->addr, strerror(errno));
        goto fail;
    }
    a->start_ms = src->start_ms != 0 ? src->start_ms : clock_wall_ms();
    log_msg(LOG_INFO, "event=admin_listening addr=%s auth=%s", a->addr,
            a->token_len > 0 ? "bearer" : "none");
    if (a->token_len == 0 && !is_loopback(&ss))
        log_msg(LOG_WARN,
                "event=config key=admin_listen addr=%s note=\"not a loopback address and no "
                "admin_token_file: whoever can reach it reads the metrics and controls the queue\"",
                a->addr);
    *out = a;
    return 0;

fail:
    if (a->lfd != -1)
        close(a->lfd);
    explicit_bzero(a->token, sizeof(a->token));
    free(a);
    return -1;
}

int
admin_reload(struct admin *a, const struct ringmail_config *cfg)
{
    char token[ADMIN_TOKEN_MAX], err[CONFIG_ERR_MAX];
    size_t len = 0;

    if (a == NULL)
        return 0;
    a->cfg = cfg; /* /queue serves under the configuration in service (its delivery mode) */
    if (cfg->admin_token_file[0] == '\0') {
        if (a->token_len > 0)
            log_msg(LOG_WARN, "event=reload what=admin_token result=kept note=\"admin_token_file "
                              "is empty in this configuration; the token in service stays\"");
        return 0;
    }
    if (admin_token_read(token, &len, cfg->admin_token_file, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR,
                "event=reload what=admin_token result=refused error=\"%s\" note=\"the token in "
                "service stays\"",
                err);
        return -1;
    }
    explicit_bzero(a->token, sizeof(a->token));
    memcpy(a->token, token, len);
    a->token_len = len;
    explicit_bzero(token, sizeof(token));
    log_msg(LOG_INFO, "event=reload what=admin_token result=ok file=%s", cfg->admin_token_file);
    return 0;
}

static void
conn_close(struct admin *a, struct aconn *c)
{
    BUG_ON(c->state == AC_FREE);
    close(c->fd);
    free(c->out);
    c->out = NULL;
    c->fd = -1;
    c->state = AC_FREE;
    c->len = c->scanned = c->out_len = c->out_off = 0;
    a->nconns--;
}

void
admin_close(struct admin *a)
{
    if (a == NULL)
        return;
    for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
        if (a->c[i].state != AC_FREE)
            conn_close(a, &a->c[i]);
    }
    close(a->lfd);
    explicit_bzero(a->token, sizeof(a->token));
    free(a);
}

/* ---- /readyz ---- */

/* true, or false with a one-line reason in why */
static bool
ready(struct admin *a, char *why, size_t n)
{
    const char *dir = a->cfg->spool_dir;
    struct statvfs sv;
    uint64_t avail, total;

    if (admin_draining()) {
        snprintf(why, n, "draining");
        return false;
    }
    for (unsigned i = 0; i < a->src.nreactors; i++) {
        struct reactor *r = &a->src.reactors[i];

        if (atomic_load_explicit(&r->started, memory_order_acquire) != 1 ||
            atomic_load_explicit(&r->stop, memory_order_relaxed)) {
            snprintf(why, n, "not listening: reactor %u is not running", i);
            return false;
        }
    }
    for (unsigned i = 0; i < a->src.nworkers; i++) {
        struct worker *w = &a->src.workers[i];

        if (atomic_load_explicit(&w->started, memory_order_acquire) != 1 ||
            atomic_load_explicit(&w->stop, memory_order_relaxed)) {
            snprintf(why, n, "delivery: worker %u is not running", i);
            return false;
        }
    }
    if (statvfs(dir, &sv) != 0) {
        snprintf(why, n, "spool_dir %s: %s", dir, strerror(errno));
        return false;
    }
    if (sv.f_flag & ST_RDONLY) {
        snprintf(why, n, "spool_dir %s: read-only file system", dir);
        return false;
    }
    if (faccessat(AT_FDCWD, dir, W_OK, AT_EACCESS) != 0) {
        snprintf(why, n, "spool_dir %s: not writable: %s", dir, strerror(errno));
        return false;
    }
    avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    total = (uint64_t)sv.f_blocks * sv.f_frsize;
    if (avail < ADMIN_SPOOL_MIN_FREE && avail < total / 100 * ADMIN_SPOOL_MIN_PERCENT) {
        snprintf(why, n,
                 "spool_dir %s: full: %" PRIu64 " KiB free, under 64 MiB and under %d%% of "
                 "the file system",
                 dir, avail >> 10, ADMIN_SPOOL_MIN_PERCENT);
        return false;
    }
    if (sv.f_files > 0 && sv.f_favail == 0) {
        snprintf(why, n, "spool_dir %s: no free inodes", dir);
        return false;
    }
    return true;
}

/* ---- /metrics ---- */

struct counter {
    const char *name;  /* the family; rows of one family are consecutive */
    const char *label; /* NULL, or one label pair: reason="busy" */
    const char *help;
    size_t off; /* of the _Atomic uint64_t in struct reactor_stats or worker_stats */
};

#define RSTAT(f) offsetof(struct reactor_stats, f)
#define WSTAT(f) offsetof(struct worker_stats, f)

/* summed over the reactors */
static const struct counter reactor_counters[] = {
    { "ringmail_connections_accepted_total", NULL,
      "Client connections accepted (before any refusal).", RSTAT(accepted) },
    { "ringmail_connections_refused_total", "reason=\"busy\"",
      "Client connections refused: busy = max_connections reached or no free slot, proxy = "
      "a missing, malformed or untrusted PROXY header.",
      RSTAT(refused_busy) },
    { "ringmail_connections_refused_total", "reason=\"proxy\"", NULL, RSTAT(refused_proxy) },
    { "ringmail_connections_closed_total", NULL, "Client connections closed.", RSTAT(closed) },
    { "ringmail_connections_too_slow_total", NULL,
      "Client connections closed for sending under smtpd_min_data_rate.", RSTAT(too_slow) },
    { "ringmail_limit_refusals_total", NULL,
      "Refusals by the per-client limits (connection count and rate, message, recipient and "
      "AUTH failure rates).",
      RSTAT(refused_limit) },
    { "ringmail_received_bytes_total", NULL, "Octets received from clients.", RSTAT(bytes_in) },
    { "ringmail_messages_received_total", NULL,
      "Messages made durable in the spool and acknowledged (250), the bounces ringmail "
      "generates included.",
      RSTAT(msgs_accepted) },
    { "ringmail_messages_refused_total", NULL,
      "Messages refused at their end or cut off before it (never stored).", RSTAT(msgs_refused) },
    { "ringmail_spool_commit_errors_total", NULL,
      "Messages whose spool write or sync failed (answered 452 4.3.1).", RSTAT(commit_errors) },
    { "ringmail_spool_fsyncs_total", NULL, "fdatasync calls on spool segments (group commits).",
      RSTAT(fsyncs) },
    { "ringmail_spool_segments_unlinked_total", NULL,
      "Spool segment files removed once everything in them was finished.",
      RSTAT(segments_unlinked) },
    { "ringmail_bounces_total", NULL, "Bounces (delivery status notifications) spooled.",
      RSTAT(bounces) },
    { "ringmail_recv_buffer_exhausted_total", NULL,
      "Receives that found the provided-buffer ring empty (ENOBUFS).", RSTAT(enobufs) },
    { "ringmail_tls_handshakes_total", NULL, "TLS handshakes completed (STARTTLS and smtps).",
      RSTAT(tls_handshakes) },
    { "ringmail_tls_handshake_failures_total", NULL, "TLS handshakes that failed.",
      RSTAT(tls_failures) },
    { "ringmail_tls_resumed_total", NULL, "TLS handshakes that resumed a session.",
      RSTAT(tls_resumed) },
    { "ringmail_auth_checks_total", "result=\"ok\"",
      "AUTH passwords checked by the verifiers: ok, failed (535), tempfail (454: the "
      "verifiers' queue was full).",
      RSTAT(auth_ok) },
    { "ringmail_auth_checks_total", "result=\"failed\"", NULL, RSTAT(auth_failed) },
    { "ringmail_auth_checks_total", "result=\"tempfail\"", NULL, RSTAT(auth_tempfail) },
};

/* summed over the workers */
static const struct counter worker_counters[] = {
    { "ringmail_delivery_recipients_total", "result=\"delivered\"",
      "Recipient delivery outcomes: delivered (2xx, or into a Maildir), deferred (to be "
      "retried), failed (5xx or expired; the sender is owed a bounce).",
      WSTAT(delivered) },
    { "ringmail_delivery_recipients_total", "result=\"deferred\"", NULL, WSTAT(deferred) },
    { "ringmail_delivery_recipients_total", "result=\"failed\"", NULL, WSTAT(failed) },
    { "ringmail_delivery_sessions_total", NULL, "Outbound SMTP and LMTP sessions started.",
      WSTAT(sessions) },
    { "ringmail_delivery_connect_errors_total", NULL,
      "Outbound connections that could not be made.", WSTAT(connect_errors) },
};

static uint64_t
load_u64(void *stats, size_t off)
{
    _Atomic uint64_t *p = (_Atomic uint64_t *)((char *)stats + off);

    return atomic_load_explicit(p, memory_order_relaxed);
}

static void
family(struct obuf *o, const char *name, const char *type, const char *help)
{
    ob_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
counters(struct obuf *o, const struct counter *t, size_t n, void *base, size_t stride,
         unsigned count, size_t stats_off)
{
    for (size_t k = 0; k < n; k++) {
        uint64_t sum = 0;

        if (k == 0 || strcmp(t[k].name, t[k - 1].name) != 0)
            family(o, t[k].name, "counter", t[k].help);
        for (unsigned i = 0; i < count; i++)
            sum += load_u64((char *)base + i * stride + stats_off, t[k].off);
        if (t[k].label != NULL)
            ob_printf(o, "%s{%s} %" PRIu64 "\n", t[k].name, t[k].label, sum);
        else
            ob_printf(o, "%s %" PRIu64 "\n", t[k].name, sum);
    }
}

/* One series per thread: name{label="i"} value. */
static void
per_thread(struct obuf *o, const char *name, const char *help, const char *label, void *base,
           size_t stride, unsigned count, size_t off)
{
    family(o, name, "counter", help);
    for (unsigned i = 0; i < count; i++)
        ob_printf(o, "%s{%s=\"%u\"} %" PRIu64 "\n", name, label, i,
                  load_u64((char *)base + i * stride, off));
}

/* A histogram family's sums over the threads (buckets not cumulative yet). */
struct hist_total {
    uint64_t b[HIST_SLOTS];
    uint64_t sum_us;
};

static void
hist_add(struct hist_total *t, const struct hist *h, const struct hist_layout *l)
{
    for (unsigned i = 0; i <= l->n; i++)
        t->b[i] += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
    t->sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
}

/* One histogram series: cumulative _bucket rows, _sum in seconds, _count (= the +Inf
   bucket, so the two always agree). label: NULL, or one pair such as result="ok". */
static void
hist_rows(struct obuf *o, const char *name, const char *label, const struct hist_layout *l,
          const struct hist_total *t)
{
    const char *sep = label != NULL ? "," : "";
    uint64_t cum = 0;
    char v[32];

    if (label == NULL)
        label = "";
    for (unsigned i = 0; i < l->n; i++) {
        cum += t->b[i];
        hist_seconds_text(l->le_us[i], v, sizeof(v));
        ob_printf(o, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, label, sep, v, cum);
    }
    cum += t->b[l->n];
    ob_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, label, sep, cum);
    hist_seconds_text(t->sum_us, v, sizeof(v));
    if (label[0] != '\0') {
        ob_printf(o, "%s_sum{%s} %s\n", name, label, v);
        ob_printf(o, "%s_count{%s} %" PRIu64 "\n", name, label, cum);
    } else {
        ob_printf(o, "%s_sum %s\n%s_count %" PRIu64 "\n", name, v, name, cum);
    }
}

static const char *const attempt_result[WORKER_ATTEMPT_RESULTS] = {
    [WORKER_ATTEMPT_DELIVERED] = "result=\"delivered\"",
    [WORKER_ATTEMPT_DEFERRED] = "result=\"deferred\"",
    [WORKER_ATTEMPT_FAILED] = "result=\"failed\"",
};

static void
histograms(struct admin *a, struct obuf *o)
{
    struct hist_total t;

    memset(&t, 0, sizeof(t));
    for (unsigned i = 0; i < a->src.nreactors; i++)
        hist_add(&t, &a->src.reactors[i].stats.commit_latency, &hist_commit_latency);
    family(o, "ringmail_commit_latency_seconds", "histogram",
           "Per message from a client, the end of its data (DATA or BDAT LAST) to its 250 "
           "being queued: the spool write and the group commit (fdatasync).");
    hist_rows(o, "ringmail_commit_latency_seconds", NULL, &hist_commit_latency, &t);

    memset(&t, 0, sizeof(t));
    for (unsigned i = 0; i < a->src.nworkers; i++)
        hist_add(&t, &a->src.workers[i].stats.residence, &hist_queue_residence);
    family(o, "ringmail_queue_residence_seconds", "histogram",
           "Per delivery (a message has one per route of its recipients), its message's "
           "arrival to the delivery's end: every recipient delivered or bounced.");
    hist_rows(o, "ringmail_queue_residence_seconds", NULL, &hist_queue_residence, &t);

    family(o, "ringmail_delivery_attempt_duration_seconds", "histogram",
           "One delivery attempt, from a session or Maildir job taking the delivery to its "
           "result: delivered (all its recipients), deferred (one still pending), failed "
           "(none pending, one refused).");
    for (unsigned k = 0; k < WORKER_ATTEMPT_RESULTS; k++) {
        memset(&t, 0, sizeof(t));
        for (unsigned i = 0; i < a->src.nworkers; i++)
            hist_add(&t, &a->src.workers[i].stats.attempt[k], &hist_attempt_duration);
        hist_rows(o, "ringmail_delivery_attempt_duration_seconds", attempt_result[k],
                  &hist_attempt_duration, &t);
    }
}

/* The queue and spool gauges, from the reactors. */
static void
queue_gauges(struct admin *a, struct obuf *o)
{
    uint64_t msgs = 0, oldest = 0, segs = 0, bytes = 0, now = clock_wall_ms(), age;

    for (unsigned i = 0; i < a->src.nreactors; i++) {
        struct reactor_stats *st = &a->src.reactors[i].stats;
        uint64_t t = atomic_load_explicit(&st->queue_oldest_ms, memory_order_relaxed);

        msgs += atomic_load_explicit(&st->queue_messages, memory_order_relaxed);
        segs += atomic_load_explicit(&st->spool_segments, memory_order_relaxed);
        bytes += atomic_load_explicit(&st->spool_bytes, memory_order_relaxed);
        if (t != 0 && (oldest == 0 || t < oldest))
            oldest = t;
    }
    age = oldest != 0 && now > oldest ? now - oldest : 0;
    family(o, "ringmail_queue_messages", "gauge",
           "Messages accepted (or recovered at start) and not finished: some recipient not yet "
           "delivered or bounced. Not counted with delivery: hold.");
    ob_printf(o, "ringmail_queue_messages %" PRIu64 "\n", msgs);
    family(o, "ringmail_queue_oldest_message_age_seconds", "gauge",
           "Age of the oldest message counted by ringmail_queue_messages; 0 when there is none.");
    ob_printf(o, "ringmail_queue_oldest_message_age_seconds %" PRIu64 ".%03u\n", age / 1000,
              (unsigned)(age % 1000));
    family(o, "ringmail_spool_segments", "gauge",
           "Spool segment files on disk, recovered ones included.");
    ob_printf(o, "ringmail_spool_segments %" PRIu64 "\n", segs);
    family(o, "ringmail_spool_bytes", "gauge",
           "Size of the spool segment files (octets written or being written).");
    ob_printf(o, "ringmail_spool_bytes %" PRIu64 "\n", bytes);
}

struct dest_row {
    const char *name;
    uint64_t active, deferrals;
};

static int
dest_row_cmp(const void *x, const void *y)
{
    return strcmp(((const struct dest_row *)x)->name, ((const struct dest_row *)y)->name);
}

static void label_value(struct obuf *o, const char *s);

/* Per destination, merged over the workers by name (one worker may share a name with
   another after a reload, or through two routes with the same first hop). */
static void
destinations(struct admin *a, struct obuf *o)
{
    struct dest_row *rows, other = { "other", 0, 0 };
    size_t n = 0, m = 0;
    bool full = false;

    rows = calloc((size_t)a->src.nworkers * DESTTAB_MAX + 1, sizeof(*rows));
    if (rows == NULL) {
        o->bad = true;
        return;
    }
    for (unsigned i = 0; i < a->src.nworkers; i++) {
        struct desttab *t = &a->src.workers[i].stats.dests;
        unsigned k, pub = desttab_published(t);

        for (k = 0; k < pub; k++) {
            rows[n].name = t->slot[k].name;
            rows[n].active = atomic_load_explicit(&t->slot[k].active, memory_order_relaxed);
            rows[n].deferrals = atomic_load_explicit(&t->slot[k].deferrals, memory_order_relaxed);
            n++;
        }
        full |= pub == DESTTAB_MAX;
        other.active += atomic_load_explicit(&t->slot[DESTTAB_OTHER].active, memory_order_relaxed);
        other.deferrals +=
            atomic_load_explicit(&t->slot[DESTTAB_OTHER].deferrals, memory_order_relaxed);
    }
    if (n > 1)
        qsort(rows, n, sizeof(*rows), dest_row_cmp);
    for (size_t k = 0; k < n; k++) {
        if (m > 0 && strcmp(rows[m - 1].name, rows[k].name) == 0) {
            rows[m - 1].active += rows[k].active;
            rows[m - 1].deferrals += rows[k].deferrals;
        } else {
            rows[m++] = rows[k];
        }
    }
    if (full)
        rows[m++] = other;
    family(o, "ringmail_destination_active_sessions", "gauge",
           "Outbound sessions (and Maildir jobs) working for a destination now; destination: "
           "its route's first next hop as relay= logs it (\"other\": past 64 per worker).");
    for (size_t k = 0; k < m; k++) {
        ob_printf(o, "ringmail_destination_active_sessions{destination=\"");
        label_value(o, rows[k].name);
        ob_printf(o, "\"} %" PRIu64 "\n", rows[k].active);
    }
    family(o, "ringmail_destination_deferrals_total", "counter",
           "Recipients deferred (to be retried), per destination.");
    for (size_t k = 0; k < m; k++) {
        ob_printf(o, "ringmail_destination_deferrals_total{destination=\"");
        label_value(o, rows[k].name);
        ob_printf(o, "\"} %" PRIu64 "\n", rows[k].deferrals);
    }
    free(rows);
}

/* A label value: \, " and newline escaped (exposition format 0.0.4). */
static void
label_value(struct obuf *o, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            ob_printf(o, "\\%c", *s);
        else if (*s == '\n')
            ob_printf(o, "\\n");
        else
            ob_printf(o, "%c", *s);
    }
}

static void
metrics(struct admin *a, struct obuf *o)
{
    struct reactor *rs = a->src.reactors;
    struct worker *ws = a->src.workers;
    struct statvfs sv;

    family(o, "ringmail_build_info", "gauge", "ringmail's version, as a label; always 1.");
    ob_printf(o, "ringmail_build_info{version=\"");
    label_value(o, a->src.version != NULL ? a->src.version : "unknown");
    ob_printf(o, "\"} 1\n");
    family(o, "ringmail_start_time_seconds", "gauge",
           "When the process started, in seconds since the epoch.");
    ob_printf(o, "ringmail_start_time_seconds %" PRIu64 ".%03u\n", a->start_ms / 1000,
              (unsigned)(a->start_ms % 1000));
    family(o, "ringmail_connections", "gauge", "Client connections open now (all reactors).");
    ob_printf(o, "ringmail_connections %u\n",
              atomic_load_explicit(&reactor_shared.connections, memory_order_relaxed));
    family(o, "ringmail_draining", "gauge", "1 while draining (/readyz fails), else 0.");
    ob_printf(o, "ringmail_draining %d\n", admin_draining() ? 1 : 0);
    if (statvfs(a->cfg->spool_dir, &sv) == 0) {
        family(o, "ringmail_spool_free_bytes", "gauge",
               "Space left for ringmail on spool_dir's file system.");
        ob_printf(o, "ringmail_spool_free_bytes %" PRIu64 "\n",
                  (uint64_t)sv.f_bavail * sv.f_frsize);
    }

    counters(o, reactor_counters, ARRAY_SIZE(reactor_counters), rs, sizeof(*rs), a->src.nreactors,
             offsetof(struct reactor, stats));
    per_thread(o, "ringmail_reactor_loops_total", "Event loop turns, per reactor.", "reactor", rs,
               sizeof(*rs), a->src.nreactors, offsetof(struct reactor, stats) + RSTAT(loops));
    per_thread(o, "ringmail_reactor_cqes_total", "io_uring completions handled, per reactor.",
               "reactor", rs, sizeof(*rs), a->src.nreactors,
               offsetof(struct reactor, stats) + RSTAT(cqes));
    counters(o, worker_counters, ARRAY_SIZE(worker_counters), ws, sizeof(*ws), a->src.nworkers,
             offsetof(struct worker, stats));
    per_thread(o, "ringmail_worker_loops_total", "Event loop turns, per delivery worker.", "worker",
               ws, sizeof(*ws), a->src.nworkers, offsetof(struct worker, stats) + WSTAT(loops));
    queue_gauges(a, o);
    histograms(a, o);
    destinations(a, o);
}

/* ---- serving ---- */

static const char *
status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 421:
        return "Misdirected Request";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

static void conn_write(struct admin *a, struct aconn *c);

/* Queue the response and send what the socket takes now. extra: header lines, CRLF each. */
static void
respond(struct admin *a, struct aconn *c, int status, const char *extra, const char *ctype,
        const char *body, size_t blen)
{
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                      status, status_text(status), ctype, blen, extra != NULL ? extra : "");

    BUG_ON(hl < 0 || (size_t)hl >= sizeof(head));
    c->out = malloc((size_t)hl + blen);
    if (c->out == NULL) {
        conn_close(a, c);
        return;
    }
    memcpy(c->out, head, (size_t)hl);
    if (blen > 0)
        memcpy(c->out + hl, body, blen);
    c->out_len = (size_t)hl + blen;
    c->out_off = 0;
    c->state = AC_WRITE;
    c->deadline_ms = clock_mono_ms() + ADMIN_WRITE_TIMEOUT_MS;
    conn_write(a, c);
}

static void
respond_text(struct admin *a, struct aconn *c, int status, const char *extra, const char *text)
{
    respond(a, c, status, extra, "text/plain; charset=utf-8", text, strlen(text));
}

static void
serve(struct admin *a, struct aconn *c, const struct http_request *req)
{
    struct slice path = http_target_path(req->target), auth;
    char why[256 + CONFIG_PATH_MAX];

    if (a->token_len > 0 && (!http_header_get(req, "Authorization", &auth) ||
                             !http_bearer_match(auth, a->token, a->token_len))) {
        char p[LOG_PEER_MAX * 4 + 1];

        log_escape(p, sizeof(p), path.p, path.len);
        log_msg(LOG_INFO, "event=admin_denied client=%s path=\"%s\" note=\"no valid bearer token\"",
                c->peer, p);
        respond_text(a, c, 401, "WWW-Authenticate: Bearer realm=\"ringmail\"\r\n",
                     "a bearer token is required\n");
        return;
    }
    if (path.len >= 6 && memcmp(path.p, "/queue", 6) == 0 && (path.len == 6 || path.p[6] == '/')) {
        /* queue control: JSON, any method the path takes (net/queue_ctl.c) */
        const char *allow;
        char *body, hdr[64] = "";
        size_t blen;
        int st = queue_ctl_http(a->cfg, a->src.workers, a->src.nworkers, req, &body, &blen, &allow);

        if (body == NULL) {
            respond_text(a, c, 500, NULL, "out of memory\n");
            return;
        }
        if (allow != NULL)
            snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
        respond(a, c, st, hdr, "application/json", body, blen);
        free(body);
        return;
    }
    if (!slice_eq(req->method, "GET")) {
        respond_text(a, c, 405, "Allow: GET\r\n", "only GET is served\n");
        return;
    }
    if (slice_eq(path, "/healthz")) {
        respond_text(a, c, 200, NULL, "ok\n");
    } else if (slice_eq(path, "/readyz")) {
        if (ready(a, why, sizeof(why) - 1)) {
            respond_text(a, c, 200, NULL, "ready\n");
        } else {
            strncat(why, "\n", 2);
            respond_text(a, c, 503, NULL, why);
        }
    } else if (slice_eq(path, "/metrics")) {
        struct obuf o = { 0 };

        metrics(a, &o);
        if (o.bad)
            respond_text(a, c, 500, NULL, "the metrics do not fit in memory\n");
        else
            respond(a, c, 200, NULL, "text/plain; version=0.0.4; charset=utf-8", o.p, o.len);
        free(o.p);
    } else {
        respond_text(a, c, 404, NULL,
                     "not found: /healthz, /readyz, /metrics and /queue are served\n");
    }
}

static void
conn_read(struct admin *a, struct aconn *c)
{
    struct http_request req;
    bool eof = false;
    size_t used;

    while (c->len < sizeof(c->req)) {
        ssize_t n = recv(c->fd, c->req + c->len, sizeof(c->req) - c->len, 0);

        if (n > 0) {
            c->len += (size_t)n;
        } else if (n == 0) {
            eof = true; /* a client may shut down its side once its request is sent */
            break;
        } else if (errno != EINTR) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_close(a, c);
                return;
            }
            break;
        }
    }
    switch (http_parse_request(c->req, c->len, &c->scanned, &req, &used)) {
    case HTTP_PARSE_OK:
        serve(a, c, &req);
        return;
    case HTTP_PARSE_BAD:
        respond_text(a, c, 400, NULL, "malformed request\n");
        return;
    case HTTP_PARSE_NEED_MORE:
        if (c->len == sizeof(c->req))
            respond_text(a, c, 431, NULL, "request head over 8 KiB\n");
        else if (eof)
            conn_close(a, c); /* gone before its request was whole */
        return;
    }
}

static void
conn_write(struct admin *a, struct aconn *c)
{
    while (c->out_off < c->out_len) {
        /* MSG_NOSIGNAL: a client gone early is an EPIPE here, not a SIGPIPE */
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return; /* POLLOUT next */
        } else {
            conn_close(a, c);
            return;
        }
    }
    free(c->out);
    c->out = NULL;
    (void)shutdown(c->fd, SHUT_WR);
    c->state = AC_DRAIN;
    c->deadline_ms = clock_mono_ms() + ADMIN_DRAIN_MS;
}

/* Read and drop until the client closes (or the deadline); the response is on its way. */
static void
conn_drain(struct admin *a, struct aconn *c)
{
    for (unsigned i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, c->req, sizeof(c->req), 0);

        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        break;
    }
    conn_close(a, c);
}

static void
accept_all(struct admin *a)
{
    for (unsigned tries = 0; tries < 2 * ADMIN_MAX_CONNS && a->nconns < ADMIN_MAX_CONNS; tries++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        struct aconn *c = NULL;
        int fd = accept4(a->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_msg(LOG_WARN, "event=admin_error error=\"accept: %s\"", strerror(errno));
                a->accept_after_ms = clock_mono_ms() + ADMIN_ACCEPT_PAUSE_MS;
            }
            return;
        }
        for (unsigned i = 0; i < ADMIN_MAX_CONNS && c == NULL; i++) {
            if (a->c[i].state == AC_FREE)
                c = &a->c[i];
        }
        BUG_ON(c == NULL);
        c->fd = fd;
        c->state = AC_READ;
        c->deadline_ms = clock_mono_ms() + ADMIN_READ_TIMEOUT_MS;
        c->len = c->scanned = 0;
        snprintf(c->peer, sizeof(c->peer), "unknown");
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer, sizeof(c->peer));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer, sizeof(c->peer));
        a->nconns++;
    }
}

unsigned
admin_poll_fds(struct admin *a, struct pollfd *pfd, unsigned cap)
{
    unsigned n = 0;

    if (a == NULL)
        return 0;
    BUG_ON(cap < ADMIN_POLLFDS);
    /* at the connection limit the listener is left out: new clients wait in the backlog */
    if (a->nconns < ADMIN_MAX_CONNS && clock_mono_ms() >= a->accept_after_ms) {
        pfd[n] = (struct pollfd){ .fd = a->lfd, .events = POLLIN };
        a->map[n++] = -1;
    }
    for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
        const struct aconn *c = &a->c[i];

        if (c->state == AC_FREE)
            continue;
        pfd[n] = (struct pollfd){ .fd = c->fd, .events = c->state == AC_WRITE ? POLLOUT : POLLIN };
        a->map[n++] = (int)i;
    }
    a->nmap = n;
    return n;
}

int
admin_poll_timeout(const struct admin *a)
{
    uint64_t now, next = UINT64_MAX;

    if (a == NULL)
        return -1;
    now = clock_mono_ms();
    if (a->accept_after_ms > now)
        next = a->accept_after_ms;
    for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
        if (a->c[i].state != AC_FREE)
            next = MIN(next, a->c[i].deadline_ms);
    }
    if (next == UINT64_MAX)
        return -1;
    return next <= now ? 0 : (int)MIN(next - now, (uint64_t)60000);
}

void
admin_handle(struct admin *a, const struct pollfd *pfd, unsigned n)
{
    bool accept_ready = false;
    uint64_t now;

    if (a == NULL)
        return;
    BUG_ON(n > a->nmap);
    for (unsigned i = 0; i < n; i++) {
        struct aconn *c;

        if (pfd[i].revents == 0)
            continue;
        if (a->map[i] < 0) {
            accept_ready = true;
            continue;
        }
        c = &a->c[a->map[i]];
        if (c->fd != pfd[i].fd)
            continue;
        switch (c->state) {
        case AC_READ:
            conn_read(a, c);
            break;
        case AC_WRITE:
            conn_write(a, c);
            break;
        case AC_DRAIN:
            conn_drain(a, c);
            break;
        case AC_FREE:
            break;
        }
    }
    now = clock_mono_ms();
    for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
        struct aconn *c = &a->c[i];

        if (c->state != AC_FREE && now >= c->deadline_ms) {
            if (c->state != AC_DRAIN)
                log_msg(LOG_DEBUG, "event=admin_timeout client=%s state=%s", c->peer,
                        c->state == AC_READ ? "request" : "response");
            conn_close(a, c);
        }
    }
    /* last: a slot freed above may be taken now, and no pfd entry names it any more */
    if (accept_ready)
        accept_all(a);
}
