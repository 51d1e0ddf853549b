"""Griffin-Lim and PGHI baselines (cmaudio.baselines) and `cmaudio evaluate --baseline griffinlim|pghi` (issues 13, 30)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio import metrics as M
from test_cli_inference import assert_one_line_error
from cmaudio.baselines import (GRIFFINLIM_ITERS, PGHI_GL_ITERS, _fast_griffinlim, _pghi_waveform, griffinlim, mel_to_magnitude,
                               pghi, pghi_phase)
from cmaudio.build import build_model
from cmaudio.cli import main
from cmaudio.config import Config, replace
from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelSpectrogram, PresetFraming, get_preset
from cmaudio.vocoder import Vocoder
from helpers import randomize

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "egs" / "mini" / "data" / "ljspeech_mini"
CLIP = MINI / "wavs" / "LJ001-0011.wav"  # held out by the mini recipes' split


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """The first 2 s of LJ001-0011 at 22050 Hz, cropped to whole 256-sample hops."""
    y, sr = sf.read(str(CLIP), dtype="float32")
    assert sr == 22050
    y = y[: 2 * sr]
    return y[: (len(y) // 256) * 256]


@pytest.fixture(scope="module")
def gl64(clip) -> np.ndarray:
    mel = MelSpectrogram("hifigan")(torch.from_numpy(clip))
    return griffinlim(mel, "hifigan", n_iter=64, seed=0)[0].numpy()


def test_griffinlim_of_a_real_clip_scores_in_band(clip, gl64):
    """GL-64 of the clip's own hifigan mel: log-mel L1 well below a broken inversion, yet clearly not exact."""
    assert gl64.shape == clip.shape and gl64.dtype == np.float32
    assert np.abs(gl64).max() <= 1.0
    l1 = M.logmel_l1(clip, gl64, 22050)
    assert 0.05 < l1 < 0.4, l1
    # The phase is not the original (waveforms differ) though the magnitude is close: MR-STFT sees it.
    assert np.corrcoef(clip, gl64)[0, 1] < 0.5
    assert M.mrstft(clip, gl64, 22050) > 1.0


def test_more_iterations_fit_the_mel_better(clip, gl64):
    mel = MelSpectrogram("hifigan")(torch.from_numpy(clip))
    one = griffinlim(mel, "hifigan", n_iter=1, momentum=0.0)[0].numpy()
    assert M.logmel_l1(clip, gl64, 22050) < M.logmel_l1(clip, one, 22050) - 0.05


def test_griffinlim_deterministic_and_batched(clip):
    mel = MelSpectrogram("hifigan")(torch.from_numpy(clip[:22016]))  # (1, 80, 86)
    a = griffinlim(mel[0].numpy(), "hifigan", n_iter=4, seed=3)  # (n_mels, frames) numpy in
    b = griffinlim(mel, "hifigan", n_iter=4, seed=3)
    assert a.shape == (1, 86 * 256) and torch.equal(a, b)
    assert not torch.equal(a, griffinlim(mel, "hifigan", n_iter=4, seed=4))
    two = griffinlim(torch.cat([mel, mel]), "hifigan", n_iter=4, generator=torch.Generator().manual_seed(3))
    assert two.shape == (2, 86 * 256)


