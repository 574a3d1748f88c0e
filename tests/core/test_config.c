/*
 * Tests for core/config.c: defaults, every value type and its bounds, the
 * YAML loader's messages (file:line:key), -o overrides, cross-key checks and
 * the dump/load round trip. YAML files are written under a mkdtemp folder.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/config.h"

#define ERRLEN CONFIG_ERR_MAX

struct tmp {
    char dir[64];
    char path[128];
};

static void
tmp_write(struct tmp *t, const char *text, size_t len)
{
    FILE *f;

    snprintf(t->dir, sizeof(t->dir), "/tmp/ringmail-config-XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/ringmail.yml", t->dir);
    f = fopen(t->path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static void
tmp_drop(struct tmp *t)
{
    unlink(t->path);
    rmdir(t->dir);
}

/* Load text over the defaults; *path gets the file name used (for messages). */
static int
load_len(const char *text, size_t len, struct ringmail_config *cfg, char *err, struct tmp *t)
{
    int rc;

    config_defaults(cfg);
    tmp_write(t, text, len);
    err[0] = '\0';
    rc = config_load_file(cfg, t->path, err, ERRLEN);
    tmp_drop(t);
    return rc;
}

static int
load(const char *text, struct ringmail_config *cfg, char *err, struct tmp *t)
{
    return load_len(text, strlen(text), cfg, err, t);
}

/* Load text and expect the error "<path>:<line>: <rest>". */
static void
expect_load_err(const char *text, unsigned line, const char *rest)
{
    struct ringmail_config cfg;
    char err[ERRLEN], want[ERRLEN];
    struct tmp t;

    cr_assert_eq(load(text, &cfg, err, &t), -1, "loaded: %s", text);
    snprintf(want, sizeof(want), "%s:%u: %s", t.path, line, rest);
    cr_assert_str_eq(err, want, "for %s", text);
}

/* -o kv must fail with exactly want, and leave the configuration alone. */
static void
expect_set_err(const char *kv, const char *want)
{
    struct ringmail_config cfg, before;
    char err[ERRLEN];

    config_defaults(&cfg);
    before = cfg;
    cr_assert_eq(config_set(&cfg, kv, err, sizeof(err)), -1, "accepted %s", kv);
    cr_assert_str_eq(err, want, "for %s", kv);
    cr_assert(memcmp(&cfg, &before, sizeof(cfg)) == 0, "%s changed the configuration", kv);
}

static void
set_ok(struct ringmail_config *cfg, const char *kv)
{
    char err[ERRLEN] = "";

    cr_assert_eq(config_set(cfg, kv, err, sizeof(err)), 0, "%s: %s", kv, err);
}

/* ---- defaults ---- */

Test(config, defaults)
{
    struct ringmail_config cfg;
    char err[ERRLEN];

    config_defaults(&cfg);
    cr_assert_str_eq(cfg.file, "");
    cr_assert_eq(cfg.nlisten, 1);
    cr_assert_str_eq(cfg.listen[0].host, "127.0.0.1");
    cr_assert_eq(cfg.listen[0].port, 2525);
    cr_assert_not(cfg.listen[0].v6);
    cr_assert_gt(strlen(cfg.myhostname), 0);
    cr_assert_str_eq(cfg.spool_dir, "./var/spool");
    cr_assert_eq(cfg.durability, DURABILITY_FSYNC);
    cr_assert_eq(cfg.reactors, 0);
    cr_assert_eq(cfg.message_size_limit, 10240000);
    cr_assert_eq(cfg.max_line_length, 0);
    cr_assert_eq(cfg.command_line_limit, 2048);
    cr_assert_eq(cfg.smtpd_recipient_limit, 1000);
    cr_assert_eq(cfg.smtpd_hard_error_limit, 20);
    cr_assert_eq(cfg.max_connections, 10000);
    cr_assert_eq(cfg.bare_newline, BARE_NEWLINE_NORMALIZE);
    cr_assert_eq(cfg.smtpd_timeout, 300000);
    cr_assert_eq(cfg.smtpd_data_timeout, 180000);
    cr_assert_eq(cfg.smtpd_greeting_delay, 0);
    cr_assert_eq(cfg.spool_segment_size, 64ull << 20);
    cr_assert_eq(cfg.workers, 0);
    cr_assert_eq(cfg.mynetworks.n, 2);
    cr_assert_not(cfg.mynetworks.a[0].v6);
    cr_assert_eq(cfg.mynetworks.a[0].prefix, 8);
    cr_assert_eq(cfg.mynetworks.a[0].addr[0], 127);
    cr_assert(cfg.mynetworks.a[1].v6);
    cr_assert_eq(cfg.mynetworks.a[1].prefix, 128);
    cr_assert_eq(cfg.mynetworks.a[1].addr[15], 1);
    cr_assert_eq(cfg.nrelay_domains, 0);
    cr_assert_eq(cfg.relayhost.nhops, 0);
    cr_assert_eq(cfg.nroutes, 0);
    cr_assert_eq(cfg.default_route.nhops, 1);
    cr_assert_eq(cfg.default_route.hop[0].transport, TRANSPORT_MAILDIR);
    cr_assert_str_eq(cfg.default_route.hop[0].path, "./var/maildir");
    cr_assert_eq(cfg.destination_concurrency_limit, 20);
    cr_assert_eq(cfg.smtp_connection_reuse_count_limit, 100);
    cr_assert_eq(cfg.smtp_connect_timeout, 30000);
    cr_assert_eq(cfg.smtp_helo_timeout, 300000);
    cr_assert_eq(cfg.smtp_data_done_timeout, 600000);
    cr_assert_eq(cfg.smtp_connection_cache_time_limit, 2000);
    cr_assert_eq(cfg.minimal_backoff_time, 300000);
    cr_assert_eq(cfg.maximal_backoff_time, 4000000);
    cr_assert_eq(cfg.maximal_queue_lifetime, 5ull * 86400000);
    cr_assert_eq(cfg.bounce_queue_lifetime, 5ull * 86400000);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);
}

Test(config, myhostname_default_is_gethostname_or_localhost)
{
    struct ringmail_config cfg;
    char name[256] = "";

    config_defaults(&cfg);
    if (gethostname(name, sizeof(name) - 1) == 0 && strlen(name) > 0 &&
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
            strlen(name))
        cr_assert_str_eq(cfg.myhostname, name);
    else
        cr_assert_str_eq(cfg.myhostname, "localhost");
}

Test(config, empty_file_keeps_defaults_and_records_path)
{
    struct ringmail_config cfg, def;
    char err[ERRLEN];
    struct tmp t;

    cr_assert_eq(load("# nothing here\n", &cfg, err, &t), 0, "%s", err);
    cr_assert_str_eq(cfg.file, t.path);
    config_defaults(&def);
    memcpy(def.file, cfg.file, sizeof(def.file));
    cr_assert(memcmp(&cfg, &def, sizeof(cfg)) == 0);
}

