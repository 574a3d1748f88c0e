#!/usr/bin/python3
"""Delivery: ringmail relays what it accepted, to real peers, exactly once.

Peers are Postfix's smtp-sink (SMTP and LMTP, each transaction dumped to a
file) and smtp-source; arrivals are counted by unique recipient (smtp-source
-N numbers them) and Message-ID in the sink's dump files.

1. maildir: no route options, cwd = a temp dir: 50 smtplib messages land in
   ./var/maildir/new, each with Return-Path: and Received: first and its body;
   the queue is empty after SIGTERM.
2. smtp: relayhost = smtp-sink; smtp-source -s 20 -m 2000 -l 1024: every
   message arrives exactly once; an awkward sample (dot lines, 8-bit octets
   with BODY=8BITMIME, a 998-octet line) arrives byte for byte.
3. lmtp: routes to smtp-sink -L over TCP and over a unix socket (500 + 50,
   and a 3-recipient message).
4. next hop down, then up: relayhost on a dead port, backoff 1s..2s: 200
   messages are deferred, the sink starts ~3 s later, all arrive exactly once.
5. failover: relayhost = DEADPORT, SINKPORT: everything arrives at the second.
6. 5xx: a sink that rejects RCPT and one that rejects the final dot: the
   recipients are logged event=bounced with dsn 5.x.x, never retried, gone
   from the queue; a good recipient of the same message is delivered; one
   RFC 3464 bounce per message goes from <> to the sender's next hop.
7. kill -9 in the middle of a 5000-message smtp-source run (with Python
   clients recording every 250); restarted on the same spool the queue drains,
   every acknowledged message arrived at least once; duplicates are printed
   and must have been first delivered just before the kill.
"""
import collections
import os
import re
import smtplib
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402
from rmtest import queued_id  # noqa: E402

SMTP_SINK = rmtest.need_tool("smtp-sink")
SMTP_SOURCE = rmtest.need_tool("smtp-source")
SCALE = float(os.environ.get("RMTEST_DELIVERY_SCALE", "1"))


def n_(x):
    return max(1, int(x * SCALE))


def opts(**kw):
    o = {"reactors": "2", "workers": "2"}
    o.update({k: v for k, v in kw.items() if v is not None})
    return o


def server(name, cwd=None, **kw):
    """A ringmail that delivers (hold=False), in its own working directory (so a
    default maildir route, e.g. for bounces, never writes under the caller's cwd)."""
    return rmtest.Server(hold=False, opts=opts(**kw), name=name,
                         cwd=cwd or rmtest.tempdir(prefix="rmtest-cwd-"))


def hop(sink):
    return "[%s]:%d" % (rmtest.LOOPBACK, sink.port)


def run_source(port, n, sessions=20, length=1024, to="dst@example.net", extra=None,
               timeout=120):
    """smtp-source into ringmail; -N makes every recipient unique ("<k>dst@...")."""
    a = [SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-l", str(length), "-N",
         "-f", "src@example.org", "-t", to, "-M", "client.example"] + list(extra or []) + \
        ["%s:%d" % (rmtest.LOOPBACK, port)]
    t0 = time.monotonic()
    p = subprocess.run(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), time.monotonic() - t0


def wait_count(sink, n, timeout, srv=None, nsent=None):
    """Bounded wait until the sink holds n dump files (and, given srv, ringmail has
    logged nsent event=sent lines: the sink's 250 came back); then a moment more."""
    t0 = time.monotonic()
    got = rmtest.wait_until(lambda: sink.count() >= n and
                            (srv is None or len(srv.events("sent")) >= nsent), timeout, 0.1)
    time.sleep(0.3)
    return bool(got), time.monotonic() - t0


def source_rcpts(dumps, domain="@example.net", suffix="dst"):
    """Counter of smtp-source -N recipients ("<k>dst@example.net") over dumps."""
    c = collections.Counter()
    for d in dumps:
        for a in d["rcpts"]:
            if a.endswith(suffix + domain) and a[:-len(suffix + domain)].isdigit():
                c[a] += 1
    return c


def exactly_once(r, what, counter, n):
    dup = {k: v for k, v in counter.items() if v > 1}
    r.eq("%s: distinct recipients arrived" % what, len(counter), n)
    r.check("%s: no duplicates" % what, not dup, "%d duplicated, e.g. %s"
            % (len(dup), list(dup.items())[:5]))


