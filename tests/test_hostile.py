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


# ----------------------------------------------------------------------------------------------
# 2. pruning never deletes fresh valid checkpoints; 6. temporaries cleaned
# ----------------------------------------------------------------------------------------------


def _save(run: Path, step: int, keep_last: int, warn=None) -> Path:
    w = {"w": torch.full((3,), float(step))}
    state = {"optimizer": {}, "scheduler": {}, "rng": {}, "step": step, "skipped": 0}
    return ckpt.save_checkpoint(run, step, model=w, emas={}, target={}, state=state, meta={"sigma_data": 0.1},
                                keep_last=keep_last, warn=warn)


def _break_meta(c: Path) -> None:
    (c / "meta.json").write_text("{not json")


def test_prune_counts_only_intact_checkpoints(tmp_path):
    for s in (4, 5, 6):
        _save(tmp_path, s, keep_last=3)
    for c in ckpt.list_checkpoints(tmp_path):
        _break_meta(c)  # every old checkpoint unreadable: a resume starts from scratch
    said: list[str] = []
    _save(tmp_path, 1, keep_last=2, warn=said.append)
    _save(tmp_path, 2, keep_last=2, warn=said.append)
    names = [c.name for c in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000001", "step_00000002", "step_00000004", "step_00000005", "step_00000006"]
    assert ckpt.checkpoint_problem(tmp_path / "checkpoints" / "step_00000001") is None
    # each broken one is reported, once, by name
    assert sorted(m.split()[1] for m in said) == ["step_00000004", "step_00000005", "step_00000006"]
    assert all("broken" in m and "keep_last" in m for m in said)
    _save(tmp_path, 3, keep_last=2, warn=said.append)
    assert [c.name for c in ckpt.list_checkpoints(tmp_path)][:2] == ["step_00000002", "step_00000003"]
    assert len(said) == 3
    # keep_last=1 keeps the newest intact checkpoint even when broken ones are newer
    _save(tmp_path, 3, keep_last=1)
    intact = [c.name for c in ckpt.list_checkpoints(tmp_path) if ckpt.checkpoint_problem(c) is None]
    assert intact == ["step_00000003"]


def test_temporaries_left_by_a_kill_are_removed(tmp_path):
    left = tmp_path / "checkpoints" / ".step_00000009.tmp"
    left.mkdir(parents=True)
    (left / "model.safetensors").write_bytes(b"half")
    _save(tmp_path, 1, keep_last=3)
    assert tree(tmp_path / "checkpoints") == [p for p in tree(tmp_path / "checkpoints") if not p.startswith(".")]
    assert not left.exists()


TINY = [f"data.root={REPO / 'egs/mini/data/ljspeech_mini'}", "model.size=tiny", "data.segment_length=2048",
        "train.batch_size=2", "train.val_every=1000", "train.log_every=1", "train.warmup_steps=2",
        "model.sigma_data=0.087", "objective.total_steps=8"]


def _cfg(*extra: str):
    from cmaudio.config import load

    return load(REPO / "recipes" / "mini_ct.yaml", [*TINY, *extra])


def test_resume_over_broken_checkpoints_keeps_the_new_run(tmp_path):
    from cmaudio.train import train

    train(_cfg("train.max_steps=4", "train.ckpt_every=1", "train.keep_last=2"), tmp_path, progress=False)
    assert [c.name for c in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    for c in ckpt.list_checkpoints(tmp_path):
        _break_meta(c)
    said: list[str] = []
    res = train(_cfg("train.max_steps=2", "train.ckpt_every=1", "train.keep_last=1"), tmp_path, resume=True,
                progress=False, log=said.append)
    assert res.step == 2
    assert any("starting from scratch" in m for m in said)
    assert any("step_00000003" in m and "broken" in m for m in said)
    c, state = ckpt.latest_resumable(tmp_path)
    assert c.name == "step_00000002" and state["step"] == 2  # the new run's work survived


def test_state_pt_that_does_not_load_falls_back_to_the_previous_checkpoint(tmp_path):
    from cmaudio.train import train

    train(_cfg("train.max_steps=2", "train.ckpt_every=1", "train.keep_last=5"), tmp_path, progress=False)
    newest = ckpt.list_checkpoints(tmp_path)[-1]
    torch.save({"optimizer": Path("x")}, newest / "state.pt")  # a pickle weights_only refuses
    meta = json.loads((newest / "meta.json").read_text())
    meta["files"]["state.pt"] = ckpt.sha256_file(newest / "state.pt")  # checksums match: "intact"
    (newest / "meta.json").write_text(json.dumps(meta))
    assert ckpt.checkpoint_problem(newest) is None
    said: list[str] = []
    res = train(_cfg("train.max_steps=3", "train.ckpt_every=1", "train.keep_last=5"), tmp_path, resume=True,
                progress=False, log=said.append)
    assert res.step == 3
    assert any("skipping checkpoint step_00000002" in m and "state.pt" in m for m in said)
    assert any("resumed from" in m and "step_00000001" in m for m in said)


# ----------------------------------------------------------------------------------------------
# 3. OS and user errors: one line, exit 2, before training starts
# ----------------------------------------------------------------------------------------------


def _train_cli(capsys, run_dir: Path, *extra: str) -> tuple[int, str]:
    sets = sum((["--set", s] for s in [*TINY, "train.max_steps=2", "train.ckpt_every=1"]), [])
    code, _, err = cli(capsys, "train", REPO / "recipes" / "mini_ct.yaml", *sets, "--run-dir", run_dir, "--quiet", *extra)
    return code, err


def test_read_only_checkpoints_dir_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import tempfile

    import cmaudio.train as tr

    (tmp_path / "checkpoints").mkdir()
    real = tempfile.TemporaryFile

    def read_only(*a, dir=None, **k):  # what a read-only checkpoints/ gives (root ignores chmod)
        if dir is not None and Path(dir).name == "checkpoints":
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(tr, "make_domain", lambda *a, **k: pytest.fail("training started"))
    code, err = _train_cli(capsys, tmp_path, "--resume")
    assert_one_line_error(code, err, "cannot write to", "checkpoints", "Permission denied")


def test_run_dir_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = _train_cli(capsys, tmp_path / "f" / "run")
    assert_one_line_error(code, err, "cannot write to")
    code, err = _train_cli(capsys, tmp_path / "f")
    assert_one_line_error(code, err, "is a file")


def test_os_error_during_training_is_one_line(tmp_path, capsys, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "checkpoints"))

    monkeypatch.setattr(ckpt, "save_checkpoint", full)
    code, err = _train_cli(capsys, tmp_path / "run")
    assert_one_line_error(code, err, "No space left on device", "checkpoints")


def test_vocode_out_that_is_a_file_or_below_one(tmp_path, model_dir, capsys, monkeypatch):
    np.save(tmp_path / "m.npy", mel_array(10))
    (tmp_path / "file").write_text("x")
    _no_model_load(monkeypatch)
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / "file")
    assert_one_line_error(code, err, "is an existing file, not a directory")
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", model_dir, "-o", tmp_path / "file" / "sub")
    assert_one_line_error(code, err, "is a file")
    code, _, err = cli(capsys, "mel", LJ_WAV, "-o", tmp_path / "file" / "sub")
    assert_one_line_error(code, err, "is a file")
    code, _, err = cli(capsys, "export", tmp_path, "-o", tmp_path / "file")
    assert_one_line_error(code, err, "is an existing file")
    code, _, err = cli(capsys, "edit", "bwe", LJ_WAV, "-m", model_dir, "-o", tmp_path / "file" / "x.wav")
    assert_one_line_error(code, err, "file is an existing file, not a directory")
    assert (tmp_path / "file").read_text() == "x"


