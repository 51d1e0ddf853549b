"""Waveform discriminators for the optional adversarial term (a fine-tune, never required).

Two families, as HiFi-GAN V1 + Vocos/UnivNet use them (PeriodWave-Turbo and CTM add the same kind of
term to few-step diffusion and consistency generators):

- `PeriodDiscriminator` (HiFi-GAN's MPD, Kong et al. 2020 sec. 2.2): the waveform (B, 1, T), right-padded by
  reflection to a multiple of the period p, is folded to (B, 1, T/p, p); Conv2d stack with kernels (5, 1),
  strides (3, 1) along T/p, so each column (every p-th sample) is judged on its own. Channels
  (width, 4 width, 16 width, 32 width, 32 width) -- HiFi-GAN's (32, 128, 512, 1024, 1024) at width 32.
- `ResolutionDiscriminator` (UnivNet's MRD, Jang et al. 2021; Vocos sec. 3.3): the magnitude of a centred
  Hann STFT (n_fft, hop n_fft/4), (B, 1, frames, bins), through Conv2d(1, width, (3, 9)) and four
  Conv2d(width, width, (3, 9), stride (1, 2)) along frequency, then (3, 3) convolutions.

All convolutions are weight-normalised, LeakyReLU(0.1) between them; the last layer gives a logit map
without activation. `MultiDiscriminator(periods, resolutions)` runs them all:

    forward(y (B, 1, T) float) -> list over sub-discriminators of (logits (B, -1), [feature maps])

Widths default to a quarter of HiFi-GAN's MPD (8 -> 8, 32, 128, 256, 256) and half of Vocos's MRD (16): the
term must fit a CPU fine-tune; at width 8 the five MPDs hold 2.6 M parameters against HiFi-GAN's 41 M, and on
one CPU thread a forward + backward of a (8, 1, 8192) batch takes ~50 ms per period and ~120 ms per resolution
(~400 ms at Vocos's width 32).

This module imports nothing of cmaudio.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1


def _judge(convs: nn.ModuleList, post: nn.Module, h: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The conv stack of a sub-discriminator: LeakyReLU after each conv, the last (post) conv linear ->
    (logits (B, -1), feature maps of every layer, the logit map last)."""
    fmaps = []
    for conv in convs:
        h = F.leaky_relu(conv(h), LRELU_SLOPE)
        fmaps.append(h)
    h = post(h)
    fmaps.append(h)
    return h.flatten(1), fmaps


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's sub-discriminator of period p: y (B, 1, T) -> (logits (B, -1), feature maps)."""

    def __init__(self, period: int, width: int = 8) -> None:
        super().__init__()
        if period < 1:
            raise ValueError(f"a period must be >= 1, got {period}")
        self.period = int(period)
        ch = [1, width, 4 * width, 16 * width, 32 * width, 32 * width]
        self.convs = nn.ModuleList()
        for i in range(5):
            stride = (3, 1) if i < 4 else (1, 1)
            self.convs.append(weight_norm(nn.Conv2d(ch[i], ch[i + 1], (5, 1), stride, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(ch[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, c, t = y.shape
        if t % self.period:
            pad = self.period - t % self.period
            y = F.pad(y, (0, pad), mode="reflect" if pad < t else "constant")
            t = y.shape[-1]
        h = y.reshape(b, c, t // self.period, self.period)
        return _judge(self.convs, self.post, h)


class ResolutionDiscriminator(nn.Module):
    """UnivNet/Vocos sub-discriminator on one STFT magnitude: y (B, 1, T) -> (logits (B, -1), feature maps)."""

    def __init__(self, n_fft: int, width: int = 16) -> None:
        super().__init__()
        if n_fft < 16:
            raise ValueError(f"n_fft must be >= 16, got {n_fft}")
        self.n_fft, self.hop = int(n_fft), int(n_fft) // 4
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(1, width, (3, 9), padding=(1, 4)))])
        for _ in range(4):
            self.convs.append(weight_norm(nn.Conv2d(width, width, (3, 9), stride=(1, 2), padding=(1, 4))))
        self.convs.append(weight_norm(nn.Conv2d(width, width, (3, 3), padding=(1, 1))))
        self.post = weight_norm(nn.Conv2d(width, 1, (3, 3), padding=(1, 1)))

    def forward(self, y: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(y.float().reshape(y.shape[0], -1), self.n_fft, self.hop, self.n_fft, self.window,
                          center=True, return_complex=True)
        h = spec.abs().transpose(1, 2)[:, None]  # (B, 1, frames, bins)
        return _judge(self.convs, self.post, h)


class MultiDiscriminator(nn.Module):
    """The MPD periods and MRD resolutions together: y (B, 1, T) -> [(logits (B, -1), fmaps)] per sub-discriminator."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), resolutions: Sequence[int] = (512, 1024, 2048),
                 *, period_width: int = 8, resolution_width: int = 16) -> None:
        super().__init__()
        if not periods and not resolutions:
            raise ValueError("an adversary needs at least one period or resolution")
        self.subs = nn.ModuleList([PeriodDiscriminator(p, period_width) for p in periods]
                                  + [ResolutionDiscriminator(n, resolution_width) for n in resolutions])

    def forward(self, y: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(y) for d in self.subs]