@pytest.mark.parametrize("preset", ["vocos", "diffwave", "coqui"])
def test_griffinlim_other_presets_use_their_own_convention(clip, preset):
    """Centred STFT, HTK filterbank, normalised STFT, dB and clipped units: each preset inverts its own mel."""
    import librosa

    ms = MelSpectrogram(preset)
    x = librosa.resample(clip, orig_sr=22050, target_sr=ms.sample_rate) if ms.sample_rate != 22050 else clip
    x = x[: (len(x) // 256) * 256]
    mel = ms(torch.from_numpy(x))
    y = griffinlim(mel, preset, n_iter=32)
    assert y.shape == (1, mel.shape[-1] * 256)
    back = ms(y)[..., : mel.shape[-1]]  # centred framing gives one more frame for frames * hop samples
    err = float((back - mel).abs().mean())
    noise = torch.from_numpy(0.1 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32))
    ref_err = float((ms(noise)[..., : mel.shape[-1]] - mel).abs().mean())  # what an unrelated signal scores
    assert err < 0.25 * ref_err, (preset, err, ref_err)


def test_mel_to_magnitude_recovers_the_filterbank_input(clip):
    """The recovered |X| reproduces the mel amplitude through the preset's filterbank (NNLS and pinv, >= 0)."""
    ms = MelSpectrogram("hifigan")
    mel = ms(torch.from_numpy(clip)).double()
    for method in ("nnls", "pinv"):
        mag = mel_to_magnitude(mel, "hifigan", method)
        assert mag.shape == (1, 513, mel.shape[-1]) and bool((mag >= 0).all())
        again = torch.log(torch.clamp(ms.mel_basis.double() @ mag, min=1e-5))
        assert float((again - mel).abs().mean()) < 0.1, method


def test_griffinlim_bad_input(clip):
    mel = MelSpectrogram("hifigan")(torch.from_numpy(clip))
    with pytest.raises(DataError, match="80"):
        griffinlim(mel[:, :40], "hifigan")
    with pytest.raises(DataError, match="NaN"):
        griffinlim(torch.full((80, 10), float("nan")), "hifigan")
    with pytest.raises(DataError, match="float"):
        griffinlim(np.zeros((80, 10), dtype=np.int16), "hifigan")
    with pytest.raises(ConfigError, match="n_iter"):
        griffinlim(mel, "hifigan", n_iter=0)
    with pytest.raises(ConfigError, match="method"):
        griffinlim(mel, "hifigan", method="lsq")
    with pytest.raises(ConfigError, match="unknown mel preset"):
        griffinlim(mel, "hifi")


# --- PGHI (phase-gradient heap integration) ------------------------------------------------------
HIFIGAN = get_preset("hifigan")


def _exact_magnitude(x: np.ndarray):
    """(framing, |X| (1, 513, frames) float64) of x on the hifigan frame grid."""
    x = torch.as_tensor(x, dtype=torch.float64)[None]
    framing = PresetFraming(HIFIGAN, x.shape[-1] // 256)
    return framing, framing.analysis(x).abs()


def _spectral_convergence(y: torch.Tensor, framing: PresetFraming, mag: torch.Tensor) -> float:
    """|| |STFT(y)| - mag ||_F / ||mag||_F: how far y's magnitude is from the one it was built from."""
    return float(torch.linalg.norm(framing.analysis(y.double()).abs() - mag) / torch.linalg.norm(mag))


def _phase_floor(framing, mag, phase) -> float:
    """Spectral convergence of a synthesis with a given (non-PGHI) phase: the bars PGHI must clear."""
    return _spectral_convergence(_fast_griffinlim(mag, phase, framing, mag.shape[-1] * 256, 0, 0.0), framing, mag)


def _pghi_sc(framing, mag, gl_iters: int = 0) -> float:
    y = _pghi_waveform(mag, HIFIGAN, tol=1e-5, gl_iters=gl_iters, momentum=0.99,
                       generator=torch.Generator().manual_seed(0))
    assert y.shape == (1, mag.shape[-1] * 256) and y.dtype == torch.float32
    return _spectral_convergence(y, framing, mag)


def _test_signal(kind: str) -> np.ndarray:
    sr = 22050
    t = np.arange(sr) / sr
    if kind == "sine":  # stationary: phase advances by 2 pi f hop per frame, constant across bins
        return 0.5 * np.sin(2 * np.pi * 440.3 * t + 0.3)
    if kind == "chirp":  # linear chirp 200 Hz -> 2.2 kHz, phase 2 pi (200 t + 1000 t^2)
        return 0.5 * np.sin(2 * np.pi * (200.0 * t + 1000.0 * t ** 2))
    clicks = np.zeros(sr)  # impulses: the phase steps across bins carry their time positions
    clicks[np.arange(3000, sr - 3000, 2205)] = 0.5
    return clicks


@pytest.mark.parametrize("kind", ["sine", "chirp", "clicks"])
def test_pghi_rebuilds_a_known_signal_from_its_magnitude(kind):
    """PGHI from the exact STFT magnitude of a signal with a known phase law gives a waveform whose magnitude
    matches (spectral convergence ~0.05; a flipped time or frequency gradient, a wrong Hann lambda or a missed
    frame-start phase shift all give 0.2-0.9), far below zero or random phase."""
    framing, mag = _exact_magnitude(_test_signal(kind))
    sc = _pghi_sc(framing, mag)
    zero = _phase_floor(framing, mag, torch.zeros_like(mag))
    rand = _phase_floor(framing, mag, torch.rand(mag.shape, generator=torch.Generator().manual_seed(1),
                                                 dtype=torch.float64) * (2 * np.pi))
    assert sc < 0.1, (kind, sc)
    assert sc < 0.25 * min(zero, rand), (kind, sc, zero, rand)


def test_pghi_of_speech_beats_zero_phase_and_few_griffinlim_iterations():
    """The exact magnitude of 2 s of real speech: PGHI (no iteration) fits it better than 8 fast Griffin-Lim
    iterations (measured 0.083 vs 0.15) and far better than zero phase (0.90); 8 more iterations from the
    PGHI phase fit better still."""
    y, sr = sf.read(str(MINI / "wavs" / "LJ001-0013.wav"), dtype="float32")
    framing, mag = _exact_magnitude(y[: 2 * sr][: (2 * sr) // 256 * 256])
    sc = _pghi_sc(framing, mag)
    start = torch.rand(mag.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * (2 * np.pi)
    gl8 = _spectral_convergence(_fast_griffinlim(mag, start, framing, mag.shape[-1] * 256, 8, 0.99), framing, mag)
    zero = _phase_floor(framing, mag, torch.zeros_like(mag))
    assert sc < 0.12 and sc < 0.75 * gl8 and sc < 0.2 * zero, (sc, gl8, zero)
    assert _pghi_sc(framing, mag, gl_iters=8) < 0.6 * sc


def test_pghi_of_a_mel_deterministic_batched_and_scale_relative(clip):
    """pghi inverts a (n_mels, frames) or (B, n_mels, frames) log-mel; each item is integrated on its own, with
    its tolerance relative to its own peak: a quiet copy of a magnitude gets the loud copy's phase."""
    ms = MelSpectrogram("hifigan")
    mel, other = ms(torch.from_numpy(clip[:22016])), ms(torch.from_numpy(clip[-22016:]))
    a = pghi(mel[0].numpy(), "hifigan")
    assert a.shape == (1, 86 * 256) and a.dtype == torch.float32 and bool((a.abs() <= 1).all())
    assert torch.equal(a, pghi(mel, "hifigan"))
    both = pghi(torch.cat([mel, other]), "hifigan")
    assert both.shape == (2, 86 * 256) and torch.equal(both[0], a[0])
    # only the random phase of the coefficients below tol (1e-5 of the peak) differs from a call of its own
    assert torch.allclose(both[1], pghi(other, "hifigan")[0], atol=1e-4)
    assert M.logmel_l1(clip[:22016], a[0].numpy(), 22050) < 0.5  # the clip's mel, roughly
    mag = mel_to_magnitude(mel, "hifigan", "pinv")
    phase = pghi_phase(torch.cat([mag, 0.01 * mag]))
    assert phase.shape == (2, 513, 86) and phase.dtype == torch.float64
    kept = mag[0] >= 1e-5 * mag.max()
    assert float(kept.double().mean()) > 0.5
    assert torch.allclose(phase[1][kept], phase[0][kept], atol=1e-6)


def test_pghi_bad_input_one_line(clip):
    mel = MelSpectrogram("hifigan")(torch.from_numpy(clip))
    cases = [
        (lambda: pghi(torch.full((80, 10), float("nan")), "hifigan"), DataError, "NaN"),
        (lambda: pghi(mel[..., :1], "hifigan"), DataError, "too few"),
        (lambda: pghi(mel[:, :40], "hifigan"), DataError, "80"),
        (lambda: pghi(np.zeros((80, 10), dtype=np.int16), "hifigan"), DataError, "float"),
        (lambda: pghi_phase(-torch.ones(513, 4)), DataError, "negative"),
        (lambda: pghi_phase(torch.ones(512, 4)), DataError, "513"),
        (lambda: pghi(mel, "hifigan", gl_iters=-1), ConfigError, "gl_iters"),
        (lambda: pghi(mel, "hifigan", tol=0.0), ConfigError, "tol"),
        (lambda: pghi(mel, "hifigan", method="lsq"), ConfigError, "method"),
    ]
    for call, kind, needle in cases:
        with pytest.raises(kind, match=needle) as e:
            call()
        assert "\n" not in str(e.value) and str(e.value).startswith(("pghi", "mel inversion")), str(e.value)


# --- cmaudio evaluate --baseline griffinlim ------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny consistency vocoder whose split rule holds out two of the embedded clips."""
    cfg = replace(Config(), model={"size": "tiny", "sigma_data": 0.087}, data={"val_fraction": 0.15})
    d = tmp_path_factory.mktemp("model") / "tiny"
    Vocoder.from_config(randomize(build_model(cfg, 0.087, "consistency"), 0), cfg).save_pretrained(d)
    return d


FAST = "pesq,stoi,logmel_l1,mrstft,dnsmos_ovrl,dnsmos_sig"


def test_evaluate_baseline_rows_beside_model_and_ground_truth(tmp_path, tiny_model, capsys):
    out = tmp_path / "report"
    code, stdout, err = cli(capsys, "evaluate", MINI, "-m", tiny_model, "--baseline", "griffinlim", "--steps", "1",
                            "--limit", "1", "--max-seconds", "1.5", "--metrics", FAST, "-o", out)
    assert code in (0, None), err
    data = json.loads((out / "report.json").read_text())
    names = [s["name"] for s in data["settings"]]
    assert names == ["cm-1step"] + [f"griffinlim-{n}" for n in GRIFFINLIM_ITERS]
    gl = {s["name"]: s for s in data["settings"]}
    (uid,) = data["ground_truth"]["per_utterance"]
    for s in data["settings"]:
        assert set(s["per_utterance"][uid]) == set(FAST.split(","))
        assert (out / s["audio"][uid]).is_file()
    assert gl["griffinlim-64"]["nfe"] == 64 and gl["griffinlim-64"]["family"] == "griffinlim"
    truth = data["ground_truth"]["per_utterance"][uid]
    assert truth["pesq"] == pytest.approx(4.64, abs=0.01) and truth["logmel_l1"] == 0.0
    g64, model = gl["griffinlim-64"]["per_utterance"][uid], gl["cm-1step"]["per_utterance"][uid]
    assert 0.05 < g64["logmel_l1"] < 0.4 < model["logmel_l1"]  # a random tiny model is far worse than GL
    assert g64["pesq"] > model["pesq"]
    ref, sr = sf.read(str(out / data["ground_truth"]["audio"][uid]))
    gen, _ = sf.read(str(out / gl["griffinlim-32"]["audio"][uid]))
    assert sr == 22050 and len(ref) == len(gen) == int(1.5 * 22050) // 256 * 256
    md = (out / "report.md").read_text()
    assert "| ground truth |" in md and "| griffinlim-64 | 64 |" in md
    assert "Metrics it fools (they rank it near neural vocoders): PESQ-WB, STOI, log-mel L1." in md
    assert "does not fool (they expose its phase" in md and "MR-STFT, DNSMOS OVRL, DNSMOS SIG" in md
    assert "In this run Griffin-Lim scored at least as well as the best model setting on" in md
    html = (out / "report.html").read_text()
    assert "griffinlim-64 (NFE 64)" in html and "Metrics it fools" in html
    assert "| griffinlim-32 |" in stdout


def test_evaluate_pghi_rows_beside_griffinlim(tmp_path, capsys):
    """--baseline griffinlim,pghi: rows pghi (NFE 1) and pghi-gl32 (NFE 33), family pghi, scored and written like
    Griffin-Lim's; PGHI is a baseline, not a model, in the Griffin-Lim sentences."""
    out = tmp_path / "report"
    code, stdout, err = cli(capsys, "evaluate", MINI, "--baseline", "griffinlim,pghi", "--limit", "1",
                            "--max-seconds", "1.0", "--metrics", "logmel_l1,mrstft", "-o", out)
    assert code in (0, None), err
    data = json.loads((out / "report.json").read_text())
    rows = {s["name"]: s for s in data["settings"]}
    assert list(rows) == [f"griffinlim-{n}" for n in GRIFFINLIM_ITERS] + ["pghi", "pghi-gl32"]
    assert PGHI_GL_ITERS == (0, 32)
    assert [(rows[n]["family"], rows[n]["nfe"]) for n in ("pghi", "pghi-gl32")] == [("pghi", 1), ("pghi", 33)]
    assert "NFE 1" in rows["pghi"]["note"]
    (uid,) = data["ground_truth"]["per_utterance"]
    for name in ("pghi", "pghi-gl32"):
        assert (out / rows[name]["audio"][uid]).is_file()
    pg, pg32 = rows["pghi"]["per_utterance"][uid], rows["pghi-gl32"]["per_utterance"][uid]
    assert 0.0 < pg32["logmel_l1"] < pg["logmel_l1"] < 0.6  # iterations from the PGHI phase fit the mel closer
    md = (out / "report.md").read_text()
    assert "| pghi | 1 |" in md and "| pghi-gl32 | 33 |" in md and "| pghi |" in stdout
    assert "best model setting" not in md and "every model setting" not in md


def test_evaluate_with_default_scores_the_shipped_model_beside_the_model(tmp_path, tiny_model, capsys):
    """--with-default adds the shipped vocoder's rows on the same clips: real speech (log-mel L1 well under
    the random tiny model's), not a copy of the -m rows."""
    out = tmp_path / "report"
    code, _, err = cli(capsys, "evaluate", MINI, "-m", tiny_model, "--with-default", "--steps", "1", "--limit", "1",
                       "--max-seconds", "1.0", "--metrics", "logmel_l1", "-o", out)
    assert code in (0, None), err
    data = json.loads((out / "report.json").read_text())
    rows = {s["name"]: s for s in data["settings"]}
    assert list(rows) == ["cm-1step", "default-1step"] and rows["default-1step"]["family"] == "default"
    (uid,) = data["ground_truth"]["per_utterance"]
    assert rows["default-1step"]["per_utterance"][uid]["logmel_l1"] < 0.6 < rows["cm-1step"]["per_utterance"][uid]["logmel_l1"]
    assert data["meta"]["default_model"] is True
    code, _, err = cli(capsys, "evaluate", MINI, "--with-default", "-o", tmp_path / "r2")
    assert_one_line_error(code, err, "--with-default", "-m MODEL")


def test_evaluate_baseline_without_model_uses_preset(tmp_path, capsys):
    out = tmp_path / "gl"
    code, _, err = cli(capsys, "evaluate", MINI, "--baseline", "griffinlim", "--preset", "vocos", "--limit", "1",
                       "--max-seconds", "1.0", "--metrics", "logmel_l1", "-o", out)
    assert code in (0, None), err
    data = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in data["settings"]] == ["griffinlim-32", "griffinlim-64"]
    assert data["meta"]["preset"] == "vocos" and data["meta"]["model"] == "none"
    assert data["meta"]["sample_rate"] == 24000


def test_evaluate_keeps_an_existing_report_unless_overwrite(tmp_path, capsys):
    """A report directory is never silently replaced (a user's earlier report, listened-to audio)."""
    out = tmp_path / "gl"
    args = ["evaluate", MINI, "--baseline", "griffinlim", "--limit", "1", "--max-seconds", "0.5", "--metrics",
            "logmel_l1", "-o", out]
    assert cli(capsys, *args)[0] in (0, None)
    (out / "report.md").write_text("my notes")
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, str(out), "report.json", "--overwrite")
    assert (out / "report.md").read_text() == "my notes"
    assert cli(capsys, *args, "--overwrite")[0] in (0, None)
    assert (out / "report.md").read_text() != "my notes"
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "evaluate", MINI, "--baseline", "griffinlim", "-o", tmp_path / "file")
    assert_one_line_error(code, err, "existing file")


def test_bench_json_refused_before_timing_unless_overwrite(tmp_path, capsys, monkeypatch):
    import cmaudio.bench as b

    def boom(*a, **k):
        raise AssertionError("timing started before the output was checked")

    monkeypatch.setattr(b, "run_bench", boom)
    (tmp_path / "cpu.json").write_text("[]")
    code, _, err = cli(capsys, "bench", "--json", tmp_path / "cpu.json")
    assert_one_line_error(code, err, "cpu.json", "already exists", "--overwrite")
    assert (tmp_path / "cpu.json").read_text() == "[]"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--baseline", "wavenet"], "unknown baseline"),
        (["--baseline", "griffinlim", "--metrics", "pesq,lpips"], "unknown metric"),
        (["--baseline", "griffinlim", "--preset", "hifi"], "unknown mel preset"),
    ],
)
def test_evaluate_baseline_bad_options_one_line(tmp_path, capsys, args, needle):
    code, _, err = cli(capsys, "evaluate", MINI, *args, "--limit", "1", "-o", tmp_path / "x")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "x").exists()


def test_evaluate_missing_metric_package_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "speechmos" else real(name, *a))
    code, _, err = cli(capsys, "evaluate", MINI, "--baseline", "griffinlim", "--limit", "1", "-o", tmp_path / "x")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "speechmos" in lines[0] and "pip install 'cmaudio[eval]'" in lines[0]
    assert not (tmp_path / "x").exists()
