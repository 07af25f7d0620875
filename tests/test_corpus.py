"""Every real PDF of the shared corpus is either signed validly or refused with a clear 4xx code.

The corpus is read in place (``SIGNSERVER_CORPUS`` overrides its location) and
never copied. As an independent reference, pyHanko itself signs each file in
non-strict mode with a software key: every file it can sign, the service must
sign too.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers

from signserver import demo_pki
from tests.harness import Client
from tests.verifiers import pdfsig_signatures, pyhanko_validate, qpdf_check

# User passwords published with the corpus.
PASSWORDS = {
    "pyhanko-minimal-aes256.pdf": "usersecret",
    "pyhanko-minimal-rc4.pdf": "usersecret",
    "pypdf-libreoffice-writer-password.pdf": "openpassword",
    # Encrypted with an owner password only: the user password is empty.
    "qpdf-enc-R3-V2-owner-only.pdf": "",
    "qpdf-minimal-signed-restricted.pdf": "",
}

# Codes that are a clear refusal of a document; anything else is a defect.
DOCUMENT_REFUSALS = {
    "pdf_invalid", "pdf_password_required", "pdf_password_invalid", "pdf_encryption_unsupported",
    "pdf_certified_no_changes", "pdf_signing_not_permitted", "pdf_certified_new_visible_field",
}


def pyhanko_can_sign(path: Path, password: str | None, workdir: Path) -> bool:
    """Sign with pyHanko directly, non-strict, as the reference for what is signable."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = demo_pki.create_root_ca("Reference Root", "Reference")
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    certificate = demo_pki.issue_signing_certificate(root, spki, demo_pki.SubjectSpec("Reference", "Reference"))
    demo_pki.write_private_key(workdir / "ref.key", key)
    demo_pki.write_pem(workdir / "ref.pem", certificate)
    signer = signers.SimpleSigner.load(str(workdir / "ref.key"), str(workdir / "ref.pem"))
    try:
        with path.open("rb") as handle:
            writer = IncrementalPdfFileWriter(handle, strict=False)
            if writer.prev.encrypted:
                writer.encrypt(password or "")
            signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name="ReferenceSignature"), signer=signer,
                             output=io.BytesIO())
    except Exception:  # noqa: BLE001 - any failure means pyHanko cannot sign this file
        return False
    return True


@pytest.fixture(scope="module")
def corpus_results(client: Client, corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Submit the whole corpus, approve every accepted request in one batch, and collect the outcomes."""
    workdir = tmp_path_factory.mktemp("corpus")
    outcomes: dict[str, Any] = {}
    accepted: dict[str, str] = {}
    for path in sorted(corpus_dir.glob("*.pdf")):
        password = PASSWORDS.get(path.name)
        extra = {"pdf_password": password} if password is not None else {}
        response = client.submit(path, filename=path.name, **extra)
        outcomes[path.name] = {"status": response.status_code, "body": response.json()}
        if response.status_code == 201:
            accepted[path.name] = response.json()["id"]

    official = client.official(0)
    approval = client.approve(client.login(0), list(accepted.values()), client.otp.next(official["totp_secret"]))
    assert approval.status_code == 201, approval.text
    for name, request_id in accepted.items():
        final = client.wait_final(request_id, timeout=300)
        outcomes[name]["final"] = final
        if final["state"] == "signed":
            outcomes[name]["signed_path"] = client.download(request_id, workdir / f"signed-{name}")
    return outcomes


def corpus_names() -> list[str]:
    from tests.conftest import corpus_directory

    directory = corpus_directory()
    return sorted(p.name for p in directory.glob("*.pdf")) if directory.is_dir() else []


@pytest.mark.corpus
@pytest.mark.parametrize("name", corpus_names())
def test_corpus_pdf_signed_or_refused(name: str, corpus_results: dict[str, Any], nss_db: Path, demo_root: Path,
                                      corpus_dir: Path, tmp_path: Path) -> None:
    outcome = corpus_results[name]
    password = PASSWORDS.get(name)
    if outcome["status"] != 201:
        assert 400 <= outcome["status"] < 500, outcome
        assert outcome["body"]["code"] in DOCUMENT_REFUSALS, outcome
        assert not pyhanko_can_sign(corpus_dir / name, password, tmp_path), f"pyHanko signs {name}; the service refused"
        return

    assert outcome["final"]["state"] == "signed", outcome["final"]
    signed: Path = outcome["signed_path"]
    ours = pdfsig_signatures(signed, nss_db, password=password)[-1]
    assert ours.signature_valid, ours.raw
    assert ours.certificate_trusted, ours.raw
    assert ours.signer_common_name == "Trần Thị Bích Ngọc"

    validation = pyhanko_validate(signed, demo_root, password=password)[-1]
    assert validation["intact"], validation
    assert validation["valid"], validation
    assert validation["trusted"], validation
    assert validation["timestamp_valid"], validation

    # An incremental update cannot repair the file it extends: where qpdf rejects the input
    # (for example a loop in the page tree), the output is held to no more than that.
    input_ok, _ = qpdf_check(corpus_dir / name, password=password, allow_warnings=True)
    if input_ok:
        ok, output = qpdf_check(signed, password=password, allow_warnings=True)
        assert ok, output
