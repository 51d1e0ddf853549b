"""Build models, teachers and objectives from a Config (the one place config meets code).

- `build_model(cfg, sigma_data, kind)`: the network from `model.*` wrapped as a
  ConsistencyModel (kind "consistency") or a Denoiser (kind "denoiser").
- `build_generator(spec)`: the same from an inference spec (cmaudio.generator.InferenceSpec), what the
  Vocoder and MelDecoder facades are built from.
- `load_teacher(cfg)`: the CD teacher from `objective.teacher`: a cmaudio training run
  directory, a cmaudio model directory, or a checkpoint of the reference DiffWave.
- `build_objective(cfg, model, teacher)`: DSM / CD / CT / iCT with the configured distance and extras
  (reconstruction; the adversarial term of `build_adversarial`).

Imports: config, generator, param, models, nets, features, baselines, objectives, checkpoint, diffwave_ref.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from cmaudio import checkpoint as ckpt
from cmaudio.baselines import mel_inverse_operator
from cmaudio.checkpoint import kind_of
from cmaudio.config import Config, ModelConfig
from cmaudio.diffwave_ref import load_diffwave_checkpoint
from cmaudio.errors import ConfigError
from cmaudio.features import MelSpectrogram, get_preset
from cmaudio.generator import InferenceSpec
from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.nets import build_net
from cmaudio.nets.discriminators import MultiDiscriminator
from cmaudio.objectives import AdversarialTerm, CDObjective, CTObjective, DSMObjective, build_distance
from cmaudio.param import KarrasParam
from cmaudio.projection import mel_projection


role_of = kind_of  # the older name of checkpoint.kind_of: 'denoiser' for the DSM teacher, 'consistency' for CD/CT/iCT


def make_param(cfg: Config, sigma_data: float) -> KarrasParam:
    return _param(cfg.model, sigma_data)


def _param(m: ModelConfig, sigma_data: float) -> KarrasParam:
    return KarrasParam(sigma_min=m.sigma_min, sigma_max=m.sigma_max, sigma_data=float(sigma_data), rho=m.rho)


def io_channels(cfg: Config, cond_channels: Optional[int] = None) -> tuple[int, Optional[int], int]:
    """(in_channels, cond_channels, cond_hop) of the network for the config's domain."""
    return _io_channels(cfg.model.domain, cfg.features.preset, cond_channels)


def _io_channels(domain: str, preset_name: str, cond_channels: Optional[int]) -> tuple[int, Optional[int], int]:
    preset = get_preset(preset_name)
    if domain == "wave":
        return 1, preset.n_mels, preset.hop_length
    return preset.n_mels, (cond_channels if cond_channels is not None else preset.n_mels), 1


def build_model(cfg: Config, sigma_data: float, kind: Optional[str] = None, *, cond_channels: Optional[int] = None):
    """The parameterized model for `cfg` (random init). kind: 'consistency' | 'denoiser' (default: kind_of(cfg))."""
    return _assemble(cfg.model, cfg.features.preset, sigma_data, kind or kind_of(cfg), cond_channels)


def build_generator(spec: InferenceSpec):
    """The parameterized model an inference spec describes (random init; load its weights next)."""
    return _assemble(spec.model, spec.preset, spec.sigma_data, spec.kind, spec.cond_channels)


def build_for_weights(build: Callable[[], nn.Module], weights: Mapping[str, torch.Tensor], what: str) -> nn.Module:
    """``build()`` with `weights` loaded, after checking that they fit it — on the meta device first.

    The network a config describes is built once on the meta device (no memory: only shapes) and every
    tensor name and shape is compared with `weights` (ckpt.check_state, a one-line CheckpointError naming
    `what`); only then is it built for real. A config whose sizes disagree with its weights (a hand-edited
    ``frame_dim: 2000000``) is refused before anything large is allocated.
    """
    with torch.device("meta"):
        shell = build()
    ckpt.check_state(shell.state_dict(), weights, what)
    del shell
    model = build()
    ckpt.load_state_into(model, dict(weights), what)
    return model


