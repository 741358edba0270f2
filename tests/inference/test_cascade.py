"""The serving cascade's routing: which rows the whole ensemble answers, and what each row gets.

The two backends here are small deterministic numpy functions standing in for the two ONNX
graphs, the first member's and the other members' (real graphs:
tests/training/test_assemble.py), so each routing case is exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from lightning_app.inference.cascade import CascadeBackend, CascadeRule, combine, log_odds
from lightning_app.inference.forward import Forward
from lightning_app.models.screening import OperatingPoint

NAMES = ["no_tumor", "tumor"]
POINT = OperatingPoint("no_tumor", 0.3, 0.97, "out-of-fold", 0.97, 0.9, 10, 10)


class Graph:
    """A stand-in graph: row ``i`` of the input's first pixel is P(tumour); records the rows it ran."""

    def __init__(self, name: str, shift: float = 0.0) -> None:
        self.name, self.has_cam, self.shift = name, True, shift
        self.source_names = ["features", "stage_members.0.layer1"]
        self.batches: list[int] = []

    def __call__(self, x: np.ndarray, *, cam: bool = False) -> Forward:
        self.batches.append(len(x))
        p = np.clip(x[:, 0, 0, 0] + self.shift, 1e-6, 1 - 1e-6)
        logits = np.log(np.stack([1 - p, p], axis=1)).astype(np.float32)
        features = np.full((len(x), 3), 1.0 + self.shift, dtype=np.float32)
        stages = {"stage_members.0.layer1": features * 2}
        return Forward(logits, features, np.full((len(x), 2, 2, 2), self.shift) if cam else None, stages)


def pixels(tumour: list[float]) -> np.ndarray:
    x = np.zeros((len(tumour), 1, 4, 4), dtype=np.float32)
    x[:, 0, 0, 0] = tumour
    return x


def test_the_rule_defers_unsure_rows_and_with_a_margin_rows_near_the_screening_threshold() -> None:
    probs = np.array([[0.95, 0.05], [0.5, 0.5], [0.05, 0.95], [0.72, 0.28], [0.99, 0.01]])
    unsure = [False, True, False, False, False]
    assert CascadeRule(0.7).doubtful(probs, NAMES, POINT).tolist() == unsure
    # 2 log-odds around the threshold 0.3: 0.28 is near; 0.05 (2.1 away) and 0.01 are not
    assert abs(log_odds(0.05) - log_odds(0.3)) > 2.0 > abs(log_odds(0.28) - log_odds(0.3))
    assert CascadeRule(0.7, 2.0).doubtful(probs, NAMES, POINT).tolist() == [False, True, False, True, False]
    assert CascadeRule(0.7, 2.0).doubtful(probs, NAMES, None).tolist() == unsure  # no operating point
    assert not CascadeRule(0.0).doubtful(probs, NAMES, POINT).any()
    assert CascadeRule(1.0).doubtful(probs, NAMES, POINT).all()
    for bad in ((1.5, 0.0), (0.9, -1.0), (0.9, float("nan"))):
        with pytest.raises(ValueError, match="a cascade needs a confidence in"):
            CascadeRule(*bad)
    assert CascadeRule.from_dict(CascadeRule(0.9, 1.5).as_dict()) == CascadeRule(0.9, 1.5)


def test_the_parts_combine_into_the_whole_ensembles_mean_and_a_single_network_is_refused() -> None:
    p1, rest = np.array([[0.9, 0.1]]), np.array([[0.3, 0.7]])  # rest: the mean of two members
    whole = np.exp(combine(np.log(p1), np.log(rest), members=3))
    np.testing.assert_allclose(whole, (p1 + 2 * rest) / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="at least two members, got 1"):
        CascadeBackend(Graph("a"), Graph("b"), CascadeRule(0.9), NAMES, members=1)


def test_only_doubtful_rows_reach_the_other_members_and_only_their_answers_change() -> None:
    first, followers = Graph("int8-first"), Graph("int8", shift=0.04)  # the pair: +0.02
    backend = CascadeBackend(first, followers, CascadeRule(0.7, 1.0), NAMES, members=2, operating_point=POINT)
    out = backend(pixels([0.02, 0.5, 0.97, 0.25, 0.001]))
    assert followers.batches == [2]  # rows 1 (unsure) and 3 (0.25, near 0.3): one batch of two
    tumour = np.exp(out.logits[:, 1])
    np.testing.assert_allclose(tumour, [0.02, 0.52, 0.97, 0.27, 0.001], rtol=1e-5)
    # the features and stage statistics are the first member's on every row (the guard's inputs)
    assert (out.features == 1.0).all() and (out.stages["stage_members.0.layer1"] == 2.0).all()
    assert out.cam is None and (backend.seen, backend.deferred) == (5, 2)
    assert backend.name == "int8-cascade" and backend.source_names == first.source_names
    backend(pixels([0.01, 0.99]))
    assert followers.batches == [2] and (backend.seen, backend.deferred) == (7, 2)  # none doubtful: no call


def test_an_explanation_takes_the_ensembles_map_for_every_row_and_the_cascades_answer() -> None:
    first, followers = Graph("onnx-fp32-first"), Graph("onnx-fp32", shift=0.04)
    backend = CascadeBackend(first, followers, CascadeRule(0.9), NAMES, members=2, operating_point=POINT)
    out = backend(pixels([0.02, 0.5]), cam=True)
    assert followers.batches == [2] and out.cam is not None
    # the ensemble's map: the first member's channels, then the others', as in the ensemble's graph
    assert out.cam.shape == (2, 4, 2, 2) and (out.cam[:, :2] == 0.0).all() and (out.cam[:, 2:] == 0.04).all()
    np.testing.assert_allclose(np.exp(out.logits[:, 1]), [0.02, 0.52], rtol=1e-5)  # as /predictions answers
