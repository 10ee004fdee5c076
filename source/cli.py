"""Command line of main.py: parse arguments, build settings, take the lock, call a stage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from source import monitoring
from source.config import KNOWN_METALS, ConfigError, Settings, check_folder, load_settings
from source.console import quiet_when_pipe_closes
from source.entrypoint import run_locked
from source.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, ReportableError

log = logging.getLogger("main")

EPILOG = """examples:
  python main.py                      one hourly run (fetch, land, load, train)
  python main.py --demo               the same against a local sandbox and an embedded database
  python main.py --no-train --metals gold,silver
  python main.py backfill --start 2024-01-01
  python main.py import-csv gold_hourly.csv --metal gold --price-column close
  python main.py train                retrain every model from the database
  python main.py backtest --csv prices.csv --column price
  python main.py status               what the person on call needs (exit 1 on warnings)
  python main.py report               reports/<UTC date>/index.html with one chart per metal
  python main.py quality              quotes marked suspect (bad ticks), to accept or reject

exit codes: 0 ok, 1 failure, 2 usage/configuration error, 3 partly done (some metals,
windows or lines failed), 75 another run holds the lock, 143 stopped by SIGTERM"""

IMPORT_EPILOG = """examples:
  python main.py import-csv gold.csv --metal gold            columns time/timestamp/date and
                                                             price/close found by name
  python main.py import-csv XAUUSD_H1.csv --metal gold --price-column close --tz Etc/GMT-2
  python main.py import-csv export.txt --metal silver --date-column Date --time-column Time \\
      --price-column Last --time-format '%d.%m.%Y %H:%M' --tz Europe/Zurich
  python main.py import-csv raw.csv --metal platinum --no-header --time-column 1 \\
      --price-column 5

Bad lines (unparseable time, price not a positive finite number) are skipped, counted and
listed with their line numbers (exit 3); with --strict the whole file is refused (exit 1).
A file loads in one transaction: all of it or nothing."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo",
        action="store_true",
        help="use the built-in sandbox feed and the embedded demo database (no API key needed)",
    )
    parser.add_argument("--metals", help="comma-separated subset, e.g. gold,silver")


