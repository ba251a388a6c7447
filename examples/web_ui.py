"""A user's own front end for an integrated service (`front_end.script`): a tiny training web UI.

`scalablejob up` starts it with the queue endpoint, service name and token in its environment, keeps it alive
on `front_end.port` (env PORT), and it submits work through the queue service like any other client.
GET / answers what it knows; POST /train with a command line in the body submits it as a command task.
"""

from __future__ import annotations

import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

ENDPOINT = os.environ["SCALABLEJOB_ENDPOINT"]
SERVICE = os.environ["SCALABLEJOB_SERVICE"]
TOKEN = os.environ["SCALABLEJOB_TOKEN"]


def submit(command: bytes) -> dict[str, str]:
    """Put a command task on the service's input queue, as the queue-service protocol does it."""
    request = urllib.request.Request(
        f"{ENDPOINT}/api/predict/{SERVICE}?taskType=command", data=command, headers={"Authorization": TOKEN}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {"index": response.read().decode(), "requestId": response.headers["X-Eas-Queueservice-Request-Id"]}


class WebUI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer({"service": SERVICE, "endpoint": ENDPOINT, "pid": os.getpid()})

    def do_POST(self) -> None:
        if self.path != "/train":
            self.send_error(404, "POST /train with a command line")
            return
        self._answer(submit(self.rfile.read(int(self.headers.get("Content-Length", 0)))))

    def _answer(self, value: dict[str, object]) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), WebUI).serve_forever()
