"""The one root of the errors `lam` reports as a single line (exit 1) instead of a traceback."""


class LamError(Exception):
    """An infrastructure or usage failure with a message fit for one line on stderr."""


class UsageError(LamError):
    """A wrong flag or value: `lam` exits with 2."""
