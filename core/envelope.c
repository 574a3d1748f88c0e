/*
 * envelope.c: the envelope's string store. Any thread; one owner at a time.
 */
#include "core/envelope.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/compiler.h"

void
env_init(struct envelope *e)
{
    memset(e, 0, sizeof(*e));
}

void
env_reset(struct envelope *e)
{
    char *buf = e->buf;
    struct env_rcpt *rcpt = e->rcpt;
    uint32_t cap = e->cap, rcpt_cap = e->rcpt_cap;

    memset(e, 0, sizeof(*e));
    e->buf = buf;
    e->cap = cap;
    e->rcpt = rcpt;
    e->rcpt_cap = rcpt_cap;
}

void
env_free(struct envelope *e)
{
    free(e->buf);
    free(e->rcpt);
    memset(e, 0, sizeof(*e));
}

int
env_put(struct envelope *e, struct env_str *out, const char *p, size_t n)
{
    if (n > UINT32_MAX / 2 || e->len + n > UINT32_MAX / 2)
        return -ENOMEM;
    if (e->len + n > e->cap) {
        size_t cap = e->cap ? e->cap : 256;
        char *nb;

        while (cap < e->len + n)
            cap *= 2;
        nb = realloc(e->buf, cap);
        if (nb == NULL)
            return -ENOMEM;
        e->buf = nb;
        e->cap = (uint32_t)cap;
    }
    if (n > 0)
        memcpy(e->buf + e->len, p, n);
    out->off = e->len;
    out->len = (uint32_t)n;
    e->len += (uint32_t)n;
    return 0;
}

int
env_add_rcpt(struct envelope *e, struct slice addr, struct slice params)
{
    struct env_rcpt r;
    int rc;

    if (e->nrcpt == e->rcpt_cap) {
        uint32_t cap = e->rcpt_cap ? e->rcpt_cap * 2 : 8;
        struct env_rcpt *nr = realloc(e->rcpt, cap * sizeof(*nr));

        if (nr == NULL)
            return -ENOMEM;
        e->rcpt = nr;
        e->rcpt_cap = cap;
    }
    rc = env_put(e, &r.addr, addr.p, addr.len);
    if (rc == 0)
        rc = env_put(e, &r.params, params.p, params.len);
    if (rc < 0)
        return rc;
    e->rcpt[e->nrcpt++] = r;
    return 0;
}

int
env_copy(struct envelope *dst, const struct envelope *src)
{
    *dst = *src;
    dst->buf = NULL;
    dst->rcpt = NULL;
    dst->cap = dst->rcpt_cap = 0;
    if (src->len > 0) {
        dst->buf = malloc(src->len);
        if (dst->buf == NULL)
            goto fail;
        memcpy(dst->buf, src->buf, src->len);
        dst->cap = src->len;
    }
    if (src->nrcpt > 0) {
        dst->rcpt = malloc(src->nrcpt * sizeof(*dst->rcpt));
        if (dst->rcpt == NULL)
            goto fail;
        memcpy(dst->rcpt, src->rcpt, src->nrcpt * sizeof(*dst->rcpt));
        dst->rcpt_cap = src->nrcpt;
    }
    return 0;

fail:
    env_free(dst);
    return -ENOMEM;
}

void
qid_format(uint64_t id, char out[QID_LEN + 1])
{
    static const char hex[] = "0123456789ABCDEF";

    for (int i = QID_LEN - 1; i >= 0; i--) {
        out[i] = hex[id & 0xf];
        id >>= 4;
    }
    out[QID_LEN] = '\0';
}

bool
qid_parse(const char *s, uint64_t *id)
{
    uint64_t v = 0;

    for (int i = 0; i < QID_LEN; i++) {
        char c = s[i];
        unsigned d;

        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    if (s[QID_LEN] != '\0')
        return false;
    *id = v;
    return true;
}
