/*
 * base64.h: RFC 4648 base64, strict, for SASL (RFC 4954) responses.
 *
 * Decoding takes the canonical form only: the standard alphabet, padding to
 * a multiple of four, no whitespace, and zero bits where the last symbol has
 * bits to spare, so every octet string has exactly one accepted encoding.
 */
#ifndef RINGMAIL_CORE_BASE64_H
#define RINGMAIL_CORE_BASE64_H

#include <stddef.h>

/* Octets base64_decode() may write for n input characters. */
#define BASE64_DECODED_MAX(n) ((n) / 4 * 3)
/* Characters base64_encode() writes for n octets, NUL excluded. */
#define BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

/* Decode src[0..n) into dst (room for BASE64_DECODED_MAX(n)); the length, or -1 when not
   canonical base64. */
long base64_decode(const char *src, size_t n, unsigned char *dst);
/* Encode src[0..n) into dst (room for BASE64_ENCODED_LEN(n) + 1); NUL-terminated. */
void base64_encode(const unsigned char *src, size_t n, char *dst);

#endif
