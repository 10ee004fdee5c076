"""Pure rules: is a quote plausible given the ones before it? A quote is judged against the last
good price of its metal (a jump too large for the metal's recent volatility over the time
between them, and larger than a floor), and against itself (bid above ask, price far outside
the day's low-high). Nothing is deleted: a doubtful quote is marked `suspect`, and the quotes
after it decide (the new level holds: it was real, `ok`; the price returns: it stays
`suspect`). Thresholds were chosen on real hourly gold and silver, 2007-2026 (docs/data-quality.md).

The state of a metal's judgement is rebuilt from stored marks, so judging new rows needs only
a window of rows before them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

OK, SUSPECT, REJECTED = "ok", "suspect", "rejected"
# How a mark came about (`quality_decision`):
RULE = "rule"  # ok by the rule at arrival
PENDING = "pending"  # suspect, waiting for the next quotes
CONFIRMED = "confirmed"  # was suspect, the level held: ok
CONTRADICTED = "contradicted"  # was suspect, the price returned: stays suspect, decided
INCONSISTENT = "inconsistent"  # suspect by itself (bid above ask, outside the day's range)
ACCEPTED = "accepted"  # a person said ok
PERSON_REJECTED = "rejected"  # a person said rejected
PERSON = (ACCEPTED, PERSON_REJECTED)

# Thresholds (docs/data-quality.md, "Bad ticks"): a jump must exceed both.
JUMP_SIGMAS = 10.0  # in units of the robust EWMA volatility, scaled by sqrt(hours between)
JUMP_FLOOR = 0.02  # and at least 2% (log return)
EWMA_DECAY = 0.97  # per quote, on returns per sqrt(hour)
CLIP_SIGMAS = 4.0  # a return counts at most this many sigmas in the EWMA (robustness)
PRIOR_VOLATILITY = 0.004  # per sqrt(hour), until WARMUP returns are seen
WARMUP = 24
CONFIRM_QUOTES = 2  # quotes after the first suspect that must hold the new level
DAY_RANGE_SLACK = 0.01  # a price this far outside the day's low-high is inconsistent
MIN_HOURS = 1.0  # the time between two quotes counts as at least this


@dataclass(slots=True)
class Quote:
    """What the rules look at; `mark`/`decision` are the stored ones (None: not judged)."""

    time: float  # epoch seconds
    price: float
    ask: float | None = None
    bid: float | None = None
    high: float | None = None
    low: float | None = None
    mark: str | None = None
    decision: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class Verdict:
    mark: str
    decision: str
    reason: str | None = None
    reference: float | None = None  # the last good price when it was judged
    quote: Quote | None = None  # the quote judged (its stored mark, to compare)

    @property
    def changes_mark(self) -> bool:
        """Differs from what is stored for the quote."""
        stored = self.quote
        if stored is None:
            return True
        return (self.mark, self.decision, self.reason) != (
            stored.mark,
            stored.decision,
            stored.reason,
        )


@dataclass
class State:
    """What a metal's judgement carries from one quote to the next."""

    last_ok: Quote | None = None
    variance: float = PRIOR_VOLATILITY**2
    returns_seen: int = 0
    pending: list[Quote] = field(default_factory=list)  # suspects awaiting the next quotes
    reasons: dict[float, str] = field(default_factory=dict)  # why each pending one is

    @property
    def volatility(self) -> float:
        return math.sqrt(self.variance) if self.returns_seen >= WARMUP else PRIOR_VOLATILITY

    def learn(self, quote: Quote, per_hour: float | None = None) -> None:
        """A good quote moves the last good price and the volatility (clipped: robust).
        `per_hour`: its log return per sqrt(hour) from the last good price, when known."""
        if self.last_ok is not None:
            if per_hour is None:
                hours = max((quote.time - self.last_ok.time) / 3600, MIN_HOURS)
                per_hour = math.log(quote.price / self.last_ok.price) / math.sqrt(hours)
            self.variance = next_variance(self.variance, self.returns_seen, per_hour)
            self.returns_seen += 1
        self.last_ok = quote


def next_variance(variance: float, returns_seen: int, per_hour: float) -> float:
    """The volatility's variance after one more good return (per sqrt(hour))."""
    if returns_seen < WARMUP:  # the prior holds until the warm-up is done
        return (variance * returns_seen + per_hour**2) / (returns_seen + 1)
    limit = CLIP_SIGMAS * math.sqrt(variance)
    clipped = limit if per_hour > limit else (-limit if per_hour < -limit else per_hour)
    return EWMA_DECAY * variance + (1 - EWMA_DECAY) * clipped * clipped


