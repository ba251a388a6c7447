"""A stand-in model server: answers each POST with a JSON echo of its body. No ML dependencies.

Run by a worker when the service config names it in containers[0] (see examples/model_server.json).
A body like {"sleep": 2} makes it take that long, to see progress and failures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class EchoHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict):
            time.sleep(min(float(request.get("sleep", 0)), self.server.max_sleep))  # type: ignore[attr-defined]
        answer = json.dumps({"model": "echo", "pid": os.getpid(), "input": body.decode("utf-8", "replace")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # quiet: the worker's log is the place to look
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid-file", type=Path, help="write this process's pid here once listening")
    parser.add_argument("--max-sleep", type=float, default=60.0, help="cap on the sleep a body asks for")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), EchoHandler)
    server.max_sleep = args.max_sleep  # type: ignore[attr-defined]
    if args.pid_file:
        args.pid_file.write_text(str(os.getpid()))
    server.serve_forever()


if __name__ == "__main__":
    main()
