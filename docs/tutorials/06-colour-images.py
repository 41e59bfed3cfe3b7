# %% [markdown]
# # 6. Colour images
#
# Photographs are 8-bit: each of the three channels of a pixel holds an integer k from 0 to 255. vaekit
# stores them as x = k / 255 in [0, 1], C = 3 channels, and a likelihood for such data should give a
# **probability** to each of the 256 values, so that −log p(x) is a code length and bits per dimension mean
# what they say. The **discretized logistic** of PixelCNN++ does: a logistic distribution per sub-pixel whose
# mass is cut into the 256 bins of the values, the two end bins taking the tails. (A Gaussian likelihood
# gives a density instead, which can exceed 1 and is no probability of the 8-bit values without a
# dequantisation correction.)
#
# A folder of PNG files is a data set: `images:DIR`. Here the folder is made first, 1,500 synthetic
# 12 x 12 images of a coloured disc or square on a coloured background.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

import vaekit
from vaekit.pages.viz import image_grid

SIZE = 12
rng = np.random.default_rng(0)
folder = Path("shapes")
folder.mkdir(exist_ok=True)
yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
for i in range(1500):
    background = rng.uniform(0.6, 1.0, 3)
    colour = rng.uniform(0.0, 1.0, 3) * rng.permutation([1.0, 0.5, 0.1])  # saturated, a random hue
    cy, cx, r = rng.uniform(3.5, SIZE - 3.5), rng.uniform(3.5, SIZE - 3.5), rng.uniform(2.0, 3.5)
    if i % 2:
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    else:
        inside = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
    image = np.where(inside[..., None], colour, background) + rng.normal(0.0, 0.02, (SIZE, SIZE, 3))
    Image.fromarray(np.clip(np.rint(255 * image), 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")

ds = vaekit.load_dataset(f"images:{folder}", cache=False)
print(f"{len(ds.train)} / {len(ds.valid)} / {len(ds.test)} images of shape {ds.shape}, {ds.levels} levels")
assert ds.shape == (3, SIZE, SIZE) and ds.levels == 256

fig, ax = plt.subplots(figsize=(8, 2.2))
ax.imshow(image_grid(ds.train[:16], nrow=8), interpolation="nearest")
ax.set_title("training images")
ax.axis("off")
plt.show()

# %% [markdown]
# ## A VAE with a discretized-logistic likelihood
#
# The decoder gives two numbers per sub-pixel, the logistic's location and log-scale (6 output channels for
# RGB). Everything else is as for binary images.

# %%
torch.manual_seed(0)
model = vaekit.VAE(latent=8, shape=ds.shape, hidden=[256], likelihood="discretized-logistic")
print("decoder output per image:", model.likelihood.param_shape)

result = vaekit.fit(model, ds.train, ds.valid, out="runs/shapes", epochs=30, batch_size=100, lr=2e-3,
                    progress=False, log=lambda line: None)
model = vaekit.load("runs/shapes")
print(f"best validation ELBO {result.best_valid_elbo:.1f} nats per image ({result.seconds:.1f} s)")

# %% [markdown]
# ## Bits per dimension
#
# With a probability of the 8-bit values, −log p(x) in nats divided by D ln 2, with D = 3 x 12 x 12 = 432
# sub-pixels, is the number of bits per value a code built from the model would need: 8 for the uniform
# distribution over 256 values, less for a model that has learned something. No model can go below the
# entropy of the data, and the noise the images were made with alone costs about 4.4 bits per value (that of a
# Gaussian with a standard deviation of 5 levels; a little less where bright values are clipped at 255).

# %%
evaluation = vaekit.evaluate(model, ds.test, k=200, seed=0)
dims = int(np.prod(ds.shape))
print(f"test NLL (K = 200): {evaluation.nll:.1f} +- {evaluation.nll_stderr:.1f} nats per image")
print(f"bits per dimension: {evaluation.bits_per_dim:.3f} (uniform over 256 values: 8)")
print(f"the 2 % noise alone: about {0.5 * np.log2(2 * np.pi * np.e * (0.02 * 255) ** 2):.2f} bits per value")
assert abs(evaluation.bits_per_dim - evaluation.nll / (dims * np.log(2))) < 1e-6
assert 0 < evaluation.bits_per_dim < 8

# %% [markdown]
# ## Samples and reconstructions
#
# The likelihood's mean E[x|z] decodes a code into an image; a draw x ~ p(x|z) adds the per-sub-pixel noise
# the model believes in (here, about the 2 % noise the images were made with, plus what it has not learned).

# %%
samples = model.sample(16, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    recon = model.reconstruct(ds.test[:16])

fig, axes = plt.subplots(1, 3, figsize=(13, 2.6))
for ax, images, title in [(axes[0], torch.cat([ds.test[:8], recon[:8]]), "test images (top), reconstructions"),
                          (axes[1], samples.means, "E[x|z], z ~ p(z)"),
                          (axes[2], samples.draws, "x ~ p(x|z)")]:
    ax.imshow(image_grid(images, nrow=8), interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# From the command line the same run is
# `vaekit train --dataset images:shapes --likelihood discretized-logistic --latent 8 --hidden 256 --out runs/shapes`,
# and `vaekit evaluate runs/shapes` reports the NLL and bits per dimension. For natural images, a convolutional
# model (`--model conv`) and the discretized mixture of logistics (`--likelihood discretized-logistic-mixture`)
# are the usual next steps, on a GPU.
