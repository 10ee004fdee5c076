"""The commands of main.py, each declared once beside its handler: the hourly run (the default),
backfill, import-csv, train, backtest, status, report, quality."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from source import monitoring
from source.commands.registry import PIPELINE_LOCK, CommandLine, demo_option, option
from source.config import KNOWN_METALS, ConfigError, Settings
from source.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

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

MAIN = CommandLine(
    prog="main.py",
    description="Hourly Metals.Dev -> PostgreSQL run. Subcommands: backfill, import-csv, train, "
    "backtest, status, report, quality (each with --help).",
    epilog=EPILOG,
    demo_feed=True,
    quiet_pipe=True,
)


def _metal_name(text: str) -> str:
    """Metal names are lower case in the tables; `GOLD` means gold, as in METALS."""
    return text.strip().lower()


# The options every command of main.py but backtest takes, before or after its name.
SANDBOX = (
    demo_option("use the built-in sandbox feed and the embedded demo database (no API key needed)"),
    option("--metals", help="comma-separated subset, e.g. gold,silver"),
)


# -- the hourly run (no subcommand) -------------------------------------------------------------


@MAIN.command(
    None,
    options=(
        *SANDBOX,
        option("--no-train", action="store_true", help="load prices but do not retrain models"),
    ),
    job="pipeline",
    monitored=True,
    ping=True,
    lock=PIPELINE_LOCK,
    api_key=True,
    demo_seeds=True,
)
def hourly(settings: Settings, args: argparse.Namespace) -> int:
    from source.pipeline import run_hourly

    _refuse_contradicting_units(settings, args.job)
    report = run_hourly(settings, train=not args.no_train, job=args.job)
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


def _refuse_contradicting_units(settings: Settings, job: str, metals=None) -> None:
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
        logging.getLogger(job).warning(
            "CURRENCY/UNIT not checked before fetching: a table is locked"
        )
    finally:
        conn.close()


# -- backfill -------------------------------------------------------------------------------------


def _check_backfill(args: argparse.Namespace) -> None:
    from source.backfill import resolve_range

    args.first, args.last = resolve_range(args.start, args.end, args.now.date())


@MAIN.command(
    "backfill",
    help="daily history from /timeseries, windows already covered skipped",
    description="Daily history from /timeseries: one request per window of at most 30 days for "
    "all metals, windows fetched concurrently, each response landed before it is loaded. "
    "Days already covered are skipped, so a rerun makes no request.",
    epilog="examples:\n  python main.py backfill --start 2024-01-01\n"
    "  python main.py backfill --start 2023-01-01 --end 2023-12-31 --force",
    options=(
        *SANDBOX,
        option("--start", required=True, help="first day, YYYY-MM-DD"),
        option("--end", help="last day, YYYY-MM-DD (default: yesterday, UTC)"),
        option("--force", action="store_true", help="fetch every window again, even if covered"),
    ),
    job="backfill",
    monitored=True,
    lock=PIPELINE_LOCK,
    api_key=True,
    check=_check_backfill,
)
def backfill(settings: Settings, args: argparse.Namespace) -> int:
    from source.backfill import run_backfill
    from source.db_functions.migrations import connect_and_migrate
    from source.db_functions.runs import recorded_run
    from source.pipeline import log_api_trouble

    first, last = args.first, args.last
    _refuse_contradicting_units(settings, args.job)
    database = connect_and_migrate(settings)
    with recorded_run(database, args.job) as record:
        report = run_backfill(settings, database, first, last, force=args.force)
        log_api_trouble(report.errors.values())
        if settings.backup_s3_url:  # its landed windows to the bucket, as the hourly run's
            _copy_offsite(settings, record)
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


# -- import-csv -----------------------------------------------------------------------------------


def _check_import_args(args: argparse.Namespace) -> None:
    """The metal, the file and the delimiter, before the database is touched."""
    if args.metal not in KNOWN_METALS:
        raise ConfigError(
            f"unknown metal {args.metal!r}; choose from the API's spot metals "
            f"{', '.join(KNOWN_METALS)}"
        )
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
    if text is None:
        return None
    text = {"tab": "\t", "\\t": "\t"}.get(text, text)
    return text if len(text) == 1 else None


@MAIN.command(
    "import-csv",
    help="bulk-load a vendor CSV of historic prices for one metal",
    description="Bulk-load a vendor CSV of historic prices into one metal's historic table and "
    "the analytics table (source = csv): streamed in chunks, COPY into a staging table, "
    "upsert, one transaction.",
    epilog=IMPORT_EPILOG,
    options=(
        *SANDBOX,
        option("path", type=Path, help="the CSV file"),
        option(
            "--metal", required=True, type=_metal_name, help="gold, silver, platinum or palladium"
        ),
        option("--time-column", help="time (or date and time) column"),
        option("--date-column", help="date column, when the time is split in two"),
        option("--price-column", help="price column (default: price or close)"),
        option("--ask-column", help="ask column (optional)"),
        option(
            "--time-format", help="strftime format, e.g. '%%Y.%%m.%%d %%H:%%M' (default: ISO 8601)"
        ),
        option("--tz", default="UTC", help="zone of times without an offset (default: UTC)"),
        option("--delimiter", help="',', ';', 'tab' or any one character (default: detected)"),
        option(
            "--no-header", action="store_true", help="no header row: columns are numbers from 1"
        ),
        option("--strict", action="store_true", help="refuse the whole file if any line is bad"),
        option("--chunk-rows", type=int, default=None, help=argparse.SUPPRESS),
    ),
    job="import_csv",
    monitored=True,
    lock=PIPELINE_LOCK,
    check=_check_import_args,
)
def import_csv(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from source.csv_import import CsvLayout, import_file
    from source.db_functions.migrations import connect_and_migrate
    from source.db_functions.runs import recorded_run, status_for
    from source.db_functions.units import kept_units

    layout = CsvLayout(
        time_column=args.time_column,
        date_column=args.date_column,
        price_column=args.price_column,
        ask_column=args.ask_column,
        time_format=args.time_format,
        tz=args.tz,
        delimiter=_delimiter(args.delimiter),
        header=not args.no_header,
    )
    _refuse_contradicting_units(settings, args.job, [args.metal])
    # The metal named gets its table even when METALS does not list it (yet).
    database = connect_and_migrate(settings, metals=(*settings.metals, args.metal))
    with recorded_run(database, args.job) as record:
        # A vendor file says no unit: UNIT, else the one the metal's rows are kept in.
        unit = settings.unit or kept_units(database, [args.metal]).get(args.metal, "toz")
        read_as = {"currency": settings.currency, "unit": unit, "strict": args.strict}
        started = datetime.now(UTC)  # the rows' fetched_at, and the kept copy's
        conn = database.connect()
        try:
            report = import_file(
                conn,
                args.path,
                args.metal,
                layout,
                **read_as,
                fetched_at=started,
                **({"chunk_rows": args.chunk_rows} if args.chunk_rows else {}),
            )
        finally:
            conn.close()
        exit_code = EXIT_PARTIAL if report.bad_count else EXIT_OK
        record.status, record.exit_code = status_for(exit_code), exit_code
        record.metals_ok = [args.metal]
        record.rows_inserted, record.rows_updated = report.counts.inserted, report.counts.updated
        record.message = report.summary()
        if settings.backup_s3_url and report.rows_loaded:
            _keep_import(settings, args, started, {"layout": asdict(layout), **read_as})
            _copy_offsite(settings, record)
    monitoring.record(rows_inserted=report.counts.inserted, summary=report.summary())
    _report_bad_lines(report, logging.getLogger(args.job))
    print(f"import-csv {report.summary()}")
    return exit_code


def _copy_offsite(settings: Settings, record) -> None:
    """The job's landed files to the bucket after its load, recorded in its ledger row."""
    from source.backups.landed import copy_landed  # boto3 only with a bucket
    from source.extract import LOADED

    copied = copy_landed(settings, settings.data_dir / LOADED)
    record.offsite_copied, record.offsite_error = copied.copied, copied.error
    if copied.newest is not None:
        monitoring.record(offsite_newest=copied.newest.timestamp())


