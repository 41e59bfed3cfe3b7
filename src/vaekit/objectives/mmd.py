r"""The maximum mean discrepancy (MMD) between a batch's codes and draws of the prior: the divergence of WAE-MMD
(:mod:`vaekit.objectives.wae_mmd`) and InfoVAE-MMD (:mod:`vaekit.objectives.infovae_mmd`).

For codes a_1..a_n ~ q(z) (the batch's draws z ~ q(z|x), pooled over x) and draws b_1..b_m ~ p(z), the unbiased
U-statistic of Gretton et al. (2012, Lemma 6) is

    MMD_u^2 = 1/(n (n-1)) sum_{i != j} k(a_i, a_j) + 1/(m (m-1)) sum_{i != j} k(b_i, b_j)
              - 2/(n m) sum_{i, j} k(a_i, b_j),

whose expectation is MMD^2(q, p) >= 0, exactly 0 when q = p (a single estimate can be negative). Its unit is that
of the kernel (a dimensionless similarity), not nats. The kernels, for z in R^d and a prior N(0, sigma^2 I)
(sigma^2 = 1 here: the standard normal prior), with the base bandwidth C = 2 d sigma^2 of Tolstikhin et al.
(2018) and a list of scales s (the kernel is summed over them, as in Tolstikhin et al.'s code):

    imq:  k(a, b) = sum_s  s C / (s C + |a - b|^2)          (inverse multiquadratic)
    rbf:  k(a, b) = sum_s  exp(-|a - b|^2 / (s C))           (Gaussian, 2 h^2 = s C: h^2 = s d sigma^2)

so that for one scale s = 1 both kernels fall to a half (IMQ) or to e^-1 (RBF) at |a - b|^2 = 2 d, the mean
squared distance between two independent draws of N(0, I). The multi-scale default of WAE-MMD is Tolstikhin et
al.'s s in {0.1, 0.2, 0.5, 1, 2, 5, 10} (:data:`WAE_SCALES`).
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

import torch

from vaekit.distributions import StandardNormal, rsample
from vaekit.errors import ConfigError, VaekitError
from vaekit.objectives.base import Objective

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The kernels by name.
KERNELS = ("rbf", "imq")
#: Tolstikhin et al.'s scales of the base bandwidth C = 2 d sigma^2 (their code sums the IMQ kernel over them).
WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: The multiples of C a scale may be: far past any useful bandwidth, and C s stays a normal float32 number.
SCALE_RANGE = (1e-6, 1e6)


def parse_scales(text: str) -> tuple[float, ...]:
    """The scales of a setting like ``"1"`` or ``"0.1,0.2,0.5,1,2,5,10"``: finite numbers > 0, at most 32; else a
    ``ValueError`` naming the setting."""
    try:
        scales = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        scales = ()
    if not scales or len(scales) > 32 or not all(SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in scales):
        raise ValueError(f"scales must be 1 to 32 numbers from {SCALE_RANGE[0]:g} to {SCALE_RANGE[1]:g} separated "
                         f"by commas (multiples of the bandwidth C = 2 d), got {text!r}")
    return scales


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is one of :data:`KERNELS`; else a ``ValueError`` naming the setting."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be rbf or imq, got {kernel!r}")
    return kernel


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", scales: tuple[float, ...] = (1.0,),
                  sigma2: float = 1.0) -> torch.Tensor:
    """k(a_i, b_j) for a (n, d) and b (m, d): the (n, m) matrix of the module docstring's kernels, base bandwidth
    C = 2 d sigma2, summed over ``scales``."""
    sq = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(0) - 2.0 * a @ b.T).clamp_min(0.0)
    base = 2.0 * a.shape[-1] * float(sigma2)
    total = torch.zeros_like(sq)
    for s in scales:
        c = s * base
        total = total + (c / (c + sq) if kernel == "imq" else torch.exp(-sq / c))
    return total


def mmd2_unbiased(a: torch.Tensor, b: torch.Tensor, kernel: str = "imq", scales: tuple[float, ...] = (1.0,),
                  sigma2: float = 1.0) -> torch.Tensor:
    """MMD_u^2 between the rows of a (n, d), draws of q, and of b (m, d), draws of p: the unbiased U-statistic of
    the module docstring (a scalar; differentiable in a and b). n, m >= 2; ``kernel`` rbf or imq with the base
    bandwidth C = 2 d sigma2 summed over ``scales``.

    Raises:
        VaekitError: fewer than 2 rows in a or b, rows of different widths, or an unknown kernel.
    """
    if kernel not in KERNELS:
        raise VaekitError(f"kernel must be rbf or imq, got {kernel!r}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise VaekitError(f"a and b must be (n, d) and (m, d) with the same d; got {tuple(a.shape)} and "
                          f"{tuple(b.shape)}")
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise VaekitError(f"the unbiased MMD needs at least 2 rows in a and b; got n = {n}, m = {m} (a batch size "
                          "of at least 2)")
    k_aa = kernel_matrix(a, a, kernel, scales, sigma2)
    k_bb = kernel_matrix(b, b, kernel, scales, sigma2)
    k_ab = kernel_matrix(a, b, kernel, scales, sigma2)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return within_a + within_b - 2.0 * k_ab.mean()


def prior_draws(codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """As many draws of N(0, I) as ``codes`` (n, d) has rows, on its device and dtype (with ``generator``, else
    the global random state, which a checkpoint saves)."""
    return torch.randn(codes.shape, generator=generator, device=codes.device, dtype=codes.dtype)


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) spans of ``size`` rows covering n, the last one merged into the one before when it would hold
    a single row (the unbiased MMD needs two)."""
    spans = [(start, min(start + size, n)) for start in range(0, n, max(1, size))]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        spans[-2:] = [(spans[-2][0], n)]
    return spans


