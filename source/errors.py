"""Exit codes (listed in the README) and the base of errors reported as one line on stderr."""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 0, 1, 2, 3, 75


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (libpq's run to several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ReportableError(Exception):
    """An expected failure: printed as one line (no traceback), exit with `exit_code`."""

    exit_code = EXIT_FAILURE
