"""The inference command line (issue 6): vocode, mel, edit inpaint/bwe, export (and --onnx).

Commands run in-process through cmaudio.cli.main (exit status via SystemExit, stderr via
capsys) and, for the no-traceback guarantee, as real subprocesses. Every bad input must give
exit status 2, exactly one line on stderr, no traceback and no output file (not even a
temporary), also when the bad input comes after good ones.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio.build import build_model
from cmaudio.cli import main
from cmaudio.config import Config, replace
from cmaudio.data import load_audio
from cmaudio.features import MelSpectrogram, convert
from helpers import randomize

from cmaudio.projection import mel_projection
from cmaudio.vocoder import Vocoder

REPO = Path(__file__).resolve().parents[1]
LJ = REPO / "egs" / "mini" / "data" / "ljspeech_mini" / "wavs"
SD = 0.087
HOP = 256


# ----------------------------------------------------------------------------------------------
# helpers and fixtures
# ----------------------------------------------------------------------------------------------


def tiny_vocoder(seed: int = 0, **model_kw) -> Vocoder:
    cfg = replace(Config(), model={"size": "tiny", "sigma_data": SD, **model_kw})
    return Vocoder.from_config(randomize(build_model(cfg, SD, "consistency"), seed), cfg)


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `cmaudio ARGS` in-process -> (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def tree(d: Path) -> list[str]:
    """Every file and directory under d, hidden ones included ([] when d does not exist)."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else []


def mel_array(frames: int, seed: int = 0, n_mels: int = 80) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n_mels, frames)) - 4.0).astype(np.float32)


def read_wav(path: Path, dtype: str = "int16") -> tuple[np.ndarray, int]:
    a, sr = sf.read(str(path), dtype=dtype)
    return a, sr


