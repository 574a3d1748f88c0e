#!/usr/bin/python3
"""The container image and the Kubernetes manifests, without a container engine.

1. deploy/kubernetes/*.yaml (python3-yaml): every document has apiVersion,
   kind and metadata.name; kustomization.yaml names every file; the probes
   go to the admin port (the ConfigMap's admin_listen) on /healthz and
   /readyz; terminationGracePeriodSeconds > preStop sleep + shutdown_timeout;
   ports, labels and selectors agree between the StatefulSet, the Services,
   the ServiceMonitor and the PodDisruptionBudget; the security context;
   `kubectl kustomize` builds it (when kubectl is installed).
2. The ConfigMap's ringmail.yml and deploy/ringmail-container.yml pass
   `ringmail -t` (skipped, with the reason, while the binary does not know
   admin_listen).
3. deploy/Dockerfile: its stages, the files it copies, its ports, user and
   volume against the container configuration, and its runtime packages
   against the shared libraries the binary under test needs (ldd, dpkg -S).
4. deploy/docker-entrypoint.sh with a fake `ringmail` on PATH: RINGMAIL_<KEY>
   variables become -o key=value (every key of `ringmail -t -v`, the
   mixed-case smtp_tls_CAfile included), service-link variables are skipped,
   the arguments are dispatched, and ringmail is exec'd (same PID).
5. deploy/docker-healthcheck.sh against a small HTTP server: 200, 503, no
   server, the bearer token.
6. The container as far as it can be had without an engine: the real
   entrypoint and binary with the container configuration, as uid 10025
   without capabilities and with no_new_privs, PID 1 of a new PID namespace,
   on a read-only root with only the spool writable: it starts, takes a
   message into the Maildir on the spool, answers the healthcheck, and
   SIGTERM from outside the namespace drains it (exit 0).
7. io_uring refused by a seccomp filter (as by Docker 25's and containerd
   2.0's default profiles): ringmail stops with the line docs/operations.md
   quotes.
"""
import ctypes
import http.server
import json
import os
import platform
import re
import shutil
import smtplib
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rmtest  # noqa: E402

try:
    import yaml
except ImportError:  # deploy/debian-packages.sh test installs python3-yaml
    yaml = None

SRC = rmtest.SRC
DEPLOY = os.path.join(SRC, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
ENTRYPOINT = os.path.join(DEPLOY, "docker-entrypoint.sh")
HEALTHCHECK = os.path.join(DEPLOY, "docker-healthcheck.sh")
CONTAINER_YML = os.path.join(DEPLOY, "ringmail-container.yml")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
BIN = rmtest.binary()
BASH = shutil.which("bash") or "/bin/bash"
# what ringmail prints when io_uring_setup is refused: the delivery workers
# make their rings first (net/main.c), so it is worker 0 that reports it
IO_URING_FATAL = 'event=fatal what=worker worker=0 error="Operation not permitted"'


def run(args, timeout=60, **kw):
    return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, **kw)


def knows_admin_listen():
    """Whether the binary under test has the admin endpoint (the key lands with it)."""
    p = run([BIN, "-t", "-o", "admin_listen=127.0.0.1:9025"])
    return p.returncode == 0, (p.stdout + p.stderr).decode("utf-8", "replace").strip()


ADMIN, ADMIN_WHY = knows_admin_listen()
if not ADMIN:
    print("note: this ringmail does not know admin_listen (%s): the `ringmail -t` checks of "
          "files that set it are skipped, and the container run goes without it" % ADMIN_WHY,
          flush=True)


def duration_s(v):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", str(v).strip())
    assert m, v
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def port_of(hostport):
    return int(str(hostport).rsplit(":", 1)[1])


# ---- 1, 2: the Kubernetes manifests ----

def k8s_docs():
    docs = []  # (file, doc)
    for fn in sorted(os.listdir(K8S)):
        if fn.endswith((".yaml", ".yml")):
            with open(os.path.join(K8S, fn)) as f:
                for d in yaml.safe_load_all(f):
                    if d is not None:
                        docs.append((fn, d))
    return docs


def by_kind(docs, kind):
    return [d for _, d in docs if d.get("kind") == kind]


