"""The one exception type that reaches the user as a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input (params, paths, models, audio): reported in one line, exit code 2."""

    exit_code = 2
