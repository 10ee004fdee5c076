"""What a hostile or broken world hands the unattended job: bodies nested, huge, non-finite or
echoing the key in disguise; links, folders and strangers in incoming/; a full disk. Each is
provoked for real and the run must go on, lose nothing and say so in one line."""

import contextlib
import errno
import http.server
import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote_plus

import pytest

from source.log_setup import RedactingFilter, mask_secrets, redact
from source.metals_dev import (
    ApiError,
    MalformedResponse,
    MetalsDevClient,
    ResponseTooLarge,
    parse_payload,
)
from tests.conftest import TEST_API_KEY
from tests.test_pipeline import ALL_BUT_SILVER, METALS, ONE_ROW_EACH, counts, files

LANDED_NAME = "20260304T100000000000Z_spot_gold.json"  # as an earlier run names its files
MIB = 1 << 20


def data_dir(run_main) -> Path:
    return run_main.cwd / "source" / "data"


def incoming(run_main) -> Path:
    path = data_dir(run_main) / "incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def rejected_entries(run_main) -> list[Path]:
    """Everything in rejected/<day>/, links and folders included (files() sees only *.json)."""
    root = data_dir(run_main) / "rejected"
    return sorted(p for day in root.glob("*") for p in day.iterdir()) if root.exists() else []


def spot_requests(sandbox) -> list[str]:
    return [r["params"]["metal"] for r in sandbox.requests if r["path"] == "/v1/metal/spot"]


def spot_body(metal: str = "gold", price="2000.5") -> bytes:
    return (
        '{"status": "success", "timestamp": "2026-03-04T10:00:00.000Z", "currency": "USD", '
        f'"unit": "toz", "metal": "{metal}", "rate": {{"price": {price}}}}}'
    ).encode()


def deep_body(levels: int) -> bytes:
    return b'{"status": "success", "x": ' + b"[" * levels + b"]" * levels + b"}"


def assert_clean_next_run(run_main, database, expected=ONE_ROW_EACH):
    again = run_main("--no-train", timeout=60)
    assert (again.returncode, again.stderr) == (0, "")
    assert counts(database) == expected
    assert not list(incoming(run_main).iterdir())


# -- bodies that must be malformed, never a crash -------------------------------------------------


def test_a_body_nested_100000_deep_fails_that_metal_only_and_is_never_retried(
    run_main, database, sandbox
):
    sandbox.add_fault("silver", 200, deep_body(100_000), times=1)
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 3, result.stderr
    assert counts(database) == ALL_BUT_SILVER
    assert spot_requests(sandbox).count("silver") == 1
    assert "silver: GET /metal/spot: HTTP 200, JSON nested deeper than 64 levels" in (result.stderr)
    assert "RecursionError" not in run_main.log_text()
    (kept,) = files(run_main.cwd, "rejected")
    assert kept.name.endswith("_spot_silver.json") and kept.read_bytes() == deep_body(100_000)
    assert not files(run_main.cwd, "incoming")
    sandbox.requests.clear()
    assert_clean_next_run(run_main, database, {**ONE_ROW_EACH, "silver": 1})
    assert len(spot_requests(sandbox)) == 4  # the next run fetched normally


def test_a_landed_body_nested_100000_deep_is_rejected_and_the_run_fetches_normally(
    run_main, database, sandbox
):
    (incoming(run_main) / LANDED_NAME).write_bytes(deep_body(100_000))
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(spot_requests(sandbox)) == 4 and counts(database) == ONE_ROW_EACH
    assert f"replay of {LANDED_NAME} failed: gold: GET /metal/spot: HTTP 200, JSON nested" in (
        result.stderr
    )
    assert [p.name for p in files(run_main.cwd, "rejected")] == [LANDED_NAME]
    assert_clean_next_run(run_main, database)


