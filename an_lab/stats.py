"""Statistics of results over seeds, in one place: every interval, difference and mark that an-lab prints comes from
here, computed with scipy.stats (no hand-written distributions). Torch-free; used by the tables and figures
(an_lab.analysis) and by adaptive seeding (an_lab.sweeps), so it sits at the bottom of the layers with the ledger.

    estimate([21.5, 21.7, 21.6])               # n, mean, std (ddof=1), 95% CI of the mean (Student t)
    compare({0: 21.5, 1: 21.7}, {0: 23.0, 1: 23.2})
        # paired by seed when the cells share >= 2 seeds, else Welch; the CI of the difference, and
        # P(better): the probability that a run of the cell beats a run of the baseline (Mann-Whitney U / (n m))

method="bootstrap" takes scipy's BCa bootstrap instead of the t interval, with a fixed random state so that a table
is the same every time it is printed. Below BOOTSTRAP_MIN_N values it falls back to t (`method` of the result says
which was used): with 2 or 3 values the bootstrap's resamples can only reproduce the range of the data, and BCa
intervals undercover badly at such n (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 14; Carpenter &
Bithell, Stat. Med. 19, 2000: at least 10-20 observations).

What the intervals never claim:
- a difference is marked significant only from at least MIN_MARK_N seeds a side (`min_n`), and never on a
  zero-width interval (no spread measured is no evidence of none);
- an interval is never narrower than the metric's resolution allows (`resolution`: top-1 error on V validation
  images moves in steps of 100 / V points, so no interval is narrower than one step: half a step either side);
- an interval stays inside the metric's range (`bounds`: [0, 100] for errors and APs, [-100, 100] for differences),
  clipped where the t interval would leave it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
METHODS = ("t", "bootstrap")
MIN_MARK_N = 3  # seeds a side below which no difference is marked significant and no best cell is decided
BOOTSTRAP_MIN_N = 8  # values below which method="bootstrap" gives the t interval (see the module's docstring)
BOOTSTRAP_RESAMPLES = 9_999
BOOTSTRAP_SEED = 0  # tables are reproducible: the same resamples every time
NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A metric over the runs of one cell: n, mean, sample std (ddof=1) and the CI of the mean (NaN when n < 2)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    method: str = "t"  # the interval used: "t", or "bootstrap" from BOOTSTRAP_MIN_N values on

    @property
    def halfwidth(self) -> float:
        return (self.ci_high - self.ci_low) / 2


@dataclass(frozen=True)
class Comparison:
    """A cell against a baseline on one metric: diff = cell - baseline, with its CI and P(better)."""

    n: int  # seeds shared (paired), or the cell's runs (unpaired)
    n_baseline: int  # seeds shared (paired), or the baseline's runs (unpaired)
    paired: bool
    diff: float
    ci_low: float
    ci_high: float
    p_better: float  # P(a run of the cell beats a run of the baseline), ties counted half
    method: str = "t"
    min_n: int = MIN_MARK_N

    @property
    def halfwidth(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    @property
    def significant(self) -> bool:
        """The CI of the difference excludes 0, from at least min_n runs a side and an interval of some width."""
        finite = math.isfinite(self.ci_low) and math.isfinite(self.ci_high)
        enough = min(self.n, self.n_baseline) >= self.min_n and self.ci_high > self.ci_low
        return finite and enough and (self.ci_low > 0 or self.ci_high < 0)


def finite_list(values: Iterable[float]) -> list[float]:
    """The values that are numbers and finite (None, NaN and infinities left out), as floats."""
    return [value for value in (float(v) for v in values if v is not None) if math.isfinite(value)]


def _finite_array(values: Iterable[float]) -> np.ndarray:
    return np.array(finite_list(values), dtype=float)


def _point(values: Sequence[float]) -> Estimate:
    """estimate() of fewer than two finite values: no spread, no interval (the mean of one value is that value)."""
    return Estimate(1, float(values[0]), NAN, NAN, NAN) if len(values) else Estimate(0, NAN, NAN, NAN, NAN)


def _check(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not known; choose one of {', '.join(METHODS)}")


@functools.lru_cache(maxsize=4096)
def t_quantile(confidence: float, dof: float) -> float:
    """The two-sided Student t quantile: scipy's inverse t distribution function (what scipy.stats.t.interval
    evaluates), cached, since a table of 10,000 runs asks for the same few degrees of freedom thousands of times."""
    from scipy.special import stdtrit

    return float(stdtrit(dof, (1 + confidence) / 2))


def _t_interval(center: float, scale: float, dof: float, confidence: float) -> tuple[float, float]:
    if scale == 0:
        return center, center  # every run gave the same value: no spread to be uncertain about
    half = t_quantile(confidence, dof) * scale
    return center - half, center + half


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, confidence: float) -> tuple[float, float]:
    from scipy import stats

    if all(np.ptp(sample) == 0 for sample in samples):  # BCa is undefined without spread; the interval is a point
        value = float(statistic(*samples, axis=-1))
        return value, value
    result = stats.bootstrap(
        samples,
        statistic,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=confidence,
        method="BCa",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(sample, axis=axis)


def _mean_difference(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(first, axis=axis) - np.mean(second, axis=axis)


def _honest(center: float, low: float, high: float, resolution, bounds) -> tuple[float, float]:
    """The interval widened to the metric's resolution (half a step either side at least) and clipped to its range."""
    if resolution is not None and resolution > 0:
        low, high = min(low, center - resolution / 2), max(high, center + resolution / 2)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def estimate(
    values: Iterable[float],
    *,
    method: str = "t",
    confidence: float = CONFIDENCE,
    resolution: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> Estimate:
    """n, mean, std (ddof=1) and the CI of the mean of the finite values (NaN where n is too small); the interval
    no narrower than `resolution` and inside `bounds` (see the module)."""
    _check(method)
    sample = _finite_array(values)
    n = len(sample)
    if n < 2:
        return _point(sample)
    mean = float(sample.mean())
    std = float(sample.std(ddof=1))
    used = method if n >= BOOTSTRAP_MIN_N else "t"
    if used == "t":
        low, high = _t_interval(mean, std / math.sqrt(n), n - 1, confidence)
    else:
        low, high = _bootstrap((sample,), _mean, confidence)
    return Estimate(n, mean, std, *_honest(mean, low, high, resolution, bounds), used)


def probability_better(cell: Iterable[float], baseline: Iterable[float], *, lower_is_better: bool = True) -> float:
    """P(a run of the cell beats a run of the baseline), ties counted half: Mann-Whitney U / (n m)."""
    a, b = finite_list(cell), finite_list(baseline)
    if not a or not b:
        return NAN
    # The Mann-Whitney U of the cell (scipy.stats.mannwhitneyu's statistic, counted directly: the test's p-value is
    # not needed, and counting is 1,000 times faster for a table of many cells): pairs it wins, ties counted half.
    # A cell has a few seeds: counted in Python, with no array to build (the batched rows: _better_rows).
    wins = sum((x < y) if lower_is_better else (x > y) for x in a for y in b)
    ties = sum(x == y for x in a for y in b)
    return (wins + 0.5 * ties) / (len(a) * len(b))


def compare(
    cell: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    lower_is_better: bool = True,
    method: str = "t",
    confidence: float = CONFIDENCE,
    min_n: int = MIN_MARK_N,
    resolution: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> Comparison:
    """The cell against the baseline, both given as seed -> value: the mean difference paired by seed over the
    seeds both have (when there are at least 2), else the unpaired (Welch) difference of the means. `bounds` are the
    metric's (the difference is kept within their span either way); min_n, resolution: see the module."""
    _check(method)
    span = (bounds[0] - bounds[1], bounds[1] - bounds[0]) if bounds is not None else None
    result = _compare(cell, baseline, lower_is_better, method, confidence)
    if not math.isfinite(result.ci_low):
        return dataclasses.replace(result, min_n=min_n)
    low, high = _honest(result.diff, result.ci_low, result.ci_high, resolution, span)
    return dataclasses.replace(result, ci_low=low, ci_high=high, min_n=min_n)


def _compare(cell, baseline, lower_is_better: bool, method: str, confidence: float) -> Comparison:
    cell = {seed: float(v) for seed, v in cell.items() if v is not None and math.isfinite(float(v))}
    baseline = {seed: float(v) for seed, v in baseline.items() if v is not None and math.isfinite(float(v))}
    p_better = probability_better(cell.values(), baseline.values(), lower_is_better=lower_is_better)
    shared = sorted(set(cell) & set(baseline))
    if len(shared) >= 2:
        differences = estimate([cell[seed] - baseline[seed] for seed in shared], method=method, confidence=confidence)
        low, high = differences.ci_low, differences.ci_high
        return Comparison(len(shared), len(shared), True, differences.mean, low, high, p_better, differences.method)
    a, b = _finite_array(cell.values()), _finite_array(baseline.values())
    if len(a) == 0 or len(b) == 0:
        return Comparison(len(a), len(b), False, NAN, NAN, NAN, p_better)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(len(a), len(b), False, diff, NAN, NAN, p_better)
    if method == "bootstrap" and min(len(a), len(b)) >= BOOTSTRAP_MIN_N:
        low, high = _bootstrap((a, b), _mean_difference, confidence)
        return Comparison(len(a), len(b), False, diff, low, high, p_better, "bootstrap")
    else:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        scale = math.sqrt(va + vb)
        # Welch-Satterthwaite degrees of freedom (what scipy.stats.ttest_ind(equal_var=False) uses).
        dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if scale > 0 else 1.0
        low, high = _t_interval(diff, scale, dof, confidence)
    return Comparison(len(a), len(b), False, diff, low, high, p_better)


# ---------------------------------------------------------------------------------------------------------------------
# Many cells at once: the same figures as estimate() and compare() one cell at a time, computed per group of cells
# with the same number of values as rows of one array (a table of 10,000 cells makes a few numpy calls, not 40,000).
# numpy reduces each row of a C-ordered array as it reduces that row alone, so every figure is the same float.


def estimate_many(
    samples: Sequence[Iterable[float]],
    *,
    method: str = "t",
    confidence: float = CONFIDENCE,
    resolutions: Sequence[float | None] | None = None,
    bounds: tuple[float, float] | None = None,
) -> list[Estimate]:
    """[estimate(sample, resolution=...) for each sample], the t intervals computed for many samples at once."""
    _check(method)
    steps = list(resolutions) if resolutions is not None else [None] * len(samples)
    arrays = [finite_list(values) for values in samples]
    found: list[Estimate | None] = [None] * len(arrays)
    groups: dict[int, list[int]] = {}
    for position, array in enumerate(arrays):
        if len(array) < 2:  # no interval: no array needed either
            found[position] = _point(array)
        elif method != "t" and len(array) >= BOOTSTRAP_MIN_N:
            found[position] = estimate(
                array, method=method, confidence=confidence, resolution=steps[position], bounds=bounds
            )
        else:
            groups.setdefault(len(array), []).append(position)
    for n, positions in groups.items():
        rows = np.array([arrays[position] for position in positions], dtype=float)
        means, lows, highs, stds = _t_rows(rows, confidence)
        steps_here = [steps[position] for position in positions]
        lows, highs = _honest_rows(means, lows, highs, steps_here, bounds)
        for row, position in enumerate(positions):
            found[position] = Estimate(n, float(means[row]), float(stds[row]), float(lows[row]), float(highs[row]))
    return found  # type: ignore[return-value]


def _t_rows(rows: np.ndarray, confidence: float) -> tuple[np.ndarray, ...]:
    """(means, CI lows, CI highs, stds) of each row of values, as _t_interval gives them one sample at a time."""
    n = rows.shape[1]
    means, stds = rows.mean(axis=1), rows.std(axis=1, ddof=1)
    scales = stds / math.sqrt(n)
    halves = t_quantile(confidence, n - 1) * scales
    lows = np.where(scales == 0, means, means - halves)
    highs = np.where(scales == 0, means, means + halves)
    return means, lows, highs, stds


def _honest_rows(centers, lows, highs, resolutions: Sequence[float | None], bounds) -> tuple[np.ndarray, np.ndarray]:
    """_honest() of many intervals: each widened to its resolution (None: none) and clipped to the bounds."""
    steps = np.array([step if step is not None and step > 0 else np.nan for step in resolutions], dtype=float)
    widened = ~np.isnan(steps)
    lows = np.where(widened, np.minimum(lows, centers - steps / 2), lows)
    highs = np.where(widened, np.maximum(highs, centers + steps / 2), highs)
    if bounds is not None:
        lows, highs = np.maximum(lows, bounds[0]), np.minimum(highs, bounds[1])
    return lows, highs


def compare_many(
    cells: Sequence[Mapping],
    baseline: Mapping,
    *,
    lower_is_better: bool = True,
    method: str = "t",
    confidence: float = CONFIDENCE,
    min_n: int = MIN_MARK_N,
    resolutions: Sequence[float | None] | None = None,
    bounds: tuple[float, float] | None = None,
) -> list[Comparison]:
    """[compare(cell, baseline, resolution=...) for each cell]: the cells paired with the baseline on the same seeds
    (the usual case: every cell runs the sweep's seeds) compared at once, any other one by compare()."""
    _check(method)
    steps = list(resolutions) if resolutions is not None else [None] * len(cells)
    reference = {seed: float(v) for seed, v in baseline.items() if v is not None and math.isfinite(float(v))}
    found: list[Comparison | None] = [None] * len(cells)
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    reference_mean = float(np.asarray(list(reference.values()), dtype=float).mean()) if reference else NAN
    for position, cell in enumerate(cells):
        values = {seed: float(v) for seed, v in cell.items() if v is not None and math.isfinite(float(v))}
        shared = sorted(set(values) & set(reference))
        if len(shared) < 2 and (len(values) < 2 or len(reference) < 2):
            found[position] = _without_interval(
                list(values.values()), reference, reference_mean, lower_is_better, min_n
            )
        elif len(shared) < 2 or (method != "t" and len(shared) >= BOOTSTRAP_MIN_N):
            found[position] = compare(
                cell,
                baseline,
                lower_is_better=lower_is_better,
                method=method,
                confidence=confidence,
                min_n=min_n,
                resolution=steps[position],
                bounds=bounds,
            )
        else:
            groups.setdefault((tuple(shared), len(values)), []).append((position, values))
    span = (bounds[0] - bounds[1], bounds[1] - bounds[0]) if bounds is not None else None
    others = np.array(list(reference.values()), dtype=float)
    for (shared, _), members in groups.items():
        rows = np.array([[values[seed] for seed in shared] for _, values in members], dtype=float)
        differences = rows - np.array([reference[seed] for seed in shared], dtype=float)
        means, raw_lows, raw_highs, _ = _t_rows(differences, confidence)
        steps_here = [steps[position] for position, _ in members]
        lows, highs = _honest_rows(means, raw_lows, raw_highs, steps_here, span)
        finite = np.isfinite(raw_lows)  # compare() leaves an interval that is not finite as it is
        lows, highs = np.where(finite, lows, raw_lows), np.where(finite, highs, raw_highs)
        every = np.array([list(values.values()) for _, values in members], dtype=float)
        better = _better_rows(every, others, lower_is_better)
        n = len(shared)
        for row, (position, _) in enumerate(members):
            figures = float(means[row]), float(lows[row]), float(highs[row]), float(better[row])
            found[position] = Comparison(n, n, True, *figures, "t", min_n)
    return found  # type: ignore[return-value]


def _without_interval(
    values: list[float], reference: dict, reference_mean: float, lower_is_better: bool, min_n: int
) -> Comparison:
    """compare() of a cell whose difference has no interval (fewer than 2 values on a side, too few seeds shared to
    pair): the same floats, without an array per cell (numpy calls per cell would cost a 10,000-cell table 0.4 s)."""
    others = list(reference.values())
    if not values or not others:
        return Comparison(len(values), len(others), False, NAN, NAN, NAN, NAN, min_n=min_n)
    p_better = probability_better(values, others, lower_is_better=lower_is_better)
    mean = values[0] if len(values) == 1 else float(np.asarray(values, dtype=float).mean())
    return Comparison(len(values), len(others), False, mean - reference_mean, NAN, NAN, p_better, min_n=min_n)


def _better_rows(rows: np.ndarray, baseline: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """probability_better() of each row of values against the baseline's values."""
    if rows.shape[1] == 0 or len(baseline) == 0:
        return np.full(len(rows), NAN)
    wins = (rows[:, :, None] < baseline) if lower_is_better else (rows[:, :, None] > baseline)
    ties = rows[:, :, None] == baseline
    return (wins.sum(axis=(1, 2)) + 0.5 * ties.sum(axis=(1, 2))) / (rows.shape[1] * len(baseline))


def seeds_needed(halfwidth_now: float, n_now: int, target: float, *, confidence: float = CONFIDENCE) -> int:
    """How many paired seeds would bring a CI half-width of `halfwidth_now` (from n_now seeds) down to `target`,
    assuming the spread stays as measured: n such that t(n-1) * s / sqrt(n) <= target. At least n_now + 1 while
    the target is not met; n_now when it is."""
    if n_now < 2 or not math.isfinite(halfwidth_now):
        return max(2, n_now + 1)
    if halfwidth_now <= target:
        return n_now
    spread = halfwidth_now * math.sqrt(n_now) / t_quantile(confidence, n_now - 1)
    n = n_now + 1
    while t_quantile(confidence, n - 1) * spread / math.sqrt(n) > target and n < 10_000:
        n += 1
    return n
