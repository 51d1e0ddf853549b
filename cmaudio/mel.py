"""Mel-domain consistency models: a one-step mel decoder for TTS stacks (CoMoSpeech-style).

A TTS acoustic model (Grad-TTS, CoMoSpeech, Matcha, FastSpeech-style) produces frame-aligned
features ``cond`` (C_cond, T); the decoder turns them into a sharp log-mel (n_mels, T) in one
network evaluation (CM sec. 3), or a few (CM Alg. 1), in the convention of a mel preset
(cmaudio.features), so a cmaudio `Vocoder` with the same preset applies directly.

Data (training, `MelDomain`)
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

Imports: build (models, nets, objectives), checkpoint, config, data, features, io, sampling, train (Domain).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cmaudio import checkpoint as ckpt
from cmaudio.build import build_model, build_objective, role_of
from cmaudio.config import Config, from_dict, replace, to_dict
from cmaudio.errors import CheckpointError, CmaudioError, ConfigError, DataError
from cmaudio.features import MelSpectrogram, get_preset
from cmaudio.train import Domain
from cmaudio.vocoder import GeneratorDefaults, check_model_info, config_for_kind

# Decoded (mel, cond) pairs at most this large (float32 bytes) are kept in memory.
AUTO_CACHE_BYTES = 2 * 1024**3
# Normalisation statistics use at most this many training utterances (evenly spread) when the
# corpus is too large to cache; per-bin means of log-mels converge long before that.
STATS_MAX_UTTERANCES = 2000
# Per-bin std floor (preset units): a constant bin must not blow up the normalised data.
STD_FLOOR = 1e-3

_LOGGER_NAME = "cmaudio.data"


# ----------------------------------------------------------------------------------------------
# The stand-in "encoder output" and statistics
# ----------------------------------------------------------------------------------------------


def standin_cond(mel: Union[Tensor, np.ndarray], segment: int = 8, smooth: int = 5) -> Union[Tensor, np.ndarray]:
    """Grad-TTS-like "average mel" of an utterance: what an over-smoothing encoder would output.

    mel: (..., C, T) log-mel (any units; the map is linear). Steps:
    1. segment means: frames [k s, (k + 1) s) (s = `segment`, from frame 0; the last segment may
       be shorter) are each replaced by their mean, like a phoneme-level encoder output expanded
       by durations (Grad-TTS's mu);
    2. smoothing: a centred moving average of `smooth` frames, edges padded by repeating the first
       / last frame (for even widths the window reaches one frame further right than left).
    Returns the same shape and type (numpy in, numpy out); differentiable for tensors.
    """
    if segment < 1 or smooth < 1:
        raise ConfigError(f"stand-in segment ({segment}) and smooth ({smooth}) widths must be >= 1 frames")
    is_np = isinstance(mel, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(mel)) if is_np else mel
    if x.ndim < 2 or x.shape[-1] < 1:
        raise DataError(f"stand-in needs a (..., C, T) mel with T >= 1, got shape {tuple(x.shape)}")
    lead, (C, T) = x.shape[:-2], x.shape[-2:]
    x = x.reshape(-1, C, T)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)
    idx = torch.arange(T, device=x.device) // segment
    n_seg = int(idx[-1]) + 1
    sums = torch.zeros(x.shape[0], C, n_seg, dtype=dtype, device=x.device).index_add(-1, idx, x)
    counts = torch.bincount(idx, minlength=n_seg).to(dtype)
    y = (sums / counts)[..., idx]
    if smooth > 1:
        y = F.pad(y, ((smooth - 1) // 2, smooth // 2), mode="replicate")
        y = F.avg_pool1d(y, smooth, stride=1)
    y = y.reshape(*lead, C, T)
    return y.numpy() if is_np else y


class _Moments:
    """Per-channel running sums (float64) for means, stds and the residual RMS."""

    def __init__(self) -> None:
        self.n = 0
        self.s1 = self.s2 = self.c1 = self.c2 = self.d2 = None

    def add(self, mel: np.ndarray, cond: np.ndarray, mel_space: bool) -> None:
        m = mel.astype(np.float64)
        c = cond.astype(np.float64)
        if self.s1 is None:
            self.s1, self.s2 = np.zeros(m.shape[0]), np.zeros(m.shape[0])
            self.c1, self.c2 = np.zeros(c.shape[0]), np.zeros(c.shape[0])
            self.d2 = np.zeros(m.shape[0])
        self.n += m.shape[1]
        self.s1 += m.sum(1)
        self.s2 += (m * m).sum(1)
        self.c1 += c.sum(1)
        self.c2 += (c * c).sum(1)
        if mel_space:
            self.d2 += ((m - c) ** 2).sum(1)

    @staticmethod
    def _mean_std(s1, s2, n) -> tuple[np.ndarray, np.ndarray]:
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        return mean, np.maximum(np.sqrt(var), STD_FLOOR)

    def mel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self._mean_std(self.s1, self.s2, self.n)

    def cond_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self._mean_std(self.c1, self.c2, self.n)

    def rms(self, prior: str, mean: np.ndarray, std: np.ndarray) -> float:
        """RMS of the model's data: x_n = (mel - mean)/std (zero prior) or x_n - cond_n (cond prior)."""
        if prior == "cond":
            return float(np.sqrt(np.mean(self.d2 / self.n / (std * std))))
        e2 = (self.s2 / self.n - 2 * mean * self.s1 / self.n + mean * mean) / (std * std)
        return float(np.sqrt(np.mean(e2)))


def mel_stats(mels: Sequence[Union[Tensor, np.ndarray]]) -> tuple[Tensor, Tensor]:
    """Per-bin (mean, std) over all frames of log-mels (n_mels, T_i) -> two (n_mels,) float32 tensors.

    For `MelDecoder.new(..., mel_mean=, mel_std=)` when training jointly from scratch.
    """
    mom = _Moments()
    for m in mels:
        a = m.detach().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m)
        if a.ndim != 2 or a.shape[1] == 0:
            raise DataError(f"mel_stats takes (n_mels, T) mels, got shape {a.shape}")
        mom.add(a, a[:1], mel_space=False)
    if mom.n == 0:
        raise DataError("mel_stats needs at least one mel")
    mean, std = mom.mel_stats()
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# (mel, cond) pairs of a corpus
# ----------------------------------------------------------------------------------------------


