"""Copy finished `licq train` baselines into benchmarks/models/ as fp32 safetensors + manifest.

    python benchmarks/export_trained_baselines.py mbt2018-mean [--runs runs/baselines]
    python benchmarks/export_trained_baselines.py mbt2018-mean --continued
    python benchmarks/export_trained_baselines.py cheng2020-anchor --gpu runs/gpu3
    python benchmarks/export_trained_baselines.py mbt2018-mean --continued-gpu runs/gpu4

``--gpu DIR`` exports the stages of ``gpu_train_stages.py`` (DIR/<arch>-q<q>/ from its tar files:
weights without entropy-coder tables, train.json, train.log; the base's files beside q1). Those
runs are short, so their auxiliary loss is still far from converged: the quantiles are first
settled (``licq.qat.settle_quantiles``, 10,000 aux-only Adam steps, no data), then
``update(force=True)``; the manifest records the aux loss before and after.

``--continued-gpu DIR`` does the same for a GPU continuation of the committed models
(``gpu_train_stages.py --skip-cheng --mbt-init``; DIR/<arch>-q<q>/ from its tar files), with the
quantiles settled as for ``--gpu``.

``--continued`` exports the runs of ``continue_baselines.sh`` (``<arch>-q<q>-cont``, started from
the committed models): each quality's manifest entry keeps its earlier stages under ``stages`` and
its ``steps``/``train_seconds`` become the totals.

For each quality the final model (saved after update(force=True)) becomes
benchmarks/models/<arch>-<sizes>-q<q>.safetensors; the manifest records its sha256, steps and
training wall time of the base and quality stages, λ, the warm start, and the train.json files.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

from safetensors.torch import save_file  # noqa: E402

from licq._provenance import sha256_file  # noqa: E402
from licq.models import get_adapter, load_model, read_state_dict, warm_start  # noqa: E402
from licq.qat import settle_quantiles  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPU_CONTINUED = ("benchmarks/gpu_train_stages.py {flag} (GPU; continues the committed models), then "
                 "benchmarks/export_trained_baselines.py --continued-gpu, one or more times")
RECIPES = {  # how the committed models were made, stage by stage (manifest["recipe"])
    "mbt2018-mean": "benchmarks/train_baselines.sh, benchmarks/continue_baselines.sh, then "
                    + GPU_CONTINUED.format(flag="--skip-cheng --mbt-init"),
    "cheng2020-anchor": "benchmarks/gpu_train_stages.py (GPU, base and q1-q4) and "
                        "benchmarks/export_trained_baselines.py --gpu, then "
                        + GPU_CONTINUED.format(flag="--cheng-init"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "baselines")
    ap.add_argument("--continued", action="store_true")
    ap.add_argument("--gpu", type=Path, default=None)
    ap.add_argument("--continued-gpu", type=Path, default=None)
    ap.add_argument("--settle-steps", type=int, default=10000)
    ap.add_argument("--data-files", type=Path, default=None,
                    help="with --continued-gpu: the FILES.txt of make_devdata.py that travelled "
                         "(its names are recorded in the stage)")
    args = ap.parse_args()
    if args.gpu is not None:
        gpu(args)
        return
    if args.continued:
        continued(args)
        return
    if args.continued_gpu is not None:
        continued_gpu(args)
        return
    out_dir = ROOT / "benchmarks" / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    base = json.loads((args.runs / f"{args.arch}-base" / "train.json").read_text())
    sizes = "".join(f"{k}{v}" for k, v in zip(("N", "M"), base["sizes"], strict=False))
    entries = []
    for q in (1, 2, 3, 4):
        run = args.runs / f"{args.arch}-q{q}"
        info = json.loads((run / "train.json").read_text())
        sd = {k: v.contiguous() for k, v in read_state_dict(run / "model.pth.tar").items()}
        dst = out_dir / f"{args.arch}-{sizes}-q{q}.safetensors"
        save_file(sd, str(dst), metadata={"arch": args.arch, "quality": str(q)})
        load_model(args.arch, checkpoint=dst)  # loads strictly
        entries.append({"quality": q, "lambda": info["lambda"], "file": dst.name,
                        "sha256": sha256_file(dst), "steps": info["steps"],
                        "train_seconds": info["train_seconds"], "init": info["init"],
                        "command": info["provenance"]["command"],
                        "commit": info["provenance"]["commit"]})
    manifest = {"arch": args.arch, "sizes": base["sizes"],
                "base": {"lambda": base["lambda"], "steps": base["steps"],
                         "train_seconds": base["train_seconds"], "init": base["init"],
                         "command": base["provenance"]["command"],
                         "commit": base["provenance"]["commit"],
                         "machine": base["provenance"]["machine"]},
                "recipe": "benchmarks/train_baselines.sh", "models": entries}
    (out_dir / f"{args.arch}-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = base["train_seconds"] + sum(e["train_seconds"] for e in entries)
    print(f"wrote {len(entries)} models of {args.arch} ({total / 60:.0f} min of training)")


def continued(args: argparse.Namespace) -> None:
    out_dir = ROOT / "benchmarks" / "models"
    mpath = out_dir / f"{args.arch}-manifest.json"
    manifest = json.loads(mpath.read_text())
    for e in manifest["models"]:
        run = args.runs / f"{args.arch}-q{e['quality']}-cont"
        info = json.loads((run / "train.json").read_text())
        dst = out_dir / e["file"]
        sd = {k: v.contiguous() for k, v in read_state_dict(run / "model.pth.tar").items()}
        save_file(sd, str(dst), metadata={"arch": args.arch, "quality": str(e["quality"])})
        load_model(args.arch, checkpoint=dst)
        _append_stage(e, {"steps": info["steps"], "train_seconds": info["train_seconds"],
                          "init": info["init"], "command": info["provenance"]["command"],
                          "commit": info["provenance"]["commit"], "sha256": sha256_file(dst)})
    manifest["recipe"] = "benchmarks/train_baselines.sh, then benchmarks/continue_baselines.sh"
    mpath.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"updated {len(manifest['models'])} models of {args.arch} with their continuation")


def continued_gpu(args: argparse.Namespace) -> None:
    """The committed models continued on the GPU (gpu_train_stages.py --mbt-init): settle the
    quantiles, update(force=True), replace the files, append the stage to each manifest entry."""
    import torch

    torch.manual_seed(0)
    out_dir = ROOT / "benchmarks" / "models"
    mpath = out_dir / f"{args.arch}-manifest.json"
    manifest = json.loads(mpath.read_text())
    for e in manifest["models"]:
        run = args.continued_gpu / f"{args.arch}-q{e['quality']}"
        if not run.is_dir():  # a continuation of some qualities only (gpu_train_stages --qualities)
            print(f"q{e['quality']}: not continued in {args.continued_gpu}, unchanged")
            continue
        info = json.loads((run / "train.json").read_text())
        if info.get("diverged"):
            raise SystemExit(f"{run}: {info['note']}")
        dst = out_dir / e["file"]
        settle = _settle_and_save(args, manifest["sizes"], run, dst, e["quality"])
        stage = {**_summary(info), "sha256": sha256_file(dst), "settle_quantiles": settle}
        if args.data_files is not None:
            stage["data_files"] = args.data_files.read_text().split()
        _append_stage(e, stage)
        print(f"q{e['quality']}: +{info['steps']} steps; aux loss {settle['aux_loss_before']:.1f}"
              f" -> {settle['aux_loss_after']:.1f}")
    manifest["recipe"] = RECIPES[args.arch]
    mpath.write_text(json.dumps(manifest, indent=1) + "\n")


def _settle_and_save(args: argparse.Namespace, sizes: list[int], run: Path, dst: Path,
                     quality: int) -> dict:
    """A GPU stage's weights (no coder tables) → settled quantiles, update(force=True), ``dst``."""
    model = get_adapter(args.arch).build(*sizes)
    sd = read_state_dict(run / "model.safetensors")
    loaded = warm_start(model, {k: v.float() for k, v in sd.items()})
    missing = {k for k in set(sd) - set(loaded) if not k.endswith("scale_table")}
    if missing:
        raise SystemExit(f"{run}: tensors not loaded: {sorted(missing)}")
    before, after = settle_quantiles(model, steps=args.settle_steps)
    model.eval().update(force=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dst),
              metadata={"arch": args.arch, "quality": str(quality)})
    load_model(args.arch, checkpoint=dst)  # loads strictly
    return {"steps": args.settle_steps, "aux_loss_before": before, "aux_loss_after": after}