Test(config, every_key_from_yaml)
{
    static const char text[] = "listen:\n"
                               "  - 0.0.0.0:25\n"
                               "  - \"[::]:25\"\n"
                               "  - localhost:587\n"
                               "myhostname: mx1.example.net\n"
                               "spool_dir: /var/spool/ringmail\n"
                               "durability: none\n"
                               "reactors: 8\n"
                               "message_size_limit: 50M\n"
                               "max_line_length: 1000\n"
                               "command_line_limit: 4k\n"
                               "smtpd_recipient_limit: 500\n"
                               "smtpd_hard_error_limit: 10\n"
                               "max_connections: 20000\n"
                               "bare_newline: reject\n"
                               "smtpd_timeout: 5m\n"
                               "smtpd_data_timeout: \"10m\"\n"
                               "smtpd_greeting_delay: 1500ms\n"
                               "spool_segment_size: 1G\n"
                               "workers: 4\n"
                               "mynetworks: [10.0.0.0/8, \"[2001:db8::]/32\"]\n"
                               "relay_domains:\n"
                               "  - example.com\n"
                               "  - .Example.ORG\n"
                               "relayhost: \"[192.0.2.25]:2525\"\n"
                               "routes:\n"
                               "  example.net: lmtp:unix:/run/lmtp\n"
                               "maildir_dir: /srv/maildir\n"
                               "destination_concurrency_limit: 5\n"
                               "smtp_connection_reuse_count_limit: 0\n"
                               "smtp_connect_timeout: 10s\n"
                               "smtp_helo_timeout: 2m\n"
                               "smtp_data_done_timeout: 20m\n"
                               "smtp_connection_cache_time_limit: 0s\n"
                               "minimal_backoff_time: 1m\n"
                               "maximal_backoff_time: 1h\n"
                               "maximal_queue_lifetime: 3d\n"
                               "bounce_queue_lifetime: 1d\n";
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    cr_assert_eq(load(text, &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, 3);
    cr_assert_str_eq(cfg.listen[0].host, "0.0.0.0");
    cr_assert_eq(cfg.listen[0].port, 25);
    cr_assert_str_eq(cfg.listen[1].host, "::");
    cr_assert(cfg.listen[1].v6);
    cr_assert_str_eq(cfg.listen[2].host, "localhost");
    cr_assert_eq(cfg.listen[2].port, 587);
    cr_assert_str_eq(cfg.myhostname, "mx1.example.net");
    cr_assert_str_eq(cfg.spool_dir, "/var/spool/ringmail");
    cr_assert_eq(cfg.durability, DURABILITY_NONE);
    cr_assert_eq(cfg.reactors, 8);
    cr_assert_eq(cfg.message_size_limit, 50ull << 20);
    cr_assert_eq(cfg.max_line_length, 1000);
    cr_assert_eq(cfg.command_line_limit, 4096);
    cr_assert_eq(cfg.smtpd_recipient_limit, 500);
    cr_assert_eq(cfg.smtpd_hard_error_limit, 10);
    cr_assert_eq(cfg.max_connections, 20000);
    cr_assert_eq(cfg.bare_newline, BARE_NEWLINE_REJECT);
    cr_assert_eq(cfg.smtpd_timeout, 300000);
    cr_assert_eq(cfg.smtpd_data_timeout, 600000);
    cr_assert_eq(cfg.smtpd_greeting_delay, 1500);
    cr_assert_eq(cfg.spool_segment_size, 1ull << 30);
    cr_assert_eq(cfg.workers, 4);
    cr_assert_eq(cfg.mynetworks.n, 2);
    cr_assert_eq(cfg.mynetworks.a[0].prefix, 8);
    cr_assert(cfg.mynetworks.a[1].v6);
    cr_assert_eq(cfg.mynetworks.a[1].prefix, 32);
    cr_assert_eq(cfg.nrelay_domains, 2);
    cr_assert_str_eq(cfg.relay_domains[0], "example.com");
    cr_assert_str_eq(cfg.relay_domains[1], ".example.org");
    cr_assert_eq(cfg.relayhost.nhops, 1);
    cr_assert_str_eq(cfg.relayhost.hop[0].host, "192.0.2.25");
    cr_assert_eq(cfg.relayhost.hop[0].port, 2525);
    cr_assert_eq(cfg.nroutes, 1);
    cr_assert_str_eq(cfg.routes[0].domain, "example.net");
    cr_assert_eq(cfg.routes[0].hops.hop[0].transport, TRANSPORT_LMTP);
    cr_assert_str_eq(cfg.routes[0].hops.hop[0].path, "/run/lmtp");
    cr_assert_str_eq(cfg.default_route.hop[0].path, "/srv/maildir");
    cr_assert_eq(cfg.destination_concurrency_limit, 5);
    cr_assert_eq(cfg.smtp_connection_reuse_count_limit, 0);
    cr_assert_eq(cfg.smtp_connect_timeout, 10000);
    cr_assert_eq(cfg.smtp_helo_timeout, 120000);
    cr_assert_eq(cfg.smtp_data_done_timeout, 1200000);
    cr_assert_eq(cfg.smtp_connection_cache_time_limit, 0);
    cr_assert_eq(cfg.minimal_backoff_time, 60000);
    cr_assert_eq(cfg.maximal_backoff_time, 3600000);
    cr_assert_eq(cfg.maximal_queue_lifetime, 3ull * 86400000);
    cr_assert_eq(cfg.bounce_queue_lifetime, 86400000);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);
}

/* ---- unsigned ---- */

Test(config, uint_parse_and_bounds)
{
    struct ringmail_config cfg;

    config_defaults(&cfg);
    set_ok(&cfg, "reactors=256");
    cr_assert_eq(cfg.reactors, 256);
    set_ok(&cfg, "reactors=0");
    cr_assert_eq(cfg.reactors, 0);
    set_ok(&cfg, "max_connections=1000000");
    cr_assert_eq(cfg.max_connections, 1000000);
    set_ok(&cfg, "smtpd_recipient_limit=1");
    cr_assert_eq(cfg.smtpd_recipient_limit, 1);

    expect_set_err("reactors=257", "-o reactors: 257 is out of range; expected 0..256");
    expect_set_err("max_connections=0",
                   "-o max_connections: 0 is out of range; expected 1..1000000");
    expect_set_err("smtpd_hard_error_limit=0",
                   "-o smtpd_hard_error_limit: 0 is out of range; expected 1..1000000");
    expect_set_err("reactors=-1", "-o reactors: \"-1\" is not a number; expected a whole number");
    expect_set_err("reactors=4x",
                   "-o reactors: \"4x\" is not a whole number; expected digits only");
    expect_set_err("reactors= 4", "-o reactors: \" 4\" is not a number; expected a whole number");
    expect_set_err("reactors=", "-o reactors: \"\" is not a number; expected a whole number");
    expect_set_err("reactors=99999999999999999999999",
                   "-o reactors: \"99999999999999999999999\" is too large; expected a whole "
                   "number");
    expect_set_err("reactors=4294967297",
                   "-o reactors: 4294967297 is out of range; expected 0..256");
}

Test(config, delivery_uints)
{
    struct ringmail_config cfg;

    config_defaults(&cfg);
    set_ok(&cfg, "workers=256");
    cr_assert_eq(cfg.workers, 256);
    set_ok(&cfg, "destination_concurrency_limit=1");
    cr_assert_eq(cfg.destination_concurrency_limit, 1);
    set_ok(&cfg, "destination_concurrency_limit=1000");
    cr_assert_eq(cfg.destination_concurrency_limit, 1000);
    set_ok(&cfg, "smtp_connection_reuse_count_limit=0");
    cr_assert_eq(cfg.smtp_connection_reuse_count_limit, 0);
    set_ok(&cfg, "smtp_connection_reuse_count_limit=1");
    cr_assert_eq(cfg.smtp_connection_reuse_count_limit, 1);

    expect_set_err("workers=257", "-o workers: 257 is out of range; expected 0..256");
    expect_set_err("destination_concurrency_limit=0",
                   "-o destination_concurrency_limit: 0 is out of range; expected 1..1000");
    expect_set_err("destination_concurrency_limit=1001",
                   "-o destination_concurrency_limit: 1001 is out of range; expected 1..1000");
    expect_set_err("smtp_connection_reuse_count_limit=1000001",
                   "-o smtp_connection_reuse_count_limit: 1000001 is out of range; expected 0 "
                   "(no limit) or 1..1000000");
    expect_load_err("workers: -1\n", 1,
                    "key 'workers': \"-1\" is not a number; expected a whole number");
}

/* ---- sizes ---- */

