#!/usr/bin/python3
"""STARTTLS on delivery (smtp_tls_security_level, smtp_tls_CAfile).

The next hop is tlssink.py (a Python SMTP/LMTP sink with STARTTLS, recording
for each message whether it arrived inside TLS, with which version, cipher and
SNI). Certificates are made here with the openssl CLI: a CA, a leaf for
127.0.0.1 (IP SAN) it signed, a leaf it signed for another name, a leaf for
"localhost", and an untrusted self-signed certificate for 127.0.0.1.

1. may + STARTTLS offered: delivered inside TLS; the sink saw TLS and the
   cipher ringmail logs (tls="TLSv1.x ..." on the event=sent line); no SNI
   for an IP-literal next hop.
2. may + no STARTTLS: delivered in plaintext, tls=none.
3. may + STARTTLS refused (454): delivered in plaintext (Postfix `may`);
   encrypt: deferred 4.7.4, the message stays queued.
4. encrypt + no STARTTLS: deferred 4.7.4 "TLS is required, but was not
   offered by host 127.0.0.1", nothing at the sink, the message stays queued.
5. encrypt + untrusted certificate: delivered (encrypt does not verify).
6. verify + the CA in smtp_tls_CAfile + the leaf for 127.0.0.1: delivered.
7. verify + an untrusted self-signed certificate: deferred 4.7.5 with the
   verifier's reason, queued; verify + a certificate for another name:
   deferred with a name mismatch.
8. verify with a host name ([localhost]): the name is checked and sent as SNI.
9. injection: the sink sends a reply in clear behind its 220 to STARTTLS;
   ringmail drops it (event=starttls_injection) and delivers inside TLS.
10. a 1.5 MB body with dot lines and four more messages over one cached TLS
   connection (destination_concurrency_limit 1): byte-exact, one handshake.
11. LMTP over TCP gets STARTTLS like SMTP; LMTP over a unix socket never
   (encrypt still delivers there).
12. smtp_tls_CAfile that cannot be read: ringmail does not start and says
   which key is wrong.
"""
import os
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402
from tlssink import TlsSink  # noqa: E402

OPENSSL = rmtest.need_tool("openssl")
WAIT = 15.0  # seconds for one delivery attempt to be logged


def openssl(*args, cwd):
    p = subprocess.run([OPENSSL] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stdout.decode()[-1000:]))


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_certs():
    d = rmtest.tempdir(prefix="rmtest-tls-")
    openssl("req", "-x509", *EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=ringmail test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)

    def leaf(name, cn, san):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n" % san)
        openssl("req", *EC, "-keyout", name + ".key", "-out", name + ".csr", "-subj",
                "/CN=" + cn, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile",
                name + ".ext", cwd=d)

    leaf("ip", "127.0.0.1", "IP:127.0.0.1")
    leaf("wrong", "wrong.example", "DNS:wrong.example")
    leaf("local", "localhost", "DNS:localhost")
    openssl("req", "-x509", *EC, "-keyout", "self.key", "-out", "self.pem", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    return {k: (os.path.join(d, k + ".pem"), os.path.join(d, k + ".key"))
            for k in ("ca", "ip", "wrong", "local", "self")}


CERTS = None


def cert(name):
    return CERTS[name]


def server(name, **opts):
    o = {"reactors": "1", "workers": "1"}
    o.update({k: v for k, v in opts.items() if v is not None})
    return rmtest.Server(hold=False, opts=o, name=name,
                         cwd=rmtest.tempdir(prefix="rmtest-cwd-"))


def hop(sink, host=rmtest.LOOPBACK):
    return "[%s]:%d" % (host, sink.port)


def send(srv, rcpts, body, sender="alice@example.org"):
    """One message through ringmail's listener; its queue id."""
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, local_hostname="client.example", timeout=30)
    try:
        s.ehlo()
        s.mail(sender)
        for a in rcpts:
            code, msg = s.rcpt(a)
            assert code == 250, (a, code, msg)
        code, msg = s.data(body)
        assert code == 250, (code, msg)
        return rmtest.queued_id(msg)
    finally:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            s.close()


def body_of(n=0):
    return ("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: tls %d\r\n\r\n"
            "hello over TLS %d\r\n.leading dot\r\n" % (n, n)).encode()


def queued_after_stop(r, what, srv, qid, rcpt):
    rc = srv.stop()
    r.eq("%s: exit 0 on SIGTERM" % what, rc, 0)
    q = srv.queue_list()
    r.check("%s: the message stays queued" % what, qid in q and rcpt in q.msgs[qid]["rcpts"],
            q.text[-600:])


