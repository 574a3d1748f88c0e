# shellcheck shell=bash disable=SC2154 # work and POSTFIX_BIN are the sourcing script's
# bench/lib.sh: what bench/inbound.sh, bench/relay.sh and bench/tls.sh share.
# Not run on its own: a script sets `set -euo pipefail` and
#   me=NAME.sh        its name, the prefix of die and log
# and then sources it (`. "$here/lib.sh"`). It sets
#   PY                /usr/bin/python3 (free_port, helper)
#   pf_started=0, pf_master=   the private Postfix's state (postfix_start sets
#                     them, postfix_stop reads them)
# and its functions read these globals of the script:
#   work              the work directory (remove_work, write_helper, helper)
#   POSTFIX_BIN       the postfix command (postfix_start, postfix_stop)
# Functions that start something set globals and must not run in $(...).

: "${me:?set me (the script name) before sourcing bench/lib.sh}"
PY=/usr/bin/python3
pf_started=0
pf_master=

die() { echo "$me: $*" >&2; exit 1; }
log() { echo "$me: $*" >&2; }

# the EXIT trap's last step: remove $work, or keep it (KEEP=1) and say where
remove_work() {
    if [ "${KEEP:-0}" = 1 ]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
}

# a TCP port on 127.0.0.1 that is free now
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT [PID]: wait until 127.0.0.1:PORT accepts (PID, if given, must
# stay alive), at most 10 s
wait_port() {
    for _ in $(seq 1 100); do
        [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || return 1
        if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# stop_pid PID NAME: SIGTERM, wait up to 10 s, SIGKILL; nothing for an empty PID
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$2 (pid $pid) ignored SIGTERM, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ---- $work/helper.py: process-tree CPU and the timed run (5 ms polling) ----
#   helper count SINKFILE      the last count of an smtp-sink -c counter file
#   helper cpu PID...          "ticks nprocs" of each PID's tree, then the machine's busy ticks
#   helper settle PID...       the same, once the first tree's CPU use has settled
#   helper run SINKFILE BASE TARGET TIMEOUT OUTFILE -- ARGV...
#       runs ARGV until the sink has counted TARGET messages more than BASE (or TIMEOUT s):
#       "wall delivered exit source-wall source-cpu"
write_helper() {
    cat >"$work/helper.py" <<'EOF'
import os, subprocess, sys, time

def count(path):
    """smtp-sink -c: the last 'mesg=N' of its running counter (\r-separated)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(max(0, n - 96))
            t = f.read()
    except OSError:
        return 0
    i = t.rfind(b"mesg=")
    if i < 0:
        return 0
    j = k = i + 5
    while k < len(t) and t[k:k + 1].isdigit():
        k += 1
    return int(t[j:k] or b"0")

def stat(pid):
    with open("/proc/%s/stat" % pid, "rb") as f:
        s = f.read()
    f = s[s.rindex(b")") + 2:].split()
    # f[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17
    return int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])

def treecpu(root):
    """utime+stime of root and all its live descendants + root's cutime+cstime."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                procs[int(d)] = stat(d)
            except (OSError, ValueError, IndexError):
                pass
    if root not in procs:
        return None, 0
    kids = {}
    for p, (pp, _, _) in procs.items():
        kids.setdefault(pp, []).append(p)
    total, todo, n = procs[root][2], [root], 0
    while todo:
        p = todo.pop()
        n += 1
        total += procs[p][1]
        todo.extend(kids.get(p, ()))
    return total, n

def machine():
    """busy ticks of the whole machine: user+nice+system+irq+softirq (no idle, iowait, steal)."""
    with open("/proc/stat") as f:
        v = f.readline().split()
    return sum(int(v[i]) for i in (1, 2, 3, 6, 7))

cmd = sys.argv[1]
if cmd == "count":
    print(count(sys.argv[2]))
elif cmd in ("cpu", "settle"):
    # cpu PID...: "ticks nprocs" of each PID's tree, then the machine's busy ticks.
    # settle PID...: first sample the first tree every 250 ms until it grows by
    # <= 1 tick (at most 4 s): the work left after the last delivery is included.
    roots = [int(a) for a in sys.argv[2:]]
    if cmd == "settle":
        prev = None
        for _ in range(17):
            t, _n = treecpu(roots[0])
            if t is None or (prev is not None and t - prev <= 1):
                break
            prev = t
            time.sleep(0.25)
    out = []
    for r in roots:
        t, n = treecpu(r)
        if t is None:
            sys.exit(1)
        out += [t, n]
    print(*out, machine())
elif cmd == "run":
    # run SINKFILE BASE TARGET TIMEOUT OUTFILE -- argv...
    sinkfile, base, target, timeout, out = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
        float(sys.argv[5]), sys.argv[6]
    argv = sys.argv[sys.argv.index("--") + 1:]
    t0 = time.time()
    with open(out, "wb") as o:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=o, stderr=subprocess.STDOUT)
    deadline, src_done, reached, c = t0 + timeout, None, None, 0
    while True:
        now = time.time()
        if src_done is None and p.poll() is not None:
            src_done = now - t0
        c = count(sinkfile) - base
        if c >= target:
            reached = now - t0
            break
        if now > deadline:
            break
        time.sleep(0.005)
    rc = p.poll()
    if rc is None:
        try:
            rc = p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = "killed"
    if src_done is None:
        src_done = time.time() - t0
    ru = os.times()  # smtp-source's CPU (children_user + children_system), seconds
    # wall until all delivered (or the timeout), messages delivered, smtp-source exit, its wall, its CPU
    print("%.3f %d %s %.3f %.3f" % (reached if reached is not None else timeout, c, rc, src_done,
                                    ru.children_user + ru.children_system))
EOF
}
helper() { "$PY" "$work/helper.py" "$@"; }

# ---- a private Postfix instance under PFDIR ----
# PFDIR/etc (the config directory: main.cf, master.cf), PFDIR/queue, PFDIR/data,
# PFDIR/maillog (maillog_file: no syslog here; postlog is in master.cf) and
# PFDIR/control.log (what postfix check/start/stop/abort say). The system
# instance (/etc/postfix) is not touched.

# postfix_configure PFDIR PORT <MAIN-CF-LINES: main.cf is what the instance needs
# plus the lines on stdin (Postfix defaults otherwise); master.cf is Postfix's
# stock service list with chroot off (5th column) everywhere and smtpd on
# 127.0.0.1:PORT only.
postfix_configure() {
    local dir=$1 port=$2
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chown postfix:postfix "$dir/data"
    {
        cat <<EOF
# private benchmark instance written by bench/$me; Postfix defaults otherwise
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $dir/maillog
EOF
        cat
    } >"$dir/etc/main.cf"
    cat >"$dir/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$port inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# postfix_start PFDIR PORT: postfix check, postfix start, wait for the master
# (its PID into pf_master) and until it accepts on 127.0.0.1:PORT; dies if not.
# pf_started=1 from `postfix start` on: from then the EXIT trap's postfix_stop stops it.
postfix_start() {
    local dir=$1 port=$2
    "$POSTFIX_BIN" -c "$dir/etc" check >>"$dir/control.log" 2>&1 ||
        { cat "$dir/control.log" >&2; die "postfix -c $dir/etc check failed"; }
    pf_started=1
    "$POSTFIX_BIN" -c "$dir/etc" start >>"$dir/control.log" 2>&1 ||
        { cat "$dir/control.log" "$dir/maillog" >&2 2>/dev/null; die "postfix -c $dir/etc start failed"; }
    for _ in $(seq 1 50); do
        [ -s "$dir/queue/pid/master.pid" ] && break
        sleep 0.1
    done
    pf_master=$(tr -d ' \n' <"$dir/queue/pid/master.pid" 2>/dev/null || true)
    if [ -z "$pf_master" ] || ! kill -0 "$pf_master" 2>/dev/null; then
        die "private Postfix master did not start"
    fi
    wait_port "$port" "$pf_master" || die "private Postfix does not listen on 127.0.0.1:$port"
}

# postfix_stop PFDIR: nothing unless postfix_start got as far as `postfix start`;
# postfix stop, wait up to 10 s for the master to exit, else postfix abort and,
# a second later, SIGKILL to the master
postfix_stop() {
    local dir=$1
    [ "$pf_started" = 1 ] || return 0
    pf_started=0
    "$POSTFIX_BIN" -c "$dir/etc" stop >>"$dir/control.log" 2>&1 || true
    if [ -n "$pf_master" ]; then
        for _ in $(seq 1 100); do kill -0 "$pf_master" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pf_master" 2>/dev/null; then
            log "private Postfix master $pf_master still running, postfix abort"
            "$POSTFIX_BIN" -c "$dir/etc" abort >>"$dir/control.log" 2>&1 || true
            sleep 1
            if kill -0 "$pf_master" 2>/dev/null; then kill -KILL "$pf_master" 2>/dev/null || true; fi
        fi
    fi
}
