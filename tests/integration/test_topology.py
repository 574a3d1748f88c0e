#!/usr/bin/python3
"""The production topology on loopback: Debian's HAProxy (TCP mode, send-proxy-v2,
balance roundrobin, health checks every 300 ms) in front of TWO ringmail
instances with their own spools, both relaying to ONE Postfix smtp-sink that
dumps every transaction, so that deliveries can be counted.

0. smtp-source -s 10 through HAProxy: every message arrives exactly once, and
   both instances took a share.
1. Python clients bound to 127.0.0.9 send N messages with unique Message-IDs
   through HAProxy, recording each 250 and which instance gave it (the
   greeting names it). Part-way through, instance mx1 is SIGKILLed (by PID):
   HAProxy's health check marks it DOWN (its stats socket says so), new
   sessions go to mx2 (a connection that finds mx1 dead is redispatched), the
   sessions open on mx1 at the kill fail and are counted.
2. mx1 is started again on its spool: it recovers what it held, HAProxy marks
   it UP, its queue drains to the sink, and more messages go to both.
3. Every message that got a 250 is in the sink at least once. Duplicates
   (delivered, but killed before the DONE record) may only come from mx1 and
   are at most what mx1 recovered; mx2 has none. The Received: line ringmail
   wrote names the real client [127.0.0.9], taken from the PROXY header (HAProxy
   itself connects from 127.0.0.1).

Health checks: RMTEST_TOPOLOGY_CHECK=smtpchk (default: `option smtpchk` with
check-send-proxy, an SMTP EHLO on the SMTP port behind a PROXY v2 LOCAL header)
or readyz (`option httpchk GET /readyz` on each instance's admin port; needs a
ringmail with admin_listen, skipped otherwise).
"""
import collections
import csv
import io
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

HAPROXY = rmtest.need_tool("haproxy")
SMTP_SOURCE = rmtest.need_tool("smtp-source")
rmtest.need_tool("smtp-sink")
CHECK = os.environ.get("RMTEST_TOPOLOGY_CHECK", "smtpchk")
if CHECK not in ("smtpchk", "readyz"):
    rmtest.skip("RMTEST_TOPOLOGY_CHECK must be smtpchk or readyz, not %r" % CHECK)
CLIENT = "127.0.0.9"            # the "outside" client; HAProxy connects from 127.0.0.1
N = int(os.environ.get("RMTEST_TOPOLOGY_N", "2000"))
N_SOURCE = 200                  # phase 0, smtp-source
N_AFTER = 100                   # after the restart
KILL_AT = N // 3                # acknowledged messages before mx1 is killed
THREADS = 10
PER_SESSION = 10                # messages per SMTP session (new sessions spread round robin)
DEADLINE = 110.0                # the whole script, seconds

T0 = time.monotonic()
D = rmtest.tempdir(prefix="rmtest-topology-")


