#!/bin/sh
# Install the Debian 12 packages ringmail needs. Usage (as root):
#   sh deploy/debian-packages.sh build    # to build and run ringmail
#   sh deploy/debian-packages.sh test     # also what the tests and benchmarks use
set -eu
BUILD="build-essential cmake ninja-build pkg-config liburing-dev android-libboringssl-dev \
libjemalloc-dev libcriterion-dev libcyaml-dev libyaml-dev libxxhash-dev libcrypt-dev libjansson-dev"
# prometheus: only its promtool, which lints the /metrics output (test_admin.py);
# it pulls a few JavaScript libraries for its web UI, nothing that runs
TEST="python3 swaks postfix clang-format openssl libnet-ssleay-perl haproxy whois mandoc prometheus clang libclang-rt-14-dev"

# python3-yaml: tests/integration/test_deploy.py reads the Kubernetes manifests
TEST="$TEST python3-yaml"
want="$BUILD"
[ "${1:-build}" = "test" ] && want="$BUILD $TEST"

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "ringmail: missing Debian packages:$missing (run this script as root)" >&2
    exit 1
fi
# postfix's installer asks how to configure the system MTA: the tests only use
# its smtp-source and smtp-sink programs, so it is installed unconfigured.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
