#!/bin/sh
# ringmail's whole test suite, as CI runs it:
#   1. install the Debian packages the build and the tests need;
#   2. debug build (AddressSanitizer + UndefinedBehaviorSanitizer): unit tests
#      and integration tests against the real binary and real peers;
#   3. tsan build: the multi-threaded stress tests under ThreadSanitizer
#      (plain programs: Criterion cannot start under ThreadSanitizer);
#   4. release build (-O2, LTO, jemalloc): unit and integration tests again;
#   5. clang-format check of every C file.
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

echo "== clang-format =="
# shellcheck disable=SC2046
clang-format --dry-run -Werror $(git ls-files '*.c' '*.h')
echo "all tests passed"
