#!/usr/bin/env python3
"""SMTP sink for tests: saves every received message as a file.

    scripts/smtp-sink.py --host 127.0.0.1 --port 2525 --dir OUTDIR
                         [--fail-with CODE [--fail-stage rcpt|data] [--fail-times N]]
                         [--auth USER:PASSWORD] [--no-smtputf8]
                         [--tls implicit|starttls --tls-cert PEM --tls-key PEM]

Each accepted message becomes OUTDIR/<UTC time>-<seq>.eml: the envelope as
`X-Envelope-From:` / `X-Envelope-To:` (one per recipient) / `X-Received-At:`
header lines, then the raw DATA exactly as received (CRLF line ends, dots
unstuffed). A JSON sidecar with the same stem (`.json`: mail_from, rcpt_tos,
received_at, size, eml) is written first; the `.eml` is renamed into place last,
so once a `.eml` exists both files are complete. Files starting with `.` are
temporary.

One line per message on stdout: `smtp-sink: saved FILE from=... to=... size=N`.
The first stdout line is `smtp-sink: listening on HOST:PORT`.

--fail-with CODE answers RCPT TO (default) or DATA (--fail-stage data) with CODE
(e.g. 451 = temporary, 550 = permanent), for every message or only the first
N attempts (--fail-times N; counted per RCPT / DATA command).
--auth USER:PASSWORD advertises AUTH PLAIN/LOGIN (allowed without TLS) and
requires it. --no-smtputf8 does not offer SMTPUTF8 (RFC 6531), as most relays do
not: an envelope address that is not ASCII is then refused. SIGTERM or SIGINT
stops the server cleanly (exit 0).
--tls implicit speaks TLS from the first byte (what `smtps://` expects); --tls
starttls offers STARTTLS and refuses mail before it (`smtp://…?tls=required`).
Both with the certificate chain and key given (Python's ssl module, OpenSSL).

Needs aiosmtpd: `pip install aiosmtpd` or `apt-get install python3-aiosmtpd`.
"""
import argparse
import asyncio
import datetime
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import warnings

# aiosmtpd warns (per connection) about AUTH without TLS, which --auth wants on purpose
warnings.filterwarnings("ignore", module="aiosmtpd")
warnings.filterwarnings("ignore", message=".*AUTH while not requiring TLS.*")
logging.getLogger("mail.log").setLevel(logging.ERROR)

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # pragma: no cover
    print("smtp-sink: python module aiosmtpd missing: pip install aiosmtpd "
          "(or apt-get install python3-aiosmtpd)", file=sys.stderr)
    sys.exit(2)


def write_atomic(path: str, data: bytes) -> None:
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def header_safe(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


class SinkHandler:
    def __init__(self, outdir: str, fail_with, fail_stage: str, fail_times):
        self.outdir = outdir
        self.fail_with = fail_with
        self.fail_stage = fail_stage
        self.fail_left = fail_times  # None = always
        self.seq = itertools.count(1)

    def _failure(self):
        if self.fail_with is None:
            return None
        if self.fail_left is not None:
            if self.fail_left <= 0:
                return None
            self.fail_left -= 1
        code = self.fail_with
        enh = "4.3.0" if 400 <= code < 500 else "5.0.0"
        return f"{code} {enh} smtp-sink: simulated failure"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.fail_stage == "rcpt":
            fail = self._failure()
            if fail:
                print(f"smtp-sink: RCPT {address} answered {fail}", flush=True)
                return fail
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_stage == "data":
            fail = self._failure()
            if fail:
                print(f"smtp-sink: DATA from={envelope.mail_from} answered {fail}", flush=True)
                return fail
        now = datetime.datetime.now(datetime.timezone.utc)
        stem = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{next(self.seq):06d}"
        raw = envelope.original_content or b""
        head = [f"X-Envelope-From: <{header_safe(envelope.mail_from or '')}>"]
        head += [f"X-Envelope-To: <{header_safe(r)}>" for r in envelope.rcpt_tos]
        head.append(f"X-Received-At: {now.isoformat()}")
        eml = ("\r\n".join(head) + "\r\n").encode("utf-8") + raw
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "received_at": now.isoformat(),
            "size": len(raw),
            "eml": f"{stem}.eml",
        }
        write_atomic(os.path.join(self.outdir, f"{stem}.json"),
                     json.dumps(meta, ensure_ascii=False).encode("utf-8") + b"\n")
        write_atomic(os.path.join(self.outdir, f"{stem}.eml"), eml)
        print(f"smtp-sink: saved {os.path.join(self.outdir, stem + '.eml')} "
              f"from={envelope.mail_from} to={','.join(envelope.rcpt_tos)} size={len(raw)}",
              flush=True)
        return "250 2.0.0 OK: saved"


class Authenticator:
    def __init__(self, user: str, password: str):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login == self.user and auth_data.password == self.password
        return AuthResult(success=ok, handled=False)


def main() -> int:
    ap = argparse.ArgumentParser(description="SMTP sink: saves received messages as .eml files")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--dir", required=True, help="output directory (created if missing)")
    ap.add_argument("--fail-with", type=int, metavar="CODE",
                    help="answer with this SMTP code (400-599), e.g. 451 or 550")
    ap.add_argument("--fail-stage", choices=["rcpt", "data"], default="rcpt")
    ap.add_argument("--fail-times", type=int, metavar="N",
                    help="fail only the first N RCPT/DATA commands, then accept")
    ap.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH PLAIN/LOGIN")
    ap.add_argument("--no-smtputf8", action="store_true",
                    help="do not offer SMTPUTF8 (ASCII envelopes only)")
    ap.add_argument("--tls", choices=["implicit", "starttls"], help="serve over TLS")
    ap.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain)")
    ap.add_argument("--tls-key", metavar="PEM", help="server private key")
    args = ap.parse_args()
    if args.tls and not (args.tls_cert and args.tls_key):
        ap.error("--tls needs --tls-cert and --tls-key")

    if args.fail_with is not None and not 400 <= args.fail_with <= 599:
        ap.error("--fail-with wants a 4xx or 5xx code")
    os.makedirs(args.dir, exist_ok=True)
    outdir = os.path.abspath(args.dir)

    handler = SinkHandler(outdir, args.fail_with, args.fail_stage, args.fail_times)
    smtp_kwargs = dict(enable_SMTPUTF8=not args.no_smtputf8, decode_data=False,
                       hostname="smtp-sink")
    if args.auth:
        user, _, password = args.auth.partition(":")
        smtp_kwargs.update(authenticator=Authenticator(user, password),
                           auth_required=True, auth_require_tls=False)

    tls_context = None
    if args.tls:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls == "starttls":
        smtp_kwargs.update(tls_context=tls_context, require_starttls=True)

    async def run():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(lambda: SMTP(handler, **smtp_kwargs),
                                          host=args.host, port=args.port,
                                          ssl=tls_context if args.tls == "implicit" else None)
        print(f"smtp-sink: listening on {args.host}:{args.port}, saving to {outdir}", flush=True)
        await stop.wait()
        server.close()
        try:  # Python >= 3.12 waits for open client connections here
            await asyncio.wait_for(server.wait_closed(), 2)
        except asyncio.TimeoutError:
            pass
        print("smtp-sink: stopped", flush=True)

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"smtp-sink: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
