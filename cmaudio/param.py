"""The EDM / consistency-model parameterization (Karras et al. 2022; Song et al. 2023).

One object, `KarrasParam`, owns every formula that involves sigma:

| code                  | paper symbol                  | where                               |
|-----------------------|-------------------------------|-------------------------------------|
| `sigma_min`           | epsilon (eps)                 | CM sec. 3, the time horizon [eps, T] |
| `sigma_max`           | T                             | CM sec. 3                           |
| `sigma_data`          | sigma_data                    | EDM Table 1                         |
| `rho`                 | rho                           | EDM eq. 5                           |
| `grid(N)`             | t_i, i = 1..N                 | CM appendix C (EDM eq. 5 reversed)   |
| `consistency_scalings`| c_skip(t), c_out(t), c_in(t)  | CM appendix C, eq. 26 (shifted by eps) |
| `denoiser_scalings`   | c_skip, c_out, c_in           | EDM Table 1                         |
| `c_noise`             | c_noise(sigma) = ln(sigma)/4  | EDM Table 1                         |

All arithmetic here runs in float32 at least (float64 inputs stay float64): callers convert
sigma before mixing it with bf16 activations. The consistency boundary condition
f(x, eps) = x holds *exactly*: at sigma = eps, c_skip = sigma_data^2 / sigma_data^2 = 1 and
c_out = sigma_data * 0 / ... = 0 in floating point, so f = 1 * x + 0 * F = x bit for bit
whatever the network F returns (as long as it is finite).

This module imports nothing else of cmaudio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class KarrasParam:
    """Noise levels and scalings of the EDM/consistency parameterization.

    Units: sigma is a standard deviation in the units of the data x (waveform amplitude in
    [-1, 1] for vocoders, normalised log-mel for mel decoders). Valid range:
    0 < sigma_min < sigma_max; sigma_data > 0; rho > 0.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.sigma_data <= 0 or self.rho <= 0:
            raise ValueError("sigma_data and rho must be positive")

    # ------------------------------------------------------------------ grid
    def grid(self, n: int, *, device=None, dtype=torch.float64) -> Tensor:
        """The N-point Karras grid in increasing order (CM appendix C).

        sigma_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho, i = 1..N,
        so grid[0] = eps and grid[N-1] = T. Returns shape (N,).
        """
        if n < 2:
            raise ValueError(f"a grid needs at least 2 points, got {n}")
        i = torch.arange(n, device=device, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        g = (lo + i / (n - 1) * (hi - lo)) ** self.rho
        g[0], g[-1] = self.sigma_min, self.sigma_max  # exact end points despite pow rounding
        return g.to(dtype)

    def grid_at(self, idx: Tensor, n: Tensor | int) -> Tensor:
        """sigma at (0-based) index `idx` of an `n`-point grid, element-wise (float64).

        Equivalent to grid(n)[idx] but works when n varies per element (CT curricula).
        idx: integer tensor, 0 <= idx <= n - 1.
        """
        idx = idx.to(torch.float64)
        n = torch.as_tensor(n, dtype=torch.float64, device=idx.device)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        s = (lo + idx / (n - 1) * (hi - lo)) ** self.rho
        s = torch.where(idx == 0, torch.full_like(s, self.sigma_min), s)
        return torch.where(idx == n - 1, torch.full_like(s, self.sigma_max), s)

    # ------------------------------------------------------------------ scalings
    def consistency_scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) of the consistency model (CM appendix C, eq. 26).

        c_skip = sigma_data^2 / ((sigma - eps)^2 + sigma_data^2)
        c_out  = sigma_data (sigma - eps) / sqrt(sigma_data^2 + sigma^2)
        c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
        Shapes follow sigma. c_skip(eps) == 1 and c_out(eps) == 0 exactly.
        """
        # sd2 as a tensor: `python_float / tensor` is computed as reciprocal * float, which is
        # not exactly 1 at the boundary; tensor / tensor of equal values is.
        sd2 = torch.full_like(sigma, self.sigma_data**2)
        d = sigma - self.sigma_min
        c_skip = sd2 / (d * d + sd2)
        c_out = self.sigma_data * d / torch.sqrt(sd2 + sigma * sigma)
        c_in = 1.0 / torch.sqrt(sigma * sigma + sd2)
        return c_skip, c_out, c_in

    def denoiser_scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) of the EDM denoiser D (EDM Table 1, no eps shift).

        c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)
        c_out  = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
        c_in   = 1 / sqrt(sigma^2 + sigma_data^2)
        """
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma * sigma + sd2)
        c_out = sigma * self.sigma_data / torch.sqrt(sigma * sigma + sd2)
        c_in = 1.0 / torch.sqrt(sigma * sigma + sd2)
        return c_skip, c_out, c_in

    @staticmethod
    def c_noise(sigma: Tensor) -> Tensor:
        """Network noise input c_noise = ln(sigma) / 4 (EDM Table 1). The one place it is defined."""
        return 0.25 * torch.log(sigma)

    def dsm_weight(self, sigma: Tensor) -> Tensor:
        """EDM loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM eq. 8)."""
        sd2 = self.sigma_data**2
        return (sigma * sigma + sd2) / (sigma * sigma * sd2)

    def default_sigmas(self, steps: int) -> tuple[float, ...]:
        """Decreasing noise levels for `steps`-step consistency sampling (CM Alg. 1).

        The first is always sigma_max (one-step sampling, CM sec. 3). Further ones are taken
        from a (steps+1)-point Karras grid, which spaces them geometrically-ish towards eps;
        the last grid point (eps itself) is dropped since re-noising to eps is a no-op.
        """
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if steps == 1:
            return (self.sigma_max,)
        g = self.grid(steps + 1).flip(0).tolist()
        return tuple(g[:steps])

    def to_dict(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "sigma_data": self.sigma_data, "rho": self.rho}


def batch_sigma(sigma: Tensor | float, x: Tensor) -> Tensor:
    """sigma as a (B,) tensor on x's device: float64 when x is, else float32; a scalar is broadcast."""
    s = torch.as_tensor(sigma, device=x.device)
    s = s.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or shape ({x.shape[0]},), got {tuple(s.shape)}")
    return s


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) tensor to (B, 1, ..., 1) with `ndim` dimensions for broadcasting."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def lognormal_sigma_cdf(sigma: Tensor, p_mean: float, p_std: float) -> Tensor:
    """P(ln sigma' <= ln sigma) for ln sigma' ~ N(p_mean, p_std^2)."""
    return 0.5 * (1 + torch.erf((torch.log(sigma) - p_mean) / (math.sqrt(2) * p_std)))
