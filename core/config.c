/*
 * config.c: the configuration keys, their defaults, the YAML loader (libyaml
 * document API), -o key=value, cross-key checks and the YAML dump.
 *
 * One table, cfg_keys[], drives everything: a key is added by adding a field
 * to struct ringmail_config and a row here. The list keys (listen,
 * mynetworks, relay_domains, relayhost, routes) each have a type of their
 * own, whose item parser is shared by the YAML sequence and -o text forms. Loading and -o work on a
 * copy of the configuration that replaces the caller's only when everything parsed, so a failed
 * load or override leaves *cfg as it was.
 *
 * Runs at startup and on reload, on the main thread; no global mutable state.
 * Text from the file or the command line is escaped and cut before it goes
 * into an error message.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "core/compiler.h"
#include "core/slice.h"

enum cfg_type {
    CT_STRING = 0, /* bounded text: no control characters, valid UTF-8 */
    CT_HOSTNAME,   /* a CT_STRING that must look like a hostname */
    CT_UINT,       /* unsigned, plain decimal */
    CT_SIZE,       /* uint64_t octets, optional k/M/G suffix (1024 multiples) */
    CT_DURATION,   /* uint64_t milliseconds, unit required: ms, s, m, h, d */
    CT_ENUM,       /* an enum stored as int; names[] indexed by value */
    CT_LISTEN,     /* the listen[] / nlisten entries of one kind (def = enum config_listen_kind) */
    CT_NEXTHOPS,   /* a struct config_route_hops (relayhost) */
    CT_ROUTES,     /* the routes[] / nroutes pair */
    CT_DOMAINS,    /* the relay_domains[] / nrelay_domains pair */
    CT_NETWORKS,   /* a struct config_networks (mynetworks, proxy_trusted_networks, ...) */
    CT_BOOL,       /* bool: true/false, yes/no, on/off */
    CT_HOSTPORT,   /* one struct config_hostport; "" = unset (all zero, port 0) */
};

enum cfg_flag {
    CF_ZERO_OK = 1u << 0,  /* 0 means "no limit" and skips min */
    CF_HOSTNAME = 1u << 1, /* default: gethostname(), else "localhost" */
    CF_EMPTY_OK = 1u << 2, /* CT_STRING: "" is a value (unset) */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t off;  /* offsetof(struct ringmail_config, field) */
    size_t size; /* sizeof the field: string capacity, or the integer width */
    uint64_t def;
    uint64_t min;
    uint64_t max;
    const char *sdef;         /* default text of CT_STRING and list keys (as -o takes it) */
    const char *const *names; /* CT_ENUM: value names, NULL-terminated */
    unsigned flags;           /* CF_* */
};

/* Designated, so a row reads the same whatever the order of its initialisers. */
#define FIELD(m)                                                                                   \
    .off = offsetof(struct ringmail_config, m), .size = sizeof(((struct ringmail_config *)0)->m)

#define KiB    UINT64_C(1024)
#define MiB    (KiB * 1024)
#define GiB    (MiB * 1024)
#define SEC    UINT64_C(1000)
#define MINUTE (SEC * 60)
#define HOUR   (MINUTE * 60)
#define DAY    (HOUR * 24)
#define NO_MAX UINT64_MAX

/* Enums are read and written as unsigned (their compatible type in GCC). */
_Static_assert(sizeof(enum config_durability) == sizeof(unsigned), "enum width");
_Static_assert(sizeof(enum config_delivery) == sizeof(unsigned), "enum width");
_Static_assert(sizeof(enum config_bare_newline) == sizeof(unsigned), "enum width");
_Static_assert(sizeof(enum config_smtpd_tls) == sizeof(unsigned), "enum width");
_Static_assert(sizeof(enum config_smtp_tls) == sizeof(unsigned), "enum width");

static const char *const durability_names[] = { "fsync", "none", NULL };
static const char *const delivery_names[] = { "on", "hold", NULL };
static const char *const bare_newline_names[] = { "normalize", "reject", NULL };
static const char *const smtpd_tls_names[] = { "may", "encrypt", NULL };
static const char *const log_format_names[] = { "kv", "json", NULL }; /* enum log_format */
static const char *const smtp_tls_names[] = { "none", "may", "encrypt", "verify", NULL };

/* The order here is the order of config_dump(). */
static const struct cfg_key cfg_keys[] = {
    { .name = "listen",
      .type = CT_LISTEN,
      FIELD(listen),
      .def = LISTEN_SMTP,
      .sdef = "127.0.0.1:2525" },
    { .name = "submission_listen",
      .type = CT_LISTEN,
      FIELD(listen),
      .def = LISTEN_SUBMISSION,
      .sdef = "" },
    { .name = "smtps_listen", .type = CT_LISTEN, FIELD(listen), .def = LISTEN_SMTPS, .sdef = "" },
    /* the admin HTTP endpoint (net/admin.c) */
    { .name = "admin_listen", .type = CT_HOSTPORT, FIELD(admin_listen), .sdef = "127.0.0.1:9025" },
    { .name = "admin_token_file",
      .type = CT_STRING,
      FIELD(admin_token_file),
      .sdef = "",
      .flags = CF_EMPTY_OK },
    { .name = "myhostname", .type = CT_HOSTNAME, FIELD(myhostname), .flags = CF_HOSTNAME },
    { .name = "user", .type = CT_STRING, FIELD(user), .sdef = "nobody" },
    { .name = "log_format",
      .type = CT_ENUM,
      FIELD(log_format),
      .def = 0,
      .names = log_format_names },
    { .name = "mynetworks",
      .type = CT_NETWORKS,
      FIELD(mynetworks),
      .sdef = "127.0.0.0/8, ::1/128" },
    { .name = "relay_domains", .type = CT_DOMAINS, FIELD(relay_domains), .sdef = "" },
    { .name = "spool_dir", .type = CT_STRING, FIELD(spool_dir), .sdef = "./var/spool" },
    { .name = "durability",
      .type = CT_ENUM,
      FIELD(durability),
      .def = DURABILITY_FSYNC,
      .names = durability_names },
    { .name = "delivery",
      .type = CT_ENUM,
      FIELD(delivery),
      .def = DELIVERY_ON,
      .names = delivery_names },
    { .name = "reactors", .type = CT_UINT, FIELD(reactors), .def = 0, .min = 0, .max = 256 },
    { .name = "workers", .type = CT_UINT, FIELD(workers), .def = 0, .min = 0, .max = 256 },
    { .name = "message_size_limit",
      .type = CT_SIZE,
      FIELD(message_size_limit),
      .def = 10240000,
      .min = 0,
      .max = NO_MAX,
      .flags = CF_ZERO_OK },
    { .name = "max_line_length",
      .type = CT_SIZE,
      FIELD(max_line_length),
      .def = 0,
      .min = 80,
      .max = NO_MAX,
      .flags = CF_ZERO_OK },
    { .name = "command_line_limit",
      .type = CT_SIZE,
      FIELD(command_line_limit),
      .def = 2048,
      .min = 512,
      .max = 65536 },
    { .name = "smtpd_recipient_limit",
      .type = CT_UINT,
      FIELD(smtpd_recipient_limit),
      .def = 1000,
      .min = 1,
      .max = 1000000 },
    { .name = "smtpd_hard_error_limit",
      .type = CT_UINT,
      FIELD(smtpd_hard_error_limit),
      .def = 20,
      .min = 1,
      .max = 1000000 },
    { .name = "max_connections",
      .type = CT_UINT,
      FIELD(max_connections),
      .def = 10000,
      .min = 1,
      .max = 1000000 },
    { .name = "bare_newline",
      .type = CT_ENUM,
      FIELD(bare_newline),
      .def = BARE_NEWLINE_NORMALIZE,
      .names = bare_newline_names },
    { .name = "smtpd_timeout",
      .type = CT_DURATION,
      FIELD(smtpd_timeout),
      .def = 300 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "smtpd_data_timeout",
      .type = CT_DURATION,
      FIELD(smtpd_data_timeout),
      .def = 180 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "shutdown_timeout",
      .type = CT_DURATION,
      FIELD(shutdown_timeout),
      .def = 30 * SEC,
      .min = 0,
      .max = HOUR },
    { .name = "smtpd_greeting_delay",
      .type = CT_DURATION,
      FIELD(smtpd_greeting_delay),
      .def = 0,
      .min = 0,
      .max = 60 * SEC },
    /* PROXY protocol */
    { .name = "proxy_protocol", .type = CT_BOOL, FIELD(proxy_protocol), .def = false },
    { .name = "proxy_trusted_networks",
      .type = CT_NETWORKS,
      FIELD(proxy_trusted_networks),
      .sdef = "" },
    { .name = "smtpd_upstream_proxy_timeout",
      .type = CT_DURATION,
      FIELD(smtpd_upstream_proxy_timeout),
      .def = 5 * SEC,
      .min = 100,
      .max = 5 * MINUTE },
    /* TLS */
    { .name = "tls_cert_file",
      .type = CT_STRING,
      FIELD(tls_cert_file),
      .sdef = "",
      .flags = CF_EMPTY_OK },
    { .name = "tls_key_file",
      .type = CT_STRING,
      FIELD(tls_key_file),
      .sdef = "",
      .flags = CF_EMPTY_OK },
    { .name = "smtpd_tls_security_level",
      .type = CT_ENUM,
      FIELD(smtpd_tls_security_level),
      .def = SMTPD_TLS_MAY,
      .names = smtpd_tls_names },
    { .name = "smtp_tls_security_level",
      .type = CT_ENUM,
      FIELD(smtp_tls_security_level),
      .def = SMTP_TLS_MAY,
      .names = smtp_tls_names },
    { .name = "smtp_tls_CAfile",
      .type = CT_STRING,
      FIELD(smtp_tls_CAfile),
      .sdef = "",
      .flags = CF_EMPTY_OK },
    /* AUTH */
    { .name = "smtpd_sasl_password_file",
      .type = CT_STRING,
      FIELD(smtpd_sasl_password_file),
      .sdef = "",
      .flags = CF_EMPTY_OK },
    { .name = "smtpd_tls_auth_only", .type = CT_BOOL, FIELD(smtpd_tls_auth_only), .def = true },
    { .name = "smtpd_auth_failure_limit",
      .type = CT_UINT,
      FIELD(smtpd_auth_failure_limit),
      .def = 3,
      .min = 1,
      .max = 100 },
    { .name = "smtpd_auth_failure_delay",
      .type = CT_DURATION,
      FIELD(smtpd_auth_failure_delay),
      .def = SEC,
      .min = 0,
      .max = MINUTE },
    /* per-client limits */
    { .name = "smtpd_client_connection_count_limit",
      .type = CT_UINT,
      FIELD(smtpd_client_connection_count_limit),
      .def = 50,
      .min = 1,
      .max = 1000000,
      .flags = CF_ZERO_OK },
    { .name = "smtpd_client_connection_rate_limit",
      .type = CT_UINT,
      FIELD(smtpd_client_connection_rate_limit),
      .def = 0,
      .min = 1,
      .max = 100000000,
      .flags = CF_ZERO_OK },
    { .name = "smtpd_client_message_rate_limit",
      .type = CT_UINT,
      FIELD(smtpd_client_message_rate_limit),
      .def = 0,
      .min = 1,
      .max = 100000000,
      .flags = CF_ZERO_OK },
    { .name = "smtpd_client_recipient_rate_limit",
      .type = CT_UINT,
      FIELD(smtpd_client_recipient_rate_limit),
      .def = 0,
      .min = 1,
      .max = 100000000,
      .flags = CF_ZERO_OK },
    { .name = "smtpd_client_auth_failure_rate_limit",
      .type = CT_UINT,
      FIELD(smtpd_client_auth_failure_rate_limit),
      .def = 10,
      .min = 1,
      .max = 100000000,
      .flags = CF_ZERO_OK },
    { .name = "smtpd_client_ipv6_prefix_length",
      .type = CT_UINT,
      FIELD(smtpd_client_ipv6_prefix_length),
      .def = 64,
      .min = 1,
      .max = 128 },
    { .name = "smtpd_client_limit_exempt_mynetworks",
      .type = CT_BOOL,
      FIELD(smtpd_client_limit_exempt_mynetworks),
      .def = true },
    { .name = "smtpd_client_event_limit_exceptions",
      .type = CT_NETWORKS,
      FIELD(smtpd_client_event_limit_exceptions),
      .sdef = "" },
    { .name = "smtpd_min_data_rate",
      .type = CT_SIZE,
      FIELD(smtpd_min_data_rate),
      .def = 500,
      .min = 1,
      .max = GiB,
      .flags = CF_ZERO_OK },
    { .name = "spool_segment_size",
      .type = CT_SIZE,
      FIELD(spool_segment_size),
      .def = 64 * MiB,
      .min = MiB,
      .max = 4 * GiB },
    /* delivery */
    { .name = "relayhost", .type = CT_NEXTHOPS, FIELD(relayhost), .sdef = "" },
    { .name = "routes", .type = CT_ROUTES, FIELD(routes), .sdef = "" },
    /* the path of the built-in maildir route, stored in that route (config.h) */
    { .name = "maildir_dir",
      .type = CT_STRING,
      FIELD(default_route.hop[0].path),
      .sdef = "./var/maildir" },
    { .name = "destination_concurrency_limit",
      .type = CT_UINT,
      FIELD(destination_concurrency_limit),
      .def = 20,
      .min = 1,
      .max = 1000 },
    { .name = "smtp_connection_reuse_count_limit",
      .type = CT_UINT,
      FIELD(smtp_connection_reuse_count_limit),
      .def = 100,
      .min = 1,
      .max = 1000000,
      .flags = CF_ZERO_OK },
    { .name = "smtp_connect_timeout",
      .type = CT_DURATION,
      FIELD(smtp_connect_timeout),
      .def = 30 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "smtp_helo_timeout",
      .type = CT_DURATION,
      FIELD(smtp_helo_timeout),
      .def = 300 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "smtp_data_done_timeout",
      .type = CT_DURATION,
      FIELD(smtp_data_done_timeout),
      .def = 600 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "smtp_connection_cache_time_limit",
      .type = CT_DURATION,
      FIELD(smtp_connection_cache_time_limit),
      .def = 2 * SEC,
      .min = 0,
      .max = HOUR },
    { .name = "minimal_backoff_time",
      .type = CT_DURATION,
      FIELD(minimal_backoff_time),
      .def = 300 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "maximal_backoff_time",
      .type = CT_DURATION,
      FIELD(maximal_backoff_time),
      .def = 4000 * SEC,
      .min = SEC,
      .max = DAY },
    { .name = "maximal_queue_lifetime",
      .type = CT_DURATION,
      FIELD(maximal_queue_lifetime),
      .def = 5 * DAY,
      .min = SEC,
      .max = 100 * DAY },
    { .name = "bounce_queue_lifetime",
      .type = CT_DURATION,
      FIELD(bounce_queue_lifetime),
      .def = 5 * DAY,
      .min = SEC,
      .max = 100 * DAY },
};

