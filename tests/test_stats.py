"""an_lab.stats against scipy.stats called here directly, on a hand-built example with known answers: two cells 5
points apart with a seed-to-seed spread of 2 (3 seeds each) and two cells 0.1 apart. The intervals are Student t
(scipy.stats.t.interval), the paired difference ttest_rel's, the unpaired one Welch's (ttest_ind(equal_var=False)),
P(better) Mann-Whitney U / (n m), and the bootstrap intervals scipy.stats.bootstrap's with the same random state."""

import dataclasses
import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from an_lab.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    compare,
    compare_many,
    estimate,
    estimate_many,
    probability_better,
)

AN = {0: 20.0, 1: 22.0, 2: 24.0}  # mean 22, std 2
BN = {0: 25.5, 1: 26.5, 2: 29.0}  # 5 above AN, by seed 5.5, 4.5, 5.0
CLOSE = {0: 20.3, 1: 21.8, 2: 24.2}  # 0.1 above AN, by seed 0.3, -0.2, 0.2
OTHER_SEEDS = {3: 23.0, 4: 27.0, 5: 25.0}  # shares no seed with BN


def _array(cell: dict) -> np.ndarray:
    return np.array(list(cell.values()))


def test_estimate_is_n_mean_sample_std_and_the_t_interval():
    found = estimate(AN.values())
    low, high = stats.t.interval(0.95, 2, loc=22.0, scale=2.0 / math.sqrt(3))
    assert (found.n, found.mean, found.std) == (3, 22.0, 2.0)  # std with ddof=1: sqrt((4 + 0 + 4) / 2)
    assert (found.ci_low, found.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert (round(found.ci_low, 2), round(found.ci_high, 2)) == (17.03, 26.97)  # 22 ± 4.303 * 2 / sqrt(3)
    assert found.halfwidth == pytest.approx((high - low) / 2, rel=1e-12)


def test_one_run_has_a_mean_and_nothing_else():
    found = estimate([21.0])
    assert (found.n, found.mean) == (1, 21.0)
    assert [math.isnan(value) for value in (found.std, found.ci_low, found.ci_high)] == [True, True, True]
    empty = estimate([float("nan"), None])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_five_points_apart_paired_by_seed_is_significant():
    found = compare(AN, BN)
    expected = stats.ttest_rel(_array(AN), _array(BN)).confidence_interval()
    assert found.paired and (found.n, found.n_baseline) == (3, 3)
    assert found.diff == pytest.approx(-5.0, rel=1e-12)
    assert (found.ci_low, found.ci_high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert (round(found.ci_low, 2), round(found.ci_high, 2)) == (-6.24, -3.76)  # -5 ± 4.303 * 0.5 / sqrt(3)
    assert found.significant


def test_a_tenth_apart_is_not_significant():
    found = compare(CLOSE, AN)
    expected = stats.ttest_rel(_array(CLOSE), _array(AN)).confidence_interval()
    assert found.paired and found.diff == pytest.approx(0.1, rel=1e-9)
    assert (found.ci_low, found.ci_high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert found.ci_low < 0 < found.ci_high and not found.significant


def test_without_two_shared_seeds_the_difference_is_welchs():
    found = compare(OTHER_SEEDS, BN)
    expected = stats.ttest_ind(_array(OTHER_SEEDS), _array(BN), equal_var=False).confidence_interval()
    assert not found.paired and (found.n, found.n_baseline) == (3, 3)
    assert found.diff == pytest.approx(-2.0, rel=1e-12)
    assert (found.ci_low, found.ci_high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert not found.significant
    one_shared = compare({0: 20.0, 7: 21.0, 8: 22.0}, BN)  # one seed in common is not a pairing
    assert not one_shared.paired


def test_p_better_is_mann_whitney_u_over_n_m():
    # lower error is better: the cell wins the pairs in which the baseline's run is the larger one
    expected = stats.mannwhitneyu(_array(BN), _array(OTHER_SEEDS)).statistic / 9
    assert probability_better(OTHER_SEEDS.values(), BN.values()) == pytest.approx(expected) == pytest.approx(7 / 9)
    assert compare(OTHER_SEEDS, BN).p_better == pytest.approx(7 / 9)
    assert probability_better([1.0, 2.0], [2.0, 3.0]) == pytest.approx(3.5 / 4)  # the tie counts half
    assert probability_better(OTHER_SEEDS.values(), BN.values(), lower_is_better=False) == pytest.approx(2 / 9)
    assert compare(AN, BN).p_better == 1.0


def test_a_single_run_is_never_significant():
    paired = compare({0: 21.0}, BN)  # one shared seed, one run: no interval either way
    assert not paired.paired and paired.diff == pytest.approx(-6.0)
    assert math.isnan(paired.ci_low) and math.isnan(paired.ci_high) and not paired.significant
    assert paired.p_better == 1.0


# Eight seeds a cell: from BOOTSTRAP_MIN_N values on, the bootstrap is scipy's BCa.
AN8 = {seed: 20.0 + (seed * 7 % 5) * 0.8 for seed in range(8)}
CLOSE8 = {seed: value + (0.3, -0.2, 0.2, 0.1, -0.4, 0.5, 0.0, 0.25)[seed] for seed, value in AN8.items()}
OTHER8 = {seed + 10: 23.0 + (seed * 3 % 4) for seed in range(8)}


def test_bootstrap_is_reproducible_and_scipys_bca_from_eight_values():
    def scipy_bootstrap(samples, statistic):
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        found = stats.bootstrap(samples, statistic, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa", rng=rng)
        return found.confidence_interval.low, found.confidence_interval.high

    def difference(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    first = estimate(AN8.values(), method="bootstrap")
    assert estimate(AN8.values(), method="bootstrap") == first and first.method == "bootstrap"
    assert (first.ci_low, first.ci_high) == pytest.approx(scipy_bootstrap((_array(AN8),), np.mean), rel=1e-12)
    paired = compare(CLOSE8, AN8, method="bootstrap")
    by_seed = _array(CLOSE8) - _array(AN8)
    assert (paired.ci_low, paired.ci_high) == pytest.approx(scipy_bootstrap((by_seed,), np.mean), rel=1e-12)
    welch = compare(OTHER8, AN8, method="bootstrap")
    expected = scipy_bootstrap((_array(OTHER8), _array(AN8)), difference)
    assert (welch.ci_low, welch.ci_high) == pytest.approx(expected, rel=1e-12) and welch.method == "bootstrap"
    assert compare(OTHER8, AN8, method="bootstrap") == welch


def test_below_eight_values_the_bootstrap_gives_the_t_interval_and_says_so():
    """At n = 3 the BCa bootstrap returns about the range of the values (20 to 24 for AN) as a 95% interval."""
    small = estimate(AN.values(), method="bootstrap")
    assert small == estimate(AN.values()) and small.method == "t"
    assert compare(CLOSE, AN, method="bootstrap") == compare(CLOSE, AN)
    assert compare(OTHER_SEEDS, BN, method="bootstrap").method == "t"


def test_marks_need_three_seeds_a_side_and_an_interval_of_some_width():
    two = compare({0: 10.27778, 1: 10.27777}, {0: 10.0, 1: 10.0})  # one validation image each, two seeds
    assert two.ci_low > 0 and not two.significant  # excludes 0, but from 2 seeds
    flat = compare({0: 10.5, 1: 10.5, 2: 10.5}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert (flat.ci_low, flat.ci_high) == (0.5, 0.5) and not flat.significant  # no spread measured
    assert compare(BN, AN).significant and not compare(BN, AN, min_n=4).significant
    assert compare({0: 10.27778, 1: 10.27777}, {0: 10.0, 1: 10.0}, min_n=2).significant


def test_intervals_are_no_narrower_than_the_resolution_and_stay_in_the_range():
    step = 100 / 360  # top-1 error on 360 validation images
    flat = estimate([1.0, 1.0, 1.0], resolution=step)
    assert (flat.ci_low, flat.ci_high) == pytest.approx((1.0 - step / 2, 1.0 + step / 2))
    near_zero = estimate([0.0, 0.28, 1.94], bounds=(0.0, 100.0))
    assert near_zero.ci_low == 0.0 and near_zero.ci_high == pytest.approx(estimate([0.0, 0.28, 1.94]).ci_high)
    diff = compare({0: 99.0, 1: 99.5, 2: 100.0}, {0: 0.0, 1: 0.0, 2: 1.0}, bounds=(0.0, 100.0))
    assert diff.ci_low >= -100.0 and diff.ci_high <= 100.0
    assert compare(CLOSE, AN, resolution=step).halfwidth >= step / 2


def test_no_spread_gives_a_point_interval_and_unknown_methods_are_refused():
    flat = estimate([21.0, 21.0, 21.0])
    assert (flat.std, flat.ci_low, flat.ci_high) == (0.0, 21.0, 21.0)
    assert estimate([21.0, 21.0], method="bootstrap").ci_low == 21.0
    with pytest.raises(ValueError, match="method 'z' is not known"):
        estimate(AN.values(), method="z")


def _figures(found) -> list[str]:
    """Every field of each result, written out exactly (NaN equal to NaN)."""
    return [repr(dataclasses.astuple(item)) for item in found]


def _random_cells(rng: random.Random, count: int) -> list[dict]:
    """Cells as a table meets them: mostly the sweep's 5 seeds, some with fewer, one value or none, repeats, NaN, a
    cell without spread, seeds the baseline lacks, values far apart, intervals that the bounds clip."""
    cells = []
    for index in range(count):
        seeds = rng.choice([range(5), range(5), range(3), range(1), range(0), range(2, 9), range(10, 13)])
        value = rng.choice(
            [
                lambda: 20 + rng.random() * 3,
                lambda: 21.5,
                lambda: rng.choice([20.0, 20.5]),
                lambda: 1e6,
                lambda: rng.random() * 3,
            ]
        )
        cell = {seed: value() for seed in seeds}
        if index % 9 == 0 and cell:
            cell[next(iter(cell))] = float("nan")
        cells.append(cell)
    return cells


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_many_cells_at_once_give_the_figures_of_one_cell_at_a_time(method):
    """estimate_many and compare_many batch the cells that share a size; every figure must be the very float that
    estimate() and compare() give for that cell alone (with its own resolution, the bounds, min_n)."""
    rng = random.Random(7)
    cells = _random_cells(rng, 160)
    baseline = {seed: 21 + rng.random() for seed in range(9)}
    steps = [rng.choice([None, 0.5, 2.0, 0.0]) for _ in cells]
    bounds = (0.0, 100.0)
    alone = [
        estimate(cell.values(), method=method, resolution=step, bounds=bounds)
        for cell, step in zip(cells, steps, strict=True)
    ]
    assert _figures(
        estimate_many([cell.values() for cell in cells], method=method, resolutions=steps, bounds=bounds)
    ) == (_figures(alone))
    # the baseline of a sweep: 9 seeds; also 1 seed, 1 finite value of 2, none (no interval for any cell)
    baselines = [baseline, {0: 21.0}, {0: float("nan"), 3: 20.5}, {}, {4: None}]
    paired = []
    for reference, lower in itertools.product(baselines, (True, False)):
        one_by_one = [
            compare(cell, reference, lower_is_better=lower, method=method, min_n=4, resolution=step, bounds=bounds)
            for cell, step in zip(cells, steps, strict=True)
        ]
        batched = compare_many(
            cells, reference, lower_is_better=lower, method=method, min_n=4, resolutions=steps, bounds=bounds
        )
        assert _figures(batched) == _figures(one_by_one)
        assert [item.significant for item in batched] == [item.significant for item in one_by_one]
        paired.append(sum(item.paired for item in one_by_one))
    assert paired[0] > 60 and paired[2:] == [0] * (len(paired) - 2)  # the batched path for most cells, then none