def smtp_send(port, sender, rcpts, body, mail_options=(), helo="client.example"):
    s = smtplib.SMTP(rmtest.LOOPBACK, port, local_hostname=helo, timeout=30)
    try:
        s.ehlo()
        s.mail(sender, list(mail_options))
        for a in rcpts:
            code, msg = s.rcpt(a)
            assert code == 250, (a, code, msg)
        code, msg = s.data(body)
        return code, queued_id(msg)
    finally:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            s.close()


def awkward(tag):
    """A message meant to break a careless relay: dot lines (and one lone '.'),
    every 8-bit octet, a 998-octet line, trailing white space, a long header."""
    eight = bytes(range(0x80, 0x100))
    lines = [
        b"From: Awkward <awk@example.org>",
        b"To: <sample@example.net>",
        b"Subject: awkward " + tag.encode(),
        b"Message-ID: <awkward-" + tag.encode() + b"@rmtest.example>",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=iso-8859-1",
        b"Content-Transfer-Encoding: 8bit",
        b"X-Folded: first part",
        b"\tsecond part",
        b"",
        b".leading dot",
        b"..two leading dots",
        b".",
        b"..",
        b" .",
        b"",
        b"8-bit: " + eight[:64],
        eight[64:] + b" caf\xc3\xa9 \xe9t\xe9",
        b"D" * 998,
        b"." + b"E" * 997,
        b"trailing spaces   ",
        b"\ttab first",
        b"",
        b"last line",
        b".",
    ]
    return b"\r\n".join(lines) + b"\r\n"


def check_byte_exact(r, what, dumps, sent, tag, sender, rcpt):
    """The sample's data at the sink = ringmail's Received: + what was sent."""
    mine = [d for d in dumps if d["message_id"] == "<awkward-%s@rmtest.example>" % tag]
    if not r.eq("%s: the awkward sample arrived once" % what, len(mine), 1):
        return
    d = mine[0]
    r.check("%s: sample dump complete" % what, d["complete"], d["raw"][-200:])
    recv, rest = rmtest.strip_first_header(d["data"])
    r.check("%s: ringmail's Received: first" % what,
            recv.startswith(b"Received: from ") and b"(ringmail)" in recv, recv[:300])
    same = rest == sent
    detail = ""
    if not same:
        k = next((i for i in range(min(len(rest), len(sent))) if rest[i] != sent[i]),
                 min(len(rest), len(sent)))
        detail = "lengths got %d want %d; first difference at %d: got %r want %r" % (
            len(rest), len(sent), k, rest[max(0, k - 40):k + 40], sent[max(0, k - 40):k + 40])
    r.check("%s: body and header byte-exact after the Received: (%d octets)" % (what, len(sent)),
            same, detail)
    r.eq("%s: envelope sender" % what, (d["mail"] or "").split()[0] if d["mail"] else None,
         "<%s>" % sender)
    r.eq("%s: envelope recipient" % what, d["rcpts"], [rcpt])
    return d


# ---------------------------------------------------------------------------

def t_maildir(r):
    n = n_(50)
    cwd = rmtest.tempdir(prefix="rmtest-cwd-")
    srv = server("maildir", cwd=cwd).start()
    try:
        sender = "maildir-src@example.org"
        bodies = {}
        for i in range(n):
            subj = "maildir test %03d" % i
            body = ("From: <%s>\r\nTo: <u%d@example.net>\r\nSubject: %s\r\n"
                    "Message-ID: <maildir-%d@rmtest.example>\r\n\r\nbody of message %03d\r\n"
                    ".dot line %03d\r\n" % (sender, i, subj, i, i, i)).encode()
            bodies[subj] = body
            code, qid = smtp_send(srv.port, sender, ["u%d@example.net" % i], body)
            if code != 250:
                r.check("maildir: message %d accepted" % i, False, code)
        new = os.path.join(cwd, "var", "maildir", "new")
        listing = lambda: os.listdir(new) if os.path.isdir(new) else []  # noqa: E731
        ok = rmtest.wait_until(lambda: len(listing()) >= n, 20, 0.1)
        time.sleep(0.3)
        files = listing()
        r.check("maildir: %d files in var/maildir/new (relative to the cwd)" % n, ok,
                "%d files; log:\n%s" % (len(files), srv.log()[-2000:]))
        r.eq("maildir: exactly %d files" % n, len(files), n)
        tmp = os.path.join(cwd, "var", "maildir", "tmp")
        r.eq("maildir: tmp/ empty", os.listdir(tmp) if os.path.isdir(tmp) else [], [])
        subjects = collections.Counter()
        bad_start, bad_body = [], []
        for f in files:
            with open(os.path.join(new, f), "rb") as fh:
                data = fh.read()
            norm = data.replace(b"\r\n", b"\n")
            first, _, after = norm.partition(b"\n")
            if first != b"Return-Path: <%s>" % sender.encode() or \
                    not after.startswith(b"Received: from ") or b"(ringmail)" not in after[:300]:
                bad_start.append((f, data[:200]))
            subj = None
            for ln in norm.split(b"\n"):
                if ln.startswith(b"Subject: "):
                    subj = ln[9:].decode()
                    break
            subjects[subj] += 1
            want = bodies.get(subj)
            if want is None or want.replace(b"\r\n", b"\n") not in norm:
                bad_body.append(f)
        r.check("maildir: each file starts with Return-Path: <sender>, then Received:",
                not bad_start, bad_start[:2])
        r.eq("maildir: distinct subjects", len(subjects), n)
        r.check("maildir: each file holds its message as sent", not bad_body, bad_body[:3])
        sent = srv.events("sent")
        r.eq("maildir: event=sent lines", len(sent), n)
        r.check("maildir: relay=maildir:./var/maildir",
                all(e.get("relay") == "maildir:./var/maildir" for e in sent),
                set(e.get("relay") for e in sent))
    finally:
        rc = srv.stop()
    r.eq("maildir: exit 0 on SIGTERM", rc, 0)
    q = srv.queue_list()
    r.check("maildir: queue list says 'Mail queue is empty'", q.empty and q.rc == 0,
            q.text[-500:] + q.stderr[-500:])


