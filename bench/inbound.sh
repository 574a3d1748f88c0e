#!/usr/bin/env bash
# bench/inbound.sh: inbound SMTP throughput of ringmail against Postfix's smtp-sink.
#
# For each load
#   (a) smtp-source -s 20  -m $MSGS -l 1024        one message per connection
#   (b) smtp-source -s 100 -m $MSGS -l 1024 -d     many messages per connection
# and each server
#   ringmail durability=none, ringmail durability=fsync, smtp-sink (stores nothing)
# it runs smtp-source $REPS times on loopback and reports the median of
#   msg/s        messages / wall time of smtp-source
#   CPU us/msg   server process utime+stime (/proc/PID/stat, every thread) / messages
# and the ratio ringmail / smtp-sink, as a Markdown table on stdout.
#
# The spool lives under /var/tmp (a real disk, not tmpfs: fsync costs what it costs).
# ringmail runs with delivery: hold (it keeps what it accepts), so the figure is
# the cost of accepting durably; bench/relay.sh measures accepting and delivering.
# Every run is bounded (RUN_TIMEOUT seconds); the whole script stops itself
# after TOTAL_BUDGET seconds. Only processes this script started are signalled, by PID.
#
# Environment: RINGMAIL_BIN (default build/release/ringmail), MSGS (20000),
# REPS (3), RUN_TIMEOUT (90), TOTAL_BUDGET (570), REACTORS (0 = one per CPU),
# BENCH_DIR (/var/tmp), KEEP=1 keeps the spool and logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
BIN=${RINGMAIL_BIN:-$src/build/release/ringmail}
MSGS=${MSGS:-20000}
REPS=${REPS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
TOTAL_BUDGET=${TOTAL_BUDGET:-570}
REACTORS=${REACTORS:-0}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)

me=inbound.sh
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$here/lib.sh" # die, log, free_port, wait_port, stop_pid, remove_work
[ -x "$BIN" ] || die "ringmail binary not found: $BIN (set RINGMAIL_BIN)"
[ -x "$SMTP_SOURCE" ] || die "smtp-source not found (apt-get install postfix)"
[ -x "$SMTP_SINK" ] || die "smtp-sink not found (apt-get install postfix)"

work=$(mktemp -d "$BENCH_DIR/ringmail-bench.XXXXXX")
results=$work/results.tsv
: >"$results"
server_pid=
start_time=$SECONDS
hz=$(getconf CLK_TCK)

cleanup() {
    stop_pid "$server_pid" server
    remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# utime+stime of a process (all its threads) in clock ticks
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat") || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split the fields on purpose
    set -- $stat
    echo $(( ${12} + ${13} ))
}

# start_server KIND PORT RUNDIR
start_server() {
    local kind=$1 port=$2 dir=$3
    mkdir -p "$dir"
    case $kind in
    ringmail-none|ringmail-fsync)
        "$BIN" -o "listen=127.0.0.1:$port" -o "spool_dir=$dir/spool" -o user=root \
            -o "durability=${kind#ringmail-}" -o "reactors=$REACTORS" \
            -o max_connections=20000 -o myhostname=bench.example \
            -o delivery=hold -o admin_listen= \
            </dev/null >/dev/null 2>>"$dir/server.log" &
        ;;
    smtp-sink)
        # stores nothing; -u is required when started as root
        local u=()
        [ "$(id -u)" = 0 ] && u=(-u nobody)
        "$SMTP_SINK" "${u[@]}" -h bench.example -m 1000 "127.0.0.1:$port" 1024 \
            </dev/null >/dev/null 2>>"$dir/server.log" &
        ;;
    esac
    server_pid=$!
    wait_port "$port" "$server_pid" || { cat "$dir/server.log" >&2; die "$kind did not start"; }
}

