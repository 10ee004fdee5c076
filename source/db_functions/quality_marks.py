"""Quality marks in the database: judge a metal's rows from a moment on with the rules in
source/quality.py, inside the transaction that loaded them, and store what changed (the mark
on the row, and an event in quality_events). A person's decision is never overwritten."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from source import quality
from source.db_functions.migrations import historic_sql

log = logging.getLogger(__name__)

HISTORY_ROWS = 500  # judged rows before the new ones: the last good price, the volatility
# In Quote's field order; the time as epoch seconds (float8: exact to the microsecond here),
# far cheaper to read than a timestamptz for the million rows of an import.
_COLUMNS = (
    'extract(epoch FROM "timestamp")::float8, rate_price, rate_ask, rate_bid, rate_high, '
    "rate_low, quality, quality_decision, quality_reason"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _when(seconds: float) -> datetime:
    return _EPOCH + timedelta(microseconds=round(seconds * 1e6))


@dataclass(frozen=True)
class MarkChange:
    metal: str
    time: datetime
    price: float
    verdict: quality.Verdict

    def line(self) -> str:
        """One line a person understands: metal, price, the last good price, why."""
        before = self.verdict.reference
        return (
            f"{self.metal}: {self.price:,.2f} at {self.time:%Y-%m-%d %H:%M} UTC marked "
            f"{self.verdict.mark} ({self.verdict.decision}"
            + (f"; last good price {before:,.2f}" if before else "")
            + f"): {self.verdict.reason}"
        )


def _fetch(cur, statement: str, params) -> list[quality.Quote]:
    cur.execute(statement, params)
    return [quality.Quote(*row) for row in cur.fetchall()]


CHUNK_ROWS = 50_000  # rows judged at a time: a million-row import stays in bounded memory


def assess_metal(cur, metal: str, since: datetime) -> list[MarkChange]:
    """Judge `metal`'s rows from `since` on (new or changed rows and every later one) and store
    the marks that changed; returns them, oldest first. Reads the rows in chunks through a
    server-side cursor of the same transaction."""
    table = historic_sql(metal)
    state = quality.resume(_history(cur, table, since))
    changes: list[MarkChange] = []
    scan = cur.connection.cursor(name=f"quality_scan_{metal}")
    try:
        scan.itersize = CHUNK_ROWS
        scan.execute(
            f'SELECT {_COLUMNS} FROM {table} WHERE "timestamp" >= %s ORDER BY "timestamp"',
            (since,),
        )
        while rows := scan.fetchmany(CHUNK_ROWS):
            verdicts, state = quality.judge([quality.Quote(*row) for row in rows], state)
            for time, verdict in sorted(verdicts.items()):
                if verdict.changes_mark:
                    assert verdict.quote is not None, "judge() gives every verdict its quote"
                    changes.append(MarkChange(metal, _when(time), verdict.quote.price, verdict))
    finally:
        scan.close()
    _store(cur, table, changes, decided_by="rule")
    return changes


class Judgement:
    """A file's rows judged in memory as they are parsed, the common first import: no stored
    row at or after its first time, and its chunks in time order. The rules then see exactly
    what assess_metal would read back (the same rows, the same history before them, judged in
    the same chunks), without reading a million rows back. `valid` turns false for a file
    that does not fit (stored rows follow it, or its times go back): assess_metal then."""

    def __init__(self, cur, metal: str, first: datetime):
        self.metal = metal
        self.table = historic_sql(metal)
        cur.execute(f'SELECT EXISTS (SELECT 1 FROM {self.table} WHERE "timestamp" >= %s)', (first,))
        self.valid = not cur.fetchone()[0]
        self.state = quality.resume(_history(cur, self.table, first)) if self.valid else None
        self.last = float("-inf")
        self.waiting: tuple[list, list, list] = ([], [], [])  # judged by CHUNK_ROWS
        self.changes: list[MarkChange] = []

    def add(self, times: list[float], prices: list[float], asks: list[float | None]) -> None:
        """Rows as loaded (epoch seconds, strictly increasing): stored `ok` by the rule."""
        if not self.valid or not times:
            return
        if times[0] <= self.last:
            self.valid, self.waiting, self.changes = False, ([], [], []), []
            return
        self.last = times[-1]
        waiting_times, waiting_prices, waiting_asks = self.waiting
        waiting_times.extend(times)
        waiting_prices.extend(prices)
        waiting_asks.extend(asks)
        while len(self.waiting[0]) >= CHUNK_ROWS:
            self._judge([column[:CHUNK_ROWS] for column in self.waiting])
            for column in self.waiting:
                del column[:CHUNK_ROWS]

    def _judge(self, columns: list[list]) -> None:
        times, prices, asks = columns
        verdicts, self.state = quality.judge_series(times, prices, asks, self.state)
        for time, verdict in sorted(verdicts.items()):
            if verdict.changes_mark:
                assert verdict.quote is not None, "judge_series gives every verdict its quote"
                self.changes.append(
                    MarkChange(self.metal, _when(time), verdict.quote.price, verdict)
                )

    def store(self, cur) -> list[MarkChange]:
        """Judge what waits and store the marks that changed (the rows are in the table)."""
        if self.waiting[0]:
            self._judge(list(self.waiting))
            self.waiting = ([], [], [])
        _store(cur, self.table, self.changes, decided_by="rule")
        return self.changes


def _history(cur, table: str, since: datetime) -> list[quality.Quote]:
    """The judged rows just before `since` (oldest first): the last good price, the volatility."""
    return _fetch(
        cur,
        f'SELECT {_COLUMNS} FROM {table} WHERE "timestamp" < %s ORDER BY "timestamp" DESC LIMIT %s',
        (since, HISTORY_ROWS),
    )[::-1]


def _store(cur, table: str, changes: list[MarkChange], *, decided_by: str) -> None:
    for change in changes:
        verdict = change.verdict
        cur.execute(
            f"UPDATE {table} SET quality = %s, quality_decision = %s, quality_reason = %s "
            'WHERE "timestamp" = %s',
            (verdict.mark, verdict.decision, verdict.reason, change.time),
        )
        cur.execute(
            """INSERT INTO quality_events
                   (metal, "timestamp", price, quality, decision, reason, decided_by)
               VALUES (%s, %s, %s, %s, %s, %s, %s)""",
            (
                change.metal,
                change.time,
                change.price,
                verdict.mark,
                verdict.decision,
                verdict.reason,
                decided_by,
            ),
        )


def decide(cur, metal: str, time: datetime, accept: bool) -> tuple[MarkChange, list[MarkChange]]:
    """A person's decision on one row, then the rows after it judged again in its light.
    Raises LookupError when there is no such row."""
    table = historic_sql(metal)
    cur.execute(f'SELECT {_COLUMNS} FROM {table} WHERE "timestamp" = %s FOR UPDATE', (time,))
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"no {metal} row at {time:%Y-%m-%d %H:%M:%S} UTC")
    quote = quality.Quote(*row)
    if accept and quote.mark == quality.OK:
        # Nothing to accept: recording "accepted (was ok)" would claim a review that changed
        # nothing.
        state = "was never flagged" if quote.decision == "rule" else f"is {quote.decision}"
        raise LookupError(
            f"the {metal} quote at {time:%Y-%m-%d %H:%M} UTC is ok and {state}; nothing to "
            "accept (`python main.py quality` lists the flagged ones)"
        )
    was = f"was {quote.mark}" + (f": {quote.reason}" if quote.reason else "")
    verdict = quality.Verdict(
        quality.OK if accept else quality.REJECTED,
        quality.ACCEPTED if accept else quality.PERSON_REJECTED,
        f"by a person ({was})",
    )
    change = MarkChange(metal, time, quote.price, verdict)
    _store(cur, table, [change], decided_by="person")
    return change, assess_metal(cur, metal, time)


def flagged(cur, metals: tuple[str, ...]) -> list[dict]:
    """Every row the rules or a person ever took a second look at: suspect and rejected ones,
    and those confirmed or accepted since; oldest first per metal."""
    return _marked(cur, metals, "quality_decision <> 'rule'")


def _marked(cur, metals: tuple[str, ...], condition: str) -> list[dict]:
    found = []
    for metal in metals:
        cur.execute(
            f'SELECT "timestamp", rate_price, quality, quality_decision, quality_reason '
            f'FROM {historic_sql(metal)} WHERE {condition} ORDER BY "timestamp"'
        )
        for time, price, mark, decision, reason in cur.fetchall():
            found.append(
                {
                    "metal": metal,
                    "time": time,
                    "price": price,
                    "quality": mark,
                    "decision": decision,
                    "reason": reason,
                }
            )
    return found
