/*
 * tls.c: the BoringSSL memory-BIO filter and contexts (see tls.h).
 *
 * Policy: TLS 1.2 and 1.3 only. TLS 1.3's suites are fixed by BoringSSL
 * (AES-GCM and ChaCha20-Poly1305); for TLS 1.2 the list below keeps only
 * forward-secret ECDHE key exchange with AEAD ciphers. Session tickets are
 * on (BoringSSL's default, keys rotated by the library); the server-side
 * session cache is on too, for clients that resume by session id.
 */
#include "net/tls.h"

#include <stdio.h>
#include <string.h>

#include <openssl/base.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

_Atomic(SSL_CTX *) tls_server_ctx;

const char *
tls_library_version(void)
{
    /* OpenSSL_version() reports BoringSSL's compatibility string; SSL_library_init
       is a no-op kept for the linker to prove libssl is there. */
    (void)SSL_library_init();
    return OpenSSL_version(OPENSSL_VERSION);
}

/* The first queued BoringSSL error as text (and the queue cleared), after what. */
static void
ssl_error(char *err, size_t errlen, const char *what)
{
    uint32_t e = ERR_get_error();
    char buf[160];

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    else
        snprintf(buf, sizeof(buf), "no detail");
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s", what, buf);
}

static SSL_CTX *
ctx_common(char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());

    if (ctx == NULL) {
        ssl_error(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_strict_cipher_list(ctx, TLS12_CIPHERS)) {
        ssl_error(err, errlen, "TLS policy");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *
tls_server_ctx_new(const struct ringmail_config *cfg, SSL_CTX *prev, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    char why[TLS_ERR_MAX];
    uint8_t keys[48];

    if (cfg->tls_cert_file[0] == '\0')
        return NULL;
    ctx = ctx_common(err, errlen);
    if (ctx == NULL)
        return NULL;
    if (!SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file)) {
        ssl_error(why, sizeof(why), "cannot load the certificate chain");
        snprintf(err, errlen, "key 'tls_cert_file': %s: %s", cfg->tls_cert_file, why);
        goto fail;
    }
    if (!SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM)) {
        ssl_error(why, sizeof(why), "cannot load the private key");
        snprintf(err, errlen, "key 'tls_key_file': %s: %s", cfg->tls_key_file, why);
        goto fail;
    }
    if (!SSL_CTX_check_private_key(ctx)) {
        ssl_error(why, sizeof(why), "the key does not match the certificate");
        snprintf(err, errlen, "key 'tls_key_file': %s: %s", cfg->tls_key_file, why);
        goto fail;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const uint8_t *)"ringmail", 8);
    if (prev != NULL && SSL_CTX_get_tlsext_ticket_keys(prev, keys, sizeof(keys)))
        SSL_CTX_set_tlsext_ticket_keys(ctx, keys, sizeof(keys));
    OPENSSL_cleanse(keys, sizeof(keys));
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *
tls_client_ctx_new(const struct ringmail_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_common(err, errlen);
    char why[TLS_ERR_MAX];

    if (ctx == NULL)
        return NULL;
    if (cfg->smtp_tls_CAfile[0] != '\0') {
        if (!SSL_CTX_load_verify_locations(ctx, cfg->smtp_tls_CAfile, NULL)) {
            ssl_error(why, sizeof(why), "cannot load CA certificates");
            snprintf(err, errlen, "key 'smtp_tls_CAfile': %s: %s", cfg->smtp_tls_CAfile, why);
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else if (!SSL_CTX_set_default_verify_paths(ctx)) {
        ERR_clear_error(); /* no system store: verify then fails, and says so */
    }
    return ctx;
}

void
tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

static int
conn_new(struct tls_conn *t, SSL_CTX *ctx, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        ssl_error(err, errlen, "SSL_new");
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        memset(t, 0, sizeof(*t));
        return -1;
    }
    /* an empty read BIO means "retry later", never end of file */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* ssl owns both now */
    return 0;
}

int
tls_conn_server(struct tls_conn *t, SSL_CTX *ctx, char *err, size_t errlen)
{
    if (conn_new(t, ctx, err, errlen) < 0)
        return -1;
    SSL_set_accept_state(t->ssl);
    return 0;
}

int
tls_conn_client(struct tls_conn *t, SSL_CTX *ctx, const char *sni, const char *verify_name,
                char *err, size_t errlen)
{
    if (conn_new(t, ctx, err, errlen) < 0)
        return -1;
    SSL_set_connect_state(t->ssl);
    if (sni != NULL && sni[0] != '\0' && !SSL_set_tlsext_host_name(t->ssl, sni)) {
        ssl_error(err, errlen, "server name");
        tls_conn_free(t);
        return -1;
    }
    if (verify_name != NULL) {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
        int ok;

        /* an IP literal next hop is checked against the certificate's IP addresses */
        if (strchr(verify_name, ':') != NULL ||
            strspn(verify_name, "0123456789.") == strlen(verify_name))
            ok = X509_VERIFY_PARAM_set1_ip_asc(param, verify_name);
        else
            ok = X509_VERIFY_PARAM_set1_host(param, verify_name, strlen(verify_name));
        if (!ok) {
            ssl_error(err, errlen, "verify name");
            tls_conn_free(t);
            return -1;
        }
        SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
    }
    return 0;
}

void
tls_conn_free(struct tls_conn *t)
{
    if (t->ssl != NULL)
        SSL_free(t->ssl); /* frees both BIOs */
    memset(t, 0, sizeof(*t));
}

void
tls_conn_feed(struct tls_conn *t, const void *p, size_t n)
{
    /* a memory BIO takes everything; n is at most one receive buffer */
    if (n > 0)
        BIO_write(t->rbio, p, (int)n);
}

/* What an SSL_* call's failure means: 0 = wants more input, -1 = failed. */
static int
failure(struct tls_conn *t, int rc, char *err, size_t errlen, const char *what)
{
    int e = SSL_get_error(t->ssl, rc);

    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        t->eof = true;
        snprintf(err, errlen, "closed by the peer");
        return -1;
    case SSL_ERROR_SSL: {
        long v = SSL_get_verify_result(t->ssl);

        if (v != X509_V_OK) {
            ERR_clear_error();
            snprintf(err, errlen, "%s: certificate verification failed: %s", what,
                     X509_verify_cert_error_string(v));
            return -1;
        }
        ssl_error(err, errlen, what);
        return -1;
    }
    default:
        ERR_clear_error();
        snprintf(err, errlen, "%s: error %d", what, e);
        return -1;
    }
}

