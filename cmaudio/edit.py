"""Editing recordings as files: what `cmaudio edit inpaint` and `cmaudio edit bwe` read and write.

A vocoder edits mono float audio at its own rate (`Vocoder.inpaint`, `Vocoder.extend_bandwidth`); a
recording has its own rate, sample format (libsndfile's subtype) and channels. This module keeps the
difference from changing what the user did not ask to change:

- `read_recording` reads a file as stored: PCM as libsndfile's left-aligned int32, float and double
  as float64, so samples written back in the same subtype are the same bits (checked for every
  subtype of `EXACT_SUBTYPES` in WAV, FLAC, AIFF and W64). Float samples beyond [-1, 1] are kept.
- `inpaint_recording`: each channel is edited on its own (the same seed for each). At the model's
  rate the model fills the gap; at another rate the channel is resampled to the model's rate
  (soxr_hq), the gap (widened to whole model samples) is filled there, the result is resampled back
  and only the gap is spliced in, with a raised-cosine crossfade of `FADE_SECONDS` inside each edge
  of the gap (from the recording to the new audio: no step where the recording's band above the
  model's Nyquist frequency stops). Every sample outside the gap is the input's, bit for bit, at
  the input's rate and in its subtype. Subtypes that cannot be written back unchanged (lossy Vorbis,
  Opus, MP3; companded u-law and A-law; ADPCM ...) are refused with one line.
- `extend_recording` (bandwidth extension) writes at the model's rate (what bwe is for), in the input's
  subtype when it is one of `EXACT_SUBTYPES`, else 16-bit PCM; samples are not clamped.
- `write_recording` writes atomically in a format from the output's extension (the input's format
  when the extension names none); a format that cannot hold the subtype is refused before any work.
  Integer subtypes clip the model's samples beyond full scale: `to_raw` counts them, the caller warns.

Imports: data (the resampler's length rule), errors, io, vocoder.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from cmaudio.data.audio import resampled_length, wav_truncation
from cmaudio.errors import DataError
from cmaudio.io import atomic_path
from cmaudio.vocoder import Vocoder

__all__ = ["EXACT_SUBTYPES", "FADE_SECONDS", "Recording", "read_recording", "output_format", "gap_samples",
           "inpaint_recording", "extend_recording", "to_raw", "write_recording"]

#: Subtypes whose samples round-trip exactly through `read_recording` and `write_recording`: bits (None: float).
EXACT_SUBTYPES = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": None, "DOUBLE": None}

#: Crossfade inside each edge of an inpainted gap when the input is not at the model's rate (seconds).
FADE_SECONDS = 0.002

_EXTENSIONS = {"AIF": "AIFF"}


@dataclass
class Recording:
    """A file's samples as stored. raw: (T, C) int32 (PCM, left-aligned: full scale is 2^31) or float64;
    rate in Hz; subtype and format as libsndfile names them (e.g. 'PCM_24', 'WAV')."""

    path: Path
    raw: np.ndarray
    rate: int
    subtype: str
    format: str

    @property
    def frames(self) -> int:
        return int(self.raw.shape[0])

    @property
    def channels(self) -> int:
        return int(self.raw.shape[1])

    def channel(self, c: int) -> np.ndarray:
        """Channel c as float64 (T,): PCM in [-1, 1), float as stored (it may exceed 1)."""
        x = self.raw[:, c]
        return x / 2.0**31 if x.dtype.kind == "i" else x.astype(np.float64)


def read_recording(path: str | Path, *, exact: bool, warn: Optional[Callable[[str], None]] = None) -> Recording:
    """Read `path` as stored. exact: refuse (one line) a subtype that could not be written back unchanged.
    Also refused: a missing or unreadable file, no samples, NaN or inf. `warn` hears of a WAV cut short."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types for corrupt headers
        raise DataError(f"{path}: unreadable audio ({' '.join(str(e).split())})") from None
    if exact and info.subtype not in EXACT_SUBTYPES:
        raise DataError(f"{path}: its {info.subtype} samples ({info.subtype_info}) cannot be written back unchanged; "
                        "convert it to PCM or float WAV/FLAC first")
    pcm = EXACT_SUBTYPES.get(info.subtype) is not None
    try:
        raw, rate = sf.read(str(path), dtype="int32" if pcm else "float64", always_2d=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: unreadable audio ({' '.join(str(e).split())})") from None
    if raw.shape[0] == 0 or raw.size == 0:
        raise DataError(f"{path}: empty audio file (0 samples)")
    if not pcm and not np.isfinite(raw).all():
        raise DataError(f"{path}: audio contains NaN or inf samples; re-export the file")
    if warn is not None:
        problem = wav_truncation(path)
        if problem:
            warn(f"{path}: {problem}; using the {raw.shape[0]} samples present")
    return Recording(path, raw, int(rate), info.subtype, info.format)


def output_format(out: str | Path, input_format: str, subtype: str) -> str:
    """The format to write `out` in: its extension's (e.g. .wav, .flac, .aiff), else `input_format`.
    DataError when that format cannot hold `subtype` (e.g. float samples in FLAC)."""
    import soundfile as sf

    ext = Path(out).suffix[1:].upper()
    ext = _EXTENSIONS.get(ext, ext)
    fmt = ext if ext in sf.available_formats() else input_format
    if not sf.check_format(fmt, subtype):
        raise DataError(f"{out}: a {fmt} file cannot hold {subtype} samples (the input's); name the output .wav")
    return fmt


def gap_samples(rec: Recording, start: float, end: float) -> tuple[int, int]:
    """The gap [start, end) seconds as samples [s0, s1) of the recording, or a DataError."""
    s0, s1 = int(round(start * rec.rate)), int(round(end * rec.rate))
    if not 0 <= s0 < s1 <= rec.frames:
        raise DataError(f"gap {start}:{end} s is outside the recording (0:{rec.frames / rec.rate:.3f} s) or empty")
    return s0, s1


def _resample(x: np.ndarray, orig: int, target: int) -> np.ndarray:
    """soxr_hq resampling of (T,) float64, fixed to `resampled_length` (as data.load_audio does)."""
    import librosa

    if orig == target:
        return x
    y = librosa.resample(x, orig_sr=orig, target_sr=target, res_type="soxr_hq")
    return librosa.util.fix_length(y, size=resampled_length(x.shape[0], orig, target))


def inpaint_recording(voc: Vocoder, rec: Recording, start: float, end: float, *, steps: int = 2,
                      use_mel: bool = True, seed: int = 0) -> tuple[np.ndarray, int]:
    """Fill [start, end) seconds of every channel (module docstring) -> (raw samples (T, C) in the
    recording's dtype, equal to rec.raw outside the gap; how many gap samples were clipped to full scale)."""
    s0, s1 = gap_samples(rec, start, end)
    sr, msr = rec.rate, voc.sample_rate
    out = rec.raw.copy()
    clipped = 0
    for c in range(rec.channels):
        x = rec.channel(c)
        gen = torch.Generator().manual_seed(seed)
        if sr == msr:
            y = voc.inpaint(torch.from_numpy(x.astype(np.float32)), start, end, steps=steps, use_mel=use_mel,
                            generator=gen).cpu().numpy().astype(np.float64)
            new = y[s0:s1]
        else:
            xm = _resample(x, sr, msr)
            g0 = min(math.floor(s0 * msr / sr), xm.shape[0] - 1)
            g1 = min(max(math.ceil(s1 * msr / sr), g0 + 1), xm.shape[0])
            ym = voc.inpaint(torch.from_numpy(xm.astype(np.float32)), g0 / msr, g1 / msr, steps=steps,
                             use_mel=use_mel, generator=gen).cpu().numpy().astype(np.float64)
            y = _resample(ym, msr, sr)[: rec.frames]
            new = y[s0:s1].copy()
            n = min(int(round(FADE_SECONDS * sr)), (s1 - s0) // 2)
            if n > 0:
                w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 1) / (n + 1))  # 0 -> 1, neither end reached
                old = x[s0:s1]
                new[:n] = (1 - w) * old[:n] + w * new[:n]
                new[-n:] = w[::-1] * new[-n:] + (1 - w[::-1]) * old[-n:]
        raw, k = to_raw(new, rec.subtype)
        out[s0:s1, c] = raw
        clipped += k
    return out, clipped


