"""On all 24 Kodak images: the decoder's per-image bit choices (made from the decoded latent)
equal the choices the encoder's side computes for g_s from its own ŷ (never trained on Kodak:
the model is the q3 baseline at W8A8 with dynamic layers and a random, untrained selector whose
outputs are made spread out, so that choices vary between images)."""

import pytest
import torch

from licq.api import QuantConfig, quantize_
from licq.data import list_images, read_image
from licq.defaults import default_calibration_dir, default_checkpoints
from licq.dynamic import make_dynamic, selections
from licq.eval.codec import pad_to_multiple
from licq.models import load_model
from licq.ptq import calibrate_on_folder
from tests.conftest import shared_dir

SHARED = shared_dir()


@pytest.mark.slow
@pytest.mark.skipif(SHARED is None, reason="needs ../shared/data/kodak (the evaluation set)")
def test_encoder_and_decoder_choices_agree_on_every_kodak_image():
    model = load_model("bmshj2018-hyperprior", checkpoint=default_checkpoints()[3])
    quantize_(model, QuantConfig.uniform(8, 8))
    sides = make_dynamic(model, (4, 6, 8), hidden=16)
    calibrate_on_folder(model, default_calibration_dir(), num_crops=4, patch_size=128,
                        progress=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for s in sides.values():
            s.selector.mlp[-1].weight.normal_(std=0.5)
    model.eval().update(force=True)
    seen = set()
    for path in list_images(SHARED / "data" / "kodak"):
        x, _ = pad_to_multiple(read_image(path), 64)
        with torch.no_grad():
            enc = model.compress(x)
            y_hat = torch.round(model.g_a(x))  # what the ScaleHyperprior entropy-codes
            model.g_s(y_hat)  # the encoder's own view of the decoder's choice
            encoder_view = selections(model)["g_s"]
            model.decompress(enc["strings"], enc["shape"])
            decoder_choice = selections(model)["g_s"]
        assert decoder_choice == encoder_view, path.name
        seen.add(tuple(decoder_choice[0]))
    assert len(seen) > 1  # the choices really differ between images
