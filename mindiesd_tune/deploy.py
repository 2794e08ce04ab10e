"""apply_profile: install a frozen profile's acceleration on a freshly loaded pipeline."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import accel
from .errors import UserError
from .profile import Profile, load_profile, model_fingerprint, pipeline_dtype

# Hardware facts that change what a profile measured; thread counts and the like do not.
_HARDWARE_CHECKED = ("device", "name", "torch", "diffusers")


class ProfileMismatchError(UserError, RuntimeError):
    """The pipeline or machine differs from the one the profile was tuned on (``strict=True``)."""

    def __init__(self, message: str, mismatches: list["Mismatch"]):
        super().__init__(message)
        self.mismatches = mismatches


class ProfileMismatchWarning(UserWarning):
    """The pipeline or machine differs from the one the profile was tuned on."""


@dataclass(frozen=True)
class Mismatch:
    """One profile field whose value differs here."""

    field: str  # as the profile spells it: model.fingerprint, hardware.torch, ...
    here: Any
    profile: Any

    def __str__(self) -> str:
        return f"{self.field} is {self.here} here, {self.profile} in the profile"


def check_profile(pipe, profile: str | Path | dict | Profile) -> list[Mismatch]:
    """What differs between ``pipe`` on this machine and what ``profile`` was tuned on.

    Compares the pipeline's class and family, its dtype and model fingerprint (the weights),
    and the hardware: device type and name, torch and diffusers versions (the device count
    too when the profile uses several devices). Fields the profile leaves empty are skipped.
    """
    from .kernels import hardware_info
    from .models import family_of

    prof = load_profile(profile)
    found: list[Mismatch] = []

    def compare(name: str, here: Any, expected: Any) -> None:
        if expected is not None and here != expected:
            found.append(Mismatch(name, here, expected))

    compare("model.pipeline", type(pipe).__name__, prof.model.get("pipeline"))
    try:
        family = family_of(pipe)
    except UserError:
        family = "unsupported"
    compare("model.family", family, prof.model.get("family"))
    compare("model.dtype", pipeline_dtype(pipe), prof.model.get("dtype"))
    if prof.model.get("fingerprint") is not None:
        compare("model.fingerprint", model_fingerprint(pipe), prof.model["fingerprint"])
    if prof.hardware:
        hw = hardware_info(_device_of(pipe))
        keys = _HARDWARE_CHECKED + (("count",) if prof.accel.parallel.world_size > 1 else ())
        for key in keys:
            compare(f"hardware.{key}", hw.get(key), prof.hardware.get(key))
    return found


def apply_profile(pipe, profile: str | Path | dict | Profile | None = None, strict: bool = False,
                  keep_original: bool = False, *, store: str | None = None, workload: dict | None = None,
                  missing: str = "error", verify: bool = False) -> accel.Handle | None:
    """Apply ``profile`` (a path, a mapping or a Profile) to ``pipe``; returns the handle.

    With ``store`` (a profile store URL, ``sqlite:///FILE`` or ``postgresql://...``) instead of
    ``profile``, the stored profile for this pipeline's weights, this machine and ``workload``
    is applied (``store.lookup``: exact match, else the nearest workload on the same device kind
    with a ``ProfileWorkloadWarning``); none found raises ``StoreError``, or with
    ``missing="ignore"`` leaves the pipeline untouched and returns None. ``verify=True``
    refuses a profile a recheck marked stale. The handle's ``store_match`` says which was used.

    The pipeline (class, family, dtype, weights fingerprint) and the machine (device, torch
    and diffusers versions) are checked against those the profile was tuned on; a mismatch
    warns with ``ProfileMismatchWarning`` naming every field that differs, or raises
    ``ProfileMismatchError`` with ``strict=True``. Call the pipeline with
    ``profile.call_kwargs()`` to use the generation settings the profile was measured with.

    A quant scheme the pipeline's device cannot run is refused in one line naming the scheme
    and the device.

    Whether ``handle.remove()`` can give the pipeline back is decided here, and
    ``handle.removable`` says which. A profile that casts a component's precision or quantises
    replaces weights: by default (deployment) the originals are dropped and their memory freed,
    and ``remove()`` raises ``NotRemovableError`` naming them, taking nothing off.
    ``keep_original=True`` keeps them, so ``remove()`` restores the pipeline bit for bit, at the
    cost of holding the original weights beside their replacements (a float32 denoiser cast to
    bfloat16: 1.5 times its float32 size instead of half). A profile that replaces no weights
    is removable either way.
    """
    match = None
    if store is not None:
        if profile is not None or missing not in ("error", "ignore"):
            raise UserError("apply_profile: give a profile or a store, not both; missing is 'error' or 'ignore'")
        from .store.lookup import StaleProfileError, StoreError, find_profile

        try:
            match = find_profile(pipe, store, workload, verify)
        except StoreError as e:
            if missing == "ignore" and not isinstance(e, StaleProfileError):
                return None  # no profile for it: serve it unaccelerated
            raise
        profile = match.stored.profile()
    elif profile is None:
        raise UserError("apply_profile: give a profile (a path, mapping or Profile) or store=URL")
    prof = load_profile(profile)
    from .accel.quant.support import check_supported

    check_supported(prof.accel.quant, _device_of(pipe))
    mismatches = check_profile(pipe, prof)
    if mismatches:
        msg = (f"profile {_name(profile, prof)} was tuned elsewhere: " + "; ".join(map(str, mismatches))
               + " (its measured speed-up and quality may not hold)")
        if strict:
            raise ProfileMismatchError(msg, mismatches)
        warnings.warn(msg, ProfileMismatchWarning, stacklevel=2)
    handle = accel.apply(pipe, prof.accel, keep_original=keep_original)
    handle.store_match = match
    return handle


def _device_of(pipe):
    from .store.facts import pipe_device

    return pipe_device(pipe)


def _name(source, prof: Profile) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"for {prof.model.get('name')}"


# model fields that make a profile another model's; the machine (device, versions) only warns
MODEL_FIELDS = ("model.pipeline", "model.family", "model.fingerprint")


def refuse_another_model(loaded, prof: Profile, source, mismatches: list[Mismatch], force: bool = False) -> None:
    """A UserError naming the fields that differ when ``prof`` (read from ``source``) was tuned for
    another model than ``loaded`` (a ``models.LoadedModel``); nothing with ``force``."""
    if force or not any(m.field in MODEL_FIELDS for m in mismatches):
        return
    fields = []
    if prof.model.get("name") and prof.model["name"] != loaded.name:
        fields.append(f"model.name is {loaded.name} here, {prof.model['name']} in the profile")
    fields += [str(m) for m in mismatches if m.field.startswith("model.") and m.field != "model.dtype"]
    here, there = _size(loaded.generation), _size(prof.generation)
    if there and here != there:
        fields.append(f"generation size is {here or 'the pipeline default'} here, {there} in the profile")
    raise UserError(f"{source} was tuned for another model: " + "; ".join(fields) + " (--force runs it anyway)")


def _size(generation: dict) -> str:
    dims = [generation.get(k) for k in ("num_frames", "height", "width")]
    return "x".join(str(d) for d in dims if d)


def stored_profile(loaded, store: str, asked: dict | None = None) -> tuple[Profile, str]:
    """The profile the store holds for ``loaded`` (a ``models.LoadedModel``) here at the workload
    a command runs: the model's own generation settings with the ``asked`` ones over them
    (``store.lookup.find_profile``: a near match warns with ``ProfileWorkloadWarning``, none raises
    ``StoreError``) -> (profile, its name for messages: "profile ID in URL"). One whose mesh spans
    several ranks is refused outside a rank group: the command would have to launch one."""
    from .accel.parallel.launch import in_rank_group
    from .paths import redact
    from .store.lookup import find_profile

    match = find_profile(loaded.pipe, store, {**loaded.generation, **(asked or {})})
    prof, name = match.stored.profile(), f"profile {match.stored.id} in {redact(store)}"
    if prof.world_size > 1 and not in_rank_group():
        raise UserError(f"{name} spans {prof.world_size} ranks: launch this command with torchrun --nproc-per-node "
                        f"{prof.world_size}, or save it (`mindiesd-tune profiles show ID`) and give --profile")
    return prof, name
