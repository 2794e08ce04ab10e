"""Errors the user caused: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (unknown model, malformed profile, bad budget, ...).

    The message is a single line naming the problem; no traceback is shown.
    """


class MissingDependency(UserError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, purpose: str, package: str | None = None):
    """Import ``module``, or raise MissingDependency naming ``pip install 'mindiesd-tune[extra]'``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(
            f"{purpose} needs {package or module}, which is not installed (pip install 'mindiesd-tune[{extra}]')"
        ) from None
