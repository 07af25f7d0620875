"""Tests for the revocation fetcher and the signer certificate check, against responders on loopback.

The demo CA's real HTTP routes serve OCSP and CRL requests from an aiohttp
server that counts the requests it receives. Other loopback servers never
respond, or send more than the size limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko_certvalidator import CertificateValidator

from signserver import demo_pki
from signserver.api import demo_ca as demo_ca_routes
from signserver.app import load_trust_roots
from signserver.demo_ca import DemoCa, create_demo_ca
from signserver.errors import SignserverError
from signserver.signing.revocation import RevocationFetcher, revocation_required_for
from tests.harness import free_port
from tests.signing.conftest import to_asn1

SUBJECT = demo_pki.SubjectSpec(common_name="Lê Thị Thu Hà", organization="Ủy ban nhân dân huyện Mẫu Sơn")


@dataclass
class Responder:
    """The demo CA served on loopback, with the paths of the requests it received."""

    ca: DemoCa
    port: int
    paths: list[str] = field(default_factory=list)

    def count(self, fragment: str = "") -> int:
        return sum(1 for path in self.paths if fragment in path)


@pytest.fixture(scope="module")
def ca_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def demo_ca(tmp_path_factory: pytest.TempPathFactory, ca_port: int) -> DemoCa:
    return create_demo_ca(tmp_path_factory.mktemp("demo-ca") / "pki", f"http://127.0.0.1:{ca_port}/demo-ca")


@pytest.fixture(scope="module")
def public_key_der() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def issue(demo_ca: DemoCa, public_key_der: bytes) -> Callable[..., x509.Certificate]:
    """Return a function that issues a recorded signer certificate naming the demo CA's services."""

    def issue_certificate(revocation_urls: demo_pki.RevocationUrls | None = None, **validity) -> x509.Certificate:
        certificate = demo_pki.issue_signing_certificate(
            demo_ca.issuing, public_key_der, SUBJECT,
            revocation_urls=revocation_urls or demo_ca.urls.for_end_entity(), **validity,
        )
        demo_ca.record_issued(certificate)
        return certificate

    return issue_certificate


@pytest.fixture
def chain(demo_ca: DemoCa) -> list:
    return [to_asn1(demo_ca.issuing.certificate), to_asn1(demo_ca.root.certificate)]


@pytest.fixture
def roots(demo_ca: DemoCa) -> list:
    return [to_asn1(demo_ca.root.certificate)]


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def responder(demo_ca: DemoCa, ca_port: int) -> AsyncIterator[Responder]:
    served = Responder(demo_ca, ca_port)

    @web.middleware
    async def record(request: web.Request, handler):
        served.paths.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    app["demo_ca"] = demo_ca
    app.add_routes(demo_ca_routes.routes)
    runner = await _serve(app, ca_port)
    yield served
    await runner.cleanup()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def fetcher() -> AsyncIterator[RevocationFetcher]:
    revocation = RevocationFetcher(timeout_seconds=2)
    yield revocation
    await revocation.close()


async def test_good_certificate_passes_hard_fail(fetcher, responder, issue, chain, roots):
    certificate = issue()

    check = await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=True)

    assert check.subject == "Lê Thị Thu Hà"
    assert check.unavailable == ()
    assert responder.count("/demo-ca/ocsp") == 1
    assert responder.count("/demo-ca/crl/root.crl") == 1


async def test_second_check_served_from_cache(fetcher, responder, issue, chain, roots):
    certificate = to_asn1(issue())
    await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
    requests_after_first = len(responder.paths)

    await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)

    assert requests_after_first == 2
    assert len(responder.paths) == requests_after_first


async def test_cache_entry_dropped_after_next_update(responder, issue, chain, roots):
    clock = FakeClock()
    # A max_age longer than the OCSP response's validity, so that nextUpdate decides.
    fetcher = RevocationFetcher(timeout_seconds=2, clock=clock, max_age=timedelta(hours=1))
    certificate = to_asn1(issue())
    try:
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
        # The demo CA's OCSP responses are valid for ten minutes, its CRLs for a day.
        clock.now += timedelta(minutes=11)
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
    finally:
        await fetcher.close()

    assert responder.count("/demo-ca/ocsp") == 2
    assert responder.count("/demo-ca/crl/root.crl") == 1


async def test_cache_bounded_by_max_age(responder, issue, chain, roots):
    clock = FakeClock()
    fetcher = RevocationFetcher(timeout_seconds=2, clock=clock, max_age=timedelta(minutes=30))
    certificate = to_asn1(issue())
    try:
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
        clock.now += timedelta(minutes=29)
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
        fetched_within_max_age = responder.count("/demo-ca/crl/root.crl")
        clock.now += timedelta(minutes=2)
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
    finally:
        await fetcher.close()

    # The root CRL's nextUpdate is a day away, but max_age caps its reuse at 30 minutes.
    assert fetched_within_max_age == 1
    assert responder.count("/demo-ca/crl/root.crl") == 2


