#!/usr/bin/python3
"""The command line: -t with good and bad files, -o errors, --version, queue list on nothing."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

BIN = rmtest.binary()
D = rmtest.tempdir()

GOOD = """\
# a good configuration
listen:
  - "127.0.0.1:2525"
  - "[::1]:2525"
myhostname: mx1.example.net
spool_dir: "%s/spool"
durability: fsync
reactors: 2
message_size_limit: 10M
max_line_length: 0
command_line_limit: 2048
smtpd_recipient_limit: 100
max_connections: 5000
bare_newline: normalize
smtpd_timeout: 300s
smtpd_data_timeout: 3m
smtpd_greeting_delay: 0ms
spool_segment_size: 64M
""" % D

# (name, text, line of the error, key named in the error)
BAD = [
    ("unknown_key", "myhostname: mx.example.net\nlisten: \"127.0.0.1:2525\"\nno_such_key: 1\n",
     3, "no_such_key"),
    ("bad_duration", "myhostname: mx.example.net\n\nsmtpd_timeout: 300\n", 3, "smtpd_timeout"),
    ("bad_enum", "durability: sometimes\n", 1, "durability"),
    ("bad_port", "myhostname: a.example\nreactors: 1\nlisten:\n  - \"127.0.0.1:70000\"\n", 4,
     "listen"),
    ("bad_number", "reactors: many\n", 1, "reactors"),
    ("out_of_range", "\n\ncommand_line_limit: 100\n", 3, "command_line_limit"),
    ("bad_size", "message_size_limit: 10X\n", 1, "message_size_limit"),
    ("duplicate_key", "reactors: 1\nreactors: 2\n", 2, "reactors"),
]


def run(*args, timeout=30):
    p = subprocess.run([BIN] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def write(name, text):
    p = os.path.join(D, name + ".yml")
    with open(p, "w") as f:
        f.write(text)
    return p


def t_good(r):
    p = write("good", GOOD)
    rc, out, err = run("-t", "-c", p)
    r.check("-t good file: exit 0", rc == 0, (rc, out, err))
    rc, out, err = run("-t", "-v", "-c", p)
    r.check("-t -v good file: exit 0 and dumps the values", rc == 0 and "mx1.example.net" in out
            and "smtpd_data_timeout" in out, (rc, out[:1500], err))
    rc, out, err = run("-t")
    r.check("-t built-in defaults: exit 0", rc == 0, (rc, out, err))
    example = os.path.join(rmtest.SRC, "deploy", "ringmail.yml")
    if os.path.exists(example):
        rc, out, err = run("-t", "-c", example)
        r.check("-t deploy/ringmail.yml: exit 0", rc == 0, (rc, out, err))
    rc, out, err = run("-t", "-c", p, "-o", "reactors=3", "-o", "durability=none")
    r.check("-t with good -o overrides: exit 0", rc == 0, (rc, out, err))


def t_bad_files(r):
    for name, text, line, key in BAD:
        p = write(name, text)
        rc, out, err = run("-t", "-c", p)
        r.eq("-t %s: exit 1" % name, rc, 1)
        want = "%s:%d: key '%s'" % (p, line, key)
        r.check("-t %s: message names %s:%d: key '%s'" % (name, os.path.basename(p), line, key),
                want in err, err.strip())
    p = write("syntax", "listen: [\"127.0.0.1:25\"\nmyhostname: x\n")
    rc, out, err = run("-t", "-c", p)
    r.check("-t YAML syntax error: exit 1, names the file", rc == 1 and p in err, (rc, err))
    rc, out, err = run("-t", "-c", os.path.join(D, "does-not-exist.yml"))
    r.check("-t missing file: exit 1", rc == 1 and "does-not-exist.yml" in err, (rc, err))
    # a bad file does not start a server either
    rc, out, err = run("-c", write("bad_run", "durability: sometimes\n"))
    r.check("run with a bad file: exit 1", rc == 1 and "durability" in err, (rc, err))


def t_bad_overrides(r):
    for kv, key in (("smtpd_timeout=5", "smtpd_timeout"), ("no_such_key=1", "no_such_key"),
                    ("reactors=-1", "reactors"), ("listen=127.0.0.1", "listen"),
                    ("bare_newline=maybe", "bare_newline")):
        rc, out, err = run("-t", "-o", kv)
        r.check("-o %s: exit 1 naming key '%s'" % (kv, key), rc == 1 and key in err,
                (rc, err.strip()))
    rc, out, err = run("-t", "-o", "novalue")
    r.check("-o without '=': exit 1", rc == 1, (rc, err))


def t_version(r):
    rc, out, err = run("--version")
    r.eq("--version exit 0", rc, 0)
    r.check("--version names ringmail", re.search(r"^ringmail \S+", out, re.M), out)
    r.check("--version: tls BoringSSL", re.search(r"^tls: .*BoringSSL", out, re.M | re.I), out)
    if "libc malloc" in out:
        print("   (sanitizer or non-jemalloc build: jemalloc check skipped)", flush=True)
    else:
        r.check("--version: allocator jemalloc", re.search(r"^allocator: jemalloc", out, re.M),
                out)
    print("   " + out.strip().replace("\n", "\n   "), flush=True)


def t_usage(r):
    rc, out, err = run("--bogus-option")
    r.check("unknown option: exit 2 with usage", rc == 2 and "usage" in err, (rc, err))
    rc, out, err = run("extra-arg")
    r.check("stray argument: exit 2", rc == 2, (rc, err))
    rc, out, err = run("queue", "frobnicate")
    r.check("queue unknown subcommand: exit 2", rc == 2, (rc, err))
    rc, out, err = run("--help")
    r.check("--help: exit 0", rc == 0 and "usage" in out, (rc, out))


def t_queue_empty(r):
    spool = os.path.join(D, "empty-spool")
    rc, out, err = run("queue", "list", "-o", "spool_dir=%s" % spool)
    r.check("queue list, missing spool: exit 0, 'Mail queue is empty'",
            rc == 0 and "Mail queue is empty" in out, (rc, out, err))
    os.makedirs(spool)
    rc, out, err = run("queue", "list", "-o", "spool_dir=%s" % spool)
    r.check("queue list, empty spool: 'Mail queue is empty'",
            rc == 0 and "Mail queue is empty" in out, (rc, out, err))
    rc, out, err = run("-o", "spool_dir=%s" % spool, "queue", "list")
    r.check("options before the subcommand work too", rc == 0 and "empty" in out, (rc, out, err))


def main():
    rmtest.main([t_good, t_bad_files, t_bad_overrides, t_version, t_usage, t_queue_empty])


if __name__ == "__main__":
    main()
