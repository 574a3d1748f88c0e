#!/bin/bash
# docker-entrypoint.sh: the entrypoint of ringmail's container image
# (installed as /usr/local/bin/docker-entrypoint by deploy/Dockerfile).
#
# Environment variables RINGMAIL_<KEY>=value become `-o key=value` (KEY lower
# cased), placed after `-c` and before the container's arguments, so that
# they override the configuration file and an explicit `-o` argument
# overrides them:
#
#   RINGMAIL_RELAYHOST='[10.0.0.25]:25'   ->  -o 'relayhost=[10.0.0.25]:25'
#   RINGMAIL_ADMIN_LISTEN=                ->  -o admin_listen=          (empty: off)
#   RINGMAIL_SMTP_TLS_CAFILE=/ca.pem      ->  -o smtp_tls_CAfile=/ca.pem
#
# Not configuration keys, and so not passed on:
#   RINGMAIL_CONFIG                the configuration file (default
#                                  /etc/ringmail/ringmail.yml)
#   names with SERVICE_HOST, SERVICE_PORT or PORT as a word, which Kubernetes
#   (service links, for a Service named ringmail...) and Docker links set.
#   No ringmail key has "port" in its name.
#
# Arguments:
#   (none), or options first (-o KEY=VALUE, -t, -v...)   run ringmail with them
#   ringmail [options]                                    the same
#   queue list|show|flush|hold|release|delete ...        ringmail's queue commands,
#                                                         with the same -c and -o
#   anything else (sh, bash...)                           exec'd as it is
#
# ringmail is exec'd, so it is the container's PID 1 and receives docker
# stop's (or the kubelet's) SIGTERM itself: it drains and exits 0.
set -eu

config=${RINGMAIL_CONFIG:-/etc/ringmail/ringmail.yml}

overrides=()
# "${!RINGMAIL_@}": the names of the variables that start with RINGMAIL_,
# sorted, so that the order of the -o options does not depend on the
# environment's order
for name in "${!RINGMAIL_@}"; do
    key=${name#RINGMAIL_}
    case "$key" in
    CONFIG) continue ;;
    *SERVICE_HOST | *SERVICE_PORT | *SERVICE_PORT_* | PORT | *_PORT | PORT_* | *_PORT_*)
        echo "docker-entrypoint: $name ignored (a service link, not a configuration key)" >&2
        continue
        ;;
    "" | *[!A-Za-z0-9_]*) continue ;;
    esac
    key=${key,,}
    # the one key that is not all lower case, spelt as Postfix spells it
    case "$key" in
    smtp_tls_cafile) key=smtp_tls_CAfile ;;
    esac
    overrides+=(-o "$key=${!name}")
done

if [ $# -gt 0 ] && [ "$1" = ringmail ]; then
    shift
fi
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ] || [ "$1" = queue ]; then
    exec ringmail -c "$config" "${overrides[@]}" "$@"
fi
exec "$@"
