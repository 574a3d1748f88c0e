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

enum config_durability {
    DURABILITY_FSYNC = 0,
    DURABILITY_NONE,
};

enum config_bare_newline {
    BARE_NEWLINE_NORMALIZE = 0,
    BARE_NEWLINE_REJECT,
};

/* "127.0.0.1:2525" or "[::1]:2525": host is stored without brackets. */
struct config_hostport {
    char host[CONFIG_HOST_MAX];
    uint16_t port;
    bool v6; /* written in brackets */
};

struct ringmail_config {
    /* where the values came from; "" means built-in defaults only */
    char file[CONFIG_PATH_MAX];

    struct config_hostport listen[CONFIG_MAX_LISTEN];
    unsigned nlisten;
    char myhostname[CONFIG_NAME_MAX]; /* default: gethostname(), else "localhost" */
    char spool_dir[CONFIG_PATH_MAX];  /* default: ./var/spool */
    enum config_durability durability;
    unsigned reactors; /* 0 = one per online CPU */

    uint64_t message_size_limit;    /* octets; default 10240000; 0 = no limit */
    uint64_t max_line_length;       /* octets incl. CRLF; 0 = no limit (default) */
    uint64_t command_line_limit;    /* octets incl. CRLF; default 2048, min 512 */
    unsigned smtpd_recipient_limit; /* default 1000 */
    unsigned smtpd_hard_error_limit; /* default 20 */
    unsigned max_connections;        /* default 10000, whole process */
    enum config_bare_newline bare_newline;

    /* durations in milliseconds */
    uint64_t smtpd_timeout;          /* command / idle timeout, default 300s, min 1s */
    uint64_t smtpd_data_timeout;     /* data block timeout, default 180s, min 1s */
    uint64_t smtpd_greeting_delay;   /* early-talker wait before 220, default 0 */

    /* spool */
    uint64_t spool_segment_size; /* rotate a segment past this many octets, default 64 MiB */
};

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

/* Print the effective configuration as YAML (for `ringmail -t -v`). */
void config_dump(const struct ringmail_config *cfg, void *file /* FILE * */);

#endif
