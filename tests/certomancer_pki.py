"""A test PKI with live OCSP, CRL and time-stamping services on loopback, built by certomancer.

certomancer is independent of the service's own demo PKI code: its OCSP
responses, CRLs and time-stamps are what a real CA would publish, produced by
another implementation. The hierarchy is a root CA, an issuing CA with a
delegated OCSP responder, a TSA, and signers:

- ``signer``: valid, software key (for documents signed by pyHanko itself,
  playing "another tool");
- ``signer-revoked``: revoked one day ago with reason key_compromise;
- ``signer-expired``: valid from 2020-01-01 to 2021-01-01;
- one certificate per HSM public key passed in ``hsm_keys`` (label →
  SubjectPublicKeyInfo DER), so that the service can sign with certomancer
  certificates. ``hsm_revoked`` and ``hsm_expired`` name which of them are
  revoked or expired.

All keys are generated when the PKI is built, into the given directory, and
the services are served by certomancer's aiohttp Animator in a thread on a free
port of 127.0.0.1. ``requests`` counts the requests each service received.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from asn1crypto import keys as asn1_keys
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from certomancer.integrations.aiohttp_animator import FAKE_TIME_HEADER, build_animator_app
from certomancer.registry import CertLabel, CertomancerConfig, KeyLabel, PKIArchitecture
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.ports import free_port

__all__ = ["CertomancerPki", "start_certomancer_pki", "ARCH"]

ARCH = "vn-test"
_SOFTWARE_KEYS = ("root", "interm", "interm-ocsp", "tsa", "signer", "signer-revoked", "signer-expired")
_STARTUP_TIMEOUT_SECONDS = 10


def _write_software_key(path: Path, label: str) -> None:
    key: Any
    if label == "signer":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_public_key(path: Path, spki_der: bytes) -> None:
    public_key = serialization.load_der_public_key(spki_der)
    path.write_bytes(public_key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0000")


def _end_entity_extensions(extended_key_usage: str | None = None, *, critical_eku: bool = False,
                           key_usage: tuple[str, ...] = ("digital_signature", "non_repudiation")) -> list[dict]:
    extensions: list[dict] = [
        {"id": "key_usage", "critical": True, "smart-value": {"schema": "key-usage", "params": list(key_usage)}},
        {"id": "authority_information_access", "smart-value": {"schema": "aia-urls", "params": {
            "ocsp-responder-names": ["interm"], "ca-issuer-links": [{"repo": "interm"}]}}},
        {"id": "crl_distribution_points", "smart-value": {"schema": "crl-dist-url",
                                                          "params": {"crl-repo-names": ["interm"]}}},
    ]
    if extended_key_usage is not None:
        extensions.append({"id": "extended_key_usage", "critical": critical_eku, "value": [extended_key_usage]})
    return extensions


def _config(base_url: str, hsm_labels: list[str], hsm_revoked: set[str], hsm_expired: set[str]) -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    long_validity = {"valid-from": _iso(now - timedelta(days=365)), "valid-to": _iso(now + timedelta(days=3650))}
    expired_validity = {"valid-from": "2020-01-01T00:00:00+0000", "valid-to": "2021-01-01T00:00:00+0000"}
    revocation = {"revoked-since": _iso(now - timedelta(days=1)), "reason": "key_compromise"}

    keys: dict[str, dict] = {label: {"path": f"{label}.key.pem"} for label in _SOFTWARE_KEYS}
    keys.update({label: {"path": f"{label}.pub.pem", "public-only": True} for label in hsm_labels})

    entities: dict[str, dict] = {
        "root": {"common-name": "Test Root CA - Chứng thư số gốc kiểm thử"},
        "interm": {"common-name": "Test Issuing CA - CA cấp chứng thư kiểm thử"},
        "interm-ocsp": {"common-name": "Test OCSP Responder"},
        "tsa": {"common-name": "Test TSA - Dấu thời gian kiểm thử"},
        "signer": {"common-name": "Lê Văn Hùng", "organizational-unit-name": "Văn phòng UBND"},
        "signer-revoked": {"common-name": "Phạm Thị Thu (thu hồi)"},
        "signer-expired": {"common-name": "Hoàng Văn Nam (hết hạn)"},
    }
    entities.update({label: {"common-name": f"HSM {label}"} for label in hsm_labels})

    certs: dict[str, dict] = {
        "root": {
            "subject": "root", "issuer": "root", "validity": long_validity,
            "extensions": [
                {"id": "basic_constraints", "critical": True, "value": {"ca": True}},
                {"id": "key_usage", "critical": True,
                 "smart-value": {"schema": "key-usage", "params": ["digital_signature", "key_cert_sign", "crl_sign"]}},
            ],
        },
        "interm": {
            "subject": "interm", "issuer": "root", "validity": long_validity,
            "extensions": [
                {"id": "basic_constraints", "critical": True, "value": {"ca": True, "path_len_constraint": 0}},
                {"id": "key_usage", "critical": True,
                 "smart-value": {"schema": "key-usage", "params": ["digital_signature", "key_cert_sign", "crl_sign"]}},
                {"id": "crl_distribution_points",
                 "smart-value": {"schema": "crl-dist-url", "params": {"crl-repo-names": ["root"]}}},
            ],
        },
        "interm-ocsp": {
            "subject": "interm-ocsp", "issuer": "interm", "validity": long_validity,
            "extensions": [
                {"id": "key_usage", "critical": True,
                 "smart-value": {"schema": "key-usage", "params": ["digital_signature"]}},
                {"id": "extended_key_usage", "critical": True, "value": ["ocsp_signing"]},
                {"id": "ocsp_no_check"},
            ],
        },
        "tsa": {
            "subject": "tsa", "issuer": "interm", "validity": long_validity,
            "extensions": _end_entity_extensions("time_stamping", critical_eku=True,
                                                 key_usage=("digital_signature",)),
        },
        "signer": {"subject": "signer", "issuer": "interm", "validity": long_validity,
                   "extensions": _end_entity_extensions()},
        "signer-revoked": {"subject": "signer-revoked", "issuer": "interm", "validity": long_validity,
                           "revocation": revocation, "extensions": _end_entity_extensions()},
        "signer-expired": {"subject": "signer-expired", "issuer": "interm", "validity": expired_validity,
                           "extensions": _end_entity_extensions()},
    }
    for label in hsm_labels:
        spec: dict[str, Any] = {"subject": label, "issuer": "interm",
                                "validity": expired_validity if label in hsm_expired else long_validity,
                                "extensions": _end_entity_extensions()}
        if label in hsm_revoked:
            spec["revocation"] = revocation
        certs[label] = spec

    return {
        "external-url-prefix": base_url,
        "keysets": {"vn-test": {"keys": keys}},
        "pki-architectures": {
            ARCH: {
                "keyset": "vn-test",
                "entity-defaults": {"country-name": "VN", "organization-name": "Certomancer Test PKI"},
                "entities": entities,
                "certs": certs,
                "services": {
                    "ocsp": {"interm": {"for-issuer": "interm", "responder-cert": "interm-ocsp",
                                        "signing-key": "interm-ocsp"}},
                    "crl-repo": {
                        "root": {"for-issuer": "root", "signing-key": "root", "simulated-update-schedule": "P90D"},
                        "interm": {"for-issuer": "interm", "signing-key": "interm",
                                   "simulated-update-schedule": "P7D"},
                    },
                    "cert-repo": {
                        "root": {"for-issuer": "root", "publish-issued-certs": False},
                        "interm": {"for-issuer": "interm", "publish-issued-certs": False},
                    },
                    "time-stamping": {"tsa": {"signing-key": "tsa", "signing-cert": "tsa"}},
                },
            }
        },
    }


@dataclass
class CertomancerPki:
    """A running certomancer PKI: its architecture, its base URL and the request counts of its services."""

    architecture: PKIArchitecture
    base_url: str
    directory: Path
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def tsa_url(self) -> str:
        return f"{self.base_url}/{ARCH}/tsa/tsa"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/{ARCH}/ocsp/interm"

    def cert(self, label: str) -> asn1_x509.Certificate:
        return self.architecture.get_cert(CertLabel(label))

    def private_key(self, label: str) -> asn1_keys.PrivateKeyInfo:
        return self.architecture.key_set.get_private_key(KeyLabel(label))

    def key_path(self, label: str) -> Path:
        return self.directory / f"{label}.key.pem"

    @property
    def root(self) -> asn1_x509.Certificate:
        return self.cert("root")

    def chain(self, label: str) -> list[asn1_x509.Certificate]:
        """Return the certificates from ``label`` up to the root, the root included."""
        return [self.cert(label)] + [self.cert(str(issuer)) for issuer in self.architecture.get_chain(CertLabel(label))]

    def write_pem(self, label: str, path: Path) -> Path:
        """Write the certificate ``label`` to ``path`` in PEM and return ``path``."""
        path.write_bytes(pem.armor("CERTIFICATE", self.cert(label).dump()))
        return path

    def start(self) -> "CertomancerPki":
        """Serve the PKI's OCSP, CRL, certificate and TSA endpoints on the base URL's port."""
        if self._thread is not None:
            return self
        started = threading.Event()
        failure: list[BaseException] = []

        @web.middleware
        async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
            # The path's service part, e.g. "ocsp/interm" or "crls/interm/latest.crl".
            parts = request.path.strip("/").split("/")
            self.requests["/".join(parts[1:3])] += 1
            return await handler(request)

        @web.middleware
        async def whole_second_time(request: web.Request, handler: Any) -> web.StreamResponse:
            # certomancer 0.16 stamps OCSP responses with the current time including
            # microseconds. RFC 5280 section 4.1.2.5.2 forbids fractional seconds in
            # GeneralizedTime, and NSS (pdfsig) then reports "Unknown issue with
            # Certificate". The fake-time header, set here and never by a client,
            # makes certomancer use the current time in whole seconds.
            now = datetime.now(timezone.utc).replace(microsecond=0)
            headers = request.headers.copy()
            headers[FAKE_TIME_HEADER] = now.isoformat()
            return await handler(request.clone(headers=headers))

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                app = build_animator_app({self.architecture.arch_label: self.architecture}, with_web_ui=False,
                                         allow_time_override=True)
                app.middlewares.insert(0, count_requests)
                app.middlewares.insert(1, whole_second_time)
                runner = web.AppRunner(app, access_log=None)
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self._port).start())
                self._runner = runner
            except BaseException as exc:  # The starting thread raises it.
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="certomancer-animator", daemon=True)
        self._thread.start()
        if not started.wait(_STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError("certomancer animator did not start")
        if failure:
            self._thread = None
            raise RuntimeError(f"certomancer animator failed: {failure[0]!r}") from failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: afterwards every OCSP, CRL and TSA request to the base URL is refused."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_STARTUP_TIMEOUT_SECONDS)
        self._thread = None
        self._loop = None


def start_certomancer_pki(directory: Path, hsm_keys: dict[str, bytes] | None = None, *,
                          hsm_revoked: set[str] = frozenset(),  # type: ignore[assignment]
                          hsm_expired: set[str] = frozenset()) -> CertomancerPki:  # type: ignore[assignment]
    """Generate keys into ``directory``, build the PKI and start serving it on a free loopback port."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hsm_keys = dict(hsm_keys or {})
    for label in _SOFTWARE_KEYS:
        key_path = directory / f"{label}.key.pem"
        if not key_path.exists():
            _write_software_key(key_path, label)
    for label, spki_der in hsm_keys.items():
        _write_public_key(directory / f"{label}.pub.pem", spki_der)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    config_dict = _config(base_url, sorted(hsm_keys), set(hsm_revoked), set(hsm_expired))
    (directory / "certomancer.yml").write_text(yaml.safe_dump(config_dict, allow_unicode=True), encoding="utf-8")
    config = CertomancerConfig(config_dict, key_search_dir=str(directory))
    pki = CertomancerPki(architecture=config.get_pki_arch(ARCH), base_url=base_url, directory=directory)
    pki._port = port
    return pki.start()
