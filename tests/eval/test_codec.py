import math

import pytest
import torch

from licq.data import read_image
from licq.eval import evaluate, evaluate_image, mean_metrics
from licq.eval.codec import count_bytes, crop_padding, pad_to_multiple
from licq.eval.metrics import ms_ssim, psnr
from tests.conftest import tiny_model


@pytest.mark.parametrize("h, w", [(64, 64), (70, 90), (1, 129)])
def test_pad_crop_round_trip(h, w):
    x = torch.rand(1, 3, h, w)
    xp, padding = pad_to_multiple(x, 64)
    assert xp.shape[-2] % 64 == 0 and xp.shape[-1] % 64 == 0
    assert torch.equal(crop_padding(xp, padding), x)


def test_count_bytes_nested():
    assert count_bytes([[b"abc", b"d"], [b""], b"xy"]) == 6
    with pytest.raises(TypeError):
        count_bytes([1])


def test_psnr_on_8bit_rounded_values():
    a = torch.zeros(1, 3, 8, 8)
    b = torch.full((1, 3, 8, 8), 2 / 255)  # every pixel off by 2 levels: MSE = 4
    assert psnr(a, b) == pytest.approx(20 * math.log10(255) - 10 * math.log10(4))
    # values that round to the same 8-bit level are identical images
    assert psnr(a, torch.full_like(a, 0.4 / 255)) == float("inf")
    assert math.isnan(ms_ssim(a, b))  # too small for 5-scale MS-SSIM
    big = torch.rand(1, 3, 192, 192)
    assert ms_ssim(big, big) == pytest.approx(1.0)


def test_bpp_comes_from_the_bitstream(image_dir):
    model = tiny_model("bmshj2018-hyperprior")
    x = read_image(image_dir / "b_odd.png")  # 70x90, padded to 128x128
    r = evaluate_image(model, x, 64)
    xp, _ = pad_to_multiple(x, 64)
    with torch.no_grad():
        nbytes = count_bytes(model.compress(xp)["strings"])
    assert r["bpp"] == pytest.approx(nbytes * 8 / (70 * 90))
    assert "bpp_estimate" not in r
    r2 = evaluate_image(model, x, 64, estimate=True)
    assert r2["bpp"] == r["bpp"] and r2["bpp_estimate"] > 0
    assert r["encoding_time"] > 0 and r["decoding_time"] > 0


def test_evaluate_rows_and_means(image_dir):
    model = tiny_model("mbt2018-mean")
    rows = evaluate(model, sorted(image_dir.iterdir()), progress=False)
    assert [r["name"] for r in rows] == ["a.png", "b_odd.png"]
    means = mean_metrics(rows)
    assert means["bpp"] == pytest.approx((rows[0]["bpp"] + rows[1]["bpp"]) / 2)
