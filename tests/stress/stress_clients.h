/*
 * stress_clients.h: the client half shared by the stress programs: a free
 * loopback port, a bounded reply reader, and CLIENTS client threads each
 * sending MSGS messages over fresh connections, recording every queue id
 * that got its 250 in qids[]. The including program defines STRESS_NAME,
 * CLIENTS and MSGS first. Every wait is bounded (10 s per reply).
 */
#ifndef RINGMAIL_TESTS_STRESS_CLIENTS_H
#define RINGMAIL_TESTS_STRESS_CLIENTS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/envelope.h"
#include "stress.h"

static uint16_t port;
static char qids[CLIENTS * MSGS][QID_LEN + 1];

static unsigned
free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind");
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &sl) == 0, "getsockname");
    close(fd);
    return ntohs(sin.sin_port);
}

/* Read until the buffer holds `want` final reply lines; 10 s at most. */
static void
replies(int fd, char *buf, size_t cap, int want)
{
    size_t len = 0;

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int seen = 0;
        ssize_t n;

        for (const char *l = buf; len > 0 && l < buf + len;) {
            const char *e = memchr(l, '\n', (size_t)(buf + len - l));

            if (e == NULL)
                break;
            if (e - l >= 4 && l[3] == ' ')
                seen++;
            l = e + 1;
        }
        if (seen >= want)
            return;
        CHECK(poll(&p, 1, 10000) == 1, "no reply within 10 s (have: %.*s)", (int)len, buf);
        n = read(fd, buf + len, cap - 1 - len);
        CHECK(n > 0, "connection closed early");
        len += (size_t)n;
        buf[len] = '\0';
    }
}

static void *
client(void *arg)
{
    int id = (int)(intptr_t)arg;
    static const char cmds[] = "EHLO stress.example\r\nMAIL FROM:<s@example.org>\r\n"
                               "RCPT TO:<r@example.net>\r\nDATA\r\n";
    static const char body[] = "Subject: stress\r\n\r\n..line\r\n.\r\nQUIT\r\n";

    for (int m = 0; m < MSGS; m++) {
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
        char buf[4096];
        const char *q;
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect");
        replies(fd, buf, sizeof(buf), 1);
        CHECK(write(fd, cmds, sizeof(cmds) - 1) == (ssize_t)sizeof(cmds) - 1, "write");
        replies(fd, buf, sizeof(buf), 4);
        CHECK(strstr(buf, "354 ") != NULL, "no 354: %s", buf);
        CHECK(write(fd, body, sizeof(body) - 1) == (ssize_t)sizeof(body) - 1, "write");
        replies(fd, buf, sizeof(buf), 2);
        q = strstr(buf, "250 2.0.0 Ok: queued as ");
        CHECK(q != NULL, "no 250: %s", buf);
        memcpy(qids[id * MSGS + m], q + 24, QID_LEN);
        close(fd);
    }
    return NULL;
}

#endif
