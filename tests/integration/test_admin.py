#!/usr/bin/python3
"""The admin endpoint (admin_listen): /healthz, /readyz, /metrics, errors, slow
clients, the bearer token, and start-up failures that name the key.

Every server gets its own free admin port. /metrics is checked with
`promtool check metrics` (Debian's prometheus package) when it is installed.
The /readyz spool checks use a small tmpfs (root and `mount -t tmpfs`; that
case is skipped otherwise).
"""
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402


def admin_server(name, hold=True, **opts):
    port = rmtest.free_port()
    o = {"admin_listen": "%s:%d" % (rmtest.LOOPBACK, port), "reactors": "2", "workers": "2"}
    o.update(opts)
    srv = rmtest.Server(name=name, opts=o, hold=hold).start()
    srv.admin_port = port
    return srv


def raw(port, data, timeout=5.0):
    """Send data on a fresh connection, read until the server closes; the reply text."""
    s = socket.create_connection((rmtest.LOOPBACK, port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        for _ in range(1000):
            d = s.recv(65536)
            if not d:
                break
            out += d
        return out.decode("utf-8", "replace")
    finally:
        s.close()


def scrape(port, headers=None):
    st, _, body = rmtest.http_get(port, "/metrics", headers=headers)
    if st != 200:
        raise RuntimeError("/metrics: %d %s" % (st, body))
    return rmtest.parse_metrics(body)[0]


def send_mail(port, n):
    s = smtplib.SMTP(rmtest.LOOPBACK, port, timeout=30)
    try:
        s.ehlo("client.example")
        for i in range(n):
            s.sendmail("from@example.org", ["to%d@example.net" % i],
                       b"Subject: admin %d\r\n\r\nhello\r\n" % i)
    finally:
        s.quit()


def t_health_and_ready(r):
    srv = admin_server("health")
    st, hdr, body = rmtest.http_get(srv.admin_port, "/healthz")
    r.eq("/healthz 200", st, 200)
    r.eq("/healthz body", body, "ok\n")
    r.eq("Connection: close", hdr.get("connection"), "close")
    st, _, body = rmtest.http_get(srv.admin_port, "/readyz")
    r.eq("/readyz 200", (st, body), (200, "ready\n"))
    st, _, body = rmtest.http_get(srv.admin_port, "/healthz?probe=1")
    r.eq("the query is ignored", st, 200)
    r.check("the log names the admin address",
            [e for e in srv.events("admin_listening")
             if e.get("addr") == "127.0.0.1:%d" % srv.admin_port and e.get("auth") == "none"],
            srv.log()[-800:])
    r.eq("exit 0", srv.stop(), 0)


def t_metrics(r):
    srv = admin_server("metrics")
    st, hdr, body = rmtest.http_get(srv.admin_port, "/metrics")
    r.eq("/metrics 200", st, 200)
    r.check("content type is the text format 0.0.4",
            hdr.get("content-type", "").startswith("text/plain; version=0.0.4"), hdr)
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        r.check("promtool check metrics: clean", p.returncode == 0 and not p.stdout.strip(),
                (p.returncode, p.stdout.decode(errors="replace")))
    else:
        print("   (promtool not installed: the lint is skipped; apt-get install prometheus)",
              flush=True)
    samples, types = rmtest.parse_metrics(body)
    for fam, typ in types.items():
        if typ == "counter":
            r.check("counter %s ends in _total" % fam, fam.endswith("_total"))
    def typed(k):
        base = k.partition("{")[0]
        if base in types:
            return True
        return any(base == f + suf and types[f] == "histogram"
                   for f in types for suf in ("_bucket", "_sum", "_count"))
    r.check("every sample has a TYPE", all(typed(k) for k in samples),
            [k for k in samples if not typed(k)])
    for fam, typ in types.items():
        if typ == "histogram":
            r.check("histogram %s ends in _seconds" % fam, fam.endswith("_seconds"))
            r.check("histogram %s has _bucket, _sum and _count" % fam,
                    any(k.startswith(fam + "_bucket{") for k in samples)
                    and any(k.partition("{")[0] == fam + "_sum" for k in samples)
                    and any(k.partition("{")[0] == fam + "_count" for k in samples))
    r.eq("build info", samples.get('ringmail_build_info{version="%s"}' % version()), 1.0)
    start = samples.get("ringmail_start_time_seconds", 0)
    r.check("start time is about now", abs(start - time.time()) < 120, start)
    for i in range(2):
        r.check("per-reactor loops, reactor %d" % i,
                'ringmail_reactor_loops_total{reactor="%d"}' % i in samples)
        r.check("per-reactor cqes, reactor %d" % i,
                'ringmail_reactor_cqes_total{reactor="%d"}' % i in samples)
        r.check("per-worker loops, worker %d" % i,
                'ringmail_worker_loops_total{worker="%d"}' % i in samples)
    r.check("no reactor 2", 'ringmail_reactor_loops_total{reactor="2"}' not in samples)

    before = scrape(srv.admin_port)
    send_mail(srv.port, 3)
    after = rmtest.wait_until(
        lambda: (lambda m: m if m["ringmail_messages_received_total"]
                 >= before["ringmail_messages_received_total"] + 3 else None)(
            scrape(srv.admin_port)), 5)
    after = after or scrape(srv.admin_port)
    r.eq("messages_received_total moved by exactly 3",
         after["ringmail_messages_received_total"] - before["ringmail_messages_received_total"], 3)
    r.eq("connections_accepted_total moved by 1",
         after["ringmail_connections_accepted_total"]
         - before["ringmail_connections_accepted_total"], 1)
    r.check("received bytes moved",
            after["ringmail_received_bytes_total"] > before["ringmail_received_bytes_total"])
    r.check("fsyncs moved", after["ringmail_spool_fsyncs_total"]
            > before["ringmail_spool_fsyncs_total"])
    loops = sum(v for k, v in after.items() if k.startswith("ringmail_reactor_loops_total{"))
    r.check("reactor loops counted", loops > 0, loops)
    r.eq("nothing refused", after["ringmail_messages_refused_total"], 0)

    # the gauge follows an open connection
    c = rmtest.Raw(srv.port)
    open_now = rmtest.wait_until(lambda: scrape(srv.admin_port)["ringmail_connections"] >= 1, 5)
    r.check("ringmail_connections counts an open session", open_now)
    c.cmd("QUIT")
    c.close()
    gone = rmtest.wait_until(lambda: scrape(srv.admin_port)["ringmail_connections"] == 0, 5)
    r.check("and drops when it closes", gone)
    r.eq("exit 0", srv.stop(), 0)


def t_delivery_counters(r):
    md = os.path.join(rmtest.tempdir(), "maildir")
    srv = admin_server("delivery", hold=False, maildir_dir=md)
    before = scrape(srv.admin_port)
    send_mail(srv.port, 2)
    key = 'ringmail_delivery_recipients_total{result="delivered"}'
    after = rmtest.wait_until(
        lambda: (lambda m: m if m[key] >= before[key] + 2 else None)(scrape(srv.admin_port)), 10)
    after = after or scrape(srv.admin_port)
    r.eq("two recipients delivered into the Maildir", after[key] - before[key], 2)
    r.eq("none deferred", after['ringmail_delivery_recipients_total{result="deferred"}'], 0)
    r.eq("none failed", after['ringmail_delivery_recipients_total{result="failed"}'], 0)
    r.eq("exit 0", srv.stop(), 0)


def promtool_check(r, body, what):
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if not promtool:
        return
    p = subprocess.run([promtool, "check", "metrics"], input=body.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    r.check("promtool check metrics: clean (%s)" % what,
            p.returncode == 0 and not p.stdout.strip(),
            (p.returncode, p.stdout.decode(errors="replace")))


def histogram(samples, name, label=None):
    """(cumulative [(le, count)] in le order, sum, count) of one histogram series."""
    pre = name + "_bucket{" + (label + "," if label else "") + 'le="'
    rows = []
    for k, v in samples.items():
        if k.startswith(pre):
            le = k[len(pre):-2]
            rows.append((float("inf") if le == "+Inf" else float(le), v))
    rows.sort()
    suffix = "{%s}" % label if label else ""
    return rows, samples.get(name + "_sum" + suffix), samples.get(name + "_count" + suffix)


def check_histogram(r, samples, name, label=None, count=None):
    rows, hsum, hcount = histogram(samples, name, label)
    what = name + ("{%s}" % label if label else "")
    r.check("%s: buckets up to +Inf" % what, len(rows) >= 8 and rows[-1][0] == float("inf"),
            rows)
    r.check("%s: buckets cumulative and monotone" % what,
            all(rows[i][1] <= rows[i + 1][1] for i in range(len(rows) - 1)), rows)
    r.eq("%s: _count is the +Inf bucket" % what, hcount, rows[-1][1] if rows else None)
    r.check("%s: _sum is there, >= 0" % what, hsum is not None and hsum >= 0, hsum)
    if count is not None:
        r.eq("%s: _count" % what, hcount, count)
    return rows, hsum, hcount


def spool_files(spool):
    segs = [os.path.join(spool, n) for n in os.listdir(spool)
            if n.startswith("seg-") and n.endswith(".rms")]
    return len(segs), sum(os.path.getsize(p) for p in segs)


def spool_gauges_match(r, srv, what):
    """ringmail_spool_segments/_bytes against the files in spool_dir. The DONE records
    may still be on their way: the gauges and the files agree once the writes are done."""
    def agree():
        g = scrape(srv.admin_port)
        return (g["ringmail_spool_segments"], g["ringmail_spool_bytes"]) == spool_files(srv.spool)
    got = rmtest.wait_until(agree, 10)
    g = scrape(srv.admin_port)
    r.check(what, got,
            ((g["ringmail_spool_segments"], g["ringmail_spool_bytes"]), spool_files(srv.spool)))


def relay_server(name, hop_port, **opts):
    port = rmtest.free_port()
    o = {"admin_listen": "%s:%d" % (rmtest.LOOPBACK, port), "reactors": "2", "workers": "2",
         "relayhost": "[%s]:%d" % (rmtest.LOOPBACK, hop_port)}
    o.update(opts)
    # its own working directory: a default maildir route never writes under the caller's
    srv = rmtest.Server(name=name, opts=o, hold=False,
                        cwd=rmtest.tempdir(prefix="rmtest-cwd-")).start()
    srv.admin_port = port
    return srv


def t_histograms_and_spool(r):
    """N messages relayed to a real smtp-sink: the commit histogram counts N, the
    residence and attempt histograms count the N deliveries, the queue is empty again,
    the spool gauges match the files."""
    n = 5
    sink = rmtest.Sink(name="sink-admin").start()
    srv = relay_server("histograms", sink.port)
    dest = 'destination="[%s]:%d"' % (rmtest.LOOPBACK, sink.port)
    before = scrape(srv.admin_port)
    r.eq("no commit observed yet", before["ringmail_commit_latency_seconds_count"], 0)
    r.eq("the queue is empty", before["ringmail_queue_messages"], 0)
    r.eq("no oldest message", before["ringmail_queue_oldest_message_age_seconds"], 0)
    r.check("a segment per reactor at start", before["ringmail_spool_segments"] >= 2,
            before["ringmail_spool_segments"])
    send_mail(srv.port, n)
    key = 'ringmail_delivery_recipients_total{result="delivered"}'
    m = rmtest.wait_until(
        lambda: (lambda m: m if m[key] >= n and m["ringmail_queue_messages"] == 0 else None)(
            scrape(srv.admin_port)), 20)
    m = m or scrape(srv.admin_port)
    r.eq("all delivered", m[key], n)
    r.eq("the sink has them", sink.count(), n)
    check_histogram(r, m, "ringmail_commit_latency_seconds", count=n)
    rows, hsum, _ = histogram(m, "ringmail_commit_latency_seconds")
    r.check("commit latency sum: > 0, under 10 s a message", 0 < hsum < 10 * n, hsum)
    check_histogram(r, m, "ringmail_queue_residence_seconds", count=n)
    check_histogram(r, m, "ringmail_delivery_attempt_duration_seconds", 'result="delivered"',
                    count=n)
    for res in ("deferred", "failed"):
        check_histogram(r, m, "ringmail_delivery_attempt_duration_seconds",
                        'result="%s"' % res, count=0)
    r.eq("queue gauge back to 0", m["ringmail_queue_messages"], 0)
    r.eq("oldest age 0 when empty", m["ringmail_queue_oldest_message_age_seconds"], 0)
    r.check("the destination is listed", "ringmail_destination_active_sessions{%s}" % dest in m,
            sorted(k for k in m if "destination" in k))
    r.eq("no deferrals for it", m.get("ringmail_destination_deferrals_total{%s}" % dest), 0)
    r.check("spool gauges > 0", m["ringmail_spool_segments"] > 0 and m["ringmail_spool_bytes"] > 0,
            (m["ringmail_spool_segments"], m["ringmail_spool_bytes"]))

    spool_gauges_match(r, srv, "spool segments and bytes match the files in spool_dir")
    st, _, body = rmtest.http_get(srv.admin_port, "/metrics")
    promtool_check(r, body, "after deliveries")
    r.eq("exit 0", srv.stop(), 0)
    sink.stop()


def t_queue_next_hop_down(r):
    """The next hop down: the queue gauge shows the messages, the oldest age grows, the
    destination's deferrals count; once the hop is up, everything drains to 0."""
    n = 3
    hop = rmtest.free_port()  # nobody listens there (yet)
    srv = relay_server("hopdown", hop, minimal_backoff_time="1s", maximal_backoff_time="1s",
                       smtp_connection_cache_time_limit="1s")
    dest = 'destination="[%s]:%d"' % (rmtest.LOOPBACK, hop)
    dkey = "ringmail_destination_deferrals_total{%s}" % dest
    send_mail(srv.port, n)
    m = rmtest.wait_until(
        lambda: (lambda m: m if m["ringmail_queue_messages"] == n and m.get(dkey, 0) >= n
                 else None)(scrape(srv.admin_port)), 15)
    m = m or scrape(srv.admin_port)
    r.eq("the queue gauge shows the messages", m["ringmail_queue_messages"], n)
    r.check("the destination's deferrals count them", m.get(dkey, 0) >= n,
            sorted((k, v) for k, v in m.items() if "destination" in k))
    r.check("deferred attempts observed",
            m['ringmail_delivery_attempt_duration_seconds_count{result="deferred"}'] >= 1,
            m['ringmail_delivery_attempt_duration_seconds_count{result="deferred"}'])
    r.eq("no residence observed: nothing finished", m["ringmail_queue_residence_seconds_count"],
         0)
    r.eq("nothing delivered", m['ringmail_delivery_recipients_total{result="delivered"}'], 0)
    a1 = m["ringmail_queue_oldest_message_age_seconds"]
    r.check("the oldest age is about how long ago they came", 0 < a1 < 30, a1)
    time.sleep(1.5)
    m2 = scrape(srv.admin_port)
    a2 = m2["ringmail_queue_oldest_message_age_seconds"]
    r.check("the oldest age grows", a2 >= a1 + 1.0, (a1, a2))
    r.check("deferrals go on counting with retries", m2[dkey] >= m[dkey], (m[dkey], m2[dkey]))
    st, _, body = rmtest.http_get(srv.admin_port, "/metrics")
    promtool_check(r, body, "next hop down")

    # a restart with the messages still queued: recovered messages and segments count
    r.eq("stopped with mail queued: exit 0", srv.stop(), 0)
    srv.start()
    m4 = rmtest.wait_until(
        lambda: (lambda m: m if m["ringmail_queue_messages"] == n else None)(
            scrape(srv.admin_port)), 10)
    m4 = m4 or scrape(srv.admin_port)
    r.eq("after a restart the recovered messages are counted", m4["ringmail_queue_messages"], n)
    a4 = m4["ringmail_queue_oldest_message_age_seconds"]
    # a recovered arrival has whole seconds
    r.check("their oldest age goes on from before the restart", a4 >= a2 - 1.0, (a2, a4))

    spool_gauges_match(r, srv, "recovered segments: the spool gauges match the files")

    sink = rmtest.Sink(port=hop, name="sink-late-admin").start()
    m3 = rmtest.wait_until(
        lambda: (lambda m: m if m["ringmail_queue_messages"] == 0 else None)(
            scrape(srv.admin_port)), 20)
    m3 = m3 or scrape(srv.admin_port)
    r.eq("queue gauge back to 0 once delivered", m3["ringmail_queue_messages"], 0)
    r.eq("oldest age back to 0", m3["ringmail_queue_oldest_message_age_seconds"], 0)
    r.eq("all delivered", m3['ringmail_delivery_recipients_total{result="delivered"}'], n)
    check_histogram(r, m3, "ringmail_queue_residence_seconds", count=n)
    rows, hsum, _ = histogram(m3, "ringmail_queue_residence_seconds")
    r.check("they waited at least 1.5 s each", hsum >= 1.5 * n, hsum)
    akey = "ringmail_destination_active_sessions{%s}" % dest
    r.check("the destination's active sessions gauge is there", akey in m3, sorted(m3))
    idle = rmtest.wait_until(lambda: scrape(srv.admin_port).get(akey) == 0, 10)
    r.check("and drops to 0 once the cached sessions close", idle,
            scrape(srv.admin_port).get(akey))
    r.eq("exit 0", srv.stop(), 0)
    sink.stop()


def version():
    out = subprocess.run([rmtest.binary(), "--version"], stdout=subprocess.PIPE,
                         timeout=30).stdout.decode()
    return out.split()[1]


def t_errors(r):
    srv = admin_server("errors")
    st, _, _ = rmtest.http_get(srv.admin_port, "/nope")
    r.eq("unknown path 404", st, 404)
    st, _, _ = rmtest.http_get(srv.admin_port, "/")
    r.eq("/ 404", st, 404)
    st, hdr, _ = rmtest.http_get(srv.admin_port, "/metrics", method="POST")
    r.eq("POST 405", st, 405)
    r.eq("405 says Allow: GET", hdr.get("allow"), "GET")
    st, _, _ = rmtest.http_get(srv.admin_port, "/healthz", method="HEAD")
    r.eq("HEAD 405", st, 405)
    out = raw(srv.admin_port, b"GARBAGE\r\n\r\n")
    r.check("a malformed request: 400", out.startswith("HTTP/1.1 400 "), out[:200])
    out = raw(srv.admin_port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    r.check("a head over 8 KiB: 431", out.startswith("HTTP/1.1 431 "), out[:200])
    out = raw(srv.admin_port, b"GET /healthz HTTP/1.0\n\n")
    r.check("HTTP/1.0 with bare LF lines: 200", out.startswith("HTTP/1.1 200 ") and
            out.endswith("\r\n\r\nok\n"), out[:300])
    st, _, _ = rmtest.http_get(srv.admin_port, "/healthz")
    r.eq("still serving", st, 200)
    r.eq("exit 0", srv.stop(), 0)


def t_slow_clients(r):
    srv = admin_server("slow")
    slow = socket.create_connection((rmtest.LOOPBACK, srv.admin_port), timeout=10)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # half a request, then silence
    t0 = time.monotonic()
    st, _, _ = rmtest.http_get(srv.admin_port, "/healthz", timeout=2)
    r.eq("/healthz answers while a client dawdles", st, 200)
    r.check("at once", time.monotonic() - t0 < 1.0, time.monotonic() - t0)
    # the silent client is closed after 2 s, with nothing sent
    slow.settimeout(6)
    t0 = time.monotonic()
    try:
        d = slow.recv(100)
    except OSError as e:
        d = e
    r.check("the slow client is closed after about 2 s", d == b"" and
            0.5 < time.monotonic() - t0 < 5, (d, time.monotonic() - t0))
    slow.close()

    # 16 silent clients take every slot: a 17th waits in the backlog for at most
    # the 2 s timeout, and is answered; the SMTP side is not held up meanwhile
    hogs = [socket.create_connection((rmtest.LOOPBACK, srv.admin_port), timeout=10)
            for _ in range(16)]
    time.sleep(0.3)
    t0 = time.monotonic()
    smtp = rmtest.Raw(srv.port)
    r.eq("SMTP greets while admin slots are full", smtp.greeting[0], 220)
    smtp.close()
    st, _, _ = rmtest.http_get(srv.admin_port, "/healthz", timeout=8)
    took = time.monotonic() - t0
    r.eq("the 17th client is answered", st, 200)
    r.check("within the read timeout", took < 5, took)
    for h in hogs:
        h.close()
    st, _, _ = rmtest.http_get(srv.admin_port, "/readyz")
    r.eq("and the endpoint is fine after", st, 200)
    r.eq("exit 0", srv.stop(), 0)


def t_token(r):
    d = rmtest.tempdir()
    tok = os.path.join(d, "admin.token")
    with open(tok, "w") as f:
        f.write("s3cret-Token_123\n")
    os.chmod(tok, 0o600)
    srv = admin_server("token", admin_token_file=tok)
    st, hdr, _ = rmtest.http_get(srv.admin_port, "/healthz")
    r.eq("no token: 401", st, 401)
    r.check("401 asks for a bearer token", hdr.get("www-authenticate", "").startswith("Bearer"),
            hdr)
    st, _, _ = rmtest.http_get(srv.admin_port, "/metrics", headers={"Authorization": "Bearer wrong"})
    r.eq("a wrong token: 401", st, 401)
    st, _, _ = rmtest.http_get(srv.admin_port, "/metrics", headers={"Authorization": "Bearer s3cret-Token_12"})
    r.eq("a prefix of the token: 401", st, 401)
    st, _, _ = rmtest.http_get(srv.admin_port, "/metrics", headers={"Authorization": "Basic czNjcmV0"})
    r.eq("another scheme: 401", st, 401)
    good = {"Authorization": "Bearer s3cret-Token_123"}
    st, _, _ = rmtest.http_get(srv.admin_port, "/healthz", headers=good)
    r.eq("the token: /healthz 200", st, 200)
    st, _, body = rmtest.http_get(srv.admin_port, "/metrics", headers=good)
    r.check("the token: /metrics 200", st == 200 and "ringmail_build_info" in body, st)
    st, _, _ = rmtest.http_get(srv.admin_port, "/nope", headers=good)
    r.eq("the token: unknown path 404", st, 404)
    r.check("refusals are logged", len(srv.events("admin_denied")) >= 4, srv.log()[-1500:])
    r.check("the token is not in the log", "s3cret" not in srv.log())
    r.check("auth=bearer logged", [e for e in srv.events("admin_listening")
                                   if e.get("auth") == "bearer"], srv.log()[-800:])
    r.eq("exit 0", srv.stop(), 0)


def run_bin(*args, timeout=60):
    p = subprocess.run([rmtest.binary()] + list(args), stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def t_bad_admin_listen(r):
    d = rmtest.tempdir()
    base = ["-o", "listen=127.0.0.1:%d" % rmtest.free_port(), "-o", "spool_dir=%s/spool" % d,
            "-o", "user=root"]
    for val, want in (("nonsense", "-o admin_listen: \"nonsense\" has no port"),
                      ("127.0.0.1:0", "-o admin_listen: \"127.0.0.1:0\": port \"0\" is not valid"),
                      ("127.0.0.1:1,127.0.0.1:2", "-o admin_listen: a list"),
                      ("::1:9025", "an IPv6 address must be written in brackets")):
        rc, out = run_bin(*base, "-o", "admin_listen=" + val)
        r.check("admin_listen=%s: exit 1 naming the key" % val, rc == 1 and want in out,
                (rc, out[-600:]))
    rc, out = run_bin("-t", "-o", "admin_listen=127.0.0.1:2525")
    r.check("admin_listen on the SMTP listener: exit 1", rc == 1 and
            "key 'admin_listen': 127.0.0.1:2525 is also in 'listen'" in out, (rc, out))

    # the port is taken: a fatal start-up error naming the key, the address and the errno
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind((rmtest.LOOPBACK, 0))
    busy.listen(1)
    bport = busy.getsockname()[1]
    try:
        rc, out = run_bin(*base, "-o", "admin_listen=127.0.0.1:%d" % bport)
    finally:
        busy.close()
    r.check("admin_listen in use: exit 1", rc == 1, (rc, out[-800:]))
    r.check("the message names key, address and error",
            "key 'admin_listen': 127.0.0.1:%d: Address already in use" % bport in out,
            out[-800:])
    r.check("it never started", "event=started" not in out, out[-800:])

    rc, out = run_bin(*base, "-o", "admin_listen=mail.example:9025")
    r.check("a name: exit 1, not resolved", rc == 1 and "key 'admin_listen': mail.example:9025: "
            "not an IP address" in out, (rc, out[-600:]))
    rc, out = run_bin(*base, "-o", "admin_listen=127.0.0.1:%d" % rmtest.free_port(), "-o",
                      "admin_token_file=%s/missing" % d)
    r.check("a missing token file: exit 1 naming the key", rc == 1 and
            "key 'admin_token_file': %s/missing: No such file or directory" % d in out,
            (rc, out[-600:]))
    empty = os.path.join(d, "empty.token")
    open(empty, "w").close()
    rc, out = run_bin(*base, "-o", "admin_listen=127.0.0.1:%d" % rmtest.free_port(), "-o",
                      "admin_token_file=%s" % empty)
    r.check("an empty token file: exit 1", rc == 1 and "key 'admin_token_file'" in out and
            "empty" in out, (rc, out[-600:]))
    # off: nothing is bound, and the server runs
    srv = rmtest.Server(name="off", opts={"admin_listen": ""}).start()
    r.check("admin_listen empty: no admin_listening line", not srv.events("admin_listening"),
            srv.log()[-800:])
    r.eq("exit 0", srv.stop(), 0)


def t_readyz_spool(r):
    if os.geteuid() != 0:
        print("   (not root: the tmpfs spool checks are skipped)", flush=True)
        return
    mnt = rmtest.tempdir(prefix="rmtest-admin-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    if p.returncode != 0:
        print("   (mount -t tmpfs failed: the tmpfs spool checks are skipped)", flush=True)
        return
    srv = None
    try:
        srv = admin_server("readyz", spool_dir=os.path.join(mnt, "spool"))
        st, _, _ = rmtest.http_get(srv.admin_port, "/readyz")
        r.eq("empty tmpfs: ready", st, 200)
        # fill the file system behind ringmail's back
        fill = os.path.join(mnt, "fill")
        with open(fill, "wb") as f:
            for _ in range(200):
                try:
                    f.write(b"\0" * 65536)
                    f.flush()
                except OSError:
                    break
        st, _, body = rmtest.http_get(srv.admin_port, "/readyz")
        r.check("full: 503 with the reason", st == 503 and "full" in body and
                body.endswith("\n") and body.count("\n") == 1, (st, body))
        samples = scrape(srv.admin_port)
        r.check("spool_free_bytes shows it", samples.get("ringmail_spool_free_bytes", 1e12)
                < 65536, samples.get("ringmail_spool_free_bytes"))
        os.unlink(fill)
        st, _, _ = rmtest.http_get(srv.admin_port, "/readyz")
        r.eq("space back: ready again", st, 200)
        st, _, _ = rmtest.http_get(srv.admin_port, "/healthz")
        r.eq("/healthz was never affected", st, 200)
        r.eq("exit 0", srv.stop(), 0)
    finally:
        if srv is not None and srv.running():
            srv.kill()
        for _ in range(5):
            if subprocess.run(["umount", mnt], timeout=20).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", mnt], timeout=20)


if __name__ == "__main__":
    rmtest.main([t_health_and_ready, t_metrics, t_delivery_counters, t_histograms_and_spool,
                 t_queue_next_hop_down, t_errors, t_slow_clients, t_token,
                 t_bad_admin_listen, t_readyz_spool])
