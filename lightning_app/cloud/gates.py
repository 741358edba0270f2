"""The promotion gates: what a registry version must pass before an alias points at it.

1. **int8 parity** (:func:`parity_gate`): the served artefact's parity numbers, recorded by
   the export in the archive's ``model_meta.json``, judged again against their bounds (a
   cascade's too, screening decisions included); an eager fp32 export has no second artefact
   to judge and passes, saying so.
2. **quality floor** (:func:`quality_gate`): pooled out-of-fold CV accuracy and AUROC when
   ``metrics.json`` carries a ``cv`` block (``make cv``'s ``cv.json``), else the test split's.
3. **OOD rates** (:func:`ood_gate`): the guard is fitted and flags at most
   ``GATE_MAX_OOD_FLAGGED`` of the in-distribution validation and test scans.
4. **golden set** (:func:`golden_gate`): the archive, served for real on 127.0.0.1 (``python
   -m serve``, runtime ``GATE_RUNTIME``), answers the golden scans as recorded at register time.

Each gate returns a :class:`Gate`; :func:`failed` is the one line a refused promotion prints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_app.cloud.canary import Limits, predict, probe
from lightning_app.cloud.settings import CloudSettings, CloudSettingsError
from lightning_app.errors import UserError
from lightning_app.inference.parity import ParityBounds


class GateError(UserError):
    """A gate that could not be run at all (one line for the user)."""


@dataclass(frozen=True)
class Gate:
    """One gate's verdict and why."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Floors:
    """The quality and OOD floors (``GATE_*`` settings, defaults in brackets)."""

    min_accuracy: float = 0.90  # GATE_MIN_ACCURACY [0.90]
    min_auroc: float = 0.95  # GATE_MIN_AUROC [0.95]
    max_ood_flagged: float = 0.10  # GATE_MAX_OOD_FLAGGED [0.10]

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> Floors:
        """The floors, each from its ``GATE_*`` setting when set."""
        values = {}
        for key, env in (
            ("min_accuracy", "GATE_MIN_ACCURACY"),
            ("min_auroc", "GATE_MIN_AUROC"),
            ("max_ood_flagged", "GATE_MAX_OOD_FLAGGED"),
        ):
            raw = settings.get(env)
            if raw:
                try:
                    values[key] = float(raw)
                except ValueError:
                    raise CloudSettingsError(f"{env}={raw!r} is not a number") from None
        return cls(**values)


def parity_gate(meta: Mapping[str, Any]) -> Gate:
    """The served artefact's recorded parity against its recorded bounds (a cascade's as well)."""
    backend = meta.get("backend", {})
    parity, precision = backend.get("parity"), backend.get("precision", "fp32")
    if not parity:
        return Gate("parity", True, f"{precision}: the network itself is served, no artefact to judge")
    problems = ParityBounds.from_dict(parity.get("bounds", {})).violations(parity)
    detail = f"{precision}: top-1 agreement {parity['agreement']:.2%} on {parity['images']}"
    cascade = backend.get("cascade", {}).get("parity")
    if cascade:
        bounds = ParityBounds.from_dict(cascade.get("bounds", {}))
        problems += [f"cascade: {problem}" for problem in bounds.violations(cascade)]
        detail += (
            f"; cascade: top-1 agreement {cascade['agreement']:.2%}, screening decisions "
            f"{cascade.get('decision_agreement', float('nan')):.2%}, {cascade['deferred']:.1%} deferred"
        )
    return Gate("parity", not problems, "; ".join(problems) or detail)


def quality_gate(metrics: Mapping[str, Any], floors: Floors) -> Gate:
    """Pooled CV accuracy/AUROC (``metrics["cv"]["pooled"]``) if present, else the test split's."""
    pooled = metrics.get("cv", {}).get("pooled")
    if pooled:
        source, acc, auroc = "pooled CV", pooled["accuracy"]["value"], pooled["auroc"]["value"]
    else:
        values = metrics.get("metrics", {})
        if "test/acc" not in values or "test/auroc" not in values:
            return Gate("quality", False, "metrics.json has neither a cv block nor test/acc and test/auroc")
        source, acc, auroc = "test", values["test/acc"], values["test/auroc"]
    problems = []
    if acc < floors.min_accuracy:
        problems.append(f"{source} accuracy {acc:.3f} < {floors.min_accuracy:.3f}")
    if auroc < floors.min_auroc:
        problems.append(f"{source} AUROC {auroc:.3f} < {floors.min_auroc:.3f}")
    return Gate(
        "quality", not problems, "; ".join(problems) or f"{source} accuracy {acc:.3f}, AUROC {auroc:.3f}"
    )


def ood_gate(meta: Mapping[str, Any], floors: Floors) -> Gate:
    """A fitted OOD guard that flags few in-distribution scans."""
    ood = meta.get("ood", {})
    if not ood.get("fitted"):
        return Gate("ood", False, f"no fitted OOD guard ({ood.get('reason', 'not in model_meta.json')})")
    rates = {k: float(ood[k]) for k in ("val_flagged", "test_flagged") if k in ood}
    if len(rates) < 2:
        return Gate("ood", False, "model_meta.json records no val/test flagged rates")
    high = [
        f"{k} {v:.1%} > {floors.max_ood_flagged:.1%}" for k, v in rates.items() if v > floors.max_ood_flagged
    ]
    detail = "; ".join(high) or ", ".join(f"{k} {v:.1%}" for k, v in rates.items())
    return Gate("ood", not high, detail)


def golden_gate(url: str, record: Mapping[str, Any], scans: Mapping[str, bytes], limits: Limits) -> Gate:
    """The served archive at ``url`` answers the golden scans as recorded at register time."""
    seen = probe(url, scans, record["golden"], limits)
    problems = limits.problems(seen)
    return Gate("golden", not problems, "; ".join(problems) or seen.summary())


def failed(gates: list[Gate]) -> str:
    """The one line for a refused promotion (``""`` when every gate passed)."""
    bad = [f"{g.name}: {g.detail}" for g in gates if not g.ok]
    return "gate failed: " + " | ".join(bad) if bad else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_locally(
    mar: Path,
    workdir: Path,
    probe_scan: bytes,
    *,
    base_env: Mapping[str, str],
    runtime: str = "torchserve",
    timeout: float = 180.0,
) -> Iterator[str]:
    """``python -m serve`` on ``mar`` on free 127.0.0.1 ports; yields its URL once it answers.

    ``base_env`` is the environment the caller read once (``CloudSettings.extra``); the
    server's own variables are set on top of it.
    """
    port = _free_port()
    env = {
        **base_env,
        "SERVE_RUNTIME": runtime,
        "SERVE_MAR": str(mar.resolve()),
        "PORT": str(port),
        "SERVE_MANAGEMENT_PORT": str(_free_port()),
        "SERVE_METRICS_PORT": str(_free_port()),
        "SERVE_HOST": "127.0.0.1",
        "SERVE_WORKDIR": str(workdir.resolve()),
        "SERVE_START_TIMEOUT": str(int(timeout)),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise GateError(f"the archive could not be served: see {workdir / 'serve.log'}")
                try:
                    predict(url, probe_scan, timeout=10)
                    break
                except (OSError, ValueError):
                    if time.monotonic() > deadline:
                        raise GateError(f"the archive was not served within {timeout:.0f} s") from None
                    time.sleep(0.5)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
