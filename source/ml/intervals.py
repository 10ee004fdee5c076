"""80% price intervals (pure functions): conformal quantiles of volatility-scaled residuals.

A forecast's residual log return at horizon h, divided by the forecast standard deviation of
that return (source/ml/volatility.py: seasonal profile times a variance forecast), is close to
identically distributed even though volatility clusters and has a weekly shape. The 80%
quantile of its absolute value on a calibration window (the validation window, purged like the
point forecast) scales back into an interval around the point forecast.

The variance forecast combines candidates (a geometric mean): those whose interval score on the
calibration window is within 0.5% of the best one's at one step, within 3% at longer
horizons, where one window ranks candidates for several hours ahead less sharply than for the
next one. A combination is hurt less by a wrong ranking than a single pick.

When the regime changes (volatility rising beyond anything the calibration window held), every
variance forecast lags and misses bunch. Adaptive conformal inference (Gibbs and Candes, 2021)
answers that: the quantile's level moves up a little after every miss and down after every
cover, using only outcomes already known, so coverage comes back to 80% without refitting.
At one step the rate itself is learnt: several experts adapt at rates from half to sixteen
times the base one and the level is their mix, weighted by how well each has tracked the
recent outcomes (DtACI, Gibbs and Candes 2024): a regime shift is followed by the fast
experts, a calm spell by the slow ones.
Beyond one step the outcomes are few and slow (24-day moves: about one a month), too few to
rank rates by or to follow a regime both ways; there the level only widens the interval: it
rises after misses, falls back after covers, and never below 80%. An "80%" interval that holds
74% misleads; one that holds 82% for a while only errs on the side it says.
Trained hourly, the live interval starts from the level reached at the newest known outcome;
the walk-forward carries it on through each test fold the same way. The naive interval
(constant empirical quantiles of past h-step returns around the last price) is the floor every
model must beat; the classical peers (RiskMetrics, GARCH, HAR-RV) are compared in
benchmarks/intervals.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

LEVEL = 0.8
ALPHA = 1 - LEVEL  # Gneiting-Raftery's alpha for a central 80% interval
# Candidates combined: those whose calibration interval score is within this share of the
# best one's: tight at one step, looser beyond, where one window ranks them less sharply.
TOLERANCE = {1: 0.005, "longer": 0.03}
# Adaptive conformal inference: each known outcome moves the level by gamma x (miss - ALPHA),
# gamma = 1 / (ADAPT_DAYS x rows a day x sqrt(h)): a memory of about 200 trading days at one
# step, at any frequency. At horizon h consecutive outcomes overlap (h of them share each
# move) and arrive h rows late: a rate h times slower would count each move once, but then a
# 24-day horizon would take years to react; sqrt(h) is the middle way, and the floor at 80%
# (level_floor) keeps the noise of so few moves from narrowing the interval.
ADAPT_DAYS = 200
ROWS_PER_DAY = {"hourly": 24, "daily": 1, "none": 1}
LEVEL_RANGE = (0.5, 0.995)  # the adapted level is read within these bounds
# One-step experts (DtACI): their rates as multiples of the base rate, and the window of recent
# outcomes their weights are meant to track, which sets the weights' learning rate and mixing
# (sigma = 1/(2I), eta from Gibbs and Candes 2024 for K experts and an interval of I outcomes).
EXPERT_RATES = (0.5, 1, 2, 4, 8, 16)
EXPERT_WINDOW = 100
_MIXING = 1 / (2 * EXPERT_WINDOW)
_WEIGHT_RATE = math.sqrt(3 / EXPERT_WINDOW) * math.sqrt(
    (math.log(len(EXPERT_RATES) * EXPERT_WINDOW) + 2)
    / ((1 - ALPHA) ** 2 * ALPHA**3 + ALPHA**2 * (1 - ALPHA) ** 3)
)


def adaptation_rate(frequency: str, horizon: int) -> float:
    return 1.0 / (ADAPT_DAYS * ROWS_PER_DAY[frequency] * np.sqrt(horizon))


def level_floor(horizon: int) -> float:
    """The lowest level adaptation may reach: two-sided at one step, only widening beyond."""
    return LEVEL_RANGE[0] if horizon == 1 else LEVEL


def interval_score(lower, upper, actual, alpha: float = ALPHA) -> np.ndarray:
    """Gneiting-Raftery interval score per point, in the units of the values (lower is better)."""
    lower, upper, actual = map(np.asarray, (lower, upper, actual))
    return (
        (upper - lower)
        + (2 / alpha) * (lower - actual) * (actual < lower)
        + (2 / alpha) * (actual - upper) * (actual > upper)
    )


def coverage(lower, upper, actual) -> float:
    lower, upper, actual = map(np.asarray, (lower, upper, actual))
    return float(np.mean((actual >= lower) & (actual <= upper)))


@dataclass(frozen=True)
class IntervalModel:
    """One horizon's interval: the variance candidates combined, the calibration window's
    |scaled residuals| (sorted), and the level of their quantile reached at its end."""

    members: tuple[str, ...]
    reference: np.ndarray = field(compare=False, repr=False)
    level: float = LEVEL
    rate: float = 0.0  # the adaptation rate it was calibrated with, and carries on at
    floor: float = LEVEL_RANGE[0]  # the lowest level adaptation may reach
    # One step: each expert's (level, weight), whose weighted mean is `level`; () beyond one
    # step (or in a model saved before experts: they start from its level).
    experts: tuple[tuple[float, float], ...] = ()

    @property
    def quantile(self) -> float:
        """The |z| the live interval uses: the reference's quantile at the adapted level."""
        return quantile_at(self.reference, self.level)

    def variance(self, volatility, rows, horizon: int) -> np.ndarray:
        return combined_variance(volatility, self.members, rows, horizon)

    def bounds(self, predicted_return, variance, quantile=None):
        """(lower, upper) log-return bounds around the predicted return (at this model's
        quantile, or at per-origin ones from `adapt`)."""
        quantile = self.quantile if quantile is None else quantile
        half = quantile * np.sqrt(np.asarray(variance))
        return predicted_return - half, predicted_return + half

    def adapt(self, scores, positions, horizon: int) -> tuple[np.ndarray, IntervalModel]:
        """Carry the level on through new origins (in order): each origin's |z| threshold and
        the model as adapted once all their outcomes are known (see `adapt_levels` and, at
        one step, `adapt_experts`)."""
        if uses_experts(horizon, self.rate):
            # A model saved before experts, or with another number of them: start afresh.
            experts = self.experts
            if len(experts) != len(EXPERT_RATES):
                experts = start_experts(self.level)
            thresholds, experts = adapt_experts(
                self.reference, experts, scores, self.rate, self.floor
            )
            return thresholds, replace(self, level=mixed_level(experts), experts=experts)
        thresholds, level = adapt_levels(
            self.reference, self.level, scores, positions, horizon, self.rate, self.floor
        )
        return thresholds, replace(self, level=level)


