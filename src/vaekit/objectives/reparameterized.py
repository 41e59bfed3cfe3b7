"""Gradient estimators for the encoder of a reparameterized q(z|x): ``pathwise``, ``stl`` and ``dreg``, each a
registered name in :data:`REPARAMETERIZED`, chosen by ``--estimator`` as the discrete latents' estimators are
(:mod:`vaekit.objectives.discrete`).

With z = T_phi(eps), eps ~ N(0, I), a draw enters an objective through its two terms r = log p(x|z) and
c = log q_phi(z|x) - log p(z) (nats). For a loss L of the draws, the pathwise gradient with respect to the
encoder's weights phi is, draw by draw,

    dL/dphi = [dL/dr dr/dz + dL/dc dc/dz] dz/dphi        (the path of z)
            + dL/dc  d log q_phi(z|x)/dphi |_z            (the score term: q's parameters moved at fixed z)

* ``pathwise``: both terms, the objective differentiated as it is computed (vaekit's default; unchanged).
* ``stl``, "sticking the landing" (Roeder et al., 2017): the score term dropped, by evaluating log q(z|x) at a
  stopped-gradient copy of q's parameters while z keeps its path. Since E_q[d log q/dphi] = 0, the dropped term has
  expectation 0 wherever dL/dc is a constant (-beta / N for the beta-weighted ELBO): STL is unbiased for the
  gradient of the ELBO (of any loss linear in log q), and at q = p(z|x) its encoder gradient is exactly 0 (each
  draw's r - c is log p(x) there). For IWAE_K, dL/dc_k = w~_k / N depends on the draws and STL is biased
  (Tucker et al., 2019); at K = 1 it is the ELBO's.
* ``dreg``, doubly reparameterized (Tucker et al., 2019): the score term replaced by its reparameterized equal.
  For any h(z) (phi in h held), E_q[h(z) d log q_phi(z)/dphi] = E[dh/dz dz/dphi]; with h = dL/dc_k of draw k (the
  other draws held) the encoder's gradient is

      sum_k [(dL/dr_k + d2L/dr_k dc_k) dr_k/dz_k + (dL/dc_k + d2L/dc_k^2) dc_k/dz_k] dz_k/dphi,

  log q at stopped parameters. For IWAE_K, L = -log (1/K) sum_k w_k with log w_k = r_k - c_k, it is
  -sum_k w~_k^2 d log w_k/dz_k dz_k/dphi (w~_k = w_k / sum_j w_j), Tucker et al.'s; the decoder's gradient stays
  -sum_k w~_k d log w_k/dtheta. For a loss linear in the log weights (the ELBO) the second derivatives vanish and
  it is STL. Unbiased for the gradient of the objective's own expectation; for objectives that declare
  ``importance_weighted`` (:class:`vaekit.objectives.Objective`): a loss that is a sum over examples of a function
  of each example's log weights (IWAE, and any multi-sample bound made of them).

The estimators act where the draws are made: :func:`vaekit.objectives.terms.elbo` and
:func:`~vaekit.objectives.terms.sampled_terms` draw through the :func:`active_session`, so an objective that makes
its draws there gets them without a line of its own, and :func:`objective_loss` runs an objective's loss in one.
DReG's second derivatives come from autograd on the objective's own graph from its draws' terms to its loss (one
batched vector-Jacobian product per draw per example, no network involved) and reach the encoder by rescaling the
gradient that flows back into each draw z_k: by (dL/dr_k + d2L/dr_k dc_k) / (dL/dr_k) on its way into p(x|z), and
likewise for c_k. So one backward pass through the decoder, as for the pathwise gradient. (A draw whose dL/dr_k or
dL/dc_k is exactly 0, an importance weight that underflows, passes no gradient either way.)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vaekit.distributions import rsample, stopped_log_prob
from vaekit.errors import ConfigError, VaekitError, option
from vaekit.registry import Registry

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The gradient estimators of a reparameterized q(z|x), by name (``--estimator pathwise|stl|dreg``).
REPARAMETERIZED = Registry("estimator")
#: The most numbers (tangents x draws x examples) that DReG's second derivatives hold at once.
HESSIAN_CHUNK = 2**22

_ACTIVE: contextvars.ContextVar[Session | None] = contextvars.ContextVar("vaekit_estimator_session", default=None)


def active_session() -> Session | None:
    """The estimator session in which the objectives make their draws now; None: the pathwise default."""
    return _ACTIVE.get()


@dataclass(eq=False)
class _Draw:
    """One call's draws: r = log p(x|z) and c = log q(z|x) - log p(z), each (..., N), and DReG's rescaling of the
    gradient flowing back into z along each (None: unchanged), set once the loss is known."""

    rec: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    scale_rec: torch.Tensor | None = None
    scale_kl: torch.Tensor | None = None


class _ScaleGrad(torch.autograd.Function):
    """z unchanged forward; backward, the gradient of each draw z (..., N, L) times the draw's scale (..., N), read
    from ``record`` when the backward pass runs."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, record: _Draw, attr: str) -> torch.Tensor:
        ctx.record, ctx.attr = record, attr
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        scale = getattr(ctx.record, ctx.attr)
        return (grad if scale is None else grad * scale.unsqueeze(-1).to(grad.dtype)), None, None


