/*
 * shim_main.c: the runner for tests built against tests/tsan/criterion/criterion.h.
 * Usage: PROGRAM [glob]; each test in a child process; prints a Criterion-like
 * synthesis and exits non-zero when a test failed.
 */
#include <criterion/criterion.h>
#include <fnmatch.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
int shim_failed;
static struct {
    const char *s, *n;
    void (*fn)(void);
    const struct shim_opts *o;
} tests[256];
static int ntests;
void
shim_register(const char *s, const char *n, void (*fn)(void), const struct shim_opts *o)
{
    tests[ntests].s = s;
    tests[ntests].n = n;
    tests[ntests].fn = fn;
    tests[ntests].o = o;
    ntests++;
}
int
main(int argc, char **argv)
{
    const char *pat = argc > 1 ? argv[1] : "*";
    int fails = 0, run = 0;
    for (int i = 0; i < ntests; i++) {
        char name[256];
        struct timespec a, b;
        int st;
        snprintf(name, sizeof name, "%s/%s", tests[i].s, tests[i].n);
        if (fnmatch(pat, name, 0) != 0)
            continue;
        run++;
        clock_gettime(CLOCK_MONOTONIC, &a);
        pid_t pid = fork();
        if (pid == 0) {
            if (tests[i].o->timeout > 0)
                alarm((unsigned)tests[i].o->timeout);
            tests[i].fn();
            _exit(shim_failed);
        }
        waitpid(pid, &st, 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        int ok = tests[i].o->signal ? (WIFSIGNALED(st) && WTERMSIG(st) == tests[i].o->signal)
                                    : (WIFEXITED(st) && WEXITSTATUS(st) == 0);
        fprintf(stderr, "[%s] %s (%.2fs)\n", ok ? "PASS" : "FAIL", name,
                (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
        fails += !ok;
    }
    fprintf(stderr, "%d passed, %d failed\n", run - fails, fails);
    return fails != 0;
}
