"""Parity bounds: how far a served artefact may answer otherwise than the network it stands for.

Torch-free, so that both sides judge with the same words: the export's gates
(:mod:`lightning_app.export.gate`, :mod:`lightning_app.export.cascade`) judge a fresh artefact,
and the promotion gate (:func:`lightning_app.cloud.gates.parity_gate`) judges again the numbers
an archive recorded, against the bounds recorded beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParityBounds:
    """How far a served artefact may disagree with the fp32 network on held-out images."""

    min_agreement: float = 0.995
    max_accuracy_drop: float = 0.0025

    def violations(self, measured: Mapping[str, Any]) -> list[str]:
        """What in ``measured`` breaks these bounds, in words (empty: the artefact passes).

        ``measured`` holds ``agreement`` (top-1) and ``accuracy_drop``, and, where the model has
        a screening operating point, ``decision_agreement``, held to the same floor as top-1.
        """
        out = []
        if measured["agreement"] < self.min_agreement:
            out.append(f"top-1 agreement {measured['agreement']:.2%} < {self.min_agreement:.2%}")
        if measured["accuracy_drop"] > self.max_accuracy_drop:
            out.append(
                f"accuracy drop {100 * measured['accuracy_drop']:.2f} points "
                f"> {100 * self.max_accuracy_drop:.2f}"
            )
        decisions = measured.get("decision_agreement")
        if decisions is not None and decisions < self.min_agreement:
            out.append(f"screening decisions agree on {decisions:.2%} < {self.min_agreement:.2%}")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityBounds:
        """The bounds of a record (``model_meta.json``'s ``parity.bounds``); a missing one: the default."""
        default = cls()
        return cls(
            min_agreement=float(data.get("min_agreement", default.min_agreement)),
            max_accuracy_drop=float(data.get("max_accuracy_drop", default.max_accuracy_drop)),
        )
