import copy

import pytest
import torch

from licq.api import QuantConfig, quantize_
from licq.data import CropSampler
from licq.ptq import calibrate
from licq.qat.loss import RateDistortionLoss
from licq.search.measure import measured_zeta
from licq.search.sensitivity import SensitivitySettings
from tests.conftest import tiny_model


def test_measured_zeta_is_the_rd_increase_of_the_whole_config(crop_dir):
    model = tiny_model("bmshj2018-hyperprior")
    settings = SensitivitySettings(bits=(2, 8), calib_dir=str(crop_dir), num_crops=3,
                                   batch_size=2, patch_size=64)
    cfg = QuantConfig.uniform(3, 8)
    got = measured_zeta(model, cfg, settings)
    # by hand, on the same crops (batches of 2 and 1)
    s = CropSampler(crop_dir, patch_size=64, seed=settings.seed, flip=False)
    batches = [s.batch(2), s.batch(1)]
    crit = RateDistortionLoss(settings.lmbda)
    q = copy.deepcopy(model)
    quantize_(q, cfg)
    with calibrate(q):
        for x in batches:
            q(x)
    with torch.no_grad():
        fp = sum(crit(model.eval()(x), x)["loss"].item() * len(x) for x in batches) / 3
        qq = sum(crit(q.eval()(x), x)["loss"].item() * len(x) for x in batches) / 3
    assert qq != fp and got == pytest.approx((qq - fp) / fp, rel=1e-6)
