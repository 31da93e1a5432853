import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from licq.errors import CheckpointError, UnknownModelError
from licq.models import get_adapter, load_model, read_state_dict
from tests.conftest import tiny_model

ARCH = "bmshj2018-hyperprior"


def _strings(model, x):
    with torch.no_grad():
        return model.compress(x)["strings"]


@pytest.fixture()
def source():
    model = tiny_model(ARCH)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("variant", ["plain", "nested", "module_prefix", "safetensors"])
def test_checkpoint_variants_load_identically(tmp_path, source, variant):
    model, sd = source
    if variant == "plain":
        path = tmp_path / "m.pth.tar"
        torch.save(sd, path)
    elif variant == "nested":
        path = tmp_path / "m.pth.tar"
        torch.save({"epoch": 3, "state_dict": sd, "optimizer": {}}, path)
    elif variant == "module_prefix":
        path = tmp_path / "m.pth"
        torch.save({"module." + k: v for k, v in sd.items()}, path)
    else:
        path = tmp_path / "m.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_model(ARCH, checkpoint=path)
    x = torch.rand(1, 3, 64, 64)
    assert _strings(loaded, x) == _strings(model, x)
    # N and M were inferred from the weights, not taken from a default
    assert loaded.g_a[0].out_channels == get_adapter(ARCH).tiny_args[0]


def test_state_dict_without_entropy_tables_is_an_error(tmp_path, source):
    model, sd = source
    sd = {k: v for k, v in sd.items() if "cdf" not in k and "_offset" not in k}
    path = tmp_path / "nocdf.pth.tar"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(ARCH, checkpoint=path)


def test_missing_key_error(tmp_path, source):
    _, sd = source
    del sd["g_s.6.weight"]
    path = tmp_path / "m.pth.tar"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"missing keys \(e\.g\. g_s\.6\.weight"):
        load_model(ARCH, checkpoint=path)


def test_wrong_architecture_error(tmp_path, source):
    _, sd = source
    path = tmp_path / "m.pth.tar"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="does not look like cheng2020-anchor"):
        load_model("cheng2020-anchor", checkpoint=path)
    with pytest.raises(CheckpointError, match="does not match architecture mbt2018-mean"):
        load_model("mbt2018-mean", checkpoint=path)


@pytest.mark.parametrize("suffix", [".pth.tar", ".safetensors"])
def test_corrupt_and_truncated_files(tmp_path, source, suffix):
    _, sd = source
    good = tmp_path / f"good{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(good))
    else:
        torch.save(sd, good)
    data = good.read_bytes()
    trunc = tmp_path / f"trunc{suffix}"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    for bad in (trunc, garbage):
        with pytest.raises(CheckpointError):
            read_state_dict(bad)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": _Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_state_dict(path)


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(UnknownModelError, match="unknown architecture 'nope'"):
        load_model("nope", checkpoint=tmp_path / "x.pth.tar")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(ARCH, checkpoint=tmp_path / "missing.pth.tar")


@pytest.mark.parametrize("args, message", [
    (["eval", "-a", "nope", "-m", "x.pth.tar"], "unknown architecture 'nope'"),
    (["eval", "-m", "missing.pth.tar"], "checkpoint not found"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "licq.cli", *args], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_warm_start_copies_matching_tensors_only():
    from licq.models import warm_start

    src = tiny_model("bmshj2018-hyperprior")
    dst = get_adapter("mbt2018-mean").build(*get_adapter("mbt2018-mean").tiny_args)
    loaded = warm_start(dst, src.state_dict())
    assert "g_a.0.weight" in loaded and "h_a.0.weight" in loaded
    assert not any(k.startswith("h_s.") for k in loaded)  # mean-scale h_s has other shapes
    assert not any("cdf" in k for k in loaded)
    assert torch.equal(dst.g_s[6].weight, src.g_s[6].weight)
