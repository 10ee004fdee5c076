"""A progress bar on a terminal only; under cron (no TTY) nothing, so mail stays clean."""

from __future__ import annotations

from contextlib import contextmanager

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


@contextmanager
def progress_bar(**options):
    """tqdm on stderr when it is a terminal; log lines then print above the bar."""
    with tqdm(disable=None, leave=False, **options) as bar:
        if bar.disable:  # keep the console handler (and its level) as it is
            yield bar
            return
        with logging_redirect_tqdm():
            yield bar
