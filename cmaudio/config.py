"""Typed, frozen configuration and its YAML form.

A recipe is a YAML file with up to six sections (data, features, model, objective, train,
sampling) that map onto the frozen dataclasses below. A recipe may start with
``extends: other.yaml`` (a path relative to the recipe, or a list of them); the parent is
loaded first and the child is deep-merged over it. Unknown keys are errors that name the key,
the file and the closest valid key. Overrides ``a.b=value`` (the CLI's ``--set``) are parsed
as YAML scalars and type-checked against the field.

Relative paths in ``data.root``, ``data.tts_mel_dir``, ``data.cond_dir`` and
``objective.teacher`` are taken relative to the current working directory (run from the
repository root, as egs/*/run.sh do).

This module imports only cmaudio.errors.
"""

from __future__ import annotations

import dataclasses
import re
import difflib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from cmaudio.errors import ConfigError


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the audio is and how training examples are cut from it."""

    root: str = "egs/mini/data/ljspeech_mini"  # corpus root (for `filelist`: the list file)
    format: str = "ljspeech"  # ljspeech | vctk | libritts | folder | filelist
    sample_rate: int = 22050  # Hz; every file is resampled to this rate on load
    segment_length: int = 8192  # samples per training crop; must be a multiple of the hop
    val_fraction: float = 0.1  # share of utterances held out for validation (hash split)
    test_fraction: float = 0.0  # share held out for testing (hash split)
    split_seed: int = 0  # salt of the split hash; change it to draw another split
    max_val_utterances: int = 4  # validation generates audio for at most this many utterances
    val_seconds: float = 4.0  # validation uses the first seconds of each held-out utterance
    vctk_mic: str = "mic1"  # VCTK microphone: mic1 | mic2
    libritts_subsets: tuple[str, ...] = ()  # LibriTTS subsets to use (empty: all found)
    tts_mel_dir: Optional[str] = None  # ground-truth-aligned TTS mels <id>.npy (fine-tuning)
    cond_dir: Optional[str] = None  # mel domain: TTS features <id>.npy; None = stand-in prior
    standin_segment: int = 8  # mel domain stand-in: frames averaged per segment
    standin_smooth: int = 5  # mel domain stand-in: moving-average width (frames) after averaging
    num_workers: int = 0  # DataLoader workers


@dataclass(frozen=True)
class FeaturesConfig:
    """The mel definition the model is conditioned on (see cmaudio.features.PRESETS)."""

    preset: str = "hifigan"


@dataclass(frozen=True)
class ModelConfig:
    """Network, parameterization and conditioning."""

    domain: str = "wave"  # wave (vocoder) | mel (mel decoder for TTS)
    net: str = "unet1d"  # unet1d | framenet (waveforms: frame-rate ConvNeXt + iSTFT head) | diffwave
    size: str = "small"  # size preset: unet1d/framenet tiny | small | base; diffwave tiny | small | base | large
    channels: Optional[tuple[int, ...]] = None  # unet1d: channels per level (overrides size)
    factors: Optional[tuple[int, ...]] = None  # unet1d: down-sampling factors (product = hop)
    dropout: float = 0.0  # dropout inside residual blocks
    residual_layers: Optional[int] = None  # diffwave: residual layers (None: from size)
    residual_channels: Optional[int] = None  # diffwave: residual channels (None: from size)
    dilation_cycle: Optional[int] = None  # diffwave: dilation 2^(i mod cycle) (None: from size)
    frame_dim: Optional[int] = None  # framenet: ConvNeXt width (None: from size)
    frame_layers: Optional[int] = None  # framenet: ConvNeXt blocks (None: from size)
    frame_n_fft: Optional[int] = None  # framenet: STFT size of its input and iSTFT head (None: 1024)
    # framenet: Griffin-Lim iterations of its mel prior (0 = off): F also sees, and starts from, the waveform
    # that fast Griffin-Lim makes of the mel (zero initial phase, the preset's pseudo-inverse filterbank)
    frame_prior_iters: int = 0
    sigma_min: float = 0.0002  # eps: boundary of the consistency function (same units as x)
    sigma_max: float = 2.0  # T: largest noise level
    sigma_data: Optional[float] = None  # std of the data; None = estimate from the train set
    rho: float = 7.0  # Karras grid curvature
    cond_dropout: float = 0.0  # probability of replacing cond by the learned null cond
    prior: str = "zero"  # mel domain: zero | cond (noise centred on cond, CoMoSpeech-style)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Training objective: dsm (teacher), cd, ct or ict."""

    kind: str = "ict"  # dsm | cd | ct | ict
    distance: dict[str, float] = field(default_factory=lambda: {"pseudo_huber": 1.0})
    # cd/ct/ict extras (off by default: the objectives are then exactly the papers'):
    consistency_weight: float = 1.0  # weight of the consistency term lambda d(f(x_{n+1}), f-(x_n)); 0 = extras only
    recon: dict[str, float] = field(default_factory=dict)  # reconstruction terms d(f(x_{n+1}), x) against the
    # clean crop, {name: weight} with the names of `distance` (WaveFM's auxiliary MR-STFT loss, CTM's DSM term)
    # the adversarial extra (waveforms; objectives.adversarial, nets.discriminators): HiFi-GAN's LSGAN generator
    # term with weight `adversarial` (0 = off) and its feature matching with weight `feature_matching`, against
    # MPD sub-discriminators of the given periods and MRD ones of the given STFT sizes, trained by their own AdamW
    adversarial: float = 0.0
    feature_matching: float = 0.0
    adv_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    adv_resolutions: tuple[int, ...] = (512, 1024, 2048)
    adv_period_width: int = 8  # MPD channels (w, 4w, 16w, 32w, 32w): HiFi-GAN's are w = 32
    adv_resolution_width: int = 16  # MRD channels: Vocos uses 32, 3x the CPU cost
    adv_lr: float = 0.0002  # the discriminators' AdamW learning rate (constant)
    adv_betas: tuple[float, float] = (0.8, 0.99)  # HiFi-GAN's
    # the proj distance's target: this many mel-projection iterations of the online output onto the crop's mel
    proj_iters: int = 32
    mrstft_fft_sizes: tuple[int, ...] = (512, 1024, 2048)
    mrstft_hop_sizes: tuple[int, ...] = (128, 256, 512)
    mrstft_win_lengths: tuple[int, ...] = (512, 1024, 2048)
    # pseudo-Huber c, used as given; None = (sigma_data / 0.5) 0.00054 sqrt(dim): iCT's c (images, sigma_data
    # 0.5) scaled to the data, dim = the item's valid elements (build.build_objective, distances.PseudoHuber)
    huber_c: Optional[float] = None
    p_mean: float = -1.1  # lognormal location of sigma (dsm, ict index sampling)
    p_std: float = 2.0  # lognormal scale of sigma
    # how n is drawn for cd/ct/ict: uniform | lognormal; None = the kind's own (lognormal for ict, else uniform)
    index_sampling: Optional[str] = None
    # lambda: uniform (1) | ict (1/(sigma_{n+1} - sigma_n)); None = the kind's own (ict for ict, else uniform)
    weighting: Optional[str] = None
    num_scales: int = 18  # cd: N, the discretisation of [sigma_min, sigma_max]
    solver: str = "heun"  # cd: teacher ODE step, heun | euler
    target_ema: float = 0.95  # cd: mu, target EMA rate
    s0: int = 10  # ct/ict: initial discretisation steps
    s1: int = 1280  # ct/ict: final discretisation steps
    mu0: float = 0.9  # ct: initial target EMA rate
    total_steps: Optional[int] = None  # ct/ict: K of the curriculum; None = train.max_steps
    teacher: Optional[str] = None  # cd: teacher run dir, model dir or DiffWave checkpoint
    teacher_format: str = "auto"  # auto | cmaudio | diffwave
    # cd: which inference EMA of a teacher *run* to load (one of its train.ema_rates); None = the lowest rate
    # (0.999 with the default rates), model.safetensors if the run kept none; unused for model dirs and DiffWave
    teacher_ema: Optional[float] = None

    @property
    def index_sampling_for_kind(self) -> str:
        """index_sampling, or when None the kind's own: lognormal p(n) for ict (iCT sec. 3.5), else uniform."""
        return self.index_sampling or ("lognormal" if self.kind == "ict" else "uniform")

    @property
    def weighting_for_kind(self) -> str:
        """weighting, or when None the kind's own: 'ict' for ict (lambda = 1/(sigma_{n+1} - sigma_n),
        iCT sec. 3.1), else 'uniform' (lambda = 1)."""
        return self.weighting or ("ict" if self.kind == "ict" else "uniform")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    max_steps: int = 1000
    batch_size: int = 16  # global batch (all processes together, before accumulation)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.1  # cosine: final LR / peak LR
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_rates: tuple[float, ...] = (0.999, 0.9999)  # inference EMAs (not the CD/CT target)
    ckpt_every: int = 500
    keep_last: int = 3
    val_every: int = 500
    log_every: int = 25
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on cuda, fp32 on cpu) | bf16 | fp32
    compile: bool = False
    max_nonfinite: int = 20  # consecutive non-finite steps before the run stops
    init_from: Optional[str] = None  # start from these weights (model dir or run dir): fine-tuning
    max_minutes: Optional[float] = None  # wall-clock cap: stop early (with a checkpoint) after this long


