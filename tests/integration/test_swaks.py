#!/usr/bin/python3
"""ringmail against swaks: plain, --pipeline, several recipients, dot-stuffed data."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

SWAKS = rmtest.need_tool("swaks")
srv = None
accepted = {}  # qid -> (rcpts, expected size or None)


def swaks(*args, timeout=60):
    a = [SWAKS, "--server", rmtest.LOOPBACK, "--port", str(srv.port), "--helo",
         "client.example", "--from", "sender@example.org", "--timeout", "15"] + list(args)
    p = subprocess.run(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def queued_line(out):
    m = re.search(r"^<[-~]\s+250 2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})\s*$", out, re.M)
    return m.group(1).upper() if m else None


def t_plain(r):
    rc, out = swaks("--to", "plain@example.net")
    qid = queued_line(out)
    r.check("swaks plain: exit 0", rc == 0, out[-2000:])
    r.check("swaks plain: '<~  250 2.0.0 Ok: queued as ID'", qid, out[-2000:])
    r.check("swaks plain: EHLO shows PIPELINING", "250-PIPELINING" in out or
            "250 PIPELINING" in out, out[:2000])
    if qid:
        accepted[qid] = (["plain@example.net"], None)


def t_pipeline(r):
    rc, out = swaks("--pipeline", "--to", "pipe@example.net")
    qid = queued_line(out)
    r.check("swaks --pipeline: exit 0", rc == 0, out[-2000:])
    r.check("swaks --pipeline: queued", qid, out[-2000:])
    # pipelined: MAIL, RCPT and DATA go out together, before the first of their replies
    r.check("swaks --pipeline: MAIL/RCPT/DATA sent in one group",
            re.search(r"^ -> MAIL FROM:.*\n -> RCPT TO:.*\n -> DATA\s*\n<-  250 ", out, re.M),
            out[-2000:])
    if qid:
        accepted[qid] = (["pipe@example.net"], None)


def t_multi_rcpt(r):
    rc, out = swaks("--pipeline", "--to", "m1@example.net,m2@example.net,m3@example.net")
    qid = queued_line(out)
    r.check("swaks 3 recipients: queued", rc == 0 and qid, out[-2000:])
    if qid:
        accepted[qid] = (["m1@example.net", "m2@example.net", "m3@example.net"], None)


def t_dot_stuffing(r):
    # Data as it goes on the wire, already dot-stuffed; --no-data-fixup sends it verbatim.
    wire = (b"Subject: dots\r\n\r\nline one\r\n..\r\n...two\r\n.three\r\nend\r\n.\r\n")
    stored = b"Subject: dots\r\n\r\nline one\r\n.\r\n..two\r\nthree\r\nend\r\n"
    # ('.three' is stuffed as '..three' by real clients; a lone leading dot is
    # removed as RFC 5321 4.5.2 says, so 'three' is what is stored)
    d = rmtest.tempdir()
    path = os.path.join(d, "data.eml")
    with open(path, "wb") as f:
        f.write(wire)
    rc, out = swaks("--to", "dots@example.net", "--no-data-fixup", "--data", path)
    qid = queued_line(out)
    r.check("swaks dot-stuffed data: queued", rc == 0 and qid, out[-2000:])
    if qid:
        accepted[qid] = (["dots@example.net"], len(stored))


def t_body_8bit(r):
    rc, out = swaks("--to", "8bit@example.net", "--header", "Subject: 8bit",
                    "--body", "Gr\u00fc\u00dfe aus K\u00f6ln", "--pipeline")
    qid = queued_line(out)
    r.check("swaks 8-bit body: queued", rc == 0 and qid, out[-2000:])
    if qid:
        accepted[qid] = (["8bit@example.net"], None)


def t_quit_after_rcpt(r):
    rc, out = swaks("--to", "nomsg@example.net", "--quit-after", "RCPT")
    r.check("swaks --quit-after RCPT: exit 0, nothing queued", rc == 0 and not queued_line(out),
            out[-2000:])


def t_queue(r):
    q = srv.queue_list()
    r.eq("queue list exit 0", q.rc, 0)
    for qid, (rcpts, size) in accepted.items():
        r.check("queue list has %s" % qid, qid in q, q.text[-2000:])
        if qid in q:
            r.eq("%s recipients" % qid, sorted(q.msgs[qid]["rcpts"]), sorted(rcpts))
            if size is not None:
                m = q.msgs[qid]
                size += rmtest.received_len(m["arrival"], "client.example", m["rcpts"])
                r.eq("%s stored size (dot-unstuffed, + Received:)" % qid, m["size"], size)
    r.eq("queue list request count", q.requests, len(accepted))
    r.eq("server exit 0 on SIGTERM", srv.stop(), 0)
    r.eq("event=received lines", len(srv.events("received")), len(accepted))


def main():
    global srv
    srv = rmtest.Server(opts={"reactors": "2"}, name="swaks").start()
    rmtest.main([t_plain, t_pipeline, t_multi_rcpt, t_dot_stuffing, t_body_8bit,
                 t_quit_after_rcpt, t_queue])


if __name__ == "__main__":
    main()
