"""Checks after a kill loop: what the clients received against the store and the audit trail.

Every check reads the store directly (SQLite or PostgreSQL, through
``tests.postgres.query``) and returns its findings as lists of sentences,
so the report names each lost, duplicated or stuck item.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.postgres import query
from tests.verifiers import pdfsig_signatures

from .load import Ledger

__all__ = ["Findings", "wait_until_settled", "check_run"]

# States in which a request still waits for a signer, or is being signed.
UNSETTLED_STATES = ("approved", "signing")


@dataclass
class Findings:
    """The results of the checks; each list item is one broken promise, as a sentence."""

    states: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    interrupted_recovered: int = 0
    stuck: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    # Interrupted requests whose recovery left a trace it should not have (an output file, no audit record).
    recovery_faults: list[str] = field(default_factory=list)
    invalid_signatures: list[str] = field(default_factory=list)
    pdf_signatures_checked: int = 0
    csc_signatures_checked: int = 0


def wait_until_settled(database_url: str, timeout: float) -> int:
    """Wait until no request is approved or signing; return how many still are when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        [(count,)] = query(database_url, "SELECT COUNT(*) FROM sign_requests WHERE state IN (?, ?)",
                           UNSETTLED_STATES)
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def check_run(database_url: str, ledger: Ledger, nss_dir: Path | None) -> Findings:
    """Run every check; the PDF signatures only with ``nss_dir``, because pdfsig needs the service's OCSP responder."""
    findings = Findings()
    _check_states(database_url, findings)
    signed_by_request = _signed_records(database_url)
    _check_native_signatures(database_url, ledger, signed_by_request, findings)
    _check_idempotency(database_url, ledger, signed_by_request, findings)
    _check_interrupted(database_url, signed_by_request, findings)
    _check_csc_signatures(database_url, ledger, findings)
    if nss_dir is not None:
        _check_pdf_signatures(ledger, nss_dir, findings)
    return findings


def _check_states(database_url: str, findings: Findings) -> None:
    rows = query(database_url, "SELECT state, state_reason, COUNT(*) FROM sign_requests GROUP BY state, state_reason")
    states: Counter = Counter()
    failed: Counter = Counter()
    for state, reason, count in rows:
        states[state] += count
        if state == "failed":
            failed[reason or "none"] += count
    findings.states = dict(states)
    findings.failed_by_reason = dict(failed)
    findings.interrupted_recovered = failed.get("signing_interrupted", 0)
    for request_id, state in query(database_url, "SELECT id, state FROM sign_requests WHERE state IN (?, ?)",
                                   UNSETTLED_STATES):
        findings.stuck.append(f"request {request_id} is still {state}")


def _signed_records(database_url: str) -> dict[str, list[str]]:
    """Return the signed_sha256 of every ``signed`` audit record, by request id."""
    signed: dict[str, list[str]] = {}
    for request_id, details in query(database_url,
                                     "SELECT request_id, details_json FROM audit_log WHERE action = 'signed'"):
        signed.setdefault(request_id, []).append(json.loads(details)["signed_sha256"])
    return signed


def _check_native_signatures(database_url: str, ledger: Ledger, signed_by_request: dict[str, list[str]],
                             findings: Findings) -> None:
    """Every downloaded document must be the one a ``signed`` audit record and the request's row name."""
    stored = dict(query(database_url, "SELECT id, signed_sha256 FROM sign_requests WHERE state = 'signed'"))
    for request_id, digests in ledger.downloads.items():
        recorded = signed_by_request.get(request_id, [])
        for digest in sorted(set(digests)):
            if digest not in recorded:
                findings.lost.append(f"signed document {digest} of request {request_id} was downloaded, but no "
                                     f"'signed' audit record names it (records: {recorded})")
            if stored.get(request_id) != digest:
                findings.lost.append(f"signed document {digest} of request {request_id} was downloaded, but the "
                                     f"request stores {stored.get(request_id)}")
        if len(set(digests)) > 1:
            findings.duplicated.append(f"request {request_id} served different signed documents: {sorted(set(digests))}")


