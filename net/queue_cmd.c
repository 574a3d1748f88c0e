/*
 * queue_cmd.c: `ringmail queue`, a client of the admin endpoint's /queue.
 * See queue_cmd.h.
 *
 * Thread affinity: the command's only thread; blocking I/O is fine here.
 */
#define _GNU_SOURCE
#include "net/queue_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/compiler.h"
#include "core/config.h"
#include "core/log.h"
#include "net/admin.h"
#include "net/util.h"
#include "queue/spool.h"

#define CMD_TIMEOUT_S 5
#define CMD_RESP_MAX  (80u << 20) /* octets of response read at most */
#define CMD_OV_MAX    256

struct resp {
    int status;
    char *buf; /* the whole response; body at buf + body_off */
    size_t len, body_off;
};

static int
load(struct ringmail_config *cfg, const char *file, char **ov, int nov)
{
    char err[CONFIG_ERR_MAX];

    if (config_read(cfg, file, ov, nov, err, sizeof(err)) == 0)
        return 0;
    fprintf(stderr, "ringmail: %s\n", err);
    return -1;
}

/*
 * One request to admin_listen; 0 with *r, -ECONNREFUSED and the like when
 * nothing answers there (*why says what), or -EPROTO for a malformed answer.
 */
static int
request(const struct ringmail_config *cfg, const char *method, const char *path, const char *token,
        struct resp *r, char *why, size_t whylen)
{
    struct config_hostport hp = cfg->admin_listen;
    struct timeval tv = { CMD_TIMEOUT_S, 0 };
    struct sockaddr_storage ss;
    socklen_t sl;
    char *req = NULL, *spool = realpath(cfg->spool_dir, NULL);
    size_t cap = 65536;
    int fd, rc, n;

    memset(r, 0, sizeof(*r));
    if (strcmp(hp.host, "0.0.0.0") == 0)
        snprintf(hp.host, sizeof(hp.host), "127.0.0.1");
    else if (strcmp(hp.host, "::") == 0)
        snprintf(hp.host, sizeof(hp.host), "::1");
    if (hostport_sockaddr(&hp, &ss, &sl) < 0) {
        snprintf(why, whylen, "admin_listen %s is not an IP address", hp.host);
        free(spool);
        return -EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        rc = -errno;
        snprintf(why, whylen, "socket: %s", strerror(-rc));
        free(spool);
        return rc;
    }
    /* SO_SNDTIMEO bounds connect() too (Linux) */
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&ss, sl) == -1) {
        rc = -errno;
        char t[CONFIG_HOSTPORT_TEXT_MAX];

        snprintf(why, whylen, "nothing answers on admin_listen %s: %s",
                 config_hostport_text(&hp, t, sizeof(t)), strerror(-rc));
        close(fd);
        free(spool);
        return rc;
    }
    n = asprintf(&req,
                 "%s %s HTTP/1.1\r\nHost: ringmail\r\nUser-Agent: ringmail-queue\r\n"
                 "Ringmail-Spool-Dir: %s\r\n%s%s%sContent-Length: 0\r\nConnection: close\r\n\r\n",
                 method, path, spool != NULL ? spool : cfg->spool_dir,
                 token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    free(spool);
    if (n < 0) {
        close(fd);
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    for (size_t off = 0; off < (size_t)n;) {
        ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);

        if (w <= 0) {
            rc = w < 0 ? -errno : -EPIPE;
            snprintf(why, whylen, "sending the request: %s", strerror(-rc));
            free(req);
            close(fd);
            return rc;
        }
        off += (size_t)w;
    }
    free(req);
    r->buf = malloc(cap + 1);
    for (;;) {
        ssize_t got;

        if (r->buf == NULL) {
            close(fd);
            snprintf(why, whylen, "out of memory");
            return -ENOMEM;
        }
        if (r->len == cap) {
            char *p = cap * 2 > CMD_RESP_MAX ? NULL : realloc(r->buf, cap * 2 + 1);

            if (p == NULL) {
                free(r->buf);
                r->buf = NULL;
                continue;
            }
            r->buf = p;
            cap *= 2;
        }
        got = recv(fd, r->buf + r->len, cap - r->len, 0);
        if (got == 0)
            break;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            snprintf(why, whylen, "reading the answer: %s", strerror(-rc));
            close(fd);
            free(r->buf);
            r->buf = NULL;
            return rc;
        }
        r->len += (size_t)got;
    }
    close(fd);
    r->buf[r->len] = '\0';
    {
        char *end = strstr(r->buf, "\r\n\r\n");

        if (sscanf(r->buf, "HTTP/1.%*d %d", &r->status) != 1 || end == NULL) {
            snprintf(why, whylen, "the answer is not HTTP");
            free(r->buf);
            r->buf = NULL;
            return -EPROTO;
        }
        r->body_off = (size_t)(end + 4 - r->buf);
    }
    return 0;
}

