"""Reading audio files: mono float32 in [-1, 1] at a requested sample rate.

soundfile (libsndfile) reads the files (WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1);
librosa's ``soxr_hq`` resampler converts the rate. Every failure is a one-line DataError.

Lengths after resampling are fixed to ``resampled_length(n, orig, target) = ceil(n * target / orig)``
(exact integer arithmetic), so the length a header predicts equals the length a load returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from cmaudio.errors import DataError


def _one_line(e: BaseException, path: Path) -> str:
    """The exception's message on one line, without the path libsndfile repeats in it."""
    text = " ".join(str(e).replace(f"'{path}'", "file").replace(str(path), "file").split())
    return text or type(e).__name__


def resampled_length(num_frames: int, orig_sr: int, target_sr: int) -> int:
    """Samples after resampling `num_frames` samples from `orig_sr` to `target_sr` Hz: ceil(n * target / orig)."""
    if orig_sr == target_sr:
        return int(num_frames)
    return -(-int(num_frames) * int(target_sr) // int(orig_sr))


def audio_info(path: str | Path) -> tuple[int, int]:
    """(native sample rate in Hz, number of frames per channel), read from the file header only.

    Raises DataError (one line) when the file is missing or its header cannot be read.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises several types for corrupt headers
        raise DataError(f"{path}: unreadable audio ({_one_line(e, path)})") from None
    if info.samplerate <= 0:
        raise DataError(f"{path}: header gives sample rate {info.samplerate}")
    return int(info.samplerate), int(max(info.frames, 0))


def wav_truncation(path: str | Path) -> Optional[str]:
    """A short reason when a RIFF/WAVE file holds fewer data bytes than its header declares, else None.

    libsndfile silently reads what is there; a copy cut short is worth a warning. Streaming
    writers' placeholder sizes (0 or 0xFFFFFFFF) are not reported.
    """
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    return None
                cid, n = ch[:4], struct.unpack("<I", ch[4:])[0]
                pos += 8
                if cid == b"data":
                    if n in (0, 0xFFFFFFFF) or pos + n <= size:
                        return None
                    return f"truncated: the header declares {n} data bytes but the file holds {size - pos}"
                pos += n + (n & 1)
                f.seek(pos)
    except OSError:
        return None


def load_audio(path: str | Path, sample_rate: int, *, clip: bool = True,
               warn: Optional[Callable[[str], None]] = None) -> np.ndarray:
    """Load an audio file as mono float32, shape (T,), at `sample_rate` Hz.

    Multichannel audio is averaged to mono. Integer PCM is scaled to [-1, 1) by soundfile.
    With `clip` (the default, for training data) float files and the resampler's overshoot are
    clipped to [-1, 1]; feature extraction for a mel convention passes the preset's
    ``clip_audio`` instead, so that only stacks that clip (DiffWave) see clipped audio.
    Resampling uses soxr (``soxr_hq``) and T = ceil(T_native * sample_rate / native_rate).
    `warn` (if given) is told, one line naming the file, about a WAV cut short.

    Raises DataError (one line) for a missing or unreadable file, an empty file, or NaN/inf samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        data, native_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise DataError(f"{path}: unreadable audio ({_one_line(e, path)})") from None
    if data.size == 0 or data.shape[0] == 0:
        raise DataError(f"{path}: empty audio file (0 samples)")
    if warn is not None:
        problem = wav_truncation(path)
        if problem:
            warn(f"{path}: {problem}; using the {data.shape[0]} samples present")
    audio = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(audio).all():
        raise DataError(f"{path}: audio contains NaN or inf samples; re-export the file")
    if int(native_sr) != int(sample_rate):
        import librosa

        n_out = resampled_length(audio.shape[0], int(native_sr), int(sample_rate))
        audio = librosa.resample(audio, orig_sr=int(native_sr), target_sr=int(sample_rate), res_type="soxr_hq")
        audio = librosa.util.fix_length(audio, size=n_out)
    if clip:
        audio = np.clip(audio, -1.0, 1.0)
    return np.ascontiguousarray(audio, dtype=np.float32)
