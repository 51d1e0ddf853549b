"""Denoising score matching for the EDM teacher (Karras et al. 2022, eq. 8 and sec. 5).

    sigma ~ LogNormal(P_mean, P_std),  n ~ N(0, sigma^2 I)
    loss = E[ lambda(sigma) || D(x + n, sigma) - x ||^2 ],  lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2

The squared norm is a mean over (valid) elements. With conditioning dropout p, each item's
cond is replaced by the model's learned null cond with probability p (classifier-free style),
so the teacher also denoises without a mel.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from cmaudio.objectives.base import Objective, SampleRNG, masked_mean
from cmaudio.param import append_dims


class DSMObjective(Objective):
    """EDM teacher loss. model: cmaudio.models.Denoiser (or anything with its call signature)."""

    kind = "dsm"

    def __init__(self, model, *, p_mean: float = -1.2, p_std: float = 1.2, cond_dropout: float = 0.0) -> None:
        super().__init__(model)
        self.p_mean, self.p_std, self.cond_dropout = p_mean, p_std, cond_dropout

    def forward(
        self,
        x: Tensor,
        cond: Optional[Tensor] = None,
        *,
        mask: Optional[Tensor] = None,
        seeds: Optional[Tensor] = None,
        step: int = 0,
    ) -> tuple[Tensor, dict]:
        """x (B, C, T) clean data; cond (B, C_cond, T_cond) or None; mask (B, 1, T) or None."""
        rng = SampleRNG(seeds, x.shape[0], x.device)
        u_drop = rng.rand()
        sigma = torch.exp(self.p_mean + self.p_std * rng.randn()).to(torch.float32)
        noise = rng.randn(*x.shape[1:])
        cond_drop = (u_drop < self.cond_dropout) if (self.cond_dropout > 0 and cond is not None) else None
        x_noisy = x + append_dims(sigma, x.ndim) * noise
        if mask is not None:
            x_noisy = x_noisy * mask
        denoised = self.online(x_noisy, sigma, cond, mask=mask, cond_drop=cond_drop)
        per_item = self.model.param.dsm_weight(sigma) * masked_mean((denoised - x) ** 2, mask)
        loss = per_item.mean()
        logs = {"loss": loss.detach(), "sigma_median": sigma.detach().median()}
        return loss, logs