def t_k8s_documents(r):
    if yaml is None:
        print("SKIP: python3-yaml is not installed (deploy/debian-packages.sh test)", flush=True)
        return
    docs = k8s_docs()
    r.check("kubernetes: YAML documents found", len(docs) >= 9, len(docs))
    for fn, d in docs:
        name = (d.get("metadata") or {}).get("name")
        if d.get("kind") == "Kustomization":
            r.check("%s: kustomize apiVersion" % fn, d.get("apiVersion", "").startswith(
                "kustomize.config.k8s.io/"), d.get("apiVersion"))
            continue
        r.check("%s: %s has apiVersion, kind and metadata.name" % (fn, d.get("kind")),
                d.get("apiVersion") and d.get("kind") and name, d)
    kust = [d for fn, d in docs if fn == "kustomization.yaml"]
    r.eq("kustomization.yaml: one Kustomization", len(kust), 1)
    text = open(os.path.join(K8S, "kustomization.yaml")).read()
    res = kust[0].get("resources", []) if kust else []
    for fn in sorted(set(f for f, _ in docs) - {"kustomization.yaml"}):
        r.check("kustomization.yaml names %s" % fn, fn in text, res)
    for fn in res:
        r.check("kustomization resource %s exists" % fn, os.path.isfile(os.path.join(K8S, fn)))


def configmap_yml(docs):
    cms = [d for d in by_kind(docs, "ConfigMap") if "ringmail.yml" in (d.get("data") or {})]
    assert len(cms) == 1, "one ConfigMap with ringmail.yml"
    return cms[0], cms[0]["data"]["ringmail.yml"]


def t_k8s_statefulset(r):
    if yaml is None:
        print("SKIP: python3-yaml is not installed", flush=True)
        return
    docs = k8s_docs()
    cm, text = configmap_yml(docs)
    conf = yaml.safe_load(text)
    sts = by_kind(docs, "StatefulSet")
    r.eq("one StatefulSet", len(sts), 1)
    s = sts[0]
    spec, pod = s["spec"], s["spec"]["template"]["spec"]
    labels = s["spec"]["template"]["metadata"]["labels"]
    r.eq("podManagementPolicy Parallel", spec.get("podManagementPolicy"), "Parallel")
    r.check("selector matches the pod labels", all(
        labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()))
    r.check("enableServiceLinks: false (no RINGMAIL_SERVICE_* variables)",
            pod.get("enableServiceLinks") is False)
    c = [x for x in pod["containers"] if x["name"] == "ringmail"]
    r.eq("one ringmail container", len(c), 1)
    c = c[0]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    admin_port = port_of(conf["admin_listen"])
    r.eq("containerPort admin is the ConfigMap's admin_listen port", ports.get("admin"),
         admin_port)
    r.check("admin_listen is on all addresses (the kubelet probes the pod's IP)",
            str(conf["admin_listen"]).startswith(("0.0.0.0:", "[::]:")), conf["admin_listen"])
    for key, pname in (("listen", "smtp"), ("submission_listen", "submission"),
                       ("smtps_listen", "smtps")):
        want = sorted(port_of(a) for a in conf.get(key) or [])
        r.eq("containerPort %s is the ConfigMap's %s port" % (pname, key),
             [ports.get(pname)] if pname in ports else [], want)
        r.check("%s ports >= 1024 (no capability in the pod)" % key, all(p >= 1024 for p in want),
                want)

    def probe(name, path):
        p = c.get(name) or {}
        g = p.get("httpGet") or {}
        r.eq("%s: GET %s" % (name, path), g.get("path"), path)
        r.check("%s: on the admin port" % name, g.get("port") in ("admin", admin_port), g)
    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    probe("startupProbe", "/healthz")

    grace = pod.get("terminationGracePeriodSeconds")
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")
    r.check("preStop sleeps", pre and pre[0] == "sleep", pre)
    sleep = float(pre[1]) if pre else 0
    drain = duration_s(conf.get("shutdown_timeout", "30s"))
    print("   terminationGracePeriodSeconds %s, preStop sleep %gs, shutdown_timeout %gs"
          % (grace, sleep, drain), flush=True)
    r.check("terminationGracePeriodSeconds > shutdown_timeout", grace > drain, (grace, drain))
    r.check("terminationGracePeriodSeconds > preStop sleep + shutdown_timeout",
            grace > sleep + drain, (grace, sleep, drain))

    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    r.check("runAsNonRoot", psc.get("runAsNonRoot") is True)
    r.eq("runAsUser 10025 (the image's account)", psc.get("runAsUser"), 10025)
    r.eq("fsGroup 10025 (claim and secrets readable)", psc.get("fsGroup"), 10025)
    r.check("seccompProfile set", (psc.get("seccompProfile") or csc.get("seccompProfile") or {})
            .get("type") in ("RuntimeDefault", "Localhost", "Unconfined"))
    r.check("readOnlyRootFilesystem", csc.get("readOnlyRootFilesystem") is True)
    r.check("allowPrivilegeEscalation: false", csc.get("allowPrivilegeEscalation") is False)
    r.eq("capabilities drop ALL", (csc.get("capabilities") or {}).get("drop"), ["ALL"])
    r.check("resources: requests and limits",
            (c.get("resources") or {}).get("requests") and (c.get("resources") or {}).get("limits"))

    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vct = [v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])]
    r.eq("a volumeClaimTemplate mounted on spool_dir", mounts.get(conf["spool_dir"]),
         vct[0] if vct else None)
    r.check("maildir_dir is on the spool claim (the root is read-only)",
            str(conf.get("maildir_dir", "")).startswith(conf["spool_dir"] + "/"),
            conf.get("maildir_dir"))
    r.eq("the ConfigMap is mounted on /etc/ringmail/ringmail.yml",
         mounts.get("/etc/ringmail/ringmail.yml"), "config")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    r.eq("config volume is the ConfigMap", vols["config"]["configMap"]["name"],
         cm["metadata"]["name"])
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    for key, vol in (("tls_cert_file", "tls"), ("tls_key_file", "tls"),
                     ("smtpd_sasl_password_file", "auth")):
        path = conf.get(key)
        mp = [m for m, n in mounts.items() if n == vol]
        sname = vols[vol]["secret"]["secretName"]
        r.check("%s is a file of the secret %s mounted there" % (key, sname),
                path and mp and os.path.dirname(path) == mp[0] and sname in secrets and
                os.path.basename(path) in (secrets[sname].get("stringData") or
                                           secrets[sname].get("data") or {}), (path, mp))
    r.eq("the TLS secret is of type kubernetes.io/tls",
         secrets[vols["tls"]["secret"]["secretName"]].get("type"), "kubernetes.io/tls")

    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    r.eq("serviceName is a headless Service",
         (services.get(spec["serviceName"]) or {}).get("spec", {}).get("clusterIP"), "None")
    for name, svc in services.items():
        sel = svc["spec"].get("selector") or {}
        r.check("Service %s selects the pods" % name,
                sel and all(labels.get(k) == v for k, v in sel.items()), sel)
        for p in svc["spec"]["ports"]:
            r.check("Service %s port %s targets a container port" % (name, p["name"]),
                    p.get("targetPort") in ports or p.get("targetPort") in ports.values(), p)
    lb = [v for v in services.values() if v["spec"].get("type") == "LoadBalancer"]
    r.eq("one LoadBalancer Service", len(lb), 1)
    r.eq("LoadBalancer ports 25, 587, 465", sorted(p["port"] for p in lb[0]["spec"]["ports"]),
         [25, 465, 587])
    r.check("the LoadBalancer does not publish the admin port",
            all(p.get("targetPort") not in ("admin", admin_port) for p in lb[0]["spec"]["ports"]))
    r.eq("externalTrafficPolicy Local (client addresses kept)",
         lb[0]["spec"].get("externalTrafficPolicy"), "Local")
    sm = by_kind(docs, "ServiceMonitor")
    r.eq("one ServiceMonitor", len(sm), 1)
    msel = sm[0]["spec"]["selector"]["matchLabels"]
    msvc = [v for v in services.values()
            if all((v["metadata"].get("labels") or {}).get(k) == x for k, x in msel.items())]
    r.eq("the ServiceMonitor selects one Service", len(msvc), 1)
    if msvc:
        eps = sm[0]["spec"]["endpoints"]
        r.check("ServiceMonitor: /metrics on the metrics Service's admin port",
                eps and eps[0].get("path") == "/metrics" and
                any(p["name"] == eps[0].get("port") and p.get("targetPort") in ("admin", admin_port)
                    for p in msvc[0]["spec"]["ports"]), eps)
    pdb = by_kind(docs, "PodDisruptionBudget")
    r.eq("one PodDisruptionBudget", len(pdb), 1)
    r.check("the PodDisruptionBudget selects the pods", all(
        labels.get(k) == v for k, v in pdb[0]["spec"]["selector"]["matchLabels"].items()))


