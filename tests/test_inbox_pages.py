"""The officials' web inbox without a browser: sessions, CSRF, OTP rules, scope and languages, over real HTTP.

Cookies are sent by hand, because the session cookie is Secure and the
requests library, unlike Chromium, does not send a Secure cookie over plain
HTTP to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import re
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, Iterator

import pyotp
import pytest
import requests

from signserver.i18n import message
from signserver.signing.sample import SAMPLE_STAMP_BOX, generate_sample_pdf
from tests.harness import Client, OtpCodes, Server, free_port, init_home
from tests.postgres import query

INBOX_IDLE_SECONDS = 2


class InboxSession:
    """One official's inbox session, driven with plain HTTP requests."""

    def __init__(self, server: Server, official: dict[str, Any], otp: OtpCodes) -> None:
        self.url = server.url
        self.official = official
        self.otp = otp
        self.cookies: dict[str, str] = {}
        self.login_response: requests.Response | None = None

    def login(self) -> "InboxSession":
        form = requests.get(f"{self.url}/inbox/login", timeout=30)
        login_token = csrf_of(form.text)
        response = requests.post(f"{self.url}/inbox/login", data={
            "csrf_token": login_token, "username": self.official["username"],
            "password": self.official["password"], "otp": self.otp.next(self.official["totp_secret"]),
            "next": "/inbox/",
        }, cookies={"inbox_login": login_token}, allow_redirects=False, timeout=60)
        assert response.status_code == 303, response.text
        self.login_response = response
        self.cookies["inbox_session"] = set_cookies(response)["inbox_session"].value
        return self

    def get(self, path: str, cookies: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        return requests.get(f"{self.url}{path}", cookies={**self.cookies, **(cookies or {})}, allow_redirects=False,
                            timeout=60, **kwargs)

    def post(self, path: str, data: Any, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}{path}", data=data, cookies=self.cookies, allow_redirects=False,
                             timeout=60, **kwargs)

    def csrf(self) -> str:
        return csrf_of(self.get("/inbox/").text)

    def approve(self, request_ids: list[str], digests: list[str], code: str) -> requests.Response:
        pairs = [pair for request_id, digest in zip(request_ids, digests)
                 for pair in (("id", request_id), ("document_sha256", digest))]
        return self.post("/inbox/approve", [("csrf_token", self.csrf()), *pairs, ("otp", code)])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def set_cookies(response: requests.Response) -> SimpleCookie:
    cookies: SimpleCookie = SimpleCookie()
    for header in response.raw.headers.getlist("Set-Cookie"):
        cookies.load(header)
    return cookies


def wrong_code(secret: str) -> str:
    """Return a 6-digit code that matches none of the steps the server accepts now."""
    totp = pyotp.TOTP(secret)
    step = int(time.time()) // 30
    accepted = {totp.generate_otp(s) for s in range(step - 2, step + 3)}
    return next(code for code in (f"{n:06d}" for n in range(1000)) if code not in accepted)


def state_of(client: Client, request_id: str) -> str:
    return client.get(request_id)["state"]


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_pdf(tmp_path_factory.mktemp("inbox-pages") / "in.pdf", pages=2)


def submit_pdf(client: Client, pdf: Path, official_index: int = 0, title: str = "Giấy xác nhận cư trú") -> str:
    response = client.submit(pdf, signer=client.official(official_index)["credential_id"], title=title,
                             dossier_code=f"000.00.01.H01-261204-{time.time_ns() % 10000:04d}",
                             placement={"rect": list(SAMPLE_STAMP_BOX)})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def inbox(server: Server, client: Client, otp_codes: OtpCodes) -> InboxSession:
    return InboxSession(server, client.official(0), otp_codes).login()


