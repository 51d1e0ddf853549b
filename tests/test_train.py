"""The training loop: CLI runs of each objective, exact resume, atomic checkpoints, DDP, robustness."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmaudio import checkpoint as ckpt
from cmaudio.cli import main as cli_main
from cmaudio.config import load, replace
from cmaudio.errors import CheckpointError, ConfigError
from cmaudio.train import TrainingError, train

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "egs/mini/data/ljspeech_mini")

TINY = [
    f"data.root={DATA}",
    "model.size=tiny",
    "data.segment_length=2048",
    "train.batch_size=2",
    "train.val_every=1000",
    "train.log_every=1",
    "train.warmup_steps=2",
    "model.sigma_data=0.087",
]


def tiny_cfg(recipe: str, *extra: str):
    return load(ROOT / "recipes" / recipe, [*TINY, *extra])


def run_cli(*args: str) -> int:
    try:
        cli_main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def weights(run_dir: Path, name: str = ckpt.MODEL_FILE) -> dict:
    return ckpt.load_weights(ckpt.latest_valid(run_dir) / name)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    code = run_cli("train", str(ROOT / "recipes/mini_teacher.yaml"), *sum((["--set", s] for s in TINY), []),
                   "--set", "train.max_steps=2", "--set", "train.ckpt_every=2", "--run-dir", str(d), "--quiet")
    assert code == 0
    return d


@pytest.mark.parametrize("recipe", ["mini_ct.yaml", "mini_cd.yaml", "mini_teacher.yaml"])
def test_each_objective_trains_through_the_cli(recipe, tmp_path, teacher_run, capsys):
    extra = ["--set", f"objective.teacher={teacher_run}"] if recipe == "mini_cd.yaml" else []
    if recipe == "mini_ct.yaml":
        extra += ["--set", "objective.kind=ct", "--set", "objective.s0=2", "--set", "objective.s1=20"]
    code = run_cli("train", str(ROOT / "recipes" / recipe), *sum((["--set", s] for s in TINY), []),
                   "--set", "train.max_steps=3", "--set", "train.ckpt_every=3", "--set", "train.val_every=3",
                   "--run-dir", str(tmp_path / "run"), "--quiet", *extra)
    assert code == 0, capsys.readouterr().err
    c = ckpt.latest_valid(tmp_path / "run")
    assert c is not None and c.name == "step_00000003"
    meta = ckpt.read_meta(c)
    assert meta["step"] == 3 and meta["config"]["model"]["sigma_data"] == 0.087
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard events
    samples = list((tmp_path / "run" / "samples").rglob("*.png"))
    assert samples and list((tmp_path / "run" / "samples").rglob("*.wav"))
    assert "done: 3 steps" in capsys.readouterr().err


def test_resume_is_bit_exact(tmp_path):
    # total_steps fixed so the iCT curriculum does not depend on max_steps
    base = ["objective.total_steps=8", "train.ckpt_every=3", "model.dropout=0.1"]
    straight = train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=6"), tmp_path / "a", progress=False)
    train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=3"), tmp_path / "b", progress=False)
    resumed = train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=6"), tmp_path / "b", resume=True, progress=False)
    assert straight.step == resumed.step == 6
    for name in (ckpt.MODEL_FILE, ckpt.ema_file(0.999)):
        a, b = weights(tmp_path / "a", name), weights(tmp_path / "b", name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    sa = ckpt.load_training_state(ckpt.latest_valid(tmp_path / "a"))
    sb = ckpt.load_training_state(ckpt.latest_valid(tmp_path / "b"))
    assert torch.equal(sa["rng"]["cpu"], sb["rng"]["cpu"])


def test_resume_with_ema_target_is_bit_exact(tmp_path, teacher_run):
    base = ["train.ckpt_every=2", f"objective.teacher={teacher_run}"]
    train(tiny_cfg("mini_cd.yaml", *base, "train.max_steps=4"), tmp_path / "a", progress=False)
    train(tiny_cfg("mini_cd.yaml", *base, "train.max_steps=2"), tmp_path / "b", progress=False)
    train(tiny_cfg("mini_cd.yaml", *base, "train.max_steps=4"), tmp_path / "b", resume=True, progress=False)
    for name in (ckpt.MODEL_FILE, "target.safetensors"):
        a, b = weights(tmp_path / "a", name), weights(tmp_path / "b", name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_cut_short_falls_back_to_previous(tmp_path):
    cfg = tiny_cfg("mini_ct.yaml", "train.max_steps=4", "train.ckpt_every=2", "train.keep_last=5")
    train(cfg, tmp_path, progress=False)
    steps = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in steps] == ["step_00000002", "step_00000004"]
    newest = steps[-1] / ckpt.MODEL_FILE
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # the write was cut short
    warnings = []
    assert ckpt.latest_valid(tmp_path, warn=warnings.append) == steps[0]
    assert "step_00000004" in warnings[0] and "checksum" in warnings[0]
    # a temp dir left by a crash before the rename is never taken for a checkpoint
    (tmp_path / "checkpoints" / ".step_00000006.tmp").mkdir()
    res = train(replace(cfg, train={"max_steps": 4}), tmp_path, resume=True, progress=False)
    assert res.step == 4  # resumed from step 2 and trained 2 more
    # a checkpoint without meta.json (killed before the last file) is skipped too
    (steps[0] / "meta.json").unlink()
    assert ckpt.checkpoint_problem(steps[0]) is not None


def test_resume_with_another_network_shape_fails_clearly(tmp_path, capsys):
    train(tiny_cfg("mini_ct.yaml", "train.max_steps=1", "train.ckpt_every=1"), tmp_path, progress=False)
    capsys.readouterr()
    with pytest.raises(CheckpointError, match="model.size"):
        train(tiny_cfg("mini_ct.yaml", "train.max_steps=2", "model.size=small"), tmp_path, resume=True, progress=False)
    code = run_cli("train", str(ROOT / "recipes/mini_ct.yaml"), *sum((["--set", s] for s in TINY), []),
                   "--set", "model.size=small", "--set", "train.max_steps=2", "--run-dir", str(tmp_path), "--resume")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: cannot resume") and "Traceback" not in err
    # starting over in a run dir that has checkpoints, without --resume, is refused
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_cfg("mini_ct.yaml", "train.max_steps=1"), tmp_path, progress=False)


def test_nonfinite_steps_are_skipped_then_stop_with_a_checkpoint(tmp_path, monkeypatch):
    from cmaudio.objectives.ct import CTObjective

    orig = CTObjective.forward
    calls = {"n": 0}

    def flaky(self, *a, **k):
        loss, logs = orig(self, *a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 2 else loss), logs

    monkeypatch.setattr(CTObjective, "forward", flaky)
    cfg = tiny_cfg("mini_ct.yaml", "train.max_steps=10", "train.ckpt_every=100", "train.max_nonfinite=3")
    with pytest.raises(TrainingError, match="3 consecutive non-finite"):
        train(cfg, tmp_path, progress=False)
    c = ckpt.latest_valid(tmp_path)
    assert c is not None and ckpt.read_meta(c)["step"] == 2  # the last good state
    assert ckpt.load_training_state(c)["skipped"] == 3


@pytest.mark.slow
def test_overfit_fixed_batch_loss_halves():
    """The loop's ingredients fit a fixed batch: the DSM loss on it falls by at least half."""
    from cmaudio.build import build_model, build_objective

    cfg = tiny_cfg("mini_teacher.yaml")
    torch.manual_seed(0)
    model = build_model(cfg, 0.087)
    obj = build_objective(cfg, model)
    from cmaudio.features import MelSpectrogram
    from cmaudio.data import load_audio

    a = torch.from_numpy(load_audio(Path(DATA) / "wavs/LJ001-0013.wav", 22050))[: 4 * 2048].reshape(4, 1, 2048)
    cond = MelSpectrogram("hifigan")(a[:, 0])[..., :8]
    seeds = torch.arange(4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_now():
        with torch.no_grad():
            return float(obj(a, cond, seeds=seeds)[0])

    first = loss_now()
    for _ in range(150):
        loss, _ = obj(a, cond, seeds=seeds)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_now() < 0.5 * first


# the adversarial extra with small discriminators (MPD periods 2, 3 of width 2; one MRD of width 4)
ADVERSARIAL = ["objective.adversarial=0.1", "objective.feature_matching=0.2", "objective.adv_periods=[2,3]",
               "objective.adv_resolutions=[256]", "objective.adv_period_width=2", "objective.adv_resolution_width=4"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["objective.kind=ct"], ADVERSARIAL], ids=["ict", "ct-ema-target", "adversarial"])