def t_k8s_configmap_check(r):
    if yaml is None:
        print("SKIP: python3-yaml is not installed", flush=True)
        return
    if not ADMIN:
        print("SKIP: `ringmail -t` of the ConfigMap's ringmail.yml: it sets admin_listen, "
              "which this ringmail does not know (%s)" % ADMIN_WHY, flush=True)
        return
    _, text = configmap_yml(k8s_docs())
    d = rmtest.tempdir(prefix="rmtest-deploy-")
    path = os.path.join(d, "ringmail.yml")
    with open(path, "w") as f:
        f.write(text)
    # as the StatefulSet runs it: RINGMAIL_MYHOSTNAME from the pod name
    p = run([BIN, "-t", "-c", path, "-o", "myhostname=ringmail-0.mx.example.com"])
    r.eq("ConfigMap ringmail.yml: ringmail -t passes", (p.returncode, p.stderr.decode()), (0, ""))


def t_kustomize(r):
    kubectl = shutil.which("kubectl")
    if yaml is None or kubectl is None:
        print("SKIP: kubectl kustomize (kubectl or python3-yaml missing)", flush=True)
        return
    p = run([kubectl, "kustomize", K8S], timeout=120)
    r.eq("kubectl kustomize deploy/kubernetes", (p.returncode, p.stderr.decode()[-500:]), (0, ""))
    if p.returncode != 0:
        return
    out = [d for d in yaml.safe_load_all(p.stdout) if d]
    kinds = sorted(d["kind"] for d in out)
    print("   kustomize: %s" % ", ".join(kinds), flush=True)
    r.eq("kustomize: the resources", kinds, sorted(
        ["ConfigMap", "Secret", "Secret", "StatefulSet", "Service", "Service", "Service",
         "PodDisruptionBudget"]))
    images = [c["image"] for d in out if d["kind"] == "StatefulSet"
              for c in d["spec"]["template"]["spec"]["containers"]]
    r.check("kustomize: the image is replaced", images and "/" in images[0] and ":" in images[0],
            images)


