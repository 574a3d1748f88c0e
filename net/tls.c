/*
 * tls.c: BoringSSL glue. Any thread.
 */
#include "net/tls.h"

#include <openssl/base.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

const char *
tls_library_version(void)
{
    /* OpenSSL_version() reports BoringSSL's compatibility string; SSL_library_init
       is a no-op kept for the linker to prove libssl is there. */
    (void)SSL_library_init();
    return OpenSSL_version(OPENSSL_VERSION);
}