def test_two_process_gloo_matches_one_process(tmp_path, extra):
    """torchrun with 2 CPU processes = 1 process with the same global batch (1e-5).

    On the wave U-Net with the pseudo-Huber + MR-STFT distance: the loop's property does not depend
    on the network, and with framenet's log-magnitude reconstruction terms (mel-L1, MR-STFT log
    terms near silent bins) the order of DDP's gradient sum alone moves the weights by ~2e-5 after 3
    warm-up steps (measured), which would test float rounding rather than the loop. CT's EMA target
    and the adversarial extra's discriminators are networks beside the online one that DDP does not
    broadcast: each rank must start them from rank 0's weights (each draws its own under seed + rank),
    and the discriminators' step (its gradient averaged over the processes) must match too, so with the
    extra both the generator's and the discriminators' weights are compared."""
    sets = sum((["--set", s] for s in [*TINY, "train.max_steps=3", "train.ckpt_every=3", "train.batch_size=4",
                                          "train.device=cpu", "objective.total_steps=10", "model.net=unet1d", "model.frame_prior_iters=0",
                                          "objective.recon={}", "objective.distance={pseudo_huber: 1.0, mrstft: 1.0}", *extra]),
               [])
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    one = subprocess.run([sys.executable, "-m", "cmaudio", "train", str(ROOT / "recipes/mini_ct.yaml"), *sets,
                          "--run-dir", str(tmp_path / "one"), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29617",
                          "-m", "cmaudio", "train", str(ROOT / "recipes/mini_ct.yaml"), *sets,
                          "--run-dir", str(tmp_path / "two"), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), k
    # training moved the zero-initialised output layer, so the comparison means something
    assert a["net.out_conv.weight"].abs().sum() > 0
    if extra is ADVERSARIAL:
        da, db = weights(tmp_path / "one", ckpt.ADVERSARY_FILE), weights(tmp_path / "two", ckpt.ADVERSARY_FILE)
        assert da.keys() == db.keys() and da
        for k in da:
            assert torch.allclose(da[k], db[k], atol=1e-5, rtol=0), k


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits(tmp_path):
    """SIGTERM mid-run: the step finishes, a checkpoint is written, exit 2 with a one-line message."""
    import signal
    import time

    sets = sum((["--set", s] for s in [*TINY, "train.max_steps=100000", "train.ckpt_every=100000"]), [])
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-m", "cmaudio", "train", str(ROOT / "recipes/mini_ct.yaml"), *sets,
                             "--run-dir", str(tmp_path), "--quiet"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "tb").glob("events*")) and time.time() < deadline:  # the loop has started
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: stopped by signal") and "--resume" in last and "Traceback" not in err
    c = ckpt.latest_valid(tmp_path)
    assert c is not None and ckpt.read_meta(c)["step"] >= 1


def test_validation_records_naturalness_of_the_validation_clips(tmp_path):
    """Validation (the run's val split only) logs Distill-MOS beside MR-STFT and log-mel L1 for 1 and 2 steps."""
    res = train(tiny_cfg("mini_ct.yaml", "train.max_steps=1", "data.max_val_utterances=1"), tmp_path / "r",
                progress=False)
    for name in ("1step", "2step"):
        assert 1.0 <= res.val[f"val/{name}_nmos"] <= 5.0
        assert res.val[f"val/{name}_logmel_l1"] > 0
    rows = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert '"val/1step_nmos"' in rows
