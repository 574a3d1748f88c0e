#!/usr/bin/python3
"""Queue control on the admin endpoint (/queue) and `ringmail queue` using it.

One ringmail relays to a next hop that is down (a free port nobody listens
on), so what it accepts defers: GET /queue lists it with every field, each
filter narrows it, GET /queue/QID (and ?body=1) shows one message, errors
answer JSON with the right status. Then one message is held and another
deleted, Postfix's smtp-sink starts on the next hop's port and a flush
delivers the others but not the held one (the sink's dump files say so);
ringmail restarts and the message is still held; a release delivers it
exactly once; the deleted one never arrives. The CLI runs against the same
server (exit codes, output), offline when nothing answers, and a second
server requires its bearer token.
"""
import json
import os
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

EXPECT_MSG = {"qid", "arrival_time", "age", "size", "sender", "client", "helo", "held",
              "recipients"}
EXPECT_RCPT = {"address", "state", "attempts", "next_attempt", "last_reply"}


def send(port, sender, rcpts, subject):
    s = smtplib.SMTP(rmtest.LOOPBACK, port, local_hostname="client.example", timeout=30)
    try:
        s.sendmail(sender, rcpts, ("Subject: %s\r\n\r\nbody of %s\r\n" % (subject, subject))
                   .encode())
    finally:
        s.quit()


def get(srv, path, method="GET", headers=None):
    st, hdr, body = rmtest.http_get(srv.admin_port, path, method=method, headers=headers)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return st, hdr, doc


def qids(doc):
    return sorted(m["qid"] for m in doc["messages"])


