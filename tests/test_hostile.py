"""Issue 17: the hostile run's defects, each reproduced on tiny models in seconds.

1. no writer (vocode, mel, edit, mel-decode, export) overwrites an existing file without --overwrite,
   and the refusal comes before any compute (one line, exit 2);
2. checkpoint pruning keeps intact checkpoints and reports the broken ones;
3. OS and user errors (read-only dirs, -o pointing at a file, a bad config.json) are one line, exit 2;
4. Vocoder.decode validates every layout and argument the same way;
5. config values that cannot work are refused at load, naming the key;
6. the smaller items (state.pt fallback, .tmp clean-up, npy paths once, config.json summary
   checks, warnings for truncated wavs and absurd mels, clipping only for stacks that clip).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cmaudio import checkpoint as ckpt
from cmaudio.errors import CmaudioError
from test_cli_inference import assert_one_line_error, cli, mel_array, speech_wav, tiny_vocoder, tree

REPO = Path(__file__).resolve().parents[1]
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores permission bits


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile_model") / "tiny"
    tiny_vocoder().save_pretrained(d)
    return d


def _no_model_load(monkeypatch):
    """Make loading a model fail loudly: a refusal must come before it."""
    from cmaudio.vocoder import Vocoder

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(Vocoder, "from_pretrained", classmethod(boom))


# ----------------------------------------------------------------------------------------------
# 1. never overwrite
# ----------------------------------------------------------------------------------------------


def test_vocode_beside_input_keeps_an_existing_recording(tmp_path, model_dir, capsys, monkeypatch):
    """The README workflow `cmaudio mel dl -o dl; cmaudio vocode dl` must not replace dl/*.wav."""
    d = tmp_path / "dl"
    d.mkdir()
    speech_wav(d / "X.wav", 0.3)
    before = (d / "X.wav").read_bytes()
    code, _, err = cli(capsys, "mel", d, "-o", d)
    assert code == 0, err
    with monkeypatch.context() as m:
        _no_model_load(m)
        code, _, err = cli(capsys, "vocode", d, "-m", model_dir)
    assert_one_line_error(code, err, "X.wav", "already exists", "--overwrite")
    assert (d / "X.wav").read_bytes() == before
    assert tree(d) == ["X.npy", "X.wav"]
    code, _, err = cli(capsys, "vocode", d, "-m", model_dir, "--overwrite")
    assert code == 0, err
    assert (d / "X.wav").read_bytes() != before


def test_vocode_into_out_dir_refuses_existing_files(tmp_path, model_dir, capsys, monkeypatch):
    np.save(tmp_path / "a.npy", mel_array(10))
    np.save(tmp_path / "b.npy", np.stack([mel_array(10, 1), mel_array(10, 2)]))  # b_0.wav, b_1.wav
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_1.wav").write_bytes(b"precious")
    _no_model_load(monkeypatch)
    code, _, err = cli(capsys, "vocode", tmp_path / "a.npy", tmp_path / "b.npy", "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, "b_1.wav", "already exists")
    assert tree(out) == ["b_1.wav"] and (out / "b_1.wav").read_bytes() == b"precious"
    # a copy-synthesis output (X_vocoded.wav) is protected too
    speech_wav(tmp_path / "r.wav", 0.2)
    (tmp_path / "r_vocoded.wav").write_bytes(b"precious")
    code, _, err = cli(capsys, "vocode", tmp_path / "r.wav", "-m", model_dir)
    assert_one_line_error(code, err, "r_vocoded.wav", "already exists")
    assert (tmp_path / "r_vocoded.wav").read_bytes() == b"precious"


def test_mel_refuses_existing_files(tmp_path, capsys):
    speech_wav(tmp_path / "s.wav", 0.2)
    out = tmp_path / "mels"
    out.mkdir()
    (out / "s.npy").write_bytes(b"precious")
    code, _, err = cli(capsys, "mel", tmp_path / "s.wav", "-o", out)
    assert_one_line_error(code, err, "s.npy", "already exists", "--overwrite")
    assert (out / "s.npy").read_bytes() == b"precious"
    code, _, err = cli(capsys, "mel", tmp_path / "s.wav", "-o", out, "--overwrite")
    assert code == 0, err
    assert np.load(out / "s.npy").shape[0] == 80


@pytest.mark.parametrize("command", ["inpaint", "bwe"])
def test_edit_refuses_an_existing_output(tmp_path, model_dir, capsys, monkeypatch, command):
    rate = 22050 if command == "inpaint" else 16000
    speech_wav(tmp_path / "in.wav", 0.3, rate)
    (tmp_path / "out.wav").write_bytes(b"precious")
    extra = ["--gap", "0.1:0.15"] if command == "inpaint" else []
    with monkeypatch.context() as m:
        _no_model_load(m)
        code, _, err = cli(capsys, "edit", command, tmp_path / "in.wav", *extra, "-m", model_dir, "-o", tmp_path / "out.wav")
        assert_one_line_error(code, err, "out.wav", "already exists")
        assert (tmp_path / "out.wav").read_bytes() == b"precious"
        # writing over the input itself is refused even with --overwrite
        code, _, err = cli(capsys, "edit", command, tmp_path / "in.wav", *extra, "-m", model_dir, "-o",
                           tmp_path / "in.wav", "--overwrite")
        assert_one_line_error(code, err, "overwrite an input")
    code, _, err = cli(capsys, "edit", command, tmp_path / "in.wav", *extra, "-m", model_dir, "-o",
                       tmp_path / "out.wav", "--overwrite")
    assert code == 0, err
    assert sf.info(str(tmp_path / "out.wav")).frames > 0


def test_export_and_mel_decode_refuse_existing_outputs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    import cmaudio.export as ex
    import cmaudio.mel as mel_mod

    def boom(*a, **k):
        raise AssertionError("work started before the outputs were checked")

    monkeypatch.setattr(ex, "export_run", boom)
    code, _, err = cli(capsys, "export", tmp_path / "no_run", "-o", out)
    assert_one_line_error(code, err, "config.json", "already exists", "--overwrite")
    assert (out / "config.json").read_text() == "{}"
    monkeypatch.setattr(mel_mod, "decode_files", boom)
    np.save(tmp_path / "f.npy", mel_array(10))
    mels = tmp_path / "mels"
    mels.mkdir()
    (mels / "f.npy").write_bytes(b"precious")
    code, _, err = cli(capsys, "mel-decode", tmp_path / "f.npy", "-m", tmp_path, "-o", mels)
    assert_one_line_error(code, err, "f.npy", "already exists")
    assert (mels / "f.npy").read_bytes() == b"precious"
