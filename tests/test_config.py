"""Typed config: extends, unknown keys, typed overrides, dump/load; `config show`, `data check`, `mel`."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from cmaudio.cli import main as cli_main
from cmaudio.config import Config, dump_yaml, from_dict, load
from cmaudio.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def run_cli(*args):
    try:
        cli_main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_extends_deep_merges_relative_to_the_file(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "a.yaml", "model:\n  size: base\n  sigma_max: 3.0\ntrain:\n  lr: 0.001\n")
    child = write(tmp_path / "c.yaml", "extends: base/a.yaml\nmodel:\n  sigma_max: 2.5\n")
    cfg = load(child)
    assert cfg.model.size == "base" and cfg.model.sigma_max == 2.5 and cfg.train.lr == 0.001
    assert cfg.model.rho == 7.0  # untouched defaults stay
    # a list of parents, later ones win
    write(tmp_path / "b.yaml", "train:\n  lr: 0.002\n")
    two = write(tmp_path / "d.yaml", "extends: [base/a.yaml, b.yaml]\n")
    assert load(two).train.lr == 0.002
    # cycles are refused
    write(tmp_path / "x.yaml", "extends: y.yaml\n")
    write(tmp_path / "y.yaml", "extends: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "x.yaml")


def test_unknown_key_names_key_file_and_closest(tmp_path):
    bad = write(tmp_path / "bad.yaml", "train:\n  max_step: 10\n")
    with pytest.raises(ConfigError) as e:
        load(bad)
    msg = str(e.value)
    assert "train.max_step" in msg and "bad.yaml" in msg and "max_steps" in msg
    with pytest.raises(ConfigError, match="unknown section 'modle'.*'model'"):
        load(write(tmp_path / "s.yaml", "modle: {}\n"))
    # in a parent file, the parent is named
    write(tmp_path / "p.yaml", "objective:\n  knd: ct\n")
    with pytest.raises(ConfigError, match=r"p\.yaml.*kind"):
        load(write(tmp_path / "q.yaml", "extends: p.yaml\n"))


def test_overrides_are_type_checked(tmp_path):
    r = ROOT / "recipes/mini_ct.yaml"
    cfg = load(r, ["train.max_steps=7", "model.sigma_max=2", "train.ema_rates=[0.9, 0.99]", "model.sigma_data=null"])
    assert cfg.train.max_steps == 7 and cfg.model.sigma_max == 2.0 and isinstance(cfg.model.sigma_max, float)
    assert cfg.train.ema_rates == (0.9, 0.99) and cfg.model.sigma_data is None
    with pytest.raises(ConfigError, match="train.max_steps must be an integer"):
        load(r, ["train.max_steps=ten"])
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        load(r, ["train.compile=3"])
    with pytest.raises(ConfigError, match="unknown key train.max_stepz.*max_steps"):
        load(r, ["train.max_stepz=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load(r, ["train.max_steps"])
    with pytest.raises(ConfigError, match="objective.kind = 'lpips'"):
        load(r, ["objective.kind=lpips"])
    with pytest.raises(ConfigError, match="distance has unknown term 'lpips'"):
        load(r, ["objective.distance={lpips: 1.0}"])


def test_dump_then_load_gives_an_equal_object():
    cfg = load(ROOT / "recipes/ljspeech_cd.yaml", ["sampling.sigmas={2: [1.6, 0.3]}"])
    again = from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg and again.sampling.sigmas == {2: (1.6, 0.3)}
    assert Config() == from_dict({})


def test_config_show_prints_the_resolved_recipe(capsys):
    assert run_cli("config", "show", str(ROOT / "recipes/mini_ct.yaml"), "--set", "train.max_steps=5") == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["max_steps"] == 5 and shown["objective"]["kind"] == "ict"
    assert from_dict(shown) == load(ROOT / "recipes/mini_ct.yaml", ["train.max_steps=5"])
    assert run_cli("config", "show", str(ROOT / "recipes/nope.yaml")) == 2
    assert capsys.readouterr().err.startswith("error: recipe not found")


def test_data_check_prints_counts_and_bad_files(tmp_path, capsys):
    root = tmp_path / "LJ"
    (root / "wavs").mkdir(parents=True)
    sf.write(root / "wavs" / "a.wav", 0.1 * np.sin(np.arange(22050) / 7.0), 22050)
    (root / "wavs" / "b.wav").write_bytes(b"not audio")
    (root / "metadata.csv").write_text("a|hello|hello\nb|bad|bad\n")
    assert run_cli("data", "check", str(root), "--format", "ljspeech") == 0
    out = capsys.readouterr().out
    assert "2" in out and "b.wav" in out and "22050" in out


def test_mel_command_writes_one_npy_per_input_with_the_preset_frame_rule(tmp_path, capsys):
    src = ROOT / "egs/mini/data/ljspeech_mini/wavs"
    ins = [src / "LJ001-0013.wav", src / "LJ016-0027.wav"]  # the second is 24 kHz: resampled
    assert run_cli("mel", *map(str, ins), "-o", str(tmp_path / "m"), "--preset", "hifigan") == 0
    from cmaudio.data import load_audio

    for f in ins:
        m = np.load(tmp_path / "m" / f"{f.stem}.npy")
        n = len(load_audio(f, 22050))
        assert m.dtype == np.float32 and m.shape == (80, n // 256)
    assert run_cli("mel", str(ins[0]), "-o", str(tmp_path / "v"), "--preset", "vocos") == 0
    n24 = len(load_audio(ins[0], 24000))
    assert np.load(tmp_path / "v" / "LJ001-0013.npy").shape == (100, 1 + n24 // 256)
    assert run_cli("mel", str(ins[0]), "-o", str(tmp_path / "x"), "--preset", "hifi") == 2
    assert "hifigan" in capsys.readouterr().err  # the closest valid preset is named
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "objective, expected",
    [
        ({"kind": "ict"}, ("lognormal", "ict")),  # iCT's own: lognormal p(n) (sec. 3.5), lambda = 1/dsigma (sec. 3.1)
        ({"kind": "ct"}, ("uniform", "uniform")),  # CM Alg. 3: n ~ U, lambda = 1
        ({"kind": "ict", "index_sampling": "uniform"}, ("uniform", "ict")),  # an explicit value wins
        ({"kind": "ct", "weighting": "ict"}, ("uniform", "ict")),
    ],
)
def test_objective_kind_alone_gets_its_own_defaults(objective, expected):
    """`objective.kind: ict` with no other keys builds iCT as the paper has it, not the CT/CD defaults."""
    from cmaudio.build import build_model, build_objective

    cfg = from_dict({"model": {"size": "tiny"}, "objective": objective, "train": {"max_steps": 10}})
    obj = build_objective(cfg, build_model(cfg, 0.087))
    assert (obj.index_sampling, obj.weighting) == expected
    assert (cfg.objective.index_sampling_for_kind, cfg.objective.weighting_for_kind) == expected


def test_phase_reconstruction_term_uses_the_preset_frames_and_is_refused_for_mel_models():
    """objective.recon.phase builds APNet's phase distance on the features preset's STFT; a mel decoder
    has no waveform phase, so the term is refused there with a one-line ConfigError."""
    from cmaudio.build import build_model, build_objective
    from cmaudio.objectives.distances import PhaseDistance

    cfg = from_dict({"model": {"size": "tiny"}, "features": {"preset": "vocos"},
                     "objective": {"kind": "ict", "recon": {"phase": 0.5}}, "train": {"max_steps": 10}})
    term = build_objective(cfg, build_model(cfg, 0.087)).recon.terms["phase"]
    assert isinstance(term, PhaseDistance) and (term.n_fft, term.hop) == (1024, 256)
    mel = from_dict({"model": {"size": "tiny", "domain": "mel"},
                     "objective": {"kind": "ict", "recon": {"phase": 0.5}}, "train": {"max_steps": 10}})
    with pytest.raises(ConfigError, match="phase distance is for waveform models"):
        build_objective(mel, build_model(mel, 0.5))


def test_projection_target_term_is_built_with_its_iterations_and_bounded():
    """objective.recon.proj projects onto the crop's mel with objective.proj_iters iterations (1..64); a mel
    decoder has no waveform to project, and a count outside the range is refused naming the key."""
    from cmaudio.build import build_model, build_objective
    from cmaudio.objectives.distances import ProjectionTarget

    cfg = from_dict({"model": {"size": "tiny"}, "objective": {"kind": "ict", "recon": {"proj": 2.0}, "proj_iters": 3},
                     "train": {"max_steps": 10}})
    obj = build_objective(cfg, build_model(cfg, 0.087))
    assert isinstance(obj.recon.terms["proj"], ProjectionTarget) and obj.recon.weights == {"proj": 2.0}
    for bad in (0, 65, 2.5, True):
        with pytest.raises(ConfigError, match="objective.proj_iters"):
            from_dict({"objective": {"kind": "ict", "recon": {"proj": 1.0}, "proj_iters": bad}})
    mel = from_dict({"model": {"size": "tiny", "domain": "mel"},
                     "objective": {"kind": "ict", "recon": {"proj": 0.5}}, "train": {"max_steps": 10}})
    with pytest.raises(ConfigError, match="proj distance is for waveform models"):
        build_objective(mel, build_model(mel, 0.5))


def test_misspelt_index_sampling_is_still_refused():
    with pytest.raises(ConfigError, match="objective.index_sampling"):
        from_dict({"objective": {"kind": "ict", "index_sampling": "log-normal"}})


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads 1e-4 as a string; as a float field it is the number a user meant, in a recipe and in --set."""
    from cmaudio.config import load

    r = tmp_path / "r.yaml"
    r.write_text("train:\n  lr: 3e-4\n")
    assert load(r).train.lr == 3e-4
    assert load(r, ["train.lr=1e-4"]).train.lr == 1e-4
    with pytest.raises(ConfigError, match="train.lr"):
        load(r, ["train.lr=1e-4x"])


