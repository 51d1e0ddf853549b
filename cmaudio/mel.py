"""Mel-domain consistency models: a one-step mel decoder for TTS stacks (CoMoSpeech-style).

A TTS acoustic model (Grad-TTS, CoMoSpeech, Matcha, FastSpeech-style) produces frame-aligned
features ``cond`` (C_cond, T); the decoder turns them into a sharp log-mel (n_mels, T) in one
network evaluation (CM sec. 3), or a few (CM Alg. 1), in the convention of a mel preset
(cmaudio.features), so a cmaudio `Vocoder` with the same preset applies directly.

Data (training: `cmaudio.domains.mel.MelDomain`; helpers in `cmaudio.data.meldata`)
- Pairs (mel, cond), frame-aligned. mel = MelSpectrogram(features.preset)(audio). cond comes
  either from ``data.cond_dir/<id>.npy`` (C_cond, T_c) written by the TTS stack (encoder output
  mu or its predicted mel), matched by utterance id, |T_c - T| <= 2 and both cropped to the
  shorter; or, with ``data.cond_dir: null``, from the built-in stand-in `standin_cond`: a
  Grad-TTS-like "average mel" of the utterance's own log-mel (means over consecutive segments of
  ``data.standin_segment`` frames, then a centred moving average of ``data.standin_smooth``
  frames), imitating an encoder's over-smoothed output.
- Normalisation: per-bin mean/std of the training log-mels (over all frames),
  x_n = (mel - mean) / std, so the data std is 1. The stand-in is computed from the raw log-mel
  (it is then a mel in the preset's convention, like a TTS stack's predicted mel) and normalised
  with the same statistics; both maps are affine per bin and the stand-in's averages are linear,
  so this equals the stand-in of the normalised mel. A cond that lives in mel space (the
  stand-in, or a cond_dir file with n_mels channels) uses the mel statistics; other features get
  their own per-channel statistics. All statistics ship with the model (config.json
  ``domain_info``).
- Prior (``model.prior``): ``zero``: the model generates x_n from N(0, sigma_max^2 I) noise.
  ``cond`` (CoMoSpeech / Grad-TTS: noise centred on the encoder output, needs a cond in mel
  space): the model learns the residual r = x_n - cond_n and generation returns
  cond_n + f(sigma_max z, sigma_max; cond), i.e. the trajectory starts at cond_n + sigma_max z.
  sigma_data is the measured RMS of what the model learns (about 1.0 for ``zero``, the residual's
  RMS for ``cond``; docs/design.md sec. 2.16: sigma_data is a property of the data).
- Batches: random crops of up to F = data.segment_length / hop frames, right-padded to F with a
  mask (B, 1, F), 1 = valid, so utterances of any length train and every item's noise has the
  same shape (per-item seeds then make 2-process DDP equal 1-process training, and resume exact).
  The objectives ignore padding (masked distances; the U-Net's valid outputs never depend on it).

API (`MelDecoder`, exported from `cmaudio`)
- ``MelDecoder.from_pretrained(dir).generate(cond, mask=None, steps=1)`` -> (B, n_mels, T) log-mel
  in the model's preset (padding frames hold the preset's digital silence).
- ``MelDecoder.loss(mel, cond, mask)`` -> scalar, for joint training inside a TTS model; the
  gradient reaches ``cond`` (and whatever encoder produced it). Example, a toy encoder::

      import torch, cmaudio
      from cmaudio.mel import mel_stats

      mean, std = mel_stats(train_mels)                       # per-bin statistics of (80, T_i) log-mels
      enc = torch.nn.Conv1d(256, 80, 1)                       # toy encoder: text features -> mel-space cond
      dec = cmaudio.MelDecoder.new("hifigan", size="tiny", prior="cond", mel_mean=mean, mel_std=std,
                                   sigma_data=0.5)
      opt = torch.optim.AdamW([*enc.parameters(), *dec.parameters()], lr=2e-4)
      for step, (h, mel, mask) in enumerate(loader):          # h (B, 256, T), mel (B, 80, T), mask (B, 1, T)
          cond = enc(h)
          prior = (((cond - mel) / std[:, None]) ** 2 * mask).sum() / (80 * mask.sum())  # Grad-TTS encoder loss
          loss = dec.loss(mel, cond, mask, step=step) + prior
          opt.zero_grad(); loss.backward(); opt.step()
      mel_hat = dec.eval().generate(enc(h_test), steps=1)     # -> cmaudio.Vocoder(...).decode(mel_hat)

Noise of `generate` is drawn per item and time-major, so an item's result on its valid frames
does not depend on how much padding the batch adds (nor, with a list of generators, on the
other items).

Imports: build (models, nets, objectives), checkpoint, config, data (with data.meldata: the stand-in and statistics),
features, generator (the inference spec and the shared facade defaults), io, sampling. The training domain
(`cmaudio.domains.mel.MelDomain`) sits above this module and imports it, never the other way round.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from cmaudio import checkpoint as ckpt
from cmaudio.build import build_for_weights, build_generator, build_model, build_objective
from cmaudio.config import Config, DataConfig, from_dict, replace
from cmaudio.data import load_audio
from cmaudio.data.meldata import mel_stats, standin_cond
from cmaudio.errors import CheckpointError, ConfigError, DataError
from cmaudio.features import MelSpectrogram, get_preset
from cmaudio.io import confined_path, load_npy, save_npy_atomic
from cmaudio.sampling import check_generator, consistency_sample, ode_sample, strictly_decreasing, teacher_sigmas
from cmaudio.generator import GeneratorDefaults, InferenceSpec


# ----------------------------------------------------------------------------------------------
# The decoder facade
# ----------------------------------------------------------------------------------------------


GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]


def _check_generators(generator: GeneratorArg) -> None:
    """None, a torch.Generator or a list/tuple of them, else a one-line DataError."""
    if isinstance(generator, (list, tuple)):
        for i, g in enumerate(generator):
            if g is None:
                raise DataError(f"generator[{i}] is None; a list of generators needs one torch.Generator per item")
            check_generator(g, f"generator[{i}]")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise DataError("generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), a list of one "
                        f"per item, or None, got {type(generator).__name__}")


class MelDecoder(GeneratorDefaults, nn.Module):
    """Frame-level features -> log-mel in one step (or a few): the mel-domain consistency decoder.

    Holds the parameterized network (`model`, a ConsistencyModel or, for a DSM teacher, a Denoiser),
    the inference spec it was built from (`spec`, cmaudio.generator.InferenceSpec: kind, preset, network,
    default sigmas, and in domain_info the statistics it starts with), the normalisation statistics
    (buffers ``mel_mean``, ``mel_std`` (n_mels,), ``cond_mean``, ``cond_std`` (C_cond,), saved in
    state_dict so a TTS model that contains the decoder keeps them) and the preset's MelSpectrogram
    (``features``). ``config`` is the training Config when known (provenance; `default_objective` reads
    its objective section), else None.

    Attributes: n_mels, preset, sample_rate, hop_length, cond_channels, prior ('zero' | 'cond'),
    kind ('consistency' | 'denoiser'), cond_in_mel_space, info (the model directory's
    `checkpoint.ModelDirInfo` when loaded).
    """

    def __init__(self, model: nn.Module, spec: InferenceSpec, *, config: Optional[Config] = None) -> None:
        super().__init__()
        self._check_spec(model, spec, "mel")
        info = dict(spec.domain_info)
        self.model = model
        self.spec = spec
        self.config = config
        self.features = MelSpectrogram(spec.preset)
        n, c = self.features.n_mels, model.cond_channels
        if c is None:
            raise ConfigError("a mel decoder needs a conditioned network (cond_channels)")
        self.prior = spec.model.prior
        self.cond_source = info.get("cond_source", "standin")
        self.cond_in_mel_space = bool(info.get("cond_in_mel_space", c == n))
        if self.prior == "cond" and (not self.cond_in_mel_space or c != n):
            raise ConfigError(f"model.prior=cond needs a cond in mel space ({n} channels); this cond has {c}")
        data = config.data if config is not None else DataConfig()  # older records keep these in data.*
        self.standin_segment = int(info.get("standin_segment", data.standin_segment))
        self.standin_smooth = int(info.get("standin_smooth", data.standin_smooth))

        def vec(key: str, size: int, fill: float, fallback: Optional[str] = None) -> Tensor:
            v = info.get(key, info.get(fallback) if fallback else None)
            if v is None:
                return torch.full((size,), fill, dtype=torch.float32)
            t = torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1)
            if t.numel() != size:
                raise CheckpointError(f"domain_info {key} has {t.numel()} values, expected {size}")
            return t

        mel_in_space = self.cond_in_mel_space
        self.register_buffer("mel_mean", vec("mel_mean", n, 0.0))
        self.register_buffer("mel_std", vec("mel_std", n, 1.0))
        self.register_buffer("cond_mean", vec("cond_mean", c, 0.0, "mel_mean" if mel_in_space else None))
        self.register_buffer("cond_std", vec("cond_std", c, 1.0, "mel_std" if mel_in_space else None))
        with torch.no_grad():  # the preset's digital silence: what padded frames are filled with
            silence = self.features(torch.zeros(1, self.features.min_samples)).mean(-1)[0]
        self.register_buffer("silence", silence, persistent=False)
        self.info: Optional[ckpt.ModelDirInfo] = None  # the model directory's record, when loaded
        object.__setattr__(self, "_objective", None)
        self.model.eval()

    # ------------------------------------------------------------------ properties
    @property
    def cond_channels(self) -> int:
        return int(self.model.cond_channels)

    def model_info(self) -> dict[str, Any]:
        """The domain_info of this decoder (as written to config.json)."""
        return {
            "mel_mean": self.mel_mean.tolist(),
            "mel_std": self.mel_std.tolist(),
            "cond_mean": self.cond_mean.tolist(),
            "cond_std": self.cond_std.tolist(),
            "cond_channels": self.cond_channels,
            "cond_source": self.cond_source,
            "cond_in_mel_space": self.cond_in_mel_space,
            "standin_segment": self.standin_segment,
            "standin_smooth": self.standin_smooth,
        }

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(
        cls,
        preset: str = "hifigan",
        cond_channels: Optional[int] = None,
        *,
        size: str = "small",
        net: str = "unet1d",
        prior: str = "zero",
        mel_mean: Optional[Union[Tensor, np.ndarray, Sequence[float]]] = None,
        mel_std: Optional[Union[Tensor, np.ndarray, Sequence[float]]] = None,
        cond_mean: Optional[Union[Tensor, np.ndarray, Sequence[float]]] = None,
        cond_std: Optional[Union[Tensor, np.ndarray, Sequence[float]]] = None,
        sigma_data: float = 1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        total_steps: int = 100_000,
        dropout: float = 0.0,
    ) -> "MelDecoder":
        """A fresh, untrained consistency decoder (for training jointly inside a TTS model).

        cond_channels: width of the cond (default n_mels: a cond in mel space). mel_mean/mel_std:
        per-bin statistics of the training log-mels (`mel_stats`); without them the decoder sees
        raw log-mels, so pass them (sigma_data = 1 assumes normalised data). cond_mean/cond_std:
        for a cond outside mel space (default 0/1); a mel-space cond uses the mel statistics.
        total_steps: K of the default iCT curriculum used by `loss`.
        """
        p = get_preset(preset)
        c = int(cond_channels) if cond_channels is not None else p.n_mels
        cfg = from_dict({
            "data": {"sample_rate": p.sample_rate},
            "features": {"preset": p.name},
            "model": {"domain": "mel", "net": net, "size": size, "prior": prior, "sigma_data": float(sigma_data),
                      "sigma_min": float(sigma_min), "sigma_max": float(sigma_max), "dropout": float(dropout)},
            "objective": {"kind": "ict", "index_sampling": "lognormal", "weighting": "ict",
                          "p_mean": -1.1 + math.log(float(sigma_data) / 0.5), "total_steps": int(total_steps)},
        }, source="MelDecoder.new")
        model = build_model(cfg, sigma_data, "consistency", cond_channels=c)
        in_space = c == p.n_mels

        def lst(v):
            return None if v is None else [float(x) for x in np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v).reshape(-1)]

        info = {"mel_mean": lst(mel_mean), "mel_std": lst(mel_std), "cond_mean": lst(cond_mean),
                "cond_std": lst(cond_std), "cond_channels": c, "cond_source": "dir", "cond_in_mel_space": in_space}
        info = {k: v for k, v in info.items() if v is not None}
        dec = cls.from_config(model, cfg, kind="consistency", domain_info=info)
        dec.model.train()
        return dec

    @classmethod
    def from_pretrained(cls, model_dir: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "MelDecoder":
        """Load a model directory written by `cmaudio export` (or `save_pretrained`)."""
        model_dir = Path(model_dir)
        info, weights = ckpt.load_model_dir(model_dir)
        if info.domain != "mel":
            raise CheckpointError(f"{model_dir} holds a waveform vocoder, not a mel decoder; load it with Vocoder")
        spec = info.spec
        model = build_for_weights(lambda: build_generator(spec), weights, f"{model_dir / ckpt.MODEL_FILE}")
        dec = cls(model, spec, config=info.config)
        dec.info = info
        return dec.to(device)

    def save_pretrained(self, model_dir: Union[str, Path], extra: Optional[dict[str, Any]] = None, *,
                        overwrite: bool = False) -> None:
        """Write config.json + model.safetensors (this decoder's current weights and statistics); files already
        there are replaced only with `overwrite`."""
        sigmas = {k: self.sigmas_for(k) for k in (1, 2, 3, 4)} if self.kind == "consistency" else {}
        config = self.config if self.config is not None else self.spec.to_config()
        info = ckpt.ModelDirInfo(kind=self.kind, config=config, sigma_data=self.spec.sigma_data,
                                 domain_info=self.model_info(), default_sigmas=sigmas, extra=extra or {})
        ckpt.save_model_dir(Path(model_dir), weights=self.model.state_dict(), info=info, overwrite=overwrite)

    # ------------------------------------------------------------------ conversions
    def normalize(self, mel: Tensor) -> Tensor:
        """Log-mel in the preset's units (B, n_mels, T) -> normalised (per-bin mean 0, std 1 on the training data)."""
        return (mel - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.mel_std[:, None] + self.mel_mean[:, None]

    def normalize_cond(self, cond: Tensor) -> Tensor:
        return (cond - self.cond_mean[:, None]) / self.cond_std[:, None]

    def mel(self, audio: Union[Tensor, np.ndarray]) -> Tensor:
        """Log-mel of audio (T,) or (B, T) at `sample_rate` in this model's preset -> (B, n_mels, frames)."""
        a = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio, dtype=torch.float32)
        return self.features.to(self.device)(a.to(self.device))

    def standin(self, mel: Union[Tensor, np.ndarray]) -> Union[Tensor, np.ndarray]:
        """The built-in stand-in cond of a log-mel (..., n_mels, T), with the widths this model was trained with."""
        return standin_cond(mel, self.standin_segment, self.standin_smooth)

    def _as_batch(self, a: Union[Tensor, np.ndarray], channels: int, what: str) -> Tensor:
        """(C, T) or (B, C, T) array/tensor -> (B, C, T) float tensor on the model's device (keeps autograd)."""
        if isinstance(a, Tensor):
            t = a
        else:
            arr = np.asarray(a)
            if arr.dtype.kind not in "fiu":
                raise DataError(f"{what} has dtype {arr.dtype}, not a number type; pass a float array")
            t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise DataError(f"{what} must be ({channels}, T) or (B, {channels}, T); got shape {tuple(t.shape)}")
        if t.shape[1] != channels:
            hint = " (time-first? pass (B, C, T))" if t.shape[2] == channels else ""
            raise DataError(f"{what} has shape {tuple(t.shape)} but this decoder takes {channels} channels{hint}")
        if t.shape[0] == 0 or t.shape[2] == 0:
            raise DataError(f"{what} is empty (shape {tuple(t.shape)})")
        if not t.is_floating_point():
            t = t.float()
        if not bool(torch.isfinite(t.detach()).all()):
            raise DataError(f"{what} holds NaN or inf values")
        return t.to(self.device, torch.float32 if t.dtype != torch.float64 else t.dtype)

    def _as_mask(self, mask, B: int, T: int) -> Optional[Tensor]:
        """None, (T,), (B, T) or (B, 1, T) (bool or 0/1) -> (B, 1, T) float32 on the device, or None."""
        if mask is None:
            return None
        m = torch.as_tensor(mask, device=self.device)
        if m.ndim == 1:
            m = m[None]
        if m.ndim == 2:
            m = m[:, None]
        if m.ndim != 3 or m.shape[1] != 1 or m.shape[2] != T or m.shape[0] not in (1, B):
            raise DataError(f"mask must be (B, 1, T) = ({B}, 1, {T}) (or (B, T)); got shape {tuple(m.shape)}")
        return m.to(torch.float32).expand(B, 1, T)

    def _noise(self, B: int, T: int, n: int, generator: GeneratorArg) -> list[Tensor]:
        """n standard-normal draws of (B, n_mels, T), per item and time-major (padding-independent).

        Item b, draw k: randn(T, n_mels) from a generator seeded by seeds[b, k], transposed, so its
        first t frames are the same for any T >= t. seeds come from `generator` (one for the
        batch: a (B, n) draw; a list: one generator per item; None: the global CPU RNG).
        """
        if generator is None or isinstance(generator, torch.Generator):
            seeds = torch.randint(0, 2**62, (B, n), generator=generator)
        else:
            gens = list(generator)
            if len(gens) != B:
                raise DataError(f"got {len(gens)} generators for a batch of {B}")
            seeds = torch.stack([torch.randint(0, 2**62, (n,), generator=g) for g in gens])
        out = []
        for k in range(n):
            z = [torch.randn(T, self.n_mels, generator=torch.Generator().manual_seed(int(seeds[b, k]))).T
                 for b in range(B)]
            out.append(torch.stack(z).to(self.device))
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        cond: Union[Tensor, np.ndarray],
        mask: Optional[Union[Tensor, np.ndarray]] = None,
        steps: int = 1,
        sigmas: Optional[Sequence[float]] = None,
        generator: GeneratorArg = None,
    ) -> Tensor:
        """cond (B, C_cond, T) or (C_cond, T) -> log-mel (B, n_mels, T) in this model's preset.

        mask: (B, 1, T) or (B, T), 1 = valid frame; padding frames of the result hold the preset's
        digital silence and valid frames do not depend on the padding. steps: consistency steps
        (CM Alg. 1; NFE = steps) or, for a DSM teacher, Heun ODE steps (EDM Alg. 1). sigmas
        overrides the noise levels (decreasing). generator: a torch.Generator, a list of one per
        item, or None (global RNG).
        """
        _check_generators(generator)
        c = self._as_batch(cond, self.cond_channels, "cond")
        B, _, T = c.shape
        m = self._as_mask(mask, B, T)
        cn = self.normalize_cond(c)
        if m is not None:
            cn = cn * m
        if self.kind == "consistency":
            s = tuple(float(v) for v in sigmas) if sigmas is not None else self.sigmas_for(steps)
            if not strictly_decreasing(s):
                raise DataError(f"sigmas must be a non-empty strictly decreasing list, got {list(s)}")
            z = self._noise(B, T, len(s), generator)  # per-item generators: z[k] is step k's draw
            x = consistency_sample(self.model, (B, self.n_mels, T), sigmas=s, cond=cn, generator=lambda k: z[k],
                                   mask=m, device=self.device)
        else:
            s = list(float(v) for v in sigmas) if sigmas is not None else teacher_sigmas(self.model.param, steps)
            z = self._noise(B, T, 1, generator)
            x = ode_sample(self.model, (B, self.n_mels, T), sigmas=s, cond=cn, x_init=s[0] * z[0], mask=m,
                           device=self.device)
        if self.prior == "cond":
            x = x + cn
        mel = self.denormalize(x)
        if m is not None:
            mel = torch.where(m.bool(), mel, self.silence[:, None].to(mel.dtype))
        return mel

    # ------------------------------------------------------------------ training
    def default_objective(self):
        """The loss `loss()` uses: iCT (Song & Dhariwal 2023) around this decoder's model, DSM for a teacher.

        Built from the decoder's training config (objective.p_mean/p_std/s0/s1/total_steps; without one, from
        `spec.to_config()`: iCT's defaults); a cd or ct config
        becomes ict (no teacher, no target network to keep), mrstft terms become pseudo-Huber.
        """
        if self._objective is None:
            base = self.config if self.config is not None else self.spec.to_config()
            o = base.objective
            changes: dict[str, Any] = {}
            if self.kind == "consistency" and o.kind in ("cd", "ct"):
                changes["kind"] = "ict"
            if self.kind == "denoiser":
                changes["kind"] = "dsm"
            if "mrstft" in o.distance:
                changes["distance"] = {"pseudo_huber": 1.0}
            cfg = replace(base, objective=changes) if changes else base
            object.__setattr__(self, "_objective", build_objective(cfg, self.model))
        return self._objective

    def loss(
        self,
        mel: Union[Tensor, np.ndarray],
        cond: Union[Tensor, np.ndarray],
        mask: Optional[Union[Tensor, np.ndarray]] = None,
        *,
        objective: Optional[nn.Module] = None,
        step: int = 0,
        seeds: Optional[Tensor] = None,
    ) -> Tensor:
        """Training loss of the decoder on (mel, cond) pairs -> scalar; gradients reach the model and cond.

        mel: (B, n_mels, T) log-mel in this model's preset (normalised inside); cond (B, C_cond, T);
        mask (B, 1, T) or (B, T), 1 = valid (padding is ignored). objective: any cmaudio objective
        built around ``self.model`` (default: `default_objective`, iCT); step: the optimizer step,
        for the curriculum; seeds: optional (B,) per-item seeds (else the global RNG).
        """
        y = self._as_batch(mel, self.n_mels, "mel")
        c = self._as_batch(cond, self.cond_channels, "cond")
        if y.shape[0] != c.shape[0] or y.shape[2] != c.shape[2]:
            raise DataError(f"mel {tuple(y.shape)} and cond {tuple(c.shape)} must have the same batch size and frames")
        B, _, T = y.shape
        m = self._as_mask(mask, B, T)
        cn = self.normalize_cond(c)
        x = self.normalize(y)
        if self.prior == "cond":
            x = x - cn
        if m is not None:
            x, cn = x * m, cn * m
        obj = objective if objective is not None else self.default_objective()
        loss, _ = obj(x, cn, mask=m, seeds=seeds, step=step)
        return loss

    def forward(self, cond, mask=None, steps: int = 1, generator: GeneratorArg = None) -> Tensor:
        """generate(cond, mask, steps)."""
        return self.generate(cond, mask=mask, steps=steps, generator=generator)


