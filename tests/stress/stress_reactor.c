/*
 * stress_reactor: two reactor threads on one SO_REUSEPORT port, eight client
 * threads each sending messages over fresh connections; every message must get
 * its 250 and be in the spool afterwards with its own queue id. A plain
 * program (exit 0 = pass, 77 = io_uring unavailable) so that it runs under
 * ThreadSanitizer, which Criterion cannot start under.
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
#include <unistd.h>

#include "core/config.h"
#include "net/reactor.h"
#include "queue/spool.h"

enum { REACTORS = 2, CLIENTS = 8, MSGS = 40 };

#define STRESS_NAME "stress_reactor"
#include "stress_clients.h"

static int
cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, QID_LEN + 1);
}

int
main(void)
{
    static struct ringmail_config cfg;
    static struct reactor r[REACTORS];
    struct spool_index idx = { 0 };
    struct snapshot *snap;
    pthread_t th[CLIENTS];
    char err[CONFIG_ERR_MAX], kv[128], dir[] = "/tmp/ringmail-stress-XXXXXX";
    int rc;

    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    port = (uint16_t)free_port();
    config_defaults(&cfg);
    snprintf(kv, sizeof(kv), "spool_dir=%s", dir);
    CHECK(config_set(&cfg, kv, err, sizeof(err)) == 0, "%s", err);
    snprintf(kv, sizeof(kv), "listen=127.0.0.1:%u", port);
    CHECK(config_set(&cfg, kv, err, sizeof(err)) == 0, "%s", err);
    CHECK(config_finish(&cfg, err, sizeof(err)) == 0, "%s", err);
    snap = snapshot_new(&cfg, 1, err, sizeof(err));
    CHECK(snap != NULL, "%s", err);
    for (unsigned i = 0; i < REACTORS; i++) {
        r[i].index = i;
        r[i].wake_fd = -1;
        CHECK(reactor_listen(&r[i], snap, err, sizeof(err)) == 0, "%s", err);
    }
    snapshot_put(snap); /* each reactor holds its own */
    for (unsigned i = 0; i < REACTORS; i++) {
        rc = reactor_start(&r[i], -1);
        if (rc == -ENOSYS || rc == -EPERM) {
            fprintf(stderr, "stress_reactor: io_uring unavailable, skipped\n");
            return 77;
        }
        CHECK(rc == 0, "reactor_start: %s", strerror(-rc));
    }
    for (int i = 0; i < CLIENTS; i++)
        CHECK(pthread_create(&th[i], NULL, client, (void *)(intptr_t)i) == 0, "pthread_create");
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(th[i], NULL);
    for (unsigned i = 0; i < REACTORS; i++)
        reactor_stop(&r[i]);
    for (unsigned i = 0; i < REACTORS; i++)
        reactor_join(&r[i]);

    /* every acknowledged message is in the spool, each with its own queue id */
    CHECK(spool_recover(dir, &idx, NULL, NULL) == 0, "recover");
    CHECK(idx.nmsg == CLIENTS * MSGS, "spool holds %zu messages, expected %d", idx.nmsg,
          CLIENTS * MSGS);
    qsort(qids, CLIENTS * MSGS, sizeof(qids[0]), cmp_id);
    for (size_t i = 0; i < idx.nmsg; i++) {
        CHECK(i == 0 || strcmp(qids[i], qids[i - 1]) != 0, "queue id %s given twice", qids[i]);
        CHECK(bsearch(idx.msg[i].env.qid, qids, CLIENTS * MSGS, sizeof(qids[0]), cmp_id),
              "spooled %s was never acknowledged", idx.msg[i].env.qid);
    }
    spool_index_free(&idx);
    printf("stress_reactor: %d messages through %d reactors: 1 passed, 0 failed\n", CLIENTS * MSGS,
           REACTORS);
    return 0;
}
