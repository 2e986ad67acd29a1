#!/usr/bin/env python3
"""Jasmin 0.11.1 (the SMS gateway, PyPI `jasmin`) for tests, in a venv of the
project's own, on its own RabbitMQ vhost and Redis database.

  jasmin.py install                 # venv at $JASMIN_VENV with jasmin==0.11.1 (idempotent)
  jasmin.py start DIR --vhost V --redis-db N --jcli-port P --router-port P \\
      --cm-port P --smpps-port P --smsc-port P [--ingest-url URL] \\
      [--http-api-port P --mt-user U --mt-password W]
                                    # config in DIR, jasmind started, then through jcli:
                                    # an SMPP client connector `upstream` to the SMSC on
                                    # 127.0.0.1:--smsc-port; with --ingest-url an HTTP
                                    # client connector `ingest` (POST URL) and the MO
                                    # DefaultRoute to it; with --http-api-port the HTTP
                                    # API (/send) on that port, its DLR lookup and DLR
                                    # thrower, a group `notifiers` with the user
                                    # --mt-user, and the MT DefaultRoute to `upstream`;
                                    # the connector is started last
  jasmin.py stop DIR                # SIGTERM jasmind (pid file), SIGKILL after 15 s

JASMIN_VENV defaults to ${XDG_CACHE_HOME:-~/.cache}/meter-readings/jasmin-venv.
jasmind runs with ROOT_PATH=DIR: its config is DIR/etc/jasmin/jasmin.cfg, its logs
DIR/var/log/jasmin/, its stdout DIR/jasmind.out. Its HTTP API is off unless
--http-api-port is given (the MT side: replies sent by the notifier, SMS_GATEWAY=jasmin,
their delivery reports thrown to the dlr-url); its SMPP server cannot be off (jCli and
the MO thrower need it) and listens, unused, on --smpps-port. The test plays the
upstream SMSC: scripts/smpp-smsc.py. See docs/channels.md.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

VERSION = "0.11.1"


def venv() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "meter-readings" / "jasmin-venv"
    return Path(os.environ.get("JASMIN_VENV", default))


def die(msg: str) -> "NoReturn":
    print(f"jasmin.py: {msg}", file=sys.stderr)
    sys.exit(1)


def cmd_install(_args) -> None:
    v = venv()
    if (v / "bin" / "jasmind.py").exists():
        print(f"jasmin.py: jasmin already installed in {v}", file=sys.stderr)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(v)], check=True)
        subprocess.run([str(v / "bin" / "pip"), "install", "-q", f"jasmin=={VERSION}"], check=True)
        print(f"jasmin.py: installed jasmin {VERSION} in {v}", file=sys.stderr)
    patch_dlr(v)


# Jasmin 0.11.1 never reports an HTTP API message's fate (jookies/jasmin#1236, open):
# after each submit_sm_resp, managers/listeners.py builds the DLR from `_pdu.response`,
# the request PDU, which has no response ("'SubmitSM' object has no attribute
# 'response'"; for a refused submit_sm, `_pdu` is not even bound), so nothing reaches
# the DLR lookup: no level-1 report, and no mapping of the SMSC's message id, so no
# level-2 report either. The fix given in the issue: the response is `r.response`.
DLR_FIX = [
    ("dlr = DLR(pdu_type=_pdu.response.id, msgid=msgid, status=_pdu.response.status,\n"
     "                          smpp_msgid=_pdu.response.params['message_id'])",
     "dlr = DLR(pdu_type=r.response.id, msgid=msgid, status=r.response.status,\n"
     "                          smpp_msgid=r.response.params['message_id'])"),
    ("dlr = DLR(pdu_type=_pdu.response.id, msgid=msgid, status=_pdu.response.status)",
     "dlr = DLR(pdu_type=r.response.id, msgid=msgid, status=r.response.status)"),
]


def dlr_fixed(v: Path) -> bool:
    found = sorted(v.glob("lib/python*/site-packages/jasmin/managers/listeners.py"))
    return bool(found) and all(new in found[0].read_text() for _, new in DLR_FIX)


def patch_dlr(v: Path) -> None:
    """Applies jookies/jasmin#1236's fix to the venv's Jasmin (idempotent)."""
    found = sorted(v.glob("lib/python*/site-packages/jasmin/managers/listeners.py"))
    if not found:
        die(f"jasmin/managers/listeners.py not found under {v}")
    path = found[0]
    text = path.read_text()
    if all(new in text for _, new in DLR_FIX):
        return
    for old, new in DLR_FIX:
        if old not in text:
            die(f"{path}: the code jookies/jasmin#1236 fixes is not there (not Jasmin {VERSION}?)")
        text = text.replace(old, new)
    path.write_text(text)
    for cached in path.parent.glob("__pycache__/listeners.*.pyc"):
        cached.unlink()
    print(f"jasmin.py: applied the DLR fix of jookies/jasmin#1236 to {path}", file=sys.stderr)


