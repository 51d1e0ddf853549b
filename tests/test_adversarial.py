"""The adversarial extra: HiFi-GAN's LSGAN and feature-matching losses, the discriminators, the objective with
the term on and off, its config checks, and a training run with it that resumes bit-exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_extras import batch, frame_model, plain_ct_loss
from test_train import tiny_cfg, weights

from cmaudio import checkpoint as ckpt
from cmaudio.build import build_adversarial, build_model, build_objective
from cmaudio.config import load
from cmaudio.errors import ConfigError
from cmaudio.nets.discriminators import MultiDiscriminator, PeriodDiscriminator, ResolutionDiscriminator
from cmaudio.objectives import AdversarialTerm, CTObjective, build_distance
from cmaudio.train import train

ROOT = Path(__file__).resolve().parents[1]
SMALL_D = ["objective.adv_periods=[2,3]", "objective.adv_resolutions=[256]", "objective.adv_period_width=2",
           "objective.adv_resolution_width=4"]


class IdentityDisc(torch.nn.Module):
    """D(y) = y itself, one feature map y: every loss has a closed form."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, y):
        h = self.scale * y
        return [(h.flatten(1), [h])]


def test_lsgan_and_feature_matching_have_hifigans_closed_forms():
    term = AdversarialTerm(IdentityDisc(), weight=0.5, feature_matching=3.0)
    g = torch.tensor([[[0.2, -0.4, 1.0]], [[0.0, 0.5, 0.5]]])
    x = torch.tensor([[[0.1, 0.1, 0.1]], [[1.0, 1.0, 1.0]]])
    total, logs = term.generator(g, x)
    adv = ((1 - g) ** 2).flatten(1).mean(1)  # HiFi-GAN eq. 2
    fm = (x - g).abs().flatten(1).mean(1)  # eq. 3, one layer
    torch.testing.assert_close(total, 0.5 * adv + 3.0 * fm)
    torch.testing.assert_close(logs["adv"], adv.mean())
    loss_d, dlogs = term.discriminator_loss()  # eq. 1 on the remembered pair
    torch.testing.assert_close(loss_d, ((1 - x) ** 2).mean() + (g ** 2).mean())
    assert float(dlogs["disc_real"]) == pytest.approx(float(x.mean()))
    with pytest.raises(RuntimeError, match="generator step first"):
        term.discriminator_loss()  # the pair was consumed


def test_generator_terms_train_the_generator_not_the_discriminator():
    disc = IdentityDisc()
    term = AdversarialTerm(disc, weight=1.0, feature_matching=1.0)
    g = torch.randn(2, 1, 16, requires_grad=True)
    total, _ = term.generator(g, torch.randn(2, 1, 16))
    total.sum().backward()
    assert g.grad is not None and g.grad.abs().sum() > 0
    assert disc.scale.grad is None and disc.scale.requires_grad  # frozen during the pass, restored after
    loss_d, _ = term.discriminator_loss()
    loss_d.backward()
    assert disc.scale.grad is not None  # the D step reaches D, not the (detached) generator output
    with pytest.raises(ValueError, match="padded"):
        term.generator(g, g.detach(), torch.tensor([[[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]]] * 2))
    with pytest.raises(ValueError):
        AdversarialTerm(disc, weight=0.0)


@pytest.mark.parametrize("length", [1000, 2048])
def test_discriminators_take_any_length_and_give_per_item_logits(length):
    torch.manual_seed(0)
    d = MultiDiscriminator((2, 3, 5), (256, 512), period_width=2, resolution_width=4)
    y = torch.randn(3, 1, length)
    out = d(y)
    assert len(out) == 5
    for logits, fmaps in out:
        assert logits.shape[0] == 3 and torch.isfinite(logits).all() and len(fmaps) >= 5
    # items are judged independently: item 0 alone gives what it gives in the batch
    alone = d(y[:1])
    for (a, _), (b, _) in zip(alone, out):
        torch.testing.assert_close(a, b[:1], rtol=1e-4, atol=1e-5)
    # a period discriminator sees samples p apart in one column: a signal periodic in p is constant along T/p
    p = PeriodDiscriminator(4, 2)
    col = torch.randn(4)
    _, maps = p(col.repeat(256)[None, None])
    first = maps[0]  # (1, C, T/p', p): rows away from the zero-padded edges are equal
    torch.testing.assert_close(first[..., 3, :], first[..., 20, :])
    assert ResolutionDiscriminator(256, 2)(y)[0].shape[0] == 3
    with pytest.raises(ValueError):
        MultiDiscriminator((), ())


def test_objective_with_the_term_adds_it_to_the_same_online_output_and_off_is_the_paper():
    m = frame_model()
    obj = CTObjective(m, build_distance({"pseudo_huber": 1.0}), variant="ict", total_steps=100)
    x, cond, seeds = batch()
    plain, logs = obj(x, cond, seeds=seeds, step=3)
    assert "adv" not in logs and obj.adversarial is None
    torch.manual_seed(3)
    disc = MultiDiscriminator((2,), (256,), period_width=2, resolution_width=2)
    term = AdversarialTerm(disc, weight=0.7, feature_matching=0.3)
    obj.set_extras(adversarial=term)
    loss, logs = obj(x, cond, seeds=seeds, step=3)
    cons, online, _ = plain_ct_loss(obj, x, cond, seeds, 3)
    term.forget()
    ref, _ = term.generator(online, x)
    torch.testing.assert_close(loss, cons + ref.mean(), rtol=1e-5, atol=0)
    assert float(logs["adv"]) > 0 and "fm" in logs
    torch.testing.assert_close(plain, cons, rtol=1e-5, atol=0)