def _append_stage(e: dict, stage: dict) -> None:
    """Append a training stage to a manifest entry; steps and train_seconds become totals (the
    stages may differ in batch and crop size: each stage records its own where known)."""
    stages = e.pop("stages", None)
    if stages is None:  # first continuation: the entry itself is the first stage
        stages = [{k: e[k] for k in ("file", "sha256", "steps", "train_seconds", "init",
                                     "command", "commit")}]
    e.update(sha256=stage["sha256"], command=stage["command"], commit=stage["commit"],
             init=stage["init"],
             steps=sum(s["steps"] for s in stages) + stage["steps"],
             train_seconds=sum(s["train_seconds"] for s in stages) + stage["train_seconds"])
    e["stages"] = [*stages, stage]


def _summary(info: dict) -> dict:
    return {"lambda": info["lambda"], "steps": info["steps"],
            "train_seconds": info["train_seconds"], "init": info["init"],
            "batch_size": info["config"]["batch_size"], "patch_size": info["config"]["patch_size"],
            "lr": info["config"]["lr"], "device": info["config"]["device"],
            "command": info["provenance"]["command"], "commit": info["provenance"]["commit"],
            "date": info["provenance"]["date"], "machine": info["provenance"]["machine"]}


def gpu(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    out_dir = ROOT / "benchmarks" / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    base_dir = args.gpu / f"{args.arch}-q1"
    base = json.loads((base_dir / f"{args.arch}-base-train.json").read_text())
    sizes = "".join(f"{k}{v}" for k, v in zip(("N", "M"), base["sizes"], strict=False))
    entries = []
    for q in (1, 2, 3, 4):
        run = args.gpu / f"{args.arch}-q{q}"
        info = json.loads((run / "train.json").read_text())
        dst = out_dir / f"{args.arch}-{sizes}-q{q}.safetensors"
        settle = _settle_and_save(args, base["sizes"], run, dst, q)
        entries.append({"quality": q, "file": dst.name, "sha256": sha256_file(dst),
                        **_summary(info), "settle_quantiles": settle})
        print(f"q{q}: aux loss {settle['aux_loss_before']:.1f} -> {settle['aux_loss_after']:.1f};"
              f" wrote {dst.name}")
    manifest = {"arch": args.arch, "sizes": base["sizes"], "base": _summary(base),
                "recipe": "benchmarks/gpu_train_stages.py on the device tool's GPU, then "
                          "benchmarks/export_trained_baselines.py --gpu", "models": entries}
    (out_dir / f"{args.arch}-manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
