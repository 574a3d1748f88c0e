/*
 * Tests for core/base64.c: RFC 4648 test vectors both ways, and the
 * canonical-form checks the SASL decoder relies on.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "core/base64.h"

static const char *const vec[][2] = {
    { "", "" },
    { "f", "Zg==" },
    { "fo", "Zm8=" },
    { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" },
    { "fooba", "Zm9vYmE=" },
    { "foobar", "Zm9vYmFy" },
};

Test(base64, rfc4648_vectors)
{
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        char enc[64];
        unsigned char dec[64];
        size_t n = strlen(vec[i][0]);
        long len;

        base64_encode((const unsigned char *)vec[i][0], n, enc);
        cr_assert_str_eq(enc, vec[i][1]);
        cr_assert_eq(strlen(enc), BASE64_ENCODED_LEN(n));
        len = base64_decode(vec[i][1], strlen(vec[i][1]), dec);
        cr_assert_eq(len, (long)n, "%s", vec[i][1]);
        cr_assert_eq(memcmp(dec, vec[i][0], n), 0);
    }
}

Test(base64, all_octets_round_trip)
{
    unsigned char raw[256], dec[256];
    char enc[BASE64_ENCODED_LEN(256) + 1];

    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)i;
    for (size_t n = 0; n <= 256; n++) {
        base64_encode(raw, n, enc);
        cr_assert_eq(base64_decode(enc, strlen(enc), dec), (long)n);
        cr_assert_eq(memcmp(dec, raw, n), 0);
    }
}

Test(base64, rejects_non_canonical)
{
    static const char *const bad[] = {
        "Zg",       /* no padding */
        "Zg=",      /* short padding */
        "Zh==",     /* spare bits set */
        "Zm9=",     /* spare bits set */
        "Zg==Zg==", /* padding in the middle */
        "Z===",     /* too much padding */
        "Zm 9v",    /* whitespace */
        "Zm9v\n",   /* newline */
        "Zm-v",     /* URL alphabet */
        "=Zm9",     /* padding first */
        "Zm=v",     /* padding then data */
    };
    unsigned char dec[16];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(base64_decode(bad[i], strlen(bad[i]), dec), -1, "%s", bad[i]);
}
