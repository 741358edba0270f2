"""Drift tests: a window of prediction records against the reference profile.

Each test gives a p-value for "the window comes from the reference distribution":

| test | columns | method |
|---|---|---|
| ``class_mix`` | predicted class | chi-square test of the 2 x C contingency table |
| ``confidence`` | top probability | two-sample Kolmogorov-Smirnov |
| ``ood_score`` | OOD score (when both sides have it) | two-sample Kolmogorov-Smirnov |
| ``embedding`` | PCA embedding | MMD with a Gaussian kernel (median heuristic), permutation test |
| ``intensity_mean``, ``intensity_std`` | preprocessed pixels | two-sample Kolmogorov-Smirnov |
| ``image_size`` | log10(width x height) of the source | two-sample Kolmogorov-Smirnov |

The verdict is *drift* when any p-value is below ``alpha / m`` (Bonferroni over the ``m``
tests that could run), so the chance of a false alarm on an unshifted window is at most
``alpha``. Windows smaller than ``min_window`` get no verdict (``insufficient_data``).

**Distinct scans.** Every test assumes independent samples. The reference (a data split) is
full of near-duplicates (Br35H: the 508 val images fall into 90 near-duplicate groups), and
near-copies count as many samples while carrying the information of one, so p-values come
out far too small. :func:`compare` therefore keeps **one scan per near-duplicate group** (a
seeded random member) of a reference that carries group ids (profile version 2,
:data:`~lightning_app.monitor.table.GROUP`), and assumes that a window is a stream of
distinct scans, as production traffic of distinct patients is; a window with near-copies
(e.g. one client re-sending a scan) can raise alarms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from lightning_app.monitor.table import GROUP, Table

KS_COLUMNS = ("confidence", "ood_score", "intensity_mean", "intensity_std")
MIN_SAMPLES = 5


@dataclass
class TestResult:
    """One test's outcome (``p_value`` is ``None`` when it could not run; ``note`` says why)."""

    name: str
    method: str
    statistic: float | None = None
    p_value: float | None = None
    note: str = ""
    drift: bool = False


@dataclass
class Verdict:
    """All tests and the decision."""

    status: str  # "drift", "no_drift" or "insufficient_data"
    alpha: float
    threshold: float
    window: int
    reference: int
    tests: list[TestResult] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        """Whether drift was detected."""
        return self.status == "drift"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "drift": self.drift}


def class_mix(window: Table, reference: Table) -> TestResult:
    """Chi-square test of predicted-class counts, window vs reference."""
    result = TestResult("class_mix", "chi-square (2 x C contingency)")
    classes = sorted(set(window.columns["predicted"]) | set(reference.columns["predicted"]))
    table = np.array([[np.sum(t.columns["predicted"] == c) for c in classes] for t in (window, reference)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        result.statistic, result.p_value, result.note = 0.0, 1.0, "one class only on both sides"
        return result
    chi2 = stats.chi2_contingency(table)
    result.statistic, result.p_value = float(chi2.statistic), float(chi2.pvalue)
    return result


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def ks(name: str, window: np.ndarray, reference: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test on the finite values of both sides."""
    result = TestResult(name, "Kolmogorov-Smirnov")
    w, r = _finite(window), _finite(reference)
    if len(w) < MIN_SAMPLES or len(r) < MIN_SAMPLES:
        result.note = f"not enough values (window {len(w)}, reference {len(r)})"
        return result
    test = stats.ks_2samp(w, r)
    result.statistic, result.p_value = float(test.statistic), float(test.pvalue)
    return result


def mmd_test(
    window: np.ndarray, reference: np.ndarray, *, permutations: int = 500, seed: int = 0
) -> TestResult:
    """MMD^2 (biased, Gaussian kernel, median-heuristic bandwidth) with a permutation p-value."""
    result = TestResult("embedding", f"MMD permutation test ({permutations} permutations)")
    w = window[np.isfinite(window).all(axis=1)] if window.size else window
    r = reference[np.isfinite(reference).all(axis=1)] if reference.size else reference
    if window.shape[1] == 0 or reference.shape[1] != window.shape[1]:
        result.note = "no embedding in the window or the reference (dimensions differ)"
        return result
    if len(w) < MIN_SAMPLES or len(r) < MIN_SAMPLES:
        result.note = f"not enough embeddings (window {len(w)}, reference {len(r)})"
        return result
    pooled = np.concatenate([w, r])
    sq = np.sum(pooled**2, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    bandwidth = float(np.median(dist[np.triu_indices(len(pooled), k=1)])) or 1.0
    kernel = np.exp(-dist / bandwidth)
    n, m = len(w), len(r)
    weights = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(weights) for _ in range(permutations)], axis=1)
    observed = float(weights @ kernel @ weights)
    null = np.einsum("ib,ib->b", kernel @ perms, perms)
    result.statistic = observed
    result.p_value = float((1 + np.sum(null >= observed)) / (1 + permutations))
    return result


def log_size(table: Table) -> np.ndarray:
    """log10 of the source's pixel count (``nan`` when unknown)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(table.columns["width"] * table.columns["height"])


def one_per_group(table: Table, seed: int = 0) -> Table:
    """One row of each near-duplicate group, drawn at random (seeded); ``table`` itself without groups.

    The member is drawn, not taken in file order: within a group the file order is not random,
    and always taking the first member biased the reference (measured on Br35H's val split:
    false alarms above alpha through the intensity tests; docs/benchmarks.md).
    """
    groups = table.columns.get(GROUP)
    if groups is None or len(groups) == 0 or not np.all(groups != ""):
        return table
    order = np.random.default_rng(seed).permutation(len(groups))
    _, first = np.unique(groups[order], return_index=True)
    mask = np.zeros(len(table), dtype=bool)
    mask[order[first]] = True
    return table.select(mask)


def compare(
    window: Table,
    reference: Table,
    *,
    alpha: float = 0.05,
    min_window: int = 30,
    permutations: int = 500,
    seed: int = 0,
) -> Verdict:
    """Run every test that can run and decide (Bonferroni at ``alpha``).

    The reference is reduced to one scan per near-duplicate group first (:func:`one_per_group`,
    drawn with ``seed``); ``verdict.reference`` is the number of reference scans compared.
    """
    rows, full = len(reference), reference
    reference = one_per_group(full, seed)
    verdict = Verdict("no_drift", alpha, alpha, len(window), len(reference))
    if reference is not full:
        verdict.context["reference_scans"] = (
            f"{rows} rows in {len(reference)} near-duplicate groups: one per group"
        )
    else:
        verdict.context["reference_scans"] = (
            f"{rows} rows without (complete) group ids: near-duplicates in the reference make "
            "false alarms more likely than alpha; re-export the .mar (make mar) for a version-2 profile"
        )
    if len(window) < min_window:
        verdict.status = "insufficient_data"
        verdict.context["why"] = f"{len(window)} predictions in the window, fewer than {min_window}"
        return verdict
    tests = [class_mix(window, reference)]
    tests += [ks(name, window.columns[name], reference.columns[name]) for name in KS_COLUMNS]
    tests.append(mmd_test(window.embedding, reference.embedding, permutations=permutations, seed=seed))
    tests.append(ks("image_size", log_size(window), log_size(reference)))
    ran = [t for t in tests if t.p_value is not None]
    verdict.threshold = alpha / max(1, len(ran))
    for t in ran:
        t.drift = bool(t.p_value is not None and t.p_value < verdict.threshold)
    verdict.tests = tests
    verdict.status = "drift" if any(t.drift for t in ran) else "no_drift"
    return verdict
