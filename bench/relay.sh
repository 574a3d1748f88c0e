#!/usr/bin/env bash
# bench/relay.sh: relay throughput and CPU per message, ringmail against Postfix.
#
#   smtp-source -> ringmail -> smtp-sink      (durability=fsync, spool under /var/tmp)
#   smtp-source -> Postfix  -> smtp-sink      (a private instance with its defaults)
#   smtp-source -> smtp-sink                  (direct: the ceiling of the pair)
#
# in the same run, on 127.0.0.1 only, for 8 loads:
#   message size -l 1024 (MSGS_SMALL messages) and -l 102400 (MSGS_LARGE),
#   20 and 100 parallel sessions (-s), with and without -d
#   (smtp-source -d: don't disconnect after a message, send the next one over the
#   same connection; without -d every message gets its own TCP connection + EHLO).
# Each system is started once and warmed up; the runs are interleaved
# (rep -> load -> system) and the table shows the median of REPS runs of:
#   msg/s       messages / time from smtp-source's start until the system's own
#               smtp-sink has counted all of them (smtp-sink -c, polled every 5 ms)
#   CPU us/msg  utime+stime of all of the system's processes / messages:
#               ringmail: its PID (every thread, io_uring workers included);
#               Postfix:  the master and every descendant alive (from /proc/*/stat)
#                         + the master's cutime+cstime (children that exited and were reaped);
#               sampled before the run and again once the CPU use has settled
#               after the last delivery (queue-file removal and the like included).
#
# Bounded: each run waits at most RUN_TIMEOUT s for its deliveries; runs that
# would start after TOTAL_BUDGET s are skipped. Only processes this script
# started are signalled, by PID; the private Postfix is stopped with
# `postfix -c DIR stop` (in the EXIT trap). The system Postfix (/etc/postfix) is
# not touched, and nothing is sent anywhere but 127.0.0.1.
#
# Environment: RINGMAIL_BIN (build/release/ringmail), MSGS_SMALL (5000),
# MSGS_LARGE (1000), REPS (3), RUN_TIMEOUT (90), TOTAL_BUDGET (840),
# REACTORS (0), WORKERS (0) (0 = one per CPU), BENCH_DIR (/var/tmp),
# KEEP=1 keeps the spool, logs and Postfix instance directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
BIN=${RINGMAIL_BIN:-$src/build/release/ringmail}
MSGS_SMALL=${MSGS_SMALL:-5000}
MSGS_LARGE=${MSGS_LARGE:-1000}
REPS=${REPS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
TOTAL_BUDGET=${TOTAL_BUDGET:-840}
REACTORS=${REACTORS:-0}
WORKERS=${WORKERS:-0}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SMTP_SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
POSTFIX_BIN=$(command -v postfix || echo /usr/sbin/postfix)

me=relay.sh
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$here/lib.sh" # PY, die, log, helper, free_port, wait_port, stop_pid, postfix_*, remove_work
[ -x "$BIN" ] || die "ringmail binary not found: $BIN (set RINGMAIL_BIN)"
[ -x "$SMTP_SOURCE" ] || die "smtp-source not found (apt-get install postfix)"
[ -x "$SMTP_SINK" ] || die "smtp-sink not found (apt-get install postfix)"
[ -x "$POSTFIX_BIN" ] || die "postfix not found (apt-get install postfix)"
[ -x "$PY" ] || die "$PY not found"
[ "$(id -u)" = 0 ] || die "must run as root (a private Postfix instance is started)"
id postfix >/dev/null 2>&1 || die "user postfix does not exist"
getent group postdrop >/dev/null || die "group postdrop does not exist"

work=$(mktemp -d "$BENCH_DIR/ringmail-relay.XXXXXX")
chmod 755 "$work" # Postfix's daemons (user postfix) must reach their queue under it
results=$work/results.tsv
: >"$results"
start_time=$SECONDS
hz=$(getconf CLK_TCK)
pfdir=$work/postfix          # the private instance: config, queue, data, maillog
declare -A sink_pid=() sink_out=() sink_total=() target_port=()
rm_pid=
sink_port=

write_helper # $work/helper.py: the timed run (5 ms polling) and process-tree CPU

cleanup() {
    set +e
    stop_pid "$rm_pid" ringmail
    rm_pid=
    postfix_stop "$pfdir"
    for s in "${!sink_pid[@]}"; do stop_pid "${sink_pid[$s]}" "smtp-sink ($s)"; done
    remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_sink NAME: one smtp-sink per system, its running counter into a file;
# sets sink_port (not run in $(...): the PID must stay in this shell)
start_sink() {
    local name=$1 port
    port=$(free_port)
    sink_port=$port
    sink_out[$name]=$work/sink-$name.count
    # -u: required as root; -m 300: handle all 100+20 sessions; -c: counters to the file only
    "$SMTP_SINK" -u nobody -c -m 300 -h "sink-$name.bench.example" "127.0.0.1:$port" 1024 \
        </dev/null >"${sink_out[$name]}" 2>"$work/sink-$name.err" &
    sink_pid[$name]=$!
    sink_total[$name]=0
    wait_port "$port" "${sink_pid[$name]}" || { cat "$work/sink-$name.err" >&2; die "smtp-sink $name did not start"; }
}

start_ringmail() {
    local sinkport=$1 port
    port=$(free_port)
    "$BIN" -o "listen=127.0.0.1:$port" -o "spool_dir=$work/ringmail/spool" -o user=root \
        -o durability=fsync -o "reactors=$REACTORS" -o "workers=$WORKERS" \
        -o "relayhost=[127.0.0.1]:$sinkport" -o max_connections=20000 \
        -o myhostname=ringmail.bench.example -o admin_listen= \
        </dev/null >/dev/null 2>>"$work/ringmail/ringmail.log" &
    rm_pid=$!
    wait_port "$port" "$rm_pid" || { cat "$work/ringmail/ringmail.log" >&2; die "ringmail did not start"; }
    target_port[ringmail]=$port
}

# A private Postfix instance (bench/lib.sh): own main.cf/master.cf, queue, data directory and
# log file; Postfix defaults otherwise (cleanup fsyncs every queue file before 250).
start_postfix() {
    local sinkport=$1 port
    port=$(free_port)
    postfix_configure "$pfdir" "$port" <<EOF
relayhost = [127.0.0.1]:$sinkport
default_process_limit = 200
EOF
    postfix_start "$pfdir" "$port"
    target_port[postfix]=$port
}

system_pid() {
    case $1 in
    direct) echo "${sink_pid[direct]}" ;;
    ringmail) echo "$rm_pid" ;;
    postfix) echo "$pf_master" ;;
    esac
}

