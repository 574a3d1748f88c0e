/*
 * queue_ctl.h: queue control on the admin endpoint (main thread), and the
 * hold markers.
 *
 *   GET    /queue[?filters]           the messages the workers hold, as JSON
 *   GET    /queue/QID[?body=1]        one message (with its stored content)
 *   POST   /queue/flush[?filters]     retry deferred deliveries now
 *   POST   /queue/QID/flush           one message's
 *   POST   /queue/QID/hold            put a message on hold
 *   POST   /queue/QID/release         take it off hold
 *   POST   /queue/QID/delete          delete it without a bounce (also DELETE /queue/QID)
 *   POST   /queue/hold|release|delete?filters   the same for every message the filters
 *                                     select (at least one filter besides limit)
 *
 * A request may carry "Ringmail-Spool-Dir: PATH" (`ringmail queue` sends its
 * configuration's spool_dir): when PATH is not this instance's spool_dir
 * (compared by device and inode), the answer is 421 and nothing is done,
 * so a command run for one instance never acts on another that happens to
 * listen on the address it was given.
 *
 * Filters: core/qfilter.h. Answers are application/json; errors are
 * {"error": "..."} with 400 (bad filter or path), 404 (unknown queue id),
 * 405 (method), 409 (the message is being delivered right now, or not on
 * hold for a release, or on hold for a flush), 500 (a hold marker cannot be
 * written), 503 (a worker did not answer within QUEUE_CTL_WAIT_MS, or
 * ringmail is stopping).
 *
 * The data: each worker describes the deliveries it holds (waiting in a
 * destination's queue, deferred, held, in an attempt) into its own bounded
 * buffer when asked (worker_control_send()/worker_control_wait(),
 * net/worker.h); the main thread never reads worker memory without that
 * handshake. A message is listed from the moment its deliveries reach a
 * worker. With `delivery: hold` (nothing is handed to the workers) the list
 * and the messages come from the spool (recovery's scan on the main thread,
 * every recipient "waiting"), and the actions answer 409.
 *
 * Hold: a marker file spool_dir/hold/QID (written and fsync'd, folder
 * included, before the workers are told) makes the hold survive a restart:
 * queue_ctl_start() reads the folder before the workers start, removes
 * markers of messages no longer in the spool and gives the rest to every
 * worker (worker_hold_preload()). A held message's deliveries sit on their
 * worker's held list: not tried, not expired by maximal_queue_lifetime
 * (Postfix's hold queue does not expire either; a released message gets its
 * attempt, and bounces after it fails if it is older than the lifetime). A
 * flush does not release held messages; a delete does remove them.
 */
#ifndef RINGMAIL_NET_QUEUE_CTL_H
#define RINGMAIL_NET_QUEUE_CTL_H

#include <stddef.h>

#include "core/config.h"
#include "core/http.h"
#include "queue/spool.h"

struct worker;

#define QUEUE_CTL_WAIT_MS  2000        /* the workers' answer to one request; then 503 */
#define QUEUE_CTL_BODY_MAX (16u << 20) /* stored content shown by ?body=1, at most */
#define QUEUE_HOLD_DIR     "hold"      /* under spool_dir */

/*
 * Start-up (main thread, after worker_init() and before worker_start(),
 * while the recovered index is alive): create spool_dir/hold, remove the
 * markers of messages not pending in idx, preload every worker with the
 * others. 0, or -errno after logging (event=fatal what=hold).
 */
int queue_ctl_start(const struct ringmail_config *cfg, const struct spool_index *idx,
                    struct worker *workers, unsigned nworkers);

/*
 * Serve one request whose path starts with /queue (main thread; waits at
 * most QUEUE_CTL_WAIT_MS for the workers, and reads the spool for ?body=1).
 * Returns the HTTP status; *body (malloc'd JSON, the caller frees it; NULL
 * when out of memory: answer 500) and *len; *allow is the Allow header's
 * value for a 405, else NULL.
 */
int queue_ctl_http(const struct ringmail_config *cfg, struct worker *workers, unsigned nworkers,
                   const struct http_request *req, char **body, size_t *len, const char **allow);

#endif
