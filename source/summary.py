"""The short human summary printed at the end of `python main.py --demo`."""

from __future__ import annotations

from source.config import Settings
from source.db_functions.connection import open_database
from source.db_functions.migrations import historic_table


def latest_prices(settings: Settings) -> dict[str, tuple]:
    """{metal: (rows, latest rate_price, its timestamp)} for the configured metals."""
    conn = open_database(settings).connect()
    try:
        with conn, conn.cursor() as cur:
            result = {}
            for metal in settings.metals:
                table = historic_table(metal)
                cur.execute(
                    f'SELECT (SELECT count(*) FROM {table}), rate_price, "timestamp" '
                    f'FROM {table} ORDER BY "timestamp" DESC LIMIT 1'
                )
                result[metal] = cur.fetchone() or (0, None, None)
            return result
    finally:
        conn.close()


def print_demo_summary(settings: Settings, report) -> None:
    models = sorted(settings.models_dir.glob("model_rate_*/*.joblib"))
    where = f"embedded in {settings.embedded_pg_dir}" if settings.pg_host is None else "PGHOST"
    print()
    print("Demo run finished - SYNTHETIC prices from the local sandbox feed, not market data.")
    print(f"  database: {settings.pg_database} ({where})")
    print(f"  this run: {report.summary()}")
    if report.database_error is None:
        for metal, (rows, price, stamp) in latest_prices(settings).items():
            latest = "-"
            if price is not None:
                latest = f"{price:,.2f} {settings.currency}/{settings.unit}"
                latest += f" at {stamp:%Y-%m-%d %H:%M} UTC"
            print(f"  {metal:<10} {rows:>6,} rows   latest {latest}")
    print(f"  models: {len(models)} in {settings.models_dir}/ (model_rate_price, model_rate_ask)")
    print(f"  raw responses: {settings.data_dir}/   logs: {settings.log_dir}/")
    print("  run it again: each hour brings one new quote per metal; reruns add nothing")
