"""Corpus health check and the sigma_data estimate.

sigma_data (Karras et al. 2022, the data standard deviation in the EDM/consistency scalings) is a
property of the waveforms: the pooled standard deviation of all samples of all usable files,
sqrt(E[x^2] - E[x]^2) over the concatenation (LJSpeech: about 0.09, not 0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from cmaudio.data.audio import audio_info, load_audio, resampled_length
from cmaudio.data.dataset import _strip_path
from cmaudio.data.formats import Utterance, list_utterances
from cmaudio.errors import DataError


class _Pooled:
    """Running sum, sum of squares and count in float64 (for the pooled std)."""

    def __init__(self) -> None:
        self.s = 0.0
        self.ss = 0.0
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.s += float(x64.sum())
        self.ss += float(np.dot(x64, x64))
        self.n += int(x64.size)

    def std(self) -> Optional[float]:
        if self.n == 0:
            return None
        mean = self.s / self.n
        return float(np.sqrt(max(self.ss / self.n - mean * mean, 0.0)))


def estimate_sigma_data(utterances: Sequence[Utterance], sample_rate: int, max_files: int = 200) -> float:
    """Pooled waveform std of up to `max_files` utterances (evenly spaced over the list), at `sample_rate` Hz.

    Files that fail to load (unreadable, empty, NaN/inf) or are all zeros are left out.
    Raises DataError if none is usable.
    """
    if max_files < 1:
        raise DataError(f"max_files must be >= 1 (got {max_files})")
    utts = list(utterances)
    if len(utts) > max_files:
        idx = np.unique(np.linspace(0, len(utts) - 1, max_files).round().astype(int))
        utts = [utts[i] for i in idx]
    pooled = _Pooled()
    for u in utts:
        try:
            x = load_audio(u.path, sample_rate)
        except DataError:
            continue
        if np.any(x):
            pooled.add(x)
    std = pooled.std()
    if std is None:
        raise DataError(f"cannot estimate sigma_data: none of {len(utts)} files could be loaded")
    return std


def check_corpus(
    root: Union[str, Path],
    format: str,
    sample_rate: Optional[int] = None,
    *,
    vctk_mic: str = "mic1",
    libritts_subsets: Sequence[str] = (),
    segment_length: Optional[int] = None,
) -> dict:
    """Read every file of a corpus and report on it.

    sample_rate: Hz to resample to before measuring the std (None: each file's native rate).
    segment_length: if given, files shorter than this many samples (at sample_rate, or native) are bad.

    Returns a dict with keys:
      root, format, sample_rate, utterances (listed), speakers (distinct), usable, bad (counts),
      hours (usable audio, from headers), sample_rates ({native Hz: file count}, readable files),
      bad_files ([(path, reason)]), std (pooled waveform std of usable files = sigma_data estimate,
      None if no file is usable).
    """
    utts = list_utterances(root, format, vctk_mic=vctk_mic, libritts_subsets=tuple(libritts_subsets))
    rates: dict[int, int] = {}
    bad: list[tuple[str, str]] = []
    seconds = 0.0
    usable = 0
    pooled = _Pooled()
    for u in utts:
        try:
            native, frames = audio_info(u.path)
        except DataError as e:
            bad.append((u.path, _strip_path(str(e), u.path)))
            continue
        rates[native] = rates.get(native, 0) + 1
        if frames == 0:
            bad.append((u.path, "empty audio file (0 samples)"))
            continue
        rate = sample_rate or native
        if segment_length is not None and resampled_length(frames, native, rate) < segment_length:
            n = resampled_length(frames, native, rate)
            bad.append((u.path, f"too short: {n} samples at {rate} Hz, a segment needs {segment_length}"))
            continue
        try:
            x = load_audio(u.path, rate)
        except DataError as e:
            bad.append((u.path, _strip_path(str(e), u.path)))
            continue
        if not np.any(x):
            bad.append((u.path, "all-zero (silent) audio"))
            continue
        usable += 1
        seconds += frames / native
        pooled.add(x)
    return {
        "root": str(root),
        "format": format,
        "sample_rate": sample_rate,
        "utterances": len(utts),
        "speakers": len({u.speaker for u in utts}),
        "usable": usable,
        "bad": len(bad),
        "hours": seconds / 3600.0,
        "sample_rates": dict(sorted(rates.items())),
        "bad_files": bad,
        "std": pooled.std(),
    }


def format_report(report: dict) -> str:
    """Printable lines for a check_corpus report."""
    rate = f"{report['sample_rate']} Hz" if report.get("sample_rate") else "native rates"
    lines = [
        f"corpus: {report['root']} (format {report['format']})",
        f"utterances: {report['utterances']}  speakers: {report['speakers']}",
        f"usable: {report['usable']}  bad: {report['bad']}",
        f"hours (usable): {report['hours']:.3f} ({report['hours'] * 60:.1f} min)",
        "native sample rates: "
        + (", ".join(f"{sr} Hz x {n}" for sr, n in report["sample_rates"].items()) or "none readable"),
        "waveform std (sigma_data estimate): "
        + (f"{report['std']:.4f} at {rate}" if report["std"] is not None else "n/a (no usable file)"),
    ]
    if report["bad_files"]:
        lines.append("bad files:")
        lines.extend(f"  {p}: {r}" for p, r in report["bad_files"])
    return "\n".join(lines)