def t_smtp_relay(r):
    n = n_(10000)  # the delivery milestone's count: 10,000 from smtp-source -s 20
    sink = rmtest.Sink(name="sink-smtp").start()
    srv = server("smtp", relayhost=hop(sink)).start()
    try:
        rc, out, dt = run_source(srv.port, n, 20, 1024)
        r.check("smtp: smtp-source exit 0", rc == 0, out[-1000:])
        print("   smtp-source -s 20 -m %d -l 1024 into ringmail: %.1fs" % (n, dt), flush=True)
        sent = awkward("smtp")
        code, qid = smtp_send(srv.port, "awk@example.org", ["sample@example.net"], sent,
                              ["BODY=8BITMIME"])
        r.eq("smtp: awkward sample accepted", code, 250)
        ok, dt = wait_count(sink, n + 1, 120, srv, n + 1)
        r.check("smtp: %d transactions at the sink within 120 s" % (n + 1), ok, sink.count())
        print("   all at the sink %.1fs after the last was accepted" % dt, flush=True)
    finally:
        rc = srv.stop()
    r.eq("smtp: exit 0 on SIGTERM", rc, 0)
    dumps = sink.dumps()
    r.eq("smtp: dump files", len(dumps), n + 1)
    r.check("smtp: every dump complete", all(d["complete"] for d in dumps),
            [d["path"] for d in dumps if not d["complete"]][:3])
    exactly_once(r, "smtp", source_rcpts(dumps), n)
    mids = collections.Counter(d["message_id"] for d in dumps
                               if d["message_id"] and "awkward" not in d["message_id"])
    r.eq("smtp: distinct Message-IDs (smtp-source)", len(mids), n)
    r.eq("smtp: Message-IDs seen more than once", sum(1 for v in mids.values() if v > 1), 0)
    d = check_byte_exact(r, "smtp", dumps, sent, "smtp", "awk@example.org", "sample@example.net")
    if d:
        r.check("smtp: BODY=8BITMIME passed on to the next hop", "BODY=8BITMIME" in (d["mail"] or ""),
                d["mail"])
    ev = srv.events("sent")
    r.eq("smtp: event=sent lines", len(ev), n + 1)
    r.check("smtp: relay=%s dsn=2.0.0 attempts=1" % hop(sink),
            all(e.get("relay") == hop(sink) and e.get("dsn") == "2.0.0" and
                e.get("attempts") == "1" for e in ev),
            [e for e in ev if e.get("relay") != hop(sink) or e.get("dsn") != "2.0.0"][:2])
    q = srv.queue_list()
    r.check("smtp: queue empty after stop", q.empty, q.text[-500:])
    sink.stop()


