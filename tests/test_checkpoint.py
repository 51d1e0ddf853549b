"""Tests of the model-directory / run-directory codec (cmaudio.checkpoint): ModelDirInfo, save/load,
old-format reading, checksums, and the choice of weights from a run (newest intact checkpoint, EMA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cmaudio import checkpoint as ckpt
from cmaudio.config import from_dict, to_dict
from cmaudio.errors import CheckpointError, ConfigError

SD = 0.087


def small_cfg(kind: str = "ict", **model):
    return from_dict({"model": {"size": "tiny", **model}, "objective": {"kind": kind}})


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g), "b.bias": torch.randn(5, generator=g)}


def record(**changes) -> ckpt.ModelDirInfo:
    base = dict(kind="consistency", config=small_cfg(), sigma_data=SD, domain_info={"note": [1, 2]},
                default_sigmas={1: (1.6,), 2: (1.6, 0.3)}, extra={"trained_steps": 7, "source_run": "runs/x"})
    base.update(changes)
    return ckpt.ModelDirInfo(**base)


def assert_same_weights(a: dict, b: dict) -> None:
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# model directories
# ----------------------------------------------------------------------------------------------


def test_round_trip_gives_the_same_record_and_weights(tmp_path):
    info, w = record(), weights(0)
    ckpt.save_model_dir(tmp_path, weights=w, info=info)
    back, w2 = ckpt.load_model_dir(tmp_path)
    assert back == info
    assert_same_weights(w, w2)
    assert back.config.model.sigma_data == SD  # a record's config always carries sigma_data
    assert back.default_sigmas == {1: (1.6,), 2: (1.6, 0.3)} and back.extra == {"trained_steps": 7, "source_run": "runs/x"}
    assert ckpt.read_model_info(tmp_path) == info  # the same record without reading the weights


def test_config_json_stores_sigma_data_once_and_the_summary(tmp_path):
    ckpt.save_model_dir(tmp_path, weights=weights(0), info=record())
    raw = json.loads((tmp_path / ckpt.CONFIG_FILE).read_text())
    assert raw["sigma_data"] == SD and "sigma_data" not in raw["config"]["model"]
    assert "role" not in raw and raw["kind"] == "consistency"
    assert (raw["domain"], raw["preset"], raw["sample_rate"], raw["hop_length"], raw["n_mels"]) == (
        "wave", "hifigan", 22050, 256, 80)
    assert raw["default_sigmas"] == {"1": [1.6], "2": [1.6, 0.3]}
    assert raw["format"] == ckpt.FORMAT and len(raw["sha256"]) == 64


def test_kind_and_config_are_made_to_agree():
    den = record(kind="denoiser", config=small_cfg("ct"), default_sigmas={})
    assert den.config.objective.kind == "dsm" and ckpt.kind_of(den.config) == "denoiser"
    con = record(config=small_cfg("dsm"))
    assert con.config.objective.kind == "ict" and ckpt.kind_of(con.config) == "consistency"
    assert record(config=small_cfg("cd")).config.objective.kind == "cd"  # already a consistency objective: kept


def test_bad_records_are_refused_when_written():
    with pytest.raises(ConfigError, match="kind"):
        record(kind="student")
    with pytest.raises(ConfigError, match="sigma_data"):
        record(sigma_data=0.0)
    with pytest.raises(ConfigError, match="sha256"):
        record(extra={"sha256": "x"})


def test_old_format_with_sigma_data_twice_and_role_is_read(tmp_path):
    """Files written before the codec: config.model.sigma_data beside the top-level value (which wins),
    and `role` where newer files say `kind`."""
    ckpt.save_model_dir(tmp_path, weights=weights(1), info=record())
    raw = json.loads((tmp_path / ckpt.CONFIG_FILE).read_text())
    raw["config"]["model"]["sigma_data"] = 0.5  # the second copy an old file held (here disagreeing)
    raw["role"] = raw.pop("kind")
    del raw["domain_info"]
    del raw[ckpt.CONFIG_DIGEST]  # old files were not sealed: their config is checked against the weights instead
    (tmp_path / ckpt.CONFIG_FILE).write_text(json.dumps(raw))
    info, w = ckpt.load_model_dir(tmp_path)
    assert info.sigma_data == SD and info.config.model.sigma_data == SD
    assert info.kind == "consistency" and info.domain_info == {}
    assert_same_weights(w, weights(1))


def test_the_shipped_default_model_reads():
    from cmaudio.vocoder import DEFAULT_MODEL_DIR

    info = ckpt.read_model_info(DEFAULT_MODEL_DIR)
    assert info.kind == "consistency" and info.domain == "wave" and info.config.model.net == "framenet"
    assert info.sigma_data == pytest.approx(0.0884, abs=1e-4)  # measured on its 46 LJSpeech training clips
    assert sorted(info.default_sigmas) == [1, 2, 3, 4] and info.default_sigmas[2] == (1.6, 0.6)
    assert info.config.model.frame_prior_iters == 8  # the Griffin-Lim prior of recipes/mini_ct.yaml


def test_tampered_weights_are_refused(tmp_path):
    ckpt.save_model_dir(tmp_path, weights=weights(0), info=record())
    f = tmp_path / ckpt.MODEL_FILE
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a tensor value: still a readable safetensors file
    f.write_bytes(bytes(data))
    for read in (ckpt.load_model_dir, ckpt.read_model_info):
        with pytest.raises(CheckpointError, match="does not match the checksum"):
            read(tmp_path)


@pytest.mark.parametrize("key,value,needle", [
    ("sigma_data", "abc", "sigma_data must be a positive number"),
    ("kind", "denoiser", "does not match the model"),
    ("n_mels", 100, "n_mels is 100"),
    ("default_sigmas", {"2": [0.1, 1.0]}, "strictly decreasing"),
    ("domain_info", {"cond_channels": 0}, "positive integer cond_channels"),
    ("config", [1], "config must be a mapping"),
])
def test_bad_values_are_one_line_errors_naming_the_file(tmp_path, key, value, needle):
    ckpt.save_model_dir(tmp_path, weights=weights(0), info=record())
    raw = json.loads((tmp_path / ckpt.CONFIG_FILE).read_text())
    raw[key] = value
    (tmp_path / ckpt.CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=needle) as e:
        ckpt.load_model_dir(tmp_path)
    assert ckpt.CONFIG_FILE in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------
# runs: the newest intact checkpoint and an EMA
# ----------------------------------------------------------------------------------------------


def save_step(run_dir: Path, step: int, *, rates=(0.999, 0.9999), meta_kind: str = "kind") -> None:
    cfg = small_cfg("ct")
    meta = {"config": to_dict(cfg), "sigma_data": SD, meta_kind: "consistency", "domain_info": {"cond_channels": 80},
            "git_commit": "abc"}
    emas = {r: weights(100 * step + i + 1) for i, r in enumerate(rates)}
    ckpt.save_checkpoint(run_dir, step, model=weights(100 * step), emas=emas, target={}, state={"step": step},
                         meta=meta, keep_last=5)


def test_pick_weights_takes_the_smallest_ema_of_the_newest_checkpoint(tmp_path):
    save_step(tmp_path, 1)
    save_step(tmp_path, 2)
    p = ckpt.pick_weights(tmp_path)
    assert p.checkpoint.name == ckpt.step_dir_name(2) and p.ema_rate == 0.999
    assert p.path == p.checkpoint / ckpt.ema_file(0.999)
    assert_same_weights(p.weights, weights(201))
    assert p.info.kind == "consistency" and p.info.sigma_data == SD and p.info.cond_channels == 80
    assert p.info.extra["step"] == 2 and p.info.extra["ema_rates"] == [0.999, 0.9999]
    q = ckpt.pick_weights(tmp_path, ema=0.9999)
    assert q.ema_rate == 0.9999 and q.path.name == ckpt.ema_file(0.9999)
    assert_same_weights(q.weights, weights(202))
    with pytest.raises(ConfigError, match=r"--ema 0.5 is not one of the run's EMA rates \[0.999, 0.9999\]"):
        ckpt.pick_weights(tmp_path, ema=0.5)
    with pytest.raises(ConfigError, match="objective.teacher_ema 0.5 is not one of the teacher run's"):
        ckpt.pick_weights(tmp_path, ema=0.5, what="teacher run", ema_option="objective.teacher_ema")


def test_pick_weights_without_emas_takes_the_online_weights(tmp_path):
    save_step(tmp_path, 3, rates=())
    p = ckpt.pick_weights(tmp_path)
    assert p.ema_rate is None and p.path.name == ckpt.MODEL_FILE
    assert_same_weights(p.weights, weights(300))


def test_pick_weights_falls_back_past_a_broken_newest_checkpoint(tmp_path):
    save_step(tmp_path, 1)
    save_step(tmp_path, 2)
    newest = tmp_path / ckpt.CKPT_DIR / ckpt.step_dir_name(2)
    f = newest / ckpt.ema_file(0.999)
    f.write_bytes(f.read_bytes()[:-4])  # cut short
    p = ckpt.pick_weights(tmp_path)
    assert p.checkpoint.name == ckpt.step_dir_name(1)
    assert_same_weights(p.weights, weights(101))


def test_pick_weights_refuses_a_run_without_an_intact_checkpoint(tmp_path):
    (tmp_path / ckpt.CKPT_DIR).mkdir()
    with pytest.raises(CheckpointError, match="run .* has no complete checkpoint to export"):
        ckpt.pick_weights(tmp_path, hint=" to export")
    assert ckpt.read_source_info(tmp_path) is None


def test_check_runs_before_the_weights_are_read(tmp_path, monkeypatch):
    save_step(tmp_path, 1)
    monkeypatch.setattr(ckpt, "load_weights", lambda *a, **k: pytest.fail("weights read before the check"))

    def refuse(info):
        raise ConfigError(f"not a teacher: {info.kind}")

    with pytest.raises(ConfigError, match="not a teacher: consistency"):
        ckpt.pick_weights(tmp_path, check=refuse)


def test_old_checkpoints_say_role(tmp_path):
    save_step(tmp_path, 1, meta_kind="role")
    info = ckpt.run_info(ckpt.latest_valid(tmp_path))
    assert info.kind == "consistency"


def test_load_source_reads_runs_and_model_directories_alike(tmp_path):
    save_step(tmp_path / "run", 4)
    run = ckpt.load_source(tmp_path / "run")
    assert run.checkpoint is not None and run.ema_rate == 0.999
    model_dir = tmp_path / "model"
    ckpt.save_model_dir(model_dir, weights=run.weights, info=run.info)
    md = ckpt.load_source(model_dir)
    assert md.checkpoint is None and md.ema_rate is None and md.path == model_dir / ckpt.MODEL_FILE
    assert_same_weights(md.weights, run.weights)
    assert md.info.config == run.info.config and md.info.domain_info == {"cond_channels": 80}
    assert ckpt.read_source_info(model_dir) == md.info and ckpt.read_source_info(tmp_path / "run") == run.info