#define NKEYS ARRAY_SIZE(cfg_keys)

/* Room for one error detail ("what is wrong; what was expected"). */
#define WHY_MAX  384
/* User text shown in a message is cut to this many octets. */
#define SHOW_MAX 64

/* ---- small text helpers ---- */

/* Copy s[0..len) into dst as printable ASCII: other octets as \xHH, cut at SHOW_MAX. */
static void
show(char *dst, size_t n, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    BUG_ON(n < 8);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (i == SHOW_MAX || o + 8 > n) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    dst[o] = '\0';
}

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool
is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * Decimal digits at the start of s[0..len): *used digits read into *out.
 * Returns 0, -EINVAL when there is no digit, -ERANGE past UINT64_MAX.
 * Hand-rolled rather than strtoull: no sign, no spaces, no locale, and s need
 * not be NUL-terminated.
 */
static int
parse_digits(const char *s, size_t len, size_t *used, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len && is_digit(s[i]); i++) {
        unsigned d = (unsigned)(s[i] - '0');

        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (i == 0)
        return -EINVAL;
    *used = i;
    *out = v;
    return 0;
}

/* Letters, digits, '-' and '.', labels of 1..63 not starting or ending in '-'. */
static bool
hostname_ok(const char *s, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (is_alnum(c) || c == '-') {
            if (c == '-' && label == 0)
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && s[len - 1] != '-';
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static bool
utf8_ok(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t j = 1; j <= n; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* ---- value formatting: shared by config_dump and the range messages ---- */

static void
fmt_size(char *buf, size_t n, uint64_t v)
{
    if (v != 0 && v % GiB == 0)
        snprintf(buf, n, "%" PRIu64 "G", v / GiB);
    else if (v != 0 && v % MiB == 0)
        snprintf(buf, n, "%" PRIu64 "M", v / MiB);
    else
        snprintf(buf, n, "%" PRIu64, v);
}

static void
fmt_duration(char *buf, size_t n, uint64_t ms)
{
    if (ms == 0)
        snprintf(buf, n, "0s");
    else if (ms % DAY == 0)
        snprintf(buf, n, "%" PRIu64 "d", ms / DAY);
    else if (ms % HOUR == 0)
        snprintf(buf, n, "%" PRIu64 "h", ms / HOUR);
    else if (ms % MINUTE == 0)
        snprintf(buf, n, "%" PRIu64 "m", ms / MINUTE);
    else if (ms % SEC == 0)
        snprintf(buf, n, "%" PRIu64 "s", ms / SEC);
    else
        snprintf(buf, n, "%" PRIu64 "ms", ms);
}

static void
fmt_num(const struct cfg_key *k, char *buf, size_t n, uint64_t v)
{
    if (k->type == CT_SIZE)
        fmt_size(buf, n, v);
    else if (k->type == CT_DURATION)
        fmt_duration(buf, n, v);
    else
        snprintf(buf, n, "%" PRIu64, v);
}

/* "512..65536", "at least 80", "0 (no limit) or at least 80" */
static void
fmt_range(const struct cfg_key *k, char *buf, size_t n)
{
    char lo[32], hi[32];
    int o = 0;

    fmt_num(k, lo, sizeof(lo), k->min);
    fmt_num(k, hi, sizeof(hi), k->max);
    if ((k->flags & CF_ZERO_OK) && k->min > 0)
        o = snprintf(buf, n, "0 (no limit) or ");
    if (o < 0 || (size_t)o >= n)
        return;
    if (k->max == NO_MAX && k->min == 0)
        snprintf(buf + o, n - (size_t)o, "0 (no limit) or more");
    else if (k->max == NO_MAX)
        snprintf(buf + o, n - (size_t)o, "at least %s", lo);
    else
        snprintf(buf + o, n - (size_t)o, "%s..%s", lo, hi);
}

/* ---- field access ---- */

static void *
field(struct ringmail_config *cfg, const struct cfg_key *k)
{
    return (char *)cfg + k->off;
}

static const void *
cfield(const struct ringmail_config *cfg, const struct cfg_key *k)
{
    return (const char *)cfg + k->off;
}

static uint64_t
get_num(const struct ringmail_config *cfg, const struct cfg_key *k)
{
    const void *p = cfield(cfg, k);

    if (k->size == sizeof(uint64_t)) {
        uint64_t v;

        memcpy(&v, p, sizeof(v));
        return v;
    }
    BUG_ON(k->size != sizeof(unsigned));
    unsigned u;

    memcpy(&u, p, sizeof(u));
    return u;
}

static void
set_num(struct ringmail_config *cfg, const struct cfg_key *k, uint64_t v)
{
    void *p = field(cfg, k);

    if (k->size == sizeof(uint64_t)) {
        memcpy(p, &v, sizeof(v));
        return;
    }
    BUG_ON(k->size != sizeof(unsigned) || v > UINT_MAX);
    unsigned u = (unsigned)v;

    memcpy(p, &u, sizeof(u));
}

static void
set_str(struct ringmail_config *cfg, const struct cfg_key *k, const char *s, size_t len)
{
    char *p = field(cfg, k);

    BUG_ON(len >= k->size);
    memset(p, 0, k->size); /* no stale bytes: configurations compare with memcmp */
    memcpy(p, s, len);
}

static const struct cfg_key *
key_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strlen(cfg_keys[i].name) == len && memcmp(cfg_keys[i].name, name, len) == 0)
            return &cfg_keys[i];
    }
    return NULL;
}

