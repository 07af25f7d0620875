"""Sign every PDF of the shared corpus: each signs and verifies, or is rejected with a stable code.

The corpus directory is ``DEFAULT_CORPUS_DIR`` of the conftest unless
``SIGNSERVER_CORPUS`` names another one. Tests skip when it is absent.
"""

from __future__ import annotations

import subprocess

import pytest

from signserver.errors import SignserverError
from signserver.signing.pades import StampSpec, sign_pdf
from signserver.signing.validate import ensure_signed_pdf_valid
from tests.signing.conftest import AGENCY, SIGNER_NAME
from tests.signing.tools import pdfsig, pdfsig_signatures, qpdf_check

pytestmark = pytest.mark.corpus

PASSWORDS = {
    "pyhanko-minimal-aes256.pdf": "usersecret",
    "pyhanko-minimal-rc4.pdf": "usersecret",
    "pypdf-libreoffice-writer-password.pdf": "openpassword",
}

SIGNED = [
    "pdf20-incremental-save.pdf",
    "pdf20-simple.pdf",
    "pyhanko-circular-page-tree.pdf",
    "pyhanko-fontembed.pdf",
    "pyhanko-malformed-xref-space-padded.pdf",
    "pyhanko-minimal-aes256.pdf",
    "pyhanko-minimal-badxref.pdf",
    "pyhanko-minimal-hybrid-xref.pdf",
    "pyhanko-minimal-rc4.pdf",
    "pyhanko-minimal-signed-twice-both-created.pdf",
    "pyhanko-minimal-startxref-obo1.pdf",
    "pyhanko-minimal-two-fields.pdf",
    "pyhanko-minimal-two-pages.pdf",
    "pyhanko-minimal-with-field.pdf",
    "pyhanko-minimal.pdf",
    "pyhanko-no-mediabox.pdf",
    "pypdf-crazyones-pdfa.pdf",
    "pypdf-google-doc-document.pdf",
    "pypdf-libreoffice-writer-password.pdf",
    "pypdf-libreoffice-writer.pdf",
    "pypdf-pdflatex-4-pages.pdf",
    "pypdf-pdflatex-forms.pdf",
    "qpdf-digitally-signed.pdf",
    "qpdf-enc-R3-V2-owner-only.pdf",
    "qpdf-form-filled-by-acrobat.pdf",
    "qpdf-good13.pdf",
    "qpdf-hybrid-xref.pdf",
    "qpdf-incremental-1.pdf",
    "qpdf-minimal-linearized.pdf",
    "qpdf-need-appearances.pdf",
]

REJECTED = {
    "pdf20-offset-start.pdf": "pdf_invalid",
    "pyhanko-broken-objstream1.pdf": "pdf_invalid",
    "pyhanko-minimal-illegal-header.pdf": "pdf_invalid",
    "qpdf-minimal-signed-restricted.pdf": "pdf_certified_no_changes",
    "qpdf-xref-errors.pdf": "pdf_invalid",
}

STAMP = StampSpec(page=1, box=(20.0, 20.0, 220.0, 90.0), signer_name=SIGNER_NAME, signer_title="", agency=AGENCY)


def _page_text(path, password: str | None) -> str:
    command = ["pdftotext", "-f", "1", "-l", "1", "-enc", "UTF-8"]
    if password is not None:
        command += ["-upw", password]
    result = subprocess.run([*command, str(path), "-"], capture_output=True, text=True, check=True)
    return result.stdout


@pytest.mark.parametrize("name", SIGNED)
async def test_corpus_pdf_signs(pki, timestamper, corpus_file, nss_dir, tmp_path, name):
    source = corpus_file(name)
    password = PASSWORDS.get(name)
    output = tmp_path / name
    password_options = ("-upw", password) if password else ()
    signatures_before = len(pdfsig_signatures(pdfsig(source, nss_dir, *password_options)))

    await sign_pdf(
        source, output, key=pki.rsa_signer, timestamper=timestamper, reason="Thử nghiệm",
        location="Hà Nội", stamp=STAMP, password=password,
    )

    await ensure_signed_pdf_valid(output, [pki.root], password)
    blocks = pdfsig_signatures(pdfsig(output, nss_dir, *password_options))
    assert len(blocks) == signatures_before + 1
    assert "Signature is Valid." in blocks[-1]
    assert "Certificate is Trusted." in blocks[-1]
    assert qpdf_check(output, password).returncode in (0, qpdf_check(source, password).returncode)
    assert SIGNER_NAME in _page_text(output, password)


@pytest.mark.parametrize(("name", "code"), sorted(REJECTED.items()))
async def test_corpus_pdf_rejected(pki, timestamper, corpus_file, tmp_path, name, code):
    output = tmp_path / name

    with pytest.raises(SignserverError) as caught:
        await sign_pdf(
            corpus_file(name), output, key=pki.rsa_signer, timestamper=timestamper, reason="Thử nghiệm",
            location="Hà Nội", stamp=STAMP,
        )

    assert caught.value.code == code
    assert not output.exists()


def test_corpus_expectations_cover_every_file(corpus_dir):
    listed = set(SIGNED) | set(REJECTED)

    assert {path.name for path in corpus_dir.glob("*.pdf")} <= listed