def admin_supported():
    p = subprocess.run([rmtest.binary(), "-t", "-o", "admin_listen=127.0.0.1:9025"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    return p.returncode == 0


ADMIN = admin_supported()
if CHECK == "readyz" and not ADMIN:
    rmtest.skip("RMTEST_TOPOLOGY_CHECK=readyz needs a ringmail with admin_listen")

# ---- HAProxy ----

FE = rmtest.free_port()
SOCK = os.path.join(D, "haproxy.sock")


def haproxy_cfg(servers):
    if CHECK == "smtpchk":
        check = ("    option smtpchk EHLO haproxy.rmtest.example\n"
                 "    default-server send-proxy-v2 check check-send-proxy inter 300ms fall 2 rise 2\n")
        lines = ["    server %s 127.0.0.1:%d\n" % (s.name, s.port) for s in servers]
    else:
        check = ("    option httpchk GET /readyz\n"
                 "    http-check expect status 200\n"
                 "    default-server send-proxy-v2 inter 300ms fall 2 rise 2\n")
        lines = ["    server %s 127.0.0.1:%d check port %d\n" % (s.name, s.port, s.admin_port)
                 for s in servers]
    return """global
    maxconn 1000
    stats socket %s mode 600 level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # a connection that finds a dead instance before the check does is
    # retried, on another instance (redispatch on every retry)
    retries 2
    option redispatch 1
frontend ft_smtp
    bind 127.0.0.1:%d
    default_backend be_smtp
backend be_smtp
    balance roundrobin
%s%s""" % (SOCK, FE, check, "".join(lines))


def start_haproxy(servers):
    cfg = os.path.join(D, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(haproxy_cfg(servers))
    log = open(os.path.join(D, "haproxy.log"), "wb")
    p = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    if not rmtest.wait_port(FE, 10, p):
        p.kill()
        raise RuntimeError("haproxy did not start: " + open(log.name).read()[-2000:])
    return p


def haproxy_status():
    """{server: status} of be_smtp from the stats socket ('UP', 'DOWN', 'UP 1/2'...)."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(SOCK)
        s.sendall(b"show stat\n")
        buf = b""
        for _ in range(1000):
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
    except OSError:
        return {}
    text = buf.decode("utf-8", "replace").lstrip("# ")
    out = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("pxname") == "be_smtp" and row.get("svname") not in ("FRONTEND", "BACKEND"):
            out[row["svname"]] = row.get("status", "")
    return out


def wait_status(name, want, timeout):
    t = time.monotonic()
    ok = rmtest.wait_until(lambda: haproxy_status().get(name, "").split(" ")[0] == want,
                           timeout, 0.05)
    return bool(ok), time.monotonic() - t


# ---- the instances and the sink ----

sink = None
servers = []


def make_server(name, sink):
    opts = {"relayhost": "[%s]:%d" % (rmtest.LOOPBACK, sink.port),
            "proxy_protocol": "true", "proxy_trusted_networks": "127.0.0.1/32",
            "myhostname": "%s.rmtest.example" % name, "reactors": "2", "workers": "2",
            "minimal_backoff_time": "1s", "maximal_backoff_time": "2s"}
    admin_port = None
    if ADMIN:
        admin_port = rmtest.free_port()
        opts["admin_listen"] = "127.0.0.1:%d" % admin_port
    s = rmtest.Server(name=name, hold=False, opts=opts, cwd=rmtest.tempdir(prefix="rmtest-cwd-"))
    s.admin_port = admin_port
    return s


class Clients:
    """Python SMTP clients from CLIENT through HAProxy, each message with a unique
    Message-ID; acked: Message-ID -> (qid, instance that said 250)."""

    def __init__(self, first, count, threads, kill_at=None, victim=None):
        self.ids = iter(range(first, first + count))
        self.lock = threading.Lock()
        self.acked = {}
        self.failed = []        # (Message-ID or None, instance or None, when, error)
        self.sessions = collections.Counter()  # instance -> sessions opened
        self.current = {}       # thread -> instance of its open session
        self.threads = threads
        self.kill_at = kill_at
        self.victim = victim
        self.kill_time = None
        self.open_on_victim_at_kill = None
        self.deadline = T0 + DEADLINE - 20

    def take(self):
        with self.lock:
            return next(self.ids, None)

    def killed(self):
        return self.kill_time is not None

    def maybe_kill(self):
        # with self.lock held
        if self.kill_at is not None and not self.killed() and len(self.acked) >= self.kill_at:
            self.open_on_victim_at_kill = sum(1 for v in self.current.values()
                                              if v == self.victim.name)
            self.kill_time = time.time()
            self.victim.kill()

    def message(self, i):
        mid = "<topo-%05d@rmtest.example>" % i
        body = ("From: <py@example.org>\r\nTo: <topo%05d@example.net>\r\nSubject: topology %d\r\n"
                "Message-ID: %s\r\n\r\n" % (i, i, mid)).encode() + \
            b"".join(b"topology body line %02d %05d\r\n" % (j, i) for j in range(12))
        return mid, "topo%05d@example.net" % i, body

    def client(self, k):
        for _ in range(10000):
            if time.monotonic() > self.deadline:
                return
            s, inst = None, None
            try:
                s = smtplib.SMTP(timeout=20, source_address=(CLIENT, 0),
                                 local_hostname="py%d.client.example" % k)
                code, banner = s.connect(rmtest.LOOPBACK, FE)
                if code != 220:
                    raise smtplib.SMTPConnectError(code, banner)
                inst = banner.decode().split(".", 1)[0]
                with self.lock:
                    self.sessions[inst] += 1
                    self.current[k] = inst
                s.ehlo()
                for _ in range(PER_SESSION):
                    i = self.take()
                    if i is None:
                        s.quit()
                        return
                    mid, rcpt, body = self.message(i)
                    try:
                        s.mail("py@example.org")
                        s.rcpt(rcpt)
                        code, msg = s.data(body)
                    except (OSError, smtplib.SMTPException) as e:
                        with self.lock:
                            self.failed.append((mid, inst, time.time(), repr(e)))
                        raise
                    qid = rmtest.queued_id(msg)
                    with self.lock:
                        if code == 250 and qid:
                            self.acked[mid] = (qid, inst)
                            self.maybe_kill()
                        else:
                            self.failed.append((mid, inst, time.time(), (code, msg)))
                s.quit()
            except (OSError, smtplib.SMTPException) as e:
                if inst is None:
                    # no greeting: HAProxy found no instance; the message was not sent
                    with self.lock:
                        self.failed.append((None, None, time.time(), repr(e)))
                    time.sleep(0.05)
            finally:
                with self.lock:
                    self.current.pop(k, None)
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def run(self):
        ts = [threading.Thread(target=self.client, args=(k,), daemon=True)
              for k in range(self.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(max(1.0, self.deadline - time.monotonic() + 5))
        return not any(t.is_alive() for t in ts)


def received_by(d):
    """(instance, client address) from the Received: line ringmail wrote (the first)."""
    for k, v in d["headers"]:
        if k == "received":
            inst = v.split(" by ", 1)[1].split(".", 1)[0] if " by " in v else None
            addr = v.split("([", 1)[1].split("])", 1)[0] if "([" in v else None
            return inst, addr
    return None, None


# ---- the test ----

state = {}


def t_setup(r):
    global sink
    sink = rmtest.Sink(name="topo-sink").start()
    for name in ("mx1", "mx2"):
        servers.append(make_server(name, sink).start(probe=False))
    state["hap"] = start_haproxy(servers)
    print("   health checks: %s; haproxy on %d, mx1 on %d, mx2 on %d, sink on %d"
          % (CHECK, FE, servers[0].port, servers[1].port, sink.port), flush=True)
    for s in servers:
        ok, dt = wait_status(s.name, "UP", 10)
        r.check("haproxy: %s UP (%.1fs)" % (s.name, dt), ok, haproxy_status())


def t_smtp_source(r):
    p = subprocess.run([SMTP_SOURCE, "-s", "10", "-m", str(N_SOURCE), "-l", "512", "-N",
                        "-f", "src@example.org", "-t", "dst@example.net", "-M",
                        "source.client.example", "%s:%d" % (rmtest.LOOPBACK, FE)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    r.eq("smtp-source through haproxy: exit 0", (p.returncode, p.stdout.decode()[-500:]), (0, ""))
    got = {s.name: len([e for e in s.events("received") if e.get("client") == "127.0.0.1"])
           for s in servers}
    print("   smtp-source: received by %s" % got, flush=True)
    r.eq("smtp-source: every message received once", sum(got.values()), N_SOURCE)
    r.check("smtp-source: both instances took a share (round robin)", all(got.values()), got)


def t_kill_one(r):
    c = Clients(0, N, THREADS, kill_at=KILL_AT, victim=servers[0])
    state["c1"] = c
    down = {}

    def watch():
        # when does HAProxy notice?
        for _ in range(2000):
            if c.killed():
                ok, _ = wait_status("mx1", "DOWN", 10)
                down["after"] = time.time() - c.kill_time if ok else None
                return
            time.sleep(0.01)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    t = time.monotonic()
    finished = c.run()
    w.join(15)
    el = time.monotonic() - t
    r.check("clients finished in time", finished)
    r.check("mx1 was killed mid-run", c.killed() and servers[0].proc.returncode == -9,
            servers[0].proc.returncode if servers[0].proc else None)
    print("   %d messages in %.1fs: %d acknowledged (%s), %d failures; sessions %s; "
          "%s sessions open on mx1 at the kill"
          % (N, el, len(c.acked), dict(collections.Counter(v[1] for v in c.acked.values())),
             len(c.failed), dict(c.sessions), c.open_on_victim_at_kill), flush=True)
    r.check("haproxy marked mx1 DOWN after the kill", down.get("after") is not None,
            haproxy_status())
    if down.get("after") is not None:
        print("   haproxy: mx1 DOWN %.2fs after the kill" % down["after"], flush=True)
    early = [f for f in c.failed if c.kill_time is None or f[2] < c.kill_time]
    r.check("no failure before the kill", not early, early[:5])
    late = [f for f in c.failed if c.kill_time and f[2] > c.kill_time + 5]
    r.check("no failure later than 5 s after the kill (mx2 took over)", not late, late[:5])
    cut = [f for f in c.failed if f[0] is not None]
    r.check("messages cut at the kill: at most one per session open on mx1 (%d)" % len(cut),
            len(cut) <= (c.open_on_victim_at_kill or 0), (cut[:5], c.open_on_victim_at_kill))
    r.check("everything not cut was acknowledged",
            len(c.acked) + len(cut) == N, (len(c.acked), len(cut), N))
    r.check("both instances acknowledged messages", {v[1] for v in c.acked.values()} ==
            {"mx1", "mx2"}, collections.Counter(v[1] for v in c.acked.values()))


def t_restart(r):
    mx1 = servers[0]
    mx1.start(probe=False)
    rec = mx1.events("recovered")
    state["recovered"] = int(rec[0].get("messages", 0)) if rec else 0
    print("   mx1 restarted: recovered %s" % ({k: rec[0].get(k) for k in
                                                ("messages", "bad_records", "torn_bytes",
                                                 "incomplete")} if rec else None), flush=True)
    ok, dt = wait_status("mx1", "UP", 10)
    r.check("haproxy: mx1 UP again (%.1fs)" % dt, ok, haproxy_status())
    c = Clients(N, N_AFTER, 4)
    state["c2"] = c
    c.run()
    by = collections.Counter(v[1] for v in c.acked.values())
    print("   after the restart: %d acknowledged %s, %d failures"
          % (len(c.acked), dict(by), len(c.failed)), flush=True)
    r.eq("after the restart: every message acknowledged", (len(c.acked), c.failed), (N_AFTER, []))
    r.check("after the restart: both instances take new mail", by["mx1"] and by["mx2"], by)
    t = time.monotonic()
    drained = rmtest.wait_until(lambda: all(s.queue_list().empty for s in servers), 40, 0.3)
    r.check("both queues drained", drained, [s.queue_list().text[-300:] for s in servers])
    print("   queues drained in %.1fs" % (time.monotonic() - t), flush=True)
    time.sleep(0.5)


def t_stop(r):
    hap = state["hap"]
    for s in servers:
        r.eq("%s: exit 0 on SIGTERM" % s.name, s.stop(), 0)
    hap.terminate()
    hap.wait(10)
    sink.stop()


def t_deliveries(r):
    acked = dict(state["c1"].acked)
    acked.update(state["c2"].acked)
    dumps = sink.dumps()
    r.check("every dump complete", all(d["complete"] for d in dumps),
            [d["path"] for d in dumps if not d["complete"]][:3])
    by_mid = collections.defaultdict(list)
    src = collections.Counter()
    for d in dumps:
        mid = d["message_id"] or ""
        if mid.startswith("<topo-"):
            by_mid[mid].append(d)
        else:
            for a in d["rcpts"]:
                if a.endswith("dst@example.net"):
                    src[a] += 1
    r.eq("smtp-source: every recipient arrived exactly once",
         (len(src), max(src.values()) if src else 0), (N_SOURCE, 1))
    missing = [m for m in acked if m not in by_mid]
    r.check("every message acknowledged with 250 arrived (%d)" % len(acked), not missing,
            "%d missing, e.g. %s" % (len(missing), [(m, acked[m]) for m in missing[:5]]))
    dups = {m: v for m, v in by_mid.items() if len(v) > 1}
    ndup = collections.Counter()
    for m, v in dups.items():
        ndup[received_by(v[0])[0]] += len(v) - 1
    kill = state["c1"].kill_time
    print("   arrivals: %d distinct Python messages (%d acknowledged, %d arrived without a 250: "
          "cut at the kill after the commit); duplicates %s; mx1 recovered %d at its restart"
          % (len(by_mid), len(acked), len([m for m in by_mid if m not in acked]), dict(ndup),
             state["recovered"]), flush=True)
    # a duplicate is a message the sink took whose DONE record did not make it
    # to mx1's spool: its first copy must be from the last moment before the kill
    firsts = [kill - min(x["mtime"] for x in v) for v in dups.values()]
    if firsts:
        print("   duplicates' first copies arrived %.3f..%.3f s before the kill"
              % (min(firsts), max(firsts)), flush=True)
    r.check("duplicates only for messages in flight at the kill (first copy < 2 s before)",
            all(x < 2.0 for x in firsts), sorted(firsts)[-5:])
    r.eq("no duplicates from mx2 (not killed)", ndup.get("mx2", 0), 0)
    r.check("duplicates from mx1 at most what it held at the kill (%d <= %d)"
            % (ndup.get("mx1", 0), state["recovered"]), ndup.get("mx1", 0) <= state["recovered"])
    addrs = collections.Counter(received_by(v[0])[1] for v in by_mid.values())
    r.eq("Received: names the real client [%s] (PROXY v2), for every Python message" % CLIENT,
         dict(addrs), {CLIENT: len(by_mid)})
    logged = collections.Counter(e.get("client") for s in servers for i in range(1, s.nstarts + 1)
                                 for e in s.events("received", i)
                                 if e.get("from") == "<py@example.org>")
    r.check("the logs name the real client too", set(logged) == {CLIENT}, logged)
    r.check("bounded: the whole run under 2 minutes (%.0fs)" % (time.monotonic() - T0),
            time.monotonic() - T0 < 120)


def main():
    try:
        rmtest.main([t_setup, t_smtp_source, t_kill_one, t_restart, t_stop, t_deliveries])
    finally:
        hap = state.get("hap")
        if hap is not None and hap.poll() is None:
            hap.kill()


if __name__ == "__main__":
    main()
