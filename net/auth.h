/*
 * auth.h: the SASL password database (smtpd_sasl_password_file) and the pool
 * of verifier threads that check crypt(3) hashes away from the reactors.
 *
 * The database is immutable once loaded and refcounted: any thread may hold
 * a reference and look at it; the last auth_db_put() frees it.
 *
 * The pool. A reactor hands credentials to auth_pool_submit() (copied into
 * one of the reactor's AUTH_POOL_SLOTS preallocated request slots; never
 * blocks), a verifier thread looks the user up and runs crypt(3), and the
 * verdict comes back to that same reactor through auth_pool_poll(), which the
 * reactor calls every loop turn. A verifier calls the reactor's notify hook
 * after it publishes a result, unless a wake-up for that reactor is already
 * owed (see auth_pool_set_notify() for the ordering).
 *
 *   reactor r ── submit: slot ──▶ q_ring r (SPSC; verifiers take turns as its consumer)
 *                                    │ sem_post: one unit per request
 *                                    ▼
 *                              verifier threads "rm-auth-N": lookup + crypt_rn
 *                                    │
 *   reactor r ◀── poll: one exchange ── done stack r (lock-free; verifiers push)
 *                                    └── notify(arg) when the stack was empty
 *
 * Thread affinity is stated on every function.
 */
#ifndef RINGMAIL_NET_AUTH_H
#define RINGMAIL_NET_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_USER_MAX          127u               /* octets in a user name */
#define AUTH_PASS_MAX          1024u              /* octets in a password submitted */
#define AUTH_LINE_MAX          1024u              /* octets in a password file line */
#define AUTH_FILE_MAX          ((size_t)16 << 20) /* the password file's size bound */
#define AUTH_POOL_SLOTS        256u               /* requests in flight per reactor */
#define AUTH_POOL_MAX_THREADS  64u                /* verifier threads */
#define AUTH_POOL_MAX_REACTORS 256u               /* reactors */
#define AUTH_POOL_THREADS      2u                 /* suggested default */

struct auth_db;
struct auth_pool;

/*
 * Load a password file: one `user:hash` per line; empty lines (or only
 * blanks) and lines whose first octet is '#' are skipped; a CR before the LF
 * is ignored. user: 1..AUTH_USER_MAX octets, no ':' and no control character
 * (UTF-8 is fine). hash: a crypt(3) string of a supported method, $y$
 * (yescrypt), $gy$, $7$, $6$ (SHA-512), $5$ (SHA-256), $2b$ or $2y$ (bcrypt),
 * as libxcrypt's crypt_checksalt() accepts it. A user listed twice is an
 * error. A file with no user at all loads (every AUTH then fails).
 *
 * Returns 0 and *out (one reference, the caller's), or -errno: -ENOMEM,
 * the open/read error, -EFBIG (larger than AUTH_FILE_MAX), -EINVAL (a bad
 * line; err says "FILE:LINE: user 'x': what is wrong; expected ...", never
 * showing a hash). Blocking file I/O: start-up or the main thread only.
 */
int auth_db_load(const char *path, struct auth_db **out, char *err, size_t errlen);

/* Take one more reference (any thread holding one already). */
void auth_db_get(struct auth_db *db);

/* Drop a reference (any thread); the last one frees the database. NULL is a no-op. */
void auth_db_put(struct auth_db *db);

/* The number of users (any thread holding a reference). */
size_t auth_db_count(const struct auth_db *db);

/* Run on a verifier thread: must not block (an eventfd write fits). */
typedef void auth_notify_fn(void *arg);

/* A verdict, run on the reactor's thread inside auth_pool_poll(). */
typedef void auth_result_fn(void *arg, uint64_t token, bool ok);

