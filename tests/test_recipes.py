"""Recipes and egs: every recipe parses and builds its network; every run.sh is valid shell with a
dry-run; a CI-sized mini run goes end to end through the public CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmaudio.build import build_model, role_of
from cmaudio.config import dump_yaml, from_dict, load
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
RUN_SCRIPTS = sorted((ROOT / "egs").glob("*/run.sh"))


def test_recipe_set_is_complete():
    names = {p.stem for p in RECIPES}
    for ds in ("ljspeech", "vctk", "libritts", "mini"):
        for kind in ("teacher", "cd", "ct"):
            assert f"{ds}_{kind}" in names
    for extra in ("ljspeech_cd_from_diffwave", "ljspeech_finetune_tts", "ljspeech_mel_ct", "mini_mel_ct"):
        assert extra in names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_parses_round_trips_and_builds(recipe):
    cfg = load(recipe)
    assert from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg  # dump then load gives an equal object
    if recipe.stem.startswith("_"):
        return  # shared bases only need to parse
    net_cfg = cfg
    model = build_model(net_cfg, 0.087 if cfg.model.domain == "wave" else 1.0)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert (role_of(cfg) == "denoiser") == (cfg.objective.kind == "dsm")


def test_recipes_use_extends_not_copies():
    # each dataset/objective recipe extends a shared file instead of repeating the model block
    for p in RECIPES:
        if p.stem.startswith("_"):
            continue
        text = p.read_text()
        assert "extends:" in text, p.name


def test_libritts_recipes_are_24k_vocos_and_diffwave_cd_uses_its_preset():
    for k in ("teacher", "cd", "ct"):
        c = load(ROOT / f"recipes/libritts_{k}.yaml")
        assert c.features.preset == "vocos" and c.data.sample_rate == 24000
    c = load(ROOT / "recipes/ljspeech_cd_from_diffwave.yaml")
    assert c.features.preset == "diffwave" and c.objective.teacher_format == "diffwave"
    assert 0.0100 <= c.model.sigma_min and c.model.sigma_max <= 1.605


@pytest.mark.parametrize("script", RUN_SCRIPTS, ids=lambda p: p.parent.name)
def test_run_scripts_are_valid_shell(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", [s for s in RUN_SCRIPTS if s.parent.name not in ("gpu", "quality")],
                         ids=lambda p: p.parent.name)
def test_dry_run_prints_every_stage(script):
    out = subprocess.run(["bash", str(script), "--dry-run"], cwd=ROOT, capture_output=True, text=True, check=True)
    stages = [line for line in out.stderr.splitlines() if line.startswith("=== stage")]
    assert len(stages) >= 7, out.stderr
    cmds = [line for line in out.stdout.splitlines() if line.strip()]
    assert cmds and all(c.split()[0] in ("cmaudio", "torchrun") for c in cmds), cmds
    assert any(" train " in c for c in cmds) and any(" export " in c for c in cmds) and any(" evaluate " in c for c in cmds)
    # --stage / --stop-stage select
    one = subprocess.run(["bash", str(script), "--dry-run", "--stage", "4", "--stop-stage", "4"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert all(" export " in c for c in one.stdout.splitlines() if c.strip())


def test_quality_ladder_dry_run(tmp_path):
    """Every contender of the ladder trains, exports and evaluates on the held-out clips at 1, 2, 4 steps;
    CD counts its teacher in the budget; the dry run writes nothing."""
    exp = tmp_path / "ladder"
    out = subprocess.run(["bash", "egs/quality/run.sh", "--dry-run", "--exp", str(exp)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    cmds = [c.replace("\\,", ",") for c in out.stdout.splitlines() if c.strip()]  # printf %q escapes commas
    assert all(c.split()[0] in ("cmaudio", "python") for c in cmds), cmds
    assert not exp.exists()
    for name in ("ict10", "cd10", "extras10", "ict30", "cd30", "extras30"):
        mine = [c for c in cmds if f"{exp}/{name}/" in c]
        assert any(" train " in c for c in mine) and any(" evaluate " in c and "--steps 1,2,4" in c for c in mine), name
    assert any("--baseline griffinlim" in c for c in cmds)
    cd30 = [c for c in cmds if f"{exp}/cd30/" in c and " train " in c]
    assert "train.max_minutes=10" in cd30[0] and "train.max_minutes=20" in cd30[1]  # teacher + CD = 30 minutes
    assert any("consistency_weight=0" in c for c in cmds if f"{exp}/extras10/" in c)
    assert sum("vocos_peer.py" in c for c in cmds) == 4  # train + evaluate, at 10 and 30 minutes


def test_quality_ladder_more_clips(tmp_path):
    """--more DIR: every trained contender and Griffin-Lim are also scored on all of DIR's clips at 1 and 2
    steps into report_more; a DIR holding an embedded clip (trained or held out on) is refused, exit 2."""
    more = tmp_path / "more"
    (more / "wavs").mkdir(parents=True)
    (more / "metadata.csv").write_text("LJ099-0001||\n")
    (more / "wavs" / "LJ099-0001.wav").write_bytes(b"")
    exp = tmp_path / "ladder"
    out = subprocess.run(["bash", "egs/quality/run.sh", "--dry-run", "--exp", str(exp), "--more", str(more),
                          "--only", "gl ict30 cd30 extras30 vocos30"], cwd=ROOT, capture_output=True, text=True, check=True)
    cmds = [c.replace("\\,", ",") for c in out.stdout.splitlines() if c.strip()]
    extra = [c for c in cmds if f" evaluate {more} " in c]
    for name in ("gl", "ict30", "cd30", "extras30"):
        mine = [c for c in extra if f"{exp}/{name}/report_more" in c]
        assert len(mine) == 1 and "--split all" in mine[0] and "--max-seconds 4" in mine[0], (name, extra)
        assert ("--baseline griffinlim" in mine[0]) == (name == "gl")
        assert name == "gl" or f"-m {exp}/{name}/model --steps 1,2 " in mine[0]
    assert not any("vocos30" in c for c in extra) and not exp.exists()
    (more / "wavs" / "LJ001-0011.wav").write_bytes(b"")  # a held-out clip of the embedded set
    res = subprocess.run(["bash", "egs/quality/run.sh", "--dry-run", "--exp", str(exp), "--more", str(more)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "LJ001-0011" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stdout == ""


@pytest.mark.slow
def test_ci_sized_mini_run_end_to_end(tmp_path):
    """egs/mini/run.sh with 2 steps per model and tiny nets: every stage through the public CLI."""
    env = dict(os.environ, MINI_STEPS="2", MINI_EVAL_SECONDS="1.5", CUDA_VISIBLE_DEVICES="",
               MINI_EXTRA="--set model.size=tiny --set data.segment_length=2048 --set train.batch_size=2 "
                          "--set train.val_every=1000",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    exp = tmp_path / "exp"
    res = subprocess.run(["bash", "egs/mini/run.sh", "--exp", str(exp)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    for m in ("teacher", "cd", "ct", "mel_ct"):
        assert (exp / "models" / m / "model.safetensors").is_file(), m
    for m in ("cd", "ct"):
        html = exp / f"report_{m}" / "report.html"
        assert html.is_file() and (exp / f"report_{m}" / "report.json").is_file()
        assert len(list((exp / f"wavs_{m}").glob("*.wav"))) == 3
    assert len(list((exp / "wavs_mel_decoder").glob("*.wav"))) == 2
    assert "Done. Outputs in" in res.stdout


def _report(path, settings, higher, ground_truth=None):
    rep = {"settings": [{"name": n, "per_utterance": pu} for n, pu in settings.items()], "higher_is_better": higher}
    if ground_truth is not None:
        rep["ground_truth"] = {"per_utterance": ground_truth}
    path.write_text(json.dumps(rep))
    return path


def test_quality_paired_comparison_against_the_recordings(tmp_path):
    """The recordings' row (ground_truth) pairs with a setting: Distill-MOS d = setting - recording per clip."""
    a = _report(tmp_path / "a.json", {"cm-1step": {"u1": {"nmos": 3.0}, "u2": {"nmos": 3.5}}}, {"nmos": True},
                ground_truth={"u1": {"nmos": 4.0}, "u2": {"nmos": 4.5}})
    res = subprocess.run([sys.executable, "egs/quality/paired.py", f"{a}:ground_truth", f"{a}:cm-1step"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    row = [c.strip() for c in next(x for x in res.stdout.splitlines() if x.startswith("| nmos")).split("|")[1:-1]]
    assert row[1] == "2" and row[4] == "-1.0000 ± 0.0000" and row[5] == "0 of 2"


def test_quality_paired_comparison_is_the_per_clip_difference(tmp_path):
    """egs/quality/paired.py: d = B - A per clip over the shared clips, its Student-t interval, and the
    B-better count by each metric's direction; a clip missing in one report and NaN values are left out."""
    higher = {"pesq": True, "mrstft": False}
    a = _report(tmp_path / "a.json", {"cm-1step": {"u1": {"pesq": 3.0, "mrstft": 1.0}, "u2": {"pesq": 2.0, "mrstft": 2.0},
                                                   "u3": {"pesq": 1.0, "mrstft": float("nan")},
                                                   "only_a": {"pesq": 9.0, "mrstft": 9.0}}}, higher)
    b = _report(tmp_path / "b.json", {"cm-2step": {"u1": {"pesq": 3.5, "mrstft": 0.9}, "u2": {"pesq": 2.5, "mrstft": 2.3},
                                                   "u3": {"pesq": 1.5, "mrstft": 0.5}}}, higher)
    res = subprocess.run([sys.executable, "egs/quality/paired.py", f"{a}:cm-1step", f"{b}:cm-2step"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = {line.split("|")[1].split()[0]: [c.strip() for c in line.split("|")[1:-1]]
            for line in res.stdout.splitlines() if line.startswith("| pesq") or line.startswith("| mrstft")}
    # pesq: every clip +0.5, so the interval is exactly 0 and B is better on all 3 shared clips
    assert rows["pesq"][1] == "3" and rows["pesq"][4] == "+0.5000 ± 0.0000" and rows["pesq"][5] == "3 of 3"
    # mrstft: u3 has a NaN and is left out; d = (-0.1, +0.3), mean +0.1, t_{0.975,1} * std / sqrt(2) = 12.706 * 0.2
    assert rows["mrstft"][1] == "2" and rows["mrstft"][4].startswith("+0.1000 ± 2.54")
    assert rows["mrstft"][5] == "1 of 2"  # lower is better: only u1 (0.9 < 1.0)


@pytest.mark.parametrize("args", [["{a}:cm-9step", "{a}:cm-1step"], ["{a}", "{a}:cm-1step"],
                                  ["{d}/missing.json:cm-1step", "{a}:cm-1step"], ["{a}:cm-1step", "{b}:cm-1step"],
                                  ["{a}:cm-1step", "{a}:cm-1step", "--metrics", "visqol"]])
def test_quality_paired_comparison_refuses_bad_input(tmp_path, args):
    a = _report(tmp_path / "a.json", {"cm-1step": {"u1": {"pesq": 3.0}}}, {"pesq": True})
    b = _report(tmp_path / "b.json", {"cm-1step": {"u9": {"pesq": 3.0}}}, {"pesq": True})
    argv = [x.format(a=a, b=b, d=tmp_path) for x in args]
    res = subprocess.run([sys.executable, "egs/quality/paired.py", *argv], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
