"""Tests for CAdES B-B and B-T signing and its release check, with software keys and OpenSSL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from signserver.signing.cades import ensure_cades_valid, sign_cades
from signserver.signing.errors import SignatureValidationFailed
from tests.verifiers import openssl_cms_verify

CONTENT = "<HoSo><MaHoSo>000.00.01.H01-261204-0001</MaHoSo></HoSo>\n".encode() * 1000


@pytest.fixture
def original(tmp_path: Path) -> Path:
    path = tmp_path / "to-khai.xml"
    path.write_bytes(CONTENT)
    return path


@pytest.mark.parametrize("key_name", ["rsa_signer", "ec_signer"])
async def test_sign_cades_detached_verified_by_openssl(pki, timestamper, original, tmp_path, key_name):
    output = tmp_path / "signed.p7s"

    result = await sign_cades(original, output, key=getattr(pki, key_name), timestamper=timestamper, attached=False)

    verified = openssl_cms_verify(output, pki.chain_pem, original)
    assert verified.returncode == 0, verified.stderr
    assert result.level == "B-T"
    assert result.output_digest_sha256 == hashlib.sha256(output.read_bytes()).hexdigest()


async def test_sign_cades_without_timestamper_is_b_b(pki, original, tmp_path):
    output = tmp_path / "signed.p7s"

    result = await sign_cades(original, output, key=pki.rsa_signer, timestamper=None, attached=False)

    assert result.level == "B-B"
    await ensure_cades_valid(output, original, [pki.root], level="B-B")


async def test_sign_cades_leaves_no_temporary_file(pki, original, tmp_path):
    output = tmp_path / "signed.p7m"

    await sign_cades(original, output, key=pki.rsa_signer, timestamper=None, attached=True)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["signed.p7m", "to-khai.xml"]


@pytest.mark.parametrize("attached", [False, True])
async def test_ensure_cades_valid_accepts_b_t(pki, timestamper, original, tmp_path, attached):
    output = tmp_path / "signed.cms"
    await sign_cades(original, output, key=pki.ec_signer, timestamper=timestamper, attached=attached)

    await ensure_cades_valid(output, original, [pki.root], level="B-T")


@pytest.mark.parametrize("attached", [False, True])
async def test_ensure_cades_valid_rejects_changed_original(pki, timestamper, original, tmp_path, attached):
    output = tmp_path / "signed.cms"
    await sign_cades(original, output, key=pki.rsa_signer, timestamper=timestamper, attached=attached)
    original.write_bytes(CONTENT + "<!-- sửa -->".encode())

    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_valid(output, original, [pki.root], level="B-T")


async def test_ensure_cades_valid_rejects_b_t_without_timestamp(pki, original, tmp_path):
    output = tmp_path / "signed.p7s"
    await sign_cades(original, output, key=pki.rsa_signer, timestamper=None, attached=False)

    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_valid(output, original, [pki.root], level="B-T")


async def test_ensure_cades_valid_rejects_untrusted_signer(pki, original, tmp_path):
    output = tmp_path / "signed.p7s"
    await sign_cades(original, output, key=pki.rsa_signer, timestamper=None, attached=False)

    # The TSA certificate is no issuer of the signer, so no path reaches a trust root.
    with pytest.raises(SignatureValidationFailed):
        await ensure_cades_valid(output, original, [pki.tsa.certificate], level="B-B")
