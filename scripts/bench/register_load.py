#!/usr/bin/env python3
"""Registers accounts concurrently with the auth service and counts the answers.

Sends exactly CLIENTS x PER_CLIENT registrations (50 x 40 = 2,000 by default), each with an
email unique to the run, so every one of them should succeed; the caller then compares the
201s with the rows in the users table to check that nothing was lost under load.

Written with the standard library rather than wrk because wrk cannot stop after an exact
number of requests, and because a request that fails in transport must be counted, not
silently retried (a retry could register the same email twice and turn a success into a 409).

Prints `key=value` lines on standard output: `requests`, `status_<code>` for every status
seen, `status_5xx`, `transport_errors`, `elapsed_s` and `per_sec`.
"""

import argparse
import collections
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse

# The cost of argon2id does not depend on the password; this one passes the service's policy.
PASSWORD = "load-test-passphrase-42"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8791",
                        help="where the auth service listens (default %(default)s)")
    parser.add_argument("--clients", type=int, default=50,
                        help="concurrent clients, one connection each (default %(default)s)")
    parser.add_argument("--per-client", type=int, default=40,
                        help="registrations per client (default %(default)s)")
    parser.add_argument("--run-id", required=True,
                        help="makes this run's emails unique: lowercase letters, digits, dashes")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait on a socket before counting a transport error")
    args = parser.parse_args()
    if args.clients < 1 or args.per_client < 1:
        parser.error("--clients and --per-client must be at least 1")
    # The caller matches rows with `LIKE 'load-<run id>-%'`, where `_` would be a wildcard.
    if not re.fullmatch(r"[a-z0-9-]{1,40}", args.run_id):
        parser.error("--run-id must be 1 to 40 lowercase letters, digits or dashes")
    url = urllib.parse.urlsplit(args.base_url)
    if url.scheme != "http" or not url.hostname:
        parser.error("--base-url must look like http://host:port")
    return args


def main() -> int:
    args = parse_args()
    url = urllib.parse.urlsplit(args.base_url)
    path = url.path.rstrip("/") + "/api/v1/register"
    counts: collections.Counter = collections.Counter()
    counts_lock = threading.Lock()
    started = []
    # Every client starts at once, and the clock starts when they do, not while the threads
    # are still being created.
    barrier = threading.Barrier(args.clients, action=lambda: started.append(time.monotonic()))

    def client(number: int) -> None:
        local: collections.Counter = collections.Counter()
        conn = None
        barrier.wait()
        for i in range(args.per_client):
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname, url.port or 80,
                                                  timeout=args.timeout)
            body = json.dumps({
                "email": f"load-{args.run_id}-{number}-{i}@example.com",
                "password": PASSWORD,
            })
            try:
                conn.request("POST", path, body=body,
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                local[str(response.status)] += 1
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                local["transport_error"] += 1
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with counts_lock:
            counts.update(local)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started[0]

    statuses = {k: v for k, v in counts.items() if k != "transport_error"}
    print(f"requests={sum(counts.values())}")
    for status in sorted(statuses):
        print(f"status_{status}={statuses[status]}")
    print(f"status_5xx={sum(v for k, v in statuses.items() if k.startswith('5'))}")
    print(f"transport_errors={counts['transport_error']}")
    print(f"elapsed_s={elapsed:.1f}")
    print(f"per_sec={sum(counts.values()) / elapsed:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