# wait until SYSTEM's sink has counted everything sent to it so far (at most 60 s)
drain() {
    local sys=$1 c
    for _ in $(seq 1 600); do
        c=$(helper count "${sink_out[$sys]}")
        [ "$c" -ge "${sink_total[$sys]}" ] && return 0
        sleep 0.1
    done
    log "$sys: $(( sink_total[$sys] - c )) messages from earlier runs still undelivered after 60 s; later runs of $sys are suspect"
    sink_total[$sys]=$c
}

# one measurement: SYSTEM LOAD REP MSGS SMTP-SOURCE-ARGS...
measure() {
    local sys=$1 load=$2 rep=$3 msgs=$4
    shift 4
    local pid spid base c0 c1 n1 m0 m1 k0 k1 out wall got rc srcwall srccpu
    if (( SECONDS - start_time > TOTAL_BUDGET )); then
        log "time budget of ${TOTAL_BUDGET}s used up, skipping $sys $load #$rep"
        return 0
    fi
    drain "$sys"
    pid=$(system_pid "$sys")
    base=$(helper count "${sink_out[$sys]}")
    spid=${sink_pid[$sys]}
    read -r c0 _ k0 _ m0 < <(helper cpu "$pid" "$spid") || die "$sys (pid $pid) or its sink is gone"
    out=$(helper run "${sink_out[$sys]}" "$base" "$msgs" "$RUN_TIMEOUT" "$work/source-$sys-$load-$rep.out" -- \
        "$SMTP_SOURCE" "$@" -M client.bench.example -f bench@example.org -t sink@example.net \
        "127.0.0.1:${target_port[$sys]}")
    read -r wall got rc srcwall srccpu <<<"$out"
    read -r c1 n1 k1 _ m1 < <(helper settle "$pid" "$spid") || die "$sys (pid $pid) or its sink is gone"
    sink_total[$sys]=$(( base + msgs ))
    if [ "$rc" != 0 ]; then
        log "$sys $load #$rep: smtp-source exit $rc: $(tail -3 "$work/source-$sys-$load-$rep.out" | tr '\n' ' ')"
    fi
    # system msgs wall cpu delivered rc source-wall machine-busy sink-cpu source-cpu(s)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$load" "$rep" "$msgs" "$wall" "$(( c1 - c0 ))" \
        "$got" "$rc" "$srcwall" "$(( m1 - m0 ))" "$(( k1 - k0 ))" "$srccpu" >>"$results"
    awk -v s="$sys" -v l="$load" -v r="$rep" -v w="$wall" -v sw="$srcwall" -v hz="$hz" -v c=$(( c1 - c0 )) \
        -v k=$(( k1 - k0 )) -v m=$(( m1 - m0 )) -v sc="$srccpu" -v g="$got" -v n="$msgs" -v p="$n1" -v rc="$rc" \
        'BEGIN { printf "  %-8s %-5s #%d: %6.2fs until delivered (smtp-source done %6.2fs); cpu s: system %5.2f, sink %5.2f, smtp-source %5.2f, machine %5.2f; %d/%d delivered, %d procs, exit %s\n",
                 s, l, r, w, sw, c / hz, (s == "direct" ? 0 : k / hz), sc, m / hz, g, n, p, rc }' >&2
}

