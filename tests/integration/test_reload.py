#!/usr/bin/python3
"""SIGHUP reloads the whole configuration as a new snapshot.

- ten reloads while two smtp-source runs send (a flood of one message per
  session, and long sessions of ten messages each, one a second, that span
  every reload), alternating two configurations that route mail to two
  different smtp-sinks and greet with two host names: both exit 0 (no
  session dropped), every message is received once and delivered exactly
  once (over the two sinks), and a session opened after the last reload gets
  the last configuration;
- a session opened before a reload finishes under the configuration it
  started with (its EHLO still says the old SIZE), a new one gets the new;
- a bad file is refused with FILE:LINE: key, and the old configuration stays;
- a changed route applies to mail already queued (deferred towards a hop that
  is down; after the reload it goes to the new one);
- listeners are added and removed: a new one answers at once, a removed one
  refuses new connections while a session it accepted before goes on;
- keys that need a restart are kept, with a warning naming them.
"""
import collections
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

SMTP_SOURCE = rmtest.need_tool("smtp-source")
N = int(os.environ.get("RMTEST_RELOAD_N", "3000"))  # the flood
SLOW_SESSIONS, SLOW_EACH = 5, 10  # the long sessions: one message a second each


class FileServer(rmtest.Server):
    """A ringmail configured by a file only, so that a reload sees every change."""

    def __init__(self, name, **kw):
        self.dir = rmtest.tempdir(prefix="rmtest-reload-")
        self.path = os.path.join(self.dir, "ringmail.yml")
        super().__init__(name=name, hold=False, config=self.path, **kw)

    def write(self, **keys):
        base = {"listen": "%s:%d" % (rmtest.LOOPBACK, self.port), "spool_dir": self.spool,
                "user": "root", "admin_listen": '""', "myhostname": "rmtest.example",
                "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                "smtp_connection_cache_time_limit": "1s"}
        base.update(keys)
        with open(self.path + ".tmp", "w") as f:
            for k, v in base.items():
                f.write("%s: %s\n" % (k, v))
        os.rename(self.path + ".tmp", self.path)

    def args(self):
        return [self.bin, "-c", self.path]

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)


def hop(sink):
    return '"[%s]:%d"' % (rmtest.LOOPBACK, sink.port)


def source_rcpts(dumps, local="dst"):
    """Counter of smtp-source -N recipients ("<k>LOCAL@example.net") over dumps."""
    tail = local + "@example.net"
    c = collections.Counter()
    for d in dumps:
        for a in d["rcpts"]:
            if a.endswith(tail) and a[:-len(tail)].isdigit():
                c[a] += 1
    return c


def greeting(port):
    s = smtplib.SMTP(rmtest.LOOPBACK, port, timeout=10)
    try:
        code, text = s.ehlo("client.example")
        return s.sock and text.decode().split("\n")[0], s.esmtp_features.get("size")
    finally:
        s.quit()


def reloads_seen(srv, n):
    return srv.wait_events("reload", lambda e: e.get("what") == "config" and
                           e.get("result") == "ok", n=n, timeout=20)


