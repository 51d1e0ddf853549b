"""DiffWave (Kong et al., ICLR 2021), the architecture of the reference lmnt-com/diffwave.

Used in two roles:

1. An EDM teacher (``embedding="fourier"``): wrapped by cmaudio.models.Denoiser, it takes the
   continuous c_noise = ln(sigma)/4 (EDM Table 1) through sinusoidal features into the same
   2-layer MLP the reference uses for its step table.
2. The reference network itself (``embedding="steps"``): c_noise is the diffusion step t in
   [0, T-1] of the reference's 50-step beta grid. Integer tensors index the sinusoidal step
   table; float tensors interpolate linearly between its rows, as the reference's
   ``DiffusionEmbedding._lerp_embedding`` does (fractional steps).

Architecture (paper sec. 3 and Fig. 2; parameter names equal the reference's state_dict so
its checkpoints load with ``load_state_dict(strict=True)``):

- input_projection: 1x1 conv C_in -> C, ReLU.
- diffusion_embedding: 128 features -> projection1 (512) -> SiLU -> projection2 (512) -> SiLU.
- spectrogram_upsampler (waveforms only): ConvTranspose2d over (mel, time) with kernel
  (3, 2f), stride (1, f), padding (1, f/2), LeakyReLU(0.4), once per factor f; the reference
  uses f = 16, 16 for hop 256; other hops split into two balanced factors (odd factors get
  kernel 2f - 1, see layers.resample_kernel).
- residual_layers[i]: y = dilated_conv(x + diffusion_projection(e)) + conditioner_projection(c)
  with dilation 2^(i mod dilation_cycle); gated tanh; output_projection -> (residual, skip);
  x <- (x + residual) / sqrt(2).
- sum of skips / sqrt(layers) -> skip_projection -> ReLU -> output_projection (zero-initialised).

Cost, measured 2026-11-26 (torch 2.11, fp32, batch 1, one forward pass on 1 s of 22.05 kHz
audio with 80 mels, hop 256; FLOPs by torch.utils.flop_counter.FlopCounterMode):
base (30 layers, 64 channels, cycle 10): 2,619,971 parameters, 57.1 GFLOPs per second of audio,
CPU 1.0x real time (dev box, 2-core Xeon VM, 1 thread, CPU time) / 1.6x (2 threads, idle 16-core
Xeon host); H100 fp32, batch 16: ~300x. tiny (4 layers, 8 channels, cycle 2, for tests):
352,771 parameters (mostly the fixed 128 -> 512 -> 512 embedding MLP), 0.34 GFLOPs per second.
Receptive field (residual stack): sum of the dilations, 3069 samples one side for base.

Shapes: x (B, C_in, T) (C_in = 1 for waveforms, n_mels in the mel domain); c_noise (B,);
cond (B, C_cond, T_cond) with T_cond = T / hop (waveforms) or T (mel domain), or None for an
unconditional net; mask (B, 1, T) or None. Output (B, C_in, T).

This module imports only cmaudio.errors and cmaudio.nets.layers.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmaudio.errors import ConfigError
from cmaudio.nets.layers import apply_mask, downsample_mask, fit_length, resample_kernel, sinusoidal_embedding, split_hop

# residual_layers, residual_channels, dilation_cycle (DiffWave paper Table 1: BASE = 30/64/10,
# LARGE = 30/128/10). "tiny" is for tests.
DIFFWAVE_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(residual_layers=4, residual_channels=8, dilation_cycle=2),
    "mini": dict(residual_layers=12, residual_channels=32, dilation_cycle=6),  # CPU demos (egs/mini)
    "small": dict(residual_layers=20, residual_channels=64, dilation_cycle=10),
    "base": dict(residual_layers=30, residual_channels=64, dilation_cycle=10),
    "large": dict(residual_layers=30, residual_channels=128, dilation_cycle=10),
}

EMBEDDING_FEATURES = 128  # width of the step table / sinusoidal features (reference: 2 x 64)
EMBEDDING_HIDDEN = 512  # width of the embedding MLP (reference)


def _conv1d(*args, **kwargs) -> nn.Conv1d:
    """Conv1d with Kaiming-normal weights, the reference's initialisation."""
    layer = nn.Conv1d(*args, **kwargs)
    nn.init.kaiming_normal_(layer.weight)
    return layer


def step_table(max_steps: int) -> Tensor:
    """The reference's (max_steps, 128) sinusoidal table of integer diffusion steps.

    Row t = [sin(t 10^(4 d / 63)), cos(t 10^(4 d / 63))], d = 0..63 (float32, computed in the
    same operation order as the reference so values match bit for bit).
    """
    steps = torch.arange(max_steps).unsqueeze(1)
    dims = torch.arange(64).unsqueeze(0)
    table = steps * 10.0 ** (dims * 4.0 / 63.0)
    return torch.cat([torch.sin(table), torch.cos(table)], dim=1)