def test_depth_is_checked_without_recursion_and_strings_do_not_count():
    assert parse_payload(deep_body(63), metal="gold", endpoint="/x")["status"] == "success"
    for body in (deep_body(64), b"[" * 1_000_000, b'{"a": ' * 200_000):
        with pytest.raises(MalformedResponse, match="nested deeper than 64 levels"):
            parse_payload(body, metal="gold", endpoint="/x")
    brackets_in_a_string = b'{"status": "success", "x": "' + b'[{\\"' * 10_000 + b'"}'
    assert parse_payload(brackets_in_a_string, metal="gold", endpoint="/x")["x"].startswith('[{"')


def test_a_landed_body_of_an_odd_shape_is_rejected_with_a_reason(run_main, database, sandbox):
    odd = json.loads(spot_body())
    odd["rate"] = [1, [2], "3"]  # a list where the API sends an object
    (incoming(run_main) / LANDED_NAME).write_bytes(json.dumps(odd).encode())
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert f"replay of {LANDED_NAME} failed: gold: GET /metal/spot: missing field" in line
    assert [p.name for p in files(run_main.cwd, "rejected")] == [LANDED_NAME]
    assert_clean_next_run(run_main, database)


def test_any_error_a_payload_provokes_is_a_malformed_response():
    from source.extract import _readable
    from source.transform import history_to_frame

    with pytest.raises(MalformedResponse, match="quote is not an object"):
        history_to_frame({"quotes": [1]}, metal="gold", endpoint="/sandbox/history")
    with pytest.raises(MalformedResponse, match=r"not readable \(TypeError: "):
        _readable("gold", "/x", lambda: int([]))


@pytest.mark.parametrize("price", ["Infinity", "-Infinity", "NaN", "1e999", "1" + "0" * 400])
def test_a_price_that_is_not_finite_makes_the_body_malformed(run_main, database, sandbox, price):
    sandbox.add_fault("silver", 200, spot_body("silver", price))
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 3, result.stderr
    assert counts(database) == ALL_BUT_SILVER
    assert database.scalar("SELECT count(*) FROM silver_historic") == 0
    (line, summary) = result.stderr.splitlines()
    assert "silver: GET /metal/spot: HTTP 200, body holds a number that is not finite" in line
    assert summary.startswith("main.py: 3/4 metals loaded")
    assert [p.read_bytes() for p in files(run_main.cwd, "rejected")] == [spot_body("silver", price)]


# -- size: bounded while streaming, and on replay -----------------------------------------------


def test_a_50_mb_body_is_refused_unread_past_the_limit_and_not_retried(run_main, database, sandbox):
    padding = b"x" * (50 * MIB)
    sandbox.add_fault("gold", 200, b'{"status": "success", "pad": "' + padding + b'"}')
    result = run_main("--no-train", timeout=120)
    assert result.returncode == 3, result.stderr
    assert counts(database) == {**ONE_ROW_EACH, "gold": 0, "analytics": 3}
    assert spot_requests(sandbox).count("gold") == 1
    (line, _summary) = result.stderr.splitlines()
    assert "gold: GET /metal/spot: HTTP 200, body larger than MAX_RESPONSE_BYTES (4194304" in line
    assert "truncated" in line
    (kept,) = files(run_main.cwd, "rejected")
    assert kept.stat().st_size == 4 * MIB  # at most the limit is kept
    assert line.endswith(f"truncated, as {kept.relative_to(run_main.cwd)}")  # where it is
    assert not files(run_main.cwd, "incoming") and len(files(run_main.cwd, "loaded")) == 3