@pytest.mark.parametrize("model, objective, needle", [
    ({"net": "unet1d", "frame_dim": 128}, {}, "model.frame_dim is a framenet option"),
    ({"net": "framenet", "factors": [4, 4, 4, 4]}, {}, "model.factors is a unet1d option"),
    ({"net": "unet1d", "residual_layers": 10}, {}, "model.residual_layers is a diffwave option"),
    ({"net": "diffwave", "frame_prior_iters": 8}, {}, "model.frame_prior_iters is a framenet option"),
    ({}, {"kind": "ict", "teacher": "runs/teacher"}, "objective.teacher is read only by objective.kind cd"),
    ({}, {"kind": "ict", "num_scales": 40}, "objective.num_scales"),
    ({}, {"kind": "dsm", "consistency_weight": 0.5}, "objective.consistency_weight"),
    ({}, {"kind": "dsm", "recon": {"mrstft": 1.0}}, "objective.recon"),
])
def test_fields_of_another_network_or_objective_are_refused(model, objective, needle):
    """build_net and the objectives would silently ignore them: the user's setting would do nothing."""
    from cmaudio.config import Config, replace

    with pytest.raises(ConfigError, match=needle):
        replace(Config(), model=model, objective=objective)


def test_owned_fields_are_checked_on_the_merged_recipe_not_per_file(tmp_path):
    """A base sets the kind, the child the kind's options (recipes/mini_cd.yaml extends ljspeech_cd.yaml)."""
    (tmp_path / "base.yaml").write_text("objective:\n  kind: cd\n  teacher: t\nmodel:\n  net: framenet\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nobjective:\n  num_scales: 30\nmodel:\n  frame_dim: 64\n")
    # the CT curriculum of a base stays settable when the kind is switched (recipes/_mel.yaml)
    assert load(ROOT / "recipes/mini_mel_ct.yaml", ["objective.kind=cd", "objective.teacher=t"]).objective.s1 == 4
    cfg = load(tmp_path / "child.yaml")
    assert cfg.objective.num_scales == 30 and cfg.model.frame_dim == 64
    with pytest.raises(ConfigError, match="model.frame_dim is a framenet option"):
        load(tmp_path / "child.yaml", ["model.net=unet1d"])


def test_sampling_sigmas_survive_a_json_round_trip():
    """A run's config.json writes the integer keys of sampling.sigmas as strings; export reads them back."""
    import json

    from cmaudio.config import to_dict

    cfg = load(ROOT / "recipes/mini_ct.yaml")
    assert cfg.sampling.sigmas[2] == (1.6, 0.6)
    again = from_dict(json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg and again.sampling.sigmas[4] == (1.6, 1.0, 0.8, 0.6)
    with pytest.raises(ConfigError, match="sampling.sigmas key"):
        from_dict({"sampling": {"sigmas": {"two": [1.6, 0.6]}}})
