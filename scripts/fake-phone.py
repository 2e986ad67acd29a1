#!/usr/bin/env python3
"""Play the phone network against Kannel's fake SMSC (the `smsc = fake` group).

bearerbox LISTENS on the fake SMSC port; this script connects to it, as
/usr/lib/kannel/test/fakesmsc does. It needs only the Python standard library.

    scripts/fake-phone.py [--host 127.0.0.1] [--port 20000]
                          [--send 'FROM TO TEXT']... [--expect N] [--timeout 10]
                          [--udh-coding auto|ucs2|text]

* each --send is written as one line: `FROM TO text TEXT` when TEXT is
  printable ASCII, else `FROM TO ucs2 <URL-encoded UTF-16BE>`;
* then it reads what Kannel sends to phones until N complete messages arrived
  (multi-part `udh` lines reassembled) or --timeout expires, and prints one JSON
  object per message on stdout: {"from", "to", "text", "coding", "parts", "lines"};
* exit status 0 when N messages arrived (or N = 0), 1 on timeout, 2 on usage or
  connection errors.

Protocol details and samples: docs/kannel.md.
"""
import argparse
import json
import socket
import sys
import time
import urllib.parse


def urldecode(s: str) -> bytes:
    """Kannel's octstr_url_decode: '+' is a space, %XX a byte."""
    return urllib.parse.unquote_to_bytes(s.replace("+", " "))


def encode_mo(sender: str, receiver: str, text: str) -> bytes:
    if text.isascii() and text.isprintable():
        return f"{sender} {receiver} text {text}\n".encode("ascii")
    data = urllib.parse.quote(text.encode("utf-16-be"), safe="")
    return f"{sender} {receiver} ucs2 {data}\n".encode("ascii")


def parse_udh(udh: bytes):
    """Return (ref, total, seq) from a concatenation IE, or None."""
    if not udh:
        return None
    i, end = 1, min(len(udh), 1 + udh[0])
    while i + 1 < end:
        iei, ielen = udh[i], udh[i + 1]
        val = udh[i + 2:i + 2 + ielen]
        if iei == 0x00 and ielen == 3:
            return val[0], val[1], val[2]
        if iei == 0x08 and ielen == 4:
            return (val[0] << 8) | val[1], val[2], val[3]
        i += 2 + ielen
    return None


def looks_ucs2(data: bytes) -> bool:
    """Heuristic for reassembled udh payloads (the line does not carry the coding):
    UTF-16BE of Latin/Cyrillic/punctuation has high bytes 0x00, 0x04, 0x20 or 0x21."""
    return len(data) > 0 and len(data) % 2 == 0 and \
        all(b in (0x00, 0x04, 0x20, 0x21) for b in data[0::2])


def decode_payload(data: bytes, coding: str) -> str:
    if coding == "ucs-2":
        return data.decode("utf-16-be", errors="replace")
    return data.decode("utf-8", errors="replace")


class Reassembler:
    def __init__(self, udh_coding: str):
        self.udh_coding = udh_coding
        self.pending = {}

    def feed(self, line: str):
        """Return a finished message dict, or None while parts are missing."""
        parts = line.split(" ")
        if len(parts) < 3:
            return {"error": "short line", "lines": [line]}
        sender, receiver, kind = parts[0], parts[1], parts[2]
        rest = line.split(" ", 3)[3] if len(parts) > 3 else ""
        if kind == "text":
            return self._msg(sender, receiver, rest, "text", [line])
        if kind == "ucs-2":
            return self._msg(sender, receiver, decode_payload(urldecode(rest), "ucs-2"), "ucs-2", [line])
        if kind == "data":
            raw = urldecode(rest)
            m = self._msg(sender, receiver, raw.decode("latin-1"), "data", [line])
            m["hex"] = raw.hex()
            return m
        if kind == "udh" and len(parts) == 6 and parts[4] == "data":
            udh, data = urldecode(parts[3]), urldecode(parts[5])
            concat = parse_udh(udh)
            if concat is None:
                return self._finish(sender, receiver, [data], [line])
            ref, total, seq = concat
            key = (sender, receiver, ref, total)
            got = self.pending.setdefault(key, {})
            got[seq] = (data, line)
            if len(got) < total:
                return None
            del self.pending[key]
            ordered = [got[i] for i in sorted(got)]
            return self._finish(sender, receiver, [d for d, _ in ordered], [l for _, l in ordered])
        return {"error": "unknown line type", "lines": [line]}

    def _finish(self, sender, receiver, datas, lines):
        joined = b"".join(datas)
        coding = self.udh_coding
        if coding == "auto":
            coding = "ucs-2" if looks_ucs2(joined) else "text"
        elif coding == "ucs2":
            coding = "ucs-2"
        m = self._msg(sender, receiver, decode_payload(joined, coding), coding, lines)
        m["parts"] = len(datas)
        return m

    @staticmethod
    def _msg(sender, receiver, text, coding, lines):
        return {"from": sender, "to": receiver, "text": text, "coding": coding,
                "parts": 1, "lines": lines}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=20000)
    ap.add_argument("--send", action="append", default=[], metavar="'FROM TO TEXT'")
    ap.add_argument("--expect", type=int, default=0, help="messages to wait for")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--linger", type=float, default=0.5,
                    help="seconds to stay connected after sending when --expect is 0")
    ap.add_argument("--udh-coding", choices=["auto", "ucs2", "text"], default="auto",
                    help="how to decode reassembled udh messages (the line does not say)")
    args = ap.parse_args()

    deadline = time.monotonic() + args.timeout
    sock = None
    while sock is None:
        try:
            sock = socket.create_connection((args.host, args.port), timeout=1)
        except OSError as e:
            if time.monotonic() >= deadline:
                print(f"fake-phone: cannot connect to {args.host}:{args.port}: {e}", file=sys.stderr)
                return 2
            time.sleep(0.1)

    for spec in args.send:
        fields = spec.split(" ", 2)
        if len(fields) != 3:
            print(f"fake-phone: --send wants 'FROM TO TEXT', got {spec!r}", file=sys.stderr)
            return 2
        line = encode_mo(*fields)
        sock.sendall(line)
        print(f"fake-phone: sent {line.decode().rstrip()}", file=sys.stderr)

    if args.expect == 0:
        time.sleep(args.linger)
        sock.close()
        return 0

    rea = Reassembler(args.udh_coding)
    buf, done = b"", 0
    while done < args.expect:
        left = deadline - time.monotonic()
        if left <= 0:
            print(f"fake-phone: timeout, {done}/{args.expect} messages", file=sys.stderr)
            return 1
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            print("fake-phone: bearerbox closed the connection", file=sys.stderr)
            return 1
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            print(f"fake-phone: got {line}", file=sys.stderr)
            msg = rea.feed(line)
            if msg is not None:
                print(json.dumps(msg, ensure_ascii=False), flush=True)
                done += 1
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
