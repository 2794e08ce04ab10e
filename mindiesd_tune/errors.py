"""Errors the user caused: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (unknown model, malformed profile, bad budget, ...).

    The message is a single line naming the problem; no traceback is shown.
    """
