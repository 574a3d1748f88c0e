/*
 * Tests for net/auth.c: the password file (every load error, with its
 * FILE:LINE), and the verifier pool driven from the test thread acting as
 * reactor 0 (every wait bounded: 10 s). The hashes are made here with
 * crypt_rn() and fixed salts, so the tests need no external tool.
 */
#define _GNU_SOURCE
#include <crypt.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "net/auth.h"

/* alice: SHA-512-crypt of "secret6"; bob: yescrypt of "secretY"; carol: SHA-256 of "pw5" */
static char hash6[CRYPT_OUTPUT_SIZE], hashy[CRYPT_OUTPUT_SIZE], hash5[CRYPT_OUTPUT_SIZE];

static void
make_hash(char *dst, const char *pass, const char *setting)
{
    static struct crypt_data cd;
    const char *out = crypt_rn(pass, setting, &cd, (int)sizeof(cd));

    cr_assert_not_null(out, "crypt_rn(%s)", setting);
    cr_assert_lt(strlen(out), (size_t)CRYPT_OUTPUT_SIZE);
    memcpy(dst, out, strlen(out) + 1);
}

static void
make_hashes(void)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];

    make_hash(hash6, "secret6", "$6$saltsalt$");
    /* the cheapest yescrypt cost: the tests hash it many times */
    cr_assert_not_null(
        crypt_gensalt_rn("$y$", 1, "0123456789abcdef", 16, setting, (int)sizeof(setting)));
    make_hash(hashy, "secretY", setting);
    make_hash(hash5, "pw5", "$5$rounds=1000$saltsalt$");
    cr_assert(strncmp(hash6, "$6$", 3) == 0 && strncmp(hashy, "$y$", 3) == 0);
}

static char path[64];

static void
write_file(const char *content)
{
    FILE *f;
    int fd;

    memcpy(path, "/tmp/ringmail-auth-XXXXXX", sizeof("/tmp/ringmail-auth-XXXXXX"));
    fd = mkstemp(path);
    cr_assert_neq(fd, -1);
    f = fdopen(fd, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(content, 1, strlen(content), f), strlen(content));
    cr_assert_eq(fclose(f), 0);
}

static void
setup(void)
{
    make_hashes();
    path[0] = '\0';
}

static void
teardown(void)
{
    if (path[0] != '\0')
        unlink(path);
}

static struct auth_db *
load_ok(const char *content)
{
    struct auth_db *db;
    char err[512] = "";

    write_file(content);
    cr_assert_eq(auth_db_load(path, &db, err, sizeof(err)), 0, "load: %s", err);
    unlink(path);
    return db;
}

/* The standard file: alice ($6$), bob ($y$), carol ($5$). */
static struct auth_db *
load_std(void)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), "# users\n\nalice:%s\nbob:%s\r\n   \ncarol:%s", hash6, hashy, hash5);
    return load_ok(buf);
}

/* ---- the reactor side, played by the test thread ---- */

struct results {
    unsigned n;
    uint64_t token[AUTH_POOL_SLOTS * 2];
    bool ok[AUTH_POOL_SLOTS * 2];
};

static atomic_uint notified;

static void
on_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add_explicit(&notified, 1, memory_order_relaxed);
}

static void
on_result(void *arg, uint64_t token, bool ok)
{
    struct results *res = arg;

    cr_assert_lt(res->n, AUTH_POOL_SLOTS * 2);
    res->token[res->n] = token;
    res->ok[res->n] = ok;
    res->n++;
}

/* Poll reactor 0 until `want` verdicts came in; 10 s at most. */
static void
wait_results(struct auth_pool *p, struct results *res, unsigned want)
{
    struct timespec ts = { 0, 1000000 };

    for (unsigned ms = 0; res->n < want; ms++) {
        cr_assert_lt(ms, 10000u, "%u of %u verdicts after 10 s", res->n, want);
        if (auth_pool_poll(p, 0, on_result, res) == 0)
            nanosleep(&ts, NULL);
    }
    cr_assert_eq(res->n, want);
}

