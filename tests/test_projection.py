"""The mel projection (cmaudio.projection) and the preset framing it shares with Griffin-Lim.

Analytic properties: a waveform whose mel is already the target is a fixed point; a uniform gain
error is undone exactly, at most MAX_GAIN per iteration (so a 10x error needs two); the phase is
never touched; every preset family (pre-padded and centred framing, ln / log10 / dB / normalised
logs, filterbanks that leave bins uncovered) behaves the same. Then the Vocoder plumbing: the
default comes from the model directory, 0 is the old output bit for bit, bad counts are refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cmaudio.build import build_model
from cmaudio.config import MAX_PROJECTION_ITERS, Config, replace
from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelSpectrogram, PresetFraming
from cmaudio.projection import MAX_GAIN, band_weights, mel_projection
from cmaudio.sampling import consistency_sample, draw_seed, indexed_noise
from cmaudio.vocoder import Vocoder
from helpers import randomize

from test_vocoder import LJ, SD, gen, rand_mel

FAMILIES = ["hifigan", "hifigan_db", "vocos", "espnet", "diffwave"]  # pre-pad/ln, dB, centred, log10 + fmin, clipped


def speech_clip(preset: str, frames: int = 60) -> torch.Tensor:
    """(1, frames * hop) of recorded speech at the preset's rate (a real spectrum, pauses included)."""
    from cmaudio.data import load_audio

    f = MelSpectrogram(preset)
    a = load_audio(LJ / "LJ001-0012.wav", f.sample_rate)[4000 : 4000 + frames * f.hop_length]
    return torch.from_numpy(a.copy())[None].float()


