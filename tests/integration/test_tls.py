#!/usr/bin/python3
"""ringmail's TLS: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) against
Python's ssl/smtplib and swaks; the STARTTLS command-injection defence; TLS
1.2/1.3 only; session resumption; certificates reloaded on SIGHUP."""
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

SWAKS = rmtest.need_tool("swaks")
rmtest.need_tool("openssl")
srv = None
D = rmtest.tempdir(prefix="rmtest-tls-")
CA = rmtest.make_ca(D)
CERT = rmtest.make_cert(D, "rmtest.example", ["DNS:rmtest.example", "IP:127.0.0.1"], CA, "one")
CERT2 = rmtest.make_cert(D, "second.example", ["DNS:second.example", "IP:127.0.0.1"], CA, "two")
LIVE_CERT, LIVE_KEY = os.path.join(D, "live.pem"), os.path.join(D, "live.key")
SMTPS_PORT = rmtest.free_port()
MAILDIR = os.path.join(D, "maildir")


def install(pair):
    for src, dst in zip(pair, (LIVE_CERT, LIVE_KEY)):
        with open(src, "rb") as f, open(dst + ".tmp", "wb") as g:
            g.write(f.read())
        os.replace(dst + ".tmp", dst)


def ctx(**kw):
    c = ssl.create_default_context(cafile=CA[0])
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def peer_cn(sock):
    subj = dict(x[0] for x in sock.getpeercert()["subject"])
    return subj.get("commonName")


def maildir_files():
    d = os.path.join(MAILDIR, "new")
    return [os.path.join(d, f) for f in sorted(os.listdir(d))] if os.path.isdir(d) else []


def t_starttls_smtplib(r):
    before = len(maildir_files())
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    code, ehlo = s.ehlo("client.example")
    r.check("EHLO offers STARTTLS", b"STARTTLS" in ehlo, ehlo)
    code, msg = s.starttls(context=ctx())
    r.eq("STARTTLS: 220", code, 220)
    r.eq("certificate is the configured one", peer_cn(s.sock), "rmtest.example")
    r.check("TLS 1.3 negotiated", s.sock.version() == "TLSv1.3", s.sock.version())
    code, ehlo = s.ehlo("client.example")
    r.check("EHLO over TLS no longer offers STARTTLS", code == 250 and b"STARTTLS" not in ehlo,
            ehlo)
    refused = s.sendmail("a@client.example", ["b@rmtest.example"],
                         b"Subject: over TLS\r\n\r\nsecret\r\n")
    r.eq("message accepted over TLS", refused, {})
    s.quit()
    files = rmtest.wait_until(lambda: len(maildir_files()) > before and maildir_files(), 20)
    r.check("delivered into the maildir", files, maildir_files())
    if files:
        text = open(files[-1], "rb").read().decode("utf-8", "replace")
        r.check("Received: says ESMTPS with the TLS version and cipher",
                "with ESMTPS (TLSv1.3 TLS_" in text, text[:600])
    r.check("the session's log line names the TLS version and cipher",
            srv.wait_events("tls", lambda e: e.get("tls", "").startswith("TLSv1.3 TLS_")),
            srv.events("tls"))


def t_tls12_ok_tls11_refused(r):
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    s.ehlo("c")
    s.starttls(context=ctx(maximum_version=ssl.TLSVersion.TLSv1_2))
    r.eq("TLS 1.2 works", s.sock.version(), "TLSv1.2")
    r.check("TLS 1.2 uses an ECDHE AEAD suite", s.sock.cipher()[0].startswith("ECDHE-") and
            ("GCM" in s.sock.cipher()[0] or "CHACHA20" in s.sock.cipher()[0]), s.sock.cipher())
    s.quit()
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    s.ehlo("c")
    old = ctx()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("ALL:@SECLEVEL=0")
        s.starttls(context=old)
        r.check("TLS 1.1 refused", False, s.sock.version())
    except (ssl.SSLError, smtplib.SMTPException, OSError) as e:
        r.check("TLS 1.1 refused", True, e)
    r.check("log says tls_error", rmtest.wait_until(lambda: srv.events("tls_error"), 5),
            srv.log()[-1500:])


def t_injection(r):
    """RFC 3207 / CVE-2011-0411: commands sent in plaintext behind STARTTLS are discarded."""
    raw = socket.create_connection((rmtest.LOOPBACK, srv.port), timeout=10)
    f = raw.makefile("rb")
    r.check("greeting", f.readline().startswith(b"220 "))
    raw.sendall(b"EHLO c\r\n")
    while True:
        ln = f.readline()
        if ln[3:4] == b" ":
            break
    raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n")
    r.eq("220 Ready to start TLS", f.readline(), b"220 2.0.0 Ready to start TLS\r\n")
    tls = ctx().wrap_socket(raw, server_hostname="rmtest.example")
    tf = tls.makefile("rb")
    tls.sendall(b"EHLO c\r\n")
    first = tf.readline()
    r.check("first reply over TLS is the EHLO reply, not the injected MAIL's 250",
            first.startswith(b"250-"), first)
    while first[3:4] != b" ":
        first = tf.readline()
    tls.sendall(b"RCPT TO:<x@rmtest.example>\r\n")
    r.eq("the injected MAIL was never executed", tf.readline(),
         b"503 5.5.1 Error: need MAIL command\r\n")
    tls.sendall(b"QUIT\r\n")
    tf.readline()
    tls.close()
    r.check("log names the injection", rmtest.wait_until(
        lambda: srv.events("starttls_injection"), 5), srv.log()[-1500:])


