"""Log-mel spectrograms in the exact conventions of the TTS / vocoder stacks cmaudio serves.

This is the ONE mel definition of the package (docs/design.md section 3): a vocoder owns a
`MelSpectrogram` built from a named preset, so copy-synthesis is exact, and a mel produced by
another stack is accepted only in that stack's convention.

A convention is a chain of five stages, each fixed by a `MelPreset`:

1. padding and framing   centred STFT (``center=True``: pad n_fft//2 each side with ``pad_mode``)
                         or HiFi-GAN's reflect pre-pad of (n_fft - hop)/2 each side then
                         ``center=False``; periodic Hann window of ``win_length`` (zero-padded
                         to n_fft, centred), hop ``hop_length``.
2. magnitude             ``abs``: |X|;  ``sqrt_add``: sqrt(re^2 + im^2 + eps) (HiFi-GAN, eps 1e-9);
                         ``sqrt_clamp``: sqrt(max(re^2 + im^2, eps)) (ESPnet, eps 1e-10).
                         ``normalized`` divides X by sqrt(sum w^2) first (torchaudio's
                         ``normalized=True``, i.e. "window" normalisation; NOT torch.stft's
                         1/sqrt(n_fft)).
3. mel filterbank        librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk, norm), applied
                         to the magnitude (power 1 everywhere).
4. log                   ``ln``: ln(max(m, floor)); ``log10``: log10(max(m, floor));
                         ``db``: 20 log10(max(m, floor)); then ``- ref_level_db``.
5. post-normalisation    ``unit``:      max_norm (L - min_level_db) / (-min_level_db), clip [0, max_norm]
                         ``symmetric``: 2 max_norm (L - min_level_db) / (-min_level_db) - max_norm,
                                        clip [-max_norm, max_norm]   (Coqui ``AudioProcessor.normalize``)

Presets (all: n_fft 1024, hop 256, win 1024 periodic Hann, power-1 magnitude; M = mel amplitude):

============= ===== ==== ========= ======================= ============= ======================= ====================
name          Hz    mels fmin-fmax framing                 scale / norm  magnitude               log-mel
============= ===== ==== ========= ======================= ============= ======================= ====================
hifigan       22050 80   0-8000    reflect pre-pad 384,    slaney/slaney sqrt(|X|^2 + 1e-9)      ln(max(M, 1e-5))
                                   center=False
hifigan_log10 22050 80   0-8000    as hifigan              slaney/slaney sqrt(|X|^2 + 1e-9)      log10(max(M, 1e-5))
hifigan_db    22050 80   0-8000    as hifigan              slaney/slaney sqrt(|X|^2 + 1e-9)      20 log10(max(M,1e-5))
diffwave      22050 80   20-11025  center, reflect         htk/none      |X| / sqrt(sum w^2)     (a)
vocos         24000 100  0-12000   center, reflect         htk/none      |X|                     ln(max(M, 1e-7))
espnet        22050 80   80-7600   center, reflect         slaney/slaney sqrt(max(|X|^2, 1e-10)) log10(max(M, 1e-10))
coqui         22050 80   0-11025   center, reflect         slaney/slaney |X|                     (b)
coqui_db      22050 80   0-11025   center, reflect         slaney/slaney |X|                     20 log10(max(M,1e-8))
natspeech     22050 80   80-7600   center, zeros           slaney/slaney |X|                     log10(max(M, 1e-6))
============= ===== ==== ========= ======================= ============= ======================= ====================

(a) clip((20 log10(max(M, 1e-5)) - 20 + 100) / 100, 0, 1)          in [0, 1]
(b) clip(8 (20 log10(max(M, 1e-8)) - 20 + 100) / 100 - 4, -4, 4)    in [-4, 4]

Stacks matched (the sources were read, not guessed):

- ``hifigan``: jik876/hifi-gan ``meldataset.mel_spectrogram`` with config_v1 (22050/1024/256/1024,
  80 mels, fmin 0, fmax 8000); also Grad-TTS, Matcha-TTS (before its mel_mean/mel_std
  normalisation), BigVGAN 22 kHz 80-band fmax 8k, and most open HiFi-GAN LJSpeech checkpoints.
- ``hifigan_log10`` / ``hifigan_db``: the HiFi-GAN analysis with a log10 or dB log. They exist so
  that a stack keeping HiFi-GAN's filterbank but another log base is served, and so that
  ``convert`` has an exact family (they differ from ``hifigan`` only by a constant factor).
- ``diffwave``: lmnt-com/diffwave ``preprocess.transform``: torchaudio MelSpectrogram(sr 22050,
  n_fft 1024, win 4*hop = 1024, hop 256, f_min 20, f_max sr/2, 80 mels, power 1,
  normalized=True; defaults center=True, reflect, HTK, norm None), then
  20 log10(clamp(x, 1e-5)) - 20 and clamp((x + 100)/100, 0, 1). (DiffWave reads int16 PCM and
  divides by 32767.5, not 32768: a gain of 1 + 1.5e-5, i.e. 1.3e-6 in its [0, 1] units.)
- ``vocos``: gemelo-ai/vocos ``MelSpectrogramFeatures`` (padding="center") of
  charactr/vocos-mel-24khz: torchaudio MelSpectrogram(24000, n_fft 1024, hop 256, 100 mels,
  center=True, power=1; defaults reflect, HTK, norm None, fmax sr/2), then
  ``safe_log`` = ln(clip(x, 1e-7)).
- ``espnet``: ESPnet2 TTS ``LogMelFbank`` (egs2/ljspeech/tts1: fs 22050, n_fft 1024, hop 256,
  win None = n_fft, fmin 80, fmax 7600, htk False): Stft(center=True, reflect), amplitude
  sqrt(clamp(re^2 + im^2, 1e-10)), librosa slaney mel, clamp(mel, 1e-10), log10. The
  global_mvn statistics of an ESPnet model are applied inside the model and are not part of
  this convention (ESPnet vocoders take this un-normalised log10 mel).
- ``coqui``: coqui-ai/TTS ``AudioProcessor.melspectrogram`` with the ``BaseAudioConfig``
  defaults (what its LJSpeech vocoder recipes train on): librosa.stft(1024, 256, 1024,
  center=True, reflect), |X|, librosa slaney mel fmin 0 fmax None (= sr/2), amp_to_db
  20 log10(max(x, 1e-8)) (older releases' AudioProcessor._amp_to_db used 1e-5: the same output
  here, the -4 clip at M = 1e-4 hides both floors; for ``coqui_db`` they differ below M = 1e-5),
  ``normalize``: S - ref_level_db(20), (S - min_level_db(-100)) / 100, symmetric
  8 S - 4, clip [-4, 4]. Models saved with a ``stats_path`` (mean-variance scaling) use another
  normalisation that needs their stats file and is not covered.
- ``coqui_db``: the same AudioProcessor with ``signal_norm=False`` (raw 20 log10 dB mel).
- ``natspeech``: NATSpeech ``utils.audio.librosa_wav2spec`` with egs_bases dataset_params
  (22050/1024/256/1024, 80 mels, fmin 80, fmax 7600, eps 1e-6): librosa.stft(center=True,
  pad_mode="constant"), |X|, librosa slaney mel, log10(max(mel, 1e-6)).

Conversions (``can_convert`` / ``convert``): two presets are convertible when they share stages
1-3 exactly (same STFT, filterbank and magnitude definition) and so differ only by an invertible
pointwise map of the log stage. Here that is {hifigan, hifigan_log10, hifigan_db} and
{coqui, coqui_db}. Every conversion is exact (to float rounding) for values that the source's
floor or clip did not touch, and also at the source floor when the destination floor is at least
as high (e.g. within the hifigan family, where all floors are 1e-5). A source value sitting on a
floor or clip bound only says "at most / at least", so it maps to the bound's image, which is
not exact. Anything else (different sample rate, STFT, filterbank, magnitude) is refused with
`cmaudio.errors.DataError`: re-extract the mel from audio instead.

This module imports nothing of cmaudio except cmaudio.errors.
"""