class Session:
    """One loss evaluated under an estimator: the draws the objective made (:meth:`draw`), and what the estimator
    does once the loss is known (:meth:`finish`)."""

    def __init__(self, estimator: ReparameterizedEstimator):
        self.estimator = estimator
        self.draws: list[_Draw] = []

    def draw(self, q: Any, log_prior: Callable[[torch.Tensor], torch.Tensor],
             log_likelihood: Callable[[torch.Tensor], torch.Tensor], sample_shape: tuple[int, ...] = (),
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log p(x|z), log q(z|x) - log p(z), z) for z ~ q(z|x) of ``sample_shape`` by reparameterization, log q
        at stopped-gradient parameters; each term (*sample_shape, N), nats."""
        if not getattr(q, "has_rsample", False) or getattr(q, "is_point_mass", False):
            raise VaekitError(f"{option('estimator', self.estimator.name)} needs a reparameterized q(z|x) with a "
                              f"density; this one is a {type(q).__name__}")
        z = rsample(q, sample_shape, generator)
        record = _Draw()
        z_rec, z_kl = self.estimator.paths(z, record)
        rec = log_likelihood(z_rec)
        kl = stopped_log_prob(q, z_kl) - log_prior(z_kl)
        record.rec, record.kl = rec, kl
        self.draws.append(record)
        return rec, kl, z

    def finish(self, out: Any, objective: str) -> None:
        """After the objective's loss ``out`` (a :class:`~vaekit.objectives.Loss`): refuse an objective that made
        no draws here, and let the estimator act on the loss that trains q(z|x) (``out.inference`` where the
        objective gives it one, else ``out.loss``)."""
        if not self.draws:
            raise VaekitError(f"objective {objective} makes no draws through vaekit.objectives.terms (elbo, "
                              f"sampled_terms), where {option('estimator', self.estimator.name)} acts; use "
                              f"{option('estimator', 'pathwise')}")
        inference = getattr(out, "inference", None)
        try:
            self.estimator.finish(out.loss if inference is None else inference, self.draws)
        finally:
            for record in self.draws:  # the backward pass reads only the scales: no cycle through the graph
                record.rec = record.kl = None


class ReparameterizedEstimator(nn.Module):
    """An estimator of the encoder's gradient for a reparameterized q(z|x) (see the module docstring). A module
    without weights, so that the trainer keeps, saves and restores it as it does a discrete estimator."""

    name = ""  # set by the registration
    #: The trainer's question to every estimator: does the decoder see relaxed codes in training (no).
    relaxed = False
    #: It acts where the draws are made (:func:`objective_loss`), not through the objective's own argument.
    acts_on_draws = True
    #: log q(z|x) is taken at stopped-gradient parameters (q must offer ``has_stopped_log_prob``).
    stops_score = False
    #: It needs an objective that declares ``importance_weighted``.
    needs_importance_weights = False

    def set_step(self, step: int) -> None:
        """The training step (nothing to schedule)."""

    def describe(self) -> str:
        return self.name

    def paths(self, z: torch.Tensor, record: _Draw) -> tuple[torch.Tensor, torch.Tensor]:
        """The draw as p(x|z) sees it and as log q - log p(z) sees it (the same z here)."""
        return z, z

    def finish(self, loss: torch.Tensor, draws: list[_Draw]) -> None:
        """What to do once the loss that trains q(z|x) is known (nothing here)."""

    @contextlib.contextmanager
    def session(self) -> Iterator[Session | None]:
        """The draws made inside go through this estimator (None for the pathwise default, which changes none)."""
        if not self.stops_score:
            yield None
            return
        if _ACTIVE.get() is not None:
            raise VaekitError("an estimator session is already active; evaluate one loss at a time")
        session = Session(self)
        token = _ACTIVE.set(session)
        try:
            yield session
        finally:
            _ACTIVE.reset(token)


@REPARAMETERIZED.register("pathwise", help="the pathwise (reparameterization) gradient as computed (the default)")
class Pathwise(ReparameterizedEstimator):
    """The objective's own gradient by reparameterization: path and score terms (vaekit's default)."""


@REPARAMETERIZED.register("stl", help="sticking the landing: log q(z|x) at stopped parameters, z keeps its path "
                          "(unbiased for the ELBO; Roeder et al. 2017)")
class StickingTheLanding(ReparameterizedEstimator):
    """The score term dropped (Roeder et al., 2017): unbiased for losses linear in log q (the ELBO)."""

    stops_score = True


@REPARAMETERIZED.register("dreg", help="doubly reparameterized gradient of importance-weighted bounds, e.g. "
                          "sum_k w~_k^2 d log w_k/dz dz/dphi for IWAE (Tucker et al. 2019)")
class DoublyReparameterized(ReparameterizedEstimator):
    """The score term replaced by its reparameterized equal (Tucker et al., 2019): unbiased, for objectives
    that declare ``importance_weighted``."""

    stops_score = True
    needs_importance_weights = True

    def paths(self, z: torch.Tensor, record: _Draw) -> tuple[torch.Tensor, torch.Tensor]:
        return _ScaleGrad.apply(z, record, "scale_rec"), _ScaleGrad.apply(z, record, "scale_kl")

    def finish(self, loss: torch.Tensor, draws: list[_Draw]) -> None:
        """Set each draw's rescaling from dL/dr, dL/dc and d2L/dc dr, d2L/dc^2 (the module docstring)."""
        if not loss.requires_grad:
            return
        inputs = [t for d in draws for t in (d.rec, d.kl)]
        firsts = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
        for i, record in enumerate(draws):
            g_rec, g_kl = firsts[2 * i], firsts[2 * i + 1]
            if g_kl is None or g_kl.grad_fn is None:  # L linear in this draw's c: no second derivatives (STL)
                continue
            d_rec, d_kl = _diagonal(g_kl, record.rec, record.kl)
            record.scale_rec, record.scale_kl = _ratio(g_rec, d_rec), _ratio(g_kl, d_kl)


