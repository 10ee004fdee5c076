"""A progress bar on a terminal only; under cron (no TTY) nothing, so mail stays clean."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class _Silent:
    """What a bar does without a terminal: counts, shows nothing (and does not import tqdm,
    which took 65 ms of every import-csv and backfill under cron)."""

    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


@contextmanager
def progress_bar(**options):
    """tqdm on stderr when it is a terminal; log lines then print above the bar."""
    if not sys.stderr.isatty():
        yield _Silent()
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(leave=False, **options) as bar, logging_redirect_tqdm():
        yield bar
