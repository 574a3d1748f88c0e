/*
 * config.h: ringmail's configuration model.
 *
 * A configuration is built from the built-in defaults, then a YAML file
 * (config_load_file), then -o key=value overrides (config_set), then checked
 * (config_finish). Every key lives in one table in config.c that gives its
 * name, type, default and bounds; the YAML loader and -o share that table.
 * Errors name the file, line and key: "ringmail.yml:12: key 'listen': ...".
 *
 * A finished configuration is immutable and may be read by any thread.
 * core/ has no sockets: addresses are kept as text host + port; net/ turns
 * them into sockaddrs.
 */
#ifndef RINGMAIL_CORE_CONFIG_H
#define RINGMAIL_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_HOST_MAX   64
#define CONFIG_NAME_MAX   256
#define CONFIG_PATH_MAX   1024
#define CONFIG_ERR_MAX    512

#define CONFIG_MAX_HOPS          8   /* next hops in one failover list */
#define CONFIG_MAX_ROUTES        64  /* entries of `routes` */
#define CONFIG_MAX_RELAY_DOMAINS 256 /* entries of `relay_domains` */
#define CONFIG_MAX_NETWORKS      64  /* entries of `mynetworks` */
#define CONFIG_DOMAIN_MAX        256 /* a domain pattern, NUL included */
#define CONFIG_UNIX_PATH_MAX     108 /* sizeof(sockaddr_un.sun_path), NUL included */
/* config_nexthop_format()'s longest output, NUL included ("maildir:" + path) */
#define CONFIG_NEXTHOP_TEXT_MAX  (CONFIG_PATH_MAX + 16)

enum config_durability {
    DURABILITY_FSYNC = 0,
    DURABILITY_NONE,
};

enum config_delivery {
    DELIVERY_ON = 0, /* hand every durable message to the workers */
    DELIVERY_HOLD,   /* accept and keep everything in the queue; deliver nothing */
};

enum config_bare_newline {
    BARE_NEWLINE_NORMALIZE = 0,
    BARE_NEWLINE_REJECT,
};

enum config_listen_kind {
    LISTEN_SMTP = 0,   /* `listen`: port 25 relay service, STARTTLS when a certificate is set */
    LISTEN_SUBMISSION, /* `submission_listen`: port 587, AUTH required before MAIL */
    LISTEN_SMTPS,      /* `smtps_listen`: port 465, TLS from the first byte (RFC 8314) */
};

/* smtpd_tls_security_level: what the server asks of clients */
enum config_smtpd_tls {
    SMTPD_TLS_MAY = 0, /* offer STARTTLS when a certificate is set */
    SMTPD_TLS_ENCRYPT, /* and refuse MAIL/AUTH before it (530 5.7.0) */
};

/* smtp_tls_security_level: what the delivery side asks of next hops */
enum config_smtp_tls {
    SMTP_TLS_NONE = 0, /* never STARTTLS */
    SMTP_TLS_MAY,      /* STARTTLS when offered, no certificate check */
    SMTP_TLS_ENCRYPT,  /* STARTTLS or defer */
    SMTP_TLS_VERIFY,   /* STARTTLS, certificate chain and name verified, or defer */
};

enum config_transport {
    TRANSPORT_SMTP = 0,
    TRANSPORT_LMTP,
    TRANSPORT_MAILDIR,
};

/* "127.0.0.1:2525" or "[::1]:2525": host is stored without brackets. */
struct config_hostport {
    char host[CONFIG_HOST_MAX];
    uint16_t port;
    bool v6;      /* written in brackets */
    uint8_t kind; /* enum config_listen_kind: which key listed it */
    int8_t proxy; /* the entry's own proxy_protocol: -1 = the global key's, 0 off, 1 on */
};

/*
 * One next hop, in canonical form (config_nexthop_format() prints it back):
 * - smtp, and lmtp over TCP: host and port set, path "". host has no
 *   brackets; an IP literal is in inet_ntop() form, a name is lower case and
 *   is resolved with A/AAAA when connecting (ringmail never looks up MX).
 * - lmtp over a unix socket: path set (at most CONFIG_UNIX_PATH_MAX - 1
 *   octets), host "" and port 0.
 * - maildir: path set, host "" and port 0.
 * Unused bytes are zero, so hops (and configurations) compare with memcmp.
 */
struct config_nexthop {
    enum config_transport transport;
    char host[CONFIG_HOST_MAX];
    uint16_t port;
    char path[CONFIG_PATH_MAX]; /* unix socket or maildir */
};

/*
 * An ordered failover list: hop[0] is tried first, the next one when a
 * connection fails. A maildir hop is always alone in its list. nhops is 0
 * only for an unset relayhost; entries past nhops are all zero.
 */
struct config_route_hops {
    struct config_nexthop hop[CONFIG_MAX_HOPS];
    unsigned nhops;
};

/*
 * One entry of `routes`. domain is lower case and is either "example.com"
 * (that domain), ".example.com" (any subdomain of example.com, not
 * example.com itself) or "*" (any other domain). hops.nhops >= 1.
 */
struct config_route {
    char domain[CONFIG_DOMAIN_MAX];
    struct config_route_hops hops;
};

/* One network of a network list (mynetworks, ...): the host bits of addr are zero. */
struct config_network {
    uint8_t addr[16]; /* network byte order; IPv4 in addr[0..4) */
    uint8_t prefix;   /* 0..32 for IPv4, 0..128 for IPv6 */
    bool v6;          /* an IPv4-mapped network (::ffff:0:0/96 and longer) is stored as IPv4 */
};

struct config_networks {
    struct config_network a[CONFIG_MAX_NETWORKS];
    unsigned n;
};

/*
 * A plain value: fixed-size arrays and no pointers, so a configuration can be
 * copied with `=` and compared with memcmp (every unused byte is zero).
 */
struct ringmail_config {
    /* where the values came from; "" means built-in defaults only */
    char file[CONFIG_PATH_MAX];

    /* every listener of the three listen keys, each tagged with its kind */
    struct config_hostport listen[CONFIG_MAX_LISTEN];
    unsigned nlisten;
    /* the admin HTTP endpoint (net/admin.h): port 0 = off; default 127.0.0.1:9025 */
    struct config_hostport admin_listen;
    char admin_token_file[CONFIG_PATH_MAX]; /* bearer token required when set; "" = none */
    char user[CONFIG_NAME_MAX];       /* run as this account when started as root; default nobody */
    unsigned log_format;              /* enum log_format (core/log.h): kv or json */
    char myhostname[CONFIG_NAME_MAX]; /* default: gethostname(), else "localhost" */
    char spool_dir[CONFIG_PATH_MAX];  /* default: ./var/spool */
    enum config_durability durability;
    enum config_delivery delivery;
    unsigned reactors; /* 0 = one per online CPU */
    unsigned workers;  /* outbound delivery threads; 0 = one per online CPU */

    /* who may relay: a RCPT is accepted when the client is in mynetworks or
     * the recipient's domain is in relay_domains (core/route.h) */
    struct config_networks mynetworks; /* default 127.0.0.0/8, ::1/128 */
    char relay_domains[CONFIG_MAX_RELAY_DOMAINS][CONFIG_DOMAIN_MAX]; /* lower case */
    unsigned nrelay_domains;

    uint64_t message_size_limit;     /* octets; default 10240000; 0 = no limit */
    uint64_t max_line_length;        /* octets incl. CRLF; 0 = no limit (default) */
    uint64_t command_line_limit;     /* octets incl. CRLF; default 2048, min 512 */
    unsigned smtpd_recipient_limit;  /* default 1000 */
    unsigned smtpd_hard_error_limit; /* default 20 */
    unsigned max_connections;        /* default 10000, whole process */
    enum config_bare_newline bare_newline;

    /* durations in milliseconds */
    uint64_t smtpd_timeout;        /* command / idle timeout, default 300s, min 1s */
    uint64_t smtpd_data_timeout;   /* data block timeout, default 180s, min 1s */
    uint64_t smtpd_greeting_delay; /* early-talker wait before 220, default 0 */
    uint64_t shutdown_timeout;     /* SIGTERM: sessions may finish this long, default 30s */

    /* PROXY protocol (v1 and v2) in front of the SMTP listeners */
    bool proxy_protocol;                           /* every listener, unless its entry says */
    struct config_networks proxy_trusted_networks; /* who may send a PROXY header */
    uint64_t smtpd_upstream_proxy_timeout;         /* ms to receive the header, default 5s */

    /* TLS (net/tls.c) */
    char tls_cert_file[CONFIG_PATH_MAX]; /* PEM chain; "" = no STARTTLS, no smtps */
    char tls_key_file[CONFIG_PATH_MAX];
    enum config_smtpd_tls smtpd_tls_security_level;
    enum config_smtp_tls smtp_tls_security_level; /* default may */
    char smtp_tls_CAfile[CONFIG_PATH_MAX];        /* "" = the system's trust store */

    /* AUTH (RFC 4954) */
    char smtpd_sasl_password_file[CONFIG_PATH_MAX]; /* user:crypt-hash lines; "" = no AUTH */
    bool smtpd_tls_auth_only;          /* AUTH only over TLS (default); else also to mynetworks */
    unsigned smtpd_auth_failure_limit; /* failures in one session before 421, default 3 */
    uint64_t smtpd_auth_failure_delay; /* ms; the n-th failure's reply waits n times this */

