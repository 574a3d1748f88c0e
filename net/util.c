/*
 * util.c: file-system helpers. Start-up only (blocking).
 */
#include "net/util.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "core/compiler.h"

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
            if (mkdir(buf, mode) == -1 && errno != EEXIST)
                return -errno;
            buf[i] = c;
        }
    }
    return 0;
}
