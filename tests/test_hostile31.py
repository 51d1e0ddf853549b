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
from test_cli_inference import (assert_one_line_error, cli, mel_array, run_dir, speech_wav,  # noqa: F401 (run_dir: a fixture)
                                tiny_vocoder, tree)

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
    dom._val_nmos = False
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


# ----------------------------------------------------------------------------------------------
# 4. outputs are created exclusively
# ----------------------------------------------------------------------------------------------


def test_atomic_writes_never_replace_an_existing_name_without_overwrite(tmp_path):
    from cmaudio.io import write_bytes_atomic

    f = tmp_path / "a.bin"
    write_bytes_atomic(f, b"first")
    with pytest.raises(DataError, match="already exists"):
        write_bytes_atomic(f, b"second")
    assert f.read_bytes() == b"first"
    dangling = tmp_path / "link.bin"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(DataError, match="already exists"):
        write_bytes_atomic(dangling, b"x")
    assert not (tmp_path / "nowhere").exists() and os.readlink(dangling) == str(tmp_path / "nowhere")
    write_bytes_atomic(f, b"second", overwrite=True)
    write_bytes_atomic(dangling, b"y", overwrite=True)  # the link itself is replaced, never followed
    assert f.read_bytes() == b"second" and not dangling.is_symlink() and dangling.read_bytes() == b"y"
    assert not (tmp_path / "nowhere").exists()
    assert tree(tmp_path) == ["a.bin", "link.bin"]  # no temporaries


def test_a_name_created_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    """The race of two runs: the name appears after the early check, while the temporary is being written."""
    import cmaudio.io as cio

    f = tmp_path / "a.wav"
    with pytest.raises(DataError, match="already exists"):
        with cio.atomic_path(f, suffix=".wav") as tmp:
            tmp.write_bytes(b"second run")
            f.write_bytes(b"first run")  # the other run finished first
    assert f.read_bytes() == b"first run" and tree(tmp_path) == ["a.wav"]
    monkeypatch.setattr(cio.os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(1, "Operation not permitted")))
    with pytest.raises(DataError, match="already exists"):  # a file system without hard links: still exclusive
        with cio.atomic_path(f) as tmp:
            tmp.write_bytes(b"third run")
    assert f.read_bytes() == b"first run" and tree(tmp_path) == ["a.wav"]
    cio.write_bytes_atomic(tmp_path / "b.bin", b"ok")
    assert (tmp_path / "b.bin").read_bytes() == b"ok" and tree(tmp_path) == ["a.wav", "b.bin"]


def test_concurrent_vocode_runs_do_not_replace_each_other(tmp_path, model_dir, capsys, monkeypatch):
    from cmaudio.vocoder import Vocoder

    np.save(tmp_path / "m.npy", mel_array(8))
    out = tmp_path / "out"
    real = Vocoder.decode

    def other_run_finishes_first(self, *a, **k):
        out.mkdir(exist_ok=True)
        (out / "m.wav").write_bytes(b"the other run's output")
        return real(self, *a, **k)

    monkeypatch.setattr(Vocoder, "decode", other_run_finishes_first)
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, "m.wav", "already exists")
    assert (out / "m.wav").read_bytes() == b"the other run's output" and tree(out) == ["m.wav"]


