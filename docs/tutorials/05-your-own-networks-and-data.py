# %% [markdown]
# # 5. Your own networks and your own data
#
# vaekit trains any pair of `torch.nn.Module`s as a VAE, on any tensors or arrays of images. The contract:
#
# - the **encoder** takes x of shape (N, C, H, W) and returns the parameters of q(z|x): for the default
#   diagonal Gaussian, (N, 2L) = [μ, log-variance];
# - the **decoder** takes z of shape (N, L) and returns the parameters of p(x|z): for the default Bernoulli
#   likelihood, logits of shape (N, C, H, W).
#
# Here the data is made in memory: 6 x 6 binary images of horizontal and vertical bars, the classic test of
# whether a model finds the few independent causes of its data.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import vaekit
from vaekit.analysis import info
from vaekit.models import ShapeError
from vaekit.pages.viz import image_grid

SIZE = 6


def bars(n: int, seed: int) -> torch.Tensor:
    """n images (n, 1, 6, 6): each of the 6 rows and 6 columns is on with probability 1/6."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.rand(n, SIZE, 1, generator=g) < 1 / SIZE
    cols = torch.rand(n, 1, SIZE, generator=g) < 1 / SIZE
    return (rows | cols).float().unsqueeze(1)


train, valid, test = bars(3000, seed=0), bars(500, seed=1), bars(500, seed=2)

fig, ax = plt.subplots(figsize=(8, 2.6))
ax.imshow(image_grid(train[:24], nrow=12, pad_value=0.5), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
ax.set_title("training images")
ax.axis("off")
plt.show()

# %% [markdown]
# ## The networks
#
# Any modules that honour the shapes. An error in them surfaces at the first call as one line naming the
# network and the shapes, not deep inside the trainer.

# %%
L = 8  # latent dimensions


class Encoder(nn.Module):  # x (N, 1, 6, 6) -> [mu, log-variance] (N, 2L)
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 256), nn.ReLU(), nn.Linear(256, 2 * L))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):  # z (N, L) -> Bernoulli logits (N, 1, 6, 6)
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(L, 256), nn.ReLU(), nn.Linear(256, SIZE * SIZE),
                                 nn.Unflatten(1, (1, SIZE, SIZE)))

    def forward(self, z):
        return self.net(z)


torch.manual_seed(0)
model = vaekit.VAE(Encoder(), Decoder(), latent=L)

wrong = vaekit.VAE(Encoder(), nn.Linear(L, 10), latent=L, shape=(1, SIZE, SIZE))
try:
    vaekit.elbo(wrong, train[:4])
except ShapeError as error:
    print("ShapeError:", error)

# %% [markdown]
# ## Training on tensors
#
# `vaekit.fit` takes tensors (or numpy arrays, or a vaekit data set), builds the model for the data's shape,
# and writes a run folder: the settings, one line of metrics per epoch, the best weights by validation ELBO,
# and a checkpoint to resume from.

# %%
result = vaekit.fit(model, train, valid, out="runs/bars", epochs=40, batch_size=100, lr=3e-3, progress=False,
                    log=lambda line: None)
print(f"best validation ELBO {result.best_valid_elbo:.3f} nats at epoch {result.best_epoch} "
      f"({result.seconds:.1f} s)")
print("the run folder:", sorted(p.name for p in result.run.iterdir()))

# %% [markdown]
# ## Loading the run into your networks
#
# The run records your networks by class name only (code is never loaded from a run folder): build them
# again and `VAE.load` puts the best weights into them.

# %%
model = vaekit.VAE.load("runs/bars", encoder=Encoder(), decoder=Decoder())

# %% [markdown]
# ## Measuring it
#
# `vaekit.evaluate` gives the test ELBO and log p(x) by importance sampling (K draws per image), with standard
# errors over images, and counts the active latent units. The bars have an exact answer to compare with: no
# model can do better on average than the entropy of the data H(x), which here is a finite sum over the
# 2^12 settings of the lines (a little under 12 H(1/6) = 5.41 nats, since some images, such as a full grid, can
# be drawn by more than one setting). The test NLL estimates the cross-entropy, which is at least H(x): the
# distance between the two is what this small model, trained for seconds, leaves on the table.

# %%
bits = (np.arange(2**SIZE)[:, None] >> np.arange(SIZE)) & 1  # every setting of 6 lines, (64, 6)
images = (bits[:, None, :, None] | bits[None, :, None, :]).reshape(-1, SIZE * SIZE)  # rows x columns
on = bits.sum(1)[:, None] + bits.sum(1)[None, :]
prob = ((1 / SIZE) ** on * (1 - 1 / SIZE) ** (2 * SIZE - on)).reshape(-1)
_, image_of = np.unique(images, axis=0, return_inverse=True)
data_entropy = float(info.entropy(np.bincount(image_of.reshape(-1), weights=prob)))

evaluation = vaekit.evaluate(model, test, k=500, seed=0)
print(f"test ELBO {evaluation.elbo:.3f} +- {evaluation.elbo_stderr:.3f}, "
      f"NLL (K = 500) {evaluation.nll:.3f} +- {evaluation.nll_stderr:.3f} nats, "
      f"{evaluation.active_units} active units of {L}")
print(f"entropy of the data H(x) = {data_entropy:.3f} nats (12 H(1/6) = "
      f"{2 * SIZE * float(info.entropy([1 / SIZE, 1 - 1 / SIZE])):.3f})")
assert evaluation.nll > data_entropy - 4 * evaluation.nll_stderr  # no model beats the entropy
assert evaluation.elbo < -evaluation.nll + 4 * evaluation.nll_stderr  # the ELBO is a lower bound

# %% [markdown]
# ## Sampling
#
# z ~ p(z), then the decoded means E[x|z] and one draw x ~ p(x|z) each:

# %%
samples = model.sample(48, generator=torch.Generator().manual_seed(0))

fig, axes = plt.subplots(1, 2, figsize=(11, 3))
for ax, images, title in [(axes[0], samples.means[:24], "E[x|z], z ~ p(z)"),
                          (axes[1], samples.draws[:24], "x ~ p(x|z)")]:
    ax.imshow(image_grid(images, nrow=8, pad_value=0.5), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## What each latent unit does
#
# Decode z = 0 with one unit moved from −2.5 to 2.5 at a time: the units the model uses each switch bars on
# or off; an inactive unit (its KL term is 0) changes nothing.

# %%
steps = torch.linspace(-2.5, 2.5, 9)
codes = torch.zeros(L, len(steps), L)
for unit in range(L):
    codes[unit, :, unit] = steps
with torch.no_grad():
    images = model.likelihood.mean(model.decode(codes.reshape(-1, L)))

fig, ax = plt.subplots(figsize=(5, 3.6))
ax.imshow(image_grid(images, nrow=len(steps), pad_value=0.5), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
ax.set_yticks([(SIZE + 1) * u + SIZE / 2 for u in range(L)], [f"z_{u + 1}" for u in range(L)])
ax.set_xticks([])
ax.set_title("one unit at a time, from -2.5 to 2.5")
plt.show()

# %% [markdown]
# The guide [Your own encoder and decoder](../your-own-networks.md) does the same with convolutional
# networks on the digits. Any other posterior, prior or likelihood is a registered name
# (`vaekit.VAE(..., prior="vamp", likelihood="gaussian")`) or a component of your own (see Contributing).
