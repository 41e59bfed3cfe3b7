# %% [markdown]
# # 4. The bound: ELBO + KL(q ‖ p(z|x)) = log p(x)
#
# For any q(z|x), the log-likelihood splits exactly into the ELBO and a KL divergence:
#
# log p(x) = E_q[log p(x, z) − log q(z|x)] + E_q[log q(z|x) − log p(z|x)] = ELBO(x) + KL(q(z|x) ‖ p(z|x)).
#
# The KL is ≥ 0, so the ELBO is a lower bound, tight exactly when q is the true posterior. The
# importance-weighted bound IWAE_K = E[log (1/K) Σ_k p(x, z_k) / q(z_k|x)] lies between the two and rises
# to log p(x) as K grows. For most models log p(x) is unknown; here are two where it is exact, checked with
# the same code that evaluates any vaekit model.
#
# ## A linear-Gaussian model
#
# p(z) = N(0, I), p(x|z) = N(W z + b, σ² I): probabilistic PCA. Its log p(x) = log N(x; b, W Wᵀ + σ² I) and
# its posterior p(z|x) are Gaussian, in closed form. `vaekit.evaluation.exact.LinearGaussian` gives it a linear
# encoder q(z|x) that can be set to the exact posterior or to a wrong one.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

import vaekit
from vaekit.evaluation import exact

model = exact.LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=0)  # W with orthogonal columns
x = model.sample_data(200, seed=1)  # 200 points x ~ p(x), (200, 8)
log_px = model.log_marginal(x)  # exact, nats

model.set_exact_posterior()
print(f"mean log p(x) = {log_px.mean():.6f}")
print(f"mean ELBO with q = p(z|x): {model.elbo_closed_form(x).mean():.6f}   (the bound is tight)")
assert torch.allclose(model.elbo_closed_form(x), log_px, atol=1e-10)

model.set_wrong_posterior(shift=0.5, scale=1.5)
elbo, gap = model.elbo_closed_form(x), model.kl_to_posterior(x)
print(f"mean ELBO with a wrong q: {elbo.mean():.6f}, mean KL(q || p(z|x)) = {gap.mean():.6f}, "
      f"sum = {(elbo + gap).mean():.6f}")
assert torch.allclose(elbo + gap, log_px, atol=1e-10)  # example by example, to rounding

# %% [markdown]
# The identity holds for every q, not just these two. Widen or narrow q's standard deviations by a factor
# s around the exact posterior's: the ELBO falls, the KL rises by exactly as much, and their sum stays at
# log p(x).

# %%
a, cov = model.posterior_params()
factors = np.geomspace(0.3, 3.0, 41)
rows = []
for s in factors:
    model.set_encoder(a, -a @ model.bias, torch.log(torch.diagonal(cov)) + 2 * math.log(s))
    rows.append((model.elbo_closed_form(x).mean().item(), model.kl_to_posterior(x).mean().item()))
elbos, kls = np.array(rows).T

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(factors, elbos, label="ELBO")
ax.plot(factors, elbos + kls, label="ELBO + KL(q || p(z|x))")
ax.axhline(log_px.mean().item(), color="k", ls=":", lw=1, label="log p(x) (closed form)")
ax.set(xscale="log", xlabel="s: q's standard deviations / the posterior's", ylabel="nats (mean over x)")
ax.legend()
plt.show()
assert np.allclose(elbos + kls, log_px.mean().item(), atol=1e-9)

# %% [markdown]
# ## IWAE_K approaches log p(x)
#
# With the wrong q, `vaekit.evaluate` estimates log p(x) by importance sampling with K draws per example: the
# estimate is IWAE_K, a lower bound on average that tightens as K grows. Its standard error is over
# examples. (The Gaussian likelihood makes log p(x) a density, hence the evaluator's note.)

# %%
model.set_wrong_posterior(shift=0.5, scale=1.5)
ks = [1, 3, 10, 30, 100, 1000]
results = {k: vaekit.evaluate(model, x, k=k, seed=0, per_example=True) for k in ks}
for k, r in results.items():
    shortfall = log_px.numpy() - r.per_example["log_px"]
    print(f"K = {k:4d}: IWAE_K = {-r.nll:.4f}   log p(x) - IWAE_K = {shortfall.mean():.4f} "
          f"+- {shortfall.std(ddof=1) / math.sqrt(len(shortfall)):.4f}")
linear_shortfall = {k: log_px.numpy() - r.per_example["log_px"] for k, r in results.items()}

# the exact ELBO is IWAE_1's expectation; the shortfall at K = 1000 is within noise of 0
assert abs(-results[1].nll - elbo.mean().item()) < 4 * results[1].elbo_stderr
assert abs(linear_shortfall[1000].mean()) < 4 * linear_shortfall[1000].std(ddof=1) / math.sqrt(len(x))

# %% [markdown]
# ## A model with discrete latents
#
# With z = 10 binary units there are 2¹⁰ = 1,024 codes, and log p(x) = log Σ_z p(x|z) p(z) is a finite
# sum. vaekit computes it exactly (`vaekit.evaluation.exact.compare_enumerated`), and with it the exact ELBO and the
# exact gap KL(q(z|x) ‖ p(z|x)) by the same sum. Train such a model on the digits for a second (the encoder
# with NVIL's score-function gradients), then compare:

# %%
torch.manual_seed(0)
ds = vaekit.load_dataset("digits", binarize="threshold")
binary = vaekit.VAE(latent=10, shape=ds.shape, posterior="bernoulli", hidden=[64])
vaekit.fit(binary, ds.train, ds.valid, out="runs/bits", epochs=10, estimator="nvil", progress=False,
           log=lambda line: None)
binary = vaekit.load("runs/bits")

c = exact.compare_enumerated(binary, ds.test[:100], ks=(1, 3, 10, 30, 100, 1000), seed=0)
print(f"{c['codes']} codes; mean exact log p(x) = {c['exact'].mean():.4f}, exact ELBO = {c['elbo'].mean():.4f}, "
      f"exact KL(q || p(z|x)) = {c['gap'].mean():.4f}")
assert np.allclose(c["elbo"] + c["gap"], c["exact"], atol=1e-4)  # example by example
for k, s in c["shortfall"].items():
    print(f"K = {k:4d}: log p(x) - IWAE_K = {s['mean']:.4f} +- {s['stderr']:.4f}")

# %% [markdown]
# Both models tell the same story: the ELBO sits below log p(x) by exactly KL(q ‖ p(z|x)), and the
# importance-weighted estimate closes the gap as K grows, from the ELBO's side.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, title, shortfall in [(axes[0], "linear-Gaussian (wrong q)", linear_shortfall),
                             (axes[1], "10 binary latents (trained q)", {
                                 k: c["exact"] - c["iwae"][k] for k in c["ks"]})]:
    k = np.array(sorted(shortfall))
    mean = np.array([shortfall[i].mean() for i in k])
    se = np.array([shortfall[i].std(ddof=1) / math.sqrt(len(shortfall[i])) for i in k])
    ax.errorbar(k, mean, yerr=2 * se, fmt="o-", capsize=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="K importance samples", ylabel="log p(x) - IWAE_K (nats)", title=title)
plt.show()

first, last = c["shortfall"][1], c["shortfall"][1000]
assert first["mean"] > last["mean"] and abs(last["mean"]) < 4 * last["stderr"] + 1e-3

# %% [markdown]
# From the command line, `vaekit bound` prints the same comparison: without a run, for the linear-Gaussian
# model; `vaekit bound RUN` for a trained run (a grid integral for a 2-D continuous latent space, the exact
# sum for discrete latents).
