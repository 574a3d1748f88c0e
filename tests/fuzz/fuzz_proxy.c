/*
 * fuzz_proxy.c: libFuzzer entry point for core/proxy.c. libFuzzer hands
 * over a heap copy of exactly size octets, so ASan catches any over-read.
 * The invariants are checked with abort(), not assert(), so that they hold in
 * an NDEBUG build too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct proxy_info pi, again;
    const char *why = NULL;
    size_t used = 0, used2 = 0;
    enum proxy_result rc = proxy_parse(buf, size, &pi, &used, &why);

    switch (rc) {
    case PROXY_OK:
        /* the header is in the input, and it is one whole header */
        if (used < 15 || used > size || used > PROXY_V2_MAX)
            abort();
        if (pi.version == 1 ? used > PROXY_V1_MAX : pi.version != 2)
            abort();
        if (memchr(pi.src_text, '\0', PROXY_ADDR_MAX) == NULL ||
            memchr(pi.dst_text, '\0', PROXY_ADDR_MAX) == NULL)
            abort();
        if (pi.local != (pi.src_text[0] == '\0') || pi.local != (pi.dst_text[0] == '\0'))
            abort();
        /* what follows the header does not change it (field by field: padding) */
        if (proxy_parse(buf, used, &again, &used2, &why) != PROXY_OK || used2 != used ||
            again.version != pi.version || again.local != pi.local || again.v6 != pi.v6 ||
            again.dst_v6 != pi.dst_v6 || memcmp(again.src, pi.src, 16) != 0 ||
            memcmp(again.dst, pi.dst, 16) != 0 || again.src_port != pi.src_port ||
            again.dst_port != pi.dst_port || strcmp(again.src_text, pi.src_text) != 0 ||
            strcmp(again.dst_text, pi.dst_text) != 0)
            abort();
        /* and one octet less is still a prefix of it */
        if (proxy_parse(buf, used - 1, &again, &used2, &why) != PROXY_NEED_MORE)
            abort();
        break;
    case PROXY_NEED_MORE:
        /* a header never needs more than PROXY_V2_MAX octets */
        if (size >= PROXY_V2_MAX)
            abort();
        break;
    case PROXY_BAD:
        if (why == NULL || why[0] == '\0')
            abort();
        /* BAD is final: no prefix is OK, and the shortest BAD prefix (found by
           bisection, so cheap) follows a prefix that needs more */
        if (size > 0 && proxy_parse(buf, size - 1, &again, &used2, &why) == PROXY_OK)
            abort();
        {
            size_t lo = 0, hi = size; /* parse(lo) is not BAD (len 0), parse(hi) is */

            while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;

                if (proxy_parse(buf, mid, &again, &used2, &why) == PROXY_BAD)
                    hi = mid;
                else
                    lo = mid;
            }
            if (proxy_parse(buf, hi - 1, &again, &used2, &why) != PROXY_NEED_MORE ||
                proxy_parse(buf, hi, &again, &used2, &why) != PROXY_BAD)
                abort();
        }
        break;
    default:
        abort();
    }
    return 0;
}
