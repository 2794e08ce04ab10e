"""accel.quant: per-component precision and quantisation schemes, their undo, and their refusals."""

import sys

import numpy as np
import pytest
import torch

from conftest import generate
from mindiesd_tune import models
from mindiesd_tune.accel import quant as Q
from mindiesd_tune.accel.config import AccelConfig, ConfigError
from mindiesd_tune.accel.quant import npu
from mindiesd_tune.errors import MissingDependency
from mindiesd_tune.metrics.fidelity import psnr

STEPS = {"num_inference_steps": 2}
CPU_SCHEMES = [s for s in Q.SCHEMES if s in Q.supported("cpu").schemes and s != "none"]


@pytest.fixture(scope="module")
def flux():
    """A tiny Flux pipeline of this module's own: every test leaves it as it found it, or the next one fails."""
    return models.load("tiny-flux-random", device="cpu")


@pytest.fixture(scope="module")
def baseline(flux):
    return generate(flux, **STEPS)


def snapshot(pipe) -> dict:
    return {f"{c}.{k}": v.detach().clone() for c in ("transformer", "text_encoder", "text_encoder_2", "vae")
            for k, v in getattr(pipe, c).state_dict().items()}


def assert_same_weights(pipe, before: dict) -> None:
    after = snapshot(pipe)
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert type(after[k]) is torch.Tensor and after[k].dtype == v.dtype and torch.equal(after[k], v), k


NEUTRAL = [
    Q.NoQuantConfig(),
    Q.NoQuantConfig(precision={"denoiser": "float32", "text_encoder": "float32", "vae": "float32"}),
    *[Q.SCHEME_CONFIGS[s](components=()) for s in Q.SCHEMES if s != "none"],
]


@pytest.mark.parametrize("cfg", NEUTRAL, ids=lambda c: f"{c.scheme}-{c.precision}")
def test_each_scheme_and_precision_at_its_neutral_setting_is_the_baseline(flux, baseline, cfg):
    undo = Q.install_quant(flux.pipe, cfg)
    try:
        assert np.array_equal(generate(flux, **STEPS), baseline)
    finally:
        undo()


QUANTISED = [
    Q.NoQuantConfig(precision={"denoiser": "bfloat16"}),
    Q.NoQuantConfig(precision={"denoiser": "float16", "text_encoder": "bfloat16", "vae": "bfloat16"}),
    Q.W8A16Config(),
    Q.W8A8Config(precision={"denoiser": "bfloat16"}),
    Q.W8A16Config(components=("denoiser", "text_encoder", "vae"), precision={"text_encoder": "bfloat16"}),
]


@pytest.mark.parametrize("cfg", QUANTISED, ids=lambda c: f"{c.scheme}-{c.precision}")
def test_quantised_install_then_undo_gives_the_baseline_bit_for_bit(flux, baseline, cfg):
    before = snapshot(flux.pipe)
    undo = Q.install_quant(flux.pipe, cfg)
    try:
        out = generate(flux, **STEPS)
    finally:
        undo()
    assert not np.array_equal(out, baseline), "the config changed nothing, so the test shows nothing"
    assert psnr(out, baseline) > 25
    assert_same_weights(flux.pipe, before)
    assert np.array_equal(generate(flux, **STEPS), baseline)


def test_int8_weight_only_stores_at_most_055_of_the_float32_weights(flux):
    before = Q.weight_bytes(flux.pipe)
    undo = Q.install_quant(flux.pipe, Q.W8A16Config())
    try:
        after = Q.weight_bytes(flux.pipe)
    finally:
        undo()
    assert after["denoiser"] <= 0.55 * before["denoiser"]
    assert after["text_encoder"] == before["text_encoder"] and after["vae"] == before["vae"]
    assert Q.weight_bytes(flux.pipe) == before


