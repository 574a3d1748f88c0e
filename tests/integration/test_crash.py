#!/usr/bin/python3
"""Durability: kill -9 loses no message that got 250; a torn tail is recovered.

1. 10 smtplib clients send until 500 messages have been acknowledged (every
   queue id that got 250 is recorded); ringmail is SIGKILLed at that moment,
   with other transactions still in flight. Restarted on the same spool, the
   queue lists every recorded id, and no listed message is a half one.
   The same again with 6 clients and ~300 KiB messages (several DATA records
   each, so the kill lands mid-body for some).
2. Stopped cleanly, garbage (random octets and a torn record: a valid header
   whose payload was never written) is appended to a segment. Restarted, every
   message is still listed, event=recovered reports bad_records or torn_bytes
   > 0, and messages accepted after that survive one more restart.
"""
import glob
import os
import smtplib
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402
from rmtest import queued_id  # noqa: E402

N = int(os.environ.get("RMTEST_CRASH_N", "500"))
CLIENTS = 10
BODY = b"Subject: crash test\r\nFrom: c@example.org\r\n\r\n" + \
    b"".join(b"line %05d of the crash test body, some filler text.\r\n" % i for i in range(40))

srv = None
acked = {}       # qid -> recipient (every round)
lock = threading.Lock()


class Round:
    """Clients send `body` until `target` messages are acknowledged, then SIGKILL."""

    def __init__(self, target, body, prefix):
        self.target = target
        self.body = body
        self.prefix = prefix
        self.acked = {}
        self.stop = threading.Event()
        self.errors = []

    def client(self, k):
        s = None
        try:
            s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, local_hostname="c%d.example" % k,
                             timeout=30)
            s.ehlo()
            for i in range(10 * self.target):  # bounded; the stop event ends it much sooner
                if self.stop.is_set():
                    break
                rcpt = "%s-k%d-%d@example.net" % (self.prefix, k, i)
                s.mail("c@example.org")
                s.rcpt(rcpt)
                code, msg = s.data(self.body)
                qid = queued_id(msg)
                if code == 250 and qid:
                    with lock:
                        self.acked[qid] = rcpt
                        acked[qid] = rcpt
                        if len(self.acked) >= self.target and not self.stop.is_set():
                            self.stop.set()
                            # crash right now, other clients still mid-transaction
                            srv.kill()
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

    def run(self, r, clients):
        threads = [threading.Thread(target=self.client, args=(k,), daemon=True)
                   for k in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        r.check("%s: clients finished" % self.prefix, not any(t.is_alive() for t in threads), "")
        r.check("%s: no client errors before the kill" % self.prefix, not self.errors,
                self.errors[:5])
        if not self.stop.is_set():
            srv.kill()
        print("   %s: %d messages of %d octets acknowledged in %.1fs, then SIGKILL"
              % (self.prefix, len(self.acked), len(self.body), time.monotonic() - t0), flush=True)
        r.check("%s: at least %d acknowledged" % (self.prefix, self.target),
                len(self.acked) >= self.target, len(self.acked))
        r.check("%s: ringmail died of SIGKILL" % self.prefix, srv.proc.returncode == -9,
                srv.proc.returncode)

    def verify(self, r, clients):
        q = srv.queue_list()
        p = self.prefix
        r.eq("%s: queue list after crash: exit 0" % p, q.rc, 0)
        missing = [x for x in acked if x not in q]
        r.check("%s: every acknowledged id listed after kill -9 (%d)" % (p, len(acked)),
                not missing, "%d missing, e.g. %s" % (len(missing), missing[:5]))
        wrong = [x for x in acked if x in q and q.msgs[x]["rcpts"] != [acked[x]]]
        r.check("%s: recipients intact" % p, not wrong, wrong[:5])
        mine = [x for x in q.msgs if q.msgs[x]["rcpts"] and
                q.msgs[x]["rcpts"][0].startswith(p + "-")]
        half = [x for x in mine
                if not (len(self.body) <= q.msgs[x]["size"] <= len(self.body) + 2048)]
        r.check("%s: no half message listed (every size ~ %d)" % (p, len(self.body)), not half,
                [(x, q.msgs[x]["size"]) for x in half[:5]])
        extra = len(mine) - len(self.acked)
        print("   %s: listed %d, acknowledged %d (in flight at the kill and committed: %d)"
              % (p, len(mine), len(self.acked), extra), flush=True)
        r.check("%s: unacknowledged but committed <= clients" % p, 0 <= extra <= clients, extra)
        return q


def t_kill9(r):
    rnd = Round(N, BODY, "small")
    rnd.run(r, CLIENTS)
    q = rnd.verify(r, CLIENTS)

    srv.start()
    rec = srv.events("recovered")
    r.check("restart: event=recovered messages=%d" % len(q),
            rec and rec[0].get("messages") == str(len(q)), rec)
    q2 = srv.queue_list()
    missing = [x for x in acked if x not in q2]
    r.check("every acknowledged id listed with the server restarted", not missing, missing[:5])
    # new ids after restart do not collide with recovered ones
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=20)
    s.ehlo()
    new = []
    for i in range(5):
        s.mail("c@example.org")
        s.rcpt("after-restart-%d@example.net" % i)
        code, msg = s.data(BODY)
        new.append(queued_id(msg))
    s.quit()
    r.check("5 new messages after restart", all(new), new)
    r.check("new ids are fresh", not (set(new) & set(q.msgs)), set(new) & set(q.msgs))
    for i, x in enumerate(new):
        if x:
            acked[x] = "after-restart-%d@example.net" % i


