"""The registry client against a tiny in-process HTTP server (one layer): anonymous bearer
tokens, digest checks, 404 as absent, errors naming the URL; and HTTPS->HTTP fallback only for
loopback hosts."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runwasm.oci.digest import Digest
from runwasm.oci.errors import DigestMismatchError
from runwasm.oci.verify.policy import RegistryConfig
from runwasm.oci.verify.registry import Registry, RegistryError, _is_loopback

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
GOOD = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class Handler(BaseHTTPRequestHandler):
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(f"{self.path} auth={self.headers.get('Authorization')}")
        host = f"http://{self.headers['Host']}"
        if self.path.startswith("/token"):
            self._send(200, b'{"token":"t0k"}')
        elif self.path == "/storage/blob":  # like S3 behind a redirect: a second credential is an error
            self._send(400 if self.headers.get("Authorization") else 200, MANIFEST)
        elif self.headers.get("Authorization") != "Bearer t0k":
            self._send(401, headers={"WWW-Authenticate": f'Bearer realm="{host}/token",service="reg",scope="repository:app:pull"'})
        elif self.path == "/v2/app/manifests/1" or self.path == f"/v2/app/manifests/{GOOD}":
            self._send(200, MANIFEST, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        elif self.path == "/v2/app/manifests/sha256:" + "0" * 64:
            self._send(200, MANIFEST)  # content that does not match the digest asked for
        elif self.path == f"/v2/app/blobs/{GOOD}":
            self._send(307, headers={"Location": f"{host}/storage/blob"})
        elif self.path == "/v2/app/manifests/broken":
            self._send(500, b"boom")
        else:
            self._send(404)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    Handler.seen = []
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_bearer_token_digest_checks_and_errors(server: str) -> None:
    reg = Registry(server)  # plain_http unset: loopback, so HTTPS is tried first, then HTTP
    got = reg.get_manifest("app", "1")
    assert got is not None
    assert str(got.digest) == GOOD
    assert got.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert any("/token?" in s and "scope=repository%3Aapp%3Apull" in s for s in Handler.seen)
    assert reg.get_manifest("app", "2") is None
    with pytest.raises(DigestMismatchError, match="content hashes to"):
        reg.get_manifest("app", "sha256:" + "0" * 64)
    with pytest.raises(RegistryError, match=r"HTTP 500 boom"):
        reg.get_manifest("app", "broken")
    assert reg.referrers("app", Digest.parse(GOOD)) == []
    assert reg.get_blob("app", Digest.parse(GOOD)) == MANIFEST  # the token is not sent to the redirect target


def test_no_plain_http_fallback_for_other_hosts() -> None:
    assert _is_loopback("localhost:5000")
    assert _is_loopback("127.0.0.1:1")
    assert _is_loopback("[::1]:5000")
    assert not _is_loopback("registry.example:5000")
    assert not _is_loopback("10.0.0.1")


def test_forced_https_does_not_fall_back(server: str) -> None:
    reg = Registry(server, RegistryConfig(plain_http=False))
    with pytest.raises(RegistryError, match=f"https://{server}"):
        reg.get_manifest("app", "1")