@dataclass(frozen=True)
class SamplingConfig:
    """Defaults for generation."""

    sigmas: dict[int, tuple[float, ...]] = field(default_factory=dict)  # steps -> sigma list
    teacher_steps: int = 18  # teacher ODE sampler steps for validation of dsm runs
    teacher_solver: str = "heun"
    # mel projection iterations after the last step (vocoders only; 0 = off; cmaudio.projection)
    projection: int = 0


#: Most mel-projection iterations a config, a model directory or a call accepts (cmaudio.projection).
MAX_PROJECTION_ITERS = 64


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        validate(self)


_CHOICES = {
    ("data", "format"): ("ljspeech", "vctk", "libritts", "folder", "filelist"),
    ("data", "vctk_mic"): ("mic1", "mic2"),
    ("model", "domain"): ("wave", "mel"),
    ("model", "net"): ("unet1d", "framenet", "diffwave"),
    ("model", "prior"): ("zero", "cond"),
    ("objective", "kind"): ("dsm", "cd", "ct", "ict"),
    ("objective", "index_sampling"): ("uniform", "lognormal"),
    ("objective", "weighting"): ("uniform", "ict"),
    ("objective", "solver"): ("heun", "euler"),
    ("objective", "teacher_format"): ("auto", "cmaudio", "diffwave"),
    ("train", "lr_schedule"): ("constant", "cosine"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "amp"): ("auto", "bf16", "fp32"),
    ("sampling", "teacher_solver"): ("heun", "euler"),
}