async def test_revoked_certificate_rejected(fetcher, responder, demo_ca, issue, chain, roots):
    certificate = issue()
    entry, _new = demo_ca.revoke(certificate, "keyCompromise")

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=True)

    assert caught.value.code == "certificate_revoked"
    assert caught.value.params["reason"] == "keyCompromise"
    assert caught.value.params["revoked_at"] == entry.revoked_at.isoformat()
    assert caught.value.params["subject"] == "Lê Thị Thu Hà"


async def test_revoked_rejected_when_revocation_optional(fetcher, responder, demo_ca, issue, chain, roots):
    certificate = issue()
    demo_ca.revoke(certificate, "unspecified")

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=False)

    assert caught.value.code == "certificate_revoked"
    assert caught.value.params["reason"] == "unspecified"


async def test_expired_certificate_rejected_before_fetching(fetcher, responder, issue, chain, roots):
    certificate = issue(not_before=datetime(2019, 1, 1, tzinfo=timezone.utc),
                        not_after=datetime(2020, 1, 1, tzinfo=timezone.utc))

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=True)

    assert caught.value.code == "certificate_expired"
    assert caught.value.params["valid_to"] == "2020-01-01T00:00:00+00:00"
    assert responder.paths == []


async def test_not_yet_valid_certificate_rejected(fetcher, responder, issue, chain, roots):
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)
    certificate = issue(not_before=start)

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=False)

    assert caught.value.code == "certificate_not_yet_valid"
    assert caught.value.params["valid_from"] == start.isoformat()
    assert responder.paths == []


async def test_check_at_given_time(fetcher, responder, issue, chain, roots):
    certificate = issue()
    later = datetime.now(timezone.utc) + timedelta(days=800)

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=False,
                                               now=later)

    assert caught.value.code == "certificate_expired"


async def test_untrusted_certificate_rejected(fetcher, responder, issue, chain):
    other_root = to_asn1(demo_pki.create_root_ca("CA gốc khác", "Tổ chức khác").certificate)

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(issue()), chain, [other_root], revocation_required=False)

    assert caught.value.code == "certificate_untrusted"
    assert caught.value.params["subject"] == "Lê Thị Thu Hà"


async def test_unreachable_responder_required(fetcher, demo_ca, issue, chain, roots):
    # No responder runs on the demo CA's port in this test.
    certificate = issue()

    with pytest.raises(SignserverError) as caught:
        await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=True)

    assert caught.value.code == "revocation_unavailable"
    assert demo_ca.urls.crl_url("root") in caught.value.params["urls"]
    assert caught.value.params["reason"]


async def test_unreachable_responder_tolerated_when_optional(fetcher, demo_ca, issue, chain, roots):
    certificate = issue()

    check = await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=False)

    failed_urls = {failure.url for failure in check.unavailable}
    assert demo_ca.urls.ocsp_url in failed_urls
    assert demo_ca.urls.crl_url("issuing") in failed_urls


async def test_failed_fetch_not_cached(fetcher, demo_ca, ca_port, issue, chain, roots):
    certificate = to_asn1(issue())
    with pytest.raises(SignserverError):
        await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)

    app = web.Application()
    app["demo_ca"] = demo_ca
    app.add_routes(demo_ca_routes.routes)
    runner = await _serve(app, ca_port)
    try:
        check = await fetcher.check_signer_certificate(certificate, chain, roots, revocation_required=True)
    finally:
        await runner.cleanup()

    assert check.unavailable == ()


async def test_silent_responder_times_out(responder, demo_ca, issue, chain, roots):
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    silent_base = f"http://127.0.0.1:{silent_port}"
    certificate = issue(demo_pki.RevocationUrls(ocsp_url=f"{silent_base}/ocsp", crl_url=f"{silent_base}/issuing.crl"))
    fetcher = RevocationFetcher(timeout_seconds=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(SignserverError) as caught:
            await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=True)
    finally:
        elapsed = time.monotonic() - started
        await fetcher.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()

    assert caught.value.code == "revocation_unavailable"
    assert f"{silent_base}/ocsp" in caught.value.params["urls"]
    assert f"{silent_base}/issuing.crl" in caught.value.params["urls"]
    assert "no complete response within 0.5 s" in caught.value.params["reason"]
    # Two requests of at most 0.5 s each, plus the root CRL from the responder.
    assert elapsed < 5
    assert len(accepted) == 2


