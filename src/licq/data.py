"""Images in and out: folders of images, tensors, seeded random crops for training/calibration."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from licq.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``root`` (recursively by default); a single file is allowed."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return files


def read_image_uint8(path: str | os.PathLike) -> Tensor:
    """An image file as a ``(3, H, W)`` uint8 tensor (grayscale/alpha converted to RGB)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "L", "RGBA", "P", "LA"):
                raise DataError(f"{path}: unsupported image mode {im.mode} (need 8-bit RGB)")
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file as a ``(1, 3, H, W)`` float tensor in [0, 1]."""
    return read_image_uint8(path).unsqueeze(0).float().div_(255.0)


def to_uint8(x: Tensor) -> Tensor:
    """``(…, 3, H, W)`` float in [0, 1] -> uint8, rounded as an 8-bit image file would store it."""
    return x.clamp(0, 1).mul(255.0).round().to(torch.uint8)


def save_image(x: Tensor, path: str | os.PathLike) -> None:
    """Save a ``(1, 3, H, W)`` or ``(3, H, W)`` float tensor in [0, 1] as an 8-bit image."""
    arr = to_uint8(x.squeeze(0)).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


class CropSampler:
    """Seeded random crops (with horizontal flips) from an image folder, held in memory.

    Sampling is driven by one ``torch.Generator``, so a run is reproducible from its seed and a
    checkpoint of :meth:`state` resumes the exact sequence. ``batch(n)`` draws the global batch;
    data-parallel ranks take slices of it, so N processes see what one process with the global
    batch sees.
    """

    def __init__(
        self, root: str | os.PathLike | Sequence[str | os.PathLike], patch_size: int = 256,
        seed: int = 0, flip: bool = True,
    ) -> None:
        if isinstance(root, str | os.PathLike):
            paths = list_images(root)
        else:
            paths = [Path(p) for p in root]
        self.paths = paths
        self.patch_size = patch_size
        self.flip = flip
        self.images = [read_image_uint8(p) for p in paths]
        small = [str(p) for p, im in zip(paths, self.images, strict=True)
                 if min(im.shape[1:]) < patch_size]
        if small:
            raise DataError(
                f"{len(small)} images smaller than the {patch_size}px crop, e.g. {small[0]}"
            )
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, num: int, batch_size: int) -> list[Tensor]:
        """``num`` crops as consecutive :meth:`batch` calls of at most ``batch_size`` each."""
        return [self.batch(min(batch_size, num - s)) for s in range(0, num, batch_size)]

    def batch(self, n: int) -> Tensor:
        """``(n, 3, P, P)`` float crops in [0, 1]."""
        g, p = self.generator, self.patch_size
        out = torch.empty(n, 3, p, p)
        for i in range(n):
            im = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
            h, w = im.shape[1:]
            top = int(torch.randint(h - p + 1, (1,), generator=g))
            left = int(torch.randint(w - p + 1, (1,), generator=g))
            crop = im[:, top:top + p, left:left + p]
            if self.flip and bool(torch.randint(2, (1,), generator=g)):
                crop = crop.flip(-1)
            out[i] = crop.float() / 255.0
        return out

    def state(self) -> Tensor:
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state)
