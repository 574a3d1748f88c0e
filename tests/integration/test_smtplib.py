#!/usr/bin/python3
"""ringmail against Python's smtplib and a raw socket: the SMTP surface.

One server (default limits plus smtpd_recipient_limit=3, message_size_limit=20000)
takes most of the tests; the timing and connection-limit tests get servers of
their own. At the end every accepted queue id must be in `ringmail queue list`,
with the server running and after it stopped.
"""
import os
import smtplib
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402
from rmtest import Raw, queued_id  # noqa: E402

SIZE_LIMIT = 20000
main_srv = None
accepted = {}  # qid -> [recipients]


def smtp():
    s = smtplib.SMTP(rmtest.LOOPBACK, main_srv.port, local_hostname="client.example", timeout=15)
    return s


def send(s, sender, rcpts, body, mail_opts=(), r=None, name="send"):
    """MAIL/RCPT/DATA on an open smtplib session; returns the qid (recorded) or None."""
    code, _ = s.mail(sender, list(mail_opts))
    if code != 250:
        if r:
            r.check(name + ": MAIL 250", False, code)
        return None
    for rc in rcpts:
        code, msg = s.rcpt(rc)
        if code != 250 and r:
            r.check(name + ": RCPT %s 250" % rc, False, (code, msg))
    code, msg = s.data(body)
    qid = queued_id(msg)
    if r:
        r.check(name + ": 250 queued as", code == 250 and qid is not None, (code, msg))
    if qid:
        accepted[qid] = list(rcpts)
    return qid


def t_ehlo(r):
    s = smtp()
    code, msg = s.ehlo()
    r.eq("EHLO 250", code, 250)
    text = msg.decode()
    first = text.splitlines()[0]
    r.check("EHLO names myhostname", first.startswith("rmtest.example"), first)
    for ext in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"):
        r.check("EHLO advertises %s" % ext, s.has_extn(ext.lower()), text)
    r.check("SIZE advertises the limit", s.esmtp_features.get("size") == str(SIZE_LIMIT),
            s.esmtp_features.get("size"))
    code, msg = s.helo("client.example")
    r.check("HELO 250 after EHLO", code == 250, (code, msg))
    s.quit()


def t_greeting(r):
    c = Raw(main_srv.port)
    code, lines = c.greeting
    r.eq("greeting 220", code, 220)
    r.check("greeting text", lines[-1].startswith("rmtest.example ESMTP ringmail"), lines)
    r.eq("QUIT 221", c.cmd("QUIT")[0], 221)
    r.check("closed after QUIT", c.closed(), "")
    c.close()


def t_plain(r):
    s = smtp()
    s.ehlo()
    body = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: plain\r\n\r\nhello\r\n" \
           b".leading dot line\r\n..two dots\r\nend\r\n"
    send(s, "a@example.org", ["b@example.net"], body, r=r, name="plain")
    s.quit()


def t_8bit_utf8(r):
    s = smtp()
    s.ehlo()
    body = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n" \
           "Content-Transfer-Encoding: 8bit\r\n\r\nGr\u00fc\u00dfe, \u00e9t\u00e9\r\n".encode()
    send(s, "a@example.org", ["b@example.net"], body, mail_opts=["BODY=8BITMIME"], r=r,
         name="8BITMIME")
    body = "Subject: utf8\r\n\r\n\u4f60\u597d\r\n".encode()
    q = send(s, "j\u00f6rg@b\u00fccher.example", ["\u7528\u6237@\u4f8b\u5b50.example"], body,
             mail_opts=["SMTPUTF8", "BODY=8BITMIME"], r=r, name="SMTPUTF8")
    r.check("SMTPUTF8 accepted", q is not None, "")
    s.quit()


def t_multi_rcpt(r):
    s = smtp()
    s.ehlo()
    q = send(s, "a@example.org", ["r1@example.net", "r2@example.net", "r3@example.net"],
             b"Subject: multi\r\n\r\nthree recipients\r\n", r=r, name="3 rcpts")
    r.check("3 recipients queued", q is not None, "")
    # null sender (bounce) is allowed
    code, msg = s.mail("<>")
    r.eq("MAIL FROM:<> 250", code, 250)
    s.rset()
    s.quit()


