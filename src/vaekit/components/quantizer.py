"""Vector quantization (van den Oord et al., 2017): the codebook quantizer of a VQ-VAE and the priors over its grid.

The encoder gives a grid z_e(x) of G = h w vectors of size D; each is replaced by its nearest codebook vector,

    k_g(x) = argmin_k ||z_e,g(x) - e_k||^2,      z_q,g(x) = e_(k_g(x))           (codebook e: (K, D))

and the decoder sees z_q. The argmin has no gradient: the straight-through estimator passes the decoder's gradient
with respect to z_q to z_e unchanged (z_q = z_e + sg[z_q - z_e] in the forward pass; sg: stop-gradient). Two
squared distances, summed over the grid and the D dimensions of each example, train the rest:

    codebook loss     ||sg[z_e(x)] - e||^2            (moves the chosen codebook vectors towards the encoder's)
    commitment loss   beta ||z_e(x) - sg[e]||^2        (keeps the encoder near its codes; beta = 0.25)

With ``ema`` the codebook is no parameter: it follows exponential moving averages of the encoder's vectors
(the paper's appendix A.1; Sonnet's VectorQuantizerEMA), and the codebook loss is dropped. For a batch with n_k
vectors assigned to code k, of sum s_k, and decay gamma:

    N_k <- gamma N_k + (1 - gamma) n_k,   m_k <- gamma m_k + (1 - gamma) s_k,
    e_k  = m_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j     (Laplace smoothing)

starting from N_k = 1 and m_k = e_k (the initial codebook), so that a code no vector has chosen stays where it is.
Under DistributedDataParallel n_k and s_k are those of the whole batch, summed over the ranks before the update, so
that every rank holds the same codebook, that of one process on the concatenated batch.

As a latent-variable model q(z|x) is the point mass on the one-hot code grid k(x) (entropy 0), and the priors here
are distributions over that grid: :class:`UniformCodePrior` (p(z) = K^-G, the prior while the autoencoder trains)
and :class:`PixelCNNCodePrior` (an autoregressive :class:`~vaekit.nn.CategoricalPixelCNN` fitted to the codes of
the training set afterwards, as in the paper). Codes z travel as flat one-hot vectors (..., G K), position-major.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from vaekit.nn import CategoricalPixelCNN

#: The most codes K and code dimensions D a quantizer takes.
MAX_CODES, MAX_CODE_DIM = 2**16, 2**12


@dataclass
class QuantizerConfig:
    codes: int = 512  # K: codebook vectors
    code_dim: int = 64  # D: dimensions of each
    commitment: float = 0.25  # beta of the commitment loss
    ema: bool = False  # codebook by exponential moving averages (no codebook loss)
    decay: float = 0.99  # gamma of the moving averages
    epsilon: float = 1e-5  # Laplace smoothing of the cluster sizes

    def __post_init__(self) -> None:
        for name, high in (("codes", MAX_CODES), ("code_dim", MAX_CODE_DIM)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not (2 if name == "codes" else 1) <= value \
                    <= high:
                raise ValueError(f"{name} must be an integer from {2 if name == 'codes' else 1} to {high}, "
                                 f"got {value!r}")
        if not (math.isfinite(self.commitment) and 0 <= self.commitment <= 1e6):
            raise ValueError(f"commitment must be a number from 0 to 1e6, got {self.commitment}")
        if not isinstance(self.ema, bool):
            raise ValueError(f"ema must be true or false, got {self.ema!r}")
        if not (math.isfinite(self.decay) and 0 <= self.decay < 1):
            raise ValueError(f"decay must be a number in [0, 1), got {self.decay}")
        if not (math.isfinite(self.epsilon) and 0 < self.epsilon <= 1):
            raise ValueError(f"epsilon must be a number in (0, 1], got {self.epsilon}")


class Quantized(NamedTuple):
    """One pass of the quantizer over a grid z_e (N, D, h, w): the straight-through z_q (N, D, h, w), the chosen
    codes (N, h, w), and per example (N,) the codebook and commitment losses (squared distances summed over the
    grid and the D dimensions; the commitment loss already weighted by beta)."""

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class VectorQuantizer(nn.Module):
    """The nearest-codebook-vector quantizer of the module docstring: K codes of D dimensions, the straight-through
    estimator, the codebook and commitment losses, or (``ema``) the moving-average codebook."""

    def __init__(self, codes: int = 512, code_dim: int = 64, commitment: float = 0.25, ema: bool = False,
                 decay: float = 0.99, epsilon: float = 1e-5):
        super().__init__()
        cfg = QuantizerConfig(codes, code_dim, commitment, ema, decay, epsilon)  # range checks: ValueError
        self.codes, self.code_dim, self.commitment = cfg.codes, cfg.code_dim, float(cfg.commitment)
        self.ema, self.decay, self.epsilon = cfg.ema, float(cfg.decay), float(cfg.epsilon)
        init = torch.empty(codes, code_dim).uniform_(-1.0 / codes, 1.0 / codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(codes))
            self.register_buffer("embedding_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    def config(self) -> dict[str, object]:
        return {"codes": self.codes, "code_dim": self.code_dim, "commitment": self.commitment, "ema": self.ema,
                "decay": self.decay, "epsilon": self.epsilon}

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """k = argmin_k ||z - e_k||^2 for each vector of the grid z_e (N, D, h, w): (N, h, w) int64."""
        flat = z_e.detach().movedim(1, -1).reshape(-1, self.code_dim)
        e = self.codebook.detach()
        distances = flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(-1)
        return distances.argmin(-1).reshape(z_e.shape[0], *z_e.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The grid of codebook vectors for one-hot (or soft) codes (N, h, w, K): sum_k z_k e_k, (N, D, h, w)."""
        return (codes.to(self.codebook.dtype) @ self.codebook).movedim(-1, 1)

    def forward(self, z_e: torch.Tensor) -> Quantized:
        indices = self.nearest(z_e)
        e = F.embedding(indices, self.codebook).movedim(-1, 1)  # (N, D, h, w)
        codebook_loss = (z_e.detach() - e).pow(2).flatten(1).sum(-1) if not self.ema else \
            z_e.new_zeros(z_e.shape[0])
        commitment_loss = self.commitment * (z_e - e.detach()).pow(2).flatten(1).sum(-1)
        z_q = z_e + (e - z_e).detach()  # straight-through: the value of e, the gradient of z_e
        return Quantized(z_q, indices, codebook_loss, commitment_loss)

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, indices: torch.Tensor) -> None:
        """One step of the moving averages (module docstring) from a batch's grid z_e (N, D, h, w) and its codes."""
        if not self.ema:
            raise ValueError("this quantizer's codebook is trained by gradient (ema false)")
        flat = z_e.detach().movedim(1, -1).reshape(-1, self.code_dim).to(self.codebook.dtype)
        onehot = F.one_hot(indices.reshape(-1), self.codes).to(flat.dtype)  # (M, K)
        counts, sums = _global_batch(onehot.sum(0), onehot.T @ flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codes * self.epsilon) * total
        self.codebook.copy_(self.embedding_sum / smoothed[:, None])

    def extra_repr(self) -> str:
        return f"codes={self.codes}, code_dim={self.code_dim}, commitment={self.commitment:g}, ema={self.ema}"


