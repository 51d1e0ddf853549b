"""The training-domain interface the loop calls, and helpers its implementations share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from cmaudio.config import Config
from cmaudio.errors import ConfigError
from cmaudio.features import MelSpectrogram


class Domain:
    """What the loop needs from the data side. Implementations: domains.wave.WaveDomain, domains.mel.MelDomain."""

    def sigma_data(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def loader(self, *, start_step: int, global_batch: int, rank: int, world: int, micro: int):
        raise NotImplementedError

    def prepare(self, batch: dict, device: torch.device) -> dict[str, Optional[Tensor]]:
        """-> dict(x=(B, C, T), cond=(B, C_cond, T_c) | None, mask=(B, 1, T) | None, seeds=(B,))."""
        raise NotImplementedError

    def validate(self, model: nn.Module, cfg: Config, step: int, out_dir: Path, writer) -> dict[str, float]:
        raise NotImplementedError

    def cond_channels(self) -> Optional[int]:
        return None

    def extra_model_info(self) -> dict[str, Any]:
        return {}


def check_features(cfg: Config) -> MelSpectrogram:
    """The MelSpectrogram of features.preset, after checking data.sample_rate and data.segment_length against it."""
    fe = MelSpectrogram(cfg.features.preset)
    d = cfg.data
    if fe.sample_rate != d.sample_rate:
        raise ConfigError(
            f"data.sample_rate ({d.sample_rate}) differs from the {cfg.features.preset!r} preset's "
            f"{fe.sample_rate} Hz; set data.sample_rate={fe.sample_rate}"
        )
    if d.segment_length % fe.hop_length:
        raise ConfigError(f"data.segment_length ({d.segment_length}) must be a multiple of the hop ({fe.hop_length})")
    return fe


def add_png(writer, tag: str, png: Path, step: int) -> None:
    """Show a written PNG in TensorBoard (a convenience: any failure is ignored)."""
    if writer is None:
        return
    try:
        import matplotlib.image as mpimg  # optional plotting stack, only when a writer exists

        writer.add_image(tag, mpimg.imread(str(png))[..., :3], step, dataformats="HWC")
    except Exception:  # noqa: BLE001 - images are a convenience
        pass
