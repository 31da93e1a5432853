"""RD-optimised reconstruction PTQ (licq.ptq.reconstruct)."""

import copy
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from licq.api import LayerQConfig, QuantConfig, quantize_
from licq.data import CropSampler
from licq.ptq import ReconstructionConfig, block_errors, post_training_quantize
from licq.ptq.calibrate import quantize_and_calibrate
from licq.ptq.reconstruct import (
    AdaRoundWeight,
    LearnedStep,
    reconstruct_block,
    reconstruction_blocks,
    weights_on_grid,
)
from licq.quant.modules import QConv2d
from tests.conftest import tiny_model

FAST = ReconstructionConfig(iters=40, e2e_iters=5, batch_size=2)


def _rdo(arch, crop_dir, cfg=None, rec=FAST, fallback=False):
    """The reconstruction of a tiny model (without the fallback to the calibrated model unless
    asked: these tests look at what the reconstruction itself leaves)."""
    model = tiny_model(arch)
    r = post_training_quantize(model, cfg or QuantConfig.uniform(4, 8), crop_dir, num_crops=4,
                               batch_size=2, patch_size=64, progress=False, method="rdo",
                               lmbda=0.01, reconstruction=replace(rec, fallback=fallback))
    return model, r


# -- the toy case: two 1x1 blocks whose best rounding is known ----------------------------------
def _conv1x1(weights: list[float]) -> QConv2d:
    conv = nn.Conv2d(len(weights), 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).reshape(1, -1, 1, 1))
    q = QConv2d.from_float(conv, LayerQConfig(w_bits=4, a_bits=None))
    q.weight_quant.scale.fill_(1.0)  # codes = weights on an integer grid
    return q


def test_toy_blocks_find_the_known_optimal_rounding():
    """Block 1 sees the same input on both channels, weights 0.35 and 0.45 (sum 0.8): round to
    nearest gives 0 + 0 (error 0.8·x); the best is one weight up (error 0.2·x). Block 2 (weight
    0.6) is fitted on block 1's *quantized* output x·1 towards the float 0.48·x: the best code
    is 0 (error 0.48) where round to nearest gives 1 (error 0.52), which only a sequential
    (BRECQ-order) reconstruction can see."""
    from licq.ptq.reconstruct import Block

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 4, 4, generator=g)
    x2 = x.repeat(1, 2, 1, 1)
    c1, c2 = _conv1x1([0.35, 0.45]), _conv1x1([0.6])
    b1, b2 = Block(["b1"], [c1]), Block(["b2"], [c2])
    y1, y2 = 0.8 * x, 0.48 * x
    cfg = ReconstructionConfig(iters=400, batch_size=16, bias_correction=False)
    ones = torch.ones_like(y1)
    info1 = reconstruct_block(b1, [(x2, y1, ones)], cfg)
    assert info1["error_after"] < info1["error_before"]
    assert sorted(c1.weight.flatten().tolist()) == [0.0, 1.0]
    with torch.no_grad():
        q1 = c1(x2)  # block 2's input: block 1 as reconstructed
    assert torch.allclose(q1, x)
    reconstruct_block(b2, [(q1, y2, ones)], cfg)
    assert c2.weight.item() == 0.0
    assert round(0.6) == 1  # round to nearest would have kept the code 1


# -- the whole procedure on tiny models --------------------------------------------------------
def test_rounding_ends_hard_and_leaves_a_plain_quantized_model(crop_dir):
    model, r = _rdo("bmshj2018-hyperprior", crop_dir)
    assert weights_on_grid(model)
    assert not any(isinstance(m, AdaRoundWeight | LearnedStep) for m in model.modules())
    rep = r.reconstruction
    assert rep is not None and len(rep.blocks) == len(reconstruction_blocks(model))
    assert set(rep.heldout_rd_loss) >= {"float", "calibrated", "reconstructed"}
    assert rep.seconds > 0
    # a round-to-nearest model is not on the grid only where weights are not: the check can fail
    rtn = tiny_model("bmshj2018-hyperprior")
    quantize_(rtn, QuantConfig.uniform(4, 8))
    assert not weights_on_grid(rtn)


