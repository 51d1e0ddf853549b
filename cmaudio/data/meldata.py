"""The mel domain's data: the stand-in cond, normalisation statistics, (mel, cond) pairs, crops.

Used by the mel training domain (`cmaudio.domains.mel.MelDomain`) and by the decoder facade
(`cmaudio.mel.MelDecoder`: its `standin`, and `mel_stats` for joint training). What the data
are, how they are normalised and what the prior does: see `cmaudio.mel`'s docstring.

Imports: data (audio, dataset), errors, features, io (the data level: nothing above it). It sits in
`cmaudio.data` rather than in `cmaudio.domains` so that the decoder facade, which sits below the
training domains, imports data, never a domain.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from cmaudio.data.audio import load_audio
from cmaudio.data.dataset import epoch_permutation, header_problem, item_seeds
from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelSpectrogram
from cmaudio.io import load_npy, npy_header

# Decoded (mel, cond) pairs at most this large (float32 bytes) are kept in memory.
AUTO_CACHE_BYTES = 2 * 1024**3
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
        shape, problem = npy_header(path, "cond")
        if problem:
            return problem
        if self.cond_channels is None and len(shape) == 2:
            self.cond_channels = int(shape[0])  # the first readable file sets the width
        return self._cond_shape_problem(shape, frames)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(mel (n_mels, T), cond (C_cond, T)) float32 of usable utterance i; DataError on bad content."""
        hit = self._cache.get(i)
        if hit is not None:
            return hit
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
        if self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.seed, epoch, len(self.pairs)))
        return self._perm[1]

    def __getitem__(self, p: int) -> dict[str, Tensor]:
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


__all__ = ["MelPairs", "MelSegmentDataset", "mel_stats", "standin_cond"]
