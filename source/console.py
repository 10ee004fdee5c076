"""The edge of a command's process: a reader that closes the pipe (`status | head`) ends the
output quietly, with exit 0, as Unix tools do."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from source.errors import EXIT_OK


def quiet_when_pipe_closes(call: Callable[[], int]) -> int:
    """Run `call`, flushing stdout; a closed pipe ends it with exit 0 and no message."""
    try:
        code = call()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit and would complain a second time: from here on
        # the output goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