def _money(value: float) -> str:
    return f"{value:,.2f}"


def inconsistency(quote: Quote) -> str | None:
    """The quote contradicts itself, whatever came before."""
    if quote.ask is not None and quote.bid is not None and quote.bid > quote.ask:
        return f"bid {_money(quote.bid)} above ask {_money(quote.ask)}"
    if quote.high is not None and quote.low is not None and quote.high >= quote.low > 0:
        if quote.price > quote.high * (1 + DAY_RANGE_SLACK):
            return f"price above the day's high {_money(quote.high)}"
        if quote.price < quote.low * (1 - DAY_RANGE_SLACK):
            return f"price below the day's low {_money(quote.low)}"
    return None


def is_jump(move: float, volatility: float, root_hours: float) -> bool:
    """The rule: a log return `move` over `root_hours` (the square root of the hours it took) is
    a jump when it exceeds both JUMP_SIGMAS volatilities and JUMP_FLOOR. judge_series writes
    it out for speed; a test holds the two to the same verdicts."""
    size = abs(move)
    return size > JUMP_FLOOR and size > JUMP_SIGMAS * volatility * root_hours


def jump(state: State, quote: Quote) -> str | None:
    """The move from the last good price is implausible: a reason, else None."""
    previous = state.last_ok
    if previous is None:
        return None
    hours = max((quote.time - previous.time) / 3600, MIN_HOURS)
    root = math.sqrt(hours)
    move = math.log(quote.price / previous.price)
    if not is_jump(move, state.volatility, root):
        return None
    scale = state.volatility * root  # zero after quotes that never moved (a flat feed)
    size = f"{abs(move) / scale:.1f} sigma" if scale > 0 else "after a flat price"
    return (
        f"jump {size} ({math.expm1(move):+.1%}) from {_money(previous.price)} "
        f"in {_hours(hours)}"
    )


def _hours(hours: float) -> str:
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def _near(a: float, b: float, than: float) -> bool:
    """a is closer to b than to `than` (log scale)."""
    return abs(math.log(a / b)) < abs(math.log(a / than))


def judge(quotes: list[Quote], state: State | None = None) -> tuple[dict[float, Verdict], State]:
    """Judge quotes in time order; returns {time: verdict} for every quote whose mark is not
    already the stored one (earlier pending ones included), and the state after the last.
    Quotes a person decided keep their mark and steer the state. The common case, a quote
    in line with the last good one, takes the short path: a million quotes in about a second."""
    state = state or State()
    verdicts: dict[float, Verdict] = {}

    def verdict(quote: Quote, mark: str, decision: str, reason: str | None = None) -> Verdict:
        reference = state.last_ok.price if state.last_ok else None
        return Verdict(mark, decision, reason, reference, quote)

    log, sqrt = math.log, math.sqrt
    for quote in quotes:
        if quote.decision in PERSON:
            if quote.mark == OK:
                state.pending.clear()  # a person's ok settles what came before it
                state.reasons.clear()
                state.learn(quote)
            continue
        if quote.bid is not None or quote.high is not None:
            reason = inconsistency(quote)
            if reason:
                verdicts[quote.time] = verdict(quote, SUSPECT, INCONSISTENT, reason)
                continue
        previous = state.last_ok
        if not state.pending and previous is not None:  # the short path
            root = sqrt(max((quote.time - previous.time) / 3600, MIN_HOURS))
            move = log(quote.price / previous.price)
            if not is_jump(move, state.volatility, root):
                if quote.mark != OK or quote.decision != RULE or quote.reason is not None:
                    verdicts[quote.time] = verdict(quote, OK, RULE)
                state.learn(quote, move / root)
                continue
        _judge_slowly(quote, state, verdicts, verdict)
    return verdicts, state


