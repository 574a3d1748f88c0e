"""rmtest: helpers for ringmail's integration tests (stdlib only).

- find the binary (env RINGMAIL_BIN, set by CTest; else build/release/ringmail)
- pick free loopback ports
- start ringmail in the foreground with a temporary spool and -o options,
  wait (bounded) until it accepts connections, capture its stderr to a file
- stop it by PID with SIGTERM (or SIGKILL), never by name
- read `ringmail queue list` and parse it
- a tiny check/report harness: every script ends with "N passed, M failed"
- skip(): exit 77 (CTest SKIP_RETURN_CODE) when a peer tool is missing

Every loop here is bounded in count and time. Only loopback addresses are used.
"""

import atexit
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("RINGMAIL_SRC") or os.path.abspath(os.path.join(HERE, "..", ".."))
LOOPBACK = "127.0.0.1"

_servers = []   # every Server started by this process, stopped at exit
_tempdirs = []  # temp dirs created here, removed at exit unless RMTEST_KEEP=1


def binary():
    """Path of the ringmail binary under test."""
    b = os.environ.get("RINGMAIL_BIN")
    if not b:
        b = os.path.join(SRC, "build", "release", "ringmail")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        print("rmtest: ringmail binary not found at %s (set RINGMAIL_BIN)" % b, flush=True)
        sys.exit(1)
    return b


def skip(why):
    """Skip the whole test script (CTest counts exit 77 as skipped)."""
    print("SKIP: %s" % why, flush=True)
    sys.exit(77)


