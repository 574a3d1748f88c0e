/*
 * util.h: clocks and file-system helpers shared by net/'s threads.
 */
#ifndef RINGMAIL_NET_UTIL_H
#define RINGMAIL_NET_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

/* Monotonic milliseconds, coarse (a vDSO read, no syscall): timers and timeouts. */
static inline uint64_t
clock_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Monotonic microseconds, precise (a vDSO read): latencies observed into histograms,
   once per message or attempt. */
static inline uint64_t
clock_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Wall-clock milliseconds since the epoch, coarse: queue ids, dates, delays. */
static inline uint64_t
clock_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* mkdir -p: every missing folder of path with mode. 0 or -errno. Blocking: start-up only. */
int mkdir_p(const char *path, mode_t mode);

/* After io_uring_queue_init() failed with rc: a " note=..." naming the usual cause when it
   is io_uring being switched off (EPERM, ENOSYS), else "". */
static inline const char *
uring_hint(int rc)
{
    if (rc == -EPERM || rc == -ENOSYS)
        return " note=\"io_uring is disabled here: sysctl kernel.io_uring_disabled, or a "
               "seccomp profile (container runtimes) that blocks io_uring_setup\"";
    return "";
}

struct config_hostport;
/* A listen address as a sockaddr: an IPv4 or IPv6 literal, "localhost" (127.0.0.1), or ""
   and "*" (the IPv6 wildcard). Names are not resolved. 0, or -EINVAL. */
int hostport_sockaddr(const struct config_hostport *hp, struct sockaddr_storage *ss,
                      socklen_t *len);

#endif
