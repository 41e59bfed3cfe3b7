"""vaekit: variational autoencoders, correct to the last nat.

Modules, one idea each:

- :mod:`vaekit.info`        entropy, cross-entropy and KL divergence (nats by default)
- :mod:`vaekit.estimators`  pathwise (reparameterization) and score-function gradients
- :mod:`vaekit.data`        data sets: binarized MNIST, the IDX family, digits, images
- :mod:`vaekit.model`       the VAE: encoder q(z|x), decoder p(x|z), prior p(z)
- :mod:`vaekit.objectives`  ELBO and the importance-weighted bound
- :mod:`vaekit.train`       the trainer, checkpoints, resume
- :mod:`vaekit.evaluate`    honest log-likelihoods and exact checks of the bound
"""

__version__ = "0.1.0"