def t_container_config_check(r):
    if not ADMIN:
        print("SKIP: `ringmail -t -c deploy/ringmail-container.yml`: it sets admin_listen, "
              "which this ringmail does not know (%s)" % ADMIN_WHY, flush=True)
        return
    p = run([BIN, "-t", "-c", CONTAINER_YML])
    r.eq("ringmail -t -c deploy/ringmail-container.yml", (p.returncode, p.stderr.decode()),
         (0, ""))


# ---- 3: the Dockerfile ----

def dockerfile_stages():
    """[(from, name, [(instruction, rest)])] of deploy/Dockerfile's logical lines."""
    stages, glob_args, cur = [], {}, None
    lines, acc = [], ""
    for raw in open(DOCKERFILE).read().splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not acc):
            continue
        if s.endswith("\\"):
            acc += s[:-1] + " "
            continue
        lines.append(acc + s)
        acc = ""
    for ln in lines:
        ins, _, rest = ln.partition(" ")
        ins = ins.upper()
        if ins == "FROM":
            parts = rest.split()
            img = re.sub(r"\$\{(\w+)\}", lambda m: glob_args.get(m.group(1), ""), parts[0])
            cur = (img, parts[2] if len(parts) > 2 else None, [])
            stages.append(cur)
        elif cur is None and ins == "ARG":
            k, _, v = rest.partition("=")
            glob_args[k] = v
        elif cur is not None:
            cur[2].append((ins, rest))
    return stages


def needed_packages():
    """Debian packages owning the shared libraries the binary under test loads."""
    p = run(["ldd", BIN])
    pkgs = {}
    for ln in p.stdout.decode().splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", ln)
        if not m:
            continue
        lib, path = m.group(1), m.group(2)
        owner = None
        for cand in (os.path.realpath(path), path):
            q = run(["dpkg", "-S", cand])
            if q.returncode == 0:
                owner = q.stdout.decode().split(":")[0].strip()
                break
        pkgs[lib] = owner
    return pkgs


def t_dockerfile(r):
    st = dockerfile_stages()
    r.eq("Dockerfile: two stages", len(st), 2)
    (img0, name0, ins0), (img1, _, ins1) = st[0], st[-1]
    r.eq("build stage: debian:bookworm AS build", (img0, name0), ("debian:bookworm", "build"))
    r.eq("run stage: debian:bookworm-slim", img1, "debian:bookworm-slim")
    runs0 = " ".join(x for i, x in ins0 if i == "RUN")
    for want in ("deploy/debian-packages.sh build", "cmake --preset release",
                 "cmake --build --preset release", "cmake --install build/release"):
        r.check("build stage runs %s" % want, want in runs0)
    for i, x in ins0 + ins1:
        if i == "COPY" and not x.startswith("--from"):
            src = x.split()[0]
            r.check("COPY source %s exists" % src, os.path.exists(os.path.join(SRC, src)))
    for src, dst in (("deploy/docker-entrypoint.sh", "/usr/local/bin/docker-entrypoint"),
                     ("deploy/docker-healthcheck.sh", "/usr/local/bin/docker-healthcheck"),
                     ("deploy/ringmail-container.yml", "/etc/ringmail/ringmail.yml")):
        r.check("build stage installs %s as %s" % (src, dst),
                re.search(re.escape(src) + r"\s+/out" + re.escape(dst), runs0), runs0[-400:])
    conf = {}
    for i, x in ins1:
        conf.setdefault(i, []).append(x)
    r.eq("USER 10025:10025", conf.get("USER"), ["10025:10025"])
    entry = json.loads(conf["ENTRYPOINT"][0])
    r.eq("ENTRYPOINT", entry, ["/usr/local/bin/docker-entrypoint"])
    r.check("HEALTHCHECK runs docker-healthcheck /healthz",
            '"/usr/local/bin/docker-healthcheck", "/healthz"' in conf["HEALTHCHECK"][0])
    cfg = open(CONTAINER_YML).read()
    spool = re.search(r"^spool_dir:\s*(\S+)", cfg, re.M).group(1)
    r.eq("VOLUME is the container configuration's spool_dir", conf.get("VOLUME"), [spool])
    exposed = sorted(int(p) for p in " ".join(conf["EXPOSE"]).split())
    listen = [int(m) for m in re.findall(r'"0\.0\.0\.0:(\d+)"', cfg)]
    r.eq("EXPOSE: SMTP, submission, smtps and admin ports", exposed, [2465, 2525, 2587, 9025])
    r.check("the container configuration's ports are exposed",
            listen and set(listen) <= set(exposed), listen)
    pkgs = " ".join(x for i, x in ins1 if i == "RUN")
    m = re.search(r"apt-get install -y --no-install-recommends\s+(.*?)\s+\$\{EXTRA_PACKAGES\}",
                  pkgs)
    runtime = set(m.group(1).split()) if m else set()
    r.check("run stage installs runtime packages", runtime, pkgs[:300])
    if not shutil.which("dpkg"):
        print("SKIP: dpkg missing: the libraries are not checked against the packages", flush=True)
        return
    # in debian:bookworm-slim already (libc6, libgcc-s1), or a dependency of
    # android-libboringssl (libstdc++6); sanitizer runtimes only in test builds
    given = {"libc6", "libgcc-s1", "libstdc++6"}
    sanitizers = re.compile(r"^lib(asan|ubsan|tsan|lsan)\d*$")
    for lib, owner in sorted(needed_packages().items()):
        if owner and sanitizers.match(owner):
            continue
        r.check("run stage has %s (%s)" % (owner, lib), owner in runtime | given, runtime)
    ign = open(DOCKERFILE + ".dockerignore").read().split()
    r.check("Dockerfile.dockerignore keeps build/ out", "build/" in ign or "build" in ign)


