#!/usr/bin/python3
"""bench/idle_conns.py: ringmail's memory per idle SMTP connection.

Starts ringmail (max_connections=20000, durability=none, a temporary spool),
opens N (default 10,000) TCP connections to it on loopback, reads the 220
greeting on each and holds them idle; VmRSS of the ringmail process
(/proc/PID/status) is read before and after, and the difference divided by N
is the user-space memory per idle connection (kernel socket buffers are not
in RSS). Then it closes them, reads RSS once more, and stops ringmail.

Bounded: a connection that does not greet within 10 s, or the whole run past
--budget seconds, stops the opening early (the report says how many were held).
Only the ringmail it started is signalled, by PID.

    RINGMAIL_BIN=build/release/ringmail bench/idle_conns.py [-n 10000] [--reactors 0]
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def threads(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def read_greeting(s, deadline):
    buf = b""
    for _ in range(100):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        d = s.recv(512)
        if not d:
            return None
        buf += d
        if b"\r\n" in buf:
            return buf
    return None


def settle(pid, seconds=1.0):
    time.sleep(seconds)
    return rss(pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="idle connections (default 10000)")
    ap.add_argument("--reactors", type=int, default=0, help="ringmail reactors (0: one per CPU)")
    ap.add_argument("--budget", type=float, default=180, help="seconds for the whole run")
    ap.add_argument("--bin", default=os.environ.get("RINGMAIL_BIN",
                                                    os.path.join(SRC, "build/release/ringmail")))
    a = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + a.budget

    # our side needs one descriptor per connection too
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft < want:
        print("idle_conns: RLIMIT_NOFILE hard limit %d < %d; opening %d" % (hard, want, soft - 256),
              file=sys.stderr)
        a.n = max(0, soft - 256)

    work = tempfile.mkdtemp(prefix="ringmail-idle-", dir="/var/tmp")
    port = free_port()
    log = open(os.path.join(work, "server.log"), "ab")
    proc = subprocess.Popen([a.bin, "-o", "listen=127.0.0.1:%d" % port,
                             "-o", "spool_dir=%s/spool" % work, "-o", "durability=none",
                             "-o", "max_connections=20000", "-o", "delivery=hold", "-o", "reactors=%d" % a.reactors,
                             "-o", "smtpd_timeout=30m", "-o", "myhostname=bench.example", "-o", "user=root", "-o", "admin_listen="],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    conns = []
    try:
        # wait (bounded) until it accepts
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError("ringmail exited %s" % proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("ringmail did not listen")
        # warm up: a few sessions, so lazily built state is not counted per connection
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            read_greeting(s, time.monotonic() + 10)
            s.sendall(b"QUIT\r\n")
            s.close()
        rss0 = settle(proc.pid)
        t0 = time.monotonic()
        err = None
        for i in range(a.n):
            if time.monotonic() > deadline - 30:
                err = "time budget reached"
                break
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as e:
                err = "connect #%d: %s" % (i, e)
                break
            g = read_greeting(s, time.monotonic() + 10)
            if g is None or not g.startswith(b"220"):
                err = "connection #%d: no 220 greeting (%r)" % (i, g)
                s.close()
                break
            conns.append(s)
        t_open = time.monotonic() - t0
        held = len(conns)
        rss1 = settle(proc.pid, 2.0)
        # still alive and answering?
        probe_ok = False
        if conns:
            try:
                conns[0].settimeout(10)
                conns[0].sendall(b"NOOP\r\n")
                probe_ok = conns[0].recv(512).startswith(b"250")
            except OSError:
                pass
        nthreads = threads(proc.pid)
        for s in conns:
            s.close()
        conns = []
        rss2 = settle(proc.pid, 2.0)

        per = (rss1 - rss0) / held if held else 0
        print("| measure | value |")
        print("|---|---|")
        print("| idle connections held | %d of %d%s |" % (held, a.n, (" (%s)" % err) if err else ""))
        print("| time to open and greet them | %.1f s (%.0f conn/s) |"
              % (t_open, held / t_open if t_open > 0 else 0))
        print("| ringmail threads | %d |" % nthreads)
        print("| VmRSS before | %.1f MiB |" % (rss0 / 1048576))
        print("| VmRSS with the connections | %.1f MiB |" % (rss1 / 1048576))
        print("| VmRSS after closing them | %.1f MiB |" % (rss2 / 1048576))
        print("| **user-space memory per idle connection** | **%.0f bytes** |" % per)
        print("| NOOP on the first connection after all opened | %s |" % ("250" if probe_ok else "FAILED"))
        print()
        print("(%s; VmRSS excludes kernel socket buffers; total %.0fs)"
              % (open("/proc/loadavg").read().split()[0] + " load avg", time.monotonic() - t_start))
        rc = 0 if held == a.n and probe_ok else 1
    finally:
        for s in conns:
            try:
                s.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        if os.environ.get("KEEP") == "1":
            print("idle_conns: kept %s" % work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
