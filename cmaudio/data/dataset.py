"""Training segments as a pure function of a global stream position, and the sampler that feeds it.

The training stream is an unbounded sequence of positions p = 0, 1, 2, ...; optimizer step s
with global batch B consumes positions [s B, (s + 1) B). Item p depends only on (seed, p):

- epoch e = p // n (n = usable utterances); the utterance is perm_e[p % n], perm_e a permutation
  of range(n) seeded by sha256(f"{seed}:epoch:{e}");
- h = sha256(f"{seed}:{p}"): bytes 0-8 seed the crop generator, bytes 8-16 (63 bits) are the
  item's `seed`, which downstream code uses for the per-sample noise.

So a run resumed at step s sees exactly the items it would have seen (StreamSampler(start_step=s)),
and any world size / micro-batching with the same global batch sees the same set of items per step.

Bad files: headers are checked at construction (unreadable, empty, shorter than one segment at the
target rate, missing/misshapen TTS mel); each is skipped with one WARNING line on the
"cmaudio.data" logger and recorded in `dataset.bad`. Content problems found on load (NaN/inf,
all-zero audio, non-finite mel) mark the file bad (one warning, per process: each DataLoader worker
keeps its own record) and the item deterministically falls through to the next utterance of the
epoch permutation. Badness is a property of the file, so items stay pure functions of (seed, p).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cmaudio.data.audio import audio_info, load_audio, resampled_length
from cmaudio.data.formats import Utterance, list_utterances
from cmaudio.io import npy_header
from cmaudio.data.split import split_utterances
from cmaudio.errors import DataError
from cmaudio.io import load_npy

if TYPE_CHECKING:  # pragma: no cover
    from cmaudio.config import DataConfig

_LOGGER_NAME = "cmaudio.data"

# Decoded audio at most this large (float32 bytes) is cached when cache="auto".
AUTO_CACHE_BYTES = 2 * 1024**3


def _log() -> logging.Logger:
    return logging.getLogger(_LOGGER_NAME)


def _strip_path(msg: str, path: Union[str, Path]) -> str:
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def item_seeds(seed: int, p: int) -> tuple[int, int]:
    """(crop generator seed, per-item noise seed) for stream position p: from sha256(f"{seed}:{p}").

    Both are 63-bit non-negative ints (they fit int64 and torch.Generator.manual_seed).
    """
    d = _sha(f"{seed}:{p}")
    return int.from_bytes(d[:8], "big") >> 1, int.from_bytes(d[8:16], "big") >> 1


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n usable utterances in epoch `epoch` (int64 array of shape (n,))."""
    rng = np.random.default_rng(int.from_bytes(_sha(f"{seed}:epoch:{epoch}")[:8], "big"))
    return rng.permutation(n)


def header_problem(path: Union[str, Path], *, sample_rate: int, min_samples: int = 1) -> tuple[Optional[str], int]:
    """Check one audio file from its header: (reason it is unusable or None, length at `sample_rate`).

    Unusable: missing or unreadable, 0 samples, or fewer than `min_samples` samples after
    resampling to `sample_rate` Hz.
    """
    try:
        native_sr, frames = audio_info(path)
    except DataError as e:
        return _strip_path(str(e), path), 0
    if frames == 0:
        return "empty audio file (0 samples)", 0
    n = resampled_length(frames, native_sr, sample_rate)
    if n < min_samples:
        return f"too short: {n} samples at {sample_rate} Hz, a segment needs {min_samples}", n
    return None, n