# warm-up: 200 messages through each system, untimed; fails fast if a path is broken
warm_up() {
    local sys=$1 base out got
    base=$(helper count "${sink_out[$sys]}")
    out=$(helper run "${sink_out[$sys]}" "$base" 200 30 "$work/source-$sys-warmup.out" -- \
        "$SMTP_SOURCE" -s 20 -m 200 -l 1024 -M client.bench.example -f bench@example.org \
        -t sink@example.net "127.0.0.1:${target_port[$sys]}")
    read -r _ got _ _ <<<"$out"
    sink_total[$sys]=$(( base + 200 ))
    [ "$got" -ge 200 ] || {
        tail -20 "$work/source-$sys-warmup.out" "$work/ringmail/ringmail.log" "$pfdir/maillog" >&2 2>/dev/null
        die "warm-up: $sys delivered $got of 200 messages in 30 s"
    }
}

log "$("$BIN" --version | tr '\n' ' ')"
log "Postfix $(postconf -d -h mail_version), $(nproc) CPUs, kernel $(uname -r)"
log "work dir $work ($(df -T "$work" | awk 'NR==2 { print $2 }'))"
mkdir -p "$work/ringmail"
start_sink direct
p_direct=$sink_port
target_port[direct]=$p_direct
start_sink ringmail
p_rmsink=$sink_port
start_sink postfix
p_pfsink=$sink_port
start_ringmail "$p_rmsink"
start_postfix "$p_pfsink"
log "ringmail pid $rm_pid on :${target_port[ringmail]}, Postfix master $pf_master on :${target_port[postfix]}, sinks on :$p_direct (direct) :$p_rmsink (ringmail) :$p_pfsink (postfix)"
systems=(direct ringmail postfix)
for sys in "${systems[@]}"; do warm_up "$sys"; done
log "warm-up done after $(( SECONDS - start_time ))s"

loads=(s20 s100 s20d s100d b20 b100 b20d b100d)
declare -A load_args=(
    [s20]="-s 20 -l 1024"    [s100]="-s 100 -l 1024"    [s20d]="-s 20 -l 1024 -d"    [s100d]="-s 100 -l 1024 -d"
    [b20]="-s 20 -l 102400"  [b100]="-s 100 -l 102400"  [b20d]="-s 20 -l 102400 -d"  [b100d]="-s 100 -l 102400 -d"
)
for rep in $(seq 1 "$REPS"); do
    for load in "${loads[@]}"; do
        msgs=$MSGS_SMALL
        [ "${load:0:1}" = b ] && msgs=$MSGS_LARGE
        for sys in "${systems[@]}"; do
            # shellcheck disable=SC2086 # split the arguments on purpose
            measure "$sys" "$load" "$rep" "$msgs" ${load_args[$load]} -m "$msgs"
        done
    done
done

# errors, deferrals, refusals seen by the systems themselves
rm_events=$(grep -o 'event=[a-z_]*' "$work/ringmail/ringmail.log" | sort | uniq -c | awk '{ printf "%s%s=%s", sep, substr($2, 7), $1; sep=" " }')
pf_sent=$(grep -c 'status=sent' "$pfdir/maillog" || true)
pf_bad=$(grep -E 'status=(deferred|bounced)|reject:|warning:|fatal:|panic:' "$pfdir/maillog" | grep -vc 'dict_nis_init: NIS domain name not set' || true)
pf_nis=$(grep -c 'dict_nis_init: NIS domain name not set' "$pfdir/maillog" || true)

