"""A command's stderr carries no log line per HTTP request (`parallax status`, benchmarks)."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest

from parallax.procs import PARALLAX


class Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(503)

    def log_message(self, *args) -> None:  # the server's own access log is not under test
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def status_stderr(url: str, level: str) -> str:
    r = subprocess.run(
        [*PARALLAX, "status", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PARALLAX_LOG_LEVEL=level),
    )
    assert r.returncode == 1 and "cannot read" in r.stderr, r.stderr
    return r.stderr


def test_status_prints_no_line_per_http_request(url):
    assert '"logger": "httpx"' not in status_stderr(url, "INFO")


def test_debug_level_still_shows_each_request(url):
    assert '"logger": "httpx"' in status_stderr(url, "DEBUG")
