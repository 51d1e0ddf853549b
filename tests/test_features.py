"""Tests of cmaudio.features: every preset against an independent implementation of its stack.

The references below are written from each stack's own code (numpy rfft over frames or
librosa.stft, where the stack itself calls librosa.stft; librosa.filters.mel with the options
spelled out here; numpy log formulas). They never call cmaudio.features nor reuse its
filterbank. Audio is real LJSpeech speech from egs/mini (22050 Hz originals and the 24000 Hz
LJ016-0027), with a stretch of digital silence appended so floors and clips are exercised.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio.errors import ConfigError, DataError
from cmaudio.features import (
    PRESETS,
    MelPreset,
    MelSpectrogram,
    can_convert,
    coqui_denormalize,
    coqui_normalize,
    convert,
    db_to_ln,
    db_to_log10,
    diffwave_denormalize,
    diffwave_normalize,
    get_preset,
    ln_to_db,
    ln_to_log10,
    log10_to_db,
    log10_to_ln,
)

WAVS = Path(__file__).resolve().parents[1] / "egs" / "mini" / "data" / "ljspeech_mini" / "wavs"
NATIVE = {22050: "LJ001-0011.wav", 24000: "LJ016-0027.wav"}

ALL = sorted(PRESETS)
HIFIGAN_FAMILY = {"hifigan", "hifigan_log10", "hifigan_db"}
COQUI_FAMILY = {"coqui", "coqui_db"}


# ----------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def speech(sr: int, resampled: bool = False) -> np.ndarray:
    """About 1.2 s of float64 speech at `sr` followed by 0.25 s of digital silence.

    The length (not a multiple of 256) exercises partial last frames. With `resampled`, the
    22050 Hz original is resampled with librosa even when a native file exists.
    """
    if sr in NATIVE and not resampled:
        y, file_sr = sf.read(WAVS / NATIVE[sr], dtype="float64")
        assert file_sr == sr
    else:
        y, file_sr = sf.read(WAVS / NATIVE[22050], dtype="float64")
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr)
    start = int(0.3 * sr)
    y = y[start : start + int(1.2 * sr) + 37]
    assert np.abs(y).max() > 0.1  # real speech, not silence
    return np.concatenate([y, np.zeros(int(0.25 * sr))])


# ----------------------------------------------------------------------------------------------
# Independent references, one per stack
# ----------------------------------------------------------------------------------------------


def hann_periodic(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def np_stft(y: np.ndarray, n_fft: int, hop: int, win: int, center: bool, pad_mode: str = "reflect"):
    """(freq, frames) complex STFT by numpy rfft over explicit frames; also returns the window."""
    if center:
        y = np.pad(y, n_fft // 2, mode=pad_mode)
    n = 1 + (len(y) - n_fft) // hop
    w = hann_periodic(win)
    left = (n_fft - win) // 2
    w = np.pad(w, (left, n_fft - win - left))
    frames = np.stack([y[i * hop : i * hop + n_fft] for i in range(n)])
    return np.fft.rfft(frames * w, axis=1).T, w


def hifigan_mel_amp(y: np.ndarray) -> np.ndarray:
    """jik876/hifi-gan meldataset.mel_spectrogram before the log (config_v1)."""
    n_fft, hop, win = 1024, 256, 1024
    y = np.pad(y, (int((n_fft - hop) / 2), int((n_fft - hop) / 2)), mode="reflect")
    X, _ = np_stft(y, n_fft, hop, win, center=False)
    mag = np.sqrt(X.real**2 + X.imag**2 + 1e-9)
    fb = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0, fmax=8000)  # librosa defaults: slaney
    return fb.astype(np.float64) @ mag


def ref_hifigan(y):
    return np.log(np.maximum(hifigan_mel_amp(y), 1e-5))


def ref_hifigan_log10(y):
    return np.log10(np.maximum(hifigan_mel_amp(y), 1e-5))


def ref_hifigan_db(y):
    return 20.0 * np.log10(np.maximum(hifigan_mel_amp(y), 1e-5))


def ref_diffwave(y):
    """lmnt-com/diffwave preprocess.transform: torchaudio MelSpectrogram(normalized=True) math."""
    X, w = np_stft(y, 1024, 256, 1024, center=True, pad_mode="reflect")
    X = X / np.sqrt(np.sum(w**2))  # torchaudio normalized=True: divide by the window's L2 norm
    fb = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=20.0, fmax=22050 / 2.0, htk=True, norm=None)
    spec = fb @ np.abs(X)
    spec = 20 * np.log10(np.maximum(spec, 1e-5)) - 20
    return np.clip((spec + 100) / 100, 0.0, 1.0)


def ref_vocos(y):
    """gemelo-ai/vocos MelSpectrogramFeatures(padding='center'): torchaudio MelSpectrogram power 1, safe_log."""
    X, _ = np_stft(y, 1024, 256, 1024, center=True, pad_mode="reflect")
    fb = librosa.filters.mel(sr=24000, n_fft=1024, n_mels=100, fmin=0.0, fmax=12000.0, htk=True, norm=None)
    return np.log(np.maximum(fb @ np.abs(X), 1e-7))


def ref_espnet(y):
    """espnet2 LogMelFbank: Stft(center, reflect), sqrt(clamp(power, 1e-10)), LogMel(log_base=10)."""
    X, _ = np_stft(y, 1024, 256, 1024, center=True, pad_mode="reflect")
    amp = np.sqrt(np.maximum(X.real**2 + X.imag**2, 1e-10))
    fb = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=80, fmax=7600, htk=False)
    return np.log10(np.maximum(fb @ amp, 1e-10))


def coqui_mel_amp(y):
    """coqui-ai/TTS AudioProcessor (BaseAudioConfig defaults): librosa.stft, |D|, mel basis."""
    D = librosa.stft(y=y, n_fft=1024, hop_length=256, win_length=1024, pad_mode="reflect", window="hann", center=True)
    fb = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)
    return fb.astype(np.float64) @ np.abs(D)


def ref_coqui_db(y):
    return 20 * np.log10(np.maximum(1e-8, coqui_mel_amp(y)))  # amp_to_db(gain 20, base 10)


def ref_coqui(y):
    S = ref_coqui_db(y)
    S = S - 20  # ref_level_db
    S = (S - (-100)) / 100  # min_level_db -100
    S = (2 * 4.0) * S - 4.0  # symmetric_norm, max_norm 4
    return np.clip(S, -4.0, 4.0)  # clip_norm


def ref_natspeech(y):
    """NATSpeech librosa_wav2spec: librosa.stft(pad_mode='constant'), |X|, fmin 80, fmax 7600, eps 1e-6."""
    D = librosa.stft(y, n_fft=1024, hop_length=256, win_length=1024, window="hann", pad_mode="constant")
    fb = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=80, fmax=7600)
    return np.log10(np.maximum(1e-6, fb.astype(np.float64) @ np.abs(D)))


REFERENCES = {
    "hifigan": (22050, ref_hifigan),
    "hifigan_log10": (22050, ref_hifigan_log10),
    "hifigan_db": (22050, ref_hifigan_db),
    "diffwave": (22050, ref_diffwave),
    "vocos": (24000, ref_vocos),
    "espnet": (22050, ref_espnet),
    "coqui": (22050, ref_coqui),
    "coqui_db": (22050, ref_coqui_db),
    "natspeech": (22050, ref_natspeech),
}

# Back to the mel amplitude, from each convention's formula (for the float32 check).
TO_AMPLITUDE = {
    "hifigan": np.exp,
    "hifigan_log10": lambda v: 10.0**v,
    "hifigan_db": lambda v: 10.0 ** (v / 20),
    "diffwave": lambda v: 10.0 ** ((100 * v - 100 + 20) / 20),
    "vocos": np.exp,
    "espnet": lambda v: 10.0**v,
    "coqui": lambda v: 10.0 ** (((v + 4) / 8 * 100 - 100 + 20) / 20),
    "coqui_db": lambda v: 10.0 ** (v / 20),
    "natspeech": lambda v: 10.0**v,
}


def module_out(name: str, y: np.ndarray, dtype=torch.float64) -> np.ndarray:
    with torch.no_grad():
        out = MelSpectrogram(name)(torch.from_numpy(y).to(dtype))
    assert out.shape[0] == 1
    return out[0].double().numpy()


def test_every_preset_has_a_reference():
    assert set(REFERENCES) == set(PRESETS) == set(TO_AMPLITUDE)
    assert {"hifigan", "diffwave", "vocos", "espnet", "coqui"} <= set(PRESETS)


# ----------------------------------------------------------------------------------------------
# Exactness against the references
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_matches_independent_reference_float64(name):
    sr, ref_fn = REFERENCES[name]
    mel = MelSpectrogram(name)
    assert mel.sample_rate == sr == PRESETS[name].sample_rate
    y = speech(sr)
    ref = ref_fn(y)
    out = module_out(name, y)
    assert out.shape == ref.shape == (mel.n_mels, mel.num_frames(len(y)))
    assert np.abs(out - ref).max() <= 1e-4
    assert ref.std() > 0.05  # a real spectrogram, not a constant


@pytest.mark.parametrize("name", ALL)
def test_float32_matches_reference_in_amplitude(name):
    """float32 STFT round-off is ~1e-7 of a frame's energy: compare in the amplitude domain.

    (In log units the error of a bin 100 dB below the frame's peak is then ~1e-3; the
    float64 test above carries the 1e-4 log-domain tolerance.)
    """
    sr, ref_fn = REFERENCES[name]
    y = speech(sr)
    ref_amp = TO_AMPLITUDE[name](ref_fn(y))
    out_amp = TO_AMPLITUDE[name](module_out(name, y, torch.float32))
    assert np.abs(out_amp - ref_amp).max() <= 1e-5 * ref_amp.max()


def test_vocos_on_resampled_speech():
    """22050 Hz speech resampled to 24 kHz with librosa: the empty top band exercises the 1e-7 floor."""
    y = speech(24000, resampled=True)
    ref = ref_vocos(y)
    assert (ref <= math.log(1e-7) + 1e-9).any()
    assert np.abs(module_out("vocos", y) - ref).max() <= 1e-4


def test_diffwave_matches_torchaudio_transform():
    """The exact transform of lmnt-com/diffwave preprocess.py (mel_args copied from it)."""
    import torchaudio.transforms as TT

    sr, hop = 22050, 256
    mel_args = {
        "sample_rate": sr,
        "win_length": hop * 4,
        "hop_length": hop,
        "n_fft": 1024,
        "f_min": 20.0,
        "f_max": sr / 2.0,
        "n_mels": 80,
        "power": 1.0,
        "normalized": True,
    }
    mel_args["window_fn"] = lambda n: torch.hann_window(n, dtype=torch.float64)  # float64 run (see vocos test)
    y = torch.from_numpy(speech(sr))
    with torch.no_grad():
        spectrogram = TT.MelSpectrogram(**mel_args).double()(y)
        spectrogram = 20 * torch.log10(torch.clamp(spectrogram, min=1e-5)) - 20
        spectrogram = torch.clamp((spectrogram + 100) / 100, 0.0, 1.0)
    assert np.abs(module_out("diffwave", y.numpy()) - spectrogram.numpy()).max() <= 1e-4


def test_vocos_matches_vocos_feature_extractor():
    fe_mod = pytest.importorskip("vocos.feature_extractors")
    fe = fe_mod.MelSpectrogramFeatures(sample_rate=24000, n_fft=1024, hop_length=256, n_mels=100, padding="center")
    fe = fe.double()
    # .double() rounds the float32 Hann window; a float32 window leaks ~-140 dB into quiet bins.
    fe.mel_spec.spectrogram.window = torch.hann_window(1024, dtype=torch.float64)
    y = torch.from_numpy(speech(24000))
    with torch.no_grad():
        ref = fe(y[None])[0].numpy()
    assert np.abs(module_out("vocos", y.numpy()) - ref).max() <= 1e-4


# ----------------------------------------------------------------------------------------------
# Frames, shapes, dtypes
# ----------------------------------------------------------------------------------------------


def expected_frames(name: str, t: int) -> int:
    if name in HIFIGAN_FAMILY:  # reflect pre-pad 384 each side, center=False, n_fft 1024, hop 256
        return (t + 2 * 384 - 1024) // 256 + 1
    return 1 + t // 256  # center=True


@pytest.mark.parametrize("name", ALL)
def test_frame_count_rule(name):
    mel = MelSpectrogram(name)
    g = torch.Generator().manual_seed(0)
    lengths = sorted({mel.min_samples, mel.min_samples + 1, 1000, 4096, 4097, 5000 + 13, 256 * 20 - 1})
    for t in lengths:
        out = mel(0.1 * torch.randn(t, generator=g))
        assert out.shape == (1, mel.n_mels, expected_frames(name, t)) == (1, mel.n_mels, mel.num_frames(t)), t
    if name in HIFIGAN_FAMILY:
        for k in (2, 16, 33):
            assert mel.num_frames(256 * k) == k
    else:
        assert mel.num_frames(256 * 16) == 17


@pytest.mark.parametrize("name", ALL)
def test_too_short_audio_is_a_clear_error(name):
    mel = MelSpectrogram(name)
    if mel.min_samples > 1:
        with pytest.raises(DataError, match="too short"):
            mel(torch.zeros(mel.min_samples - 1))


def test_batched_equals_per_item_and_layouts():
    mel = MelSpectrogram("hifigan")
    y = speech(22050)
    batch = torch.stack([torch.from_numpy(y[i * 3000 : i * 3000 + 9000]).float() for i in range(3)])
    with torch.no_grad():
        out = mel(batch)
        items = torch.cat([mel(row) for row in batch])
        out3 = mel(batch[:, None, :])
    assert out.shape == (3, 80, mel.num_frames(9000))
    assert torch.allclose(out, items, atol=1e-5, rtol=0)
    assert torch.equal(out, out3)
    assert not torch.allclose(out[0], out[1])  # the rows really differ


def test_dtype_and_device_follow_input():
    mel = MelSpectrogram("diffwave")
    y32 = torch.from_numpy(speech(22050)[:8000]).float()
    with torch.no_grad():
        o32 = mel(y32)
        o64 = mel(y32.double())
        obf = mel(y32.bfloat16())
        ohalf = mel(y32.half())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            oauto = mel(y32)
    assert o32.dtype == torch.float32 and o64.dtype == torch.float64
    assert obf.dtype == torch.float32 and ohalf.dtype == torch.float32  # upcast, never bf16 logs
    assert oauto.dtype == torch.float32 and torch.equal(oauto, o32)
    assert o32.device == y32.device and o64.device == y32.device
    assert torch.allclose(o32.double(), o64, atol=1e-4)
    assert torch.equal(obf, mel(y32.bfloat16().float()))


def test_bad_inputs_raise_data_error():
    mel = MelSpectrogram()
    with pytest.raises(DataError, match="float"):
        mel(torch.zeros(4096, dtype=torch.int16))
    with pytest.raises(DataError, match="mono"):
        mel(torch.zeros(2, 2, 4096))
    with pytest.raises(DataError):
        mel(torch.zeros(1, 1, 1, 4096))
    with pytest.raises(DataError):
        mel(np.zeros(4096, dtype=np.float32))


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_finite(name):
    mel = MelSpectrogram(name)
    y = torch.from_numpy(speech(mel.sample_rate)[:6000]).float()
    y = torch.cat([torch.zeros(2048), y, torch.zeros(2048)]).requires_grad_(True)  # exact zeros too
    mel(y).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_module_attributes_buffers_and_custom_preset():
    mel = MelSpectrogram()
    assert isinstance(mel.preset, MelPreset) and mel.preset is PRESETS["hifigan"]
    assert (mel.sample_rate, mel.hop_length, mel.n_mels) == (22050, 256, 80)
    assert mel.mel_basis.shape == (80, 513) and mel.window.shape == (1024,)
    assert len(mel.state_dict()) == 0  # features ship by preset name, not as weights
    custom = dataclasses.replace(PRESETS["hifigan"], name="custom", n_mels=64, fmax=11025.0)
    out = MelSpectrogram(custom)(torch.zeros(4096))
    assert out.shape == (1, 64, 16)
    assert torch.allclose(out, torch.full_like(out, math.log(1e-5)), atol=1e-6)  # silence sits on the floor


def test_preset_validation_and_describe():
    with pytest.raises(ConfigError, match="win_length"):
        dataclasses.replace(PRESETS["hifigan"], win_length=2048)
    with pytest.raises(ConfigError, match="fmax"):
        dataclasses.replace(PRESETS["vocos"], fmax=13000.0)
    with pytest.raises(ConfigError, match="log_kind"):
        dataclasses.replace(PRESETS["vocos"], log_kind="log2")
    for name, p in PRESETS.items():
        text = p.describe()
        assert "\n" not in text and text.startswith(name + ":") and str(p.sample_rate) in text
    with pytest.raises(TypeError):
        PRESETS["mine"] = PRESETS["hifigan"]  # read-only registry


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        get_preset("hifigna")
    message = str(info.value)
    assert "'hifigan'" in message and all(name in message for name in PRESETS)
    assert get_preset("HIFIGAN-LOG10") is PRESETS["hifigan_log10"]
    assert get_preset("HIFIGAN") is PRESETS["hifigan"]
    with pytest.raises(ConfigError):
        MelSpectrogram("melgan")
    with pytest.raises(ConfigError):
        can_convert("hifigan", "nope")
    with pytest.raises(ConfigError):
        convert(np.zeros((80, 3)), "nope", "hifigan")
    with pytest.raises(ConfigError):
        get_preset(3)


# ----------------------------------------------------------------------------------------------
# Conversions
# ----------------------------------------------------------------------------------------------


def test_elementary_maps_known_values_and_round_trips():
    assert ln_to_db(math.log(10.0)) == pytest.approx(20.0, abs=1e-12)
    assert ln_to_log10(math.log(100.0)) == pytest.approx(2.0, abs=1e-12)
    assert log10_to_ln(1.0) == pytest.approx(math.log(10.0), abs=1e-12)
    assert db_to_ln(-20.0) == pytest.approx(math.log(0.1), abs=1e-12)
    assert log10_to_db(-3.0) == pytest.approx(-60.0) and db_to_log10(-60.0) == pytest.approx(-3.0)
    x = np.random.default_rng(0).uniform(-23.0, 5.0, size=(80, 50))  # ln units
    for fwd, inv in ((ln_to_log10, log10_to_ln), (ln_to_db, db_to_ln), (log10_to_db, db_to_log10)):
        assert np.abs(inv(fwd(x)) - x).max() <= 1e-5
        t = torch.from_numpy(x).float()
        back = inv(fwd(t))
        assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
        assert (back - t).abs().max() <= 1e-5


def test_coqui_and_diffwave_normalisation_round_trips():
    assert coqui_normalize(np.array([20.0, -80.0, -30.0, 60.0, -200.0])).tolist() == [4.0, -4.0, 0.0, 4.0, -4.0]
    assert diffwave_normalize(np.array([20.0, -80.0, -30.0])).tolist() == pytest.approx([1.0, 0.0, 0.5])
    db = np.linspace(-79.9, 19.9, 997)  # strictly inside the unclipped range
    assert np.abs(coqui_denormalize(coqui_normalize(db)) - db).max() <= 1e-5
    assert np.abs(diffwave_denormalize(diffwave_normalize(db)) - db).max() <= 1e-5
    u = torch.linspace(-3.99, 3.99, 101, dtype=torch.float64)
    assert (coqui_normalize(coqui_denormalize(u)) - u).abs().max() <= 1e-5
    assert coqui_normalize(torch.tensor([100.0])).item() == 4.0  # clipped, like Coqui
    # the non-symmetric / unclipped forms
    assert coqui_normalize(-30.0, symmetric=False, max_norm=1.0) == pytest.approx(0.5)
    assert coqui_normalize(60.0, clip=False) == pytest.approx(7.2)


def test_convertible_pairs_are_exactly_the_shared_analysis_families():
    families = [HIFIGAN_FAMILY, COQUI_FAMILY]
    for a, b in itertools.product(ALL, ALL):
        same_family = a == b or any(a in f and b in f for f in families)
        assert can_convert(a, b) == same_family, (a, b)


CONVERTIBLE = [
    (a, b) for fam in (HIFIGAN_FAMILY, COQUI_FAMILY) for a, b in itertools.permutations(sorted(fam), 2)
]


@pytest.mark.parametrize("src,dst", CONVERTIBLE)
def test_convert_equals_the_other_presets_output(src, dst):
    """convert(mel_src) == MelSpectrogram(dst)(audio), away from src's clip: the map is exact."""
    y = speech(22050)
    m_src = module_out(src, y)
    m_dst = module_out(dst, y)
    conv = convert(m_src, src, dst)
    assert isinstance(conv, np.ndarray) and conv.dtype == np.float64 and conv.shape == m_src.shape
    if src == "coqui":
        ok = np.abs(m_src) < 4.0  # clipped values only bound the amplitude
        assert 0.5 < ok.mean() < 1.0
    else:
        ok = np.ones(m_src.shape, dtype=bool)
    if src in HIFIGAN_FAMILY:
        assert (m_src == m_src.min()).sum() > 10  # the floor is hit (the silence), and converts exactly
    assert np.abs(conv - m_dst)[ok].max() <= 1e-4
    # the same through torch, in float32 (transposed layout (T, n_mels) works too)
    t_src = torch.from_numpy(module_out(src, y, torch.float32)).float()
    t_dst = torch.from_numpy(module_out(dst, y, torch.float32)).float()
    t_conv = convert(t_src.T, src, dst).T
    assert isinstance(t_conv, torch.Tensor) and t_conv.dtype == torch.float32
    assert (t_conv - t_dst)[torch.from_numpy(ok)].abs().max() <= 1e-4