/* ---- printing (the answers are read with jansson) ---- */

/* The string member key of obj, control octets as '?' (NUL included); "" when absent. */
static const char *
member(const json_t *obj, const char *key, char *buf, size_t cap)
{
    const json_t *v = json_object_get(obj, key);
    size_t n = 0;

    if (json_is_string(v)) {
        n = MIN(json_string_length(v), cap - 1);
        memcpy(buf, json_string_value(v), n);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
                buf[i] = '?';
        }
    }
    buf[n] = '\0';
    return buf;
}

static uint64_t
member_u64(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static bool
member_true(const json_t *obj, const char *key)
{
    return json_is_true(json_object_get(obj, key));
}

/* asctime()'s first 20 columns in UTC, as the offline listing prints them. */
static void
format_time(uint64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%a %b %e %H:%M:%S ", &tm) == 0)
        snprintf(out, 32, "%-20s", "?");
}

/* `queue list`: postqueue -p's layout; '!' after the id: held; '*': in an attempt now. */
static int
print_list(const json_t *doc)
{
    const json_t *msgs = json_object_get(doc, "messages"), *m;
    uint64_t total = 0;
    size_t k, count;
    char buf[1024];

    if (!json_is_array(msgs))
        return -1;
    count = json_array_size(msgs);
    if (count == 0) {
        fputs("Mail queue is empty\n", stdout);
        return 0;
    }
    fputs("-Queue ID-       --Size-- ----Arrival Time---- -Sender/Recipient-------\n", stdout);
    json_array_foreach(msgs, k, m)
    {
        const json_t *rcpts = json_object_get(m, "recipients"), *r;
        uint64_t size = member_u64(m, "size");
        char qid[64], when[32], last[1024] = "";
        bool active = false;
        size_t i;

        member(m, "qid", qid, sizeof(qid));
        format_time(member_u64(m, "arrival_time"), when);
        json_array_foreach(rcpts, i, r) active |=
            strcmp(member(r, "state", buf, sizeof(buf)), "active") == 0;
        printf("%s%c%8" PRIu64 " %s ", qid,
               member_true(m, "held") ? '!'
               : active               ? '*'
                                      : ' ',
               size, when);
        member(m, "sender", buf, sizeof(buf));
        printf("%s\n", buf[0] != '\0' ? buf : "MAILER-DAEMON");
        json_array_foreach(rcpts, i, r)
        {
            member(r, "last_reply", buf, sizeof(buf));
            if (buf[0] != '\0' && strcmp(buf, last) != 0) {
                printf("(%s)\n", buf);
                snprintf(last, sizeof(last), "%s", buf);
            }
            printf("%47s%s\n", "", member(r, "address", buf, sizeof(buf)));
        }
        putchar('\n');
        total += size;
    }
    printf("-- %" PRIu64 " Kbytes in %zu Request%s.\n", (total + 1023) / 1024, count,
           count == 1 ? "" : "s");
    if (member_true(doc, "truncated"))
        fprintf(stderr, "ringmail: queue list: the list is cut at its limit (the endpoint's "
                        "limit=100000); GET /queue with filters narrows it\n");
    return 0;
}

/* `queue show`: the envelope, each recipient's state, then the stored message. */
static int
print_show(const json_t *doc)
{
    const json_t *rcpts = json_object_get(doc, "recipients"), *body = json_object_get(doc, "body");
    const json_t *r;
    char buf[4096], qid[64];
    size_t i;

    member(doc, "qid", qid, sizeof(qid));
    printf("*** ENVELOPE RECORDS %s ***\n", qid);
    printf("message_size: %" PRIu64 "\n", member_u64(doc, "size"));
    printf("arrival_time: %" PRIu64 "\n", member_u64(doc, "arrival_time"));
    printf("client_address: %s\n", member(doc, "client", buf, sizeof(buf)));
    printf("helo_name: %s\n", member(doc, "helo", buf, sizeof(buf)));
    printf("sender: %s\n", member(doc, "sender", buf, sizeof(buf)));
    printf("held: %s\n", member_true(doc, "held") ? "yes" : "no");
    json_array_foreach(rcpts, i, r)
    {
        char st[32];

        printf("recipient: %s\n", member(r, "address", buf, sizeof(buf)));
        printf("  state: %s, attempts: %" PRIu64 "\n", member(r, "state", st, sizeof(st)),
               member_u64(r, "attempts"));
        if (member(r, "last_reply", buf, sizeof(buf))[0] != '\0')
            printf("  last_reply: %s\n", buf);
    }
    if (json_is_string(body)) {
        /* the stored octets as they are: JSON_ALLOW_NUL keeps a NUL in the content */
        printf("*** MESSAGE CONTENTS %s ***\n", qid);
        fwrite(json_string_value(body), 1, json_string_length(body), stdout);
        printf("*** END OF MESSAGE %s ***\n", qid);
    }
    return 0;
}

/* ---- offline, from the spool ---- */

static void
recovery_log(void *arg, const char *line)
{
    (void)arg;
    log_msg(LOG_WARN, "event=recovery %s", line);
}

static int
offline_show(const struct spool_index *idx, const char *dir, const char *qid)
{
    uint64_t id;

    if (!qid_parse(qid, &id)) {
        fprintf(stderr, "ringmail: queue show: '%s' is not a queue id\n", qid);
        return 2;
    }
    for (size_t i = 0; i < idx->nmsg; i++) {
        const struct spool_msg *m = &idx->msg[i];
        const struct envelope *e = &m->env;
        struct slice v;
        char *body;
        size_t len;

        if (e->id != id)
            continue;
        printf("*** ENVELOPE RECORDS %s ***\n", e->qid);
        printf("message_size: %" PRIu64 "\narrival_time: %" PRIu64 "\n", e->body_len, e->arrival);
        v = env_get(e, e->client);
        printf("client_address: %.*s\n", (int)v.len, v.p);
        v = env_get(e, e->helo);
        printf("helo_name: %.*s\n", (int)v.len, v.p);
        v = env_get(e, e->sender);
        printf("sender: %.*s\n", (int)v.len, v.p);
        for (uint32_t k = 0; k < e->nrcpt; k++) {
            v = env_get(e, e->rcpt[k].addr);
            printf("%s: %.*s\n", m->rcpt_done && m->rcpt_done[k] ? "done_recipient" : "recipient",
                   (int)v.len, v.p);
        }
        if (spool_read_body(dir, m, &body, &len) < 0) {
            fprintf(stderr, "ringmail: queue show: %s: the body cannot be read\n", qid);
            return 1;
        }
        printf("*** MESSAGE CONTENTS %s ***\n", e->qid);
        fwrite(body, 1, len, stdout);
        printf("*** END OF MESSAGE %s ***\n", e->qid);
        free(body);
        return 0;
    }
    fprintf(stderr, "ringmail: queue show: %s is not in the queue\n", qid);
    return 1;
}

static int
offline(const struct ringmail_config *cfg, const char *sub, const char *qid)
{
    struct spool_index idx = { 0 };
    int rc = spool_recover(cfg->spool_dir, &idx, recovery_log, NULL);

    if (rc < 0) {
        fprintf(stderr, "ringmail: spool %s: %s\n", cfg->spool_dir, strerror(-rc));
        return 1;
    }
    if (strcmp(sub, "show") == 0) {
        rc = offline_show(&idx, cfg->spool_dir, qid);
    } else {
        spool_print_queue(&idx, stdout);
        rc = 0;
    }
    spool_index_free(&idx);
    return rc;
}

/* ---- the command ---- */

static void
usage_queue(void)
{
    fprintf(stderr, "ringmail: queue: list, show ID, flush [ID], delete ID, hold ID, release ID "
                    "(options: -c FILE, -o KEY=VALUE, --json)\n");
}

int
queue_cmd(int argc, char **argv, const char *file, char **ov_in, int nov_in)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },
        { NULL, 0, NULL, 0 },
    };
    static char *ov[CMD_OV_MAX];
    struct ringmail_config cfg;
    const char *sub = argc >= 1 ? argv[0] : "", *qid = NULL, *method = "POST";
    char token[ADMIN_TOKEN_MAX + 1] = "", path[128], why[512];
    size_t token_len = 0;
    bool json = false, needs_id, may_id, offline_ok;
    struct resp r;
    int nov = 0, opt, rc;

    for (int i = 0; i < nov_in && nov < CMD_OV_MAX; i++)
        ov[nov++] = ov_in[i];
    /* options may follow the subcommand and the id: ringmail queue show ID -c FILE --json */
    optind = 0; /* 0: glibc re-initialises getopt for the new vector; argv[0] is skipped */
    while ((opt = getopt_long(argc, argv, "c:o:", longopts, NULL)) != -1) {
        if (opt == 'c')
            file = optarg;
        else if (opt == 'o' && nov < CMD_OV_MAX)
            ov[nov++] = optarg;
        else if (opt == 'j')
            json = true;
        else {
            usage_queue();
            return 2;
        }
    }
    needs_id = strcmp(sub, "show") == 0 || strcmp(sub, "delete") == 0 || strcmp(sub, "hold") == 0 ||
               strcmp(sub, "release") == 0;
    may_id = needs_id || strcmp(sub, "flush") == 0;
    offline_ok = strcmp(sub, "list") == 0 || strcmp(sub, "show") == 0;
    if (!may_id && strcmp(sub, "list") != 0) {
        fprintf(stderr, "ringmail: queue: unknown command '%s'\n", sub);
        usage_queue();
        return 2;
    }
    if (optind < argc)
        qid = argv[optind++];
    if ((needs_id && qid == NULL) || optind < argc || (!may_id && qid != NULL)) {
        fprintf(stderr, "ringmail: queue %s: %s\n", sub,
                needs_id && qid == NULL ? "a queue id is needed" : "unexpected argument");
        return 2;
    }
    if (qid != NULL) {
        uint64_t id;

        if (!qid_parse(qid, &id)) {
            fprintf(stderr, "ringmail: queue %s: '%s' is not a queue id\n", sub, qid);
            return 2;
        }
    }
    if (load(&cfg, file, ov, nov) < 0)
        return 1;
    if (cfg.admin_listen.port == 0) {
        if (!offline_ok || json) {
            fprintf(stderr,
                    "ringmail: queue %s: admin_listen is off: a running ringmail is reached "
                    "through its admin endpoint only\n",
                    sub);
            return 1;
        }
        fprintf(stderr,
                "ringmail: queue %s: admin_listen is off; reading the spool %s offline "
                "(no delivery state)\n",
                sub, cfg.spool_dir);
        return offline(&cfg, sub, qid);
    }
    if (strcmp(sub, "list") == 0) {
        method = "GET";
        snprintf(path, sizeof(path), "/queue?limit=100000");
    } else if (strcmp(sub, "show") == 0) {
        method = "GET";
        snprintf(path, sizeof(path), "/queue/%s?body=1", qid);
    } else if (qid != NULL) {
        snprintf(path, sizeof(path), "/queue/%s/%s", qid, sub);
    } else {
        snprintf(path, sizeof(path), "/queue/%s", sub);
    }
    if (cfg.admin_token_file[0] != '\0') {
        if (admin_token_read(token, &token_len, cfg.admin_token_file, why, sizeof(why)) < 0) {
            fprintf(stderr, "ringmail: queue: %s\n", why);
            return 1;
        }
        token[token_len] = '\0';
    }
    rc = request(&cfg, method, path, cfg.admin_token_file[0] != '\0' ? token : NULL, &r, why,
                 sizeof(why));
    explicit_bzero(token, sizeof(token));
    if (rc == 0 && r.status == 421) {
        snprintf(why, sizeof(why), "the ringmail on admin_listen runs with another spool_dir");
        free(r.buf);
        rc = -EXDEV;
    }
    if (rc < 0) {
        if (!offline_ok || json) {
            fprintf(stderr, "ringmail: queue %s: %s%s\n", sub, why,
                    offline_ok ? " (--json needs the running instance)" : "");
            return 1;
        }
        fprintf(stderr,
                "ringmail: queue %s: %s; reading the spool %s offline (no delivery "
                "state)\n",
                sub, why, cfg.spool_dir);
        return offline(&cfg, sub, qid);
    }
    {
        const char *body = r.buf + r.body_off;
        size_t blen = r.len - r.body_off;
        json_t *doc = NULL;
        char msg[1024];

        if (json) {
            fwrite(body, 1, blen, stdout);
            rc = r.status / 100 == 2 ? 0 : 1;
        } else if ((doc = json_loadb(body, blen, JSON_ALLOW_NUL, NULL)) == NULL ||
                   !json_is_object(doc)) {
            fprintf(stderr, "ringmail: queue %s: HTTP %d, and the answer is not JSON\n", sub,
                    r.status);
            rc = 1;
        } else if (r.status / 100 != 2) {
            member(doc, "error", msg, sizeof(msg));
            fprintf(stderr, "ringmail: queue %s: %s (HTTP %d)\n", sub,
                    msg[0] != '\0' ? msg : "refused", r.status);
            rc = 1;
        } else if (strcmp(sub, "list") == 0) {
            rc = print_list(doc) < 0 ? 1 : 0;
        } else if (strcmp(sub, "show") == 0) {
            rc = print_show(doc) < 0 ? 1 : 0;
        } else {
            uint64_t dl = member_u64(doc, "deliveries"), act = member_u64(doc, "active");

            if (qid != NULL)
                printf("%s: %s: %" PRIu64 " deliver%s", sub, qid, dl, dl == 1 ? "y" : "ies");
            else
                printf("%s: %" PRIu64 " deliver%s", sub, dl, dl == 1 ? "y" : "ies");
            if (act > 0)
                printf(", %" PRIu64 " in an attempt now%s", act,
                       strcmp(sub, "hold") == 0 ? " (held once it ends)" : "");
            putchar('\n');
            rc = 0;
        }
        json_decref(doc);
    }
    free(r.buf);
    return rc;
}
