"""What every export step shares: the context it works in, its error, and the result.

Steps (:mod:`~lightning_app.export.precision`, :mod:`~lightning_app.export.ood`,
:mod:`~lightning_app.export.reference`) import only this module; :mod:`~lightning_app.export.build`
runs them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class ExportError(RuntimeError):
    """A user-facing export failure (missing checkpoint, archiver error)."""


@dataclass(frozen=True)
class Exported:
    """Paths of the exported files and the metadata written."""

    weights: Path
    index_to_name: Path
    meta: Path
    metadata: dict[str, Any]
    #: Files written by export steps (OOD statistics, other backends, profiles...).
    extra: tuple[Path, ...] = ()


@dataclass
class ExportContext:
    """What an export step works with; steps may add to ``metadata`` and ``files``.

    ``net`` is the fp32 backbone in eval mode, ``data_dir`` the prepared root the model
    was trained on (``None`` when the export has no data: steps that need it skip, and
    say so in ``metadata``).
    """

    net: torch.nn.Module
    metadata: dict[str, Any]
    out_dir: Path
    checkpoint: Path
    data_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    #: Choices passed down from the command line (e.g. ``precision``).
    options: dict[str, Any] = field(default_factory=dict)
    #: What one step computed and a later one reads again (e.g. the gates' fp32 reference).
    cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _pixels: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def pixels(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 [N, 1, S, S], labels [N])`` of a split of ``data_dir``, decoded once."""
        if self.data_dir is None:
            raise ExportError("this export step needs the training data: pass --data <prepared root>")
        if split not in self._pixels:
            from lightning_app.data.pixels import split_pixels

            prep = self.metadata["preprocessing"]
            self._pixels[split] = split_pixels(
                self.data_dir,
                split,
                image_size=int(prep["image_size"]),
                head_crop=bool(prep.get("head_crop")),
            )
        return self._pixels[split]


#: One export step: reads the context, writes artefacts and metadata into it.
ExportStep = Callable[[ExportContext], None]