def t_lmtp(r):
    n, nu = n_(500), n_(50)
    sink = rmtest.Sink(lmtp=True, name="sink-lmtp").start()
    sockdir = rmtest.tempdir(prefix="rmtest-lmtp-")
    os.chmod(sockdir, 0o755)
    usink = rmtest.Sink(lmtp=True, name="sink-lmtp-unix",
                        unix_path=os.path.join(sockdir, "lmtp.sock")).start()
    routes = "example.net=lmtp:%s,example.com=lmtp:unix:%s" % (hop(sink), usink.unix_path)
    srv = server("lmtp", routes=routes).start()
    try:
        rc, out, dt = run_source(srv.port, n, 20, 1024)
        r.check("lmtp: smtp-source exit 0", rc == 0, out[-1000:])
        rc, out, _ = run_source(srv.port, nu, 5, 512, to="dst@example.com")
        r.check("lmtp unix: smtp-source exit 0", rc == 0, out[-1000:])
        three = ["lm1@example.net", "lm2@example.net", "lm3@example.net"]
        body = (b"From: <m@example.org>\r\nSubject: three\r\nMessage-ID: <three@rmtest.example>"
                b"\r\n\r\nto three recipients\r\n")
        code, _ = smtp_send(srv.port, "m@example.org", three, body)
        r.eq("lmtp: 3-recipient message accepted", code, 250)
        sent = awkward("lmtp")
        code, _ = smtp_send(srv.port, "awk@example.org", ["sample@example.net"], sent,
                            ["BODY=8BITMIME"])
        r.eq("lmtp: awkward sample accepted", code, 250)
        ok, dt = wait_count(sink, n + 2, 60)
        r.check("lmtp: %d transactions at the TCP sink within 60 s" % (n + 2), ok, sink.count())
        ok, _ = wait_count(usink, nu, 30, srv, n + nu + 3 + 1)
        r.check("lmtp: %d transactions at the unix-socket sink" % nu, ok, usink.count())
    finally:
        rc = srv.stop()
    r.eq("lmtp: exit 0 on SIGTERM", rc, 0)
    dumps = sink.dumps()
    r.check("lmtp: every dump says LMTP", all(d["proto"] == "LMTP" for d in dumps),
            set(d["proto"] for d in dumps))
    exactly_once(r, "lmtp tcp", source_rcpts(dumps), n)
    tdump = [d for d in dumps if d["message_id"] == "<three@rmtest.example>"]
    r.eq("lmtp: the 3-recipient message: one transaction", len(tdump), 1)
    if tdump:
        r.eq("lmtp: ... with its 3 recipients", sorted(tdump[0]["rcpts"]), three)
    check_byte_exact(r, "lmtp", dumps, sent, "lmtp", "awk@example.org", "sample@example.net")
    udumps = usink.dumps()
    exactly_once(r, "lmtp unix", source_rcpts(udumps, "@example.com"), nu)
    ev = srv.events("sent")
    r.eq("lmtp: event=sent lines (one per recipient)", len(ev), n + nu + 3 + 1)
    relays = collections.Counter(e.get("relay") for e in ev)
    print("   relays: %s" % dict(relays), flush=True)
    q = srv.queue_list()
    r.check("lmtp: queue empty after stop", q.empty, q.text[-500:])
    sink.stop()
    usink.stop()


def t_down_then_up(r):
    n = n_(200)
    port = rmtest.free_port()
    sink = rmtest.Sink(port=port, name="sink-late")  # not started yet
    srv = server("late", relayhost=hop(sink), minimal_backoff_time="1s",
                 maximal_backoff_time="2s").start()
    try:
        rc, out, dt = run_source(srv.port, n, 10, 512)
        r.check("down: smtp-source exit 0", rc == 0, out[-1000:])
        t_acc = time.monotonic()
        deferred = rmtest.wait_until(lambda: len(srv.events("deferred")) >= n, 10, 0.1)
        r.check("down: every message logged event=deferred while the hop is down", deferred,
                len(srv.events("deferred")))
        ev = srv.events("deferred")
        if ev:
            print("   e.g. %s" % {k: ev[0].get(k) for k in ("relay", "dsn", "status", "attempts")},
                  flush=True)
        r.check("down: deferred dsn 4.x.x", ev and all(e.get("dsn", "").startswith("4.") for e in ev),
                set(e.get("dsn") for e in ev))
        # nothing listens: the connection is refused, never established; the
        # deferral must say so (4.4.1, as the worker's own connect-error path
        # has it), not report a lost connection (4.4.2)
        r.check("down: a refused connection is deferred as 4.4.1, not 4.4.2 'lost connection'",
                ev and all(e.get("dsn") == "4.4.1" and "lost connection" not in e.get("status", "")
                           for e in ev),
                collections.Counter((e.get("dsn"), e.get("status")) for e in ev))
        r.eq("down: nothing sent while down", len(srv.events("sent")), 0)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t_acc)))
        sink.start()
        t_up = time.monotonic()
        ok, _ = wait_count(sink, n, 30, srv, n)
        print("   all %d at the sink %.1fs after it came up" % (sink.count(), time.monotonic() - t_up),
              flush=True)
        r.check("down: %d arrived within 30 s of the hop coming up" % n, ok, sink.count())
    finally:
        rc = srv.stop()
    r.eq("down: exit 0 on SIGTERM", rc, 0)
    dumps = sink.dumps()
    exactly_once(r, "down", source_rcpts(dumps), n)
    sent = srv.events("sent")
    r.eq("down: event=sent lines", len(sent), n)
    r.check("down: every sent line has attempts >= 2",
            sent and all(int(e.get("attempts", "0")) >= 2 for e in sent),
            collections.Counter(e.get("attempts") for e in sent))
    q = srv.queue_list()
    r.check("down: queue empty after stop", q.empty, q.text[-500:])
    sink.stop()


