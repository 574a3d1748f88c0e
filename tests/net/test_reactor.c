/*
 * Tests for net/: a real reactor thread on a loopback port with a real spool,
 * driven over a TCP socket from the test thread. Built with every preset, so
 * these also run under ThreadSanitizer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/config.h"
#include "net/reactor.h"
#include "queue/spool.h"

struct fixture {
    struct ringmail_config cfg;
    struct reactor r;
    char dir[64];
    uint16_t port;
};

/* A port the kernel just handed out and took back: free for the test to bind. */
static unsigned
free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void
start(struct fixture *f, const char *const *overrides)
{
    char err[CONFIG_ERR_MAX], kv[128];
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct snapshot *snap;
    int rc;

    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/ringmail-test-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    config_defaults(&f->cfg);
    snprintf(kv, sizeof(kv), "spool_dir=%s", f->dir);
    cr_assert_eq(config_set(&f->cfg, kv, err, sizeof(err)), 0, "%s", err);
    snprintf(kv, sizeof(kv), "listen=127.0.0.1:%u", free_port());
    cr_assert_eq(config_set(&f->cfg, kv, err, sizeof(err)), 0, "%s", err);
    for (int i = 0; overrides && overrides[i]; i++)
        cr_assert_eq(config_set(&f->cfg, overrides[i], err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(config_finish(&f->cfg, err, sizeof(err)), 0, "%s", err);

    f->r.index = 0;
    f->r.wake_fd = -1;
    snap = snapshot_new(&f->cfg, 1, err, sizeof(err));
    cr_assert_not_null(snap, "%s", err);
    rc = reactor_listen(&f->r, snap, err, sizeof(err));
    snapshot_put(snap); /* the reactor holds its own */
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(getsockname(f->r.lis[0].fd, (struct sockaddr *)&sin, &sl), 0);
    f->port = ntohs(sin.sin_port);
    rc = reactor_start(&f->r, -1);
    if (rc == -ENOSYS || rc == -EPERM)
        cr_skip_test("io_uring unavailable: %s", strerror(-rc));
    cr_assert_eq(rc, 0, "reactor_start: %s", strerror(-rc));
}

static void
stop(struct fixture *f)
{
    reactor_stop(&f->r);
    reactor_join(&f->r);
}

static int
dial(uint16_t port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_neq(fd, -1);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

/* Read until `want` replies (final lines: code followed by a space) or 5 s pass. */
static size_t
read_replies(int fd, char *buf, size_t cap, int want)
{
    size_t len = 0;
    int seen = 0;

    while (seen < want && len + 1 < cap) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;

        if (poll(&p, 1, 5000) != 1)
            break;
        n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        seen = 0;
        for (const char *l = buf; l < buf + len;) {
            const char *e = memchr(l, '\n', (size_t)(buf + len - l));

            if (e == NULL)
                break;
            if (e - l >= 4 && l[3] == ' ')
                seen++;
            l = e + 1;
        }
    }
    buf[len] = '\0';
    return len;
}

static void
say(int fd, const char *s)
{
    size_t n = strlen(s);

    cr_assert_eq(write(fd, s, n), (ssize_t)n);
}

Test(reactor, pipelined_message_is_durable_before_250)
{
    static const char *const ov[] = { "durability=fsync", NULL };
    static struct fixture f; /* outlives a failed assertion: the reactor thread uses it */
    struct spool_index idx = { 0 };
    char buf[4096], qid[QID_LEN + 1];
    const char *q;
    int fd;

    start(&f, ov);
    fd = dial(f.port);
    read_replies(fd, buf, sizeof(buf), 1);
    cr_assert(strncmp(buf, "220 ", 4) == 0, "greeting: %s", buf);
    say(fd, "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
            "DATA\r\n");
    read_replies(fd, buf, sizeof(buf), 4);
    cr_assert(strstr(buf, "250 2.1.0") && strstr(buf, "250 2.1.5") && strstr(buf, "354 "), "%s",
              buf);
    say(fd, "Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
    read_replies(fd, buf, sizeof(buf), 2);
    q = strstr(buf, "250 2.0.0 Ok: queued as ");
    cr_assert_not_null(q, "%s", buf);
    memcpy(qid, q + 24, QID_LEN);
    qid[QID_LEN] = '\0';
    cr_assert_not_null(strstr(buf, "221 2.0.0"), "%s", buf);
    close(fd);
    stop(&f);

    /* what got its 250 is in the spool, with the dot unstuffed */
    cr_assert_eq(spool_recover(f.dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_str_eq(idx.msg[0].env.qid, qid);
    {
        char *body;
        size_t len;

        cr_assert_eq(spool_read_body(f.dir, &idx.msg[0], &body, &len), 0);
        cr_assert_not_null(memmem(body, len, "\r\n.dot\r\nbody\r\n", 14));
        cr_assert(strncmp(body, "Received: from client.example", 29) == 0);
        free(body);
    }
    spool_index_free(&idx);
}

Test(reactor, many_clients_each_get_their_own_queue_id)
{
    enum { N = 20 };
    static struct fixture f; /* outlives a failed assertion: the reactor thread uses it */
    struct spool_index idx = { 0 };
    int fds[N];
    char buf[4096];

    start(&f, NULL);
    for (int i = 0; i < N; i++) {
        fds[i] = dial(f.port);
        read_replies(fds[i], buf, sizeof(buf), 1);
        say(fds[i], "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@example.net>\r\nDATA\r\n");
    }
    for (int i = 0; i < N; i++) {
        read_replies(fds[i], buf, sizeof(buf), 4);
        say(fds[i], "hello\r\n.\r\n");
    }
    for (int i = 0; i < N; i++) {
        read_replies(fds[i], buf, sizeof(buf), 1);
        cr_assert_not_null(strstr(buf, "250 2.0.0 Ok: queued as "), "%s", buf);
        close(fds[i]);
    }
    stop(&f);
    cr_assert_eq(spool_recover(f.dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, N);
    for (size_t i = 1; i < idx.nmsg; i++)
        cr_assert_neq(idx.msg[i].env.id, idx.msg[i - 1].env.id);
    spool_index_free(&idx);
}

Test(reactor, large_body_spans_chunks_and_survives)
{
    static struct fixture f; /* outlives a failed assertion: the reactor thread uses it */
    struct spool_index idx = { 0 };
    char buf[4096], line[1002];
    size_t total = 0;
    int fd;

    start(&f, NULL);
    fd = dial(f.port);
    read_replies(fd, buf, sizeof(buf), 1);
    say(fd, "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
    read_replies(fd, buf, sizeof(buf), 4);
    memset(line, 'x', 998);
    memcpy(line + 998, "\r\n", 3);
    for (int i = 0; i < 300; i++) { /* 300 KB: several 64 KiB chunks */
        say(fd, line);
        total += 1000;
    }
    say(fd, ".\r\n");
    read_replies(fd, buf, sizeof(buf), 1);
    cr_assert_not_null(strstr(buf, "250 2.0.0 Ok: queued as "), "%s", buf);
    close(fd);
    stop(&f);
    cr_assert_eq(spool_recover(f.dir, &idx, NULL, NULL), 0);
    cr_assert_eq(idx.nmsg, 1);
    cr_assert_gt(idx.msg[0].nextent, 1);
    cr_assert_gt(idx.msg[0].env.body_len, total);
    spool_index_free(&idx);
}