def need_tool(*names):
    """Return the path of the first tool found (PATH, /usr/sbin, /usr/bin); skip if none."""
    for n in names:
        p = shutil.which(n) or shutil.which(n, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if p:
            return p
    skip("peer tool missing: %s" % " or ".join(names))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def tempdir(prefix="rmtest-", base=None):
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    _tempdirs.append(d)
    return d


def wait_port(port, timeout=10.0, proc=None):
    """Connect loop until something accepts on 127.0.0.1:port; bounded by timeout."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if proc is not None and proc.poll() is not None:
            return False
        try:
            s = socket.create_connection((LOOPBACK, port), timeout=0.5)
            s.close()
            return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return False


class Server:
    """One ringmail process: `Server(opts={...}).start()`, then .port, .spool, .stop()."""

    def __init__(self, opts=None, spool=None, port=None, config=None, name="ringmail",
                 extra_args=None, log_append=True, cwd=None, hold=True):
        self.bin = binary()
        # hold: deliver nothing (delivery: hold), so what was accepted stays in
        # the queue for the inbound tests to inspect
        self.hold = hold
        self.cwd = cwd  # working directory of the process (None: the caller's)
        self.port = port or free_port()
        self.spool = spool or os.path.join(tempdir(), "spool")
        self.opts = dict(opts or {})
        self.config = config
        self.name = name
        self.extra_args = list(extra_args or [])
        self.proc = None
        self.logdir = tempdir(prefix="rmtest-log-")
        self.logpath = None
        self.nstarts = 0
        self._logf = None
        # stderr is opened O_APPEND by default, as log files are; the reactors
        # write their log lines with io_uring at the current file position,
        # which loses lines on a plain (non-append) file: log_append=False
        # reproduces that
        self.log_append = log_append

    def args(self):
        a = [self.bin]
        if self.config:
            a += ["-c", self.config]
        # the tests run as root with spools under 0700 temporary folders: keep root
        # (test_privileges.py runs the privilege drop itself)
        # admin_listen off unless a test sets it (opts={"admin_listen": "127.0.0.1:%d" %
        # free_port()}): servers started in parallel would all want the default 9025
        o = {"listen": "%s:%d" % (LOOPBACK, self.port), "spool_dir": self.spool,
             "myhostname": "rmtest.example", "user": "root", "admin_listen": ""}
        if self.hold and "delivery" not in self.opts:
            o["delivery"] = "hold"
        o.update(self.opts)
        for k, v in o.items():
            a += ["-o", "%s=%s" % (k, v)]
        return a + self.extra_args

    def start(self, timeout=15.0, probe=True):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.nstarts += 1
        self.logpath = os.path.join(self.logdir, "%s.%d.stderr" % (self.name, self.nstarts))
        self._logf = open(self.logpath, "ab" if self.log_append else "wb")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf, cwd=self.cwd)
        if self not in _servers:
            _servers.append(self)
        if not self.wait_ready(timeout, probe):
            out = self.log()
            self.kill()
            raise RuntimeError("ringmail did not start listening on port %d within %.0fs; "
                               "log:\n%s" % (self.port, timeout, out[-4000:]))
        return self

    def wait_ready(self, timeout, probe=True):
        """Bounded wait for 'event=started' in the log, then (optionally) one connect."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            if self.proc.poll() is not None:
                return False
            text = self.log()
            if "event=started" in text or '"event":"started"' in text:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        else:
            return False
        if probe:
            return wait_port(self.port, max(0.5, deadline - time.monotonic()), self.proc)
        return True

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM by PID; SIGKILL if it has not exited within timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print("rmtest: ringmail pid %d ignored SIGTERM for %.0fs; SIGKILL"
                      % (self.proc.pid, timeout), flush=True)
                self.kill()
                return "killed"
        self._close_log()
        return self.proc.returncode

    def kill(self):
        """SIGKILL by PID (a crash, as far as the spool can tell)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_log()
        return self.proc.returncode

    def _close_log(self):
        if self._logf is not None:
            self._logf.close()
            self._logf = None

    def log(self, which=None):
        """The stderr of the current (or the which-th) start, as text."""
        p = self.logpath if which is None else os.path.join(
            self.logdir, "%s.%d.stderr" % (self.name, which))
        try:
            with open(p, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def events(self, event, which=None):
        """Log lines with event=EVENT, each parsed into a dict of key=value."""
        out = []
        for line in self.log(which).splitlines():
            if (" event=%s " % event) in (" " + line + " ") or line.startswith("event=%s " % event):
                out.append(parse_kv(line))
        return out

    def wait_events(self, event, pred=None, n=1, timeout=10.0):
        """The event=EVENT lines matching pred, once there are n of them or timeout
        seconds have passed. Reactors write their log through io_uring after the
        reply that a client sees, so a line may land a moment after the reply."""
        def matching():
            return [e for e in self.events(event) if pred is None or pred(e)]
        wait_until(lambda: len(matching()) >= n, timeout, 0.05)
        return matching()

    def queue_list(self, timeout=60):
        return queue_list(self.spool, self.bin, timeout=timeout)

    def rss(self):
        return proc_rss(self.pid)


_KV = re.compile(r'([A-Za-z_][A-Za-z0-9_.]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_kv(line):
    d = {}
    for k, v in _KV.findall(line):
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        d[k] = v
    return d


class Queue:
    """Parsed `ringmail queue list` output."""

    def __init__(self, text, rc, err):
        self.text = text
        self.rc = rc
        self.stderr = err
        self.msgs = {}  # qid -> {"size": int, "sender": str, "rcpts": [str]}
        self.order = []
        self.requests = None
        self.kbytes = None
        self.empty = "Mail queue is empty" in text
        cur = None
        for line in text.splitlines():
            m = re.match(r"^([0-9A-Fa-f]{16})\S*\s+(\d+)\s+(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d)\s+(.*)$",
                         line)
            if m:
                cur = {"size": int(m.group(2)), "arrival": m.group(3),
                       "sender": m.group(4).strip(), "rcpts": []}
                qid = m.group(1).upper()
                self.msgs[qid] = cur
                self.order.append(qid)
                continue
            m = re.match(r"^-- (\d+) Kbytes in (\d+) Requests?\.", line)
            if m:
                self.kbytes, self.requests = int(m.group(1)), int(m.group(2))
                cur = None
                continue
            if cur is not None and line.startswith(" ") and line.strip():
                cur["rcpts"].append(line.strip())
            elif not line.strip():
                cur = None
        if self.empty and self.requests is None:
            self.requests = 0

    def __len__(self):
        return len(self.msgs)

    def __contains__(self, qid):
        return qid.upper() in self.msgs


def queue_list(spool, bin_=None, timeout=60, extra=None):
    b = bin_ or binary()
    args = [b, "queue", "list", "-o", "spool_dir=%s" % spool] + list(extra or [])
    p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return Queue(p.stdout.decode("utf-8", "replace"), p.returncode,
                 p.stderr.decode("utf-8", "replace"))


def proc_rss(pid):
    """VmRSS of pid in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def proc_cpu_seconds(pid):
    """utime+stime of pid (all threads) in seconds, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- a raw SMTP client, for what smtplib will not do ----

class Raw:
    """A raw SMTP connection to 127.0.0.1:port with bounded reads."""

    def __init__(self, port, timeout=10.0, read_greeting=True):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.reply() if read_greeting else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("reply timed out")
        self.sock.settimeout(remaining)
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed by server")
        self.buf += d

    def line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        for _ in range(100000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                ln, self.buf = self.buf[:i], self.buf[i + 2:]
                return ln.decode("utf-8", "replace")
            if len(self.buf) > 1 << 20:
                raise ValueError("reply line too long")
            self._fill(deadline)
        raise ValueError("too many reads")

    def reply(self, timeout=None):
        """(code, [text lines]) of one possibly multi-line reply."""
        lines = []
        for _ in range(1000):
            ln = self.line(timeout)
            if len(ln) < 3 or not ln[:3].isdigit():
                raise ValueError("bad reply line %r" % ln)
            lines.append(ln[4:])
            if len(ln) == 3 or ln[3] == " ":
                return int(ln[:3]), lines
        raise ValueError("reply too long")

    def cmd(self, c, timeout=None):
        self.send(c + "\r\n")
        return self.reply(timeout)

    def closed(self, timeout=3.0):
        """True if the server closes the connection (EOF or reset) within timeout,
        with no further data in between (pending data is returned through .buf)."""
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not d:
                return True
            self.buf += d
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})")


def queued_id(text):
    """The queue id in a '250 2.0.0 Ok: queued as ID' reply text, or None."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if isinstance(text, (list, tuple)):
        text = "\n".join(text)
    m = QUEUED.search(text)
    return m.group(1).upper() if m else None


def received_len(qid_arrival, helo, rcpts, proto="ESMTP", myhostname="rmtest.example",
                 client="127.0.0.1"):
    """Length of the Received: header ringmail prepends (core/smtp_server.c received_header()).

    qid_arrival is the queue list's arrival field ("Fri Nov 27 17:21:07"): the
    RFC 5322 date's length depends only on the day of the month having 1 or 2 digits."""
    day = int(qid_arrival.split()[2])
    date_len = len("Fri, %d Nov 2026 17:21:07 +0000" % day)
    lit = "[IPv6:%s]" % client if ":" in client else "[%s]" % client
    if len(rcpts) == 1:
        h = "Received: from %s (%s)\r\n\tby %s (ringmail) with %s id %s\r\n\tfor <%s>; %s\r\n" % (
            helo, lit, myhostname, proto, "X" * 16, rcpts[0], "D" * date_len)
    else:
        h = "Received: from %s (%s)\r\n\tby %s (ringmail) with %s id %s;\r\n\t%s\r\n" % (
            helo, lit, myhostname, proto, "X" * 16, "D" * date_len)
    return len(h.encode())


# ---- check/report harness ----

class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print("ok   %s" % name, flush=True)
        else:
            self.failed += 1
            msg = "FAIL %s%s" % (name, (": " + str(detail)) if detail != "" else "")
            self.failures.append(msg)
            print(msg, flush=True)
        return bool(cond)

    def eq(self, name, got, want):
        return self.check(name, got == want, "got %r, want %r" % (got, want))

    def run(self, fn, *a, **kw):
        """Run one test function; an exception counts as one failure."""
        print("== %s" % fn.__name__, flush=True)
        t0 = time.monotonic()
        try:
            fn(self, *a, **kw)
        except SystemExit:
            raise
        except BaseException as e:  # noqa: BLE001 - report any failure and go on
            self.failed += 1
            msg = "FAIL %s: exception %s: %s" % (fn.__name__, type(e).__name__, e)
            self.failures.append(msg)
            print(msg, flush=True)
            traceback.print_exc()
        print("   (%s: %.1fs)" % (fn.__name__, time.monotonic() - t0), flush=True)

    def finish(self):
        # a sanitizer build reports into the server's stderr: any report fails the script
        for srv in _servers:
            for i in range(1, srv.nstarts + 1):
                text = srv.log(i)
                for pat in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                            "WARNING: ThreadSanitizer"):
                    k = text.find(pat)
                    if k >= 0:
                        self.check("no sanitizer report in %s start %d" % (srv.name, i), False,
                                   text[max(0, k - 200):k + 1500])
                        break
        if self.failures:
            print("\nfailures:", flush=True)
            for f in self.failures:
                print("  " + f, flush=True)
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


