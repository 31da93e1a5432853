"""Deployment figures: packed file sizes, ONNX Runtime int8 vs PyTorch timings, BitOps, BD-rate.

    python benchmarks/deploy.py [--threads 1] [--kodak ../shared/data/kodak] [-q 1 2 3 4] \
        [--configs w8a8 fmpq-4x] [--work runs/deploy]

For each quality of the ScaleHyperprior baselines (../shared/baselines) and each configuration
(uniform W8A8; the FMPQ DP allocation at 4x from benchmarks/results/fmpq-*-dp-4x.json), PTQ on
32 crops of ../shared/data/train (seed 0, never Kodak), then on all Kodak images through real
bitstreams, one process, the same thread count for every engine:
  fp32        the FP32 model in PyTorch;
  ort-fp32    the FP32 transforms exported to ONNX, run by ONNX Runtime (float kernels, graph
              optimisation "all": NCHWc convolutions, its fastest level for FP32 graphs);
  fakequant   the quantized model in PyTorch (float arithmetic on quantized values);
  int8        g_a, h_a and g_s exported as QDQ ONNX and run by ONNX Runtime, which fuses them
              into QLinearConv int8 kernels (licq.export.onnx, optimisation "extended"); 8-bit
              weights as int8 where ORT's u8·s8 kernels are exact on this CPU (VNNI), else as
              uint8 (licq.export.onnx.u8s8_exact); h_s and entropy coding as in PyTorch.
For W8A8 at the first quality the other 8-bit weight storage and the other optimisation level
are timed too ("variants").
Encode time = model.compress (transforms + entropy coding), decode time = model.decompress.
Also: packed file bytes (licq export) vs licq's size accounting vs the FP32 file, BitOps
(MACs x w_bits x a_bits), which kernel each ORT convolution ran on, ORT-vs-PyTorch output
differences per transform, BD-rate of int8 vs fakequant and of both vs FP32.
Writes benchmarks/results/deploy-bmshj2018-hyperprior.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCH = "bmshj2018-hyperprior"


def _mean(rows: list[dict], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows)


def _parity(ref: torch.nn.Module, test: torch.nn.Module, images: list[Path]) -> dict:
    """Max / mean |ORT − PyTorch| per transform on ``images`` (and rounded-latent mismatches)."""
    from licq.data import read_image
    from licq.eval.codec import pad_to_multiple

    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for p in images:
            x, _ = pad_to_multiple(read_image(p), 64)
            y_ref, y_test = ref.g_a(x), test.g_a(x)
            pairs = {"g_a": (y_ref, y_test),
                     "h_a": (ref.h_a(torch.abs(y_ref)), test.h_a(torch.abs(y_ref))),
                     "g_s": (ref.g_s(torch.round(y_ref)), test.g_s(torch.round(y_ref)))}
            for part, (a, b) in pairs.items():
                d = (a - b).abs()
                o = out.setdefault(part, {"max_abs_diff": 0.0, "mean_abs_diff": 0.0,
                                          "max_abs_ref": 0.0})
                o["max_abs_diff"] = max(o["max_abs_diff"], float(d.max()))
                o["mean_abs_diff"] += float(d.mean()) / len(images)
                o["max_abs_ref"] = max(o["max_abs_ref"], float(a.abs().max()))
            mism = float((torch.round(y_ref) != torch.round(y_test)).float().mean())
            out["g_a"]["rounded_latent_mismatch"] = (out["g_a"].get("rounded_latent_mismatch", 0.0)
                                                     + mism / len(images))
    return out


def main() -> None:  # noqa: PLR0915 - one linear benchmark
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kodak", default=str(ROOT.parent / "shared/data/kodak"))
    ap.add_argument("--calib", default=str(ROOT.parent / "shared/data/train"))
    ap.add_argument("--baselines", default=str(ROOT.parent / "shared/baselines"))
    ap.add_argument("-q", "--qualities", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--configs", nargs="+", default=["w8a8", "fmpq-4x"])
    ap.add_argument("--work", default=str(ROOT / "runs" / "deploy"))
    ap.add_argument("--max-images", type=int, default=None, help="(smoke runs only)")
    ap.add_argument("-o", "--output",
                    default=str(ROOT / "benchmarks/results" / f"deploy-{ARCH}.json"))
    args = ap.parse_args()

    from licq._provenance import provenance
    from licq.api import QuantConfig
    from licq.data import list_images
    from licq.eval.bdrate import bd_rate
    from licq.eval.codec import evaluate, mean_metrics
    from licq.eval.results import make_results
    from licq.export import export_packed
    from licq.export.onnx import (
        int8_backend,
        layer_kernel_map,
        layer_kernels,
        u8_weight_storage,
        u8s8_exact,
    )
    from licq.models import get_adapter, load_model
    from licq.models.loading import infer_args
    from licq.ptq import post_training_quantize
    from licq.quant.size import model_size

    torch.set_num_threads(args.threads)
    prov = provenance()
    images = list_images(args.kodak)[: args.max_images]
    work = Path(args.work)
    fmpq = json.loads((ROOT / f"benchmarks/results/fmpq-{ARCH}-dp-4x.json").read_text())
    fmpq_by_q = {p["quality"]: p["bit_config"] for p in fmpq["licq"]["points"]}

    def config_for(name: str, q: int) -> QuantConfig:
        if name == "w8a8":
            return QuantConfig.uniform(8, 8)
        if name == "fmpq-4x":
            return QuantConfig.from_dict(fmpq_by_q[q])
        raise SystemExit(f"unknown configuration {name}")

    engines: dict[str, list[dict]] = {"fp32": [], "ort-fp32": []}
    for c in args.configs:
        engines[f"{c}/fakequant"] = []
        engines[f"{c}/int8"] = []
    per_config: dict[str, dict] = {c: {"per_quality": []} for c in args.configs}
    parity: dict[str, dict] = {}
    variants: dict[str, dict] = {}
    for q in args.qualities:
        ckpt = Path(args.baselines) / f"{ARCH}-N64M96-q{q}.pth.tar"
        fp32 = load_model(ARCH, checkpoint=ckpt).eval()
        fp32_file = work / f"q{q}" / "fp32.safetensors"
        fp32_file.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in fp32.state_dict().items()}, str(fp32_file))
        t0 = time.time()
        rows = evaluate(fp32, images, progress=False)
        engines["fp32"].append({"quality": q, **mean_metrics(rows)})
        ort32 = int8_backend(fp32, work / f"q{q}" / "fp32-onnx", threads=args.threads,
                             opt_level="all")
        rows = evaluate(ort32, images, progress=False)
        engines["ort-fp32"].append({"quality": q, **mean_metrics(rows)})
        parity.setdefault("ort-fp32_vs_fp32", {})[f"q{q}"] = _parity(fp32, ort32, images[:4])
        print(f"q{q} fp32 + ort-fp32 done ({time.time() - t0:.0f}s)", flush=True)
        for c in args.configs:
            cfg = config_for(c, q)
            m = copy.deepcopy(fp32)
            post_training_quantize(m, cfg, args.calib, num_crops=32, patch_size=256, seed=0,
                                   progress=False)
            packed = work / f"q{q}" / f"{c}.safetensors"
            sizes = infer_args(get_adapter(ARCH), fp32.state_dict())
            export_packed(m, packed, arch=ARCH, sizes=sizes, config=cfg, quality=q)
            size = model_size(fp32, cfg)
            rows_fq = evaluate(m, images, progress=False)
            engines[f"{c}/fakequant"].append({"quality": q, **mean_metrics(rows_fq)})
            onnx_dir = work / f"q{q}" / f"{c}-onnx"
            i8 = int8_backend(m, onnx_dir, threads=args.threads)
            rows_i8 = evaluate(i8, images, progress=False)
            engines[f"{c}/int8"].append({"quality": q, **mean_metrics(rows_i8)})
            parity.setdefault(f"{c}/int8_vs_fakequant", {})[f"q{q}"] = _parity(m, i8, images[:4])
            if c == "w8a8" and q == args.qualities[0]:  # the other storage / optimisation level
                import licq.export.onnx as lonnx

                u8 = u8_weight_storage()
                alt = {f"storage-{'s8' if u8 else 'u8'}": (not u8, "extended"),  # (U8_WEIGHTS,
                       "opt-all": (None, "all")}                                 #  level)
                for vname, (u8_weights, level) in alt.items():
                    before, lonnx.U8_WEIGHTS = lonnx.U8_WEIGHTS, u8_weights
                    try:
                        be = int8_backend(m, work / f"q{q}" / f"{c}-{vname}-onnx",
                                          threads=args.threads, opt_level=level)
                        storage = "u8" if u8_weight_storage() else "s8"
                    finally:
                        lonnx.U8_WEIGHTS = before
                    rows_v = evaluate(be, images, progress=False)
                    variants[vname] = {
                        "quality": q, "opt_level": level, "weight_storage_8bit": storage,
                        "encode_seconds": _mean(rows_v, "encoding_time"),
                        "decode_seconds": _mean(rows_v, "decoding_time"),
                        "encode_seconds_default": _mean(rows_i8, "encoding_time"),
                        "decode_seconds_default": _mean(rows_i8, "decoding_time"),
                        "parity_vs_fakequant": _parity(m, be, images[:4])}
            kernels = {p: layer_kernels(onnx_dir / f"{p}.opt.onnx") for p in ("g_a", "h_a", "g_s")}
            onnx_bytes = {p: (onnx_dir / f"{p}.onnx").stat().st_size for p in ("g_a", "h_a", "g_s")}
            per_config[c]["per_quality"].append({
                "quality": q, "file_bytes": packed.stat().st_size,
                "accounted_bytes": size.model_bytes, "fp32_file_bytes": fp32_file.stat().st_size,
                "fp32_accounted_bytes": size.fp32_bytes,
                "file_vs_accounted": packed.stat().st_size / size.model_bytes - 1,
                "bitops_encode": _mean(rows_fq, "bitops_encode"),
                "bitops_decode": _mean(rows_fq, "bitops_decode"),
                "ort_kernels": kernels, "onnx_bytes": onnx_bytes,
                "ort_layer_kernels": {k: v for p in ("g_a", "h_a", "g_s") for k, v in
                                      layer_kernel_map(onnx_dir / f"{p}.opt.onnx", p).items()},
                "bit_config": cfg.to_dict()})
            print(f"q{q} {c} done ({time.time() - t0:.0f}s)", flush=True)

    def results(name: str) -> dict:
        return make_results(f"{ARCH}-{name}", [{k: v for k, v in r.items() if k != "quality"}
                                               for r in engines[name]])

    fp32_res = results("fp32")
    out_configs = {}
    for c in args.configs:
        fq, i8 = results(f"{c}/fakequant"), results(f"{c}/int8")
        pq = per_config[c]["per_quality"]
        enc = {e: _mean(engines[e], "encoding_time") for e in engines}
        dec = {e: _mean(engines[e], "decoding_time") for e in engines}
        can_bd = len(args.qualities) >= 4
        out_configs[c] = {
            "file_bytes": sum(p["file_bytes"] for p in pq) / len(pq),
            "accounted_bytes": sum(p["accounted_bytes"] for p in pq) / len(pq),
            "fp32_file_bytes": sum(p["fp32_file_bytes"] for p in pq) / len(pq),
            "encode_seconds_fp32": enc["fp32"], "decode_seconds_fp32": dec["fp32"],
            "encode_seconds_ort_fp32": enc["ort-fp32"], "decode_seconds_ort_fp32": dec["ort-fp32"],
            "encode_seconds_fakequant": enc[f"{c}/fakequant"],
            "decode_seconds_fakequant": dec[f"{c}/fakequant"],
            "encode_seconds_int8": enc[f"{c}/int8"], "decode_seconds_int8": dec[f"{c}/int8"],
            "encode_speedup_int8_vs_fp32": enc["fp32"] / enc[f"{c}/int8"],
            "decode_speedup_int8_vs_fp32": dec["fp32"] / dec[f"{c}/int8"],
            "bitops": sum(p["bitops_encode"] + p["bitops_decode"] for p in pq) / len(pq),
            "bitops_encode": sum(p["bitops_encode"] for p in pq) / len(pq),
            "bitops_decode": sum(p["bitops_decode"] for p in pq) / len(pq),
            "bd_rate_int8_vs_fakequant": bd_rate(fq, i8) if can_bd else None,
            "bd_rate_fakequant_vs_fp32": bd_rate(fp32_res, fq) if can_bd else None,
            "bd_rate_int8_vs_fp32": bd_rate(fp32_res, i8) if can_bd else None,
            "per_quality": pq,
            "results_fakequant": fq["results"], "results_int8": i8["results"],
        }
    doc = {
        "name": f"{ARCH}-deploy", "arch": ARCH, "threads": args.threads,
        "images": [p.name for p in images], "qualities": args.qualities,
        "engines": {"fp32": "PyTorch FP32", "ort-fp32": "ONNX Runtime, FP32 ONNX",
                    "fakequant": "PyTorch, fake-quantized model",
                    "int8": "ONNX Runtime, QDQ ONNX (QLinearConv int8 where fused)"},
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
        "u8s8_exact": u8s8_exact(),
        "weight_storage_8bit": "u8" if u8_weight_storage() else "s8",
        "ort_opt_level": {"int8": "extended", "ort-fp32": "all"},
        "variants": variants,
        "configs": out_configs, "fp32_results": fp32_res["results"],
        "ort_fp32_results": results("ort-fp32")["results"],
        "parity": parity,
        "licq": {"command": prov["command"], "commit": prov["commit"], "date": prov["date"],
                 "machine": prov["machine"]},
    }
    Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.output}")
    for c, v in out_configs.items():
        print(f"{c}: file {v['file_bytes']:.0f} B vs accounted {v['accounted_bytes']:.0f} B; "
              f"encode fp32 {v['encode_seconds_fp32']:.3f}s int8 {v['encode_seconds_int8']:.3f}s; "
              f"decode fp32 {v['decode_seconds_fp32']:.3f}s int8 {v['decode_seconds_int8']:.3f}s; "
              f"BD int8 vs fq {v['bd_rate_int8_vs_fakequant']}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