static bool
check(struct auth_pool *p, const char *user, size_t ulen, const char *pass, size_t plen)
{
    struct results res = { 0 };

    cr_assert_eq(auth_pool_submit(p, 0, 42, user, ulen, pass, plen), 0);
    wait_results(p, &res, 1);
    cr_assert_eq(res.token[0], 42u);
    return res.ok[0];
}

static bool
check_str(struct auth_pool *p, const char *user, const char *pass)
{
    return check(p, user, strlen(user), pass, strlen(pass));
}

static struct auth_pool *
pool_std(unsigned threads, struct auth_db *db)
{
    struct auth_pool *p = auth_pool_new(threads, 1, db);

    cr_assert_not_null(p, "auth_pool_new: %s", strerror(errno));
    auth_pool_set_notify(p, 0, on_notify, NULL);
    auth_db_put(db); /* the pool holds its own */
    return p;
}

TestSuite(auth, .init = setup, .fini = teardown, .timeout = 60);

Test(auth, load_counts_entries_and_skips_comments_blanks_crlf)
{
    struct auth_db *db = load_std();

    cr_assert_eq(auth_db_count(db), 3u);
    auth_db_get(db);
    auth_db_put(db);
    auth_db_put(db);
    auth_db_put(NULL);
}

Test(auth, load_empty_file_has_no_users)
{
    struct auth_db *db = load_ok("# nobody yet\n\n");
    struct auth_pool *p;

    cr_assert_eq(auth_db_count(db), 0u);
    p = pool_std(1, db);
    cr_assert_not(check_str(p, "alice", "secret6"));
    auth_pool_free(p);
}

Test(auth, good_and_bad_passwords)
{
    struct auth_pool *p = pool_std(2, load_std());

    atomic_store(&notified, 0);
    cr_assert(check_str(p, "alice", "secret6"));
    cr_assert_not(check_str(p, "alice", "secret7"));
    cr_assert_not(check_str(p, "alice", ""));
    cr_assert(check_str(p, "bob", "secretY"));
    cr_assert_not(check_str(p, "bob", "secret6"));
    cr_assert(check_str(p, "carol", "pw5"));
    cr_assert_not(check_str(p, "Alice", "secret6"), "user names are case-sensitive");
    /* one wake-up per verdict at least: each found the done stack empty */
    cr_assert_geq(atomic_load(&notified), 7u);
    auth_pool_free(p);
}

Test(auth, unknown_user_fails)
{
    struct auth_pool *p = pool_std(1, load_std());

    /* alice's password, and the first entry's hash is the dummy: still false */
    cr_assert_not(check_str(p, "mallory", "secret6"));
    cr_assert_not(check_str(p, "", "secret6"));
    auth_pool_free(p);
}

Test(auth, oversized_or_nul_credentials_fail)
{
    struct auth_pool *p = pool_std(1, load_std());
    static char big[AUTH_PASS_MAX + 100];

    cr_assert_not(check(p, "alice", 5, "secret6\0x", 9), "a NUL must not cut the password");
    cr_assert_not(check(p, "alice\0x", 7, "secret6", 7));
    memset(big, 'a', sizeof(big));
    cr_assert_not(check(p, big, AUTH_USER_MAX + 1, "secret6", 7));
    cr_assert_not(check(p, "alice", 5, big, sizeof(big)));
    cr_assert_not(check(p, "alice", 5, big, AUTH_PASS_MAX));
    cr_assert(check_str(p, "alice", "secret6"));
    auth_pool_free(p);
}

Test(auth, poll_with_nothing_delivers_nothing)
{
    struct auth_pool *p = pool_std(1, load_std());
    struct results res = { 0 };

    cr_assert_eq(auth_pool_poll(p, 0, on_result, &res), 0u);
    cr_assert_eq(res.n, 0u);
    auth_pool_free(p);
}

Test(auth, a_full_queue_says_eagain)
{
    /* 0 verifier threads: the documented test-only setting, nothing is consumed */
    struct auth_pool *p = pool_std(0, load_std());
    struct results res = { 0 };

    for (unsigned i = 0; i < AUTH_POOL_SLOTS; i++)
        cr_assert_eq(auth_pool_submit(p, 0, i, "alice", 5, "secret6", 7), 0, "submit %u", i);
    cr_assert_eq(auth_pool_submit(p, 0, 999, "alice", 5, "secret6", 7), -EAGAIN);
    cr_assert_eq(auth_pool_poll(p, 0, on_result, &res), 0u);
    auth_pool_free(p); /* the queued requests are dropped */
    cr_assert_eq(res.n, 0u);
}

