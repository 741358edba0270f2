"""The sweep's search space, read from ``configs/sweeps/recipe.yaml``, and its trials as CSV and table.

The YAML is a W&B sweep config (``wandb sweep configs/sweeps/recipe.yaml``) and the one
definition of the space: :func:`load_space` turns its ``parameters`` into Optuna
distributions for ``make sweep`` with the mapping W&B's own Optuna scheduler uses:

* ``values`` (no ``distribution``, or ``categorical``) -> ``CategoricalDistribution``;
* ``q_uniform`` with integer ``min``/``max``/``q`` -> ``IntDistribution(min, max, step=q)``;
* ``uniform`` / ``log_uniform_values`` -> ``FloatDistribution(min, max[, log=True])``.

Anything else is refused with one line (it would have no Optuna twin).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

SPACE_FILE = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / "recipe.yaml"
#: Per-trial facts kept beside the parameters (CSV columns, seeded back into a fresh study);
#: ``folds`` and ``auroc`` are a cross-validated trial's (``make sweep SWEEP_CV=...``).
ATTRS = ("wall_s", "epochs", "best_epoch", "projected_s", "pruned", "run_dir", "folds", "auroc")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def distribution(key: str, param: dict[str, Any]) -> BaseDistribution:
    """One W&B sweep parameter as an Optuna distribution (see the module docstring)."""
    kind = param.get("distribution", "categorical" if "values" in param else None)
    if kind == "categorical":
        return CategoricalDistribution(list(param["values"]))
    bounds = {k: param.get(k, 1 if k == "q" else None) for k in ("min", "max", "q")}
    if kind == "q_uniform" and all(_is_int(v) for v in bounds.values()):
        return IntDistribution(param["min"], param["max"], step=param.get("q", 1))
    if kind in ("uniform", "log_uniform_values") and "min" in param and "max" in param:
        return FloatDistribution(float(param["min"]), float(param["max"]), log=kind == "log_uniform_values")
    raise ValueError(f"sweep parameter {key}: {param} has no Optuna equivalent here")


def load_space(path: Path = SPACE_FILE) -> dict[str, BaseDistribution]:
    """Dotted CLI override -> distribution, in the YAML's order."""
    parameters = yaml.safe_load(path.read_text())["parameters"]
    return {key: distribution(key, param) for key, param in parameters.items()}


#: Dotted CLI override -> distribution: the space of ``make sweep`` (and of ``wandb sweep``).
SPACE: dict[str, BaseDistribution] = load_space()


def parse(key: str, text: str, space: dict[str, BaseDistribution] | None = None) -> Any:
    """A CSV or command-line value of parameter ``key`` in its distribution's type (in ``space``)."""
    dist = (space or SPACE)[key]
    if isinstance(dist, CategoricalDistribution):
        return next(c for c in dist.choices if str(c) == text)
    return int(text) if isinstance(dist, IntDistribution) else float(text)


def seed_from_csv(study: optuna.Study, path: Path, space: dict[str, BaseDistribution] | None = None) -> int:
    """Add the finished trials of an exported CSV to an empty study; return how many."""
    space = space or SPACE
    if study.trials or not path.is_file():
        return 0
    added = 0
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["state"] not in ("COMPLETE", "PRUNED"):
                continue
            params = {
                k: space[k].to_external_repr(space[k].to_internal_repr(parse(k, row[k], space)))
                for k in space
            }
            value = float(row["value"]) if row["value"] else None
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState[row["state"]],
                    value=value if row["state"] == "COMPLETE" else None,
                    params=params,
                    distributions=space,
                    user_attrs={k: row[k] for k in ATTRS if row.get(k)},
                    intermediate_values={} if value is None else {0: value},
                )
            )
            added += 1
    return added


def export(study: optuna.Study, path: Path, space: dict[str, BaseDistribution] | None = None) -> None:
    """Every trial as one CSV row (params, state, value, wall time, epochs, run dir)."""
    space = space or SPACE
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["number", "state", "value", *space, *ATTRS]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for t in study.trials:
            row = {
                "number": t.number,
                "state": t.state.name,
                "value": "" if t.value is None else f"{t.value:.4f}",
            }
            writer.writerow(
                row | {k: t.params.get(k, "") for k in space} | {k: t.user_attrs.get(k, "") for k in ATTRS}
            )


def table(study: optuna.Study, space: dict[str, BaseDistribution], goal: str, per_fold: bool = False) -> str:
    """Markdown table of the trials, best ``goal`` first (``per_fold``: a CV study, folds run, min a fold)."""
    keys, unit = list(space), "folds" if per_fold else "epochs"
    lines = [
        f"| trial | state | best {goal} | "
        + " | ".join(k.split(".")[-1] for k in keys)
        + f" | {unit} run | training{' a fold' if per_fold else ''} | pruned |"
    ]
    lines.append("|" + "---|" * (len(keys) + 6))
    done = TrialState.COMPLETE
    values = {t.number: _value(t) for t in study.trials}
    order = sorted(
        study.trials,
        key=lambda t: (t.state != done, values[t.number] is None, -(values[t.number] or 0), t.number),
    )
    for t in order:
        params = " | ".join(_fmt(t.params.get(k)) for k in keys)
        value = "" if values[t.number] is None else f"{values[t.number]:.4f}"
        if value and per_fold and t.state != done:  # a pruned CV trial: its last fold only
            value = f"(last fold {value})"
        # training time projected to max_epochs (= measured for a finished trial); wall_s
        # also counts the wait for --lock
        train = t.user_attrs.get("projected_s", "")
        minutes = f"{float(train) / 60:.1f} min" if train != "" else ""
        epochs = t.user_attrs.get(unit, "")
        why = t.user_attrs.get("pruned", "")
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value} | {params} | {epochs} | {minutes} | {why} |"
        )
    return "\n".join(lines)


def _value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's value; a pruned one's last report (a trial re-seeded from CSV keeps only that)."""
    steps = trial.intermediate_values
    return trial.value if trial.value is not None else steps[max(steps)] if steps else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