def _assemble(m: ModelConfig, preset: str, sigma_data: float, kind: str, cond_channels: Optional[int]):
    in_ch, cond_ch, cond_hop = _io_channels(m.domain, preset, cond_channels)
    net = build_net(
        m.net,
        domain=m.domain,
        in_channels=in_ch,
        cond_channels=cond_ch,
        size=m.size,
        hop=cond_hop if m.domain == "wave" else None,
        factors=m.factors,
        channels=m.channels,
        dropout=m.dropout,
        residual_layers=m.residual_layers,
        residual_channels=m.residual_channels,
        dilation_cycle=m.dilation_cycle,
        dim=m.frame_dim,
        layers=m.frame_layers,
        n_fft=m.frame_n_fft,
        **_frame_prior(m, preset, sigma_data),
    )
    cls = ConsistencyModel if kind == "consistency" else Denoiser
    return cls(
        net,
        _param(m, sigma_data),
        cond_channels=cond_ch,
        cond_hop=cond_hop,
        null_cond=m.cond_dropout > 0,
    )


def _frame_prior(m: ModelConfig, preset: str, sigma_data: float) -> dict:
    """FrameNet's Griffin-Lim prior options (model.frame_prior_iters > 0): the preset's mel inverse, and the
    gain 1 / sigma_data that puts the prior in F's units (f = c_skip x + c_out F with c_out -> sigma_data)."""
    if m.net != "framenet" or not m.frame_prior_iters:
        return {}
    try:
        inverse, a, b = mel_inverse_operator(preset, m.frame_n_fft)
    except ConfigError as e:
        raise ConfigError(f"model.frame_prior_iters: {e}; set model.frame_n_fft to it") from None
    return dict(prior_iters=m.frame_prior_iters, mel_inverse=inverse, mel_affine=(a, b),
                prior_gain=1.0 / float(sigma_data))


def _cmaudio_teacher(path: Path, ema: Optional[float], *, run: bool) -> nn.Module:
    """A DSM teacher from a cmaudio run (run=True: its newest intact checkpoint, EMA `ema` or the
    smallest) or from a model directory."""

    def denoiser_only(info: ckpt.ModelDirInfo) -> None:
        if info.kind == "denoiser":
            return
        if run:
            raise ConfigError(f"objective.teacher {path} is a {info.config.objective.kind} run, not a dsm teacher")
        raise ConfigError(f"objective.teacher {path} holds a {info.kind} model, not a denoiser (teacher)")

    opts = dict(ema=ema, what="teacher run", ema_option="objective.teacher_ema", hint="; train the teacher first",
                check=denoiser_only)
    picked = ckpt.pick_weights(path, **opts) if run else ckpt.load_source(path, **opts)  # load_source: a model dir
    info = picked.info
    where = f"teacher weights {picked.path}" if picked.checkpoint is not None else f"teacher weights in {path}"
    model = build_for_weights(lambda: build_model(info.config, info.sigma_data, "denoiser",
                                                  cond_channels=info.cond_channels), picked.weights, where)
    model.features_preset = info.config.features.preset
    return model


def load_teacher(cfg: Config) -> nn.Module:
    """The frozen CD teacher named by objective.teacher (eval mode, no grads)."""
    o = cfg.objective
    if not o.teacher:
        raise ConfigError("objective.kind is cd but objective.teacher is empty; name a teacher run, model dir or DiffWave checkpoint")
    path = Path(o.teacher)
    if not path.exists():
        raise ConfigError(f"objective.teacher not found: {path} (relative paths are relative to the current directory)")
    fmt = o.teacher_format
    if fmt == "auto":
        if path.is_dir() and (path / ckpt.CKPT_DIR).is_dir():
            fmt = "cmaudio-run"
        elif path.is_dir() and (path / ckpt.CONFIG_FILE).is_file():
            fmt = "cmaudio"
        else:
            fmt = "diffwave"
    if fmt in ("cmaudio-run", "cmaudio"):
        teacher = _cmaudio_teacher(path, o.teacher_ema, run=fmt == "cmaudio-run" or ckpt.is_run_dir(path))
    else:
        teacher = load_diffwave_checkpoint(path)
        teacher.features_preset = teacher.mel_preset
    if teacher.features_preset != cfg.features.preset:
        raise ConfigError(
            f"the teacher was trained on {teacher.features_preset!r} mels but features.preset is {cfg.features.preset!r}; "
            "a student must use its teacher's mel preset"
        )
    teacher.eval().requires_grad_(False)
    return teacher


