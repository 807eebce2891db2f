#!/usr/bin/python3
"""Gravity's mail catcher, for machines where no registry serves Mailpit.

An SMTP server (aiosmtpd, Debian's python3-aiosmtpd) that accepts every message and keeps it
as a file under the data volume, and an HTTP server answering the part of Mailpit's API that
`gravity mail` reads, so the CLI talks to either the same way:

  GET    /api/v1/messages?limit=N   newest first: {total, count, messages: [summary]}
  GET    /api/v1/search?query=to:A  the same, of the messages to address A
  GET    /api/v1/message/ID         a summary with Text, HTML and the headers
  GET    /api/v1/message/ID/raw     the message as received
  DELETE /api/v1/messages           forget every message
  GET    /livez                     200 once serving

To try a sender's failure handling, a recipient whose address starts with `reject-` is refused
for good (550) and one starting with `defer-` for now (451); nothing is kept for either.

Nothing here is written in Rust because the image runs Debian's Python, not our binaries.
"""

import email
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

DATA = os.environ.get("MAIL_DIR", "/data")
SMTP_PORT = int(os.environ.get("SMTP_PORT", "1025"))
HTTP_PORT = int(os.environ.get("HTTP_PORT", "8025"))
ID = re.compile(r"^[0-9a-f]{28}$")


def new_id():
    """Sortable by arrival: nanoseconds since the epoch, then random bits."""
    return "%020x%s" % (time.time_ns(), secrets.token_hex(4))


def path_of(mid):
    return os.path.join(DATA, mid + ".eml")


def ids():
    """Every stored message's id, newest first."""
    names = [n[:-4] for n in os.listdir(DATA) if n.endswith(".eml")]
    return sorted((n for n in names if ID.match(n)), reverse=True)


def header(headers, name, many=False):
    """A header's value (or values), or what it says in raw text when it does not parse:
    mail from anywhere may carry anything, and the catcher must keep it all the same."""
    try:
        return headers.get_all(name, []) if many else headers.get(name, "")
    except Exception:
        raw = [str(v) for k, v in headers.raw_items() if k.lower() == name.lower()]
        return raw if many else (raw[0] if raw else "")


def addresses(values):
    try:
        return [{"Name": n, "Address": a} for n, a in getaddresses([str(v) for v in values]) if a]
    except Exception:
        return [{"Name": "", "Address": str(v)} for v in values]


def summary(mid, headers, size):
    created = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(mid[:20], 16) / 1e9)
    )
    sender = addresses(header(headers, "From", many=True))
    return {
        "ID": mid,
        "MessageID": str(header(headers, "Message-ID") or "").strip("<> "),
        "From": sender[0] if sender else {"Name": "", "Address": ""},
        "To": addresses(header(headers, "To", many=True)),
        "Cc": addresses(header(headers, "Cc", many=True)),
        "Subject": str(header(headers, "Subject") or ""),
        "Created": created,
        "Size": size,
    }


# Summaries of the stored messages, oldest first, with their recipients for searching.
INDEX = []
INDEX_LOCK = threading.Lock()


def index(mid, headers, size, recipients):
    """Adds a message to the index; the caller holds INDEX_LOCK."""
    entry = summary(mid, headers, size)
    wanted = {a["Address"].lower() for a in entry["To"] + entry["Cc"]}
    wanted.update(r.lower() for r in recipients)
    INDEX.append((entry, wanted))


class Catch:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject-"):
            return "550 5.1.1 Mailbox unavailable (the catcher rejects reject-*)"
        if local.startswith("defer-"):
            return "451 4.3.0 Try again later (the catcher defers defer-*)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        mid = new_id()
        body = envelope.original_content or envelope.content
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        headers = BytesHeaderParser(policy=policy.default).parsebytes(body)
        tmp = path_of(mid) + ".tmp"
        # Stored and indexed as one step, so a DELETE of everything sees both or neither.
        with INDEX_LOCK:
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, path_of(mid))
            index(mid, headers, len(body), envelope.rcpt_tos)
        return "250 Message accepted for delivery"


class Api(BaseHTTPRequestHandler):
    server_version = "gravity-mail-catcher"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def not_found(self):
        self.send_json(404, {"error": "not found"})

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path in ("/livez", "/readyz"):
            return self.send_json(200, {"ok": True})
        if path in ("/api/v1/messages", "/api/v1/search"):
            return self.list(query)
        parts = path.split("/")
        if len(parts) in (5, 6) and parts[1:4] == ["api", "v1", "message"]:
            mid = parts[4]
            if not ID.match(mid) or not os.path.exists(path_of(mid)):
                return self.not_found()
            with open(path_of(mid), "rb") as f:
                raw = f.read()
            if len(parts) == 6:
                if parts[5] != "raw":
                    return self.not_found()
                self.send_response(200)
                self.send_header("Content-Type", "message/rfc822")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                return self.wfile.write(raw)
            return self.send_json(200, message(mid, raw))
        return self.not_found()

    def do_DELETE(self):
        if self.path.partition("?")[0] != "/api/v1/messages":
            return self.not_found()
        with INDEX_LOCK:
            INDEX.clear()
            for mid in ids():
                try:
                    os.remove(path_of(mid))
                except FileNotFoundError:
                    pass
        return self.send_json(200, {"ok": True})

    def list(self, query):
        limit, to = 50, None
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            value = urllib.parse.unquote_plus(value)
            if key == "limit" and value.isdigit():
                limit = max(1, min(int(value), 5000))
            elif key == "query" and value.startswith("to:"):
                to = value[3:].strip().lower()
        with INDEX_LOCK:
            found = [e for e, wanted in INDEX if to is None or to in wanted]
        found.reverse()
        self.send_json(
            200, {"total": len(found), "count": min(len(found), limit), "messages": found[:limit]}
        )


def part_text(parsed, kind):
    try:
        part = parsed.get_body(preferencelist=(kind,))
        return part.get_content() if part is not None else ""
    except Exception:
        # An unknown charset or a broken part: its bytes, as well as they decode.
        try:
            part = parsed.get_body(preferencelist=(kind,))
            payload = part.get_payload(decode=True) if part is not None else b""
            return (payload or b"").decode("utf-8", "replace")
        except Exception:
            return ""


def message(mid, raw):
    parsed = email.message_from_bytes(raw, policy=policy.default)
    found = summary(mid, parsed, len(raw))
    found["Text"] = part_text(parsed, "plain")
    found["HTML"] = part_text(parsed, "html")
    try:
        items = [(key, str(value)) for key, value in parsed.items()]
    except Exception:
        items = [(key, " ".join(str(value).split())) for key, value in parsed.raw_items()]
    found["Headers"] = {}
    for key, value in items:
        found["Headers"].setdefault(key, []).append(value)
    return found


def main():
    os.makedirs(DATA, exist_ok=True)
    parser = BytesHeaderParser(policy=policy.default)
    with INDEX_LOCK:
        for mid in reversed(ids()):
            with open(path_of(mid), "rb") as f:
                raw = f.read()
            index(mid, parser.parsebytes(raw), len(raw), [])
    # As PID 1 a process ignores signals it has no handler for: stop on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    smtp = Controller(Catch(), hostname="0.0.0.0", port=SMTP_PORT, enable_SMTPUTF8=True)
    smtp.start()
    http = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), Api)
    http.daemon_threads = True
    print(
        "mail catcher: SMTP on :%d, HTTP on :%d, mail in %s" % (SMTP_PORT, HTTP_PORT, DATA),
        flush=True,
    )
    try:
        http.serve_forever()
    finally:
        smtp.stop()


if __name__ == "__main__":
    sys.exit(main())
