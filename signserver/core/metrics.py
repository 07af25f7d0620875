"""Prometheus metrics of the signing workflow."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["SIGN_REQUEST_EVENTS", "OTP_FAILURES", "INTERRUPTED_REQUESTS"]

SIGN_REQUEST_EVENTS = Counter(
    "signserver_sign_request_events_total",
    "Sign request state changes, by the state reached.",
    ["state"],
)
OTP_FAILURES = Counter(
    "signserver_otp_failures_total",
    "Refused OTP codes, by reason (otp_invalid, otp_replayed, official_locked).",
    ["reason"],
)
INTERRUPTED_REQUESTS = Counter(
    "signserver_interrupted_requests_total",
    "Requests found in signing after their process died, and failed as signing_interrupted.",
)
