"""Tests for opening and inspecting untrusted PDFs."""

from __future__ import annotations

import random

import pytest
from pyhanko.pdf_utils.crypt.permissions import StandardPermissions
from pyhanko.sign.fields import MDPPerm

from signserver.errors import Conflict, InvalidInput, SignserverError
from signserver.signing.pdf_inspect import PdfInfo, inspect_pdf
from tests.signing.documents import (
    write_encrypted_copy,
    write_pubkey_encrypted_copy,
    write_pyhanko_signature,
)

NO_FORM_FILLING = StandardPermissions.ALLOW_PRINTING | StandardPermissions.ALLOW_CONTENT_EXTRACTION


def test_inspect_pdf_one_page(one_page_pdf):
    assert inspect_pdf(one_page_pdf, None) == PdfInfo(
        page_count=1, encrypted=False, pdf_version="1.3", has_signatures=False, certification_level=None
    )


def test_inspect_pdf_three_pages(three_page_pdf):
    assert inspect_pdf(three_page_pdf, None).page_count == 3


def test_inspect_pdf_ignores_password_when_unencrypted(one_page_pdf):
    assert inspect_pdf(one_page_pdf, "unused").encrypted is False


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, world",
        b"%PDF-1.7\n",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\nstartxref\n999999\n%%EOF\n",
        b"%PDF-1.7\n" + bytes(range(256)) * 40,
        # startxref points so close to the start that pyHanko's repair seeks before byte 0.
        b"%PDF-1.7\nxref\nstartxref\n2\n%%EOF",
    ],
)
def test_inspect_pdf_garbage_invalid(tmp_path, content):
    path = tmp_path / "garbage.pdf"
    path.write_bytes(content)

    with pytest.raises(InvalidInput) as caught:
        inspect_pdf(path, None)

    assert caught.value.code == "pdf_invalid"
    assert caught.value.params["reason"]


def test_inspect_pdf_mutations_raise_domain_errors(one_page_pdf, tmp_path):
    """Random byte edits must give a PdfInfo or a SignserverError, never a raw exception."""
    rng = random.Random(20250305)
    original = one_page_pdf.read_bytes()
    path = tmp_path / "mutated.pdf"
    outcomes = set()

    for _ in range(300):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            if rng.random() < 0.6:
                data[position] = rng.randrange(256)
            else:
                del data[position : position + rng.randint(1, 40)]
        path.write_bytes(bytes(data))
        try:
            inspect_pdf(path, None)
            outcomes.add("opened")
        except SignserverError as exc:
            outcomes.add(exc.code)

    assert "pdf_invalid" in outcomes
    assert "opened" in outcomes


def test_inspect_pdf_truncated_invalid(three_page_pdf, tmp_path):
    path = tmp_path / "truncated.pdf"
    path.write_bytes(three_page_pdf.read_bytes()[:600])

    with pytest.raises(InvalidInput) as caught:
        inspect_pdf(path, None)

    assert caught.value.code == "pdf_invalid"


@pytest.mark.parametrize(
    ("password", "code"), [(None, "pdf_password_required"), ("wrongsecret", "pdf_password_invalid")]
)
def test_inspect_pdf_encrypted_password_errors(three_page_pdf, tmp_path, password, code):
    encrypted = write_encrypted_copy(
        three_page_pdf, tmp_path / "encrypted.pdf", owner_password="ownersecret", user_password="usersecret"
    )

    with pytest.raises(InvalidInput) as caught:
        inspect_pdf(encrypted, password)

    assert caught.value.code == code


@pytest.mark.parametrize("password", ["usersecret", "ownersecret"])
def test_inspect_pdf_encrypted_opens(three_page_pdf, tmp_path, password):
    encrypted = write_encrypted_copy(
        three_page_pdf, tmp_path / "encrypted.pdf", owner_password="ownersecret", user_password="usersecret"
    )

    info = inspect_pdf(encrypted, password)

    assert info.encrypted is True
    assert info.page_count == 3