LJ_WAV = REPO / "egs" / "mini" / "data" / "ljspeech_mini" / "wavs" / "LJ001-0012.wav"


def _edited_model(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    info = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if "." in k:
            a, b = k.split(".")
            info["config"][a][b] = v
        else:
            info[k] = v
    (dst / "config.json").write_text(json.dumps(info))
    return dst


BAD_INFO = {
    "sigma_data_text": ({"sigma_data": "abc"}, "sigma_data must be a positive number"),
    "sigma_data_negative": ({"sigma_data": -1.0}, "sigma_data"),
    "sigma_data_nan": ({"sigma_data": float("nan")}, "sigma_data"),
    "config_list": ({"config": [1, 2]}, "config must be a mapping"),
    "config_value_type": ({"model.size": 3}, "model.size must be a string"),
    "kind_denoiser": ({"kind": "denoiser"}, "kind 'denoiser' does not match"),
    "n_mels": ({"n_mels": 100}, "n_mels is 100"),
    "sample_rate": ({"sample_rate": 24000}, "sample_rate is 24000"),
    "preset": ({"preset": "vocos"}, "preset is 'vocos'"),
    "default_sigmas_text": ({"default_sigmas": {"1": "abc"}}, "default_sigmas['1']"),
    "default_sigmas_increasing": ({"default_sigmas": {"2": [0.1, 1.0]}}, "strictly decreasing"),
    "default_sigmas_key": ({"default_sigmas": {"x": [1.0]}}, "default_sigmas['x']"),
    "default_sigmas_list": ({"default_sigmas": [1.0]}, "default_sigmas must map"),
}


@pytest.mark.parametrize("case", list(BAD_INFO))
def test_bad_values_in_config_json_are_one_line(tmp_path, model_dir, capsys, case):
    changes, needle = BAD_INFO[case]
    bad = _edited_model(model_dir, tmp_path / "bad", **changes)
    np.save(tmp_path / "m.npy", mel_array(10))
    code, _, err = cli(capsys, "vocode", tmp_path / "m.npy", "-m", bad, "-o", tmp_path / "out")
    assert_one_line_error(code, err, needle, "config.json")
    assert tree(tmp_path / "out") == []
    from cmaudio.vocoder import Vocoder

    with pytest.raises(CmaudioError):
        Vocoder.from_pretrained(bad)


def test_a_teacher_model_dir_still_loads_as_a_denoiser(tmp_path):
    from test_vocoder import tiny_vocoder as tiny_kind
    from cmaudio.vocoder import Vocoder

    tiny_kind("denoiser").save_pretrained(tmp_path / "t")  # config's objective recorded as dsm
    v = Vocoder.from_pretrained(tmp_path / "t")
    assert v.kind == "denoiser" and v.config.objective.kind == "dsm"
    assert Vocoder.from_pretrained().kind == "consistency"  # the shipped model passes the checks


# ----------------------------------------------------------------------------------------------
# 4. Vocoder.decode: one validation path
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voc():
    return tiny_vocoder()


def _mel3(b=2, frames=6):
    return torch.randn(b, 80, frames, generator=torch.Generator().manual_seed(0)) - 4.0


BAD_MELS = {
    "complex_3d": (lambda: _mel3().to(torch.complex64), "complex64"),
    "bool_3d": (lambda: _mel3() > -4, "torch.bool"),
    "complex_2d": (lambda: _mel3(1)[0].to(torch.complex64), "complex64"),
    "bool_numpy": (lambda: np.zeros((80, 6), dtype=bool), "bool"),
    "nan_3d": (lambda: _mel3().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), "NaN"),
    "inf_2d": (lambda: np.full((80, 6), np.inf, dtype=np.float32), "NaN or inf"),
    "empty_3d": (lambda: torch.zeros(0, 80, 6), "empty"),
    "ragged_arrays": (lambda: [np.zeros((80, 6), np.float32), np.zeros((80, 7), np.float32)], "ragged"),
    "ragged_tensors": (lambda: [torch.zeros(80, 6), torch.zeros(80, 7)], "ragged"),
    "ragged_lists": (lambda: [[0.0] * 6] * 80 + [[0.0] * 5], "ragged"),
    "strings": (lambda: np.array([["a"] * 6] * 80), "not a real number type"),
    "rank_4": (lambda: torch.zeros(1, 1, 80, 6), "4-D"),
    "wrong_n_mels_3d": (lambda: torch.zeros(2, 81, 6), "80 mel bins"),
}