def t_rset_noop_vrfy(r):
    s = smtp()
    s.ehlo()
    r.eq("NOOP 250", s.noop()[0], 250)
    r.eq("MAIL 250", s.mail("a@example.org")[0], 250)
    r.eq("RCPT 250", s.rcpt("b@example.net")[0], 250)
    r.eq("RSET 250", s.rset()[0], 250)
    code, msg = s.rcpt("b@example.net")
    r.check("RCPT after RSET: 503 5.5.1", code == 503 and b"5.5.1" in msg, (code, msg))
    code, msg = s.verify("b@example.net")
    r.check("VRFY 252", code == 252, (code, msg))
    # the session still works after RSET
    send(s, "a@example.org", ["after-rset@example.net"], b"Subject: x\r\n\r\nafter rset\r\n",
         r=r, name="after RSET")
    s.quit()


def t_bad_commands(r):
    s = smtp()
    s.ehlo()
    code, msg = s.docmd("FOOBAR")
    r.check("unknown command: 500 5.5.2", code == 500 and b"5.5.2" in msg, (code, msg))
    code, msg = s.docmd("DATA")
    r.check("DATA before MAIL: 503 5.5.1", code == 503 and b"5.5.1" in msg, (code, msg))
    code, msg = s.docmd("RCPT TO:<b@example.net>")
    r.check("RCPT before MAIL: 503 5.5.1", code == 503 and b"5.5.1" in msg, (code, msg))
    r.eq("MAIL 250", s.mail("a@example.org")[0], 250)
    code, msg = s.docmd("MAIL FROM:<a@example.org>")
    r.check("nested MAIL: 503 5.5.1", code == 503 and b"5.5.1" in msg, (code, msg))
    code, msg = s.docmd("DATA")
    r.check("DATA before RCPT: 503/554 5.5.1", code in (503, 554) and b"5.5.1" in msg,
            (code, msg))
    code, msg = s.docmd("MAIL FROM:bad-syntax")
    r.check("bad MAIL syntax: 5xx", 500 <= code < 600, (code, msg))
    r.eq("NOOP still 250", s.noop()[0], 250)
    s.quit()


def t_rcpt_limit(r):
    s = smtp()
    s.ehlo()
    s.mail("a@example.org")
    for i in range(3):
        r.eq("RCPT %d 250" % (i + 1), s.rcpt("r%d@example.net" % i)[0], 250)
    code, msg = s.rcpt("r3@example.net")
    r.check("4th RCPT: 452 4.5.3", code == 452 and b"4.5.3" in msg, (code, msg))
    code, msg = s.data(b"Subject: limit\r\n\r\nthree of four\r\n")
    qid = queued_id(msg)
    r.check("DATA after 452 still queues 3 recipients", code == 250 and qid, (code, msg))
    if qid:
        accepted[qid] = ["r0@example.net", "r1@example.net", "r2@example.net"]
    s.quit()


