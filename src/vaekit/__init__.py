"""vaekit: variational autoencoders, correct to the last nat.

Build a model from parts, train it, measure it::

    import vaekit
    model = vaekit.VAE(encoder=my_encoder, decoder=my_decoder, latent=16, shape=(1, 28, 28))
    vaekit.fit(model, x_train, x_valid, out="runs/mine", epochs=20)
    result = vaekit.evaluate(model, x_test, k=1000)      # result.nll, result.nll_stderr, result.gap (nats)

Packages, one wing of the architecture each (lower layers never import higher ones):

- :mod:`vaekit.distributions`  vaekit's own ``torch.distributions`` and their closed-form KL terms
- :mod:`vaekit.nn`             network building blocks (MLP, gated, conv, MADE, PixelCNN)
- :mod:`vaekit.components`     posteriors q(z|x), priors p(z), likelihoods p(x|z), each registered by name
- :mod:`vaekit.models`         the model protocol (facts and hooks); the VAE, the two-level VAE, the linear-Gaussian
  model; the registered families
- :mod:`vaekit.bounds`         exact enumeration of discrete codes; the sizing of importance-sampling chunks
- :mod:`vaekit.objectives`     the ELBO, IWAE and the registered objectives; the gradient estimators (STL, DReG, ...)
- :mod:`vaekit.analysis`       information theory, gradient estimators and their variance, surgery, clustering
- :mod:`vaekit.training`       :func:`fit` and the config-driven trainer: the loop, callbacks, run folders, EM
- :mod:`vaekit.evaluation`     honest log-likelihoods: importance-sampled NLL, the gap, exact checks of the bounds
- :mod:`vaekit.pages`          figures, the report, the comparison page, the sweep, the latent explorer
- :mod:`vaekit.data`           data sets: binarized MNIST, the IDX family, CIFAR-10, digits, your images
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from vaekit.threads import prepare as _prepare_threads  # noqa: E402  (before anything imports torch)

_prepare_threads()

_LAZY = {
    "VAE": ("vaekit.models", "VAE"),
    "HierarchicalVAE": ("vaekit.models", "HierarchicalVAE"),
    "LinearGaussian": ("vaekit.models", "LinearGaussian"),
    "fit": ("vaekit.train", "fit"),
    "evaluate": ("vaekit.evaluation", "evaluate"),
    "load": ("vaekit.models", "load_model"),
    "elbo": ("vaekit.objectives", "elbo"),
    "iwae_bound": ("vaekit.objectives", "iwae_bound"),
    "load_dataset": ("vaekit.data", "load_dataset"),
    "POSTERIORS": ("vaekit.components", "POSTERIORS"),
    "PRIORS": ("vaekit.components", "PRIORS"),
    "LIKELIHOODS": ("vaekit.components", "LIKELIHOODS"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:  # the command line starts without importing torch
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")


def __dir__() -> list[str]:  # what completion offers: the public API, loaded or not
    return sorted(__all__)
