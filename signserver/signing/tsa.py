"""The service's own RFC 3161 time-stamping authority, and a pyHanko client for it.

``TimeStampAuthority`` checks a TimeStampReq and builds the TimeStampResp.
The token is a CMS SignedData over a TSTInfo (RFC 3161 section 2.4.2) whose
signed attributes carry the ESSCertIDv2 of the TSA certificate (RFC 5816).
The private key stays behind a ``RawSigner``. Serial numbers come from the
caller, because they must be unique across replicas and only the database
can guarantee that.

``InProcessTimeStamper`` lets pyHanko obtain tokens from the authority
without HTTP, going through the same DER request and response as a remote
client, with the nonce and message imprint checked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import structlog
from asn1crypto import algos, cms, core, tsp, x509
from pyhanko.sign.general import as_signing_certificate_v2, simple_cms_attribute
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError, handle_tsp_response

from signserver.signing.errors import TimestampFailed
from signserver.signing.keys import SigningKey, sign_data, signature_mechanism

__all__ = [
    "checked_token",
    "ACCEPTED_HASH_ALGORITHMS",
    "TimeStampResp",
    "TimeStampAuthority",
    "InProcessTimeStamper",
    "TimestampFailed",
]

log = structlog.get_logger(__name__)

# Message imprint algorithms accepted in requests. SHA-1 and MD5 are
# rejected with badAlg because collisions for them can be computed.
ACCEPTED_HASH_ALGORITHMS = ("sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512")

# The TSA signs its signed attributes with SHA-256 whatever the imprint uses.
TOKEN_DIGEST_ALGORITHM = "sha256"

_OID_PATTERN = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
# RFC 3161 section 2.4.2: serial numbers up to 160 bits must be supported.
_MAX_SERIAL_BITS = 160


class TimeStampResp(core.Sequence):
    """TimeStampResp of RFC 3161 section 2.4.2, where timeStampToken is OPTIONAL.

    asn1crypto 1.5.1 declares the token mandatory, so it can neither build
    nor fully parse a rejection, which has no token.
    """

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class TimeStampAuthority:
    """Builds RFC 3161 responses signed with ``key``, under one policy.

    ``serial_source`` returns a new unique positive serial number on each
    call. ``clock`` returns the current time as an aware datetime. The TSA
    certificate must have a critical extended key usage of only
    id-kp-timeStamping (RFC 3161 section 2.3).
    """

    def __init__(
        self,
        key: SigningKey,
        *,
        policy_oid: str,
        serial_source: Callable[[], Awaitable[int]],
        accuracy_seconds: int = 1,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not _OID_PATTERN.match(policy_oid):
            raise ValueError(f"policy_oid must be a dotted object identifier such as '1.2.3.4', got {policy_oid!r}")
        if isinstance(accuracy_seconds, bool) or not isinstance(accuracy_seconds, int) or accuracy_seconds < 1:
            raise ValueError(f"accuracy_seconds must be a positive integer, got {accuracy_seconds!r}")
        _check_tsa_certificate(key.certificate)

        self.key = key
        self.policy_oid = policy_oid
        self.accuracy_seconds = accuracy_seconds
        self._serial_source = serial_source
        self._clock = clock
        # The parts of every token that depend only on the TSA's certificate, encoded once.
        self._signing_certificate_attribute = simple_cms_attribute(
            "signing_certificate_v2", as_signing_certificate_v2(key.certificate, TOKEN_DIGEST_ALGORITHM))
        self._signer_id = cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": key.certificate.issuer, "serial_number": key.certificate.serial_number})})
        self._tsa_name = x509.GeneralName({"directory_name": key.certificate.subject})

    async def respond(self, request_der: bytes) -> bytes:
        """Build the DER TimeStampResp for a DER TimeStampReq.

        Requests that cannot be served get status ``rejection`` with a
        failInfo: badRequest (not a valid request), badAlg (hash algorithm not
        accepted), badDataFormat (imprint length wrong for its algorithm),
        unacceptedPolicy (reqPolicy other than ours) or unacceptedExtension
        (any request extension). Errors of ``serial_source`` and of the
        RawSigner propagate, so the caller can report the outage.
        """
        try:
            request = tsp.TimeStampReq.load(request_der, strict=True)
            # asn1crypto parses lazily, so force the whole structure now.
            request.native
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            return _rejection("bad_request", f"the request is not a DER TimeStampReq: {type(exc).__name__}")

        rejection = self._check_request(request)
        if rejection is not None:
            return rejection

        nonce = request["nonce"].native
        token = await self.timestamp_token(
            request["message_imprint"]["hashed_message"].native,
            request["message_imprint"]["hash_algorithm"]["algorithm"].native,
            nonce=nonce,
            cert_req=bool(request["cert_req"].native),
        )
        response = TimeStampResp({"status": tsp.PKIStatusInfo({"status": "granted"}), "time_stamp_token": token})
        return response.dump()

    async def timestamp_token(
        self, message_imprint: bytes, hash_algorithm: str, *, nonce: int | None, cert_req: bool = True
    ) -> cms.ContentInfo:
        """Build and sign a time-stamp token for ``message_imprint``.

        With ``cert_req`` the token carries the TSA certificate and its chain.
        Raises ValueError for a hash algorithm that is not accepted or an
        imprint of the wrong length.
        """
        _check_imprint(message_imprint, hash_algorithm)
        serial_number = await self._serial_source()
        if serial_number < 1 or serial_number.bit_length() > _MAX_SERIAL_BITS:
            raise ValueError(
                f"serial_source returned {serial_number}, expected a positive integer of at most "
                f"{_MAX_SERIAL_BITS} bits"
            )
        gen_time = self._clock()
        if gen_time.tzinfo is None:
            raise ValueError("clock returned a naive datetime, it must return an aware one")

        tst_info_fields = {
            "version": "v1",
            "policy": self.policy_oid,
            "message_imprint": tsp.MessageImprint(
                {"hash_algorithm": algos.DigestAlgorithm({"algorithm": hash_algorithm}), "hashed_message": message_imprint}
            ),
            "serial_number": serial_number,
            # Whole seconds, because the stated accuracy is at least one second.
            "gen_time": gen_time.astimezone(timezone.utc).replace(microsecond=0),
            "accuracy": tsp.Accuracy({"seconds": self.accuracy_seconds}),
            # ordering is left out, which DER encodes as its default, false.
            "tsa": self._tsa_name,
        }
        if nonce is not None:
            tst_info_fields["nonce"] = nonce
        tst_info_der = tsp.TSTInfo(tst_info_fields).dump()

        signer_info = await self._signer_info(tst_info_der)
        certificates = [self.key.certificate, *self.key.chain] if cert_req else []
        digest_algorithm = algos.DigestAlgorithm({"algorithm": TOKEN_DIGEST_ALGORITHM})
        signed_data_fields = {
            "version": "v3",
            "digest_algorithms": [digest_algorithm],
            "encap_content_info": cms.EncapsulatedContentInfo(
                {"content_type": "tst_info", "content": cms.ParsableOctetString(tst_info_der)}
            ),
            "signer_infos": [signer_info],
        }
        if certificates:
            signed_data_fields["certificates"] = [cms.CertificateChoices({"certificate": c}) for c in certificates]
        return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data_fields)})

    def _check_request(self, request: tsp.TimeStampReq) -> bytes | None:
        """Return a rejection response for a request that cannot be served, else None."""
        if request["version"].native != "v1":
            return _rejection("bad_request", f"request version {request['version'].native} is not v1")

        imprint = request["message_imprint"]
        hash_algorithm = imprint["hash_algorithm"]["algorithm"].native
        if hash_algorithm not in ACCEPTED_HASH_ALGORITHMS:
            return _rejection(
                "bad_alg",
                f"hash algorithm {hash_algorithm} is not accepted, use one of {', '.join(ACCEPTED_HASH_ALGORITHMS)}",
            )
        expected_length = hashlib.new(hash_algorithm).digest_size
        if len(imprint["hashed_message"].native) != expected_length:
            return _rejection(
                "bad_data_format", f"the {hash_algorithm} message imprint must be {expected_length} bytes"
            )

        requested_policy = request["req_policy"].dotted if request["req_policy"].native is not None else None
        if requested_policy is not None and requested_policy != self.policy_oid:
            return _rejection(
                "unaccepted_policy", f"policy {requested_policy} is not offered, this TSA uses {self.policy_oid}"
            )
        if request["extensions"].native:
            return _rejection("unaccepted_extensions", "request extensions are not supported")
        return None

    async def _signer_info(self, tst_info_der: bytes) -> cms.SignerInfo:
        digest_algorithm = algos.DigestAlgorithm({"algorithm": TOKEN_DIGEST_ALGORITHM})
        mechanism = signature_mechanism(self.key.key_type, TOKEN_DIGEST_ALGORITHM)
        signed_attrs = cms.CMSAttributes(
            [
                simple_cms_attribute("content_type", "tst_info"),
                simple_cms_attribute("message_digest", hashlib.sha256(tst_info_der).digest()),
                self._signing_certificate_attribute,
                # RFC 6211 binds the algorithms to the signature.
                simple_cms_attribute(
                    "cms_algorithm_protection",
                    cms.CMSAlgorithmProtection(
                        {"digest_algorithm": digest_algorithm, "signature_algorithm": mechanism}
                    ),
                ),
            ]
        )
        signature = await sign_data(self.key, signed_attrs.dump(), TOKEN_DIGEST_ALGORITHM)
        return cms.SignerInfo(
            {
                "version": "v1",
                "sid": self._signer_id,
                "digest_algorithm": digest_algorithm,
                "signed_attrs": signed_attrs,
                "signature_algorithm": mechanism,
                "signature": signature,
            }
        )


class InProcessTimeStamper(TimeStamper):
    """A pyHanko ``TimeStamper`` that sends DER requests to a ``TimeStampAuthority`` in-process.

    Like a remote TSA client it sends a random nonce and checks that the
    response echoes it and covers the requested message imprint. Failures
    raise pyHanko's TimestampRequestError.
    """

    def __init__(self, authority: TimeStampAuthority) -> None:
        super().__init__(include_nonce=True)
        self.authority = authority

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> TimeStampResp:
        response_der = await self.authority.respond(req.dump())
        try:
            return TimeStampResp.load(response_der, strict=True)
        except ValueError as exc:
            raise TimestampRequestError(f"the TSA response is not a DER TimeStampResp: {exc}") from exc

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        nonce, request = self.request_cms(message_digest, md_algorithm)
        response = await self.async_request_tsa_response(request)
        return checked_token(response, nonce, message_digest, md_algorithm)


def checked_token(response: TimeStampResp, nonce: int | None, message_digest: bytes,
                  md_algorithm: str) -> cms.ContentInfo:
    """Return the token of a granted response after checking its nonce and message imprint.

    Raises TimestampRequestError for a rejection, a wrong nonce, a token over
    another imprint, or a malformed response.
    """
    # The response is parsed field by field, never through .native:
    # pyHanko embeds this token object, and asn1crypto 1.5.1 rebuilds a
    # structure whose .native was read, which made signing ten times slower.
    try:
        # Without a nonce, pyHanko checks only the status. On a nonce
        # mismatch pyHanko 0.38 raises AttributeError instead of
        # TimestampRequestError, so the nonce is compared here.
        token = handle_tsp_response(response, None)
        tst_info = token["content"]["encap_content_info"]["content"].parsed
        received_nonce = tst_info["nonce"].native
        imprint = tst_info["message_imprint"]
        received_digest = imprint["hashed_message"].native
        received_algorithm = imprint["hash_algorithm"]["algorithm"].native
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TimestampRequestError(f"the TSA response is malformed: {type(exc).__name__}: {exc}") from exc

    if received_nonce != nonce:
        raise TimestampRequestError(f"the TSA returned nonce {received_nonce}, but the request sent {nonce}")
    if received_digest != message_digest or received_algorithm != md_algorithm:
        raise TimestampRequestError("the time-stamp token covers another message imprint than the one requested")
    return token


def _rejection(fail_info: str, status_string: str) -> bytes:
    log.info("tsa.request_rejected", fail_info=fail_info, reason=status_string)
    status = tsp.PKIStatusInfo(
        {
            "status": "rejection",
            "status_string": tsp.PKIFreeText([status_string]),
            "fail_info": tsp.PKIFailureInfo({fail_info}),
        }
    )
    return TimeStampResp({"status": status}).dump()


def _check_imprint(message_imprint: bytes, hash_algorithm: str) -> None:
    if hash_algorithm not in ACCEPTED_HASH_ALGORITHMS:
        raise ValueError(f"hash_algorithm must be one of {ACCEPTED_HASH_ALGORITHMS}, got {hash_algorithm!r}")
    expected_length = hashlib.new(hash_algorithm).digest_size
    if len(message_imprint) != expected_length:
        raise ValueError(
            f"message_imprint must be {expected_length} bytes for {hash_algorithm}, got {len(message_imprint)}"
        )


def _check_tsa_certificate(certificate: x509.Certificate) -> None:
    extension = None
    for candidate in certificate["tbs_certificate"]["extensions"]:
        if candidate["extn_id"].native == "extended_key_usage":
            extension = candidate
    subject = certificate.subject.human_friendly
    if extension is None or not extension["critical"].native:
        raise ValueError(f"TSA certificate {subject!r} needs a critical extended key usage extension")
    if extension["extn_value"].native != ["time_stamping"]:
        raise ValueError(
            f"TSA certificate {subject!r} must have id-kp-timeStamping as its only extended key usage, "
            f"got {extension['extn_value'].native}"
        )