def test_int4_weight_only_stores_at_most_035_of_the_float32_weights(flux):
    if "w4a16" not in Q.supported("cpu").schemes:
        pytest.skip("torchao 0.18 has no int4 weight-only kernel for the CPU; w4a16 is not offered here")
    before = Q.weight_bytes(flux.pipe)["denoiser"]
    undo = Q.install_quant(flux.pipe, Q.W4A16Config(group_size=32, precision={"denoiser": "bfloat16"}))
    try:
        assert Q.weight_bytes(flux.pipe)["denoiser"] <= 0.35 * before
    finally:
        undo()


def _is_float(layer: torch.nn.Linear) -> bool:
    return type(layer.weight.data) is torch.Tensor and layer.weight.dtype == torch.float32


def test_the_layer_filter_keeps_the_named_layers_in_float(flux, baseline):
    model = flux.pipe.transformer
    first, middle, last = model.transformer_blocks[0], model.single_transformer_blocks[0], model.single_transformer_blocks[-1]
    cfg = Q.W8A16Config(skip_first_blocks=1, skip_last_blocks=1, skip_outside_blocks=True)
    undo = Q.install_quant(flux.pipe, cfg)
    try:
        linears = lambda m: [x for x in m.modules() if isinstance(x, torch.nn.Linear)]  # noqa: E731
        assert all(_is_float(x) for x in linears(first) + linears(last))
        assert all(_is_float(x) for x in (model.x_embedder, model.context_embedder, model.proj_out, model.norm_out.linear))
        assert linears(middle) and not any(_is_float(x) for x in linears(middle))
    finally:
        undo()
    undo = Q.install_quant(flux.pipe, Q.W8A16Config(min_features=10**6))  # no layer is that wide
    try:
        assert all(_is_float(x) for x in model.modules() if isinstance(x, torch.nn.Linear))
        assert np.array_equal(generate(flux, **STEPS), baseline)
    finally:
        undo()


def test_int4_group_size_must_divide_the_layer_width(flux):
    model = flux.pipe.transformer  # layers 32 to 256 features wide
    chosen = Q.filters.select_linears(model, Q.W4A16Config(group_size=64), "denoiser")
    assert chosen and all(x.in_features % 64 == 0 for _, x in chosen)
    left = [x for x in model.modules() if isinstance(x, torch.nn.Linear) and x.in_features % 64]
    assert left and not {id(x) for x in left} & {id(x) for _, x in chosen}


@pytest.mark.slow
def test_bfloat16_denoiser_alone_runs_on_demo_flux(demo_flux):
    """The pipeline hands the transformer float32 latents and embeddings; the cast component takes them."""
    pipe = demo_flux.pipe
    base = generate(demo_flux, **STEPS)
    undo = Q.install_quant(pipe, Q.NoQuantConfig(precision={"denoiser": "bfloat16"}))
    try:
        assert pipe.transformer.x_embedder.weight.dtype == torch.bfloat16
        out = generate(demo_flux, **STEPS)
    finally:
        undo()
    assert out.dtype == base.dtype and np.isfinite(out).all() and psnr(out, base) > 30
    assert np.array_equal(generate(demo_flux, **STEPS), base)


def test_norms_and_keep_in_fp32_modules_stay_float32(flux):
    pipe = flux.pipe
    undo = Q.install_quant(pipe, Q.NoQuantConfig(precision={"denoiser": "bfloat16", "text_encoder": "bfloat16", "vae": "bfloat16"}))
    try:
        norm_q = pipe.transformer.transformer_blocks[0].attn.norm_q
        assert norm_q.weight.dtype == torch.float32
        t5_wo = pipe.text_encoder_2.encoder.block[0].layer[1].DenseReluDense.wo  # T5 lists "wo" in _keep_in_fp32_modules
        assert t5_wo.weight.dtype == torch.float32
        assert pipe.vae.decoder.conv_norm_out.weight.dtype == torch.float32
        assert pipe.vae.decoder.conv_in.weight.dtype == torch.bfloat16
        assert np.isfinite(generate(flux, **STEPS)).all()
    finally:
        undo()