def delivered_tls(r, what, srv, sink, n=1):
    """n messages delivered inside TLS; returns the event=sent lines."""
    sent = srv.wait_events("sent", n=n, timeout=WAIT)
    r.eq("%s: event=sent lines" % what, len(sent), n)
    msgs, _ = sink.snapshot()
    r.eq("%s: messages at the sink" % what, len(msgs), n)
    r.check("%s: every message arrived inside TLS" % what, msgs and all(m["tls"] for m in msgs),
            [(m["tls"], m["version"]) for m in msgs])
    for e in sent:
        tls = e.get("tls", "")
        r.check("%s: the sent line says tls=\"TLSv1.x cipher\"" % what,
                tls.startswith("TLSv1.") and len(tls.split()) == 2, e)
        if msgs and msgs[0]["cipher"]:
            r.eq("%s: the cipher ringmail logged is the one the sink negotiated" % what,
                 tls.split()[-1], msgs[0]["cipher"])
            r.eq("%s: the version too" % what, tls.split()[0], msgs[0]["version"])
    return sent


# ---- cases ----

def t_may_starttls(r):
    sink = TlsSink(*cert("ip")).start()
    srv = server("may", relayhost=hop(sink)).start()
    try:
        send(srv, ["bob@example.net"], body_of(1))
        delivered_tls(r, "may", srv, sink)
        tls = srv.events("tls")
        r.check("may: event=tls logged, verified=no",
                len(tls) == 1 and tls[0].get("verified") == "no", tls)
        msgs, sess = sink.snapshot()
        r.eq("may: no SNI for an IP-literal next hop", msgs[0]["sni"] if msgs else "?", None)
        r.check("may: the body arrived", msgs and msgs[0]["data"].endswith(
            b"hello over TLS 1\r\n.leading dot\r\n"), msgs and msgs[0]["data"][-80:])
        r.check("may: EHLO again after STARTTLS", sess and sess[0]["ehlo"] == 2, sess)
    finally:
        srv.stop()
        sink.stop()
    r.eq("may: queue empty", srv.queue_list().empty, True)


def t_may_plaintext(r):
    sink = TlsSink(starttls=False).start()
    srv = server("may-plain", relayhost=hop(sink)).start()
    try:
        send(srv, ["bob@example.net"], body_of(2))
        sent = srv.wait_events("sent", timeout=WAIT)
        r.eq("may/plain: delivered", len(sent), 1)
        r.check("may/plain: tls=none", sent and sent[0].get("tls") == "none", sent)
        msgs, _ = sink.snapshot()
        r.check("may/plain: the sink got it in plaintext", len(msgs) == 1 and not msgs[0]["tls"],
                msgs)
        r.eq("may/plain: no event=tls", len(srv.events("tls")), 0)
    finally:
        srv.stop()
        sink.stop()


def t_starttls_refused(r):
    sink = TlsSink(*cert("ip"), starttls_reply="454 4.7.0 TLS not available now").start()
    srv = server("refused-may", relayhost=hop(sink)).start()
    try:
        send(srv, ["bob@example.net"], body_of(3))
        sent = srv.wait_events("sent", timeout=WAIT)
        r.check("refused/may: delivered in plaintext",
                len(sent) == 1 and sent[0].get("tls") == "none", sent)
        msgs, _ = sink.snapshot()
        r.check("refused/may: the sink got it in plaintext", len(msgs) == 1 and not msgs[0]["tls"],
                msgs)
    finally:
        srv.stop()
    srv = server("refused-encrypt", relayhost=hop(sink), smtp_tls_security_level="encrypt").start()
    try:
        qid = send(srv, ["carol@example.net"], body_of(4))
        dfr = srv.wait_events("deferred", timeout=WAIT)
        r.check("refused/encrypt: deferred 4.7.4, naming the refusal",
                len(dfr) == 1 and dfr[0].get("dsn") == "4.7.4" and
                "refused STARTTLS: 454 4.7.0 TLS not available now" in dfr[0].get("status", ""),
                dfr)
        r.eq("refused/encrypt: nothing more at the sink", len(sink.snapshot()[0]), 1)
    finally:
        queued_after_stop(r, "refused/encrypt", srv, qid, "carol@example.net")
        sink.stop()