/* Levenshtein distance, for "did you mean"; both strings at most SHOW_MAX. */
static size_t
edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t row[SHOW_MAX + 1];

    BUG_ON(lb > SHOW_MAX);
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (ascii_lower(a[i - 1]) != ascii_lower(b[j - 1]));

            best = MIN(best, up + 1);
            best = MIN(best, row[j - 1] + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static void
unknown_key(char *why, size_t n, const char *name, size_t len)
{
    const struct cfg_key *best = NULL;
    size_t bestd = 3; /* suggest only close matches */

    if (len <= SHOW_MAX) {
        for (size_t i = 0; i < NKEYS; i++) {
            size_t d = edit_distance(name, len, cfg_keys[i].name, strlen(cfg_keys[i].name));

            if (d < bestd) {
                bestd = d;
                best = &cfg_keys[i];
            }
        }
    }
    if (best != NULL)
        snprintf(why, n, "unknown key (did you mean '%s'?)", best->name);
    else
        snprintf(why, n, "unknown key");
}

/* ---- value parsers: 0, or -1 with "what is wrong; what was expected" in why ---- */

#define HOP_FORMS "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or maildir:/path"

static const char *
type_expect(const struct cfg_key *k)
{
    switch (k->type) {
    case CT_STRING:
        return "a string";
    case CT_HOSTNAME:
        return "a hostname";
    case CT_UINT:
        return "a whole number";
    case CT_SIZE:
        return "a size in octets, e.g. 10240000 or 64M";
    case CT_DURATION:
        return "a duration with a unit (ms, s, m, h, d), e.g. 300s";
    case CT_ENUM:
        return "one of the listed names";
    case CT_LISTEN:
        return "a list of host:port";
    case CT_NEXTHOPS:
        return "a list of next hops (" HOP_FORMS ")";
    case CT_ROUTES:
        return "a mapping of recipient domain to next hops";
    case CT_DOMAINS:
        return "a list of domains (example.com, or .example.com for its subdomains)";
    case CT_NETWORKS:
        return "a list of networks (address/prefix, e.g. 10.0.0.0/8 or ::1/128)";
    case CT_BOOL:
        return "true or false";
    case CT_HOSTPORT:
        return "host:port, or \"\" for none";
    }
    return "a value";
}

static int
check_range(const struct cfg_key *k, uint64_t v, const char *s, size_t len, char *why, size_t n)
{
    char txt[SHOW_MAX + 8], range[96];

    if (v == 0 && (k->flags & CF_ZERO_OK))
        return 0;
    if (v >= k->min && v <= k->max)
        return 0;
    show(txt, sizeof(txt), s, len);
    fmt_range(k, range, sizeof(range));
    snprintf(why, n, "%s is out of range; expected %s", txt, range);
    return -1;
}

static int
parse_number(const struct cfg_key *k, const char *s, size_t len, uint64_t *out, char *why, size_t n)
{
    char txt[SHOW_MAX + 8];
    uint64_t v, mult = 1;
    size_t used;
    int rc;

    show(txt, sizeof(txt), s, len);
    rc = parse_digits(s, len, &used, &v);
    if (rc == -ERANGE) {
        snprintf(why, n, "\"%s\" is too large; expected %s", txt, type_expect(k));
        return -1;
    }
    if (rc < 0) {
        snprintf(why, n, "\"%s\" is not a number; expected %s", txt, type_expect(k));
        return -1;
    }
    const char *unit = s + used;
    size_t ulen = len - used;

    switch (k->type) {
    case CT_UINT:
        if (ulen != 0) {
            snprintf(why, n, "\"%s\" is not a whole number; expected digits only", txt);
            return -1;
        }
        break;
    case CT_SIZE:
        if (ulen == 1 && (*unit == 'k' || *unit == 'K')) {
            mult = KiB;
        } else if (ulen == 1 && (*unit == 'm' || *unit == 'M')) {
            mult = MiB;
        } else if (ulen == 1 && (*unit == 'g' || *unit == 'G')) {
            mult = GiB;
        } else if (ulen != 0) {
            snprintf(why, n,
                     "\"%s\" is not a size; expected octets with an optional k, M or G "
                     "suffix (1024 multiples), e.g. 64M",
                     txt);
            return -1;
        }
        break;
    case CT_DURATION:
        if (ulen == 0) {
            snprintf(why, n,
                     "\"%s\" has no unit; expected a duration with a unit (ms, s, m, h, "
                     "d), e.g. \"%ss\"",
                     txt, txt);
            return -1;
        }
        if (ulen == 2 && memcmp(unit, "ms", 2) == 0) {
            mult = 1;
        } else if (ulen == 1 && *unit == 's') {
            mult = SEC;
        } else if (ulen == 1 && *unit == 'm') {
            mult = MINUTE;
        } else if (ulen == 1 && *unit == 'h') {
            mult = HOUR;
        } else if (ulen == 1 && *unit == 'd') {
            mult = DAY;
        } else {
            snprintf(why, n,
                     "\"%s\" has an unknown unit; expected a whole number followed by ms, "
                     "s, m, h or d, e.g. 300s",
                     txt);
            return -1;
        }
        break;
    default:
        BUG_ON(1);
    }
    if (v > UINT64_MAX / mult) {
        snprintf(why, n, "\"%s\" is too large; expected %s", txt, type_expect(k));
        return -1;
    }
    v *= mult;
    if (check_range(k, v, s, len, why, n) < 0)
        return -1;
    *out = v;
    return 0;
}

static int
parse_enum(const struct cfg_key *k, const char *s, size_t len, unsigned *out, char *why, size_t n)
{
    char txt[SHOW_MAX + 8], list[128];
    size_t o = 0;

    for (unsigned i = 0; k->names[i] != NULL; i++) {
        if (strlen(k->names[i]) == len && memcmp(k->names[i], s, len) == 0) {
            *out = i;
            return 0;
        }
    }
    list[0] = '\0';
    for (unsigned i = 0; k->names[i] != NULL && o < sizeof(list); i++) {
        int w = snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", k->names[i]);

        if (w < 0)
            break;
        o += (size_t)w;
    }
    show(txt, sizeof(txt), s, len);
    snprintf(why, n, "\"%s\" is not a valid value; expected one of: %s", txt, list);
    return -1;
}

/* No control characters, valid UTF-8: what every text value must be. */
static int
text_check(const char *s, size_t len, char *why, size_t n)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f) {
            snprintf(why, n,
                     "value contains a control character (\\x%02x at offset %zu); "
                     "expected printable text",
                     c, i);
            return -1;
        }
    }
    if (!utf8_ok((const unsigned char *)s, len)) {
        snprintf(why, n, "value is not valid UTF-8; expected UTF-8 text");
        return -1;
    }
    return 0;
}

static int
parse_string(const struct cfg_key *k, const char *s, size_t len, char *why, size_t n)
{
    char txt[SHOW_MAX + 8];

    if (len == 0) {
        if (k->flags & CF_EMPTY_OK)
            return 0;
        snprintf(why, n, "empty value; expected %s", type_expect(k));
        return -1;
    }
    if (len >= k->size) {
        snprintf(why, n, "value is %zu octets long; expected at most %zu", len, k->size - 1);
        return -1;
    }
    if (text_check(s, len, why, n) < 0)
        return -1;
    if (k->type == CT_HOSTNAME && !hostname_ok(s, len)) {
        show(txt, sizeof(txt), s, len);
        snprintf(why, n,
                 "\"%s\" is not a plausible hostname; expected letters, digits, '-' and "
                 "'.', labels of 1..63 characters",
                 txt);
        return -1;
    }
    return 0;
}

static int
parse_bool(const char *s, size_t len, bool *out, char *why, size_t n)
{
    static const char *const yes[] = { "true", "yes", "on" }, *const no[] = { "false", "no",
                                                                              "off" };
    char txt[SHOW_MAX + 8];

    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (slice_eq_nocase(slice_make(s, len), yes[i])) {
            *out = true;
            return 0;
        }
        if (slice_eq_nocase(slice_make(s, len), no[i])) {
            *out = false;
            return 0;
        }
    }
    show(txt, sizeof(txt), s, len);
    snprintf(why, n, "\"%s\" is not a valid value; expected true or false (or yes/no, on/off)",
             txt);
    return -1;
}

struct listen_list {
    struct config_hostport a[CONFIG_MAX_LISTEN];
    unsigned n;
};

static bool
all_digits_dots(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]) && s[i] != '.')
            return false;
    }
    return true;
}

/* One "host:port" or "[v6]:port" entry, appended to *l. */
static int
listen_add(struct listen_list *l, const char *s, size_t len, char *why, size_t n)
{
    struct config_hostport hp = { .port = 0, .proxy = -1 };
    char txt[SHOW_MAX + 8], host[CONFIG_HOST_MAX];
    const char *h, *p;
    size_t hlen, plen, used;
    uint64_t port;
    unsigned char addr[16];

    show(txt, sizeof(txt), s, len);
    if (len == 0) {
        snprintf(why, n, "empty address; expected host:port, e.g. 127.0.0.1:25 or [::1]:25");
        return -1;
    }
    if (s[0] == '[') {
        const char *rb = memchr(s, ']', len);

        if (rb == NULL) {
            snprintf(why, n, "\"%s\" has no closing ']'; expected [IPv6]:port, e.g. [::1]:25", txt);
            return -1;
        }
        h = s + 1;
        hlen = (size_t)(rb - h);
        p = rb + 1;
        if (p == s + len || *p != ':') {
            snprintf(why, n, "\"%s\" has no port; expected [IPv6]:port, e.g. [::1]:25", txt);
            return -1;
        }
        p++;
        hp.v6 = true;
    } else {
        size_t c = len;

        while (c > 0 && s[c - 1] != ':')
            c--;
        if (c == 0) {
            snprintf(why, n, "\"%s\" has no port; expected host:port, e.g. 127.0.0.1:25", txt);
            return -1;
        }
        h = s;
        hlen = c - 1;
        p = s + c;
        if (memchr(h, ':', hlen) != NULL) {
            snprintf(why, n,
                     "\"%s\": an IPv6 address must be written in brackets, e.g. "
                     "[::1]:25",
                     txt);
            return -1;
        }
    }
    plen = (size_t)(s + len - p);
    if (hlen == 0) {
        snprintf(why, n, "\"%s\" has no host; expected host:port, e.g. 127.0.0.1:25", txt);
        return -1;
    }
    if (hlen >= sizeof(host)) {
        snprintf(why, n, "\"%s\": the host is %zu octets long; expected at most %zu", txt, hlen,
                 sizeof(host) - 1);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (hp.v6) {
        if (inet_pton(AF_INET6, host, addr) != 1) {
            char htxt[SHOW_MAX + 8];

            show(htxt, sizeof(htxt), h, hlen); /* escaped like txt */
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv6 address", txt, htxt);
            return -1;
        }
    } else if (all_digits_dots(h, hlen)) {
        if (inet_pton(AF_INET, host, addr) != 1) {
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv4 address", txt, host);
            return -1;
        }
    } else if (!hostname_ok(h, hlen)) {
        snprintf(why, n,
                 "\"%s\": the host is neither an IP address nor a hostname; expected "
                 "a.b.c.d, [IPv6] or a hostname",
                 txt);
        return -1;
    }
    if (parse_digits(p, plen, &used, &port) < 0 || used != plen || port < 1 || port > 65535) {
        char ptxt[SHOW_MAX + 8];

        show(ptxt, sizeof(ptxt), p, plen);
        snprintf(why, n, "\"%s\": port \"%s\" is not valid; expected a number in 1..65535", txt,
                 ptxt);
        return -1;
    }
    hp.port = (uint16_t)port;
    memcpy(hp.host, host, hlen + 1);
    for (unsigned i = 0; i < l->n; i++) {
        if (l->a[i].port == hp.port &&
            slice_eq_nocase(slice_make(l->a[i].host, strlen(l->a[i].host)), hp.host)) {
            snprintf(why, n, "\"%s\" is listed twice; expected each address once", txt);
            return -1;
        }
    }
    if (l->n == CONFIG_MAX_LISTEN) {
        snprintf(why, n, "too many addresses; expected at most %d", CONFIG_MAX_LISTEN);
        return -1;
    }
    l->a[l->n++] = hp;
    return 0;
}

/* A comma-separated list, as -o gives it (also a single YAML scalar). */
static int
listen_parse_text(struct listen_list *l, const char *s, size_t len, char *why, size_t n)
{
    size_t start = 0;

    if (len == 0)
        return 0; /* an empty list: config_finish() says at least one is needed */
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == ',') {
            if (listen_add(l, s + start, i - start, why, n) < 0)
                return -1;
            start = i + 1;
        }
    }
    return 0;
}

