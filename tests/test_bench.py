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

TINY = dict(seconds=0.1, repeats=1, warmup=0, sizes=("tiny",), framenet_sizes=("tiny",), steps=(1, 2),
            teacher_steps=(2,), teacher_size="tiny", include_peers=False, include_default=False)


@pytest.fixture(scope="module")
def records():
    return bench.run_bench(**TINY)


def _only(records, name, steps):
    found = [r for r in records if r["name"] == name and r["steps"] == steps]
    assert len(found) == 1, (name, steps, [(r["name"], r["steps"]) for r in records])
    return found[0]


def test_records_have_all_fields_with_sane_values(records):
    assert [(r["name"], r["steps"]) for r in records] == [
        ("cmaudio-tiny", 1), ("cmaudio-tiny", 2), ("cmaudio-framenet-tiny", 1), ("cmaudio-framenet-tiny", 2),
        ("cmaudio-teacher", 2)]
    nets = {name: build_net(net, domain="wave", in_channels=1, cond_channels=80, size="tiny", hop=256)
            for name, net in [("cmaudio-tiny", "unet1d"), ("cmaudio-framenet-tiny", "framenet"),
                              ("cmaudio-teacher", "diffwave")]}
    expect_params = {name: count_parameters(net) for name, net in nets.items()}
    expect_fps = {name: flops_per_second(net, sample_rate=22050, in_channels=1, cond_channels=80, hop=256)
                  for name, net in nets.items()}
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
        assert r["repeats"] == 1 and r["threads"] == torch.get_num_threads() and r["slow"] is False
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
    recs = bench.run_bench(**{**TINY, "framenet_sizes": (), "repeats": 2, "steps": (1, 3), "teacher_steps": (2, 5)})
    # per setting: one untimed probe call (warmup=0) + 2 timed calls, each of nfe model calls
    assert calls["cm"] == 3 * (1 + 3)
    assert calls["teacher"] == 3 * (2 + 5)
    assert [r["nfe"] for r in recs] == [1, 3, 2, 5]


def test_threads_are_set_for_the_run_and_restored():
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    recs = bench.run_bench(**{**TINY, "framenet_sizes": (), "steps": (1,), "teacher_size": None, "threads": want})
    assert [r["threads"] for r in recs] == [want]
    assert torch.get_num_threads() == before