def extend_recording(voc: Vocoder, rec: Recording, *, steps: int = 2, use_mel: bool = True,
                     seed: int = 0) -> np.ndarray:
    """Bandwidth extension of every channel -> (T', C) float64 at the model's rate (not clamped)."""
    chans = []
    for c in range(rec.channels):
        xm = _resample(rec.channel(c), rec.rate, voc.sample_rate) if rec.rate < voc.sample_rate else rec.channel(c)
        y = voc.extend_bandwidth(torch.from_numpy(xm.astype(np.float32)), rec.rate, steps=steps, use_mel=use_mel,
                                 generator=torch.Generator().manual_seed(seed))
        chans.append(y.cpu().numpy().astype(np.float64))
    return np.stack(chans, axis=1)


def to_raw(y: np.ndarray, subtype: str) -> tuple[np.ndarray, int]:
    """Float samples -> what `write_recording` writes for `subtype`: left-aligned int32 for PCM (rounded to
    the subtype's resolution, clipped to its range), float64 otherwise. Returns (raw, how many samples
    were beyond full scale, |y| > 1)."""
    bits = EXACT_SUBTYPES[subtype]
    if bits is None:
        return np.asarray(y, dtype=np.float64), 0
    top = 2.0 ** (bits - 1)
    y = np.asarray(y, dtype=np.float64)
    clipped = int(np.count_nonzero(np.abs(y) > 1.0))  # beyond full scale (not the last LSB below +1)
    v = np.round(y * top)
    v = np.clip(v, -top, top - 1).astype(np.int64) << (32 - bits)
    return v.astype(np.int32), clipped


def write_recording(out: str | Path, raw: np.ndarray, rate: int, subtype: str, fmt: str, *,
                    overwrite: bool = False) -> None:
    """Write raw samples (T, C) (int32 left-aligned or float) atomically as `fmt`/`subtype` at `rate` Hz;
    exclusively unless `overwrite` (io.atomic_path). Non-finite samples and failed writes (a full disk) are
    one-line errors naming `out`, and nothing is left behind."""
    import soundfile as sf

    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise DataError(f"{out}: the audio to write holds NaN or inf values; nothing was written")
    with atomic_path(out, suffix=Path(out).suffix, overwrite=overwrite) as tmp:
        try:
            sf.write(str(tmp), raw, int(rate), subtype=subtype, format=fmt)
        except sf.SoundFileError as e:  # libsndfile's own error for a failed write (a full disk among them)
            raise OSError(errno.EIO, f"writing the audio failed ({' '.join(str(e).split())}); is the disk full?",
                          str(out)) from None
