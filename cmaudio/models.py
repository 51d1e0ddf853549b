"""Denoiser and ConsistencyModel: a plain network wrapped by the Karras parameterization.

A network takes ``(x_in, c_noise, cond, mask)`` and knows nothing of sigma. The wrappers
here own the parameterization (cmaudio.param.KarrasParam) and run it in float32 around a
network body that may run under autocast (bf16 on GPU): set ``body_dtype``.

- `Denoiser` (EDM eq. 7): D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in x, c_noise, cond),
  an estimate of E[x_0 | x_sigma]; the teacher of consistency distillation.
- `ConsistencyModel` (CM eq. 5 / appendix C): f(x, sigma) = c_skip x + c_out F(...), with the
  eps-shifted scalings so that f(x, sigma_min) == x exactly.

Both accept ``cond=None`` when they carry a learned null condition (classifier-free style
conditioning dropout): the null vector, broadcast over the cond frames, stands for "no mel".
``cond_drop`` (B,) bool replaces the cond of chosen batch items with it (training).

Shapes: x (B, C, T) float; sigma (B,) or a scalar, same units as x; cond (B, C_cond, T_cond)
or None; mask (B, 1, T) with 1 for valid samples, or None. Output: (B, C, T) float32.

Imports: param, nets (through the caller). No typer, no training code.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
from torch import Tensor, nn

from cmaudio.param import KarrasParam, append_dims, batch_sigma


class _ParamWrapped(nn.Module):
    """Shared plumbing: sigma broadcasting, null cond, autocast body."""

    def __init__(
        self,
        net: nn.Module,
        param: KarrasParam,
        *,
        cond_channels: Optional[int] = None,
        cond_hop: int = 1,
        null_cond: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.param = param
        self.cond_channels = cond_channels
        self.cond_hop = cond_hop  # samples of x per cond frame (hop length for vocoders, 1 for mels)
        self.null_cond = nn.Parameter(torch.zeros(cond_channels)) if (null_cond and cond_channels) else None
        self.body_dtype: Optional[torch.dtype] = None  # e.g. torch.bfloat16 for autocast on GPU

    # -------------------------------------------------------------- helpers

    def _cond(self, cond: Optional[Tensor], x: Tensor, cond_drop: Optional[Tensor]) -> Optional[Tensor]:
        if cond is None:
            if self.null_cond is None:
                if self.cond_channels:
                    raise ValueError("this model was trained without conditioning dropout and needs a cond")
                return None
            frames = -(-x.shape[-1] // self.cond_hop)
            return self.null_cond.to(x.dtype)[None, :, None].expand(x.shape[0], -1, frames)
        if cond_drop is not None and self.null_cond is not None:
            null = self.null_cond.to(cond.dtype)[None, :, None].expand_as(cond)
            cond = torch.where(append_dims(cond_drop.to(torch.bool), cond.ndim), null, cond)
        return cond

    def _body(self, x_in: Tensor, c_noise: Tensor, cond: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
        dt = self.body_dtype
        ctx = torch.autocast(x_in.device.type, dtype=dt) if dt is not None else nullcontext()
        net_in = x_in.to(torch.float32) if x_in.dtype == torch.float64 else x_in
        cond_in = cond.to(torch.float32) if (cond is not None and cond.dtype == torch.float64) else cond
        with ctx:
            out = self.net(net_in, c_noise.to(torch.float32), cond_in, mask=mask)
        return out.to(x_in.dtype)

    def _combine(self, x, sigma, cond, mask, cond_drop, scalings):
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        s = batch_sigma(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in scalings(s))
        F = self._body(c_in * x, self.param.c_noise(s), self._cond(cond, x, cond_drop), mask)
        out = c_skip * x + c_out * F
        if mask is not None:
            out = out * mask
        return out


class Denoiser(_ParamWrapped):
    """EDM denoiser D(x, sigma) ~ E[x_0 | x_sigma] (EDM eq. 7, Table 1 scalings)."""

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        cond: Optional[Tensor] = None,
        *,
        mask: Optional[Tensor] = None,
        cond_drop: Optional[Tensor] = None,
    ) -> Tensor:
        """x (B, C, T), sigma (B,) or scalar -> D(x, sigma) (B, C, T), float32 (float64 if x is)."""
        return self._combine(x, sigma, cond, mask, cond_drop, self.param.denoiser_scalings)


class ConsistencyModel(_ParamWrapped):
    """Consistency function f(x, sigma) (CM eq. 5, appendix C); f(x, sigma_min) == x exactly."""

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        cond: Optional[Tensor] = None,
        *,
        mask: Optional[Tensor] = None,
        cond_drop: Optional[Tensor] = None,
    ) -> Tensor:
        """x (B, C, T), sigma (B,) or scalar in [sigma_min, sigma_max] -> f(x, sigma) (B, C, T)."""
        return self._combine(x, sigma, cond, mask, cond_drop, self.param.consistency_scalings)
