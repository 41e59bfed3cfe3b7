"""Errors that the CLI reports as one clear line (exit status 2), never a traceback."""


class VaekitError(Exception):
    """A problem the user can fix: bad input, a missing or corrupt file, a bad config.

    The message says what is wrong and how to fix it.
    """


class DataError(VaekitError, ValueError):
    """A data file is missing, truncated or corrupt (the message names the file)."""


class CheckpointError(VaekitError):
    """A run directory or checkpoint is missing, corrupt or unsafe to load."""


class ConfigError(VaekitError, ValueError):
    """A config file or CLI value has a wrong type, range or an unknown key."""
