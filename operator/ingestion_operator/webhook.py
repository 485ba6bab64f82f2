"""The validating admission webhook's HTTPS server, served by every replica (leader and
standby alike, like the probes): ``POST /validate`` answers an AdmissionReview with
:func:`ingestion_operator.admission.response`.

Not kopf's webhook server: kopf runs only on the leader (a standby waits for the Lease before
kopf starts), and the webhook must answer from every replica behind its Service. The server
reads its certificate and key (``tls.crt``, ``tls.key``) from a folder, the Secret the chart
mounts, and loads them again when the files change (a Secret volume is updated in place), so a
new certificate needs no restart.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import os
import ssl
import sys
import threading
import time
from pathlib import Path

from . import metrics
from .admission import response

log = logging.getLogger("ingestion_operator")
PATH = "/validate"
MAX_BODY = 8 * 1024 * 1024  # an AdmissionReview holds the object and the old object, each at most ~1.5 MiB


class Certificate:
    """``tls.crt`` and ``tls.key`` in ``directory`` as a server-side SSLContext, loaded again
    whenever either file's modification time changes."""

    def __init__(self, directory: str | Path):
        self.cert, self.key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._context: ssl.SSLContext | None = None
        self.context()  # fail at start-up, not at the first review, when the files are missing or bad

    def context(self) -> ssl.SSLContext:
        stamp = (os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns)
        with self._lock:
            if stamp != self._stamp:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(self.cert, self.key)
                self._context, self._stamp = ctx, stamp
            return self._context


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, certificate: Certificate):
        self.certificate = certificate
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # the handshake happens in the request's own thread (Handler.setup), not in the accept loop
        return self.certificate.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # a client that fails the handshake or drops the connection
            log.debug("event=webhook_connection_error client=%s error=%s", client_address[0], json.dumps(str(error)))
            return
        # a bug in the review: the API server gets no answer and, failurePolicy Ignore, admits the request
        log.error("event=webhook_error client=%s error=%s", client_address[0], json.dumps(f"{type(error).__name__}: {error}"),
                  exc_info=error)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the API server keeps its connections open: one handshake, many reviews
    timeout = 30
    # Headers and body go out in two writes; with Nagle's algorithm the body waits for the API
    # server's delayed ACK of the headers: 40 ms added to every review on a kept-alive connection.
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        self.request.do_handshake()

    def do_POST(self):
        if self.path.split("?")[0] != PATH:
            self.close_connection = True  # its body, unread, must not be taken for the next request
            self._send(404, {"error": f"not found; the webhook answers POST {PATH}"})
            return
        length = int(self.headers.get("Content-Length") or 0) if (self.headers.get("Content-Length") or "0").isdigit() else -1
        if not 0 < length <= MAX_BODY:
            self.close_connection = True
            self._send(413 if length > MAX_BODY else 400, {"error": f"an AdmissionReview of 1 to {MAX_BODY} bytes is expected"})
            return
        t0 = time.monotonic()
        try:
            review = json.loads(self.rfile.read(length))
            if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
                raise ValueError("no request")
        except ValueError as e:
            self._send(400, {"error": f"not an AdmissionReview: {e}"})
            return
        answer = response(review, dt.datetime.now(dt.timezone.utc))
        verdict = answer["response"]
        metrics.ADMISSIONS.labels("allowed" if verdict["allowed"] else "refused").inc()
        if not verdict["allowed"]:
            request = review["request"]
            log.info("event=admission_refused namespace=%s name=%s operation=%s dry_run=%s duration_ms=%.1f message=%s",
                     request.get("namespace", ""), request.get("name", ""), request.get("operation", ""),
                     str(bool(request.get("dryRun"))).lower(), (time.monotonic() - t0) * 1000,
                     json.dumps(verdict["status"]["message"]))
        self._send(200, answer)

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # one line per refusal (above), none per request
        pass


class WebhookServer:
    """The webhook on ``bind:port``, TLS from ``cert_dir``; ``serve`` starts it in a thread."""

    def __init__(self, cert_dir: str | Path):
        self.certificate = Certificate(cert_dir)
        self._server: _Server | None = None

    def serve(self, bind: str, port: int) -> None:
        self._server = _Server((bind, port), _Handler, self.certificate)
        threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True).start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
