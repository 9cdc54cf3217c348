"""t-tests over training seeds: is one arm's mean score above another's, two-sided.

Each arm of the table is trained once per seed, and its score varies with the seed (initialisation,
data order, dropout). The question the table asks is whether +ELMo's mean over seeds beats the
other arm's by more than that variation explains. Welch's test answers it without assuming equal
variances (Welch 1947)::

    t  = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))   (Welch-Satterthwaite)
    p  = P(|T_df| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)

with ``s^2`` the sample variances and ``I_x(a, b)`` the regularized incomplete beta function. The p
is exact for the t distribution (no draws), and two-sided: it says whether the arms differ, in
either direction.

Where both arms are the *same* trained model per seed, decoded two ways (translation with and
without shallow fusion), the seeds pair up and the paired t-test is the sharper one:
``t = mean(d) / (s_d / sqrt(n))`` on the per-seed differences d, with n - 1 degrees of freedom.

The paired bootstrap over test examples (:mod:`elmo_pipeline.metrics.bootstrap`) answers another
question: whether the lead of the *trained models the table holds* would survive another draw of test
sentences. It ignores the seed-to-seed variance, so with few seeds it is far more confident than this
test (the cpu_1h table: NER +ELMo vs the random control, bootstrap 0.010 one-sided, Welch 0.44).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz's method; converges fast for x < (a+1)/(a+b+2))."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        # the even step: d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))
        numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        fraction *= d * c
        # the odd step: d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
        numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + numerator * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + numerator / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        fraction *= step
        if abs(step - 1.0) < eps:
            return fraction
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"incomplete beta: a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta: x must lie in [0, 1], got {x}")
    if x == 0.0 or x == 1.0:
        return x
    # x^a (1-x)^b / (a B(a, b)), in logs
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b  # the symmetry I_x(a, b) = 1 - I_{1-x}(b, a)


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom (df may be fractional)."""
    if not df > 0:
        raise ValueError(f"t distribution: df must be positive, got {df}")
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | str]:
    """Welch's two-sided t-test of mean(a) against mean(b): one score per training seed in each.

    Returns:
        ``delta`` (mean(a) - mean(b)), ``t``, ``df`` (Welch-Satterthwaite), ``p_two_sided``, the seed
        counts ``n_a`` and ``n_b`` and ``test`` (its name). Two arms whose seeds all scored the same
        give p 1 for equal means and 0 otherwise (t is infinite).

    Raises:
        ValueError: an arm with fewer than 2 seeds (no variance to test against).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t-test needs at least 2 seeds per arm, got {len(a)} and {len(b)}")
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    var_a, var_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)  # squared standard errors
    delta = mean_a - mean_b
    se2 = var_a + var_b
    result: dict[str, float | int | str] = {"test": "welch_t_over_seeds", "delta": delta, "n_a": len(a), "n_b": len(b)}
    if se2 == 0.0:
        t = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        return {**result, "t": t, "df": math.nan, "p_two_sided": 1.0 if delta == 0 else 0.0}
    t = delta / math.sqrt(se2)
    df = se2 * se2 / (var_a * var_a / (len(a) - 1) + var_b * var_b / (len(b) - 1))
    return {**result, "t": t, "df": df, "p_two_sided": t_two_sided_p(t, df)}


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | str]:
    """The paired two-sided t-test of mean(a) against mean(b), where a[i] and b[i] come from the same
    training seed's model (one model decoded two ways, for example): Student's t on the differences.

    Returns:
        ``delta`` (mean of a - b), ``t``, ``df`` (pairs - 1), ``p_two_sided``, ``n`` (pairs) and ``test``.
        Differences that are all equal give p 1 when they are 0 and 0 otherwise (t is infinite).

    Raises:
        ValueError: fewer than 2 pairs, or a and b of different lengths.
    """
    if len(a) != len(b):
        raise ValueError(f"paired t-test: the arms must pair up, got {len(a)} and {len(b)} seeds")
    if len(a) < 2:
        raise ValueError(f"paired t-test: needs at least 2 pairs, got {len(a)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    delta = statistics.fmean(differences)
    se2 = statistics.variance(differences) / len(differences)
    result: dict[str, float | int | str] = {"test": "paired_t_over_seeds", "delta": delta, "n": len(differences)}
    df = len(differences) - 1
    if se2 == 0.0:
        t = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        return {**result, "t": t, "df": df, "p_two_sided": 1.0 if delta == 0 else 0.0}
    t = delta / math.sqrt(se2)
    return {**result, "t": t, "df": df, "p_two_sided": t_two_sided_p(t, df)}
