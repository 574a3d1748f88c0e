/*
 * bench/tls_source.c: an SMTP load generator with and without STARTTLS, for
 * bench/tls.sh. Postfix's smtp-source has no TLS, so this client drives both
 * modes with the same code: the only difference between a plaintext and a
 * TLS run is the STARTTLS exchange, the handshake and the record layer.
 *
 *   tls_source [-s SESSIONS] [-m COUNT] [-n PER_SESSION] [-l SIZE] [-T] [-R]
 *              [-H] [-w TIMEOUT] 127.0.0.1:PORT
 *
 * -s   parallel sessions (one thread each, blocking I/O), default 20
 * -m   messages to send in all (with -H: connections), default 1000
 * -n   messages per connection, default 1 (a new connection per message)
 * -l   message size in octets, headers included (about), default 1024
 * -T   STARTTLS after the first EHLO, then EHLO again (RFC 3207)
 * -R   with -T: resume TLS sessions (TLS 1.3 tickets; each thread keeps the
 *      newest ticket it was sent and offers it on its next connection)
 * -H   handshake load: per connection 220, EHLO, [STARTTLS + handshake], QUIT;
 *      no message
 * -w   per-operation socket timeout in seconds (SO_RCVTIMEO/SO_SNDTIMEO), 30
 *
 * One message per connection: 220, EHLO, [STARTTLS, 220, handshake, EHLO],
 * then per message MAIL FROM, RCPT TO, DATA, 354, body + ".", 250, then QUIT,
 * 221. Commands are sent one at a time (no pipelining), like smtp-source.
 * Certificates are not verified (the benchmark's is self-signed).
 *
 * Prints one line of key=value pairs on stdout (wall time, counts, the
 * client's own CPU time, the negotiated TLS version/cipher/group, resumed
 * handshakes) and exits 0 only if every connection and message succeeded.
 * Built by bench/CMakeLists.txt against BoringSSL; not installed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in g_addr;
static long g_total = 1000, g_per_session = 1, g_size = 1024;
static int g_sessions = 20, g_timeout = 30;
static bool g_tls, g_resume, g_handshake;
static SSL_CTX *g_ctx;
static char *g_body;
static size_t g_body_len;

static atomic_long g_next;  /* messages (or connections with -H) handed out */
static atomic_long g_done;  /* messages accepted (250 after the data) */
static atomic_long g_conns; /* connections completed through QUIT/221 */
static atomic_long g_errors;
static atomic_long g_resumed;
static atomic_long g_handshakes;
static char g_tls_desc[128];
static pthread_mutex_t g_desc_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_first_error[256];

struct worker {
    pthread_t tid;
    SSL_SESSION *session; /* newest ticket, for -R */
};

struct conn {
    int fd;
    SSL *ssl;
    char buf[4096];
    size_t len; /* bytes in buf */
    struct worker *w;
};

static void
note_error(const char *fmt, ...)
{
    if (atomic_fetch_add(&g_errors, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_first_error, sizeof(g_first_error), fmt, ap);
        va_end(ap);
    }
}

static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct conn *c = SSL_get_app_data(ssl);
    if (c == NULL || c->w == NULL)
        return 0;
    if (c->w->session != NULL)
        SSL_SESSION_free(c->w->session);
    c->w->session = sess; /* returning 1 takes the reference */
    return 1;
}

