/*
 * hash.h: small hashing helpers shared by core/ modules.
 */
#ifndef RINGMAIL_CORE_HASH_H
#define RINGMAIL_CORE_HASH_H

#include <stdint.h>

/* MurmurHash3's fmix64 finalizer: every input bit reaches every output bit. */
static inline uint64_t
fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

#endif
