"""User-facing errors: the CLI prints them as one line on stderr and exits with code 2."""


class HopeError(Exception):
    """A problem with the user's input (arguments, config, data, checkpoint), not a bug."""


class HopeWarning(UserWarning):
    """A run that goes on but may not do what its user meant; the CLI prints it as one line on stderr."""
