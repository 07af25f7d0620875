"""PAdES B-T through the native API, against pyHanko signing the same PDF in this process.

A service run submits the PDF (multipart), polls every ``POLL_SECONDS``
until the request is final, then downloads the result. It is timed from the
start of the submission to the end of the download. The seal credential under the
receipts rule (document type BN-TIEPNHAN, approval none) is approved at
submission, so no person takes part. The signature is invisible.

The baseline is pyHanko's own ``PKCS11Signer`` (python-pkcs11) with the same
HSM key, found by CKA_ID, and ``HTTPTimeStamper`` on the service's ``/tsa``,
so both use the same TSA key. It signs PAdES B-T, invisible, into memory.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from asn1crypto import pem, x509
from pyhanko.config.pkcs11 import TokenCriteria
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session
from pyhanko.sign.timestamps import HTTPTimeStamper

from bench.context import RunContext
from bench.documents import text_pdf
from bench.figures import Baseline, Figure, compare
from bench.load import client_session
from bench.service import PKCS11_MODULE, TOKEN_LABEL, BenchHome
from bench.verify import pdfsig_check

__all__ = ["SEAL_CREDENTIAL", "NativeClient", "PyhankoBaseline", "SignedRun", "measure_pades"]

SEAL_CREDENTIAL = "cred-seal-ubnd-mau-son"
# The bench policy's receipts rule seals this document type at once (approval none).
RECEIPT_DOCUMENT_TYPE = "BN-TIEPNHAN"
POLL_SECONDS = 0.005
FINAL_STATES = ("signed", "failed", "rejected", "expired")
SIGN_TIMEOUT_SECONDS = 600
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
PADES_GOAL = "<= 1.3"


@dataclass
class SignedRun:
    """One signature: how long it took, where the output went, and the request id (service runs)."""

    seconds: float
    output: Path
    request_id: str | None = None


class NativeClient:
    """The demo one-stop application on the native API: submit, poll, download."""

    def __init__(self, home: BenchHome, session: aiohttp.ClientSession) -> None:
        self.url = home.url
        self.session = session
        self.headers = {"Authorization": f"Bearer {home.demo_credentials['application']['api_key']}",
                        "Accept-Language": "en"}
        self._count = 0

    def _metadata(self, title: str) -> str:
        self._count += 1
        return json.dumps({
            "idempotency_key": f"bench-{time.time_ns()}-{self._count}",
            "dossier_code": f"000.00.01.H01-261204-{self._count % 10000:04d}",
            "title": title,
            "signer": SEAL_CREDENTIAL,
            "document_type": RECEIPT_DOCUMENT_TYPE,
            "format": "pades",
            "level": "B-T",
            "reason": "Benchmark",
            "location": "Huyện Mẫu Sơn",
            "placement": {"visible": False},
        }, ensure_ascii=False)

    async def sign(self, document: bytes | Path, output: Path, title: str) -> SignedRun:
        """Submit ``document`` (bytes, or a file streamed from disk), wait until signed, download to ``output``."""
        started = time.monotonic()
        form = aiohttp.FormData()
        form.add_field("metadata", self._metadata(title), content_type="application/json")
        if isinstance(document, Path):
            with document.open("rb") as stream:
                form.add_field("document", stream, filename=document.name, content_type="application/pdf")
                request_id = await self._submit(form)
        else:
            form.add_field("document", document, filename="document.pdf", content_type="application/pdf")
            request_id = await self._submit(form)

        state = await self._wait_final(request_id)
        if state["state"] != "signed":
            raise RuntimeError(f"sign request {request_id} ended {state['state']} "
                               f"({state.get('state_reason')}), not signed")

        async with self.session.get(f"{self.url}/api/v1/sign-requests/{request_id}/signed-document",
                                    headers=self.headers) as response:
            if response.status != 200:
                raise RuntimeError(f"download of {request_id} failed with HTTP {response.status}")
            with output.open("wb") as file:
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
                    file.write(chunk)
        return SignedRun(time.monotonic() - started, output, request_id)

    async def _submit(self, form: aiohttp.FormData) -> str:
        async with self.session.post(f"{self.url}/api/v1/sign-requests", data=form,
                                     headers=self.headers) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"submission failed with HTTP {response.status}: {body}")
        if body["state"] not in ("approved", "signing", "signed"):
            raise RuntimeError(f"request {body['id']} is {body['state']} after submission, not approved; "
                               "the bench policy's receipts rule should approve it at once")
        return body["id"]

    async def _wait_final(self, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SIGN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            async with self.session.get(f"{self.url}/api/v1/sign-requests/{request_id}",
                                        headers=self.headers) as response:
                state = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"poll of {request_id} failed with HTTP {response.status}: {state}")
            if state["state"] in FINAL_STATES:
                return state
            await asyncio.sleep(POLL_SECONDS)
        raise RuntimeError(f"sign request {request_id} not final after {SIGN_TIMEOUT_SECONDS} s")


class PyhankoBaseline:
    """pyHanko signing in this process with the seal's HSM key and the service's TSA."""

    def __init__(self, home: BenchHome, session: aiohttp.ClientSession) -> None:
        credential = home.credential(SEAL_CREDENTIAL)
        chain = [x509.Certificate.load(der) for _type, _headers, der in
                 pem.unarmor(credential.chain_pem.encode(), multiple=True)]
        # SoftHSM reads its configuration when python-pkcs11 initialises the module in this process.
        os.environ["SOFTHSM2_CONF"] = str(home.softhsm_conf)
        self._pkcs11 = open_pkcs11_session(PKCS11_MODULE, token_criteria=TokenCriteria(label=TOKEN_LABEL),
                                           user_pin=home.user_pin())
        self.signer = PKCS11Signer(self._pkcs11, key_id=bytes.fromhex(credential.key_id_hex),
                                   signing_cert=x509.Certificate.load(credential.certificate_der), ca_chain=chain)
        self.timestamper = HTTPTimeStamper(f"{home.url}/tsa", session=session)

    async def sign(self, document: bytes, output: Path) -> SignedRun:
        started = time.monotonic()
        metadata = signers.PdfSignatureMetadata(field_name="Signature1", md_algorithm="sha256",
                                                subfilter=fields.SigSeedSubFilter.PADES)
        pdf_signer = signers.PdfSigner(metadata, self.signer, timestamper=self.timestamper)
        signed = await pdf_signer.async_sign_pdf(IncrementalPdfFileWriter(io.BytesIO(document)),
                                                 output=io.BytesIO())
        seconds = time.monotonic() - started
        output.write_bytes(signed.getbuffer())
        return SignedRun(seconds, output)

    def close(self) -> None:
        self._pkcs11.close()


async def measure_pades(ctx: RunContext) -> list[Figure]:
    """Sign each configured document through the service and with pyHanko, alternately; compare the medians."""
    figures = []
    output_dir = ctx.work_dir / "pades"
    output_dir.mkdir(exist_ok=True)
    async with client_session(4) as session:
        native = NativeClient(ctx.home, session)
        baseline = PyhankoBaseline(ctx.home, session)
        try:
            for pages, runs in ctx.config.pades_documents:
                figures += await _measure_document(ctx, native, baseline, pages, runs, output_dir)
        finally:
            baseline.close()
    return figures


async def _measure_document(ctx: RunContext, native: NativeClient, baseline: PyhankoBaseline, pages: int,
                            runs: int, output_dir: Path) -> list[Figure]:
    document = text_pdf(pages)
    title = f"Biên nhận thử nghiệm, {pages} trang"
    if ctx.config.pades_warmup:
        # Untimed: the first call of each side loads code and opens connections.
        await native.sign(document, output_dir / f"warmup-service-{pages}.pdf", title)
        await baseline.sign(document, output_dir / f"warmup-pyhanko-{pages}.pdf")

    service_runs: list[SignedRun] = []
    pyhanko_runs: list[SignedRun] = []
    for index in range(runs):
        service_output = output_dir / f"service-{pages}p-{index}.pdf"
        pyhanko_output = output_dir / f"pyhanko-{pages}p-{index}.pdf"
        # The side that goes first changes every run, so neither always follows the other's work.
        if index % 2 == 0:
            service_runs.append(await native.sign(document, service_output, title))
            pyhanko_runs.append(await baseline.sign(document, pyhanko_output))
        else:
            pyhanko_runs.append(await baseline.sign(document, pyhanko_output))
            service_runs.append(await native.sign(document, service_output, title))

    errors = 0
    first_error = None
    for run in service_runs + pyhanko_runs:
        try:
            pdfsig_check(run.output, ctx.nss_dir)
        except RuntimeError as exc:
            errors += 1
            first_error = first_error or str(exc)

    name = f"pades_bt.{pages}page"
    service_seconds = [run.seconds for run in service_runs]
    pyhanko_seconds = [run.seconds for run in pyhanko_runs]
    pyhanko_figure = Figure(
        f"{name}.pyhanko_in_process", statistics.median(pyhanko_seconds), "s",
        f"median time of pyHanko's PKCS11Signer signing the {pages}-page PDF in this process, PAdES B-T with the "
        "service's /tsa", extra={"runs": runs, "seconds_each": pyhanko_seconds},
    )
    extra = {"runs": runs, "seconds_each": service_seconds, "document_bytes": len(document),
             "signed_bytes": service_runs[0].output.stat().st_size, "pdfsig_checked": len(service_runs) * 2,
             "errors": errors, **({"first_error": first_error} if first_error else {})}
    service_figure = Figure(
        name, statistics.median(service_seconds), "s",
        f"median time from submission to the end of the download of a {pages}-page PDF sealed PAdES B-T "
        "(invisible) through the native API", extra=extra,
    )

    async def rerun(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        count = 0
        async with client_session(4) as session:
            client = NativeClient(ctx.home, session)
            while count == 0 or time.monotonic() < deadline:
                await client.sign(document, output_dir / f"profile-{pages}p-{count}.pdf", title)
                count += 1

    ctx.reruns[name] = (rerun, ctx.config.profile_seconds)
    baseline_value = Baseline(pyhanko_figure.name, pyhanko_figure.value or 0.0, "s")
    return [compare(service_figure, baseline_value, PADES_GOAL), pyhanko_figure]