def _global_batch(counts: torch.Tensor, sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """n_k (K,) and s_k (K, D) of the whole batch: summed over the ranks of an initialised process group of more
    than one process (one all-reduce of the K (D + 1) numbers), as they are otherwise."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return counts, sums
    both = torch.cat([counts[:, None], sums], 1)
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    return both[:, 0], both[:, 1:]


# -- priors over the code grid --------------------------------------------------------------------------


def one_hot_grid(indices: torch.Tensor, classes: int) -> torch.Tensor:
    """Codes (..., h, w) int -> flat one-hot vectors (..., h w K), position-major (the model's z)."""
    return F.one_hot(indices, classes).flatten(-3).float()


def grid_indices(z: torch.Tensor, grid: tuple[int, int], classes: int) -> torch.Tensor:
    """Flat one-hot codes (..., h w K) -> their indices (..., h, w) (the argmax of each position's K values)."""
    return z.reshape(*z.shape[:-1], *grid, classes).argmax(-1)


class UniformCodePrior(nn.Module):
    """p(z) = K^-G: every grid of G = h w codes equally likely (log p(z) = -G log K nats)."""

    name = "uniform"

    def __init__(self, classes: int, grid: tuple[int, int]):
        super().__init__()
        self.classes, self.grid = int(classes), tuple(grid)

    def config(self) -> dict[str, object]:
        return {"name": self.name}

    def log_prob(self, indices: torch.Tensor) -> torch.Tensor:
        """log p(z) for code grids (N, h, w): -h w log K each, (N,)."""
        return torch.full(indices.shape[:-2], -math.prod(self.grid) * math.log(self.classes),
                          dtype=torch.float64, device=indices.device)

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        return torch.randint(self.classes, (n, *self.grid), generator=generator, device=device)


@dataclass
class CodePixelCNNConfig:
    channels: int = 64  # features per masked convolution
    layers: int = 6  # masked convolutions
    kernel: int = 3  # odd kernel size

    def __post_init__(self) -> None:
        for key, high in (("channels", 4096), ("layers", 64)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ValueError(f"prior {key} must be an integer from 1 to {high}, got {value!r}")
        if isinstance(self.kernel, bool) or not isinstance(self.kernel, int) or self.kernel not in range(3, 16, 2):
            raise ValueError(f"prior kernel must be an odd integer from 3 to 15, got {self.kernel!r}")


class PixelCNNCodePrior(nn.Module):
    """p(z) = prod_(i,j) Cat(z_ij; softmax(l_ij(z_<ij))), l = :class:`~vaekit.nn.CategoricalPixelCNN` of the
    one-hot grid: an autoregressive prior over the codes, in raster order (nats)."""

    name = "pixelcnn"

    def __init__(self, classes: int, grid: tuple[int, int], channels: int = 64, layers: int = 6, kernel: int = 3):
        super().__init__()
        cfg = CodePixelCNNConfig(channels, layers, kernel)
        self.classes, self.grid = int(classes), tuple(grid)
        self.settings = {"channels": cfg.channels, "layers": cfg.layers, "kernel": cfg.kernel}
        self.net = CategoricalPixelCNN(self.classes, cfg.channels, cfg.layers, cfg.kernel)

    def config(self) -> dict[str, object]:
        return {"name": self.name, **self.settings}

    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """l (N, h, w, K): the logits of each position given the codes before it."""
        onehot = F.one_hot(indices, self.classes).movedim(-1, 1).to(self.net.out.weight.dtype)
        return self.net(onehot).movedim(1, -1)

    def log_prob(self, indices: torch.Tensor) -> torch.Tensor:
        """log p(z) = sum_(i,j) log softmax(l_ij)[z_ij] for code grids (N, h, w), (N,) nats."""
        lead = indices.shape[:-2]
        flat = indices.reshape(-1, *self.grid)
        log_p = torch.log_softmax(self.logits(flat), -1).gather(-1, flat[..., None])[..., 0]
        return log_p.flatten(1).sum(-1).reshape(lead)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        """n grids drawn position by position in raster order (one network pass per position), (n, h, w)."""
        device = device if device is not None else self.net.out.weight.device
        codes = torch.zeros(n, *self.grid, dtype=torch.long, device=device)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                probs = torch.softmax(self.logits(codes)[:, i, j].double(), -1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes


CODE_PRIORS = {"uniform": UniformCodePrior, "pixelcnn": PixelCNNCodePrior}


def code_prior(spec: dict[str, object], classes: int, grid: tuple[int, int]) -> nn.Module:
    """The prior over code grids that ``spec`` ({"name": "uniform"} or {"name": "pixelcnn", settings}) names."""
    settings = dict(spec)
    name = settings.pop("name", None)
    if name not in CODE_PRIORS:
        raise ValueError(f"the code prior must be uniform or pixelcnn, got {name!r}")
    if name == "uniform" and settings:
        raise ValueError(f"the uniform code prior has no settings, got {sorted(settings)}")
    unknown = sorted(set(settings) - {"channels", "layers", "kernel"})
    if unknown:
        raise ValueError(f"unknown settings of the pixelcnn code prior: {unknown}")
    return CODE_PRIORS[name](classes, grid, **settings)


class CodeGridDistribution(Distribution):
    """A prior over code grids as a ``torch.distributions`` object over flat one-hot codes (..., G K)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(self, prior: nn.Module, device: torch.device, dtype: torch.dtype):
        self.prior, self.device, self.dtype = prior, device, dtype
        size = math.prod(prior.grid) * prior.classes
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([size]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(grid_indices(value, self.prior.grid, self.prior.classes)).to(value.dtype)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        codes = self.prior.sample(max(1, math.prod(shape)), generator, self.device)[: math.prod(shape)]
        return one_hot_grid(codes, self.prior.classes).to(self.dtype).reshape(*shape, *self.event_shape)


class OneHotPointMass(Distribution):
    """q(z|x) of a VQ-VAE: the point mass on the one-hot code grid of x, ``codes`` (..., G K). Its entropy is 0 and
    log q(z|x) = 0 at its code (-inf elsewhere), so that ELBO = log p(x|z_q) + log p(z_q), and every importance
    weight p(x, z) / q(z|x) of draws from it is the same."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = True

    def __init__(self, codes: torch.Tensor):
        self.codes = codes
        super().__init__(batch_shape=codes.shape[:-1], event_shape=codes.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.codes

    def rsample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.codes.expand(torch.Size(sample_shape) + self.codes.shape)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        same = (value == self.codes).all(-1)
        return torch.where(same, 0.0, -math.inf).to(value.dtype)

    def entropy(self) -> torch.Tensor:
        return self.codes.new_zeros(self.batch_shape)
