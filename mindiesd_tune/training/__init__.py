"""Training code for the demo models (demo-clip, demo-flux, demo-wan) on the procedural shapes data.

Each trainer is a module runnable with ``python -m``; ``python -m mindiesd_tune.training`` runs them
all in order. Runs are seeded per step, checkpoint to ``$MINDIESD_TRAIN_DIR`` (``/tmp/mindiesd-train``)
and resume when rerun; the exported weights land in ``mindiesd_tune/models/weights/``.
"""

from .common import LoopConfig, train

__all__ = ["LoopConfig", "train"]