@pytest.mark.parametrize("scheme", ["w4a16", "fp8_w8a16", "fp8_w8a8"])
def test_a_scheme_the_device_cannot_run_is_refused_in_one_line(flux, baseline, scheme):
    assert scheme not in Q.supported("cpu").schemes
    before = snapshot(flux.pipe)
    with pytest.raises(Q.QuantUnsupportedError) as e:
        Q.install_quant(flux.pipe, Q.SCHEME_CONFIGS[scheme](precision={"denoiser": "bfloat16"}))
    msg = str(e.value)
    assert "\n" not in msg and f"quant.scheme {scheme}" in msg and "cpu" in msg
    assert_same_weights(flux.pipe, before)


def test_without_torchao_a_scheme_fails_in_one_line_naming_the_extra(flux, monkeypatch):
    before = snapshot(flux.pipe)
    monkeypatch.setitem(sys.modules, "torchao", None)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    with pytest.raises(MissingDependency) as e:
        Q.install_quant(flux.pipe, Q.W8A16Config(precision={"denoiser": "bfloat16"}))
    msg = str(e.value)
    assert "\n" not in msg and "torchao" in msg and "mindiesd-tune[quant]" in msg
    assert_same_weights(flux.pipe, before)  # refused before anything was cast


def test_without_keep_original_the_originals_are_dropped_and_undo_refuses():
    loaded = models.load("tiny-flux-random", device="cpu")
    layer = loaded.pipe.transformer.proj_out
    original = layer.weight
    undo = Q.install_quant(loaded.pipe, Q.W8A16Config(), keep_original=False)
    assert layer.weight is not original and type(layer.weight.data) is not torch.Tensor
    with pytest.raises(RuntimeError, match="keep_original"):
        undo()


def test_cpu_offers_int8_and_every_precision_but_not_float8_or_int4():
    sup = Q.supported("cpu")
    assert {"none", "w8a16", "w8a8"} <= set(sup.schemes) and set(sup.precisions) == {"float32", "bfloat16", "float16"}
    assert not {"w4a16", "fp8_w8a16", "fp8_w8a8"} & set(sup.schemes)
    assert "int4" in sup.why_not("w4a16") and "8.9" in sup.why_not("fp8_w8a8")
    assert {"w8a16", "w8a8", "w4a16"} <= set(Q.supported("npu").schemes)


@pytest.mark.parametrize("data, field", [
    ({"scheme": "int3"}, "quant.scheme"),
    ({"scheme": "w4a16", "group_size": 48}, "quant.group_size"),
    ({"precision": {"denoiser": "float64"}}, "quant.precision.denoiser"),
    ({"precision": {"unet": "bfloat16"}}, "quant.precision"),
    ({"scheme": "w8a8", "components": ["transformer"]}, "quant.components"),
    ({"scheme": "w8a8", "skip_first_blocks": -1}, "quant.skip_first_blocks"),
    ({"scheme": "none", "group_size": 32}, "quant (none)"),
])
def test_bad_quant_configs_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace(")", r"\)")):
        Q.from_dict(data)


def test_from_dict_builds_the_scheme_config():
    cfg = Q.from_dict({"scheme": "w4a16", "group_size": 64, "components": ["denoiser", "vae"], "precision": {"denoiser": "bfloat16"}})
    assert isinstance(cfg, Q.W4A16Config) and cfg.components == ("denoiser", "vae") and cfg.group_size == 64


# ---------------------------------------------------------------- Ascend layout (the kernels cannot run here)

def test_npu_int8_per_channel_layout_and_product():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(96, 64, generator=g), torch.randn(5, 64, generator=g)
    q, scale = npu.quantize_int8_per_channel(w)
    assert q.shape == (96, 64) and q.dtype == torch.int8 and scale.shape == (96,) and scale.dtype == torch.float32
    assert q.abs().max() <= 127
    ref, got = x @ w.t(), x @ (q.float() * scale[:, None]).t()  # the weight the kernel computes with
    assert (got - ref).norm() / ref.norm() < 0.01
    # the kernel takes the weight as (K, N): the transposed view of the stored (N, K) tensor
    kn = q.t()
    assert kn.shape == (64, 96) and torch.equal(x @ (kn.float() * scale), got)