def t_failover(r):
    n = n_(200)
    dead = rmtest.free_port()
    sink = rmtest.Sink(name="sink-second").start()
    relay = "[%s]:%d,%s" % (rmtest.LOOPBACK, dead, hop(sink))
    srv = server("failover", relayhost=relay).start()
    try:
        t0 = time.monotonic()
        rc, out, dt = run_source(srv.port, n, 10, 512)
        r.check("failover: smtp-source exit 0", rc == 0, out[-1000:])
        ok, _ = wait_count(sink, n, 30, srv, n)
        r.check("failover: %d at the second hop within 30 s" % n, ok, sink.count())
        print("   %d at the second hop in %.1fs" % (sink.count(), time.monotonic() - t0), flush=True)
    finally:
        rc = srv.stop()
    r.eq("failover: exit 0 on SIGTERM", rc, 0)
    exactly_once(r, "failover", source_rcpts(sink.dumps()), n)
    sent = srv.events("sent")
    r.eq("failover: event=sent lines", len(sent), n)
    r.check("failover: all relay=%s" % hop(sink), all(e.get("relay") == hop(sink) for e in sent),
            collections.Counter(e.get("relay") for e in sent))
    r.eq("failover: no event=deferred (the failover is within one attempt)",
         len(srv.events("deferred")), 0)
    q = srv.queue_list()
    r.check("failover: queue empty after stop", q.empty, q.text[-500:])
    sink.stop()


