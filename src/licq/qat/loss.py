"""The rate-distortion loss that FP32 training and QAT both minimise."""

from __future__ import annotations

import torch
import torch.nn as nn
from pytorch_msssim import ms_ssim
from torch import Tensor

from licq.eval.metrics import likelihood_bits


class RateDistortionLoss(nn.Module):
    """``bpp + λ·255²·MSE`` (metric ``"mse"``) or ``bpp + λ·(1 − MS-SSIM)`` (``"ms-ssim"``).

    This is CompressAI's training objective: bpp is the likelihood estimate of the rate of every
    latent (y and z), MSE is computed on the reconstruction clamped to [0, 1]. Two differences
    from ``compressai.losses.RateDistortionLoss`` keep this class: the clamp (the distortion of
    the image evaluation measures) and ``rate_weight`` (0 drops the rate term: distortion-only
    training, an ablation of QAT's objective; ``bpp_loss`` is still reported).
    """

    def __init__(self, lmbda: float, metric: str = "mse", rate_weight: float = 1.0) -> None:
        super().__init__()
        if metric not in ("mse", "ms-ssim"):
            raise ValueError(f"metric must be 'mse' or 'ms-ssim', got {metric!r}")
        if lmbda <= 0:
            raise ValueError(f"λ must be positive, got {lmbda}")
        self.lmbda = lmbda
        self.metric = metric
        self.rate_weight = rate_weight

    def forward(self, output: dict, target: Tensor) -> dict[str, Tensor]:
        n, _, h, w = target.shape
        bpp = likelihood_bits(output["likelihoods"]) / (n * h * w)
        x_hat = output["x_hat"].clamp(0, 1)
        mse = torch.mean((x_hat - target) ** 2)
        out = {"bpp_loss": bpp, "mse_loss": mse}
        if self.metric == "mse":
            out["loss"] = self.rate_weight * bpp + self.lmbda * 255**2 * mse
        else:
            msssim = ms_ssim(x_hat, target, data_range=1.0)
            out["ms_ssim_loss"] = msssim
            out["loss"] = self.rate_weight * bpp + self.lmbda * (1 - msssim)
        return out


@torch.no_grad()
def mean_rd_loss(model: nn.Module, batches: list[Tensor], criterion: RateDistortionLoss) -> float:
    """``criterion``'s loss of ``model`` (in eval mode) averaged over the images of ``batches``."""
    model.eval()
    n = sum(x.shape[0] for x in batches)
    return sum(criterion(model(x), x)["loss"].item() * x.shape[0] for x in batches) / n
