"""Which registry version the page talks to: the alias's version beside the served model's.

With ``REGISTRY`` set (:class:`~lightning_app.ui.settings.Settings`), the page resolves
``REGISTRY_ALIAS`` (default ``production``) through
:func:`lightning_app.cloud.registry.resolve`, the one way deploys and the drift job read the
registry too, and compares that version's recorded model version with the ``version`` the
served model answers with (every prediction) or reports (TorchServe's management API). The
registry is read at most once per ``ttl_s``; a registry that cannot be read is shown as
such, never a crash. The registry code (and gcsfs) is imported only when ``REGISTRY`` is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Provenance:
    """What the registry alias names now: its version and model version, or why it is unknown."""

    alias: str
    version: str | None = None
    model_version: str | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        """``registry v3 (production)``."""
        return f"registry {self.version} ({self.alias})"

    def matches(self, served: str | None) -> bool | None:
        """Whether the served model version is the alias's (``None``: not known)."""
        if self.problem or not served or not self.model_version:
            return None
        return served == self.model_version

    def describe(self, served: str | None = None) -> str:
        """One sentence: the alias's version, and whether ``served`` is it."""
        if self.problem:
            return f"registry {self.alias}: {self.problem}"
        verdict = self.matches(served)
        if verdict is None:
            return f"{self.name}, model version {self.model_version}"
        if verdict:
            return f"serving {self.name}, model version {served}"
        return (
            f"the served model version {served} is not {self.name}, "
            f"which is model version {self.model_version}"
        )


class RegistryWatch:
    """The version an alias of the registry at ``root`` names, re-read every ``ttl_s`` seconds."""

    def __init__(
        self, root: str, alias: str, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``root``: ``gs://.../registry/brain_mri``; ``alias``: checked by the settings reader."""
        self.root, self.alias, self.ttl_s, self._clock = root, alias, ttl_s, clock
        self._lock = threading.Lock()
        self._seen: tuple[float, Provenance] | None = None

    def current(self) -> Provenance:
        """The alias's version now (cached for ``ttl_s``); a failed read is a ``problem``."""
        with self._lock:
            now = self._clock()
            if self._seen is None or now - self._seen[0] >= self.ttl_s:
                self._seen = (now, self._read())
            return self._seen[1]

    def _read(self) -> Provenance:
        from lightning_app.cloud.registry import Registry, resolve
        from lightning_app.errors import UserError

        try:
            target = resolve(Registry.at(self.root), alias=self.alias)
        except UserError as exc:
            return Provenance(self.alias, problem=str(exc).splitlines()[0])
        model_version = target.record.get("model_version")
        return Provenance(self.alias, target.version, None if model_version is None else str(model_version))
