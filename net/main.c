#include <stdio.h>

#include "net/tls.h"

int
main(void)
{
    printf("%s\n", tls_library_version());
    return 0;
}
