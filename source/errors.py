"""Exit codes (see CONTRACT) and the base of errors reported as one line on stderr."""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 0, 1, 2, 3, 75


class ReportableError(Exception):
    """An expected failure: printed as one line (no traceback), exit with `exit_code`."""

    exit_code = EXIT_FAILURE