def test_a_dangling_symlink_output_is_an_existing_name(tmp_path, model_dir, capsys):
    np.save(tmp_path / "m.npy", mel_array(8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.wav").symlink_to(tmp_path / "target.wav")
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", out)
    assert_one_line_error(code, err, "m.wav", "already exists", "--overwrite")
    assert (out / "m.wav").is_symlink() and not (tmp_path / "target.wav").exists()
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", out, "--overwrite")
    assert code == 0, err
    assert not (out / "m.wav").is_symlink() and not (tmp_path / "target.wav").exists()


def test_save_pretrained_and_report_refuse_existing_files(tmp_path, model_dir):
    from cmaudio.vocoder import Vocoder

    voc = Vocoder.from_pretrained(model_dir)
    d = tmp_path / "m"
    voc.save_pretrained(d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(DataError, match="already exists"):
        voc.save_pretrained(d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    voc.save_pretrained(d, overwrite=True)
    Vocoder.from_pretrained(d)


# ----------------------------------------------------------------------------------------------
# 2. a model directory's config is sealed and checked against its weights before anything large is built
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile31_framenet") / "tiny"
    tiny_vocoder(net="framenet").save_pretrained(d)
    return d


def _edit_config(src: Path, dst: Path, *, reseal: bool = False, unseal: bool = False, **model) -> Path:
    """A copy of model dir `src` whose config.json has model.<key> = value (hand-edited: the digest left
    stale, or removed as a directory written before the digest, or recomputed as someone covering the edit)."""
    import json

    from cmaudio import checkpoint as ckpt

    shutil.copytree(src, dst)
    rec = json.loads((dst / "config.json").read_text())
    rec["config"]["model"].update(model)
    if unseal:
        del rec[ckpt.CONFIG_DIGEST]
    text = ckpt.dump_record(rec) if reseal else json.dumps(rec)
    (dst / "config.json").write_text(text)
    return dst


@pytest.mark.parametrize("key,value", [("frame_dim", 2_000_000), ("frame_layers", 1_000_000), ("frame_n_fft", 1 << 30)])
def test_absurd_sizes_in_config_json_are_refused(tmp_path, frame_model, capsys, key, value):
    """frame_dim 2000000 once made vocode allocate 24 GB until the kernel killed it (exit 137, no message)."""
    bad = _edit_config(frame_model, tmp_path / "bad", reseal=True, **{key: value})
    np.save(tmp_path / "m.npy", mel_array(8))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", bad, "-o", tmp_path / "out")
    assert_one_line_error(code, err, f"model.{key}", "config.json")
    assert tree(tmp_path / "out") == []


@pytest.mark.parametrize("src,change", [("frame", {"frame_dim": 512}), ("frame", {"frame_layers": 7}),
                                        ("unet", {"channels": [64, 128, 256, 512]})])
def test_sizes_that_do_not_match_the_weights_are_refused_before_building(tmp_path, frame_model, model_dir, capsys,
                                                                         monkeypatch, src, change):
    """Plausible sizes that disagree with the weights (a directory without a digest, or one resealed by hand):
    refused from a meta-device build, so no full-size network is ever allocated."""
    import cmaudio.vocoder as vocmod

    built_on = []
    real = vocmod.build_generator

    def recording(spec):
        built_on.append(torch.empty(0).device.type)  # the default device: meta inside the shape check
        return real(spec)

    monkeypatch.setattr(vocmod, "build_generator", recording)
    base = frame_model if src == "frame" else model_dir
    for i, kw in enumerate(({"unseal": True}, {"reseal": True})):
        bad = _edit_config(base, tmp_path / f"bad{i}", **kw, **change)
        np.save(tmp_path / "m.npy", mel_array(8))
        code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", bad, "-o", tmp_path / "out")
        assert_one_line_error(code, err, "does not match this network", "model.safetensors")
    assert built_on and set(built_on) == {"meta"}
    assert tree(tmp_path / "out") == []


def test_config_json_is_covered_by_its_digest(tmp_path, model_dir, capsys):
    from cmaudio.errors import CheckpointError
    from cmaudio.vocoder import DEFAULT_MODEL_DIR, Vocoder

    edited = _edit_config(model_dir, tmp_path / "edited", rho=5.0)  # valid, same shapes, but not what was exported
    with pytest.raises(CheckpointError, match="config_sha256"):
        Vocoder.from_pretrained(edited)
    assert Vocoder.from_pretrained(_edit_config(model_dir, tmp_path / "old", unseal=True)).kind == "consistency"
    Vocoder.from_pretrained(DEFAULT_MODEL_DIR)  # the shipped model is sealed and loads
    import json

    from cmaudio import checkpoint as ckpt

    rec = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert rec[ckpt.CONFIG_DIGEST] == ckpt.record_digest(rec)


# ----------------------------------------------------------------------------------------------
# 3. non-finite weights are refused at load; non-finite audio is never written
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_at_load(tmp_path, model_dir, capsys, value):
    """Such a model vocoded every mel to full-scale -32768 with exit status 0."""
    from cmaudio import checkpoint as ckpt

    info, weights = ckpt.load_model_dir(model_dir)
    name = sorted(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)[0]
    weights[name].view(-1)[1] = value
    bad = tmp_path / "bad"
    ckpt.save_model_dir(bad, weights=weights, info=info)  # checksums match: only the values are wrong
    np.save(tmp_path / "m.npy", mel_array(8))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", bad, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "NaN or inf", repr(name), "model.safetensors")
    assert tree(tmp_path / "out") == []


def test_non_finite_audio_is_an_error_not_a_file(tmp_path, model_dir, capsys, monkeypatch):
    import cmaudio.vocoder as vocmod
    from cmaudio.io import write_wav_atomic

    with pytest.raises(DataError, match="NaN or inf"):
        write_wav_atomic(tmp_path / "x.wav", np.array([0.0, np.nan, 0.5], dtype=np.float32), 22050)
    assert tree(tmp_path) == []
    monkeypatch.setattr(vocmod, "consistency_sample", lambda fn, shape, **k: torch.full(shape, float("nan")))
    np.save(tmp_path / "m.npy", mel_array(8))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "non-finite audio")
    assert tree(tmp_path / "out") == []


# ----------------------------------------------------------------------------------------------
# 6. no leftovers: temporaries are removed on signals, and stale ones of a dead process later
# ----------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_a_dead_process_are_removed_by_the_next_write(tmp_path):
    """A killed export left hidden temporaries up to the model's size that no later export removed."""
    import cmaudio.io as cio

    host = cio._HOST
    stale = tmp_path / f".model.safetensors.cmtmp{_dead_pid()}@{host}.ab12cd.safetensors.tmp"
    live = tmp_path / f".model.safetensors.cmtmp{os.getpid()}@{host}.ef34gh.safetensors.tmp"  # in flight here
    other_host = tmp_path / f".config.json.cmtmp{_dead_pid()}@{'0' * 8 if host != '0' * 8 else '1' * 8}.x.tmp"
    mine = tmp_path / ".notes.txt.tmp"  # a user's file that merely looks hidden and temporary
    for p in (stale, live, other_host, mine):
        p.write_bytes(b"x" * 100)
    cio.write_text_atomic(tmp_path / "config.json", "{}")
    assert not stale.exists()
    assert live.exists() and other_host.exists() and mine.exists()
    assert (tmp_path / "config.json").read_text() == "{}"


def test_export_into_a_directory_a_killed_export_left_cleans_it(tmp_path, monkeypatch):
    """The temporaries are named so that the export's own atomic writes recognise and remove them."""
    import cmaudio.io as cio
    from cmaudio import checkpoint as ckpt
    from cmaudio.vocoder import Vocoder

    d = tmp_path / "m"
    d.mkdir()
    stale = d / f".model.safetensors.cmtmp{_dead_pid()}@{cio._HOST}.zz99.safetensors.tmp"
    stale.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(cio, "_SWEPT", set())
    tiny_vocoder().save_pretrained(d)
    assert tree(d) == [ckpt.CONFIG_FILE, ckpt.MODEL_FILE]
    Vocoder.from_pretrained(d)


SIGTERM_DURING_WRITE = r"""
import os, signal, sys
import soundfile
import cmaudio.cli as cli
real = soundfile.write
def slow_write(path, *a, **k):
    open(path, "wb").close()  # what libsndfile has made when the signal comes: an empty temporary
    os.kill(os.getpid(), signal.SIGTERM)
    real(path, *a, **k)
soundfile.write = slow_write
cli.main(sys.argv[1:])
"""


def test_sigterm_during_a_wav_write_leaves_no_temporary(tmp_path, model_dir):
    """SIGTERM during a wav write once left a 0-byte temporary; now the CLI unwinds, removes it, says so."""
    import subprocess
    import sys

    np.save(tmp_path / "m.npy", mel_array(8))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", SIGTERM_DURING_WRITE, "vocode", str(tmp_path / "m.npy"), "-m",
                          str(model_dir), "-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 143, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["error: terminated (SIGTERM); partial outputs were removed"], res.stderr
    assert tree(out) == []  # neither m.wav nor a hidden temporary


# ----------------------------------------------------------------------------------------------
# 5. ordinary conditions are one line, exit 2, nothing half-written
# ----------------------------------------------------------------------------------------------


def _enospc(*a, **k):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("how", ["oserror", "libsndfile"])
def test_disk_full_during_vocode_is_one_line(tmp_path, model_dir, capsys, monkeypatch, how):
    import soundfile

    def half_then_full(path, *a, **k):
        Path(path).write_bytes(b"RIFF")  # part of the file reached the disk
        if how == "oserror":
            _enospc()
        raise soundfile.LibsndfileError(2, prefix="Error writing: ")  # what libsndfile says on a write failure

    np.save(tmp_path / "m.npy", mel_array(8))
    monkeypatch.setattr(soundfile, "write", half_then_full)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", out)
    line = assert_one_line_error(code, err, "m.wav")
    assert "internal error" not in line
    assert not out.exists()  # no half file, no temporary, not even the directory the write made


@pytest.mark.parametrize("how", ["oserror", "safetensors"])
def test_disk_full_during_export_leaves_no_model_directory(run_dir, tmp_path, capsys, monkeypatch, how):
    from safetensors import SafetensorError

    from cmaudio import checkpoint as ckpt

    def half_then_full(tensors, path, *a, **k):
        Path(path).write_bytes(b"\0" * 1000)
        if how == "oserror":
            _enospc()
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(ckpt, "save_file", half_then_full)
    out = tmp_path / "nested" / "model"
    code, _, err = cli(capsys, "export", run_dir, "-o", out)
    line = assert_one_line_error(code, err, "model.safetensors")
    assert "internal error" not in line
    assert not (tmp_path / "nested").exists()
    # the config write failing after the weights were placed: the half model directory goes too
    monkeypatch.undo()
    monkeypatch.setattr(ckpt, "write_text_atomic", _enospc)
    code, _, err = cli(capsys, "export", run_dir, "-o", out)
    assert_one_line_error(code, err, "No space left on device")
    assert not out.exists()


def test_a_npy_header_claiming_terabytes_is_refused_before_allocating(tmp_path, model_dir, capsys, monkeypatch):
    from numpy.lib import format as npf

    from cmaudio.io import load_npy

    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:  # 80 x 10^11 float32 frames: 29 TiB claimed, 1 KiB present
        npf.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (80, 100_000_000_000)})
        f.write(b"\0" * 1024)
    real_empty = np.empty

    def no_big_alloc(shape, *a, **k):
        assert np.prod(shape) < 1e9, "allocated from the header"
        return real_empty(shape, *a, **k)

    monkeypatch.setattr(np, "empty", no_big_alloc)
    with pytest.raises(DataError, match="header claims shape"):
        load_npy(huge)
    code, _, err = cli(capsys, "vocode", huge, "-m", model_dir, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "huge.npy", "header claims shape", "truncated or corrupt")
    assert tree(tmp_path / "out") == []


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path, capsys):
    r = tmp_path / "r.yaml"
    r.write_bytes("train:\n  max_steps: 2\n# caf\xe9\n".encode("latin-1"))
    code, _, err = cli(capsys, "config", "show", r)
    assert_one_line_error(code, err, "r.yaml", "not UTF-8", "line 3")
    code, _, err = cli(capsys, "train", r, "--run-dir", tmp_path / "run")
    assert_one_line_error(code, err, "not UTF-8")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", [2**64, 2**100, -1])
