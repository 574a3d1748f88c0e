#!/bin/sh
# tests/fuzz/run.sh [seconds]: run every libFuzzer harness the fuzz preset built.
#
#   cmake --preset fuzz && cmake --build --preset fuzz -j 2
#   sh tests/fuzz/run.sh 60
#
# 1. Every input committed under tests/fuzz/regress/<harness>/ is replayed once
#    (each is a crash that was fixed: it must never come back).
# 2. Each harness fuzzes for `seconds` (default 60), two at a time, starting from
#    a copy of its seed corpus tests/fuzz/corpus/<harness>/ (the repository's
#    seeds are never modified), with tests/fuzz/dict/<harness>.dict when there
#    is one, -rss_limit_mb=2048 and -timeout=10.
# Exit status 1 when any harness crashed, leaked, timed out or ran out of
# memory; its log is printed and its reproducer copied to
# build/fuzz/artifacts/<harness>/ (replay: build/fuzz/tests/fuzz/<harness> FILE).
#
# <harness> is the executable's name (fuzz_smtp_server); the name without its
# fuzz_ prefix (smtp_server) is found too, for corpus, regress and dict alike.
#
# Environment: FUZZ_BUILD (the harnesses' folder, default build/fuzz/tests/fuzz),
# FUZZ_JOBS (harnesses at a time, default 2).
set -eu
cd "$(dirname "$0")/../.."

secs=${1:-60}
bindir=${FUZZ_BUILD:-build/fuzz/tests/fuzz}
jobs=${FUZZ_JOBS:-2}
artdir=build/fuzz/artifacts
case "$secs" in
'' | *[!0-9]*)
    echo "usage: sh tests/fuzz/run.sh [seconds]" >&2
    exit 2
    ;;
esac

harnesses=""
for b in "$bindir"/fuzz_*; do
    [ -f "$b" ] && [ -x "$b" ] && harnesses="$harnesses $(basename "$b")"
done
if [ -z "$harnesses" ]; then
    echo "fuzz: no harness in $bindir: cmake --preset fuzz && cmake --build --preset fuzz" >&2
    exit 2
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
work=$(mktemp -d "${TMPDIR:-/tmp}/ringmail-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
failed=""

# The path of harness $2's entry in tests/fuzz/$1 (suffix $3): under its own
# name, else under its name without the fuzz_ prefix; "" when neither exists.
find_for() {
    for n in "$2" "${2#fuzz_}"; do
        if [ -e "tests/fuzz/$1/$n$3" ]; then
            echo "tests/fuzz/$1/$n$3"
            return
        fi
    done
    echo ""
}

# Keep what libFuzzer saved for harness $1 and say how to replay it.
report() {
    h=$1
    echo "== $h FAILED; log:" >&2
    tail -n 60 "$work/$h.log" >&2
    mkdir -p "$artdir/$h"
    for a in "$work/$h/artifacts"/*; do
        [ -f "$a" ] || continue
        cp "$a" "$artdir/$h/"
        echo "fuzz: $h reproducer: $artdir/$h/$(basename "$a")" >&2
        echo "fuzz: replay with: $bindir/$h $artdir/$h/$(basename "$a")" >&2
    done
    failed="$failed $h"
}

# 1. the regression inputs, one run each so that a failure names its input
for h in $harnesses; do
    n=0
    rdir=$(find_for regress "$h" "")
    [ -n "$rdir" ] || continue
    for f in "$rdir"/*; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        mkdir -p "$work/$h/tmp"
        if ! TMPDIR="$work/$h/tmp" "$bindir/$h" -rss_limit_mb=2048 -timeout=10 "$f" \
            >"$work/$h.log" 2>&1; then
            echo "== $h FAILED on the regression input $f; log:" >&2
            tail -n 60 "$work/$h.log" >&2
            echo "fuzz: $h reproducer: $f (replay: $bindir/$h $f)" >&2
            failed="$failed $h"
        fi
    done
    [ "$n" = 0 ] || echo "== $h: replayed $n regression input(s)"
done
for d in tests/fuzz/regress/*/; do
    [ -d "$d" ] || continue
    h=$(basename "$d")
    case " $harnesses " in
    *" $h "* | *" fuzz_$h "*) ;;
    *) echo "fuzz: warning: $d has no built harness $h" >&2 ;;
    esac
done
if [ -n "$failed" ]; then
    echo "fuzz: regression inputs crash again:$failed" >&2
    exit 1
fi

# 2. fuzzing, $jobs at a time
start() {
    h=$1
    mkdir -p "$work/$h/corpus" "$work/$h/artifacts" "$work/$h/tmp"
    seeds=$(find_for corpus "$h" "")
    [ -z "$seeds" ] || cp -R "$seeds/." "$work/$h/corpus/"
    dict=$(find_for dict "$h" .dict)
    [ -z "$dict" ] || dict="-dict=$dict"
    echo "== $h: fuzzing for ${secs}s"
    # shellcheck disable=SC2086
    (
        rc=0
        # the harnesses' scratch folders go into $work, removed even after a crash
        TMPDIR="$work/$h/tmp"
        export TMPDIR
        "$bindir/$h" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 $dict \
            -artifact_prefix="$work/$h/artifacts/" -print_final_stats=1 \
            "$work/$h/corpus" >"$work/$h.log" 2>&1 || rc=$?
        echo "$rc" >"$work/$h.rc"
    ) &
}

finish() {
    h=$1
    rc=$(cat "$work/$h.rc" 2>/dev/null || echo 99)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$h.log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/$h.log")
    cov=$(grep -E '#[0-9]+[[:space:]]+DONE' "$work/$h.log" | tail -n 1 |
        sed -e 's/.*DONE[[:space:]]*//' -e 's/ exec\/s.*//' || true)
    echo "== $h: exit $rc, ${runs:-?} runs, peak rss ${rss:-?} MB, $cov"
    [ "$rc" = 0 ] || report "$h"
}

# shellcheck disable=SC2086 # split on purpose: one word per harness
set -- $harnesses
while [ $# -gt 0 ]; do
    batch=""
    n=0
    while [ $# -gt 0 ] && [ "$n" -lt "$jobs" ]; do
        start "$1"
        batch="$batch $1"
        n=$((n + 1))
        shift
    done
    wait
    for h in $batch; do
        finish "$h"
    done
done

if [ -n "$failed" ]; then
    echo "fuzz: FAILED:$failed" >&2
    exit 1
fi
echo "fuzz: every harness ran ${secs}s without a crash:$harnesses"