# ---- 4: the entrypoint ----

FAKE = """#!%s
import json, os, sys
with open(os.environ["FAKE_OUT"], "w") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid()}, f)
""" % sys.executable


class Fake:
    def __init__(self):
        self.d = rmtest.tempdir(prefix="rmtest-entry-")
        self.bindir = os.path.join(self.d, "bin")
        os.mkdir(self.bindir)
        p = os.path.join(self.bindir, "ringmail")
        with open(p, "w") as f:
            f.write(FAKE)
        os.chmod(p, 0o755)
        self.out = os.path.join(self.d, "out.json")

    def run(self, args=(), env=None):
        """(argv the fake ringmail got, its pid, the entrypoint's pid, stdout+stderr)."""
        if os.path.exists(self.out):
            os.unlink(self.out)
        e = {"PATH": self.bindir + ":/usr/bin:/bin", "FAKE_OUT": self.out}
        e.update(env or {})
        p = subprocess.Popen([BASH, ENTRYPOINT] + list(args), env=e, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = p.communicate(timeout=30)
        got = json.load(open(self.out)) if os.path.exists(self.out) else {}
        return got.get("argv"), got.get("pid"), p.pid, out.decode()


def t_entrypoint(r):
    f = Fake()
    conf = ["-c", "/etc/ringmail/ringmail.yml"]
    argv, pid, epid, _ = f.run()
    r.eq("no arguments: ringmail -c /etc/ringmail/ringmail.yml", argv, conf)
    r.eq("ringmail is exec'd (same PID: it gets the container's signals)", pid, epid)
    env = {"RINGMAIL_RELAYHOST": "[10.0.0.5]:25, [10.0.0.6]:25",
           "RINGMAIL_ADMIN_LISTEN": "",
           "RINGMAIL_SMTP_TLS_CAFILE": "/etc/ssl/ca.pem",
           "RINGMAIL_MYHOSTNAME": "ringmail-0.mx.example.com",
           "RINGMAIL_routes": "example.com=lmtp:[10.0.0.7]:24",
           "RINGMAIL_SERVICE_HOST": "10.96.0.10", "RINGMAIL_SERVICE_PORT": "2525",
           "RINGMAIL_SERVICE_PORT_SMTP": "2525", "RINGMAIL_PORT": "tcp://10.96.0.10:2525",
           "RINGMAIL_PORT_2525_TCP_ADDR": "10.96.0.10",
           "RINGMAIL_SMTP_SERVICE_HOST": "10.96.0.11", "RINGMAIL_SMTP_PORT": "tcp://x:25",
           "OTHER": "x", "RINGMAILX": "y"}
    argv, _, _, out = f.run(env=env)
    # in the byte order of the variables' names (upper case before lower case)
    r.eq("environment: -o key=value, sorted by name, service links skipped", argv, conf + [
        "-o", "admin_listen=",
        "-o", "myhostname=ringmail-0.mx.example.com",
        "-o", "relayhost=[10.0.0.5]:25, [10.0.0.6]:25",
        "-o", "smtp_tls_CAfile=/etc/ssl/ca.pem",
        "-o", "routes=example.com=lmtp:[10.0.0.7]:24"])
    r.check("service links are named as ignored", "RINGMAIL_SERVICE_HOST ignored" in out, out)
    argv, _, _, _ = f.run(["-t", "-v", "-o", "relayhost=[10.0.0.9]:25"],
                          {"RINGMAIL_RELAYHOST": "[10.0.0.5]:25"})
    r.eq("options: after the environment's (an explicit -o wins)", argv, conf + [
        "-o", "relayhost=[10.0.0.5]:25", "-t", "-v", "-o", "relayhost=[10.0.0.9]:25"])
    argv, _, _, _ = f.run(["ringmail", "-t"], {"RINGMAIL_CONFIG": "/etc/ringmail/other.yml"})
    r.eq("`ringmail -t`, RINGMAIL_CONFIG names the file (not a key)", argv,
         ["-c", "/etc/ringmail/other.yml", "-t"])
    argv, _, _, _ = f.run(["queue", "list"], {"RINGMAIL_SPOOL_DIR": "/s"})
    r.eq("queue list: with -c and the environment", argv, conf + ["-o", "spool_dir=/s", "queue",
                                                                  "list"])
    argv, _, _, out = f.run(["sh", "-c", "echo other-command"])
    r.check("another command is exec'd as it is", argv is None and "other-command" in out, out)

    # every key ringmail knows, from the environment
    p = run([BIN, "-t", "-v"])
    keys = re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", p.stdout.decode(), re.M)
    r.check("ringmail -t -v lists the keys", len(keys) > 40, keys)
    env = {"RINGMAIL_" + k.upper(): "v%d" % i for i, k in enumerate(keys)}
    argv, _, _, out = f.run(env=env)
    opts = [argv[i + 1] for i in range(len(argv or []) - 1) if argv[i] == "-o"]
    missing = ["%s=v%d" % (k, i) for i, k in enumerate(keys) if "%s=v%d" % (k, i) not in opts]
    r.check("every key of ringmail -t -v, as RINGMAIL_<KEY>, becomes -o key=value (%d keys)"
            % len(keys), not missing and len(opts) == len(keys), (missing, out))


# ---- 5: the healthcheck ----

class Admin(http.server.BaseHTTPRequestHandler):
    status = 200
    seen = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Admin.seen.append((self.path, self.headers.get("Authorization")))
        body = b"ok\n"
        self.send_response(Admin.status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the healthcheck closes once it has the status line
            pass

    def log_message(self, *a):
        pass


def healthcheck(path, env):
    e = {"PATH": "/usr/bin:/bin"}
    e.update(env)
    p = subprocess.run([BASH, HEALTHCHECK, path], env=e, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    return p.returncode, p.stdout.decode()


def t_healthcheck(r):
    srv = http.server.HTTPServer((rmtest.LOOPBACK, 0), Admin)
    port = srv.server_address[1]
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        env = {"RINGMAIL_ADMIN_LISTEN": "0.0.0.0:%d" % port}
        Admin.status = 200
        r.eq("healthcheck: 200 -> exit 0", healthcheck("/healthz", env)[0], 0)
        r.eq("healthcheck: asked for /healthz", Admin.seen[-1], ("/healthz", None))
        Admin.status = 503
        rc, out = healthcheck("/readyz", env)
        r.eq("healthcheck: 503 -> exit 1", rc, 1)
        r.check("healthcheck: says what it got", "503" in out, out)
        tok = os.path.join(rmtest.tempdir(prefix="rmtest-hc-"), "token")
        with open(tok, "w") as f:
            f.write("s3cret-token\n")
        Admin.status = 200
        env["RINGMAIL_ADMIN_TOKEN_FILE"] = tok
        r.eq("healthcheck with a token: exit 0", healthcheck("/healthz", env)[0], 0)
        r.eq("healthcheck: sent the bearer token", Admin.seen[-1],
             ("/healthz", "Bearer s3cret-token"))
    finally:
        srv.shutdown()
        srv.server_close()
    dead = rmtest.free_port()
    rc, out = healthcheck("/healthz", {"RINGMAIL_ADMIN_LISTEN": "127.0.0.1:%d" % dead})
    r.eq("healthcheck: nothing listening -> exit 1", rc, 1)


# ---- 6: the container without an engine ----

RUN_CONTAINER = r"""
set -eu
spool=$0; ro=$1; shift 1
if [ "$ro" = 1 ]; then
    # every mount read-only, except the kernel's and the spool ("the volume")
    mps=$(awk '{print $5}' /proc/self/mountinfo | grep -v '\\' | sort -u)
    mount --bind "$spool" "$spool"
    for m in $mps; do
        case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
        mount -o remount,bind,ro "$m" 2>/dev/null || true
    done
    if touch "$spool/../ro-probe" 2>/dev/null; then
        echo "run-container: the root did not become read-only" >&2
        exit 97
    fi
fi
exec setpriv --reuid 10025 --regid 10025 --clear-groups --no-new-privs \
     --inh-caps=-all --bounding-set=-all env -i "$@"
"""


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                k, _, v = ln.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def t_container(r):
    if os.geteuid() != 0:
        print("SKIP: not root: the container run needs setpriv and namespaces", flush=True)
        return
    for tool in ("unshare", "setpriv"):
        if not shutil.which(tool):
            print("SKIP: %s missing (util-linux)" % tool, flush=True)
            return
    probe = run(["unshare", "-m", "-p", "-f", "--propagation", "private", "true"])
    if probe.returncode != 0:
        print("SKIP: cannot make namespaces here: %s" % probe.stderr.decode().strip(), flush=True)
        return
    base = rmtest.tempdir(prefix="rmtest-container-")
    os.chmod(base, 0o755)
    # the image's files, copied where uid 10025 can read them
    img = os.path.join(base, "image")
    os.makedirs(os.path.join(img, "bin"))
    shutil.copy(BIN, os.path.join(img, "bin", "ringmail"))
    shutil.copy(ENTRYPOINT, os.path.join(img, "bin", "docker-entrypoint"))
    shutil.copy(HEALTHCHECK, os.path.join(img, "bin", "docker-healthcheck"))
    cfg = os.path.join(img, "ringmail.yml")
    text = open(CONTAINER_YML).read()
    if not ADMIN:
        # only for this run: this binary has no admin endpoint yet
        text = re.sub(r"^admin_listen:.*$", "", text, flags=re.M)
    with open(cfg, "w") as f:
        f.write(text)
    for root, dirs, files in os.walk(img):
        for x in dirs + files:
            os.chmod(os.path.join(root, x), 0o755)
    spool = os.path.join(base, "volume")
    os.mkdir(spool, 0o700)
    os.chown(spool, 10025, 10025)
    port, aport = rmtest.free_port(), rmtest.free_port()
    env = ["PATH=%s:/usr/bin:/bin" % os.path.join(img, "bin"),
           "RINGMAIL_CONFIG=%s" % cfg,
           "RINGMAIL_LISTEN=127.0.0.1:%d" % port,
           "RINGMAIL_SPOOL_DIR=%s" % spool,
           "RINGMAIL_MAILDIR_DIR=%s/maildir" % spool,
           "RINGMAIL_RELAY_DOMAINS=example.com",
           "RINGMAIL_MYHOSTNAME=ringmail-0.mx.example.com"]
    if ADMIN:
        env.append("RINGMAIL_ADMIN_LISTEN=127.0.0.1:%d" % aport)
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env.append("%s=%s" % (k, os.environ[k]))
    logp = os.path.join(base, "container.log")
    logf = open(logp, "wb")
    p = subprocess.Popen(["unshare", "-m", "-p", "-f", "--propagation", "private", "sh", "-c",
                          RUN_CONTAINER, spool, "1"] + env +
                         [os.path.join(img, "bin", "docker-entrypoint")],
                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    log = lambda: open(logp, "rb").read().decode("utf-8", "replace")  # noqa: E731
    try:
        started = rmtest.wait_until(lambda: "event=started" in log() or p.poll() is not None,
                                    30, 0.05)
        r.check("container: ringmail started (read-only root, uid 10025, PID 1)",
                started and p.poll() is None, log()[-3000:])
        if p.poll() is not None:
            return
        kids = rmtest.wait_until(lambda: children(p.pid), 5, 0.05)
        pid = kids[0] if kids else None
        st = proc_status(pid) if pid else {}
        print("   ringmail: host pid %s, NSpid %s, Uid %s, CapEff %s, NoNewPrivs %s"
              % (pid, st.get("NSpid"), st.get("Uid"), st.get("CapEff"), st.get("NoNewPrivs")),
              flush=True)
        r.eq("container: ringmail is PID 1 in its namespace", (st.get("NSpid") or "").split()[-1:],
             ["1"])
        r.eq("container: runs as 10025", (st.get("Uid") or "").split()[:1], ["10025"])
        r.eq("container: no capabilities", st.get("CapEff"), "0000000000000000")
        r.eq("container: no_new_privs", st.get("NoNewPrivs"), "1")
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().split(b"\0")
        r.check("container: the environment became -o options",
                b"listen=127.0.0.1:%d" % port in cmd and b"spool_dir=" + spool.encode() in cmd,
                cmd)
        s = smtplib.SMTP(rmtest.LOOPBACK, port, timeout=15)
        try:
            s.ehlo("client.example")
            refused = s.sendmail("a@outside.example", ["bob@example.com"],
                                 b"Subject: container\r\nMessage-ID: <container@rmtest>\r\n\r\n"
                                 b"hello\r\n")
        finally:
            s.quit()
        r.eq("container: message accepted", refused, {})
        new = os.path.join(spool, "maildir", "new")
        got = rmtest.wait_until(lambda: os.path.isdir(new) and os.listdir(new), 15, 0.1)
        r.check("container: the message is in the Maildir on the volume", got, log()[-2000:])
        if ADMIN:
            henv = {"RINGMAIL_ADMIN_LISTEN": "0.0.0.0:%d" % aport}
            r.eq("container: healthcheck /healthz", healthcheck("/healthz", henv), (0, ""))
            r.eq("container: healthcheck /readyz", healthcheck("/readyz", henv), (0, ""))
        else:
            print("   (no admin endpoint in this ringmail: healthcheck not run)", flush=True)
        os.kill(pid, 15)  # from outside the namespace, as the runtime does
        try:
            rc = p.wait(40)
        except subprocess.TimeoutExpired:
            rc = None
        r.eq("container: SIGTERM to PID 1 drains, exit 0", rc, 0)
        r.check("container: event=stopped logged", "event=stopped" in log(), log()[-1500:])
        r.check("container: nothing but the spool was written (read-only root)",
                "Read-only file system" not in log(), log()[-1500:])
        for pat in ("ERROR: AddressSanitizer", "runtime error:"):
            r.check("container: no sanitizer report (%s)" % pat, pat not in log(), log()[-3000:])
    finally:
        if p.poll() is None:
            for k in children(p.pid):
                try:
                    os.kill(k, 9)
                except ProcessLookupError:
                    pass
            p.kill()
            p.wait(10)
        logf.close()


# ---- 7: io_uring under seccomp ----

def seccomp_deny(nrs, errno_=1):
    """preexec_fn: a seccomp filter that fails the system calls nrs with errno_."""
    def install():
        libc = ctypes.CDLL(None, use_errno=True)
        ins = [struct.pack("HBBI", 0x20, 0, 0, 4),                      # A = arch
               struct.pack("HBBI", 0x15, 0, 2 + 2 * len(nrs), 0xC000003E)]  # x86_64?
        ins.append(struct.pack("HBBI", 0x20, 0, 0, 0))                  # A = nr
        for nr in nrs:
            ins.append(struct.pack("HBBI", 0x15, 0, 1, nr))             # nr == ?
            ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x00050000 | errno_))  # ERRNO
        ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))         # ALLOW
        ins.append(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))         # other arch: ALLOW
        prog = b"".join(ins)
        buf = ctypes.create_string_buffer(prog, len(prog))

        class Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        fp = Fprog(len(ins), ctypes.cast(buf, ctypes.c_void_p))
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            os._exit(120)
        if libc.prctl(22, 2, ctypes.byref(fp), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
            os._exit(121)
    return install


def t_seccomp_io_uring(r):
    if platform.machine() != "x86_64":
        print("SKIP: the seccomp filter here is written for x86_64", flush=True)
        return
    d = rmtest.tempdir(prefix="rmtest-seccomp-")
    port = rmtest.free_port()
    args = [BIN, "-o", "listen=127.0.0.1:%d" % port, "-o", "spool_dir=%s/spool" % d,
            "-o", "user=root", "-o", "reactors=2", "-o", "workers=2"]
    if ADMIN:
        args += ["-o", "admin_listen="]
    ops = open(os.path.join(SRC, "docs", "operations.md")).read()
    # io_uring_setup (425), refused with EPERM as by Docker's and containerd's
    # default profiles, then with ENOSYS as by Podman's and CRI-O's
    for errno_, line in ((1, IO_URING_FATAL),
                         (38, IO_URING_FATAL.replace("Operation not permitted",
                                                     "Function not implemented"))):
        p = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30,
                           preexec_fn=seccomp_deny([425], errno_))
        out = p.stdout.decode("utf-8", "replace")
        r.check("seccomp, errno %d: ringmail stops (exit != 0)" % errno_,
                p.returncode not in (0, 120, 121, None), (p.returncode, out[-1500:]))
        r.check("seccomp, errno %d: %s" % (errno_, line), line in out, out[-1500:])
        r.check("seccomp, errno %d: never started" % errno_, "event=started" not in out)
        r.check("docs/operations.md quotes it", line in ops)
    man = os.path.join(K8S, "statefulset.yaml")
    r.check("statefulset.yaml quotes that line", IO_URING_FATAL in open(man).read())


def main():
    rmtest.main([t_k8s_documents, t_k8s_statefulset, t_k8s_configmap_check, t_kustomize,
                 t_container_config_check, t_dockerfile, t_entrypoint, t_healthcheck,
                 t_container, t_seccomp_io_uring])


if __name__ == "__main__":
    main()
