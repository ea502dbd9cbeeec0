"""The error types the CLI turns into one line on stderr.

``ConfigError``: bad user input, exit code 2 (library callers can catch it as a ``ValueError``).
``TrainingDiverged`` and ``RunFailed``: a run that could not go on, exit code 1.
"""


class ConfigError(ValueError):
    """Invalid user input: a config value, a path, a data set or a tensor handed to the API."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good one."""


class RunFailed(RuntimeError):
    """A runtime failure that is not the input's fault (e.g. a full disk); what was written stays."""
