"""Exit codes (listed in the README), the base of errors reported as one line on stderr, and
the Metals.Dev errors: raised by the client (source.metals_dev) and by the pure transforms
that read its payloads, so they live below both."""

from __future__ import annotations

from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 0, 1, 2, 3, 75


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (libpq's run to several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReportableError(Exception):
    """An expected failure: printed as one line (no traceback), exit with `exit_code`."""

    exit_code = EXIT_FAILURE


class MetalsDevError(Exception):
    """A failed request for one metal; str() is a one-line message without the URL or key."""

    def __init__(self, metal: str, endpoint: str, detail: str):
        super().__init__(f"{metal}: GET {endpoint}: {detail}")
        self.landed_path: Path | None = None  # where the offending body was landed, if it was
        self.metal = metal
        self.endpoint = endpoint
        self.detail = detail


class TransientError(MetalsDevError):
    """Network trouble, HTTP 429 or 5xx: worth retrying."""

    def __init__(self, metal: str, endpoint: str, detail: str, retry_after: float | None = None):
        super().__init__(metal, endpoint, detail)
        self.retry_after = retry_after


class MalformedResponse(MetalsDevError):
    """The body is not JSON, or lacks the fields the API documents."""


class ResponseTooLarge(MalformedResponse):
    """The body grew past the size limit while streaming in; the rest was never read."""


class WrongUnits(MetalsDevError):
    """The body is in another currency or unit than configured (e.g. copper's `mt`)."""


class ApiError(MetalsDevError):
    """The API answered `status: failure` (possibly inside HTTP 200)."""

    def __init__(self, metal: str, endpoint: str, code: int | None, message: str):
        super().__init__(metal, endpoint, f"API error {code}: {message}")
        self.code = code


class AuthError(ApiError):
    """Error 1101: the API key is invalid; retrying cannot help."""


class QuotaExceeded(ApiError):
    """Error 1203: the monthly request quota is used up; no more requests this run."""