def test_reconstruction_lowers_block_errors_on_held_out_crops(crop_dir):
    float_model = tiny_model("bmshj2018-hyperprior")
    held = CropSampler(crop_dir, patch_size=64, seed=5, flip=False).batches(4, 2)
    rtn = copy.deepcopy(float_model)
    calib = CropSampler(crop_dir, patch_size=64, seed=0, flip=False).batches(4, 2)
    quantize_and_calibrate(rtn, QuantConfig.uniform(4, 8), calib)
    before = block_errors(rtn.eval(), float_model, held)
    model, _ = _rdo("bmshj2018-hyperprior", crop_dir,
                    rec=ReconstructionConfig(iters=150, e2e_iters=0, batch_size=2))
    after = block_errors(model, float_model, held)
    assert before.keys() == after.keys()
    assert sum(after.values()) < 0.9 * sum(before.values()), (before, after)


@pytest.mark.parametrize("arch", ["mbt2018", "cheng2020-anchor"])
def test_every_layer_kind_is_reconstructed(arch, crop_dir):
    """Masked convs (context model), sub-pixel convs, residual/attention blocks, the entropy
    parameters: every quantized layer sits in a block, and masked taps stay zero."""
    model, r = _rdo(arch, crop_dir, rec=ReconstructionConfig(iters=5, e2e_iters=0))
    names = [n for b in reconstruction_blocks(model) for n, _ in b.layers()]
    quantized = [n for n, m in model.named_modules() if hasattr(m, "weight_quant")]
    assert sorted(names) == sorted(quantized)
    assert weights_on_grid(model)
    cp = model.context_prediction
    assert torch.all(cp.effective_weight()[cp.mask.expand_as(cp.weight) == 0] == 0)
    assert any(b["block"].startswith("context_prediction") for b in r.reconstruction.blocks)


def test_packed_export_reloads_bit_identically(tmp_path, crop_dir):
    from licq.export import export_packed, load_quantized
    from licq.models import get_adapter

    cfg = QuantConfig.uniform(4, 8)
    model, _ = _rdo("bmshj2018-hyperprior", crop_dir, cfg)
    path = tmp_path / "m.safetensors"
    export_packed(model, path, arch="bmshj2018-hyperprior",
                  sizes=get_adapter("bmshj2018-hyperprior").tiny_args, config=cfg)
    loaded = load_quantized(path)[0]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x)["x_hat"], loaded(x)["x_hat"])
        assert model.compress(x)["strings"] == loaded.compress(x)["strings"]
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        if n.endswith(".weight") and "g_" in n:
            assert torch.equal(a, b), n


@pytest.mark.slow
@pytest.mark.slow
def test_exact_codec_file_decodes_bit_exactly_in_another_process(tmp_path, crop_dir):
    from licq.codec import compress_image, decompress_bytes, model_id
    from licq.data import read_image
    from licq.defaults import sample_images
    from licq.export import export_packed, load_quantized
    from licq.models import get_adapter

    arch, cfg = "mbt2018-mean", QuantConfig.uniform(6, 8)
    model, _ = _rdo(arch, crop_dir, cfg)
    path = tmp_path / "m.safetensors"
    export_packed(model, path, arch=arch, sizes=get_adapter(arch).tiny_args, config=cfg)
    model, mid = load_quantized(path)[0], model_id(path)
    x = read_image(sample_images()[0])[..., :100, :130]
    torch.set_num_threads(2)
    (tmp_path / "a.licq").write_bytes(compress_image(model, mid, x))
    torch.save(decompress_bytes(model, mid, (tmp_path / "a.licq").read_bytes()), tmp_path / "a.pt")
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from licq.codec import decompress_bytes, model_id
        from licq.export import load_quantized
        model = load_quantized({str(path)!r})[0]
        out = decompress_bytes(model, model_id({str(path)!r}),
                               open({str(tmp_path / "a.licq")!r}, "rb").read())
        assert torch.equal(out, torch.load({str(tmp_path / "a.pt")!r}))
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_weight_only_and_mixed_configs(crop_dir):
    mixed = QuantConfig(default=LayerQConfig(4, 8), layers={"re:^g_s": LayerQConfig(6, 8),
                                                            "h_a.0": None})
    model, r = _rdo("bmshj2018-hyperprior", crop_dir, mixed,
                    rec=ReconstructionConfig(iters=5, e2e_iters=0))
    assert weights_on_grid(model) and not hasattr(model.h_a[0], "weight_quant")
    model, r = _rdo("bmshj2018-hyperprior", crop_dir, QuantConfig.uniform(4, None),
                    rec=ReconstructionConfig(iters=5, e2e_iters=3))
    assert weights_on_grid(model)
    assert not r.reconstruction.e2e_kept  # no activation step to learn end to end
    assert all(b["learned_steps"] == 0 for b in r.reconstruction.blocks)


