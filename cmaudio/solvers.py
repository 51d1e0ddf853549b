"""Steps of the probability-flow ODE in the EDM parameterization.

The PF ODE (EDM eq. 4 with s(t) = 1, sigma(t) = t; CM eq. 2):

    dx/dsigma = (x - D(x, sigma)) / sigma

where D is a denoiser (any callable ``D(x, sigma, cond) -> x-shaped tensor``). The steps are
pure functions shared by consistency distillation (one teacher step from sigma_{n+1} to sigma_n)
and by the teacher sampler.

- `euler_step`: one explicit Euler step (EDM Alg. 1 without the correction).
- `heun_step`: Heun's 2nd-order method (EDM Alg. 1, lines 5-8); when sigma_next == 0 it falls
  back to Euler, as EDM does for the last step.

Shapes: x (B, C, T); sigma, sigma_next (B,) or scalars (sigma_next < sigma). Returns x at
sigma_next with x's shape and dtype. Imports only cmaudio.param.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from cmaudio.param import append_dims, batch_sigma

DenoiserFn = Callable[..., Tensor]


def ode_derivative(denoiser: DenoiserFn, x: Tensor, sigma: Tensor, cond: Optional[Tensor], **kw) -> Tensor:
    """dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 4 / CM eq. 2)."""
    d = denoiser(x, sigma, cond, **kw).to(x.dtype)
    return (x - d) / append_dims(sigma, x.ndim)


def euler_step(
    denoiser: DenoiserFn, x: Tensor, sigma: Tensor | float, sigma_next: Tensor | float, cond: Optional[Tensor] = None, **kw
) -> Tensor:
    """x(sigma_next) ~ x + (sigma_next - sigma) dx/dsigma at (x, sigma)."""
    s, sn = batch_sigma(sigma, x), batch_sigma(sigma_next, x)
    return x + append_dims(sn - s, x.ndim) * ode_derivative(denoiser, x, s, cond, **kw)


def heun_step(
    denoiser: DenoiserFn, x: Tensor, sigma: Tensor | float, sigma_next: Tensor | float, cond: Optional[Tensor] = None, **kw
) -> Tensor:
    """Heun's method from sigma to sigma_next (EDM Alg. 1 lines 5-8); Euler where sigma_next == 0."""
    s, sn = batch_sigma(sigma, x), batch_sigma(sigma_next, x)
    h = append_dims(sn - s, x.ndim)
    d = ode_derivative(denoiser, x, s, cond, **kw)
    x_euler = x + h * d
    positive = sn > 0
    if not bool(positive.any()):
        return x_euler
    sn_safe = torch.where(positive, sn, torch.ones_like(sn))  # avoid 0-division; masked out below
    d2 = ode_derivative(denoiser, x_euler, sn_safe, cond, **kw)
    x_heun = x + h * 0.5 * (d + d2)
    return torch.where(append_dims(positive, x.ndim), x_heun, x_euler)


SOLVERS = {"euler": euler_step, "heun": heun_step}


def get_solver(name: str):
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown ODE solver {name!r}; valid: {', '.join(SOLVERS)}") from None