def t_ten_reloads_under_load(r):
    a = rmtest.Sink(name="sink-a").start()
    b = rmtest.Sink(name="sink-b").start()
    srv = FileServer("ten")
    confs = [{"relayhost": hop(a), "myhostname": "alpha.example"},
             {"relayhost": hop(b), "myhostname": "bravo.example"}]
    srv.write(**confs[0])
    srv.start()
    def source(*args):
        return subprocess.Popen([SMTP_SOURCE] + list(args) +
                                ["-l", "2048", "-N", "-f", "src@example.org", "-M",
                                 "client.example", "%s:%d" % (rmtest.LOOPBACK, srv.port)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    nslow = SLOW_SESSIONS * SLOW_EACH
    try:
        slow = source("-d", "-w", "1", "-s", str(SLOW_SESSIONS), "-m", str(nslow),
                      "-t", "slow@example.net")
        p = source("-s", "10", "-m", str(N), "-t", "dst@example.net")
        sent = 0
        for k in range(10):
            time.sleep(0.25)
            srv.write(**confs[(k + 1) % 2])
            srv.hup()
            sent += 1
            reloads_seen(srv, sent)
        running = slow.poll() is None
        out = p.communicate(timeout=300)[0].decode("utf-8", "replace")
        sout = slow.communicate(timeout=300)[0].decode("utf-8", "replace")
        r.check("the ten reloads came while the long sessions were open", running,
                "the long sessions ended before the last reload")
        r.eq("flood: smtp-source exit 0 (nothing dropped, nothing refused)", p.returncode, 0)
        r.check("flood: smtp-source printed no error", "error" not in out.lower() and
                "fatal" not in out.lower(), out[-1500:])
        r.eq("long sessions: smtp-source -d exit 0 (no session dropped)", slow.returncode, 0)
        r.check("long sessions: no error", "error" not in sout.lower() and
                "fatal" not in sout.lower(), sout[-1500:])
        r.eq("ten reloads, each ok", len(reloads_seen(srv, 10)), 10)
        r.eq("no reload refused", [e for e in srv.events("reload") if e.get("result") != "ok"
                                   and e.get("what") == "config"], [])
        def counts():
            d = a.dumps() + b.dumps()
            return source_rcpts(d), source_rcpts(d, "slow")
        rmtest.wait_until(lambda: sum(counts()[0].values()) >= N and
                          sum(counts()[1].values()) >= nslow, 120, 0.5)
        for (c, want, what) in zip(counts(), (N, nslow), ("flood", "long sessions")):
            dup = {k: v for k, v in c.items() if v > 1}
            r.eq("%s: every message delivered (distinct recipients)" % what, len(c), want)
            r.check("%s: none twice" % what, not dup, list(dup.items())[:5])
        na, nb = len(a.dumps()), len(b.dumps())
        print("   sink a: %d, sink b: %d" % (na, nb), flush=True)
        r.check("both configurations routed mail (the reloads took effect)", na > 0 and nb > 0,
                (na, nb))
        # the last configuration written was confs[10 % 2] = confs[0]
        first, _ = greeting(srv.port)
        r.check("a new session gets the last configuration's host name",
                first and first.startswith("alpha.example"), first)
        r.eq("no connection limit or refusal logged", [e for e in srv.events("refused")], [])
    finally:
        r.eq("exit 0 on SIGTERM", srv.stop(), 0)
        recv = srv.events("received")
        r.eq("event=received lines", len(recv), N + nslow)
        a.stop()
        b.stop()


def t_session_keeps_its_snapshot(r):
    srv = FileServer("keep")
    srv.write(message_size_limit="1000000", relayhost='"[127.0.0.1]:9"')
    srv.start()
    try:
        old = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=10)
        old.ehlo("client.example")
        r.eq("before: SIZE 1000000", old.esmtp_features.get("size"), "1000000")
        srv.write(message_size_limit="2000000", relayhost='"[127.0.0.1]:9"')
        srv.hup()
        r.check("reloaded", reloads_seen(srv, 1))
        _, size = greeting(srv.port)
        r.eq("a new session: SIZE 2000000", size, "2000000")
        old.ehlo("client.example")
        r.eq("the session opened before the reload still says SIZE 1000000",
             old.esmtp_features.get("size"), "1000000")
        code, _ = old.mail("src@example.org", ["SIZE=1500000"])
        r.eq("and still applies it (552 for 1500000 octets)", code, 552)
        old.quit()
    finally:
        r.eq("exit 0", srv.stop(), 0)


def t_bad_file_refused(r):
    srv = FileServer("bad")
    srv.write(myhostname="good.example", relayhost='"[127.0.0.1]:9"')
    srv.start()
    try:
        with open(srv.path, "a") as f:
            f.write("no_such_key: 1\n")
        lines = open(srv.path).read().count("\n")
        srv.hup()
        ev = srv.wait_events("reload", lambda e: e.get("result") == "refused")
        err = ev[0].get("error", "") if ev else ""
        r.check("refused, naming file, line and key",
                ("%s:%d:" % (srv.path, lines)) in err and "no_such_key" in err, ev)
        first, _ = greeting(srv.port)
        r.check("the old configuration stays in service", first and
                first.startswith("good.example"), first)
        srv.write(myhostname="new.example", relayhost='"[127.0.0.1]:9"')
        srv.hup()
        r.check("a good file after a bad one is taken", reloads_seen(srv, 1))
        first, _ = greeting(srv.port)
        r.check("and serves", first and first.startswith("new.example"), first)
    finally:
        r.eq("exit 0", srv.stop(), 0)


def t_route_change_applies_to_queued_mail(r):
    down = rmtest.free_port()
    sink = rmtest.Sink(name="sink-reroute").start()
    srv = FileServer("reroute")
    srv.write(relayhost='"[%s]:%d"' % (rmtest.LOOPBACK, down))
    srv.start()
    try:
        s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=10)
        s.ehlo("client.example")
        for k in range(3):
            s.sendmail("src@example.org", ["%ddst@example.net" % k],
                       b"Subject: queued %d\r\n\r\nhi\r\n" % k)
        s.quit()
        r.check("deferred while the hop is down",
                len(srv.wait_events("deferred", n=3, timeout=20)) >= 3, srv.log()[-1500:])
        srv.write(relayhost=hop(sink))
        srv.hup()
        r.check("reloaded", reloads_seen(srv, 1))
        got = rmtest.wait_until(lambda: len(source_rcpts(sink.dumps())) >= 3, 30, 0.2)
        r.check("the queued messages went to the new route", got,
                source_rcpts(sink.dumps()))
        r.check("log: event=rerouted", srv.wait_events("rerouted"), srv.log()[-1500:])
        sent = srv.wait_events("sent", n=3)
        r.check("sent through the new hop", len(sent) == 3 and all(
            e.get("relay") == "[%s]:%d" % (rmtest.LOOPBACK, sink.port) for e in sent), sent)
    finally:
        r.eq("exit 0", srv.stop(), 0)
        sink.stop()
    q = rmtest.queue_list(srv.spool)
    r.check("nothing left in the queue", "Mail queue is empty" in q.text, q.text[-500:])


