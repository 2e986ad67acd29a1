#!/usr/bin/env python3
"""A minimal SMPP 3.4 SMSC for tests: it accepts one ESME bind (transceiver or
receiver; any system_id/password), answers enquire_link, and sends each MO given on
the command line as a deliver_sm, once the ESME is bound. It prints one JSON line per
event to stdout ("bound", "deliver_sm_resp" with the ESME's status) and exits after
every MO was answered, or with status 1 after --timeout seconds.

    smpp-smsc.py --port 2775 --mo '79001234567 7377 ucs2 Показания 1000001 12345' \
                 --mo '79001234568 7377 text 1000001 12345'

An MO is `FROM TO CODING TEXT`: CODING `text` sends data_coding 0 (the text as
ASCII), `ucs2` data_coding 8 (UTF-16BE). Used by the Jasmin test (docs/channels.md).
"""
import argparse
import json
import socket
import struct
import sys
import time

BIND_RECEIVER, BIND_TRANSCEIVER, BIND_TRANSMITTER = 0x1, 0x9, 0x2
DELIVER_SM, UNBIND, ENQUIRE_LINK, GENERIC_NACK = 0x5, 0x6, 0x15, 0x80000000
RESP = 0x80000000


def emit(**event):
    print(json.dumps(event, ensure_ascii=False), flush=True)


def pdu(command_id, status, seq, body=b""):
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def cstr(s):
    return s.encode("ascii") + b"\0"


def deliver_sm(frm, to, coding, text):
    data = text.encode("utf-16-be") if coding == "ucs2" else text.encode("ascii")
    dcs = 8 if coding == "ucs2" else 0
    if len(data) > 254:
        raise SystemExit("MO too long for short_message")
    return (cstr("") + bytes([1, 1]) + cstr(frm) + bytes([0, 1]) + cstr(to)
            + bytes([0, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, dcs, 0, len(data)]) + data)


def read_pdu(conn):
    head = b""
    while len(head) < 16:
        chunk = conn.recv(16 - len(head))
        if not chunk:
            return None
        head += chunk
    length, command_id, status, seq = struct.unpack(">IIII", head)
    body = b""
    while len(body) < length - 16:
        chunk = conn.recv(length - 16 - len(body))
        if not chunk:
            return None
        body += chunk
    return command_id, status, seq, body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mo", action="append", default=[], help="'FROM TO CODING TEXT'")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    mos = []
    for mo in args.mo:
        frm, to, coding, text = mo.split(" ", 3)
        if coding not in ("text", "ucs2"):
            raise SystemExit(f"coding must be text or ucs2: {mo}")
        mos.append((frm, to, coding, text))

    deadline = time.monotonic() + args.timeout
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(1)
    emit(event="listening", port=args.port)
    server.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        conn, _ = server.accept()
    except socket.timeout:
        emit(event="timeout", waiting_for="bind")
        return 1
    answered = 0
    seq = 0
    pending = {}
    while answered < len(mos):
        left = deadline - time.monotonic()
        if left <= 0:
            emit(event="timeout", answered=answered)
            return 1
        conn.settimeout(left)
        try:
            got = read_pdu(conn)
        except socket.timeout:
            continue
        if got is None:
            emit(event="closed", answered=answered)
            return 1
        command_id, status, rseq, body = got
        if command_id in (BIND_RECEIVER, BIND_TRANSCEIVER, BIND_TRANSMITTER):
            conn.sendall(pdu(command_id | RESP, 0, rseq, cstr("SMSC")))
            emit(event="bound", system_id=body.split(b"\0", 1)[0].decode("ascii", "replace"))
            for frm, to, coding, text in mos:
                seq += 1
                pending[seq] = frm
                conn.sendall(pdu(DELIVER_SM, 0, seq, deliver_sm(frm, to, coding, text)))
        elif command_id == ENQUIRE_LINK:
            conn.sendall(pdu(ENQUIRE_LINK | RESP, 0, rseq))
        elif command_id == DELIVER_SM | RESP:
            answered += 1
            emit(event="deliver_sm_resp", status=status, sender=pending.pop(rseq, None))
        elif command_id == UNBIND:
            conn.sendall(pdu(UNBIND | RESP, 0, rseq))
            emit(event="unbound", answered=answered)
            return 1
        elif not command_id & RESP:
            conn.sendall(pdu(GENERIC_NACK, 3, rseq))  # ESME_RINVCMDID
    # Stay bound a little, so the ESME does not see its SMSC vanish mid-ack.
    time.sleep(0.5)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