from __future__ import annotations

import difflib
import math
import types
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cmaudio.errors import ConfigError, DataError

__all__ = [
    "MelPreset",
    "PRESETS",
    "get_preset",
    "MelSpectrogram",
    "PresetFraming",
    "overlap_add",
    "can_convert",
    "convert",
    "ln_to_log10",
    "log10_to_ln",
    "ln_to_db",
    "db_to_ln",
    "log10_to_db",
    "db_to_log10",
    "coqui_normalize",
    "coqui_denormalize",
    "diffwave_normalize",
    "diffwave_denormalize",
]

_LN10 = math.log(10.0)

_MAGNITUDES = ("abs", "sqrt_add", "sqrt_clamp")
_LOG_KINDS = ("ln", "log10", "db")
_POST_NORMS = (None, "unit", "symmetric")


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelPreset:
    """Every parameter of one log-mel convention (the stages are listed in the module docstring).

    Units: sample_rate in Hz; n_fft, hop_length, win_length, pre_pad in samples; fmin/fmax in Hz;
    log_floor is a mel amplitude (linear units of the magnitude after the filterbank);
    ref_level_db, min_level_db are in the units of the log stage (dB for ``log_kind="db"``).
    """

    name: str
    source: str  # the stack (repository and function) this preset reproduces
    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    fmin: float
    fmax: float
    center: bool  # torch.stft/librosa center: pad n_fft // 2 each side with pad_mode
    pad_mode: str  # "reflect" | "constant" (zeros); used by center and by pre_pad
    pre_pad: int  # samples padded each side before the STFT (HiFi-GAN: (n_fft - hop) // 2, reflect)
    normalized: bool  # divide the STFT by sqrt(sum(window^2)) (torchaudio normalized=True)
    magnitude: str  # "abs" | "sqrt_add" | "sqrt_clamp" (see module docstring)
    magnitude_eps: float  # eps of sqrt_add / sqrt_clamp (ignored for abs)
    mel_scale: str  # "slaney" | "htk"
    mel_norm: Optional[str]  # "slaney" (area normalisation) | None
    log_kind: str  # "ln" | "log10" | "db" (20 log10)
    log_floor: float  # clamp(mel, min=log_floor) before the log
    ref_level_db: float = 0.0  # subtracted after the log (DiffWave's "- 20", Coqui's ref_level_db)
    post_norm: Optional[str] = None  # None | "unit" | "symmetric"
    min_level_db: float = -100.0  # post_norm: the log value mapped to 0 (unit) / -max_norm (symmetric)
    max_norm: float = 1.0  # post_norm: top of the range
    clip_norm: bool = True  # post_norm: clip into [0, max_norm] / [-max_norm, max_norm]
    window: str = "hann"  # periodic Hann (torch.hann_window, scipy get_window("hann", fftbins=True))
    clip_audio: bool = False  # the stack clamps loaded audio to [-1, 1] before analysis (DiffWave preprocess)

    def __post_init__(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(f"mel preset {self.name!r}: {what}")

        for key in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise bad(f"{key} must be a positive integer, got {value!r}")
        if self.win_length > self.n_fft:
            raise bad(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if isinstance(self.pre_pad, bool) or not isinstance(self.pre_pad, (int, np.integer)) or self.pre_pad < 0:
            raise bad(f"pre_pad must be a non-negative integer, got {self.pre_pad!r}")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise bad(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin {self.fmin}, fmax {self.fmax}")
        if self.pad_mode not in ("reflect", "constant"):
            raise bad(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")
        if self.magnitude not in _MAGNITUDES:
            raise bad(f"magnitude must be one of {_MAGNITUDES}, got {self.magnitude!r}")
        if self.magnitude != "abs" and not self.magnitude_eps > 0:
            raise bad(f"magnitude_eps must be > 0 for {self.magnitude!r}, got {self.magnitude_eps!r}")
        if self.mel_scale not in ("slaney", "htk"):
            raise bad(f"mel_scale must be 'slaney' or 'htk', got {self.mel_scale!r}")
        if self.mel_norm not in ("slaney", None):
            raise bad(f"mel_norm must be 'slaney' or None, got {self.mel_norm!r}")
        if self.log_kind not in _LOG_KINDS:
            raise bad(f"log_kind must be one of {_LOG_KINDS}, got {self.log_kind!r}")
        if not self.log_floor > 0:
            raise bad(f"log_floor must be > 0, got {self.log_floor!r}")
        if self.post_norm not in _POST_NORMS:
            raise bad(f"post_norm must be one of {_POST_NORMS}, got {self.post_norm!r}")
        if self.post_norm is not None and not (self.min_level_db < 0 and self.max_norm > 0):
            raise bad(f"post_norm needs min_level_db < 0 and max_norm > 0, got {self.min_level_db}, {self.max_norm}")
        if self.window != "hann":
            raise bad(f"only the periodic 'hann' window is supported, got {self.window!r}")

    def describe(self) -> str:
        """One line: every parameter of the convention, readable."""
        if self.center:
            framing = f"center ({self.pad_mode} pad {self.n_fft // 2})"
        else:
            framing = f"{self.pad_mode} pre-pad {self.pre_pad}, center=False"
        if self.pre_pad and self.center:
            framing = f"{self.pad_mode} pre-pad {self.pre_pad}, " + framing
        mag = {
            "abs": "|X|",
            "sqrt_add": f"sqrt(|X|^2+{self.magnitude_eps:g})",
            "sqrt_clamp": f"sqrt(max(|X|^2,{self.magnitude_eps:g}))",
        }[self.magnitude]
        if self.normalized:
            mag += " of X/sqrt(sum w^2)"
        log = {"ln": "ln", "log10": "log10", "db": "20log10"}[self.log_kind]
        expr = f"{log}(max(m,{self.log_floor:g}))"
        if self.ref_level_db:
            expr += f"-{self.ref_level_db:g}"
        if self.post_norm == "unit":
            expr = f"{self.max_norm:g}*({expr}-({self.min_level_db:g}))/{-self.min_level_db:g}"
            if self.clip_norm:
                expr = f"clip({expr},0,{self.max_norm:g})"
        elif self.post_norm == "symmetric":
            expr = f"{2 * self.max_norm:g}*({expr}-({self.min_level_db:g}))/{-self.min_level_db:g}-{self.max_norm:g}"
            if self.clip_norm:
                expr = f"clip({expr},-{self.max_norm:g},{self.max_norm:g})"
        fb = f"{self.mel_scale} scale, {'no' if self.mel_norm is None else self.mel_norm} norm"
        return (
            f"{self.name}: {self.sample_rate} Hz, n_fft {self.n_fft}, hop {self.hop_length}, "
            f"win {self.win_length} hann, {framing}, {mag}, {self.n_mels} mels "
            f"{self.fmin:g}-{self.fmax:g} Hz ({fb}), {expr}"
        )


_HIFIGAN_STFT = dict(
    sample_rate=22050,
    n_fft=1024,
    hop_length=256,
    win_length=1024,
    n_mels=80,
    fmin=0.0,
    fmax=8000.0,
    center=False,
    pad_mode="reflect",
    pre_pad=(1024 - 256) // 2,
    normalized=False,
    magnitude="sqrt_add",
    magnitude_eps=1e-9,
    mel_scale="slaney",
    mel_norm="slaney",
)

_COQUI_STFT = dict(
    sample_rate=22050,
    n_fft=1024,
    hop_length=256,
    win_length=1024,
    n_mels=80,
    fmin=0.0,
    fmax=11025.0,
    center=True,
    pad_mode="reflect",
    pre_pad=0,
    normalized=False,
    magnitude="abs",
    magnitude_eps=0.0,
    mel_scale="slaney",
    mel_norm="slaney",
)

PRESETS: Mapping[str, MelPreset] = types.MappingProxyType(
    {
        # jik876/hifi-gan meldataset.py mel_spectrogram + config_v1.json; Grad-TTS, Matcha-TTS
        # (before mel_mean/std), BigVGAN 22 kHz 80-band fmax 8k. docs/design.md section 3 default.
        "hifigan": MelPreset(
            name="hifigan",
            source="jik876/hifi-gan meldataset.mel_spectrogram (config_v1); Grad-TTS, Matcha-TTS, BigVGAN 22k fmax 8k",
            log_kind="ln",
            log_floor=1e-5,
            **_HIFIGAN_STFT,
        ),
        # HiFi-GAN analysis, log10 (an exact relative of hifigan: x / ln 10).
        "hifigan_log10": MelPreset(
            name="hifigan_log10",
            source="HiFi-GAN analysis with a log10 log (cmaudio; exact conversion partner of hifigan)",
            log_kind="log10",
            log_floor=1e-5,
            **_HIFIGAN_STFT,
        ),
        # HiFi-GAN analysis, dB (an exact relative of hifigan: 20 x / ln 10).
        "hifigan_db": MelPreset(
            name="hifigan_db",
            source="HiFi-GAN analysis with a 20 log10 dB log (cmaudio; exact conversion partner of hifigan)",
            log_kind="db",
            log_floor=1e-5,
            **_HIFIGAN_STFT,
        ),
        # lmnt-com/diffwave preprocess.py transform(): torchaudio MelSpectrogram(normalized=True,
        # f_min 20, f_max sr/2, win 4*hop) then 20 log10(clamp(x, 1e-5)) - 20, clamp((x+100)/100, 0, 1).
        "diffwave": MelPreset(
            name="diffwave",
            source="lmnt-com/diffwave preprocess.transform (torchaudio MelSpectrogram, normalized=True)",
            sample_rate=22050,
            n_fft=1024,
            hop_length=256,
            win_length=1024,
            n_mels=80,
            fmin=20.0,
            fmax=11025.0,
            center=True,
            pad_mode="reflect",
            pre_pad=0,
            normalized=True,
            magnitude="abs",
            magnitude_eps=0.0,
            mel_scale="htk",
            mel_norm=None,
            log_kind="db",
            log_floor=1e-5,
            ref_level_db=20.0,
            post_norm="unit",
            min_level_db=-100.0,
            max_norm=1.0,
            clip_norm=True,
            clip_audio=True,  # preprocess.transform: audio = torch.clamp(audio[0], -1.0, 1.0)
        ),
        # gemelo-ai/vocos feature_extractors.MelSpectrogramFeatures(padding="center"), config of
        # charactr/vocos-mel-24khz: torchaudio MelSpectrogram(power=1) then safe_log = ln(clip(x, 1e-7)).
        "vocos": MelPreset(
            name="vocos",
            source="gemelo-ai/vocos MelSpectrogramFeatures (vocos-mel-24khz, padding='center')",
            sample_rate=24000,
            n_fft=1024,
            hop_length=256,
            win_length=1024,
            n_mels=100,
            fmin=0.0,
            fmax=12000.0,
            center=True,
            pad_mode="reflect",
            pre_pad=0,
            normalized=False,
            magnitude="abs",
            magnitude_eps=0.0,
            mel_scale="htk",
            mel_norm=None,
            log_kind="ln",
            log_floor=1e-7,
        ),
        # espnet2 tts/feats_extract/log_mel_fbank.LogMelFbank (defaults fmin 80, fmax 7600) with
        # egs2/ljspeech/tts1 fs 22050, n_fft 1024, n_shift 256; Stft center=True reflect;
        # amp = sqrt(clamp(power, 1e-10)); LogMel: clamp(mel, 1e-10).log10().
        "espnet": MelPreset(
            name="espnet",
            source="espnet2 LogMelFbank (egs2/ljspeech/tts1: 22050 Hz, n_fft 1024, hop 256, fmin 80, fmax 7600)",
            sample_rate=22050,
            n_fft=1024,
            hop_length=256,
            win_length=1024,
            n_mels=80,
            fmin=80.0,
            fmax=7600.0,
            center=True,
            pad_mode="reflect",
            pre_pad=0,
            normalized=False,
            magnitude="sqrt_clamp",
            magnitude_eps=1e-10,
            mel_scale="slaney",
            mel_norm="slaney",
            log_kind="log10",
            log_floor=1e-10,
        ),
        # coqui-ai/TTS utils/audio AudioProcessor.melspectrogram + normalize with BaseAudioConfig
        # defaults: spec_gain 20, log10, ref_level_db 20, min_level_db -100, symmetric, max_norm 4, clip.
        "coqui": MelPreset(
            name="coqui",
            source="coqui-ai/TTS AudioProcessor.melspectrogram with BaseAudioConfig defaults ([-4, 4] symmetric norm)",
            log_kind="db",
            log_floor=1e-8,
            ref_level_db=20.0,
            post_norm="symmetric",
            min_level_db=-100.0,
            max_norm=4.0,
            clip_norm=True,
            **_COQUI_STFT,
        ),
        # The same AudioProcessor with signal_norm=False: raw amp_to_db mel (exact partner of coqui).
        "coqui_db": MelPreset(
            name="coqui_db",
            source="coqui-ai/TTS AudioProcessor.melspectrogram, BaseAudioConfig defaults with signal_norm=False",
            log_kind="db",
            log_floor=1e-8,
            **_COQUI_STFT,
        ),
        # NATSpeech utils/audio/__init__.py librosa_wav2spec with egs_bases/tts/dataset_params.yaml:
        # librosa.stft(pad_mode="constant"), |X|, fmin 80, fmax 7600, log10(max(eps=1e-6, mel)).
        "natspeech": MelPreset(
            name="natspeech",
            source="NATSpeech librosa_wav2spec (dataset_params: fmin 80, fmax 7600, eps 1e-6)",
            sample_rate=22050,
            n_fft=1024,
            hop_length=256,
            win_length=1024,
            n_mels=80,
            fmin=80.0,
            fmax=7600.0,
            center=True,
            pad_mode="constant",
            pre_pad=0,
            normalized=False,
            magnitude="abs",
            magnitude_eps=0.0,
            mel_scale="slaney",
            mel_norm="slaney",
            log_kind="log10",
            log_floor=1e-6,
        ),
    }
)


def get_preset(name: Union[str, MelPreset]) -> MelPreset:
    """The preset called `name` (case-insensitive, '-' == '_'); a MelPreset is returned as is.

    Raises ConfigError for an unknown name, naming the closest preset and listing all of them.
    """
    if isinstance(name, MelPreset):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"a mel preset is named by a string, got {type(name).__name__}; valid: {', '.join(PRESETS)}")
    key = name.strip().lower().replace("-", "_")
    if key in PRESETS:
        return PRESETS[key]
    closest = difflib.get_close_matches(key, list(PRESETS), n=1, cutoff=0.0)
    hint = f"did you mean {closest[0]!r}? " if closest else ""
    raise ConfigError(f"unknown mel preset {name!r}; {hint}valid presets: {', '.join(PRESETS)}")


# ----------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------


def _mel_filterbank(p: MelPreset) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float64 librosa filterbank of the preset."""
    import librosa  # lazy: librosa is slow to import and only needed here

    return librosa.filters.mel(
        sr=p.sample_rate,
        n_fft=p.n_fft,
        n_mels=p.n_mels,
        fmin=p.fmin,
        fmax=p.fmax,
        htk=p.mel_scale == "htk",
        norm=p.mel_norm,
        dtype=np.float64,
    )


def _min_samples(p: MelPreset) -> int:
    """Fewest input samples the preset's padding and framing accept (at least one frame)."""
    need = 1
    if p.pre_pad and p.pad_mode == "reflect":
        need = max(need, p.pre_pad + 1)  # reflect padding needs pad < length
    if p.center and p.pad_mode == "reflect":
        need = max(need, p.n_fft // 2 + 1 - 2 * p.pre_pad)
    if not p.center:
        need = max(need, p.n_fft - 2 * p.pre_pad)  # one full frame after the pre-pad
    return need


class MelSpectrogram(nn.Module):
    """Waveform -> log-mel spectrogram in a preset's convention (module docstring, docs/design.md section 3).

    Args:
        preset: a preset name (see `PRESETS`) or a `MelPreset`.

    forward(audio):
        audio: float tensor (T,), (B, T) or (B, 1, T), samples in [-1, 1] at ``sample_rate``.
        Returns (B, n_mels, num_frames(T)) in the preset's units. Computed in
        promote(audio.dtype, float32): float64 stays float64, float32/bf16/fp16 give float32;
        autocast is disabled inside. The device is the input's (buffers follow it). The result
        is differentiable with respect to audio (|X| and the clamps have finite gradients).

    Precision: float32 carries the reference stacks' own round-off, about 1e-7 of a frame's
    energy (so ~1e-3 in log units for bins 100 dB below the frame's peak); float64 input gives
    the convention to ~1e-7 everywhere (the window is then built in float64).

    Attributes: ``preset``, ``sample_rate``, ``hop_length``, ``n_mels``, ``n_fft``,
    ``min_samples`` (shortest accepted input). Buffers (not saved in state_dict):
    ``mel_basis`` (n_mels, n_fft//2+1) float32 and ``window`` (win_length,) float32.
    """

    def __init__(self, preset: Union[str, MelPreset] = "hifigan") -> None:
        super().__init__()
        p = get_preset(preset)
        self.preset = p
        self.sample_rate = int(p.sample_rate)
        self.hop_length = int(p.hop_length)
        self.n_mels = int(p.n_mels)
        self.n_fft = int(p.n_fft)
        self.min_samples = _min_samples(p)
        fb = torch.from_numpy(_mel_filterbank(p)).to(torch.float32)
        self.register_buffer("mel_basis", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(p.win_length, periodic=True), persistent=False)

    def extra_repr(self) -> str:
        return self.preset.describe()

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` input samples.

        center=True: 1 + T // hop (T + 2 pre_pad in general). center=False (HiFi-GAN):
        (T + 2 pre_pad - n_fft) // hop + 1, which is T // hop when T is a multiple of hop.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
            raise DataError(f"num_samples must be a non-negative integer, got {num_samples!r}")
        p = self.preset
        length = int(num_samples) + 2 * p.pre_pad
        if p.center:
            return 1 + length // p.hop_length
        if length < p.n_fft:
            return 0
        return (length - p.n_fft) // p.hop_length + 1

    def _check(self, audio: Tensor) -> Tensor:
        name = self.preset.name
        if not isinstance(audio, Tensor):
            raise DataError(f"MelSpectrogram({name!r}) takes a torch.Tensor, got {type(audio).__name__}")
        if not audio.is_floating_point():
            raise DataError(
                f"MelSpectrogram({name!r}) needs float audio in [-1, 1], got dtype {audio.dtype}; "
                "convert int16 PCM with x.float() / 32768"
            )
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        elif audio.dim() == 3:
            if audio.shape[1] != 1:
                raise DataError(
                    f"MelSpectrogram({name!r}) takes (T,), (B, T) or (B, 1, T) mono audio, got shape "
                    f"{tuple(audio.shape)}; mix channels down first"
                )
            audio = audio[:, 0]
        elif audio.dim() != 2:
            raise DataError(
                f"MelSpectrogram({name!r}) takes (T,), (B, T) or (B, 1, T) audio, got shape {tuple(audio.shape)}"
            )
        if audio.shape[-1] < self.min_samples:
            raise DataError(
                f"audio of {audio.shape[-1]} samples is too short for the {name!r} mel "
                f"({self.preset.pad_mode} padding and n_fft {self.n_fft}); need at least {self.min_samples}"
            )
        return audio

    def forward(self, audio: Tensor) -> Tensor:
        p = self.preset
        audio = self._check(audio)
        dtype = torch.promote_types(audio.dtype, torch.float32)
        # The log-mel must not run in bf16 under an outer autocast (matmul would be downcast).
        with torch.autocast(device_type=audio.device.type, enabled=False):
            x = audio.to(dtype)
            if p.pre_pad:
                # HiFi-GAN: F.pad(y.unsqueeze(1), ((n_fft-hop)/2,)*2, mode='reflect') then center=False.
                x = F.pad(x.unsqueeze(1), (p.pre_pad, p.pre_pad), mode=p.pad_mode).squeeze(1)
            if dtype == self.window.dtype:
                window = self.window.to(device=x.device)
            else:
                # A float32 window rounded to float64 leaks ~-140 dB of broadband error into quiet
                # bins; build it in the compute dtype instead.
                window = torch.hann_window(p.win_length, periodic=True, dtype=dtype, device=x.device)
            spec = torch.stft(
                x,
                n_fft=p.n_fft,
                hop_length=p.hop_length,
                win_length=p.win_length,
                window=window,
                center=p.center,
                pad_mode=p.pad_mode,
                normalized=False,
                onesided=True,
                return_complex=True,
            )  # (B, n_fft//2+1, frames)
            return self.from_spectrum(spec)

    def from_spectrum(self, spec: Tensor) -> Tensor:
        """Stages 2-5 on the preset's complex STFT (B, n_fft//2+1, frames), e.g. `PresetFraming.analysis`:
        the log-mel (B, n_mels, frames) that forward gives for the signal of that STFT."""
        p = self.preset
        with torch.autocast(device_type=spec.device.type, enabled=False):
            if p.normalized:
                # torchaudio normalized=True ("window"): divide by the window's L2 norm.
                spec = spec / math.sqrt(p.win_length * 0.375)  # sum of a periodic Hann window's squares
            if p.magnitude == "abs":
                mag = spec.abs()
            else:
                power = spec.real.pow(2) + spec.imag.pow(2)
                if p.magnitude == "sqrt_add":
                    mag = torch.sqrt(power + p.magnitude_eps)
                else:
                    mag = torch.sqrt(torch.clamp(power, min=p.magnitude_eps))
            mel = torch.matmul(self.mel_basis.to(device=mag.device, dtype=mag.dtype), mag)  # (B, n_mels, frames)
            return _log_stage(mel, p)


def overlap_add(frames: Tensor, hop: int) -> Tensor:
    """(B, F, N) frames -> (B, (F - 1) hop + N): frame i added in at sample i * hop (what F.fold does).

    The frames are cut into hop-long pieces (zero-padded to a whole number r of them); piece j of
    frame i lands in output block i + j, so r shifted slice-adds make the sum, several times faster
    than F.fold on the CPU (4.8 ms against 0.86 ms for 860 frames of 1024 at hop 256, one thread).
    Used by every inverse STFT of the package (PresetFraming.synthesis, FrameNet's iSTFT head).
    """
    B, nF, N = frames.shape
    r = -(-N // hop)
    if r * hop != N:
        frames = F.pad(frames, (0, r * hop - N))
    pieces = frames.reshape(B, nF, r, hop)
    out = frames.new_zeros(B, nF + r - 1, hop)
    for j in range(r):
        out[:, j:j + nF] += pieces[:, :, j]
    return out.reshape(B, -1)[:, : (nF - 1) * hop + N]


class PresetFraming:
    """A preset's complex STFT and its least-squares inverse in the preset's own frame grid (stage 1).

    For a fixed number of frames: analysis(y) is the STFT `MelSpectrogram` takes magnitudes of (the
    preset's pre-pad or centring, periodic Hann window of win_length zero-padded to n_fft, hop); and
    synthesis(spec, length) is the least-squares inverse (Griffin & Lim 1984, eq. 6): windowed
    overlap-add divided by the summed squared window, padding cut off, zero-padded to `length`.
    Within the frames' span synthesis(analysis(y)) = y up to rounding.

    Args: preset (name or MelPreset); frames (>= 1); dtype (float32 or float64: the window's and the
    envelope's). Used by Griffin-Lim (cmaudio.baselines) and the mel projection (cmaudio.projection).
    """

    def __init__(self, preset: Union[str, MelPreset], frames: int, dtype: torch.dtype = torch.float64) -> None:
        p = get_preset(preset)
        self.preset, self.frames = p, int(frames)
        w = torch.hann_window(p.win_length, periodic=True, dtype=dtype)
        left = (p.n_fft - p.win_length) // 2
        self.window = F.pad(w, (left, p.n_fft - p.win_length - left))  # centred in n_fft, as torch.stft does
        total = (self.frames - 1) * p.hop_length + p.n_fft
        env = overlap_add(self.window.pow(2)[None, None, :].expand(1, self.frames, p.n_fft), p.hop_length)[0]
        self.envelope = torch.where(env > 1e-11, env, torch.ones_like(env))  # only outside the kept span
        self.offset = p.pre_pad + (p.n_fft // 2 if p.center else 0)  # samples in front of the signal

    def analysis(self, y: Tensor) -> Tensor:
        """y (B, L) -> (B, n_fft // 2 + 1, frames) complex (frames past `frames` dropped)."""
        p = self.preset
        w = self.window.to(device=y.device)
        x = y
        if p.pre_pad:
            x = F.pad(x.unsqueeze(1), (p.pre_pad, p.pre_pad), mode=p.pad_mode).squeeze(1)
        spec = torch.stft(x, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.n_fft, window=w,
                          center=p.center, pad_mode=p.pad_mode, normalized=False, onesided=True, return_complex=True)
        return spec[..., : self.frames]

    def synthesis(self, spec: Tensor, length: int) -> Tensor:
        """spec (B, n_fft // 2 + 1, frames) complex -> (B, length) real."""
        p = self.preset
        w = self.window.to(device=spec.device)
        frames = torch.fft.irfft(spec.transpose(1, 2), n=p.n_fft, dim=-1) * w  # (B, frames, n_fft)
        ola = overlap_add(frames, p.hop_length)
        y = (ola / self.envelope.to(device=spec.device))[:, self.offset : self.offset + length]
        return F.pad(y, (0, length - y.shape[-1])) if y.shape[-1] < length else y


def _log_stage(mel: Tensor, p: MelPreset) -> Tensor:
    """Stages 4-5 on a mel amplitude tensor, in the order the stacks apply them."""
    m = torch.clamp(mel, min=p.log_floor)
    if p.log_kind == "ln":
        y = torch.log(m)
    elif p.log_kind == "log10":
        y = torch.log10(m)
    else:
        y = 20.0 * torch.log10(m)
    if p.ref_level_db:
        y = y - p.ref_level_db
    if p.post_norm is not None:
        y = (y - p.min_level_db) / (-p.min_level_db)
        if p.post_norm == "unit":
            y = p.max_norm * y
            if p.clip_norm:
                y = torch.clamp(y, 0.0, p.max_norm)
        else:
            y = (2.0 * p.max_norm) * y - p.max_norm
            if p.clip_norm:
                y = torch.clamp(y, -p.max_norm, p.max_norm)
    return y


# ----------------------------------------------------------------------------------------------
# Elementary invertible maps (work on numpy arrays, tensors and floats)
# ----------------------------------------------------------------------------------------------

ArrayLike = Union[Tensor, np.ndarray, float]


def _clip(x: ArrayLike, lo: float, hi: float) -> ArrayLike:
    if isinstance(x, Tensor):
        return torch.clamp(x, lo, hi)
    return np.clip(x, lo, hi)


def ln_to_log10(x: ArrayLike) -> ArrayLike:
    """ln(m) -> log10(m) = ln(m) / ln 10. Exact (also for floored values when the floors match)."""
    return x / _LN10


def log10_to_ln(x: ArrayLike) -> ArrayLike:
    """log10(m) -> ln(m) = log10(m) ln 10."""
    return x * _LN10


def ln_to_db(x: ArrayLike) -> ArrayLike:
    """ln(m) -> 20 log10(m) dB = 20 ln(m) / ln 10."""
    return x * (20.0 / _LN10)


def db_to_ln(x: ArrayLike) -> ArrayLike:
    """20 log10(m) dB -> ln(m) = dB ln 10 / 20."""
    return x * (_LN10 / 20.0)


def log10_to_db(x: ArrayLike) -> ArrayLike:
    """log10(m) -> 20 log10(m) dB."""
    return x * 20.0


def db_to_log10(x: ArrayLike) -> ArrayLike:
    """20 log10(m) dB -> log10(m)."""
    return x / 20.0


def coqui_normalize(
    db: ArrayLike,
    *,
    ref_level_db: float = 20.0,
    min_level_db: float = -100.0,
    max_norm: float = 4.0,
    symmetric: bool = True,
    clip: bool = True,
) -> ArrayLike:
    """Coqui AudioProcessor.normalize: dB (20 log10 m) -> [-max_norm, max_norm] (or [0, max_norm]).

    S = (db - ref_level_db - min_level_db) / (-min_level_db); symmetric: 2 max_norm S - max_norm,
    else max_norm S; then clipped to the range when `clip`. Defaults are BaseAudioConfig's
    ([-4, 4]). Invertible by `coqui_denormalize` wherever the clip did not act, i.e. for
    ref_level_db + min_level_db < db < ref_level_db (-80 dB < db < 20 dB with the defaults).
    """
    s = (db - ref_level_db - min_level_db) / (-min_level_db)
    if symmetric:
        s = (2.0 * max_norm) * s - max_norm
        return _clip(s, -max_norm, max_norm) if clip else s
    s = max_norm * s
    return _clip(s, 0.0, max_norm) if clip else s


def coqui_denormalize(
    x: ArrayLike,
    *,
    ref_level_db: float = 20.0,
    min_level_db: float = -100.0,
    max_norm: float = 4.0,
    symmetric: bool = True,
    clip: bool = True,
) -> ArrayLike:
    """Coqui AudioProcessor.denormalize: the inverse of `coqui_normalize` (clips first when `clip`)."""
    if symmetric:
        if clip:
            x = _clip(x, -max_norm, max_norm)
        return (x + max_norm) * (-min_level_db) / (2.0 * max_norm) + min_level_db + ref_level_db
    if clip:
        x = _clip(x, 0.0, max_norm)
    return x * (-min_level_db) / max_norm + min_level_db + ref_level_db


def diffwave_normalize(db: ArrayLike) -> ArrayLike:
    """DiffWave: dB (20 log10 m) -> clamp((db - 20 + 100) / 100, 0, 1).

    Invertible by `diffwave_denormalize` for -80 dB < db < 20 dB (mel amplitude 1e-4 < m < 10).
    """
    return coqui_normalize(db, ref_level_db=20.0, min_level_db=-100.0, max_norm=1.0, symmetric=False, clip=True)


def diffwave_denormalize(x: ArrayLike) -> ArrayLike:
    """DiffWave [0, 1] -> dB (20 log10 m): 100 x - 100 + 20 (values are clipped to [0, 1] first)."""
    return coqui_denormalize(x, ref_level_db=20.0, min_level_db=-100.0, max_norm=1.0, symmetric=False, clip=True)


# ----------------------------------------------------------------------------------------------
# Conversion between presets
# ----------------------------------------------------------------------------------------------

# Everything of stages 1-3 (sample rate, STFT, magnitude, filterbank): equal => convertible.
_ANALYSIS_FIELDS = (
    "sample_rate",
    "n_fft",
    "hop_length",
    "win_length",
    "window",
    "center",
    "pad_mode",
    "pre_pad",
    "normalized",
    "magnitude",
    "magnitude_eps",
    "n_mels",
    "fmin",
    "fmax",
    "mel_scale",
    "mel_norm",
)


def _analysis_diff(a: MelPreset, b: MelPreset) -> list[str]:
    out = []
    for key in _ANALYSIS_FIELDS:
        va, vb = getattr(a, key), getattr(b, key)
        if key == "magnitude_eps" and a.magnitude == b.magnitude == "abs":
            continue
        if key == "pad_mode" and not (a.center or a.pre_pad or b.center or b.pre_pad):
            continue
        if va != vb:
            out.append(f"{key} {va!r} vs {vb!r}")
    return out


def can_convert(src: Union[str, MelPreset], dst: Union[str, MelPreset]) -> bool:
    """True when src and dst share sample rate, STFT, magnitude and filterbank exactly.

    They then differ only in the log stage (base, floor, offset, affine normalisation and clip),
    which `convert` inverts pointwise. Unknown names raise ConfigError.
    """
    return not _analysis_diff(get_preset(src), get_preset(dst))


def _short(p: MelPreset) -> str:
    return f"{p.sample_rate} Hz, {p.n_mels} mels {p.fmin:g}-{p.fmax:g} Hz {p.mel_scale}, {p.log_kind}"


def _affine(p: MelPreset) -> tuple[float, float, float, float]:
    """(a, b, lo, hi): the preset's output is clip(a ln(max(m, floor)) + b, lo, hi)."""
    a = {"ln": 1.0, "log10": 1.0 / _LN10, "db": 20.0 / _LN10}[p.log_kind]
    b = -p.ref_level_db
    lo, hi = -math.inf, math.inf
    if p.post_norm is not None:
        s = 1.0 / (-p.min_level_db)
        if p.post_norm == "unit":
            a, b = a * p.max_norm * s, (b - p.min_level_db) * p.max_norm * s
            if p.clip_norm:
                lo, hi = 0.0, p.max_norm
        else:
            a, b = a * 2.0 * p.max_norm * s, (b - p.min_level_db) * 2.0 * p.max_norm * s - p.max_norm
            if p.clip_norm:
                lo, hi = -p.max_norm, p.max_norm
    return a, b, lo, hi


def convert(mel: Union[Tensor, np.ndarray], src: Union[str, MelPreset], dst: Union[str, MelPreset]):
    """Map a log-mel in src's convention to dst's, pointwise and exactly where that is possible.

    Args:
        mel: a float np.ndarray or torch.Tensor of any layout ((n_mels, T), (T, n_mels), batched);
            one axis must have src's n_mels.
        src, dst: preset names or MelPresets with equal analysis (`can_convert`).

    Returns the same type, shape and dtype (computed in float64 for numpy, >= float32 for tensors).
    The value is ln m = (y - b_src) / a_src, then dst's clip(a_dst ln(max(m, floor_dst)) + b_dst).
    Exact where src's floor/clip did not act; src values on a floor or clip bound (e.g. coqui's
    -4 or 4, diffwave's 0 or 1) map to the bound's image and are only as exact as the bound.

    Raises DataError (naming both conventions) when the analyses differ: no pointwise map can then
    reproduce dst; re-extract the mel from audio. Unknown preset names raise ConfigError.
    """
    ps, pd = get_preset(src), get_preset(dst)
    diff = _analysis_diff(ps, pd)
    if diff:
        raise DataError(
            f"cannot convert a {ps.name!r} mel ({_short(ps)}) to {pd.name!r} ({_short(pd)}): different "
            f"STFT/filterbank ({'; '.join(diff)}); re-extract the mel from audio with MelSpectrogram({pd.name!r})"
        )
    if isinstance(mel, Tensor):
        if not mel.is_floating_point():
            raise DataError(f"convert needs a float mel, got a tensor of dtype {mel.dtype}")
        shape, dtype = tuple(mel.shape), mel.dtype
    elif isinstance(mel, np.ndarray):
        if mel.dtype.kind != "f":
            raise DataError(
                f"convert needs a float mel array, got dtype {mel.dtype}"
                + (" (an object array; save mels as plain float .npy)" if mel.dtype == object else "")
            )
        shape, dtype = mel.shape, mel.dtype
    else:
        raise DataError(f"convert takes a numpy array or torch tensor, got {type(mel).__name__}")
    if not shape or 0 in shape:
        raise DataError(f"convert got an empty mel of shape {shape}")
    if ps.n_mels not in shape:
        raise DataError(f"a {ps.name!r} mel has {ps.n_mels} mel bins but no axis of the array {shape} has that size")
    if ps == pd:
        return mel.clone() if isinstance(mel, Tensor) else mel.copy()

    a1, b1, _, _ = _affine(ps)
    a2, b2, lo2, hi2 = _affine(pd)
    ln_floor = math.log(pd.log_floor)
    if isinstance(mel, Tensor):
        work = mel.to(torch.promote_types(dtype, torch.float32))
        ln_m = torch.clamp((work - b1) / a1, min=ln_floor)
        y = a2 * ln_m + b2
        if math.isfinite(lo2):
            y = torch.clamp(y, lo2, hi2)
        return y.to(dtype)
    work = mel.astype(np.float64)
    ln_m = np.maximum((work - b1) / a1, ln_floor)
    y = a2 * ln_m + b2
    if math.isfinite(lo2):
        y = np.clip(y, lo2, hi2)
    return y.astype(dtype, copy=False)