/* Replace cfg's listeners of k's kind with l's; 0, or -1 when the total is over the limit. */
static int
listen_commit(struct ringmail_config *cfg, const struct cfg_key *k, const struct listen_list *l,
              char *why, size_t n)
{
    struct config_hostport keep[CONFIG_MAX_LISTEN];
    unsigned nkeep = 0;

    for (unsigned i = 0; i < cfg->nlisten; i++) {
        if (cfg->listen[i].kind != k->def)
            keep[nkeep++] = cfg->listen[i];
    }
    if (nkeep + l->n > CONFIG_MAX_LISTEN) {
        snprintf(why, n,
                 "too many addresses: %u here and %u in the other listen keys; expected at "
                 "most %d in all",
                 l->n, nkeep, CONFIG_MAX_LISTEN);
        return -1;
    }
    memset(cfg->listen, 0, sizeof(cfg->listen));
    memcpy(cfg->listen, keep, nkeep * sizeof(keep[0]));
    for (unsigned i = 0; i < l->n; i++) {
        cfg->listen[nkeep + i] = l->a[i];
        cfg->listen[nkeep + i].kind = (uint8_t)k->def;
    }
    cfg->nlisten = nkeep + l->n;
    return 0;
}

/* ---- lists of items: relayhost, routes, relay_domains, mynetworks ---- */

/* Adds one item s[0..len) to ctx; 0, or -1 with a message in why. */
typedef int cfg_item_fn(void *ctx, const char *s, size_t len, char *why, size_t n);

/* Separators of the text form of a list (-o, or a YAML scalar): as Postfix, commas and/or blanks.
 */
#define LIST_SEPS ", \t"
/* Between the next hops of one route in -o: commas separate the routes. */
#define HOP_SEPS  " \t"

/* Call add() on each maximal run of octets not in seps (empty runs are skipped). */
static int
split_each(const char *s, size_t len, const char *seps, cfg_item_fn *add, void *ctx, char *why,
           size_t n)
{
    size_t i = 0;

    while (i < len) {
        size_t start;

        while (i < len && strchr(seps, s[i]) != NULL)
            i++;
        start = i;
        while (i < len && strchr(seps, s[i]) == NULL)
            i++;
        if (i > start && add(ctx, s + start, i - start, why, n) < 0)
            return -1;
    }
    return 0;
}

static bool
all_digits(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
    }
    return true;
}

static bool
all_letters(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = ascii_lower(s[i]);

        if (c < 'a' || c > 'z')
            return false;
    }
    return len > 0;
}

static bool
has_prefix(const char *s, size_t len, const char *lit)
{
    size_t l = strlen(lit);

    return len >= l && memcmp(s, lit, l) == 0;
}

static void
copy_lower(char *dst, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] = ascii_lower(s[i]);
    dst[len] = '\0';
}

/* The path of a unix-socket or maildir hop: 1..max-1 octets of printable UTF-8. */
static int
hop_path(const char *txt, const char *p, size_t plen, size_t max, char *out, char *why, size_t n)
{
    if (plen == 0) {
        snprintf(why, n, "\"%s\": the path is empty; expected %s", txt, HOP_FORMS);
        return -1;
    }
    if (plen >= max) {
        snprintf(why, n, "\"%s\": the path is %zu octets long; expected at most %zu", txt, plen,
                 max - 1);
        return -1;
    }
    if (text_check(p, plen, why, n) < 0)
        return -1;
    memcpy(out, p, plen);
    out[plen] = '\0';
    return 0;
}

