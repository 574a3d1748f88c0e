#!/usr/bin/env bash
# bench/tls.sh: the cost of STARTTLS, ringmail against Postfix, in the same run.
#
# Load generator: bench/tls_source (C, BoringSSL; Postfix's smtp-source has no
# TLS), the same code for both modes: a TLS run differs from a plaintext run
# only by STARTTLS, the handshake and the record layer. Loads, on 127.0.0.1:
#   a   tls_source -s 20 -m MSGS_A -n 1 -l 1024      one message per connection:
#       220, EHLO, [STARTTLS, handshake, EHLO], MAIL, RCPT, DATA, QUIT
#   b   tls_source -s 20 -m MSGS_B -n 100 -l 1024    100 messages per connection
#   hs  tls_source -s 20 -m HANDSHAKES -H            connections with no message:
#       plain: 220, EHLO, QUIT (the connection's own cost)
#       full:  220, EHLO, STARTTLS, full handshake, QUIT (no resumption)
#       resume: the same, resuming with the newest TLS 1.3 ticket of the thread
# each plaintext and with STARTTLS (-T), against
#   rm-none   ringmail durability=none,  delivery=hold, reactors=1
#   rm-fsync  ringmail durability=fsync, delivery=hold, reactors=1   (a and b only)
#   postfix   a private Postfix instance, smtpd_tls_security_level=may, every
#             message put on hold (check_client_access static:HOLD): smtpd +
#             cleanup (fsync) + the hold queue; nothing is delivered
# all with the same self-signed EC P-256 certificate (openssl, in the work dir).
# The systems are started once, warmed up, and the runs interleaved
# (rep -> load -> mode -> system). The tables show the median of REPS runs of
#   msg/s (conn/s)   messages (connections) / wall time of tls_source
#   CPU us/msg       utime+stime of the server's processes / messages (connections):
#                    ringmail: its PID (every thread); Postfix: the master, every
#                    live descendant and the master's cutime+cstime (reaped children),
#                    as bench/relay.sh counts it; sampled before the run and after the
#                    CPU use has settled (at most 4 s)
# and the ratios TLS / plaintext. tls_source's own CPU (the client does about as
# much TLS work as the server) is reported too: on a 2-CPU machine it bounds msg/s.
#
# Bounded: each run RUN_TIMEOUT s; runs that would start after TOTAL_BUDGET s are
# skipped. Only processes this script started are signalled, by PID; the private
# Postfix is stopped with `postfix -c DIR stop`. /etc/postfix is not touched.
#
# Environment: RINGMAIL_BIN (build/release/ringmail), TLS_SOURCE
# (build/release/bench/tls_source: cmake --build --preset release --target tls_source),
# MSGS_A (3000), MSGS_B (6000), HANDSHAKES (4000), SESSIONS (20), REPS (3),
# RUN_TIMEOUT (90), TOTAL_BUDGET (840), POSTFIX (1; 0 = ringmail only, no root needed
# for Postfix), BENCH_DIR (/var/tmp), KEEP=1 keeps the work directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
BIN=${RINGMAIL_BIN:-$src/build/release/ringmail}
TLS_SOURCE=${TLS_SOURCE:-$src/build/release/bench/tls_source}
MSGS_A=${MSGS_A:-3000}
MSGS_B=${MSGS_B:-6000}
HANDSHAKES=${HANDSHAKES:-4000}
SESSIONS=${SESSIONS:-20}
REPS=${REPS:-3}
RUN_TIMEOUT=${RUN_TIMEOUT:-90}
TOTAL_BUDGET=${TOTAL_BUDGET:-840}
USE_POSTFIX=${POSTFIX:-1}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
POSTFIX_BIN=$(command -v postfix || echo /usr/sbin/postfix)
POSTSUPER=$(command -v postsuper || echo /usr/sbin/postsuper)