def test_seeded_runs_are_deterministic(crop_dir):
    rec = ReconstructionConfig(iters=10, e2e_iters=3)
    a, _ = _rdo("bmshj2018-hyperprior", crop_dir, rec=rec)
    b, _ = _rdo("bmshj2018-hyperprior", crop_dir, rec=rec)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), n


@pytest.mark.parametrize("after,fallback,kept", [(2.0, True, False), (0.5, True, True),
                                                   (2.0, False, True)])
def test_fallback_restores_the_calibrated_model_when_the_reconstruction_hurts(
        crop_dir, monkeypatch, after, fallback, kept):
    """A reconstruction that ends at or above the calibrated model's held-out RD loss is undone:
    the model is exactly the calibrated one again (weights, biases, steps) and the report says
    so; one that ends below it, or any without the fallback, stays. (The held-out losses are
    scripted, 1.0 for the float and calibrated models and ``after`` for every later state, so
    the decision is known; the blocks' reconstruction is replaced by a visible change.)"""
    import licq.ptq.reconstruct as rec_mod

    def changed(block, data, cfg=None, gen=None, progress=False):
        with torch.no_grad():
            for _, layer in block.layers():
                if isinstance(getattr(layer, "weight", None), torch.Tensor):
                    layer.weight.mul_(1.5)
        return {"block": block.name, "error_before": 1.0, "error_after": 1.0}

    calls = []
    monkeypatch.setattr(rec_mod, "reconstruct_block", changed)
    monkeypatch.setattr(rec_mod, "mean_rd_loss",
                        lambda *a, **k: calls.append(1) or (1.0 if len(calls) <= 2 else after))
    rec = ReconstructionConfig(iters=5, e2e_iters=0, bias_correction=False)
    model, r = _rdo("bmshj2018-hyperprior", crop_dir, rec=rec, fallback=fallback)
    assert r.reconstruction.kept is kept
    assert r.reconstruction.heldout_rd_loss == {"float": 1.0, "calibrated": 1.0,
                                                "reconstructed": after}
    plain = tiny_model("bmshj2018-hyperprior")
    assert post_training_quantize(plain, QuantConfig.uniform(4, 8), crop_dir, num_crops=4,
                                  batch_size=2, patch_size=64, progress=False).reconstruction is None
    same = [torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                              plain.state_dict().values(), strict=True)]
    assert all(same) is not kept  # restored exactly, or reconstructed (changed)


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    ({"iters": 0}, "iters"), ({"batch_size": 0}, "batch_size"), ({"lr": 0}, "learning rates"),
    ({"reg_weight": -1}, "reg_weight"), ({"warmup": 1.0}, "warmup"), ({"beta": (0, 2)}, "beta"),
    ({"e2e_iters": -1}, "e2e_iters"),
])
def test_bad_options_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ReconstructionConfig(**kw)


def test_pipeline_refusals(crop_dir):
    m = tiny_model("bmshj2018-hyperprior")
    with pytest.raises(ValueError, match="method must be one of"):
        post_training_quantize(m, QuantConfig.uniform(8, 8), crop_dir, method="brecq")
    with pytest.raises(ValueError, match="lmbda"):
        post_training_quantize(m, QuantConfig.uniform(8, 8), crop_dir, method="rdo")
    with pytest.raises(ValueError, match="calibration images"):
        post_training_quantize(m, QuantConfig.uniform(8, 8), None, method="rdo", lmbda=0.01)


def test_cli_refuses_rdo_options_without_the_method(tmp_path):
    r = subprocess.run([sys.executable, "-m", "licq.cli", "ptq", "--w-bits", "8", "--rdo-iters", "5",
                        "--limit", "1", "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "--rdo-* options need --method rdo" in r.stderr and "Traceback" not in r.stderr