_PER_KIND = {("objective", "index_sampling"), ("objective", "weighting")}  # None = the objective kind's default

DISTANCES = ("l2", "l1", "pseudo_huber", "mrstft", "mel_l1", "phase", "proj")


def validate(cfg: Config) -> None:
    """Check values that types alone cannot (choices, ranges); raise ConfigError naming the key."""
    for (sec, key), choices in _CHOICES.items():
        v = getattr(getattr(cfg, sec), key)
        if v is None and (sec, key) in _PER_KIND:
            continue
        if v not in choices:
            raise ConfigError(f"{sec}.{key} = {v!r} is not one of {', '.join(choices)}")
    m, o, t, d = cfg.model, cfg.objective, cfg.train, cfg.data
    _check_finite(cfg)
    _check_owned_fields(cfg)
    if not 0 < m.sigma_min < m.sigma_max:
        raise ConfigError(f"model.sigma_min ({m.sigma_min}) must be > 0 and < model.sigma_max ({m.sigma_max})")
    if not 0 <= m.frame_prior_iters <= 256:
        raise ConfigError(f"model.frame_prior_iters must be in [0, 256] (got {m.frame_prior_iters})")
    if m.sigma_data is not None and m.sigma_data <= 0:
        raise ConfigError(f"model.sigma_data must be positive (got {m.sigma_data}); null estimates it")
    if not 0 <= m.cond_dropout < 1:
        raise ConfigError(f"model.cond_dropout must be in [0, 1) (got {m.cond_dropout})")
    for name in o.distance:
        if name not in DISTANCES:
            raise ConfigError(
                f"objective.distance has unknown term {name!r}; valid: {', '.join(DISTANCES)}"
                + _suggest(name, DISTANCES)
            )
    if not o.distance:
        raise ConfigError("objective.distance is empty; give at least one term, e.g. {pseudo_huber: 1.0}")
    for name, w in o.recon.items():
        if name not in DISTANCES:
            raise ConfigError(f"objective.recon has unknown term {name!r}; valid: {', '.join(DISTANCES)}"
                              + _suggest(name, DISTANCES))
        if not (w >= 0 and w < float("inf")):
            raise ConfigError(f"objective.recon.{name} must be a finite weight >= 0 (got {w})")
    if not (isinstance(o.proj_iters, int) and not isinstance(o.proj_iters, bool)
            and 1 <= o.proj_iters <= MAX_PROJECTION_ITERS):
        raise ConfigError(f"objective.proj_iters must be a whole number of iterations in [1, {MAX_PROJECTION_ITERS}] "
                          f"(got {o.proj_iters!r})")
    if not (o.consistency_weight >= 0 and o.consistency_weight < float("inf")):
        raise ConfigError(f"objective.consistency_weight must be finite and >= 0 (got {o.consistency_weight})")
    if o.consistency_weight == 0 and not any(w > 0 for w in o.recon.values()) and o.adversarial == 0 and o.kind != "dsm":
        raise ConfigError("objective.consistency_weight is 0 and objective.recon is empty: nothing would be trained")
    if o.adversarial < 0 or o.feature_matching < 0:
        raise ConfigError(f"objective.adversarial and objective.feature_matching must be >= 0 "
                          f"(got {o.adversarial}, {o.feature_matching})")
    if o.feature_matching > 0 and o.adversarial == 0:
        raise ConfigError("objective.feature_matching needs objective.adversarial > 0 (it matches the features of "
                          "the discriminators that term trains)")
    if o.adversarial > 0:
        if m.domain != "wave":
            raise ConfigError("objective.adversarial is for waveform models (model.domain wave)")
        if not o.adv_periods and not o.adv_resolutions:
            raise ConfigError("objective.adversarial needs at least one of objective.adv_periods / adv_resolutions")
        if any(p < 1 for p in o.adv_periods) or any(n < 16 for n in o.adv_resolutions):
            raise ConfigError(f"objective.adv_periods must be >= 1 and adv_resolutions >= 16 "
                              f"(got {list(o.adv_periods)}, {list(o.adv_resolutions)})")
        if o.adv_period_width < 1 or o.adv_resolution_width < 1:
            raise ConfigError("objective.adv_period_width and adv_resolution_width must be >= 1")
        if not o.adv_lr > 0 or not all(0 <= b < 1 for b in o.adv_betas):
            raise ConfigError(f"objective.adv_lr must be > 0 and adv_betas in [0, 1) (got {o.adv_lr}, {list(o.adv_betas)})")
    if o.num_scales < 2:
        raise ConfigError(f"objective.num_scales must be >= 2 (got {o.num_scales})")
    if not 0 <= o.target_ema < 1:
        raise ConfigError(f"objective.target_ema must be in [0, 1) (got {o.target_ema})")
    if o.s0 < 1 or o.s1 < o.s0:
        raise ConfigError(f"objective.s0/s1 must satisfy 1 <= s0 <= s1 (got {o.s0}, {o.s1})")
    if t.max_steps < 0 or t.batch_size < 1 or t.grad_accum < 1:
        raise ConfigError("train.max_steps >= 0, train.batch_size >= 1 and train.grad_accum >= 1 are required")
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size ({t.batch_size}) must be divisible by train.grad_accum ({t.grad_accum})")
    for r in t.ema_rates:
        if not 0 < r < 1:
            raise ConfigError(f"train.ema_rates must lie in (0, 1) (got {r})")
    if t.ckpt_every < 1 or t.val_every < 1 or t.log_every < 1 or t.keep_last < 1:
        raise ConfigError("train.ckpt_every, val_every, log_every and keep_last must be >= 1")
    if d.segment_length < 1 or d.sample_rate < 1:
        raise ConfigError("data.segment_length and data.sample_rate must be positive")
    if not 0 <= d.val_fraction < 1 or not 0 <= d.test_fraction < 1 or d.val_fraction + d.test_fraction >= 1:
        raise ConfigError("data.val_fraction and data.test_fraction must be in [0, 1) with a sum below 1")
    for k, sig in cfg.sampling.sigmas.items():
        if len(sig) != k or any(a <= b for a, b in zip(sig, sig[1:])):
            raise ConfigError(f"sampling.sigmas[{k}] must list {k} strictly decreasing sigmas (got {list(sig)})")
        if sig and sig[-1] <= 0:
            raise ConfigError(f"sampling.sigmas[{k}] must be positive (got {list(sig)})")
    _check_ranges(cfg)


