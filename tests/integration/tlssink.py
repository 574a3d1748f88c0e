"""tlssink: a small SMTP/LMTP sink with STARTTLS, for ringmail's delivery tests (stdlib only).

    sink = TlsSink(cert="leaf.pem", key="leaf.key").start()   # 127.0.0.1, a free port
    ... deliver to [127.0.0.1]:sink.port ...
    sink.messages   # one dict per accepted message: tls, version, cipher, sni, ...
    sink.sessions   # one dict per connection: starttls, handshake error, dropped octets
    sink.stop()

Options:
- starttls: offer STARTTLS in the EHLO/LHLO reply (it needs cert and key);
  False: a plaintext-only server (STARTTLS gets 502)
- starttls_reply: what STARTTLS is answered (default "220 2.0.0 Ready to start TLS");
  a 4xx/5xx refuses it
- inject: octets sent in clear right behind the 220 to STARTTLS, in the same
  write (a response-injection attempt: a correct client never reads them)
- lmtp: LHLO and one reply per accepted recipient after the data (RFC 2033)
- unix_path: listen on a unix socket instead of 127.0.0.1

Every message records whether it arrived inside TLS, the protocol version and
cipher the sink's side negotiated, and the SNI name the client sent (None: no
SNI). Each connection is served by its own thread; every socket read has a
timeout, so a stuck peer cannot hang a test. Dot-stuffing is undone; the data
is kept as received (CRLF lines), without the final ".".
"""

import os
import socket
import socketserver
import ssl
import threading

LOOPBACK = "127.0.0.1"
MAX_LINE = 1 << 16
MAX_DATA = 64 << 20


def _addr(cmd):
    """The address between < and > of a MAIL or RCPT command ("" for <>)."""
    i, j = cmd.find("<"), cmd.find(">")
    return cmd[i + 1:j] if 0 <= i < j else cmd.split(":", 1)[-1].strip()


