"""Uncertainty of accuracies: exact binomial intervals, paired bootstrap, exact McNemar test.

Every results file carries, per column, the number of questions and a 95 % **exact binomial
(Clopper-Pearson)** interval. It is chosen over a percentile bootstrap because it needs only the
correct/total counts, which every evaluation has (also under DDP and for files scored without
per-question data), and because it is deterministic: no resampling seed, the same figure every
time. Differences between two models on the same questions use a **paired percentile
bootstrap** over questions and **McNemar's exact test**. numpy only (no scipy needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95  # confidence level of every interval the library reports
RESAMPLES = 2000  # paired bootstrap resamples (``avmaster compare --resamples``)
BOOTSTRAP_SEED = 0  # fixed, so that a comparison prints the same interval every time
INTERVAL_METHOD = "exact binomial (Clopper-Pearson)"
BISECTION_STEPS = 64  # halvings of [0, 1]: far below float64 resolution of a percentage


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def binom_cdf(k: int, n: int, p: np.ndarray) -> np.ndarray:
    """P(X <= k) for X ~ Binomial(n, p), for every p of an array (summed in log space)."""
    p = np.asarray(p, dtype=np.float64)
    if k < 0:
        return np.zeros_like(p)
    if k >= n:
        return np.ones_like(p)
    lf = _log_factorials(n)
    j = np.arange(k + 1)
    log_choose = lf[n] - lf[j] - lf[n - j]
    with np.errstate(divide="ignore"):
        lp, lq = np.log(p)[..., None], np.log1p(-p)[..., None]
    terms = log_choose + np.where(j > 0, j * lp, 0.0) + np.where(n - j > 0, (n - j) * lq, 0.0)
    top = terms.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.clip(np.exp(top[..., 0]) * np.exp(terms - top).sum(axis=-1), 0.0, 1.0)


def _bisect(f, target: float, increasing: bool) -> float:
    """The p in [0, 1] where the monotone ``f(p)`` crosses ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if (f(np.array(mid)) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(correct: int, total: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact binomial (Clopper-Pearson, 1934) interval of a proportion, as fractions.

    The lower bound is the p where P(X >= k) = alpha/2, the upper where P(X <= k) = alpha/2
    (0 and 1 at k = 0 and k = n). NaNs when ``total`` is 0.
    """
    if total <= 0:
        return float("nan"), float("nan")
    k, n, a = int(correct), int(total), (1.0 - level) / 2
    lo = 0.0 if k == 0 else _bisect(lambda p: 1.0 - binom_cdf(k - 1, n, p), a, True)
    hi = 1.0 if k == n else _bisect(lambda p: binom_cdf(k, n, p), a, False)
    return lo, hi


def accuracy_intervals(correct: dict[str, float], counts: dict[str, int],
                       level: float = LEVEL) -> dict[str, list[float]]:
    """Per column ``[low, high]`` in percent of :func:`clopper_pearson`. A non-integer correct
    count (the mean over seeds) takes the lower bound of its floor and the upper bound of its
    ceiling: never narrower than either neighbour."""
    out = {}
    for col, n in counts.items():
        k = float(correct[col])
        lo = clopper_pearson(int(np.floor(k + 1e-9)), n, level)[0]
        hi = clopper_pearson(int(np.ceil(k - 1e-9)), n, level)[1]
        out[col] = [100.0 * lo, 100.0 * hi]
    return out


def correct_counts(accuracy: dict[str, float], counts: dict[str, int]) -> dict[str, int]:
    """Correct answers per column back from accuracies (percent) and counts. Exact: an
    accuracy is k/n, so even a float32 copy of it rounds back to k for any n below 10^6."""
    return {c: round(accuracy[c] * n / 100.0) if n else 0 for c, n in counts.items()}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the discordant questions split as Binomial(b + c, 1/2)
    under "same accuracy"; p = min(1, 2 P(X <= min(b, c))). 1 when there is no discordance."""
    m = int(only_a) + int(only_b)
    if m == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom_cdf(min(int(only_a), int(only_b)), m, np.array(0.5))))


def bootstrap_means(values: np.ndarray, groups: np.ndarray,
                    columns: Sequence[tuple[str, Sequence[int]]], resamples: int = RESAMPLES,
                    seed: int = BOOTSTRAP_SEED, level: float = LEVEL
                    ) -> dict[str, list[float]]:
    """Percentile bootstrap interval (percent) of each column's mean of per-question
    ``values`` (a column is a union of ``groups``).

    Questions are resampled with replacement within each group (question type), so every
    column keeps its number of questions, as the test set's per-type sizes are fixed by design.
    Resampling n_g questions is drawing how many times each distinct value occurs from a
    multinomial (values are 0/1 correctness, their paired differences, or means over seeds): the
    same distribution as drawing indices, in O(resamples x distinct values) per group.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    n_groups = int(max((max(m) for _, m in columns if len(m)), default=-1)) + 1
    sums = np.zeros((resamples, n_groups))
    sizes = np.bincount(groups, minlength=n_groups)[:n_groups]
    for g in range(n_groups):
        if not sizes[g]:
            continue
        distinct, freq = np.unique(values[groups == g], return_counts=True)
        draws = rng.multinomial(int(sizes[g]), freq / freq.sum(), size=resamples)
        sums[:, g] = draws @ distinct
    tail = 100.0 * (1.0 - level) / 2
    out = {}
    for col, members in columns:
        n = int(sizes[list(members)].sum())
        if not n:
            out[col] = [float("nan"), float("nan")]
            continue
        means = 100.0 * sums[:, list(members)].sum(axis=1) / n
        out[col] = [float(v) for v in np.percentile(means, [tail, 100.0 - tail])]
    return out


@dataclass
class PairedColumn:
    """One column of a paired comparison (accuracies and difference in percent)."""

    n: int
    a: float
    b: float
    diff: float
    diff_low: float
    diff_high: float
    only_a: int | None  # None (and p_value NaN) when a side is a mean over seeds
    only_b: int | None
    p_value: float


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, groups: np.ndarray,
                      columns: Sequence[tuple[str, Sequence[int]]],
                      resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
                      ) -> dict[str, PairedColumn]:
    """Per column: both accuracies, A - B with its paired-bootstrap interval
    (:func:`bootstrap_means` of the per-question differences), the questions only A / only B
    answered correctly and McNemar's exact p-value (:func:`mcnemar_exact`). Correctness may be
    a fraction (of seeds right): then the interval is that of the mean difference, and the
    McNemar fields, defined for single runs only, are None / NaN."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    binary = bool(np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all())
    groups = np.asarray(groups)
    ci = bootstrap_means(a - b, groups, columns, resamples, seed)
    out = {}
    for col, members in columns:
        sel = np.isin(groups, list(members))
        n = int(sel.sum())
        acc_a = 100.0 * a[sel].mean() if n else float("nan")
        acc_b = 100.0 * b[sel].mean() if n else float("nan")
        only_a = int(((a > b) & sel).sum()) if binary else None
        only_b = int(((b > a) & sel).sum()) if binary else None
        p = mcnemar_exact(only_a, only_b) if only_a is not None and only_b is not None else (
            float("nan"))
        out[col] = PairedColumn(n, acc_a, acc_b, acc_a - acc_b, *ci[col], only_a, only_b, p)
    return out