class DiffusionEmbedding(nn.Module):
    """Noise-level embedding: (B,) -> (B, 512).

    mode "steps": the reference's step table (integer t) or its linear interpolation between
    rows floor(t) and ceil(t) (float t, clamped to [0, max_steps - 1]).
    mode "fourier": sinusoidal features of the continuous c_noise (layers.sinusoidal_embedding).
    """

    def __init__(self, max_steps: int, *, mode: str = "fourier") -> None:
        super().__init__()
        if mode not in ("steps", "fourier"):
            raise ConfigError(f"diffwave embedding must be 'steps' or 'fourier' (got {mode!r})")
        self.mode = mode
        self.max_steps = max_steps
        if mode == "steps":
            self.register_buffer("embedding", step_table(max_steps), persistent=False)
        self.projection1 = nn.Linear(EMBEDDING_FEATURES, EMBEDDING_HIDDEN)
        self.projection2 = nn.Linear(EMBEDDING_HIDDEN, EMBEDDING_HIDDEN)

    def features(self, t: Tensor) -> Tensor:
        if self.mode == "fourier":
            return sinusoidal_embedding(t, EMBEDDING_FEATURES)
        table = self.embedding
        if t.dtype in (torch.int32, torch.int64):
            return table[t]
        t = t.float().clamp(0, self.max_steps - 1)
        lo = torch.floor(t).long()
        hi = torch.ceil(t).long()
        w = (t - lo).unsqueeze(-1)
        return table[lo] + (table[hi] - table[lo]) * w

    def forward(self, t: Tensor) -> Tensor:
        # x * sigmoid(x) rather than F.silu: the reference's formula, so outputs match bit for bit
        x = self.projection1(self.features(t).to(self.projection1.weight.dtype))
        x = x * torch.sigmoid(x)
        x = self.projection2(x)
        return x * torch.sigmoid(x)


class SpectrogramUpsampler(nn.Module):
    """(B, n_mels, F) -> (B, n_mels, F * prod(factors)) by 2D transposed convs (reference)."""

    def __init__(self, factors: tuple[int, ...]) -> None:
        super().__init__()
        self.factors = tuple(factors)
        for i, f in enumerate(self.factors):
            k, p = resample_kernel(f)
            self.add_module(f"conv{i + 1}", nn.ConvTranspose2d(1, 1, [3, k], stride=[1, f], padding=[1, p]))

    def forward(self, x: Tensor, masks: Optional[list[Tensor]] = None) -> Tensor:
        """masks[i] (B, 1, F_i): valid frames at the input rate of stage i (None: no masking)."""
        x = x.unsqueeze(1)
        for i in range(len(self.factors)):
            if masks is not None:
                x = x * masks[i].unsqueeze(1).to(x.dtype)
            x = F.leaky_relu(getattr(self, f"conv{i + 1}")(x), 0.4)
        return x.squeeze(1)