def _parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _metal_name(text: str) -> str:
    """Metal names are lower case in the tables; `GOLD` means gold, as in METALS."""
    return text.strip().lower()


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    run = _parser(
        "main.py",
        "Hourly Metals.Dev -> PostgreSQL run. Subcommands: backfill, import-csv, train, "
        "backtest, status, report, quality (each with --help).",
        EPILOG,
    )
    _common(run)
    run.add_argument(
        "--no-train", action="store_true", help="load prices but do not retrain models"
    )

    backfill = _parser(
        "main.py backfill",
        "Daily history from /timeseries: one request per window of at most 30 days for all "
        "metals, windows fetched concurrently, each response landed before it is loaded. "
        "Days already covered are skipped, so a rerun makes no request.",
        "examples:\n  python main.py backfill --start 2024-01-01\n"
        "  python main.py backfill --start 2023-01-01 --end 2023-12-31 --force",
    )
    _common(backfill)
    backfill.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    backfill.add_argument("--end", help="last day, YYYY-MM-DD (default: yesterday, UTC)")
    backfill.add_argument(
        "--force", action="store_true", help="fetch every window again, even if covered"
    )

    import_csv = _parser(
        "main.py import-csv",
        "Bulk-load a vendor CSV of historic prices into one metal's historic table and the "
        "analytics table (source = csv): streamed in chunks, COPY into a staging table, "
        "upsert, one transaction.",
        IMPORT_EPILOG,
    )
    _common(import_csv)
    import_csv.add_argument("path", type=Path, help="the CSV file")
    import_csv.add_argument(
        "--metal", required=True, type=_metal_name, help="gold, silver, platinum or palladium"
    )
    import_csv.add_argument("--time-column", help="time (or date and time) column")
    import_csv.add_argument("--date-column", help="date column, when the time is split in two")
    import_csv.add_argument("--price-column", help="price column (default: price or close)")
    import_csv.add_argument("--ask-column", help="ask column (optional)")
    import_csv.add_argument(
        "--time-format", help="strftime format, e.g. '%%Y.%%m.%%d %%H:%%M' (default: ISO 8601)"
    )
    import_csv.add_argument(
        "--tz", default="UTC", help="zone of times without an offset (default: UTC)"
    )
    import_csv.add_argument(
        "--delimiter", help="',', ';', 'tab' or any one character (default: detected)"
    )
    import_csv.add_argument(
        "--no-header", action="store_true", help="no header row: columns are numbers from 1"
    )
    import_csv.add_argument(
        "--strict", action="store_true", help="refuse the whole file if any line is bad"
    )
    import_csv.add_argument("--chunk-rows", type=int, default=None, help=argparse.SUPPRESS)

    train = _parser(
        "main.py train",
        "Retrain the rate_price and rate_ask models of every metal from the database "
        "(no API key needed).",
        "example:\n  python main.py train --metals gold",
    )
    _common(train)

    status = _parser(
        "main.py status",
        "What the person on call needs: latest prices, recent runs, API requests this month, "
        "model skill, the newest backup, and warnings. Exit 0 when healthy, 1 with warnings. "
        "Needs no API key and makes no API request unless --api.",
        "examples:\n  python main.py status\n  python main.py status --json | jq .warnings\n"
        "  python main.py status --api        also ask the API how much of the plan is used",
    )
    _common(status)
    status.add_argument(
        "--json", action="store_true", help="one JSON object (keys: docs/operations.md)"
    )
    status.add_argument("--api", action="store_true", help="include the API's own /usage")

    report = _parser(
        "main.py report",
        "Write a self-contained HTML report (index.html + one PNG chart per metal) with the "
        "same facts as status. No network needed to view it.",
        "example:\n  python main.py report --out /var/www/commodities",
    )
    _common(report)
    report.add_argument(
        "--out", type=Path,
        help="folder (default: reports/<UTC date>/; with --demo reports/demo/<UTC date>/)",
    )

    quality = _parser(
        "main.py quality",
        "Quotes kept out of the models, views and charts: `suspect` ones (a jump the metal's "
        "volatility does not explain, or a quote that contradicts itself) and `rejected` "
        "ones. The next quotes decide a suspect jump by themselves (the level holds: ok; the "
        "price returns: it stays suspect); a person decides the rest with accept or reject.",
        "examples:\n  python main.py quality                 list them (--json: one object)\n"
        "  python main.py quality accept --metal gold --time 2026-03-04T10:00Z\n"
        "  python main.py quality reject --metal gold --time '2026-03-04 10:00'   (UTC)",
    )
    _common(quality)
    quality.add_argument(
        "action", nargs="?", choices=["list", "accept", "reject"], default="list",
        help="list (default), accept (mark ok) or reject one quote",
    )
    quality.add_argument("--metal", dest="metal_name", type=_metal_name, help="the quote's metal")
    quality.add_argument("--time", help="the quote's time as listed (UTC unless an offset)")
    quality.add_argument("--json", action="store_true", help="one JSON object")

    backtest = _parser(
        "main.py backtest",
        "Walk-forward evaluation of the model family on a price series from a CSV, "
        "against the naive (persistence) forecast. Prints one JSON object.",
        "example:\n  python main.py backtest --csv gold.csv --column close --time-column t",
    )
    backtest.add_argument("--csv", required=True, type=Path, help="CSV file with the series")
    backtest.add_argument("--column", required=True, help="the price column")
    backtest.add_argument("--time-column", help="column to sort by (default: file order)")
    return {
        "run": run,
        "backfill": backfill,
        "import-csv": import_csv,
        "train": train,
        "status": status,
        "report": report,
        "quality": quality,
        "backtest": backtest,
    }


