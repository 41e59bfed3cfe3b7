"""Discrete latent codes: G groups of K-way one-hot variables, and d binary units.

    FactorizedCategorical:  q(z) = prod_g Cat(z_g; softmax(l_g)),   z = [onehot(z_1), ..., onehot(z_G)]  (G * K,)
                            log q(z) = sum_g sum_k z_gk log softmax(l_g)_k                                (nats)
    FactorizedBernoulli:    q(z) = prod_j Bern(z_j; sigmoid(l_j)),  z in {0, 1}^d
                            log q(z) = sum_j [z_j l_j - softplus(l_j)]

Neither has ``rsample``: a discrete draw carries no gradient. Training goes through an estimator
(:mod:`vaekit.objectives.discrete`): exact enumeration (``enumerate_support``, K^G or 2^d configurations), the
score function, or the relaxations :meth:`relaxed_rsample` (Gumbel-softmax / binary Concrete, Jang et al. 2017;
Maddison et al. 2017), with ``hard=True`` the straight-through variant (a discrete value forward, the relaxed
gradient backward). Every sampler takes a ``generator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical, Distribution, constraints

#: The most configurations :meth:`enumerate_support` builds (2^24 codes).
MAX_SUPPORT = 2**24


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) noise strictly inside (0, 1), so that log u and log(1 - u) are finite."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    tiny = torch.finfo(like.dtype).tiny
    return u.clamp(tiny, 1.0 - torch.finfo(like.dtype).eps)


def _check_support(size: int) -> None:
    if size > MAX_SUPPORT:
        raise ValueError(f"the latent space has {size} configurations, more than the {MAX_SUPPORT} that can be "
                         "enumerated; use a sampling estimator or fewer latent variables")


class FactorizedCategorical(Distribution):
    """G independent K-way categoricals as a flat one-hot code; ``logits`` (..., G, K), event (G * K,)."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.real_vector  # one-hot groups; not a torch constraint of its own
    has_rsample = False
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor):
        if logits.dim() < 2:
            raise ValueError(f"logits must be (..., G, K), got shape {tuple(logits.shape)}")
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.groups, self.classes = int(logits.shape[-2]), int(logits.shape[-1])
        super().__init__(batch_shape=logits.shape[:-2], event_shape=torch.Size([self.groups * self.classes]),
                         validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        """(..., G, K) class probabilities."""
        return self.logits.exp()

    @property
    def mean(self) -> torch.Tensor:
        return self.probs.flatten(-2)

    def point(self) -> torch.Tensor:
        """The code that stands for q in pictures: its mean, the class probabilities (flat, (..., G * K))."""
        return self.mean

    @property
    def support_size(self) -> int:
        return self.classes**self.groups

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = value.reshape(*value.shape[:-1], self.groups, self.classes)
        return (z * self.logits).sum((-1, -2))

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum((-1, -2))

    def _onehot(self, index: torch.Tensor) -> torch.Tensor:
        return F.one_hot(index, self.classes).to(self.logits.dtype).flatten(-2)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """One-hot draws by the Gumbel-max trick, argmax_k (l_k + g_k), g = -log(-log u)."""
        shape = torch.Size(sample_shape) + self.logits.shape
        with torch.no_grad():
            gumbel = -torch.log(-torch.log(_uniform(shape, self.logits, generator)))
            return self._onehot((self.logits.detach() + gumbel).argmax(-1))

    def relaxed_rsample(self, temperature: float | torch.Tensor, sample_shape: torch.Size | tuple = (),
                        generator: torch.Generator | None = None, hard: bool = False) -> torch.Tensor:
        """Gumbel-softmax y = softmax((l + g) / tau) per group (flat (..., G * K)); with ``hard`` the one-hot
        argmax forward and the gradient of y backward (straight-through)."""
        shape = torch.Size(sample_shape) + self.logits.shape
        gumbel = -torch.log(-torch.log(_uniform(shape, self.logits, generator)))
        soft = torch.softmax((self.logits + gumbel) / temperature, dim=-1)
        if hard:
            onehot = F.one_hot(soft.argmax(-1), self.classes).to(soft.dtype)
            soft = onehot - soft.detach() + soft
        return soft.flatten(-2)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """Every code, (K^G, *batch, G * K) (``expand=False``: (K^G, 1, ..., 1, G * K)); group 1 varies slowest."""
        size = self.support_size
        _check_support(size)
        index = torch.arange(size, device=self.logits.device)
        powers = self.classes ** torch.arange(self.groups - 1, -1, -1, device=self.logits.device)
        digits = (index[:, None] // powers) % self.classes  # (S, G)
        codes = self._onehot(digits)  # (S, G * K)
        codes = codes.reshape(size, *([1] * len(self.batch_shape)), codes.shape[-1])
        return codes.expand(size, *self.batch_shape, codes.shape[-1]) if expand else codes

    def factors(self) -> Categorical:
        """The G categoricals, batch (..., G): for per-group KL terms."""
        return Categorical(logits=self.logits, validate_args=False)

    def expand(self, batch_shape: torch.Size | tuple, _instance: Distribution | None = None) -> FactorizedCategorical:
        return FactorizedCategorical(self.logits.expand(*batch_shape, self.groups, self.classes))


class FactorizedBernoulli(Distribution):
    """d independent binary units; ``logits`` (..., d), event (d,)."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False
    has_enumerate_support = True

    def __init__(self, logits: torch.Tensor):
        if logits.dim() < 1:
            raise ValueError("logits must be (..., d)")
        self.logits = logits
        self.units = int(logits.shape[-1])
        super().__init__(batch_shape=logits.shape[:-1], event_shape=logits.shape[-1:], validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    def point(self) -> torch.Tensor:
        return self.probs

    @property
    def support_size(self) -> int:
        return 2**self.units

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.logits
        if value.shape != logits.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)

    def entropy(self) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none").sum(-1)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.logits.shape
        with torch.no_grad():
            return (_uniform(shape, self.logits, generator) < self.probs.detach()).to(self.logits.dtype)

    def relaxed_rsample(self, temperature: float | torch.Tensor, sample_shape: torch.Size | tuple = (),
                        generator: torch.Generator | None = None, hard: bool = False) -> torch.Tensor:
        """Binary Concrete y = sigmoid((l + log u - log(1 - u)) / tau); with ``hard`` the value 1[y > 1/2]
        forward and the gradient of y backward (straight-through)."""
        shape = torch.Size(sample_shape) + self.logits.shape
        u = _uniform(shape, self.logits, generator)
        soft = torch.sigmoid((self.logits + torch.log(u) - torch.log1p(-u)) / temperature)
        if hard:
            soft = (soft > 0.5).to(soft.dtype) - soft.detach() + soft
        return soft

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """Every code, (2^d, *batch, d) (``expand=False``: (2^d, 1, ..., 1, d)); unit 1 is the most significant bit."""
        size = self.support_size
        _check_support(size)
        index = torch.arange(size, device=self.logits.device)
        powers = 2 ** torch.arange(self.units - 1, -1, -1, device=self.logits.device)
        codes = ((index[:, None] // powers) % 2).to(self.logits.dtype)
        codes = codes.reshape(size, *([1] * len(self.batch_shape)), self.units)
        return codes.expand(size, *self.batch_shape, self.units) if expand else codes

    def factors(self) -> Bernoulli:
        return Bernoulli(logits=self.logits, validate_args=False)

    def expand(self, batch_shape: torch.Size | tuple, _instance: Distribution | None = None) -> FactorizedBernoulli:
        return FactorizedBernoulli(self.logits.expand(*batch_shape, self.units))


def support_size(d: Distribution) -> int | None:
    """The number of configurations of a discrete distribution that can be enumerated, else None."""
    size = getattr(d, "support_size", None)
    return int(size) if getattr(d, "has_enumerate_support", False) and size is not None else None