def amqp_spec(v: Path) -> Path:
    found = sorted(v.glob("lib/python*/site-packages/txamqp/specs/standard/amqp0-9-1.stripped.xml"))
    if not found:
        die(f"txamqp's AMQP 0-9-1 spec not found under {v}")
    return found[0]


def write_config(root: Path, a) -> None:
    etc = root / "etc" / "jasmin"
    (etc / "store").mkdir(parents=True, exist_ok=True)
    (root / "var" / "log" / "jasmin").mkdir(parents=True, exist_ok=True)
    (etc / "jasmin.cfg").write_text(f"""# written by scripts/jasmin.py start {root}
[jcli]
bind = 127.0.0.1
port = {a.jcli_port}
authentication = False

[smpp-server]
bind = 127.0.0.1
port = {a.smpps_port}

[router]
bind = 127.0.0.1
port = {a.router_port}

[client-management]
bind = 127.0.0.1
port = {a.cm_port}

[amqp-broker]
host = 127.0.0.1
port = {a.amqp_port}
vhost = {a.vhost}
username = guest
password = guest
spec = {amqp_spec(venv())}

[redis-client]
host = 127.0.0.1
port = 6379
dbid = {a.redis_db}

[deliversm-thrower]
# A refused or unacknowledged MO is thrown again this often, this many times.
max_retries = 10
retry_delay = 1
{mt_config(a)}""")


def mt_config(a) -> str:
    if a.http_api_port is None:
        return ""
    return f"""
[http-api]
bind = 127.0.0.1
port = {a.http_api_port}
# Replies are a resident's data: their text stays out of Jasmin's log.
log_privacy = True

[dlr]
# A receipt that overtakes its submit_sm_resp's mapping is looked up again soon.
dlr_lookup_retry_delay = 1
dlr_lookup_max_retries = 5

[dlr-thrower]
# A DLR the dlr-url did not answer `ACK/Jasmin` is thrown again this often, this many times.
http_timeout = 30
retry_delay = 1
max_retries = 5
"""


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Jcli:
    """jCli over its telnet port: one command a line, waits for the prompt."""

    PROMPTS = (b"jcli : ", b"> ")

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        self.buf = b""
        # The console writes its banner and its first prompt only after some input.
        time.sleep(1)
        self._drain()

    def _drain(self) -> None:
        try:
            while self.sock.recv(65536):
                pass
        except socket.timeout:
            pass

    def run(self, line: str, deadline: float = 20) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for p in self.PROMPTS:
                i = self.buf.find(p)
                if i >= 0:
                    out, self.buf = self.buf[:i], self.buf[i + len(p):]
                    return out.decode(errors="replace")
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            if not data:
                break
            self.buf += re.sub(rb"\xff[\xfb-\xfe].|\xff[\xf0-\xfa]", b"", data)
        die(f"jcli gave no prompt after {line!r}; got {self.buf[-300:]!r}")


def configure(a) -> None:
    jcli = Jcli(a.jcli_port)
    script = [
        "smppccm -a", "cid upstream", "host 127.0.0.1", f"port {a.smsc_port}",
        "username esme", "password pwd", "bind transceiver", "ok",
    ]
    if a.ingest_url:
        script += [
            "httpccm -a", "cid ingest", f"url {a.ingest_url}", "method POST", "ok",
            "morouter -a", "type DefaultRoute", "connector http(ingest)", "ok",
        ]
    if a.http_api_port is not None:
        # The notifier's account on the HTTP API (every MT authorization is on by
        # default: send, long content, dlr level and method, source address, hex content).
        script += [
            "group -a", "gid notifiers", "ok",
            "user -a", f"username {a.mt_user}", f"password {a.mt_password}",
            "gid notifiers", f"uid {a.mt_user}", "ok",
            "mtrouter -a", "type DefaultRoute", "connector smppc(upstream)", "rate 0.00", "ok",
        ]
    script.append("smppccm -1 upstream")
    for line in script:
        out = jcli.run(line)
        if re.search(r"error|unknown|invalid", out, re.IGNORECASE):
            die(f"jcli refused {line!r}: {out.strip()}")
    parts = ["smppc upstream"]
    if a.ingest_url:
        parts.append("httpcc ingest, MO DefaultRoute")
    if a.http_api_port is not None:
        parts.append(f"HTTP API user {a.mt_user}, MT DefaultRoute")
    print(f"jasmin.py: configured ({'; '.join(parts)})", file=sys.stderr)


