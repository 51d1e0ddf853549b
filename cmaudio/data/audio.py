"""Reading audio files: mono float32 in [-1, 1] at a requested sample rate.

soundfile (libsndfile) reads the files (WAV, FLAC, OGG/Vorbis/Opus, MP3 with libsndfile >= 1.1);
librosa's ``soxr_hq`` resampler converts the rate. Every failure is a one-line DataError.

Lengths after resampling are fixed to ``resampled_length(n, orig, target) = ceil(n * target / orig)``
(exact integer arithmetic), so the length a header predicts equals the length a load returns.
"""

from __future__ import annotations

from pathlib import Path

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


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Load an audio file as mono float32, shape (T,), values in [-1, 1], at `sample_rate` Hz.

    Multichannel audio is averaged to mono. Integer PCM is scaled to [-1, 1) by soundfile;
    float files and the resampler's overshoot are clipped to [-1, 1]. Resampling uses soxr
    (``soxr_hq``) and T = ceil(T_native * sample_rate / native_rate).

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
    audio = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(audio).all():
        raise DataError(f"{path}: audio contains NaN or inf samples; re-export the file")
    if int(native_sr) != int(sample_rate):
        import librosa

        n_out = resampled_length(audio.shape[0], int(native_sr), int(sample_rate))
        audio = librosa.resample(audio, orig_sr=int(native_sr), target_sr=int(sample_rate), res_type="soxr_hq")
        audio = librosa.util.fix_length(audio, size=n_out)
    audio = np.clip(audio, -1.0, 1.0)
    return np.ascontiguousarray(audio, dtype=np.float32)
