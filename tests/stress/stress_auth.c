/*
 * stress_auth: two "reactor" threads each submit thousands of AUTH checks to
 * a pool of three verifiers, keeping their AUTH_POOL_SLOTS slots full, while
 * the main thread swaps the password database as fast as it can load it.
 * Every token must be answered exactly once with the right verdict. The two
 * databases hold the same passwords under different salts, so the verdict
 * does not depend on which one a request met.
 *
 * A reactor sleeps on its eventfd (the notify hook writes it) whenever it
 * has nothing to submit and nothing to take, and a sleep of 10 s with
 * requests outstanding fails the run: that is a lost wake-up. The last
 * PINGS requests go one at a time, so each of their verdicts needs its own
 * notify.
 *
 * A plain program (exit 0 = pass) so that it runs under ThreadSanitizer,
 * which Criterion cannot start under. Cheap hashes ($5$, 1000 rounds) keep
 * the run short.
 */
#define _GNU_SOURCE
#include <crypt.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "net/auth.h"

#define STRESS_NAME "stress_auth"
#include "stress.h"

/* BULK requests per reactor with every slot in use, then PINGS with one outstanding at a
   time, so that each verdict is the first push on an empty done stack and only its notify
   can wake the reactor */
enum { REACTORS = 2, VERIFIERS = 3, BULK = 4000, PINGS = 300, USERS = 16, UNKNOWN = 4, GENS = 2 };
#define REQS (BULK + PINGS)

struct lane {
    unsigned index;
    pthread_t thread;
    int efd;
    unsigned submitted, answered, eagain, sleeps;
    unsigned char seen[REQS];
};

static struct auth_pool *pool;
static struct lane lanes[REACTORS];
static atomic_uint running = REACTORS;
static char files[GENS][64];

/* Request i of any lane: its user (the last UNKNOWN are not in the file) and password. */
static unsigned
req_user(unsigned i)
{
    return (i * 7u) % (USERS + UNKNOWN);
}

static bool
req_good_pass(unsigned i)
{
    return i % 3u != 0;
}

static bool
req_expect(unsigned i)
{
    return req_user(i) < USERS && req_good_pass(i);
}

static void
notify(void *arg)
{
    struct lane *l = arg;
    uint64_t one = 1;

    CHECK(write(l->efd, &one, sizeof(one)) == (ssize_t)sizeof(one), "eventfd write");
}

static void
on_result(void *arg, uint64_t token, bool ok)
{
    struct lane *l = arg;
    unsigned i = (unsigned)(token & 0xffffffffu);

    CHECK(token >> 32 == l->index, "reactor %u got token %#llx of another reactor", l->index,
          (unsigned long long)token);
    CHECK(i < REQS, "token %#llx out of range", (unsigned long long)token);
    CHECK(!l->seen[i], "reactor %u: token %u answered twice", l->index, i);
    l->seen[i] = 1;
    CHECK(ok == req_expect(i), "reactor %u: token %u (user %u, %s password): verdict %d", l->index,
          i, req_user(i), req_good_pass(i) ? "good" : "bad", ok);
    l->answered++;
}

static void *
reactor(void *arg)
{
    struct lane *l = arg;

    while (l->answered < REQS) {
        bool progress = false;

        while (l->submitted < REQS && (l->submitted < BULK || l->submitted == l->answered)) {
            unsigned i = l->submitted;
            char user[16], pass[16];
            int rc;

            snprintf(user, sizeof(user), "user%u", req_user(i));
            snprintf(pass, sizeof(pass), req_good_pass(i) ? "pw-%u" : "bad-%u", req_user(i));
            rc = auth_pool_submit(pool, l->index, (uint64_t)l->index << 32 | i, user, strlen(user),
                                  pass, strlen(pass));
            if (rc == -EAGAIN) {
                l->eagain++;
                break;
            }
            CHECK(rc == 0, "submit: %d", rc);
            l->submitted++;
            progress = true;
        }
        if (auth_pool_poll(pool, l->index, on_result, l) > 0)
            progress = true;
        if (!progress && l->answered < REQS) {
            /* nothing to do: sleep until a verifier publishes a verdict */
            struct pollfd p = { .fd = l->efd, .events = POLLIN };
            uint64_t v;
            unsigned waiting = l->submitted - l->answered;
            int n = poll(&p, 1, 10000);

            if (n != 1) {
                unsigned found = auth_pool_poll(pool, l->index, on_result, l);

                CHECK(false,
                      "reactor %u: no wake-up in 10 s with %u requests outstanding, %u of "
                      "them answered (a lost wake-up)",
                      l->index, waiting, found);
            }
            CHECK(read(l->efd, &v, sizeof(v)) == (ssize_t)sizeof(v), "eventfd read");
            l->sleeps++;
        }
    }
    atomic_fetch_sub_explicit(&running, 1, memory_order_relaxed);
    return NULL;
}