def combined_variance(volatility, members, rows, horizon: int) -> np.ndarray:
    """Geometric mean of the members' variance forecasts at these origin rows."""
    logs = [np.log(volatility.variance(m, rows, horizon)) for m in members]
    return np.exp(np.mean(logs, axis=0))


def quantile_at(reference, level: float) -> float:
    """np.quantile of sorted values (linear interpolation), the level held in LEVEL_RANGE."""
    level = min(max(level, LEVEL_RANGE[0]), LEVEL_RANGE[1])
    place = level * (len(reference) - 1)
    below = int(place)
    above = min(below + 1, len(reference) - 1)
    return float(reference[below] + (place - below) * (reference[above] - reference[below]))


def adapt_levels(
    reference: np.ndarray,
    level: float,
    scores,
    positions,
    horizon: int,
    rate: float,
    floor: float = LEVEL_RANGE[0],
) -> tuple[np.ndarray, float]:
    """Adaptive conformal inference over origins in time order. scores: each origin's |scaled
    residual|, known `horizon` rows after its position. Returns the |z| threshold each origin
    gets (from the outcomes known by then: none of its own or later) and the level once all
    are known, where the next interval starts; the level never goes below `floor`."""
    if rate == 0:
        return np.full(len(scores), quantile_at(reference, level)), level
    # Plain Python numbers: one step per origin, sequential by nature, and numpy's scalars
    # would make it several times slower.
    sorted_reference, scores, positions = (
        np.asarray(a).tolist() for a in (reference, scores, positions)
    )
    thresholds, missed = [0.0] * len(scores), [False] * len(scores)
    known = 0  # outcomes applied to the level so far
    for k, position in enumerate(positions):
        while known < k and positions[known] + horizon <= position:
            level = max(level + rate * (missed[known] - ALPHA), floor)
            known += 1
        thresholds[k] = quantile_at(sorted_reference, level)
        missed[k] = scores[k] > thresholds[k]
    for m in missed[known:]:
        level = max(level + rate * (m - ALPHA), floor)
    return np.asarray(thresholds), level


