"""A private Sigstore instance made with ``cryptography``: a Fulcio-like CA, a CT log and a Rekor
log (keys only, no servers), so Sigstore bundles can be made and verified offline in tests.

``trusted_root()`` is the ``trusted_root.json`` a policy names; ``bundle(digest)`` is a v0.3
bundle for an image: a DSSE envelope with an in-toto statement naming the digest, signed by a
short-lived certificate for ``identity``/``issuer`` (SCT embedded), and a ``dsse`` 0.0.1 log
entry with a signed inclusion promise and a one-leaf inclusion proof with a signed checkpoint.
Formats: Sigstore's protobuf-specs (bundle, trusted root), RFC 6962 (SCT), Rekor's signed note.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
IN_TOTO = "application/vnd.in-toto+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _tlog(key: ec.EllipticCurvePrivateKey, start: dt.datetime) -> dict[str, Any]:
    return {"baseUrl": "https://log.invalid", "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": _b64(_spki(key.public_key())), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ")}},
            "logId": {"keyId": _b64(hashlib.sha256(_spki(key.public_key())).digest())}}


class PrivateSigstore:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.start = self.now - dt.timedelta(days=1)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "runwasm-test"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "runwasm test fulcio")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(self.start).not_valid_after(self.now + dt.timedelta(days=365))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                  critical=True)
                   .add_extension(ski, critical=False)
                   .sign(self.ca_key, hashes.SHA256()))

    def trusted_root(self) -> bytes:
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [_tlog(self.rekor_key, self.start)],
            "certificateAuthorities": [{
                "subject": {"organization": "runwasm-test", "commonName": "runwasm test fulcio"},
                "uri": "https://fulcio.invalid",
                "certChain": {"certificates": [{"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}]},
                "validFor": {"start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ")}}],
            "ctlogs": [_tlog(self.ct_key, self.start)],
            "timestampAuthorities": []}).encode()

    def _leaf(self, key: ec.EllipticCurvePrivateKey, identity: str, issuer: str) -> x509.Certificate:
        serial = x509.random_serial_number()
        ca_ski = self.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

        def build(sct_ext: bytes) -> x509.Certificate:
            b = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca.subject)
                 .public_key(key.public_key()).serial_number(serial)
                 .not_valid_before(self.now - dt.timedelta(minutes=5))
                 .not_valid_after(self.now + dt.timedelta(minutes=10))
                 .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
                 .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=True)
                 .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()), critical=False)
                 .add_extension(x509.UnrecognizedExtension(SCT_LIST, sct_ext), critical=False))
            return b.sign(self.ca_key, hashes.SHA256())

        def sct_list(sig: bytes, ts_ms: int) -> bytes:
            log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
            sct = struct.pack("!B32sQH", 0, log_id, ts_ms, 0) + struct.pack("!BBH", 4, 3, len(sig)) + sig
            body = struct.pack("!H", len(sct)) + sct
            tls = struct.pack("!H", len(body)) + body
            return b"\x04" + _der_len(len(tls)) + tls  # the extension value is an OCTET STRING

        ts_ms = int(self.now.timestamp() * 1000)
        draft = build(sct_list(b"\x00" * 70, ts_ms))
        tbs = draft.tbs_precertificate_bytes
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        signed = struct.pack("!BBQH", 0, 0, ts_ms, 1) + issuer_key_hash + struct.pack("!I", len(tbs))[1:] + tbs \
            + struct.pack("!H", 0)
        return build(sct_list(_sign(self.ct_key, signed), ts_ms))

    def bundle(self, digest_hex: str, identity: str = "ci@example.com", issuer: str = "https://issuer.example",
               subject_name: str = "image") -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf(key, identity, issuer)
        stmt = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                           "subject": [{"name": subject_name, "digest": {"sha256": digest_hex}}],
                           "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}}).encode()
        pae = b"DSSEv1 %d %s %d %s" % (len(IN_TOTO), IN_TOTO.encode(), len(stmt), stmt)
        sig = _sign(key, pae)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        envelope = {"payload": _b64(stmt), "payloadType": IN_TOTO, "signatures": [{"sig": _b64(sig), "keyid": ""}]}
        body = json.dumps({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(stmt).hexdigest()},
            "signatures": [{"signature": _b64(sig), "verifier": _b64(pem)}]}}, separators=(",", ":")).encode()
        log_id = hashlib.sha256(_spki(self.rekor_key.public_key())).digest()
        integrated = int(self.now.timestamp())
        set_payload = rfc8785.dumps({"body": _b64(body), "integratedTime": integrated, "logID": log_id.hex(),
                                     "logIndex": 0})
        root = hashlib.sha256(b"\x00" + body).digest()
        note = f"rekor.invalid - 1\n1\n{_b64(root)}\n"
        note_sig = log_id[:4] + _sign(self.rekor_key, note.encode())
        checkpoint = f"{note}\n\u2014 rekor.invalid {_b64(note_sig)}\n"
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [{
                    "logIndex": "0", "logId": {"keyId": _b64(log_id)},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"}, "integratedTime": str(integrated),
                    "inclusionPromise": {"signedEntryTimestamp": _b64(_sign(self.rekor_key, set_payload))},
                    "inclusionProof": {"logIndex": "0", "rootHash": _b64(root), "treeSize": "1", "hashes": [],
                                       "checkpoint": {"envelope": checkpoint}},
                    "canonicalizedBody": _b64(body)}]},
            "dsseEnvelope": envelope}).encode()


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw
