import pytest
import torch

from licq.eval.codec import crop_padding, pad_to_multiple
from licq.models import QUANTIZABLE_TYPES, get_adapter, layer_group, list_models
from licq.models.registry import adapter_for_model
from tests.conftest import tiny_model

ZOO = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
       "cheng2020-anchor", "cheng2020-attn", "elic2022-official"]


def test_registry_has_every_zoo_name():
    assert set(ZOO) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_round_trip_real_bitstream(name):
    """forward, compress, decompress on a small random-init model: shapes and finite output."""
    model = tiny_model(name)
    a = get_adapter(name)
    x = torch.rand(1, 3, 64, 80)
    xp, padding = pad_to_multiple(x, a.pad_multiple)
    with torch.no_grad():
        out = model(xp)
        assert out["x_hat"].shape == xp.shape
        assert all(torch.isfinite(v).all() for v in out["likelihoods"].values())
        enc = model.compress(xp)
        dec = model.decompress(enc["strings"], enc["shape"])
    x_hat = crop_padding(dec["x_hat"], padding)
    assert x_hat.shape == x.shape
    assert torch.isfinite(x_hat).all() and x_hat.min() >= 0 and x_hat.max() <= 1
    # decoding is deterministic and decoder-only: a second decode gives the same image
    with torch.no_grad():
        again = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.equal(again, dec["x_hat"])


@pytest.mark.parametrize("name", list_models())
def test_quantizable_layers_and_groups(name):
    model = tiny_model(name)
    a = get_adapter(name)
    layers = a.quantizable_layers(model)
    assert layers, "every codec has quantizable layers"
    groups = a.groups(model)
    assert "g_a" in groups and "g_s" in groups
    assert "other" not in groups, f"unclassified layers: {groups.get('other')}"
    modules = dict(model.named_modules())
    for layer in layers:
        assert isinstance(modules[layer], QUANTIZABLE_TYPES)
        assert "entropy_bottleneck" not in layer and "gaussian_conditional" not in layer
    if name != "bmshj2018-factorized":
        assert "h_a" in groups and "h_s" in groups
    if name in ("mbt2018", "cheng2020-anchor", "cheng2020-attn"):
        assert groups["context_prediction"] == ["context_prediction"]
        assert len(groups["entropy_parameters"]) == 3
    assert adapter_for_model(model) is a


def test_layer_group_patterns():
    assert layer_group("g_a.0") == "g_a"
    assert layer_group("latent_codec.hyper.h_s.2") == "h_s"
    assert layer_group("latent_codec.y.latent_codec.y3.context_prediction") == "context_prediction"
    assert layer_group("latent_codec.y.channel_context.y2.0") == "channel_context"
    assert layer_group("something.else") == "other"


def test_resolve_lambda_uses_the_metric_and_an_explicit_lambda_first():
    from licq.models import lambda_for, resolve_lambda

    assert resolve_lambda(None, 3, "ms-ssim") == lambda_for(3, "ms-ssim") != lambda_for(3, "mse")
    assert resolve_lambda(0.5, 3, "ms-ssim") == 0.5
    with pytest.raises(ValueError, match="--lambda or -q"):
        resolve_lambda(None, None)


def test_sensitivity_refuses_a_metric_it_does_not_measure(capsys):
    from licq.cli import main

    assert main(["sensitivity", "-q", "3", "--metric", "ms-ssim", "--no-cache"]) == 2
    assert "MSE RD loss" in capsys.readouterr().err
