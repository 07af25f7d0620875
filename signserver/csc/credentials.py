"""The CSC API's description of a credential (credentials/info, and credentialInfos of credentials/list).

Field names and values follow CSC API v1.0.4.0 section 11.5 and v2.0.0.2
sections 11.4 and 11.5. Every credential here is authorized explicitly with
the approving official's TOTP code, generated offline by an authenticator
app, and its SAD is bound to the hashes (SCAL 2).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from signserver.core.raw_signing import signature_algorithm_oids
from signserver.core.sad import check_credential_usable
from signserver.errors import InvalidInput
from signserver.hsm_bridge import chain_from_pem
from signserver.i18n import message
from signserver.store.records import Credential

from .fields import V1

__all__ = ["CERTIFICATE_CHOICES", "OTP_AUTH_OBJECT_ID", "credential_info_json"]

CERTIFICATE_CHOICES = ("none", "single", "chain")
# The id of the one authentication object (v2) and of the OTP device (v1).
OTP_AUTH_OBJECT_ID = "OTP"


def _generalized_time(value: datetime) -> str:
    # RFC 5280 section 4.1.2.5.2: YYYYMMDDHHMMSSZ in UTC.
    return value.strftime("%Y%m%d%H%M%SZ")


def _key_json(credential: Credential, certificate_der: bytes, now: datetime) -> dict[str, Any]:
    try:
        check_credential_usable(credential, now)
        status = "enabled"
    except InvalidInput:
        status = "disabled"
    key: dict[str, Any] = {
        "status": status,
        "algo": signature_algorithm_oids(credential.key_type),
        "len": credential.key_size,
    }
    if credential.key_type == "EC":
        parameters = asn1_x509.Certificate.load(certificate_der).public_key["algorithm"]["parameters"]
        key["curve"] = parameters.chosen.dotted
    return key


def _cert_json(credential: Credential, certificates: str, cert_info: bool, now: datetime) -> dict[str, Any]:
    certificate = x509.load_der_x509_certificate(credential.certificate_der)
    cert: dict[str, Any] = {}
    # A certificate not valid yet has no value among valid | expired | revoked | suspended, so none is given.
    if now > certificate.not_valid_after_utc:
        cert["status"] = "expired"
    elif now >= certificate.not_valid_before_utc:
        cert["status"] = "valid"

    if certificates != "none":
        chain = [credential.certificate_der]
        if certificates == "chain":
            chain += [issuer.dump() for issuer in chain_from_pem(credential.chain_pem)]
        cert["certificates"] = [base64.b64encode(der).decode("ascii") for der in chain]

    if cert_info:
        cert["issuerDN"] = certificate.issuer.rfc4514_string()
        cert["serialNumber"] = format(certificate.serial_number, "X")
        cert["subjectDN"] = certificate.subject.rfc4514_string()
        cert["validFrom"] = _generalized_time(certificate.not_valid_before_utc)
        cert["validTo"] = _generalized_time(certificate.not_valid_after_utc)
    return cert


def _holder(credential: Credential) -> str:
    if not credential.agency or credential.agency == credential.display_name:
        return credential.display_name
    return f"{credential.display_name}, {credential.agency}"


def _otp_texts(language: str) -> tuple[str, str]:
    return message("csc_otp_label", language), message("csc_otp_description", language)


def credential_info_json(credential: Credential, *, version: str, certificates: str, cert_info: bool,
                         language: str, multisign: int, now: datetime) -> dict[str, Any]:
    """Return the credential's description in the CSC ``version``'s field names."""
    label, description = _otp_texts(language)
    info: dict[str, Any] = {
        "description": message("csc_credential_description", language, {"holder": _holder(credential)}),
        "key": _key_json(credential, credential.certificate_der, now),
        "cert": _cert_json(credential, certificates, cert_info, now),
    }
    if version == V1:
        info["authMode"] = "explicit"
        info["PIN"] = {"presence": "false"}
        info["OTP"] = {"presence": "true", "type": "offline", "format": "N", "label": label,
                       "description": description, "ID": OTP_AUTH_OBJECT_ID, "provider": "TOTP (RFC 6238)"}
    else:
        # v2 has no "OTP" authentication type: a TOTP code is a Password whose generator is "totp".
        info["auth"] = {"mode": "explicit", "expression": OTP_AUTH_OBJECT_ID, "objects": [
            {"type": "Password", "id": OTP_AUTH_OBJECT_ID, "format": "N", "generator": "totp",
             "label": label, "description": description},
        ]}
    info["SCAL"] = "2"
    info["multisign"] = multisign
    info["lang"] = language
    return info
