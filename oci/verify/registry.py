"""A small OCI distribution client (stdlib ``urllib``): what verification and signing need.

Contract: manifests and blobs are size-limited and digest-checked before they are returned;
404 is ``None`` (absent), any other failure is ``RegistryError`` naming the URL and status.
Scheme: HTTPS, or plain HTTP when the policy says ``plain_http = true``; for loopback hosts
(``localhost``, ``127.0.0.0/8``, ``::1``) HTTPS is tried first and plain HTTP used when the TLS
handshake fails, as containerd's resolver does for localhost. Anonymous bearer tokens
(``WWW-Authenticate: Bearer realm=…``) are fetched when a registry asks for them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from runwasm.oci import mediatypes as mt
from runwasm.oci.digest import Digest
from runwasm.oci.errors import DigestMismatchError, UnavailableError
from runwasm.oci.image import Descriptor, Index
from runwasm.oci.verify.policy import RegistryConfig

log = logging.getLogger(__name__)
MAX_MANIFEST = 4 << 20
MAX_BLOB = 8 << 20
ACCEPT = ", ".join([mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_MANIFEST])
DOCKER_HUB = "registry-1.docker.io"


class RegistryError(UnavailableError):
    """The registry could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    media_type: str
    digest: Digest


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Registry:
    """One registry host (``host[:port]``, as in a reference's domain)."""

    def __init__(self, host: str, config: RegistryConfig | None = None, timeout: float = 30.0) -> None:
        self.host = DOCKER_HUB if host == "docker.io" else host
        self.config = config or RegistryConfig()
        self.timeout = timeout
        self._scheme = "http" if self.config.plain_http else "https"
        self._fallback = self.config.plain_http is None and _is_loopback(self.host)
        self._token: str | None = None
        self._ctx = ssl.create_default_context(cafile=self.config.ca_file or None)

    def _url(self, path: str) -> str:
        return f"{self._scheme}://{self.host}{path}"

    def request(self, method: str, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
                limit: int = MAX_MANIFEST, full_url: str | None = None,
                auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange; returns (status, headers, body). 404 is returned, not raised."""
        hdrs = dict(headers or {})
        token_tried = False
        for _attempt in range(3):
            url = full_url or self._url(path)
            req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
            if self._token and auth:  # not forwarded on redirects (blob storage rejects a second credential)
                req.add_unredirected_header("Authorization", f"Bearer {self._token}")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout,
                                            context=self._ctx if url.startswith("https") else None) as resp:
                    body = resp.read(limit + 1)
                    if len(body) > limit:
                        raise RegistryError(f"failed to {method} {url!r}: response larger than {limit} bytes")
                    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body
            except urllib.error.HTTPError as err:
                rh = {k.lower(): v for k, v in err.headers.items()}
                if err.code == 401 and not token_tried and "bearer" in rh.get("www-authenticate", "").lower():
                    token_tried = True
                    self._token = self._fetch_token(rh["www-authenticate"])
                    continue
                if err.code == 404:
                    return 404, rh, b""
                detail = err.read(2048).decode(errors="replace").strip()
                raise RegistryError(f"failed to {method} {url!r}: HTTP {err.code} {detail}") from err
            except (ssl.SSLError, urllib.error.URLError) as err:
                reason = getattr(err, "reason", err)
                if self._fallback and self._scheme == "https" and full_url is None and \
                        isinstance(reason, ssl.SSLError | ConnectionResetError):
                    log.debug("%s: TLS failed (%s); loopback host, using plain HTTP", self.host, reason)
                    self._scheme = "http"
                    continue
                raise RegistryError(f"failed to {method} {url!r}: {reason}") from err
            except OSError as err:
                raise RegistryError(f"failed to {method} {url!r}: {err}") from err
        raise RegistryError(f"failed to {method} {self._url(path)!r}: unauthorized")

    def _fetch_token(self, header: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', header))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(f"failed to authenticate to {self.host!r}: no realm in {header!r}")
        url = realm + "?" + urllib.parse.urlencode(params)
        _, _, body = self.request("GET", "", full_url=url, auth=False)
        try:
            obj = json.loads(body)
            return str(obj.get("token") or obj.get("access_token"))
        except ValueError as err:
            raise RegistryError(f"failed to authenticate to {self.host!r}: bad token response") from err

    # --- reading ------------------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> Fetched | None:
        """A manifest or index by tag or digest (None when absent); verified when ``ref`` is a digest."""
        status, hdrs, body = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        if status == 404:
            return None
        got = Digest.of_bytes(body)
        if ref.startswith("sha256:") and str(got) != ref:
            raise DigestMismatchError(f"failed to fetch manifest {self.host}/{repo}@{ref}: content hashes to {str(got)!r}")
        media_type = hdrs.get("content-type", "").split(";")[0].strip()
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (ValueError, AttributeError):
            pass
        return Fetched(body, media_type, got)

    def get_blob(self, repo: str, digest: Digest, limit: int = MAX_BLOB) -> bytes:
        status, _, body = self.request("GET", f"/v2/{repo}/blobs/{digest}", limit=limit)
        if status == 404:
            raise RegistryError(f"failed to fetch blob {self.host}/{repo}@{digest}: not found")
        got = Digest.of_bytes(body)
        if got != digest:
            raise DigestMismatchError(f"failed to fetch blob {self.host}/{repo}@{digest}: content hashes to {str(got)!r}")
        return body

    def referrers(self, repo: str, digest: Digest) -> list[Descriptor]:
        """OCI 1.1 referrers of ``digest``: the referrers API, else the ``sha256-<hex>`` tag index."""
        status, _, body = self.request("GET", f"/v2/{repo}/referrers/{digest}", headers={"Accept": mt.OCI_INDEX})
        if status != 404:
            return list(Index.from_json(body, f"referrers of {digest}").manifests)
        fetched = self.get_manifest(repo, f"{digest.algorithm}-{digest.hex}")
        if fetched is None or not mt.is_index(fetched.media_type):
            return []
        return list(Index.from_json(fetched.data, f"referrers tag of {digest}").manifests)

    # --- writing ------------------------------------------------------------------------------

    def push_blob(self, repo: str, data: bytes) -> Digest:
        digest = Digest.of_bytes(data)
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return digest
        _, hdrs, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"")
        location = hdrs.get("location", "")
        if not location:
            raise RegistryError(f"failed to push blob {digest} to {self.host}/{repo}: no upload location")
        if location.startswith("/"):
            location = self._url(location)
        sep = "&" if "?" in location else "?"
        self.request("PUT", "", data=data, full_url=f"{location}{sep}digest={urllib.parse.quote(str(digest))}",
                     headers={"Content-Type": "application/octet-stream"})
        return digest

    def push_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> Digest:
        self.request("PUT", f"/v2/{repo}/manifests/{ref}", data=data, headers={"Content-Type": media_type})
        return Digest.of_bytes(data)


def registry_for(host: str, configs: Any = None) -> Registry:
    """A client for ``host`` configured by a policy's ``registries`` table (mapping host -> config)."""
    cfg = configs.get(host) if configs is not None else None
    return Registry(host, cfg)