# ----------------------------------------------------------------------------------------------
# Files (the CLI stage of a TTS pipeline)
# ----------------------------------------------------------------------------------------------


def decode_files(
    model_dir: Union[str, Path],
    inputs: Sequence[Union[str, Path]],
    out_dir: Union[str, Path],
    *,
    steps: int = 1,
    seed: int = 0,
    device: str = "cpu",
    overwrite: bool = False,
) -> list[Path]:
    """Decode cond files to mel files: <stem>.npy (C_cond, T) -> out_dir/<stem>.npy (n_mels, T) float32.
    An existing output is replaced only with `overwrite`.

    A .wav input is a demo: its own log-mel's stand-in (the cond the model was trained with when
    data.cond_dir was null) is decoded. The results go to `cmaudio vocode` with a vocoder of the
    same preset. Everything is read and checked before anything is written; each file's noise
    comes from `seed` alone. Returns the written paths.
    """
    dec = MelDecoder.from_pretrained(model_dir, device=device)
    jobs = []
    for f in map(Path, inputs):
        if f.suffix.lower() == ".wav":
            try:
                audio = load_audio(f, dec.sample_rate, clip=dec.features.preset.clip_audio)
                cond = dec.standin(dec.mel(torch.from_numpy(audio)).cpu())
            except DataError as e:  # name the file (a too-short recording's message did not)
                raise DataError(str(e) if f.name in str(e) else f"{f}: {e}") from None
        elif f.suffix.lower() == ".npy":
            arr = load_npy(f)  # its errors name the path already
            try:
                cond = dec._as_batch(arr, dec.cond_channels, "cond").cpu()
            except DataError as e:
                raise DataError(f"{f}: {e}") from None
            if cond.shape[0] != 1:
                raise DataError(f"{f}: give one utterance per file (got a batch of {cond.shape[0]})")
        else:
            raise DataError(f"{f}: unsupported input (give .npy cond files or .wav recordings)")
        jobs.append((confined_path(out_dir, f.stem, suffix=".npy", what="input name"), cond))
    if len({d for d, _ in jobs}) != len(jobs):
        raise DataError("two inputs would write the same output file; use distinct names")
    out = []
    for dest, cond in jobs:  # every file gets the noise of `seed`: its result does not depend on the others
        mel = dec.generate(cond, steps=steps, generator=torch.Generator().manual_seed(seed))[0].cpu().numpy()
        if not np.isfinite(mel).all():
            raise DataError(f"the mel decoder produced non-finite values (NaN or inf) for {dest.name}; its weights or "
                            "the input are broken")
        save_npy_atomic(dest, mel.astype(np.float32), overwrite=overwrite)
        out.append(dest)
    return out


__all__ = ["MelDecoder", "decode_files", "mel_stats", "standin_cond"]
