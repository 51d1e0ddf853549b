"""Networks F(x, c_noise, cond, mask) and a registry to build them by name.

Every network follows one contract (docs/design.md sec. 4: networks know nothing of sigma):

    forward(x: (B, C, T), c_noise: (B,), cond: (B, C_cond, T_cond) | None,
            mask: (B, 1, T) | None = None) -> (B, C, T)

- c_noise is ln(sigma)/4 (cmaudio.param.KarrasParam.c_noise); the wrappers in cmaudio.models
  scale the input by c_in and combine the output with c_skip/c_out.
- cond is None exactly when the net was built with cond_channels=None.
- mask: 1 = valid step; masked steps of the output are 0 and valid steps do not depend on them.

Registered names: "unet1d" (nets.unet1d.UNet1d, the waveform/mel consistency model),
"framenet" (nets.framenet.FrameNet, a frame-rate ConvNeXt with an iSTFT head, waveforms only)
and "diffwave" (nets.diffwave.DiffWave, the teacher). This package imports only cmaudio.errors.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from cmaudio.errors import ConfigError
from cmaudio.nets.diffwave import DIFFWAVE_PRESETS, DiffWave
from cmaudio.nets.framenet import FRAMENET_PRESETS, FrameNet
from cmaudio.nets.layers import split_hop
from cmaudio.nets.unet1d import UNET_PRESETS, UNet1d

NETS = ("unet1d", "framenet", "diffwave")
DOMAINS = ("wave", "mel")

_UNET_KEYS = ("factors", "channels", "dropout")
_FRAMENET_KEYS = ("dim", "layers", "mult", "n_fft", "dropout", "prior_iters", "mel_inverse", "mel_affine",
                  "prior_gain")
_DIFFWAVE_KEYS = ("residual_layers", "residual_channels", "dilation_cycle", "upsample_factors", "embedding",
                  "max_steps", "dropout")

__all__ = [
    "DIFFWAVE_PRESETS",
    "DiffWave",
    "FRAMENET_PRESETS",
    "FrameNet",
    "NETS",
    "UNET_PRESETS",
    "UNet1d",
    "build_net",
    "count_parameters",
    "flops_per_second",
]


def build_net(
    name: str,
    *,
    domain: str,
    in_channels: int,
    cond_channels: Optional[int],
    size: str,
    hop: Optional[int] = None,
    **overrides,
) -> nn.Module:
    """Build a registered network from a size preset.

    Args:
        name: "unet1d", "framenet" (waveforms only) or "diffwave".
        domain: "wave" (x is a waveform, cond a mel at the frame rate) or "mel" (x is a log-mel,
            cond frame-level features at the same rate).
        in_channels: C of x (1 for waveforms, n_mels for mels).
        cond_channels: width of cond, or None for an unconditional net.
        size: "tiny" | "small" | "base" (diffwave also "large").
        hop: waveform samples per mel frame (waveforms). unet1d: the preset's factors are
            re-split to this hop (layers.split_hop) unless `factors` is given; diffwave: the
            spectrogram upsampler's product. Ignored in the mel domain.
        overrides: unet1d: factors, channels, dropout; framenet: dim, layers, mult, n_fft,
            dropout, prior_iters, mel_inverse, mel_affine, prior_gain (its Griffin-Lim prior);
            diffwave: residual_layers,
            residual_channels, dilation_cycle, upsample_factors, embedding, max_steps, dropout.
            A value of None means "use the preset". Keys of the other network are ignored (so a
            caller can pass every ModelConfig field); any other key is a ConfigError.

    Raises:
        ConfigError: unknown name, domain, size or override key; factors that do not multiply
        to the hop.
    """
    if name not in NETS:
        raise ConfigError(f"unknown network {name!r}; valid: {', '.join(NETS)}")
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
    every = set(_UNET_KEYS + _FRAMENET_KEYS + _DIFFWAVE_KEYS)
    for key in overrides:
        if key not in every:
            raise ConfigError(f"unknown network option {key!r}; valid: {', '.join(sorted(every))}")
    own = {"unet1d": _UNET_KEYS, "framenet": _FRAMENET_KEYS, "diffwave": _DIFFWAVE_KEYS}[name]
    kw = {k: v for k, v in overrides.items() if k in own and v is not None}

    if name == "framenet":
        if domain != "wave":
            raise ConfigError("framenet is a waveform network (model.domain wave); use unet1d for mel decoders")
        if size not in FRAMENET_PRESETS:
            raise ConfigError(f"unknown framenet size {size!r}; valid: {', '.join(FRAMENET_PRESETS)}")
        return FrameNet.from_preset(size, in_channels=in_channels, cond_channels=cond_channels,
                                    hop=int(hop) if hop is not None else 256, **kw)

    if name == "unet1d":
        if size not in UNET_PRESETS[domain]:
            raise ConfigError(f"unknown unet1d size {size!r}; valid: {', '.join(UNET_PRESETS[domain])}")
        factors = kw.get("factors")
        if domain == "wave" and hop is not None:
            if factors is None:
                n = len(kw["channels"]) - 1 if "channels" in kw else len(UNET_PRESETS[domain][size]["factors"])
                kw["factors"] = split_hop(int(hop), n)
            elif math.prod(factors) != hop:
                raise ConfigError(
                    f"model.factors {list(factors)} multiply to {math.prod(factors)} but the mel hop is {hop}; "
                    "their product must equal the hop"
                )
        return UNet1d.from_preset(size, domain=domain, in_channels=in_channels, cond_channels=cond_channels, **kw)

    if size not in DIFFWAVE_PRESETS:
        raise ConfigError(f"unknown diffwave size {size!r}; valid: {', '.join(DIFFWAVE_PRESETS)}")
    if domain == "wave" and hop is not None:
        kw["hop"] = int(hop)
    return DiffWave.from_preset(size, domain=domain, in_channels=in_channels, cond_channels=cond_channels, **kw)


def count_parameters(net: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of `net`."""
    return sum(p.numel() for p in net.parameters())


def flops_per_second(net: nn.Module, *, sample_rate: int, in_channels: int, cond_channels: Optional[int],
                     hop: int) -> float:
    """FLOPs of one forward pass per second of audio (torch.utils.flop_counter.FlopCounterMode).

    Counts convolutions and matrix products (a multiply-add = 2 FLOPs), not element-wise ops.
    Waveform nets (net.domain == "wave") get `sample_rate` samples and ceil(sample_rate / hop)
    cond frames; mel-domain nets get ceil(sample_rate / hop) frames of x and cond. Batch 1,
    on the net's device and dtype.
    """
    from torch.utils.flop_counter import FlopCounterMode

    p = next(net.parameters())
    frames = -(-int(sample_rate) // int(hop))
    T = int(sample_rate) if getattr(net, "domain", "wave") == "wave" else frames
    x = torch.zeros(1, in_channels, T, device=p.device, dtype=p.dtype)
    cond = None
    if cond_channels:
        n = frames if getattr(net, "domain", "wave") == "wave" else T
        cond = torch.zeros(1, cond_channels, n, device=p.device, dtype=p.dtype)
    c_noise = torch.zeros(1, device=p.device, dtype=torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, c_noise, cond)
    return float(counter.get_total_flops())