def test_inspect_pdf_empty_user_password_opens(three_page_pdf, tmp_path):
    encrypted = write_encrypted_copy(three_page_pdf, tmp_path / "encrypted.pdf", owner_password="ownersecret", user_password="")

    assert inspect_pdf(encrypted, None).encrypted is True


def test_inspect_pdf_no_form_filling_permission(three_page_pdf, tmp_path):
    encrypted = write_encrypted_copy(
        three_page_pdf,
        tmp_path / "restricted.pdf",
        owner_password="ownersecret",
        user_password="usersecret",
        permissions=NO_FORM_FILLING,
    )

    with pytest.raises(Conflict) as caught:
        inspect_pdf(encrypted, "usersecret")

    assert caught.value.code == "pdf_signing_not_permitted"
    assert inspect_pdf(encrypted, "ownersecret").encrypted is True


def test_inspect_pdf_pubkey_encryption_unsupported(pki, three_page_pdf, tmp_path):
    encrypted = write_pubkey_encrypted_copy(three_page_pdf, tmp_path / "pubkey.pdf", pki.tsa.certificate)

    with pytest.raises(InvalidInput) as caught:
        inspect_pdf(encrypted, None)

    assert caught.value.code == "pdf_encryption_unsupported"
    assert caught.value.params["handler"] == "/Adobe.PubSec"


async def test_inspect_pdf_certified_no_changes(pki, one_page_pdf, tmp_path):
    certified = await write_pyhanko_signature(
        one_page_pdf, tmp_path / "certified.pdf", pki.rsa_signer, certify=True, docmdp=MDPPerm.NO_CHANGES
    )

    with pytest.raises(Conflict) as caught:
        inspect_pdf(certified, None)

    assert caught.value.code == "pdf_certified_no_changes"


@pytest.mark.parametrize("permission", [MDPPerm.FILL_FORMS, MDPPerm.ANNOTATE])
async def test_inspect_pdf_certification_level(pki, one_page_pdf, tmp_path, permission):
    certified = await write_pyhanko_signature(
        one_page_pdf, tmp_path / "certified.pdf", pki.rsa_signer, certify=True, docmdp=permission
    )

    info = inspect_pdf(certified, None)

    assert info.certification_level == permission.value
    assert info.has_signatures is True


async def test_inspect_pdf_approval_signature(pki, one_page_pdf, tmp_path):
    signed = await write_pyhanko_signature(one_page_pdf, tmp_path / "signed.pdf", pki.rsa_signer)

    info = inspect_pdf(signed, None)

    assert info.has_signatures is True
    assert info.certification_level is None


@pytest.mark.parametrize(
    ("name", "password", "code"),
    [
        ("pyhanko-minimal-illegal-header.pdf", None, "pdf_invalid"),
        ("pyhanko-minimal-aes256.pdf", None, "pdf_password_required"),
        ("pyhanko-minimal-rc4.pdf", "wrongsecret", "pdf_password_invalid"),
        ("qpdf-minimal-signed-restricted.pdf", None, "pdf_certified_no_changes"),
    ],
)
def test_inspect_pdf_corpus_rejected(corpus_file, name, password, code):
    with pytest.raises((InvalidInput, Conflict)) as caught:
        inspect_pdf(corpus_file(name), password)

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("name", "password", "page_count"),
    [
        ("pyhanko-minimal-hybrid-xref.pdf", None, 1),
        ("qpdf-hybrid-xref.pdf", None, 30),
        ("pyhanko-minimal-badxref.pdf", None, 1),
        ("pyhanko-no-mediabox.pdf", None, 1),
        ("pyhanko-minimal-aes256.pdf", "usersecret", 1),
        ("qpdf-enc-R3-V2-owner-only.pdf", None, 30),
        # The second branch of the page tree contains itself, so only page 1 is reachable.
        ("pyhanko-circular-page-tree.pdf", None, 1),
    ],
)
def test_inspect_pdf_corpus_opened(corpus_file, name, password, page_count):
    assert inspect_pdf(corpus_file(name), password).page_count == page_count
