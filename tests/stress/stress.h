/*
 * stress.h: what every stress program shares. CHECK(cond, fmt, ...) prints
 * "STRESS_NAME: file:line: message" and exits 1 when cond is false (the
 * including program defines STRESS_NAME first); UNDER_TSAN is 1 in a
 * ThreadSanitizer build (which runs 5-15 times slower: programs scale their
 * rounds down), else 0.
 */
#ifndef RINGMAIL_TESTS_STRESS_H
#define RINGMAIL_TESTS_STRESS_H

#include <stdio.h>
#include <stdlib.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s: %s:%d: ", STRESS_NAME, __FILE__, __LINE__);                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#endif
