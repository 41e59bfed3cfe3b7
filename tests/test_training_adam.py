"""vaekit.training.adam.Adam: torch.optim.Adam's numbers and state_dict, without importing torch._dynamo."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from vaekit.training.adam import Adam, fused_available


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 5, generator=gen)
        opt.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()
        opt.step()


def _same_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key, state in a["state"].items():
        assert state.keys() == b["state"][key].keys()
        for name, value in state.items():
            other = b["state"][key][name]
            assert value.dtype == other.dtype and value.device == other.device and torch.equal(value, other), name


@pytest.mark.parametrize("settings", [{"fused": True}, {"foreach": False}, {"foreach": True}],
                         ids=["fused", "single-tensor", "foreach"])
def test_same_updates_and_state_as_torch(settings):
    if settings.get("fused") and not fused_available(torch.device("cpu")):
        pytest.skip("this torch build has no fused Adam on the CPU")
    mine, ref = _net(), _net()
    opt_mine = Adam(mine.parameters(), lr=1e-2, weight_decay=1e-3, **settings)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=1e-3, **settings)
    _train(mine, opt_mine, 7)
    _train(ref, opt_ref, 7)
    for p, q in zip(mine.parameters(), ref.parameters()):
        assert torch.equal(p, q)  # bit for bit: the same torch code on the same tensors
    _same_state(opt_mine.state_dict(), opt_ref.state_dict())


def test_state_dicts_load_both_ways_and_continue_bit_exact():
    """A checkpoint of either class continues in the other exactly as in its own (old checkpoints stay valid)."""
    first, first_mine = _net(), _net()
    opt = torch.optim.Adam(first.parameters(), lr=1e-2, fused=fused_available(torch.device("cpu")))
    _train(first, opt, 4)
    first_mine.load_state_dict(first.state_dict())
    opt_mine = Adam(first_mine.parameters(), lr=1e-2, fused=opt.defaults["fused"])
    opt_mine.load_state_dict(copy.deepcopy(opt.state_dict()))  # a state_dict shares the state's tensors
    _same_state(opt_mine.state_dict(), opt.state_dict())
    _train(first, opt, 3, seed=2)
    _train(first_mine, opt_mine, 3, seed=2)
    for p, q in zip(first.parameters(), first_mine.parameters()):
        assert torch.equal(p, q)
    back = torch.optim.Adam(_net().parameters(), lr=1e-2, fused=opt.defaults["fused"])
    back.load_state_dict(copy.deepcopy(opt_mine.state_dict()))
    _same_state(back.state_dict(), opt_mine.state_dict())


def test_learning_rate_schedulers_accept_it():
    model = _net()
    opt = Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    for _ in range(2):
        _train(model, opt, 1)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 + torch.cos(torch.tensor(torch.pi / 2)).item()) / 2)


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_its_methods_never_import_torch_dynamo():
    """torch.optim.Adam imports torch._dynamo (with sympy) at its first add_param_group, zero_grad or step."""
    modules = _modules_after(
        "import torch\n"
        "from vaekit.training.adam import Adam\n"
        "m = torch.nn.Linear(3, 2)\n"
        "opt = Adam(m.parameters(), lr=1e-2, fused=True)\n"
        "sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)\n"
        "for _ in range(2):\n"
        "    opt.zero_grad(); m(torch.ones(4, 3)).sum().backward(); opt.step(); sched.step()\n"
        "opt.load_state_dict(opt.state_dict())\n")
    assert "torch" in modules
    assert "torch._dynamo" not in modules and "sympy" not in modules
