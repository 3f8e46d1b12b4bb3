"""Exceptions that reach the user as one line, each with its exit code."""


class UserError(Exception):
    """Bad input (params, paths, models, audio): reported in one line, exit code 2."""

    exit_code = 2


class GateFailure(UserError):
    """A check the stage promises failed (parity, regression): one line, exit code 1."""

    exit_code = 1
