"""Why a metric could not run: missing weights, too small an input, unequal sample counts."""

from ..errors import UserError


class MetricUnavailable(UserError):
    """A metric cannot run here; the message is one line saying what to supply or use instead."""
