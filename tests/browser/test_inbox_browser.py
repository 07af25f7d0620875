"""The officials' inbox in Debian's Chromium, driven headless by Playwright, against a real service on loopback.

Chromium 156 keeps and sends the inbox's Secure session cookie over plain
http://127.0.0.1, which it treats as a secure context, so the service runs
with its default cookie settings. Playwright never downloads a browser
here: it drives /usr/bin/chromium, with a new empty profile per test and
every request to a host other than the server's aborted.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf
from tests.harness import REPO, Client, OtpCodes, Server
from tests.verifiers import pdfsig_signatures, pyhanko_validate

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = REPO / "reports" / "inbox"
# A 1280-px window at 200 % zoom lays pages out in 640 CSS pixels.
ZOOMED_WIDTH = 640
# Playwright's wait for one page or element, in milliseconds: generous, because the first view of a
# request renders its page with pdftoppm on a machine that other test runs may share.
STEP_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed; run make setup")


@pytest.fixture
def browser_page(server: Server) -> Iterator["playwright_api.Page"]:
    """A page of a new Chromium with an empty profile, which can reach only the test server."""
    profile = Path(tempfile.mkdtemp(prefix="inbox-chromium-"))
    allowed_host = urlsplit(server.url).netloc
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, locale="vi-VN",
        )
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.route("**/*", lambda route: route.continue_() if urlsplit(route.request.url).netloc == allowed_host
                      else route.abort())
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def submit_requests(client: Client, tmp_path: Path, count: int, prefix: str,
                    official_index: int = 0) -> list[tuple[str, str, str]]:
    """Submit ``count`` distinct sample PDFs for an official; return (id, dossier code, SHA-256) of each."""
    submitted = []
    for index in range(count):
        dossier_code = f"000.00.01.H01-{prefix}-{index:04d}"
        pdf = generate_sample_pdf(tmp_path / f"{prefix}-{index}.pdf", dossier_code=dossier_code)
        response = client.submit(pdf, dossier_code=dossier_code, title=f"Giấy xác nhận cư trú số {index + 1}",
                                 placement={"rect": list(SAMPLE_STAMP_BOX)}, key=f"{prefix}-{index}",
                                 signer=client.official(official_index)["credential_id"])
        assert response.status_code == 201, response.text
        submitted.append((response.json()["id"], dossier_code, hashlib.sha256(pdf.read_bytes()).hexdigest()))
    return submitted


def log_in(page: "playwright_api.Page", server: Server, official: dict, otp: OtpCodes) -> None:
    page.goto(f"{server.url}/inbox/login")
    page.get_by_label("Tên đăng nhập").fill(official["username"])
    page.get_by_label("Mật khẩu").fill(official["password"])
    page.get_by_label("Mã OTP").fill(otp.next(official["totp_secret"], valid_for=10))
    with page.expect_navigation():
        page.get_by_role("button", name="Đăng nhập").click()
    assert page.url == f"{server.url}/inbox/", page.locator("main").inner_text()


def screenshot(page: "playwright_api.Page", name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_batch_approval_and_rejection(browser_page: "playwright_api.Page", server: Server, client: Client,
                                      otp_codes: OtpCodes, tmp_path: Path, nss_db: Path, demo_root: Path) -> None:
    page = browser_page
    submitted = submit_requests(client, tmp_path, 4, "261205")
    official = client.official(0)

    log_in(page, server, official, otp_codes)
    (session_cookie,) = [cookie for cookie in page.context.cookies() if cookie["name"] == "inbox_session"]
    assert session_cookie["secure"]
    assert session_cookie["httpOnly"]
    assert session_cookie["sameSite"] == "Strict"
    for _request_id, dossier_code, _digest in submitted:
        assert page.get_by_text(dossier_code, exact=True).count() == 1, page.locator("main").inner_text()
    screenshot(page, "1-pending-list")

    first_id, _code, first_digest = submitted[0]
    page.get_by_role("link", name="Giấy xác nhận cư trú số 1").click()
    page.wait_for_url(f"{server.url}/inbox/requests/{first_id}")
    image = page.get_by_role("img", name="Trang 1 / 1")
    image.scroll_into_view_if_needed()
    page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=image.element_handle())
    assert page.locator("#document-sha256").inner_text() == first_digest
    screenshot(page, "2-request-preview")

    page.get_by_role("link", name="Quay lại danh sách chờ phê duyệt").first.click()
    for request_id, _code, _digest in submitted[:3]:
        page.locator(f"#select-{request_id}").check()
    page.get_by_role("button", name="Phê duyệt các yêu cầu đã chọn").click()
    page.wait_for_url(f"{server.url}/inbox/confirm?*")
    confirm_rows = page.locator("table.confirm tbody tr")
    assert confirm_rows.count() == 3
    for _request_id, dossier_code, digest in submitted[:3]:
        assert page.locator("table.confirm").get_by_text(dossier_code, exact=True).count() == 1
        assert page.locator("table.confirm").get_by_text(digest, exact=True).count() == 1
    screenshot(page, "3-confirm-batch")

    page.get_by_label("Mã OTP").fill(otp_codes.next(official["totp_secret"], valid_for=10))
    page.get_by_role("button", name="Phê duyệt 3 yêu cầu").click()
    page.wait_for_url(f"{server.url}/inbox/approvals/*")
    assert page.locator("tr.approved-row").count() == 3, page.locator("main").inner_text()
    # The result is a page of its own: reloading it shows the approval again without posting the code.
    page.reload()
    assert page.locator("tr.approved-row").count() == 3, page.locator("main").inner_text()
    screenshot(page, "4-approved")

    rejected_id, _code, _digest = submitted[3]
    reason = "Hồ sơ thiếu giấy tờ tùy thân của người nộp"
    page.goto(f"{server.url}/inbox/requests/{rejected_id}")
    page.get_by_label("Lý do từ chối (bắt buộc)").fill(reason)
    page.get_by_role("button", name="Từ chối").click()
    page.wait_for_url(f"{server.url}/inbox/requests/{rejected_id}?notice=rejected")
    assert page.get_by_role("status").inner_text() == "Đã từ chối yêu cầu ký."
    screenshot(page, "5-rejected")

    for request_id, _code, _digest in submitted[:3]:
        final = client.wait_final(request_id)
        assert final["state"] == "signed", final
        signed = client.download(request_id, tmp_path / f"{request_id}-signed.pdf")
        signatures = pdfsig_signatures(signed, nss_db)
        assert len(signatures) == 1
        assert signatures[0].signature_valid, signatures[0].raw
        assert signatures[0].certificate_trusted, signatures[0].raw
        (result,) = pyhanko_validate(signed, demo_root)
        assert result["intact"]
        assert result["valid"]
        assert result["trusted"]
        assert result["coverage"] == "ENTIRE_FILE"

    rejected = client.wait_final(rejected_id)
    assert rejected["state"] == "rejected"
    assert rejected["rejection_reason"] == reason

    page.goto(f"{server.url}/inbox/history")
    for request_id, _code, _digest in submitted:
        assert page.locator(f'a[href="/inbox/requests/{request_id}"]').count() == 1
    screenshot(page, "6-history")


def press_tab_until(page: "playwright_api.Page", element_id: str, limit: int = 60) -> None:
    """Press Tab until the element with ``element_id`` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} not reached with {limit} presses of Tab")