class _Conn:
    """Line reader and writer over a socket that may be wrapped in TLS mid-way."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()

    def readline(self):
        """One line with its LF, or None at EOF."""
        for _ in range(1 << 20):
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise ValueError("line too long")
            d = self.sock.recv(65536)
            if not d:
                return None
            self.buf += d
        raise ValueError("too many reads")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sink = self.server.sink
        sess = {"starttls": False, "tls": False, "handshake_error": None, "dropped": 0,
                "ehlo": 0, "messages": 0}
        with sink.lock:
            sink.sessions.append(sess)
        if not sink.unix_path:
            # replies leave at once (no Nagle wait behind a delayed ACK)
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _Conn(self.request, sink.timeout)
        tls = None  # (version, cipher, sni) once TLS is up
        try:
            c.send("220 tlssink ESMTP\r\n")
            mail, rcpts = None, []
            for _ in range(100000):
                line = c.readline()
                if line is None:
                    return
                cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "LHLO", "HELO"):
                    sess["ehlo"] += 1
                    mail, rcpts = None, []
                    if verb == "HELO":
                        c.send("250 tlssink\r\n")
                        continue
                    ext = ["tlssink", "PIPELINING", "8BITMIME", "SIZE 104857600"]
                    if sink.starttls and tls is None:
                        ext.append("STARTTLS")
                    ext.append("ENHANCEDSTATUSCODES")
                    c.send("".join("250%s%s\r\n" % ("-" if i < len(ext) - 1 else " ", e)
                                   for i, e in enumerate(ext)))
                elif verb == "STARTTLS":
                    if not sink.starttls or tls is not None:
                        c.send("502 5.5.1 STARTTLS not available\r\n")
                        continue
                    if not sink.starttls_reply.startswith("220"):
                        c.send(sink.starttls_reply + "\r\n")
                        continue
                    sess["starttls"] = True
                    c.send(sink.starttls_reply.encode() + b"\r\n" + sink.inject)
                    # what the client pipelined behind STARTTLS is never a command
                    sess["dropped"] += len(c.buf)
                    c.buf.clear()
                    name = []
                    sink.names[id(threading.current_thread())] = name
                    try:
                        s = sink.ctx.wrap_socket(self.request, server_side=True)
                    except (ssl.SSLError, OSError) as e:
                        sess["handshake_error"] = str(e)
                        return
                    finally:
                        sink.names.pop(id(threading.current_thread()), None)
                    self.request = s
                    c = _Conn(s, sink.timeout)
                    ci = s.cipher()
                    tls = (s.version(), ci[0] if ci else None, name[0] if name else None)
                    sess["tls"] = True
                    mail, rcpts = None, []  # RFC 3207 4.2: the session starts over
                elif verb == "MAIL":
                    mail, rcpts = _addr(cmd), []
                    c.send("250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    if mail is None:
                        c.send("503 5.5.1 MAIL first\r\n")
                        continue
                    rcpts.append(_addr(cmd))
                    c.send("250 2.1.5 Ok\r\n")
                elif verb == "DATA":
                    if not rcpts:
                        c.send("554 5.5.1 no valid recipients\r\n")
                        continue
                    c.send("354 End data with <CR><LF>.<CR><LF>\r\n")
                    data = bytearray()
                    for _ in range(1 << 24):
                        ln = c.readline()
                        if ln is None:
                            return
                        if ln == b".\r\n":
                            break
                        if ln.startswith(b"."):
                            ln = ln[1:]
                        data += ln
                        if len(data) > MAX_DATA:
                            raise ValueError("message too large")
                    with sink.lock:
                        sink.messages.append({
                            "mail": mail, "rcpts": list(rcpts), "data": bytes(data),
                            "tls": tls is not None,
                            "version": tls[0] if tls else None,
                            "cipher": tls[1] if tls else None,
                            "sni": tls[2] if tls else None,
                        })
                        n = len(sink.messages)
                    sess["messages"] += 1
                    if sink.lmtp:
                        c.send("".join("250 2.0.0 <%s> delivered\r\n" % a for a in rcpts))
                    else:
                        c.send("250 2.0.0 Ok: queued as T%d\r\n" % n)
                    mail, rcpts = None, []
                elif verb == "RSET":
                    mail, rcpts = None, []
                    c.send("250 2.0.0 Ok\r\n")
                elif verb == "NOOP":
                    c.send("250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    c.send("221 2.0.0 Bye\r\n")
                    return
                else:
                    c.send("502 5.5.2 command not recognized\r\n")
        except (OSError, ValueError, ssl.SSLError) as e:
            sess.setdefault("error", str(e))
        finally:
            try:
                self.request.close()
            except OSError:
                pass


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class TlsSink:
    def __init__(self, cert=None, key=None, starttls=True, port=0, lmtp=False, inject=b"",
                 starttls_reply="220 2.0.0 Ready to start TLS", unix_path=None, timeout=30.0):
        self.starttls = starttls
        self.starttls_reply = starttls_reply
        self.inject = inject
        self.lmtp = lmtp
        self.unix_path = unix_path
        self.timeout = timeout
        self.lock = threading.Lock()
        self.messages = []
        self.sessions = []
        self.names = {}  # handler thread -> [SNI name], filled during its handshake
        self.ctx = None
        if starttls:
            if not (cert and key):
                raise ValueError("STARTTLS needs a certificate and a key")
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
            self.ctx.sni_callback = self._sni
        if unix_path:
            self.server = _UnixServer(unix_path, _Handler)
            self.port = None
        else:
            self.server = _TCPServer((LOOPBACK, port), _Handler)
            self.port = self.server.server_address[1]
        self.server.sink = self
        self.thread = None

    def _sni(self, sslobj, name, ctx):
        n = self.names.get(id(threading.current_thread()))
        if n is not None:
            n.append(name)
        return None

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(10)
            self.thread = None
        self.server.server_close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass

    def snapshot(self):
        """(messages, sessions), copied under the lock."""
        with self.lock:
            return list(self.messages), [dict(s) for s in self.sessions]


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description="an SMTP sink with STARTTLS (for tests)")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--no-starttls", action="store_true")
    ap.add_argument("--lmtp", action="store_true")
    a = ap.parse_args()
    k = TlsSink(a.cert, a.key, starttls=not a.no_starttls, port=a.port, lmtp=a.lmtp).start()
    print("tlssink on %s:%d" % (LOOPBACK, k.port), flush=True)
    seen = 0
    try:
        for _ in range(10 ** 9):
            time.sleep(0.5)
            msgs, _s = k.snapshot()
            for m in msgs[seen:]:
                print("message from %s to %s: %d octets, tls=%s %s %s sni=%s" % (
                    m["mail"], m["rcpts"], len(m["data"]), m["tls"], m["version"], m["cipher"],
                    m["sni"]), flush=True)
            seen = len(msgs)
    except KeyboardInterrupt:
        pass
    k.stop()