def uses_experts(horizon: int, rate: float) -> bool:
    """Whether the level is learnt by experts (one step, adapting) or moves at one rate."""
    return horizon == 1 and rate > 0


def start_experts(level: float) -> tuple[tuple[float, float], ...]:
    """Every expert at `level`, with equal weights."""
    return tuple((level, 1 / len(EXPERT_RATES)) for _ in EXPERT_RATES)


def mixed_level(experts) -> float:
    """The level the interval uses: the experts' levels weighted by their weights."""
    return sum(level * weight for level, weight in experts) / sum(w for _, w in experts)


def levels_of(sorted_reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The level whose quantile_at is each score (its inverse): the lowest such level where
    the reference repeats a value, 0 or 1 beyond the reference, NaN for a NaN score."""
    values, first = np.unique(sorted_reference, return_index=True)
    places = first / max(len(sorted_reference) - 1, 1)
    return np.interp(scores, values, places, left=0.0, right=1.0)


def adapt_experts(
    reference: np.ndarray, experts, scores, rate: float, floor: float = LEVEL_RANGE[0]
) -> tuple[np.ndarray, tuple[tuple[float, float], ...]]:
    """One-step adaptive conformal inference with the rate learnt (DtACI, Gibbs and Candes
    2024), over origins in time order, each one's outcome known by the next: each expert
    moves its level as `adapt_levels` does, at its own multiple of `rate` (held within
    LEVEL_RANGE, where its threshold still moves, so a fast one cannot run off and take long
    to come back); after each outcome the experts' weights fall with their pinball loss on it
    (how far their level was from the one that outcome needed, a miss costing four times a
    cover's excess width), mixed with a little of the uniform weight so that no weight dies.
    An outcome that is not a number (no variance to scale it by) teaches nothing. Returns each
    origin's |z| threshold (at the weighted mean level, from the outcomes before it) and the
    experts once all are known."""
    reference = np.asarray(reference)
    if not len(scores):
        return np.empty(0), tuple(experts)
    needed = levels_of(reference, np.asarray(scores, dtype="float64"))
    known = np.isfinite(needed)
    # The experts' levels do not depend on the weights: each path is one plain recursion.
    levels_before = np.array(
        [
            _level_path(level, needed.tolist(), rate * multiple, floor)
            for (level, _), multiple in zip(experts, EXPERT_RATES, strict=True)
        ]
    )  # (experts, origins + 1): each one's level before each origin, then its last one
    gap = levels_before[:, :-1] - np.where(known, needed, 0.0)
    factors = np.exp(-_WEIGHT_RATE * (ALPHA * gap - np.minimum(gap, 0.0)))
    weights = [w for _, w in experts]
    weights_before = []  # (origins, experts)
    for column, learnt in zip(factors.T.tolist(), known.tolist(), strict=True):
        weights_before.append(weights)
        if learnt:
            raw = [w * f for w, f in zip(weights, column, strict=True)]
            scale = (1 - _MIXING) / sum(raw)
            weights = [r * scale + _MIXING / len(raw) for r in raw]
    shares = np.array(weights_before)
    mixed = np.sum(levels_before[:, :-1].T * shares, axis=1) / np.sum(shares, axis=1)
    # quantile_at for every origin at once (the same linear interpolation).
    places = np.clip(mixed, *LEVEL_RANGE) * (len(reference) - 1)
    thresholds = np.interp(places, np.arange(len(reference)), reference)
    return thresholds, tuple(zip(levels_before[:, -1].tolist(), weights, strict=True))


def _level_path(level: float, needed: list[float], rate: float, floor: float) -> list[float]:
    """One expert's level before each outcome and after the last (plain Python numbers:
    sequential by nature, and numpy's scalars would make it several times slower). A NaN
    outcome leaves it where it is."""
    up, down, top = rate * (1 - ALPHA), rate * ALPHA, LEVEL_RANGE[1]
    path = [level]
    for need in needed:
        if need == need:  # not NaN
            level = level + up if need > level else level - down
            level = top if level > top else floor if level < floor else level
        path.append(level)
    return path


def calibrate(
    predicted: np.ndarray,
    actual: np.ndarray,
    volatility,
    rows: np.ndarray,
    horizon: int,
    prices,
    rate: float = 0.0,
    floor: float = LEVEL_RANGE[0],
) -> IntervalModel:
    """Rank the variance candidates by interval score on these rows (origins in the whole
    series' numbering, in order), combine the best, and keep their |scaled residuals|, whose
    80% quantile (adapted through the window at `rate`) scales the interval."""
    residuals = actual - predicted
    actual_prices = prices * np.exp(actual)
    scored = []
    for name in volatility.candidates:
        variance = volatility.variance(name, rows, horizon)
        if not np.all(np.isfinite(variance)) or np.any(variance <= 0):
            continue
        half = np.quantile(np.abs(residuals) / np.sqrt(variance), LEVEL) * np.sqrt(variance)
        lower, upper = prices * np.exp(predicted - half), prices * np.exp(predicted + half)
        score = float(np.mean(interval_score(lower, upper, actual_prices)))
        scored.append((score, name))
    scored.sort()
    tolerance = TOLERANCE[1] if horizon == 1 else TOLERANCE["longer"]
    members = [name for score, name in scored if score <= scored[0][0] * (1 + tolerance)]
    scores = np.abs(residuals) / np.sqrt(combined_variance(volatility, members, rows, horizon))
    reference = np.sort(scores)
    start = IntervalModel(tuple(members), reference, LEVEL, rate, floor)
    return start.adapt(scores, rows, horizon)[1]


def naive_bounds(past_returns: np.ndarray) -> tuple[float, float]:
    """Constant empirical 10%/90% quantiles of all past h-step log returns."""
    low, high = np.quantile(past_returns, (ALPHA / 2, 1 - ALPHA / 2))
    return float(low), float(high)


def interval_metrics(actual, lower, upper, naive_lower, naive_upper, horizon: int = 1) -> dict:
    score = float(np.mean(interval_score(lower, upper, actual)))
    naive = float(np.mean(interval_score(naive_lower, naive_upper, actual)))
    misses = (np.asarray(actual) < np.asarray(lower)) | (np.asarray(actual) > np.asarray(upper))
    return {
        "interval_coverage": coverage(lower, upper, actual),
        "interval_score": score,
        "naive_interval_score": naive,
        "interval_score_ratio": score / naive if naive > 0 else None,
        # Calibration tests: the share of misses (Kupiec), and whether misses cluster
        # (Christoffersen); both on non-overlapping origins (every h-th one): the tests assume
        # independent outcomes, which overlapping h-row moves are not.
        "kupiec_p": kupiec_pvalue(misses[::horizon]),
        "christoffersen_p": christoffersen_pvalue(misses[::horizon]),
    }


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * np.log(y)


def kupiec_pvalue(misses: np.ndarray, level: float = LEVEL) -> float | None:
    """Kupiec's proportion-of-failures test: is the share of actual values outside the
    interval the 1 - level it should be? (likelihood ratio, chi-squared with 1 degree)"""
    from scipy.stats import chi2

    misses = np.asarray(misses, dtype=bool)
    n, x = len(misses), int(misses.sum())
    if n == 0:
        return None
    p, observed = 1 - level, x / n
    ratio = -2 * (
        _xlogy(n - x, 1 - p) + _xlogy(x, p) - _xlogy(n - x, 1 - observed) - _xlogy(x, observed)
    )
    return float(chi2.sf(max(ratio, 0.0), 1))


def christoffersen_pvalue(misses: np.ndarray) -> float | None:
    """Christoffersen's independence test: does a miss make the next miss likelier (misses
    that cluster)? Pass non-overlapping origins for horizons above one step."""
    from scipy.stats import chi2

    hits = np.asarray(misses, dtype=int)
    if len(hits) < 3:
        return None
    before, after = hits[:-1], hits[1:]
    n00 = int(np.sum((before == 0) & (after == 0)))
    n01 = int(np.sum((before == 0) & (after == 1)))
    n10 = int(np.sum((before == 1) & (after == 0)))
    n11 = int(np.sum((before == 1) & (after == 1)))
    if (n00 + n01) == 0 or (n10 + n11) == 0:
        return None
    pi01, pi11 = n01 / (n00 + n01), n11 / (n10 + n11)
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    unrestricted = (
        _xlogy(n00, 1 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1 - pi11) + _xlogy(n11, pi11)
    )
    restricted = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    return float(chi2.sf(max(-2 * (restricted - unrestricted), 0.0), 1))