def _ratio(first: torch.Tensor | None, second: torch.Tensor) -> torch.Tensor | None:
    """(first + second) / first where first != 0, else 1 (no gradient flows there): the rescaling of a path."""
    if first is None:
        return None
    first = first.detach()
    nonzero = first != 0
    return torch.where(nonzero, 1.0 + second / torch.where(nonzero, first, torch.ones_like(first)), 1.0)


def _diagonal(g: torch.Tensor, rec: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(d g_e / d rec_e, d g_e / d kl_e) for every entry e of the draws' terms (..., N): the diagonal of the
    Jacobian of g = dL/dc, one tangent per draw (all N examples at once, the loss being a sum over examples of
    functions of each example's draws); batched vector-Jacobian products, :data:`HESSIAN_CHUNK` numbers at a time."""
    n = rec.shape[-1] if rec.dim() else 1
    count = max(1, rec.numel() // max(n, 1))
    out_rec, out_kl = torch.zeros(count, n, dtype=g.dtype, device=g.device), torch.zeros_like(g).reshape(count, n)
    step = max(1, HESSIAN_CHUNK // max(rec.numel(), 1))
    for start in range(0, count, step):
        m = min(step, count - start)
        index = torch.arange(m, device=g.device)
        tangents = torch.zeros(m, count, n, dtype=g.dtype, device=g.device)
        tangents[index, start + index] = 1.0
        parts = torch.autograd.grad(g, [rec, kl], grad_outputs=tangents.reshape(m, *g.shape), retain_graph=True,
                                    allow_unused=True, is_grads_batched=True)
        for out, part in zip((out_rec, out_kl), parts):
            if part is not None:
                out[start:start + m] = part.reshape(m, count, n)[index, start + index]
    return out_rec.reshape(rec.shape).detach(), out_kl.reshape(kl.shape).detach()


# -- using them --------------------------------------------------------------------------------------------


def build_estimator(name: str) -> ReparameterizedEstimator:
    """The registered estimator ``name`` (pathwise, stl or dreg); an unknown name is one line with the choices."""
    return REPARAMETERIZED.build(name)


def objective_loss(objective: Any, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *,
                   beta: float = 1.0, encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Any:
    """``objective.loss(model, x, y, ...)`` with its estimator: a discrete q(z|x)'s estimator is handed to the
    objective (its surrogate); a reparameterized one (``acts_on_draws``) acts on the draws the objective makes
    (through :mod:`vaekit.objectives.terms`) and, for DReG, on the loss once it is known. Returns the
    :class:`~vaekit.objectives.Loss`; its value is the objective's whatever the estimator. ``estimator`` may be
    a reparameterized estimator's name (``"stl"``)."""
    if isinstance(estimator, str):
        estimator = build_estimator(estimator)
    if not getattr(estimator, "acts_on_draws", False):
        return objective.loss(model, x, y, beta=beta, encoder_input=encoder_input, estimator=estimator)
    if not estimator.stops_score:  # the pathwise gradient: the objective as it is
        return objective.loss(model, x, y, beta=beta, encoder_input=encoder_input)
    with estimator.session() as session:
        out = objective.loss(model, x, y, beta=beta, encoder_input=encoder_input)
        session.finish(out, getattr(objective, "name", type(objective).__name__))
    return out


def _probe_posterior(model: LatentVariableModel) -> Any:
    """q(z|x) of one all-zero example (its type and capabilities, not its values), or None when the model cannot
    give one before training (a user network not built yet)."""
    anchor = next(iter(model.parameters()), None)
    anchor = anchor if anchor is not None else next(iter(model.buffers()), None)
    shape = getattr(model, "shape", None)
    if anchor is None or shape is None:
        return None
    x = torch.zeros(1, *shape, dtype=anchor.dtype, device=anchor.device)
    y = torch.zeros(1, dtype=torch.long, device=anchor.device) if getattr(model, "condition", 0) else None
    try:
        with torch.no_grad():
            return model.posterior(x, y)
    except Exception:  # noqa: BLE001 - a model the probe cannot run: the first training step says what is wrong
        return None


def check_reparameterized_estimator(model: LatentVariableModel, name: str, objective: Any) -> None:
    """Refuse, in one line, a reparameterized estimator that cannot train this model with this objective: any of
    them on a discrete q(z|x); stl or dreg on a q without a density (a point mass) or without log q at stopped
    parameters (``has_stopped_log_prob``: the two-level q(z1, z2|x)); dreg with an objective that is not
    ``importance_weighted`` (the ELBO, for which DReG is STL)."""
    cls = REPARAMETERIZED.entry(name).cls
    if getattr(model, "is_discrete", False):
        raise ConfigError(f"{option('estimator', name)} is for a reparameterized q(z|x); this model's is discrete: use "
                          "enumerate, score, nvil, vimco, gumbel or straight-through")
    objective_name = getattr(objective, "name", str(objective))
    if cls.needs_importance_weights and not getattr(objective, "importance_weighted", False):
        raise ConfigError(f"{option('estimator', name)} is for importance-weighted bounds (e.g. "
                          f"{option('objective', 'iwae')}); objective {objective_name} is not one: use "
                          f"{option('estimator', 'stl')} (DReG of the ELBO is STL)")
    if not cls.stops_score:
        return
    if getattr(model, "is_autoencoder", False):
        raise ConfigError(f"{option('estimator', name)} takes log q(z|x) at the draws; an autoencoder's q(z|x) is a "
                          f"point mass with no density: leave {option('estimator')} out")
    q = _probe_posterior(model)
    if q is not None and not getattr(q, "has_stopped_log_prob", False):
        raise ConfigError(f"{option('estimator', name)} takes log q(z|x) at stopped-gradient parameters, which this "
                          f"model's q(z|x) ({type(q).__name__}) does not give (has_stopped_log_prob); use "
                          f"{option('estimator', 'pathwise')}")


def estimator_names() -> list[str]:
    """Every estimator's name: the reparameterized ones, then the discrete ones."""
    from vaekit.objectives.discrete import ESTIMATORS

    return [*REPARAMETERIZED.names(), *ESTIMATORS]
