/*
 * tls.h: BoringSSL glue. For now the library's identity, so that the build
 * proves it links; the memory-BIO filter between the io_uring buffers and the
 * SMTP session comes with STARTTLS.
 */
#ifndef RINGMAIL_NET_TLS_H
#define RINGMAIL_NET_TLS_H

/* "BoringSSL" plus its version text, for `ringmail --version`. */
const char *tls_library_version(void);

#endif
