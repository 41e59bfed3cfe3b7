"""One optimisation step without waiting for the host: the objective as a module (for DDP and torch.compile), the
batch buffer, the fused Adam update, the sticky skip of non-finite steps, and the backward passes of losses routed
to parameters of their own (the auxiliary optimizers', and q(z|x)'s where the objective trains it on its own loss:
:attr:`vaekit.objectives.Loss.inference`)."""

from __future__ import annotations

import torch

from vaekit import runtime as D
from vaekit.config import TrainConfig
from vaekit.errors import VaekitError
from vaekit.io import checkpoint as ckpt
from vaekit.models import LatentVariableModel
from vaekit.objectives import INFERENCE, Objective, build_objective
from vaekit.objectives.discrete import DiscreteEstimator
from vaekit.objectives.reparameterized import objective_loss
from vaekit.training.adam import Adam, fused_available

#: Steps between the loop's looks at the losses (one wait for the device each time, none in between): a NaN or
#: infinite loss stops training at most this many steps after it, named by its own epoch and step.
CHECK_EVERY = 25


class LossModule(torch.nn.Module):
    """The objective as a module, so DistributedDataParallel and torch.compile can wrap it.

    forward(x, beta, y) -> (loss, [sum ELBO, sum reconstruction, sum KL], auxiliary losses by name), the loss
    that of the :class:`~vaekit.objectives.Objective` (``objective``: one, or a registered name built with ``k``);
    a loss of q(z|x)'s own (:attr:`~vaekit.objectives.Loss.inference`) comes with the auxiliary losses, named
    :data:`~vaekit.objectives.base.INFERENCE`.
    With ``encoder_noise`` sigma > 0 the encoder sees x + sigma * eps, eps ~ N(0, I), in training
    (the decoder still scores the clean x; the objective stays a lower bound on log p(x)).
    """

    def __init__(self, model: LatentVariableModel, objective: Objective | str = "elbo", k: int = 1,
                 encoder_noise: float = 0.0, estimator: DiscreteEstimator | None = None):
        super().__init__()
        self.model = model
        self.objective = build_objective(objective, k=k) if isinstance(objective, str) else objective
        self.encoder_noise = encoder_noise
        self.estimator = estimator  # a discrete q(z|x): the gradient estimator's surrogate is what is maximised

    def forward(self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        x_enc = x + self.encoder_noise * torch.randn_like(x) if self.encoder_noise > 0 else None
        out = objective_loss(self.objective, self.model, x, y, beta=beta, encoder_input=x_enc,
                             estimator=self.estimator)  # a reparameterized estimator acts on the draws
        terms = out.terms
        with torch.no_grad():  # for the log: no graph
            stats = torch.stack([terms.elbo.sum(), terms.reconstruction.sum(), terms.kl.sum()])
        if out.inference is None:
            return out.loss, stats, out.auxiliary
        return out.loss, stats, {**out.auxiliary, INFERENCE: out.inference}


def _compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(module)`` for fixed shapes (a partial last batch runs eagerly, see :func:`_make_step`)."""
    try:
        return torch.compile(module, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler stack is one line
        raise VaekitError(f"--compile is not available here ({ckpt.one_line(exc)[:160]}); train without "
                          "--compile") from None


def _compile_failure(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor")) or type(exc).__name__ == "BackendCompilerFailed"


class _BatchBuffer:
    """Training batches ``data[idx]`` gathered by ``index_select`` into one buffer reused every step (contiguous,
    no allocation per step); a batch of another size (the partial last one) gets its own tensor. A batch is
    valid until the next ``take``: the step that uses it is done (its backward pass included) by then."""

    def __init__(self, data: torch.Tensor, rows: int):
        self.data = data
        self.buffer = torch.empty((min(rows, data.shape[0]), *data.shape[1:]), dtype=data.dtype, device=data.device)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[0] != self.buffer.shape[0]:
            return self.data.index_select(0, idx)
        return torch.index_select(self.data, 0, idx, out=self.buffer)


def _first_nonfinite(losses: torch.Tensor) -> tuple[int, float] | None:
    """(position, value) of the first NaN or infinite entry of ``losses``, or None; one wait for the device."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    first = int((~finite).nonzero()[0, 0])
    return first, float(losses[first])


def _skip_flag(optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """A 0-d tensor on the parameters' device that a fused Adam reads before each update (``found_inf``: 1 skips
    the update and leaves its step count as it was), or None where the optimizer is not fused."""
    if not optimizer.defaults.get("fused"):
        return None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return None
    flag = torch.zeros((), dtype=torch.float32, device=params[0].device)
    optimizer.found_inf = flag  # read by torch.optim.Adam.step (the hook GradScaler uses)
    return flag


class _AdamUpdate:
    """``optimizer.step()`` for a fused ``torch.optim.Adam``, without the per-call Python work around its kernel
    (hooks, grouping by device, profiler records): the same ``_fused_adam_`` call on the same tensors, so the same
    numbers. The first step (which creates the state), optimizers or settings it does not cover, and registered
    hooks go through ``optimizer.step()``."""

    def __init__(self, optimizer: torch.optim.Optimizer, found_inf: torch.Tensor | None):
        self.optimizer, self.found_inf = optimizer, found_inf
        self.direct = type(optimizer) in (torch.optim.Adam, Adam) and hasattr(torch, "_fused_adam_") and all(
            group.get("fused") and not any(group.get(k) for k in ("amsgrad", "maximize", "differentiable",
                                                                    "capturable", "decoupled_weight_decay"))
            and not any(torch.is_tensor(v) for v in (group["lr"], *group["betas"]))
            for group in optimizer.param_groups)

    def __call__(self) -> None:
        opt = self.optimizer
        work = self._work() if self.direct else None
        if work is None:
            opt.step()
            return
        for group, params, grads, states in work:
            steps = [st["step"] for st in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
                               [], steps, amsgrad=False, lr=group["lr"], beta1=group["betas"][0],
                               beta2=group["betas"][1], weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=self.found_inf)
            if self.found_inf is not None:
                torch._foreach_sub_(steps, [self.found_inf] * len(steps))

    def _work(self) -> list[tuple[dict, list, list, list]] | None:
        from torch.optim import optimizer as optim_module

        opt = self.optimizer
        if (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or getattr(optim_module, "_global_optimizer_pre_hooks", None)
                or getattr(optim_module, "_global_optimizer_post_hooks", None)):
            return None
        work = []
        for group in opt.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [opt.state.get(p) for p in params]
            if not all(states) or len({(p.device, p.dtype) for p in params}) > 1:
                return None  # state not created yet, or tensors the kernel takes in separate calls
            work.append((group, params, [p.grad for p in params], states))
        return work


def _make_step(loss_module, model: LatentVariableModel, optimizer: torch.optim.Optimizer, cfg: TrainConfig, amp,
               ctx: D.DistContext, eager: torch.nn.Module | None = None,
               estimator: torch.nn.Module | None = None,
               auxiliary: dict[str, torch.optim.Optimizer] | None = None):
    """One update on a batch; returns (loss, [sum ELBO, sum reconstruction, sum KL]) for logging.

    No step waits for the host: once a loss is NaN or infinite, this and every later update is skipped on the
    device (a fused optimizer's ``found_inf`` flag; other optimizers check the loss on the host), and the loop
    finds the first such loss when it next looks (every :data:`CHECK_EVERY` steps) and stops with its message.
    With ``eager`` (the module ``loss_module`` compiles), a batch of another size than ``cfg.batch_size`` (the
    partial last one) runs eagerly instead of recompiling the graph for its shape. The model's ``auxiliary``
    optimizers (by name) each take the gradient of the objective's auxiliary loss of that name; where the objective
    gives q(z|x) a loss of its own (:attr:`~vaekit.objectives.Loss.inference`), the parameters of q(z|x) take its
    gradient and the model's other parameters that of the loss (one update of the model's optimizer for both)."""
    owned = {id(p) for other in (auxiliary or {}).values() for group in other.param_groups for p in group["params"]}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in owned]
    if estimator is not None:
        params += list(estimator.parameters())
    routes = _Routes(model, params)
    compiled = eager is not None and eager is not loss_module
    skip = _skip_flag(optimizer) if not auxiliary else None
    update = _AdamUpdate(optimizer, skip)
    diverged = [False]  # without a fused optimizer: the host's record that a loss was not finite

    def step(x: torch.Tensor, beta: float, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        module = eager if compiled and x.shape[0] != cfg.batch_size else loss_module
        with amp:
            try:
                loss, stats, aux = module(x, beta) if y is None else module(x, beta, y)
            except Exception as exc:
                if module is loss_module and compiled and _compile_failure(exc):
                    raise VaekitError(f"--compile failed in this environment ({ckpt.one_line(exc)[:160]}); "
                                      "train without --compile") from None
                raise
        optimizer.zero_grad(set_to_none=True)
        if auxiliary or aux:
            _backward_parts(loss, routes, aux, auxiliary or {})
        else:
            loss.backward()
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        loss = loss.detach()
        if INFERENCE in aux:  # a non-finite loss of q(z|x) stops training as the model's own does
            loss = loss + 0.0 * aux[INFERENCE].detach()
        if ctx.enabled:  # every rank must see a NaN on any rank, or the others would wait for it
            loss = D.all_reduce_sum(loss.clone(), ctx) / ctx.world_size
        if skip is not None:  # sticky: after a non-finite loss the weights stay as they were before it
            skip.masked_fill_(~torch.isfinite(loss), 1.0)
            update()
        elif not diverged[0] and bool(torch.isfinite(loss)):
            optimizer.step()
            for other in (auxiliary or {}).values():
                other.step()
        else:
            diverged[0] = True
        return loss, stats.double()

    return step


class _Routes:
    """The parameters of the model's optimizer (``params``), and split, where an objective gives q(z|x) a loss of
    its own, into those of q(z|x) (the model's :meth:`~vaekit.models.base.LatentVariableModel.inference_parameters`)
    and the others; the split is made at its first use."""

    def __init__(self, model: LatentVariableModel, params: list[torch.nn.Parameter]):
        self.model, self.params = model, params
        self._split: tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]] | None = None

    def split(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """(the others, those of q(z|x)), each in the order of ``params``."""
        if self._split is None:
            inference = {id(p) for p in self.model.inference_parameters()}
            self._split = ([p for p in self.params if id(p) not in inference],
                           [p for p in self.params if id(p) in inference])
        return self._split


def _backward_parts(loss: torch.Tensor, routes: _Routes, aux: dict[str, torch.Tensor],
                    auxiliary: dict[str, torch.optim.Optimizer]) -> None:
    """Each optimizer's gradient from its own loss: the model's loss into its parameters alone (less those of
    q(z|x) where the objective gives them a loss of their own, :data:`INFERENCE`, which goes into them), each
    auxiliary loss into the parameters of the auxiliary optimizer of its name (one graph, walked once per loss)."""
    named = set(aux) - {INFERENCE}
    if named != set(auxiliary):
        raise VaekitError(f"the objective gives auxiliary losses {sorted(named)} but the model has auxiliary "
                          f"optimizers {sorted(auxiliary)}; they must name the same parts (see "
                          "LatentVariableModel.auxiliary_optimizers)")
    if INFERENCE in aux:
        others, inference = routes.split()
        parts = [(loss, others), (aux[INFERENCE], inference)]
    else:
        parts = [(loss, routes.params)]
    for name, other in auxiliary.items():
        other.zero_grad(set_to_none=True)
        parts.append((aux[name], [p for group in other.param_groups for p in group["params"]]))
    parts = [(value, inputs) for value, inputs in parts if inputs]  # e.g. train_only encoder: no generative part
    for i, (value, inputs) in enumerate(parts):
        torch.autograd.backward(value, inputs=inputs, retain_graph=i < len(parts) - 1)


def _fused_if_supported(device: torch.device) -> dict[str, bool]:
    """Adam's fused kernel (one pass over all parameters) where this torch build has it."""
    return {"fused": True} if fused_available(device) else {}
