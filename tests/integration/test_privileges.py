#!/usr/bin/python3
"""Started as root, ringmail binds its port and runs as `user` (default nobody): the
process's uids, the spool's owner and modes, mail still flows; a missing account is a
clear start-up error; user: root keeps root with a warning."""
import os
import pwd
import smtplib
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

if os.geteuid() != 0:
    rmtest.skip("not root: the privilege drop only happens when started as root")
NOBODY = pwd.getpwnam("nobody")


def proc_ids(pid):
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k in ("Uid", "Gid", "Groups"):
                ids[k] = v.split()
    return ids


def base():
    # the parent folder must be reachable by nobody once the process is nobody
    d = rmtest.tempdir(prefix="rmtest-priv-")
    os.chmod(d, 0o755)
    return d


def t_drop_to_nobody(r):
    d = base()
    srv = rmtest.Server(name="priv", spool=os.path.join(d, "spool"), hold=False,
                        opts={"user": "nobody", "maildir_dir": os.path.join(d, "maildir"),
                              "relay_domains": "rmtest.example"}).start()
    ids = proc_ids(srv.pid)
    r.eq("real, effective, saved and fs uid are nobody's", ids["Uid"], [str(NOBODY.pw_uid)] * 4)
    r.eq("gids are nobody's group", ids["Gid"], [str(NOBODY.pw_gid)] * 4)
    r.eq("no supplementary groups", ids.get("Groups", []), [])
    st = os.stat(srv.spool)
    r.eq("spool owned by nobody", (st.st_uid, st.st_gid), (NOBODY.pw_uid, NOBODY.pw_gid))
    r.eq("spool mode 0700", stat.S_IMODE(st.st_mode), 0o700)
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    r.eq("mail accepted after the drop",
         s.sendmail("a@client.example", ["b@rmtest.example"], b"Subject: x\r\n\r\nx\r\n"), {})
    s.quit()
    new = os.path.join(d, "maildir", "new")
    got = rmtest.wait_until(lambda: os.listdir(new), 20)
    r.check("delivered into the maildir as nobody", got)
    if got:
        r.eq("the delivered file belongs to nobody", os.stat(os.path.join(new, got[0])).st_uid,
             NOBODY.pw_uid)
    segs = [f for f in os.listdir(srv.spool) if f.startswith("seg-")]
    r.check("spool segments belong to nobody", segs and all(
        os.stat(os.path.join(srv.spool, f)).st_uid == NOBODY.pw_uid for f in segs), segs)
    r.check("log says so", srv.events("privileges"), srv.log()[-1000:])
    r.eq("exit 0 on SIGTERM", srv.stop(), 0)
    # a restart as root over a spool that nobody now owns works the same
    srv.start()
    r.eq("restart: still nobody", proc_ids(srv.pid)["Uid"][0], str(NOBODY.pw_uid))
    r.eq("restart: exit 0", srv.stop(), 0)


def t_defaults_in_a_fresh_folder(r):
    """The README's first command: run as root from a fresh folder with the built-in
    ./var/spool and ./var/maildir, drop to nobody, take and deliver a message."""
    d = base()
    srv = rmtest.Server(name="fresh", cwd=d, hold=False, spool="./var/spool",
                        opts={"user": "nobody", "maildir_dir": "./var/maildir",
                              "relay_domains": "rmtest.example"}).start()
    r.eq("runs as nobody", proc_ids(srv.pid)["Uid"][0], str(NOBODY.pw_uid))
    r.eq("./var is reachable (0755), ./var/spool private (0700)",
         (stat.S_IMODE(os.stat(os.path.join(d, "var")).st_mode),
          stat.S_IMODE(os.stat(os.path.join(d, "var", "spool")).st_mode)), (0o755, 0o700))
    s = smtplib.SMTP(rmtest.LOOPBACK, srv.port, timeout=15)
    r.eq("mail accepted", s.sendmail("a@client.example", ["b@rmtest.example"],
                                     b"Subject: x\r\n\r\nx\r\n"), {})
    s.quit()
    new = os.path.join(d, "var", "maildir", "new")
    r.check("delivered into ./var/maildir/new", rmtest.wait_until(
        lambda: os.path.isdir(new) and os.listdir(new), 20), srv.log()[-1500:])
    r.eq("exit 0", srv.stop(), 0)


def t_unknown_user(r):
    d = base()
    p = subprocess.run([rmtest.binary(), "-o", "listen=127.0.0.1:%d" % rmtest.free_port(), "-o",
                        "spool_dir=%s/spool" % d, "-o", "user=no-such-account-rm", "-o",
                        "admin_listen="],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=30)
    out = p.stdout.decode()
    r.check("an unknown user: exit 1", p.returncode == 1, (p.returncode, out[-800:]))
    r.check("the message names the key and the account",
            "key=user user=no-such-account-rm" in out and "no such account" in out, out[-800:])


def t_root_when_told(r):
    srv = rmtest.Server(name="root", opts={"user": "root"}).start()
    r.eq("user: root keeps root", proc_ids(srv.pid)["Uid"][0], "0")
    r.check("with a warning", [e for e in srv.events("config") if e.get("user") == "root"],
            srv.log()[-800:])
    r.eq("exit 0", srv.stop(), 0)


if __name__ == "__main__":
    rmtest.main([t_drop_to_nobody, t_defaults_in_a_fresh_folder, t_unknown_user,
                 t_root_when_told])
