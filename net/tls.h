/*
 * tls.h: TLS with BoringSSL as a memory-BIO filter (RFC 3207 STARTTLS,
 * RFC 8314 implicit TLS, and STARTTLS on delivery).
 *
 * A struct tls_conn never touches a socket. Its driver feeds it the octets
 * that io_uring received (tls_conn_feed), pulls handshake progress and
 * plaintext out (tls_conn_handshake, tls_conn_read), pushes plaintext in
 * (tls_conn_write) and sends the ciphertext it takes out (tls_conn_out_take).
 * Both BIOs are memory BIOs, so no call ever blocks or asks to be retried
 * for a full buffer: SSL_write always takes everything, and what a read
 * could not use stays in the read BIO until the driver reads again.
 *
 * Contexts: the server context (certificate, key, policy) is built on the
 * main thread at start and on SIGHUP and published through tls_server_ctx;
 * reactors take it when a handshake starts (SSL_new holds its own reference),
 * and the main thread frees a replaced context only after every reactor has
 * turned its loop (tls_server_swap's caller waits: see net/main.c).
 *
 * Thread affinity: a tls_conn belongs to one thread; contexts are shared.
 */
#ifndef RINGMAIL_NET_TLS_H
#define RINGMAIL_NET_TLS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

struct ssl_st;
struct ssl_ctx_st;
struct bio_st;

#define TLS_ERR_MAX 256

/* "BoringSSL" plus its version text, for `ringmail --version`. */
const char *tls_library_version(void);

/*
 * A server context from tls_cert_file and tls_key_file: TLS 1.2 and 1.3,
 * ECDHE with AEAD ciphers, session tickets. prev, when not NULL, gives its
 * ticket keys to the new context so that sessions resume across a reload.
 * NULL with a message naming the file on error.
 */
struct ssl_ctx_st *tls_server_ctx_new(const struct ringmail_config *cfg, struct ssl_ctx_st *prev,
                                      char *err, size_t errlen);
/* The client context for delivery: verification against smtp_tls_CAfile (or the system
   store) is switched on per connection, for smtp_tls_security_level verify. */
struct ssl_ctx_st *tls_client_ctx_new(const struct ringmail_config *cfg, char *err, size_t errlen);
void tls_ctx_free(struct ssl_ctx_st *ctx);

/* The server context in service, NULL when TLS is off. Written by the main thread. */
extern _Atomic(struct ssl_ctx_st *) tls_server_ctx;

struct tls_conn {
    struct ssl_st *ssl;
    struct bio_st *rbio, *wbio; /* ciphertext in, ciphertext out (owned by ssl) */
    bool done;                  /* handshake complete */
    bool eof;                   /* the peer sent close_notify */
};

/* Start a server side (ctx = tls_server_ctx) or a client side. For a client, sni
   (may be NULL) is sent as server name; verify_name, when not NULL, must match the
   peer's certificate (a DNS name, or an IP address in text) and the chain must verify.
   0, or -1 with a message. */
int tls_conn_server(struct tls_conn *t, struct ssl_ctx_st *ctx, char *err, size_t errlen);
int tls_conn_client(struct tls_conn *t, struct ssl_ctx_st *ctx, const char *sni,
                    const char *verify_name, char *err, size_t errlen);
void tls_conn_free(struct tls_conn *t);

/* Ciphertext received from the peer. */
void tls_conn_feed(struct tls_conn *t, const void *p, size_t n);
/* Drive the handshake: 1 done (also when already done), 0 needs more input, -1 failed
   (message in err; an alert may be waiting in the output). */
int tls_conn_handshake(struct tls_conn *t, char *err, size_t errlen);
/* Plaintext, after the handshake: >0 octets, 0 needs more input, -1 end (t->eof) or
   error (message in err). */
long tls_conn_read(struct tls_conn *t, void *buf, size_t cap, char *err, size_t errlen);
/* Encrypt all of p[0..n) into the output (after the handshake). 0 or -1. */
int tls_conn_write(struct tls_conn *t, const void *p, size_t n, char *err, size_t errlen);
/* Queue a close_notify alert. */
void tls_conn_shutdown(struct tls_conn *t);
/* Ciphertext waiting to be sent, and taking up to cap octets of it. */
size_t tls_conn_out_pending(const struct tls_conn *t);
size_t tls_conn_out_take(struct tls_conn *t, void *buf, size_t cap);
/* "TLSv1.3 TLS_AES_128_GCM_SHA256" once the handshake is done. */
void tls_conn_describe(const struct tls_conn *t, char *buf, size_t n);
/* The session was resumed (no full handshake). */
bool tls_conn_resumed(const struct tls_conn *t);

#endif
