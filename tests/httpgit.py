"""A bare git repository served over dumb HTTP that wants Basic credentials (tests of
credentials in tree URLs)."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.gitrepo import run_git

_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class _AuthHandler(SimpleHTTPRequestHandler):
    want = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization", "") != self.want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve_with_auth(bare: Path, user: str, password: str) -> Iterator[str]:
    """Serve bare on 127.0.0.1 (after `git update-server-info`: run it again after a
    push); yields its URL with user:password in it. Proxy variables are dropped while it
    runs (git would send 127.0.0.1 to a proxy)."""
    run_git(bare, "update-server-info")
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    handler = type("Handler", (_AuthHandler,), {"want": want})

    def make(*a: Any) -> Any:
        return handler(*a, directory=str(bare.parent))

    srv = ThreadingHTTPServer(("127.0.0.1", 0), make)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    saved = {v: os.environ.pop(v) for v in _PROXY_VARS if v in os.environ}
    try:
        yield f"http://{user}:{password}@127.0.0.1:{srv.server_address[1]}/{bare.name}"
    finally:
        os.environ.update(saved)
        srv.shutdown()
        srv.server_close()
