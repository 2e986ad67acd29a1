#!/usr/bin/env python3
"""HTTPS sink for tests: answers every POST with 200 and saves it as a file.

    scripts/https-sink.py --host 127.0.0.1 --port 0 --dir OUTDIR --cert PEM --key PEM

TLS is Python's ssl module (OpenSSL), so the services' rustls clients are tested
against another implementation. Each request becomes OUTDIR/<seq>.json:
{"path", "idempotency_key", "authorization", "body"}, written to a temporary name
and renamed. The first stdout line is `https-sink: listening on HOST:PORT`.
SIGTERM stops it.
"""
import argparse
import itertools
import json
import os
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> int:
    ap = argparse.ArgumentParser(description="HTTPS sink: saves every POST")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    seq = itertools.count(1)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            with lock:
                n = next(seq)
            record = {
                "path": self.path,
                "idempotency_key": self.headers.get("Idempotency-Key"),
                "authorization": self.headers.get("Authorization"),
                "body": body,
            }
            tmp = os.path.join(args.dir, f".{n:06d}.json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False)
            os.rename(tmp, os.path.join(args.dir, f"{n:06d}.json"))
            reply = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"https-sink: listening on {args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
