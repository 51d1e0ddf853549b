"""Tests of cmaudio.bench: record fields and values, NFE accounting, JSON output, skipped peers.

Hermetic and fast: tiny networks, 0.1 s of audio, one timed call. No timing assertions.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from cmaudio import bench
from cmaudio.errors import ConfigError
from cmaudio.models import ConsistencyModel, Denoiser
from cmaudio.nets import build_net, count_parameters, flops_per_second

TINY = dict(seconds=0.1, repeats=1, warmup=0, sizes=("tiny",), steps=(1, 2), teacher_steps=(2,),
            teacher_size="tiny", include_peers=False)


@pytest.fixture(scope="module")
def records():
    return bench.run_bench(**TINY)


def _only(records, name, steps):
    found = [r for r in records if r["name"] == name and r["steps"] == steps]
    assert len(found) == 1, (name, steps, [(r["name"], r["steps"]) for r in records])
    return found[0]


def test_records_have_all_fields_with_sane_values(records):
    assert [(r["name"], r["steps"]) for r in records] == [
        ("cmaudio-tiny", 1), ("cmaudio-tiny", 2), ("cmaudio-teacher", 2)]
    unet = build_net("unet1d", domain="wave", in_channels=1, cond_channels=80, size="tiny", hop=256)
    teacher = build_net("diffwave", domain="wave", in_channels=1, cond_channels=80, size="tiny", hop=256)
    expect_params = {"cmaudio-tiny": count_parameters(unet), "cmaudio-teacher": count_parameters(teacher)}
    expect_fps = {
        "cmaudio-tiny": flops_per_second(unet, sample_rate=22050, in_channels=1, cond_channels=80, hop=256),
        "cmaudio-teacher": flops_per_second(teacher, sample_rate=22050, in_channels=1, cond_channels=80, hop=256),
    }
    frames = round(0.1 * 22050 / 256)
    for r in records:
        assert set(bench.RECORD_FIELDS) <= set(r), set(bench.RECORD_FIELDS) - set(r)
        assert r["skipped"] is False
        assert r["device"] == "cpu" and r["dtype"] == "fp32" and r["batch"] == 1
        assert r["nfe"] == r["steps"]
        assert r["params"] == expect_params[r["name"]]
        assert r["flops_per_second"] == pytest.approx(expect_fps[r["name"]]) and r["flops_per_second"] > 0
        assert r["sample_rate"] == 22050
        assert r["seconds"] == pytest.approx(frames * 256 / 22050, abs=1e-5)
        assert math.isfinite(r["xrt"]) and r["xrt"] > 0
        assert r["rtf"] == pytest.approx(1.0 / r["xrt"], rel=1e-12)
        assert r["xrt"] == pytest.approx(r["batch"] * r["seconds"] / r["time_s"], rel=1e-9)
        assert 0 < r["time_best_s"] <= r["time_s"]
        assert r["cpu_s"] > 0 and r["xrt_cpu"] == pytest.approx(r["batch"] * r["seconds"] / r["cpu_s"], rel=1e-9)
        assert r["repeats"] == 1 and r["threads"] == torch.get_num_threads()
        # the model's own weights are part of the peak, so it is at least their size
        assert r["peak_mem_method"] == "cpu_tensor_peak"
        assert r["peak_mem_mb"] >= r["params"] * 4 / 2**20
        assert isinstance(r["note"], str) and r["note"]


def test_nfe_is_the_number_of_model_calls(monkeypatch):
    calls = {"cm": 0, "teacher": 0}
    cm_forward, den_forward = ConsistencyModel.forward, Denoiser.forward

    def count_cm(self, *a, **k):
        calls["cm"] += 1
        return cm_forward(self, *a, **k)

    def count_den(self, *a, **k):
        calls["teacher"] += 1
        return den_forward(self, *a, **k)

    monkeypatch.setattr(ConsistencyModel, "forward", count_cm)
    monkeypatch.setattr(Denoiser, "forward", count_den)
    recs = bench.run_bench(**{**TINY, "repeats": 2, "steps": (1, 3), "teacher_steps": (2, 5)})
    # per setting: one untimed probe call (warmup=0) + 2 timed calls, each of nfe model calls
    assert calls["cm"] == 3 * (1 + 3)
    assert calls["teacher"] == 3 * (2 + 5)
    assert [r["nfe"] for r in recs] == [1, 3, 2, 5]


def test_threads_are_set_for_the_run_and_restored():
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    recs = bench.run_bench(**{**TINY, "steps": (1,), "teacher_size": None, "threads": want})
    assert [r["threads"] for r in recs] == [want]
    assert torch.get_num_threads() == before


def test_batch_counts_every_item():
    recs = bench.run_bench(**{**TINY, "steps": (1,), "teacher_size": None, "batch_sizes": (3,)})
    (r,) = recs
    assert r["batch"] == 3
    assert r["xrt"] == pytest.approx(3 * r["seconds"] / r["time_s"], rel=1e-9)


def test_write_json_rereads_as_list_of_dicts(records, tmp_path):
    path = tmp_path / "sub" / "bench.json"
    bench.write_json(records, path)
    back = json.loads(path.read_text())
    assert isinstance(back, list) and all(isinstance(r, dict) for r in back)
    assert back == records
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temporary left behind


def test_format_table_lists_every_setting(records):
    text = bench.format_table(records)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["name", "steps", "nfe"]
    rows = [ln for ln in lines if ln.startswith(("cmaudio-tiny ", "cmaudio-teacher "))]
    assert len(rows) == len(records)
    assert f"{records[0]['xrt']:.2f}" in rows[0]


def _fake(name, steps, xrt, **kw):
    rec = {k: None for k in bench.RECORD_FIELDS}
    rec.update(name=name, steps=steps, nfe=steps, xrt=xrt, rtf=1 / xrt, device="cpu", dtype="fp32", batch=1,
               threads=2, skipped=False, **kw)
    return rec


def test_targets_ratio_and_xrt():
    recs = [_fake("cmaudio-small", 1, 30.0), _fake("cmaudio-small", 2, 16.0),
            _fake("diffwave-reference", 6, 1.5), _fake("diffwave-reference", 50, 0.2)]
    tg = bench.targets(recs)
    assert [t["what"] for t in tg] == ["cmaudio-small 1-step xRT",
                                       "speed-up cmaudio-small 1-step / diffwave-reference 50 steps"]
    assert tg[0]["value"] == 30.0 and tg[0]["met"] is True
    assert tg[1]["value"] == pytest.approx(150.0) and tg[1]["met"] is True
    recs[0]["xrt"] = 10.0
    tg = bench.targets(recs)
    assert tg[0]["met"] is False and tg[1]["value"] == pytest.approx(50.0) and tg[1]["met"] is False
    text = bench.format_table(recs)
    assert "50.0 x (target >= 100: NOT met)" in text
    # different batch sizes are never compared with each other
    recs[3]["batch"] = 4
    assert len(bench.targets(recs)) == 1


def test_missing_peers_are_skipped_with_a_note(monkeypatch):
    for mod in ("diffwave", "diffwave.model", "diffwave.params", "vocos", "vocos.feature_extractors",
                "vocos.models", "vocos.heads"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` raise ImportError
    recs = bench.run_bench(**{**TINY, "steps": (1,), "teacher_size": None, "include_peers": True})
    by_name = {r["name"]: r for r in recs}
    assert set(by_name) == {"cmaudio-tiny", "diffwave-reference", "vocos"}
    for name in ("diffwave-reference", "vocos"):
        r = by_name[name]
        assert r["skipped"] is True
        assert "skipped" in r["note"] and "pip install" in r["note"]
        assert r["xrt"] is None and set(bench.RECORD_FIELDS) <= set(r)
    assert by_name["cmaudio-tiny"]["skipped"] is False
    text = bench.format_table(recs)
    assert "diffwave-reference: skipped" in text and "vocos: skipped" in text
    json.dumps(recs, allow_nan=False)


def test_peers_run_when_installed():
    pytest.importorskip("diffwave.model")
    vocos = pytest.importorskip("vocos")
    recs = bench.run_bench(**{**TINY, "sizes": (), "teacher_size": None, "teacher_steps": (6,),
                              "include_peers": True})
    by_name = {r["name"]: r for r in recs}
    ref, voc = by_name["diffwave-reference"], by_name["vocos"]
    from diffwave.model import DiffWave
    from diffwave.params import AttrDict, params

    assert ref["skipped"] is False and ref["steps"] == ref["nfe"] == 6
    assert ref["params"] == count_parameters(DiffWave(AttrDict(params)))
    assert ref["flops_per_second"] is None and ref["sample_rate"] == 22050
    assert voc["skipped"] is False and voc["sample_rate"] == 24000 and voc["nfe"] == 1
    assert voc["flops_per_second"] is None
    assert voc["seconds"] == pytest.approx(0.1, abs=256 / 24000)
    cfg = bench.VOCOS_CONFIG
    assert voc["params"] == count_parameters(
        vocos.Vocos(
            feature_extractor=vocos.feature_extractors.MelSpectrogramFeatures(**cfg["feature_extractor"]),
            backbone=vocos.models.VocosBackbone(**cfg["backbone"]),
            head=vocos.heads.ISTFTHead(**cfg["head"]),
        )
    )
    for r in (ref, voc):
        assert r["xrt"] > 0 and r["rtf"] == pytest.approx(1 / r["xrt"], rel=1e-12)


@pytest.mark.parametrize("fast", [True, False])
def test_reference_loop_matches_diffwave_predict(tmp_path, fast):
    """The reimplemented loop gives predict()'s audio bit for bit (same weights, same noise)."""
    dw_model = pytest.importorskip("diffwave.model")
    from diffwave.inference import predict
    from diffwave.params import AttrDict, params

    torch.manual_seed(1)
    model = dw_model.DiffWave(AttrDict(params)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.output_projection.weight, std=0.1)  # zero-initialised: make eps non-trivial
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pt")
    mel = torch.randn(1, 80, 3)

    predict(mel, model_dir=str(tmp_path), device=torch.device("cpu"), fast_sampling=True)  # loads and caches
    torch.manual_seed(7)  # after loading: building the model draws from the global RNG
    want, sr = predict(mel, model_dir=str(tmp_path), device=torch.device("cpu"), fast_sampling=fast)
    run, nfe = bench._diffwave_reference_sampler(model, AttrDict(params), fast)
    with torch.no_grad():
        got = run(mel, torch.Generator().manual_seed(7))
    assert nfe == (6 if fast else 50) and sr == 22050
    assert got.shape == want.shape == (1, 3 * 256)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kw",
    [dict(dtype="fp16"), dict(seconds=0), dict(seconds=float("nan")), dict(sizes=("huge",)), dict(repeats=0),
     dict(warmup=-1), dict(batch_sizes=(0,)), dict(steps=(0,)), dict(threads=0), dict(teacher_size="huge"),
     # asking for cuda without a GPU is an error (on a GPU machine that case is not one)
     *([] if torch.cuda.is_available() else [dict(device="cuda")]), dict(device="nonsense")],
)
def test_bad_arguments_raise_config_error(kw):
    with pytest.raises(ConfigError):
        bench.run_bench(**{**TINY, **kw})


def test_machine_description():
    d = bench.machine_description("cpu", threads=3)
    assert d["threads"] == 3 and d["torch"] == torch.__version__ and d["gpu"] is None
    assert d["cpu_cores"] >= 1 and d["device"] == "cpu"
    assert bench.machine_description("cpu")["threads"] == torch.get_num_threads()
