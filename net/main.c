/*
 * main.c: ringmail's command line, start-up and signal handling.
 *
 *   ringmail [-c FILE] [-o KEY=VALUE]...       run
 *   ringmail -t [-c FILE] [-o KEY=VALUE]...    check the configuration
 *   ringmail queue list|show ID|flush [ID]|delete ID|hold ID|release ID [--json]
 *                                              the running ringmail's queue, through its
 *                                              admin endpoint (net/queue_cmd.c)
 *   ringmail --version
 *
 * Thread affinity: the main thread. It loads the configuration, recovers the
 * spool, binds the listening sockets, starts one reactor per core, then waits
 * for signals: SIGTERM/SIGINT stop the reactors (each finishes its pending
 * commits) and exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <liburing.h>
#include <signal.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef RINGMAIL_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#include <openssl/ssl.h>

#include "core/compiler.h"
#include "core/config.h"
#include "core/log.h"
#include "core/route.h"
#include "net/admin.h"
#include "net/auth.h"
#include "net/queue_cmd.h"
#include "net/queue_ctl.h"
#include "net/reactor.h"
#include "net/reload.h"
#include "net/snapshot.h"
#include "net/tls.h"
#include "net/util.h"
#include "net/worker.h"
#include "queue/spool.h"

#ifndef RINGMAIL_VERSION
#define RINGMAIL_VERSION "unknown"
#endif
#ifndef RINGMAIL_URING_VERSION
#define RINGMAIL_URING_VERSION "unknown"
#endif

#define MESH_CAPACITY 4096 /* deliveries in flight per (reactor, worker) ring */

/* Log timestamps: the precise clock, read once per line. */
static uint64_t
log_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: ringmail [-t] [-c FILE] [-o KEY=VALUE]...\n"
                 "       ringmail queue list|flush [-c FILE] [-o KEY=VALUE]... [--json]\n"
                 "       ringmail queue show|flush|delete|hold|release [-c FILE] [-o "
                 "KEY=VALUE]... [--json] ID\n"
                 "       ringmail --version\n"
                 "\n"
                 "  -c FILE        configuration file (YAML); built-in defaults without it\n"
                 "  -o KEY=VALUE   override one configuration key (repeatable)\n"
                 "  -t             check the configuration and exit (0 good, 1 bad)\n"
                 "  -v             with -t: print the effective configuration\n");
}

static void
print_version(void)
{
    printf("ringmail %s\n", RINGMAIL_VERSION);
    printf("io_uring: liburing %s\n", RINGMAIL_URING_VERSION);
    printf("tls: %s\n", tls_library_version());
#ifdef RINGMAIL_JEMALLOC
    {
        const char *v = NULL;
        size_t sz = sizeof(v);

        if (mallctl("version", &v, &sz, NULL, 0) == 0 && v != NULL)
            printf("allocator: jemalloc %s\n", v);
        else
            printf("allocator: jemalloc\n");
    }
#else
    printf("allocator: libc malloc (sanitizer or RINGMAIL_USE_JEMALLOC=OFF build)\n");
#endif
}

/* Load defaults, then -c FILE, then the -o overrides in order; 0 or 1 (message printed). */
static int
load_config(struct ringmail_config *cfg, const char *file, char **overrides, int noverrides)
{
    char err[CONFIG_ERR_MAX];

    if (config_read(cfg, file, overrides, noverrides, err, sizeof(err)) == 0)
        return 0;
    fprintf(stderr, "ringmail: %s\n", err);
    return 1;
}

static void
recovery_log(void *arg, const char *line)
{
    (void)arg;
    log_msg(LOG_WARN, "event=recovery %s", line);
}

