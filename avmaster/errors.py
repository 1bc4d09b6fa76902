"""The error every layer raises for a setting the user has to change (``avmaster.config``
re-exports it): the command line prints its one-line message, without a traceback."""


class ConfigError(ValueError):
    """A config file, override or data setting that cannot be used as given; says where and how
    to fix it."""
