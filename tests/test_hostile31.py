"""Issue 31 "Hostile inputs": each class reproduced on tiny models in seconds.

1. paths built from data (utterance ids, file stems, setting names) stay inside their output directory;
4. outputs are created exclusively: an existing name (a concurrent run's file, a dangling symlink) is never
   replaced without --overwrite;
2. a model directory's config.json is covered by the checksum and checked against the weights' shapes
   before anything large is built;
3. non-finite weights are refused at load, non-finite audio is never written;
6. interrupted writes leave no temporaries, and stale ones of a dead process are removed;
5. ordinary conditions (disk full, a huge .npy header, a non-UTF-8 recipe, a 65-bit seed) are one line;
8. messages name the file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmaudio.errors import DataError
from cmaudio.io import confined_path
from test_cli_inference import assert_one_line_error, cli, mel_array, speech_wav, tiny_vocoder, tree

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "egs" / "mini" / "data" / "ljspeech_mini"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile31_model") / "tiny"
    tiny_vocoder().save_pretrained(d)
    return d


def _corpus(root: Path, *ids: str) -> Path:
    """An LJSpeech-layout corpus: two real clips plus metadata lines for `ids` (their wavs wherever they point)."""
    (root / "wavs").mkdir(parents=True)
    for name in ("LJ001-0011", "LJ001-0012"):
        shutil.copy(MINI / "wavs" / f"{name}.wav", root / "wavs" / f"{name}.wav")
    lines = ["LJ001-0011||", "LJ001-0012||", *(f"{i}||" for i in ids)]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------------------
# 1. paths from data are confined to their output directory
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../../victim/Y", "/abs/Y", "..", ".", "sub/x", "a\x00b", "x" * 300])
def test_confined_path_refuses_names_that_are_not_one_plain_name(tmp_path, bad):
    with pytest.raises(DataError) as e:
        confined_path(tmp_path / "out", bad, suffix=".wav", what="utterance id")
    msg = str(e.value)
    assert repr(bad) in msg and "\n" not in msg
    assert confined_path(tmp_path / "out", "ok", bad.replace("/", "_").replace("\x00", "_")[:200] + "_",
                         suffix=".wav").parent == tmp_path / "out" / "ok"


def test_confined_path_refuses_a_symlinked_subdirectory_leading_out(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "audio").symlink_to(elsewhere)
    with pytest.raises(DataError, match="leads outside"):
        confined_path(out, "audio", "gt", "x", suffix=".wav")
    (out / "inner").mkdir()
    (out / "alias").symlink_to(out / "inner")  # a link that stays inside is fine
    assert confined_path(out, "alias", "x", suffix=".wav") == out / "alias" / "x.wav"


def _victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim" / "Y.wav"
    v.parent.mkdir()
    v.write_bytes(b"precious")
    return v


@pytest.mark.parametrize("bad", ["../../../victim/Y", "/abs/victim/Y", "..", "a\x00b", ""])
def test_evaluate_refuses_an_id_that_leaves_the_report_dir(tmp_path, capsys, bad):
    """An id such as ../../../victim/Y once made evaluate replace tmp/victim/Y.wav (out/audio/ground_truth/...)."""
    victim = _victim(tmp_path)
    corpus = _corpus(tmp_path / "corpus", bad)
    out = tmp_path / "rep"
    before = tree(tmp_path)
    code, _, err = cli(capsys, "evaluate", corpus, "--baseline", "griffinlim", "--split", "all", "--max-seconds",
                       "0.3", "--metrics", "logmel_l1", "-o", out)
    assert_one_line_error(code, err, "utterance id", repr(bad))
    assert victim.read_bytes() == b"precious"
    assert tree(tmp_path) == before  # nothing created anywhere, the report directory included


def test_evaluate_refuses_a_symlinked_audio_dir_that_leads_out(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    out, elsewhere = tmp_path / "rep", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "audio").symlink_to(elsewhere)
    code, _, err = cli(capsys, "evaluate", corpus, "--baseline", "griffinlim", "--split", "all", "--max-seconds",
                       "0.3", "--metrics", "logmel_l1", "-o", out, "--overwrite")
    assert_one_line_error(code, err, "leads outside")
    assert tree(elsewhere) == [] and tree(out) == ["audio"]


def test_train_refuses_a_hostile_id_before_training(tmp_path, capsys):
    """train once wrote validation samples outside --run-dir for such an id: now the corpus is refused at listing."""
    from test_hostile import TINY

    victim = _victim(tmp_path)
    corpus = _corpus(tmp_path / "corpus", "../../../../victim/Y")
    sets = [*TINY, f"data.root={corpus}", "data.val_fraction=0.5", "train.max_steps=1"]
    code, _, err = cli(capsys, "train", REPO / "recipes" / "mini_ct.yaml",
                       *sum((["--set", s] for s in sets), []), "--run-dir", tmp_path / "run", "--quiet")
    assert_one_line_error(code, err, "utterance id", "../../../../victim/Y")
    assert victim.read_bytes() == b"precious" and tree(tmp_path / "victim") == ["Y.wav"]


def test_validation_samples_stay_inside_the_run_dir(tmp_path):
    """The validation writer confines its own paths too (a domain's ids need not come from list_utterances)."""
    from cmaudio.build import build_model
    from cmaudio.domains.wave import WaveDomain
    from test_hostile import _cfg

    cfg = _cfg()
    dom = WaveDomain.__new__(WaveDomain)
    dom.cfg = cfg
    dom._val_audio = [("../../escaped", torch.zeros(4096))]
    model = build_model(cfg, 0.087, "consistency")
    samples = tmp_path / "run" / "samples" / "step_1"
    with pytest.raises(DataError, match="utterance id"):
        dom.validate(model, cfg, 1, samples, None)
    assert [p for p in tree(tmp_path) if "escaped" in p] == []


def test_report_refuses_asset_paths_that_leave_its_directory(tmp_path):
    from cmaudio.report import write_report

    res = {"meta": {}, "settings": [{"name": "cm-1step", "nfe": 1, "per_utterance": {"u": {"mrstft": 1.0}},
                                     "audio": {"u": "../outside.wav"}}]}
    with pytest.raises(DataError, match="outside the report directory"):
        write_report(res, tmp_path / "rep")
    assert not (tmp_path / "rep").exists() or tree(tmp_path / "rep") == []
