#!/usr/bin/python3
"""PROXY protocol v1/v2 from a load balancer (hand-made headers here; real HAProxy in
test_haproxy.py), relay control through it, and the per-client limits: concurrent
connections, message and recipient rates, IPv6 /64 aggregation, the slow-loris data rate."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

srv = None


def v1(src, dst="10.0.0.1", sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, dst, sport=40000, dport=25, tlv=b""):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21
    else:
        addrs = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
        fam = 0x11
    body = addrs + struct.pack("!HH", sport, dport) + tlv
    return sig + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def connect(header, port=None):
    s = socket.create_connection((rmtest.LOOPBACK, port or srv.port), timeout=10)
    s.sendall(header)
    return s


def reply(s, timeout=10):
    s.settimeout(timeout)
    buf = b""
    while True:
        try:
            d = s.recv(4096)
        except (socket.timeout, ConnectionResetError):
            return buf
        if not d:
            return buf
        buf += d
        lines = buf.split(b"\r\n")
        if len(lines) >= 2 and lines[-2][3:4] == b" ":
            return buf


def session(header, cmds):
    s = connect(header)
    out = [reply(s)]
    for c in cmds:
        s.sendall(c.encode() + b"\r\n")
        out.append(reply(s))
    s.close()
    return out


def t_v1_v2_relay_control(r):
    # an outside client, seen through the PROXY header, cannot relay
    # (a client each: the message rate limit is 2 per minute)
    for name, hdr in (("v1", v1("203.0.113.7")), ("v2", v2("203.0.113.8", "10.0.0.1")),
                      ("v2+TLV", v2("203.0.113.9", "10.0.0.1", tlv=b"\x04\x00\x03abc")),
                      ("v1 IPv6", v1("2001:db8::7", "2001:db8::1"))):
        out = session(hdr, ["EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<x@elsewhere.example>",
                            "RCPT TO:<y@relay.example>", "QUIT"])
        r.check("%s: greeting after the header" % name, out[0].startswith(b"220 "), out)
        r.check("%s: outside client may not relay (554 5.7.1)" % name,
                out[3].startswith(b"554 5.7.1 <x@elsewhere.example>: Relay access denied"), out)
        r.check("%s: relay_domains accepted" % name, out[4].startswith(b"250 "), out)
    # the load balancer's own address is trusted (mynetworks), a proxied 127.0.0.1 too
    out = session(v1("127.0.0.1"), ["EHLO c", "MAIL FROM:<a@b.example>",
                                    "RCPT TO:<x@elsewhere.example>", "QUIT"])
    r.check("a proxied mynetworks client may relay", out[3].startswith(b"250 "), out)
    # the real client address is in the log and in Received:
    out = session(v2("198.51.100.9", "10.0.0.1"), ["EHLO c", "MAIL FROM:<a@b.example>",
                                                    "RCPT TO:<y@relay.example>", "DATA",
                                                    "Subject: proxied\r\n\r\nbody\r\n."])
    r.check("message from the proxied client queued", out[5].startswith(b"250 2.0.0 Ok"), out)
    r.check("the log names the proxied client, not the balancer", rmtest.wait_until(
        lambda: [e for e in srv.events("received") if e.get("client") == "198.51.100.9"], 5),
        srv.events("received"))
    # LOCAL (health check): the connection's own address
    local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"
    out = session(local, ["EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<x@elsewhere.example>",
                          "QUIT"])
    r.check("v2 LOCAL keeps the peer (127.0.0.1, trusted)", out[3].startswith(b"250 "), out)


def t_bad_headers(r):
    for name, hdr in (("no header", b"EHLO c\r\n"), ("garbage", b"PROXY TCP4 1.2.3\r\n"),
                      ("v1 bad port", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 25\r\n"),
                      ("v2 truncated TLV", v2("203.0.113.7", "10.0.0.1", tlv=b"\x04\x00\x09ab"))):
        s = connect(hdr)
        got = reply(s, 5)
        r.eq("%s: closed before any greeting" % name, got, b"")
        s.close()
    r.check("log: refused reason=proxy_header", rmtest.wait_until(
        lambda: [e for e in srv.events("refused") if e.get("reason") == "proxy_header"], 5))
    s = socket.create_connection((rmtest.LOOPBACK, srv.port), timeout=10)
    t0 = time.monotonic()
    got = reply(s, 8)
    r.check("no header within smtpd_upstream_proxy_timeout: closed",
            got == b"" and time.monotonic() - t0 < 6, (got, time.monotonic() - t0))
    s.close()


def t_untrusted_balancer(r):
    # proxy_trusted_networks is 127.0.0.1 only: a balancer at 127.0.0.2 is refused
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(10)
    s.connect((rmtest.LOOPBACK, srv.port))
    s.sendall(v1("127.0.0.1"))
    r.eq("a PROXY header from outside proxy_trusted_networks: closed, no greeting", reply(s, 5),
         b"")
    s.close()
    r.check("log: reason=proxy_untrusted",
            srv.wait_events("refused", lambda e: e.get("reason") == "proxy_untrusted"),
            srv.events("refused"))


def t_connection_count(r):
    held = [connect(v1("203.0.113.20", sport=40000 + i)) for i in range(3)]
    greets = [reply(s) for s in held]
    r.check("3 connections (the limit) get 220", all(g.startswith(b"220 ") for g in greets),
            greets)
    extra = connect(v1("203.0.113.20", sport=41000))
    got = reply(extra)
    r.check("the 4th from the same client: 421 4.7.0 too many connections",
            got.startswith(b"421 4.7.0 ") and b"too many connections from 203.0.113.20" in got, got)
    extra.close()
    other = connect(v1("203.0.113.21"))
    r.check("another client is not affected", reply(other).startswith(b"220 "))
    other.close()
    held[0].sendall(b"QUIT\r\n")
    reply(held[0])
    held[0].close()
    again = rmtest.wait_until(lambda: reply(connect(v1("203.0.113.20", sport=42000))), 5)
    r.check("after one closes, the client may connect again", again.startswith(b"220 "), again)
    for s in held[1:]:
        s.close()
    # IPv6 clients count per /64
    v6 = [connect(v1("2001:db8:1:2::%x" % (i + 1), "2001:db8::1")) for i in range(3)]
    r.check("3 from one /64", all(reply(s).startswith(b"220 ") for s in v6))
    s = connect(v1("2001:db8:1:2:ffff::9", "2001:db8::1"))
    r.check("a 4th address in the same /64 is refused", reply(s).startswith(b"421 4.7.0 "))
    s.close()
    s = connect(v1("2001:db8:1:3::1", "2001:db8::1"))
    r.check("the next /64 is another client", reply(s).startswith(b"220 "))
    s.close()
    for s in v6:
        s.close()


def t_rates(r):
    out = session(v1("203.0.113.30"), ["EHLO c"] + ["MAIL FROM:<a@b.example>", "RSET"] * 3)
    mails = out[2::2]
    r.check("message rate 2/min: 2 MAIL accepted", all(m.startswith(b"250 ") for m in mails[:2]),
            out)
    r.check("the 3rd MAIL: 450 4.7.1", mails[2].startswith(b"450 4.7.1 Error: too much mail"), out)
    out = session(v1("203.0.113.31"), ["EHLO c", "MAIL FROM:<a@b.example>"] +
                  ["RCPT TO:<r%d@relay.example>" % i for i in range(5)])
    r.check("recipient rate 4/min: 4 accepted", all(x.startswith(b"250 ") for x in out[3:7]), out)
    r.check("the 5th RCPT: 450 4.7.1", out[7].startswith(b"450 4.7.1 Error: too many recipients"),
            out)
    # mynetworks is exempt
    out = session(v1("127.0.0.1"), ["EHLO c"] + ["MAIL FROM:<a@b.example>", "RSET"] * 4)
    r.check("mynetworks is exempt from the rates", all(m.startswith(b"250 ") for m in out[2::2]),
            out)


def t_slow_loris(r):
    s = connect(v1("203.0.113.40"))
    reply(s)
    for c in ("EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<x@relay.example>", "DATA"):
        s.sendall(c.encode() + b"\r\n")
        reply(s)
    t0 = time.monotonic()
    got = b""
    s.settimeout(1.5)
    for i in range(40):  # one octet a second: far below smtpd_min_data_rate (100/s)
        try:
            s.sendall(b"x")
        except OSError:
            break
        try:
            d = s.recv(1000)
            if not d:
                break
            got += d
            if b"\r\n" in got:
                break
        except socket.timeout:
            pass
    r.check("a client trickling its body is cut off: 421 4.4.2 data rate too low",
            got.startswith(b"421 4.4.2 ") and b"data rate too low" in got,
            (got, time.monotonic() - t0))
    s.close()


def t_stop(r):
    r.eq("server exit 0 on SIGTERM", srv.stop(), 0)


def main():
    global srv
    srv = rmtest.Server(name="proxy", opts={
        "proxy_protocol": "true", "proxy_trusted_networks": "127.0.0.1",
        "smtpd_upstream_proxy_timeout": "3s", "mynetworks": "127.0.0.1/32",
        "relay_domains": "relay.example", "smtpd_client_connection_count_limit": "3",
        "smtpd_client_message_rate_limit": "2", "smtpd_client_recipient_rate_limit": "4",
        "smtpd_min_data_rate": "100", "reactors": "2"}).start(probe=False)
    rmtest.main([t_v1_v2_relay_control, t_bad_headers, t_untrusted_balancer, t_connection_count,
                 t_rates, t_slow_loris, t_stop])


if __name__ == "__main__":
    main()
