"""Griffin-Lim baseline (cmaudio.baselines) and `cmaudio evaluate --baseline griffinlim` (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio import metrics as M
from test_cli_inference import assert_one_line_error
from cmaudio.baselines import GRIFFINLIM_ITERS, griffinlim, mel_to_magnitude
from cmaudio.build import build_model
from cmaudio.cli import main
from cmaudio.config import Config, replace
from cmaudio.errors import ConfigError, DataError
from cmaudio.features import MelSpectrogram
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
