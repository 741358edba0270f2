"""Prediction-log records as columns: what the drift tests compare, and the profile's layout.

A :class:`Table` has one row per prediction and the columns in :data:`NUMERIC`,
:data:`TEXT` and ``embedding`` (``float [N, K]``). Missing values are ``nan`` (numbers)
or ``""`` (text). The reference profile is the tables of the train and val splits saved
in one ``.npz`` (``<split>/<column>`` keys) plus a JSON ``meta`` entry.

Profile format :data:`PROFILE_VERSION` 2 adds the optional text column :data:`GROUP` to the
reference tables: each scan's near-duplicate group id from the split manifest, so that the
drift tests can compare one scan per group (see :mod:`lightning_app.monitor.drift`). Version 1
profiles (no group ids) still load; a profile newer than this code is refused with one line.
Prediction logs never carry a group.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Numeric columns (``float64``; ``nan`` when a record lacks the value).
NUMERIC = ("confidence", "ood_score", "width", "height", "bytes", "intensity_mean", "intensity_std")
#: Text columns.
TEXT = ("predicted", "format", "model_version")
#: Optional text column of reference tables: the near-duplicate group id (profile version 2+).
GROUP = "group"
#: Version of the profile layout written by :func:`save_profile`.
PROFILE_VERSION = 2


class ProfileError(ValueError):
    """A reference profile that cannot be read (one line for the user)."""


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")


@dataclass
class Table:
    """Columns of prediction records (see the module docstring)."""

    columns: dict[str, np.ndarray]
    embedding: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["confidence"])

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], meta: dict[str, Any] | None = None) -> Table:
        """Rows from prediction records (as :mod:`lightning_app.inference.predlog` writes them)."""
        rows = list(records)
        cols: dict[str, list[Any]] = {name: [] for name in (*NUMERIC, *TEXT)}
        embeddings: list[list[float] | None] = []
        for r in rows:
            pred, facts = r.get("prediction") or {}, r.get("input") or {}
            ood = r.get("ood") or {}
            cols["confidence"].append(_number(pred.get("confidence")))
            cols["ood_score"].append(_number(ood.get("score")))
            for key in ("width", "height", "bytes", "intensity_mean", "intensity_std"):
                cols[key].append(_number(facts.get(key)))
            cols["predicted"].append(str(pred.get("class") or ""))
            cols["format"].append(str(facts.get("format") or ""))
            cols["model_version"].append(str((r.get("model") or {}).get("version") or ""))
            emb = r.get("embedding")
            embeddings.append(emb if isinstance(emb, list) else None)
        dim = max((len(e) for e in embeddings if e), default=0)
        embedding = np.full((len(rows), dim), np.nan)
        for i, e in enumerate(embeddings):
            if e and len(e) == dim:
                embedding[i] = [np.nan if v is None else v for v in e]
        columns = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items() if k in NUMERIC}
        columns |= {k: np.asarray(v, dtype=str) for k, v in cols.items() if k in TEXT}
        return cls(columns=columns, embedding=embedding, meta=meta or {})

    def select(self, mask: np.ndarray) -> Table:
        """The rows where ``mask`` is true."""
        return Table({k: v[mask] for k, v in self.columns.items()}, self.embedding[mask], dict(self.meta))


def save_profile(path: Path, tables: Mapping[str, Table], meta: Mapping[str, Any]) -> Path:
    """Write split tables and ``meta`` (``profile_version`` added) to one compressed ``.npz``."""
    meta = {**meta, "profile_version": PROFILE_VERSION}
    arrays: dict[str, np.ndarray] = {"meta": np.asarray(json.dumps(meta))}
    for split, table in tables.items():
        arrays |= {f"{split}/{k}": v for k, v in table.columns.items()}
        arrays[f"{split}/embedding"] = table.embedding.astype(np.float32)
    with Path(path).open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    return Path(path)


def load_profile(source: Path | Any, split: str) -> Table:
    """One split of a reference profile (a path or an open binary file)."""
    try:
        with np.load(source, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            version = int(meta.get("profile_version", 1))
            if version > PROFILE_VERSION:
                raise ProfileError(
                    f"the reference profile has format version {version}; this code reads up to "
                    f"{PROFILE_VERSION}: upgrade the drift job or re-export the .mar with this code"
                )
            prefix = f"{split}/"
            keys = [k for k in data.files if k.startswith(prefix)]
            if not keys:
                raise ProfileError(
                    f"the reference profile has no {split!r} split (has: {meta.get('splits')})"
                )
            columns = {k[len(prefix) :]: data[k] for k in keys}
    except ProfileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProfileError(f"cannot read the reference profile: {exc}") from None
    embedding = columns.pop("embedding").astype(np.float64)
    for name in (*NUMERIC, *TEXT):
        if name not in columns:
            raise ProfileError(f"the reference profile lacks the column {name!r}")
    return Table(columns=columns, embedding=embedding, meta={"profile_version": version, **meta})
