#!/usr/bin/python3
"""Out of space: the spool on a 2 MiB tmpfs fills up.

256 KiB messages are sent until one gets 452 4.3.1; the session goes on
(RSET, NOOP); every message that got 250 is listed after a restart. Needs root
and a working `mount -t tmpfs` (else exit 77). The tmpfs is always unmounted.
"""
import os
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402
from rmtest import queued_id  # noqa: E402

MNT = None
srv = None
acked = []
MSG = b"Subject: fill\r\n\r\n" + (b"f" * 1022 + b"\r\n") * 256  # ~256 KiB


def mount():
    global MNT
    if os.geteuid() != 0:
        rmtest.skip("needs root to mount a tmpfs")
    MNT = rmtest.tempdir(prefix="rmtest-full-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", MNT],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    if p.returncode != 0:
        MNT = None
        rmtest.skip("mount -t tmpfs failed: %s" % p.stdout.decode(errors="replace").strip())


def umount():
    if MNT is None:
        return
    for _ in range(5):
        p = subprocess.run(["umount", MNT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=20)
        if p.returncode == 0:
            return
        time.sleep(0.5)
    subprocess.run(["umount", "-l", MNT], timeout=20)


def t_fill(r):
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=30)
    s.ehlo()
    got452 = None
    for i in range(40):  # 40 x 256 KiB = 10 MiB, far past 2 MiB
        s.mail("fill@example.org")
        s.rcpt("full%d@example.net" % i)
        code, msg = s.data(MSG)
        qid = queued_id(msg)
        if code == 250 and qid:
            acked.append(qid)
            continue
        got452 = (code, msg)
        break
    print("   %d messages of %d octets accepted before the first refusal: %r"
          % (len(acked), len(MSG), got452), flush=True)
    r.check("a message got 452 4.3.1", got452 and got452[0] == 452 and b"4.3.1" in got452[1],
            got452)
    r.check("some messages were accepted before", len(acked) >= 2, len(acked))
    r.eq("RSET after 452", s.rset()[0], 250)
    r.eq("NOOP after 452", s.noop()[0], 250)
    # the disk is still full: the next one is refused too, the session still in sync
    s.mail("fill@example.org")
    s.rcpt("again@example.net")
    try:
        code, msg = s.data(MSG)
    except smtplib.SMTPException as e:
        code, msg = None, repr(e).encode()
    r.check("next big message: 452 4.3.1 again (or 250 if space was reclaimed)",
            (code == 452 and b"4.3.1" in msg) or code == 250, (code, msg))
    if code == 250 and queued_id(msg):
        acked.append(queued_id(msg))
    if code in (250, 452):
        r.eq("NOOP still in sync", s.noop()[0], 250)
        s.quit()
    s.close()
    errs = srv.events("spool_error")
    r.check("log has event=spool_error", errs, srv.log()[-1500:])


def t_after_restart(r):
    r.eq("stop: exit 0", srv.stop(), 0)
    q = srv.queue_list()
    r.eq("queue list exit 0", q.rc, 0)
    missing = [x for x in acked if x not in q]
    r.check("every acknowledged id listed (%d)" % len(acked), not missing, missing[:5])
    r.eq("nothing half-accepted listed", len(q), len(acked))
    try:
        srv.start()
        started = True
    except RuntimeError as e:
        started = False
        r.check("restart on the full spool", False, str(e)[-1500:])
    if started:
        rec = srv.events("recovered")
        r.check("restart: recovered messages=%d" % len(acked),
                rec and rec[0].get("messages") == str(len(acked)), rec)
        q = srv.queue_list()
        missing = [x for x in acked if x not in q]
        r.check("every acknowledged id listed after restart", not missing, missing[:5])
        # a small message may fit in what is left, or be refused with 452; never hang
        s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=30)
        s.ehlo()
        steps = [("MAIL",) + s.mail("small@example.org")]
        if steps[-1][1] == 250:
            steps.append(("RCPT",) + s.rcpt("small@example.net"))
        if steps[-1][1] == 250:
            try:
                steps.append(("DATA",) + s.data(b"Subject: small\r\n\r\nsmall\r\n"))
            except smtplib.SMTPDataError as e:  # DATA itself refused (no 354)
                steps.append(("DATA", e.smtp_code, e.smtp_error))
            except smtplib.SMTPException as e:
                steps.append(("DATA", None, repr(e).encode()))
        last, code, msg = steps[-1]
        r.check("small message on the full disk: 250, or 452 4.3.1 (at MAIL or DATA)",
                (last == "DATA" and code == 250) or (code == 452 and b"4.3.1" in msg), steps)
        if last == "DATA" and code == 250 and queued_id(msg):
            acked.append(queued_id(msg))
        r.eq("NOOP after it", s.noop()[0], 250)
        s.quit()
        r.eq("stop: exit 0", srv.stop(), 0)


def main():
    global srv
    mount()
    r = rmtest.Results()
    try:
        srv = rmtest.Server(opts={"reactors": "1", "spool_segment_size": "1M",
                                  "message_size_limit": "4M",
                                  # a stalled DATA shows up as 421 4.4.2 after 5s
                                  "smtpd_data_timeout": "5s"},
                            spool=os.path.join(MNT, "spool"), name="full").start()
        r.run(t_fill)
        r.run(t_after_restart)
    finally:
        if srv is not None and srv.running():
            srv.stop()
        umount()
    r.finish()


if __name__ == "__main__":
    main()