def test_session_cookie_flags(inbox: InboxSession, server: Server) -> None:
    assert inbox.login_response is not None
    cookie = set_cookies(inbox.login_response)["inbox_session"]
    assert cookie["httponly"]
    assert cookie["secure"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/inbox"
    stored = query(server.home, "SELECT kind, last_seen_at FROM official_sessions WHERE token_sha256 = ?",
                   (hashlib.sha256(cookie.value.encode()).hexdigest(),))
    assert stored[0][0] == "inbox"
    assert stored[0][1] is not None


def test_pages_send_security_headers(inbox: InboxSession) -> None:
    for path in ("/inbox/", "/inbox/login", "/inbox/history", "/inbox/static/inbox.css"):
        headers = inbox.get(path).headers
        policy = headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"


def test_post_without_csrf_token_refused(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    missing = inbox.post(f"/inbox/requests/{request_id}/reject", {"reason": "Sai thông tin"})
    wrong = inbox.post(f"/inbox/requests/{request_id}/reject", {"reason": "Sai thông tin", "csrf_token": "x" * 64})
    assert missing.status_code == 403
    assert wrong.status_code == 403
    assert message("inbox_csrf_invalid", "vi") in wrong.text
    assert state_of(client, request_id) == "pending_approval"


def test_cross_origin_post_refused(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    data = {"reason": "Sai thông tin", "csrf_token": inbox.csrf()}
    from_other_site = inbox.post(f"/inbox/requests/{request_id}/reject", data,
                                 headers={"Origin": "https://attacker.invalid"})
    cross_site = inbox.post(f"/inbox/requests/{request_id}/reject", data, headers={"Sec-Fetch-Site": "cross-site"})
    opaque_origin = inbox.post(f"/inbox/requests/{request_id}/reject", data, headers={"Origin": "null"})
    assert from_other_site.status_code == 403
    assert cross_site.status_code == 403
    assert opaque_origin.status_code == 403
    assert state_of(client, request_id) == "pending_approval"


def test_login_without_login_cookie_refused(server: Server, client: Client, otp_codes: OtpCodes) -> None:
    official = client.official(0)
    form = requests.get(f"{server.url}/inbox/login", timeout=30)
    response = requests.post(f"{server.url}/inbox/login", data={
        "csrf_token": csrf_of(form.text), "username": official["username"], "password": official["password"],
        "otp": "123456"}, allow_redirects=False, timeout=30)
    assert response.status_code == 403
    assert "inbox_session" not in set_cookies(response)


def test_empty_rejection_reason_refused(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    response = inbox.post(f"/inbox/requests/{request_id}/reject", {"reason": "  ", "csrf_token": inbox.csrf()})
    assert response.status_code == 400
    assert "Hãy nhập lý do từ chối." in response.text
    assert 'aria-describedby="reason-hint reason-error"' in response.text
    assert state_of(client, request_id) == "pending_approval"


def test_code_used_in_api_refused_in_inbox(inbox: InboxSession, client: Client, otp_codes: OtpCodes,
                                           sample_pdf: Path) -> None:
    first, second = submit_pdf(client, sample_pdf), submit_pdf(client, sample_pdf)
    digest = hashlib.sha256(sample_pdf.read_bytes()).hexdigest()
    code = otp_codes.next(client.official(0)["totp_secret"])
    assert client.approve(client.login(0), [first], code).status_code == 201

    response = inbox.approve([second], [digest], code)

    assert response.status_code == 403
    assert message("otp_replayed", "vi") in response.text
    assert state_of(client, second) == "pending_approval"


def test_form_without_digests_explained(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    response = inbox.post("/inbox/approve", [("csrf_token", inbox.csrf()), ("id", request_id), ("otp", "123456")])
    assert response.status_code == 400
    assert "không còn đủ mã SHA-256" in response.text
    assert state_of(client, request_id) == "pending_approval"


def test_other_digest_refuses_batch(inbox: InboxSession, client: Client, otp_codes: OtpCodes,
                                    sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    digest = hashlib.sha256(sample_pdf.read_bytes()).hexdigest()
    code = otp_codes.next(client.official(0)["totp_secret"])

    rejected = inbox.approve([request_id], ["0" * 64], code)
    state_after_rejection = state_of(client, request_id)
    approved = inbox.approve([request_id], [digest], code)

    assert rejected.status_code == 409
    assert "mã OTP chưa bị dùng" in rejected.text
    assert state_after_rejection == "pending_approval"
    # The rejected batch did not spend the code, so it still approves the request.
    assert approved.status_code == 303
    assert approved.headers["Location"].startswith("/inbox/approvals/")
    assert client.wait_final(request_id)["state"] == "signed"


def test_approval_result_only_for_approver(inbox: InboxSession, server: Server, client: Client,
                                           otp_codes: OtpCodes, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    digest = hashlib.sha256(sample_pdf.read_bytes()).hexdigest()
    approved = inbox.approve([request_id], [digest], otp_codes.next(client.official(0)["totp_secret"]))
    location = approved.headers["Location"]
    result = inbox.get(location)
    shown_again = inbox.get(location)
    other_official = InboxSession(server, client.official(1), otp_codes).login().get(location)
    unknown = inbox.get("/inbox/approvals/apr_unknown")

    assert approved.status_code == 303
    assert result.status_code == 200
    assert f'href="/inbox/requests/{request_id}"' in result.text
    assert "Đang ký" in result.text
    assert shown_again.text.count('class="approved-row"') == 1
    assert other_official.status_code == 404
    assert unknown.status_code == 404


def test_five_wrong_codes_lock_approvals(server: Server, client: Client, otp_codes: OtpCodes,
                                         sample_pdf: Path) -> None:
    official = client.official(1)
    request_id = submit_pdf(client, sample_pdf, official_index=1)
    digest = hashlib.sha256(sample_pdf.read_bytes()).hexdigest()
    session = InboxSession(server, official, otp_codes).login()
    # The lock also stops logins, so the API session is opened first.
    api_token = client.login(1)

    # Taken before the wrong codes, because waiting here for an unused step could outlast the 4-s lock.
    right = otp_codes.next(official["totp_secret"], valid_for=20)
    answers = [session.approve([request_id], [digest], wrong_code(official["totp_secret"])) for _ in range(5)]
    right_code = session.approve([request_id], [digest], right)
    # The lock is checked before the code, so the API refuses even before comparing this one.
    api_answer = client.approve(api_token, [request_id], wrong_code(official["totp_secret"]))

    assert [answer.status_code for answer in answers] == [403] * 5
    assert message("otp_invalid", "vi") in answers[3].text
    assert "Tài khoản bị khóa tạm thời" in answers[4].text
    assert "Tài khoản bị khóa tạm thời" in right_code.text
    assert api_answer.json()["code"] == "official_locked"
    assert state_of(client, request_id) == "pending_approval"
    # The test server's lockout lasts 4 s (SIGNSERVER_OTP_LOCKOUT_SECONDS): let it pass for the next tests.
    time.sleep(4.5)


def test_other_officials_request_not_found(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf, official_index=1)
    assert inbox.get(f"/inbox/requests/{request_id}").status_code == 404
    assert inbox.get(f"/inbox/requests/{request_id}/pages/1.png").status_code == 404
    assert inbox.get("/inbox/confirm", params={"id": request_id}).status_code == 404
    assert request_id not in inbox.get("/inbox/").text


def test_detail_shows_digest_and_page_images(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    page = inbox.get(f"/inbox/requests/{request_id}")
    image = inbox.get(f"/inbox/requests/{request_id}/pages/2.png")
    assert hashlib.sha256(sample_pdf.read_bytes()).hexdigest() in page.text
    assert 'alt="Trang 2 / 2"' in page.text
    # One decision form, outside the <title>.
    assert page.text.count('id="reason"') == 1
    assert re.search(r"<title>[^<]*</title>", page.text)
    assert "Chữ ký số sẽ được đặt ở trang" in page.text
    assert image.status_code == 200
    assert image.content.startswith(b"\x89PNG")


def test_rejected_request_page_says_not_signed(inbox: InboxSession, client: Client, sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    pending = inbox.get(f"/inbox/requests/{request_id}")
    rejected = inbox.post(f"/inbox/requests/{request_id}/reject", {"reason": "Sai họ tên", "csrf_token": inbox.csrf()})
    page = inbox.get(f"/inbox/requests/{request_id}")

    assert rejected.status_code in (200, 303)
    assert "Yêu cầu này sẽ không được ký" not in pending.text
    assert "Yêu cầu này sẽ không được ký" in page.text
    assert "Các trang như sẽ hiển thị sau khi ký" not in page.text
    # The deadline stays on the page after the decision, without the time left.
    assert "Hạn phê duyệt" in page.text
    assert "còn lại:" not in page.text


def test_long_document_pager_above_and_below(inbox: InboxSession, client: Client, tmp_path: Path) -> None:
    request_id = submit_pdf(client, generate_sample_pdf(tmp_path / "long.pdf", pages=25))
    first_view = inbox.get(f"/inbox/requests/{request_id}")
    second_view = inbox.get(f"/inbox/requests/{request_id}", params={"from": "21"})

    assert first_view.text.count('href="?from=21"') == 2
    assert 'alt="Trang 20 / 25"' in first_view.text
    assert 'alt="Trang 21 / 25"' not in first_view.text
    assert second_view.text.count('href="?from=1"') == 2
    assert 'alt="Trang 25 / 25"' in second_view.text


def test_changed_document_not_rendered(inbox: InboxSession, client: Client, server: Server,
                                       sample_pdf: Path) -> None:
    request_id = submit_pdf(client, sample_pdf)
    (document_path,) = query(server.home, "SELECT document_path FROM sign_requests WHERE id = ?", (request_id,))[0]
    with Path(document_path).open("ab") as document:
        document.write(b"\n%changed\n")
    page = inbox.get(f"/inbox/requests/{request_id}")
    assert "không còn khớp với mã SHA-256" in page.text
    assert "/pages/1.png" not in page.text
    assert inbox.get(f"/inbox/requests/{request_id}/pages/1.png").status_code == 404


def test_non_pdf_request_shows_file_facts(inbox: InboxSession, client: Client) -> None:
    content = '<?xml version="1.0" encoding="UTF-8"?><toKhai><hoTen>Nguyễn Văn Bình</hoTen></toKhai>'.encode()
    response = client.submit(content, filename="to-khai.xml", format="cades", title="Tờ khai đăng ký cư trú")
    assert response.status_code == 201, response.text
    page = inbox.get(f"/inbox/requests/{response.json()['id']}")
    assert "to-khai.xml" in page.text
    assert f"{len(content)} byte" in page.text
    assert "application/xml" in page.text
    assert hashlib.sha256(content).hexdigest() in page.text
    assert "<img" not in page.text


def test_english_pages_when_chosen(inbox: InboxSession, server: Server, client: Client, sample_pdf: Path) -> None:
    chosen = requests.get(f"{server.url}/inbox/language", params={"lang": "en", "next": "/inbox/"},
                          allow_redirects=False, timeout=30)
    language_cookie = set_cookies(chosen)["lang"].value
    english = inbox.get("/inbox/", cookies={"lang": language_cookie})
    request_id = submit_pdf(client, sample_pdf)
    english_request = inbox.get(f"/inbox/requests/{request_id}", cookies={"lang": language_cookie})
    vietnamese_request = inbox.get(f"/inbox/requests/{request_id}")
    size = sample_pdf.stat().st_size
    preferred = requests.get(f"{server.url}/inbox/login", headers={"Accept-Language": "en-GB,en;q=0.9"}, timeout=30)
    default = requests.get(f"{server.url}/inbox/login", timeout=30)
    assert chosen.status_code == 303
    assert chosen.headers["Location"] == "/inbox/"
    assert '<html lang="en">' in english.text
    assert "Sign requests pending approval" in english.text
    assert "Log in to the officials' inbox" in preferred.text
    assert '<html lang="vi">' in default.text
    assert "Đăng nhập hộp thư của cán bộ" in default.text
    # Thousands separated by a comma in English and by a dot in Vietnamese.
    assert size >= 1000
    assert f"{size:,} bytes" in english_request.text
    assert f"{size:,}".replace(",", ".") + " byte" in vietnamese_request.text


def test_auditor_cannot_use_inbox(server: Server, credentials: dict[str, Any], otp_codes: OtpCodes) -> None:
    auditor = credentials["auditors"][0]
    form = requests.get(f"{server.url}/inbox/login", timeout=30)
    login_token = csrf_of(form.text)
    response = requests.post(f"{server.url}/inbox/login", data={
        "csrf_token": login_token, "username": auditor["username"], "password": auditor["password"],
        "otp": otp_codes.next(auditor["totp_secret"])}, cookies={"inbox_login": login_token},
        allow_redirects=False, timeout=60)
    assert response.status_code == 403
    assert "inbox_session" not in set_cookies(response)


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A server of its own whose inbox sessions end after INBOX_IDLE_SECONDS without a request."""
    home = tmp_path_factory.mktemp("inbox-idle")
    port = free_port()
    credentials = init_home(home, port)
    running = Server(home, port, {"SIGNSERVER_INBOX_IDLE_SECONDS": str(INBOX_IDLE_SECONDS)}).start()
    yield running, credentials
    running.stop()


def test_idle_session_ends(idle_server: tuple[Server, dict[str, Any]]) -> None:
    server, credentials = idle_server
    session = InboxSession(server, credentials["officials"][0], OtpCodes()).login()
    active = session.get("/inbox/")
    time.sleep(INBOX_IDLE_SECONDS + 1)
    idle = session.get("/inbox/history")
    assert active.status_code == 200
    assert idle.status_code == 303
    assert idle.headers["Location"] == "/inbox/login?next=/inbox/history"
    assert session.get("/inbox/").status_code == 303


def test_delegation_created_and_revoked(inbox: InboxSession, client: Client) -> None:
    deputy = client.official(1)
    created = inbox.post("/inbox/delegations", {
        "csrf_token": inbox.csrf(), "deputy": deputy["username"], "starts_at": "2030-01-02T08:00",
        "ends_at": "2030-01-09T17:00", "reason": "Đi công tác tại Hà Nội"})
    listed = inbox.get("/inbox/delegations")
    revoke_path = re.search(r'action="(/inbox/delegations/[^"]+/revoke)"', listed.text)
    assert created.status_code == 303
    assert deputy["full_name"] in listed.text
    assert "02/01/2030 08:00" in listed.text
    assert "Chưa có hiệu lực" in listed.text
    assert revoke_path is not None
    revoked = inbox.post(revoke_path.group(1), {"csrf_token": inbox.csrf()})
    assert revoked.status_code == 303
    assert "Đã thu hồi" in inbox.get("/inbox/delegations").text


def test_delegation_to_self_refused(inbox: InboxSession, client: Client) -> None:
    response = inbox.post("/inbox/delegations", {
        "csrf_token": inbox.csrf(), "deputy": client.official(0)["username"], "starts_at": "2031-01-02T08:00",
        "ends_at": "2031-01-03T08:00", "reason": ""})
    assert response.status_code == 400
    assert 'aria-describedby="deputy-error"' in response.text


def test_catalogs_translate_every_message() -> None:
    from babel.messages.extract import extract_from_dir

    from signserver.web.translations import load_translations

    web_dir = Path(__file__).resolve().parent.parent / "signserver" / "web"
    extracted = extract_from_dir(str(web_dir), [("templates/**.html", "jinja2"), ("**.py", "python")],
                                 options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}})
    vietnamese = load_translations("vi")
    untranslated = []
    for _filename, _line, msgid, _comments, _context in extracted:
        singular = msgid if isinstance(msgid, str) else msgid[0]
        if vietnamese.gettext(singular) == singular:
            untranslated.append(singular)
    assert untranslated == []


def test_oversized_form_refused(inbox: InboxSession) -> None:
    response = inbox.post("/inbox/approve", {"csrf_token": inbox.csrf(), "otp": "1" * (300 * 1024)})
    assert response.status_code == 413
    assert "<html" in response.text


def test_inbox_without_slash_redirects(server: Server) -> None:
    response = requests.get(f"{server.url}/inbox", allow_redirects=False, timeout=30)
    assert response.status_code == 303
    assert response.headers["Location"] == "/inbox/"


def test_logout_ends_session(inbox: InboxSession) -> None:
    # Last in the file, because it ends the module's session.
    response = inbox.post("/inbox/logout", {"csrf_token": inbox.csrf()})
    assert response.status_code == 303
    assert inbox.get("/inbox/").status_code == 303
