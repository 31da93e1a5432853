import torch

from licq.quant.observers import Observer
from licq.quant.primitives import dequantize, qparams_from_range, qrange, quantize_int


def _err(x, lo, hi, bits, axis=None):
    qmin, qmax = qrange(bits, True)
    s, z = qparams_from_range(lo, hi, qmin, qmax, True)
    return (dequantize(quantize_int(x, s, z, qmin, qmax, axis), s, z, axis) - x).pow(2).sum()


def test_minmax_percentile_mse_ranges():
    torch.manual_seed(0)
    x = torch.randn(100_000)
    x[0] = 40.0  # one outlier
    ranges = {}
    for kind in ("minmax", "percentile", "mse"):
        obs = Observer(kind)
        obs.observe(x[:50_000])
        obs.observe(x[50_000:])
        ranges[kind] = obs.compute_range(-7, 7, True)
    assert ranges["minmax"][1].item() == 40.0
    assert ranges["percentile"][1].item() < 5.0
    # MSE-optimal clipping beats min-max on the error it optimises
    assert _err(x, *ranges["mse"], 4) < 0.5 * _err(x, *ranges["minmax"], 4)


def test_per_channel_mse_is_per_channel():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3) * torch.tensor([0.1, 1.0, 10.0, 100.0]).view(4, 1, 1, 1)
    obs = Observer("mse", axis=0)
    obs.observe(w)
    lo, hi = obs.compute_range(-7, 7, True)
    assert lo.shape == (4,)
    ratio = hi / w.abs().amax(dim=(1, 2, 3))
    assert (ratio > 0.3).all() and (ratio <= 1.0 + 1e-6).all()


def test_activation_sample_is_uniform_over_batches():
    obs = Observer("percentile", max_samples=1000)
    for b in range(10):  # batch b holds only the value b
        obs.observe(torch.full((5000,), float(b)))
    counts = torch.bincount(obs.samples.long(), minlength=10)
    assert obs.samples.numel() == 1000
    assert counts.min() > 60 and counts.max() < 140  # ≈ 100 each, not skewed to late batches


def test_small_tensors_are_observed_whole():
    x = torch.randn(500)
    obs = Observer("mse", max_samples=1000)
    obs.observe(x)
    assert torch.equal(obs.samples.sort().values, x.sort().values)
