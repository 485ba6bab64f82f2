"""The operator's probes, served in every role (standby or leader) by one small HTTP server:

* ``/livez`` (liveness): the process answers, and on the leader kopf's event loop does. It
  does not look at the API server: an API server or etcd outage is not cured by restarting
  the operator, and restarting every replica at once during one (as a liveness probe on the
  API server did) only adds a crash loop to it.
* ``/readyz`` (readiness; ``/healthz`` is the same): the above, and the API server is ready
  (its own ``/readyz``, which fails while etcd is down; every identity may read it). It fails
  (503, naming the check) while it is not and recovers by itself when it is again.
"""

from __future__ import annotations

import asyncio
import http.server
import threading

from kubernetes import client

from .leader import _first_line, single_attempt


class Health:
    def __init__(self, api_client: client.ApiClient, timeout: float = 3.0):
        self.api_client = single_attempt(api_client)
        self.timeout = timeout
        self.loop: asyncio.AbstractEventLoop | None = None  # kopf's loop, once the operator leads
        self.role = "starting"
        self._server: http.server.ThreadingHTTPServer | None = None

    def problems(self, api: bool = True) -> list[str]:
        """What fails: the API server (``api``: readiness only) and, on the leader, the event loop."""
        out = []
        if api:
            try:
                self.api_client.call_api("/readyz", "GET", auth_settings=["BearerToken"], response_types_map={200: "str"},
                                         _return_http_data_only=True, _request_timeout=self.timeout)
            except Exception as e:
                out.append(f"api: the API server is unreachable or not ready: {_first_line(e)}")
        loop = self.loop
        if loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(self.timeout)
            except Exception as e:
                out.append(f"loop: the operator's event loop does not answer: {_first_line(e) or 'timeout'}")
        return out

    def serve(self, bind: str, port: int) -> None:
        health = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in ("/healthz", "/livez", "/readyz"):
                    self.send_error(404)
                    return
                problems = health.problems(api=self.path.split("?")[0] != "/livez")
                body = ("\n".join(problems) if problems else f"ok ({health.role})").encode() + b"\n"
                self.send_response(503 if problems else 200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # probes are not log lines
                pass

        self._server = http.server.ThreadingHTTPServer((bind, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="healthz", daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
