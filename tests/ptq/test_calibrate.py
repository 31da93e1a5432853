import pytest
import torch

from licq.api import QuantConfig, quantize_, quantized_layers
from licq.eval.codec import crop_padding, pad_to_multiple
from licq.models import get_adapter, list_models
from licq.ptq import calibrate, calibrate_on_folder
from tests.conftest import tiny_model


@pytest.mark.parametrize("name", list_models())
def test_quantized_model_still_codes_real_bitstreams(name, crop_dir):
    model = tiny_model(name)
    quantize_(model, QuantConfig.uniform(8, 8))
    stats = calibrate_on_folder(model, crop_dir, num_crops=2, batch_size=2, patch_size=64,
                                progress=False)
    assert stats.seconds > 0 and stats.images == 2 and stats.quantizers > 0
    model.update(force=True)
    x = torch.rand(1, 3, 64, 64)
    xp, pad = pad_to_multiple(x, get_adapter(name).pad_multiple)
    with torch.no_grad():
        enc = model.compress(xp)
        dec = model.decompress(enc["strings"], enc["shape"])
    assert crop_padding(dec["x_hat"], pad).shape == x.shape
    assert torch.isfinite(dec["x_hat"]).all()
    # entropy models stay float
    assert not any("entropy_bottleneck" in n or "gaussian_conditional" in n
                   for n in quantized_layers(model))


def test_calibrate_requires_running_the_model():
    model = tiny_model("bmshj2018-hyperprior")
    quantize_(model, QuantConfig.uniform(8, 8))
    with pytest.raises(RuntimeError, match="never ran layer"):
        with calibrate(model):
            pass


@pytest.mark.parametrize("name,consumers,on_grid", [
    ("bmshj2018-hyperprior", ["g_s.0"], True),
    ("cheng2020-anchor", ["g_s.0.conv1", "context_prediction"], False),
])
def test_decoded_latent_grid_follows_the_bitstream(name, consumers, on_grid, crop_dir):
    # Calibration sees the forward pass's ŷ = round(y) in both. The ScaleHyperprior's bitstream
    # decodes that ŷ, so its consumers keep an exact integer grid; cheng2020's decodes
    # round(y - μ) + μ, which an integer grid would round again.
    model = tiny_model(name)
    quantize_(model, QuantConfig.uniform(8, 8))
    calibrate_on_folder(model, crop_dir, num_crops=2, batch_size=2, patch_size=64, progress=False)
    layers = quantized_layers(model)
    for n in consumers:
        q = layers[n].input_quant
        assert q.integer_step is on_grid, n
        y = torch.round(torch.randn(1, 8, 4, 4) * 2)
        if on_grid:
            assert torch.equal(q(y), y)  # exact on integers
        else:
            step = float(q.scale)
            assert step < 1.0
            mu = torch.rand_like(y) - 0.5
            lo = float((q.qmin - q.zero_point) * q.scale)
            hi = float((q.qmax - q.zero_point) * q.scale)
            y_hat = (y + mu).clamp(lo, hi)  # what the AR bitstream decodes, inside the range
            assert (q(y_hat) - y_hat).abs().max() <= step / 2 + 1e-5