def test_keyboard_only_approval(browser_page: "playwright_api.Page", server: Server, client: Client,
                                otp_codes: OtpCodes, tmp_path: Path) -> None:
    page = browser_page
    # The second official, so that this test's two codes come from a TOTP secret the other tests use less.
    ((request_id, _dossier_code, _digest),) = submit_requests(client, tmp_path, 1, "261206", official_index=1)
    official = client.official(1)

    page.goto(f"{server.url}/inbox/login")
    press_tab_until(page, "username")
    page.keyboard.type(official["username"])
    page.keyboard.press("Tab")
    page.keyboard.type(official["password"])
    page.keyboard.press("Tab")
    page.keyboard.type(otp_codes.next(official["totp_secret"], valid_for=10))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{server.url}/inbox/", page.locator("main").inner_text()

    press_tab_until(page, f"select-{request_id}")
    page.keyboard.press("Space")
    assert page.locator(f"#select-{request_id}").is_checked()
    press_tab_until(page, "approve-selected")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/inbox/confirm?*")

    press_tab_until(page, "otp")
    page.keyboard.type(otp_codes.next(official["totp_secret"], valid_for=10))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/inbox/approvals/*")
    assert page.locator("tr.approved-row").count() == 1, page.locator("main").inner_text()
    screenshot(page, "7-keyboard-approved")
    assert client.wait_final(request_id)["state"] == "signed"


UNLABELLED_CONTROLS = """() => Array.from(document.querySelectorAll('input, select, textarea'))
    .filter(control => control.type !== 'hidden')
    .filter(control => control.labels.length === 0 && !control.getAttribute('aria-label')
                       && !control.getAttribute('aria-labelledby'))
    .map(control => control.outerHTML)"""

HORIZONTAL_OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"

# Elements whose right edge is past the window, in document order, named when a page scrolls sideways.
ELEMENTS_PAST_RIGHT_EDGE = """() => Array.from(document.querySelectorAll('body *'))
    .filter(element => element.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
    .map(element => `${element.tagName.toLowerCase()}${element.id ? '#' + element.id : ''}`
                    + `.${element.className} right=${element.getBoundingClientRect().right}`
                    + ` text=${(element.innerText || element.value || '').slice(0, 60)}`)"""


def test_pages_accessibility_basics(browser_page: "playwright_api.Page", server: Server, client: Client,
                                    otp_codes: OtpCodes, tmp_path: Path) -> None:
    page = browser_page
    # The second official, as in the keyboard test, so that each official's TOTP codes last the whole file.
    ((request_id, _dossier_code, _digest),) = submit_requests(client, tmp_path, 1, "261207", official_index=1)
    xml_response = client.submit("<toKhai><hoTen>Lê Thị Hoa</hoTen></toKhai>".encode(), filename="to-khai.xml",
                                 format="cades", title="Tờ khai đăng ký cư trú",
                                 signer=client.official(1)["credential_id"])
    assert xml_response.status_code == 201, xml_response.text
    # Delegations years ahead, so that both tables of the delegation page are listed without changing any routing.
    for delegator, deputy, year in ((0, 1, 2032), (1, 0, 2033)):
        created = requests.post(f"{server.url}/api/v1/delegations", json={
            "deputy": client.official(deputy)["username"], "starts_at": f"{year}-03-02T08:00:00+07:00",
            "ends_at": f"{year}-03-20T17:00:00+07:00",
            "reason": "Đi công tác tại Thành phố Hồ Chí Minh theo Quyết định số 1234/QĐ-UBND"},
            headers={"Authorization": f"Bearer {client.login(delegator)}"}, timeout=30)
        assert created.status_code == 201, created.text
    pages = ["/inbox/login"]
    log_in(page, server, client.official(1), otp_codes)
    pages += ["/inbox/", "/inbox/?q=H01&sort=expiry_asc", f"/inbox/requests/{request_id}",
              f"/inbox/requests/{xml_response.json()['id']}", f"/inbox/confirm?id={request_id}",
              "/inbox/confirm", "/inbox/history", "/inbox/delegations", "/inbox/requests/req_unknown"]

    for width in (1280, ZOOMED_WIDTH):
        page.set_viewport_size({"width": width, "height": 900})
        for path in pages:
            page.goto(f"{server.url}{path}")
            assert page.evaluate("document.documentElement.lang") in ("vi", "en"), path
            assert page.evaluate(UNLABELLED_CONTROLS) == [], path
            if page.evaluate(HORIZONTAL_OVERFLOW) > 0:
                screenshot(page, f"overflow-{width}px")
                raise AssertionError(f"{path} scrolls sideways at {width} px: {page.evaluate(ELEMENTS_PAST_RIGHT_EDGE)}"
                                     f"\n{page.content()}")
            assert page.locator("a.skip-link").count() == 1, path
            assert page.locator("th:not([scope])").count() == 0, path
            if path == "/inbox/delegations":
                assert page.locator("table.requests").count() == 2
            if width == ZOOMED_WIDTH and path == f"/inbox/requests/{request_id}":
                screenshot(page, "8-request-640px")
            if width == ZOOMED_WIDTH and path == "/inbox/":
                screenshot(page, "9-pending-list-640px")


def test_later_pages_load_when_scrolled(browser_page: "playwright_api.Page", server: Server, client: Client,
                                        otp_codes: OtpCodes, tmp_path: Path) -> None:
    page = browser_page
    pdf = generate_sample_pdf(tmp_path / "long.pdf", dossier_code="000.00.01.H01-261208-0001", pages=12)
    response = client.submit(pdf, dossier_code="000.00.01.H01-261208-0001", title="Hồ sơ mười hai trang",
                             placement={"rect": list(SAMPLE_STAMP_BOX)}, signer=client.official(1)["credential_id"])
    assert response.status_code == 201, response.text
    request_id = response.json()["id"]
    page_images: list[str] = []
    page.on("request", lambda request: page_images.append(request.url) if "/pages/" in request.url else None)
    log_in(page, server, client.official(1), otp_codes)

    page.goto(f"{server.url}/inbox/requests/{request_id}")
    page.wait_for_load_state("networkidle")
    loaded_at_first = len(page_images)
    last = page.get_by_role("img", name="Trang 12 / 12")
    last.scroll_into_view_if_needed()
    page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=last.element_handle())

    assert f"{server.url}/inbox/requests/{request_id}/pages/1.png" in page_images
    assert loaded_at_first < 12, page_images
    assert f"{server.url}/inbox/requests/{request_id}/pages/12.png" in page_images