async def test_oversized_response_rejected(responder, demo_ca, issue, chain, roots):
    async def huge(_request: web.Request) -> web.Response:
        return web.Response(body=b"\x30" * 200_000, content_type="application/pkix-crl")

    app = web.Application()
    app.router.add_get("/big.crl", huge)
    app.router.add_post("/ocsp", huge)
    big_port = free_port()
    runner = await _serve(app, big_port)
    base = f"http://127.0.0.1:{big_port}"
    certificate = issue(demo_pki.RevocationUrls(ocsp_url=f"{base}/ocsp", crl_url=f"{base}/big.crl"))
    fetcher = RevocationFetcher(timeout_seconds=2, max_response_bytes=64 * 1024)
    try:
        with pytest.raises(SignserverError) as caught:
            await fetcher.check_signer_certificate(to_asn1(certificate), chain, roots, revocation_required=True)
    finally:
        await fetcher.close()
        await runner.cleanup()

    assert caught.value.code == "revocation_unavailable"
    assert "larger than the limit of 65536 bytes" in caught.value.params["reason"]


async def test_context_lists_only_its_own_responses(fetcher, responder, issue, chain, roots):
    first = to_asn1(issue())
    second = to_asn1(issue())
    await fetcher.check_signer_certificate(first, chain, roots, revocation_required=True)

    context = fetcher.validation_context(roots, revocation_required=True, other_certs=chain)
    await CertificateValidator(second, intermediate_certs=chain, validation_context=context).async_validate_path()

    serials = [response.basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_id"]["serial_number"].native
               for response in context.ocsps]
    assert serials == [second.serial_number]
    assert len(context.crls) == 1


async def test_embedded_revocation_data_validates_offline(demo_ca, ca_port, issue, chain, roots):
    certificate = to_asn1(issue())
    online = RevocationFetcher(timeout_seconds=2)
    app = web.Application()
    app["demo_ca"] = demo_ca
    app.add_routes(demo_ca_routes.routes)
    runner = await _serve(app, ca_port)
    try:
        context = online.validation_context(roots, revocation_required=True, other_certs=chain)
        await CertificateValidator(certificate, intermediate_certs=chain, validation_context=context).async_validate_path()
    finally:
        await online.close()
        await runner.cleanup()
    ocsps, crls = list(context.ocsps), list(context.crls)

    offline = RevocationFetcher(timeout_seconds=1)
    try:
        offline_context = offline.validation_context(roots, revocation_required=True, other_certs=chain,
                                                     ocsps=ocsps, crls=crls)
        path = await CertificateValidator(certificate, intermediate_certs=chain,
                                          validation_context=offline_context).async_validate_path()
    finally:
        await offline.close()

    assert len(ocsps) == 1
    assert len(crls) == 1
    assert path.leaf.serial_number == certificate.serial_number


async def test_offline_without_embedded_data_fails_hard(demo_ca, issue, chain, roots):
    certificate = to_asn1(issue())
    offline = RevocationFetcher(timeout_seconds=1)
    try:
        context = offline.validation_context(roots, revocation_required=True, other_certs=chain)
        with pytest.raises(Exception) as caught:
            await CertificateValidator(certificate, intermediate_certs=chain,
                                       validation_context=context).async_validate_path()
    finally:
        await offline.close()

    assert type(caught.value).__name__ == "InsufficientRevinfoError"


def test_revocation_required_for_levels():
    assert revocation_required_for("B-LT")
    assert revocation_required_for("b-lta")
    assert not revocation_required_for("B-T")
    assert not revocation_required_for("B-B")
    assert not revocation_required_for("")


def test_certificates_name_demo_ca_urls(demo_ca: DemoCa, issue):
    certificate = issue()

    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    issuing_points = demo_ca.issuing.certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [description.access_location.value for description in access] == [
        demo_ca.urls.ocsp_url, demo_ca.urls.certificate_url("issuing")]
    assert [name.value for name in points[0].full_name] == [demo_ca.urls.crl_url("issuing")]
    assert [name.value for name in issuing_points[0].full_name] == [demo_ca.urls.crl_url("root")]


def test_trust_anchors_loaded_from_directory(demo_ca: DemoCa, tmp_path: Path):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    national_root = demo_pki.create_root_ca("Root CA quốc gia thử nghiệm", "Bộ Thông tin thử nghiệm").certificate
    other_root = demo_pki.create_root_ca("Root CA khác", "Tổ chức khác").certificate
    demo_pki.write_pem(anchors / "bundle.pem", national_root, other_root)
    (anchors / "single.cer").write_bytes(demo_ca.issuing.certificate.public_bytes(serialization.Encoding.DER))
    (anchors / "README.txt").write_text("không phải chứng thư số", encoding="utf-8")

    roots = load_trust_roots(demo_ca.pki_dir / "root.pem", anchors)

    subjects = [root.subject.native["common_name"] for root in roots]
    assert subjects == [
        "Demo Root CA - Chứng thư số gốc thử nghiệm",
        "Root CA quốc gia thử nghiệm",
        "Root CA khác",
        "Demo Government CA - CA cấp chứng thư thử nghiệm",
    ]


def test_invalid_trust_anchor_stops_start_up(demo_ca: DemoCa, tmp_path: Path):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")

    with pytest.raises(SystemExit) as caught:
        load_trust_roots(demo_ca.pki_dir / "root.pem", anchors)

    assert "broken.pem" in str(caught.value)
