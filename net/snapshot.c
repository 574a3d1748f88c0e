/*
 * snapshot.c: counted configuration snapshots (see snapshot.h).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/snapshot.h"
#include "net/tls.h"

struct snapshot *
snapshot_new(const struct ringmail_config *cfg, uint64_t gen, char *err, size_t errlen)
{
    struct snapshot *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->gen = gen;
    s->limits = (struct limits_conf){
        .conn_count = cfg->smtpd_client_connection_count_limit,
        .conn_rate = cfg->smtpd_client_connection_rate_limit,
        .msg_rate = cfg->smtpd_client_message_rate_limit,
        .rcpt_rate = cfg->smtpd_client_recipient_rate_limit,
        .auth_fail_rate = cfg->smtpd_client_auth_failure_rate_limit,
        .v6_prefix = cfg->smtpd_client_ipv6_prefix_length,
    };
    if (cfg->smtp_tls_security_level != SMTP_TLS_NONE) {
        /* err names the key and the file: "key 'smtp_tls_CAfile': ..." */
        s->client_ctx = tls_client_ctx_new(cfg, err, errlen);
        if (s->client_ctx == NULL) {
            free(s);
            return NULL;
        }
    }
    atomic_init(&s->refs, 1);
    return s;
}

struct snapshot *
snapshot_ref(struct snapshot *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void
snapshot_put(struct snapshot *s)
{
    /* acq_rel: every use of s by the thread letting go happens before the free */
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    tls_ctx_free(s->client_ctx);
    for (size_t i = 0; s->lfd != NULL && i < (size_t)s->cfg.nlisten * s->nreactors; i++) {
        if (s->lfd[i] >= 0)
            close(s->lfd[i]);
    }
    free(s->lfd);
    free(s);
}

void
snapshot_offer(_Atomic(struct snapshot *) *slot, struct snapshot *s)
{
    snapshot_put(atomic_exchange_explicit(slot, s, memory_order_acq_rel));
}

bool
snapshot_same_routes(const struct ringmail_config *a, const struct ringmail_config *b)
{
    /* every unused byte of a configuration is zero (config.h): memcmp is exact */
    return a->nroutes == b->nroutes &&
           memcmp(a->routes, b->routes, sizeof(a->routes[0]) * a->nroutes) == 0 &&
           memcmp(&a->relayhost, &b->relayhost, sizeof(a->relayhost)) == 0 &&
           memcmp(&a->default_route, &b->default_route, sizeof(a->default_route)) == 0;
}

const void *
snapshot_route_in(const struct snapshot *from, const void *route, const struct snapshot *to)
{
    size_t off = (size_t)((const char *)route - (const char *)&from->cfg);

    return (const char *)&to->cfg + off;
}