/* The host of a TCP hop into out[CONFIG_HOST_MAX], canonical: see struct config_nexthop. */
static int
hop_host(const char *txt, const char *h, size_t hlen, bool bracketed, char *out, char *why,
         size_t n)
{
    char host[CONFIG_HOST_MAX];
    unsigned char addr[16];

    if (hlen == 0) {
        snprintf(why, n, "\"%s\" has no host; expected %s", txt, HOP_FORMS);
        return -1;
    }
    if (hlen >= sizeof(host)) {
        snprintf(why, n, "\"%s\": the host is %zu octets long; expected at most %zu", txt, hlen,
                 sizeof(host) - 1);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (memchr(h, ':', hlen) != NULL) {
        if (!bracketed) {
            snprintf(why, n,
                     "\"%s\": an IPv6 address must be written in brackets, e.g. "
                     "smtp:[2001:db8::25]:25",
                     txt);
            return -1;
        }
        if (inet_pton(AF_INET6, host, addr) != 1) {
            char htxt[SHOW_MAX + 8];

            show(htxt, sizeof(htxt), h, hlen); /* escaped like txt */
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv6 address", txt, htxt);
            return -1;
        }
        BUG_ON(inet_ntop(AF_INET6, addr, out, CONFIG_HOST_MAX) == NULL);
    } else if (all_digits_dots(h, hlen)) {
        if (inet_pton(AF_INET, host, addr) != 1) {
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv4 address", txt, host);
            return -1;
        }
        BUG_ON(inet_ntop(AF_INET, addr, out, CONFIG_HOST_MAX) == NULL);
    } else if (hostname_ok(h, hlen)) {
        copy_lower(out, h, hlen);
    } else {
        snprintf(why, n,
                 "\"%s\": the host is neither an IP address nor a hostname; expected "
                 "a.b.c.d, [IPv6] or a hostname",
                 txt);
        return -1;
    }
    return 0;
}

/*
 * One next hop: [smtp:]host[:port], [smtp:][host][:port], lmtp:[inet:]host...,
 * lmtp:unix:/path or maildir:/path. Brackets are optional (ringmail never
 * looks up MX, so they change nothing) except around an IPv6 address.
 */
static int
nexthop_parse(const char *s, size_t len, struct config_nexthop *out, char *why, size_t n)
{
    char txt[SHOW_MAX + 8];
    const char *end = s + len, *rest = s, *colon, *h, *p = NULL;
    size_t hlen, plen = 0, used;
    uint16_t defport = 25;
    bool bracketed = false;
    uint64_t port;

    memset(out, 0, sizeof(*out)); /* unused bytes zero: hops compare with memcmp */
    out->transport = TRANSPORT_SMTP;
    show(txt, sizeof(txt), s, len);
    if (len == 0) {
        snprintf(why, n, "empty next hop; expected %s", HOP_FORMS);
        return -1;
    }
    colon = memchr(s, ':', len);
    if (s[0] != '[' && colon != NULL) {
        const char *after = colon + 1;
        size_t plen_pre = (size_t)(colon - s), alen = (size_t)(end - after);

        if (plen_pre == 4 && memcmp(s, "smtp", 4) == 0) {
            rest = after;
        } else if (plen_pre == 4 && memcmp(s, "lmtp", 4) == 0) {
            out->transport = TRANSPORT_LMTP;
            defport = 24;
            rest = after;
            if (has_prefix(after, alen, "unix:"))
                return hop_path(txt, after + 5, alen - 5, CONFIG_UNIX_PATH_MAX, out->path, why, n);
            if (has_prefix(after, alen, "inet:"))
                rest = after + 5; /* Postfix's lmtp:inet:host:port */
        } else if (plen_pre == 7 && memcmp(s, "maildir", 7) == 0) {
            out->transport = TRANSPORT_MAILDIR;
            return hop_path(txt, after, alen, CONFIG_PATH_MAX, out->path, why, n);
        } else if (all_letters(s, plen_pre) && alen > 0 && *after != ':' &&
                   !all_digits(after, alen)) {
            /* "name:something" that is not host:port (nor an unbracketed IPv6) */
            char t[SHOW_MAX + 8];

            show(t, sizeof(t), s, plen_pre);
            snprintf(why, n,
                     "\"%s\": unknown transport \"%s\"; expected smtp:, lmtp: or maildir:", txt, t);
            return -1;
        }
    }
    if (rest < end && rest[0] == '[') {
        const char *rb = memchr(rest, ']', (size_t)(end - rest));

        if (rb == NULL) {
            snprintf(why, n, "\"%s\" has no closing ']'; expected [host]:port, e.g. [::1]:25", txt);
            return -1;
        }
        h = rest + 1;
        hlen = (size_t)(rb - h);
        bracketed = true;
        if (rb + 1 < end) {
            if (rb[1] != ':') {
                snprintf(why, n, "\"%s\": unexpected text after ']'; expected [host]:port", txt);
                return -1;
            }
            p = rb + 2;
            plen = (size_t)(end - p);
        }
    } else {
        const char *c = end;

        while (c > rest && c[-1] != ':')
            c--;
        h = rest;
        hlen = (size_t)(end - rest);
        if (c > rest) {
            hlen = (size_t)(c - 1 - rest);
            p = c;
            plen = (size_t)(end - c);
        }
    }
    if (hop_host(txt, h, hlen, bracketed, out->host, why, n) < 0)
        return -1;
    port = defport;
    if (p != NULL &&
        (parse_digits(p, plen, &used, &port) < 0 || used != plen || port < 1 || port > 65535)) {
        char ptxt[SHOW_MAX + 8];

        show(ptxt, sizeof(ptxt), p, plen);
        snprintf(why, n, "\"%s\": port \"%s\" is not valid; expected a number in 1..65535", txt,
                 ptxt);
        return -1;
    }
    out->port = (uint16_t)port;
    return 0;
}

const char *
config_hostport_text(const struct config_hostport *hp, char *buf, size_t n)
{
    snprintf(buf, n, hp->v6 ? "[%s]:%u" : "%s:%u", hp->host, (unsigned)hp->port);
    return buf;
}

bool
config_hostport_same(const struct config_hostport *a, const struct config_hostport *b)
{
    return a->port == b->port && slice_eq_nocase(slice_make(a->host, strlen(a->host)), b->host);
}

int
config_nexthop_format(const struct config_nexthop *h, char *buf, size_t n)
{
    switch (h->transport) {
    case TRANSPORT_SMTP:
        return snprintf(buf, n, "smtp:[%s]:%u", h->host, (unsigned)h->port);
    case TRANSPORT_LMTP:
        if (h->path[0] != '\0')
            return snprintf(buf, n, "lmtp:unix:%s", h->path);
        return snprintf(buf, n, "lmtp:[%s]:%u", h->host, (unsigned)h->port);
    case TRANSPORT_MAILDIR:
        return snprintf(buf, n, "maildir:%s", h->path);
    }
    BUG_ON(1);
    return -1;
}

/* cfg_item_fn: append one next hop to the struct config_route_hops ctx. */
static int
hops_add(void *ctx, const char *s, size_t len, char *why, size_t n)
{
    struct config_route_hops *hl = ctx;
    struct config_nexthop hop;
    char txt[SHOW_MAX + 8];

    if (nexthop_parse(s, len, &hop, why, n) < 0)
        return -1;
    show(txt, sizeof(txt), s, len);
    for (unsigned i = 0; i < hl->nhops; i++) {
        if (memcmp(&hl->hop[i], &hop, sizeof(hop)) == 0) {
            snprintf(why, n, "\"%s\" is listed twice; expected each next hop once", txt);
            return -1;
        }
    }
    /* failover is for connections; a Maildir has none, so it never fails over */
    if (hl->nhops > 0 &&
        (hop.transport == TRANSPORT_MAILDIR || hl->hop[0].transport == TRANSPORT_MAILDIR)) {
        snprintf(why, n,
                 "\"%s\": a maildir next hop is alone in its list; expected either one "
                 "maildir:/path or smtp and lmtp next hops",
                 txt);
        return -1;
    }
    if (hl->nhops == CONFIG_MAX_HOPS) {
        snprintf(why, n, "too many next hops; expected at most %d", CONFIG_MAX_HOPS);
        return -1;
    }
    memcpy(&hl->hop[hl->nhops++], &hop, sizeof(hop));
    return 0;
}

/*
 * A domain pattern into out[CONFIG_DOMAIN_MAX], lower case: "example.com",
 * ".example.com" (its subdomains), or with star_ok "*".
 */
static int
domain_parse(const char *s, size_t len, bool star_ok, char *out, char *why, size_t n)
{
    char txt[SHOW_MAX + 8];
    size_t dot;

    show(txt, sizeof(txt), s, len);
    if (len == 0) {
        snprintf(why, n, "empty domain; expected example.com, or .example.com for its subdomains");
        return -1;
    }
    if (star_ok && len == 1 && s[0] == '*') {
        memcpy(out, "*", 2);
        return 0;
    }
    if (len > 2 && s[0] == '*' && s[1] == '.') {
        char sub[SHOW_MAX + 8];

        show(sub, sizeof(sub), s + 1, len - 1);
        snprintf(why, n, "\"%s\": write the subdomains of a domain as \"%s\"", txt, sub);
        return -1;
    }
    if (len >= CONFIG_DOMAIN_MAX) {
        snprintf(why, n, "\"%s\" is %zu octets long; expected at most %d", txt, len,
                 CONFIG_DOMAIN_MAX - 1);
        return -1;
    }
    dot = s[0] == '.';
    if (!hostname_ok(s + dot, len - dot)) {
        snprintf(why, n,
                 "\"%s\" is not a valid domain; expected example.com, or .example.com for its "
                 "subdomains%s",
                 txt, star_ok ? ", or * for any other domain" : "");
        return -1;
    }
    copy_lower(out, s, len);
    return 0;
}

/* cfg_item_fn: append one domain to ctx's relay_domains. */
static int
relay_domain_add(void *ctx, const char *s, size_t len, char *why, size_t n)
{
    struct ringmail_config *cfg = ctx;
    char d[CONFIG_DOMAIN_MAX] = "", txt[SHOW_MAX + 8];

    if (domain_parse(s, len, false, d, why, n) < 0)
        return -1;
    for (unsigned i = 0; i < cfg->nrelay_domains; i++) {
        if (strcmp(cfg->relay_domains[i], d) == 0) {
            show(txt, sizeof(txt), s, len);
            snprintf(why, n, "\"%s\" is listed twice; expected each domain once", txt);
            return -1;
        }
    }
    if (cfg->nrelay_domains == CONFIG_MAX_RELAY_DOMAINS) {
        snprintf(why, n, "too many domains; expected at most %d", CONFIG_MAX_RELAY_DOMAINS);
        return -1;
    }
    memcpy(cfg->relay_domains[cfg->nrelay_domains++], d, sizeof(d));
    return 0;
}

static void
network_format(const struct config_network *net, char *buf, size_t n)
{
    char a[64];

    BUG_ON(inet_ntop(net->v6 ? AF_INET6 : AF_INET, net->addr, a, sizeof(a)) == NULL);
    snprintf(buf, n, "%s/%u", a, (unsigned)net->prefix);
}

#define NET_FORMS "address/prefix, e.g. 10.0.0.0/8 or ::1/128"

/*
 * "a.b.c.d/prefix", "IPv6/prefix" or "[IPv6]/prefix" (Postfix's form); no
 * prefix means one host. Host bits past the prefix are cleared (Postfix
 * warns about them; the docs say so). An IPv4-mapped IPv6 network with a
 * prefix of 96 or more is stored as the IPv4 network it covers.
 */
static int
network_parse(const char *s, size_t len, struct config_network *out, char *why, size_t n)
{
    char txt[SHOW_MAX + 8], atxt[SHOW_MAX + 8], a[64];
    const char *slash = memchr(s, '/', len), *ap = s;
    size_t alen = slash != NULL ? (size_t)(slash - s) : len;
    unsigned max;
    uint64_t prefix;

    memset(out, 0, sizeof(*out));
    show(txt, sizeof(txt), s, len);
    if (len == 0) {
        snprintf(why, n, "empty network; expected %s", NET_FORMS);
        return -1;
    }
    if (alen >= 2 && ap[0] == '[' && ap[alen - 1] == ']') {
        ap++;
        alen -= 2;
    }
    if (alen == 0) {
        snprintf(why, n, "\"%s\" has no address; expected %s", txt, NET_FORMS);
        return -1;
    }
    show(atxt, sizeof(atxt), ap, alen);
    a[0] = '\0'; /* too long for any address: inet_pton("") fails below */
    if (alen < sizeof(a)) {
        memcpy(a, ap, alen);
        a[alen] = '\0';
    }
    if (memchr(ap, ':', alen) != NULL) {
        out->v6 = true;
        max = 128;
        if (inet_pton(AF_INET6, a, out->addr) != 1) {
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv6 address", txt, atxt);
            return -1;
        }
    } else {
        max = 32;
        if (inet_pton(AF_INET, a, out->addr) != 1) {
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv4 address", txt, atxt);
            return -1;
        }
        if (ap != s) {
            snprintf(why, n, "\"%s\": only an IPv6 address is written in brackets", txt);
            return -1;
        }
    }
    prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t plen = (size_t)(s + len - p), used;
        char ptxt[SHOW_MAX + 8];

        if (parse_digits(p, plen, &used, &prefix) < 0 || used != plen || prefix > max) {
            show(ptxt, sizeof(ptxt), p, plen);
            snprintf(why, n, "\"%s\": prefix \"/%s\" is not valid; expected /0../%u", txt, ptxt,
                     max);
            return -1;
        }
    }
    out->prefix = (uint8_t)prefix;
    if (out->v6 && out->prefix >= 96 &&
        memcmp(out->addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->v6 = false;
        out->prefix = (uint8_t)(out->prefix - 96);
    }
    for (unsigned bit = out->prefix; bit < 128; bit++)
        out->addr[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

/* cfg_item_fn: append one network to ctx, a struct config_networks. */
static int
network_add(void *ctx, const char *s, size_t len, char *why, size_t n)
{
    struct config_networks *nets = ctx;
    struct config_network net;
    char txt[SHOW_MAX + 8], canon[80];

    if (network_parse(s, len, &net, why, n) < 0)
        return -1;
    for (unsigned i = 0; i < nets->n; i++) {
        if (memcmp(&nets->a[i], &net, sizeof(net)) == 0) {
            show(txt, sizeof(txt), s, len);
            network_format(&net, canon, sizeof(canon));
            snprintf(why, n,
                     "\"%s\" is the same network as an earlier entry (%s); expected each "
                     "network once",
                     txt, canon);
            return -1;
        }
    }
    if (nets->n == CONFIG_MAX_NETWORKS) {
        snprintf(why, n, "too many networks; expected at most %d", CONFIG_MAX_NETWORKS);
        return -1;
    }
    nets->a[nets->n++] = net;
    return 0;
}

/*
 * Start route number cfg->nroutes for the domain pattern s[0..len); on
 * success the route is counted, with no hop yet, and *prefix_len octets of
 * "route \"domain\": " are in why, for the caller's hop messages to follow.
 */
static int
route_begin(struct ringmail_config *cfg, const char *s, size_t len, size_t *prefix_len, char *why,
            size_t n)
{
    struct config_route *rt;
    char d[CONFIG_DOMAIN_MAX] = "", txt[SHOW_MAX + 8];
    int o;

    if (domain_parse(s, len, true, d, why, n) < 0)
        return -1;
    show(txt, sizeof(txt), d, strlen(d));
    for (unsigned i = 0; i < cfg->nroutes; i++) {
        if (strcmp(cfg->routes[i].domain, d) == 0) {
            snprintf(why, n, "route \"%s\" is listed twice; expected each domain once", txt);
            return -1;
        }
    }
    if (cfg->nroutes == CONFIG_MAX_ROUTES) {
        snprintf(why, n, "too many routes; expected at most %d", CONFIG_MAX_ROUTES);
        return -1;
    }
    rt = &cfg->routes[cfg->nroutes++];
    memset(rt, 0, sizeof(*rt));
    memcpy(rt->domain, d, sizeof(d));
    o = snprintf(why, n, "route \"%s\": ", txt);
    BUG_ON(o < 0 || (size_t)o >= n);
    *prefix_len = (size_t)o;
    return 0;
}

/* The route just begun got its hops: it must have at least one. */
static int
route_end(const struct ringmail_config *cfg, size_t prefix_len, char *why, size_t n)
{
    if (cfg->routes[cfg->nroutes - 1].hops.nhops > 0)
        return 0;
    snprintf(why + prefix_len, n - prefix_len, "no next hop; expected at least one of %s",
             HOP_FORMS);
    return -1;
}

/* -o routes=dom=hop hop,dom=hop: commas between routes, blanks between hops. */
static int
routes_parse_text(struct ringmail_config *cfg, const char *s, size_t len, char *why, size_t n)
{
    size_t start = 0;

    memset(cfg->routes, 0, sizeof(cfg->routes));
    cfg->nroutes = 0;
    for (size_t i = 0; i <= len; i++) {
        const char *e = s + start, *eq;
        size_t elen = i - start, pl;

        if (i < len && s[i] != ',')
            continue;
        start = i + 1;
        while (elen > 0 && (*e == ' ' || *e == '\t')) {
            e++;
            elen--;
        }
        if (elen == 0)
            continue;
        eq = memchr(e, '=', elen);
        if (eq == NULL) {
            char txt[SHOW_MAX + 8];

            show(txt, sizeof(txt), e, elen);
            snprintf(why, n,
                     "\"%s\" has no '='; expected domain=next hop [next hop...], e.g. "
                     "example.com=[192.0.2.25]:25",
                     txt);
            return -1;
        }
        if (route_begin(cfg, e, (size_t)(eq - e), &pl, why, n) < 0)
            return -1;
        if (split_each(eq + 1, (size_t)(e + elen - eq - 1), HOP_SEPS, hops_add,
                       &cfg->routes[cfg->nroutes - 1].hops, why + pl, n - pl) < 0)
            return -1;
        if (route_end(cfg, pl, why, n) < 0)
            return -1;
    }
    return 0;
}

/* The list keys other than listen: their item parser, and how to empty them. */
static bool
is_item_list(const struct cfg_key *k)
{
    return k->type == CT_NEXTHOPS || k->type == CT_DOMAINS || k->type == CT_NETWORKS;
}

static const char *
item_expect(const struct cfg_key *k)
{
    switch (k->type) {
    case CT_NEXTHOPS:
        return "a next hop";
    case CT_DOMAINS:
        return "a domain";
    case CT_NETWORKS:
        return "a network";
    default:
        break;
    }
    BUG_ON(1);
    return "";
}

/* Empty k's list in cfg; *ctx gets what its item function appends to. */
static cfg_item_fn *
list_clear(struct ringmail_config *cfg, const struct cfg_key *k, void **ctx)
{
    switch (k->type) {
    case CT_NEXTHOPS:
        memset(field(cfg, k), 0, k->size);
        *ctx = field(cfg, k);
        return hops_add;
    case CT_DOMAINS:
        memset(cfg->relay_domains, 0, sizeof(cfg->relay_domains));
        cfg->nrelay_domains = 0;
        *ctx = cfg;
        return relay_domain_add;
    case CT_NETWORKS:
        memset(field(cfg, k), 0, k->size);
        *ctx = field(cfg, k);
        return network_add;
    default:
        break;
    }
    BUG_ON(1);
    return NULL;
}

/* Parse text s[0..len) for key k into *cfg (not the listen key's sequence form). */
static int
key_set_text(struct ringmail_config *cfg, const struct cfg_key *k, const char *s, size_t len,
             char *why, size_t n)
{
    uint64_t v;
    unsigned e;

    if (memchr(s, '\0', len) != NULL) {
        snprintf(why, n, "value contains a NUL octet; expected %s", type_expect(k));
        return -1;
    }
    switch (k->type) {
    case CT_STRING:
    case CT_HOSTNAME:
        if (parse_string(k, s, len, why, n) < 0)
            return -1;
        set_str(cfg, k, s, len);
        return 0;
    case CT_UINT:
    case CT_SIZE:
    case CT_DURATION:
        if (parse_number(k, s, len, &v, why, n) < 0)
            return -1;
        set_num(cfg, k, v);
        return 0;
    case CT_ENUM:
        if (parse_enum(k, s, len, &e, why, n) < 0)
            return -1;
        set_num(cfg, k, e);
        return 0;
    case CT_LISTEN: {
        struct listen_list l = { .n = 0 };

        if (listen_parse_text(&l, s, len, why, n) < 0)
            return -1;
        return listen_commit(cfg, k, &l, why, n);
    }
    case CT_HOSTPORT: {
        struct listen_list l = { .n = 0 };

        BUG_ON(k->size != sizeof(struct config_hostport));
        if (memchr(s, ',', len) != NULL) {
            snprintf(why, n, "a list; expected one host:port");
            return -1;
        }
        if (len > 0 && listen_add(&l, s, len, why, n) < 0)
            return -1;
        memset(field(cfg, k), 0, k->size);
        if (l.n == 1)
            memcpy(field(cfg, k), &l.a[0], k->size);
        return 0;
    }
    case CT_BOOL: {
        bool b;

        if (parse_bool(s, len, &b, why, n) < 0)
            return -1;
        BUG_ON(k->size != sizeof(bool));
        memcpy(field(cfg, k), &b, sizeof(b));
        return 0;
    }
    case CT_NEXTHOPS:
    case CT_DOMAINS:
    case CT_NETWORKS: {
        void *ctx;
        cfg_item_fn *add = list_clear(cfg, k, &ctx);

        return split_each(s, len, LIST_SEPS, add, ctx, why, n);
    }
    case CT_ROUTES:
        return routes_parse_text(cfg, s, len, why, n);
    }
    BUG_ON(1);
    return -1;
}

/* ---- public API ---- */

static void
default_hostname(struct ringmail_config *cfg, const struct cfg_key *k)
{
    char name[CONFIG_NAME_MAX], why[WHY_MAX];

    if (gethostname(name, sizeof(name)) == 0) {
        name[sizeof(name) - 1] = '\0';
        if (parse_string(k, name, strlen(name), why, sizeof(why)) == 0) {
            set_str(cfg, k, name, strlen(name));
            return;
        }
    }
    set_str(cfg, k, "localhost", 9);
}

void
config_defaults(struct ringmail_config *cfg)
{
    char why[WHY_MAX];

    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];

        if (k->flags & CF_HOSTNAME) {
            default_hostname(cfg, k);
        } else if (k->type == CT_BOOL) {
            bool b = k->def != 0;

            memcpy(field(cfg, k), &b, sizeof(b));
        } else if (k->sdef != NULL)
            BUG_ON(key_set_text(cfg, k, k->sdef, strlen(k->sdef), why, sizeof(why)) < 0);
        else
            set_num(cfg, k, k->def);
    }
    /* the maildir_dir row filled the path; the rest of the built-in route */
    cfg->default_route.hop[0].transport = TRANSPORT_MAILDIR;
    cfg->default_route.nhops = 1;
}

int
config_set(struct ringmail_config *cfg, const char *kv, char *err, size_t errlen)
{
    struct ringmail_config tmp = *cfg;
    const char *eq = strchr(kv, '=');
    char name[SHOW_MAX + 8], why[WHY_MAX];
    const struct cfg_key *k;

    if (eq == NULL || eq == kv) {
        show(name, sizeof(name), kv, strlen(kv));
        snprintf(err, errlen, "-o %s: expected key=value", name);
        return -1;
    }
    show(name, sizeof(name), kv, (size_t)(eq - kv));
    k = key_find(kv, (size_t)(eq - kv));
    if (k == NULL) {
        unknown_key(why, sizeof(why), kv, (size_t)(eq - kv));
        snprintf(err, errlen, "-o %s: %s", name, why);
        return -1;
    }
    if (key_set_text(&tmp, k, eq + 1, strlen(eq + 1), why, sizeof(why)) < 0) {
        snprintf(err, errlen, "-o %s: %s", k->name, why);
        return -1;
    }
    *cfg = tmp;
    return 0;
}

/* ---- YAML ---- */

struct yload {
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
};

static size_t
node_line(const yaml_node_t *node)
{
    return node->start_mark.line + 1;
}

static const char *
node_kind(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_NO_NODE:
        break;
    }
    return "nothing";
}

