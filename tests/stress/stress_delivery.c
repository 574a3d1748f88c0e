/*
 * stress_delivery: the whole path across threads. Two reactors and two
 * workers joined by the two meshes; eight client threads send messages that
 * the workers deliver into a Maildir. Every message that got its 250 must be
 * in new/ exactly once, and the spool must hold nothing pending afterwards
 * (DONE records written, segments removed or finished). A plain program
 * (exit 0 = pass, 77 = io_uring unavailable) so that it runs under
 * ThreadSanitizer: it exercises the hand-off, the completion rings, the
 * message reference counts and the sleep/notify protocol.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "net/reactor.h"
#include "net/worker.h"
#include "queue/spool.h"

enum { REACTORS = 2, WORKERS = 2, CLIENTS = 8, MSGS = 40 };

static uint16_t port;
static char qids[CLIENTS * MSGS][QID_LEN + 1];

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "stress_delivery: %s:%d: ", __FILE__, __LINE__);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static unsigned
free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind");
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &sl) == 0, "getsockname");
    close(fd);
    return ntohs(sin.sin_port);
}

/* Read until the buffer holds `want` final reply lines; 10 s at most. */
static void
replies(int fd, char *buf, size_t cap, int want)
{
    size_t len = 0;

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int seen = 0;
        ssize_t n;

        for (const char *l = buf; len > 0 && l < buf + len;) {
            const char *e = memchr(l, '\n', (size_t)(buf + len - l));

            if (e == NULL)
                break;
            if (e - l >= 4 && l[3] == ' ')
                seen++;
            l = e + 1;
        }
        if (seen >= want)
            return;
        CHECK(poll(&p, 1, 10000) == 1, "no reply within 10 s (have: %.*s)", (int)len, buf);
        n = read(fd, buf + len, cap - 1 - len);
        CHECK(n > 0, "connection closed early");
        len += (size_t)n;
        buf[len] = '\0';
    }
}

static void *
client(void *arg)
{
    int id = (int)(intptr_t)arg;
    static const char cmds[] = "EHLO stress.example\r\nMAIL FROM:<s@example.org>\r\n"
                               "RCPT TO:<r@example.net>\r\nDATA\r\n";
    static const char body[] = "Subject: stress\r\n\r\n..line\r\n.\r\nQUIT\r\n";

    for (int m = 0; m < MSGS; m++) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
        char buf[4096];
        const char *q;
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect");
        replies(fd, buf, sizeof(buf), 1);
        CHECK(write(fd, cmds, sizeof(cmds) - 1) == (ssize_t)sizeof(cmds) - 1, "write");
        replies(fd, buf, sizeof(buf), 4);
        CHECK(strstr(buf, "354 ") != NULL, "no 354: %s", buf);
        CHECK(write(fd, body, sizeof(body) - 1) == (ssize_t)sizeof(body) - 1, "write");
        replies(fd, buf, sizeof(buf), 2);
        q = strstr(buf, "250 2.0.0 Ok: queued as ");
        CHECK(q != NULL, "no 250: %s", buf);
        memcpy(qids[id * MSGS + m], q + 24, QID_LEN);
        close(fd);
    }
    return NULL;
}

static size_t
count_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int
main(void)
{
    static struct ringmail_config cfg;
    static struct reactor r[REACTORS];
    static struct worker w[WORKERS];
    static struct q_mesh to_workers, from_workers;
    struct spool_index idx = { 0 };
    pthread_t th[CLIENTS];
    char err[CONFIG_ERR_MAX], kv[512], dir[] = "/tmp/ringmail-stress-XXXXXX", newdir[128];
    size_t got = 0;
    int rc;

    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    port = (uint16_t)free_port();
    config_defaults(&cfg);
    snprintf(kv, sizeof(kv), "spool_dir=%s/spool", dir);
    CHECK(config_set(&cfg, kv, err, sizeof(err)) == 0, "%s", err);
    snprintf(kv, sizeof(kv), "routes=*=maildir:%s/md", dir);
    CHECK(config_set(&cfg, kv, err, sizeof(err)) == 0, "%s", err);
    snprintf(kv, sizeof(kv), "listen=127.0.0.1:%u", port);
    CHECK(config_set(&cfg, kv, err, sizeof(err)) == 0, "%s", err);
    CHECK(config_finish(&cfg, err, sizeof(err)) == 0, "%s", err);
    snprintf(kv, sizeof(kv), "%s/spool", dir);
    CHECK(mkdir(kv, 0700) == 0, "mkdir");
    CHECK(q_mesh_init(&to_workers, REACTORS, WORKERS, 64) == 0, "mesh");
    CHECK(q_mesh_init(&from_workers, WORKERS, REACTORS, 64) == 0, "mesh");
    for (unsigned i = 0; i < WORKERS; i++)
        CHECK(worker_init(&w[i], i, &cfg, &to_workers, &from_workers) == 0, "worker_init");
    for (unsigned i = 0; i < REACTORS; i++) {
        r[i].index = i;
        r[i].wake_fd = -1;
        r[i].to_workers = &to_workers;
        r[i].from_workers = &from_workers;
        r[i].nworkers = WORKERS;
        r[i].nreactors = REACTORS;
        q_mesh_set_notify(&from_workers, i, handoff_notify, &r[i]);
        CHECK(reactor_listen(&r[i], &cfg, err, sizeof(err)) == 0, "%s", err);
    }
    for (unsigned i = 0; i < WORKERS; i++) {
        rc = worker_start(&w[i]);
        if (rc == -ENOSYS || rc == -EPERM) {
            fprintf(stderr, "stress_delivery: io_uring unavailable, skipped\n");
            return 77;
        }
        CHECK(rc == 0, "worker_start: %s", strerror(-rc));
    }
    for (unsigned i = 0; i < REACTORS; i++)
        CHECK(reactor_start(&r[i], -1) == 0, "reactor_start");
    for (int i = 0; i < CLIENTS; i++)
        CHECK(pthread_create(&th[i], NULL, client, (void *)(intptr_t)i) == 0, "pthread_create");
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);

    /* every acknowledged message reaches the Maildir: 30 s at most */
    snprintf(newdir, sizeof(newdir), "%s/md/new", dir);
    for (int i = 0; i < 3000 && (got = count_files(newdir)) < CLIENTS * MSGS; i++) {
        struct timespec ts = { 0, 10000000 };

        nanosleep(&ts, NULL);
    }
    CHECK(got == CLIENTS * MSGS, "%zu files in %s, expected %d", got, newdir, CLIENTS * MSGS);

    for (unsigned i = 0; i < WORKERS; i++)
        worker_stop(&w[i]);
    for (unsigned i = 0; i < WORKERS; i++)
        worker_join(&w[i]);
    for (unsigned i = 0; i < REACTORS; i++)
        reactor_stop(&r[i]);
    for (unsigned i = 0; i < REACTORS; i++)
        reactor_join(&r[i]);
    q_mesh_fini(&to_workers);
    q_mesh_fini(&from_workers);

    /* delivered means finished: nothing is pending in the spool */
    snprintf(kv, sizeof(kv), "%s/spool", dir);
    CHECK(spool_recover(kv, &idx, NULL, NULL) == 0, "recover");
    CHECK(idx.nmsg == 0, "%zu messages still pending after delivery", idx.nmsg);
    spool_index_free(&idx);
    printf("stress_delivery: %d messages, %d reactors, %d workers: 1 passed, 0 failed\n",
           CLIENTS * MSGS, REACTORS, WORKERS);
    return 0;
}