def t_kill9_big(r):
    """Messages of ~300 KiB: several DATA records each, killed mid-body for some."""
    big = b"Subject: big crash test\r\n\r\n" + b"".join(
        b"%06d big body line, filler filler filler filler filler filler filler.\r\n" % i
        for i in range(4000))
    rnd = Round(40, big, "big")
    rnd.run(r, 6)
    rnd.verify(r, 6)
    srv.start()
    q = srv.queue_list()
    missing = [x for x in acked if x not in q]
    r.check("big: every acknowledged id listed with the server restarted", not missing,
            missing[:5])
    r.eq("clean stop: exit 0", srv.stop(), 0)


def torn_record():
    """A MSG record header (magic, type 3, version 1, len 4000) and only 100 payload octets."""
    hdr = struct.pack("<IBBHIIQQ", 0x50534d52, 3, 1, 0, 4000, 0, 0xdeadbeef, 0x1234)
    return hdr + b"\x01" * 100


def t_torn_tail(r):
    before = srv.queue_list()
    segs = sorted(glob.glob(os.path.join(srv.spool, "seg-*.rms")), key=os.path.getsize)
    r.check("segment files exist", segs, os.listdir(srv.spool))
    if not segs:
        return
    # the biggest segment gets a torn record, every other one random garbage
    with open(segs[-1], "ab") as f:
        f.write(torn_record())
    for p in segs[:-1]:
        with open(p, "ab") as f:
            f.write(os.urandom(333))
    with open(segs[-1], "ab") as f:
        f.write(b"\0" * 5)  # and a ragged end
    srv.start()
    rec = srv.events("recovered")
    r.check("event=recovered logged", rec, srv.log()[-2000:])
    if rec:
        bad = int(rec[0].get("bad_records", "0"))
        torn = int(rec[0].get("torn_bytes", "0"))
        r.check("recovery reports bad_records or torn_bytes > 0", bad > 0 or torn > 0, rec[0])
        r.eq("recovered message count unchanged", rec[0].get("messages"), str(len(before)))
    q = srv.queue_list()
    missing = [x for x in before.msgs if x not in q]
    r.check("all %d messages still listed after the torn tail" % len(before), not missing,
            missing[:5])
    r.eq("no phantom message from garbage", len(q), len(before))
    # accept more, restart, all there
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=20)
    s.ehlo()
    new = []
    for i in range(5):
        s.mail("c@example.org")
        s.rcpt("after-torn-%d@example.net" % i)
        new.append(queued_id(s.data(BODY)[1]))
    s.quit()
    r.check("5 messages after torn-tail recovery", all(new), new)
    r.eq("stop: exit 0", srv.stop(), 0)
    q2 = srv.queue_list()
    missing = [x for x in list(before.msgs) + new if x and x not in q2]
    r.check("old and new messages listed after another restart", not missing, missing[:5])
    r.eq("count", len(q2), len(before) + 5)


def main():
    global srv
    srv = rmtest.Server(opts={"durability": "fsync", "reactors": "2"}, name="crash").start()
    rmtest.main([t_kill9, t_kill9_big, t_torn_tail])


if __name__ == "__main__":
    main()