def test_batch_counts_every_item():
    recs = bench.run_bench(**{**TINY, "framenet_sizes": (), "steps": (1,), "teacher_size": None, "batch_sizes": (3,)})
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
    rows = [ln for ln in lines if ln.startswith(("cmaudio-tiny ", "cmaudio-framenet-tiny ", "cmaudio-teacher "))]
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
    recs = bench.run_bench(**{**TINY, "framenet_sizes": (), "steps": (1,), "teacher_size": None,
                              "include_peers": True})
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
    recs = bench.run_bench(**{**TINY, "sizes": (), "framenet_sizes": (), "teacher_size": None, "teacher_steps": (6,),
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
     dict(framenet_sizes=("huge",)), dict(slow_s=0), dict(slow_s=float("nan")), dict(slow_s=True),
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


# ----------------------------------------------------------------------------------------------
# the default plan: slow settings timed once; --full; rows as they complete; framenet
# ----------------------------------------------------------------------------------------------


class _Calls(list):
    now: list


@pytest.fixture
def fake_clock(monkeypatch):
    """bench's wall clock advanced only by network calls: 0.01 s a consistency-model call, 1 s a teacher call.

    Returns the list of calls ("cm" / "teacher") made so far; its .now is the clock ([seconds]).
    """
    now = [0.0]
    calls = _Calls()
    calls.now = now
    cm_forward, den_forward = ConsistencyModel.forward, Denoiser.forward

    def cm(self, *a, **k):
        now[0] += 0.01
        calls.append("cm")
        return cm_forward(self, *a, **k)

    def den(self, *a, **k):
        now[0] += 1.0
        calls.append("teacher")
        return den_forward(self, *a, **k)

    monkeypatch.setattr(ConsistencyModel, "forward", cm)
    monkeypatch.setattr(Denoiser, "forward", den)
    monkeypatch.setattr(bench, "_clock", lambda: now[0])
    return calls


PLAN = {**TINY, "framenet_sizes": (), "repeats": 4, "warmup": 2, "teacher_steps": (4, 2, 6)}


def test_default_plan_times_slow_settings_once_and_marks_them(fake_clock):
    msgs: list[str] = []
    recs = bench.run_bench(**{**PLAN, "slow_s": 3.0}, progress=msgs.append)
    by = {(r["name"], r["steps"]): r for r in recs}
    for k in (1, 2):  # 0.01-0.02 s a call: fast, the full repeat count
        r = by[("cmaudio-tiny", k)]
        assert r["slow"] is False and r["repeats"] == 4
    t4, t2, t6 = (by[("cmaudio-teacher", k)] for k in (4, 2, 6))
    # 4 steps: its first (probe) call measured 4 s > 3 s -> one timed call
    assert t4["slow"] is True and t4["repeats"] == 1 and t4["time_s"] == pytest.approx(4.0)
    # 2 steps: estimated 2 s (1 s per NFE from the 4-step setting), measured 2 s -> fast
    assert t2["slow"] is False and t2["repeats"] == 4 and t2["time_s"] == pytest.approx(2.0)
    # 6 steps: estimated 6 s before it runs -> no probe, one timed call; memory from the 2-step setting
    assert t6["slow"] is True and t6["repeats"] == 1 and t6["time_s"] == pytest.approx(6.0)
    assert t6["peak_mem_mb"] == t2["peak_mem_mb"] and "2-step setting" in t6["note"]
    for r in (t4, t6):
        assert "timed once" in r["note"] and "--full" in r["note"]
    # teacher calls: 4 x (probe + 1 timed) + 2 x (probe + 1 warm-up + 4 timed) + 6 x 1 timed
    assert fake_clock.count("teacher") == 4 * 2 + 2 * 6 + 6
    assert sum("(--full: 4 times)" in m for m in msgs) == 2  # said before the wait (stderr in the CLI)
    text = bench.format_table(recs)
    rows = {ln.split()[0] + " " + ln.split()[1]: ln for ln in text.splitlines() if ln.startswith("cmaudio-")}
    assert rows["cmaudio-teacher 6"].split()[13] == "1*" and rows["cmaudio-teacher 2"].split()[13] == "4"
    assert "1* = slow setting" in text and "--full times every setting 4 times" in text


def test_full_times_everything_with_the_full_repeat_count(fake_clock):
    recs = bench.run_bench(**{**PLAN, "slow_s": None})
    assert all(r["slow"] is False and r["repeats"] == 4 for r in recs)
    assert fake_clock.count("teacher") == (4 + 2 + 6) * (2 + 4)  # probe + 1 warm-up + 4 timed each
    assert "1* = slow" not in bench.format_table(recs)


def test_a_timed_call_measured_slow_stops_the_repeats(fake_clock, monkeypatch):
    # the probe call looks fast (the clock does not move during it) but the first timed call
    # is slow, as when the machine's load rises: no more timed calls after it
    real = bench._MemProbe.run

    def free_probe(self, fn, inputs):
        t = fake_clock.now[0]
        out = real(self, fn, inputs)
        fake_clock.now[0] = t
        return out

    monkeypatch.setattr(bench._MemProbe, "run", free_probe)
    recs = bench.run_bench(**{**PLAN, "teacher_steps": (2,), "slow_s": 1.5})
    (t2,) = [r for r in recs if r["name"] == "cmaudio-teacher"]
    assert t2["slow"] is True and t2["repeats"] == 1 and t2["time_s"] == pytest.approx(2.0)
    # probe + 1 warm-up + the first timed call, 2 NFE each
    assert fake_clock.count("teacher") == 3 * 2


def test_rows_are_reported_as_each_setting_completes(fake_clock):
    # a record is handed over before the next setting makes its first network call
    seen = []
    calls_at = []

    def log(r):
        seen.append(r)
        calls_at.append(len(fake_clock))

    recs = bench.run_bench(**{**TINY, "teacher_steps": (2,)}, on_record=log)
    assert seen == recs and all(a is b for a, b in zip(seen, recs))
    assert [(r["name"], r["steps"]) for r in seen] == [
        ("cmaudio-tiny", 1), ("cmaudio-tiny", 2), ("cmaudio-framenet-tiny", 1), ("cmaudio-framenet-tiny", 2),
        ("cmaudio-teacher", 2)]
    # calls: probe + 1 timed per setting (warmup 0, repeats 1), nfe each
    assert calls_at == [2 * 1, 2 * 1 + 2 * 2, 6 + 2, 6 + 2 + 4, 12 + 2 * 2]


def test_cli_prints_each_row_before_the_next_setting_runs(monkeypatch, capsys):
    from cmaudio import cli

    seen: dict = {}

    def fake_run_bench(**kw):
        seen.update(kw)
        recs = [_fake("cmaudio-small", 1, 30.0, repeats=10, slow=False),
                _fake("cmaudio-framenet-small", 1, 80.0, repeats=10, slow=False),
                _fake("diffwave-reference", 50, 0.05, repeats=1, slow=True)]
        printed = []
        for r in recs:
            kw["on_record"](r)
            printed.append(capsys.readouterr().out)  # what the user has seen by now
        assert printed[0].splitlines()[0].split()[:3] == ["name", "steps", "nfe"]
        assert printed[0].splitlines()[2].startswith("cmaudio-small ")
        assert printed[1].strip().startswith("cmaudio-framenet-small ")
        assert printed[2].strip().startswith("diffwave-reference ") and " 1* " in printed[2]
        return recs

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--device", "cpu", "--threads", "2"])
    assert e.value.code == 0
    assert seen["slow_s"] == bench.SLOW_S and seen["threads"] == 2
    tail = capsys.readouterr().out
    assert "1-step speed ratios" in tail and "targets:" in tail
    assert "cmaudio-framenet-small" in tail and "1600.0x" in tail

    with pytest.raises(SystemExit):
        cli.main(["bench", "--device", "cpu", "--full"])
    assert seen["slow_s"] is None


def test_default_plan_includes_framenet_and_the_peers():
    import inspect

    params = inspect.signature(bench.run_bench).parameters
    assert params["framenet_sizes"].default == ("small", "base")
    assert params["sizes"].default == ("small", "base") and params["steps"].default == (1, 2, 4)
    assert params["teacher_steps"].default == (6, 50) and params["include_peers"].default is True
    assert params["include_default"].default is True
    assert params["slow_s"].default == bench.SLOW_S == 3.0 and params["repeats"].default == 10


def test_the_shipped_default_is_timed_with_its_own_weights_and_sigmas():
    from cmaudio.vocoder import Vocoder

    recs = bench.run_bench(**{**TINY, "sizes": (), "framenet_sizes": (), "teacher_size": None, "include_default": True,
                              "steps": (1, 2)})
    voc = Vocoder.from_pretrained()
    assert [(r["name"], r["nfe"]) for r in recs] == [("cmaudio-default", 1), ("cmaudio-default", 2)]
    assert recs[0]["params"] == count_parameters(voc.model) and "shipped default" in recs[0]["model"]
    assert len(voc.sigmas_for(2)) == recs[1]["nfe"]
    (r,) = bench.ratios(recs)
    assert r["name"] == "cmaudio-default"


def test_ratios_to_diffwave_50_steps_and_vocos():
    recs = [_fake("cmaudio-small", 1, 30.0), _fake("cmaudio-small", 2, 16.0),
            _fake("cmaudio-framenet-small", 1, 80.0), _fake("cmaudio-framenet-base", 1, 40.0),
            _fake("cmaudio-teacher", 6, 0.3),
            _fake("diffwave-reference", 50, 0.2), _fake("vocos", 1, 50.0)]
    rs = {r["name"]: r for r in bench.ratios(recs)}
    assert set(rs) == {"cmaudio-small", "cmaudio-framenet-small", "cmaudio-framenet-base"}  # 1-step cmaudio only
    assert rs["cmaudio-framenet-small"]["vs_vocos"] == pytest.approx(1.6)
    assert rs["cmaudio-framenet-small"]["vs_diffwave50"] == pytest.approx(400.0)
    assert rs["cmaudio-framenet-base"]["vs_vocos"] == pytest.approx(0.8)
    text = bench.format_summary(recs)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("cmaudio-framenet-small "))
    assert "400.0x" in line and "1.60x (at least as fast as vocos)" in line
    assert "0.80x (slower than vocos)" in text
    # without the peers the ratios say so instead of inventing a number
    (only,) = bench.ratios([_fake("cmaudio-framenet-small", 1, 80.0)])
    assert only["vs_vocos"] is None and only["vs_diffwave50"] is None