static void
raise_nofile(unsigned want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return;
    if (rl.rlim_cur < want + 64) {
        rl.rlim_cur = MIN(rl.rlim_max, (rlim_t)want + 64);
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/*
 * Reactors write their log lines to fd 2 through their own rings at the
 * current file position: on a regular file that position would race between
 * them and lines would overwrite each other, so a file is switched to append.
 */
static void
stderr_append(void)
{
    struct stat st;
    int fl = fcntl(2, F_GETFL);

    if (fl != -1 && fstat(2, &st) == 0 && S_ISREG(st.st_mode) && !(fl & O_APPEND))
        (void)fcntl(2, F_SETFL, fl | O_APPEND);
}

/* Start-up failed: release the reactors not started (listening sockets). */
static void
reactors_free(struct reactor *reactors, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = 0; j < CONFIG_MAX_LISTEN; j++) {
            if (reactors[i].lis[j].fd >= 0)
                close(reactors[i].lis[j].fd);
        }
        snapshot_put(reactors[i].snap);
    }
    free(reactors);
}

/*
 * Wait until every reactor has turned its loop once more: a pointer a reactor
 * loaded before (a TLS context it is about to SSL_new() from) is no longer
 * in use after that. Reactors turn at least every tick (100 ms).
 */
static void
reactors_quiesce(struct reactor *reactors, unsigned n)
{
    uint64_t seen[256];
    unsigned m = MIN(n, (unsigned)ARRAY_SIZE(seen));

    for (unsigned i = 0; i < m; i++)
        seen[i] = atomic_load_explicit(&reactors[i].stats.loops, memory_order_acquire);
    for (int tries = 0; tries < 100; tries++) {
        bool all = true;

        for (unsigned i = 0; i < m && all; i++)
            all = atomic_load_explicit(&reactors[i].stats.loops, memory_order_acquire) > seen[i];
        if (all)
            return;
        usleep(20000);
    }
}

/* SIGHUP: certificates and keys again from their files; a bad pair keeps the old one. */
static void
reload_tls(const struct ringmail_config *cfg, struct reactor *reactors, unsigned n)
{
    SSL_CTX *old = atomic_load_explicit(&tls_server_ctx, memory_order_relaxed), *ctx;
    char err[CONFIG_ERR_MAX];

    if (cfg->tls_cert_file[0] == '\0')
        return;
    ctx = tls_server_ctx_new(cfg, old, err, sizeof(err));
    if (ctx == NULL) {
        log_msg(LOG_ERR,
                "event=reload what=tls result=refused error=\"%s\" note=\"the "
                "certificate in service stays\"",
                err);
        return;
    }
    atomic_store_explicit(&tls_server_ctx, ctx, memory_order_release);
    reactors_quiesce(reactors, n);
    tls_ctx_free(old);
    log_msg(LOG_INFO, "event=reload what=tls result=ok cert=%s", cfg->tls_cert_file);
}

/* ---- privileges ---- */

static uid_t chown_uid;
static gid_t chown_gid;

static int
chown_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    if (lchown(path, chown_uid, chown_gid) < 0)
        log_msg(LOG_WARN, "event=chown path=%s error=\"%s\"", path, strerror(errno));
    return 0;
}

/*
 * Started as root: give the spool and the Maildirs to `user`, then become it
 * (primary group, no supplementary groups) before any thread starts. The
 * listening sockets are already bound and the TLS key already read.
 * 0, or -1 after logging why.
 */
