/*
 * util.c: file-system and address helpers. Start-up only (blocking).
 */
#include "net/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "core/compiler.h"
#include "core/config.h"

int
mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];

            buf[i] = '\0';
            /* parents ringmail creates are 0755 whatever the umask: the folder kept
               private (the spool: 0700) must stay reachable by `user` after the drop */
            if (mkdir(buf, c == '\0' ? mode : 0755) == 0) {
                if (c != '\0' && chmod(buf, 0755) == -1)
                    return -errno;
            } else if (errno != EEXIST) {
                return -errno;
            }
            buf[i] = c;
        }
    }
    return 0;
}

int
hostport_sockaddr(const struct config_hostport *hp, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, hp->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(hp->port);
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, hp->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(hp->port);
        *len = sizeof(*sin6);
        return 0;
    }
    if (strcmp(hp->host, "localhost") == 0) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(hp->port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        *len = sizeof(*sin);
        return 0;
    }
    if (hp->host[0] == '\0' || strcmp(hp->host, "*") == 0) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(hp->port);
        sin6->sin6_addr = in6addr_any;
        *len = sizeof(*sin6);
        return 0;
    }
    return -EINVAL;
}