me=tls.sh
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$here/lib.sh" # PY, die, log, helper, free_port, wait_port, stop_pid, postfix_*, remove_work
[ -x "$BIN" ] || die "ringmail binary not found: $BIN (set RINGMAIL_BIN)"
[ -x "$TLS_SOURCE" ] || die "tls_source not found: $TLS_SOURCE (cmake --build --preset release --target tls_source)"
[ -x "$PY" ] || die "$PY not found"
command -v openssl >/dev/null || die "openssl not found"
if [ "$USE_POSTFIX" = 1 ]; then
    [ -x "$POSTFIX_BIN" ] || die "postfix not found (apt-get install postfix), or POSTFIX=0"
    [ "$(id -u)" = 0 ] || die "must run as root for the private Postfix instance (or POSTFIX=0)"
    id postfix >/dev/null 2>&1 || die "user postfix does not exist"
    getent group postdrop >/dev/null || die "group postdrop does not exist"
fi

work=$(mktemp -d "$BENCH_DIR/ringmail-tls.XXXXXX")
chmod 755 "$work" # Postfix's daemons (user postfix) must reach their queue under it
results=$work/results.tsv
: >"$results"
start_time=$SECONDS
hz=$(getconf CLK_TCK)
pfdir=$work/postfix
pfconf=$pfdir/etc
declare -A pid_of=() port_of=()

write_helper # $work/helper.py: process-tree CPU (as bench/relay.sh counts it)

cleanup() {
    set +e
    for s in rm-none rm-fsync; do stop_pid "${pid_of[$s]:-}" "$s"; done
    postfix_stop "$pfdir"
    remove_work
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the certificate: self-signed EC P-256 ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench.example" -addext "subjectAltName=DNS:bench.example" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/openssl.log" ||
    { cat "$work/openssl.log" >&2; die "openssl req failed"; }
chmod 600 "$work/key.pem"

# start_ringmail NAME DURABILITY (not in $(...): the PID must stay in this shell)
start_ringmail() {
    local name=$1 dur=$2 port
    port=$(free_port)
    mkdir -p "$work/$name"
    "$BIN" -o "listen=127.0.0.1:$port" -o "spool_dir=$work/$name/spool" -o user=root \
        -o "durability=$dur" -o reactors=1 -o delivery=hold \
        -o max_connections=20000 -o myhostname=ringmail.bench.example -o admin_listen= \
        -o "tls_cert_file=$work/cert.pem" -o "tls_key_file=$work/key.pem" \
        </dev/null >/dev/null 2>>"$work/$name/ringmail.log" &
    pid_of[$name]=$!
    port_of[$name]=$port
    wait_port "$port" "${pid_of[$name]}" || { cat "$work/$name/ringmail.log" >&2; die "ringmail ($name) did not start"; }
}

# A private Postfix instance (bench/lib.sh, as in bench/relay.sh) with STARTTLS offered and
# every message put on hold: smtpd, cleanup (fsync before 250), trivial-rewrite;
# qmgr never sees the messages, nothing is delivered.
start_postfix() {
    local port
    port=$(free_port)
    postfix_configure "$pfdir" "$port" <<EOF
# STARTTLS offered, as ringmail's smtpd_tls_security_level: may
smtpd_tls_cert_file = $work/cert.pem
smtpd_tls_key_file = $work/key.pem
smtpd_tls_security_level = may
# keep every message, like ringmail's delivery: hold (the hold queue)
smtpd_client_restrictions = check_client_access static:HOLD
# no local delivery here: no alias database to open (there is no /etc/aliases.db)
alias_maps =
alias_database =
# belt and braces: should a message ever leave the hold queue, it is deferred
defer_transports = smtp relay local virtual
EOF
    postfix_start "$pfdir" "$port"
    pid_of[postfix]=$pf_master
    port_of[postfix]=$port
}

# messages the system has accepted so far
accepted() {
    case $1 in
    rm-*) grep -c 'event=received ' "$work/$1/ringmail.log" || true ;;
    postfix) find "$pfdir/queue/hold" -type f 2>/dev/null | wc -l ;;
    esac
}

# TLS handshakes the system has logged so far (ringmail only: "full resumed")
handshakes() {
    case $1 in
    rm-*) echo "$(grep -c 'event=tls .*resumed=no' "$work/$1/ringmail.log" || true)" \
               "$(grep -c 'event=tls .*resumed=yes' "$work/$1/ringmail.log" || true)" ;;
    *) echo "- -" ;;
    esac
}