# ---- report: medians, Markdown ----
{
    echo
    awk -F'\t' -v reps="$REPS" -v hz="$hz" \
        -v a_s20="${load_args[s20]}" -v a_s100="${load_args[s100]}" -v a_s20d="${load_args[s20d]}" -v a_s100d="${load_args[s100d]}" \
        -v a_b20="${load_args[b20]}" -v a_b100="${load_args[b100]}" -v a_b20d="${load_args[b20d]}" -v a_b100d="${load_args[b100d]}" '
function median(arr, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
function cell(k, what) {
    if (!(k in n)) return "-"
    return sprintf(what == "rate" ? "%.0f" : "%.0f", what == "rate" ? mr[k] : mc[k]) \
        (bad[k] ? sprintf(" (%d/%d failed)", bad[k], n[k]) : "")
}
{
    k = $1 SUBSEP $2; n[k]++; msgs[$2] = $4
    ok = ($7 >= $4 && $8 == "0")
    rate[k, n[k]] = ($5 > 0 && ok) ? $7 / $5 : 0
    cpu[k, n[k]] = ($7 > 0) ? $6 / hz / $7 * 1e6 : 0
    if (!ok) bad[k]++
}
END {
    split("s20 s100 s20d s100d b20 b100 b20d b100d", loads, " "); split("direct ringmail postfix", sys, " ")
    args["s20"] = a_s20; args["s100"] = a_s100; args["s20d"] = a_s20d; args["s100d"] = a_s100d
    args["b20"] = a_b20; args["b100"] = a_b100; args["b20d"] = a_b20d; args["b100d"] = a_b100d
    for (li = 1; li <= 8; li++) for (si = 1; si <= 3; si++) {
        k = sys[si] SUBSEP loads[li]
        if (!(k in n)) continue
        for (i = 1; i <= n[k]; i++) { r[i] = rate[k, i]; c[i] = cpu[k, i] }
        mr[k] = median(r, n[k]); mc[k] = median(c, n[k])
    }
    printf "| load (smtp-source) | msgs | direct msg/s | ringmail msg/s | Postfix msg/s | msg/s ringmail/Postfix | ringmail CPU us/msg | Postfix CPU us/msg | CPU ringmail/Postfix | sink CPU us/msg (direct) |\n"
    printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    for (li = 1; li <= 8; li++) {
        l = loads[li]; d = "direct" SUBSEP l; rk = "ringmail" SUBSEP l; pk = "postfix" SUBSEP l
        if (!((d in n) || (rk in n) || (pk in n))) continue
        rr = ((rk in mr) && (pk in mr) && mr[pk] > 0) ? sprintf("%.2f", mr[rk] / mr[pk]) : "-"
        rc = ((rk in mc) && (pk in mc) && mc[pk] > 0) ? sprintf("%.2f", mc[rk] / mc[pk]) : "-"
        printf "| `%s` | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", args[l], msgs[l], \
            cell(d, "rate"), cell(rk, "rate"), cell(pk, "rate"), rr, cell(rk, "cpu"), cell(pk, "cpu"), rc, cell(d, "cpu")
    }
    printf "\nMedian of %d runs each. msg/s: messages / (first smtp-source connection .. last message counted by the system'"'"'s smtp-sink). ", reps
    printf "CPU: utime+stime of all the system'"'"'s processes (ringmail: its PID; Postfix: master + descendants + reaped children), excluding smtp-source and smtp-sink; direct: the smtp-sink process.\n"
}' "$results"
    echo
    echo "ringmail log events: $rm_events"
    echo "Postfix maillog: $pf_sent status=sent, $pf_bad deferred/bounced/reject/warning/fatal lines, $pf_nis harmless NIS warnings (one per new smtpd: the default alias_maps includes nis:mail.aliases)"
    echo "$(nproc) CPUs, kernel $(uname -r), spool and Postfix queue on $(df -T "$work" | awk 'NR==2 { print $2 }') ($BENCH_DIR); $("$BIN" --version | head -1); Postfix $(postconf -d -h mail_version); total $(( SECONDS - start_time ))s."
}