class MelPairs:
    """Raw (mel, cond) pairs of utterances: log-mel of the audio, cond from a directory or the stand-in.

    Args: utterances; features (MelSpectrogram of the preset); cond_dir (None: stand-in);
    segment/smooth (stand-in widths); cache: keep decoded pairs in memory (True/False/"auto").
    Headers are checked at construction (unreadable or empty audio, missing/misshapen cond file,
    a frame count more than 2 off); such utterances are skipped with one warning each and listed
    in ``bad``. ``get(i)`` -> (mel (n_mels, T) float32, cond (C_cond, T) float32), raw units.
    """

    def __init__(
        self,
        utterances,
        features: MelSpectrogram,
        *,
        cond_dir: Optional[Union[str, Path]],
        segment: int,
        smooth: int,
        cache: Union[bool, str] = "auto",
        cond_channels: Optional[int] = None,
    ) -> None:
        from cmaudio.data.dataset import header_problem

        self.features = features
        self.cond_dir = None if cond_dir is None else Path(cond_dir)
        self.segment, self.smooth = int(segment), int(smooth)
        if self.cond_dir is not None and not self.cond_dir.is_dir():
            raise DataError(f"data.cond_dir={str(cond_dir)!r} is not a directory of <id>.npy cond files")
        self.bad: list[tuple[str, str]] = []
        self.cond_channels: Optional[int] = cond_channels if self.cond_dir is not None else features.n_mels
        usable, frames = [], []
        for u in sorted(utterances, key=lambda u: (u.id, u.path)):
            reason, n = header_problem(u.path, sample_rate=features.sample_rate, min_samples=features.min_samples)
            if reason is not None:
                self._mark_bad(u.path, reason)
                continue
            T = features.num_frames(n)
            if self.cond_dir is not None:
                path = self.cond_dir / f"{u.id}.npy"
                reason = self._cond_header_problem(path, T)
                if reason is not None:
                    self._mark_bad(str(path), reason)
                    continue
            usable.append(u)
            frames.append(T)
        self.utterances = usable
        self.frames = frames  # expected mel frames (from the audio header)
        c = self.cond_channels or features.n_mels
        if cache == "auto":
            cache = 4 * sum(frames) * (features.n_mels + c) <= AUTO_CACHE_BYTES
        self.cache = bool(cache)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.utterances)

    def _mark_bad(self, path: str, reason: str) -> None:
        self.bad.append((str(path), reason))
        logging.getLogger(_LOGGER_NAME).warning("skipping %s: %s", path, reason)

    def _cond_shape_problem(self, shape: tuple, frames: int) -> Optional[str]:
        if len(shape) != 2:
            return f"cond has shape {tuple(shape)}; expected (C_cond, frames)"
        if self.cond_channels is not None and shape[0] != self.cond_channels:
            hint = " (time-first? save it as (C_cond, frames))" if shape[1] == self.cond_channels else ""
            return f"cond has {shape[0]} channels but the others have {self.cond_channels}{hint}"
        if abs(shape[1] - frames) > 2:
            return (f"cond has {shape[1]} frames but the audio gives {frames} mel frames; conds must be aligned "
                    "to the mel frames (within 2)")
        return None

    def _cond_header_problem(self, path: Path, frames: int) -> Optional[str]:
        if not path.is_file():
            return "missing cond file"
        try:  # header only: a memory map, never unpickling
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, kind = arr.shape, arr.dtype.kind
            del arr
        except Exception as e:  # noqa: BLE001 - any failure means an unusable file
            return f"unreadable cond file ({' '.join(str(e).split())})"
        if kind not in "fiu":
            return f"cond dtype kind {kind!r} is not numeric"
        if self.cond_channels is None and len(shape) == 2:
            self.cond_channels = int(shape[0])  # the first readable file sets the width
        return self._cond_shape_problem(shape, frames)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(mel (n_mels, T), cond (C_cond, T)) float32 of usable utterance i; DataError on bad content."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        from cmaudio.data import load_audio
        from cmaudio.io import load_npy

        u = self.utterances[i]
        fe = self.features
        audio = load_audio(u.path, fe.sample_rate)
        if audio.shape[0] < fe.min_samples:
            raise DataError(f"{u.path}: {audio.shape[0]} samples, too short for one mel frame")
        with torch.no_grad():
            mel = fe(torch.from_numpy(audio))[0].numpy()
        if self.cond_dir is None:
            cond = standin_cond(mel, self.segment, self.smooth)
        else:
            path = self.cond_dir / f"{u.id}.npy"
            cond = load_npy(path)
            problem = self._cond_shape_problem(cond.shape, mel.shape[1])
            if problem is None and not np.isfinite(cond).all():
                problem = "cond holds NaN or inf"
            if problem is not None:
                raise DataError(f"{path}: {problem}")
            T = min(mel.shape[1], cond.shape[1])
            mel, cond = mel[:, :T], cond[:, :T]
        out = (np.ascontiguousarray(mel, dtype=np.float32), np.ascontiguousarray(cond, dtype=np.float32))
        if self.cache:
            self._cache[i] = out
        return out


