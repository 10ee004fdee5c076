"""The currency and unit each commodity's rows are stored in. Labels come from the rows; a
CURRENCY or UNIT that contradicts them is refused by the commands that write (before any
request or load) and set aside with a note by those that only read."""

from __future__ import annotations

from source.config import SPOT_UNITS
from source.db_functions.migrations import historic_sql, historic_table
from source.errors import EXIT_USAGE, ReportableError


class UnitsContradicted(ReportableError):
    """CURRENCY/UNIT differ from what the stored rows are in: a configuration error, exit 2."""

    exit_code = EXIT_USAGE


def stored_units(cur, metals: tuple[str, ...] | list[str]) -> dict[str, tuple[str, str]]:
    """{metal: (currency, unit)} for the metals that hold rows (tables not made yet: none)."""
    found = {}
    for metal in metals:
        table = historic_table(metal)
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        if not cur.fetchone()[0]:
            continue
        cur.execute(f"SELECT currency, unit FROM {historic_sql(metal)} LIMIT 1")
        row = cur.fetchone()
        if row is not None:
            found[metal] = (row[0], row[1])
    return found


def kept_units(database, metals) -> dict[str, str]:
    """{metal: unit} its rows are kept in, for the metals that hold rows."""
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            return {metal: unit for metal, (_, unit) in stored_units(cur, metals).items()}
    finally:
        conn.close()


def target_units(database, metals, unit: str | None) -> dict[str, str]:
    """{metal: unit} its prices are to be kept in: UNIT when set; else the unit its stored
    rows are in, or, for a commodity with no rows yet, the unit its spot quotes come in
    (copper per tonne), so a backfill before the first hourly run keeps what that run loads."""
    if unit is not None:
        return dict.fromkeys(metals, unit)
    return {metal: SPOT_UNITS.get(metal, "toz") for metal in metals} | kept_units(
        database, metals
    )


def contradiction(
    currency: str, unit: str | None, stored: dict[str, tuple[str, str]]
) -> str | None:
    """One line naming the setting that contradicts the stored rows, or None when none does
    (no UNIT: each commodity keeps its own)."""
    for metal, (kept_currency, kept_unit) in stored.items():
        wrong = [
            f"{name}={value}"
            for name, value, kept in (
                ("CURRENCY", currency, kept_currency),
                ("UNIT", unit, kept_unit),
            )
            if value is not None and value != kept
        ]
        if wrong:
            return (
                f"{' and '.join(wrong)} contradicts the stored rows: {metal} is kept in "
                f"{kept_currency} per {kept_unit}; unset it (or use another database, "
                "PGDATABASE, for another currency or unit)"
            )
    return None


def refuse_contradiction(cur, currency: str, unit: str | None, metals) -> None:
    """Raise UnitsContradicted before a writer fetches or loads rows it would have to refuse."""
    line = contradiction(currency, unit, stored_units(cur, metals))
    if line is not None:
        raise UnitsContradicted(line)