def cli(srv, *args, spool=None, admin=None, extra=()):
    a = [srv.bin, "queue"] + list(args) + [
        "-o", "spool_dir=%s" % (spool or srv.spool),
        "-o", "admin_listen=%s" % (admin if admin is not None
                                    else "%s:%d" % (rmtest.LOOPBACK, srv.admin_port))]
    a += list(extra)
    p = subprocess.run(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def sink_subjects(sink):
    out = []
    for d in sink.dumps():
        if d.get("data") is None:
            continue  # a transaction in progress: its dump file is not whole yet
        for line in d["data"].decode("utf-8", "replace").splitlines():
            if line.startswith("Subject: "):
                out.append(line[9:].strip())
    return sorted(out)


def t_queue(r):
    sink_port = rmtest.free_port()
    admin_port = rmtest.free_port()
    srv = rmtest.Server(name="queue", hold=False, opts={
        "admin_listen": "%s:%d" % (rmtest.LOOPBACK, admin_port),
        "reactors": "2", "workers": "2",
        "relayhost": "[%s]:%d" % (rmtest.LOOPBACK, sink_port),
        "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"}).start()
    srv.admin_port = admin_port

    plan = [("m1", "alice@example.org", ["a@down.example"]),
            ("m2", "bob@example.org", ["b@other.example", "c@sub.down.example"]),
            ("m3", "carol@example.org", ["d@other.example"]),
            ("m4", "", ["e@down.example"]),
            ("m5", "dave@example.org", ["f@other.example"])]
    for subj, s, rc in plan:
        send(srv.port, s, rc, subj)
    ids = {}

    def all_deferred():
        st, _, doc = get(srv, "/queue")
        if st != 200 or doc["count"] != 5:
            return None
        if any(rc["state"] != "deferred" for m in doc["messages"] for rc in m["recipients"]):
            return None
        return doc
    doc = rmtest.wait_until(all_deferred, 30, 0.2)
    r.check("GET /queue lists the 5 deferred messages", doc is not None,
            get(srv, "/queue")[2])
    if doc is None:
        return
    by_sender = {m["sender"]: m for m in doc["messages"]}
    for subj, s, rc in plan:
        ids[subj] = by_sender[s]["qid"]
    m1 = by_sender["alice@example.org"]
    r.eq("message fields", set(m1.keys()), EXPECT_MSG)
    r.eq("recipient fields", set(m1["recipients"][0].keys()), EXPECT_RCPT)
    r.eq("sender, client, helo", (m1["sender"], m1["client"], m1["helo"]),
         ("alice@example.org", "127.0.0.1", "client.example"))
    r.check("size and arrival", m1["size"] > 30 and abs(m1["arrival_time"] - time.time()) < 120,
            m1)
    r.check("age in seconds", 0 <= m1["age"] < 120, m1["age"])
    rc1 = m1["recipients"][0]
    r.eq("recipient address and state", (rc1["address"], rc1["state"], m1["held"]),
         ("a@down.example", "deferred", False))
    r.check("attempts, next attempt in about an hour, last reply",
            rc1["attempts"] >= 1 and rc1["next_attempt"] > time.time() + 3000 and
            "4.4.1" in (rc1["last_reply"] or ""), rc1)
    r.eq("null sender listed as \"\"", by_sender[""]["recipients"][0]["address"],
         "e@down.example")
    r.eq("content type", rmtest.http_get(admin_port, "/queue")[1].get("content-type"),
         "application/json")

    # ---- filters ----
    def sel(q):
        st, _, d = get(srv, "/queue?" + q)
        return (st, qids(d)) if st == 200 else (st, d)
    r.eq("domain= exact or suffix", sel("domain=down.example"),
         (200, sorted([ids["m1"], ids["m2"], ids["m4"]])))
    st, _, d = get(srv, "/queue?domain=down.example")
    m2 = [m for m in d["messages"] if m["qid"] == ids["m2"]][0]
    r.eq("domain= lists the matching recipients only",
         [x["address"] for x in m2["recipients"]], ["c@sub.down.example"])
    r.eq("domain= case-insensitive", sel("domain=OTHER.Example")[1],
         sorted([ids["m2"], ids["m3"], ids["m5"]]))
    r.eq("domain= not a partial label", sel("domain=own.example"), (200, []))
    r.eq("sender= substring, case-insensitive", sel("sender=ALICE"), (200, [ids["m1"]]))
    r.eq("sender=%40 decoded", sel("sender=bob%40example"), (200, [ids["m2"]]))
    r.eq("sender=<> the null sender", sel("sender=%3C%3E"), (200, [ids["m4"]]))
    r.eq("min_age=1h: none", sel("min_age=1h"), (200, []))
    r.eq("max_age=1h: all", len(sel("max_age=1h")[1]), 5)
    r.eq("min_age=0s&max_age=10m: all", len(sel("min_age=0s&max_age=10m")[1]), 5)
    r.eq("state=deferred: all", len(sel("state=deferred")[1]), 5)
    r.eq("state=held: none", sel("state=held"), (200, []))
    st, _, d = get(srv, "/queue?limit=2")
    r.eq("limit=2 and truncated", (st, d["count"], len(d["messages"]), d["truncated"]),
         (200, 2, 2, True))
    r.eq("not truncated without a limit", get(srv, "/queue")[2]["truncated"], False)
    for q, why in (("min_age=5x", "min_age"), ("colour=red", "unknown filter"),
                   ("state=gone", "state"), ("limit=0", "limit"),
                   ("domain", "domain"), ("sender&domain", "sender")):
        st, hdr, d = get(srv, "/queue?" + q)
        r.check("400 for %s" % q, st == 400 and why in d.get("error", "") and
                hdr.get("content-type") == "application/json", (st, d))

    # ---- one message ----
    st, _, d = get(srv, "/queue/" + ids["m1"])
    r.check("GET /queue/QID", st == 200 and d["qid"] == ids["m1"] and "body" not in d and
            d["recipients"][0]["address"] == "a@down.example", (st, d))
    st, _, d = get(srv, "/queue/%s?body=1" % ids["m1"].lower())
    r.check("GET /queue/QID?body=1: the stored message",
            st == 200 and "Subject: m1\r\n" in d.get("body", "") and
            "body of m1" in d["body"] and d["body"].startswith("Received: "), (st, d))
    st, _, d = get(srv, "/queue/00000000000000AA")
    r.check("unknown qid: 404 JSON", st == 404 and "not in the queue" in d["error"], (st, d))
    r.eq("not a qid: 404", get(srv, "/queue/nonsense")[0], 404)
    st, hdr, d = get(srv, "/queue/" + ids["m1"], method="PUT")
    r.check("PUT: 405 with Allow", st == 405 and hdr.get("allow") == "GET, DELETE", (st, hdr))
    r.eq("GET /queue/QID/hold: 405", get(srv, "/queue/%s/hold" % ids["m1"])[0], 405)
    r.eq("POST /queue: 405", get(srv, "/queue", method="POST")[0], 405)
    r.eq("filtered delete of everything refused",
         get(srv, "/queue/delete", method="POST")[0], 400)

    # ---- the CLI, online ----
    rc, out, err = cli(srv, "list")
    q = rmtest.Queue(out, rc, err)
    r.check("queue list: exit 0, the 5 messages", rc == 0 and len(q) == 5 and
            all(ids[k] in q for k in ids), (rc, out, err))
    r.check("queue list: deferral reasons in parentheses", "(4.4.1 " in out, out)
    r.check("queue list: online, nothing said on stderr", err == "", err)
    rc, out, err = cli(srv, "list", "--json")
    r.check("queue list --json", rc == 0 and json.loads(out)["count"] == 5, (rc, out[:300]))
    rc, out, err = cli(srv, "show", ids["m1"])
    r.check("queue show", rc == 0 and "*** MESSAGE CONTENTS %s ***" % ids["m1"] in out and
            "recipient: a@down.example" in out and "state: deferred" in out and
            "Subject: m1" in out, (rc, out, err))
    rc, out, err = cli(srv, "show", "00000000000000AA")
    r.check("queue show unknown: exit 1", rc == 1 and "not in the queue" in err, (rc, err))
    rc, out, err = cli(srv, "hold", "00000000000000AA")
    r.check("queue hold unknown: exit 1", rc == 1 and "404" in err, (rc, err))
    rc, out, err = cli(srv, "hold", "xyz")
    r.eq("queue hold xyz: usage, exit 2", rc, 2)
    rc, out, err = cli(srv, "hold")
    r.eq("queue hold without an id: exit 2", rc, 2)

    # ---- hold m3 (HTTP), delete m5 (CLI) ----
    st, _, d = get(srv, "/queue/%s/hold" % ids["m3"], method="POST")
    r.check("POST /queue/QID/hold", st == 200 and d["deliveries"] == 1 and
            d["action"] == "hold" and d["qid"] == ids["m3"], (st, d))
    marker = os.path.join(srv.spool, "hold", ids["m3"])
    r.check("the hold marker is written", os.path.exists(marker))
    r.check("queue_hold logged", srv.wait_events("queue_hold",
                                                  lambda e: e.get("qid") == ids["m3"]))
    st, _, d = get(srv, "/queue/" + ids["m3"])
    r.check("held: held true, state held", d["held"] and
            d["recipients"][0]["state"] == "held", d)
    r.eq("state=held filter", sel("state=held"), (200, [ids["m3"]]))
    rc, out, err = cli(srv, "list")
    r.check("queue list marks the held message with '!'",
            ("%s!" % ids["m3"]) in out and ("%s!" % ids["m1"]) not in out, out)
    st, _, d = get(srv, "/queue/%s/flush" % ids["m3"], method="POST")
    r.check("flush of a held message: 409", st == 409 and "hold" in d["error"], (st, d))
    st, _, d = get(srv, "/queue/%s/release" % ids["m1"], method="POST")
    r.check("release of a message not held: 409", st == 409, (st, d))
    rc, out, err = cli(srv, "delete", ids["m5"])
    r.check("queue delete: exit 0", rc == 0 and ids["m5"] in out and "1 delivery" in out,
            (rc, out, err))
    r.check("queue_delete logged", srv.wait_events("queue_delete",
                                                    lambda e: e.get("qid") == ids["m5"]))
    st, _, d = get(srv, "/queue/" + ids["m5"])
    r.eq("deleted: 404", st, 404)
    rc, out, err = cli(srv, "delete", ids["m5"])
    r.check("queue delete again: exit 1", rc == 1 and "not in the queue" in err, (rc, err))

    # ---- the next hop comes up: flush delivers all but the held one ----
    sink = rmtest.Sink(port=sink_port).start()
    rc, out, err = cli(srv, "flush")
    r.check("queue flush: exit 0, 3 deliveries", rc == 0 and "flush: 3 deliveries" in out,
            (rc, out, err))
    rmtest.wait_until(lambda: len(sink_subjects(sink)) >= 3, 30)
    time.sleep(1.0)
    r.eq("the sink got m1, m2 and m4 only", sink_subjects(sink), ["m1", "m2", "m4"])
    st, _, d = get(srv, "/queue")
    r.eq("only the held message is left", qids(d), [ids["m3"]])
    r.eq("it is still held", d["messages"][0]["held"], True)

    # ---- restart: still held ----
    r.eq("stop: exit 0", srv.stop(), 0)
    srv.start()
    r.check("the hold is recovered", srv.wait_events("hold_recovered",
                                                      lambda e: e.get("held") == "1"),
            srv.log()[-2000:])
    d = rmtest.wait_until(lambda: get(srv, "/queue")[2]["count"] == 1 and
                          get(srv, "/queue")[2], 20, 0.2)
    r.check("after the restart: listed, held", d and d["messages"][0]["qid"] == ids["m3"] and
            d["messages"][0]["held"] and
            d["messages"][0]["recipients"][0]["state"] == "held", d)
    time.sleep(1.0)
    r.eq("nothing more delivered after the restart", sink_subjects(sink), ["m1", "m2", "m4"])
    rc, out, err = cli(srv, "flush")
    r.check("flush does not release it", rc == 0 and "flush: 0 deliveries" in out, (rc, out))

    # ---- release: delivered exactly once ----
    rc, out, err = cli(srv, "release", ids["m3"])
    r.check("queue release: exit 0", rc == 0 and "release: %s: 1 delivery" % ids["m3"] in out,
            (rc, out, err))
    r.check("the marker is removed", not os.path.exists(marker))
    r.check("queue_release logged", srv.wait_events("queue_release",
                                                     lambda e: e.get("qid") == ids["m3"]))
    rmtest.wait_until(lambda: "m3" in sink_subjects(sink), 30)
    time.sleep(1.5)
    r.eq("m3 delivered exactly once, m5 never", sink_subjects(sink), ["m1", "m2", "m3", "m4"])
    r.eq("the queue is empty", rmtest.wait_until(
        lambda: get(srv, "/queue")[2]["count"] == 0, 20), True)
    r.eq("nothing in spool_dir/hold", os.listdir(os.path.join(srv.spool, "hold")), [])
    rc, out, err = cli(srv, "list")
    r.check("queue list: empty", rc == 0 and "Mail queue is empty" in out, (rc, out, err))

    # ---- hold survives a restart of a message never tried since; delete a held one ----
    sink.stop()
    send(srv.port, "erin@example.org", ["g@down.example"], "m6")
    d = rmtest.wait_until(lambda: get(srv, "/queue?sender=erin")[2]["count"] == 1 and
                          get(srv, "/queue?sender=erin")[2], 20, 0.2)
    q6 = d["messages"][0]["qid"] if d else None
    st, _, d = get(srv, "/queue/hold?sender=erin", method="POST")
    r.check("filtered hold", st == 200 and d["messages"] == 1 and d["deliveries"] == 1, (st, d))
    r.check("filtered hold: marker", os.path.exists(os.path.join(srv.spool, "hold", q6)))
    r.eq("filtered hold: held", get(srv, "/queue/" + q6)[2]["held"], True)
    st, _, d = get(srv, "/queue/release?sender=erin", method="POST")
    r.check("filtered release", st == 200 and d["messages"] == 1, (st, d))
    r.eq("filtered release: not held", get(srv, "/queue/" + q6)[2]["held"], False)
    r.check("released: tried again, deferred again", rmtest.wait_until(
        lambda: get(srv, "/queue/" + q6)[2]["recipients"][0]["attempts"] == 2 and
        get(srv, "/queue/" + q6)[2]["recipients"][0]["state"] == "deferred", 20, 0.1))
    r.eq("filtered hold selecting nothing", get(srv, "/queue/hold?sender=nobody",
                                                 method="POST")[2]["messages"], 0)
    r.eq("GET /queue/QID with a filter: 400", get(srv, "/queue/%s?domain=x" % q6)[0], 400)
    r.eq("an action on one message with a filter: 400",
         get(srv, "/queue/%s/hold?sender=x" % q6, method="POST")[0], 400)
    rc, out, err = cli(srv, "hold", q6)
    r.eq("queue hold: exit 0", (rc, out.strip()), (0, "hold: %s: 1 delivery" % q6))
    st, _, d = get(srv, "/queue/" + q6, method="DELETE")
    r.check("DELETE /queue/QID of a held message", st == 200 and d["deliveries"] == 1, (st, d))
    r.check("its marker is removed", not os.path.exists(os.path.join(srv.spool, "hold", q6)))
    r.eq("gone", get(srv, "/queue/" + q6)[0], 404)

    # ---- offline and misdirected ----
    rc, out, err = cli(srv, "list", admin="")
    r.check("admin_listen off: list reads the spool, says so", rc == 0 and
            "Mail queue is empty" in out and "offline" in err, (rc, out, err))
    rc, out, err = cli(srv, "flush", admin="")
    r.check("admin_listen off: flush fails", rc == 1 and "admin_listen is off" in err,
            (rc, err))
    nobody = "%s:%d" % (rmtest.LOOPBACK, rmtest.free_port())
    rc, out, err = cli(srv, "list", admin=nobody)
    r.check("nothing listening: list falls back", rc == 0 and "nothing answers" in err and
            "offline" in err, (rc, out, err))
    rc, out, err = cli(srv, "hold", q6 or "0000000000000001", admin=nobody)
    r.check("nothing listening: hold fails", rc == 1 and "nothing answers" in err, (rc, err))
    other = os.path.join(rmtest.tempdir(), "spool")
    os.makedirs(other)
    rc, out, err = cli(srv, "delete", ids["m1"], spool=other)
    r.check("another instance's endpoint: refused (421), exit 1", rc == 1 and
            "another spool_dir" in err, (rc, err))
    r.eq("stop: exit 0", srv.stop(), 0)
    sink.stop()


def t_token(r):
    d = rmtest.tempdir()
    tok = os.path.join(d, "token")
    with open(tok, "w") as f:
        f.write("s3cret-queue-token\n")
    os.chmod(tok, 0o600)
    admin_port = rmtest.free_port()
    srv = rmtest.Server(name="queue-token", opts={
        "admin_listen": "%s:%d" % (rmtest.LOOPBACK, admin_port), "admin_token_file": tok,
        "reactors": "1", "workers": "1"}).start()
    srv.admin_port = admin_port
    st, hdr, _ = rmtest.http_get(admin_port, "/queue")
    r.check("no token: 401", st == 401 and "bearer" in hdr.get("www-authenticate", "").lower(),
            (st, hdr))
    st, _, _ = rmtest.http_get(admin_port, "/queue/0000000000000001/hold", method="POST")
    r.eq("no token, POST: 401", st, 401)
    st, _, _ = rmtest.http_get(admin_port, "/queue",
                               headers={"Authorization": "Bearer wrong"})
    r.eq("a wrong token: 401", st, 401)
    st, _, d = get(srv, "/queue", headers={"Authorization": "Bearer s3cret-queue-token"})
    r.check("the token: 200", st == 200 and d["count"] == 0, (st, d))
    rc, out, err = cli(srv, "list", extra=["-o", "admin_token_file=%s" % tok])
    r.check("the CLI sends the token", rc == 0 and "Mail queue is empty" in out and err == "",
            (rc, out, err))
    rc, out, err = cli(srv, "flush")
    r.check("the CLI without the token: exit 1, 401", rc == 1 and "401" in err, (rc, err))
    r.eq("stop: exit 0", srv.stop(), 0)


def t_delivery_hold(r):
    """delivery: hold: nothing reaches the workers; /queue reads the spool."""
    admin_port = rmtest.free_port()
    srv = rmtest.Server(name="queue-hold", hold=True, opts={
        "admin_listen": "%s:%d" % (rmtest.LOOPBACK, admin_port),
        "reactors": "1", "workers": "1"}).start()
    srv.admin_port = admin_port
    send(srv.port, "alice@example.org", ["a@one.example", "b@two.example"], "h1")
    send(srv.port, "bob@example.org", ["c@two.example"], "h2")
    d = rmtest.wait_until(lambda: get(srv, "/queue")[2]["count"] == 2 and get(srv, "/queue")[2],
                          20, 0.1)
    r.check("delivery: hold: the spool is listed", d and all(
        rc["state"] == "waiting" and rc["attempts"] == 0
        for m in d["messages"] for rc in m["recipients"]), d)
    if not d:
        return
    q1 = [m["qid"] for m in d["messages"] if m["sender"] == "alice@example.org"][0]
    st, _, x = get(srv, "/queue?domain=two.example&sender=alice")
    r.check("delivery: hold: filters", st == 200 and x["count"] == 1 and
            [rc["address"] for rc in x["messages"][0]["recipients"]] == ["b@two.example"],
            (st, x))
    r.eq("delivery: hold: limit", get(srv, "/queue?limit=1")[2]["truncated"], True)
    st, _, x = get(srv, "/queue/%s?body=1" % q1)
    r.check("delivery: hold: one message with its body", st == 200 and x["qid"] == q1 and
            "Subject: h1" in x["body"] and len(x["recipients"]) == 2, (st, x))
    r.eq("delivery: hold: unknown 404", get(srv, "/queue/00000000000000AA")[0], 404)
    st, _, x = get(srv, "/queue/%s/hold" % q1, method="POST")
    r.check("delivery: hold: actions 409", st == 409 and "delivery is hold" in x["error"],
            (st, x))
    rc, out, err = cli(srv, "list")
    q = rmtest.Queue(out, rc, err)
    r.check("delivery: hold: queue list online", rc == 0 and len(q) == 2 and err == "",
            (rc, out, err))
    # a large body (3 MB of text lines, UTF-8 included) comes back whole
    line = "0123456789 abcdefghij \u00e9\u20ac ABCDEFGHIJ 0123456789 xyz\r\n"
    big = line * (3 * 1024 * 1024 // len(line.encode()))
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=60)
    s.sendmail("carol@example.org", ["d@one.example"],
               ("Subject: big\r\n\r\n" + big).encode())
    s.quit()
    d = rmtest.wait_until(lambda: get(srv, "/queue?sender=carol")[2]["count"] == 1 and
                          get(srv, "/queue?sender=carol")[2], 20, 0.1)
    qb = d["messages"][0]["qid"]
    st, _, x = get(srv, "/queue/%s?body=1" % qb)
    r.check("a 3 MB body, whole", st == 200 and not x["body_truncated"] and
            x["body"].endswith(big) and len(x["body"].encode()) == x["size"],
            (st, x and len(x.get("body", "")), x and x.get("size")))
    rc, out, err = cli(srv, "show", qb)
    r.check("queue show of the 3 MB message", rc == 0 and big.replace("\r\n", "\n")
            in out.replace("\r\n", "\n"), (rc, len(out), err))
    r.eq("stop: exit 0", srv.stop(), 0)


if __name__ == "__main__":
    rmtest.main([t_queue, t_token, t_delivery_hold])