class MelSegmentDataset(Dataset):
    """Normalised (mel, cond) crops indexed by global stream position p >= 0 (as cmaudio.data.SegmentDataset).

    Item p: utterance perm_e[p % n] of epoch e = p // n (cmaudio.data.epoch_permutation), a crop of
    L = min(T, frames) frames at a start drawn from the crop seed of cmaudio.data.item_seeds(seed, p),
    right-padded to `frames`:
    ``dict(mel=(n_mels, frames), cond=(C_cond, frames), mask=(1, frames), seed=() int64)``, mel and cond
    normalised, zero in the padding. Files whose content is bad fall through to the next utterance
    of the permutation (deterministically), so items stay pure functions of (seed, p).
    """

    def __init__(self, pairs: MelPairs, *, frames: int, seed: int, mel_mean, mel_std, cond_mean, cond_std) -> None:
        from cmaudio.data import epoch_permutation

        if len(pairs) == 0:
            raise DataError("no usable training utterance (see the warnings above)")
        self.pairs = pairs
        self.frames = int(frames)
        self.seed = int(seed)
        self.mel_mean, self.mel_std = np.asarray(mel_mean, np.float32)[:, None], np.asarray(mel_std, np.float32)[:, None]
        self.cond_mean, self.cond_std = np.asarray(cond_mean, np.float32)[:, None], np.asarray(cond_std, np.float32)[:, None]
        self._content_bad: set[int] = set()
        self._perm = (0, epoch_permutation(self.seed, 0, len(pairs)))

    def __len__(self) -> int:
        return len(self.pairs)

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        from cmaudio.data import epoch_permutation

        if self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.seed, epoch, len(self.pairs)))
        return self._perm[1]

    def __getitem__(self, p: int) -> dict[str, Tensor]:
        from cmaudio.data import item_seeds

        p = int(p)
        if p < 0:
            raise IndexError(f"stream position must be >= 0 (got {p})")
        n = len(self.pairs)
        epoch, k = divmod(p, n)
        perm = self._epoch_perm(epoch)
        loaded = None
        for j in range(n):
            idx = int(perm[(k + j) % n])
            if idx in self._content_bad:
                continue
            try:
                loaded = self.pairs.get(idx)
                break
            except DataError as e:
                self._content_bad.add(idx)
                self.pairs._mark_bad(self.pairs.utterances[idx].path, str(e))
        if loaded is None:
            raise DataError(f"none of the {n} training utterances could be loaded; see the warnings")
        mel, cond = loaded
        crop_seed, noise_seed = item_seeds(self.seed, p)
        T = mel.shape[1]
        L = min(T, self.frames)
        start = int(np.random.default_rng(crop_seed).integers(0, T - L + 1))
        m = np.zeros((mel.shape[0], self.frames), np.float32)
        c = np.zeros((cond.shape[0], self.frames), np.float32)
        m[:, :L] = (mel[:, start:start + L] - self.mel_mean) / self.mel_std
        c[:, :L] = (cond[:, start:start + L] - self.cond_mean) / self.cond_std
        mask = np.zeros((1, self.frames), np.float32)
        mask[:, :L] = 1.0
        return {"mel": torch.from_numpy(m), "cond": torch.from_numpy(c), "mask": torch.from_numpy(mask),
                "seed": torch.tensor(noise_seed, dtype=torch.int64)}