Test(config, size_suffixes)
{
    static const struct {
        const char *kv;
        uint64_t want;
    } cases[] = {
        { "message_size_limit=123456", 123456 },
        { "message_size_limit=0", 0 },
        { "message_size_limit=10k", 10240 },
        { "message_size_limit=10K", 10240 },
        { "message_size_limit=3m", 3ull << 20 },
        { "message_size_limit=3M", 3ull << 20 },
        { "message_size_limit=2g", 2ull << 30 },
        { "message_size_limit=2G", 2ull << 30 },
        { "message_size_limit=17179869183G", 17179869183ull << 30 },
    };
    struct ringmail_config cfg;

    config_defaults(&cfg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        set_ok(&cfg, cases[i].kv);
        cr_assert_eq(cfg.message_size_limit, cases[i].want, "%s", cases[i].kv);
    }
}

Test(config, size_errors_and_bounds)
{
    struct ringmail_config cfg;

    expect_set_err("message_size_limit=10X",
                   "-o message_size_limit: \"10X\" is not a size; expected octets with an "
                   "optional k, M or G suffix (1024 multiples), e.g. 64M");
    expect_set_err("message_size_limit=10MB",
                   "-o message_size_limit: \"10MB\" is not a size; expected octets with an "
                   "optional k, M or G suffix (1024 multiples), e.g. 64M");
    expect_set_err("message_size_limit=M",
                   "-o message_size_limit: \"M\" is not a number; expected a size in octets, "
                   "e.g. 10240000 or 64M");
    expect_set_err("message_size_limit=17179869184G",
                   "-o message_size_limit: \"17179869184G\" is too large; expected a size in "
                   "octets, e.g. 10240000 or 64M");
    expect_set_err("spool_segment_size=512k",
                   "-o spool_segment_size: 512k is out of range; expected 1M..4G");
    expect_set_err("spool_segment_size=4097M",
                   "-o spool_segment_size: 4097M is out of range; expected 1M..4G");
    expect_set_err("command_line_limit=511",
                   "-o command_line_limit: 511 is out of range; expected 512..65536");
    expect_set_err("command_line_limit=65537",
                   "-o command_line_limit: 65537 is out of range; expected 512..65536");
    expect_set_err("max_line_length=79",
                   "-o max_line_length: 79 is out of range; expected 0 (no limit) or at least 80");

    config_defaults(&cfg);
    set_ok(&cfg, "spool_segment_size=1M");
    cr_assert_eq(cfg.spool_segment_size, 1ull << 20);
    set_ok(&cfg, "spool_segment_size=4G");
    cr_assert_eq(cfg.spool_segment_size, 4ull << 30);
    set_ok(&cfg, "command_line_limit=512");
    cr_assert_eq(cfg.command_line_limit, 512);
    set_ok(&cfg, "command_line_limit=64k");
    cr_assert_eq(cfg.command_line_limit, 65536);
    set_ok(&cfg, "max_line_length=80");
    cr_assert_eq(cfg.max_line_length, 80);
    set_ok(&cfg, "max_line_length=0");
    cr_assert_eq(cfg.max_line_length, 0);
}

/* ---- durations ---- */

Test(config, duration_units)
{
    static const struct {
        const char *kv;
        uint64_t want_ms;
    } cases[] = {
        { "smtpd_timeout=1500ms", 1500 },  { "smtpd_timeout=1000ms", 1000 },
        { "smtpd_timeout=30s", 30000 },    { "smtpd_timeout=5m", 300000 },
        { "smtpd_timeout=2h", 7200000 },   { "smtpd_timeout=1d", 86400000 },
        { "smtpd_timeout=24h", 86400000 }, { "smtpd_timeout=0001s", 1000 },
    };
    struct ringmail_config cfg;

    config_defaults(&cfg);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        set_ok(&cfg, cases[i].kv);
        cr_assert_eq(cfg.smtpd_timeout, cases[i].want_ms, "%s", cases[i].kv);
    }
    set_ok(&cfg, "smtpd_greeting_delay=0s");
    cr_assert_eq(cfg.smtpd_greeting_delay, 0);
    set_ok(&cfg, "smtpd_greeting_delay=1m");
    cr_assert_eq(cfg.smtpd_greeting_delay, 60000);
}

Test(config, duration_needs_a_unit)
{
    expect_set_err("smtpd_timeout=300", "-o smtpd_timeout: \"300\" has no unit; expected a "
                                        "duration with a unit (ms, s, m, h, d), e.g. \"300s\"");
    expect_set_err("smtpd_greeting_delay=0",
                   "-o smtpd_greeting_delay: \"0\" has no unit; expected a duration with a unit "
                   "(ms, s, m, h, d), e.g. \"0s\"");
    expect_load_err("smtpd_data_timeout: 180\n", 1,
                    "key 'smtpd_data_timeout': \"180\" has no unit; expected a duration with a "
                    "unit (ms, s, m, h, d), e.g. \"180s\"");
}

Test(config, duration_errors_and_bounds)
{
    expect_set_err("smtpd_timeout=5x", "-o smtpd_timeout: \"5x\" has an unknown unit; expected "
                                       "a whole number followed by ms, s, m, h or d, e.g. 300s");
    expect_set_err("smtpd_timeout=1.5s",
                   "-o smtpd_timeout: \"1.5s\" has an unknown unit; expected a whole number "
                   "followed by ms, s, m, h or d, e.g. 300s");
    expect_set_err("smtpd_timeout=5S", "-o smtpd_timeout: \"5S\" has an unknown unit; expected "
                                       "a whole number followed by ms, s, m, h or d, e.g. 300s");
    expect_set_err("smtpd_timeout=s", "-o smtpd_timeout: \"s\" is not a number; expected a "
                                      "duration with a unit (ms, s, m, h, d), e.g. 300s");
    expect_set_err("smtpd_timeout=0s", "-o smtpd_timeout: 0s is out of range; expected 1s..1d");
    expect_set_err("smtpd_timeout=999ms",
                   "-o smtpd_timeout: 999ms is out of range; expected 1s..1d");
    expect_set_err("smtpd_timeout=2d", "-o smtpd_timeout: 2d is out of range; expected 1s..1d");
    expect_set_err("smtpd_data_timeout=0ms",
                   "-o smtpd_data_timeout: 0ms is out of range; expected 1s..1d");
    expect_set_err("smtpd_greeting_delay=61s",
                   "-o smtpd_greeting_delay: 61s is out of range; expected 0s..1m");
    expect_set_err("smtp_connection_cache_time_limit=61m",
                   "-o smtp_connection_cache_time_limit: 61m is out of range; expected 0s..1h");
    expect_set_err("smtp_connect_timeout=0s",
                   "-o smtp_connect_timeout: 0s is out of range; expected 1s..1d");
    expect_set_err("smtp_helo_timeout=25h",
                   "-o smtp_helo_timeout: 25h is out of range; expected 1s..1d");
    expect_set_err("smtp_data_done_timeout=600",
                   "-o smtp_data_done_timeout: \"600\" has no unit; expected a duration with a "
                   "unit (ms, s, m, h, d), e.g. \"600s\"");
    expect_set_err("minimal_backoff_time=999ms",
                   "-o minimal_backoff_time: 999ms is out of range; expected 1s..1d");
    expect_set_err("maximal_backoff_time=0s",
                   "-o maximal_backoff_time: 0s is out of range; expected 1s..1d");
    expect_set_err("maximal_queue_lifetime=101d",
                   "-o maximal_queue_lifetime: 101d is out of range; expected 1s..100d");
    expect_set_err("bounce_queue_lifetime=0s",
                   "-o bounce_queue_lifetime: 0s is out of range; expected 1s..100d");
    expect_set_err("smtpd_timeout=300000000000000d",
                   "-o smtpd_timeout: \"300000000000000d\" is too large; expected a duration "
                   "with a unit (ms, s, m, h, d), e.g. 300s");
}

/* ---- enums and strings ---- */

