"""Building blocks shared by the networks: noise embedding, FiLM, masks, resampling.

Shapes follow the network contract of cmaudio.nets: activations are (B, C, T) with time last;
masks are (B, 1, T) with 1 for valid steps and 0 for padding.

Mask discipline (what makes a padded batch give the same result as running each item alone):
every tensor that enters a convolution with a time kernel > 1 must be zero at invalid steps,
exactly as the convolution's own zero padding would be. Point-wise operations (1x1 convs,
biases, FiLM shifts) may make invalid steps non-zero; `apply_mask` zeroes them again before the
next time-mixing operation. A coarser level's mask is "any valid step in the window"
(`downsample_mask`), which is what the same item run alone, zero-padded to a multiple of the
hop, also produces.

This module imports nothing else of cmaudio.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ------------------------------------------------------------------------------------ noise


def sinusoidal_embedding(c_noise: Tensor, dim: int, *, min_freq: float = 1.0, max_freq: float = 1000.0) -> Tensor:
    """Deterministic sinusoidal features of a continuous noise input (Transformer / ADM style).

    c_noise: (B,) float, e.g. ln(sigma)/4 in about [-3, 1] (EDM Table 1).
    Frequencies (rad per unit of c_noise) are geometric from `min_freq` to `max_freq`, so the
    slowest feature is monotone over the useful range and the fastest resolves c_noise steps
    of ~1e-3. Returns (B, dim) float32: [sin(w c), cos(w c)]. Computed in float32 even under
    autocast so that nearby noise levels stay distinguishable.
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    c = c_noise.to(torch.float32).reshape(-1, 1)
    k = torch.arange(half, device=c.device, dtype=torch.float32) / max(half - 1, 1)
    freqs = torch.exp(math.log(min_freq) + k * (math.log(max_freq) - math.log(min_freq)))
    arg = c * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class NoiseEmbedding(nn.Module):
    """c_noise (B,) -> sinusoidal features -> 2-layer SiLU MLP -> (B, emb_dim)."""

    def __init__(self, emb_dim: int, *, freq_dim: Optional[int] = None) -> None:
        super().__init__()
        self.freq_dim = freq_dim or emb_dim
        self.linear1 = nn.Linear(self.freq_dim, emb_dim)
        self.linear2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, c_noise: Tensor) -> Tensor:
        # features in the weights' dtype (a no-op for fp32 weights; autocast then casts the matmuls)
        e = sinusoidal_embedding(c_noise, self.freq_dim).to(self.linear1.weight.dtype)
        return F.silu(self.linear2(F.silu(self.linear1(e))))


# ------------------------------------------------------------------------------------ norms


def channel_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-time-step LayerNorm over channels, no affine: (B, C, T) -> (B, C, T).

    Normalises each time step on its own, so padding never influences valid steps (unlike
    GroupNorm/BatchNorm over time). channel_norm(0) == 0.
    """
    mu = x.mean(dim=1, keepdim=True)
    d = x - mu
    var = (d * d).mean(dim=1, keepdim=True)
    return d * torch.rsqrt(var + eps)


# ------------------------------------------------------------------------------------ masks


def apply_mask(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """x * mask (broadcast over channels), or x unchanged when mask is None."""
    if mask is None:
        return x
    return x * mask.to(x.dtype)


def downsample_mask(mask: Optional[Tensor], factor: int) -> Optional[Tensor]:
    """(B, 1, T) -> (B, 1, T // factor): a coarse step is valid if any step in its window is."""
    if mask is None or factor == 1:
        return mask
    return F.max_pool1d(mask, factor, factor)


# ------------------------------------------------------------------------------------ resampling


def resample_kernel(factor: int) -> tuple[int, int]:
    """(kernel, padding) of a stride-`factor` (transposed) conv that maps T <-> factor * T exactly.

    kernel = factor + 2 (factor // 2), padding = factor // 2: for even factors this is the
    reference DiffWave upsampler (kernel 2f, padding f/2); odd factors get kernel 2f - 1.
    """
    p = factor // 2
    return factor + 2 * p, p


class Downsample(nn.Module):
    """Strided conv: (B, C_in, T) -> (B, C_out, T / factor); T must be a multiple of factor."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        k, p = resample_kernel(factor)
        self.conv = nn.Conv1d(c_in, c_out, k, stride=factor, padding=p)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Transposed conv: (B, C_in, T) -> (B, C_out, factor * T)."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        k, p = resample_kernel(factor)
        self.conv = nn.ConvTranspose1d(c_in, c_out, k, stride=factor, padding=p)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def resample_time(x: Tensor, num: int, den: int) -> Tensor:
    """Change the rate of (B, C, T) by num/den (one of them 1): nearest repeat up, mean-pool down."""
    if num == den:
        return x
    if den == 1:
        return torch.repeat_interleave(x, num, dim=-1)
    if num == 1:
        return F.avg_pool1d(x, den, den)
    raise ValueError(f"rate change {num}/{den} must be an integer up- or down-sampling")


def fit_length(x: Tensor, length: int) -> Tensor:
    """Crop or right-pad (replicating the last step) (B, C, T) to (B, C, length)."""
    t = x.shape[-1]
    if t == length:
        return x
    if t > length:
        return x[..., :length]
    if t == 0:
        raise ValueError("cond has no frames")
    return torch.cat([x, x[..., -1:].expand(*x.shape[:-1], length - t)], dim=-1)


# ------------------------------------------------------------------------------------ hop


def split_hop(hop: int, n: int) -> tuple[int, ...]:
    """Split `hop` into `n` integer factors, as balanced as possible, in increasing order.

    256, 4 -> (4, 4, 4, 4); 240, 4 -> (3, 4, 4, 5); 300, 4 -> (3, 4, 5, 5); 512, 4 -> (4, 4, 4, 8);
    256, 2 -> (16, 16). Balanced factors keep each resampling kernel short.
    """
    if hop < 1 or n < 1:
        raise ValueError(f"hop and n must be positive (got {hop}, {n})")

    best: Optional[tuple[int, ...]] = None

    def search(rest: int, k: int, lo: int, acc: tuple[int, ...]) -> None:
        nonlocal best
        if k == 1:
            if rest >= lo:
                cand = acc + (rest,)
                key = (max(cand), max(cand) - min(cand))
                if best is None or key < (max(best), max(best) - min(best)):
                    best = cand
            return
        for f in range(lo, rest + 1):
            if rest % f == 0 and f ** k <= rest:
                search(rest // f, k - 1, f, acc + (f,))

    search(hop, n, 1, ())
    assert best is not None
    return best