def test_config_builds_the_term_only_when_asked_and_refuses_what_cannot_work():
    cfg = tiny_cfg("mini_ct.yaml")
    assert build_adversarial(cfg) is None
    model = build_model(cfg, 0.087, cond_channels=80)
    assert build_objective(cfg, model).adversarial is None
    cfg = tiny_cfg("mini_ct.yaml", "objective.adversarial=0.5", "objective.feature_matching=1", *SMALL_D)
    obj = build_objective(cfg, build_model(cfg, 0.087, cond_channels=80))
    assert obj.adversarial.weight == 0.5 and len(obj.adversarial.disc.subs) == 3
    assert any(k.startswith("adversarial.disc.") for k in obj.state_dict())  # moved with .to(device)
    bad = {
        "objective.feature_matching=1": "needs objective.adversarial",
        "objective.adversarial=-1": ">= 0",
        "objective.adversarial=1 objective.adv_periods=[] objective.adv_resolutions=[]": "at least one",
        "objective.adversarial=1 objective.adv_periods=[0]": "adv_periods",
        "objective.adversarial=1 objective.adv_lr=0": "adv_lr",
    }
    for sets, msg in bad.items():
        with pytest.raises(ConfigError, match=msg):
            tiny_cfg("mini_ct.yaml", *sets.split())
    with pytest.raises(ConfigError, match="objective.kind"):
        tiny_cfg("mini_teacher.yaml", "objective.adversarial=1")
    with pytest.raises(ConfigError, match="waveform"):
        load(ROOT / "recipes" / "mini_mel_ct.yaml", ["objective.adversarial=1"])


def test_training_with_the_term_resumes_bit_exactly_discriminators_included(tmp_path):
    base = ["objective.total_steps=8", "train.ckpt_every=2", "objective.adversarial=1.0",
            "objective.feature_matching=2.0", *SMALL_D]
    train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=4"), tmp_path / "a", progress=False)
    train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=2"), tmp_path / "b", progress=False)
    train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=4"), tmp_path / "b", resume=True, progress=False)
    for name in (ckpt.MODEL_FILE, ckpt.ADVERSARY_FILE):
        a, b = weights(tmp_path / "a", name), weights(tmp_path / "b", name)
        assert a.keys() == b.keys() and a
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    # the discriminators are trained: they moved between the checkpoints of steps 2 and 4
    at2, at4 = [ckpt.load_weights(c / ckpt.ADVERSARY_FILE) for c in ckpt.list_checkpoints(tmp_path / "a")[-2:]]
    assert any(not torch.equal(at2[k], at4[k]) for k in at2)
    state = ckpt.load_training_state(ckpt.latest_valid(tmp_path / "a"))
    assert "adversary_optimizer" in state
    rows = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert '"train/disc"' in rows and '"train/adv"' in rows


def test_fine_tuning_keeps_the_start_weights_sigma_data(tmp_path, capsys):
    src = tmp_path / "src"
    train(tiny_cfg("mini_ct.yaml", "train.max_steps=1", "model.sigma_data=0.05"), src, progress=False)
    cfg = load(ROOT / "recipes" / "mini_ct.yaml", [s for s in sys.modules["test_train"].TINY if "sigma_data" not in s]
               + ["train.max_steps=1", f"train.init_from={src}"])
    assert cfg.model.sigma_data is None
    said = []
    train(cfg, tmp_path / "ft", progress=False, log=said.append)
    assert ckpt.read_meta(ckpt.latest_valid(tmp_path / "ft"))["sigma_data"] == 0.05
    assert any("sigma_data from train.init_from" in s for s in said)
    bad = load(ROOT / "recipes" / "mini_ct.yaml", ["train.max_steps=1", f"train.init_from={tmp_path / 'none'}",
                                                   *[s for s in sys.modules["test_train"].TINY if "sigma_data" not in s]])
    with pytest.raises(ConfigError, match="not found"):
        train(bad, tmp_path / "ft2", progress=False)


def test_switching_the_term_on_at_resume_starts_new_discriminators_and_says_so(tmp_path):
    base = ["objective.total_steps=8", "train.ckpt_every=2"]
    train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=2"), tmp_path / "r", progress=False)
    said = []
    train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=3", "objective.adversarial=1.0", *SMALL_D), tmp_path / "r",
          resume=True, progress=False, log=said.append)
    assert any("starts with new ones" in s for s in said)
    assert (ckpt.latest_valid(tmp_path / "r") / ckpt.ADVERSARY_FILE).is_file()
    # and switching it off again resumes from that checkpoint without the discriminators
    r = train(tiny_cfg("mini_ct.yaml", *base, "train.max_steps=4"), tmp_path / "r", resume=True, progress=False)
    assert r.step == 4 and not (ckpt.latest_valid(tmp_path / "r") / ckpt.ADVERSARY_FILE).exists()
