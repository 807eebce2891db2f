"""An OTLP/HTTP trace receiver: what a collector (Jaeger, Tempo, the OpenTelemetry Collector)
is to the services, small enough for tests and benchmarks.

Accepts `POST /v1/traces` with a protobuf (or JSON) `ExportTraceServiceRequest`, decoded
with the OpenTelemetry project's own `opentelemetry-proto` package, and prints each span it
holds as one JSON line on stdout: service, trace_id, span_id, parent_span_id, name, kind,
start and end (unix nanoseconds), attributes and status. The first line is
`{"listening": PORT}`. With `--count`, spans are decoded and counted but not printed, and the
count is printed when the process is interrupted (for benchmarks).

Usage: python3 otlp_receiver.py [--host 127.0.0.1] [--port 0] [--count]
"""

import argparse
import gzip
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_BODY = 64 * 1024 * 1024
lock = threading.Lock()
received = 0


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [value_of(v) for v in value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.values}
    if kind == "bytes_value":
        return value.hex()
    return value


def spans_of(request):
    for resource_spans in request.resource_spans:
        resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "service": resource.get("service.name"),
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "attributes": {a.key: value_of(a.value) for a in span.attributes},
                    "status": {"code": span.status.code, "message": span.status.message},
                }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    count_only = False

    def do_POST(self):
        global received
        if self.path.split("?")[0] != "/v1/traces":
            return self.reply(404, b"", "text/plain")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.reply(413, b"", "text/plain")
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        content_type = self.headers.get("Content-Type", "")
        try:
            if content_type.startswith("application/json"):
                json_format.Parse(body, request)
            else:
                request.ParseFromString(body)
        except Exception as error:  # a malformed body is the sender's bug: say so
            return self.reply(400, str(error).encode(), "text/plain")
        if self.count_only:
            count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with lock:
                received += count
        else:
            spans = list(spans_of(request))
            with lock:
                received += len(spans)
                for span in spans:
                    sys.stdout.write(json.dumps(span) + "\n")
                sys.stdout.flush()
        self.reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", action="store_true")
    args = parser.parse_args()
    Handler.count_only = args.count
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    server.serve_forever()
    print(json.dumps({"received": received}), flush=True)


if __name__ == "__main__":
    main()
