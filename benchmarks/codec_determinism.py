"""Does a `.licq` file decode to the same pixels elsewhere? Quantized exact path vs float paths.

    python benchmarks/codec_determinism.py run [--kodak ../shared/data/kodak] [-q 3] \
        [--fuzz-seconds 600] [--work runs/codec]            # everything below, then the JSON
    python benchmarks/codec_determinism.py encode --work DIR ...   # 2 threads, one process
    python benchmarks/codec_determinism.py decode --work DIR --threads 1 --batch 1 [--device cuda]
    python benchmarks/codec_determinism.py fuzz --work DIR --seconds 600

Variants, all on licq's ScaleHyperprior baseline at one quality (the embedded default):
  fp32          the FP32 model, CompressAI's float path;
  w8a8-float    the embedded packed W8A8 model, float (fake-quant) path (``exact=False``);
  w8a8-exact    the same model on licq's exact arithmetic path (the codec's default).
`encode` writes every Kodak image of every variant as a `.licq` file with 2 threads and records
the sha256 of the encoder-side reconstruction (what the encoder's own decoder produces).
`decode` decodes them in a fresh process with other settings (1 thread one image at a time; or
2 threads with the same-sized images decoded together as one batch; or on a GPU) and records, per
image, whether the reconstruction is bit-identical, its PSNR against the encoder-side
reconstruction and the decode time. `fuzz` mutates real files (truncation, bit flips, random
bytes, header fields and string bytes behind a recomputed CRC) and checks that every case ends
in the codec's own error or a clean decode within a time bound.
Writes benchmarks/results/codec-<arch>.json (command, commit, date, machine inside).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import time
import warnings
import zlib
from contextlib import nullcontext
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "w8a8-float", "w8a8-exact")
TIME_BOUND = 10.0  # seconds per fuzz case


def _models(quality: int, device: str = "cpu", arch: str | None = None, work: Path | None = None):
    """variant -> (model, model id, exact). Default: the embedded ScaleHyperprior and its packed
    W8A8 model; another ``arch``: its committed baseline (benchmarks/models) and a W8A8 PTQ of it
    (bundled calibration crops), packed once into ``work`` so every process loads the same file."""
    from licq.codec.api import default_packed_models, model_id
    from licq.defaults import DEFAULT_ARCH, default_checkpoints
    from licq.export import load_quantized
    from licq.models import load_model

    if arch in (None, DEFAULT_ARCH):
        arch = DEFAULT_ARCH
        packed = default_packed_models()[quality]
        fp32_path = default_checkpoints()[quality]
    else:
        fp32_path = next((ROOT / "benchmarks" / "models").glob(f"{arch}-*-q{quality}.safetensors"))
        packed = work / f"{arch}-q{quality}-w8a8.safetensors"
        if not packed.is_file():
            from licq.api import QuantConfig
            from licq.defaults import default_calibration_dir
            from licq.export import export_packed
            from licq.models import get_adapter
            from licq.models.loading import infer_args
            from licq.ptq import post_training_quantize

            m = load_model(arch, checkpoint=fp32_path)
            post_training_quantize(m, QuantConfig.uniform(8, 8), default_calibration_dir(),
                                   num_crops=32, seed=0, progress=False)
            packed.parent.mkdir(parents=True, exist_ok=True)
            export_packed(m, packed, arch=arch, sizes=infer_args(get_adapter(arch), m.state_dict()),
                          config=QuantConfig.uniform(8, 8), quality=quality)
    fp32 = load_model(arch, checkpoint=fp32_path).eval().to(device)
    q = load_quantized(packed)[0].eval().to(device)
    return {"fp32": (fp32, model_id(fp32_path), False),
            "w8a8-float": (q, model_id(packed), False),
            "w8a8-exact": (q, model_id(packed), True)}, {"fp32": str(fp32_path.name),
                                                         "packed": str(packed.name), "arch": arch}


def _digest(x: torch.Tensor) -> str:
    from licq.data import to_uint8

    return hashlib.sha256(to_uint8(x.squeeze(0).cpu()).numpy().tobytes()).hexdigest()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    from licq.data import to_uint8

    d = (to_uint8(a.squeeze(0).cpu()).double() - to_uint8(b.squeeze(0).cpu()).double())
    mse = float((d**2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()


@torch.no_grad()
def encode(args: argparse.Namespace) -> None:
    from licq.codec import compress_image, decompress_bytes
    from licq.data import list_images, read_image, to_uint8

    torch.set_num_threads(2)
    work = Path(args.work)
    models, names = _models(args.quality, arch=args.arch, work=work)
    images = list_images(args.kodak)[: args.max_images]
    ref = {"threads": 2, "quality": args.quality, "models": names, "images": [p.name for p in images],
           "variants": {}}
    for v, (model, mid, exact) in models.items():
        if v not in args.variants:
            continue
        (work / v).mkdir(parents=True, exist_ok=True)
        rows = []
        for p in images:
            x = read_image(p)
            t0 = time.perf_counter()
            data = compress_image(model, mid, x, exact=exact)
            t_enc = time.perf_counter() - t0
            (work / v / f"{p.stem}.licq").write_bytes(data)
            t0 = time.perf_counter()
            x_hat = decompress_bytes(model, mid, data)
            t_dec = time.perf_counter() - t0
            torch.save(to_uint8(x_hat.squeeze(0)), work / v / f"{p.stem}.ref.pt")
            rows.append({"image": p.name, "bytes": len(data), "pixels": x.shape[-2] * x.shape[-1],
                         "sha256": _digest(x_hat),
                         "encode_seconds": t_enc, "decode_seconds": t_dec,
                         "psnr_vs_source": _psnr(x_hat, x)})
            print(f"encode {v} {p.name}: {len(data)} B, {t_enc:.2f}s / {t_dec:.2f}s", flush=True)
        ref["variants"][v] = rows
    (work / "encode.json").write_text(json.dumps(ref, indent=1) + "\n")


@torch.no_grad()
def decode(args: argparse.Namespace) -> None:
    from licq.codec import decompress_bytes
    from licq.codec.container import Container
    from licq.codec.exact import exact_paths
    from licq.eval.codec import crop_padding, pad_to_multiple

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    ref = json.loads((work / "encode.json").read_text())
    models, _ = _models(ref["quality"], args.device, ref["models"].get("arch"), work)
    out = {"threads": args.threads, "batch": args.batch, "device": args.device,
           "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "variants": {}}
    for v, (model, mid, exact) in models.items():
        if v not in ref["variants"]:  # a variant the encode step left out (--variants)
            continue
        rows = {r["image"]: r for r in ref["variants"][v]}
        names = list(rows)
        results = {}
        if args.batch == 1:
            for n in names:
                data = (work / v / f"{Path(n).stem}.licq").read_bytes()
                t0 = time.perf_counter()
                try:
                    x_hat = decompress_bytes(model, mid, data)
                    err = None
                except Exception as e:  # noqa: BLE001 - a failed decode is a result here
                    x_hat, err = None, f"{type(e).__name__}: {e}"
                results[n] = (x_hat, time.perf_counter() - t0, err)
        else:  # same-shaped images decoded together as one batch
            groups: dict[tuple, list[str]] = {}
            conts = {n: Container.from_bytes((work / v / f"{Path(n).stem}.licq").read_bytes())
                     for n in names}
            for n, c in conts.items():
                groups.setdefault((c.height, c.width), []).append(n)
            for (h, w), members in groups.items():
                for i in range(0, len(members), args.batch):
                    chunk = members[i:i + args.batch]
                    strings = [[s for n in chunk for s in conts[n].strings[g]]
                               for g in range(len(conts[chunk[0]].strings))]
                    t0 = time.perf_counter()
                    with exact_paths(model) if exact else nullcontext():
                        x = model.decompress(strings, list(conts[chunk[0]].shape))["x_hat"]
                    dt = (time.perf_counter() - t0) / len(chunk)
                    _, pad = pad_to_multiple(torch.empty(1, 1, h, w), 64)
                    x = crop_padding(x, pad).clamp(0, 1)
                    for k, n in enumerate(chunk):
                        results[n] = (x[k:k + 1], dt, None)
        rows_out = []
        for n in names:
            x_hat, dt, err = results[n]
            ref_pt = work / v / f"{Path(n).stem}.ref.pt"  # absent where only the files travel
            row = {"image": n, "decode_seconds": dt, "error": err}
            if x_hat is not None:
                row["match"] = _digest(x_hat) == rows[n]["sha256"]
                if ref_pt.is_file():
                    refx = torch.load(ref_pt).float().unsqueeze(0) / 255
                    row["psnr_vs_encoder_side"] = _psnr(x_hat, refx)
            else:
                row["match"] = False
            rows_out.append(row)
        m = sum(r["match"] for r in rows_out)
        print(f"decode {v} threads={args.threads} batch={args.batch} {args.device}: "
              f"{m}/{len(rows_out)} bit-exact", flush=True)
        out["variants"][v] = rows_out
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")


def _mutations(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "bitflip", "random", "header", "payload"])
    b = bytearray(data)
    if kind == "truncate":
        return kind, bytes(b[:rng.randrange(len(b))])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return kind, bytes(b)
    if kind == "random":
        n = rng.choice([0, 1, 4, 16, 64, 1024, rng.randrange(1, 100_000)])
        head = b"LICQ" + bytes([2, rng.randrange(2)]) if rng.random() < 0.5 else b""
        return kind, head + rng.randbytes(n)
    body = b[:-4]
    if kind == "header":  # plausible-looking but wrong header fields, CRC fixed up
        field = rng.choice(["size", "shape", "groups", "lengths"])
        if field == "size":
            struct.pack_into("<II", body, 22, rng.randrange(1 << 32), rng.randrange(1 << 32))
        elif field == "shape":
            struct.pack_into("<I", body, 31, rng.choice([0, 1, 2, 3, 1 << 20, (1 << 32) - 1]))
        elif field == "groups":
            body[30 + 1 + 4 * body[30]] = rng.randrange(256)
        else:
            i = rng.randrange(30, len(body) - 4)
            struct.pack_into("<I", body, i, rng.randrange(1 << 32))
    else:  # entropy-coded bytes changed, CRC fixed up: reaches the rANS decoder
        start = 30 + 1 + 4 * body[30] + 1
        for _ in range(rng.randint(1, 32)):
            i = rng.randrange(start, len(body))
            body[i] = rng.randrange(256)
    return kind, bytes(body) + struct.pack("<I", zlib.crc32(body))


def fuzz(args: argparse.Namespace) -> dict:
    from licq.codec import CodecFormatError, decompress_bytes

    torch.set_num_threads(1)
    work = Path(args.work)
    ref = json.loads((work / "encode.json").read_text())
    models, _ = _models(ref["quality"], arch=ref["models"].get("arch"), work=work)
    model, mid, _ = models["w8a8-exact"]
    files = sorted((work / "w8a8-exact").glob("*.licq"))
    seeds = [f.read_bytes() for f in files]
    rng = random.Random(args.seed)
    stats: dict[str, dict[str, int]] = {}
    failures, slowest = [], 0.0
    t_end = time.time() + args.seconds
    n = 0
    while time.time() < t_end:
        kind, data = _mutations(rng.choice(seeds), rng)
        t0 = time.perf_counter()
        try:
            decompress_bytes(model, mid, data)
            outcome = "decoded"  # a valid file (e.g. a flip that left the CRC and data valid)
        except CodecFormatError:
            outcome = "rejected"
        except Exception as e:  # noqa: BLE001 - anything else is a finding
            outcome = "crash"
            failures.append({"kind": kind, "error": f"{type(e).__name__}: {e}"[:300]})
        dt = time.perf_counter() - t0
        slowest = max(slowest, dt)
        if dt > TIME_BOUND:
            failures.append({"kind": kind, "error": f"took {dt:.1f}s"})
        stats.setdefault(kind, {}).setdefault(outcome, 0)
        stats[kind][outcome] += 1
        n += 1
    print(f"fuzz: {n} cases in {args.seconds:.0f}s, {len(failures)} failures, "
          f"slowest {slowest:.2f}s", flush=True)
    return {"cases": n, "seconds": args.seconds, "seed": args.seed, "by_kind": stats,
            "failures": failures[:20], "failure_count": len(failures),
            "slowest_case_seconds": slowest, "time_bound_seconds": TIME_BOUND}


def _summary(enc: dict, dec: dict, variant: str) -> dict:
    rows = dec["variants"][variant]
    return {"match": [sum(r["match"] for r in rows), len(rows)],
            "mismatched_images": [r["image"] for r in rows if not r["match"]],
            "min_psnr_vs_encoder_side": min((r["psnr_vs_encoder_side"] for r in rows
                                             if "psnr_vs_encoder_side" in r), default=None),
            "errors": sum(r["error"] is not None for r in rows),
            "decode_seconds_mean": sum(r["decode_seconds"] for r in rows) / len(rows),
            "threads": dec["threads"], "batch": dec["batch"], "device": dec["device"],
            "device_name": dec["device_name"]}


def run(args: argparse.Namespace) -> None:
    from licq._provenance import provenance

    prov = provenance()
    work = Path(args.work)
    me = [sys.executable, __file__]
    common = ["--work", str(work)]
    extra_enc = (["--arch", args.arch] if args.arch else []) + (
        ["--max-images", str(args.max_images)] if args.max_images else [])
    subprocess.run([*me, "encode", *common, "--kodak", args.kodak, "-q", str(args.quality),
                    "--variants", *args.variants, *extra_enc], check=True)
    decodes = {"cross_process_1thread": ["--threads", "1", "--batch", "1"],
               "cross_process_2threads_batch2": ["--threads", "2", "--batch", "2"]}
    for name, extra in decodes.items():
        subprocess.run([*me, "decode", *common, *extra, "-o", str(work / f"{name}.json")],
                       check=True)
    fz = fuzz(args) if args.fuzz_seconds > 0 else None
    write_results(work, args, prov, fz)


def write_results(work: Path, args: argparse.Namespace, prov: dict, fz: dict | None) -> None:
    from licq._provenance import isa_flags

    enc = json.loads((work / "encode.json").read_text())
    arch = enc["models"].get("arch", "bmshj2018-hyperprior")
    out = {"name": "licq-codec-determinism", "arch": arch,
           "quality": enc["quality"], "models": enc["models"], "images": len(enc["images"]),
           "encode": {"threads": 2, "process": "one process encodes all, and decodes each file "
                                               "once (the encoder-side reconstruction)"},
           "variants": {}}
    variants = [v for v in VARIANTS if v in enc["variants"]]
    for v in variants:
        rows = enc["variants"][v]
        entry = {"encode_seconds_mean": sum(r["encode_seconds"] for r in rows) / len(rows),
                 "decode_seconds_mean_encoder_side": sum(r["decode_seconds"] for r in rows)
                 / len(rows),
                 "bpp_mean": sum(8 * r["bytes"] / r["pixels"] for r in rows) / len(rows),
                 "psnr_mean": sum(r["psnr_vs_source"] for r in rows) / len(rows)}
        for f in sorted(work.glob("*.json")):
            if f.name in ("encode.json",):
                continue
            dec = json.loads(f.read_text())
            if "variants" in dec and v in dec["variants"]:
                entry[f.stem] = _summary(enc, dec, v)
        out["variants"][v] = entry
    ex = out["variants"]["w8a8-exact"]
    fp = out["variants"].get("fp32", {})
    # cross-thread: decoded with 1 thread (encoded with 2), in another process;
    # cross-process: another process with 2 threads and another batch composition (pairs)
    out["cross_thread_match"] = ex.get("cross_process_1thread", {}).get("match")
    out["cross_process_match"] = ex.get("cross_process_2threads_batch2", {}).get("match")
    out["fp32_cross_thread_match"] = fp.get("cross_process_1thread", {}).get("match")
    out["fp32_cross_process_match"] = fp.get("cross_process_2threads_batch2", {}).get("match")
    out["encode_seconds"] = ex["encode_seconds_mean"]  # the codec's default (exact) path
    out["decode_seconds"] = ex.get("cross_process_1thread", {}).get("decode_seconds_mean")
    out["fuzz_cases"] = fz["cases"] if fz else 0
    out["fuzz_failures"] = fz["failure_count"] if fz else None
    if "cross_device_gpu" in ex:  # decoded on the device tool's GPU (files encoded here)
        out["cross_device_match"] = ex["cross_device_gpu"]["match"]
        out["fp32_cross_device_match"] = fp.get("cross_device_gpu", {}).get("match")
    if "cross_machine_cpu" in ex:  # decoded on the device tool's (other) CPU, 1 thread
        out["cross_machine_match"] = ex["cross_machine_cpu"]["match"]
        out["fp32_cross_machine_match"] = fp.get("cross_machine_cpu", {}).get("match")
    lscpu = work / "device-lscpu.txt"
    if lscpu.is_file():
        txt = lscpu.read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in txt.splitlines()
                      if ln.startswith("Model name")), None)
        out["other_machine_cpu"] = {"model": model, "flags": sorted(isa_flags(txt))}
    out["decode_runs"] = {name: {v: out["variants"][v][name]["match"] for v in variants
                                 if name in out["variants"][v]}
                          for name in sorted({k for v in variants for k in out["variants"][v]
                                              if isinstance(out["variants"][v][k], dict)})}
    out["fuzz"] = fz
    out["procedure"] = "`codec_determinism.py run` (the command below)" if not (
        work / "cross_device_gpu.json").is_file() else (
        "encode, the encoder-side decode, the two local decodes and the fuzz run: "
        "`codec_determinism.py run --work runs/codec --fuzz-seconds 900`; other machine: the "
        "`.licq` files and encode.json copied to the device tool's machine and decoded there with "
        "`codec_determinism.py decode --device cuda --threads 1` (cross_device_gpu), "
        "`--device cpu --threads 1` (cross_machine_cpu) and `--device cpu --threads 8 --batch 2`, "
        "its lscpu in device-lscpu.txt; all merged by `codec_determinism.py report` (the command "
        "below)")
    out["licq"] = {"command": prov["command"], "commit": prov["commit"], "date": prov["date"],
                   "machine": prov["machine"]}
    dst = ROOT / "benchmarks" / "results" / f"codec-{arch}.json"
    dst.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dst}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "encode", "decode", "fuzz", "report"):
        p = sub.add_parser(name)
        p.add_argument("--work", default=str(ROOT / "runs" / "codec"))
        p.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "kodak"))
        p.add_argument("-q", "--quality", type=int, default=3)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--batch", type=int, default=1)
        p.add_argument("--device", default="cpu")
        p.add_argument("-o", "--output", default=None)
        p.add_argument("--seconds", "--fuzz-seconds", dest="fuzz_seconds", type=float, default=600)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                       help="encode (and so decode) only these variants")
        p.add_argument("--arch", default=None, help="another architecture's committed baseline "
                       "(benchmarks/models), quantized to W8A8 here")
        p.add_argument("--max-images", type=int, default=None)
    args = ap.parse_args()
    args.seconds = args.fuzz_seconds
    if args.cmd == "encode":
        encode(args)
    elif args.cmd == "decode":
        args.output = args.output or str(Path(args.work) / f"decode-{args.device}.json")
        decode(args)
    elif args.cmd == "fuzz":
        fz = fuzz(args)
        (Path(args.work) / "fuzz.out.json").write_text(json.dumps(fz, indent=1) + "\n")
    elif args.cmd == "report":
        from licq._provenance import provenance

        fzp = Path(args.work) / "fuzz.out.json"
        fz = json.loads(fzp.read_text()) if fzp.is_file() else None
        write_results(Path(args.work), args, provenance(), fz)
    else:
        run(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