# The job name each command reports to the monitors under (status and report do not report).
MONITORED_JOBS = {"run": "pipeline", "backfill": "backfill", "import-csv": "import_csv",
                  "train": "train"}
# Commands that never call the API need no key.
_NEEDS_API_KEY = {"run", "backfill"}
_READERS = {"status", "report"}


def main(argv: list[str] | None = None, *, now: datetime | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parsers()
    # The command may follow the shared options: `main.py --demo train` = `main.py train --demo`.
    command = next((word for word in argv if word in parsers and word != "run"), "run")
    if command != "run":
        argv.remove(command)
    args = parsers[command].parse_args(argv)
    if command == "backtest":
        return _backtest(args)
    # status, report and the quality list only read: they work while a run holds the lock.
    reads = command in _READERS or (command == "quality" and args.action == "list")
    try:
        needs_key = command in _NEEDS_API_KEY or getattr(args, "api", False)
        settings = load_settings(demo=args.demo, require_api_key=needs_key).with_metals(args.metals)
        _check_folders(settings, writes=not reads)
        if settings.demo and command in _NEEDS_API_KEY:
            from source.demo import check_demo_units

            check_demo_units(settings)
        step = _step(command, args, now or datetime.now(UTC))
    except (ConfigError, ReportableError) as exc:
        kind = "configuration error" if isinstance(exc, ConfigError) else "usage error"
        print(f"main.py: {kind}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.demo:
        from source.demo import with_sandbox

        step = partial(with_sandbox, step)
    lock = None if reads else settings.data_dir / ".pipeline.lock"
    return run_locked(
        "main.py", settings, lock, partial(quiet_when_pipe_closes, partial(step, settings)),
        job=MONITORED_JOBS.get(command), ping=command == "run",
    )


def _check_folders(settings: Settings, *, writes: bool) -> None:
    """Every command logs; the writers also take their lock and land files under DATA_DIR."""
    check_folder("LOG_DIR", settings.log_dir)
    if writes:
        check_folder("DATA_DIR", settings.data_dir)


def _step(command: str, args: argparse.Namespace, now: datetime):
    """The function that does the command's work, its arguments checked before any work."""
    if command == "train":
        return _train_only
    if command == "backfill":
        from source.backfill import resolve_range

        first, last = resolve_range(args.start, args.end, now.date())
        return partial(_backfill, first=first, last=last, force=args.force)
    if command == "status":
        return partial(_status, as_json=args.json, api=args.api, now=now)
    if command == "report":
        # The demo's report lives apart, like its data: neither overwrites the other.
        default = Path("reports") / ("demo" if args.demo else "") / now.strftime("%Y-%m-%d")
        out = args.out or default
        return partial(_report, out=out, now=now)
    if command == "quality":
        return partial(_quality, **_quality_target(args))
    if command == "import-csv":
        _check_import_args(args)
        return partial(_import_csv, args=args)
    return partial(_hourly, train=not args.no_train)


def _check_import_args(args: argparse.Namespace) -> None:
    """The metal, the file and the delimiter, before the database is touched."""
    if args.metal not in KNOWN_METALS:
        raise ConfigError(f"unknown metal {args.metal!r}; choose from {', '.join(KNOWN_METALS)}")
    if args.metals is not None:
        raise ConfigError(
            f"import-csv loads one metal, named by --metal ({args.metal}); drop --metals "
            f"{args.metals}"
        )
    if args.path.is_dir():
        raise ConfigError(f"{args.path} is a folder; name the CSV file in it")
    if not args.path.is_file():
        raise ConfigError(f"no such file: {args.path}")
    if args.delimiter is not None and _delimiter(args.delimiter) is None:
        raise ConfigError(
            f"--delimiter {args.delimiter!r} is not one character (or 'tab'), e.g. ';'"
        )


def _delimiter(text: str | None) -> str | None:
    """'tab' (or a typed \\t) is a tab; any other single character is itself."""
    text = {"tab": "\t", "\\t": "\t"}.get(text, text)
    return text if text is None or len(text) == 1 else None


def _refuse_contradicting_units(settings: Settings, metals=None) -> None:
    """Before any request: CURRENCY/UNIT must match the stored rows (exit 2 when not). Best
    effort: a database that is down is the run's own business (it fetches and lands anyway)."""
    import psycopg2

    from source.db_functions.connection import DatabaseUnavailable, open_database
    from source.db_functions.units import refuse_contradiction

    try:
        conn = open_database(settings).connect()
    except DatabaseUnavailable:
        return
    try:
        with conn, conn.cursor() as cur:
            # A table locked by someone else must not hold up the fetch: the loader refuses
            # a contradicting quote by itself, later.
            cur.execute("SET LOCAL lock_timeout = '2s'")
            refuse_contradiction(cur, settings.currency, settings.unit, metals or settings.metals)
    except psycopg2.errors.LockNotAvailable:
        log.warning("CURRENCY/UNIT not checked before fetching: a table is locked")
    finally:
        conn.close()


def _hourly(settings: Settings, *, train: bool) -> int:
    from source.pipeline import run_hourly

    _refuse_contradicting_units(settings)
    report = run_hourly(settings, train=train)
    monitoring.record(
        rows_inserted=report.rows_inserted,
        api_requests=report.api_requests,
        summary=report.summary(),
        metals_failed=tuple(report.metals_failed),
        models_changed=report.models_trained > 0,
    )
    if settings.demo:
        from source.demo import print_demo_summary

        print_demo_summary(settings, report)
    if report.exit_code != EXIT_OK:
        print(f"main.py: {report.summary()}", file=sys.stderr)
    return report.exit_code


def _train_only(settings: Settings) -> int:
    from source.db_functions.migrations import connect_and_migrate
    from source.db_functions.runs import recorded_run
    from source.ml.train import train_all

    database = connect_and_migrate(settings)
    with recorded_run(database, "train") as record:  # in the runs table like every writer
        trained = train_all(settings, database)
        record.status, record.exit_code = "success", EXIT_OK
        record.metals_ok = list(settings.metals)
        record.message = f"{trained} model(s) trained"
    monitoring.record(summary=f"{trained} model(s) trained", models_changed=trained > 0)
    print(f"{trained} model(s) trained; see {settings.models_dir}")
    return EXIT_OK


def _backfill(settings: Settings, *, first, last, force: bool) -> int:
    from source.backfill import run_backfill
    from source.db_functions.migrations import connect_and_migrate
    from source.db_functions.runs import recorded_run
    from source.pipeline import log_api_trouble

    _refuse_contradicting_units(settings)
    database = connect_and_migrate(settings)
    with recorded_run(database, "backfill") as record:
        report = run_backfill(settings, database, first, last, force=force)
        log_api_trouble(report.errors.values())
        record.status, record.exit_code = report.status, report.exit_code
        record.rows_inserted, record.rows_updated = report.rows_inserted, report.rows_updated
        record.api_requests, record.message = report.api_requests, report.summary()
    monitoring.record(
        rows_inserted=report.rows_inserted,
        api_requests=report.api_requests,
        summary=f"backfill {first}..{last}: {report.summary()}",
    )
    print(f"backfill {first}..{last}: {report.summary()}")
    if report.exit_code != EXIT_OK:
        print(
            f"main.py backfill: {len(report.errors)} window(s) failed; see the log", file=sys.stderr
        )
    return report.exit_code


def _import_csv(settings: Settings, *, args: argparse.Namespace) -> int:
    from source.csv_import import CsvLayout, import_file
    from source.db_functions.migrations import connect_and_migrate
    from source.db_functions.runs import recorded_run, status_for

    delimiter = _delimiter(args.delimiter)
    layout = CsvLayout(
        time_column=args.time_column,
        date_column=args.date_column,
        price_column=args.price_column,
        ask_column=args.ask_column,
        time_format=args.time_format,
        tz=args.tz,
        delimiter=delimiter,
        header=not args.no_header,
    )
    _refuse_contradicting_units(settings, [args.metal])
    database = connect_and_migrate(settings)
    with recorded_run(database, "import-csv") as record:
        conn = database.connect()
        try:
            report = import_file(
                conn,
                args.path,
                args.metal,
                layout,
                currency=settings.currency,
                unit=settings.unit,
                strict=args.strict,
                **({"chunk_rows": args.chunk_rows} if args.chunk_rows else {}),
            )
        finally:
            conn.close()
        exit_code = EXIT_PARTIAL if report.bad_count else EXIT_OK
        record.status, record.exit_code = status_for(exit_code), exit_code
        record.metals_ok = [args.metal]
        record.rows_inserted, record.rows_updated = report.counts.inserted, report.counts.updated
        record.message = report.summary()
    monitoring.record(rows_inserted=report.counts.inserted, summary=report.summary())
    _report_bad_lines(report)
    print(f"import-csv {report.summary()}")
    return exit_code


def _report_bad_lines(report) -> None:
    """Every kept bad line goes to the log; the first few to stderr as well."""
    import logging

    log = logging.getLogger("import_csv")
    for line, reason in report.bad_lines:
        log.warning("%s line %d: %s", report.path.name, line, reason, extra={"file_only": True})
    if report.bad_count:
        shown = "; ".join(f"line {n}: {r}" for n, r in report.bad_lines[:3])
        more = "" if report.bad_count <= 3 else f" (and {report.bad_count - 3:,} more in the log)"
        print(
            f"main.py import-csv: {report.bad_count:,} bad line(s) skipped: {shown}{more}",
            file=sys.stderr,
        )


def _status(settings: Settings, *, as_json: bool, api: bool, now: datetime) -> int:
    from source.report.text import render_json, render_text
    from source.status import gather_status, open_for_reading

    database = open_for_reading(settings)  # an empty database is said before any request
    usage = None
    if api:
        from source.extract import api_usage

        usage = api_usage(settings)
    facts = gather_status(settings, database, now, usage)
    print(render_json(facts) if as_json else render_text(facts))
    return EXIT_OK if facts.healthy else EXIT_FAILURE


def _report(settings: Settings, *, out: Path, now: datetime) -> int:
    from source.report.history import price_history
    from source.report.html import write_report
    from source.status import collect

    facts = collect(settings, now)
    index = write_report(facts, price_history(settings, now), out, now=now)
    print(f"report written to {index}")
    return EXIT_OK


def _quality_target(args: argparse.Namespace) -> dict:
    """The action and, for accept/reject, the one quote it is about (checked before any work)."""
    target = {"action": args.action, "as_json": args.json, "metal": None, "time": None}
    if args.action == "list":
        return target
    missing = [option for option, value in (("--metal", args.metal_name), ("--time", args.time))
               if not value]
    if missing:
        raise ConfigError(
            f"quality {args.action} needs {' and '.join(missing)} (the quote as `python main.py "
            "quality` lists it)"
        )
    if args.metal_name not in KNOWN_METALS:
        raise ConfigError(
            f"unknown metal {args.metal_name!r}; choose from {', '.join(KNOWN_METALS)}"
        )
    try:
        time = datetime.fromisoformat(args.time.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--time {args.time!r} is not a time like 2026-03-04T10:00Z") from None
    target.update(metal=args.metal_name, time=time if time.tzinfo else time.replace(tzinfo=UTC))
    return target


def _quality(settings: Settings, *, action: str, as_json: bool, metal, time) -> int:
    from source.quality_review import decide_quote, list_quotes

    if action == "list":
        return list_quotes(settings, as_json=as_json)
    return decide_quote(settings, metal=metal, time=time, accept=action == "accept")


def _backtest(args: argparse.Namespace) -> int:
    from source.ml.backtest import BacktestInputError, backtest_csv

    try:
        result = backtest_csv(args.csv, args.column, args.time_column)
    except BacktestInputError as exc:
        print(f"main.py backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result))
    return EXIT_OK
