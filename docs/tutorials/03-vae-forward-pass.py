# %% [markdown]
# # 3. The VAE forward pass, step by step
#
# A VAE is two networks and three distributions:
#
# - the **encoder** maps an image x to the parameters of q(z|x), here a diagonal Gaussian N(μ(x), diag σ²(x));
# - a code is drawn by **reparameterization**, z = μ + σ ⊙ ε with ε ~ N(0, I), so gradients flow to μ and σ;
# - the **decoder** maps z to the parameters of p(x|z), here one Bernoulli probability per pixel;
# - the **prior** p(z) = N(0, I).
#
# The loss is −ELBO, with ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) ≤ log p(x), in nats per image. This
# tutorial follows one batch through an untrained model, checks each step against vaekit's own objective,
# then trains the model for a few seconds and generates digits from the prior.

# %%
import matplotlib.pyplot as plt
import torch
from torch.distributions import kl_divergence

import vaekit
from vaekit.analysis import info
from vaekit.pages.viz import image_grid

torch.manual_seed(0)
ds = vaekit.load_dataset("digits", binarize="threshold")  # 8x8 digits, pixels 0 or 1, embedded (no download)
print("train / valid / test:", len(ds.train), len(ds.valid), len(ds.test), "images of shape", ds.shape)

model = vaekit.VAE(latent=2, shape=ds.shape, hidden=[128])  # vaekit's MLP networks, Gaussian q, Bernoulli p(x|z)
x = ds.train[:8]
print(model)

# %% [markdown]
# ## 1. The encoder gives q(z|x)
#
# For the diagonal Gaussian posterior the encoder returns 2L numbers per image: the means and the
# log-variances. `model.posterior(x)` wraps them in a `torch.distributions` object.

# %%
params = model.encode(x)  # (8, 2L) = [mu, log-variance]
mu, logvar = params.chunk(2, dim=-1)
q = model.posterior(x)
print("encoder output:", tuple(params.shape), " q(z|x): batch", tuple(q.batch_shape), "event", tuple(q.event_shape))
assert torch.allclose(q.mean, mu) and torch.allclose(q.stddev, (0.5 * logvar).exp())

# %% [markdown]
# ## 2. A code by reparameterization
#
# z = μ + σ ε: the randomness is in ε alone, so z is a differentiable function of the encoder's outputs.
# `q.rsample()` does the same with its own draw of ε.

# %%
eps = torch.randn(mu.shape)
z = mu + (0.5 * logvar).exp() * eps
print("z:", tuple(z.shape))
print(z[:3].detach())

# %% [markdown]
# ## 3. The decoder gives p(x|z), and log p(x|z)
#
# The decoder returns one logit per pixel; `model.observation(z)` is the Bernoulli distribution over the 8x8
# image, and its `log_prob` sums the 64 pixels' log-probabilities (nats per image).

# %%
logits = model.decode(z)  # (8, 1, 8, 8)
p_x = model.observation(z)
log_px_z = p_x.log_prob(x)  # (8,)
by_hand = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
print("log p(x|z) per image:", log_px_z.detach().numpy().round(2))
assert torch.allclose(log_px_z, by_hand, atol=1e-4)

# %% [markdown]
# ## 4. The KL term, in closed form
#
# KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), from the registry of
# `torch.distributions` (tutorial 1).

# %%
prior = model.prior_distribution()
kl = kl_divergence(q, prior)  # (8,)
assert torch.allclose(kl, info.kl_standard_normal(mu, logvar), atol=1e-5)
print("KL(q(z|x) || p(z)) per image:", kl.detach().numpy().round(3))

# %% [markdown]
# ## 5. The ELBO and the loss
#
# One draw of z gives an unbiased estimate of the ELBO; the loss is its negative, averaged over the batch.
# `vaekit.elbo` computes the same terms. Its KL is the same closed form; its reconstruction term uses its own
# draws of ε, so it agrees with ours in expectation: averaged over many draws, the two estimates of
# E_q[log p(x|z)] agree within their standard errors.

# %%
elbo = log_px_z - kl
loss = -elbo.mean()
print(f"-ELBO (one draw): {loss.item():.2f} nats per image; an untrained model: about 64 log 2 = 44.4")

