"""The embedded default reproduces the Kodak figures recorded with the shared baselines."""

import pytest
import torch

from licq.data import list_images
from licq.defaults import default_checkpoints, manifest
from licq.eval import evaluate, mean_metrics
from licq.models import load_model
from tests.conftest import shared_dir

SHARED = shared_dir()


@pytest.mark.slow
@pytest.mark.skipif(SHARED is None, reason="needs ../shared/data/kodak (the evaluation set)")
@pytest.mark.parametrize("quality", [1, 2, 3, 4])
def test_embedded_default_reproduces_recorded_kodak(quality):
    torch.set_num_threads(2)
    images = list_images(SHARED / "data" / "kodak")
    assert len(images) == 24
    entry = next(e for e in manifest()["models"] if e["quality"] == quality)
    model = load_model("bmshj2018-hyperprior", checkpoint=default_checkpoints()[quality])
    m = mean_metrics(evaluate(model, images, progress=False))
    rec = entry["recorded_kodak"]
    assert m["psnr-rgb"] == pytest.approx(rec["psnr-rgb"], abs=0.02)
    assert m["bpp"] == pytest.approx(rec["bpp"], rel=0.01)
    assert m["ms-ssim-rgb"] == pytest.approx(rec["ms-ssim-rgb"], abs=1e-3)
