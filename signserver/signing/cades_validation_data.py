"""Validation data of CAdES B-LT: certificates and revocation values embedded in the SignedData.

B-LT adds the validation data of the signer's certificate chain and of the
signature time-stamp's TSA chain. Following the baseline profile of ETSI EN
319 122-1 V1.1.1 (clause 6.3), certificates go into SignedData.certificates
and revocation values into SignedData.crls, not into the certificate-values
and revocation-values attributes. A CRL is a RevocationInfoChoice ``crl``.
An OCSP response is a RevocationInfoChoice ``other`` with id-ri-ocsp-response
(RFC 5940), which makes the SignedData version 5 (RFC 5652 section 5.1).

pyHanko 0.38 does not read SignedData.crls when it validates a CMS
signature, so ``embedded_validation_context`` hands the embedded data to a
ValidationContext.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime

from asn1crypto import cms, crl, ocsp, x509
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, ValidationError

from signserver.signing.cades_lta import archive_timestamp_tokens, find_signer_certificate, present
from signserver.signing.embedded_validation_data import (
    ValidationData,
    ocsp_response_certificates,
    signature_timestamp_tokens,
    signed_data_certificates,
    signed_data_validation_data,
)
from signserver.signing.errors import CadesLevelNotReached

__all__ = [
    "collect_validation_data",
    "collect_token_validation_data",
    "embed_validation_data",
    "embedded_certificates",
    "embedded_validation_context",
    "revocation_gaps",
]

# Deeper chains than this are not followed. A root, issuing CAs and the end entity fit easily.
_MAX_CHAIN_LENGTH = 10


async def collect_validation_data(signed_data: cms.SignedData, validation_context: ValidationContext, *,
                                  level: str) -> ValidationData:
    """Validate the chains of the first signer and of its signature time-stamps, and return their validation data.

    Validating through ``validation_context`` fetches the OCSP responses and
    CRLs, which are then picked from the context. Raises CadesLevelNotReached
    (with ``level`` as the requested level) when a chain cannot be built or
    validated, for example because a revocation service is unreachable or a
    certificate is revoked.
    """
    chains = [await _validated_chain(signed_data, validation_context, level=level, extended_key_usage=set())]
    for tst_signed_data in signature_timestamp_tokens(signed_data["signer_infos"][0]):
        chains.append(await _validated_chain(tst_signed_data, validation_context, level=level,
                                             extended_key_usage={"time_stamping"},
                                             extra_certificates=signed_data_certificates(signed_data)))
    return _pick_validation_data(chains, validation_context)


async def collect_token_validation_data(token_signed_data: cms.SignedData, validation_context: ValidationContext, *,
                                        level: str, embedded_in: cms.SignedData) -> ValidationData:
    """Validate the TSA chain of a time-stamp token and return what ``embedded_in`` lacks of its validation data.

    Revocation values are returned only for certificates that ``embedded_in``
    has none for. Raises CadesLevelNotReached as ``collect_validation_data`` does.
    """
    chain = await _validated_chain(token_signed_data, validation_context, level=level,
                                   extended_key_usage={"time_stamping"},
                                   extra_certificates=embedded_certificates(embedded_in))
    return _pick_validation_data([chain], validation_context, embedded_in=embedded_in)


def embed_validation_data(signed_data: cms.SignedData, data: ValidationData) -> cms.SignedData:
    """Return a copy of ``signed_data`` with the certificates and revocation values of ``data`` added once each."""
    signed_data = cms.SignedData.load(signed_data.untag().dump())

    certificates = [choice.dump() for choice in _choices(signed_data["certificates"])]
    for certificate in data.certificates:
        encoded = cms.CertificateChoices(name="certificate", value=certificate).dump()
        if encoded not in certificates:
            certificates.append(encoded)

    revocation_values = [choice.dump() for choice in _choices(signed_data["crls"])]
    new_values = [cms.RevocationInfoChoice(name="crl", value=item) for item in data.crls]
    new_values += [
        cms.RevocationInfoChoice(name="other", value={"other_rev_info_format": "ocsp_response", "other_rev_info": item})
        for item in data.ocsps
    ]
    for value in new_values:
        if value.dump() not in revocation_values:
            revocation_values.append(value.dump())

    signed_data["certificates"] = cms.CertificateSet([cms.CertificateChoices.load(item) for item in certificates])
    if revocation_values:
        signed_data["crls"] = cms.RevocationInfoChoices(
            [cms.RevocationInfoChoice.load(item) for item in revocation_values])
    if any(choice.name == "other" for choice in _choices(signed_data["crls"])):
        signed_data["version"] = "v5"
    return cms.SignedData.load(signed_data.untag().dump())


def embedded_certificates(signed_data: cms.SignedData) -> list[x509.Certificate]:
    """Return the X.509 certificates of SignedData.certificates and of every time-stamp token of its signers."""
    certificates = signed_data_certificates(signed_data)
    for signer_info in signed_data["signer_infos"]:
        tokens = signature_timestamp_tokens(signer_info)
        tokens += [token["content"] for token in archive_timestamp_tokens(signer_info)]
        for token in tokens:
            certificates.extend(signed_data_certificates(token))
    return certificates


def embedded_validation_context(signed_data: cms.SignedData, trust_roots: list[x509.Certificate]) -> ValidationContext:
    """Return a ValidationContext that uses only the validation data embedded in ``signed_data``.

    Nothing is fetched and missing revocation values fail the validation
    ("hard-fail"), so a signature that validates with it is self-contained.
    """
    embedded = signed_data_validation_data(signed_data)
    return ValidationContext(trust_roots=list(trust_roots), other_certs=embedded_certificates(signed_data),
                             crls=list(embedded.crls), ocsps=list(embedded.ocsps), allow_fetching=False,
                             revocation_mode="hard-fail")


def revocation_gaps(signed_data: cms.SignedData, signer_info: cms.SignerInfo) -> list[str]:
    """Return the certificates of the signer's and signature TSAs' chains that lack embedded validation data.

    Each chain must lead to a self-issued certificate within the embedded
    certificates. Every other certificate in it needs an OCSP response or a
    CRL of its issuer in SignedData.crls, unless it carries id-pkix-ocsp-nocheck.
    A delegated OCSP responder's certificate is checked the same way. The
    signatures of the revocation values are not verified here. Returns one
    description per gap, empty when there is none.
    """
    embedded = signed_data_validation_data(signed_data)
    pool = list(embedded.certificates)
    crls, ocsps = embedded.crls, embedded.ocsps
    leaves: list[x509.Certificate | None] = [find_signer_certificate(signer_info["sid"], pool)]
    for tst_signed_data in signature_timestamp_tokens(signer_info):
        pool = pool + signed_data_certificates(tst_signed_data)
        leaves.append(find_signer_certificate(tst_signed_data["signer_infos"][0]["sid"], pool))

    gaps: list[str] = []
    checked: set[bytes] = set()
    pending = list(leaves)
    # Ends because each certificate is checked once and only responder certificates are added.
    while pending:
        certificate = pending.pop()
        if certificate is None:
            gaps.append("a signer or TSA certificate is not embedded")
            continue
        chain = _chain(certificate, pool)
        if not chain[-1].self_issued:
            gaps.append(f"the chain of {_name(certificate)} stops at {_name(chain[-1])} without reaching a root")
        for subject, issuer in zip(chain, chain[1:]):
            if subject.dump() in checked:
                continue
            checked.add(subject.dump())
            if subject.ocsp_no_check_value is not None:
                continue
            responders = _ocsp_responders(subject, issuer, ocsps)
            if responders is None and not any(_crl_covers(item, subject) for item in crls):
                gaps.append(_name(subject))
            for responder in responders or []:
                if responder.dump() != issuer.dump():
                    pending.append(responder)
    return gaps


async def _validated_chain(signed_data: cms.SignedData, validation_context: ValidationContext, *, level: str,
                           extended_key_usage: set[str], extra_certificates: Iterable[x509.Certificate] = ()
                           ) -> list[x509.Certificate]:
    """Validate the chain of the first signer of ``signed_data`` and return it, root first."""
    certificates = signed_data_certificates(signed_data) + list(extra_certificates)
    signer = find_signer_certificate(signed_data["signer_infos"][0]["sid"], certificates)
    if signer is None:
        raise CadesLevelNotReached(level=level, reason="the signer's certificate is not embedded")

    validator = CertificateValidator(signer, intermediate_certs=certificates, validation_context=validation_context)
    try:
        path = await validator.async_validate_usage(set(), extended_key_usage or None)
    except (PathBuildingError, ValidationError) as exc:
        reason = f"the chain of {_name(signer)} cannot be validated: {exc}"
        raise CadesLevelNotReached(level=level, reason=reason[:300]) from exc
    return list(path.iter_certs(include_root=True))


def _pick_validation_data(chains: list[list[x509.Certificate]], validation_context: ValidationContext, *,
                          embedded_in: cms.SignedData | None = None) -> ValidationData:
    """Take from ``validation_context`` the newest OCSP response, or else CRL, for each certificate of ``chains``.

    The context may contain responses about other certificates, several about
    one certificate when its cache was refreshed during validation, and both
    an OCSP response and a CRL when pyHanko fetched both. One value per
    certificate suffices. Certificates that ``embedded_in`` has revocation
    values for are skipped.
    """
    existing = signed_data_validation_data(embedded_in) if embedded_in is not None else ValidationData()
    certificates = [certificate for chain in chains for certificate in chain]
    ocsps: list[ocsp.OCSPResponse] = []
    crls: list[crl.CertificateList] = []
    done: set[bytes] = set()
    pending = [(subject, chain) for chain in chains for subject in chain]
    # Ends because each certificate is handled once and only responder certificates are added.
    while pending:
        subject, pool = pending.pop(0)
        issuer = _issuer_in(subject, pool)
        if subject.dump() in done or issuer is None or subject.self_issued or subject.ocsp_no_check_value is not None:
            continue
        done.add(subject.dump())
        if (_ocsp_responders(subject, issuer, existing.ocsps) is not None
                or any(_crl_covers(item, subject) for item in existing.crls)):
            continue

        responses = [item for item in validation_context.ocsps if _ocsp_responders(subject, issuer, [item]) is not None]
        if responses:
            newest = max(responses, key=_produced_at)
            ocsps.append(newest)
            certificates.extend(ocsp_response_certificates(newest))
            # A delegated responder's certificate needs revocation values of its own.
            for responder in _ocsp_responders(subject, issuer, [newest]) or []:
                if responder.dump() != issuer.dump():
                    pending.append((responder, pool + [responder]))
            continue
        covering_crls = [item for item in validation_context.crls if _crl_covers(item, subject)]
        if covering_crls:
            crls.append(max(covering_crls, key=lambda item: item["tbs_cert_list"]["this_update"].native))
    return ValidationData(tuple(certificates), tuple(ocsps), tuple(crls))


def _produced_at(response: ocsp.OCSPResponse) -> datetime:
    return response["response_bytes"]["response"].parsed["tbs_response_data"]["produced_at"].native


def _chain(certificate: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    """Return ``certificate`` and its issuers found in ``pool``, up to a self-issued one or a missing issuer."""
    chain = [certificate]
    while not chain[-1].self_issued and len(chain) < _MAX_CHAIN_LENGTH:
        issuer = _issuer_in(chain[-1], pool)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _issuer_in(certificate: x509.Certificate, pool: list[x509.Certificate]) -> x509.Certificate | None:
    for candidate in pool:
        if candidate.subject != certificate.issuer:
            continue
        authority_key_id = certificate.authority_key_identifier
        if authority_key_id is None or candidate.key_identifier in (None, authority_key_id):
            return candidate
    return None


def _ocsp_responders(subject: x509.Certificate, issuer: x509.Certificate,
                     responses: Sequence[ocsp.OCSPResponse]) -> list[x509.Certificate] | None:
    """Return the responder certificates of the OCSP responses about ``subject``, or None if no response is about it.

    A response signed by the issuing CA itself names no responder certificate.
    """
    responders: list[x509.Certificate] | None = None
    for response in responses:
        if response["response_status"].native != "successful":
            continue
        basic = response["response_bytes"]["response"].parsed
        for single in basic["tbs_response_data"]["responses"]:
            if _cert_id_matches(single["cert_id"], subject, issuer):
                responders = (responders or []) + _responder_certificates(basic)
    return responders


def _cert_id_matches(cert_id: ocsp.CertId, subject: x509.Certificate, issuer: x509.Certificate) -> bool:
    # RFC 6960 section 4.1.1: hashes of the issuer's DER name and of its public key's BIT STRING value.
    algorithm = cert_id["hash_algorithm"]["algorithm"].native
    name_hash = hashlib.new(algorithm, issuer.subject.dump()).digest()
    key_hash = hashlib.new(algorithm, bytes(issuer.public_key["public_key"])).digest()
    return (
        cert_id["serial_number"].native == subject.serial_number
        and cert_id["issuer_name_hash"].native == name_hash
        and cert_id["issuer_key_hash"].native == key_hash
    )


def _responder_certificates(basic: ocsp.BasicOCSPResponse) -> list[x509.Certificate]:
    responder_id = basic["tbs_response_data"]["responder_id"]
    found = []
    for certificate in present(basic["certs"]):
        if responder_id.name == "by_name" and certificate.subject == responder_id.chosen:
            found.append(certificate)
        elif responder_id.name == "by_key" and certificate.public_key.sha1 == responder_id.chosen.native:
            found.append(certificate)
    return found


def _crl_covers(certificate_list: crl.CertificateList, subject: x509.Certificate) -> bool:
    return certificate_list["tbs_cert_list"]["issuer"] == subject.issuer


def _choices(values: cms.CertificateSet | cms.RevocationInfoChoices) -> list:
    return present(values)


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.human_friendly