declare -A load_args=(
    [a]="-s $SESSIONS -m $MSGS_A -n 1 -l 1024"
    [b]="-s $SESSIONS -m $MSGS_B -n 100 -l 1024"
    [hs]="-s $SESSIONS -m $HANDSHAKES -H"
)
declare -A mode_args=([plain]="" [tls]="-T" [resume]="-T -R")

# one measurement: SYSTEM LOAD MODE REP
measure() {
    local sys=$1 load=$2 mode=$3 rep=$4
    local pid c0 c1 m0 m1 a0 a1 h0 h1 out rc count wall ccpu ok resumed tls
    if (( SECONDS - start_time > TOTAL_BUDGET )); then
        log "time budget of ${TOTAL_BUDGET}s used up, skipping $sys $load $mode #$rep"
        return 0
    fi
    pid=${pid_of[$sys]}
    a0=$(accepted "$sys")
    h0=$(handshakes "$sys")
    read -r c0 _ m0 < <(helper cpu "$pid") || die "$sys (pid $pid) is gone"
    rc=0
    # shellcheck disable=SC2086 # split the arguments on purpose
    out=$(timeout "$RUN_TIMEOUT" "$TLS_SOURCE" ${load_args[$load]} ${mode_args[$mode]} \
        "127.0.0.1:${port_of[$sys]}" 2>"$work/source-$sys-$load-$mode-$rep.err") || rc=$?
    read -r c1 _ m1 < <(helper settle "$pid") || die "$sys (pid $pid) is gone"
    a1=$(accepted "$sys")
    h1=$(handshakes "$sys")
    # wall=.. messages=.. connections=.. handshakes=.. resumed=.. errors=.. client_cpu=.. tls=.. ok=..
    wall=$(sed -n 's/.*wall=\([0-9.]*\).*/\1/p' <<<"$out")
    ccpu=$(sed -n 's/.*client_cpu=\([0-9.]*\).*/\1/p' <<<"$out")
    resumed=$(sed -n 's/.*resumed=\([0-9]*\).*/\1/p' <<<"$out")
    tls=$(sed -n 's/.*tls=\([^ ]*\).*/\1/p' <<<"$out")
    if [ "$load" = hs ]; then
        count=$(sed -n 's/.*connections=\([0-9]*\).*/\1/p' <<<"$out")
    else
        count=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' <<<"$out")
    fi
    ok=0
    [ "$rc" = 0 ] && [ -n "$wall" ] && ok=1
    if [ "$ok" != 1 ]; then
        log "$sys $load $mode #$rep: tls_source exit $rc: $out $(head -c 300 "$work/source-$sys-$load-$mode-$rep.err")"
        wall=${wall:-$RUN_TIMEOUT}; count=${count:-0}; ccpu=${ccpu:-0}; resumed=${resumed:-0}; tls=${tls:-none}
    fi
    # the server's handshake log, for ringmail: full and resumed handshakes in this run
    local hfull=- hres=-
    if [ "${sys%%-*}" = rm ]; then
        read -r hf0 hr0 <<<"$h0"; read -r hf1 hr1 <<<"$h1"
        hfull=$(( hf1 - hf0 )); hres=$(( hr1 - hr0 ))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$load" "$mode" "$rep" "$count" \
        "$wall" "$(( c1 - c0 ))" "$ccpu" "$(( m1 - m0 ))" "$ok" "$(( a1 - a0 ))" "$resumed" "$tls" "$hfull/$hres" \
        >>"$results"
    awk -v s="$sys" -v l="$load" -v md="$mode" -v r="$rep" -v n="$count" -v w="$wall" -v c=$(( c1 - c0 )) \
        -v m=$(( m1 - m0 )) -v cc="$ccpu" -v hz="$hz" -v acc=$(( a1 - a0 )) -v res="$resumed" -v t="$tls" \
        -v h="$hfull/$hres" -v ok="$ok" \
        'BEGIN { printf "  %-8s %-2s %-6s #%d: %5d in %6.2fs (%6.0f/s); cpu s: server %5.2f (%4.0f us each), client %5.2f, machine %5.2f; accepted %d, resumed %s, server full/resumed %s, %s%s\n",
                 s, l, md, r, n, w, (w > 0 ? n / w : 0), c / hz, (n > 0 ? c / hz / n * 1e6 : 0), cc, m / hz, acc, res, h, t, (ok ? "" : " FAILED") }' >&2
    # keep Postfix's hold queue from growing across runs (postsuper is not part of the tree)
    if [ "$sys" = postfix ]; then
        "$POSTSUPER" -c "$pfconf" -d ALL hold >>"$pfdir/control.log" 2>&1 || log "postsuper -d ALL hold failed"
    fi
}

