"""The hand-written training step (vaekit.training.fast_step): the autograd step's numbers within 1e-5 over 100
steps, taken exactly where it applies and never elsewhere, resumed bit for bit, and turned off by its switch."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch

import vaekit
from cli_run import run_cli
from vaekit import runtime
from vaekit.config import TrainConfig
from vaekit.train import read_metrics
from vaekit.training import fast_step as FS
from vaekit.training import trainer as trainer_module
from vaekit.training.build import model_for, objective_for
from vaekit.training.step import LossModule, _fused_if_supported, _make_step

pytestmark = pytest.mark.usefixtures("single_thread")
SHAPE = (1, 6, 6)


def _data(n: int = 120, seed: int = 0) -> torch.Tensor:
    """Binary images drawn around 3 random prototypes."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.rand(3, *SHAPE, generator=g)
    return torch.bernoulli(proto[torch.randint(3, (n,), generator=g)], generator=g)


def _cfg(**settings) -> TrainConfig:
    return TrainConfig(**{"dataset": "digits", "hidden": [16], "latent": 3, "batch_size": 20, **settings})


def _built(cfg: TrainConfig, fused: bool = True):
    torch.manual_seed(0)
    model = model_for(cfg, SHAPE, True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, **(_fused_if_supported(torch.device("cpu"))
                                                                  if fused else {}))
    return model, objective_for(cfg, model, 100), optimizer


def _fast(cfg: TrainConfig, **kwargs):
    model, objective, optimizer = _built(cfg)
    return FS.fast_step_for(model, objective, optimizer, cfg, cfg.batch_size, **kwargs)


@pytest.mark.parametrize("settings", [
    {"hidden": [16]},
    {"hidden": [24, 12], "activation": "tanh"},
    {"hidden": [16], "posterior_settings": {"min_logvar": -0.5}},  # the floor binds: its gradient mask matters
])
def test_the_fast_step_gives_the_autograd_steps_numbers_over_100_steps(settings):
    cfg = _cfg(**settings)
    auto_model, objective, auto_opt = _built(cfg)
    fast_model = copy.deepcopy(auto_model)
    fast_opt = torch.optim.Adam(fast_model.parameters(), lr=1e-2, **_fused_if_supported(torch.device("cpu")))
    fast = FS.fast_step_for(fast_model, objective, fast_opt, cfg, cfg.batch_size)
    assert fast is not None
    auto = _make_step(LossModule(auto_model, objective), auto_model, auto_opt, cfg, contextlib.nullcontext(),
                      runtime.from_env())
    x, g = _data(), torch.Generator().manual_seed(1)
    clamped = 0
    for i in range(100):
        x_batch = x[torch.randint(0, x.shape[0], (20 if i % 9 else 7,), generator=g)]  # partial batches too
        beta = 1.0 if i < 60 else 0.25
        torch.manual_seed(1000 + i)  # the same noise for both: each draws from the global generator
        loss_a, stats_a = auto(x_batch, beta)
        torch.manual_seed(1000 + i)
        loss_f, stats_f = fast(x_batch, beta)
        # float32 rounding in another order of summation: 1e-5 relative to the figure (at least 1 nat)
        assert abs(float(loss_a) - float(loss_f)) <= 1e-5 * max(1.0, abs(float(loss_a)))
        assert torch.allclose(stats_f, stats_a, rtol=1e-5, atol=1e-5) and stats_f.dtype == torch.float64
        for p, q in zip(auto_model.parameters(), fast_model.parameters()):
            assert (p - q).abs().max() <= 1e-5
        with torch.no_grad():
            clamped += int((auto_model.encode(x_batch)[:, 3:] < cfg.posterior_settings.get("min_logvar", -12)).sum())
    assert clamped > 0 or "posterior_settings" not in settings
    for p, q in zip(auto_opt.param_groups[0]["params"], fast_opt.param_groups[0]["params"]):
        assert float(auto_opt.state[p]["step"]) == float(fast_opt.state[q]["step"]) == 100


def test_a_nonfinite_loss_skips_every_later_update_as_the_autograd_step_does():
    cfg = _cfg()
    model, objective, optimizer = _built(cfg)
    step = FS.fast_step_for(model, objective, optimizer, cfg, cfg.batch_size)
    x = _data(20)
    step(x, 1.0)
    before = [p.detach().clone() for p in model.parameters()]
    loss, _ = step(x, math.inf)  # beta inf: an infinite loss
    assert not math.isfinite(float(loss))
    step(x, 1.0)  # sticky: nothing moves after it
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("settings", [
    {"beta": 4.0}, {"warmup": 3}, {"hidden": [8, 8, 8]},
    {"activation": "tanh"}, {"posterior_settings": {"min_logvar": -3.0}},
])
def test_it_applies_to_the_plain_elbo_of_the_mlp_vae(settings):
    assert _fast(_cfg(**settings)) is not None


@pytest.mark.parametrize("settings", [
    {"fast_step": False}, {"k": 2}, {"clip_grad": 1.0}, {"encoder_noise": 0.1}, {"precision": "bf16"},
    {"compile": True}, {"objective": "iwae", "k": 1}, {"objective": "beta-tcvae"}, {"activation": "gelu"},
    {"activation": "gated"}, {"model": "conv", "conv_channels": [4]}, {"prior": "vamp"}, {"posterior": "iaf"},
    {"likelihood": "continuous-bernoulli"}, {"posterior": "delta"}, {"levels": 2},
])
def test_it_does_not_apply_elsewhere(settings):
    assert _fast(_cfg(**settings)) is None