class EndlessBody(http.server.BaseHTTPRequestHandler):
    """Answers 200, then streams 256 MiB without saying how long the body is (a client that
    reads it all fails the test instead of hanging it)."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b" " * 65536
        with contextlib.suppress(OSError):
            for _ in range(4096):
                self.wfile.write(chunk)

    def log_message(self, *args):
        pass


def test_the_limit_is_enforced_while_streaming_a_body_of_unknown_length():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EndlessBody)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kept = []
    client = MetalsDevClient(
        f"http://127.0.0.1:{server.server_address[1]}/v1",
        TEST_API_KEY,
        timeout=5,
        max_attempts=3,
        max_body_bytes=MIB,
        reject=lambda raw: kept.append(raw) or Path("kept.json"),
    )
    started = time.monotonic()
    try:
        with pytest.raises(ResponseTooLarge, match="larger than MAX_RESPONSE_BYTES"):
            client.spot("gold")
    finally:
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 10
    assert client.request_count == 1  # not retried
    assert [len(raw.body) for raw in kept] == [MIB]


def test_a_landed_file_over_the_limit_is_set_aside_without_being_read(run_main, database, sandbox):
    (incoming(run_main) / LANDED_NAME).write_bytes(spot_body() + b" " * 4096)
    result = run_main("--no-train", MAX_RESPONSE_BYTES="2048", timeout=60)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert LANDED_NAME in line and "more than the 2048 allowed (MAX_RESPONSE_BYTES)" in line
    assert [p.name for p in rejected_entries(run_main)] == [LANDED_NAME]
    assert database.scalar("SELECT count(*) FROM gold_historic WHERE rate_price = 2000.5") == 0
    assert_clean_next_run(run_main, database)


# -- strangers in incoming/ -------------------------------------------------------------------


def _dangling_link(folder: Path, tmp_path: Path) -> Path:
    (folder / LANDED_NAME).symlink_to(tmp_path / "gone.json")
    return folder / LANDED_NAME


def _directory(folder: Path, tmp_path: Path) -> Path:
    (folder / LANDED_NAME).mkdir()
    (folder / LANDED_NAME / "inside.json").write_bytes(spot_body())
    return folder / LANDED_NAME


def _unknown_kind(folder: Path, tmp_path: Path) -> Path:
    path = folder / "20260304T100000000000Z_foo_gold.json"
    path.write_bytes(spot_body())
    return path


def _link_to_dev_zero(folder: Path, tmp_path: Path) -> Path:
    (folder / LANDED_NAME).symlink_to("/dev/zero")
    return folder / LANDED_NAME


def _link_to_a_file_elsewhere(folder: Path, tmp_path: Path) -> Path:
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.json"  # outside DATA_DIR
    elsewhere.write_bytes(spot_body(price="12345.0"))
    (folder / LANDED_NAME).symlink_to(elsewhere)
    return folder / LANDED_NAME


def _named_pipe(folder: Path, tmp_path: Path) -> Path:
    os.mkfifo(folder / LANDED_NAME)  # opening it to read would wait for a writer
    return folder / LANDED_NAME


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_dangling_link, "a symbolic link (not followed)"),
        (_directory, "a directory"),
        (_unknown_kind, "not named like a landed response"),
        (_link_to_dev_zero, "a symbolic link (not followed)"),
        (_link_to_a_file_elsewhere, "a symbolic link (not followed)"),
        (_named_pipe, "a named pipe"),
    ],
    ids=[
        "dangling-link",
        "directory",
        "unknown-kind",
        "link-to-dev-zero",
        "link-elsewhere",
        "fifo",
    ],
)
def test_only_regular_files_with_our_names_are_read_from_incoming(
    run_main, database, sandbox, tmp_path, make, reason
):
    entry = make(incoming(run_main), tmp_path)
    was_link = entry.is_symlink()
    started = time.monotonic()
    result = run_main("--no-train", timeout=60)
    assert time.monotonic() - started < 45  # nothing was read through the link or the pipe
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()  # one warning line naming it
    assert f"{entry.name} in incoming/ is {reason}: set aside as " in line
    assert sorted(spot_requests(sandbox)) == sorted(METALS)
    assert counts(database) == ONE_ROW_EACH
    assert database.scalar("SELECT count(*) FROM gold_historic WHERE rate_price = 12345") == 0
    (moved,) = rejected_entries(run_main)
    assert moved.name == entry.name and moved.is_symlink() == was_link  # the link itself moved
    assert not os.path.lexists(entry)
    assert_clean_next_run(run_main, database)


def test_a_set_aside_entry_never_replaces_one_kept_before(run_main, database, tmp_path):
    folder = incoming(run_main)
    _dangling_link(folder, tmp_path)
    assert run_main("--no-train", timeout=60).returncode == 0
    _directory(folder, tmp_path)
    assert run_main("--no-train", timeout=60).returncode == 0
    kinds = sorted((p.name, p.is_symlink(), p.is_dir()) for p in rejected_entries(run_main))
    assert kinds == [
        (LANDED_NAME.removesuffix(".json") + ".1.json", False, True),
        (LANDED_NAME, True, False),
    ]


# -- secrets in disguise ----------------------------------------------------------------------

DISGUISES = {
    "quote": quote(TEST_API_KEY, safe=""),
    "quote-all-upper": "".join(f"%{b:02X}" for b in TEST_API_KEY.encode()),
    "quote-all-lower": "".join(f"%{b:02x}" for b in TEST_API_KEY.encode()),
    "quote_plus": quote_plus(TEST_API_KEY),
    "dash-encoded": TEST_API_KEY.replace("-", "%2D"),
    "json-every-char": "".join(f"\\u{ord(c):04x}" for c in TEST_API_KEY),
    "json-some-chars": "".join(
        f"\\u{ord(c):04X}" if i % 3 == 0 else c for i, c in enumerate(TEST_API_KEY)
    ),
}


def revealed(text: str) -> bool:
    """Whether the key is in `text` in any of its disguises, or once they are undone."""
    undone = [text, unquote_plus(text)]
    with contextlib.suppress(ValueError):
        undone.append(json.loads(f'"{text}"'.replace("\n", "")))
    return any(TEST_API_KEY in t for t in undone) or any(d in text for d in DISGUISES.values())


@pytest.mark.parametrize("form", sorted(DISGUISES))
def test_mask_secrets_masks_every_form_in_text_and_bytes(form):
    line = f"key {DISGUISES[form]} echoed"
    assert mask_secrets(line, (TEST_API_KEY,)) == "key *** echoed"
    assert mask_secrets(line.encode(), (TEST_API_KEY,)) == b"key *** echoed"
    assert redact(line, (TEST_API_KEY,)) == "key *** echoed"


def test_masking_a_large_body_is_linear():
    body = b'{"pad": "' + b"test-secret-key-5f3a9" * 200_000 + b'"}'
    started = time.monotonic()
    assert mask_secrets(body, (TEST_API_KEY, "pg-secret-password-77")) == body
    assert time.monotonic() - started < 5


def test_a_key_echoed_escaped_or_url_encoded_is_masked_in_landed_files_and_logs(
    run_main, database, sandbox
):
    echo = " / ".join(DISGUISES.values())
    body = (
        '{"status": "failure", "error_code": 1001, '
        f'"error_message": "The API Key {echo} is not allowed here."}}'
    ).encode()
    sandbox.add_fault("gold", 200, body)
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 3, result.stderr
    kept = files(run_main.cwd, "rejected")
    assert len(kept) == 1
    message = json.loads(kept[0].read_bytes())["error_message"]  # still valid JSON
    assert (
        message == "The API Key " + " / ".join(["***"] * len(DISGUISES)) + " is not allowed here."
    )
    line = result.stderr.splitlines()[0]
    assert "gold: GET /metal/spot: API error 1001: The API Key *** / ***" in line
    for text in (result.stderr, run_main.log_text(), kept[0].read_text()):
        assert not revealed(text)


def test_a_url_encoded_key_in_a_backfill_error_is_masked_in_its_log_and_output(
    run_main, database, sandbox
):
    echo = quote_plus(f"key={TEST_API_KEY}").lower()  # lower-case hex, as some servers write
    sandbox.add_fault(
        "all", 200, {"status": "failure", "error_code": 1001, "error_message": f"bad {echo}"}
    )
    result = run_main("backfill", "--start", "2024-01-01", "--end", "2024-01-02", timeout=60)
    assert result.returncode == 1
    log = run_main.log_text()
    assert (
        "backfill 2024-01-01..2024-01-02 failed: all: GET /timeseries: API error 1001: bad" in log
    )
    assert "key%3d***" in log  # the line is there, the key masked
    for text in (log, result.stdout, result.stderr):
        assert not revealed(text)
    for path in run_main.cwd.rglob("*.json"):
        assert not revealed(path.read_text())


# -- a full disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def full_tmpfs(path: Path):
    """A 2 MiB tmpfs mounted at `path`, filled to the last byte."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
    try:
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (65536, 4096, 1):
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size):
                        pass
        finally:
            os.close(fd)
        with pytest.raises(OSError) as full:
            (path / "probe").write_bytes(b"x" * 8192)
        assert full.value.errno == errno.ENOSPC
        (path / "probe").unlink()
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_data_dir_spends_no_request_and_says_so_in_one_line(run_main, database, sandbox):
    with full_tmpfs(run_main.cwd / "full") as full:
        result = run_main("--no-train", DATA_DIR=str(full), timeout=60)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"main.py: DATA_DIR {full} has 0.0 MiB free, less than the 16.0 MiB")
    assert "no request sent" in line
    assert sandbox.requests == []
    assert database.query("SELECT status, exit_code FROM pipeline_runs") == [("failed", 1)]


