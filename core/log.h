/*
 * log.h: one event per line, key=value, to stderr (or a thread's own sink).
 *
 *   ts=2026-11-27T17:21:07.123Z level=info event=received qid=... client=... size=...
 *
 * log_msg() formats into a stack buffer and hands the line to the calling
 * thread's sink: by default a write(2) to stderr (start-up, tools), on a
 * reactor a per-thread buffer written through its io_uring, so that a log
 * call never blocks a reactor. Lines longer than LOG_LINE_MAX are cut.
 * Text from a peer goes through log_escape() first.
 */
#ifndef RINGMAIL_CORE_LOG_H
#define RINGMAIL_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "core/compiler.h"

#define LOG_LINE_MAX 1024
#define LOG_PEER_MAX 100 /* octets of peer text kept, as Postfix's %.100s */

enum log_level {
    LOG_ERR = 0,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
};

typedef void log_sink_fn(void *arg, const char *line, size_t len);
/* Wall clock in milliseconds since the epoch, installed by the program (core reads no clock). */
typedef uint64_t log_clock_fn(void);

enum log_format {
    LOG_FORMAT_KV = 0, /* ts=... level=... event=... key=value */
    LOG_FORMAT_JSON,   /* {"ts":"...","level":"...","event":"...","key":"value"} */
};

void log_set_level(enum log_level lvl);
/* Set once at start-up, before any other thread logs. */
void log_set_format(enum log_format fmt);
/* The key=value line kv[0..n) as one JSON object into out (cap octets, NUL-terminated):
   every value a string, \xHH escapes as \u00HH, text without '=' as "msg". Returns the
   length; a line that does not fit is cut at a field boundary and still valid JSON. */
size_t log_kv_to_json(char *out, size_t cap, const char *kv, size_t n);
void log_set_clock(log_clock_fn *fn);
/* This thread's sink; NULL restores the default (stderr). */
void log_set_thread_sink(log_sink_fn *fn, void *arg);

void log_msg(enum log_level lvl, const char *fmt, ...) PRINTF(2, 3);
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap) PRINTF(2, 0);

/*
 * Escape peer text for a log value: printable ASCII kept except '"' and '\\',
 * everything else as \xHH; cut to LOG_PEER_MAX input octets. Always
 * NUL-terminates out (cap >= 1). Returns the length written.
 */
size_t log_escape(char *out, size_t cap, const char *p, size_t n);

/* Format unix seconds as RFC 5322 date-time in UTC: "Fri, 27 Nov 2026 17:21:07 +0000". */
size_t rfc5322_date(char *out, size_t cap, uint64_t unix_sec);

#endif