    /* per-client limits (core/limits.h); 0 = no limit */
    unsigned smtpd_client_connection_count_limit;  /* concurrent, default 50 */
    unsigned smtpd_client_connection_rate_limit;   /* per minute */
    unsigned smtpd_client_message_rate_limit;      /* per minute */
    unsigned smtpd_client_recipient_rate_limit;    /* per minute */
    unsigned smtpd_client_auth_failure_rate_limit; /* per minute, default 10 */
    unsigned smtpd_client_ipv6_prefix_length;      /* IPv6 clients counted by prefix, 64 */
    bool smtpd_client_limit_exempt_mynetworks;     /* default true */
    struct config_networks smtpd_client_event_limit_exceptions; /* also exempt */
    uint64_t smtpd_min_data_rate; /* octets per second in DATA/BDAT, default 500; 0 = none */

    /* spool */
    uint64_t spool_segment_size; /* rotate a segment past this many octets, default 64 MiB */

    /*
     * Delivery. A recipient domain goes, in this order, to: its exact route,
     * the longest matching ".suffix" route, the "*" route, relayhost, and
     * last default_route. Use core/route.h rather than reading these.
     */
    struct config_route routes[CONFIG_MAX_ROUTES]; /* in file order */
    unsigned nroutes;
    struct config_route_hops relayhost; /* nhops 0 = unset (default) */
    /*
     * The built-in last resort: exactly one hop, maildir:<maildir_dir>.
     * default_route.hop[0].path *is* the `maildir_dir` key's storage, so the
     * route exists without a copy (default ./var/maildir).
     */
    struct config_route_hops default_route;
    unsigned destination_concurrency_limit;     /* sessions per destination, default 20 */
    unsigned smtp_connection_reuse_count_limit; /* deliveries per connection, 100; 0 = no limit */

    /* delivery durations in milliseconds */
    uint64_t smtp_connect_timeout;             /* default 30s */
    uint64_t smtp_helo_timeout;                /* every reply but the one after the dot, 300s */
    uint64_t smtp_data_done_timeout;           /* the reply after the final dot, 600s */
    uint64_t smtp_connection_cache_time_limit; /* keep an idle connection this long, 2s */
    uint64_t minimal_backoff_time;             /* first retry delay, 300s; <= maximal */
    uint64_t maximal_backoff_time;             /* retry delay cap, 4000s */
    uint64_t maximal_queue_lifetime;           /* then bounce, 5d */
    uint64_t bounce_queue_lifetime;            /* for bounces (null sender), 5d */
};

/* The listener's effective proxy_protocol. */
static inline bool
config_listen_proxy(const struct ringmail_config *cfg, const struct config_hostport *hp)
{
    return hp->proxy < 0 ? cfg->proxy_protocol : hp->proxy != 0;
}

/* Fill *cfg with the built-in defaults (works from any folder). */
void config_defaults(struct ringmail_config *cfg);

/*
 * Read a YAML file over *cfg. Returns 0, or -1 with a message in err
 * ("FILE:LINE: key 'K': what is wrong"). Unknown keys are errors.
 */
int config_load_file(struct ringmail_config *cfg, const char *path, char *err, size_t errlen);

/*
 * Set one key from text, as -o key=value does ("key=value" in kv). List keys
 * take a comma-separated list, durations a unit (ms, s, m, h, d), sizes an
 * optional k/M/G suffix. Returns 0, or -1 with a message in err naming the key.
 */
int config_set(struct ringmail_config *cfg, const char *kv, char *err, size_t errlen);

/* Cross-key checks after loading; 0 or -1 with a message. */
int config_finish(struct ringmail_config *cfg, char *err, size_t errlen);

/*
 * The whole reading, as ringmail does it at start-up and on SIGHUP: the
 * defaults, then the file (NULL: none), then each of ov[0..nov) as -o does,
 * then config_finish(). 0, or -1 with the first error in err.
 */
int config_read(struct ringmail_config *cfg, const char *file, char *const *ov, int nov, char *err,
                size_t errlen);

/*
 * Write h's canonical text into buf[0..n): "smtp:[host]:port",
 * "lmtp:[host]:port", "lmtp:unix:/path" or "maildir:/path"; the loader reads
 * it back to the same hop. Returns the length snprintf() would have written
 * (n >= CONFIG_NEXTHOP_TEXT_MAX always fits). Any thread.
 */
int config_nexthop_format(const struct config_nexthop *h, char *buf, size_t n);

/* config_hostport_text()'s longest output, NUL included: "[" host "]:65535" */
#define CONFIG_HOSTPORT_TEXT_MAX (CONFIG_HOST_MAX + 8)
/* hp as text for messages and logs: "host:port", "[v6 host]:port". Returns buf. Any thread. */
const char *config_hostport_text(const struct config_hostport *hp, char *buf, size_t n);
/* Do a and b name the same address and port (the host without regard to case)? */
bool config_hostport_same(const struct config_hostport *a, const struct config_hostport *b);

/* Print the effective configuration as YAML (for `ringmail -t -v`). */
void config_dump(const struct ringmail_config *cfg, void *file /* FILE * */);

#endif
