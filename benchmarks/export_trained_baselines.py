"""Copy finished `licq train` baselines into benchmarks/models/ as fp32 safetensors + manifest.

    python benchmarks/export_trained_baselines.py mbt2018-mean [--runs runs/baselines]
    python benchmarks/export_trained_baselines.py mbt2018-mean --continued

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
from licq.models import load_model, read_state_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arch")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "baselines")
    ap.add_argument("--continued", action="store_true")
    args = ap.parse_args()
    if args.continued:
        continued(args)
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
        previous = {k: e[k] for k in ("file", "sha256", "steps", "train_seconds", "init",
                                      "command", "commit")}
        stages = e.pop("stages", None)
        if stages is None:  # first continuation: the entry itself is the first stage
            stages = [previous]
        dst = out_dir / e["file"]
        sd = {k: v.contiguous() for k, v in read_state_dict(run / "model.pth.tar").items()}
        save_file(sd, str(dst), metadata={"arch": args.arch, "quality": str(e["quality"])})
        load_model(args.arch, checkpoint=dst)
        stage = {"steps": info["steps"], "train_seconds": info["train_seconds"],
                 "init": info["init"], "command": info["provenance"]["command"],
                 "commit": info["provenance"]["commit"], "sha256": sha256_file(dst)}
        e.update(sha256=stage["sha256"], command=stage["command"], commit=stage["commit"],
                 init=stage["init"],
                 steps=sum(s["steps"] for s in stages) + stage["steps"],
                 train_seconds=sum(s["train_seconds"] for s in stages) + stage["train_seconds"])
        e["stages"] = [*stages, stage]
    manifest["recipe"] = "benchmarks/train_baselines.sh, then benchmarks/continue_baselines.sh"
    mpath.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"updated {len(manifest['models'])} models of {args.arch} with their continuation")


if __name__ == "__main__":
    main()
