#!/usr/bin/env python3
"""A tiny OTLP/HTTP trace receiver for tests (there is no collector package here).

    scripts/otlp-receiver.py --port 4318 --out spans.jsonl [--host 127.0.0.1]

Accepts `POST /v1/traces` with an ExportTraceServiceRequest, as protobuf
(`application/x-protobuf`, what the services send) or as OTLP/JSON
(`application/json`), optionally gzip-compressed (`Content-Encoding: gzip`), and
answers 200 with an empty ExportTraceServiceResponse in the request's encoding.

Appends one JSON line per span to --out:

    {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_span_id": "<16 hex>" | "",
     "name": "...", "kind": "server|client|producer|consumer|internal|unspecified",
     "service.name": "...", "scope": "...", "attributes": {...},
     "resource": {...}, "start_unix_nano": N, "end_unix_nano": N,
     "status": "unset|ok|error"}

The spans of one request are written with one write() and flushed, so a reader
polling the file sees whole lines. The first stdout line is
`otlp-receiver: listening on HOST:PORT`. SIGTERM or SIGINT stops it (exit 0).

Needs `pip install opentelemetry-proto` (pulls in `protobuf`).
"""
import argparse
import base64
import gzip
import json
import signal
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


def any_value(v):
    """An OTLP AnyValue as plain JSON."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def hex_ids_to_base64(obj):
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id") and isinstance(v, str):
                try:
                    v = base64.b64encode(bytes.fromhex(v)).decode() if v else ""
                except ValueError:
                    pass  # already base64
                out[k] = v
            else:
                out[k] = hex_ids_to_base64(v)
        return out
    if isinstance(obj, list):
        return [hex_ids_to_base64(x) for x in obj]
    return obj


def spans_of(request):
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": KINDS.get(span.kind, str(span.kind)),
                    "service.name": resource.get("service.name", ""),
                    "scope": ss.scope.name,
                    "attributes": attributes(span.attributes),
                    "resource": resource,
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                    "status": STATUS.get(span.status.code, str(span.status.code)),
                }


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, out):
        super().__init__(addr, Handler)
        self.out = out
        self.lock = threading.Lock()
        self.spans = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: one line per request is noise in tests
        pass

    def reply(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path in ("/", "/healthz"):
            self.reply(200, b"ok\n")
        else:
            self.reply(404, b"not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/v1/traces":
            self.reply(404, b"only /v1/traces\n")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        content_type = (self.headers.get("Content-Type") or "application/x-protobuf").split(";")[0].strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = ExportTraceServiceRequest()
            is_json = content_type == "application/json"
            if is_json:
                json_format.ParseDict(hex_ids_to_base64(json.loads(body or b"{}")), request)
            else:
                request.ParseFromString(body)
        except Exception as e:  # a malformed request is the sender's problem: 400
            print(f"otlp-receiver: bad request: {e}", file=sys.stderr, flush=True)
            self.reply(400, f"bad request: {e}\n".encode())
            return
        lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in spans_of(request))
        if lines:
            with self.server.lock:
                self.server.out.write(lines)
                self.server.out.flush()
                self.server.spans += lines.count("\n")
        response = ExportTraceServiceResponse()
        if is_json:
            self.reply(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self.reply(200, response.SerializeToString(), "application/x-protobuf")


def main():
    ap = argparse.ArgumentParser(description="OTLP/HTTP trace receiver writing one JSON line per span")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4318)
    ap.add_argument("--out", required=True, help="file to append span lines to")
    args = ap.parse_args()

    out = open(args.out, "a", encoding="utf-8")
    server = Receiver((args.host, args.port), out)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()
    host, port = server.server_address[:2]
    print(f"otlp-receiver: listening on {host}:{port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    with server.lock:
        out.close()
    print(f"otlp-receiver: stopped after {server.spans} spans", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
