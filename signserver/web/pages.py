"""The inbox's pages of sign requests: pending list, detail with preview, confirm and approve, reject, history.

An approval responds with a redirect to its result page, ``/inbox/approvals/{id}``, which only the approving
official can open.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from aiohttp import web

from signserver.api.problems import status_for
from signserver.core import queries
from signserver.core.context import utc_now
from signserver.core.decisions import approve_requests, reject_request
from signserver.core.states import PENDING_APPROVAL
from signserver.errors import InvalidInput, SignserverError
from signserver.store.records import Official, SignRequest

from .listing import SORTS, ListingFilter, expiring_soon, filter_and_sort, media_type_of, rows_for
from .preview import PreviewUnavailable, document_digest_matches, page_image, preview_cache_root, renders_pages
from .rendering import core_of, error_text, gettext_of, redirect, render, signed_in
from .security import check_csrf

__all__ = ["routes", "preview_cache_dir"]

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

# The maximum number of requests the pending list shows. Beyond it, the page states that the list is cut.
MAX_PENDING_LISTED = 500
PAGES_PER_VIEW = 20
MAX_REASON_LENGTH = 1000
MAX_OTP_LENGTH = 16
# Codes of errors about the OTP code itself, shown next to its field; the others concern the requests.
OTP_ERROR_CODES = {"otp_invalid", "otp_replayed", "official_locked"}


def preview_cache_dir(request: web.Request) -> Path:
    return preview_cache_root(request.config_dict["settings"])


@routes.get("/")
async def pending_list(request: web.Request) -> web.Response:
    official = await signed_in(request)
    ctx = core_of(request)
    pending = await queries.requests_for_official(ctx, official, [PENDING_APPROVAL], limit=MAX_PENDING_LISTED)
    rows = await rows_for(ctx, pending, utc_now())
    chosen = ListingFilter.from_query(request.query)
    listed_rows = filter_and_sort(rows, chosen)
    return render(request, "inbox.html", {
        "rows": listed_rows,
        "chosen": chosen,
        "sorts": list(SORTS),
        "applications": sorted({(row.request.application_id, row.application_name) for row in rows},
                               key=lambda item: item[1]),
        "signers": sorted({(row.request.credential_id, row.signer_name) for row in rows}, key=lambda item: item[1]),
        "pending_count": len(rows),
        "expiring_count": expiring_soon(rows),
        "truncated": len(pending) >= MAX_PENDING_LISTED,
        "notice": request.query.get("notice"),
    })


async def _detail_page(request: web.Request, official: Official, request_id: str, *, reason: str = "",
                       errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    ctx = core_of(request)
    found = await queries.request_for_official(ctx, official, request_id)
    (row,) = await rows_for(ctx, [found], utc_now())
    chain = await queries.approval_chain(ctx, found.id)

    preview_problem = None
    pages: list[int] = []
    first_page = 1
    if renders_pages(found):
        if found.pdf_password_wrapped is not None:
            preview_problem = "pdf_encrypted"
        elif not await document_digest_matches(found):
            preview_problem = "document_changed"
        else:
            page_count = found.page_count or 1
            first_page = min(max(_int_query(request, "from", 1), 1), page_count)
            pages = list(range(first_page, min(first_page + PAGES_PER_VIEW, page_count + 1)))

    errors = errors or {}
    return render(request, "request.html", {
        "row": row,
        "stamp_page": _stamp_page(found),
        "sign_request": found,
        "chain": chain,
        "pages": pages,
        "page_count": found.page_count or 0,
        "pages_per_view": PAGES_PER_VIEW,
        "preview_problem": preview_problem,
        "media_type": media_type_of(found),
        "decidable": found.state == PENDING_APPROVAL and found.approver_official_id == official.id,
        "reason": reason,
        "errors": errors,
        "error_summary": list(errors.items()),
        "notice": request.query.get("notice"),
    }, status=status)


def _stamp_page(found: SignRequest) -> int | None:
    """Return the page that carries the visible stamp of a PAdES request, or None for an invisible signature."""
    if found.signature_format != "pades":
        return None
    placement = json.loads(found.placement_json or "{}")
    if not placement.get("visible", True) or placement.get("page") is None:
        return None
    return int(placement["page"])


@routes.get("/requests/{request_id}")
async def request_detail(request: web.Request) -> web.Response:
    official = await signed_in(request)
    return await _detail_page(request, official, request.match_info["request_id"])


@routes.get(r"/requests/{request_id}/pages/{page:\d{1,5}}.png")
async def page_png(request: web.Request) -> web.StreamResponse:
    official = await signed_in(request)
    ctx = core_of(request)
    found = await queries.request_for_official(ctx, official, request.match_info["request_id"])
    if not renders_pages(found):
        raise web.HTTPNotFound()
    credential = await queries.signer_credential(ctx, found)
    try:
        path = await page_image(found, credential, int(request.match_info["page"]), preview_cache_dir(request))
    except PreviewUnavailable:
        raise web.HTTPNotFound() from None
    return web.FileResponse(path, headers={"Content-Type": "image/png"})


async def _confirm_page(request: web.Request, official: Official, request_ids: list[str], *,
                        errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    ctx = core_of(request)
    _ = gettext_of(request)
    errors = dict(errors or {})
    unique_ids = list(dict.fromkeys(request_ids))[:ctx.settings.max_batch_size + 1]
    found = [await queries.request_for_official(ctx, official, request_id) for request_id in unique_ids]
    rows = await rows_for(ctx, found, utc_now())
    if not rows:
        errors["batch"] = _("Select at least one sign request in the list.")
    return render(request, "confirm.html", {
        "rows": rows,
        "errors": errors,
        "error_summary": list(errors.items()),
    }, status=status if rows else 400)


@routes.get("/confirm")
async def confirm(request: web.Request) -> web.Response:
    official = await signed_in(request)
    return await _confirm_page(request, official, request.query.getall("id", []))


@routes.post("/approve")
async def approve(request: web.Request) -> web.Response:
    official = await signed_in(request)
    form = await request.post()
    check_csrf(form, request["inbox_csrf"])
    _ = gettext_of(request)
    request_ids = [str(value)[:64] for value in form.getall("id", [])]
    digests = [str(value)[:128] for value in form.getall("document_sha256", [])]
    if not request_ids or len(request_ids) != len(digests):
        return await _confirm_page(request, official, request_ids, status=400, errors={
            "batch": _("The form lost the documents' SHA-256 values. Open the requests again from the list and "
                       "confirm them from there.")})
    otp = str(form.get("otp", "")).strip()[:MAX_OTP_LENGTH]
    if not otp:
        return await _confirm_page(request, official, request_ids, status=400,
                                   errors={"otp": _("Enter the OTP code from your authenticator app.")})

    ctx = core_of(request)
    try:
        approval = await approve_requests(ctx, official, request_ids, otp,
                                          expected_digests=dict(zip(request_ids, digests)))
    except SignserverError as error:
        field = "otp" if error.code in OTP_ERROR_CODES else "batch"
        return await _confirm_page(request, official, request_ids, status=status_for(error),
                                   errors={field: error_text(request, error.code, error.params)})

    for ready in approval.ready_to_sign:
        request.config_dict["signing_queue"].submit(ready.id)
    # Redirected, so that reloading the result does not post the spent code again.
    return redirect(f"/inbox/approvals/{approval.id}")


@routes.get("/approvals/{approval_id}")
async def approval_result(request: web.Request) -> web.Response:
    official = await signed_in(request)
    ctx = core_of(request)
    approval_id = request.match_info["approval_id"]
    approved = await queries.approval_of_official(ctx, official, approval_id)
    if approved is None:
        # Another official's approval gets the same 404 as an unknown id.
        log.info("inbox.approval_not_found", approval_id=approval_id, official_id=official.id)
        raise web.HTTPNotFound()
    rows = await rows_for(ctx, approved, utc_now())
    # A request records its final approval. An approval of an earlier step passed it to the next approver.
    ready_ids = {found.id for found in approved if found.approval_id == approval_id}
    return render(request, "approved.html", {"rows": rows, "ready_ids": ready_ids, "approval_id": approval_id})


@routes.post("/requests/{request_id}/reject")
async def reject(request: web.Request) -> web.Response:
    official = await signed_in(request)
    form = await request.post()
    check_csrf(form, request["inbox_csrf"])
    _ = gettext_of(request)
    request_id = request.match_info["request_id"]
    reason = str(form.get("reason", "")).strip()
    if not reason:
        return await _detail_page(request, official, request_id, status=400,
                                  errors={"reason": _("Enter the reason for the rejection.")})
    if len(reason) > MAX_REASON_LENGTH:
        return await _detail_page(request, official, request_id, reason=reason, status=400, errors={
            "reason": _("The reason is longer than %(limit)d characters.") % {"limit": MAX_REASON_LENGTH}})
    try:
        await reject_request(core_of(request), official, request_id, reason)
    except InvalidInput as error:
        return await _detail_page(request, official, request_id, reason=reason, status=400,
                                  errors={"reason": error_text(request, error.code, error.params)})
    return redirect(f"/inbox/requests/{request_id}?notice=rejected")


@routes.get("/history")
async def history(request: web.Request) -> web.Response:
    official = await signed_in(request)
    ctx = core_of(request)
    entries = await queries.history_for_official(ctx, official, limit=200)
    rows = await rows_for(ctx, [entry.request for entry in entries], utc_now())
    return render(request, "history.html", {"entries": list(zip(entries, rows))})


def _int_query(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name, "")
    return int(value) if value.isdigit() and len(value) <= 6 else default