def t_hard_fail(r):
    rej_rcpt = rmtest.Sink(name="sink-rej-rcpt",
                           flags=["-f", "rcpt", "-B", "550 5.1.1 Error: no such user"]).start()
    rej_dot = rmtest.Sink(name="sink-rej-dot",
                          flags=["-f", ".", "-B", "554 5.7.1 Error: content rejected"]).start()
    good = rmtest.Sink(name="sink-good").start()
    dsn = rmtest.Sink(name="sink-dsn").start()  # the sender's domain: bounces land here
    routes = "bad.example=%s,dotfail.example=%s,good.example=%s,example.org=%s" % (
        hop(rej_rcpt), hop(rej_dot), hop(good), hop(dsn))
    srv = server("hardfail", routes=routes, minimal_backoff_time="1s",
                 maximal_backoff_time="1s").start()
    cases = [("a", ["user@bad.example"]), ("b", ["user@dotfail.example"]),
             ("c", ["ok@good.example", "nobody@bad.example"])]
    failed = {"a": ["user@bad.example"], "b": ["user@dotfail.example"],
              "c": ["nobody@bad.example"]}
    qids = {}
    try:
        for tag, rcpts in cases:
            body = ("From: <hf@example.org>\r\nSubject: hard %s\r\n"
                    "Message-ID: <hard-%s@rmtest.example>\r\n\r\nhard failure test %s\r\n"
                    % (tag, tag, tag)).encode()
            code, qid = smtp_send(srv.port, "hf@example.org", rcpts, body)
            r.eq("5xx: message %s accepted" % tag, code, 250)
            qids[tag] = qid
        want = {"user@bad.example", "user@dotfail.example", "nobody@bad.example"}
        got = rmtest.wait_until(
            lambda: {e.get("to", "").strip("<>") for e in srv.events("bounced")} >= want, 15, 0.1)
        r.check("5xx: three recipients bounced within 15 s", got,
                [ln for ln in srv.log().splitlines() if "event=" in ln][-10:])
        ok, _ = wait_count(dsn, 3, 15)
        r.check("5xx: three bounce messages (DSNs) at the sender's next hop within 15 s", ok,
                dsn.count())
        rmtest.wait_until(lambda: len(srv.events("sent")) >= 4, 10, 0.1)
        # with a 1 s backoff, a retry would show within this wait
        time.sleep(4)
        log_mid = srv.log()
    finally:
        rc = srv.stop()
    r.eq("5xx: exit 0 on SIGTERM", rc, 0)
    b = srv.events("bounced")
    for e in b:
        print("   bounced: to=%s dsn=%s relay=%s attempts=%s status=%r"
              % (e.get("to"), e.get("dsn"), e.get("relay"), e.get("attempts"), e.get("status")),
              flush=True)
    per = collections.Counter(e.get("to") for e in b)
    r.eq("5xx: each bounced recipient logged once",
         dict(per), {"<user@bad.example>": 1, "<user@dotfail.example>": 1,
                     "<nobody@bad.example>": 1})
    r.check("5xx: dsn 5.x.x", b and all(e.get("dsn", "").startswith("5.") for e in b),
            [e.get("dsn") for e in b])
    st = {e.get("to"): e.get("status", "") for e in b}
    r.check("5xx: status carries the RCPT reply", "no such user" in st.get("<user@bad.example>", ""),
            st)
    r.check("5xx: status carries the end-of-data reply",
            "content rejected" in st.get("<user@dotfail.example>", ""), st)
    r.check("5xx: attempts=1", all(e.get("attempts") == "1" for e in b),
            [e.get("attempts") for e in b])
    r.eq("5xx: no event=deferred (a 5xx is final)", len(srv.events("deferred")), 0)
    later = [ln for ln in srv.log().splitlines()
             if " to=<" in ln and ("@bad.example" in ln or "@dotfail.example" in ln)]
    r.eq("5xx: delivery lines for the rejected recipients (no retry)", len(later), 3)
    r.eq("5xx: no delivery line from 4 s after the bounces until the stop",
         [ln for ln in srv.log()[len(log_mid):].splitlines() if " to=<" in ln], [])
    sent = srv.events("sent")
    r.eq("5xx: the good recipient of message c delivered",
         [e.get("qid", "").upper() for e in sent if e.get("to") == "<ok@good.example>"],
         [qids.get("c")])
    r.eq("5xx: sent lines: ok@good.example and 3 bounces to hf@example.org",
         sorted(e.get("to") for e in sent), ["<hf@example.org>"] * 3 + ["<ok@good.example>"])
    gd = good.dumps()
    r.eq("5xx: good sink got message c for ok@good.example only",
         [(d["message_id"], d["rcpts"]) for d in gd],
         [("<hard-c@rmtest.example>", ["ok@good.example"])])
    r.eq("5xx: RCPT-rejecting sink kept no transaction", rej_rcpt.count(), 0)
    # the bounces: from <>, to the sender, an RFC 3464 report naming the failed
    # recipients only, with the original's headers
    dd = dsn.dumps()
    for d in dd:
        data = d["data"] or b""
        mid = next((t for t in failed if b"<hard-%s@rmtest.example>" % t.encode() in data), None)
        what = "5xx: bounce for message %s" % mid
        r.check("%s: from <> to <hf@example.org>" % what,
                (d["mail"] or "").startswith("<>") and d["rcpts"] == ["hf@example.org"],
                (d["mail"], d["rcpts"]))
        heads = dict(d["headers"])
        r.check("%s: multipart/report; report-type=delivery-status" % what,
                "multipart/report" in heads.get("content-type", "") and
                "delivery-status" in heads.get("content-type", ""), heads.get("content-type"))
        fr = sorted(x.decode() for x in
                    re.findall(rb"Final-Recipient: rfc822; ?([^\r\n]+)", data))
        r.eq("%s: Final-Recipient lines" % what, fr, sorted(failed.get(mid, [])))
        r.check("%s: Action: failed, Status: 5.x.x" % what,
                b"Action: failed" in data and b"Status: 5." in data, data[-1200:])
    r.eq("5xx: one bounce per message with a failed recipient",
         sorted(next((t for t in failed if b"<hard-%s@" % t.encode() in (d["data"] or b"")), "?")
                for d in dd), ["a", "b", "c"])
    q = srv.queue_list()
    r.check("5xx: queue empty after stop (bounced recipients and bounces finished)", q.empty,
            q.text[-800:])
    for k in (rej_rcpt, rej_dot, good, dsn):
        k.stop()


