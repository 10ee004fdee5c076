"""`main.py quality`: the quotes the rules kept out (suspect, rejected), listed for a person,
who accepts or rejects one; each decision is recorded in the run ledger and in quality_events,
and the quotes after it are judged again in its light."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime

from source.config import Settings
from source.db_functions import quality_marks
from source.db_functions.migrations import connect_and_migrate, tables_present
from source.db_functions.runs import recorded_run
from source.errors import EXIT_OK, EXIT_USAGE
from source.status import open_for_reading

log = logging.getLogger(__name__)
RECENT_DECISIONS = 20


def _rows(settings: Settings) -> dict:
    database = open_for_reading(settings)
    conn = database.connect()
    try:
        with conn, conn.cursor() as cur:
            marked = quality_marks.flagged(cur, tables_present(cur, settings.metals))
            cur.execute(
                """SELECT metal, "timestamp", price, quality, decision, reason, decided_by,
                          decided_at
                     FROM quality_events WHERE decision IN ('confirmed', 'accepted', 'rejected',
                          'contradicted') AND metal = ANY(%s)
                    ORDER BY decided_at DESC, event_id DESC LIMIT %s""",
                (list(settings.metals), RECENT_DECISIONS),
            )
            names = [column.name for column in cur.description]
            decided = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
    return {"marked": marked, "recent_decisions": decided}


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def list_quotes(settings: Settings, *, as_json: bool) -> int:
    facts = _rows(settings)
    if as_json:
        print(json.dumps(
            {key: [{k: _iso(v) for k, v in row.items()} for row in rows]
             for key, rows in facts.items()}
        ))
        return EXIT_OK
    marked = facts["marked"]
    if not marked:
        print("no quote has been flagged")
    else:
        print(f"{'METAL':<10} {'TIME (UTC)':<17} {'PRICE':>12}  {'MARK':<8} {'STATE':<12} WHY")
        for row in marked:
            print(
                f"{row['metal']:<10} {row['time']:%Y-%m-%d %H:%M} {row['price']:>12,.2f}  "
                f"{row['quality']:<8} {row['decision']:<12} {row['reason'] or ''}"
            )
    if facts["recent_decisions"]:
        print("\nrecently decided:")
        for row in facts["recent_decisions"]:
            print(
                f"  {row['decided_at']:%Y-%m-%d %H:%M} {row['metal']} "
                f"{row['timestamp']:%Y-%m-%d %H:%M} {row['price']:,.2f}: {row['quality']} "
                f"({row['decision']} by {row['decided_by']})"
            )
    return EXIT_OK


def decide_quote(settings: Settings, *, metal: str, time: datetime, accept: bool) -> int:
    database = connect_and_migrate(settings)
    verb = "accept" if accept else "reject"
    with recorded_run(database, f"quality {verb}") as record:
        conn = database.connect()
        try:
            with conn, conn.cursor() as cur:
                change, later = quality_marks.decide(cur, metal, time, accept)
        except LookupError as exc:
            record.status, record.exit_code, record.message = "failed", EXIT_USAGE, str(exc)
            print(f"main.py quality: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            conn.close()
        record.status, record.exit_code = "success", EXIT_OK
        record.message = change.line()
    log.info("%s", change.line())
    print(change.line())
    for other in later:
        log.info("%s", other.line())
        print(f"  then {other.line()}")
    return EXIT_OK
