"""A density on z fitted after training: what turns a deterministic autoencoder into a generative model.

An autoencoder (q(z|x) = delta(z - f(x))) defines no p(z) and so no p(x). Fitting a Gaussian mixture g(z) to
the codes f(x_n) of the training set (scikit-learn's ``GaussianMixture``, diagonal covariances; pythae's GMM
sampler and the RAE paper of Ghosh et al., 2020, do the same) gives the model p(x) = int p(x|z) g(z) dz:
samples z ~ g, x ~ p(x|z), and a log p(x) by importance sampling. Its proposal is N(f(x), diag (c w)^2), w_j
the mixture's typical component width in dimension j (the weighted mean of the component standard deviations)
and c the factor of a grid (1, 1/3, 1/10, ..., 1/1000) whose ELBO E[log p(x|z) + log g(z) - log q(z|x)] is
highest on training examples (variational inference over one number); any proposal gives a lower bound in
expectation, and IWAE_K approaches log p(x) as K grows.
That log p(x) belongs to "decoder + fitted density", a density chosen after training, and is labelled so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Components of the fitted mixture (the RAE paper's choice).
DEFAULT_COMPONENTS = 10


def is_autoencoder(model: LatentVariableModel) -> bool:
    return bool(getattr(getattr(model, "posterior_family", None), "autoencoder", False))


@torch.no_grad()
def training_codes(model: LatentVariableModel, data: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """f(x_n) for every training example, (N, L)."""
    model.eval()
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    parts = [model.code(data[i : i + batch_size].to(device=device, dtype=dtype)).cpu()
             for i in range(0, data.shape[0], batch_size)]
    return torch.cat(parts).double()


def fit_code_density(model: LatentVariableModel, data: torch.Tensor, components: int = DEFAULT_COMPONENTS,
                     seed: int = 0) -> Any:
    """Fit the Gaussian mixture to the training codes of an autoencoder and make it the model's prior (the
    ``fitted-gmm`` component), setting the proposal width; returns the fitted scikit-learn mixture."""
    from sklearn.mixture import GaussianMixture

    from vaekit.components.priors import FittedMixturePrior

    if not is_autoencoder(model):
        raise VaekitError("a density is fitted to the codes of an autoencoder (--posterior delta) only")
    codes = training_codes(model, data).numpy()
    if codes.shape[0] < 2:
        raise VaekitError("fitting a density to the codes needs at least 2 training examples")
    components = max(1, min(int(components), codes.shape[0] // 2))
    gmm = GaussianMixture(n_components=components, covariance_type="diag", reg_covar=1e-6, random_state=seed,
                          max_iter=200)
    gmm.fit(codes)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    prior = FittedMixturePrior(model.latent_size, components).to(device=device, dtype=dtype)
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    prior.set_mixture(as_tensor(gmm.means_), torch.log(as_tensor(gmm.covariances_)), as_tensor(gmm.weights_))
    model.prior = prior  # model.json describes it from the component itself (VAE.describe)
    width = torch.log(as_tensor((gmm.weights_[:, None] * np.sqrt(gmm.covariances_)).sum(0)))  # (L,)
    family = model.posterior_family
    family.proposal_fitted.fill_(1.0)
    probe = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:256]]
    best = (-math.inf, 0.0)
    for factor in PROPOSAL_FACTORS:
        family.proposal_log_scale.copy_(width + math.log(factor))
        value = _proposal_elbo(model, probe.to(device=device, dtype=dtype), seed)
        if value > best[0]:
            best = (value, factor)
    family.proposal_log_scale.copy_(width + math.log(best[1]))
    return gmm


#: The proposal widths tried, as fractions of the fitted mixture's component width.
PROPOSAL_FACTORS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


@torch.no_grad()
def _proposal_elbo(model: LatentVariableModel, x: torch.Tensor, seed: int, k: int = 16) -> float:
    """The mean ELBO of the proposal on ``x`` (k draws each): E[log p(x|z) + log g(z) - log q(z|x)], nats."""
    from vaekit.distributions import rsample_and_log_prob

    gen = torch.Generator(device=x.device).manual_seed(seed)
    q = model.posterior(x).proposal()
    z, log_q = rsample_and_log_prob(q, (k,), gen)
    value = model.log_likelihood(x, z) + model.log_prior(z) - log_q
    return float(value.mean())


def fit_run_density(run: str | Path, data: torch.Tensor, components: int = DEFAULT_COMPONENTS,
                    seed: int = 0) -> Any:
    """Load a finished autoencoder run's kept weights, fit the density to its training codes and save the
    model again (``model.json`` then names the ``fitted-gmm`` prior); returns the model."""
    from vaekit.models import load_model

    run = Path(run)
    model = load_model(run)
    fit_code_density(model, data, components, seed)
    model.save(run)
    return model


def proposal_note(model: LatentVariableModel) -> str:
    """What an autoencoder's evaluated log p(x) is the likelihood of, in one line."""
    s = model.posterior_family.proposal_log_scale.exp()
    if getattr(model.prior, "name", "") == "fitted-gmm":
        density = (f"a Gaussian mixture of {model.prior.components} components fitted to the training codes after "
                   "training (a density chosen afterwards, not trained)")
    else:
        density = f"the {getattr(model.prior, 'name', 'given')} prior p(z), which it was not trained with"
    return (f"autoencoder: log p(x) is that of the decoder with {density}, importance-sampled with the proposal "
            f"N(f(x), diag s^2), s = {float(s.mean()):.3g} on average; its ELBO and KL are those of that proposal")


def with_standard_normal_prior(model: LatentVariableModel) -> Any:
    """A copy of an autoencoder whose density on z is N(0, I): "the decoder applied to z ~ N(0, I)", which is
    how a VAE is sampled and where an autoencoder's codes show that nothing made them fill N(0, I)."""
    import copy

    from vaekit.components.priors import StandardNormalPrior

    twin = copy.deepcopy(model)
    p = next(model.parameters())
    twin.prior = StandardNormalPrior(model.latent_size).to(device=p.device, dtype=p.dtype)
    return twin


