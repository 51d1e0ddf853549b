"""What the generator facades (Vocoder, MelDecoder) are built from, and what they share.

`InferenceSpec` is everything inference needs and nothing training does: the kind of weights, the mel
preset (features), the network and parameterization (`model.*`, sigma_data included), the tuned default
sigmas per step count, the mel-projection iterations a vocoder applies after its last step (config
sampling.projection), and what the training domain recorded (a mel decoder's statistics). A model
directory's record gives one (`checkpoint.ModelDirInfo.spec`), a training Config another
(`InferenceSpec.from_config`); `build.build_generator(spec)` makes the network. Training-only sections
(data paths, devices, optimizer, objective) never reach a facade through it.

`GeneratorDefaults` is the behaviour Vocoder and MelDecoder share (rate and hop from the owned features,
device, sigmas per step count); `check_steps` / `check_sigmas` are the argument checks of every
multistep call.

Imports: config, errors, features, projection (check_iters), sampling (strictly_decreasing).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from cmaudio.config import Config, ModelConfig, from_dict, to_dict
from cmaudio.errors import CheckpointError, ConfigError, DataError
from cmaudio.features import get_preset
from cmaudio.projection import check_iters
from cmaudio.sampling import strictly_decreasing

KINDS = ("consistency", "denoiser")


@dataclass(frozen=True)
class InferenceSpec:
    """What a Vocoder or MelDecoder is built from.

    kind: 'consistency' (f(x, sigma) of CD/CT/iCT) or 'denoiser' (a DSM teacher's D(x, sigma)).
    preset: the mel convention (cmaudio.features.PRESETS). model: the network and parameterization
    fields (ModelConfig; model.sigma_data must be set: the data std the parameterization uses).
    default_sigmas: steps -> strictly decreasing noise levels that win over the Karras grid.
    domain_info: what the training domain recorded ({} for vocoders; a mel decoder's statistics,
    cond_channels, stand-in settings).
    projection: mel-projection iterations a vocoder applies after its last step (cmaudio.projection;
    0 = off, at most config.MAX_PROJECTION_ITERS, checked by projection.check_iters; config sampling.projection).
    """

    kind: str
    preset: str
    model: ModelConfig
    default_sigmas: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    domain_info: Mapping[str, Any] = field(default_factory=dict)
    projection: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be consistency or denoiser (got {self.kind!r})")
        get_preset(self.preset)  # an unknown preset is refused here, naming the valid ones
        sd = self.model.sigma_data
        if not (isinstance(sd, (int, float)) and not isinstance(sd, bool) and math.isfinite(sd) and sd > 0):
            raise ConfigError(f"an inference spec needs model.sigma_data > 0 (got {sd!r})")
        sig = {}
        for k, v in dict(self.default_sigmas or {}).items():
            vals = tuple(float(s) for s in v)
            if not strictly_decreasing(vals):
                raise ConfigError(f"default sigmas for {k} steps must be strictly decreasing (got {list(vals)})")
            sig[int(k)] = vals
        object.__setattr__(self, "default_sigmas", sig)
        object.__setattr__(self, "domain_info", dict(self.domain_info or {}))
        if check_iters(self.projection, "projection") and self.model.domain != "wave":
            raise ConfigError("the mel projection is for vocoders (model.domain wave), not mel decoders")

    @property
    def domain(self) -> str:
        """'wave' (a vocoder) or 'mel' (a mel decoder)."""
        return self.model.domain

    @property
    def sigma_data(self) -> float:
        return float(self.model.sigma_data)

    @property
    def cond_channels(self) -> Optional[int]:
        """Width of the network's cond when the domain recorded one (mel decoders), else None."""
        return self.domain_info.get("cond_channels")

    @classmethod
    def from_config(cls, cfg: Config, *, sigma_data: Optional[float] = None, kind: Optional[str] = None,
                    default_sigmas: Optional[Mapping[int, Any]] = None,
                    domain_info: Optional[Mapping[str, Any]] = None) -> "InferenceSpec":
        """The inference part of a training Config. sigma_data: overrides model.sigma_data (e.g. the value a
        run measured); kind: default from objective.kind (dsm: 'denoiser', else 'consistency');
        default_sigmas: default sampling.sigmas."""
        model = cfg.model
        if sigma_data is not None:
            model = dataclasses.replace(model, sigma_data=float(sigma_data))
        kind = kind or ("denoiser" if cfg.objective.kind == "dsm" else "consistency")
        sig = cfg.sampling.sigmas if default_sigmas is None else default_sigmas
        return cls(kind=kind, preset=cfg.features.preset, model=model, default_sigmas=sig,
                   domain_info=domain_info or {}, projection=cfg.sampling.projection)

    def to_config(self) -> Config:
        """A Config that holds this spec (features, model, sampling.sigmas; objective.kind ict or dsm from kind;
        every training section at its defaults): what a model directory records when no training config is
        known, and the base of a mel decoder's default objective."""
        preset = get_preset(self.preset)
        return from_dict({
            "data": {"sample_rate": preset.sample_rate},
            "features": {"preset": self.preset},
            "model": to_dict(Config(model=self.model))["model"],
            "objective": {"kind": "dsm" if self.kind == "denoiser" else "ict"},
            "sampling": {"sigmas": {k: list(v) for k, v in self.default_sigmas.items()}, "projection": self.projection},
        }, source="InferenceSpec")


def check_steps(steps: Any) -> int:
    """`steps` as an int >= 1, or a DataError naming the argument (2.5, True, "2", 0 are refused)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise DataError(f"steps must be a whole number >= 1 (got {steps!r} of type {type(steps).__name__})")
    if steps < 1:
        raise DataError(f"steps must be >= 1 (got {steps})")
    return int(steps)


def check_sigmas(sigmas: Any, *, sigma_min: float, sigma_max: Optional[float]) -> list[float]:
    """`sigmas` as a list of floats, or a DataError naming the argument.

    Must be a non-empty sequence of finite numbers, strictly decreasing, each >= sigma_min (and
    <= sigma_max when given: a consistency model is defined on [sigma_min, sigma_max] only).
    """
    if isinstance(sigmas, (str, bytes)) or not hasattr(sigmas, "__len__"):
        raise DataError(f"sigmas must be a list of noise levels, e.g. [2.0, 0.3] (got {sigmas!r:.60})")
    try:
        vals = [float(s) for s in (sigmas.reshape(-1) if isinstance(sigmas, (Tensor, np.ndarray)) else sigmas)]
    except (TypeError, ValueError):
        raise DataError(f"sigmas must hold numbers (got {list(sigmas)!r:.80})") from None
    if not vals:
        raise DataError("sigmas is empty; give at least one noise level, e.g. [2.0]")
    if not all(math.isfinite(v) for v in vals):
        raise DataError(f"sigmas must be finite (got {vals})")
    if not strictly_decreasing(vals):
        raise DataError(f"sigmas must be strictly decreasing (got {vals})")
    if vals[-1] < sigma_min * (1 - 1e-6):
        raise DataError(f"sigmas must be >= the model's sigma_min {sigma_min:g} (got {vals})")
    if sigma_max is not None and vals[0] > sigma_max * (1 + 1e-6):
        raise DataError(f"sigmas must be <= the model's sigma_max {sigma_max:g} (got {vals})")
    return vals


class GeneratorDefaults:
    """Shared by Vocoder and MelDecoder: rate/hop from the owned features, device, sigma defaults.

    Needs `spec` (InferenceSpec), `features` (MelSpectrogram) and `model` (parameterized network); gives
    sample_rate, hop_length, n_mels, preset, device, kind, default_sigmas and sigmas_for.
    """

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    @property
    def hop_length(self) -> int:
        return self.features.hop_length

    @property
    def n_mels(self) -> int:
        return self.features.n_mels

    @property
    def preset(self) -> str:
        """The mel convention's name (cmaudio.features.PRESETS)."""
        return self.features.preset.name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def default_sigmas(self) -> Mapping[int, tuple[float, ...]]:
        """steps -> noise levels (the spec's); assigning a mapping replaces them (checked like the spec's)."""
        return self.spec.default_sigmas

    @default_sigmas.setter
    def default_sigmas(self, sigmas: Mapping[int, Any]) -> None:
        self.spec = dataclasses.replace(self.spec, default_sigmas=sigmas)

    @classmethod
    def from_config(cls, model, cfg: Config, *, kind: Optional[str] = None,
                    default_sigmas: Optional[Mapping[int, Any]] = None,
                    domain_info: Optional[Mapping[str, Any]] = None, **kw):
        """The facade around `model` trained by `cfg` (validation during training, fresh decoders, tests): its
        spec is InferenceSpec.from_config(cfg) with the model's own sigma_data, and cfg is kept as provenance."""
        spec = InferenceSpec.from_config(cfg, sigma_data=float(model.param.sigma_data), kind=kind,
                                         default_sigmas=default_sigmas, domain_info=domain_info)
        return cls(model, spec, config=cfg, **kw)

    def sigmas_for(self, steps: int) -> tuple[float, ...]:
        """Noise levels of `steps`-step consistency sampling: the spec's defaults, else the Karras grid."""
        steps = check_steps(steps)
        if steps in self.default_sigmas:
            return self.default_sigmas[steps]
        return self.model.param.default_sigmas(steps)

    def _check_spec(self, model, spec: InferenceSpec, domain: str) -> None:
        """The facade's spec must be an InferenceSpec of its domain whose sigma_data the model uses."""
        if not isinstance(spec, InferenceSpec):
            raise TypeError(f"expected an InferenceSpec (InferenceSpec.from_config(cfg) for a training Config), "
                            f"got {type(spec).__name__}")
        if spec.domain != domain:
            if spec.domain == "mel":
                raise CheckpointError("this model is a mel decoder (model.domain = mel); load it with MelDecoder")
            raise CheckpointError("this model is a waveform vocoder (model.domain = wave); load it with Vocoder")
        p = getattr(model, "param", None)
        if p is not None and abs(float(p.sigma_data) - spec.sigma_data) > 1e-9 * spec.sigma_data:
            raise ConfigError(f"the model's sigma_data {float(p.sigma_data):g} is not the spec's {spec.sigma_data:g}")


__all__ = ["InferenceSpec", "GeneratorDefaults", "check_steps", "check_sigmas", "KINDS"]