Test(auth, every_slot_answered_once_then_reused)
{
    struct auth_pool *p;
    struct results res = { 0 };
    char seen[AUTH_POOL_SLOTS * 2] = { 0 }, buf[2048];

    snprintf(buf, sizeof(buf), "carol:%s\n", hash5);
    p = pool_std(2, load_ok(buf));
    for (unsigned round = 0; round < 2; round++) {
        for (unsigned i = 0; i < AUTH_POOL_SLOTS; i++) {
            unsigned t = round * AUTH_POOL_SLOTS + i;

            cr_assert_eq(
                auth_pool_submit(p, 0, t, "carol", 5, t % 3 ? "pw5" : "nope", t % 3 ? 3 : 4), 0,
                "submit %u", t);
        }
        wait_results(p, &res, (round + 1) * AUTH_POOL_SLOTS);
    }
    for (unsigned i = 0; i < res.n; i++) {
        uint64_t t = res.token[i];

        cr_assert_lt(t, (uint64_t)AUTH_POOL_SLOTS * 2);
        cr_assert_eq(seen[t], 0, "token %u answered twice", (unsigned)t);
        seen[t] = 1;
        cr_assert_eq(res.ok[i], t % 3 != 0, "token %u", (unsigned)t);
    }
    auth_pool_free(p);
}

static struct auth_pool *resubmit_pool;
static unsigned resubmitted;

static void
resubmit(void *arg, uint64_t token, bool ok)
{
    on_result(arg, token, ok);
    if (token == 1) {
        cr_assert_eq(auth_pool_submit(resubmit_pool, 0, 2, "alice", 5, "secret6", 7), 0);
        resubmitted++;
    }
}

Test(auth, the_callback_may_submit)
{
    struct auth_pool *p = pool_std(1, load_std());
    struct results res = { 0 };
    struct timespec ts = { 0, 1000000 };

    resubmit_pool = p;
    cr_assert_eq(auth_pool_submit(p, 0, 1, "alice", 5, "secret6", 7), 0);
    for (unsigned ms = 0; res.n < 2; ms++) {
        cr_assert_lt(ms, 10000u);
        if (auth_pool_poll(p, 0, resubmit, &res) == 0)
            nanosleep(&ts, NULL);
    }
    cr_assert_eq(resubmitted, 1u);
    cr_assert(res.ok[0] && res.ok[1]);
    cr_assert_eq(res.token[1], 2u);
    auth_pool_free(p);
}

Test(auth, set_db_swaps_the_database)
{
    char buf[2048];
    struct auth_db *db2;
    struct auth_pool *p = pool_std(2, load_std());

    cr_assert(check_str(p, "alice", "secret6"));
    snprintf(buf, sizeof(buf), "alice:%s\ndave:%s\n", hash5, hash6);
    db2 = load_ok(buf);
    auth_pool_set_db(p, db2); /* the first database is freed now or by the verifier */
    auth_db_put(db2);
    cr_assert_not(check_str(p, "alice", "secret6"));
    cr_assert(check_str(p, "alice", "pw5"));
    cr_assert(check_str(p, "dave", "secret6"));
    cr_assert_not(check_str(p, "bob", "secretY"), "bob is gone");
    auth_pool_free(p);
}

Test(auth, new_rejects_bad_counts)
{
    struct auth_db *db = load_std();

    errno = 0;
    cr_assert_null(auth_pool_new(1, 0, db));
    cr_assert_eq(errno, EINVAL);
    cr_assert_null(auth_pool_new(AUTH_POOL_MAX_THREADS + 1, 1, db));
    cr_assert_null(auth_pool_new(1, AUTH_POOL_MAX_REACTORS + 1, db));
    auth_db_put(db);
}

/* ---- load errors: each with FILE:LINE and what is wrong, never the hash ---- */

