/*
 * queue_cmd.h: `ringmail queue`, an HTTP client of the running ringmail's
 * admin endpoint (/queue, net/queue_ctl.h).
 *
 *   ringmail queue list [--json]            the queue, as postqueue -p (held: '!' after
 *                                           the id, in an attempt: '*')
 *   ringmail queue show ID [--json]         one message: envelope, recipients, content
 *   ringmail queue flush [ID]               retry deferred deliveries now
 *   ringmail queue delete|hold|release ID   act on one message
 *
 * Options anywhere after `queue`: -c FILE, -o KEY=VALUE (the configuration
 * names admin_listen, admin_token_file and spool_dir), --json (print the
 * endpoint's JSON as it came). The address is admin_listen (0.0.0.0 and ::
 * are reached on the loopback); the bearer token is admin_token_file's; the
 * request names spool_dir (Ringmail-Spool-Dir), so another instance
 * listening there refuses it (421). A plain blocking socket, 5 s timeouts.
 *
 * When admin_listen is empty, nothing listens there, or the instance there
 * has another spool, `list` and `show` read the spool offline as before (and
 * say so on stderr: no delivery state then; not with --json); the other
 * commands fail (exit 1). The spool_dir sent is its realpath(), so a
 * relative one matches from any working directory.
 * Exit: 0 done, 1 failed (the endpoint's error on stderr), 2 usage.
 */
#ifndef RINGMAIL_NET_QUEUE_CMD_H
#define RINGMAIL_NET_QUEUE_CMD_H

/* argv[0] is the subcommand; file and ov[0..nov) are the options given before `queue`. */
int queue_cmd(int argc, char **argv, const char *file, char **ov, int nov);

#endif