class ResidualBlock(nn.Module):
    """One DiffWave residual layer: (x, e, c) -> ((x + residual) / sqrt 2, skip)."""

    def __init__(self, cond_channels: Optional[int], residual_channels: int, dilation: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        C = residual_channels
        self.dilated_conv = _conv1d(C, 2 * C, 3, padding=dilation, dilation=dilation)
        self.diffusion_projection = nn.Linear(EMBEDDING_HIDDEN, C)
        self.conditioner_projection = _conv1d(cond_channels, 2 * C, 1) if cond_channels else None
        self.output_projection = _conv1d(C, 2 * C, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, cond: Optional[Tensor], mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        y = apply_mask(x + self.diffusion_projection(emb).unsqueeze(-1), mask)  # the conv's padding is 0
        y = self.dilated_conv(y)
        if self.conditioner_projection is not None:
            y = y + self.conditioner_projection(cond)
        gate, filt = torch.chunk(y, 2, dim=1)
        y = self.output_projection(self.dropout(torch.sigmoid(gate) * torch.tanh(filt)))
        residual, skip = torch.chunk(y, 2, dim=1)
        return apply_mask((x + residual) / math.sqrt(2.0), mask), skip


class DiffWave(nn.Module):
    """DiffWave network F(x, c_noise, cond, mask) (see module docstring).

    Args:
        in_channels: C of x and of the output (1 for waveforms).
        cond_channels: mel bins (waveforms) or cond feature width (mel domain); None = unconditional.
        residual_layers, residual_channels, dilation_cycle: the reference's hyper-parameters.
        hop: samples per cond frame (waveforms; default 256); split into two balanced
            `upsample_factors` if those are None.
        upsample_factors: factors of the spectrogram upsampler (product = hop); reference (16, 16).
        domain: "wave" (cond at the frame rate, upsampled) or "mel" (cond at the input rate).
        embedding: "fourier" (continuous c_noise, EDM teacher) or "steps" (reference steps).
        max_steps: rows of the step table (the reference's len(noise_schedule)).
        dropout: dropout before each residual layer's output projection (not in the reference).
    """

    def __init__(
        self,
        in_channels: int = 1,
        cond_channels: Optional[int] = 80,
        *,
        residual_layers: int = 30,
        residual_channels: int = 64,
        dilation_cycle: int = 10,
        hop: Optional[int] = None,
        upsample_factors: Optional[tuple[int, ...]] = None,
        domain: str = "wave",
        embedding: str = "fourier",
        max_steps: int = 50,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if domain not in ("wave", "mel"):
            raise ConfigError(f"diffwave domain must be 'wave' or 'mel' (got {domain!r})")
        if residual_layers < 1 or residual_channels < 1 or dilation_cycle < 1:
            raise ConfigError("diffwave residual_layers, residual_channels and dilation_cycle must be >= 1")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1) (got {dropout})")
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.domain = domain
        self.residual_channels = residual_channels
        self.dilation_cycle = dilation_cycle
        if upsample_factors is not None:
            upsample_factors = tuple(int(f) for f in upsample_factors)
            if hop is not None and math.prod(upsample_factors) != hop:
                raise ConfigError(
                    f"diffwave upsample_factors {list(upsample_factors)} multiply to "
                    f"{math.prod(upsample_factors)}, not the hop {hop}"
                )
            hop = math.prod(upsample_factors)
        hop = 256 if hop is None else int(hop)
        factors: tuple[int, ...] = ()
        if domain == "wave" and cond_channels:
            factors = upsample_factors if upsample_factors is not None else split_hop(hop, 2)
        self.hop = hop if domain == "wave" else 1
        self.cond_hop = self.hop if domain == "wave" else 1

        self.input_projection = _conv1d(in_channels, residual_channels, 1)
        self.diffusion_embedding = DiffusionEmbedding(max_steps, mode=embedding)
        self.spectrogram_upsampler = SpectrogramUpsampler(factors) if factors else None
        self.residual_layers = nn.ModuleList(
            ResidualBlock(cond_channels, residual_channels, 2 ** (i % dilation_cycle), dropout=dropout)
            for i in range(residual_layers)
        )
        self.skip_projection = _conv1d(residual_channels, residual_channels, 1)
        self.output_projection = _conv1d(residual_channels, in_channels, 1)
        nn.init.zeros_(self.output_projection.weight)  # F == 0 at init (reference: weight only)
        nn.init.zeros_(self.output_projection.bias)

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        domain: str,
        in_channels: int,
        cond_channels: Optional[int],
        **overrides,
    ) -> "DiffWave":
        """Build DIFFWAVE_PRESETS[name]; `overrides` are constructor keywords (residual_layers, hop, ...)."""
        if name not in DIFFWAVE_PRESETS:
            raise ConfigError(f"unknown diffwave size {name!r}; valid: {', '.join(DIFFWAVE_PRESETS)}")
        kw = {**DIFFWAVE_PRESETS[name], **overrides}
        return cls(in_channels, cond_channels, domain=domain, **kw)

    def receptive_field(self) -> int:
        """One-sided receptive field in input steps through the dilated convs (cond path excluded)."""
        return sum(2 ** (i % self.dilation_cycle) for i in range(len(self.residual_layers)))

    def _cond(self, cond: Tensor, T: int, mask: Optional[Tensor]) -> Tensor:
        if self.spectrogram_upsampler is None:
            return apply_mask(fit_length(cond, T), mask)
        masks = None
        n = cond.shape[-1] * self.hop
        if mask is None and n > T:  # frames reach past the audio: the overhang is padding
            mask = cond.new_ones(cond.shape[0], 1, T)
        if mask is not None:
            mm = F.pad(mask, (0, n - T)) if n > T else mask[..., :n]
            fs = self.spectrogram_upsampler.factors
            masks = [downsample_mask(mm, math.prod(fs[i:])) for i in range(len(fs))]
        up = self.spectrogram_upsampler(cond, masks)
        return fit_length(up, T)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        """x (B, C, T), c_noise (B,) or (1,) (c_noise, or the step t), cond, mask -> (B, C, T).

        With mask=None this is the reference's forward exactly; with a mask (B, 1, T), masked
        steps are zeroed before every time-mixing conv so valid steps do not see the padding.
        """
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, T), got {tuple(x.shape)}")
        if (cond is None) != (self.cond_channels is None or self.cond_channels == 0):
            raise ValueError("cond must be given iff the net was built with cond_channels")
        B, _, T = x.shape
        m = mask.to(x.dtype).reshape(B, 1, T) if mask is not None else None
        c_noise = c_noise.reshape(-1)
        if c_noise.numel() not in (1, B):
            raise ValueError(f"c_noise must have shape ({B},) or (1,), got {tuple(c_noise.shape)}")
        h = apply_mask(F.relu(self.input_projection(apply_mask(x, m))), m)
        emb = self.diffusion_embedding(c_noise)  # (B or 1, 512); a single level broadcasts over the batch
        c = self._cond(cond, T, m) if cond is not None else None
        skip = None
        for layer in self.residual_layers:
            h, s = layer(h, emb, c, m)
            skip = s if skip is None else skip + s
        h = skip / math.sqrt(len(self.residual_layers))
        h = F.relu(self.skip_projection(h))
        return apply_mask(self.output_projection(h), m)
