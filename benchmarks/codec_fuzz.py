"""Fuzz the .licq decoder: mutated files against the default and a mixed-precision model.

    python benchmarks/codec_fuzz.py [--cases 10000] [--seed 0] [--timeout 30]
        -> benchmarks/results/codec-fuzz.json

Base files: bundled sample images cropped to small sizes, encoded by each model (the embedded
W8A8 ScaleHyperprior at q3, and the same codec PTQ'd with the FMPQ 6x DP allocation, exported
with ``licq export``). Mutations, deterministic from ``--seed``:

* ``truncate``: every length of the smallest base file of each model;
* ``bitflip``: 1-8 random bit flips anywhere (the CRC rejects them);
* ``header``: a header field rewritten (flags, model id, height, width, latent dims and shape,
  group and string counts, string lengths, the digest), CRC recomputed so parsing goes on;
* ``payload``: entropy-coded bytes replaced, inserted or removed, CRC recomputed (the symbol
  digest is what can catch these);
* ``oversized``: a consistent header (image size and latent shape agree) declaring a large image
  over a small payload, up to the format's pixel limit, CRC recomputed;
* ``random``: random bytes, half of them behind a valid magic, version and CRC.

Each case is decoded by a long-lived worker process (1 thread) that resets the kernel's peak-RSS
mark before the case and reads it after (``/proc/self/clear_refs``, ``VmHWM``). Outcomes:
``decoded, same image`` / ``decoded, other image`` (an image came back: the one the
unmutated file decodes to, or another: a silent wrong image), ``refused`` (a licq error: the
one-line message users see), ``traceback`` (any other exception), ``crash`` (the worker died),
``hang`` (no answer within ``--timeout`` seconds; the worker is restarted).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import select
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import base64, hashlib, json, os, sys, time, traceback
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
torch.set_num_threads(1)
from licq.codec import decompress_bytes, model_id
from licq.errors import LicqError
from licq.export import load_quantized

models = {}

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1

print(json.dumps({"ready": True, "rss_kb": hwm_kb()}), flush=True)
for line in sys.stdin:
    case = json.loads(line)
    path = case["model"]
    if path not in models:
        models[path] = (load_quantized(path)[0], model_id(path))
    model, mid = models[path]
    data = base64.b64decode(case["data"])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    t0 = time.perf_counter()
    out = {"outcome": "decoded", "error": ""}
    try:
        x_hat = decompress_bytes(model, mid, data)
        out["image_sha"] = hashlib.sha256((x_hat * 255).round().byte().numpy().tobytes()).hexdigest()
    except LicqError as e:
        out = {"outcome": "refused", "error": f"{type(e).__name__}: {e}"[:300]}
    except Exception as e:
        out = {"outcome": "traceback", "error": f"{type(e).__name__}: {e}"[:300],
               "trace": traceback.format_exc()[-1500:]}
    out["seconds"] = time.perf_counter() - t0
    out["rss_kb"] = hwm_kb()
    print(json.dumps(out), flush=True)
"""