/* A plain empty, "~" or "null" scalar: YAML's null, which no key accepts. */
static bool
node_is_null(const yaml_node_t *node)
{
    struct slice v = { (const char *)node->data.scalar.value, node->data.scalar.length };

    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return v.len == 0 || (v.len == 1 && v.p[0] == '~') || slice_eq_nocase(v, "null");
}

static int
yerr(const struct yload *y, size_t line, const char *key, const char *why)
{
    snprintf(y->err, y->errlen, "%s:%zu: key '%s': %s", y->path, line, key, why);
    return -1;
}

/* A plain non-null scalar without NUL octets, else an error naming what it is. */
static const char *
yload_scalar(const yaml_node_t *node, size_t *len)
{
    if (node->type != YAML_SCALAR_NODE || node_is_null(node) ||
        memchr(node->data.scalar.value, '\0', node->data.scalar.length) != NULL)
        return NULL;
    *len = node->data.scalar.length;
    return (const char *)node->data.scalar.value;
}

/* One listen entry written as {address: host:port, proxy_protocol: true|false}. */
static int
yload_listen_map(const struct yload *y, struct listen_list *l, const struct cfg_key *k,
                 const yaml_node_t *map)
{
    const yaml_node_t *addr = NULL;
    int proxy = -1;
    char why[WHY_MAX];

    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        const yaml_node_t *kn = yaml_document_get_node(y->doc, pr->key);
        const yaml_node_t *vn = yaml_document_get_node(y->doc, pr->value);
        const char *ks, *vs;
        size_t kl, vl;

        BUG_ON(kn == NULL || vn == NULL);
        ks = yload_scalar(kn, &kl);
        vs = yload_scalar(vn, &vl);
        if (ks != NULL && slice_eq_nocase(slice_make(ks, kl), "address") && addr == NULL) {
            addr = vn;
        } else if (ks != NULL && slice_eq_nocase(slice_make(ks, kl), "proxy_protocol") &&
                   proxy < 0) {
            bool b;

            if (vs == NULL) {
                snprintf(why, sizeof(why), "proxy_protocol is %s; expected true or false",
                         node_kind(vn));
                return yerr(y, node_line(vn), k->name, why);
            }
            if (parse_bool(vs, vl, &b, why, sizeof(why)) < 0)
                return yerr(y, node_line(vn), k->name, why);
            proxy = b;
        } else {
            snprintf(why, sizeof(why),
                     "an entry has an unknown or repeated field; expected address and "
                     "optionally proxy_protocol");
            return yerr(y, node_line(kn), k->name, why);
        }
    }
    if (addr == NULL) {
        snprintf(why, sizeof(why), "an entry has no address; expected address: host:port");
        return yerr(y, node_line(map), k->name, why);
    }
    const char *as;
    size_t al;

    as = yload_scalar(addr, &al);
    if (as == NULL) {
        snprintf(why, sizeof(why), "the address is %s; expected host:port",
                 addr->type == YAML_SCALAR_NODE ? "empty" : node_kind(addr));
        return yerr(y, node_line(addr), k->name, why);
    }
    if (listen_add(l, as, al, why, sizeof(why)) < 0)
        return yerr(y, node_line(addr), k->name, why);
    l->a[l->n - 1].proxy = (int8_t)proxy;
    return 0;
}

static int
yload_listen_seq(const struct yload *y, struct ringmail_config *cfg, const struct cfg_key *k,
                 const yaml_node_t *seq)
{
    struct listen_list l = { .n = 0 };
    char why[WHY_MAX];

    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(y->doc, *it);

        BUG_ON(item == NULL);
        if (item->type == YAML_MAPPING_NODE) {
            if (yload_listen_map(y, &l, k, item) < 0)
                return -1;
            continue;
        }
        if (item->type != YAML_SCALAR_NODE || node_is_null(item)) {
            snprintf(why, sizeof(why),
                     "an entry is %s; expected host:port or {address: host:port, "
                     "proxy_protocol: true|false}",
                     item->type == YAML_SCALAR_NODE ? "empty" : node_kind(item));
            return yerr(y, node_line(item), k->name, why);
        }
        if (memchr(item->data.scalar.value, '\0', item->data.scalar.length) != NULL) {
            snprintf(why, sizeof(why), "an entry contains a NUL octet; expected host:port");
            return yerr(y, node_line(item), k->name, why);
        }
        if (listen_add(&l, (const char *)item->data.scalar.value, item->data.scalar.length, why,
                       sizeof(why)) < 0)
            return yerr(y, node_line(item), k->name, why);
    }
    if (listen_commit(cfg, k, &l, why, sizeof(why)) < 0)
        return yerr(y, node_line(seq), k->name, why);
    return 0;
}