int
tls_conn_handshake(struct tls_conn *t, char *err, size_t errlen)
{
    int rc;

    if (t->done)
        return 1;
    rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->done = true;
        return 1;
    }
    return failure(t, rc, err, errlen, "handshake");
}

long
tls_conn_read(struct tls_conn *t, void *buf, size_t cap, char *err, size_t errlen)
{
    int rc = SSL_read(t->ssl, buf, (int)(cap > INT32_MAX ? INT32_MAX : cap));

    if (rc > 0)
        return rc;
    return failure(t, rc, err, errlen, "read");
}

int
tls_conn_write(struct tls_conn *t, const void *p, size_t n, char *err, size_t errlen)
{
    const char *q = p;

    while (n > 0) {
        int k = (int)(n > (1u << 30) ? (1u << 30) : n);
        int rc = SSL_write(t->ssl, q, k);

        if (rc <= 0) {
            failure(t, rc, err, errlen, "write");
            return -1;
        }
        q += rc;
        n -= (size_t)rc;
    }
    return 0;
}

void
tls_conn_shutdown(struct tls_conn *t)
{
    if (t->done)
        (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t
tls_conn_out_pending(const struct tls_conn *t)
{
    return t->wbio != NULL ? BIO_pending(t->wbio) : 0;
}

size_t
tls_conn_out_take(struct tls_conn *t, void *buf, size_t cap)
{
    int rc = BIO_read(t->wbio, buf, (int)(cap > INT32_MAX ? INT32_MAX : cap));

    return rc > 0 ? (size_t)rc : 0;
}

void
tls_conn_describe(const struct tls_conn *t, char *buf, size_t n)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);

    snprintf(buf, n, "%s %s", SSL_get_version(t->ssl),
             c != NULL ? SSL_CIPHER_standard_name(c) : "none");
}

bool
tls_conn_resumed(const struct tls_conn *t)
{
    return SSL_session_reused(t->ssl) == 1;
}
