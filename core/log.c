/*
 * log.c: line formatting and per-thread sinks. Any thread.
 */
#include "core/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level log_level = LOG_INFO;
static enum log_format log_format = LOG_FORMAT_KV;
static log_clock_fn *log_clock;
static _Thread_local log_sink_fn *thread_sink;
static _Thread_local void *thread_sink_arg;

static const char *const level_name[] = { "error", "warning", "info", "debug" };

void
log_set_level(enum log_level lvl)
{
    log_level = lvl;
}

void
log_set_format(enum log_format fmt)
{
    log_format = fmt;
}

void
log_set_clock(log_clock_fn *fn)
{
    log_clock = fn;
}

void
log_set_thread_sink(log_sink_fn *fn, void *arg)
{
    thread_sink = fn;
    thread_sink_arg = arg;
}

/* Days since 1970-01-01 to civil date (Howard Hinnant's algorithm). */
static void
civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static size_t
iso_time(char *out, size_t cap, uint64_t ms)
{
    uint64_t sec = ms / 1000;
    unsigned m, d, rem = (unsigned)(sec % 86400);
    int y, n;

    civil_from_days((int64_t)(sec / 86400), &y, &m, &d);
    n = snprintf(out, cap, "%04d-%02u-%02uT%02u:%02u:%02u.%03uZ", y, m, d, rem / 3600,
                 rem / 60 % 60, rem % 60, (unsigned)(ms % 1000));
    return n < 0 ? 0 : MIN((size_t)n, cap - 1);
}

size_t
rfc5322_date(char *out, size_t cap, uint64_t unix_sec)
{
    static const char *const wday[] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };
    static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    uint64_t days = unix_sec / 86400;
    unsigned m, d, rem = (unsigned)(unix_sec % 86400);
    int y, n;

    civil_from_days((int64_t)days, &y, &m, &d);
    n = snprintf(out, cap, "%s, %u %s %04d %02u:%02u:%02u +0000", wday[days % 7], d, mon[m - 1], y,
                 rem / 3600, rem / 60 % 60, rem % 60);
    return n < 0 ? 0 : MIN((size_t)n, cap - 1);
}

static void
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w == -1) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void
log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t len = 0;
    int n;

    if (lvl > log_level)
        return;
    if (log_clock != NULL) {
        memcpy(line, "ts=", 3);
        len = 3 + iso_time(line + 3, sizeof(line) - 3, log_clock());
        line[len++] = ' ';
    }
    n = snprintf(line + len, sizeof(line) - len, "level=%s ", level_name[lvl]);
    if (n > 0)
        len += (size_t)n;
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    if (n > 0)
        len = MIN(len + (size_t)n, sizeof(line) - 2);
    if (log_format == LOG_FORMAT_JSON) {
        char json[LOG_LINE_MAX * 2];
        size_t jl = log_kv_to_json(json, sizeof(json) - 1, line, len);

        json[jl++] = '\n';
        if (thread_sink != NULL)
            thread_sink(thread_sink_arg, json, jl);
        else
            write_all(2, json, jl);
        return;
    }
    line[len++] = '\n';
    if (thread_sink != NULL)
        thread_sink(thread_sink_arg, line, len);
    else
        write_all(2, line, len);
}

/* Append s[0..n) to out as the inside of a JSON string; false when it does not fit. */
static bool
json_str(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\\' && i + 3 < n && s[i + 1] == 'x') {
            /* log_escape()'s \xHH: the same octet, as JSON writes it */
            if (*o + 6 >= cap)
                return false;
            memcpy(out + *o, "\\u00", 4);
            out[*o + 4] = s[i + 2];
            out[*o + 5] = s[i + 3];
            *o += 6;
            i += 3;
        } else if (c == '"' || c == '\\') {
            if (*o + 2 >= cap)
                return false;
            out[(*o)++] = '\\';
            out[(*o)++] = (char)c;
        } else if (c < 0x20) {
            if (*o + 6 >= cap)
                return false;
            memcpy(out + *o, "\\u00", 4);
            out[*o + 4] = hex[c >> 4];
            out[*o + 5] = hex[c & 15];
            *o += 6;
        } else {
            if (*o + 1 >= cap)
                return false;
            out[(*o)++] = (char)c;
        }
    }
    return true;
}

size_t
log_kv_to_json(char *out, size_t cap, const char *kv, size_t n)
{
    size_t o = 0, i = 0, msg_start = SIZE_MAX, msg_end = 0;
    bool first = true;

    if (cap < 3) {
        out[0] = '\0';
        return 0;
    }
    out[o++] = '{';
    while (n > 0 && (kv[n - 1] == '\n' || kv[n - 1] == ' '))
        n--;
    while (i < n) {
        size_t ks = i, ke, vs, ve, save = o;

        while (i < n && kv[i] == ' ')
            i++;
        ks = i;
        while (i < n && kv[i] != '=' && kv[i] != ' ')
            i++;
        if (i >= n || kv[i] != '=' || i == ks) {
            /* a word without a key: kept as "msg" */
            while (i < n && kv[i] != ' ')
                i++;
            if (msg_start == SIZE_MAX)
                msg_start = ks;
            msg_end = i;
            continue;
        }
        ke = i++;
        if (i < n && kv[i] == '"') {
            vs = ++i;
            while (i < n && kv[i] != '"')
                i++;
            ve = i;
            if (i < n)
                i++;
        } else {
            vs = i;
            while (i < n && kv[i] != ' ')
                i++;
            ve = i;
        }
        if (!first && o + 1 < cap)
            out[o++] = ',';
        if (o + 1 >= cap)
            break;
        out[o++] = '"';
        if (!json_str(out, cap, &o, kv + ks, ke - ks) || o + 3 >= cap) {
            o = save;
            break;
        }
        memcpy(out + o, "\":\"", 3);
        o += 3;
        if (!json_str(out, cap, &o, kv + vs, ve - vs) || o + 2 >= cap) {
            o = save;
            break;
        }
        out[o++] = '"';
        first = false;
    }
    if (msg_start != SIZE_MAX) {
        size_t save = o;

        if (!first && o + 1 < cap)
            out[o++] = ',';
        if (o + 7 < cap) {
            memcpy(out + o, "\"msg\":\"", 7);
            o += 7;
            if (!json_str(out, cap, &o, kv + msg_start, msg_end - msg_start) || o + 2 >= cap)
                o = save;
            else
                out[o++] = '"';
        } else {
            o = save;
        }
    }
    if (o + 1 >= cap)
        o = cap - 2;
    out[o++] = '}';
    out[o] = '\0';
    return o;
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(lvl, fmt, ap);
    va_end(ap);
}

size_t
log_escape(char *out, size_t cap, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (n > LOG_PEER_MAX)
        n = LOG_PEER_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            if (o + 1 >= cap)
                break;
            out[o++] = (char)c;
        } else {
            if (o + 4 >= cap)
                break;
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}