terms = vaekit.elbo(model, x, samples=2000)
assert torch.allclose(terms.kl, kl, atol=1e-5)

draws = 2000
z_many = mu + (0.5 * logvar).exp() * torch.randn(draws, *mu.shape)  # (2000, 8, 2)
rec_many = model.observation(z_many).log_prob(x)  # (2000, 8)
se = rec_many.std(0) / draws**0.5
print("E_q log p(x|z), ours:  ", rec_many.mean(0).detach().numpy().round(3))
print("E_q log p(x|z), vaekit:", terms.reconstruction.detach().numpy().round(3))
assert ((rec_many.mean(0) - terms.reconstruction).abs() < 5 * se).all()

# %% [markdown]
# The gradient of the loss reaches the encoder through z (the reparameterization) and the decoder directly:

# %%
loss.backward()
for name, net in [("encoder", model.encoder), ("decoder", model.decoder)]:
    norm = torch.sqrt(sum((p.grad**2).sum() for p in net.parameters()))
    print(f"gradient norm of the {name}: {norm.item():.3f}")
    assert norm > 0
model.zero_grad()

# %% [markdown]
# ## Training
#
# `vaekit.fit` runs this step in minibatches with Adam, keeps the weights with the best validation ELBO and
# writes a run folder (`metrics.jsonl` has one line per epoch). A few seconds on a CPU:

# %%
result = vaekit.fit(model, ds.train, ds.valid, out="runs/digits-2d", epochs=25, batch_size=64, lr=3e-3,
                    progress=False, log=lambda line: None)
print(f"best validation ELBO {result.best_valid_elbo:.2f} nats at epoch {result.best_epoch}, "
      f"{result.seconds:.1f} s")

metrics = vaekit.train.read_metrics("runs/digits-2d")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([m["epoch"] for m in metrics], [m["train_elbo"] for m in metrics], label="train")
ax.plot([m["epoch"] for m in metrics], [m["valid_elbo"] for m in metrics], label="validation")
ax.set(xlabel="epoch", ylabel="ELBO (nats per image)")
ax.legend()
plt.show()
assert result.best_valid_elbo > metrics[0]["valid_elbo"]

# %% [markdown]
# ## Generation from the prior
#
# To generate, forget the encoder: draw z ~ p(z) = N(0, I) and decode. `model.sample(n)` returns the codes,
# the decoded means E[x|z] (pixel probabilities) and one draw x ~ p(x|z) each. With a 2-D latent space the
# whole learned manifold fits in one picture: decode a grid of z at evenly spaced quantiles of N(0, 1).

# %%
model = vaekit.load("runs/digits-2d")  # the kept (best) weights
model.eval()
samples = model.sample(32, generator=torch.Generator().manual_seed(1))

quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 12))
grid = torch.cartesian_prod(quantiles, quantiles.flip(0))[:, [1, 0]]  # rows: z_2 from high to low
with torch.no_grad():
    manifold = model.likelihood.mean(model.decode(grid))

fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
for ax, images, nrow, title in [(axes[0], samples.means, 8, "E[x|z], z ~ p(z)"),
                                (axes[1], samples.draws, 8, "x ~ p(x|z), z ~ p(z)"),
                                (axes[2], manifold, 12, "E[x|z] over a grid of z")]:
    ax.imshow(image_grid(images, nrow=nrow, pad_value=0.5), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Reconstructions and the latent space
#
# The encoder's mean code of each test image, coloured by its label: with two latent dimensions the digit
# classes already form regions of the plane. Below, test images and their reconstructions E[x | z = μ(x)].

# %%
with torch.no_grad():
    codes = model.code(ds.test)
    recon = model.reconstruct(ds.test[:16])

fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
points = axes[0].scatter(codes[:, 0], codes[:, 1], c=ds.test_labels, cmap="tab10", s=8)
axes[0].set(xlabel="z_1", ylabel="z_2", title="mean codes of the test images")
fig.colorbar(points, ax=axes[0], label="label")
pairs = image_grid(torch.cat([ds.test[:16], recon]), nrow=16, pad_value=0.5)
axes[1].imshow(pairs, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
axes[1].set_title("test images (top) and reconstructions (bottom)")
axes[1].axis("off")
plt.show()