@pytest.mark.parametrize("case", list(BAD_MELS))
def test_decode_refuses_bad_mels_naming_mel(voc, case):
    make, needle = BAD_MELS[case]
    with pytest.raises(CmaudioError, match="mel") as e:
        voc.decode(make())
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64, torch.int32])
@pytest.mark.parametrize("rank", [2, 3])
def test_decode_accepts_every_real_dtype_in_every_layout(voc, dtype, rank):
    mel = _mel3(1)
    ref = voc.decode(mel, generator=torch.Generator().manual_seed(1))
    x = mel.to(dtype)
    got = voc.decode(x if rank == 3 else x[0], generator=torch.Generator().manual_seed(1))
    want = voc.decode(x.to(torch.float32), generator=torch.Generator().manual_seed(1))
    assert got.shape == ref.shape and torch.equal(got, want)
    if rank == 2:  # time-first is detected for every dtype too
        assert torch.equal(voc.decode(x[0].T, generator=torch.Generator().manual_seed(1)), want)


BAD_ARGS = {
    "steps_float": (dict(steps=2.5), "steps must be a whole number"),
    "steps_bool": (dict(steps=True), "steps must be a whole number"),
    "steps_zero": (dict(steps=0), "steps must be >= 1"),
    "steps_text": (dict(steps="2"), "steps must be a whole number"),
    "sigmas_empty": (dict(sigmas=[]), "sigmas is empty"),
    "sigmas_increasing": (dict(sigmas=[0.3, 1.5]), "strictly decreasing"),
    "sigmas_equal": (dict(sigmas=[1.0, 1.0]), "strictly decreasing"),
    "sigmas_negative": (dict(sigmas=[-1.0]), "sigma_min"),
    "sigmas_zero": (dict(sigmas=[0.0]), "sigma_min"),
    "sigmas_nan": (dict(sigmas=[float("nan")]), "finite"),
    "sigmas_inf": (dict(sigmas=[float("inf")]), "finite"),
    "sigmas_above_max": (dict(sigmas=[80.0]), "sigma_max"),
    "sigmas_scalar": (dict(sigmas=1.0), "sigmas must be a list"),
    "sigmas_text": (dict(sigmas="abc"), "sigmas must be a list"),
    "sigmas_objects": (dict(sigmas=[None]), "sigmas must hold numbers"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_decode_refuses_bad_steps_and_sigmas(voc, case):
    kw, needle = BAD_ARGS[case]
    with pytest.raises(CmaudioError) as e:
        voc.decode(_mel3(1), **kw)
    assert needle in str(e.value)


def test_decode_teacher_sigmas_checked_too():
    from test_vocoder import tiny_vocoder as tiny_kind

    teacher = tiny_kind("denoiser")
    for bad in ([], [0.5, 1.0], [-1.0], [float("nan")]):
        with pytest.raises(CmaudioError, match="sigmas"):
            teacher.decode(_mel3(1), sigmas=bad)
    with pytest.raises(CmaudioError, match="steps"):
        teacher.decode(_mel3(1), steps=2.5)
    out = teacher.decode(_mel3(1), sigmas=np.array([2.0, 0.5, 0.0002]))
    assert torch.isfinite(out).all()


def test_decode_good_sigmas_in_any_container(voc):
    mel = _mel3(1)
    a = voc.decode(mel, sigmas=(1.5, 0.3), generator=torch.Generator().manual_seed(2))
    for s in ([1.5, 0.3], np.array([1.5, 0.3]), torch.tensor([1.5, 0.3], dtype=torch.float64)):
        assert torch.equal(voc.decode(mel, sigmas=s, generator=torch.Generator().manual_seed(2)), a)
    assert torch.equal(voc.decode(mel, steps=np.int64(1), generator=torch.Generator().manual_seed(2)),
                       voc.decode(mel, steps=1, generator=torch.Generator().manual_seed(2)))


# ----------------------------------------------------------------------------------------------
# 5. config values that cannot work are refused at load, naming the key
# ----------------------------------------------------------------------------------------------


BAD_SETS = {
    "lr_nan": ("train.lr=.nan", "train.lr must be a finite number"),
    "lr_negative": ("train.lr=-1.0e-4", "train.lr must be > 0"),
    "lr_zero": ("train.lr=0", "train.lr must be > 0"),
    "beta_one": ("train.betas=[0.9, 1.0]", "train.betas[1] must be in [0, 1)"),
    "beta_negative": ("train.betas=[-0.1, 0.99]", "train.betas[0]"),
    "beta_nan": ("train.betas=[.nan, 0.99]", "train.betas[0] must be a finite number"),
    "num_workers": ("data.num_workers=-1", "data.num_workers must be >= 0"),
    "sigma_max_inf": ("model.sigma_max=.inf", "model.sigma_max must be a finite number"),
    "sigma_data_inf": ("model.sigma_data=.inf", "model.sigma_data must be a finite number"),
    "distance_negative": ("objective.distance={pseudo_huber: -1.0}", "objective.distance.pseudo_huber must be a weight >= 0"),
    "distance_nan": ("objective.distance={pseudo_huber: .nan}", "objective.distance['pseudo_huber'] must be a finite"),
    "distance_all_zero": ("objective.distance={pseudo_huber: 0.0}", "all 0"),
    "weight_decay": ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
    "grad_clip": ("train.grad_clip=-1", "train.grad_clip must be >= 0"),
    "dropout": ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    "sampling_sigmas_inf": ("sampling.sigmas={1: [.inf]}", "sampling.sigmas[1] must be a finite number"),
    "sampling_sigmas_negative": ("sampling.sigmas={2: [1.0, -1.0]}", "sampling.sigmas[2] must be positive"),
}


@pytest.mark.parametrize("case", list(BAD_SETS))
def test_config_values_that_cannot_work_are_refused(case, capsys):
    from cmaudio.config import load
    from cmaudio.errors import ConfigError

    override, needle = BAD_SETS[case]
    with pytest.raises(ConfigError) as e:
        load(REPO / "recipes" / "mini_ct.yaml", [override])
    assert needle in str(e.value) and "\n" not in str(e.value)
    code, _, err = cli(capsys, "config", "show", REPO / "recipes" / "mini_ct.yaml", "--set", override)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("value", ["42", "{a: 1}", "[1, 2]", "true"])
def test_extends_must_name_recipes(tmp_path, capsys, value):
    r = tmp_path / "r.yaml"
    r.write_text(f"extends: {value}\ntrain:\n  max_steps: 3\n")
    code, _, err = cli(capsys, "config", "show", r)
    assert_one_line_error(code, err, "extends must be a recipe path", "r.yaml")


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys):
    from cmaudio.config import load

    r = tmp_path / "r.yaml"
    r.write_text("train:\n  lr: 1.0e-4\n  max_steps: 3\n  lr: 2.0e-4\n")
    code, _, err = cli(capsys, "config", "show", r)
    assert_one_line_error(code, err, "r.yaml", "'lr' is given twice", "lines 2 and 4")
    r.write_text("train: {max_steps: 3}\nmodel: {size: tiny}\ntrain: {lr: 1.0e-4}\n")
    code, _, err = cli(capsys, "config", "show", r)
    assert_one_line_error(code, err, "'train' is given twice")
    r.write_text("train: {lr: 1.0e-4, lr: 2.0e-4}\n")  # twice on one line
    code, _, err = cli(capsys, "config", "show", r)
    assert_one_line_error(code, err, "'lr' is given twice")
    r.write_text("extends: " + str(REPO / "recipes" / "mini_ct.yaml") + "\ntrain:\n  lr: 1.0e-4\n")
    assert load(r).train.lr == 1.0e-4  # a child overriding its parent is not a duplicate


def test_every_shipped_recipe_still_loads():
    from cmaudio.config import load

    for r in sorted((REPO / "recipes").glob("*.yaml")):
        load(r)


# ----------------------------------------------------------------------------------------------
# 6. the smaller items
# ----------------------------------------------------------------------------------------------


def test_npy_errors_name_the_path_once(tmp_path, model_dir, capsys):
    np.save(tmp_path / "t.npy", mel_array(10))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "w.npy", mel_array(10, n_mels=81))
    for bad, needle in [("t.npy", "truncated"), ("w.npy", "mel bins")]:
        code, _, err = cli(capsys, "vocode", tmp_path / bad, "-m", model_dir, "-o", tmp_path / "out")
        line = assert_one_line_error(code, err, needle)
        assert line.count(str(tmp_path / bad)) == 1, line
    from cmaudio.mel import MelDecoder

    dec = MelDecoder.new("hifigan", size="tiny", prior="cond", mel_mean=torch.zeros(80) - 4, mel_std=torch.ones(80),
                         sigma_data=0.5)
    dec.save_pretrained(tmp_path / "dec")
    np.save(tmp_path / "c.npy", mel_array(10, n_mels=81))
    for bad, needle in [("t.npy", "truncated"), ("c.npy", "cond")]:
        code, _, err = cli(capsys, "mel-decode", tmp_path / bad, "-m", tmp_path / "dec", "-o", tmp_path / "out")
        line = assert_one_line_error(code, err, needle)
        assert line.count(str(tmp_path / bad)) == 1, line