Test(config, enums)
{
    struct ringmail_config cfg;

    config_defaults(&cfg);
    set_ok(&cfg, "durability=none");
    cr_assert_eq(cfg.durability, DURABILITY_NONE);
    set_ok(&cfg, "durability=fsync");
    cr_assert_eq(cfg.durability, DURABILITY_FSYNC);
    set_ok(&cfg, "bare_newline=reject");
    cr_assert_eq(cfg.bare_newline, BARE_NEWLINE_REJECT);
    expect_set_err("durability=FSYNC", "-o durability: \"FSYNC\" is not a valid value; expected "
                                       "one of: fsync, none");
    expect_set_err("bare_newline=", "-o bare_newline: \"\" is not a valid value; expected one "
                                    "of: normalize, reject");
}

Test(config, strings_and_hostnames)
{
    struct ringmail_config cfg;
    char kv[1200], want[256], label[64];

    config_defaults(&cfg);
    set_ok(&cfg, "spool_dir=/srv/spool dir/ringmail");
    cr_assert_str_eq(cfg.spool_dir, "/srv/spool dir/ringmail");
    set_ok(&cfg, "myhostname=MX-1.example.org");
    cr_assert_str_eq(cfg.myhostname, "MX-1.example.org");

    /* the longest path that fits, then one octet more */
    memset(kv, 'a', sizeof(kv));
    memcpy(kv, "spool_dir=", 10);
    kv[10 + CONFIG_PATH_MAX - 1] = '\0';
    set_ok(&cfg, kv);
    cr_assert_eq(strlen(cfg.spool_dir), CONFIG_PATH_MAX - 1);
    kv[10 + CONFIG_PATH_MAX - 1] = 'a';
    kv[10 + CONFIG_PATH_MAX] = '\0';
    expect_set_err(kv, "-o spool_dir: value is 1024 octets long; expected at most 1023");

    expect_set_err("spool_dir=", "-o spool_dir: empty value; expected a string");
    expect_set_err("spool_dir=a\tb", "-o spool_dir: value contains a control character (\\x09 "
                                     "at offset 1); expected printable text");
    expect_set_err("spool_dir=\xff", "-o spool_dir: value is not valid UTF-8; expected UTF-8 text");
    expect_set_err("myhostname=mx_1.example", "-o myhostname: \"mx_1.example\" is not a plausible "
                                              "hostname; expected letters, digits, '-' and '.', "
                                              "labels of 1..63 characters");
    expect_set_err("myhostname=-mx.example", "-o myhostname: \"-mx.example\" is not a plausible "
                                             "hostname; expected letters, digits, '-' and '.', "
                                             "labels of 1..63 characters");
    expect_set_err("myhostname=mx..example", "-o myhostname: \"mx..example\" is not a plausible "
                                             "hostname; expected letters, digits, '-' and '.', "
                                             "labels of 1..63 characters");

    /* a 64-character label is too long; 63 is fine */
    memset(label, 'a', 63);
    label[63] = '\0';
    snprintf(kv, sizeof(kv), "myhostname=%s.example", label);
    set_ok(&cfg, kv);
    snprintf(kv, sizeof(kv), "myhostname=a%s.example", label);
    expect_set_err(
        kv, "-o myhostname: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            "...\" is not a plausible hostname; expected letters, digits, '-' and "
            "'.', labels of 1..63 characters");

    /* 255 characters is the most a hostname may have */
    snprintf(kv, sizeof(kv), "myhostname=%s.%s.%s.%.63s", label, label, label, label);
    cr_assert_eq(strlen(kv), 11 + 255);
    set_ok(&cfg, kv);
    cr_assert_eq(strlen(cfg.myhostname), 255);
    snprintf(kv, sizeof(kv), "myhostname=%s.%s.%s.a%s", label, label, label, label);
    snprintf(want, sizeof(want), "-o myhostname: value is 256 octets long; expected at most 255");
    expect_set_err(kv, want);
}

Test(config, yaml_nul_in_value)
{
    static const char text[] = "spool_dir: \"a\\0b\"\n";

    expect_load_err(text, 1, "key 'spool_dir': value contains a NUL octet; expected a string");
}

/* ---- listen ---- */

