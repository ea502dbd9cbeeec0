"""The one error type for bad user input.

The CLI turns it into a single line on stderr and exit code 2; library callers can catch it
as a ``ValueError``.
"""


class ConfigError(ValueError):
    """Invalid user input: a config value, a path, a data set or a tensor handed to the API."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good one."""