# fields that only one network or objective reads: set for another, they would be ignored silently
_NET_FIELDS = {
    "unet1d": ("channels", "factors"),
    "diffwave": ("residual_layers", "residual_channels", "dilation_cycle"),
    "framenet": ("frame_dim", "frame_layers", "frame_n_fft", "frame_prior_iters"),
}
_OBJECTIVE_FIELDS = {  # objective field -> the kinds that read it
    "teacher": ("cd",), "teacher_format": ("cd",), "teacher_ema": ("cd",), "solver": ("cd",),
    "target_ema": ("cd",), "num_scales": ("cd",),
    "recon": ("cd", "ct", "ict"), "consistency_weight": ("cd", "ct", "ict"),
    "adversarial": ("cd", "ct", "ict"), "feature_matching": ("cd", "ct", "ict"),
}
# Not checked: the CT curriculum (s0, s1, mu0, total_steps) and the distance options, which recipes set in
# a base that `--set objective.kind=...` switches away from (recipes/_mel.yaml sets s0/s1 for every kind).


_ONE_FILE = False  # True while load_raw checks one file of an extends chain alone (cross-field checks wait)


def _check_owned_fields(cfg: Config) -> None:
    """Refuse a model field of another network, or an objective field the kind does not read, set away from
    its default (a recipe that switches model.net or objective.kind must drop the other's settings). Checked
    on the merged recipe, not on each file of its extends chain (a base may set the kind, a child the rest)."""
    if _ONE_FILE:
        return
    m, o = cfg.model, cfg.objective
    mdef, odef = ModelConfig(), ObjectiveConfig()
    for net, fields in _NET_FIELDS.items():
        if net == m.net:
            continue
        for f in fields:
            if getattr(m, f) != getattr(mdef, f):
                raise ConfigError(f"model.{f} is a {net} option but model.net is {m.net!r}; remove it")
    for f, kinds in _OBJECTIVE_FIELDS.items():
        if o.kind not in kinds and getattr(o, f) != getattr(odef, f):
            raise ConfigError(f"objective.{f} is read only by objective.kind {' / '.join(kinds)}, "
                              f"not {o.kind!r}; remove it")