/*
 * Start `nthreads` verifier threads (named "rm-auth-0", ...; every signal
 * blocked in them) serving reactors 0..nreactors-1. The pool takes its own
 * reference to db; the caller keeps its own. nthreads = 0 starts none, so
 * requests queue and are never answered: for tests of a full queue only.
 * Returns NULL with errno set (EINVAL: nreactors 0 or above
 * AUTH_POOL_MAX_REACTORS, nthreads above AUTH_POOL_MAX_THREADS; ENOMEM; a
 * pthread_create error). Main thread, start-up.
 */
struct auth_pool *auth_pool_new(unsigned nthreads, unsigned nreactors, struct auth_db *db);

/*
 * Replace the database (main thread, e.g. on SIGHUP; never a reactor: it
 * takes a mutex a verifier may hold for a moment). The pool takes its own
 * reference to db and drops the old one's; requests already queued are
 * checked against either. The old database is freed once the last verifier
 * using it is done with it.
 */
void auth_pool_set_db(struct auth_pool *p, struct auth_db *db);

/*
 * Stop and join the verifier threads (a verifier finishes the hash it is
 * running), then free the pool and its reference to the database. Requests
 * still queued or answered but not polled are DROPPED: their callbacks never
 * run; their password copies are wiped. Main thread, after every reactor has
 * stopped (no submit or poll may run during or after it). NULL is a no-op.
 */
void auth_pool_free(struct auth_pool *p);

/*
 * Register reactor `reactor`'s wake-up hook (fn may be NULL: the reactor
 * then finds results only when it polls on its own). Set it before that
 * reactor's first auth_pool_submit(), from the main thread before the
 * reactor starts or from the reactor's own thread; never change it after.
 *
 * Ordering: a verifier publishes a result (a release CAS on the reactor's
 * done stack) and only then calls fn, and only if that stack was empty just
 * before its push. A stack that was not empty already has a call of fn
 * coming (from the verifier that made it non-empty, after its push) and the
 * reactor takes everything on the stack with one exchange. So the reactor
 * gets at least one fn call after each empty-to-non-empty transition, none
 * is lost, and the reactor must call auth_pool_poll() after each wake-up it
 * reads (the eventfd read orders the push before its poll). A spurious call
 * (for results a poll already took) can happen; it is harmless.
 */
void auth_pool_set_notify(struct auth_pool *p, unsigned reactor, auth_notify_fn *fn, void *arg);

/*
 * Reactor `reactor`'s thread only. Never blocks, never allocates: copies user
 * and pass into a free request slot of that reactor, queues it and wakes a
 * verifier (sem_post: an atomic add, and a futex wake when a verifier
 * sleeps). The caller's buffers may be reused on return. Returns 0 (the
 * verdict will come through auth_pool_poll() with this token, exactly once)
 * or -EAGAIN when the reactor's AUTH_POOL_SLOTS slots are all in use (answer
 * 454 4.7.0). A user longer than AUTH_USER_MAX, an empty one, a password
 * longer than AUTH_PASS_MAX or holding a NUL octet is accepted and answered
 * false after the same work as any other request (crypt(3) itself fails any
 * password of 512 octets or more). An out-of-range reactor is a bug: BUG_ON.
 */
int auth_pool_submit(struct auth_pool *p, unsigned reactor, uint64_t token, const char *user,
                     size_t ulen, const char *pass, size_t plen);

/*
 * Reactor `reactor`'s thread only; call it every loop turn (and so after
 * every wake-up read). Delivers the verdicts published so far, in the order
 * they were published (not the order of submission: hashes differ in cost and
 * run in parallel), with cb(arg, token, ok), and returns how many. When there
 * is none it costs one relaxed load. The token may name a connection that
 * has gone meanwhile: the slot is free either way, cb decides to drop it.
 * cb may call auth_pool_submit() (its slot is free again before cb runs);
 * verdicts published while cb runs are left for the next call (their
 * verifier notifies: the stack was emptied before cb ran).
 */
unsigned auth_pool_poll(struct auth_pool *p, unsigned reactor, auth_result_fn *cb, void *arg);

#endif