def test_npu_int4_per_group_layout_and_product():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(96, 128, generator=g), torch.randn(5, 128, generator=g)
    q, scale = npu.quantize_int4_per_group(w, 32)
    assert q.shape == (96, 128) and q.dtype == torch.int8 and q.min() >= -8 and q.max() <= 7
    assert scale.shape == (128 // 32, 96)  # (ceil(K / group), N), as antiquant_scale wants it per group
    ref, got = x @ w.t(), x @ (q.float() * scale.t().repeat_interleave(32, dim=1)).t()
    assert (got - ref).norm() / ref.norm() < 0.15
    with pytest.raises(ValueError, match="does not divide"):
        npu.quantize_int4_per_group(torch.randn(8, 48), 32)


@pytest.mark.parametrize("scheme, scale_dtype", [("w8a16", torch.bfloat16), ("w8a8", torch.float32), ("w4a16", torch.bfloat16)])
def test_npu_linear_buffers(scheme, scale_dtype):
    layer = torch.nn.Linear(64, 32).to(torch.bfloat16)
    mod = npu.NpuQuantLinear(layer, scheme, group_size=32, pack=False)
    assert mod.qweight.shape == (32, 64) and mod.qweight.dtype == torch.int8
    assert mod.scale.dtype == scale_dtype and mod.scale.shape == ((2, 32) if scheme == "w4a16" else (32,))
    assert torch.equal(mod.bias, layer.bias)
    if "torch_npu" not in sys.modules:
        with pytest.raises(MissingDependency, match="torch_npu"):
            mod(torch.randn(2, 64, dtype=torch.bfloat16))


def test_mid_flux_random_is_registered_at_hidden_size_1024():
    from mindiesd_tune.models.builders import MID_FLUX_SIZE

    assert "mid-flux-random" in models.builtin_names()
    assert MID_FLUX_SIZE.heads * MID_FLUX_SIZE.head_dim >= 1024


def test_describe_prints_scheme_filter_and_precision():
    cfg = Q.W8A16Config(skip_first_blocks=1, skip_last_blocks=2, precision={"denoiser": "bfloat16"})
    assert Q.describe(cfg) == "w8a16 on denoiser, skip first 1 / last 2 blocks; precision denoiser=bfloat16"
    assert Q.describe(Q.NoQuantConfig()) == "none"
    assert Q.describe(Q.W4A16Config(components=("denoiser", "vae"), group_size=64)) == "w4a16 on denoiser, vae (group 64)"


def test_method_install_takes_the_whole_pipeline_from_the_handle(flux, baseline):
    class Handle:
        pipe = flux.pipe

    undo = Q.method_install(flux.pipe.transformer, Q.NoQuantConfig(precision={"vae": "bfloat16"}), Handle())
    try:
        assert flux.pipe.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    finally:
        undo()
    assert np.array_equal(generate(flux, **STEPS), baseline)


def test_casting_inputs_leaves_the_callers_dicts_alone():
    kwargs = {"scale": torch.ones(2), "ids": torch.arange(3)}
    out = Q.precision.cast_tree({"joint_attention_kwargs": kwargs, "x": [torch.zeros(1)]}, torch.bfloat16)
    assert kwargs["scale"].dtype == torch.float32 and out["joint_attention_kwargs"]["scale"].dtype == torch.bfloat16
    assert out["joint_attention_kwargs"]["ids"].dtype == torch.int64 and out["x"][0].dtype == torch.bfloat16


def test_a_refused_precision_undo_names_the_cast_component_and_leaves_the_pipeline_as_it_runs():
    loaded = models.load("tiny-flux-random", device="cpu")
    pipe = loaded.pipe
    cfg = AccelConfig.from_dict({"quant": {"scheme": "none", "precision": {"denoiser": "bfloat16"}}}).quant
    undo = Q.install_quant(pipe, cfg, keep_original=False)

    def call():
        return pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images

    before = call()
    with pytest.raises(RuntimeError, match="transformer: cast to bfloat16 without keep_original"):
        undo()
    # the VAE's input casting is still in place: the bf16 denoiser's latents still decode
    np.testing.assert_array_equal(call(), before)
