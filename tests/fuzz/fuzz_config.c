/*
 * fuzz_config: the configuration loader (core/config.h) on arbitrary text.
 *
 * Each input is used twice: written to a file and read with
 * config_load_file() (YAML), and, up to its first NUL, given to config_set()
 * as a "key=value" override. The file lives in a folder made once per process
 * (fuzz_mkdtemp(): $TMPDIR, else /dev/shm, else /tmp) and removed at exit.
 *
 * Invariants: the result is 0 or -1; -1 comes with a non-empty,
 * NUL-terminated, one-line message without control octets, and leaves the
 * configuration untouched; 0 gives a configuration that config_finish()
 * judges (0 or -1 with a message), that config_dump() prints, and whose dump
 * loads back to exactly the same configuration (the `ringmail -t -v` round
 * trip tests/core/test_config.c checks for hand-picked values).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "fuzz.h"

static char dir[256], path_in[300], path_dump[300];
static FILE *devnull;
/* a configuration is ~600 KiB: static, not on the stack */
static struct ringmail_config base, cfg, back;

static void
cleanup(void)
{
    unlink(path_in);
    unlink(path_dump);
    rmdir(dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_mkdtemp(dir, sizeof(dir), "config");
    snprintf(path_in, sizeof(path_in), "%s/in.yml", dir);
    snprintf(path_dump, sizeof(path_dump), "%s/dump.yml", dir);
    atexit(cleanup);
    devnull = fopen("/dev/null", "w");
    FUZZ_CHECK(devnull != NULL, "/dev/null: %s", strerror(errno));
    config_defaults(&base);
    return 0;
}

static void
write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "w");

    FUZZ_CHECK(f != NULL, "%s: %s", path, strerror(errno));
    FUZZ_CHECK(n == 0 || fwrite(p, 1, n, f) == n, "write %s", path);
    FUZZ_CHECK(fclose(f) == 0, "close %s", path);
}

/* A failure's message: set, terminated, one line of printable text. */
static void
check_err(const char *what, const char *err, size_t cap)
{
    size_t n = strnlen(err, cap);

    FUZZ_CHECK(n < cap, "%s: message not NUL-terminated", what);
    FUZZ_CHECK(n > 0, "%s: -1 without a message", what);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)err[i];

        FUZZ_CHECK(c >= 0x20 && c != 0x7f, "%s: octet %#x in message \"%s\"", what, c, err);
    }
}

/* What a loaded configuration must allow: finish, dump, and the dump's round trip. */
static void
check_loaded(const struct ringmail_config *c)
{
    char err[CONFIG_ERR_MAX];
    char *text = NULL;
    size_t len = 0;
    FILE *mem;
    int rc;

    back = *c;
    memset(err, 0x5a, sizeof(err));
    rc = config_finish(&back, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -1, "config_finish: %d", rc);
    if (rc < 0)
        check_err("config_finish", err, sizeof(err));
    FUZZ_CHECK(memcmp(&back, c, sizeof(back)) == 0, "config_finish changed the configuration");
    config_dump(c, devnull);

    mem = open_memstream(&text, &len);
    FUZZ_CHECK(mem != NULL, "open_memstream");
    config_dump(c, mem);
    FUZZ_CHECK(fclose(mem) == 0, "dump");
    write_file(path_dump, text, len);
    back = base;
    memset(err, 0x5a, sizeof(err));
    rc = config_load_file(&back, path_dump, err, sizeof(err));
    FUZZ_CHECK(rc == 0, "the dump does not load: %s\n%s", err, text);
    memcpy(back.file, c->file, sizeof(back.file));
    FUZZ_CHECK(memcmp(&back, c, sizeof(back)) == 0, "the dump loads to another configuration:\n%s",
               text);
    free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CONFIG_ERR_MAX];
    char *kv;
    int rc;

    /* the YAML file */
    write_file(path_in, data, size);
    cfg = base;
    memset(err, 0x5a, sizeof(err));
    rc = config_load_file(&cfg, path_in, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -1, "config_load_file: %d", rc);
    if (rc < 0) {
        check_err("config_load_file", err, sizeof(err));
        FUZZ_CHECK(memcmp(&cfg, &base, sizeof(cfg)) == 0, "a failed load changed the config");
    } else {
        FUZZ_CHECK(strcmp(cfg.file, path_in) == 0, "file name not recorded");
        check_loaded(&cfg);
    }

    /* the same octets as -o key=value */
    kv = malloc(size + 1);
    FUZZ_CHECK(kv != NULL, "out of memory");
    memcpy(kv, data, size);
    kv[size] = '\0';
    cfg = base;
    memset(err, 0x5a, sizeof(err));
    rc = config_set(&cfg, kv, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -1, "config_set: %d", rc);
    if (rc < 0) {
        check_err("config_set", err, sizeof(err));
        FUZZ_CHECK(memcmp(&cfg, &base, sizeof(cfg)) == 0, "a failed -o changed the config");
    } else {
        check_loaded(&cfg);
    }
    free(kv);
    return 0;
}