def test_it_does_not_apply_to_other_runs_or_optimizers():
    cfg = _cfg()
    assert _fast(cfg, distributed=True) is None
    assert _fast(cfg, estimator=torch.nn.Identity()) is None
    assert _fast(cfg, auxiliary={"d": object()}) is None
    model, objective, optimizer = _built(cfg, fused=False)
    assert FS.fast_step_for(model, objective, optimizer, cfg, 20) is None
    model, objective, _ = _built(cfg)
    partial = torch.optim.Adam(list(model.encoder.parameters()), lr=1e-2, fused=True)  # train_only encoder
    assert FS.fast_step_for(model, objective, partial, cfg, 20) is None and getattr(partial, "found_inf", None) is None
    double = copy.deepcopy(model).double()
    assert FS.fast_step_for(double, objective, torch.optim.Adam(double.parameters(), fused=True), cfg, 20) is None
    conditional = model_for(_cfg(conditional=True), SHAPE, True, condition=3)
    assert FS.fast_step_for(conditional, objective, torch.optim.Adam(conditional.parameters(), fused=True), cfg,
                            20) is None


def test_a_subclass_that_overrides_what_the_pass_computes_is_left_to_autograd():
    class Shifted(vaekit.VAE):
        def decode(self, z, y=None):
            return super().decode(z, y) + 1.0

    cfg = _cfg()
    torch.manual_seed(0)
    model = Shifted(latent=3, shape=SHAPE, hidden=(16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    assert FS.fast_step_for(model, objective_for(cfg, model), optimizer, cfg, 20) is None


def test_the_registry_finds_the_closest_registered_types():
    from vaekit.components.likelihoods import BernoulliLikelihood
    from vaekit.components.posteriors import GaussianPosterior
    from vaekit.components.priors import StandardNormalPrior
    from vaekit.nn import MLP

    class MyMLP(MLP):
        pass

    assert FS.find_fast_step(MyMLP, GaussianPosterior, StandardNormalPrior, BernoulliLikelihood) is \
        FS.gaussian_bernoulli_mlp
    assert FS.find_fast_step(torch.nn.Sequential, GaussianPosterior, StandardNormalPrior, BernoulliLikelihood) is None


@pytest.fixture
def taken(monkeypatch):
    """Whether each run's step was the fast one, in order."""
    seen: list[bool] = []
    original = trainer_module.fast_step_for

    def spy(*args, **kwargs):
        step = original(*args, **kwargs)
        seen.append(step is not None)
        return step

    monkeypatch.setattr(trainer_module, "fast_step_for", spy)
    return seen


def test_fit_with_the_fast_step_resumes_bit_exact(tmp_path, taken):
    def build():
        torch.manual_seed(5)
        return vaekit.VAE(latent=3, shape=SHAPE, hidden=(16,))

    x = _data(130)
    straight = vaekit.fit(build(), x[:100], x[100:], out=tmp_path / "a", epochs=4, batch_size=30, progress=False)
    vaekit.fit(build(), x[:100], x[100:], out=tmp_path / "b", epochs=2, batch_size=30, progress=False)
    resumed = vaekit.fit(build(), x[:100], x[100:], out=tmp_path / "b", epochs=4, batch_size=30, resume=True,
                         progress=False)
    assert taken == [True, True, True]
    assert straight.train_elbo == resumed.train_elbo and straight.valid_elbo == resumed.valid_elbo
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert json.loads((tmp_path / "a" / "config.json").read_text())["fast_step"] is True


def test_fit_takes_the_switch_and_both_steps_train_alike(tmp_path, taken):
    x = _data(130)
    rows = {}
    for fast in (True, False):
        torch.manual_seed(5)
        model = vaekit.VAE(latent=3, shape=SHAPE, hidden=(16,))
        vaekit.fit(model, x[:100], x[100:], out=tmp_path / str(fast), epochs=2, batch_size=30, progress=False,
                   fast_step=fast)
        rows[fast] = read_metrics(tmp_path / str(fast))
    assert taken == [True, False]
    for a, b in zip(rows[True], rows[False]):  # 8 steps: float rounding only
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-5)
        assert a["valid_elbo"] == pytest.approx(b["valid_elbo"], rel=1e-5)


def test_the_command_line_switch_is_recorded_and_kept_on_resume(tmp_path, capsys, taken):
    base = ["train", "--dataset", "digits", "--binarize", "threshold", "--hidden", "16", "--latent", "3",
            "--epochs", "1", "--threads", "1"]
    code, _, err = run_cli([*base, "--no-fast-step", "--out", str(tmp_path / "off")], capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "--out", str(tmp_path / "on")], capsys)
    assert code == 0, err
    assert taken == [False, True]
    assert json.loads((tmp_path / "off" / "config.json").read_text())["fast_step"] is False
    assert json.loads((tmp_path / "on" / "config.json").read_text())["fast_step"] is True
    more = [*base[:-4], "--epochs", "2", "--threads", "1", "--resume"]
    code, _, err = run_cli([*more, "--out", str(tmp_path / "off")], capsys)  # the run's own setting
    assert code == 0 and taken[-1] is False, err
    code, _, err = run_cli([*more, "--fast-step", "--out", str(tmp_path / "off")], capsys)  # chosen on purpose
    assert code == 0 and taken[-1] is True and "resuming with --fast-step True instead of the run's False" in err


def test_a_run_from_before_the_fast_step_resumes_on_the_autograd_step(tmp_path, capsys, taken):
    base = ["train", "--dataset", "digits", "--binarize", "threshold", "--hidden", "16", "--latent", "3",
            "--threads", "1", "--out", str(tmp_path / "r")]
    assert run_cli([*base, "--epochs", "1", "--no-fast-step"], capsys)[0] == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    del config["fast_step"]  # as written before the setting existed
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli([*base, "--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    assert taken == [False, False]
