/*
 * admin.h: the admin HTTP endpoint (`admin_listen`): /healthz, /readyz,
 * /metrics (Prometheus text format 0.0.4) and queue control under /queue
 * (JSON, net/queue_ctl.h), served by the main thread.
 *
 * The main thread binds it at start-up (before the privilege drop, as the
 * SMTP listeners), then puts its descriptors in the poll loop it already runs
 * for the signalfd: admin_poll_fds() before poll(),
 * admin_handle() after it. Every socket is non-blocking and every connection
 * has a deadline, so a slow or silent client never holds the main thread:
 * at most ADMIN_MAX_CONNS connections at once, each closed after one
 * response, ADMIN_REQ_MAX octets of request head, ADMIN_READ_TIMEOUT_MS to
 * send it.
 *
 * Metrics are read at scrape time from the reactors' and workers' own stats
 * (relaxed loads of counters each written by one thread): nothing is added to
 * their loops.
 */
#ifndef RINGMAIL_NET_ADMIN_H
#define RINGMAIL_NET_ADMIN_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#define ADMIN_MAX_CONNS        16   /* connections served at once; more wait in the backlog */
#define ADMIN_REQ_MAX          8192 /* octets of request head; past it, 431 */
#define ADMIN_READ_TIMEOUT_MS  2000 /* a client has this long to send its whole request */
#define ADMIN_WRITE_TIMEOUT_MS 5000 /* and this long to take the response */
#define ADMIN_TOKEN_MAX        4096 /* octets of admin_token_file */
#define ADMIN_POLLFDS          (1 + ADMIN_MAX_CONNS) /* admin_poll_fds() fills at most this many */

/* /readyz fails when the spool's file system has less than both of these free. */
#define ADMIN_SPOOL_MIN_FREE    (64ull << 20) /* 64 MiB */
#define ADMIN_SPOOL_MIN_PERCENT 1             /* % of the file system */

struct reactor;
struct worker;
struct admin;

/* What the endpoint reports on: arrays owned by the main thread, alive until admin_close(). */
struct admin_sources {
    struct reactor *reactors;
    unsigned nreactors;
    struct worker *workers;
    unsigned nworkers;
    const char *version; /* for ringmail_build_info */
    uint64_t start_ms;   /* wall clock when the process started (ms); 0: admin_open()'s time */
};

/*
 * Bind admin_listen and read admin_token_file (main thread, start-up; may
 * block). 0 with *out = NULL when admin_listen is empty (off); 0 with *out
 * set; or -1 with a message naming the key in err ("key 'admin_listen':
 * 127.0.0.1:9025: Address already in use"). *src is copied; the arrays it
 * names must outlive the endpoint. cfg must too.
 */
int admin_open(const struct ringmail_config *cfg, const struct admin_sources *src,
               struct admin **out, char *err, size_t errlen);

/*
 * SIGHUP (main thread): read admin_token_file again. A file that cannot be
 * read or holds no valid token keeps the token in service (logged
 * event=reload what=admin_token result=refused, and -1); a good one
 * replaces it (result=ok, 0). An empty admin_token_file in cfg keeps the
 * current token: turning the token on or off needs a restart. cfg is the
 * configuration now in service: the endpoint serves under it from now on
 * (the /queue requests read it), so it must stay valid until the next
 * admin_reload() or admin_close(). NULL a is fine (0). net/main.c's SIGHUP
 * handling calls it.
 */
int admin_reload(struct admin *a, const struct ringmail_config *cfg);

/*
 * Read the token in the file path (admin_token_file): its content without
 * trailing blanks and newlines, one line of printable ASCII, at most
 * ADMIN_TOKEN_MAX octets, from a regular file (warned about when others may
 * read it). 0 with token[0..*token_len) (not terminated), or -1 with err
 * naming the key and the file. The file's octets are wiped from the stack on
 * every path. Used by the endpoint and by `ringmail queue` (net/queue_cmd.c).
 */
int admin_token_read(char token[ADMIN_TOKEN_MAX], size_t *token_len, const char *path, char *err,
                     size_t errlen);

/* Close the listening socket and every connection, free a. NULL is fine. Main thread. */
void admin_close(struct admin *a);

/*
 * Fill pfd[0..cap) with the descriptors to poll (cap >= ADMIN_POLLFDS); the
 * count. The same entries, with their revents, go back to admin_handle().
 * a may be NULL (0 entries). Main thread.
 */
unsigned admin_poll_fds(struct admin *a, struct pollfd *pfd, unsigned cap);

/* Milliseconds until the next connection deadline, for poll(); -1 when none. NULL is fine. */
int admin_poll_timeout(const struct admin *a);

/*
 * Serve what poll() reported in pfd[0..n) (as filled by the last
 * admin_poll_fds()), then close the connections past their deadline. Call
 * it after every poll(), timeouts included. Never blocks. NULL is fine.
 */
void admin_handle(struct admin *a, const struct pollfd *pfd, unsigned n);

/* While draining, /readyz answers 503 "draining" (any thread). */
void admin_set_draining(bool on);
bool admin_draining(void);

#endif