Test(config, listen_forms)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    config_defaults(&cfg);
    set_ok(&cfg, "listen=127.0.0.1:2525,[::1]:2525,localhost:25,[2001:db8::1]:65535");
    cr_assert_eq(cfg.nlisten, 4);
    cr_assert_str_eq(cfg.listen[0].host, "127.0.0.1");
    cr_assert_eq(cfg.listen[0].port, 2525);
    cr_assert_not(cfg.listen[0].v6);
    cr_assert_str_eq(cfg.listen[1].host, "::1");
    cr_assert(cfg.listen[1].v6);
    cr_assert_str_eq(cfg.listen[2].host, "localhost");
    cr_assert_eq(cfg.listen[2].port, 25);
    cr_assert_str_eq(cfg.listen[3].host, "2001:db8::1");
    cr_assert_eq(cfg.listen[3].port, 65535);

    /* a plain YAML scalar is a one-entry list */
    cr_assert_eq(load("listen: 192.0.2.1:1\n", &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, 1);
    cr_assert_str_eq(cfg.listen[0].host, "192.0.2.1");
    cr_assert_eq(cfg.listen[0].port, 1);

    /* a flow sequence */
    cr_assert_eq(load("listen: [\"[::]:25\", 0.0.0.0:25]\n", &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, 2);
    cr_assert_str_eq(cfg.listen[0].host, "::");
    cr_assert_str_eq(cfg.listen[1].host, "0.0.0.0");

    /* a list replaces the default, it does not add to it */
    cr_assert_eq(load("listen:\n  - 10.0.0.1:25\n", &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, 1);
    cr_assert_str_eq(cfg.listen[0].host, "10.0.0.1");
    cr_assert_eq(cfg.listen[1].port, 0);
}

Test(config, listen_bad_port)
{
    expect_set_err("listen=127.0.0.1:0", "-o listen: \"127.0.0.1:0\": port \"0\" is not valid; "
                                         "expected a number in 1..65535");
    expect_set_err("listen=127.0.0.1:65536", "-o listen: \"127.0.0.1:65536\": port \"65536\" is "
                                             "not valid; expected a number in 1..65535");
    expect_set_err("listen=127.0.0.1:smtp", "-o listen: \"127.0.0.1:smtp\": port \"smtp\" is not "
                                            "valid; expected a number in 1..65535");
    expect_set_err("listen=127.0.0.1:", "-o listen: \"127.0.0.1:\": port \"\" is not valid; "
                                        "expected a number in 1..65535");
    expect_set_err("listen=127.0.0.1", "-o listen: \"127.0.0.1\" has no port; expected "
                                       "host:port, e.g. 127.0.0.1:25");
    expect_set_err("listen=[::1]", "-o listen: \"[::1]\" has no port; expected [IPv6]:port, "
                                   "e.g. [::1]:25");
    expect_set_err("listen=[::1]25", "-o listen: \"[::1]25\" has no port; expected [IPv6]:port, "
                                     "e.g. [::1]:25");
}

Test(config, listen_bad_address)
{
    expect_set_err("listen=300.1.1.1:25",
                   "-o listen: \"300.1.1.1:25\": \"300.1.1.1\" is not a valid IPv4 address");
    expect_set_err("listen=1.2.3:25",
                   "-o listen: \"1.2.3:25\": \"1.2.3\" is not a valid IPv4 address");
    expect_set_err("listen=[::g]:25",
                   "-o listen: \"[::g]:25\": \"::g\" is not a valid IPv6 address");
    expect_set_err("listen=[127.0.0.1]:25",
                   "-o listen: \"[127.0.0.1]:25\": \"127.0.0.1\" is not a valid IPv6 address");
    expect_set_err("listen=[::1:25", "-o listen: \"[::1:25\" has no closing ']'; expected "
                                     "[IPv6]:port, e.g. [::1]:25");
    expect_set_err("listen=::1:25", "-o listen: \"::1:25\": an IPv6 address must be written in "
                                    "brackets, e.g. [::1]:25");
    expect_set_err("listen=:25",
                   "-o listen: \":25\" has no host; expected host:port, e.g. 127.0.0.1:25");
    expect_set_err("listen=bad_host:25", "-o listen: \"bad_host:25\": the host is neither an IP "
                                         "address nor a hostname; expected a.b.c.d, [IPv6] or a "
                                         "hostname");
    expect_set_err("listen=127.0.0.1:25,,[::1]:25",
                   "-o listen: empty address; expected host:port, e.g. 127.0.0.1:25 or [::1]:25");
    expect_set_err("listen=127.0.0.1:25,127.0.0.1:25",
                   "-o listen: \"127.0.0.1:25\" is listed twice; expected each address once");
    expect_set_err("listen=LOCALHOST:25,localhost:25",
                   "-o listen: \"localhost:25\" is listed twice; expected each address once");
    /* the bad address is escaped like the rest of the message (found by fuzz_config) */
    expect_set_err("listen=[::\x01]:25",
                   "-o listen: \"[::\\x01]:25\": \"::\\x01\" is not a valid IPv6 address");
    expect_set_err("relayhost=[::\x1b]:25",
                   "-o relayhost: \"[::\\x1b]:25\": \"::\\x1b\" is not a valid IPv6 address");
}

Test(config, listen_too_many)
{
    struct ringmail_config cfg;
    char kv[1024], err[ERRLEN];
    size_t o = (size_t)snprintf(kv, sizeof(kv), "listen=");
    char yaml[1024], want[ERRLEN];
    size_t y = (size_t)snprintf(yaml, sizeof(yaml), "listen:\n");
    struct tmp t;

    for (int i = 1; i <= CONFIG_MAX_LISTEN; i++) {
        o += (size_t)snprintf(kv + o, sizeof(kv) - o, "%s127.0.0.%d:25", i > 1 ? "," : "", i);
        y += (size_t)snprintf(yaml + y, sizeof(yaml) - y, "  - 127.0.0.%d:25\n", i);
    }
    config_defaults(&cfg);
    set_ok(&cfg, kv);
    cr_assert_eq(cfg.nlisten, CONFIG_MAX_LISTEN);
    cr_assert_eq(load(yaml, &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, CONFIG_MAX_LISTEN);

    snprintf(kv + o, sizeof(kv) - o, ",127.0.0.99:25");
    snprintf(want, sizeof(want), "-o listen: too many addresses; expected at most %d",
             CONFIG_MAX_LISTEN);
    expect_set_err(kv, want);

    /* in YAML the error points at the 17th entry's line */
    snprintf(yaml + y, sizeof(yaml) - y, "  - 127.0.0.99:25\n");
    snprintf(want, sizeof(want), "key 'listen': too many addresses; expected at most %d",
             CONFIG_MAX_LISTEN);
    expect_load_err(yaml, CONFIG_MAX_LISTEN + 2, want);
}

Test(config, listen_yaml_entry_errors_name_the_entry_line)
{
    expect_load_err("reactors: 1\nlisten:\n  - 127.0.0.1:25\n  - 127.0.0.1:99999\n", 4,
                    "key 'listen': \"127.0.0.1:99999\": port \"99999\" is not valid; expected a "
                    "number in 1..65535");
    expect_load_err("listen:\n  - 127.0.0.1:25\n  - { host: x }\n", 3,
                    "key 'listen': an entry has an unknown or repeated field; expected address "
                    "and optionally proxy_protocol");
    expect_load_err("listen:\n  - [127.0.0.1:25]\n", 2,
                    "key 'listen': an entry is a sequence; expected host:port or {address: "
                    "host:port, proxy_protocol: true|false}");
    expect_load_err("listen:\n  -\n", 2,
                    "key 'listen': an entry is empty; expected host:port or {address: host:port, "
                    "proxy_protocol: true|false}");
    expect_load_err("listen:\n  - { address: 127.0.0.1:25, proxy_protocol: maybe }\n", 2,
                    "key 'listen': \"maybe\" is not a valid value; expected true or false (or "
                    "yes/no, on/off)");
    expect_load_err("listen:\n  - { proxy_protocol: true }\n", 2,
                    "key 'listen': an entry has no address; expected address: host:port");
    expect_load_err("listen:\n  host: 127.0.0.1\n", 1,
                    "key 'listen': the value is a mapping; expected a list of host:port");
}

Test(config, listen_kinds_and_proxy_overrides)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    cr_assert_eq(load("listen:\n  - 127.0.0.1:25\n  - { address: \"[::1]:25\", proxy_protocol: "
                      "true }\nsubmission_listen: 127.0.0.1:587\nsmtps_listen: [127.0.0.1:465]\n"
                      "proxy_protocol: off\nproxy_trusted_networks: 10.0.0.0/8\n"
                      "smtpd_sasl_password_file: /etc/ringmail/passwd\n"
                      "tls_cert_file: /c.pem\ntls_key_file: /k.pem\n",
                      &cfg, err, &t),
                 0, "%s", err);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, 4);
    cr_assert_eq(cfg.listen[0].kind, LISTEN_SMTP);
    cr_assert_eq(cfg.listen[0].proxy, -1);
    cr_assert_not(config_listen_proxy(&cfg, &cfg.listen[0]));
    cr_assert(config_listen_proxy(&cfg, &cfg.listen[1]));
    cr_assert_eq(cfg.listen[2].kind, LISTEN_SUBMISSION);
    cr_assert_eq(cfg.listen[3].kind, LISTEN_SMTPS);
    cr_assert_eq(cfg.listen[3].port, 465);

    /* -o replaces one kind only */
    set_ok(&cfg, "submission_listen=");
    cr_assert_eq(cfg.nlisten, 3);
    cr_assert_eq(cfg.listen[2].kind, LISTEN_SMTPS);
}

Test(config, listen_cross_key_checks)
{
    struct ringmail_config cfg;
    char err[ERRLEN];

    config_defaults(&cfg);
    set_ok(&cfg, "submission_listen=127.0.0.1:2525");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'submission_listen': 127.0.0.1:2525 is also in 'listen'; expected "
                          "each address in one listen key");

    config_defaults(&cfg);
    set_ok(&cfg, "smtps_listen=127.0.0.1:465");
    set_ok(&cfg, "smtpd_sasl_password_file=/p");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'smtps_listen': implicit TLS needs a certificate; expected "
                          "tls_cert_file and tls_key_file to be set");

    config_defaults(&cfg);
    set_ok(&cfg, "submission_listen=127.0.0.1:587");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'submission_listen': submission requires AUTH; expected "
                          "smtpd_sasl_password_file to be set");

    config_defaults(&cfg);
    set_ok(&cfg, "proxy_protocol=yes");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'proxy_trusted_networks': empty while 127.0.0.1:2525 takes the "
                          "PROXY protocol; expected the load balancers' networks");
    set_ok(&cfg, "proxy_trusted_networks=127.0.0.1");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);

    config_defaults(&cfg);
    set_ok(&cfg, "tls_cert_file=/c.pem");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'tls_cert_file': set without tls_key_file; expected both or "
                          "neither");

    config_defaults(&cfg);
    set_ok(&cfg, "smtpd_tls_security_level=encrypt");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'smtpd_tls_security_level': encrypt needs a certificate; "
                          "expected tls_cert_file and tls_key_file to be set");
}