def t_listeners_added_and_removed(r):
    srv = FileServer("listeners")
    a = "%s:%d" % (rmtest.LOOPBACK, srv.port)
    b_port = rmtest.free_port()
    b = "%s:%d" % (rmtest.LOOPBACK, b_port)
    srv.write(relayhost='"[127.0.0.1]:9"', delivery="hold")
    srv.start()
    try:
        srv.write(listen='["%s", "%s"]' % (a, b), relayhost='"[127.0.0.1]:9"', delivery="hold")
        srv.hup()
        r.check("reloaded", reloads_seen(srv, 1))
        first, _ = greeting(b_port)
        r.check("the added listener answers", first and first.startswith("rmtest.example"),
                first)
        old = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=10)
        old.ehlo("client.example")
        srv.write(listen='["%s"]' % b, relayhost='"[127.0.0.1]:9"', delivery="hold")
        srv.hup()
        r.check("reloaded again", reloads_seen(srv, 2))
        r.check("log: event=listener_closed", srv.wait_events(
            "listener_closed", lambda e: e.get("addr") == a), srv.log()[-1500:])
        try:
            socket.create_connection((rmtest.LOOPBACK, srv.port), timeout=5).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        r.check("the removed listener refuses new connections", refused)
        refused = old.sendmail("src@example.org", ["x@example.net"],
                               b"Subject: still here\r\n\r\nhi\r\n")
        r.eq("a session it accepted before the reload goes on and sends", refused, {})
        old.quit()
        first, _ = greeting(b_port)
        r.check("the kept listener still answers", first and first.startswith("rmtest.example"),
                first)
    finally:
        r.eq("exit 0", srv.stop(), 0)


def t_restart_keys_kept(r):
    srv = FileServer("restart-keys")
    srv.write(relayhost='"[127.0.0.1]:9"')
    srv.start()
    try:
        other = os.path.join(srv.dir, "other-spool")
        srv.write(relayhost='"[127.0.0.1]:9"', spool_dir=other, max_connections="77")
        srv.hup()
        r.check("reloaded", reloads_seen(srv, 1))
        warn = [e.get("key") for e in srv.events("reload") if e.get("key")]
        r.eq("restart-only keys named in a warning", sorted(warn),
             ["max_connections", "spool_dir"])
        r.check("the running spool stays", not os.path.exists(other))
        s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=10)
        s.ehlo("client.example")
        s.sendmail("src@example.org", ["x@example.net"], b"Subject: s\r\n\r\nhi\r\n")
        s.quit()
        r.check("mail still spooled where it was", srv.wait_events("received"))
    finally:
        r.eq("exit 0", srv.stop(), 0)


if __name__ == "__main__":
    rmtest.main([t_session_keeps_its_snapshot, t_bad_file_refused,
                 t_route_change_applies_to_queued_mail, t_listeners_added_and_removed,
                 t_restart_keys_kept,
                 t_ten_reloads_under_load])
