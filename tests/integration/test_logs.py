#!/usr/bin/python3
"""log_format: json: every line ringmail writes is one JSON object with the same fields as
the key=value form; peer text is escaped; the queue id is on the message's lines."""
import json
import os
import smtplib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402


def t_json(r):
    srv = rmtest.Server(name="json", opts={"log_format": "json"}).start()
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    s.ehlo("client.example")
    r.eq("MAIL with a quoted local part", s.docmd("MAIL", 'FROM:<"we\\"ird"@client.example>')[0],
         250)
    r.eq("RCPT", s.docmd("RCPT", "TO:<b@rmtest.example>")[0], 250)
    r.eq("DATA", s.data(b"Subject: x\r\n\r\nx\r\n")[0], 250)
    s.quit()
    r.eq("exit 0", srv.stop(), 0)
    objs, bad = [], []
    for ln in srv.log().splitlines():
        try:
            objs.append(json.loads(ln))
        except ValueError:
            bad.append(ln)
    r.eq("every line is JSON", bad, [])
    r.check("every object has ts, level and event",
            objs and all("ts" in o and "level" in o and "event" in o for o in objs), objs[:3])
    rec = [o for o in objs if o["event"] == "received"]
    r.check("event=received with its qid and client", len(rec) == 1 and
            len(rec[0].get("qid", "")) == 16 and rec[0].get("client") == "127.0.0.1", rec)
    r.check("peer text is escaped in the line and decodes to what was sent",
            rec and rec[0].get("from") == '<"we\\"ird"@client.example>', rec)


if __name__ == "__main__":
    rmtest.main([t_json])