def main(tests):
    """Run test functions (each takes a Results) and exit with the summary."""
    r = Results()
    for t in tests:
        r.run(t)
    r.finish()


# ---- Postfix's smtp-sink as a next hop, and its dump files ----

_sinks = []  # every Sink started by this process, stopped at exit (before the temp dirs go)


def wait_until(cond, timeout, step=0.1):
    """Call cond() until it returns a true value or timeout seconds pass (bounded
    in count too); returns the last value."""
    deadline = time.monotonic() + timeout
    v = None
    for _ in range(int(timeout / step) + 2):
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)
    return v


class Sink:
    """One smtp-sink process on 127.0.0.1 (or a unix socket), dumping each transaction.

    `Sink(flags=["-f", "rcpt"]).start()`, then .port (or .path), .files(), .dumps(), .stop().
    Each completed transaction is one file in .dumpdir (smtp-sink removes the file
    of a transaction that does not end with an accepted "."; with -L the file is
    written once, with one X-Rcpt-Args line per recipient). As root, smtp-sink
    must drop privileges (-u nobody): the dump directory is made writable for it."""

    def __init__(self, port=None, lmtp=False, flags=None, name="sink", unix_path=None,
                 dump=True, backlog=256):
        self.bin = need_tool("smtp-sink")
        self.unix_path = unix_path
        self.port = None if unix_path else (port or free_port())
        self.lmtp = lmtp
        self.flags = list(flags or [])
        self.name = name
        self.backlog = backlog
        self.base = tempdir(prefix="rmtest-sink-")
        os.chmod(self.base, 0o755)
        self.dumpdir = os.path.join(self.base, "dump") if dump else None
        if dump:
            os.mkdir(self.dumpdir)
            os.chmod(self.dumpdir, 0o777)
        self.logpath = os.path.join(self.base, "%s.out" % name)
        self.proc = None
        self._logf = None

    @property
    def addr(self):
        return "unix:%s" % self.unix_path if self.unix_path else "%s:%d" % (LOOPBACK, self.port)

    def args(self):
        a = [self.bin]
        if os.geteuid() == 0:
            a += ["-u", "nobody"]
        if self.lmtp:
            a += ["-L"]
        if self.dumpdir:
            # %H%M%S: smtp-sink appends 32 random bits to the name; a per-second
            # prefix keeps a name collision (one dump overwriting another) out of reach
            a += ["-d", os.path.join(self.dumpdir, "%H%M%S.")]
        return a + self.flags + [self.addr, str(self.backlog)]

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=self._logf)
        if self not in _sinks:
            _sinks.append(self)
        if self.unix_path:
            ok = wait_until(lambda: os.path.exists(self.unix_path) or self.proc.poll() is not None,
                            timeout, 0.02) and self.proc.poll() is None
        else:
            ok = wait_port(self.port, timeout, self.proc)
        if not ok:
            self.stop()
            raise RuntimeError("smtp-sink did not start on %s: %s" % (self.addr, self.output()))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM by PID, then SIGKILL by PID."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        return self.proc.returncode

    def output(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""

    def files(self):
        """Paths of the dump files now present (a transaction in progress has one too)."""
        if not self.dumpdir:
            return []
        return [os.path.join(self.dumpdir, n) for n in os.listdir(self.dumpdir)]

    def count(self):
        return len(self.files())

    def dumps(self):
        return [parse_sink_dump(p) for p in sorted(self.files())]


def parse_sink_dump(path):
    """One smtp-sink dump file -> dict.

    mail: the X-Mail-Args text; rcpts: [addresses of X-Rcpt-Args]; helo; proto;
    data: the message as received, with CRLF line ends restored (smtp-sink
    writes each line with LF only and undoes dot-stuffing); headers: [(name
    lower case, unfolded value)] of data's header; message_id; mtime."""
    with open(path, "rb") as f:
        raw = f.read()
    st = os.stat(path)
    d = {"path": path, "mtime": st.st_mtime, "rcpts": [], "mail": None, "helo": None,
         "proto": None, "raw": raw, "data": None, "headers": [], "message_id": None,
         "complete": False}
    lines = raw.split(b"\n")
    i = 0
    for i in range(len(lines)):  # noqa: B007 - i is used after the loop
        ln = lines[i]
        if ln.startswith(b"X-Mail-Args: "):
            d["mail"] = ln[13:].decode("utf-8", "replace")
        elif ln.startswith(b"X-Rcpt-Args: "):
            a = ln[13:].decode("utf-8", "replace")
            m = re.match(r"<([^>]*)>", a)
            d["rcpts"].append(m.group(1) if m else a)
        elif ln.startswith(b"X-Helo-Args: "):
            d["helo"] = ln[13:].decode("utf-8", "replace")
        elif ln.startswith(b"X-Client-Proto: "):
            d["proto"] = ln[16:].decode("utf-8", "replace")
        elif ln.startswith(b"Received: "):
            break
    else:
        return d
    # smtp-sink's own Received: is three lines; the message data follows
    j = i + 1
    while j < len(lines) and lines[j].startswith(b"\t"):
        j += 1
    rest = b"\n".join(lines[j:])
    # every data line ends with LF, then smtp-sink appends one empty line
    if rest.endswith(b"\n\n") or rest == b"\n":
        d["complete"] = True
        rest = rest[:-1]
    d["data"] = rest.replace(b"\n", b"\r\n")
    d["headers"] = parse_headers(d["data"])
    for k, v in d["headers"]:
        if k == "message-id":
            d["message_id"] = v.strip()
            break
    return d


def parse_headers(data):
    """[(name lower case, value unfolded)] of the header section of CRLF message data."""
    out = []
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end + 2]
    for ln in head.split(b"\r\n"):
        if not ln:
            continue
        if ln[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + ln.strip().decode("utf-8", "replace"))
            continue
        k, _, v = ln.partition(b":")
        out.append((k.decode("utf-8", "replace").strip().lower(),
                    v.strip().decode("utf-8", "replace")))
    return out


