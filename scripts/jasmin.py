#!/usr/bin/env python3
"""Jasmin 0.11.1 (the SMS gateway, PyPI `jasmin`) for tests, in a venv of the
project's own, on its own RabbitMQ vhost and Redis database.

  jasmin.py install                 # venv at $JASMIN_VENV with jasmin==0.11.1 (idempotent)
  jasmin.py start DIR --vhost V --redis-db N --jcli-port P --router-port P \\
      --cm-port P --smpps-port P --smsc-port P --ingest-url URL
                                    # config in DIR, jasmind started, then through jcli:
                                    # an SMPP client connector `upstream` to the SMSC on
                                    # 127.0.0.1:--smsc-port, an HTTP client connector
                                    # `ingest` (POST --ingest-url) and the MO DefaultRoute
                                    # to it; the connector is started last
  jasmin.py stop DIR                # SIGTERM jasmind (pid file), SIGKILL after 15 s

JASMIN_VENV defaults to ${XDG_CACHE_HOME:-~/.cache}/meter-readings/jasmin-venv.
jasmind runs with ROOT_PATH=DIR: its config is DIR/etc/jasmin/jasmin.cfg, its logs
DIR/var/log/jasmin/, its stdout DIR/jasmind.out. Its HTTP API is off; its SMPP server
cannot be (jCli and the MO thrower need it) and listens, unused, on --smpps-port. The
test plays the upstream SMSC: scripts/smpp-smsc.py. See docs/channels.md.
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
        return
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True)
    subprocess.run([str(v / "bin" / "pip"), "install", "-q", f"jasmin=={VERSION}"], check=True)
    print(f"jasmin.py: installed jasmin {VERSION} in {v}", file=sys.stderr)


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
""")


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
        "httpccm -a", "cid ingest", f"url {a.ingest_url}", "method POST", "ok",
        "morouter -a", "type DefaultRoute", "connector http(ingest)", "ok",
        "smppccm -1 upstream",
    ]
    for line in script:
        out = jcli.run(line)
        if re.search(r"error|unknown|invalid", out, re.IGNORECASE):
            die(f"jcli refused {line!r}: {out.strip()}")
    print("jasmin.py: configured (smppc upstream, httpcc ingest, MO DefaultRoute)", file=sys.stderr)


def cmd_start(a) -> None:
    v = venv()
    jasmind = v / "bin" / "jasmind.py"
    if not jasmind.exists():
        die(f"jasmin is not installed in {v}: run scripts/jasmin.py install")
    root = Path(a.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for port in (a.jcli_port, a.router_port, a.cm_port, a.smpps_port):
        if listening(port):
            die(f"TCP port {port} is already in use")
    write_config(root, a)
    env = dict(os.environ, ROOT_PATH=str(root))
    with open(root / "jasmind.out", "wb") as out:
        proc = subprocess.Popen(
            [str(v / "bin" / "python"), str(jasmind), "-c", str(root / "etc/jasmin/jasmin.cfg"),
             # jasmind cannot run without its SMPP server (the thrower and
             # jCli need it): it listens on --smpps-port, unused.
             "--enable-deliver-thrower", "--disable-http-api"],
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
    s.add_argument("--ingest-url", required=True)
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
