/*
 * compiler.h: attributes, invariant checks and banned functions.
 * Included by every ringmail source file, first among the project headers.
 */
#ifndef RINGMAIL_CORE_COMPILER_H
#define RINGMAIL_CORE_COMPILER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FALLTHROUGH   __attribute__((fallthrough))
#define UNUSED        __attribute__((unused))
#define PRINTF(f, a)  __attribute__((format(printf, f, a)))
#define NORETURN      __attribute__((noreturn))
#define likely(x)     __builtin_expect(!!(x), 1)
#define unlikely(x)   __builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)     ((a) < (b) ? (a) : (b))
#define MAX(a, b)     ((a) > (b) ? (a) : (b))
#define CACHELINE     64

/* A broken invariant: abort in every build (never for peer input). */
#define BUG_ON(cond)                                                                               \
    do {                                                                                           \
        if (unlikely(cond)) {                                                                      \
            fprintf(stderr, "BUG at %s:%d: %s\n", __FILE__, __LINE__, #cond);                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Banned: unbounded string functions and locale-dependent classification. */
#pragma GCC poison strcpy strcat sprintf vsprintf strtok gets

#endif
