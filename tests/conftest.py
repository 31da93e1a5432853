import os
import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch_geometric(\.|$)")

import licq  # noqa: E402,F401  (sets licq's warning filters before compressai loads)
from licq.data import read_image_uint8, save_image  # noqa: E402
from licq.defaults import sample_images  # noqa: E402
from licq.models import get_adapter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """``../shared`` next to the checkout (or $LICQ_SHARED), where the real data lives."""
    p = Path(os.environ.get("LICQ_SHARED", REPO.parent / "shared"))
    return p if (p / "data").is_dir() else None


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def tiny_model(name: str) -> torch.nn.Module:
    """A small randomly initialised model of ``name`` whose latents are alive (see ``_alive``)."""
    a = get_adapter(name)
    torch.manual_seed(0)
    m = a.build(*a.tiny_args).eval()
    _alive(m)
    m.update(force=True)
    return m


def dpa_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A calibrated quantized ``model`` with DPA's per-channel input quantizers, their scales
    and zero points spread apart per channel as training spreads them (in place, eval mode)."""
    from licq.qat.quantizers import QATSpec, freeze_qat, prepare_qat

    params = prepare_qat(model, QATSpec(params="dpa"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params["scale"]:
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        for p in params["zero_point"]:
            p.add_(torch.randint(-3, 4, p.shape, generator=g).float())
    freeze_qat(model)
    return model.eval()


def _alive(model: torch.nn.Module, std: float = 3.0) -> None:
    """Scale the last layers of g_a and h_a so that y and z of a natural image have standard
    deviation ``std``, and raise the predicted scales. A freshly initialised model's latents all
    round to 0, where nothing after g_a matters and every bitstream is trivial, and its scales
    sit at the lower bound, where the likelihoods of y saturate; tests would pass whatever the
    synthesis, hyperprior or context model computed."""
    img = read_image_uint8(sample_images()[0]).float()[None, :, 100:164, 200:264] / 255
    for stage in ("g_a", "h_a"):
        seq = getattr(model, stage, None)
        if not isinstance(seq, torch.nn.Sequential):
            continue
        seen: list = []
        hook = seq[-1].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o))
        with torch.no_grad():
            model.eval()(img)
        hook.remove()
        if seen and hasattr(seq[-1], "weight"):
            with torch.no_grad():
                seq[-1].weight.mul_(std / seen[0].std().clamp_min(1e-6))
    params = getattr(model, "entropy_parameters", getattr(model, "h_s", None))
    with_bias = [m for m in (params or []) if getattr(m, "bias", None) is not None]
    if with_bias:  # its output's first half are scales (for ScaleHyperprior all of it is)
        with torch.no_grad():
            with_bias[-1].bias[: with_bias[-1].bias.numel() // 2].add_(1.0)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Real image content: crops of the bundled Kodak samples, including odd sizes."""
    d = tmp_path_factory.mktemp("images")
    img = read_image_uint8(sample_images()[0]).float() / 255
    save_image(img[:, 100:228, 200:328], d / "a.png")  # 128x128
    save_image(img[:, 0:70, 0:90], d / "b_odd.png")  # 70x90: needs padding
    return d


@pytest.fixture(scope="session")
def crop_dir(tmp_path_factory) -> Path:
    """A few 96x96 real crops for training tests."""
    d = tmp_path_factory.mktemp("crops")
    for i, p in enumerate(sample_images()):
        img = read_image_uint8(p).float() / 255
        save_image(img[:, 200:296, 300:396], d / f"c{i}.png")
    return d