def _keep_import(
    settings: Settings, args: argparse.Namespace, started: datetime, read_as: dict
) -> None:
    """A copy of the imported CSV and how it was read, for `restore latest` to import again
    when the host is lost before the next backup."""
    from source.backups.landed import keep_import
    from source.extract import LOADED

    options = {
        "name": args.path.name,
        "raw_file": str(args.path.resolve()),
        "fetched_at": started.isoformat(),
        "metal": args.metal,
        **read_as,
    }
    try:
        keep_import(settings.data_dir / LOADED, args.path, args.metal, options, started)
    except OSError as exc:  # the rows are in: say what the bucket will lack, do not fail
        logging.getLogger(args.job).warning(
            "import-csv: no copy of %s kept for the bucket (%s)", args.path.name, exc
        )


def _report_bad_lines(report, log: logging.Logger) -> None:
    """Every kept bad line goes to the log; the first few to stderr as well."""
    for line, reason in report.bad_lines:
        log.warning("%s line %d: %s", report.path.name, line, reason, extra={"file_only": True})
    if report.bad_count:
        shown = "; ".join(f"line {n}: {r}" for n, r in report.bad_lines[:3])
        more = "" if report.bad_count <= 3 else f" (and {report.bad_count - 3:,} more in the log)"
        print(
            f"main.py import-csv: {report.bad_count:,} bad line(s) skipped: {shown}{more}",
            file=sys.stderr,
        )


