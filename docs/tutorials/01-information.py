# %% [markdown]
# # 1. Entropy, cross-entropy and KL divergence
#
# Every objective in vaekit is built from three quantities of information theory. For two distributions p and
# q over the same outcomes:
#
# - the **entropy** H(p) = −Σ p_i log p_i: the average surprise of an outcome drawn from p;
# - the **cross-entropy** H(p, q) = −Σ p_i log q_i: the average surprise when outcomes come from p but we
#   expect q;
# - the **KL divergence** D(p‖q) = Σ p_i log(p_i / q_i) = H(p, q) − H(p): the surprise we pay extra for
#   expecting the wrong distribution. It is ≥ 0, zero only when p = q, and **not symmetric**.
#
# All values are in nats (natural logarithms); `base=2` gives bits. `vaekit.analysis.info` computes them for numpy
# arrays (numpy out) and torch tensors (torch out, differentiable).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.distributions import Normal

from vaekit.analysis import info

p = np.array([0.5, 0.5])
q = np.array([0.1, 0.9])

print(f"H(p)     = {info.entropy(p):.4f} nats = {info.entropy(p, base=2):.4f} bits")
print(f"H(q)     = {info.entropy(q):.4f} nats")
print(f"H(p, q)  = {info.cross_entropy(p, q):.4f} nats")
print(f"D(p||q)  = {info.kl_divergence(p, q):.4f} nats")
print(f"D(q||p)  = {info.kl_divergence(q, p):.4f} nats   <- not the same: KL is not a distance")

# %% [markdown]
# The identity D(p‖q) = H(p, q) − H(p) holds exactly (up to rounding), for any pair:

# %%
rng = np.random.default_rng(0)
for _ in range(3):
    a, b = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
    lhs = info.kl_divergence(a, b)
    rhs = info.cross_entropy(a, b) - info.entropy(a)
    print(f"D(a||b) = {lhs:.6f}   H(a,b) - H(a) = {rhs:.6f}")
    assert abs(lhs - rhs) < 1e-12

# %% [markdown]
# ## The asymmetry, seen
#
# Take p = Bernoulli(1/2) and q = Bernoulli(t). D(p‖q) grows without bound as t → 0 or 1 (q says an outcome that p
# produces half the time is impossible), while D(q‖p) stays below log 2: q can put all its mass on one
# outcome and pay only log 2 for it.

# %%
t = np.linspace(0.001, 0.999, 999)
half = np.full_like(t, 0.5)
forward = info.kl_divergence(np.stack([half, 1 - half], -1), np.stack([t, 1 - t], -1))
reverse = info.kl_divergence(np.stack([t, 1 - t], -1), np.stack([half, 1 - half], -1))

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(t, forward, label="D(p || q)")
ax.plot(t, reverse, label="D(q || p)")
ax.axhline(math.log(2), color="grey", lw=0.8, ls=":", label="log 2")
ax.set(xlabel="t, with q = Bernoulli(t) and p = Bernoulli(1/2)", ylabel="nats", ylim=(0, 3))
ax.legend()
plt.show()

assert reverse.max() <= math.log(2) + 1e-12 and forward.max() > 2.5  # and D(p || q) -> infinity as t -> 0

# %% [markdown]
# ## Which q is closest depends on the direction
#
# Fit one Gaussian q to a bimodal p, on a grid of points, by minimising each direction of the KL over q's mean
# and standard deviation. D(p‖q) (the direction of maximum likelihood) spreads q over both modes; D(q‖p) (the
# direction of the ELBO, with q the approximate posterior) locks q onto one mode.

# %%
grid = np.linspace(-6, 6, 481)


def discretised(density):
    return density / density.sum(-1, keepdims=True)


def normal(x, m, s):
    return np.exp(-0.5 * ((x - m) / s) ** 2) / s


target = discretised(0.5 * normal(grid, -2, 0.6) + 0.5 * normal(grid, 2, 0.6))
means, stds = np.meshgrid(np.linspace(-3, 3, 121), np.linspace(0.3, 3, 55), indexing="ij")
candidates = discretised(normal(grid, means[..., None], stds[..., None]))  # (121, 55, 481)
targets = np.broadcast_to(target, candidates.shape).copy()  # p beside every candidate q

fits = {}
for name, kl in [("argmin D(p || q)", info.kl_divergence(targets, candidates)),
                 ("argmin D(q || p)", info.kl_divergence(candidates, targets))]:
    i, j = np.unravel_index(np.argmin(kl), kl.shape)
    fits[name] = (means[i, j], stds[i, j])

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.fill_between(grid, target, color="lightgrey", label="p (two modes)")
for name, (m, s) in fits.items():
    ax.plot(grid, discretised(normal(grid, m, s)), label=f"{name}: mean {m:.2f}, std {s:.2f}")
ax.set(xlabel="x", ylabel="probability per grid cell")
ax.legend(fontsize=8)
plt.show()

(m_forward, s_forward), (m_reverse, s_reverse) = fits.values()
assert abs(m_forward) < 0.1 and s_forward > 1.5     # mass-covering: between the modes, wide
assert abs(abs(m_reverse) - 2) < 0.1 and s_reverse < 1  # mode-seeking: on one mode, narrow

# %% [markdown]
# ## Gaussians in closed form
#
# For the distributions a VAE uses the KL has a closed form. `info.kl_closed_form` takes it from
# `torch.distributions`' registry; `info.kl_standard_normal` writes out the VAE's KL term
# D(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²); `info.kl_monte_carlo` estimates any pair
# from samples, with its standard error. The three agree:

# %%
mu, logvar = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, -1.0, 0.5])
q_z = torch.distributions.Independent(Normal(mu, (0.5 * logvar).exp()), 1)
p_z = torch.distributions.Independent(Normal(torch.zeros(3), torch.ones(3)), 1)

closed = info.kl_closed_form(q_z, p_z).item()
formula = info.kl_standard_normal(mu, logvar).item()
estimate, stderr = info.kl_monte_carlo(q_z, p_z, samples=20_000, generator_seed=0)
print(f"closed form (torch registry): {closed:.4f} nats")
print(f"1/2 sum(mu^2 + s^2 - 1 - log s^2): {formula:.4f} nats")
print(f"Monte Carlo, 20,000 draws: {estimate.item():.4f} +- {stderr.item():.4f} nats")

assert abs(closed - formula) < 1e-6
assert abs(estimate.item() - closed) < 4 * stderr.item()  # within 4 standard errors

# %% [markdown]
# The same numbers from the command line: `vaekit info --p 0.5,0.5 --q 0.1,0.9` prints the entropies,
# cross-entropies and both KL divergences (`--base 2` for bits, `--json` for a machine-readable line).
