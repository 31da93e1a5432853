"""Which kernel ONNX Runtime runs each convolution of finished QAT runs on (int8 or float).

    python benchmarks/onnx_kernels.py --arch mbt2018-mean --quality 3 \
        runs/qat/mbt2018-mean-w8a8-latent-mixed runs/qat/mbt2018-mean-w8a8-dpa-slr0.01-latent-mixed

Each run's quality folder (``<run>/q<N>``, a finished ``licq qat``) is rebuilt on its baseline
(benchmarks/baselines.py), its g_a, h_a and g_s exported as QDQ ONNX and optimised by ONNX
Runtime as licq's int8 backend does (licq.export.onnx.int8_backend), and each convolution's
kernel read from the optimised graph: ``QLinearConv`` is int8, ``Conv``/``FusedConv``/
``NchwcConv`` float. Per-channel activation quantizers (DPA) export as per-channel Q/DQ pairs,
which QLinearConv does not take: this measures what that costs a deployment. Writes
benchmarks/results/onnx-kernels-<arch>-q<N>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections import Counter
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402
from baselines import baseline_checkpoint  # noqa: E402  (benchmarks/, the script's folder)

from licq._provenance import provenance  # noqa: E402
from licq.export.onnx import int8_backend, layer_kernel_map, layer_kernels  # noqa: E402
from licq.models import load_model  # noqa: E402
from licq.qat.engine import load_qat_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("g_a", "h_a", "g_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+", help="licq qat run folders (runs/qat/<name>)")
    ap.add_argument("--arch", default="bmshj2018-hyperprior")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = baseline_checkpoint(args.arch, args.quality, ROOT.parent / "shared")
    rows = []
    for run_dir in args.runs:
        run = load_qat_result(load_model(args.arch, checkpoint=ckpt), run_dir / f"q{args.quality}")
        with tempfile.TemporaryDirectory() as tmp:
            int8_backend(run.model, tmp, PARTS, threads=1)
            kernels, counts = {}, Counter()
            for part in PARTS:
                kernels.update(layer_kernel_map(Path(tmp) / f"{part}.opt.onnx", part))
                counts.update(layer_kernels(Path(tmp) / f"{part}.opt.onnx"))
        rows.append({"run": run_dir.name, "quality": args.quality,
                     "spec": json.loads((run_dir / f"q{args.quality}" / "qat.json").read_text())
                     ["qat"]["spec"], "kernel_counts": dict(counts), "kernels": kernels})
        print(run_dir.name, counts, flush=True)
    result = {"arch": args.arch, "quality": args.quality, "parts": list(PARTS), "rows": rows,
              "provenance": provenance()}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"onnx-kernels-{args.arch}-q{args.quality}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