Test(config, admin_keys)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    config_defaults(&cfg);
    cr_assert_str_eq(cfg.admin_listen.host, "127.0.0.1");
    cr_assert_eq(cfg.admin_listen.port, 9025);
    cr_assert_str_eq(cfg.admin_token_file, "");
    set_ok(&cfg, "admin_listen=[::1]:9100");
    cr_assert_str_eq(cfg.admin_listen.host, "::1");
    cr_assert(cfg.admin_listen.v6);
    cr_assert_eq(cfg.admin_listen.port, 9100);
    /* empty: off, every byte zero (configurations compare with memcmp) */
    set_ok(&cfg, "admin_listen=");
    cr_assert_eq(cfg.admin_listen.port, 0);
    cr_assert_str_eq(cfg.admin_listen.host, "");
    cr_assert_not(cfg.admin_listen.v6);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);
    set_ok(&cfg, "admin_token_file=/etc/ringmail/admin.token");
    set_ok(&cfg, "admin_token_file=");

    expect_set_err("admin_listen=127.0.0.1",
                   "-o admin_listen: \"127.0.0.1\" has no port; expected host:port, e.g. "
                   "127.0.0.1:25");
    expect_set_err("admin_listen=127.0.0.1:0",
                   "-o admin_listen: \"127.0.0.1:0\": port \"0\" is not valid; expected a "
                   "number in 1..65535");
    expect_set_err("admin_listen=127.0.0.1:1,127.0.0.1:2",
                   "-o admin_listen: a list; expected one host:port");
    expect_load_err("reactors: 1\nadmin_listen: \"::1:9025\"\n", 2,
                    "key 'admin_listen': \"::1:9025\": an IPv6 address must be written in "
                    "brackets, e.g. [::1]:25");
    expect_load_err("admin_listen:\n", 1,
                    "key 'admin_listen': no value; expected host:port, or \"\" for none");
    cr_assert_eq(load("admin_listen: \"\"\nadmin_token_file: /run/t\n", &cfg, err, &t), 0, "%s",
                 err);
    cr_assert_eq(cfg.admin_listen.port, 0);
    cr_assert_str_eq(cfg.admin_token_file, "/run/t");

    /* not on an SMTP listener's address */
    config_defaults(&cfg);
    set_ok(&cfg, "admin_listen=127.0.0.1:2525");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'admin_listen': 127.0.0.1:2525 is also in 'listen'; expected an "
                          "address of its own");
}

Test(config, bools_and_security_defaults)
{
    struct ringmail_config cfg;
    char err[ERRLEN];

    config_defaults(&cfg);
    cr_assert_not(cfg.proxy_protocol);
    cr_assert(cfg.smtpd_tls_auth_only);
    cr_assert_eq(cfg.smtp_tls_security_level, SMTP_TLS_MAY);
    cr_assert_eq(cfg.smtpd_client_connection_count_limit, 50);
    cr_assert_eq(cfg.smtpd_client_ipv6_prefix_length, 64);
    cr_assert(cfg.smtpd_client_limit_exempt_mynetworks);
    cr_assert_str_eq(cfg.user, "nobody");
    cr_assert_str_eq(cfg.tls_cert_file, "");
    set_ok(&cfg, "smtpd_tls_auth_only=No");
    cr_assert_not(cfg.smtpd_tls_auth_only);
    set_ok(&cfg, "proxy_protocol=TRUE");
    cr_assert(cfg.proxy_protocol);
    cr_assert_eq(config_set(&cfg, "proxy_protocol=1", err, sizeof(err)), -1);
    cr_assert_str_eq(err, "-o proxy_protocol: \"1\" is not a valid value; expected true or false "
                          "(or yes/no, on/off)");
    cr_assert_eq(config_set(&cfg, "user=", err, sizeof(err)), -1);
    set_ok(&cfg, "smtp_tls_security_level=verify");
    cr_assert_eq(cfg.smtp_tls_security_level, SMTP_TLS_VERIFY);
}

Test(config, listen_empty_is_caught_by_finish)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    cr_assert_eq(load("listen: []\n", &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.nlisten, 0);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'listen': no address; expected at least one host:port");

    config_defaults(&cfg);
    set_ok(&cfg, "listen=");
    cr_assert_eq(cfg.nlisten, 0);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
}

/* ---- YAML structure errors ---- */

Test(config, unknown_key_names_file_line_key)
{
    expect_load_err("reactors: 2\n"
                    "# a comment\n"
                    "\n"
                    "smtpd_timout: 30s\n",
                    4, "key 'smtpd_timout': unknown key (did you mean 'smtpd_timeout'?)");
    expect_load_err("reactors: 2\nrelay_host: \"[mx.example]:25\"\n", 2,
                    "key 'relay_host': unknown key (did you mean 'relayhost'?)");
    expect_load_err("reactors: 2\nsmarthost: \"[mx.example]:25\"\n", 2,
                    "key 'smarthost': unknown key");
}

Test(config, yaml_syntax_error_has_a_line)
{
    expect_load_err("reactors: 2\n  durability: none\n", 2,
                    "YAML syntax error: mapping values are not allowed in this context");
    expect_load_err("reactors: 2\nlisten: [127.0.0.1:25\nspool_dir: /x\n", 3,
                    "YAML syntax error: did not find expected ',' or ']' while parsing a flow "
                    "sequence started on line 2");
    expect_load_err("reactors: 2\nspool_dir: \"/x\n", 3,
                    "YAML syntax error: found unexpected end of stream while scanning a quoted "
                    "scalar started on line 2");
}

Test(config, wrong_type_mapping_for_scalar)
{
    expect_load_err("reactors: 2\nmyhostname:\n  name: mx.example\n", 2,
                    "key 'myhostname': the value is a mapping; expected a hostname");
    expect_load_err("smtpd_timeout:\n  - 5m\n", 1,
                    "key 'smtpd_timeout': the value is a sequence; expected a duration with a "
                    "unit (ms, s, m, h, d), e.g. 300s");
    expect_load_err("reactors:\n", 1, "key 'reactors': no value; expected a whole number");
    expect_load_err("durability: ~\n", 1,
                    "key 'durability': no value; expected one of the listed names");
}

Test(config, duplicate_key)
{
    expect_load_err("reactors: 2\nspool_dir: /a\nreactors: 4\n", 3,
                    "key 'reactors': duplicate key (first set on line 1); expected each key once");
}

Test(config, top_level_and_documents)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    expect_load_err("- reactors: 2\n", 1,
                    "the top level is a sequence; expected a mapping of keys");
    expect_load_err("just text\n", 1, "the top level is a scalar; expected a mapping of keys");
    expect_load_err("reactors: 2\n---\nreactors: 3\n", 3,
                    "a second YAML document; expected one document");
    expect_load_err("? [a, b]\n: c\n", 1, "a key is a sequence; expected a key name");
    cr_assert_eq(load("---\nreactors: 3\n...\n", &cfg, err, &t), 0, "%s", err);
    cr_assert_eq(cfg.reactors, 3);
}

Test(config, value_error_in_file_names_value_line)
{
    expect_load_err("spool_dir: /x\nreactors: 300\n", 2,
                    "key 'reactors': 300 is out of range; expected 0..256");
    expect_load_err("durability: sometimes\n", 1,
                    "key 'durability': \"sometimes\" is not a valid value; expected one of: "
                    "fsync, none");
}

Test(config, failed_load_leaves_config_alone)
{
    struct ringmail_config cfg, before;
    char err[ERRLEN];
    struct tmp t;

    config_defaults(&before);
    cr_assert_eq(load("reactors: 7\nlisten: [10.0.0.1:25]\nbogus: 1\n", &cfg, err, &t), -1);
    cr_assert(memcmp(&cfg, &before, sizeof(cfg)) == 0);
}