@pytest.mark.parametrize("preset", FAMILIES)
def test_framing_round_trip_is_exact(preset):
    f = MelSpectrogram(preset)
    y = speech_clip(preset).double()
    frames = y.shape[-1] // f.hop_length
    framing = PresetFraming(preset, frames, torch.float64)
    spec = framing.analysis(y)
    assert spec.shape == (1, f.n_fft // 2 + 1, frames)
    back = framing.synthesis(spec, y.shape[-1])
    # exact wherever the frames cover the signal (all of it but the last hop's tail for centred presets)
    n = y.shape[-1] - (f.hop_length if f.preset.center else 0)
    torch.testing.assert_close(back[..., :n], y[..., :n], atol=1e-10, rtol=0)


def test_framing_magnitudes_are_the_mels():
    """analysis() is the STFT MelSpectrogram takes: its filterbanked magnitude gives the same log-mel."""
    f = MelSpectrogram("hifigan")
    y = speech_clip("hifigan").double()
    frames = y.shape[-1] // f.hop_length
    spec = PresetFraming("hifigan", frames, torch.float64).analysis(y)
    mel = torch.log(torch.clamp(f.mel_basis.double() @ torch.sqrt(spec.abs() ** 2 + 1e-9), min=1e-5))
    torch.testing.assert_close(mel, f(y)[..., :frames], atol=1e-9, rtol=0)


@pytest.mark.parametrize("preset", ["hifigan", "espnet"])
def test_band_weights_average_and_cover_every_bin(preset):
    f = MelSpectrogram(preset)
    w = band_weights(f)
    assert w.shape == (f.n_mels, f.n_fft // 2 + 1)
    torch.testing.assert_close(w.sum(0), torch.ones(w.shape[1]), atol=1e-6, rtol=0)
    assert (w >= 0).all()


@pytest.mark.parametrize("preset", FAMILIES)
def test_a_waveform_with_the_target_mel_is_a_fixed_point(preset):
    f = MelSpectrogram(preset)
    y = speech_clip(preset)
    frames = y.shape[-1] // f.hop_length
    out = mel_projection(y, f(y)[..., :frames], f, 4)
    assert out.shape == y.shape
    assert (out - y).abs().max() < 1e-4 * y.abs().max()


@pytest.mark.parametrize("preset", ["hifigan", "vocos", "espnet", "hifigan_db"])
def test_a_uniform_gain_error_is_undone_exactly(preset):
    """y / 2: every band's ratio is 2, every bin (covered or not) gets 2, one iteration restores y."""
    f = MelSpectrogram(preset)
    y = speech_clip(preset)
    frames = y.shape[-1] // f.hop_length
    target = f(y)[..., :frames]
    out = mel_projection(y / 2, target, f, 1)
    assert (out - y).abs().max() < 1e-3 * y.abs().max()


def test_one_iteration_changes_a_band_by_at_most_max_gain():
    f = MelSpectrogram("hifigan")
    y = speech_clip("hifigan")
    frames = y.shape[-1] // f.hop_length
    target = f(y)[..., :frames]
    quiet = y / 10
    one = mel_projection(quiet, target, f, 1)
    torch.testing.assert_close(one, quiet * MAX_GAIN, atol=1e-3 * float(y.abs().max()), rtol=0)  # clamped at 4x
    two = mel_projection(quiet, target, f, 2)
    assert (two - y).abs().max() < 1e-3 * y.abs().max()  # 4 x 2.5 = 10


def test_phase_is_kept_and_a_dull_output_gets_its_envelope_back():
    """A low-passed copy (what a smoothing generator makes) gets its high bands back towards the target,
    frame by frame, and the projection never moves a bin's phase (it only scales magnitudes)."""
    f = MelSpectrogram("hifigan")
    y = speech_clip("hifigan").double()
    frames = y.shape[-1] // f.hop_length
    framing = PresetFraming("hifigan", frames, torch.float64)
    spec = framing.analysis(y)
    tilt = torch.linspace(1.0, 0.3, spec.shape[1], dtype=torch.float64)[None, :, None]  # -10 dB at Nyquist
    dull = framing.synthesis(spec * tilt, y.shape[-1]).float()
    target = f(y.float())[..., :frames]
    before = (f(dull)[..., :frames] - target).abs().mean()
    out = mel_projection(dull, target, f, 1)
    after = (f(out)[..., :frames] - target).abs().mean()
    assert after < 0.25 * before, (float(before), float(after))
    s_in, s_out = framing.analysis(dull.double()), framing.analysis(out.double())
    loud = s_in.abs() > 1e-3 * s_in.abs().max()
    dphi = torch.angle(s_out[loud] * s_in[loud].conj()).abs()
    assert float(dphi.quantile(0.99)) < 0.2  # the inverse STFT's overlap mixes neighbours a little


def test_zero_iterations_and_bad_arguments():
    f = MelSpectrogram("hifigan")
    y = torch.randn(2, 10 * 256)
    mel = f(y)[..., :10]
    assert mel_projection(y, mel, f, 0) is y
    for bad in (-1, MAX_PROJECTION_ITERS + 1, True, 1.5):
        with pytest.raises(ConfigError, match="0 = off"):
            mel_projection(y, mel, f, bad)
    with pytest.raises(DataError, match="does not match"):
        mel_projection(y[:, :-1], mel, f, 1)
    with pytest.raises(DataError, match=r"\(B, 80, frames\)"):
        mel_projection(y, mel[:1], f, 1)


# ----------------------------------------------------------------------------------------------
# the Vocoder and the model directory
# ----------------------------------------------------------------------------------------------


def tiny(projection: int = 0) -> Vocoder:
    cfg = replace(Config(), model={"size": "tiny", "sigma_data": SD}, sampling={"projection": projection})
    return Vocoder.from_config(randomize(build_model(cfg, SD, "consistency"), 0), cfg)


def test_decode_projects_by_the_spec_and_zero_is_plain_sampling(tmp_path):
    voc = tiny(3)
    assert voc.projection == 3
    mel = rand_mel(2, 12)
    plain = voc.decode(mel, steps=2, generator=gen(), projection=0)
    shape = (2, 1, 12 * 256)  # decode's noise: one seed drawn from the generator, indexed by sample
    ref = consistency_sample(voc.model, shape, sigmas=voc.sigmas_for(2), cond=mel,
                             generator=indexed_noise(draw_seed(gen()), shape, "cpu"))[:, 0]
    torch.testing.assert_close(plain, ref.clamp(-1, 1), atol=0, rtol=0)
    projected = voc.decode(mel, steps=2, generator=gen())
    torch.testing.assert_close(projected, mel_projection(ref, mel, voc.features, 3).clamp(-1, 1), atol=0, rtol=0)
    assert not torch.equal(projected, plain)
    voc.save_pretrained(tmp_path / "m")
    rec = json.loads((tmp_path / "m" / "config.json").read_text())
    assert rec["config"]["sampling"]["projection"] == 3
    again = Vocoder.from_pretrained(tmp_path / "m")
    assert again.projection == 3
    torch.testing.assert_close(again.decode(mel, steps=2, generator=gen()), projected, atol=0, rtol=0)
    again.projection = 0  # the facade's default can be changed and is what save_pretrained records
    again.save_pretrained(tmp_path / "m0")
    assert Vocoder.from_pretrained(tmp_path / "m0").projection == 0
    with pytest.raises(ConfigError):
        again.projection = -2


def test_config_refuses_bad_projection():
    with pytest.raises(ConfigError, match="sampling.projection"):
        replace(Config(), sampling={"projection": MAX_PROJECTION_ITERS + 1})
    with pytest.raises(ConfigError, match="vocoders"):
        replace(Config(), model={"domain": "mel"}, sampling={"projection": 2})