def t_size_limit(r):
    s = smtp()
    s.ehlo()
    # declared too big at MAIL
    code, msg = s.docmd("MAIL FROM:<a@example.org> SIZE=%d" % (SIZE_LIMIT * 10))
    r.check("MAIL SIZE= over limit: 552 5.3.4", code == 552 and b"5.3.4" in msg, (code, msg))
    # undeclared, too big in DATA
    r.eq("MAIL 250", s.mail("a@example.org")[0], 250)
    r.eq("RCPT 250", s.rcpt("big@example.net")[0], 250)
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (SIZE_LIMIT // 1000 + 5)
    code, msg = s.data(big)
    r.check("oversized DATA: 552 5.3.4", code == 552 and b"5.3.4" in msg, (code, msg))
    r.check("no queue id for the oversized message", queued_id(msg) is None, msg)
    # the same connection still works
    r.eq("NOOP after 552", s.noop()[0], 250)
    send(s, "a@example.org", ["after-big@example.net"], b"Subject: ok\r\n\r\nsmall\r\n",
         r=r, name="good message after 552 on the same connection")
    # and another one, still on the same connection
    body = b"Subject: edge\r\n\r\n" + b"y" * 100 + b"\r\n"
    send(s, "a@example.org", ["edge@example.net"], body, r=r, name="small after 552")
    s.quit()


def t_long_command(r):
    c = Raw(main_srv.port)
    r.eq("EHLO", c.cmd("EHLO client.example")[0], 250)
    # a line far over command_line_limit (2048), then NOOP in the same write
    c.send("NOOP " + "x" * 10000 + "\r\nNOOP\r\n")
    code, lines = c.reply()
    r.check("long command: 500 5.5.6", code == 500 and "5.5.6" in lines[-1], (code, lines))
    code, lines = c.reply()
    r.check("next command in sync (NOOP 250)", code == 250, (code, lines))
    # a long MAIL line, then a complete transaction
    code, lines = c.cmd("MAIL FROM:<" + "a" * 3000 + "@example.org>")
    r.check("long MAIL line: 500 5.5.6", code == 500 and "5.5.6" in lines[-1], (code, lines))
    r.eq("MAIL after long line", c.cmd("MAIL FROM:<a@example.org>")[0], 250)
    r.eq("RCPT", c.cmd("RCPT TO:<long@example.net>")[0], 250)
    r.eq("DATA 354", c.cmd("DATA")[0], 354)
    code, lines = c.cmd("Subject: after long line\r\n\r\nbody\r\n.")
    q = queued_id(lines)
    r.check("queued after long line", code == 250 and q, (code, lines))
    if q:
        accepted[q] = ["long@example.net"]
    r.eq("QUIT 221", c.cmd("QUIT")[0], 221)
    r.check("nothing left unread", c.buf == b"", c.buf)
    c.close()


def t_bdat(r):
    c = Raw(main_srv.port)
    r.eq("EHLO", c.cmd("EHLO client.example")[0], 250)
    r.eq("MAIL", c.cmd("MAIL FROM:<a@example.org>")[0], 250)
    r.eq("RCPT", c.cmd("RCPT TO:<bdat1@example.net>")[0], 250)
    part1 = b"Subject: bdat\r\n\r\nfirst chunk, with a lone dot:\r\n.\r\n"
    part2 = b"second chunk\r\n"
    c.send(b"BDAT %d\r\n" % len(part1) + part1)
    code, lines = c.reply()
    r.check("BDAT n: 250", code == 250, (code, lines))
    c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
    code, lines = c.reply()
    q = queued_id(lines)
    r.check("BDAT n LAST: 250 queued as", code == 250 and q, (code, lines))
    if q:
        accepted[q] = ["bdat1@example.net"]
        r.bdat_sizes = {q: len(part1) + len(part2)}
    # chunks then BDAT 0 LAST
    r.eq("MAIL 2", c.cmd("MAIL FROM:<a@example.org>")[0], 250)
    r.eq("RCPT 2", c.cmd("RCPT TO:<bdat2@example.net>")[0], 250)
    body = b"Subject: bdat0\r\n\r\n" + b"z" * 5000 + b"\r\n"
    c.send(b"BDAT %d\r\n" % len(body) + body)
    r.eq("BDAT 2 chunk 250", c.reply()[0], 250)
    code, lines = c.cmd("BDAT 0 LAST")
    q = queued_id(lines)
    r.check("BDAT 0 LAST: 250 queued as", code == 250 and q, (code, lines))
    if q:
        accepted[q] = ["bdat2@example.net"]
        r.bdat_sizes[q] = len(body)
    # pipelined: MAIL, RCPT, BDAT LAST in one write
    body = b"Subject: bdat-pipe\r\n\r\npipelined\r\n"
    c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bdat3@example.net>\r\nBDAT %d LAST\r\n"
           % len(body) + body)
    codes = [c.reply() for _ in range(3)]
    q = queued_id(codes[2][1])
    r.check("pipelined MAIL/RCPT/BDAT LAST", [x[0] for x in codes] == [250, 250, 250] and q,
            codes)
    if q:
        accepted[q] = ["bdat3@example.net"]
        r.bdat_sizes[q] = len(body)
    # BDAT without MAIL: 503, and the chunk is still consumed (no desync)
    c.send(b"BDAT 6\r\nNOOP\r\n")
    code, lines = c.reply()
    r.check("BDAT without MAIL: 503 and chunk swallowed", code == 503, (code, lines))
    r.eq("NOOP after bad BDAT", c.cmd("NOOP")[0], 250)
    r.eq("QUIT", c.cmd("QUIT")[0], 221)
    c.close()


