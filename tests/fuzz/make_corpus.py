#!/usr/bin/python3
"""make_corpus.py: write the seed corpus of the libFuzzer harnesses (tests/fuzz).

    python3 tests/fuzz/make_corpus.py            text seeds (server, client, parse, config)
    python3 tests/fuzz/make_corpus.py --spool    also spool segments, written by the real
                                                 server (RINGMAIL_BIN, else build/release/
                                                 ringmail, else build/fuzz/ringmail)

Seeds are small realistic inputs, each prefixed with the header octets its
harness reads first (see the comment at the top of each fuzz_*.c). Files are
named after what they hold and rewritten in place, so the corpus in git is
exactly what this script writes. Stdlib only.
"""
import glob
import os
import shutil
import smtplib
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
SEED_MAX = 64 * 1024


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    assert len(data) < SEED_MAX, (harness, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_smtp_server: 8 header octets, then what a client sends ----

def server_hdr(cfg=0, commit=0, body=16, tx=0, seed=1, piece=2, v6=0, v7=0):
    """cfg bits: 0 reject bare newlines, 1 small size limit, 2 max_line_length, 3 line 512,
    4 client in mynetworks, 5 small error limit, 6 small recipient limit, 7 long hostname."""
    return bytes([cfg, commit, body, tx, seed & 0xff, (piece << 5) | ((seed >> 8) & 0x1f), v6, v7])


TRUSTED = 16

SERVER = {
    "basic": (server_hdr(TRUSTED),
              b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n"
              b"RCPT TO:<bob@example.net>\r\nDATA\r\nSubject: hi\r\n\r\nHello\r\n..dot\r\n.\r\n"
              b"QUIT\r\n"),
    "pipelining": (server_hdr(TRUSTED, commit=2, tx=1, piece=7),
                   b"EHLO c.example\r\nMAIL FROM:<a@example.org> SIZE=120 BODY=8BITMIME\r\n"
                   b"RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n"
                   b"From: a\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n"
                   b"x\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n"),
    "bdat": (server_hdr(TRUSTED, body=0x83, piece=3),
             b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@e.example>\r\nBDAT 4\r\nab\r\n"
             b"BDAT 5 LAST\r\ncd\r\n\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<d@e.example>\r\n"
             b"BDAT 0 LAST\r\nQUIT\r\n"),
    "bdat_refused_chunk": (server_hdr(TRUSTED, piece=1),
                           b"EHLO c\r\nBDAT 7\r\nMAIL FR\r\nMAIL FROM:<a@b.example>\r\n"
                           b"RCPT TO:<d@e.example>\r\nBDAT 3 LAST\r\nxyzQUIT\r\n"),
    "smuggling_lf_dot_lf": (server_hdr(TRUSTED, piece=5),
                            b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                            b"DATA\r\nSubject: x\r\n\r\nfirst\n.\nMAIL FROM:<evil@example.org>\n"
                            b"RCPT TO:<victim@example.net>\nDATA\n\r\n.\n\r\nreal end\r\n.\r\n"
                            b"QUIT\r\n"),
    "smuggling_crlf_dot_lf": (server_hdr(TRUSTED | 1, piece=2),
                              b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                              b"DATA\r\nx\r\n.\nMAIL FROM:<e@example.org>\r\n\r\n.\r\n"
                              b"DATA\r\ny\r\n\r.\r\nz\n.\r\n.\r\nQUIT\r\n"),
    "smuggling_bare_cr": (server_hdr(TRUSTED, piece=4),
                          b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                          b"DATA\r\na\r.\r\nb\r\n.\r\r\n.\r\n"),
    "errors": (server_hdr(0x20, v6=3),
               b"HELO\r\nFOO bar\r\nMAIL FROM:<a@b.example>\r\nEHLO c\r\nRCPT TO:<x@y.example>\r\n"
               b"MAIL FROM:a@b\r\nMAIL FROM:<a@b.example> FOO=1\r\nDATA\r\n"
               b"RCPT TO:<x@not-relayed.example>\r\nEXPN list\r\nSTARTTLS\r\nAUTH PLAIN\r\n"
               b"VRFY\r\nNUL\x00here\r\nbare lf\nQUIT\r\n"),
    "long_line": (server_hdr(TRUSTED | 8, piece=6),
                  b"EHLO c\r\n" + b"NOOP " + b"x" * 700 + b"\r\nMAIL FROM:<a@b.example>\r\n"
                  b"RCPT TO:<" + b"y" * 300 + b"@example.net>\r\nQUIT\r\n"),
    "dsn_utf8": (server_hdr(TRUSTED),
                 b"EHLO c\r\nMAIL FROM:<j\xc3\xb8rn@example.org> SMTPUTF8 RET=HDRS ENVID=QQ314159\r\n"
                 b"RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.net\r\n"
                 b"RCPT TO:<\"quoted local\"@[IPv6:2001:db8::1]>\r\nRCPT TO:<@r1.example,@r2:c@[192.0.2.7]>\r\n"
                 b"DATA\r\n\xc3\xa9t\xc3\xa9\r\n.\r\n"),
    "helo_limits": (server_hdr(TRUSTED | 2 | 4 | 64, v6=2, v7=77),
                    b"HELO c\r\nMAIL FROM:<a@b.example> SIZE=9\r\nMAIL FROM:<a@b.example>\r\n"
                    b"RCPT TO:<1@x.example>\r\nRCPT TO:<2@x.example>\r\nRCPT TO:<3@x.example>\r\n"
                    b"RCPT TO:<4@x.example>\r\nDATA\r\n" + b"z" * 120 + b"\r\n.\r\nQUIT\r\n"),
    "relay_denied": (server_hdr(0x80 | 0x20, v6=1),
                     b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@elsewhere.example>\r\n"
                     b"RCPT TO:<" + b"r" * 240 + b"@elsewhere.example>\r\n"
                     b"RCPT TO:<ok@example.net>\r\nRCPT TO:<ok@sub.example.org>\r\nQUIT\r\n"),
    "relay_denied_long_421": (server_hdr(0x80 | 0x20, v6=1),
                              b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<" + b"r" * 230 +
                              b"@elsewhere.example>\r\nQUIT\r\n"),
    "misc_commands": (server_hdr(TRUSTED, commit=0x31, tx=3),
                      b"EHLO c\r\nHELP\r\nVRFY alice\r\nNOOP\r\nRSET\r\nrset x\r\nEhLo again\r\n"
                      b"MAIL FROM:<a@b.example>\r\nRCPT TO:<postmaster>\r\nDATA x\r\nDATA\r\n.\r\n"
                      b"QUIT\r\nNOOP\r\n"),
}


# ---- fuzz_smtp_client: 8 header octets, then what the server sends ----

def client_hdr(lmtp=False, line512=False, quit_idle=True, nmsg=1, first_early=False,
               timeout=False, handover_in_done=False, rcpts=0, env=0, bodies=1, out=0,
               fail_at=0, seed=1, piece=6):
    c0 = (lmtp and 1) | (line512 and 2) | (quit_idle and 4) | ((nmsg - 1) << 3) | \
        (first_early and 32) | (timeout and 64) | (handover_in_done and 128)
    return bytes([c0, rcpts, env, bodies, out, fail_at, seed & 0xff, (piece << 5) | 1])


GREETING = b"220 mx.example ESMTP ready\r\n"
EHLO_FULL = (b"250-mx.example Hello relay.example\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n"
             b"250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250-STARTTLS\r\n"
             b"250 ENHANCEDSTATUSCODES\r\n")
OK_TXN = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n"

CLIENT = {
    "pipelined_ok": (client_hdr(rcpts=0, bodies=1), GREETING + EHLO_FULL + OK_TXN + b"221 2.0.0 Bye\r\n"),
    "pipelined_mixed_rcpts": (client_hdr(rcpts=2, bodies=2),
                              GREETING + EHLO_FULL + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                              b"450 4.2.0 <r0.1@example.net>: mailbox busy\r\n"
                              b"550 5.1.1 <r0.2@example.net>: no such user\r\n354 go ahead\r\n"
                              b"250 2.0.0 Ok: queued as 4F1\r\n221 2.0.0 Bye\r\n"),
    "no_pipelining": (client_hdr(rcpts=1, bodies=3, out=1),
                      GREETING + b"250-mx.example\r\n250-8BITMIME\r\n250 SIZE\r\n250 ok\r\n"
                      b"250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n221 bye\r\n"),
    "lmtp_per_recipient": (client_hdr(lmtp=True, rcpts=2, bodies=1),
                           b"220 lmtp.example LMTP\r\n250-lmtp.example\r\n250-PIPELINING\r\n"
                           b"250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n250 2.1.0 Ok\r\n"
                           b"250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 unknown\r\n354 go\r\n"
                           b"250 2.0.0 <r0.0@example.net> delivered\r\n"
                           b"452 4.2.2 <r0.1@example.net> mailbox full\r\n221 bye\r\n"),
    "two_messages_rset": (client_hdr(nmsg=2, rcpts=0x05, bodies=0x0a, handover_in_done=True),
                          GREETING + EHLO_FULL + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
                          b"451 4.3.0 no DATA now\r\n250 2.0.0 reset\r\n" + OK_TXN +
                          b"221 2.0.0 Bye\r\n"),
    "multiline_421": (client_hdr(rcpts=1, bodies=4),
                      b"220-mx.example ESMTP\r\n220-second line\r\n220 ready\r\n"
                      b"250-mx.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
                      b"250-2.1.0 sender\r\n250 2.1.0 ok\r\n421 4.7.0 closing, too busy\r\n"),
    "greeting_refused": (client_hdr(timeout=True), b"554 5.7.1 no service for you\r\n"),
    "ehlo_502_helo": (client_hdr(rcpts=0, bodies=5, env=0x01),
                      GREETING + b"502 5.5.2 EHLO not supported\r\n250 mx.example\r\n"
                      b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n"),
    "size_limit": (client_hdr(rcpts=0, bodies=6),
                   GREETING + b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n221 bye\r\n"),
    "nobody_354": (client_hdr(rcpts=1, bodies=1),
                   GREETING + EHLO_FULL + b"250 2.1.0 Ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n"
                   b"354 go anyway\r\n250 2.0.0 dropped\r\n221 bye\r\n"),
    "injection_env": (client_hdr(rcpts=3, env=0x1e | 0x80, bodies=7),
                      GREETING + EHLO_FULL + OK_TXN + b"221 bye\r\n"),
    "trickle_late_body": (client_hdr(rcpts=0, bodies=0x3e, out=0x41, piece=0, seed=3),
                          GREETING + EHLO_FULL + OK_TXN + b"221 bye\r\n"),
}


# ---- fuzz_smtp_parse: 5 header octets (line limit u16, path limit, params, seed), lines ----

def parse_hdr(line=1536, path=0, params=0, seed=7):
    return bytes([line & 0xff, line >> 8, path, params, seed])


PARSE = {
    "paths": (parse_hdr(),
              b"MAIL FROM:<alice@example.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=x+2Dy\r\n"
              b"RCPT TO:<postmaster>\r\nRCPT TO:<Postmaster@example.net> NOTIFY=SUCCESS,DELAY\r\n"
              b"MAIL FROM:<>\r\nmail from: <a.b-c+d@sub.example.co.uk>\r\n"
              b"RCPT TO:<@hop1.example,@[10.0.0.1]:user@example.com> ORCPT=rfc822;user@example.com\r\n"),
    "literals": (parse_hdr(path=40, params=3),
                 b"RCPT TO:<a@[IPv6:2001:db8::1]>\r\nRCPT TO:<a@[IPv6:::ffff:192.0.2.1]>\r\n"
                 b"RCPT TO:<a@[192.0.2.300]>\r\nRCPT TO:<a@[tag:content]>\r\n"
                 b"RCPT TO:<\"quoted \\\" string\"@example.net>\r\n"
                 b"RCPT TO:<j\xc3\xb8rn@\xc3\xa9xample.example> A=1 B C=3 D=4\r\n"),
    "verbs": (parse_hdr(line=512),
              b"helo x\r\nEHLO  x \t \r\nDATA\r\nBDAT 18446744073709551615 LAST\r\n"
              b"BDAT 18446744073709551616\r\nStartTLS\r\nRSET\nQUIT\x00\r\nNOOP" + b" " * 600 +
              b"\r\nVRFY a\r\nHELP\r\nEXPN x\r\nAUTH PLAIN\r\nETRN x\r\nTURN\r\n"),
}


# ---- fuzz_config: YAML files and -o key=value strings ----

CONFIG = {
    "minimal.yml": b"listen: 127.0.0.1:2525\nspool_dir: /var/spool/ringmail\n",
    "lists.yml": (b"listen:\n  - \"[::1]:25\"\n  - 192.0.2.7:2525\nmynetworks: 10.0.0.0/8, [2001:db8::]/32\n"
                  b"relay_domains:\n  - example.com\n  - .example.org\nmessage_size_limit: 10M\n"
                  b"smtpd_timeout: 5m\nbare_newline: reject\ndurability: none\n"),
    "routes.yml": (b"routes:\n  example.com:\n    - \"[10.0.0.1]:25\"\n    - smtp:[10.0.0.2]:2525\n"
                   b"  .example.org: lmtp:unix:/run/dovecot/lmtp\n  local.test: maildir:/srv/mail\n"
                   b"relayhost: [192.0.2.25]:587\nmaildir_dir: \"/srv/\\\"odd\\\" dir\"\n"),
    "errors.yml": b"listen: [\nunknown_key: 1\nsmtpd_timeout: 300\n---\nsecond: doc\n",
    "o_routes": b"routes=example.com=[10.0.0.1]:25 [10.0.0.2]:25,.example.org=lmtp:unix:/run/lmtp",
    "o_listen": b"listen=[2001:db8::25]:25,192.0.2.7:2525,mail.example:587",
    "o_networks": b"mynetworks=10.1.2.3/8 192.0.2.1,[2001:DB8::]/48,::ffff:198.51.100.0/120",
    "o_durations": b"maximal_backoff_time=1d",
}


def write_text_seeds():
    for name, (h, s) in SERVER.items():
        put("fuzz_smtp_server", name, h + s)
    for name, (h, s) in CLIENT.items():
        put("fuzz_smtp_client", name, h + s)
    for name, (h, s) in PARSE.items():
        put("fuzz_smtp_parse", name, h + s)
    for name, s in CONFIG.items():
        put("fuzz_config", name, s)
    with open(os.path.join(SRC, "deploy", "ringmail.yml"), "rb") as f:
        put("fuzz_config", "deploy_ringmail.yml", f.read())


# ---- fuzz_spool_recover: segments written by the real server ----

def find_binary():
    for b in (os.environ.get("RINGMAIL_BIN"), os.path.join(SRC, "build", "release", "ringmail"),
              os.path.join(SRC, "build", "fuzz", "ringmail")):
        if b and os.path.isfile(b) and os.access(b, os.X_OK):
            return b
    sys.exit("make_corpus.py: no ringmail binary (set RINGMAIL_BIN or build the release preset)")


def write_spool_seeds():
    sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
    os.environ.setdefault("RINGMAIL_BIN", find_binary())
    import rmtest  # noqa: E402

    def send(port, sender, rcpts, body, opts=()):
        """One message; returns its queue id."""
        s = smtplib.SMTP(rmtest.LOOPBACK, port, local_hostname="seed.example", timeout=30)
        try:
            s.ehlo()
            s.mail(sender, list(opts))
            for r in rcpts:
                s.rcpt(r)
            code, msg = s.data(body)
            assert code == 250, (code, msg)
            return rmtest.queued_id(msg.decode())
        finally:
            s.quit()

    def segments(spool):
        return sorted(glob.glob(os.path.join(spool, "seg-*.rms")))

    body = (b"From: seed@example.org\r\nSubject: fuzz seed\r\n\r\n"
            b".leading dot line\r\nsecond line\r\n")
    # 1. held: three messages, one segment (one reactor)
    srv = rmtest.Server(opts={"reactors": "1", "mynetworks": "127.0.0.0/8"}).start()
    send(srv.port, "alice@example.org", ["bob@example.net"], body)
    send(srv.port, "", ["postmaster@example.net", "c@example.net", "d@example.net"], body)
    send(srv.port, "j\u00f8rn@example.org", ["e@example.net"], b"Subject: 8bit\r\n\r\n\xc3\xa9\r\n",
         opts=("SMTPUTF8", "BODY=8BITMIME"))
    srv.stop()
    for i, seg in enumerate(segments(srv.spool)):
        with open(seg, "rb") as f:
            put("fuzz_spool_recover", "held_%d.rms" % i, f.read())

    # 2. delivered in part: maildir recipients finish (DONE records with indices), the
    #    one routed to a closed port is deferred, so the message stays pending
    work = rmtest.tempdir()
    closed = rmtest.free_port()
    admin = "%s:%d" % (rmtest.LOOPBACK, rmtest.free_port())
    srv = rmtest.Server(hold=False, cwd=work, opts={
        "reactors": "1", "workers": "1", "delivery": "on", "admin_listen": admin,
        "routes": "local.test=maildir:%s/md,down.test=[127.0.0.1]:%d" % (work, closed),
        "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"}).start()
    send(srv.port, "a@example.org", ["x@local.test", "y@down.test", "z@local.test"], body)
    send(srv.port, "a@example.org", ["w@local.test"], body)
    # deferred, then deleted: a whole-message DONE record
    qid = send(srv.port, "gone@example.org", ["v@down.test"], body)
    rmtest.wait_until(lambda: len(glob.glob(os.path.join(work, "md", "new", "*"))) >= 3, 20)
    rmtest.wait_until(lambda: len(srv.events("deferred")) >= 2, 20)
    subprocess.run([srv.bin, "queue", "delete", "-o", "spool_dir=%s" % srv.spool,
                    "-o", "admin_listen=%s" % admin, qid],
                   check=True, stdout=subprocess.DEVNULL, timeout=30)
    time.sleep(1.0)
    srv.stop()
    for i, seg in enumerate(segments(srv.spool)):
        with open(seg, "rb") as f:
            put("fuzz_spool_recover", "partly_done_%d.rms" % i, f.read())
    shutil.rmtree(work, ignore_errors=True)


def main():
    write_text_seeds()
    if "--spool" in sys.argv[1:]:
        write_spool_seeds()


if __name__ == "__main__":
    main()
