/*
 * logbuf.c: log lines written through the owning thread's io_uring.
 */
#include "net/logbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/compiler.h"

int
logbuf_init(struct logbuf *lb, uint64_t user_data)
{
    memset(lb, 0, sizeof(*lb));
    lb->buf[0] = malloc(LOGBUF_SIZE);
    lb->buf[1] = malloc(LOGBUF_SIZE);
    if (lb->buf[0] == NULL || lb->buf[1] == NULL) {
        logbuf_fini(lb);
        return -ENOMEM;
    }
    lb->cap[0] = lb->cap[1] = LOGBUF_SIZE;
    lb->ud = user_data;
    return 0;
}

void
logbuf_fini(struct logbuf *lb)
{
    free(lb->buf[0]);
    free(lb->buf[1]);
    lb->buf[0] = lb->buf[1] = NULL;
}

void
logbuf_sink(void *arg, const char *line, size_t len)
{
    struct logbuf *lb = arg;
    int a = lb->active;

    if (lb->len[a] + len > lb->cap[a]) {
        /* the other buffer is still being written: this one grows, up to a bound */
        size_t cap = (size_t)lb->cap[a] * 2;
        char *nb;

        while (cap < lb->len[a] + len)
            cap *= 2;
        if (cap > LOGBUF_MAX || (nb = realloc(lb->buf[a], cap)) == NULL) {
            lb->dropped++;
            return;
        }
        lb->buf[a] = nb;
        lb->cap[a] = (uint32_t)cap;
    }
    memcpy(lb->buf[a] + lb->len[a], line, len);
    lb->len[a] += (uint32_t)len;
}

static void
submit(struct logbuf *lb, struct io_uring *ring, int b)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

    if (sqe == NULL) {
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
        BUG_ON(sqe == NULL);
    }
    /* offset -1: the current position; main switched a regular file to O_APPEND */
    io_uring_prep_write(sqe, 2, lb->buf[b] + lb->off, lb->len[b] - lb->off, (uint64_t)-1);
    io_uring_sqe_set_data64(sqe, lb->ud);
    lb->writing = true;
}

void
logbuf_flush(struct logbuf *lb, struct io_uring *ring)
{
    int a = lb->active;

    if (lb->writing || lb->len[a] == 0)
        return;
    lb->off = 0;
    lb->active = !a;
    submit(lb, ring, a);
}

void
logbuf_done(struct logbuf *lb, struct io_uring *ring, int res)
{
    int b = !lb->active;

    lb->writing = false;
    if (res == -EINTR || res == -EAGAIN) {
        submit(lb, ring, b);
        return;
    }
    if (res > 0 && lb->off + (uint32_t)res < lb->len[b]) {
        lb->off += (uint32_t)res; /* a short write to a pipe: the rest goes next */
        submit(lb, ring, b);
        return;
    }
    if (res <= 0)
        lb->dropped++; /* stderr is gone: nobody is left to tell */
    lb->len[b] = 0;
}

bool
logbuf_idle(const struct logbuf *lb)
{
    return !lb->writing && lb->len[lb->active] == 0;
}

void
logbuf_drain_sync(struct logbuf *lb)
{
    for (int i = 0; i < 2; i++) {
        int b = (lb->active + 1 + i) % 2; /* the older buffer first */
        uint32_t off = b == lb->active ? 0 : lb->off;

        while (off < lb->len[b]) {
            ssize_t n = write(2, lb->buf[b] + off, lb->len[b] - off);

            if (n <= 0)
                break;
            off += (uint32_t)n;
        }
        lb->len[b] = 0;
    }
}
