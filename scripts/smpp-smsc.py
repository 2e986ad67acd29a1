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

MT (--mt N): it also takes N messages by submit_sm (multi-part ones, UDH 00 03,
counted once, reassembled), answers each submit_sm_resp with a message id of its own,
prints a "submit_sm" line (from, to, data_coding, the decoded text, registered_delivery)
and, when delivery receipts were asked for (registered_delivery & 1), sends one as a
deliver_sm (esm_class 0x04, the standard receipt text `id:… sub:001 dlvrd:001 submit
date:… done date:… stat:DELIVRD err:000 text:…`, and the receipted_message_id and
message_state TLVs). For a destination given by --undeliv the receipt says
`stat:UNDELIV err:001`; for one given by --reject, the submit_sm itself is refused
(ESME_RINVDSTADR) and no receipt follows. It exits once every MO and receipt was
answered and N messages came in.
"""
import argparse
import json
import socket
import struct
import sys
import time

BIND_RECEIVER, BIND_TRANSCEIVER, BIND_TRANSMITTER = 0x1, 0x9, 0x2
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK, GENERIC_NACK = 0x4, 0x5, 0x6, 0x15, 0x80000000
RESP = 0x80000000
ESME_RINVDSTADR = 0x0B
# TLVs of a receipt (SMPP 3.4 §5.3.2.12, §5.3.2.35) and message_state values.
TLV_RECEIPTED_MESSAGE_ID, TLV_MESSAGE_STATE = 0x001E, 0x0427
STATE_DELIVERED, STATE_UNDELIVERABLE = 2, 5


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


def take_cstr(body, i):
    end = body.index(b"\0", i)
    return body[i:end].decode("latin-1"), end + 1


def parse_submit_sm(body):
    """The fields of a submit_sm the test looks at (SMPP 3.4 §4.4.1)."""
    _service_type, i = take_cstr(body, 0)
    i += 2  # source_addr_ton, source_addr_npi
    source, i = take_cstr(body, i)
    i += 2  # dest_addr_ton, dest_addr_npi
    dest, i = take_cstr(body, i)
    esm_class = body[i]
    i += 3  # esm_class, protocol_id, priority_flag
    _sdt, i = take_cstr(body, i)
    _validity, i = take_cstr(body, i)
    registered_delivery, data_coding = body[i], body[i + 2]
    sm_length = body[i + 4]
    message = body[i + 5:i + 5 + sm_length]
    return dict(source=source, dest=dest, esm_class=esm_class,
                registered_delivery=registered_delivery, data_coding=data_coding,
                message=message)


def decode(data_coding, data):
    if data_coding == 8:
        return data.decode("utf-16-be", "replace")
    return data.decode("latin-1")


def receipt(msgid, sm, delivered):
    """A delivery receipt for the submit_sm `sm` (SMPP 3.4 Appendix B), as deliver_sm."""
    now = time.strftime("%y%m%d%H%M")
    stat, err, state = ("DELIVRD", "000", STATE_DELIVERED) if delivered else ("UNDELIV", "001", STATE_UNDELIVERABLE)
    text = (f"id:{msgid} sub:001 dlvrd:{'001' if delivered else '000'} submit date:{now} "
            f"done date:{now} stat:{stat} err:{err} text:").encode("ascii")
    mid = msgid.encode("ascii") + b"\0"
    tlvs = (struct.pack(">HH", TLV_RECEIPTED_MESSAGE_ID, len(mid)) + mid
            + struct.pack(">HHB", TLV_MESSAGE_STATE, 1, state))
    # The receipt goes from the phone (the submit_sm's destination) to its sender.
    return (cstr("") + bytes([1, 1]) + cstr(sm["dest"]) + bytes([0, 1]) + cstr(sm["source"])
            + bytes([0x04, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, 0, 0, len(text)]) + text
            + tlvs), stat


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
    ap.add_argument("--mt", type=int, default=0, help="submit_sm messages to take")
    ap.add_argument("--undeliv", action="append", default=[],
                    help="a destination whose receipt says UNDELIV")
    ap.add_argument("--reject", action="append", default=[],
                    help="a destination whose submit_sm is refused (ESME_RINVDSTADR)")
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
    # MT: messages taken, receipts sent and not yet answered, parts of long ones.
    taken = 0
    receipts = {}
    parts = {}
    submitted = 0
    while answered < len(mos) or taken < args.mt or receipts:
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
        elif command_id == DELIVER_SM | RESP and rseq in receipts:
            emit(event="receipt_resp", status=status, message_id=receipts.pop(rseq))
        elif command_id == DELIVER_SM | RESP:
            answered += 1
            emit(event="deliver_sm_resp", status=status, sender=pending.pop(rseq, None))
        elif command_id == SUBMIT_SM:
            sm = parse_submit_sm(body)
            if sm["dest"].lstrip("+") in [d.lstrip("+") for d in args.reject]:
                conn.sendall(pdu(SUBMIT_SM | RESP, ESME_RINVDSTADR, rseq, cstr("")))
                taken += 1
                emit(event="submit_sm", refused=True, source=sm["source"], to=sm["dest"])
                continue
            submitted += 1
            msgid = f"smsc{submitted:06d}"
            conn.sendall(pdu(SUBMIT_SM | RESP, 0, rseq, cstr(msgid)))
            data = sm["message"]
            if sm["esm_class"] & 0x40:  # UDH: 05 00 03 ref total seq
                udh_len = data[0]
                ref, total, part = data[3], data[4], data[5]
                parts.setdefault(ref, {})[part] = data[1 + udh_len:]
                if len(parts[ref]) < total:
                    continue
                got = parts.pop(ref)
                data = b"".join(got[k] for k in range(1, total + 1))
            taken += 1
            emit(event="submit_sm", message_id=msgid, source=sm["source"], to=sm["dest"],
                 data_coding=sm["data_coding"], text=decode(sm["data_coding"], data),
                 registered_delivery=sm["registered_delivery"])
            if sm["registered_delivery"] & 1:
                delivered = sm["dest"].lstrip("+") not in [d.lstrip("+") for d in args.undeliv]
                body, stat = receipt(msgid, sm, delivered)
                # After the submit_sm_resp, as an SMSC does: the ESME maps its id first.
                time.sleep(0.5)
                seq += 1
                receipts[seq] = msgid
                conn.sendall(pdu(DELIVER_SM, 0, seq, body))
                emit(event="receipt", message_id=msgid, stat=stat)
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
