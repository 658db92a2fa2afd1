"""User-facing errors: the CLI prints them as one line on stderr and exits with code 2."""


class HopeError(Exception):
    """A problem with the user's input (arguments, config, data, checkpoint), not a bug."""
