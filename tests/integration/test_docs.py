#!/usr/bin/python3
"""The man pages keep up with the code and docs/configuration.md:

- every configuration key (the `### \\`key\\`` headings of docs/configuration.md)
  has an `.It Ic key` entry in docs/man/ringmail.yaml.5, and the page names no
  key that does not exist;
- every key the binary knows (`ringmail -t -v`, from core/config.c's table) is
  in the page too;
- the configuration under EXAMPLES in ringmail.yaml.5 passes `ringmail -t`;
- every option and queue command of `ringmail --help` is in docs/man/ringmail.8.

Needs no peer tool; the checks that run the binary are skipped when it is not
built. The mandoc lint of both pages is a separate CTest test (man_lint_*)."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

SRC = rmtest.SRC
CONF_MD = os.path.join(SRC, "docs", "configuration.md")
MAN5 = os.path.join(SRC, "docs", "man", "ringmail.yaml.5")
MAN8 = os.path.join(SRC, "docs", "man", "ringmail.8")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def doc_keys():
    """Keys of docs/configuration.md, in order: its `### `key`` headings."""
    return re.findall(r"^### `([A-Za-z0-9_]+)`\s*$", read(CONF_MD), re.M)


def man_keys():
    """Keys with an entry in ringmail.yaml.5: `.It Ic key ...` lines in KEYS."""
    text = read(MAN5)
    m = re.search(r"^\.Sh KEYS$(.*?)^\.Sh ", text, re.M | re.S)
    section = m.group(1) if m else ""
    return re.findall(r"^\.It Ic ([A-Za-z0-9_]+)\b", section, re.M)


def binary():
    b = os.environ.get("RINGMAIL_BIN") or os.path.join(SRC, "build", "release", "ringmail")
    return b if os.path.isfile(b) and os.access(b, os.X_OK) else None


def roff_literal(block):
    """The text of a .Bd -literal block, with the few escapes the pages use undone."""
    out = []
    for line in block.splitlines():
        line = line.replace("\\&", "").replace("\\(dq", '"').replace("\\-", "-")
        out.append(line.replace("\\e", "\\"))
    return "\n".join(out) + "\n"


def t_headings_found(r):
    keys = doc_keys()
    # a sanity floor: if the heading format changes, this test must not pass vacuously
    r.check("docs/configuration.md has key headings (found %d)" % len(keys), len(keys) >= 50)
    r.eq("no key heading twice in docs/configuration.md",
         sorted(k for k in set(keys) if keys.count(k) > 1), [])


def t_every_doc_key_in_man(r):
    have = set(man_keys())
    missing = [k for k in doc_keys() if k not in have]
    r.eq("every key of docs/configuration.md has an .It Ic entry in ringmail.yaml.5",
         missing, [])


def t_no_stale_man_key(r):
    keys = set(doc_keys())
    stale = [k for k in man_keys() if k not in keys]
    r.eq("every .It Ic entry of ringmail.yaml.5 is a key of docs/configuration.md", stale, [])
    got = man_keys()
    r.eq("no key has two entries in ringmail.yaml.5",
         sorted(k for k in set(got) if got.count(k) > 1), [])


def t_binary_keys_in_man(r):
    b = binary()
    if b is None:
        print("skip: ringmail binary not built", flush=True)
        return
    p = subprocess.run([b, "-t", "-v"], capture_output=True, text=True, timeout=30)
    r.eq("ringmail -t -v exits 0", p.returncode, 0)
    # the dump, then the line "ringmail: configuration ... is valid"
    dumped = [k for k in re.findall(r"^([A-Za-z0-9_]+):", p.stdout, re.M) if k != "ringmail"]
    r.check("ringmail -t -v prints keys (found %d)" % len(dumped), len(dumped) >= 50)
    have = set(man_keys())
    r.eq("every key ringmail knows is in ringmail.yaml.5", [k for k in dumped if k not in have], [])


def t_example_is_valid(r):
    text = read(MAN5)
    m = re.search(r"^\.Sh EXAMPLES$.*?^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", text, re.M | re.S)
    r.check("ringmail.yaml.5 has an example configuration under EXAMPLES", m)
    b = binary()
    if not m or b is None:
        print("skip: ringmail binary not built", flush=True)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(roff_literal(m.group(1)))
        path = f.name
    try:
        p = subprocess.run([b, "-t", "-c", path], capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(path)
    r.eq("the EXAMPLES configuration passes ringmail -t", (p.returncode, p.stderr.strip()), (0, ""))


def t_usage_in_man8(r):
    man = read(MAN8)
    b = binary()
    if b is None:
        usage = "-c -o -t -v --version queue list flush show delete"
    else:
        usage = subprocess.run([b, "--help"], capture_output=True, text=True, timeout=30).stdout
    flags = sorted(set(re.findall(r"(?<![\w-])-([a-z])\b", usage)))
    r.check("ringmail --help names options (found %s)" % flags, len(flags) >= 4)
    for fl in flags:
        r.check("ringmail.8 documents -%s" % fl,
                re.search(r"^\.It Fl %s\b" % fl, man, re.M), "no '.It Fl %s'" % fl)
    for long_opt in sorted(set(re.findall(r"--([a-z]+)", usage))):
        r.check("ringmail.8 documents --%s" % long_opt,
                re.search(r"^\.It .*Fl -%s\b" % long_opt, man, re.M), "no '.It Fl -%s'" % long_opt)
    for sub in ("list", "show", "flush", "delete", "hold", "release"):
        r.check("ringmail.8 documents queue %s" % sub,
                re.search(r"^\.It Cm queue %s\b" % sub, man, re.M), "no '.It Cm queue %s'" % sub)


def t_signals_in_man8(r):
    man = read(MAN8)
    for sig in ("SIGTERM", "SIGINT", "SIGHUP"):
        r.check("ringmail.8 SIGNALS names %s" % sig,
                re.search(r"^\.Sh SIGNALS$.*\b%s\b.*^\.Sh " % sig, man, re.M | re.S))


if __name__ == "__main__":
    rmtest.main([t_headings_found, t_every_doc_key_in_man, t_no_stale_man_key,
                 t_binary_keys_in_man, t_example_is_valid, t_usage_in_man8, t_signals_in_man8])
