"""Tests for the RFC 3161 authority, checked with ``openssl ts`` as the independent verifier."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from asn1crypto import algos, cms, core, tsp
from pyhanko.sign.timestamps.common_utils import TimestampRequestError

from signserver.signing.tsa import InProcessTimeStamper, TimeStampAuthority, TimeStampResp
from tests.signing.conftest import TSA_POLICY_OID

DATA = "Quyết định phê duyệt hồ sơ".encode()
NONCE = 0x1234_5678_9ABC_DEF0


def _request(
    data: bytes = DATA,
    hash_algorithm: str = "sha256",
    *,
    nonce: int | None = NONCE,
    cert_req: bool = True,
    policy: str | None = None,
) -> tsp.TimeStampReq:
    digest = hashlib.new(hash_algorithm, data).digest()
    fields = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_algorithm}, "hashed_message": digest},
        "cert_req": cert_req,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    if policy is not None:
        fields["req_policy"] = policy
    return tsp.TimeStampReq(fields)


def _openssl_reply_text(response_der: bytes, tmp_path: Path) -> str:
    reply = tmp_path / "reply.der"
    reply.write_bytes(response_der)
    result = subprocess.run(
        ["openssl", "ts", "-reply", "-in", str(reply), "-text"], capture_output=True, text=True, check=True
    )
    return result.stdout


async def _fail_info(authority: TimeStampAuthority, request_der: bytes) -> set[str]:
    response = TimeStampResp.load(await authority.respond(request_der))
    assert response["status"]["status"].native == "rejection"
    return response["status"]["fail_info"].native


@pytest.mark.parametrize(("key_name", "pem_name"), [("tsa", "tsa_pem"), ("ec_tsa", "ec_tsa_pem")])
async def test_respond_verified_by_openssl(pki, tmp_path, key_name, pem_name):
    authority = TimeStampAuthority(getattr(pki, key_name), policy_oid=TSA_POLICY_OID, serial_source=_serials(1))
    (tmp_path / "reply.der").write_bytes(await authority.respond(_request().dump()))
    (tmp_path / "data.bin").write_bytes(DATA)

    result = subprocess.run(
        [
            "openssl", "ts", "-verify",
            "-data", str(tmp_path / "data.bin"),
            "-in", str(tmp_path / "reply.der"),
            "-CAfile", str(pki.chain_pem),
            "-untrusted", str(getattr(pki, pem_name)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification: OK" in result.stdout


async def test_respond_reply_fields(authority, tmp_path):
    text = _openssl_reply_text(await authority.respond(_request().dump()), tmp_path)

    assert "Status: Granted." in text
    assert f"Policy OID: {TSA_POLICY_OID}" in text
    assert "Nonce: 0x123456789ABCDEF0" in text
    assert "Ordering: no" in text
    assert "Accuracy: 0x01 seconds" in text
    assert "Serial number: 0x01" in text


async def test_respond_tsa_name_is_subject(authority, pki):
    response = TimeStampResp.load(await authority.respond(_request().dump()))
    tst_info = response["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed

    assert tst_info["tsa"].chosen == pki.tsa.certificate.subject


async def test_respond_signed_attrs(authority, pki):
    response = TimeStampResp.load(await authority.respond(_request().dump()))
    signed_data = response["time_stamp_token"]["content"]
    signer_info = signed_data["signer_infos"][0]
    attrs = {attr["type"].native: attr["values"][0] for attr in signer_info["signed_attrs"]}

    assert signed_data["encap_content_info"]["content_type"].native == "tst_info"
    assert attrs["content_type"].native == "tst_info"
    ess_cert_id = attrs["signing_certificate_v2"]["certs"][0]
    assert ess_cert_id["cert_hash"].native == pki.tsa.certificate.sha256


async def test_respond_cert_req_includes_chain(authority, pki):
    response = TimeStampResp.load(await authority.respond(_request(cert_req=True).dump()))
    certificates = {choice.chosen.sha256 for choice in response["time_stamp_token"]["content"]["certificates"]}

    assert certificates == {pki.tsa.certificate.sha256, pki.issuing.sha256, pki.root.sha256}


async def test_respond_without_cert_req_omits_certs(authority):
    response = TimeStampResp.load(await authority.respond(_request(cert_req=False).dump()))

    assert response["time_stamp_token"]["content"]["certificates"].native is None


async def test_respond_without_nonce(authority, tmp_path):
    text = _openssl_reply_text(await authority.respond(_request(nonce=None).dump()), tmp_path)

    assert "Nonce: unspecified" in text


async def test_respond_sha1_bad_alg(authority, tmp_path):
    request_der = _request(hash_algorithm="sha1").dump()

    assert await _fail_info(authority, request_der) == {"bad_alg"}
    text = _openssl_reply_text(await authority.respond(request_der), tmp_path)
    assert "Status: Rejected." in text
    assert "unrecognized or unsupported algorithm identifier" in text


async def test_respond_unknown_algorithm_bad_alg(authority):
    request = _request()
    request["message_imprint"]["hash_algorithm"] = algos.DigestAlgorithm({"algorithm": "1.2.3.4.5.6"})

    assert await _fail_info(authority, request.dump()) == {"bad_alg"}


@pytest.mark.parametrize("garbage", [b"", b"not a request", b"\x30\x03\x02\x01\x01", _request().dump()[:-5]])
async def test_respond_garbage_bad_request(authority, garbage):
    assert await _fail_info(authority, garbage) == {"bad_request"}


async def test_respond_trailing_bytes_bad_request(authority):
    assert await _fail_info(authority, _request().dump() + b"\x00") == {"bad_request"}


async def test_respond_short_imprint_bad_data_format(authority):
    request = _request()
    request["message_imprint"]["hashed_message"] = b"\x00" * 20

    assert await _fail_info(authority, request.dump()) == {"bad_data_format"}


async def test_respond_other_policy_unaccepted(authority):
    assert await _fail_info(authority, _request(policy="1.2.3.4").dump()) == {"unaccepted_policy"}


async def test_respond_own_policy_granted(authority):
    response = TimeStampResp.load(await authority.respond(_request(policy=TSA_POLICY_OID).dump()))

    assert response["status"]["status"].native == "granted"


async def test_respond_extensions_unaccepted(authority):
    request = _request()
    request["extensions"] = [{"extn_id": "1.2.3.4", "critical": False, "extn_value": core.OctetString(b"x").dump()}]

    assert await _fail_info(authority, request.dump()) == {"unaccepted_extensions"}


async def test_timestamp_token_sha512_imprint(pki):
    authority = TimeStampAuthority(pki.tsa, policy_oid=TSA_POLICY_OID, serial_source=_serials(7))

    token = await authority.timestamp_token(hashlib.sha512(DATA).digest(), "sha512", nonce=None)

    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["serial_number"].native == 7
    assert tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha512"


async def test_timestamp_token_uses_clock(pki):
    fixed = datetime(2025, 3, 5, 7, 30, 15, 123456, tzinfo=timezone.utc)
    authority = TimeStampAuthority(pki.tsa, policy_oid=TSA_POLICY_OID, serial_source=_serials(1), clock=lambda: fixed)

    token = await authority.timestamp_token(hashlib.sha256(DATA).digest(), "sha256", nonce=1)

    gen_time = token["content"]["encap_content_info"]["content"].parsed["gen_time"].native
    assert gen_time == fixed.replace(microsecond=0)


async def test_timestamp_token_rejects_wrong_length(authority):
    with pytest.raises(ValueError, match="32 bytes"):
        await authority.timestamp_token(b"\x00" * 20, "sha256", nonce=None)


def test_authority_rejects_non_tsa_certificate(pki):
    with pytest.raises(ValueError, match="extended key usage"):
        TimeStampAuthority(pki.rsa_signer, policy_oid=TSA_POLICY_OID, serial_source=_serials(1))


@pytest.mark.parametrize("policy_oid", ["", "1", "abc", "3.1.2", "1.2.03"])
def test_authority_rejects_bad_policy_oid(pki, policy_oid):
    with pytest.raises(ValueError, match="policy_oid"):
        TimeStampAuthority(pki.tsa, policy_oid=policy_oid, serial_source=_serials(1))


async def test_authority_rejects_bad_serial(pki):
    authority = TimeStampAuthority(pki.tsa, policy_oid=TSA_POLICY_OID, serial_source=_serials(0))

    with pytest.raises(ValueError, match="serial_source"):
        await authority.timestamp_token(hashlib.sha256(DATA).digest(), "sha256", nonce=None)


async def test_in_process_timestamper_returns_token(timestamper):
    digest = hashlib.sha256(DATA).digest()

    token = await timestamper.async_timestamp(digest, "sha256")

    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == digest
    assert tst_info["nonce"].native is not None


class _NonceChangingAuthority(TimeStampAuthority):
    async def timestamp_token(self, message_imprint, hash_algorithm, *, nonce, cert_req=True) -> cms.ContentInfo:
        return await super().timestamp_token(message_imprint, hash_algorithm, nonce=nonce + 1, cert_req=cert_req)


class _ImprintChangingAuthority(TimeStampAuthority):
    async def timestamp_token(self, message_imprint, hash_algorithm, *, nonce, cert_req=True) -> cms.ContentInfo:
        other = hashlib.sha256(message_imprint).digest()
        return await super().timestamp_token(other, hash_algorithm, nonce=nonce, cert_req=cert_req)


async def test_in_process_timestamper_checks_nonce(pki):
    authority = _NonceChangingAuthority(pki.tsa, policy_oid=TSA_POLICY_OID, serial_source=_serials(1))

    with pytest.raises(TimestampRequestError, match="nonce"):
        await InProcessTimeStamper(authority).async_timestamp(hashlib.sha256(DATA).digest(), "sha256")


async def test_in_process_timestamper_checks_imprint(pki):
    authority = _ImprintChangingAuthority(pki.tsa, policy_oid=TSA_POLICY_OID, serial_source=_serials(1))

    with pytest.raises(TimestampRequestError, match="message imprint"):
        await InProcessTimeStamper(authority).async_timestamp(hashlib.sha256(DATA).digest(), "sha256")


async def test_in_process_timestamper_reports_rejection(authority):
    with pytest.raises(TimestampRequestError, match="bad_alg"):
        await InProcessTimeStamper(authority).async_timestamp(hashlib.sha1(DATA).digest(), "sha1")


def _serials(start: int):
    counter = iter(range(start, start + 1000))

    async def next_serial() -> int:
        return next(counter)

    return next_serial
