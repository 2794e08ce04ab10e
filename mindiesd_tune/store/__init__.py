"""A profile store for a fleet: frozen profiles in an SQL database (SQLite file or PostgreSQL),
matched to a pipeline by its weights, the machine and the workload.

    from mindiesd_tune.store import ProfileStore
    store = ProfileStore("postgresql://user@host/profiles")
    pid, new = store.publish("runs/flux/profile.yaml")

    apply_profile(pipe, store="postgresql://user@host/profiles", workload={"num_inference_steps": 28})

``recheck`` re-measures stored profiles after a library upgrade; ``warm`` seeds a new study with
the stored fronts of the same family. See docs/fleet.md.
"""

from .core import ProfileStore, StoredProfile, StoreError
from .db import SCHEMA_VERSION, default_url
from .lookup import Match, ProfileWorkloadWarning, StaleProfileError, find_profile

__all__ = ["ProfileStore", "StoredProfile", "StoreError", "SCHEMA_VERSION", "default_url", "Match",
           "ProfileWorkloadWarning", "StaleProfileError", "find_profile"]
