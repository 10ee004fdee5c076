"""Command line of main.py: parse arguments, build settings, take the lock, call a stage."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from source.config import ConfigError, Settings, load_settings
from source.entrypoint import run_locked
from source.errors import EXIT_OK, EXIT_USAGE
from source.pipeline import run_hourly

EPILOG = """examples:
  python main.py                      one hourly run (fetch, land, load, train)
  python main.py --demo               the same against a local sandbox and an embedded database
  python main.py --no-train --metals gold,silver
  python main.py train                retrain every model from the database
  python main.py backtest --csv prices.csv --column price

exit codes: 0 ok, 1 failure, 2 usage/configuration error, 3 some metals failed,
75 another run holds the lock"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo",
        action="store_true",
        help="use the built-in sandbox feed and the embedded demo database (no API key needed)",
    )
    parser.add_argument("--metals", help="comma-separated subset, e.g. gold,silver")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    formatter = argparse.RawDescriptionHelpFormatter
    run = argparse.ArgumentParser(
        prog="main.py",
        description="Hourly Metals.Dev -> PostgreSQL run. Subcommands: train, backtest.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    _common(run)
    run.add_argument(
        "--no-train", action="store_true", help="load prices but do not retrain models"
    )

    train = argparse.ArgumentParser(
        prog="main.py train",
        description="Retrain the rate_price and rate_ask models of every metal from the database.",
        epilog="example:\n  python main.py train --metals gold",
        formatter_class=formatter,
    )
    _common(train)

    backtest = argparse.ArgumentParser(
        prog="main.py backtest",
        description="Walk-forward evaluation of the model family on a price series from a CSV, "
        "against the naive (persistence) forecast. Prints one JSON object.",
        epilog="example:\n  python main.py backtest --csv gold.csv --column close --time-column t",
        formatter_class=formatter,
    )
    backtest.add_argument("--csv", required=True, type=Path, help="CSV file with the series")
    backtest.add_argument("--column", required=True, help="the price column")
    backtest.add_argument("--time-column", help="column to sort by (default: file order)")
    return {"run": run, "train": train, "backtest": backtest}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parsers()
    # The command may follow the shared options: `main.py --demo train` = `main.py train --demo`.
    command = next((word for word in argv if word in parsers and word != "run"), "run")
    if command != "run":
        argv.remove(command)
    args = parsers[command].parse_args(argv)
    if command == "backtest":
        return _backtest(args)
    try:
        settings = load_settings(demo=args.demo).with_metals(args.metals)
    except ConfigError as exc:
        print(f"main.py: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    step = _train_only if command == "train" else partial(_hourly, train=not args.no_train)
    if settings.demo:
        from source.demo import with_sandbox

        step = partial(with_sandbox, step)
    lock = settings.data_dir / ".pipeline.lock"
    return run_locked("main.py", settings, lock, partial(step, settings))


def _hourly(settings: Settings, *, train: bool) -> int:
    report = run_hourly(settings, train=train)
    if settings.demo:
        from source.demo import print_demo_summary

        print_demo_summary(settings, report)
    elif report.exit_code != EXIT_OK:
        print(f"main.py: {report.summary()}", file=sys.stderr)
    return report.exit_code


def _train_only(settings: Settings) -> int:
    from source.ml.train import train_all
    from source.pipeline import connect_and_migrate

    trained = train_all(settings, connect_and_migrate(settings))
    print(f"{trained} model(s) trained; see {settings.models_dir}")
    return EXIT_OK


def _backtest(args: argparse.Namespace) -> int:
    from source.ml.backtest import BacktestInputError, backtest_csv

    try:
        result = backtest_csv(args.csv, args.column, args.time_column)
    except BacktestInputError as exc:
        print(f"main.py backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result))
    return EXIT_OK