warm_up() {
    local sys=$1 out
    for m in "" "-T"; do
        # shellcheck disable=SC2086
        out=$(timeout 60 "$TLS_SOURCE" -s "$SESSIONS" -m 200 -n 1 -l 1024 $m "127.0.0.1:${port_of[$sys]}" 2>&1) ||
            die "warm-up of $sys ${m:-plain} failed: $out"
    done
    [ "$sys" = postfix ] && { "$POSTSUPER" -c "$pfconf" -d ALL hold >>"$pfdir/control.log" 2>&1 || true; }
    return 0
}

log "$("$BIN" --version | tr '\n' ' ')"
[ "$USE_POSTFIX" = 1 ] && log "Postfix $(postconf -d -h mail_version), $(openssl version)"
log "$(nproc) CPUs, kernel $(uname -r), work dir $work ($(df -T "$work" | awk 'NR==2 { print $2 }'))"
systems=(rm-none rm-fsync)
start_ringmail rm-none none
start_ringmail rm-fsync fsync
if [ "$USE_POSTFIX" = 1 ]; then
    start_postfix
    systems+=(postfix)
fi
for sys in "${systems[@]}"; do
    log "$sys: pid ${pid_of[$sys]} on 127.0.0.1:${port_of[$sys]}"
    warm_up "$sys"
done
log "warm-up done after $(( SECONDS - start_time ))s"

for rep in $(seq 1 "$REPS"); do
    for load in a b hs; do
        modes=(plain tls)
        [ "$load" = hs ] && modes=(plain tls resume)
        for mode in "${modes[@]}"; do
            for sys in "${systems[@]}"; do
                [ "$load" = hs ] && [ "$sys" = rm-fsync ] && continue # no message, no disk
                measure "$sys" "$load" "$mode" "$rep"
            done
        done
    done
done

pf_note=
if [ "$USE_POSTFIX" = 1 ]; then
    pf_bad=$(grep -E 'status=|reject:|warning:|fatal:|panic:|error:' "$pfdir/maillog" |
        grep -vc 'dict_nis_init: NIS domain name not set' || true)
    pf_hold=$(grep -c ': hold: ' "$pfdir/maillog" || true)
    pf_note="Postfix maillog: $pf_hold messages put on hold; $pf_bad status=/reject/warning/error/fatal lines (other than the NIS warning every new smtpd logs)."
fi
rm_events=""
for s in rm-none rm-fsync; do
    rm_events+="$s: $(grep -o 'event=[a-z_]*' "$work/$s/ringmail.log" | sort | uniq -c |
        awk '{ printf "%s%s=%s", sep, substr($2, 7), $1; sep=" " }'). "
done