class CrashClients:
    """Python clients sending unique Message-IDs, recording every 250; SIGKILL at `at`."""

    def __init__(self, srv, total, at, threads):
        self.srv = srv
        self.total = total
        self.at = at
        self.threads = threads
        self.lock = threading.Lock()
        self.next = 0
        self.acked = {}  # Message-ID -> qid
        self.errors = []
        self.stop = threading.Event()
        self.kill_time = None
        self.source_running_at_kill = None
        self.source = None

    def take(self):
        with self.lock:
            if self.next >= self.total or self.stop.is_set():
                return None
            self.next += 1
            return self.next - 1

    def client(self, k):
        s = None
        try:
            s = smtplib.SMTP(rmtest.LOOPBACK, self.srv.port, local_hostname="py%d.example" % k,
                             timeout=30)
            s.ehlo()
            for _ in range(self.total):
                i = self.take()
                if i is None:
                    break
                mid = "<crash-%05d@rmtest.example>" % i
                body = ("From: <py@example.org>\r\nTo: <py%05d@example.net>\r\nSubject: crash %d"
                        "\r\nMessage-ID: %s\r\n\r\n" % (i, i, mid)).encode() + \
                    b"".join(b"crash body line %02d %05d\r\n" % (j, i) for j in range(20))
                s.mail("py@example.org")
                s.rcpt("py%05d@example.net" % i)
                code, msg = s.data(body)
                qid = queued_id(msg)
                with self.lock:
                    if code == 250 and qid:
                        self.acked[mid] = qid
                        if len(self.acked) >= self.at and not self.stop.is_set():
                            self.stop.set()
                            self.source_running_at_kill = self.source.poll() is None
                            self.kill_time = time.time()
                            self.srv.kill()
                    elif not self.stop.is_set():
                        self.errors.append((k, code, msg))
        except (OSError, smtplib.SMTPException) as e:
            if not self.stop.is_set():
                self.errors.append((k, "exception", repr(e)))
        finally:
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
            t.join(120)
        return not any(t.is_alive() for t in ts)