def t_garbage_handshake(r):
    raw = rmtest.Raw(srv.port)
    raw.cmd("EHLO c")
    r.eq("STARTTLS", raw.cmd("STARTTLS")[0], 220)
    raw.send(b"\x16\x03\x01\x00\x05hello-this-is-not-tls\r\n" * 3)
    r.check("a broken handshake closes the connection", raw.closed(5))
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    r.eq("the server goes on", s.noop()[0], 250)
    s.quit()


def t_implicit_tls(r):
    s = smtplib.SMTP_SSL(rmtest.LOOPBACK, SMTPS_PORT, timeout=15, context=ctx())
    code, ehlo = s.ehlo("c")
    r.check("smtps: greeting and EHLO over TLS, no STARTTLS offered",
            code == 250 and b"STARTTLS" not in ehlo, ehlo)
    r.check("smtps: AUTH offered", b"AUTH PLAIN LOGIN" in ehlo, ehlo)
    code, msg = s.mail("a@client.example")
    r.eq("smtps: MAIL before AUTH is 530 5.7.0", (code, msg), (530, b"5.7.0 Authentication required"))
    s.quit()


def t_swaks(r):
    p = subprocess.run([SWAKS, "--server", rmtest.LOOPBACK, "--port", str(srv.port), "--tls",
                        "--to", "swaks@rmtest.example", "--from", "s@client.example",
                        "--timeout", "15"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    r.check("swaks --tls: exit 0 and queued", p.returncode == 0 and "queued as" in out, out[-1500:])
    r.check("swaks --tls: TLS started", "TLS started" in out, out[-1500:])
    p = subprocess.run([SWAKS, "--server", rmtest.LOOPBACK, "--port", str(SMTPS_PORT), "--tlsc",
                        "--to", "x@elsewhere.example", "--from", "s@client.example",
                        "--timeout", "15"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    r.check("swaks --tlsc (465): TLS, then 530 without AUTH",
            "TLS started" in out and "530 5.7.0 Authentication required" in out, out[-1500:])


def t_resumption(r):
    c = ctx()
    s1 = c.wrap_socket(socket.create_connection((rmtest.LOOPBACK, SMTPS_PORT), timeout=10),
                       server_hostname="rmtest.example")
    f = s1.makefile("rb")
    f.readline()  # the greeting: the TLS 1.3 ticket has arrived before it
    sess = s1.session
    s1.sendall(b"QUIT\r\n")
    f.readline()
    s1.close()
    s2 = c.wrap_socket(socket.create_connection((rmtest.LOOPBACK, SMTPS_PORT), timeout=10),
                       server_hostname="rmtest.example", session=sess)
    s2.makefile("rb").readline()
    r.check("a reconnecting client resumes its session (ticket)", s2.session_reused)
    s2.close()
    r.check("log says resumed=yes", rmtest.wait_until(
        lambda: [e for e in srv.events("tls") if e.get("resumed") == "yes"], 5), srv.events("tls"))


def t_reload(r):
    # a session open across the reloads keeps working
    keep = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    keep.ehlo("c")
    keep.starttls(context=ctx())
    keep.ehlo("c")
    install(CERT2)
    os.kill(srv.pid, signal.SIGHUP)
    ok = rmtest.wait_until(lambda: [e for e in srv.events("reload") if e.get("result") == "ok"], 10)
    r.check("SIGHUP: new certificate loaded", ok, srv.log()[-1500:])
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    s.ehlo("c")
    s.starttls(context=ctx())
    r.eq("new connections get the new certificate", peer_cn(s.sock), "second.example")
    s.quit()
    # a broken new pair: refused, the one in service stays
    with open(LIVE_CERT, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    os.kill(srv.pid, signal.SIGHUP)
    bad = rmtest.wait_until(lambda: [e for e in srv.events("reload") if e.get("result") == "refused"], 10)
    r.check("SIGHUP with a bad certificate: refused with a log line", bad, srv.log()[-1500:])
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    s.ehlo("c")
    s.starttls(context=ctx())
    r.eq("the certificate in service stays", peer_cn(s.sock), "second.example")
    s.quit()
    refused = keep.sendmail("a@client.example", ["b@rmtest.example"], b"Subject: x\r\n\r\nx\r\n")
    r.eq("a session open across both reloads still sends mail", refused, {})
    keep.quit()
    install(CERT)
    os.kill(srv.pid, signal.SIGHUP)
    rmtest.wait_until(lambda: len([e for e in srv.events("reload") if e.get("result") == "ok"]) >= 2, 10)


def t_stop(r):
    r.eq("server exit 0 on SIGTERM", srv.stop(), 0)


def main():
    global srv
    install(CERT)
    pw = os.path.join(D, "passwd")
    h = subprocess.run(["openssl", "passwd", "-6", "-salt", "rmtestsalt", "secret"],
                       stdout=subprocess.PIPE, check=True, timeout=30).stdout.decode().strip()
    with open(pw, "w") as f:
        f.write("alice:%s\n" % h)
    srv = rmtest.Server(hold=False, name="tls", opts={
        "smtps_listen": "127.0.0.1:%d" % SMTPS_PORT, "tls_cert_file": LIVE_CERT,
        "tls_key_file": LIVE_KEY, "smtpd_sasl_password_file": pw, "maildir_dir": MAILDIR,
        "relay_domains": "rmtest.example", "reactors": "2"}).start()
    rmtest.main([t_starttls_smtplib, t_tls12_ok_tls11_refused, t_injection, t_garbage_handshake,
                 t_implicit_tls, t_swaks, t_resumption, t_reload, t_stop])


if __name__ == "__main__":
    main()
