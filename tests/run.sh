#!/bin/sh
# ringmail's whole test suite, as CI runs it:
#   1. install the Debian packages the build and the tests need;
#   2. debug build (AddressSanitizer + UndefinedBehaviorSanitizer): unit tests
#      and integration tests against the real binary and real peers;
#   3. tsan build: the multi-threaded stress tests under ThreadSanitizer
#      (plain programs: Criterion cannot start under ThreadSanitizer);
#   4. release build (-O2, LTO, jemalloc): unit and integration tests again;
#   5. fuzz build (clang, libFuzzer, ASan + UBSan): the regression inputs,
#      then every harness in tests/fuzz for FUZZ_SECONDS seconds (default 60);
#   6. the module layering rule (core/ pure, queue/ without io_uring) and
#      clang-format on every C file.
set -eu
cd "$(dirname "$0")/.."
sh deploy/debian-packages.sh test

jobs=$(nproc)
for preset in debug tsan release; do
    echo "== $preset =="
    cmake --preset "$preset" >/dev/null
    cmake --build --preset "$preset" -j "$jobs"
done

echo "== debug: unit + integration (ASan, UBSan) =="
ctest --preset debug
echo "== tsan: stress tests of the threaded code (ThreadSanitizer) =="
ctest --preset tsan -R '^stress_'
echo "== release: unit + integration =="
ctest --preset release

echo "== fuzz: libFuzzer harnesses, ${FUZZ_SECONDS:-60}s each (clang, ASan, UBSan) =="
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"
sh tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"

echo "== module layering =="
# core/ is pure (no sockets, io_uring, TLS or threads); queue/ never sees io_uring or net/
if grep -lE '#include [<"](net/|queue/|liburing|openssl/|pthread|sys/socket)' core/*.c core/*.h; then
    echo "core/ must not include net/, queue/, liburing, TLS, threads or sockets" >&2
    exit 1
fi
if grep -lE '#include [<"](net/|liburing)' queue/*.c queue/*.h; then
    echo "queue/ must not include net/ or liburing" >&2
    exit 1
fi

echo "== clang-format =="
# shellcheck disable=SC2046
clang-format --dry-run -Werror $(git ls-files '*.c' '*.h')
echo "all tests passed"
