import json

import pytest
import torch

from licq.api import LayerQConfig, QuantConfig, quantize_, quantized_layers
from licq.quant.size import model_size
from tests.conftest import tiny_model


def test_resolution_exact_regex_default_and_float():
    names = ["g_a.0", "g_a.1", "g_s.0", "h_a.0", "h_s.0"]
    cfg = QuantConfig(default=LayerQConfig(8, 8), layers={
        "g_a.0": LayerQConfig(6, 8), "re:^h_": LayerQConfig(4, None), "g_s.0": None})
    r = cfg.resolve(names)
    assert r["g_a.0"].w_bits == 6 and r["g_a.1"].w_bits == 8
    assert r["h_a.0"].w_bits == 4 and r["h_s.0"].a_bits is None
    assert r["g_s.0"] is None


def test_with_a_bits_overrides_only_activation_quantized_layers():
    names = ["g_a.0", "g_a.1", "g_s.0", "g_s.1", "h_a.0"]
    cfg = QuantConfig(default=LayerQConfig(8, 8), gdn_bits=10, layers={
        "g_a.0": LayerQConfig(6, None), "g_s.1": None, "re:^g_s": LayerQConfig(3, 8)})
    out = cfg.with_a_bits({"re:^g_s": 10, "h_a.0": 12, "re:^g_a": 11}, names)
    r = out.resolve(names)
    assert r["g_s.0"] == LayerQConfig(3, 10) and r["g_s.1"] is None
    assert r["h_a.0"] == LayerQConfig(8, 12) and r["g_a.1"] == LayerQConfig(8, 11)
    assert r["g_a.0"] == LayerQConfig(6, None)  # weight-only stays weight-only
    assert out.default is None and set(out.layers) == set(names) and out.gdn_bits == 10
    assert cfg.resolve(names)["g_s.0"].a_bits == 8  # the original is unchanged
    with pytest.raises(ValueError, match=r"\['g_a.0'\] match no layer"):
        cfg.with_a_bits({"g_a.0": 10}, names)


def test_json_round_trip(tmp_path):
    cfg = QuantConfig(default=None, gdn_bits=12, layers={
        "g_a.0": LayerQConfig(6, 8, observer="percentile"), "re:g_s\\.[0-9]": None,
        "h_s.2": LayerQConfig(3, None, granularity="per_tensor", symmetric=False)})
    path = tmp_path / "bits.json"
    cfg.to_json(path)
    assert QuantConfig.from_json(path) == cfg
    assert QuantConfig.from_json(path.read_text()) == cfg
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("kwargs, msg", [
    ({"w_bits": 1}, "w_bits must be an integer in 2..16"),
    ({"w_bits": 17}, "w_bits must be an integer in 2..16"),
    ({"a_bits": 0}, "a_bits must be"),
    ({"granularity": "per_group"}, "granularity"),
    ({"observer": "kl"}, "observer must be one of"),
])
def test_invalid_layer_configs(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        LayerQConfig(**kwargs)


def test_invalid_names_and_types_name_the_layer():
    model = tiny_model("bmshj2018-hyperprior")
    with pytest.raises(ValueError, match="'g_a.99' is not a quantizable layer"):
        quantize_(model, QuantConfig(layers={"g_a.99": LayerQConfig()}))
    with pytest.raises(ValueError, match=r"pattern 're:\^nothing' matches no"):
        quantize_(model, QuantConfig(layers={"re:^nothing": LayerQConfig()}))
    with pytest.raises(ValueError, match="invalid regex"):
        QuantConfig(layers={"re:(": LayerQConfig()})
    with pytest.raises(ValueError, match="unsupported bit-config version"):
        QuantConfig.from_dict({"version": 9, "default": None})
    with pytest.raises(ValueError, match="not a bit config"):  # e.g. a results file
        QuantConfig.from_dict({"name": "x", "results": {}, "licq": {}})
    quantize_(model, QuantConfig.uniform(8, None))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(model, QuantConfig.uniform(8, None))


def test_unsupported_layer_type_is_named():
    class Odd(torch.nn.Conv2d):
        pass

    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 4, 3, groups=2))
    with pytest.raises(ValueError, match="layer '0'.*grouped ConvTranspose2d"):
        quantize_(model, QuantConfig.uniform(8, None))


def test_size_accounting_equals_a_hand_count():
    # Conv2d(2→3, 3x3, bias) → GDN(3) → ConvTranspose2d(3→2, 3x3, no bias)
    from compressai.layers import GDN

    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), GDN(3),
                                torch.nn.ConvTranspose2d(3, 2, 3, bias=False))
    cfg = QuantConfig(default=LayerQConfig(4, 8), layers={
        "1": LayerQConfig(8, None),
        "2": LayerQConfig(6, None, symmetric=False, granularity="per_tensor")})
    rep = model_size(model, cfg)
    # float state: conv w 54 + b 3; GDN β 3, γ 9, + reparam buffers; convT w 54
    state = model.state_dict()
    gdn_buffers = sum(v.numel() for k, v in state.items() if k.startswith("1.") and "reparam" in k)
    fp32_elems = 54 + 3 + 3 + 9 + gdn_buffers + 54
    assert rep.fp32_bytes == fp32_elems * 4
    conv = 54 * 4 + 3 * 32 + (32 + 8)  # weights, 3 per-channel scales, input scale + 8-bit zp
    gdn = (9 + 3) * 8 + 3 * 32 + 32  # γ and β at 8 bit, γ scales per channel, β one scale
    convt = 54 * 6 + 32 + 6  # per-tensor asymmetric: one scale, one 6-bit zero point
    float_rest = (3 + gdn_buffers) * 32  # conv bias, GDN reparam constants
    assert rep.model_bytes == (conv + gdn + convt + float_rest) / 8
    assert rep.ratio == pytest.approx(rep.fp32_bytes / rep.model_bytes)
    q_fp32 = (54 + 3 + 12 + 54) * 4
    assert rep.quantized_layers_fp32_bytes == q_fp32
    assert rep.quantized_layers_bytes == (conv + gdn + convt + 3 * 32) / 8
    # weights only: parameters (conv w+b, GDN β γ, convT w), no buffers, no input qparams
    assert rep.fp32_weight_bytes == (54 + 3 + 3 + 9 + 54) * 4
    assert rep.weight_bytes == (conv - 40 + gdn + convt + 3 * 32) / 8
    # a float config weighs exactly the FP32 model
    assert model_size(model, QuantConfig(default=None)).ratio == 1.0


def test_gdn_bits_override():
    model = tiny_model("bmshj2018-hyperprior")
    resolved = quantize_(model, QuantConfig(default=LayerQConfig(4, None), gdn_bits=12))
    assert resolved["g_a.1"].w_bits == 12 and resolved["g_a.0"].w_bits == 4
    assert quantized_layers(model)["g_a.1"].weight_quant.bits == 12
