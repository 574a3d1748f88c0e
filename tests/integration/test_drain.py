#!/usr/bin/python3
"""SIGTERM drains: idle sessions get 421 4.3.2 at once, a transaction in progress may
finish (its 250 is durable), a session still busy after shutdown_timeout gets 421 4.3.2,
the process exits 0; under load, every message that got its 250 is in the queue after
the restart."""
import os
import signal
import smtplib
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402


def t_drain_sessions(r):
    admin = rmtest.free_port()
    srv = rmtest.Server(name="drain", opts={"shutdown_timeout": "3s",
                                            "admin_listen": "127.0.0.1:%d" % admin}).start()
    r.eq("before the drain: /readyz 200", rmtest.http_get(admin, "/readyz")[0], 200)
    idle = rmtest.Raw(srv.port)
    idle.cmd("EHLO idle")
    busy = rmtest.Raw(srv.port)
    busy.cmd("EHLO busy")
    busy.cmd("MAIL FROM:<a@client.example>")
    busy.cmd("RCPT TO:<b@rmtest.example>")
    r.eq("busy: DATA", busy.cmd("DATA")[0], 354)
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    stuck = rmtest.Raw(srv.port)
    stuck.cmd("EHLO stuck")
    stuck.cmd("MAIL FROM:<a@client.example>")
    stuck.cmd("RCPT TO:<b@rmtest.example>")
    stuck.cmd("DATA")
    stuck.send(b"Subject: never finished\r\n\r\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(srv.pid, signal.SIGTERM)
    code, text = idle.reply(5)
    r.eq("idle session: 421 4.3.2 at once", (code, text[0][:5]), (421, "4.3.2"))
    r.eq("during the drain: /readyz 503", rmtest.http_get(admin, "/readyz")[0], 503)
    r.eq("during the drain: /healthz 200", rmtest.http_get(admin, "/healthz")[0], 200)
    r.check("idle session: then closed", idle.closed(3))
    # new connections are refused once the listeners are closed
    time.sleep(0.3)
    try:
        s = socket.create_connection((rmtest.LOOPBACK, srv.port), timeout=2)
        got = s.recv(100)
        s.close()
    except OSError:
        got = b""
    r.check("a new connection during the drain gets no greeting", not got.startswith(b"220"), got)
    busy.send(b"second half\r\n.\r\n")
    code, text = busy.reply(5)
    r.check("busy session finishes its message: 250", code == 250, (code, text))
    qid = rmtest.queued_id(" ".join(text)) if code == 250 else None
    code2, text2 = busy.reply(5)
    r.eq("busy session: then 421 4.3.2", code2, 421)
    code, text = stuck.reply(8)
    r.check("a session still in DATA after shutdown_timeout: 421 4.3.2",
            code == 421 and time.monotonic() - t0 >= 2.5, (code, text, time.monotonic() - t0))
    rc = srv.proc.wait(15)
    r.eq("exit 0 after the drain", rc, 0)
    srv.proc = None
    q = rmtest.queue_list(srv.spool)
    r.check("the message finished during the drain is queued", qid and qid in q, q.text[-800:])
    r.eq("the unfinished one is not", len(q), 1)


def t_drain_under_load(r):
    srv = rmtest.Server(name="drain-load", opts={"shutdown_timeout": "5s",
                                                 "reactors": "2"}).start()
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(n):
        for i in range(400):
            if stop.is_set():
                return
            try:
                s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=10)
                s.ehlo("load%d" % n)
                s.mail("a@client.example")
                s.rcpt("b@rmtest.example")
                code, msg = s.data(b"Subject: load %d %d\r\n\r\nbody\r\n" % (n, i))
                if code == 250:
                    with lock:
                        acked.append(rmtest.queued_id(msg.decode()))
                s.quit()
            except (smtplib.SMTPException, OSError):
                if stop.is_set():
                    return
                time.sleep(0.05)

    ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    time.sleep(1.5)
    os.kill(srv.pid, signal.SIGTERM)
    rc = srv.proc.wait(20)
    stop.set()
    for t in ts:
        t.join(30)
    srv.proc = None
    r.eq("exit 0 under load", rc, 0)
    r.check("messages were acknowledged before the stop", len(acked) > 10, len(acked))
    srv.start()
    q = srv.queue_list()
    missing = [x for x in acked if x not in q]
    r.eq("every acknowledged message is in the queue after the restart", missing, [])
    r.eq("exit 0", srv.stop(), 0)


if __name__ == "__main__":
    rmtest.main([t_drain_sessions, t_drain_under_load])