def test_a_seed_beyond_64_bits_is_one_line(tmp_path, model_dir, capsys, seed):
    np.save(tmp_path / "m.npy", mel_array(8))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / "out", "--seed", seed)
    assert_one_line_error(code, err, "--seed", str(seed))
    assert tree(tmp_path / "out") == []
    speech_wav(tmp_path / "in.wav", 0.3)
    code, _, err = cli(capsys, "edit", "inpaint", tmp_path / "in.wav", "--gap", "0.1:0.15", "-m", model_dir,
                       "-o", tmp_path / "o.wav", "--seed", seed)
    assert_one_line_error(code, err, "--seed")
    code, _, err = cli(capsys, "config", "show", REPO / "recipes" / "mini_ct.yaml", "--set", f"train.seed={seed}")
    assert_one_line_error(code, err, "train.seed")
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / "out", "--seed",
                       2**63 - 1)
    assert code == 0, err


# ----------------------------------------------------------------------------------------------
# 8. messages name the file
# ----------------------------------------------------------------------------------------------


def test_a_too_short_recording_is_named(tmp_path, model_dir, capsys):
    import soundfile as sf

    speech_wav(tmp_path / "good.wav", 0.3)
    sf.write(str(tmp_path / "tiny.wav"), np.full(100, 0.1, dtype=np.float32), 22050)
    code, _, err = cli(capsys, "mel", tmp_path / "good.wav", tmp_path / "tiny.wav", "-o", tmp_path / "mels")
    assert_one_line_error(code, err, "tiny.wav", "too short")
    assert tree(tmp_path / "mels") == []
    code, _, err = cli(capsys, "vocode", tmp_path / "tiny.wav", "-m", model_dir, "-o", tmp_path / "out")
    line = assert_one_line_error(code, err, "tiny.wav", "too short")
    assert line.count("tiny.wav") == 1