def test_a_landing_that_fails_mid_run_loads_the_response_from_memory(run_main, database, sandbox):
    with full_tmpfs(run_main.cwd / "full") as full:
        result = run_main("--no-train", DATA_DIR=str(full), DATA_DIR_MIN_FREE_BYTES="0", timeout=60)
        left = sorted(p.name for p in full.rglob("*") if p.is_file() and p.name != ".pipeline.lock")
    assert result.returncode == 0, result.stderr
    assert counts(database) == ONE_ROW_EACH  # nothing fetched was lost
    assert database.scalar("SELECT count(*) FROM gold_historic WHERE raw_file IS NULL") == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 4
    for metal in METALS:
        (line,) = [x for x in lines if x.split(": ", 1)[1].startswith(f"{metal}: ")]
        assert f"{metal}: could not land the response from /metal/spot under {full}: " in line
        assert f"No space left on device: '{full}/incoming" in line  # the path that failed
        assert line.endswith("loading it from memory, no raw file kept")
    assert left == ["filler"]  # no temp file left behind
    assert "OSError(28" not in run_main.log_text()


def test_a_failure_to_move_loaded_files_loses_nothing_and_the_next_run_is_clean(
    run_main, database, sandbox
):
    blocker = data_dir(run_main) / "loaded"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")  # loaded/<day>/ cannot be made
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 0, result.stderr
    assert counts(database) == ONE_ROW_EACH
    lines = result.stderr.splitlines()
    assert len(lines) == 4 and all(
        "to loaded/: [Errno 20] Not a directory: 'source/data/loaded/" in x for x in lines
    )
    assert len(files(run_main.cwd, "incoming")) == 4  # kept where the next run finds them
    blocker.unlink()
    again = run_main("--no-train", timeout=60)
    assert (again.returncode, again.stderr) == (0, "")
    assert counts(database) == ONE_ROW_EACH  # replayed: the upsert changed nothing
    assert not files(run_main.cwd, "incoming") and len(files(run_main.cwd, "loaded")) == 8