def speech_wav(path: Path, seconds: float = 1.0, rate: int = 22050) -> Path:
    a = load_audio(LJ / "LJ001-0012.wav", rate)[: int(seconds * rate)]
    sf.write(str(path), a, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model") / "tiny"
    tiny_vocoder().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A 2-step CT training run of a tiny model on the embedded clips (about 10 s on 2 cores)."""
    d = tmp_path_factory.mktemp("run") / "mini_ct"
    cmd = [sys.executable, "-m", "cmaudio", "train", "recipes/mini_ct.yaml", "--set", "train.max_steps=2",
           "--set", "model.size=tiny", "--set", "train.val_every=1000", "--set", "train.ckpt_every=2",
           "--set", "data.segment_length=2048", "--set", "train.batch_size=2", "--set", "model.sigma_data=0.087",
           "--set", "data.max_val_utterances=1", "--set", "data.val_seconds=0.5", "--run-dir", str(d), "--quiet"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return d


# ----------------------------------------------------------------------------------------------
# vocode: good input
# ----------------------------------------------------------------------------------------------


def test_vocode_mels_and_wavs_to_out_dir(tmp_path, model_dir, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    np.save(inp / "a.npy", mel_array(50))
    np.save(inp / "b.npy", mel_array(37, seed=1).T.copy())  # time-first: detected from n_mels
    np.save(inp / "c.npy", mel_array(50, seed=2))  # same length as a: batched with it
    wav = speech_wav(tmp_path / "speech.wav", 0.5)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "vocode", inp / "a.npy", inp / "b.npy", inp / "c.npy", wav, "-m", model_dir, "-o", out)
    assert code == 0, err
    assert "wrote 4 wav file(s) at 22050 Hz" in stdout
    assert tree(out) == ["a.wav", "b.wav", "c.wav", "speech.wav"]  # no temporaries left
    frames_wav = MelSpectrogram("hifigan").num_frames(int(0.5 * 22050))
    for name, frames in [("a", 50), ("b", 37), ("c", 50), ("speech", frames_wav)]:
        a, sr = read_wav(out / f"{name}.wav")
        assert sr == 22050 and a.shape == (frames * HOP,)
        assert np.abs(a).max() > 30  # not silence
    assert sorted(p.name for p in inp.iterdir()) == ["a.npy", "b.npy", "c.npy"]  # nothing beside the inputs


def test_vocode_equals_python_api(tmp_path, model_dir, capsys):
    np.save(tmp_path / "m.npy", mel_array(40))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / "o", "--seed", "3",
                       "--steps", "2")
    assert code == 0, err
    voc = Vocoder.from_pretrained(model_dir)
    ref = voc.decode(mel_array(40), steps=2, generator=torch.Generator().manual_seed(3))[0].numpy()
    got, _ = read_wav(tmp_path / "o" / "m.wav", "float32")
    np.testing.assert_allclose(got, ref, atol=1.0 / 32767 + 1e-7)


def test_vocode_without_out_writes_beside_input(tmp_path, model_dir, capsys):
    np.save(tmp_path / "mel.npy", mel_array(20))
    wav = speech_wav(tmp_path / "rec.wav", 0.3)
    code, _, err = cli(capsys, "vocode", tmp_path / "mel.npy", wav, "-m", model_dir)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mel.npy", "mel.wav", "rec.wav", "rec_vocoded.wav"]
    assert read_wav(tmp_path / "mel.wav")[0].shape == (20 * HOP,)


def test_vocode_directory_batch_and_rerun(tmp_path, model_dir, capsys):
    d = tmp_path / "mels"
    (d / "sub").mkdir(parents=True)
    np.save(d / "x.npy", mel_array(30))
    np.save(d / "sub" / "y.npy", mel_array(12))
    np.save(d / "batch.npy", np.stack([mel_array(16, 3), mel_array(16, 4)]))  # (2, 80, 16): two wavs
    code, _, err = cli(capsys, "vocode", d, "-m", model_dir, "--batch-size", "1")
    assert code == 0, err
    assert tree(d) == ["batch.npy", "batch_0.wav", "batch_1.wav", "sub", "sub/y.npy", "sub/y.wav", "x.npy", "x.wav"]
    first = {p: (d / p).read_bytes() for p in tree(d) if p.endswith(".wav")}
    # a second run refuses to replace the wavs; with --overwrite it vocodes the mels again (wavs are not inputs)
    code, _, err = cli(capsys, "vocode", d, "-m", model_dir, "--batch-size", "8")
    assert_one_line_error(code, err, "already exists", "--overwrite")
    code, stdout, err = cli(capsys, "vocode", d, "-m", model_dir, "--batch-size", "8", "--overwrite")
    assert code == 0, err
    assert "wrote 4 wav file(s)" in stdout
    assert tree(d) == ["batch.npy", "batch_0.wav", "batch_1.wav", "sub", "sub/y.npy", "sub/y.wav", "x.npy", "x.wav"]
    assert read_wav(d / "batch_1.wav")[0].shape == (16 * HOP,)
    assert set(first) == {"batch_0.wav", "batch_1.wav", "sub/y.wav", "x.wav"}


def test_vocode_seed(tmp_path, model_dir, capsys):
    np.save(tmp_path / "m.npy", mel_array(20))
    outs = {}
    for tag, seed in [("a", 0), ("b", 0), ("c", 1)]:
        assert cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / tag, "--seed", seed)[0] == 0
        outs[tag] = read_wav(tmp_path / tag / "m.wav")[0]
    assert np.array_equal(outs["a"], outs["b"]) and not np.array_equal(outs["a"], outs["c"])


def test_vocode_converts_exact_presets_and_layouts(tmp_path, model_dir, capsys):
    mel = mel_array(80)  # square (80 mels x 80 frames): ambiguous layout
    np.save(tmp_path / "ln.npy", mel)
    np.save(tmp_path / "log10.npy", convert(mel, "hifigan", "hifigan_log10"))
    np.save(tmp_path / "tf.npy", mel.T.copy())
    ref = tmp_path / "ref"
    assert cli(capsys, "vocode", tmp_path / "ln.npy", "-m", model_dir, "-o", ref)[0] == 0
    base = read_wav(ref / "ln.wav")[0]
    code, _, err = cli(capsys, "vocode", tmp_path / "log10.npy", "-m", model_dir, "-o", tmp_path / "o1",
                       "--preset", "hifigan_log10")
    assert code == 0, err
    assert np.abs(read_wav(tmp_path / "o1" / "log10.wav")[0].astype(int) - base).max() <= 1
    code, _, err = cli(capsys, "vocode", tmp_path / "tf.npy", "-m", model_dir, "-o", tmp_path / "o2",
                       "--layout", "time-first")
    assert code == 0, err
    assert np.array_equal(read_wav(tmp_path / "o2" / "tf.wav")[0], base)
    # without --layout a square time-first mel is read mels-first: other audio
    assert cli(capsys, "vocode", tmp_path / "tf.npy", "-m", model_dir, "-o", tmp_path / "o3")[0] == 0
    assert not np.array_equal(read_wav(tmp_path / "o3" / "tf.wav")[0], base)


def test_mel_then_vocode(tmp_path, model_dir, capsys):
    wav = speech_wav(tmp_path / "s.wav", 0.6)
    code, stdout, err = cli(capsys, "mel", wav, "-o", tmp_path / "mels")
    assert code == 0, err
    m = np.load(tmp_path / "mels" / "s.npy")
    ref = MelSpectrogram("hifigan")(torch.from_numpy(load_audio(wav, 22050)))[0].numpy()
    assert m.dtype == np.float32 and m.shape == ref.shape
    np.testing.assert_allclose(m, ref, atol=1e-5)
    code, _, err = cli(capsys, "vocode", tmp_path / "mels", "-m", model_dir, "-o", tmp_path / "wavs")
    assert code == 0, err
    assert read_wav(tmp_path / "wavs" / "s.wav")[0].shape == (m.shape[1] * HOP,)
    # a vocos mel (100 bins, 24 kHz, HTK) cannot be converted to the model's hifigan convention
    assert cli(capsys, "mel", wav, "-o", tmp_path / "vmels", "--preset", "vocos")[0] == 0
    code, _, err = cli(capsys, "vocode", tmp_path / "vmels" / "s.npy", "-m", model_dir, "-o", tmp_path / "v1")
    assert_one_line_error(code, err, "80 mel bins")
    code, _, err = cli(capsys, "vocode", tmp_path / "vmels" / "s.npy", "-m", model_dir, "-o", tmp_path / "v2",
                       "--preset", "vocos")
    assert_one_line_error(code, err, "'vocos'", "'hifigan'")
    assert tree(tmp_path / "v1") == [] and tree(tmp_path / "v2") == []


def test_mel_bad_input(tmp_path, capsys):
    wav = speech_wav(tmp_path / "s.wav", 0.3)
    code, _, err = cli(capsys, "mel", wav, "-o", tmp_path / "o", "--preset", "hifi")
    assert_one_line_error(code, err, "unknown mel preset")
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    code, _, err = cli(capsys, "mel", wav, tmp_path / "bad.wav", "-o", tmp_path / "o")
    assert_one_line_error(code, err, "bad.wav")
    assert tree(tmp_path / "o") == []


# ----------------------------------------------------------------------------------------------
# vocode: bad input (one line, exit 2, no traceback, no output at all)
# ----------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _truncated(path: Path) -> None:
    np.save(path, mel_array(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _object_npy(path: Path) -> None:
    np.save(path, np.array([_Payload(path.with_name("UNPICKLED"))], dtype=object), allow_pickle=True)


def _pickle_file(path: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(path.with_name("UNPICKLED"))))


BAD_NPY = {
    "wrong_n_mels": (lambda p: np.save(p, mel_array(20, n_mels=64)), ["80 mel bins", "64"]),
    "nan": (lambda p: np.save(p, np.where(np.arange(20) == 7, np.nan, mel_array(20)).astype(np.float32)), ["NaN"]),
    "inf": (lambda p: np.save(p, np.where(np.arange(20) == 7, -np.inf, mel_array(20)).astype(np.float32)), ["inf"]),
    "empty": (lambda p: np.save(p, np.zeros((80, 0), np.float32)), ["empty"]),
    "one_d": (lambda p: np.save(p, np.zeros(80, np.float32)), ["1-D"]),
    "four_d": (lambda p: np.save(p, np.zeros((1, 1, 80, 20), np.float32)), ["4-D"]),
    "strings": (lambda p: np.save(p, np.full((80, 20), "x")), ["dtype"]),
    "complex": (lambda p: np.save(p, np.zeros((80, 20), np.complex64)), ["dtype"]),
    "truncated": (_truncated, ["truncated"]),
    "object": (_object_npy, ["never unpickles"]),
    "pickle": (_pickle_file, ["never unpickles"]),
}


@pytest.mark.parametrize("case", list(BAD_NPY))
@pytest.mark.parametrize("with_out", [True, False])
def test_vocode_bad_mel_writes_nothing(tmp_path, model_dir, capsys, monkeypatch, case, with_out):
    make, needles = BAD_NPY[case]
    inp = tmp_path / "in"
    inp.mkdir()
    np.save(inp / "good1.npy", mel_array(30))
    np.save(inp / "good2.npy", mel_array(30, seed=1))
    make(inp / "zbad.npy")
    before = tree(inp)

    def forbidden(*a, **k):
        raise AssertionError("input files must never be unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    out = tmp_path / "out"
    args = ["vocode", inp / "good1.npy", inp / "good2.npy", inp / "zbad.npy", "-m", model_dir] + (["-o", out] if with_out else [])
    code, _, err = cli(capsys, *args)
    line = assert_one_line_error(code, err, "zbad.npy", *needles)
    assert "allow_pickle" not in line
    assert tree(out) == [] and tree(inp) == before  # nothing written, not even a temporary
    assert not (inp / "UNPICKLED").exists()


def _tamper(d: Path) -> None:
    data = bytearray((d / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / "model.safetensors").write_bytes(bytes(data))


BAD_MODEL = {
    "missing_dir": (lambda d: shutil.rmtree(d), ["not found"]),
    "missing_weights": (lambda d: (d / "model.safetensors").unlink(), ["model.safetensors"]),
    "missing_config": (lambda d: (d / "config.json").unlink(), ["config.json"]),
    "tampered_weights": (_tamper, ["checksum"]),
    "truncated_weights": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
                          ["checksum"]),
    "tampered_config": (lambda d: (d / "config.json").write_text("{\"format\": \"cmaudio-model\", \"sha256\": 1"),
                        ["config.json"]),
}


@pytest.mark.parametrize("case", list(BAD_MODEL))
def test_vocode_bad_model_dir(tmp_path, model_dir, capsys, case):
    breakage, needles = BAD_MODEL[case]
    m = tmp_path / "model"
    shutil.copytree(model_dir, m)
    breakage(m)
    np.save(tmp_path / "good.npy", mel_array(10))
    code, _, err = cli(capsys, "vocode", tmp_path / "good.npy", "-m", m, "-o", tmp_path / "out")
    assert_one_line_error(code, err, *needles)
    assert tree(tmp_path / "out") == []


BAD_OPTIONS = {
    "unknown_preset": (["--preset", "hifigann"], ["unknown mel preset", "hifigan"]),
    "steps": (["--steps", "0"], ["--steps"]),
    "batch_size": (["--batch-size", "0"], ["--batch-size"]),
    "layout": (["--layout", "sideways"], ["--layout"]),
    "projection": (["--projection", "-1"], ["--projection", "0 = off"]),
    "projection_big": (["--projection", "65"], ["--projection"]),
    "device": (["--device", "cuda"], ["cuda"]),  # tests run with CUDA hidden (conftest)
    "device_name": (["--device", "tpu"], ["--device"]),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_vocode_bad_options(tmp_path, model_dir, capsys, case):
    opts, needles = BAD_OPTIONS[case]
    np.save(tmp_path / "good.npy", mel_array(10))
    code, _, err = cli(capsys, "vocode", tmp_path / "good.npy", "-m", model_dir, "-o", tmp_path / "out", *opts)
    assert_one_line_error(code, err, *needles)
    assert tree(tmp_path / "out") == []


def test_vocode_bad_paths(tmp_path, model_dir, capsys):
    np.save(tmp_path / "good.npy", mel_array(10))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (tmp_path / "emptydir").mkdir()
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "missing.npy"], ["missing.npy"]),
        ([tmp_path / "notes.txt"], ["notes.txt"]),
        ([tmp_path / "bad.wav"], ["bad.wav"]),
        ([tmp_path / "emptydir"], ["no input files"]),
    ]
    for inputs, needles in cases:
        code, _, err = cli(capsys, "vocode", tmp_path / "good.npy", *inputs, "-m", model_dir, "-o", out)
        assert_one_line_error(code, err, *needles)
        assert tree(out) == []
    # the run dir of a training run is not a model directory
    code, _, err = cli(capsys, "vocode", tmp_path / "good.npy", "-m", tmp_path, "-o", out)
    assert_one_line_error(code, err, "config.json")
    # two inputs with the same name into one -o, or an output that would overwrite an input
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "good.npy", mel_array(10))
    code, _, err = cli(capsys, "vocode", tmp_path / "good.npy", tmp_path / "d" / "good.npy", "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, "same output")
    speech_wav(tmp_path / "good.wav", 0.2)
    before = (tmp_path / "good.wav").read_bytes()
    code, _, err = cli(capsys, "vocode", tmp_path / "good.npy", tmp_path / "good.wav", "-m", model_dir)
    assert_one_line_error(code, err, "overwrite an input", "-o")
    assert (tmp_path / "good.wav").read_bytes() == before
    assert tree(out) == []


def test_subprocess_errors_have_no_traceback(tmp_path, model_dir):
    """The real console entry point: one line on stderr, exit 2, nothing written."""
    np.save(tmp_path / "good.npy", mel_array(10))
    _object_npy(tmp_path / "evil.npy")
    broken = tmp_path / "broken_model"
    shutil.copytree(model_dir, broken)
    _tamper(broken)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("CMAUDIO_DEBUG", None)
    for model, bad, needle in [(model_dir, tmp_path / "evil.npy", "never unpickles"),
                               (broken, tmp_path / "good.npy", "checksum")]:
        res = subprocess.run([sys.executable, "-m", "cmaudio", "vocode", str(tmp_path / "good.npy"), str(bad), "-m",
                              str(model), "-o", str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 2, res.stderr
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
        assert "Traceback" not in res.stderr + res.stdout
        assert tree(tmp_path / "out") == [] and not (tmp_path / "UNPICKLED").exists()


# ----------------------------------------------------------------------------------------------
# edit inpaint / bwe
# ----------------------------------------------------------------------------------------------


def test_edit_inpaint_keeps_known_part(tmp_path, model_dir, capsys):
    wav = speech_wav(tmp_path / "in.wav", 1.0)
    out = tmp_path / "res" / "out.wav"
    code, stdout, err = cli(capsys, "edit", "inpaint", wav, "--gap", "0.4:0.6", "-m", model_dir, "--steps", "2", "-o", out)
    assert code == 0, err
    assert tree(tmp_path / "res") == ["out.wav"]
    x, _ = read_wav(wav)
    y, sr = read_wav(out)
    assert sr == 22050 and y.shape == x.shape
    s0, s1 = round(0.4 * 22050), round(0.6 * 22050)
    assert np.array_equal(y[:s0], x[:s0]) and np.array_equal(y[s1:], x[s1:])  # bit for bit
    assert np.abs(y[s0:s1].astype(int) - x[s0:s1]).max() > 30  # the gap is new audio
    assert np.abs(y[s0:s1]).max() > 30  # ... not silence


@pytest.mark.parametrize("gap,needle", [("0.6:0.4", "gap"), ("0.2:5", "outside"), ("abc", "START:END"),
                                        ("0.1:0.2:0.3", "START:END"), ("nan:0.2", "START:END"), ("0:inf", "START:END")])
def test_edit_inpaint_bad_gap(tmp_path, model_dir, capsys, gap, needle):
    wav = speech_wav(tmp_path / "in.wav", 0.5)
    out = tmp_path / "res" / "out.wav"
    code, _, err = cli(capsys, "edit", "inpaint", wav, "--gap", gap, "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, needle)
    assert tree(tmp_path / "res") == []


def test_edit_inpaint_unconditional_needs_null_cond(tmp_path, model_dir, capsys):
    wav = speech_wav(tmp_path / "in.wav", 0.5)
    out = tmp_path / "res" / "out.wav"
    code, _, err = cli(capsys, "edit", "inpaint", wav, "--gap", "0.1:0.2", "-m", model_dir, "-o", out, "--unconditional")
    assert_one_line_error(code, err, "cond_dropout")
    assert tree(tmp_path / "res") == []
    m = tmp_path / "uncond_model"
    v = tiny_vocoder(seed=1, cond_dropout=0.2)
    v.save_pretrained(m)
    code, _, err = cli(capsys, "edit", "inpaint", wav, "--gap", "0.1:0.2", "-m", m, "-o", out, "--unconditional")
    assert code == 0, err
    x, y = read_wav(wav)[0], read_wav(out)[0]
    s0, s1 = round(0.1 * 22050), round(0.2 * 22050)
    assert np.array_equal(y[:s0], x[:s0]) and np.array_equal(y[s1:], x[s1:])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_edit_bwe_extends_band_limited_recording(tmp_path, model_dir, capsys, rate):
    wav = speech_wav(tmp_path / f"in{rate}.wav", 1.0, rate=rate)
    out = tmp_path / "res" / "wide.wav"
    code, stdout, err = cli(capsys, "edit", "bwe", wav, "-m", model_dir, "-o", out)
    assert code == 0, err
    assert f"{rate} Hz -> 22050 Hz" in stdout
    assert tree(tmp_path / "res") == ["wide.wav"]
    y, sr = read_wav(out, "float32")
    x = load_audio(wav, 22050)  # the input at the model's rate
    assert sr == 22050 and y.shape == x.shape == (22050,)

    def spec(a):
        return torch.stft(torch.from_numpy(a), 1024, 256, window=torch.hann_window(1024), return_complex=True)

    X, Y = spec(x), spec(y)
    k = int(0.9 * (rate / 2) * 1024 / 22050)  # bins well inside the known band
    assert (Y[:k] - X[:k]).abs().pow(2).sum() / X[:k].abs().pow(2).sum() < 1e-3  # known band kept
    hi = int(1.1 * (rate / 2) * 1024 / 22050)
    assert Y[hi:].abs().pow(2).sum() > 100 * X[hi:].abs().pow(2).sum()  # new content above it


def test_edit_bwe_bad_input(tmp_path, model_dir, capsys):
    wav = speech_wav(tmp_path / "full.wav", 0.3)  # already at the model's rate
    out = tmp_path / "res" / "o.wav"
    code, _, err = cli(capsys, "edit", "bwe", wav, "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, "22050")
    code, _, err = cli(capsys, "edit", "bwe", tmp_path / "missing.wav", "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, "missing.wav")
    code, _, err = cli(capsys, "edit", "bwe", wav, "-m", tmp_path / "nomodel", "-o", out)
    assert_one_line_error(code, err, "nomodel")
    assert tree(tmp_path / "res") == []


# ----------------------------------------------------------------------------------------------
# export (and --onnx)
# ----------------------------------------------------------------------------------------------


def _latest_ckpt(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("step_*"))[-1]


def test_export_writes_loadable_model_dir(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "model"
    code, stdout, err = cli(capsys, "export", run_dir, "-o", out)
    assert code == 0, err
    assert tree(out) == ["config.json", "model.safetensors"]
    info = json.loads((out / "config.json").read_text())
    assert info["kind"] == "consistency" and info["domain"] == "wave"
    assert info["preset"] == "hifigan" and info["sample_rate"] == 22050 and info["hop_length"] == 256
    assert info["config"]["model"]["net"] == "framenet" and info["config"]["model"]["size"] == "tiny"
    assert sorted(info["default_sigmas"]) == ["1", "2", "3", "4"]
    assert info["ema_rate"] == 0.999 and info["trained_steps"] == 2 and len(info["sha256"]) == 64
    # the inference EMA (smallest rate by default), not the online weights
    ema = load_file(str(_latest_ckpt(run_dir) / "ema_0.999.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert set(ema) == set(exported) and all(torch.equal(ema[k], exported[k]) for k in ema)
    voc = Vocoder.from_pretrained(out)
    assert voc.decode(np.zeros((80, 8), np.float32) - 5, steps=2).shape == (1, 8 * 256)
    np.save(tmp_path / "m.npy", mel_array(12))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", out, "-o", tmp_path / "wavs")
    assert code == 0, err
    assert read_wav(tmp_path / "wavs" / "m.wav")[0].shape == (12 * 256,)


def test_export_ema_choice_and_errors(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "m9999"
    assert cli(capsys, "export", run_dir, "-o", out, "--ema", "0.9999")[0] == 0
    ema = load_file(str(_latest_ckpt(run_dir) / "ema_0.9999.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(ema[k], exported[k]) for k in ema)
    code, _, err = cli(capsys, "export", run_dir, "-o", tmp_path / "bad", "--ema", "0.5")
    assert_one_line_error(code, err, "0.5", "0.999")
    code, _, err = cli(capsys, "export", tmp_path / "norun", "-o", tmp_path / "bad")
    assert_one_line_error(code, err, "norun")
    (tmp_path / "emptyrun").mkdir()
    code, _, err = cli(capsys, "export", tmp_path / "emptyrun", "-o", tmp_path / "bad")
    assert_one_line_error(code, err, "no complete checkpoint")
    assert tree(tmp_path / "bad") == []


def _ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _compare_onnx(model: torch.nn.Module, onnx_path: Path, batch: int, frames: int, sigma: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, 80, frames, generator=g) - 4.0
    x = torch.randn(batch, 1, frames * HOP, generator=g) * sigma
    s = torch.full((batch,), sigma)
    with torch.no_grad():
        ref = model(x, s, mel).numpy()
    got = _ort_session(onnx_path).run(["audio"], {"x": x.numpy(), "sigma": s.numpy(), "mel": mel.numpy()})[0]
    assert got.shape == ref.shape == (batch, 1, frames * HOP)
    return got, ref, x.numpy()


def test_export_onnx_cli(run_dir, tmp_path, capsys):
    import onnx

    import warnings

    out = tmp_path / "model"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = cli(capsys, "export", run_dir, "-o", out, "--onnx")
    assert code == 0, err
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]  # no noise for users
    # the recipe (mini_ct) sets sampling.projection = 8: its iterations are exported beside the network
    assert tree(out) == ["config.json", "model.onnx", "model.safetensors", "projection.onnx"]
    proto = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["x", "sigma", "mel"]
    proj = onnx.load(str(out / "projection.onnx"))
    onnx.checker.check_model(proj)
    assert [i.name for i in proj.graph.input] == ["audio", "mel"]
    voc = Vocoder.from_pretrained(out)
    assert voc.projection == 8
    for batch, frames, sigma in [(1, 8, voc.model.param.sigma_max), (2, 23, 0.3)]:
        got, ref, _ = _compare_onnx(voc.model, out / "model.onnx", batch, frames, sigma)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    # model.onnx, then projection.onnx, then the clamp is what Vocoder.decode (and cmaudio vocode) makes
    g = torch.Generator().manual_seed(3)
    mel = voc.mel(torch.randn(2, 31 * HOP, generator=g) * 0.1)[..., :31]
    smax = float(voc.model.param.sigma_max)
    want = voc.decode(mel, generator=torch.Generator().manual_seed(5)).numpy()
    from cmaudio.sampling import draw_seed, indexed_noise

    z = indexed_noise(draw_seed(torch.Generator().manual_seed(5)), (2, 1, 31 * HOP), "cpu")(0)  # decode's noise
    x = {"x": (z * smax).numpy(), "sigma": np.full((2,), smax, np.float32), "mel": mel.numpy()}
    f = _ort_session(out / "model.onnx").run(["audio"], x)[0][:, 0]
    proj = _ort_session(out / "projection.onnx")
    got = proj.run(["audio_out"], {"audio": f, "mel": mel.numpy()})[0]
    assert np.abs(got - f).max() > 1e-2  # the projection changed the audio: the match below is not trivial
    # on a speech-like mel the network's graph is within ~2e-3 of PyTorch (its Griffin-Lim prior takes the
    # phase of near-zero bins, where the DFT-basis and FFT roundings differ), the projection within 1e-6
    np.testing.assert_allclose(np.clip(got, -1, 1), want, rtol=0, atol=5e-3)
    with torch.no_grad():
        f_pt = voc.model(torch.from_numpy(x["x"]), torch.from_numpy(x["sigma"]), mel)[:, 0]
    np.testing.assert_allclose(proj.run(["audio_out"], {"audio": f_pt.numpy(), "mel": mel.numpy()})[0],
                               mel_projection(f_pt, mel, voc.features, 8).numpy(), rtol=0, atol=1e-5)
    # exported again without --onnx: the ONNX files of the old weights go with them
    assert cli(capsys, "export", run_dir, "-o", out)[0] == 2  # not without --overwrite
    assert cli(capsys, "export", run_dir, "-o", out, "--overwrite")[0] == 0
    assert tree(out) == ["config.json", "model.safetensors"]


def test_export_onnx_matches_pytorch_on_random_weights(tmp_path):
    """Non-trivial weights (the 2-step run's output layer is still ~0): ORT == PyTorch within 1e-4."""
    from cmaudio.export import export_onnx

    voc = tiny_vocoder(seed=7)
    path = export_onnx(voc.model, tmp_path / "m.onnx", n_mels=80, hop=HOP)
    smax = voc.model.param.sigma_max
    for batch, frames, sigma in [(1, 8, smax), (2, 37, smax), (1, 20, 0.05)]:
        got, ref, x = _compare_onnx(voc.model, path, batch, frames, sigma, seed=frames)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
        c_skip = voc.model.param.consistency_scalings(torch.tensor([sigma]))[0].item()
        assert np.abs(ref - c_skip * x).max() > 1e-2  # the network contributes: the match is not trivial
    # one-step vocoding through ONNX on the same noise as Vocoder.decode
    mel = torch.randn(1, 80, 15, generator=torch.Generator().manual_seed(0)) - 4
    audio = voc.decode(mel, generator=torch.Generator().manual_seed(11), clamp=False)
    from cmaudio.sampling import draw_seed, indexed_noise

    z = indexed_noise(draw_seed(torch.Generator().manual_seed(11)), (1, 1, 15 * HOP), "cpu")(0)  # decode's noise
    got = _ort_session(path).run(["audio"], {"x": (z * smax).numpy(), "sigma": np.full((1,), smax, np.float32),
                                             "mel": mel.numpy()})[0]
    np.testing.assert_allclose(got[:, 0], audio.numpy(), rtol=0, atol=1e-4)


def test_export_onnx_framenet_with_its_griffin_lim_prior(tmp_path):
    """FrameNet's prior (Griffin-Lim iterations inside the net) traces to ONNX with the DFT-convolution
    STFT pair: ORT == PyTorch within 1e-4 on random weights, at sigma_max and at a low sigma."""
    from cmaudio.export import export_onnx

    voc = tiny_vocoder(seed=3, net="framenet", frame_prior_iters=2)
    path = export_onnx(voc.model, tmp_path / "m.onnx", n_mels=80, hop=HOP)
    for batch, frames, sigma in [(1, 9, voc.model.param.sigma_max), (2, 21, 0.05)]:
        got, ref, _ = _compare_onnx(voc.model, path, batch, frames, sigma, seed=frames)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_export_onnx_without_onnx_package_writes_nothing(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    out = tmp_path / "model"
    code, _, err = cli(capsys, "export", run_dir, "-o", out, "--onnx")
    assert_one_line_error(code, err, "onnx")
    assert tree(out) == []
