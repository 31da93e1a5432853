"""Which int8 convolution kernels to run on this CPU: per layer, measured (issue 8).

    python benchmarks/int8_kernels.py [--threads 1] [--hw 512 768] [--reps 7]

For every convolution of the ScaleHyperprior's analysis and synthesis transforms (N=64, M=96, the
shapes of licq's default model) at the input size of a Kodak image (768×512), times one call of:
  torch-fp32       the float layer in PyTorch (Conv2d, or ConvTranspose2d for g_s);
  torch-int8-<e>   PyTorch's quantized Conv2d / ConvTranspose2d (quint8 activations, per-channel
                   qint8 weights) on each quantized engine <e> this build supports (x86, fbgemm,
                   onednn, qnnpack);
  ort-fp32         ONNX Runtime, one float Conv node (optimisation "all": NCHWc kernels, the
                   reorders around the single node included);
  ort-int8         ONNX Runtime, one QLinearConv node (u8 activations, s8 or u8 per-channel
                   weights as licq.export.onnx stores 8-bit weights on this CPU; optimisation
                   "extended", what licq's int8 backend uses).
g_s's transposed convolutions are also timed in their sub-pixel form (Conv2d with 4× the output
channels + PixelShuffle, licq.export.subpixel), and g_a's RGB input layer in its space-to-depth
form (PixelUnshuffle + 3×3 Conv2d on 12 channels), which are what the int8 backend runs. Random
weights and inputs (the kernels' speed does not depend on the values); min over --reps calls
after one warm-up; inputs already quantized (the quantize step is not timed).
Writes benchmarks/results/int8-kernels-bmshj2018-hyperprior.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCH = "bmshj2018-hyperprior"


def _time(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _layers(hw: tuple[int, int]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, float layer, input shape) for g_a's convs, g_s's transposed convs and their
    sub-pixel convs, from a forward pass of licq's default architecture at ``hw``."""
    from licq.export.subpixel import (
        SubPixelConv,
        rewrite_transposed_convs,
        space_to_depth_supported,
        to_space_to_depth,
    )
    from licq.models import get_adapter

    model = get_adapter(ARCH).build(64, 96).eval()
    sub = get_adapter(ARCH).build(64, 96).eval()
    sub.load_state_dict(model.state_dict())
    rewrite_transposed_convs(sub)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for prefix, m in (("", model), ("sub:", sub)):
        for name, mod in m.named_modules():
            if isinstance(mod, nn.Conv2d | nn.ConvTranspose2d) and name.startswith(("g_a", "g_s")):
                hooks.append(mod.register_forward_hook(
                    lambda _m, inp, _o, key=prefix + name: shapes.__setitem__(key, tuple(inp[0].shape))))
    with torch.no_grad():
        x = torch.rand(1, 3, *hw)
        for m in (model, sub):
            m.g_s(torch.round(m.g_a(x)))
    for h in hooks:
        h.remove()
    out = []
    for name, mod in model.named_modules():
        if name in shapes and ".conv" not in name:
            out.append((name, mod, shapes[name]))
    for name, mod in sub.named_modules():
        if isinstance(mod, SubPixelConv) and name.startswith("g_s"):
            out.append((f"{name}(sub-pixel)", mod.conv, shapes["sub:" + name + ".conv"]))
    for name, mod, shape in list(out):  # the RGB input layer as int8 export runs it
        if isinstance(mod, nn.Conv2d) and space_to_depth_supported(mod) and shape[1] <= 4:
            s2d = to_space_to_depth(mod)
            pl, pr, pt, pb = s2d.pad
            s = s2d.stride
            out.append((f"{name}(space-to-depth)", s2d.conv,
                        (shape[0], shape[1] * s * s, (shape[2] + pt + pb) // s,
                         (shape[3] + pl + pr) // s)))
    return out


def _macs(mod: nn.Module, in_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        y = mod(torch.zeros(in_shape))
    k = mod.kernel_size[0] * mod.kernel_size[1]
    if isinstance(mod, nn.ConvTranspose2d):
        return in_shape[1] * in_shape[2] * in_shape[3] * mod.out_channels * k
    return y.numel() * mod.in_channels * k


def _torch_int8(mod: nn.Module, in_shape: tuple[int, ...], engine: str, reps: int) -> float:
    import torch.ao.nn.quantized as nnq

    torch.backends.quantized.engine = engine
    w = mod.weight.detach()
    transposed = isinstance(mod, nn.ConvTranspose2d)
    axis = 1 if transposed else 0
    scales = w.abs().amax(dim=[d for d in range(4) if d != axis]) / 127 + 1e-8
    qw = torch.quantize_per_channel(w, scales.double(), torch.zeros_like(scales, dtype=torch.long),
                                    axis, torch.qint8)
    kw = {"stride": mod.stride, "padding": mod.padding}
    if transposed:
        q = nnq.ConvTranspose2d(mod.in_channels, mod.out_channels, mod.kernel_size,
                                output_padding=mod.output_padding, **kw)
    else:
        q = nnq.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, **kw)
    q.set_weight_bias(qw, mod.bias.detach())
    q.scale, q.zero_point = 0.05, 128
    xq = torch.quantize_per_tensor(torch.rand(in_shape) * 4 - 2, 4 / 255, 128, torch.quint8)
    return _time(lambda: q(xq), reps)


def _ort(mod: nn.Conv2d, in_shape: tuple[int, ...], int8: bool, threads: int, reps: int) -> float:
    from onnx import TensorProto, helper, numpy_helper

    from licq.export.onnx import OPSET, ort_session, u8_weight_storage

    w = mod.weight.detach().numpy()
    cout = w.shape[0]
    p = mod.padding
    attrs = {"kernel_shape": list(mod.kernel_size), "strides": list(mod.stride),
             "pads": [p[0], p[1], p[0], p[1]]}
    if int8:
        u8 = u8_weight_storage()
        codes = np.clip(np.round(w / (np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127 + 1e-8)),
                        -127, 127)
        wq = (codes + 128).astype(np.uint8) if u8 else codes.astype(np.int8)
        wz = np.full(cout, 128 if u8 else 0, np.uint8 if u8 else np.int8)
        inits = [numpy_helper.from_array(a, n) for a, n in (
            (np.array(4 / 255, np.float32), "xs"), (np.array(128, np.uint8), "xz"), (wq, "w"),
            (np.full(cout, 0.01, np.float32), "ws"), (wz, "wz"),
            (np.array(0.05, np.float32), "ys"), (np.array(128, np.uint8), "yz"),
            (np.zeros(cout, np.int32), "b"))]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                                ["y"], **attrs)
        dt, x = TensorProto.UINT8, np.random.randint(0, 256, in_shape).astype(np.uint8)
        level = "extended"
    else:
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(
            mod.bias.detach().numpy(), "b")]
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
        dt, x = TensorProto.FLOAT, np.random.rand(*in_shape).astype(np.float32)
        level = "all"
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", dt, in_shape)],
                              [helper.make_tensor_value_info("y", dt, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    sess = ort_session(model.SerializeToString(), threads, level)
    return _time(lambda: sess.run(None, {"x": x}), reps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hw", type=int, nargs=2, default=[512, 768])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("-o", "--output", default=str(
        ROOT / "benchmarks/results" / f"int8-kernels-{ARCH}.json"))
    args = ap.parse_args()

    import onnxruntime

    from licq._provenance import provenance
    from licq.export.onnx import u8_weight_storage, u8s8_exact

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    engines = [e for e in ("x86", "fbgemm", "onednn", "qnnpack")
               if e in torch.backends.quantized.supported_engines]
    rows = []
    for name, mod, shape in _layers(tuple(args.hw)):
        row = {"layer": name, "type": type(mod).__name__, "input_shape": list(shape),
               "out_channels": mod.out_channels, "kernel": list(mod.kernel_size),
               "stride": list(mod.stride), "macs": _macs(mod, shape), "seconds": {}, "errors": {}}
        with torch.no_grad():
            x = torch.rand(shape)
            row["seconds"]["torch-fp32"] = _time(lambda m=mod, x=x: m(x), args.reps)
            for e in engines:
                try:
                    row["seconds"][f"torch-int8-{e}"] = _torch_int8(mod, shape, e, args.reps)
                except Exception as err:  # noqa: BLE001 - an engine without this layer type
                    row["errors"][f"torch-int8-{e}"] = str(err).splitlines()[0][:200]
        if isinstance(mod, nn.Conv2d):
            row["seconds"]["ort-fp32"] = _ort(mod, shape, False, args.threads, args.reps)
            row["seconds"]["ort-int8"] = _ort(mod, shape, True, args.threads, args.reps)
        int8 = {k: v for k, v in row["seconds"].items() if "int8" in k}
        row["fastest_int8"] = min(int8, key=int8.get) if int8 else None
        rows.append(row)
        print(f"{name:24s} " + "  ".join(f"{k} {v * 1e3:.2f}ms" for k, v in row["seconds"].items()),
              flush=True)

    rewritten_form = {r["layer"].split("(")[0]: r for r in rows if "(" in r["layer"]}

    def total(part: str, engine: str, rewritten: bool) -> float | None:
        """Sum over ``part``'s layers, each in its rewritten form if it has one and
        ``rewritten``, else in the original form."""
        sel = [rewritten_form.get(r["layer"], r) if rewritten else r for r in rows
               if r["layer"].startswith(part) and "(" not in r["layer"]]
        if not sel or any(engine not in r["seconds"] for r in sel):
            return None
        return sum(r["seconds"][engine] for r in sel)

    names = sorted({k for r in rows for k in r["seconds"]})
    totals = {"g_a": {e: total("g_a", e, False) for e in names},
              "g_a (space-to-depth input layer)": {e: total("g_a", e, True) for e in names},
              "g_s (transposed)": {e: total("g_s", e, False) for e in names},
              "g_s (sub-pixel)": {e: total("g_s", e, True) for e in names}}
    prov = provenance()
    doc = {"name": f"{ARCH}-int8-kernels", "arch": ARCH, "threads": args.threads,
           "input_hw": args.hw, "reps": args.reps, "torch": torch.__version__,
           "onnxruntime": onnxruntime.__version__, "torch_engines": engines,
           "u8s8_exact": u8s8_exact(), "weight_storage_8bit": "u8" if u8_weight_storage() else "s8",
           "layers": rows, "totals_seconds": totals,
           "licq": {k: prov[k] for k in ("command", "commit", "date", "machine")}}
    Path(args.output).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.output}")
    for part, t in totals.items():
        print(part, "  ".join(f"{k} {v * 1e3:.1f}ms" for k, v in t.items() if v is not None))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