/* A sequence for a list key other than listen: one item per entry, never split. */
static int
yload_list_seq(const struct yload *y, struct ringmail_config *cfg, const struct cfg_key *k,
               const yaml_node_t *seq)
{
    char why[WHY_MAX];
    void *ctx;
    cfg_item_fn *add = list_clear(cfg, k, &ctx);

    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(y->doc, *it);

        BUG_ON(item == NULL);
        if (item->type != YAML_SCALAR_NODE || node_is_null(item)) {
            snprintf(why, sizeof(why), "an entry is %s; expected %s",
                     item->type == YAML_SCALAR_NODE ? "empty" : node_kind(item), item_expect(k));
            return yerr(y, node_line(item), k->name, why);
        }
        if (memchr(item->data.scalar.value, '\0', item->data.scalar.length) != NULL) {
            snprintf(why, sizeof(why), "an entry contains a NUL octet; expected %s",
                     item_expect(k));
            return yerr(y, node_line(item), k->name, why);
        }
        if (add(ctx, (const char *)item->data.scalar.value, item->data.scalar.length, why,
                sizeof(why)) < 0)
            return yerr(y, node_line(item), k->name, why);
    }
    return 0;
}

/*
 * The next hops of one route: a scalar (hops separated by commas and/or
 * blanks) or a sequence (one hop per entry). Errors go after the
 * "route \"domain\": " prefix already in why[0..pl).
 */
static int
yload_route_hops(const struct yload *y, struct config_route_hops *hl, const yaml_node_t *kn,
                 const yaml_node_t *vn, char *why, size_t n, size_t pl)
{
    if (vn->type == YAML_SCALAR_NODE && !node_is_null(vn)) {
        if (memchr(vn->data.scalar.value, '\0', vn->data.scalar.length) != NULL) {
            snprintf(why + pl, n - pl, "value contains a NUL octet; expected a next hop");
            return yerr(y, node_line(vn), "routes", why);
        }
        if (split_each((const char *)vn->data.scalar.value, vn->data.scalar.length, LIST_SEPS,
                       hops_add, hl, why + pl, n - pl) < 0)
            return yerr(y, node_line(vn), "routes", why);
        return 0;
    }
    if (vn->type != YAML_SEQUENCE_NODE) {
        if (vn->type == YAML_SCALAR_NODE)
            snprintf(why + pl, n - pl, "no next hop; expected at least one of %s", HOP_FORMS);
        else
            snprintf(why + pl, n - pl,
                     "the next hops are %s; expected a next hop or a list of next hops",
                     node_kind(vn));
        return yerr(y, node_line(kn), "routes", why);
    }
    for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top;
         it++) {
        const yaml_node_t *item = yaml_document_get_node(y->doc, *it);

        BUG_ON(item == NULL);
        if (item->type != YAML_SCALAR_NODE || node_is_null(item)) {
            snprintf(why + pl, n - pl, "an entry is %s; expected a next hop",
                     item->type == YAML_SCALAR_NODE ? "empty" : node_kind(item));
            return yerr(y, node_line(item), "routes", why);
        }
        if (memchr(item->data.scalar.value, '\0', item->data.scalar.length) != NULL) {
            snprintf(why + pl, n - pl, "an entry contains a NUL octet; expected a next hop");
            return yerr(y, node_line(item), "routes", why);
        }
        if (hops_add(hl, (const char *)item->data.scalar.value, item->data.scalar.length, why + pl,
                     n - pl) < 0)
            return yerr(y, node_line(item), "routes", why);
    }
    return 0;
}

/* routes as a mapping: domain -> next hop(s). Domain errors point at the domain's line. */
static int
yload_routes(const struct yload *y, struct ringmail_config *cfg, const yaml_node_t *map)
{
    char why[WHY_MAX];

    memset(cfg->routes, 0, sizeof(cfg->routes));
    cfg->nroutes = 0;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        const yaml_node_t *kn = yaml_document_get_node(y->doc, pr->key);
        const yaml_node_t *vn = yaml_document_get_node(y->doc, pr->value);
        size_t pl;

        BUG_ON(kn == NULL || vn == NULL);
        if (kn->type != YAML_SCALAR_NODE || node_is_null(kn)) {
            snprintf(why, sizeof(why), "a domain is %s; expected a domain, .domain or *",
                     kn->type == YAML_SCALAR_NODE ? "empty" : node_kind(kn));
            return yerr(y, node_line(kn), "routes", why);
        }
        if (memchr(kn->data.scalar.value, '\0', kn->data.scalar.length) != NULL) {
            snprintf(why, sizeof(why), "a domain contains a NUL octet; expected a domain");
            return yerr(y, node_line(kn), "routes", why);
        }
        if (route_begin(cfg, (const char *)kn->data.scalar.value, kn->data.scalar.length, &pl, why,
                        sizeof(why)) < 0)
            return yerr(y, node_line(kn), "routes", why);
        if (yload_route_hops(y, &cfg->routes[cfg->nroutes - 1].hops, kn, vn, why, sizeof(why), pl) <
            0)
            return -1;
        if (route_end(cfg, pl, why, sizeof(why)) < 0)
            return yerr(y, node_line(kn), "routes", why);
    }
    return 0;
}

static int
yload_mapping(const struct yload *y, struct ringmail_config *cfg, const yaml_node_t *root)
{
    size_t first_line[NKEYS] = { 0 };
    char why[WHY_MAX], name[SHOW_MAX + 8];

    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
         pr++) {
        const yaml_node_t *kn = yaml_document_get_node(y->doc, pr->key);
        const yaml_node_t *vn = yaml_document_get_node(y->doc, pr->value);
        const struct cfg_key *k;
        size_t ki;

        BUG_ON(kn == NULL || vn == NULL);
        if (kn->type != YAML_SCALAR_NODE) {
            snprintf(y->err, y->errlen, "%s:%zu: a key is %s; expected a key name", y->path,
                     node_line(kn), node_kind(kn));
            return -1;
        }
        const char *kp = (const char *)kn->data.scalar.value;
        size_t kl = kn->data.scalar.length;

        show(name, sizeof(name), kp, kl);
        k = key_find(kp, kl);
        if (k == NULL) {
            unknown_key(why, sizeof(why), kp, kl);
            return yerr(y, node_line(kn), name, why);
        }
        ki = (size_t)(k - cfg_keys);
        if (first_line[ki] != 0) {
            snprintf(why, sizeof(why),
                     "duplicate key (first set on line %zu); expected each key "
                     "once",
                     first_line[ki]);
            return yerr(y, node_line(kn), k->name, why);
        }
        first_line[ki] = node_line(kn);

        if (k->type == CT_LISTEN && vn->type == YAML_SEQUENCE_NODE) {
            if (yload_listen_seq(y, cfg, k, vn) < 0)
                return -1;
            continue;
        }
        if (is_item_list(k) && vn->type == YAML_SEQUENCE_NODE) {
            if (yload_list_seq(y, cfg, k, vn) < 0)
                return -1;
            continue;
        }
        if (k->type == CT_ROUTES && vn->type == YAML_MAPPING_NODE) {
            if (yload_routes(y, cfg, vn) < 0)
                return -1;
            continue;
        }
        if (vn->type != YAML_SCALAR_NODE) {
            snprintf(why, sizeof(why), "the value is %s; expected %s", node_kind(vn),
                     type_expect(k));
            return yerr(y, node_line(kn), k->name, why);
        }
        if (node_is_null(vn)) {
            snprintf(why, sizeof(why), "no value; expected %s", type_expect(k));
            return yerr(y, node_line(kn), k->name, why);
        }
        if (key_set_text(cfg, k, (const char *)vn->data.scalar.value, vn->data.scalar.length, why,
                         sizeof(why)) < 0)
            return yerr(y, node_line(vn), k->name, why);
    }
    return 0;
}

static int
yload_document(const struct yload *y, struct ringmail_config *cfg)
{
    const yaml_node_t *root = yaml_document_get_root_node(y->doc);

    if (root == NULL || node_is_null(root))
        return 0; /* an empty file: the defaults stand */
    if (root->type != YAML_MAPPING_NODE) {
        snprintf(y->err, y->errlen, "%s:%zu: the top level is %s; expected a mapping of keys",
                 y->path, node_line(root), node_kind(root));
        return -1;
    }
    return yload_mapping(y, cfg, root);
}

static void
yaml_syntax_error(const yaml_parser_t *parser, const char *path, char *err, size_t errlen)
{
    size_t line = parser->problem_mark.line + 1;

    if (parser->error == YAML_MEMORY_ERROR) {
        snprintf(err, errlen, "%s: out of memory while reading YAML", path);
        return;
    }
    if (parser->error == YAML_READER_ERROR)
        line = parser->mark.line + 1; /* the reader sets no problem_mark */
    if (parser->context != NULL && parser->context_mark.line + 1 != line)
        snprintf(err, errlen, "%s:%zu: YAML syntax error: %s %s started on line %zu", path, line,
                 parser->problem, parser->context, parser->context_mark.line + 1);
    else if (parser->context != NULL)
        snprintf(err, errlen, "%s:%zu: YAML syntax error: %s %s", path, line, parser->problem,
                 parser->context);
    else
        snprintf(err, errlen, "%s:%zu: YAML syntax error: %s", path, line,
                 parser->problem != NULL ? parser->problem : "unknown problem");
}

int
config_load_file(struct ringmail_config *cfg, const char *path, char *err, size_t errlen)
{
    struct ringmail_config tmp = *cfg;
    yaml_parser_t parser;
    yaml_document_t doc;
    const yaml_node_t *second;
    struct yload y = { .path = path, .doc = &doc, .err = err, .errlen = errlen };
    struct stat st;
    size_t plen = strlen(path);
    FILE *f;
    int rc = -1;

    if (plen >= sizeof(cfg->file)) {
        snprintf(err, errlen, "%.64s...: cannot open: path is longer than %zu octets", path,
                 sizeof(cfg->file) - 1);
        return -1;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == -1) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out_file;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(EISDIR));
        goto out_file;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "%s: out of memory while reading YAML", path);
        goto out_file;
    }
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_syntax_error(&parser, path, err, errlen);
        goto out_parser;
    }
    rc = yload_document(&y, &tmp);
    yaml_document_delete(&doc);
    if (rc < 0)
        goto out_parser;

    /* One document only: a second one would be silently ignored otherwise. */
    rc = -1;
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_syntax_error(&parser, path, err, errlen);
        goto out_parser;
    }
    second = yaml_document_get_root_node(&doc);
    if (second != NULL) {
        snprintf(err, errlen, "%s:%zu: a second YAML document; expected one document", path,
                 node_line(second));
        yaml_document_delete(&doc);
        goto out_parser;
    }
    yaml_document_delete(&doc);

    memset(tmp.file, 0, sizeof(tmp.file));
    memcpy(tmp.file, path, plen);
    *cfg = tmp;
    rc = 0;
