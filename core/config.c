/*
 * config.c: the configuration keys, their defaults, the YAML loader (libyaml
 * document API), -o key=value, cross-key checks and the YAML dump.
 *
 * One table, cfg_keys[], drives everything: a key is added by adding a field
 * to struct ringmail_config and a row here. Loading and -o work on a copy of
 * the configuration that replaces the caller's only when everything parsed,
 * so a failed load or override leaves *cfg as it was.
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
    CT_LISTEN,     /* the listen[] / nlisten pair */
};

enum cfg_flag {
    CF_ZERO_OK = 1u << 0,  /* 0 means "no limit" and skips min */
    CF_HOSTNAME = 1u << 1, /* default: gethostname(), else "localhost" */
};

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t off;  /* offsetof(struct ringmail_config, field) */
    size_t size; /* sizeof the field: string capacity, or the integer width */
    uint64_t def;
    uint64_t min;
    uint64_t max;
    const char *sdef;         /* default text of CT_STRING and CT_LISTEN keys */
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
_Static_assert(sizeof(enum config_bare_newline) == sizeof(unsigned), "enum width");

static const char *const durability_names[] = { "fsync", "none", NULL };
static const char *const bare_newline_names[] = { "normalize", "reject", NULL };

/* The order here is the order of config_dump(). */
static const struct cfg_key cfg_keys[] = {
    { .name = "listen", .type = CT_LISTEN, FIELD(listen), .sdef = "127.0.0.1:2525" },
    { .name = "myhostname", .type = CT_HOSTNAME, FIELD(myhostname), .flags = CF_HOSTNAME },
    { .name = "spool_dir", .type = CT_STRING, FIELD(spool_dir), .sdef = "./var/spool" },
    { .name = "durability",
      .type = CT_ENUM,
      FIELD(durability),
      .def = DURABILITY_FSYNC,
      .names = durability_names },
    { .name = "reactors", .type = CT_UINT, FIELD(reactors), .def = 0, .min = 0, .max = 256 },
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
    { .name = "smtpd_greeting_delay",
      .type = CT_DURATION,
      FIELD(smtpd_greeting_delay),
      .def = 0,
      .min = 0,
      .max = 60 * SEC },
    { .name = "spool_segment_size",
      .type = CT_SIZE,
      FIELD(spool_segment_size),
      .def = 64 * MiB,
      .min = MiB,
      .max = 4 * GiB },
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

static int
parse_string(const struct cfg_key *k, const char *s, size_t len, char *why, size_t n)
{
    char txt[SHOW_MAX + 8];

    if (len == 0) {
        snprintf(why, n, "empty value; expected %s", type_expect(k));
        return -1;
    }
    if (len >= k->size) {
        snprintf(why, n, "value is %zu octets long; expected at most %zu", len, k->size - 1);
        return -1;
    }
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
    struct config_hostport hp = { .port = 0 };
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
            snprintf(why, n, "\"%s\": \"%s\" is not a valid IPv6 address", txt, host);
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

static void
listen_commit(struct ringmail_config *cfg, const struct listen_list *l)
{
    memset(cfg->listen, 0, sizeof(cfg->listen));
    memcpy(cfg->listen, l->a, l->n * sizeof(l->a[0]));
    cfg->nlisten = l->n;
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
        listen_commit(cfg, &l);
        return 0;
    }
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

        if (k->flags & CF_HOSTNAME)
            default_hostname(cfg, k);
        else if (k->sdef != NULL)
            BUG_ON(key_set_text(cfg, k, k->sdef, strlen(k->sdef), why, sizeof(why)) < 0);
        else
            set_num(cfg, k, k->def);
    }
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
        if (item->type != YAML_SCALAR_NODE || node_is_null(item)) {
            snprintf(why, sizeof(why), "an entry is %s; expected host:port",
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
    listen_commit(cfg, &l);
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

int
config_finish(struct ringmail_config *cfg, char *err, size_t errlen)
{
    char a[32], b[32];

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

void
config_dump(const struct ringmail_config *cfg, void *file)
{
    FILE *f = file;
    char buf[64];

    if (cfg->file[0] != '\0') {
        show(buf, sizeof(buf), cfg->file, strlen(cfg->file));
        fprintf(f, "# ringmail: effective configuration (%s, then -o)\n", buf);
    } else {
        fprintf(f, "# ringmail: effective configuration (built-in defaults, then -o)\n");
    }
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];

        switch (k->type) {
        case CT_LISTEN:
            fprintf(f, "%s:%s\n", k->name, cfg->nlisten == 0 ? " []" : "");
            for (unsigned j = 0; j < cfg->nlisten; j++) {
                const struct config_hostport *hp = &cfg->listen[j];

                fprintf(f, hp->v6 ? "  - \"[%s]:%u\"\n" : "  - \"%s:%u\"\n", hp->host,
                        (unsigned)hp->port);
            }
            break;
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