def _check_finite(cfg: Config) -> None:
    """Every number of every section is finite: NaN or inf never trains (e.g. sigma_max: .inf)."""
    import math

    def bad(v) -> bool:
        return isinstance(v, float) and not math.isfinite(v)

    for sec in SECTIONS:
        for f in fields(getattr(cfg, sec)):
            v = getattr(getattr(cfg, sec), f.name)
            items = v.items() if isinstance(v, dict) else (enumerate(v) if isinstance(v, tuple) else [(None, v)])
            for k, x in items:
                xs = x if isinstance(x, tuple) else (x,)
                if any(bad(y) for y in xs):
                    where = f"{sec}.{f.name}" + (f"[{k!r}]" if k is not None and isinstance(v, dict) else
                                                  (f"[{k}]" if k is not None else ""))
                    raise ConfigError(f"{where} must be a finite number (got {x!r})")


# Upper bounds of the network sizes: far above any trained model (the largest presets use a few hundred
# channels and a few dozen layers), far below what would exhaust a machine before any check could run.
SIZE_LIMITS = {"frame_dim": 8192, "frame_layers": 256, "frame_n_fft": 16384, "residual_layers": 256,
               "residual_channels": 4096, "dilation_cycle": 24, "channels": 4096, "factors": 4096}
MAX_LEVELS = 16  # entries of model.channels / model.factors