static void
write_db(unsigned gen)
{
    static struct crypt_data cd;
    FILE *f;
    int fd;

    snprintf(files[gen], sizeof(files[gen]), "/tmp/ringmail-stress-auth-XXXXXX");
    fd = mkstemp(files[gen]);
    CHECK(fd != -1, "mkstemp");
    f = fdopen(fd, "w");
    CHECK(f != NULL, "fdopen");
    fprintf(f, "# generation %u\n", gen);
    for (unsigned u = 0; u < USERS; u++) {
        char pass[16], setting[64];
        const char *h;

        snprintf(pass, sizeof(pass), "pw-%u", u);
        snprintf(setting, sizeof(setting), "$5$rounds=1000$g%us%u$", gen, u);
        h = crypt_rn(pass, setting, &cd, (int)sizeof(cd));
        CHECK(h != NULL, "crypt_rn");
        fprintf(f, "user%u:%s\n", u, h);
    }
    CHECK(fclose(f) == 0, "fclose");
}

static struct auth_db *
load(unsigned gen)
{
    struct auth_db *db;
    char err[512];

    CHECK(auth_db_load(files[gen], &db, err, sizeof(err)) == 0, "%s", err);
    CHECK(auth_db_count(db) == USERS, "count");
    return db;
}

int
main(void)
{
    struct auth_db *db;
    unsigned swaps = 0, eagain = 0, sleeps = 0;
    struct timespec ts = { 0, 200000 };

    for (unsigned g = 0; g < GENS; g++)
        write_db(g);
    db = load(0);
    pool = auth_pool_new(VERIFIERS, REACTORS, db);
    CHECK(pool != NULL, "auth_pool_new: %s", strerror(errno));
    auth_db_put(db);
    for (unsigned i = 0; i < REACTORS; i++) {
        lanes[i].index = i;
        lanes[i].efd = eventfd(0, EFD_CLOEXEC);
        CHECK(lanes[i].efd != -1, "eventfd");
        auth_pool_set_notify(pool, i, notify, &lanes[i]);
    }
    for (unsigned i = 0; i < REACTORS; i++)
        CHECK(pthread_create(&lanes[i].thread, NULL, reactor, &lanes[i]) == 0, "pthread_create");

    /* SIGHUP, over and over: each old database goes once no verifier holds it */
    while (atomic_load_explicit(&running, memory_order_relaxed) > 0) {
        db = load(++swaps % GENS);
        auth_pool_set_db(pool, db);
        auth_db_put(db);
        nanosleep(&ts, NULL);
    }
    for (unsigned i = 0; i < REACTORS; i++) {
        pthread_join(lanes[i].thread, NULL);
        CHECK(lanes[i].answered == REQS, "reactor %u: %u answered", i, lanes[i].answered);
        for (unsigned k = 0; k < REQS; k++)
            CHECK(lanes[i].seen[k], "reactor %u: token %u never answered", i, k);
        /* nothing more may come: every token was answered exactly once */
        CHECK(auth_pool_poll(pool, i, on_result, &lanes[i]) == 0, "late verdict");
        eagain += lanes[i].eagain;
        sleeps += lanes[i].sleeps;
    }
    /* a verifier may still be inside notify() for a verdict already consumed: the
       eventfds outlive the pool, as the reactors' wake_fd does in ringmail */
    auth_pool_free(pool);
    for (unsigned i = 0; i < REACTORS; i++)
        close(lanes[i].efd);
    for (unsigned g = 0; g < GENS; g++)
        unlink(files[g]);
    printf("stress_auth: %d checks through %d verifiers from %d reactors, %u database swaps, "
           "%u full-queue retries, %u sleeps: 1 passed, 0 failed\n",
           REACTORS * REQS, VERIFIERS, REACTORS, swaps, eagain, sleeps);
    return 0;
}