static int
io_write(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k;
        if (c->ssl != NULL) {
            int r = SSL_write(c->ssl, p, n > (size_t)1 << 30 ? 1 << 30 : (int)n);
            if (r <= 0)
                return -1;
            k = r;
        } else {
            k = send(c->fd, p, n, MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static ssize_t
io_read(struct conn *c, char *p, size_t n)
{
    if (c->ssl != NULL) {
        int r = SSL_read(c->ssl, p, (int)n);
        return r > 0 ? r : -1;
    }
    for (;;) {
        ssize_t k = recv(c->fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        return k > 0 ? k : -1;
    }
}

/* Read one complete reply; 0 if its code is `want`, -1 otherwise. */
static int
reply(struct conn *c, int want, const char *what)
{
    for (;;) {
        /* consume complete lines; the last line has a space after the code */
        char *nl;
        while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
            size_t line = (size_t)(nl - c->buf) + 1;
            bool last = line < 5 || c->buf[3] != '-';
            int code = atoi(c->buf);
            char text[96];
            snprintf(text, sizeof(text), "%.*s", (int)(line > 90 ? 90 : line - 1), c->buf);
            memmove(c->buf, c->buf + line, c->len - line);
            c->len -= line;
            if (last) {
                if (code == want)
                    return 0;
                note_error("%s: expected %d, got \"%s\"", what, want, text);
                return -1;
            }
        }
        if (c->len == sizeof(c->buf)) {
            note_error("%s: reply line too long", what);
            return -1;
        }
        ssize_t k = io_read(c, c->buf + c->len, sizeof(c->buf) - c->len);
        if (k <= 0) {
            note_error("%s: connection closed or timed out (%s)", what,
                       c->ssl ? "TLS" : strerror(errno));
            return -1;
        }
        c->len += (size_t)k;
    }
}

static int
cmd(struct conn *c, const char *line, int want)
{
    char out[256];
    int n = snprintf(out, sizeof(out), "%s\r\n", line);
    if (io_write(c, out, (size_t)n) < 0) {
        note_error("%s: write failed", line);
        return -1;
    }
    return reply(c, want, line);
}

static int
starttls(struct conn *c)
{
    if (cmd(c, "STARTTLS", 220) < 0)
        return -1;
    if (c->len != 0) {
        note_error("data after the STARTTLS reply");
        return -1;
    }
    c->ssl = SSL_new(g_ctx);
    if (c->ssl == NULL) {
        note_error("SSL_new failed");
        return -1;
    }
    SSL_set_app_data(c->ssl, c);
    SSL_set_fd(c->ssl, c->fd);
    if (g_resume && c->w->session != NULL)
        SSL_set_session(c->ssl, c->w->session);
    if (SSL_connect(c->ssl) != 1) {
        char why[160] = "closed";
        uint32_t e = ERR_get_error(); /* BoringSSL: uint32_t */
        if (e != 0)
            ERR_error_string_n(e, why, sizeof(why));
        note_error("TLS handshake failed: %s", why);
        ERR_clear_error();
        return -1;
    }
    atomic_fetch_add(&g_handshakes, 1);
    if (SSL_session_reused(c->ssl))
        atomic_fetch_add(&g_resumed, 1);
    if (g_tls_desc[0] == '\0') {
        pthread_mutex_lock(&g_desc_lock);
        if (g_tls_desc[0] == '\0') {
            const char *group = SSL_get_curve_name(SSL_get_curve_id(c->ssl));
            snprintf(g_tls_desc, sizeof(g_tls_desc), "%s/%s/%s", SSL_get_version(c->ssl),
                     SSL_CIPHER_standard_name(SSL_get_current_cipher(c->ssl)),
                     group ? group : "none");
        }
        pthread_mutex_unlock(&g_desc_lock);
    }
    return 0;
}

/* One connection carrying `msgs` messages (0 with -H). */
static int
session(struct worker *w, long msgs)
{
    struct conn c = { .fd = -1, .w = w };
    int rc = -1;
    c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
        note_error("socket: %s", strerror(errno));
        return -1;
    }
    struct timeval tv = { .tv_sec = g_timeout };
    int one = 1;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c.fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) < 0) {
        note_error("connect: %s", strerror(errno));
        goto out;
    }
    if (reply(&c, 220, "greeting") < 0 || cmd(&c, "EHLO client.bench.example", 250) < 0)
        goto out;
    if (g_tls &&
        (starttls(&c) < 0 || (!g_handshake && cmd(&c, "EHLO client.bench.example", 250) < 0)))
        goto out;
    for (long i = 0; i < msgs; i++) {
        if (cmd(&c, "MAIL FROM:<bench@example.org>", 250) < 0 ||
            cmd(&c, "RCPT TO:<sink@example.net>", 250) < 0 || cmd(&c, "DATA", 354) < 0)
            goto out;
        if (io_write(&c, g_body, g_body_len) < 0) {
            note_error("message body: write failed");
            goto out;
        }
        if (reply(&c, 250, "end of data") < 0)
            goto out;
        atomic_fetch_add(&g_done, 1);
    }
    if (cmd(&c, "QUIT", 221) < 0)
        goto out;
    atomic_fetch_add(&g_conns, 1);
    rc = 0;
out:
    if (c.ssl != NULL)
        SSL_free(c.ssl); /* no close_notify: after 221 both modes just close */
    close(c.fd);
    return rc;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    long batch = g_handshake ? 1 : g_per_session;
    for (;;) {
        long start = atomic_fetch_add(&g_next, batch);
        if (start >= g_total)
            break;
        long n = g_total - start < batch ? g_total - start : batch;
        if (session(w, g_handshake ? 0 : n) < 0 && atomic_load(&g_errors) > 10)
            break; /* give up after a few failures: the run is failed anyway */
    }
    return NULL;
}

