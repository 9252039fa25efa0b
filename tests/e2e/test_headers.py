"""Response headers and limits: the layer's pages are never framed or sniffed, responses with a
secret or a session are never cached, and `serve` refuses an oversized body before reading it."""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest

from hrp_data.schema.install import upgrade
from tests.e2e.conftest import PASSWORD, ROOT, hrp_cutover, unique, wait_until

FRAMING = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@pytest.mark.parametrize("client, url", [
    ("anon", "/admin/login"), ("admin", "/admin/cutover"), ("admin", "/admin/cutover/status.json"),
    ("anon", "/api/races"), ("anon", "/api/races/999999"), ("admin", "/metrics"),
])
def test_the_layers_pages_cannot_be_framed_or_sniffed(shadow_world, client, url):
    response = getattr(shadow_world, client).get(url)
    for name, value in FRAMING.items():
        assert response.headers.get(name) == value, (url, name, response.headers)


def test_responses_with_a_secret_or_a_session_are_never_cached(shadow_world):
    admin = shadow_world.admin
    created = admin.post("/api/credentials", json={"service_name": "bookmaker", "api_key": unique("k-"),
                                                   "api_secret": unique("s-")})
    client, name = shadow_world.app.test_client(), unique("cache")
    client.post("/api/users", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    logged_in = client.post("/api/session", json={"username": name, "password": PASSWORD})
    uncached = {
        "POST /api/credentials": created,
        "GET /api/credentials": admin.get("/api/credentials"),
        "POST /api/session": logged_in,
        "DELETE /api/session": client.delete("/api/session"),
        "GET /admin/login": shadow_world.anon.get("/admin/login"),
        "GET /admin/cutover": admin.get("/admin/cutover"),
    }
    for what, response in uncached.items():
        assert response.status_code < 400, (what, response.status_code)
        assert response.headers.get("Cache-Control") == "no-store", what
    assert "no-store" not in shadow_world.anon.get("/api/races").headers.get("Cache-Control", "")


def _answer(base_port: int, request: bytes, timeout: float) -> bytes:
    """What the server answers to `request` (its headers and the start of a body, never the rest)."""
    with socket.create_connection(("127.0.0.1", base_port), timeout=timeout) as connection:
        connection.sendall(request)
        try:
            return connection.recv(4096)
        except socket.timeout:
            return b""


def test_serve_refuses_an_oversized_body_before_reading_it(legacy_file, postgres_url, tmp_path):
    """A 30 MB body is answered 413 at once, from its Content-Length, without waiting for the bytes."""
    upgrade(postgres_url)
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [*hrp_cutover(), "--sqlite", str(legacy_file), "--postgres", postgres_url,
         "serve", "--host", "127.0.0.1", "--port", "0", "--threads", "2"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        found = wait_until(lambda: re.search(r"serving on http://127\.0\.0\.1:(\d+)", log.read_text()),
                           lambda: f"the server to start: {log.read_text()}", 60)
        port = int(found.group(1))
        head = (b"POST /api/races HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (30 * 1024 * 1024))
        started = time.monotonic()
        answer = _answer(port, head + b"{" + b" " * 1024, timeout=10)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - started < 5
        fits = b'{"race_name": "R"}'
        answer = _answer(port, b"POST /api/races HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(fits), fits), timeout=10)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]  # a body the app takes still reaches it
    finally:
        process.terminate()
        process.wait(15)