def test_convert_round_trip_and_clip_bound_semantics():
    y = speech(22050)
    m = module_out("hifigan", y)
    assert np.abs(convert(convert(m, "hifigan", "hifigan_db"), "hifigan_db", "hifigan") - m).max() <= 1e-5
    assert np.abs(convert(convert(m, "hifigan", "hifigan_log10"), "hifigan_log10", "hifigan") - m).max() <= 1e-5
    c = module_out("coqui", y)
    back = convert(convert(c, "coqui", "coqui_db"), "coqui_db", "coqui")
    assert np.abs(back - c).max() <= 1e-5  # clipped values come back to the same bound
    # a value on coqui's lower clip is "at most -80 dB": it maps to the bound's image
    assert np.allclose(convert(np.full((80, 3), -4.0), "coqui", "coqui_db"), -80.0)
    assert np.allclose(convert(np.full((80, 3), 4.0), "coqui", "coqui_db"), 20.0)
    same = convert(m, "hifigan", "hifigan")
    assert np.array_equal(same, m) and same is not m


def test_convert_to_a_higher_floor_is_exact_everywhere():
    """dst floor >= src floor: even floored source values convert exactly (custom presets)."""
    high = dataclasses.replace(PRESETS["hifigan_db"], name="hifigan_db_floor1e-3", log_floor=1e-3)
    y = speech(22050)
    src = module_out("hifigan", y)
    dst = module_out(high, y)
    assert (dst == dst.min()).mean() > 0.1 and (src < math.log(1e-3)).any()  # the higher floor acts
    assert can_convert("hifigan", high)
    assert np.abs(convert(src, "hifigan", high) - dst).max() <= 1e-4
    t = convert(torch.from_numpy(src), "hifigan", high)
    assert (t - torch.from_numpy(dst)).abs().max() <= 1e-4
    # the other way round only above the higher floor
    back = convert(dst, high, "hifigan")
    above = dst > 20 * math.log10(1e-3) + 1e-9
    assert np.abs(back - src)[above].max() <= 1e-4
    assert np.allclose(back[~above], math.log(1e-3))


