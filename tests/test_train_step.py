"""The training step's internals: the same numbers as torch's Adam, no wait for the device each step, and a NaN
loss found by its step however late the loop looks."""

from __future__ import annotations

import math

import pytest
import torch

import vaekit.objectives.base
from vaekit import train as T
from vaekit.train import TrainingDiverged, fit


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(7, 5, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_update_gives_the_numbers_of_optimizer_step_and_skips_a_flagged_step(weight_decay):
    mine, ref = _params(0), _params(0)
    opt_mine = torch.optim.Adam(mine, lr=1e-2, weight_decay=weight_decay, fused=True)
    opt_ref = torch.optim.Adam(ref, lr=1e-2, weight_decay=weight_decay, fused=True)
    flag = T._skip_flag(opt_mine)
    update = T._AdamUpdate(opt_mine, flag)
    assert update.direct
    g = torch.Generator().manual_seed(1)
    for i in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in mine]
        for p, q, gr in zip(mine, ref, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        if i == 4:  # a flagged step changes nothing, its step count included
            before = [p.detach().clone() for p in mine]
            flag.fill_(1.0)
            update()
            assert all(torch.equal(a, b) for a, b in zip(before, mine))
            assert all(float(opt_mine.state[p]["step"]) == 4 for p in mine)
            flag.fill_(0.0)
        update()
        opt_ref.step()
        for p, q in zip(mine, ref):
            assert torch.equal(p, q)
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(opt_mine.state[p][key], opt_ref.state[q][key])


def test_adam_update_leaves_other_optimizers_to_their_own_step():
    params = _params(0)
    assert not T._AdamUpdate(torch.optim.Adam(params, lr=1e-2, foreach=True), None).direct
    assert not T._AdamUpdate(torch.optim.SGD(params, lr=1e-2), None).direct
    assert T._skip_flag(torch.optim.Adam(params, lr=1e-2, foreach=True)) is None


def test_first_nonfinite():
    assert T._first_nonfinite(torch.tensor([1.0, 2.0])) is None
    pos, value = T._first_nonfinite(torch.tensor([1.0, math.inf, math.nan]))
    assert pos == 1 and value == math.inf


def _host_reads(monkeypatch) -> dict[str, int]:
    """Count the reads of tensor values by the host (each is a wait for the device on a GPU)."""
    counts = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            counts["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_an_epoch_reads_the_device_once_per_check_not_once_per_step(tmp_path, monkeypatch):
    from vaekit import VAE

    def reads(steps: int, out: str) -> int:
        x = torch.bernoulli(torch.full((steps * 4, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(0))
        counts = _host_reads(monkeypatch)
        fit(VAE(shape=(1, 4, 4), latent=2, hidden=[8]), x, out=tmp_path / out, epochs=1, batch_size=4,
            progress=False)
        n = counts["n"]
        monkeypatch.undo()
        return n

    few, many = reads(2 * T.CHECK_EVERY, "few"), reads(6 * T.CHECK_EVERY, "many")
    extra_steps = 4 * T.CHECK_EVERY
    assert many - few <= 4 * 3, (few, many)  # at most a few reads per check, none per step
    assert many - few < extra_steps / 2


def test_a_nan_loss_late_in_a_check_window_is_named_by_its_own_step(tmp_path, monkeypatch):
    from vaekit import VAE

    real, calls = vaekit.objectives.base.elbo, {"n": 0}
    bad_step = T.CHECK_EVERY // 2 + 3  # the loop looks only at the end of the window

    def elbo(*args, **kwargs):
        terms = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] >= bad_step:  # this step and every later one
                terms.reconstruction = terms.reconstruction * math.nan
        return terms

    monkeypatch.setattr(vaekit.objectives.base, "elbo", elbo)  # the objective's ELBO
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    x = torch.bernoulli(torch.full((4 * 3 * T.CHECK_EVERY, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(0))
    snapshot = {}

    def keep(row):  # never called: the first epoch diverges
        snapshot["row"] = row

    with pytest.raises(TrainingDiverged, match=rf"epoch 1, step {bad_step};"):
        fit(model, x, out=tmp_path / "r", epochs=2, batch_size=4, progress=False, on_epoch=keep,
            fast_step=False)  # the patched ELBO is the autograd step's
    assert calls["n"] <= T.CHECK_EVERY  # stopped at the first look, at most CHECK_EVERY steps after the NaN
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no update after the NaN step
    assert not snapshot