static int
drop_privileges(const struct ringmail_config *cfg)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    int rc;

    if (geteuid() != 0)
        return 0;
    if (strcmp(cfg->user, "root") == 0) {
        log_msg(LOG_WARN, "event=config user=root note=\"running as root, as configured; set "
                          "user to an unprivileged account\"");
        return 0;
    }
    rc = getpwnam_r(cfg->user, &pw, buf, sizeof(buf), &res);
    if (res == NULL) {
        log_msg(LOG_ERR, "event=fatal what=user key=user user=%s error=\"%s\"", cfg->user,
                rc != 0 ? strerror(rc) : "no such account");
        return -1;
    }
    if (pw.pw_uid == 0) {
        log_msg(LOG_ERR,
                "event=fatal what=user key=user user=%s error=\"the account has uid 0; "
                "use user: root to run as root\"",
                cfg->user);
        return -1;
    }
    chown_uid = pw.pw_uid;
    chown_gid = pw.pw_gid;
    (void)nftw(cfg->spool_dir, chown_one, 16, FTW_PHYS);
    for (unsigned i = 0; i < route_count(cfg); i++) {
        const struct route *rt = route_at(cfg, i);

        for (unsigned j = 0; j < route_nhops(rt); j++) {
            const struct config_nexthop *h = route_hop(rt, j);

            if (h->transport == TRANSPORT_MAILDIR)
                (void)nftw(h->path, chown_one, 16, FTW_PHYS);
        }
    }
    if (setgroups(0, NULL) < 0 || setgid(pw.pw_gid) < 0 || setuid(pw.pw_uid) < 0) {
        log_msg(LOG_ERR, "event=fatal what=user user=%s error=\"%s\"", cfg->user, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) { /* must be impossible now */
        log_msg(LOG_ERR, "event=fatal what=user error=\"could regain root\"");
        return -1;
    }
    log_msg(LOG_INFO, "event=privileges user=%s uid=%u gid=%u", cfg->user, (unsigned)pw.pw_uid,
            (unsigned)pw.pw_gid);
    return 0;
}

/* SIGHUP: the password file again; a bad file keeps the database in service. */
static void
reload_auth(const struct ringmail_config *cfg)
{
    struct auth_db *db;
    char err[CONFIG_ERR_MAX];

    if (reactor_shared.auth == NULL || cfg->smtpd_sasl_password_file[0] == '\0')
        return;
    if (auth_db_load(cfg->smtpd_sasl_password_file, &db, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR,
                "event=reload what=auth result=refused error=\"%s\" note=\"the "
                "users in service stay\"",
                err);
        return;
    }
    auth_pool_set_db(reactor_shared.auth, db);
    log_msg(LOG_INFO, "event=reload what=auth result=ok users=%zu", auth_db_count(db));
    auth_db_put(db);
}

/* What a reload needs to read the configuration again the way it was read at start-up. */
struct reload_src {
    const char *file;
    char **ov;
    int nov;
};

/* Keys a running ringmail cannot change: a reload keeps their running value and says so
   (a restart applies them). */
static void
keep_restart_keys(struct ringmail_config *n, const struct ringmail_config *cur)
{
#define KEEP(key, same)                                                                            \
    do {                                                                                           \
        if (!(same)) {                                                                             \
            log_msg(LOG_WARN, "event=reload what=config key=" #key                                 \
                              " note=\"changed; it takes effect at the "                           \
                              "next restart\"");                                                   \
            memcpy(&n->key, &cur->key, sizeof(n->key));                                            \
        }                                                                                          \
    } while (0)
#define KEEP_MEM(key) KEEP(key, memcmp(&n->key, &cur->key, sizeof(n->key)) == 0)
    KEEP_MEM(admin_listen);
    KEEP_MEM(admin_token_file);
    KEEP_MEM(user);
    KEEP_MEM(log_format);
    KEEP_MEM(spool_dir);
    KEEP_MEM(reactors);
    KEEP_MEM(workers);
    KEEP_MEM(max_connections);
    KEEP_MEM(command_line_limit);
    /* the verifier threads start with the process: AUTH can be switched off by a
       reload, and its file changed, but not switched on */
    KEEP(smtpd_sasl_password_file,
         cur->smtpd_sasl_password_file[0] != '\0' || n->smtpd_sasl_password_file[0] == '\0');
#undef KEEP_MEM
#undef KEEP
}

/*
 * The listeners s has and cur had not: one socket per reactor each, bound
 * here, handed to the reactors in s->lfd (reactor.c adopt_listeners()).
 * After the privilege drop a port below 1024 needs CAP_NET_BIND_SERVICE
 * (the systemd unit grants it); without it the reload is refused.
 */