# one measurement: KIND LOADNAME REP SMTP-SOURCE-ARGS...
measure() {
    local kind=$1 load=$2 rep=$3
    shift 3
    local port dir t0 t1 c0 c1 rc wall cpu accepted
    if (( SECONDS - start_time > TOTAL_BUDGET )); then
        log "time budget of ${TOTAL_BUDGET}s used up, skipping $kind $load #$rep"
        return 0
    fi
    port=$(free_port)
    dir=$work/$kind-$load-$rep
    start_server "$kind" "$port" "$dir"
    c0=$(cpu_ticks "$server_pid")
    t0=$(date +%s.%N)
    rc=0
    timeout "$RUN_TIMEOUT" "$SMTP_SOURCE" "$@" -M client.example -f bench@example.org \
        -t sink@example.net "127.0.0.1:$port" >"$dir/source.out" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$server_pid")
    stop_pid "$server_pid" "$kind"
    server_pid=
    accepted=$MSGS
    if [ "${kind%%-*}" = ringmail ]; then
        accepted=$(grep -c 'event=received ' "$dir/server.log" || true)
    fi
    if [ "$rc" != 0 ]; then
        log "$kind $load #$rep: smtp-source exit $rc: $(tail -3 "$dir/source.out")"
    fi
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    cpu=$(awk -v d=$(( c1 - c0 )) -v hz="$hz" 'BEGIN { printf "%.3f", d / hz }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$load" "$rep" "$wall" "$cpu" "$accepted" "$rc" \
        >>"$results"
    printf '  %-15s %-4s #%d: %6.2fs wall, %6.2fs server cpu, %d accepted, exit %d\n' \
        "$kind" "$load" "$rep" "$wall" "$cpu" "$accepted" "$rc" >&2
    [ "${KEEP:-0}" = 1 ] || rm -rf "$dir/spool"
}

log "$("$BIN" --version | tr '\n' ' ')"
log "$(nproc) CPUs, kernel $(uname -r), spool under $work ($(df -T "$work" | awk 'NR==2 { print $2 }'))"

loads=(a b)
declare -A load_args=(
    [a]="-s 20 -m $MSGS -l 1024"
    [b]="-s 100 -m $MSGS -l 1024 -d"
)
kinds=(smtp-sink ringmail-none ringmail-fsync)
# interleave the servers within each repetition so drift in the machine's load hits all alike
for rep in $(seq 1 "$REPS"); do
    for load in "${loads[@]}"; do
        for kind in "${kinds[@]}"; do
            # shellcheck disable=SC2086
            measure "$kind" "$load" "$rep" ${load_args[$load]}
        done
    done
done

# ---- report: medians, Markdown ----
awk -F'\t' -v msgs="$MSGS" -v reps="$REPS" -v la="${load_args[a]}" -v lb="${load_args[b]}" '
function median(arr, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
{
    k = $1 SUBSEP $2; n[k]++
    rate[k, n[k]] = ($4 > 0 && $7 == 0) ? $6 / $4 : 0
    cpu[k, n[k]] = ($6 > 0) ? $5 / $6 * 1e6 : 0
    acc[k, n[k]] = $6
    if ($7 != 0) bad[k]++
}
END {
    split("a b", loads, " "); split("smtp-sink ringmail-none ringmail-fsync", kinds, " ")
    desc["a"] = "smtp-source " la; desc["b"] = "smtp-source " lb
    for (li = 1; li <= 2; li++) for (ki = 1; ki <= 3; ki++) {
        k = kinds[ki] SUBSEP loads[li]
        if (!(k in n)) continue
        for (i = 1; i <= n[k]; i++) { r[i] = rate[k, i]; c[i] = cpu[k, i]; a[i] = acc[k, i] }
        mr[k] = median(r, n[k]); mc[k] = median(c, n[k]); ma[k] = median(a, n[k])
    }
    printf "\n| load | server | msg/s (median of %d) | CPU us/msg (server) | accepted | msg/s vs smtp-sink | CPU/msg vs smtp-sink |\n", reps
    printf "|---|---|---:|---:|---:|---:|---:|\n"
    for (li = 1; li <= 2; li++) {
        sk = "smtp-sink" SUBSEP loads[li]
        for (ki = 1; ki <= 3; ki++) {
            k = kinds[ki] SUBSEP loads[li]
            if (!(k in n)) continue
            rr = (sk in mr && mr[sk] > 0) ? sprintf("%.2f", mr[k] / mr[sk]) : "-"
            rc = (sk in mc && mc[sk] > 0) ? sprintf("%.2f", mc[k] / mc[sk]) : "-"
            if (kinds[ki] == "smtp-sink") { rr = "1.00"; rc = "1.00" }
            printf "| (%s) `%s` | %s%s | %.0f | %.1f | %d | %s | %s |\n", loads[li], desc[loads[li]], kinds[ki], \
                (bad[k] ? sprintf(" (%d runs failed)", bad[k]) : ""), mr[k], mc[k], ma[k], rr, rc
        }
    }
}' "$results"
echo
echo "$(nproc) CPUs, loopback, client and server on the same machine; total $(( SECONDS - start_time ))s."
