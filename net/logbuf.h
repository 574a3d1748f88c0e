/*
 * logbuf.h: a thread's log lines, gathered in memory and written to stderr
 * through that thread's own io_uring once per loop turn, so that a log call
 * never blocks a reactor or a worker.
 *
 * Two buffers: one gathers lines while the other is being written. The
 * gathering one grows (up to LOGBUF_MAX) while a write is slow; past that,
 * lines are dropped and counted. A short write (a full pipe) is finished by
 * the next write. Thread affinity: the owning thread only.
 */
#ifndef RINGMAIL_NET_LOGBUF_H
#define RINGMAIL_NET_LOGBUF_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define LOGBUF_SIZE 65536u
#define LOGBUF_MAX  (16u << 20)

struct logbuf {
    char *buf[2];
    uint32_t len[2], cap[2];
    uint32_t off; /* octets of the buffer in flight already written */
    int active;   /* the buffer gathering lines */
    bool writing; /* the other one is in flight */
    uint64_t ud;  /* user_data of its writes */
    uint64_t dropped;
};

int logbuf_init(struct logbuf *lb, uint64_t user_data);
void logbuf_fini(struct logbuf *lb);
/* A log_sink_fn (core/log.h): arg is the struct logbuf. */
void logbuf_sink(void *arg, const char *line, size_t len);
/* End of a loop turn: start writing what gathered, unless a write is in flight. */
void logbuf_flush(struct logbuf *lb, struct io_uring *ring);
/* The write's completion. */
void logbuf_done(struct logbuf *lb, struct io_uring *ring, int res);
/* Nothing gathered and nothing in flight. */
bool logbuf_idle(const struct logbuf *lb);
/* After the loop: write what is left synchronously. */
void logbuf_drain_sync(struct logbuf *lb);

#endif
