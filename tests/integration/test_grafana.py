#!/usr/bin/python3
"""deploy/grafana/ringmail.json, the Grafana dashboard, against a live /metrics.

The dashboard is valid JSON with the expected variables; every panel (rows
aside) has targets with a PromQL expr; every metric name an expr (or the
instance variable's query) uses is one a running ringmail exports, and every
label it groups by is one those metrics carry. A dashboard that names a metric
that was renamed or never existed draws an empty panel without any error, so
this is the only place such a mistake shows.

When promtool is installed (Debian's prometheus package), every expr is also
parsed by it (`promtool check rules` on a generated rule file).
"""
import http.client
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

DASHBOARD = os.path.join(rmtest.SRC, "deploy", "grafana", "ringmail.json")
README = os.path.join(rmtest.SRC, "deploy", "grafana", "README.md")

METRIC = re.compile(r"\bringmail_[a-zA-Z0-9_:]*")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')
# labels Prometheus adds at scrape time, not ringmail
TARGET_LABELS = {"instance", "job"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def load():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(d):
    """Every panel, the ones inside collapsed rows too."""
    out = []
    for p in d.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def exprs(d):
    """[(where, expr)] of every panel target and of the query variables."""
    out = []
    for p in all_panels(d):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append(("panel %r %s" % (p.get("title"), t.get("refId")), t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append(("variable %s" % v.get("name"), q))
    return out


def parse_scrape(text):
    """({sample name: set of label names}, {family: type})."""
    samples, types = rmtest.parse_metrics(text)
    names = {}
    for key in samples:
        name, _, labels = key.partition("{")
        names.setdefault(name, set()).update(LABEL.findall(labels))
    return names, types


def exported(name, names, types):
    """The name a sample has, or a histogram/summary family's suffixed one."""
    if name in names:
        return True
    for suf in HIST_SUFFIXES:
        if name.endswith(suf) and types.get(name[:-len(suf)]) in ("histogram", "summary"):
            return True
    return False


def labels_of(name, names):
    if name in names:
        return names[name]
    for suf in HIST_SUFFIXES:
        if name.endswith(suf):
            return names.get(name[:-len(suf)], set()) | {"le", "quantile"}
    return set()


def t_structure(r):
    d = load()
    r.check("schemaVersion is about 39", 36 <= d.get("schemaVersion", 0) <= 41,
            d.get("schemaVersion"))
    r.eq("uid", d.get("uid"), "ringmail")
    r.check("id is null (importable into any Grafana)", d.get("id") is None, d.get("id"))
    vs = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = vs.get("datasource", {})
    r.check("a datasource variable of Prometheus data sources",
            ds.get("type") == "datasource" and ds.get("query") == "prometheus", ds)
    inst = vs.get("instance", {})
    q = inst.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    r.check("an instance variable from label_values(ringmail_build_info, instance)",
            inst.get("type") == "query"
            and re.sub(r"\s", "", q or "") == "label_values(ringmail_build_info,instance)",
            inst)
    r.check("the instance variable queries ${datasource}",
            (inst.get("datasource") or {}).get("uid") == "${datasource}", inst.get("datasource"))

    panels = all_panels(d)
    graphs = [p for p in panels if p.get("type") != "row"]
    rows = [p.get("title") for p in panels if p.get("type") == "row"]
    r.check("has rows", len(rows) >= 5, rows)
    r.check("has panels", len(graphs) >= 20, len(graphs))
    ids = [p.get("id") for p in panels]
    r.eq("panel ids unique", len(ids), len(set(ids)))
    for p in graphs:
        title = p.get("title")
        ts = p.get("targets") or []
        r.check("panel %r has targets, each with an expr" % title,
                ts and all(isinstance(t.get("expr"), str) and t["expr"].strip() for t in ts), ts)
        r.check("panel %r uses ${datasource}" % title,
                (p.get("datasource") or {}).get("uid") == "${datasource}"
                and all((t.get("datasource") or {}).get("uid") == "${datasource}" for t in ts),
                p.get("datasource"))
        refs = [t.get("refId") for t in ts]
        r.eq("panel %r refIds unique" % title, len(refs), len(set(refs)))
        g = p.get("gridPos") or {}
        r.check("panel %r has a gridPos within 24 columns" % title,
                all(k in g for k in "hwxy") and g["x"] + g["w"] <= 24, g)

    # every selector of a ringmail metric is filtered by $instance; every
    # counter is read through rate(...[5m])
    for where, e in exprs(d):
        if where.startswith("variable"):
            continue
        sel = re.findall(r'\b(ringmail_[a-zA-Z0-9_:]*)(\{[^}]*\})?', e)
        r.check("%s: every selector has instance=~\"$instance\"" % where,
                sel and all('instance=~"$instance"' in (s or "") for _, s in sel), e)
        counters = [n for n, _ in sel if n.endswith("_total")]
        wrapped = re.findall(r'rate\(\s*ringmail_[a-zA-Z0-9_:]*_total\{[^}]*\}\[5m\]\s*\)', e)
        r.check("%s: counters only inside rate(...[5m])" % where,
                len(counters) == len(wrapped), e)

    with open(README, encoding="utf-8") as f:
        readme = f.read()
    for t in rows:
        r.check("README describes the row %r" % t, t in readme)


def t_metrics_exist(r):
    d = load()
    used = {}  # metric name -> where
    by = []    # (where, expr metrics, labels grouped by)
    for where, e in exprs(d):
        ms = set(METRIC.findall(e))
        r.check("%s names a ringmail metric" % where, ms, e)
        for m in ms:
            used.setdefault(m, where)
        for group in BY.findall(e):
            by.append((where, ms, {x.strip() for x in group.split(",") if x.strip()}))
    print("   the dashboard uses %d metrics" % len(used), flush=True)

    port = rmtest.free_port()
    # delivering to a next hop that is down: the message stays queued and deferred, so
    # the per-destination series (labelled by that hop) are exported too
    srv = rmtest.Server(name="grafana", hold=False, cwd=rmtest.tempdir(prefix="rmtest-cwd-"),
                        opts={"admin_listen": "127.0.0.1:%d" % port, "reactors": "2",
                              "workers": "2",
                              "relayhost": "[127.0.0.1]:%d" % rmtest.free_port()}).start()
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=30)
    try:
        s.ehlo("client.example")
        s.sendmail("from@example.org", ["to@example.net"], b"Subject: grafana\r\n\r\nhello\r\n")
    finally:
        s.quit()

    def scrape():
        c = http.client.HTTPConnection(rmtest.LOOPBACK, port, timeout=5)
        try:
            c.request("GET", "/metrics")
            resp = c.getresponse()
            body = resp.read().decode("utf-8", "replace")
        finally:
            c.close()
        if resp.status != 200:
            raise RuntimeError("/metrics: %d %s" % (resp.status, body))
        return body

    def received():
        body = scrape()
        m = re.search(r"^ringmail_messages_received_total (\S+)$", body, re.M)
        # and a worker has taken its delivery: its destination is listed
        return body if m and float(m.group(1)) >= 1 and re.search(
            r"^ringmail_destination_deferrals_total\{", body, re.M) else None

    body = rmtest.wait_until(received, 10) or scrape()
    names, types = parse_scrape(body)
    r.check("the message was counted", received() is not None,
            [line for line in body.splitlines() if "messages_received" in line])

    for m in sorted(used):
        r.check("%s is exported (used by %s)" % (m, used[m]), exported(m, names, types),
                sorted(names))
    for where, ms, labels in by:
        have = set(TARGET_LABELS)
        for m in ms:
            have |= labels_of(m, names)
        r.check("%s: groups by labels the metrics carry (%s)" % (where, ", ".join(sorted(labels))),
                labels <= have, sorted(labels - have))
    r.eq("exit 0", srv.stop(), 0)


def t_promtool(r):
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if not promtool:
        print("   (promtool not installed: the PromQL parse is skipped; "
              "apt-get install prometheus)", flush=True)
        return
    # a rule file is YAML, and JSON is YAML: one recording rule per panel expr
    # (label_values() of the instance variable is Grafana's, not PromQL)
    rules = [{"record": "dashboard:expr_%d" % i, "expr": e}
             for i, (where, e) in enumerate(exprs(load())) if where.startswith("panel")]
    path = os.path.join(rmtest.tempdir(), "dashboard-rules.yml")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    p = subprocess.run([promtool, "check", "rules", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    r.check("promtool parses every expr", p.returncode == 0,
            p.stdout.decode(errors="replace"))


if __name__ == "__main__":
    rmtest.main([t_structure, t_metrics_exist, t_promtool])
