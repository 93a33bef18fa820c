"""The population statistics are functions of the population, not of row order or of how the rows
are split: exact sums, scans continued from a carry, and saved populations against the batch."""

from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st

from engine.batch import population as pop

finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e300, max_value=1e300)
money = st.integers(-10**9, 10**9).map(lambda c: c / 100)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(finite, money), max_size=60), st.randoms(use_true_random=False))
def test_exact_sum_is_the_correctly_rounded_sum_whatever_the_order_or_split(values, rnd):
    x = np.array(values, dtype=float)
    exact = sum((Fraction(v) for v in values), Fraction(0))
    expected = float(exact) if values else 0.0
    total = pop.exact_sums(x)[0]
    assert pop.as_float(total) == expected
    rnd.shuffle(values)
    cut = rnd.randint(0, len(values))
    parts = [pop.exact_sums(np.array(values[:cut], dtype=float))[0],
             pop.exact_sums(np.array(values[cut:], dtype=float))[0]]
    assert pop.merge_sums(parts) == total
    if values:
        assert pop.as_float(total, len(values)) == float(exact / len(values))


def test_exact_sums_per_group_and_with_infinities():
    x = np.array([0.1, 0.2, np.nan, 1e308, 1e308, np.inf, 3.0])
    codes = np.array([0, 0, 0, 1, 1, 2, -1])
    sums = pop.exact_sums(x, codes, 3)
    assert pop.as_float(sums[0]) == 0.30000000000000004 and pop.as_float(sums[1]) == np.inf
    assert sums[2] == np.inf


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=30), st.data())
def test_segmented_cumsum_is_the_same_additions_both_ways(lengths, data):
    n = sum(lengths)
    w = np.array(data.draw(st.lists(finite, min_size=n, max_size=n)))
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    init = np.array(data.draw(st.lists(money, min_size=len(lengths), max_size=len(lengths))))
    got = pop.segmented_cumsum(w, starts, init)
    for s, ln, i0 in zip(starts, lengths, init):
        expected = [i0]
        for v in w[s:s + ln]:
            expected.append(expected[-1] + v)
        assert got[s:s + ln].tolist() == expected[1:]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 5), money), min_size=1, max_size=80),
       st.integers(1, 5))
def test_scans_of_consecutive_ranges_equal_one_scan(rows, pieces):
    codes = np.array([r[0] for r in rows])
    keys = np.array([float(r[1]) for r in rows])
    weights = np.array([r[2] for r in rows])
    tiebreak = np.arange(len(rows))[::-1].copy()
    whole = pop.scan(codes, [keys], tiebreak, weights)
    # cut the sorted rows into ranges that never split a tie block, scan them one after the other
    sc, sk = whole.codes, keys[whole.order]
    boundaries = [i for i in range(1, sc.size) if (sc[i], sk[i]) != (sc[i - 1], sk[i - 1])]
    cuts = sorted(set(boundaries[:: max(1, len(boundaries) // pieces)])) if boundaries else []
    carry = pop.Carry()
    got = {f: [] for f in ("position", "block_start", "block_size", "fold_before")}
    for lo, hi in zip([0] + cuts, cuts + [sc.size]):
        part = whole.order[lo:hi]
        s = pop.scan(codes[part], [keys[part]], tiebreak[part], weights[part], carry)
        carry = s.carry
        for f in got:
            got[f] += getattr(s, f).tolist()
    for f in got:
        assert got[f] == getattr(whole, f).tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(money, st.sampled_from([0.0, 1.5, -2.25, np.nan])), min_size=1, max_size=50))
def test_a_saved_population_gives_its_members_the_batch_values(values):
    x = np.array(values, dtype=float)
    codes = np.zeros(x.size, dtype=np.int64)
    keys = np.array([f"{i:03d}" for i in range(x.size)], dtype=object)
    present = ~np.isnan(x)
    order = np.lexsort((keys[present].astype(str), x[present]))
    saved = pop.GroupPopulation(x[present][order], keys[present][order])
    tiebreak = np.arange(x.size)
    batch = {
        "pct_rank": pop.pct_rank_values(x, codes),
        "cumshare": pop.cumshare_values(x, codes),
        "rank": pop.rank_values(x, codes, tiebreak),
        "mean": pop.group_stat("mean", x, codes, 1),
        "sum": pop.group_stat("sum", x, codes, 1),
        "quantile": pop.group_stat("quantile", x, codes, 1, 0.3),
        "zscore": pop.group_stat("zscore", x, codes, 1),
    }
    for func, expected in batch.items():
        got = pop.evaluate_against(saved, func, x, keys, 0.3)
        assert np.array_equal(got[present], expected[present], equal_nan=True), func


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(money, st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e300, np.nan])), min_size=1, max_size=60),
       st.booleans())
def test_one_group_takes_a_shorter_way_to_the_same_numbers(values, grouped_out):
    """pct_rank and cumshare over one population (no `by=`) skip the general scan; bit for bit the
    same values (ties, missing values, zeros of either sign, a row outside every group)."""
    x = np.array(values, dtype=float)
    codes = np.zeros(x.size, dtype=np.int64)
    if grouped_out:
        codes[0] = -1  # a row whose group is missing
    with np.errstate(over="ignore", invalid="ignore"):
        for func in (pop.pct_rank_values, pop.cumshare_values):
            fast, general = func(x, codes), func(x, codes, general=True)
            assert fast.tobytes() == general.tobytes(), (func.__name__, fast, general)


def test_quantile_matches_numpy():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100):
        v = np.sort(rng.normal(size=n) * 1e4)
        for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.8, 1.0):
            assert pop.quantile_sorted(v, q) == np.quantile(v, q)
