"""``licq compress`` / ``licq decompress``: the ``.licq`` codec."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from licq.cli._common import (
    _log,
    _set_threads,
)


def _codec_model(args: argparse.Namespace, quality: int | None = None):
    """(model, model id, path) from -m PACKED, or the embedded default packed model of -q."""
    from licq.codec.api import default_packed_models, model_id, zoo_packed_model
    from licq.defaults import DEFAULT_ARCH
    from licq.export import load_quantized
    from licq.models import list_models

    name = str(args.model) if args.model else None
    if name and not Path(name).is_file() and name in list_models() and name != DEFAULT_ARCH:
        path = zoo_packed_model(name, quality or args.quality or 3)
    elif name and name != DEFAULT_ARCH:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {path} (give a packed model file from "
                                    f"`licq export` or a zoo name: {', '.join(list_models())})")
    else:
        models = default_packed_models()
        q = quality or args.quality or 3
        if q not in models:
            raise ValueError(f"the embedded quantized default has qualities {sorted(models)}")
        path = models[q]
    model, _ = load_quantized(path)
    return model, model_id(path), path


def _write_new(path: Path, data: bytes, force: bool) -> None:
    from licq._provenance import atomic_write_bytes

    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    atomic_write_bytes(path, data)


def cmd_compress(args: argparse.Namespace) -> int:
    from licq.codec import compress_image
    from licq.codec.exact import ExactPathError
    from licq.data import read_image

    _set_threads(args.threads)
    model, mid, path = _codec_model(args)
    out = Path(args.output)
    if len(args.images) > 1 and not out.is_dir():
        raise ValueError("several images: -o must be an existing folder")
    for img in args.images:
        x = read_image(img)
        t0 = time.perf_counter()
        try:
            data = compress_image(model, mid, x, exact=not args.float_path, check=args.check)
        except ExactPathError as e:
            raise ExactPathError(f"{e}; use --float-path (decodes reliably only where float "
                                 "arithmetic matches this machine's)") from None
        dt = time.perf_counter() - t0
        dst = out / (Path(img).stem + ".licq") if out.is_dir() else out
        _write_new(dst, data, args.force)
        h, w = x.shape[-2:]
        _log(f"{img} -> {dst}: {len(data):,} bytes, {8 * len(data) / (h * w):.4f} bpp "
             f"(container included), {dt:.2f}s, model {path.name}")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from licq.codec import CodecFormatError, decompress_bytes
    from licq.codec.api import default_packed_models, find_model, model_id
    from licq.codec.container import Container
    from licq.data import save_image
    from licq.export import load_quantized

    _set_threads(args.threads)
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"not found: {src}")
    data = src.read_bytes()
    if args.model:
        model, mid, _ = _codec_model(args)
    else:
        c = Container.from_bytes(data)
        path = find_model(c.model_id, list(default_packed_models().values()))
        model, mid = load_quantized(path)[0], model_id(path)
    t0 = time.perf_counter()
    x_hat = decompress_bytes(model, mid, data)
    dt = time.perf_counter() - t0
    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (use --force to overwrite)")
    tmp = out.with_name(out.name + ".tmp" + out.suffix)
    try:
        save_image(x_hat, tmp)
        os.replace(tmp, out)
    except (OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise CodecFormatError(f"cannot write {out}: {e}") from None
    _log(f"{src} -> {out}: {x_hat.shape[-1]}x{x_hat.shape[-2]}, {dt:.2f}s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("compress", help="image(s) -> .licq file(s) with a packed quantized model")
    s.add_argument("images", type=Path, nargs="+")
    s.add_argument("-o", "--output", type=Path, required=True, help=".licq file (or a folder)")
    s.add_argument("-m", "--model", "--checkpoint", dest="model",
                   help="packed model file (licq export) or a zoo name with -q "
                   "(pretrained, W8A8, cached); default: the embedded W8A8 ScaleHyperprior")
    s.add_argument("-q", "--quality", type=int, help="quality of the embedded default (3)")
    s.add_argument("--float-path", action="store_true",
                   help="skip licq's exact arithmetic path (models it cannot run, e.g. "
                        "weight-only quantized ones); such files decode reliably only where float "
                        "arithmetic matches the encoder's")
    s.add_argument("--check", action="store_true",
                   help="also decode here and store the CRC of that reconstruction (4 bytes, one "
                        "more decode); `licq decompress` then fails unless its image is identical")
    s.add_argument("--force", action="store_true", help="overwrite existing outputs")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_compress)

    s = sub.add_parser("decompress", help=".licq file -> image (PNG)")
    s.add_argument("input", type=Path)
    s.add_argument("-o", "--output", type=Path, required=True)
    s.add_argument("-m", "--model", "--checkpoint", dest="model",
                   help="packed model file or zoo name with -q, as for "
                   "compress (default: found by model id among the embedded ones)")
    s.add_argument("-q", "--quality", type=int, help="quality, with -m ZOO_NAME")
    s.add_argument("--force", action="store_true", help="overwrite an existing image")
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_decompress)