def _check_idempotency(database_url: str, ledger: Ledger, signed_by_request: dict[str, list[str]],
                       findings: Findings) -> None:
    """Each idempotency key must map to one request, and each request to at most one signature."""
    for application_id, key, count in query(
            database_url, "SELECT application_id, idempotency_key, COUNT(*) FROM sign_requests "
                          "GROUP BY application_id, idempotency_key HAVING COUNT(*) > 1"):
        findings.duplicated.append(f"key {key} of {application_id} has {count} requests in the store")
    for key, request_ids in ledger.request_ids_by_key.items():
        if len(request_ids) > 1:
            findings.duplicated.append(f"key {key} returned several requests to the client: {sorted(request_ids)}")
    for request_id, digests in signed_by_request.items():
        if len(digests) > 1:
            findings.duplicated.append(f"request {request_id} has {len(digests)} 'signed' audit records: {digests}")


def _check_interrupted(database_url: str, signed_by_request: dict[str, list[str]], findings: Findings) -> None:
    """An interrupted request must be failed with an audit record, never signed, and without an output file."""
    failures = {request_id for request_id, details in query(
        database_url, "SELECT request_id, details_json FROM audit_log WHERE action = 'signing_failed'")
        if json.loads(details).get("reason") == "signing_interrupted"}
    for request_id, document_path in query(
            database_url, "SELECT id, document_path FROM sign_requests "
                          "WHERE state = 'failed' AND state_reason = 'signing_interrupted'"):
        if request_id in signed_by_request:
            findings.duplicated.append(f"request {request_id} failed as interrupted has a 'signed' audit record")
        if request_id not in failures:
            findings.recovery_faults.append(f"request {request_id} failed as interrupted without a "
                                            f"'signing_failed' audit record")
        output = Path(document_path).with_name("signed.pdf")
        if output.exists():
            findings.recovery_faults.append(f"request {request_id} failed as interrupted still has {output}")


def _check_csc_signatures(database_url: str, ledger: Ledger, findings: Findings) -> None:
    """Every CSC signature received must be valid and its hash in exactly one ``csc_hashes_signed`` record."""
    signed_hashes: Counter = Counter()
    for (details,) in query(database_url, "SELECT details_json FROM audit_log WHERE action = 'csc_hashes_signed'"):
        signed_hashes.update(json.loads(details)["hashes"])
    certificates = {credential_id: x509.load_der_x509_certificate(bytes(der)) for credential_id, der in query(
        database_url, "SELECT id, certificate_der FROM credentials")}

    for credential_id, hash_hex, signature in ledger.csc_signatures:
        if signed_hashes[hash_hex] == 0:
            findings.lost.append(f"CSC signature of hash {hash_hex} by {credential_id} was received, but no "
                                 f"'csc_hashes_signed' audit record contains the hash")
        if not _signature_valid(certificates[credential_id], bytes.fromhex(hash_hex), base64.b64decode(signature)):
            findings.invalid_signatures.append(f"CSC signature of hash {hash_hex} by {credential_id} does not "
                                               f"verify with the credential's certificate")
        findings.csc_signatures_checked += 1
    for hash_hex, count in signed_hashes.items():
        if count > 1:
            findings.duplicated.append(f"hash {hash_hex} is in {count} 'csc_hashes_signed' audit records")


def _signature_valid(certificate: x509.Certificate, digest: bytes, signature: bytes) -> bool:
    """Verify a signature over a SHA-256 ``digest``: PKCS#1 v1.5 for RSA, DER-encoded ECDSA for EC."""
    public_key = certificate.public_key()
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, digest, ec.ECDSA(prehashed))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _check_pdf_signatures(ledger: Ledger, nss_dir: Path, findings: Findings) -> None:
    """Run pdfsig on the first download of every signed request."""
    for request_id, path in sorted(ledger.downloaded_files.items()):
        try:
            signatures = pdfsig_signatures(path, nss_dir)
        except RuntimeError as exc:
            findings.invalid_signatures.append(f"pdfsig failed on the document of {request_id}: {exc}")
            continue
        findings.pdf_signatures_checked += 1
        if len(signatures) != 1:
            findings.invalid_signatures.append(f"document of {request_id} has {len(signatures)} signatures, not 1")
        elif not (signatures[0].signature_valid and signatures[0].certificate_trusted):
            findings.invalid_signatures.append(f"pdfsig finds the signature of {request_id} invalid or its "
                                               f"certificate untrusted: {signatures[0].raw[:300]}")