Test(config, cannot_open)
{
    struct ringmail_config cfg;
    char err[ERRLEN], dir[64] = "/tmp/ringmail-config-XXXXXX";

    config_defaults(&cfg);
    cr_assert_eq(config_load_file(&cfg, "/nonexistent/ringmail.yml", err, sizeof(err)), -1);
    cr_assert_str_eq(err, "/nonexistent/ringmail.yml: cannot open: No such file or directory");
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(config_load_file(&cfg, dir, err, sizeof(err)), -1);
    cr_assert(strstr(err, ": cannot open: Is a directory") != NULL, "%s", err);
    rmdir(dir);
}

/* ---- -o ---- */

Test(config, set_overrides_file)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    cr_assert_eq(load("reactors: 2\nsmtpd_timeout: 60s\n", &cfg, err, &t), 0, "%s", err);
    set_ok(&cfg, "reactors=4");
    set_ok(&cfg, "listen=[::1]:2526");
    cr_assert_eq(cfg.reactors, 4);
    cr_assert_eq(cfg.smtpd_timeout, 60000);
    cr_assert_eq(cfg.nlisten, 1);
    cr_assert(cfg.listen[0].v6);
    cr_assert_str_eq(cfg.file, t.path);
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);
}

Test(config, set_errors)
{
    expect_set_err("smtp_timeout=5m",
                   "-o smtp_timeout: unknown key (did you mean 'smtpd_timeout'?)");
    expect_set_err("nonsense=1", "-o nonsense: unknown key");
    expect_set_err("reactors", "-o reactors: expected key=value");
    expect_set_err("=4", "-o =4: expected key=value");
    expect_set_err("reac\x01tors=1", "-o reac\\x01tors: unknown key (did you mean 'reactors'?)");
}

/* ---- cross-key checks ---- */

Test(config, finish_cross_key)
{
    struct ringmail_config cfg;
    char err[ERRLEN];

    config_defaults(&cfg);
    set_ok(&cfg, "message_size_limit=1M");
    set_ok(&cfg, "max_line_length=2M");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'max_line_length': 2M is larger than message_size_limit (1M); "
                          "expected at most message_size_limit");
    set_ok(&cfg, "message_size_limit=0"); /* no size limit: any line limit fits */
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);

    config_defaults(&cfg);
    set_ok(&cfg, "smtpd_timeout=30s");
    set_ok(&cfg, "smtpd_greeting_delay=30s");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'smtpd_greeting_delay': 30s is not shorter than smtpd_timeout "
                          "(30s); expected less than smtpd_timeout");

    config_defaults(&cfg);
    set_ok(&cfg, "minimal_backoff_time=4001s");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'minimal_backoff_time': 4001s is longer than maximal_backoff_time "
                          "(4000s); expected at most maximal_backoff_time");
    set_ok(&cfg, "maximal_backoff_time=4001s"); /* equal is fine: a constant retry delay */
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);

    config_defaults(&cfg);
    set_ok(&cfg, "relayhost=[192.0.2.1]:25");
    set_ok(&cfg, "routes=example.com=[192.0.2.2],*=[192.0.2.3]");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), -1);
    cr_assert_str_eq(err, "key 'relayhost': never used, since routes has a \"*\" route; "
                          "expected either relayhost or a \"*\" route");
    set_ok(&cfg, "routes=example.com=[192.0.2.2]");
    cr_assert_eq(config_finish(&cfg, err, sizeof(err)), 0, "%s", err);
}

/* ---- dump ---- */

#define DUMP_MAX (1u << 20) /* room for every list key full */

static size_t
dump_to(const struct ringmail_config *cfg, char *buf, size_t n)
{
    FILE *f = fmemopen(buf, n, "w");
    long len;

    cr_assert_not_null(f);
    config_dump(cfg, f);
    len = ftell(f);
    cr_assert_eq(fclose(f), 0);
    cr_assert(len > 0 && (size_t)len < n);
    return (size_t)len;
}

static void
round_trip(const struct ringmail_config *in)
{
    static struct ringmail_config out;
    char *buf = malloc(DUMP_MAX), err[ERRLEN];
    size_t len;
    struct tmp t;

    cr_assert_not_null(buf);
    len = dump_to(in, buf, DUMP_MAX);
    cr_assert_eq(load_len(buf, len, &out, err, &t), 0, "%s\n%.4000s", err, buf);
    memcpy(out.file, in->file, sizeof(out.file));
    cr_assert(memcmp(&out, in, sizeof(out)) == 0, "round trip differs:\n%.4000s", buf);
    free(buf);
}

Test(config, dump_round_trip_defaults)
{
    struct ringmail_config cfg;
    char buf[16384];

    config_defaults(&cfg);
    round_trip(&cfg);
    dump_to(&cfg, buf, sizeof(buf));
    cr_assert(strstr(buf, "\nlisten:\n  - \"127.0.0.1:2525\"\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nsmtpd_timeout: 5m\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nmessage_size_limit: 10240000\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nspool_segment_size: 64M\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nsmtpd_greeting_delay: 0s\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nmynetworks:\n  - \"127.0.0.0/8\"\n  - \"::1/128\"\n") != NULL, "%s",
              buf);
    cr_assert(strstr(buf, "\nrelay_domains: []\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nrelayhost: []\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nroutes: {}\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nmaildir_dir: \"./var/maildir\"\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nadmin_listen: \"127.0.0.1:9025\"\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nadmin_token_file: \"\"\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nmaximal_backoff_time: 4000s\n") != NULL, "%s", buf);
    cr_assert(strstr(buf, "\nmaximal_queue_lifetime: 5d\n") != NULL, "%s", buf);
}

