/*
 * A minimal stand-in for Criterion's criterion.h, so that a test file written
 * for Criterion also builds as a plain program that runs under
 * ThreadSanitizer: Criterion's shared-memory arena cannot be mapped under
 * TSan (Snaipe/Criterion#274). Only the macros ringmail's threaded tests use.
 * Each test runs in its own child process (shim_main.c), as under Criterion.
 */
#ifndef RINGMAIL_TESTS_TSAN_CRITERION_H
#define RINGMAIL_TESTS_TSAN_CRITERION_H
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
struct shim_opts {
    int signal;
    double timeout;
};
void shim_register(const char *s, const char *n, void (*fn)(void), const struct shim_opts *o);
extern int shim_failed;
#define Test(s, n, ...)                                                                            \
    static void s##_##n(void);                                                                     \
    __attribute__((constructor)) static void reg_##s##_##n(void)                                   \
    {                                                                                              \
        static const struct shim_opts o = { 0, 0, ##__VA_ARGS__ };                                 \
        shim_register(#s, #n, s##_##n, &o);                                                        \
    }                                                                                              \
    static void s##_##n(void)
#define SHIM_CHECK(fatal, cond, text, ...)                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, text);                       \
            fprintf(stderr, " " __VA_ARGS__);                                                      \
            fprintf(stderr, "\n");                                                                 \
            shim_failed = 1;                                                                       \
            if (fatal)                                                                             \
                _exit(1);                                                                          \
        }                                                                                          \
    } while (0)
#define cr_assert(c, ...)          SHIM_CHECK(1, (c), #c, ##__VA_ARGS__)
#define cr_expect(c, ...)          SHIM_CHECK(0, (c), #c, ##__VA_ARGS__)
#define cr_assert_not(c, ...)      SHIM_CHECK(1, !(c), "!" #c, ##__VA_ARGS__)
#define cr_expect_not(c, ...)      SHIM_CHECK(0, !(c), "!" #c, ##__VA_ARGS__)
#define cr_assert_eq(a, b, ...)    SHIM_CHECK(1, (a) == (b), #a " == " #b, ##__VA_ARGS__)
#define cr_expect_eq(a, b, ...)    SHIM_CHECK(0, (a) == (b), #a " == " #b, ##__VA_ARGS__)
#define cr_assert_neq(a, b, ...)   SHIM_CHECK(1, (a) != (b), #a " != " #b, ##__VA_ARGS__)
#define cr_expect_neq(a, b, ...)   SHIM_CHECK(0, (a) != (b), #a " != " #b, ##__VA_ARGS__)
#define cr_assert_lt(a, b, ...)    SHIM_CHECK(1, (a) < (b), #a " < " #b, ##__VA_ARGS__)
#define cr_expect_lt(a, b, ...)    SHIM_CHECK(0, (a) < (b), #a " < " #b, ##__VA_ARGS__)
#define cr_assert_geq(a, b, ...)   SHIM_CHECK(1, (a) >= (b), #a " >= " #b, ##__VA_ARGS__)
#define cr_expect_geq(a, b, ...)   SHIM_CHECK(0, (a) >= (b), #a " >= " #b, ##__VA_ARGS__)
#define cr_assert_null(a, ...)     SHIM_CHECK(1, (a) == NULL, #a " == NULL", ##__VA_ARGS__)
#define cr_expect_null(a, ...)     SHIM_CHECK(0, (a) == NULL, #a " == NULL", ##__VA_ARGS__)
#define cr_assert_not_null(a, ...) SHIM_CHECK(1, (a) != NULL, #a " != NULL", ##__VA_ARGS__)
#define cr_assert_fail(...)        SHIM_CHECK(1, 0, "fail", ##__VA_ARGS__)
#define cr_log_info(...)           (fprintf(stderr, "  info: " __VA_ARGS__), fprintf(stderr, "\n"))
#define cr_log_error(...)          (fprintf(stderr, "  error: " __VA_ARGS__), fprintf(stderr, "\n"))

#endif
