#!/usr/bin/python3
"""AUTH (RFC 4954) PLAIN and LOGIN with a crypt(3) password file (yescrypt from mkpasswd,
SHA-512-crypt from openssl passwd -6), submission on 587 and 465, against smtplib and
swaks: offered only after TLS, 535 5.7.8 on a wrong password, repeated failures slowed
down and cut off, relay for authenticated users, the user in Received: and the log, the
password file reloaded on SIGHUP."""
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

SWAKS = rmtest.need_tool("swaks")
MKPASSWD = rmtest.need_tool("mkpasswd")
rmtest.need_tool("openssl")
D = rmtest.tempdir(prefix="rmtest-auth-")
CA = rmtest.make_ca(D)
CERT = rmtest.make_cert(D, "rmtest.example", ["DNS:rmtest.example", "IP:127.0.0.1"], CA)
PW = os.path.join(D, "passwd")
MAILDIR = os.path.join(D, "maildir")
SUB, SMTPS, ADMIN = rmtest.free_port(), rmtest.free_port(), rmtest.free_port()
srv = None


def hashes():
    y = subprocess.run([MKPASSWD, "-m", "yescrypt", "yes-secret"], stdout=subprocess.PIPE,
                       check=True, timeout=30).stdout.decode().strip()
    s6 = subprocess.run(["openssl", "passwd", "-6", "sha-secret"], stdout=subprocess.PIPE,
                        check=True, timeout=30).stdout.decode().strip()
    return y, s6


def write_pw(lines):
    with open(PW + ".tmp", "w") as f:
        f.write("# ringmail test users\n\n" + "".join(ln + "\n" for ln in lines))
    os.replace(PW + ".tmp", PW)


def ctx():
    return ssl.create_default_context(cafile=CA[0])


def submission():
    s = smtplib.SMTP(rmtest.LOOPBACK, SUB, timeout=20)
    s.ehlo("client.example")
    return s


def t_offered_only_after_tls(r):
    s = submission()
    r.check("587 before STARTTLS: AUTH not offered", not s.has_extn("auth"), s.esmtp_features)
    code, msg = s.docmd("AUTH", "PLAIN AHlvbGFuZGEAeWVzLXNlY3JldA==")
    r.eq("AUTH before TLS: 538 5.7.11", code, 538)
    code, msg = s.mail("a@client.example")
    r.eq("587: MAIL before AUTH: 530 5.7.0", (code, msg), (530, b"5.7.0 Authentication required"))
    s.starttls(context=ctx())
    s.ehlo("client.example")
    r.check("after STARTTLS: AUTH PLAIN LOGIN offered",
            s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"] and
            "LOGIN" in s.esmtp_features["auth"], s.esmtp_features)
    s.quit()
    # port 25 offers AUTH after STARTTLS too; before it, not
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=20)
    s.ehlo("c")
    r.check("25 before TLS: no AUTH", not s.has_extn("auth"))
    s.quit()


def t_login_plain_and_relay(r):
    before = len(os.listdir(os.path.join(MAILDIR, "new"))) if os.path.isdir(
        os.path.join(MAILDIR, "new")) else 0
    for user, pw, mech in (("yolanda", "yes-secret", "PLAIN"), ("sasha", "sha-secret", "LOGIN")):
        s = submission()
        s.starttls(context=ctx())
        s.ehlo("client.example")
        s.user, s.password = user, pw
        code, msg = s.auth(mech, s.auth_plain if mech == "PLAIN" else s.auth_login)
        r.eq("%s %s: 235 2.7.0" % (mech, user), code, 235)
        refused = s.sendmail("%s@client.example" % user, ["anyone@elsewhere.example"],
                             b"Subject: authenticated\r\n\r\nhi\r\n")
        r.eq("%s: an authenticated client may relay anywhere" % user, refused, {})
        s.quit()
    r.check("log: event=auth result=ok user=yolanda",
            srv.wait_events("auth", lambda e: e.get("result") == "ok" and
                            e.get("user") == "yolanda"), srv.events("auth"))
    r.check("log: event=received names the user and the TLS cipher",
            srv.wait_events("received", lambda e: e.get("user") == "sasha" and
                            e.get("tls", "").startswith("TLSv1.3 ")), srv.events("received"))
    new = os.path.join(MAILDIR, "new")
    got = rmtest.wait_until(lambda: os.path.isdir(new) and len(os.listdir(new)) >= before + 2, 20)
    r.check("both delivered", got)
    texts = [open(os.path.join(new, f), "rb").read().decode() for f in os.listdir(new)] if got \
        else []
    r.check("Received: says ESMTPSA and names the user",
            any("with ESMTPSA (TLSv1.3" in t and "(authenticated as yolanda)" in t for t in texts),
            texts[:1])


