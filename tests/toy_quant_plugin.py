"""A third-party quantisation scheme in one file: ``quant: {scheme: toy_int8, components, ...}``.

int8 weights through torchao's ``Int8WeightOnlyConfig`` (the built-in w8a16 under another name,
to show what a scheme entry holds): the config names the scheme, the entry's hook is the torchao
config it runs; the layer filters, search space, precision and removal are the section's
shared ones. Found through ``MINDIESD_TUNE_PLUGINS=toy_quant_plugin`` or the
``mindiesd_tune.methods`` entry-point group.
"""

from dataclasses import dataclass
from typing import ClassVar

from mindiesd_tune.accel.methods import register_method, scheme_method
from mindiesd_tune.accel.quant import WeightQuantConfig


@dataclass
class ToyInt8Config(WeightQuantConfig):
    """int8 weights per output channel, activations in float."""

    scheme: ClassVar[str] = "toy_int8"


def torchao(cfg):
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(set_inductor_config=False)


register_method(scheme_method(ToyInt8Config, torchao))
