"""Image quality metrics on 8-bit rounded RGB, as CompressAI's ``eval_model`` computes them."""

from __future__ import annotations

import math

import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from torch import Tensor

from licq.data import to_uint8

#: pytorch-msssim's 5-scale MS-SSIM with an 11-px window needs a side longer than (11-1)·2⁴.
MS_SSIM_MIN_SIDE = 161


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB between two images in [0, 1], both rounded to 8 bits first."""
    mse = (to_uint8(a).double() - to_uint8(b).double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 20 * math.log10(255.0) - 10 * math.log10(mse)


def ms_ssim(a: Tensor, b: Tensor) -> float:
    """MS-SSIM (pytorch-msssim) between two images in [0, 1], both rounded to 8 bits first.

    Returns NaN for images smaller than :data:`MS_SSIM_MIN_SIDE` on a side, where 5-scale
    MS-SSIM is undefined.
    """
    if min(a.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return float("nan")
    a8 = to_uint8(a).float() / 255.0
    b8 = to_uint8(b).float() / 255.0
    return float(_ms_ssim(a8, b8, data_range=1.0).item())


def likelihood_bits(likelihoods: dict[str, Tensor]) -> Tensor:
    """−Σ log₂ p over every latent's likelihoods: the rate estimate (differentiable), in bits."""
    return sum(torch.log(lk).sum() for lk in likelihoods.values()) / -math.log(2)


def bpp_from_likelihoods(likelihoods: dict[str, Tensor], num_pixels: int) -> float:
    """Estimated bits per pixel from the model's likelihoods (an estimate, not a bitstream)."""
    return float(likelihood_bits(likelihoods)) / num_pixels