class SegmentDataset(Dataset):
    """Random fixed-length crops of utterances, indexed by global stream position p >= 0 (unbounded).

    Args:
        utterances: the training utterances (sorted by id here, so order of the input is irrelevant).
        sample_rate: Hz; audio is resampled to it on load.
        segment_length: samples per crop; a multiple of hop_length.
        hop_length: samples per mel frame of the features the model uses.
        seed: stream seed (e.g. train.seed); items are pure functions of (seed, p).
        tts_mel_dir: directory of ground-truth-aligned TTS mels ``<id>.npy`` of shape (n_mels, frames),
            frames within 2 of num_samples // hop_length. Crops then start on a hop boundary.
        n_mels: mel bins of those files (required with tts_mel_dir).
        cache: keep decoded, resampled audio (and mels) in memory; "auto" caches when the corpus
            decodes to at most AUTO_CACHE_BYTES. Each DataLoader worker holds its own cache.

    Item p is ``dict(audio=FloatTensor (1, segment_length) in [-1, 1], seed=LongTensor ())`` plus
    ``mel=FloatTensor (n_mels, segment_length // hop_length)`` with tts_mel_dir: the mel frames
    [crop_start // hop, crop_start // hop + segment_length // hop).

    Attributes: ``utterances`` (usable, sorted), ``bad`` (list of (path, reason)).
    ``len(dataset)`` is the number of usable utterances (one epoch of the stream); any p >= 0 is valid.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        *,
        sample_rate: int,
        segment_length: int,
        hop_length: int,
        seed: int,
        tts_mel_dir: Union[str, Path, None] = None,
        n_mels: Optional[int] = None,
        cache: Union[bool, str] = True,
    ) -> None:
        if sample_rate < 1 or segment_length < 1 or hop_length < 1:
            raise DataError(
                f"sample_rate ({sample_rate}), segment_length ({segment_length}) and hop_length ({hop_length}) "
                "must be positive"
            )
        if segment_length % hop_length:
            raise DataError(
                f"data.segment_length ({segment_length}) must be a multiple of the hop length ({hop_length}); "
                f"use {max(1, round(segment_length / hop_length)) * hop_length}"
            )
        if tts_mel_dir is not None:
            if n_mels is None or n_mels < 1:
                raise DataError("tts_mel_dir needs n_mels (the mel bins of the TTS mel files)")
            if not Path(tts_mel_dir).is_dir():
                raise DataError(f"data.tts_mel_dir={str(tts_mel_dir)!r} is not a directory of <id>.npy mel files")
        if cache not in (True, False, "auto"):
            raise DataError(f"cache must be true, false or 'auto' (got {cache!r})")
        self.sample_rate = int(sample_rate)
        self.segment_length = int(segment_length)
        self.hop_length = int(hop_length)
        self.seed = int(seed)
        self.tts_mel_dir = None if tts_mel_dir is None else Path(tts_mel_dir)
        self.n_mels = None if n_mels is None else int(n_mels)
        self.bad: list[tuple[str, str]] = []
        self._frames_per_segment = self.segment_length // self.hop_length

        usable: list[Utterance] = []
        lengths: list[int] = []
        given = sorted(utterances, key=lambda u: (u.id, u.path))
        for u in given:
            reason, n = header_problem(u.path, sample_rate=self.sample_rate, min_samples=self.segment_length)
            if reason is not None:
                self._mark_bad(u.path, reason)
                continue
            if self.tts_mel_dir is not None:
                mel_path = self._mel_path(u)
                reason = self._mel_header_problem(mel_path, n)
                if reason is not None:
                    self._mark_bad(str(mel_path), reason)
                    continue
            usable.append(u)
            lengths.append(n)
        if not usable:
            raise DataError(self._none_usable_message(len(given)))
        self.utterances: list[Utterance] = usable
        self._lengths = lengths
        self._content_bad: set[int] = set()
        if cache == "auto":
            cache = 4 * sum(lengths) <= AUTO_CACHE_BYTES
        self.cache = bool(cache)
        self._cache: dict[int, tuple[np.ndarray, Optional[np.ndarray]]] = {}
        self._perm: tuple[int, np.ndarray] = (0, epoch_permutation(self.seed, 0, len(usable)))

    # ------------------------------------------------------------------ bookkeeping

    def _none_usable_message(self, total: int) -> str:
        shown = "; ".join(f"{p}: {r}" for p, r in self.bad[:3])
        more = f" (+{len(self.bad) - 3} more)" if len(self.bad) > 3 else ""
        return (
            f"no usable utterance among {total} (segment_length {self.segment_length} at {self.sample_rate} Hz)"
            f"{': ' + shown + more if shown else ''}; check data.root/format or lower data.segment_length"
        )

    def _mark_bad(self, path: str, reason: str) -> None:
        self.bad.append((str(path), reason))
        _log().warning("skipping %s: %s", path, reason)

    def _mel_path(self, u: Utterance) -> Path:
        assert self.tts_mel_dir is not None
        return self.tts_mel_dir / f"{u.id}.npy"

    def _mel_shape_problem(self, shape: tuple, num_samples: int) -> Optional[str]:
        expected = num_samples // self.hop_length
        if len(shape) != 2 or shape[0] != self.n_mels:
            return f"TTS mel has shape {tuple(shape)}, expected ({self.n_mels}, ~{expected}) = (n_mels, frames)"
        if abs(shape[1] - expected) > 2:
            return (
                f"TTS mel has {shape[1]} frames but the audio has {num_samples} samples = {expected} frames of "
                f"hop {self.hop_length}; mels must be ground-truth aligned (within 2 frames)"
            )
        if shape[1] < self._frames_per_segment:
            return f"TTS mel has {shape[1]} frames, a segment needs {self._frames_per_segment}"
        return None

    def _mel_header_problem(self, mel_path: Path, num_samples: int) -> Optional[str]:
        shape, problem = npy_header(mel_path, "TTS mel")
        return problem or self._mel_shape_problem(shape, num_samples)

    # ------------------------------------------------------------------ loading

    def _load(self, idx: int) -> Optional[tuple[np.ndarray, Optional[np.ndarray]]]:
        """Decoded (audio (T,), mel (n_mels, F) or None) of usable utterance idx, or None if its content is bad."""
        hit = self._cache.get(idx)
        if hit is not None:
            return hit
        u = self.utterances[idx]
        try:
            audio = load_audio(u.path, self.sample_rate)
        except DataError as e:
            return self._content_failure(idx, u.path, _strip_path(str(e), u.path))
        if not np.any(audio):
            return self._content_failure(idx, u.path, "all-zero (silent) audio")
        if audio.shape[0] < self.segment_length:
            return self._content_failure(idx, u.path, f"decodes to {audio.shape[0]} samples, fewer than a segment")
        mel = None
        if self.tts_mel_dir is not None:
            mel_path = self._mel_path(u)
            try:
                mel = load_npy(mel_path)
            except DataError as e:
                return self._content_failure(idx, str(mel_path), _strip_path(str(e), mel_path))
            reason = self._mel_shape_problem(mel.shape, audio.shape[0])
            if reason is None and not np.isfinite(mel).all():
                reason = "TTS mel contains NaN or inf"
            if reason is not None:
                return self._content_failure(idx, str(mel_path), reason)
            mel = np.ascontiguousarray(mel, dtype=np.float32)
        out = (audio, mel)
        if self.cache:
            self._cache[idx] = out
        return out

    def _content_failure(self, idx: int, path: str, reason: str) -> None:
        """Record a file whose content is unusable (one warning) and return None."""
        self._content_bad.add(idx)
        self._mark_bad(path, reason)
        return None

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:
            self._perm = (epoch, epoch_permutation(self.seed, epoch, len(self.utterances)))
        return self._perm[1]

    # ------------------------------------------------------------------ Dataset API

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, p: int) -> dict[str, torch.Tensor]:
        p = int(p)
        if p < 0:
            raise IndexError(f"stream position must be >= 0 (got {p})")
        n = len(self.utterances)
        epoch, k = divmod(p, n)
        perm = self._epoch_perm(epoch)
        loaded = None
        for j in range(n):  # deterministic fall-through past files whose content is bad
            idx = int(perm[(k + j) % n])
            if idx in self._content_bad:
                continue
            loaded = self._load(idx)
            if loaded is not None:
                break
        if loaded is None:
            raise DataError(
                f"none of the {n} utterances that passed the header check could be loaded "
                f"({len(self._content_bad)} had bad content: NaN/inf, silence or unreadable data); see the warnings"
            )
        audio, mel = loaded
        crop_seed, noise_seed = item_seeds(self.seed, p)
        rng = np.random.default_rng(crop_seed)
        seg, hop = self.segment_length, self.hop_length
        item: dict[str, torch.Tensor] = {}
        if mel is None:
            start = int(rng.integers(0, audio.shape[0] - seg + 1))
        else:
            fps = self._frames_per_segment
            max_frame = min((audio.shape[0] - seg) // hop, mel.shape[1] - fps)
            frame = int(rng.integers(0, max_frame + 1))
            start = frame * hop
            item["mel"] = torch.from_numpy(mel[:, frame : frame + fps].copy())
        item["audio"] = torch.from_numpy(audio[start : start + seg].copy()).unsqueeze(0)
        item["seed"] = torch.tensor(noise_seed, dtype=torch.int64)
        return item


# ---------------------------------------------------------------------- sampling


class StreamSampler(Sampler):
    """Infinite sampler of the stream positions one rank consumes, starting at `start_step`.

    For step s (from start_step on), micro-batch m < micro_batches and i < B / (micro_batches world_size),
    it yields s B + m (B / micro_batches) + rank + world_size i, with B = global_batch. The ranks of a
    micro-batch together cover its B / micro_batches consecutive positions; the micro-batches of a step
    cover [s B, (s + 1) B). Resuming at start_step = s continues the stream exactly.
    """

    def __init__(self, start_step: int, global_batch: int, rank: int = 0, world_size: int = 1, micro_batches: int = 1):
        if start_step < 0:
            raise DataError(f"start_step must be >= 0 (got {start_step})")
        if global_batch < 1 or world_size < 1 or micro_batches < 1:
            raise DataError(
                f"global batch ({global_batch}), world size ({world_size}) and micro-batches ({micro_batches}) "
                "must be >= 1"
            )
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside [0, world_size={world_size})")
        if global_batch % (micro_batches * world_size):
            raise DataError(
                f"train.batch_size ({global_batch}) must be divisible by train.grad_accum ({micro_batches}) x "
                f"the number of processes ({world_size}) = {micro_batches * world_size}"
            )
        self.start_step = int(start_step)
        self.global_batch = int(global_batch)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.micro_batches = int(micro_batches)
        self.local_batch = global_batch // (micro_batches * world_size)

    def positions(self, step: int, micro: int = 0) -> list[int]:
        """The positions this rank takes for micro-batch `micro` of step `step`."""
        base = step * self.global_batch + micro * (self.global_batch // self.micro_batches) + self.rank
        return [base + self.world_size * i for i in range(self.local_batch)]

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            for m in range(self.micro_batches):
                yield from self.positions(step, m)
            step += 1


def make_loader(
    dataset: SegmentDataset,
    *,
    start_step: int,
    global_batch: int,
    rank: int = 0,
    world_size: int = 1,
    micro_batches: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """An infinite DataLoader of micro-batches for this rank: batch_size = B / (micro_batches world_size).

    Each next() gives dict(audio (b, 1, L), seed (b,), [mel (b, n_mels, L / hop)]); micro-batches
    come in order m = 0..micro_batches-1 of step start_step, then of the next step, and so on.
    """
    sampler = StreamSampler(start_step, global_batch, rank, world_size, micro_batches)
    return DataLoader(
        dataset,
        batch_size=sampler.local_batch,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        drop_last=False,
        # Items are pure functions of (seed, position); a private generator keeps the DataLoader
        # from drawing its worker base seed from the global RNG, which would shift the dropout
        # stream of a resumed run by one draw.
        generator=torch.Generator().manual_seed(start_step),
    )


def load_utterance_audio(utt: Utterance, sample_rate: int) -> torch.Tensor:
    """A whole utterance as a FloatTensor (T,) in [-1, 1] at `sample_rate` Hz (for validation).

    Raises DataError for unreadable, empty or non-finite audio.
    """
    return torch.from_numpy(load_audio(utt.path, sample_rate))


# ---------------------------------------------------------------------- from a DataConfig


def splits_from_config(cfg: "DataConfig") -> dict[str, list[Utterance]]:
    """List the corpus a DataConfig names and split it: {"train", "val", "test"} -> utterances."""
    utts = list_utterances(cfg.root, cfg.format, vctk_mic=cfg.vctk_mic, libritts_subsets=cfg.libritts_subsets)
    if not utts:
        raise DataError(f"data.root={cfg.root!r} (format {cfg.format}) holds no utterances")
    return split_utterances(utts, seed=cfg.split_seed, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)


def dataset_from_config(
    cfg: "DataConfig", utterances: Sequence[Utterance], *, hop_length: int, seed: int, n_mels: Optional[int] = None
) -> SegmentDataset:
    """SegmentDataset for a DataConfig (sample_rate, segment_length, tts_mel_dir); caches when small."""
    return SegmentDataset(
        utterances,
        sample_rate=cfg.sample_rate,
        segment_length=cfg.segment_length,
        hop_length=hop_length,
        seed=seed,
        tts_mel_dir=cfg.tts_mel_dir,
        n_mels=n_mels,
        cache="auto",
    )
