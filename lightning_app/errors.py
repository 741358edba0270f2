"""User-facing errors: the CLIs print these as one line and exit non-zero, no traceback."""


class UserError(Exception):
    """Base class for mistakes a user can fix (bad data, bad config)."""


class DataError(UserError):
    """A problem with the user's data."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work (unknown backbone, inconsistent sizes)."""
