"""Exception types shared by the toolkit.

Every error that comes from bad user input derives from :class:`ConfigError` (a
``ValueError``), so that the CLI can print it on one line and exit with code 2.
"""


class ConfigError(ValueError):
    """A user-supplied value is invalid; the message names the value and what is allowed."""


class DatasetError(ConfigError):
    """A dataset is missing, corrupt, or cannot satisfy the request (e.g. too few classes)."""


class CheckpointError(ConfigError):
    """A checkpoint is missing, corrupt, unsafe, or belongs to a different configuration."""
