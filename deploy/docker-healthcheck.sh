#!/bin/bash
# docker-healthcheck.sh: the HEALTHCHECK of ringmail's container image
# (installed as /usr/local/bin/docker-healthcheck by deploy/Dockerfile).
#
#   docker-healthcheck [PATH]      GET PATH (default /healthz) on the admin
#                                  endpoint; exit 0 on a 200 answer, else 1
#
# The image has no curl: bash's /dev/tcp makes the connection, and one HTTP/1.0
# request needs nothing more (the endpoint answers one request per connection,
# Connection: close). The address is the port of RINGMAIL_ADMIN_LISTEN, the
# entrypoint's override of admin_listen, on loopback; else 127.0.0.1:9025, the
# image's configuration. With admin_token_file, set RINGMAIL_ADMIN_TOKEN_FILE
# too (the entrypoint passes it on as admin_token_file): the probe sends its
# token.
set -u

path=${1:-/healthz}
listen=${RINGMAIL_ADMIN_LISTEN:-127.0.0.1:9025}
port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case "$host" in
"" | 0.0.0.0 | localhost) host=127.0.0.1 ;;
:: | ::0) host=::1 ;;
esac
if [ -z "$port" ]; then
    echo "docker-healthcheck: admin endpoint off (admin_listen is empty)" >&2
    exit 1
fi

auth=""
if [ -n "${RINGMAIL_ADMIN_TOKEN_FILE:-}" ]; then
    token=$(tr -d '\r\n' <"$RINGMAIL_ADMIN_TOKEN_FILE") || exit 1
    auth="Authorization: Bearer $token"$'\r\n'
fi

exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n%s\r\n' "$path" "$host" "$auth" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-
case "$status" in
"HTTP/1."[01]" 200"*) exit 0 ;;
esac
echo "docker-healthcheck: GET $path on $host:$port: ${status:-no answer}" >&2
exit 1