def test_truncated_wav_and_absurd_mel_warn(tmp_path, model_dir, capsys):
    wav = speech_wav(tmp_path / "cut.wav", 0.5)
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) // 2])  # the header still declares the whole length
    np.save(tmp_path / "huge.npy", np.full((80, 10), 1e30, dtype=np.float32))
    np.save(tmp_path / "fine.npy", mel_array(10))
    code, _, err = cli(capsys, "vocode", wav, tmp_path / "huge.npy", tmp_path / "fine.npy", "-m", model_dir,
                       "-o", tmp_path / "out")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, err
    assert "cut.wav" in warnings[0] and "truncated" in warnings[0]
    assert "huge.npy" in warnings[1] and "1e+30" in warnings[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cut.wav", "fine.wav", "huge.wav"]
    # an intact wav and an ordinary mel warn about nothing
    code, _, err = cli(capsys, "vocode", speech_wav(tmp_path / "ok.wav", 0.3), tmp_path / "fine.npy", "-m", model_dir,
                       "-o", tmp_path / "out2")
    assert code == 0 and "warning" not in err, err
    from cmaudio.data.audio import wav_truncation

    assert wav_truncation(tmp_path / "ok.wav") is None and "truncated" in wav_truncation(wav)


def _loud_float_wav(path: Path) -> tuple[Path, np.ndarray]:
    t = np.arange(24000) / 24000
    a = (1.6 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # float audio with peaks above 1
    sf.write(str(path), a, 24000, subtype="FLOAT")
    return path, a


def test_only_stacks_that_clip_see_clipped_audio(tmp_path, capsys):
    from cmaudio.features import MelSpectrogram, get_preset

    wav, a = _loud_float_wav(tmp_path / "loud.wav")
    code, _, err = cli(capsys, "mel", wav, "-o", tmp_path / "vocos", "--preset", "vocos")
    assert code == 0, err
    got = np.load(tmp_path / "vocos" / "loud.npy")
    ref = MelSpectrogram("vocos")(torch.from_numpy(a))[0].numpy()  # Vocos analyses the float audio as is
    np.testing.assert_allclose(got, ref, atol=1e-5)
    clipped = MelSpectrogram("vocos")(torch.from_numpy(np.clip(a, -1, 1)))[0].numpy()
    assert np.abs(got - clipped).max() > 0.1
    # DiffWave's preprocess clamps to [-1, 1] first: so does its preset
    assert get_preset("diffwave").clip_audio and not get_preset("hifigan").clip_audio
    code, _, err = cli(capsys, "mel", wav, "-o", tmp_path / "dw", "--preset", "diffwave")
    assert code == 0, err
    from cmaudio.data import load_audio

    x = load_audio(wav, 22050, clip=False)
    assert np.abs(x).max() > 1.2
    want = MelSpectrogram("diffwave")(torch.from_numpy(np.clip(x, -1, 1)))[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "dw" / "loud.npy"), want, atol=1e-5)


def test_vocoder_mel_clips_only_for_clipping_presets():
    from cmaudio.build import build_model
    from cmaudio.config import Config, replace
    from cmaudio.features import MelSpectrogram
    from cmaudio.vocoder import Vocoder

    a = torch.from_numpy((1.6 * np.sin(2 * np.pi * 220 * np.arange(8192) / 22050)).astype(np.float32))
    for preset, clips in (("hifigan", False), ("diffwave", True)):
        cfg = replace(Config(), model={"size": "tiny", "sigma_data": 0.087}, features={"preset": preset})
        v = Vocoder.from_config(build_model(cfg, 0.087, "consistency"), cfg)
        want = MelSpectrogram(preset)(a.clamp(-1, 1) if clips else a)
        assert torch.allclose(v.mel(a), want, atol=1e-6)


def test_the_same_input_twice_is_vocoded_once(tmp_path, model_dir, capsys):
    np.save(tmp_path / "a.npy", mel_array(10))
    code, out, err = cli(capsys, "vocode", tmp_path / "a.npy", tmp_path / "a.npy", tmp_path, "-m", model_dir,
                         "-o", tmp_path / "out")
    assert code == 0, err
    assert "wrote 1 wav file(s)" in out and tree(tmp_path / "out") == ["a.wav"]