def test_rejected_that_cannot_be_written_keeps_the_body_for_the_next_run(
    run_main, database, sandbox
):
    blocker = data_dir(run_main) / "rejected"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    sandbox.add_fault("silver", 200, deep_body(1000), times=1)
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert any("could not move source/data/incoming/" in x and "to rejected/" in x for x in lines)
    assert any(
        "silver: fetch failed: silver: GET /metal/spot: HTTP 200, JSON nested" in x for x in lines
    )
    assert len(files(run_main.cwd, "incoming")) == 1  # kept, not lost
    blocker.unlink()
    again = run_main("--no-train", timeout=60)
    assert again.returncode == 0
    assert "_spot_silver.json failed: silver: GET /metal/spot: HTTP 200, JSON nested" in (
        again.stderr
    )
    assert not files(run_main.cwd, "incoming") and len(files(run_main.cwd, "rejected")) == 1


def test_an_incoming_that_is_not_a_folder_still_loads_what_is_fetched(run_main, database):
    blocker = data_dir(run_main) / "incoming"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    result = run_main("--no-train", timeout=60)
    assert result.returncode == 0, result.stderr
    assert counts(database) == ONE_ROW_EACH
    lines = result.stderr.splitlines()
    assert lines[0].endswith(
        "cannot list source/data/incoming: [Errno 20] Not a directory: "
        "'source/data/incoming'; nothing replayed"
    )
    assert len(lines) == 5 and all("loading it from memory" in x for x in lines[1:])


