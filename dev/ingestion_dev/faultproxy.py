"""A small fault-injecting HTTP proxy in front of the real S3 server (tests and benchmarks).

Rules are consumed in order: each matches a method and a path/query substring and
applies its fault to the next ``times`` matching requests (``per_path``: to the first
``times`` requests of each distinct path), or (``for_seconds``) to every matching request
for that long from the first one it matches: a burst; ``exclude`` keeps a substring out
(objects but not their ``.CHECKSUM`` sidecars). Everything else is forwarded unchanged. A
throttle may carry ``Retry-After`` (``retry_after``). ``times_of(path)`` gives when each
request for a path arrived (``times_of("")``: every request); ``over_budget`` and ``busiest``
judge such arrivals against a rate. Faults: ``slowdown`` (503 SlowDown), ``throttle`` (429), ``error`` (500),
``reset`` (close the connection without answering), ``delay`` (sleep, then forward).
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

S3_ERROR = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{msg}</Message></Error>'


@dataclasses.dataclass
class Rule:
    fault: str
    method: str = ""
    match: str = ""
    times: int = 1
    seconds: float = 0.0
    hits: int = 0
    per_path: bool = False
    retry_after: str | None = None
    paths: dict = dataclasses.field(default_factory=dict)
    for_seconds: float = 0.0
    exclude: str = ""
    started: float | None = None  # a burst's first match


class FaultProxy:
    def __init__(self, upstream: str):
        u = urlparse(upstream)
        self.host, self.port = u.hostname, u.port
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.seen = 0
        self.arrivals: dict[str, list[float]] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._take(self.command, self.path)
                if rule and rule.fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                if rule and rule.fault in ("slowdown", "throttle", "error"):
                    status, code = {"slowdown": (503, "SlowDown"), "throttle": (429, "TooManyRequests"),
                                    "error": (500, "InternalError")}[rule.fault]
                    payload = S3_ERROR.format(code=code, msg="injected by the fault proxy").encode()
                    self.send_response(status)
                    if rule.retry_after is not None:
                        self.send_header("Retry-After", rule.retry_after)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if rule and rule.fault == "delay":
                    time.sleep(rule.seconds)
                conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, fault: str, method: str = "", match: str = "", times: int = 1, seconds: float = 0.0,
            per_path: bool = False, retry_after: str | None = None, for_seconds: float = 0.0, exclude: str = "") -> Rule:
        rule = Rule(fault, method, match, times, seconds, per_path=per_path, retry_after=retry_after,
                    for_seconds=for_seconds, exclude=exclude)
        with self.lock:
            self.rules.append(rule)
        return rule

    def _take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            self.seen += 1
            self.arrivals.setdefault(path.split("?")[0], []).append(time.monotonic())
            now = time.monotonic()
            for r in self.rules:
                if (r.method and r.method != method) or r.match not in path or (r.exclude and r.exclude in path):
                    continue
                if r.for_seconds:
                    if r.started is None:
                        r.started = now
                    if now - r.started < r.for_seconds:
                        r.hits += 1
                        return r
                    continue
                if r.per_path:
                    if r.paths.get(path, 0) < r.times:
                        r.paths[path] = r.paths.get(path, 0) + 1
                        r.hits += 1
                        return r
                elif r.hits < r.times:
                    r.hits += 1
                    return r
        return None

    def times_of(self, path_end: str) -> list[float]:
        """Arrival times of the requests whose path ends with ``path_end``."""
        with self.lock:
            return sorted(t for p, ts in self.arrivals.items() if p.endswith(path_end) for t in ts)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def over_budget(arrivals: list[float], rate: float, burst: float) -> tuple[int, float, int] | None:
    """The first stretch [t_i, t_j] of sorted ``arrivals`` (e.g. ``FaultProxy.times_of("")``)
    holding more requests than a token bucket of ``rate`` a second and ``burst`` allows
    (``rate * (t_j - t_i) + burst``), as (count, seconds, allowed); None if there is none."""
    for i, start in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            span = arrivals[j] - start
            if j - i + 1 > rate * span + burst:
                return j - i + 1, span, int(rate * span + burst)
    return None


def busiest(arrivals: list[float], seconds: float) -> int:
    """The most of the sorted ``arrivals`` within any window of ``seconds``."""
    j, best = 0, 0
    for i, t in enumerate(arrivals):
        while j < len(arrivals) and arrivals[j] - t < seconds:
            j += 1
        best = max(best, j - i)
    return best
