"""Welch's t-test over seeds (metrics/seeds.py): the t distribution against printed tables, and
synthetic scores whose answer is known."""

from __future__ import annotations

import math
import random

import pytest

from elmo_pipeline.metrics.seeds import paired_t_test, regularized_incomplete_beta, t_two_sided_p, welch_t_test


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (12.7062, 1, 0.05),  # Student's t table: two-sided 5% critical values
        (4.302653, 2, 0.05),
        (2.776445, 4, 0.05),
        (2.228139, 10, 0.05),
        (9.924843, 2, 0.01),
        (3.169273, 10, 0.01),
        (1.959964, 1e7, 0.05),  # the normal's limit
        (0.0, 3, 1.0),
        (-2.776445, 4, 0.05),  # two-sided: the sign does not matter
    ],
)
def test_t_distribution_against_the_printed_tables(t, df, p):
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=1e-5)


def test_incomplete_beta_closed_forms_at_fractional_parameters():
    for x in (0.01, 0.3, 0.5, 0.77, 0.999):
        for a in (0.5, 1.7, 6.25):
            assert regularized_incomplete_beta(a, 1.0, x) == pytest.approx(x**a, rel=1e-10)  # I_x(a, 1) = x^a
            assert regularized_incomplete_beta(1.0, a, x) == pytest.approx(1 - (1 - x) ** a, rel=1e-10)
            assert regularized_incomplete_beta(a, 2.5, x) == pytest.approx(
                1 - regularized_incomplete_beta(2.5, a, 1 - x), abs=1e-12
            )
    # I_x(1/2, 1/2) = (2 / pi) asin(sqrt(x)): the arcsine law, on both branches of the fraction
    for x in (0.1, 0.5, 0.9):
        assert regularized_incomplete_beta(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)))
    with pytest.raises(ValueError, match="x must lie in"):
        regularized_incomplete_beta(1.0, 1.0, 1.5)


def test_welch_by_hand():
    a, b = [80.0, 82.0, 81.0], [59.0, 63.0, 61.0]  # variances 1 and 4, 3 seeds each
    result = welch_t_test(a, b)
    se2 = 1 / 3 + 4 / 3
    assert result["delta"] == pytest.approx(20.0)
    assert result["t"] == pytest.approx(20.0 / math.sqrt(se2))
    assert result["df"] == pytest.approx(se2**2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2))
    assert result["p_two_sided"] == pytest.approx(t_two_sided_p(result["t"], result["df"]))
    assert welch_t_test(b, a)["p_two_sided"] == pytest.approx(result["p_two_sided"])  # two-sided
    assert welch_t_test(b, a)["t"] == pytest.approx(-result["t"])


def test_welch_on_the_committed_cpu_1h_seeds():
    """The issue's figures (Welch over the 3 seeds of results/cpu_1h_2026-12-02), from the scores themselves."""
    snli = welch_t_test([57.78, 57.74, 60.02], [53.52, 52.96, 52.79])  # +ELMo vs baseline
    assert 2 < snli["df"] < 3 and snli["p_two_sided"] == pytest.approx(0.013, abs=0.001)
    ner = welch_t_test([87.47, 87.77, 87.95], [86.14, 87.60, 87.88])  # +ELMo vs the random control
    assert ner["p_two_sided"] == pytest.approx(0.44, abs=0.01)  # the bootstrap over examples said 0.010


def test_known_answers_on_synthetic_seed_scores():
    rng = random.Random(0)

    def arm(mean, std, seeds=3):
        return [rng.gauss(mean, std) for _ in range(seeds)]

    # no difference: the same distribution. Under the null, p is uniform: about 5% of tests fall below 0.05
    nulls = [welch_t_test(arm(50, 1), arm(50, 1))["p_two_sided"] for _ in range(2000)]
    rate = sum(p < 0.05 for p in nulls) / len(nulls)
    assert 0.02 < rate < 0.07  # Welch is slightly conservative at 3 seeds
    assert sum(p > 0.5 for p in nulls) / len(nulls) == pytest.approx(0.5, abs=0.05)
    # a large difference: 10 seed stds apart, significant at 5% every time (at 1% nearly always)
    large = [welch_t_test(arm(60, 1), arm(50, 1))["p_two_sided"] for _ in range(200)]
    assert max(large) < 0.05 and sum(p < 0.01 for p in large) / len(large) > 0.9
    # a difference within the seed noise: half a std apart, rarely significant with 3 seeds
    small = [welch_t_test(arm(50.5, 1), arm(50, 1))["p_two_sided"] for _ in range(500)]
    assert sum(p < 0.05 for p in small) / len(small) < 0.15


def test_degenerate_arms():
    assert welch_t_test([1.0, 1.0], [1.0, 1.0])["p_two_sided"] == 1.0
    assert welch_t_test([2.0, 2.0], [1.0, 1.0])["p_two_sided"] == 0.0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        welch_t_test([1.0], [1.0, 2.0])


def test_paired_t_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3), df 2; for df 2, P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    result = paired_t_test([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])
    t = 2 * math.sqrt(3)
    assert result["delta"] == pytest.approx(2.0) and result["df"] == 2 and result["n"] == 3
    assert result["t"] == pytest.approx(t)
    assert result["p_two_sided"] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert paired_t_test([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])["p_two_sided"] == pytest.approx(result["p_two_sided"])


def test_paired_t_is_sharper_than_welch_when_the_seeds_pair_up():
    """One model per seed decoded two ways: the seeds differ by far more than the decodings do."""
    plain = [30.0, 33.0, 36.0]
    fused = [30.4, 33.5, 36.3]  # +0.4 on every seed, within the 3-point seed spread
    assert welch_t_test(fused, plain)["p_two_sided"] > 0.8
    assert paired_t_test(fused, plain)["p_two_sided"] < 0.05


def test_paired_t_degenerate_and_refused():
    assert paired_t_test([1.0, 2.0], [1.0, 2.0])["p_two_sided"] == 1.0
    assert paired_t_test([2.0, 3.0], [1.0, 2.0])["p_two_sided"] == 0.0
    with pytest.raises(ValueError, match="pair up"):
        paired_t_test([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_t_test([1.0], [2.0])