def t_encrypt_not_offered(r):
    sink = TlsSink(starttls=False).start()
    srv = server("encrypt-none", relayhost=hop(sink), smtp_tls_security_level="encrypt").start()
    try:
        qid = send(srv, ["bob@example.net"], body_of(5))
        dfr = srv.wait_events("deferred", timeout=WAIT)
        r.eq("encrypt/none: one event=deferred", len(dfr), 1)
        if dfr:
            r.eq("encrypt/none: dsn 4.7.4", dfr[0].get("dsn"), "4.7.4")
            r.check("encrypt/none: the status says why",
                    "TLS is required, but was not offered by host 127.0.0.1" in
                    dfr[0].get("status", ""), dfr[0])
            r.eq("encrypt/none: tls=none", dfr[0].get("tls"), "none")
        r.eq("encrypt/none: nothing sent", len(srv.events("sent")), 0)
        msgs, sess = sink.snapshot()
        r.eq("encrypt/none: nothing at the sink", len(msgs), 0)
        r.check("encrypt/none: no MAIL in clear (the session ended after EHLO)",
                sess and sess[0]["messages"] == 0 and not sess[0]["starttls"], sess)
    finally:
        queued_after_stop(r, "encrypt/none", srv, qid, "bob@example.net")
        sink.stop()


def t_encrypt_untrusted(r):
    sink = TlsSink(*cert("self")).start()
    srv = server("encrypt-self", relayhost=hop(sink), smtp_tls_security_level="encrypt",
                 smtp_tls_CAfile=cert("ca")[0]).start()
    try:
        send(srv, ["bob@example.net"], body_of(6))
        delivered_tls(r, "encrypt/self-signed", srv, sink)
    finally:
        srv.stop()
        sink.stop()


def t_verify_trusted(r):
    sink = TlsSink(*cert("ip")).start()
    srv = server("verify-ok", relayhost=hop(sink), smtp_tls_security_level="verify",
                 smtp_tls_CAfile=cert("ca")[0]).start()
    try:
        send(srv, ["bob@example.net"], body_of(7))
        delivered_tls(r, "verify/trusted", srv, sink)
        tls = srv.events("tls")
        r.check("verify/trusted: event=tls verified=yes",
                len(tls) == 1 and tls[0].get("verified") == "yes", tls)
    finally:
        srv.stop()
        sink.stop()


def verify_fails(r, what, certname, reasons):
    sink = TlsSink(*cert(certname)).start()
    srv = server("verify-" + certname, relayhost=hop(sink), smtp_tls_security_level="verify",
                 smtp_tls_CAfile=cert("ca")[0]).start()
    qid = None
    try:
        qid = send(srv, ["bob@example.net"], body_of(8))
        dfr = srv.wait_events("deferred", timeout=WAIT)
        r.eq("%s: one event=deferred" % what, len(dfr), 1)
        if dfr:
            st = dfr[0].get("status", "")
            r.eq("%s: dsn 4.7.5" % what, dfr[0].get("dsn"), "4.7.5")
            r.check("%s: the status gives the verifier's reason" % what,
                    "TLS handshake failed: certificate verification failed: " in st and
                    any(x in st.lower() for x in reasons), st)
        err = srv.events("tls_error")
        r.check("%s: event=tls_error logged" % what, len(err) == 1, err)
        r.eq("%s: nothing sent" % what, len(srv.events("sent")), 0)
        msgs, sess = sink.snapshot()
        r.eq("%s: nothing at the sink" % what, len(msgs), 0)
        r.check("%s: the sink saw the handshake fail" % what,
                sess and sess[0]["starttls"] and not sess[0]["tls"], sess)
    finally:
        queued_after_stop(r, what, srv, qid, "bob@example.net")
        sink.stop()


def t_verify_untrusted(r):
    verify_fails(r, "verify/self-signed", "self",
                 ("self signed", "self-signed", "unable to get local issuer"))


def t_verify_wrong_name(r):
    verify_fails(r, "verify/wrong name", "wrong", ("mismatch",))


def t_verify_hostname(r):
    try:
        first = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError:
        first = None
    if first != rmtest.LOOPBACK:
        print("   localhost resolves to %r first: case skipped" % first, flush=True)
        return
    sink = TlsSink(*cert("local")).start()
    srv = server("verify-name", relayhost=hop(sink, "localhost"),
                 smtp_tls_security_level="verify", smtp_tls_CAfile=cert("ca")[0]).start()
    try:
        send(srv, ["bob@example.net"], body_of(9))
        delivered_tls(r, "verify/localhost", srv, sink)
        msgs, _ = sink.snapshot()
        r.eq("verify/localhost: SNI is the next hop's name", msgs[0]["sni"] if msgs else "?",
             "localhost")
    finally:
        srv.stop()
        sink.stop()


def t_injection(r):
    inj = b"250-injected\r\n250 PIPELINING\r\n"
    sink = TlsSink(*cert("ip"), inject=inj).start()
    srv = server("inject", relayhost=hop(sink)).start()
    try:
        send(srv, ["bob@example.net"], body_of(10))
        delivered_tls(r, "injection", srv, sink)
        ev = srv.events("starttls_injection")
        r.check("injection: logged, with what was dropped",
                len(ev) == 1 and ev[0].get("discarded") == str(len(inj)), ev)
    finally:
        srv.stop()
        sink.stop()