# ----------------------------------------------------------------------------------------------
# The training-loop domain
# ----------------------------------------------------------------------------------------------


def _teacher_domain_info(cfg: Config) -> Optional[dict]:
    """{config, domain_info, sigma_data} of a cmaudio CD teacher (run dir or model dir), or None if not one."""
    path = Path(cfg.objective.teacher) if cfg.objective.teacher else None
    if path is None or not path.is_dir():
        return None
    if (path / ckpt.CKPT_DIR).is_dir():
        c = ckpt.latest_valid(path)
        if c is None:
            return None
        meta = ckpt.read_meta(c)
        return {"config": meta.get("config", {}), "domain_info": meta.get("domain_info", {}),
                "sigma_data": meta.get("sigma_data")}
    if (path / ckpt.CONFIG_FILE).is_file():
        info, _ = ckpt.read_model_dir(path)
        return {"config": info.get("config", {}), "domain_info": info.get("domain_info", {}),
                "sigma_data": info.get("sigma_data")}
    return None


class MelDomain(Domain):
    """Mel decoders: x = normalised log-mel crops (B, n_mels, F) (or their residual from cond), cond (B, C_cond, F).

    See the module docstring for the data, normalisation and prior. The statistics come from the
    training split (or, for CD, from the teacher, so teacher and student see the same data).
    """

    def __init__(self, cfg: Config, *, seed: int, log: Callable[[str], None]) -> None:
        from cmaudio.data import splits_from_config

        self.cfg = cfg
        d = cfg.data
        self.features = MelSpectrogram(cfg.features.preset)
        fe = self.features
        if fe.sample_rate != d.sample_rate:
            raise ConfigError(
                f"data.sample_rate ({d.sample_rate}) differs from the {cfg.features.preset!r} preset's "
                f"{fe.sample_rate} Hz; set data.sample_rate={fe.sample_rate}"
            )
        if d.segment_length % fe.hop_length:
            raise ConfigError(f"data.segment_length ({d.segment_length}) must be a multiple of the hop ({fe.hop_length})")
        if "mrstft" in cfg.objective.distance:
            raise ConfigError("objective.distance mrstft compares waveforms; in the mel domain use pseudo_huber, l2 or l1")
        if d.tts_mel_dir:
            raise ConfigError("data.tts_mel_dir is for waveform vocoders; a mel decoder reads its cond from data.cond_dir")
        self.frames = d.segment_length // fe.hop_length
        self.prior = cfg.model.prior
        splits = splits_from_config(d)
        self.train_pairs = MelPairs(splits["train"], fe, cond_dir=d.cond_dir, segment=d.standin_segment,
                                    smooth=d.standin_smooth)
        if self.train_pairs.bad:
            log(f"data: skipped {len(self.train_pairs.bad)} bad file(s) of {len(splits['train'])}")
        if len(self.train_pairs) == 0:
            raise DataError(f"no usable training utterance in data.root={d.root!r}; see the warnings")
        self.cond_source = "standin" if d.cond_dir is None else "dir"
        self.cond_channels_ = int(self.train_pairs.cond_channels)
        self.cond_in_mel_space = self.cond_source == "standin" or self.cond_channels_ == fe.n_mels
        if self.prior == "cond" and not self.cond_in_mel_space:
            raise ConfigError(
                f"model.prior=cond centres the noise on cond, which needs a cond in mel space ({fe.n_mels} channels); "
                f"the cond files have {self.cond_channels_}. Use model.prior=zero"
            )
        self.val_pairs = MelPairs(splits["val"][: d.max_val_utterances], fe, cond_dir=d.cond_dir,
                                  segment=d.standin_segment, smooth=d.standin_smooth, cache=True,
                                  cond_channels=self.cond_channels_)
        self._measure(log)
        teacher = _teacher_domain_info(cfg) if cfg.objective.kind == "cd" else None
        if teacher is not None:
            self._adopt_teacher(teacher, log)
        self.dataset = MelSegmentDataset(self.train_pairs, frames=self.frames, seed=seed, mel_mean=self.mel_mean,
                                         mel_std=self.mel_std, cond_mean=self.cond_mean, cond_std=self.cond_std)

    # ------------------------------------------------------------------ statistics
    def _measure(self, log) -> None:
        pairs = self.train_pairs
        n = len(pairs)
        if pairs.cache or n <= STATS_MAX_UTTERANCES:
            chosen = range(n)
        else:  # evenly spread, deterministic
            chosen = sorted({int(i) for i in np.linspace(0, n - 1, STATS_MAX_UTTERANCES)})
        mom = _Moments()
        for i in chosen:
            try:
                mel, cond = pairs.get(i)
            except DataError as e:
                pairs._mark_bad(pairs.utterances[i].path, str(e))
                continue
            mom.add(mel, cond, self.cond_in_mel_space)
        if mom.n == 0:
            raise DataError("no training utterance could be loaded to measure the mel statistics; see the warnings")
        self.mel_mean, self.mel_std = mom.mel_stats()
        if self.cond_in_mel_space:
            self.cond_mean, self.cond_std = self.mel_mean, self.mel_std
        else:
            self.cond_mean, self.cond_std = mom.cond_stats()
        self._rms = mom.rms(self.prior, self.mel_mean, self.mel_std)
        log(f"mel statistics from {len(chosen)} training utterances ({mom.n} frames); "
            f"RMS of the model's data ({self.prior} prior): {self._rms:.4f}")

    def _adopt_teacher(self, teacher: dict, log) -> None:
        tcfg = teacher.get("config", {}).get("model", {})
        if tcfg.get("domain", "mel") != "mel":
            raise ConfigError(f"objective.teacher {self.cfg.objective.teacher} is a {tcfg.get('domain')} model; "
                              "a mel decoder needs a mel-domain teacher (model.domain=mel)")
        if tcfg.get("prior", "zero") != self.prior:
            raise ConfigError(f"the teacher was trained with model.prior={tcfg.get('prior')!r} but this run uses "
                              f"{self.prior!r}; use the teacher's prior")
        info = teacher.get("domain_info", {})
        if "mel_mean" in info:
            if int(info.get("cond_channels", self.cond_channels_)) != self.cond_channels_:
                raise ConfigError(f"the teacher's cond has {info.get('cond_channels')} channels, this data's {self.cond_channels_}")
            self.mel_mean = np.asarray(info["mel_mean"], np.float64)
            self.mel_std = np.asarray(info["mel_std"], np.float64)
            self.cond_mean = np.asarray(info.get("cond_mean", info["mel_mean"]), np.float64)
            self.cond_std = np.asarray(info.get("cond_std", info["mel_std"]), np.float64)
            if teacher.get("sigma_data") is not None:
                self._rms = float(teacher["sigma_data"])
            log("mel statistics and sigma_data taken from the teacher (student and teacher must normalise alike)")

    def sigma_data(self) -> float:
        """Measured RMS of the model's data: ~1.0 for the zero prior (normalised mels), the residual's for cond."""
        return float(self._rms)

    def cond_channels(self) -> Optional[int]:
        return self.cond_channels_

    def extra_model_info(self) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "mel_mean": [float(v) for v in self.mel_mean],
            "mel_std": [float(v) for v in self.mel_std],
            "cond_mean": [float(v) for v in self.cond_mean],
            "cond_std": [float(v) for v in self.cond_std],
            "cond_channels": self.cond_channels_,
            "cond_source": self.cond_source,
            "cond_in_mel_space": bool(self.cond_in_mel_space),
            "standin_segment": int(d.standin_segment),
            "standin_smooth": int(d.standin_smooth),
        }

    # ------------------------------------------------------------------ batches
    def loader(self, *, start_step, global_batch, rank, world, micro):
        from cmaudio.data import StreamSampler

        sampler = StreamSampler(start_step, global_batch, rank, world, micro)
        nw = self.cfg.data.num_workers
        return DataLoader(self.dataset, batch_size=sampler.local_batch, sampler=sampler, num_workers=nw,
                          persistent_workers=nw > 0, drop_last=False)

    def prepare(self, batch, device):
        mel = batch["mel"].to(device, non_blocking=True)
        cond = batch["cond"].to(device, non_blocking=True)
        x = mel - cond if self.prior == "cond" else mel
        if bool(batch["mask"].all()):  # checked on the CPU copy: no device sync
            mask = None  # no padding: skip the masking work (results are identical)
        else:
            mask = batch["mask"].to(device, non_blocking=True)
            x = x * mask
        return {"x": x, "cond": cond, "mask": mask, "seeds": batch["seed"]}

    # ------------------------------------------------------------------ validation
    def decoder(self, model: nn.Module, cfg: Config) -> "MelDecoder":
        kind = "consistency" if role_of(cfg) == "consistency" else "denoiser"
        dec = MelDecoder(model, cfg, kind=kind, domain_info=self.extra_model_info(),
                         default_sigmas={int(k): v for k, v in cfg.sampling.sigmas.items()})
        return dec.to(next(model.parameters()).device)

    def val_items(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """(id, mel, cond) of the held-out utterances, cut to data.val_seconds (raw units)."""
        out = []
        fe = self.features
        limit = max(int(self.cfg.data.val_seconds * fe.sample_rate / fe.hop_length), 1)
        for i, u in enumerate(self.val_pairs.utterances):
            try:
                mel, cond = self.val_pairs.get(i)
            except CmaudioError:
                continue
            out.append((u.id, mel[:, :limit], cond[:, :limit]))
        return out

    @torch.no_grad()
    def validate(self, model, cfg, step, out_dir, writer):
        dec = self.decoder(model, cfg)
        items = self.val_items()
        if not items:
            return {}
        dev = dec.device
        T = max(m.shape[1] for _, m, _ in items)
        cond = torch.zeros(len(items), dec.cond_channels, T)
        mask = torch.zeros(len(items), 1, T)
        for b, (_, m, c) in enumerate(items):  # a padded batch: validation exercises the masks too
            cond[b, :, : c.shape[1]] = torch.from_numpy(c)
            mask[b, :, : c.shape[1]] = 1
        settings = [(1, "1step"), (2, "2step")] if dec.kind == "consistency" else [(cfg.sampling.teacher_steps, "ode")]
        gens = {}
        for steps, name in settings:
            g = [torch.Generator().manual_seed(1234 + b) for b in range(len(items))]
            gens[name] = dec.generate(cond.to(dev), mask=mask.to(dev), steps=steps, generator=g).cpu()
        scores: dict[str, list] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        for b, (uid, m, c) in enumerate(items):
            n = m.shape[1]
            gt = torch.from_numpy(m)
            if self.cond_in_mel_space:
                scores.setdefault("val/cond_logmel_l1", []).append(float((torch.from_numpy(c) - gt).abs().mean()))
            for name, g in gens.items():
                scores.setdefault(f"val/{name}_logmel_l1", []).append(float((g[b, :, :n] - gt).abs().mean()))
            if b < 2:
                panels = [("ground truth", m)]
                if self.cond_in_mel_space:
                    panels.append(("cond" + (" (stand-in)" if self.cond_source == "standin" else ""), c))
                panels += [(name, gens[name][b, :, :n].numpy()) for name in gens]
                png = out_dir / f"{uid}.png"
                mel_panels_png(panels, png, title=f"step {step} {uid}")
                if writer is not None:
                    try:
                        import matplotlib.image as mpimg

                        writer.add_image(f"mel/{uid}", mpimg.imread(str(png))[..., :3], step, dataformats="HWC")
                    except Exception:  # noqa: BLE001 - images are a convenience
                        pass
        return {k: float(sum(v) / len(v)) for k, v in scores.items() if v}


def mel_panels_png(panels: Sequence[tuple[str, np.ndarray]], path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Stacked log-mel images (n_mels, T) on one colour scale (the first panel's range), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cmaudio.io import atomic_path

    ref = np.asarray(panels[0][1])
    vmin, vmax = float(np.min(ref)), float(np.max(ref))
    fig = Figure(figsize=(6.0, 1.5 * len(panels) + 0.3), dpi=100)
    FigureCanvasAgg(fig)
    ax0 = None
    for k, (name, m) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1, sharex=ax0)
        ax0 = ax0 or ax
        ax.imshow(np.asarray(m), origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{title}: {name}" if (title and k == 0) else name, fontsize=8)
        ax.set_ylabel("mel bin", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.axes[-1].set_xlabel("frame", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


# ----------------------------------------------------------------------------------------------
# The decoder facade
# ----------------------------------------------------------------------------------------------


GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]


class MelDecoder(GeneratorDefaults, nn.Module):
    """Frame-level features -> log-mel in one step (or a few): the mel-domain consistency decoder.

    Holds the parameterized network (`model`, a ConsistencyModel or, for a DSM teacher, a Denoiser),
    its Config, the normalisation statistics (buffers ``mel_mean``, ``mel_std`` (n_mels,),
    ``cond_mean``, ``cond_std`` (C_cond,), saved in state_dict so a TTS model that contains the
    decoder keeps them) and the preset's MelSpectrogram (``features``).

    Attributes: n_mels, preset, sample_rate, hop_length, cond_channels, prior ('zero' | 'cond'),
    kind ('consistency' | 'denoiser'), cond_in_mel_space, info (config.json when loaded).
    """

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        *,
        kind: str = "consistency",
        domain_info: Optional[dict[str, Any]] = None,
        default_sigmas: Optional[dict[int, Sequence[float]]] = None,
    ) -> None:
        super().__init__()
        if config.model.domain != "mel":
            raise CheckpointError("this model is a waveform vocoder (model.domain = wave); load it with Vocoder")
        if kind not in ("consistency", "denoiser"):
            raise ConfigError(f"kind must be consistency or denoiser (got {kind!r})")
        info = dict(domain_info or {})
        self.model = model
        self.config = config
        self.kind = kind
        self.features = MelSpectrogram(config.features.preset)
        n, c = self.features.n_mels, model.cond_channels
        if c is None:
            raise ConfigError("a mel decoder needs a conditioned network (cond_channels)")
        self.prior = config.model.prior
        self.cond_source = info.get("cond_source", "standin")
        self.cond_in_mel_space = bool(info.get("cond_in_mel_space", c == n))
        if self.prior == "cond" and (not self.cond_in_mel_space or c != n):
            raise ConfigError(f"model.prior=cond needs a cond in mel space ({n} channels); this cond has {c}")
        self.standin_segment = int(info.get("standin_segment", config.data.standin_segment))
        self.standin_smooth = int(info.get("standin_smooth", config.data.standin_smooth))

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
        self.default_sigmas = {int(k): tuple(v) for k, v in (default_sigmas or {}).items()}
        self.info: dict[str, Any] = {}
        object.__setattr__(self, "_objective", None)
        self.model.eval()

    # ------------------------------------------------------------------ properties
    @property
    def n_mels(self) -> int:
        return self.features.n_mels

    @property
    def cond_channels(self) -> int:
        return int(self.model.cond_channels)

    @property
    def preset(self) -> str:
        return self.features.preset.name

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
        dec = cls(model, cfg, kind="consistency", domain_info=info)
        dec.model.train()
        return dec

    @classmethod
    def from_pretrained(cls, model_dir: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "MelDecoder":
        """Load a model directory written by `cmaudio export` (or `save_pretrained`)."""
        model_dir = Path(model_dir)
        info, weights = ckpt.read_model_dir(model_dir)
        if info.get("domain", "wave") != "mel":
            raise CheckpointError(f"{model_dir} holds a waveform vocoder, not a mel decoder; load it with Vocoder")
        cfg, sigma_data, kind, sigmas = check_model_info(info, model_dir)
        dinfo = info.get("domain_info", {}) or {}
        cc = dinfo.get("cond_channels") if isinstance(dinfo, dict) else None
        if not isinstance(dinfo, dict) or not (cc is None or (isinstance(cc, int) and not isinstance(cc, bool) and cc > 0)):
            raise CheckpointError(f"{model_dir / ckpt.CONFIG_FILE}: domain_info must be a mapping with a positive "
                                  f"integer cond_channels (got {dinfo!r:.80})")
        model = build_model(cfg, sigma_data, kind, cond_channels=cc)
        ckpt.load_state_into(model, weights, f"{model_dir / ckpt.MODEL_FILE}")
        dec = cls(model, cfg, kind=kind, domain_info=dinfo, default_sigmas=sigmas)
        dec.info = info
        return dec.to(device)

    def save_pretrained(self, model_dir: Union[str, Path], extra: Optional[dict[str, Any]] = None) -> None:
        """Write config.json + model.safetensors (this decoder's current weights and statistics)."""
        sigmas = {k: list(self.sigmas_for(k)) for k in (1, 2, 3, 4)} if self.kind == "consistency" else {}
        p = self.features.preset
        info = {
            "kind": self.kind,
            "domain": "mel",
            "config": config_for_kind(to_dict(self.config), self.kind),
            "sigma_data": float(self.model.param.sigma_data),
            "preset": p.name,
            "sample_rate": p.sample_rate,
            "hop_length": p.hop_length,
            "n_mels": p.n_mels,
            "default_sigmas": {str(k): v for k, v in sigmas.items()},
            "domain_info": self.model_info(),
        }
        info.update(extra or {})
        ckpt.save_model_dir(Path(model_dir), weights=self.model.state_dict(), info=info)

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
        from cmaudio.sampling import ode_sample, teacher_sigmas

        c = self._as_batch(cond, self.cond_channels, "cond")
        B, _, T = c.shape
        m = self._as_mask(mask, B, T)
        cn = self.normalize_cond(c)
        if m is not None:
            cn = cn * m
        if self.kind == "consistency":
            s = tuple(float(v) for v in sigmas) if sigmas is not None else self.sigmas_for(steps)
            if len(s) < 1 or any(a <= b for a, b in zip(s, s[1:])):
                raise DataError(f"sigmas must be a non-empty strictly decreasing list, got {list(s)}")
            z = self._noise(B, T, len(s), generator)
            eps = self.model.param.sigma_min
            x = None
            for k, tau in enumerate(s):  # CM Alg. 1: x_tau = x + sqrt(tau^2 - eps^2) z, x = f(x_tau, tau)
                x = s[0] * z[0] if k == 0 else x + math.sqrt(max(tau * tau - eps * eps, 0.0)) * z[k]
                if m is not None:
                    x = x * m
                x = self.model(x, tau, cn, mask=m)
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

        Built from the decoder's config (objective.p_mean/p_std/s0/s1/total_steps); a cd or ct config
        becomes ict (no teacher, no target network to keep), mrstft terms become pseudo-Huber.
        """
        if self._objective is None:
            o = self.config.objective
            changes: dict[str, Any] = {}
            if self.kind == "consistency" and o.kind in ("cd", "ct"):
                changes["kind"] = "ict"
            if self.kind == "denoiser":
                changes["kind"] = "dsm"
            if "mrstft" in o.distance:
                changes["distance"] = {"pseudo_huber": 1.0}
            cfg = replace(self.config, objective=changes) if changes else self.config
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
) -> list[Path]:
    """Decode cond files to mel files: <stem>.npy (C_cond, T) -> out_dir/<stem>.npy (n_mels, T) float32.

    A .wav input is a demo: its own log-mel's stand-in (the cond the model was trained with when
    data.cond_dir was null) is decoded. The results go to `cmaudio vocode` with a vocoder of the
    same preset. Everything is read and checked before anything is written; each file's noise
    comes from `seed` alone. Returns the written paths.
    """
    from cmaudio.data import load_audio
    from cmaudio.io import load_npy, save_npy_atomic

    dec = MelDecoder.from_pretrained(model_dir, device=device)
    jobs = []
    for f in map(Path, inputs):
        if f.suffix.lower() == ".wav":
            audio = load_audio(f, dec.sample_rate, clip=dec.features.preset.clip_audio)
            cond = dec.standin(dec.mel(torch.from_numpy(audio)).cpu())
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
        jobs.append((Path(out_dir) / f"{f.stem}.npy", cond))
    if len({d for d, _ in jobs}) != len(jobs):
        raise DataError("two inputs would write the same output file; use distinct names")
    out = []
    for dest, cond in jobs:  # every file gets the noise of `seed`: its result does not depend on the others
        mel = dec.generate(cond, steps=steps, generator=torch.Generator().manual_seed(seed))[0].cpu().numpy()
        save_npy_atomic(dest, mel.astype(np.float32))
        out.append(dest)
    return out


__all__ = ["MelDecoder", "MelDomain", "MelPairs", "MelSegmentDataset", "decode_files", "mel_panels_png", "mel_stats",
           "standin_cond"]