def judge_series(
    times: list[float],
    prices: list[float],
    asks: list[float | None],
    state: State | None = None,
) -> tuple[dict[float, Verdict], State]:
    """judge() for new rows as a bulk load stores them (price and ask only, marked `ok` by the
    rule), given as plain lists in time order: the same verdicts and state, without a Quote
    per row. A row in line with the last good one (nearly all) costs a few float operations;
    the others go through judge()'s own slow path."""
    state = state or State()
    verdicts: dict[float, Verdict] = {}

    def verdict(quote: Quote, mark: str, decision: str, reason: str | None = None) -> Verdict:
        reference = state.last_ok.price if state.last_ok else None
        return Verdict(mark, decision, reason, reference, quote)

    log, sqrt = math.log, math.sqrt
    keep = 1 - EWMA_DECAY
    last = None  # the index of the last good row when the short path took it
    last_time = last_price = 0.0
    if state.last_ok is not None:
        last_time, last_price = state.last_ok.time, state.last_ok.price
    variance, seen = state.variance, state.returns_seen
    short = not state.pending and state.last_ok is not None
    # The short path is is_jump() and State.learn() written out (a function call per row
    # was half the time of a million-row import); the test that judge_series gives judge()'s
    # verdicts and state, bit for bit, holds the two to the same rule.
    for i, (time, price) in enumerate(zip(times, prices, strict=True)):
        if short:
            hours = (time - last_time) / 3600
            root = sqrt(MIN_HOURS) if hours < MIN_HOURS else sqrt(hours)  # max(), NaN alike
            move = log(price / last_price)
            warm = seen >= WARMUP
            volatility = sqrt(variance) if warm else PRIOR_VOLATILITY
            size = abs(move)
            if not (size > JUMP_FLOOR and size > JUMP_SIGMAS * volatility * root):
                per_hour = move / root
                if warm:  # next_variance after the warm-up: the clipped EWMA
                    limit = CLIP_SIGMAS * volatility
                    if per_hour > limit:
                        per_hour = limit
                    elif per_hour < -limit:
                        per_hour = -limit
                    variance = EWMA_DECAY * variance + keep * per_hour * per_hour
                else:
                    variance = next_variance(variance, seen, per_hour)
                seen += 1
                last, last_time, last_price = i, time, price
                continue
        if last is not None:  # the state as judge() would have it, then its slow path
            state.last_ok = Quote(times[last], prices[last], asks[last], mark=OK, decision=RULE)
            last = None
        state.variance, state.returns_seen = variance, seen
        quote = Quote(time, price, asks[i], mark=OK, decision=RULE)
        _judge_slowly(quote, state, verdicts, verdict)
        variance, seen = state.variance, state.returns_seen
        short = not state.pending and state.last_ok is not None
        if state.last_ok is not None:
            last_time, last_price = state.last_ok.time, state.last_ok.price
    if last is not None:
        state.last_ok = Quote(times[last], prices[last], asks[last], mark=OK, decision=RULE)
    state.variance, state.returns_seen = variance, seen
    return verdicts, state


def _judge_slowly(quote: Quote, state: State, verdicts: dict, verdict) -> None:
    """A quote that jumps, or comes while earlier ones wait for confirmation."""
    if state.pending:
        last_ok = state.last_ok
        assert last_ok is not None, "a quote waits only after a jump from a good one"
        level = state.pending[-1].price
        if _near(quote.price, level, last_ok.price):  # the new level holds so far
            state.reasons[quote.time] = jump(state, quote) or f"at the level of {_money(level)}"
            state.pending.append(quote)
            if len(state.pending) > CONFIRM_QUOTES:  # it held: it was real
                held = len(state.pending)
                for suspect in state.pending:
                    why = state.reasons.pop(suspect.time)
                    verdicts[suspect.time] = verdict(
                        suspect, OK, CONFIRMED, f"{why}; confirmed: {held} quotes held it"
                    )
                    state.learn(suspect)
                state.pending.clear()
            else:
                verdicts[quote.time] = verdict(quote, SUSPECT, PENDING, state.reasons[quote.time])
            return
        for suspect in state.pending:  # the price went back: they were wrong
            verdicts[suspect.time] = verdict(
                suspect,
                SUSPECT,
                CONTRADICTED,
                f"{state.reasons.pop(suspect.time)}; then {_money(quote.price)}, back near "
                f"{_money(last_ok.price)}",
            )
        state.pending.clear()
    reason = jump(state, quote)
    if reason is None:
        if quote.mark != OK or quote.decision != RULE or quote.reason is not None:
            verdicts[quote.time] = verdict(quote, OK, RULE)
        state.learn(quote)
        return
    state.reasons = {quote.time: reason}
    state.pending = [quote]
    verdicts[quote.time] = verdict(quote, SUSPECT, PENDING, reason)


def resume(history: Iterable[Quote]) -> State:
    """The state after already-judged quotes (time order), from their stored marks."""
    state = State()
    for quote in history:
        if quote.mark == OK:
            state.pending.clear()
            state.reasons.clear()
            state.learn(quote)
        elif quote.decision == PENDING:
            state.reasons[quote.time] = quote.reason or "jump"
            state.pending.append(quote)
    return state
