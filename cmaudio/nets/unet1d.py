"""A 1D U-Net for waveforms (a mel-conditioned vocoder) and log-mel spectrograms.

The consistency model's network F in f(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond)
(CM appendix C). It knows nothing of sigma: it takes c_noise = ln(sigma)/4 (EDM Table 1) and
the already scaled input.

Architecture (levels 0..L, L = len(factors); level i runs at 1 / prod(factors[:i]) of the input
rate and has channels[i] channels):

    x -> in_conv (k=7)                                                   level 0
      -> [+cond] ResBlocks -> skip_0 -> Downsample(f_0)                   level 1
      ...                                                                 ...
      -> [+cond] ResBlocks (bottleneck, the frame rate for waveforms)     level L
      -> Upsample(f_{L-1}) -> cat(skip_{L-1}) -> 1x1 -> [+cond] ResBlocks
      ...
      -> out_conv (zero-initialised, so F == 0 at init) -> (B, C, T)

- ResBlock (pre-activation): act -> dilated conv (k=3, dilations 1, 3, 9, ...) -> per-time-step
  channel LayerNorm -> FiLM from the noise embedding (h (1 + scale) + shift, in EVERY block)
  -> act -> dropout -> 1x1 conv (zero-initialised, ADM-style) -> residual add. act is
  LeakyReLU(0.1) for the waveform presets (SiLU costs ~5x more per element on CPU, which matters
  at the audio rate) and SiLU for the mel presets.
- Noise embedding: sinusoidal features of c_noise -> 2-layer SiLU MLP (layers.NoiseEmbedding).
- Conditioning: cond -> conv (k=3) -> act at its own rate, then per level a 1x1 projection
  resampled to that level's rate (nearest-neighbour up, mean-pool down) and added at the start
  of every encoder level, the bottleneck and every decoder level. Waveforms: cond is a mel at
  the frame rate (cond_hop = prod(factors) samples per frame, the bottleneck rate); mel domain:
  cond is frame-level features at the input rate (cond_hop = 1).
- No normalisation over time (no GroupNorm/BatchNorm), so with a mask an item's output on its
  valid part is the same as when it is run alone (see layers.py, "mask discipline"). Inputs of
  any length are zero-padded on the right to a multiple of prod(factors) internally; the pad is
  treated as invalid like a user mask, and the output is cropped back.
- Receptive field: `receptive_field()` (an upper bound, one side, in input steps).

Presets (`UNET_PRESETS[domain][size]`; other hops keep the channels and re-split the factors).
Measured 2026-11-26 with torch 2.11, fp32, batch 1, one forward pass on 1 s of 22.05 kHz audio
(wave: 22050 samples + 87 frames of 80 mels; mel: 87 frames x 80 bins + 192-wide cond).
GFLOPs: torch.utils.flop_counter.FlopCounterMode (convs and matmuls; multiply-add = 2 FLOPs).
xRT = seconds of audio per second of compute:
  (a) the dev box's 2-core "Intel Xeon Processor" VM, torch.set_num_threads(1), process CPU time
      (the box was shared with other jobs; 2-thread wall time there under a load of ~4.5 was
      dominated by contention: small wave 9.5x median, 14x best);
  (b) torch.set_num_threads(2), wall time, median of 15, on an idle 16-core Xeon host (the GPU
      machine's CPU; its 1-thread speed matched (a) within 5%).

    domain size   channels             factors   blocks dil.     params  GFLOPs/s  xRT(a)  xRT(b)  RF
    wave   tiny   (4,8,16,32,32)       (4,4,4,4)   1   (1,3)     70,261    0.053     142     102   1707
    wave   small  (16,32,64,128,256)   (4,4,4,4)   2   (1,3,9) 1,941,841    1.31       27      33   2985
    wave   base   (32,64,128,256,512)  (4,4,4,4)   3   (1,3,9) 11,046,561   6.85       9.4    10.8  6819
    mel    tiny   (24,32,48)           (2,2)       1   (1,3)     99,880    0.011     868     730     28
    mel    small  (128,160,192)        (2,2)       2   (1,3,9) 1,947,760    0.179     209     191     58
    mel    base   (192,256,384)        (2,2)       3   (1,3,9)  8,356,624   0.581      66      45    148

RF = receptive_field(), one side, in samples (wave; about +-135 ms for small) or frames (mel).
On an H100 (fp32, batch 16 x 1 s) wave small runs at ~2300x real time.

Shapes: x (B, C, T) float; c_noise (B,) float; cond (B, C_cond, T_cond) or None; mask (B, 1, T)
with 1 = valid, or None. Output (B, C, T).

This module imports only cmaudio.errors and cmaudio.nets.layers.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmaudio.errors import ConfigError
from cmaudio.nets.layers import (
    Downsample,
    NoiseEmbedding,
    Upsample,
    apply_mask,
    channel_norm,
    downsample_mask,
    fit_length,
    resample_kernel,
    resample_time,
)

# Size presets per domain. `factors` here are the defaults (hop 256 for waveforms); other hops
# keep the channels and change the factors (nets.build_net splits the hop with layers.split_hop).
UNET_PRESETS: dict[str, dict[str, dict]] = {
    "wave": {
        "tiny": dict(channels=(4, 8, 16, 32, 32), factors=(4, 4, 4, 4), blocks_per_level=1,
                     dilations=(1, 3), emb_dim=32, cond_dim=32, activation="lrelu"),
        "small": dict(channels=(16, 32, 64, 128, 256), factors=(4, 4, 4, 4), blocks_per_level=2,
                      dilations=(1, 3, 9), emb_dim=64, cond_dim=128, activation="lrelu"),
        "base": dict(channels=(32, 64, 128, 256, 512), factors=(4, 4, 4, 4), blocks_per_level=3,
                     dilations=(1, 3, 9), emb_dim=256, cond_dim=256, activation="lrelu"),
    },
    "mel": {
        "tiny": dict(channels=(24, 32, 48), factors=(2, 2), blocks_per_level=1,
                     dilations=(1, 3), emb_dim=32, cond_dim=32, activation="silu"),
        "small": dict(channels=(128, 160, 192), factors=(2, 2), blocks_per_level=2,
                      dilations=(1, 3, 9), emb_dim=64, cond_dim=128, activation="silu"),
        "base": dict(channels=(192, 256, 384), factors=(2, 2), blocks_per_level=3,
                     dilations=(1, 3, 9), emb_dim=256, cond_dim=256, activation="silu"),
    },
}


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.1)


# Activations with act(0) == 0 (required by the mask discipline). SiLU is ~5x slower than
# LeakyReLU on CPU (exp per element), which matters at the audio rate.
ACTIVATIONS = {"silu": F.silu, "lrelu": _lrelu}


class ResBlock(nn.Module):
    """Pre-activation residual block with a dilated conv and FiLM from the noise embedding.

    x (B, C, T) masked, emb (B, E) -> (B, C, T) masked. The time receptive field grows by
    dilation * (kernel_size - 1) / 2 steps on each side.
    """

    def __init__(self, channels: int, emb_dim: int, *, dilation: int, kernel_size: int = 3,
                 dropout: float = 0.0, norm: bool = True, activation: str = "silu") -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.dilation = dilation
        self.kernel_size = kernel_size
        self.norm = norm
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                               padding=dilation * (kernel_size - 1) // 2)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv1d(channels, channels, 1)
        # Zero-initialised residual branch (ADM's zero_module): each block starts as identity,
        # which keeps a norm-free residual stream well scaled at init.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor, mask: Optional[Tensor]) -> Tensor:
        h = self.conv1(self.act(x))  # silu(0) == 0: masked steps stay zero for the conv
        if self.norm:
            h = channel_norm(h)
        scale, shift = self.film(emb).unsqueeze(-1).chunk(2, dim=1)
        h = self.act(h * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))  # 1x1: invalid steps cannot leak into valid ones
        return apply_mask(x + h, mask)


class UNet1d(nn.Module):
    """1D U-Net F(x, c_noise, cond, mask) for waveforms or mel spectrograms (see module doc).

    Args:
        in_channels: C of x (1 for waveforms, n_mels for mel spectrograms); output has C too.
        cond_channels: C_cond of cond (n_mels for a vocoder, feature width for a mel decoder),
            or None for an unconditional net (then forward's cond must be None).
        channels: channels per level, len(factors) + 1 entries, narrow at the input rate.
        factors: down-sampling factor between consecutive levels; internal padding is to a
            multiple of prod(factors). For waveforms prod(factors) must equal the mel hop.
        blocks_per_level: residual blocks per level in the encoder, the bottleneck and the decoder.
        dilations: dilation of block j in a level is dilations[j % len(dilations)].
        emb_dim: width of the noise embedding (sinusoidal features and MLP).
        cond_dim: width of the shared cond features before the per-level projections.
        dropout: dropout probability inside residual blocks (before their output conv).
        domain: "wave" (cond at the bottleneck rate, cond_hop = prod(factors)) or "mel" (cond at
            the input rate, cond_hop = 1).
        kernel_size: kernel of the dilated convs; norm: per-time-step channel LayerNorm in blocks.
    """

    def __init__(
        self,
        in_channels: int,
        cond_channels: Optional[int],
        *,
        channels: tuple[int, ...],
        factors: tuple[int, ...],
        blocks_per_level: int = 2,
        dilations: tuple[int, ...] = (1, 3, 9),
        emb_dim: int = 128,
        cond_dim: int = 128,
        dropout: float = 0.0,
        domain: str = "wave",
        kernel_size: int = 3,
        norm: bool = True,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        channels, factors, dilations = tuple(channels), tuple(factors), tuple(dilations)
        if len(channels) != len(factors) + 1:
            raise ConfigError(
                f"unet1d needs len(channels) == len(factors) + 1 (got {len(channels)} channels for "
                f"{len(factors)} factors); set model.channels to match model.factors"
            )
        if any(f < 1 for f in factors) or any(c < 1 for c in channels) or not dilations:
            raise ConfigError(f"unet1d channels and factors must be positive (got {channels}, {factors})")
        if domain not in ("wave", "mel"):
            raise ConfigError(f"unet1d domain must be 'wave' or 'mel' (got {domain!r})")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unet1d activation must be one of {', '.join(ACTIVATIONS)} (got {activation!r})")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1) (got {dropout})")
        self.in_channels = in_channels
        self.cond_channels = cond_channels
        self.channels = channels
        self.factors = factors
        self.dilations = dilations
        self.blocks_per_level = blocks_per_level
        self.kernel_size = kernel_size
        self.domain = domain
        self.act = ACTIVATIONS[activation]
        self.hop = math.prod(factors)  # input steps per bottleneck step; internal pad multiple
        self.cond_hop = self.hop if domain == "wave" else 1  # input steps per cond frame
        L = len(factors)
        self.rates = tuple(math.prod(factors[:i]) for i in range(L + 1))  # input steps per level step

        def blocks(c: int) -> nn.ModuleList:
            return nn.ModuleList(
                ResBlock(c, emb_dim, dilation=dilations[j % len(dilations)], kernel_size=kernel_size,
                         dropout=dropout, norm=norm, activation=activation)
                for j in range(blocks_per_level)
            )

        self.emb = NoiseEmbedding(emb_dim)
        self.in_conv = nn.Conv1d(in_channels, channels[0], 7, padding=3)
        self.enc = nn.ModuleList(blocks(channels[i]) for i in range(L))
        self.down = nn.ModuleList(Downsample(channels[i], channels[i + 1], factors[i]) for i in range(L))
        self.mid = blocks(channels[L])
        self.up = nn.ModuleList(Upsample(channels[i + 1], channels[i], factors[i]) for i in range(L))
        self.merge = nn.ModuleList(nn.Conv1d(2 * channels[i], channels[i], 1) for i in range(L))
        self.dec = nn.ModuleList(blocks(channels[i]) for i in range(L))
        self.out_conv = nn.Conv1d(channels[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)  # F == 0 at init
        nn.init.zeros_(self.out_conv.bias)

        if cond_channels:
            self.cond_in = nn.Conv1d(cond_channels, cond_dim, 3, padding=1)
            self.cond_enc = nn.ModuleList(nn.Conv1d(cond_dim, channels[i], 1) for i in range(L))
            self.cond_mid = nn.Conv1d(cond_dim, channels[L], 1)
            self.cond_dec = nn.ModuleList(nn.Conv1d(cond_dim, channels[i], 1) for i in range(L))
        else:
            self.cond_in = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        domain: str,
        in_channels: int,
        cond_channels: Optional[int],
        factors: Optional[tuple[int, ...]] = None,
        channels: Optional[tuple[int, ...]] = None,
        dropout: float = 0.0,
    ) -> "UNet1d":
        """Build a preset of UNET_PRESETS[domain][name], optionally with other factors/channels."""
        if domain not in UNET_PRESETS:
            raise ConfigError(f"unknown domain {domain!r} for unet1d; valid: {', '.join(UNET_PRESETS)}")
        presets = UNET_PRESETS[domain]
        if name not in presets:
            raise ConfigError(f"unknown unet1d size {name!r}; valid: {', '.join(presets)}")
        p = dict(presets[name])
        if factors is not None:
            factors = tuple(int(f) for f in factors)
            if channels is None and len(factors) != len(p["factors"]):
                raise ConfigError(
                    f"model.factors {list(factors)} has {len(factors)} entries but the {name} preset has "
                    f"{len(p['channels'])} channel levels; also set model.channels ({len(factors) + 1} entries)"
                )
            p["factors"] = factors
        if channels is not None:
            p["channels"] = tuple(int(c) for c in channels)
        return cls(in_channels, cond_channels, dropout=dropout, domain=domain, **p)

    # ------------------------------------------------------------------ properties
    def receptive_field(self) -> int:
        """One-sided receptive field r in input steps (an upper bound, computed from the layers).

        The output at step t depends only on x[t - r : t + r + 1] and the cond frames covering
        that span, provided the input is cut at a multiple of `hop` (the internal padding grid
        starts at step 0). See the module docstring for the layers; derivation per layer:
        conv (kernel k, dilation d) at a level of rate D: + d (k-1)/2 D; strided down conv
        (kernel f + 2p, padding p): + p D; transposed up conv from rate D: + D (floor((p+f-1)/f) + 1 - 1/f);
        cond path: (conv half-width + 1) cond frames.
        """
        r = 3.0  # in_conv, kernel 7
        L = len(self.factors)
        half = (self.kernel_size - 1) / 2

        def blocks_r(D: int) -> float:
            return sum(self.dilations[j % len(self.dilations)] * half * D for j in range(self.blocks_per_level))

        for i in range(L):
            r += blocks_r(self.rates[i])
            _, p = resample_kernel(self.factors[i])
            r += p * self.rates[i]
        r += blocks_r(self.rates[L])
        for i in reversed(range(L)):
            f, D = self.factors[i], self.rates[i + 1]
            _, p = resample_kernel(f)
            r += D * ((p + f - 1) // f) + D - D / f
            r += blocks_r(self.rates[i])
        r += 1  # out_conv, kernel 3
        if self.cond_in is not None:
            r += 2 * self.cond_hop  # cond conv (kernel 3) plus the frame containing t
        return int(math.ceil(r))

    # ------------------------------------------------------------------ forward
    def _cond_features(self, cond: Tensor, n_frames: int, mask0: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        cond = fit_length(cond, n_frames)
        cmask = downsample_mask(mask0, self.cond_hop) if mask0 is not None else None
        cond = apply_mask(cond, cmask)
        c = apply_mask(self.act(self.cond_in(cond)), cmask)
        return c, cmask

    def _inject(self, proj: nn.Module, c: Tensor, cmask: Optional[Tensor], level: int) -> Tensor:
        """Project the cond features and resample them from the cond rate to `level`'s rate."""
        h = apply_mask(proj(c), cmask)
        rate = self.rates[level]
        if rate <= self.cond_hop:
            return resample_time(h, self.cond_hop // rate, 1)
        return resample_time(h, 1, rate // self.cond_hop)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        """x (B, C, T), c_noise (B,), cond (B, C_cond, T_cond) | None, mask (B, 1, T) | None -> (B, C, T).

        T_cond is T / cond_hop rounded either way (cropped, or padded by repeating the last
        frame). With a mask, output steps with mask 0 are 0 and valid steps do not depend on
        what the invalid steps of x or cond hold.
        """
        if x.ndim != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, T), got {tuple(x.shape)}")
        if (cond is None) != (self.cond_in is None):
            raise ValueError("cond must be given iff the net was built with cond_channels")
        B, _, T = x.shape
        H = self.hop
        P = -(-T // H) * H
        m = None
        if mask is not None:
            m = mask.to(x.dtype).reshape(B, 1, T)
        if P != T:  # pad to a multiple of the hop; the pad is invalid like a user mask
            x = F.pad(x, (0, P - T))
            m = F.pad(m if m is not None else x.new_ones(B, 1, T), (0, P - T))
        masks = [m]
        for f in self.factors:
            masks.append(downsample_mask(masks[-1], f))

        c_noise = c_noise.reshape(-1)
        if c_noise.numel() not in (1, B):
            raise ValueError(f"c_noise must have shape ({B},) or (1,), got {tuple(c_noise.shape)}")
        emb = self.emb(c_noise)  # (B or 1, emb_dim); a single level broadcasts over the batch
        c = cmask = None
        if self.cond_in is not None:
            c, cmask = self._cond_features(cond, P // self.cond_hop, m)

        L = len(self.factors)
        h = self.in_conv(apply_mask(x, m))
        skips = []
        for i in range(L):
            if c is not None:
                h = h + self._inject(self.cond_enc[i], c, cmask, i)
            h = apply_mask(h, masks[i])
            for blk in self.enc[i]:
                h = blk(h, emb, masks[i])
            skips.append(h)
            h = self.down[i](h)
        if c is not None:
            h = h + self._inject(self.cond_mid, c, cmask, L)
        h = apply_mask(h, masks[L])
        for blk in self.mid:
            h = blk(h, emb, masks[L])
        for i in reversed(range(L)):
            h = self.merge[i](torch.cat([self.up[i](h), skips[i]], dim=1))
            if c is not None:
                h = h + self._inject(self.cond_dec[i], c, cmask, i)
            h = apply_mask(h, masks[i])
            for blk in self.dec[i]:
                h = blk(h, emb, masks[i])
        out = apply_mask(self.out_conv(self.act(h)), masks[0])
        return out[..., :T]
