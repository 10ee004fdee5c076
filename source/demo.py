"""`--demo`: the local sandbox feed every command runs against, the first run's seeded history
(loaded before the hourly run, which knows nothing of the demo), and the summary printed at
the end. Demo rows are tagged `demo` and live in their own database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from source.config import DEMO_API_KEY, ConfigError, Settings
from source.db_functions.connection import Database, DatabaseUnavailable, open_database
from source.db_functions.migrations import connect_and_migrate, historic_sql
from source.extract import (
    frames_from_payload,
    make_client,
    mark_job_rejected,
    mark_loaded,
    mark_rejected,
)
from source.load import LoadJob, QueueLoader
from source.metals_dev import MetalsDevError
from source.sandbox import SandboxServer
from source.transform import history_to_frame

log = logging.getLogger(__name__)

DEMO_SEED_HOURS = 24 * 120  # enough hourly history for walk-forward validation at 24 steps
# Served only by the local sandbox: hourly spot quotes, fetched through the client's generic
# fetch. Runs replay only the API's kinds: a seed file left in incoming/ because its load
# failed is set aside by the next run, which seeds again.
HISTORY_KIND, HISTORY_ENDPOINT = "history", "/sandbox/history"


DEMO_UNITS = ("USD", "toz")  # what the sandbox's synthetic feed quotes


def check_demo_units(settings: Settings) -> None:
    """The synthetic feed quotes USD per troy ounce: another CURRENCY or UNIT is refused at
    once, before the demo seeds rows it would then refuse to mix with."""
    if settings.currency != DEMO_UNITS[0] or settings.unit not in (None, DEMO_UNITS[1]):
        raise ConfigError(
            f"the demo's synthetic feed quotes {DEMO_UNITS[0]} per {DEMO_UNITS[1]}, not "
            f"{settings.currency} per {settings.unit or DEMO_UNITS[1]}; unset CURRENCY and UNIT "
            "for --demo"
        )


def with_sandbox(step: Callable[[Settings], int], settings: Settings, *, seed: bool = False) -> int:
    """Run a step with the API pointed at a sandbox on 127.0.0.1; `seed`: the first run's
    history is loaded before it."""
    with SandboxServer(api_key=DEMO_API_KEY) as sandbox:
        log.info("demo: sandbox feed on %s", sandbox.base_url)
        settings = replace(settings, base_url=sandbox.base_url)
        if seed:
            seed_first_run(settings)
        return step(settings)


def seed_first_run(settings: Settings) -> None:
    """Load the sandbox's hourly history into a demo database that has little, so that the
    models have data. A database that is down is left to the run itself to report."""
    try:
        database = connect_and_migrate(settings)
    except DatabaseUnavailable:
        return
    client = make_client(settings)
    try:
        loader = QueueLoader(
            database,
            on_loaded=partial(mark_loaded, settings.data_dir),
            on_rejected=partial(mark_job_rejected, settings.data_dir),
        )
        with loader:
            seed_demo_history(settings, database, client, loader.submit)
    finally:
        client.close()
    for outcome in loader.outcomes:
        if outcome.error:
            log.error("%s: seeding demo history failed: %s", outcome.job.metal, outcome.error)


def _rows_per_metal(database: Database, metals: tuple[str, ...]) -> dict[str, int]:
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            counts = {}
            for metal in metals:
                cur.execute(f"SELECT count(*) FROM {historic_sql(metal)}")
                counts[metal] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def seed_demo_history(settings: Settings, database: Database, client, submit) -> None:
    """First demo run: fetch hourly history from the sandbox so the models have data."""
    for metal, rows in _rows_per_metal(database, settings.metals).items():
        if rows >= DEMO_SEED_HOURS // 2:
            continue
        try:
            params = {"metal": metal, "hours": DEMO_SEED_HOURS, "currency": settings.currency}
            fetched = client.fetch(HISTORY_KIND, metal, HISTORY_ENDPOINT, params)
            frames = frames_from_payload(
                metal,
                fetched.payload,
                fetched_at=fetched.raw.fetched_at,
                raw_file=fetched.landed_path,
                source="demo",
                endpoint=HISTORY_ENDPOINT,
                to_frame=history_to_frame,
            )
        except MetalsDevError as exc:
            log.error("%s: seeding demo history failed: %s", metal, exc)
            mark_rejected(settings.data_dir, exc.landed_path)
            continue
        log.info("%s: seeding %d hours of synthetic history", metal, len(frames[metal]))
        submit(LoadJob(metal, frames[metal], [fetched.landed_path]))


def latest_prices(settings: Settings) -> dict[str, tuple]:
    """{metal: (rows, latest rate_price, its timestamp, its currency/unit)} for the
    configured metals."""
    conn = open_database(settings).connect()
    try:
        with conn, conn.cursor() as cur:
            result = {}
            for metal in settings.metals:
                table = historic_sql(metal)
                cur.execute(
                    f'SELECT (SELECT count(*) FROM {table}), rate_price, "timestamp", '
                    "currency || '/' || unit "
                    f"FROM {table} WHERE quality = 'ok' ORDER BY \"timestamp\" DESC LIMIT 1"
                )
                result[metal] = cur.fetchone() or (0, None, None, None)
            return result
    finally:
        conn.close()


def _demo_outcome(report) -> str:
    """The summary's first words: never 'finished' when nothing was loaded."""
    if not report.metals_ok:
        return "Demo run FAILED, nothing loaded"
    if report.exit_code != 0:
        return f"Demo run finished with errors (exit code {report.exit_code})"
    return "Demo run finished"


def print_demo_summary(settings: Settings, report) -> None:
    models = sorted(settings.models_dir.glob("model_rate_*/*.joblib"))
    where = f"embedded in {settings.embedded_pg_dir}" if settings.pg_host is None else "PGHOST"
    print()
    print(f"{_demo_outcome(report)} - SYNTHETIC prices from the local sandbox feed.")
    print(f"  database: {settings.pg_database} ({where})")
    print(f"  this run: {report.summary()}")
    if report.database_error is None:
        for metal, (rows, price, stamp, unit) in latest_prices(settings).items():
            latest = "-"
            if price is not None:
                latest = f"{price:,.2f} {unit}"
                latest += f" at {stamp:%Y-%m-%d %H:%M} UTC"
            print(f"  {metal:<10} {rows:>6,} rows   latest {latest}")
    print(f"  models: {len(models)} in {settings.models_dir}/ (model_rate_price, model_rate_ask)")
    print(f"  raw responses: {settings.data_dir}/   logs: {settings.log_dir}/")
    print("  run it again: each hour brings one new quote per metal; reruns add nothing")
