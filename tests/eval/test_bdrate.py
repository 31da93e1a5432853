import math

import pytest

from licq.eval import bd_overlap, bd_psnr, bd_rate
from licq.eval.bdrate import BDRateError


def _res(bpp, psnr, name="x"):
    return {"name": name, "results": {"bpp": list(bpp), "psnr-rgb": list(psnr)}}


ANCHOR = _res([0.1, 0.2, 0.4, 0.8], [26.0, 28.5, 30.5, 32.0], "anchor")


@pytest.mark.parametrize("factor", [0.9, 1.25])
def test_bd_rate_of_a_scaled_curve(factor):
    # Same PSNR at factor × the rate: in log-rate the curves are shifted by log10(factor), so the
    # BD-rate is exactly (factor − 1)·100 % whatever the interpolation.
    test = _res([r * factor for r in ANCHOR["results"]["bpp"]], ANCHOR["results"]["psnr-rgb"])
    assert bd_rate(ANCHOR, test) == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert bd_rate(ANCHOR, test, method="pchip") == pytest.approx((factor - 1) * 100, abs=1e-9)


def test_bd_psnr_of_a_shifted_curve():
    test = _res(ANCHOR["results"]["bpp"], [p + 0.5 for p in ANCHOR["results"]["psnr-rgb"]])
    assert bd_psnr(ANCHOR, test) == pytest.approx(0.5, abs=1e-9)
    assert bd_rate(ANCHOR, ANCHOR) == pytest.approx(0.0, abs=1e-12)


def test_unordered_points_are_sorted():
    shuffled = _res([0.4, 0.1, 0.8, 0.2], [30.5, 26.0, 32.0, 28.5])
    assert bd_rate(ANCHOR, shuffled) == pytest.approx(0.0, abs=1e-12)


def test_errors():
    with pytest.raises(BDRateError, match="at least 4"):
        bd_rate(ANCHOR, _res([0.1, 0.2, 0.4], [26, 28, 30]))
    with pytest.raises(BDRateError, match="not increasing"):
        bd_rate(ANCHOR, _res([0.1, 0.2, 0.4, 0.8], [26, 28, 27, 30]))
    with pytest.raises(BDRateError, match="no 'ms-ssim-rgb'"):
        bd_rate(ANCHOR, ANCHOR, metric="ms-ssim-rgb")
    assert not math.isnan(bd_rate(ANCHOR, ANCHOR))
    far = _res([5, 6, 7, 8], [40, 41, 42, 43])
    with pytest.raises(BDRateError, match="do not overlap"):
        bd_rate(ANCHOR, far)


def test_bd_overlap_is_the_shared_share_of_the_metric_range():
    assert bd_overlap(ANCHOR, ANCHOR) == 1.0
    # anchor PSNR 26 … 32, test 29 … 35: shared 29 … 32 (3 dB) of the union 26 … 35 (9 dB)
    test = _res([0.3, 0.5, 0.9, 1.6], [29.0, 31.0, 33.0, 35.0])
    assert bd_overlap(ANCHOR, test) == pytest.approx(3 / 9)
    assert bd_overlap(test, ANCHOR) == pytest.approx(3 / 9)
    assert bd_overlap(ANCHOR, _res([5, 6, 7, 8], [40, 41, 42, 43])) == 0.0
    # the package warns exactly where licq reports less than its 75 % threshold
    low = _res([0.1, 0.2, 0.4, 0.8], [27.0, 28.0, 29.0, 30.0])  # 27 … 30 of 26 … 32: 0.5
    assert bd_overlap(ANCHOR, low) == pytest.approx(0.5)
    with pytest.warns(UserWarning, match="Insufficient curve overlap"):
        bd_rate(ANCHOR, low)
