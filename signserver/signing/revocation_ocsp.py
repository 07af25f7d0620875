"""Checks that decide whether a fetched OCSP response is worth keeping, or the next responder should be asked.

pyhanko-certvalidator validates a response only after the fetcher has
returned it, and when that response fails it moves on to CRLs without asking
the certificate's other OCSP responders. So the fetcher rejects here what
needs no trust decision: a response about another certificate, the status
"unknown", a nextUpdate in the past (RFC 6960 section 4.2.2.1), and a
signature that does not verify with the responder's key. A response that
passes is still validated in full by pyHanko: the responder's authorisation
(RFC 6960 section 4.2.2.2), its certificate's path and revocation, and the
freshness at the validation time.
"""

from __future__ import annotations

from datetime import datetime

from asn1crypto import keys, ocsp, x509
from cryptography.exceptions import InvalidSignature
from pyhanko_certvalidator.authority import Authority
from pyhanko_certvalidator.sig_validate import DefaultSignatureValidator

__all__ = ["ocsp_response_problem"]

_SIGNATURES = DefaultSignatureValidator()


def ocsp_response_problem(response: ocsp.OCSPResponse, cert_id: ocsp.CertId, authority: Authority,
                          now: datetime) -> str | None:
    """Return why ``response`` cannot give the status of ``cert_id``, or None when pyHanko may validate it.

    ``authority`` is the issuer of the certificate, and ``now`` the current time.
    The response must have the "successful" response status.
    """
    basic = response.basic_ocsp_response
    single = next((candidate for candidate in basic["tbs_response_data"]["responses"]
                   if _same_cert_id(candidate["cert_id"], cert_id)), None)
    if single is None:
        return "the response has no status for the requested certificate"
    if single["cert_status"].name == "unknown":
        return "the responder returned the status unknown for the certificate"
    next_update = single["next_update"].native
    if next_update is not None and next_update < now:
        return f"the response is stale: its nextUpdate {next_update.isoformat()} is in the past"

    return _signature_problem(basic, authority)


def _same_cert_id(received: ocsp.CertId, requested: ocsp.CertId) -> bool:
    # Compared field by field: the hash algorithm's NULL parameters may be encoded or left out.
    return (received["hash_algorithm"]["algorithm"].native == requested["hash_algorithm"]["algorithm"].native
            and received["issuer_name_hash"].native == requested["issuer_name_hash"].native
            and received["issuer_key_hash"].native == requested["issuer_key_hash"].native
            and received["serial_number"].native == requested["serial_number"].native)


def _signature_problem(basic: ocsp.BasicOCSPResponse, authority: Authority) -> str | None:
    """Check the signature with the key of the responder ``basic`` names: the issuer or a delegated responder."""
    responder_id = basic["tbs_response_data"]["responder_id"]
    issuer_key = authority.public_key
    if responder_id.name == "by_key":
        names_issuer = responder_id.native == issuer_key.sha1
        named = [cert for cert in basic["certs"] if cert.public_key.sha1 == responder_id.native]
    else:
        names_issuer = responder_id.chosen == authority.name
        named = [cert for cert in basic["certs"] if cert.subject == responder_id.chosen]

    if names_issuer:
        responder_keys = [issuer_key]
    elif not named:
        # pyHanko also looks a delegated responder's certificate up among the validation
        # context's certificates, which this check cannot see, so it leaves the signature to pyHanko.
        return None
    else:
        responder_keys = [cert.public_key for cert in named
                          if cert.issuer == authority.name and _certificate_signed_by(cert, issuer_key)]
        if not responder_keys:
            return "the responder certificate in the response was not issued by the certificate's issuer"

    signature = basic["signature"].native
    signed_data = basic["tbs_response_data"].dump()
    if not any(_signature_verifies(signature, signed_data, key, basic["signature_algorithm"])
               for key in responder_keys):
        return "the response signature does not verify with the key of the responder it names"
    return None


def _certificate_signed_by(certificate: x509.Certificate, issuer_key: keys.PublicKeyInfo) -> bool:
    return _signature_verifies(certificate["signature_value"].native, certificate["tbs_certificate"].dump(),
                               issuer_key, certificate["signature_algorithm"])


def _signature_verifies(signature: bytes, signed_data: bytes, public_key: keys.PublicKeyInfo,
                        algorithm: object) -> bool:
    try:
        _SIGNATURES.validate_signature(signature, signed_data, public_key, algorithm)  # type: ignore[arg-type]
    except (InvalidSignature, ValueError, TypeError, AssertionError):
        # pyhanko-certvalidator 0.33 asserts the key type, so a key of another type raises AssertionError.
        return False
    return True