def cmd_start(a) -> None:
    v = venv()
    jasmind = v / "bin" / "jasmind.py"
    if not jasmind.exists():
        die(f"jasmin is not installed in {v}: run scripts/jasmin.py install")
    root = Path(a.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if a.http_api_port is not None and not (a.mt_user and a.mt_password):
        die("--http-api-port needs --mt-user and --mt-password")
    if a.http_api_port is not None and not dlr_fixed(v):
        die(f"Jasmin in {v} lacks the DLR fix of jookies/jasmin#1236 (no delivery report "
            "would ever come): run scripts/jasmin.py install")
    ports = [a.jcli_port, a.router_port, a.cm_port, a.smpps_port]
    if a.http_api_port is not None:
        ports.append(a.http_api_port)
    for port in ports:
        if listening(port):
            die(f"TCP port {port} is already in use")
    write_config(root, a)
    env = dict(os.environ, ROOT_PATH=str(root))
    # jasmind cannot run without its SMPP server (the thrower and jCli need it): it
    # listens on --smpps-port, unused. The DLR lookup and thrower run inside jasmind
    # (not as the separate dlrlookupd/dlrd daemons): one process to start and stop.
    flags = ["--enable-deliver-thrower"]
    if a.http_api_port is None:
        flags.append("--disable-http-api")
    else:
        flags += ["--enable-dlr-lookup", "--enable-dlr-thrower"]
    with open(root / "jasmind.out", "wb") as out:
        proc = subprocess.Popen(
            [str(v / "bin" / "python"), str(jasmind), "-c", str(root / "etc/jasmin/jasmin.cfg"),
             *flags],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    (root / "jasmind.pid").write_text(str(proc.pid))
    end = time.monotonic() + a.start_timeout
    while not listening(a.jcli_port):
        if proc.poll() is not None:
            die(f"jasmind exited ({proc.returncode}); see {root}/jasmind.out")
        if time.monotonic() > end:
            stop(root)
            die(f"jcli not listening after {a.start_timeout}s; see {root}/jasmind.out")
        time.sleep(0.2)
    try:
        configure(a)
        while a.http_api_port is not None and not listening(a.http_api_port):
            if time.monotonic() > end:
                die(f"the HTTP API is not listening after {a.start_timeout}s; see {root}/jasmind.out")
            time.sleep(0.2)
    except SystemExit:
        stop(root)
        raise
    print(f"jasmin up: jasmind pid {proc.pid}; jcli 127.0.0.1:{a.jcli_port}; logs in {root}/var/log/jasmin")


def stop(root: Path) -> None:
    pidfile = root / "jasmind.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        pidfile.unlink()
        return
    if str(root).encode() not in cmdline:  # pid reused by another process
        pidfile.unlink()
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < end:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pidfile.unlink()
    print(f"stopped jasmind (pid {pid})")


def main() -> None:
    ap = argparse.ArgumentParser(description="Jasmin for tests", epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install")
    s = sub.add_parser("start")
    s.add_argument("dir")
    s.add_argument("--vhost", required=True)
    s.add_argument("--amqp-port", type=int, default=5672)
    s.add_argument("--redis-db", type=int, required=True)
    s.add_argument("--jcli-port", type=int, required=True)
    s.add_argument("--router-port", type=int, required=True)
    s.add_argument("--cm-port", type=int, required=True)
    s.add_argument("--smpps-port", type=int, required=True)
    s.add_argument("--smsc-port", type=int, required=True)
    s.add_argument("--ingest-url")
    s.add_argument("--http-api-port", type=int)
    s.add_argument("--mt-user")
    s.add_argument("--mt-password")
    s.add_argument("--start-timeout", type=float, default=60)
    t = sub.add_parser("stop")
    t.add_argument("dir")
    a = ap.parse_args()
    if a.cmd == "install":
        cmd_install(a)
    elif a.cmd == "start":
        cmd_start(a)
    else:
        stop(Path(a.dir).resolve())


if __name__ == "__main__":
    main()