static void
build_body(void)
{
    /* headers, then 76-character lines up to about g_size octets, then "." */
    size_t cap = (size_t)g_size + 1024;
    g_body = malloc(cap);
    if (g_body == NULL)
        exit(2);
    int n = snprintf(g_body, cap,
                     "From: <bench@example.org>\r\nTo: <sink@example.net>\r\n"
                     "Subject: tls_source benchmark message\r\n"
                     "Message-ID: <tls-source@client.bench.example>\r\n\r\n");
    size_t len = (size_t)n;
    while (len + 78 <= (size_t)g_size) {
        for (int i = 0; i < 76; i++)
            g_body[len + i] = (char)('a' + (len + i) % 26);
        g_body[len + 76] = '\r';
        g_body[len + 77] = '\n';
        len += 78;
    }
    memcpy(g_body + len, ".\r\n", 3);
    g_body_len = len + 3;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: tls_source [-s sessions] [-m count] [-n per_session] [-l size] [-T] [-R] "
            "[-H] [-w timeout] 127.0.0.1:PORT\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "s:m:n:l:TRHw:")) != -1) {
        switch (opt) {
        case 's':
            g_sessions = atoi(optarg);
            break;
        case 'm':
            g_total = atol(optarg);
            break;
        case 'n':
            g_per_session = atol(optarg);
            break;
        case 'l':
            g_size = atol(optarg);
            break;
        case 'T':
            g_tls = true;
            break;
        case 'R':
            g_resume = true;
            break;
        case 'H':
            g_handshake = true;
            break;
        case 'w':
            g_timeout = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (optind != argc - 1 || g_sessions < 1 || g_sessions > 1000 || g_total < 1 ||
        g_per_session < 1 || g_size < 0 || g_size > 100 << 20 || g_timeout < 1 ||
        (g_resume && !g_tls))
        usage();
    char host[64];
    const char *colon = strrchr(argv[optind], ':');
    if (colon == NULL || (size_t)(colon - argv[optind]) >= sizeof(host))
        usage();
    memcpy(host, argv[optind], (size_t)(colon - argv[optind]));
    host[colon - argv[optind]] = '\0';
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1)
        usage();
    signal(SIGPIPE, SIG_IGN);

    g_ctx = SSL_CTX_new(TLS_method());
    if (g_ctx == NULL || !SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(g_ctx, TLS1_3_VERSION)) {
        fprintf(stderr, "tls_source: SSL_CTX setup failed\n");
        return 2;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
    if (g_resume) {
        SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(g_ctx, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    }
    build_body();

    struct worker *w = calloc((size_t)g_sessions, sizeof(*w));
    if (w == NULL)
        return 2;
    double t0 = now();
    int started = 0;
    for (int i = 0; i < g_sessions; i++) {
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            note_error("pthread_create failed");
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].tid, NULL);
        if (w[i].session != NULL)
            SSL_SESSION_free(w[i].session);
    }
    double wall = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    long want_msgs = g_handshake ? 0 : g_total;
    long want_conns = g_handshake ? g_total : (g_total + g_per_session - 1) / g_per_session;
    long errors = atomic_load(&g_errors);
    bool ok =
        errors == 0 && atomic_load(&g_done) == want_msgs && atomic_load(&g_conns) == want_conns;
    printf("wall=%.3f messages=%ld connections=%ld handshakes=%ld resumed=%ld errors=%ld "
           "client_cpu=%.3f tls=%s ok=%d\n",
           wall, atomic_load(&g_done), atomic_load(&g_conns), atomic_load(&g_handshakes),
           atomic_load(&g_resumed), errors, cpu, g_tls_desc[0] ? g_tls_desc : "none", ok ? 1 : 0);
    if (errors > 0)
        fprintf(stderr, "tls_source: %ld errors, first: %s\n", errors, g_first_error);
    SSL_CTX_free(g_ctx);
    free(g_body);
    free(w);
    return ok ? 0 : 1;
}