def t_kill9(r):
    nsrc, npy = n_(5000), n_(2000)
    sink = rmtest.Sink(name="sink-crash").start()
    srv = server("crash", relayhost=hop(sink)).start()
    outp = os.path.join(sink.base, "smtp-source.out")
    src = None
    try:
        with open(outp, "wb") as of:
            src = subprocess.Popen(
                [SMTP_SOURCE, "-s", "10", "-m", str(nsrc), "-l", "1024", "-N", "-f",
                 "src@example.org", "-t", "dst@example.net", "-M", "client.example",
                 "%s:%d" % (rmtest.LOOPBACK, srv.port)],
                stdin=subprocess.DEVNULL, stdout=of, stderr=of)
        cc = CrashClients(srv, npy, npy // 2, 6)
        cc.source = src
        t0 = time.monotonic()
        finished = cc.run()
        r.check("crash: Python clients finished", finished, "")
        r.check("crash: no client errors before the kill", not cc.errors, cc.errors[:5])
        if not cc.stop.is_set():
            cc.kill_time = time.time()
            srv.kill()
        print("   %d acknowledged to the Python clients in %.1fs, then SIGKILL"
              % (len(cc.acked), time.monotonic() - t0), flush=True)
        r.check("crash: ringmail died of SIGKILL", srv.proc.returncode == -9, srv.proc.returncode)
        r.check("crash: the kill landed while smtp-source was still sending",
                cc.source_running_at_kill, cc.source_running_at_kill)
        try:
            src.wait(30)
        except subprocess.TimeoutExpired:
            src.kill()
            src.wait(10)
        at_kill = sink.count()
        print("   sink held %d transactions at the kill" % at_kill, flush=True)

        srv.start()
        rec = srv.events("recovered")
        print("   restart: %s" % {k: rec[0].get(k) for k in ("messages", "bad_records",
                                                           "torn_bytes", "incomplete")}
              if rec else "   restart: no event=recovered", flush=True)
        t1 = time.monotonic()
        # (a Queue is falsy when it lists nothing: test .empty, not the object)
        drained = rmtest.wait_until(lambda: srv.queue_list().empty, 60, 0.3)
        r.check("crash: queue drained after the restart (queue list empty within 60 s)",
                drained, srv.queue_list().text[-800:])
        print("   drained %.1fs after the restart; sink holds %d" % (time.monotonic() - t1,
                                                                   sink.count()), flush=True)
        time.sleep(0.3)
    finally:
        if src is not None and src.poll() is None:
            src.kill()
            src.wait(10)
        rc = srv.stop()
    r.eq("crash: exit 0 on SIGTERM after the restart", rc, 0)
    q = srv.queue_list()
    r.check("crash: queue list empty after stop", q.empty, q.text[-800:])
    dumps = sink.dumps()
    r.check("crash: every dump complete", all(d["complete"] for d in dumps),
            [d["path"] for d in dumps if not d["complete"]][:3])
    by_mid = collections.defaultdict(list)
    for d in dumps:
        if d["message_id"] and d["message_id"].startswith("<crash-"):
            by_mid[d["message_id"]].append(d)
    missing = [m for m in cc.acked if m not in by_mid]
    r.check("crash: every message acknowledged with 250 arrived (%d)" % len(cc.acked),
            not missing, "%d missing, e.g. %s" % (len(missing),
                                                 [(m, cc.acked[m]) for m in missing[:5]]))
    src_c = source_rcpts(dumps)
    dup_py = {m: v for m, v in by_mid.items() if len(v) > 1}
    dup_src = {a: c for a, c in src_c.items() if c > 1}
    ndup = sum(len(v) - 1 for v in dup_py.values()) + sum(c - 1 for c in dup_src.values())
    print("   arrivals: %d Python (%d acknowledged), %d smtp-source; DUPLICATES: %d "
          "(%d Python, %d smtp-source)" % (len(by_mid), len(cc.acked), len(src_c), ndup,
                                           len(dup_py), len(dup_src)), flush=True)
    # a duplicate is a message the sink took whose DONE record did not make it:
    # its first copy must be from the last moment before the kill
    firsts = [min(x["mtime"] for x in v) for v in dup_py.values()]
    for a in dup_src:
        firsts.append(min(d["mtime"] for d in dumps if a in d["rcpts"]))
    early = [round(cc.kill_time - t, 2) for t in firsts if t < cc.kill_time - 2.0]
    if firsts:
        print("   duplicates' first copies arrived %.3f..%.3f s before the kill"
              % (min(cc.kill_time - t for t in firsts), max(cc.kill_time - t for t in firsts)),
              flush=True)
    r.check("crash: duplicates only for messages in flight at the kill (first copy < 2 s before)",
            not early, "%d first delivered that long before the kill: %s" % (len(early), early[:10]))
    sink.stop()


def t_success_dsn(r):
    """NOTIFY=SUCCESS: final delivery (here a Maildir) earns the sender a
    "delivered" report; without NOTIFY, nothing comes back."""
    cwd = rmtest.tempdir(prefix="rmtest-cwd-")
    md = os.path.join(cwd, "md")
    srv = server("success-dsn", cwd=cwd, routes="example.org=maildir:%s" % md).start()
    try:
        s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, local_hostname="client.example", timeout=30)
        s.ehlo()
        r.check("dsn: DSN advertised", s.has_extn("dsn"))
        s.sendmail("alice@example.org", ["dave@example.org"],
                   b"Subject: wants a report\r\n\r\nhi\r\n", rcpt_options=["NOTIFY=SUCCESS"])
        s.sendmail("alice@example.org", ["erin@example.org"], b"Subject: plain\r\n\r\nhi\r\n")
        s.quit()
        new = os.path.join(md, "new")
        files = lambda: os.listdir(new) if os.path.isdir(new) else []  # noqa: E731
        rmtest.wait_until(lambda: len(files()) >= 3, 15, 0.1)
        time.sleep(0.5)
        reports = []
        for f in files():
            with open(os.path.join(new, f), "rb") as fh:
                data = fh.read()
            if b"Subject: Successful Mail Delivery Report" in data:
                reports.append(data)
        r.eq("dsn: the two messages and exactly one report", len(files()), 3)
        r.eq("dsn: one success report", len(reports), 1)
        if reports:
            rep = reports[0]
            r.check("dsn: report from <> to the sender",
                    rep.startswith(b"Return-Path: <>") and b"To: <alice@example.org>" in rep,
                    rep[:300])
            r.check("dsn: report names dave, action delivered, status 2.0.0",
                    b"Final-Recipient: rfc822; dave@example.org" in rep and
                    b"Action: delivered" in rep and b"Status: 2.0.0" in rep, rep[:1500])
            r.check("dsn: nothing about erin (no NOTIFY)", b"erin@" not in rep)
        r.eq("dsn: one dsn event of kind success",
             [e.get("kind") for e in srv.wait_events("dsn")], ["success"])
        r.eq("stop: exit 0", srv.stop(), 0)
        r.check("dsn: queue empty after stop", "Mail queue is empty" in srv.queue_list().text)
    finally:
        srv.stop()


def main():
    tests = [t_maildir, t_smtp_relay, t_lmtp, t_down_then_up, t_failover, t_hard_fail,
             t_success_dsn, t_kill9]
    only = os.environ.get("RMTEST_ONLY")
    if only:
        tests = [t for t in tests if t.__name__ in only.split(",")]
    rmtest.main(tests)


if __name__ == "__main__":
    main()