# -- train ----------------------------------------------------------------------------------------


@MAIN.command(
    "train",
    help="retrain every metal's models from the database",
    description="Retrain the rate_price and rate_ask models of every metal from the database "
    "(no API key needed).",
    epilog="example:\n  python main.py train --metals gold",
    options=SANDBOX,
    job="train",
    monitored=True,
    lock=PIPELINE_LOCK,
)
def train(settings: Settings, args: argparse.Namespace) -> int:
    from source.db_functions.migrations import connect_and_migrate
    from source.db_functions.runs import recorded_run
    from source.ml.train import train_all

    database = connect_and_migrate(settings)
    with recorded_run(database, args.job) as record:  # in the runs table like every writer
        trained = train_all(settings, database)
        record.status, record.exit_code = "success", EXIT_OK
        record.metals_ok = list(settings.metals)
        record.message = f"{trained} model(s) trained"
    monitoring.record(summary=f"{trained} model(s) trained", models_changed=trained > 0)
    print(f"{trained} model(s) trained; see {settings.models_dir}")
    return EXIT_OK


# -- backtest -------------------------------------------------------------------------------------


@MAIN.command(
    "backtest",
    help="walk-forward evaluation of the models on a CSV series",
    description="Walk-forward evaluation of the model family on a price series from a CSV, "
    "against the naive (persistence) forecast. Prints one JSON object.",
    epilog="example:\n  python main.py backtest --csv gold.csv --column close --time-column t",
    options=(
        option("--csv", required=True, type=Path, help="CSV file with the series"),
        option("--column", required=True, help="the price column"),
        option("--time-column", help="column to sort by (default: file order)"),
    ),
    settings=False,
)
def backtest(settings: Settings | None, args: argparse.Namespace) -> int:  # settings=False: None
    from source.ml.backtest import BacktestInputError, backtest_csv

    try:
        result = backtest_csv(args.csv, args.column, args.time_column)
    except BacktestInputError as exc:
        print(f"main.py backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result))
    return EXIT_OK


# -- status, report, quality: the readers (they work while a run holds the lock) -----------------


@MAIN.command(
    "status",
    help="what the person on call needs (exit 1 on warnings)",
    description="What the person on call needs: latest prices, recent runs, API requests this "
    "month, model skill, the newest backup, and warnings. Exit 0 when healthy, 1 with warnings. "
    "Needs no API key and makes no API request unless --api.",
    epilog="examples:\n  python main.py status\n  python main.py status --json | jq .warnings\n"
    "  python main.py status --api        also ask the API how much of the plan is used",
    options=(
        *SANDBOX,
        option("--json", action="store_true", help="one JSON object (keys: docs/status.md)"),
        option("--api", action="store_true", help="include the API's own /usage"),
    ),
    api_key=lambda args: args.api,
)
def status(settings: Settings, args: argparse.Namespace) -> int:
    from source.report.text import render_json, render_text
    from source.status import gather_status, open_for_reading

    database = open_for_reading(settings)  # an empty database is said before any request
    usage = None
    if args.api:
        from source.extract import api_usage

        usage = api_usage(settings)
    facts = gather_status(settings, database, args.now, usage)
    print(render_json(facts) if args.json else render_text(facts))
    return EXIT_OK if facts.healthy else EXIT_FAILURE


@MAIN.command(
    "report",
    help="a self-contained HTML report with one chart per metal",
    description="Write a self-contained HTML report (index.html + one PNG chart per metal) with "
    "the same facts as status. No network needed to view it.",
    epilog="example:\n  python main.py report --out /var/www/commodities",
    options=(
        *SANDBOX,
        option(
            "--out",
            type=Path,
            help="folder (default: reports/<UTC date>/; with --demo reports/demo/<UTC date>/)",
        ),
    ),
)
def report(settings: Settings, args: argparse.Namespace) -> int:
    from source.report.history import price_history
    from source.report.html import write_report
    from source.status import collect

    # The demo's report lives apart, like its data: neither overwrites the other.
    default = Path("reports") / ("demo" if args.demo else "") / args.now.strftime("%Y-%m-%d")
    facts = collect(settings, args.now)
    index = write_report(
        facts, price_history(settings, args.now), args.out or default, now=args.now
    )
    print(f"report written to {index}")
    return EXIT_OK


def _check_quality_target(args: argparse.Namespace) -> None:
    """For accept/reject, the one quote it is about (checked before any work): `args.when`."""
    args.when = None
    if args.action == "list":
        return
    given = (("--metal", args.metal_name), ("--time", args.time))
    missing = [flag for flag, value in given if not value]
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
    args.when = time if time.tzinfo else time.replace(tzinfo=UTC)


@MAIN.command(
    "quality",
    help="quotes marked suspect (bad ticks), to accept or reject",
    description="Quotes kept out of the models, views and charts: `suspect` ones (a jump the "
    "metal's volatility does not explain, or a quote that contradicts itself) and `rejected` "
    "ones. The next quotes decide a suspect jump by themselves (the level holds: ok; the "
    "price returns: it stays suspect); a person decides the rest with accept or reject.",
    epilog="examples:\n  python main.py quality                 list them (--json: one object)\n"
    "  python main.py quality accept --metal gold --time 2026-03-04T10:00Z\n"
    "  python main.py quality reject --metal gold --time '2026-03-04 10:00'   (UTC)",
    options=(
        *SANDBOX,
        option(
            "action",
            nargs="?",
            choices=["list", "accept", "reject"],
            default="list",
            help="list (default), accept (mark ok) or reject one quote",
        ),
        option("--metal", dest="metal_name", type=_metal_name, help="the quote's metal"),
        option("--time", help="the quote's time as listed (UTC unless an offset)"),
        option("--json", action="store_true", help="one JSON object"),
    ),
    lock=PIPELINE_LOCK,
    reads=lambda args: args.action == "list",
    check=_check_quality_target,
)
def quality(settings: Settings, args: argparse.Namespace) -> int:
    from source.quality_review import decide_quote, list_quotes

    if args.action == "list":
        return list_quotes(settings, as_json=args.json)
    return decide_quote(
        settings, metal=args.metal_name, time=args.when, accept=args.action == "accept"
    )


main = MAIN.main