def t_pipelining(r):
    c = Raw(main_srv.port)
    r.eq("EHLO", c.cmd("EHLO client.example")[0], 250)
    c.send("MAIL FROM:<p@example.org>\r\nRCPT TO:<p1@example.net>\r\nRCPT TO:<p2@example.net>\r\n"
           "RCPT TO:<bad address>\r\nDATA\r\n")
    got = [c.reply() for _ in range(5)]
    codes = [g[0] for g in got]
    r.check("pipelined replies in order 250 250 250 5xx 354",
            codes[:3] == [250, 250, 250] and 500 <= codes[3] < 600 and codes[4] == 354, got)
    c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<p@example.org>\r\n"
           "RCPT TO:<p3@example.net>\r\nDATA\r\n")
    got = [c.reply() for _ in range(4)]
    q1 = queued_id(got[0][1])
    r.check("end of data + next transaction pipelined: 250 250 250 354",
            [g[0] for g in got] == [250, 250, 250, 354] and q1, got)
    if q1:
        accepted[q1] = ["p1@example.net", "p2@example.net"]
    c.send("Subject: pipelined 2\r\n\r\nbody 2\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    got = [c.reply() for _ in range(4)]
    q2 = queued_id(got[0][1])
    r.check("data, RSET, NOOP, QUIT pipelined: 250 250 250 221",
            [g[0] for g in got] == [250, 250, 250, 221] and q2, got)
    if q2:
        accepted[q2] = ["p3@example.net"]
    r.check("closed after QUIT", c.closed(), "")
    c.close()


def t_bare_lf_body(r):
    """A bare LF in DATA never ends the message (normalize: stored, session in sync)."""
    c = Raw(main_srv.port)
    r.eq("EHLO", c.cmd("EHLO client.example")[0], 250)
    c.send("MAIL FROM:<s@example.org>\r\nRCPT TO:<smuggle@example.net>\r\nDATA\r\n")
    r.check("MAIL/RCPT/DATA", [c.reply()[0] for _ in range(3)] == [250, 250, 354], "")
    c.send("Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<evil@example.org>\n"
           "RCPT TO:<victim@example.net>\nDATA\nevil\r\n.\r\n")
    code, lines = c.reply()
    q = queued_id(lines)
    r.check("bare-LF dot is not end of data: exactly one 250", code == 250 and q, (code, lines))
    if q:
        accepted[q] = ["smuggle@example.net"]
    r.eq("next command: NOOP 250 (no smuggled replies)", c.cmd("NOOP")[0], 250)
    c.cmd("QUIT")
    c.close()


def t_early_talker(r):
    srv = rmtest.Server(opts={"smtpd_greeting_delay": "500ms"}, name="early").start()
    try:
        c = Raw(srv.port, read_greeting=False)
        c.send("EHLO early.example\r\n")
        code, lines = c.reply(timeout=5)
        r.check("early talker: 554 5.5.0", code == 554 and "5.5.0" in lines[-1], (code, lines))
        r.check("early talker: closed", c.closed(5), c.buf)
        c.close()
        # a patient client gets the greeting after the delay
        t0 = time.monotonic()
        c = Raw(srv.port, timeout=5)
        dt = time.monotonic() - t0
        r.check("patient client: 220 after ~500ms", c.greeting[0] == 220 and dt >= 0.4,
                (c.greeting, dt))
        r.eq("patient client: EHLO 250", c.cmd("EHLO ok.example")[0], 250)
        c.cmd("QUIT")
        c.close()
    finally:
        r.eq("early server: exit 0 on SIGTERM", srv.stop(), 0)


def t_timeout(r):
    srv = rmtest.Server(opts={"smtpd_timeout": "1s", "smtpd_data_timeout": "1s"},
                        name="timeout").start()
    try:
        c = Raw(srv.port)
        t0 = time.monotonic()
        code, lines = c.reply(timeout=6)
        dt = time.monotonic() - t0
        r.check("idle: 421 4.4.2", code == 421 and "4.4.2" in lines[-1], (code, lines))
        r.check("idle: after about 1s", 0.8 <= dt <= 4.0, dt)
        r.check("idle: closed", c.closed(5), c.buf)
        c.close()
        # stalled in DATA
        c = Raw(srv.port)
        c.send("EHLO x.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
               "DATA\r\n")
        r.check("DATA 354", [c.reply()[0] for _ in range(4)] == [250, 250, 250, 354], "")
        c.send("Subject: half\r\n\r\npartial body")
        code, lines = c.reply(timeout=6)
        r.check("stalled in DATA: 421 4.4.2", code == 421 and "4.4.2" in lines[-1],
                (code, lines))
        c.close()
        # an active client that keeps talking is not cut off
        c = Raw(srv.port)
        ok = True
        for _ in range(4):
            time.sleep(0.5)
            ok = ok and c.cmd("NOOP")[0] == 250
        r.check("active client kept past the timeout", ok, "")
        c.close()
    finally:
        r.eq("timeout server: exit 0", srv.stop(), 0)
    r.check("no half message queued by the stalled DATA", len(srv.queue_list()) == 0,
            srv.queue_list().text)


def t_max_connections(r):
    srv = rmtest.Server(opts={"max_connections": "2", "reactors": "1"}, name="maxconn")
    srv.start()
    try:
        time.sleep(0.3)  # let the start-up probe connection close
        c1 = Raw(srv.port)
        c2 = Raw(srv.port)
        r.eq("conn 1: 220", c1.greeting[0], 220)
        r.eq("conn 2: 220", c2.greeting[0], 220)
        c3 = Raw(srv.port, read_greeting=False)
        code, lines = c3.reply(timeout=5)
        r.check("conn 3: 421 4.3.2", code == 421 and "4.3.2" in lines[-1], (code, lines))
        r.check("conn 3: closed", c3.closed(5), c3.buf)
        c3.close()
        r.eq("conn 1 still works", c1.cmd("NOOP")[0], 250)
        c1.cmd("QUIT")
        c1.close()
        # once one closes, a new one is accepted (bounded retry: release is asynchronous)
        got = None
        for _ in range(20):
            c4 = Raw(srv.port, read_greeting=False)
            got = c4.reply(timeout=5)
            c4.close()
            if got[0] == 220:
                break
            time.sleep(0.1)
        r.check("slot freed after QUIT: 220", got and got[0] == 220, got)
        c2.close()
    finally:
        r.eq("maxconn server: exit 0", srv.stop(), 0)


def t_many_messages_one_conn(r):
    s = smtp()
    s.ehlo()
    n = 0
    for i in range(50):
        if send(s, "bulk@example.org", ["bulk%d@example.net" % i],
                b"Subject: bulk %d\r\n\r\n" % i + b"line\r\n" * 50):
            n += 1
    r.eq("50 messages on one connection", n, 50)
    s.quit()


def t_queue_list(r):
    q = main_srv.queue_list()
    r.eq("queue list (running) exit 0", q.rc, 0)
    missing = [x for x in accepted if x not in q]
    r.check("queue list (running) has every accepted id (%d)" % len(accepted), not missing,
            missing[:5])
    bad_rcpt = [x for x in accepted if x in q and
                sorted(q.msgs[x]["rcpts"]) != sorted(accepted[x])]
    r.check("queue list recipients match", not bad_rcpt,
            [(x, q.msgs[x]["rcpts"], accepted[x]) for x in bad_rcpt[:3]])
    r.eq("queue list request count", q.requests, len(accepted))
    for qid, size in getattr(r, "bdat_sizes", {}).items():
        if qid in q:
            m = q.msgs[qid]
            size += rmtest.received_len(m["arrival"], "client.example", m["rcpts"])
            r.eq("BDAT message %s stored size (body + Received:)" % qid, m["size"], size)
    rc = main_srv.stop()
    r.eq("main server: exit 0 on SIGTERM", rc, 0)
    recv = main_srv.events("received")
    r.eq("one event=received per accepted message", len(recv), len(accepted))
    logged = {e.get("qid", "").upper() for e in recv}
    r.check("event=received qids = accepted", logged == set(accepted),
            sorted(logged ^ set(accepted))[:5])
    q2 = main_srv.queue_list()
    r.eq("queue list (stopped) exit 0", q2.rc, 0)
    missing = [x for x in accepted if x not in q2]
    r.check("queue list (stopped) has every accepted id", not missing, missing[:5])
    r.eq("queue list (stopped) same ids", set(q2.msgs), set(q.msgs))
    # restart on the same spool: the messages are still there, recovery logged
    main_srv.start()
    rec = main_srv.events("recovered")
    r.check("restart logs event=recovered messages=%d" % len(accepted),
            rec and rec[0].get("messages") == str(len(accepted)), rec)
    r.eq("restart: exit 0", main_srv.stop(), 0)


def main():
    global main_srv
    main_srv = rmtest.Server(opts={"smtpd_recipient_limit": "3",
                                   "message_size_limit": str(SIZE_LIMIT),
                                   "reactors": "2"}, name="main").start()
    tests = [t_greeting, t_ehlo, t_plain, t_8bit_utf8, t_multi_rcpt, t_rset_noop_vrfy,
             t_bad_commands, t_rcpt_limit, t_size_limit, t_long_command, t_bdat, t_pipelining,
             t_bare_lf_body, t_many_messages_one_conn, t_early_talker, t_timeout,
             t_max_connections, t_queue_list]
    rmtest.main(tests)


if __name__ == "__main__":
    main()