def t_large_and_reuse(r):
    sink = TlsSink(*cert("ip")).start()
    srv = server("reuse", relayhost=hop(sink), destination_concurrency_limit="1",
                 message_size_limit="10M").start()
    line = b"." + b"x" * 70 + b"\r\n"
    big = (b"From: alice@example.org\r\nSubject: big\r\n\r\n" + line * 21000 +
           b"..\r\n.\r\nlast line\r\n")
    try:
        send(srv, ["big@example.net"], big)
        for i in range(4):
            send(srv, ["small%d@example.net" % i], body_of(20 + i))
        delivered_tls(r, "reuse", srv, sink, 5)
        msgs, sess = sink.snapshot()
        got = [m for m in msgs if m["rcpts"] == ["big@example.net"]]
        r.check("reuse: the %d-octet body arrived byte for byte" % len(big),
                len(got) == 1 and got[0]["data"].endswith(big),
                got and (len(got[0]["data"]), len(big)))
        r.eq("reuse: one connection, one TLS handshake for 5 messages",
             [(s["tls"], s["messages"]) for s in sess], [(True, 5)])
        r.eq("reuse: one event=tls", len(srv.events("tls")), 1)
    finally:
        srv.stop()
        sink.stop()


def t_lmtp(r):
    tsink = TlsSink(*cert("ip"), lmtp=True).start()
    upath = os.path.join(rmtest.tempdir(prefix="rmtest-lmtp-"), "lmtp.sock")
    usink = TlsSink(*cert("ip"), lmtp=True, unix_path=upath).start()
    routes = "tcp.example=lmtp:%s,unix.example=lmtp:unix:%s" % (hop(tsink), upath)
    srv = server("lmtp", routes=routes, smtp_tls_security_level="encrypt").start()
    try:
        send(srv, ["a@tcp.example", "b@tcp.example"], body_of(30))
        send(srv, ["c@unix.example"], body_of(31))
        sent = srv.wait_events("sent", n=3, timeout=WAIT)
        r.eq("lmtp: three recipients delivered", len(sent), 3)
        tm, _ = tsink.snapshot()
        um, us = usink.snapshot()
        r.check("lmtp/tcp: inside TLS", len(tm) == 1 and tm[0]["tls"], tm)
        r.check("lmtp/unix: plaintext, no STARTTLS even with encrypt",
                len(um) == 1 and not um[0]["tls"] and not any(s["starttls"] for s in us), (um, us))
        by = {e.get("to"): e.get("tls") for e in sent}
        r.check("lmtp: tls= on the sent lines",
                by.get("<a@tcp.example>", "").startswith("TLSv1.") and
                by.get("<c@unix.example>") == "none", by)
    finally:
        srv.stop()
        tsink.stop()
        usink.stop()


def t_bad_cafile(r):
    # run directly, not as an rmtest.Server: main.c's fatal start-up path exits without
    # freeing what it set up, which LeakSanitizer would report in a sanitizer build
    spool = os.path.join(rmtest.tempdir(), "spool")
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    args = [rmtest.binary()]
    for k, v in (("listen", "127.0.0.1:%d" % rmtest.free_port()), ("spool_dir", spool),
                 ("myhostname", "rmtest.example"), ("relayhost", "[127.0.0.1]:9"),
                 ("smtp_tls_security_level", "verify"),
                 ("smtp_tls_CAfile", "/nonexistent/ca.pem")):
        args += ["-o", "%s=%s" % (k, v)]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30, env=env,
                       cwd=rmtest.tempdir(prefix="rmtest-cwd-"))
    log = p.stdout.decode("utf-8", "replace")
    r.check("bad CAfile: ringmail does not start (exit 1)", p.returncode == 1,
            (p.returncode, log[-800:]))
    r.check("bad CAfile: the error names the key and the file",
            "key 'smtp_tls_CAfile': /nonexistent/ca.pem" in log, log[-800:])
    r.check("bad CAfile: never listening", "event=started" not in log, log[-800:])


def main():
    global CERTS
    t0 = time.monotonic()
    CERTS = make_certs()
    print("   certificates made in %.1fs" % (time.monotonic() - t0), flush=True)
    rmtest.main([t_may_starttls, t_may_plaintext, t_starttls_refused, t_encrypt_not_offered,
                 t_encrypt_untrusted, t_verify_trusted, t_verify_untrusted, t_verify_wrong_name,
                 t_verify_hostname, t_injection, t_large_and_reuse, t_lmtp, t_bad_cafile])


if __name__ == "__main__":
    main()