static int
open_added_listeners(struct snapshot *s, const struct ringmail_config *cur, unsigned n, char *err,
                     size_t errlen)
{
    const struct ringmail_config *cfg = &s->cfg;
    char why[256]; /* an address and an errno text */

    s->nreactors = n;
    s->lfd = malloc((size_t)cfg->nlisten * n * sizeof(*s->lfd) + 1);
    if (s->lfd == NULL) {
        snprintf(err, errlen, "key 'listen': out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < (size_t)cfg->nlisten * n; i++)
        s->lfd[i] = -1;
    for (unsigned j = 0; j < cfg->nlisten; j++) {
        bool had = false;

        for (unsigned k = 0; k < cur->nlisten && !had; k++)
            had = config_hostport_same(&cfg->listen[j], &cur->listen[k]);
        for (unsigned i = 0; i < n && !had; i++) {
            int fd = listen_socket(&cfg->listen[j], why, sizeof(why));

            if (fd < 0) {
                snprintf(err, errlen, "key 'listen': %s%s", why,
                         fd == -EACCES ? " (ringmail no longer runs as root: a port below 1024 "
                                         "needs CAP_NET_BIND_SERVICE, or a restart)"
                                       : "");
                return fd; /* the sockets opened so far close with s */
            }
            s->lfd[(size_t)j * n + i] = fd;
        }
    }
    return 0;
}

/*
 * SIGHUP: read the configuration again (file and -o overrides, as at
 * start-up). A bad one is refused with its FILE:LINE: key message and the
 * snapshot in service stays; a good one becomes the new snapshot: new
 * sessions and new mail get it, sessions in progress finish under theirs,
 * queued mail is routed again at its next attempt if the routes changed.
 * Certificates, the password file and the admin token are read again too.
 */
static void
reload_config(const struct reload_src *src, struct snapshot **cur, struct reactor *reactors,
              unsigned n, struct worker *workers, unsigned nw, struct admin *admin)
{
    struct ringmail_config *ncfg = malloc(sizeof(*ncfg));
    char err[CONFIG_ERR_MAX] = "";
    struct snapshot *s = NULL;
    int rc;

    if (ncfg == NULL) {
        log_msg(LOG_ERR, "event=reload what=config result=refused error=\"out of memory\"");
        return;
    }
    rc = config_read(ncfg, src->file, src->ov, src->nov, err, sizeof(err));
    if (rc == 0) {
        keep_restart_keys(ncfg, &(*cur)->cfg);
        rc = worker_maildirs(ncfg, err, sizeof(err));
    }
    if (rc == 0) {
        s = snapshot_new(ncfg, (*cur)->gen + 1, err, sizeof(err));
        rc = s == NULL ? -1 : open_added_listeners(s, &(*cur)->cfg, n, err, sizeof(err));
    }
    free(ncfg);
    if (rc < 0 || s == NULL) {
        snapshot_put(s);
        log_msg(LOG_ERR,
                "event=reload what=config result=refused error=\"%s\" note=\"the configuration "
                "in service stays\"",
                err);
        return;
    }
    reload_tls(&s->cfg, reactors, n);
    reload_auth(&s->cfg);
    (void)admin_reload(admin, &s->cfg); /* the token file: a bad one keeps the token */
    if (reload_publish(reactors, n, workers, nw, s) < 0)
        log_msg(LOG_WARN, "event=reload what=config note=\"a thread was slow to take the new "
                          "configuration; it takes it at its next turn\"");
    snapshot_put(*cur);
    *cur = s;
    log_msg(LOG_INFO, "event=reload what=config result=ok generation=%" PRIu64 " file=%s", s->gen,
            src->file != NULL ? src->file : "(built-in defaults)");
}

static int
run(const struct ringmail_config *cfg, const struct reload_src *rsrc)
{
    struct spool_index idx = { 0 };
    static struct q_mesh to_workers, from_workers;
    struct reactor *reactors;
    struct worker *workers;
    struct admin *admin = NULL;
    uint64_t start_ms = log_clock();
    unsigned n = cfg->reactors, nw = cfg->workers;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char err[CONFIG_ERR_MAX];
    struct snapshot *snap;
    sigset_t sigs;
    int rc, sig = 0, sfd;

    if (n == 0)
        n = ncpu > 0 ? (unsigned)ncpu : 1;
    if (nw == 0)
        nw = ncpu > 0 ? (unsigned)ncpu : 1;
    rc = mkdir_p(cfg->spool_dir, 0700);
    if (rc < 0) {
        log_msg(LOG_ERR, "event=fatal what=spool_dir dir=%s error=\"%s\"", cfg->spool_dir,
                strerror(-rc));
        return 1;
    }
    rc = spool_recover(cfg->spool_dir, &idx, recovery_log, NULL);
    if (rc < 0) {
        log_msg(LOG_ERR, "event=fatal what=recovery dir=%s error=\"%s\"", cfg->spool_dir,
                strerror(-rc));
        return 1;
    }
    log_msg(LOG_INFO,
            "event=recovered dir=%s segments=%" PRIu64 " messages=%zu bad_records=%" PRIu64
            " torn_bytes=%" PRIu64 " incomplete=%" PRIu64,
            cfg->spool_dir, idx.nsegments, idx.nmsg, idx.bad_records, idx.torn_bytes,
            idx.incomplete);
    if (cfg->durability == DURABILITY_NONE)
        log_msg(LOG_WARN, "event=config durability=none note=\"messages are acknowledged before "
                          "they reach stable storage; a crash can lose them\"");
    raise_nofile(cfg->max_connections + 16u * n);
    /* the configuration in service: reloads replace it (snapshot.h) */
    snap = snapshot_new(cfg, 1, err, sizeof(err));
    if (snap == NULL) {
        log_msg(LOG_ERR, "event=fatal what=config error=\"%s\"", err);
        return 1;
    }
    {
        /* clients tracked by the limit table: room for every connection 4 times over */
        uint64_t cap = MAX((uint64_t)cfg->max_connections * 4, (uint64_t)65536);

        reactor_shared.limits = limits_new((unsigned)MIN(cap, (uint64_t)LIMITS_MAX_CAPACITY));
        if (reactor_shared.limits == NULL) {
            log_msg(LOG_ERR, "event=fatal what=memory note=\"limit table\"");
            return 1;
        }
    }
    if (cfg->tls_cert_file[0] != '\0') {
        SSL_CTX *ctx = tls_server_ctx_new(cfg, NULL, err, sizeof(err));

        if (ctx == NULL) {
            log_msg(LOG_ERR, "event=fatal what=tls error=\"%s\"", err);
            return 1;
        }
        atomic_store_explicit(&tls_server_ctx, ctx, memory_order_release);
    }
    if (cfg->smtpd_sasl_password_file[0] != '\0') {
        struct auth_db *db;

        if (auth_db_load(cfg->smtpd_sasl_password_file, &db, err, sizeof(err)) < 0) {
            log_msg(LOG_ERR, "event=fatal what=auth key=smtpd_sasl_password_file error=\"%s\"",
                    err);
            return 1;
        }
        reactor_shared.auth = auth_pool_new(AUTH_POOL_THREADS, n, db);
        auth_db_put(db);
        if (reactor_shared.auth == NULL) {
            log_msg(LOG_ERR, "event=fatal what=auth error=\"cannot start the verifiers\"");
            return 1;
        }
    }

    /* every thread inherits this mask: signals are taken by sigwait() below only */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    reactors = calloc(n, sizeof(*reactors));
    workers = calloc(nw, sizeof(*workers));
    if (reactors == NULL || workers == NULL || q_mesh_init(&to_workers, n, nw, MESH_CAPACITY) < 0 ||
        q_mesh_init(&from_workers, nw, n, MESH_CAPACITY) < 0) {
        log_msg(LOG_ERR, "event=fatal what=memory");
        return 1;
    }
    stderr_append();
    for (unsigned i = 0; i < nw; i++) {
        rc = worker_init(&workers[i], i, snap, &to_workers, &from_workers);
        if (rc < 0) {
            log_msg(LOG_ERR, "event=fatal what=worker worker=%u error=\"%s\"", i, strerror(-rc));
            return 1;
        }
    }
    /* held messages (spool_dir/hold) stay held: the workers know them before they start */
    if (queue_ctl_start(cfg, &idx, workers, nw) < 0)
        return 1;
    for (unsigned i = 0; i < n; i++) {
        reactors[i].index = i;
        reactors[i].last_id = idx.max_id;
        reactors[i].wake_fd = -1;
        reactors[i].to_workers = &to_workers;
        reactors[i].from_workers = &from_workers;
        reactors[i].nworkers = nw;
        reactors[i].nreactors = n;
        reactors[i].recovered = &idx;
        q_mesh_set_notify(&from_workers, i, handoff_notify, &reactors[i]);
        if (reactor_shared.auth != NULL)
            auth_pool_set_notify(reactor_shared.auth, i, handoff_notify, &reactors[i]);
        rc = reactor_listen(&reactors[i], snap, err, sizeof(err));
        if (rc < 0) {
            log_msg(LOG_ERR, "event=fatal what=listen %s", err);
            spool_index_free(&idx);
            reactors_free(reactors, i + 1);
            return 1;
        }
    }
    {
        const struct admin_sources src = { reactors, n, workers, nw, RINGMAIL_VERSION, start_ms };

        if (admin_open(cfg, &src, &admin, err, sizeof(err)) < 0) {
            log_msg(LOG_ERR, "event=fatal what=admin error=\"%s\"", err);
            spool_index_free(&idx);
            reactors_free(reactors, n);
            return 1;
        }
    }
    if (drop_privileges(cfg) < 0) {
        admin_close(admin);
        reactors_free(reactors, n);
        return 1;
    }
    for (unsigned i = 0; i < nw; i++) {
        rc = worker_start(&workers[i]);
        if (rc < 0) {
            log_msg(LOG_ERR, "event=fatal what=worker worker=%u error=\"%s\"", i, strerror(-rc));
            return 1;
        }
    }
    for (unsigned i = 0; i < n; i++) {
        rc = reactor_start(&reactors[i], ncpu > 0 ? (int)(i % (unsigned)ncpu) : -1);
        if (rc < 0) {
            log_msg(LOG_ERR, "event=fatal what=reactor reactor=%u error=\"%s\"", i, strerror(-rc));
            for (unsigned j = 0; j < i; j++) {
                reactor_stop(&reactors[j]);
                reactor_join(&reactors[j]);
            }
            reactors_free(reactors, n);
            return 1;
        }
    }
    spool_index_free(&idx); /* every reactor has requeued its share */
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        char t[CONFIG_HOSTPORT_TEXT_MAX];

        log_msg(LOG_INFO, "event=listening addr=%s reactors=%u",
                config_hostport_text(&cfg->listen[i], t, sizeof(t)), n);
    }
    log_msg(LOG_INFO, "event=started version=%s myhostname=%s spool_dir=%s durability=%s",
            RINGMAIL_VERSION, cfg->myhostname, cfg->spool_dir,
            cfg->durability == DURABILITY_FSYNC ? "fsync" : "none");

    sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    for (;;) {
        struct pollfd pfd[1 + ADMIN_POLLFDS] = { { .fd = sfd, .events = POLLIN } };
        struct signalfd_siginfo si;
        unsigned np = 1, na = admin_poll_fds(admin, pfd + np, ADMIN_POLLFDS);

        if (poll(pfd, np + na, admin_poll_timeout(admin)) < 0)
            continue;
        admin_handle(admin, pfd + np, na); /* after a timeout too: it closes late clients */
        if (!(pfd[0].revents & POLLIN) || read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
            continue;
        sig = (int)si.ssi_signo;
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGHUP) {
            log_msg(LOG_INFO, "event=sighup note=\"reloading the configuration\"");
            reload_config(rsrc, &snap, reactors, n, workers, nw, admin);
        }
    }
    close(sfd);
    /* the drain: /readyz says 503 from now on, /healthz stays 200 while sessions finish */
    admin_set_draining(true);
    log_msg(LOG_INFO, "event=stopping signal=%s", sig == SIGTERM ? "TERM" : "INT");
    /* workers first: what they hold goes back to the reactors, which write its DONE
       records (for what was delivered) before they stop in turn */
    for (unsigned i = 0; i < nw; i++)
        worker_stop(&workers[i]);
    for (unsigned i = 0; i < nw; i++)
        worker_join(&workers[i]);
    for (unsigned i = 0; i < n; i++)
        reactor_stop(&reactors[i]);
    /* serve the admin endpoint while the reactors drain (up to shutdown_timeout) */
    for (unsigned i = 0; i < n;) {
        struct pollfd pfd[ADMIN_POLLFDS];
        unsigned na;

        if (atomic_load_explicit(&reactors[i].exited, memory_order_acquire)) {
            i++;
            continue;
        }
        na = admin_poll_fds(admin, pfd, ADMIN_POLLFDS);
        (void)poll(pfd, na, 100);
        admin_handle(admin, pfd, na);
    }
    for (unsigned i = 0; i < n; i++)
        reactor_join(&reactors[i]);
    admin_close(admin);
    {
        uint64_t acc = 0, conns = 0;

        for (unsigned i = 0; i < n; i++) {
            acc += atomic_load(&reactors[i].stats.msgs_accepted);
            conns += atomic_load(&reactors[i].stats.accepted);
        }
        log_msg(LOG_INFO, "event=stopped connections=%" PRIu64 " messages=%" PRIu64, conns, acc);
    }
    /* deliveries pushed after the workers stopped stay pending in the spool: free the memory */
    for (unsigned j = 0; j < nw; j++) {
        void *items[64];
        size_t got;

        while ((got = q_mesh_pop_batch(&to_workers, j, items, ARRAY_SIZE(items))) > 0) {
            for (size_t k = 0; k < got; k++) {
                struct delivery *d = items[k];
                struct qmsg *q = d->msg;

                if (handoff_delivery_free(d))
                    qmsg_free(q);
            }
        }
    }
    /* the verifiers first: one still hashing would notify a reactor (its wake_fd) */
    auth_pool_free(reactor_shared.auth);
    reactor_shared.auth = NULL;
    free(reactors);
    free(workers);
    tls_ctx_free(atomic_exchange(&tls_server_ctx, NULL));
    limits_free(reactor_shared.limits);
    reactor_shared.limits = NULL;
    snapshot_put(snap);
    q_mesh_fini(&to_workers);
    q_mesh_fini(&from_workers);
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct ringmail_config cfg;
    const char *file = NULL;
    static char *ov[256];
    int nov = 0, opt, rc;
    bool check = false, verbose = false;

    log_set_clock(log_clock);
    /* "+": stop at the first non-option so `ringmail queue list -c F` works */
    while ((opt = getopt_long(argc, argv, "+c:o:tvh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 'o':
            if (nov == (int)ARRAY_SIZE(ov)) {
                fprintf(stderr, "ringmail: too many -o options\n");
                return 2;
            }
            ov[nov++] = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'v':
            verbose = true;
            break;
        case 'V':
            print_version();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc && strcmp(argv[optind], "queue") == 0) {
        int qargc = argc - optind - 1;
        char **qargv = argv + optind + 1;

        /* options may also follow the subcommand: ringmail queue list -c FILE */
        return queue_cmd(qargc, qargv, file, ov, nov);
    }
    if (optind < argc) {
        fprintf(stderr, "ringmail: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    rc = load_config(&cfg, file, ov, nov);
    if (rc == 0)
        log_set_format((enum log_format)cfg.log_format);
    if (rc != 0)
        return 1;
    if (check) {
        if (verbose)
            config_dump(&cfg, stdout);
        printf("ringmail: configuration %s is valid\n", file ? file : "(built-in defaults)");
        return 0;
    }
    {
        const struct reload_src rsrc = { file, ov, nov };

        return run(&cfg, &rsrc);
    }
}