class Worker:
    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT, env=env, bufsize=1)
        first = self._read(300)
        if first is None or not first.get("ready"):
            raise SystemExit("the decode worker did not start")
        self.idle_rss_kb = first["rss_kb"]

    def _read(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"eof": True}

    def run(self, model: str, data: bytes, timeout: float) -> dict:
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(json.dumps({"model": model,
                                              "data": base64.b64encode(data).decode()}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"outcome": "crash", "error": f"worker gone (exit {self.proc.poll()})"}
        out = self._read(timeout)
        if out is None:
            self.proc.kill()
            self.proc.wait()
            return {"outcome": "hang", "error": f"no answer in {timeout:g} s",
                    "seconds": time.perf_counter() - t0}
        if out.get("eof"):
            code = self.proc.wait()
            return {"outcome": "crash", "error": f"worker exited with {code}",
                    "seconds": time.perf_counter() - t0}
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


# -- the container layout, to rewrite fields (licq.codec.container) --------------------------------
def fields(data: bytes) -> dict:
    """Offsets of a valid file's header fields and strings."""
    pos = 6
    out = {"model_id": (pos, 16)}
    pos += 16
    out["height"], out["width"] = (pos, 4), (pos + 4, 4)
    pos += 8
    ndim = data[pos]
    out["ndim"] = (pos, 1)
    out["shape"] = [(pos + 1 + 4 * i, 4) for i in range(ndim)]
    pos += 1 + 4 * ndim
    ngroups = data[pos]
    out["ngroups"] = (pos, 1)
    pos += 1
    out["counts"], out["lengths"], out["payload"] = [], [], []
    for _ in range(ngroups):
        (n,) = struct.unpack_from("<H", data, pos)
        out["counts"].append((pos, 2))
        pos += 2
        for _ in range(n):
            (length,) = struct.unpack_from("<I", data, pos)
            out["lengths"].append((pos, 4))
            out["payload"].append((pos + 4, length))
            pos += 4 + length
    out["tail"] = (pos, len(data) - 4 - pos)  # recon CRC and digest, when present
    return out


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def mutate_header(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    f = fields(data)
    body = bytearray(data[:-4])
    name = rng.choice(["flags", "model_id", "height", "width", "ndim", "shape", "ngroups",
                       "counts", "lengths", "tail"])
    extremes = [0, 1, 2, 63, 64, 65, 255, 256, 65535, 65536, 65537, 2**31 - 1, 2**32 - 1]
    if name == "flags":
        body[5] = rng.randrange(256)
    elif name in ("height", "width"):
        pos, _ = f[name]
        struct.pack_into("<I", body, pos, rng.choice(extremes + [rng.randrange(2**32)]))
    elif name in ("ndim", "ngroups"):
        body[f[name][0]] = rng.randrange(256)
    elif name in ("shape", "counts", "lengths") and f[name]:
        pos, size = rng.choice(f[name])
        value = rng.choice(extremes + [rng.randrange(2 ** (8 * size))]) % 2 ** (8 * size)
        body[pos:pos + size] = value.to_bytes(size, "little")
    else:  # model id or the recon CRC / digest bytes
        pos, size = f["model_id"] if name == "model_id" or not f["tail"][1] else f["tail"]
        i = pos + rng.randrange(size)
        body[i] = rng.randrange(256)
    return name, with_crc(bytes(body))


def mutate_payload(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    f = fields(data)
    body = bytearray(data[:-4])
    (lpos, _), (pos, length) = rng.choice(list(zip(f["lengths"], f["payload"], strict=True)))
    how = rng.choice(["replace", "insert", "delete", "zero"])
    if how == "replace" and length:
        for _ in range(rng.randint(1, 4)):
            body[pos + rng.randrange(length)] = rng.randrange(256)
    elif how == "zero" and length:
        body[pos:pos + length] = bytes(length)
    elif how == "insert":
        extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        body[pos + rng.randint(0, length):pos + rng.randint(0, length)] = extra
        new = length + len(extra)
        struct.pack_into("<I", body, lpos, new)
        if rng.random() < 0.5:  # keep the length field stale
            struct.pack_into("<I", body, lpos, length)
    elif length:
        cut = rng.randint(1, length)
        start = pos + rng.randrange(length - cut + 1)
        del body[start:start + cut]
        struct.pack_into("<I", body, lpos, length - cut)
    return how, with_crc(bytes(body))


def oversized(data: bytes, stride: int, max_pixels: int, rng: random.Random) -> tuple[str, bytes]:
    """A header whose image size and latent shape agree, declaring a large image."""
    f = fields(data)
    body = bytearray(data[:-4])
    side = rng.choice([1024, 2048, 4096]) if rng.random() < 0.9 else None
    if side is None:  # at the format's limit
        h, w = 8192, max_pixels // 8192
    else:
        h, w = side, rng.choice([side // 2, side])
    struct.pack_into("<II", body, f["height"][0], h, w)
    pad = 64
    dims = ((h + pad - 1) // pad * pad // stride, (w + pad - 1) // pad * pad // stride)
    for (pos, _), v in zip(f["shape"], dims, strict=False):
        struct.pack_into("<I", body, pos, v)
    return f"{h}x{w}", with_crc(bytes(body))


def cases(bases: dict[str, list[bytes]], n: int, seed: int, max_pixels: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for model, files in bases.items():
        b = min(range(len(files)), key=lambda i: len(files[i]))
        out += [{"model": model, "base": b, "kind": "truncate", "detail": str(k),
                 "data": files[b][:k]} for k in range(len(files[b]))]
    weights = {"bitflip": 0.25, "header": 0.3, "payload": 0.3, "oversized": 0.01, "random": 0.14}
    models = sorted(bases)
    while len(out) < n:
        kind = rng.choices(list(weights), list(weights.values()))[0]
        model = rng.choice(models)
        b = rng.randrange(len(bases[model]))
        data = bases[model][b]
        if kind == "bitflip":
            flipped = bytearray(data)
            flips = rng.randint(1, 8)
            for _ in range(flips):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            detail, new = f"{flips} bits", bytes(flipped)
        elif kind == "header":
            detail, new = mutate_header(data, rng)
        elif kind == "payload":
            detail, new = mutate_payload(data, rng)
        elif kind == "oversized":
            detail, new = oversized(data, 64, max_pixels, rng)
        else:
            size = rng.choice([0, 1, 4, 5, 6, 40, 200, 2000])
            raw = bytes(rng.randrange(256) for _ in range(size))
            if rng.random() < 0.5:
                raw = with_crc(data[:6] + raw)
                detail = f"{size} bytes behind magic/version, CRC valid"
            else:
                detail = f"{size} random bytes"
            new = raw
        out.append({"model": model, "base": b, "kind": kind, "detail": detail, "data": new})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case (a hang)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "codec-fuzz")
    ap.add_argument("-o", "--output", type=Path,
                    default=ROOT / "benchmarks" / "results" / "codec-fuzz.json")
    args = ap.parse_args(argv)

    import torch

    from licq._provenance import provenance
    from licq.cli import main as licq
    from licq.codec import compress_image, default_packed_models, model_id
    from licq.codec.container import MAX_PIXELS
    from licq.data import read_image
    from licq.defaults import sample_images
    from licq.export import load_quantized

    prov = provenance()
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    default = default_packed_models()[3]
    mixed = args.work / "mixed-fmpq-6x-q3.safetensors"
    alloc = ROOT / "benchmarks" / "results" / "fmpq-bmshj2018-hyperprior-dp-6x.json"
    if not mixed.is_file():
        licq(["export", "-q", "3", "--bit-config", str(alloc), "-o", str(mixed), "--no-progress"])
    models = {"default-w8a8-q3": default, "fmpq-6x-q3": mixed}
    crops = [(0, 64, 64), (1, 64, 96), (2, 128, 128)]
    bases: dict[str, list[bytes]] = {}
    base_info = []
    for name, path in models.items():
        model, mid = load_quantized(path)[0], model_id(path)
        bases[str(path)] = []
        for i, h, w in crops:
            x = read_image(sample_images()[i])[..., :h, :w]
            data = compress_image(model, mid, x)
            bases[str(path)].append(data)
            base_info.append({"model": name, "image": sample_images()[i].name, "size": [h, w],
                              "bytes": len(data)})
    todo = cases(bases, args.cases, args.seed, MAX_PIXELS)
    names = {str(p): n for n, p in models.items()}

    worker = Worker()
    normal_rss, base_sha = {}, {}
    for path, files in bases.items():  # a normal decode of each base file
        for k, data in enumerate(files):
            r = worker.run(path, data, args.timeout)
            if r["outcome"] != "decoded":
                raise SystemExit(f"a valid base file did not decode: {r}")
            normal_rss[f"{names[path]}:{crops[k][1]}x{crops[k][2]}"] = r["rss_kb"]
            base_sha[(path, k)] = r["image_sha"]
    normal_max = max(normal_rss.values())
    tally: dict[str, Counter] = defaultdict(Counter)
    findings, over_rss = [], []
    slowest = (0.0, None)
    peak = defaultdict(int)
    t_start = time.perf_counter()
    for k, case in enumerate(todo):
        r = worker.run(case["model"], case["data"], args.timeout)
        if not worker.alive():
            worker = Worker()
        if r["outcome"] == "decoded":  # the same image as the file it was made from, or not
            same = r["image_sha"] == base_sha[(case["model"], case["base"])]
            r["outcome"] = "decoded, same image" if same else "decoded, other image"
        tally[case["kind"]][r["outcome"]] += 1
        seconds = r.get("seconds", 0.0)
        if seconds > slowest[0]:
            slowest = (seconds, {"kind": case["kind"], "detail": case["detail"],
                                 "outcome": r["outcome"]})
        rss = r.get("rss_kb", 0)
        peak[case["kind"]] = max(peak[case["kind"]], rss)
        if rss > 2 * normal_max:
            over_rss.append({"kind": case["kind"], "detail": case["detail"], "rss_kb": rss,
                             "outcome": r["outcome"], "seconds": round(seconds, 3)})
        if r["outcome"] in ("traceback", "crash", "hang", "decoded, other image"):
            findings.append({"case": k, "model": names[case["model"]], "kind": case["kind"],
                             "detail": case["detail"], **{key: r.get(key) for key in
                                                          ("outcome", "error", "trace")},
                             "file_b64": base64.b64encode(case["data"]).decode()})
        if (k + 1) % 1000 == 0:
            print(f"{k + 1}/{len(todo)} cases, {time.perf_counter() - t_start:.0f}s", flush=True)
    worker.close()
    outcomes = Counter()
    for c in tally.values():
        outcomes.update(c)
    result = {
        "name": "codec-fuzz",
        "description": "mutated .licq files against the default and a mixed-precision model",
        "cases": len(todo),
        "seconds": time.perf_counter() - t_start,
        "seed": args.seed,
        "timeout_seconds": args.timeout,
        "models": {n: str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                   for n, p in models.items()},
        "base_files": base_info,
        "by_kind": {k: dict(v) for k, v in sorted(tally.items())},
        "outcomes": dict(outcomes),
        "crashes": outcomes["crash"], "tracebacks": outcomes["traceback"],
        "hangs": outcomes["hang"], "other_image": outcomes["decoded, other image"],
        "normal_decode_peak_rss_kb": normal_rss,
        "worker_idle_rss_kb": worker.idle_rss_kb,
        "peak_rss_kb_by_kind": dict(peak),
        "over_2x_normal_rss": over_rss,
        "slowest_case": {"seconds": slowest[0], **(slowest[1] or {})},
        "findings": findings,
        "max_pixels": MAX_PIXELS,
        "licq": {k: prov[k] for k in ("command", "commit", "date", "machine")},
    }
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("cases", "outcomes", "by_kind", "seconds")},
                     indent=1))
    print(f"over 2x the normal decode's peak RSS ({normal_max} kB): {len(over_rss)}; "
          f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
