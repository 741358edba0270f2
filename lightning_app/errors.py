"""User-facing errors: the CLIs print these as one line and exit non-zero, no traceback.

Also the one parser of whole-number environment values (:func:`whole_number`), shared by the
two settings readers (:mod:`lightning_app.inference.settings`, :mod:`lightning_app.ui.settings`):
it sits here, on the lowest floor, because it needs nothing and both may import it.
"""

from __future__ import annotations

from collections.abc import Mapping


class UserError(Exception):
    """Base class for mistakes a user can fix (bad data, bad config)."""


class DataError(UserError):
    """A problem with the user's data."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (unknown backbone, inconsistent sizes)."""


class SettingsError(ConfigError):
    """An environment variable holds a value that cannot work (one line, naming the variable)."""


def whole_number(
    env: Mapping[str, str], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    """``env[name]`` as an integer in ``[minimum, maximum]``; ``None`` when unset or empty.

    Raises :class:`SettingsError`: ``NAME='raw': expected a whole number >= minimum`` (or
    ``from minimum to maximum``).
    """
    raw = env.get(name, "").strip()
    if not raw:
        return None
    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number {bounds}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise SettingsError(f"{name}={raw!r}: expected a whole number {bounds}")
    return value
