"""Where a model's W8A8 PTQ loss sits, measured on training-set crops (never Kodak).

    python benchmarks/floor_probe.py --arch cheng2020-anchor [--crops 16] [--variants w8a8 ...]

``act_floor.sh`` answers the same question on Kodak; choosing a QAT configuration from Kodak
figures would tune on the evaluation set, so this probe measures on crops of the training photos
instead: ``--crops`` 256-px crops of ../shared/data/train drawn with ``--seed`` (default 7; the
PTQ calibration draws its 32 crops with seed 0, so the two sets are different crops, though of
the same 130 photos). Every variant runs ``licq ptq`` (real bitstreams) over the four qualities,
calibrated as run_ptq.sh does, and its BD-rate is taken against ``licq eval`` of the FP32
baselines on the same crops.

Variants (``--variants``; default: w8a8, w8-wonly, float-yhat and float-<group> for every group):
  w8a8                   every layer W8A8 (the reference point)
  w8-wonly               8-bit weights, float activations
  float-<group>          W8A8, the input activations of that top-level group in float
                         (g_a, g_s, h_a, h_s; entropy_parameters, context_prediction where present)
  float-yhat             W8A8, the inputs that are the decoded latent ŷ in float (g_s's first
                         layer, and the context model where there is one)
  a<B>-<group>, a<B>-yhat  W8A8, those input activations at B bit (a10-g_s: 10 bit in g_s)

Per-variant results (CompressAI format) go to runs/floor-probe/<arch>/ (resumable: a finished
variant is reused, whatever code made it: after a change to quantization, delete that folder;
the committed cheng2020-anchor summary predates the decoded-latent fix in
licq.ptq.calibrate, which is what it found); the summary of the variants given, with
provenance (the summary's command, and each variant's ``licq ptq`` command), to
benchmarks/results/floor-probe-<arch>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

from baselines import baseline_checkpoint  # benchmarks/, the script's folder

warnings.filterwarnings("ignore", category=DeprecationWarning)

ROOT = Path(__file__).resolve().parents[1]
LICQ = Path(sys.executable).with_name("licq")

# the layers whose input is the decoded latent ŷ, per architecture family
YHAT = {"bmshj2018-hyperprior": ["g_s.0"], "mbt2018-mean": ["g_s.0", "context_prediction"],
        "cheng2020-anchor": ["g_s.0.conv1", "context_prediction"]}


def baseline_ckpts(arch: str, shared: Path) -> list[str]:
    """The committed FP32 baselines, q1..q4 (as benchmarks/baselines.sh)."""
    return [str(baseline_checkpoint(arch, q, shared)) for q in (1, 2, 3, 4)]


def groups_of(arch: str) -> list[str]:
    g = ["g_a", "g_s", "h_a", "h_s"]
    return g + (["entropy_parameters", "context_prediction"] if arch != "bmshj2018-hyperprior"
                else [])


def variant_config(name: str, arch: str) -> dict | None:
    """The bit config of a variant (None: the w8-wonly flags instead)."""
    if name == "w8-wonly":
        return None
    cfg: dict = {"version": 1, "default": {"w_bits": 8, "a_bits": 8}, "layers": {}}
    if name == "w8a8":
        return cfg
    m = re.fullmatch(r"(float|a(\d+))-(.+)", name)
    if not m:
        raise SystemExit(f"unknown variant {name!r}")
    a_bits = None if m.group(1) == "float" else int(m.group(2))
    what = m.group(3)
    names = YHAT[arch] if what == "yhat" else [what]
    for n in names:
        cfg["layers"][f"re:^{re.escape(n)}(\\.|$)"] = {"w_bits": 8, "a_bits": a_bits}
    return cfg


def make_crops(out: Path, train: Path, n: int, size: int, seed: int) -> None:
    if out.is_dir() and len(list(out.glob("*.png"))) == n:
        return
    from licq.data import CropSampler, save_image

    out.mkdir(parents=True, exist_ok=True)
    x = CropSampler(train, patch_size=size, seed=seed, flip=False).batch(n)
    for i, im in enumerate(x):
        save_image(im, out / f"crop{i:02d}.png")


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="cheng2020-anchor")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--variants", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from licq._provenance import provenance
    from licq.eval import bd_rate, read_results

    arch = args.arch
    train = args.shared / "data/train"
    variants = args.variants or (["w8a8", "w8-wonly", "float-yhat"]
                                 + [f"float-{g}" for g in groups_of(arch)])
    work = ROOT / "runs/floor-probe" / arch
    crops = work / f"crops-n{args.crops}-s{args.size}-seed{args.seed}"
    make_crops(crops, train, args.crops, args.size, args.seed)
    ckpts = baseline_ckpts(arch, args.shared)
    common = ["-a", arch, "-q", "1", "2", "3", "4", "-m", *ckpts, "-d", str(crops),
              "--threads", str(args.threads), "--no-progress"]
    tag = crops.name
    fp32 = work / f"fp32-{tag}.json"
    if not fp32.is_file():
        run([str(LICQ), "eval", *common, "--name", f"{arch}-fp32", "-o", str(fp32)])
    anchor = read_results(fp32)
    summary_path = ROOT / f"benchmarks/results/floor-probe-{arch}.json"
    rows: dict[str, dict] = {}  # the summary lists this command's variants (earlier runs reused)
    for v in variants:
        out = work / f"{v}-{tag}.json"
        cfg = variant_config(v, arch)
        if not out.is_file():
            if cfg is None:
                flags = ["--w-bits", "8", "--weight-only"]
            else:
                cfg_path = work / f"{v}.config.json"
                cfg_path.write_text(json.dumps(cfg) + "\n")
                flags = ["--bit-config", str(cfg_path)]
            run([str(LICQ), "ptq", *common, *flags, "--calib-dir", str(train),
                 "--calib-crops", "32", "--name", f"{arch}-ptq-{v}", "-o", str(out)])
        r = read_results(out)
        rows[v] = {"bd_rate_psnr": bd_rate(anchor, r), "bpp": r["results"]["bpp"],
                   "psnr-rgb": r["results"]["psnr-rgb"], "config": cfg,
                   "file": str(out.relative_to(ROOT)), "ptq_provenance": r["licq"].get("provenance")}
        print(f"{v}: BD-rate {rows[v]['bd_rate_psnr']:+.2f} %", flush=True)
        summary = {
            "what": "W8A8 PTQ variants on training-set crops (not Kodak), BD-rate (PSNR) against "
                    "the FP32 baselines on the same crops, real bitstreams",
            "arch": arch,
            "crops": {"dir": tag, "n": args.crops, "size": args.size, "seed": args.seed,
                      "source": "../shared/data/train"},
            "calibration": {"crops": 32, "seed": 0},
            "fp32": {"bpp": anchor["results"]["bpp"], "psnr-rgb": anchor["results"]["psnr-rgb"]},
            "variants": rows,
            "provenance": provenance(),
        }
        summary_path.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
