#!/usr/bin/python3
"""Real HAProxy (Debian's) in TCP mode in front of ringmail, with send-proxy (v1) and
send-proxy-v2: the client address HAProxy saw is the one ringmail uses for relay
control, logs and Received:, also through STARTTLS."""
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

HAPROXY = rmtest.need_tool("haproxy")
rmtest.need_tool("openssl")
D = rmtest.tempdir(prefix="rmtest-haproxy-")
CA = rmtest.make_ca(D)
CERT = rmtest.make_cert(D, "rmtest.example", ["DNS:rmtest.example", "IP:127.0.0.1"], CA)
MAILDIR = os.path.join(D, "maildir")
srv = hap = None
FE1, FE2 = rmtest.free_port(), rmtest.free_port()


def start_haproxy(backend_port):
    cfg = os.path.join(D, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write("""global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_v1
    bind 127.0.0.1:%d
    default_backend ringmail_v1
frontend smtp_v2
    bind 127.0.0.1:%d
    default_backend ringmail_v2
backend ringmail_v1
    server rm1 127.0.0.1:%d send-proxy
backend ringmail_v2
    server rm1 127.0.0.1:%d send-proxy-v2
""" % (FE1, FE2, backend_port, backend_port))
    log = open(os.path.join(D, "haproxy.log"), "wb")
    p = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    if not (rmtest.wait_port(FE1, 10, p) and rmtest.wait_port(FE2, 10, p)):
        p.kill()
        raise RuntimeError("haproxy did not start: " + open(log.name).read()[-2000:])
    return p


class FromAddr(smtplib.SMTP):
    """smtplib from a chosen loopback source address (the 'outside' client)."""

    def __init__(self, src, port):
        self.src = src
        super().__init__(timeout=15)
        self.connect(rmtest.LOOPBACK, port)
        self._host = rmtest.LOOPBACK  # the name STARTTLS checks the certificate against

    def _get_socket(self, host, port, timeout):
        return socket.create_connection((host, port), timeout, source_address=(self.src, 0))


def delivered_from(addr):
    new = os.path.join(MAILDIR, "new")
    out = []
    for fn in sorted(os.listdir(new)) if os.path.isdir(new) else []:
        text = open(os.path.join(new, fn), "rb").read().decode("utf-8", "replace")
        if "([%s])" % addr in text.split("\r\n\r\n")[0]:
            out.append(text)
    return out


def t_through(r, port, src, name):
    s = FromAddr(src, port)
    s.ehlo("outside.example")
    s.mail("a@outside.example")
    code, msg = s.rcpt("victim@elsewhere.example")
    r.eq("%s: client %s (outside mynetworks) may not relay" % (name, src),
         (code, msg[:9]), (554, b"5.7.1 <vi"))
    code, _ = s.rcpt("user@rmtest.example")
    r.eq("%s: relay_domains recipient accepted" % name, code, 250)
    code, _ = s.data(b"Subject: via haproxy\r\n\r\nhello\r\n")
    r.eq("%s: message accepted" % name, code, 250)
    s.quit()
    got = rmtest.wait_until(lambda: delivered_from(src), 20)
    r.check("%s: Received: names the real client [%s]" % (name, src), got)
    r.check("%s: the log names the real client" % name,
            srv.wait_events("received", lambda e: e.get("client") == src), srv.events("received"))


def t_v1(r):
    t_through(r, FE1, "127.0.0.5", "send-proxy")


def t_v2(r):
    t_through(r, FE2, "127.0.0.6", "send-proxy-v2")


def t_v2_starttls(r):
    s = FromAddr("127.0.0.7", FE2)
    s.ehlo("c")
    s.starttls(context=ssl.create_default_context(cafile=CA[0]))
    s.ehlo("c")
    code, _ = s.mail("a@outside.example")
    code, msg = s.rcpt("x@elsewhere.example")
    r.eq("send-proxy-v2 + STARTTLS: still the real client, relay refused", code, 554)
    s.quit()
    r.check("TLS log line names the real client",
            srv.wait_events("tls", lambda e: e.get("client") == "127.0.0.7"), srv.events("tls"))


def t_direct_refused(r):
    # the PROXY-only listener refuses a client that connects directly without a header
    s = socket.create_connection((rmtest.LOOPBACK, srv.port), timeout=5)
    s.sendall(b"EHLO direct\r\n")
    s.settimeout(5)
    try:
        got = s.recv(100)
    except OSError:
        got = b""
    r.eq("direct connection without a PROXY header: closed without a greeting", got, b"")
    s.close()


def t_stop(r):
    hap.terminate()
    hap.wait(10)
    r.eq("ringmail exit 0", srv.stop(), 0)


def main():
    global srv, hap
    srv = rmtest.Server(name="behind-haproxy", hold=False, opts={
        "proxy_protocol": "true", "proxy_trusted_networks": "127.0.0.1/32",
        "mynetworks": "127.0.0.1/32", "relay_domains": "rmtest.example",
        "maildir_dir": MAILDIR, "tls_cert_file": CERT[0], "tls_key_file": CERT[1]}).start(
            probe=False)
    hap = start_haproxy(srv.port)
    try:
        rmtest.main([t_v1, t_v2, t_v2_starttls, t_direct_refused, t_stop])
    finally:
        if hap.poll() is None:
            hap.kill()


if __name__ == "__main__":
    main()