static void
load_fails(const char *content, int want_rc, unsigned line, const char *what)
{
    struct auth_db *db = (struct auth_db *)1;
    char err[512] = "", prefix[128];

    write_file(content);
    cr_assert_eq(auth_db_load(path, &db, err, sizeof(err)), want_rc, "err: %s", err);
    cr_assert_null(db);
    snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
    if (line > 0)
        cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "'%s' should start with '%s'", err,
                  prefix);
    cr_assert_not_null(strstr(err, what), "'%s' should say '%s'", err, what);
    /* the salt and checksum of every hash the tests use stay out of the message */
    cr_assert_null(strstr(err, "saltsalt"), "%s", err);
    cr_assert_null(strstr(err, hash6 + 12), "%s", err);
    cr_assert_null(strstr(err, hashy + 7), "%s", err);
}

Test(auth, error_no_colon)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), "alice:%s\n# ok\njust-a-name\n", hash6);
    load_fails(buf, -EINVAL, 3, "no ':'");
}

Test(auth, error_bad_line_shadow_format)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), "alice:%s:19000:0:99999:7:::\n", hash6);
    load_fails(buf, -EINVAL, 1, "user 'alice': more than one ':'");
}

Test(auth, error_empty_user)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), "\n\n:%s\n", hash6);
    load_fails(buf, -EINVAL, 3, "empty user name");
}

Test(auth, error_user_too_long)
{
    char buf[2048];

    memset(buf, 'u', AUTH_USER_MAX + 1);
    snprintf(buf + AUTH_USER_MAX + 1, sizeof(buf) - AUTH_USER_MAX - 1, ":%s\n", hash6);
    load_fails(buf, -EINVAL, 1, "128 octets long; expected at most 127");
}

Test(auth, error_duplicate_user)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), "alice:%s\nbob:%s\nalice:%s\n", hash6, hashy, hash5);
    load_fails(buf, -EINVAL, 3, "user 'alice': listed again (first on line 1)");
}

Test(auth, error_unknown_hash_method)
{
    /* MD5-crypt and DES: libcrypt computes them, ringmail refuses them */
    load_fails("alice:$1$saltsalt$Zk7mcP9rLF5QgE2l1gDpA/\n", -EINVAL, 1,
               "user 'alice': unknown or unsupported hash method; expected");
    unlink(path);
    load_fails("bob:abJnggxhB/yWI\n", -EINVAL, 1, "user 'bob': unknown or unsupported");
    unlink(path);
    load_fails("carol:!locked\n", -EINVAL, 1, "user 'carol': unknown or unsupported");
}

Test(auth, error_empty_hash)
{
    load_fails("alice:\n", -EINVAL, 1, "user 'alice': empty hash");
}

Test(auth, error_control_characters)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), "al\x01ice:%s\n", hash6);
    load_fails(buf, -EINVAL, 1, "user 'al\\x01ice': control character at octet 3");
    unlink(path);
    snprintf(buf, sizeof(buf), "alice:%s\t\n", hash6);
    load_fails(buf, -EINVAL, 1, "user 'alice': space or control character in the hash");
    unlink(path);
    snprintf(buf, sizeof(buf), "alice:%s x\n", hash6);
    load_fails(buf, -EINVAL, 1, "space or control character in the hash");
}

Test(auth, error_line_too_long)
{
    static char buf[AUTH_LINE_MAX + 64];

    memset(buf, '$', AUTH_LINE_MAX + 10);
    memcpy(buf, "alice:", 6);
    buf[AUTH_LINE_MAX + 10] = '\0';
    load_fails(buf, -EINVAL, 1, "line longer than 1024 octets");
}

Test(auth, error_file_too_big)
{
    char *buf = malloc(AUTH_FILE_MAX + 2);

    cr_assert_not_null(buf);
    memset(buf, '\n', AUTH_FILE_MAX + 1);
    buf[AUTH_FILE_MAX + 1] = '\0';
    load_fails(buf, -EFBIG, 0, "larger than 16 MiB");
    free(buf);
}

Test(auth, error_missing_file)
{
    struct auth_db *db;
    char err[256];

    cr_assert_eq(auth_db_load("/nonexistent/ringmail-pw", &db, err, sizeof(err)), -ENOENT);
    cr_assert_null(db);
    cr_assert_not_null(strstr(err, "/nonexistent/ringmail-pw: "), "%s", err);
}