# ---- report: medians, Markdown ----
{
    echo
    awk -F'\t' -v reps="$REPS" -v hz="$hz" -v la="${load_args[a]}" -v lb="${load_args[b]}" -v lh="${load_args[hs]}" '
function median(arr, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
    return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
function ratio(x, y) { return (y > 0) ? sprintf("%.2f", x / y) : "-" }
function flag(k) { return bad[k] ? sprintf(" (%d/%d failed)", bad[k], n[k]) : "" }
{
    k = $1 SUBSEP $2 SUBSEP $3; n[k]++
    rate[k, n[k]] = ($10 == 1 && $6 > 0) ? $5 / $6 : 0
    cpu[k, n[k]] = ($5 > 0) ? $7 / hz / $5 * 1e6 : 0
    ccpu[k, n[k]] = ($5 > 0) ? $8 / $5 * 1e6 : 0
    if ($10 != 1) bad[k]++
    if ($13 != "none") tls[$1] = $13
}
END {
    split("rm-none rm-fsync postfix", sys, " ")
    name["rm-none"] = "ringmail, durability none"; name["rm-fsync"] = "ringmail, durability fsync"; name["postfix"] = "Postfix (hold queue, fsync)"
    for (k in n) {
        for (i = 1; i <= n[k]; i++) { r[i] = rate[k, i]; c[i] = cpu[k, i]; cc[i] = ccpu[k, i] }
        mr[k] = median(r, n[k]); mc[k] = median(c, n[k]); mcc[k] = median(cc, n[k])
    }
    printf "Messages (median of %d runs; CPU = server processes, µs per message):\n\n", reps
    printf "| load | server | plain msg/s | STARTTLS msg/s | msg/s TLS/plain | plain CPU µs/msg | STARTTLS CPU µs/msg | CPU/msg TLS/plain | TLS extra µs/msg | client CPU µs/msg plain / TLS |\n"
    printf "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    split("a b", loads, " ")
    desc["a"] = "(a) 1 msg/conn `" la "`"; desc["b"] = "(b) 100 msg/conn `" lb "`"
    for (li = 1; li <= 2; li++) for (si = 1; si <= 3; si++) {
        p = sys[si] SUBSEP loads[li] SUBSEP "plain"; t = sys[si] SUBSEP loads[li] SUBSEP "tls"
        if (!(p in n) || !(t in n)) continue
        printf "| %s | %s | %.0f%s | %.0f%s | %s | %.0f | %.0f | %s | %.0f | %.0f / %.0f |\n", desc[loads[li]], name[sys[si]], \
            mr[p], flag(p), mr[t], flag(t), ratio(mr[t], mr[p]), mc[p], mc[t], ratio(mc[t], mc[p]), mc[t] - mc[p], mcc[p], mcc[t]
    }
    printf "\nHandshakes: connections with no message, `%s` (median of %d runs; CPU = server processes, µs per connection):\n\n", lh, reps
    printf "| server | connection | conn/s | CPU µs/conn | conn/s per fully used core (1e6 / CPU µs) | TLS extra µs/conn (over plain) | handshakes/s per core, TLS part alone | client CPU µs/conn |\n"
    printf "|---|---|---:|---:|---:|---:|---:|---:|\n"
    split("plain tls resume", modes, " ")
    mdesc["plain"] = "plain: EHLO, QUIT"; mdesc["tls"] = "EHLO, STARTTLS, full handshake, QUIT"; mdesc["resume"] = "EHLO, STARTTLS, resumed (ticket), QUIT"
    for (si = 1; si <= 3; si++) for (mi = 1; mi <= 3; mi++) {
        k = sys[si] SUBSEP "hs" SUBSEP modes[mi]; p = sys[si] SUBSEP "hs" SUBSEP "plain"
        if (!(k in n)) continue
        extra = (modes[mi] == "plain") ? "-" : sprintf("%.0f", mc[k] - mc[p])
        alone = (modes[mi] == "plain" || mc[k] - mc[p] <= 0) ? "-" : sprintf("%.0f", 1e6 / (mc[k] - mc[p]))
        printf "| %s | %s | %.0f%s | %.0f | %.0f | %s | %s | %.0f |\n", (sys[si] == "rm-none" ? "ringmail" : name[sys[si]]), mdesc[modes[mi]], \
            mr[k], flag(k), mc[k], (mc[k] > 0 ? 1e6 / mc[k] : 0), extra, alone, mcc[k]
    }
    printf "\nNegotiated:"
    for (si = 1; si <= 3; si++) if (sys[si] in tls) printf " %s %s;", sys[si], tls[sys[si]]
    printf "\n"
}' "$results"
    echo
    echo "Per run (count, wall s, server CPU ticks, client CPU s, machine ticks, ok, accepted by the server, client-resumed, server full/resumed handshakes):"
    echo
    awk -F'\t' '{ printf "    %-8s %-2s %-6s #%s %5s %7s %5s %6s %5s %s %5s %5s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14 }' "$results"
    echo
    echo "ringmail log events: $rm_events"
    [ -z "$pf_note" ] || echo "$pf_note"
    echo "$(nproc) CPUs, kernel $(uname -r), spools on $(df -T "$work" | awk 'NR==2 { print $2 }') ($BENCH_DIR); $("$BIN" --version | head -1); $( [ "$USE_POSTFIX" != 1 ] || echo "Postfix $(postconf -d -h mail_version) with $(openssl version | cut -d' ' -f1-2)"); total $(( SECONDS - start_time ))s."
}