class MMDObjective(Objective):
    """What WAE-MMD and InfoVAE-MMD share: the MMD_u^2 of a batch's codes against as many draws of p(z) = N(0, I)
    (:func:`mmd2_unbiased` with ``kernel`` and ``scales`` of C = 2 d), its validation figure ``valid_mmd`` (the
    size-weighted mean over validation batches of ``batch_size``) and the models it takes: a continuous q(z|x)
    and the standard normal prior (the bandwidth is set for sigma^2 = 1)."""

    def __init__(self, kernel: str, weight: float, scales: str, k: int = 1, beta: float = 1.0, warmup: int = 0,
                 data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.kernel, self.weight = check_kernel(kernel), float(weight)
        self.scales = parse_scales(scales)

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        if model.is_discrete:
            raise ConfigError(f"objective {self.name} matches continuous codes to N(0, I); this model's q(z|x) is "
                              "discrete")
        if not isinstance(model.prior_distribution(), StandardNormal):
            raise ConfigError(f"objective {self.name} matches the codes to p(z) = N(0, I) (its kernel bandwidth is "
                              "set for it); use the standard prior with one level (leave --prior and --levels out)")

    def batch_mmd(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MMD_u^2 between the draws ``z`` (..., L), pooled into rows, and as many draws of N(0, I)."""
        codes = z.reshape(-1, z.shape[-1])
        return mmd2_unbiased(codes, prior_draws(codes, generator), self.kernel, self.scales)

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """``mmd``: sum over validation batches of (rows x MMD_u^2 of the batch), one draw z ~ q(z|x) per example
        and N(0, I) draws from ``generator``; the trainer divides it by the number of examples."""
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        if x.shape[0] < 2:
            return {"mmd": total + math.nan} if x.shape[0] else {"mmd": total}
        for start, stop in _spans(x.shape[0], batch_size):
            part = y[start:stop] if y is not None else None
            with autocast or contextlib.nullcontext():
                q = model.posterior(model.as_data(x[start:stop]), part)
                value = self.batch_mmd(rsample(q, (), generator), generator)
            total = total + value.double() * (stop - start)
        return {"mmd": total}