def t_wrong_password(r):
    s = submission()
    s.starttls(context=ctx())
    s.ehlo("c")
    s.user, s.password = "yolanda", "wrong"
    t0 = time.monotonic()
    try:
        s.auth("PLAIN", s.auth_plain)
        r.check("wrong password refused", False)
    except smtplib.SMTPAuthenticationError as e:
        r.eq("wrong password: 535 5.7.8", (e.smtp_code, e.smtp_error[:5]), (535, b"5.7.8"))
    r.check("the failure reply is delayed (smtpd_auth_failure_delay)",
            time.monotonic() - t0 >= 0.2, time.monotonic() - t0)
    s.user = "nobody-such"
    try:
        s.auth("LOGIN", s.auth_login)
    except smtplib.SMTPAuthenticationError as e:
        r.eq("unknown user: the same 535 5.7.8", e.smtp_code, 535)
    s.user = "yolanda"
    try:
        s.auth("PLAIN", s.auth_plain)
        r.check("third failure", False)
    except smtplib.SMTPAuthenticationError as e:
        r.check("third failure: 535 then 421 4.7.0 and the connection closes",
                e.smtp_code == 535, e)
    # the 421 came right behind the third 535; then the server closes
    try:
        code = s.getreply()[0]
    except (smtplib.SMTPServerDisconnected, OSError):
        code = None
    r.eq("cut off after smtpd_auth_failure_limit: 421", code, 421)
    try:
        s.noop()
        closed = False
    except (smtplib.SMTPServerDisconnected, OSError):
        closed = True
    r.check("and the connection is closed", closed)
    r.check("log: reason=auth_failures",
            srv.wait_events("disconnect", lambda e: e.get("reason") == "auth_failures"),
            srv.events("disconnect"))


def t_swaks(r):
    p = subprocess.run([SWAKS, "--server", rmtest.LOOPBACK, "--port", str(SMTPS), "--tlsc",
                        "--auth", "PLAIN", "--auth-user", "sasha", "--auth-password",
                        "sha-secret", "--from", "sasha@client.example", "--to",
                        "far@elsewhere.example", "--timeout", "20"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    r.check("swaks --tlsc --auth PLAIN on 465: 235 and queued",
            p.returncode == 0 and "235 2.7.0" in out and "queued as" in out, out[-1500:])
    p = subprocess.run([SWAKS, "--server", rmtest.LOOPBACK, "--port", str(SUB), "--tls",
                        "--auth", "LOGIN", "--auth-user", "sasha", "--auth-password", "nope",
                        "--from", "sasha@client.example", "--to", "far@elsewhere.example",
                        "--timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    r.check("swaks --tls --auth LOGIN, wrong password: 535 5.7.8", "535 5.7.8" in out, out[-1500:])


def t_reload_password_file(r):
    y, _ = hashes()
    write_pw(["yolanda:" + y, "newuser:" + subprocess.run(
        ["openssl", "passwd", "-6", "new-secret"], stdout=subprocess.PIPE, check=True,
        timeout=30).stdout.decode().strip()])
    os.kill(srv.pid, signal.SIGHUP)
    r.check("SIGHUP: password file reloaded", rmtest.wait_until(
        lambda: [e for e in srv.events("reload") if e.get("what") == "auth" and
                 e.get("result") == "ok"], 10), srv.log()[-1500:])
    s = submission()
    s.starttls(context=ctx())
    s.ehlo("c")
    s.user, s.password = "newuser", "new-secret"
    r.eq("a user added by the reload can log in", s.auth("PLAIN", s.auth_plain)[0], 235)
    s.quit()
    with open(PW, "w") as f:
        f.write("broken line without a colon\n")
    os.kill(srv.pid, signal.SIGHUP)
    r.check("a bad password file is refused, naming file and line", rmtest.wait_until(
        lambda: [e for e in srv.events("reload") if e.get("what") == "auth" and
                 e.get("result") == "refused" and ":1:" in e.get("error", "")], 10),
        srv.log()[-1500:])
    s = submission()
    s.starttls(context=ctx())
    s.ehlo("c")
    s.user, s.password = "newuser", "new-secret"
    r.eq("the old database stays in service", s.auth("PLAIN", s.auth_plain)[0], 235)
    s.quit()


def t_metrics(r):
    st, _, body = rmtest.http_get(ADMIN, "/metrics")
    samples, _ = rmtest.parse_metrics(body)
    r.check("metrics: AUTH checks ok counted", samples.get(
        'ringmail_auth_checks_total{result="ok"}', 0) >= 4, body[-1500:])
    r.check("metrics: AUTH checks failed counted", samples.get(
        'ringmail_auth_checks_total{result="failed"}', 0) >= 4, body[-1500:])


def t_stop(r):
    r.eq("exit 0", srv.stop(), 0)


def main():
    global srv
    y, s6 = hashes()
    write_pw(["yolanda:" + y, "sasha:" + s6])
    srv = rmtest.Server(name="auth", hold=False, opts={
        "submission_listen": "127.0.0.1:%d" % SUB, "smtps_listen": "127.0.0.1:%d" % SMTPS,
        "tls_cert_file": CERT[0], "tls_key_file": CERT[1], "smtpd_sasl_password_file": PW,
        "smtpd_auth_failure_delay": "300ms", "maildir_dir": MAILDIR,
        "mynetworks": "10.255.255.0/24", "admin_listen": "127.0.0.1:%d" % ADMIN}).start()
    rmtest.main([t_offered_only_after_tls, t_login_plain_and_relay, t_wrong_password, t_swaks,
                 t_reload_password_file, t_metrics, t_stop])


if __name__ == "__main__":
    main()
