"""``torch.optim.Adam`` without importing ``torch._dynamo``: the trainer's optimizer.

The update is Adam's (Kingma and Ba 2015), computed by torch's own code: for each parameter theta with gradient
g at step t,

    m_t = beta1 m_{t-1} + (1 - beta1) g,   v_t = beta2 v_{t-1} + (1 - beta2) g^2,
    theta_t = theta_{t-1} - lr (m_t / (1 - beta1^t)) / (sqrt(v_t / (1 - beta2^t)) + eps)

(plus ``weight_decay`` theta added to g). :class:`Adam` is a subclass of ``torch.optim.Adam`` whose
``add_param_group``, ``zero_grad``, ``state_dict``, ``load_state_dict`` and ``step`` call torch's functions
beneath their decorators (``inspect.unwrap``): ``torch._disable_dynamo`` on the first four and the graph breaks of
``_use_grad_for_differentiable`` on ``step``. Those decorators only matter while ``torch.compile`` traces the
optimizer, which vaekit never does (``--compile`` compiles the loss module alone), but each imports
``torch._dynamo`` at its first call, and with it sympy and scikit-learn: 1.3 to 2.7 s of a command's run on a
CPU, more than the 3 epochs of a small model take. The same code on the same tensors gives the same numbers and
the same ``state_dict``, so checkpoints written with either class load into the other and resume bit-exact
(``tests/test_training_adam.py``). Used where a plain Adam is asked for; anything else (auxiliary optimizers,
``torch.optim`` classes a user passes) keeps torch's own classes.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

#: torch's methods without their decorators (the innermost function of each ``functools.wraps`` chain).
_ADD_PARAM_GROUP = inspect.unwrap(torch.optim.Optimizer.add_param_group)
_ZERO_GRAD = inspect.unwrap(torch.optim.Optimizer.zero_grad)
_STATE_DICT = inspect.unwrap(torch.optim.Optimizer.state_dict)
_LOAD_STATE_DICT = inspect.unwrap(torch.optim.Optimizer.load_state_dict)
_STEP = inspect.unwrap(torch.optim.Adam.step)


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` (same arguments, update, state and ``state_dict``) whose methods never import
    ``torch._dynamo``; not for use inside a function that ``torch.compile`` traces."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _LOAD_STATE_DICT(self, state_dict)

    def step(self, closure=None):  # type: ignore[override]
        """One Adam update of every parameter with a gradient; gradients recorded only for ``differentiable``
        (as ``torch.optim.Adam.step``). Returns ``closure()``'s loss when a closure is given."""
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):
            return _STEP(self, closure)


def fused_available(device: torch.device) -> bool:
    """Whether this torch build has Adam's fused kernel (one pass over all parameters) on ``device``."""
    try:
        Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True