def strip_first_header(data):
    """(first header field with its folded continuation lines, the rest) of CRLF data."""
    i = data.find(b"\r\n")
    for _ in range(1000):
        if i < 0:
            return data, b""
        if data[i + 2:i + 3] not in (b" ", b"\t"):
            return data[:i + 2], data[i + 2:]
        i = data.find(b"\r\n", i + 2)
    return data, b""


@atexit.register
def _cleanup():
    for k in _sinks:
        try:
            k.stop(timeout=5)
        except Exception:  # noqa: BLE001
            pass
    for s in _servers:
        try:
            if s.running():
                s.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass
    if os.environ.get("RMTEST_KEEP") == "1":
        if _tempdirs:
            print("rmtest: kept %s" % " ".join(_tempdirs), flush=True)
        return
    for d in _tempdirs:
        shutil.rmtree(d, ignore_errors=True)


# ---- certificates for the TLS tests (openssl's command line) ----

def make_ca(d, name="rmtest CA"):
    """A CA certificate and key in folder d: (cert, key)."""
    cert, key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=%s" % name, "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return cert, key


def make_cert(d, cn, sans, ca=None, prefix="leaf"):
    """A leaf certificate (EC P-256) for cn with subjectAltName entries sans
    ("DNS:x", "IP:127.0.0.1"), signed by ca=(cert, key) or self-signed: (cert, key)."""
    cert, key = os.path.join(d, prefix + ".pem"), os.path.join(d, prefix + ".key")
    ext = os.path.join(d, prefix + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n" % ",".join(sans))
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=%s" % cn, "-addext",
                        "subjectAltName=%s" % ",".join(sans)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30)
        return cert, key
    csr = os.path.join(d, prefix + ".csr")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr, "-subj",
                    "/CN=%s" % cn], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
                    "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return cert, key


# ---- Prometheus text format (the admin endpoint's /metrics) ----

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse_metrics(text):
    """{'name{labels}': float} of every sample, and {family: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            types[fam] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError("bad sample line %r" % line)
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples, types


def http_get(port, path, method="GET", headers=None, timeout=5.0):
    """(status, {header lower case: value}, body text) of one request."""
    c = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        resp = c.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        c.close()