out_parser:
    yaml_parser_delete(&parser);
out_file:
    fclose(f);
    return rc;
}

static const char *
listen_key_name(unsigned kind)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (cfg_keys[i].type == CT_LISTEN && cfg_keys[i].def == kind)
            return cfg_keys[i].name;
    }
    BUG_ON(1);
    return "";
}

int
config_read(struct ringmail_config *cfg, const char *file, char *const *ov, int nov, char *err,
            size_t errlen)
{
    config_defaults(cfg);
    if (file != NULL && config_load_file(cfg, file, err, errlen) < 0)
        return -1;
    for (int i = 0; i < nov; i++) {
        if (config_set(cfg, ov[i], err, errlen) < 0)
            return -1;
    }
    return config_finish(cfg, err, errlen);
}

int
config_finish(struct ringmail_config *cfg, char *err, size_t errlen)
{
    char a[32], b[32], t[CONFIG_HOSTPORT_TEXT_MAX];

    if (cfg->nlisten == 0) {
        snprintf(err, errlen, "key 'listen': no address; expected at least one host:port");
        return -1;
    }
    if (cfg->max_line_length != 0 && cfg->message_size_limit != 0 &&
        cfg->max_line_length > cfg->message_size_limit) {
        fmt_size(a, sizeof(a), cfg->max_line_length);
        fmt_size(b, sizeof(b), cfg->message_size_limit);
        snprintf(err, errlen,
                 "key 'max_line_length': %s is larger than message_size_limit (%s); "
                 "expected at most message_size_limit",
                 a, b);
        return -1;
    }
    if (cfg->minimal_backoff_time > cfg->maximal_backoff_time) {
        fmt_duration(a, sizeof(a), cfg->minimal_backoff_time);
        fmt_duration(b, sizeof(b), cfg->maximal_backoff_time);
        snprintf(err, errlen,
                 "key 'minimal_backoff_time': %s is longer than maximal_backoff_time (%s); "
                 "expected at most maximal_backoff_time",
                 a, b);
        return -1;
    }
    if (cfg->relayhost.nhops > 0) {
        for (unsigned i = 0; i < cfg->nroutes; i++) {
            if (strcmp(cfg->routes[i].domain, "*") == 0) {
                snprintf(err, errlen,
                         "key 'relayhost': never used, since routes has a \"*\" route; "
                         "expected either relayhost or a \"*\" route");
                return -1;
            }
        }
    }
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        const struct config_hostport *la = &cfg->listen[i];

        for (unsigned j = 0; j < i; j++) {
            const struct config_hostport *lb = &cfg->listen[j];

            if (config_hostport_same(la, lb)) {
                snprintf(err, errlen,
                         "key '%s': %s is also in '%s'; expected each address in one listen key",
                         listen_key_name(la->kind), config_hostport_text(la, t, sizeof(t)),
                         listen_key_name(lb->kind));
                return -1;
            }
        }
        if (config_listen_proxy(cfg, la) && cfg->proxy_trusted_networks.n == 0) {
            snprintf(err, errlen,
                     "key 'proxy_trusted_networks': empty while %s takes the PROXY protocol; "
                     "expected the load balancers' networks",
                     config_hostport_text(la, t, sizeof(t)));
            return -1;
        }
        if (la->kind == LISTEN_SMTPS && cfg->tls_cert_file[0] == '\0') {
            snprintf(err, errlen,
                     "key 'smtps_listen': implicit TLS needs a certificate; expected "
                     "tls_cert_file and tls_key_file to be set");
            return -1;
        }
        if (la->kind != LISTEN_SMTP && cfg->smtpd_sasl_password_file[0] == '\0') {
            snprintf(err, errlen,
                     "key '%s': submission requires AUTH; expected smtpd_sasl_password_file "
                     "to be set",
                     listen_key_name(la->kind));
            return -1;
        }
    }
    if (cfg->admin_listen.port != 0) {
        const struct config_hostport *ad = &cfg->admin_listen;

        for (unsigned i = 0; i < cfg->nlisten; i++) {
            const struct config_hostport *la = &cfg->listen[i];

            if (config_hostport_same(la, ad)) {
                snprintf(err, errlen,
                         "key 'admin_listen': %s is also in '%s'; expected an address of its own",
                         config_hostport_text(ad, t, sizeof(t)), listen_key_name(la->kind));
                return -1;
            }
        }
    }
    if ((cfg->tls_cert_file[0] == '\0') != (cfg->tls_key_file[0] == '\0')) {
        snprintf(err, errlen, "key '%s': set without %s; expected both or neither",
                 cfg->tls_cert_file[0] ? "tls_cert_file" : "tls_key_file",
                 cfg->tls_cert_file[0] ? "tls_key_file" : "tls_cert_file");
        return -1;
    }
    if (cfg->smtpd_tls_security_level == SMTPD_TLS_ENCRYPT && cfg->tls_cert_file[0] == '\0') {
        snprintf(err, errlen,
                 "key 'smtpd_tls_security_level': encrypt needs a certificate; expected "
                 "tls_cert_file and tls_key_file to be set");
        return -1;
    }
    if (cfg->smtpd_greeting_delay >= cfg->smtpd_timeout) {
        fmt_duration(a, sizeof(a), cfg->smtpd_greeting_delay);
        fmt_duration(b, sizeof(b), cfg->smtpd_timeout);
        snprintf(err, errlen,
                 "key 'smtpd_greeting_delay': %s is not shorter than smtpd_timeout "
                 "(%s); expected less than smtpd_timeout",
                 a, b);
        return -1;
    }
    return 0;
}

/* A YAML double-quoted scalar; values are checked printable UTF-8 on the way in. */
static void
dump_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* A list of hops as YAML sequence entries, indent spaces in. */
static void
dump_hops(FILE *f, const struct config_route_hops *hl, int indent)
{
    char text[CONFIG_NEXTHOP_TEXT_MAX];

    for (unsigned j = 0; j < hl->nhops; j++) {
        BUG_ON(config_nexthop_format(&hl->hop[j], text, sizeof(text)) >= (int)sizeof(text));
        fprintf(f, "%*s- ", indent, "");
        dump_quoted(f, text);
        fputc('\n', f);
    }
}

void
config_dump(const struct ringmail_config *cfg, void *file)
{
    FILE *f = file;
    char buf[64], net[80];

    if (cfg->file[0] != '\0') {
        show(buf, sizeof(buf), cfg->file, strlen(cfg->file));
        fprintf(f, "# ringmail: effective configuration (%s, then -o)\n", buf);
    } else {
        fprintf(f, "# ringmail: effective configuration (built-in defaults, then -o)\n");
    }
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];

        switch (k->type) {
        case CT_LISTEN: {
            unsigned nk = 0;

            for (unsigned j = 0; j < cfg->nlisten; j++)
                nk += cfg->listen[j].kind == k->def;
            fprintf(f, "%s:%s\n", k->name, nk == 0 ? " []" : "");
            for (unsigned j = 0; j < cfg->nlisten; j++) {
                const struct config_hostport *hp = &cfg->listen[j];

                if (hp->kind != k->def)
                    continue;
                fprintf(f, hp->v6 ? "  - %s\"[%s]:%u\"" : "  - %s\"%s:%u\"",
                        hp->proxy < 0 ? "" : "{ address: ", hp->host, (unsigned)hp->port);
                if (hp->proxy >= 0)
                    fprintf(f, ", proxy_protocol: %s }", hp->proxy ? "true" : "false");
                fputc('\n', f);
            }
            break;
        }
        case CT_HOSTPORT: {
            const struct config_hostport *hp = cfield(cfg, k);

            if (hp->port == 0)
                fprintf(f, "%s: \"\"\n", k->name);
            else
                fprintf(f, hp->v6 ? "%s: \"[%s]:%u\"\n" : "%s: \"%s:%u\"\n", k->name, hp->host,
                        (unsigned)hp->port);
            break;
        }
        case CT_BOOL: {
            bool b;

            memcpy(&b, cfield(cfg, k), sizeof(b));
            fprintf(f, "%s: %s\n", k->name, b ? "true" : "false");
            break;
        }
        case CT_NEXTHOPS: {
            const struct config_route_hops *hl = cfield(cfg, k);

            fprintf(f, "%s:%s\n", k->name, hl->nhops == 0 ? " []" : "");
            dump_hops(f, hl, 2);
            break;
        }
        case CT_ROUTES:
            fprintf(f, "%s:%s\n", k->name, cfg->nroutes == 0 ? " {}" : "");
            for (unsigned j = 0; j < cfg->nroutes; j++) {
                fprintf(f, "  ");
                dump_quoted(f, cfg->routes[j].domain);
                fprintf(f, ":\n");
                dump_hops(f, &cfg->routes[j].hops, 4);
            }
            break;
        case CT_DOMAINS:
            fprintf(f, "%s:%s\n", k->name, cfg->nrelay_domains == 0 ? " []" : "");
            for (unsigned j = 0; j < cfg->nrelay_domains; j++) {
                fprintf(f, "  - ");
                dump_quoted(f, cfg->relay_domains[j]);
                fputc('\n', f);
            }
            break;
        case CT_NETWORKS: {
            const struct config_networks *nets = cfield(cfg, k);

            fprintf(f, "%s:%s\n", k->name, nets->n == 0 ? " []" : "");
            for (unsigned j = 0; j < nets->n; j++) {
                network_format(&nets->a[j], net, sizeof(net));
                fprintf(f, "  - \"%s\"\n", net);
            }
            break;
        }
        case CT_STRING:
        case CT_HOSTNAME:
            fprintf(f, "%s: ", k->name);
            dump_quoted(f, cfield(cfg, k));
            fputc('\n', f);
            break;
        case CT_ENUM: {
            uint64_t v = get_num(cfg, k);
            size_t nn = 0;

            while (k->names[nn] != NULL)
                nn++;
            BUG_ON(v >= nn);
            fprintf(f, "%s: %s\n", k->name, k->names[v]);
            break;
        }
        case CT_UINT:
        case CT_SIZE:
        case CT_DURATION:
            fmt_num(k, buf, sizeof(buf), get_num(cfg, k));
            fprintf(f, "%s: %s\n", k->name, buf);
            break;
        }
    }
}
