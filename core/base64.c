/*
 * base64.c: RFC 4648 base64 (see base64.h). Table-driven, no allocation.
 */
#include "core/base64.h"

#include <stdbool.h>
#include <stdint.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* 0..63 for a symbol, -1 otherwise ('=' included: padding is handled apart). */
static int
sym(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long
base64_decode(const char *src, size_t n, unsigned char *dst)
{
    size_t o = 0;

    if (n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        const unsigned char *q = (const unsigned char *)src + i;
        int a = sym(q[0]), b = sym(q[1]), c = sym(q[2]), d = sym(q[3]);
        bool last = i + 4 == n;

        if (a < 0 || b < 0)
            return -1;
        if (c < 0 || d < 0) {
            /* padding: only in the last quantum, "xx==" or "xxx=" */
            if (!last || q[3] != '=' || (c < 0 && q[2] != '='))
                return -1;
            if (c < 0) {
                if (b & 0x0f)
                    return -1; /* non-zero spare bits */
                dst[o++] = (unsigned char)(a << 2 | b >> 4);
                break;
            }
            if (c & 0x03)
                return -1;
            dst[o++] = (unsigned char)(a << 2 | b >> 4);
            dst[o++] = (unsigned char)((b & 0x0f) << 4 | c >> 2);
            break;
        }
        dst[o++] = (unsigned char)(a << 2 | b >> 4);
        dst[o++] = (unsigned char)((b & 0x0f) << 4 | c >> 2);
        dst[o++] = (unsigned char)((c & 0x03) << 6 | d);
    }
    return (long)o;
}

void
base64_encode(const unsigned char *src, size_t n, char *dst)
{
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];

        dst[o++] = alphabet[v >> 18];
        dst[o++] = alphabet[(v >> 12) & 63];
        dst[o++] = alphabet[(v >> 6) & 63];
        dst[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        dst[o++] = alphabet[src[i] >> 2];
        dst[o++] = alphabet[(src[i] & 3) << 4];
        dst[o++] = '=';
        dst[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 8 | src[i + 1];

        dst[o++] = alphabet[v >> 10];
        dst[o++] = alphabet[(v >> 4) & 63];
        dst[o++] = alphabet[(v & 15) << 2];
        dst[o++] = '=';
    }
    dst[o] = '\0';
}