def _check_sizes(m) -> None:
    """Network sizes must be positive and below SIZE_LIMITS: `frame_layers: 1000000` in a model directory's
    config.json would otherwise allocate until the kernel kills the process."""
    for key, limit in SIZE_LIMITS.items():
        v = getattr(m, key)
        if v is None:
            continue
        values = list(v) if isinstance(v, (tuple, list)) else [v]
        if isinstance(v, (tuple, list)) and not 1 <= len(values) <= MAX_LEVELS:
            raise ConfigError(f"model.{key} must list 1 to {MAX_LEVELS} values (got {len(values)})")
        for x in values:
            if not 1 <= x <= limit:
                raise ConfigError(f"model.{key} = {v if len(values) == 1 else list(v)} is outside [1, {limit}]: no "
                                  "network of this size is plausible; fix the config")


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; seeds are offset by item and rank indices


def _check_ranges(cfg: Config) -> None:
    """Ranges outside which a value cannot work (a negative lr, betas >= 1, negative weights, ...)."""
    m, o, t, d = cfg.model, cfg.objective, cfg.train, cfg.data
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be > 0 (got {t.lr})")
    for i, b in enumerate(t.betas):
        if not 0 <= b < 1:
            raise ConfigError(f"train.betas[{i}] must be in [0, 1) (got {b})")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0 (got {t.weight_decay})")
    if t.grad_clip < 0:
        raise ConfigError(f"train.grad_clip must be >= 0 (0 turns clipping off; got {t.grad_clip})")
    if t.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps must be >= 0 (got {t.warmup_steps})")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1] (got {t.min_lr_ratio})")
    if not 0 <= t.seed <= MAX_SEED:
        raise ConfigError(f"train.seed must be an integer in [0, {MAX_SEED}] (got {t.seed})")
    if t.max_nonfinite < 1:
        raise ConfigError(f"train.max_nonfinite must be >= 1 (got {t.max_nonfinite})")
    if t.max_minutes is not None and not t.max_minutes > 0:
        raise ConfigError(f"train.max_minutes must be > 0 or null (got {t.max_minutes})")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0 (got {d.num_workers})")
    if d.max_val_utterances < 0:
        raise ConfigError(f"data.max_val_utterances must be >= 0 (got {d.max_val_utterances})")
    if not d.val_seconds > 0:
        raise ConfigError(f"data.val_seconds must be > 0 (got {d.val_seconds})")
    if d.standin_segment < 1 or d.standin_smooth < 1:
        raise ConfigError(f"data.standin_segment and data.standin_smooth must be >= 1 (got {d.standin_segment}, "
                          f"{d.standin_smooth})")
    if not 0 <= m.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1) (got {m.dropout})")
    _check_sizes(m)
    if not m.rho > 0:
        raise ConfigError(f"model.rho must be > 0 (got {m.rho})")
    for name, w in o.distance.items():
        if w < 0:
            raise ConfigError(f"objective.distance.{name} must be a weight >= 0 (got {w}); a negative weight "
                              "rewards the error")
    if o.distance and not any(w > 0 for w in o.distance.values()) and o.kind != "dsm":
        raise ConfigError("objective.distance weights are all 0: the consistency loss would be zero")
    if o.huber_c is not None and not o.huber_c > 0:
        raise ConfigError(f"objective.huber_c must be > 0 or null (got {o.huber_c})")
    if not o.p_std > 0:
        raise ConfigError(f"objective.p_std must be > 0 (got {o.p_std})")
    if not 0 <= o.mu0 < 1:
        raise ConfigError(f"objective.mu0 must be in [0, 1) (got {o.mu0})")
    if o.total_steps is not None and o.total_steps < 1:
        raise ConfigError(f"objective.total_steps must be >= 1 or null (got {o.total_steps})")
    if o.teacher_ema is not None and not 0 < o.teacher_ema < 1:
        raise ConfigError(f"objective.teacher_ema must be in (0, 1) or null (got {o.teacher_ema})")
    if cfg.sampling.teacher_steps < 1:
        raise ConfigError(f"sampling.teacher_steps must be >= 1 (got {cfg.sampling.teacher_steps})")
    if not 0 <= cfg.sampling.projection <= MAX_PROJECTION_ITERS:
        raise ConfigError(f"sampling.projection must be in [0, {MAX_PROJECTION_ITERS}] iterations "
                          f"(0 = off), got {cfg.sampling.projection}")
    if cfg.sampling.projection and cfg.model.domain != "wave":
        raise ConfigError("sampling.projection (the mel projection) is for vocoders (model.domain wave); "
                          "a mel decoder's output is the mel itself")


