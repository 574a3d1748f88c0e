/*
 * stress_delivery: the whole path across threads. Two reactors and two
 * workers joined by the two meshes; eight client threads send messages that
 * the workers deliver into a Maildir. Every message that got its 250 must be
 * in new/ exactly once, and the spool must hold nothing pending afterwards
 * (DONE records written, segments removed or finished). A plain program
 * (exit 0 = pass, 77 = io_uring unavailable) so that it runs under
 * ThreadSanitizer: it exercises the hand-off, the completion rings, the
 * message reference counts and the sleep/notify protocol. While the clients
 * send, the main thread reloads the configuration RELOADS times, alternating
 * two that route the same mail differently (the snapshot hand-over, routes
 * moved to a new snapshot, deliveries routed again by their owners, retired
 * destinations and snapshots freed by whichever thread lets go last).
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
#include "net/reload.h"
#include "net/worker.h"
#include "queue/spool.h"

enum { REACTORS = 2, WORKERS = 2, CLIENTS = 8, MSGS = 40, RELOADS = 6 };

#define STRESS_NAME "stress_delivery"
#include "stress_clients.h"

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
    static struct ringmail_config cfg, alt;
    struct snapshot *snap;
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
    /* the same Maildir through a different route table: a reload to it routes again */
    alt = cfg;
    snprintf(kv, sizeof(kv), "routes=example.invalid=maildir:%s/md,*=maildir:%s/md", dir, dir);
    CHECK(config_set(&alt, kv, err, sizeof(err)) == 0, "%s", err);
    CHECK(config_finish(&alt, err, sizeof(err)) == 0, "%s", err);
    snap = snapshot_new(&cfg, 1, err, sizeof(err));
    CHECK(snap != NULL, "%s", err);
    for (unsigned i = 0; i < WORKERS; i++)
        CHECK(worker_init(&w[i], i, snap, &to_workers, &from_workers) == 0, "worker_init");
    for (unsigned i = 0; i < REACTORS; i++) {
        r[i].index = i;
        r[i].wake_fd = -1;
        r[i].to_workers = &to_workers;
        r[i].from_workers = &from_workers;
        r[i].nworkers = WORKERS;
        r[i].nreactors = REACTORS;
        q_mesh_set_notify(&from_workers, i, handoff_notify, &r[i]);
        CHECK(reactor_listen(&r[i], snap, err, sizeof(err)) == 0, "%s", err);
    }
    snapshot_put(snap); /* the threads hold their own */
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
    for (unsigned k = 0; k < RELOADS; k++) {
        struct timespec ts = { 0, 30000000 };

        nanosleep(&ts, NULL);
        snap = snapshot_new(k % 2 == 0 ? &alt : &cfg, 2 + k, err, sizeof(err));
        CHECK(snap != NULL, "%s", err);
        CHECK(reload_publish(r, REACTORS, w, WORKERS, snap) == 0, "reload %u: not adopted", k);
        snapshot_put(snap);
    }
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
