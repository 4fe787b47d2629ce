#!/usr/bin/env python3
"""The callgrind harness: exact instructions and mallocs per proxied request.

Runs meshproxy (one worker) under `valgrind --tool=callgrind`, collecting only inside
tokio's task polls (`--toggle-collect=*run_task*`: the worker's request work, not start-up
or the main runtime), and sends keep-alive HTTP/1.1 GETs over one connection through it to
a local upstream. It does this twice, with a short and a long request count, and reports
the difference divided by the difference in requests: what one more request costs, with
every constant (start-up, the first connection, shutdown) cancelled out. Instruction and
call counts are deterministic for the same binary, config and request count, so a before
and after of a hot-path change is an exact comparison, unlike a timing.

Usage: benches/callgrind/run.py [--meshproxy target/release/meshproxy] [--requests 3200]
"""

import argparse
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ALLOCATORS = {"malloc", "calloc", "realloc"}


class Upstream(http.server.BaseHTTPRequestHandler):
    """A keep-alive upstream answering every GET with a small fixed body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello from the upstream\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bootstrap(admin, listen, upstream):
    """The benchmark runner's HTTP/1.1 shape: one listener, one route, one cluster."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": [{
                "name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}]},
            }],
        },
    }


def wait_ready(admin, deadline):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("callgrind harness: meshproxy did not turn ready")


def send(port, count):
    """`count` GETs over one keep-alive connection; every answer must be a 200."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        reader = s.makefile("rb")
        for i in range(count):
            s.sendall(f"GET /bench/{i} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
            status = reader.readline()
            if not status.startswith(b"HTTP/1.1 200"):
                sys.exit(f"callgrind harness: request {i} answered {status!r}")
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)


def totals(path):
    """(instructions, allocator calls) collected in a callgrind output file."""
    names, current_callee, instructions, allocations = {}, None, 0, 0
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                instructions = int(line.split()[1])
            elif line.startswith("cfn="):
                m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.strip())
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    current_callee = names.get(m.group(1))
            elif line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls="):
                if current_callee in ALLOCATORS:
                    allocations += int(line.split("=")[1].split()[0])
    return instructions, allocations


def measure(meshproxy, requests, upstream_port, scratch):
    admin, listen = free_port(), free_port()
    config = os.path.join(scratch, f"bootstrap-{requests}.json")
    with open(config, "w") as f:
        json.dump(bootstrap(admin, listen, upstream_port), f)
    out = os.path.join(scratch, f"callgrind-{requests}.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=*run_task*",
         f"--callgrind-out-file={out}", meshproxy, "-c", config, "--concurrency", "1",
         "-l", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(admin, time.time() + 120)
        send(listen, requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return totals(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshproxy", default="target/release/meshproxy")
    parser.add_argument("--requests", type=int, default=3200)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    short = max(args.requests // 16, 1)
    with tempfile.TemporaryDirectory(prefix="meshproxy-callgrind-") as scratch:
        few = measure(args.meshproxy, short, server.server_address[1], scratch)
        many = measure(args.meshproxy, args.requests, server.server_address[1], scratch)
    extra = args.requests - short
    per_request = [(m - f) / extra for m, f in zip(many, few)]
    print(json.dumps({
        "meshproxy": args.meshproxy,
        "requests": [short, args.requests],
        "worker_instructions": [few[0], many[0]],
        "instructions_per_request": round(per_request[0]),
        "mallocs_per_request": round(per_request[1], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