SECTIONS = typing.get_type_hints(Config)  # section name -> dataclass


# ----------------------------------------------------------------------------------------------
# Typed conversion
# ----------------------------------------------------------------------------------------------


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, or raise ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false (got {value!r})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer (got {value!r})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string; it is a number to a user
        raise ConfigError(f"{where} must be a number (got {value!r})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string (got {value!r})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list (got {value!r})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values (got {value!r})")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping (got {value!r})")
        kt, vt = args

        def key(k):  # JSON (a run's config.json) writes integer keys as strings: "2" is the key 2
            if kt is int and isinstance(k, str) and k.strip().lstrip("+-").isdigit():
                return int(k)
            return _coerce(k, kt, f"{where} key")

        return {key(k): _coerce(v, vt, f"{where}[{k}]") for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _section_from_dict(cls, values: dict, where: str, source: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, val in values.items():
        if key not in names:
            raise ConfigError(f"unknown key {where}.{key} in {source}{_suggest(str(key), names)}")
        kwargs[key] = _coerce(val, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def from_dict(values: dict, source: str = "<dict>") -> Config:
    """Build a Config from nested plain values (as YAML gives them)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {type(values).__name__}")
    hints = typing.get_type_hints(Config)
    kwargs = {}
    for sec, val in values.items():
        if sec not in hints:
            raise ConfigError(f"unknown section {sec!r} in {source}{_suggest(str(sec), hints)}")
        if val is None:
            val = {}
        if not isinstance(val, dict):
            raise ConfigError(f"section {sec} in {source} must be a mapping")
        kwargs[sec] = _section_from_dict(hints[sec], val, sec, source)
    return Config(**kwargs)


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (lists for tuples) whose from_dict gives back an equal Config."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {sec: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, sec)).items()} for sec in SECTIONS}


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------------------------
# Files, extends, overrides
# ----------------------------------------------------------------------------------------------


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "distance":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one")
                seen[key] = line
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"recipe not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}); save the recipe "
                          "as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # safe_load semantics, duplicate keys refused
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    return data


def load_raw(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a recipe with its `extends:` chain resolved; unknown keys are checked per file."""
    path = Path(path)
    real = path.resolve()
    if real in _seen:
        raise ConfigError(f"extends cycle: {' -> '.join(str(p) for p in (*_seen, real))}")
    data = _read_yaml(path)
    parents = data.pop("extends", None)
    global _ONE_FILE
    _ONE_FILE, was = True, _ONE_FILE
    try:
        from_dict(data, source=str(path))  # names the file where an unknown key sits
    finally:
        _ONE_FILE = was
    merged: dict = {}
    if parents is not None:
        if not (isinstance(parents, str) or (isinstance(parents, list) and all(isinstance(p, str) for p in parents))):
            raise ConfigError(f"{path}: extends must be a recipe path or a list of them (got {parents!r})")
        for parent in [parents] if isinstance(parents, str) else parents:
            merged = _deep_merge(merged, load_raw(path.parent / str(parent), (*_seen, real)))
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key {key!r} must be section.key, e.g. train.max_steps")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        (sec, key), value = parse_override(text)
        if sec not in SECTIONS:
            raise ConfigError(f"unknown section {sec!r} in --set {text}{_suggest(sec, SECTIONS)}")
        names = [f.name for f in fields(SECTIONS[sec])]
        if key not in names:
            raise ConfigError(f"unknown key {sec}.{key} in --set {text}{_suggest(key, names)}")
        raw.setdefault(sec, {})
        raw[sec] = dict(raw[sec] or {})
        raw[sec][key] = value
    return raw


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a recipe (with `extends:`), apply `section.key=value` overrides, and validate."""
    raw = apply_overrides(load_raw(path), overrides)
    return from_dict(raw, source=str(path))


def replace(cfg: Config, **sections: dict) -> Config:
    """Return a copy with some fields of some sections replaced, e.g. replace(cfg, model={...})."""
    new = {}
    for sec, changes in sections.items():
        new[sec] = dataclasses.replace(getattr(cfg, sec), **changes)
    return dataclasses.replace(cfg, **new)
