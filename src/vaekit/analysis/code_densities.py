"""Densities q(z) fitted to a trained model's codes, the post-hoc samplers of :mod:`vaekit.analysis.samplers`.

All log-densities are in nats, over codes z in R^L; each is a ``torch.distributions.Distribution`` with event
shape (L,), so that the evaluation can use it as the prior p(z) of the decoder.

* :class:`FittedGaussianMixture`: ``MixtureSameFamily(Categorical(pi), MultivariateNormal(m_c, S_c))``, full
  covariances S_c = T_c T_c^T given by their Cholesky factors (scikit-learn's ``GaussianMixture``);
  sampled from a generator.
* :class:`MaskedAutoregressiveFlow` (Papamakarios et al., 2017): a fixed standardisation y = (z - a) / b, then T
  affine autoregressive steps u_i = (y_i - m_i(y_<i)) exp(-s_i(y_<i)) by vaekit's MADE, the variable order
  reversed between steps, u ~ N(0, I). By the change of variables

      log q(z) = log N(u; 0, I) - sum_t sum_i s_ti - sum_i log b_i

  in one pass; sampling inverts each step one variable at a time (L passes a step). s = S tanh(s_raw / S) with
  S = :data:`LOG_SCALE_BOUND` keeps every step's scale within e^(+-S).
* :class:`TwoStageVAE` (Dai & Wipf, 2019): a second VAE on the standardised codes, u ~ N(0, I_L),
  p(y|u) = N(g(u), gamma I) with a learnt scalar gamma, q(u|y) = N(mu(y), diag sigma^2(y)). Its density
  p_2(z) = int p(y|u) p(u) du / prod_i b_i has no closed form; :class:`TwoStageDensity` estimates it by importance
  sampling with K2 draws u_j ~ q(u|y),

      log p_2^(K2)(z) = logsumexp_j [log p(y|u_j) + log N(u_j; 0, I) - log q(u_j|y)] - log K2 - sum_i log b_i,

  whose exponential is an unbiased estimate of p_2(z) (its log a stochastic lower bound on log p_2(z)).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily, MultivariateNormal, constraints

from vaekit.nn.made import MADE

LOG_2PI = math.log(2 * math.pi)
#: Bound S on the log-scale of one flow step: s = S tanh(s_raw / S).
LOG_SCALE_BOUND = 5.0
#: Floor on the second stage's log-variances (log gamma and log sigma^2 of q(u|y)).
MIN_LOGVAR = -12.0


def _standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    return -0.5 * (u.pow(2).sum(-1) + u.shape[-1] * LOG_2PI)


class FittedGaussianMixture(MixtureSameFamily):
    """sum_c pi_c N(z; m_c, T_c T_c^T): ``weights`` (C,), ``means`` (C, L), ``scale_tril`` (C, L, L)."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor):
        super().__init__(Categorical(probs=weights), MultivariateNormal(means, scale_tril=scale_tril),
                         validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from ``generator``: a component c ~ pi, then m_c + T_c eps, eps ~ N(0, I)."""
        shape = torch.Size(sample_shape)
        n = math.prod(shape)
        comp = self.component_distribution
        with torch.no_grad():
            c = torch.multinomial(self.mixture_distribution.probs, n, replacement=True, generator=generator)
            eps = torch.randn(n, comp.loc.shape[-1], generator=generator, dtype=comp.loc.dtype,
                              device=comp.loc.device)
            z = comp.loc[c] + (comp.scale_tril[c] @ eps.unsqueeze(-1)).squeeze(-1)
        return z.reshape(*shape, -1)


class Standardize(nn.Module):
    """y = (z - shift) / scale per dimension, fixed from the fitted codes; log|dy/dz| = -sum_i log scale_i."""

    def __init__(self, latent: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(latent))
        self.register_buffer("log_scale", torch.zeros(latent))

    def set_from(self, codes: torch.Tensor) -> None:
        self.shift.copy_(codes.mean(0))
        self.log_scale.copy_(codes.std(0).clamp_min(1e-6).log())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.shift) * torch.exp(-self.log_scale)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(self.log_scale) + self.shift


class MaskedAutoregressiveFlow(nn.Module):
    """The masked autoregressive flow of the module docstring: ``steps`` MADE steps of ``hidden`` units in
    ``layers`` hidden layers each; starts at the identity (the MADE's output layer zeroed)."""

    def __init__(self, latent: int, steps: int = 5, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.latent, self.n_steps, self.hidden, self.layers = int(latent), int(steps), int(hidden), int(layers)
        self.standardize = Standardize(latent)
        orders = [torch.arange(latent, 0, -1) if t % 2 else torch.arange(1, latent + 1) for t in range(steps)]
        self.steps = nn.ModuleList(MADE(latent, hidden, layers, 0, order) for order in orders)
        with torch.no_grad():
            for made in self.steps:
                made.out.weight.zero_()
                made.out.bias.zero_()

    def _shift_scale(self, made: MADE, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = made(y)
        return m, LOG_SCALE_BOUND * torch.tanh(s / LOG_SCALE_BOUND)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z), nats: z (..., L) -> (...)."""
        y = self.standardize(z)
        log_det = -self.standardize.log_scale.sum().expand(z.shape[:-1])
        for made in self.steps:
            m, s = self._shift_scale(made, y)
            y = (y - m) * torch.exp(-s)
            log_det = log_det - s.sum(-1)
        return _standard_normal_log_prob(y) + log_det

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes z ~ q(z), (n, L): u ~ N(0, I), each step inverted one variable at a time in its order."""
        p = self.standardize.shift
        y = torch.randn(n, self.latent, generator=generator, dtype=p.dtype, device=p.device)
        for t in range(self.n_steps - 1, -1, -1):
            made, u, x = self.steps[t], y, torch.zeros_like(y)
            for i in (range(self.latent - 1, -1, -1) if t % 2 else range(self.latent)):  # in the step's order
                m, s = self._shift_scale(made, x)
                x[:, i] = u[:, i] * torch.exp(s[:, i]) + m[:, i]
            y = x
        return self.standardize.inverse(y)


class TwoStageVAE(nn.Module):
    """The second-stage VAE of the module docstring on L-dimensional codes: encoder and decoder MLPs of
    ``layers`` hidden layers of ``hidden`` ReLU units, u of size L, a learnt scalar log gamma."""

    def __init__(self, latent: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.latent, self.hidden, self.layers = int(latent), int(hidden), int(layers)
        self.standardize = Standardize(latent)
        self.encoder = _mlp(latent, hidden, layers, 2 * latent)
        self.decoder = _mlp(latent, hidden, layers, latent)
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def _q(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(y).chunk(2, -1)
        return mu, logvar.clamp_min(MIN_LOGVAR)

    def _log_p_y_given_u(self, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        log_gamma = self.log_gamma.clamp_min(MIN_LOGVAR)
        d = self.latent
        return -0.5 * ((y - self.decoder(u)).pow(2).sum(-1) * torch.exp(-log_gamma) + d * (LOG_2PI + log_gamma))

    def log_weights(self, z: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(y|u_j) + log p(u_j) - log q(u_j|y) - sum_i log b_i for k draws u_j ~ q(u|y): z (N, L) -> (k, N)."""
        y = self.standardize(z)
        mu, logvar = self._q(y)
        eps = torch.randn(k, *mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = mu + torch.exp(0.5 * logvar) * eps
        log_q = -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)
        return self._log_p_y_given_u(y, u) + _standard_normal_log_prob(u) - log_q - self.standardize.log_scale.sum()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes z ~ p_2(z), (n, L): u ~ N(0, I), y ~ N(g(u), gamma I), z = a + b y."""
        p = self.standardize.shift
        u = torch.randn(n, self.latent, generator=generator, dtype=p.dtype, device=p.device)
        noise = torch.randn(n, self.latent, generator=generator, dtype=p.dtype, device=p.device)
        y = self.decoder(u) + torch.exp(0.5 * self.log_gamma.clamp_min(MIN_LOGVAR)) * noise
        return self.standardize.inverse(y)


def _mlp(inputs: int, hidden: int, layers: int, outputs: int) -> nn.Sequential:
    sizes = [inputs] + [hidden] * layers
    parts: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        parts += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*parts, nn.Linear(sizes[-1], outputs))


class ModuleDensity(Distribution):
    """A fitted density module (a :class:`MaskedAutoregressiveFlow`) as a distribution over z, event (L,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, module: nn.Module):
        self.module = module
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([module.latent]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.module.log_prob(value)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        return self.module.sample(math.prod(shape), generator).reshape(*shape, -1)


#: Rows (codes x inner draws) of the second stage evaluated at once by :class:`TwoStageDensity`.
TWO_STAGE_ROWS = 2**16


class TwoStageDensity(ModuleDensity):
    """The second stage's density as a distribution: :meth:`log_prob` is the K2-draw importance-sampled
    estimate log p_2^(K2)(z) of the module docstring (random: its draws come from a generator seeded with
    ``seed`` when the distribution is made, so an evaluation is repeatable)."""

    def __init__(self, module: TwoStageVAE, inner_k: int = 16, seed: int = 0):
        super().__init__(module)
        self.inner_k = int(inner_k)
        self.generator = torch.Generator(device=module.standardize.shift.device).manual_seed(int(seed))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        flat = value.reshape(-1, value.shape[-1])
        rows = max(1, TWO_STAGE_ROWS // self.inner_k)
        parts = [torch.logsumexp(self.module.log_weights(flat[i : i + rows], self.inner_k, self.generator), 0)
                 for i in range(0, flat.shape[0], rows)]
        return (torch.cat(parts) - math.log(self.inner_k)).reshape(value.shape[:-1])


def fit_flow_or_stage(module: nn.Module, codes: torch.Tensor, epochs: int, batch_size: int, lr: float,
                      seed: int) -> list[float]:
    """Fit a :class:`MaskedAutoregressiveFlow` (maximum likelihood) or a :class:`TwoStageVAE` (its ELBO, one draw
    u ~ q(u|y) per code) to ``codes`` (N, L) by Adam: ``epochs`` passes in random batches from a generator seeded
    with ``seed``; the learning rate decays to 0 on a cosine. Returns the mean loss (-log q or -ELBO, nats per
    code) of each epoch."""
    module.standardize.set_from(codes)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    n = codes.shape[0]
    total = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    losses = []
    module.train()
    for _ in range(epochs):
        order, sums = torch.randperm(n, generator=gen), 0.0
        for start in range(0, n, batch_size):
            z = codes[order[start : start + batch_size]]
            loss = _loss(module, z, gen)
            opt.zero_grad(set_to_none=True)
            loss.mean().backward()
            opt.step()
            schedule.step()
            sums += float(loss.detach().sum())
        losses.append(sums / n)
    module.eval()
    return losses


def _loss(module: nn.Module, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if isinstance(module, TwoStageVAE):
        return -module.log_weights(z, 1, gen)[0]
    return -module.log_prob(z)


def gmm_from_sklearn(mixture: object, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """A fitted ``GaussianMixture(covariance_type="full")`` as tensors: weights (C,), means (C, L), scale_tril
    (C, L, L), the Cholesky factors of its covariances."""
    weights = torch.as_tensor(mixture.weights_, dtype=dtype)
    means = torch.as_tensor(mixture.means_, dtype=dtype)
    scale_tril = torch.linalg.cholesky(torch.as_tensor(mixture.covariances_, dtype=dtype))
    return {"weights": weights.contiguous(), "means": means.contiguous(), "scale_tril": scale_tril.contiguous()}
