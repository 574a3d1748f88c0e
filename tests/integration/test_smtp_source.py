#!/usr/bin/python3
"""ringmail against Postfix's smtp-source: 20 sessions, 5000 messages of 1 KiB.

smtp-source must finish with exit 0; after SIGTERM (which flushes the logs)
there must be 5000 event=received lines and `ringmail queue list` must report
5000 Requests, each queue id of the log present once.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

SMTP_SOURCE = rmtest.need_tool("smtp-source")
N = int(os.environ.get("RMTEST_SMTP_SOURCE_N", "5000"))
srv = None


def run_source(args, timeout=150):
    a = [SMTP_SOURCE] + args + ["%s:%d" % (rmtest.LOOPBACK, srv.port)]
    t0 = time.monotonic()
    p = subprocess.run(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), time.monotonic() - t0


def t_source(r):
    rc, out, dt = run_source(["-s", "20", "-m", str(N), "-l", "1024", "-f", "src@example.org",
                              "-t", "dst@example.net", "-M", "client.example"])
    print("   smtp-source -s 20 -m %d -l 1024: %.2fs (%.0f msg/s)" % (N, dt, N / dt), flush=True)
    r.check("smtp-source exit 0", rc == 0, out[-2000:])
    r.check("smtp-source printed no error", "fatal" not in out and "error" not in out.lower(),
            out[-2000:])


def t_source_reuse(r):
    # -d: many messages per session (RSET between them)
    rc, out, dt = run_source(["-d", "-s", "5", "-m", "500", "-l", "4096", "-r", "3",
                              "-f", "src@example.org", "-t", "dst@example.net",
                              "-M", "client.example"])
    print("   smtp-source -d -s 5 -m 500 -r 3: %.2fs" % dt, flush=True)
    r.check("smtp-source -d exit 0", rc == 0, out[-2000:])


def t_counts(r):
    total = N + 500
    r.eq("server exit 0 on SIGTERM", srv.stop(), 0)
    recv = srv.events("received")
    r.eq("event=received lines", len(recv), total)
    qids = [e.get("qid", "").upper() for e in recv]
    r.eq("queue ids in the log are unique", len(set(qids)), len(qids))
    sizes_ok = all(int(e.get("size", "0")) >= 1024 for e in recv)
    r.check("every logged size >= 1024", sizes_ok, "")
    three = sum(1 for e in recv if e.get("nrcpt") == "3")
    r.eq("messages with nrcpt=3 (from -r 3)", three, 500)
    q = srv.queue_list(timeout=120)
    r.eq("queue list exit 0", q.rc, 0)
    r.eq("queue list: Requests", q.requests, total)
    missing = [x for x in qids if x not in q]
    r.check("queue list has every logged id", not missing, missing[:5])
    stopped = srv.events("stopped")
    r.check("event=stopped messages=%d" % total,
            stopped and stopped[-1].get("messages") == str(total), stopped)


def t_log_plain_file(r):
    """stderr on a plain file (not O_APPEND, as `ringmail 2>file` opens it): no line lost.

    The reactors write their log buffers with io_uring at the current file
    position (offset -1); two reactors writing at once can overwrite each
    other's lines on such a file."""
    global srv
    srv = rmtest.Server(opts={"reactors": "2", "durability": "none"}, name="plainlog",
                        log_append=False).start()
    n = 5000
    rc, out, dt = run_source(["-s", "20", "-m", str(n), "-l", "1024", "-M", "client.example"])
    r.check("smtp-source exit 0", rc == 0, out[-2000:])
    r.eq("server exit 0", srv.stop(), 0)
    recv = len(srv.events("received"))
    r.eq("event=received lines with stderr on a non-append file", recv, n)
    r.eq("queue list Requests", srv.queue_list(timeout=120).requests, n)


def main():
    global srv
    srv = rmtest.Server(opts={"reactors": "2"}, name="source").start()
    rmtest.main([t_source, t_source_reuse, t_counts, t_log_plain_file])


if __name__ == "__main__":
    main()