def test_an_error_code_of_any_type_is_an_api_error():
    for code in ([1101], {"a": 1}, "1101", True, None):
        body = json.dumps({"status": "failure", "error_code": code, "error_message": "no"})
        with pytest.raises(ApiError, match="API error None: no") as caught:
            parse_payload(body.encode(), metal="gold", endpoint="/x")
        assert type(caught.value) is ApiError


# -- the backfill lands and replays through the same code ------------------------------------------


def test_the_backfill_follows_the_same_rules_for_its_files(run_main, database, sandbox):
    folder = incoming(run_main)
    link = folder / "20260304T100000000000Z_timeseries_all.json"
    link.symlink_to("/dev/zero")
    deep = folder / "20260304T100001000000Z_timeseries_all.json"
    deep.write_bytes(deep_body(100_000))
    too_deep = b"[" * 99 + b"]" * 99
    sandbox.add_fault("all", 200, b'{"status": "success", "rates": ' + too_deep + b"}", times=1)
    sandbox.add_fault("all", 200, {"status": "success"}, times=1)  # parses, cannot load
    result = run_main("backfill", "--start", "2024-01-01", "--end", "2024-03-31", timeout=60)
    assert result.returncode == 3, result.stderr
    log = run_main.log_text()
    assert f"{link.name} in incoming/ is a symbolic link (not followed): set aside" in log
    assert f"replay of {deep.name} failed: all: GET /timeseries: HTTP 200, JSON nested" in log
    assert "GET /timeseries: missing field 'rates'" in log
    assert "2/4 window(s) loaded" in result.stdout
    assert not list(folder.iterdir())  # nothing left to trip the next run
    names = sorted(p.name for p in rejected_entries(run_main))
    assert len(names) == 4 and names[:2] == [link.name, deep.name]  # and the two windows' bodies


def test_a_backfill_on_a_full_disk_sends_nothing_or_loads_from_memory(run_main, database, sandbox):
    assert run_main("--no-train", "--metals", "gold").returncode == 0  # the schema exists
    sandbox.requests.clear()
    database.query(
        """CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'refused'; END $$;
           CREATE TRIGGER refuse BEFORE INSERT ON silver_historic
           FOR EACH ROW EXECUTE FUNCTION refuse();"""
    )
    days = ("backfill", "--start", "2024-01-01", "--end", "2024-01-02")
    with full_tmpfs(run_main.cwd / "full") as full:
        refused = run_main(*days, DATA_DIR=str(full), timeout=60)
        assert refused.returncode == 1
        assert "DATA_DIR" in refused.stderr and "no request sent" in refused.stderr
        assert sandbox.requests == []

        failed = run_main(*days, DATA_DIR=str(full), DATA_DIR_MIN_FREE_BYTES="0", timeout=60)
        assert failed.returncode == 1
        assert failed.stderr.splitlines()[-1] == "main.py backfill: 1 window(s) failed; see the log"
        assert "unexpected error" not in failed.stderr

        database.query("DROP TRIGGER refuse ON silver_historic")
        loaded = run_main(*days, DATA_DIR=str(full), DATA_DIR_MIN_FREE_BYTES="0", timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert "all: could not land the response from /timeseries" in loaded.stderr
    assert database.scalar("SELECT count(*) FROM silver_historic") == 2
    assert database.query("SELECT DISTINCT raw_file FROM backfill_coverage") == [(None,)]


def test_log_lines_are_capped_after_masking():
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "%s", ("a" * 1990 + TEST_API_KEY + "b" * 5000,), None
    )
    RedactingFilter((TEST_API_KEY,)).filter(record)
    assert record.getMessage() == "a" * 1990 + "***" + "b" * 7 + "... (4993 more characters)"
