"""ELBO surgery (Hoffman & Johnson, 2016): what the average KL term is made of.

With the data set {x_1, ..., x_N} as the distribution of x (uniform over the examples) and the aggregate
posterior q(z) = (1/N) sum_n q(z|x_n),

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z))                                    (nats)
    I_q(x; z)          = E_x E_q(z|x) [log q(z|x) - log q(z)]   the information the code carries about x,
                                                               0 <= I_q <= log N
    KL(q(z) || p(z))   = E_q(z) [log q(z) - log p(z)]           how far the codes' distribution is from p(z)

Both are estimated by Monte Carlo: M draws (n_i uniform, z_i ~ q(z|x_{n_i})), and log q(z_i) summed exactly
over all N examples (no subsampling of the mixture), so each estimate is a mean of M independent terms and its
standard error is their standard deviation / sqrt(M). On the same draws the two estimates add up to the
average-KL estimate exactly. This is the number that says how much information the bottleneck lets through.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from vaekit.bounds.sizing import DEFAULT_MEMORY_BUDGET
from vaekit.distributions import DiagonalGaussianMixture, rsample, sample
from vaekit.distributions.discrete import FactorizedBernoulli, FactorizedCategorical
from vaekit.errors import ConfigError, VaekitError
from vaekit.resources import check_memory

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class SurgeryResult:
    """The average KL term split into I_q(x; z) and KL(q(z) || p(z)), nats, with Monte Carlo standard errors."""

    average_kl: float
    average_kl_stderr: float
    mutual_information: float
    mutual_information_stderr: float
    marginal_kl: float
    marginal_kl_stderr: float
    n: int  # examples forming the aggregate posterior
    samples: int  # Monte Carlo draws M

    @property
    def mutual_information_bound(self) -> float:
        """log N: no code can carry more information than which of the N examples it came from."""
        return math.log(self.n)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mutual_information_bound": self.mutual_information_bound}


#: Bytes held per Monte Carlo draw M: its example index (int64) and its terms in float64 (I_q, KL(q(z) || p(z)), their
#: sum, the concatenations and the means' temporaries).
BYTES_PER_SAMPLE = 64


def check_samples(samples: Any, name: str = "samples") -> int:
    """``samples`` M as an int >= 0 whose draws fit the memory budget (:func:`vaekit.resources.check_memory`), else a
    :class:`~vaekit.errors.ConfigError` naming ``name``: the argument, or the flag (``--surgery-samples``)."""
    given = f"{name} {samples}" if name.startswith("--") else f"{name}={samples!r}"[:60]
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 0:
        raise ConfigError(f"{given}: expected a whole number of draws >= 0 (0: no ELBO surgery)")
    check_memory(int(samples) * BYTES_PER_SAMPLE, f"{given} (the ELBO surgery's draws)", f"{name} (0: not estimated)")
    return int(samples)


def supports_surgery(model: LatentVariableModel) -> bool:
    """Whether log q(z|x) can be evaluated at any z: not for distributions whose density comes only with their
    own draws (flows, the two-level posterior)."""
    return bool(getattr(model, "supports_surgery", False))  # the model says so (vaekit.models.base)


def _diagonal(q: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    loc, logvar = getattr(q, "loc", None), getattr(q, "logvar", None)
    if isinstance(loc, torch.Tensor) and isinstance(logvar, torch.Tensor) and loc.dim() == 2:
        return loc, logvar
    return None


def _pairwise(q: Any, z: torch.Tensor) -> torch.Tensor:
    """log q(z_i | x_n), (M, N_c), for the M draws ``z`` against one batch's posterior ``q``, without the
    (M, N_c, L) tensor of a broadcast where the density is linear in a feature of z: a diagonal Gaussian's quadratic
    forms, a categorical's sum_(g,k) z_gk log pi_gk and a Bernoulli's z log s(l) + (1 - z) log s(-l) (s the
    sigmoid) are matrix products. Any other q is broadcast draw by draw in slices within the memory budget."""
    diag = _diagonal(q)
    if diag is not None:
        return DiagonalGaussianMixture(*diag).component_log_prob(z) + math.log(diag[0].shape[0])
    if isinstance(q, FactorizedCategorical) and q.logits.dim() == 3:
        return z.to(q.logits.dtype) @ q.logits.flatten(1).T
    if isinstance(q, FactorizedBernoulli) and q.logits.dim() == 2:
        z = z.to(q.logits.dtype)
        return z @ F.logsigmoid(q.logits).T + (1 - z) @ F.logsigmoid(-q.logits).T
    per_draw = max(1, math.prod(q.batch_shape)) * max(1, z[0].numel()) * z.element_size() * 4  # with temporaries
    step = max(1, DEFAULT_MEMORY_BUDGET // per_draw)
    return torch.cat([q.log_prob(z[i : i + step].unsqueeze(1)) for i in range(0, z.shape[0], step)])


def _log_densities(posteriors: list[Any], z: torch.Tensor) -> torch.Tensor:
    """log q(z_i | x_n) for every draw i and example n, (M, N), over the posteriors of the data in chunks."""
    return torch.cat([_pairwise(q, z) for q in posteriors], dim=1)


@torch.no_grad()
def elbo_surgery(model: LatentVariableModel, data: torch.Tensor, samples: int = 10_000, seed: int = 0,
                 batch_size: int = 1000,
                 y: Any = None) -> SurgeryResult:
    """Estimate I_q(x; z) and KL(q(z) || p(z)) for ``model`` on ``data`` (the N examples, (N, ...)).

    ``samples`` M draws; memory (M_chunk x N) log-densities at a time. Needs log q(z|x) at any z, which a
    diagonal Gaussian or a discrete q gives, but a flow (whose density is known only at its own draws) does not.
    """
    if not supports_surgery(model):
        raise VaekitError("ELBO surgery needs log q(z|x) at any z; a flow's density is known only at its own draws, "
                          "and a two-level model's q(z1, z2|x) is not split here")
    n = int(data.shape[0])
    if n < 2:
        raise VaekitError("ELBO surgery needs at least 2 examples")
    if check_samples(samples) < 2:
        raise VaekitError(f"samples must be >= 2, got {samples}")
    was_training = model.training
    model.eval()
    try:
        tensors = [*model.parameters(), *model.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
        gen = torch.Generator(device=device).manual_seed(int(seed))
        labels = None if y is None else torch.as_tensor(y)
        posteriors = []
        for start in range(0, n, batch_size):
            x = data[start : start + batch_size].to(device=device, dtype=dtype)
            yb = None if labels is None else labels[start : start + batch_size].to(device)
            posteriors.append(model.posterior(x, yb) if yb is not None else model.posterior(x))
        prior = model.prior_distribution()
        index = torch.randint(n, (samples,), generator=gen, device=device)
        terms_info, terms_marginal = [], []
        chunk = max(1, min(samples, 2**24 // max(n, 1)))
        for start in range(0, samples, chunk):
            idx = index[start : start + chunk]
            z, log_q_own = _draw(posteriors, idx, batch_size, gen)
            log_all = _log_densities(posteriors, z)  # (m, N)
            log_aggregate = torch.logsumexp(log_all, dim=1) - math.log(n)
            terms_info.append((log_q_own - log_aggregate).double())
            terms_marginal.append((log_aggregate - prior.log_prob(z)).double())
        info, marginal = torch.cat(terms_info), torch.cat(terms_marginal)
        total = info + marginal

        def mean_se(t: torch.Tensor) -> tuple[float, float]:
            return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(t.numel()))

        (avg, avg_se), (mi, mi_se), (mk, mk_se) = mean_se(total), mean_se(info), mean_se(marginal)
        return SurgeryResult(avg, avg_se, mi, mi_se, mk, mk_se, n, samples)
    finally:
        model.train(was_training)


def _draw(posteriors: list[Any], idx: torch.Tensor, batch_size: int,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent z_i ~ q(z | x_{idx_i}) and log q(z_i | x_{idx_i}): an example drawn r times gets r draws."""
    z_out: torch.Tensor | None = None
    lq_out = torch.empty(idx.shape[0], dtype=torch.float64, device=idx.device)
    for c, q in enumerate(posteriors):
        mine = ((idx // batch_size) == c).nonzero().squeeze(1)
        if mine.numel() == 0:
            continue
        local = idx[mine] - c * batch_size
        order = torch.argsort(local, stable=True)
        _, counts = torch.unique_consecutive(local[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(local)
        rank[order] = torch.arange(local.numel(), device=local.device) - torch.repeat_interleave(starts, counts)
        repeats = int(counts.max())
        draws = rsample(q, (repeats,), gen) if q.has_rsample else sample(q, (repeats,), gen)  # (r, N_c, L)
        log_q = q.log_prob(draws)  # (r, N_c)
        if z_out is None:
            z_out = torch.empty(idx.shape[0], draws.shape[-1], dtype=draws.dtype, device=draws.device)
        z_out[mine] = draws[rank, local]
        lq_out[mine] = log_q[rank, local].double()
    assert z_out is not None
    return z_out, lq_out
