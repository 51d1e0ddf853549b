"""Curricula, target EMA rates, index samplers and EMA updates.

| code                    | paper symbol / equation                                           |
|-------------------------|-------------------------------------------------------------------|
| `ct_num_scales(k, K)`   | N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1 (CM app. C) |
| `ct_target_ema(k, K)`   | mu(k) = exp(s0 ln(mu0) / N(k)) (CM app. C)                          |
| `ict_num_scales(k, K)`  | N(k) = min(s0 2^floor(k/K'), s1) + 1, K' = floor(K/(log2 floor(s1/s0) + 1)) (iCT eq. 6) |
| `sample_uniform_index`  | n ~ U{1, ..., N-1} (CM Alg. 2/3), returned 0-based                 |
| `lognormal_index_probs` | p(n) ∝ erf((ln s_{n+1} - P_mean)/(√2 P_std)) - erf((ln s_n - P_mean)/(√2 P_std)) (iCT sec. 3.5) |
| `ema_update`            | theta- <- stopgrad(mu theta- + (1 - mu) theta) (CM Alg. 2, line 9) |

Indices here are 0-based: for an N-point increasing grid sigma[0] = eps .. sigma[N-1] = T,
a pair is (sigma[n], sigma[n+1]) with n in {0, ..., N-2}, which is the paper's (t_n, t_{n+1})
with its n in {1, ..., N-1}.

This module imports only cmaudio.param.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cmaudio.param import KarrasParam


def ct_num_scales(k: int, total: int, s0: int = 2, s1: int = 150) -> int:
    """CT discretisation curriculum N(k) (Song et al. 2023, appendix C). k in [0, K]."""
    total = max(int(total), 1)
    k = min(max(int(k), 0), total)
    return int(math.ceil(math.sqrt(k / total * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1)) + 1


def ct_target_ema(k: int, total: int, s0: int = 2, s1: int = 150, mu0: float = 0.9) -> float:
    """CT target EMA rate mu(k) = exp(s0 ln(mu0) / N(k)) (Song et al. 2023, appendix C); mu0 = 0 gives 0."""
    if mu0 <= 0.0:
        return 0.0
    return math.exp(s0 * math.log(mu0) / ct_num_scales(k, total, s0, s1))


def ict_num_scales(k: int, total: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT exponential curriculum N(k) = min(s0 2^floor(k/K'), s1) + 1 (Song & Dhariwal 2023, eq. 6).

    K' = floor(K / (log2 floor(s1/s0) + 1)); K' is at least 1.
    """
    k_prime = max(int(math.floor(total / (math.log2(math.floor(s1 / s0)) + 1))), 1)
    return int(min(s0 * 2 ** (int(k) // k_prime), s1)) + 1


def sample_uniform_index(num_scales: Tensor | int, u: Tensor) -> Tensor:
    """0-based lower index n ~ U{0, ..., N-2} from uniforms u in [0, 1) (shape (B,)).

    num_scales may be an int or a (B,) tensor. Returns int64 (B,).
    """
    n = torch.as_tensor(num_scales, device=u.device, dtype=torch.float64)
    return torch.clamp((u.to(torch.float64) * (n - 1)).floor(), max=n - 2).to(torch.int64)


def lognormal_index_probs(param: KarrasParam, num_scales: int, p_mean: float, p_std: float) -> Tensor:
    """Probabilities over n = 0..N-2 of drawing the pair (sigma_n, sigma_{n+1}) (iCT sec. 3.5).

    p(n) ∝ erf((ln sigma_{n+1} - P_mean)/(√2 P_std)) - erf((ln sigma_n - P_mean)/(√2 P_std)).
    Returns float64 (N-1,) summing to 1.
    """
    g = param.grid(num_scales)
    z = torch.erf((torch.log(g) - p_mean) / (math.sqrt(2.0) * p_std))
    w = (z[1:] - z[:-1]).clamp_min(0)
    if float(w.sum()) <= 0:  # every pair far in a tail: fall back to uniform rather than NaN
        w = torch.ones_like(w)
    return w / w.sum()


def sample_lognormal_index(param: KarrasParam, num_scales: int, p_mean: float, p_std: float, u: Tensor) -> Tensor:
    """0-based n with p(n) from `lognormal_index_probs`, by inverting the CDF at uniforms u (B,)."""
    cdf = torch.cumsum(lognormal_index_probs(param, num_scales, p_mean, p_std), 0).to(u.device)
    n = torch.searchsorted(cdf, u.to(torch.float64).contiguous(), right=True)
    return n.clamp(max=num_scales - 2).to(torch.int64)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """theta_target <- rate theta_target + (1 - rate) theta_source; buffers are copied.

    Rate 0 copies the source (the iCT stop-gradient target). Both modules must have the same
    structure. Works in place on the target's storage (its dtype is kept).
    """
    for pt, ps in zip(target.parameters(), source.parameters()):
        if rate == 0.0:
            pt.copy_(ps.detach())
        else:
            pt.lerp_(ps.detach().to(pt.dtype), 1.0 - rate)
    for bt, bs in zip(target.buffers(), source.buffers()):
        bt.copy_(bs)
