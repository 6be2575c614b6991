"""HTTP backend of the lab: names itself and echoes what the load balancer sent it.

Runs inside a backend namespace, serving every given port from one process. The one-line body lets
tests check routing (which backend, which port, which Host and path arrived) and proxy headers:

    backend=be1 port=80 host=www.example.test path=/a uri=/a?b=1 x-real-ip=... x-forwarded-for=...

Standard library only, so any python3 can run it.
"""

from __future__ import annotations

import argparse
import http.server
import signal
import threading
import urllib.parse


def make_handler(backend_name: str, port: int) -> type[http.server.BaseHTTPRequestHandler]:
    class EchoHandler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.1 so nginx upstream keep-alive behaves as with a real server.
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._answer(include_body=True)

        def do_HEAD(self) -> None:
            self._answer(include_body=False)

        def _answer(self, *, include_body: bool) -> None:
            fields = {
                "backend": backend_name,
                "port": str(port),
                "host": self.headers.get("Host", ""),
                "path": urllib.parse.urlsplit(self.path).path,
                "uri": self.path,
                "x-real-ip": self.headers.get("X-Real-IP", ""),
                "x-forwarded-for": self.headers.get("X-Forwarded-For", ""),
            }
            body = (" ".join(f"{key}={value}" for key, value in fields.items()) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", backend_name)
            self.end_headers()
            if include_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # A failover test sends hundreds of requests; per-request lines would only bury errors.
            return

    return EchoHandler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="backend name put in every response")
    parser.add_argument("--port", type=int, action="append", required=True, help="port to serve (repeat)")
    args = parser.parse_args()

    # Block the stop signals before any thread starts so that only sigwait() below receives them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    servers = [
        http.server.ThreadingHTTPServer(("0.0.0.0", port), make_handler(args.name, port))  # noqa: S104
        for port in args.port
    ]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.sigwait(stop_signals)


if __name__ == "__main__":
    main()
