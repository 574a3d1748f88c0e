/*
 * Tests for core/route.c and the delivery keys of core/config.c it reads:
 * next hop syntax (every transport, its errors, in -o and in YAML with
 * file:line:key), route resolution order, the route hash, mynetworks and
 * relay_domains matching, the list limits, and the dump/load round trip.
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/config.h"
#include "core/route.h"
#include "core/slice.h"

#define ERRLEN CONFIG_ERR_MAX

/* The configurations are large (routes of full paths): keep them off the stack. */
static struct ringmail_config g_cfg, g_before, g_out;

/* ---- helpers ---- */

struct tmp {
    char dir[64];
    char path[128];
};

/* Load text over the defaults from a file under a fresh mkdtemp folder. */
static int
load(const char *text, struct ringmail_config *cfg, char *err, struct tmp *t)
{
    size_t len = strlen(text);
    FILE *f;
    int rc;

    config_defaults(cfg);
    snprintf(t->dir, sizeof(t->dir), "/tmp/ringmail-route-XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/ringmail.yml", t->dir);
    f = fopen(t->path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
    err[0] = '\0';
    rc = config_load_file(cfg, t->path, err, ERRLEN);
    unlink(t->path);
    rmdir(t->dir);
    return rc;
}

static void
load_ok(const char *text, struct ringmail_config *cfg)
{
    char err[ERRLEN];
    struct tmp t;

    cr_assert_eq(load(text, cfg, err, &t), 0, "%s\nfor:\n%s", err, text);
}

/* Load text and expect the error "<path>:<line>: <rest>", the configuration untouched. */
static void
expect_load_err(const char *text, unsigned line, const char *rest)
{
    char err[ERRLEN], want[ERRLEN];
    struct tmp t;

    cr_assert_eq(load(text, &g_cfg, err, &t), -1, "loaded: %s", text);
    snprintf(want, sizeof(want), "%s:%u: %s", t.path, line, rest);
    cr_assert_str_eq(err, want, "for %s\n got: %s\nwant: %s", text, err, want);
    config_defaults(&g_before);
    cr_assert(memcmp(&g_cfg, &g_before, sizeof(g_cfg)) == 0, "a failed load changed the config");
}

/* -o kv must fail with exactly want, and leave the configuration alone. */
static void
expect_set_err(const char *kv, const char *want)
{
    char err[ERRLEN];

    config_defaults(&g_cfg);
    g_before = g_cfg;
    cr_assert_eq(config_set(&g_cfg, kv, err, sizeof(err)), -1, "accepted %s", kv);
    cr_assert_str_eq(err, want, "for %s\n got: %s\nwant: %s", kv, err, want);
    cr_assert(memcmp(&g_cfg, &g_before, sizeof(g_cfg)) == 0, "%s changed the configuration", kv);
}

static void
set_ok(struct ringmail_config *cfg, const char *kv)
{
    char err[ERRLEN] = "";

    cr_assert_eq(config_set(cfg, kv, err, sizeof(err)), 0, "%s: %s", kv, err);
}

static void
finish_ok(struct ringmail_config *cfg)
{
    char err[ERRLEN] = "";

    cr_assert_eq(config_finish(cfg, err, sizeof(err)), 0, "%s", err);
}

static const char *
hop_text(const struct config_nexthop *h)
{
    static char buf[CONFIG_NEXTHOP_TEXT_MAX];

    cr_assert_lt(config_nexthop_format(h, buf, sizeof(buf)), (int)sizeof(buf));
    return buf;
}

/* The canonical text of hop i of the route for domain. */
static const char *
lookup_hop(const struct ringmail_config *cfg, const char *domain, unsigned i)
{
    const struct route *rt = route_lookup(cfg, slice_make(domain, strlen(domain)));

    cr_assert_not_null(rt);
    cr_assert_lt(i, route_nhops(rt), "%s has %u hops", domain, route_nhops(rt));
    return hop_text(route_hop(rt, i));
}

static const struct route *
lookup(const struct ringmail_config *cfg, const char *domain)
{
    return route_lookup(cfg, slice_make(domain, strlen(domain)));
}

/* ---- next hop syntax, every transport ---- */

Test(route, nexthop_forms)
{
    static const struct {
        const char *in;
        enum config_transport transport;
        const char *host;
        unsigned port;
        const char *path;
        const char *canon;
    } cases[] = {
        { "smtp:[192.0.2.1]:2525", TRANSPORT_SMTP, "192.0.2.1", 2525, "", "smtp:[192.0.2.1]:2525" },
        { "smtp:[192.0.2.1]", TRANSPORT_SMTP, "192.0.2.1", 25, "", "smtp:[192.0.2.1]:25" },
        { "smtp:192.0.2.1:26", TRANSPORT_SMTP, "192.0.2.1", 26, "", "smtp:[192.0.2.1]:26" },
        { "smtp:MX.Example.NET:587", TRANSPORT_SMTP, "mx.example.net", 587, "",
          "smtp:[mx.example.net]:587" },
        { "smtp:mx.example.net", TRANSPORT_SMTP, "mx.example.net", 25, "",
          "smtp:[mx.example.net]:25" },
        { "smtp:[mx.example.net]:25", TRANSPORT_SMTP, "mx.example.net", 25, "",
          "smtp:[mx.example.net]:25" },
        { "smtp:[2001:DB8:0::25]:25", TRANSPORT_SMTP, "2001:db8::25", 25, "",
          "smtp:[2001:db8::25]:25" },
        { "[2001:db8::25]:2525", TRANSPORT_SMTP, "2001:db8::25", 2525, "",
          "smtp:[2001:db8::25]:2525" },
        { "[::1]", TRANSPORT_SMTP, "::1", 25, "", "smtp:[::1]:25" },
        { "[192.0.2.7]:65535", TRANSPORT_SMTP, "192.0.2.7", 65535, "", "smtp:[192.0.2.7]:65535" },
        { "relay.example:1", TRANSPORT_SMTP, "relay.example", 1, "", "smtp:[relay.example]:1" },
        { "relay.example", TRANSPORT_SMTP, "relay.example", 25, "", "smtp:[relay.example]:25" },
        { "localhost", TRANSPORT_SMTP, "localhost", 25, "", "smtp:[localhost]:25" },
        { "lmtp:[192.0.2.1]:2424", TRANSPORT_LMTP, "192.0.2.1", 2424, "", "lmtp:[192.0.2.1]:2424" },
        { "lmtp:[::1]", TRANSPORT_LMTP, "::1", 24, "", "lmtp:[::1]:24" },
        { "lmtp:lmtp.example", TRANSPORT_LMTP, "lmtp.example", 24, "", "lmtp:[lmtp.example]:24" },
        { "lmtp:inet:lmtp.example:2003", TRANSPORT_LMTP, "lmtp.example", 2003, "",
          "lmtp:[lmtp.example]:2003" },
        { "lmtp:unix:/run/dovecot/lmtp", TRANSPORT_LMTP, "", 0, "/run/dovecot/lmtp",
          "lmtp:unix:/run/dovecot/lmtp" },
        { "lmtp:unix:lmtp.sock", TRANSPORT_LMTP, "", 0, "lmtp.sock", "lmtp:unix:lmtp.sock" },
        { "maildir:/srv/mail", TRANSPORT_MAILDIR, "", 0, "/srv/mail", "maildir:/srv/mail" },
        { "maildir:./var/maildir", TRANSPORT_MAILDIR, "", 0, "./var/maildir",
          "maildir:./var/maildir" },
        { "maildir:/srv/é:x", TRANSPORT_MAILDIR, "", 0, "/srv/é:x", "maildir:/srv/é:x" },
    };
    char kv[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct config_nexthop *h = &g_cfg.relayhost.hop[0];

        config_defaults(&g_cfg);
        snprintf(kv, sizeof(kv), "relayhost=%s", cases[i].in);
        set_ok(&g_cfg, kv);
        cr_assert_eq(g_cfg.relayhost.nhops, 1, "%s", cases[i].in);
        cr_assert_eq(h->transport, cases[i].transport, "%s", cases[i].in);
        cr_assert_str_eq(h->host, cases[i].host, "%s", cases[i].in);
        cr_assert_eq(h->port, cases[i].port, "%s", cases[i].in);
        cr_assert_str_eq(h->path, cases[i].path, "%s", cases[i].in);
        cr_assert_str_eq(hop_text(h), cases[i].canon, "%s", cases[i].in);

        /* the canonical text reads back to the same hop */
        snprintf(kv, sizeof(kv), "relayhost=%s", cases[i].canon);
        g_before = g_cfg;
        set_ok(&g_cfg, kv);
        cr_assert(memcmp(&g_cfg, &g_before, sizeof(g_cfg)) == 0, "%s", cases[i].canon);
    }
}

Test(route, nexthop_errors)
{
    static const struct {
        const char *kv;
        const char *want;
    } cases[] = {
        { "relayhost=smtp:", "-o relayhost: \"smtp:\" has no host; expected smtp:[host]:port, "
                             "lmtp:[host]:port, lmtp:unix:/path or maildir:/path" },
        { "relayhost=smtp:[]:25", "-o relayhost: \"smtp:[]:25\" has no host; expected "
                                  "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or "
                                  "maildir:/path" },
        { "relayhost=smtp:[192.0.2.1:25",
          "-o relayhost: \"smtp:[192.0.2.1:25\" has no closing ']'; expected [host]:port, e.g. "
          "[::1]:25" },
        { "relayhost=[192.0.2.1]25",
          "-o relayhost: \"[192.0.2.1]25\": unexpected text after ']'; expected [host]:port" },
        { "relayhost=[192.0.2.1]:0",
          "-o relayhost: \"[192.0.2.1]:0\": port \"0\" is not valid; expected a number in "
          "1..65535" },
        { "relayhost=[192.0.2.1]:65536",
          "-o relayhost: \"[192.0.2.1]:65536\": port \"65536\" is not valid; expected a number "
          "in 1..65535" },
        { "relayhost=[192.0.2.1]:",
          "-o relayhost: \"[192.0.2.1]:\": port \"\" is not valid; expected a number in "
          "1..65535" },
        { "relayhost=mx.example:smtp",
          "-o relayhost: \"mx.example:smtp\": port \"smtp\" is not valid; expected a number in "
          "1..65535" },
        { "relayhost=smtp:2001:db8::25",
          "-o relayhost: \"smtp:2001:db8::25\": an IPv6 address must be written in brackets, "
          "e.g. smtp:[2001:db8::25]:25" },
        { "relayhost=2001:db8::25",
          "-o relayhost: \"2001:db8::25\": an IPv6 address must be written in brackets, e.g. "
          "smtp:[2001:db8::25]:25" },
        { "relayhost=[::g]:25", "-o relayhost: \"[::g]:25\": \"::g\" is not a valid IPv6 address" },
        { "relayhost=300.1.1.1",
          "-o relayhost: \"300.1.1.1\": \"300.1.1.1\" is not a valid IPv4 address" },
        { "relayhost=smtp:bad_host:25",
          "-o relayhost: \"smtp:bad_host:25\": the host is neither an IP address nor a "
          "hostname; expected a.b.c.d, [IPv6] or a hostname" },
        { "relayhost=smpt:[192.0.2.1]:25",
          "-o relayhost: \"smpt:[192.0.2.1]:25\": unknown transport \"smpt\"; expected smtp:, "
          "lmtp: or maildir:" },
        { "relayhost=SMTP:[192.0.2.1]:25",
          "-o relayhost: \"SMTP:[192.0.2.1]:25\": unknown transport \"SMTP\"; expected smtp:, "
          "lmtp: or maildir:" },
        { "relayhost=lmtp:unix:", "-o relayhost: \"lmtp:unix:\": the path is empty; expected "
                                  "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or "
                                  "maildir:/path" },
        { "relayhost=maildir:", "-o relayhost: \"maildir:\": the path is empty; expected "
                                "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or "
                                "maildir:/path" },
        { "relayhost=maildir:/a\x01z",
          "-o relayhost: value contains a control character (\\x01 at offset 2); expected "
          "printable text" },
        { "relayhost=maildir:/\xff", "-o relayhost: value is not valid UTF-8; expected UTF-8 "
                                     "text" },
        { "relayhost=[192.0.2.1] [192.0.2.1]:25",
          "-o relayhost: \"[192.0.2.1]:25\" is listed twice; expected each next hop once" },
        { "relayhost=[192.0.2.1] maildir:/srv/mail",
          "-o relayhost: \"maildir:/srv/mail\": a maildir next hop is alone in its list; "
          "expected either one maildir:/path or smtp and lmtp next hops" },
        { "relayhost=maildir:/srv/mail,[192.0.2.1]",
          "-o relayhost: \"[192.0.2.1]\": a maildir next hop is alone in its list; expected "
          "either one maildir:/path or smtp and lmtp next hops" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_set_err(cases[i].kv, cases[i].want);
}

Test(route, nexthop_length_limits)
{
    char kv[CONFIG_PATH_MAX + 64], want[ERRLEN], host[CONFIG_HOST_MAX + 1];

    /* a unix socket path fits sockaddr_un: 107 octets, not 108 */
    snprintf(kv, sizeof(kv), "relayhost=lmtp:unix:/%0106d", 0);
    config_defaults(&g_cfg);
    set_ok(&g_cfg, kv);
    cr_assert_eq(strlen(g_cfg.relayhost.hop[0].path), CONFIG_UNIX_PATH_MAX - 1);
    snprintf(kv, sizeof(kv), "relayhost=lmtp:unix:/%0107d", 0);
    snprintf(want, sizeof(want),
             "-o relayhost: \"lmtp:unix:/%053d...\": the path is 108 octets long; expected at "
             "most 107",
             0);
    expect_set_err(kv, want);

    /* a maildir path: CONFIG_PATH_MAX - 1 */
    snprintf(kv, sizeof(kv), "relayhost=maildir:/%0*d", CONFIG_PATH_MAX - 2, 0);
    set_ok(&g_cfg, kv);
    cr_assert_eq(strlen(g_cfg.relayhost.hop[0].path), CONFIG_PATH_MAX - 1);
    snprintf(kv, sizeof(kv), "relayhost=maildir:/%0*d", CONFIG_PATH_MAX - 1, 0);
    snprintf(want, sizeof(want),
             "-o relayhost: \"maildir:/%055d...\": the path is %d octets long; expected at most "
             "%d",
             0, CONFIG_PATH_MAX, CONFIG_PATH_MAX - 1);
    expect_set_err(kv, want);

    /* a host name: CONFIG_HOST_MAX - 1 */
    memset(host, 'a', sizeof(host));
    host[CONFIG_HOST_MAX - 1] = '\0';
    host[40] = '.';
    snprintf(kv, sizeof(kv), "relayhost=[%s]:25", host);
    set_ok(&g_cfg, kv);
    cr_assert_eq(strlen(g_cfg.relayhost.hop[0].host), CONFIG_HOST_MAX - 1);
    host[CONFIG_HOST_MAX - 1] = 'a';
    host[CONFIG_HOST_MAX] = '\0';
    snprintf(kv, sizeof(kv), "relayhost=%s", host);
    snprintf(want, sizeof(want),
             "-o relayhost: \"%s\": the host is %d octets long; expected at most %d", host,
             CONFIG_HOST_MAX, CONFIG_HOST_MAX - 1);
    expect_set_err(kv, want);
}

Test(route, too_many_hops)
{
    char kv[512];
    size_t o = (size_t)snprintf(kv, sizeof(kv), "relayhost=");

    for (int i = 1; i <= CONFIG_MAX_HOPS; i++)
        o += (size_t)snprintf(kv + o, sizeof(kv) - o, "%s[192.0.2.%d]", i > 1 ? "," : "", i);
    config_defaults(&g_cfg);
    set_ok(&g_cfg, kv);
    cr_assert_eq(g_cfg.relayhost.nhops, CONFIG_MAX_HOPS);
    snprintf(kv + o, sizeof(kv) - o, ",[192.0.2.99]");
    expect_set_err(kv, "-o relayhost: too many next hops; expected at most 8");

    /* the same limit for a route's hops */
    o = (size_t)snprintf(kv, sizeof(kv), "routes=example.com=");
    for (int i = 1; i <= CONFIG_MAX_HOPS + 1; i++)
        o += (size_t)snprintf(kv + o, sizeof(kv) - o, " [192.0.2.%d]", i);
    expect_set_err(kv, "-o routes: route \"example.com\": too many next hops; expected at most 8");
}

/* ---- relayhost and routes in YAML: messages name file, line and key ---- */

Test(route, relayhost_yaml_forms)
{
    load_ok("relayhost: \"[192.0.2.1]:25\"\n", &g_cfg);
    cr_assert_eq(g_cfg.relayhost.nhops, 1);
    load_ok("relayhost: \"[192.0.2.1]:25, [192.0.2.2]:25 smtp:relay.example\"\n", &g_cfg);
    cr_assert_eq(g_cfg.relayhost.nhops, 3);
    cr_assert_str_eq(hop_text(&g_cfg.relayhost.hop[2]), "smtp:[relay.example]:25");
    load_ok("relayhost:\n  - \"[192.0.2.1]:25\"\n  - lmtp:unix:/run/lmtp\n", &g_cfg);
    cr_assert_eq(g_cfg.relayhost.nhops, 2);
    cr_assert_str_eq(hop_text(&g_cfg.relayhost.hop[1]), "lmtp:unix:/run/lmtp");
    load_ok("relayhost: []\n", &g_cfg);
    cr_assert_eq(g_cfg.relayhost.nhops, 0);

    expect_load_err("reactors: 1\nrelayhost:\n  - \"[192.0.2.1]:25\"\n  - \"[::g]:25\"\n", 4,
                    "key 'relayhost': \"[::g]:25\": \"::g\" is not a valid IPv6 address");
    expect_load_err("relayhost:\n  - { host: x }\n", 2,
                    "key 'relayhost': an entry is a mapping; expected a next hop");
    expect_load_err("relayhost:\n  -\n", 2,
                    "key 'relayhost': an entry is empty; expected a next "
                    "hop");
    expect_load_err("relayhost:\n", 1,
                    "key 'relayhost': no value; expected a list of next hops (smtp:[host]:port, "
                    "lmtp:[host]:port, lmtp:unix:/path or maildir:/path)");
    expect_load_err("relayhost:\n  host: x\n", 1,
                    "key 'relayhost': the value is a mapping; expected a list of next hops "
                    "(smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or maildir:/path)");
    expect_load_err("\nrelayhost: \"smtp:[192.0.2.1]:99999\"\n", 2,
                    "key 'relayhost': \"smtp:[192.0.2.1]:99999\": port \"99999\" is not valid; "
                    "expected a number in 1..65535");
}

Test(route, routes_yaml_forms)
{
    load_ok("routes:\n"
            "  Example.COM: \"[192.0.2.1]:25 [192.0.2.2]:25\"\n"
            "  .example.org:\n"
            "    - lmtp:unix:/run/dovecot/lmtp\n"
            "  local.test: maildir:/srv/mail\n"
            "  flow.test: [\"[192.0.2.3]\", \"lmtp:[192.0.2.4]\"]\n"
            "  \"*\": smtp:[relay.example]:587\n",
            &g_cfg);
    finish_ok(&g_cfg);
    cr_assert_eq(g_cfg.nroutes, 5);
    cr_assert_str_eq(g_cfg.routes[0].domain, "example.com");
    cr_assert_eq(g_cfg.routes[0].hops.nhops, 2);
    cr_assert_str_eq(hop_text(&g_cfg.routes[0].hops.hop[1]), "smtp:[192.0.2.2]:25");
    cr_assert_str_eq(g_cfg.routes[1].domain, ".example.org");
    cr_assert_str_eq(hop_text(&g_cfg.routes[1].hops.hop[0]), "lmtp:unix:/run/dovecot/lmtp");
    cr_assert_str_eq(hop_text(&g_cfg.routes[2].hops.hop[0]), "maildir:/srv/mail");
    cr_assert_eq(g_cfg.routes[3].hops.nhops, 2);
    cr_assert_str_eq(hop_text(&g_cfg.routes[3].hops.hop[1]), "lmtp:[192.0.2.4]:24");
    cr_assert_str_eq(g_cfg.routes[4].domain, "*");
    cr_assert_str_eq(hop_text(&g_cfg.routes[4].hops.hop[0]), "smtp:[relay.example]:587");

    /* an empty mapping clears the routes; so does the -o text form given as a string */
    load_ok("routes: {}\n", &g_cfg);
    cr_assert_eq(g_cfg.nroutes, 0);
    load_ok("routes: \"a.test=[192.0.2.1], b.test=[192.0.2.2] [192.0.2.3]\"\n", &g_cfg);
    cr_assert_eq(g_cfg.nroutes, 2);
    cr_assert_eq(g_cfg.routes[1].hops.nhops, 2);
}

Test(route, routes_yaml_errors)
{
    /* a value error points at the value's (or the entry's) line */
    expect_load_err("routes:\n  example.com: \"[::g]\"\n", 2,
                    "key 'routes': route \"example.com\": \"[::g]\": \"::g\" is not a valid IPv6 "
                    "address");
    expect_load_err("routes:\n  example.com:\n    - \"[192.0.2.1]\"\n    - \"lmtp:unix:\"\n", 4,
                    "key 'routes': route \"example.com\": \"lmtp:unix:\": the path is empty; "
                    "expected smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or "
                    "maildir:/path");
    /* unquoted, a trailing ':' makes an entry a mapping */
    expect_load_err("routes:\n  example.com:\n    - lmtp:unix:\n", 3,
                    "key 'routes': route \"example.com\": an entry is a mapping; expected a next "
                    "hop");
    expect_load_err("routes:\n  example.com:\n    - [a, b]\n", 3,
                    "key 'routes': route \"example.com\": an entry is a sequence; expected a next "
                    "hop");
    /* a domain error, a missing or wrong-kind value point at the domain's line */
    expect_load_err("routes:\n  ex_ample.com: \"[192.0.2.1]\"\n", 2,
                    "key 'routes': \"ex_ample.com\" is not a valid domain; expected example.com, "
                    "or .example.com for its subdomains, or * for any other domain");
    expect_load_err("routes:\n  \"*.example.com\": \"[192.0.2.1]\"\n", 2,
                    "key 'routes': \"*.example.com\": write the subdomains of a domain as "
                    "\".example.com\"");
    expect_load_err("routes:\n  a.test: \"[192.0.2.1]\"\n  A.TEST: \"[192.0.2.2]\"\n", 3,
                    "key 'routes': route \"a.test\" is listed twice; expected each domain once");
    expect_load_err("routes:\n  a.test:\n", 2,
                    "key 'routes': route \"a.test\": no next hop; expected at least one of "
                    "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or maildir:/path");
    expect_load_err("routes:\n  a.test: []\n", 2,
                    "key 'routes': route \"a.test\": no next hop; expected at least one of "
                    "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or maildir:/path");
    expect_load_err("routes:\n  a.test: \"\"\n", 2,
                    "key 'routes': route \"a.test\": no next hop; expected at least one of "
                    "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or maildir:/path");
    expect_load_err("routes:\n  a.test:\n    host: x\n", 2,
                    "key 'routes': route \"a.test\": the next hops are a mapping; expected a next "
                    "hop or a list of next hops");
    expect_load_err("routes:\n  ? [a, b]\n  : x\n", 2,
                    "key 'routes': a domain is a sequence; expected a domain, .domain or *");
    expect_load_err("routes:\n  ~: \"[192.0.2.1]\"\n", 2,
                    "key 'routes': a domain is empty; expected a domain, .domain or *");
    expect_load_err("routes:\n  - a.test\n", 1,
                    "key 'routes': the value is a sequence; expected a mapping of recipient "
                    "domain to next hops");
    /* an unquoted "*" is a YAML alias: the syntax error says so */
    expect_load_err("routes:\n  *: x\n", 2,
                    "YAML syntax error: did not find expected alphabetic or numeric character "
                    "while scanning an alias");
}

Test(route, routes_o_forms)
{
    config_defaults(&g_cfg);
    set_ok(&g_cfg,
           "routes=example.com=[10.0.0.1]:25 [10.0.0.2]:25,.example.org=lmtp:unix:/run/lmtp");
    cr_assert_eq(g_cfg.nroutes, 2);
    cr_assert_str_eq(g_cfg.routes[0].domain, "example.com");
    cr_assert_eq(g_cfg.routes[0].hops.nhops, 2);
    cr_assert_str_eq(hop_text(&g_cfg.routes[0].hops.hop[0]), "smtp:[10.0.0.1]:25");
    cr_assert_str_eq(hop_text(&g_cfg.routes[0].hops.hop[1]), "smtp:[10.0.0.2]:25");
    cr_assert_str_eq(g_cfg.routes[1].domain, ".example.org");
    cr_assert_str_eq(hop_text(&g_cfg.routes[1].hops.hop[0]), "lmtp:unix:/run/lmtp");

    /* blanks around entries and between hops; a later -o replaces the whole map */
    set_ok(&g_cfg, "routes= A.test=[192.0.2.1]   [192.0.2.2] , *=maildir:/srv/all ,");
    cr_assert_eq(g_cfg.nroutes, 2);
    cr_assert_str_eq(g_cfg.routes[0].domain, "a.test");
    cr_assert_eq(g_cfg.routes[0].hops.nhops, 2);
    cr_assert_str_eq(g_cfg.routes[1].domain, "*");
    set_ok(&g_cfg, "routes=");
    cr_assert_eq(g_cfg.nroutes, 0);

    expect_set_err("routes=example.com", "-o routes: \"example.com\" has no '='; expected "
                                         "domain=next hop [next hop...], e.g. "
                                         "example.com=[192.0.2.25]:25");
    expect_set_err("routes=example.com=",
                   "-o routes: route \"example.com\": no next hop; expected at least one of "
                   "smtp:[host]:port, lmtp:[host]:port, lmtp:unix:/path or maildir:/path");
    expect_set_err("routes==[192.0.2.1]", "-o routes: empty domain; expected example.com, or "
                                          ".example.com for its subdomains");
    expect_set_err("routes=a.test=[192.0.2.1],a.test=[192.0.2.2]",
                   "-o routes: route \"a.test\" is listed twice; expected each domain once");
    expect_set_err("routes=a.test=smtp:[192.0.2.1]:0",
                   "-o routes: route \"a.test\": \"smtp:[192.0.2.1]:0\": port \"0\" is not "
                   "valid; expected a number in 1..65535");
    expect_set_err("routes=..example.com=[192.0.2.1]",
                   "-o routes: \"..example.com\" is not a valid domain; expected example.com, or "
                   ".example.com for its subdomains, or * for any other domain");
    expect_set_err("routes=example.com.=[192.0.2.1]",
                   "-o routes: \"example.com.\" is not a valid domain; expected example.com, or "
                   ".example.com for its subdomains, or * for any other domain");
}

Test(route, too_many_routes)
{
    static char kv[8192];
    size_t o = (size_t)snprintf(kv, sizeof(kv), "routes=");

    for (int i = 0; i < CONFIG_MAX_ROUTES; i++)
        o += (size_t)snprintf(kv + o, sizeof(kv) - o, "%sd%d.test=[192.0.2.1]", i ? "," : "", i);
    config_defaults(&g_cfg);
    set_ok(&g_cfg, kv);
    cr_assert_eq(g_cfg.nroutes, CONFIG_MAX_ROUTES);
    snprintf(kv + o, sizeof(kv) - o, ",one-more.test=[192.0.2.1]");
    expect_set_err(kv, "-o routes: too many routes; expected at most 64");
}

/* ---- resolution order ---- */

Test(route, default_is_maildir)
{
    const struct route *rt;

    config_defaults(&g_cfg);
    rt = lookup(&g_cfg, "example.com");
    cr_assert_eq(route_nhops(rt), 1);
    cr_assert_eq(route_hop(rt, 0)->transport, TRANSPORT_MAILDIR);
    cr_assert_str_eq(lookup_hop(&g_cfg, "example.com", 0), "maildir:./var/maildir");
    cr_assert_eq(route_hops(rt), &g_cfg.default_route);
    cr_assert_eq(lookup(&g_cfg, ""), rt, "no domain (postmaster) goes the same way");

    set_ok(&g_cfg, "maildir_dir=/srv/maildir");
    cr_assert_str_eq(lookup_hop(&g_cfg, "example.com", 0), "maildir:/srv/maildir");
}

Test(route, relayhost_then_default)
{
    config_defaults(&g_cfg);
    set_ok(&g_cfg, "relayhost=[192.0.2.1]:25,[192.0.2.2]:25");
    cr_assert_eq(route_hops(lookup(&g_cfg, "anything.test")), &g_cfg.relayhost);
    cr_assert_eq(route_nhops(lookup(&g_cfg, "anything.test")), 2);
    cr_assert_str_eq(lookup_hop(&g_cfg, "anything.test", 1), "smtp:[192.0.2.2]:25");
    /* routes without "*": unmatched domains still go to relayhost */
    set_ok(&g_cfg, "routes=example.com=lmtp:[192.0.2.9]");
    cr_assert_str_eq(lookup_hop(&g_cfg, "example.com", 0), "lmtp:[192.0.2.9]:24");
    cr_assert_eq(route_hops(lookup(&g_cfg, "other.test")), &g_cfg.relayhost);
    /* no relayhost: unmatched domains go to the maildir */
    set_ok(&g_cfg, "relayhost=");
    cr_assert_eq(route_hops(lookup(&g_cfg, "other.test")), &g_cfg.default_route);
}

Test(route, exact_suffix_star_order)
{
    config_defaults(&g_cfg);
    set_ok(&g_cfg, "routes=*=[192.0.2.250],"
                   ".example.com=[192.0.2.1],"
                   ".eu.example.com=[192.0.2.2],"
                   "example.com=[192.0.2.3],"
                   "mx.eu.example.com=[192.0.2.4],"
                   ".com=[192.0.2.5]");
    finish_ok(&g_cfg);
    /* exact beats any suffix, wherever it is listed */
    cr_assert_str_eq(lookup_hop(&g_cfg, "example.com", 0), "smtp:[192.0.2.3]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "mx.eu.example.com", 0), "smtp:[192.0.2.4]:25");
    /* the longest suffix wins, not the first listed */
    cr_assert_str_eq(lookup_hop(&g_cfg, "a.eu.example.com", 0), "smtp:[192.0.2.2]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "b.a.eu.example.com", 0), "smtp:[192.0.2.2]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "eu.example.com", 0), "smtp:[192.0.2.1]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "www.example.com", 0), "smtp:[192.0.2.1]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "other.com", 0), "smtp:[192.0.2.5]:25");
    /* ".example.com" is not "example.com" and does not match "badexample.com" */
    cr_assert_str_eq(lookup_hop(&g_cfg, "badexample.com", 0), "smtp:[192.0.2.5]:25");
    /* "*" takes the rest, before relayhost and the maildir */
    cr_assert_str_eq(lookup_hop(&g_cfg, "example.org", 0), "smtp:[192.0.2.250]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "", 0), "smtp:[192.0.2.250]:25");
    cr_assert_str_eq(lookup_hop(&g_cfg, "com", 0), "smtp:[192.0.2.250]:25");
}

Test(route, lookup_ignores_case_and_needs_no_nul)
{
    static const char buf[] = "EXAMPLE.Com@@";
    const struct route *rt;

    config_defaults(&g_cfg);
    set_ok(&g_cfg, "routes=Example.COM=[192.0.2.1],.Sub.Example.NET=[192.0.2.2]");
    rt = route_lookup(&g_cfg, slice_make(buf, 11));
    cr_assert_eq(route_hops(rt), &g_cfg.routes[0].hops);
    cr_assert_eq(route_hops(lookup(&g_cfg, "A.SUB.example.net")), &g_cfg.routes[1].hops);
    cr_assert_eq(route_hops(lookup(&g_cfg, "example.comx")), &g_cfg.default_route);
    cr_assert_eq(route_hops(lookup(&g_cfg, "xexample.com")), &g_cfg.default_route);
}

Test(route, same_route_same_pointer)
{
    config_defaults(&g_cfg);
    set_ok(&g_cfg, "routes=.example.com=[192.0.2.1]");
    cr_assert_eq(lookup(&g_cfg, "a.example.com"), lookup(&g_cfg, "b.example.com"));
    cr_assert_neq(lookup(&g_cfg, "a.example.com"), lookup(&g_cfg, "example.org"));
}

Test(route, count_and_at)
{
    config_defaults(&g_cfg);
    cr_assert_eq(route_count(&g_cfg), 1);
    cr_assert_eq(route_hops(route_at(&g_cfg, 0)), &g_cfg.default_route);

    set_ok(&g_cfg, "routes=a.test=[192.0.2.1],b.test=maildir:/srv/b");
    cr_assert_eq(route_count(&g_cfg), 3);
    cr_assert_eq(route_hops(route_at(&g_cfg, 0)), &g_cfg.routes[0].hops);
    cr_assert_eq(route_hops(route_at(&g_cfg, 1)), &g_cfg.routes[1].hops);
    cr_assert_eq(route_hops(route_at(&g_cfg, 2)), &g_cfg.default_route);

    set_ok(&g_cfg, "relayhost=[192.0.2.7]");
    cr_assert_eq(route_count(&g_cfg), 3);
    cr_assert_eq(route_hops(route_at(&g_cfg, 2)), &g_cfg.relayhost);

    /* with "*", neither relayhost nor the maildir can be reached */
    set_ok(&g_cfg, "relayhost=");
    set_ok(&g_cfg, "routes=a.test=[192.0.2.1],*=[192.0.2.2]");
    cr_assert_eq(route_count(&g_cfg), 2);
    cr_assert_eq(route_hops(route_at(&g_cfg, 1)), &g_cfg.routes[1].hops);
}

Test(route, route_at_out_of_range_is_a_bug, .signal = SIGABRT)
{
    config_defaults(&g_cfg);
    route_at(&g_cfg, 1);
}

Test(route, hop_out_of_range_is_a_bug, .signal = SIGABRT)
{
    config_defaults(&g_cfg);
    route_hop(lookup(&g_cfg, "example.com"), 1);
}

/* ---- hash ---- */

/* The documented definition, written out independently. */
static uint64_t
ref_hash(const char *text)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (const char *p = text; *p != '\0'; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

Test(route, hash_is_stable)
{
    uint64_t a, b;

    config_defaults(&g_cfg);
    a = route_hash(lookup(&g_cfg, "x.test"));
    cr_assert_eq(a, ref_hash("maildir:./var/maildir\n"));
    /* pinned: a change here moves every destination to another worker */
    cr_assert_eq(a, UINT64_C(0x9185ebc6cd5304d3), "0x%016llx", (unsigned long long)a);

    set_ok(&g_cfg, "relayhost=[192.0.2.1]:25,[192.0.2.2]:25");
    b = route_hash(lookup(&g_cfg, "x.test"));
    cr_assert_eq(b, ref_hash("smtp:[192.0.2.1]:25\nsmtp:[192.0.2.2]:25\n"));
}

Test(route, hash_follows_hops_not_domains)
{
    uint64_t a, b, c, d, e;

    config_defaults(&g_cfg);
    /* the same hops, written differently, under different domains */
    set_ok(&g_cfg, "routes=a.test=[192.0.2.1] [192.0.2.2],"
                   ".b.test=smtp:192.0.2.1:25 smtp:[192.0.2.2]:25,"
                   "c.test=[192.0.2.2] [192.0.2.1],"
                   "d.test=lmtp:[192.0.2.1]:25 [192.0.2.2],"
                   "e.test=[MX.example] [192.0.2.2]");
    a = route_hash(lookup(&g_cfg, "a.test"));
    b = route_hash(lookup(&g_cfg, "x.b.test"));
    c = route_hash(lookup(&g_cfg, "c.test"));
    d = route_hash(lookup(&g_cfg, "d.test"));
    e = route_hash(lookup(&g_cfg, "e.test"));
    cr_assert_eq(a, b);
    cr_assert_neq(a, c, "order matters: it is the failover order");
    cr_assert_neq(a, d, "the transport matters");
    cr_assert_neq(a, e);

    /* another configuration with the same hops: the same hash */
    config_defaults(&g_before);
    set_ok(&g_before, "relayhost=smtp:[192.0.2.1]:25 smtp:[192.0.2.2]:25");
    cr_assert_eq(route_hash(lookup(&g_before, "z.test")), a);
    set_ok(&g_before, "relayhost=[mx.example], [192.0.2.2]");
    cr_assert_eq(route_hash(lookup(&g_before, "z.test")), e);
}

/* ---- mynetworks ---- */

static bool
trusted(const char *addr)
{
    return route_client_trusted(&g_cfg, addr);
}

Test(route, mynetworks_default)
{
    config_defaults(&g_cfg);
    cr_assert(trusted("127.0.0.1"));
    cr_assert(trusted("127.255.255.254"));
    cr_assert(trusted("::1"));
    cr_assert(trusted("::ffff:127.0.0.1"), "IPv4-mapped counts as IPv4");
    cr_assert_not(trusted("128.0.0.1"));
    cr_assert_not(trusted("126.255.255.255"));
    cr_assert_not(trusted("::2"));
    cr_assert_not(trusted("::ffff:192.0.2.1"));
    cr_assert_not(trusted("::127.0.0.1"), "IPv4-compatible is not IPv4-mapped");
    cr_assert_not(trusted(""));
    cr_assert_not(trusted(NULL));
    cr_assert_not(trusted("localhost"));
    cr_assert_not(trusted("127.0.0.1:25"));
    cr_assert_not(trusted("[::1]"));
    cr_assert_not(trusted("fe80::1%lo"));
}

Test(route, mynetworks_prefix_edges)
{
    config_defaults(&g_cfg);

    set_ok(&g_cfg, "mynetworks=0.0.0.0/0");
    cr_assert(trusted("0.0.0.0"));
    cr_assert(trusted("255.255.255.255"));
    cr_assert(trusted("::ffff:203.0.113.9"));
    cr_assert_not(trusted("::1"), "an IPv4 network never covers IPv6");

    set_ok(&g_cfg, "mynetworks=::/0");
    cr_assert(trusted("::"));
    cr_assert(trusted("2001:db8::1"));
    cr_assert_not(trusted("192.0.2.1"), "::/0 does not cover IPv4 clients");
    cr_assert_not(trusted("::ffff:192.0.2.1"), "nor IPv4-mapped ones");

    set_ok(&g_cfg, "mynetworks=192.0.2.1/32");
    cr_assert(trusted("192.0.2.1"));
    cr_assert_not(trusted("192.0.2.0"));
    cr_assert_not(trusted("192.0.2.2"));

    set_ok(&g_cfg, "mynetworks=192.0.2.1"); /* a bare address is /32 */
    cr_assert_eq(g_cfg.mynetworks.a[0].prefix, 32);
    cr_assert(trusted("192.0.2.1"));
    cr_assert_not(trusted("192.0.2.3"));

    set_ok(&g_cfg, "mynetworks=192.0.2.64/27"); /* a prefix inside a byte */
    cr_assert(trusted("192.0.2.64"));
    cr_assert(trusted("192.0.2.95"));
    cr_assert_not(trusted("192.0.2.63"));
    cr_assert_not(trusted("192.0.2.96"));

    set_ok(&g_cfg, "mynetworks=2001:db8::1/128");
    cr_assert(trusted("2001:db8::1"));
    cr_assert(trusted("2001:DB8:0:0::1"));
    cr_assert_not(trusted("2001:db8::2"));

    set_ok(&g_cfg, "mynetworks=2001:db8::"); /* a bare address is /128 */
    cr_assert_eq(g_cfg.mynetworks.a[0].prefix, 128);

    set_ok(&g_cfg, "mynetworks=[2001:db8:1:2::]/64");
    cr_assert(trusted("2001:db8:1:2::1"));
    cr_assert(trusted("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    cr_assert_not(trusted("2001:db8:1:3::1"));
    cr_assert_not(trusted("2001:db8:1:1:ffff:ffff:ffff:ffff"));

    set_ok(&g_cfg, "mynetworks=2001:db8::/33");
    cr_assert(trusted("2001:db8:7fff::1"));
    cr_assert_not(trusted("2001:db8:8000::1"));
}

Test(route, mynetworks_mapped_and_masked)
{
    char buf[64];

    config_defaults(&g_cfg);
    /* an IPv4-mapped network is stored, and matched, as IPv4 */
    set_ok(&g_cfg, "mynetworks=::ffff:198.51.100.0/120");
    cr_assert_not(g_cfg.mynetworks.a[0].v6);
    cr_assert_eq(g_cfg.mynetworks.a[0].prefix, 24);
    cr_assert(trusted("198.51.100.7"));
    cr_assert(trusted("::ffff:198.51.100.7"));
    cr_assert_not(trusted("198.51.101.7"));

    /* host bits are accepted and cleared */
    set_ok(&g_cfg, "mynetworks=10.1.2.3/8, 2001:db8::ffff/32");
    cr_assert_eq(g_cfg.mynetworks.a[0].prefix, 8);
    cr_assert_str_eq(inet_ntop(AF_INET, g_cfg.mynetworks.a[0].addr, buf, sizeof(buf)), "10.0.0.0");
    cr_assert_str_eq(inet_ntop(AF_INET6, g_cfg.mynetworks.a[1].addr, buf, sizeof(buf)),
                     "2001:db8::");
    cr_assert(trusted("10.200.0.1"));
    cr_assert(trusted("2001:db8:ffff::1"));

    set_ok(&g_cfg, "mynetworks=");
    cr_assert_eq(g_cfg.mynetworks.n, 0);
    cr_assert_not(trusted("127.0.0.1"), "an empty mynetworks trusts nobody");
}

Test(route, mynetworks_forms_and_errors)
{
    static char kv[4096];
    size_t o;

    load_ok("mynetworks:\n  - 10.0.0.0/8\n  - \"[::1]/128\"\n  - 192.0.2.1\n", &g_cfg);
    cr_assert_eq(g_cfg.mynetworks.n, 3);
    load_ok("mynetworks: \"10.0.0.0/8 172.16.0.0/12,192.168.0.0/16\"\n", &g_cfg);
    cr_assert_eq(g_cfg.mynetworks.n, 3);
    load_ok("mynetworks: []\n", &g_cfg);
    cr_assert_eq(g_cfg.mynetworks.n, 0);

    expect_set_err("mynetworks=10.0.0.0/33",
                   "-o mynetworks: \"10.0.0.0/33\": prefix \"/33\" is not valid; expected "
                   "/0../32");
    expect_set_err("mynetworks=::/129",
                   "-o mynetworks: \"::/129\": prefix \"/129\" is not valid; expected /0../128");
    expect_set_err("mynetworks=10.0.0.0/",
                   "-o mynetworks: \"10.0.0.0/\": prefix \"/\" is not valid; expected /0../32");
    expect_set_err("mynetworks=10.0.0.0/8x",
                   "-o mynetworks: \"10.0.0.0/8x\": prefix \"/8x\" is not valid; expected /0../32");
    expect_set_err("mynetworks=10.0.0/8",
                   "-o mynetworks: \"10.0.0/8\": \"10.0.0\" is not a valid IPv4 address");
    expect_set_err("mynetworks=localhost",
                   "-o mynetworks: \"localhost\": \"localhost\" is not a valid IPv4 address");
    expect_set_err("mynetworks=::g/64",
                   "-o mynetworks: \"::g/64\": \"::g\" is not a valid IPv6 address");
    expect_set_err("mynetworks=[10.0.0.0]/8",
                   "-o mynetworks: \"[10.0.0.0]/8\": only an IPv6 address is written in brackets");
    expect_set_err("mynetworks=/8", "-o mynetworks: \"/8\" has no address; expected "
                                    "address/prefix, e.g. 10.0.0.0/8 or ::1/128");
    expect_set_err("mynetworks=10.0.0.0/8,10.9.9.9/8",
                   "-o mynetworks: \"10.9.9.9/8\" is the same network as an earlier entry "
                   "(10.0.0.0/8); expected each network once");
    expect_load_err("mynetworks:\n  - 10.0.0.0/8\n  - 10.0.0.0/99\n", 3,
                    "key 'mynetworks': \"10.0.0.0/99\": prefix \"/99\" is not valid; expected "
                    "/0../32");
    expect_load_err("mynetworks:\n  - [a]\n", 2,
                    "key 'mynetworks': an entry is a sequence; expected a network");

    o = (size_t)snprintf(kv, sizeof(kv), "mynetworks=");
    for (int i = 0; i < CONFIG_MAX_NETWORKS; i++)
        o += (size_t)snprintf(kv + o, sizeof(kv) - o, "%s10.%d.0.0/16", i ? "," : "", i);
    config_defaults(&g_cfg);
    set_ok(&g_cfg, kv);
    cr_assert_eq(g_cfg.mynetworks.n, CONFIG_MAX_NETWORKS);
    snprintf(kv + o, sizeof(kv) - o, ",192.0.2.0/24");
    expect_set_err(kv, "-o mynetworks: too many networks; expected at most 64");
}

/* ---- relay_domains ---- */

static bool
relay(const char *domain)
{
    return route_relay_allowed(&g_cfg, slice_make(domain, strlen(domain)));
}

Test(route, relay_domains_matching)
{
    config_defaults(&g_cfg);
    cr_assert_not(relay("example.com"), "nothing by default");

    set_ok(&g_cfg, "relay_domains=Example.COM .example.org");
    cr_assert_str_eq(g_cfg.relay_domains[0], "example.com");
    cr_assert(relay("example.com"));
    cr_assert(relay("EXAMPLE.com"));
    cr_assert_not(relay("sub.example.com"), "an exact entry does not cover subdomains");
    cr_assert_not(relay("xexample.com"));
    cr_assert_not(relay("example.co"));
    cr_assert(relay("a.example.org"));
    cr_assert(relay("b.A.Example.Org"));
    cr_assert_not(relay("example.org"), "a .suffix entry does not cover the domain itself");
    cr_assert_not(relay("badexample.org"));
    cr_assert_not(relay(""));
}

Test(route, relay_domains_forms_and_errors)
{
    static char kv[80000];
    size_t o;

    load_ok("relay_domains:\n  - example.com\n  - .example.com\n", &g_cfg);
    cr_assert_eq(g_cfg.nrelay_domains, 2);
    load_ok("relay_domains: \"a.test, b.test c.test\"\n", &g_cfg);
    cr_assert_eq(g_cfg.nrelay_domains, 3);
    cr_assert_str_eq(g_cfg.relay_domains[2], "c.test");

    expect_set_err("relay_domains=*", "-o relay_domains: \"*\" is not a valid domain; expected "
                                      "example.com, or .example.com for its subdomains");
    expect_set_err("relay_domains=*.example.com",
                   "-o relay_domains: \"*.example.com\": write the subdomains of a domain as "
                   "\".example.com\"");
    expect_set_err("relay_domains=example.com,EXAMPLE.com",
                   "-o relay_domains: \"EXAMPLE.com\" is listed twice; expected each domain once");
    expect_set_err("relay_domains=exa$mple.com",
                   "-o relay_domains: \"exa$mple.com\" is not a valid domain; expected "
                   "example.com, or .example.com for its subdomains");
    expect_load_err("relay_domains:\n  - ok.test\n  - \"bad domain\"\n", 3,
                    "key 'relay_domains': \"bad domain\" is not a valid domain; expected "
                    "example.com, or .example.com for its subdomains");

    o = (size_t)snprintf(kv, sizeof(kv), "relay_domains=");
    for (int i = 0; i < CONFIG_MAX_RELAY_DOMAINS; i++)
        o += (size_t)snprintf(kv + o, sizeof(kv) - o, "%sd%d.test", i ? "," : "", i);
    config_defaults(&g_cfg);
    set_ok(&g_cfg, kv);
    cr_assert_eq(g_cfg.nrelay_domains, CONFIG_MAX_RELAY_DOMAINS);
    snprintf(kv + o, sizeof(kv) - o, ",one-more.test");
    expect_set_err(kv, "-o relay_domains: too many domains; expected at most 256");
}

/* ---- addresses ---- */

static void
expect_domain(const char *addr, const char *want)
{
    struct slice d = route_domain_of(slice_make(addr, strlen(addr)));

    cr_assert_eq(d.len, strlen(want), "%s", addr);
    cr_assert(memcmp(d.p, want, d.len) == 0, "%s", addr);
    cr_assert(d.p >= addr && d.p + d.len == addr + strlen(addr), "%s: not a slice of it", addr);
}

Test(route, domain_of)
{
    expect_domain("user@example.com", "example.com");
    expect_domain("User@Example.COM", "Example.COM");
    expect_domain("\"a@b\"@example.org", "example.org");
    expect_domain("postmaster", "");
    expect_domain("user@", "");
    expect_domain("@example.com", "example.com");
    expect_domain("", "");
    cr_assert_eq(route_domain_of(slice_make(NULL, 0)).len, 0);
}

/* ---- the whole configuration: dump, load back, same bytes ---- */

Test(route, dump_round_trip_with_every_delivery_key)
{
    static char buf[1 << 20];
    char err[ERRLEN];
    struct tmp t;
    FILE *f;
    long len;

    config_defaults(&g_cfg);
    set_ok(&g_cfg, "workers=7");
    set_ok(&g_cfg, "mynetworks=10.1.2.3/8 192.0.2.1,[2001:DB8::]/48,::ffff:198.51.100.0/120");
    set_ok(&g_cfg, "relay_domains=Example.COM,.example.org");
    set_ok(&g_cfg, "relayhost=smtp:[2001:db8::25]:2525,MX.Example.net,lmtp:[192.0.2.9]");
    set_ok(&g_cfg, "routes=example.com=[10.0.0.1]:25 [10.0.0.2]:25,"
                   ".example.org=lmtp:unix:/run/dovecot/lmtp,"
                   "local.test=maildir:/srv/mail");
    set_ok(&g_cfg, "maildir_dir=/srv/\"odd\" maildir #2");
    set_ok(&g_cfg, "destination_concurrency_limit=3");
    set_ok(&g_cfg, "smtp_connection_reuse_count_limit=0");
    set_ok(&g_cfg, "smtp_connect_timeout=45s");
    set_ok(&g_cfg, "smtp_helo_timeout=1h");
    set_ok(&g_cfg, "smtp_data_done_timeout=1500ms");
    set_ok(&g_cfg, "smtp_connection_cache_time_limit=0s");
    set_ok(&g_cfg, "minimal_backoff_time=1s");
    set_ok(&g_cfg, "maximal_backoff_time=1d");
    set_ok(&g_cfg, "maximal_queue_lifetime=100d");
    set_ok(&g_cfg, "bounce_queue_lifetime=7h");
    finish_ok(&g_cfg);

    f = fmemopen(buf, sizeof(buf), "w");
    cr_assert_not_null(f);
    config_dump(&g_cfg, f);
    len = ftell(f);
    cr_assert_eq(fclose(f), 0);
    cr_assert(len > 0 && (size_t)len < sizeof(buf));
    cr_assert(strstr(buf, "\nroutes:\n"
                          "  \"example.com\":\n"
                          "    - \"smtp:[10.0.0.1]:25\"\n"
                          "    - \"smtp:[10.0.0.2]:25\"\n"
                          "  \".example.org\":\n"
                          "    - \"lmtp:unix:/run/dovecot/lmtp\"\n") != NULL,
              "%s", buf);
    cr_assert(strstr(buf, "\nrelayhost:\n"
                          "  - \"smtp:[2001:db8::25]:2525\"\n"
                          "  - \"smtp:[mx.example.net]:25\"\n"
                          "  - \"lmtp:[192.0.2.9]:24\"\n") != NULL,
              "%s", buf);
    cr_assert(strstr(buf, "\nmynetworks:\n"
                          "  - \"10.0.0.0/8\"\n"
                          "  - \"192.0.2.1/32\"\n"
                          "  - \"2001:db8::/48\"\n"
                          "  - \"198.51.100.0/24\"\n") != NULL,
              "%s", buf);
    cr_assert(strstr(buf, "\nrelay_domains:\n  - \"example.com\"\n  - \".example.org\"\n") != NULL,
              "%s", buf);

    cr_assert_eq(load(buf, &g_out, err, &t), 0, "%s\n%s", err, buf);
    memcpy(g_out.file, g_cfg.file, sizeof(g_out.file));
    cr_assert(memcmp(&g_out, &g_cfg, sizeof(g_cfg)) == 0, "round trip differs:\n%s", buf);
    /* and the routes resolve the same way */
    cr_assert_str_eq(lookup_hop(&g_out, "x.example.org", 0), "lmtp:unix:/run/dovecot/lmtp");
    cr_assert_str_eq(lookup_hop(&g_out, "nowhere.test", 1), "smtp:[mx.example.net]:25");
    cr_assert_eq(route_hash(lookup(&g_out, "example.com")),
                 route_hash(lookup(&g_cfg, "example.com")));
}
