/*
 * Tests for admin_reload() (net/admin.c): the endpoint is opened on a free
 * loopback port with a token file, requests are served by the test thread
 * (admin_poll_fds/poll/admin_handle, as net/main.c's loop does), and the
 * token file is rewritten between reloads: a good file replaces the token,
 * an empty or missing one keeps the token in service.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/config.h"
#include "net/admin.h"

static char dir[64], tokpath[128];

static void
write_file(const char *text)
{
    FILE *f = fopen(tokpath, "w");

    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(tokpath, 0600), 0);
}

static unsigned
free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* GET /healthz with this bearer token, served by a; the status code. */
static int
status_with(struct admin *a, unsigned port, const char *token)
{
    struct sockaddr_in sin = { .sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), st = -1;
    char req[256], resp[1024];
    size_t got = 0;

    cr_assert_geq(fd, 0);
    cr_assert(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 || errno == EINPROGRESS);
    snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n", token);
    for (int i = 0; i < 200 && st < 0; i++) {
        struct pollfd pfd[ADMIN_POLLFDS];
        unsigned n = admin_poll_fds(a, pfd, ADMIN_POLLFDS);
        ssize_t r;

        (void)poll(pfd, n, 10);
        admin_handle(a, pfd, n);
        if (req[0] != '\0' && send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req))
            req[0] = '\0';
        r = recv(fd, resp + got, sizeof(resp) - 1 - got, 0);
        if (r > 0)
            got += (size_t)r;
        resp[got] = '\0';
        if (strstr(resp, "\r\n\r\n") != NULL)
            cr_assert_eq(sscanf(resp, "HTTP/1.1 %d", &st), 1, "%s", resp);
    }
    close(fd);
    for (int i = 0; i < 20; i++) { /* let the endpoint close its side */
        struct pollfd pfd[ADMIN_POLLFDS];
        unsigned n = admin_poll_fds(a, pfd, ADMIN_POLLFDS);

        (void)poll(pfd, n, 5);
        admin_handle(a, pfd, n);
    }
    cr_assert_gt(st, 0, "no answer");
    return st;
}

Test(admin_reload, token_replaced_or_kept)
{
    struct ringmail_config cfg;
    struct admin_sources src = { NULL, 0, NULL, 0, "test", 0 };
    struct admin *a = NULL;
    char err[CONFIG_ERR_MAX], kv[256];
    unsigned port = free_port();

    snprintf(dir, sizeof(dir), "/tmp/rm-admin-reload-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(tokpath, sizeof(tokpath), "%s/token", dir);
    write_file("first-token\n");
    config_defaults(&cfg);
    snprintf(kv, sizeof(kv), "admin_listen=127.0.0.1:%u", port);
    cr_assert_eq(config_set(&cfg, kv, err, sizeof(err)), 0, "%s", err);
    snprintf(kv, sizeof(kv), "admin_token_file=%s", tokpath);
    cr_assert_eq(config_set(&cfg, kv, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(admin_open(&cfg, &src, &a, err, sizeof(err)), 0, "%s", err);
    cr_assert_not_null(a);

    cr_assert_eq(status_with(a, port, "first-token"), 200);
    cr_assert_eq(status_with(a, port, "second-token"), 401);

    write_file("second-token\n");
    cr_assert_eq(admin_reload(a, &cfg), 0);
    cr_assert_eq(status_with(a, port, "second-token"), 200);
    cr_assert_eq(status_with(a, port, "first-token"), 401);

    write_file("\n"); /* empty: refused, the token in service stays */
    cr_assert_eq(admin_reload(a, &cfg), -1);
    cr_assert_eq(status_with(a, port, "second-token"), 200);

    write_file("two words\n"); /* a blank inside: refused */
    cr_assert_eq(admin_reload(a, &cfg), -1);
    cr_assert_eq(status_with(a, port, "second-token"), 200);

    cr_assert_eq(unlink(tokpath), 0); /* missing: refused */
    cr_assert_eq(admin_reload(a, &cfg), -1);
    cr_assert_eq(status_with(a, port, "second-token"), 200);

    cr_assert_eq(admin_reload(NULL, &cfg), 0);
    admin_close(a);
    rmdir(dir);
}