@pytest.mark.parametrize(
    "src,dst",
    [("vocos", "hifigan"), ("hifigan", "diffwave"), ("espnet", "natspeech"), ("hifigan", "coqui"), ("coqui", "espnet")],
)
def test_non_convertible_pairs_raise_naming_both(src, dst):
    assert not can_convert(src, dst)
    mel = np.zeros((PRESETS[src].n_mels, 5))
    with pytest.raises(DataError) as info:
        convert(mel, src, dst)
    message = str(info.value)
    assert f"'{src}'" in message and f"'{dst}'" in message and "re-extract" in message and "\n" not in message


def test_convert_rejects_bad_arrays():
    with pytest.raises(DataError, match="float"):
        convert(np.zeros((80, 4), dtype=np.int64), "hifigan", "hifigan_db")
    with pytest.raises(DataError, match="object"):
        convert(np.empty((80, 4), dtype=object), "hifigan", "hifigan_db")
    with pytest.raises(DataError, match="empty"):
        convert(np.zeros((80, 0)), "hifigan", "hifigan_db")
    with pytest.raises(DataError, match="80"):
        convert(np.zeros((100, 4)), "hifigan", "hifigan_db")
    with pytest.raises(DataError):
        convert([[0.0] * 80], "hifigan", "hifigan_db")