def build_objective(cfg: Config, model: nn.Module, teacher: Optional[nn.Module] = None):
    """The objective of `cfg` around `model` (and `teacher` for CD)."""
    o, m = cfg.objective, cfg.model
    if o.kind == "dsm":
        return DSMObjective(model, p_mean=o.p_mean, p_std=o.p_std, cond_dropout=m.cond_dropout)
    def distance_of(weights: dict) -> nn.Module:
        needs_mel = bool(weights.get("mel_l1"))
        for name in ("mel_l1", "phase", "proj"):
            if weights.get(name) and m.domain != "wave":
                raise ConfigError(f"the {name} distance is for waveform models (model.domain wave)")
        preset = get_preset(cfg.features.preset)
        try:
            return build_distance(
                dict(weights),
                huber_c=o.huber_c,
                huber_c_scale=model.param.sigma_data / 0.5,
                mrstft_fft_sizes=o.mrstft_fft_sizes,
                mrstft_hop_sizes=o.mrstft_hop_sizes,
                mrstft_win_lengths=o.mrstft_win_lengths,
                mel=MelSpectrogram(cfg.features.preset) if needs_mel else None,
                phase_n_fft=preset.n_fft,
                phase_hop=preset.hop_length,
                project=_projector(cfg.features.preset, o.proj_iters) if weights.get("proj") else None,
            )
        except ValueError as e:
            raise ConfigError(f"objective: {e}") from None

    distance = distance_of(o.distance)
    recon = distance_of(o.recon) if any(w > 0 for w in o.recon.values()) else None
    objective = _consistency_objective(cfg, model, teacher, distance)
    try:
        objective.set_extras(recon=recon, consistency_weight=o.consistency_weight,
                             adversarial=build_adversarial(cfg))
    except ValueError as e:
        raise ConfigError(f"objective: {e}") from None
    return objective


def _projector(preset: str, iters: int):
    """project(x (B, T), y (B, T)) -> x after `iters` mel-projection iterations onto mel(y) (the proj distance's
    target); T must be a whole number of the preset's hops (training crops are)."""
    features = MelSpectrogram(preset)

    def project(x: Tensor, y: Tensor) -> Tensor:
        feats = features.to(x.device)
        return mel_projection(x, feats(y), feats, iters)

    return project


def build_adversarial(cfg: Config) -> Optional[AdversarialTerm]:
    """The adversarial extra of `cfg` (None when objective.adversarial is 0): MPD + MRD discriminators
    (nets.discriminators) inside objectives.adversarial.AdversarialTerm."""
    o = cfg.objective
    if not o.adversarial > 0:
        return None
    disc = MultiDiscriminator(o.adv_periods, o.adv_resolutions, period_width=o.adv_period_width,
                              resolution_width=o.adv_resolution_width)
    return AdversarialTerm(disc, weight=o.adversarial, feature_matching=o.feature_matching)


def _consistency_objective(cfg: Config, model: nn.Module, teacher: Optional[nn.Module], distance: nn.Module):
    o, m = cfg.objective, cfg.model
    if o.kind == "cd":
        if teacher is None:
            teacher = load_teacher(cfg)
        try:
            return CDObjective(
            model,
            teacher,
            distance,
            num_scales=o.num_scales,
            solver=o.solver,
            target_ema=o.target_ema,
            index_sampling=o.index_sampling_for_kind,
            weighting=o.weighting_for_kind,
            p_mean=o.p_mean,
            p_std=o.p_std,
            cond_dropout=m.cond_dropout,
            )
        except ValueError as e:  # sigma range outside the teacher's, cond dropout without a null cond
            raise ConfigError(str(e)) from None
    return CTObjective(
        model,
        distance,
        variant=o.kind,
        total_steps=o.total_steps or cfg.train.max_steps,
        s0=o.s0,
        s1=o.s1,
        mu0=o.mu0,
        index_sampling=o.index_sampling_for_kind,
        weighting=o.weighting_for_kind,
        p_mean=o.p_mean,
        p_std=o.p_std,
        cond_dropout=m.cond_dropout,
    )


def device_of(cfg_device: str) -> torch.device:
    if cfg_device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg_device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use train.device=cpu")
    return torch.device(cfg_device)