Test(config, dump_round_trip_everything_changed)
{
    struct ringmail_config cfg;
    char err[ERRLEN];
    struct tmp t;

    config_defaults(&cfg);
    set_ok(&cfg, "listen=[2001:db8::25]:25,192.0.2.7:2525,mail.example:587");
    set_ok(&cfg, "myhostname=mx.example.org");
    set_ok(&cfg, "spool_dir=/srv/\"odd\" dir: #1\\x/é");
    set_ok(&cfg, "durability=none");
    set_ok(&cfg, "reactors=3");
    set_ok(&cfg, "message_size_limit=10240001");
    set_ok(&cfg, "max_line_length=1000");
    set_ok(&cfg, "command_line_limit=3k");
    set_ok(&cfg, "smtpd_recipient_limit=7");
    set_ok(&cfg, "smtpd_hard_error_limit=3");
    set_ok(&cfg, "max_connections=12");
    set_ok(&cfg, "bare_newline=reject");
    set_ok(&cfg, "smtpd_timeout=1500ms");
    set_ok(&cfg, "smtpd_data_timeout=23h");
    set_ok(&cfg, "smtpd_greeting_delay=59999ms");
    set_ok(&cfg, "spool_segment_size=3G");
    set_ok(&cfg, "workers=5");
    set_ok(&cfg, "mynetworks=10.1.2.3/8 192.0.2.1,[2001:DB8::]/48,::ffff:198.51.100.0/120");
    set_ok(&cfg, "relay_domains=Example.COM,.example.org");
    set_ok(&cfg, "relayhost=smtp:[2001:db8::25]:2525,MX.Example.net,lmtp:[192.0.2.9]");
    set_ok(&cfg, "routes=example.com=[10.0.0.1]:25 [10.0.0.2]:25,"
                 ".example.org=lmtp:unix:/run/dovecot/lmtp,"
                 "local.test=maildir:/srv/mail");
    set_ok(&cfg, "maildir_dir=/srv/\"odd\" maildir #2");
    set_ok(&cfg, "destination_concurrency_limit=999");
    set_ok(&cfg, "smtp_connection_reuse_count_limit=0");
    set_ok(&cfg, "smtp_connect_timeout=45s");
    set_ok(&cfg, "smtp_helo_timeout=1h");
    set_ok(&cfg, "smtp_data_done_timeout=1500ms");
    set_ok(&cfg, "smtp_connection_cache_time_limit=0s");
    set_ok(&cfg, "minimal_backoff_time=1s");
    set_ok(&cfg, "maximal_backoff_time=1d");
    set_ok(&cfg, "maximal_queue_lifetime=100d");
    set_ok(&cfg, "bounce_queue_lifetime=7h");
    set_ok(&cfg, "submission_listen=127.0.0.1:587");
    set_ok(&cfg, "smtps_listen=[::1]:465");
    set_ok(&cfg, "user=ringmail");
    set_ok(&cfg, "proxy_protocol=on");
    set_ok(&cfg, "proxy_trusted_networks=10.0.0.0/8 ::1");
    set_ok(&cfg, "smtpd_upstream_proxy_timeout=2s");
    set_ok(&cfg, "tls_cert_file=/etc/ringmail/cert.pem");
    set_ok(&cfg, "tls_key_file=/etc/ringmail/key.pem");
    set_ok(&cfg, "smtpd_tls_security_level=encrypt");
    set_ok(&cfg, "smtp_tls_security_level=verify");
    set_ok(&cfg, "smtp_tls_CAfile=/etc/ssl/ca.pem");
    set_ok(&cfg, "smtpd_sasl_password_file=/etc/ringmail/passwd");
    set_ok(&cfg, "smtpd_tls_auth_only=false");
    set_ok(&cfg, "smtpd_auth_failure_limit=5");
    set_ok(&cfg, "smtpd_auth_failure_delay=250ms");
    set_ok(&cfg, "smtpd_client_connection_count_limit=0");
    set_ok(&cfg, "smtpd_client_connection_rate_limit=60");
    set_ok(&cfg, "smtpd_client_message_rate_limit=61");
    set_ok(&cfg, "smtpd_client_recipient_rate_limit=62");
    set_ok(&cfg, "smtpd_client_auth_failure_rate_limit=0");
    set_ok(&cfg, "smtpd_client_ipv6_prefix_length=56");
    set_ok(&cfg, "smtpd_client_limit_exempt_mynetworks=no");
    set_ok(&cfg, "smtpd_client_event_limit_exceptions=192.0.2.0/24");
    set_ok(&cfg, "smtpd_min_data_rate=1k");
    set_ok(&cfg, "admin_listen=[2001:db8::9]:9100");
    set_ok(&cfg, "admin_token_file=/etc/ringmail/admin token");
    round_trip(&cfg);

    config_defaults(&cfg);
    set_ok(&cfg, "listen=");
    set_ok(&cfg, "mynetworks=");
    set_ok(&cfg, "admin_listen=");
    round_trip(&cfg);

    /* a listener's own proxy_protocol is dumped in the mapping form */
    cr_assert_eq(load("listen:\n  - { address: 127.0.0.1:25, proxy_protocol: false }\n"
                      "proxy_protocol: true\nproxy_trusted_networks: 10.0.0.1\n",
                      &cfg, err, &t),
                 0, "%s", err);
    cr_assert_eq(cfg.listen[0].proxy, 0);
    round_trip(&cfg);

    /* paths with blanks, commas, quotes: the dump's sequence form keeps each whole */
    cr_assert_eq(load("routes:\n"
                      "  \"*\":\n"
                      "    - \"maildir:/srv/mail dir, \\\"x\\\"\"\n"
                      "relayhost: []\n",
                      &cfg, err, &t),
                 0, "%s", err);
    cr_assert_str_eq(cfg.routes[0].hops.hop[0].path, "/srv/mail dir, \"x\"");
    round_trip(&cfg);
}

/* ---- the shipped example and reference stay in step with the table ---- */

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf;
    long len;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)len + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    return buf;
}

/* The repository root, from this file's absolute path (CMake compiles with one). */
static bool
source_root(char *buf, size_t n)
{
    static const char self[] = "tests/core/test_config.c";
    const char *file = __FILE__;
    size_t len = strlen(file), slen = sizeof(self) - 1;

    if (file[0] != '/' || len < slen || len - slen >= n || strcmp(&file[len - slen], self) != 0)
        return false;
    memcpy(buf, file, len - slen);
    buf[len - slen] = '\0';
    return true;
}

Test(config, deploy_example_is_the_defaults)
{
    struct ringmail_config cfg, def;
    char root[PATH_MAX], path[PATH_MAX + 64], err[ERRLEN];

    if (!source_root(root, sizeof(root)))
        cr_skip_test("source tree not found from __FILE__");
    snprintf(path, sizeof(path), "%sdeploy/ringmail.yml", root);
    config_defaults(&cfg);
    cr_assert_eq(config_load_file(&cfg, path, err, sizeof(err)), 0, "%s", err);
    config_defaults(&def);
    memcpy(def.file, cfg.file, sizeof(def.file));
    cr_assert(memcmp(&cfg, &def, sizeof(cfg)) == 0, "deploy/ringmail.yml is not at the defaults");
}

Test(config, every_key_is_documented)
{
    struct ringmail_config cfg;
    char root[PATH_MAX], path[PATH_MAX + 64], buf[32768], pat[128];
    char *example, *doc;

    if (!source_root(root, sizeof(root)))
        cr_skip_test("source tree not found from __FILE__");
    snprintf(path, sizeof(path), "%sdeploy/ringmail.yml", root);
    example = slurp(path);
    cr_assert_not_null(example, "%s", path);
    snprintf(path, sizeof(path), "%sdocs/configuration.md", root);
    doc = slurp(path);
    cr_assert_not_null(doc, "%s", path);

    config_defaults(&cfg);
    dump_to(&cfg, buf, sizeof(buf));
    /* each top-level "key:" line of the dump must appear in both files */
    for (char *p = buf; *p != '\0';) {
        char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char *colon = memchr(p, ':', len);

        if (p[0] != '#' && p[0] != ' ' && colon != NULL) {
            int klen = (int)(colon - p);

            char alt[128];

            /* a key whose default depends on the host is shown commented out */
            snprintf(pat, sizeof(pat), "\n%.*s:", klen, p);
            snprintf(alt, sizeof(alt), "\n# %.*s:", klen, p);
            cr_assert(strstr(example, pat) != NULL || strstr(example, alt) != NULL,
                      "deploy/ringmail.yml lacks %.*s", klen, p);
            snprintf(pat, sizeof(pat), "`%.*s`", klen, p);
            cr_assert(strstr(doc, pat) != NULL, "docs/configuration.md lacks %.*s", klen, p);
        }
        p += len + (eol != NULL);
    }
    free(example);
    free(doc);
}

/* config_read(): defaults, the file, then the overrides in order, then the checks. */
Test(config, read_file_then_overrides)
{
    static struct ringmail_config cfg;
    const char *text = "myhostname: file.example\nsmtpd_timeout: 20s\n";
    char *ov[] = { "myhostname=first.example", "myhostname=last.example" };
    char *bad[] = { "smtpd_timeout=fast" }, *nocert[] = { "smtps_listen=127.0.0.1:4650" };
    char err[ERRLEN];
    struct tmp t;

    tmp_write(&t, text, strlen(text));
    cr_assert_eq(config_read(&cfg, t.path, ov, 2, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(cfg.myhostname, "last.example");
    cr_assert_eq(cfg.smtpd_timeout, 20000);
    cr_assert_eq(cfg.smtpd_recipient_limit, 1000, "a default stays");
    cr_assert_eq(config_read(&cfg, t.path, bad, 1, err, sizeof(err)), -1);
    cr_assert(strstr(err, "smtpd_timeout") != NULL, "%s", err);
    /* the cross-key checks run too: smtps_listen without a certificate */
    cr_assert_eq(config_read(&cfg, t.path, nocert, 1, err, sizeof(err)), -1);
    cr_assert(strstr(err, "tls_cert_file") != NULL, "%s", err);
    cr_assert_eq(config_read(&cfg, NULL, NULL, 0, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_neq(cfg.myhostname, "last.example", "no file, no overrides: the defaults");
    tmp_drop(&t);
}
